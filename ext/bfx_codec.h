/*
** bfx_codec.h: key and row-record encodings of the bftree SQLite module.
**
** Pure C (no SQLite, no engine dependency) so that it can be unit tested on
** its own (unit_tests/test_keyenc.c).  Formats and invariants are documented
** in bfx_codec.c.
*/
#ifndef BFX_CODEC_H
#define BFX_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Value classes; the numbers equal SQLITE_INTEGER .. SQLITE_NULL. */
enum bfx_type {
  BFX_INTEGER = 1,
  BFX_FLOAT = 2,
  BFX_TEXT = 3,
  BFX_BLOB = 4,
  BFX_NULL = 5
};

/* A value as SQLite sees it.  For TEXT and BLOB, z/n point at bytes owned by
** someone else (the caller keeps them alive while the value is used). */
typedef struct bfx_value {
  int type;          /* enum bfx_type */
  int64_t i;         /* BFX_INTEGER */
  double r;          /* BFX_FLOAT (never NaN: SQLite turns NaN into NULL) */
  const uint8_t *z;  /* BFX_TEXT (UTF-8, no terminator needed), BFX_BLOB */
  size_t n;
} bfx_value;

/* Status codes of the codec (a subset mirrored from enum bf_status). */
enum bfx_status { BFX_OK = 0, BFX_CORRUPT = 5 };

/* Key tag bytes (the first byte of every encoded key). */
#define BFX_TAG_NULL 0x05
#define BFX_TAG_NUM_MIN 0x11     /* finite or infinite real below -2^63 */
#define BFX_TAG_NEG_BASE 0x1A    /* negative integer part: 0x1A - n */
#define BFX_TAG_POS_BASE 0x1B    /* non-negative integer part: 0x1B + n */
#define BFX_TAG_NUM_MAX 0x24     /* real at or above 2^63 (incl. +inf) */
#define BFX_TAG_TEXT 0x30
#define BFX_TAG_BLOB 0x40

/* The longest encoding of a number: tag, 8 integer bytes, 155 fraction
** bytes (a fraction of a double has at most 1074 binary digits, written in
** 7-bit groups plus a terminator for negative numbers). */
#define BFX_KEY_NUM_MAX 164

/*
** Encode v as a key whose memcmp-then-length order is SQLite's BINARY order
** of values (NULL < numbers < text < blobs; integers and reals by value).
** Writes at most cap bytes to out and returns the full length of the
** encoding (like snprintf: call again with a larger buffer when the result
** exceeds cap).  out may be NULL when cap is 0.
*/
size_t bfx_key_encode(const bfx_value *v, uint8_t *out, size_t cap);

/*
** Decode a key made by bfx_key_encode().  Text and blob payloads point into
** key.  A number with a fraction, or outside the int64 range, decodes as a
** BFX_FLOAT; otherwise as a BFX_INTEGER.  Returns BFX_CORRUPT on a malformed
** key.
*/
int bfx_key_decode(const uint8_t *key, size_t n, bfx_value *out);

/* True when bfx_key_decode() of v's key gives back v exactly (same class and
** value): integers, text and blobs.  Reals are not (5.0 decodes as 5). */
bool bfx_key_roundtrips(const bfx_value *v);

/* Record serial types (see bfx_codec.c). */
#define BFX_ST_NULL 0
#define BFX_ST_INT_MAX_BYTES 8     /* 1..8: integer of that many bytes */
#define BFX_ST_REAL 9
#define BFX_ST_ZERO 10
#define BFX_ST_ONE 11
#define BFX_ST_FROM_KEY 12
#define BFX_ST_TEXT_BASE 16        /* 16 + 2n: text of n bytes */
#define BFX_ST_BLOB_BASE 17        /* 17 + 2n: blob of n bytes */

#define BFX_RECORD_FORMAT 0x01

/*
** Encode a row of ncol values as a record.  When key_col >= 0 the value of
** that column is taken from the encoded key on decode instead of being stored
** again (the caller passes key_col only when bfx_key_roundtrips() of that
** value).  Writes at most cap bytes and returns the full length.
*/
size_t bfx_record_encode(int ncol, const bfx_value *vals, int key_col,
                         uint8_t *out, size_t cap);

/*
** A parsed record header: per column its serial type and body offset.
** The caller provides arrays of at least ncol entries.
*/
typedef struct bfx_record {
  const uint8_t *data;
  size_t n;
  int ncol;          /* columns the caller asked for */
  int nstored;       /* columns present in the record (<= ncol used) */
  uint64_t *types;   /* [ncol] */
  size_t *offsets;   /* [ncol] */
} bfx_record;

/* Parse the header of data[0..n) into rec (types/offsets provided by the
** caller with room for ncol).  Columns beyond those stored read as NULL.
** Returns BFX_CORRUPT on a malformed record. */
int bfx_record_parse(const uint8_t *data, size_t n, int ncol, bfx_record *rec);

/* Column i of a parsed record.  key/key_len is the row's encoded key (used by
** BFX_ST_FROM_KEY).  Text/blob payloads point into the record or the key.
** Returns BFX_CORRUPT on a malformed value. */
int bfx_record_column(const bfx_record *rec, int i, const uint8_t *key,
                      size_t key_len, bfx_value *out);

#endif /* BFX_CODEC_H */
