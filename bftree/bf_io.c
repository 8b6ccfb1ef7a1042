/*
** bf_io.c: the data file.
**
** Owns: the file descriptor of the data file and its exclusive flock, the
** choice between O_DIRECT and buffered I/O, the choice between io_uring and
** pread/pwrite, and a small pool of io_uring rings.  This file knows nothing
** about what the bytes mean; it has no on-disk format of its own.
**
** Requests (contract in bf_int.h): reads and writes are whole, at byte
** offsets and lengths that are multiples of 512, from buffers aligned to at
** least 512 bytes (bf_malloc_aligned(4096, ...)).  bf_io_read_raw() is the
** one exception: any offset, any length, any buffer.
**
** Choices made at open (bf_io_open), never changed afterwards:
**
**   direct_mode   what happens
**   OFF           buffered
**   AUTO          fcntl(F_SETFL, O_DIRECT); refused (fcntl fails, statx says
**                 the file system cannot do direct I/O at 512-byte offsets,
**                 or a probe read of 4096 aligned bytes at offset 0 fails
**                 with EINVAL) -> flag removed again, buffered
**   ON            as AUTO, but refused -> BF_IOERR with a message
**
**   io_mode       what happens
**   PSYNC         pread/pwrite
**   AUTO          up to BF_IO_RINGS rings of BF_IO_DEPTH entries; when the
**                 first io_uring_queue_init fails (or bf_faultsim(
**                 BF_FAULT_URING) fires) -> pread/pwrite
**   URING         as AUTO, but refused -> BF_IOERR with a message
**
** Note: since Linux 6.6 tmpfs accepts O_DIRECT, so on such kernels AUTO on
** /dev/shm stays direct; tests force a refusal with
** bf_io_testing_refuse_direct().
**
** Fault injection (BF_TESTING builds), consulted once per request before any
** real I/O; an injected fault does no I/O at all:
**   read, batch read (per request), read_raw   BF_FAULT_READ  -> EIO
**   write    BF_FAULT_WRITE fires; then BF_FAULT_ENOSPC chooses ENOSPC
**            (BF_FULL) over EIO (BF_IOERR).  ENOSPC alone never fires.
**   sync     BF_FAULT_SYNC -> EIO
**   open     BF_FAULT_URING (io_uring refused), BF_FAULT_MALLOC (allocs)
** The O_DIRECT probe read at open is a capability check, not a data read: it
** does not consult BF_FAULT_READ.
**
** Error mapping: ENOSPC, EDQUOT -> BF_FULL; every other errno -> BF_IOERR;
** a read that reaches the end of the file before len bytes -> BF_IOERR
** (recorded as ENODATA).  bf_io_last_errno() gives the errno of the most
** recent failure in any thread.
**
** Ring pool state machine (one entry per initialised ring):
**   FREE -> TAKEN                [pool_take]
**   TAKEN -> FREE                [pool_give, the ring worked]
**   TAKEN -> RETIRED             [pool_give, io_uring_enter failed fatally]
**   every ring -> (destroyed)    [bf_io_close]
** A retired ring is never entered again; it is destroyed at close.  When
** every ring is retired the file falls back to pread/pwrite.
**
** Invariants:
**   1. fd, mode, direct and n_rings never change after bf_io_open returns;
**      they are read without locks.
**   2. A ring is used by at most one thread at a time (the one that took it
**      from the pool); its submission and completion queues need no locks.
**   3. A thread that took a ring gives it back only when none of the
**      requests it submitted on it is still in flight, so the next taker
**      sees no completion that is not its own, and no request can write
**      into a buffer after the call that owned it returned.
**   4. Each request has at most one SQE outstanding (submitted or not);
**      a short transfer is continued by a new SQE for the remainder only
**      after the completion of the previous one.
**   5. At most BF_IO_DEPTH SQEs are outstanding on a ring, so
**      io_uring_get_sqe() never finds the submission queue full.
**   6. The fd holds the flock for as long as the bf_io exists; closing it in
**      bf_io_close releases the lock.
*/
#include "bf_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#define BF_IO_RINGS 4          /* rings in the pool */
#define BF_IO_DEPTH 32         /* entries per ring */
#define BF_IO_ALIGN 512        /* offsets and lengths of whole requests */
#define BF_IO_PROBE 4096       /* bytes of the O_DIRECT probe read */
#define BF_IO_MAX_CHUNK (1u << 30)  /* largest single read/write syscall */
#define BF_IO_MAX_RETRIES 1000 /* EAGAIN/EINTR/zero-byte-write retries */
#define BF_IO_BATCH_CHUNK 64   /* batch requests handled per pool visit */

/*
** Test hook (BF_TESTING builds): while set, every bf_io_open treats O_DIRECT
** as refused by the file system.  Requested for bf_int.h; declared here so
** the file compiles with -Wmissing-prototypes until then.
*/
#ifdef BF_TESTING
void bf_io_testing_refuse_direct(bool refuse);
static _Atomic bool testing_refuse_direct;
void bf_io_testing_refuse_direct(bool refuse) {
  atomic_store_explicit(&testing_refuse_direct, refuse, memory_order_relaxed);
}
#endif

/* Requested for bf_int.h (see the file header); declared here until then. */
int bf_io_last_errno(const struct bf_io *io);

struct bf_io {
  /* Immutable after bf_io_open (invariant 1). */
  int fd;                   /* O_RDWR, flocked, O_DIRECT when direct */
  int mode;                 /* BF_IO_URING or BF_IO_PSYNC */
  bool direct;
  uint32_t n_rings;         /* initialised entries of rings[] */

  /* Protected by pool_mutex. */
  pthread_mutex_t pool_mutex;
  pthread_cond_t pool_cond; /* signalled when a ring is freed or retired */
  uint32_t n_free;          /* entries of free_rings[] in use */
  uint32_t n_live;          /* rings not retired */
  struct io_uring *free_rings[BF_IO_RINGS];

  /* Each ring is owned by the thread that took it (invariant 2). */
  struct io_uring rings[BF_IO_RINGS];

  /* Relaxed: a diagnostic; the most recent failure of any thread wins. */
  _Atomic int last_errno;
};

/* One whole read or write in progress. */
struct io_op {
  uint8_t *buf;
  size_t len;
  uint64_t offset;
  size_t done;        /* bytes transferred so far */
  int err;            /* errno of the failure, 0 if none */
  unsigned retries;   /* EAGAIN/EINTR/zero-byte-write retries so far */
  bool write;
  bool started;       /* the fault simulator has been consulted */
  bool eof;           /* a read hit the end of the file */
  bool finished;
};

/* ------------------------------------------------------------------------
** Errors.
*/
static int status_of_errno(int err) {
  return (err == ENOSPC || err == EDQUOT) ? BF_FULL : BF_IOERR;
}

static void note_errno(struct bf_io *io, int err) {
  atomic_store_explicit(&io->last_errno, err, memory_order_relaxed);
}

/* The status of a finished op; records its errno in io on failure. */
static int op_status(struct bf_io *io, const struct io_op *op) {
  if (op->err) {
    note_errno(io, op->err);
    return status_of_errno(op->err);
  }
  if (op->eof) {
    note_errno(io, ENODATA);
    return BF_IOERR_BKPT;
  }
  return BF_OK;
}

int bf_io_last_errno(const struct bf_io *io) {
  return atomic_load_explicit(&io->last_errno, memory_order_relaxed);
}

static void set_errmsg(char **errmsg, char *msg) {
  if (errmsg) *errmsg = msg;
  else free(msg);
}

/* Nap for about 100 microseconds (back-off on EAGAIN). */
static void nap(void) {
  struct timespec ts = {0, 100000};
  nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------
** Operations: fault simulation and the pread/pwrite engine.
*/

/* Consult the fault simulator for op once.  Returns true when a fault was
** injected (op is then finished with its errno, no I/O done). */
static bool op_start(struct io_op *op) {
  if (op->started) return false;
  op->started = true;
  if (op->len == 0) {
    op->finished = true;
    return true;
  }
  if (op->write) {
    if (bf_faultsim(BF_FAULT_WRITE)) {
      op->err = bf_faultsim(BF_FAULT_ENOSPC) ? ENOSPC : EIO;
      op->finished = true;
      return true;
    }
  } else if (bf_faultsim(BF_FAULT_READ)) {
    op->err = EIO;
    op->finished = true;
    return true;
  }
  return false;
}

/* Bytes of the next transfer of op (the remainder, capped). */
static size_t op_chunk(const struct io_op *op) {
  size_t left = op->len - op->done;
  return left > BF_IO_MAX_CHUNK ? BF_IO_MAX_CHUNK : left;
}

/*
** Account for one transfer result of op: res bytes, or -errno.  Returns
** true when op needs another transfer (remainder or retry), false when it
** is finished (successfully or not).
*/
static bool op_account(struct io_op *op, long res) {
  if (res < 0) {
    int err = (int)-res;
    if ((err == EINTR || err == EAGAIN) && ++op->retries <= BF_IO_MAX_RETRIES) {
      if (err == EAGAIN) nap();
      return true;
    }
    op->err = err;
    op->finished = true;
    return false;
  }
  if (res == 0) {
    if (!op->write) {
      op->eof = true;
      op->finished = true;
      return false;
    }
    /* A write that wrote nothing: retry a bounded number of times. */
    if (++op->retries <= BF_IO_MAX_RETRIES) return true;
    op->err = EIO;
    op->finished = true;
    return false;
  }
  op->done += (size_t)res;
  if (op->done < op->len) return true;
  op->finished = true;
  return false;
}

/* Run op to completion with pread/pwrite. */
static void op_run_psync(struct bf_io *io, struct io_op *op) {
  if (op->finished || op_start(op)) return;
  for (;;) {
    size_t n = op_chunk(op);
    ssize_t r = op->write
                    ? pwrite(io->fd, op->buf + op->done, n,
                             (off_t)(op->offset + op->done))
                    : pread(io->fd, op->buf + op->done, n,
                            (off_t)(op->offset + op->done));
    if (!op_account(op, r < 0 ? -(long)errno : (long)r)) return;
  }
}

/* ------------------------------------------------------------------------
** The ring pool.
*/

/* Take a free ring, waiting while all are taken.  Returns NULL when every
** ring is retired (the caller uses pread/pwrite).  Pair with pool_give. */
static struct io_uring *pool_take(struct bf_io *io) {
  struct io_uring *ring = NULL;
  pthread_mutex_lock(&io->pool_mutex);
  while (io->n_free == 0 && io->n_live > 0)
    pthread_cond_wait(&io->pool_cond, &io->pool_mutex);
  if (io->n_free > 0) ring = io->free_rings[--io->n_free];
  pthread_mutex_unlock(&io->pool_mutex);
  return ring;
}

/* Give a ring back (invariant 3 holds), or retire it. */
static void pool_give(struct bf_io *io, struct io_uring *ring, bool retire) {
  pthread_mutex_lock(&io->pool_mutex);
  if (retire) {
    io->n_live--;
    /* Waiters must see n_live == 0 to stop waiting. */
    pthread_cond_broadcast(&io->pool_cond);
  } else {
    io->free_rings[io->n_free++] = ring;
    pthread_cond_signal(&io->pool_cond);
  }
  pthread_mutex_unlock(&io->pool_mutex);
}

/* ------------------------------------------------------------------------
** The io_uring engine.
*/

/* Queue the next transfer of ops[index] (invariants 4, 5). */
static bool ring_prep(struct bf_io *io, struct io_uring *ring,
                      struct io_op *ops, size_t index) {
  struct io_op *op = &ops[index];
  struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
  if (NEVER(sqe == NULL)) return false;
  unsigned n = (unsigned)op_chunk(op);
  if (op->write)
    io_uring_prep_write(sqe, io->fd, op->buf + op->done, n,
                        op->offset + op->done);
  else
    io_uring_prep_read(sqe, io->fd, op->buf + op->done, n,
                       op->offset + op->done);
  io_uring_sqe_set_data64(sqe, (uint64_t)index);
  return true;
}

/*
** Handle every completion available on ring.  With resubmit, a short
** transfer gets its next SQE queued; without (draining a failed ring), the
** op is left unfinished for the pread/pwrite engine.  *inflight counts the
** ops with an outstanding SQE.
*/
static void ring_reap(struct bf_io *io, struct io_uring *ring,
                      struct io_op *ops, size_t n, unsigned *inflight,
                      bool resubmit) {
  struct io_uring_cqe *cqe;
  while (io_uring_peek_cqe(ring, &cqe) == 0) {
    uint64_t index = io_uring_cqe_get_data64(cqe);
    long res = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    if (NEVER(index >= n)) continue;
    (*inflight)--;
    struct io_op *op = &ops[index];
    if (!op_account(op, res)) continue;
    if (resubmit && ring_prep(io, ring, ops, (size_t)index)) (*inflight)++;
  }
}

/*
** After a fatal io_uring_enter failure: wait for every submitted SQE
** (invariant 3), handling the completions without resubmitting.  The SQEs
** never submitted stay in the ring, which is retired and never entered
** again.  Unfinished ops are left to the pread/pwrite engine.
*/
static void ring_drain(struct bf_io *io, struct io_uring *ring,
                       struct io_op *ops, size_t n, unsigned inflight) {
  unsigned unsubmitted = io_uring_sq_ready(ring);
  while (inflight > unsubmitted) {
    struct io_uring_cqe *cqe;
    int w = io_uring_wait_cqe(ring, &cqe);
    if (w == -EINTR || w == -EAGAIN) continue;
    if (w < 0) {
      /* Cannot happen on a valid ring.  Fail everything unfinished rather
      ** than let pread/pwrite race with I/O the kernel may still run. */
      for (size_t i = 0; i < n; i++) {
        if (!ops[i].finished) {
          ops[i].started = true;
          ops[i].err = -w;
          ops[i].finished = true;
        }
      }
      return;
    }
    ring_reap(io, ring, ops, n, &inflight, false);
  }
}

/*
** Run ops[0..n) on ring (taken by this thread).  Returns true when the ring
** worked (ops it could not queue are left unfinished for pread/pwrite).
** Returns false when io_uring_enter failed for good: the ring must be
** retired; ring_drain() has run.
*/
static bool ring_run(struct bf_io *io, struct io_uring *ring, struct io_op *ops,
                     size_t n) {
  size_t next = 0;       /* next op not yet started */
  unsigned inflight = 0; /* ops with an outstanding SQE */
  unsigned busy = 0;     /* consecutive transient enter failures */
  for (;;) {
    while (inflight < BF_IO_DEPTH && next < n) {
      size_t i = next++;
      if (ops[i].finished || op_start(&ops[i])) continue;
      if (!ring_prep(io, ring, ops, i)) break;
      inflight++;
    }
    if (inflight == 0) {
      if (next >= n) return true;
      continue; /* ring_prep failed with nothing in flight: try the rest */
    }
    int ret = io_uring_submit_and_wait(ring, 1);
    if (ret < 0) {
      if (ret == -EINTR) continue;
      if ((ret != -EAGAIN && ret != -EBUSY && ret != -ENOMEM) ||
          ++busy > BF_IO_MAX_RETRIES) {
        ring_drain(io, ring, ops, n, inflight);
        return false;
      }
      /* The kernel is short of resources: let completions drain first. */
      if (inflight > io_uring_sq_ready(ring)) {
        struct io_uring_cqe *cqe;
        int w = io_uring_wait_cqe(ring, &cqe);
        if (w < 0 && w != -EINTR && w != -EAGAIN) {
          ring_drain(io, ring, ops, n, inflight);
          return false;
        }
      } else {
        nap();
      }
    } else {
      busy = 0;
    }
    ring_reap(io, ring, ops, n, &inflight, true);
  }
}

/* ------------------------------------------------------------------------
** Running a group of ops with whichever engine the file uses.
*/
static void run_ops(struct bf_io *io, struct io_op *ops, size_t n) {
  if (io->mode == BF_IO_URING) {
    struct io_uring *ring = pool_take(io);
    if (ring) {
      bool ok = ring_run(io, ring, ops, n);
      pool_give(io, ring, !ok);
    }
  }
  /* Whatever the ring did not finish (normally nothing). */
  for (size_t i = 0; i < n; i++) op_run_psync(io, &ops[i]);
}

/* True when a whole request is well formed (the bf_int.h contract). */
static bool request_ok(const void *buf, size_t len, uint64_t offset) {
  return ((uintptr_t)buf % BF_IO_ALIGN) == 0 && len % BF_IO_ALIGN == 0 &&
         offset % BF_IO_ALIGN == 0 && len <= (size_t)INT64_MAX &&
         offset <= (uint64_t)INT64_MAX - len;
}

int bf_io_read(struct bf_io *io, void *buf, size_t len, uint64_t offset) {
  if (NEVER(!request_ok(buf, len, offset))) {
    note_errno(io, EINVAL);
    return BF_IOERR;
  }
  struct io_op op = {.buf = buf, .len = len, .offset = offset};
  run_ops(io, &op, 1);
  return op_status(io, &op);
}

/* The write of bf_io_write, its arguments checked. */
static int write_one(struct bf_io *io, const void *buf, size_t len,
                     uint64_t offset) {
  /* The buffer is only read (pwrite / IORING_OP_WRITE); the cast lets one
  ** op type serve both directions. */
  struct io_op op = {
      .buf = (uint8_t *)(uintptr_t)buf, .len = len, .offset = offset,
      .write = true};
  run_ops(io, &op, 1);
  return op_status(io, &op);
}

int bf_io_write(struct bf_io *io, const void *buf, size_t len,
                uint64_t offset) {
  if (NEVER(!request_ok(buf, len, offset))) {
    note_errno(io, EINVAL);
    return BF_IOERR;
  }
  bf_crash_point(io->fd, buf, len, offset);
  return write_one(io, buf, len, offset);
}

/*
** Read (write false) every request, up to BF_IO_DEPTH at once with io_uring.
** Sets each reqs[i].status; returns BF_OK when all succeeded, otherwise the
** status of the first failed request (in array order).  Buffers of failed
** reads hold unspecified bytes.
*/
static int run_batch(struct bf_io *io, struct bf_io_request *reqs, size_t n,
                     bool write) {
  int rc = BF_OK;
  for (size_t base = 0; base < n; base += BF_IO_BATCH_CHUNK) {
    struct io_op ops[BF_IO_BATCH_CHUNK];
    size_t m = n - base < BF_IO_BATCH_CHUNK ? n - base : BF_IO_BATCH_CHUNK;
    memset(ops, 0, sizeof ops);
    for (size_t i = 0; i < m; i++) {
      struct bf_io_request *r = &reqs[base + i];
      ops[i].buf = r->buf;
      ops[i].len = r->len;
      ops[i].offset = r->offset;
      ops[i].write = write;
      if (NEVER(!request_ok(r->buf, r->len, r->offset))) {
        ops[i].started = ops[i].finished = true;
        ops[i].err = EINVAL;
      } else if (write) {
        /* A crash here leaves none of this chunk written: as if all of it
        ** were still in flight, which a crash may also find. */
        bf_crash_point(io->fd, r->buf, r->len, r->offset);
      }
    }
    run_ops(io, ops, m);
    for (size_t i = 0; i < m; i++) {
      reqs[base + i].status = op_status(io, &ops[i]);
      if (rc == BF_OK) rc = reqs[base + i].status;
    }
  }
  return rc;
}

int bf_io_read_batch(struct bf_io *io, struct bf_io_request *reqs, size_t n) {
  return run_batch(io, reqs, n, false);
}

/*
** Write every request, up to BF_IO_DEPTH at once with io_uring, in no
** particular order.  Sets each reqs[i].status (BF_OK, BF_FULL, BF_IOERR);
** returns BF_OK when all succeeded, otherwise the status of the first failed
** request (in array order).  The caller must not care which of a batch's
** writes reach the disk first (nor, after a crash, which reached it).
*/
int bf_io_write_batch(struct bf_io *io, struct bf_io_request *reqs, size_t n) {
  return run_batch(io, reqs, n, true);
}

int bf_io_sync(struct bf_io *io) {
  if (bf_faultsim(BF_FAULT_SYNC)) {
    note_errno(io, EIO);
    return BF_IOERR;
  }
  /* fdatasync also makes a changed file size durable. */
  while (fdatasync(io->fd) != 0) {
    if (errno == EINTR) continue;
    note_errno(io, errno);
    return status_of_errno(errno);
  }
  return BF_OK;
}

int bf_io_file_size(struct bf_io *io, uint64_t *size) {
  struct stat st;
  *size = 0;
  if (fstat(io->fd, &st) != 0) {
    note_errno(io, errno);
    return BF_IOERR;
  }
  *size = (uint64_t)st.st_size;
  return BF_OK;
}

int bf_io_truncate(struct bf_io *io, uint64_t size) {
  if (size > (uint64_t)INT64_MAX) {
    note_errno(io, EFBIG);
    return BF_IOERR;
  }
  while (ftruncate(io->fd, (off_t)size) != 0) {
    if (errno == EINTR) continue;
    note_errno(io, errno);
    return status_of_errno(errno);
  }
  return BF_OK;
}

int bf_io_mode(const struct bf_io *io) { return io->mode; }

bool bf_io_direct(const struct bf_io *io) { return io->direct; }

/*
** Read up to len bytes at any offset into any buffer; *got says how many
** (fewer only at the end of the file).  With O_DIRECT the read goes through
** an aligned bounce buffer covering whole 4096-byte blocks.  Returns BF_OK,
** BF_IOERR, or BF_NOMEM (bounce buffer).  Always uses pread.
*/
int bf_io_read_raw(struct bf_io *io, void *buf, size_t len, uint64_t offset,
                   size_t *got) {
  *got = 0;
  if (len == 0) return BF_OK;
  if (bf_faultsim(BF_FAULT_READ)) {
    note_errno(io, EIO);
    return BF_IOERR;
  }
  if (len > (size_t)(INT64_MAX / 4) || offset > (uint64_t)(INT64_MAX / 4)) {
    note_errno(io, EINVAL);
    return BF_IOERR;
  }
  uint64_t start = offset, end = offset + len;
  uint8_t *dst = buf, *bounce = NULL;
  if (io->direct) {
    start = offset & ~(uint64_t)(BF_IO_PROBE - 1);
    end = (offset + len + BF_IO_PROBE - 1) & ~(uint64_t)(BF_IO_PROBE - 1);
    bounce = bf_malloc_aligned(BF_IO_PROBE, (size_t)(end - start));
    if (!bounce) return BF_NOMEM;
    dst = bounce;
  }
  size_t want = (size_t)(end - start), have = 0;
  unsigned retries = 0;
  int rc = BF_OK;
  while (have < want) {
    size_t n = want - have > BF_IO_MAX_CHUNK ? BF_IO_MAX_CHUNK : want - have;
    ssize_t r = pread(io->fd, dst + have, n, (off_t)(start + have));
    if (r < 0) {
      if ((errno == EINTR || errno == EAGAIN) && ++retries <= BF_IO_MAX_RETRIES)
        continue;
      note_errno(io, errno);
      rc = BF_IOERR;
      break;
    }
    if (r == 0) break;
    have += (size_t)r;
    /* A direct read that ends off a 512-byte boundary ended at the end of
    ** the file; reading on from there would fail with EINVAL. */
    if (io->direct && (size_t)r % BF_IO_ALIGN != 0) break;
  }
  if (rc == BF_OK) {
    size_t skip = (size_t)(offset - start);
    size_t avail = have > skip ? have - skip : 0;
    if (avail > len) avail = len;
    if (bounce) memcpy(buf, bounce + skip, avail);
    *got = avail;
  }
  bf_free_aligned(bounce);
  return rc;
}

/* ------------------------------------------------------------------------
** Open and close.
*/

/* True when the test hook says O_DIRECT is refused. */
static bool direct_refused_by_test(void) {
#ifdef BF_TESTING
  return atomic_load_explicit(&testing_refuse_direct, memory_order_relaxed);
#else
  return false;
#endif
}

/*
** Try to switch io->fd to O_DIRECT.  Returns BF_OK with *refused = 0 when
** direct I/O works, BF_OK with *refused an errno (and the fd left buffered)
** when the file system refuses it, and BF_IOERR / BF_NOMEM (with *errmsg)
** when something else went wrong.
*/
static int try_direct(struct bf_io *io, const char *path, int *refused,
                      const char **why, char **errmsg) {
  *refused = 0;
  *why = "";
  if (direct_refused_by_test()) {
    *refused = EINVAL;
    *why = " (simulated)";
    return BF_OK;
  }
  int flags = fcntl(io->fd, F_GETFL);
  if (flags < 0) {
    note_errno(io, errno);
    set_errmsg(errmsg, bf_mprintf("cannot read the flags of %s: %s", path,
                                  strerror(errno)));
    return BF_IOERR;
  }
  if (fcntl(io->fd, F_SETFL, flags | O_DIRECT) != 0) {
    *refused = errno;
    return BF_OK;
  }
#ifdef STATX_DIOALIGN
  {
    struct statx sx;
    if (statx(io->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN)) {
      if (sx.stx_dio_offset_align == 0) {
        *refused = EINVAL;
      } else if (sx.stx_dio_offset_align > BF_IO_ALIGN ||
                 sx.stx_dio_mem_align > BF_IO_PROBE) {
        *refused = EINVAL;
        *why = " (needs more than 512-byte alignment)";
      }
    }
  }
#endif
  if (*refused == 0) {
    /* Some file systems accept the flag and fail the I/O instead. */
    uint8_t *probe = bf_malloc_aligned(BF_IO_PROBE, BF_IO_PROBE);
    if (!probe) {
      set_errmsg(errmsg, bf_mprintf("out of memory opening %s", path));
      return BF_NOMEM;
    }
    ssize_t r;
    do {
      r = pread(io->fd, probe, BF_IO_PROBE, 0);
    } while (r < 0 && errno == EINTR);
    int err = r < 0 ? errno : 0;
    bf_free_aligned(probe);
    if (err == EINVAL) {
      *refused = EINVAL;
    } else if (err) {
      note_errno(io, err);
      set_errmsg(errmsg, bf_mprintf("cannot read %s: %s", path, strerror(err)));
      return BF_IOERR;
    }
  }
  if (*refused && fcntl(io->fd, F_SETFL, flags) != 0) {
    note_errno(io, errno);
    set_errmsg(errmsg, bf_mprintf("cannot clear O_DIRECT on %s: %s", path,
                                  strerror(errno)));
    return BF_IOERR;
  }
  return BF_OK;
}

/* Set up the ring pool.  Returns 0, or the errno of the refusal of the first
** ring (no ring is then left initialised). */
static int setup_rings(struct bf_io *io) {
  if (bf_faultsim(BF_FAULT_URING)) return ENOSYS;
  for (uint32_t i = 0; i < BF_IO_RINGS; i++) {
    int r = io_uring_queue_init(BF_IO_DEPTH, &io->rings[i], 0);
    if (r < 0) {
      if (i == 0) return -r;
      break; /* fewer rings are fine */
    }
    io->n_rings++;
  }
  for (uint32_t i = 0; i < io->n_rings; i++) io->free_rings[i] = &io->rings[i];
  io->n_free = io->n_live = io->n_rings;
  return 0;
}

/*
** Open the data file at path.  io_mode is an enum bf_io_mode, direct_mode an
** enum bf_direct_mode.  On BF_OK *out owns the open, flocked file; free it
** with bf_io_close().  On error *out is NULL and *errmsg (when errmsg is not
** NULL) a malloc()ed message or NULL.  Returns BF_OK, BF_INVALID (a bad
** mode), BF_BUSY (another open file description holds the lock), BF_IOERR
** (cannot open/lock, not a regular file, O_DIRECT or io_uring refused when
** demanded), BF_NOMEM.  Nothing is written to the file.
*/
int bf_io_open(const char *path, int io_mode, int direct_mode, bool create,
               struct bf_io **out, char **errmsg) {
  int rc = BF_OK;
  *out = NULL;
  if (errmsg) *errmsg = NULL;
  if (!path || !*path) {
    set_errmsg(errmsg, bf_mprintf("no file name given"));
    return BF_INVALID;
  }
  if (io_mode != BF_IO_AUTO && io_mode != BF_IO_URING &&
      io_mode != BF_IO_PSYNC) {
    set_errmsg(errmsg, bf_mprintf("invalid io_mode %d", io_mode));
    return BF_INVALID;
  }
  if (direct_mode != BF_DIRECT_AUTO && direct_mode != BF_DIRECT_ON &&
      direct_mode != BF_DIRECT_OFF) {
    set_errmsg(errmsg, bf_mprintf("invalid direct_io %d", direct_mode));
    return BF_INVALID;
  }

  struct bf_io *io = bf_calloc(1, sizeof *io);
  if (!io) {
    set_errmsg(errmsg, bf_mprintf("out of memory opening %s", path));
    return BF_NOMEM;
  }
  if (pthread_mutex_init(&io->pool_mutex, NULL) != 0) {
    rc = BF_NOMEM;
    set_errmsg(errmsg, bf_mprintf("out of memory opening %s", path));
    goto err_free_io;
  }
  if (pthread_cond_init(&io->pool_cond, NULL) != 0) {
    rc = BF_NOMEM;
    set_errmsg(errmsg, bf_mprintf("out of memory opening %s", path));
    goto err_destroy_mutex;
  }

  do {
    io->fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
  } while (io->fd < 0 && errno == EINTR);
  if (io->fd < 0) {
    rc = BF_IOERR;
    set_errmsg(errmsg, bf_mprintf("cannot open %s: %s", path, strerror(errno)));
    goto err_destroy_cond;
  }
  struct stat st;
  if (fstat(io->fd, &st) != 0) {
    rc = BF_IOERR;
    set_errmsg(errmsg, bf_mprintf("cannot stat %s: %s", path, strerror(errno)));
    goto err_close_fd;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = BF_IOERR;
    set_errmsg(errmsg, bf_mprintf("%s is not a regular file", path));
    goto err_close_fd;
  }
  int lr;
  do {
    lr = flock(io->fd, LOCK_EX | LOCK_NB);
  } while (lr != 0 && errno == EINTR);
  if (lr != 0) {
    if (errno == EWOULDBLOCK) {
      rc = BF_BUSY;
      set_errmsg(errmsg,
                 bf_mprintf("%s is in use by another open tree (locked)", path));
    } else {
      rc = BF_IOERR;
      set_errmsg(errmsg, bf_mprintf("cannot lock %s: %s", path, strerror(errno)));
    }
    goto err_close_fd;
  }

  if (direct_mode != BF_DIRECT_OFF) {
    int refused;
    const char *why;
    rc = try_direct(io, path, &refused, &why, errmsg);
    if (rc != BF_OK) goto err_close_fd;
    if (refused && direct_mode == BF_DIRECT_ON) {
      rc = BF_IOERR;
      set_errmsg(errmsg,
                 bf_mprintf("%s: the file system refuses O_DIRECT: %s%s", path,
                            strerror(refused), why));
      goto err_close_fd;
    }
    io->direct = refused == 0;
  }

  io->mode = BF_IO_PSYNC;
  if (io_mode != BF_IO_PSYNC) {
    int err = setup_rings(io);
    if (err == 0) {
      io->mode = BF_IO_URING;
    } else if (io_mode == BF_IO_URING) {
      rc = BF_IOERR;
      set_errmsg(errmsg, bf_mprintf("io_uring is not available: %s",
                                    strerror(err)));
      goto err_close_fd;
    }
  }
  *out = io;
  return BF_OK;

err_close_fd:
  close(io->fd); /* releases the flock, if taken */
err_destroy_cond:
  pthread_cond_destroy(&io->pool_cond);
err_destroy_mutex:
  pthread_mutex_destroy(&io->pool_mutex);
err_free_io:
  bf_free(io);
  return rc;
}

/* Close the file (releasing the lock) and free io.  No call may be running
** on io.  Does not sync. */
void bf_io_close(struct bf_io *io) {
  if (!io) return;
  for (uint32_t i = 0; i < io->n_rings; i++) io_uring_queue_exit(&io->rings[i]);
  close(io->fd);
  pthread_cond_destroy(&io->pool_cond);
  pthread_mutex_destroy(&io->pool_mutex);
  bf_free(io);
}
