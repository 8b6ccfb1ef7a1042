/*
** test_sketch.c: the admission sketch (bf_sketch.c): estimates never below
** the true count, saturation at 15, conservative update keeping other keys
** low, aging by halving after a window, the window following the
** footprints reported, and concurrent additions from several threads.
*/
#include "test_util.h"

#include "bf_int.h"

#include <pthread.h>

static void key_of(uint64_t i, uint8_t key[8]) {
  for (int b = 0; b < 8; b++) key[b] = (uint8_t)(i >> (8 * b));
}

/* Each key added k times (k = 1..15, cycling) reads back as at least k;
** with one counter per key per row, most read back exactly k. */
static void test_counts(void **state) {
  (void)state;
  struct bf_sketch *s;
  const uint64_t keys = 2000;
  /* capacity / footprint = 8192 counters per row, window 8192 additions:
  ** sized so that no halving happens below. */
  assert_int_equal(bf_sketch_create(8192 * 128, 128, &s), BF_OK);
  uint8_t k[8];
  uint64_t exact = 0;
  for (uint64_t i = 0; i < keys; i++) {
    key_of(i, k);
    uint32_t want = (uint32_t)(i % 3) + 1, got = 0;
    for (uint32_t j = 0; j < want; j++) got = bf_sketch_add(s, k, 8, 0);
    assert_true(got >= want);
    assert_int_equal(bf_sketch_estimate(s, k, 8), got);
  }
  assert_int_equal(bf_sketch_halvings(s), 0);
  for (uint64_t i = 0; i < keys; i++) {
    key_of(i, k);
    uint32_t want = (uint32_t)(i % 3) + 1, got = bf_sketch_estimate(s, k, 8);
    assert_true(got >= want);
    exact += got == want;
  }
  assert_true(exact > keys * 95 / 100);
  /* Keys never added: mostly 0. */
  uint64_t zero = 0;
  for (uint64_t i = keys; i < 2 * keys; i++) {
    key_of(i, k);
    zero += bf_sketch_estimate(s, k, 8) == 0;
  }
  assert_true(zero > keys * 90 / 100);
  /* Saturation: never past 15, and no carry into a neighbour: the other
  ** keys keep their estimates (bar the rare one sharing all its counters
  ** with key 7). */
  uint32_t *before = malloc(2 * keys * sizeof *before);
  assert_non_null(before);
  for (uint64_t i = 0; i < 2 * keys; i++) {
    key_of(i, k);
    before[i] = bf_sketch_estimate(s, k, 8);
  }
  key_of(7, k);
  for (int j = 0; j < 40; j++) assert_true(bf_sketch_add(s, k, 8, 0) <= 15);
  assert_int_equal(bf_sketch_estimate(s, k, 8), 15);
  uint32_t changed = 0;
  for (uint64_t i = 0; i < 2 * keys; i++) {
    if (i == 7) continue;
    key_of(i, k);
    changed += bf_sketch_estimate(s, k, 8) != before[i];
  }
  assert_true(changed <= 2);
  free(before);
  assert_true(bf_sketch_admits(bf_sketch_threshold()));
  assert_false(bf_sketch_admits(bf_sketch_threshold() - 1));
  assert_true(bf_sketch_bytes(s) >= 4 * 8192 / 2);
  bf_sketch_destroy(s);
}

/* After `window` additions every count halves, once, at the next
** bf_sketch_age; the next window is the capacity divided by the average
** footprint reported. */
static void test_aging(void **state) {
  (void)state;
  struct bf_sketch *s;
  uint8_t k[8], hot[8];
  /* 4096 counters per row, first window 4096 additions. */
  assert_int_equal(bf_sketch_create(4096 * 100, 100, &s), BF_OK);
  key_of(1ull << 40, hot);
  for (int j = 0; j < 12; j++) bf_sketch_add(s, hot, 8, 0);
  assert_int_equal(bf_sketch_estimate(s, hot, 8), 12);
  uint64_t added = 12, i = 0;
  /* Fillers report footprint 400: the next window is 409600/400 = 1024. */
  while (bf_sketch_halvings(s) == 0) {
    key_of(i++, k);
    bf_sketch_add(s, k, 8, 400);
    added++;
    assert_true(added <= 4096);
    if (added < 4096) {
      bf_sketch_age(s); /* nothing due yet: no halving */
      assert_int_equal(bf_sketch_halvings(s), 0);
    }
    if (added == 4096) {
      assert_int_equal(bf_sketch_halvings(s), 0); /* flagged, not done */
      bf_sketch_age(s);
      assert_int_equal(bf_sketch_halvings(s), 1);
      bf_sketch_age(s); /* once per window */
    }
  }
  assert_int_equal(added, 4096);
  assert_int_equal(bf_sketch_halvings(s), 1);
  uint32_t aged = bf_sketch_estimate(s, hot, 8);
  assert_true(aged >= 6 && aged <= 7); /* 12 / 2, or one collision more */
  /* Every nibble halved on its own: no bit of the counter above shifts in
  ** (which would leave counts of 8 or more), and the fillers, counted
  ** once or a few times by collisions, are mostly back to 0. */
  uint64_t zero = 0;
  for (uint64_t j = 0; j < i; j++) {
    key_of(j, k);
    uint32_t e = bf_sketch_estimate(s, k, 8);
    assert_true(e <= 7);
    zero += e == 0;
  }
  assert_true(zero > i * 9 / 10);
  uint64_t before = added;
  while (bf_sketch_halvings(s) == 1) {
    key_of(i++, k);
    bf_sketch_add(s, k, 8, 400);
    bf_sketch_age(s);
    added++;
    assert_true(added - before <= 1024);
  }
  assert_int_equal(added - before, 1024);
  aged = bf_sketch_estimate(s, hot, 8);
  assert_true(aged >= 3 && aged <= 4);
  bf_sketch_destroy(s);
}

/* Threads add disjoint key sets 3 times each while also hammering one
** shared key: every key reads back at least 3 (increments are never lost
** outside a halving, and none carries into a neighbouring counter), the
** shared key saturates. */
struct worker {
  struct bf_sketch *s;
  uint64_t first, count;
};

static void *worker_main(void *arg) {
  struct worker *w = arg;
  uint8_t k[8], shared[8];
  key_of(UINT64_MAX, shared);
  for (int round = 0; round < 3; round++)
    for (uint64_t i = w->first; i < w->first + w->count; i++) {
      key_of(i, k);
      bf_sketch_add(w->s, k, 8, 0);
      if (i % 16 == 0) bf_sketch_add(w->s, shared, 8, 0);
    }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  enum { THREADS = 4 };
  const uint64_t per = (uint64_t)test_scale(5000);
  struct bf_sketch *s;
  /* A first window of per * THREADS * 4 additions: more than the threads
  ** make (3 per key and 3 per 16 keys for the shared one), so no halving. */
  assert_int_equal(bf_sketch_create(per * THREADS * 4 * 64, 64, &s), BF_OK);
  pthread_t tid[THREADS];
  struct worker w[THREADS];
  for (int t = 0; t < THREADS; t++) {
    w[t] = (struct worker){s, (uint64_t)t * per, per};
    assert_int_equal(pthread_create(&tid[t], NULL, worker_main, &w[t]), 0);
  }
  for (int t = 0; t < THREADS; t++) pthread_join(tid[t], NULL);
  assert_int_equal(bf_sketch_halvings(s), 0);
  uint8_t k[8];
  for (uint64_t i = 0; i < per * THREADS; i++) {
    key_of(i, k);
    uint32_t e = bf_sketch_estimate(s, k, 8);
    if (e < 3) fail_msg("key %llu: estimate %u < 3", (unsigned long long)i, e);
  }
  key_of(UINT64_MAX, k);
  assert_int_equal(bf_sketch_estimate(s, k, 8), 15);
  bf_sketch_destroy(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counts),
      cmocka_unit_test(test_aging),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests_name("sketch", tests, NULL, NULL);
}
