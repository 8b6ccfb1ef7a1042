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
** TRANSACTIONS.  The engine has no transactions yet (a later issue).  Each
** connection's vtab keeps an in-memory undo log of every change since xBegin
** (key + previous value or "absent"); xSavepoint marks positions, xRollbackTo
** undoes to a mark, xRollback undoes everything, xCommit forgets the log.
** SQLite calls these at statement boundaries (a statement journal for multi-
** row statements, a full rollback in autocommit mode), so a statement that
** fails with ABORT leaves no trace, and ROLLBACK / ROLLBACK TO work.  There is
** no isolation between connections: changes are visible to other connections
** at once.  Each row change is one engine write, logged by the engine's
** write-ahead log per the synchronous option; a crash keeps the changes of
** an unfinished SQL transaction (engine transactions: a later issue).
**
** Invariants:
**   1. xUpdate checks every constraint (NOT NULL, size limits, uniqueness)
**      before changing anything; a change that fails half-way (I/O error) is
**      undone from the log before returning.
**   2. While in_txn, every change to the tree made by this vtab has an undo
**      entry; undo entries are applied newest first.
**   3. marks[0..nmarks) are non-decreasing positions in the undo log.
**   4. A cursor holds no engine latch between calls (bf_cursor copies).
**
** Transaction states of a vtab:
**   IDLE -> IN_TXN [xBegin]; IN_TXN -> IDLE [xCommit: log dropped,
**   xRollback: log applied]; within IN_TXN marks come and go [xSavepoint,
**   xRelease, xRollbackTo].
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT1

#include "bfx_int.h"

#include <errno.h>
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

int bfx_entry_open(bfx_entry *e, char **pzErr) {
  char *em = NULL;
  int st;
  if (e->shared) return SQLITE_OK;
  if (e->temporary)
    st = bfx_shared_open_temp(bfx_temp_dir(), &e->opts, &e->shared, &em);
  else
    st = bfx_shared_open(e->path, &e->opts, false, &e->shared, &em);
  if (st != BF_OK) {
    *pzErr = open_error_message(st, e->path ? e->path : bfx_temp_dir(), em);
    free(em);
    return bfx_sqlite_rc(st);
  }
  free(em);
  return SQLITE_OK;
}

/* ------------------------------------------------------------ undo log */

/* Entry layout in buf: u32 key length, u32 value length (UINT32_MAX: the key
** was absent), key bytes, value bytes. */
typedef struct bfx_undo {
  uint8_t *buf;
  size_t len, cap;
  size_t *start;   /* start[k]: offset of entry k */
  size_t n, ncap;
} bfx_undo;

#define UNDO_ABSENT UINT32_MAX

static int undo_push(bfx_undo *u, const uint8_t *key, size_t klen,
                     const uint8_t *val, size_t vlen, bool present) {
  size_t need = 8 + klen + (present ? vlen : 0);
  if (u->len + need > u->cap) {
    size_t cap = u->cap ? u->cap : 4096;
    while (cap < u->len + need) cap *= 2;
    uint8_t *b = sqlite3_realloc64(u->buf, cap);
    if (!b) return SQLITE_NOMEM;
    u->buf = b;
    u->cap = cap;
  }
  if (u->n == u->ncap) {
    size_t nc = u->ncap ? u->ncap * 2 : 256;
    size_t *s = sqlite3_realloc64(u->start, nc * sizeof *s);
    if (!s) return SQLITE_NOMEM;
    u->start = s;
    u->ncap = nc;
  }
  uint8_t *p = u->buf + u->len;
  uint32_t k32 = (uint32_t)klen, v32 = present ? (uint32_t)vlen : UNDO_ABSENT;
  memcpy(p, &k32, 4);
  memcpy(p + 4, &v32, 4);
  if (klen) memcpy(p + 8, key, klen);
  if (present && vlen) memcpy(p + 8 + klen, val, vlen);
  u->start[u->n++] = u->len;
  u->len += need;
  return SQLITE_OK;
}

static void undo_clear(bfx_undo *u) {
  u->len = 0;
  u->n = 0;
  if (u->cap > (1u << 20)) { /* do not keep a big log's memory around */
    sqlite3_free(u->buf);
    sqlite3_free(u->start);
    memset(u, 0, sizeof *u);
  }
}

static void undo_free(bfx_undo *u) {
  sqlite3_free(u->buf);
  sqlite3_free(u->start);
  memset(u, 0, sizeof *u);
}

/* Apply entries [to, n) newest first (invariant 2) and drop them.  Returns
** the first engine status that failed (the rest is still attempted). */
static int undo_apply(bfx_undo *u, bf_tree *tree, size_t to) {
  int first = BF_OK;
  while (u->n > to) {
    size_t off = u->start[--u->n];
    uint8_t *p = u->buf + off;
    uint32_t klen, vlen;
    memcpy(&klen, p, 4);
    memcpy(&vlen, p + 4, 4);
    int st = vlen == UNDO_ABSENT ? bf_delete(tree, p + 8, klen)
                                 : bf_put(tree, p + 8, klen, p + 8 + klen, vlen);
    if (st != BF_OK && first == BF_OK) first = st;
    u->len = off;
  }
  return first;
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
  bfx_cursor *cursors; /* open cursors (for the one-pass test of xUpdate) */
  /* Transaction state (see the file header). */
  bool in_txn;
  bfx_undo undo;
  size_t *marks;
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
    int rc = bfx_entry_open(vt->entry, &err);
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

/* bf_get into a growable buffer.  BF_OK / BF_NOTFOUND / error. */
static int get_row(bf_tree *tree, const uint8_t *key, size_t klen,
                   uint8_t **buf, size_t *cap, size_t *len) {
  for (;;) {
    size_t vlen = 0;
    int st = bf_get(tree, key, klen, *buf, *cap, &vlen);
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
    /* Two tables of one connection never share a data file. */
    for (bfx_entry *o = conn->entries; create && o; o = o->next) {
      if (o != e && o->shared == e->shared) {
        *pzErr = sqlite3_mprintf("bftree: data file %s is already used by "
                                 "table %s.%s", e->path ? e->path : "?",
                                 o->zDb, o->zName);
        bfx_shared_release(e->shared);
        e->shared = NULL;
        rc = SQLITE_ERROR;
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

static void vt_free(bfx_vtab *vt) {
  undo_free(&vt->undo);
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

/* xDestroy (DROP TABLE): remove the data file; the tree is closed when the
** last connection of the process lets it go. */
static int bfxDestroy(sqlite3_vtab *tab) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  bfx_entry *e = vt->entry;
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
    int st = bfx_files_remove(e->path, &em);
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

/* xRename: a data file at the default place ("<db>-<table>.bftree") is
** renamed along with the table; a file given with file= keeps its name. */
static int bfxRename(sqlite3_vtab *tab, const char *zNew) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  bfx_entry *e = vt->entry;
  char *name = sqlite3_mprintf("%s", zNew);
  if (!name) return SQLITE_NOMEM;
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
        st = bfx_files_rename(e->path, np, &em);
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
  bool parsed;
  bfx_record rec;
  uint64_t *types;
  size_t *offs;
};

static int bfxOpen(sqlite3_vtab *tab, sqlite3_vtab_cursor **ppCur) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  bf_tree *tree;
  int rc = vt_tree(vt, &tree);
  if (rc != SQLITE_OK) return rc;
  bfx_cursor *c = sqlite3_malloc64(sizeof *c);
  if (!c) return SQLITE_NOMEM;
  memset(c, 0, sizeof *c);
  int ncol = vt->schema->ncol;
  c->types = sqlite3_malloc64(sizeof(uint64_t) * (size_t)ncol);
  c->offs = sqlite3_malloc64(sizeof(size_t) * (size_t)ncol);
  if (!c->types || !c->offs) {
    sqlite3_free(c->types);
    sqlite3_free(c->offs);
    sqlite3_free(c);
    return SQLITE_NOMEM;
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

static int bfxClose(sqlite3_vtab_cursor *cur) {
  bfx_cursor *c = (bfx_cursor *)cur;
  bfx_vtab *vt = (bfx_vtab *)cur->pVtab;
  for (bfx_cursor **pp = &vt->cursors; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  if (c->bc) bf_cursor_close(c->bc);
  free_points(c);
  sqlite3_free(c->pts);
  sqlite3_free(c->lo.k);
  sqlite3_free(c->hi.k);
  sqlite3_free(c->rowbuf);
  sqlite3_free(c->types);
  sqlite3_free(c->offs);
  sqlite3_free(c);
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

/* Position on the current point (skipping absent keys) or EOF. */
static int points_settle(bfx_cursor *c, bf_tree *tree) {
  bfx_vtab *vt = (bfx_vtab *)c->base.pVtab;
  while (c->ipt < c->npts) {
    size_t idx = c->desc ? c->npts - 1 - c->ipt : c->ipt;
    bfx_key *p = &c->pts[idx];
    size_t vlen = 0;
    int st = get_row(tree, p->k, p->n, &c->rowbuf, &c->rowcap, &vlen);
    if (st == BF_OK) {
      c->key = p->k;
      c->key_len = p->n;
      c->val = c->rowbuf;
      c->val_len = vlen;
      c->parsed = false;
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

/* Advance one row without counting LIMIT. */
static int advance(bfx_cursor *c, bf_tree *tree) {
  bfx_vtab *vt = (bfx_vtab *)c->base.pVtab;
  if (c->mode == MODE_POINTS) {
    c->ipt++;
    return points_settle(c, tree);
  }
  if (c->mode == MODE_RANGE) {
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
    rc = points_settle(c, tree);
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
    rc = points_settle(c, tree);
  } else {
    if (!c->bc) {
      int st = bf_cursor_open(tree, &c->bc);
      if (st != BF_OK) {
        rc = vt_engine_error(vt, st, "opening a cursor");
        goto done;
      }
    }
    bf_bound lo = {c->lo.k, c->lo.n, c->lo_incl};
    bf_bound hi = {c->hi.k, c->hi.n, c->hi_incl};
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

static int log_change(bfx_vtab *vt, const uint8_t *k, size_t kn,
                      const uint8_t *old, size_t on, bool present) {
  if (!vt->in_txn) return SQLITE_OK;
  return undo_push(&vt->undo, k, kn, old, on, present);
}

static int bfxUpdate(sqlite3_vtab *tab, int argc, sqlite3_value **argv,
                     sqlite3_int64 *pRowid) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  bfx_schema *sc = vt->schema;
  int ncol = sc->ncol, kc = sc->key_col;
  bf_tree *tree;
  int rc = vt_tree(vt, &tree);
  int st;
  size_t mark = vt->undo.n;
  (void)pRowid;
  if (rc != SQLITE_OK) return rc;

  /* The old key: argv[0] is the stored key value (from xColumn). */
  size_t oklen = 0, olen = 0;
  bool is_insert = sqlite3_value_type(argv[0]) == SQLITE_NULL;
  bool have_old = false;
  if (!is_insert) {
    bfx_value ov;
    from_sqlite(argv[0], &ov);
    rc = encode_key(&ov, &vt->okbuf, &vt->okcap, &oklen);
    if (rc != SQLITE_OK) return rc;
    st = get_row(tree, vt->okbuf, oklen, &vt->obuf, &vt->ocap, &olen);
    if (st == BF_OK)
      have_old = true;
    else if (st != BF_NOTFOUND)
      return vt_engine_error(vt, st, "lookup");
  }

  if (argc == 1) { /* DELETE */
    if (!have_old) return SQLITE_OK;
    rc = log_change(vt, vt->okbuf, oklen, vt->obuf, olen, true);
    if (rc != SQLITE_OK) return rc;
    st = bf_delete(tree, vt->okbuf, oklen);
    if (st != BF_OK) {
      undo_apply(&vt->undo, tree, mark);
      return vt_engine_error(vt, st, "delete");
    }
    return SQLITE_OK;
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
  bool exists = false;

  for (int i = 0; i < ncol && rc == SQLITE_OK; i++) {
    sqlite3_value *a = argv[2 + i];
    if (!is_insert && sqlite3_value_nochange(a)) {
      if (i == kc) {
        a = argv[0];
      } else {
        if (!old_parsed) {
          if (bfx_record_parse(vt->obuf, olen, ncol, &orec) != BFX_OK) {
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

  /* Uniqueness of the key. */
  bool same_key = !is_insert && key_cmp(vt->kbuf, nklen, vt->okbuf, oklen) == 0;
  if (!same_key) {
    st = get_row(tree, vt->kbuf, nklen, &vt->xbuf, &vt->xcap, &xlen);
    if (st == BF_OK) {
      exists = true;
      if (onconf != SQLITE_REPLACE) {
        vt_error(vt, "UNIQUE constraint failed: %s.%s", vt_name(vt), sc->names[kc]);
        rc = SQLITE_CONSTRAINT_PRIMARYKEY;
        goto done;
      }
    } else if (st != BF_NOTFOUND) {
      rc = vt_engine_error(vt, st, "lookup");
      goto done;
    }
  }

  /* Change the tree (invariant 1: everything checked above). */
  if (!is_insert && !same_key) {
    rc = log_change(vt, vt->okbuf, oklen, vt->obuf, olen, true);
    if (rc != SQLITE_OK) goto done;
    st = bf_delete(tree, vt->okbuf, oklen);
    if (st != BF_OK) {
      rc = vt_engine_error(vt, st, "delete");
      goto undo;
    }
  }
  if (same_key)
    rc = log_change(vt, vt->kbuf, nklen, vt->obuf, olen, true);
  else
    rc = log_change(vt, vt->kbuf, nklen, vt->xbuf, xlen, exists);
  if (rc != SQLITE_OK) goto undo;
  st = bf_put(tree, vt->kbuf, nklen, vt->rbuf, rlen);
  if (st != BF_OK) {
    rc = vt_engine_error(vt, st, "write");
    goto undo;
  }
  if (!is_insert && !same_key && onconf == SQLITE_REPLACE)
    rc = keyset_add(&vt->moved, vt->kbuf, nklen);
  goto done;

undo:
  if (vt->in_txn) undo_apply(&vt->undo, tree, mark);
done:
  for (int i = 0; i < ncol; i++) sqlite3_value_free(dups[i]);
  if (vals != stackv) sqlite3_free(vals);
  if (dups != stackd) sqlite3_free(dups);
  return rc;
}

/* -------------------------------------------------------- transactions */

static int bfxBegin(sqlite3_vtab *tab) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  undo_clear(&vt->undo);
  keyset_clear(&vt->moved);
  vt->nmarks = 0;
  vt->in_txn = true;
  return SQLITE_OK;
}

static int bfxSync(sqlite3_vtab *tab) {
  (void)tab; /* durability comes with the write-ahead log (later issue) */
  return SQLITE_OK;
}

static int bfxCommit(sqlite3_vtab *tab) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  undo_clear(&vt->undo);
  keyset_clear(&vt->moved);
  vt->nmarks = 0;
  vt->in_txn = false;
  return SQLITE_OK;
}

static int bfxRollback(sqlite3_vtab *tab) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  int rc = SQLITE_OK;
  if (vt->undo.n && vt->entry->shared) {
    int st = undo_apply(&vt->undo, vt->entry->shared->tree, 0);
    if (st != BF_OK) rc = vt_engine_error(vt, st, "rollback");
  }
  undo_clear(&vt->undo);
  keyset_clear(&vt->moved);
  vt->nmarks = 0;
  vt->in_txn = false;
  return rc;
}

static int bfxSavepoint(sqlite3_vtab *tab, int iSavepoint) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  if (iSavepoint < 0) return SQLITE_OK;
  if (iSavepoint >= vt->cmarks) {
    int nc = iSavepoint + 8;
    size_t *m = sqlite3_realloc64(vt->marks, sizeof(size_t) * (size_t)nc);
    if (!m) return SQLITE_NOMEM;
    vt->marks = m;
    vt->cmarks = nc;
  }
  /* Levels below that we never saw were opened before this vtab joined the
  ** transaction: nothing of ours precedes them but what is logged now. */
  for (int i = vt->nmarks; i <= iSavepoint; i++) vt->marks[i] = vt->undo.n;
  vt->nmarks = iSavepoint + 1;
  keyset_clear(&vt->moved); /* a new statement may start here */
  return SQLITE_OK;
}

/* Savepoint numbers: 0 is the outermost savepoint that SQLite numbers; -1
** (RollbackTo/Release only) is the savepoint that opened the transaction
** itself (SAVEPOINT outside BEGIN): its position is the start of the log. */
static int bfxRelease(sqlite3_vtab *tab, int iSavepoint) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  if (iSavepoint < 0)
    vt->nmarks = 0;
  else if (iSavepoint < vt->nmarks)
    vt->nmarks = iSavepoint;
  return SQLITE_OK;
}

static int bfxRollbackTo(sqlite3_vtab *tab, int iSavepoint) {
  bfx_vtab *vt = (bfx_vtab *)tab;
  int rc = SQLITE_OK;
  if (iSavepoint >= vt->nmarks) return SQLITE_OK;
  size_t to = iSavepoint < 0 ? 0 : vt->marks[iSavepoint];
  if (vt->undo.n > to && vt->entry->shared) {
    int st = undo_apply(&vt->undo, vt->entry->shared->tree, to);
    if (st != BF_OK) rc = vt_engine_error(vt, st, "rollback to savepoint");
  }
  vt->nmarks = iSavepoint + 1; /* the savepoint itself stays open */
  if (vt->nmarks < 0) vt->nmarks = 0;
  keyset_clear(&vt->moved);
  return rc;
}

/* ------------------------------------------------------------- module */

static sqlite3_module bfx_module = {
    .iVersion = 2,
    .xCreate = bfxCreate,         /* CREATE VIRTUAL TABLE: parse, open file */
    .xConnect = bfxConnect,       /* schema load: parse; tree opened lazily */
    .xBestIndex = bfxBestIndex,   /* key constraints, ORDER BY, LIMIT */
    .xDisconnect = bfxDisconnect, /* free the vtab; the tree stays open */
    .xDestroy = bfxDestroy,       /* DROP TABLE: remove the data file */
    .xOpen = bfxOpen,             /* new cursor */
    .xClose = bfxClose,
    .xFilter = bfxFilter,         /* start a scan per the idxStr plan */
    .xNext = bfxNext,
    .xEof = bfxEof,
    .xColumn = bfxColumn,         /* decode one column lazily */
    .xRowid = bfxRowid,           /* WITHOUT ROWID: never used */
    .xUpdate = bfxUpdate,         /* INSERT/UPDATE/DELETE with conflicts */
    .xBegin = bfxBegin,           /* start the undo log */
    .xSync = bfxSync,
    .xCommit = bfxCommit,         /* drop the undo log */
    .xRollback = bfxRollback,     /* apply the undo log */
    .xFindFunction = NULL,
    .xRename = bfxRename,         /* ALTER TABLE RENAME (renames default file) */
    .xSavepoint = bfxSavepoint,   /* mark the undo log */
    .xRelease = bfxRelease,
    .xRollbackTo = bfxRollbackTo, /* apply the undo log down to a mark */
};

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_bftree_init(sqlite3 *db, char **pzErrMsg,
                        const sqlite3_api_routines *pApi) {
  SQLITE_EXTENSION_INIT2(pApi);
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
