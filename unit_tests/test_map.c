/*
** test_map.c: the reader/writer latch (bf_latch.c) and the mapping table
** (bf_map.c).
**
** - latch_single: every transition of the latch state machine, one thread.
** - latch_writer_preference: a waiting writer stops new shared holders.
** - latch_threads: threads mixing shared, exclusive, try, upgrade and
**   downgrade around a plain (non-atomic) pair of counters; the pair must
**   always be equal under a shared latch and the totals must add up.  Run
**   under the tsan variant to prove the latch orders the plain accesses.
** - map_chunks: ids are dense across chunk boundaries, entries zeroed and
**   stable, bf_map_bytes grows per chunk.
** - map_threads: concurrent adders and lock-free readers.
** - map_nomem: a failed chunk allocation leaves the map unchanged.
*/
#include "bf_int.h"
#include "test_util.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

/* ------------------------------------------------------------------------
** Latch, single-threaded.
*/
static void latch_single(void **state) {
  (void)state;
  bf_latch l;
  atomic_init(&l, 0);
  assert_false(bf_latch_held_shared(&l));
  assert_false(bf_latch_held_exclusive(&l));

  /* shared + shared */
  bf_latch_shared(&l);
  assert_true(bf_try_latch_shared(&l));
  assert_true(bf_latch_held_shared(&l));
  assert_false(bf_latch_held_exclusive(&l));
  assert_false(bf_try_latch_exclusive(&l));
  /* two readers: no upgrade, and both still hold it */
  assert_false(bf_try_upgrade(&l));
  assert_true(bf_latch_held_shared(&l));
  bf_unlatch_shared(&l);
  assert_true(bf_latch_held_shared(&l));
  assert_false(bf_try_latch_exclusive(&l));
  bf_unlatch_shared(&l);
  assert_false(bf_latch_held_shared(&l));

  /* exclusive excludes everyone */
  bf_latch_exclusive(&l);
  assert_true(bf_latch_held_exclusive(&l));
  assert_false(bf_latch_held_shared(&l));
  assert_false(bf_try_latch_shared(&l));
  assert_false(bf_try_latch_exclusive(&l));
  bf_unlatch_exclusive(&l);
  assert_false(bf_latch_held_exclusive(&l));
  assert_true(bf_try_latch_exclusive(&l));
  assert_true(bf_latch_held_exclusive(&l));

  /* downgrade: exclusive -> one reader; others may join */
  bf_downgrade(&l);
  assert_false(bf_latch_held_exclusive(&l));
  assert_true(bf_latch_held_shared(&l));
  assert_true(bf_try_latch_shared(&l));
  assert_false(bf_try_upgrade(&l));
  bf_unlatch_shared(&l);

  /* upgrade: the only reader becomes the writer */
  assert_true(bf_try_upgrade(&l));
  assert_true(bf_latch_held_exclusive(&l));
  assert_false(bf_latch_held_shared(&l));
  assert_false(bf_try_latch_shared(&l));
  bf_unlatch_exclusive(&l);
  assert_int_equal(atomic_load(&l), 0);

  /* the plain blocking calls on a free latch */
  bf_latch_exclusive(&l);
  bf_unlatch_exclusive(&l);
  bf_latch_shared(&l);
  bf_unlatch_shared(&l);
  assert_int_equal(atomic_load(&l), 0);
}

/* ------------------------------------------------------------------------
** Latch, writer preference.
*/
struct pref_ctx {
  bf_latch latch;
  _Atomic int writer_in;   /* 1 while the writer holds it */
  _Atomic int writer_done;
};

static void *pref_writer(void *arg) {
  struct pref_ctx *c = arg;
  bf_latch_exclusive(&c->latch);
  atomic_store(&c->writer_in, 1);
  struct timespec ts = {0, 2000000}; /* hold it 2 ms */
  nanosleep(&ts, NULL);
  atomic_store(&c->writer_in, 0);
  bf_unlatch_exclusive(&c->latch);
  atomic_store(&c->writer_done, 1);
  return NULL;
}

static void latch_writer_preference(void **state) {
  (void)state;
  struct pref_ctx c;
  atomic_init(&c.latch, 0);
  atomic_init(&c.writer_in, 0);
  atomic_init(&c.writer_done, 0);
  bf_latch_shared(&c.latch);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, pref_writer, &c), 0);
  /* Wait until the writer announces itself: new shared acquisitions then
  ** fail even though only a reader holds the latch. */
  int spins = 0;
  for (;;) {
    if (!bf_try_latch_shared(&c.latch)) break;
    bf_unlatch_shared(&c.latch);
    sched_yield();
    assert_true(++spins < 10000000);
  }
  assert_false(bf_latch_held_exclusive(&c.latch));
  assert_true(bf_latch_held_shared(&c.latch));
  assert_int_equal(atomic_load(&c.writer_in), 0);
  /* Releasing our hold lets the writer in; a blocking reader waits for it
  ** and, once in, sees the writer gone. */
  bf_unlatch_shared(&c.latch);
  while (!bf_latch_held_exclusive(&c.latch) && !atomic_load(&c.writer_done))
    sched_yield();
  bf_latch_shared(&c.latch);
  assert_int_equal(atomic_load(&c.writer_in), 0);
  bf_unlatch_shared(&c.latch);
  pthread_join(th, NULL);
  assert_int_equal(atomic_load(&c.writer_done), 1);
  assert_int_equal(atomic_load(&c.latch), 0);
}

/* ------------------------------------------------------------------------
** Latch, many threads.
*/
#define LT_THREADS 4

struct lt_shared {
  bf_latch latch;
  uint64_t a, b;          /* plain: protected by latch; always a == b */
  _Atomic uint64_t errors;
  long iters;
  uint64_t seed;
};

struct lt_thread {
  struct lt_shared *s;
  int id;
  uint64_t writes; /* increments this thread made */
};

static void *lt_main(void *arg) {
  struct lt_thread *t = arg;
  struct lt_shared *s = t->s;
  uint64_t rng = s->seed + (uint64_t)t->id * 7919;
  for (long i = 0; i < s->iters; i++) {
    uint64_t r = test_rand(&rng) % 16;
    if (r == 0) {
      bf_latch_exclusive(&s->latch);
      s->a++;
      s->b++;
      t->writes++;
      bf_unlatch_exclusive(&s->latch);
    } else if (r == 1) {
      if (bf_try_latch_exclusive(&s->latch)) {
        s->a++;
        s->b++;
        t->writes++;
        bf_unlatch_exclusive(&s->latch);
      }
    } else if (r == 2) {
      /* shared, upgrade if alone, downgrade, check, release */
      bf_latch_shared(&s->latch);
      if (s->a != s->b) atomic_fetch_add(&s->errors, 1);
      if (bf_try_upgrade(&s->latch)) {
        s->a++;
        s->b++;
        t->writes++;
        bf_downgrade(&s->latch);
      }
      if (s->a != s->b) atomic_fetch_add(&s->errors, 1);
      bf_unlatch_shared(&s->latch);
    } else if (r == 3) {
      if (bf_try_latch_shared(&s->latch)) {
        if (s->a != s->b) atomic_fetch_add(&s->errors, 1);
        bf_unlatch_shared(&s->latch);
      }
    } else {
      bf_latch_shared(&s->latch);
      uint64_t a = s->a;
      sched_yield();
      if (a != s->b || a != s->a) atomic_fetch_add(&s->errors, 1);
      bf_unlatch_shared(&s->latch);
    }
  }
  return NULL;
}

static void latch_threads(void **state) {
  (void)state;
  struct lt_shared s;
  atomic_init(&s.latch, 0);
  s.a = s.b = 0;
  atomic_init(&s.errors, 0);
  s.iters = test_scale(50000);
  s.seed = test_seed("latch_threads");
  pthread_t th[LT_THREADS];
  struct lt_thread t[LT_THREADS];
  for (int i = 0; i < LT_THREADS; i++) {
    t[i].s = &s;
    t[i].id = i;
    t[i].writes = 0;
    assert_int_equal(pthread_create(&th[i], NULL, lt_main, &t[i]), 0);
  }
  uint64_t total = 0;
  for (int i = 0; i < LT_THREADS; i++) {
    pthread_join(th[i], NULL);
    total += t[i].writes;
  }
  assert_int_equal(atomic_load(&s.errors), 0);
  assert_int_equal(s.a, total);
  assert_int_equal(s.b, total);
  assert_true(total > 0);
  assert_int_equal(atomic_load(&s.latch), 0);
}

/* ------------------------------------------------------------------------
** Mapping table.
*/
#define CHUNK 65536u

static void map_chunks(void **state) {
  (void)state;
  struct bf_map *map;
  assert_int_equal(bf_map_create(&map), BF_OK);
  assert_int_equal(bf_map_count(map), 0);
  uint64_t empty_bytes = bf_map_bytes(map);
  uint32_t n = 2 * CHUNK + 17;
  struct bf_leaf_entry **ptr = malloc(sizeof *ptr * n);
  assert_non_null(ptr);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t id = 12345;
    struct bf_leaf_entry *e = NULL;
    assert_int_equal(bf_map_add(map, &id, &e), BF_OK);
    assert_int_equal(id, i);
    assert_non_null(e);
    assert_int_equal(atomic_load(&e->latch), 0);
    assert_int_equal(e->flags, 0);
    assert_null(atomic_load(&e->mini));
    assert_int_equal(e->disk_page, BF_NO_PAGE);
    assert_ptr_equal(bf_map_get(map, id), e);
    assert_int_equal(bf_map_count(map), i + 1);
    e->disk_page = (uint64_t)i * 3 + 1;
    e->flags = i & 1;
    ptr[i] = e;
    if (i == 0) assert_true(bf_map_bytes(map) >= empty_bytes + CHUNK * sizeof *e);
    if (i == CHUNK - 1 || i == CHUNK) {
      uint64_t chunks = i / CHUNK + 1;
      assert_int_equal(bf_map_bytes(map),
                       empty_bytes + chunks * CHUNK * sizeof *e);
    }
  }
  /* Entries never move and keep their contents. */
  for (uint32_t i = 0; i < n; i++) {
    struct bf_leaf_entry *e = bf_map_get(map, i);
    assert_ptr_equal(e, ptr[i]);
    assert_int_equal(e->disk_page, (uint64_t)i * 3 + 1);
    assert_int_equal(e->flags, i & 1);
  }
  /* A NULL entry out-parameter is allowed. */
  uint32_t id;
  assert_int_equal(bf_map_add(map, &id, NULL), BF_OK);
  assert_int_equal(id, n);
  free(ptr);
  bf_map_destroy(map);
}

#define MT_ADDERS 3
#define MT_READERS 2

struct mt_ctx {
  struct bf_map *map;
  long per_adder;
  _Atomic int adders_done;
  _Atomic uint64_t errors;
  _Atomic uint64_t reads;
  uint64_t seed;
};

static void *mt_adder(void *arg) {
  struct mt_ctx *c = arg;
  for (long i = 0; i < c->per_adder; i++) {
    uint32_t id;
    struct bf_leaf_entry *e;
    if (bf_map_add(c->map, &id, &e) != BF_OK) {
      atomic_fetch_add(&c->errors, 1);
      break;
    }
    bf_latch_exclusive(&e->latch);
    e->disk_page = (uint64_t)id + 1000;
    bf_unlatch_exclusive(&e->latch);
  }
  atomic_fetch_add(&c->adders_done, 1);
  return NULL;
}

static void *mt_reader(void *arg) {
  struct mt_ctx *c = arg;
  uint64_t rng = c->seed ^ (uint64_t)(uintptr_t)&rng;
  while (atomic_load(&c->adders_done) < MT_ADDERS) {
    uint32_t n = bf_map_count(c->map);
    if (n == 0) continue;
    uint32_t id = (uint32_t)(test_rand(&rng) % n);
    struct bf_leaf_entry *e = bf_map_get(c->map, id);
    bf_latch_shared(&e->latch);
    uint64_t p = e->disk_page;
    bf_unlatch_shared(&e->latch);
    /* Either not yet written by its adder, or its final value. */
    if (p != 0 && p != (uint64_t)id + 1000) atomic_fetch_add(&c->errors, 1);
    atomic_fetch_add_explicit(&c->reads, 1, memory_order_relaxed);
  }
  return NULL;
}

static void map_threads(void **state) {
  (void)state;
  struct mt_ctx c;
  assert_int_equal(bf_map_create(&c.map), BF_OK);
  c.per_adder = test_scale(60000);
  atomic_init(&c.adders_done, 0);
  atomic_init(&c.errors, 0);
  atomic_init(&c.reads, 0);
  c.seed = test_seed("map_threads");
  pthread_t th[MT_ADDERS + MT_READERS];
  for (int i = 0; i < MT_ADDERS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, mt_adder, &c), 0);
  for (int i = 0; i < MT_READERS; i++)
    assert_int_equal(pthread_create(&th[MT_ADDERS + i], NULL, mt_reader, &c),
                     0);
  for (int i = 0; i < MT_ADDERS + MT_READERS; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&c.errors), 0);
  uint32_t n = bf_map_count(c.map);
  assert_int_equal(n, (uint32_t)(MT_ADDERS * c.per_adder));
  for (uint32_t i = 0; i < n; i++)
    assert_int_equal(bf_map_get(c.map, i)->disk_page, (uint64_t)i + 1000);
  bf_map_destroy(c.map);
}

static void map_nomem(void **state) {
  (void)state;
#ifdef BF_TESTING
  struct bf_map *map = NULL;
  bf_faultsim_set(BF_FAULT_MALLOC, 1, false);
  assert_int_equal(bf_map_create(&map), BF_NOMEM);
  assert_null(map);
  bf_faultsim_set(BF_FAULT_MALLOC, 0, false);
  assert_int_equal(bf_map_create(&map), BF_OK);

  /* The first add allocates the first chunk. */
  uint32_t id = 777;
  struct bf_leaf_entry *e = NULL;
  bf_faultsim_set(BF_FAULT_MALLOC, 1, false);
  assert_int_equal(bf_map_add(map, &id, &e), BF_NOMEM);
  assert_int_equal(bf_faultsim_hits(BF_FAULT_MALLOC), 1);
  assert_int_equal(id, 777);
  assert_null(e);
  assert_int_equal(bf_map_count(map), 0);
  bf_faultsim_set(BF_FAULT_MALLOC, 0, false);
  for (uint32_t i = 0; i < CHUNK; i++) {
    assert_int_equal(bf_map_add(map, &id, &e), BF_OK);
    assert_int_equal(id, i);
  }
  /* Id CHUNK needs the second chunk. */
  uint64_t bytes = bf_map_bytes(map);
  bf_faultsim_set(BF_FAULT_MALLOC, 1, false);
  assert_int_equal(bf_map_add(map, &id, &e), BF_NOMEM);
  bf_faultsim_set(BF_FAULT_MALLOC, 0, false);
  assert_int_equal(bf_map_count(map), CHUNK);
  assert_int_equal(bf_map_bytes(map), bytes);
  assert_int_equal(bf_map_add(map, &id, &e), BF_OK);
  assert_int_equal(id, CHUNK);
  assert_ptr_equal(bf_map_get(map, CHUNK), e);
  bf_map_destroy(map);
#else
  skip();
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(latch_single),
      cmocka_unit_test(latch_writer_preference),
      cmocka_unit_test(latch_threads),
      cmocka_unit_test(map_chunks),
      cmocka_unit_test(map_threads),
      cmocka_unit_test(map_nomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
