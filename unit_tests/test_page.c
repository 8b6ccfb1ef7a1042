/*
** test_page.c: unit tests of bf_page.c (nodes and leaf pages).
**
** Links bf_util.o and bf_page.o only.  Randomized tests print their seed
** (BF_TEST_SEED replays) and scale with BF_TEST_SCALE.
*/
#include "test_util.h"

#include "bf_int.h"

#include <pthread.h>
#include <stdlib.h>

/* ------------------------------------------------------------------------
** Helpers.
*/

/* An 8-aligned buffer big enough for any node or page. */
typedef struct {
  _Alignas(64) uint8_t b[BF_MAX_NODE_SIZE];
} page_buf;

static page_buf *new_buf(void) {
  page_buf *p = aligned_alloc(64, sizeof *p);
  assert_non_null(p);
  memset(p->b, 0xA5, sizeof p->b);
  return p;
}

#define S(lit) (const uint8_t *)(lit), (uint32_t)(sizeof(lit) - 1)

static void check_node(const uint8_t *node) {
  char err[200] = "";
  int rc = bf_node_check(node, bf_node_size(node), err, sizeof err);
  if (rc != BF_OK) fail_msg("bf_node_check: %s", err);
}

static int upsert(uint8_t *node, const uint8_t *k, uint32_t kl, int type,
                  const uint8_t *v, uint32_t vl) {
  return bf_node_upsert(node, k, kl, type, v, vl);
}

/* Assert record i has this key, type and value. */
static void expect_rec(const uint8_t *node, uint32_t i, const uint8_t *k,
                       uint32_t kl, int type, const uint8_t *v, uint32_t vl) {
  struct bf_record r;
  assert_true(i < bf_node_count(node));
  bf_node_record(node, i, &r);
  assert_int_equal(r.key_len, kl);
  if (kl) assert_memory_equal(r.key, k, kl);
  assert_int_equal(r.type, type);
  assert_int_equal(r.value_len, vl);
  if (vl) assert_memory_equal(r.value, v, vl);
}

static bool find(const uint8_t *node, const uint8_t *k, uint32_t kl,
                 uint32_t *idx) {
  return bf_node_search(node, k, kl, idx);
}

/* ------------------------------------------------------------------------
** Basic operations.
*/
static void test_node_basic(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf();
  uint8_t *n = pb->b;
  uint32_t idx;
  bf_node_init(n, 256);
  assert_int_equal(bf_node_size(n), 256);
  assert_int_equal(bf_node_count(n), 0);
  assert_int_equal(bf_node_free(n), 248);
  assert_int_equal(bf_node_reclaimable(n), 248);
  assert_int_equal(bf_node_used(n), 0);
  assert_false(find(n, S("x"), &idx));
  assert_int_equal(idx, 0);
  check_node(n);

  assert_int_equal(upsert(n, S("m"), BF_REC_INSERT, S("vm")), BF_OK);
  assert_int_equal(upsert(n, S("c"), BF_REC_INSERT, S("vc")), BF_OK);
  assert_int_equal(upsert(n, S("x"), BF_REC_CACHE, S("vx")), BF_OK);
  check_node(n);
  assert_int_equal(bf_node_count(n), 3);
  assert_int_equal(bf_node_used(n), 3 * 8 + 9);
  assert_int_equal(bf_node_free(n), 248 - 33);
  expect_rec(n, 0, S("c"), BF_REC_INSERT, S("vc"));
  expect_rec(n, 1, S("m"), BF_REC_INSERT, S("vm"));
  expect_rec(n, 2, S("x"), BF_REC_CACHE, S("vx"));
  assert_true(find(n, S("m"), &idx));
  assert_int_equal(idx, 1);
  assert_false(find(n, S("a"), &idx));
  assert_int_equal(idx, 0);
  assert_false(find(n, S("d"), &idx));
  assert_int_equal(idx, 1);
  assert_false(find(n, S("z"), &idx));
  assert_int_equal(idx, 3);

  /* Replace: same size, smaller, bigger. */
  assert_int_equal(upsert(n, S("m"), BF_REC_INSERT, S("VM")), BF_OK);
  expect_rec(n, 1, S("m"), BF_REC_INSERT, S("VM"));
  assert_int_equal(upsert(n, S("m"), BF_REC_TOMBSTONE, NULL, 0), BF_OK);
  expect_rec(n, 1, S("m"), BF_REC_TOMBSTONE, NULL, 0);
  check_node(n);
  assert_int_equal(upsert(n, S("m"), BF_REC_INSERT, S("a longer value")),
                   BF_OK);
  expect_rec(n, 1, S("m"), BF_REC_INSERT, S("a longer value"));
  check_node(n);
  assert_int_equal(bf_node_count(n), 3);

  /* set_type, remove, compact. */
  bf_node_set_type(n, 1, BF_REC_PHANTOM);
  expect_rec(n, 1, S("m"), BF_REC_PHANTOM, S("a longer value"));
  bf_node_remove(n, 0);
  check_node(n);
  assert_int_equal(bf_node_count(n), 2);
  expect_rec(n, 0, S("m"), BF_REC_PHANTOM, S("a longer value"));
  expect_rec(n, 1, S("x"), BF_REC_CACHE, S("vx"));
  uint32_t recl = bf_node_reclaimable(n);
  bf_node_compact(n);
  check_node(n);
  assert_int_equal(bf_node_reclaimable(n), recl);
  assert_int_equal(bf_node_free(n), recl);
  expect_rec(n, 0, S("m"), BF_REC_PHANTOM, S("a longer value"));
  expect_rec(n, 1, S("x"), BF_REC_CACHE, S("vx"));
  assert_int_equal(bf_node_used(n), 2 * 8 + 1 + 14 + 1 + 2);
  bf_node_remove(n, 1);
  bf_node_remove(n, 0);
  check_node(n);
  assert_int_equal(bf_node_count(n), 0);
  assert_int_equal(bf_node_used(n), 0);
  assert_int_equal(bf_node_reclaimable(n), 248);

  /* Limits of the slot fields. */
  static uint8_t big[BF_MAX_NODE_SIZE];
  bf_node_init(n, BF_MAX_NODE_SIZE);
  assert_int_equal(bf_node_size(n), 32768);
  assert_int_equal(upsert(n, big, BF_MAX_KEY_LIMIT + 1, 0, NULL, 0),
                   BF_TOOBIG);
  assert_int_equal(upsert(n, S("k"), 0, big, BF_MAX_VALUE_LIMIT + 1),
                   BF_TOOBIG);
  memset(big, 0xEE, sizeof big);
  assert_int_equal(upsert(n, big, BF_MAX_KEY_LIMIT, 0, big, 16000), BF_OK);
  assert_int_equal(upsert(n, S("k"), 0, big, BF_MAX_VALUE_LIMIT), BF_FULL);
  check_node(n);
  bf_node_init(n, BF_MAX_NODE_SIZE);
  assert_int_equal(upsert(n, S("k"), 0, big, BF_MAX_VALUE_LIMIT), BF_FULL);
  assert_int_equal(upsert(n, S("k"), 0, big, 32768 - 8 - 8 - 1), BF_OK);
  expect_rec(n, 0, S("k"), 0, big, 32768 - 8 - 8 - 1);
  assert_int_equal(bf_node_reclaimable(n), 0);
  assert_int_equal(bf_node_used(n), 32768 - 8);
  check_node(n);
  /* Smallest node: header only. */
  bf_node_init(n, 8);
  assert_int_equal(upsert(n, NULL, 0, 0, NULL, 0), BF_FULL);
  check_node(n);
  bf_node_init(n, 16);
  assert_int_equal(upsert(n, NULL, 0, 0, NULL, 0), BF_OK);
  assert_int_equal(upsert(n, S("a"), 0, NULL, 0), BF_FULL);
  check_node(n);
  free(pb);
}

/* Empty key and empty values: zero-length records anywhere. */
static void test_zero_length_records(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf();
  uint8_t *n = pb->b;
  uint32_t idx;
  bf_node_init(n, 128);
  assert_int_equal(upsert(n, S("b"), 0, S("vb")), BF_OK);
  assert_int_equal(upsert(n, NULL, 0, 0, NULL, 0), BF_OK);
  assert_int_equal(upsert(n, S("a"), 0, NULL, 0), BF_OK);
  check_node(n);
  assert_true(find(n, NULL, 0, &idx));
  assert_int_equal(idx, 0);
  expect_rec(n, 1, S("a"), 0, NULL, 0);
  /* Remove the lowest record while a zero-length record exists. */
  assert_true(find(n, S("b"), &idx));
  bf_node_remove(n, idx);
  check_node(n);
  assert_int_equal(upsert(n, S("c"), 0, S("vc")), BF_OK);
  assert_int_equal(upsert(n, NULL, 0, 1, S("grow")), BF_OK);
  check_node(n);
  expect_rec(n, 0, NULL, 0, 1, S("grow"));
  assert_int_equal(upsert(n, NULL, 0, 2, NULL, 0), BF_OK);
  check_node(n);
  expect_rec(n, 0, NULL, 0, 2, NULL, 0);
  bf_node_compact(n);
  check_node(n);
  expect_rec(n, 0, NULL, 0, 2, NULL, 0);
  expect_rec(n, 1, S("a"), 0, NULL, 0);
  expect_rec(n, 2, S("c"), 0, S("vc"));
  free(pb);
}

/* ------------------------------------------------------------------------
** Look-ahead ties: keys that share the first two bytes, short keys, 0x00.
*/
static const struct {
  const char *k;
  uint32_t len;
} tie_keys[] = {
    {"", 0},       {"\0", 1},       {"\0\0", 2},   {"\0\0\0", 3},
    {"\0\x01", 2}, {"\x01", 1},     {"a", 1},      {"a\0", 2},
    {"a\0\0", 3},  {"a\0\x01", 3},  {"a\x01", 2},  {"ab", 2},
    {"ab\0", 3},   {"abc", 3},      {"abcd", 4},   {"abd", 3},
    {"abd\0", 4},  {"ac", 2},       {"b", 1},      {"\xff", 1},
    {"\xff\0", 2}, {"\xff\xff", 2}, {"\xff\xff\xff", 3},
};
#define N_TIE (sizeof tie_keys / sizeof tie_keys[0])

static int cmp_tie(const void *a, const void *b) {
  const uint32_t *x = a, *y = b;
  return bf_key_compare((const uint8_t *)tie_keys[*x].k, tie_keys[*x].len,
                        (const uint8_t *)tie_keys[*y].k, tie_keys[*y].len);
}

static void test_lookahead_ties(void **state) {
  BF_UNUSED(state);
  uint64_t rs = test_seed("lookahead_ties");
  page_buf *pb = new_buf();
  uint8_t *n = pb->b;
  uint32_t sorted[N_TIE];
  for (uint32_t i = 0; i < N_TIE; i++) sorted[i] = i;
  qsort(sorted, N_TIE, sizeof sorted[0], cmp_tie);
  /* The table itself is in strictly ascending order. */
  for (uint32_t i = 0; i < N_TIE; i++) assert_int_equal(sorted[i], i);

  for (int round = 0; round < 50; round++) {
    uint32_t perm[N_TIE];
    for (uint32_t i = 0; i < N_TIE; i++) perm[i] = i;
    for (uint32_t i = N_TIE - 1; i > 0; i--) {
      uint32_t j = (uint32_t)(test_rand(&rs) % (i + 1));
      uint32_t t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    /* Insert only a subset in the first rounds, so absent keys get probed
    ** between tied neighbours. */
    uint32_t take = round < 25 ? N_TIE / 2 + (uint32_t)(round % 10) : N_TIE;
    bool present[N_TIE] = {false};
    bf_node_init(n, 1024);
    for (uint32_t i = 0; i < take; i++) {
      uint32_t k = perm[i];
      uint8_t v = (uint8_t)k;
      assert_int_equal(upsert(n, (const uint8_t *)tie_keys[k].k,
                              tie_keys[k].len, 0, &v, 1),
                       BF_OK);
      present[k] = true;
    }
    check_node(n);
    /* Every key: found iff present, at its rank among present keys. */
    for (uint32_t k = 0; k < N_TIE; k++) {
      uint32_t rank = 0, idx;
      for (uint32_t j = 0; j < k; j++) rank += present[j];
      bool f = find(n, (const uint8_t *)tie_keys[k].k, tie_keys[k].len, &idx);
      assert_int_equal(f, present[k]);
      assert_int_equal(idx, rank);
      if (f) {
        uint8_t v = (uint8_t)k;
        expect_rec(n, idx, (const uint8_t *)tie_keys[k].k, tie_keys[k].len, 0,
                   &v, 1);
      }
    }
  }
  free(pb);
}

/* ------------------------------------------------------------------------
** BF_FULL leaves the node byte-for-byte unchanged.
*/
static void fill_node(uint8_t *n, uint64_t *rs, uint32_t vmax) {
  /* Random keys until the first BF_FULL. */
  for (;;) {
    uint8_t key[8], val[64];
    uint32_t kl = 1 + (uint32_t)(test_rand(rs) % 8);
    for (uint32_t i = 0; i < kl; i++) key[i] = (uint8_t)test_rand(rs);
    uint32_t vl = (uint32_t)(test_rand(rs) % (vmax + 1));
    memset(val, (int)kl, vl);
    uint32_t idx;
    if (find(n, key, kl, &idx)) continue;
    if (bf_node_reclaimable(n) < 8 + kl + vl) return;
    assert_int_equal(upsert(n, key, kl, 0, val, vl), BF_OK);
  }
}

static void test_full_unchanged(void **state) {
  BF_UNUSED(state);
  uint64_t rs = test_seed("full_unchanged");
  page_buf *pb = new_buf(), *copy = new_buf();
  uint8_t *n = pb->b;
  for (int round = 0; round < 40; round++) {
    uint32_t size = 64u << (round % 6);
    bf_node_init(n, size);
    fill_node(n, &rs, 40);
    if (round % 2) {
      /* Make some garbage, less than what the next record needs. */
      uint32_t c = bf_node_count(n);
      if (c > 2) bf_node_remove(n, c / 2);
    }
    check_node(n);
    uint32_t recl = bf_node_reclaimable(n);
    memcpy(copy->b, n, size);
    /* A new key that needs one byte more than reclaimable. */
    uint8_t key[4] = {0xff, 0xfe, 0xfd, (uint8_t)round};
    static uint8_t val[BF_MAX_NODE_SIZE];
    uint32_t vl = recl >= 8 + 4 ? recl - 8 - 4 + 1 : 0;
    assert_int_equal(upsert(n, key, 4, 0, val, vl), BF_FULL);
    assert_memory_equal(n, copy->b, size);
    /* A tombstone for a new key that does not fit: BF_FULL, not dropped. */
    if (recl < 8 + 4) {
      assert_int_equal(upsert(n, key, 4, BF_REC_TOMBSTONE, NULL, 0), BF_FULL);
      assert_memory_equal(n, copy->b, size);
    }
    /* Growing an existing record beyond reclaimable + its own size. */
    if (bf_node_count(n) > 0) {
      struct bf_record r;
      uint8_t k2[16];
      bf_node_record(n, 0, &r);
      memcpy(k2, r.key, r.key_len);
      uint32_t need = recl + r.key_len + r.value_len + 1 - r.key_len;
      if (need <= BF_MAX_VALUE_LIMIT) {
        assert_int_equal(upsert(n, k2, r.key_len, 0, val, need), BF_FULL);
        assert_memory_equal(n, copy->b, size);
        /* One byte less fits exactly (compacting if needed). */
        assert_int_equal(upsert(n, k2, r.key_len, 0, val, need - 1), BF_OK);
        check_node(n);
        assert_int_equal(bf_node_reclaimable(n), 0);
      }
    }
  }
  free(copy);
  free(pb);
}

/* A tombstone over a full page: replacing works, a new key is BF_FULL. */
static void test_tombstone_full(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf(), *copy = new_buf();
  uint8_t *n = pb->b;
  bf_node_init(n, 512);
  uint32_t i = 0;
  char key[16], val[32];
  for (;; i++) {
    snprintf(key, sizeof key, "key%04u", i);
    memset(val, 'v', sizeof val);
    if (upsert(n, (uint8_t *)key, 7, 0, (uint8_t *)val, 20) != BF_OK) break;
  }
  uint32_t count = bf_node_count(n);
  assert_true(count > 5);
  assert_true(bf_node_reclaimable(n) < 8 + 7);
  memcpy(copy->b, n, 512);
  /* New key: tombstone needs a slot + key bytes: BF_FULL, unchanged. */
  assert_int_equal(upsert(n, (const uint8_t *)"key0002x", 8, BF_REC_TOMBSTONE,
                          NULL, 0),
                   BF_FULL);
  assert_memory_equal(n, copy->b, 512);
  /* Existing key: the tombstone replaces the value in place. */
  uint32_t recl = bf_node_reclaimable(n);
  assert_int_equal(
      upsert(n, (const uint8_t *)"key0003", 7, BF_REC_TOMBSTONE, NULL, 0),
      BF_OK);
  check_node(n);
  assert_int_equal(bf_node_count(n), count);
  expect_rec(n, 3, (const uint8_t *)"key0003", 7, BF_REC_TOMBSTONE, NULL, 0);
  assert_int_equal(bf_node_reclaimable(n), recl + 20);
  /* Now the new-key tombstone fits (after compaction). */
  assert_int_equal(upsert(n, (const uint8_t *)"key0002x", 8, BF_REC_TOMBSTONE,
                          NULL, 0),
                   BF_OK);
  check_node(n);
  uint32_t idx;
  assert_true(find(n, (const uint8_t *)"key0002x", 8, &idx));
  assert_int_equal(idx, 3);
  expect_rec(n, idx, (const uint8_t *)"key0002x", 8, BF_REC_TOMBSTONE, NULL,
             0);
  /* Every other record intact. */
  for (uint32_t j = 0; j < count; j++) {
    snprintf(key, sizeof key, "key%04u", j);
    assert_true(find(n, (uint8_t *)key, 7, &idx));
    expect_rec(n, idx, (uint8_t *)key, 7,
               j == 3 ? BF_REC_TOMBSTONE : BF_REC_INSERT, (uint8_t *)val,
               j == 3 ? 0 : 20);
  }
  free(copy);
  free(pb);
}

/* Replacing big by small and small by big, each space case. */
static void test_replace_sizes(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf();
  uint8_t *n = pb->b;
  uint8_t v[256];
  for (int i = 0; i < 256; i++) v[i] = (uint8_t)(i * 7 + 1);
  bf_node_init(n, 256);
  assert_int_equal(upsert(n, S("a"), 0, v, 10), BF_OK);
  assert_int_equal(upsert(n, S("b"), 0, v + 1, 100), BF_OK);
  assert_int_equal(upsert(n, S("c"), 0, v + 2, 10), BF_OK);
  check_node(n);
  /* Big -> small: garbage grows by the difference. */
  assert_int_equal(upsert(n, S("b"), 0, v + 3, 5), BF_OK);
  check_node(n);
  expect_rec(n, 1, S("b"), 0, v + 3, 5);
  assert_int_equal(bf_node_used(n), 24 + 3 + 25);
  /* Small -> big from free space. */
  uint32_t free0 = bf_node_free(n);
  assert_int_equal(upsert(n, S("a"), 0, v + 4, 50), BF_OK);
  check_node(n);
  expect_rec(n, 0, S("a"), 0, v + 4, 50);
  assert_int_equal(bf_node_free(n), free0 - 51);
  /* The lowest record grows downward in place: no garbage added. */
  uint32_t recl = bf_node_reclaimable(n);
  assert_int_equal(upsert(n, S("a"), 0, v + 5, 60), BF_OK);
  check_node(n);
  assert_int_equal(bf_node_reclaimable(n), recl - 10);
  expect_rec(n, 0, S("a"), 0, v + 5, 60);
  /* Small -> big needing compaction (free < need <= reclaimable + old). */
  recl = bf_node_reclaimable(n);
  uint32_t fr = bf_node_free(n);
  uint32_t want = fr + 5; /* more than free; old c is 11 bytes */
  assert_true(want + 1 <= recl + 11);
  assert_int_equal(upsert(n, S("c"), 0, v + 6, want), BF_OK);
  check_node(n);
  expect_rec(n, 0, S("a"), 0, v + 5, 60);
  expect_rec(n, 1, S("b"), 0, v + 3, 5);
  expect_rec(n, 2, S("c"), 0, v + 6, want);
  assert_int_equal(bf_node_reclaimable(n), recl + 10 - want);
  /* Back to tiny, then big again. */
  assert_int_equal(upsert(n, S("c"), 0, NULL, 0), BF_OK);
  assert_int_equal(upsert(n, S("b"), 0, v, 120), BF_OK);
  check_node(n);
  expect_rec(n, 1, S("b"), 0, v, 120);
  expect_rec(n, 2, S("c"), 0, NULL, 0);
  free(pb);
}

/* Known bugs of other implementations, one scenario each. */
static void test_known_bugs(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf();
  uint8_t *n = pb->b;
  uint32_t idx;
  uint8_t v[64];
  memset(v, 'x', sizeof v);

  /* (1) Stale free-space frontier: after compaction (triggered inside an
  ** upsert) the new record must go below the compacted heap, not below the
  ** heap_start read before compaction. */
  bf_node_init(n, 128);
  assert_int_equal(upsert(n, S("k1"), 0, v, 30), BF_OK);
  assert_int_equal(upsert(n, S("k2"), 0, v, 30), BF_OK);
  assert_int_equal(upsert(n, S("k3"), 0, v, 20), BF_OK);
  /* free = 120 - 24 - 86 = 10 */
  assert_true(find(n, S("k2"), &idx));
  bf_node_remove(n, idx); /* 32 bytes of garbage in the middle */
  assert_int_equal(upsert(n, S("k0"), 0, (const uint8_t *)"abcdefghijklmnop",
                          16),
                   BF_OK); /* needs 26 > free 18: compacts */
  check_node(n);
  expect_rec(n, 0, S("k0"), 0, (const uint8_t *)"abcdefghijklmnop", 16);
  expect_rec(n, 1, S("k1"), 0, v, 30);
  expect_rec(n, 2, S("k3"), 0, v, 20);

  /* (2) Largest offset computed before shifting slots: insert at the front
  ** of a node, then again, checking that every record keeps its bytes. */
  bf_node_init(n, 512);
  for (int i = 9; i >= 0; i--) {
    uint8_t key[2] = {'k', (uint8_t)('0' + i)};
    uint8_t val[10];
    memset(val, '0' + i, sizeof val);
    assert_int_equal(upsert(n, key, 2, 0, val, (uint32_t)i), BF_OK);
    check_node(n);
    for (int j = i; j <= 9; j++) {
      uint8_t kj[2] = {'k', (uint8_t)('0' + j)};
      uint8_t vj[10];
      memset(vj, '0' + j, sizeof vj);
      expect_rec(n, (uint32_t)(j - i), kj, 2, 0, vj, (uint32_t)j);
    }
  }

  /* (3) Binary-search direction: insertion points for keys around each
  ** record, versus a linear scan. */
  for (uint32_t probe = 0; probe < 256; probe++) {
    uint8_t key[3] = {'k', (uint8_t)probe, 'z'};
    for (uint32_t kl = 1; kl <= 3; kl++) {
      uint32_t lin = 0, c = bf_node_count(n);
      struct bf_record r;
      while (lin < c) {
        bf_node_record(n, lin, &r);
        if (bf_key_compare(r.key, r.key_len, key, kl) >= 0) break;
        lin++;
      }
      bool exact = false;
      if (lin < c) {
        bf_node_record(n, lin, &r);
        exact = bf_key_compare(r.key, r.key_len, key, kl) == 0;
      }
      assert_int_equal(find(n, key, kl, &idx), exact);
      assert_int_equal(idx, lin);
    }
  }

  /* (4) Losing a tombstone when the page is full: covered in detail by
  ** test_tombstone_full; here: a full node with garbage, where the tombstone
  ** fits only after compaction. */
  bf_node_init(n, 128);
  assert_int_equal(upsert(n, S("a"), 0, v, 40), BF_OK);
  assert_int_equal(upsert(n, S("b"), 0, v, 50), BF_OK);
  assert_int_equal(upsert(n, S("b"), 0, v, 10), BF_OK); /* 40 garbage */
  assert_true(bf_node_free(n) < 8 + 5);
  assert_int_equal(upsert(n, S("ccccc"), BF_REC_TOMBSTONE, NULL, 0), BF_OK);
  check_node(n);
  assert_true(find(n, S("ccccc"), &idx));
  expect_rec(n, idx, S("ccccc"), BF_REC_TOMBSTONE, NULL, 0);
  expect_rec(n, 0, S("a"), 0, v, 40);
  expect_rec(n, 1, S("b"), 0, v, 10);
  free(pb);
}

/* ------------------------------------------------------------------------
** Randomized comparison with a sorted-array model.
*/
#define MKEY 24
#define MVAL 300
struct mrec {
  uint8_t key[MKEY];
  uint32_t klen;
  uint8_t val[MVAL];
  uint32_t vlen;
  int type;
  bool ref;
};

static struct mrec *model;
static uint32_t model_n;

static uint32_t model_find(const uint8_t *k, uint32_t kl, bool *found) {
  uint32_t lo = 0, hi = model_n;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    int c = bf_key_compare(model[mid].key, model[mid].klen, k, kl);
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  *found = lo < model_n &&
           bf_key_compare(model[lo].key, model[lo].klen, k, kl) == 0;
  return lo;
}

static void random_key(uint64_t *rs, uint8_t *k, uint32_t *kl) {
  static const uint8_t alpha[] = {0x00, 0x01, 'a', 'b', 0xff};
  uint32_t len = (uint32_t)(test_rand(rs) % 5);
  if (test_rand(rs) % 10 == 0) len = (uint32_t)(test_rand(rs) % (MKEY + 1));
  for (uint32_t i = 0; i < len; i++) k[i] = alpha[test_rand(rs) % 5];
  *kl = len;
}

static void compare_model(const uint8_t *n) {
  check_node(n);
  assert_int_equal(bf_node_count(n), model_n);
  uint32_t used = 0;
  for (uint32_t i = 0; i < model_n; i++) {
    struct bf_record r;
    bf_node_record(n, i, &r);
    assert_int_equal(r.key_len, model[i].klen);
    if (r.key_len) assert_memory_equal(r.key, model[i].key, r.key_len);
    assert_int_equal(r.value_len, model[i].vlen);
    if (r.value_len) assert_memory_equal(r.value, model[i].val, r.value_len);
    assert_int_equal(r.type, model[i].type);
    assert_int_equal(r.referenced, model[i].ref);
    used += 8 + r.key_len + r.value_len;
  }
  assert_int_equal(bf_node_used(n), used);
  assert_int_equal(bf_node_reclaimable(n),
                   bf_node_size(n) - BF_NODE_HEADER - used);
}

static void test_random_model(void **state) {
  BF_UNUSED(state);
  uint64_t rs = test_seed("random_model");
  page_buf *pb = new_buf(), *copy = new_buf();
  uint8_t *n = pb->b;
  model = calloc(BF_MAX_NODE_SIZE / 8, sizeof *model);
  assert_non_null(model);
  long rounds = test_scale(60);
  uint64_t fulls = 0, oks = 0;
  for (long round = 0; round < rounds; round++) {
    uint32_t size = 64u << (test_rand(&rs) % 10); /* 64 .. 32768 */
    uint32_t vmax = size / 8 < MVAL ? size / 8 : MVAL;
    bf_node_init(n, size);
    model_n = 0;
    long ops = test_scale(3000);
    for (long op = 0; op < ops; op++) {
      uint8_t k[MKEY], v[MVAL];
      uint32_t kl, vl, idx;
      bool found;
      random_key(&rs, k, &kl);
      uint32_t mi = model_find(k, kl, &found);
      uint32_t what = (uint32_t)(test_rand(&rs) % 100);
      if (what < 55) {
        int type = (int)(test_rand(&rs) % 4);
        vl = (uint32_t)(test_rand(&rs) % (vmax + 1));
        if (test_rand(&rs) % 4 == 0) vl = (uint32_t)(test_rand(&rs) % 9);
        for (uint32_t i = 0; i < vl; i++) v[i] = (uint8_t)test_rand(&rs);
        uint32_t reclaim = bf_node_reclaimable(n);
        uint32_t old = found ? model[mi].klen + model[mi].vlen : 0;
        bool fits = found ? reclaim + old >= kl + vl : reclaim >= 8 + kl + vl;
        memcpy(copy->b, n, size);
        int rc = upsert(n, k, kl, type, v, vl);
        if (!fits) {
          assert_int_equal(rc, BF_FULL);
          assert_memory_equal(n, copy->b, size);
          fulls++;
          continue;
        }
        assert_int_equal(rc, BF_OK);
        oks++;
        if (!found) {
          memmove(&model[mi + 1], &model[mi],
                  (model_n - mi) * sizeof *model);
          model_n++;
          memcpy(model[mi].key, k, kl);
          model[mi].klen = kl;
        }
        memcpy(model[mi].val, v, vl);
        model[mi].vlen = vl;
        model[mi].type = type;
        model[mi].ref = false;
      } else if (what < 70) {
        if (model_n == 0) continue;
        mi = (uint32_t)(test_rand(&rs) % model_n);
        bf_node_remove(n, mi);
        memmove(&model[mi], &model[mi + 1],
                (model_n - mi - 1) * sizeof *model);
        model_n--;
      } else if (what < 85) {
        assert_int_equal(find(n, k, kl, &idx), found);
        assert_int_equal(idx, mi);
      } else if (what < 90) {
        if (model_n == 0) continue;
        mi = (uint32_t)(test_rand(&rs) % model_n);
        bf_node_mark_referenced(n, mi);
        model[mi].ref = true;
      } else if (what < 93) {
        if (model_n == 0) continue;
        mi = (uint32_t)(test_rand(&rs) % model_n);
        int type = (int)(test_rand(&rs) % 4);
        bf_node_set_type(n, mi, type);
        model[mi].type = type;
      } else if (what < 95) {
        bf_node_compact(n);
        assert_int_equal(bf_node_free(n), bf_node_reclaimable(n));
      } else if (what < 96) {
        bf_node_clear_references(n);
        for (uint32_t i = 0; i < model_n; i++) model[i].ref = false;
      } else {
        /* Copy into a fresh node of random size and compare. */
        uint32_t dsize = 64u << (test_rand(&rs) % 10);
        bf_node_init(copy->b, dsize);
        int rc = bf_node_copy(copy->b, n);
        check_node(copy->b);
        uint32_t need = bf_node_used(n);
        if (need <= dsize - BF_NODE_HEADER) {
          assert_int_equal(rc, BF_OK);
          assert_int_equal(bf_node_count(copy->b), model_n);
          assert_int_equal(bf_node_free(copy->b), dsize - 8 - need);
        } else {
          assert_int_equal(rc, BF_FULL);
        }
        for (uint32_t i = 0; i < bf_node_count(copy->b); i++) {
          struct bf_record r;
          bf_node_record(copy->b, i, &r);
          assert_int_equal(r.key_len, model[i].klen);
          if (r.key_len) assert_memory_equal(r.key, model[i].key, r.key_len);
          assert_int_equal(r.value_len, model[i].vlen);
          if (r.value_len)
            assert_memory_equal(r.value, model[i].val, r.value_len);
          assert_int_equal(r.type, model[i].type);
          assert_int_equal(r.referenced, model[i].ref);
        }
      }
      if (op % 64 == 0) compare_model(n);
    }
    compare_model(n);
  }
  assert_true(fulls > 0 && oks > 0);
  free(model);
  model = NULL;
  free(copy);
  free(pb);
}

/* ------------------------------------------------------------------------
** Copy and append.
*/
static void test_copy_append(void **state) {
  BF_UNUSED(state);
  page_buf *a = new_buf(), *b = new_buf();
  bf_node_init(a->b, 1024);
  char key[16];
  uint8_t val[40];
  uint32_t i;
  for (i = 0; i < 20; i++) {
    snprintf(key, sizeof key, "k%03u", i);
    memset(val, (int)i, sizeof val);
    assert_int_equal(bf_node_append(a->b, (uint8_t *)key, 4, (int)(i % 4),
                                    val, i, i % 3 == 0),
                     BF_OK);
  }
  check_node(a->b);
  for (i = 0; i < 20; i += 2) bf_node_remove(a->b, 20 - 1 - i); /* garbage */
  check_node(a->b);
  assert_int_equal(bf_node_count(a->b), 10);
  uint32_t used = bf_node_used(a->b);

  /* Larger destination. */
  bf_node_init(b->b, 4096);
  assert_int_equal(bf_node_copy(b->b, a->b), BF_OK);
  check_node(b->b);
  assert_int_equal(bf_node_used(b->b), used);
  assert_int_equal(bf_node_reclaimable(b->b), bf_node_free(b->b));
  for (i = 0; i < 10; i++) {
    struct bf_record r1, r2;
    bf_node_record(a->b, i, &r1);
    bf_node_record(b->b, i, &r2);
    assert_int_equal(r1.key_len, r2.key_len);
    assert_memory_equal(r1.key, r2.key, r1.key_len);
    assert_int_equal(r1.value_len, r2.value_len);
    if (r1.value_len) assert_memory_equal(r1.value, r2.value, r1.value_len);
    assert_int_equal(r1.type, r2.type);
    assert_int_equal(r1.referenced, r2.referenced);
  }
  /* Exactly fitting destination (smaller than the source). */
  uint32_t exact = (BF_NODE_HEADER + used + 7) & ~7u;
  bf_node_init(b->b, exact);
  assert_int_equal(bf_node_copy(b->b, a->b), BF_OK);
  check_node(b->b);
  assert_int_equal(bf_node_count(b->b), 10);
  /* Too small: BF_FULL with a prefix of the records. */
  bf_node_init(b->b, 64);
  assert_int_equal(bf_node_copy(b->b, a->b), BF_FULL);
  check_node(b->b);
  assert_true(bf_node_count(b->b) < 10);
  for (i = 0; i < bf_node_count(b->b); i++) {
    struct bf_record r1, r2;
    bf_node_record(a->b, i, &r1);
    bf_node_record(b->b, i, &r2);
    assert_memory_equal(r1.key, r2.key, 4);
  }

  /* Append until BF_FULL leaves the node unchanged, and compacts when that
  ** makes room. */
  bf_node_init(b->b, 128);
  assert_int_equal(bf_node_append(b->b, S("a"), 0, val, 40, false), BF_OK);
  assert_int_equal(bf_node_append(b->b, S("b"), 0, val, 40, true), BF_OK);
  memcpy(a->b, b->b, 128);
  assert_int_equal(bf_node_append(b->b, S("c"), 0, val, 40, false), BF_FULL);
  assert_memory_equal(a->b, b->b, 128);
  bf_node_remove(b->b, 0); /* "a" is not at heap_start: garbage */
  assert_true(bf_node_free(b->b) < 8 + 1 + 40);
  assert_int_equal(bf_node_append(b->b, S("c"), 0, val, 40, true), BF_OK);
  check_node(b->b);
  expect_rec(b->b, 1, S("c"), 0, val, 40);
  struct bf_record r;
  bf_node_record(b->b, 1, &r);
  assert_true(r.referenced);
  assert_int_equal(bf_node_append(b->b, S("d"), 0, NULL, BF_MAX_VALUE_LIMIT + 1,
                                  false),
                   BF_TOOBIG);
  free(a);
  free(b);
}

/* ------------------------------------------------------------------------
** Reference bits, and concurrent readers (meaningful under tsan).
*/
struct reader_arg {
  uint8_t *node;
  uint64_t seed;
  long iters;
  long found;
};

static void *reader_thread(void *p) {
  struct reader_arg *a = p;
  for (long i = 0; i < a->iters; i++) {
    char key[16];
    uint32_t idx;
    snprintf(key, sizeof key, "r%05u", (unsigned)(test_rand(&a->seed) % 400));
    if (bf_node_search(a->node, (uint8_t *)key, 6, &idx)) {
      struct bf_record r;
      bf_node_record(a->node, idx, &r);
      if (r.key_len == 6 && memcmp(r.key, key, 6) == 0) a->found++;
      bf_node_mark_referenced(a->node, idx);
    }
  }
  return NULL;
}

static void test_references(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf();
  uint8_t *n = pb->b;
  bf_node_init(n, 8192);
  for (uint32_t i = 0; i < 400; i += 2) {
    char key[16];
    snprintf(key, sizeof key, "r%05u", i);
    assert_int_equal(upsert(n, (uint8_t *)key, 6, 0, (uint8_t *)key, 6),
                     BF_OK);
  }
  struct bf_record r;
  bf_node_mark_referenced(n, 3);
  bf_node_record(n, 3, &r);
  assert_true(r.referenced);
  bf_node_record(n, 4, &r);
  assert_false(r.referenced);
  /* A replaced record starts unreferenced. */
  assert_int_equal(upsert(n, (const uint8_t *)"r00006", 6, 0, S("new")),
                   BF_OK);
  bf_node_record(n, 3, &r);
  assert_false(r.referenced);
  check_node(n);

  uint64_t seed = test_seed("references");
  struct reader_arg args[2];
  pthread_t th[2];
  for (int t = 0; t < 2; t++) {
    args[t] = (struct reader_arg){n, seed + (uint64_t)t, test_scale(100000), 0};
    assert_int_equal(pthread_create(&th[t], NULL, reader_thread, &args[t]), 0);
  }
  for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
  assert_true(args[0].found > 0 && args[1].found > 0);
  check_node(n);
  uint32_t refs = 0;
  for (uint32_t i = 0; i < bf_node_count(n); i++) {
    bf_node_record(n, i, &r);
    refs += r.referenced;
  }
  assert_true(refs > 100);
  bf_node_clear_references(n);
  for (uint32_t i = 0; i < bf_node_count(n); i++) {
    bf_node_record(n, i, &r);
    assert_false(r.referenced);
  }
  check_node(n);
  free(pb);
}

/* ------------------------------------------------------------------------
** Leaf pages.
*/
static void fill_leaf(struct bf_leaf *lf, const char *fmt, uint32_t lo,
                      uint32_t hi, uint32_t vlen, uint32_t *inserted) {
  uint8_t val[64];
  memset(val, 'v', sizeof val);
  *inserted = 0;
  for (uint32_t i = lo; i < hi; i++) {
    char key[32];
    int kl = snprintf(key, sizeof key, fmt, i);
    assert_true(bf_leaf_contains(lf, (uint8_t *)key, (uint32_t)kl));
    uint32_t p = lf->prefix_len;
    if (p) assert_memory_equal(key, lf->low, p);
    if (bf_node_upsert(lf->node, (uint8_t *)key + p, (uint32_t)kl - p, 0, val,
                       vlen) != BF_OK)
      break;
    (*inserted)++;
  }
}

static void verify_ok(uint8_t *page, uint32_t ps, uint64_t pageno,
                      struct bf_leaf *out) {
  char err[200] = "";
  int rc = bf_leaf_verify(page, ps, pageno, out, err, sizeof err);
  if (rc != BF_OK) fail_msg("bf_leaf_verify: %s", err);
}

static void test_leaf_roundtrip(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf();
  uint8_t *page = pb->b;
  for (uint32_t ps = 512; ps <= 32768; ps *= 2) {
    for (int fences = 0; fences < 4; fences++) {
      const uint8_t *low = fences & 1 ? (const uint8_t *)"key00100" : NULL;
      const uint8_t *high = fences & 2 ? (const uint8_t *)"key90000" : NULL;
      struct bf_leaf lf, lv;
      bf_leaf_init(page, ps, low, 8, high, 8, &lf);
      assert_int_equal(lf.prefix_len, fences == 3 ? 3 : 0);
      assert_true((lf.low != NULL) == (low != NULL));
      assert_true((lf.high != NULL) == (high != NULL));
      assert_int_equal((uintptr_t)lf.node % 8, 0);
      uint32_t nins;
      fill_leaf(&lf, "key%05u", 100, 90000, 12, &nins);
      assert_true(nins > 5);
      bf_leaf_seal(page, ps, 1000 + ps, 77 + (uint64_t)fences);
      verify_ok(page, ps, 1000 + ps, &lv);
      assert_ptr_equal(lv.node, lf.node);
      assert_int_equal(lv.lsn, 77 + (uint64_t)fences);
      assert_int_equal(lv.prefix_len, lf.prefix_len);
      assert_int_equal(lv.page_size, ps);
      assert_int_equal(lv.low_len, low ? 8 : 0);
      assert_int_equal(lv.high_len, high ? 8 : 0);
      assert_int_equal(bf_node_count(lv.node), nins);
      /* Search and full keys. */
      for (uint32_t i = 100; i < 100 + nins; i += 7) {
        char key[32];
        uint8_t full[64];
        uint32_t idx;
        snprintf(key, sizeof key, "key%05u", i);
        assert_true(bf_leaf_search(&lv, (uint8_t *)key, 8, &idx));
        assert_int_equal(idx, i - 100);
        assert_int_equal(bf_leaf_full_key(&lv, idx, full), 8);
        assert_memory_equal(full, key, 8);
      }
      /* Wrong page number: corrupt. */
      char err[200];
      assert_int_equal(bf_leaf_verify(page, ps, 999, NULL, err, sizeof err),
                       BF_CORRUPT);
      assert_non_null(strstr(err, "claims"));
      /* bf_leaf_view agrees with verify. */
      bf_leaf_view(page, ps, &lf);
      assert_ptr_equal(lf.node, lv.node);
      assert_int_equal(lf.lsn, lv.lsn);
    }
  }
  free(pb);
}

static void test_leaf_contains(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf();
  struct bf_leaf lf;
  bf_leaf_init(pb->b, 4096, S("b"), S("d"), &lf);
  assert_false(bf_leaf_contains(&lf, S("a")));
  assert_false(bf_leaf_contains(&lf, S("")));
  assert_true(bf_leaf_contains(&lf, S("b")));
  assert_true(bf_leaf_contains(&lf, S("b\0")));
  assert_true(bf_leaf_contains(&lf, S("czz")));
  assert_false(bf_leaf_contains(&lf, S("d")));
  assert_false(bf_leaf_contains(&lf, S("d\0")));
  bf_leaf_init(pb->b, 4096, NULL, 0, NULL, 0, &lf);
  assert_true(bf_leaf_contains(&lf, S("")));
  assert_true(bf_leaf_contains(&lf, S("\xff\xff")));
  /* The empty key as low fence is finite and includes "". */
  bf_leaf_init(pb->b, 512, S(""), S("a"), &lf);
  assert_true(bf_leaf_contains(&lf, S("")));
  assert_true(bf_leaf_contains(&lf, S("\0")));
  assert_false(bf_leaf_contains(&lf, S("a")));
  bf_leaf_seal(pb->b, 512, 1, 1);
  verify_ok(pb->b, 512, 1, &lf);
  assert_non_null(lf.low);
  assert_non_null(lf.high);
  assert_int_equal(lf.low_len, 0);
  free(pb);
}

static void test_prefix(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf();
  uint8_t *page = pb->b;
  struct bf_leaf lf;
  bf_leaf_init(page, 16384, S("user:0001"), S("user:0999"), &lf);
  assert_int_equal(lf.prefix_len, 6);
  assert_memory_equal(lf.low, "user:0", 6);
  uint32_t nins;
  fill_leaf(&lf, "user:%04u", 1, 999, 4, &nins);
  assert_int_equal(nins, 998);
  /* Records store keys without the prefix. */
  struct bf_record r;
  bf_node_record(lf.node, 0, &r);
  assert_int_equal(r.key_len, 3);
  assert_memory_equal(r.key, "001", 3);
  bf_leaf_seal(page, 16384, 5, 9);
  verify_ok(page, 16384, 5, &lf);
  uint32_t idx;
  uint8_t full[32];
  assert_true(bf_leaf_search(&lf, S("user:0500"), &idx));
  assert_int_equal(idx, 499);
  assert_int_equal(bf_leaf_full_key(&lf, idx, full), 9);
  assert_memory_equal(full, "user:0500", 9);
  assert_false(bf_leaf_search(&lf, S("user:0500\0"), &idx));
  assert_int_equal(idx, 500);
  assert_false(bf_leaf_search(&lf, S("user:0"), &idx));
  assert_int_equal(idx, 0);
  /* Keys outside the fences that do not start with the prefix: never read
  ** out of bounds, and give the right end. */
  assert_false(bf_leaf_search(&lf, S("user:"), &idx));
  assert_int_equal(idx, 0);
  assert_false(bf_leaf_search(&lf, S(""), &idx));
  assert_int_equal(idx, 0);
  assert_false(bf_leaf_search(&lf, S("a"), &idx));
  assert_int_equal(idx, 0);
  assert_false(bf_leaf_search(&lf, S("user:1"), &idx));
  assert_int_equal(idx, 998);
  assert_false(bf_leaf_search(&lf, S("z"), &idx));
  assert_int_equal(idx, 998);

  /* Low fence a prefix of high: prefix is the whole low fence. */
  bf_leaf_init(page, 1024, S("ab"), S("abc"), &lf);
  assert_int_equal(lf.prefix_len, 2);
  assert_int_equal(bf_node_upsert(lf.node, NULL, 0, 0, S("x")), BF_OK);
  assert_int_equal(bf_node_upsert(lf.node, S("\0"), 0, S("y")), BF_OK);
  assert_int_equal(bf_node_upsert(lf.node, S("bzz"), 0, S("z")), BF_OK);
  bf_leaf_seal(page, 1024, 3, 3);
  verify_ok(page, 1024, 3, &lf);
  assert_true(bf_leaf_search(&lf, S("ab"), &idx));
  assert_int_equal(idx, 0);
  assert_int_equal(bf_leaf_full_key(&lf, 0, full), 2);
  assert_true(bf_leaf_search(&lf, S("ab\0"), &idx));
  assert_int_equal(idx, 1);
  /* A record at or above the high fence ("abc" = prefix + "c"). */
  assert_int_equal(bf_node_upsert(lf.node, S("c"), 0, S("bad")), BF_OK);
  bf_leaf_seal(page, 1024, 3, 3);
  char err[200];
  assert_int_equal(bf_leaf_verify(page, 1024, 3, NULL, err, sizeof err),
                   BF_CORRUPT);
  assert_non_null(strstr(err, "high fence"));
  free(pb);
}

/* Build the 4 KiB test leaf used by the corruption tests. */
static void build_leaf(uint8_t *page, uint32_t ps) {
  struct bf_leaf lf;
  bf_leaf_init(page, ps, S("key00100"), S("key09000"), &lf);
  uint32_t nins;
  fill_leaf(&lf, "key%05u", 100, 9000, 10, &nins);
  /* Leave some garbage and free space. */
  for (uint32_t i = 0; i < 5; i++) bf_node_remove(lf.node, i * 3);
  bf_leaf_seal(page, ps, 42, 7);
}

/* Every single-byte change anywhere is detected (CRC-32C catches all bursts
** of up to 32 bits). */
static void test_leaf_flip_every_byte(void **state) {
  BF_UNUSED(state);
  uint64_t rs = test_seed("leaf_flip_every_byte");
  page_buf *pb = new_buf();
  uint8_t *page = pb->b;
  const uint32_t ps = 4096;
  build_leaf(page, ps);
  verify_ok(page, ps, 42, NULL);
  for (uint32_t pos = 0; pos < ps; pos++) {
    uint8_t saved = page[pos];
    uint8_t x = (uint8_t)(1 + test_rand(&rs) % 255);
    page[pos] ^= x;
    char err[200] = "";
    assert_int_equal(bf_leaf_verify(page, ps, 42, NULL, err, sizeof err),
                     BF_CORRUPT);
    assert_true(err[0] != 0);
    page[pos] = saved;
  }
  verify_ok(page, ps, 42, NULL);
  free(pb);
}

/* Each kind of corruption behind a valid checksum, with its message. */
static void expect_corrupt(uint8_t *page, uint32_t ps, uint64_t pageno,
                           const char *want) {
  char err[200] = "";
  bf_leaf_seal(page, ps, pageno, 7);
  int rc = bf_leaf_verify(page, ps, pageno, NULL, err, sizeof err);
  if (rc != BF_CORRUPT) fail_msg("expected corruption '%s', got %d", want, rc);
  if (!strstr(err, want)) fail_msg("expected '%s', got '%s'", want, err);
}

static void test_leaf_verify_kinds(void **state) {
  BF_UNUSED(state);
  page_buf *pb = new_buf(), *orig = new_buf();
  uint8_t *page = pb->b;
  const uint32_t ps = 4096;
  build_leaf(orig->b, ps);
  struct bf_leaf lf;
  char err[200];
#define RESET() memcpy(page, orig->b, ps)

  RESET();
  page[0] ^= 1;
  assert_int_equal(bf_leaf_verify(page, ps, 42, NULL, err, sizeof err),
                   BF_CORRUPT);
  assert_non_null(strstr(err, "checksum"));
  RESET();
  assert_int_equal(bf_leaf_verify(page, 1000, 42, NULL, err, sizeof err),
                   BF_CORRUPT);
  assert_non_null(strstr(err, "page size"));

  RESET();
  page[5] ^= 0x20;
  expect_corrupt(page, ps, 42, "magic");
  RESET();
  bf_leaf_seal(page, ps, 43, 7);
  assert_int_equal(bf_leaf_verify(page, ps, 42, NULL, err, sizeof err),
                   BF_CORRUPT);
  assert_non_null(strstr(err, "claims number 43"));
  RESET();
  bf_put16(page + 30, 4);
  expect_corrupt(page, ps, 42, "flags");
  RESET();
  bf_put16(page + 30, BF_LEAF_LOW_INF);
  expect_corrupt(page, ps, 42, "infinite fence");
  RESET();
  bf_put16(page + 24, 4090);
  expect_corrupt(page, ps, 42, "fence lengths");
  RESET();
  bf_put16(page + 26, 0xffff);
  expect_corrupt(page, ps, 42, "fence lengths");
  /* low >= high: swap the fences. */
  RESET();
  memcpy(page + 32, "key09000key00100", 16);
  expect_corrupt(page, ps, 42, "low fence >= high");
  RESET();
  memcpy(page + 32 + 8, "key00100", 8);
  expect_corrupt(page, ps, 42, "low fence >= high");
  /* Prefix inconsistent. */
  RESET();
  bf_put16(page + 28, 2);
  expect_corrupt(page, ps, 42, "prefix");
  RESET();
  bf_put16(page + 28, 5);
  expect_corrupt(page, ps, 42, "prefix");
  RESET();
  bf_put16(page + 28, 0);
  expect_corrupt(page, ps, 42, "prefix");
  /* Node check failures. */
  bf_leaf_view(orig->b, ps, &lf);
  uint32_t noff = (uint32_t)(lf.node - orig->b);
  RESET();
  bf_put16(page + noff + 2, 5000); /* count */
  expect_corrupt(page, ps, 42, "node:");
  RESET();
  bf_put16(page + noff + 6, (uint16_t)(bf_get16(page + noff + 6) + 1));
  expect_corrupt(page, ps, 42, "garbage");
  RESET();
  bf_put16(page + noff, (uint16_t)(ps - noff - 8)); /* size */
  expect_corrupt(page, ps, 42, "size");
  RESET();
  page[noff + 8 + 8 * 3 + 7] ^= 1; /* look-ahead of slot 3 */
  expect_corrupt(page, ps, 42, "look-ahead");
  RESET();
  {
    /* Two slots pointing at the same bytes. */
    uint64_t s2 = bf_get64(page + noff + 8 + 16);
    uint64_t s1 = bf_get64(page + noff + 8 + 8);
    s1 = (s1 & ~0xffffull) | (s2 & 0xffff);
    bf_put64(page + noff + 8 + 8, s1);
    expect_corrupt(page, ps, 42, "overlap");
  }
  RESET();
  {
    /* Swap two slots: order broken. */
    uint64_t s1 = bf_get64(page + noff + 8 + 8);
    uint64_t s2 = bf_get64(page + noff + 8 + 16);
    bf_put64(page + noff + 8 + 8, s2);
    bf_put64(page + noff + 8 + 16, s1);
    expect_corrupt(page, ps, 42, "not above");
  }
  RESET();
  {
    /* A record's offset outside the heap. */
    uint64_t s1 = bf_get64(page + noff + 8);
    bf_put64(page + noff + 8, (s1 & ~0xffffull) | 8);
    expect_corrupt(page, ps, 42, "outside heap");
  }
  /* Keys outside the fences. */
  RESET();
  bf_leaf_view(page, ps, &lf);
  assert_int_equal(bf_node_upsert(lf.node, S("0099"), 0, NULL, 0), BF_OK);
  expect_corrupt(page, ps, 42, "below low fence");
  RESET();
  bf_leaf_view(page, ps, &lf);
  assert_int_equal(bf_node_upsert(lf.node, S("9000"), 0, NULL, 0), BF_OK);
  expect_corrupt(page, ps, 42, "high fence");
  /* Control: re-sealing the original verifies. */
  RESET();
  bf_leaf_seal(page, ps, 42, 7);
  verify_ok(page, ps, 42, NULL);
#undef RESET
  free(orig);
  free(pb);
}

/* ------------------------------------------------------------------------
** Fuzzing: bf_node_check and bf_leaf_verify never crash, and what they
** accept is safe to search and decode.
*/
static void exercise_node(const uint8_t *n, uint64_t *rs) {
  uint32_t c = bf_node_count(n), idx;
  uint64_t sum = 0;
  for (uint32_t i = 0; i < c; i++) {
    struct bf_record r;
    bf_node_record(n, i, &r);
    for (uint32_t j = 0; j < r.key_len; j++) sum += r.key[j];
    for (uint32_t j = 0; j < r.value_len; j++) sum += r.value[j];
  }
  for (int i = 0; i < 4; i++) {
    uint8_t k[4];
    uint32_t kl = (uint32_t)(test_rand(rs) % 5);
    for (uint32_t j = 0; j < kl; j++) k[j] = (uint8_t)test_rand(rs);
    bool f = bf_node_search(n, k, kl, &idx);
    assert_true(idx <= c);
    assert_true(!f || idx < c);
  }
  (void)sum;
}

static void test_fuzz_node_check(void **state) {
  BF_UNUSED(state);
  uint64_t rs = test_seed("fuzz_node_check");
  page_buf *pb = new_buf(), *valid = new_buf();
  uint8_t *n = pb->b;
  long iters = test_scale(20000);
  long accepted = 0, flips_ok = 0;
  for (long it = 0; it < iters; it++) {
    uint32_t size = 64u << (test_rand(&rs) % 6); /* 64 .. 2048 */
    if (it % 2 == 0) {
      /* Random bytes with a plausible header (sometimes). */
      for (uint32_t i = 0; i < size; i++) n[i] = (uint8_t)test_rand(&rs);
      if (test_rand(&rs) % 2) {
        uint32_t count = (uint32_t)(test_rand(&rs) % 6);
        bf_put16(n, (uint16_t)size);
        bf_put16(n + 2, (uint16_t)count);
        uint32_t room = size - 8 - 8 * count;
        bf_put16(n + 4, (uint16_t)(size - test_rand(&rs) % room));
        bf_put16(n + 6, (uint16_t)(test_rand(&rs) % 64));
        /* Slot offsets/lengths small so some land in the heap. */
        for (uint32_t i = 0; i < count; i++) {
          uint64_t s = test_rand(&rs);
          uint32_t off = size - (uint32_t)(test_rand(&rs) % 64);
          s = (s & ~0xffffull) | off;
          s &= ~(0x3fffull << 16);
          s |= (test_rand(&rs) % 4) << 16;
          s &= ~(0x7fffull << 32);
          s |= (test_rand(&rs) % 4) << 32;
          bf_put64(n + 8 + 8 * i, s);
        }
      }
    } else {
      /* A valid node with a few random bit flips. */
      bf_node_init(valid->b, size);
      uint32_t nrec = (uint32_t)(test_rand(&rs) % 20);
      for (uint32_t i = 0; i < nrec; i++) {
        uint8_t k[3], v[16];
        uint32_t kl = (uint32_t)(test_rand(&rs) % 4);
        uint32_t vl = (uint32_t)(test_rand(&rs) % 17);
        for (uint32_t j = 0; j < kl; j++) k[j] = (uint8_t)(test_rand(&rs) % 3);
        memset(v, 7, sizeof v);
        if (bf_node_upsert(valid->b, k, kl, 0, v, vl) != BF_OK) break;
        if (test_rand(&rs) % 4 == 0 && bf_node_count(valid->b))
          bf_node_remove(valid->b, (uint32_t)(test_rand(&rs) %
                                              bf_node_count(valid->b)));
      }
      check_node(valid->b);
      memcpy(n, valid->b, size);
      uint32_t flips = 1 + (uint32_t)(test_rand(&rs) % 3);
      for (uint32_t f = 0; f < flips; f++) {
        uint32_t bit = (uint32_t)(test_rand(&rs) % (size * 8));
        n[bit / 8] ^= (uint8_t)(1u << (bit % 8));
      }
    }
    char err[200];
    int rc = bf_node_check(n, size, err, sizeof err);
    assert_true(rc == BF_OK || rc == BF_CORRUPT);
    if (rc == BF_OK) {
      accepted++;
      if (it % 2) flips_ok++;
      exercise_node(n, &rs);
    }
    /* A wrong expected size is always refused. */
    if (bf_get16(n) != size + 8)
      assert_int_equal(bf_node_check(n, size + 8, NULL, 0), BF_CORRUPT);
    assert_int_equal(bf_node_check(n, 12, err, sizeof err), BF_CORRUPT);
  }
  printf("[ INFO     ] fuzz_node_check: %ld of %ld accepted (%ld flipped)\n",
         accepted, iters, flips_ok);
  free(valid);
  free(pb);
}

static void test_fuzz_leaf_verify(void **state) {
  BF_UNUSED(state);
  uint64_t rs = test_seed("fuzz_leaf_verify");
  page_buf *pb = new_buf(), *orig = new_buf();
  uint8_t *page = pb->b;
  long iters = test_scale(6000);
  long accepted = 0;
  for (long it = 0; it < iters; it++) {
    uint32_t ps = 512u << (test_rand(&rs) % 4); /* 512 .. 4096 */
    if (it % 3 == 0) {
      for (uint32_t i = 0; i < ps; i++) page[i] = (uint8_t)test_rand(&rs);
      bf_put32(page + 4, BF_LEAF_MAGIC);
      if (test_rand(&rs) % 2) {
        bf_put16(page + 24, (uint16_t)(test_rand(&rs) % 16));
        bf_put16(page + 26, (uint16_t)(test_rand(&rs) % 16));
        bf_put16(page + 28, (uint16_t)(test_rand(&rs) % 4));
        bf_put16(page + 30, (uint16_t)(test_rand(&rs) % 4));
      }
    } else {
      /* A valid leaf, then random byte changes behind a valid checksum. */
      struct bf_leaf lf;
      char low[8], high[8];
      uint32_t a = (uint32_t)(test_rand(&rs) % 500);
      uint32_t b = a + 1 + (uint32_t)(test_rand(&rs) % 400);
      snprintf(low, sizeof low, "k%03u", a);
      snprintf(high, sizeof high, "k%03u", b);
      bf_leaf_init(orig->b, ps, (uint8_t *)low, 4, (uint8_t *)high, 4, &lf);
      uint32_t nins;
      fill_leaf(&lf, "k%03u", a, b < a + 30 ? b : a + 30,
                (uint32_t)(test_rand(&rs) % 20), &nins);
      memcpy(page, orig->b, ps);
      uint32_t changes = 1 + (uint32_t)(test_rand(&rs) % 4);
      for (uint32_t c = 0; c < changes; c++) {
        uint32_t pos = 4 + (uint32_t)(test_rand(&rs) % (ps - 4));
        if (test_rand(&rs) % 2) pos = 4 + (uint32_t)(test_rand(&rs) % 200);
        page[pos] ^= (uint8_t)(1 + test_rand(&rs) % 255);
      }
    }
    bf_leaf_seal(page, ps, 9, 1);
    struct bf_leaf out;
    char err[200];
    int rc = bf_leaf_verify(page, ps, 9, &out, err, sizeof err);
    assert_true(rc == BF_OK || rc == BF_CORRUPT);
    if (rc == BF_OK) {
      accepted++;
      exercise_node(out.node, &rs);
      uint32_t c = bf_node_count(out.node);
      uint8_t full[64];
      for (uint32_t i = 0; i < c; i++) {
        struct bf_record r;
        bf_node_record(out.node, i, &r);
        if (out.prefix_len + r.key_len <= sizeof full) {
          uint32_t fl = bf_leaf_full_key(&out, i, full);
          assert_true(bf_leaf_contains(&out, full, fl));
          uint32_t idx;
          assert_true(bf_leaf_search(&out, full, fl, &idx));
          assert_int_equal(idx, i);
        }
      }
    }
  }
  printf("[ INFO     ] fuzz_leaf_verify: %ld of %ld accepted\n", accepted,
         iters);
  free(orig);
  free(pb);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_node_basic),
      cmocka_unit_test(test_zero_length_records),
      cmocka_unit_test(test_lookahead_ties),
      cmocka_unit_test(test_full_unchanged),
      cmocka_unit_test(test_tombstone_full),
      cmocka_unit_test(test_replace_sizes),
      cmocka_unit_test(test_known_bugs),
      cmocka_unit_test(test_random_model),
      cmocka_unit_test(test_copy_append),
      cmocka_unit_test(test_references),
      cmocka_unit_test(test_leaf_roundtrip),
      cmocka_unit_test(test_leaf_contains),
      cmocka_unit_test(test_prefix),
      cmocka_unit_test(test_leaf_flip_every_byte),
      cmocka_unit_test(test_leaf_verify_kinds),
      cmocka_unit_test(test_fuzz_node_check),
      cmocka_unit_test(test_fuzz_leaf_verify),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
