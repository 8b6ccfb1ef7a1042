/*
** bf_tree.c: the Bf-Tree itself: open and close, point operations, the
** mini-page lifecycle, merging mini-pages into leaf pages, leaf splits,
** eviction, checkpoints and the whole-tree check.
**
** A leaf is a mapping-table entry {latch, mini, disk_page}.  Its records are
** the leaf page on disk overlaid by its mini-page (if any):
**
**   mini-page record   meaning
**   INSERT             the key's value (newer than the page)
**   TOMBSTONE          the key is deleted (the page may still hold it)
**   CACHE              a copy of the page's record
**   PHANTOM            the page does not hold the key
**   (absent)           ask the page; in a FULL-PAGE mini-page, which holds
**                      every record of the leaf, absent means absent
**
** Mini-page lifecycle (all under the leaf's exclusive latch):
**   none -> partial (smallest class that fits)        [mini_write]
**   partial -> larger class                            [mini_grow]
**   partial at max_mini_class, full -> merge to disk   [leaf_merge]
**   none | partial -> full-page (scan promotion, or a lookup's warm fill
**                     before the buffer first fills)   [bf_tree_promote_page]
**   full-page, full -> merge to disk (+split)          [leaf_merge]
**   any -> relocated to the tail (copy-on-access)      [mini_relocate]
**   full-page -> partial of its dirty and referenced records, on
**                copy-on-access                        [full_page_shrink]
**   any -> evicted (dirty records merged first)        [bf_tree_evict]
**
** Latching protocol (see bf_int.h for each piece):
**   1. Inner nodes are read optimistically; a lookup latches the leaf, then
**      validates the bottom inner node's version (bf_tree_latch_leaf).
**   2. A thread holds at most one leaf latch while it may block, except a
**      split, which also latches the new leaves it creates (unreachable
**      through the tree until published; a flush_all walking the mapping
**      table may hold one for a moment, finding nothing to merge), and a
**      checkpoint's flush_all, which latches up to FLUSH_BATCH leaves in
**      increasing id order (their page writes go out as one batch), with
**      or without the gate, and evict_batch, which does the same with up
**      to EVICT_BATCH leaves.  That is deadlock-free only because both keep
**      that order and nobody else waits for a leaf latch while holding
**      one: keep it so.
**   3. Lock order: checkpoint mutex -> checkpoint gate -> leaf latch ->
**      {structure mutex of bf_inner, mapping-table mutex, space mutex,
**      buffer mutex}.  The last four are leaves of the order: nothing is
**      acquired while holding them.  The log's mutex (bf_wal.c) is taken
**      under the gate, never the other way round.
**      evict_batch_lock comes before the leaf latches, and is only ever
**      try-locked (by an evictor holding no latch).
**   4. Nobody waits for buffer space while holding a leaf latch: allocation
**      returns BF_RETRY, the operation unlatches, evicts, and restarts.
**   5. Writers (put, delete) hold the checkpoint gate shared; a checkpoint
**      holds it exclusive, so no record turns dirty while it flushes (the
**      classic form) or writes its image (the fuzzy form, which also stops
**      evictions, the readers' merges: no_merge, evictors).
**
** Invariants:
**   1. Every leaf has a disk page (an empty tree has one empty leaf page).
**   2. A partial mini-page holds full keys; a full-page mini-page is a leaf
**      page image with the leaf's fences, keys stored without the prefix.
**   3. A leaf's disk page flagged BF_ENTRY_IN_CHECKPOINT is never
**      overwritten: a merge writes elsewhere and frees it as pending.
**   4. Dirty records exist only in mini-pages; a merge writes them all.
**   5. After an I/O error that may have left pages and memory disagreeing,
**      tree->error is set and every later write is refused.
*/
#include "bf_int.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Admission sketch sizing: the footprint of a record in the buffer is its
** node space plus SKETCH_OVERHEAD, its share of the block and node headers
** and of the size class's slack (a typical mini-page holds a few records);
** the sketch starts sized for SKETCH_FOOTPRINT-byte records (8-byte keys,
** 100-byte values) and adapts its window to the footprints it sees. */
#define SKETCH_OVERHEAD 16
#define SKETCH_FOOTPRINT 128

/* Internal status: the leaf split; restart the operation from the root. */
#define BF_RESTART (BF_STATUS_COUNT + 1)

static size_t round8(size_t n) { return (n + 7) & ~(size_t)7; }

void bf_options_init(bf_options *o) {
  memset(o, 0, sizeof *o);
  o->buffer_size = 32u << 20;
  o->page_size = 4096;
  o->io_mode = BF_IO_AUTO;
  o->direct_io = BF_DIRECT_AUTO;
  o->read_promote_percent = 10;
  o->read_admission = true;
  o->scan_promote_percent = 50;
  o->warm_fill = true;
  o->max_mini_divisor = 2;
  o->create = true;
  o->seed = 0;
  o->synchronous = BF_SYNC_FULL;
  o->wal = true;
  o->wal_size_limit = 64u << 20;
  o->auto_checkpoint = true;
  o->replay_limit = UINT64_MAX;
}

size_t bf_max_key_size(const bf_tree *t) { return t->max_key; }
size_t bf_max_record_size(const bf_tree *t) { return t->max_record; }
uint32_t bf_page_size(const bf_tree *t) { return t->page_size; }

static int set_error(bf_tree *t, int rc) {
  int expect = BF_OK;
  if (rc != BF_OK && rc != BF_NOTFOUND && rc != BF_DONE)
    atomic_compare_exchange_strong(&t->error, &expect, rc);
  return rc;
}

/* ------------------------------------------------------------------------
** The write gate.
*/
void bf_gate_init(struct bf_gate *g) {
  pthread_mutex_init(&g->mutex, NULL);
  pthread_cond_init(&g->cond, NULL);
  g->shared = g->writers_waiting = 0;
  g->exclusive = false;
}

void bf_gate_destroy(struct bf_gate *g) {
  pthread_mutex_destroy(&g->mutex);
  pthread_cond_destroy(&g->cond);
}

void bf_gate_shared(struct bf_gate *g) {
  pthread_mutex_lock(&g->mutex);
  while (g->exclusive || g->writers_waiting)
    pthread_cond_wait(&g->cond, &g->mutex);
  g->shared++;
  pthread_mutex_unlock(&g->mutex);
}

void bf_gate_exclusive(struct bf_gate *g) {
  pthread_mutex_lock(&g->mutex);
  g->writers_waiting++;
  while (g->exclusive || g->shared) pthread_cond_wait(&g->cond, &g->mutex);
  g->writers_waiting--;
  g->exclusive = true;
  pthread_mutex_unlock(&g->mutex);
}

/* Take the gate exclusive unless it is held exclusive: now, or by another
** thread that gets it first while this one waits for the shared holders to
** leave.  Exclusive holders other than checkpoints are prepared
** transactions, which may hold it for long (the SQLite module's hold it
** while their database commits, which may wait for this very thread's
** connection).  Returns true when the gate is now held exclusive. */
bool bf_gate_try_exclusive(struct bf_gate *g) {
  pthread_mutex_lock(&g->mutex);
  if (g->exclusive) {
    pthread_mutex_unlock(&g->mutex);
    return false;
  }
  g->writers_waiting++;
  /* exclusive turns true only once shared is 0 (bf_gate_exclusive). */
  while (g->shared && !g->exclusive) pthread_cond_wait(&g->cond, &g->mutex);
  bool got = !g->exclusive;
  g->writers_waiting--;
  if (got) g->exclusive = true;
  pthread_mutex_unlock(&g->mutex);
  return got;
}

/* Release whichever mode the gate is held in (exclusive, or one shared
** holder). */
void bf_gate_release(struct bf_gate *g) {
  pthread_mutex_lock(&g->mutex);
  if (g->exclusive)
    g->exclusive = false;
  else if (ALWAYS(g->shared > 0))
    g->shared--;
  pthread_cond_broadcast(&g->cond);
  pthread_mutex_unlock(&g->mutex);
}

/* ------------------------------------------------------------------------
** Leaf access.
*/
int bf_tree_latch_leaf(bf_tree *t, const uint8_t *key, uint32_t key_len,
                       int mode, bool exclusive, uint32_t *leaf_id,
                       struct bf_leaf_entry **entry) {
  struct bf_inner_path path;
  memset(&path, 0, sizeof path);
  for (;;) {
    int rc = bf_inner_find(t->inner, key, key_len, mode, &path);
    if (rc != BF_OK) return rc;
    struct bf_leaf_entry *e = bf_map_get(t->map, path.leaf_id);
    if (exclusive)
      bf_latch_exclusive(&e->latch);
    else
      bf_latch_shared(&e->latch);
    if (bf_inner_validate(&path)) {
      *leaf_id = path.leaf_id;
      *entry = e;
      return BF_OK;
    }
    if (exclusive)
      bf_unlatch_exclusive(&e->latch);
    else
      bf_unlatch_shared(&e->latch);
  }
}

int bf_tree_read_leaf(bf_tree *t, const struct bf_leaf_entry *e, uint8_t *page,
                      struct bf_leaf *leaf) {
  int rc = bf_io_read(t->io, page, t->page_size, e->disk_page * t->page_size);
  if (rc != BF_OK) return rc;
  BF_COUNT(t, leaf_reads, 1);
  BF_COUNT(t, bytes_read, t->page_size);
  return bf_tree_verify_leaf(t, e, page, leaf);
}

int bf_tree_verify_leaf(bf_tree *t, const struct bf_leaf_entry *e,
                        uint8_t *page, struct bf_leaf *leaf) {
  char err[128];
  int rc = bf_leaf_verify(page, t->page_size, e->disk_page, leaf, err, sizeof err);
  if (rc != BF_OK) {
    bf_error_bkpt(rc, __FILE__, __LINE__);
    if (getenv("BF_DEBUG_ERRORS"))
      fprintf(stderr, "bftree: leaf page %llu: %s\n",
              (unsigned long long)e->disk_page, err);
  }
  return rc;
}

static uint8_t *page_alloc(bf_tree *t) {
  return bf_malloc_aligned(4096, t->page_size);
}

static bool is_full_page(bf_tree *t, const uint8_t *mini) {
  return bf_buf_node_class(mini) == t->full_class;
}

/* Search a mini-page (either kind) for a full key. */
static bool mini_search(bf_tree *t, uint8_t *mini, const uint8_t *key,
                        uint32_t key_len, uint8_t **node, uint32_t *index) {
  if (is_full_page(t, mini)) {
    struct bf_leaf leaf;
    bf_leaf_view(mini, t->page_size, &leaf);
    *node = leaf.node;
    return bf_leaf_search(&leaf, key, key_len, index);
  }
  *node = mini;
  return bf_node_search(mini, key, key_len, index);
}

static bool node_has_dirty(const uint8_t *node) {
  uint32_t n = bf_node_count(node);
  for (uint32_t i = 0; i < n; i++) {
    struct bf_record r;
    bf_node_record(node, i, &r);
    if (bf_rec_is_dirty(r.type)) return true;
  }
  return false;
}

static uint8_t *mini_node(bf_tree *t, uint8_t *mini) {
  if (is_full_page(t, mini)) {
    struct bf_leaf leaf;
    bf_leaf_view(mini, t->page_size, &leaf);
    return leaf.node;
  }
  return mini;
}

/* The size class of the last allocation that failed for want of space in
** this thread: what the eviction that follows must make room for. */
static _Thread_local uint32_t retry_class;

static int buf_alloc(bf_tree *t, uint32_t size_class, uint32_t leaf_id,
                     uint8_t **node) {
  int rc = bf_buf_alloc(t->buf, size_class, leaf_id, node);
  if (rc == BF_RETRY) retry_class = size_class;
  return rc;
}

/* ------------------------------------------------------------------------
** Merging a mini-page into its leaf page, with splits.
*/
struct out_rec {
  const uint8_t *key;
  const uint8_t *value;
  uint32_t key_len, value_len;
};

struct merge_state {
  struct out_rec *recs;
  size_t count, capacity;
  uint8_t *arena;          /* full keys of prefix-compressed records */
  size_t arena_len, arena_cap;
  uint8_t *low, *high;     /* copies of the leaf's fences */
  uint32_t low_len, high_len;
  bool low_inf, high_inf;
  bool append_only;        /* new keys all after the page's keys */
};

static int merge_push(struct merge_state *m, const uint8_t *key, uint32_t klen,
                      const uint8_t *value, uint32_t vlen) {
  if (m->count == m->capacity) {
    size_t cap = m->capacity ? m->capacity * 2 : 256;
    struct out_rec *p = realloc(m->recs, cap * sizeof *p);
    if (!p) return BF_NOMEM;
    m->recs = p;
    m->capacity = cap;
  }
  m->recs[m->count++] = (struct out_rec){key, value, klen, vlen};
  return BF_OK;
}

/* The full key of record i of a prefix-compressed leaf, kept in the arena
** (sized by the caller so it never moves). */
static const uint8_t *arena_key(struct merge_state *m, const struct bf_leaf *leaf,
                                const struct bf_record *r) {
  uint8_t *k = m->arena + m->arena_len;
  /* prefix_len is 0 when a fence is infinite (both may be NULL). */
  if (leaf->prefix_len)
    memcpy(k, leaf->low ? leaf->low : leaf->high, leaf->prefix_len);
  if (r->key_len) memcpy(k + leaf->prefix_len, r->key, r->key_len);
  m->arena_len += leaf->prefix_len + r->key_len;
  return k;
}

static void merge_free(struct merge_state *m) {
  free(m->recs);
  free(m->arena);
  free(m->low);
  free(m->high);
}

static int copy_fences(struct merge_state *m, const struct bf_leaf *leaf) {
  m->low_inf = leaf->low == NULL;
  m->high_inf = leaf->high == NULL;
  m->low_len = leaf->low_len;
  m->high_len = leaf->high_len;
  m->low = malloc(leaf->low_len + 1);
  m->high = malloc(leaf->high_len + 1);
  if (!m->low || !m->high) return BF_NOMEM;
  if (leaf->low) memcpy(m->low, leaf->low, leaf->low_len);
  if (leaf->high) memcpy(m->high, leaf->high, leaf->high_len);
  return BF_OK;
}

/* Collect the merged records of a leaf: page (may be NULL for a full-page
** mini) overlaid by mini.  Live records only, ascending. */
static int merge_collect(bf_tree *t, struct merge_state *m, uint8_t *mini,
                         uint8_t *page) {
  struct bf_leaf pleaf, fleaf;
  int rc;
  if (is_full_page(t, mini)) {
    bf_leaf_view(mini, t->page_size, &fleaf);
    uint32_t n = bf_node_count(fleaf.node);
    m->arena_cap = (size_t)n * fleaf.prefix_len + t->page_size;
    m->arena = malloc(m->arena_cap);
    if (!m->arena) return BF_NOMEM;
    rc = copy_fences(m, &fleaf);
    for (uint32_t i = 0; rc == BF_OK && i < n; i++) {
      struct bf_record r;
      bf_node_record(fleaf.node, i, &r);
      if (r.type == BF_REC_TOMBSTONE || r.type == BF_REC_PHANTOM) continue;
      rc = merge_push(m, arena_key(m, &fleaf, &r), r.key_len + fleaf.prefix_len,
                      r.value, r.value_len);
    }
    return rc;
  }

  bf_leaf_view(page, t->page_size, &pleaf);
  uint32_t np = bf_node_count(pleaf.node), nm = bf_node_count(mini);
  m->arena_cap = (size_t)np * pleaf.prefix_len + t->page_size;
  m->arena = malloc(m->arena_cap);
  if (!m->arena) return BF_NOMEM;
  rc = copy_fences(m, &pleaf);
  m->append_only = true;
  uint32_t i = 0, j = 0;
  struct bf_record pr, mr;
  const uint8_t *pkey = NULL;
  bool have_p = false;
  while (rc == BF_OK && (i < np || j < nm)) {
    if (i < np && !have_p) {
      bf_node_record(pleaf.node, i, &pr);
      pkey = arena_key(m, &pleaf, &pr);
      have_p = true;
    }
    if (j < nm) bf_node_record(mini, j, &mr);
    int c;
    if (i >= np)
      c = 1;
    else if (j >= nm)
      c = -1;
    else
      c = bf_key_compare(pkey, pr.key_len + pleaf.prefix_len, mr.key,
                         mr.key_len);
    if (c < 0) { /* page only */
      rc = merge_push(m, pkey, pr.key_len + pleaf.prefix_len, pr.value,
                      pr.value_len);
      i++;
      have_p = false;
      continue;
    }
    /* mini record (c > 0: mini only; c == 0: mini overrides page) */
    if (c > 0 && i < np && bf_rec_is_dirty(mr.type)) m->append_only = false;
    if (c == 0 && mr.type == BF_REC_INSERT) m->append_only = false;
    if (mr.type == BF_REC_INSERT) {
      rc = merge_push(m, mr.key, mr.key_len, mr.value, mr.value_len);
    } else if (mr.type == BF_REC_CACHE && c == 0) {
      rc = merge_push(m, pkey, pr.key_len + pleaf.prefix_len, pr.value,
                      pr.value_len);
    } /* TOMBSTONE, PHANTOM: drop; a CACHE with no page record is stale */
    j++;
    if (c == 0) {
      i++;
      have_p = false;
    }
  }
  return rc;
}

/* Does a page with these fence lengths hold `bytes` of records? */
static bool page_fits(bf_tree *t, uint32_t low_len, uint32_t high_len,
                      size_t bytes) {
  return round8(BF_LEAF_HEADER + low_len + high_len) + BF_NODE_HEADER + bytes <=
         t->page_size;
}

/* Length of the shortest separator s with a < s <= b (a < b). */
static uint32_t separator_len(const uint8_t *a, uint32_t alen, const uint8_t *b,
                              uint32_t blen) {
  uint32_t i = 0;
  while (i < alen && i < blen && a[i] == b[i]) i++;
  return i + 1 <= blen ? i + 1 : blen;
}

/* Page boundaries: first[j] is the first record of page j.  Greedy, or
** balanced (cumulative size targets) when that also fits. */
static int merge_partition(bf_tree *t, struct merge_state *m, size_t **first_out,
                           size_t *pages_out) {
  size_t n = m->count, cap = 8, pages = 0;
  size_t *first = malloc(cap * sizeof *first);
  if (!first) return BF_NOMEM;

  /* Greedy: add record i when the page still fits with the high fence it
  ** would then have (the separator before record i+1). */
  size_t bytes = 0, start = 0;
  uint32_t low_len = m->low_len;
  first[pages++] = 0;
  for (size_t i = 0; i < n; i++) {
    const struct out_rec *r = &m->recs[i];
    uint32_t high_len =
        i + 1 < n ? separator_len(r->key, r->key_len, m->recs[i + 1].key,
                                  m->recs[i + 1].key_len)
                  : m->high_len;
    size_t add = bf_record_space(r->key_len, r->value_len);
    if (i > start && !page_fits(t, low_len, high_len, bytes + add)) {
      if (pages == cap) {
        size_t *p = realloc(first, (cap *= 2) * sizeof *first);
        if (!p) {
          free(first);
          return BF_NOMEM;
        }
        first = p;
      }
      first[pages++] = i;
      low_len = separator_len(m->recs[i - 1].key, m->recs[i - 1].key_len,
                              r->key, r->key_len);
      start = i;
      bytes = 0;
    }
    bytes += add;
  }

  if (pages > 1 && !m->append_only) {
    /* Balanced: boundaries at equal shares of the total bytes. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
      total += bf_record_space(m->recs[i].key_len, m->recs[i].value_len);
    size_t *bal = malloc(pages * sizeof *bal);
    bool ok = bal != NULL;
    size_t k = 0, acc = 0;
    if (ok) bal[k++] = 0;
    for (size_t i = 0; ok && i < n && k < pages; i++) {
      size_t add = bf_record_space(m->recs[i].key_len, m->recs[i].value_len);
      if (i > bal[k - 1] && acc + add / 2 > total * k / pages) bal[k++] = i;
      acc += add;
    }
    ok = ok && k == pages;
    /* Check every balanced page fits with its real fences. */
    for (size_t p = 0; ok && p < pages; p++) {
      size_t lo = bal[p], hi = p + 1 < pages ? bal[p + 1] : n, sum = 0;
      uint32_t ll = p == 0 ? m->low_len
                           : separator_len(m->recs[lo - 1].key,
                                           m->recs[lo - 1].key_len,
                                           m->recs[lo].key, m->recs[lo].key_len);
      uint32_t hl = p + 1 < pages
                        ? separator_len(m->recs[hi - 1].key,
                                        m->recs[hi - 1].key_len,
                                        m->recs[hi].key, m->recs[hi].key_len)
                        : m->high_len;
      for (size_t i = lo; i < hi; i++)
        sum += bf_record_space(m->recs[i].key_len, m->recs[i].value_len);
      ok = hi > lo && page_fits(t, ll, hl, sum);
    }
    if (ok) {
      free(first);
      first = bal;
    } else {
      free(bal);
    }
  }
  *first_out = first;
  *pages_out = pages;
  return BF_OK;
}

/* Build page p of the partition into buf (page_size bytes). */
static int merge_build_page(bf_tree *t, struct merge_state *m,
                            const size_t *first, size_t pages, size_t p,
                            uint8_t *buf) {
  size_t lo = first[p], hi = p + 1 < pages ? first[p + 1] : m->count;
  const uint8_t *low = NULL, *high = NULL;
  uint32_t low_len = 0, high_len = 0;
  struct bf_leaf leaf;
  if (p == 0) {
    low = m->low_inf ? NULL : m->low;
    low_len = m->low_len;
  } else {
    low = m->recs[lo].key;
    low_len = separator_len(m->recs[lo - 1].key, m->recs[lo - 1].key_len,
                            m->recs[lo].key, m->recs[lo].key_len);
  }
  if (p + 1 == pages) {
    high = m->high_inf ? NULL : m->high;
    high_len = m->high_len;
  } else {
    high = m->recs[hi].key;
    high_len = separator_len(m->recs[hi - 1].key, m->recs[hi - 1].key_len,
                             m->recs[hi].key, m->recs[hi].key_len);
  }
  memset(buf, 0, t->page_size);
  bf_leaf_init(buf, t->page_size, low, low_len, high, high_len, &leaf);
  for (size_t i = lo; i < hi; i++) {
    const struct out_rec *r = &m->recs[i];
    if (r->key_len < leaf.prefix_len ||
        bf_node_append(leaf.node, r->key + leaf.prefix_len,
                       r->key_len - leaf.prefix_len, BF_REC_INSERT, r->value,
                       r->value_len, false) != BF_OK) {
      return BF_CORRUPT_BKPT; /* the partition promised it fits */
    }
  }
  return BF_OK;
}

/* Count one leaf page written (write_page, flush_write_batch). */
static void count_page_write(bf_tree *t) {
  BF_COUNT(t, leaf_writes, 1);
  BF_COUNT(t, bytes_written, t->page_size);
}

static int write_page(bf_tree *t, uint8_t *buf, uint64_t pageno) {
  bf_leaf_seal(buf, t->page_size, pageno, 0);
  int rc = bf_io_write(t->io, buf, t->page_size, pageno * t->page_size);
  if (rc == BF_OK) count_page_write(t);
  return rc;
}

/* A merge whose page write the caller issues (flush_all batches them):
** the sealed page image and where it goes. */
struct merge_write {
  uint8_t *buf;      /* NULL: nothing deferred (the merge wrote, or split) */
  uint64_t target;   /* disk page to write */
  bool moved;        /* target is a new page: the old one is freed after */
};

/* The bookkeeping after the write of a merge's left page (status rc) to
** target: the leaf moves to target, or a failed write is handled (see
** leaf_merge).  pages: how many pages the merge made. */
static void merge_write_done(bf_tree *t, struct bf_leaf_entry *e,
                             uint64_t target, bool moved, size_t pages,
                             int rc) {
  if (rc == BF_OK && moved) {
    bf_space_free(t->space, e->disk_page, true);
    e->disk_page = target;
    e->flags &= ~(uint32_t)BF_ENTRY_IN_CHECKPOINT;
  }
  if (rc != BF_OK) {
    if (moved) bf_space_free(t->space, target, false);
    /* Separators already published, or the page overwritten in place
    ** (possibly torn): memory and disk may disagree. */
    if (pages > 1 || !moved) set_error(t, rc);
  }
}

/*
** Merge the leaf's mini-page into its leaf page, splitting the leaf when
** the records no longer fit one page.  Exclusive latch on e held.
** preread: the leaf's current page, read ahead by flush_all (checked against
** its disk page and page_version under this latch), or NULL to read it.  The
** mini-page (e->mini) is left as it is: the caller converts it (no split)
** or drops it (*split).  BF_OK or an error (then tree->error is set when
** the disk may disagree with memory).
** defer: NULL, or where a merge without split leaves its page write
** (defer->buf set, BF_OK): the caller writes defer->buf to defer->target,
** calls merge_write_done, frees the buffer, and only then converts the
** mini-page and releases the latch.  A split writes its pages itself.
*/
static int leaf_merge(bf_tree *t, uint32_t leaf_id, struct bf_leaf_entry *e,
                      const uint8_t *preread, bool *split,
                      struct merge_write *defer) {
  uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
  struct merge_state m;
  uint8_t *page = NULL, *buf = NULL;
  size_t *first = NULL, pages = 0;
  uint32_t *ids = NULL;
  uint64_t *pagenos = NULL;
  struct bf_leaf_entry **entries = NULL;
  size_t created = 0;
  int rc = BF_OK;

  memset(&m, 0, sizeof m);
  *split = false;
  if (!is_full_page(t, mini)) {
    page = page_alloc(t);
    if (!page) return BF_NOMEM;
    struct bf_leaf leaf;
    if (preread) { /* read ahead by flush_all, verified like any read */
      memcpy(page, preread, t->page_size);
      rc = bf_tree_verify_leaf(t, e, page, &leaf);
    } else {
      rc = bf_tree_read_leaf(t, e, page, &leaf);
    }
  }
  if (rc == BF_OK) rc = merge_collect(t, &m, mini, page);
  if (rc == BF_OK) rc = merge_partition(t, &m, &first, &pages);
  if (rc == BF_OK) {
    buf = page_alloc(t);
    ids = calloc(pages, sizeof *ids);
    pagenos = calloc(pages, sizeof *pagenos);
    entries = calloc(pages, sizeof *entries);
    if (!buf || !ids || !pagenos || !entries) rc = BF_NOMEM;
  }
  if (rc != BF_OK) goto out;

  /* Right siblings first: new leaves, latched before anyone can see them. */
  for (size_t p = 1; p < pages && rc == BF_OK; p++) {
    rc = bf_map_add(t->map, &ids[p], &entries[p]);
    if (rc != BF_OK) break;
    bf_latch_exclusive(&entries[p]->latch);
    created = p;
    rc = bf_space_alloc(t->space, &pagenos[p]);
    if (rc == BF_OK) rc = merge_build_page(t, &m, first, pages, p, buf);
    if (rc == BF_OK) rc = write_page(t, buf, pagenos[p]);
    if (rc == BF_OK) {
      entries[p]->disk_page = pagenos[p];
      entries[p]->flags = 0;
    }
  }
  /* Publish the separators (left to right).  Until the left page is
  ** rewritten, readers of the new leaves wait on their latches, and readers
  ** of this leaf on ours. */
  for (size_t p = 1; p < pages && rc == BF_OK; p++) {
    size_t lo = first[p];
    uint32_t sep_len =
        separator_len(m.recs[lo - 1].key, m.recs[lo - 1].key_len,
                      m.recs[lo].key, m.recs[lo].key_len);
    rc = bf_inner_insert(t->inner, m.recs[lo].key, sep_len,
                         p == 1 ? leaf_id : ids[p - 1], ids[p]);
    if (rc != BF_OK && p > 1) rc = set_error(t, rc); /* half published */
  }
  if (rc != BF_OK) {
    /* Nothing published (or the tree is in error): the new pages are
    ** unreferenced. */
    for (size_t p = 1; p <= created; p++) {
      if (pagenos[p]) bf_space_free(t->space, pagenos[p], false);
      entries[p]->disk_page = BF_NO_PAGE;
      bf_unlatch_exclusive(&entries[p]->latch);
    }
    goto out;
  }

  /* The left page: in place unless the last checkpoint references it. */
  {
    uint64_t target = e->disk_page;
    bool moved = false;
    if (e->flags & BF_ENTRY_IN_CHECKPOINT) {
      rc = bf_space_alloc(t->space, &target);
      if (rc != BF_OK) {
        /* Nothing written here: only published separators make the
        ** disk and memory disagree. */
        if (pages > 1) set_error(t, rc);
        goto unlatch_new;
      }
      moved = true; /* never free the leaf's own page below */
    }
    rc = merge_build_page(t, &m, first, pages, 0, buf);
    e->page_version++; /* copies read before are stale (bf_scan.c) */
    if (rc == BF_OK && defer && pages == 1) {
      bf_leaf_seal(buf, t->page_size, target, 0);
      defer->buf = buf;
      defer->target = target;
      defer->moved = moved;
      buf = NULL; /* the caller's now; it counts the merge once written */
      goto out;
    }
    if (rc == BF_OK) rc = write_page(t, buf, target);
    merge_write_done(t, e, target, moved, pages, rc);
  }
unlatch_new:
  for (size_t p = 1; p < pages; p++) bf_unlatch_exclusive(&entries[p]->latch);
  if (rc == BF_OK) {
    BF_COUNT(t, merges, 1);
    if (pages > 1) {
      BF_COUNT(t, splits, pages - 1);
      *split = true;
    }
  }

out:
  merge_free(&m);
  free(first);
  free(ids);
  free(pagenos);
  free(entries);
  bf_free_aligned(buf);
  bf_free_aligned(page);
  return rc;
}

/* After a merge without split: dirty records are on disk now. */
static void mini_mark_clean(bf_tree *t, uint8_t *mini) {
  uint8_t *node = mini_node(t, mini);
  bool full = is_full_page(t, mini);
  for (uint32_t i = bf_node_count(node); i-- > 0;) {
    struct bf_record r;
    bf_node_record(node, i, &r);
    if (r.type == BF_REC_INSERT) {
      bf_node_set_type(node, i, BF_REC_CACHE);
    } else if (r.type == BF_REC_TOMBSTONE) {
      if (full)
        bf_node_remove(node, i);
      else
        bf_node_set_type(node, i, BF_REC_PHANTOM);
    }
  }
}

/* Drop clean records: unreferenced ones, or all of them. */
static void mini_drop_clean(bf_tree *t, uint8_t *mini, bool all) {
  uint8_t *node = mini_node(t, mini);
  for (uint32_t i = bf_node_count(node); i-- > 0;) {
    struct bf_record r;
    bf_node_record(node, i, &r);
    if (!bf_rec_is_dirty(r.type) && (all || !r.referenced))
      bf_node_remove(node, i);
  }
  bf_node_clear_references(node);
  bf_node_compact(node);
}

/* Unlink and free the leaf's mini-page. */
static void mini_drop(bf_tree *t, struct bf_leaf_entry *e) {
  uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
  if (!mini) return;
  /* Release: pairs with nothing in particular; readers of e->mini hold the
  ** latch.  Statistics read it relaxed. */
  atomic_store_explicit(&e->mini, NULL, memory_order_release);
  bf_buf_free(t->buf, mini);
}

/* ------------------------------------------------------------------------
** Writing records into mini-pages.
*/

/* Move the mini-page into a new block of size_class (larger or smaller),
** keeping dirty records and, unless drop_cold, every clean record.
** BF_OK, BF_RETRY (no space), BF_FULL (does not fit that class). */
static int mini_move(bf_tree *t, uint32_t leaf_id, struct bf_leaf_entry *e,
                     uint32_t size_class, bool drop_cold) {
  uint8_t *old = atomic_load_explicit(&e->mini, memory_order_relaxed);
  uint8_t *node;
  int rc = buf_alloc(t, size_class, leaf_id, &node);
  if (rc != BF_OK) return rc;
  if (size_class == t->full_class) {
    /* full-page to full-page (relocation): copy the image. */
    memcpy(node, old, t->page_size);
    struct bf_leaf leaf;
    bf_leaf_view(node, t->page_size, &leaf);
    bf_node_clear_references(leaf.node);
  } else {
    bf_node_init(node, bf_buf_class_size(t->buf, size_class));
    uint32_t n = bf_node_count(old);
    for (uint32_t i = 0; i < n && rc == BF_OK; i++) {
      struct bf_record r;
      bf_node_record(old, i, &r);
      if (drop_cold && !bf_rec_is_dirty(r.type) && !r.referenced) continue;
      rc = bf_node_append(node, r.key, r.key_len, r.type, r.value, r.value_len,
                          false);
    }
    if (rc != BF_OK) {
      bf_buf_abort(t->buf, node);
      return rc;
    }
  }
  bf_buf_publish(t->buf, node);
  /* Release: the new node's contents before its address (readers latch, so
  ** this is belt and braces for the statistics' relaxed reads). */
  atomic_store_explicit(&e->mini, node, memory_order_release);
  bf_buf_free(t->buf, old);
  return BF_OK;
}

/* Copy-on-access of a full-page mini-page: replace it by a partial one
** holding its dirty records and the clean ones used since it was cached
** (reference bit); the leaf on disk holds every other record, so a later
** lookup of one reads the leaf again.  A full page caches a whole leaf for
** the price of its busiest records; this is where the buffer turns it back
** into a record cache.  Exclusive latch.  BF_OK (replaced), BF_FULL (keep
** the page whole: the survivors need more than the largest partial class,
** or no record is referenced), BF_RETRY. */
static int full_page_shrink(bf_tree *t, uint32_t leaf_id,
                            struct bf_leaf_entry *e, uint8_t *mini) {
  struct bf_leaf leaf;
  bf_leaf_view(mini, t->page_size, &leaf);
  uint32_t n = bf_node_count(leaf.node), p = leaf.prefix_len;
  uint64_t need = BF_NODE_HEADER;
  for (uint32_t i = 0; i < n; i++) {
    struct bf_record r;
    bf_node_record(leaf.node, i, &r);
    if (r.type == BF_REC_PHANTOM) continue;
    if (bf_rec_is_dirty(r.type) || r.referenced)
      need += bf_record_space(p + r.key_len, r.value_len);
  }
  /* Nothing referenced: the page is being used all the same, by lookups of
  ** keys it does not hold (which only a full page answers without a disk
  ** read), so keep it whole. */
  if (need == BF_NODE_HEADER) return BF_FULL;
  if (need > bf_buf_class_size(t->buf, t->max_mini_class)) return BF_FULL;
  uint32_t cls = bf_buf_class_for(t->buf, (uint32_t)need);
  /* A kept key is at most max_key = page_size / 8 bytes (dirty records were
  ** written, referenced ones looked up, under that limit). */
  uint8_t key[BF_MAX_NODE_SIZE / 8];
  uint8_t *node;
  int rc = buf_alloc(t, cls, leaf_id, &node);
  if (rc != BF_OK) return rc;
  bf_node_init(node, bf_buf_class_size(t->buf, cls));
  if (p) memcpy(key, leaf.low, p); /* L5: the prefix is low's (finite) */
  for (uint32_t i = 0; i < n && rc == BF_OK; i++) {
    struct bf_record r;
    bf_node_record(leaf.node, i, &r);
    if (r.type == BF_REC_PHANTOM) continue;
    if (!bf_rec_is_dirty(r.type) && !r.referenced) continue;
    if (r.key_len) memcpy(key + p, r.key, r.key_len);
    rc = bf_node_append(node, key, p + r.key_len, r.type, r.value, r.value_len,
                        false);
  }
  if (rc != BF_OK) { /* cannot happen: sized above */
    bf_buf_abort(t->buf, node);
    return rc == BF_FULL ? BF_CORRUPT_BKPT : rc;
  }
  bf_buf_publish(t->buf, node);
  atomic_store_explicit(&e->mini, node, memory_order_release);
  bf_buf_free(t->buf, mini);
  BF_COUNT(t, page_shrinks, 1);
  return BF_OK;
}

/* Whether the buffer has been full since open: eviction has retired some of
** it (the head only moves past evicted blocks).  A relaxed hint: a stale
** false costs one extra full-page promotion. */
static bool buffer_filled(bf_tree *t) { return bf_buf_retired(t->buf) > 0; }

/* Whether a mini-page in the copy-on-access region should move when used.
** Not while more of the buffer is free than the region holds: eviction is
** not about to reach it, and moving it would shed its cold records for
** nothing (the region is measured from the head, so in a buffer that is
** filling it holds the oldest blocks, not the next victims).  With warm
** fill, nothing is about to be evicted before the buffer has first filled:
** the full pages the fill keeps there stay put until then (and their
** readers do not upgrade their latch for nothing). */
static bool relocation_due(bf_tree *t, const uint8_t *mini) {
  if (bf_buf_filling(t->buf)) return false;
  return !t->opts.warm_fill || !is_full_page(t, mini) || buffer_filled(t);
}

/* Copy-on-access: a mini-page in the region about to be evicted that is
** being used moves to the tail, shedding cold clean records.  Best effort.
** A full page shrinks to its used records (full_page_shrink). */
static void mini_relocate(bf_tree *t, uint32_t leaf_id, struct bf_leaf_entry *e) {
  uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
  if (!mini || !bf_buf_in_second_chance(t->buf, mini)) return;
  if (!relocation_due(t, mini)) return;
  uint32_t cls = bf_buf_node_class(mini);
  if (cls == t->full_class) {
    if (t->opts.warm_fill) {
      int rc = full_page_shrink(t, leaf_id, e, mini);
      if (rc == BF_OK) BF_COUNT(t, copy_on_access, 1);
      if (rc != BF_FULL) return; /* done, or best effort failed */
    }
  } else {
    /* Size the new block for what survives. */
    uint32_t need = BF_NODE_HEADER, n = bf_node_count(mini);
    for (uint32_t i = 0; i < n; i++) {
      struct bf_record r;
      bf_node_record(mini, i, &r);
      if (bf_rec_is_dirty(r.type) || r.referenced)
        need += bf_record_space(r.key_len, r.value_len);
    }
    if (need == BF_NODE_HEADER) { /* nothing worth keeping */
      mini_drop(t, e);
      BF_COUNT(t, copy_on_access, 1);
      return;
    }
    uint32_t c = bf_buf_class_for(t->buf, need);
    if (c < cls) cls = c;
  }
  if (mini_move(t, leaf_id, e, cls, true) == BF_OK)
    BF_COUNT(t, copy_on_access, 1);
}

/* Insert one record into a partial mini-page node, growing it through the
** size classes.  BF_OK, BF_RETRY (buffer full), or BF_FULL (at the largest
** partial class: the caller merges). */
static int mini_grow_insert(bf_tree *t, uint32_t leaf_id, struct bf_leaf_entry *e,
                            const uint8_t *key, uint32_t klen, int type,
                            const uint8_t *val, uint32_t vlen) {
  for (;;) {
    uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
    int rc = bf_node_upsert(mini, key, klen, type, val, vlen);
    if (rc != BF_FULL) return rc;
    uint32_t cls = bf_buf_node_class(mini);
    if (cls >= t->max_mini_class) return BF_FULL;
    /* Next class that holds everything plus the new record. */
    uint32_t need = BF_NODE_HEADER + bf_node_used(mini) +
                    bf_record_space(klen, vlen);
    uint32_t next = bf_buf_class_for(t->buf, need);
    if (next <= cls) next = cls + 1;
    if (next > t->max_mini_class) next = t->max_mini_class;
    rc = mini_move(t, leaf_id, e, next, false);
    if (rc != BF_OK) return rc;
    BF_COUNT(t, mini_grows, 1);
  }
}

/*
** Apply a write (INSERT or TOMBSTONE) to the latched leaf's mini-page.
** Exclusive latch.  Returns BF_OK, BF_RETRY (unlatch, evict, retry),
** BF_RESTART (the leaf split: unlatch and retry from the root), or an error.
*/
static int mini_write(bf_tree *t, uint32_t leaf_id, struct bf_leaf_entry *e,
                      const uint8_t *key, uint32_t klen, int type,
                      const uint8_t *val, uint32_t vlen) {
  for (int round = 0;; round++) {
    uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
    int rc;
    bool split;
    if (round > 3) return BF_CORRUPT_BKPT; /* a merge must make room */

    if (!mini) {
      uint32_t cls = bf_buf_class_for(
          t->buf, BF_NODE_HEADER + bf_record_space(klen, vlen));
      uint8_t *node;
      rc = buf_alloc(t, cls, leaf_id, &node);
      if (rc != BF_OK) return rc;
      bf_node_init(node, bf_buf_class_size(t->buf, cls));
      rc = bf_node_upsert(node, key, klen, type, val, vlen);
      if (rc != BF_OK) {
        bf_buf_abort(t->buf, node);
        return rc == BF_FULL ? BF_CORRUPT_BKPT : rc;
      }
      bf_buf_publish(t->buf, node);
      atomic_store_explicit(&e->mini, node, memory_order_release);
      return BF_OK;
    }

    if (is_full_page(t, mini)) {
      struct bf_leaf leaf;
      uint32_t idx;
      bf_leaf_view(mini, t->page_size, &leaf);
      bool found = bf_leaf_search(&leaf, key, klen, &idx);
      if (type == BF_REC_TOMBSTONE) {
        struct bf_record r;
        if (!found) return BF_OK; /* the full page says: not there */
        bf_node_record(leaf.node, idx, &r);
        if (r.type == BF_REC_TOMBSTONE || r.type == BF_REC_PHANTOM)
          return BF_OK;
      }
      rc = bf_node_upsert(leaf.node, key + leaf.prefix_len,
                          klen - leaf.prefix_len, type, val, vlen);
      if (rc != BF_FULL) return rc;
      /* The full page is full: write its dirty records, then let the
      ** record start a new partial mini-page (later merges split). */
      if (node_has_dirty(leaf.node)) {
        rc = leaf_merge(t, leaf_id, e, NULL, &split, NULL);
        if (rc != BF_OK) return rc;
        mini_drop(t, e);
        if (split) return BF_RESTART;
      } else {
        mini_drop(t, e);
      }
      continue;
    } else {
      if (type == BF_REC_TOMBSTONE) {
        uint32_t idx;
        struct bf_record r;
        if (bf_node_search(mini, key, klen, &idx)) {
          bf_node_record(mini, idx, &r);
          if (r.type == BF_REC_PHANTOM) return BF_OK;
        }
      }
      rc = mini_grow_insert(t, leaf_id, e, key, klen, type, val, vlen);
      if (rc != BF_FULL) return rc;
      mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
      /* Full at the largest class: first shed clean records. */
      if (node_has_dirty(mini) == false || bf_node_count(mini) == 0) {
        mini_drop_clean(t, mini, true);
        continue;
      }
    }

    /* Merge the dirty records into the leaf page. */
    rc = leaf_merge(t, leaf_id, e, NULL, &split, NULL);
    if (rc != BF_OK) return rc;
    if (split) {
      mini_drop(t, e);
      return BF_RESTART;
    }
    mini_mark_clean(t, mini);
    if (!is_full_page(t, mini)) mini_drop_clean(t, mini, round > 0);
  }
}

int bf_tree_check_write(bf_tree *t, const void *key, size_t klen,
                        const void *val, size_t vlen) {
  int err = atomic_load_explicit(&t->error, memory_order_relaxed);
  if (err != BF_OK) return BF_READONLY;
  if (klen > t->max_key || klen + vlen > t->max_record) return BF_TOOBIG;
  if ((klen && !key) || (vlen && !val)) return BF_INVALID;
  return BF_OK;
}

int bf_tree_set_error(bf_tree *t, int rc) { return set_error(t, rc); }

void bf_tree_note_commit(bf_tree *t, uint64_t id) {
  uint64_t cur = atomic_load(&t->last_commit_id);
  while (id > cur && !atomic_compare_exchange_weak(&t->last_commit_id, &cur, id)) {
  }
}

/* Log one autocommit write (caller holds the leaf latch, so that writes of
** one key reach the log in the order they reach the tree). */
static int log_one(bf_tree *t, int type, const uint8_t *key, uint32_t klen,
                   const uint8_t *val, uint32_t vlen, uint64_t *end) {
  struct bf_wal_batch batch;
  memset(&batch, 0, sizeof batch);
  int rc = type == BF_REC_INSERT ? bf_wal_batch_put(&batch, key, klen, val, vlen)
                                 : bf_wal_batch_delete(&batch, key, klen);
  if (rc == BF_OK) rc = bf_wal_append(t->wal, &batch, 0, end);
  bf_wal_batch_free(&batch);
  return rc;
}

/*
** The write loop: latch the key's leaf, apply, retry after a split or an
** eviction.  With log, the write is appended to the log right after it is
** applied, under the same latch (see log_one); *end gets its LSN.
*/
static int write_loop(bf_tree *t, int type, const uint8_t *key, uint32_t klen,
                      const uint8_t *val, uint32_t vlen, bool log,
                      uint64_t *end) {
  int rc;
  for (;;) {
    uint32_t leaf_id;
    struct bf_leaf_entry *e;
    rc = bf_tree_latch_leaf(t, key, klen, BF_FIND_KEY, true, &leaf_id, &e);
    if (rc != BF_OK) break;
    rc = mini_write(t, leaf_id, e, key, klen, type, val, vlen);
    if (rc == BF_OK && log) {
      rc = log_one(t, type, key, klen, val, vlen, end);
      /* Visible in the tree but not in the log: memory and log disagree. */
      if (rc != BF_OK) set_error(t, rc);
    }
    if (rc == BF_OK) mini_relocate(t, leaf_id, e);
    bf_unlatch_exclusive(&e->latch);
    if (rc == BF_RESTART) continue;
    if (rc == BF_RETRY) {
      rc = bf_tree_evict(t, retry_class);
      if (rc == BF_OK) continue;
    }
    break;
  }
  return rc;
}

int bf_tree_apply(bf_tree *t, int type, const uint8_t *key, uint32_t klen,
                  const uint8_t *val, uint32_t vlen) {
  return write_loop(t, type, key, klen, val, vlen, false, NULL);
}

/* An autocommit write: gate shared, apply + log, then sync per
** `synchronous` (after unlatching, so that syncs group). */
static int tree_write(bf_tree *t, const void *key, size_t klen, int type,
                      const void *val, size_t vlen) {
  uint64_t end = 0;
  int rc = bf_tree_check_write(t, key, klen, val, vlen);
  if (rc != BF_OK) return rc;
  bf_gate_shared(&t->checkpoint_gate);
  /* Checked again: a checkpoint that held the gate may have failed. */
  if (atomic_load(&t->error) != BF_OK) {
    bf_gate_release(&t->checkpoint_gate);
    return BF_READONLY;
  }
  rc = write_loop(t, type, key, (uint32_t)klen, val, (uint32_t)vlen,
                  t->wal != NULL, &end);
  if (rc == BF_OK && t->wal) {
    BF_COUNT(t, commits, 1);
    if (t->opts.synchronous == BF_SYNC_FULL) rc = bf_wal_sync(t->wal, end);
  }
  bf_gate_release(&t->checkpoint_gate);
  if (rc == BF_OK) bf_tree_maybe_checkpoint(t);
  return rc;
}

int bf_put(bf_tree *t, const void *key, size_t klen, const void *val,
           size_t vlen) {
  return tree_write(t, key, klen, BF_REC_INSERT, val, vlen);
}

int bf_delete(bf_tree *t, const void *key, size_t klen) {
  return tree_write(t, key, klen, BF_REC_TOMBSTONE, NULL, 0);
}

/* ------------------------------------------------------------------------
** Reads.
*/

static bool warm_fill_allowed(bf_tree *t);
static bool read_should_promote(bf_tree *t, const uint8_t *key, uint32_t klen,
                                uint32_t vlen, bool prefetch);

/* Bytes that dropping the clean records not used since they were cached
** would free in a partial mini-page (mini_drop_clean(.., false)). */
static uint32_t unused_clean_bytes(const uint8_t *mini) {
  uint32_t n = bf_node_count(mini), bytes = 0;
  for (uint32_t i = 0; i < n; i++) {
    struct bf_record r;
    bf_node_record(mini, i, &r);
    if (!bf_rec_is_dirty(r.type) && !r.referenced)
      bytes += bf_record_space(r.key_len, r.value_len);
  }
  return bytes;
}

/* Set the reference bit of key's record in the leaf's mini-page, if any.
** Latched. */
static void mark_cached_referenced(bf_tree *t, struct bf_leaf_entry *e,
                                   const uint8_t *key, uint32_t klen) {
  uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed), *node;
  uint32_t idx;
  if (mini && mini_search(t, mini, key, klen, &node, &idx))
    bf_node_mark_referenced(node, idx);
}

/* Cache a record read from disk (or a phantom for a miss) in the leaf's
** mini-page; `referenced` marks it used (a prefetch: its statement reads it
** next, so making room for a later promotion must not drop it first).
** Exclusive latch.  Best effort: BF_RETRY means no room. */
static int mini_promote(bf_tree *t, uint32_t leaf_id, struct bf_leaf_entry *e,
                        const uint8_t *key, uint32_t klen, const uint8_t *val,
                        uint32_t vlen, bool found, bool referenced) {
  uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
  uint8_t *node;
  uint32_t idx;
  int type = found ? BF_REC_CACHE : BF_REC_PHANTOM;
  if (!found) vlen = 0;
  if (mini) {
    if (is_full_page(t, mini)) return BF_OK;
    if (mini_search(t, mini, key, klen, &node, &idx)) return BF_OK;
    int rc = mini_grow_insert(t, leaf_id, e, key, klen, type, val, vlen);
    if (rc == BF_FULL) {
      /* At the largest class: never merge for a clean record, but make
      ** room by dropping the clean records nobody used since they were
      ** cached (which clears the others' reference bits), when that frees
      ** enough; otherwise leave the mini-page as it is. */
      mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
      if (bf_node_reclaimable(mini) + unused_clean_bytes(mini) <
          bf_record_space(klen, vlen))
        return BF_OK; /* nothing cached */
      mini_drop_clean(t, mini, false);
      rc = bf_node_upsert(mini, key, klen, type, val, vlen);
      if (rc == BF_FULL) return BF_OK;
    }
    if (rc != BF_OK) return rc;
    if (referenced) mark_cached_referenced(t, e, key, klen);
    BF_COUNT(t, record_promotions, found);
    BF_COUNT(t, phantoms, !found);
    return BF_OK;
  }
  uint32_t cls =
      bf_buf_class_for(t->buf, BF_NODE_HEADER + bf_record_space(klen, vlen));
  int rc = buf_alloc(t, cls, leaf_id, &node);
  if (rc != BF_OK) return rc;
  bf_node_init(node, bf_buf_class_size(t->buf, cls));
  rc = bf_node_upsert(node, key, klen, type, val, vlen);
  if (rc != BF_OK) {
    bf_buf_abort(t->buf, node);
    return BF_OK;
  }
  bf_buf_publish(t->buf, node);
  atomic_store_explicit(&e->mini, node, memory_order_release);
  if (referenced) mark_cached_referenced(t, e, key, klen);
  BF_COUNT(t, record_promotions, found);
  BF_COUNT(t, phantoms, !found);
  return BF_OK;
}

/* The point lookup of bf_get and bf_prefetch.  A prefetch copies nothing
** and caches what a miss read whatever the promotion rate says: the record,
** or a phantom when the key is absent (best effort: no room, or a latch
** that cannot be upgraded at once, caches nothing).  A prefetch counts a
** miss when it reads the leaf and no hit when it does not: the caller's
** read after it counts that. */
static int lookup(bf_tree *t, const void *key_in, size_t klen, void *buffer,
                  size_t buffer_size, size_t *value_len, bool prefetch) {
  const uint8_t *key = key_in;
  uint32_t leaf_id;
  struct bf_leaf_entry *e;
  uint8_t *page = NULL;
  bool need_evict = false;
  int rc;

  if (klen > t->max_key) return BF_TOOBIG;
  if (klen && !key) return BF_INVALID;
  rc = bf_tree_latch_leaf(t, key, (uint32_t)klen, BF_FIND_KEY, false, &leaf_id,
                          &e);
  if (rc != BF_OK) return rc;

  uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
  if (mini) {
    uint8_t *node;
    uint32_t idx;
    bool found = mini_search(t, mini, key, (uint32_t)klen, &node, &idx);
    if (found || is_full_page(t, mini)) {
      rc = BF_NOTFOUND;
      if (found) {
        struct bf_record r;
        bf_node_record(node, idx, &r);
        if (r.type == BF_REC_INSERT || r.type == BF_REC_CACHE) {
          size_t n = r.value_len < buffer_size ? r.value_len : buffer_size;
          if (n) memcpy(buffer, r.value, n);
          *value_len = r.value_len;
          rc = BF_OK;
        }
        if (!r.referenced) bf_node_mark_referenced(node, idx);
      }
      if (!prefetch) BF_COUNT(t, cache_hits, 1); /* the read after it counts */
      if (bf_buf_in_second_chance(t->buf, mini) && relocation_due(t, mini) &&
          bf_try_upgrade(&e->latch)) {
        mini_relocate(t, leaf_id, e);
        bf_unlatch_exclusive(&e->latch);
      } else {
        bf_unlatch_shared(&e->latch);
      }
      return rc;
    }
  }

  /* Miss: read the leaf page. */
  BF_COUNT(t, cache_misses, 1);
  page = page_alloc(t);
  if (!page) {
    bf_unlatch_shared(&e->latch);
    return BF_NOMEM;
  }
  struct bf_leaf leaf;
  uint32_t idx;
  struct bf_record r = {0};
  rc = bf_tree_read_leaf(t, e, page, &leaf);
  bool found = false;
  if (rc == BF_OK) {
    found = bf_leaf_search(&leaf, key, (uint32_t)klen, &idx);
    if (found) {
      bf_node_record(leaf.node, idx, &r);
      size_t n = r.value_len < buffer_size ? r.value_len : buffer_size;
      if (n) memcpy(buffer, r.value, n);
      *value_len = r.value_len;
    } else {
      rc = BF_NOTFOUND;
    }
  }
  bool promoted_latch = false;
  if ((rc == BF_OK || rc == BF_NOTFOUND) && warm_fill_allowed(t) &&
      bf_try_upgrade(&e->latch)) {
    /* Warm fill: the buffer has never been full, so keeping the whole
    ** leaf evicts nothing; later reads of any key of it hit. */
    promoted_latch = true;
    int prc = bf_tree_promote_page(t, leaf_id, e, page);
    if (prc == BF_OK) BF_COUNT(t, warm_fills, 1);
    if (prc == BF_RETRY) need_evict = true;
  } else if ((rc == BF_OK || rc == BF_NOTFOUND) &&
             read_should_promote(t, key, (uint32_t)klen, r.value_len, prefetch) &&
             bf_try_upgrade(&e->latch)) {
    promoted_latch = true;
    if (mini_promote(t, leaf_id, e, key, (uint32_t)klen, r.value, r.value_len,
                     found, prefetch) == BF_RETRY)
      need_evict = true;
  }
  if (promoted_latch)
    bf_unlatch_exclusive(&e->latch);
  else
    bf_unlatch_shared(&e->latch);
  bf_free_aligned(page);
  if (need_evict) bf_tree_evict(t, retry_class);
  if (t->sketch) bf_sketch_age(t->sketch); /* latch-free: may be a pass */
  return rc;
}

int bf_get(bf_tree *t, const void *key, size_t klen, void *buffer,
           size_t buffer_size, size_t *value_len) {
  return lookup(t, key, klen, buffer, buffer_size, value_len, false);
}

int bf_prefetch(bf_tree *t, const void *key, size_t klen) {
  size_t value_len;
  int rc = lookup(t, key, klen, NULL, 0, &value_len, true);
  return rc == BF_NOTFOUND ? BF_OK : rc;
}

/* Whether the buffer has room to cache more without evicting anything: a
** full page fits, beyond what bf_make_room keeps unused for writers (that
** reserve is not room: caching into it would only move the evictions
** bf_make_room does ahead of time back under the writers' locks) and beyond
** what an eviction batch frees ahead of need (evict_ahead plus its last
** block), so that eviction never leaves room for reads to cache into
** without admission. */
static bool buffer_has_room(bf_tree *t) {
  return !bf_buf_needs_eviction(t->buf, t->full_class) &&
         bf_buf_unused(t->buf) >=
             t->room_target + t->evict_ahead +
                 bf_buf_block_size(t->buf, t->full_class);
}

/* Whether a read miss may cache its whole leaf: only until the buffer's
** first eviction, and only while a full page fits without one.  After
** that, misses cache single records (bf_tree_should_promote) and full
** pages shrink to their used records on relocation (mini_relocate), so the
** steady state is a record cache, not a page cache. */
static bool warm_fill_allowed(bf_tree *t) {
  return t->opts.warm_fill && !buffer_filled(t) && buffer_has_room(t);
}

bool bf_tree_should_promote(bf_tree *t, uint32_t percent) {
  /* While the buffer has room, caching costs nothing: always.  Once it is
  ** full, each promotion evicts something, so only with the configured
  ** probability (hot records come back often enough to get in). */
  return buffer_has_room(t) || bf_random_percent(percent);
}

/* Whether a point lookup caches the record (value_len bytes; 0 for a
** phantom) it read from disk, and count the read in the admission sketch.
**   - A prefetch always caches: its statement is about to write the key.
**   - During the first lap of eviction after a warm fill, the buffer is
**     still mostly the full pages the fill kept (a page cache): caching
**     every record read turns it into a record cache within one lap instead
**     of the many laps admission would take.  (Scans keep their own rate.)
**   - While the buffer has room, caching costs nothing: always.
**   - Otherwise each record cached evicts others: with read_admission,
**     only a key the sketch has seen read often enough lately (see
**     bf_sketch.c); without, with read_promote_percent probability. */
static bool read_should_promote(bf_tree *t, const uint8_t *key, uint32_t klen,
                                uint32_t vlen, bool prefetch) {
  uint32_t estimate = 0;
  if (t->sketch)
    estimate = bf_sketch_add(t->sketch, key, klen,
                             bf_record_space(klen, vlen) + SKETCH_OVERHEAD);
  if (prefetch) return true;
  if (t->opts.warm_fill && bf_buf_retired(t->buf) < bf_buf_size(t->buf))
    return true;
  if (!t->sketch)
    return bf_tree_should_promote(t, t->opts.read_promote_percent);
  if (buffer_has_room(t) || bf_sketch_admits(estimate))
    return true;
  BF_COUNT(t, admissions_refused, 1);
  return false;
}

/* Scan promotion: see bf_int.h. */
int bf_tree_promote_page(bf_tree *t, uint32_t leaf_id, struct bf_leaf_entry *e,
                         const uint8_t *page) {
  uint8_t *old = atomic_load_explicit(&e->mini, memory_order_relaxed);
  uint8_t *node;
  if (old && is_full_page(t, old)) return BF_OK;
  int rc = buf_alloc(t, t->full_class, leaf_id, &node);
  if (rc != BF_OK) return rc;
  memcpy(node, page, t->page_size);
  struct bf_leaf leaf;
  bf_leaf_view(node, t->page_size, &leaf);
  /* Records on disk are INSERT; in the mini-page they are clean copies.
  ** Left as INSERT they would count as dirty: every eviction and
  ** checkpoint would rewrite the leaf, and a reader's eviction could merge
  ** while a checkpoint holds the gate (image_add relies on no merges). */
  for (uint32_t i = bf_node_count(leaf.node); i-- > 0;)
    bf_node_set_type(leaf.node, i, BF_REC_CACHE);
  if (old) {
    uint32_t n = bf_node_count(old);
    for (uint32_t i = 0; i < n && rc == BF_OK; i++) {
      struct bf_record r;
      bf_node_record(old, i, &r);
      if (!bf_rec_is_dirty(r.type)) continue;
      uint32_t idx;
      bool found = bf_leaf_search(&leaf, r.key, r.key_len, &idx);
      if (r.type == BF_REC_TOMBSTONE && !found) continue;
      rc = bf_node_upsert(leaf.node, r.key + leaf.prefix_len,
                          r.key_len - leaf.prefix_len, r.type, r.value,
                          r.value_len);
    }
    if (rc != BF_OK) {
      bf_buf_abort(t->buf, node);
      return rc;
    }
  }
  bf_buf_publish(t->buf, node);
  atomic_store_explicit(&e->mini, node, memory_order_release);
  if (old) bf_buf_free(t->buf, old);
  BF_COUNT(t, page_promotions, 1);
  return BF_OK;
}

/* ------------------------------------------------------------------------
** Eviction.
*/

/* Evict the mini-page in block node (claimed by bf_buf_evict_next). */
static int evict_block(bf_tree *t, uint8_t *node) {
  uint32_t leaf_id = bf_buf_node_leaf(node);
  int rc = BF_OK;
  if (NEVER(leaf_id >= bf_map_count(t->map))) {
    bf_buf_evict_done(t->buf, node);
    return BF_CORRUPT_BKPT;
  }
  struct bf_leaf_entry *e = bf_map_get(t->map, leaf_id);
  bf_latch_exclusive(&e->latch);
  if (bf_buf_node_state(node) == BF_BLOCK_READY &&
      ALWAYS(atomic_load_explicit(&e->mini, memory_order_relaxed) == node)) {
    if (node_has_dirty(mini_node(t, node))) {
      bool split;
      rc = leaf_merge(t, leaf_id, e, NULL, &split, NULL);
      if (rc != BF_OK) {
        /* Keep the block (and its dirty records) where it is: the head
        ** stays here, the tree is in error and refuses writes. */
        set_error(t, rc);
        bf_unlatch_exclusive(&e->latch);
        return rc;
      }
    }
    atomic_store_explicit(&e->mini, NULL, memory_order_release);
    BF_COUNT(t, evictions, 1);
  }
  bf_buf_evict_done(t->buf, node);
  bf_unlatch_exclusive(&e->latch);
  return rc;
}

/* Whether merging the leaf's mini-page (latched) reads the leaf's page: a
** dirty partial mini-page of a leaf that has a page on disk.  What
** flush_read_ahead and evict_batch read ahead. */
static bool merge_reads_page(bf_tree *t, const struct bf_leaf_entry *e,
                             const uint8_t *mini) {
  return mini && e->disk_page != BF_NO_PAGE && !is_full_page(t, mini) &&
         node_has_dirty(mini);
}

/* Count one leaf page read ahead for a merge. */
static void count_read_ahead(bf_tree *t) {
  BF_COUNT(t, leaf_reads, 1);
  BF_COUNT(t, bytes_read, t->page_size);
  BF_COUNT(t, read_ahead_leaves, 1);
}

/* Blocks evict_batch claims and evicts together. */
#define EVICT_BATCH 16

/* A block claimed by evict_batch. */
struct evict_item {
  uint8_t *node;
  uint32_t leaf_id;
  uint8_t *page;          /* its leaf's page read ahead, or NULL */
  uint64_t disk_page;     /* which page that is */
  uint32_t page_version;  /* the leaf's page_version when it was noted */
  struct merge_write w;   /* a merge whose page write is pending (w.buf) */
};

static int evict_item_order(const void *a, const void *b) {
  uint32_t x = ((const struct evict_item *)a)->leaf_id;
  uint32_t y = ((const struct evict_item *)b)->leaf_id;
  return x < y ? -1 : x > y;
}

/* End the eviction of item's claimed block, its leaf e latched exclusively
** (released here): the leaf loses the mini-page if the block still is it. */
static void evict_finish(bf_tree *t, struct evict_item *item,
                         struct bf_leaf_entry *e) {
  if (bf_buf_node_state(item->node) == BF_BLOCK_READY &&
      atomic_load_explicit(&e->mini, memory_order_relaxed) == item->node) {
    atomic_store_explicit(&e->mini, NULL, memory_order_release);
    BF_COUNT(t, evictions, 1);
  }
  bf_buf_evict_done(t->buf, item->node);
  bf_unlatch_exclusive(&e->latch);
}

/* Write the deferred merges pending[0..n) in one batch and end each
** eviction once its page is written (a failed write keeps its dirty block
** claimed and puts the tree in error, as evict_block).  Returns the first
** error, BF_OK if none. */
static int evict_write_pending(bf_tree *t, struct evict_item **pending,
                               uint32_t n) {
  struct bf_io_request reqs[EVICT_BATCH];
  int rc = BF_OK;
  if (n == 0) return BF_OK;
  for (uint32_t k = 0; k < n; k++)
    reqs[k] = (struct bf_io_request){pending[k]->w.buf, t->page_size,
                                     pending[k]->w.target * t->page_size,
                                     BF_OK};
  bf_io_write_batch(t->io, reqs, n);
  for (uint32_t k = 0; k < n; k++) {
    struct evict_item *it = pending[k];
    struct bf_leaf_entry *e = bf_map_get(t->map, it->leaf_id);
    int wrc = reqs[k].status;
    merge_write_done(t, e, it->w.target, it->w.moved, 1, wrc);
    bf_free_aligned(it->w.buf);
    it->w.buf = NULL;
    if (wrc == BF_OK) {
      count_page_write(t);
      BF_COUNT(t, merges, 1);
      evict_finish(t, it, e);
    } else {
      set_error(t, wrc);
      bf_unlatch_exclusive(&e->latch);
      if (rc == BF_OK) rc = wrc;
    }
  }
  return rc;
}

/*
** Evict up to EVICT_BATCH blocks at the head with their disk I/O batched.
** Evicting one block at a time, a writer short of space waited for two disk
** round trips (read the leaf's page, write it merged) per dirty mini-page
** before looking at the next.  Here:
**   1. claim the blocks (bf_buf_evict_next): the first, then more while
**      fewer than t->evict_ahead bytes are claimed (eviction ahead of need
**      is bounded, see buffer_has_room) and, under each leaf's shared
**      latch, note the page of every dirty partial mini-page;
**   2. read those pages in one batch (used only if the leaf still has that
**      page and page_version under its exclusive latch, as flush_all's
**      read-ahead; otherwise the merge reads it again);
**   3. merge in increasing leaf id with the page writes deferred, write them
**      in one batch, and end each eviction once its page is written.
** Holding several leaf latches follows flush_all's rule: increasing id, and
** no one waits for a latch while holding one except another such batch (same
** order) and a split, which latches only leaves it has just added.  A leaf
** met twice (its mini-page moved to a block claimed later in the batch) is
** evicted on its own afterwards.
** The caller holds t->evict_batch_lock (the read pages are t's).
** *freed: bytes of the blocks claimed; *claimed: blocks claimed or retired
** (0: the cursor could not move, BF_RETRY from bf_buf_evict_next).
** Errors: as evict_block, a failed merge keeps its block claimed and puts
** the tree in error; the blocks after it stay claimed too.  An error of the
** cursor itself ends the claiming; the blocks claimed before it are evicted
** and the error returned.
*/
static int evict_batch(bf_tree *t, uint64_t *freed, uint32_t *claimed) {
  struct evict_item items[EVICT_BATCH];
  struct bf_io_request reqs[EVICT_BATCH];
  struct evict_item *pending[EVICT_BATCH];
  uint8_t *later[EVICT_BATCH];
  uint32_t n = 0, retired = 0, nreq = 0, npending = 0, nlater = 0;
  int rc = BF_OK, claim_rc = BF_OK;

  *freed = 0;
  while (n < EVICT_BATCH && (n == 0 || *freed < t->evict_ahead)) {
    uint8_t *node;
    int crc = bf_buf_evict_next(t->buf, &node);
    if (crc == BF_RETRY) break;
    if (crc != BF_OK) {
      claim_rc = crc;
      break;
    }
    if (!node) { /* a dead block, retired */
      retired++;
      continue;
    }
    *freed += bf_buf_block_size(t->buf, bf_buf_node_class(node));
    items[n++] = (struct evict_item){.node = node,
                                     .leaf_id = bf_buf_node_leaf(node)};
  }
  *claimed = n + retired;

  /* 1. Note the pages to read.  A claimed block's memory is not reused
  ** until bf_buf_evict_done; e->mini == node says it is still the leaf's. */
  for (uint32_t i = 0; i < n; i++) {
    struct evict_item *it = &items[i];
    if (NEVER(it->leaf_id >= bf_map_count(t->map))) continue;
    struct bf_leaf_entry *e = bf_map_get(t->map, it->leaf_id);
    bf_latch_shared(&e->latch);
    if (atomic_load_explicit(&e->mini, memory_order_relaxed) == it->node &&
        bf_buf_node_state(it->node) == BF_BLOCK_READY &&
        merge_reads_page(t, e, it->node)) {
      if (!t->evict_pages)
        t->evict_pages =
            bf_malloc_aligned(4096, (size_t)EVICT_BATCH * t->page_size);
      if (t->evict_pages) { /* without memory, each merge reads its page */
        it->page = t->evict_pages + (size_t)i * t->page_size;
        it->disk_page = e->disk_page;
        it->page_version = e->page_version;
        reqs[nreq++] = (struct bf_io_request){
            it->page, t->page_size, e->disk_page * t->page_size, BF_OK};
      }
    }
    bf_unlatch_shared(&e->latch);
  }

  /* 2. Read them together. */
  if (nreq) bf_io_read_batch(t->io, reqs, nreq);
  for (uint32_t i = 0, r = 0; i < n; i++) {
    if (!items[i].page) continue;
    if (reqs[r++].status != BF_OK) {
      items[i].page = NULL; /* the merge reads it again and reports */
      continue;
    }
    count_read_ahead(t);
  }

  /* 3. Merge in leaf id order, the writes deferred. */
  qsort(items, n, sizeof items[0], evict_item_order);
  for (uint32_t i = 0; i < n; i++) {
    struct evict_item *it = &items[i];
    if (i > 0 && items[i - 1].leaf_id == it->leaf_id) {
      if (it->page) BF_COUNT(t, read_ahead_dropped, 1);
      later[nlater++] = it->node;
      continue;
    }
    if (rc != BF_OK) continue; /* left claimed, see above */
    if (NEVER(it->leaf_id >= bf_map_count(t->map))) {
      bf_buf_evict_done(t->buf, it->node); /* as evict_block */
      rc = BF_CORRUPT_BKPT;
      continue;
    }
    struct bf_leaf_entry *e = bf_map_get(t->map, it->leaf_id);
    bf_latch_exclusive(&e->latch);
    uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
    const uint8_t *pre = NULL;
    if (bf_buf_node_state(it->node) == BF_BLOCK_READY && mini == it->node &&
        node_has_dirty(mini_node(t, mini))) {
      if (it->page && e->disk_page == it->disk_page &&
          e->page_version == it->page_version)
        pre = it->page;
      bool split;
      it->w.buf = NULL;
      int mrc = leaf_merge(t, it->leaf_id, e, pre, &split, &it->w);
      if (mrc == BF_NOMEM && npending &&
          atomic_load_explicit(&t->error, memory_order_relaxed) == BF_OK) {
        /* The pending merges hold a page each: write them, then merge this
        ** leaf on its own (as flush_all; a merge that failed without
        ** putting the tree in error changed nothing that matters). */
        mrc = evict_write_pending(t, pending, npending);
        npending = 0;
        if (mrc == BF_OK) mrc = leaf_merge(t, it->leaf_id, e, pre, &split, NULL);
        it->w.buf = NULL;
      }
      if (mrc != BF_OK) {
        set_error(t, mrc);
        bf_unlatch_exclusive(&e->latch);
        rc = mrc;
        continue;
      }
      if (it->w.buf) {
        pending[npending++] = it; /* latched until its page is written */
        continue;
      }
    }
    if (it->page && !pre) BF_COUNT(t, read_ahead_dropped, 1);
    evict_finish(t, it, e);
  }

  /* The deferred writes, also after an error (they hold latches). */
  int wrc = evict_write_pending(t, pending, npending);
  if (rc == BF_OK) rc = wrc;
  for (uint32_t k = 0; k < nlater && rc == BF_OK; k++)
    rc = evict_block(t, later[k]);
  return rc != BF_OK ? rc : claim_rc;
}

/* Evict from the head while a block of size_class would not fit or fewer
** than `unused` bytes are unused, but for the second condition no more
** than the shortfall seen at the start: the head (and so the unused count)
** advances only past finished evictions, so while another thread merges
** the oldest block, this one would otherwise evict block after block
** towards the tail.  Blocks go EVICT_BATCH at a time (evict_batch) in the
** thread that holds evict_batch_lock, one at a time in the others.  No
** latch held. */
static int evict_loop(bf_tree *t, uint32_t size_class, uint64_t unused) {
  int idle = 0;
  uint64_t have = bf_buf_unused(t->buf);
  uint64_t shortfall = have < unused ? unused - have : 0, freed = 0;
  if (size_class > t->full_class) size_class = t->full_class;
  while (!atomic_load(&t->no_merge) &&
         (bf_buf_needs_eviction(t->buf, size_class) ||
          (freed < shortfall && bf_buf_unused(t->buf) < unused))) {
    uint64_t got = 0;
    uint32_t claimed = 1;
    uint8_t *node = NULL;
    int rc;
    if (pthread_mutex_trylock(&t->evict_batch_lock) == 0) {
      rc = evict_batch(t, &got, &claimed);
      pthread_mutex_unlock(&t->evict_batch_lock);
    } else {
      rc = bf_buf_evict_next(t->buf, &node);
      if (rc == BF_RETRY) {
        claimed = 0;
        rc = BF_OK;
      } else if (rc == BF_OK && node) {
        got = bf_buf_block_size(t->buf, bf_buf_node_class(node));
        rc = evict_block(t, node);
      }
    }
    if (rc != BF_OK) return rc;
    if (claimed == 0) {
      /* A failed eviction merge leaves its block claimed for good (the
      ** head cannot pass it): once the tree is in error, space may never
      ** come back, so a writer must not retry forever. */
      if (atomic_load_explicit(&t->error, memory_order_relaxed) != BF_OK)
        return BF_READONLY;
      if (++idle > 1000) return BF_OK; /* others are evicting; retry the op */
      sched_yield();
      continue;
    }
    idle = 0;
    freed += got;
  }
  return BF_OK;
}

/* evict_loop, counted in t->evictors.  While a checkpoint writes its image
** (no_merge), nothing is evicted: the caller finds no room (a read caches
** nothing; writers are held at the gate meanwhile).  Sequentially
** consistent: either the checkpoint sees this call in evictors and waits
** for it, or this call sees no_merge (stop_merges). */
static int evict_until(bf_tree *t, uint32_t size_class, uint64_t unused) {
  atomic_fetch_add(&t->evictors, 1);
  int rc = evict_loop(t, size_class, unused); /* checks no_merge first */
  atomic_fetch_sub(&t->evictors, 1);
  return rc;
}

/* Stop evictions (and so merges: writers being held at the gate, evictions
** are the only merges left) and wait for those under way to end. */
static void stop_merges(bf_tree *t) {
  atomic_store(&t->no_merge, true);
  while (atomic_load(&t->evictors) != 0) sched_yield();
}

int bf_tree_evict(bf_tree *t, uint32_t size_class) {
  return evict_until(t, size_class, 0);
}

int bf_make_room(bf_tree *t) {
  if (atomic_load_explicit(&t->error, memory_order_relaxed) != BF_OK)
    return BF_READONLY;
  return evict_until(t, 0, t->room_target);
}

/* ------------------------------------------------------------------------
** Checkpoints.
*/

/* Leaves whose pages flush_all reads in one batch. */
#define FLUSH_BATCH 32

/* A leaf of flush_all's window that needs its page for a merge. */
struct flush_item {
  uint32_t id;
  uint64_t disk_page;
  uint32_t page_version;
  bool ready;               /* read without error */
};

/*
** Note the leaves of [base, end) whose merge will read their page (dirty
** partial mini-page, a page on disk) with disk page and page_version, each
** under its shared latch, and read those pages into pages[] in one batch
** (parallel with io_uring: a checkpoint flushing thousands of leaves used
** to wait for each read in turn).  A page is used only if its leaf still
** has that page and version under the exclusive latch (as scan read-ahead,
** bf_scan.c).  Returns how many items were noted (0 when fewer than two:
** nothing to gain).
*/
static uint32_t flush_read_ahead(bf_tree *t, uint32_t base, uint32_t end,
                                 uint8_t *pages, struct flush_item *items) {
  struct bf_io_request reqs[FLUSH_BATCH];
  uint32_t n = 0;
  for (uint32_t id = base; id < end; id++) {
    struct bf_leaf_entry *e = bf_map_get(t->map, id);
    bf_latch_shared(&e->latch);
    uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
    if (merge_reads_page(t, e, mini)) {
      items[n] = (struct flush_item){id, e->disk_page, e->page_version, false};
      reqs[n] = (struct bf_io_request){pages + (size_t)n * t->page_size,
                                       t->page_size,
                                       e->disk_page * t->page_size, BF_OK};
      n++;
    }
    bf_unlatch_shared(&e->latch);
  }
  if (n < 2) return 0;
  bf_io_read_batch(t->io, reqs, n);
  for (uint32_t i = 0; i < n; i++) {
    if (reqs[i].status != BF_OK) continue; /* read again, reported then */
    items[i].ready = true;
    count_read_ahead(t);
  }
  return n;
}

/* A leaf of flush_all's window whose merge write is deferred (its latch is
** held until the batch is written). */
struct flush_write {
  uint32_t id;
  struct merge_write w;
};

/* Write the deferred merges of a window in one batch, then finish each
** (merge_write_done; the mini-page marked clean, or dropped when drop) and
** release its latch.  Returns the first error, BF_OK if none. */
static int flush_write_batch(bf_tree *t, struct flush_write *fw, uint32_t n,
                             bool drop) {
  struct bf_io_request reqs[FLUSH_BATCH];
  int rc = BF_OK;
  for (uint32_t i = 0; i < n; i++)
    reqs[i] = (struct bf_io_request){fw[i].w.buf, t->page_size,
                                     fw[i].w.target * t->page_size, BF_OK};
  if (n) bf_io_write_batch(t->io, reqs, n);
  for (uint32_t i = 0; i < n; i++) {
    struct bf_leaf_entry *e = bf_map_get(t->map, fw[i].id);
    int wrc = reqs[i].status;
    merge_write_done(t, e, fw[i].w.target, fw[i].w.moved, 1, wrc);
    bf_free_aligned(fw[i].w.buf);
    if (wrc == BF_OK) {
      count_page_write(t);
      BF_COUNT(t, merges, 1);
      uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
      mini_mark_clean(t, mini);
      if (drop) mini_drop(t, e);
    } else if (rc == BF_OK) {
      rc = wrc;
    }
    bf_unlatch_exclusive(&e->latch);
  }
  return rc;
}

/* Merge every dirty mini-page.  The caller holds the gate exclusive (no
** new dirty records: afterwards none is left), or no gate (bf_checkpoint's
** first phase: writers go on dirtying leaves already passed).  Splits
** append leaves, so loop until the count is stable.
** Leaves are taken FLUSH_BATCH at a time: their pages read ahead together
** (flush_read_ahead), their merges built under their exclusive latches and
** the pages written together (flush_write_batch), each latch held until its
** page is written.  Holding several leaf latches is safe: latches are taken
** in increasing id order and all released at the end of each window; no
** other thread waits for a leaf latch while holding one (protocol 2) except
** another flush_all, which keeps the same order, and a split, which latches
** only leaves it has just added (a flush_all that latched one first finds it
** without a mini-page and lets it go at once).  Without memory for a batch,
** one read and one write at a time. */
static int flush_all(bf_tree *t, bool drop) {
  uint32_t done = 0;
  int rc = BF_OK;
  struct flush_item items[FLUSH_BATCH];
  struct flush_write writes[FLUSH_BATCH];
  uint32_t pending = 0;
  uint8_t *pages = bf_big_alloc((size_t)FLUSH_BATCH * t->page_size);
  while (rc == BF_OK && done < bf_map_count(t->map)) {
    uint32_t n = bf_map_count(t->map);
    uint32_t noted = 0, next = 0, window_end = done;
    for (uint32_t id = done; id < n && rc == BF_OK; id++) {
      if (id == window_end) {
        rc = flush_write_batch(t, writes, pending, drop);
        pending = 0;
        if (rc != BF_OK) break;
        window_end = id + FLUSH_BATCH < n ? id + FLUSH_BATCH : n;
        noted = pages ? flush_read_ahead(t, id, window_end, pages, items) : 0;
        next = 0;
      }
      struct bf_leaf_entry *e = bf_map_get(t->map, id);
      bf_latch_exclusive(&e->latch);
      const uint8_t *pre = NULL;
      if (next < noted && items[next].id == id) {
        if (items[next].ready && e->disk_page == items[next].disk_page &&
            e->page_version == items[next].page_version)
          pre = pages + (size_t)next * t->page_size;
        next++;
      }
      uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
      if (mini && e->disk_page != BF_NO_PAGE) {
        if (node_has_dirty(mini_node(t, mini))) {
          bool split;
          struct flush_write *fw = &writes[pending];
          fw->id = id;
          fw->w.buf = NULL;
          rc = leaf_merge(t, id, e, pre, &split, pages ? &fw->w : NULL);
          if (rc == BF_NOMEM && pending &&
              atomic_load(&t->error) == BF_OK) {
            /* The pending merges hold a page buffer each: write them, then
            ** merge this leaf on its own.  A merge that failed without
            ** putting the tree in error changed nothing that matters (at
            ** most an unused mapping entry without a page). */
            rc = flush_write_batch(t, writes, pending, drop);
            pending = 0;
            if (rc == BF_OK) rc = leaf_merge(t, id, e, pre, &split, NULL);
            fw = NULL;
          }
          if (rc == BF_OK && fw && fw->w.buf) {
            pending++; /* latched until flush_write_batch */
            continue;
          }
          if (rc == BF_OK && split)
            mini_drop(t, e);
          else if (rc == BF_OK)
            mini_mark_clean(t, mini);
        }
        if (rc == BF_OK && drop) mini_drop(t, e);
      }
      bf_unlatch_exclusive(&e->latch);
    }
    /* The window's deferred writes, also after an error in it (they hold
    ** latches). */
    int wrc = flush_write_batch(t, writes, pending, drop);
    pending = 0;
    if (rc == BF_OK) rc = wrc;
    done = n;
  }
  bf_big_free(pages, (size_t)FLUSH_BATCH * t->page_size);
  return rc;
}

struct image_builder {
  bf_tree *t;
  struct bf_ckpt_image *image;
  uint64_t capacity;
  uint32_t *ids;
};

static int image_add(void *ctx, uint32_t leaf_id, const uint8_t *low,
                     uint32_t low_len, const uint8_t *high, uint32_t high_len) {
  struct image_builder *b = ctx;
  BF_UNUSED(high);
  BF_UNUSED(high_len);
  if (b->image->leaf_count == b->capacity) {
    uint64_t cap = b->capacity ? b->capacity * 2 : 1024;
    uint32_t *q = bf_big_realloc(b->ids, b->capacity * sizeof *q, cap * sizeof *q);
    if (!q) return BF_NOMEM;
    b->ids = q;
    b->capacity = cap;
  }
  struct bf_leaf_entry *e = bf_map_get(b->t->map, leaf_id);
  /* No latch: this runs under the inner structure mutex, which ranks below
  ** leaf latches (protocol 3).  disk_page is stable: the caller holds the
  ** checkpoint gate exclusive and has flushed every dirty record, so no
  ** merge can run; the gate's acquisition orders us after every writer. */
  b->ids[b->image->leaf_count] = leaf_id;
  return bf_ckpt_image_add(b->image, e->disk_page, low, low ? low_len : 0);
}

/* Remove the log a rotation left (its checkpoint is durable, or the log
** it continued in has been reset after a checkpoint covering both), and
** make the removal durable.  Best effort: a log left behind holds only
** records a durable checkpoint covers (replay passes over them), and
** stops the next rotation (bf_wal_rotate: BF_BUSY) until a checkpoint
** without one removes it. */
static void drop_prev_log(bf_tree *t) { (void)bf_wal_remove(t->wal_prev_path); }

/* Write a checkpoint of the tree's disk pages that covers the log below
** lsn.  Caller holds the gate exclusive and no merge can run (the caller
** is alone, or stop_merges): every leaf's disk page holds every write
** logged below lsn (flush_all made it so), and none changes meanwhile. */
static int write_image(bf_tree *t, uint64_t lsn) {
  struct bf_ckpt_image image;
  struct image_builder b = {t, &image, 0, NULL};
  bool protect = false;
  int rc;
  memset(&image, 0, sizeof image);
  rc = bf_inner_for_each_leaf(t->inner, image_add, &b);
  if (rc == BF_OK) {
    image.page_size = t->page_size;
    image.generation = t->generation;
    image.lsn = lsn;
    image.file_id = t->file_id;
    image.last_commit_id = atomic_load(&t->last_commit_id);
    bool uncertain = false;
    rc = bf_ckpt_write(t->io, t->space, &image, &uncertain);
    if (rc != BF_OK && uncertain) {
      /* The superblock may be on disk: its pages must be protected as a
      ** durable checkpoint's (merges that still run, a writer let through
      ** the gate before the error, copy them instead of overwriting). */
      set_error(t, rc);
      protect = true;
    }
  }
  if (rc == BF_OK) {
    /* The checkpoint is durable: its pages are now the ones to protect. */
    BF_COUNT(t, checkpoints, 1);
    t->generation = image.generation;
    protect = true;
  }
  if (protect) {
    for (uint64_t i = 0; i < image.leaf_count; i++) {
      struct bf_leaf_entry *e = bf_map_get(t->map, b.ids[i]);
      bf_latch_exclusive(&e->latch);
      e->flags |= BF_ENTRY_IN_CHECKPOINT;
      bf_unlatch_exclusive(&e->latch);
    }
  }
  bf_ckpt_image_free(&image);
  bf_big_free(b.ids, b.capacity * sizeof *b.ids);
  return rc;
}

/* Flush and write a checkpoint covering the whole log, then start the log
** over.  Caller holds the gate exclusive.
** closing: bf_close's last checkpoint: mini-pages are dropped as they are
** flushed and the buffer's memory is given back before the checkpoint
** image is built (so closing does not need the image's memory on top of a
** full buffer). */
static int checkpoint_locked(bf_tree *t, bool closing) {
  int rc = atomic_load(&t->error);
  if (rc != BF_OK) return BF_READONLY;
  /* Everything logged so far is in the tree (the gate is held exclusive:
  ** no append is under way), so the checkpoint covers the log up to here. */
  uint64_t lsn = t->wal ? bf_wal_end_lsn(t->wal) : 0;
  rc = flush_all(t, closing);
  if (rc == BF_OK && closing) bf_buf_discard(t->buf);
  if (rc == BF_OK) rc = write_image(t, lsn);
  if (rc == BF_OK && t->wal) {
    /* The log can start over (an error here is sticky in the log), and a
    ** rotated one is covered too. */
    rc = bf_wal_reset(t->wal, lsn);
    if (rc == BF_OK) drop_prev_log(t);
  }
  return rc;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
** bf_checkpoint (wait true), bf_checkpoint_nowait and bf_checkpoint_if_due
** (wait false).  One at a time (checkpoint_mutex; without wait, BF_BUSY
** when another is running or the gate is held exclusive).
**
** FUZZY (with a log): writers wait only while the image is written, not
** while leaves are flushed.
**   1. Gate exclusive, briefly: no append is under way, so the log's end
**      lsn is a transaction boundary and every transaction logged below it
**      is in the tree.  The log is rotated there (bf_wal_rotate): what
**      precedes lsn is durable in the renamed log, what follows goes to a
**      new one.
**   2. No gate: flush_all merges every dirty mini-page while writers go on.
**      Every leaf dirty at lsn is merged (or an eviction merged it), so
**      every disk page now holds every write logged below lsn; the writes
**      since may be on disk too, or still in mini-pages: the log from lsn
**      has them all, and replaying puts and deletes again over pages that
**      already hold them gives the same records.
**   3. Gate exclusive: no writer runs, and stop_merges stops evictions, so
**      no disk page changes.  The log is synced to its end: the pages may
**      hold writes logged after lsn, which must not outlive their log
**      records in a power loss (a transaction would survive in part).
**      write_image writes the image with lsn and the last commit id
**      (about 0.05 s against 0.4-0.6 s for the flush the classic form does
**      here, on YCSB-A with 4 threads).  Then the renamed log is removed.
** Recovery replays the renamed log (unless the checkpoint covers it
** wholly), then the current one, from the checkpoint's lsn, and replays
** every transaction up to the image's last commit id even past
** replay_limit, because the pages may hold part of it (tree_recover).
** After an image write of uncertain outcome (tree in error) the pages it
** names are flagged as a durable checkpoint's all the same (write_image).
**
** CLASSIC (no log, an empty log, synchronous OFF (the log is never
** synced), a renamed log still there, closing, recovery): flush_all
** without the gate, then checkpoint_locked under it: flush what turned
** dirty meanwhile, write the image, reset the log.  Correctness rests on
** the second phase alone; the first only shortens it.
**
** An error of flush_all that put the tree in its error state is returned
** at once; any other (no memory for a batch) is left to the second phase
** to meet again (classic) or returned (fuzzy: the next checkpoint
** retries; the renamed log stays until one succeeds, and meanwhile
** checkpoints are classic).
*/
/* Take the checkpoint gate exclusive: with wait, as long as it takes;
** without, only if one of `tries` attempts 50 us apart finds it free (a
** prepared transaction holds the gate for the moment its commit takes, but
** one whose commit waits for the caller would hold it for good).  Whether
** the gate was taken. */
static bool gate_take(bf_tree *t, bool wait, int tries) {
  if (wait) {
    bf_gate_exclusive(&t->checkpoint_gate);
    return true;
  }
  for (int i = 0; i < tries; i++) {
    if (i) {
      struct timespec ts = {0, 50000};
      nanosleep(&ts, NULL);
    }
    if (bf_gate_try_exclusive(&t->checkpoint_gate)) return true;
  }
  return false;
}

#ifdef BF_TESTING
void (*bf_testing_checkpoint_hook)(bf_tree *tree, int step);
#define CHECKPOINT_HOOK(t, step) \
  do { \
    if (bf_testing_checkpoint_hook) bf_testing_checkpoint_hook(t, step); \
  } while (0)
#else
#define CHECKPOINT_HOOK(t, step) ((void)0)
#endif

static int checkpoint_two_phase(bf_tree *t, bool wait) {
  int rc = atomic_load(&t->error);
  if (rc != BF_OK) return BF_READONLY;
  if (wait)
    pthread_mutex_lock(&t->checkpoint_mutex);
  else if (pthread_mutex_trylock(&t->checkpoint_mutex) != 0)
    return BF_BUSY;
  bool fuzzy = false;
  uint64_t lsn = 0;
  /* Without wait and the gate held, the classic form: its first phase runs
  ** and the second tries for the gate once.  An empty log is not rotated:
  ** nothing was written since the last checkpoint, so the classic form has
  ** nothing to merge under the gate.  With synchronous OFF the log is never
  ** synced, which the fuzzy form needs (below). */
  if (t->wal && t->opts.synchronous != BF_SYNC_OFF &&
      bf_wal_size(t->wal) > 0 && gate_take(t, wait, 1)) {
    fuzzy = bf_wal_rotate(t->wal, t->wal_path, t->wal_prev_path, &lsn) ==
            BF_OK;
    bf_gate_release(&t->checkpoint_gate);
  }
  if (fuzzy) CHECKPOINT_HOOK(t, 1);
  rc = flush_all(t, false);
  if (fuzzy && rc == BF_OK) CHECKPOINT_HOOK(t, 2);
  if (rc != BF_OK && (fuzzy || atomic_load(&t->error) != BF_OK)) {
    pthread_mutex_unlock(&t->checkpoint_mutex);
    return rc;
  }
  /* Most of the log the third step syncs, synced before the gate. */
  if (fuzzy) (void)bf_wal_sync(t->wal, bf_wal_end_lsn(t->wal));
  double start = now_seconds();
  /* A rotated log gives up only if the gate stays taken: the renamed log
  ** then stays until a checkpoint succeeds (and they are classic until). */
  bool held = gate_take(t, wait, fuzzy ? 2000 : 1);
  if (held && fuzzy) {
    stop_merges(t);
    rc = atomic_load(&t->error);
    if (rc != BF_OK) rc = BF_READONLY;
    /* The pages may hold writes logged after lsn (the flush ran beside the
    ** writers): their log records must be durable before an image names
    ** those pages, or a power loss could leave a transaction in part. */
    if (rc == BF_OK) rc = bf_wal_sync(t->wal, bf_wal_end_lsn(t->wal));
    if (rc == BF_OK) rc = write_image(t, lsn);
    atomic_store(&t->no_merge, false);
    bf_gate_release(&t->checkpoint_gate);
  } else if (held) {
    rc = checkpoint_locked(t, false);
    bf_gate_release(&t->checkpoint_gate);
  } else {
    rc = BF_BUSY;
  }
  BF_COUNT(t, checkpoint_stall_us,
           (uint64_t)((now_seconds() - start) * 1e6));
  if (rc == BF_OK && fuzzy) drop_prev_log(t);
  pthread_mutex_unlock(&t->checkpoint_mutex);
  /* The image's memory, given back outside the gate (a trim walks the
  ** heap: writers must not wait for it). */
  if (held) bf_release_free_memory();
  return rc;
}

int bf_checkpoint(bf_tree *t) { return checkpoint_two_phase(t, true); }

int bf_checkpoint_nowait(bf_tree *t) { return checkpoint_two_phase(t, false); }

int bf_checkpoint_if_due(bf_tree *t) {
  bool expect = false;
  if (!t->wal || bf_wal_size(t->wal) < t->opts.wal_size_limit) return BF_OK;
  if (!atomic_compare_exchange_strong(&t->checkpoint_running, &expect, true))
    return BF_OK; /* another thread is at it */
  int rc = checkpoint_two_phase(t, false);
  atomic_store(&t->checkpoint_running, false);
  return rc;
}

void bf_tree_maybe_checkpoint(bf_tree *t) {
  /* An error here is sticky in the tree or the log; the next write sees it. */
  if (t->opts.auto_checkpoint) (void)bf_checkpoint_if_due(t);
}

uint64_t bf_last_commit_id(bf_tree *t) { return atomic_load(&t->last_commit_id); }

void bf_recovery_info(bf_tree *t, bf_recovery *out) { *out = t->recovery; }

/* ------------------------------------------------------------------------
** Open and close.
*/
static void tree_free(bf_tree *t) {
  if (!t) return;
  if (t->inner) bf_inner_destroy(t->inner);
  if (t->map) bf_map_destroy(t->map);
  bf_sketch_destroy(t->sketch);
  if (t->buf) bf_buf_destroy(t->buf);
  if (t->space) bf_space_destroy(t->space);
  if (t->wal) bf_wal_close(t->wal);
  if (t->io) bf_io_close(t->io);
  bf_gate_destroy(&t->checkpoint_gate);
  pthread_mutex_destroy(&t->evict_batch_lock);
  pthread_mutex_destroy(&t->checkpoint_mutex);
  bf_free_aligned(t->evict_pages);
  free(t->path);
  free(t->wal_path);
  free(t->wal_prev_path);
  bf_free(t);
}

static int check_options(const bf_options *o, char **errmsg) {
  uint32_t ps = o->page_size;
  if (ps < 512 || ps > 32768 || (ps & (ps - 1))) {
    *errmsg = bf_mprintf("page_size %u is not a power of two from 512 to 32768",
                         ps);
    return BF_INVALID;
  }
  if (o->io_mode < BF_IO_AUTO || o->io_mode > BF_IO_PSYNC) {
    *errmsg = bf_mprintf("io_mode %d is not one of auto, uring, psync",
                         o->io_mode);
    return BF_INVALID;
  }
  if (o->direct_io < BF_DIRECT_AUTO || o->direct_io > BF_DIRECT_OFF) {
    *errmsg = bf_mprintf("direct_io %d is not one of auto, on, off",
                         o->direct_io);
    return BF_INVALID;
  }
  if (o->read_promote_percent > 100 || o->scan_promote_percent > 100) {
    *errmsg = bf_mprintf("promotion percentages must be 0..100");
    return BF_INVALID;
  }
  if (o->synchronous < BF_SYNC_OFF || o->synchronous > BF_SYNC_FULL) {
    *errmsg = bf_mprintf("synchronous %d is not one of off, normal, full",
                         o->synchronous);
    return BF_INVALID;
  }
  if (o->max_mini_divisor < 2 || o->max_mini_divisor > 64) {
    *errmsg = bf_mprintf("max_mini_divisor %u is not in 2..64",
                         o->max_mini_divisor);
    return BF_INVALID;
  }
  return BF_OK;
}

/* Size the tree for its page size (from the options or the file). */
static int tree_setup(bf_tree *t, uint32_t page_size, char **errmsg) {
  uint64_t min_buffer = 16ull * (page_size + 8);
  t->page_size = page_size;
  t->max_key = page_size / 8;
  t->max_record = page_size / 4 - BF_SLOT_SIZE;
  if (t->opts.buffer_size < min_buffer) {
    *errmsg = bf_mprintf("buffer_size %llu is below the minimum of %llu bytes "
                         "(16 pages of %u bytes)",
                         (unsigned long long)t->opts.buffer_size,
                         (unsigned long long)min_buffer, page_size);
    return BF_INVALID;
  }
  int rc = bf_buf_create(t->opts.buffer_size, page_size, &t->buf);
  if (rc != BF_OK) {
    *errmsg = bf_mprintf("cannot create the buffer: %s", bf_strerror(rc));
    return rc;
  }
  t->full_class = bf_buf_full_class(t->buf);
  /* bf_make_room's target: 1/256 of the buffer (a few hundred records'
  ** writes), at least two full pages, at most 256 KiB; and at most 1/16 of
  ** the buffer (a tiny one), so that the buffer still counts as full for
  ** copy-on-access (bf_buf_filling: within 10% of full). */
  uint64_t two_pages = 2 * (uint64_t)bf_buf_block_size(t->buf, t->full_class);
  t->room_target = t->opts.buffer_size / 256;
  if (t->room_target < two_pages) t->room_target = two_pages;
  if (t->room_target > 256 * 1024) t->room_target = 256 * 1024;
  if (t->room_target > t->opts.buffer_size / 16)
    t->room_target = t->opts.buffer_size / 16;
  t->evict_ahead = t->room_target / 4;
  uint32_t by_divisor =
      bf_buf_class_for(t->buf, page_size / t->opts.max_mini_divisor);
  uint32_t by_record =
      bf_buf_class_for(t->buf, BF_NODE_HEADER + page_size / 4);
  t->max_mini_class = by_divisor > by_record ? by_divisor : by_record;
  if (t->max_mini_class >= t->full_class) t->max_mini_class = t->full_class - 1;
  rc = bf_map_create(&t->map);
  if (rc == BF_OK && t->opts.read_admission)
    rc = bf_sketch_create(t->opts.buffer_size, SKETCH_FOOTPRINT, &t->sketch);
  if (rc != BF_OK) *errmsg = bf_mprintf("out of memory");
  return rc;
}

static uint32_t inner_node_size(uint32_t page_size) {
  return page_size > 4096 ? page_size : 4096;
}

/* A new file: one empty leaf and the first checkpoint. */
static uint64_t new_file_id(void) {
  uint64_t id = 0;
  if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id || id == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    id = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^
         ((uint64_t)getpid() << 16) ^ 0x9E3779B97F4A7C15ull;
  }
  return id;
}

static int tree_create(bf_tree *t) {
  uint32_t id;
  struct bf_leaf_entry *e;
  uint8_t *page = page_alloc(t);
  t->file_id = new_file_id();
  int rc = page ? bf_space_create(BF_FIRST_DATA_PAGE, &t->space) : BF_NOMEM;
  if (rc == BF_OK) rc = bf_map_add(t->map, &id, &e);
  if (rc == BF_OK)
    rc = bf_inner_create(inner_node_size(t->page_size), t->max_key, id,
                         &t->inner);
  if (rc == BF_OK) rc = bf_space_alloc(t->space, &e->disk_page);
  if (rc == BF_OK) {
    struct bf_leaf leaf;
    memset(page, 0, t->page_size);
    bf_leaf_init(page, t->page_size, NULL, 0, NULL, 0, &leaf);
    rc = write_page(t, page, e->disk_page);
  }
  bf_free_aligned(page);
  if (rc == BF_OK) rc = checkpoint_locked(t, false);
  return rc;
}

static int tree_load(bf_tree *t, uint64_t *ckpt_lsn, char **errmsg) {
  struct bf_ckpt_image image;
  uint32_t *ids = NULL;
  const uint8_t **lows = NULL;
  uint32_t *lens = NULL;
  int rc = bf_ckpt_load(t->io, &image, &t->space, errmsg);
  if (rc != BF_OK) return rc;
  t->generation = image.generation;
  t->file_id = image.file_id;
  *ckpt_lsn = image.lsn;
  atomic_store(&t->last_commit_id, image.last_commit_id);
  ids = calloc(image.leaf_count, sizeof *ids);
  lows = calloc(image.leaf_count, sizeof *lows);
  lens = calloc(image.leaf_count, sizeof *lens);
  if (!ids || !lows || !lens) rc = BF_NOMEM;
  for (uint64_t i = 0; rc == BF_OK && i < image.leaf_count; i++) {
    struct bf_leaf_entry *e;
    rc = bf_map_add(t->map, &ids[i], &e);
    if (rc == BF_OK) {
      e->disk_page = image.leaves[i].disk_page;
      e->flags = BF_ENTRY_IN_CHECKPOINT;
      lows[i] = image.leaves[i].low;
      lens[i] = image.leaves[i].low_len;
    }
  }
  if (rc == BF_OK)
    rc = bf_inner_bulk_load(inner_node_size(t->page_size), t->max_key,
                            (uint32_t)image.leaf_count, ids, lows, lens,
                            &t->inner);
  free(ids);
  free(lows);
  free(lens);
  bf_ckpt_image_free(&image);
  return rc;
}

static int replay_apply(void *ctx, int op, const uint8_t *key, uint32_t klen,
                        const uint8_t *value, uint32_t vlen) {
  bf_tree *t = ctx;
  if (klen > t->max_key || klen + vlen > t->max_record) return BF_CORRUPT_BKPT;
  return bf_tree_apply(t, op == BF_WAL_PUT ? BF_REC_INSERT : BF_REC_TOMBSTONE,
                       key, klen, value, vlen);
}

/* Keep a copy of a damaged log for the user (best effort). */
static bool copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
  char buf[65536];
  size_t n;
  bool ok = in && out;
  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
    ok = fwrite(buf, 1, n, out) == n;
  if (in) fclose(in);
  if (out && fclose(out) != 0) ok = false;
  return ok;
}

/*
** Replay the log a rotation left (wal_prev_path: the records below the
** current log's base, see checkpoint_two_phase) from ckpt_lsn into t, with
** replay limit `limit`.  BF_OK with *info filled (info->end_lsn: after its
** last valid record) and *base its first record's LSN, or an error with
** *errmsg set.
*/
static int replay_prev_log(bf_tree *t, uint64_t ckpt_lsn, uint64_t limit,
                           struct bf_wal_replay_info *info, uint64_t *base,
                           char **errmsg) {
  struct bf_wal *prev = NULL;
  int rc = bf_wal_open(t->wal_prev_path, t->file_id, ckpt_lsn, &prev, errmsg);
  if (rc != BF_OK) return rc;
  *base = bf_wal_base_lsn(prev);
  rc = bf_wal_replay(prev, ckpt_lsn, limit, replay_apply, t, info);
  if (rc != BF_OK)
    *errmsg = bf_mprintf("replaying the log %s failed: %s", t->wal_prev_path,
                         bf_strerror(rc));
  bf_wal_close(prev);
  return rc;
}

/*
** Open the log and replay what the checkpoint (at ckpt_lsn) does not hold:
** first the log a rotation left, if any, then the current one, which must
** go on exactly where the first ended.  When anything was replayed,
** skipped or damaged, or a rotated log is there, checkpoint at once (which
** resets the log and removes the rotated one), so the log never holds what
** the tree now has twice.
*/
static int tree_recover(bf_tree *t, uint64_t ckpt_lsn, bool existed,
                        char **errmsg) {
  struct bf_wal_replay_info info, first;
  double start = now_seconds();
  bool has_prev = existed && access(t->wal_prev_path, F_OK) == 0;
  uint64_t base = ckpt_lsn;
  /* A transaction the checkpoint says was applied (commit id up to its
  ** last_commit_id) may be in its pages in part (a fuzzy checkpoint's
  ** merges ran beside the writers): replay it whole, even past the
  ** caller's limit (which can only be below it when the caller's own
  ** commit was lost). */
  uint64_t limit = t->opts.replay_limit;
  uint64_t applied = atomic_load(&t->last_commit_id);
  if (applied > limit) limit = applied;
  int rc;
  memset(&first, 0, sizeof first);
  bool prev_live = false; /* has_prev, and the current log follows it */
  if (has_prev) {
    uint64_t prev_base = 0;
    rc = replay_prev_log(t, ckpt_lsn, limit, &first, &prev_base, errmsg);
    if (rc != BF_OK) return rc;
    /* A rotated log the checkpoint still needs starts at the checkpoint's
    ** lsn (the log was rotated from there, or reset there).  One that
    ** starts below and ends at or before it is wholly covered: a removal
    ** that did not last (a crash after the superblock, a lost directory
    ** sync).  Only removed (by the checkpoint below); the current log
    ** follows the checkpoint whatever that one holds or lacks. */
    if (prev_base < ckpt_lsn && first.end_lsn <= ckpt_lsn)
      memset(&first, 0, sizeof first);
    else
      prev_live = true;
    if (first.end_lsn > base) base = first.end_lsn;
  }
  rc = bf_wal_open(t->wal_path, t->file_id, base, &t->wal, errmsg);
  if (rc != BF_OK || !existed) return rc;
  memset(&info, 0, sizeof info);
  bool has_records = bf_wal_has_records(t->wal);
  if (prev_live && first.stop != BF_WAL_STOP_END && has_records) {
    /* The current log follows records that did not survive: applying it
    ** would skip transactions in the middle.  Not replayed; kept aside as
    ** damaged (below). */
    info.stop = BF_WAL_STOP_CORRUPT;
    snprintf(info.message, sizeof info.message,
             "the rotated log %s at LSN %llu; the log after it was not "
             "replayed", first.stop == BF_WAL_STOP_TORN ? "is torn" : "is damaged",
             (unsigned long long)first.end_lsn);
  } else if (prev_live && has_records &&
             bf_wal_base_lsn(t->wal) != first.end_lsn) {
    info.stop = BF_WAL_STOP_CORRUPT;
    snprintf(info.message, sizeof info.message,
             "the log starts at LSN %llu but the rotated log ends at %llu; "
             "not replayed",
             (unsigned long long)bf_wal_base_lsn(t->wal),
             (unsigned long long)first.end_lsn);
  } else {
    rc = bf_wal_replay(t->wal, ckpt_lsn, limit, replay_apply, t, &info);
    if (rc != BF_OK) {
      *errmsg = bf_mprintf("replaying the log %s failed: %s", t->wal_path,
                           bf_strerror(rc));
      return rc;
    }
    if (prev_live && info.stop == BF_WAL_STOP_END &&
        first.stop != BF_WAL_STOP_END) {
      info.stop = first.stop;
      snprintf(info.message, sizeof info.message, "%s", first.message);
    }
  }
  info.transactions += first.transactions;
  info.operations += first.operations;
  info.skipped += first.skipped;
  if (first.last_commit_id > info.last_commit_id)
    info.last_commit_id = first.last_commit_id;
  bf_recovery *r = &t->recovery;
  r->transactions = info.transactions;
  r->operations = info.operations;
  r->skipped = info.skipped;
  r->stop = info.stop;
  snprintf(r->message, sizeof r->message, "%s", info.message);
  if (info.stop == BF_WAL_STOP_CORRUPT) {
    /* The damaged log is kept, and with a rotated log both (replay may
    ** have stopped in the rotated one, and then the current one was not
    ** replayed); the checkpoint below removes the originals. */
    for (int i = has_prev ? 0 : 1; i < 2; i++) {
      const char *damaged = i == 0 ? t->wal_prev_path : t->wal_path;
      char *keep = bf_mprintf("%s.corrupt-%llu", damaged,
                              (unsigned long long)t->generation);
      char *text = keep && copy_file(damaged, keep)
                       ? bf_mprintf("%s; damaged log kept as %s", r->message,
                                    keep)
                       : NULL;
      if (text) snprintf(r->message, sizeof r->message, "%s", text);
      free(text);
      free(keep);
    }
  }
  bf_tree_note_commit(t, info.last_commit_id);
  /* Any record in the log, even one the checkpoint already covers (a crash
  ** between a checkpoint's superblock and the log's reset), means the log
  ** must be reset before it takes appends: checkpoint. */
  if (has_prev || info.end_lsn > ckpt_lsn || info.transactions ||
      info.skipped || info.stop != BF_WAL_STOP_END ||
      bf_wal_size(t->wal) > 0) {
    rc = checkpoint_locked(t, false);
    if (rc != BF_OK)
      *errmsg = bf_mprintf("checkpoint after log replay failed: %s",
                           bf_strerror(rc));
  }
  r->seconds = now_seconds() - start;
  return rc;
}

int bf_open(const char *path, const bf_options *opts_in, bf_tree **out,
            char **errmsg_out) {
  bf_options defaults;
  char *errmsg = NULL;
  bf_tree *t = NULL;
  uint64_t size = 0;
  int rc;

  *out = NULL;
  if (errmsg_out) *errmsg_out = NULL;
  if (!opts_in) {
    bf_options_init(&defaults);
    opts_in = &defaults;
  }
  if (!path) {
    rc = BF_INVALID;
    errmsg = bf_mprintf("no file name");
    goto fail;
  }
  rc = check_options(opts_in, &errmsg);
  if (rc != BF_OK) goto fail;
  t = bf_calloc(1, sizeof *t);
  if (!t) {
    rc = BF_NOMEM;
    goto fail;
  }
  t->opts = *opts_in;
  if (t->opts.seed) bf_random_seed(t->opts.seed);
  bf_gate_init(&t->checkpoint_gate);
  pthread_mutex_init(&t->evict_batch_lock, NULL);
  pthread_mutex_init(&t->checkpoint_mutex, NULL);
  rc = bf_io_open(path, opts_in->io_mode, opts_in->direct_io, opts_in->create,
                  &t->io, &errmsg);
  if (rc != BF_OK) goto fail;
  rc = bf_io_file_size(t->io, &size);
  if (rc != BF_OK) goto fail;
  t->path = bf_mprintf("%s", path);
  t->wal_path = bf_mprintf("%s" BF_WAL_SUFFIX, path);
  t->wal_prev_path = bf_mprintf("%s" BF_WAL_PREV_SUFFIX, path);
  if (!t->path || !t->wal_path || !t->wal_prev_path) {
    rc = BF_NOMEM;
    goto fail;
  }
  if (size == 0) {
    /* A new file: a log left beside it belongs to a file that is gone. */
    unlink(t->wal_path);
    unlink(t->wal_prev_path);
    rc = tree_setup(t, opts_in->page_size, &errmsg);
    if (rc == BF_OK) {
      rc = tree_create(t);
      /* Leave no half-made file behind: empty, it is created afresh next
      ** time; with partial contents but no superblock it would be refused
      ** as a foreign file. */
      if (rc != BF_OK) bf_io_truncate(t->io, 0);
    }
    if (rc == BF_OK && t->opts.wal) rc = tree_recover(t, 0, false, &errmsg);
  } else {
    uint32_t ps = 0;
    uint64_t ckpt_lsn = 0;
    rc = bf_ckpt_probe(t->io, &ps, &errmsg);
    if (rc == BF_OK) rc = tree_setup(t, ps, &errmsg);
    if (rc == BF_OK) rc = tree_load(t, &ckpt_lsn, &errmsg);
    /* Replay a log even when this open asks for none: it may hold
    ** committed writes. */
    bool existed = access(t->wal_path, F_OK) == 0 ||
                   access(t->wal_prev_path, F_OK) == 0;
    if (rc == BF_OK && (t->opts.wal || existed))
      rc = tree_recover(t, ckpt_lsn, existed, &errmsg);
    if (rc == BF_OK && !t->opts.wal && t->wal) {
      bf_wal_close(t->wal);
      t->wal = NULL;
      unlink(t->wal_path);
      unlink(t->wal_prev_path);
    }
  }
  if (rc != BF_OK) goto fail;
  bf_release_free_memory(); /* the checkpoint's keys, replay buffers */
  *out = t;
  return BF_OK;

fail:
  if (!errmsg) errmsg = bf_mprintf("%s", bf_strerror(rc));
  if (errmsg && path) {
    char *full = bf_mprintf("%s: %s", path, errmsg);
    if (full) {
      free(errmsg);
      errmsg = full;
    }
  }
  if (errmsg_out)
    *errmsg_out = errmsg;
  else
    free(errmsg);
  tree_free(t);
  return rc;
}

int bf_close(bf_tree *t) {
  if (!t) return BF_OK;
  bf_gate_exclusive(&t->checkpoint_gate);
  int rc = checkpoint_locked(t, true);
  bf_gate_release(&t->checkpoint_gate);
  /* Everything is in the data file: the log is no longer needed. */
  bool drop_log = rc == BF_OK && t->wal;
  if (t->wal) bf_wal_close(t->wal);
  t->wal = NULL;
  if (drop_log) unlink(t->wal_path);
  tree_free(t);
  return rc;
}

void bf_abandon(bf_tree *t) { tree_free(t); }

int bf_files_remove(const char *path, char **errmsg) {
  const char *suffix[3] = {"", BF_WAL_SUFFIX, BF_WAL_PREV_SUFFIX};
  int rc = BF_OK;
  *errmsg = NULL;
  for (int i = 0; i < 3 && rc == BF_OK; i++) {
    char *p = bf_mprintf("%s%s", path, suffix[i]);
    if (!p) {
      rc = BF_NOMEM;
    } else if (unlink(p) != 0 && errno != ENOENT) {
      *errmsg = bf_mprintf("cannot remove %s file %s: %s",
                           i ? "log" : "data", p, strerror(errno));
      rc = BF_IOERR;
    }
    free(p);
  }
  return rc;
}

int bf_files_rename(const char *from, const char *to, char **errmsg) {
  const char *suffix[3] = {"", BF_WAL_SUFFIX, BF_WAL_PREV_SUFFIX};
  char *src[3], *dst[3];
  struct stat st;
  int rc = BF_OK, done = 0;
  *errmsg = NULL;
  for (int i = 0; i < 3; i++) {
    src[i] = bf_mprintf("%s%s", from, suffix[i]);
    dst[i] = bf_mprintf("%s%s", to, suffix[i]);
    if (!src[i] || !dst[i]) rc = BF_NOMEM;
  }
  for (int i = 0; i < 3 && rc == BF_OK; i++) {
    if (stat(dst[i], &st) == 0) {
      *errmsg = bf_mprintf("cannot rename data file %s to %s: the target (or "
                           "its log %s) exists", from, to, dst[i]);
      rc = BF_INVALID;
    }
  }
  /* The data file must be there; a log may not be. */
  for (; done < 3 && rc == BF_OK; done++) {
    if (rename(src[done], dst[done]) != 0 && (done == 0 || errno != ENOENT)) {
      *errmsg = bf_mprintf("cannot rename %s file %s to %s: %s",
                           done ? "log" : "data", src[done], dst[done],
                           strerror(errno));
      rc = BF_IOERR;
      break;
    }
  }
  if (rc != BF_OK) {
    /* Keep the files together: undo what was renamed. */
    while (done-- > 0) (void)rename(dst[done], src[done]);
  } else {
    /* Make the renames durable (best effort: they are done). */
    (void)bf_wal_sync_dir(to);
    (void)bf_wal_sync_dir(from); /* another directory, maybe */
  }
  for (int i = 0; i < 3; i++) {
    free(src[i]);
    free(dst[i]);
  }
  return rc;
}

int bf_rename(bf_tree *t, const char *newpath, char **errmsg) {
  char *path = bf_mprintf("%s", newpath);
  char *wal = bf_mprintf("%s" BF_WAL_SUFFIX, newpath);
  char *prev = bf_mprintf("%s" BF_WAL_PREV_SUFFIX, newpath);
  int rc = BF_NOMEM;
  *errmsg = NULL;
  if (path && wal && prev) {
    /* No rotation or removal of a rotated log meanwhile. */
    pthread_mutex_lock(&t->checkpoint_mutex);
    rc = bf_files_rename(t->path, path, errmsg);
    if (rc == BF_OK) {
      char *swap;
      swap = t->path, t->path = path, path = swap;
      swap = t->wal_path, t->wal_path = wal, wal = swap;
      swap = t->wal_prev_path, t->wal_prev_path = prev, prev = swap;
    }
    pthread_mutex_unlock(&t->checkpoint_mutex);
  }
  free(path);
  free(wal);
  free(prev);
  return rc;
}

/* ------------------------------------------------------------------------
** Statistics.
*/
void bf_stats_get(bf_tree *t, bf_stats *s) {
  struct bf_buf_stats bs;
  memset(s, 0, sizeof *s);
  bf_buf_stats(t->buf, &bs);
  s->page_size = t->page_size;
  s->buffer_size = bf_buf_size(t->buf);
  s->buffer_used = bs.used;
  s->buffer_live = bs.live;
  s->size_class_count = bf_buf_class_count(t->buf);
  for (uint32_t c = 0; c < s->size_class_count && c < BF_MAX_SIZE_CLASSES; c++) {
    s->size_class_bytes[c] = bf_buf_class_size(t->buf, c);
    s->mini_pages[c] = bs.blocks[c];
  }
  s->full_page_minis = bs.blocks[t->full_class];
  s->leaf_pages = bf_map_count(t->map);
  s->inner_nodes = bf_inner_node_count(t->inner);
  s->tree_height = bf_inner_height(t->inner);
  s->inner_bytes = bf_inner_bytes(t->inner);
  s->mapping_bytes = bf_map_bytes(t->map);
  s->sketch_bytes = bf_sketch_bytes(t->sketch);
  s->file_pages = bf_space_file_pages(t->space);
  s->free_pages = bf_space_free_pages(t->space);
#define LOAD(f) s->f = atomic_load_explicit(&t->count.f, memory_order_relaxed)
  LOAD(cache_hits);
  LOAD(cache_misses);
  LOAD(leaf_reads);
  LOAD(leaf_writes);
  LOAD(bytes_read);
  LOAD(bytes_written);
  LOAD(merges);
  LOAD(splits);
  LOAD(evictions);
  LOAD(copy_on_access);
  LOAD(record_promotions);
  LOAD(phantoms);
  LOAD(admissions_refused);
  LOAD(page_promotions);
  LOAD(warm_fills);
  LOAD(page_shrinks);
  LOAD(read_ahead_leaves);
  LOAD(read_ahead_dropped);
  LOAD(mini_grows);
  LOAD(commits);
  LOAD(checkpoints);
  LOAD(checkpoint_stall_us);
#undef LOAD
  s->buffer_retired = bf_buf_retired(t->buf);
  s->wal_bytes = t->wal ? bf_wal_size(t->wal) : 0;
  s->inner_splits = 0;
  s->io_mode = (uint64_t)bf_io_mode(t->io);
  s->direct_io = bf_io_direct(t->io);
}

/* ------------------------------------------------------------------------
** bf_check.
*/
struct check_leaf_info {
  uint32_t id;
  uint32_t low_len, high_len;
  uint8_t *low, *high; /* NULL = infinite */
};

struct check_state {
  bf_tree *t;
  uint8_t *page;
  char *err;
  struct check_leaf_info *leaves;
  uint64_t count, capacity;
};

static uint8_t *dup_key(const uint8_t *k, uint32_t len) {
  if (!k) return NULL;
  uint8_t *p = malloc(len + 1);
  if (p && len) memcpy(p, k, len);
  return p;
}

/* Collect the leaves under the structure mutex; they are checked after it
** is released, because leaf latches rank above it (protocol 3). */
static int check_collect(void *ctx, uint32_t leaf_id, const uint8_t *low,
                         uint32_t low_len, const uint8_t *high,
                         uint32_t high_len) {
  struct check_state *c = ctx;
  if (c->count == c->capacity) {
    uint64_t cap = c->capacity ? c->capacity * 2 : 256;
    struct check_leaf_info *p = realloc(c->leaves, cap * sizeof *p);
    if (!p) return BF_NOMEM;
    c->leaves = p;
    c->capacity = cap;
  }
  struct check_leaf_info *l = &c->leaves[c->count++];
  l->id = leaf_id;
  l->low_len = low_len;
  l->high_len = high_len;
  l->low = dup_key(low, low_len);
  l->high = dup_key(high, high_len);
  if ((low && !l->low) || (high && !l->high)) return BF_NOMEM;
  return BF_OK;
}

static bool fence_equal(const uint8_t *a, uint32_t alen, bool ainf,
                        const uint8_t *b, uint32_t blen, bool binf) {
  if (ainf || binf) return ainf == binf;
  return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static int check_leaf(struct check_state *c, uint32_t leaf_id,
                      const uint8_t *low, uint32_t low_len,
                      const uint8_t *high, uint32_t high_len) {
  bf_tree *t = c->t;
  struct bf_leaf_entry *e = bf_map_get(t->map, leaf_id);
  struct bf_leaf leaf;
  char err[160];
  int rc;
  bf_latch_shared(&e->latch);
  rc = bf_io_read(t->io, c->page, t->page_size, e->disk_page * t->page_size);
  if (rc != BF_OK) {
    c->err = bf_mprintf("leaf %u: cannot read page %llu: %s", leaf_id,
                        (unsigned long long)e->disk_page, bf_strerror(rc));
    goto out;
  }
  rc = bf_leaf_verify(c->page, t->page_size, e->disk_page, &leaf, err,
                      sizeof err);
  if (rc != BF_OK) {
    c->err = bf_mprintf("leaf %u (page %llu): %s", leaf_id,
                        (unsigned long long)e->disk_page, err);
    goto out;
  }
  if (!fence_equal(leaf.low, leaf.low_len, leaf.low == NULL, low, low_len,
                   low == NULL) ||
      !fence_equal(leaf.high, leaf.high_len, leaf.high == NULL, high, high_len,
                   high == NULL)) {
    rc = BF_CORRUPT;
    c->err = bf_mprintf("leaf %u (page %llu): fences differ from the inner "
                        "nodes",
                        leaf_id, (unsigned long long)e->disk_page);
    goto out;
  }
  uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
  if (mini) {
    if (bf_buf_node_leaf(mini) != leaf_id ||
        bf_buf_node_state(mini) != BF_BLOCK_READY) {
      rc = BF_CORRUPT;
      c->err = bf_mprintf("leaf %u: its mini-page block belongs to leaf %u "
                          "or is not ready",
                          leaf_id, bf_buf_node_leaf(mini));
      goto out;
    }
    if (is_full_page(t, mini)) {
      struct bf_leaf fl;
      bf_leaf_view(mini, t->page_size, &fl);
      rc = bf_node_check(fl.node, bf_node_size(fl.node), err, sizeof err);
      if (rc == BF_OK &&
          (!fence_equal(fl.low, fl.low_len, fl.low == NULL, low, low_len,
                        low == NULL) ||
           !fence_equal(fl.high, fl.high_len, fl.high == NULL, high, high_len,
                        high == NULL))) {
        rc = BF_CORRUPT;
        snprintf(err, sizeof err, "full-page mini-page fences differ");
      }
    } else {
      rc = bf_node_check(mini, bf_node_size(mini), err, sizeof err);
      uint32_t n = rc == BF_OK ? bf_node_count(mini) : 0;
      for (uint32_t i = 0; i < n && rc == BF_OK; i++) {
        struct bf_record r;
        bf_node_record(mini, i, &r);
        if (!bf_leaf_contains(&leaf, r.key, r.key_len)) {
          rc = BF_CORRUPT;
          snprintf(err, sizeof err, "mini-page record %u outside the fences",
                   i);
        }
      }
    }
    if (rc != BF_OK) {
      c->err = bf_mprintf("leaf %u mini-page: %s", leaf_id, err);
      goto out;
    }
  }
out:
  bf_unlatch_shared(&e->latch);
  return rc;
}

int bf_check(bf_tree *t, char **errmsg) {
  char err[200];
  struct check_state c;
  int rc;
  memset(&c, 0, sizeof c);
  c.t = t;
  if (errmsg) *errmsg = NULL;
  rc = bf_inner_check(t->inner, err, sizeof err);
  if (rc != BF_OK) {
    c.err = bf_mprintf("inner nodes: %s", err);
    goto out;
  }
  c.page = page_alloc(t);
  if (!c.page) {
    rc = BF_NOMEM;
    goto out;
  }
  rc = bf_inner_for_each_leaf(t->inner, check_collect, &c);
  for (uint64_t i = 0; rc == BF_OK && i < c.count; i++) {
    struct check_leaf_info *l = &c.leaves[i];
    rc = check_leaf(&c, l->id, l->low, l->low_len, l->high, l->high_len);
  }
  if (rc == BF_OK) {
    rc = bf_buf_check(t->buf, err, sizeof err);
    if (rc != BF_OK) c.err = bf_mprintf("buffer: %s", err);
  }
  if (rc == BF_OK && c.count != bf_map_count(t->map)) {
    /* Leaves that were created but never published (a failed split) are
    ** allowed only when they hold no page. */
    uint32_t n = bf_map_count(t->map);
    uint64_t with_page = 0;
    for (uint32_t id = 0; id < n; id++)
      with_page += bf_map_get(t->map, id)->disk_page != BF_NO_PAGE;
    if (with_page != c.count) {
      rc = BF_CORRUPT;
      c.err = bf_mprintf("%llu leaves reachable, %llu with pages",
                         (unsigned long long)c.count,
                         (unsigned long long)with_page);
    }
  }
out:
  for (uint64_t i = 0; i < c.count; i++) {
    free(c.leaves[i].low);
    free(c.leaves[i].high);
  }
  free(c.leaves);
  bf_free_aligned(c.page);
  if (rc != BF_OK && errmsg) *errmsg = c.err ? c.err : bf_mprintf("%s", bf_strerror(rc));
  else free(c.err);
  return rc;
}
