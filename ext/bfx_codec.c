/*
** bfx_codec.c: the key and row-record encodings of the bftree SQLite module.
**
** OWNS: how a SQLite value becomes an engine key (bfx_key_encode/decode) and
** how a row becomes an engine value (bfx_record_encode/parse/column).  No
** SQLite or engine calls: pure functions over bytes.
**
** KEY FORMAT.  The engine orders keys by memcmp() over the common length,
** then by length.  A key is one tag byte followed by a payload; nothing
** follows the payload, so no terminator is needed (a shorter payload that is
** a prefix of a longer one sorts first, exactly as SQLite orders a string
** before its extensions).
**
**   TAG        PAYLOAD                              CLASS
**   0x05       none                                 NULL (never stored)
**   0x11       8 bytes: ~bits(r), big-endian        real r < -2^63, -inf
**   0x1A-n     n bytes: low n bytes of v, BE        integer part v < 0, where
**              [+ fraction]                         n = bytes of ~v (0..8)
**   0x1B+n     n bytes: v, big-endian               integer part v >= 0, where
**              [+ fraction]                         n = bytes of v (0..8)
**   0x24       8 bytes: bits(r) | 2^63, big-endian  real r >= 2^63, +inf
**   0x30       the UTF-8 bytes                      TEXT
**   0x40       the bytes                            BLOB
**
** A number x in [-2^63, 2^63) is encoded by its integer part ip = floor(x)
** (an int64) as above, and when x is not integral a fraction follows:
**   x > 0: frac = x - ip in (0, 1) (exact in IEEE arithmetic); its binary
**          expansion, 8 bits per byte, most significant first, up to its
**          last non-zero byte (at most 135 bytes: 1074 binary digits).
**   x < 0: f = trunc(x) - x in (0, 1) (exact; x - floor(x) would not be, e.g.
**          for -1e-300); its binary expansion in 7-bit groups, each written
**          as 0x7F - group, up to the last non-zero group, then 0xFF (at most
**          155 bytes).  A larger f is a smaller x and gives smaller bytes;
**          the 0xFF terminator makes a shorter expansion (a smaller f, a
**          larger x) sort after the longer ones it is a prefix of.
** So an integer and a real of the same value (5 and 5.0) share one key, and
** -1 < -0.75 < -0.5 < 0 < 5 < 5.5 < 6 in memcmp order.
**
** Invariants:
**   1. memcmp-then-length order of keys == SQLite BINARY order of values
**      (sqlite3MemCompare with BINARY collation; int/real compared exactly).
**   2. Two values have the same key iff SQLite considers them equal.
**   3. The integer-part encodings are prefix-free (the tag fixes the length),
**      so a fraction can follow without breaking 1.
**   4. A positive fraction's last byte is non-zero, so a shorter fraction is
**      a smaller one when it is a prefix of a longer one.
**   4b. A negative fraction's last group is non-zero and 0xFF (above every
**      group byte, which are <= 0x7F) ends it.
**
** RECORD FORMAT (the engine value of a row).
**
**   OFFSET SIZE DESCRIPTION
**   0      1    format, BFX_RECORD_FORMAT (1)
**   1      var  ncol: number of columns stored (varint)
**   ...    var  ncol serial types (varints), column 0 first
**   ...    ...  the column bodies, in column order, sizes given by the types
**
**   SERIAL TYPE  BODY
**   0            none: NULL
**   1..8         integer, that many bytes, big-endian two's complement
**   9            real, 8 bytes: IEEE-754 bits, big-endian
**   10, 11       none: integer 0, integer 1
**   12           none: the value is the row's key, decoded (integers, text
**                and blobs, whose key round-trips; never a real)
**   13..15       reserved (corrupt)
**   16+2n        text of n bytes
**   17+2n        blob of n bytes
**
** Varints are unsigned LEB128 (7 bits per byte, low group first, at most 10
** bytes).  A reader decodes only the header and the one column asked for, so
** xColumn costs O(ncol) header steps plus the column itself.
**
** Invariants:
**   5. Every body lies inside the record; a record that violates it is
**      reported as BFX_CORRUPT, never read past.
**   6. Columns missing from a record (ncol smaller than the table) read NULL.
*/
#include "bfx_codec.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- keys */

static uint64_t double_bits(double r) {
  uint64_t u;
  memcpy(&u, &r, sizeof u);
  return u;
}

static double bits_double(uint64_t u) {
  double r;
  memcpy(&r, &u, sizeof r);
  return r;
}

/* Number of bytes needed to hold u (0 for u == 0). */
static int byte_len(uint64_t u) {
  int n = 0;
  while (u) {
    n++;
    u >>= 8;
  }
  return n;
}

/* Append byte b at position *pos of out (bounded by cap); *pos always
** advances so that the caller learns the full length. */
static void put_byte(uint8_t *out, size_t cap, size_t *pos, uint8_t b) {
  if (*pos < cap) out[*pos] = b;
  (*pos)++;
}

static void put_be(uint8_t *out, size_t cap, size_t *pos, uint64_t v, int n) {
  for (int k = n - 1; k >= 0; k--) put_byte(out, cap, pos, (uint8_t)(v >> (8 * k)));
}

static void encode_int_part(int64_t v, uint8_t *out, size_t cap, size_t *pos) {
  if (v >= 0) {
    int n = byte_len((uint64_t)v);
    put_byte(out, cap, pos, (uint8_t)(BFX_TAG_POS_BASE + n));
    put_be(out, cap, pos, (uint64_t)v, n);
  } else {
    uint64_t u = ~(uint64_t)v; /* -(v+1) >= 0 */
    int n = byte_len(u);
    put_byte(out, cap, pos, (uint8_t)(BFX_TAG_NEG_BASE - n));
    put_be(out, cap, pos, (uint64_t)v, n);
  }
}

size_t bfx_key_encode(const bfx_value *v, uint8_t *out, size_t cap) {
  size_t pos = 0;
  switch (v->type) {
    case BFX_INTEGER:
      encode_int_part(v->i, out, cap, &pos);
      break;
    case BFX_FLOAT: {
      double r = v->r;
      if (r < -9223372036854775808.0) {
        put_byte(out, cap, &pos, BFX_TAG_NUM_MIN);
        put_be(out, cap, &pos, ~double_bits(r), 8);
      } else if (r >= 9223372036854775808.0) {
        put_byte(out, cap, &pos, BFX_TAG_NUM_MAX);
        put_be(out, cap, &pos, double_bits(r) | (UINT64_C(1) << 63), 8);
      } else if (r >= 0.0 || r == floor(r)) {
        double fl = floor(r);
        double frac = r - fl; /* exact: r and fl share sign, fl <= r */
        encode_int_part((int64_t)fl, out, cap, &pos);
        while (frac > 0.0) {
          double scaled = frac * 256.0; /* exact: power-of-two scaling */
          double b = floor(scaled);
          put_byte(out, cap, &pos, (uint8_t)b);
          frac = scaled - b; /* exact */
        }
      } else {
        /* Negative with a fraction: floor(r), then the complemented 7-bit
        ** expansion of f = trunc(r) - r (exact), then 0xFF (invariant 4b). */
        double tr = trunc(r);
        double f = tr - r;
        encode_int_part((int64_t)tr - 1, out, cap, &pos);
        while (f > 0.0) {
          double scaled = f * 128.0;
          double b = floor(scaled);
          put_byte(out, cap, &pos, (uint8_t)(0x7f - (int)b));
          f = scaled - b;
        }
        put_byte(out, cap, &pos, 0xff);
      }
      break;
    }
    case BFX_TEXT:
    case BFX_BLOB:
      put_byte(out, cap, &pos,
               v->type == BFX_TEXT ? BFX_TAG_TEXT : BFX_TAG_BLOB);
      if (v->n) {
        if (pos < cap) {
          size_t room = cap - pos;
          memcpy(out + pos, v->z, v->n < room ? v->n : room);
        }
        pos += v->n;
      }
      break;
    default:
      put_byte(out, cap, &pos, BFX_TAG_NULL);
      break;
  }
  return pos;
}

int bfx_key_decode(const uint8_t *key, size_t n, bfx_value *out) {
  memset(out, 0, sizeof *out);
  if (n == 0) return BFX_CORRUPT;
  uint8_t tag = key[0];
  if (tag == BFX_TAG_NULL) {
    if (n != 1) return BFX_CORRUPT;
    out->type = BFX_NULL;
    return BFX_OK;
  }
  if (tag == BFX_TAG_TEXT || tag == BFX_TAG_BLOB) {
    out->type = tag == BFX_TAG_TEXT ? BFX_TEXT : BFX_BLOB;
    out->z = key + 1;
    out->n = n - 1;
    return BFX_OK;
  }
  if (tag == BFX_TAG_NUM_MIN || tag == BFX_TAG_NUM_MAX) {
    if (n != 9) return BFX_CORRUPT;
    uint64_t u = 0;
    for (int k = 1; k <= 8; k++) u = (u << 8) | key[k];
    out->type = BFX_FLOAT;
    out->r = bits_double(tag == BFX_TAG_NUM_MIN ? ~u : u & ~(UINT64_C(1) << 63));
    return BFX_OK;
  }
  if (tag < BFX_TAG_NUM_MIN + 1 || tag > BFX_TAG_POS_BASE + 8) return BFX_CORRUPT;
  int64_t ip;
  size_t pos = 1;
  if (tag >= BFX_TAG_POS_BASE) {
    int len = tag - BFX_TAG_POS_BASE;
    if (n < 1 + (size_t)len) return BFX_CORRUPT;
    uint64_t u = 0;
    for (int k = 0; k < len; k++) u = (u << 8) | key[pos++];
    if (u > (uint64_t)INT64_MAX) return BFX_CORRUPT;
    ip = (int64_t)u;
  } else {
    int len = BFX_TAG_NEG_BASE - tag;
    if (n < 1 + (size_t)len) return BFX_CORRUPT;
    uint64_t u = ~UINT64_C(0); /* sign-extended */
    for (int k = 0; k < len; k++) u = (u << 8) | key[pos++];
    ip = (int64_t)u;
    if (ip >= 0) return BFX_CORRUPT;
  }
  if (pos == n) {
    out->type = BFX_INTEGER;
    out->i = ip;
    return BFX_OK;
  }
  if (ip >= 0) {
    /* A fraction: at most 135 bytes, last byte non-zero (invariant 4). */
    if (n - pos > 135 || key[n - 1] == 0) return BFX_CORRUPT;
    double frac = 0.0;
    for (size_t k = n; k > pos; k--) frac = (frac + key[k - 1]) / 256.0;
    out->type = BFX_FLOAT;
    out->r = (double)ip + frac;
    return BFX_OK;
  }
  /* A negative fraction: complemented 7-bit groups, last group non-zero,
  ** then 0xFF (invariant 4b). */
  if (n - pos < 2 || n - pos > 155 || key[n - 1] != 0xff || key[n - 2] == 0x7f)
    return BFX_CORRUPT;
  double f = 0.0;
  for (size_t k = n - 1; k > pos; k--) {
    if (key[k - 1] > 0x7f) return BFX_CORRUPT;
    f = (f + (0x7f - key[k - 1])) / 128.0;
  }
  out->type = BFX_FLOAT;
  out->r = (double)(ip + 1) - f;
  return BFX_OK;
}

bool bfx_key_roundtrips(const bfx_value *v) {
  return v->type == BFX_INTEGER || v->type == BFX_TEXT || v->type == BFX_BLOB;
}

/* ------------------------------------------------------------- records */

static void put_varint(uint8_t *out, size_t cap, size_t *pos, uint64_t v) {
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    put_byte(out, cap, pos, (uint8_t)(b | (v ? 0x80 : 0)));
  } while (v);
}

/* Read a varint at data[*pos..n); false when malformed or truncated. */
static bool get_varint(const uint8_t *data, size_t n, size_t *pos,
                       uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (*pos >= n) return false;
    uint8_t b = data[(*pos)++];
    if (shift == 63 && (b & 0x7e)) return false;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

/* Bytes needed for v as a big-endian two's complement integer (1..8). */
static int int_body_len(int64_t v) {
  for (int n = 1; n < 8; n++) {
    int64_t lim = (int64_t)1 << (8 * n - 1);
    if (v >= -lim && v < lim) return n;
  }
  return 8;
}

static uint64_t serial_type(const bfx_value *v, bool from_key) {
  if (from_key) return BFX_ST_FROM_KEY;
  switch (v->type) {
    case BFX_INTEGER:
      if (v->i == 0) return BFX_ST_ZERO;
      if (v->i == 1) return BFX_ST_ONE;
      return (uint64_t)int_body_len(v->i);
    case BFX_FLOAT:
      return BFX_ST_REAL;
    case BFX_TEXT:
      return BFX_ST_TEXT_BASE + 2 * (uint64_t)v->n;
    case BFX_BLOB:
      return BFX_ST_BLOB_BASE + 2 * (uint64_t)v->n;
    default:
      return BFX_ST_NULL;
  }
}

/* Body size of a serial type, or SIZE_MAX for a reserved type. */
static size_t serial_size(uint64_t t) {
  if (t >= 1 && t <= 8) return (size_t)t;
  if (t == BFX_ST_REAL) return 8;
  if (t == BFX_ST_NULL || t == BFX_ST_ZERO || t == BFX_ST_ONE ||
      t == BFX_ST_FROM_KEY)
    return 0;
  if (t < BFX_ST_TEXT_BASE) return SIZE_MAX;
  return (size_t)((t - BFX_ST_TEXT_BASE) / 2);
}

size_t bfx_record_encode(int ncol, const bfx_value *vals, int key_col,
                         uint8_t *out, size_t cap) {
  size_t pos = 0;
  put_byte(out, cap, &pos, BFX_RECORD_FORMAT);
  put_varint(out, cap, &pos, (uint64_t)ncol);
  for (int i = 0; i < ncol; i++)
    put_varint(out, cap, &pos, serial_type(&vals[i], i == key_col));
  for (int i = 0; i < ncol; i++) {
    const bfx_value *v = &vals[i];
    if (i == key_col) continue;
    switch (v->type) {
      case BFX_INTEGER:
        if (v->i != 0 && v->i != 1)
          put_be(out, cap, &pos, (uint64_t)v->i, int_body_len(v->i));
        break;
      case BFX_FLOAT:
        put_be(out, cap, &pos, double_bits(v->r), 8);
        break;
      case BFX_TEXT:
      case BFX_BLOB:
        if (v->n) {
          if (pos < cap) {
            size_t room = cap - pos;
            memcpy(out + pos, v->z, v->n < room ? v->n : room);
          }
          pos += v->n;
        }
        break;
      default:
        break;
    }
  }
  return pos;
}

int bfx_record_parse(const uint8_t *data, size_t n, int ncol, bfx_record *rec) {
  size_t pos = 0;
  uint64_t stored;
  rec->data = data;
  rec->n = n;
  rec->ncol = ncol;
  rec->nstored = 0;
  if (n < 2 || data[0] != BFX_RECORD_FORMAT) return BFX_CORRUPT;
  pos = 1;
  if (!get_varint(data, n, &pos, &stored) || stored > n) return BFX_CORRUPT;
  for (uint64_t i = 0; i < stored; i++) {
    uint64_t t;
    if (!get_varint(data, n, &pos, &t)) return BFX_CORRUPT;
    if (serial_size(t) == SIZE_MAX) return BFX_CORRUPT;
    if (i < (uint64_t)ncol) rec->types[i] = t;
  }
  /* pos is the start of the bodies (invariant 5: every body inside). */
  size_t body = pos;
  int nkeep = stored < (uint64_t)ncol ? (int)stored : ncol;
  for (int i = 0; i < nkeep; i++) {
    size_t sz = serial_size(rec->types[i]);
    if (sz > n - body) return BFX_CORRUPT;
    rec->offsets[i] = body;
    body += sz;
  }
  rec->nstored = nkeep;
  return BFX_OK;
}

int bfx_record_column(const bfx_record *rec, int i, const uint8_t *key,
                      size_t key_len, bfx_value *out) {
  memset(out, 0, sizeof *out);
  if (i >= rec->nstored) {
    out->type = BFX_NULL; /* invariant 6 */
    return BFX_OK;
  }
  uint64_t t = rec->types[i];
  const uint8_t *p = rec->data + rec->offsets[i];
  if (t >= 1 && t <= 8) {
    uint64_t u = (p[0] & 0x80) ? ~UINT64_C(0) : 0;
    for (uint64_t k = 0; k < t; k++) u = (u << 8) | p[k];
    out->type = BFX_INTEGER;
    out->i = (int64_t)u;
    return BFX_OK;
  }
  switch (t) {
    case BFX_ST_NULL:
      out->type = BFX_NULL;
      return BFX_OK;
    case BFX_ST_REAL: {
      uint64_t u = 0;
      for (int k = 0; k < 8; k++) u = (u << 8) | p[k];
      out->type = BFX_FLOAT;
      out->r = bits_double(u);
      if (isnan(out->r)) return BFX_CORRUPT;
      return BFX_OK;
    }
    case BFX_ST_ZERO:
    case BFX_ST_ONE:
      out->type = BFX_INTEGER;
      out->i = t == BFX_ST_ONE;
      return BFX_OK;
    case BFX_ST_FROM_KEY: {
      int rc = bfx_key_decode(key, key_len, out);
      if (rc != BFX_OK) return rc;
      if (!bfx_key_roundtrips(out)) return BFX_CORRUPT;
      return BFX_OK;
    }
    default:
      out->type = (t & 1) ? BFX_BLOB : BFX_TEXT;
      out->z = p;
      out->n = serial_size(t);
      return BFX_OK;
  }
}
