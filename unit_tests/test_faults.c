/*
** test_faults.c: the whole tree under injected faults, SQLite-style: for
** N = 1, 2, ..., fail the Nth allocation / read / write / fsync during a
** workload of puts, deletes, gets, scans and checkpoints.  Every call must
** return a status (never crash or hang); writes acknowledged with BF_OK
** must all be there after the tree is abandoned (a crash) and reopened
** without faults; nothing may leak (run under `make asan`).  Also: page
** reuse (overwriting the same keys again and again does not grow the file).
*/
#include "test_util.h"

#include "bftree.h"
#include "bf_int.h"

#define KEYS 600

static void key_of(int i, char *k, size_t *len) {
  *len = (size_t)snprintf(k, 32, "key%05d", i);
}

/* One faulty session.  acked[i] gets the version of key i acknowledged
** (0 = deleted/absent); *evictions grows by the session's evictions
** under the fault.
** Returns the number of calls that failed.  The buffer is near the
** minimum (16 pages).  Without after_fill the fault is armed before
** bf_open (open and recovery run under it); with it, puts without faults
** first fill the buffer until it evicts, so that the faults then land in
** eviction's merges (armed at open, a fault with a small N ends the
** session before the buffer fills). */
static int faulty_session(const char *path, enum bf_fault fault, long n,
                          bool after_fill, int *acked, uint64_t *rs,
                          uint64_t *evictions) {
  bf_options o;
  bf_options_init(&o);
  o.buffer_size = 20 << 10;
  o.page_size = 1024;
  o.wal_size_limit = 32 << 10;
  o.synchronous = BF_SYNC_FULL;
  bf_tree *t = NULL;
  char *err = NULL;
  /* persistent: every later call fails */
  if (!after_fill) bf_faultsim_set(fault, n, true);
  int rc = bf_open(path, &o, &t, &err);
  free(err);
  int failures = 0;
  if (rc != BF_OK) {
    bf_faultsim_set(fault, 0, false);
    return 1;
  }
  char k[32], v[64], buf[64];
  size_t kl, vl;
  bf_stats st;
  for (int j = 0; after_fill && j < 20 * KEYS; j++) {
    bf_stats_get(t, &st);
    if (st.evictions > 0) break;
    int i = (int)(test_rand(rs) % KEYS);
    int ver = 500 + j % 400;
    key_of(i, k, &kl);
    int l = snprintf(v, sizeof v, "v%d-%0*d", i, 1 + i % 30, ver);
    assert_int_equal(bf_put(t, k, kl, v, (size_t)l), BF_OK);
    acked[i] = ver;
  }
  uint64_t armed_at = 0; /* evictions before the fault was armed */
  if (after_fill) {
    bf_stats_get(t, &st);
    armed_at = st.evictions;
    bf_faultsim_set(fault, n, true);
  }
  bf_cursor *c = NULL;
  for (int op = 0; op < 400; op++) {
    int i = (int)(test_rand(rs) % KEYS);
    int what = (int)(test_rand(rs) % 10);
    key_of(i, k, &kl);
    if (what < 5) {
      int ver = op + 1000;
      int l = snprintf(v, sizeof v, "v%d-%0*d", i, 1 + i % 30, ver);
      rc = bf_put(t, k, kl, v, (size_t)l);
      if (rc == BF_OK) acked[i] = ver;
    } else if (what < 6) {
      rc = bf_delete(t, k, kl);
      if (rc == BF_OK) acked[i] = 0;
    } else if (what < 8) {
      rc = bf_get(t, k, kl, buf, sizeof buf, &vl);
      if (rc == BF_NOTFOUND) rc = BF_OK;
    } else if (what < 9) {
      if (!c && bf_cursor_open(t, &c) != BF_OK) {
        failures++;
        continue;
      }
      int steps = 0;
      for (rc = bf_cursor_seek(c, NULL, NULL, test_rand(rs) % 2); rc == BF_OK && steps < 50;
           rc = bf_cursor_next(c))
        steps++;
      if (rc == BF_DONE) rc = BF_OK;
    } else {
      rc = bf_checkpoint(t);
    }
    if (rc != BF_OK) {
      failures++;
      /* a failed write may or may not have reached the log: unknown */
      if (what < 6) acked[i] = -1;
    }
  }
  if (c) bf_cursor_close(c);
  bf_stats_get(t, &st);
  *evictions += st.evictions - armed_at;
  bf_abandon(t);
  bf_faultsim_set(fault, 0, false);
  return failures;
}

static void verify(const char *path, const int *acked) {
  bf_options o;
  bf_options_init(&o);
  o.buffer_size = 72 << 10;
  o.page_size = 1024; /* if it creates the file (no session opened it) */
  bf_tree *t = NULL;
  char *err = NULL;
  int rc = bf_open(path, &o, &t, &err);
  if (rc != BF_OK) fail_msg("reopen after faults: %s", err ? err : bf_strerror(rc));
  char k[32], v[64], buf[64];
  size_t kl, vl;
  for (int i = 0; i < KEYS; i++) {
    if (acked[i] < 0) continue; /* unknown outcome */
    key_of(i, k, &kl);
    rc = bf_get(t, k, kl, buf, sizeof buf, &vl);
    if (acked[i] == 0) {
      if (rc != BF_NOTFOUND) fail_msg("key %d: deleted or never written, but %s", i, bf_strerror(rc));
    } else {
      int l = snprintf(v, sizeof v, "v%d-%0*d", i, 1 + i % 30, acked[i]);
      if (rc != BF_OK) fail_msg("key %d: acknowledged write lost (%s)", i, bf_strerror(rc));
      if (vl != (size_t)l || memcmp(buf, v, vl) != 0)
        fail_msg("key %d: wrong value after recovery", i);
    }
  }
  rc = bf_check(t, &err);
  if (rc != BF_OK) fail_msg("bf_check after faults: %s", err);
  assert_int_equal(bf_close(t), BF_OK);
}

static void run_fault(enum bf_fault fault, const char *name, long max_n) {
  char *dir = test_tmpdir();
  char path[600];
  snprintf(path, sizeof path, "%s/f.bf", dir);
  uint64_t rs = test_seed(name);
  int *acked = calloc(KEYS, sizeof *acked);
  long step = max_n > 60 ? max_n / 60 : 1;
  int total_failures = 0;
  uint64_t evictions = 0;
  for (long n = 1; n <= max_n; n += step) {
    total_failures += faulty_session(path, fault, n, (n / step) % 2 == 1,
                                     acked, &rs, &evictions);
    verify(path, acked);
    /* unknown outcomes become known after verify: read them back */
    bf_options o;
    bf_options_init(&o);
    o.buffer_size = 72 << 10;
    o.page_size = 1024;
    bf_tree *t;
    assert_int_equal(bf_open(path, &o, &t, NULL), BF_OK);
    for (int i = 0; i < KEYS; i++) {
      if (acked[i] >= 0) continue;
      char k[32], buf[64];
      size_t kl, vl;
      key_of(i, k, &kl);
      int rc = bf_get(t, k, kl, buf, sizeof buf - 1, &vl);
      acked[i] = 0;
      if (rc == BF_OK) {
        buf[vl] = 0;
        acked[i] = atoi(strrchr(buf, '-') + 1);
      }
    }
    assert_int_equal(bf_close(t), BF_OK);
  }
  printf("[ FAULTS   ] %s: %d failed calls over %ld runs (%llu evictions), "
         "all recovered\n", name, total_failures, (max_n + step - 1) / step,
         (unsigned long long)evictions);
  assert_true(total_failures > 0); /* the faults really fired */
  assert_true(evictions > 0);      /* and eviction ran while armed */
  free(acked);
  test_rmdir(dir);
}

static void test_fault_malloc(void **s) { (void)s; run_fault(BF_FAULT_MALLOC, "malloc", test_scale(3000)); }
static void test_fault_write(void **s) { (void)s; run_fault(BF_FAULT_WRITE, "write", test_scale(300)); }
static void test_fault_read(void **s) { (void)s; run_fault(BF_FAULT_READ, "read", test_scale(600)); }
static void test_fault_sync(void **s) { (void)s; run_fault(BF_FAULT_SYNC, "sync", test_scale(300)); }

/* Overwriting the same keys with checkpoints in between reuses pages. */
static void test_page_reuse(void **state) {
  (void)state;
  char *dir = test_tmpdir();
  char path[600];
  snprintf(path, sizeof path, "%s/r.bf", dir);
  bf_options o;
  bf_options_init(&o);
  o.buffer_size = 72 << 10;
  o.synchronous = BF_SYNC_OFF;
  bf_tree *t;
  assert_int_equal(bf_open(path, &o, &t, NULL), BF_OK);
  char k[32], v[128];
  size_t kl;
  uint64_t pages_after_first = 0;
  for (int round = 0; round < 8; round++) {
    for (int i = 0; i < 5000; i++) {
      key_of(i, k, &kl);
      int l = snprintf(v, sizeof v, "round %d value %d ........................", round, i);
      assert_int_equal(bf_put(t, k, kl, v, (size_t)l), BF_OK);
    }
    assert_int_equal(bf_checkpoint(t), BF_OK);
    bf_stats st;
    bf_stats_get(t, &st);
    if (round == 1) pages_after_first = st.file_pages;
    if (round > 1 && st.file_pages > pages_after_first + pages_after_first / 4)
      fail_msg("file grows: %llu pages after round %d, %llu after round 1",
               (unsigned long long)st.file_pages, round,
               (unsigned long long)pages_after_first);
  }
  assert_int_equal(bf_close(t), BF_OK);
  test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fault_malloc),
      cmocka_unit_test(test_fault_write),
      cmocka_unit_test(test_fault_read),
      cmocka_unit_test(test_fault_sync),
      cmocka_unit_test(test_page_reuse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
