/*
** bf_int.h: internal interfaces of the Bf-Tree engine, one section per file.
**
** Nothing here is visible to users of bftree.h.  Each section states the
** contract of its file; the file itself documents formats and invariants.
**
** Layering (a file may call only the files above it):
**
**   bf_util.c    checksums, byte order, random numbers, status text, fault
**                injection, aligned allocation
**   bf_page.c    the node layout shared by mini-pages and leaf pages, and the
**                leaf page envelope (fences, prefix, checksum)
**   bf_latch.c   reader/writer latches for leaves (mapping table entries)
**   bf_map.c     the mapping table: leaf id -> { latch, mini-page, disk page }
**   bf_buf.c     the circular buffer of mini-page blocks
**   bf_inner.c   pinned inner nodes with optimistic version latches
**   bf_io.c      the data file: io_uring / pread, O_DIRECT / buffered, locks
**   bf_ckpt.c    superblocks, disk page allocation, checkpoint metadata
**   bf_tree.c    open/close, get/put/delete, mini-page lifecycle, merge,
**                split, eviction
**   bf_scan.c    cursors
*/
#ifndef BF_INT_H
#define BF_INT_H

#include "bftree.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>

/* ------------------------------------------------------------------------
** Defensive-programming macros (after SQLite's).
**
** ALWAYS(X) and NEVER(X) surround conditions believed always true / always
** false; debug builds assert, release builds keep the check.
*/
#ifdef NDEBUG
#define ALWAYS(X) (X)
#define NEVER(X) (X)
#else
#include <assert.h>
#define ALWAYS(X) ((X) ? 1 : (assert(0), 0))
#define NEVER(X) ((X) ? (assert(0), 1) : 0)
#endif
#include <assert.h>

#define BF_UNUSED(x) ((void)(x))

/* Report where a corruption status was first detected (debug builds log it). */
int bf_error_bkpt(int status, const char *file, int line);
#define BF_CORRUPT_BKPT bf_error_bkpt(BF_CORRUPT, __FILE__, __LINE__)
#define BF_IOERR_BKPT bf_error_bkpt(BF_IOERR, __FILE__, __LINE__)

/* ========================================================================
** Functions from bf_util.c
*/

/* Little-endian loads and stores (memcpy based; no alignment needed). */
static inline uint16_t bf_get16(const uint8_t *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t bf_get32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
         ((uint32_t)p[3] << 24);
}
static inline uint64_t bf_get64(const uint8_t *p) {
  return (uint64_t)bf_get32(p) | ((uint64_t)bf_get32(p + 4) << 32);
}
static inline void bf_put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static inline void bf_put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}
static inline void bf_put64(uint8_t *p, uint64_t v) {
  bf_put32(p, (uint32_t)v);
  bf_put32(p + 4, (uint32_t)(v >> 32));
}

/* Big-endian 8-byte load (compilers turn the shifts into one load and a
** byte swap), so that integer order of two loads is memcmp order. */
static inline uint64_t bf_load_be64(const uint8_t *p) {
  return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) |
         ((uint64_t)p[2] << 40) | ((uint64_t)p[3] << 32) |
         ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
         ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}

/* memcmp(a, b, n) as -1/0/1, eight bytes at a time: keys are short, and a
** call into libc costs more than the comparison. */
static inline int bf_bytes_compare(const uint8_t *a, const uint8_t *b,
                                   size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x = bf_load_be64(a + i), y = bf_load_be64(b + i);
    if (x != y) return x < y ? -1 : 1;
  }
  for (; i < n; i++)
    if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
  return 0;
}

/* Compare two keys: memcmp over the common length, then shorter first.
** Returns <0, 0, >0. */
static inline int bf_key_compare(const uint8_t *a, size_t alen,
                                 const uint8_t *b, size_t blen) {
  size_t n = alen < blen ? alen : blen;
  int c = bf_bytes_compare(a, b, n);
  if (c) return c;
  return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

/* CRC-32C (Castagnoli) of buf[0..len), continuing from crc (start with 0). */
uint32_t bf_crc32c(uint32_t crc, const void *buf, size_t len);

/* A small fast PRNG (xoshiro-style), one per thread; seeded once per thread
** from bf_random_seed() mixed with the thread's identity. */
void bf_random_seed(uint64_t seed);
uint64_t bf_random(void);
/* True with probability percent/100. */
bool bf_random_percent(uint32_t percent);
/* A bijection on 64-bit integers whose every output bit depends on every
** input bit (splitmix64's finalizer): for hashing. */
uint64_t bf_mix64(uint64_t z);

/* Aligned allocation (alignment a power of two, >= sizeof(void *); I/O
** buffers use >= 512).
** Returns NULL when out of memory (or when the fault simulator says so).
** Free with bf_free_aligned(). */
void *bf_malloc_aligned(size_t alignment, size_t size);
void bf_free_aligned(void *p);

/* malloc/calloc/free wrappers that honour the fault simulator. */
void *bf_malloc(size_t size);
void *bf_calloc(size_t count, size_t size);
void bf_free(void *p);
/* Return free heap memory to the system (glibc malloc_trim; else nothing). */
void bf_release_free_memory(void);

/* Large transient blocks (a checkpoint's leaf image and leaf ids, the
** flush batch): mapped and unmapped directly, page-aligned, so that their
** memory goes back to the system when freed.  Left to malloc, glibc maps
** them too, but freeing a mapped block raises its mapping threshold to the
** block's size, after which such blocks stay resident in the heap of the
** thread that freed them (2-4 MiB with four writer threads taking turns at
** checkpoints).  bf_big_alloc consults BF_FAULT_MALLOC; bf_big_realloc
** (growing from NULL/0 too) does not, as the realloc it replaces did not.
** Sizes are the caller's to remember: free and realloc take them. */
void *bf_big_alloc(size_t size);
void *bf_big_realloc(void *p, size_t old_size, size_t new_size);
void bf_big_free(void *p, size_t size);

/* A malloc()ed printf. Returns NULL when out of memory. */
char *bf_mprintf(const char *format, ...)
    __attribute__((format(printf, 1, 2)));

/*
** Fault injection.  Compiled only with -DBF_TESTING; without it
** bf_faultsim() is a constant 0.  Ids are never reused.
**
** bf_faultsim_set(id, n, persist): the n-th next call of bf_faultsim(id)
** (n >= 1) returns 1; with persist, so does every call after it.  n == 0
** disarms.  bf_faultsim_hits(id) counts injected faults since the last set.
*/
enum bf_fault {
  BF_FAULT_MALLOC = 0,   /* every bf_malloc/bf_calloc/bf_malloc_aligned */
  BF_FAULT_READ = 1,     /* every data-file read */
  BF_FAULT_WRITE = 2,    /* every data-file write */
  BF_FAULT_SYNC = 3,     /* every fsync/fdatasync */
  BF_FAULT_URING = 4,    /* io_uring set-up (simulates io_uring refused) */
  BF_FAULT_ENOSPC = 5,   /* a write fails with ENOSPC instead of EIO */
  BF_FAULT_CRASH = 6,    /* every data-file and log write: the process
                         ** exits (code BF_CRASH_EXIT) instead of writing;
                         ** with BF_CRASH_TORN=1 in the environment it first
                         ** writes the first half (a torn write) */
  BF_FAULT_COUNT
};
#define BF_CRASH_EXIT 86
#ifdef BF_TESTING
/* At a crash point: exits the process when BF_FAULT_CRASH fires. */
void bf_crash_point(int fd, const void *buf, size_t len, uint64_t offset);
int bf_faultsim(enum bf_fault id);
void bf_faultsim_set(enum bf_fault id, long n, bool persist);
long bf_faultsim_hits(enum bf_fault id);
#else
#define bf_faultsim(id) 0
#define bf_crash_point(fd, buf, len, offset) ((void)0)
#endif

/* ========================================================================
** Functions from bf_page.c: the node layout and the leaf page envelope.
**
** A NODE is a byte range [node, node+size) holding sorted records:
**
**   OFFSET SIZE DESCRIPTION
**   0      2    size: bytes of the whole node (<= 32768)
**   2      2    count: number of records (slots)
**   4      2    heap_start: lowest offset used by the record heap
**   6      2    garbage: heap bytes that belong to no record
**   8      8*n  slots, sorted by key, one little-endian u64 each
**   ...         free space
**   heap_start  record heap: key bytes then value bytes, growing downward
**
** A slot (u64, little-endian, 8-byte aligned):
**   bits  0..15 heap offset of the record's key (value follows the key)
**   bits 16..29 key length (< 16384)
**   bits 30..31 record type (enum bf_rec_type)
**   bits 32..46 value length (< 32768)
**   bit  47     reference bit (set by readers, used by copy-on-access)
**   bits 48..63 look-ahead: the first two key bytes, big-endian, zero padded
**
** Slots may be read while other threads hold the same shared latch and set
** reference bits, so slots are always loaded and stored as relaxed atomics
** (bf_page.c does this).  Everything else in a node is protected by the
** owning leaf's latch.  The node pointer must be 8-byte aligned.
*/
#define BF_NODE_HEADER 8
#define BF_SLOT_SIZE 8
#define BF_MAX_NODE_SIZE 32768
#define BF_MAX_KEY_LIMIT 16383   /* slot field width */
#define BF_MAX_VALUE_LIMIT 32767 /* slot field width */

enum bf_rec_type {
  BF_REC_INSERT = 0,    /* dirty: the key's newest value */
  BF_REC_TOMBSTONE = 1, /* dirty: the key was deleted */
  BF_REC_CACHE = 2,     /* clean: a copy of the record on the leaf page */
  BF_REC_PHANTOM = 3    /* clean: the leaf page does not hold the key */
};

/* A decoded record.  Pointers point into the node. */
struct bf_record {
  const uint8_t *key;
  const uint8_t *value;
  uint32_t key_len;
  uint32_t value_len;
  uint8_t type;         /* enum bf_rec_type */
  bool referenced;
};

/* True for record types that must be written to the leaf page. */
static inline bool bf_rec_is_dirty(int type) {
  return type == BF_REC_INSERT || type == BF_REC_TOMBSTONE;
}

/* Bytes a record takes in a node: slot + key + value. */
static inline uint32_t bf_record_space(uint32_t key_len, uint32_t value_len) {
  return BF_SLOT_SIZE + key_len + value_len;
}

/* Make node an empty node of size bytes (size >= BF_NODE_HEADER, a multiple
** of 8, <= BF_MAX_NODE_SIZE). */
void bf_node_init(uint8_t *node, uint32_t size);

uint32_t bf_node_size(const uint8_t *node);
uint32_t bf_node_count(const uint8_t *node);
/* Contiguous free bytes between the slots and the heap. */
uint32_t bf_node_free(const uint8_t *node);
/* Bytes that compaction would make free (free + garbage). */
uint32_t bf_node_reclaimable(const uint8_t *node);
/* Bytes used by records (slots + heap - garbage), excluding the header. */
uint32_t bf_node_used(const uint8_t *node);

/*
** Binary search for key (using the look-ahead bytes first; on equal
** look-ahead the full keys are compared).  Returns true when a record with
** exactly this key exists, with *index its position; otherwise false with
** *index the position where it would be inserted (0..count).
** Safe under a shared latch.
*/
bool bf_node_search(const uint8_t *node, const uint8_t *key, uint32_t key_len,
                    uint32_t *index);

/* Decode record index (< count).  Safe under a shared latch. */
void bf_node_record(const uint8_t *node, uint32_t index, struct bf_record *out);

/* Set the reference bit of record index with an atomic OR.  Safe under a
** shared latch (the only write allowed there). */
void bf_node_mark_referenced(uint8_t *node, uint32_t index);

/* Clear every reference bit.  Exclusive latch. */
void bf_node_clear_references(uint8_t *node);

/*
** Insert the record, or replace the record with the same key (its type,
** value and reference bit all replaced; the reference bit of the new record
** is clear).  Compacts the node when that makes room.  Returns BF_OK, or
** BF_FULL when it does not fit even after compaction, leaving the node
** unchanged.  BF_TOOBIG when key_len > BF_MAX_KEY_LIMIT or value_len >
** BF_MAX_VALUE_LIMIT.  key and value must not point into node (compaction
** moves records).  Exclusive latch.
*/
int bf_node_upsert(uint8_t *node, const uint8_t *key, uint32_t key_len,
                   int type, const uint8_t *value, uint32_t value_len);

/* Append a record whose key is greater than every key in the node (bulk
** building).  BF_OK or BF_FULL (node unchanged). */
int bf_node_append(uint8_t *node, const uint8_t *key, uint32_t key_len,
                   int type, const uint8_t *value, uint32_t value_len,
                   bool referenced);

/* Change the type of record index in place (e.g. INSERT -> CACHE after a
** merge).  Exclusive latch. */
void bf_node_set_type(uint8_t *node, uint32_t index, int type);

/* Remove record index; its heap bytes become garbage. Exclusive latch. */
void bf_node_remove(uint8_t *node, uint32_t index);

/* Rewrite the heap so that garbage becomes free space.  Record order,
** types and reference bits are kept. */
void bf_node_compact(uint8_t *node);

/* Copy every record of src into dst (an empty node of any size) in order,
** keeping types and reference bits; compacts on the way.  BF_OK or BF_FULL
** (dst then holds a prefix of src's records: the caller discards it). */
int bf_node_copy(uint8_t *dst, const uint8_t *src);

/* Structural check (size must equal the node's size field): bounds, ordering (strictly ascending keys), slot and
** heap overlap, look-ahead bytes, garbage accounting.  Returns BF_OK or
** BF_CORRUPT with a description in errbuf (may be NULL). Usable on bytes
** read from disk (never trusts a field before checking it). */
int bf_node_check(const uint8_t *node, uint32_t size, char *errbuf,
                  size_t errbuf_size);

/*
** A LEAF PAGE is page_size bytes, on disk or as a full-page mini-page:
**
**   OFFSET SIZE DESCRIPTION
**   0      4    CRC-32C of bytes [4, page_size)
**   4      4    magic "BFLF"
**   8      8    lsn: log sequence number of the newest change it holds
**   16     8    page number of the page on disk (catches misdirected I/O)
**   24     2    low fence length
**   26     2    high fence length
**   28     2    prefix length: bytes every key of the leaf starts with
**   30     2    flags: 1 = no low fence (-inf), 2 = no high fence (+inf)
**   32     L+H  low fence bytes, then high fence bytes
**   node_offset = round_up(32 + L + H, 8): the node, to the end of the page
**
** The leaf holds the keys k with low <= k < high.  The prefix is the common
** prefix of the two fences (0 when either is infinite); records store their
** keys without it.  On disk every record has type BF_REC_INSERT; in a
** full-page mini-page records may have any type.
*/
#define BF_LEAF_HEADER 32
#define BF_LEAF_MAGIC 0x464c4642u /* "BFLF" little-endian */
#define BF_LEAF_LOW_INF 1
#define BF_LEAF_HIGH_INF 2

/* A parsed leaf page.  Pointers point into the page. */
struct bf_leaf {
  uint8_t *page;
  uint8_t *node;          /* page + node_offset */
  const uint8_t *low;     /* NULL when -inf */
  const uint8_t *high;    /* NULL when +inf */
  uint32_t low_len, high_len;
  uint32_t prefix_len;    /* leading bytes of low (or high) */
  uint32_t page_size;
  uint64_t lsn;
};

/* Make page an empty leaf with the given fences (NULL = infinite); fill
** *out.  Fences must satisfy low < high; each at most max key size. */
void bf_leaf_init(uint8_t *page, uint32_t page_size, const uint8_t *low,
                  uint32_t low_len, const uint8_t *high, uint32_t high_len,
                  struct bf_leaf *out);

/* Parse a leaf page in memory without verifying the checksum (used for
** full-page mini-pages, which were verified when read). */
void bf_leaf_view(uint8_t *page, uint32_t page_size, struct bf_leaf *out);

/*
** Verify and parse a page read from disk at page number pageno: checksum,
** magic, page number, fence lengths, fence order, prefix, and
** bf_node_check() of the node.  BF_OK or BF_CORRUPT (errbuf says why).
*/
int bf_leaf_verify(uint8_t *page, uint32_t page_size, uint64_t pageno,
                   struct bf_leaf *out, char *errbuf, size_t errbuf_size);

/* Stamp page number, lsn and checksum before the page is written. */
void bf_leaf_seal(uint8_t *page, uint32_t page_size, uint64_t pageno,
                  uint64_t lsn);

/* True when key lies in [low, high) of the leaf. */
bool bf_leaf_contains(const struct bf_leaf *leaf, const uint8_t *key,
                      uint32_t key_len);

/* Look a full key up in the leaf (strips the prefix).  Returns true when
** found, with *index set; *index is the insertion point otherwise.  The key
** must lie within the fences. */
bool bf_leaf_search(const struct bf_leaf *leaf, const uint8_t *key,
                    uint32_t key_len, uint32_t *index);

/* Copy the full key of record index (prefix + stored key) into buf, which
** holds at least prefix_len + key_len bytes; returns the length. */
uint32_t bf_leaf_full_key(const struct bf_leaf *leaf, uint32_t index,
                          uint8_t *buf);

/* ========================================================================
** Functions from bf_latch.c: reader/writer latches on a 32-bit word.
**
** Spin briefly, then yield, then sleep in short naps.  Writers get
** preference: a waiting writer stops new readers.  Not recursive.
*/
typedef _Atomic uint32_t bf_latch;

void bf_latch_shared(bf_latch *latch);
void bf_unlatch_shared(bf_latch *latch);
void bf_latch_exclusive(bf_latch *latch);
void bf_unlatch_exclusive(bf_latch *latch);
bool bf_try_latch_shared(bf_latch *latch);
bool bf_try_latch_exclusive(bf_latch *latch);
/* Shared -> exclusive when the caller is the only holder; otherwise returns
** false and the caller still holds its shared latch. */
bool bf_try_upgrade(bf_latch *latch);
/* Exclusive -> shared, atomically. */
void bf_downgrade(bf_latch *latch);
/* For asserts: some writer holds it / some reader holds it. */
bool bf_latch_held_exclusive(bf_latch *latch);
bool bf_latch_held_shared(bf_latch *latch);

/* ========================================================================
** Functions from bf_map.c: the mapping table.
**
** Leaf ids are dense, assigned by bf_map_add(), never reused while open.
** Entries live in fixed chunks that never move, so a pointer to an entry
** stays valid until bf_map_destroy().  bf_map_get() takes no lock.
*/
#define BF_NO_PAGE 0 /* disk_page value of a leaf not yet written */

struct bf_leaf_entry {
  bf_latch latch;
  /* Protected by latch (exclusive to change, shared to read): */
  uint32_t flags;               /* BF_ENTRY_* */
  _Atomic(uint8_t *) mini;      /* the leaf's mini-page node, or NULL; stored
                                ** with release under the exclusive latch,
                                ** read relaxed by statistics */
  uint64_t disk_page;           /* page number of the leaf page */
  uint32_t page_version;        /* bumped before every write of the leaf's
                                ** page (in place or moved): a copy read
                                ** at an older version is stale */
};
#define BF_ENTRY_IN_CHECKPOINT 1  /* disk_page is referenced by the last
                                  ** checkpoint: never overwrite it */

struct bf_map;
int bf_map_create(struct bf_map **out);
void bf_map_destroy(struct bf_map *map);
/* Allocate a new entry (zeroed, latch free); *id gets its id. BF_NOMEM. */
int bf_map_add(struct bf_map *map, uint32_t *id, struct bf_leaf_entry **entry);
/* The entry of id (id < bf_map_count()). */
struct bf_leaf_entry *bf_map_get(struct bf_map *map, uint32_t id);
uint32_t bf_map_count(const struct bf_map *map);
uint64_t bf_map_bytes(const struct bf_map *map);

/* ========================================================================
** Functions from bf_buf.c: the circular buffer.
**
** One allocation of exactly `size` bytes.  Blocks are allocated at the tail
** and evicted at the head; both are logical (ever-growing) byte offsets.
** Every block starts with an 8-byte header:
**   0 4 state word (atomic): bits 0..7 state, bits 8..15 size class
**   4 4 leaf id (atomic)
** followed by the mini-page: class_size(class) bytes.  A padding block,
** written when an allocation would cross the physical end, runs to the end.
**
** Size classes: 64, 128, ..., page_size (doubling).  The largest class is a
** full-page mini-page (a whole leaf page image, bf_leaf format).
**
** Block states and transitions (function performing each):
**   NOT_READY -> READY                  [bf_buf_publish]
**   NOT_READY -> TOMBSTONE / FREELISTED [bf_buf_abort]
**   READY -> BEGIN_TOMBSTONE -> TOMBSTONE or FREELISTED   [bf_buf_free]
**   FREELISTED -> NOT_READY             [bf_buf_alloc, from a free list]
**   TOMBSTONE / FREELISTED -> EVICTED   [bf_buf_evict_next]
**   READY / TOMBSTONE (claimed) -> EVICTED  [bf_buf_evict_done]
** The head advances only over consecutive EVICTED blocks.
*/
enum bf_block_state {
  BF_BLOCK_NOT_READY = 1,
  BF_BLOCK_READY = 2,
  BF_BLOCK_BEGIN_TOMBSTONE = 3,
  BF_BLOCK_TOMBSTONE = 4,
  BF_BLOCK_FREELISTED = 5,
  BF_BLOCK_EVICTED = 6
};

struct bf_buf;

/* Create a buffer of size bytes (rounded down to a multiple of 64) for
** leaf pages of page_size.  BF_INVALID if size < 16 * (page_size + 8);
** BF_NOMEM. */
int bf_buf_create(uint64_t size, uint32_t page_size, struct bf_buf **out);
void bf_buf_destroy(struct bf_buf *buf);
/* Give the buffer's memory back to the OS ahead of bf_buf_destroy (a closing
** tree, between its last flush and its checkpoint, so that the checkpoint's
** own allocations do not come on top of a full buffer).  Every block's
** contents are lost: after this, the only valid call is bf_buf_destroy. */
void bf_buf_discard(struct bf_buf *buf);

uint64_t bf_buf_size(const struct bf_buf *buf);
/* Bytes retired by eviction since creation (relaxed hint). */
uint64_t bf_buf_retired(const struct bf_buf *buf);
/* Bytes no block holds (a relaxed hint): allocations up to about this much
** need no eviction. */
uint64_t bf_buf_unused(const struct bf_buf *buf);
uint32_t bf_buf_class_count(const struct bf_buf *buf);
uint32_t bf_buf_class_size(const struct bf_buf *buf, uint32_t size_class);
/* Bytes a block of size_class takes in the buffer: its header and node. */
uint32_t bf_buf_block_size(const struct bf_buf *buf, uint32_t size_class);
/* Smallest class whose mini-page holds bytes; class_count when none. */
uint32_t bf_buf_class_for(const struct bf_buf *buf, uint32_t bytes);
/* The class of the full-page mini-page (class_count - 1). */
uint32_t bf_buf_full_class(const struct bf_buf *buf);

/*
** Allocate a block of size_class for leaf_id, from that class's free list or
** at the tail.  On BF_OK *node points at class_size bytes (8-aligned,
** contents undefined) in state NOT_READY.  Returns BF_RETRY when the space
** is not there without evicting (the caller releases its latches, calls
** bf_tree's eviction, and retries).  Never waits for a latch.
** Each BF_OK must be matched by bf_buf_publish() or bf_buf_abort().
*/
int bf_buf_alloc(struct bf_buf *buf, uint32_t size_class, uint32_t leaf_id,
                 uint8_t **node);
void bf_buf_publish(struct bf_buf *buf, uint8_t *node);
void bf_buf_abort(struct bf_buf *buf, uint8_t *node);

/* Release a READY block that the caller (holding the leaf's exclusive latch)
** has already unlinked from the mapping table. */
void bf_buf_free(struct bf_buf *buf, uint8_t *node);

/* Facts about a block, from its node pointer. */
uint32_t bf_buf_node_class(const uint8_t *node);
uint32_t bf_buf_node_leaf(const uint8_t *node);
int bf_buf_node_state(const uint8_t *node);
/* Change the leaf id of a block (after a split re-homes a mini-page). */
void bf_buf_set_leaf(uint8_t *node, uint32_t leaf_id);

/* True when the block lies in the copy-on-access region: the 10% of the
** buffer nearest the head (and not yet claimed by an evictor). */
bool bf_buf_in_second_chance(const struct bf_buf *buf, const uint8_t *node);

/* True while more than the copy-on-access region's size (10% of the
** buffer) is held by no block: eviction is that far off.  A hint. */
bool bf_buf_filling(const struct bf_buf *buf);

/* True when an allocation of size_class would fail now. */
bool bf_buf_needs_eviction(const struct bf_buf *buf, uint32_t size_class);

/*
** Claim the block at the eviction cursor.  Returns:
**   BF_OK with *node NULL: a dead block (tombstone, free-listed or padding)
**     was retired; call again.
**   BF_OK with *node set: a READY block is now owned by this evictor; the
**     caller latches leaf bf_buf_node_leaf(node) exclusively, evicts the
**     mini-page if bf_buf_node_state(node) is still READY (the leaf's owner
**     may have freed it meanwhile: then it is TOMBSTONE), and always ends
**     with bf_buf_evict_done(node).
**   BF_RETRY: nothing claimable now (the next block is NOT_READY, or every
**     block is already claimed); yield and retry.
*/
int bf_buf_evict_next(struct bf_buf *buf, uint8_t **node);
void bf_buf_evict_done(struct bf_buf *buf, uint8_t *node);

/* Statistics and checking. */
struct bf_buf_stats {
  uint64_t used;                      /* tail - head */
  uint64_t live;                      /* bytes in READY/NOT_READY blocks */
  uint64_t blocks[BF_MAX_SIZE_CLASSES]; /* live blocks per class */
};
void bf_buf_stats(struct bf_buf *buf, struct bf_buf_stats *out);
/* Walk head..tail checking headers, sizes and accounting; BF_OK/BF_CORRUPT
** (BF_NOMEM if its bitmap cannot be allocated).  Run with no concurrent
** activity. */
int bf_buf_check(struct bf_buf *buf, char *errbuf, size_t errbuf_size);
/* Visit every READY block from head to tail (quiescent tree only). */
void bf_buf_for_each_ready(struct bf_buf *buf,
                           void (*visit)(void *ctx, uint8_t *node),
                           void *ctx);

/* ========================================================================
** Functions from bf_sketch.c: the admission filter of read promotion.
*/
struct bf_sketch;
/* A sketch for a buffer of `capacity` bytes whose records are expected to
** take `footprint` bytes each: one 4-bit counter per such record in each of
** 4 rows.  BF_OK or BF_NOMEM (*out NULL). */
int bf_sketch_create(uint64_t capacity, uint32_t footprint,
                     struct bf_sketch **out);
void bf_sketch_destroy(struct bf_sketch *sketch);
/* Count one more disk read of key, whose record takes footprint bytes in
** the buffer (0: unknown); returns the key's estimated count of reads in
** the current window, this one included.  Thread-safe, lock-free. */
uint32_t bf_sketch_add(struct bf_sketch *sketch, const void *key,
                       uint32_t key_len, uint32_t footprint);
/* The key's estimated count without adding. */
uint32_t bf_sketch_estimate(const struct bf_sketch *sketch, const void *key,
                            uint32_t key_len);
/* Halve every counter if a window completed since the last call (the
** aging of bf_sketch.c).  Call it holding no latch: it may take a pass over
** the whole sketch. */
void bf_sketch_age(struct bf_sketch *sketch);
/* Whether an estimate (from bf_sketch_add) is frequent enough to cache. */
bool bf_sketch_admits(uint32_t estimate);
uint32_t bf_sketch_threshold(void);
uint64_t bf_sketch_bytes(const struct bf_sketch *sketch);
uint64_t bf_sketch_halvings(const struct bf_sketch *sketch);

/* ========================================================================
** Functions from bf_inner.c: inner nodes under optimistic version latches.
**
** Inner nodes are node_size bytes (max(4096, page_size)), pinned until
** bf_inner_destroy().  A node's version word: bit 0 obsolete, bit 1 locked,
** the rest a counter.  Readers never write shared memory: they read the
** version, read the node (relaxed atomic loads), and validate the version.
** All structure changes are serialised by one mutex (splits are rare);
** writers lock the version of each node they change so readers restart.
**
** The tree maps every key to exactly one leaf id.  Separators are keys:
** child i of a node covers [sep(i), sep(i+1)).
*/
struct bf_inner;

/* Create an index with one leaf (covering every key). */
int bf_inner_create(uint32_t node_size, uint32_t max_key_size,
                    uint32_t first_leaf, struct bf_inner **out);
/*
** Build an index over n >= 1 leaves in key order: leaf_ids[i] covers
** [low_keys[i], low_keys[i+1]); low_keys[0] is ignored (-inf).  Used at open.
*/
int bf_inner_bulk_load(uint32_t node_size, uint32_t max_key_size, uint32_t n,
                       const uint32_t *leaf_ids, const uint8_t *const *low_keys,
                       const uint32_t *low_lens, struct bf_inner **out);
void bf_inner_destroy(struct bf_inner *inner);

/* Where a lookup landed: enough to validate after latching the leaf, and,
** when asked for, the leaf's fences (copied). */
struct bf_inner_path {
  const void *parent;       /* the bottom inner node */
  uint64_t version;         /* its version when read */
  uint32_t leaf_id;
  /* Filled only with BF_FIND_FENCES: */
  bool low_inf, high_inf;
  uint32_t low_len, high_len;
  uint8_t *low, *high;      /* caller-provided buffers of max_key_size */
};

enum bf_find_mode {
  BF_FIND_KEY = 0,       /* the leaf whose range contains key */
  BF_FIND_BEFORE = 1,    /* the leaf containing the largest keys < key
                         ** (key NULL: the last leaf) */
  BF_FIND_FENCES = 4     /* flag: also copy the leaf's fences into path */
};

/* Find the leaf for key.  Optimistic: restarts internally on conflicts;
** returns BF_OK with *path filled.  key NULL in BF_FIND_KEY mode is the
** empty key.  BF_INVALID for unknown mode bits; BF_CORRUPT only if a
** validated node is malformed. */
int bf_inner_find(struct bf_inner *inner, const uint8_t *key, uint32_t key_len,
                  int mode, struct bf_inner_path *path);

/* After latching path->leaf_id: true when the bottom inner node has not
** changed since bf_inner_find(), so the leaf still covers the key.  When
** false, unlatch and find again. */
bool bf_inner_validate(const struct bf_inner_path *path);

/*
** Record a leaf split: keys >= sep, formerly in leaf left_id, are now in
** right_id.  The caller holds left_id's exclusive latch (so no lookup of
** those keys can complete until this returns).  Splits inner nodes as
** needed (growing the root).  BF_NOMEM leaves the index unchanged.
*/
int bf_inner_insert(struct bf_inner *inner, const uint8_t *sep,
                    uint32_t sep_len, uint32_t left_id, uint32_t right_id);

/* Visit every leaf in key order with its low fence (NULL for the first).
** Holds the structure mutex throughout (no splits meanwhile). Stops and
** returns the first non-OK status of visit.  visit must not call
** bf_inner_insert. */
int bf_inner_for_each_leaf(struct bf_inner *inner,
                           int (*visit)(void *ctx, uint32_t leaf_id,
                                        const uint8_t *low, uint32_t low_len,
                                        const uint8_t *high, uint32_t high_len),
                           void *ctx);

uint64_t bf_inner_node_count(const struct bf_inner *inner);
uint32_t bf_inner_height(const struct bf_inner *inner);
uint64_t bf_inner_bytes(const struct bf_inner *inner);
/* Full check: key order within nodes, separators within parent bounds,
** uniform depth.  Run quiescent. */
int bf_inner_check(struct bf_inner *inner, char *errbuf, size_t errbuf_size);

/* ========================================================================
** Functions from bf_io.c: the data file.
**
** Opens the file (creating it when asked), takes an exclusive flock (BF_BUSY
** when another open file description holds it), chooses O_DIRECT or buffered
** and io_uring or pread/pwrite per the options with the documented
** fallbacks.  Reads and writes are whole, at byte offsets and lengths that
** are multiples of 512, from buffers from bf_malloc_aligned(4096, ...).
** Safe for concurrent use by any number of threads.
*/
struct bf_io;

int bf_io_open(const char *path, int io_mode, int direct_mode, bool create,
               struct bf_io **out, char **errmsg);
void bf_io_close(struct bf_io *io);
/* BF_OK; BF_IOERR on error or on a short read (past the end of the file). */
int bf_io_read(struct bf_io *io, void *buf, size_t len, uint64_t offset);
/* BF_OK; BF_FULL on ENOSPC/EDQUOT; BF_IOERR otherwise. */
int bf_io_write(struct bf_io *io, const void *buf, size_t len,
                uint64_t offset);
/* Several reads or writes in flight at once (io_uring), or one after
** another.  A batch's writes may reach the disk in any order. */
struct bf_io_request {
  void *buf;
  size_t len;
  uint64_t offset;
  int status;          /* OUT: BF_OK / BF_IOERR (writes: also BF_FULL) */
};
int bf_io_read_batch(struct bf_io *io, struct bf_io_request *reqs, size_t n);
int bf_io_write_batch(struct bf_io *io, struct bf_io_request *reqs, size_t n);
int bf_io_sync(struct bf_io *io);
/* Current file size in bytes (BF_IOERR on fstat failure). */
int bf_io_file_size(struct bf_io *io, uint64_t *size);
int bf_io_truncate(struct bf_io *io, uint64_t size);
int bf_io_mode(const struct bf_io *io);     /* BF_IO_URING or BF_IO_PSYNC */
bool bf_io_direct(const struct bf_io *io);
/* Read without O_DIRECT alignment rules (the first bytes of a file of
** unknown page size): reads up to len bytes, *got says how many. */
int bf_io_read_raw(struct bf_io *io, void *buf, size_t len, uint64_t offset,
                   size_t *got);
/* errno of the most recent failed call on io (any thread wins; a
** diagnostic for messages).  ENODATA for a read past the end of the file. */
int bf_io_last_errno(const struct bf_io *io);
#ifdef BF_TESTING
/* While set, bf_io_open treats O_DIRECT as refused by the file system
** (tmpfs takes O_DIRECT since Linux 6.6, so tests need this). */
void bf_io_testing_refuse_direct(bool refuse);
#endif


/* ========================================================================
** Functions from bf_ckpt.c: superblocks, disk page allocation, checkpoint
** metadata.  See the file header for the formats.
*/
#define BF_SUPER_SIZE 512          /* meaningful bytes of a superblock */
#define BF_FIRST_DATA_PAGE 2       /* pages 0 and 1 hold the superblocks */

struct bf_space;                   /* the disk page allocator */

/* The state a checkpoint records (and an open loads). */
struct bf_ckpt_leaf {
  uint64_t disk_page;
  uint32_t low_len;
  uint8_t *low;                    /* NULL for the first leaf */
};
struct bf_ckpt_image {
  uint32_t page_size;
  uint64_t generation;
  uint64_t lsn;             /* log position the checkpoint covers */
  uint64_t file_id;         /* random id of the data file (the log names it) */
  uint64_t last_commit_id;  /* newest commit id included */
  uint64_t leaf_count;
  /* The leaves in key order: as loaded (bf_ckpt_load), in leaves[]; as
  ** written (bf_ckpt_image_add, bf_ckpt_write), in serial, the on-disk form
  ** (about 10 + key bytes per leaf instead of an allocation per key). */
  struct bf_ckpt_leaf *leaves;
  uint8_t *serial;
  size_t serial_len, serial_cap;
};

int bf_space_create(uint64_t next_page, struct bf_space **out);
void bf_space_destroy(struct bf_space *space);
/* A page to write a leaf to: a free page or a new one at the end. */
int bf_space_alloc(struct bf_space *space, uint64_t *page);
/* Give a page back.  in_checkpoint: the last checkpoint references it, so
** it becomes reusable only once the next checkpoint is durable. */
int bf_space_free(struct bf_space *space, uint64_t page, bool in_checkpoint);
uint64_t bf_space_file_pages(struct bf_space *space);
uint64_t bf_space_free_pages(struct bf_space *space);

/* Read the newest valid superblock and the checkpoint it names.  On BF_OK
** *image is filled (free with bf_ckpt_image_free) and *space holds the
** allocator state.  BF_NOTBFTREE when the file has no magic. */
int bf_ckpt_load(struct bf_io *io, struct bf_ckpt_image *image,
                 struct bf_space **space, char **errmsg);
void bf_ckpt_image_free(struct bf_ckpt_image *image);
/* Append a leaf (after every leaf added so far in key order; low NULL for
** the first) to image's serial form.  BF_OK or BF_NOMEM. */
int bf_ckpt_image_add(struct bf_ckpt_image *image, uint64_t disk_page,
                      const uint8_t *low, uint32_t low_len);
/* Probe the superblocks: BF_OK and *page_size, or BF_NOTBFTREE/BF_CORRUPT. */
int bf_ckpt_probe(struct bf_io *io, uint32_t *page_size, char **errmsg);

/* Write image (the leaves with their current disk pages) as the new
** checkpoint: metadata pages, fsync, superblock, fsync; then pages freed
** since the previous checkpoint become reusable.  image->generation is
** incremented.  The caller guarantees no leaf page changes meanwhile.
** On an error, *uncertain says whether the superblock write was under way:
** then the new checkpoint may or may not be durable, the pages of both stay
** reserved, and the caller must write no more (the tree goes read-only
** until reopened, which finds whichever superblock reached the disk). */
int bf_ckpt_write(struct bf_io *io, struct bf_space *space,
                  struct bf_ckpt_image *image, bool *uncertain);


/* ========================================================================
** Functions from bf_wal.c: the write-ahead log.
**
** One log file beside the data file (the caller passes its path, normally
** the data file's path + "-wal").  A log holds, after a header, a sequence
** of transactions; each transaction is appended at once (one call, under
** one lock) as one or more checksummed records ending with a COMMIT record
** that carries the caller's commit id.  An LSN is a byte position in the
** log's history: base_lsn (from the header) + offset past the header; LSNs
** only grow, across resets.
**
** Durability: bf_wal_append() writes (pwrite) before it returns, so the
** transaction survives a process crash; bf_wal_sync(lsn) makes everything
** up to lsn survive power loss, with group commit: concurrent callers share
** one fdatasync (a leader syncs, followers wait on a condition variable and
** return when a sync that started after their append has finished).
** Thread-safe: any number of threads may append and sync at once.
*/
enum bf_wal_op {
  BF_WAL_PUT = 1,
  BF_WAL_DELETE = 2
};

/* The operations of one transaction, built in memory before appending.
** Initialise with memset 0; free with bf_wal_batch_free. */
struct bf_wal_batch {
  uint8_t *data;      /* encoded operations */
  size_t len, cap;
  uint64_t count;     /* operations */
};
int bf_wal_batch_put(struct bf_wal_batch *batch, const uint8_t *key,
                     uint32_t key_len, const uint8_t *value,
                     uint32_t value_len);
int bf_wal_batch_delete(struct bf_wal_batch *batch, const uint8_t *key,
                        uint32_t key_len);
void bf_wal_batch_reset(struct bf_wal_batch *batch); /* empty, keeps memory */
void bf_wal_batch_free(struct bf_wal_batch *batch);

struct bf_wal;

/*
** Open the log at path, creating it (empty, with a header naming file_id
** and base_lsn) when it does not exist or is empty.  file_id identifies the
** data file: an existing log whose header names another file_id is not
** replayed (BF_CORRUPT with a message saying so), nor one with a bad header.
** Errors: BF_IOERR, BF_NOMEM, BF_CORRUPT, BF_FULL.
*/
int bf_wal_open(const char *path, uint64_t file_id, uint64_t base_lsn,
                struct bf_wal **out, char **errmsg);
void bf_wal_close(struct bf_wal *wal);

/* Append batch as one transaction with commit_id; *end_lsn gets the LSN
** just past its COMMIT record.  An empty batch is allowed (a commit record
** alone).  Errors: BF_IOERR, BF_FULL, BF_NOMEM; after an error the log
** refuses further appends (the tail may be torn) until reset. */
int bf_wal_append(struct bf_wal *wal, const struct bf_wal_batch *batch,
                  uint64_t commit_id, uint64_t *end_lsn);

/* Make the log durable up to lsn (group commit).  BF_OK or BF_IOERR. */
int bf_wal_sync(struct bf_wal *wal, uint64_t lsn);

/* The LSN at the end of the log, and the bytes appended since the last
** reset (for the checkpoint trigger). */
uint64_t bf_wal_end_lsn(struct bf_wal *wal);
uint64_t bf_wal_size(struct bf_wal *wal);
/* The LSN of the log file's first record, and whether the file holds any
** (appended, or found at open and not yet replayed and reset). */
uint64_t bf_wal_base_lsn(struct bf_wal *wal);
bool bf_wal_has_records(struct bf_wal *wal);

/* Start the log over at base_lsn (>= the current end): everything in it is
** covered by a durable checkpoint.  Truncates, writes a new header, syncs.
** The caller guarantees no concurrent append. */
int bf_wal_reset(struct bf_wal *wal, uint64_t base_lsn);

/* Continue the log in a new file at path, the old one renamed prev_path
** (see bf_wal.c, bf_wal_rotate): *lsn is the first LSN of the new file, and
** every record below it is durable in prev_path.  BF_BUSY when prev_path
** exists; BF_INVALID when the log is recovering or broken. */
int bf_wal_rotate(struct bf_wal *wal, const char *path, const char *prev_path,
                  uint64_t *lsn);

/* Remove the log file at path, durably (the directory synced).  BF_OK
** (also when there was none) or BF_IOERR. */
int bf_wal_remove(const char *path);
/* fsync the directory holding path (after a rename into it).  BF_OK or
** BF_IOERR. */
int bf_wal_sync_dir(const char *path);

/* What replay found. */
struct bf_wal_replay_info {
  uint64_t transactions;   /* applied */
  uint64_t operations;     /* applied */
  uint64_t skipped;        /* committed transactions beyond commit_limit */
  uint64_t last_commit_id; /* largest commit id applied (0 if none) */
  uint64_t end_lsn;        /* LSN after the last valid record */
  int stop;                /* enum bf_wal_stop */
  char message[160];       /* where and why replay stopped, for users */
};
enum bf_wal_stop {
  BF_WAL_STOP_END = 0,     /* the log ended cleanly */
  BF_WAL_STOP_TORN = 1,    /* an incomplete or unchecksummed tail: the
                           ** normal result of a crash during an append */
  BF_WAL_STOP_CORRUPT = 2  /* a damaged record followed by valid ones */
};

/*
** Replay the log: for every complete transaction with LSN >= from_lsn, in
** log order, call apply once per operation (op is enum bf_wal_op; value is
** NULL for deletes), but only for transactions whose commit id is 0 or
** <= commit_limit; later ones are counted in info->skipped.  Stops at the
** first record that is incomplete or fails its checksum, and classifies it
** (torn tail vs. corruption in the middle).  A transaction is applied only
** when its COMMIT record is intact; its operations are applied after that
** check.  Returns BF_OK (whatever the stop reason: the caller decides) or
** the first non-OK status of apply, or BF_IOERR / BF_NOMEM.
** The caller then checkpoints what was replayed and resets the log at an
** LSN >= info->end_lsn before appending.
*/
int bf_wal_replay(struct bf_wal *wal, uint64_t from_lsn, uint64_t commit_limit,
                  int (*apply)(void *ctx, int op, const uint8_t *key,
                               uint32_t key_len, const uint8_t *value,
                               uint32_t value_len),
                  void *ctx, struct bf_wal_replay_info *info);
#ifdef BF_TESTING
/* fdatasync/fsync calls made by this log (injected faults not counted). */
uint64_t bf_wal_testing_syncs(struct bf_wal *wal);
/* Sleep usec before each fdatasync/fsync (a slow disk, for group commit). */
void bf_wal_testing_sync_delay(struct bf_wal *wal, uint32_t usec);
/* Write-behind chunks started (see bf_wal.c, I/O). */
uint64_t bf_wal_testing_write_behinds(struct bf_wal *wal);
#endif


/* ========================================================================
** Functions from bf_wset.c: a transaction's private write set.
**
** An ordered map from key to the transaction's newest operation on it (a
** put with its value, or a delete), with nested savepoints.  Single-threaded
** (a transaction belongs to one thread at a time).  Keys compare as
** bf_key_compare.  Entries are copied in; pointers returned stay valid until
** the next change to the write set.
*/
struct bf_wset;
int bf_wset_create(struct bf_wset **out);
void bf_wset_destroy(struct bf_wset *w);
/* Record a put / a delete of key (replacing the key's earlier entry). */
int bf_wset_put(struct bf_wset *w, const uint8_t *key, uint32_t key_len,
                const uint8_t *value, uint32_t value_len);
int bf_wset_delete(struct bf_wset *w, const uint8_t *key, uint32_t key_len);
/* BF_OK with *op (enum bf_wal_op) and the value (NULL/0 for a delete), or
** BF_NOTFOUND when the write set has no entry for key. */
int bf_wset_get(struct bf_wset *w, const uint8_t *key, uint32_t key_len,
                int *op, const uint8_t **value, uint32_t *value_len);
/* Savepoints: bf_wset_savepoint returns a mark; bf_wset_rollback_to(mark)
** undoes every change made after the mark was taken (the mark and older
** ones stay valid); bf_wset_release(mark) forgets the mark and every newer
** one, keeping the changes. */
uint32_t bf_wset_savepoint(struct bf_wset *w);
int bf_wset_rollback_to(struct bf_wset *w, uint32_t mark);
void bf_wset_release(struct bf_wset *w, uint32_t mark);
/* Empty the write set (and drop every mark). */
void bf_wset_clear(struct bf_wset *w);
uint64_t bf_wset_count(const struct bf_wset *w);
/* Structural check of invariants 1-8 (O(n)); 1 when they hold, else 0
** after printing the violation to stderr. */
int bf_wset_check(const struct bf_wset *w);
uint64_t bf_wset_bytes(const struct bf_wset *w);
/*
** Visit the entries with keys in a range, in ascending key order: keys k
** with lower <= k (or lower < k when !lower_inclusive) and k < upper (or
** <= when upper_inclusive); a NULL bound is unbounded.  visit returns
** BF_OK to continue; any other status stops the walk and is returned.  The
** write set must not change during the walk.
*/
int bf_wset_range(struct bf_wset *w, const uint8_t *lower, uint32_t lower_len,
                  bool lower_inclusive, const uint8_t *upper,
                  uint32_t upper_len, bool upper_inclusive,
                  int (*visit)(void *ctx, int op, const uint8_t *key,
                               uint32_t key_len, const uint8_t *value,
                               uint32_t value_len),
                  void *ctx);

/* ========================================================================
** The write gate (bf_tree.c): a reader/writer lock that, unlike
** pthread_rwlock_t, may be released by another thread than the one that
** took it (a prepared transaction may be committed from any thread).
** Writers are preferred: a waiting writer stops new shared holders.
*/
struct bf_gate {
  pthread_mutex_t mutex;
  pthread_cond_t cond;
  uint32_t shared;          /* holders in shared mode */
  uint32_t writers_waiting;
  bool exclusive;           /* held exclusive */
};
void bf_gate_init(struct bf_gate *gate);
void bf_gate_destroy(struct bf_gate *gate);
void bf_gate_shared(struct bf_gate *gate);
void bf_gate_exclusive(struct bf_gate *gate);
bool bf_gate_try_exclusive(struct bf_gate *gate);
void bf_gate_release(struct bf_gate *gate);

/* ========================================================================
** bf_tree.c and bf_scan.c: the tree.
*/
struct bf_tree {
  bf_options opts;
  uint32_t page_size;
  uint32_t max_key;               /* bf_max_key_size() */
  uint32_t max_record;            /* bf_max_record_size() */
  uint32_t max_mini_class;        /* largest class of a partial mini-page */
  uint32_t full_class;            /* class of a full-page mini-page */
  uint64_t room_target;           /* bytes bf_make_room keeps unused */
  uint64_t evict_ahead;           /* bytes an eviction batch claims at most
                                  ** (past its first block) */
  /* One thread at a time evicts in batches (evict_batch), with these
  ** EVICT_BATCH pages for its reads (allocated at the first batch): the
  ** others evict block by block, so that the batches' memory stays one
  ** batch's however many threads evict. */
  pthread_mutex_t evict_batch_lock;
  uint8_t *evict_pages;
  struct bf_io *io;
  struct bf_buf *buf;
  struct bf_map *map;
  struct bf_sketch *sketch;       /* NULL unless opts.read_admission */
  struct bf_inner *inner;
  struct bf_space *space;
  uint64_t generation;            /* of the last checkpoint */
  /* Writers hold it shared; a checkpoint holds it exclusive, so that no
  ** record turns dirty while it flushes. */
  struct bf_gate checkpoint_gate;
  /* One checkpoint at a time (bf_checkpoint and friends; before the gate). */
  pthread_mutex_t checkpoint_mutex;
  /* While a checkpoint writes its image (gate exclusive), no merge may run:
  ** evict_until stops when it sees no_merge, and the checkpoint waits until
  ** no evictor is left (evictors counts the evict_until calls under way). */
  atomic_bool no_merge;
  _Atomic int evictors;
  _Atomic int error;              /* sticky: first error that left state
                                  ** uncertain; writes refused after it */
  _Atomic int open_cursors;
  _Atomic uint32_t scan_leaf_records; /* records per leaf seen by recent
                                      ** scans (a running average; relaxed):
                                      ** sizes read-ahead for a row hint */
  /* Durability (bf_txn.c, bf_tree.c). */
  struct bf_wal *wal;             /* NULL when opts.wal is false */
  /* Paths: the data file, its log and the log before the last rotation
  ** (bf_rename changes them holding checkpoint_mutex). */
  char *path;
  char *wal_path;
  char *wal_prev_path;
  uint64_t file_id;
  _Atomic uint64_t last_commit_id;
  atomic_bool checkpoint_running; /* one size-triggered checkpoint at once */
  bf_recovery recovery;
  struct bf_tree_counters {
    _Atomic uint64_t cache_hits, cache_misses, leaf_reads, leaf_writes,
        bytes_read, bytes_written, merges, splits, evictions,
        copy_on_access, record_promotions, phantoms, admissions_refused,
        page_promotions,
        warm_fills, page_shrinks, read_ahead_leaves, read_ahead_dropped,
        mini_grows, commits, checkpoints, checkpoint_stall_us;
  } count;
};

#define BF_COUNT(tree, field, n) \
  atomic_fetch_add_explicit(&(tree)->count.field, (n), memory_order_relaxed)

#ifdef BF_TESTING
/* Called by a fuzzy checkpoint (bf_tree.c, checkpoint_two_phase) holding
** no lock but its checkpoint mutex: step 1 after the log's rotation, step 2
** after the flush, before the image.  Tests write or arm faults there. */
extern void (*bf_testing_checkpoint_hook)(bf_tree *tree, int step);
#endif

/* Refuse a write that cannot be done: BF_READONLY (tree in error),
** BF_TOOBIG, BF_INVALID (NULL pointer with a length). */
int bf_tree_check_write(bf_tree *tree, const void *key, size_t key_len,
                        const void *value, size_t value_len);
/* Apply one write (BF_REC_INSERT or BF_REC_TOMBSTONE) to the tree without
** logging and without the write gate (the caller holds it, or is alone). */
int bf_tree_apply(bf_tree *tree, int type, const uint8_t *key,
                  uint32_t key_len, const uint8_t *value, uint32_t value_len);
/* Enter the sticky error state (first error wins). Returns rc. */
int bf_tree_set_error(bf_tree *tree, int rc);
/* A transaction with commit_id committed. */
void bf_tree_note_commit(bf_tree *tree, uint64_t commit_id);
/* With opts.auto_checkpoint: bf_checkpoint_if_due (no gate held). */
void bf_tree_maybe_checkpoint(bf_tree *tree);
/* The write set of a transaction (for cursors). */
struct bf_wset *bf_txn_wset(bf_txn *txn);

/* Read and verify the leaf page of entry (latched, shared or exclusive)
** into page (page_size bytes, aligned). */
int bf_tree_read_leaf(bf_tree *tree, const struct bf_leaf_entry *entry,
                      uint8_t *page, struct bf_leaf *leaf);
/* Verify a leaf page already read (as bf_tree_read_leaf does after its
** read) and view it in *leaf. */
int bf_tree_verify_leaf(bf_tree *tree, const struct bf_leaf_entry *entry,
                        uint8_t *page, struct bf_leaf *leaf);
/* Find and latch the leaf whose range holds key (mode BF_FIND_KEY) or the
** keys just below key (BF_FIND_BEFORE).  Validated: on return the leaf
** covers the keys asked for until unlatched. */
int bf_tree_latch_leaf(bf_tree *tree, const uint8_t *key, uint32_t key_len,
                       int mode, bool exclusive, uint32_t *leaf_id,
                       struct bf_leaf_entry **entry);
/* Whether to cache what a read brought from disk: always while the buffer
** has room, else with probability percent. */
bool bf_tree_should_promote(bf_tree *tree, uint32_t percent);
/* Make room in the buffer for a block of size_class (no latch held). */
int bf_tree_evict(bf_tree *tree, uint32_t size_class);
/* Replace the leaf's partial mini-page by a full-page mini-page built from
** page (the verified leaf image) plus the mini-page's dirty records.
** Exclusive latch.  BF_OK, or BF_RETRY/BF_FULL when it did not happen. */
int bf_tree_promote_page(bf_tree *tree, uint32_t leaf_id,
                         struct bf_leaf_entry *entry, const uint8_t *page);

#endif /* BF_INT_H */
