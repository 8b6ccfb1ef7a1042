/*
** adapter_lmdb.c: LMDB through its C API (lmdb.h), Debian's liblmdb
** (0.9.24).
**
** One environment in <dir> (data.mdb, lock.mdb), the unnamed database.
** insert and update: a write transaction with one mdb_put, committed; read:
** one read-only transaction handle kept and reused (mdb_txn_renew /
** mdb_txn_reset around each mdb_get, as lmdb.h recommends); scan: the same
** read transaction and a cursor, MDB_SET_RANGE then MDB_NEXT up to 100 rows.
**
** MEMORY.  LMDB has no cache of its own: its data file is memory-mapped and
** the kernel page cache is its cache, so the memory cgroup is its only cap.
** MDB_NORDAHEAD (lmdb.h: for random reads on data larger than RAM); MDB_NOTLS
** (read transactions are per client handle, not per thread).  Map
** size 64 GiB (address space only; the file grows as needed).
**
** DURABILITY.  MDB_NOSYNC: a commit writes its pages (copy-on-write, no
** log: the new root is the commit) but does not fsync them; the OS writes
** them back.  This is "no fsync per operation"; LMDB has no log to keep on.
*/
#include "ycsb.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lm {
  MDB_env *env;
  MDB_dbi dbi;
  MDB_txn *rtxn;    /* reset between operations */
  MDB_cursor *cur;  /* bound to rtxn */
  MDB_txn *wtxn;    /* a load batch in progress, else NULL */
  bool attached;    /* another client's handle: the env is not its own */
  size_t key_size, value_size;
} lm;

#define LMDB_MAP_SIZE (64ull << 30)

static int lm_fail(const char *what, int rc) {
  fprintf(stderr, "ycsb: lmdb: %s: %s\n", what, mdb_strerror(rc));
  return YCSB_ERR;
}

static void lm_describe(const ycsb_cfg *cfg, char *buf, size_t n) {
  (void)cfg;
  snprintf(buf, n,
           "%s; no cache knob (memory-mapped: the cgroup caps its page cache); "
           "MDB_NOSYNC (no fsync per commit; copy-on-write, no log) + "
           "MDB_NORDAHEAD + MDB_NOTLS; one write transaction per update",
           mdb_version(NULL, NULL, NULL));
}

static int lm_close(void *db) {
  lm *h = db;
  if (h->cur) mdb_cursor_close(h->cur);
  if (h->wtxn) mdb_txn_abort(h->wtxn);
  if (h->rtxn) mdb_txn_abort(h->rtxn);
  if (h->env && !h->attached) mdb_env_close(h->env);
  free(h);
  return YCSB_OK;
}

/* Give h (env and dbi set) its read transaction, reset, and cursor, and
** hand it out through *out; on failure h is closed. */
static int lm_reader(lm *h, void **out) {
  int rc;
  if ((rc = mdb_txn_begin(h->env, NULL, MDB_RDONLY, &h->rtxn)) != 0 ||
      (rc = mdb_cursor_open(h->rtxn, h->dbi, &h->cur)) != 0) {
    lm_close(h);
    return lm_fail("read transaction", rc);
  }
  mdb_txn_reset(h->rtxn);
  *out = h;
  return YCSB_OK;
}

static int lm_open(const ycsb_cfg *cfg, bool create, void **out) {
  lm *h = calloc(1, sizeof *h);
  MDB_txn *txn;
  int rc;
  (void)create;
  if (!h) return YCSB_ERR;
  h->key_size = cfg->key_size;
  h->value_size = cfg->value_size;
  if ((rc = mdb_env_create(&h->env)) != 0) {
    free(h);
    return lm_fail("mdb_env_create", rc);
  }
  if ((rc = mdb_env_set_mapsize(h->env, LMDB_MAP_SIZE)) != 0 ||
      (rc = mdb_env_open(h->env, cfg->dir, MDB_NOSYNC | MDB_NORDAHEAD | MDB_NOTLS,
                           0644)) != 0 ||
      (rc = mdb_txn_begin(h->env, NULL, 0, &txn)) != 0) {
    lm_close(h);
    return lm_fail("open", rc);
  }
  if ((rc = mdb_dbi_open(txn, NULL, 0, &h->dbi)) != 0 || (rc = mdb_txn_commit(txn)) != 0) {
    lm_close(h);
    return lm_fail("mdb_dbi_open", rc);
  }
  return lm_reader(h, out);
}

static int lm_put(void *db, const uint8_t *key, const uint8_t *value) {
  lm *h = db;
  MDB_txn *txn;
  MDB_val k = {h->key_size, (void *)key}, v = {h->value_size, (void *)value};
  int rc;
  if (h->wtxn) {
    rc = mdb_put(h->wtxn, h->dbi, &k, &v, 0);
    return rc ? lm_fail("mdb_put", rc) : YCSB_OK;
  }
  rc = mdb_txn_begin(h->env, NULL, 0, &txn);
  if (rc) return lm_fail("mdb_txn_begin", rc);
  if ((rc = mdb_put(txn, h->dbi, &k, &v, 0)) != 0) {
    mdb_txn_abort(txn);
    return lm_fail("mdb_put", rc);
  }
  if ((rc = mdb_txn_commit(txn)) != 0) return lm_fail("mdb_txn_commit", rc);
  return YCSB_OK;
}

static int lm_begin(void *db) {
  lm *h = db;
  int rc = mdb_txn_begin(h->env, NULL, 0, &h->wtxn);
  if (rc) h->wtxn = NULL;
  return rc ? lm_fail("mdb_txn_begin", rc) : YCSB_OK;
}

static int lm_commit(void *db) {
  lm *h = db;
  int rc = mdb_txn_commit(h->wtxn);
  h->wtxn = NULL;
  return rc ? lm_fail("mdb_txn_commit", rc) : YCSB_OK;
}

static int lm_read(void *db, const uint8_t *key, uint8_t *value, size_t *len) {
  lm *h = db;
  MDB_val k = {h->key_size, (void *)key}, v;
  int rc = mdb_txn_renew(h->rtxn);
  if (rc) return lm_fail("mdb_txn_renew", rc);
  rc = mdb_get(h->rtxn, h->dbi, &k, &v);
  if (rc == 0) {
    *len = v.mv_size;
    memcpy(value, v.mv_data, v.mv_size < h->value_size ? v.mv_size : h->value_size);
  }
  mdb_txn_reset(h->rtxn);
  if (rc == MDB_NOTFOUND) return YCSB_NOTFOUND;
  return rc ? lm_fail("mdb_get", rc) : YCSB_OK;
}

static int lm_scan(void *db, const uint8_t *key, int n, ycsb_scan_state *ss) {
  lm *h = db;
  MDB_val k = {h->key_size, (void *)key}, v;
  int rc = mdb_txn_renew(h->rtxn);
  if (rc) return lm_fail("mdb_txn_renew", rc);
  if ((rc = mdb_cursor_renew(h->rtxn, h->cur)) != 0) {
    mdb_txn_reset(h->rtxn);
    return lm_fail("mdb_cursor_renew", rc);
  }
  rc = mdb_cursor_get(h->cur, &k, &v, MDB_SET_RANGE);
  for (int i = 0; i < n && rc == 0; i++) {
    ycsb_scan_row(ss, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
    if (i + 1 < n) rc = mdb_cursor_get(h->cur, &k, &v, MDB_NEXT);
  }
  mdb_txn_reset(h->rtxn);
  if (rc && rc != MDB_NOTFOUND) return lm_fail("cursor", rc);
  return YCSB_OK;
}

/* Another client thread's handle: the same environment, its own read
** transaction and cursor (MDB_NOTLS lets one thread make several and
** another use them). */
static int lm_attach(void *db, void **out) {
  lm *h = db, *a = calloc(1, sizeof *a);
  if (!a) return YCSB_ERR;
  a->env = h->env;
  a->dbi = h->dbi;
  a->attached = true;
  a->key_size = h->key_size;
  a->value_size = h->value_size;
  return lm_reader(a, out);
}

const ycsb_adapter ycsb_lmdb = {"lmdb", lm_describe, lm_open, lm_put,
                                lm_put, lm_read,     lm_scan, lm_close,
                                lm_begin, lm_commit, lm_attach, lm_close, lm_put};
