/*
** adapter_bftree.c: the bftree engine through its C API (bftree-c).
**
** One tree in <dir>/data.bftree.  insert and update: bf_put; read: bf_get;
** scan: one cursor, kept open, bf_cursor_seek([key, unbounded)) then
** bf_cursor_next up to 100 rows.  Load batches: bf_txn_begin, bf_txn_put
** each, bf_txn_prepare + bf_txn_commit.
**
** MEMORY AND DURABILITY.  buffer_size = the cache bytes (the circular buffer
** of mini-pages; inner nodes and the mapping table come on top, from the
** rest of the budget).  wal = true, synchronous = BF_SYNC_NORMAL: every
** bf_put is logged, the log is fsynced at checkpoints only (log on, no fsync
** per operation).  Other options are the documented defaults (io_uring and
** O_DIRECT when available, 4 KiB pages, read promotion by frequency
** (read_admission), warm fill on).  BENCH_BF_NO_WARM_FILL=1 in the
** environment turns warm fill off, BENCH_BF_NO_ADMISSION=1 read admission
** (then BENCH_BF_READ_PROMOTE=<percent> sets the chance), to measure what
** they do (not part of any matrix).
*/
#include "ycsb.h"

#include "bftree.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct bfh {
  bf_tree *tree;
  bf_cursor *cur;
  bf_txn *txn;            /* a load batch in progress, else NULL */
  size_t key_size, value_size;
} bfh;

static int bfc_fail(const char *what, int st) {
  fprintf(stderr, "ycsb: bftree-c: %s: %s\n", what, bf_strerror(st));
  return YCSB_ERR;
}

static void bfc_options(const ycsb_cfg *cfg, bf_options *o) {
  bf_options_init(o);
  o->buffer_size = cfg->cache_bytes;
  o->wal = true;
  o->synchronous = BF_SYNC_NORMAL;
  if (getenv("BENCH_BF_NO_WARM_FILL")) o->warm_fill = false; /* see above */
  const char *promote = getenv("BENCH_BF_READ_PROMOTE"); /* tuning runs */
  if (promote) o->read_promote_percent = (uint32_t)atoi(promote);
  if (getenv("BENCH_BF_NO_ADMISSION")) o->read_admission = false; /* tuning */
}

static void bfc_describe(const ycsb_cfg *cfg, char *buf, size_t n) {
  bf_options o;
  bfc_options(cfg, &o);
  snprintf(buf, n,
           "bftree C API; buffer_size %.1f MiB, page %u B, wal on, "
           "synchronous=NORMAL (log fsynced at checkpoints only), io/direct "
           "auto, read promotion %s; each bf_put is its own logged commit",
           (double)o.buffer_size / 1048576, o.page_size,
           o.read_admission ? "by frequency (read_admission)" : "by chance");
}

static int bfc_open(const ycsb_cfg *cfg, bool create, void **out) {
  char path[2048];
  bf_options o;
  char *err = NULL;
  bfh *h = calloc(1, sizeof *h);
  if (!h) return YCSB_ERR;
  bfc_options(cfg, &o);
  o.create = create;
  h->key_size = cfg->key_size;
  h->value_size = cfg->value_size;
  snprintf(path, sizeof path, "%s/data.bftree", cfg->dir);
  int st = bf_open(path, &o, &h->tree, &err);
  if (st != BF_OK) {
    fprintf(stderr, "ycsb: bftree-c: bf_open %s: %s\n", path, err ? err : bf_strerror(st));
    free(err);
    free(h);
    return YCSB_ERR;
  }
  st = bf_cursor_open(h->tree, &h->cur);
  if (st != BF_OK) {
    bf_close(h->tree);
    free(h);
    return bfc_fail("bf_cursor_open", st);
  }
  bf_stats s;
  bf_stats_get(h->tree, &s);
  printf("ycsb: bftree-c: io %s, O_DIRECT %s\n",
         s.io_mode == BF_IO_URING ? "io_uring" : "pread/pwrite", s.direct_io ? "on" : "off");
  *out = h;
  return YCSB_OK;
}

static int bfc_put(void *db, const uint8_t *key, const uint8_t *value) {
  bfh *h = db;
  int st = h->txn ? bf_txn_put(h->txn, key, h->key_size, value, h->value_size)
                  : bf_put(h->tree, key, h->key_size, value, h->value_size);
  return st == BF_OK ? YCSB_OK : bfc_fail("bf_put", st);
}

static int bfc_begin(void *db) {
  bfh *h = db;
  int st = bf_txn_begin(h->tree, &h->txn);
  if (st != BF_OK) h->txn = NULL;
  return st == BF_OK ? YCSB_OK : bfc_fail("bf_txn_begin", st);
}

static int bfc_commit(void *db) {
  bfh *h = db;
  int st = bf_txn_prepare(h->txn, 0);
  if (st == BF_OK) st = bf_txn_commit(h->txn);
  else bf_txn_abort(h->txn);
  h->txn = NULL;
  return st == BF_OK ? YCSB_OK : bfc_fail("bf_txn_commit", st);
}

static int bfc_read(void *db, const uint8_t *key, uint8_t *value, size_t *len) {
  bfh *h = db;
  int st = bf_get(h->tree, key, h->key_size, value, h->value_size, len);
  if (st == BF_NOTFOUND) return YCSB_NOTFOUND;
  return st == BF_OK ? YCSB_OK : bfc_fail("bf_get", st);
}

static int bfc_scan(void *db, const uint8_t *key, int n, ycsb_scan_state *ss) {
  bfh *h = db;
  bf_bound lo = {key, h->key_size, true};
  bf_cursor_hint(h->cur, (uint64_t)n);
  int st = bf_cursor_seek(h->cur, &lo, NULL, false);
  for (int i = 0; i < n && st == BF_OK; i++) {
    const void *k, *v;
    size_t kl, vl;
    bf_cursor_key(h->cur, &k, &kl);
    bf_cursor_value(h->cur, &v, &vl);
    ycsb_scan_row(ss, k, kl, v, vl);
    if (i + 1 < n) st = bf_cursor_next(h->cur);
  }
  if (st != BF_OK && st != BF_DONE) return bfc_fail("cursor", st);
  return YCSB_OK;
}

static int bfc_close(void *db) {
  bfh *h = db;
  bf_stats s;
  bf_stats_get(h->tree, &s);
  printf("ycsb: bftree-c: stats: hits %llu misses %llu leaf reads %llu writes %llu "
         "bytes read %.1f MiB written %.1f MiB merges %llu evictions %llu splits %llu "
         "checkpoints %llu (stall %.3f s) leaves %llu height %u\n",
         (unsigned long long)s.cache_hits, (unsigned long long)s.cache_misses,
         (unsigned long long)s.leaf_reads, (unsigned long long)s.leaf_writes,
         (double)s.bytes_read / 1048576, (double)s.bytes_written / 1048576,
         (unsigned long long)s.merges, (unsigned long long)s.evictions,
         (unsigned long long)s.splits, (unsigned long long)s.checkpoints,
         (double)s.checkpoint_stall_us * 1e-6, (unsigned long long)s.leaf_pages,
         s.tree_height);
  printf("ycsb: bftree-c: buffer: used %.1f MiB live %.1f MiB, record promotions %llu "
         "phantoms %llu refused %llu (sketch %.2f MiB) page promotions %llu (warm fills %llu) grows %llu copy-on-access %llu "
         "(full pages shrunk %llu), laps %.2f; mini-pages",
         (double)s.buffer_used / 1048576, (double)s.buffer_live / 1048576,
         (unsigned long long)s.record_promotions, (unsigned long long)s.phantoms,
         (unsigned long long)s.admissions_refused, (double)s.sketch_bytes / 1048576,
         (unsigned long long)s.page_promotions, (unsigned long long)s.warm_fills,
         (unsigned long long)s.mini_grows, (unsigned long long)s.copy_on_access,
         (unsigned long long)s.page_shrinks,
         (double)s.buffer_retired / (double)(s.buffer_size ? s.buffer_size : 1));
  for (uint32_t c = 0; c < s.size_class_count; c++)
    printf(" %u:%llu", s.size_class_bytes[c], (unsigned long long)s.mini_pages[c]);
  printf("\n");
  if (h->txn) bf_txn_abort(h->txn);
  bf_cursor_close(h->cur);
  int st = bf_close(h->tree);
  free(h);
  return st == BF_OK ? YCSB_OK : bfc_fail("bf_close", st);
}

/* Another client thread's handle: the same tree (bf_tree is shared by
** threads), its own cursor. */
static int bfc_attach(void *db, void **out) {
  bfh *h = db, *a = calloc(1, sizeof *a);
  if (!a) return YCSB_ERR;
  *a = *h;
  a->txn = NULL;
  int st = bf_cursor_open(a->tree, &a->cur);
  if (st != BF_OK) {
    free(a);
    return bfc_fail("bf_cursor_open", st);
  }
  *out = a;
  return YCSB_OK;
}

static int bfc_detach(void *db) {
  bfh *a = db;
  bf_cursor_close(a->cur);
  free(a);
  return YCSB_OK;
}

const ycsb_adapter ycsb_bftree_c = {"bftree-c", bfc_describe, bfc_open, bfc_put,
                                    bfc_put, bfc_read, bfc_scan, bfc_close,
                                    bfc_begin, bfc_commit, bfc_attach, bfc_detach,
                                    bfc_put};
