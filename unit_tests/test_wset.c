/*
** test_wset.c: the transaction write set (bf_wset.c).
**
** - wset_basic: put/get/delete/overwrite, empty keys and values, a delete of
**   an absent key, NULL value of a delete, count and bytes, clear.
** - wset_values: a value moving between the inline area and heap blocks
**   across nested savepoints, restored exactly by each rollback; a value
**   put from a pointer the write set itself returned.
** - wset_marks: mark numbering, rollback_to keeps the mark and drops newer
**   ones, release keeps the changes, invalid marks, savepoint never fails.
** - wset_random: random put/delete/savepoint/rollback_to/release/clear on a
**   small key space (empty key, prefixes, 0x00 bytes) against a model with
**   one snapshot per mark; full content, bf_wset_check and random gets after
**   every step.  Seeded (BF_TEST_SEED replays).
** - wset_ranges: every pair of bounds (keys, keys between keys, prefixes,
**   the empty key, unbounded) with every inclusive/exclusive combination;
**   a visitor status stops the walk and is returned.
** - wset_big: 1,000,000 puts in random order (scaled), then a savepoint,
**   more puts and overwrites, rollback; timing printed.
** - wset_faults: BF_FAULT_MALLOC at the n-th allocation, n = 1.. until no
**   fault hits, during puts, deletes and savepoints over a state with
**   marks: each op either applies or returns BF_NOMEM with nothing changed;
**   rollback_to afterwards restores the snapshot.  Also persistent faults
**   and bf_wset_create under faults.
*/
#include "bf_int.h"
#include "test_util.h"


/* ------------------------------------------------------------------------
** Values are generated from (seed, len) so that a model slot is tiny.
*/
static void fill_value(uint8_t *buf, uint32_t seed, uint32_t len) {
  uint64_t s = seed;
  for (uint32_t i = 0; i < len; i += 8) {
    uint64_t r = test_rand(&s);
    for (uint32_t j = 0; j < 8 && i + j < len; j++) buf[i + j] = (uint8_t)(r >> (8 * j));
  }
}

#define MAX_VALUE 33000
static uint8_t vbuf[MAX_VALUE];
static uint8_t vcheck[MAX_VALUE];

/* A random value length: mostly small, some empty, a few large. */
static uint32_t random_vlen(uint64_t *rs) {
  uint32_t r = (uint32_t)(test_rand(rs) % 100);
  if (r < 10) return 0;
  if (r < 75) return 1 + (uint32_t)(test_rand(rs) % 24);
  if (r < 97) return 25 + (uint32_t)(test_rand(rs) % 300);
  return 1000 + (uint32_t)(test_rand(rs) % (MAX_VALUE - 1000));
}

/* ------------------------------------------------------------------------
** A key universe: short keys over {0x00, 0x01, 'a', 0xff}, including the
** empty key, so that prefixes and zero bytes are common.  Sorted.
*/
struct ukey {
  uint8_t b[8];
  uint32_t len;
};

static int ukey_cmp(const void *a, const void *b) {
  const struct ukey *x = a, *y = b;
  return bf_key_compare(x->b, x->len, y->b, y->len);
}

static const uint8_t alphabet[4] = {0x00, 0x01, 'a', 0xff};

static void random_key(uint64_t *rs, struct ukey *k) {
  k->len = (uint32_t)(test_rand(rs) % 6);
  for (uint32_t i = 0; i < k->len; i++) k->b[i] = alphabet[test_rand(rs) % 4];
}

/* Fill u with up to max distinct keys; returns how many. */
static uint32_t make_universe(uint64_t *rs, struct ukey *u, uint32_t max) {
  uint32_t n = 0;
  u[n++].len = 0; /* the empty key, always */
  for (uint32_t tries = 0; n < max && tries < max * 8; tries++) {
    struct ukey k;
    random_key(rs, &k);
    bool dup = false;
    for (uint32_t i = 0; i < n && !dup; i++) dup = ukey_cmp(&u[i], &k) == 0;
    if (!dup) u[n++] = k;
  }
  qsort(u, n, sizeof *u, ukey_cmp);
  return n;
}

/* ------------------------------------------------------------------------
** The model: one slot per universe key.
*/
struct slot {
  uint8_t present;
  uint8_t op;
  uint32_t vseed;
  uint32_t vlen;
};

#define MAX_KEYS 64
#define MAX_MARKS 64

struct model {
  struct ukey u[MAX_KEYS];
  uint32_t nkeys;
  struct slot cur[MAX_KEYS];
  struct slot snap[MAX_MARKS][MAX_KEYS]; /* snap[m-1]: state at mark m */
  uint32_t nmarks;
};

/* A visitor comparing the walk with the model's present slots in [lo, hi). */
struct cmp_ctx {
  const struct model *m;
  const struct slot *slots;
  uint32_t next;   /* next universe index expected */
  uint32_t hi;     /* one past the last index in range */
  uint32_t seen;
  uint32_t stop_after; /* return BF_DONE after this many (0 = never) */
};

static void skip_absent(struct cmp_ctx *c) {
  while (c->next < c->hi && !c->slots[c->next].present) c->next++;
}

static int cmp_visit(void *ctx, int op, const uint8_t *key, uint32_t key_len,
                     const uint8_t *value, uint32_t value_len) {
  struct cmp_ctx *c = ctx;
  skip_absent(c);
  assert_true(c->next < c->hi);
  const struct ukey *k = &c->m->u[c->next];
  const struct slot *s = &c->slots[c->next];
  assert_int_equal(key_len, k->len);
  if (key_len) assert_memory_equal(key, k->b, key_len);
  assert_int_equal(op, s->op);
  assert_int_equal(value_len, s->vlen);
  if (op == BF_WAL_DELETE) {
    assert_null(value);
  } else if (value_len) {
    fill_value(vcheck, s->vseed, value_len);
    assert_memory_equal(value, vcheck, value_len);
  }
  c->next++;
  c->seen++;
  if (c->stop_after && c->seen == c->stop_after) return BF_DONE;
  return BF_OK;
}

static void verify_full(struct bf_wset *w, const struct model *m,
                        const struct slot *slots) {
  assert_true(bf_wset_check(w));
  struct cmp_ctx c = {m, slots, 0, m->nkeys, 0, 0};
  assert_int_equal(bf_wset_range(w, NULL, 0, true, NULL, 0, true, cmp_visit, &c),
                   BF_OK);
  skip_absent(&c);
  assert_int_equal(c.next, m->nkeys);
  assert_int_equal(bf_wset_count(w), c.seen);
}

static void verify_get(struct bf_wset *w, const struct model *m, uint32_t i) {
  int op = -1;
  const uint8_t *v = NULL;
  uint32_t vlen = 0;
  int rc = bf_wset_get(w, m->u[i].b, m->u[i].len, &op, &v, &vlen);
  const struct slot *s = &m->cur[i];
  if (!s->present) {
    assert_int_equal(rc, BF_NOTFOUND);
    return;
  }
  assert_int_equal(rc, BF_OK);
  assert_int_equal(op, s->op);
  assert_int_equal(vlen, s->vlen);
  if (op == BF_WAL_DELETE) {
    assert_null(v);
  } else if (vlen) {
    fill_value(vcheck, s->vseed, vlen);
    assert_memory_equal(v, vcheck, vlen);
  }
}

/* Apply a put or delete of key i to the write set and, on success, to the
** model.  Returns the status. */
static int do_write(struct bf_wset *w, struct model *m, uint32_t i, bool del,
                    uint32_t vseed, uint32_t vlen) {
  int rc;
  if (del) {
    rc = bf_wset_delete(w, m->u[i].b, m->u[i].len);
  } else {
    fill_value(vbuf, vseed, vlen);
    rc = bf_wset_put(w, m->u[i].b, m->u[i].len, vbuf, vlen);
  }
  if (rc == BF_OK) {
    struct slot *s = &m->cur[i];
    s->present = 1;
    s->op = del ? BF_WAL_DELETE : BF_WAL_PUT;
    s->vseed = vseed;
    s->vlen = del ? 0 : vlen;
  }
  return rc;
}

static void do_savepoint(struct bf_wset *w, struct model *m) {
  uint32_t mark = bf_wset_savepoint(w);
  assert_int_equal(mark, m->nmarks + 1);
  memcpy(m->snap[m->nmarks], m->cur, sizeof m->cur);
  m->nmarks++;
}

static void do_rollback(struct bf_wset *w, struct model *m, uint32_t mark) {
  assert_int_equal(bf_wset_rollback_to(w, mark), BF_OK);
  memcpy(m->cur, m->snap[mark - 1], sizeof m->cur);
  m->nmarks = mark;
}

static void do_release(struct bf_wset *w, struct model *m, uint32_t mark) {
  bf_wset_release(w, mark);
  m->nmarks = mark - 1;
}

/* ------------------------------------------------------------------------
*/
static int count_visit(void *ctx, int op, const uint8_t *key, uint32_t key_len,
                       const uint8_t *value, uint32_t value_len) {
  BF_UNUSED(op);
  BF_UNUSED(key);
  BF_UNUSED(key_len);
  BF_UNUSED(value);
  BF_UNUSED(value_len);
  (*(uint64_t *)ctx)++;
  return BF_OK;
}

static void expect_get(struct bf_wset *w, const char *key, int op,
                       const char *value) {
  int gop = -1;
  const uint8_t *v = NULL;
  uint32_t vlen = 99;
  assert_int_equal(bf_wset_get(w, (const uint8_t *)key, (uint32_t)strlen(key),
                               &gop, &v, &vlen),
                   BF_OK);
  assert_int_equal(gop, op);
  if (op == BF_WAL_DELETE) {
    assert_null(v);
    assert_int_equal(vlen, 0);
  } else {
    assert_int_equal(vlen, strlen(value));
    if (vlen) assert_memory_equal(v, value, vlen);
  }
}

static void wset_basic(void **state) {
  (void)state;
  struct bf_wset *w;
  assert_int_equal(bf_wset_create(&w), BF_OK);
  uint64_t empty_bytes = bf_wset_bytes(w);
  assert_true(empty_bytes > 0);
  assert_int_equal(bf_wset_count(w), 0);
  int op;
  const uint8_t *v;
  uint32_t vlen;
  assert_int_equal(bf_wset_get(w, NULL, 0, &op, &v, &vlen), BF_NOTFOUND);

  const uint8_t *k = (const uint8_t *)"b";
  assert_int_equal(bf_wset_put(w, k, 1, (const uint8_t *)"one", 3), BF_OK);
  expect_get(w, "b", BF_WAL_PUT, "one");
  assert_int_equal(bf_wset_put(w, k, 1, (const uint8_t *)"three", 5), BF_OK);
  expect_get(w, "b", BF_WAL_PUT, "three");
  assert_int_equal(bf_wset_count(w), 1);
  assert_int_equal(bf_wset_delete(w, k, 1), BF_OK);
  expect_get(w, "b", BF_WAL_DELETE, NULL);
  assert_int_equal(bf_wset_count(w), 1);
  /* a delete of an absent key is recorded */
  assert_int_equal(bf_wset_delete(w, (const uint8_t *)"a", 1), BF_OK);
  expect_get(w, "a", BF_WAL_DELETE, NULL);
  /* the empty key, an empty value (NULL pointer with length 0) */
  assert_int_equal(bf_wset_put(w, NULL, 0, NULL, 0), BF_OK);
  expect_get(w, "", BF_WAL_PUT, "");
  assert_int_equal(bf_wset_put(w, (const uint8_t *)"", 0,
                               (const uint8_t *)"e", 1),
                   BF_OK);
  expect_get(w, "", BF_WAL_PUT, "e");
  /* keys with 0x00 bytes and prefixes are distinct */
  const uint8_t z1[] = {0}, z2[] = {0, 0};
  assert_int_equal(bf_wset_put(w, z1, 1, (const uint8_t *)"z1", 2), BF_OK);
  assert_int_equal(bf_wset_put(w, z2, 2, (const uint8_t *)"z2", 2), BF_OK);
  assert_int_equal(bf_wset_get(w, z1, 1, &op, &v, &vlen), BF_OK);
  assert_memory_equal(v, "z1", 2);
  assert_int_equal(bf_wset_get(w, z2, 2, &op, &v, &vlen), BF_OK);
  assert_memory_equal(v, "z2", 2);
  assert_int_equal(bf_wset_count(w), 5);
  assert_true(bf_wset_bytes(w) > empty_bytes);
  assert_true(bf_wset_check(w));

  /* a big key and value */
  static uint8_t bigk[16384], bigv[32768];
  memset(bigk, 0x5a, sizeof bigk);
  for (size_t i = 0; i < sizeof bigv; i++) bigv[i] = (uint8_t)(i * 7);
  assert_int_equal(bf_wset_put(w, bigk, sizeof bigk, bigv, sizeof bigv), BF_OK);
  assert_int_equal(bf_wset_get(w, bigk, sizeof bigk, &op, &v, &vlen), BF_OK);
  assert_int_equal(vlen, sizeof bigv);
  assert_memory_equal(v, bigv, sizeof bigv);
  assert_true(bf_wset_bytes(w) > empty_bytes + sizeof bigk + sizeof bigv);

  uint64_t n = 0;
  assert_int_equal(bf_wset_range(w, NULL, 0, true, NULL, 0, true, count_visit, &n),
                   BF_OK);
  assert_int_equal(n, 6);

  bf_wset_clear(w);
  assert_int_equal(bf_wset_count(w), 0);
  assert_int_equal(bf_wset_bytes(w), empty_bytes);
  assert_int_equal(bf_wset_get(w, k, 1, &op, &v, &vlen), BF_NOTFOUND);
  assert_true(bf_wset_check(w));
  assert_int_equal(bf_wset_put(w, k, 1, (const uint8_t *)"x", 1), BF_OK);
  expect_get(w, "b", BF_WAL_PUT, "x");
  bf_wset_destroy(w);
  bf_wset_destroy(NULL);
}

/* ------------------------------------------------------------------------
*/
static void put_str(struct bf_wset *w, const char *k, const char *v) {
  assert_int_equal(bf_wset_put(w, (const uint8_t *)k, (uint32_t)strlen(k),
                               (const uint8_t *)v, (uint32_t)strlen(v)),
                   BF_OK);
  assert_true(bf_wset_check(w));
}

static void wset_values(void **state) {
  (void)state;
  struct bf_wset *w;
  assert_int_equal(bf_wset_create(&w), BF_OK);
  char big1[1001], big2[2001], mid[11];
  memset(big1, 'B', 1000);
  big1[1000] = 0;
  memset(big2, 'C', 2000);
  big2[2000] = 0;
  strcpy(mid, "0123456789");
  uint64_t b0 = bf_wset_bytes(w);

  put_str(w, "k", mid);                   /* inline area of 10 bytes */
  uint32_t m1 = bf_wset_savepoint(w);
  put_str(w, "k", big1);                  /* heap */
  put_str(w, "k", "small");               /* back inline, same level */
  uint32_t m2 = bf_wset_savepoint(w);
  put_str(w, "k", big2);                  /* heap, logged (m2) */
  put_str(w, "k", "");                    /* inline, not logged */
  assert_int_equal(bf_wset_delete(w, (const uint8_t *)"k", 1), BF_OK);
  uint32_t m3 = bf_wset_savepoint(w);
  put_str(w, "k", big1);
  expect_get(w, "k", BF_WAL_PUT, big1);
  assert_int_equal(bf_wset_rollback_to(w, m3), BF_OK);
  expect_get(w, "k", BF_WAL_DELETE, NULL);
  assert_int_equal(bf_wset_rollback_to(w, m2), BF_OK);
  expect_get(w, "k", BF_WAL_PUT, "small");
  put_str(w, "k", big2);
  assert_int_equal(bf_wset_rollback_to(w, m1), BF_OK);
  expect_get(w, "k", BF_WAL_PUT, mid);
  assert_true(bf_wset_check(w));

  /* a heap value restored into the heap by rollback */
  put_str(w, "k", big1);
  uint32_t m = bf_wset_savepoint(w);
  assert_int_equal(m, 2);
  put_str(w, "k", big2);
  put_str(w, "j", "new");
  assert_int_equal(bf_wset_rollback_to(w, m), BF_OK);
  expect_get(w, "k", BF_WAL_PUT, big1);
  int op;
  const uint8_t *v;
  uint32_t vlen;
  assert_int_equal(bf_wset_get(w, (const uint8_t *)"j", 1, &op, &v, &vlen),
                   BF_NOTFOUND);

  /* a value taken from the write set itself, with and without a mark */
  assert_int_equal(bf_wset_get(w, (const uint8_t *)"k", 1, &op, &v, &vlen), BF_OK);
  assert_int_equal(bf_wset_put(w, (const uint8_t *)"k", 1, v, vlen), BF_OK);
  expect_get(w, "k", BF_WAL_PUT, big1);
  put_str(w, "s", mid);
  assert_int_equal(bf_wset_get(w, (const uint8_t *)"s", 1, &op, &v, &vlen), BF_OK);
  assert_int_equal(bf_wset_put(w, (const uint8_t *)"s", 1, v + 2, vlen - 2), BF_OK);
  expect_get(w, "s", BF_WAL_PUT, "23456789");
  bf_wset_release(w, 1);
  assert_int_equal(bf_wset_get(w, (const uint8_t *)"s", 1, &op, &v, &vlen), BF_OK);
  assert_int_equal(bf_wset_put(w, (const uint8_t *)"s", 1, v + 1, vlen - 1), BF_OK);
  expect_get(w, "s", BF_WAL_PUT, "3456789");
  assert_int_equal(bf_wset_get(w, (const uint8_t *)"k", 1, &op, &v, &vlen), BF_OK);
  assert_int_equal(bf_wset_put(w, (const uint8_t *)"t", 1, v, vlen), BF_OK);
  expect_get(w, "t", BF_WAL_PUT, big1);
  assert_true(bf_wset_check(w));

  bf_wset_clear(w);
  /* only the (small) undo array is kept for the next transaction */
  assert_true(bf_wset_bytes(w) > b0);
  assert_true(bf_wset_bytes(w) <= b0 + 1024 * 32);
  bf_wset_destroy(w);
}

/* ------------------------------------------------------------------------
*/
static void wset_marks(void **state) {
  (void)state;
  struct bf_wset *w;
  assert_int_equal(bf_wset_create(&w), BF_OK);
  assert_int_equal(bf_wset_rollback_to(w, 1), BF_INVALID);
  assert_int_equal(bf_wset_rollback_to(w, 0), BF_INVALID);
  bf_wset_release(w, 1); /* ignored */
  put_str(w, "a", "1");
  assert_int_equal(bf_wset_savepoint(w), 1);
  assert_int_equal(bf_wset_savepoint(w), 2); /* same position: one run */
  put_str(w, "a", "2");
  assert_int_equal(bf_wset_savepoint(w), 3);
  put_str(w, "b", "3");
  assert_int_equal(bf_wset_savepoint(w), 4);
  put_str(w, "a", "4");
  assert_int_equal(bf_wset_rollback_to(w, 5), BF_INVALID);
  /* rollback to 3 keeps marks 1..3 and drops 4 */
  assert_int_equal(bf_wset_rollback_to(w, 3), BF_OK);
  expect_get(w, "a", BF_WAL_PUT, "2");
  int op;
  const uint8_t *v;
  uint32_t vlen;
  /* b was put after mark 3: gone */
  assert_int_equal(bf_wset_get(w, (const uint8_t *)"b", 1, &op, &v, &vlen),
                   BF_NOTFOUND);
  assert_true(bf_wset_check(w));
  assert_int_equal(bf_wset_rollback_to(w, 4), BF_INVALID);
  /* the same mark can be rolled back to again */
  put_str(w, "c", "5");
  assert_int_equal(bf_wset_rollback_to(w, 3), BF_OK);
  assert_int_equal(bf_wset_get(w, (const uint8_t *)"c", 1, &op, &v, &vlen),
                   BF_NOTFOUND);
  assert_int_equal(bf_wset_savepoint(w), 4);
  /* rollback to 2 (in the same run as 1) undoes a=2 and b */
  assert_int_equal(bf_wset_rollback_to(w, 2), BF_OK);
  expect_get(w, "a", BF_WAL_PUT, "1");
  assert_int_equal(bf_wset_get(w, (const uint8_t *)"b", 1, &op, &v, &vlen),
                   BF_NOTFOUND);
  /* release 2 keeps changes, mark 1 still rolls them back */
  put_str(w, "d", "6");
  bf_wset_release(w, 2);
  expect_get(w, "d", BF_WAL_PUT, "6");
  assert_int_equal(bf_wset_rollback_to(w, 2), BF_INVALID);
  assert_int_equal(bf_wset_savepoint(w), 2);
  assert_int_equal(bf_wset_rollback_to(w, 1), BF_OK);
  assert_int_equal(bf_wset_get(w, (const uint8_t *)"d", 1, &op, &v, &vlen),
                   BF_NOTFOUND);
  /* release everything: the changes stay and cannot be rolled back */
  put_str(w, "e", "7");
  bf_wset_release(w, 1);
  assert_int_equal(bf_wset_rollback_to(w, 1), BF_INVALID);
  expect_get(w, "e", BF_WAL_PUT, "7");
  /* many marks with no change between them never allocate */
  bf_faultsim_set(BF_FAULT_MALLOC, 1, true);
  for (uint32_t i = 1; i <= 1000; i++) assert_int_equal(bf_wset_savepoint(w), i);
  bf_faultsim_set(BF_FAULT_MALLOC, 0, false);
  assert_int_equal(bf_wset_rollback_to(w, 500), BF_OK);
  assert_int_equal(bf_wset_savepoint(w), 501);
  bf_wset_release(w, 1);
  assert_true(bf_wset_check(w));
  /* deep nesting with a change between marks */
  for (uint32_t i = 1; i <= 300; i++) {
    char key[16];
    snprintf(key, sizeof key, "n%u", i % 37);
    assert_int_equal(bf_wset_savepoint(w), i);
    put_str(w, key, key);
  }
  assert_int_equal(bf_wset_rollback_to(w, 1), BF_OK);
  assert_int_equal(bf_wset_count(w), 2);
  bf_wset_clear(w);
  assert_int_equal(bf_wset_savepoint(w), 1); /* clear dropped the marks */
  bf_wset_destroy(w);
}

/* ------------------------------------------------------------------------
*/
static void random_round(uint64_t *rs, long steps) {
  static struct model m;
  memset(&m, 0, sizeof m);
  m.nkeys = make_universe(rs, m.u, 8 + (uint32_t)(test_rand(rs) % (MAX_KEYS - 8)));
  struct bf_wset *w;
  assert_int_equal(bf_wset_create(&w), BF_OK);
  uint32_t max_depth = 2 + (uint32_t)(test_rand(rs) % 10);
  for (long step = 0; step < steps; step++) {
    uint32_t r = (uint32_t)(test_rand(rs) % 100);
    uint32_t i = (uint32_t)(test_rand(rs) % m.nkeys);
    if (r < 40) {
      uint32_t vlen = random_vlen(rs);
      assert_int_equal(do_write(w, &m, i, false, (uint32_t)test_rand(rs), vlen),
                       BF_OK);
    } else if (r < 55) {
      assert_int_equal(do_write(w, &m, i, true, 0, 0), BF_OK);
    } else if (r < 66) {
      if (m.nmarks < max_depth) do_savepoint(w, &m);
    } else if (r < 74) {
      if (m.nmarks) do_rollback(w, &m, 1 + (uint32_t)(test_rand(rs) % m.nmarks));
    } else if (r < 82) {
      if (m.nmarks) do_release(w, &m, 1 + (uint32_t)(test_rand(rs) % m.nmarks));
    } else if (r < 83) {
      bf_wset_clear(w);
      memset(m.cur, 0, sizeof m.cur);
      m.nmarks = 0;
    } else {
      verify_get(w, &m, i);
    }
    verify_full(w, &m, m.cur);
  }
  /* unwind: every remaining mark rolls back to its snapshot */
  while (m.nmarks) {
    do_rollback(w, &m, m.nmarks);
    verify_full(w, &m, m.cur);
    do_release(w, &m, m.nmarks);
  }
  bf_wset_destroy(w);
}

static void wset_random(void **state) {
  (void)state;
  uint64_t rs = test_seed("wset_random");
  long rounds = test_scale(20);
  for (long r = 0; r < rounds; r++) random_round(&rs, 2000);
}

/* ------------------------------------------------------------------------
** Ranges: expected result computed from the model by brute force.
*/
static bool in_range(const struct ukey *k, const struct ukey *lo, bool lo_inc,
                     const struct ukey *hi, bool hi_inc) {
  if (lo) {
    int c = ukey_cmp(k, lo);
    if (c < 0 || (c == 0 && !lo_inc)) return false;
  }
  if (hi) {
    int c = ukey_cmp(k, hi);
    if (c > 0 || (c == 0 && !hi_inc)) return false;
  }
  return true;
}

static void check_range(struct bf_wset *w, const struct model *m,
                        const struct ukey *lo, bool lo_inc,
                        const struct ukey *hi, bool hi_inc) {
  /* The universe keys in range must form one index interval [a, b). */
  uint32_t a = 0, b = 0;
  bool any = false;
  for (uint32_t j = 0; j < m->nkeys; j++) {
    if (!in_range(&m->u[j], lo, lo_inc, hi, hi_inc)) continue;
    if (!any) a = j;
    any = true;
    b = j + 1;
  }
  for (uint32_t j = a; j < b; j++) {
    assert_true(in_range(&m->u[j], lo, lo_inc, hi, hi_inc));
  }
  struct cmp_ctx c = {m, m->cur, a, b, 0, 0};
  assert_int_equal(bf_wset_range(w, lo ? lo->b : NULL, lo ? lo->len : 0, lo_inc,
                                 hi ? hi->b : NULL, hi ? hi->len : 0, hi_inc,
                                 cmp_visit, &c),
                   BF_OK);
  skip_absent(&c);
  assert_int_equal(c.next, b);
}

static void wset_ranges(void **state) {
  (void)state;
  uint64_t rs = test_seed("wset_ranges");
  static struct model m;
  for (int round = 0; round < 3; round++) {
    memset(&m, 0, sizeof m);
    m.nkeys = make_universe(&rs, m.u, 40);
    struct bf_wset *w;
    assert_int_equal(bf_wset_create(&w), BF_OK);
    /* About two thirds of the universe present; the rest serve as bounds
    ** that lie between present keys. */
    for (uint32_t i = 0; i < m.nkeys; i++) {
      if (test_rand(&rs) % 3 == 0) continue;
      if (round == 2 && i == 0) continue; /* u[0] is the empty key */
      bool del = test_rand(&rs) % 4 == 0;
      assert_int_equal(do_write(w, &m, i, del, (uint32_t)test_rand(&rs),
                                (uint32_t)(test_rand(&rs) % 12)),
                       BF_OK);
    }
    verify_full(w, &m, m.cur);
    /* Bounds: every universe key, plus extra keys (e.g. longer ones). */
    struct ukey bounds[80];
    uint32_t nb = 0;
    for (uint32_t i = 0; i < m.nkeys; i++) bounds[nb++] = m.u[i];
    while (nb < 80) {
      random_key(&rs, &bounds[nb]);
      if (test_rand(&rs) % 2) { /* a key just past another */
        bounds[nb] = m.u[test_rand(&rs) % m.nkeys];
        if (bounds[nb].len < 8) bounds[nb].b[bounds[nb].len++] = 0;
      }
      nb++;
    }
    for (int32_t x = -1; x < (int32_t)nb; x++) {
      for (int32_t y = -1; y < (int32_t)nb; y++) {
        for (int f = 0; f < 4; f++) {
          check_range(w, &m, x < 0 ? NULL : &bounds[x], f & 1,
                      y < 0 ? NULL : &bounds[y], (f & 2) != 0);
        }
      }
    }
    /* A visitor status stops the walk and is returned. */
    uint64_t present = bf_wset_count(w);
    if (present >= 3) {
      struct cmp_ctx c = {&m, m.cur, 0, m.nkeys, 0, 2};
      assert_int_equal(bf_wset_range(w, NULL, 0, true, NULL, 0, true, cmp_visit,
                                     &c),
                       BF_DONE);
      assert_int_equal(c.seen, 2);
    }
    bf_wset_destroy(w);
  }
}

/* ------------------------------------------------------------------------
*/
static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

struct order_ctx {
  uint8_t last[16];
  uint64_t n;
};

static int order_visit(void *ctx, int op, const uint8_t *key, uint32_t key_len,
                       const uint8_t *value, uint32_t value_len) {
  struct order_ctx *o = ctx;
  assert_int_equal(op, BF_WAL_PUT);
  assert_int_equal(key_len, 16);
  assert_int_equal(value_len, 8);
  if (o->n) assert_true(memcmp(o->last, key, 16) < 0);
  assert_memory_equal(value, key + 8, 8);
  memcpy(o->last, key, 16);
  o->n++;
  return BF_OK;
}

/* A 16-byte key for i: a bijective scramble of i (so random order), then i. */
static void big_key(uint64_t i, uint8_t *k) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  for (int j = 0; j < 8; j++) k[j] = (uint8_t)(x >> (56 - 8 * j));
  for (int j = 0; j < 8; j++) k[8 + j] = (uint8_t)(i >> (56 - 8 * j));
}

static void wset_big(void **state) {
  (void)state;
  long n = test_scale(1000000);
  struct bf_wset *w;
  assert_int_equal(bf_wset_create(&w), BF_OK);
  uint8_t k[16];
  double t0 = now_sec();
  for (long i = 0; i < n; i++) {
    big_key((uint64_t)i, k);
    assert_int_equal(bf_wset_put(w, k, 16, k + 8, 8), BF_OK);
  }
  double t1 = now_sec();
  assert_int_equal(bf_wset_count(w), (uint64_t)n);
  struct order_ctx o = {{0}, 0};
  assert_int_equal(bf_wset_range(w, NULL, 0, true, NULL, 0, true, order_visit, &o),
                   BF_OK);
  assert_int_equal(o.n, (uint64_t)n);
  uint64_t rs = 12345;
  for (int j = 0; j < 10000; j++) {
    uint64_t i = test_rand(&rs) % (uint64_t)n;
    int op;
    const uint8_t *v;
    uint32_t vlen;
    big_key(i, k);
    assert_int_equal(bf_wset_get(w, k, 16, &op, &v, &vlen), BF_OK);
    assert_memory_equal(v, k + 8, 8);
  }
  uint64_t bytes = bf_wset_bytes(w);
  assert_true(bytes > (uint64_t)n * 24);
  /* A savepoint over a tenth more puts and overwrites, then rollback. */
  double t2 = now_sec();
  uint32_t mark = bf_wset_savepoint(w);
  long extra = n / 10 + 1;
  for (long i = 0; i < extra; i++) {
    big_key((uint64_t)(n + i), k);
    assert_int_equal(bf_wset_put(w, k, 16, k + 8, 8), BF_OK);
    big_key((uint64_t)i, k);
    assert_int_equal(bf_wset_delete(w, k, 16), BF_OK);
  }
  assert_int_equal(bf_wset_count(w), (uint64_t)(n + extra));
  assert_int_equal(bf_wset_rollback_to(w, mark), BF_OK);
  bf_wset_release(w, mark);
  double t3 = now_sec();
  assert_int_equal(bf_wset_count(w), (uint64_t)n);
  assert_int_equal(bf_wset_bytes(w), bytes);
  assert_true(bf_wset_check(w));
  o.n = 0;
  assert_int_equal(bf_wset_range(w, NULL, 0, true, NULL, 0, true, order_visit, &o),
                   BF_OK);
  assert_int_equal(o.n, (uint64_t)n);
  printf("[ INFO     ] %ld random puts: %.2f s (%.0f ns/put), %.1f MB; "
         "savepoint+%ld puts/deletes+rollback: %.2f s\n",
         n, t1 - t0, (t1 - t0) * 1e9 / (double)n, (double)bytes / 1e6,
         2 * extra, t3 - t2);
  bf_wset_destroy(w);
}

/* ------------------------------------------------------------------------
** Fault injection.
*/

/* The deterministic op script run under faults: puts (small and large
** values, new and existing keys), deletes, savepoints. */
static void fault_script(struct bf_wset *w, struct model *m, uint64_t seed,
                         bool faulty, int nops) {
  uint64_t rs = seed;
  for (int s = 0; s < nops; s++) {
    uint32_t r = (uint32_t)(test_rand(&rs) % 10);
    uint32_t i = (uint32_t)(test_rand(&rs) % m->nkeys);
    uint32_t vseed = (uint32_t)test_rand(&rs);
    uint32_t vlen = random_vlen(&rs);
    if (r < 6 || r == 9) {
      int rc = do_write(w, m, i, r == 9, vseed, vlen);
      if (faulty) {
        assert_true(rc == BF_OK || rc == BF_NOMEM);
      } else {
        assert_int_equal(rc, BF_OK);
      }
    } else if (r < 8) {
      if (m->nmarks < MAX_MARKS) do_savepoint(w, m);
    } else {
      verify_get(w, m, i);
    }
    verify_full(w, m, m->cur);
  }
}

static void wset_faults(void **state) {
  (void)state;
  uint64_t seed = test_seed("wset_faults");
  static struct model m;
  uint64_t rs = seed;
  /* create under faults */
  for (long n = 1; n <= 3; n++) {
    struct bf_wset *w = (struct bf_wset *)(void *)&n; /* any non-NULL */
    bf_faultsim_set(BF_FAULT_MALLOC, n, false);
    assert_int_equal(bf_wset_create(&w), BF_NOMEM);
    assert_null(w);
  }
  bf_faultsim_set(BF_FAULT_MALLOC, 0, false);

  uint32_t nkeys = 0;
  struct ukey u[MAX_KEYS];
  nkeys = make_universe(&rs, u, 24);
  uint64_t pre_seed = test_rand(&rs), script_seed = test_rand(&rs);
  long n;
  for (n = 1;; n++) {
    memset(&m, 0, sizeof m);
    memcpy(m.u, u, sizeof u);
    m.nkeys = nkeys;
    struct bf_wset *w;
    assert_int_equal(bf_wset_create(&w), BF_OK);
    /* A state with marks and logged changes, built without faults. */
    fault_script(w, &m, pre_seed, false, 30);
    if (m.nmarks == 0) do_savepoint(w, &m);
    uint32_t marks_before = m.nmarks;
    bf_faultsim_set(BF_FAULT_MALLOC, n, false);
    fault_script(w, &m, script_seed, true, 60);
    long hits = bf_faultsim_hits(BF_FAULT_MALLOC);
    bf_faultsim_set(BF_FAULT_MALLOC, 0, false);
    verify_full(w, &m, m.cur);
    /* rollback after the fault restores each snapshot, newest first */
    for (uint32_t mk = m.nmarks; mk >= 1; mk--) {
      do_rollback(w, &m, mk);
      verify_full(w, &m, m.cur);
      if (mk == marks_before) {
        /* the write set works normally afterwards */
        fault_script(w, &m, script_seed ^ 1, false, 10);
        do_rollback(w, &m, mk);
        verify_full(w, &m, m.cur);
      }
    }
    do_release(w, &m, 1);
    verify_full(w, &m, m.cur);
    bf_wset_destroy(w);
    if (hits == 0) break;
  }
  printf("[ INFO     ] wset_faults: %ld fault points\n", n - 1);
  assert_true(n > 20);

  /* Persistent failure: every put/delete fails cleanly, savepoints and
  ** rollbacks still work. */
  memset(&m, 0, sizeof m);
  memcpy(m.u, u, sizeof u);
  m.nkeys = nkeys;
  struct bf_wset *w;
  assert_int_equal(bf_wset_create(&w), BF_OK);
  fault_script(w, &m, pre_seed, false, 40);
  do_savepoint(w, &m);
  bf_faultsim_set(BF_FAULT_MALLOC, 1, true);
  int fails = 0;
  for (int s = 0; s < 200; s++) {
    uint32_t i = (uint32_t)(test_rand(&rs) % m.nkeys);
    uint32_t r = (uint32_t)(test_rand(&rs) % 8);
    if (r == 0) {
      do_savepoint(w, &m);
    } else if (r == 1) {
      do_rollback(w, &m, 1 + (uint32_t)(test_rand(&rs) % m.nmarks));
    } else {
      int rc = do_write(w, &m, i, r == 2, (uint32_t)s, random_vlen(&rs));
      if (rc != BF_OK) fails++;
      assert_true(rc == BF_OK || rc == BF_NOMEM);
    }
    verify_full(w, &m, m.cur);
  }
  bf_faultsim_set(BF_FAULT_MALLOC, 0, false);
  assert_true(fails > 0);
  do_rollback(w, &m, 1);
  verify_full(w, &m, m.cur);
  bf_wset_destroy(w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(wset_basic),  cmocka_unit_test(wset_values),
      cmocka_unit_test(wset_marks),  cmocka_unit_test(wset_random),
      cmocka_unit_test(wset_ranges), cmocka_unit_test(wset_big),
      cmocka_unit_test(wset_faults),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
