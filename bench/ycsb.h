/*
** ycsb.h: the interface between the YCSB-style driver (ycsb.c) and its
** engine adapters (adapter_*.c).
**
** The driver owns key generation, key choice, timing, I/O accounting and
** output; an adapter owns nothing but the translation of five operations
** (insert, update, read, scan, close) into one engine's API, configured by
** that engine's own documented knobs from a ycsb_cfg.
**
** RECORDS.  Record r (0 <= r < records) has
**   key    key_size bytes (8 or 16): big-endian mix64(r), then for 16-byte
**          keys big-endian mix64(r ^ YCSB_KEY2_SALT).  mix64 is a bijection,
**          so keys are unique and spread over the key space.
**   value  value_size bytes (>= 16):
**            OFFSET SIZE DESCRIPTION
**            0      8    r, little-endian (lets every read verify that the
**                        value belongs to the key it was read under)
**            8      8    a version counter, little-endian
**            16     ...  pseudo-random bytes (incompressible)
**
** SQL ENGINES see 8-byte keys as INTEGER: the key read as a big-endian
** unsigned number with its top bit flipped, as an int64 (order-preserving,
** so scans cover the same records in every engine).  16-byte keys are BLOBs.
**
** Adapter contract (every function):
**   - returns YCSB_OK, YCSB_NOTFOUND (read only) or YCSB_ERR; on YCSB_ERR it
**     has printed a message naming the engine and the call to stderr;
**   - one handle, one thread: the driver calls one function of a handle at a
**     time; with --threads N it makes N-1 more handles with attach() and
**     calls them from their own threads at the same time;
**   - one operation is one autocommit transaction of the engine, durable in
**     its log at commit but not fsynced (see each adapter's header).
*/
#ifndef YCSB_H
#define YCSB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { YCSB_OK = 0, YCSB_NOTFOUND = 1, YCSB_ERR = -1 };

#define YCSB_KEY2_SALT 0x5bd1e9955bd1e995ull
#define YCSB_SCAN_ROWS 100

/* SQL statement mode of the SQLite-based adapters. */
enum ycsb_sql_mode {
  YCSB_SQL_TEXT = 0,     /* a fresh SQL string per operation, values as
                         ** literals: prepared, stepped, finalized */
  YCSB_SQL_PREPARED = 1  /* one prepared statement per operation kind,
                         ** bound, stepped and reset */
};

typedef struct ycsb_cfg {
  const char *dir;        /* this engine's directory (exists) */
  const char *ext_path;   /* bftree.so for the bftree-sql adapter */
  uint64_t budget;        /* bytes: the memory budget of the whole process */
  uint64_t cache_bytes;   /* bytes: what the engine's own memory knobs may
                          ** add up to (budget * cache share) */
  size_t key_size;        /* 8 or 16 */
  size_t value_size;      /* >= 16 */
  uint64_t records;       /* records in the data set */
  int sql_mode;           /* enum ycsb_sql_mode */
  int threads;            /* client threads, each with its own handle; an
                          ** engine whose caches are per handle (SQLite's
                          ** page cache per connection) divides cache_bytes
                          ** among them */
} ycsb_cfg;

/* Row verification of a scan (kept by the driver). */
typedef struct ycsb_scan_state {
  uint8_t prev[16];
  size_t prev_len;
  int rows;
  uint64_t bad;           /* rows out of order or with a wrong value */
} ycsb_scan_state;

typedef struct ycsb_adapter {
  const char *name;
  /* A one-line description of the configuration used (knobs, durability)
  ** into buf. */
  void (*describe)(const ycsb_cfg *cfg, char *buf, size_t n);
  /* Open the engine in cfg->dir, creating an empty data set when create
  ** (the directory is then empty), else opening the existing one. */
  int (*open)(const ycsb_cfg *cfg, bool create, void **db);
  /* Insert a new record / overwrite an existing record's value. */
  int (*insert)(void *db, const uint8_t *key, const uint8_t *value);
  int (*update)(void *db, const uint8_t *key, const uint8_t *value);
  /* Copy the value of key into value (cfg->value_size bytes of room) and
  ** its length into *len. */
  int (*read)(void *db, const uint8_t *key, uint8_t *value, size_t *len);
  /* Visit up to n records from the first key >= key, in key order, calling
  ** ycsb_scan_row for each. */
  int (*scan)(void *db, const uint8_t *key, int n, ycsb_scan_state *st);
  /* Write out what the engine holds and free everything. */
  int (*close)(void *db);
  /* Optional (NULL: every insert is its own transaction): group the
  ** following inserts into one transaction, committed by commit().  Used
  ** by the load with --load-batch N > 1 only. */
  int (*begin)(void *db);
  int (*commit)(void *db);
  /* Optional (NULL: the engine runs one client thread only): a second
  ** handle on the data set db has open, for another client thread
  ** (workloads only), and its release.  db is closed after every attached
  ** handle is detached. */
  int (*attach)(void *db, void **handle);
  int (*detach)(void *handle);
  /* Write the whole record whether or not it exists: the key-value
  ** engines' put (the same function as update), SQL's INSERT OR REPLACE.
  ** Used by workload Aput (NULL: update instead). */
  int (*upsert)(void *db, const uint8_t *key, const uint8_t *value);
} ycsb_adapter;

/* Adapters, defined in adapter_*.c.  Weak: each driver binary links only
** the adapters (and so the libraries) of one engine family, because merely
** linking librocksdb adds ~10 MiB of resident memory to a process, which
** would be charged to every engine's budget. */
#define YCSB_WEAK __attribute__((weak))
extern const ycsb_adapter ycsb_sqlite_sql YCSB_WEAK, ycsb_sqlite_c YCSB_WEAK;
extern const ycsb_adapter ycsb_bftree_sql YCSB_WEAK, ycsb_bftree_c YCSB_WEAK;
extern const ycsb_adapter ycsb_bftree_sql_prep YCSB_WEAK;
extern const ycsb_adapter ycsb_rocksdb YCSB_WEAK, ycsb_lmdb YCSB_WEAK;
extern const ycsb_adapter ycsb_wiredtiger YCSB_WEAK;

/* From ycsb.c: account one scanned row (key, value) in st. */
void ycsb_scan_row(ycsb_scan_state *st, const uint8_t *key, size_t key_len,
                   const uint8_t *value, size_t value_len);

/* Helpers for the SQL adapters: 8-byte key <-> order-preserving int64. */
int64_t ycsb_key_to_int(const uint8_t *key);
void ycsb_int_to_key(int64_t v, uint8_t *key);

#endif /* YCSB_H */
