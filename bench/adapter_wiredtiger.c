/*
** adapter_wiredtiger.c: WiredTiger through its C API (wiredtiger.h),
** Debian's libwiredtiger (3.2.1).
**
** One connection on <dir>, table:t with key_format=u,value_format=u (raw
** bytes, memcmp order), one session and one cursor kept open.  insert and
** update: cursor->insert (overwrite, the default); read: cursor->search;
** scan: cursor->search_near then cursor->next up to 100 rows.  The cursor is
** reset after every operation, so it pins nothing between them.  No explicit
** transactions: each operation is its own autocommit transaction.
**
** MEMORY.  cache_size = half the cache bytes (WiredTiger's cache holds
** clean and dirty pages: it is both its read cache and its write buffer).
** Half, because with glibc's allocator the process grows to 3-4 times
** cache_size during a load (measured: 57 MiB resident with a 16 MiB cache,
** uncapped), which at the full share is killed by the memory cap (at a
** 32 MiB cap it is killed even with 8 MiB, and with mmap=false).  Log
** files of 16 MiB, not preallocated (the default 100 MiB files are dirty
** page cache charged to the cap).
**
** DURABILITY.  log=(enabled=true), transaction_sync=(enabled=false): commits
** are logged, not fsynced (log on, no fsync per operation).
** checkpoint=(log_size=64MB): a checkpoint whenever 64 MiB of log has been
** written (as bftree's default wal_size_limit; WiredTiger has no automatic
** checkpoint by default).  Close takes a checkpoint.
**
** eviction=(threads_min=1,threads_max=1): one eviction thread.  With the
** default (up to 8 on this 2-core machine) a 700k-row load with a 32 MiB
** cache peaked at 81 MiB RSS (each thread's malloc arena keeps its freed
** pages) and the 64 MiB cgroup killed it; with one thread the peak was
** 44 MiB and the load faster.  YCSB_WT_CONFIG (environment) is appended to
** the connection's configuration string, YCSB_WT_TABLE_CONFIG to the
** table's, for experiments.
**
** Under the default 32 MiB cap WiredTiger is killed while loading even 1x
** the budget.  Measured uncapped (2026-12-07, 310,689 records, 1000 per
** transaction): peak RSS 54 MiB with cache_size 8 MiB, 49 MiB with 2 MiB,
** 44.5 MiB with MALLOC_ARENA_MAX=1; with mmap=false 48 MiB of it anonymous
** (an 18.6 MiB main heap, 17.5 MiB touched in one 33 MiB mapping, 11 MiB in
** a thread's arena).  So no cache_size fits it in the cap; the table's
** os_cache_dirty_max=1MB (dirty page cache) did not help either.
*/
#include "ycsb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wiredtiger.h>

typedef struct wt {
  WT_CONNECTION *conn;
  WT_SESSION *s;
  WT_CURSOR *c;
  size_t key_size, value_size;
} wt;

static int wt_fail(const char *what, int rc) {
  fprintf(stderr, "ycsb: wiredtiger: %s: %s\n", what, wiredtiger_strerror(rc));
  return YCSB_ERR;
}

static void wt_describe(const ycsb_cfg *cfg, char *buf, size_t n) {
  snprintf(buf, n,
           "%s; cache_size %.1f MiB; log=(enabled) transaction_sync=(enabled=false) "
           "(no fsync per operation), checkpoint=(log_size=64MB), one eviction "
           "thread; autocommit per operation",
           wiredtiger_version(NULL, NULL, NULL), (double)(cfg->cache_bytes / 2) / 1048576);
}

static int wt_open(const ycsb_cfg *cfg, bool create, void **out) {
  wt *h = calloc(1, sizeof *h);
  char conf[1024];
  const char *extra = getenv("YCSB_WT_CONFIG");
  int rc;
  if (!h) return YCSB_ERR;
  h->key_size = cfg->key_size;
  h->value_size = cfg->value_size;
  snprintf(conf, sizeof conf,
           "create,cache_size=%llu,log=(enabled=true,file_max=16MB,prealloc=false),"
           "transaction_sync=(enabled=false),checkpoint=(log_size=64MB),"
           "eviction=(threads_min=1,threads_max=1),"
           "statistics=(none)%s%s",
           (unsigned long long)(cfg->cache_bytes / 2), extra ? "," : "", extra ? extra : "");
  if ((rc = wiredtiger_open(cfg->dir, NULL, conf, &h->conn)) != 0) {
    free(h);
    return wt_fail("wiredtiger_open", rc);
  }
  if ((rc = h->conn->open_session(h->conn, NULL, NULL, &h->s)) != 0) goto fail;
  if (create) {
    char tconf[512];
    const char *textra = getenv("YCSB_WT_TABLE_CONFIG");
    snprintf(tconf, sizeof tconf, "key_format=u,value_format=u%s%s",
             textra ? "," : "", textra ? textra : "");
    if ((rc = h->s->create(h->s, "table:t", tconf)) != 0) goto fail;
  }
  if ((rc = h->s->open_cursor(h->s, "table:t", NULL, NULL, &h->c)) != 0) goto fail;
  *out = h;
  return YCSB_OK;
fail:
  h->conn->close(h->conn, NULL);
  free(h);
  return wt_fail("open", rc);
}

static int wt_put(void *db, const uint8_t *key, const uint8_t *value) {
  wt *h = db;
  WT_CURSOR *c = h->c;
  WT_ITEM k = {0}, v = {0};
  k.data = key;
  k.size = h->key_size;
  v.data = value;
  v.size = h->value_size;
  c->set_key(c, &k);
  c->set_value(c, &v);
  int rc = c->insert(c);
  c->reset(c);
  return rc ? wt_fail("insert", rc) : YCSB_OK;
}

static int wt_begin(void *db) {
  wt *h = db;
  int rc = h->s->begin_transaction(h->s, NULL);
  return rc ? wt_fail("begin_transaction", rc) : YCSB_OK;
}

static int wt_commit(void *db) {
  wt *h = db;
  int rc = h->s->commit_transaction(h->s, NULL);
  return rc ? wt_fail("commit_transaction", rc) : YCSB_OK;
}

static int wt_read(void *db, const uint8_t *key, uint8_t *value, size_t *len) {
  wt *h = db;
  WT_CURSOR *c = h->c;
  WT_ITEM k = {0}, v = {0};
  k.data = key;
  k.size = h->key_size;
  c->set_key(c, &k);
  int rc = c->search(c);
  if (rc == 0 && (rc = c->get_value(c, &v)) == 0) {
    *len = v.size;
    memcpy(value, v.data, v.size < h->value_size ? v.size : h->value_size);
  }
  c->reset(c);
  if (rc == WT_NOTFOUND) return YCSB_NOTFOUND;
  return rc ? wt_fail("search", rc) : YCSB_OK;
}

static int wt_scan(void *db, const uint8_t *key, int n, ycsb_scan_state *ss) {
  wt *h = db;
  WT_CURSOR *c = h->c;
  WT_ITEM k = {0}, v = {0};
  int exact = 0, rc;
  k.data = key;
  k.size = h->key_size;
  c->set_key(c, &k);
  rc = c->search_near(c, &exact);
  if (rc == 0 && exact < 0) rc = c->next(c);
  for (int i = 0; i < n && rc == 0; i++) {
    if ((rc = c->get_key(c, &k)) != 0 || (rc = c->get_value(c, &v)) != 0) break;
    ycsb_scan_row(ss, k.data, k.size, v.data, v.size);
    if (i + 1 < n) rc = c->next(c);
  }
  c->reset(c);
  if (rc && rc != WT_NOTFOUND) return wt_fail("scan", rc);
  return YCSB_OK;
}

static int wt_close(void *db) {
  wt *h = db;
  int rc = h->conn->close(h->conn, NULL);
  free(h);
  return rc ? wt_fail("close", rc) : YCSB_OK;
}

const ycsb_adapter ycsb_wiredtiger = {"wiredtiger", wt_describe, wt_open, wt_put,
                                      wt_put,       wt_read,     wt_scan, wt_close,
                                      wt_begin, wt_commit,
                                      /* one client thread only (--threads) */
                                      NULL, NULL, wt_put};
