/*
** bf_wset.c: a transaction's private write set.
**
** OWNS: an ordered map key -> the transaction's newest operation on that key
** (BF_WAL_PUT with a value, or BF_WAL_DELETE), the savepoint marks of the
** transaction, and the undo log that lets a savepoint be rolled back.  It
** owns copies of every key and value it holds.  Single-threaded: a
** transaction belongs to one thread at a time, so nothing here is latched.
**
** STRUCTURE
**
** The map is a skip list (branching 1/4, at most WSET_MAX_LEVEL levels), so
** get, put, delete and the start of a range walk cost O(log n) expected, and
** a walk costs O(1) per entry.  Each entry is one allocation, a node:
**
**   OFFSET          SIZE        DESCRIPTION
**   0               8           value: pointer to the value bytes (the inline
**                               area below, or a separate heap block)
**   8               8           undo_seq: sequence number of the node's newest
**                               undo entry, 0 when it has none
**   16              4           key_len
**   20              4           value_len
**   24              4           inline_cap: bytes of the inline value area
**   28              1           op (enum bf_wal_op)
**   29              1           height: levels the node is linked on (1..24)
**   30              1           value_heap: 1 when value is a heap block
**   32              16*height   next[]: on each level, the successor and
**                               the first 8 bytes of its key (key_ahead)
**   32+16*height    key_len     key bytes
**   ...             inline_cap  inline value area (sized by the first value)
**
** A value that does not fit the inline area lives in its own heap block.
** Keys are never moved, so a node's address is stable until the node is
** freed; undo entries point at nodes.
**
** UNDO LOG AND MARKS
**
** While at least one savepoint mark is active, every put or delete that
** changes a key for the first time since the newest mark pushes one undo
** entry (32 bytes):
**
**   FIELD       DESCRIPTION
**   node        the node that was changed (or created)
**   value       heap block holding the node's previous value (owned by the
**               entry; NULL when the previous value was empty)
**   prev_seq    the node's undo_seq before this entry was pushed
**   value_len   length of the previous value
**   op          previous op, or 0 = "the key was absent" (node created)
**
** The entry at index i of the undo array has sequence number base + i.  base
** starts at 1 and grows by the array length each time the log is dropped
** (no mark left), so sequence numbers are never reused except by entries
** pushed after a rollback popped theirs.  The "position" of the log is
** base + undo_len.
**
** Marks are numbered 1, 2, ... (the mark's depth).  They are stored as runs:
** consecutive marks taken at the same log position share one run {pos,
** count}.  A savepoint therefore allocates nothing: it either bumps the top
** run's count or fills a run slot that the last put or delete reserved.
**
** INVARIANTS
**
**  1. Level 0 links every node in strictly ascending key order
**     (bf_key_compare); level i > 0 links exactly the nodes with height > i,
**     in the same order.  head->next[i] is NULL for i >= level.  Each
**     link's ahead equals key_ahead() of its target's key.
**  2. value_heap == (value_len > inline_cap).  A delete has value_len 0.
**  3. count is the number of nodes; bytes is the sum of every allocation
**     the write set holds (requested sizes): struct, head, nodes, heap
**     values, undo array capacity, undo values, run array capacity.
**  4. Undo chains: a node's undo_seq is 0 or < base (no entry) or names the
**     node's newest entry in the array; each entry's prev_seq names the
**     node's next older entry the same way.  Every entry belongs to exactly
**     one chain.  An entry with op 0 is the oldest of its chain (prev 0).
**  5. With no mark (nruns == 0) the undo array is empty.
**  6. Runs have count > 0 and strictly ascending positions, all in
**     [base, base + undo_len]; their counts add up to nmarks.
**  7. Reservation: nruns < run_cap, or the top run's position equals the
**     log position (so bf_wset_savepoint never needs to allocate).
**  8. A node has an undo entry pushed after the newest mark iff its undo_seq
**     >= the top run's position; only then is a further change to it not
**     logged (the older entry already restores its state at that mark).
**
** STATE MACHINE of the undo log
**
**   NO_MARKS -> MARKS          [bf_wset_savepoint]
**   MARKS -> MARKS             [bf_wset_savepoint, bf_wset_put/_delete push
**                               entries, bf_wset_rollback_to pops them,
**                               bf_wset_release of a mark above the first]
**   MARKS -> NO_MARKS          [bf_wset_release(1), bf_wset_clear]: the undo
**                               log is dropped, its values freed
**
** ALLOCATION FAILURE: put and delete allocate everything they may need
** before changing anything, so BF_NOMEM leaves the write set unchanged.
** Rollback never allocates: restoring an entry moves its value block back
** into the node (or copies it into the inline area and frees it).
*/
#include "bf_int.h"

#include <stdio.h>

#define WSET_MAX_LEVEL 24


struct wnode;

/* A forward link, with the first 8 key bytes of its target (see
** key_ahead) so that most comparisons never touch the target node. */
struct wlink {
  struct wnode *node;
  uint64_t ahead;
};

struct wnode {
  uint8_t *value;
  uint64_t undo_seq;
  uint32_t key_len;
  uint32_t value_len;
  uint32_t inline_cap;
  uint8_t op;
  uint8_t height;
  bool value_heap;
  struct wlink next[];
};

struct wundo {
  struct wnode *node;
  uint8_t *value;
  uint64_t prev_seq;
  uint32_t value_len;
  uint8_t op; /* 0 = absent, else enum bf_wal_op */
};

struct wrun {
  uint64_t pos;
  uint32_t count;
};

struct bf_wset {
  struct wnode *head; /* height WSET_MAX_LEVEL, no key */
  uint32_t level;     /* levels in use, 1..WSET_MAX_LEVEL */
  uint64_t count;
  uint64_t bytes;
  uint64_t rng;       /* node heights */
  /* Undo log. */
  struct wundo *undo;
  size_t undo_len, undo_cap;
  uint64_t base;
  /* Marks. */
  struct wrun *runs;
  uint32_t nruns, run_cap;
  uint32_t nmarks;
};

#define WSET_INITIAL_RUNS 4
/* An undo array larger than this is freed when the log is dropped. */
#define WSET_KEEP_UNDO 1024

static size_t node_size(uint32_t height, uint32_t key_len, uint32_t cap) {
  return sizeof(struct wnode) + (size_t)height * sizeof(struct wlink) +
         key_len + cap;
}
static uint8_t *node_key(const struct wnode *n) {
  return (uint8_t *)&n->next[n->height];
}
static uint8_t *node_inline(const struct wnode *n) {
  return node_key(n) + n->key_len;
}
/* The first 8 bytes of a key, big-endian, zero padded.  When the ahead
** values of two keys differ they order the keys as bf_key_compare does (a
** zero-padded shorter key that differs is smaller, or is a prefix, which
** compares smaller too); equal ahead values need the full comparison. */
static uint64_t key_ahead(const uint8_t *key, uint32_t key_len) {
  uint64_t a = 0;
  for (uint32_t i = 0; i < 8; i++) {
    a = (a << 8) | (i < key_len ? key[i] : 0);
  }
  return a;
}

static int node_cmp(const struct wnode *n, const uint8_t *key,
                    uint32_t key_len) {
  return bf_key_compare(node_key(n), n->key_len, key, key_len);
}

static uint32_t random_height(struct bf_wset *w) {
  /* xorshift64* */
  uint64_t x = w->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  w->rng = x;
  x *= 0x2545F4914F6CDD1Dull;
  uint32_t h = 1;
  while (h < WSET_MAX_LEVEL && (x & 3) == 0) {
    h++;
    x >>= 2;
  }
  return h;
}

/*
** Find the first node with key >= key (> key when strict).  When update is
** not NULL, update[i] is set, for every level i, to the last node before
** that position on level i (the head when none).  Returns NULL at the end.
*/
static struct wnode *wset_seek(const struct bf_wset *w, const uint8_t *key,
                               uint32_t key_len, bool strict,
                               struct wnode **update) {
  struct wnode *x = w->head;
  uint64_t ka = key_ahead(key, key_len);
  for (int i = (int)w->level - 1; i >= 0; i--) {
    for (;;) {
      const struct wlink *l = &x->next[i];
      struct wnode *nx = l->node;
      if (!nx) break;
      int c = l->ahead != ka ? (l->ahead < ka ? -1 : 1)
                             : node_cmp(nx, key, key_len);
      if (c < 0 || (strict && c == 0)) {
        x = nx;
      } else {
        break;
      }
    }
    if (update) update[i] = x;
  }
  if (update) {
    for (uint32_t i = w->level; i < WSET_MAX_LEVEL; i++) update[i] = w->head;
  }
  return x->next[0].node;
}

/* Unlink node n (which is in the list) and free it.  Allocation-free. */
static void wset_unlink_free(struct bf_wset *w, struct wnode *n) {
  struct wnode *update[WSET_MAX_LEVEL];
  struct wnode *found = wset_seek(w, node_key(n), n->key_len, false, update);
  assert(found == n);
  BF_UNUSED(found);
  for (uint32_t i = 0; i < n->height; i++) {
    assert(update[i]->next[i].node == n);
    update[i]->next[i] = n->next[i];
  }
  while (w->level > 1 && w->head->next[w->level - 1].node == NULL) w->level--;
  if (n->value_heap) {
    w->bytes -= n->value_len;
    bf_free(n->value);
  }
  w->bytes -= node_size(n->height, n->key_len, n->inline_cap);
  w->count--;
  bf_free(n);
}

/* Make room for one more undo entry.  BF_OK or BF_NOMEM (nothing changed). */
static int wset_reserve_undo(struct bf_wset *w) {
  if (w->undo_len < w->undo_cap) return BF_OK;
  size_t cap = w->undo_cap ? w->undo_cap * 2 : 16;
  struct wundo *a = bf_malloc(cap * sizeof *a);
  if (!a) return BF_NOMEM;
  if (w->undo_len) memcpy(a, w->undo, w->undo_len * sizeof *a);
  bf_free(w->undo);
  w->bytes += (cap - w->undo_cap) * sizeof *a;
  w->undo = a;
  w->undo_cap = cap;
  return BF_OK;
}

/* Make room for one more run (invariant 7).  BF_OK or BF_NOMEM. */
static int wset_reserve_run(struct bf_wset *w) {
  if (w->nruns < w->run_cap) return BF_OK;
  uint32_t cap = w->run_cap * 2;
  struct wrun *a = bf_malloc((size_t)cap * sizeof *a);
  if (!a) return BF_NOMEM;
  memcpy(a, w->runs, (size_t)w->nruns * sizeof *a);
  bf_free(w->runs);
  w->bytes += (uint64_t)(cap - w->run_cap) * sizeof *a;
  w->runs = a;
  w->run_cap = cap;
  return BF_OK;
}

static uint64_t wset_pos(const struct bf_wset *w) {
  return w->base + w->undo_len;
}

/* Push an undo entry for node n (room reserved). */
static void wset_push(struct bf_wset *w, struct wnode *n, uint8_t op,
                      uint8_t *value, uint32_t value_len) {
  assert(w->undo_len < w->undo_cap);
  struct wundo *e = &w->undo[w->undo_len];
  e->node = n;
  e->value = value;
  e->value_len = value_len;
  e->op = op;
  e->prev_seq = n->undo_seq;
  n->undo_seq = wset_pos(w);
  w->undo_len++;
}

/* Undo the newest entry of the log.  Allocation-free. */
static void wset_pop(struct bf_wset *w) {
  assert(w->undo_len > 0);
  struct wundo *e = &w->undo[w->undo_len - 1];
  struct wnode *n = e->node;
  assert(n->undo_seq == wset_pos(w) - 1);
  w->undo_len--;
  if (e->op == 0) {
    assert(e->prev_seq == 0 && e->value == NULL);
    wset_unlink_free(w, n);
    return;
  }
  if (n->value_heap) {
    w->bytes -= n->value_len;
    bf_free(n->value);
  }
  if (e->value_len <= n->inline_cap) {
    uint8_t *dst = node_inline(n);
    if (e->value_len) memcpy(dst, e->value, e->value_len);
    if (e->value) {
      w->bytes -= e->value_len;
      bf_free(e->value);
    }
    n->value = dst;
    n->value_heap = false;
  } else {
    n->value = e->value; /* ownership moves back to the node */
    n->value_heap = true;
  }
  n->value_len = e->value_len;
  n->op = e->op;
  n->undo_seq = e->prev_seq;
}

/* Drop the whole undo log (no mark left): free its values, retire its
** sequence numbers. */
static void wset_drop_undo(struct bf_wset *w) {
  for (size_t i = 0; i < w->undo_len; i++) {
    struct wundo *e = &w->undo[i];
    if (e->value) {
      w->bytes -= e->value_len;
      bf_free(e->value);
    }
  }
  w->base += w->undo_len;
  w->undo_len = 0;
  if (w->undo_cap > WSET_KEEP_UNDO) {
    w->bytes -= w->undo_cap * sizeof(struct wundo);
    bf_free(w->undo);
    w->undo = NULL;
    w->undo_cap = 0;
  }
}

int bf_wset_create(struct bf_wset **out) {
  *out = NULL;
  struct bf_wset *w = bf_calloc(1, sizeof *w);
  if (!w) return BF_NOMEM;
  size_t hsize = node_size(WSET_MAX_LEVEL, 0, 0);
  w->head = bf_calloc(1, hsize);
  w->runs = bf_malloc(WSET_INITIAL_RUNS * sizeof(struct wrun));
  if (!w->head || !w->runs) {
    bf_free(w->head);
    bf_free(w->runs);
    bf_free(w);
    return BF_NOMEM;
  }
  w->head->height = WSET_MAX_LEVEL;
  w->head->value = node_inline(w->head);
  w->level = 1;
  w->rng = 0x853C49E6748FEA9Bull;
  w->base = 1;
  w->run_cap = WSET_INITIAL_RUNS;
  w->bytes = sizeof *w + hsize + WSET_INITIAL_RUNS * sizeof(struct wrun);
  *out = w;
  return BF_OK;
}

/* Free every node (the list is then empty). */
static void wset_free_nodes(struct bf_wset *w) {
  struct wnode *n = w->head->next[0].node;
  while (n) {
    struct wnode *nx = n->next[0].node;
    if (n->value_heap) {
      w->bytes -= n->value_len;
      bf_free(n->value);
    }
    w->bytes -= node_size(n->height, n->key_len, n->inline_cap);
    bf_free(n);
    n = nx;
  }
  memset(w->head->next, 0, WSET_MAX_LEVEL * sizeof(struct wlink));
  w->level = 1;
  w->count = 0;
}

void bf_wset_destroy(struct bf_wset *w) {
  if (!w) return;
  wset_drop_undo(w);
  wset_free_nodes(w);
  bf_free(w->undo);
  bf_free(w->runs);
  bf_free(w->head);
  bf_free(w);
}

void bf_wset_clear(struct bf_wset *w) {
  wset_drop_undo(w);
  wset_free_nodes(w);
  w->nruns = 0;
  w->nmarks = 0;
}

/*
** Record op (BF_WAL_PUT with value, or BF_WAL_DELETE with no value) for key.
** Returns BF_OK, or BF_NOMEM with the write set unchanged.  key and value
** may point into the write set (e.g. a value returned by bf_wset_get).
*/
static int wset_write(struct bf_wset *w, const uint8_t *key, uint32_t key_len,
                      uint8_t op, const uint8_t *value, uint32_t value_len) {
  struct wnode *update[WSET_MAX_LEVEL];
  struct wnode *n = wset_seek(w, key, key_len, false, update);
  bool exists = n && node_cmp(n, key, key_len) == 0;
  bool marks = w->nruns > 0;
  bool need_undo =
      marks && (!exists || n->undo_seq < w->runs[w->nruns - 1].pos);
  int rc = BF_OK;

  /* Reserve everything first: nothing below may fail. */
  if (marks) rc = wset_reserve_run(w);
  if (rc == BF_OK && need_undo) rc = wset_reserve_undo(w);
  if (rc != BF_OK) return rc;

  if (!exists) {
    uint32_t h = random_height(w);
    size_t size = node_size(h, key_len, value_len);
    struct wnode *nn = bf_malloc(size);
    if (!nn) return BF_NOMEM;
    nn->undo_seq = 0;
    nn->key_len = key_len;
    nn->value_len = value_len;
    nn->inline_cap = value_len;
    nn->op = op;
    nn->height = (uint8_t)h;
    nn->value_heap = false;
    nn->value = node_inline(nn);
    if (key_len) memcpy(node_key(nn), key, key_len);
    if (value_len) memcpy(nn->value, value, value_len);
    uint64_t ka = key_ahead(key, key_len);
    for (uint32_t i = 0; i < h; i++) {
      nn->next[i] = update[i]->next[i];
      update[i]->next[i].node = nn;
      update[i]->next[i].ahead = ka;
    }
    if (h > w->level) w->level = h;
    w->count++;
    w->bytes += size;
    if (need_undo) wset_push(w, nn, 0, NULL, 0);
    return BF_OK;
  }

  /* An existing entry: allocate the undo copy and the new value block. */
  uint8_t *saved = NULL;
  uint8_t *heap = NULL;
  if (need_undo && !n->value_heap && n->value_len > 0) {
    saved = bf_malloc(n->value_len);
    if (!saved) return BF_NOMEM;
  }
  if (value_len > n->inline_cap) {
    heap = bf_malloc(value_len);
    if (!heap) {
      bf_free(saved);
      return BF_NOMEM;
    }
  }

  uint8_t *old_heap = n->value_heap ? n->value : NULL;
  uint32_t old_len = n->value_len;
  if (need_undo) {
    if (saved) {
      memcpy(saved, n->value, old_len);
      w->bytes += old_len;
    }
    wset_push(w, n, n->op, old_heap ? old_heap : saved, old_len);
    old_heap = NULL; /* now owned by the undo entry */
  }
  if (heap) {
    memcpy(heap, value, value_len);
    w->bytes += value_len;
    n->value = heap;
    n->value_heap = true;
  } else {
    uint8_t *dst = node_inline(n);
    if (value_len) memmove(dst, value, value_len);
    n->value = dst;
    n->value_heap = false;
  }
  n->value_len = value_len;
  n->op = op;
  if (old_heap) { /* freed only after the new value was copied */
    w->bytes -= old_len;
    bf_free(old_heap);
  }
  return BF_OK;
}

int bf_wset_put(struct bf_wset *w, const uint8_t *key, uint32_t key_len,
                const uint8_t *value, uint32_t value_len) {
  return wset_write(w, key, key_len, BF_WAL_PUT, value, value_len);
}

int bf_wset_delete(struct bf_wset *w, const uint8_t *key, uint32_t key_len) {
  return wset_write(w, key, key_len, BF_WAL_DELETE, NULL, 0);
}

int bf_wset_get(struct bf_wset *w, const uint8_t *key, uint32_t key_len,
                int *op, const uint8_t **value, uint32_t *value_len) {
  struct wnode *n = wset_seek(w, key, key_len, false, NULL);
  if (!n || node_cmp(n, key, key_len) != 0) return BF_NOTFOUND;
  *op = n->op;
  *value = n->op == BF_WAL_DELETE ? NULL : n->value;
  *value_len = n->value_len;
  return BF_OK;
}

/*
** Take a mark: returns its number (the new depth, >= 1).  Never allocates
** (invariant 7); returns 0 only if that invariant were broken and the
** emergency allocation failed, or after 2^32-1 marks.
*/
uint32_t bf_wset_savepoint(struct bf_wset *w) {
  uint64_t pos = wset_pos(w);
  if (NEVER(w->nmarks == UINT32_MAX)) return 0;
  if (w->nruns > 0 && w->runs[w->nruns - 1].pos == pos) {
    w->runs[w->nruns - 1].count++;
  } else {
    if (NEVER(w->nruns == w->run_cap) && wset_reserve_run(w) != BF_OK) {
      return 0;
    }
    w->runs[w->nruns].pos = pos;
    w->runs[w->nruns].count = 1;
    w->nruns++;
  }
  return ++w->nmarks;
}

/* Index of the run that holds mark (1..nmarks); *first gets the number of
** the run's first mark. */
static uint32_t wset_find_run(const struct bf_wset *w, uint32_t mark,
                              uint32_t *first) {
  uint32_t idx = w->nruns - 1;
  uint32_t f = w->nmarks - w->runs[idx].count + 1;
  while (mark < f) {
    idx--;
    f -= w->runs[idx].count;
  }
  *first = f;
  return idx;
}

/*
** Undo every change made after mark was taken; the mark and older ones stay,
** newer ones are forgotten.  BF_OK, or BF_INVALID when mark is not an active
** mark.  Never allocates, never fails halfway.
*/
int bf_wset_rollback_to(struct bf_wset *w, uint32_t mark) {
  if (mark == 0 || mark > w->nmarks) return BF_INVALID;
  uint32_t first;
  uint32_t idx = wset_find_run(w, mark, &first);
  uint64_t pos = w->runs[idx].pos;
  while (wset_pos(w) > pos) wset_pop(w);
  w->runs[idx].count = mark - first + 1;
  w->nruns = idx + 1;
  w->nmarks = mark;
  return BF_OK;
}

/* Forget mark and every newer one, keeping the changes.  An inactive mark
** is ignored.  With no mark left, the undo log is dropped. */
void bf_wset_release(struct bf_wset *w, uint32_t mark) {
  if (mark == 0 || mark > w->nmarks) return;
  uint32_t first;
  uint32_t idx = wset_find_run(w, mark, &first);
  w->runs[idx].count = mark - first;
  w->nruns = w->runs[idx].count ? idx + 1 : idx;
  w->nmarks = mark - 1;
  if (w->nmarks == 0) wset_drop_undo(w);
}

uint64_t bf_wset_count(const struct bf_wset *w) { return w->count; }

uint64_t bf_wset_bytes(const struct bf_wset *w) { return w->bytes; }

int bf_wset_range(struct bf_wset *w, const uint8_t *lower, uint32_t lower_len,
                  bool lower_inclusive, const uint8_t *upper,
                  uint32_t upper_len, bool upper_inclusive,
                  int (*visit)(void *ctx, int op, const uint8_t *key,
                               uint32_t key_len, const uint8_t *value,
                               uint32_t value_len),
                  void *ctx) {
  struct wnode *n = lower
                        ? wset_seek(w, lower, lower_len, !lower_inclusive, NULL)
                        : w->head->next[0].node;
  for (; n; n = n->next[0].node) {
    if (upper) {
      int c = node_cmp(n, upper, upper_len);
      if (c > 0 || (c == 0 && !upper_inclusive)) break;
    }
    bool del = n->op == BF_WAL_DELETE;
    int rc = visit(ctx, n->op, node_key(n), n->key_len, del ? NULL : n->value,
                   n->value_len);
    if (rc != BF_OK) return rc;
  }
  return BF_OK;
}

static int check_fail(const char *what) {
  fprintf(stderr, "bf_wset_check: %s\n", what);
  return 0;
}

/*
** Verify invariants 1-8 (O(n + undo entries)).  Returns 1 when they hold,
** otherwise 0 after printing the first violation to stderr.
*/
int bf_wset_check(const struct bf_wset *w) {
  struct wnode *cur[WSET_MAX_LEVEL];
  uint64_t bytes = sizeof *w + node_size(WSET_MAX_LEVEL, 0, 0) +
                   (uint64_t)w->run_cap * sizeof(struct wrun) +
                   w->undo_cap * sizeof(struct wundo);
  uint64_t count = 0, chained = 0;
  uint64_t pos = wset_pos(w);
  if (w->level < 1 || w->level > WSET_MAX_LEVEL) return check_fail("level");
  for (uint32_t i = 0; i < WSET_MAX_LEVEL; i++) {
    cur[i] = w->head->next[i].node;
    if (i >= w->level && cur[i]) return check_fail("link above level");
  }
  if (w->level > 1 && !cur[w->level - 1]) return check_fail("empty top level");
  const struct wnode *prev = NULL;
  for (const struct wnode *n = w->head->next[0].node; n;
       n = n->next[0].node) {
    count++;
    if (n->height < 1 || n->height > WSET_MAX_LEVEL) return check_fail("height");
    if (prev && bf_key_compare(node_key(prev), prev->key_len, node_key(n),
                               n->key_len) >= 0) {
      return check_fail("order");
    }
    for (uint32_t i = 1; i < n->height; i++) {
      if (cur[i] != n) return check_fail("upper level link");
      cur[i] = n->next[i].node;
    }
    if (n->op != BF_WAL_PUT && n->op != BF_WAL_DELETE) return check_fail("op");
    if (n->op == BF_WAL_DELETE && n->value_len) return check_fail("delete value");
    if (n->value_heap != (n->value_len > n->inline_cap)) {
      return check_fail("value placement");
    }
    if (!n->value_heap && n->value != node_inline(n)) {
      return check_fail("inline pointer");
    }
    bytes += node_size(n->height, n->key_len, n->inline_cap);
    if (n->value_heap) bytes += n->value_len;
    /* Invariant 4: walk the node's undo chain. */
    uint64_t seq = n->undo_seq;
    while (seq >= w->base && seq != 0) {
      if (seq >= pos) return check_fail("undo seq beyond log");
      const struct wundo *e = &w->undo[seq - w->base];
      if (e->node != n) return check_fail("undo entry of another node");
      if (e->op == 0 && e->prev_seq != 0) return check_fail("absent not oldest");
      if (e->prev_seq >= seq && e->prev_seq != 0) return check_fail("chain order");
      chained++;
      seq = e->prev_seq;
    }
    prev = n;
  }
  for (const struct wnode *x = w->head; x; x = x->next[0].node) {
    for (uint32_t i = 0; i < x->height; i++) {
      const struct wlink *l = &x->next[i];
      if (l->node && l->ahead != key_ahead(node_key(l->node), l->node->key_len)) {
        return check_fail("link ahead");
      }
    }
  }
  for (uint32_t i = 1; i < WSET_MAX_LEVEL; i++) {
    if (cur[i]) return check_fail("upper level tail");
  }
  if (count != w->count) return check_fail("count");
  if (chained != w->undo_len) return check_fail("orphan undo entries");
  for (size_t i = 0; i < w->undo_len; i++) {
    const struct wundo *e = &w->undo[i];
    if (e->op > BF_WAL_DELETE) return check_fail("undo op");
    if ((e->value != NULL) != (e->value_len > 0)) return check_fail("undo value");
    bytes += e->value_len;
  }
  if (bytes != w->bytes) return check_fail("bytes");
  /* Invariants 5-7. */
  if (w->nruns == 0 && (w->undo_len || w->nmarks)) return check_fail("no marks");
  if (w->nruns > w->run_cap || w->run_cap == 0) return check_fail("run cap");
  uint64_t marks = 0;
  for (uint32_t i = 0; i < w->nruns; i++) {
    if (w->runs[i].count == 0) return check_fail("empty run");
    if (w->runs[i].pos < w->base || w->runs[i].pos > pos) {
      return check_fail("run position");
    }
    if (i && w->runs[i].pos <= w->runs[i - 1].pos) return check_fail("run order");
    marks += w->runs[i].count;
  }
  if (marks != w->nmarks) return check_fail("mark count");
  if (w->nruns == w->run_cap && w->runs[w->nruns - 1].pos != pos) {
    return check_fail("run reservation");
  }
  return 1;
}
