/*
** bftree.h: the public interface of the Bf-Tree engine.
**
** A Bf-Tree is a concurrent, larger-than-memory ordered key-value index
** (Hao, Chandramouli et al., VLDB 2024).  Inner nodes are pinned in memory,
** leaf pages live in one data file, and a single circular buffer of
** variable-size "mini-pages" buffers writes and caches hot records.
**
** Keys and values are byte strings.  Keys compare with memcmp() over the
** common length, then by length (a prefix sorts first).  The empty key is a
** valid key.
**
** Every function returns a status from enum bf_status (or a plain value where
** it cannot fail).  All functions taking a bf_tree are safe to call from any
** number of threads at once.  A bf_cursor belongs to one thread at a time.
**
** This header depends only on the C standard library; the engine has no
** SQLite dependency.
*/
#ifndef BFTREE_H
#define BFTREE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes.  BF_OK is zero; every other value is a distinct condition.
** BF_NOTFOUND and BF_DONE are ordinary outcomes, not errors. */
enum bf_status {
  BF_OK = 0,         /* success */
  BF_NOTFOUND = 1,   /* bf_get: the key is not in the tree */
  BF_DONE = 2,       /* a cursor moved past the last record of its range */
  BF_NOMEM = 3,      /* malloc() failed */
  BF_IOERR = 4,      /* a read, write, fsync or open of the data file failed */
  BF_CORRUPT = 5,    /* a page or the file header failed its checksum or a
                     ** structural check; the tree refuses further writes */
  BF_TOOBIG = 6,     /* key or record larger than the limits of the page size
                     ** (see bf_max_key_size(), bf_max_record_size()) */
  BF_INVALID = 7,    /* a bad argument or option (message explains) */
  BF_BUSY = 8,       /* the data file is locked by another open tree */
  BF_NOTBFTREE = 9,  /* the file exists, is not empty, and does not carry the
                     ** bftree magic; nothing was written to it */
  BF_FULL = 10,      /* the disk is full (ENOSPC/EDQUOT) */
  BF_READONLY = 11,  /* a write on a tree in an ERROR state or opened read-only */
  BF_RETRY = 12,     /* internal: an operation must restart; never returned by
                     ** the public API */
  BF_STATUS_COUNT
};

/* A short English description of a status ("ok", "key not found", ...). */
const char *bf_strerror(int status);

/* How the data file is read and written. */
enum bf_io_mode {
  BF_IO_AUTO = 0,     /* io_uring; falls back to pread/pwrite when refused */
  BF_IO_URING = 1,    /* io_uring only; bf_open fails with BF_IOERR if refused */
  BF_IO_PSYNC = 2     /* pread/pwrite */
};

/* Whether the data file uses O_DIRECT (bypassing the kernel page cache). */
enum bf_direct_mode {
  BF_DIRECT_AUTO = 0, /* O_DIRECT; buffered where the file system refuses it */
  BF_DIRECT_ON = 1,   /* O_DIRECT only; bf_open fails with BF_IOERR if refused */
  BF_DIRECT_OFF = 2   /* buffered I/O through the page cache */
};

/* Open options.  Initialise with bf_options_init(), then change fields. */
typedef struct bf_options {
  /* Bytes of the circular buffer of mini-pages: the memory budget for cached
  ** and buffered records.  Default 32 MiB.  Rounded down to a multiple of 64;
  ** at least 16 leaf pages. */
  uint64_t buffer_size;
  /* Leaf page size in bytes: a power of two from 512 to 32768.  Default 4096.
  ** Ignored when opening an existing file (the file's own size is used). */
  uint32_t page_size;
  int io_mode;            /* enum bf_io_mode, default BF_IO_AUTO */
  int direct_io;          /* enum bf_direct_mode, default BF_DIRECT_AUTO */
  /* Percent chance (0..100) that a record read from disk on a point lookup is
  ** cached in the leaf's mini-page, or a miss recorded as a phantom, when
  ** read_admission is false.  Default 10. */
  uint32_t read_promote_percent;
  /* Admission by frequency: once the buffer is full, a record read from
  ** disk on a point lookup is cached when its key has been read from disk
  ** at least 3 times within about the last buffer's worth of such reads
  ** (a count-min sketch of 4-bit counters, about 2 bytes per record the
  ** buffer holds, outside buffer_size), instead of with
  ** read_promote_percent probability: the buffer keeps the records that
  ** are read again and again rather than a sample of all.  Default true. */
  bool read_admission;
  /* Percent chance (0..100) that a leaf read from disk by a range scan is
  ** promoted to a full-page mini-page.  Default 50. */
  uint32_t scan_promote_percent;
  /* Warm fill: until the buffer is full for the first time after open, a
  ** point lookup that reads a leaf from disk keeps the whole leaf as a
  ** full-page mini-page (nothing is evicted for it), so a cold buffer warms
  ** a page per miss rather than a record per miss.  Once the buffer has
  ** filled, a full page that is used again as it nears eviction keeps only
  ** its used and dirty records.  Default true. */
  bool warm_fill;
  /* Largest mini-page, as a fraction of the page size: a mini-page that would
  ** grow past page_size / max_mini_divisor is merged into its leaf instead.
  ** Default 2 (half a page). */
  uint32_t max_mini_divisor;
  /* Create the file when it does not exist.  Default true. */
  bool create;
  /* Durability of committed writes (enum bf_synchronous), as SQLite's
  ** PRAGMA synchronous: FULL (default) fsyncs the log at every commit;
  ** NORMAL writes the log at commit and fsyncs at checkpoints (survives a
  ** process crash, not a power loss); OFF never fsyncs the log. */
  int synchronous;
  /* Write-ahead log.  When false, nothing is logged: what was written since
  ** the last checkpoint is lost in a crash (for temporary data). */
  bool wal;
  /* Checkpoint when the log grows past this many bytes.  Default 64 MiB. */
  uint64_t wal_size_limit;
  /* Who runs the checkpoints that wal_size_limit calls for.  True
  ** (default): the write or commit that finds the log past the limit, before
  ** it returns.  False: the caller, with bf_checkpoint_if_due(), at a moment
  ** when it holds no lock of its own that other writers wait for (the
  ** SQLite module does, after a commit has released its table's writer
  ** lock).  Either way the tree's writers wait only for the last phase of
  ** a checkpoint (see bf_checkpoint). */
  bool auto_checkpoint;
  /* Recovery replays committed transactions whose commit id is at most
  ** this (commit id 0, as given by bf_put, always replays).  Default
  ** UINT64_MAX.  The SQLite module passes the last id its database
  ** committed, so that the table and the database agree after a crash. */
  uint64_t replay_limit;
  /* Seed for the engine's random choices (promotion); 0 picks one. */
  uint64_t seed;
} bf_options;

enum bf_synchronous {
  BF_SYNC_OFF = 0,
  BF_SYNC_NORMAL = 1,
  BF_SYNC_FULL = 2
};

/* Fill *opts with the documented defaults. */
void bf_options_init(bf_options *opts);

typedef struct bf_tree bf_tree;
typedef struct bf_cursor bf_cursor;

/*
** Open (or create) the tree stored in the file at path.
**
** On success *out is a new tree and BF_OK is returned.  On error *out is NULL
** and, when errmsg is not NULL, *errmsg points to a malloc()ed message that
** the caller frees with free() (or is NULL when no memory was left).
**
** Errors: BF_INVALID (a bad option), BF_NOTBFTREE (an existing non-empty file
** without the magic: never written to), BF_BUSY (locked by another open
** tree, in this process or another), BF_CORRUPT, BF_IOERR, BF_NOMEM.
*/
int bf_open(const char *path, const bf_options *opts, bf_tree **out,
            char **errmsg);

/*
** Write every buffered record to the data file, record the tree structure so
** that bf_open() gives back every key, and free the tree.  The tree is freed
** even on error; the status says whether the file is complete.  No call may
** be running on the tree, and every cursor must have been closed.
*/
int bf_close(bf_tree *tree);

/* Like bf_close() but writes nothing: what was not yet written to the data
** file is lost (used by tests to simulate a crash, and for temporary files). */
void bf_abandon(bf_tree *tree);

/* The files of a tree at path: the data file, its write-ahead log at path +
** BF_WAL_SUFFIX, and, while a checkpoint runs (or after a crash during
** one), the log from before the checkpoint's start at path +
** BF_WAL_PREV_SUFFIX.  Copy, move or remove them together. */
#define BF_WAL_SUFFIX "-wal"
#define BF_WAL_PREV_SUFFIX "-wal-prev"

/* Rename the files of a tree (see BF_WAL_SUFFIX) at from to to: the data
** file, and its logs where they exist; then sync the directories (best
** effort).  For a tree that is not open.  Refused (BF_INVALID, nothing
** changed) when any target exists.  BF_OK, BF_INVALID, BF_IOERR (nothing
** changed, unless undoing a partial rename failed too) or BF_NOMEM; on
** error *errmsg is a malloc()ed message or NULL. */
int bf_files_rename(const char *from, const char *to, char **errmsg);

/* Remove the files of a tree at path that exist (a missing one is not an
** error).  BF_OK, BF_IOERR or BF_NOMEM; *errmsg as bf_files_rename's. */
int bf_files_remove(const char *path, char **errmsg);

/* bf_files_rename for the open tree's files; the tree stays open and goes
** on with the new names (no checkpoint renames its log meanwhile). */
int bf_rename(bf_tree *tree, const char *newpath, char **errmsg);

/* Make everything written so far durable in the data file (a checkpoint:
** dirty mini-page records merged, structure recorded, fsync), and drop the
** log it covers.  Readers and writers may run at the same time.  With the
** log on (synchronous normal or full) and not empty: the log is switched
** to a new file at the checkpoint's start (the
** old one renamed path + BF_WAL_PREV_SUFFIX until the checkpoint is
** durable), the dirty records are merged while writers go on, and writers
** wait only while the new log is synced and the structure is written;
** what they wrote meanwhile stays in the new log.  Otherwise (also when the
** old log from a failed checkpoint is still there), writers also wait while
** the records they
** dirtied during the merges are merged, and the log is emptied.  The
** statistic checkpoint_stall_us sums those waits.  The checkpoint waits for
** any prepared transaction to end, and for another checkpoint. */
int bf_checkpoint(bf_tree *tree);

/* bf_checkpoint, except that it does not wait for a prepared transaction:
** when one holds the gate it returns BF_BUSY after the merges (or, if it
** came in after the log's switch, after waiting 0.1 s for it), and BF_BUSY
** at once when another checkpoint runs.  For callers that may hold
** something the transaction's commit waits for (an SQL statement holding
** its database's lock). */
int bf_checkpoint_nowait(bf_tree *tree);

/* Checkpoint if the log has grown past wal_size_limit and no other
** checkpoint of this kind is running; BF_OK when nothing was due.  Unlike
** bf_checkpoint it never waits for a prepared transaction (one holds the
** gate from bf_txn_prepare to its commit, which may wait for the caller):
** it then returns BF_BUSY after the first phase, and the checkpoint stays
** due.  The automatic checkpoints (auto_checkpoint) are this call; callers
** that set auto_checkpoint to false make it themselves. */
int bf_checkpoint_if_due(bf_tree *tree);

/* The size limits for this tree's page size.  A key longer than
** bf_max_key_size() or a key plus value longer than bf_max_record_size() is
** refused with BF_TOOBIG. */
size_t bf_max_key_size(const bf_tree *tree);
size_t bf_max_record_size(const bf_tree *tree);

/* The leaf page size of an open tree. */
uint32_t bf_page_size(const bf_tree *tree);

/* Insert key -> value, replacing any value the key had.
** Errors: BF_TOOBIG, BF_IOERR, BF_FULL, BF_CORRUPT, BF_NOMEM, BF_READONLY. */
int bf_put(bf_tree *tree, const void *key, size_t key_len, const void *value,
           size_t value_len);

/* Remove key.  Returns BF_OK whether or not the key was present (deletes are
** blind: they do not read the disk).  Errors as bf_put(). */
int bf_delete(bf_tree *tree, const void *key, size_t key_len);

/*
** Look key up.  On BF_OK, *value_len is the length of the value and
** min(*value_len, buffer_size) bytes of it are copied into buffer (buffer may
** be NULL when buffer_size is 0).  A value never exceeds
** bf_max_record_size().  Returns BF_NOTFOUND when the key is absent.
** Errors: BF_TOOBIG (key too long), BF_IOERR, BF_CORRUPT, BF_NOMEM.
*/
int bf_get(bf_tree *tree, const void *key, size_t key_len, void *buffer,
           size_t buffer_size, size_t *value_len);

/*
** Bring key into the buffer without copying it out: a lookup that caches
** the record it reads from disk (or, when the key is absent, the fact that
** it is absent) whatever the promotion rate.  For a caller about to look the
** key up again while holding something it wants to hold briefly (the
** SQLite module prefetches the keys of a write while it waits for the
** table's writer lock).  Best effort: BF_OK whether or not the key exists
** or anything was cached; errors as bf_get.  Statistics: a prefetch that
** reads the leaf counts a cache miss; one that finds the key in the buffer
** counts nothing (the lookup that follows counts the hit).
*/
int bf_prefetch(bf_tree *tree, const void *key, size_t key_len);

/*
** Evict now what the next writes would have to evict: until a small reserve
** of the buffer is unused (1/256 of buffer_size, at least two pages, at most
** 256 KiB and 1/16 of the buffer).  Once the buffer is full, every write
** that adds to it evicts first, and evicting a mini-page with unwritten
** records merges them into its leaf page (a disk read and a write).  A
** caller about to take a lock that its writers share (the SQLite module,
** before a table's writer lock) calls this first, so that the writes under
** the lock seldom wait for the disk; bf_txn_prepare calls it before taking
** the tree's commit gate.  Reads that miss do not cache records into the
** reserve once the buffer has filled (prefetches, and the reads of
** eviction's first lap after a warm fill, still do), but other threads'
** writes and relocations take from it: best effort.  BF_OK; BF_READONLY
** when the tree is in its error state; or the error of an eviction merge
** (an I/O error, BF_CORRUPT), which also puts the tree in its error state,
** as a write's would.
*/
int bf_make_room(bf_tree *tree);

/*
** Cursors.  A cursor iterates the keys of a range in ascending or descending
** order.  It holds no latch between calls: it copies one leaf's records at a
** time and re-seeks by key, so the same or other threads may write to the
** tree while it is open.  It sees every key that was present for the whole
** iteration and never returns a key twice; keys written during the iteration
** may or may not be seen.
*/

/* One end of a range.  A NULL key means unbounded on that side. */
typedef struct bf_bound {
  const void *key;
  size_t key_len;
  bool inclusive;
} bf_bound;

int bf_cursor_open(bf_tree *tree, bf_cursor **out);
void bf_cursor_close(bf_cursor *cursor);

/*
** Position the cursor on the first record of [lower, upper] in the given
** direction (descending: the last record).  NULL bounds (or bounds with a
** NULL key) are unbounded.  The bounds' keys are copied.  Returns BF_OK when
** positioned on a record, BF_DONE when the range is empty.  May be called
** again at any time to reposition.
** Errors: BF_IOERR, BF_CORRUPT, BF_NOMEM, BF_TOOBIG (bound key too long).
*/
int bf_cursor_seek(bf_cursor *cursor, const bf_bound *lower,
                   const bf_bound *upper, bool descending);

/*
** Tell the cursor about how many records the caller will read after each
** seek from now on (0: unknown, the default).  Where leaves must come from disk,
** the cursor then reads the leaves those records probably span in one
** batch of parallel reads (io_uring) instead of one leaf at a time.
** Without a hint it reads ahead anyway once a scan has read two leaves from
** disk, doubling the batch up to 8 leaves.  Only a performance hint: results
** never depend on it.
*/
void bf_cursor_hint(bf_cursor *cursor, uint64_t rows);

/* Move to the next record in the cursor's direction.  BF_OK when positioned
** on a record, BF_DONE past the end of the range. */
int bf_cursor_next(bf_cursor *cursor);

/* True when the cursor is positioned on a record. */
bool bf_cursor_valid(const bf_cursor *cursor);

/* The current record's key and value.  The pointers stay valid until the
** cursor moves or is closed.  Must only be called when bf_cursor_valid(). */
void bf_cursor_key(const bf_cursor *cursor, const void **key, size_t *key_len);
void bf_cursor_value(const bf_cursor *cursor, const void **value,
                     size_t *value_len);

/*
** Transactions.  A transaction collects writes privately: bf_txn_get and
** cursors opened with bf_cursor_open_txn see them, nobody else does.
** bf_txn_commit logs them with one commit record (durable per
** `synchronous`) and then applies them to the tree.  Commits of different
** transactions are serialised by the log; readers are never blocked, but a
** reader running while a commit is applied may see part of it.  Conflicts
** between concurrent transactions are not detected: the last commit wins
** per key (the SQLite module allows one writing transaction per table).
** A transaction belongs to one thread at a time.
*/
typedef struct bf_txn bf_txn;

int bf_txn_begin(bf_tree *tree, bf_txn **out);
/* Buffer a put / delete in the transaction.  BF_TOOBIG as bf_put. */
int bf_txn_put(bf_txn *txn, const void *key, size_t key_len, const void *value,
               size_t value_len);
int bf_txn_delete(bf_txn *txn, const void *key, size_t key_len);
/* bf_get as the transaction sees it. */
int bf_txn_get(bf_txn *txn, const void *key, size_t key_len, void *buffer,
               size_t buffer_size, size_t *value_len);
/* Nested savepoints: a mark, undo back to a mark (which stays valid),
** forget marks from this one up. */
uint32_t bf_txn_savepoint(bf_txn *txn);
int bf_txn_rollback_to(bf_txn *txn, uint32_t mark);
void bf_txn_release(bf_txn *txn, uint32_t mark);
/*
** First phase of a commit: write the transaction to the log with commit_id
** (0 = none) and make it durable per `synchronous`.  The writes are not yet
** visible; no more writes may be added.  Follow with bf_txn_commit or
** bf_txn_abort.  Until then checkpoints wait.
*/
int bf_txn_prepare(bf_txn *txn, uint64_t commit_id);
/* Commit (preparing with commit id 0 first if needed), apply, free txn. */
int bf_txn_commit(bf_txn *txn);
/* Discard and free txn.  After bf_txn_prepare this also checkpoints, so
** that the log no longer holds the transaction. */
int bf_txn_abort(bf_txn *txn);
/* Number of writes buffered. */
uint64_t bf_txn_size(const bf_txn *txn);

/* A cursor that sees the tree overlaid by txn's writes. */
int bf_cursor_open_txn(bf_tree *tree, bf_txn *txn, bf_cursor **out);

/* The largest commit id committed or recovered so far (0 if none). */
uint64_t bf_last_commit_id(bf_tree *tree);

/* What the last bf_open recovered from the log. */
typedef struct bf_recovery {
  uint64_t transactions;       /* replayed */
  uint64_t operations;         /* replayed */
  uint64_t skipped;            /* committed in the log but beyond
                               ** replay_limit, discarded */
  int stop;                    /* 0 clean end, 1 torn tail (normal after a
                               ** crash), 2 corrupt record in the middle */
  double seconds;              /* time spent */
  char message[200];           /* where and why replay stopped; for stop 2,
                               ** where the damaged log was kept */
} bf_recovery;
void bf_recovery_info(bf_tree *tree, bf_recovery *out);

/* Number of mini-page size classes reported in bf_stats. */
#define BF_MAX_SIZE_CLASSES 20

/* Statistics.  Counters count since bf_open(). */
typedef struct bf_stats {
  uint32_t page_size;              /* leaf page size */
  uint64_t buffer_size;            /* bytes of the circular buffer */
  uint64_t buffer_used;            /* bytes of the buffer between head and
                                   ** tail (live, free-listed and dead) */
  uint64_t buffer_live;            /* bytes in live mini-pages */
  uint32_t size_class_count;       /* entries used in the two arrays below */
  uint32_t size_class_bytes[BF_MAX_SIZE_CLASSES];  /* mini-page size */
  uint64_t mini_pages[BF_MAX_SIZE_CLASSES];        /* live mini-pages */
  uint64_t full_page_minis;        /* live full-page mini-pages (subset) */
  uint64_t leaf_pages;             /* leaves in the tree */
  uint64_t inner_nodes;            /* pinned inner nodes */
  uint32_t tree_height;            /* inner levels above the leaves */
  uint64_t inner_bytes;            /* memory held by inner nodes */
  uint64_t mapping_bytes;          /* memory held by the mapping table */
  uint64_t sketch_bytes;           /* memory held by the admission sketch */
  uint64_t file_pages;             /* pages in the data file */
  uint64_t free_pages;             /* of which free for reuse */
  uint64_t cache_hits;             /* lookups answered from a mini-page */
  uint64_t cache_misses;           /* lookups that read the leaf page */
  uint64_t leaf_reads;             /* leaf pages read from disk */
  uint64_t leaf_writes;            /* leaf pages written to disk */
  uint64_t bytes_read;             /* bytes read from the data file */
  uint64_t bytes_written;          /* bytes written to the data file */
  uint64_t merges;                 /* mini-pages merged into their leaf */
  uint64_t splits;                 /* leaf splits */
  uint64_t inner_splits;           /* inner node splits */
  uint64_t evictions;              /* mini-pages evicted from the buffer */
  uint64_t copy_on_access;         /* mini-pages moved to the tail on access */
  uint64_t buffer_retired;         /* bytes eviction has passed over since
                                   ** open (/ buffer_size: laps) */
  uint64_t record_promotions;      /* records cached after a disk read */
  uint64_t phantoms;               /* phantom records cached after a miss */
  uint64_t admissions_refused;     /* read records not cached: the sketch
                                   ** had seen too few reads of the key */
  uint64_t page_promotions;        /* leaves promoted to full-page minis */
  uint64_t warm_fills;             /* of which by a point lookup's warm fill */
  uint64_t page_shrinks;           /* full-page minis cut to their used and
                                   ** dirty records on relocation */
  uint64_t read_ahead_leaves;      /* leaf pages read ahead by scans, by
                                   ** checkpoints' merges and by batched
                                   ** evictions */
  uint64_t read_ahead_dropped;     /* of which dropped unused (the file
                                   ** changed before the scan got there) */
  uint64_t mini_grows;             /* mini-pages moved to a larger class */
  uint64_t commits;                /* transactions and autocommit writes
                                   ** logged */
  uint64_t checkpoints;            /* checkpoints written */
  uint64_t checkpoint_stall_us;    /* microseconds writers were held off
                                   ** by checkpoints (the write gate held
                                   ** or awaited exclusive), in total */
  uint64_t wal_bytes;              /* bytes in the log since its last reset */
  uint64_t io_mode;                /* enum bf_io_mode in use (never AUTO) */
  uint64_t direct_io;              /* 1 when O_DIRECT is in use */
} bf_stats;

/* Fill *stats.  Never fails; figures are a snapshot taken without stopping
** other threads, so they may be mutually off by an operation or two. */
void bf_stats_get(bf_tree *tree, bf_stats *stats);

/*
** Check the whole tree: inner node order and fences, every leaf page's
** checksum, order and fences, mini-page order, buffer accounting, and the
** free list.  Returns BF_OK when everything is consistent; otherwise
** BF_CORRUPT and, when errmsg is not NULL, a malloc()ed description of the
** first problem in *errmsg.  Other threads may run but the check may then
** report a transient inconsistency; run it alone for a verdict.
*/
int bf_check(bf_tree *tree, char **errmsg);

#ifdef __cplusplus
}
#endif
#endif /* BFTREE_H */
