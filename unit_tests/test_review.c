/*
** test_review.c: regression tests for problems found reviewing bf_tree.c and
** bf_scan.c.
**
**   scan_promotion_clean   a leaf promoted to a full-page mini-page by a scan
**                          must be clean: a checkpoint after a read-only scan
**                          writes no leaf page (it used to rewrite them all,
**                          and a reader's eviction could merge during a
**                          checkpoint).  Dirty records overlaid on the
**                          promoted page must survive merge and reopen.
**   cursor_long_key        a checksummed leaf page holding a key longer than
**                          max_key, scanned with a partial mini-page present:
**                          BF_CORRUPT, no overflow of the cursor's key buffer
**                          (run under ASan to see the overflow).
**   writer_after_evict_error
**                          a writer already inside bf_put when another
**                          thread's eviction merge fails (the failed block
**                          stays claimed, the head can never pass it) must
**                          give up with an error, not loop forever.
**   cursor_concurrent_splits
**                          scans in both directions while a writer splits
**                          leaves: every stable key exactly once, in order.
*/
#include "test_util.h"

#include "bftree.h"
#include "bf_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

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
  f->opts.direct_io = BF_DIRECT_OFF;
  f->opts.seed = 12345;
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

static size_t key_of(uint32_t i, char *buf) {
  return (size_t)snprintf(buf, 32, "key%08u", i);
}

static size_t value_of(uint32_t i, uint32_t version, char *buf) {
  return (size_t)snprintf(buf, 64, "v%u-%u-%0*u", i, version,
                          (int)(i % 23), i);
}

static void check_ok(bf_tree *t) {
  char *err = NULL;
  int rc = bf_check(t, &err);
  if (rc != BF_OK) fail_msg("bf_check: %s", err ? err : "?");
  free(err);
}

static uint32_t scan_all(bf_tree *t) {
  bf_cursor *c;
  uint32_t n = 0;
  assert_int_equal(bf_cursor_open(t, &c), BF_OK);
  for (int rc = bf_cursor_seek(c, NULL, NULL, false); rc == BF_OK;
       rc = bf_cursor_next(c))
    n++;
  bf_cursor_close(c);
  return n;
}

/* ------------------------------------------------------------------------
** A read-only scan must not make leaves dirty.
*/
static void test_scan_promotion_clean(void **state) {
  struct fixture *f = *state;
  char k[32], v[64], got[64];
  size_t vlen;
  const uint32_t n = 3000;
  f->opts.buffer_size = 4u << 20; /* every leaf fits: no eviction */
  f->opts.scan_promote_percent = 100;
  f->opts.read_promote_percent = 0;
  f->opts.read_admission = false; /* no read is cached */
  open_tree(f);
  for (uint32_t i = 0; i < n; i++)
    assert_int_equal(bf_put(f->tree, k, key_of(i, k), v, value_of(i, 0, v)),
                     BF_OK);
  reopen(f); /* no mini-pages at all */

  bf_stats s0, s1;
  bf_stats_get(f->tree, &s0);
  assert_true(s0.leaf_pages > 4);
  assert_int_equal(scan_all(f->tree), n);
  bf_stats_get(f->tree, &s1);
  assert_true(s1.page_promotions >= s0.leaf_pages);
  assert_int_equal(bf_checkpoint(f->tree), BF_OK);
  bf_stats_get(f->tree, &s1);
  /* Nothing changed: the checkpoint must not rewrite any leaf. */
  assert_int_equal(s1.leaf_writes, s0.leaf_writes);
  assert_int_equal(s1.merges, s0.merges);

  /* Dirty records (partial mini-pages) overlaid on promoted pages. */
  reopen(f);
  for (uint32_t i = 0; i < n; i += 3) {
    if (i % 2)
      assert_int_equal(bf_delete(f->tree, k, key_of(i, k)), BF_OK);
    else
      assert_int_equal(
          bf_put(f->tree, k, key_of(i, k), v, value_of(i, 1, v)), BF_OK);
  }
  uint32_t deleted = 0;
  for (uint32_t i = 0; i < n; i += 3) deleted += i % 2;
  assert_int_equal(scan_all(f->tree), n - deleted);
  assert_int_equal(scan_all(f->tree), n - deleted); /* from full pages */
  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t i = 0; i < n; i++) {
      size_t kl = key_of(i, k);
      int rc = bf_get(f->tree, k, kl, got, sizeof got, &vlen);
      if (i % 3 == 0 && i % 2) {
        assert_int_equal(rc, BF_NOTFOUND);
        continue;
      }
      assert_int_equal(rc, BF_OK);
      size_t l = value_of(i, i % 3 == 0 ? 1 : 0, v);
      assert_int_equal(vlen, l);
      assert_memory_equal(got, v, l);
    }
    check_ok(f->tree);
    reopen(f);
  }
}

/* ------------------------------------------------------------------------
** A leaf page with a key longer than max_key (valid checksum), scanned
** through the page + partial mini-page merge.
*/
static void test_cursor_long_key(void **state) {
  struct fixture *f = *state;
  char k[32], v[64];
  const uint32_t n = 3000;
  f->opts.buffer_size = 1u << 20;
  f->opts.scan_promote_percent = 0;
  f->opts.read_promote_percent = 0;
  f->opts.read_admission = false; /* no read is cached */
  open_tree(f);
  for (uint32_t i = 0; i < n; i++)
    assert_int_equal(bf_put(f->tree, k, key_of(i, k), v, value_of(i, 0, v)),
                     BF_OK);
  reopen(f);

  /* The leaf holding key1500: its page number and fences. */
  bf_tree *t = f->tree;
  uint32_t ps = t->page_size, id;
  struct bf_leaf_entry *e;
  size_t kl = key_of(1500, k);
  assert_int_equal(bf_tree_latch_leaf(t, (const uint8_t *)k, (uint32_t)kl,
                                      BF_FIND_KEY, false, &id, &e),
                   BF_OK);
  uint64_t pageno = e->disk_page;
  uint8_t *page = bf_malloc_aligned(4096, ps), *crafted = bf_malloc_aligned(4096, ps);
  struct bf_leaf leaf, cl;
  assert_int_equal(bf_tree_read_leaf(t, e, page, &leaf), BF_OK);
  bf_unlatch_shared(&e->latch);
  size_t max_key = bf_max_key_size(t);
  assert_non_null(leaf.low);
  assert_non_null(leaf.high);
  assert_true(leaf.prefix_len > 0);
  assert_int_equal(bf_close(f->tree), BF_OK);
  f->tree = NULL;

  /* Same fences, one record: low fence + 2 * max_key zero bytes. */
  bf_leaf_init(crafted, ps, leaf.low, leaf.low_len, leaf.high, leaf.high_len,
               &cl);
  uint32_t long_len = (uint32_t)(leaf.low_len + 2 * max_key);
  uint8_t *longkey = calloc(1, long_len);
  memcpy(longkey, leaf.low, leaf.low_len);
  assert_int_equal(bf_node_append(cl.node, longkey + cl.prefix_len,
                                  long_len - cl.prefix_len, BF_REC_INSERT,
                                  (const uint8_t *)"x", 1, false),
                   BF_OK);
  bf_leaf_seal(crafted, ps, pageno, 0);
  struct bf_leaf check;
  assert_int_equal(bf_leaf_verify(crafted, ps, pageno, &check, NULL, 0),
                   BF_OK);
  int fd = open(f->path, O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, crafted, ps, (off_t)(pageno * ps)), (ssize_t)ps);
  close(fd);

  open_tree(f);
  /* A dirty record in that leaf: the cursor merges page and mini-page. */
  char lowkey[600];
  memcpy(lowkey, leaf.low, leaf.low_len);
  assert_int_equal(bf_put(f->tree, lowkey, leaf.low_len, "y", 1), BF_OK);
  bf_cursor *c;
  assert_int_equal(bf_cursor_open(f->tree, &c), BF_OK);
  bf_bound lo = {lowkey, leaf.low_len, true};
  assert_int_equal(bf_cursor_seek(c, &lo, NULL, false), BF_CORRUPT);
  bf_cursor_close(c);
  bf_abandon(f->tree);
  f->tree = NULL;
  free(longkey);
  bf_free_aligned(page);
  bf_free_aligned(crafted);
}

/* ------------------------------------------------------------------------
** A writer inside bf_put when an eviction merge fails elsewhere.
*/
#ifdef BF_TESTING
struct writer_arg {
  bf_tree *tree;
  _Atomic int rc;
  _Atomic int done;
};

static void *writer_main(void *p) {
  struct writer_arg *a = p;
  static uint8_t big[4096];
  memset(big, 'b', sizeof big);
  size_t vlen = bf_max_record_size(a->tree) - 1;
  int rc = bf_put(a->tree, "~", 1, big, vlen);
  atomic_store(&a->rc, rc);
  atomic_store(&a->done, 1);
  return NULL;
}

static void test_writer_after_evict_error(void **state) {
  struct fixture *f = *state;
  char k[32], v[64];
  const uint32_t n = 4000;
  f->opts.page_size = 4096;
  f->opts.buffer_size = 16u * (4096 + 8) + 4096;
  f->opts.read_promote_percent = 0;
  f->opts.read_admission = false; /* no read is cached */
  f->opts.scan_promote_percent = 0;
  open_tree(f);
  for (uint32_t i = 0; i < n; i++)
    assert_int_equal(bf_put(f->tree, k, key_of(i, k), v, value_of(i, 0, v)),
                     BF_OK);
  reopen(f); /* empty buffer; the leaf of "~" (the last one) has no mini */

  bf_tree *t = f->tree;
  uint32_t id_last, id_mid;
  struct bf_leaf_entry *e;
  assert_int_equal(bf_tree_latch_leaf(t, (const uint8_t *)"~", 1, BF_FIND_KEY,
                                      false, &id_last, &e),
                   BF_OK);
  bf_unlatch_shared(&e->latch);
  /* Fill the buffer with dirty mini-pages of other leaves (same-size
  ** updates: no split, the last leaf stays without a mini-page). */
  uint32_t i = 0;
  for (long round = 0; round < 200000; round++, i = (i + 7919) % (n / 2)) {
    assert_int_equal(bf_put(t, k, key_of(i, k), v, value_of(i, 1, v)), BF_OK);
    if (round > 1000 && bf_buf_needs_eviction(t->buf, t->full_class)) break;
  }
  assert_true(bf_buf_needs_eviction(t->buf, t->full_class));
  assert_int_equal(bf_tree_latch_leaf(t, (const uint8_t *)k, (uint32_t)strlen(k),
                                      BF_FIND_KEY, false, &id_mid, &e),
                   BF_OK);
  bf_unlatch_shared(&e->latch);
  assert_true(id_mid != id_last);
  e = bf_map_get(t->map, id_last);
  assert_null(atomic_load(&e->mini));

  /* Park a writer after its entry checks: it waits for the gate. */
  struct writer_arg a = {t, -1, 0};
  pthread_t th;
  bf_gate_exclusive(&t->checkpoint_gate);
  assert_int_equal(pthread_create(&th, NULL, writer_main, &a), 0);
  struct timespec nap = {0, 200 * 1000 * 1000};
  nanosleep(&nap, NULL);

  /* An eviction merge fails: the tree enters its error state and the
  ** block stays claimed. */
  static uint8_t *pages_held[64];
  size_t npages = 0;
  int rc = BF_OK;
  bf_faultsim_set(BF_FAULT_WRITE, 1, true);
  /* Evict until a dirty block is reached: each round takes the room it
  ** made (held NOT_READY), so the next round must evict further. */
  while (rc == BF_OK && npages < 64) {
    rc = bf_tree_evict(t, t->full_class);
    if (rc == BF_OK &&
        bf_buf_alloc(t->buf, t->full_class, 0, &pages_held[npages]) == BF_OK)
      npages++;
  }
  bf_faultsim_set(BF_FAULT_WRITE, 0, false);
  while (npages > 0) bf_buf_abort(t->buf, pages_held[--npages]);
  assert_int_equal(rc, BF_IOERR);
  /* Use up the room at the tail (small blocks, released at once). */
  static uint8_t *held[4096];
  size_t nheld = 0;
  while (nheld < 4096 && bf_buf_alloc(t->buf, 0, 0, &held[nheld]) == BF_OK)
    nheld++;
  while (nheld > 0) bf_buf_abort(t->buf, held[--nheld]);
  uint32_t wclass = bf_buf_class_for(
      t->buf, BF_NODE_HEADER + bf_record_space(1, (uint32_t)bf_max_record_size(t) - 1));
  if (!bf_buf_needs_eviction(t->buf, wclass)) {
    bf_gate_release(&t->checkpoint_gate);
    pthread_join(th, NULL);
    bf_abandon(t);
    f->tree = NULL;
    skip(); /* a free block of the writer's class: setup did not work */
  }
  bf_gate_release(&t->checkpoint_gate);

  /* The writer must come back (with an error) within a few seconds. */
  for (int w = 0; w < 100 && !atomic_load(&a.done); w++) {
    struct timespec ms = {0, 100 * 1000 * 1000};
    nanosleep(&ms, NULL);
  }
  if (!atomic_load(&a.done)) {
    f->tree = NULL; /* still in use by the looping writer: leak it */
    fail_msg("bf_put loops forever after an eviction merge failed");
  }
  pthread_join(th, NULL);
  assert_int_not_equal(a.rc, BF_OK);
  assert_int_equal(bf_put(t, "a", 1, "b", 1), BF_READONLY);
  bf_abandon(t);
  f->tree = NULL;
}
#else
static void test_writer_after_evict_error(void **state) {
  (void)state;
  skip();
}
#endif

/* ------------------------------------------------------------------------
** Cursors against concurrent splits.
*/
struct split_arg {
  bf_tree *tree;
  uint32_t n;
  uint64_t seed;
  atomic_bool stop;
  _Atomic int rc;
};

static void *splitter_main(void *p) {
  struct split_arg *a = p;
  uint64_t s = a->seed;
  char k[32], v[200];
  memset(v, 'o', sizeof v);
  while (!atomic_load(&a->stop)) {
    uint32_t i = (uint32_t)(test_rand(&s) % a->n) * 2 + 1; /* odd keys only */
    size_t kl = key_of(i, k);
    int rc = test_rand(&s) % 4 == 0
                 ? bf_delete(a->tree, k, kl)
                 : bf_put(a->tree, k, kl, v, 20 + test_rand(&s) % 150);
    if (rc != BF_OK) {
      atomic_store(&a->rc, rc);
      break;
    }
  }
  return NULL;
}

static void test_cursor_concurrent_splits(void **state) {
  struct fixture *f = *state;
  char k[32], v[64];
  const uint32_t n = (uint32_t)test_scale(3000);
  uint64_t seed = test_seed("cursor_concurrent_splits");
  f->opts.page_size = 1024;
  f->opts.buffer_size = 64u << 10;
  f->opts.scan_promote_percent = 50;
  f->opts.read_promote_percent = 30;
  open_tree(f);
  for (uint32_t i = 0; i < n; i++)
    assert_int_equal(
        bf_put(f->tree, k, key_of(2 * i, k), v, value_of(2 * i, 0, v)),
        BF_OK);
  struct split_arg a = {f->tree, n, seed, false, BF_OK};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, splitter_main, &a), 0);
  bf_cursor *c;
  assert_int_equal(bf_cursor_open(f->tree, &c), BF_OK);
  uint64_t s = seed ^ 0x5555;
  long rounds = test_scale(60);
  for (long r = 0; r < rounds; r++) {
    bool desc = r % 2;
    uint32_t lo_i = (uint32_t)(test_rand(&s) % n), hi_i = (uint32_t)(test_rand(&s) % n);
    if (lo_i > hi_i) {
      uint32_t x = lo_i;
      lo_i = hi_i;
      hi_i = x;
    }
    char lo[32], hi[32];
    size_t lol = key_of(2 * lo_i, lo), hil = key_of(2 * hi_i, hi);
    bf_bound l = {lo, lol, true}, u = {hi, hil, true};
    bool bounded = r % 3 != 0;
    uint32_t expect = desc ? (bounded ? hi_i : n - 1) : (bounded ? lo_i : 0);
    uint32_t seen = 0;
    char prev[64];
    size_t prevl = 0;
    int rc;
    for (rc = bf_cursor_seek(c, bounded ? &l : NULL, bounded ? &u : NULL, desc);
         rc == BF_OK; rc = bf_cursor_next(c)) {
      const void *kp, *vp;
      size_t kl, vl;
      bf_cursor_key(c, &kp, &kl);
      bf_cursor_value(c, &vp, &vl);
      if (prevl) {
        int cmp = bf_key_compare(kp, kl, (const uint8_t *)prev, prevl);
        if (desc ? cmp >= 0 : cmp <= 0)
          fail_msg("round %ld: keys out of order or repeated", r);
      }
      memcpy(prev, kp, kl);
      prevl = kl;
      uint32_t num = (uint32_t)strtoul((const char *)kp + 3, NULL, 10);
      if (num % 2) continue; /* a writer's key */
      if (num != 2 * expect)
        fail_msg("round %ld (%s): expected key %u, got %u", r,
                 desc ? "desc" : "asc", 2 * expect, num);
      size_t want_l = value_of(num, 0, v);
      assert_int_equal(vl, want_l);
      assert_memory_equal(vp, v, want_l);
      seen++;
      expect += desc ? (uint32_t)-1 : 1u;
    }
    assert_int_equal(rc, BF_DONE);
    uint32_t want = bounded ? hi_i - lo_i + 1 : n;
    if (seen != want)
      fail_msg("round %ld: saw %u stable keys of %u", r, seen, want);
  }
  bf_cursor_close(c);
  atomic_store(&a.stop, true);
  pthread_join(th, NULL);
  assert_int_equal(a.rc, BF_OK);
  bf_stats st;
  bf_stats_get(f->tree, &st);
  assert_true(st.splits > 0);
  check_ok(f->tree);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_scan_promotion_clean, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cursor_concurrent_splits, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_writer_after_evict_error, setup,
                                      teardown),
      /* Last: before the fix its overflow corrupts the heap. */
      cmocka_unit_test_setup_teardown(test_cursor_long_key, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
