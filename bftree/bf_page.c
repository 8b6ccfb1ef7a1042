/*
** bf_page.c: the node layout shared by mini-pages and leaf pages, and the
** leaf page envelope (fences, prefix compression, checksum).
**
** Owns: every byte of a node (header, slots, record heap) and of a leaf page
** envelope.  Callers see records only through bf_node_* / bf_leaf_*.
**
** NODE FORMAT (all integers little-endian; node 8-byte aligned)
**
**   OFFSET      SIZE  DESCRIPTION
**   0           2     size: bytes of the whole node, 8..32768, multiple of 8
**   2           2     count: number of records (slots)
**   4           2     heap_start: lowest offset used by the record heap
**   6           2     garbage: heap bytes that belong to no record
**   8           8*n   slots, sorted by key (one u64 per record)
**   8+8n        ...   free space, up to heap_start
**   heap_start  ...   record heap up to size: each record is its key bytes
**                     immediately followed by its value bytes
**
** SLOT FORMAT (u64 stored little-endian)
**
**   BITS   DESCRIPTION
**   0..15  heap offset of the record's key (the value follows the key)
**   16..29 key length (< 16384)
**   30..31 record type (enum bf_rec_type)
**   32..46 value length (< 32768)
**   47     reference bit (set by readers under a shared latch)
**   48..63 look-ahead: the first two key bytes, big-endian, zero padded
**
** LEAF PAGE FORMAT (page_size bytes, a power of two 512..32768)
**
**   OFFSET  SIZE  DESCRIPTION
**   0       4     CRC-32C (bf_crc32c) of bytes [4, page_size)
**   4       4     magic BF_LEAF_MAGIC ("BFLF")
**   8       8     lsn of the newest change the page holds
**   16      8     page number on disk (catches misdirected I/O)
**   24      2     L: low fence length (0 when -inf)
**   26      2     H: high fence length (0 when +inf)
**   28      2     prefix length P
**   30      2     flags: BF_LEAF_LOW_INF | BF_LEAF_HIGH_INF
**   32      L     low fence key
**   32+L    H     high fence key
**   ...           zero padding up to node_offset = round_up(32 + L + H, 8)
**   node_offset   a node of page_size - node_offset bytes
**
** Node invariants (bf_node_check verifies all of them):
**   N1. 8 <= size <= 32768 and size % 8 == 0.
**   N2. 8 + 8*count <= heap_start <= size.
**   N3. Every record [off, off + key_len + value_len) lies in
**       [heap_start, size); no two records overlap.
**   N4. Keys are strictly ascending in slot order (bf_key_compare).
**   N5. A slot's look-ahead equals the first two bytes of its key
**       (big-endian, zero padded).
**   N6. garbage == size - heap_start - sum(key_len + value_len).
**   N8. A record with key_len + value_len == 0 has offset == size, so it
**       never sits at heap_start beside a real record (bf_node_remove and
**       bf_node_upsert move heap_start past the record found there).  A
**       convention kept by this file; bf_node_check does not require it
**       (a zero-length record anywhere in [heap_start, size] is harmless).
**   N7. Slots are loaded and stored only with relaxed atomics: under a
**       shared latch, readers may set reference bits (atomic OR) while other
**       readers search.  All other bytes change only under an exclusive
**       latch.
**
** Leaf invariants (bf_leaf_verify verifies all of them):
**   L1. CRC, magic and page number match.
**   L2. flags contain only the two INF bits; an infinite fence has length 0.
**   L3. L, H <= BF_MAX_KEY_LIMIT and node_offset + 8 <= page_size.
**   L4. low < high when both are finite.
**   L5. P is the common prefix length of low and high when both are finite,
**       otherwise 0.
**   L6. The node satisfies N1..N6 with size == page_size - node_offset.
**   L7. Every key (prefix + stored key) lies in [low, high).
**
** Search.  The look-ahead bytes decide only strict inequality (padding with
** zero keeps their order consistent with bf_key_compare: a shorter key pads
** with 0, which never exceeds the other key's real byte).  On equal look-ahead
** the full keys are compared, so "a" vs "a\0" and "" vs "\0" are ordered
** correctly.
*/
#include "bf_int.h"

#include <stdarg.h>
#include <stdio.h>

/* ------------------------------------------------------------------------
** Slot encoding.
*/
#define SLOT_OFF_MASK 0xffffull
#define SLOT_KLEN_SHIFT 16
#define SLOT_KLEN_MASK 0x3fffull
#define SLOT_TYPE_SHIFT 30
#define SLOT_TYPE_MASK 0x3ull
#define SLOT_VLEN_SHIFT 32
#define SLOT_VLEN_MASK 0x7fffull
#define SLOT_REF_BIT (1ull << 47)
#define SLOT_LA_SHIFT 48

#define HDR_SIZE 0
#define HDR_COUNT 2
#define HDR_HEAP 4
#define HDR_GARBAGE 6

/* Slots are stored little-endian; convert between host and disk order. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
static inline uint64_t slot_swap(uint64_t v) {
  v = ((v & 0x00ff00ff00ff00ffull) << 8) | ((v >> 8) & 0x00ff00ff00ff00ffull);
  v = ((v & 0x0000ffff0000ffffull) << 16) |
      ((v >> 16) & 0x0000ffff0000ffffull);
  return (v << 32) | (v >> 32);
}
#define SLOT_LE(v) slot_swap(v)
#else
#define SLOT_LE(v) (v)
#endif

static inline _Atomic uint64_t *slot_ptr(const uint8_t *node, uint32_t i) {
  /* The node is 8-aligned (contract), so every slot is 8-aligned. */
  return (_Atomic uint64_t *)(void *)((uint8_t *)node + BF_NODE_HEADER +
                                      (size_t)i * BF_SLOT_SIZE);
}

/* Relaxed (N7): the only concurrent writer is a reference-bit OR, which
** never changes the fields a reader decodes except bit 47. */
static inline uint64_t slot_load(const uint8_t *node, uint32_t i) {
  uint64_t v = atomic_load_explicit(slot_ptr(node, i), memory_order_relaxed);
  return SLOT_LE(v);
}

static inline void slot_store(uint8_t *node, uint32_t i, uint64_t v) {
  atomic_store_explicit(slot_ptr(node, i), SLOT_LE(v), memory_order_relaxed);
}

static inline uint32_t slot_off(uint64_t s) {
  return (uint32_t)(s & SLOT_OFF_MASK);
}
static inline uint32_t slot_klen(uint64_t s) {
  return (uint32_t)((s >> SLOT_KLEN_SHIFT) & SLOT_KLEN_MASK);
}
static inline uint32_t slot_type(uint64_t s) {
  return (uint32_t)((s >> SLOT_TYPE_SHIFT) & SLOT_TYPE_MASK);
}
static inline uint32_t slot_vlen(uint64_t s) {
  return (uint32_t)((s >> SLOT_VLEN_SHIFT) & SLOT_VLEN_MASK);
}
static inline uint32_t slot_la(uint64_t s) {
  return (uint32_t)(s >> SLOT_LA_SHIFT);
}

/* The look-ahead of a key: first two bytes big-endian, zero padded. */
static inline uint32_t key_lookahead(const uint8_t *key, uint32_t key_len) {
  uint32_t la = 0;
  if (key_len > 0) la = (uint32_t)key[0] << 8;
  if (key_len > 1) la |= key[1];
  return la;
}

static inline uint64_t slot_make(uint32_t off, const uint8_t *key,
                                 uint32_t key_len, uint32_t type,
                                 uint32_t value_len, bool referenced) {
  return (uint64_t)off | ((uint64_t)key_len << SLOT_KLEN_SHIFT) |
         ((uint64_t)(type & SLOT_TYPE_MASK) << SLOT_TYPE_SHIFT) |
         ((uint64_t)value_len << SLOT_VLEN_SHIFT) |
         (referenced ? SLOT_REF_BIT : 0) |
         ((uint64_t)key_lookahead(key, key_len) << SLOT_LA_SHIFT);
}

/* The offset a record of len bytes starting at off gets (N8). */
static inline uint32_t rec_off(uint32_t off, uint32_t len, uint32_t size) {
  return len ? off : size;
}

/* Same slot with a different heap offset. */
static inline uint64_t slot_with_off(uint64_t s, uint32_t off) {
  return (s & ~SLOT_OFF_MASK) | off;
}

/* ------------------------------------------------------------------------
** Header access.  Header fields change only under an exclusive latch.
*/
static inline uint32_t hdr_get(const uint8_t *node, int field) {
  return bf_get16(node + field);
}
static inline void hdr_put(uint8_t *node, int field, uint32_t v) {
  bf_put16(node + field, (uint16_t)v);
}

/* Size is stored as u16; 32768 (0x8000) fits. */
uint32_t bf_node_size(const uint8_t *node) { return hdr_get(node, HDR_SIZE); }
uint32_t bf_node_count(const uint8_t *node) {
  return hdr_get(node, HDR_COUNT);
}

uint32_t bf_node_free(const uint8_t *node) {
  return hdr_get(node, HDR_HEAP) - BF_NODE_HEADER -
         BF_SLOT_SIZE * hdr_get(node, HDR_COUNT);
}

uint32_t bf_node_reclaimable(const uint8_t *node) {
  return bf_node_free(node) + hdr_get(node, HDR_GARBAGE);
}

uint32_t bf_node_used(const uint8_t *node) {
  return BF_SLOT_SIZE * hdr_get(node, HDR_COUNT) + hdr_get(node, HDR_SIZE) -
         hdr_get(node, HDR_HEAP) - hdr_get(node, HDR_GARBAGE);
}

void bf_node_init(uint8_t *node, uint32_t size) {
  assert(size >= BF_NODE_HEADER && size <= BF_MAX_NODE_SIZE && size % 8 == 0);
  assert(((uintptr_t)node & 7) == 0);
  hdr_put(node, HDR_SIZE, size);
  hdr_put(node, HDR_COUNT, 0);
  hdr_put(node, HDR_HEAP, size);
  hdr_put(node, HDR_GARBAGE, 0);
}

/* ------------------------------------------------------------------------
** Search and decode (safe under a shared latch).
*/

/* Compare key (with look-ahead la) against the record in slot s:
** <0, 0, >0 as key is below, equal to, above the record's key. */
static inline int slot_compare(const uint8_t *node, uint64_t s,
                               const uint8_t *key, uint32_t key_len,
                               uint32_t la) {
  uint32_t sla = slot_la(s);
  if (la != sla) return la < sla ? -1 : 1;
  /* Equal look-ahead: the first min(2, both lengths) bytes are equal. */
  uint32_t rlen = slot_klen(s);
  const uint8_t *rkey = node + slot_off(s);
  uint32_t skip = key_len < rlen ? key_len : rlen;
  if (skip > 2) skip = 2;
  return bf_key_compare(key + skip, key_len - skip, rkey + skip, rlen - skip);
}

bool bf_node_search(const uint8_t *node, const uint8_t *key, uint32_t key_len,
                    uint32_t *index) {
  uint32_t la = key_lookahead(key, key_len);
  uint32_t lo = 0, hi = hdr_get(node, HDR_COUNT);
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    int c = slot_compare(node, slot_load(node, mid), key, key_len, la);
    if (c < 0) {
      hi = mid;
    } else if (c > 0) {
      lo = mid + 1;
    } else {
      *index = mid;
      return true;
    }
  }
  *index = lo;
  return false;
}

void bf_node_record(const uint8_t *node, uint32_t index,
                    struct bf_record *out) {
  assert(index < bf_node_count(node));
  uint64_t s = slot_load(node, index);
  const uint8_t *k = node + slot_off(s);
  out->key = k;
  out->key_len = slot_klen(s);
  out->value = k + out->key_len;
  out->value_len = slot_vlen(s);
  out->type = (uint8_t)slot_type(s);
  out->referenced = (s & SLOT_REF_BIT) != 0;
}

void bf_node_mark_referenced(uint8_t *node, uint32_t index) {
  assert(index < bf_node_count(node));
  _Atomic uint64_t *p = slot_ptr(node, index);
  /* Skip the read-modify-write when already set: keeps hot cache lines
  ** shared among readers.  Relaxed: the bit is a hint for eviction. */
  if (atomic_load_explicit(p, memory_order_relaxed) & SLOT_LE(SLOT_REF_BIT))
    return;
  atomic_fetch_or_explicit(p, SLOT_LE(SLOT_REF_BIT), memory_order_relaxed);
}

void bf_node_clear_references(uint8_t *node) {
  uint32_t n = hdr_get(node, HDR_COUNT);
  for (uint32_t i = 0; i < n; i++)
    slot_store(node, i, slot_load(node, i) & ~SLOT_REF_BIT);
}

void bf_node_set_type(uint8_t *node, uint32_t index, int type) {
  assert(index < bf_node_count(node));
  assert(type >= 0 && type <= 3);
  uint64_t s = slot_load(node, index);
  s &= ~(SLOT_TYPE_MASK << SLOT_TYPE_SHIFT);
  s |= ((uint64_t)type & SLOT_TYPE_MASK) << SLOT_TYPE_SHIFT;
  slot_store(node, index, s);
}

/* ------------------------------------------------------------------------
** Modification (exclusive latch).
*/

/* Scratch for compaction: one node image per thread (32 KiB of TLS, taken
** on a thread's first compaction), so compaction never allocates, never
** fails and needs no big stack frame. */
static _Thread_local uint8_t compact_scratch[BF_MAX_NODE_SIZE];

/*
** Rewrite the heap so that records lie back to back at the end of the node,
** in key order at ascending addresses (record 0 lowest), garbage 0.
** Records of length 0 get the new heap_start as offset.
*/
void bf_node_compact(uint8_t *node) {
  uint32_t size = hdr_get(node, HDR_SIZE);
  uint32_t heap = hdr_get(node, HDR_HEAP);
  uint32_t count = hdr_get(node, HDR_COUNT);
  if (hdr_get(node, HDR_GARBAGE) == 0) return; /* already contiguous (N6) */
  uint32_t live = size - heap;
  memcpy(compact_scratch, node + heap, live);
  uint32_t top = size;
  for (uint32_t i = count; i-- > 0;) {
    uint64_t s = slot_load(node, i);
    uint32_t len = slot_klen(s) + slot_vlen(s);
    top -= len;
    memcpy(node + top, compact_scratch + (slot_off(s) - heap), len);
    slot_store(node, i, slot_with_off(s, rec_off(top, len, size)));
  }
  hdr_put(node, HDR_HEAP, top);
  hdr_put(node, HDR_GARBAGE, 0);
}

/* Write key and value at heap offset off. */
static inline void put_record_bytes(uint8_t *node, uint32_t off,
                                    const uint8_t *key, uint32_t key_len,
                                    const uint8_t *value, uint32_t value_len) {
  if (key_len) memmove(node + off, key, key_len);
  if (value_len) memmove(node + off + key_len, value, value_len);
}

/* Insert a new record at slot position index, assuming free space for slot
** plus bytes (the caller checked, compacting first if needed). */
static void insert_at(uint8_t *node, uint32_t index, const uint8_t *key,
                      uint32_t key_len, int type, const uint8_t *value,
                      uint32_t value_len, bool referenced) {
  uint32_t count = hdr_get(node, HDR_COUNT);
  /* Read the frontier now, after any compaction the caller did. */
  uint32_t heap = hdr_get(node, HDR_HEAP);
  uint32_t len = key_len + value_len;
  assert(heap - BF_NODE_HEADER - BF_SLOT_SIZE * count >= BF_SLOT_SIZE + len);
  heap -= len;
  put_record_bytes(node, heap, key, key_len, value, value_len);
  for (uint32_t i = count; i > index; i--)
    slot_store(node, i, slot_load(node, i - 1));
  slot_store(node, index,
             slot_make(rec_off(heap, len, hdr_get(node, HDR_SIZE)), key,
                       key_len, (uint32_t)type, value_len, referenced));
  hdr_put(node, HDR_HEAP, heap);
  hdr_put(node, HDR_COUNT, count + 1);
}

/*
** Insert or replace.  Cases, where old = bytes of the existing record and
** len = key_len + value_len:
**   found, len <= old:     rewrite in place, old - len bytes become garbage
**   found, old at heap_start and free >= len - old: grow downward in place
**   found, free >= len:    new bytes from the free space; old -> garbage
**   found, free + garbage + old >= len: drop old bytes, compact, allocate
**   missing, free >= 8 + len: allocate
**   missing, free + garbage >= 8 + len: compact, allocate
**   otherwise BF_FULL, node untouched (every check precedes every write).
** key and value must not point into the node.  BF_TOOBIG when key_len or
** value_len exceed the slot fields (callers check limits before this).
*/
int bf_node_upsert(uint8_t *node, const uint8_t *key, uint32_t key_len,
                   int type, const uint8_t *value, uint32_t value_len) {
  assert(type >= 0 && type <= 3);
  if (key_len > BF_MAX_KEY_LIMIT || value_len > BF_MAX_VALUE_LIMIT)
    return BF_TOOBIG;
  uint32_t index;
  uint32_t len = key_len + value_len;
  uint32_t free_bytes = bf_node_free(node);
  uint32_t garbage = hdr_get(node, HDR_GARBAGE);
  if (!bf_node_search(node, key, key_len, &index)) {
    uint32_t need = BF_SLOT_SIZE + len;
    if (free_bytes < need) {
      if (free_bytes + garbage < need) return BF_FULL;
      bf_node_compact(node);
    }
    insert_at(node, index, key, key_len, type, value, value_len, false);
    return BF_OK;
  }

  uint64_t s = slot_load(node, index);
  uint32_t off = slot_off(s);
  uint32_t old = slot_klen(s) + slot_vlen(s);
  uint32_t heap = hdr_get(node, HDR_HEAP);
  if (len <= old) {
    /* The key bytes are already there (same key). */
    if (value_len) memmove(node + off + key_len, value, value_len);
    hdr_put(node, HDR_GARBAGE, garbage + (old - len));
  } else if (off == heap && free_bytes >= len - old) {
    /* The record is the lowest in the heap: extend it downward. */
    off = heap - (len - old);
    put_record_bytes(node, off, key, key_len, value, value_len);
    hdr_put(node, HDR_HEAP, off);
  } else if (free_bytes >= len) {
    off = heap - len;
    put_record_bytes(node, off, key, key_len, value, value_len);
    hdr_put(node, HDR_HEAP, off);
    hdr_put(node, HDR_GARBAGE, garbage + old);
  } else if (free_bytes + garbage + old >= len) {
    /* Turn the old record into garbage (length 0, so compaction drops its
    ** bytes), compact, then allocate from the fresh frontier. */
    slot_store(node, index, slot_with_off(s, off) &
                                ~((SLOT_KLEN_MASK << SLOT_KLEN_SHIFT) |
                                  (SLOT_VLEN_MASK << SLOT_VLEN_SHIFT)));
    hdr_put(node, HDR_GARBAGE, garbage + old);
    bf_node_compact(node);
    heap = hdr_get(node, HDR_HEAP); /* re-read: compaction moved it */
    off = heap - len;
    put_record_bytes(node, off, key, key_len, value, value_len);
    hdr_put(node, HDR_HEAP, off);
  } else {
    return BF_FULL;
  }
  off = rec_off(off, len, hdr_get(node, HDR_SIZE));
  slot_store(node, index,
             slot_make(off, key, key_len, (uint32_t)type, value_len, false));
  return BF_OK;
}

int bf_node_append(uint8_t *node, const uint8_t *key, uint32_t key_len,
                   int type, const uint8_t *value, uint32_t value_len,
                   bool referenced) {
  assert(type >= 0 && type <= 3);
  if (key_len > BF_MAX_KEY_LIMIT || value_len > BF_MAX_VALUE_LIMIT)
    return BF_TOOBIG;
  uint32_t count = hdr_get(node, HDR_COUNT);
#ifndef NDEBUG
  if (count > 0) {
    struct bf_record last;
    bf_node_record(node, count - 1, &last);
    assert(bf_key_compare(last.key, last.key_len, key, key_len) < 0);
  }
#endif
  uint32_t need = BF_SLOT_SIZE + key_len + value_len;
  uint32_t free_bytes = bf_node_free(node);
  if (free_bytes < need) {
    if (free_bytes + hdr_get(node, HDR_GARBAGE) < need) return BF_FULL;
    bf_node_compact(node);
  }
  insert_at(node, count, key, key_len, type, value, value_len, referenced);
  return BF_OK;
}

void bf_node_remove(uint8_t *node, uint32_t index) {
  uint32_t count = hdr_get(node, HDR_COUNT);
  assert(index < count);
  uint64_t s = slot_load(node, index);
  uint32_t len = slot_klen(s) + slot_vlen(s);
  uint32_t heap = hdr_get(node, HDR_HEAP);
  if (len > 0 && slot_off(s) == heap) {
    /* The lowest record: give its bytes back to the free space. */
    hdr_put(node, HDR_HEAP, heap + len);
  } else {
    hdr_put(node, HDR_GARBAGE, hdr_get(node, HDR_GARBAGE) + len);
  }
  for (uint32_t i = index; i + 1 < count; i++)
    slot_store(node, i, slot_load(node, i + 1));
  hdr_put(node, HDR_COUNT, count - 1);
}

/* Append src's records to the empty dst in order (dst ends compact).  BF_FULL
** at the first record that does not fit; dst then holds the records before
** it.  Types and reference bits are kept. */
int bf_node_copy(uint8_t *dst, const uint8_t *src) {
  assert(bf_node_count(dst) == 0 && dst != src);
  uint32_t count = hdr_get(src, HDR_COUNT);
  for (uint32_t i = 0; i < count; i++) {
    uint64_t s = slot_load(src, i);
    uint32_t klen = slot_klen(s), vlen = slot_vlen(s);
    if (bf_node_free(dst) < BF_SLOT_SIZE + klen + vlen) return BF_FULL;
    const uint8_t *k = src + slot_off(s);
    insert_at(dst, i, k, klen, (int)slot_type(s), k + klen, vlen,
              (s & SLOT_REF_BIT) != 0);
  }
  return BF_OK;
}

/* ------------------------------------------------------------------------
** Checking.
*/
static int corrupt(char *errbuf, size_t errbuf_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int corrupt(char *errbuf, size_t errbuf_size, const char *fmt, ...) {
  if (errbuf && errbuf_size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errbuf_size, fmt, ap);
    va_end(ap);
  }
  return BF_CORRUPT_BKPT;
}

/* Mark bits [a, b) of map; returns false when one was already set. */
static bool bitmap_claim(uint64_t *map, uint32_t a, uint32_t b) {
  while (a < b) {
    uint32_t w = a / 64, bit = a % 64;
    uint32_t n = 64 - bit;
    if (n > b - a) n = b - a;
    uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << bit;
    if (map[w] & mask) return false;
    map[w] |= mask;
    a += n;
  }
  return true;
}

/*
** Verify N1..N6 of the node at node, which must have exactly size readable
** bytes: the node's size field must equal size.  Reads nothing before its
** bounds are established, so any bytes are safe.  BF_OK or BF_CORRUPT with
** the first problem in errbuf (NUL-terminated, truncated to errbuf_size).
** Uses a 4 KiB stack bitmap for the overlap check.
*/
int bf_node_check(const uint8_t *node, uint32_t size, char *errbuf,
                  size_t errbuf_size) {
  if (size < BF_NODE_HEADER || size > BF_MAX_NODE_SIZE || size % 8 != 0)
    return corrupt(errbuf, errbuf_size, "node: bad expected size %u", size);
  uint32_t nsize = hdr_get(node, HDR_SIZE);
  uint32_t count = hdr_get(node, HDR_COUNT);
  uint32_t heap = hdr_get(node, HDR_HEAP);
  uint32_t garbage = hdr_get(node, HDR_GARBAGE);
  if (nsize != size)
    return corrupt(errbuf, errbuf_size, "node: size field %u, expected %u",
                   nsize, size);
  if ((uint64_t)BF_NODE_HEADER + (uint64_t)BF_SLOT_SIZE * count > heap ||
      heap > size)
    return corrupt(errbuf, errbuf_size,
                   "node: count %u and heap_start %u do not fit size %u",
                   count, heap, size);
  if (garbage > size - heap)
    return corrupt(errbuf, errbuf_size,
                   "node: garbage %u exceeds heap bytes %u", garbage,
                   size - heap);

  /* One bit per heap byte, relative to heap_start (N3). */
  uint64_t map[BF_MAX_NODE_SIZE / 64];
  memset(map, 0, ((size - heap + 63) / 64) * sizeof map[0]);
  uint32_t total = 0;
  const uint8_t *prev_key = NULL;
  uint32_t prev_len = 0;
  for (uint32_t i = 0; i < count; i++) {
    uint64_t s = slot_load(node, i);
    uint32_t off = slot_off(s), klen = slot_klen(s), vlen = slot_vlen(s);
    uint32_t len = klen + vlen;
    if (off < heap || off > size || len > size - off)
      return corrupt(errbuf, errbuf_size,
                     "node: record %u [%u, +%u) outside heap [%u, %u)", i, off,
                     len, heap, size);
    if (!bitmap_claim(map, off - heap, off - heap + len))
      return corrupt(errbuf, errbuf_size, "node: record %u overlaps another",
                     i);
    const uint8_t *key = node + off;
    if (slot_la(s) != key_lookahead(key, klen))
      return corrupt(errbuf, errbuf_size,
                     "node: record %u look-ahead 0x%04x, key says 0x%04x", i,
                     slot_la(s), key_lookahead(key, klen));
    if (i > 0 && bf_key_compare(prev_key, prev_len, key, klen) >= 0)
      return corrupt(errbuf, errbuf_size,
                     "node: record %u key not above record %u", i, i - 1);
    prev_key = key;
    prev_len = klen;
    total += len;
  }
  if (garbage != size - heap - total)
    return corrupt(errbuf, errbuf_size,
                   "node: garbage %u, heap %u bytes, records %u bytes",
                   garbage, size - heap, total);
  return BF_OK;
}

/* ------------------------------------------------------------------------
** Leaf pages.
*/
#define LEAF_CRC 0
#define LEAF_MAGIC 4
#define LEAF_LSN 8
#define LEAF_PAGENO 16
#define LEAF_LOW_LEN 24
#define LEAF_HIGH_LEN 26
#define LEAF_PREFIX 28
#define LEAF_FLAGS 30

static inline uint32_t leaf_node_offset(uint32_t low_len, uint32_t high_len) {
  return (BF_LEAF_HEADER + low_len + high_len + 7) & ~7u;
}

static uint32_t common_prefix(const uint8_t *a, uint32_t alen,
                              const uint8_t *b, uint32_t blen) {
  uint32_t n = alen < blen ? alen : blen, i = 0;
  while (i < n && a[i] == b[i]) i++;
  return i;
}

static bool page_size_valid(uint32_t page_size) {
  return page_size >= 512 && page_size <= BF_MAX_NODE_SIZE &&
         (page_size & (page_size - 1)) == 0;
}

void bf_leaf_init(uint8_t *page, uint32_t page_size, const uint8_t *low,
                  uint32_t low_len, const uint8_t *high, uint32_t high_len,
                  struct bf_leaf *out) {
  assert(page_size_valid(page_size));
  uint32_t flags = 0;
  if (!low) {
    low_len = 0;
    flags |= BF_LEAF_LOW_INF;
  }
  if (!high) {
    high_len = 0;
    flags |= BF_LEAF_HIGH_INF;
  }
  assert(low_len <= BF_MAX_KEY_LIMIT && high_len <= BF_MAX_KEY_LIMIT);
  assert(!low || !high || bf_key_compare(low, low_len, high, high_len) < 0);
  uint32_t node_off = leaf_node_offset(low_len, high_len);
  assert(node_off + BF_NODE_HEADER <= page_size);
  uint32_t prefix = low && high ? common_prefix(low, low_len, high, high_len)
                                : 0;
  /* Zero everything, so unused bytes never carry stale memory to disk. */
  memset(page, 0, page_size);
  bf_put32(page + LEAF_MAGIC, BF_LEAF_MAGIC);
  bf_put16(page + LEAF_LOW_LEN, (uint16_t)low_len);
  bf_put16(page + LEAF_HIGH_LEN, (uint16_t)high_len);
  bf_put16(page + LEAF_PREFIX, (uint16_t)prefix);
  bf_put16(page + LEAF_FLAGS, (uint16_t)flags);
  if (low_len) memcpy(page + BF_LEAF_HEADER, low, low_len);
  if (high_len) memcpy(page + BF_LEAF_HEADER + low_len, high, high_len);
  bf_node_init(page + node_off, page_size - node_off);
  if (out) bf_leaf_view(page, page_size, out);
}

void bf_leaf_view(uint8_t *page, uint32_t page_size, struct bf_leaf *out) {
  uint32_t low_len = bf_get16(page + LEAF_LOW_LEN);
  uint32_t high_len = bf_get16(page + LEAF_HIGH_LEN);
  uint32_t flags = bf_get16(page + LEAF_FLAGS);
  out->page = page;
  out->node = page + leaf_node_offset(low_len, high_len);
  out->low = flags & BF_LEAF_LOW_INF ? NULL : page + BF_LEAF_HEADER;
  out->high =
      flags & BF_LEAF_HIGH_INF ? NULL : page + BF_LEAF_HEADER + low_len;
  out->low_len = low_len;
  out->high_len = high_len;
  out->prefix_len = bf_get16(page + LEAF_PREFIX);
  out->page_size = page_size;
  out->lsn = bf_get64(page + LEAF_LSN);
}

void bf_leaf_seal(uint8_t *page, uint32_t page_size, uint64_t pageno,
                  uint64_t lsn) {
  bf_put64(page + LEAF_LSN, lsn);
  bf_put64(page + LEAF_PAGENO, pageno);
  bf_put32(page + LEAF_CRC, bf_crc32c(0, page + 4, page_size - 4));
}

int bf_leaf_verify(uint8_t *page, uint32_t page_size, uint64_t pageno,
                   struct bf_leaf *out, char *errbuf, size_t errbuf_size) {
  if (!page_size_valid(page_size))
    return corrupt(errbuf, errbuf_size, "leaf: bad page size %u", page_size);
  uint32_t crc = bf_crc32c(0, page + 4, page_size - 4);
  if (crc != bf_get32(page + LEAF_CRC))
    return corrupt(errbuf, errbuf_size,
                   "leaf %llu: checksum 0x%08x, computed 0x%08x",
                   (unsigned long long)pageno, bf_get32(page + LEAF_CRC), crc);
  if (bf_get32(page + LEAF_MAGIC) != BF_LEAF_MAGIC)
    return corrupt(errbuf, errbuf_size, "leaf %llu: bad magic 0x%08x",
                   (unsigned long long)pageno, bf_get32(page + LEAF_MAGIC));
  uint64_t stored_pageno = bf_get64(page + LEAF_PAGENO);
  if (stored_pageno != pageno)
    return corrupt(errbuf, errbuf_size, "leaf %llu: page claims number %llu",
                   (unsigned long long)pageno,
                   (unsigned long long)stored_pageno);
  uint32_t low_len = bf_get16(page + LEAF_LOW_LEN);
  uint32_t high_len = bf_get16(page + LEAF_HIGH_LEN);
  uint32_t prefix = bf_get16(page + LEAF_PREFIX);
  uint32_t flags = bf_get16(page + LEAF_FLAGS);
  if (flags & ~(uint32_t)(BF_LEAF_LOW_INF | BF_LEAF_HIGH_INF))
    return corrupt(errbuf, errbuf_size, "leaf %llu: unknown flags 0x%x",
                   (unsigned long long)pageno, flags);
  if (((flags & BF_LEAF_LOW_INF) && low_len) ||
      ((flags & BF_LEAF_HIGH_INF) && high_len))
    return corrupt(errbuf, errbuf_size,
                   "leaf %llu: infinite fence with length",
                   (unsigned long long)pageno);
  if (low_len > BF_MAX_KEY_LIMIT || high_len > BF_MAX_KEY_LIMIT ||
      leaf_node_offset(low_len, high_len) + BF_NODE_HEADER > page_size)
    return corrupt(errbuf, errbuf_size,
                   "leaf %llu: fence lengths %u, %u do not fit the page",
                   (unsigned long long)pageno, low_len, high_len);
  const uint8_t *low = page + BF_LEAF_HEADER;
  const uint8_t *high = low + low_len;
  bool low_inf = flags & BF_LEAF_LOW_INF, high_inf = flags & BF_LEAF_HIGH_INF;
  uint32_t want_prefix = 0;
  if (!low_inf && !high_inf) {
    if (bf_key_compare(low, low_len, high, high_len) >= 0)
      return corrupt(errbuf, errbuf_size, "leaf %llu: low fence >= high",
                     (unsigned long long)pageno);
    want_prefix = common_prefix(low, low_len, high, high_len);
  }
  if (prefix != want_prefix)
    return corrupt(errbuf, errbuf_size, "leaf %llu: prefix %u, fences say %u",
                   (unsigned long long)pageno, prefix, want_prefix);
  uint32_t node_off = leaf_node_offset(low_len, high_len);
  uint8_t *node = page + node_off;
  char nodemsg[160];
  if (bf_node_check(node, page_size - node_off, nodemsg, sizeof nodemsg))
    return corrupt(errbuf, errbuf_size, "leaf %llu: %s",
                   (unsigned long long)pageno, nodemsg);
  /* Keys ascend (N4) and share the prefix, which both fences start with:
  ** checking the first against low and the last against high suffices
  ** (L7), comparing the fences' bytes after the prefix. */
  uint32_t count = bf_node_count(node);
  if (count > 0) {
    struct bf_record r;
    bf_node_record(node, 0, &r);
    if (!low_inf &&
        bf_key_compare(r.key, r.key_len, low + prefix, low_len - prefix) < 0)
      return corrupt(errbuf, errbuf_size, "leaf %llu: key below low fence",
                     (unsigned long long)pageno);
    bf_node_record(node, count - 1, &r);
    if (!high_inf && bf_key_compare(r.key, r.key_len, high + prefix,
                                    high_len - prefix) >= 0)
      return corrupt(errbuf, errbuf_size,
                     "leaf %llu: key not below high fence",
                     (unsigned long long)pageno);
  }
  if (out) bf_leaf_view(page, page_size, out);
  return BF_OK;
}

bool bf_leaf_contains(const struct bf_leaf *leaf, const uint8_t *key,
                      uint32_t key_len) {
  if (leaf->low &&
      bf_key_compare(key, key_len, leaf->low, leaf->low_len) < 0)
    return false;
  if (leaf->high &&
      bf_key_compare(key, key_len, leaf->high, leaf->high_len) >= 0)
    return false;
  return true;
}

/*
** Strip the prefix and search the node.  A key that does not start with the
** prefix (outside the fences: a caller bug) gives false with *index 0 when
** it sorts below the prefix, bf_node_count() when above; nothing past
** key[key_len) or the prefix is read.
*/
bool bf_leaf_search(const struct bf_leaf *leaf, const uint8_t *key,
                    uint32_t key_len, uint32_t *index) {
  uint32_t p = leaf->prefix_len;
  if (p) {
    /* A key outside the fences (contract violation) that does not start with
    ** the prefix sorts before or after every record: never read past it. */
    int c = bf_key_compare(key, key_len < p ? key_len : p, leaf->low, p);
    if (c != 0 || key_len < p) {
      *index = c < 0 || (c == 0 && key_len < p) ? 0 : bf_node_count(leaf->node);
      return false;
    }
  }
  return bf_node_search(leaf->node, key + p, key_len - p, index);
}

uint32_t bf_leaf_full_key(const struct bf_leaf *leaf, uint32_t index,
                          uint8_t *buf) {
  struct bf_record r;
  bf_node_record(leaf->node, index, &r);
  uint32_t p = leaf->prefix_len;
  if (p) memcpy(buf, leaf->low, p);
  if (r.key_len) memcpy(buf + p, r.key, r.key_len);
  return p + r.key_len;
}
