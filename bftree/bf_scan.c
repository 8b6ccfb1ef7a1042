/*
** bf_scan.c: range cursors.
**
** A cursor never holds a latch between calls.  It fills a BATCH with the
** live records of one leaf that fall inside its range (the leaf page
** overlaid by the mini-page, or the full-page mini-page alone), copied out
** under the leaf's shared latch, and remembers where the next leaf starts:
**
**   ascending:  the leaf's high fence: the next batch is the leaf holding it
**   descending: the leaf's low fence: the next batch is the leaf holding the
**               keys just below it (BF_FIND_BEFORE)
**
** Leaves only split, so whatever the leaf boundaries are when the next batch
** is loaded, every key between the fence and the range end is found there
** or after it: no key present throughout is skipped, none is returned twice.
** Empty leaves are passed over in a loop (never recursion).
**
** A scan reads leaf pages but never writes: with probability
** scan_promote_percent a leaf read from disk becomes a full-page mini-page
** (bf_tree_promote_page), which later scans read from memory.
**
** READ-AHEAD.  When a leaf must come from disk and the scan will probably
** need the leaves after it (bf_cursor_hint, or a scan that has already read
** two leaves from disk), the cursor finds the next leaves in the pinned
** inner nodes (their fences come from the separators), notes the disk page
** of each that has no full-page mini-page (under a try-latch: never waiting
** while it holds the current leaf's latch), and reads them together with
** the current leaf in one batch (bf_io_read_batch: parallel with io_uring).
** The disk page and page_version of each are noted under its latch; a
** leaf's page is written only under its exclusive latch, after its version
** is bumped (leaf_merge).  A read-ahead page is used later, under that
** leaf's latch, only if the leaf still has that disk page and version: then
** no write of the leaf began after the noting, none was in flight then, and
** the bytes read are its current page.  Otherwise the page is dropped and
** the leaf read again.  Pages are verified (CRC, structure) when used, like
** any read.
**
** Invariants:
**   1. items[0..count) are ascending and inside [lower, upper].
**   2. pos indexes the current item; valid == (pos < count).
**   3. When `more` is false no later leaf can hold a key in range.
*/
#include "bf_int.h"

#include <stdlib.h>

#define READAHEAD_MAX 8 /* leaves read ahead in one batch */

struct scan_item {
  uint32_t key_off, key_len, value_off, value_len;
};

struct key_copy {
  uint8_t *data;
  uint32_t len;
  uint32_t cap;
  bool present;  /* false: unbounded / infinite */
  bool inclusive;
};

struct bf_cursor {
  bf_tree *tree;
  bf_txn *txn;                 /* overlay its writes; NULL for none */
  bool descending;
  struct key_copy lower, upper;
  struct key_copy next;        /* fence where the next batch starts */
  bool more;
  /* The batch. */
  struct scan_item *items;
  uint32_t count, items_cap;
  uint32_t pos;
  bool valid;
  uint8_t *data;
  size_t data_len, data_cap;
  uint8_t *page;               /* leaf page I/O buffer */
  /* Second batch, for merging a transaction's writes (swapped with the
  ** first). */
  struct scan_item *items2;
  uint32_t items2_cap;
  uint8_t *data2;
  size_t data2_cap;
  uint8_t *key_buf;            /* one full key (max key size) */
  /* Read-ahead (see READ-AHEAD). */
  uint64_t hint_rows;          /* bf_cursor_hint: records wanted per seek */
  uint64_t rows_seen;          /* records batched since the seek */
  uint32_t disk_loads;         /* leaves read from disk since the seek */
  uint8_t *ra_pages;           /* READAHEAD_MAX pages (aligned), lazily */
  uint8_t *ra_keys;            /* 3 keys of max_key + 1 bytes, lazily */
  struct ra_slot {
    uint32_t leaf_id;
    uint64_t disk_page;
    uint32_t page_version;     /* the leaf's, when noted */
    bool ready;                /* read, not yet used */
  } ra[READAHEAD_MAX];
  uint32_t ra_count;
};

static int key_set(struct key_copy *k, const void *data, size_t len,
                   bool inclusive) {
  if (len + 1 > k->cap) {
    uint8_t *p = realloc(k->data, len + 1);
    if (!p) return BF_NOMEM;
    k->data = p;
    k->cap = (uint32_t)len + 1;
  }
  if (len) memcpy(k->data, data, len);
  k->len = (uint32_t)len;
  k->present = true;
  k->inclusive = inclusive;
  return BF_OK;
}

int bf_cursor_open(bf_tree *t, bf_cursor **out) {
  bf_cursor *c = bf_calloc(1, sizeof *c);
  *out = NULL;
  if (!c) return BF_NOMEM;
  c->tree = t;
  c->page = bf_malloc_aligned(4096, t->page_size);
  c->key_buf = bf_malloc(t->max_key + 1);
  if (!c->page || !c->key_buf) {
    bf_free_aligned(c->page);
    bf_free(c->key_buf);
    bf_free(c);
    return BF_NOMEM;
  }
  atomic_fetch_add(&t->open_cursors, 1);
  *out = c;
  return BF_OK;
}

int bf_cursor_open_txn(bf_tree *t, bf_txn *txn, bf_cursor **out) {
  int rc = bf_cursor_open(t, out);
  if (rc == BF_OK) (*out)->txn = txn;
  return rc;
}

void bf_cursor_close(bf_cursor *c) {
  if (!c) return;
  atomic_fetch_sub(&c->tree->open_cursors, 1);
  free(c->lower.data);
  free(c->upper.data);
  free(c->next.data);
  free(c->items);
  free(c->data);
  free(c->items2);
  free(c->data2);
  bf_free_aligned(c->page);
  bf_free_aligned(c->ra_pages);
  bf_free(c->ra_keys);
  bf_free(c->key_buf);
  bf_free(c);
}

void bf_cursor_hint(bf_cursor *c, uint64_t rows) { c->hint_rows = rows; }

/* Is key above the lower bound / below the upper bound? */
static bool above_lower(const bf_cursor *c, const uint8_t *key, uint32_t len) {
  if (!c->lower.present) return true;
  int r = bf_key_compare(key, len, c->lower.data, c->lower.len);
  return r > 0 || (r == 0 && c->lower.inclusive);
}

static bool below_upper(const bf_cursor *c, const uint8_t *key, uint32_t len) {
  if (!c->upper.present) return true;
  int r = bf_key_compare(key, len, c->upper.data, c->upper.len);
  return r < 0 || (r == 0 && c->upper.inclusive);
}

static int batch_add(bf_cursor *c, const uint8_t *prefix, uint32_t prefix_len,
                     const uint8_t *key, uint32_t key_len,
                     const uint8_t *value, uint32_t value_len) {
  uint32_t full = prefix_len + key_len;
  if (c->count == c->items_cap) {
    uint32_t cap = c->items_cap ? c->items_cap * 2 : 128;
    struct scan_item *p = realloc(c->items, cap * sizeof *p);
    if (!p) return BF_NOMEM;
    c->items = p;
    c->items_cap = cap;
  }
  if (c->data_len + full + value_len > c->data_cap) {
    size_t cap = c->data_cap ? c->data_cap : 8192;
    while (cap < c->data_len + full + value_len) cap *= 2;
    uint8_t *p = realloc(c->data, cap);
    if (!p) return BF_NOMEM;
    c->data = p;
    c->data_cap = cap;
  }
  struct scan_item *it = &c->items[c->count++];
  it->key_off = (uint32_t)c->data_len;
  it->key_len = full;
  if (prefix_len) memcpy(c->data + c->data_len, prefix, prefix_len);
  if (key_len) memcpy(c->data + c->data_len + prefix_len, key, key_len);
  c->data_len += full;
  it->value_off = (uint32_t)c->data_len;
  it->value_len = value_len;
  if (value_len) memcpy(c->data + c->data_len, value, value_len);
  c->data_len += value_len;
  return BF_OK;
}

/* Add a record if it is in range. key is the stored key (after prefix). */
static int consider(bf_cursor *c, const struct bf_leaf *leaf,
                    const uint8_t *key, uint32_t key_len,
                    const uint8_t *value, uint32_t value_len) {
  const uint8_t *prefix = leaf && leaf->prefix_len
                              ? (leaf->low ? leaf->low : leaf->high)
                              : NULL;
  uint32_t plen = prefix ? leaf->prefix_len : 0;
  const uint8_t *full = key;
  if (plen) {
    if (plen + key_len > c->tree->max_key) return BF_CORRUPT_BKPT;
    memcpy(c->key_buf, prefix, plen);
    memcpy(c->key_buf + plen, key, key_len);
    full = c->key_buf;
  }
  if (!above_lower(c, full, plen + key_len) ||
      !below_upper(c, full, plen + key_len))
    return BF_OK;
  return batch_add(c, prefix, plen, key, key_len, value, value_len);
}

/* Collect a leaf's live records in range: page (may be NULL) overlaid by
** the partial mini-page `mini` (may be NULL), or a full-page mini `full`. */
static int collect(bf_cursor *c, const struct bf_leaf *page_leaf,
                   const uint8_t *mini) {
  int rc = BF_OK;
  const uint8_t *pnode = page_leaf->node;
  uint32_t np = bf_node_count(pnode), nm = mini ? bf_node_count(mini) : 0;
  uint32_t i = 0, j = 0;
  struct bf_record pr, mr;
  const uint8_t *pfull = NULL;
  uint32_t pfull_len = 0;
  const uint8_t *prefix = page_leaf->prefix_len
                              ? (page_leaf->low ? page_leaf->low : page_leaf->high)
                              : NULL;
  if (!mini) {
    for (i = 0; i < np && rc == BF_OK; i++) {
      bf_node_record(pnode, i, &pr);
      if (pr.type == BF_REC_TOMBSTONE || pr.type == BF_REC_PHANTOM) continue;
      rc = consider(c, page_leaf, pr.key, pr.key_len, pr.value, pr.value_len);
    }
    return rc;
  }
  /* Merge-join: page keys carry a prefix, mini keys are full. */
  while (rc == BF_OK && (i < np || j < nm)) {
    int cmp;
    if (i < np) {
      bf_node_record(pnode, i, &pr);
      /* A verified page may still hold a key longer than max_key. */
      if (page_leaf->prefix_len + pr.key_len > c->tree->max_key)
        return BF_CORRUPT_BKPT;
      if (page_leaf->prefix_len) {
        memcpy(c->key_buf, prefix, page_leaf->prefix_len);
        memcpy(c->key_buf + page_leaf->prefix_len, pr.key, pr.key_len);
        pfull = c->key_buf;
      } else {
        pfull = pr.key;
      }
      pfull_len = page_leaf->prefix_len + pr.key_len;
    }
    if (j < nm) bf_node_record(mini, j, &mr);
    if (i >= np)
      cmp = 1;
    else if (j >= nm)
      cmp = -1;
    else
      cmp = bf_key_compare(pfull, pfull_len, mr.key, mr.key_len);
    if (cmp < 0) {
      rc = consider(c, page_leaf, pr.key, pr.key_len, pr.value, pr.value_len);
      i++;
      continue;
    }
    if (mr.type == BF_REC_INSERT) {
      rc = consider(c, NULL, mr.key, mr.key_len, mr.value, mr.value_len);
    } else if (mr.type == BF_REC_CACHE && cmp == 0) {
      rc = consider(c, page_leaf, pr.key, pr.key_len, pr.value, pr.value_len);
    }
    j++;
    if (cmp == 0) i++;
  }
  return rc;
}

/* ------------------------------------------------------------------------
** Overlaying a transaction's writes on a batch.
**
** The tree's records of the batch are moved to the second buffer
** (items2/data2, old_count of them); the first is rebuilt by merging them
** with the write set's entries: a put replaces or adds, a delete drops.
*/
struct overlay {
  bf_cursor *c;
  uint32_t next;       /* next old item to merge */
  uint32_t old_count;
};

/* Append old items [o->next, upto). */
static int overlay_copy_old(struct overlay *o, uint32_t upto) {
  bf_cursor *c = o->c;
  int rc = BF_OK;
  for (; o->next < upto && rc == BF_OK; o->next++) {
    const struct scan_item *it = &c->items2[o->next];
    rc = batch_add(c, NULL, 0, c->data2 + it->key_off, it->key_len,
                   c->data2 + it->value_off, it->value_len);
  }
  return rc;
}

static int overlay_visit(void *ctx, int op, const uint8_t *key, uint32_t klen,
                         const uint8_t *value, uint32_t vlen) {
  struct overlay *o = ctx;
  bf_cursor *c = o->c;
  uint32_t upto = o->next;
  int cmp = 1;
  while (upto < o->old_count) {
    const struct scan_item *it = &c->items2[upto];
    cmp = bf_key_compare(c->data2 + it->key_off, it->key_len, key, klen);
    if (cmp >= 0) break;
    upto++;
  }
  int rc = overlay_copy_old(o, upto);
  if (rc != BF_OK) return rc;
  if (o->next < o->old_count && cmp == 0) o->next++; /* replaced or deleted */
  if (op == BF_WAL_PUT) rc = batch_add(c, NULL, 0, key, klen, value, vlen);
  return rc;
}

static void swap_batches(bf_cursor *c) {
  struct scan_item *items = c->items;
  uint32_t items_cap = c->items_cap;
  uint8_t *data = c->data;
  size_t data_cap = c->data_cap;
  c->items = c->items2;
  c->items_cap = c->items2_cap;
  c->data = c->data2;
  c->data_cap = c->data2_cap;
  c->items2 = items;
  c->items2_cap = items_cap;
  c->data2 = data;
  c->data2_cap = data_cap;
}

/* Merge the transaction's writes whose keys lie in both this leaf's range
** and the cursor's range into the batch. */
static int overlay_txn(bf_cursor *c, const struct bf_leaf *leaf) {
  struct bf_wset *w = bf_txn_wset(c->txn);
  if (bf_wset_count(w) == 0) return BF_OK;
  /* Lower bound: the larger of the leaf's low fence and the cursor's. */
  const uint8_t *lo = leaf->low;
  uint32_t lo_len = leaf->low_len;
  bool lo_incl = true;
  if (c->lower.present &&
      (!lo || bf_key_compare(c->lower.data, c->lower.len, lo, lo_len) >= 0)) {
    lo = c->lower.data;
    lo_len = c->lower.len;
    lo_incl = c->lower.inclusive;
  }
  /* Upper bound: the smaller of the leaf's high fence and the cursor's. */
  const uint8_t *hi = leaf->high;
  uint32_t hi_len = leaf->high_len;
  bool hi_incl = false;
  if (c->upper.present &&
      (!hi || bf_key_compare(c->upper.data, c->upper.len, hi, hi_len) < 0)) {
    hi = c->upper.data;
    hi_len = c->upper.len;
    hi_incl = c->upper.inclusive;
  }
  struct overlay o = {c, 0, c->count};
  swap_batches(c);
  c->count = 0;
  c->data_len = 0;
  int rc = bf_wset_range(w, lo ? lo : (const uint8_t *)"", lo_len,
                         lo ? lo_incl : true, hi, hi_len, hi_incl,
                         overlay_visit, &o);
  if (rc == BF_OK) rc = overlay_copy_old(&o, o.old_count);
  return rc;
}

/* Remember the fence where the next batch starts, and whether one may hold
** keys in range (invariant 3). */
static int set_next(bf_cursor *c, const struct bf_leaf *leaf) {
  if (!c->descending) {
    if (!leaf->high) {
      c->more = false;
      return BF_OK;
    }
    int rc = key_set(&c->next, leaf->high, leaf->high_len, true);
    if (rc != BF_OK) return rc;
    if (c->upper.present) {
      int r = bf_key_compare(leaf->high, leaf->high_len, c->upper.data,
                             c->upper.len);
      c->more = r < 0 || (r == 0 && c->upper.inclusive);
    } else {
      c->more = true;
    }
  } else {
    if (!leaf->low) {
      c->more = false;
      return BF_OK;
    }
    int rc = key_set(&c->next, leaf->low, leaf->low_len, true);
    if (rc != BF_OK) return rc;
    if (c->lower.present)
      c->more = bf_key_compare(c->lower.data, c->lower.len, leaf->low,
                               leaf->low_len) < 0;
    else
      c->more = true;
  }
  return BF_OK;
}

/* ------------------------------------------------------------------------
** Read-ahead.
*/

/* How many leaves after the current one to read with it. */
static uint32_t ra_window(const bf_cursor *c) {
  uint64_t w;
  if (c->hint_rows) {
    if (c->rows_seen >= c->hint_rows) return 0;
    uint64_t per = atomic_load_explicit(&c->tree->scan_leaf_records,
                                        memory_order_relaxed);
    if (per == 0) per = c->tree->page_size / 128;
    if (per == 0) per = 1;
    uint64_t left = c->hint_rows - c->rows_seen;
    /* A seek lands mid-leaf: its first leaf counts as half. */
    if (c->rows_seen == 0) left += per / 2;
    w = (left + per - 1) / per; /* leaves, this one included */
    w = w ? w - 1 : 0;
  } else {
    w = c->disk_loads == 0 ? 0
        : c->disk_loads > 4 ? READAHEAD_MAX
                            : 1u << (c->disk_loads - 1);
  }
  return w > READAHEAD_MAX ? READAHEAD_MAX : (uint32_t)w;
}

/* Note up to w leaves after leaf_id (found by key, mode) in the scan's
** direction whose pages must come from disk, in c->ra.  Best effort: stops
** at the range's end, at a leaf whose latch is taken, or on any error. */
static void ra_plan(bf_cursor *c, uint32_t leaf_id, const uint8_t *key,
                    uint32_t key_len, int mode, uint32_t w) {
  bf_tree *t = c->tree;
  uint32_t kcap = t->max_key + 1;
  c->ra_count = 0;
  if (!c->ra_keys) {
    c->ra_keys = bf_malloc(3 * (size_t)kcap);
    if (!c->ra_keys) return;
  }
  uint8_t *kbuf = c->ra_keys;
  struct bf_inner_path path;
  memset(&path, 0, sizeof path);
  path.low = c->ra_keys + kcap;
  path.high = c->ra_keys + 2 * (size_t)kcap;
  if (bf_inner_find(t->inner, key, key_len, mode | BF_FIND_FENCES, &path) !=
          BF_OK ||
      path.leaf_id != leaf_id)
    return;
  for (uint32_t seen = 0; seen < w; seen++) {
    if (!c->descending) {
      if (path.high_inf) return;
      if (c->upper.present) {
        int r = bf_key_compare(path.high, path.high_len, c->upper.data,
                               c->upper.len);
        if (r > 0 || (r == 0 && !c->upper.inclusive)) return;
      }
      key_len = path.high_len;
      memcpy(kbuf, path.high, key_len);
      mode = BF_FIND_KEY;
    } else {
      if (path.low_inf) return;
      if (c->lower.present &&
          bf_key_compare(path.low, path.low_len, c->lower.data,
                         c->lower.len) <= 0)
        return;
      key_len = path.low_len;
      memcpy(kbuf, path.low, key_len);
      mode = BF_FIND_BEFORE;
    }
    if (bf_inner_find(t->inner, kbuf, key_len, mode | BF_FIND_FENCES, &path) !=
        BF_OK)
      return;
    struct bf_leaf_entry *e = bf_map_get(t->map, path.leaf_id);
    if (!bf_try_latch_shared(&e->latch)) return;
    uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
    if (!mini || bf_buf_node_class(mini) != t->full_class) {
      c->ra[c->ra_count].leaf_id = path.leaf_id;
      c->ra[c->ra_count].disk_page = e->disk_page;
      c->ra[c->ra_count].page_version = e->page_version;
      c->ra[c->ra_count].ready = false;
      c->ra_count++;
    }
    bf_unlatch_shared(&e->latch);
  }
}

/* Read the latched leaf e (found by key, mode) into c->page, with the
** leaves after it that the scan will probably need into c->ra_pages. */
static int read_leaf_ahead(bf_cursor *c, uint32_t leaf_id,
                           struct bf_leaf_entry *e, const uint8_t *key,
                           uint32_t key_len, int mode, struct bf_leaf *leaf) {
  bf_tree *t = c->tree;
  uint32_t w = ra_window(c);
  c->disk_loads++;
  c->ra_count = 0;
  if (w && !c->ra_pages)
    c->ra_pages = bf_malloc_aligned(4096, (size_t)READAHEAD_MAX * t->page_size);
  if (w && c->ra_pages) ra_plan(c, leaf_id, key, key_len, mode, w);
  if (c->ra_count == 0) return bf_tree_read_leaf(t, e, c->page, leaf);

  struct bf_io_request reqs[READAHEAD_MAX + 1];
  uint32_t n = c->ra_count + 1;
  reqs[0].buf = c->page;
  reqs[0].len = t->page_size;
  reqs[0].offset = e->disk_page * t->page_size;
  for (uint32_t i = 0; i < c->ra_count; i++) {
    reqs[i + 1].buf = c->ra_pages + (size_t)i * t->page_size;
    reqs[i + 1].len = t->page_size;
    reqs[i + 1].offset = c->ra[i].disk_page * t->page_size;
  }
  bf_io_read_batch(t->io, reqs, n);
  for (uint32_t i = 0; i < n; i++) {
    if (reqs[i].status != BF_OK) continue;
    BF_COUNT(t, leaf_reads, 1);
    BF_COUNT(t, bytes_read, t->page_size);
    if (i) {
      c->ra[i - 1].ready = true;
      BF_COUNT(t, read_ahead_leaves, 1);
    }
  }
  if (reqs[0].status != BF_OK) {
    c->ra_count = 0;
    return reqs[0].status;
  }
  return bf_tree_verify_leaf(t, e, c->page, leaf);
}

/* The latched leaf's page from the read-ahead batch, into c->page: BF_OK,
** BF_NOTFOUND (not read ahead, or no longer current: read it), or the
** page's verification error. */
static int ra_take(bf_cursor *c, uint32_t leaf_id, struct bf_leaf_entry *e,
                   struct bf_leaf *leaf) {
  bf_tree *t = c->tree;
  for (uint32_t i = 0; i < c->ra_count; i++) {
    if (c->ra[i].leaf_id != leaf_id || !c->ra[i].ready) continue;
    c->ra[i].ready = false;
    if (c->ra[i].disk_page != e->disk_page ||
        c->ra[i].page_version != e->page_version) {
      BF_COUNT(t, read_ahead_dropped, 1); /* written since: stale */
      return BF_NOTFOUND;
    }
    memcpy(c->page, c->ra_pages + (size_t)i * t->page_size, t->page_size);
    return bf_tree_verify_leaf(t, e, c->page, leaf);
  }
  return BF_NOTFOUND;
}

/* Load the batch of the leaf found by (key, mode). */
static int load_leaf(bf_cursor *c, const uint8_t *key, uint32_t key_len,
                     int mode) {
  bf_tree *t = c->tree;
  uint32_t leaf_id;
  struct bf_leaf_entry *e;
  bool need_evict = false;
  int rc = bf_tree_latch_leaf(t, key, key_len, mode, false, &leaf_id, &e);
  if (rc != BF_OK) return rc;
  c->count = 0;
  c->data_len = 0;
  uint8_t *mini = atomic_load_explicit(&e->mini, memory_order_relaxed);
  struct bf_leaf leaf;
  if (mini && bf_buf_node_class(mini) == t->full_class) {
    bf_leaf_view(mini, t->page_size, &leaf);
    BF_COUNT(t, cache_hits, 1);
    rc = collect(c, &leaf, NULL);
    if (rc == BF_OK && c->txn) rc = overlay_txn(c, &leaf);
    if (rc == BF_OK) rc = set_next(c, &leaf);
    bf_unlatch_shared(&e->latch);
    return rc;
  }
  rc = ra_take(c, leaf_id, e, &leaf);
  if (rc == BF_NOTFOUND)
    rc = read_leaf_ahead(c, leaf_id, e, key, key_len, mode, &leaf);
  if (rc == BF_OK) {
    /* Relaxed running average (7/8 old, 1/8 new) of records per leaf. */
    uint32_t avg = atomic_load_explicit(&t->scan_leaf_records,
                                        memory_order_relaxed);
    uint32_t n = bf_node_count(leaf.node);
    atomic_store_explicit(&t->scan_leaf_records,
                          avg ? avg - avg / 8 + n / 8 : n,
                          memory_order_relaxed);
  }
  if (rc == BF_OK) rc = collect(c, &leaf, mini);
  if (rc == BF_OK && c->txn) rc = overlay_txn(c, &leaf);
  if (rc == BF_OK) rc = set_next(c, &leaf);
  if (rc == BF_OK && bf_tree_should_promote(t, t->opts.scan_promote_percent) &&
      bf_try_upgrade(&e->latch)) {
    if (bf_tree_promote_page(t, leaf_id, e, c->page) == BF_RETRY)
      need_evict = true;
    bf_unlatch_exclusive(&e->latch);
  } else {
    bf_unlatch_shared(&e->latch);
  }
  if (need_evict) bf_tree_evict(t, t->full_class); /* the block it wanted */
  return rc;
}

/* Load batches until one has a record or the range is exhausted. */
static int fill(bf_cursor *c, const uint8_t *key, uint32_t key_len, int mode) {
  for (;;) {
    int rc = load_leaf(c, key, key_len, mode);
    if (rc != BF_OK) {
      c->valid = false;
      return rc;
    }
    c->rows_seen += c->count;
    if (c->count) {
      c->pos = c->descending ? c->count - 1 : 0;
      c->valid = true;
      return BF_OK;
    }
    if (!c->more) {
      c->valid = false;
      return BF_DONE;
    }
    key = c->next.data;
    key_len = c->next.len;
    mode = c->descending ? BF_FIND_BEFORE : BF_FIND_KEY;
  }
}

int bf_cursor_seek(bf_cursor *c, const bf_bound *lower, const bf_bound *upper,
                   bool descending) {
  bf_tree *t = c->tree;
  int rc = BF_OK;
  c->valid = false;
  c->count = 0;
  c->descending = descending;
  c->rows_seen = 0;
  c->disk_loads = 0;
  c->lower.present = c->upper.present = false;
  if (lower && lower->key) {
    if (lower->key_len > t->max_key) return BF_TOOBIG;
    rc = key_set(&c->lower, lower->key, lower->key_len, lower->inclusive);
  }
  if (rc == BF_OK && upper && upper->key) {
    if (upper->key_len > t->max_key) return BF_TOOBIG;
    rc = key_set(&c->upper, upper->key, upper->key_len, upper->inclusive);
  }
  if (rc != BF_OK) return rc;
  /* An empty range. */
  if (c->lower.present && c->upper.present) {
    int r = bf_key_compare(c->lower.data, c->lower.len, c->upper.data,
                           c->upper.len);
    if (r > 0 || (r == 0 && !(c->lower.inclusive && c->upper.inclusive)))
      return BF_DONE;
  }
  if (!descending) {
    if (c->lower.present)
      return fill(c, c->lower.data, c->lower.len, BF_FIND_KEY);
    return fill(c, (const uint8_t *)"", 0, BF_FIND_KEY); /* smallest key */
  }
  if (c->upper.present)
    return fill(c, c->upper.data, c->upper.len, BF_FIND_KEY);
  return fill(c, NULL, 0, BF_FIND_BEFORE); /* NULL: the last leaf */
}

int bf_cursor_next(bf_cursor *c) {
  if (!c->valid) return BF_DONE;
  if (!c->descending) {
    if (++c->pos < c->count) return BF_OK;
  } else {
    if (c->pos-- > 0) return BF_OK;
  }
  c->valid = false;
  if (!c->more) return BF_DONE;
  return fill(c, c->next.data, c->next.len,
              c->descending ? BF_FIND_BEFORE : BF_FIND_KEY);
}

bool bf_cursor_valid(const bf_cursor *c) { return c->valid; }

void bf_cursor_key(const bf_cursor *c, const void **key, size_t *key_len) {
  const struct scan_item *it = &c->items[c->pos];
  *key = c->data + it->key_off;
  *key_len = it->key_len;
}

void bf_cursor_value(const bf_cursor *c, const void **value,
                     size_t *value_len) {
  const struct scan_item *it = &c->items[c->pos];
  *value = c->data + it->value_off;
  *value_len = it->value_len;
}
