/*
** test_model.c: randomized model test of the whole engine.
**
** Mixed puts, gets, deletes and range scans (both directions, random
** inclusive/exclusive/unbounded bounds) run against the tree and against a
** reference model: an array indexed by key number (keys are
** "user:" + 4-byte big-endian number + 0..6 filler bytes, so key order is
** number order).  The buffer is a small fraction of the data, so eviction,
** merges, splits and promotions all happen; the statistics are asserted to
** show it.  The tree is closed and reopened in the middle, and bf_check runs
** at every reopen.  One run per I/O path: io_uring + O_DIRECT, pread/pwrite
** + O_DIRECT, and buffered.
**
** The seed is printed; BF_TEST_SEED=<n> replays.  BF_TEST_SCALE scales the
** operation counts (percent).
*/
#include "test_util.h"

#include "bftree.h"

#define KEY_MAX 16
#define VALUE_MAX 200

struct model {
  uint32_t keys;        /* key numbers 0..keys-1 */
  uint32_t *version;    /* 0 = absent, else version of the value */
  uint16_t *length;     /* value length */
  uint64_t live;
};

static size_t make_key(uint32_t n, uint8_t *k) {
  memcpy(k, "user:", 5);
  k[5] = (uint8_t)(n >> 24);
  k[6] = (uint8_t)(n >> 16);
  k[7] = (uint8_t)(n >> 8);
  k[8] = (uint8_t)n;
  size_t extra = n % 7;
  memset(k + 9, 'x', extra);
  return 9 + extra;
}

static void make_value(uint32_t n, uint32_t version, size_t len, uint8_t *v) {
  uint64_t s = ((uint64_t)n << 32) ^ version;
  for (size_t i = 0; i < len; i++) {
    if (i % 8 == 0) s = s * 6364136223846793005ull + 1442695040888963407ull;
    v[i] = (uint8_t)(s >> (8 * (i % 8)));
  }
}

/* Key number of the smallest model key >= bound (or > when !inclusive). */
static uint32_t model_lower(const struct model *m, const uint8_t *b, size_t blen,
                            bool inclusive) {
  uint8_t k[KEY_MAX];
  /* bounds are built from a key number; start just below it */
  uint32_t n = blen >= 9 ? ((uint32_t)b[5] << 24 | (uint32_t)b[6] << 16 |
                            (uint32_t)b[7] << 8 | b[8])
                         : 0;
  if (n > 0) n--;
  for (; n < m->keys; n++) {
    size_t kl = make_key(n, k);
    size_t c = kl < blen ? kl : blen;
    int r = memcmp(k, b, c);
    if (r == 0) r = kl < blen ? -1 : (kl > blen ? 1 : 0);
    if (r > 0 || (r == 0 && inclusive)) break;
  }
  return n;
}

static int cmp_key_bound(uint32_t n, const uint8_t *b, size_t blen) {
  uint8_t k[KEY_MAX];
  size_t kl = make_key(n, k);
  size_t c = kl < blen ? kl : blen;
  int r = memcmp(k, b, c);
  if (r == 0) r = kl < blen ? -1 : (kl > blen ? 1 : 0);
  return r;
}

/* A random bound near key number n: the key itself, or a key just below or
** above it (a prefix of it, or it with an extra byte). */
static size_t make_bound(uint32_t n, uint64_t *rs, uint8_t *b) {
  size_t len = make_key(n, b);
  switch (test_rand(rs) % 4) {
    case 0: return len;
    case 1: return 9;                /* the number alone: <= the key */
    case 2: b[len] = 0; return len + 1; /* just above the key */
    default: b[len] = 0xff; return len + 1;
  }
}

struct run_config {
  const char *name;
  int io_mode;
  int direct;
  long ops;
  uint32_t keys;
  uint32_t page_size;
  uint64_t buffer;
  bool admission;   /* read_admission (else read_promote_percent) */
};

static void check_tree(bf_tree *t) {
  char *err = NULL;
  int rc = bf_check(t, &err);
  if (rc != BF_OK) fail_msg("bf_check: %s: %s", bf_strerror(rc), err ? err : "");
  free(err);
}

static void verify_scan(bf_tree *t, bf_cursor *c, const struct model *m,
                        uint64_t *rs) {
  uint8_t lo[KEY_MAX + 1], hi[KEY_MAX + 1];
  bf_bound lower = {0}, upper = {0};
  bool has_lo = test_rand(rs) % 5 != 0, has_hi = test_rand(rs) % 5 != 0;
  bool desc = test_rand(rs) % 2;
  uint32_t a = (uint32_t)(test_rand(rs) % m->keys);
  uint32_t span = (uint32_t)(test_rand(rs) % 400);
  uint32_t b = a + span < m->keys ? a + span : m->keys - 1;
  if (has_lo) {
    lower.key = lo;
    lower.key_len = make_bound(a, rs, lo);
    lower.inclusive = test_rand(rs) % 2;
  }
  if (has_hi) {
    upper.key = hi;
    upper.key_len = make_bound(b, rs, hi);
    upper.inclusive = test_rand(rs) % 2;
  }
  int limit = 1 + (int)(test_rand(rs) % 150);
  /* A row hint (read-ahead) on two scans in three; never changes results. */
  bf_cursor_hint(c, test_rand(rs) % 3 ? 1 + test_rand(rs) % 300 : 0);
  int rc = bf_cursor_seek(c, has_lo ? &lower : NULL, has_hi ? &upper : NULL, desc);
  /* Walk the model in the same direction. */
  int64_t n;
  if (!desc) {
    n = has_lo ? model_lower(m, lo, lower.key_len, lower.inclusive) : 0;
  } else {
    n = m->keys - 1;
    if (has_hi) {
      uint32_t first_above = model_lower(m, hi, upper.key_len, !upper.inclusive);
      n = (int64_t)first_above - 1;
    }
  }
  for (int step = 0; step < limit; step++) {
    /* next live model key in range */
    while (n >= 0 && n < m->keys && !m->version[n]) n += desc ? -1 : 1;
    bool in_range = n >= 0 && n < m->keys;
    if (in_range && !desc && has_hi) {
      int r = cmp_key_bound((uint32_t)n, hi, upper.key_len);
      in_range = r < 0 || (r == 0 && upper.inclusive);
    }
    if (in_range && desc && has_lo) {
      int r = cmp_key_bound((uint32_t)n, lo, lower.key_len);
      in_range = r > 0 || (r == 0 && lower.inclusive);
    }
    if (!in_range) {
      if (rc != BF_DONE) {
        const void *kp;
        size_t kl;
        bf_cursor_key(c, &kp, &kl);
        fail_msg("scan (%s) returned a key past the model's end (rc %d, key len %zu)",
                 desc ? "desc" : "asc", rc, kl);
      }
      return;
    }
    if (rc != BF_OK)
      fail_msg("scan (%s): %s where the model has key %lld", desc ? "desc" : "asc",
               bf_strerror(rc), (long long)n);
    const void *kp, *vp;
    size_t kl, vl;
    uint8_t want[KEY_MAX], wv[VALUE_MAX];
    size_t wl = make_key((uint32_t)n, want);
    bf_cursor_key(c, &kp, &kl);
    bf_cursor_value(c, &vp, &vl);
    if (kl != wl || memcmp(kp, want, wl) != 0)
      fail_msg("scan (%s): got key #%u, model says #%lld", desc ? "desc" : "asc",
               kl >= 9 ? (unsigned)((const uint8_t *)kp)[5] << 24 | ((const uint8_t *)kp)[6] << 16 |
                             ((const uint8_t *)kp)[7] << 8 | ((const uint8_t *)kp)[8]
                       : 0u,
               (long long)n);
    make_value((uint32_t)n, m->version[n], m->length[n], wv);
    assert_int_equal(vl, m->length[n]);
    assert_memory_equal(vp, wv, vl);
    n += desc ? -1 : 1;
    rc = bf_cursor_next(c);
  }
  (void)t;
}

static void run_model(const struct run_config *cfg) {
  char name[64];
  snprintf(name, sizeof name, "model/%s", cfg->name);
  uint64_t seed = test_seed(name);
  uint64_t rs = seed;
  char *dir = test_tmpdir();
  char path[600];
  snprintf(path, sizeof path, "%s/model.bf", dir);
  bf_options o;
  bf_options_init(&o);
  o.io_mode = cfg->io_mode;
  o.direct_io = cfg->direct;
  o.page_size = cfg->page_size;
  o.buffer_size = cfg->buffer;
  o.read_promote_percent = 20;
  o.read_admission = cfg->admission;
  o.scan_promote_percent = 30;
  o.seed = seed | 1;
  o.synchronous = BF_SYNC_NORMAL; /* logged, without an fsync per write */
  bf_tree *t = NULL;
  char *err = NULL;
  int rc = bf_open(path, &o, &t, &err);
  if (rc != BF_OK) fail_msg("open: %s", err);

  struct model m = {cfg->keys, calloc(cfg->keys, 4), calloc(cfg->keys, 2), 0};
  bf_cursor *c = NULL;
  assert_int_equal(bf_cursor_open(t, &c), BF_OK);
  uint8_t k[KEY_MAX], v[VALUE_MAX], got[VALUE_MAX];
  long reopen_at = cfg->ops / 3, reopen2 = 2 * cfg->ops / 3;
  uint64_t totals[4] = {0};
  bf_stats before_reopen;
  memset(&before_reopen, 0, sizeof before_reopen);

  for (long op = 0; op < cfg->ops; op++) {
    /* Skewed keys: half the operations on the first 5% of keys. */
    uint32_t n = (uint32_t)(test_rand(&rs) % cfg->keys);
    if (test_rand(&rs) % 2) n = (uint32_t)(test_rand(&rs) % (cfg->keys / 20 + 1));
    size_t kl = make_key(n, k);
    unsigned what = (unsigned)(test_rand(&rs) % 100);
    if (what < 40) {
      size_t vl = (size_t)(test_rand(&rs) % 4 == 0 ? test_rand(&rs) % VALUE_MAX
                                                   : test_rand(&rs) % 24);
      uint32_t ver = (uint32_t)op + 1;
      make_value(n, ver, vl, v);
      rc = bf_put(t, k, kl, v, vl);
      if (rc != BF_OK) fail_msg("op %ld put #%u: %s", op, n, bf_strerror(rc));
      if (!m.version[n]) m.live++;
      m.version[n] = ver;
      m.length[n] = (uint16_t)vl;
      totals[0]++;
    } else if (what < 75) {
      size_t vl = 0;
      rc = bf_get(t, k, kl, got, sizeof got, &vl);
      if (m.version[n]) {
        if (rc != BF_OK) fail_msg("op %ld get #%u: %s, model has it", op, n, bf_strerror(rc));
        make_value(n, m.version[n], m.length[n], v);
        if (vl != m.length[n] || memcmp(got, v, vl) != 0)
          fail_msg("op %ld get #%u: wrong value (len %zu, want %u)", op, n, vl, m.length[n]);
      } else if (rc != BF_NOTFOUND) {
        fail_msg("op %ld get #%u: %s, model has no such key", op, n, bf_strerror(rc));
      }
      totals[1]++;
    } else if (what < 90) {
      rc = bf_delete(t, k, kl);
      if (rc != BF_OK) fail_msg("op %ld delete: %s", op, bf_strerror(rc));
      if (m.version[n]) m.live--;
      m.version[n] = 0;
      totals[2]++;
    } else {
      verify_scan(t, c, &m, &rs);
      totals[3]++;
    }
    if (op == reopen_at || op == reopen2) {
      bf_cursor_close(c);
      check_tree(t);
      bf_stats_get(t, &before_reopen);
      assert_int_equal(bf_close(t), BF_OK);
      rc = bf_open(path, &o, &t, &err);
      if (rc != BF_OK) fail_msg("reopen: %s", err);
      check_tree(t);
      assert_int_equal(bf_cursor_open(t, &c), BF_OK);
    }
  }
  /* Every key, both ways. */
  for (uint32_t n = 0; n < m.keys; n++) {
    size_t kl = make_key(n, k), vl = 0;
    rc = bf_get(t, k, kl, got, sizeof got, &vl);
    assert_int_equal(rc, m.version[n] ? BF_OK : BF_NOTFOUND);
  }
  uint64_t count = 0;
  for (rc = bf_cursor_seek(c, NULL, NULL, false); rc == BF_OK; rc = bf_cursor_next(c))
    count++;
  assert_int_equal(rc, BF_DONE);
  assert_int_equal(count, m.live);

  bf_stats st;
  bf_stats_get(t, &st);
  printf("[ STATS    ] %s: ops put %llu get %llu del %llu scan %llu; live keys %llu; "
         "leaves %llu height %u; hits %llu misses %llu; merges %llu splits %llu "
         "evictions %llu copy-on-access %llu promotions %llu phantoms %llu page "
         "promotions %llu; admission %s refused %llu; io %s direct %llu\n",
         cfg->name, (unsigned long long)totals[0], (unsigned long long)totals[1],
         (unsigned long long)totals[2], (unsigned long long)totals[3],
         (unsigned long long)m.live, (unsigned long long)st.leaf_pages, st.tree_height,
         (unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses,
         (unsigned long long)st.merges, (unsigned long long)st.splits,
         (unsigned long long)st.evictions, (unsigned long long)st.copy_on_access,
         (unsigned long long)st.record_promotions, (unsigned long long)st.phantoms,
         (unsigned long long)st.page_promotions, o.read_admission ? "on" : "off",
         (unsigned long long)st.admissions_refused,
         st.io_mode == BF_IO_URING ? "uring" : "psync", (unsigned long long)st.direct_io);
  /* The machinery under test really ran (counters restart at each open, so
  ** look at the last third of the run). */
  assert_true(st.merges > 0);
  assert_true(st.splits > 0 || before_reopen.splits > 0);
  assert_true(st.evictions > 0);
  assert_true(st.record_promotions > 0);
  assert_true(st.phantoms > 0);
  assert_true(st.page_promotions > 0);
  assert_true(st.cache_hits > 0 && st.cache_misses > 0);
  if (cfg->ops >= 100000) assert_true(st.copy_on_access > 0);
  if (cfg->io_mode == BF_IO_URING) assert_int_equal(st.io_mode, BF_IO_URING);
  if (cfg->io_mode == BF_IO_PSYNC) assert_int_equal(st.io_mode, BF_IO_PSYNC);
  if (cfg->direct == BF_DIRECT_OFF) assert_int_equal(st.direct_io, 0);
  if (cfg->direct == BF_DIRECT_ON) assert_int_equal(st.direct_io, 1);
  check_tree(t);
  bf_cursor_close(c);
  assert_int_equal(bf_close(t), BF_OK);
  free(m.version);
  free(m.length);
  test_rmdir(dir);
}

static void test_model_uring_direct(void **state) {
  (void)state;
  struct run_config cfg = {"uring+direct", BF_IO_URING, BF_DIRECT_ON,
                           test_scale(1000000), 60000, 4096, 256 << 10, true};
  run_model(&cfg);
}

static void test_model_psync_direct(void **state) {
  (void)state;
  struct run_config cfg = {"psync+direct", BF_IO_PSYNC, BF_DIRECT_ON,
                           test_scale(250000), 30000, 4096, 128 << 10, false};
  run_model(&cfg);
}

static void test_model_buffered_small_pages(void **state) {
  (void)state;
  struct run_config cfg = {"buffered/1KiB pages", BF_IO_AUTO, BF_DIRECT_OFF,
                           test_scale(250000), 30000, 1024, 64 << 10, true};
  run_model(&cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_model_uring_direct),
      cmocka_unit_test(test_model_psync_direct),
      cmocka_unit_test(test_model_buffered_small_pages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
