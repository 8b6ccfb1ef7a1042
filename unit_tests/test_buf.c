/*
** test_buf.c: unit tests of the circular buffer (bf_buf.c).
**
** Mini-page bodies are opaque bytes here: each live block is filled with a
** pattern derived from its owner's id and generation and verified before it
** is freed or evicted, so overlapping blocks or a premature reuse of memory
** shows up as a damaged pattern.
**
** The buffer's base address is not exported; a fresh buffer hands out its
** first block at base + 8, which the tests use to check that every block
** stays inside [base, base + size).
*/
#include "bf_int.h"
#include "test_util.h"

#include <pthread.h>
#include <sched.h>

#define HDR 8u

/* ------------------------------------------------------------------------
** Helpers.
*/
static void check_buf(struct bf_buf *buf) {
  char err[256];
  int rc = bf_buf_check(buf, err, sizeof err);
  if (rc != BF_OK) fail_msg("bf_buf_check: %s (%s)", err, bf_strerror(rc));
}

static uint64_t pattern_word(uint64_t id, uint64_t i) {
  uint64_t z = id * 0x9E3779B97F4A7C15ull + i * 0xD1B54A32D192ED03ull + 1;
  z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ull;
  return z ^ (z >> 29);
}

static void fill(uint8_t *node, uint32_t bytes, uint64_t id) {
  for (uint32_t i = 0; i < bytes / 8; i++) {
    uint64_t w = pattern_word(id, i);
    memcpy(node + 8 * i, &w, 8);
  }
}

static bool intact(const uint8_t *node, uint32_t bytes, uint64_t id) {
  for (uint32_t i = 0; i < bytes / 8; i++) {
    uint64_t w;
    memcpy(&w, node + 8 * i, 8);
    if (w != pattern_word(id, i)) return false;
  }
  return true;
}

static uint64_t used_of(struct bf_buf *buf) {
  struct bf_buf_stats st;
  bf_buf_stats(buf, &st);
  return st.used;
}

static uint8_t *alloc_ok(struct bf_buf *buf, uint32_t cls, uint32_t leaf) {
  uint8_t *node = NULL;
  int rc = bf_buf_alloc(buf, cls, leaf, &node);
  assert_int_equal(rc, BF_OK);
  assert_non_null(node);
  assert_int_equal((uintptr_t)node % 8, 0);
  assert_int_equal(bf_buf_node_state(node), BF_BLOCK_NOT_READY);
  assert_int_equal(bf_buf_node_class(node), cls);
  assert_int_equal(bf_buf_node_leaf(node), leaf);
  return node;
}

/* Retire dead blocks at the cursor until a READY one is claimed (returned)
** or nothing is claimable (NULL). */
static uint8_t *claim_next(struct bf_buf *buf, int *dead) {
  for (;;) {
    uint8_t *node;
    int rc = bf_buf_evict_next(buf, &node);
    if (rc == BF_RETRY) return NULL;
    assert_int_equal(rc, BF_OK);
    if (node) return node;
    if (dead) (*dead)++;
  }
}

/* ------------------------------------------------------------------------
** Creation and size classes.
*/
static void test_create(void **state) {
  (void)state;
  struct bf_buf *buf = (struct bf_buf *)1;
  uint32_t bad_pages[] = {0, 256, 511, 1000, 4095, 65536, 3 * 4096};
  for (size_t i = 0; i < sizeof bad_pages / sizeof bad_pages[0]; i++) {
    assert_int_equal(bf_buf_create(1 << 20, bad_pages[i], &buf), BF_INVALID);
    assert_null(buf);
  }
  /* 16 * (4096 + 8) = 65664 = 1026 * 64: the smallest legal size. */
  assert_int_equal(bf_buf_create(65663, 4096, &buf), BF_INVALID);
  assert_null(buf);
  assert_int_equal(bf_buf_create(0, 4096, &buf), BF_INVALID);
  assert_int_equal(bf_buf_create(65664, 4096, &buf), BF_OK);
  assert_int_equal(bf_buf_size(buf), 65664);
  bf_buf_destroy(buf);
  assert_int_equal(bf_buf_create(65664 + 63, 4096, &buf), BF_OK);
  assert_int_equal(bf_buf_size(buf), 65664);
  bf_buf_destroy(buf);
  assert_int_equal(bf_buf_create(1000000, 512, &buf), BF_OK);
  assert_int_equal(bf_buf_size(buf), 1000000 / 64 * 64);
  bf_buf_destroy(buf);
  bf_buf_destroy(NULL);

#ifdef BF_TESTING
  /* Each of the two allocations fails in turn. */
  for (long n = 1; n <= 2; n++) {
    bf_faultsim_set(BF_FAULT_MALLOC, n, false);
    buf = (struct bf_buf *)1;
    assert_int_equal(bf_buf_create(1 << 20, 4096, &buf), BF_NOMEM);
    assert_null(buf);
    assert_int_equal(bf_faultsim_hits(BF_FAULT_MALLOC), 1);
  }
  bf_faultsim_set(BF_FAULT_MALLOC, 0, false);
#endif
}

static void test_classes(void **state) {
  (void)state;
  for (uint32_t ps = 512, log = 9; ps <= 32768; ps <<= 1, log++) {
    struct bf_buf *buf;
    assert_int_equal(bf_buf_create(16ull * (ps + 8), ps, &buf), BF_OK);
    uint32_t n = bf_buf_class_count(buf);
    /* powers of two 64..ps, 1.5 times each from 128 up to ps/2, and 160 */
    assert_int_equal(n, (log - 5) + (log - 7) + 1);
    assert_true(n <= BF_MAX_SIZE_CLASSES);
    assert_int_equal(bf_buf_full_class(buf), n - 1);
    assert_int_equal(bf_buf_class_size(buf, n - 1), ps);
    uint32_t want = 64;
    for (uint32_t c = 0; c < n; c++) {
      uint32_t s = bf_buf_class_size(buf, c);
      assert_int_equal(s, want);
      assert_int_equal(s % 32, 0);
      /* next: 160 after 128; 1.5x after a power of two of 256 and more, and
      ** 192 after 160; else the next power of two */
      bool pow2 = (want & (want - 1)) == 0;
      if (want == 128) want = 160;
      else if (want == 160) want = 192;
      else want = pow2 && want >= 256 ? want + want / 2
                                      : (pow2 ? want * 2 : want / 3 * 4);
      if (want == ps + ps / 2) want = 0; /* no class past the page */
      assert_int_equal(bf_buf_class_for(buf, s), c);
      assert_int_equal(bf_buf_class_for(buf, s - 1), c);
      if (c + 1 < n) assert_int_equal(bf_buf_class_for(buf, s + 1), c + 1);
    }
    assert_int_equal(bf_buf_class_for(buf, 0), 0);
    assert_int_equal(bf_buf_class_for(buf, 1), 0);
    assert_int_equal(bf_buf_class_for(buf, ps + 1), n);
    /* Every class can be allocated in a fresh buffer. */
    for (uint32_t c = 0; c < n; c++) {
      uint8_t *node = alloc_ok(buf, c, c);
      fill(node, bf_buf_class_size(buf, c), c);
      bf_buf_publish(buf, node);
    }
    check_buf(buf);
    bf_buf_destroy(buf);
  }
}

/* ------------------------------------------------------------------------
** Allocation, publication, free and reuse.
*/
static void test_alloc_free_reuse(void **state) {
  (void)state;
  struct bf_buf *buf;
  struct bf_buf_stats st;
  const uint64_t size = 1 << 20;
  assert_int_equal(bf_buf_create(size, 4096, &buf), BF_OK);
  uint32_t full = bf_buf_full_class(buf);
  check_buf(buf);
  bf_buf_stats(buf, &st);
  assert_int_equal(st.used, 0);
  assert_int_equal(st.live, 0);

  /* Move the tail past the copy-on-access region (size / 10). */
  uint8_t *early[32];
  for (int i = 0; i < 32; i++) {
    early[i] = alloc_ok(buf, full, 1000 + i);
    fill(early[i], 4096, 1000 + i);
    bf_buf_publish(buf, early[i]);
    assert_int_equal(bf_buf_node_state(early[i]), BF_BLOCK_READY);
  }
  assert_true(bf_buf_in_second_chance(buf, early[0]));
  assert_false(bf_buf_in_second_chance(buf, early[31]));

  uint8_t *x = alloc_ok(buf, 1, 7);
  fill(x, 128, 7);
  bf_buf_stats(buf, &st);
  assert_int_equal(st.blocks[1], 1);
  assert_int_equal(st.blocks[full], 32);
  assert_int_equal(st.used, 32 * (4096 + HDR) + 128 + HDR);
  assert_int_equal(st.live, st.used);
  check_buf(buf);
  bf_buf_publish(buf, x);
  assert_int_equal(bf_buf_node_state(x), BF_BLOCK_READY);
  assert_false(bf_buf_in_second_chance(buf, x));
  bf_buf_set_leaf(x, 8);
  assert_int_equal(bf_buf_node_leaf(x), 8);
  assert_true(intact(x, 128, 7));

  /* Free outside the copy-on-access region: onto the free list. */
  bf_buf_free(buf, x);
  assert_int_equal(bf_buf_node_state(x), BF_BLOCK_FREELISTED);
  bf_buf_stats(buf, &st);
  assert_int_equal(st.blocks[1], 0);
  assert_int_equal(st.live, 32 * (4096 + HDR));
  assert_int_equal(st.used, 32 * (4096 + HDR) + 128 + HDR);
  check_buf(buf);
  assert_false(bf_buf_needs_eviction(buf, 1));

  /* Another class does not take it; the same class does. */
  uint8_t *y = alloc_ok(buf, bf_buf_class_for(buf, 256), 9);
  assert_ptr_not_equal(y, x);
  assert_ptr_equal(y, x + 128 + HDR);
  uint8_t *z = alloc_ok(buf, 1, 10);
  assert_ptr_equal(z, x);
  check_buf(buf);

  /* Abort releases like a free. */
  bf_buf_abort(buf, z);
  assert_int_equal(bf_buf_node_state(z), BF_BLOCK_FREELISTED);
  check_buf(buf);
  z = alloc_ok(buf, 1, 11);
  assert_ptr_equal(z, x);
  fill(z, 128, 11);
  bf_buf_publish(buf, z);
  fill(y, 256, 9);
  bf_buf_publish(buf, y);

  /* Several free blocks of one class: each comes back exactly once. */
  uint8_t *w[3];
  for (int i = 0; i < 3; i++) {
    w[i] = alloc_ok(buf, 0, 20 + i);
    bf_buf_publish(buf, w[i]);
  }
  for (int i = 0; i < 3; i++) bf_buf_free(buf, w[i]);
  check_buf(buf);
  uint64_t used_before = used_of(buf);
  bool seen[3] = {false, false, false};
  for (int i = 0; i < 3; i++) {
    uint8_t *r = alloc_ok(buf, 0, 30 + i);
    int k = r == w[0] ? 0 : r == w[1] ? 1 : r == w[2] ? 2 : -1;
    assert_true(k >= 0);
    assert_false(seen[k]);
    seen[k] = true;
    bf_buf_publish(buf, r);
  }
  assert_int_equal(used_of(buf), used_before);

  /* Free inside the copy-on-access region: a tombstone, never reused. */
  bf_buf_free(buf, early[1]);
  assert_int_equal(bf_buf_node_state(early[1]), BF_BLOCK_TOMBSTONE);
  check_buf(buf);
  uint8_t *v = alloc_ok(buf, full, 40);
  assert_ptr_not_equal(v, early[1]);
  bf_buf_abort(buf, v); /* at the tail: far from the head, free-listed */
  assert_int_equal(bf_buf_node_state(v), BF_BLOCK_FREELISTED);
  check_buf(buf);

  for (int i = 0; i < 32; i++)
    if (i != 1) assert_true(intact(early[i], 4096, 1000 + i));
  assert_true(intact(z, 128, 11));
  assert_true(intact(y, 256, 9));
  bf_buf_stats(buf, &st);
  assert_int_equal(st.blocks[full], 31);
  assert_int_equal(st.blocks[0], 3);
  assert_int_equal(st.blocks[1], 1);
  assert_int_equal(st.blocks[bf_buf_class_for(buf, 256)], 1);
  bf_buf_destroy(buf);
}

/* ------------------------------------------------------------------------
** Filling the buffer; BF_RETRY; the first wrap.
*/
static void test_fill_then_retry(void **state) {
  (void)state;
  const uint32_t classes[] = {0, 3, 6};
  for (size_t k = 0; k < 3; k++) {
    struct bf_buf *buf;
    assert_int_equal(bf_buf_create(65664, 4096, &buf), BF_OK);
    uint32_t cls = classes[k];
    uint64_t need = HDR + bf_buf_class_size(buf, cls);
    uint8_t *base = NULL, *first = NULL, *node;
    uint64_t n = 0;
    for (;;) {
      bool predicted = bf_buf_needs_eviction(buf, cls);
      int rc = bf_buf_alloc(buf, cls, (uint32_t)n, &node);
      assert_int_equal(rc == BF_RETRY, predicted);
      if (rc == BF_RETRY) {
        assert_null(node);
        break;
      }
      assert_int_equal(rc, BF_OK);
      if (!base) {
        first = node;
        base = node - HDR;
      }
      assert_ptr_equal(node, base + HDR + n * need);
      fill(node, (uint32_t)(need - HDR), n);
      bf_buf_publish(buf, node);
      n++;
    }
    assert_true(n * need <= 65664);
    assert_true(65664 - n * need < need);
    assert_int_equal(used_of(buf), n * need);
    check_buf(buf);
    /* A failed allocation changed nothing. */
    assert_int_equal(bf_buf_alloc(buf, cls, 0, &node), BF_RETRY);
    assert_int_equal(used_of(buf), n * need);
    /* The smaller class may still fit at the end: prediction must agree. */
    bool predicted = bf_buf_needs_eviction(buf, 0);
    int rc = bf_buf_alloc(buf, 0, 99, &node);
    assert_int_equal(rc == BF_RETRY, predicted);
    if (rc == BF_OK) bf_buf_abort(buf, node); /* becomes a dead block */
    check_buf(buf);

    /* Evict the first block: the next allocation pads the end and wraps to
    ** the start of the buffer. */
    uint8_t *c = claim_next(buf, NULL);
    assert_ptr_equal(c, first);
    assert_true(intact(c, (uint32_t)(need - HDR), 0));
    bf_buf_evict_done(buf, c);
    check_buf(buf);
    if (rc == BF_OK) {
      /* The dead small block at the end occupies what the wrap needs only
      ** if it overlaps; the prediction still decides. */
      predicted = bf_buf_needs_eviction(buf, cls);
      rc = bf_buf_alloc(buf, cls, 500, &node);
      assert_int_equal(rc == BF_RETRY, predicted);
    } else {
      assert_false(bf_buf_needs_eviction(buf, cls));
      rc = bf_buf_alloc(buf, cls, 500, &node);
      assert_int_equal(rc, BF_OK);
    }
    if (rc == BF_OK) {
      assert_ptr_equal(node, base + HDR); /* wrapped */
      assert_int_equal(used_of(buf), 65664);
      fill(node, (uint32_t)(need - HDR), 500);
      bf_buf_publish(buf, node);
      check_buf(buf);
      assert_true(bf_buf_needs_eviction(buf, cls));
    }
    bf_buf_destroy(buf);
  }
}

/* ------------------------------------------------------------------------
** Eviction order.
*/
static void test_fifo_eviction(void **state) {
  (void)state;
  uint64_t seed = test_seed("test_fifo_eviction");
  struct bf_buf *buf;
  assert_int_equal(bf_buf_create(1 << 20, 4096, &buf), BF_OK);
  enum { N = 600 };
  uint8_t *live[N];
  uint32_t live_id[N], live_cls[N];
  int nlive = 0, ndead = 0, nfreelisted = 0, ntomb = 0;
  /* Allocate everything first (no free-list reuse, so buffer order is
  ** allocation order), then give each block its fate. */
  static uint8_t *all[N];
  static uint32_t all_cls[N];
  for (uint32_t i = 0; i < N; i++) {
    all_cls[i] = bf_buf_class_for(buf, 64u << (test_rand(&seed) % 4));
    all[i] = alloc_ok(buf, all_cls[i], i);
    fill(all[i], bf_buf_class_size(buf, all_cls[i]), i);
    if (i) assert_true(all[i] > all[i - 1]);
  }
  for (uint32_t i = 0; i < N; i++) {
    uint8_t *node = all[i];
    switch (test_rand(&seed) % 3) {
      case 0:
        bf_buf_publish(buf, node);
        live[nlive] = node;
        live_id[nlive] = i;
        live_cls[nlive++] = all_cls[i];
        break;
      case 1:
        bf_buf_publish(buf, node);
        bf_buf_free(buf, node);
        ndead++;
        break;
      default:
        bf_buf_abort(buf, node);
        ndead++;
        break;
    }
    if (bf_buf_node_state(node) == BF_BLOCK_FREELISTED) nfreelisted++;
    if (bf_buf_node_state(node) == BF_BLOCK_TOMBSTONE) ntomb++;
  }
  assert_int_equal(nfreelisted + ntomb, ndead);
  assert_true(nfreelisted > 0 && ntomb > 0);
  check_buf(buf);

  int next = 0, dead = 0;
  for (;;) {
    uint8_t *node = claim_next(buf, &dead);
    if (!node) break;
    assert_true(next < nlive);
    assert_ptr_equal(node, live[next]);
    assert_int_equal(bf_buf_node_leaf(node), live_id[next]);
    assert_int_equal(bf_buf_node_state(node), BF_BLOCK_READY);
    assert_false(bf_buf_in_second_chance(buf, node)); /* claimed */
    assert_true(intact(node, bf_buf_class_size(buf, live_cls[next]),
                       live_id[next]));
    bf_buf_evict_done(buf, node);
    next++;
    if (next % 50 == 0) check_buf(buf);
  }
  assert_int_equal(next, nlive);
  assert_int_equal(dead, ndead);
  struct bf_buf_stats st;
  bf_buf_stats(buf, &st);
  assert_int_equal(st.used, 0);
  assert_int_equal(st.live, 0);
  for (uint32_t c = 0; c < BF_MAX_SIZE_CLASSES; c++)
    assert_int_equal(st.blocks[c], 0);
  check_buf(buf);
  for (uint32_t c = 0; c < 4; c++) assert_false(bf_buf_needs_eviction(buf, c));
  bf_buf_destroy(buf);
}

/* ------------------------------------------------------------------------
** Wrap-around with padding, FIFO throughout.
*/
static void test_wrap_padding(void **state) {
  (void)state;
  uint64_t seed = test_seed("test_wrap_padding");
  struct bf_buf *buf;
  const uint64_t size = 65664;
  assert_int_equal(bf_buf_create(size, 4096, &buf), BF_OK);
  uint32_t nclass = bf_buf_class_count(buf);
  enum { Q = 2048 };
  static uint8_t *q_node[Q];
  static uint32_t q_id[Q], q_cls[Q];
  int q_head = 0, q_len = 0;
  uint8_t *base = NULL;
  uint64_t allocated = 0;
  int pads = 0, wraps = 0;
  uint8_t *prev = NULL;
  long steps = test_scale(4000);
  for (long step = 0; step < steps; step++) {
    uint32_t cls = (uint32_t)(test_rand(&seed) % nclass);
    uint8_t *node;
    int rc;
    while ((rc = bf_buf_alloc(buf, cls, (uint32_t)step, &node)) == BF_RETRY) {
      /* Only live blocks are allocated, so a dead block is padding. */
      uint8_t *c = claim_next(buf, &pads);
      assert_non_null(c);
      assert_true(q_len > 0);
      assert_ptr_equal(c, q_node[q_head]);
      assert_true(intact(c, bf_buf_class_size(buf, q_cls[q_head]),
                         q_id[q_head]));
      bf_buf_evict_done(buf, c);
      q_head = (q_head + 1) % Q;
      q_len--;
      check_buf(buf);
    }
    assert_int_equal(rc, BF_OK);
    uint32_t bytes = bf_buf_class_size(buf, cls);
    if (!base) base = node - HDR;
    assert_true(node >= base + HDR);
    assert_true(node + bytes <= base + size);
    if (prev && node < prev) wraps++;
    prev = node;
    fill(node, bytes, (uint64_t)step);
    bf_buf_publish(buf, node);
    assert_true(q_len < Q);
    int t = (q_head + q_len) % Q;
    q_node[t] = node;
    q_id[t] = (uint32_t)step;
    q_cls[t] = cls;
    q_len++;
    allocated += bytes + HDR;
    check_buf(buf);
  }
  /* Drain: every remaining block comes out in order and intact. */
  for (;;) {
    uint8_t *c = claim_next(buf, &pads);
    if (!c) break;
    assert_ptr_equal(c, q_node[q_head]);
    assert_true(intact(c, bf_buf_class_size(buf, q_cls[q_head]), q_id[q_head]));
    bf_buf_evict_done(buf, c);
    q_head = (q_head + 1) % Q;
    q_len--;
  }
  assert_int_equal(q_len, 0);
  assert_int_equal(used_of(buf), 0);
  check_buf(buf);
  if (steps >= 4000) {
    assert_true(allocated > 3 * size);
    assert_true(wraps >= 3);
    assert_true(pads >= 1);
  }
  bf_buf_destroy(buf);
}

/* ------------------------------------------------------------------------
** Claimed blocks: freed while claimed; evictors finishing out of order.
*/
static void test_free_while_claimed(void **state) {
  (void)state;
  struct bf_buf *buf;
  assert_int_equal(bf_buf_create(1 << 20, 4096, &buf), BF_OK);
  uint8_t *a = alloc_ok(buf, 0, 1), *b = alloc_ok(buf, 0, 2);
  bf_buf_publish(buf, a);
  bf_buf_publish(buf, b);
  uint8_t *c;
  assert_int_equal(bf_buf_evict_next(buf, &c), BF_OK);
  assert_ptr_equal(c, a);
  /* The owner frees it before the evictor gets the latch. */
  bf_buf_free(buf, a);
  assert_int_equal(bf_buf_node_state(a), BF_BLOCK_TOMBSTONE);
  check_buf(buf);
  struct bf_buf_stats st;
  bf_buf_stats(buf, &st);
  assert_int_equal(st.blocks[0], 1);
  assert_int_equal(st.used, 2 * (64 + HDR));
  /* The evictor sees TOMBSTONE and just finishes. */
  bf_buf_evict_done(buf, a);
  assert_int_equal(used_of(buf), 64 + HDR);
  check_buf(buf);
  assert_int_equal(bf_buf_evict_next(buf, &c), BF_OK);
  assert_ptr_equal(c, b);
  bf_buf_evict_done(buf, c);
  assert_int_equal(used_of(buf), 0);
  bf_buf_stats(buf, &st);
  assert_int_equal(st.blocks[0], 0);
  assert_int_equal(st.live, 0);
  check_buf(buf);

  /* A NOT_READY block stops the cursor; publishing releases it. */
  uint8_t *d = alloc_ok(buf, 2, 3);
  assert_int_equal(bf_buf_evict_next(buf, &c), BF_RETRY);
  assert_null(c);
  bf_buf_publish(buf, d);
  assert_int_equal(bf_buf_evict_next(buf, &c), BF_OK);
  assert_ptr_equal(c, d);
  /* Nothing left to claim. */
  assert_int_equal(bf_buf_evict_next(buf, &c), BF_RETRY);
  bf_buf_evict_done(buf, d);
  assert_int_equal(bf_buf_evict_next(buf, &c), BF_RETRY);
  check_buf(buf);

  /* Far from the head (earlier claims keep the head back), a claimed block
  ** freed by its owner still becomes a tombstone, never free-listed. */
  uint32_t full = bf_buf_full_class(buf);
  uint8_t *big[30];
  for (int i = 0; i < 30; i++) {
    big[i] = alloc_ok(buf, full, 100 + (uint32_t)i);
    bf_buf_publish(buf, big[i]);
  }
  uint8_t *e = alloc_ok(buf, 1, 200);
  fill(e, 128, 200);
  bf_buf_publish(buf, e);
  uint8_t *f = alloc_ok(buf, 1, 201); /* stays READY, unclaimed */
  bf_buf_publish(buf, f);
  for (int i = 0; i < 30; i++) {
    assert_int_equal(bf_buf_evict_next(buf, &c), BF_OK);
    assert_ptr_equal(c, big[i]);
  }
  assert_int_equal(bf_buf_evict_next(buf, &c), BF_OK);
  assert_ptr_equal(c, e);
  assert_false(bf_buf_in_second_chance(buf, e));
  assert_true(intact(e, 128, 200));
  bf_buf_free(buf, e);
  assert_int_equal(bf_buf_node_state(e), BF_BLOCK_TOMBSTONE);
  check_buf(buf);
  uint64_t used = used_of(buf);
  bf_buf_evict_done(buf, e);
  assert_int_equal(used_of(buf), used); /* big[0] still holds the head */
  for (int i = 29; i >= 0; i--) bf_buf_evict_done(buf, big[i]);
  assert_int_equal(used_of(buf), 128 + HDR); /* only f is left */
  assert_int_equal(bf_buf_node_state(f), BF_BLOCK_READY);
  check_buf(buf);
  bf_buf_destroy(buf);
}

static void test_out_of_order_done(void **state) {
  (void)state;
  struct bf_buf *buf;
  assert_int_equal(bf_buf_create(1 << 20, 4096, &buf), BF_OK);
  uint8_t *blk[4];
  for (int i = 0; i < 4; i++) {
    blk[i] = alloc_ok(buf, bf_buf_class_for(buf, 64u << i), (uint32_t)i);
    bf_buf_publish(buf, blk[i]);
  }
  uint64_t total = 4 * HDR + 64 + 128 + 256 + 512;
  uint8_t *a, *b, *c;
  assert_int_equal(bf_buf_evict_next(buf, &a), BF_OK);
  assert_int_equal(bf_buf_evict_next(buf, &b), BF_OK);
  assert_ptr_equal(a, blk[0]);
  assert_ptr_equal(b, blk[1]);
  bf_buf_evict_done(buf, b);
  assert_int_equal(used_of(buf), total); /* head still at A */
  check_buf(buf);
  assert_int_equal(bf_buf_evict_next(buf, &c), BF_OK);
  assert_ptr_equal(c, blk[2]);
  bf_buf_evict_done(buf, c);
  assert_int_equal(used_of(buf), total);
  check_buf(buf);
  bf_buf_evict_done(buf, a); /* head passes A, B and C */
  assert_int_equal(used_of(buf), HDR + 512);
  check_buf(buf);
  struct bf_buf_stats st;
  bf_buf_stats(buf, &st);
  assert_int_equal(st.live, HDR + 512);
  for (uint32_t k = 0; k < bf_buf_class_count(buf); k++)
    assert_int_equal(st.blocks[k], k == bf_buf_class_for(buf, 512) ? 1 : 0);
  bf_buf_destroy(buf);
}

/* ------------------------------------------------------------------------
** Copy-on-access region.
*/
static void test_second_chance(void **state) {
  (void)state;
  struct bf_buf *buf;
  const uint64_t size = 1 << 20;
  assert_int_equal(bf_buf_create(size, 4096, &buf), BF_OK);
  uint64_t n = 0;
  uint8_t *node, *first = NULL;
  static uint8_t *nodes[16384];
  /* Filling: true until no more than size / 10 is held by no block. */
  assert_true(bf_buf_filling(buf));
  while (bf_buf_alloc(buf, 0, (uint32_t)n, &node) == BF_OK) {
    bf_buf_publish(buf, node);
    if (!first) first = node;
    nodes[n++] = node;
    assert_int_equal(bf_buf_filling(buf), size - n * (64 + HDR) > size / 10);
  }
  assert_false(bf_buf_filling(buf));
  assert_int_equal(n, size / (64 + HDR));
  for (uint64_t i = 0; i < n; i++) {
    bool expect = i * (64 + HDR) < size / 10;
    assert_int_equal(bf_buf_in_second_chance(buf, nodes[i]), expect);
  }
  /* Claimed blocks are out of the region; the next ones still in it. */
  uint8_t *c;
  assert_int_equal(bf_buf_evict_next(buf, &c), BF_OK);
  assert_ptr_equal(c, first);
  assert_false(bf_buf_in_second_chance(buf, nodes[0]));
  assert_true(bf_buf_in_second_chance(buf, nodes[1]));
  bf_buf_evict_done(buf, c);
  assert_true(bf_buf_in_second_chance(buf, nodes[1]));
  /* As the head moves, the region moves with it. */
  uint64_t k = size / 10 / (64 + HDR) + 5;
  assert_false(bf_buf_in_second_chance(buf, nodes[k]));
  for (uint64_t i = 1; i < 100; i++) {
    assert_int_equal(bf_buf_evict_next(buf, &c), BF_OK);
    assert_ptr_equal(c, nodes[i]);
    bf_buf_evict_done(buf, c);
  }
  assert_true(bf_buf_in_second_chance(buf, nodes[k]));
  assert_true(bf_buf_in_second_chance(buf, nodes[100]));
  /* Free in the region: tombstone; beyond it: free list. */
  bf_buf_free(buf, nodes[k]);
  assert_int_equal(bf_buf_node_state(nodes[k]), BF_BLOCK_TOMBSTONE);
  bf_buf_free(buf, nodes[n - 1]);
  assert_int_equal(bf_buf_node_state(nodes[n - 1]), BF_BLOCK_FREELISTED);
  check_buf(buf);
  /* After a wrap the distance is still measured from the head. */
  assert_int_equal(bf_buf_alloc(buf, 1, 1, &node), BF_OK);
  assert_ptr_equal(node, first); /* wrapped to the start */
  bf_buf_publish(buf, node);
  assert_false(bf_buf_in_second_chance(buf, node));
  check_buf(buf);
  bf_buf_destroy(buf);
}

/* ------------------------------------------------------------------------
** Randomized single-threaded model test.
*/
struct model_block {
  uint8_t *node;
  uint32_t cls;
  uint32_t id;
  int state;    /* BF_BLOCK_NOT_READY / READY, or TOMBSTONE once freed while
                ** claimed */
  bool claimed;
  bool live;
};

struct model {
  struct bf_buf *buf;
  struct model_block *blocks; /* indexed by id */
  uint32_t next_id;
  uint32_t *live_ids;         /* ids of blocks the buffer still holds */
  uint32_t nlive;
  uint32_t claims[8];
  uint32_t nclaims;
  uint64_t evicted, freed, pads_or_dead;
};

static void model_drop(struct model *m, uint32_t id) {
  for (uint32_t i = 0; i < m->nlive; i++) {
    if (m->live_ids[i] == id) {
      m->live_ids[i] = m->live_ids[--m->nlive];
      return;
    }
  }
  fail_msg("id %u not in the model", id);
}

static void model_verify(struct model *m, struct model_block *b) {
  uint32_t bytes = bf_buf_class_size(m->buf, b->cls);
  if (!intact(b->node, bytes, b->id)) fail_msg("block %u damaged", b->id);
  assert_int_equal(bf_buf_node_leaf(b->node), b->id);
  assert_int_equal(bf_buf_node_class(b->node), b->cls);
}

static void model_check_stats(struct model *m) {
  uint64_t blocks[BF_MAX_SIZE_CLASSES] = {0}, live = 0;
  for (uint32_t i = 0; i < m->nlive; i++) {
    struct model_block *b = &m->blocks[m->live_ids[i]];
    if (b->state == BF_BLOCK_TOMBSTONE) continue;
    blocks[b->cls]++;
    live += HDR + bf_buf_class_size(m->buf, b->cls);
  }
  struct bf_buf_stats st;
  bf_buf_stats(m->buf, &st);
  assert_int_equal(st.live, live);
  for (uint32_t c = 0; c < BF_MAX_SIZE_CLASSES; c++)
    assert_int_equal(st.blocks[c], blocks[c]);
  assert_true(st.live <= st.used);
  assert_true(st.used <= bf_buf_size(m->buf));
}

static void model_finish_claim(struct model *m, uint32_t k) {
  uint32_t id = m->claims[k];
  struct model_block *b = &m->blocks[id];
  m->claims[k] = m->claims[--m->nclaims];
  assert_int_equal(bf_buf_node_state(b->node), b->state);
  if (b->state == BF_BLOCK_READY) model_verify(m, b);
  bf_buf_evict_done(m->buf, b->node);
  b->live = false;
  model_drop(m, id);
  m->evicted++;
}

/* One eviction step.  Returns false when nothing could be claimed. */
static bool model_evict(struct model *m, uint64_t *rng) {
  if (m->nclaims == 8) {
    model_finish_claim(m, (uint32_t)(test_rand(rng) % m->nclaims));
    return true;
  }
  uint8_t *node;
  int rc = bf_buf_evict_next(m->buf, &node);
  if (rc == BF_RETRY) return false;
  assert_int_equal(rc, BF_OK);
  if (!node) {
    m->pads_or_dead++;
    return true;
  }
  uint32_t id = bf_buf_node_leaf(node);
  assert_true(id < m->next_id);
  struct model_block *b = &m->blocks[id];
  assert_true(b->live);
  assert_ptr_equal(b->node, node);
  assert_int_equal(b->state, BF_BLOCK_READY);
  assert_false(b->claimed);
  model_verify(m, b);
  b->claimed = true;
  m->claims[m->nclaims++] = id;
  if (test_rand(rng) % 2) model_finish_claim(m, m->nclaims - 1);
  return true;
}

static void model_publish_all(struct model *m) {
  for (uint32_t i = 0; i < m->nlive; i++) {
    struct model_block *b = &m->blocks[m->live_ids[i]];
    if (b->state == BF_BLOCK_NOT_READY) {
      bf_buf_publish(m->buf, b->node);
      b->state = BF_BLOCK_READY;
    }
  }
}

static void test_model_random(void **state) {
  (void)state;
  uint64_t rng = test_seed("test_model_random");
  struct model m;
  memset(&m, 0, sizeof m);
  const uint32_t page_sizes[] = {512, 4096, 8192};
  uint32_t ps = page_sizes[test_rand(&rng) % 3];
  uint64_t size = 16ull * (ps + 8) * (1 + test_rand(&rng) % 3) +
                  64 * (test_rand(&rng) % 50);
  assert_int_equal(bf_buf_create(size, ps, &m.buf), BF_OK);
  uint32_t nclass = bf_buf_class_count(m.buf);
  long ops = test_scale(30000);
  m.blocks = calloc((size_t)ops + 1, sizeof *m.blocks);
  m.live_ids = calloc((size_t)ops + 1, sizeof *m.live_ids);
  assert_non_null(m.blocks);
  assert_non_null(m.live_ids);

  for (long op = 0; op < ops; op++) {
    uint32_t r = (uint32_t)(test_rand(&rng) % 100);
    if (r < 40) {
      /* Allocate; small classes are the common case. */
      uint32_t cls = (uint32_t)(test_rand(&rng) % nclass);
      if (test_rand(&rng) % 2) cls = cls / 2;
      uint32_t id = m.next_id;
      uint8_t *node;
      int rc;
      int spins = 0;
      for (;;) {
        bool predicted = bf_buf_needs_eviction(m.buf, cls);
        rc = bf_buf_alloc(m.buf, cls, id, &node);
        assert_int_equal(rc == BF_RETRY, predicted);
        if (rc == BF_OK) break;
        if (!model_evict(&m, &rng)) {
          /* Blocked on NOT_READY blocks or on claims: release them. */
          model_publish_all(&m);
          while (m.nclaims) model_finish_claim(&m, 0);
        }
        assert_true(++spins < 100000);
      }
      m.next_id++;
      struct model_block *b = &m.blocks[id];
      b->node = node;
      b->cls = cls;
      b->id = id;
      b->state = BF_BLOCK_NOT_READY;
      b->live = true;
      fill(node, bf_buf_class_size(m.buf, cls), id);
      m.live_ids[m.nlive++] = id;
    } else if (r < 55 && m.nlive) {
      /* Publish one (or abort it, rarely). */
      struct model_block *b =
          &m.blocks[m.live_ids[test_rand(&rng) % m.nlive]];
      if (b->state == BF_BLOCK_NOT_READY) {
        model_verify(&m, b);
        if (test_rand(&rng) % 10 == 0) {
          bf_buf_abort(m.buf, b->node);
          int st = bf_buf_node_state(b->node);
          assert_true(st == BF_BLOCK_TOMBSTONE || st == BF_BLOCK_FREELISTED);
          b->live = false;
          model_drop(&m, b->id);
        } else {
          bf_buf_publish(m.buf, b->node);
          b->state = BF_BLOCK_READY;
        }
      }
    } else if (r < 75 && m.nlive) {
      /* The owner frees a READY block (perhaps one an evictor claimed). */
      struct model_block *b =
          &m.blocks[m.live_ids[test_rand(&rng) % m.nlive]];
      if (b->state == BF_BLOCK_READY) {
        model_verify(&m, b);
        bool second = bf_buf_in_second_chance(m.buf, b->node);
        bf_buf_free(m.buf, b->node);
        int st = bf_buf_node_state(b->node);
        m.freed++;
        if (b->claimed) {
          assert_int_equal(st, BF_BLOCK_TOMBSTONE);
          assert_false(second);
          b->state = BF_BLOCK_TOMBSTONE; /* the evictor finishes it */
        } else {
          assert_int_equal(st, second ? BF_BLOCK_TOMBSTONE
                                      : BF_BLOCK_FREELISTED);
          b->live = false;
          model_drop(&m, b->id);
        }
      }
    } else if (r < 95) {
      model_evict(&m, &rng);
    } else if (m.nclaims) {
      model_finish_claim(&m, (uint32_t)(test_rand(&rng) % m.nclaims));
    }
    check_buf(m.buf);
    model_check_stats(&m);
    if (op % 500 == 0)
      for (uint32_t i = 0; i < m.nlive; i++)
        if (m.blocks[m.live_ids[i]].state != BF_BLOCK_TOMBSTONE)
          model_verify(&m, &m.blocks[m.live_ids[i]]);
  }

  /* Drain everything; the buffer ends empty. */
  model_publish_all(&m);
  while (m.nclaims) model_finish_claim(&m, 0);
  while (model_evict(&m, &rng)) {
  }
  while (m.nclaims) model_finish_claim(&m, 0);
  assert_int_equal(m.nlive, 0);
  assert_int_equal(used_of(m.buf), 0);
  check_buf(m.buf);
  model_check_stats(&m);
  if (ops >= 30000) {
    assert_true(m.evicted > 1000);
    assert_true(m.freed > 1000);
  }
  bf_buf_destroy(m.buf);
  free(m.blocks);
  free(m.live_ids);
}

/* ------------------------------------------------------------------------
** Multi-threaded stress: owners and evictors, with a mutex per "leaf"
** standing in for the leaf latch.
*/
enum { SLOTS = 256, THREADS = 4 };

struct slot {
  pthread_mutex_t latch;
  uint8_t *node;   /* the leaf's mini-page, or NULL */
  uint32_t cls;
  uint64_t gen;    /* pattern generation */
};

struct stress {
  struct bf_buf *buf;
  struct slot slots[SLOTS];
  _Atomic uint64_t gen_counter;
  _Atomic uint64_t evictions, frees, copies, allocs, retries, tombstones;
  _Atomic int failed;
  uint64_t seed;
  long ops;
};

static uint64_t slot_pattern_id(uint32_t slot, uint64_t gen) {
  return ((uint64_t)slot << 40) ^ gen;
}

/* The thread's bug report: record it and let the main thread fail. */
static void stress_fail(struct stress *s, const char *what, uint32_t slot) {
  if (atomic_exchange(&s->failed, 1) == 0)
    fprintf(stderr, "stress: %s (slot %u)\n", what, slot);
}

/* One eviction step with no latch held.  Returns false on BF_RETRY. */
static bool stress_evict(struct stress *s) {
  uint8_t *node;
  int rc = bf_buf_evict_next(s->buf, &node);
  if (rc == BF_RETRY) return false;
  if (rc != BF_OK) {
    stress_fail(s, "evict_next failed", 0);
    return false;
  }
  if (!node) return true;
  uint32_t leaf = bf_buf_node_leaf(node);
  if (leaf >= SLOTS) {
    stress_fail(s, "bad leaf id", leaf);
    return false;
  }
  struct slot *sl = &s->slots[leaf];
  pthread_mutex_lock(&sl->latch);
  int st = bf_buf_node_state(node);
  if (st == BF_BLOCK_READY) {
    if (sl->node != node) stress_fail(s, "READY block not the leaf's", leaf);
    else if (!intact(node, bf_buf_class_size(s->buf, sl->cls),
                     slot_pattern_id(leaf, sl->gen)))
      stress_fail(s, "pattern damaged at eviction", leaf);
    sl->node = NULL; /* "written back" and unlinked */
    atomic_fetch_add(&s->evictions, 1);
  } else if (st == BF_BLOCK_TOMBSTONE) {
    atomic_fetch_add(&s->tombstones, 1); /* freed while claimed */
  } else {
    stress_fail(s, "claimed block neither READY nor TOMBSTONE", leaf);
  }
  bf_buf_evict_done(s->buf, node);
  pthread_mutex_unlock(&sl->latch);
  return true;
}

static void *stress_thread(void *arg) {
  struct stress *s = arg;
  uint64_t rng = s->seed ^ (uint64_t)atomic_fetch_add(&s->gen_counter, 1) *
                               0x9E3779B97F4A7C15ull;
  uint32_t nclass = bf_buf_class_count(s->buf);
  for (long op = 0; op < s->ops && !atomic_load(&s->failed); op++) {
    uint32_t r = (uint32_t)(test_rand(&rng) % 100);
    if (r >= 75) {
      if (!stress_evict(s)) sched_yield();
      continue;
    }
    uint32_t leaf = (uint32_t)(test_rand(&rng) % SLOTS);
    struct slot *sl = &s->slots[leaf];
    pthread_mutex_lock(&sl->latch);
    if (sl->node) {
      uint32_t bytes = bf_buf_class_size(s->buf, sl->cls);
      if (!intact(sl->node, bytes, slot_pattern_id(leaf, sl->gen)))
        stress_fail(s, "pattern damaged", leaf);
      uint32_t sub = (uint32_t)(test_rand(&rng) % 10);
      if (sub < 3) {
        uint8_t *old = sl->node;
        sl->node = NULL;
        bf_buf_free(s->buf, old);
        atomic_fetch_add(&s->frees, 1);
      } else if (sub < 5) {
        sl->gen = atomic_fetch_add(&s->gen_counter, 1);
        fill(sl->node, bytes, slot_pattern_id(leaf, sl->gen));
      } else if (bf_buf_in_second_chance(s->buf, sl->node) || sub < 7) {
        /* Copy on access (or grow into another class). */
        uint32_t cls = sub < 7 ? (uint32_t)(test_rand(&rng) % nclass) : sl->cls;
        uint8_t *fresh;
        if (bf_buf_alloc(s->buf, cls, leaf, &fresh) == BF_OK) {
          uint32_t nbytes = bf_buf_class_size(s->buf, cls);
          uint64_t gen = atomic_fetch_add(&s->gen_counter, 1);
          fill(fresh, nbytes, slot_pattern_id(leaf, gen));
          bf_buf_publish(s->buf, fresh);
          uint8_t *old = sl->node;
          sl->node = fresh;
          sl->cls = cls;
          sl->gen = gen;
          bf_buf_free(s->buf, old);
          atomic_fetch_add(&s->copies, 1);
        }
      }
      pthread_mutex_unlock(&sl->latch);
    } else {
      uint32_t cls = (uint32_t)(test_rand(&rng) % nclass);
      if (test_rand(&rng) % 2) cls /= 2;
      uint8_t *fresh;
      int rc = bf_buf_alloc(s->buf, cls, leaf, &fresh);
      if (rc == BF_RETRY) {
        /* Release the latch before evicting, as the tree does. */
        pthread_mutex_unlock(&sl->latch);
        atomic_fetch_add(&s->retries, 1);
        if (!stress_evict(s)) sched_yield();
        continue;
      }
      if (rc != BF_OK) {
        stress_fail(s, "alloc failed", leaf);
      } else {
        uint64_t gen = atomic_fetch_add(&s->gen_counter, 1);
        fill(fresh, bf_buf_class_size(s->buf, cls), slot_pattern_id(leaf, gen));
        if (test_rand(&rng) % 20 == 0) {
          bf_buf_abort(s->buf, fresh);
        } else {
          bf_buf_publish(s->buf, fresh);
          sl->node = fresh;
          sl->cls = cls;
          sl->gen = gen;
          atomic_fetch_add(&s->allocs, 1);
        }
      }
      pthread_mutex_unlock(&sl->latch);
    }
  }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  static struct stress s;
  memset(&s, 0, sizeof s);
  s.seed = test_seed("test_threads");
  s.ops = test_scale(100000);
  assert_int_equal(bf_buf_create(2 * 65664, 4096, &s.buf), BF_OK);
  for (int i = 0; i < SLOTS; i++)
    assert_int_equal(pthread_mutex_init(&s.slots[i].latch, NULL), 0);
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, stress_thread, &s), 0);
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&s.failed), 0);
  check_buf(s.buf);

  /* Quiescent: every leaf's block is intact and READY; stats agree. */
  uint64_t live = 0;
  for (uint32_t i = 0; i < SLOTS; i++) {
    struct slot *sl = &s.slots[i];
    if (!sl->node) continue;
    assert_int_equal(bf_buf_node_state(sl->node), BF_BLOCK_READY);
    assert_true(intact(sl->node, bf_buf_class_size(s.buf, sl->cls),
                       slot_pattern_id(i, sl->gen)));
    live += HDR + bf_buf_class_size(s.buf, sl->cls);
  }
  struct bf_buf_stats st;
  bf_buf_stats(s.buf, &st);
  assert_int_equal(st.live, live);
  /* Drain. */
  while (stress_evict(&s)) {
  }
  assert_int_equal(atomic_load(&s.failed), 0);
  assert_int_equal(used_of(s.buf), 0);
  check_buf(s.buf);
  for (uint32_t i = 0; i < SLOTS; i++) {
    assert_null(s.slots[i].node);
    pthread_mutex_destroy(&s.slots[i].latch);
  }
  printf("[ INFO     ] allocs %llu frees %llu copies %llu evictions %llu "
         "retries %llu freed-while-claimed %llu\n",
         (unsigned long long)s.allocs, (unsigned long long)s.frees,
         (unsigned long long)s.copies, (unsigned long long)s.evictions,
         (unsigned long long)s.retries, (unsigned long long)s.tombstones);
  if (s.ops >= 100000) {
    assert_true(atomic_load(&s.evictions) > 100);
    assert_true(atomic_load(&s.frees) > 100);
  }
  bf_buf_destroy(s.buf);
}

/* for_each_ready visits the READY blocks in buffer order. */
struct visit_ctx {
  uint8_t *seen[64];
  int n;
};
static void visit_one(void *ctx, uint8_t *node) {
  struct visit_ctx *v = ctx;
  if (v->n < 64) v->seen[v->n] = node;
  v->n++;
}

static void test_for_each_ready(void **state) {
  (void)state;
  struct bf_buf *buf;
  assert_int_equal(bf_buf_create(65664, 4096, &buf), BF_OK);
  uint8_t *nodes[40];
  uint8_t *expect[40];
  int ne = 0;
  for (int i = 0; i < 40; i++) {
    nodes[i] = alloc_ok(buf, (uint32_t)(i % 4), (uint32_t)i);
    if (i % 3 != 2) bf_buf_publish(buf, nodes[i]);
  }
  for (int i = 0; i < 40; i++) {
    if (i % 5 == 4 && i % 3 != 2) bf_buf_free(buf, nodes[i]);
    else if (i % 3 != 2) expect[ne++] = nodes[i];
  }
  struct visit_ctx v = {.n = 0};
  bf_buf_for_each_ready(buf, visit_one, &v);
  assert_int_equal(v.n, ne);
  for (int i = 0; i < ne; i++) assert_ptr_equal(v.seen[i], expect[i]);
  for (int i = 0; i < 40; i++)
    if (i % 3 == 2) bf_buf_abort(buf, nodes[i]);
  check_buf(buf);
  bf_buf_destroy(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create),
      cmocka_unit_test(test_classes),
      cmocka_unit_test(test_alloc_free_reuse),
      cmocka_unit_test(test_fill_then_retry),
      cmocka_unit_test(test_fifo_eviction),
      cmocka_unit_test(test_wrap_padding),
      cmocka_unit_test(test_free_while_claimed),
      cmocka_unit_test(test_out_of_order_done),
      cmocka_unit_test(test_second_chance),
      cmocka_unit_test(test_for_each_ready),
      cmocka_unit_test(test_model_random),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
