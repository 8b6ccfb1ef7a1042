/*
** bf_ckpt.c: the file header (superblocks), disk page allocation, and the
** checkpoint metadata that lets bf_open() rebuild the tree.
**
** FILE LAYOUT: fixed-size pages of page_size bytes.
**   page 0, page 1   superblock slots (written alternately)
**   page 2 ...       leaf pages (bf_page.c format), metadata pages, free pages
**
** SUPERBLOCK (first BF_SUPER_SIZE bytes of page 0 or 1; the rest is zero):
**   OFFSET SIZE DESCRIPTION
**   0      16   magic "bftree format 1\0"
**   16     4    CRC-32C of bytes [20, BF_SUPER_SIZE)
**   20     4    format version (1)
**   24     4    page size
**   28     4    reserved (0)
**   32     8    generation: the checkpoint's number (the slot with the
**               highest valid generation is current; slot = generation % 2)
**   40     8    file pages: pages 0 .. n-1 are in use or free
**   48     8    first metadata page
**   56     8    metadata page count
**   64     8    leaf count
**   72     8    lsn: the log position the checkpoint includes everything
**               before (replay starts there)
**   80     8    file id: random, chosen at creation; the log names it
**   88     8    last commit id included
**
** METADATA PAGE (a chain; each page_size bytes):
**   0      4    CRC-32C of bytes [4, page_size)
**   4      4    magic "BFMT"
**   8      8    this page's number
**   16     8    next page in the chain (0 = last)
**   24     4    payload bytes in this page
**   28     4    reserved
**   32     ...  payload
**
** PAYLOAD (the concatenation of the chain's payloads):
**   8      leaf count n
**   n x    { 8 disk page, 2 low fence length, low fence bytes }  key order
**   8      free page count f
**   f x    8 free page number
**
** Invariants:
**   1. A page referenced by the current checkpoint (its leaves and metadata
**      pages) is never written until a newer checkpoint is durable; frees of
**      such pages wait in `pending` (bf_space_free with in_checkpoint).
**   2. A superblock is written only after everything it names is fsynced,
**      and is itself fsynced before pending pages become reusable.
**   3. Every page number handed out is >= BF_FIRST_DATA_PAGE and
**      < next_page; free and pending hold no duplicates.
**
** ALLOCATION ORDER: after each checkpoint and at load the free list is
** sorted so that the lowest free page is handed out first; live pages then
** drift to the front of the file, and once a checkpoint is durable the
** file's tail, where all of it is free, is truncated (space_trim).  A file
** whose every leaf is rewritten between checkpoints doubles, then goes
** back to the front at the next round of rewrites and gives the rest back.
*/
#include "bf_int.h"

#include <stdio.h>
#include <stdlib.h>

static const uint8_t super_magic[16] = "bftree format 1";
#define FORMAT_VERSION 1
#define META_MAGIC 0x544d4642u /* "BFMT" */
#define META_HEADER 32

struct page_list {
  uint64_t *pages;
  size_t count, capacity;
};

struct bf_space {
  pthread_mutex_t lock;
  uint64_t next_page;          /* high-water mark: pages in the file */
  struct page_list free;       /* reusable now */
  struct page_list pending;    /* reusable after the next checkpoint */
  struct page_list meta;       /* metadata pages of the current checkpoint */
};

static int list_push(struct page_list *list, uint64_t page) {
  if (list->count == list->capacity) {
    size_t cap = list->capacity ? list->capacity * 2 : 64;
    uint64_t *p = realloc(list->pages, cap * sizeof *p);
    if (!p) return BF_NOMEM;
    list->pages = p;
    list->capacity = cap;
  }
  list->pages[list->count++] = page;
  return BF_OK;
}

static int list_append(struct page_list *dst, const struct page_list *src) {
  int rc = BF_OK;
  for (size_t i = 0; i < src->count && rc == BF_OK; i++)
    rc = list_push(dst, src->pages[i]);
  return rc;
}

static int page_cmp_desc(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Sort the free list in decreasing order: bf_space_alloc takes from its
** end, so the lowest free page goes first and live pages drift to the
** front of the file, leaving its tail free for space_trim. */
static void space_sort_free(struct bf_space *s) {
  if (s->free.count > 1)
    qsort(s->free.pages, s->free.count, sizeof *s->free.pages, page_cmp_desc);
}

/* Give the file's tail back to the file system where every page of it is
** free (the list sorted by space_sort_free), and lower next_page to match.
** Lock held: no page is handed out while the file shrinks.  Only after a
** checkpoint is durable: the checkpoint lists those pages as free, and a
** page past the end of the file is as good a free page as any (written
** again, it extends the file).  Best effort: when the truncation fails,
** the pages stay free.  Never lengthens the file (after a reopen, the
** superblock's page count may exceed the file's size). */
static void space_trim(struct bf_space *s, struct bf_io *io, uint32_t ps) {
  size_t n = 0;
  while (n < s->free.count && s->free.pages[n] == s->next_page - 1 - n) n++;
  if (n == 0) return;
  uint64_t size = 0, keep = (s->next_page - n) * (uint64_t)ps;
  if (bf_io_file_size(io, &size) != BF_OK) return;
  if (size > keep && bf_io_truncate(io, keep) != BF_OK) return;
  memmove(s->free.pages, s->free.pages + n,
          (s->free.count - n) * sizeof *s->free.pages);
  s->free.count -= n;
  s->next_page -= n;
}

int bf_space_create(uint64_t next_page, struct bf_space **out) {
  struct bf_space *s = bf_calloc(1, sizeof *s);
  *out = NULL;
  if (!s) return BF_NOMEM;
  pthread_mutex_init(&s->lock, NULL);
  s->next_page = next_page < BF_FIRST_DATA_PAGE ? BF_FIRST_DATA_PAGE : next_page;
  *out = s;
  return BF_OK;
}

void bf_space_destroy(struct bf_space *s) {
  if (!s) return;
  pthread_mutex_destroy(&s->lock);
  free(s->free.pages);
  free(s->pending.pages);
  free(s->meta.pages);
  bf_free(s);
}

int bf_space_alloc(struct bf_space *s, uint64_t *page) {
  pthread_mutex_lock(&s->lock);
  if (s->free.count) {
    *page = s->free.pages[--s->free.count];
  } else {
    *page = s->next_page++;
  }
  pthread_mutex_unlock(&s->lock);
  return BF_OK;
}

int bf_space_free(struct bf_space *s, uint64_t page, bool in_checkpoint) {
  int rc;
  if (NEVER(page < BF_FIRST_DATA_PAGE)) return BF_OK;
  pthread_mutex_lock(&s->lock);
  rc = list_push(in_checkpoint ? &s->pending : &s->free, page);
  pthread_mutex_unlock(&s->lock);
  return rc; /* BF_NOMEM: the page is leaked until the file is rebuilt */
}

uint64_t bf_space_file_pages(struct bf_space *s) {
  pthread_mutex_lock(&s->lock);
  uint64_t n = s->next_page;
  pthread_mutex_unlock(&s->lock);
  return n;
}

uint64_t bf_space_free_pages(struct bf_space *s) {
  pthread_mutex_lock(&s->lock);
  uint64_t n = s->free.count + s->pending.count;
  pthread_mutex_unlock(&s->lock);
  return n;
}

void bf_ckpt_image_free(struct bf_ckpt_image *image) {
  if (image->leaves) {
    for (uint64_t i = 0; i < image->leaf_count; i++) bf_free(image->leaves[i].low);
    bf_free(image->leaves);
  }
  bf_big_free(image->serial, image->serial_cap);
  image->leaves = NULL;
  image->serial = NULL;
  image->serial_len = image->serial_cap = 0;
  image->leaf_count = 0;
}

/* ------------------------------------------------------------------------
** Superblocks.
*/
struct super {
  uint32_t page_size;
  uint64_t generation, file_pages, meta_first, meta_count, leaf_count, lsn;
  uint64_t file_id, last_commit_id;
};

static void super_encode(const struct super *sb, uint8_t *p) {
  memset(p, 0, BF_SUPER_SIZE);
  memcpy(p, super_magic, 16);
  bf_put32(p + 20, FORMAT_VERSION);
  bf_put32(p + 24, sb->page_size);
  bf_put64(p + 32, sb->generation);
  bf_put64(p + 40, sb->file_pages);
  bf_put64(p + 48, sb->meta_first);
  bf_put64(p + 56, sb->meta_count);
  bf_put64(p + 64, sb->leaf_count);
  bf_put64(p + 72, sb->lsn);
  bf_put64(p + 80, sb->file_id);
  bf_put64(p + 88, sb->last_commit_id);
  bf_put32(p + 16, bf_crc32c(0, p + 20, BF_SUPER_SIZE - 20));
}

static bool is_page_size(uint32_t n) {
  return n >= 512 && n <= 32768 && (n & (n - 1)) == 0;
}

/* Decode a superblock slot: 1 valid, 0 no magic, -1 magic but damaged. */
static int super_decode(const uint8_t *p, struct super *sb) {
  if (memcmp(p, super_magic, 16) != 0) return 0;
  if (bf_get32(p + 16) != bf_crc32c(0, p + 20, BF_SUPER_SIZE - 20)) return -1;
  if (bf_get32(p + 20) != FORMAT_VERSION) return -1;
  sb->page_size = bf_get32(p + 24);
  sb->generation = bf_get64(p + 32);
  sb->file_pages = bf_get64(p + 40);
  sb->meta_first = bf_get64(p + 48);
  sb->meta_count = bf_get64(p + 56);
  sb->leaf_count = bf_get64(p + 64);
  sb->lsn = bf_get64(p + 72);
  sb->file_id = bf_get64(p + 80);
  sb->last_commit_id = bf_get64(p + 88);
  if (!is_page_size(sb->page_size)) return -1;
  return 1;
}

/* Find the current superblock.  Slot 0 is at offset 0; slot 1 at
** page_size, which we learn from slot 0, or by trying every size when
** slot 0 is damaged. */
static int super_read(struct bf_io *io, struct super *out, char **errmsg) {
  uint8_t raw[BF_SUPER_SIZE];
  struct super s0, s1;
  size_t got = 0;
  int v0, v1 = 0;
  int rc = bf_io_read_raw(io, raw, sizeof raw, 0, &got);
  if (rc != BF_OK) return rc;
  if (got < BF_SUPER_SIZE) {
    if (errmsg) *errmsg = bf_mprintf("file is too short to be a bftree file");
    return BF_NOTBFTREE;
  }
  v0 = super_decode(raw, &s0);
  /* Slot 0 may be blank: a new file's first checkpoint goes to slot 1. */
  for (uint32_t ps = 512; ps <= 32768; ps *= 2) {
    if (v0 == 1 && ps != s0.page_size) continue;
    rc = bf_io_read_raw(io, raw, sizeof raw, ps, &got);
    if (rc != BF_OK) return rc;
    if (got == BF_SUPER_SIZE) {
      v1 = super_decode(raw, &s1);
      if (v1 == 1 && s1.page_size != ps) v1 = -1;
      if (v1 == 1) break;
    }
  }
  if (v0 == 0 && v1 == 0) {
    if (errmsg) *errmsg = bf_mprintf("file does not start with the bftree magic");
    return BF_NOTBFTREE;
  }
  if (v0 != 1 && v1 != 1) {
    if (errmsg) *errmsg = bf_mprintf("both superblocks are damaged");
    return BF_CORRUPT_BKPT;
  }
  if (v0 == 1 && (v1 != 1 || s0.generation >= s1.generation))
    *out = s0;
  else
    *out = s1;
  return BF_OK;
}

int bf_ckpt_probe(struct bf_io *io, uint32_t *page_size, char **errmsg) {
  struct super sb;
  int rc = super_read(io, &sb, errmsg);
  if (rc == BF_OK) *page_size = sb.page_size;
  return rc;
}

/* ------------------------------------------------------------------------
** Metadata serialisation.
*/
struct bytes {
  uint8_t *data;
  size_t len, cap;
};

static int bytes_reserve(struct bytes *b, size_t n) {
  if (b->len + n <= b->cap) return BF_OK;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + n) cap *= 2;
  uint8_t *p = bf_big_realloc(b->data, b->cap, cap);
  if (!p) return BF_NOMEM;
  b->data = p;
  b->cap = cap;
  return BF_OK;
}

static int bytes_put64(struct bytes *b, uint64_t v) {
  int rc = bytes_reserve(b, 8);
  if (rc == BF_OK) bf_put64(b->data + b->len, v), b->len += 8;
  return rc;
}

static int bytes_put_key(struct bytes *b, const uint8_t *key, uint32_t len) {
  int rc = bytes_reserve(b, 2 + (size_t)len);
  if (rc != BF_OK) return rc;
  bf_put16(b->data + b->len, (uint16_t)len);
  if (len) memcpy(b->data + b->len + 2, key, len);
  b->len += 2 + (size_t)len;
  return BF_OK;
}

int bf_ckpt_image_add(struct bf_ckpt_image *image, uint64_t disk_page,
                      const uint8_t *low, uint32_t low_len) {
  struct bytes b = {image->serial, image->serial_len, image->serial_cap};
  /* The serial form starts with the leaf count, filled in by
  ** bf_ckpt_write. */
  int rc = b.len ? BF_OK : bytes_put64(&b, 0);
  if (rc == BF_OK) rc = bytes_put64(&b, disk_page);
  if (rc == BF_OK) rc = bytes_put_key(&b, low, low_len);
  /* On an error the image keeps what it had (bytes_reserve keeps the old
  ** block) and the checkpoint is abandoned. */
  image->serial = b.data;
  image->serial_len = b.len;
  image->serial_cap = b.cap;
  if (rc == BF_OK) image->leaf_count++;
  return rc;
}

int bf_ckpt_write(struct bf_io *io, struct bf_space *s,
                  struct bf_ckpt_image *image, bool *uncertain) {
  const uint32_t ps = image->page_size;
  const size_t per_page = ps - META_HEADER;
  struct bytes b = {0};
  struct page_list meta = {0};
  uint8_t *page = NULL;
  struct super sb;
  int rc = BF_OK;

  *uncertain = false;
  /* The leaves, serialised by bf_ckpt_image_add: take them over (freed
  ** below).  The free list is appended below, once the metadata pages have
  ** been taken from it. */
  if (NEVER(image->leaves || !image->serial || image->leaf_count == 0))
    return BF_INVALID;
  b.data = image->serial;
  b.len = image->serial_len;
  b.cap = image->serial_cap;
  image->serial = NULL;
  image->serial_len = image->serial_cap = 0;
  bf_put64(b.data, image->leaf_count);

  pthread_mutex_lock(&s->lock);
  {
    /* Pages the new checkpoint may list as free: free now, pending (freed
    ** since the last checkpoint) and the old metadata pages.  Upper bound
    ** of the payload: leaves + 8 + 8 per such page. */
    size_t free_total = s->free.count + s->pending.count + s->meta.count;
    size_t bytes = b.len + 8 + 8 * free_total;
    size_t npages = (bytes + per_page - 1) / per_page;
    /* Metadata pages come from the free list (never from pending: those
    ** are still referenced by the durable checkpoint) or the end. */
    for (size_t i = 0; i < npages && rc == BF_OK; i++) {
      uint64_t pg = s->free.count ? s->free.pages[--s->free.count]
                                  : s->next_page++;
      rc = list_push(&meta, pg);
    }
    if (rc == BF_OK) {
      /* The free list recorded in the checkpoint. */
      size_t nfree = s->free.count + s->pending.count + s->meta.count;
      rc = bytes_put64(&b, nfree);
      for (size_t i = 0; rc == BF_OK && i < s->free.count; i++)
        rc = bytes_put64(&b, s->free.pages[i]);
      for (size_t i = 0; rc == BF_OK && i < s->pending.count; i++)
        rc = bytes_put64(&b, s->pending.pages[i]);
      for (size_t i = 0; rc == BF_OK && i < s->meta.count; i++)
        rc = bytes_put64(&b, s->meta.pages[i]);
    }
    sb.file_pages = s->next_page;
    if (rc != BF_OK) {
      /* Give the metadata pages back. */
      for (size_t i = 0; i < meta.count; i++) list_push(&s->free, meta.pages[i]);
    }
  }
  pthread_mutex_unlock(&s->lock);
  if (rc != BF_OK) goto out;
  assert((b.len + per_page - 1) / per_page <= meta.count);

  page = bf_malloc_aligned(4096, ps);
  if (!page) {
    rc = BF_NOMEM;
    goto out_return_meta;
  }
  for (size_t i = 0; i < meta.count && rc == BF_OK; i++) {
    size_t off = i * per_page;
    size_t n = off < b.len ? b.len - off : 0;
    if (n > per_page) n = per_page;
    memset(page, 0, ps);
    bf_put32(page + 4, META_MAGIC);
    bf_put64(page + 8, meta.pages[i]);
    bf_put64(page + 16, i + 1 < meta.count ? meta.pages[i + 1] : 0);
    bf_put32(page + 24, (uint32_t)n);
    if (n) memcpy(page + META_HEADER, b.data + off, n);
    bf_put32(page, bf_crc32c(0, page + 4, ps - 4));
    rc = bf_io_write(io, page, ps, meta.pages[i] * ps);
  }
  /* Invariant 2: metadata (and every leaf written before this call) durable
  ** before the superblock names it. */
  if (rc == BF_OK) rc = bf_io_sync(io);
  if (rc == BF_OK) {
    sb.page_size = ps;
    sb.generation = image->generation + 1;
    sb.meta_first = meta.pages[0];
    sb.meta_count = meta.count;
    sb.leaf_count = image->leaf_count;
    sb.lsn = image->lsn;
    sb.file_id = image->file_id;
    sb.last_commit_id = image->last_commit_id;
    memset(page, 0, ps);
    super_encode(&sb, page);
    rc = bf_io_write(io, page, ps, (sb.generation % 2) * ps);
    if (rc == BF_OK) rc = bf_io_sync(io);
    if (rc != BF_OK) {
      /* The superblock may be on the disk or not, whatever the error said:
      ** both checkpoints must stay readable, so nothing either references
      ** may be reused, the new metadata pages included (they stay out of
      ** every list).  The caller stops writing (see bf_int.h). */
      *uncertain = true;
      goto out;
    }
  }
  if (rc != BF_OK) goto out_return_meta;

  /* The new checkpoint is durable: what the old one referenced and was
  ** freed since is reusable now. */
  image->generation = sb.generation;
  pthread_mutex_lock(&s->lock);
  rc = list_append(&s->free, &s->pending);
  if (rc == BF_OK) rc = list_append(&s->free, &s->meta);
  s->pending.count = 0;
  s->meta.count = 0;
  if (rc == BF_OK) rc = list_append(&s->meta, &meta);
  if (rc == BF_OK) {
    space_sort_free(s);
    space_trim(s, io, ps);
  }
  pthread_mutex_unlock(&s->lock);
  if (rc != BF_OK) *uncertain = true; /* durable, but the lists are not */
  goto out;

out_return_meta:
  /* The metadata pages were not made current: they are free again (no
  ** durable checkpoint references them). */
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < meta.count; i++) list_push(&s->free, meta.pages[i]);
  pthread_mutex_unlock(&s->lock);
out:
  bf_free_aligned(page);
  bf_big_free(b.data, b.cap);
  free(meta.pages);
  return rc;
}

/* ------------------------------------------------------------------------
** Loading.
*/
struct reader {
  const uint8_t *p;
  size_t len, pos;
};

static bool read64(struct reader *r, uint64_t *v) {
  if (r->len - r->pos < 8) return false;
  *v = bf_get64(r->p + r->pos);
  r->pos += 8;
  return true;
}

int bf_ckpt_load(struct bf_io *io, struct bf_ckpt_image *image,
                 struct bf_space **space_out, char **errmsg) {
  struct super sb;
  struct bytes b = {0};
  uint8_t *page = NULL;
  struct bf_space *s = NULL;
  int rc;

  memset(image, 0, sizeof *image);
  *space_out = NULL;
  rc = super_read(io, &sb, errmsg);
  if (rc != BF_OK) return rc;
  if (sb.meta_count == 0 || sb.meta_first < BF_FIRST_DATA_PAGE ||
      sb.meta_first >= sb.file_pages || sb.meta_count >= sb.file_pages) {
    if (errmsg) *errmsg = bf_mprintf("superblock names no valid metadata");
    return BF_CORRUPT_BKPT;
  }
  page = bf_malloc_aligned(4096, sb.page_size);
  rc = page ? bf_space_create(sb.file_pages, &s) : BF_NOMEM;

  /* Read the metadata chain. */
  uint64_t pg = sb.meta_first;
  for (uint64_t i = 0; rc == BF_OK && i < sb.meta_count; i++) {
    if (pg < BF_FIRST_DATA_PAGE || pg >= sb.file_pages) {
      rc = BF_CORRUPT_BKPT;
      break;
    }
    rc = bf_io_read(io, page, sb.page_size, pg * sb.page_size);
    if (rc != BF_OK) break;
    uint32_t n = bf_get32(page + 24);
    if (bf_get32(page) != bf_crc32c(0, page + 4, sb.page_size - 4) ||
        bf_get32(page + 4) != META_MAGIC || bf_get64(page + 8) != pg ||
        n > sb.page_size - META_HEADER) {
      rc = BF_CORRUPT_BKPT;
      break;
    }
    rc = list_push(&s->meta, pg);
    if (rc == BF_OK) rc = bytes_reserve(&b, n);
    if (rc == BF_OK) memcpy(b.data + b.len, page + META_HEADER, n), b.len += n;
    pg = bf_get64(page + 16);
  }
  if (rc == BF_OK && pg != 0) rc = BF_CORRUPT_BKPT;

  /* Parse it. */
  struct reader r = {b.data, b.len, 0};
  uint64_t nleaves = 0, nfree = 0;
  if (rc == BF_OK && (!read64(&r, &nleaves) || nleaves == 0 ||
                      nleaves != sb.leaf_count || nleaves > b.len / 10)) {
    rc = BF_CORRUPT_BKPT;
  }
  if (rc == BF_OK) {
    image->leaves = bf_calloc(nleaves, sizeof *image->leaves);
    if (!image->leaves) rc = BF_NOMEM;
  }
  for (uint64_t i = 0; rc == BF_OK && i < nleaves; i++) {
    struct bf_ckpt_leaf *leaf = &image->leaves[i];
    image->leaf_count = i + 1;
    if (!read64(&r, &leaf->disk_page) || r.len - r.pos < 2 ||
        leaf->disk_page < BF_FIRST_DATA_PAGE ||
        leaf->disk_page >= sb.file_pages) {
      rc = BF_CORRUPT_BKPT;
      break;
    }
    leaf->low_len = bf_get16(r.p + r.pos);
    r.pos += 2;
    if (r.len - r.pos < leaf->low_len || leaf->low_len > sb.page_size / 8) {
      rc = BF_CORRUPT_BKPT;
      break;
    }
    if (i > 0) {
      leaf->low = bf_malloc(leaf->low_len ? leaf->low_len : 1);
      if (!leaf->low) {
        rc = BF_NOMEM;
        break;
      }
      memcpy(leaf->low, r.p + r.pos, leaf->low_len);
      /* Fences must ascend strictly. */
      if (i > 1 && bf_key_compare(image->leaves[i - 1].low,
                                  image->leaves[i - 1].low_len, leaf->low,
                                  leaf->low_len) >= 0) {
        rc = BF_CORRUPT_BKPT;
        break;
      }
    }
    r.pos += leaf->low_len;
  }
  if (rc == BF_OK && (!read64(&r, &nfree) || nfree > (r.len - r.pos) / 8))
    rc = BF_CORRUPT_BKPT;
  for (uint64_t i = 0; rc == BF_OK && i < nfree; i++) {
    uint64_t fp = 0;
    read64(&r, &fp);
    if (fp < BF_FIRST_DATA_PAGE || fp >= sb.file_pages) {
      rc = BF_CORRUPT_BKPT;
      break;
    }
    rc = list_push(&s->free, fp);
  }
  if (rc == BF_OK) space_sort_free(s);
  if (rc == BF_CORRUPT && errmsg && !*errmsg)
    *errmsg = bf_mprintf("checkpoint metadata is damaged");
  if (rc == BF_OK) {
    image->page_size = sb.page_size;
    image->generation = sb.generation;
    image->lsn = sb.lsn;
    image->file_id = sb.file_id;
    image->last_commit_id = sb.last_commit_id;
    *space_out = s;
    s = NULL;
  } else {
    bf_ckpt_image_free(image);
  }
  bf_space_destroy(s);
  bf_free_aligned(page);
  bf_big_free(b.data, b.cap);
  return rc;
}
