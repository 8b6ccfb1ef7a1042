/*
** test_tree.c: deterministic tests of the tree's operations through the
** public API: put/get/delete, overwrite, limits, empty and tiny keys,
** splits, eviction with merges, scans in both directions with every bound
** kind, reopen, warm fill of an empty buffer and the shrinking of its full
** pages, prefetch, read admission, bf_make_room, eviction in batches (and a
** write failing in one), the data file giving back its free tail, bad options, a foreign file, a locked file, corrupt pages.
*/
#include "test_util.h"

#include "bftree.h"
#include "bf_int.h"

#include <fcntl.h>
#include <sys/stat.h>

struct fixture {
  char *dir;
  char path[600];
  bf_tree *tree;
  bf_options opts;
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof *f);
  f->dir = test_tmpdir();
  snprintf(f->path, sizeof f->path, "%s/t.bf", f->dir);
  bf_options_init(&f->opts);
  f->opts.buffer_size = 256 << 10;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  if (f->tree) bf_close(f->tree);
  test_rmdir(f->dir);
  free(f);
  return 0;
}

static void open_tree(struct fixture *f) {
  char *err = NULL;
  int rc = bf_open(f->path, &f->opts, &f->tree, &err);
  if (rc != BF_OK) fail_msg("bf_open: %s (%s)", bf_strerror(rc), err);
  free(err);
}

static void reopen(struct fixture *f) {
  assert_int_equal(bf_close(f->tree), BF_OK);
  f->tree = NULL;
  open_tree(f);
}

static void check_ok(bf_tree *t) {
  char *err = NULL;
  int rc = bf_check(t, &err);
  if (rc != BF_OK) fail_msg("bf_check: %s", err ? err : "?");
  free(err);
}

static void key_of(uint32_t i, char *buf, size_t *len) {
  *len = (size_t)snprintf(buf, 32, "key%08u", i);
}

static void test_put_get_delete(void **state) {
  struct fixture *f = *state;
  char v[64];
  size_t vlen = 0;
  open_tree(f);
  assert_int_equal(bf_get(f->tree, "a", 1, v, sizeof v, &vlen), BF_NOTFOUND);
  assert_int_equal(bf_put(f->tree, "a", 1, "one", 3), BF_OK);
  assert_int_equal(bf_get(f->tree, "a", 1, v, sizeof v, &vlen), BF_OK);
  assert_int_equal(vlen, 3);
  assert_memory_equal(v, "one", 3);
  assert_int_equal(bf_put(f->tree, "a", 1, "uno!", 4), BF_OK);
  assert_int_equal(bf_get(f->tree, "a", 1, v, sizeof v, &vlen), BF_OK);
  assert_int_equal(vlen, 4);
  assert_memory_equal(v, "uno!", 4);
  /* a short buffer: length reported, prefix copied */
  memset(v, 0, sizeof v);
  assert_int_equal(bf_get(f->tree, "a", 1, v, 2, &vlen), BF_OK);
  assert_int_equal(vlen, 4);
  assert_memory_equal(v, "un\0", 3);
  assert_int_equal(bf_delete(f->tree, "a", 1), BF_OK);
  assert_int_equal(bf_get(f->tree, "a", 1, v, sizeof v, &vlen), BF_NOTFOUND);
  assert_int_equal(bf_delete(f->tree, "zz", 2), BF_OK); /* blind */
  /* the empty key and keys differing only by length or a zero byte */
  assert_int_equal(bf_put(f->tree, "", 0, "empty", 5), BF_OK);
  assert_int_equal(bf_put(f->tree, "a\0", 2, "a0", 2), BF_OK);
  assert_int_equal(bf_put(f->tree, "a", 1, "a", 1), BF_OK);
  assert_int_equal(bf_get(f->tree, "", 0, v, sizeof v, &vlen), BF_OK);
  assert_int_equal(vlen, 5);
  assert_int_equal(bf_get(f->tree, "a\0", 2, v, sizeof v, &vlen), BF_OK);
  assert_memory_equal(v, "a0", 2);
  assert_int_equal(bf_get(f->tree, "a", 1, v, sizeof v, &vlen), BF_OK);
  assert_memory_equal(v, "a", 1);
  reopen(f);
  assert_int_equal(bf_get(f->tree, "", 0, v, sizeof v, &vlen), BF_OK);
  assert_int_equal(bf_get(f->tree, "a\0", 2, v, sizeof v, &vlen), BF_OK);
  assert_memory_equal(v, "a0", 2);
  check_ok(f->tree);
}

static void test_limits(void **state) {
  struct fixture *f = *state;
  static uint8_t big[70000];
  size_t vlen;
  open_tree(f);
  size_t mk = bf_max_key_size(f->tree), mr = bf_max_record_size(f->tree);
  assert_true(mk >= 64 && mr > mk);
  assert_int_equal(bf_put(f->tree, big, mk + 1, "", 0), BF_TOOBIG);
  assert_int_equal(bf_put(f->tree, big, mk, big, mr - mk + 1), BF_TOOBIG);
  assert_int_equal(bf_get(f->tree, big, mk + 1, NULL, 0, &vlen), BF_TOOBIG);
  memset(big, 'k', mk);
  assert_int_equal(bf_put(f->tree, big, mk, big, mr - mk), BF_OK);
  assert_int_equal(bf_get(f->tree, big, mk, NULL, 0, &vlen), BF_OK);
  assert_int_equal(vlen, mr - mk);
  /* many maximal records force splits with maximal fences */
  for (int i = 0; i < 200; i++) {
    big[mk - 1] = (uint8_t)i;
    big[mk - 2] = (uint8_t)(i >> 8);
    assert_int_equal(bf_put(f->tree, big, mk, big, mr - mk), BF_OK);
  }
  reopen(f);
  for (int i = 0; i < 200; i++) {
    big[mk - 1] = (uint8_t)i;
    big[mk - 2] = (uint8_t)(i >> 8);
    assert_int_equal(bf_get(f->tree, big, mk, NULL, 0, &vlen), BF_OK);
    assert_int_equal(vlen, mr - mk);
  }
  check_ok(f->tree);
}

/* Enough data for splits and eviction; verify everything after reopen. */
static void test_many(void **state) {
  struct fixture *f = *state;
  char k[32], v[128];
  size_t klen, vlen;
  const uint32_t n = (uint32_t)test_scale(40000);
  f->opts.buffer_size = 72 << 10; /* data outgrows it at any scale >= 5 */
  open_tree(f);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t id = (i * 7919u) % n;
    key_of(id, k, &klen);
    int l = snprintf(v, sizeof v, "value-%u-%0*u", id, (int)(id % 50), id);
    assert_int_equal(bf_put(f->tree, k, klen, v, (size_t)l), BF_OK);
  }
  bf_stats st;
  bf_stats_get(f->tree, &st);
  assert_true(st.splits > 0);
  assert_true(st.evictions > 0);
  assert_true(st.merges > 0);
  check_ok(f->tree);
  for (int round = 0; round < 2; round++) {
    for (uint32_t id = 0; id < n; id++) {
      char want[128];
      key_of(id, k, &klen);
      int l = snprintf(want, sizeof want, "value-%u-%0*u", id, (int)(id % 50), id);
      assert_int_equal(bf_get(f->tree, k, klen, v, sizeof v, &vlen), BF_OK);
      assert_int_equal(vlen, (size_t)l);
      assert_memory_equal(v, want, vlen);
    }
    reopen(f);
  }
  /* delete the odd ones, scan both ways */
  for (uint32_t id = 1; id < n; id += 2) {
    key_of(id, k, &klen);
    assert_int_equal(bf_delete(f->tree, k, klen), BF_OK);
  }
  bf_cursor *c;
  assert_int_equal(bf_cursor_open(f->tree, &c), BF_OK);
  uint32_t expect = 0, seen = 0;
  for (int rc = bf_cursor_seek(c, NULL, NULL, false); rc == BF_OK;
       rc = bf_cursor_next(c)) {
    const void *kp;
    size_t kl;
    bf_cursor_key(c, &kp, &kl);
    key_of(expect, k, &klen);
    assert_int_equal(kl, klen);
    assert_memory_equal(kp, k, klen);
    expect += 2;
    seen++;
  }
  assert_int_equal(seen, (n + 1) / 2);
  seen = 0;
  expect = (n - 1) & ~1u;
  for (int rc = bf_cursor_seek(c, NULL, NULL, true); rc == BF_OK;
       rc = bf_cursor_next(c)) {
    const void *kp;
    size_t kl;
    bf_cursor_key(c, &kp, &kl);
    key_of(expect, k, &klen);
    assert_memory_equal(kp, k, klen);
    expect -= 2;
    seen++;
  }
  assert_int_equal(seen, (n + 1) / 2);
  /* bounded: [key100, key200) ascending and (key100, key200] descending */
  char lo[32], hi[32];
  size_t lol, hil;
  key_of(100, lo, &lol);
  key_of(200, hi, &hil);
  bf_bound l = {lo, lol, true}, u = {hi, hil, false};
  seen = 0;
  for (int rc = bf_cursor_seek(c, &l, &u, false); rc == BF_OK; rc = bf_cursor_next(c)) seen++;
  assert_int_equal(seen, 50);
  l.inclusive = false;
  u.inclusive = true;
  seen = 0;
  for (int rc = bf_cursor_seek(c, &l, &u, true); rc == BF_OK; rc = bf_cursor_next(c)) seen++;
  assert_int_equal(seen, 50);
  /* empty ranges */
  assert_int_equal(bf_cursor_seek(c, &u, &l, false), BF_DONE);
  l.inclusive = false;
  assert_int_equal(bf_cursor_seek(c, &l, &l, false), BF_DONE);
  bf_cursor_close(c);
  check_ok(f->tree);
}

/* Scan every key of [0, n) with a row hint, in one direction; values must
** be "new-<id>" for ids in [new_lo, new_hi) and "old-<id>" otherwise.  When
** mutate is set, after the first rows it rewrites ids [new_lo, new_hi) and
** checkpoints: leaves read ahead before that are on disk anew when the
** scan gets to them. */
static void scan_hinted(struct fixture *f, uint32_t n, bool desc, bool mutate,
                        uint32_t new_lo, uint32_t new_hi) {
  char k[32], v[64];
  size_t klen;
  bf_cursor *c;
  assert_int_equal(bf_cursor_open(f->tree, &c), BF_OK);
  bf_cursor_hint(c, n);
  uint32_t seen = 0;
  for (int rc = bf_cursor_seek(c, NULL, NULL, desc); rc == BF_OK;
       rc = bf_cursor_next(c)) {
    uint32_t id = desc ? n - 1 - seen : seen;
    const void *kp, *vp;
    size_t kl, vl;
    bf_cursor_key(c, &kp, &kl);
    bf_cursor_value(c, &vp, &vl);
    key_of(id, k, &klen);
    assert_int_equal(kl, klen);
    assert_memory_equal(kp, k, klen);
    bool fresh = id >= new_lo && id < new_hi;
    int l = snprintf(v, sizeof v, "%s-%u-padding-padding-padding-padding",
                     fresh ? "new" : "old", id);
    if (vl != (size_t)l || memcmp(vp, v, vl) != 0)
      fail_msg("key %u: value %.*s, expected %s", id, (int)vl,
               (const char *)vp, v);
    seen++;
    if (mutate && seen == 3) {
      for (uint32_t i = new_lo; i < new_hi; i++) {
        key_of(i, k, &klen);
        l = snprintf(v, sizeof v, "new-%u-padding-padding-padding-padding", i);
        assert_int_equal(bf_put(f->tree, k, klen, v, (size_t)l), BF_OK);
      }
      assert_int_equal(bf_checkpoint(f->tree), BF_OK);
    }
  }
  assert_int_equal(seen, n);
  bf_cursor_close(c);
}

/* Read-ahead: a hinted scan of leaves on disk reads each leaf once, most
** of them in batches; a page read ahead is not used once the file changed
** (the leaves rewritten meanwhile are read again: their new values show). */
static void test_readahead(void **state) {
  struct fixture *f = *state;
  char k[32], v[64];
  size_t klen;
  const uint32_t n = 6000;
  f->opts.scan_promote_percent = 0; /* leaves stay on disk */
  open_tree(f);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t id = (i * 7919u) % n;
    key_of(id, k, &klen);
    int l = snprintf(v, sizeof v, "old-%u-padding-padding-padding-padding", id);
    assert_int_equal(bf_put(f->tree, k, klen, v, (size_t)l), BF_OK);
  }
  for (int desc = 0; desc < 2; desc++) {
    reopen(f); /* an empty buffer: every leaf is on disk */
    bf_stats a, b;
    bf_stats_get(f->tree, &a);
    scan_hinted(f, n, desc, false, 0, 0);
    bf_stats_get(f->tree, &b);
    assert_true(a.leaf_pages > 40);
    assert_int_equal(b.leaf_reads - a.leaf_reads, a.leaf_pages);
    /* all but the first leaf and one per batch of up to 8 came ahead */
    assert_true(b.read_ahead_leaves - a.read_ahead_leaves >= a.leaf_pages * 3 / 4);
    assert_int_equal(b.read_ahead_dropped, 0);
  }
  /* Rewrite leaves the scan has read ahead but not reached. */
  for (int desc = 0; desc < 2; desc++) {
    reopen(f);
    uint32_t lo = desc ? n - 400 : 150, hi = desc ? n - 150 : 400;
    scan_hinted(f, n, desc, true, lo, hi);
    bf_stats st;
    bf_stats_get(f->tree, &st);
    assert_true(st.read_ahead_dropped > 0);
    /* back to the old values for the next round */
    for (uint32_t i = lo; i < hi; i++) {
      key_of(i, k, &klen);
      int l = snprintf(v, sizeof v, "old-%u-padding-padding-padding-padding", i);
      assert_int_equal(bf_put(f->tree, k, klen, v, (size_t)l), BF_OK);
    }
  }
  check_ok(f->tree);
}

/* Put "<tag>-<id>" values for ids [lo, hi), and the old values again for
** every other id of [0, n): with a small buffer that evicts (merges) every
** leaf's mini-page, so the leaves of [lo, hi) reach the disk. */
static void rewrite_all(struct fixture *f, uint32_t n, uint32_t lo, uint32_t hi,
                        const char *tag) {
  char k[32], v[64];
  size_t klen;
  for (uint32_t i = 0; i < n; i++) {
    bool in = i >= lo && i < hi;
    key_of(i, k, &klen);
    int l = snprintf(v, sizeof v, "%s-%u-padding-padding-padding-padding",
                     in ? tag : "old", i);
    assert_int_equal(bf_put(f->tree, k, klen, v, (size_t)l), BF_OK);
  }
}

/* Read-ahead against leaves rewritten in place (same disk page): only the
** write epoch tells that the page read ahead is stale. */
static void test_readahead_in_place(void **state) {
  struct fixture *f = *state;
  const uint32_t n = 6000, lo = 150, hi = 400; /* past the first leaf */
  f->opts.scan_promote_percent = 0;
  f->opts.read_promote_percent = 0;
  f->opts.read_admission = false; /* no read is cached */
  f->opts.buffer_size = 72 << 10;
  open_tree(f);
  rewrite_all(f, n, 0, 0, "old");
  reopen(f);
  /* The leaves of [lo, hi) leave the checkpoint (copy-on-write merges):
  ** their next merges write in place. */
  rewrite_all(f, n, lo, hi, "mid");
  bf_stats a;
  bf_stats_get(f->tree, &a);
  bf_cursor *c;
  assert_int_equal(bf_cursor_open(f->tree, &c), BF_OK);
  bf_cursor_hint(c, n);
  uint32_t seen = 0;
  char k[32], v[64];
  size_t klen;
  for (int rc = bf_cursor_seek(c, NULL, NULL, false); rc == BF_OK;
       rc = bf_cursor_next(c)) {
    const void *kp, *vp;
    size_t kl, vl;
    bf_cursor_key(c, &kp, &kl);
    bf_cursor_value(c, &vp, &vl);
    key_of(seen, k, &klen);
    assert_int_equal(kl, klen);
    assert_memory_equal(kp, k, klen);
    const char *tag = seen >= lo && seen < hi ? (seen >= 3 ? "new" : "mid") : "old";
    int l = snprintf(v, sizeof v, "%s-%u-padding-padding-padding-padding", tag,
                     seen);
    if (vl != (size_t)l || memcmp(vp, v, vl) != 0)
      fail_msg("key %u: value %.*s, expected %s", seen, (int)vl,
               (const char *)vp, v);
    seen++;
    if (seen == 3) rewrite_all(f, n, lo, hi, "new");
  }
  assert_int_equal(seen, n);
  bf_cursor_close(c);
  bf_stats b;
  bf_stats_get(f->tree, &b);
  assert_true(b.read_ahead_leaves > a.read_ahead_leaves);
  assert_true(b.read_ahead_dropped > a.read_ahead_dropped);
  check_ok(f->tree);
}

/* ------------------------------------------------------------------------
** Warm fill: after a reopen the buffer is empty; until it first fills, a
** lookup that reads a leaf keeps the whole leaf, so one read per leaf warms
** every key of it.  Without warm fill each key costs its own read.
*/
static uint32_t warm_value(uint32_t i, uint32_t version, char *v) {
  return (uint32_t)snprintf(v, 64, "value-%08u-v%u-%s", i, version,
                            "....................");
}

static void test_warm_fill(void **state) {
  struct fixture *f = *state;
  char k[32], v[64], got[64];
  size_t klen, vlen;
  const uint32_t n = 4000;
  f->opts.buffer_size = 2u << 20; /* every leaf fits: no eviction */
  open_tree(f);
  for (uint32_t i = 0; i < n; i++) {
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, 0, v)), BF_OK);
  }
  for (int warm = 1; warm >= 0; warm--) {
    f->opts.warm_fill = warm;
    reopen(f); /* an empty buffer */
    bf_stats s0, s1, s2;
    bf_stats_get(f->tree, &s0);
    assert_true(s0.leaf_pages > 8);
    for (uint32_t i = 0; i < n; i++) { /* every key once */
      key_of(i, k, &klen);
      assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
      assert_int_equal(vlen, warm_value(i, 0, v));
      assert_memory_equal(got, v, vlen);
    }
    bf_stats_get(f->tree, &s1);
    uint64_t reads = s1.leaf_reads - s0.leaf_reads;
    if (warm) {
      /* one read per leaf, each kept whole */
      assert_int_equal(reads, s0.leaf_pages);
      assert_int_equal(s1.warm_fills - s0.warm_fills, s0.leaf_pages);
    } else {
      assert_int_equal(reads, n); /* a read per key */
      assert_int_equal(s1.warm_fills, s0.warm_fills);
    }
    assert_int_equal(s1.evictions, s0.evictions);
    for (uint32_t i = 0; i < n; i += 7) { /* all in memory now */
      key_of(i, k, &klen);
      assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
    }
    key_of(n + 1, k, &klen); /* absent: answered by the full page */
    assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen),
                     BF_NOTFOUND);
    bf_stats_get(f->tree, &s2);
    if (warm) assert_int_equal(s2.leaf_reads, s1.leaf_reads);
    check_ok(f->tree);
  }
}

/* bf_prefetch: a lookup that caches what it read (the record, or a phantom
** for an absent key) and copies nothing; the next bf_get of the key reads
** no leaf.  Errors as bf_get's. */
static void test_prefetch(void **state) {
  struct fixture *f = *state;
  char k[32], v[64], got[64], big[600];
  size_t klen, vlen;
  const uint32_t n = 2000;
  f->opts.buffer_size = 2u << 20;
  f->opts.warm_fill = false; /* misses cache single records */
  open_tree(f);
  for (uint32_t i = 0; i < n; i += 2) { /* even keys only */
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, 0, v)), BF_OK);
  }
  reopen(f); /* an empty buffer */
  bf_stats s0, s1, s2;
  for (uint32_t i = 100; i < 140; i++) {
    key_of(i, k, &klen);
    bf_stats_get(f->tree, &s0);
    assert_int_equal(bf_prefetch(f->tree, k, klen), BF_OK); /* present or not */
    bf_stats_get(f->tree, &s1);
    assert_int_equal(s1.leaf_reads - s0.leaf_reads, 1);
    assert_int_equal(s1.cache_misses - s0.cache_misses, 1);
    if (i % 2 == 0)
      assert_int_equal(s1.record_promotions - s0.record_promotions, 1);
    else
      assert_int_equal(s1.phantoms - s0.phantoms, 1);
    int rc = bf_get(f->tree, k, klen, got, sizeof got, &vlen);
    bf_stats_get(f->tree, &s2);
    assert_int_equal(s2.leaf_reads, s1.leaf_reads); /* answered from memory */
    assert_int_equal(s2.cache_hits - s1.cache_hits, 1);
    if (i % 2 == 0) {
      assert_int_equal(rc, BF_OK);
      assert_int_equal(vlen, warm_value(i, 0, v));
      assert_memory_equal(got, v, vlen);
    } else {
      assert_int_equal(rc, BF_NOTFOUND);
    }
    /* a second prefetch finds it in memory, and counts neither a hit nor
    ** a miss (the read after it does) */
    assert_int_equal(bf_prefetch(f->tree, k, klen), BF_OK);
    bf_stats_get(f->tree, &s0);
    assert_int_equal(s0.leaf_reads, s2.leaf_reads);
    assert_int_equal(s0.cache_hits, s2.cache_hits);
    assert_int_equal(s0.cache_misses, s2.cache_misses);
  }
  /* writes over prefetched records and phantoms */
  for (uint32_t i = 100; i < 140; i++) {
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, 1, v)), BF_OK);
  }
  reopen(f);
  for (uint32_t i = 90; i < 150; i++) {
    key_of(i, k, &klen);
    int rc = bf_get(f->tree, k, klen, got, sizeof got, &vlen);
    if (i >= 100 && i < 140) {
      assert_int_equal(rc, BF_OK);
      assert_int_equal(vlen, warm_value(i, 1, v));
      assert_memory_equal(got, v, vlen);
    } else {
      assert_int_equal(rc, i % 2 == 0 ? BF_OK : BF_NOTFOUND);
    }
  }
  memset(big, 'x', sizeof big);
  assert_int_equal(bf_prefetch(f->tree, big, sizeof big), BF_TOOBIG);
  assert_int_equal(bf_prefetch(f->tree, NULL, 3), BF_INVALID);
  check_ok(f->tree);
}

/* Read admission: once the buffer is full, a record read from disk is
** cached only on the sketch's threshold-th read of its key (bf_sketch.c);
** before that, each read of it reads its leaf again and counts a refusal.
** Without admission and with read_promote_percent 0, never. */
static void test_admission(void **state) {
  struct fixture *f = *state;
  char k[32], v[64], got[64];
  size_t klen, vlen;
  const uint32_t n = 20000, half = n / 2;
  f->opts.buffer_size = 256u << 10; /* a fraction of the records */
  f->opts.warm_fill = false;        /* no first lap that caches every read */
  f->opts.read_promote_percent = 0;
  open_tree(f);
  for (uint32_t i = 0; i < n; i++) {
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, 0, v)), BF_OK);
  }
  for (int admission = 1; admission >= 0; admission--) {
    f->opts.read_admission = admission;
    reopen(f); /* an empty buffer */
    bf_stats s0, s1;
    bf_stats_get(f->tree, &s0);
    assert_true((s0.sketch_bytes > 0) == admission);
    /* Fill the buffer with the first half, each key read 3 times in a row
    ** (cached while there is room, then admitted by the sketch). */
    for (uint32_t i = 0; i < half; i++)
      for (int r = 0; r < 3; r++) {
        key_of(i, k, &klen);
        assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen),
                         BF_OK);
      }
    bf_stats_get(f->tree, &s1);
    if (admission) assert_true(s1.evictions > s0.evictions);
    /* Keys of the second half were never read: each read misses, and is
    ** refused while the sketch has seen fewer than threshold reads of the
    ** key (unless eviction has just left room: then it is cached), and
    ** cached on the threshold-th. */
    uint32_t threshold = admission ? bf_sketch_threshold() : 4;
    uint32_t cached = 0, checked = 0, filtered = 0;
    for (uint32_t i = half; i < half + 50 * 7; i += 7) {
      key_of(i, k, &klen);
      uint64_t halvings = admission ? bf_sketch_halvings(f->tree->sketch) : 0;
      bool in_memory = false, all_refused = true;
      for (uint32_t r = 1; r <= threshold + 1; r++) {
        bf_stats_get(f->tree, &s0);
        assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen),
                         BF_OK);
        assert_int_equal(vlen, warm_value(i, 0, v));
        assert_memory_equal(got, v, vlen);
        bf_stats_get(f->tree, &s1);
        uint64_t reads = s1.leaf_reads - s0.leaf_reads;
        uint64_t refused = s1.admissions_refused - s0.admissions_refused;
        uint64_t promoted = s1.record_promotions - s0.record_promotions;
        if (in_memory) { /* cached: answered without a read */
          assert_int_equal(reads, 0);
          assert_int_equal(s1.cache_hits - s0.cache_hits, 1);
          continue;
        }
        assert_int_equal(reads, 1);
        if (!admission) { /* never cached, never counted */
          assert_int_equal(refused + promoted, 0);
          continue;
        }
        assert_true(refused + promoted <= 1);
        if (bf_sketch_halvings(f->tree->sketch) != halvings) break;
        if (r >= threshold) assert_int_equal(refused, 0);
        if (r < threshold && !refused) all_refused = false;
        in_memory = promoted == 1;
      }
      /* An aging of the sketch during the key's reads shifts its count. */
      if (admission && bf_sketch_halvings(f->tree->sketch) != halvings)
        continue;
      checked++;
      cached += in_memory;
      filtered += admission && all_refused;
    }
    printf("  admission %s: %u keys checked, %u cached, %u refused until "
           "their threshold-th read\n", admission ? "on" : "off", checked,
           cached, filtered);
    assert_true(checked >= 40);
    if (admission) {
      assert_true(cached >= checked * 3 / 4);
      assert_true(filtered >= checked / 2);
    } else {
      assert_int_equal(cached, 0);
    }
    check_ok(f->tree);
  }
}

/* The record of key i in the mini-page of leaf 0, or type -1 when absent. */
static int cached_type(bf_tree *t, uint32_t i, bool *referenced) {
  char k[32];
  size_t klen;
  uint32_t idx;
  key_of(i, k, &klen);
  uint8_t *mini = atomic_load(&bf_map_get(t->map, 0)->mini);
  if (!mini || !bf_node_search(mini, (const uint8_t *)k, (uint32_t)klen, &idx))
    return -1;
  struct bf_record r;
  bf_node_record(mini, idx, &r);
  if (referenced) *referenced = r.referenced;
  return r.type;
}

/* A promotion into a mini-page full at its largest class drops the clean
** records not used since they were cached, keeping dirty and used ones,
** then caches the record; values read back right throughout and the dirty
** record reaches the disk. */
static void test_promote_full_mini(void **state) {
  struct fixture *f = *state;
  char k[32], v[128], got[128];
  size_t klen, vlen;
  const uint32_t n = 26;
  f->opts.buffer_size = 1u << 20; /* room: every read is cached */
  f->opts.warm_fill = false;
  open_tree(f);
  for (uint32_t i = 0; i < n; i++) { /* one leaf of 26 ~120-byte records */
    key_of(i, k, &klen);
    memset(v, 'a' + (int)(i % 26), 100);
    assert_int_equal(bf_put(f->tree, k, klen, v, 100), BF_OK);
  }
  reopen(f);
  bf_stats st;
  bf_stats_get(f->tree, &st);
  assert_int_equal(st.leaf_pages, 1);
  key_of(5, k, &klen);
  memset(v, 'Z', 100);
  assert_int_equal(bf_put(f->tree, k, klen, v, 100), BF_OK); /* dirty */
  assert_int_equal(cached_type(f->tree, 5, NULL), BF_REC_INSERT);
  /* Read keys until the mini-page is at its largest class. */
  uint32_t next = 0;
  for (;;) {
    uint8_t *mini = atomic_load(&bf_map_get(f->tree->map, 0)->mini);
    if (bf_buf_node_class(mini) == f->tree->max_mini_class) break;
    if (next == 5) next++;
    assert_true(next < n);
    key_of(next++, k, &klen);
    assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
  }
  /* Use every other cached record (hits set their reference bits). */
  uint32_t used = 0, unused = 0;
  for (uint32_t i = 0; i < next; i++) {
    if (i == 5 || cached_type(f->tree, i, NULL) != BF_REC_CACHE) continue;
    if (i % 2 == 0) {
      key_of(i, k, &klen);
      assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
      used++;
    } else {
      unused++;
    }
  }
  assert_true(used > 0 && unused > 0);
  /* Read new keys until one needs the room of the unused records. */
  for (;;) {
    assert_true(next < n);
    uint32_t x = next++;
    key_of(x, k, &klen);
    assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
    assert_int_equal(vlen, 100);
    for (uint32_t b = 0; b < 100; b++) assert_int_equal(got[b], 'a' + (int)x);
    assert_int_equal(cached_type(f->tree, x, NULL), BF_REC_CACHE);
    bool dropped = false;
    for (uint32_t i = 1; i < x; i += 2)
      if (i != 5) dropped |= cached_type(f->tree, i, NULL) == -1;
    if (dropped) break;
  }
  /* The unused clean records went, the used and the dirty one stayed. */
  for (uint32_t i = 0; i + 1 < next; i++) {
    int type = cached_type(f->tree, i, NULL);
    if (i == 5)
      assert_int_equal(type, BF_REC_INSERT);
    else if (i % 2 == 1)
      assert_int_equal(type, -1);
    else if (i < next - 1 && type != -1)
      assert_int_equal(type, BF_REC_CACHE);
  }
  for (uint32_t i = 0; i < n; i += 2) {
    if (cached_type(f->tree, i, NULL) == BF_REC_CACHE) used--;
  }
  assert_int_equal(used, 0); /* every used record is still cached */
  for (uint32_t i = 0; i < n; i++) { /* every value, from memory or disk */
    key_of(i, k, &klen);
    assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
    assert_int_equal(vlen, 100);
    assert_int_equal(got[0], i == 5 ? 'Z' : 'a' + (int)i);
  }
  check_ok(f->tree);
  reopen(f);
  key_of(5, k, &klen);
  assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
  assert_int_equal(got[99], 'Z');
}

/* Key i holds the value of this version, or is absent (version 0). */
static void check_version(bf_tree *t, uint32_t i, uint32_t version) {
  char k[32], v[64], got[64];
  size_t klen, vlen;
  key_of(i, k, &klen);
  int rc = bf_get(t, k, klen, got, sizeof got, &vlen);
  if (version == 0) {
    assert_int_equal(rc, BF_NOTFOUND);
    return;
  }
  assert_int_equal(rc, BF_OK);
  assert_int_equal(vlen, warm_value(i, version, v));
  assert_memory_equal(got, v, vlen);
}

/* The options of the eviction tests: a 256 KiB buffer that writes fill,
** no warm fill, no read admission. */
static void small_buffer_options(struct fixture *f) {
  f->opts.buffer_size = 256u << 10;
  f->opts.warm_fill = false;
  f->opts.read_admission = false;
}

/* The j-th of n keys in a scattered order (7919 is prime, n a multiple of
** neither): consecutive writes land on different leaves. */
static uint32_t scattered(uint32_t j, uint32_t n) {
  return (uint32_t)(((uint64_t)j * 7919) % n);
}

/* bf_make_room: once the buffer is full, it evicts until its reserve is
** unused; writes that fit the reserve then evict nothing; reads do not
** cache into the reserve (it is not room); an empty buffer needs nothing. */
static void test_make_room(void **state) {
  struct fixture *f = *state;
  char k[32], v[128], got[128];
  size_t klen, vlen;
  const uint32_t n = 20000;
  small_buffer_options(f);
  f->opts.read_promote_percent = 0; /* a full buffer caches no read */
  open_tree(f);
  bf_stats s0, s1;
  /* An empty buffer: nothing to do. */
  bf_stats_get(f->tree, &s0);
  assert_int_equal(bf_make_room(f->tree), BF_OK);
  bf_stats_get(f->tree, &s1);
  assert_int_equal(s1.evictions, s0.evictions);
  uint64_t target = f->tree->room_target;
  assert_true(target >= 2 * (uint64_t)f->tree->page_size);
  assert_true(target <= (256u << 10) / 16);
  /* Fill it past full with writes in scattered order (dirty mini-pages of
  ** many leaves: evicting them merges). */
  for (uint32_t j = 0; j < n; j++) {
    uint32_t i = scattered(j, n);
    key_of(i, k, &klen);
    memset(v, 'a' + (int)(i % 26), 100);
    assert_int_equal(bf_put(f->tree, k, klen, v, 100), BF_OK);
  }
  bf_stats_get(f->tree, &s0);
  assert_true(s0.evictions > 0);
  assert_true(bf_buf_unused(f->tree->buf) < target); /* full: no reserve */
  assert_int_equal(bf_make_room(f->tree), BF_OK);
  bf_stats_get(f->tree, &s1);
  assert_true(s1.evictions > s0.evictions);
  assert_true(bf_buf_unused(f->tree->buf) >= target);
  /* Again: the reserve is there, nothing to evict. */
  assert_int_equal(bf_make_room(f->tree), BF_OK);
  bf_stats_get(f->tree, &s0);
  assert_int_equal(s0.evictions, s1.evictions);
  /* Reads of keys on disk are not cached into the reserve: with
  ** read_promote_percent 0, a full buffer caches no read (every read of
  ** such a key is a disk read, and the reserve stays). */
  uint32_t probed = 0;
  for (uint32_t i = 0; i < n && probed < 20; i += 97) {
    key_of(i, k, &klen);
    bf_stats_get(f->tree, &s0);
    assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
    assert_int_equal(vlen, 100);
    bf_stats_get(f->tree, &s1);
    if (s1.leaf_reads == s0.leaf_reads) continue; /* was in memory */
    probed++;
    assert_int_equal(s1.record_promotions, s0.record_promotions);
    assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
    bf_stats_get(f->tree, &s0);
    assert_int_equal(s0.leaf_reads, s1.leaf_reads + 1); /* read again */
  }
  assert_true(probed >= 10);
  /* Writes that fit the reserve evict nothing: new keys after the last
  ** (one leaf, one small mini-page). */
  assert_int_equal(bf_make_room(f->tree), BF_OK);
  bf_stats_get(f->tree, &s0);
  for (uint32_t i = n; i < n + 4; i++) {
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, "x", 1), BF_OK);
  }
  bf_stats_get(f->tree, &s1);
  assert_int_equal(s1.evictions, s0.evictions);
  check_ok(f->tree);
  reopen(f);
  for (uint32_t i = 0; i < n + 4; i += 101) {
    key_of(i, k, &klen);
    assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
  }
}

/* Warm-filled full pages under pressure: once the buffer has filled, a full
** page used near the head is cut to its used and dirty records; updates
** and deletes made to full pages must survive that, eviction, merges and a
** reopen.  Randomized (seed printed), checked against an array model. */
static void test_warm_shrink(void **state) {
  struct fixture *f = *state;
  char k[32], v[64];
  size_t klen;
  const uint32_t n = 12000;
  uint64_t rng = test_seed("warm_shrink");
  uint32_t *version = calloc(n, sizeof *version); /* 0 = deleted, else v */
  assert_non_null(version);
  f->opts.buffer_size = 256u << 10; /* 64 pages, a fraction of the leaves */
  open_tree(f);
  for (uint32_t i = 0; i < n; i++) {
    key_of(i, k, &klen);
    version[i] = 1;
    assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, 1, v)), BF_OK);
  }
  reopen(f);
  bf_stats s0, s1;
  bf_stats_get(f->tree, &s0);
  assert_true(s0.leaf_pages > 128); /* twice what the buffer holds */
  for (uint32_t round = 0; round < 40000; round++) {
    uint64_t r = test_rand(&rng);
    /* a hot tenth of the keys gets most of the traffic */
    uint32_t i = (r & 3) ? (uint32_t)((r >> 8) % (n / 10)) * 10
                         : (uint32_t)((r >> 8) % n);
    key_of(i, k, &klen);
    switch ((r >> 40) % 10) {
      case 0: /* update */
        version[i] = version[i] ? version[i] + 1 : 1;
        assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, version[i], v)),
                         BF_OK);
        break;
      case 1: /* delete */
        assert_int_equal(bf_delete(f->tree, k, klen), BF_OK);
        version[i] = 0;
        break;
      default: /* read */
        check_version(f->tree, i, version[i]);
    }
  }
  bf_stats_get(f->tree, &s1);
  print_message("  warm fills %llu, full pages shrunk %llu, evictions %llu\n",
                (unsigned long long)(s1.warm_fills - s0.warm_fills),
                (unsigned long long)(s1.page_shrinks - s0.page_shrinks),
                (unsigned long long)(s1.evictions - s0.evictions));
  assert_true(s1.warm_fills > s0.warm_fills);
  assert_true(s1.page_shrinks > s0.page_shrinks);
  assert_true(s1.evictions > s0.evictions);
  check_ok(f->tree);
  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t i = 0; i < n; i++) check_version(f->tree, i, version[i]);
    reopen(f); /* and once more from disk */
  }
  free(version);
}

/* A checkpoint reads the pages of the leaves it merges in batches (one
** io_uring submission per FLUSH_BATCH leaves, bf_tree.c flush_all): one
** dirty record in each of many leaves, a checkpoint, then every value. */
/* The data file gives back its free tail.  A leaf page that the last
** checkpoint references is never overwritten: its next merge writes a new
** page and the old one is free once the next checkpoint is durable.  So
** rewriting every leaf after a checkpoint doubles the file; allocating the
** lowest free page first puts the next rewrite back at the front, and the
** checkpoint after it truncates the now free second half. */
static void test_file_shrinks(void **state) {
  struct fixture *f = *state;
  const uint32_t n = 6000;
  f->opts.buffer_size = 4u << 20;
  f->opts.warm_fill = false;
  open_tree(f);
  char k[32], v[64];
  size_t klen;
  struct stat st;
  for (uint32_t i = 0; i < n; i++) {
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, 1, v)), BF_OK);
  }
  assert_int_equal(bf_checkpoint(f->tree), BF_OK);
  bf_stats s1, s;
  bf_stats_get(f->tree, &s1);
  uint64_t most = 0, least_after_most = UINT64_MAX;
  for (uint32_t round = 2; round <= 4; round++) {
    for (uint32_t i = 0; i < n; i++) { /* every leaf rewritten */
      key_of(i, k, &klen);
      assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, round, v)),
                       BF_OK);
    }
    assert_int_equal(bf_checkpoint(f->tree), BF_OK);
    bf_stats_get(f->tree, &s);
    if (s.file_pages > most) {
      most = s.file_pages;
      least_after_most = UINT64_MAX;
    } else if (s.file_pages < least_after_most) {
      least_after_most = s.file_pages;
      assert_int_equal(stat(f->path, &st), 0); /* truncated to match */
      assert_int_equal((uint64_t)st.st_size, s.file_pages * s.page_size);
    }
  }
  /* Round 2 doubled the file (1 + 86 leaves + metadata: 91 pages, then
  ** 176); round 3 went back to the front and gave the rest back. */
  assert_true(most > s1.file_pages + s1.leaf_pages / 2);
  assert_true(least_after_most < s1.file_pages + s1.leaf_pages / 4);
  check_ok(f->tree);
  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t i = 0; i < n; i++) check_version(f->tree, i, 4);
    reopen(f);
  }
  /* After a reopen the superblock may count more pages than the file has
  ** (it was written before the truncation): free pages past the end are
  ** used like any other. */
  for (uint32_t round = 5; round <= 6; round++) {
    for (uint32_t i = 0; i < n; i++) {
      key_of(i, k, &klen);
      assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, round, v)),
                       BF_OK);
    }
    assert_int_equal(bf_checkpoint(f->tree), BF_OK);
    check_ok(f->tree);
    reopen(f);
    for (uint32_t i = 0; i < n; i++) check_version(f->tree, i, round);
  }
}

static void test_checkpoint_read_ahead(void **state) {
  struct fixture *f = *state;
  const uint32_t n = 6000;
  f->opts.buffer_size = 4u << 20; /* no eviction: the checkpoint merges */
  f->opts.warm_fill = false;      /* partial mini-pages, read at merge */
  open_tree(f);
  char k[32], v[64];
  size_t klen;
  for (uint32_t i = 0; i < n; i++) {
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, 1, v)), BF_OK);
  }
  reopen(f); /* clean: every leaf on disk, no mini-pages */
  bf_stats s0, s1;
  bf_stats_get(f->tree, &s0);
  assert_true(s0.leaf_pages > 2 * 32);
  for (uint32_t i = 0; i < n; i += 7) { /* a few records of every leaf */
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, 2, v)), BF_OK);
  }
  assert_int_equal(bf_checkpoint(f->tree), BF_OK);
  bf_stats_get(f->tree, &s1);
  assert_true(s1.read_ahead_leaves - s0.read_ahead_leaves >= s0.leaf_pages / 2);
  assert_true(s1.leaf_writes - s0.leaf_writes >= s0.leaf_pages / 2);
  check_ok(f->tree);
  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t i = 0; i < n; i++)
      check_version(f->tree, i, i % 7 == 0 ? 2 : 1);
    reopen(f);
  }
}

static void test_bad_options(void **state) {
  struct fixture *f = *state;
  char *err = NULL;
  bf_tree *t = NULL;
  f->opts.page_size = 3000;
  assert_int_equal(bf_open(f->path, &f->opts, &t, &err), BF_INVALID);
  assert_non_null(err);
  assert_non_null(strstr(err, "page_size"));
  free(err);
  f->opts.page_size = 4096;
  f->opts.buffer_size = 1000;
  assert_int_equal(bf_open(f->path, &f->opts, &t, &err), BF_INVALID);
  assert_non_null(strstr(err, "buffer_size"));
  free(err);
  assert_null(t);
}

static void test_foreign_and_locked(void **state) {
  struct fixture *f = *state;
  char *err = NULL;
  bf_tree *t = NULL;
  FILE *fp = fopen(f->path, "w");
  fputs("not a bftree file, just text\n", fp);
  fclose(fp);
  assert_int_equal(bf_open(f->path, &f->opts, &t, &err), BF_NOTBFTREE);
  free(err);
  struct stat st;
  assert_int_equal(stat(f->path, &st), 0);
  assert_int_equal(st.st_size, 29); /* untouched */
  unlink(f->path);
  open_tree(f);
  assert_int_equal(bf_open(f->path, &f->opts, &t, &err), BF_BUSY);
  free(err);
  assert_null(t);
}

static void test_corrupt_page(void **state) {
  struct fixture *f = *state;
  char k[32], v[64];
  size_t klen, vlen;
  f->opts.direct_io = BF_DIRECT_OFF;
  open_tree(f);
  for (uint32_t i = 0; i < 2000; i++) {
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, "0123456789", 10), BF_OK);
  }
  reopen(f);
  /* The page of a leaf in the middle (a free page may hold a stale copy,
  ** so the file's contents alone do not tell). */
  bf_stats s;
  bf_stats_get(f->tree, &s);
  uint64_t victim = bf_map_get(f->tree->map, (uint32_t)(s.leaf_pages / 2))->disk_page;
  assert_int_equal(bf_close(f->tree), BF_OK);
  f->tree = NULL;
  /* flip a byte in the middle of that page */
  int fd = open(f->path, O_RDWR);
  uint8_t b;
  off_t at = (off_t)(victim * 4096 + 2000);
  assert_int_equal(pread(fd, &b, 1, at), 1);
  b ^= 0x40;
  assert_int_equal(pwrite(fd, &b, 1, at), 1);
  close(fd);
  char *err = NULL;
  int rc = bf_open(f->path, &f->opts, &f->tree, &err);
  free(err);
  if (rc == BF_OK) {
    /* a leaf page: reads of it fail with BF_CORRUPT, never garbage */
    int corrupt = 0;
    for (uint32_t i = 0; i < 2000; i++) {
      key_of(i, k, &klen);
      rc = bf_get(f->tree, k, klen, v, sizeof v, &vlen);
      if (rc == BF_CORRUPT)
        corrupt++;
      else {
        assert_int_equal(rc, BF_OK);
        assert_memory_equal(v, "0123456789", 10);
      }
    }
    assert_true(corrupt > 0);
    assert_int_equal(bf_check(f->tree, &err), BF_CORRUPT);
    assert_non_null(err);
    free(err);
    bf_abandon(f->tree);
    f->tree = NULL;
  } else {
    assert_int_equal(rc, BF_CORRUPT);
  }
}

/* Eviction in batches (evict_batch): once the buffer is full, writes
** scattered over many leaves evict dirty mini-pages whose pages are read
** ahead together, and every value stays right.  Then a data-file write
** fails inside a batch: the write that was evicting gets the error, later
** writes are refused (nothing hangs on the block left claimed), and after
** a crash every acknowledged write is there. */
static void test_evict_batch(void **state) {
  struct fixture *f = *state;
  char k[32], v[64], got[64];
  size_t klen, vlen;
  const uint32_t n = 20000;
  small_buffer_options(f);
  open_tree(f);
  for (uint32_t i = 0; i < n; i++) {
    key_of(i, k, &klen);
    assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, 0, v)), BF_OK);
  }
  assert_int_equal(bf_checkpoint(f->tree), BF_OK); /* every leaf on disk */
  bf_stats s0, s1;
  bf_stats_get(f->tree, &s0);
  for (uint32_t version = 1; version <= 2; version++) {
    for (uint32_t j = 0; j < n; j++) {
      uint32_t i = scattered(j, n);
      key_of(i, k, &klen);
      assert_int_equal(bf_put(f->tree, k, klen, v, warm_value(i, version, v)),
                       BF_OK);
    }
  }
  bf_stats_get(f->tree, &s1);
  uint64_t merges = s1.merges - s0.merges;
  uint64_t ahead = s1.read_ahead_leaves - s0.read_ahead_leaves;
  printf("  %llu merges, %llu of their pages read ahead in batches\n",
         (unsigned long long)merges, (unsigned long long)ahead);
  assert_true(merges > 1000);
  assert_true(ahead >= merges / 2); /* one thread: every eviction batches */
  for (uint32_t i = 0; i < n; i++) {
    key_of(i, k, &klen);
    assert_int_equal(bf_get(f->tree, k, klen, got, sizeof got, &vlen), BF_OK);
    assert_int_equal(vlen, warm_value(i, 2, v));
    assert_memory_equal(got, v, vlen);
  }
  check_ok(f->tree);

  /* Every data-file write fails from here on (the log is another file). */
  static uint32_t acked[20000];
  for (uint32_t i = 0; i < n; i++) acked[i] = 2;
  bf_faultsim_set(BF_FAULT_WRITE, 1, true);
  uint32_t failed_at = n;
  for (uint32_t j = 0; j < n; j++) {
    uint32_t i = scattered(j, n);
    key_of(i, k, &klen);
    int rc = bf_put(f->tree, k, klen, v, warm_value(i, 3, v));
    if (rc == BF_OK) {
      acked[i] = 3;
      continue;
    }
    assert_int_equal(rc, BF_IOERR);
    failed_at = j;
    break;
  }
  assert_true(failed_at < n);
  assert_true(bf_faultsim_hits(BF_FAULT_WRITE) > 0);
  key_of(0, k, &klen);
  assert_int_equal(bf_put(f->tree, k, klen, "x", 1), BF_READONLY);
  bf_abandon(f->tree);
  f->tree = NULL;
  bf_faultsim_set(BF_FAULT_WRITE, 0, false);
  open_tree(f);
  for (uint32_t i = 0; i < n; i++) {
    key_of(i, k, &klen);
    int rc = bf_get(f->tree, k, klen, got, sizeof got, &vlen);
    assert_int_equal(rc, BF_OK);
    uint32_t want = warm_value(i, acked[i], v);
    if (vlen != want || memcmp(got, v, vlen) != 0) {
      /* the put that failed may or may not be in the log */
      uint32_t failed = scattered(failed_at, n);
      assert_int_equal(i, failed);
      assert_int_equal(vlen, warm_value(i, 3, v));
      assert_memory_equal(got, v, vlen);
    }
  }
  check_ok(f->tree);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_put_get_delete, setup, teardown),
      cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many, setup, teardown),
      cmocka_unit_test_setup_teardown(test_readahead, setup, teardown),
      cmocka_unit_test_setup_teardown(test_readahead_in_place, setup, teardown),
      cmocka_unit_test_setup_teardown(test_warm_fill, setup, teardown),
      cmocka_unit_test_setup_teardown(test_warm_shrink, setup, teardown),
      cmocka_unit_test_setup_teardown(test_prefetch, setup, teardown),
      cmocka_unit_test_setup_teardown(test_admission, setup, teardown),
      cmocka_unit_test_setup_teardown(test_promote_full_mini, setup, teardown),
      cmocka_unit_test_setup_teardown(test_make_room, setup, teardown),
      cmocka_unit_test_setup_teardown(test_evict_batch, setup, teardown),
      cmocka_unit_test_setup_teardown(test_checkpoint_read_ahead, setup, teardown),
      cmocka_unit_test_setup_teardown(test_file_shrinks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
      cmocka_unit_test_setup_teardown(test_foreign_and_locked, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_page, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
