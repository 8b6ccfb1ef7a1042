/*
** adapter_sqlite.c: three adapters that go through the SQLite library.
**
**   sqlite-sql  native SQLite, SQL text: every operation is a fresh SQL
**               string with its values written as literals (integers,
**               x'..' blobs), compiled with sqlite3_prepare_v2, stepped and
**               finalized: what sqlite3_exec() does, and what a program
**               that builds SQL strings pays.
**   sqlite-c    native SQLite through its C API: one prepared statement per
**               operation kind, made once, then bound, stepped and reset.
**               SQLite has no public access path below prepared statements
**               (its b-tree layer is internal), so this is the lowest one.
**   bftree-sql  the bftree virtual table (bftree.so, loaded with
**               sqlite3_load_extension), with exactly the statements of
**               sqlite-sql (text mode).
**   bftree-sql-prep  the same table through the statements of sqlite-c
**               (prepared mode): the pair to compare with sqlite-c.
**   `--sql-mode text|prepared` overrides any of them.
**
** SCHEMA.  Native: CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB) WITHOUT
** ROWID (k BLOB for 16-byte keys).  bftree: CREATE VIRTUAL TABLE t USING
** bftree(k INTEGER PRIMARY KEY, v BLOB, buffer_size=<cache bytes>,
** synchronous='normal').
**
** LOAD BATCHES (--load-batch N): BEGIN, N inserts, COMMIT.
**
** STATEMENTS.  insert: INSERT INTO t(k,v) VALUES(?,?); update: UPDATE t SET
** v=? WHERE k=?; upsert (workload Aput): INSERT OR REPLACE INTO t(k,v)
** VALUES(?,?); read: SELECT v FROM t WHERE k=?; scan: SELECT k,v FROM t
** WHERE k>=? ORDER BY k LIMIT 100.  Each runs in autocommit mode: one
** transaction per operation.
**
** MEMORY AND DURABILITY.  PRAGMA journal_mode=WAL, synchronous=NORMAL (the
** WAL is written at every commit and fsynced only at checkpoints: log on,
** no fsync per operation), wal_autocheckpoint default (1000 pages),
** mmap_size 0 (default).  Native: PRAGMA cache_size = -(cache bytes / 1024).
** bftree-sql: the table's buffer_size = cache bytes; the main database holds
** only the schema and keeps SQLite's default cache size.
** SQLITE_CONFIG_MEMSTATUS off (a global mutex per allocation otherwise).
**
** THREADS (--threads N): every client thread has its own connection (attach
** opens another).  A native connection's cache_size is the cache share / N
** (SQLite's page cache is per connection; what the connections share is
** the OS page cache, inside the same cap), and it waits for another's write
** lock for up to 10 s with a busy handler that retries at once
** (sq_busy_retry).  The bftree connections share the table's one buffer
** (the engine is opened once per process), so its buffer_size stays the
** whole share; and each declares the table in its own temp schema over the
** loaded data file (CREATE VIRTUAL TABLE temp.t USING bftree(...,
** file='<dir>/db.sqlite-t.bftree')), the module's deployment for several
** writers: a table in the main schema makes every write statement take
** SQLite's write lock on the main database, which orders the writers before
** the module's own writer lock can (README-sql.md, "Many writers").  They
** wait busy_timeout 10 s for the module's lock.
*/
#include "ycsb.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

/* The data file of table t in the main schema (the module's default name). */
#define BFTREE_FILE "db.sqlite-t.bftree"

/* How long a connection waits for another's lock (--threads > 1). */
#define SQ_BUSY_MS 10000

typedef struct sq {
  sqlite3 *db;
  ycsb_cfg cfg;        /* what it was opened with (attach opens the same) */
  const char *name;
  int mode;            /* enum ycsb_sql_mode */
  bool intkey;         /* 8-byte keys as INTEGER */
  bool bftree;         /* the table is a bftree virtual table */
  size_t key_size, value_size;
  sqlite3_stmt *ins, *upd, *rep, *sel, *scan; /* prepared mode */
  char sql[8192 + 64];
  double busy_since;
} sq;

static double sq_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Busy handler of the native connections: retry at once (yielding the
** CPU), then every 50 us, for up to SQ_BUSY_MS.  SQLite's own handler
** (sqlite3_busy_timeout) sleeps 1, 2, 5, 10 ... ms between tries, while a
** writer here holds the lock for ~100 us: measured on A with 4 threads,
** this handler gives native SQLite 17.4K ops/s against 15.4K (p99.9 4 ms
** against 35 ms).  bftree connections keep busy_timeout: the module reads
** it (PRAGMA busy_timeout) for its own writer lock, and SQLite's lock does
** not come into their runs with threads (see THREADS). */
static int sq_busy_retry(void *arg, int count) {
  sq *h = arg;
  if (count == 0) h->busy_since = sq_now();
  else if ((sq_now() - h->busy_since) * 1000 > SQ_BUSY_MS) return 0;
  if (count < 64) sched_yield();
  else usleep(50);
  return 1;
}

/* Whether native connections use sq_busy_retry (default) or SQLite's
** busy_timeout (BENCH_SQLITE_BUSY=timeout, to compare the two). */
static bool native_busy_retry(void) {
  const char *env = getenv("BENCH_SQLITE_BUSY");
  return !(env && strcmp(env, "timeout") == 0);
}

/* Whether the bftree table is declared in each connection's temp schema:
** with several client threads, unless BENCH_BFTREE_SCHEMA says "main"
** (or "temp" for one thread too); see THREADS. */
static bool bftree_in_temp(const ycsb_cfg *cfg) {
  const char *env = getenv("BENCH_BFTREE_SCHEMA");
  if (env && strcmp(env, "main") == 0) return false;
  if (env && strcmp(env, "temp") == 0) return true;
  return cfg->threads > 1;
}

static int sq_fail(sq *h, const char *what) {
  fprintf(stderr, "ycsb: %s: %s: %s\n", h->name, what, sqlite3_errmsg(h->db));
  return YCSB_ERR;
}

static int sq_exec(sq *h, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(h->db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "ycsb: %s: %s: %s\n", h->name, sql, err ? err : "?");
    sqlite3_free(err);
    return YCSB_ERR;
  }
  return YCSB_OK;
}

/* Append a key literal (text mode) at p; returns the new end. */
static char *key_literal(sq *h, char *p, const uint8_t *key) {
  if (h->intkey) return p + sprintf(p, "%lld", (long long)ycsb_key_to_int(key));
  static const char hex[] = "0123456789abcdef";
  *p++ = 'x';
  *p++ = '\'';
  for (size_t i = 0; i < h->key_size; i++) {
    *p++ = hex[key[i] >> 4];
    *p++ = hex[key[i] & 15];
  }
  *p++ = '\'';
  *p = 0;
  return p;
}

static char *blob_literal(char *p, const uint8_t *b, size_t n) {
  static const char hex[] = "0123456789abcdef";
  *p++ = 'x';
  *p++ = '\'';
  for (size_t i = 0; i < n; i++) {
    *p++ = hex[b[i] >> 4];
    *p++ = hex[b[i] & 15];
  }
  *p++ = '\'';
  *p = 0;
  return p;
}

static int bind_key(sq *h, sqlite3_stmt *st, int i, const uint8_t *key) {
  if (h->intkey) return sqlite3_bind_int64(st, i, ycsb_key_to_int(key));
  return sqlite3_bind_blob(st, i, key, (int)h->key_size, SQLITE_STATIC);
}

static void column_key(sq *h, sqlite3_stmt *st, int i, uint8_t *key, size_t *len) {
  if (h->intkey) {
    ycsb_int_to_key(sqlite3_column_int64(st, i), key);
    *len = 8;
  } else {
    const void *p = sqlite3_column_blob(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    if (n > 16) n = 16;
    if (n) memcpy(key, p, n);
    *len = n;
  }
}

/* The statement for this operation: the cached one (prepared mode, reset and
** bound by the caller) or a new one compiled from h->sql (text mode). */
static int stmt_for(sq *h, sqlite3_stmt *cached, sqlite3_stmt **out) {
  if (h->mode == YCSB_SQL_PREPARED) {
    *out = cached;
    return YCSB_OK;
  }
  if (sqlite3_prepare_v2(h->db, h->sql, -1, out, NULL) != SQLITE_OK)
    return sq_fail(h, h->sql);
  return YCSB_OK;
}

static void stmt_done(sq *h, sqlite3_stmt *st) {
  if (h->mode == YCSB_SQL_PREPARED) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  } else {
    sqlite3_finalize(st);
  }
}

/* The three writes: a new record (the load), an update of an existing one
** (UPDATE ... WHERE k=: SQL's update, which finds the row first), and an
** upsert of the whole record (INSERT OR REPLACE: a key-value store's put;
** every key it writes exists, so it replaces the row). */
enum sq_write_kind { SQ_INSERT, SQ_UPDATE, SQ_REPLACE };

static int sq_write(sq *h, sqlite3_stmt *cached, enum sq_write_kind kind,
                    const uint8_t *key, const uint8_t *value) {
  sqlite3_stmt *st;
  bool keyfirst = kind != SQ_UPDATE;
  if (h->mode == YCSB_SQL_TEXT) {
    char *p = h->sql;
    if (keyfirst) {
      p += sprintf(p, kind == SQ_INSERT ? "INSERT INTO t(k,v) VALUES("
                                        : "INSERT OR REPLACE INTO t(k,v) VALUES(");
      p = key_literal(h, p, key);
      *p++ = ',';
      p = blob_literal(p, value, h->value_size);
      strcpy(p, ")");
    } else {
      p += sprintf(p, "UPDATE t SET v=");
      p = blob_literal(p, value, h->value_size);
      p += sprintf(p, " WHERE k=");
      key_literal(h, p, key);
    }
  }
  if (stmt_for(h, cached, &st) != YCSB_OK) return YCSB_ERR;
  if (h->mode == YCSB_SQL_PREPARED) {
    if (keyfirst) {
      bind_key(h, st, 1, key);
      sqlite3_bind_blob(st, 2, value, (int)h->value_size, SQLITE_STATIC);
    } else {
      sqlite3_bind_blob(st, 1, value, (int)h->value_size, SQLITE_STATIC);
      bind_key(h, st, 2, key);
    }
  }
  int rc = sqlite3_step(st);
  stmt_done(h, st);
  static const char *what[] = {"insert", "update", "replace"};
  if (rc != SQLITE_DONE) return sq_fail(h, what[kind]);
  if (kind == SQ_UPDATE && sqlite3_changes(h->db) != 1) return YCSB_NOTFOUND;
  return YCSB_OK;
}

static int sq_insert(void *db, const uint8_t *key, const uint8_t *value) {
  sq *h = db;
  return sq_write(h, h->ins, SQ_INSERT, key, value);
}

static int sq_update(void *db, const uint8_t *key, const uint8_t *value) {
  sq *h = db;
  return sq_write(h, h->upd, SQ_UPDATE, key, value);
}

static int sq_upsert(void *db, const uint8_t *key, const uint8_t *value) {
  sq *h = db;
  return sq_write(h, h->rep, SQ_REPLACE, key, value);
}

static int sq_read(void *db, const uint8_t *key, uint8_t *value, size_t *len) {
  sq *h = db;
  sqlite3_stmt *st;
  if (h->mode == YCSB_SQL_TEXT) {
    char *p = h->sql + sprintf(h->sql, "SELECT v FROM t WHERE k=");
    key_literal(h, p, key);
  }
  if (stmt_for(h, h->sel, &st) != YCSB_OK) return YCSB_ERR;
  if (h->mode == YCSB_SQL_PREPARED) bind_key(h, st, 1, key);
  int rc = sqlite3_step(st), res = YCSB_OK;
  if (rc == SQLITE_ROW) {
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    const void *p = sqlite3_column_blob(st, 0);
    *len = n;
    if (n > h->value_size) n = h->value_size;
    if (n) memcpy(value, p, n);
    rc = sqlite3_step(st);
  } else {
    res = YCSB_NOTFOUND;
  }
  if (rc != SQLITE_DONE) res = sq_fail(h, "read");
  stmt_done(h, st);
  return res;
}

static int sq_scan(void *db, const uint8_t *key, int n, ycsb_scan_state *ss) {
  sq *h = db;
  sqlite3_stmt *st;
  if (h->mode == YCSB_SQL_TEXT) {
    char *p = h->sql + sprintf(h->sql, "SELECT k,v FROM t WHERE k>=");
    p = key_literal(h, p, key);
    sprintf(p, " ORDER BY k LIMIT %d", n);
  }
  if (stmt_for(h, h->scan, &st) != YCSB_OK) return YCSB_ERR;
  if (h->mode == YCSB_SQL_PREPARED) {
    bind_key(h, st, 1, key);
    sqlite3_bind_int(st, 2, n);
  }
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    uint8_t k[16];
    size_t kl;
    column_key(h, st, 0, k, &kl);
    ycsb_scan_row(ss, k, kl, sqlite3_column_blob(st, 1),
                  (size_t)sqlite3_column_bytes(st, 1));
  }
  int res = rc == SQLITE_DONE ? YCSB_OK : sq_fail(h, "scan");
  stmt_done(h, st);
  return res;
}

static int sq_begin(void *db) { return sq_exec(db, "BEGIN"); }
static int sq_commit(void *db) { return sq_exec(db, "COMMIT"); }

/* One line of the table's engine counters (bftree_stat), for the log. */
static void sq_print_stats(sq *h) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h->db, "SELECT name, value FROM bftree_stat('t')", -1, &st,
                         NULL) != SQLITE_OK)
    return;
  printf("ycsb: %s: stats:", h->name);
  while (sqlite3_step(st) == SQLITE_ROW)
    printf(" %s=%s", (const char *)sqlite3_column_text(st, 0),
           (const char *)sqlite3_column_text(st, 1));
  printf("\n");
  sqlite3_finalize(st);
}

/* Close h; print the table's counters first when stats. */
static int sq_free(sq *h, bool stats) {
  if (h->bftree && stats) sq_print_stats(h);
  sqlite3_finalize(h->ins);
  sqlite3_finalize(h->upd);
  sqlite3_finalize(h->rep);
  sqlite3_finalize(h->sel);
  sqlite3_finalize(h->scan);
  int rc = sqlite3_close(h->db);
  if (rc != SQLITE_OK) fprintf(stderr, "ycsb: %s: close: %s\n", h->name, sqlite3_errstr(rc));
  free(h);
  return rc == SQLITE_OK ? YCSB_OK : YCSB_ERR;
}

static int sq_close(void *db) { return sq_free(db, true); }

/* A native connection's page cache: an equal part of the cache share per
** connection (each client thread has its own connection and SQLite's page
** cache is per connection; the OS page cache, inside the same memory cap,
** is what they share). */
static uint64_t sq_cache_bytes(const ycsb_cfg *cfg) {
  return cfg->cache_bytes / (uint64_t)(cfg->threads > 1 ? cfg->threads : 1);
}

static int sq_open(const ycsb_cfg *cfg, bool create, void **out, const char *name,
                   bool bftree) {
  sq *h = calloc(1, sizeof *h);
  char path[2048], sql[2600];
  if (!h) return YCSB_ERR;
  h->name = name;
  h->cfg = *cfg;
  h->mode = cfg->sql_mode;
  h->intkey = cfg->key_size == 8;
  h->bftree = bftree;
  h->key_size = cfg->key_size;
  h->value_size = cfg->value_size;
  snprintf(path, sizeof path, "%s/db.sqlite", cfg->dir);
  /* SQLite's documented speed knob for threaded programs: no memory
  ** statistics, so no process-wide mutex around every allocation.  Before
  ** the library initialises, so the first open (main thread) sets it. */
  static bool configured;
  if (!configured) {
    configured = true;
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  }
  if (sqlite3_open_v2(path, &h->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
      SQLITE_OK)
    goto fail;
  if (bftree) {
    char *err = NULL;
    sqlite3_enable_load_extension(h->db, 1);
    if (sqlite3_load_extension(h->db, cfg->ext_path, NULL, &err) != SQLITE_OK) {
      fprintf(stderr, "ycsb: %s: cannot load %s: %s\n", name, cfg->ext_path,
              err ? err : "?");
      sqlite3_free(err);
      sqlite3_close(h->db);
      free(h);
      return YCSB_ERR;
    }
  }
  /* other clients' connections write too: wait for their locks */
  if (bftree || !native_busy_retry())
    sqlite3_busy_timeout(h->db, SQ_BUSY_MS); /* the module waits this long */
  else
    sqlite3_busy_handler(h->db, sq_busy_retry, h);
  if (sq_exec(h, "PRAGMA journal_mode=WAL") || sq_exec(h, "PRAGMA synchronous=NORMAL"))
    goto fail_quiet;
  if (!bftree) {
    snprintf(sql, sizeof sql, "PRAGMA cache_size=-%llu",
             (unsigned long long)(sq_cache_bytes(cfg) / 1024));
    if (sq_exec(h, sql)) goto fail_quiet;
  }
  if (bftree && !create && bftree_in_temp(cfg)) { /* see THREADS */
    const char *kt = h->intkey ? "INTEGER" : "BLOB";
    snprintf(sql, sizeof sql,
             "CREATE VIRTUAL TABLE temp.t USING bftree(k %s PRIMARY KEY, v BLOB, "
             "buffer_size=%llu, synchronous='normal', file='%s/" BFTREE_FILE "')",
             kt, (unsigned long long)cfg->cache_bytes, cfg->dir);
    if (sq_exec(h, sql)) goto fail_quiet;
  } else if (create) {
    const char *kt = h->intkey ? "INTEGER" : "BLOB";
    if (bftree)
      snprintf(sql, sizeof sql,
               "CREATE VIRTUAL TABLE t USING bftree(k %s PRIMARY KEY, v BLOB, "
               "buffer_size=%llu, synchronous='normal')",
               kt, (unsigned long long)cfg->cache_bytes);
    else
      snprintf(sql, sizeof sql,
               "CREATE TABLE t(k %s PRIMARY KEY, v BLOB) WITHOUT ROWID", kt);
    if (sq_exec(h, sql)) goto fail_quiet;
  }
  if (h->mode == YCSB_SQL_PREPARED) {
    if (sqlite3_prepare_v2(h->db, "INSERT INTO t(k,v) VALUES(?,?)", -1, &h->ins, NULL) ||
        sqlite3_prepare_v2(h->db, "UPDATE t SET v=? WHERE k=?", -1, &h->upd, NULL) ||
        sqlite3_prepare_v2(h->db, "INSERT OR REPLACE INTO t(k,v) VALUES(?,?)", -1,
                           &h->rep, NULL) ||
        sqlite3_prepare_v2(h->db, "SELECT v FROM t WHERE k=?", -1, &h->sel, NULL) ||
        sqlite3_prepare_v2(h->db, "SELECT k,v FROM t WHERE k>=? ORDER BY k LIMIT ?", -1,
                           &h->scan, NULL))
      goto fail;
  }
  *out = h;
  return YCSB_OK;
fail:
  sq_fail(h, "open");
fail_quiet:
  sq_free(h, false);
  return YCSB_ERR;
}

/* Another connection to the same database, for another client thread. */
static int sq_attach(void *db, void **out) {
  sq *h = db;
  return sq_open(&h->cfg, false, out, h->name, h->bftree);
}

static int sq_detach(void *db) { return sq_free(db, false); }

static int open_sqlite_sql(const ycsb_cfg *cfg, bool create, void **out) {
  return sq_open(cfg, create, out, "sqlite-sql", false);
}
static int open_sqlite_c(const ycsb_cfg *cfg, bool create, void **out) {
  return sq_open(cfg, create, out, "sqlite-c", false);
}
static int open_bftree_sql(const ycsb_cfg *cfg, bool create, void **out) {
  return sq_open(cfg, create, out, "bftree-sql", true);
}
static int open_bftree_prep(const ycsb_cfg *cfg, bool create, void **out) {
  return sq_open(cfg, create, out, "bftree-sql-prep", true);
}

static void describe(const ycsb_cfg *cfg, char *buf, size_t n, bool bftree) {
  char conns[320] = "";
  if (cfg->threads > 1)
    snprintf(conns, sizeof conns, " %s; %d connections, one per client thread, "
             "%s %d ms", bftree ? "shared by all connections" : "per connection",
             cfg->threads,
             !bftree ? (native_busy_retry() ? "busy handler retrying at once for up to"
                                            : "busy_timeout")
             : bftree_in_temp(cfg) ? "each declaring the table in its temp schema "
                                     "over the shared data file, busy_timeout"
                                   : "table in the main schema, busy_timeout",
             SQ_BUSY_MS);
  snprintf(buf, n,
           "SQLite %s, %s, %s; journal_mode=WAL synchronous=NORMAL (log on, "
           "fsync only at checkpoints); %s %.1f MiB%s; SQLITE_CONFIG_MEMSTATUS off; "
           "one autocommit transaction per operation",
           sqlite3_libversion(),
           bftree ? "bftree virtual table" : "WITHOUT ROWID table",
           cfg->sql_mode == YCSB_SQL_PREPARED
               ? "prepared statements reused (bind/step/reset)"
               : "SQL text compiled per operation (values as literals)",
           bftree ? "table buffer_size" : "PRAGMA cache_size",
           (double)(bftree ? cfg->cache_bytes : sq_cache_bytes(cfg)) / 1048576, conns);
}

static void describe_native(const ycsb_cfg *cfg, char *buf, size_t n) {
  describe(cfg, buf, n, false);
}
static void describe_bftree(const ycsb_cfg *cfg, char *buf, size_t n) {
  describe(cfg, buf, n, true);
}

const ycsb_adapter ycsb_sqlite_sql = {"sqlite-sql", describe_native, open_sqlite_sql,
                                      sq_insert, sq_update, sq_read, sq_scan, sq_close,
                                      sq_begin, sq_commit, sq_attach, sq_detach, sq_upsert};
const ycsb_adapter ycsb_sqlite_c = {"sqlite-c", describe_native, open_sqlite_c,
                                    sq_insert, sq_update, sq_read, sq_scan, sq_close,
                                      sq_begin, sq_commit, sq_attach, sq_detach, sq_upsert};
const ycsb_adapter ycsb_bftree_sql = {"bftree-sql", describe_bftree, open_bftree_sql,
                                      sq_insert, sq_update, sq_read, sq_scan, sq_close,
                                      sq_begin, sq_commit, sq_attach, sq_detach, sq_upsert};
const ycsb_adapter ycsb_bftree_sql_prep = {"bftree-sql-prep", describe_bftree,
                                           open_bftree_prep, sq_insert, sq_update,
                                           sq_read, sq_scan, sq_close, sq_begin,
                                           sq_commit, sq_attach, sq_detach, sq_upsert};
