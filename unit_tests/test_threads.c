/*
** test_threads.c: many threads on one tree.
**
** Writer threads each own a disjoint key range (keys "d" + thread + number)
** and also write a shared range (keys "s" + number) that every writer
** overwrites.  Values encode (key, thread, sequence) and are checked on
** every read.  Meanwhile reader threads look keys up and scan in both
** directions, checking order, range and value integrity, and that a key's
** sequence number never goes backwards for a single-writer key.  A
** checkpoint thread runs bf_checkpoint now and then.  The buffer is small,
** so eviction, merges and splits run concurrently with everything else.
** At the end every owned key must hold its writer's last value, and every
** shared key the last value written by one of the writers.  Then close,
** reopen, check again.
*/
#include "test_util.h"

#include "bftree.h"

#include <pthread.h>
#include <stdatomic.h>

#define WRITERS 3
#define READERS 2

struct shared_state {
  bf_tree *tree;
  long ops;
  uint32_t owned_keys;  /* per writer */
  uint32_t shared_keys;
  uint64_t seed;
  /* last sequence written per owned key (owner writes, readers compare) */
  _Atomic uint32_t *owned_seq[WRITERS];
  uint32_t *shared_last[WRITERS]; /* per writer: its last seq per shared key */
  atomic_bool stop;
  atomic_int failures;
  char failure[256];
};

static size_t owned_key(int w, uint32_t n, uint8_t *k) {
  k[0] = 'd';
  k[1] = (uint8_t)('0' + w);
  k[2] = (uint8_t)(n >> 24);
  k[3] = (uint8_t)(n >> 16);
  k[4] = (uint8_t)(n >> 8);
  k[5] = (uint8_t)n;
  return 6;
}

static size_t shared_key(uint32_t n, uint8_t *k) {
  k[0] = 's';
  k[1] = (uint8_t)(n >> 8);
  k[2] = (uint8_t)n;
  return 3;
}

/* value: 4 seq, 1 writer, 3 checksum of (key, seq, writer), then filler */
static size_t make_value(const uint8_t *k, size_t kl, uint32_t seq, int w,
                         uint8_t *v) {
  uint32_t h = seq * 2654435761u ^ (uint32_t)w * 40503u;
  for (size_t i = 0; i < kl; i++) h = h * 31 + k[i];
  size_t len = 8 + (seq % 40);
  memcpy(v, &seq, 4);
  v[4] = (uint8_t)w;
  v[5] = (uint8_t)h;
  v[6] = (uint8_t)(h >> 8);
  v[7] = (uint8_t)(h >> 16);
  memset(v + 8, (int)(h & 0x7f), len - 8);
  return len;
}

static bool value_ok(const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
                     uint32_t *seq, int *w) {
  uint8_t want[64];
  if (vl < 8) return false;
  memcpy(seq, v, 4);
  *w = v[4];
  size_t wl = make_value(k, kl, *seq, *w, want);
  return wl == vl && memcmp(want, v, vl) == 0;
}

static void report(struct shared_state *s, const char *msg) {
  if (atomic_fetch_add(&s->failures, 1) == 0)
    snprintf(s->failure, sizeof s->failure, "%s", msg);
}

struct thread_arg {
  struct shared_state *s;
  int id;
};

static void *writer(void *p) {
  struct thread_arg *a = p;
  struct shared_state *s = a->s;
  uint64_t rs = s->seed ^ (uint64_t)(a->id + 1) * 0x9E3779B97F4A7C15ull;
  uint8_t k[8], v[64];
  for (long i = 0; i < s->ops && !atomic_load(&s->failures); i++) {
    uint32_t seq = (uint32_t)i + 1;
    uint64_t r = test_rand(&rs);
    size_t kl, vl;
    int rc;
    if (r % 3 == 0) {
      uint32_t n = (uint32_t)(test_rand(&rs) % s->shared_keys);
      kl = shared_key(n, k);
      vl = make_value(k, kl, seq, a->id, v);
      rc = bf_put(s->tree, k, kl, v, vl);
      s->shared_last[a->id][n] = seq;
    } else {
      uint32_t n = (uint32_t)(test_rand(&rs) % s->owned_keys);
      kl = owned_key(a->id, n, k);
      if (r % 11 == 1) {
        rc = bf_delete(s->tree, k, kl);
        /* Release: readers that see seq 0 after this... only compare
        ** non-zero sequences; a deleted key reads as not found. */
        atomic_store_explicit(&s->owned_seq[a->id][n], 0, memory_order_release);
      } else {
        vl = make_value(k, kl, seq, a->id, v);
        rc = bf_put(s->tree, k, kl, v, vl);
        atomic_store_explicit(&s->owned_seq[a->id][n], seq, memory_order_release);
      }
    }
    if (rc != BF_OK) {
      char msg[128];
      snprintf(msg, sizeof msg, "writer %d: %s", a->id, bf_strerror(rc));
      report(s, msg);
    }
  }
  return NULL;
}

static void *reader(void *p) {
  struct thread_arg *a = p;
  struct shared_state *s = a->s;
  uint64_t rs = s->seed ^ (uint64_t)(a->id + 100) * 0x9E3779B97F4A7C15ull;
  uint8_t k[8], v[64];
  bf_cursor *c;
  if (bf_cursor_open(s->tree, &c) != BF_OK) {
    report(s, "cursor open");
    return NULL;
  }
  while (!atomic_load(&s->stop) && !atomic_load(&s->failures)) {
    uint64_t r = test_rand(&rs);
    if (r % 4 != 0) {
      /* point read of an owned key; sequence must not be older than what
      ** the owner had published before we started the read */
      int w = (int)(test_rand(&rs) % WRITERS);
      uint32_t n = (uint32_t)(test_rand(&rs) % s->owned_keys);
      uint32_t floor_seq =
          atomic_load_explicit(&s->owned_seq[w][n], memory_order_acquire);
      size_t kl = owned_key(w, n, k), vl;
      int rc = bf_get(s->tree, k, kl, v, sizeof v, &vl);
      if (rc == BF_OK) {
        uint32_t seq;
        int ww;
        if (!value_ok(k, kl, v, vl, &seq, &ww) || ww != w) {
          report(s, "reader: damaged value");
        } else if (floor_seq && seq < floor_seq) {
          report(s, "reader: value older than one already written");
        }
      } else if (rc != BF_NOTFOUND) {
        report(s, "reader: get failed");
      }
    } else {
      /* scan a window in a random direction */
      uint8_t lo[8], hi[8];
      int w = (int)(test_rand(&rs) % WRITERS);
      uint32_t n = (uint32_t)(test_rand(&rs) % s->owned_keys);
      bf_bound lower = {lo, owned_key(w, n, lo), true};
      bf_bound upper = {hi, owned_key(w, n + 200, hi), false};
      bool desc = test_rand(&rs) % 2;
      uint8_t prev[8];
      size_t prev_len = 0;
      int count = 0;
      int rc;
      for (rc = bf_cursor_seek(c, &lower, &upper, desc); rc == BF_OK && count < 300;
           rc = bf_cursor_next(c), count++) {
        const void *kp, *vp;
        size_t kl, vl;
        uint32_t seq;
        int ww;
        bf_cursor_key(c, &kp, &kl);
        bf_cursor_value(c, &vp, &vl);
        if (kl != 6 || memcmp(kp, lo, 2) != 0) report(s, "scan: key outside range");
        if (!value_ok(kp, kl, vp, vl, &seq, &ww)) report(s, "scan: damaged value");
        if (prev_len) {
          int cmp = memcmp(prev, kp, 6);
          if (desc ? cmp <= 0 : cmp >= 0) report(s, "scan: keys out of order");
        }
        memcpy(prev, kp, 6);
        prev_len = 6;
      }
      if (rc != BF_OK && rc != BF_DONE) report(s, "scan: error");
    }
  }
  bf_cursor_close(c);
  return NULL;
}

static void *checkpointer(void *p) {
  struct shared_state *s = p;
  while (!atomic_load(&s->stop) && !atomic_load(&s->failures)) {
    usleep(50000);
    int rc = bf_checkpoint(s->tree);
    if (rc != BF_OK) report(s, "checkpoint failed");
  }
  return NULL;
}

static void verify_final(struct shared_state *s) {
  uint8_t k[8], v[64];
  for (int w = 0; w < WRITERS; w++) {
    for (uint32_t n = 0; n < s->owned_keys; n++) {
      size_t kl = owned_key(w, n, k), vl;
      uint32_t want = atomic_load(&s->owned_seq[w][n]);
      int rc = bf_get(s->tree, k, kl, v, sizeof v, &vl);
      if (want == 0) {
        /* never written, or deleted last */
        assert_int_equal(rc, BF_NOTFOUND);
      } else {
        uint32_t seq;
        int ww;
        assert_int_equal(rc, BF_OK);
        assert_true(value_ok(k, kl, v, vl, &seq, &ww));
        assert_int_equal(seq, want);
      }
    }
  }
  for (uint32_t n = 0; n < s->shared_keys; n++) {
    size_t kl = shared_key(n, k), vl;
    int rc = bf_get(s->tree, k, kl, v, sizeof v, &vl);
    bool any = false;
    for (int w = 0; w < WRITERS; w++) any |= s->shared_last[w][n] != 0;
    if (!any) {
      assert_int_equal(rc, BF_NOTFOUND);
      continue;
    }
    uint32_t seq = 0;
    int ww = -1;
    assert_int_equal(rc, BF_OK);
    assert_true(value_ok(k, kl, v, vl, &seq, &ww));
    assert_true(ww >= 0 && ww < WRITERS);
    assert_int_equal(seq, s->shared_last[ww][n]); /* that writer's last */
  }
  char *err = NULL;
  int rc = bf_check(s->tree, &err);
  if (rc != BF_OK) fail_msg("bf_check: %s", err);
}

static void test_concurrent(void **state) {
  (void)state;
  struct shared_state s;
  memset(&s, 0, sizeof s);
  s.seed = test_seed("threads");
  s.ops = test_scale(150000);
  s.owned_keys = 20000;
  s.shared_keys = 2000;
  for (int w = 0; w < WRITERS; w++) {
    s.owned_seq[w] = calloc(s.owned_keys, sizeof(_Atomic uint32_t));
    s.shared_last[w] = calloc(s.shared_keys, sizeof(uint32_t));
  }
  char *dir = test_tmpdir();
  char path[600];
  snprintf(path, sizeof path, "%s/threads.bf", dir);
  bf_options o;
  bf_options_init(&o);
  o.buffer_size = 256 << 10;
  o.read_promote_percent = 30;
  o.scan_promote_percent = 30;
  char *err = NULL;
  assert_int_equal(bf_open(path, &o, &s.tree, &err), BF_OK);

  pthread_t wt[WRITERS], rt[READERS], ct;
  struct thread_arg wa[WRITERS], ra[READERS];
  for (int i = 0; i < WRITERS; i++) {
    wa[i] = (struct thread_arg){&s, i};
    pthread_create(&wt[i], NULL, writer, &wa[i]);
  }
  for (int i = 0; i < READERS; i++) {
    ra[i] = (struct thread_arg){&s, i};
    pthread_create(&rt[i], NULL, reader, &ra[i]);
  }
  pthread_create(&ct, NULL, checkpointer, &s);
  for (int i = 0; i < WRITERS; i++) pthread_join(wt[i], NULL);
  atomic_store(&s.stop, true);
  for (int i = 0; i < READERS; i++) pthread_join(rt[i], NULL);
  pthread_join(ct, NULL);
  if (atomic_load(&s.failures)) fail_msg("%s", s.failure);

  bf_stats st;
  bf_stats_get(s.tree, &st);
  printf("[ STATS    ] threads: leaves %llu merges %llu splits %llu evictions %llu "
         "hits %llu misses %llu\n",
         (unsigned long long)st.leaf_pages, (unsigned long long)st.merges,
         (unsigned long long)st.splits, (unsigned long long)st.evictions,
         (unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses);
  assert_true(st.evictions > 0);
  verify_final(&s);
  assert_int_equal(bf_close(s.tree), BF_OK);
  assert_int_equal(bf_open(path, &o, &s.tree, &err), BF_OK);
  verify_final(&s);
  assert_int_equal(bf_close(s.tree), BF_OK);
  for (int w = 0; w < WRITERS; w++) {
    free(s.owned_seq[w]);
    free(s.shared_last[w]);
  }
  test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_concurrent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
