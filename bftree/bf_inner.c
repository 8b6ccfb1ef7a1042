/*
** bf_inner.c: the pinned inner nodes of the Bf-Tree, under optimistic lock
** coupling (OLC: Leis et al., "Optimistic Lock Coupling", and the Bf-Tree
** paper, section on inner nodes).
**
** Owns: every inner node, the root pointer, and the structure mutex that
** serialises all changes (leaf splits recorded with bf_inner_insert()).
** Readers (bf_inner_find) take no lock and write no shared memory.
**
** NODE (node_size bytes, 64-byte aligned, never freed before destroy):
**
**   OFFSET SIZE DESCRIPTION
**   0      8    version (atomic): bit 0 obsolete (reserved: no merges yet,
**               never set), bit 1 LOCKED, bits 2..63 a change counter
**   8      B    body, B = node_size - 8, accessed only as atomic 64-bit
**               words (words[0 .. B/8)); offsets below are body offsets
**
** BODY (n = count separators, n + 1 children):
**
**   OFFSET      SIZE  DESCRIPTION
**   0           8     header word: bits 0..15 count n, bits 16..31 level
**                     (0: children are leaf ids, > 0: children are inner
**                     node pointers), bits 32..63 heap_start
**   8           8*n   slot words, sorted: slot t (0-based) describes
**                     separator t, the lower bound of child t + 1:
**                       bits 0..15  heap offset of the key's suffix
**                       bits 16..31 key length
**                       bits 32..63 look-ahead: the first min(4, len) key
**                                   bytes, big-endian, zero padded
**   8 + 8*n     C     children: level 0: n + 1 leaf ids of 4 bytes, two per
**                     word (child k in word 1 + n + k/2, bits 32*(k%2));
**                     level > 0: n + 1 node pointers, one per word (child k
**                     in word 1 + n + k).  C = round8(4(n+1)) or 8(n+1).
**   ...               zero
**   heap_start  ...   key heap: for each separator in order, its bytes after
**                     the first 4 (the look-ahead holds those), packed up to
**                     the end of the body (the last suffix ends at B).
**
** Storing only the suffix in the heap makes a 16-byte separator cost 8 + 4
** + 12 = 24 bytes at level 0 (about 170 per 4 KiB node).
**
** KEY ORDER: child k covers [sep(k-1), sep(k)), with sep(-1) = -inf and
** sep(n) = +inf.  Comparing a key with a separator compares look-aheads as
** integers first; they order correctly whenever they differ.  Equal
** look-aheads with either length < 4 mean the shorter key is a prefix of the
** longer one (padding zeros equal real zero bytes), so the lengths decide;
** otherwise the suffixes in the heap decide.  (The tie-with-short-key case
** is the bug fixed in the reference implementation's PR #17.)
**
** SEQLOCK DISCIPLINE (every node):
**   writer (holds inner->mutex): v = version; store v|LOCKED (relaxed);
**     fence(release); relaxed stores of the new words; store v + 4 with
**     LOCKED clear, i.e. (v|LOCKED) + 2 (release).
**   reader: v = load(acquire); restart if LOCKED or obsolete; relaxed loads
**     of the words; fence(acquire); load(relaxed) == v, else restart.
**   (TSan builds: acquire word loads and release word stores instead of
**   the two fences; see INNER_TSAN.)
**   A reader whose relaxed loads saw any store of a writer's critical
**   section synchronises (fence to fence) with that writer's release fence,
**   so its validating load sees LOCKED or a later version.  Readers check
**   every field they use for plausibility before using it as an index, and
**   never dereference a child pointer before validating the parent.
**
** Invariants:
**   1. Every node is reachable from exactly one parent slot (or is the
**      root); nodes are never freed or reused before bf_inner_destroy(), so
**      a stale pointer always points at a valid node.
**   2. A node's level never changes; the root's level is height - 1 and a
**      child's level is its parent's level - 1 (all leaves at one depth).
**   3. Within a node separators strictly ascend, and all lie strictly
**      inside the node's own bounds (from its ancestors).
**   4. Every non-root node has at least one separator; every node fits:
**      16 + 3 * (16 + max(max_key_size - 4, 0)) <= B (checked at create),
**      so a split of a full node always leaves a separator on each side.
**   5. Only the holder of inner->mutex writes nodes, the root pointer, the
**      height and the node count.
**   6. All allocation for an insert happens before any node changes: the
**      spare pool holds height + 1 nodes and there are height + 1 scratch
**      images, so BF_NOMEM leaves the index unchanged.
**   7. A change locks every node it modifies before storing any word and
**      unlocks them only after all are stored; a root split publishes the
**      new root while the old root is still locked.
**
** TEST KNOB (BF_TESTING builds only): when the environment variable
** BF_INNER_TEST_YIELD holds a percentage at create/bulk_load time, readers
** call sched_yield() with that probability inside each optimistic window
** (between reading a node and validating it, and between validating a parent
** and reading its child's version), so that tests see writers land there.
**
** State machine of a node's version:
**   UNLOCKED(c) -> LOCKED(c)     [insert_commit]
**   LOCKED(c) -> UNLOCKED(c + 1) [insert_commit]
** A node taken from the spare pool is written while unreachable and
** becomes reachable through its parent's (or the root pointer's) release.
*/
#include "bf_int.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

/*
** ThreadSanitizer does not model atomic_thread_fence (and GCC warns about
** it), so TSan builds use the fence-free equivalent of the seqlock: word
** loads are acquire and word stores release.  A reader's acquire load that
** sees a writer's release word store then orders the writer's LOCKED store
** before the reader's validating version load, exactly what the fence pair
** gives; and the acquire loads keep the validating load after them.  On
** x86 both forms compile to plain moves.
*/
#if defined(__SANITIZE_THREAD__)
#define INNER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define INNER_TSAN 1
#endif
#endif
#ifdef INNER_TSAN
#define WORD_LOAD_ORDER memory_order_acquire
#define WORD_STORE_ORDER memory_order_release
#define SEQ_FENCE(order) ((void)0)
#else
#define WORD_LOAD_ORDER memory_order_relaxed
#define WORD_STORE_ORDER memory_order_relaxed
#define SEQ_FENCE(order) atomic_thread_fence(order)
#endif

#define V_OBSOLETE 1u
#define V_LOCKED 2u

#define INNER_MAX_HEIGHT 48
#define INNER_FIXED 16 /* header word + child 0 (or the 4-byte rounding) */

struct inode {
  _Atomic uint64_t version;
  _Atomic uint64_t words[]; /* B / 8 body words */
};

struct bf_inner {
  uint32_t node_size;
  uint32_t max_key_size;
  uint32_t body;     /* B = node_size - 8 */
  uint32_t nwords;   /* B / 8 */
  uint32_t max_seps; /* the most separators any node can hold */
  /* Read by readers without the mutex; written under it (invariant 5): */
  _Atomic(struct inode *) root;
  _Atomic uint32_t height;
  _Atomic uint64_t node_count; /* reachable nodes */
  _Atomic uint64_t aux_bytes;  /* spare nodes, scratch, workspace */
  uint32_t test_yield; /* BF_INNER_TEST_YIELD percent (BF_TESTING only) */
  pthread_mutex_t mutex;
  /* Protected by mutex: */
  struct inode **spare; /* unreachable nodes ready for splits */
  uint32_t nspare, spare_cap;
  uint64_t **scratch; /* private node images (B bytes each) */
  uint32_t nscratch, scratch_cap;
  uint64_t *lchild;     /* decoded node: children (max_seps + 3) */
  const uint8_t **lkey; /* decoded node: separator keys (max_seps + 2) */
  uint32_t *llen;       /* their lengths */
  uint8_t *arena;       /* bytes of the decoded keys */
  uint8_t *carry[2];    /* separator moving up (max_key_size each) */
  uint8_t *fbuf[2];     /* fence buffers for bf_inner_for_each_leaf */
};

/* ------------------------------------------------------------------------
** Small helpers.
*/
static inline void inner_pause(uint32_t *round) {
  if ((*round)++ < 64) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
  } else {
    sched_yield();
  }
}

/* The test knob: maybe yield inside an optimistic window. */
static inline void test_window(const struct bf_inner *t) {
#ifdef BF_TESTING
  if (t->test_yield && bf_random_percent(t->test_yield)) sched_yield();
#else
  BF_UNUSED(t);
#endif
}

static inline uint32_t key_suffix(uint32_t len) { return len > 4 ? len - 4 : 0; }

/* The first min(4, len) bytes of key, big-endian, zero padded. */
static inline uint32_t key_lookahead(const uint8_t *key, uint32_t len) {
  uint32_t la = 0;
  for (uint32_t i = 0; i < 4; i++) la = (la << 8) | (i < len ? key[i] : 0u);
  return la;
}

/* Bytes a node of the given shape occupies in the body. */
static inline uint64_t node_bytes(uint32_t level, uint64_t nsep,
                                  uint64_t suffix_total) {
  uint64_t kids = level == 0 ? ((4 * (nsep + 1) + 7) & ~(uint64_t)7)
                             : 8 * (nsep + 1);
  return 8 + 8 * nsep + kids + suffix_total;
}

/* True when a node of that shape fits one node: the bytes fit the body and
** the count passes hdr_plausible() (max_seps).  The one fit test of both
** bf_inner_insert() and bf_inner_bulk_load(). */
static inline bool node_fits(const struct bf_inner *t, uint32_t level,
                             uint64_t nsep, uint64_t suffix_total) {
  return nsep <= t->max_seps &&
         node_bytes(level, nsep, suffix_total) <= t->body;
}

static inline uint64_t ld(struct inode *n, uint32_t w) {
  return atomic_load_explicit(&n->words[w], WORD_LOAD_ORDER);
}

static inline uint32_t hdr_count(uint64_t h) { return (uint32_t)(h & 0xffff); }
static inline uint32_t hdr_level(uint64_t h) {
  return (uint32_t)((h >> 16) & 0xffff);
}
static inline uint32_t hdr_heap(uint64_t h) { return (uint32_t)(h >> 32); }
static inline uint32_t slot_off(uint64_t s) { return (uint32_t)(s & 0xffff); }
static inline uint32_t slot_len(uint64_t s) {
  return (uint32_t)((s >> 16) & 0xffff);
}
static inline uint32_t slot_la(uint64_t s) { return (uint32_t)(s >> 32); }

/* True when a header read (possibly torn) is safe to index with. */
static bool hdr_plausible(const struct bf_inner *t, uint64_t h) {
  uint32_t n = hdr_count(h), level = hdr_level(h);
  if (n > t->max_seps || level >= INNER_MAX_HEIGHT) return false;
  uint64_t kid_words = level == 0 ? (n + 2) / 2 : (uint64_t)n + 1;
  return 1 + n + kid_words <= t->nwords;
}

/* True when a slot read (possibly torn) is safe to use. */
static bool slot_plausible(const struct bf_inner *t, uint64_t s) {
  uint32_t len = slot_len(s);
  return len <= t->max_key_size &&
         (uint64_t)slot_off(s) + key_suffix(len) <= t->body;
}

/* Child k (<= n) of a node with n separators at level. */
static inline uint64_t node_child(struct inode *node, uint32_t level,
                                  uint32_t n, uint32_t k) {
  if (level == 0) {
    uint64_t w = ld(node, 1 + n + k / 2);
    return (w >> (32 * (k & 1))) & 0xffffffffu;
  }
  return ld(node, 1 + n + k);
}

/* Copy body bytes [off, off+len) out word by word. */
static void heap_copy(struct inode *node, uint32_t off, uint32_t len,
                      uint8_t *dst) {
  while (len > 0) {
    uint64_t w = ld(node, off >> 3);
    uint8_t tmp[8];
    memcpy(tmp, &w, 8);
    uint32_t b = off & 7, k = 8 - b;
    if (k > len) k = len;
    memcpy(dst, tmp + b, k);
    dst += k;
    off += k;
    len -= k;
  }
}

/* Compare key[0..klen) with body bytes [off, off+slen): memcmp order, then
** shorter first.  Returns <0, 0, >0 (key relative to the heap bytes). */
static int heap_compare(struct inode *node, uint32_t off, uint32_t slen,
                        const uint8_t *key, uint32_t klen) {
  uint32_t n = klen < slen ? klen : slen;
  while (n > 0) {
    uint64_t w = ld(node, off >> 3);
    uint8_t tmp[8];
    memcpy(tmp, &w, 8);
    uint32_t b = off & 7, k = 8 - b;
    if (k > n) k = n;
    int c = bf_bytes_compare(key, tmp + b, k);
    if (c) return c;
    key += k;
    off += k;
    n -= k;
  }
  return klen < slen ? -1 : (klen > slen ? 1 : 0);
}

/* Compare a search key (with look-ahead kla) with the separator of slot s
** (plausible).  Returns <0, 0, >0. */
static int compare_sep(struct inode *node, uint64_t s, const uint8_t *key,
                       uint32_t klen, uint32_t kla) {
  uint32_t sla = slot_la(s);
  if (kla != sla) return kla < sla ? -1 : 1;
  uint32_t slen = slot_len(s);
  if (klen < 4 || slen < 4) return klen < slen ? -1 : (klen > slen ? 1 : 0);
  return heap_compare(node, slot_off(s), slen - 4, key + 4, klen - 4);
}

/* Copy the separator of slot s (plausible) into dst; returns its length. */
static uint32_t copy_sep(struct inode *node, uint64_t s, uint8_t *dst) {
  uint32_t len = slot_len(s), la = slot_la(s);
  for (uint32_t i = 0; i < len && i < 4; i++)
    dst[i] = (uint8_t)(la >> (24 - 8 * i));
  if (len > 4) heap_copy(node, slot_off(s), len - 4, dst + 4);
  return len;
}

/*
** The child index for key in a node with n separators: the number of
** separators <= key (before == false) or < key (before == true); key NULL
** means +inf.  Returns -1 when a slot is implausible (a torn read, or
** corruption when the version validates).
*/
static int64_t node_search(const struct bf_inner *t, struct inode *node,
                           uint32_t n, const uint8_t *key, uint32_t klen,
                           bool before) {
  if (!key) return n;
  uint32_t kla = key_lookahead(key, klen);
  uint32_t lo = 0, hi = n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    uint64_t s = ld(node, 1 + mid);
    if (!slot_plausible(t, s)) return -1;
    int c = compare_sep(node, s, key, klen, kla);
    if (before ? c > 0 : c >= 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Seqlock read validation: true when node still has version v. */
static inline bool node_validate(struct inode *node, uint64_t v) {
  /* Acquire fence: orders every relaxed word load before it ahead of the
  ** version load after it; pairs with the writer's release fence in
  ** insert_commit() (a reader that saw a new word sees LOCKED or later).
  ** TSan builds: no fence; the word loads themselves are acquire. */
  SEQ_FENCE(memory_order_acquire);
  return atomic_load_explicit(&node->version, memory_order_relaxed) == v;
}

/* ------------------------------------------------------------------------
** Lookups.
*/
int bf_inner_find(struct bf_inner *inner, const uint8_t *key, uint32_t key_len,
                  int mode, struct bf_inner_path *path) {
  if (mode & ~(BF_FIND_BEFORE | BF_FIND_FENCES)) return BF_INVALID;
  bool before = (mode & BF_FIND_BEFORE) != 0;
  bool fences = (mode & BF_FIND_FENCES) != 0;
  static const uint8_t empty = 0;
  if (!before && !key) { /* NULL in KEY mode: the empty key */
    key = &empty;
    key_len = 0;
  }
  uint32_t round = 0;

restart:;
  /* Acquire: pairs with the release store of a new root in insert_commit()
  ** (and with create/bulk_load's publication). */
  struct inode *node = atomic_load_explicit(&inner->root, memory_order_acquire);
  test_window(inner);
  /* Acquire: pairs with the unlocking release store in insert_commit(); all
  ** words stored before it are visible to the loads below. */
  uint64_t v = atomic_load_explicit(&node->version, memory_order_acquire);
  if (v & (V_LOCKED | V_OBSOLETE)) {
    inner_pause(&round);
    goto restart;
  }
  test_window(inner);
  /* A root split stores the new root while the old root is locked, so a
  ** version read after the split's unlock guarantees this load sees the new
  ** root (happens-before through the acquire above). */
  if (atomic_load_explicit(&inner->root, memory_order_acquire) != node)
    goto restart;
  if (fences) path->low_inf = path->high_inf = true;
  int64_t expect_level = -1;

  for (;;) {
    uint64_t h = ld(node, 0);
    if (!hdr_plausible(inner, h) ||
        (expect_level >= 0 && hdr_level(h) != (uint64_t)expect_level)) {
      if (node_validate(node, v)) return BF_CORRUPT_BKPT;
      goto restart;
    }
    uint32_t n = hdr_count(h), level = hdr_level(h);
    int64_t i = node_search(inner, node, n, key, key_len, before);
    if (i < 0) {
      if (node_validate(node, v)) return BF_CORRUPT_BKPT;
      goto restart;
    }
    if (fences) {
      /* The separators around child i are the tightest bounds so far
      ** (invariant 3); at an edge the ancestor's bound stays. */
      if (i > 0) {
        uint64_t s = ld(node, 1 + (uint32_t)i - 1);
        if (!slot_plausible(inner, s)) {
          if (node_validate(node, v)) return BF_CORRUPT_BKPT;
          goto restart;
        }
        path->low_len = copy_sep(node, s, path->low);
        path->low_inf = false;
      }
      if (i < n) {
        uint64_t s = ld(node, 1 + (uint32_t)i);
        if (!slot_plausible(inner, s)) {
          if (node_validate(node, v)) return BF_CORRUPT_BKPT;
          goto restart;
        }
        path->high_len = copy_sep(node, s, path->high);
        path->high_inf = false;
      }
    }
    uint64_t child = node_child(node, level, n, (uint32_t)i);
    test_window(inner);
    /* Validate before trusting anything read from this node (the child
    ** pointer above all). */
    if (!node_validate(node, v)) goto restart;
    if (level == 0) {
      path->parent = node;
      path->version = v;
      path->leaf_id = (uint32_t)child;
      return BF_OK;
    }
    struct inode *c = (struct inode *)(uintptr_t)child;
    if (NEVER(c == NULL)) return BF_CORRUPT_BKPT;
    test_window(inner);
    /* Acquire: as for the root's version above. */
    uint64_t vc = atomic_load_explicit(&c->version, memory_order_acquire);
    if (vc & (V_LOCKED | V_OBSOLETE)) {
      inner_pause(&round);
      goto restart;
    }
    /* Lock coupling: the parent unchanged after reading the child's version
    ** means the child at version vc is the one the parent points to for
    ** this key (a change locks both before touching either, invariant 7). */
    if (!node_validate(node, v)) goto restart;
    node = c;
    v = vc;
    expect_level = (int64_t)level - 1;
  }
}

bool bf_inner_validate(const struct bf_inner_path *path) {
  struct inode *node = (struct inode *)(uintptr_t)path->parent;
  /* Acquire fence: keeps this version load after every load the caller
  ** made before it, above all its leaf latch acquisition.  That acquisition
  ** synchronises with the splitter's unlatch, and the splitter's insert
  ** (release-unlocking this node) happened before that, so a changed
  ** version is seen.  (The latch's own acquire already gives this order;
  ** TSan builds rely on it alone.) */
  SEQ_FENCE(memory_order_acquire);
  uint64_t v = atomic_load_explicit(&node->version, memory_order_relaxed);
  return v == path->version && (v & (V_LOCKED | V_OBSOLETE)) == 0;
}

/* ------------------------------------------------------------------------
** Creating and destroying.
*/
static struct inode *inode_alloc(const struct bf_inner *t) {
  struct inode *n = bf_malloc_aligned(64, t->node_size);
  if (!n) return NULL;
  atomic_init(&n->version, 0);
  for (uint32_t w = 0; w < t->nwords; w++) atomic_init(&n->words[w], 0);
  return n;
}

/* Free node and everything below it.  Quiescent. */
static void free_subtree(struct inode *node) {
  uint64_t h = ld(node, 0);
  uint32_t n = hdr_count(h), level = hdr_level(h);
  if (level > 0) {
    for (uint32_t k = 0; k <= n; k++) {
      struct inode *c = (struct inode *)(uintptr_t)node_child(node, level, n, k);
      if (c) free_subtree(c);
    }
  }
  bf_free_aligned(node);
}

void bf_inner_destroy(struct bf_inner *inner) {
  if (!inner) return;
  struct inode *root = atomic_load_explicit(&inner->root, memory_order_relaxed);
  if (root) free_subtree(root);
  for (uint32_t i = 0; i < inner->nspare; i++) bf_free_aligned(inner->spare[i]);
  bf_free(inner->spare);
  for (uint32_t i = 0; i < inner->nscratch; i++) bf_free(inner->scratch[i]);
  bf_free(inner->scratch);
  bf_free(inner->lchild);
  bf_free(inner->lkey);
  bf_free(inner->llen);
  bf_free(inner->arena);
  bf_free(inner->carry[0]);
  bf_free(inner->carry[1]);
  bf_free(inner->fbuf[0]);
  bf_free(inner->fbuf[1]);
  pthread_mutex_destroy(&inner->mutex);
  bf_free(inner);
}

/* Check the size parameters (invariant 4). */
static bool params_ok(uint32_t node_size, uint32_t max_key_size) {
  if (node_size < 128 || node_size > 65536 || node_size % 8 != 0) return false;
  if (max_key_size > 0xffff) return false;
  uint64_t body = node_size - 8;
  return INNER_FIXED + 3 * (16 + (uint64_t)key_suffix(max_key_size)) <= body;
}

/* Allocate the index object and its workspace, without a root. */
static int inner_alloc(uint32_t node_size, uint32_t max_key_size,
                       struct bf_inner **out) {
  *out = NULL;
  if (!params_ok(node_size, max_key_size)) return BF_INVALID;
  struct bf_inner *t = bf_calloc(1, sizeof *t);
  if (!t) return BF_NOMEM;
  t->node_size = node_size;
  t->max_key_size = max_key_size;
  t->body = node_size - 8;
  t->nwords = t->body / 8;
  t->max_seps = (t->body - INNER_FIXED) / 12;
  atomic_init(&t->root, NULL);
  atomic_init(&t->height, 0);
  atomic_init(&t->node_count, 0);
  atomic_init(&t->aux_bytes, 0);
#ifdef BF_TESTING
  const char *knob = getenv("BF_INNER_TEST_YIELD");
  if (knob && *knob) t->test_yield = (uint32_t)atoi(knob);
#endif
  if (pthread_mutex_init(&t->mutex, NULL) != 0) {
    bf_free(t);
    return BF_NOMEM;
  }
  uint32_t m = t->max_seps + 3;
  size_t arena = (size_t)4 * m + t->body + max_key_size;
  size_t kb = max_key_size ? max_key_size : 1;
  t->lchild = bf_malloc(sizeof(uint64_t) * m);
  t->lkey = bf_malloc(sizeof(uint8_t *) * m);
  t->llen = bf_malloc(sizeof(uint32_t) * m);
  t->arena = bf_malloc(arena);
  t->carry[0] = bf_malloc(kb);
  t->carry[1] = bf_malloc(kb);
  t->fbuf[0] = bf_malloc(kb);
  t->fbuf[1] = bf_malloc(kb);
  if (!t->lchild || !t->lkey || !t->llen || !t->arena || !t->carry[0] ||
      !t->carry[1] || !t->fbuf[0] || !t->fbuf[1]) {
    bf_inner_destroy(t);
    return BF_NOMEM;
  }
  atomic_store_explicit(&t->aux_bytes,
                        sizeof *t + (uint64_t)m * (8 + sizeof(uint8_t *) + 4) +
                            arena + 4 * kb,
                        memory_order_relaxed);
  *out = t;
  return BF_OK;
}

/*
** Encode a node image into img (B bytes): nsep separators key[t]/len[t]
** (ascending, each <= max_key_size) and nsep + 1 children.  The caller has
** checked that node_bytes() fits in B.
*/
static void encode_node(const struct bf_inner *t, uint64_t *img,
                        uint32_t level, uint32_t nsep, const uint64_t *child,
                        const uint8_t *const *key, const uint32_t *len) {
  uint64_t suffix_total = 0;
  for (uint32_t i = 0; i < nsep; i++) suffix_total += key_suffix(len[i]);
  assert(node_bytes(level, nsep, suffix_total) <= t->body);
  memset(img, 0, t->body);
  uint32_t heap = t->body - (uint32_t)suffix_total;
  img[0] = (uint64_t)nsep | ((uint64_t)level << 16) | ((uint64_t)heap << 32);
  uint32_t off = heap;
  for (uint32_t i = 0; i < nsep; i++) {
    uint32_t suf = key_suffix(len[i]);
    img[1 + i] = (uint64_t)off | ((uint64_t)len[i] << 16) |
                 ((uint64_t)key_lookahead(key[i], len[i]) << 32);
    if (suf) memcpy((uint8_t *)img + off, key[i] + 4, suf);
    off += suf;
  }
  uint32_t cb = 1 + nsep;
  for (uint32_t k = 0; k <= nsep; k++) {
    if (level == 0)
      img[cb + k / 2] |= (child[k] & 0xffffffffu) << (32 * (k & 1));
    else
      img[cb + k] = child[k];
  }
}

/* Store a whole image into node's words (relaxed; the caller provides the
** ordering: a locked version, or an unreachable node). */
static void store_image(const struct bf_inner *t, struct inode *node,
                        const uint64_t *img) {
  for (uint32_t w = 0; w < t->nwords; w++)
    atomic_store_explicit(&node->words[w], img[w], WORD_STORE_ORDER);
}

/* Make spare nodes and scratch images enough for an insert into a tree of
** height h (invariant 6).  BF_OK or BF_NOMEM (what was allocated stays). */
static int ensure_spares(struct bf_inner *t, uint32_t h) {
  uint32_t need = h + 1;
  if (t->spare_cap < need) {
    struct inode **a = bf_malloc(sizeof *a * need);
    if (!a) return BF_NOMEM;
    if (t->nspare) memcpy(a, t->spare, sizeof *a * t->nspare);
    bf_free(t->spare);
    t->spare = a;
    atomic_fetch_add_explicit(&t->aux_bytes,
                              (uint64_t)(need - t->spare_cap) * sizeof *a,
                              memory_order_relaxed);
    t->spare_cap = need;
  }
  if (t->scratch_cap < need) {
    uint64_t **a = bf_malloc(sizeof *a * need);
    if (!a) return BF_NOMEM;
    if (t->nscratch) memcpy(a, t->scratch, sizeof *a * t->nscratch);
    bf_free(t->scratch);
    t->scratch = a;
    atomic_fetch_add_explicit(&t->aux_bytes,
                              (uint64_t)(need - t->scratch_cap) * sizeof *a,
                              memory_order_relaxed);
    t->scratch_cap = need;
  }
  while (t->nspare < need) {
    struct inode *n = inode_alloc(t);
    if (!n) return BF_NOMEM;
    t->spare[t->nspare++] = n;
    atomic_fetch_add_explicit(&t->aux_bytes, t->node_size,
                              memory_order_relaxed);
  }
  while (t->nscratch < need) {
    uint64_t *s = bf_malloc(t->body);
    if (!s) return BF_NOMEM;
    t->scratch[t->nscratch++] = s;
    atomic_fetch_add_explicit(&t->aux_bytes, t->body, memory_order_relaxed);
  }
  return BF_OK;
}

int bf_inner_create(uint32_t node_size, uint32_t max_key_size,
                    uint32_t first_leaf, struct bf_inner **out) {
  struct bf_inner *t;
  int rc = inner_alloc(node_size, max_key_size, &t);
  if (rc != BF_OK) return rc;
  rc = ensure_spares(t, 1);
  struct inode *root = rc == BF_OK ? inode_alloc(t) : NULL;
  if (!root) {
    bf_inner_destroy(t);
    return BF_NOMEM;
  }
  uint64_t child = first_leaf;
  encode_node(t, t->scratch[0], 0, 0, &child, NULL, NULL);
  store_image(t, root, t->scratch[0]);
  atomic_store_explicit(&t->root, root, memory_order_relaxed);
  atomic_store_explicit(&t->height, 1, memory_order_relaxed);
  atomic_store_explicit(&t->node_count, 1, memory_order_relaxed);
  /* The caller publishes the index to other threads (thread creation or its
  ** own release store), which orders all the stores above. */
  *out = t;
  return BF_OK;
}

/* ------------------------------------------------------------------------
** Bulk loading.
*/
int bf_inner_bulk_load(uint32_t node_size, uint32_t max_key_size, uint32_t n,
                       const uint32_t *leaf_ids, const uint8_t *const *low_keys,
                       const uint32_t *low_lens, struct bf_inner **out) {
  *out = NULL;
  if (n == 0) return BF_INVALID;
  /* The keys come from the data file: out of order or too long is CORRUPT. */
  for (uint32_t i = 1; i < n; i++) {
    if (low_lens[i] > max_key_size || (low_lens[i] && !low_keys[i]))
      return BF_CORRUPT_BKPT;
    if (i >= 2 && bf_key_compare(low_keys[i - 1], low_lens[i - 1],
                                 low_keys[i], low_lens[i]) >= 0)
      return BF_CORRUPT_BKPT;
  }
  struct bf_inner *t;
  int rc = inner_alloc(node_size, max_key_size, &t);
  if (rc != BF_OK) return rc;

  uint64_t *child = bf_malloc(sizeof *child * n);
  const uint8_t **key = bf_malloc(sizeof *key * n);
  uint32_t *len = bf_malloc(sizeof *len * n);
  uint32_t *start = bf_malloc(sizeof *start * ((size_t)n + 1));
  size_t all_cap = (size_t)n + INNER_MAX_HEIGHT;
  struct inode **all = bf_malloc(sizeof *all * all_cap);
  size_t nall = 0;
  uint32_t level = 0;
  if (!child || !key || !len || !start || !all) {
    rc = BF_NOMEM;
    goto err_free_all;
  }
  rc = ensure_spares(t, 1);
  if (rc != BF_OK) goto err_free_all;
  for (uint32_t i = 0; i < n; i++) {
    child[i] = leaf_ids[i];
    key[i] = i ? low_keys[i] : NULL;
    len[i] = i ? low_lens[i] : 0;
  }
  /*
  ** Each level's items [0, cnt) (child, lower bound) are cut into nodes:
  **  - A level whose items all fit one node (node_fits) becomes that one
  **    node, the root, however full.  Cutting it at the fill target would
  **    add a level and two nodes (a root over two halves) where one node
  **    does, and its slack would only postpone the root split that an
  **    insert would make anyway; an incremental index holding these leaves
  **    in one node has height 1, and so does this one.
  **  - Otherwise greedily: a node is closed only when its next item would
  **    take it past target (about 90% of B, room for later inserts without
  **    immediate splits) or past the body, so every node but the last of a
  **    level holds more than target minus one item (before the borrow
  **    below).  Incremental splits can pack nodes fuller than target, so
  **    this may take a node more per level than an incremental index of the
  **    same leaves; test_inner's inner_bulk checks the bound this implies.
  */
  uint64_t target = t->body - t->body / 10; /* about 90% full */
  uint32_t cnt = n;
  do {
    uint32_t ngroups = 0, s = 0;
    uint64_t all_suf = 0;
    for (uint32_t i = 1; i < cnt; i++) all_suf += key_suffix(len[i]);
    if (node_fits(t, level, cnt - 1, all_suf)) {
      start[ngroups++] = 0; /* the whole level: one node */
      s = cnt;
    }
    /* Group the items [s, cnt) into nodes greedily. */
    while (s < cnt) {
      uint32_t e = s + 1;
      uint64_t suf = 0;
      while (e < cnt) {
        uint64_t nsuf = suf + key_suffix(len[e]);
        uint64_t nb = node_bytes(level, e - s, nsuf);
        if (!node_fits(t, level, e - s, nsuf) || (nb > target && e - s >= 2))
          break;
        suf = nsuf;
        e++;
      }
      start[ngroups++] = s;
      s = e;
    }
    start[ngroups] = cnt;
    /* A last group with one child borrows one from its neighbour, so every
    ** non-root node has a separator (invariant 4). */
    if (ngroups > 1 && start[ngroups] - start[ngroups - 1] == 1 &&
        ALWAYS(start[ngroups - 1] - start[ngroups - 2] >= 3)) {
      start[ngroups - 1]--;
    }
    for (uint32_t g = 0; g < ngroups; g++) {
      uint32_t gs = start[g], ge = start[g + 1];
      struct inode *node = inode_alloc(t);
      if (!node) {
        rc = BF_NOMEM;
        goto err_free_all;
      }
      assert(nall < all_cap);
      all[nall++] = node;
      encode_node(t, t->scratch[0], level, ge - gs - 1, child + gs, key + gs + 1,
                  len + gs + 1);
      store_image(t, node, t->scratch[0]);
      /* Item g of the next level: this node, bounded below by its first
      ** item's bound (g <= gs, so the in-place rewrite is safe). */
      child[g] = (uintptr_t)node;
      key[g] = key[gs];
      len[g] = len[gs];
    }
    cnt = ngroups;
    level++;
  } while (cnt > 1 && level < INNER_MAX_HEIGHT);
  if (NEVER(cnt > 1)) {
    rc = BF_CORRUPT_BKPT;
    goto err_free_all;
  }
  atomic_store_explicit(&t->root, (struct inode *)(uintptr_t)child[0],
                        memory_order_relaxed);
  atomic_store_explicit(&t->height, level, memory_order_relaxed);
  atomic_store_explicit(&t->node_count, nall, memory_order_relaxed);
  bf_free(child);
  bf_free(key);
  bf_free(len);
  bf_free(start);
  bf_free(all);
  *out = t;
  return BF_OK;

err_free_all:
  for (size_t i = 0; i < nall; i++) bf_free_aligned(all[i]);
  bf_free(child);
  bf_free(key);
  bf_free(len);
  bf_free(start);
  bf_free(all);
  bf_inner_destroy(t);
  return rc;
}

/* ------------------------------------------------------------------------
** Insertion (leaf splits).  Everything below runs under inner->mutex.
*/

/* Decode node into lchild/lkey/llen (keys rebuilt in the arena).  Returns
** the number of separators. */
static uint32_t decode_node(struct bf_inner *t, struct inode *node,
                            uint32_t *level) {
  uint64_t h = ld(node, 0);
  uint32_t n = hdr_count(h);
  *level = hdr_level(h);
  uint8_t *a = t->arena;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t s = ld(node, 1 + i);
    t->lkey[i] = a;
    t->llen[i] = copy_sep(node, s, a);
    a += t->llen[i];
  }
  for (uint32_t k = 0; k <= n; k++) t->lchild[k] = node_child(node, *level, n, k);
  return n;
}

/*
** Choose the separator that moves up when the N separators in lkey/llen
** (with N + 1 children) do not fit one node: the index m in [1, N-2] that
** minimises the larger half, both halves fitting.  Returns m, or 0 when no
** split fits (impossible under invariant 4).
*/
static uint32_t choose_split(const struct bf_inner *t, uint32_t level,
                             uint32_t N) {
  if (N < 3) return 0;
  uint64_t total = 0;
  for (uint32_t i = 0; i < N; i++) total += key_suffix(t->llen[i]);
  uint64_t left = 0, best = UINT64_MAX;
  uint32_t best_m = 0;
  for (uint32_t m = 1; m + 1 < N; m++) {
    left += key_suffix(t->llen[m - 1]);
    uint64_t lb = node_bytes(level, m, left);
    uint64_t rb =
        node_bytes(level, N - 1 - m, total - left - key_suffix(t->llen[m]));
    uint64_t worst = lb > rb ? lb : rb;
    if (worst <= t->body && worst < best) {
      best = worst;
      best_m = m;
    }
  }
  return best_m;
}

/* Lock every node in nodes[0..n), store its image, optionally publish a new
** root, then unlock them all (invariant 7). */
static void insert_commit(struct bf_inner *t, struct inode **nodes,
                          uint64_t **imgs, uint32_t n, struct inode *new_root) {
  uint64_t locked[INNER_MAX_HEIGHT];
  for (uint32_t i = 0; i < n; i++) {
    uint64_t v = atomic_load_explicit(&nodes[i]->version, memory_order_relaxed);
    assert((v & (V_LOCKED | V_OBSOLETE)) == 0);
    locked[i] = v | V_LOCKED;
    atomic_store_explicit(&nodes[i]->version, locked[i], memory_order_relaxed);
  }
  /* Release fence: the LOCKED stores above are ordered before every word
  ** store below; pairs with the acquire fence in node_validate().  TSan
  ** builds: no fence; the word stores themselves are release. */
  SEQ_FENCE(memory_order_release);
  for (uint32_t i = 0; i < n; i++) store_image(t, nodes[i], imgs[i]);
  if (new_root) {
    /* Release: publishes the new root's words (stored while it was
    ** unreachable); pairs with the acquire loads of inner->root in
    ** bf_inner_find().  The old root is still locked here. */
    atomic_store_explicit(&t->root, new_root, memory_order_release);
    atomic_fetch_add_explicit(&t->height, 1, memory_order_relaxed);
  }
  for (uint32_t i = 0; i < n; i++) {
    /* Release: publishes this node's new words (and the new siblings they
    ** point to); pairs with the acquire version loads in bf_inner_find().
    ** (v | LOCKED) + 2 clears LOCKED and bumps the counter. */
    atomic_store_explicit(&nodes[i]->version, locked[i] + 2,
                          memory_order_release);
  }
}

int bf_inner_insert(struct bf_inner *inner, const uint8_t *sep,
                    uint32_t sep_len, uint32_t left_id, uint32_t right_id) {
  struct bf_inner *t = inner;
  if (sep_len > t->max_key_size || (sep_len && !sep)) return BF_INVALID;
  static const uint8_t empty = 0;
  if (!sep) sep = &empty;
  pthread_mutex_lock(&t->mutex);
  uint32_t h = atomic_load_explicit(&t->height, memory_order_relaxed);
  int rc = ensure_spares(t, h);
  if (rc != BF_OK) goto out_unlock;

  /* Descend to the bottom node holding left_id for sep. */
  struct inode *pnode[INNER_MAX_HEIGHT];
  uint32_t pidx[INNER_MAX_HEIGHT];
  struct inode *node = atomic_load_explicit(&t->root, memory_order_relaxed);
  for (uint32_t lvl = h; lvl-- > 0;) {
    uint64_t hd = ld(node, 0);
    uint32_t n = hdr_count(hd);
    if (!hdr_plausible(t, hd) || hdr_level(hd) != lvl) {
      rc = BF_CORRUPT_BKPT;
      goto out_unlock;
    }
    int64_t i = node_search(t, node, n, sep, sep_len, false);
    if (i < 0) {
      rc = BF_CORRUPT_BKPT;
      goto out_unlock;
    }
    pnode[lvl] = node;
    pidx[lvl] = (uint32_t)i;
    if (lvl > 0) node = (struct inode *)(uintptr_t)node_child(node, lvl, n, (uint32_t)i);
  }
  {
    uint32_t n = hdr_count(ld(pnode[0], 0)), i = pidx[0];
    if (node_child(pnode[0], 0, n, i) != left_id) {
      rc = BF_CORRUPT_BKPT; /* the caller's left leaf does not hold sep */
      goto out_unlock;
    }
    if (i > 0) {
      uint64_t s = ld(pnode[0], i);
      if (compare_sep(pnode[0], s, sep, sep_len, key_lookahead(sep, sep_len)) == 0) {
        rc = BF_CORRUPT_BKPT; /* sep is already the low fence of left_id */
        goto out_unlock;
      }
    }
  }

  /* Phase 1: build every new image privately (nothing visible changes). */
  struct inode *changed[INNER_MAX_HEIGHT];
  uint32_t nchanged = 0, nused = 0;
  const uint8_t *ckey = sep;
  uint32_t clen = sep_len;
  uint64_t cchild = right_id;
  bool carry = true;
  for (uint32_t lvl = 0; lvl < h && carry; lvl++) {
    uint32_t level;
    uint32_t n = decode_node(t, pnode[lvl], &level);
    uint32_t at = pidx[lvl];
    /* Insert (ckey, cchild) as separator `at`, child `at + 1`. */
    memmove(t->lkey + at + 1, t->lkey + at, sizeof *t->lkey * (n - at));
    memmove(t->llen + at + 1, t->llen + at, sizeof *t->llen * (n - at));
    memmove(t->lchild + at + 2, t->lchild + at + 1,
            sizeof *t->lchild * (n - at));
    t->lkey[at] = ckey;
    t->llen[at] = clen;
    t->lchild[at + 1] = cchild;
    uint32_t N = n + 1;
    uint64_t suf = 0;
    for (uint32_t i = 0; i < N; i++) suf += key_suffix(t->llen[i]);
    if (node_fits(t, level, N, suf)) {
      encode_node(t, t->scratch[nchanged], level, N, t->lchild, t->lkey,
                  t->llen);
      changed[nchanged++] = pnode[lvl];
      carry = false;
      break;
    }
    uint32_t m = choose_split(t, level, N);
    if (NEVER(m == 0)) {
      rc = BF_CORRUPT_BKPT;
      goto out_unlock;
    }
    /* Left keeps separators [0, m) and children [0, m]; separator m moves
    ** up; the new right node takes separators (m, N) and children (m, N]. */
    encode_node(t, t->scratch[nchanged], level, m, t->lchild, t->lkey, t->llen);
    changed[nchanged++] = pnode[lvl];
    struct inode *right = t->spare[t->nspare - 1 - nused++];
    encode_node(t, t->scratch[nchanged], level, N - 1 - m, t->lchild + m + 1,
                t->lkey + m + 1, t->llen + m + 1);
    /* Unreachable until commit: the parent's unlock (or the root store)
    ** publishes these words. */
    store_image(t, right, t->scratch[nchanged]);
    uint8_t *cbuf = t->carry[lvl & 1]; /* never the buffer ckey points to */
    memcpy(cbuf, t->lkey[m], t->llen[m]);
    ckey = cbuf;
    clen = t->llen[m];
    cchild = (uintptr_t)right;
  }
  struct inode *new_root = NULL;
  if (carry) {
    if (NEVER(h + 1 >= INNER_MAX_HEIGHT)) {
      rc = BF_CORRUPT_BKPT;
      goto out_unlock;
    }
    new_root = t->spare[t->nspare - 1 - nused++];
    uint64_t kids[2] = {(uintptr_t)pnode[h - 1], cchild};
    encode_node(t, t->scratch[nchanged], h, 1, kids, &ckey, &clen);
    store_image(t, new_root, t->scratch[nchanged]);
  }

  /* Phase 2: publish. */
  insert_commit(t, changed, t->scratch, nchanged, new_root);
  t->nspare -= nused;
  atomic_fetch_add_explicit(&t->node_count, nused, memory_order_relaxed);
  atomic_fetch_sub_explicit(&t->aux_bytes, (uint64_t)nused * t->node_size,
                            memory_order_relaxed);
out_unlock:
  pthread_mutex_unlock(&t->mutex);
  return rc;
}

/* ------------------------------------------------------------------------
** Walking and checking (under the mutex).
*/
struct leaf_walk {
  struct bf_inner *t;
  int (*visit)(void *, uint32_t, const uint8_t *, uint32_t, const uint8_t *,
               uint32_t);
  void *ctx;
  uint32_t pending;   /* the leaf waiting for its high fence */
  uint32_t low_len;
  bool low_inf;
  uint8_t *low, *high; /* t->fbuf[], swapped as the walk goes */
};

/* In-order: leaf, separator, leaf, ...; each separator is the high fence of
** the leaf before it and the low fence of the leaf after it. */
static int walk_leaves(struct leaf_walk *w, struct inode *node) {
  uint64_t h = ld(node, 0);
  uint32_t n = hdr_count(h), level = hdr_level(h);
  for (uint32_t k = 0; k <= n; k++) {
    if (k > 0) {
      uint32_t hl = copy_sep(node, ld(node, k), w->high);
      int rc = w->visit(w->ctx, w->pending, w->low_inf ? NULL : w->low,
                        w->low_len, w->high, hl);
      if (rc != BF_OK) return rc;
      uint8_t *tmp = w->low;
      w->low = w->high;
      w->high = tmp;
      w->low_len = hl;
      w->low_inf = false;
    }
    uint64_t c = node_child(node, level, n, k);
    if (level == 0) {
      w->pending = (uint32_t)c;
    } else {
      int rc = walk_leaves(w, (struct inode *)(uintptr_t)c);
      if (rc != BF_OK) return rc;
    }
  }
  return BF_OK;
}

int bf_inner_for_each_leaf(struct bf_inner *inner,
                           int (*visit)(void *ctx, uint32_t leaf_id,
                                        const uint8_t *low, uint32_t low_len,
                                        const uint8_t *high, uint32_t high_len),
                           void *ctx) {
  pthread_mutex_lock(&inner->mutex);
  struct leaf_walk w = {inner, visit, ctx, 0, 0, true, inner->fbuf[0],
                        inner->fbuf[1]};
  int rc = walk_leaves(&w, atomic_load_explicit(&inner->root,
                                                memory_order_relaxed));
  if (rc == BF_OK)
    rc = visit(ctx, w.pending, w.low_inf ? NULL : w.low, w.low_len, NULL, 0);
  pthread_mutex_unlock(&inner->mutex);
  return rc;
}

uint64_t bf_inner_node_count(const struct bf_inner *inner) {
  return atomic_load_explicit((_Atomic uint64_t *)&inner->node_count,
                              memory_order_relaxed);
}

uint32_t bf_inner_height(const struct bf_inner *inner) {
  return atomic_load_explicit((_Atomic uint32_t *)&inner->height,
                              memory_order_relaxed);
}

uint64_t bf_inner_bytes(const struct bf_inner *inner) {
  return sizeof *inner + bf_inner_node_count(inner) * inner->node_size +
         atomic_load_explicit((_Atomic uint64_t *)&inner->aux_bytes,
                              memory_order_relaxed);
}

struct check_state {
  struct bf_inner *t;
  char *errbuf;
  size_t errbuf_size;
  uint64_t nodes;
  uint8_t *bufs; /* 2 key buffers per level, max_key_size each */
};

static int check_fail(struct check_state *cs, const char *what,
                      struct inode *node, uint32_t level, uint32_t idx) {
  if (cs->errbuf && cs->errbuf_size)
    snprintf(cs->errbuf, cs->errbuf_size,
             "inner node %p (level %u), entry %u: %s", (void *)node, level,
             idx, what);
  return BF_CORRUPT_BKPT;
}

/* Check node (expected at level) whose keys must lie in (low, high); NULL
** bounds are infinite. */
static int check_node(struct check_state *cs, struct inode *node,
                      uint32_t level, bool is_root, const uint8_t *low,
                      uint32_t low_len, const uint8_t *high,
                      uint32_t high_len) {
  struct bf_inner *t = cs->t;
  cs->nodes++;
  uint64_t v = atomic_load_explicit(&node->version, memory_order_relaxed);
  if (v & (V_LOCKED | V_OBSOLETE))
    return check_fail(cs, "version locked or obsolete", node, level, 0);
  uint64_t h = ld(node, 0);
  uint32_t n = hdr_count(h), heap = hdr_heap(h);
  if (hdr_level(h) != level)
    return check_fail(cs, "wrong level", node, hdr_level(h), 0);
  if (!hdr_plausible(t, h) || (!is_root && n < 1))
    return check_fail(cs, "separator count out of range", node, level, n);
  uint64_t kid_end = 8 * (1 + (uint64_t)n) +
                     (level == 0 ? (4 * ((uint64_t)n + 1) + 7) / 8 * 8
                                 : 8 * ((uint64_t)n + 1));
  if (heap > t->body || kid_end > heap)
    return check_fail(cs, "heap start overlaps the children", node, level, n);
  size_t stride = (size_t)t->max_key_size + 1;
  uint8_t *prev = cs->bufs + 2 * level * stride;
  uint8_t *cur = prev + stride;
  uint32_t prev_len = low_len;
  bool have_prev = low != NULL;
  if (low) memcpy(prev, low, low_len);
  uint32_t off = heap;
  for (uint32_t i = 0; i <= n; i++) {
    uint32_t cur_len = 0;
    if (i < n) {
      uint64_t s = ld(node, 1 + i);
      if (!slot_plausible(t, s))
        return check_fail(cs, "separator out of bounds", node, level, i);
      if (slot_off(s) != off)
        return check_fail(cs, "heap not packed in order", node, level, i);
      off += key_suffix(slot_len(s));
      uint32_t len = slot_len(s);
      if (len < 4 && (slot_la(s) & (0xffffffffu >> (8 * len))) != 0)
        return check_fail(cs, "look-ahead padding not zero", node, level, i);
      cur_len = copy_sep(node, s, cur);
      if (have_prev && bf_key_compare(prev, prev_len, cur, cur_len) >= 0)
        return check_fail(cs, "separators out of order (or not above the "
                              "lower bound)",
                          node, level, i);
      if (high && bf_key_compare(cur, cur_len, high, high_len) >= 0)
        return check_fail(cs, "separator not below the upper bound", node,
                          level, i);
    }
    if (level > 0) {
      struct inode *c =
          (struct inode *)(uintptr_t)node_child(node, level, n, i);
      if (!c) return check_fail(cs, "null child", node, level, i);
      /* Child i is bounded by separator i-1 (in prev) and separator i (in
      ** cur), or by this node's own bounds at the edges. */
      int rc = check_node(cs, c, level - 1, false,
                          i == 0 ? low : (have_prev ? prev : NULL),
                          i == 0 ? low_len : prev_len,
                          i < n ? cur : high, i < n ? cur_len : high_len);
      if (rc != BF_OK) return rc;
    }
    if (i < n) {
      uint8_t *tmp = prev;
      prev = cur;
      cur = tmp;
      prev_len = cur_len;
      have_prev = true;
    }
  }
  if (off != t->body)
    return check_fail(cs, "heap does not end at the node's end", node, level,
                      n);
  return BF_OK;
}

int bf_inner_check(struct bf_inner *inner, char *errbuf, size_t errbuf_size) {
  pthread_mutex_lock(&inner->mutex);
  uint32_t h = atomic_load_explicit(&inner->height, memory_order_relaxed);
  struct check_state cs = {inner, errbuf, errbuf_size, 0, NULL};
  int rc = BF_OK;
  if (h == 0 || h >= INNER_MAX_HEIGHT) {
    if (errbuf && errbuf_size) snprintf(errbuf, errbuf_size, "bad height %u", h);
    rc = BF_CORRUPT_BKPT;
    goto out_unlock;
  }
  cs.bufs = bf_malloc((size_t)2 * h * (inner->max_key_size + 1));
  if (!cs.bufs) {
    rc = BF_NOMEM;
    goto out_unlock;
  }
  rc = check_node(&cs, atomic_load_explicit(&inner->root, memory_order_relaxed),
                  h - 1, true, NULL, 0, NULL, 0);
  if (rc == BF_OK &&
      cs.nodes != atomic_load_explicit(&inner->node_count,
                                       memory_order_relaxed)) {
    if (errbuf && errbuf_size)
      snprintf(errbuf, errbuf_size, "node count %llu, but %llu reachable",
               (unsigned long long)atomic_load(&inner->node_count),
               (unsigned long long)cs.nodes);
    rc = BF_CORRUPT_BKPT;
  }
  bf_free(cs.bufs);
out_unlock:
  pthread_mutex_unlock(&inner->mutex);
  return rc;
}
