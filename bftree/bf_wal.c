/*
** bf_wal.c: the write-ahead log.
**
** Owns: the log file (normally the data file's path + "-wal"), its header,
** the record format, the encoding of a transaction's operations (struct
** bf_wal_batch), appends under one mutex, group commit (bf_wal_sync), reset
** after a checkpoint, and replay with the classification of where it stopped.
** The log knows nothing about the tree: replay hands each operation to the
** caller's apply function.
**
** I/O: plain pread/pwrite/fdatasync on a buffered file descriptor (never
** O_DIRECT).  Write-behind: every WAL_WRITE_BEHIND bytes of appends, the
** appender starts the writeback of what was appended since the last time
** (sync_file_range, not waiting) and drops the chunk before that from the
** page cache (posix_fadvise DONTNEED; the log is read only by recovery), so
** that between checkpoints the log holds about two chunks of page cache, not
** up to wal_size_limit of dirty pages: in a memory cgroup, dirty pages that
** reclaim cannot free fast enough end in the OOM killer.  Both calls are
** advisory; their failures are ignored.
**
** Each write first consults bf_faultsim(BF_FAULT_WRITE) (then
** BF_FAULT_ENOSPC picks ENOSPC -> BF_FULL over EIO -> BF_IOERR, as bf_io.c
** does); each fdatasync/fsync first consults bf_faultsim(BF_FAULT_SYNC)
** (-> BF_IOERR).  An injected fault does no I/O.  Reads are not
** fault-injected (BF_FAULT_READ is for the data file).
**
** FILE HEADER (the first WAL_HEADER_SIZE = 4096 bytes; little-endian):
**
**   OFFSET SIZE DESCRIPTION
**   0      8    magic "BFTREWAL"
**   8      4    format version (1)
**   12     4    header size (4096): records start at this offset
**   16     8    file_id: the data file this log belongs to
**   24     8    base_lsn: the LSN of the first record (offset 4096)
**   32     4    salt: random, never 0, new at every reset; every record
**                carries it, so that bytes left over from before a reset
**                are never taken for records
**   36     4    largest record payload (WAL_MAX_PAYLOAD = 1 MiB)
**   40     4    CRC-32C of bytes [0, 40)
**   44     4052 zero
**
** RECORD (at an 8-byte aligned offset; records follow one another without
** gaps from offset 4096; a record's size is 48 + payload rounded up to 8):
**
**   OFFSET SIZE DESCRIPTION
**   0      4    CRC-32C of the payload and padding (bytes [48, size)),
**                continued over bytes [4, 48) of this header (the payload
**                part is computed before the LSN is known, outside the lock)
**   4      1    type: 1 = PART, 2 = COMMIT
**   5      3    zero
**   8      4    payload length (PART: 1 .. 1 MiB; COMMIT: 0 .. 1 MiB)
**   12     4    salt (the header's)
**   16     8    lsn: this record's own LSN, base_lsn + (offset - 4096)
**   24     8    txn_lsn: the LSN of the first record of its transaction
**   32     8    COMMIT: the caller's commit id (0 = none); PART: 0
**   40     8    COMMIT: operations in the transaction; PART: 0
**   48     n    payload: a slice of the transaction's encoded operations
**   48+n   pad  zero bytes up to a multiple of 8
**
** A transaction is PART* COMMIT: its encoded operations cut into 1 MiB
** slices, all but the last in PART records, the last (possibly empty) in the
** COMMIT record.  A transaction of up to 1 MiB is a single COMMIT record.
**
** OPERATION (the batch encoding, concatenated; slices may cut anywhere):
**
**   SIZE  DESCRIPTION
**   1     op: 1 = BF_WAL_PUT, 2 = BF_WAL_DELETE
**   1-5   key length, unsigned LEB128 (7 bits per byte, low first)
**   1-5   PUT only: value length, unsigned LEB128
**   k     key bytes
**   v     PUT only: value bytes
**
** RECOVERY ORDER (bf_wal_replay): read sequentially from offset 4096 with
** large buffered reads.  A record is valid when its header is sane (known
** type, zero reserved bytes, payload length in range, PART fields zero),
** its salt is the header's, its lsn equals its position, its txn_lsn names
** the open transaction's first record (or itself when none is open), it
** lies wholly within the file, and its CRC matches.  PART payloads are kept
** in a growable buffer; at a valid COMMIT the whole encoding is checked
** (well-formed, exactly `ops` operations) before anything is applied, then
** the transaction is applied, skipped (commit id > commit_limit, id != 0),
** or passed over (it ends at or before from_lsn).  At the first invalid
** record replay stops, and classifies:
**   END      the file ends exactly after a COMMIT record;
**   TORN     nothing valid follows: no later 8-aligned offset holds a record
**            with this salt, an LSN between the bad record's and the end of
**            the file, and a good CRC; also when the file ends after PART
**            records without their COMMIT;
**   CORRUPT  such a record follows (the message names the LSN and offset of
**            the damage and of the valid record found), or a transaction's
**            records verify but its encoding does not.
** The classification is a diagnostic: a crash after appends that were never
** synced may leave later pages on disk without earlier ones, which also
** looks like CORRUPT.  Replay returns BF_OK either way; the caller decides.
**
** WRAP RULES: the log never wraps.  It grows until a checkpoint makes the
** tree durable and the caller calls bf_wal_reset(lsn >= end), which truncates
** the file to nothing, writes a new header (base_lsn = lsn, new salt) and
** syncs; LSNs keep growing across resets.
**
** OPEN: a missing or empty file gets a fresh header.  A file of at most 4096
** bytes whose header does not verify but is all zero or starts with the
** magic is a torn header write from create/reset (no record can have been
** appended after it: invariant 7) and is rewritten; anything else with a bad
** header is BF_CORRUPT and never written to.  A valid empty log whose header
** names a base_lsn below the caller's is restarted at the caller's (LSNs
** never go backwards).  A log holding records must be replayed and reset
** before appends are accepted.
**
** STATE MACHINE (under mutex):
**   READY      -> READY      [bf_wal_append, bf_wal_sync succeed;
**                             bf_wal_rotate succeeds or undoes itself]
**   READY      -> BROKEN     [bf_wal_append: a write failed (append_error);
**                             bf_wal_sync, bf_wal_rotate: fdatasync failed
**                             (sync_error)]
**   READY      -> MISPLACED  [bf_wal_rotate could not undo its rename]
**   RECOVERING -> RECOVERING [bf_wal_replay]   (opened with records in it)
**   any but MISPLACED -> READY  [bf_wal_reset succeeds]
**   any        -> BROKEN     [bf_wal_reset fails after truncating]
** MISPLACED is BROKEN that no reset leaves (bf_wal_reset: BF_IOERR).
** BROKEN refuses appends (the tail may be torn) and refuses syncs beyond the
** last synced LSN (after a failed fdatasync the page cache cannot be
** trusted); RECOVERING refuses appends with BF_INVALID.
**
** INVARIANTS:
**   1. Records start at 8-aligned offsets and tile the file from offset 4096
**      to end_lsn; offset = 4096 + (lsn - base_lsn).
**   2. A transaction's records are contiguous and written by one pwrite
**      under the mutex; every record's txn_lsn is the LSN of the first.
**   3. base_lsn <= synced_lsn <= end_lsn; end_lsn advances only after the
**      write of the records below it has completed.
**   4. The salt is never 0 and changes at every reset.
**   5. After a failed write nothing more is appended until a reset.
**   6. At most one bf_wal_sync fdatasync is in flight (syncing); reset
**      waits for it to finish.
**   7. A header is written and synced before any record is appended after
**      it (create, reset), so a record never follows an unsynced header.
*/
#include "bf_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAL_HEADER_SIZE 4096
#define WAL_HEADER_CRC 40        /* bytes covered by the header CRC */
#define WAL_MAGIC "BFTREWAL"
#define WAL_VERSION 1
#define WAL_REC_HEADER 48
#define WAL_MAX_PAYLOAD (1u << 20)
#define WAL_MAX_RECORD (WAL_REC_HEADER + WAL_MAX_PAYLOAD)
#define WAL_READ_CHUNK (1u << 20) /* replay reads at least this much */
#define WAL_REC_PART 1
#define WAL_REC_COMMIT 2
#define WAL_SMALL_TXN 2048        /* transactions this small use the stack */
#define WAL_MAX_RETRIES 1000      /* zero-byte write retries */
#define WAL_WRITE_BEHIND (1u << 20) /* write-behind chunk (see I/O) */


struct bf_wal {
  /* Immutable after bf_wal_open, but for fd: bf_wal_rotate replaces it
  ** under the mutex while no sync or write-behind uses it (syncing and
  ** behind_busy are 0). */
  int fd;
  uint64_t file_id;
  pthread_mutex_t mutex;
  pthread_cond_t sync_cond;  /* broadcast when a group sync finishes */

  /* Protected by mutex. */
  uint64_t base_lsn;         /* LSN at offset WAL_HEADER_SIZE */
  uint64_t end_lsn;          /* LSN past the last appended record */
  uint64_t synced_lsn;       /* durable up to here (invariant 3) */
  uint32_t salt;
  bool syncing;              /* a leader is in fdatasync (invariant 6) */
  int behind_busy;           /* write-behind calls running on fd */
  bool recovering;           /* opened with records: replay, then reset */
  int append_error;          /* sticky write failure (BROKEN) */
  bool misplaced;            /* a rotation could not undo its rename: fd's
                             ** file is named prev_path; nothing may be
                             ** appended or reset until the log is reopened */
  int sync_error;            /* sticky fdatasync failure (BROKEN) */
  uint64_t behind_lsn;       /* write-behind started below this LSN */
  uint64_t dropped_lsn;      /* page cache dropped below this LSN */

#ifdef BF_TESTING
  /* Relaxed atomics: test counters and knobs, no ordering needed. */
  _Atomic uint64_t test_syncs;
  _Atomic uint64_t test_behind; /* write-behind chunks started */
  _Atomic uint32_t test_sync_delay_us;
#endif
};

/* ------------------------------------------------------------------------
** Small helpers.
*/
static int status_of_errno(int err) {
  return (err == ENOSPC || err == EDQUOT) ? BF_FULL : BF_IOERR;
}

static void set_errmsg(char **errmsg, char *msg) {
  if (errmsg) *errmsg = msg;
  else free(msg);
}

static uint32_t record_size(uint32_t payload_len) {
  return (WAL_REC_HEADER + payload_len + 7u) & ~7u;
}

/* The LSN of file offset off in a log starting at base_lsn (invariant 1). */
static uint64_t lsn_at(uint64_t base_lsn, uint64_t off) {
  return base_lsn + (off - WAL_HEADER_SIZE);
}

/* A new salt: random, never 0, never old. */
static uint32_t new_salt(uint32_t old) {
  uint32_t s = 0;
  if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 24) ^
                 ((uint64_t)getpid() << 40) ^ bf_random();
    x *= 0x9E3779B97F4A7C15ull;
    s = (uint32_t)(x >> 32);
  }
  while (s == 0 || s == old) s = s * 2654435761u + 0x9E3779B9u;
  return s;
}

/* Write len bytes at off, whole: EINTR and short writes are continued.
** BF_OK, BF_FULL (ENOSPC/EDQUOT) or BF_IOERR.  Consults the fault
** simulator once, before any I/O. */
static int wal_write(struct bf_wal *wal, const uint8_t *buf, size_t len,
                     uint64_t off) {
  unsigned retries = 0;
  bf_crash_point(wal->fd, buf, len, off);
  if (bf_faultsim(BF_FAULT_WRITE))
    return bf_faultsim(BF_FAULT_ENOSPC) ? BF_FULL : BF_IOERR;
  while (len > 0) {
    ssize_t n = pwrite(wal->fd, buf, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return status_of_errno(errno);
    }
    if (n == 0) {
      if (++retries > WAL_MAX_RETRIES) return BF_IOERR;
      continue;
    }
    buf += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return BF_OK;
}

/* Write-behind (see I/O): start the writeback of [off, off + len), drop
** [drop_off, drop_off + drop_len) from the page cache.  Advisory: a reset
** running meanwhile makes these calls act on another log's bytes or on
** none, which is harmless; fd is the file the bytes were appended to (a
** rotation waits for behind_busy to fall to 0 before it closes it). */
static void wal_write_behind(struct bf_wal *wal, int fd, off_t off, off_t len,
                             off_t drop_off, off_t drop_len) {
  BF_UNUSED(wal); /* but in testing builds */
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
  (void)sync_file_range(fd, off, len, SYNC_FILE_RANGE_WRITE);
#else
  (void)off;
  (void)len;
#endif
  if (drop_len) (void)posix_fadvise(fd, drop_off, drop_len, POSIX_FADV_DONTNEED);
#ifdef BF_TESTING
  atomic_fetch_add_explicit(&wal->test_behind, 1, memory_order_relaxed);
#endif
}

/* fsync (dir) or fdatasync (log) of fd.  BF_OK or BF_IOERR. */
static int wal_fsync_fd(struct bf_wal *wal, int fd, bool data_only) {
  if (bf_faultsim(BF_FAULT_SYNC)) return BF_IOERR;
#ifdef BF_TESTING
  if (wal) {
    uint32_t us =
        atomic_load_explicit(&wal->test_sync_delay_us, memory_order_relaxed);
    if (us) {
      struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
      nanosleep(&ts, NULL);
    }
    atomic_fetch_add_explicit(&wal->test_syncs, 1, memory_order_relaxed);
  }
#else
  BF_UNUSED(wal);
#endif
  while ((data_only ? fdatasync(fd) : fsync(fd)) != 0) {
    if (errno == EINTR) continue;
    return BF_IOERR;
  }
  return BF_OK;
}

/* ------------------------------------------------------------------------
** The file header.
*/
struct wal_header {
  uint64_t file_id;
  uint64_t base_lsn;
  uint32_t salt;
};

static void header_encode(uint8_t *h, uint64_t file_id, uint64_t base_lsn,
                          uint32_t salt) {
  memset(h, 0, WAL_HEADER_SIZE);
  memcpy(h, WAL_MAGIC, 8);
  bf_put32(h + 8, WAL_VERSION);
  bf_put32(h + 12, WAL_HEADER_SIZE);
  bf_put64(h + 16, file_id);
  bf_put64(h + 24, base_lsn);
  bf_put32(h + 32, salt);
  bf_put32(h + 36, WAL_MAX_PAYLOAD);
  bf_put32(h + 40, bf_crc32c(0, h, WAL_HEADER_CRC));
}

/* Verify the got bytes read from the start of a log.  Returns NULL and
** fills *out when the header is valid, otherwise why not. */
static const char *header_decode(const uint8_t *h, size_t got,
                                 struct wal_header *out) {
  if (got < WAL_HEADER_CRC + 4) return "header too short";
  if (memcmp(h, WAL_MAGIC, 8) != 0) return "no log magic";
  if (bf_get32(h + 40) != bf_crc32c(0, h, WAL_HEADER_CRC))
    return "header checksum mismatch";
  if (bf_get32(h + 8) != WAL_VERSION) return "unsupported log version";
  if (bf_get32(h + 12) != WAL_HEADER_SIZE) return "unsupported header size";
  if (bf_get32(h + 36) != WAL_MAX_PAYLOAD) return "unsupported record size";
  out->file_id = bf_get64(h + 16);
  out->base_lsn = bf_get64(h + 24);
  out->salt = bf_get32(h + 32);
  if (out->salt == 0) return "zero salt";
  return NULL;
}

/*
** Start the log over: truncate to nothing, write a header naming base_lsn
** and salt, sync (invariant 7).  Caller holds the mutex (or is bf_wal_open,
** before the log is shared).  BF_OK, BF_IOERR, BF_FULL, BF_NOMEM.  On error
** the file may hold anything up to a header.
*/
static int wal_rewrite(struct bf_wal *wal, uint64_t base_lsn, uint32_t salt) {
  uint8_t *h = bf_malloc(WAL_HEADER_SIZE);
  if (!h) return BF_NOMEM;
  int rc = BF_OK;
  while (ftruncate(wal->fd, 0) != 0) {
    if (errno == EINTR) continue;
    rc = status_of_errno(errno);
    break;
  }
  if (rc == BF_OK) {
    header_encode(h, wal->file_id, base_lsn, salt);
    rc = wal_write(wal, h, WAL_HEADER_SIZE, 0);
  }
  if (rc == BF_OK) rc = wal_fsync_fd(wal, wal->fd, true);
  bf_free(h);
  return rc;
}

/* fsync the directory holding path (after creating a file in it). */
static int sync_parent_dir(struct bf_wal *wal, const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (!slash) dir = bf_mprintf(".");
  else if (slash == path) dir = bf_mprintf("/");
  else dir = bf_mprintf("%.*s", (int)(slash - path), path);
  if (!dir) return BF_NOMEM;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return BF_IOERR;
  int rc = wal_fsync_fd(wal, fd, false);
  close(fd);
  return rc;
}

/* ------------------------------------------------------------------------
** Batches.
*/

/* Bytes of v as LEB128, and its encoding. */
static size_t varint_len(uint32_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static size_t varint_put(uint8_t *p, uint32_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Decode a LEB128 u32 from [*p, end).  false when truncated or too long. */
static bool varint_get(const uint8_t **p, const uint8_t *end, uint32_t *v) {
  uint64_t x = 0;
  for (unsigned shift = 0; shift < 35; shift += 7) {
    if (*p >= end) return false;
    uint8_t b = *(*p)++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      if (x > UINT32_MAX) return false;
      *v = (uint32_t)x;
      return true;
    }
  }
  return false;
}

/* Make room for extra more bytes.  BF_OK or BF_NOMEM (batch unchanged). */
static int batch_reserve(struct bf_wal_batch *batch, size_t extra) {
  if (extra > SIZE_MAX - batch->len) return BF_NOMEM;
  size_t need = batch->len + extra;
  if (need <= batch->cap) return BF_OK;
  size_t cap = batch->cap ? batch->cap : 256;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  uint8_t *p = bf_malloc(cap);
  if (!p) return BF_NOMEM;
  if (batch->len) memcpy(p, batch->data, batch->len);
  bf_free(batch->data);
  batch->data = p;
  batch->cap = cap;
  return BF_OK;
}

static int batch_add(struct bf_wal_batch *batch, int op, const uint8_t *key,
                     uint32_t key_len, const uint8_t *value,
                     uint32_t value_len) {
  size_t need = 1 + varint_len(key_len) + (size_t)key_len;
  if (op == BF_WAL_PUT) need += varint_len(value_len) + (size_t)value_len;
  int rc = batch_reserve(batch, need);
  if (rc != BF_OK) return rc;
  uint8_t *p = batch->data + batch->len;
  *p++ = (uint8_t)op;
  p += varint_put(p, key_len);
  if (op == BF_WAL_PUT) p += varint_put(p, value_len);
  if (key_len) memcpy(p, key, key_len);
  p += key_len;
  if (op == BF_WAL_PUT && value_len) memcpy(p, value, value_len);
  batch->len += need;
  batch->count++;
  return BF_OK;
}

/* Append a put to batch (key and value copied).  BF_OK or BF_NOMEM (batch
** unchanged). */
int bf_wal_batch_put(struct bf_wal_batch *batch, const uint8_t *key,
                     uint32_t key_len, const uint8_t *value,
                     uint32_t value_len) {
  return batch_add(batch, BF_WAL_PUT, key, key_len, value, value_len);
}

/* Append a delete to batch.  BF_OK or BF_NOMEM (batch unchanged). */
int bf_wal_batch_delete(struct bf_wal_batch *batch, const uint8_t *key,
                        uint32_t key_len) {
  return batch_add(batch, BF_WAL_DELETE, key, key_len, NULL, 0);
}

void bf_wal_batch_reset(struct bf_wal_batch *batch) {
  batch->len = 0;
  batch->count = 0;
}

void bf_wal_batch_free(struct bf_wal_batch *batch) {
  bf_free(batch->data);
  memset(batch, 0, sizeof *batch);
}

/* One decoded operation; pointers point into the encoding. */
struct wal_op {
  int op;
  const uint8_t *key, *value;
  uint32_t key_len, value_len;
};

/* Decode the operation at *p (< end) and advance *p.  false when the bytes
** are not a well-formed operation. */
static bool op_decode(const uint8_t **p, const uint8_t *end,
                      struct wal_op *out) {
  out->op = *(*p)++;
  out->value = NULL;
  out->value_len = 0;
  if (out->op != BF_WAL_PUT && out->op != BF_WAL_DELETE) return false;
  if (!varint_get(p, end, &out->key_len)) return false;
  if (out->op == BF_WAL_PUT && !varint_get(p, end, &out->value_len))
    return false;
  if ((size_t)(end - *p) < (size_t)out->key_len + out->value_len) return false;
  out->key = *p;
  *p += out->key_len;
  if (out->op == BF_WAL_PUT) {
    out->value = *p;
    *p += out->value_len;
  }
  return true;
}

/* Check that [data, data+len) is exactly ops well-formed operations.
** Returns NULL when it is, otherwise why not. */
static const char *txn_check(const uint8_t *data, size_t len, uint64_t ops) {
  const uint8_t *p = data, *end = data + len;
  uint64_t n = 0;
  struct wal_op op;
  while (p < end) {
    if (!op_decode(&p, end, &op)) return "malformed operation";
    n++;
  }
  if (n != ops) return "operation count mismatch";
  return NULL;
}

/* ------------------------------------------------------------------------
** Open and close.
*/

/*
** Open the log at path (see the file header, OPEN).  On BF_OK *out is the
** log; on error *out is NULL and *errmsg (when errmsg is not NULL) a
** malloc()ed message or NULL.  Errors: BF_IOERR, BF_NOMEM, BF_CORRUPT
** (bad header, another file_id, not a log), BF_FULL.
*/
int bf_wal_open(const char *path, uint64_t file_id, uint64_t base_lsn,
                struct bf_wal **out, char **errmsg) {
  int rc = BF_OK;
  bool created = false;
  uint8_t *h = NULL;
  *out = NULL;
  if (errmsg) *errmsg = NULL;

  struct bf_wal *wal = bf_calloc(1, sizeof *wal);
  if (!wal) return BF_NOMEM;
  wal->fd = -1;
  wal->file_id = file_id;
  if (pthread_mutex_init(&wal->mutex, NULL) != 0) {
    bf_free(wal);
    return BF_NOMEM;
  }
  if (pthread_cond_init(&wal->sync_cond, NULL) != 0) {
    pthread_mutex_destroy(&wal->mutex);
    bf_free(wal);
    return BF_NOMEM;
  }

  for (int attempt = 0; attempt < 2 && wal->fd < 0; attempt++) {
    wal->fd = open(path, O_RDWR | O_CLOEXEC);
    if (wal->fd < 0 && errno == ENOENT) {
      wal->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      created = wal->fd >= 0;
      if (wal->fd < 0 && errno == EEXIST) continue; /* raced a creator */
    }
    if (wal->fd < 0) break;
  }
  if (wal->fd < 0) {
    int err = errno;
    set_errmsg(errmsg, bf_mprintf("cannot open log %s: %s", path,
                                  strerror(err)));
    rc = status_of_errno(err);
    goto err_free_wal;
  }

  struct stat st;
  if (fstat(wal->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    set_errmsg(errmsg, bf_mprintf("log %s is not a regular file", path));
    rc = BF_IOERR;
    goto err_close;
  }
  uint64_t size = (uint64_t)st.st_size;

  h = bf_malloc(WAL_HEADER_SIZE);
  if (!h) {
    rc = BF_NOMEM;
    goto err_close;
  }
  size_t got = 0;
  while (got < WAL_HEADER_SIZE && got < size) {
    ssize_t n = pread(wal->fd, h + got, WAL_HEADER_SIZE - got, (off_t)got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      set_errmsg(errmsg, bf_mprintf("cannot read log %s: %s", path,
                                    strerror(errno)));
      rc = BF_IOERR;
      goto err_close;
    }
    if (n == 0) break;
    got += (size_t)n;
  }

  struct wal_header hdr;
  const char *why = size ? header_decode(h, got, &hdr) : "empty";
  bool rewrite = false;
  uint64_t start_lsn = base_lsn;
  if (why == NULL) {
    if (hdr.file_id != file_id) {
      set_errmsg(errmsg,
                 bf_mprintf("log %s belongs to another data file (file id "
                            "%016" PRIx64 ", expected %016" PRIx64 ")",
                            path, hdr.file_id, file_id));
      rc = BF_CORRUPT_BKPT;
      goto err_close;
    }
    wal->salt = hdr.salt;
    if (size > WAL_HEADER_SIZE) {
      wal->base_lsn = hdr.base_lsn;
      wal->recovering = true;
    } else if (size < WAL_HEADER_SIZE || hdr.base_lsn < base_lsn) {
      rewrite = true; /* torn header tail, or an empty log left behind */
      if (hdr.base_lsn > start_lsn) start_lsn = hdr.base_lsn;
    } else {
      wal->base_lsn = hdr.base_lsn;
    }
  } else if (size <= WAL_HEADER_SIZE) {
    /* A torn header write leaves zeros or a prefix starting with the magic;
    ** anything else is not ours to overwrite. */
    bool zero = true;
    for (size_t i = 0; i < got && zero; i++) zero = h[i] == 0;
    size_t m = got < 8 ? got : 8;
    if (!zero && memcmp(h, WAL_MAGIC, m) != 0) {
      set_errmsg(errmsg, bf_mprintf("%s is not a bftree log (%s); not "
                                    "overwritten", path, why));
      rc = BF_CORRUPT_BKPT;
      goto err_close;
    }
    rewrite = true;
  } else {
    set_errmsg(errmsg, bf_mprintf("log %s has a bad header: %s", path, why));
    rc = BF_CORRUPT_BKPT;
    goto err_close;
  }

  if (rewrite) {
    wal->salt = new_salt(wal->salt);
    wal->base_lsn = start_lsn;
    rc = wal_rewrite(wal, start_lsn, wal->salt);
    if (rc == BF_OK && created) rc = sync_parent_dir(wal, path);
    if (rc != BF_OK) {
      set_errmsg(errmsg, bf_mprintf("cannot initialise log %s: %s", path,
                                    bf_strerror(rc)));
      goto err_close;
    }
  }
  wal->end_lsn = wal->synced_lsn = wal->base_lsn;
  bf_free(h);
  *out = wal;
  return BF_OK;

err_close:
  close(wal->fd);
err_free_wal:
  bf_free(h);
  pthread_cond_destroy(&wal->sync_cond);
  pthread_mutex_destroy(&wal->mutex);
  bf_free(wal);
  return rc;
}

/* Close the log.  Nothing is written or synced.  No call may be running. */
void bf_wal_close(struct bf_wal *wal) {
  if (!wal) return;
  close(wal->fd);
  pthread_cond_destroy(&wal->sync_cond);
  pthread_mutex_destroy(&wal->mutex);
  bf_free(wal);
}

/* ------------------------------------------------------------------------
** Appends, group commit, reset.
*/

/*
** Append batch as one transaction (invariant 2).  The records are built and
** their payload CRCs computed before taking the mutex; under it the LSN
** fields are filled, the CRCs finished and the whole transaction written
** with one pwrite.  BF_OK with *end_lsn past the COMMIT record; BF_NOMEM
** (nothing written, log still usable); BF_INVALID while RECOVERING; BF_IOERR
** or BF_FULL (the log is BROKEN until reset; also returned while BROKEN).
*/
int bf_wal_append(struct bf_wal *wal, const struct bf_wal_batch *batch,
                  uint64_t commit_id, uint64_t *end_lsn) {
  uint8_t small[WAL_SMALL_TXN];
  size_t len = batch->len;
  size_t parts = len > WAL_MAX_PAYLOAD ? (len - 1) / WAL_MAX_PAYLOAD : 0;
  size_t last = len - parts * WAL_MAX_PAYLOAD;
  size_t n_records = parts + 1;
  if (parts > (SIZE_MAX - WAL_MAX_RECORD) / WAL_MAX_RECORD) return BF_NOMEM;
  size_t total = parts * (size_t)WAL_MAX_RECORD + record_size((uint32_t)last);
  uint8_t *buf = total <= sizeof small ? small : bf_malloc(total);
  if (!buf) return BF_NOMEM;

  /* Lay the records out: type, length, payload, padding, payload CRC (kept
  ** in the CRC field until the header is complete). */
  size_t off = 0;
  for (size_t i = 0; i < n_records; i++) {
    uint32_t plen = i < parts ? WAL_MAX_PAYLOAD : (uint32_t)last;
    uint32_t rsize = record_size(plen);
    uint8_t *r = buf + off;
    memset(r, 0, WAL_REC_HEADER);
    r[4] = i < parts ? WAL_REC_PART : WAL_REC_COMMIT;
    bf_put32(r + 8, plen);
    if (plen) memcpy(r + WAL_REC_HEADER, batch->data + i * WAL_MAX_PAYLOAD, plen);
    memset(r + WAL_REC_HEADER + plen, 0, rsize - WAL_REC_HEADER - plen);
    bf_put32(r, bf_crc32c(0, r + WAL_REC_HEADER, rsize - WAL_REC_HEADER));
    off += rsize;
  }

  int rc = BF_OK;
  off_t behind_off = 0, behind_len = 0, drop_off = 0, drop_len = 0;
  int behind_fd = -1;
  pthread_mutex_lock(&wal->mutex);
  if (wal->recovering) rc = BF_INVALID;
  else if (wal->append_error) rc = wal->append_error;
  else if (wal->sync_error) rc = wal->sync_error;
  else if (wal->end_lsn > UINT64_MAX - total) rc = BF_FULL;
  if (rc == BF_OK) {
    uint64_t start = wal->end_lsn, lsn = start;
    off = 0;
    for (size_t i = 0; i < n_records; i++) {
      uint8_t *r = buf + off;
      uint32_t rsize = record_size(bf_get32(r + 8));
      bf_put32(r + 12, wal->salt);
      bf_put64(r + 16, lsn);
      bf_put64(r + 24, start);
      if (i == parts) {
        bf_put64(r + 32, commit_id);
        bf_put64(r + 40, batch->count);
      }
      bf_put32(r, bf_crc32c(bf_get32(r), r + 4, WAL_REC_HEADER - 4));
      off += rsize;
      lsn += rsize;
    }
    rc = wal_write(wal, buf, total,
                   WAL_HEADER_SIZE + (start - wal->base_lsn));
    if (rc == BF_OK) {
      wal->end_lsn = lsn;
      *end_lsn = lsn;
      /* Write-behind (see I/O); after a reset LSNs restart above both. */
      if (wal->behind_lsn < wal->base_lsn)
        wal->behind_lsn = wal->dropped_lsn = wal->base_lsn;
      if (wal->end_lsn - wal->behind_lsn >= WAL_WRITE_BEHIND) {
        behind_off = (off_t)(WAL_HEADER_SIZE + (wal->behind_lsn - wal->base_lsn));
        behind_len = (off_t)(wal->end_lsn - wal->behind_lsn);
        drop_off = (off_t)(WAL_HEADER_SIZE + (wal->dropped_lsn - wal->base_lsn));
        drop_len = (off_t)(wal->behind_lsn - wal->dropped_lsn);
        wal->dropped_lsn = wal->behind_lsn;
        wal->behind_lsn = wal->end_lsn;
        behind_fd = wal->fd;
        wal->behind_busy++; /* fd stays this file until it is done */
      }
    } else {
      wal->append_error = rc; /* invariant 5 */
    }
  }
  pthread_mutex_unlock(&wal->mutex);
  if (buf != small) bf_free(buf);
  if (behind_len) {
    wal_write_behind(wal, behind_fd, behind_off, behind_len, drop_off,
                     drop_len);
    pthread_mutex_lock(&wal->mutex);
    if (--wal->behind_busy == 0) pthread_cond_broadcast(&wal->sync_cond);
    pthread_mutex_unlock(&wal->mutex);
  }
  return rc;
}

/*
** Make the log durable up to lsn (clamped to the end).  Group commit: when
** no sync is running the caller becomes the leader, syncs everything
** appended so far with the mutex dropped, and wakes the followers; a
** follower waits and re-checks.  BF_OK, or BF_IOERR when a sync failed
** (sticky: later calls for LSNs not yet durable fail too, until reset).
** Takes and releases the mutex.
*/
int bf_wal_sync(struct bf_wal *wal, uint64_t lsn) {
  int rc = BF_OK;
  pthread_mutex_lock(&wal->mutex);
  if (lsn > wal->end_lsn) lsn = wal->end_lsn;
  while (wal->synced_lsn < lsn) {
    if (wal->sync_error) {
      rc = wal->sync_error;
      break;
    }
    if (wal->syncing) {
      pthread_cond_wait(&wal->sync_cond, &wal->mutex);
      continue;
    }
    /* Leader: every append below end_lsn has completed its pwrite
    ** (invariant 3), so this fdatasync covers it. */
    uint64_t target = wal->end_lsn;
    int fd = wal->fd;
    wal->syncing = true;
    pthread_mutex_unlock(&wal->mutex);
    int src = wal_fsync_fd(wal, fd, true);
    pthread_mutex_lock(&wal->mutex);
    wal->syncing = false;
    if (src == BF_OK) {
      if (target > wal->synced_lsn) wal->synced_lsn = target;
    } else {
      wal->sync_error = src;
    }
    pthread_cond_broadcast(&wal->sync_cond);
  }
  pthread_mutex_unlock(&wal->mutex);
  return rc;
}

uint64_t bf_wal_end_lsn(struct bf_wal *wal) {
  pthread_mutex_lock(&wal->mutex);
  uint64_t lsn = wal->end_lsn;
  pthread_mutex_unlock(&wal->mutex);
  return lsn;
}

uint64_t bf_wal_base_lsn(struct bf_wal *wal) {
  pthread_mutex_lock(&wal->mutex);
  uint64_t lsn = wal->base_lsn;
  pthread_mutex_unlock(&wal->mutex);
  return lsn;
}

bool bf_wal_has_records(struct bf_wal *wal) {
  pthread_mutex_lock(&wal->mutex);
  bool has = wal->recovering || wal->end_lsn > wal->base_lsn;
  pthread_mutex_unlock(&wal->mutex);
  return has;
}

uint64_t bf_wal_size(struct bf_wal *wal) {
  pthread_mutex_lock(&wal->mutex);
  uint64_t n = wal->end_lsn - wal->base_lsn;
  pthread_mutex_unlock(&wal->mutex);
  return n;
}

/*
** Start over at base_lsn (>= the end, else BF_INVALID): waits for a running
** group sync, then truncates, writes a header with a new salt and syncs,
** all under the mutex.  BF_OK -> READY (sticky errors cleared).  BF_IOERR,
** BF_FULL, BF_NOMEM -> BROKEN (a later reset may succeed).
*/
int bf_wal_reset(struct bf_wal *wal, uint64_t base_lsn) {
  pthread_mutex_lock(&wal->mutex);
  while (wal->syncing) pthread_cond_wait(&wal->sync_cond, &wal->mutex);
  if (wal->misplaced) {
    pthread_mutex_unlock(&wal->mutex);
    return BF_IOERR;
  }
  if (base_lsn < wal->end_lsn) {
    pthread_mutex_unlock(&wal->mutex);
    return BF_INVALID;
  }
  uint32_t salt = new_salt(wal->salt);
  int rc = wal_rewrite(wal, base_lsn, salt);
  if (rc == BF_OK) {
    wal->salt = salt;
    wal->base_lsn = wal->end_lsn = wal->synced_lsn = base_lsn;
    wal->recovering = false;
    wal->append_error = 0;
    wal->sync_error = 0;
  } else {
    wal->append_error = rc;
  }
  pthread_mutex_unlock(&wal->mutex);
  return rc;
}

/*
** Rotation: the log goes on in a new file, and the old one, renamed
** prev_path, keeps the records below the rotation LSN until a checkpoint
** that covers them is durable (the caller then unlinks it).  Under the
** mutex, once no sync or write-behind is running: fdatasync the log (prev
** ends durably at end_lsn, so the two files join without a gap), rename it
** to prev_path, create path with a header naming base_lsn = end_lsn and a
** new salt, fdatasync it and the directory, and switch appends to it.
** BF_OK with *lsn = that LSN (every record below it is in prev_path).
** BF_BUSY: prev_path exists (an earlier rotation's checkpoint has not
** finished; nothing done).  BF_INVALID: RECOVERING or BROKEN (nothing
** done).  BF_IOERR, BF_FULL, BF_NOMEM: nothing changed (the rename undone;
** a failed fdatasync is sticky, as in bf_wal_sync), or, when even undoing
** failed, the log BROKEN for good, resets refused too (its file is named
** prev_path, which a checkpoint after a reset would remove).  Crash safety: after the rename and before the new
** file exists, recovery finds prev_path alone, which holds every record.
*/
int bf_wal_rotate(struct bf_wal *wal, const char *path, const char *prev_path,
                  uint64_t *lsn) {
  int rc = BF_OK;
  pthread_mutex_lock(&wal->mutex);
  while (wal->syncing || wal->behind_busy)
    pthread_cond_wait(&wal->sync_cond, &wal->mutex);
  if (wal->recovering || wal->append_error || wal->sync_error) {
    pthread_mutex_unlock(&wal->mutex);
    return BF_INVALID;
  }
  if (access(prev_path, F_OK) == 0) {
    pthread_mutex_unlock(&wal->mutex);
    return BF_BUSY;
  }
  rc = wal_fsync_fd(wal, wal->fd, true);
  if (rc == BF_OK) {
    wal->synced_lsn = wal->end_lsn;
    if (bf_faultsim(BF_FAULT_WRITE) || rename(path, prev_path) != 0)
      rc = BF_IOERR;
  } else {
    wal->sync_error = rc; /* as a failed group sync: the page cache may lie */
  }
  if (rc != BF_OK) {
    pthread_mutex_unlock(&wal->mutex);
    return rc;
  }
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  int old_fd = wal->fd;
  uint32_t salt = new_salt(wal->salt);
  if (fd < 0) {
    rc = status_of_errno(errno);
  } else {
    wal->fd = fd; /* wal_rewrite writes the header through wal->fd */
    rc = wal_rewrite(wal, wal->end_lsn, salt);
    if (rc == BF_OK) rc = sync_parent_dir(wal, path);
    if (rc != BF_OK) {
      wal->fd = old_fd;
      close(fd);
      (void)unlink(path);
    }
  }
  if (rc != BF_OK) {
    if (rename(prev_path, path) != 0) {
      /* The log now lives under prev_path: a reset would be followed by
      ** the removal of prev_path (the live log).  Broken for good; the
      ** next open replays prev_path. */
      wal->misplaced = true;
      wal->append_error = BF_IOERR;
    }
  } else {
    close(old_fd);
    wal->salt = salt;
    wal->base_lsn = wal->end_lsn;
    wal->behind_lsn = wal->dropped_lsn = wal->base_lsn;
    *lsn = wal->base_lsn;
  }
  pthread_mutex_unlock(&wal->mutex);
  return rc;
}

int bf_wal_sync_dir(const char *path) { return sync_parent_dir(NULL, path); }

int bf_wal_remove(const char *path) {
  if (unlink(path) != 0) return errno == ENOENT ? BF_OK : BF_IOERR;
  return sync_parent_dir(NULL, path);
}

/* ------------------------------------------------------------------------
** Replay.
*/

/* A sequential reader over the log with one large buffer. */
struct wal_reader {
  int fd;
  uint8_t *buf;
  size_t cap;          /* >= any request */
  uint64_t buf_off;    /* file offset of buf[0] */
  size_t buf_len;      /* valid bytes in buf */
  uint64_t file_size;
  int err;             /* errno of a failed read */
};

/*
** Make bytes [off, off+n) of the file available at *p (valid until the next
** call).  n <= r->cap.  BF_OK; BF_DONE when the file ends before off+n;
** BF_IOERR.  Reads as much as fits, so sequential use reads large chunks.
*/
static int reader_get(struct wal_reader *r, uint64_t off, size_t n,
                      const uint8_t **p) {
  if (off > r->file_size || n > r->file_size - off) return BF_DONE;
  if (NEVER(n > r->cap)) return BF_DONE;
  if (off >= r->buf_off && off + n <= r->buf_off + r->buf_len) {
    *p = r->buf + (off - r->buf_off);
    return BF_OK;
  }
  if (off >= r->buf_off && off < r->buf_off + r->buf_len) {
    size_t keep = (size_t)(r->buf_off + r->buf_len - off);
    memmove(r->buf, r->buf + (off - r->buf_off), keep);
    r->buf_len = keep;
  } else {
    r->buf_len = 0;
  }
  r->buf_off = off;
  while (r->buf_len < n) {
    uint64_t at = r->buf_off + r->buf_len;
    size_t want = r->cap - r->buf_len;
    if (want > r->file_size - at) want = (size_t)(r->file_size - at);
    ssize_t got = pread(r->fd, r->buf + r->buf_len, want, (off_t)at);
    if (got < 0) {
      if (errno == EINTR) continue;
      r->err = errno;
      return BF_IOERR;
    }
    if (got == 0) { /* the file shrank under us */
      r->file_size = at;
      return BF_DONE;
    }
    r->buf_len += (size_t)got;
  }
  *p = r->buf + (off - r->buf_off);
  return BF_OK;
}

/* A decoded record header. */
struct wal_rec {
  int type;
  uint32_t payload_len;
  uint32_t size;
  uint64_t lsn, txn_lsn, commit_id, ops;
};

/* Check the fields of the record header at h that need no context but the
** salt.  NULL and *out filled when sane, otherwise why not. */
static const char *rec_decode(const uint8_t *h, uint32_t salt,
                              struct wal_rec *out) {
  out->type = h[4];
  out->payload_len = bf_get32(h + 8);
  out->lsn = bf_get64(h + 16);
  out->txn_lsn = bf_get64(h + 24);
  out->commit_id = bf_get64(h + 32);
  out->ops = bf_get64(h + 40);
  if (bf_get32(h + 12) != salt) return "salt mismatch";
  if (out->type != WAL_REC_PART && out->type != WAL_REC_COMMIT)
    return "unknown record type";
  if (h[5] | h[6] | h[7]) return "reserved bytes not zero";
  if (out->payload_len > WAL_MAX_PAYLOAD) return "record length out of range";
  if (out->type == WAL_REC_PART &&
      (out->payload_len == 0 || out->commit_id || out->ops))
    return "malformed PART record";
  if (out->txn_lsn > out->lsn) return "transaction LSN after record LSN";
  out->size = record_size(out->payload_len);
  return NULL;
}

/* True when the size bytes at r (a decoded header plus its payload) carry a
** matching CRC. */
static bool rec_crc_ok(const uint8_t *r, uint32_t size) {
  uint32_t crc = bf_crc32c(0, r + WAL_REC_HEADER, size - WAL_REC_HEADER);
  crc = bf_crc32c(crc, r + 4, WAL_REC_HEADER - 4);
  return crc == bf_get32(r);
}

/*
** Look for a valid record of this log after the damaged one at bad_off:
** same salt, an LSN after the damaged record's and before the end of the
** file, a good CRC.  Returns BF_OK with *found set (and *at its offset),
** or BF_IOERR.
*/
static int scan_for_valid(struct wal_reader *r, uint32_t salt,
                          uint64_t base_lsn, uint64_t bad_off, bool *found,
                          uint64_t *at) {
  uint64_t bad_lsn = lsn_at(base_lsn, bad_off);
  uint64_t eof_lsn = lsn_at(base_lsn, r->file_size);
  *found = false;
  for (uint64_t q = bad_off + 8; q + WAL_REC_HEADER <= r->file_size; q += 8) {
    const uint8_t *h;
    int rc = reader_get(r, q, WAL_REC_HEADER, &h);
    if (rc == BF_DONE) break;
    if (rc != BF_OK) return rc;
    if (bf_get32(h + 12) != salt) continue; /* the cheap test first */
    struct wal_rec rec;
    if (rec_decode(h, salt, &rec) != NULL) continue;
    if (rec.lsn <= bad_lsn || rec.lsn >= eof_lsn) continue;
    rc = reader_get(r, q, rec.size, &h);
    if (rc == BF_DONE) continue;
    if (rc != BF_OK) return rc;
    if (rec_crc_ok(h, rec.size)) {
      *found = true;
      *at = q;
      return BF_OK;
    }
  }
  return BF_OK;
}

/* The growable buffer holding the payloads of a transaction's records. */
struct txn_buf {
  uint8_t *data;
  size_t len, cap;
};

static int txn_buf_add(struct txn_buf *t, const uint8_t *p, size_t n) {
  if (t->len + n > t->cap) {
    size_t cap = t->cap ? t->cap : (size_t)2 * WAL_MAX_PAYLOAD;
    while (cap < t->len + n) cap *= 2;
    uint8_t *d = bf_malloc(cap);
    if (!d) return BF_NOMEM;
    if (t->len) memcpy(d, t->data, t->len);
    bf_free(t->data);
    t->data = d;
    t->cap = cap;
  }
  if (n) memcpy(t->data + t->len, p, n);
  t->len += n;
  return BF_OK;
}

/* Apply the checked operations of one transaction.  The first non-OK status
** of apply. */
static int txn_apply(const uint8_t *data, size_t len,
                     int (*apply)(void *ctx, int op, const uint8_t *key,
                                  uint32_t key_len, const uint8_t *value,
                                  uint32_t value_len),
                     void *ctx) {
  const uint8_t *p = data, *end = data + len;
  struct wal_op op;
  while (p < end) {
    if (NEVER(!op_decode(&p, end, &op))) return BF_CORRUPT_BKPT;
    int rc = apply(ctx, op.op, op.key, op.key_len, op.value, op.value_len);
    if (rc != BF_OK) return rc;
  }
  return BF_OK;
}

/*
** Replay (contract in bf_int.h; order and classification in the file
** header, RECOVERY ORDER).  A transaction counts as before from_lsn, and is
** passed over silently, when the LSN past its COMMIT record is <= from_lsn.
** info->end_lsn is the LSN past the last valid record (a PART record of an
** unfinished transaction included).  The log's end_lsn is raised to it, so
** that bf_wal_reset() accepts any LSN >= info->end_lsn.  No append may run
** meanwhile.
*/
int bf_wal_replay(struct bf_wal *wal, uint64_t from_lsn, uint64_t commit_limit,
                  int (*apply)(void *ctx, int op, const uint8_t *key,
                               uint32_t key_len, const uint8_t *value,
                               uint32_t value_len),
                  void *ctx, struct bf_wal_replay_info *info) {
  memset(info, 0, sizeof *info);
  pthread_mutex_lock(&wal->mutex);
  uint64_t base = wal->base_lsn;
  uint32_t salt = wal->salt;
  pthread_mutex_unlock(&wal->mutex);
  info->end_lsn = base;

  struct stat st;
  if (fstat(wal->fd, &st) != 0) {
    snprintf(info->message, sizeof info->message, "cannot stat the log: %s",
             strerror(errno));
    return BF_IOERR;
  }
  struct wal_reader r = {.fd = wal->fd, .file_size = (uint64_t)st.st_size};
  r.cap = WAL_MAX_RECORD + WAL_READ_CHUNK;
  if (r.file_size < r.cap) r.cap = (size_t)r.file_size + 8;
  r.buf = bf_malloc(r.cap);
  if (!r.buf) return BF_NOMEM;
  struct txn_buf t = {0};

  int rc = BF_OK;
  uint64_t pos = WAL_HEADER_SIZE;
  uint64_t txn_off = 0;     /* offset of the open transaction's first record */
  bool in_txn = false;
  for (;;) {
    const char *why = NULL;
    const uint8_t *h = NULL;
    struct wal_rec rec;
    if (pos == r.file_size) {
      if (!in_txn) {
        info->stop = BF_WAL_STOP_END;
        snprintf(info->message, sizeof info->message,
                 "log ends cleanly at LSN %" PRIu64, lsn_at(base, pos));
        break;
      }
      info->stop = BF_WAL_STOP_TORN;
      snprintf(info->message, sizeof info->message,
               "torn tail: the transaction at LSN %" PRIu64 " (offset %" PRIu64
               ") has no COMMIT record",
               lsn_at(base, txn_off), txn_off);
      break;
    }
    rc = reader_get(&r, pos, WAL_REC_HEADER, &h);
    if (rc == BF_DONE) why = "incomplete record header";
    else if (rc != BF_OK) break;
    if (!why) why = rec_decode(h, salt, &rec);
    if (!why && rec.lsn != lsn_at(base, pos)) why = "LSN does not match position";
    if (!why && rec.txn_lsn != (in_txn ? lsn_at(base, txn_off) : rec.lsn))
      why = "record does not belong to the open transaction";
    if (!why) {
      rc = reader_get(&r, pos, rec.size, &h);
      if (rc == BF_DONE) why = "incomplete record";
      else if (rc != BF_OK) break;
    }
    if (!why && !rec_crc_ok(h, rec.size)) why = "checksum mismatch";
    if (why) {
      bool found = false;
      uint64_t at = 0;
      rc = scan_for_valid(&r, salt, base, pos, &found, &at);
      if (rc != BF_OK) break;
      info->stop = found ? BF_WAL_STOP_CORRUPT : BF_WAL_STOP_TORN;
      if (found)
        snprintf(info->message, sizeof info->message,
                 "corrupt log record at LSN %" PRIu64 " (offset %" PRIu64
                 "): %s; a valid record follows at offset %" PRIu64,
                 lsn_at(base, pos), pos, why, at);
      else
        snprintf(info->message, sizeof info->message,
                 "torn tail at LSN %" PRIu64 " (offset %" PRIu64
                 "): %s; %" PRIu64 " bytes ignored",
                 lsn_at(base, pos), pos, why,
                 r.file_size > pos ? r.file_size - pos : 0);
      break;
    }

    /* A valid record. */
    const uint8_t *payload = h + WAL_REC_HEADER;
    if (!in_txn) {
      in_txn = true;
      txn_off = pos;
      t.len = 0;
    }
    pos += rec.size;
    info->end_lsn = lsn_at(base, pos);
    if (rec.type == WAL_REC_PART) {
      rc = txn_buf_add(&t, payload, rec.payload_len);
      if (rc != BF_OK) break;
      continue;
    }
    const uint8_t *data = payload; /* a one-record transaction: in place */
    size_t len = rec.payload_len;
    if (t.len) {
      rc = txn_buf_add(&t, payload, rec.payload_len);
      if (rc != BF_OK) break;
      data = t.data;
      len = t.len;
    }
    in_txn = false;
    why = txn_check(data, len, rec.ops);
    if (why) {
      info->stop = BF_WAL_STOP_CORRUPT;
      info->end_lsn = lsn_at(base, txn_off);
      snprintf(info->message, sizeof info->message,
               "corrupt transaction at LSN %" PRIu64 " (offset %" PRIu64
               "): %s",
               lsn_at(base, txn_off), txn_off, why);
      break;
    }
    if (info->end_lsn <= from_lsn) continue; /* covered by the checkpoint */
    if (rec.commit_id != 0 && rec.commit_id > commit_limit) {
      info->skipped++;
      continue;
    }
    rc = txn_apply(data, len, apply, ctx);
    if (rc != BF_OK) {
      snprintf(info->message, sizeof info->message,
               "applying the transaction at LSN %" PRIu64 " failed: %s",
               lsn_at(base, txn_off), bf_strerror(rc));
      break;
    }
    info->transactions++;
    info->operations += rec.ops;
    if (rec.commit_id > info->last_commit_id)
      info->last_commit_id = rec.commit_id;
  }
  if (rc == BF_IOERR && r.err)
    snprintf(info->message, sizeof info->message,
             "cannot read the log: %s", strerror(r.err));

  pthread_mutex_lock(&wal->mutex);
  if (wal->base_lsn == base && info->end_lsn > wal->end_lsn)
    wal->end_lsn = info->end_lsn;
  pthread_mutex_unlock(&wal->mutex);
  bf_free(t.data);
  bf_free(r.buf);
  return rc;
}

#ifdef BF_TESTING
uint64_t bf_wal_testing_syncs(struct bf_wal *wal) {
  return atomic_load_explicit(&wal->test_syncs, memory_order_relaxed);
}

void bf_wal_testing_sync_delay(struct bf_wal *wal, uint32_t usec) {
  atomic_store_explicit(&wal->test_sync_delay_us, usec, memory_order_relaxed);
}

uint64_t bf_wal_testing_write_behinds(struct bf_wal *wal) {
  return atomic_load_explicit(&wal->test_behind, memory_order_relaxed);
}
#endif
