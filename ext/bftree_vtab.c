/*
** bftree_vtab.c: the `bftree` SQLite virtual-table module.
**
** USAGE
**   .load ./bftree
**   CREATE VIRTUAL TABLE t USING bftree(id INTEGER PRIMARY KEY, name TEXT,
**                                       buffer_size='64MiB');
**   INSERT INTO t VALUES(1, 'one');
**   SELECT * FROM t WHERE id BETWEEN 1 AND 10 ORDER BY id DESC;
**   SELECT * FROM bftree_stat('t');  SELECT bftree_check('t');
**
** A bftree table behaves as a native WITHOUT ROWID table with the same column
** definitions: one PRIMARY KEY column (the first column when none is marked),
** column affinity applied on write as SQLite applies it, keys ordered and
** compared as SQLite does under BINARY collation, the same constraint errors
** and conflict resolution (OR ABORT/FAIL/IGNORE/REPLACE/ROLLBACK).  The table
** lives in one engine tree; see bfx_schema.c for the arguments and options.
**
** STORAGE.  Engine key = bfx_key_encode(key value after affinity); engine
** value = bfx_record_encode(all columns), the key column stored as "take it
** from the key" when the key round-trips (integers, text, blobs), explicitly
** otherwise (a real key 5.0 in an untyped column stays a real).
**
** PLANS (xBestIndex).  Usable constraints on the key with BINARY collation:
** =, IN (taken whole with sqlite3_vtab_in), IS, <, <=, >, >=, IS NULL, IS NOT
** NULL, any number of each; they are intersected in xFilter in key space.
** LIMIT/OFFSET are taken only when every other constraint is taken with omit
** and the ORDER BY (if any) is consumed.  idxNum is unused; idxStr both shows
** the plan in EXPLAIN QUERY PLAN and drives xFilter, one term per argv in
** order:
**     "<key> = ?"  "<key> IN (...)"  "<key> IS ?"  "<key> > ?"  "<key> >= ?"
**     "<key> < ?"  "<key> <= ?"  "<key> IS NULL"  "<key> IS NOT NULL"
** joined by " AND ", or "full scan" when there is none, then " DESC" for a
** descending scan, " LIMIT ?", " OFFSET ?".
**
** COST MODEL.  N = 1e6 rows assumed.  Key equality: 1 row, cost 10, unique
** (SQLITE_INDEX_SCAN_UNIQUE, so UPDATE/DELETE by key run in one pass).  IN:
** 10 rows per list, cost 20.  Range with both ends: N/16; one end: N/4; full
** scan: N, cost N (+ N log N when an ORDER BY is not consumed is SQLite's
** business).  Exactness (omit): a constraint value is converted with the key
** column's affinity as SQLite does for "column OP value"; for INTEGER, REAL
** and NUMERIC keys this is exact for any right-hand side; for TEXT and BLOB
** keys it is exact only when the right-hand side is a known non-numeric
** constant (a column of numeric affinity on the right would convert the key
** instead), so otherwise SQLite re-checks (omit = 0).
**
** TRANSACTIONS.  Every write goes through an engine transaction (bf_txn),
** one per vtab (= per connection and table) while SQLite has the table in a
** write transaction:
**   xBegin       open the transaction, unlocked (tsh); see LAZY LOCK.
**   (first read  take the tree's writer lock (bfx_shared.c; a second writer
**    or write)   waits up to the connection's busy timeout, read with
**                PRAGMA busy_timeout when the lock is taken, then gets
**                SQLITE_BUSY naming the table), bf_txn_begin.
**   xUpdate      bf_txn_put / bf_txn_delete; look-ups (old row, conflicts)
**                with bf_txn_get, so a transaction sees its own writes.
**   xFilter      point look-ups with bf_txn_get, range scans on a cursor
**                opened with bf_cursor_open_txn while the vtab has a txn;
**                other connections read the tree as last committed.
**   xSavepoint   SQLite savepoint level i -> engine mark marks[i] (levels
**   xRelease     SQLite never announced to this vtab get a mark at the
**   xRollbackTo  current position); level -1 is the savepoint that opened
**                the transaction itself (SAVEPOINT outside BEGIN): rolling
**                back to it discards the whole write set (abort + begin).
**   xSync        commit id = max(bf_last_commit_id, commit_floor) + 1; the
**                id is written into the shadow table, then bf_txn_prepare
**                logs the transaction durably (per synchronous) and holds
**                the tree's write gate.  An empty transaction skips both.
**                A one-statement (autocommit) transaction writing only this
**                bftree table skips the shadow row and commits with id 0:
**                nothing else must commit with it.
**   xCommit      bf_txn_commit (applies the writes), drop the writer lock.
**   xRollback    bf_txn_abort (after xSync the engine checkpoints so that
**                its log forgets the transaction), drop the writer lock.
** SQLite calls xSync, then commits the database file(s), then xCommit; it
** calls xRollback instead when anything fails, even after xSync.
**
** LAZY LOCK.  SQLite calls xBegin when a statement that writes the table
** starts, before the statement reads anything.  The writer lock is taken
** later, at the statement's first read of the table (xFilter) or first write
** (xUpdate): nothing of the table is read in between, so the transaction
** sees the same rows as if it had locked in xBegin.  What the delay buys:
** when another connection holds the lock, xFilter knows the keys it is
** about to look up and prefetches them (bf_prefetch: the records, or their
** absence, cached in the buffer) before it waits, so concurrent writers do
** their disk reads side by side and hold the lock only for work in memory.
** A read-only statement of the transaction (a SELECT) takes no lock while
** the transaction has none: it has written nothing, so it reads what any
** reader reads, and a SELECT after a write that got SQLITE_BUSY is not
** blocked in turn.
** (Where the table lives in a schema shared by connections, SQLite's own
** write lock on that database serialises writers first; in a connection's
** temp schema, declared over a shared data file, only this lock does.)
**
** SHADOW TABLE "<table>_bftree" in the table's schema (created by xCreate,
** dropped by xDestroy, renamed by xRename, read-only to SQL in defensive
** mode through xShadowName), made by CREATE TABLE AS (so that changes() is
** not disturbed), one row:
**     COLUMN     VALUE
**     rowid      1
**     commit_id  BLOB of 8 bytes: the commit id of the last transaction of
**                this table that the database committed, big-endian
** xSync overwrites commit_id in place (sqlite3_blob_write: no change
** counter moves) inside the database transaction being committed, so the
** number commits or rolls back with the native tables.  When the first
** connection of the process opens the table's tree, it passes commit_id as
** bf_options.replay_limit: recovery replays exactly the logged transactions
** the database committed (crash after xSync but before the database
** commit: skipped; crash after the database commit but before xCommit:
** replayed).  A table without the shadow table (made by an older version)
** replays everything and commits
** with id 0 (no atomicity with the database across a crash).
**
** Invariants:
**   1. xUpdate checks every constraint (NOT NULL, size limits, uniqueness)
**      before changing anything; a change of two engine writes (a key
**      change) is bracketed by an engine mark and undone on failure, so a
**      failing xUpdate leaves the transaction as it found it.
**   2. Between a successful xBegin and xCommit/xRollback, tsh references
**      the tree of the transaction txn (NULL only after a ROLLBACK TO that
**      could not restart it); outside, tsh and txn are NULL.  holds_lock
**      (the tree's writer lock is ours) implies tsh; txn holds writes, and
**      a statement that may write has read through it, only while
**      holds_lock (LAZY LOCK).
**   3. marks[0..nmarks) are the engine marks of SQLite savepoint levels
**      0..nmarks-1, strictly increasing.
**   4. A cursor holds no engine latch between calls (bf_cursor copies).  A
**      cursor whose engine cursor overlays txn (bc_txn == txn) is detached
**      before txn ends (its current row copied, the engine cursor closed);
**      its next row comes from a new engine cursor seeked past that row.
**   5. prepared: bf_txn_prepare succeeded; no more writes may go into txn
**      (a COMMIT that failed with SQLITE_BUSY leaves this state: COMMIT
**      again or ROLLBACK; other statements writing the table fail).
**
** Transaction states of a vtab:
**   IDLE -> ACTIVE [xBegin]; ACTIVE -> PREPARED [xSync];
**   ACTIVE, PREPARED -> IDLE [xCommit, xRollback];
**   within ACTIVE marks come and go [xSavepoint, xRelease, xRollbackTo].
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT1

#include "bfx_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BFX_EST_ROWS 1000000.0

/* ------------------------------------------------------------ helpers */

int bfx_sqlite_rc(int st) {
  switch (st) {
    case BF_OK: return SQLITE_OK;
    case BF_NOMEM: return SQLITE_NOMEM;
    case BF_IOERR: return SQLITE_IOERR;
    case BF_CORRUPT: return SQLITE_CORRUPT_VTAB;
    case BF_TOOBIG: return SQLITE_TOOBIG;
    case BF_BUSY: return SQLITE_BUSY;
    case BF_FULL: return SQLITE_FULL;
    case BF_READONLY: return SQLITE_READONLY;
    case BF_NOTBFTREE:
    case BF_INVALID:
    default: return SQLITE_ERROR;
  }
}

/* The message for a failed open of path (engine message em may be NULL). */
static char *open_error_message(int st, const char *path, const char *em) {
  switch (st) {
    case BF_BUSY:
      (void)em;
      return sqlite3_mprintf("bftree: data file %s is in use by another "
                             "process (it is locked)", path);
    case BF_NOTBFTREE:
      return sqlite3_mprintf("bftree: %s exists and is not a bftree data "
                             "file; refusing to use it (nothing was written)",
                             path);
    default:
      /* the engine's message names the file already */
      if (em) return sqlite3_mprintf("bftree: %s", em);
      return sqlite3_mprintf("bftree: cannot open %s: %s", path, bf_strerror(st));
  }
}

/* ---------------------------------------------------- connection state */

void bfx_conn_ref(bfx_conn *c) { c->refs++; }

void bfx_conn_unref(bfx_conn *c) {
  if (!c || --c->refs > 0) return;
  bfx_entry *e = c->entries;
  while (e) {
    bfx_entry *next = e->next;
    bfx_shared_release(e->shared);
    sqlite3_free(e->zDb);
    sqlite3_free(e->zName);
    sqlite3_free(e->path);
    sqlite3_free(e);
    e = next;
  }
  sqlite3_free(c);
}

static void conn_module_destroy(void *p) { bfx_conn_unref((bfx_conn *)p); }

bfx_entry *bfx_conn_find(bfx_conn *c, const char *zDb, const char *zName) {
  bfx_entry *any = NULL;
  for (bfx_entry *e = c->entries; e; e = e->next) {
    if (sqlite3_stricmp(e->zName, zName) != 0) continue;
    if (zDb) {
      if (sqlite3_stricmp(e->zDb, zDb) == 0) return e;
    } else {
      if (sqlite3_stricmp(e->zDb, "main") == 0) return e;
      if (!any) any = e;
    }
  }
  return any;
}

static void entry_remove(bfx_conn *c, bfx_entry *e) {
  for (bfx_entry **pp = &c->entries; *pp; pp = &(*pp)->next) {
    if (*pp == e) {
      *pp = e->next;
      break;
    }
  }
  bfx_shared_release(e->shared);
  sqlite3_free(e->zDb);
  sqlite3_free(e->zName);
  sqlite3_free(e->path);
  sqlite3_free(e);
}

/* ------------------------------------------------------- shadow table */

/* The shadow table of table T is "T_" SHADOW_SUFFIX (see the file header). */
#define SHADOW_SUFFIX "bftree"

/* Whether zDb has the shadow table of zName: 1 yes, 0 no, or an SQLite
** error code negated. */
static int shadow_exists(sqlite3 *db, const char *zDb, const char *zName) {
  sqlite3_stmt *st = NULL;
  char *sql = sqlite3_mprintf("SELECT 1 FROM \"%w\".sqlite_schema WHERE "
                              "type = 'table' AND name = '%q_" SHADOW_SUFFIX
                              "' COLLATE NOCASE", zDb, zName);
  if (!sql) return -SQLITE_NOMEM;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  sqlite3_free(sql);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    rc = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -rc;
  } else {
    rc = -rc;
  }
  sqlite3_finalize(st);
  return rc;
}

static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* The blob literal of commit id v: x'0000000000000001'. */
static void id_literal(char out[20], uint64_t v) {
  uint8_t b[8];
  put_be64(b, v);
  out[0] = 'x';
  out[1] = '\'';
  for (int i = 0; i < 8; i++) snprintf(out + 2 + 2 * i, 3, "%02x", b[i]);
  out[18] = '\'';
  out[19] = 0;
}

/*
** Read the shadow table's commit id of table zDb.zName into *out:
** UINT64_MAX (replay everything) when there is no shadow table or no row.
** On error returns an SQLite code and sets *pzErr.
*/
static int shadow_read(sqlite3 *db, const char *zDb, const char *zName,
                       uint64_t *out, char **pzErr) {
  sqlite3_stmt *st = NULL;
  *out = UINT64_MAX;
  char *sql = sqlite3_mprintf("SELECT commit_id FROM \"%w\".\"%w_"
                              SHADOW_SUFFIX "\" WHERE rowid = 1", zDb, zName);
  if (!sql) return SQLITE_NOMEM;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  sqlite3_free(sql);
  if (rc != SQLITE_OK) {
    int ex = shadow_exists(db, zDb, zName);
    if (ex == 0) return SQLITE_OK; /* an older table: replay everything */
    *pzErr = sqlite3_mprintf("bftree: cannot read %s_" SHADOW_SUFFIX ", the "
                             "shadow table of %s: %s", zName, zName,
                             sqlite3_errmsg(db));
    return rc;
  }
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const uint8_t *b = sqlite3_column_blob(st, 0);
    if (sqlite3_column_type(st, 0) != SQLITE_BLOB ||
        sqlite3_column_bytes(st, 0) != 8 || !b) {
      *pzErr = sqlite3_mprintf("bftree: the shadow table %s_" SHADOW_SUFFIX
                               " holds a malformed value", zName);
      rc = SQLITE_CORRUPT_VTAB;
    } else {
      uint64_t v = 0;
      for (int i = 0; i < 8; i++) v = (v << 8) | b[i];
      *out = v;
      rc = SQLITE_OK;
    }
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK; /* no row: replay everything */
  } else {
    *pzErr = sqlite3_mprintf("bftree: cannot read %s_" SHADOW_SUFFIX ": %s",
                             zName, sqlite3_errmsg(db));
  }
  sqlite3_finalize(st);
  return rc;
}

/* Run sql (sqlite3_malloc()ed, freed here); on error set *pzErr with what
** (the operation) and return the SQLite code. */
static int exec_sql(sqlite3 *db, char *sql, const char *what, char **pzErr) {
  if (!sql) return SQLITE_NOMEM;
  char *em = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &em);
  sqlite3_free(sql);
  if (rc != SQLITE_OK) {
    *pzErr = sqlite3_mprintf("bftree: %s: %s", what, em ? em : sqlite3_errstr(rc));
  }
  sqlite3_free(em);
  return rc;
}

/* Create the shadow table of zDb.zName holding commit id `id`. */
static int shadow_create(sqlite3 *db, const char *zDb, const char *zName,
                         uint64_t id, char **pzErr) {
  char lit[20];
  id_literal(lit, id);
  /* CREATE TABLE AS: the row gets rowid 1 without touching changes(). */
  return exec_sql(db,
                  sqlite3_mprintf("CREATE TABLE \"%w\".\"%w_" SHADOW_SUFFIX
                                  "\" AS SELECT %s AS commit_id",
                                  zDb, zName, lit),
                  "cannot create the shadow table", pzErr);
}

/* ---------------------------------------------------- opening the tree */

/* The connection's busy timeout in milliseconds (0 when it has none, or a
** busy handler of its own). */
static int busy_timeout_ms(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  int ms = 0;
  if (sqlite3_prepare_v2(db, "PRAGMA busy_timeout", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    ms = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return ms;
}


int bfx_entry_open(bfx_conn *c, bfx_entry *e, char **pzErr) {
  char *em = NULL;
  int st;
  if (e->shared) return SQLITE_OK;
  if (e->temporary) {
    st = bfx_shared_open_temp(bfx_temp_dir(), &e->opts, &e->shared, &em);
  } else {
    /* The database's committed transaction number bounds the replay (it is
    ** only used when this opens the tree, i.e. first in the process). */
    uint64_t limit;
    int rc = shadow_read(c->db, e->zDb, e->zName, &limit, pzErr);
    if (rc != SQLITE_OK) return rc;
    e->opts.replay_limit = limit;
    /* A data file locked by another process (or by one that just died:
    ** the kernel may release the lock of a killed process a little later)
    ** is waited for like a busy database, up to the busy timeout. */
    int budget = -1, waited = 0;
    for (;;) {
      st = bfx_shared_open(e->path, &e->opts, false, &e->shared, &em);
      if (st != BF_BUSY) break;
      if (budget < 0) budget = busy_timeout_ms(c->db);
      if (waited >= budget) break;
      free(em);
      em = NULL;
      waited += sqlite3_sleep(10);
    }
  }
  if (st != BF_OK) {
    *pzErr = open_error_message(st, e->path ? e->path : bfx_temp_dir(), em);
    free(em);
    return bfx_sqlite_rc(st);
  }
  free(em);
  return SQLITE_OK;
}

/* ---------------------------------------------------------- key set */

/* A set of byte strings (the keys moved by key-changing UPDATE OR REPLACE in
** the current statement), open addressing over an arena. */
typedef struct bfx_keyset {
  uint8_t *arena;
  size_t alen, acap;
  struct kslot {
    uint64_t hash;
    size_t off, len;
    bool used;
  } *slots;
  size_t nslots, count;
} bfx_keyset;

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static bool keyset_has(const bfx_keyset *s, const uint8_t *k, size_t n) {
  if (!s->count) return false;
  uint64_t h = hash_bytes(k, n);
  for (size_t i = h & (s->nslots - 1);; i = (i + 1) & (s->nslots - 1)) {
    const struct kslot *sl = &s->slots[i];
    if (!sl->used) return false;
    if (sl->hash == h && sl->len == n && memcmp(s->arena + sl->off, k, n) == 0)
      return true;
  }
}

static int keyset_add(bfx_keyset *s, const uint8_t *k, size_t n) {
  if (keyset_has(s, k, n)) return SQLITE_OK;
  if ((s->count + 1) * 2 > s->nslots) {
    size_t ns = s->nslots ? s->nslots * 2 : 64;
    struct kslot *sl = sqlite3_malloc64(ns * sizeof *sl);
    if (!sl) return SQLITE_NOMEM;
    memset(sl, 0, ns * sizeof *sl);
    for (size_t i = 0; i < s->nslots; i++) {
      if (!s->slots[i].used) continue;
      size_t j = s->slots[i].hash & (ns - 1);
      while (sl[j].used) j = (j + 1) & (ns - 1);
      sl[j] = s->slots[i];
    }
    sqlite3_free(s->slots);
    s->slots = sl;
    s->nslots = ns;
  }
  if (s->alen + n > s->acap) {
    size_t cap = s->acap ? s->acap : 1024;
    while (cap < s->alen + n) cap *= 2;
    uint8_t *a = sqlite3_realloc64(s->arena, cap);
    if (!a) return SQLITE_NOMEM;
    s->arena = a;
    s->acap = cap;
  }
  if (n) memcpy(s->arena + s->alen, k, n);
  uint64_t h = hash_bytes(k, n);
  size_t i = h & (s->nslots - 1);
  while (s->slots[i].used) i = (i + 1) & (s->nslots - 1);
  s->slots[i] = (struct kslot){.hash = h, .off = s->alen, .len = n, .used = true};
  s->alen += n;
  s->count++;
  return SQLITE_OK;
}

static void keyset_clear(bfx_keyset *s) {
  if (s->count && s->slots) memset(s->slots, 0, s->nslots * sizeof *s->slots);
  s->count = 0;
  s->alen = 0;
}

static void keyset_free(bfx_keyset *s) {
  sqlite3_free(s->arena);
  sqlite3_free(s->slots);
  memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------- the vtab */

typedef struct bfx_cursor bfx_cursor;

typedef struct bfx_vtab {
  sqlite3_vtab base; /* Base class. Must be first */
  sqlite3 *db;
  bfx_conn *conn;    /* a reference */
  bfx_entry *entry;  /* owned by conn; lives at least as long as the vtab */
  bfx_schema *schema;
  bool numeric_key;  /* key affinity INTEGER, REAL or NUMERIC */
  bfx_cursor *cursors; /* open cursors (for the one-pass test of xUpdate
                       ** and invariant 4) */
  /* Transaction state (see TRANSACTIONS and the invariants). */
  bf_txn *txn;         /* NULL when idle (or after a failed restart) */
  bool holds_lock;     /* the writer lock of tsh is ours */
  bfx_shared *tsh;     /* during a write transaction: its tree,
                       ** referenced (invariant 2) */
  bool prepared;       /* invariant 5 */
  bool no_shadow;      /* the table has no shadow table (older version) */
  bool implicit_txn;   /* the transaction began in autocommit mode: it is
                       ** one statement's (see bfxSync) */
  uint32_t *marks;     /* invariant 3 */
  int nmarks, cmarks;
  bfx_keyset moved;
  /* Buffers reused by xUpdate. */
  uint8_t *obuf; size_t ocap;  /* old row */
  uint8_t *xbuf; size_t xcap;  /* existing row at the new key */
  uint8_t *rbuf; size_t rcap;  /* new record */
  uint8_t *kbuf; size_t kcap;  /* new key */
  uint8_t *okbuf; size_t okcap;/* old key */
  uint64_t *types;             /* [ncol] record parse scratch */
  size_t *offs;
  bfx_cursor *spare;           /* a closed cursor kept with its buffers for
                               ** the next xOpen (one statement after
                               ** another reuses one cursor's memory) */
  /* The row a point cursor was on when it closed: in a one-pass UPDATE
  ** SQLite closes the cursor, then calls xUpdate for that row.  Valid only
  ** while write_gen equals last_gen, i.e. nothing has changed this table's
  ** transaction since the row was read (see bfxUpdate). */
  uint64_t write_gen;          /* bumped by xUpdate and every transaction
                               ** method */
  bool last_valid;
  uint64_t last_gen;           /* write_gen when the row was read */
  uint8_t *last_key; size_t last_kcap, last_klen;
  uint8_t *last_row; size_t last_rcap, last_rlen;
} bfx_vtab;

static void vt_error(bfx_vtab *vt, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sqlite3_free(vt->base.zErrMsg);
  vt->base.zErrMsg = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
}

static const char *vt_name(bfx_vtab *vt) { return vt->entry->zName; }

/* Ensure the tree is open; returns an SQLite code with zErrMsg set. */
static int vt_tree(bfx_vtab *vt, bf_tree **out) {
  if (!vt->entry->shared) {
    char *err = NULL;
    int rc = bfx_entry_open(vt->conn, vt->entry, &err);
    if (rc != SQLITE_OK) {
      sqlite3_free(vt->base.zErrMsg);
      vt->base.zErrMsg = err;
      return rc;
    }
  }
  *out = vt->entry->shared->tree;
  return SQLITE_OK;
}

/* Report an engine status from operation op on the table. */
static int vt_engine_error(bfx_vtab *vt, int st, const char *op) {
  vt_error(vt, "bftree: %s on table %s failed: %s", op, vt_name(vt),
           bf_strerror(st));
  return bfx_sqlite_rc(st);
}

static int grow(uint8_t **buf, size_t *cap, size_t need) {
  if (need <= *cap) return SQLITE_OK;
  size_t c = *cap ? *cap : 256;
  while (c < need) c *= 2;
  uint8_t *b = sqlite3_realloc64(*buf, c);
  if (!b) return SQLITE_NOMEM;
  *buf = b;
  *cap = c;
  return SQLITE_OK;
}

/* bf_get (bf_txn_get when txn is not NULL: the transaction's own view)
** into a growable buffer.  BF_OK / BF_NOTFOUND / error. */
static int get_row(bf_tree *tree, bf_txn *txn, const uint8_t *key,
                   size_t klen, uint8_t **buf, size_t *cap, size_t *len) {
  for (;;) {
    size_t vlen = 0;
    int st = txn ? bf_txn_get(txn, key, klen, *buf, *cap, &vlen)
                 : bf_get(tree, key, klen, *buf, *cap, &vlen);
    if (st != BF_OK) return st;
    if (vlen <= *cap) {
      *len = vlen;
      return BF_OK;
    }
    if (grow(buf, cap, vlen) != SQLITE_OK) return BF_NOMEM;
  }
}

/* Encode value v as a key into a growable buffer. */
static int encode_key(const bfx_value *v, uint8_t **buf, size_t *cap,
                      size_t *len) {
  size_t n = bfx_key_encode(v, *buf, *cap);
  if (n > *cap) {
    if (grow(buf, cap, n) != SQLITE_OK) return SQLITE_NOMEM;
    n = bfx_key_encode(v, *buf, *cap);
  }
  *len = n;
  return SQLITE_OK;
}

/* An sqlite3_value as a bfx_value (pointers into the value). */
static void from_sqlite(sqlite3_value *sv, bfx_value *out) {
  memset(out, 0, sizeof *out);
  out->type = sqlite3_value_type(sv);
  switch (out->type) {
    case SQLITE_INTEGER:
      out->i = sqlite3_value_int64(sv);
      break;
    case SQLITE_FLOAT:
      out->r = sqlite3_value_double(sv);
      break;
    case SQLITE_TEXT:
      out->z = sqlite3_value_text(sv);
      out->n = (size_t)sqlite3_value_bytes(sv);
      if (!out->z) out->type = BFX_NULL; /* OOM */
      break;
    case SQLITE_BLOB:
      out->z = sqlite3_value_blob(sv);
      out->n = (size_t)sqlite3_value_bytes(sv);
      if (!out->z) out->z = (const uint8_t *)"";
      break;
    default:
      out->type = BFX_NULL;
      break;
  }
}

/* SQLite's rule for a real under INTEGER/NUMERIC affinity: it becomes an
** integer when the conversion is exact and not at the int64 extremes. */
static void integer_affinity(bfx_value *v) {
  double r = v->r;
  int64_t ix;
  if (r <= -9223372036854775808.0)
    ix = INT64_MIN;
  else if (r >= 9223372036854775807.0)
    ix = INT64_MAX;
  else
    ix = (int64_t)r;
  if (r == (double)ix && ix > INT64_MIN && ix < INT64_MAX) {
    v->type = BFX_INTEGER;
    v->i = ix;
  }
}

/*
** Convert sv with affinity aff into *out.  store: the conversion of a value
** stored into a column (INTEGER/NUMERIC try for an integer, REAL makes
** reals); otherwise the conversion of the right-hand side of a comparison
** with the column (numeric text becomes a number, numbers become text for
** TEXT).  A conversion works on a copy, returned in *dup for the caller to
** sqlite3_value_free() after using *out.
*/
static int apply_affinity(int aff, bool store, sqlite3_value *sv,
                          bfx_value *out, sqlite3_value **dup) {
  int t = sqlite3_value_type(sv);
  *dup = NULL;
  switch (aff) {
    case BFX_AFF_TEXT:
      if (t == SQLITE_INTEGER || t == SQLITE_FLOAT) {
        *dup = sqlite3_value_dup(sv);
        if (!*dup) return SQLITE_NOMEM;
        if (!sqlite3_value_text(*dup)) return SQLITE_NOMEM;
        memset(out, 0, sizeof *out);
        out->type = BFX_TEXT;
        out->z = sqlite3_value_text(*dup);
        out->n = (size_t)sqlite3_value_bytes(*dup);
        return SQLITE_OK;
      }
      break;
    case BFX_AFF_NUMERIC:
    case BFX_AFF_INTEGER:
    case BFX_AFF_REAL:
      if (t == SQLITE_TEXT) {
        *dup = sqlite3_value_dup(sv);
        if (!*dup) return SQLITE_NOMEM;
        sqlite3_value_numeric_type(*dup);
        sv = *dup;
      }
      from_sqlite(sv, out);
      if (store && aff == BFX_AFF_REAL && out->type == BFX_INTEGER) {
        out->type = BFX_FLOAT;
        out->r = (double)out->i;
      } else if (store && aff != BFX_AFF_REAL && out->type == BFX_FLOAT) {
        integer_affinity(out);
      }
      return SQLITE_OK;
    default:
      break;
  }
  from_sqlite(sv, out);
  return SQLITE_OK;
}

/* ------------------------------------------------------- create/connect */

static int vt_init(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                   sqlite3_vtab **ppVtab, char **pzErr, bool create) {
  bfx_conn *conn = (bfx_conn *)pAux;
  bfx_schema *schema = NULL;
  bfx_vtab *vt = NULL;
  char *path = NULL;
  bool is_temp = false;
  int rc;
  *ppVtab = NULL;
  rc = bfx_schema_parse(argc, argv, &schema, pzErr);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_declare_vtab(db, schema->declare_sql);
  if (rc != SQLITE_OK) {
    *pzErr = sqlite3_mprintf("bftree: %s", sqlite3_errmsg(db));
    goto fail;
  }
  sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
  sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);

  path = bfx_data_path(db, argv[1], argv[2], schema->file, &is_temp);
  if (!path && !is_temp) {
    rc = SQLITE_NOMEM;
    goto fail;
  }
  bfx_entry *e = bfx_conn_find(conn, argv[1], argv[2]);
  if (e) {
    /* A table of this name used before on this connection: keep its tree
    ** unless it no longer belongs to this table (dropped elsewhere, file
    ** replaced, or a new CREATE of a temporary table). */
    bool stale = false;
    if (e->shared) {
      if (e->temporary != is_temp)
        stale = true;
      else if (is_temp)
        stale = create;
      else
        stale = bfx_shared_stale(e->shared, path) ||
                (e->path && strcmp(e->path, path) != 0);
    }
    if (stale) {
      bfx_shared_release(e->shared);
      e->shared = NULL;
    }
    sqlite3_free(e->path);
    e->path = path;
    path = NULL;
    e->temporary = is_temp;
  } else {
    e = sqlite3_malloc64(sizeof *e);
    if (!e) {
      rc = SQLITE_NOMEM;
      goto fail;
    }
    memset(e, 0, sizeof *e);
    e->zDb = sqlite3_mprintf("%s", argv[1]);
    e->zName = sqlite3_mprintf("%s", argv[2]);
    e->path = path;
    path = NULL;
    e->temporary = is_temp;
    e->next = conn->entries;
    conn->entries = e;
    if (!e->zDb || !e->zName) {
      rc = SQLITE_NOMEM;
      goto fail;
    }
  }
  bf_options_init(&e->opts);
  e->opts.buffer_size = schema->buffer_size;
  e->opts.page_size = schema->page_size;
  e->opts.synchronous = schema->synchronous == BFX_SYNC_OFF    ? BF_SYNC_OFF
                        : schema->synchronous == BFX_SYNC_FULL ? BF_SYNC_FULL
                                                               : BF_SYNC_NORMAL;
  e->opts.wal = !is_temp; /* an anonymous file needs no log */
  e->opts.auto_checkpoint = false; /* bfxCommit checkpoints, unlocked */
  if (schema->wal_size_limit) e->opts.wal_size_limit = schema->wal_size_limit;

  if (create || e->temporary) {
    /* Eager open: CREATE reports a bad file, a busy file or bad options
    ** now; a temporary table needs its tree to exist from the start. */
    if (!e->shared) {
      char *em = NULL;
      int st = e->temporary
                   ? bfx_shared_open_temp(bfx_temp_dir(), &e->opts, &e->shared, &em)
                   : bfx_shared_open(e->path, &e->opts, true, &e->shared, &em);
      if (st != BF_OK) {
        *pzErr = open_error_message(st, e->path ? e->path : bfx_temp_dir(), em);
        free(em);
        rc = bfx_sqlite_rc(st);
        goto fail;
      }
      free(em);
    }
    /* Two persistent tables never share a data file (their commit ids
    ** would mix).  A temp declaration over a persistent table's file is the
    ** way to many writers (README-sql.md); it commits with id 0. */
    for (bfx_entry *o = conn->entries; create && o; o = o->next) {
      if (o != e && o->shared == e->shared && strcmp(o->zDb, "temp") != 0 &&
          strcmp(e->zDb, "temp") != 0) {
        *pzErr = sqlite3_mprintf("bftree: data file %s is already used by "
                                 "table %s.%s", e->path ? e->path : "?",
                                 o->zDb, o->zName);
        bfx_shared_release(e->shared);
        e->shared = NULL;
        rc = SQLITE_ERROR;
        goto fail;
      }
    }
    /* The shadow table, holding the tree's newest commit id (a data file
    ** that existed already may have some). */
    if (create && !e->temporary) {
      rc = shadow_create(db, argv[1], argv[2], bf_last_commit_id(e->shared->tree),
                         pzErr);
      if (rc != SQLITE_OK) {
        bfx_shared_release(e->shared);
        e->shared = NULL;
        goto fail;
      }
    }
  }

  vt = sqlite3_malloc64(sizeof *vt);
  if (!vt) {
    rc = SQLITE_NOMEM;
    goto fail;
  }
  memset(vt, 0, sizeof *vt);
  vt->db = db;
  vt->conn = conn;
  bfx_conn_ref(conn);
  vt->entry = e;
  vt->schema = schema;
  int ka = schema->affinity[schema->key_col];
  vt->numeric_key = ka == BFX_AFF_INTEGER || ka == BFX_AFF_REAL || ka == BFX_AFF_NUMERIC;
  vt->types = sqlite3_malloc64(sizeof(uint64_t) * (size_t)schema->ncol);
  vt->offs = sqlite3_malloc64(sizeof(size_t) * (size_t)schema->ncol);
  if (!vt->types || !vt->offs) {
    sqlite3_free(vt->types);
    sqlite3_free(vt->offs);
    bfx_conn_unref(conn);
    sqlite3_free(vt);
    vt = NULL;
    rc = SQLITE_NOMEM;
    goto fail;
  }
  *ppVtab = &vt->base;
  return SQLITE_OK;

fail:
  if (rc == SQLITE_NOMEM && !*pzErr) *pzErr = sqlite3_mprintf("out of memory");
  sqlite3_free(path);
  bfx_schema_free(schema);
  return rc;
}

static int bfxCreate(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                     sqlite3_vtab **ppVtab, char **pzErr) {
  return vt_init(db, pAux, argc, argv, ppVtab, pzErr, true);
}

static int bfxConnect(sqlite3 *db, void *pAux, int argc,
                      const char *const *argv, sqlite3_vtab **ppVtab,
                      char **pzErr) {
  return vt_init(db, pAux, argc, argv, ppVtab, pzErr, false);
}

static void txn_discard(bfx_vtab *vt);

static void cursor_destroy(bfx_cursor *c);

static void vt_free(bfx_vtab *vt) {
  txn_discard(vt);
  if (vt->spare) cursor_destroy(vt->spare);
  sqlite3_free(vt->last_key);
  sqlite3_free(vt->last_row);
  keyset_free(&vt->moved);
  sqlite3_free(vt->marks);
  sqlite3_free(vt->obuf);
  sqlite3_free(vt->xbuf);
  sqlite3_free(vt->rbuf);
  sqlite3_free(vt->kbuf);
  sqlite3_free(vt->okbuf);
  sqlite3_free(vt->types);
  sqlite3_free(vt->offs);
  bfx_schema_free(vt->schema);
  bfx_conn_unref(vt->conn);
  sqlite3_free(vt);
}

/* xDisconnect: the connection stops using the table; its tree stays open
** (held by the connection's entry) until DROP TABLE or connection close. */
static int bfxDisconnect(sqlite3_vtab *tab) {
  vt_free((bfx_vtab *)tab);
  return SQLITE_OK;
}

/* xDestroy (DROP TABLE): drop the shadow table (inside the statement's
** transaction), remove the data file (at once); the tree is closed when the
** last connection of the process lets it go. */
static int bfxDestroy(sqlite3_vtab *tab) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  bfx_entry *e = vt->entry;
  /* The transaction is discarded by vt_free, once the table is gone: a drop
  ** that fails leaves it, and its lock, as they were. */
  if (!e->temporary) {
    char *err = NULL;
    int rc = exec_sql(vt->db,
                      sqlite3_mprintf("DROP TABLE IF EXISTS \"%w\".\"%w_"
                                      SHADOW_SUFFIX "\"", e->zDb, e->zName),
                      "cannot drop the shadow table", &err);
    if (rc != SQLITE_OK) {
      sqlite3_free(vt->base.zErrMsg);
      vt->base.zErrMsg = err;
      return rc;
    }
  }
  if (e->shared) {
    char *em = NULL;
    int st = bfx_shared_drop(e->shared, &em);
    if (st != BF_OK) {
      vt_error(vt, "bftree: %s", em ? em : bf_strerror(st));
      free(em);
      return bfx_sqlite_rc(st);
    }
  } else if (e->path) {
    char *em = NULL;
    int st = bf_files_remove(e->path, &em);
    if (st != BF_OK) {
      vt_error(vt, "bftree: %s", em ? em : bf_strerror(st));
      free(em);
      return bfx_sqlite_rc(st);
    }
  }
  entry_remove(vt->conn, e);
  vt_free(vt);
  return SQLITE_OK;
}

/* xRename: the shadow table is renamed with the table (inside the
** statement's transaction); a data file at the default place
** ("<db>-<table>.bftree") is renamed too (at once); a file given with file=
** keeps its name. */
static int bfxRename(sqlite3_vtab *tab, const char *zNew) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  bfx_entry *e = vt->entry;
  char *name = sqlite3_mprintf("%s", zNew);
  if (!name) return SQLITE_NOMEM;
  if (!e->temporary) {
    int ex = shadow_exists(vt->db, e->zDb, e->zName);
    int rc = ex < 0 ? -ex : SQLITE_OK;
    char *err = NULL;
    if (ex == 1)
      rc = exec_sql(vt->db,
                    sqlite3_mprintf("ALTER TABLE \"%w\".\"%w_" SHADOW_SUFFIX
                                    "\" RENAME TO \"%w_" SHADOW_SUFFIX "\"",
                                    e->zDb, e->zName, zNew),
                    "cannot rename the shadow table", &err);
    if (rc != SQLITE_OK) {
      sqlite3_free(vt->base.zErrMsg);
      vt->base.zErrMsg = err;
      sqlite3_free(name);
      return rc;
    }
    vt->no_shadow = false; /* look again at the next commit */
  }
  if (!vt->schema->file && !e->temporary && e->path) {
    bool t = false;
    char *np = bfx_data_path(vt->db, e->zDb, zNew, NULL, &t);
    if (!np) {
      sqlite3_free(name);
      return SQLITE_NOMEM;
    }
    if (strcmp(np, e->path) != 0) {
      int st = BF_OK;
      char *em = NULL;
      if (e->shared)
        st = bfx_shared_rename(e->shared, np, &em);
      else if (access(e->path, F_OK) == 0)
        st = bf_files_rename(e->path, np, &em);
      if (st != BF_OK) {
        if (em) vt_error(vt, "bftree: %s", em);
        free(em);
        sqlite3_free(np);
        sqlite3_free(name);
        return bfx_sqlite_rc(st);
      }
    }
    sqlite3_free(e->path);
    e->path = np;
  }
  sqlite3_free(e->zName);
  e->zName = name;
  return SQLITE_OK;
}

/* ---------------------------------------------------------- xBestIndex */

static const char *op_text(int op) {
  switch (op) {
    case SQLITE_INDEX_CONSTRAINT_EQ: return "= ?";
    case SQLITE_INDEX_CONSTRAINT_IS: return "IS ?";
    case SQLITE_INDEX_CONSTRAINT_GT: return "> ?";
    case SQLITE_INDEX_CONSTRAINT_GE: return ">= ?";
    case SQLITE_INDEX_CONSTRAINT_LT: return "< ?";
    case SQLITE_INDEX_CONSTRAINT_LE: return "<= ?";
    case SQLITE_INDEX_CONSTRAINT_ISNULL: return "IS NULL";
    case SQLITE_INDEX_CONSTRAINT_ISNOTNULL: return "IS NOT NULL";
    default: return NULL;
  }
}

static int bfxBestIndex(sqlite3_vtab *tab, sqlite3_index_info *info) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  int kc = vt->schema->key_col;
  const char *kname = vt->schema->names[kc];
  int argc = 0;
  bool all_omitted = true;
  bool has_eq = false, has_in = false, has_lo = false, has_hi = false;
  bool is_empty = false;
  int iLimit = -1, iOffset = -1;
  sqlite3_str *s = sqlite3_str_new(vt->db);

  for (int i = 0; i < info->nConstraint; i++) {
    const struct sqlite3_index_constraint *c = &info->aConstraint[i];
    if (c->op == SQLITE_INDEX_CONSTRAINT_LIMIT) {
      iLimit = i;
      continue;
    }
    if (c->op == SQLITE_INDEX_CONSTRAINT_OFFSET) {
      iOffset = i;
      continue;
    }
    const char *text = op_text(c->op);
    if (!c->usable || c->iColumn != kc || !text) {
      all_omitted = false;
      continue;
    }
    const char *coll = sqlite3_vtab_collation(info, i);
    if (coll && sqlite3_stricmp(coll, "BINARY") != 0) {
      all_omitted = false;
      continue;
    }
    bool exact = vt->numeric_key;
    switch (c->op) {
      case SQLITE_INDEX_CONSTRAINT_EQ:
        if (sqlite3_vtab_in(info, i, -1)) {
          sqlite3_vtab_in(info, i, 1);
          text = "IN (...)";
          has_in = true;
        } else {
          has_eq = true;
        }
        break;
      case SQLITE_INDEX_CONSTRAINT_IS:
        has_eq = true;
        break;
      case SQLITE_INDEX_CONSTRAINT_GT:
      case SQLITE_INDEX_CONSTRAINT_GE:
        has_lo = true;
        break;
      case SQLITE_INDEX_CONSTRAINT_LT:
      case SQLITE_INDEX_CONSTRAINT_LE:
        has_hi = true;
        break;
      case SQLITE_INDEX_CONSTRAINT_ISNULL:
        is_empty = true;
        exact = true;
        break;
      default: /* IS NOT NULL: always true of a key */
        exact = true;
        break;
    }
    if (!exact) {
      /* TEXT/BLOB key: exact when the right-hand side is a known value that
      ** is not a number (see COST MODEL in the file header). */
      sqlite3_value *rhs = NULL;
      if (sqlite3_vtab_rhs_value(info, i, &rhs) == SQLITE_OK && rhs) {
        int t = sqlite3_value_type(rhs);
        exact = t == SQLITE_TEXT || t == SQLITE_BLOB || t == SQLITE_NULL;
      }
    }
    info->aConstraintUsage[i].argvIndex = ++argc;
    info->aConstraintUsage[i].omit = exact;
    if (!exact) all_omitted = false;
    sqlite3_str_appendf(s, "%s%s %s", argc > 1 ? " AND " : "", kname, text);
  }
  if (argc == 0) sqlite3_str_appendall(s, "full scan");

  /* ORDER BY the key (the key is unique, so later terms do not matter). */
  bool desc = false;
  if (info->nOrderBy >= 1 && info->aOrderBy[0].iColumn == kc) {
    info->orderByConsumed = 1;
    desc = info->aOrderBy[0].desc != 0;
  }
  if (desc) sqlite3_str_appendall(s, " DESC");

  if (iLimit >= 0 && all_omitted &&
      (info->nOrderBy == 0 || info->orderByConsumed)) {
    info->aConstraintUsage[iLimit].argvIndex = ++argc;
    info->aConstraintUsage[iLimit].omit = 1;
    sqlite3_str_appendall(s, " LIMIT ?");
    if (iOffset >= 0) {
      info->aConstraintUsage[iOffset].argvIndex = ++argc;
      info->aConstraintUsage[iOffset].omit = 1;
      sqlite3_str_appendall(s, " OFFSET ?");
    }
  }

  double rows;
  if (is_empty) {
    rows = 1;
    info->estimatedCost = 1;
  } else if (has_eq) {
    rows = 1;
    info->estimatedCost = 10;
    if (!has_in) info->idxFlags |= SQLITE_INDEX_SCAN_UNIQUE;
  } else if (has_in) {
    rows = 10;
    info->estimatedCost = 20;
  } else if (has_lo && has_hi) {
    rows = BFX_EST_ROWS / 16;
    info->estimatedCost = rows;
  } else if (has_lo || has_hi) {
    rows = BFX_EST_ROWS / 4;
    info->estimatedCost = rows;
  } else {
    rows = BFX_EST_ROWS;
    info->estimatedCost = rows;
  }
  info->estimatedRows = (sqlite3_int64)rows;
  info->idxStr = sqlite3_str_finish(s);
  if (!info->idxStr) return SQLITE_NOMEM;
  info->needToFreeIdxStr = 1;
  return SQLITE_OK;
}

/* ------------------------------------------------------------ cursors */

enum cursor_mode { MODE_EOF = 0, MODE_RANGE, MODE_POINTS };

typedef struct bfx_key {
  uint8_t *k;
  size_t n;
} bfx_key;

struct bfx_cursor {
  sqlite3_vtab_cursor base; /* Base class. Must be first */
  bfx_cursor *next;         /* in vt->cursors */
  bf_cursor *bc;            /* engine cursor, opened on first range scan */
  bf_txn *bc_txn;           /* the transaction bc overlays, NULL for none */
  bool bc_stale;            /* bc overlays a finished transaction: only its
                            ** current row may be read; never moved */
  bool detached;            /* MODE_RANGE without bc: the current row is a
                            ** copy (kown, rowbuf); resume past it */
  int err;                  /* a deferred error for the next xNext */
  uint8_t *kown;            /* the current key, copied (detached) */
  size_t kowncap;
  int mode;                 /* enum cursor_mode */
  bool desc;
  /* Bounds in key space. */
  bfx_key lo, hi;
  bool has_lo, has_hi, lo_incl, hi_incl;
  /* Point lookups (key equality or IN lists), sorted ascending. */
  bfx_key *pts;
  size_t npts, ipt, cpts;
  /* LIMIT: rows still to return (-1: no limit). */
  int64_t left;
  /* The current row. */
  const uint8_t *key, *val;
  size_t key_len, val_len;
  uint8_t *rowbuf;
  size_t rowcap;
  uint64_t read_gen;        /* vt->write_gen when the point row was read */
  bool parsed;
  bfx_record rec;
  uint64_t *types;
  size_t *offs;
};

/* xOpen: a cursor, the vtab's spare one when it has one.  The row buffer
** starts at the tree's largest record, so a lookup never has to be
** repeated for want of room (get_row retries when the buffer is short). */
static int bfxOpen(sqlite3_vtab *tab, sqlite3_vtab_cursor **ppCur) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  bf_tree *tree;
  int rc = vt_tree(vt, &tree);
  if (rc != SQLITE_OK) return rc;
  bfx_cursor *c = vt->spare;
  if (c) {
    vt->spare = NULL;
  } else {
    c = sqlite3_malloc64(sizeof *c);
    if (!c) return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    int ncol = vt->schema->ncol;
    c->types = sqlite3_malloc64(sizeof(uint64_t) * (size_t)ncol);
    c->offs = sqlite3_malloc64(sizeof(size_t) * (size_t)ncol);
    if (!c->types || !c->offs ||
        grow(&c->rowbuf, &c->rowcap, bf_max_record_size(tree)) != SQLITE_OK) {
      cursor_destroy(c);
      return SQLITE_NOMEM;
    }
  }
  c->next = vt->cursors;
  vt->cursors = c;
  *ppCur = &c->base;
  return SQLITE_OK;
}

static void free_points(bfx_cursor *c) {
  for (size_t i = 0; i < c->npts; i++) sqlite3_free(c->pts[i].k);
  c->npts = 0;
  c->ipt = 0;
}

/* Free a cursor that is in no list, with everything it holds. */
static void cursor_destroy(bfx_cursor *c) {
  if (c->bc) bf_cursor_close(c->bc);
  free_points(c);
  sqlite3_free(c->kown);
  sqlite3_free(c->pts);
  sqlite3_free(c->lo.k);
  sqlite3_free(c->hi.k);
  sqlite3_free(c->rowbuf);
  sqlite3_free(c->types);
  sqlite3_free(c->offs);
  sqlite3_free(c);
}

/* xClose: the cursor becomes the vtab's spare (keeping its buffers, not its
** engine cursor, bounds or points) unless there is one already. */
static int bfxClose(sqlite3_vtab_cursor *cur) {
  bfx_cursor *c = (bfx_cursor *)cur;
  bfx_vtab *vt = (bfx_vtab *)cur->pVtab;
  for (bfx_cursor **pp = &vt->cursors; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  vt->last_valid = false;
  if (c->mode == MODE_POINTS && c->val == c->rowbuf &&
      grow(&vt->last_key, &vt->last_kcap, c->key_len ? c->key_len : 1) == SQLITE_OK &&
      grow(&vt->last_row, &vt->last_rcap, c->val_len ? c->val_len : 1) == SQLITE_OK) {
    if (c->key_len) memcpy(vt->last_key, c->key, c->key_len);
    if (c->val_len) memcpy(vt->last_row, c->val, c->val_len);
    vt->last_klen = c->key_len;
    vt->last_rlen = c->val_len;
    vt->last_gen = c->read_gen;
    vt->last_valid = true;
  }
  if (vt->spare) {
    cursor_destroy(c);
    return SQLITE_OK;
  }
  if (c->bc) bf_cursor_close(c->bc);
  free_points(c);
  sqlite3_free(c->lo.k);
  sqlite3_free(c->hi.k);
  bfx_cursor keep = *c;
  memset(c, 0, sizeof *c);
  c->kown = keep.kown;
  c->kowncap = keep.kowncap;
  c->pts = keep.pts;
  c->cpts = keep.cpts;
  c->rowbuf = keep.rowbuf;
  c->rowcap = keep.rowcap;
  c->types = keep.types;
  c->offs = keep.offs;
  vt->spare = c;
  return SQLITE_OK;
}

static int key_cmp(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
  size_t n = na < nb ? na : nb;
  int r = n ? memcmp(a, b, n) : 0;
  if (r) return r;
  return na < nb ? -1 : na > nb;
}

/* Tighten a bound with (k, incl); lower: keep the larger key. */
static int tighten(bfx_key *b, bool *has, bool *incl, const uint8_t *k,
                   size_t n, bool kincl, bool lower) {
  if (*has) {
    int r = key_cmp(k, n, b->k, b->n);
    if (r == 0) {
      *incl = *incl && kincl;
      return SQLITE_OK;
    }
    if (lower ? r < 0 : r > 0) return SQLITE_OK;
  }
  uint8_t *copy = sqlite3_malloc64(n ? n : 1);
  if (!copy) return SQLITE_NOMEM;
  if (n) memcpy(copy, k, n);
  sqlite3_free(b->k);
  b->k = copy;
  b->n = n;
  *has = true;
  *incl = kincl;
  return SQLITE_OK;
}

/* The key of a constraint value, converted as SQLite converts the right-hand
** side of "key OP value".  *is_null: the value is NULL (matches nothing). */
static int constraint_key(bfx_vtab *vt, sqlite3_value *v, uint8_t **buf,
                          size_t *cap, size_t *len, bool *is_null) {
  sqlite3_value *dup = NULL;
  bfx_value bv;
  int aff = vt->schema->affinity[vt->schema->key_col];
  int rc = apply_affinity(aff, false, v, &bv, &dup);
  if (rc == SQLITE_OK) {
    *is_null = bv.type == BFX_NULL;
    if (!*is_null) rc = encode_key(&bv, buf, cap, len);
  }
  sqlite3_value_free(dup);
  return rc;
}

static int point_cmp(const void *a, const void *b) {
  const bfx_key *x = a, *y = b;
  return key_cmp(x->k, x->n, y->k, y->n);
}

static bool in_bounds(const bfx_cursor *c, const uint8_t *k, size_t n) {
  if (c->has_lo) {
    int r = key_cmp(k, n, c->lo.k, c->lo.n);
    if (r < 0 || (r == 0 && !c->lo_incl)) return false;
  }
  if (c->has_hi) {
    int r = key_cmp(k, n, c->hi.k, c->hi.n);
    if (r > 0 || (r == 0 && !c->hi_incl)) return false;
  }
  return true;
}

static int txn_ensure_keys(bfx_vtab *vt, const bfx_key *keys, size_t nkeys);

/* Whether a statement that may write is running on the connection.  A
** read-only statement (a SELECT) inside a write transaction that has not
** yet taken the lock reads what a reader would: the transaction has no
** writes yet, and a statement that changes nothing cannot lose an update. */
static bool writing_statement_running(sqlite3 *db) {
  for (sqlite3_stmt *s = sqlite3_next_stmt(db, NULL); s;
       s = sqlite3_next_stmt(db, s))
    if (sqlite3_stmt_busy(s) && !sqlite3_stmt_readonly(s)) return true;
  return false;
}

/* LAZY LOCK: a statement of a write transaction takes the table's writer
** lock before its first read, prefetching its point keys keys[0..nkeys)
** first.  A read-only statement does not: a SELECT inside a transaction
** whose write found the lock busy is not blocked by the other writer. */
static int filter_lock(bfx_vtab *vt, const bfx_key *keys, size_t nkeys) {
  if (!vt->tsh || vt->holds_lock) return SQLITE_OK; /* no write txn, or locked */
  if (!writing_statement_running(vt->db)) return SQLITE_OK;
  return txn_ensure_keys(vt, keys, nkeys);
}

/* Position on the current point (skipping absent keys) or EOF. */
static int points_settle(bfx_cursor *c, bf_tree *tree) {
  bfx_vtab *vt = (bfx_vtab *)c->base.pVtab;
  while (c->ipt < c->npts) {
    size_t idx = c->desc ? c->npts - 1 - c->ipt : c->ipt;
    bfx_key *p = &c->pts[idx];
    size_t vlen = 0;
    int st = get_row(tree, vt->txn, p->k, p->n, &c->rowbuf, &c->rowcap, &vlen);
    if (st == BF_OK) {
      c->key = p->k;
      c->key_len = p->n;
      c->val = c->rowbuf;
      c->val_len = vlen;
      c->parsed = false;
      c->read_gen = vt->write_gen;
      return SQLITE_OK;
    }
    if (st != BF_NOTFOUND) return vt_engine_error(vt, st, "lookup");
    c->ipt++;
  }
  c->mode = MODE_EOF;
  return SQLITE_OK;
}

static void range_settle(bfx_cursor *c) {
  if (!bf_cursor_valid(c->bc)) {
    c->mode = MODE_EOF;
    return;
  }
  const void *k, *v;
  bf_cursor_key(c->bc, &k, &c->key_len);
  bf_cursor_value(c->bc, &v, &c->val_len);
  c->key = k;
  c->val = v;
  c->parsed = false;
}

/* Open c->bc on tree, overlaying the vtab's transaction when it has one
** (invariant 4 records which). */
static int cursor_engine_open(bfx_cursor *c, bf_tree *tree) {
  bfx_vtab *vt = (bfx_vtab *)c->base.pVtab;
  int st = vt->txn ? bf_cursor_open_txn(tree, vt->txn, &c->bc)
                   : bf_cursor_open(tree, &c->bc);
  if (st != BF_OK) {
    c->bc = NULL;
    return vt_engine_error(vt, st, "opening a cursor");
  }
  c->bc_txn = vt->txn;
  c->bc_stale = false;
  return SQLITE_OK;
}

/*
** Invariant 4: before vt's transaction ends (or is replaced), every range
** cursor overlaying it copies its current row and drops its engine cursor;
** the next xNext resumes past the copied key on a new engine cursor.  On
** OOM the cursor keeps the engine cursor for its current row only
** (bc_stale) and fails its next xNext.
*/
static void cursors_detach(bfx_vtab *vt) {
  for (bfx_cursor *c = vt->cursors; c; c = c->next) {
    if (!c->bc || !c->bc_txn || c->bc_stale) continue;
    if (c->mode == MODE_RANGE && !c->detached) {
      if (grow(&c->kown, &c->kowncap, c->key_len + 1) != SQLITE_OK ||
          grow(&c->rowbuf, &c->rowcap, c->val_len + 1) != SQLITE_OK) {
        c->bc_stale = true;
        c->err = SQLITE_NOMEM;
        continue;
      }
      if (c->key_len) memcpy(c->kown, c->key, c->key_len);
      if (c->val_len) memcpy(c->rowbuf, c->val, c->val_len);
      c->key = c->kown;
      c->val = c->rowbuf;
      c->detached = true;
    }
    bf_cursor_close(c->bc);
    c->bc = NULL;
    c->bc_txn = NULL;
  }
}

/* A detached range cursor: continue after the copied current row. */
static int range_resume(bfx_cursor *c, bf_tree *tree) {
  bfx_vtab *vt = (bfx_vtab *)c->base.pVtab;
  int rc = cursor_engine_open(c, tree);
  if (rc != SQLITE_OK) return rc;
  c->detached = false;
  bf_bound past = {c->key, c->key_len, false};
  bf_bound lo = {c->lo.k, c->lo.n, c->lo_incl};
  bf_bound hi = {c->hi.k, c->hi.n, c->hi_incl};
  const bf_bound *plo = c->desc ? (c->has_lo ? &lo : NULL) : &past;
  const bf_bound *phi = c->desc ? &past : (c->has_hi ? &hi : NULL);
  bf_cursor_hint(c->bc, c->left > 0 ? (uint64_t)c->left : 0);
  int st = bf_cursor_seek(c->bc, plo, phi, c->desc); /* copies the bounds */
  if (st != BF_OK && st != BF_DONE) return vt_engine_error(vt, st, "seek");
  range_settle(c);
  return SQLITE_OK;
}

/* Advance one row without counting LIMIT. */
static int advance(bfx_cursor *c, bf_tree *tree) {
  bfx_vtab *vt = (bfx_vtab *)c->base.pVtab;
  if (c->err != SQLITE_OK) return c->err;
  /* A cursor filtered before this table's write transaction began reads
  ** through the transaction now: under the lock (LAZY LOCK). */
  if (c->mode == MODE_POINTS || (c->mode == MODE_RANGE && c->detached)) {
    int rc = filter_lock(vt, NULL, 0);
    if (rc != SQLITE_OK) return rc;
  }
  if (c->mode == MODE_POINTS) {
    c->ipt++;
    return points_settle(c, tree);
  }
  if (c->mode == MODE_RANGE) {
    if (c->detached) return range_resume(c, tree);
    int st = bf_cursor_next(c->bc);
    if (st != BF_OK && st != BF_DONE) return vt_engine_error(vt, st, "scan");
    range_settle(c);
  }
  return SQLITE_OK;
}

/* Parse idxStr term by term (see PLANS in the file header). */
enum term_op {
  T_EQ, T_IN, T_IS, T_GT, T_GE, T_LT, T_LE, T_ISNULL, T_NOTNULL, T_LIMIT,
  T_OFFSET, T_BAD
};

static int next_term(const char **pp, const char *kname, bool *desc) {
  static const struct {
    const char *text;
    int op;
  } ops[] = {{"IS NOT NULL", T_NOTNULL}, {"IS NULL", T_ISNULL},
             {"IS ?", T_IS},           {"IN (...)", T_IN},
             {">= ?", T_GE},           {"> ?", T_GT},
             {"<= ?", T_LE},           {"< ?", T_LT},
             {"= ?", T_EQ}};
  const char *p = *pp;
  for (;;) {
    if (strncmp(p, " AND ", 5) == 0) p += 5;
    if (strncmp(p, " DESC", 5) == 0) {
      *desc = true;
      p += 5;
      continue;
    }
    break;
  }
  if (!*p) {
    *pp = p;
    return -1;
  }
  if (strncmp(p, " LIMIT ?", 8) == 0) {
    *pp = p + 8;
    return T_LIMIT;
  }
  if (strncmp(p, " OFFSET ?", 9) == 0) {
    *pp = p + 9;
    return T_OFFSET;
  }
  size_t kl = strlen(kname);
  if (strncmp(p, kname, kl) != 0 || p[kl] != ' ') return T_BAD;
  p += kl + 1;
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    size_t n = strlen(ops[i].text);
    if (strncmp(p, ops[i].text, n) == 0) {
      *pp = p + n;
      return ops[i].op;
    }
  }
  return T_BAD;
}

static int bfxFilter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr,
                     int argc, sqlite3_value **argv) {
  bfx_cursor *c = (bfx_cursor *)cur;
  bfx_vtab *vt = (bfx_vtab *)cur->pVtab;
  const char *kname = vt->schema->names[vt->schema->key_col];
  bf_tree *tree;
  uint8_t *kb = NULL;
  size_t kcap = 0, klen = 0;
  bool empty = false, have_points = false;
  int64_t offset = 0;
  int rc = vt_tree(vt, &tree);
  (void)idxNum;
  if (rc != SQLITE_OK) return rc;

  c->mode = MODE_EOF;
  c->desc = false;
  c->detached = false;
  c->err = SQLITE_OK;
  c->has_lo = c->has_hi = false;
  c->left = -1;
  free_points(c);

  const char *p = idxStr ? idxStr : "full scan";
  if (strncmp(p, "full scan", 9) == 0) p += 9; /* only ever at the start */
  int a = 0, op;
  while ((op = next_term(&p, kname, &c->desc)) >= 0) {
    if (op == T_BAD || a >= argc) {
      vt_error(vt, "bftree: bad plan \"%s\"", idxStr ? idxStr : "");
      rc = SQLITE_ERROR;
      goto done;
    }
    sqlite3_value *v = argv[a++];
    bool is_null = false;
    switch (op) {
      case T_LIMIT: {
        sqlite3_int64 n = sqlite3_value_int64(v);
        if (sqlite3_value_type(v) == SQLITE_INTEGER && n >= 0) c->left = n;
        break;
      }
      case T_OFFSET: {
        sqlite3_int64 n = sqlite3_value_int64(v);
        if (sqlite3_value_type(v) == SQLITE_INTEGER && n > 0) offset = n;
        break;
      }
      case T_ISNULL:
        empty = true;
        break;
      case T_NOTNULL:
        break;
      case T_IN: {
        /* Collect the list; intersect with an earlier list if any. */
        bfx_key *list = NULL;
        size_t n = 0, cap = 0;
        sqlite3_value *x;
        int irc;
        for (irc = sqlite3_vtab_in_first(v, &x); irc == SQLITE_OK && x;
             irc = sqlite3_vtab_in_next(v, &x)) {
          rc = constraint_key(vt, x, &kb, &kcap, &klen, &is_null);
          if (rc != SQLITE_OK) break;
          if (is_null) continue;
          if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            bfx_key *nl = sqlite3_realloc64(list, nc * sizeof *nl);
            if (!nl) {
              rc = SQLITE_NOMEM;
              break;
            }
            list = nl;
            cap = nc;
          }
          list[n].k = sqlite3_malloc64(klen ? klen : 1);
          if (!list[n].k) {
            rc = SQLITE_NOMEM;
            break;
          }
          memcpy(list[n].k, kb, klen);
          list[n++].n = klen;
        }
        if (rc == SQLITE_OK && irc != SQLITE_OK && irc != SQLITE_DONE) rc = irc;
        if (rc == SQLITE_OK && n) qsort(list, n, sizeof *list, point_cmp);
        /* dedupe, and intersect with the earlier list */
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
          bool keep = m == 0 || key_cmp(list[i].k, list[i].n, list[m - 1].k,
                                        list[m - 1].n) != 0;
          if (keep && have_points)
            keep = bsearch(&list[i], c->pts, c->npts, sizeof *c->pts,
                           point_cmp) != NULL;
          if (keep)
            list[m++] = list[i];
          else
            sqlite3_free(list[i].k);
        }
        if (rc != SQLITE_OK) {
          for (size_t i = 0; i < m; i++) sqlite3_free(list[i].k);
          sqlite3_free(list);
          goto done;
        }
        free_points(c);
        sqlite3_free(c->pts);
        c->pts = list;
        c->npts = m;
        c->cpts = cap;
        have_points = true;
        break;
      }
      default:
        rc = constraint_key(vt, v, &kb, &kcap, &klen, &is_null);
        if (rc != SQLITE_OK) goto done;
        if (is_null) {
          empty = true; /* NULL compares as unknown; IS NULL: no NULL keys */
          break;
        }
        if (op == T_EQ || op == T_IS || op == T_GT || op == T_GE)
          rc = tighten(&c->lo, &c->has_lo, &c->lo_incl, kb, klen,
                       op != T_GT, true);
        if (rc == SQLITE_OK && (op == T_EQ || op == T_IS || op == T_LT || op == T_LE))
          rc = tighten(&c->hi, &c->has_hi, &c->hi_incl, kb, klen,
                       op != T_LT, false);
        if (rc != SQLITE_OK) goto done;
        break;
    }
  }
  if (empty || c->left == 0) goto done;

  if (have_points) {
    /* keep the points inside the bounds */
    size_t m = 0;
    for (size_t i = 0; i < c->npts; i++) {
      if (in_bounds(c, c->pts[i].k, c->pts[i].n))
        c->pts[m++] = c->pts[i];
      else
        sqlite3_free(c->pts[i].k);
    }
    c->npts = m;
    c->ipt = 0;
    c->mode = MODE_POINTS;
    rc = filter_lock(vt, c->pts, c->npts);
    if (rc == SQLITE_OK) rc = points_settle(c, tree);
  } else if (c->has_lo && c->has_hi && c->lo_incl && c->hi_incl &&
             key_cmp(c->lo.k, c->lo.n, c->hi.k, c->hi.n) == 0) {
    /* key equality: one lookup */
    if (c->cpts == 0) {
      c->pts = sqlite3_malloc64(sizeof *c->pts);
      if (!c->pts) {
        rc = SQLITE_NOMEM;
        goto done;
      }
      c->cpts = 1;
    }
    c->pts[0].k = sqlite3_malloc64(c->lo.n ? c->lo.n : 1);
    if (!c->pts[0].k) {
      rc = SQLITE_NOMEM;
      goto done;
    }
    memcpy(c->pts[0].k, c->lo.k, c->lo.n);
    c->pts[0].n = c->lo.n;
    c->npts = 1;
    c->mode = MODE_POINTS;
    rc = filter_lock(vt, c->pts, 1);
    if (rc == SQLITE_OK) rc = points_settle(c, tree);
  } else {
    rc = filter_lock(vt, NULL, 0);
    if (rc != SQLITE_OK) goto done;
    /* Reuse the engine cursor only if it overlays the current transaction
    ** (or none, as now). */
    if (c->bc && (c->bc_stale || c->bc_txn != vt->txn)) {
      bf_cursor_close(c->bc);
      c->bc = NULL;
    }
    if (!c->bc) {
      rc = cursor_engine_open(c, tree);
      if (rc != SQLITE_OK) goto done;
    }
    bf_bound lo = {c->lo.k, c->lo.n, c->lo_incl};
    bf_bound hi = {c->hi.k, c->hi.n, c->hi_incl};
    /* LIMIT (and OFFSET) say how many rows the scan will read. */
    bf_cursor_hint(c->bc, c->left > 0 ? (uint64_t)(c->left + offset) : 0);
    int st = bf_cursor_seek(c->bc, c->has_lo ? &lo : NULL,
                            c->has_hi ? &hi : NULL, c->desc);
    if (st != BF_OK && st != BF_DONE) {
      rc = vt_engine_error(vt, st, "seek");
      goto done;
    }
    c->mode = MODE_RANGE;
    range_settle(c);
  }
  while (rc == SQLITE_OK && offset > 0 && c->mode != MODE_EOF) {
    rc = advance(c, tree);
    offset--;
  }
done:
  sqlite3_free(kb);
  if (rc != SQLITE_OK) c->mode = MODE_EOF;
  return rc;
}

static int bfxNext(sqlite3_vtab_cursor *cur) {
  bfx_cursor *c = (bfx_cursor *)cur;
  bfx_vtab *vt = (bfx_vtab *)cur->pVtab;
  if (c->left > 0 && --c->left == 0) {
    c->mode = MODE_EOF;
    return SQLITE_OK;
  }
  return advance(c, vt->entry->shared->tree);
}

static int bfxEof(sqlite3_vtab_cursor *cur) {
  return ((bfx_cursor *)cur)->mode == MODE_EOF;
}

static void result_value(sqlite3_context *ctx, const bfx_value *v) {
  switch (v->type) {
    case BFX_INTEGER:
      sqlite3_result_int64(ctx, v->i);
      break;
    case BFX_FLOAT:
      sqlite3_result_double(ctx, v->r);
      break;
    case BFX_TEXT:
      sqlite3_result_text(ctx, v->n ? (const char *)v->z : "", (int)v->n,
                          SQLITE_TRANSIENT);
      break;
    case BFX_BLOB:
      sqlite3_result_blob(ctx, v->n ? (const void *)v->z : "", (int)v->n,
                          SQLITE_TRANSIENT);
      break;
    default:
      sqlite3_result_null(ctx);
      break;
  }
}

static int bfxColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) {
  bfx_cursor *c = (bfx_cursor *)cur;
  bfx_vtab *vt = (bfx_vtab *)cur->pVtab;
  if (c->mode == MODE_EOF) return SQLITE_OK;
  /* An UPDATE that does not change column i: leave it unset, xUpdate takes
  ** the stored value (sqlite3_value_nochange).  Never for the key. */
  if (i != vt->schema->key_col && sqlite3_vtab_nochange(ctx)) return SQLITE_OK;
  if (!c->parsed) {
    c->rec.types = c->types;
    c->rec.offsets = c->offs;
    if (bfx_record_parse(c->val, c->val_len, vt->schema->ncol, &c->rec) != BFX_OK) {
      vt_error(vt, "bftree: table %s: malformed row record", vt_name(vt));
      return SQLITE_CORRUPT_VTAB;
    }
    c->parsed = true;
  }
  bfx_value v;
  if (bfx_record_column(&c->rec, i, c->key, c->key_len, &v) != BFX_OK) {
    vt_error(vt, "bftree: table %s: malformed value in column %s", vt_name(vt),
             vt->schema->names[i]);
    return SQLITE_CORRUPT_VTAB;
  }
  result_value(ctx, &v);
  return SQLITE_OK;
}

static int bfxRowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *pRowid) {
  (void)pRowid;
  vt_error((bfx_vtab *)cur->pVtab, "bftree tables have no rowid");
  return SQLITE_ERROR;
}

/* ------------------------------------------------------------ xUpdate */

/* True when some open cursor of vt is positioned on key k (the UPDATE is a
** one-pass update of the row under the cursor). */
static bool cursor_on(bfx_vtab *vt, const uint8_t *k, size_t n) {
  for (bfx_cursor *c = vt->cursors; c; c = c->next)
    if (c->mode != MODE_EOF && key_cmp(c->key, c->key_len, k, n) == 0) return true;
  return false;
}

static int txn_ensure(bfx_vtab *vt) { return txn_ensure_keys(vt, NULL, 0); }

static int bfxUpdate(sqlite3_vtab *tab, int argc, sqlite3_value **argv,
                     sqlite3_int64 *pRowid) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  bfx_schema *sc = vt->schema;
  int ncol = sc->ncol, kc = sc->key_col;
  int st;
  (void)pRowid;
  uint64_t gen = vt->write_gen++;
  /* The writer lock (LAZY LOCK), or a transaction that a failed ROLLBACK
  ** TO could not restart. */
  int rc = txn_ensure(vt);
  if (rc != SQLITE_OK) return rc;
  if (vt->prepared) {
    vt_error(vt, "bftree: table %s: the transaction is being committed (its "
             "COMMIT failed, e.g. with SQLITE_BUSY): COMMIT again or ROLLBACK",
             vt_name(vt));
    return SQLITE_ERROR;
  }
  bf_txn *txn = vt->txn;
  bf_tree *tree = vt->tsh->tree;

  /* The old key: argv[0] is the stored key value (from xColumn). */
  size_t oklen = 0, olen = 0;
  bool is_insert = sqlite3_value_type(argv[0]) == SQLITE_NULL;
  bool have_old = false;
  if (!is_insert) {
    bfx_value ov;
    from_sqlite(argv[0], &ov);
    rc = encode_key(&ov, &vt->okbuf, &vt->okcap, &oklen);
    if (rc != SQLITE_OK) return rc;
  }

  if (argc == 1) { /* DELETE: blind (a row already gone stays gone) */
    st = bf_txn_delete(txn, vt->okbuf, oklen);
    if (st != BF_OK) return vt_engine_error(vt, st, "delete");
    return SQLITE_OK;
  }

  /* The old row: the one the statement's point cursor read and handed over
  ** when it closed (a one-pass UPDATE), if nothing changed the transaction
  ** since (write_gen, bumped by every xUpdate, also one run by a function
  ** of the statement, and every transaction method); else read it. */
  const uint8_t *old = NULL;
  if (!is_insert) {
    if (vt->last_valid && vt->last_gen == gen &&
        key_cmp(vt->last_key, vt->last_klen, vt->okbuf, oklen) == 0) {
      have_old = true;
      old = vt->last_row;
      olen = vt->last_rlen;
    } else {
      st = get_row(tree, txn, vt->okbuf, oklen, &vt->obuf, &vt->ocap, &olen);
      if (st == BF_OK) {
        have_old = true;
        old = vt->obuf;
      } else if (st != BF_NOTFOUND) {
        return vt_engine_error(vt, st, "lookup");
      }
    }
  }

  /* UPDATE of a row that is gone (deleted by an earlier OR REPLACE of the
  ** same statement): nothing to update, as SQLite skips it natively. */
  if (!is_insert && !have_old) return SQLITE_OK;

  int onconf = sqlite3_vtab_on_conflict(vt->db);
  if (!is_insert && onconf == SQLITE_REPLACE && !cursor_on(vt, vt->okbuf, oklen) &&
      keyset_has(&vt->moved, vt->okbuf, oklen)) {
    vt_error(vt, "bftree: UPDATE OR REPLACE on table %s moved a row onto a key "
             "that the same statement updates afterwards; SQLite would update "
             "the moved row again, which a virtual table cannot reproduce",
             vt_name(vt));
    return SQLITE_ERROR;
  }

  /* The new row, with affinity applied; unchanged columns from the old row. */
  bfx_value stackv[16];
  sqlite3_value *stackd[16];
  bfx_value *vals = ncol <= 16 ? stackv : sqlite3_malloc64(sizeof(bfx_value) * (size_t)ncol);
  sqlite3_value **dups = ncol <= 16 ? stackd : sqlite3_malloc64(sizeof(sqlite3_value *) * (size_t)ncol);
  if (!vals || !dups) {
    if (vals != stackv) sqlite3_free(vals);
    if (dups != stackd) sqlite3_free(dups);
    return SQLITE_NOMEM;
  }
  memset(dups, 0, sizeof(sqlite3_value *) * (size_t)ncol);
  bfx_record orec = {.types = vt->types, .offsets = vt->offs};
  bool old_parsed = false;
  size_t nklen = 0, rlen = 0, xlen = 0;

  for (int i = 0; i < ncol && rc == SQLITE_OK; i++) {
    sqlite3_value *a = argv[2 + i];
    if (!is_insert && sqlite3_value_nochange(a)) {
      if (i == kc) {
        a = argv[0];
      } else {
        if (!old_parsed) {
          if (bfx_record_parse(old, olen, ncol, &orec) != BFX_OK) {
            vt_error(vt, "bftree: table %s: malformed row record", vt_name(vt));
            rc = SQLITE_CORRUPT_VTAB;
            break;
          }
          old_parsed = true;
        }
        if (bfx_record_column(&orec, i, vt->okbuf, oklen, &vals[i]) != BFX_OK) {
          vt_error(vt, "bftree: table %s: malformed row record", vt_name(vt));
          rc = SQLITE_CORRUPT_VTAB;
        }
        continue;
      }
    }
    rc = apply_affinity(sc->affinity[i], true, a, &vals[i], &dups[i]);
  }
  if (rc != SQLITE_OK) goto done;

  /* NOT NULL constraints, in column order (as SQLite checks them). */
  for (int i = 0; i < ncol; i++) {
    if (vals[i].type == BFX_NULL && (i == kc || sc->notnull[i])) {
      vt_error(vt, "NOT NULL constraint failed: %s.%s", vt_name(vt), sc->names[i]);
      rc = SQLITE_CONSTRAINT_NOTNULL;
      goto done;
    }
  }

  /* Sizes. */
  rc = encode_key(&vals[kc], &vt->kbuf, &vt->kcap, &nklen);
  if (rc != SQLITE_OK) goto done;
  size_t maxk = bf_max_key_size(tree), maxr = bf_max_record_size(tree);
  if (nklen > maxk) {
    vt_error(vt, "bftree: key too large for table %s: %llu bytes encoded, the "
             "limit is %llu bytes (page_size %u)", vt_name(vt),
             (unsigned long long)nklen, (unsigned long long)maxk,
             bf_page_size(tree));
    rc = SQLITE_TOOBIG;
    goto done;
  }
  int key_from = bfx_key_roundtrips(&vals[kc]) ? kc : -1;
  rlen = bfx_record_encode(ncol, vals, key_from, NULL, 0);
  if (nklen + rlen > maxr) {
    vt_error(vt, "bftree: row too large for table %s: %llu bytes (key and "
             "record), the limit is %llu bytes (page_size %u)", vt_name(vt),
             (unsigned long long)(nklen + rlen), (unsigned long long)maxr,
             bf_page_size(tree));
    rc = SQLITE_TOOBIG;
    goto done;
  }
  rc = grow(&vt->rbuf, &vt->rcap, rlen);
  if (rc != SQLITE_OK) goto done;
  bfx_record_encode(ncol, vals, key_from, vt->rbuf, rlen);

  /* Uniqueness of the key.  OR REPLACE overwrites whatever row has the key
  ** (a virtual table has no triggers or indexes to tell), so it does not
  ** look: the put is blind, and a key whose leaf is on disk costs no read
  ** (the engine's write buffering, e.g. REPLACE INTO t VALUES(...) as a
  ** key-value store's put). */
  bool same_key = !is_insert && key_cmp(vt->kbuf, nklen, vt->okbuf, oklen) == 0;
  if (!same_key && onconf != SQLITE_REPLACE) {
    st = get_row(tree, txn, vt->kbuf, nklen, &vt->xbuf, &vt->xcap, &xlen);
    if (st == BF_OK) {
      vt_error(vt, "UNIQUE constraint failed: %s.%s", vt_name(vt), sc->names[kc]);
      rc = SQLITE_CONSTRAINT_PRIMARYKEY;
      goto done;
    } else if (st != BF_NOTFOUND) {
      rc = vt_engine_error(vt, st, "lookup");
      goto done;
    }
  }

  /* Change the transaction (invariant 1: everything checked above). */
  if (!is_insert && !same_key) {
    uint32_t mark = bf_txn_savepoint(txn);
    if (mark == 0) {
      rc = SQLITE_NOMEM;
      goto done;
    }
    st = bf_txn_delete(txn, vt->okbuf, oklen);
    if (st == BF_OK) st = bf_txn_put(txn, vt->kbuf, nklen, vt->rbuf, rlen);
    if (st != BF_OK) bf_txn_rollback_to(txn, mark); /* never fails */
    bf_txn_release(txn, mark);
  } else {
    st = bf_txn_put(txn, vt->kbuf, nklen, vt->rbuf, rlen);
  }
  if (st != BF_OK) {
    rc = vt_engine_error(vt, st, "write");
    goto done;
  }
  if (!is_insert && !same_key && onconf == SQLITE_REPLACE)
    rc = keyset_add(&vt->moved, vt->kbuf, nklen);

done:
  for (int i = 0; i < ncol; i++) sqlite3_value_free(dups[i]);
  if (vals != stackv) sqlite3_free(vals);
  if (dups != stackd) sqlite3_free(dups);
  return rc;
}

/* -------------------------------------------------------- transactions */

/* Drop the writer lock and the transaction state (txn already ended), and
** hand back the reference to the tree taken by txn_open (NULL if none): the
** caller releases it (bfx_shared_release). */
static bfx_shared *txn_end_keep(bfx_vtab *vt) {
  bfx_shared *sh = vt->tsh;
  if (vt->holds_lock) {
    bfx_shared_writer_unlock(vt->tsh, vt);
    vt->holds_lock = false;
    vt->conn->writers--;
  }
  vt->tsh = NULL;
  vt->prepared = false;
  vt->nmarks = 0;
  keyset_clear(&vt->moved);
  return sh;
}

/* Drop the writer lock and the transaction state (txn already ended). */
static void txn_end(bfx_vtab *vt) { bfx_shared_release(txn_end_keep(vt)); }

/*
** xBegin's work: a transaction on the table's tree, without the writer lock
** (LAZY LOCK).  The tree is referenced in tsh until txn_end, so the
** transaction keeps writing the tree it began on.  Returns SQLITE_OK or an
** SQLite code with zErrMsg set; on error nothing is held.
*/
static int txn_open(bfx_vtab *vt) {
  bf_tree *tree;
  if (vt->tsh) return SQLITE_OK; /* open already */
  int rc = vt_tree(vt, &tree);
  if (rc != SQLITE_OK) return rc;
  int st = bf_txn_begin(tree, &vt->txn);
  if (st != BF_OK) {
    vt->txn = NULL;
    return vt_engine_error(vt, st, "begin");
  }
  vt->tsh = vt->entry->shared;
  bfx_shared_ref(vt->tsh);
  vt->implicit_txn = sqlite3_get_autocommit(vt->db) != 0;
  vt->prepared = false;
  vt->nmarks = 0;
  keyset_clear(&vt->moved);
  return SQLITE_OK;
}

/*
** Make sure vt holds the writer lock of its transaction's tree and has a
** transaction (after a ROLLBACK TO that could not restart it, it may not).
** Waits for the lock up to the connection's busy timeout.  First prefetches
** keys[0..nkeys) (the point keys the caller is about to read; at most
** PREFETCH_MAX of them), so that its reads under the lock find them in
** memory: a writer that waits does its disk reads while it waits; and
** likewise makes room in the buffer (bf_make_room).  Returns
** SQLITE_OK, SQLITE_BUSY (another connection writes the table), or another
** SQLite code, with zErrMsg set.  On error the transaction stays, to be
** ended by xCommit/xRollback.
*/
#define PREFETCH_MAX 64
static int txn_ensure_keys(bfx_vtab *vt, const bfx_key *keys, size_t nkeys) {
  if (!vt->tsh) { /* no xBegin: SQLite always calls it first */
    int rc = txn_open(vt);
    if (rc != SQLITE_OK) return rc;
  }
  bfx_shared *sh = vt->tsh;
  if (!vt->holds_lock) {
    int waited = 0;
    /* Best effort: an error here shows again in the locked read. */
    for (size_t i = 0; i < nkeys && i < PREFETCH_MAX; i++)
      if (bf_prefetch(sh->tree, keys[i].k, keys[i].n) != BF_OK) break;
    /* And the evictions its writes would do under the lock (merges that
    ** read and write leaf pages). */
    (void)bf_make_room(sh->tree);
    int st = bfx_shared_writer_lock(sh, vt, vt->conn, 0);
    if (st == BF_BUSY) {
      waited = busy_timeout_ms(vt->db);
      if (waited > 0) st = bfx_shared_writer_lock(sh, vt, vt->conn, waited);
    }
    if (st == BF_INVALID) {
      /* Another table of this connection over the same data file (the
      ** database attached twice, or a temp declaration over the file of a
      ** persistent table) is writing it: waiting would wait for itself. */
      const bfx_entry *o = vt->conn->entries;
      while (o && (o == vt->entry || o->shared != sh)) o = o->next;
      vt_error(vt, "bftree: table %s cannot be written: table %s.%s of this "
               "connection, over the same data file, is writing it in this "
               "transaction", vt_name(vt), o ? o->zDb : "?", o ? o->zName : "?");
      return SQLITE_ERROR;
    }
    if (st == BF_BUSY) {
      vt_error(vt, "bftree: table %s is locked: another connection is writing "
               "it (waited %d ms)", vt_name(vt), waited);
      return SQLITE_BUSY;
    }
    if (st != BF_OK) {
      vt_error(vt, "bftree: table %s refuses writes: an aborted commit could "
               "not be removed from its log; close every connection using "
               "the table to recover it", vt_name(vt));
      return bfx_sqlite_rc(st);
    }
    vt->holds_lock = true;
    vt->conn->writers++;
  }
  if (!vt->txn) {
    int st = bf_txn_begin(sh->tree, &vt->txn);
    if (st != BF_OK) {
      vt->txn = NULL;
      return vt_engine_error(vt, st, "begin");
    }
  }
  return SQLITE_OK;
}

/* Abandon any transaction and lock (disconnect, destroy). */
static void txn_discard(bfx_vtab *vt) {
  if (vt->txn) {
    cursors_detach(vt);
    bool prepared = vt->prepared;
    if (bf_txn_abort(vt->txn) != BF_OK && prepared) bfx_shared_poison(vt->tsh);
    vt->txn = NULL;
  }
  txn_end(vt);
}

static int bfxBegin(sqlite3_vtab *tab) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  vt->write_gen++; /* a held row copy is no longer current */
  /* The lock waits for the first read or write (LAZY LOCK).  On error
  ** SQLite calls neither xCommit nor xRollback: txn_open holds nothing. */
  return txn_open(vt);
}

/* Write commit id `id` into the shadow table, inside the database
** transaction being committed (see SHADOW TABLE in the file header).  A
** table without a shadow table sets no_shadow. */
static int shadow_write(bfx_vtab *vt, uint64_t id) {
  bfx_entry *e = vt->entry;
  uint8_t b[8];
  sqlite3_blob *blob = NULL;
  put_be64(b, id);
  char *name = sqlite3_mprintf("%s_" SHADOW_SUFFIX, e->zName);
  if (!name) return SQLITE_NOMEM;
  int rc = sqlite3_blob_open(vt->db, e->zDb, name, "commit_id", 1, 1, &blob);
  sqlite3_free(name);
  if (rc == SQLITE_OK) {
    rc = sqlite3_blob_write(blob, b, 8, 0);
    int rc2 = sqlite3_blob_close(blob);
    if (rc == SQLITE_OK) rc = rc2;
    if (rc == SQLITE_OK) return SQLITE_OK;
  } else {
    sqlite3_blob_close(blob);
  }
  /* No table, no row, or a value of another size. */
  int ex = shadow_exists(vt->db, e->zDb, e->zName);
  if (ex < 0) return -ex;
  if (ex == 0) {
    vt->no_shadow = true;
    return SQLITE_OK;
  }
  char lit[20];
  char *err = NULL;
  id_literal(lit, id);
  rc = exec_sql(vt->db,
                sqlite3_mprintf("INSERT OR REPLACE INTO \"%w\".\"%w_" SHADOW_SUFFIX
                                "\"(rowid, commit_id) VALUES(1, %s)", e->zDb,
                                e->zName, lit),
                "cannot write the shadow table", &err);
  if (rc != SQLITE_OK) {
    sqlite3_free(vt->base.zErrMsg);
    vt->base.zErrMsg = err;
  }
  return rc;
}

/* xSync: the first phase of the commit (see TRANSACTIONS).  Called again
** after a COMMIT that failed with SQLITE_BUSY: nothing more to do. */
static int bfxSync(sqlite3_vtab *tab) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  vt->write_gen++; /* a held row copy is no longer current */
  if (!vt->txn || vt->prepared) return SQLITE_OK;
  if (bf_txn_size(vt->txn) == 0) return SQLITE_OK; /* nothing to log */
  bfx_shared *sh = vt->tsh;
  /* The shadow row is needed only when the commit must be atomic with
  ** something else: a native table or another bftree table written in the
  ** same transaction.  A transaction that began in autocommit mode is one
  ** statement, which writes its target table alone: a bftree table is
  ** DIRECTONLY, so no trigger writes it, and it has no triggers of its own.
  ** With no other bftree table of this connection in a write transaction,
  ** the engine's own commit is then atomic, and id 0 makes recovery replay
  ** it whatever the shadow row says; skipping the row saves a database
  ** page (4 KiB in the database's log) per commit.  A table in the temp
  ** schema commits with id 0 too: its shadow row does not outlive the
  ** connection, so no recovery reads it, and an id of its own could make
  ** a persistent declaration of the same file skip the transaction. */
  uint64_t id = 0; /* no database number */
  if (!vt->entry->temporary && !vt->no_shadow &&
      strcmp(vt->entry->zDb, "temp") != 0 &&
      !(vt->implicit_txn && vt->conn->writers == 1)) {
    id = bf_last_commit_id(sh->tree);
    if (sh->commit_floor > id) id = sh->commit_floor;
    id++;
    int rc = shadow_write(vt, id);
    if (rc != SQLITE_OK) return rc;
    if (vt->no_shadow) id = 0; /* shadow_write found no shadow table */
  }
  int st = bf_txn_prepare(vt->txn, id);
  if (st != BF_OK) return vt_engine_error(vt, st, "commit");
  vt->prepared = true;
  if (id) sh->commit_floor = id; /* never handed out again */
  return SQLITE_OK;
}

/* xCommit: the database committed; apply.  SQLite ignores the result: an
** engine error here puts the tree in its error state, and recovery at the
** next open replays the logged transaction. */
static int bfxCommit(sqlite3_vtab *tab) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  vt->write_gen++; /* a held row copy is no longer current */
  int rc = SQLITE_OK;
  bool committed = false; /* writes committed (not a read-only txn) */
  if (vt->txn) {
    cursors_detach(vt);
    committed = vt->prepared || bf_txn_size(vt->txn) > 0;
    /* Not prepared with writes: xSync was not called (SQLite always calls
    ** it); commit with id 0, which recovery always replays. */
    int st = committed ? bf_txn_commit(vt->txn) : bf_txn_abort(vt->txn);
    vt->txn = NULL;
    if (st != BF_OK) rc = vt_engine_error(vt, st, "commit");
  }
  /* The checkpoint the log may call for, after a commit of writes, once
  ** the table's writer lock is released (trees are opened with
  ** auto_checkpoint off): the table's other writers then wait only for its
  ** last phase, in the engine.  It does not wait for another transaction
  ** prepared meanwhile (BF_BUSY: left due, for the next commit; that one
  ** may be waiting for this connection's locks).  An error is sticky in
  ** the tree and shows at its next write. */
  bfx_shared *sh = txn_end_keep(vt);
  if (sh) {
    if (committed && rc == SQLITE_OK) (void)bf_checkpoint_if_due(sh->tree);
    bfx_shared_release(sh);
  }
  return rc;
}

/* xRollback, also after xSync (the engine then checkpoints so that its log
** forgets the transaction; if that fails the tree is poisoned). */
static int bfxRollback(sqlite3_vtab *tab) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  vt->write_gen++; /* a held row copy is no longer current */
  int rc = SQLITE_OK;
  if (vt->txn) {
    cursors_detach(vt);
    bool prepared = vt->prepared;
    int st = bf_txn_abort(vt->txn);
    vt->txn = NULL;
    if (st != BF_OK) {
      if (prepared) bfx_shared_poison(vt->tsh);
      rc = vt_engine_error(vt, st, "rollback");
    }
  }
  txn_end(vt);
  return rc;
}

/* Savepoint numbers: 0 is the outermost savepoint that SQLite numbers;
** levels this vtab never saw (opened before it joined the transaction) get
** a mark at the current position: nothing of ours precedes them. */
static int bfxSavepoint(sqlite3_vtab *tab, int iSavepoint) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  vt->write_gen++; /* a held row copy is no longer current */
  if (iSavepoint < 0 || !vt->txn) return SQLITE_OK;
  if (iSavepoint >= vt->cmarks) {
    int nc = iSavepoint + 8;
    uint32_t *m = sqlite3_realloc64(vt->marks, sizeof(uint32_t) * (size_t)nc);
    if (!m) return SQLITE_NOMEM;
    vt->marks = m;
    vt->cmarks = nc;
  }
  if (iSavepoint < vt->nmarks) { /* a level reused: start it afresh */
    bf_txn_release(vt->txn, vt->marks[iSavepoint]);
    vt->nmarks = iSavepoint;
  }
  while (vt->nmarks <= iSavepoint) {
    uint32_t m = bf_txn_savepoint(vt->txn);
    if (m == 0) return SQLITE_NOMEM;
    vt->marks[vt->nmarks++] = m; /* invariant 3 */
  }
  keyset_clear(&vt->moved); /* a new statement may start here */
  return SQLITE_OK;
}

/* -1 (xRollbackTo/xRelease only) is the savepoint that opened the
** transaction itself (SAVEPOINT outside BEGIN): everything. */
static int bfxRelease(sqlite3_vtab *tab, int iSavepoint) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  vt->write_gen++; /* a held row copy is no longer current */
  if (iSavepoint < 0) iSavepoint = 0;
  if (vt->txn && iSavepoint < vt->nmarks) {
    bf_txn_release(vt->txn, vt->marks[iSavepoint]);
    vt->nmarks = iSavepoint;
  }
  return SQLITE_OK;
}

static int bfxRollbackTo(sqlite3_vtab *tab, int iSavepoint) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  vt->write_gen++; /* a held row copy is no longer current */
  if (!vt->txn) return SQLITE_OK;
  if (iSavepoint >= vt->nmarks) return SQLITE_OK;
  if (vt->prepared) {
    vt_error(vt, "bftree: table %s: the transaction is being committed (its "
             "COMMIT failed): COMMIT again or ROLLBACK", vt_name(vt));
    return SQLITE_ERROR;
  }
  keyset_clear(&vt->moved);
  if (iSavepoint < 0) {
    /* Back to the start: a fresh write set (the lock stays ours). */
    cursors_detach(vt);
    bf_txn_abort(vt->txn); /* not prepared: only frees */
    vt->txn = NULL;
    vt->nmarks = 0;
    int st = bf_txn_begin(vt->tsh->tree, &vt->txn);
    if (st != BF_OK) {
      vt->txn = NULL; /* xUpdate begins one; xCommit/xRollback cope */
      return vt_engine_error(vt, st, "rollback to savepoint");
    }
    return SQLITE_OK;
  }
  int st = bf_txn_rollback_to(vt->txn, vt->marks[iSavepoint]);
  vt->nmarks = iSavepoint + 1; /* the savepoint itself stays open */
  if (st != BF_OK) return vt_engine_error(vt, st, "rollback to savepoint");
  return SQLITE_OK;
}

/* Shadow tables of this module: "<table>_bftree" (xShadowName gets the part
** after the last '_'). */
static int bfxShadowName(const char *zSuffix) {
  return sqlite3_stricmp(zSuffix, SHADOW_SUFFIX) == 0;
}

/* ------------------------------------------------------------- module */

static sqlite3_module bfx_module = {
    .iVersion = 3,
    .xCreate = bfxCreate,         /* CREATE VIRTUAL TABLE: parse, open file,
                                  ** create the shadow table */
    .xConnect = bfxConnect,       /* schema load: parse; tree opened lazily */
    .xBestIndex = bfxBestIndex,   /* key constraints, ORDER BY, LIMIT */
    .xDisconnect = bfxDisconnect, /* free the vtab; the tree stays open */
    .xDestroy = bfxDestroy,       /* DROP TABLE: remove the data file and
                                  ** the shadow table */
    .xOpen = bfxOpen,             /* new cursor */
    .xClose = bfxClose,
    .xFilter = bfxFilter,         /* start a scan per the idxStr plan */
    .xNext = bfxNext,
    .xEof = bfxEof,
    .xColumn = bfxColumn,         /* decode one column lazily */
    .xRowid = bfxRowid,           /* WITHOUT ROWID: never used */
    .xUpdate = bfxUpdate,         /* INSERT/UPDATE/DELETE with conflicts,
                                  ** into the engine transaction */
    .xBegin = bfxBegin,           /* writer lock, bf_txn_begin */
    .xSync = bfxSync,             /* shadow table, bf_txn_prepare */
    .xCommit = bfxCommit,         /* bf_txn_commit */
    .xRollback = bfxRollback,     /* bf_txn_abort */
    .xFindFunction = NULL,
    .xRename = bfxRename,         /* ALTER TABLE RENAME: shadow table, and
                                  ** the default data file */
    .xSavepoint = bfxSavepoint,   /* bf_txn_savepoint per level */
    .xRelease = bfxRelease,       /* bf_txn_release */
    .xRollbackTo = bfxRollbackTo, /* bf_txn_rollback_to */
    .xShadowName = bfxShadowName, /* "<table>_bftree" */
};

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_bftree_init(sqlite3 *db, char **pzErrMsg,
                        const sqlite3_api_routines *pApi) {
  /* SQLITE_EXTENSION_INIT2, written once: every load in a process passes
  ** the same routines, and connections on other threads read sqlite3_api
  ** meanwhile (rewriting it would be a data race, if a harmless one). */
  static pthread_mutex_t api_mutex = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&api_mutex);
  if (sqlite3_api != pApi) sqlite3_api = pApi;
  pthread_mutex_unlock(&api_mutex);
  if (sqlite3_libversion_number() < 3038000) {
    *pzErrMsg = sqlite3_mprintf("bftree needs SQLite 3.38.0 or later (this is "
                                "%s)", sqlite3_libversion());
    return SQLITE_ERROR;
  }
  bfx_conn *conn = sqlite3_malloc64(sizeof *conn);
  if (!conn) return SQLITE_NOMEM;
  memset(conn, 0, sizeof *conn);
  conn->db = db;
  conn->refs = 1; /* the module's reference, dropped by conn_module_destroy */
  int rc = sqlite3_create_module_v2(db, "bftree", &bfx_module, conn,
                                    conn_module_destroy);
  if (rc != SQLITE_OK) return rc; /* create_module_v2 ran the destructor */
  rc = bfx_stat_register(db, conn);
  if (rc != SQLITE_OK && pzErrMsg)
    *pzErrMsg = sqlite3_mprintf("bftree: %s", sqlite3_errmsg(db));
  return rc;
}
