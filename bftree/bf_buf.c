/*
** bf_buf.c: the circular buffer of mini-page blocks.
**
** Owns one allocation of `size` bytes (a multiple of 64, 4096-aligned) in
** which every mini-page of the tree lives, the per-class free lists threaded
** through it, and the eviction cursor.  It knows nothing of what a mini-page
** holds: bodies are opaque bytes to this file.
**
** Positions.  head, evict and tail are logical byte offsets that only grow;
** a logical offset L lives at physical offset L % size.  Blocks are taken at
** the tail, retired at the evict cursor, and their memory becomes reusable
** when the head passes them:
**
**     head <= evict <= tail,    tail - head <= size
**
**   [head, evict)  blocks claimed by an evictor or already EVICTED
**   [evict, tail)  blocks not yet reached by eviction
**   [tail, head + size)  unused memory
**
** BLOCK (8-byte aligned, at physical offset p):
**
**   OFFSET SIZE DESCRIPTION
**   0      4    state word (_Atomic uint32_t):
**                 bits 0..7  state (enum bf_block_state)
**                 bits 8..15 size class, or 0xFF for a padding block
**   4      4    leaf id (_Atomic uint32_t) of the mini-page's leaf
**   8      C    the mini-page (the "node" handed out), C = class_size(class)
**
** A PADDING block (class 0xFF) has the header only; it covers [p, size), up
** to the physical end of the buffer.  It is written when the next block
** would cross the physical end, in state TOMBSTONE, and retired by eviction.
**
** A FREELISTED block's body starts with its free-list links (protected by
** buf->lock; the body belongs to nobody else while the block is free):
**
**   OFFSET SIZE DESCRIPTION
**   8      8    previous free block of the class (node pointer) or NULL
**   16     8    next free block of the class (node pointer) or NULL
**
** Size classes: 64, 128, 160, 192, 256, 384, 512, 768, ... bytes of body:
** the powers of two from 64 to page_size and, from 128 on, each power times
** 1.5 below page_size (so a mini-page of a few records wastes at most a
** third of its block rather than half), plus 160 (a mini-page holding one
** row of about 100 bytes); the last class is the full-page mini-page.
** Every block is 8 + 32*k bytes, so every block start (and node) is
** 8-aligned.
**
** STATE MACHINE (function performing each transition; "L" = under buf->lock)
**
**   (tail)     -> NOT_READY                       [bf_buf_alloc] L
**   FREELISTED -> NOT_READY                       [bf_buf_alloc] L
**   NOT_READY  -> READY                           [bf_buf_publish]
**   NOT_READY  -> TOMBSTONE | FREELISTED          [bf_buf_abort] L
**   READY      -> BEGIN_TOMBSTONE                 [bf_buf_free]
**   BEGIN_TOMBSTONE -> TOMBSTONE | FREELISTED     [bf_buf_free] L
**   TOMBSTONE | FREELISTED -> EVICTED  (at cursor) [bf_buf_evict_next] L
**   READY (at cursor): cursor moves past it = "claimed" [bf_buf_evict_next] L
**   READY | TOMBSTONE (claimed) -> EVICTED        [bf_buf_evict_done] L
**   (padding)  -> TOMBSTONE                       [bf_buf_alloc] L
**
** Only publish (by the block's owner) and the first step of free (by the
** owner, holding the leaf latch exclusively) change a state outside the
** lock; both are single atomic operations.  Every other state change, and
** every read of a state that decides something, is made under buf->lock.
**
** Release of a block (free or abort) chooses:
**   - behind the evict cursor (claimed by an evictor): TOMBSTONE; the
**     evictor will find it so after latching the leaf and retire it in
**     bf_buf_evict_done.
**   - within the copy-on-access region (distance from the head < size/10):
**     TOMBSTONE.  Reusing such a block would put a fresh mini-page where it
**     is about to be evicted, so it is left for the evictor to reclaim.
**   - otherwise: FREELISTED, pushed on the front of its class's list.
**
** INVARIANTS (checked by bf_buf_check; cited in asserts as "inv N")
**   1. head <= evict <= tail, tail - head <= size; all three are multiples
**      of 8 and lie on block boundaries.
**   2. The blocks tile [head, tail) exactly.  No block crosses the physical
**      end of the buffer; a padding block ends exactly at it.
**   3. Every block in [head, evict) is EVICTED, or READY or TOMBSTONE and
**      claimed by exactly one evictor that will call bf_buf_evict_done.
**      No block in [evict, tail) is EVICTED.  A padding block is TOMBSTONE
**      or EVICTED.
**   4. The head only passes EVICTED blocks, so memory is reused only after
**      its block is EVICTED (and claimed blocks stay intact until
**      bf_buf_evict_done, however many evictors finish out of order).
**   5. A block is on its class's free list iff its state is FREELISTED;
**      free-listed blocks lie in [evict, tail).  free_count[c] is the length
**      of list c.
**   6. live_blocks[c] counts blocks of class c in NOT_READY, READY or
**      BEGIN_TOMBSTONE; live_bytes is the sum of their sizes (header
**      included), so live_bytes <= tail - head.
**   7. A NOT_READY block is never claimed: the cursor stops in front of it.
**      (So a thread holding a NOT_READY block must never wait for eviction:
**      abort or publish first.)
**
** LOCKING.  One mutex, buf->lock, protects head, evict, tail, the free lists
** and the counters.  Its critical sections are a few dozen instructions: no
** I/O, no latch waits, no allocation.  head, evict, tail and free_count are
** atomics only so that the hint functions (bf_buf_in_second_chance,
** bf_buf_filling, bf_buf_needs_eviction) can read them without the lock.
*/
#include "bf_int.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>

#define BLOCK_HEADER 8u
#define PAD_CLASS 0xFFu
#define CACHE_LINE 64

/* The block header, overlaid on the buffer memory. */
struct block_header {
  _Atomic uint32_t word; /* state | class << 8 */
  _Atomic uint32_t leaf;
};
_Static_assert(sizeof(struct block_header) == BLOCK_HEADER,
               "block header must be 8 bytes");

struct bf_buf {
  /* Read-mostly: set by bf_buf_create, never changed afterwards. */
  uint8_t *mem;
  uint64_t size;
  uint64_t second_chance; /* size / 10: bytes of the copy-on-access region */
  uint32_t page_size;
  uint32_t class_count;
  uint32_t class_size[BF_MAX_SIZE_CLASSES];

  /* Allocation side.  Protected by lock; changes at every alloc/free. */
  alignas(CACHE_LINE) pthread_mutex_t lock;
  _Atomic uint64_t tail; /* stored under lock; read relaxed by hints */
  uint8_t *free_first[BF_MAX_SIZE_CLASSES];            /* node pointers */
  _Atomic uint64_t free_count[BF_MAX_SIZE_CLASSES];    /* read by hints */
  uint64_t live_blocks[BF_MAX_SIZE_CLASSES];
  uint64_t live_bytes;

  /* Eviction side.  Protected by lock; changes only on eviction, read
  ** (relaxed, unlocked) by bf_buf_in_second_chance on every leaf access,
  ** so it sits on its own line, away from the allocation traffic. */
  alignas(CACHE_LINE) _Atomic uint64_t head;
  _Atomic uint64_t evict;
};

/* ------------------------------------------------------------------------
** Header helpers.
*/
static inline uint32_t make_word(int state, uint32_t size_class) {
  return (uint32_t)state | (size_class << 8);
}
static inline int word_state(uint32_t word) { return (int)(word & 0xFFu); }
static inline uint32_t word_class(uint32_t word) { return (word >> 8) & 0xFFu; }

static inline struct block_header *header_at(const struct bf_buf *buf,
                                             uint64_t phys) {
  return (struct block_header *)(buf->mem + phys);
}
static inline struct block_header *header_of(const uint8_t *node) {
  return (struct block_header *)(uintptr_t)(node - BLOCK_HEADER);
}
static inline uint64_t phys_of(const struct bf_buf *buf, const uint8_t *node) {
  return (uint64_t)(node - BLOCK_HEADER - buf->mem);
}

/* Bytes of the block at physical offset phys whose class is size_class. */
static inline uint64_t block_bytes(const struct bf_buf *buf, uint64_t phys,
                                   uint32_t size_class) {
  if (size_class == PAD_CLASS) return buf->size - phys;
  return BLOCK_HEADER + buf->class_size[size_class];
}

/* Logical distance of the block at phys from the head (< size for any
** block in [head, tail), by inv 1). */
static inline uint64_t distance_from(const struct bf_buf *buf, uint64_t phys,
                                     uint64_t head) {
  uint64_t head_phys = head % buf->size;
  return phys >= head_phys ? phys - head_phys : phys + buf->size - head_phys;
}

/* Free-list links live in the first 16 bytes of a free block's body. */
static void link_get(const uint8_t *node, uint8_t **prev, uint8_t **next) {
  memcpy(prev, node, sizeof *prev);
  memcpy(next, node + sizeof *prev, sizeof *next);
}
static void link_set_prev(uint8_t *node, uint8_t *prev) {
  memcpy(node, &prev, sizeof prev);
}
static void link_set_next(uint8_t *node, uint8_t *next) {
  memcpy(node + sizeof next, &next, sizeof next);
}

/* Push node on the front of its class's free list.  Lock held. */
static void freelist_push_locked(struct bf_buf *buf, uint32_t size_class,
                                 uint8_t *node) {
  uint8_t *first = buf->free_first[size_class];
  link_set_prev(node, NULL);
  link_set_next(node, first);
  if (first) link_set_prev(first, node);
  buf->free_first[size_class] = node;
  /* Relaxed: the count is read unlocked only as a hint. */
  atomic_store_explicit(&buf->free_count[size_class],
                        atomic_load_explicit(&buf->free_count[size_class],
                                             memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

/* Unlink node (anywhere in the list) from its class's free list.  Lock
** held. */
static void freelist_remove_locked(struct bf_buf *buf, uint32_t size_class,
                                   uint8_t *node) {
  uint8_t *prev, *next;
  link_get(node, &prev, &next);
  if (prev)
    link_set_next(prev, next);
  else
    buf->free_first[size_class] = next;
  if (next) link_set_prev(next, prev);
  uint64_t n = atomic_load_explicit(&buf->free_count[size_class],
                                    memory_order_relaxed);
  assert(n > 0); /* inv 5 */
  atomic_store_explicit(&buf->free_count[size_class], n - 1,
                        memory_order_relaxed);
}

/* ------------------------------------------------------------------------
** Creation and geometry.
*/
int bf_buf_create(uint64_t size, uint32_t page_size, struct bf_buf **out) {
  struct bf_buf *buf;
  *out = NULL;
  if (page_size < 512 || page_size > BF_MAX_NODE_SIZE ||
      (page_size & (page_size - 1)) != 0)
    return BF_INVALID;
  size &= ~(uint64_t)63;
  if (size < 16 * ((uint64_t)page_size + BLOCK_HEADER)) return BF_INVALID;
#if SIZE_MAX < UINT64_MAX
  if (size > SIZE_MAX) return BF_NOMEM;
#endif

  /* 512: bf_malloc_aligned's minimum alignment; the struct needs 64. */
  buf = bf_malloc_aligned(512, sizeof *buf);
  if (!buf) return BF_NOMEM;
  memset(buf, 0, sizeof *buf);
  buf->mem = bf_malloc_aligned(4096, (size_t)size);
  if (!buf->mem) goto err_free_buf;
  if (pthread_mutex_init(&buf->lock, NULL) != 0) goto err_free_mem;

  buf->size = size;
  buf->second_chance = size / 10;
  buf->page_size = page_size;
  buf->class_count = 0;
  for (uint32_t s = 64; s <= page_size; s <<= 1) {
    buf->class_size[buf->class_count++] = s;
    /* 160: one record of ~100 bytes plus its key and the node header (a
    ** typical cached row) fills 128 + a few bytes; 192 would waste 30%. */
    if (s == 128 && s + s / 4 < page_size)
      buf->class_size[buf->class_count++] = s + s / 4;
    if (s >= 128 && s + s / 2 < page_size)
      buf->class_size[buf->class_count++] = s + s / 2;
  }
  assert(buf->class_count <= BF_MAX_SIZE_CLASSES);
  atomic_init(&buf->tail, 0);
  atomic_init(&buf->head, 0);
  atomic_init(&buf->evict, 0);
  for (uint32_t c = 0; c < BF_MAX_SIZE_CLASSES; c++)
    atomic_init(&buf->free_count[c], 0);
  *out = buf;
  return BF_OK;

err_free_mem:
  bf_free_aligned(buf->mem);
err_free_buf:
  bf_free_aligned(buf);
  return BF_NOMEM;
}

void bf_buf_destroy(struct bf_buf *buf) {
  if (!buf) return;
  pthread_mutex_destroy(&buf->lock);
  bf_free_aligned(buf->mem);
  bf_free_aligned(buf);
}

void bf_buf_discard(struct bf_buf *buf) {
  /* mem is 4096-aligned (bf_buf_create); whole pages only.  Best effort:
  ** if madvise fails, the memory simply stays until bf_buf_destroy. */
  size_t len = (size_t)buf->size & ~(size_t)4095;
  if (len) (void)madvise(buf->mem, len, MADV_DONTNEED);
}

uint64_t bf_buf_size(const struct bf_buf *buf) { return buf->size; }

/* Bytes retired by eviction since creation (the head's logical offset): a
** hint, read relaxed. */
uint64_t bf_buf_retired(const struct bf_buf *buf) {
  return atomic_load_explicit(&buf->head, memory_order_relaxed);
}

/* Bytes between tail and head that no block holds: what allocations can
** take before one must evict (a hint, read relaxed; padding at the
** physical end not deducted). */
uint64_t bf_buf_unused(const struct bf_buf *buf) {
  uint64_t head = atomic_load_explicit(&buf->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&buf->tail, memory_order_relaxed);
  uint64_t used = tail >= head ? tail - head : 0; /* stale reads */
  return used < buf->size ? buf->size - used : 0;
}

uint32_t bf_buf_block_size(const struct bf_buf *buf, uint32_t size_class) {
  return BLOCK_HEADER + buf->class_size[size_class];
}

uint32_t bf_buf_class_count(const struct bf_buf *buf) {
  return buf->class_count;
}

uint32_t bf_buf_class_size(const struct bf_buf *buf, uint32_t size_class) {
  assert(size_class < buf->class_count);
  return buf->class_size[size_class];
}

uint32_t bf_buf_class_for(const struct bf_buf *buf, uint32_t bytes) {
  uint32_t c = 0;
  while (c < buf->class_count && buf->class_size[c] < bytes) c++;
  return c;
}

uint32_t bf_buf_full_class(const struct bf_buf *buf) {
  return buf->class_count - 1;
}

/* ------------------------------------------------------------------------
** Block facts.  The caller owns the block (holds its leaf's latch, or has
** it claimed), which orders these loads after the writes that matter.
*/
uint32_t bf_buf_node_class(const uint8_t *node) {
  /* Relaxed: the class of an allocated block never changes. */
  return word_class(
      atomic_load_explicit(&header_of(node)->word, memory_order_relaxed));
}

uint32_t bf_buf_node_leaf(const uint8_t *node) {
  /* Relaxed: an evictor reads this before latching the leaf and must
  ** re-check it after latching (bf_buf_set_leaf may have changed it). */
  return atomic_load_explicit(&header_of(node)->leaf, memory_order_relaxed);
}

int bf_buf_node_state(const uint8_t *node) {
  /* Acquire: pairs with the release store of READY in bf_buf_publish and of
  ** TOMBSTONE/FREELISTED in release_locked, so a reader that sees the state
  ** also sees what preceded it. */
  return word_state(
      atomic_load_explicit(&header_of(node)->word, memory_order_acquire));
}

void bf_buf_set_leaf(uint8_t *node, uint32_t leaf_id) {
  /* Relaxed: the caller holds the latches of both leaves; readers without
  ** them (an evictor choosing which leaf to latch) re-check after latching. */
  atomic_store_explicit(&header_of(node)->leaf, leaf_id, memory_order_relaxed);
}

/* ------------------------------------------------------------------------
** Allocation.
*/

/*
** Allocate a block of size_class for leaf_id.  Returns BF_OK with *node the
** body (class_size bytes, contents undefined, state NOT_READY), BF_RETRY
** when the class's free list is empty and the tail has no room (nothing
** changed), BF_INVALID for a bad class.  Takes buf->lock briefly; never
** waits for anything else.  Each BF_OK is matched by bf_buf_publish or
** bf_buf_abort.
*/
int bf_buf_alloc(struct bf_buf *buf, uint32_t size_class, uint32_t leaf_id,
                 uint8_t **node /* OUT: the new block's body */) {
  *node = NULL;
  if (NEVER(size_class >= buf->class_count)) return BF_INVALID;
  uint64_t need = BLOCK_HEADER + buf->class_size[size_class];
  uint8_t *n;

  pthread_mutex_lock(&buf->lock);
  n = buf->free_first[size_class];
  if (n) {
    struct block_header *h = header_of(n);
    assert(word_state(atomic_load_explicit(&h->word, memory_order_relaxed)) ==
           BF_BLOCK_FREELISTED);
    freelist_remove_locked(buf, size_class, n);
    atomic_store_explicit(&h->leaf, leaf_id, memory_order_relaxed);
    /* Relaxed: the only readers that act on a non-READY state (evictors,
    ** check) read it under buf->lock, which orders this store. */
    atomic_store_explicit(&h->word, make_word(BF_BLOCK_NOT_READY, size_class),
                          memory_order_relaxed);
  } else {
    uint64_t tail = atomic_load_explicit(&buf->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&buf->head, memory_order_relaxed);
    uint64_t phys = tail % buf->size;
    uint64_t pad = phys + need > buf->size ? buf->size - phys : 0;
    if (tail + pad + need - head > buf->size) {
      pthread_mutex_unlock(&buf->lock);
      return BF_RETRY;
    }
    if (pad) {
      /* inv 2: a padding block runs to the physical end. */
      struct block_header *p = header_at(buf, phys);
      atomic_store_explicit(&p->leaf, 0, memory_order_relaxed);
      atomic_store_explicit(&p->word,
                            make_word(BF_BLOCK_TOMBSTONE, PAD_CLASS),
                            memory_order_relaxed); /* read under lock only */
      tail += pad;
      phys = 0;
    }
    struct block_header *h = header_at(buf, phys);
    atomic_store_explicit(&h->leaf, leaf_id, memory_order_relaxed);
    /* Relaxed: as above, non-READY states are acted on under the lock. */
    atomic_store_explicit(&h->word, make_word(BF_BLOCK_NOT_READY, size_class),
                          memory_order_relaxed);
    /* Relaxed: tail is read unlocked only by the bf_buf_needs_eviction
    ** hint; every decision on it is made under the lock. */
    atomic_store_explicit(&buf->tail, tail + need, memory_order_relaxed);
    n = (uint8_t *)h + BLOCK_HEADER;
  }
  buf->live_blocks[size_class]++;
  buf->live_bytes += need;
  pthread_mutex_unlock(&buf->lock);
  *node = n;
  return BF_OK;
}

void bf_buf_publish(struct bf_buf *buf, uint8_t *node) {
  struct block_header *h = header_of(node);
  uint32_t word = atomic_load_explicit(&h->word, memory_order_relaxed);
  BF_UNUSED(buf);
  assert(word_state(word) == BF_BLOCK_NOT_READY);
  /* Release: publishes the mini-page bytes written since bf_buf_alloc.
  ** Pairs with the acquire load of the state in bf_buf_evict_next (an
  ** evictor that claims the block sees its contents), bf_buf_node_state,
  ** bf_buf_check and bf_buf_for_each_ready. */
  atomic_store_explicit(&h->word,
                        make_word(BF_BLOCK_READY, word_class(word)),
                        memory_order_release);
}

/*
** Release a block that has stopped being live (state NOT_READY or
** BEGIN_TOMBSTONE, owned by the caller): TOMBSTONE when claimed by an
** evictor or inside the copy-on-access region, else FREELISTED (see the
** file header).  Updates the live counters.  Lock held.
*/
static void release_locked(struct bf_buf *buf, uint8_t *node) {
  struct block_header *h = header_of(node);
  uint32_t size_class =
      word_class(atomic_load_explicit(&h->word, memory_order_relaxed));
  uint64_t head = atomic_load_explicit(&buf->head, memory_order_relaxed);
  uint64_t evict = atomic_load_explicit(&buf->evict, memory_order_relaxed);
  uint64_t dist = distance_from(buf, phys_of(buf, node), head);
  int state;

  assert(size_class < buf->class_count);
  if (dist < evict - head || dist < buf->second_chance) {
    state = BF_BLOCK_TOMBSTONE;
  } else {
    freelist_push_locked(buf, size_class, node);
    state = BF_BLOCK_FREELISTED;
  }
  /* Release: orders the owner's last accesses to the body (and the free
  ** links just written) before the new state; pairs with the acquire in
  ** bf_buf_node_state (an evictor holding the leaf latch checks for
  ** TOMBSTONE) and with the lock-protected loads of evictors. */
  atomic_store_explicit(&h->word, make_word(state, size_class),
                        memory_order_release);
  assert(buf->live_blocks[size_class] > 0); /* inv 6 */
  buf->live_blocks[size_class]--;
  buf->live_bytes -= BLOCK_HEADER + buf->class_size[size_class];
}

void bf_buf_abort(struct bf_buf *buf, uint8_t *node) {
  pthread_mutex_lock(&buf->lock);
  assert(word_state(atomic_load_explicit(&header_of(node)->word,
                                         memory_order_relaxed)) ==
         BF_BLOCK_NOT_READY);
  release_locked(buf, node);
  pthread_mutex_unlock(&buf->lock);
}

/*
** Release a READY block.  The caller holds the leaf's exclusive latch and
** has unlinked the node from the mapping table; after this call the body
** must not be touched.  If an evictor has claimed the block meanwhile it
** becomes TOMBSTONE and that evictor retires it.
*/
void bf_buf_free(struct bf_buf *buf, uint8_t *node) {
  struct block_header *h = header_of(node);
  uint32_t size_class =
      word_class(atomic_load_explicit(&h->word, memory_order_relaxed));
  uint32_t expect = make_word(BF_BLOCK_READY, size_class);
  /* READY -> BEGIN_TOMBSTONE, outside the lock: from here on an evictor
  ** that reaches the block at its cursor waits (BF_RETRY) instead of
  ** claiming it.  Acquire/release: the acquire half pairs with the publish
  ** release (only matters for a caller that did not publish the block
  ** itself); the release half orders the owner's body accesses before it.
  ** The decisive state is stored under the lock by release_locked. */
  if (!ALWAYS(atomic_compare_exchange_strong_explicit(
          &h->word, &expect, make_word(BF_BLOCK_BEGIN_TOMBSTONE, size_class),
          memory_order_acq_rel, memory_order_relaxed)))
    return;
  pthread_mutex_lock(&buf->lock);
  release_locked(buf, node);
  pthread_mutex_unlock(&buf->lock);
}

/* ------------------------------------------------------------------------
** Eviction.
*/

/* Move the head over consecutive EVICTED blocks (inv 4).  Lock held. */
static void advance_head_locked(struct bf_buf *buf) {
  uint64_t head = atomic_load_explicit(&buf->head, memory_order_relaxed);
  uint64_t evict = atomic_load_explicit(&buf->evict, memory_order_relaxed);
  while (head < evict) {
    uint64_t phys = head % buf->size;
    /* Relaxed: every store of EVICTED is made under the lock we hold. */
    uint32_t word =
        atomic_load_explicit(&header_at(buf, phys)->word, memory_order_relaxed);
    if (word_state(word) != BF_BLOCK_EVICTED) break;
    head += block_bytes(buf, phys, word_class(word));
  }
  /* Relaxed: read unlocked only by the two hint functions. */
  atomic_store_explicit(&buf->head, head, memory_order_relaxed);
}

/*
** Claim the block at the eviction cursor (see bf_int.h for the outcomes).
** Returns BF_OK (*node NULL: a dead block was retired; *node set: a READY
** block now claimed by the caller, who must end with bf_buf_evict_done),
** BF_RETRY (cursor at the tail or at a NOT_READY / BEGIN_TOMBSTONE block),
** or BF_CORRUPT when the header at the cursor is impossible.
*/
int bf_buf_evict_next(struct bf_buf *buf, uint8_t **node /* OUT */) {
  int rc = BF_OK;
  *node = NULL;
  pthread_mutex_lock(&buf->lock);
  uint64_t evict = atomic_load_explicit(&buf->evict, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&buf->tail, memory_order_relaxed);
  if (evict == tail) {
    rc = BF_RETRY;
    goto out_unlock;
  }
  uint64_t phys = evict % buf->size;
  struct block_header *h = header_at(buf, phys);
  /* Acquire: pairs with the release store of READY in bf_buf_publish, so a
  ** claimed block's contents are visible to the claiming evictor. */
  uint32_t word = atomic_load_explicit(&h->word, memory_order_acquire);
  uint32_t size_class = word_class(word);
  if (NEVER(size_class != PAD_CLASS && size_class >= buf->class_count)) {
    rc = BF_CORRUPT_BKPT;
    goto out_unlock;
  }
  uint64_t bytes = block_bytes(buf, phys, size_class);
  switch (word_state(word)) {
    case BF_BLOCK_FREELISTED:
      /* Off its free list, it is as dead as a tombstone. */
      freelist_remove_locked(buf, size_class, (uint8_t *)h + BLOCK_HEADER);
      /* fall through */
    case BF_BLOCK_TOMBSTONE:
      /* Relaxed: EVICTED is read only under the lock (advance_head_locked,
      ** bf_buf_check); the memory is reused only after the head passes it,
      ** which also happens under the lock. */
      atomic_store_explicit(&h->word, make_word(BF_BLOCK_EVICTED, size_class),
                            memory_order_relaxed);
      atomic_store_explicit(&buf->evict, evict + bytes, memory_order_relaxed);
      advance_head_locked(buf);
      break;
    case BF_BLOCK_READY:
      /* Claim: moving the cursor past the block is the claim (inv 3).  A
      ** concurrent bf_buf_free now sees it behind the cursor. */
      atomic_store_explicit(&buf->evict, evict + bytes, memory_order_relaxed);
      *node = (uint8_t *)h + BLOCK_HEADER;
      break;
    case BF_BLOCK_NOT_READY:
    case BF_BLOCK_BEGIN_TOMBSTONE:
      /* The owner is filling it (inv 7) or freeing it (it will take the
      ** lock next): neither waits for us, so retrying makes progress. */
      rc = BF_RETRY;
      break;
    default:
      /* EVICTED at or after the cursor, or no state at all: inv 3 broken. */
      (void)NEVER(1);
      rc = BF_CORRUPT_BKPT;
      break;
  }
out_unlock:
  pthread_mutex_unlock(&buf->lock);
  return rc;
}

/*
** Finish the eviction of a block claimed by bf_buf_evict_next.  The state
** must be READY (the caller evicted the mini-page and unlinked it, or holds
** the latch and decided so) or TOMBSTONE (its owner freed it meanwhile).
** After this call the body must not be touched.
*/
void bf_buf_evict_done(struct bf_buf *buf, uint8_t *node) {
  struct block_header *h = header_of(node);
  pthread_mutex_lock(&buf->lock);
  uint32_t word = atomic_load_explicit(&h->word, memory_order_relaxed);
  uint32_t size_class = word_class(word);
  int state = word_state(word);
  assert(size_class < buf->class_count);
  assert(distance_from(buf, phys_of(buf, node),
                       atomic_load_explicit(&buf->head, memory_order_relaxed)) <
         atomic_load_explicit(&buf->evict, memory_order_relaxed) -
             atomic_load_explicit(&buf->head, memory_order_relaxed));
  if (state == BF_BLOCK_READY) {
    assert(buf->live_blocks[size_class] > 0); /* inv 6 */
    buf->live_blocks[size_class]--;
    buf->live_bytes -= BLOCK_HEADER + buf->class_size[size_class];
  } else {
    (void)ALWAYS(state == BF_BLOCK_TOMBSTONE);
  }
  /* Relaxed: EVICTED is read only under the lock we hold. */
  atomic_store_explicit(&h->word, make_word(BF_BLOCK_EVICTED, size_class),
                        memory_order_relaxed);
  advance_head_locked(buf);
  pthread_mutex_unlock(&buf->lock);
}

/* ------------------------------------------------------------------------
** Hints.
*/

/*
** True when the block lies in the copy-on-access region (within size/10 of
** the head) and has not been claimed by an evictor.
**
** Benign race: head and evict are read relaxed without the lock, so the
** answer may be stale (a head that moved meanwhile, a cursor that just
** passed the block, even an evict value older than head, which is clamped).
** The answer only decides whether the caller copies a hot mini-page to the
** tail: a wrong "true" costs one copy, a wrong "false" one later eviction.
** The block itself is the caller's (it holds the leaf latch), so nothing
** is read through a stale position.
*/
bool bf_buf_in_second_chance(const struct bf_buf *buf, const uint8_t *node) {
  uint64_t head = atomic_load_explicit(&buf->head, memory_order_relaxed);
  uint64_t evict = atomic_load_explicit(&buf->evict, memory_order_relaxed);
  if (evict < head) evict = head;
  uint64_t dist = distance_from(buf, phys_of(buf, node), head);
  return dist >= evict - head && dist < buf->second_chance;
}

/* Relaxed loads, as the other hints: a stale answer costs one copy on
** access too many or too few. */
bool bf_buf_filling(const struct bf_buf *buf) {
  uint64_t head = atomic_load_explicit(&buf->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&buf->tail, memory_order_relaxed);
  uint64_t used = tail >= head ? tail - head : 0;
  return used < buf->size && buf->size - used > buf->second_chance;
}

/*
** True when bf_buf_alloc(size_class) would return BF_RETRY now: the class's
** free list is empty and the tail has no room for the block (plus the
** padding it would need).  Exact when nothing runs concurrently; otherwise
** a hint from relaxed loads (the allocation itself decides under the lock).
*/
bool bf_buf_needs_eviction(const struct bf_buf *buf, uint32_t size_class) {
  if (NEVER(size_class >= buf->class_count)) return true;
  if (atomic_load_explicit(&buf->free_count[size_class],
                           memory_order_relaxed) > 0)
    return false;
  uint64_t head = atomic_load_explicit(&buf->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&buf->tail, memory_order_relaxed);
  uint64_t need = BLOCK_HEADER + buf->class_size[size_class];
  uint64_t phys = tail % buf->size;
  uint64_t pad = phys + need > buf->size ? buf->size - phys : 0;
  uint64_t used = tail >= head ? tail - head : 0; /* stale reads */
  return used + pad + need > buf->size;
}

/* ------------------------------------------------------------------------
** Statistics and checking.
*/
void bf_buf_stats(struct bf_buf *buf, struct bf_buf_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&buf->lock);
  out->used = atomic_load_explicit(&buf->tail, memory_order_relaxed) -
              atomic_load_explicit(&buf->head, memory_order_relaxed);
  out->live = buf->live_bytes;
  for (uint32_t c = 0; c < buf->class_count; c++)
    out->blocks[c] = buf->live_blocks[c];
  pthread_mutex_unlock(&buf->lock);
}

static int check_fail(char *errbuf, size_t errbuf_size, const char *format,
                      ...) __attribute__((format(printf, 3, 4)));
static int check_fail(char *errbuf, size_t errbuf_size, const char *format,
                      ...) {
  if (errbuf && errbuf_size) {
    va_list ap;
    va_start(ap, format);
    vsnprintf(errbuf, errbuf_size, format, ap);
    va_end(ap);
  }
  return BF_CORRUPT_BKPT;
}

#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (!(cond)) {                                              \
      rc = check_fail(errbuf, errbuf_size, __VA_ARGS__);        \
      goto out;                                                 \
    }                                                           \
  } while (0)

/*
** Verify invariants 1-6: walk head..tail checking every header, that the
** blocks tile the range and meet the cursor, that states fit their side of
** the cursor, that each free list holds exactly the FREELISTED blocks of
** its class (with consistent links), and the counters.  Returns BF_OK,
** BF_CORRUPT (errbuf, which may be NULL, says what), or BF_NOMEM (the
** checker's bitmap).  Holds the lock; meant for a quiescent buffer, where
** no block is BEGIN_TOMBSTONE.
*/
int bf_buf_check(struct bf_buf *buf, char *errbuf, size_t errbuf_size) {
  int rc = BF_OK;
  uint64_t live_blocks[BF_MAX_SIZE_CLASSES] = {0};
  uint64_t free_blocks[BF_MAX_SIZE_CLASSES] = {0};
  uint64_t live_bytes = 0;
  /* One bit per 8-byte unit: set where a FREELISTED block starts. */
  uint8_t *starts = bf_calloc((size_t)(buf->size / 64) + 1, 1);
  if (!starts) return BF_NOMEM;
  if (errbuf && errbuf_size) errbuf[0] = 0;

  pthread_mutex_lock(&buf->lock);
  uint64_t head = atomic_load_explicit(&buf->head, memory_order_relaxed);
  uint64_t evict = atomic_load_explicit(&buf->evict, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&buf->tail, memory_order_relaxed);
  CHECK(head <= evict && evict <= tail,
        "inv 1: head %llu, evict %llu, tail %llu out of order",
        (unsigned long long)head, (unsigned long long)evict,
        (unsigned long long)tail);
  CHECK(tail - head <= buf->size, "inv 1: tail - head = %llu > size %llu",
        (unsigned long long)(tail - head), (unsigned long long)buf->size);
  CHECK(head % 8 == 0 && evict % 8 == 0 && tail % 8 == 0,
        "inv 1: positions not 8-aligned");

  bool met_cursor = false;
  uint64_t pos = head;
  while (pos < tail) {
    if (pos == evict) met_cursor = true;
    CHECK(pos < evict || met_cursor,
          "inv 1: evict cursor %llu is inside the block at %llu",
          (unsigned long long)evict, (unsigned long long)pos);
    uint64_t phys = pos % buf->size;
    /* Acquire: pairs with the publish release (we may be called by a
    ** thread that did not write the blocks). */
    uint32_t word =
        atomic_load_explicit(&header_at(buf, phys)->word, memory_order_acquire);
    int state = word_state(word);
    uint32_t size_class = word_class(word);
    bool behind = pos < evict;
    CHECK(state >= BF_BLOCK_NOT_READY && state <= BF_BLOCK_EVICTED,
          "block at %llu: bad state %d", (unsigned long long)pos, state);
    CHECK(size_class == PAD_CLASS || size_class < buf->class_count,
          "block at %llu: bad class %u", (unsigned long long)pos, size_class);
    uint64_t bytes = block_bytes(buf, phys, size_class);
    CHECK(phys + bytes <= buf->size,
          "inv 2: block at %llu crosses the physical end",
          (unsigned long long)pos);
    CHECK(pos + bytes <= tail, "inv 2: block at %llu runs past the tail",
          (unsigned long long)pos);
    if (size_class == PAD_CLASS) {
      CHECK(state == (behind ? BF_BLOCK_EVICTED : BF_BLOCK_TOMBSTONE),
            "inv 3: padding at %llu in state %d", (unsigned long long)pos,
            state);
    } else if (behind) {
      CHECK(state == BF_BLOCK_EVICTED || state == BF_BLOCK_READY ||
                state == BF_BLOCK_TOMBSTONE,
            "inv 3: block at %llu behind the cursor in state %d",
            (unsigned long long)pos, state);
    } else {
      CHECK(state != BF_BLOCK_EVICTED && state != BF_BLOCK_BEGIN_TOMBSTONE,
            "inv 3: block at %llu ahead of the cursor in state %d",
            (unsigned long long)pos, state);
    }
    if (size_class != PAD_CLASS) {
      if (state == BF_BLOCK_NOT_READY || state == BF_BLOCK_READY) {
        live_blocks[size_class]++;
        live_bytes += bytes;
      } else if (state == BF_BLOCK_FREELISTED) {
        free_blocks[size_class]++;
        starts[phys / 64] |= (uint8_t)(1u << ((phys / 8) % 8));
      }
    }
    pos += bytes;
  }
  if (pos == evict) met_cursor = true;
  CHECK(pos == tail, "inv 2: blocks end at %llu, tail is %llu",
        (unsigned long long)pos, (unsigned long long)tail);
  CHECK(met_cursor, "inv 1: evict cursor %llu not on a block boundary",
        (unsigned long long)evict);
  CHECK(live_bytes == buf->live_bytes,
        "inv 6: live bytes %llu, counter says %llu",
        (unsigned long long)live_bytes, (unsigned long long)buf->live_bytes);

  for (uint32_t c = 0; c < buf->class_count; c++) {
    CHECK(live_blocks[c] == buf->live_blocks[c],
          "inv 6: class %u has %llu live blocks, counter says %llu", c,
          (unsigned long long)live_blocks[c],
          (unsigned long long)buf->live_blocks[c]);
    uint64_t n = 0;
    uint8_t *prev = NULL;
    for (uint8_t *node = buf->free_first[c]; node;) {
      CHECK(node >= buf->mem + BLOCK_HEADER &&
                node < buf->mem + buf->size,
            "inv 5: free list %u points outside the buffer", c);
      uint64_t phys = phys_of(buf, node);
      CHECK(phys % 8 == 0 && (starts[phys / 64] >> ((phys / 8) % 8)) & 1,
            "inv 5: free list %u holds %llu, not a FREELISTED block", c,
            (unsigned long long)phys);
      CHECK(word_class(atomic_load_explicit(&header_at(buf, phys)->word,
                                            memory_order_relaxed)) == c,
            "inv 5: free list %u holds a block of another class", c);
      CHECK(++n <= free_blocks[c],
            "inv 5: free list %u longer than its FREELISTED blocks", c);
      uint8_t *p, *next;
      link_get(node, &p, &next);
      CHECK(p == prev, "inv 5: free list %u: bad back link at %llu", c,
            (unsigned long long)phys);
      prev = node;
      node = next;
    }
    CHECK(n == free_blocks[c],
          "inv 5: free list %u has %llu blocks, %llu are FREELISTED", c,
          (unsigned long long)n, (unsigned long long)free_blocks[c]);
    CHECK(atomic_load_explicit(&buf->free_count[c], memory_order_relaxed) == n,
          "inv 5: free count %u is wrong", c);
  }

out:
  pthread_mutex_unlock(&buf->lock);
  bf_free(starts);
  return rc;
}

/*
** Visit every READY block from head to tail in buffer order.  Quiescent
** buffer only.  The lock is not held during visit, which may call
** bf_buf_free on the node it is given (the walk has already stepped past
** it), and nothing else on this buffer.
*/
void bf_buf_for_each_ready(struct bf_buf *buf,
                           void (*visit)(void *ctx, uint8_t *node),
                           void *ctx) {
  pthread_mutex_lock(&buf->lock);
  uint64_t pos = atomic_load_explicit(&buf->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&buf->tail, memory_order_relaxed);
  pthread_mutex_unlock(&buf->lock);
  while (pos < tail) {
    uint64_t phys = pos % buf->size;
    struct block_header *h = header_at(buf, phys);
    /* Acquire: pairs with the publish release. */
    uint32_t word = atomic_load_explicit(&h->word, memory_order_acquire);
    pos += block_bytes(buf, phys, word_class(word));
    if (word_state(word) == BF_BLOCK_READY && word_class(word) != PAD_CLASS)
      visit(ctx, (uint8_t *)h + BLOCK_HEADER);
  }
}
