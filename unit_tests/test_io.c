/*
** test_io.c: tests of bf_io.c, the data file layer.
**
** The I/O tests run once per path through bf_io.c:
**   uring+direct     BF_IO_URING, BF_DIRECT_ON,  a directory under /tmp
**   psync+direct     BF_IO_PSYNC, BF_DIRECT_ON,  /tmp
**   uring+buffered   BF_IO_URING, BF_DIRECT_OFF, /tmp
**   psync+buffered   BF_IO_PSYNC, BF_DIRECT_OFF, /tmp
**   auto+shm         BF_IO_AUTO,  BF_DIRECT_AUTO, /dev/shm (direct only when
**                    this kernel's tmpfs takes O_DIRECT: Linux >= 6.6 does)
** A path the machine cannot take (no io_uring, no O_DIRECT under /tmp, no
** /dev/shm) is skipped.  The other tests cover open: the lock, missing
** files, bad modes, refused O_DIRECT / io_uring, allocation failures.
*/
#include "test_util.h"

#include "bf_int.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* Requested for bf_int.h; declared by bf_io.c until then. */
void bf_io_testing_refuse_direct(bool refuse);
int bf_io_last_errno(const struct bf_io *io);

#define PAGE 4096

/* ------------------------------------------------------------------------
** What this machine can do (probed once in main).
*/
static bool have_uring;      /* io_uring_queue_init works */
static bool tmp_direct;      /* O_DIRECT works under BF_TEST_DIR or /tmp */
static bool have_shm;        /* /dev/shm is a writable directory */
static bool shm_direct;      /* O_DIRECT works under /dev/shm */

/* True when a file in dir opens with O_DIRECT and takes aligned 512-byte
** I/O at 512-byte offsets. */
static bool probe_direct(const char *dir) {
  char path[600];
  snprintf(path, sizeof path, "%s/probe", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0644);
  if (fd < 0) return false;
  void *buf = NULL;
  bool ok = posix_memalign(&buf, PAGE, PAGE) == 0;
  if (ok) {
    memset(buf, 7, PAGE);
    ok = pwrite(fd, buf, PAGE, 0) == PAGE && pwrite(fd, buf, 512, 512) == 512 &&
         pread(fd, buf, 512, 512) == 512;
  }
  free(buf);
  close(fd);
  unlink(path);
  return ok;
}

static char *shm_tmpdir(void) {
  char tmpl[] = "/dev/shm/bftree-test-XXXXXX";
  char *d = mkdtemp(tmpl);
  return d ? strdup(d) : NULL;
}

static void probe_machine(void) {
  struct io_uring ring;
  if (io_uring_queue_init(4, &ring, 0) == 0) {
    have_uring = true;
    io_uring_queue_exit(&ring);
  }
  char *d = test_tmpdir();
  if (d) tmp_direct = probe_direct(d);
  test_rmdir(d);
  d = shm_tmpdir();
  if (d) {
    have_shm = true;
    shm_direct = probe_direct(d);
  }
  test_rmdir(d);
  printf("[ MACHINE  ] io_uring %s, O_DIRECT on tmp %s, /dev/shm %s%s\n",
         have_uring ? "yes" : "no", tmp_direct ? "yes" : "no",
         have_shm ? "yes" : "no",
         have_shm ? (shm_direct ? " (takes O_DIRECT)" : " (refuses O_DIRECT)")
                  : "");
}

/* ------------------------------------------------------------------------
** Configurations and fixtures.
*/
struct cfg {
  const char *name;
  int io_mode;
  int direct_mode;
  bool shm;
};

static const struct cfg cfgs[] = {
    {"uring+direct", BF_IO_URING, BF_DIRECT_ON, false},
    {"psync+direct", BF_IO_PSYNC, BF_DIRECT_ON, false},
    {"uring+buffered", BF_IO_URING, BF_DIRECT_OFF, false},
    {"psync+buffered", BF_IO_PSYNC, BF_DIRECT_OFF, false},
    {"auto+shm", BF_IO_AUTO, BF_DIRECT_AUTO, true},
};
#define N_CFGS (sizeof cfgs / sizeof cfgs[0])

struct fix {
  const struct cfg *cfg;
  char *dir;
  char path[600];
  struct bf_io *io;
};

/* The mode and direct flag the configuration must end up with. */
static int cfg_expect_mode(const struct cfg *c) {
  if (c->io_mode == BF_IO_PSYNC) return BF_IO_PSYNC;
  if (c->io_mode == BF_IO_URING) return BF_IO_URING;
  return have_uring ? BF_IO_URING : BF_IO_PSYNC;
}
static bool cfg_expect_direct(const struct cfg *c) {
  if (c->direct_mode == BF_DIRECT_OFF) return false;
  if (c->shm) return shm_direct;
  return tmp_direct;
}
static bool cfg_runnable(const struct cfg *c) {
  if (c->io_mode == BF_IO_URING && !have_uring) return false;
  if (c->shm && !have_shm) return false;
  if (!c->shm && c->direct_mode == BF_DIRECT_ON && !tmp_direct) return false;
  return true;
}

static void fix_open_io(struct fix *f) {
  char *msg = NULL;
  int rc = bf_io_open(f->path, f->cfg->io_mode, f->cfg->direct_mode, true,
                      &f->io, &msg);
  if (rc != BF_OK) fprintf(stderr, "bf_io_open: %s\n", msg ? msg : "?");
  assert_int_equal(rc, BF_OK);
  assert_null(msg);
  assert_non_null(f->io);
  assert_int_equal(bf_io_mode(f->io), cfg_expect_mode(f->cfg));
  assert_int_equal(bf_io_direct(f->io), cfg_expect_direct(f->cfg));
}

static int fix_setup(void **state) {
  const struct cfg *c = *state;
  struct fix *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->cfg = c;
  *state = f;
  if (!cfg_runnable(c)) return 0; /* the test body skips */
  f->dir = c->shm ? shm_tmpdir() : test_tmpdir();
  if (!f->dir) return -1;
  snprintf(f->path, sizeof f->path, "%s/data", f->dir);
  return 0;
}

static int fix_teardown(void **state) {
  struct fix *f = *state;
  for (int id = 0; id < BF_FAULT_COUNT; id++)
    bf_faultsim_set((enum bf_fault)id, 0, false);
  bf_io_close(f->io);
  test_rmdir(f->dir);
  free(f);
  return 0;
}

/* The fixture of a per-configuration test, with the file open. */
static struct fix *fix_get(void **state) {
  struct fix *f = *state;
  if (!cfg_runnable(f->cfg)) {
    printf("[  SKIP    ] %s: not available on this machine\n", f->cfg->name);
    skip();
  }
  fix_open_io(f);
  return f;
}

static uint8_t *abuf(size_t len) {
  uint8_t *p = bf_malloc_aligned(PAGE, len);
  assert_non_null(p);
  return p;
}

static void fill_random(uint8_t *p, size_t len, uint64_t *rng) {
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = test_rand(rng);
    memcpy(p + i, &v, len - i < 8 ? len - i : 8);
  }
}

/* Fill a page with a recognisable pattern of (tag, page). */
static void fill_page(uint8_t *p, size_t len, uint32_t tag, uint64_t page) {
  uint64_t s = ((uint64_t)tag << 32) ^ (page * 0x9E3779B97F4A7C15ull);
  fill_random(p, len, &s);
}

static bool all_bytes(const uint8_t *p, size_t len, uint8_t v) {
  for (size_t i = 0; i < len; i++)
    if (p[i] != v) return false;
  return true;
}

static uint64_t file_size(struct bf_io *io) {
  uint64_t size = 12345;
  assert_int_equal(bf_io_file_size(io, &size), BF_OK);
  return size;
}

/* ------------------------------------------------------------------------
** Per-configuration tests.
*/

/* Random writes and reads in 512-byte units against a shadow copy; the
** contents survive close and reopen. */
static void t_roundtrip(void **state) {
  struct fix *f = fix_get(state);
  uint64_t rng = test_seed("roundtrip");
  const size_t file_len = 128 * PAGE;
  const long iters = test_scale(3000);
  uint8_t *shadow = calloc(1, file_len);
  uint8_t *wbuf = abuf(4 * PAGE), *rbuf = abuf(file_len);
  assert_non_null(shadow);

  /* Give the file its full length first: reads must stay inside it. */
  memset(wbuf, 0, 4 * PAGE);
  for (size_t off = 0; off < file_len; off += 4 * PAGE)
    assert_int_equal(bf_io_write(f->io, wbuf, 4 * PAGE, off), BF_OK);
  assert_int_equal(file_size(f->io), file_len);

  for (long i = 0; i < iters; i++) {
    size_t units = 1 + test_rand(&rng) % 16; /* 512 .. 8192 bytes */
    size_t len = units * 512;
    uint64_t off = (test_rand(&rng) % (file_len / 512 - units + 1)) * 512;
    if (test_rand(&rng) % 2) {
      fill_random(wbuf, len, &rng);
      assert_int_equal(bf_io_write(f->io, wbuf, len, off), BF_OK);
      memcpy(shadow + off, wbuf, len);
    } else {
      memset(rbuf, 0xA5, len);
      assert_int_equal(bf_io_read(f->io, rbuf, len, off), BF_OK);
      assert_memory_equal(rbuf, shadow + off, len);
    }
  }
  assert_int_equal(bf_io_sync(f->io), BF_OK);
  assert_int_equal(bf_io_read(f->io, rbuf, file_len, 0), BF_OK);
  assert_memory_equal(rbuf, shadow, file_len);

  bf_io_close(f->io);
  f->io = NULL;
  fix_open_io(f);
  assert_int_equal(file_size(f->io), file_len);
  memset(rbuf, 0, file_len);
  assert_int_equal(bf_io_read(f->io, rbuf, file_len, 0), BF_OK);
  assert_memory_equal(rbuf, shadow, file_len);

  free(shadow);
  bf_free_aligned(wbuf);
  bf_free_aligned(rbuf);
}

/* Reads that reach past the end of the file fail with BF_IOERR; the file
** stays usable. */
static void t_eof(void **state) {
  struct fix *f = fix_get(state);
  uint8_t *w = abuf(4 * PAGE), *r = abuf(4 * PAGE);
  fill_page(w, 4 * PAGE, 1, 0);
  assert_int_equal(bf_io_write(f->io, w, 4 * PAGE, 0), BF_OK);

  assert_int_equal(bf_io_read(f->io, r, PAGE, 4 * PAGE), BF_IOERR);
  assert_int_equal(bf_io_last_errno(f->io), ENODATA);
  assert_int_equal(bf_io_read(f->io, r, 1024, 4 * PAGE - 512), BF_IOERR);
  assert_int_equal(bf_io_read(f->io, r, 2 * PAGE, 3 * PAGE), BF_IOERR);
  assert_int_equal(bf_io_read(f->io, r, PAGE, (uint64_t)1 << 40), BF_IOERR);
  /* A read that ends exactly at the end is fine. */
  assert_int_equal(bf_io_read(f->io, r, 512, 4 * PAGE - 512), BF_OK);
  assert_memory_equal(r, w + 4 * PAGE - 512, 512);
  assert_int_equal(bf_io_read(f->io, r, 4 * PAGE, 0), BF_OK);
  assert_memory_equal(r, w, 4 * PAGE);
  /* A zero-length read is a no-op, even past the end. */
  assert_int_equal(bf_io_read(f->io, r, 0, 100 * PAGE), BF_OK);
  bf_free_aligned(w);
  bf_free_aligned(r);
}

/* Batches larger than a ring's depth and than the batch chunk; one request
** past the end fails alone. */
static void t_batch(void **state) {
  struct fix *f = fix_get(state);
  uint64_t rng = test_seed("batch");
  const uint64_t npages = 96;
  const size_t n = 150;
  uint8_t *w = abuf(PAGE), *expect = abuf(PAGE);
  for (uint64_t p = 0; p < npages; p++) {
    fill_page(w, PAGE, 2, p);
    assert_int_equal(bf_io_write(f->io, w, PAGE, p * PAGE), BF_OK);
  }
  struct bf_io_request *reqs = calloc(n, sizeof *reqs);
  uint64_t *pages = calloc(n, sizeof *pages);
  size_t *skips = calloc(n, sizeof *skips);
  assert_non_null(reqs);
  assert_non_null(pages);
  assert_non_null(skips);
  for (size_t i = 0; i < n; i++) {
    pages[i] = test_rand(&rng) % npages;
    size_t units = 1 + test_rand(&rng) % 8;
    skips[i] = (test_rand(&rng) % (8 - units + 1)) * 512;
    reqs[i].buf = abuf(PAGE);
    reqs[i].len = units * 512;
    reqs[i].offset = pages[i] * PAGE + skips[i];
    reqs[i].status = -1;
  }
  for (int round = 0; round < 2; round++) {
    size_t bad = 37 + (size_t)round * 80; /* one in each chunk of 64 */
    uint64_t saved = reqs[bad].offset;
    if (round == 1) reqs[bad].offset = (npages + 3) * PAGE;
    int rc = bf_io_read_batch(f->io, reqs, n);
    assert_int_equal(rc, round == 0 ? BF_OK : BF_IOERR);
    for (size_t i = 0; i < n; i++) {
      if (round == 1 && i == bad) {
        assert_int_equal(reqs[i].status, BF_IOERR);
        continue;
      }
      assert_int_equal(reqs[i].status, BF_OK);
      fill_page(expect, PAGE, 2, pages[i]);
      assert_memory_equal(reqs[i].buf, expect + skips[i], reqs[i].len);
    }
    reqs[bad].offset = saved;
  }
  assert_int_equal(bf_io_read_batch(f->io, reqs, 0), BF_OK);
  for (size_t i = 0; i < n; i++) bf_free_aligned(reqs[i].buf);
  free(reqs);
  free(pages);
  free(skips);
  bf_free_aligned(w);
  bf_free_aligned(expect);
}

/* Concurrent readers and writers on disjoint pages. */
#define CONC_THREADS 6
#define CONC_PAGES 96
struct conc_arg {
  struct bf_io *io;
  int id;
  uint64_t seed;
  long iters;
  uint32_t *versions; /* per page, written only by the page's owner */
  _Atomic long *errors;
};

static void *conc_thread(void *p) {
  struct conc_arg *a = p;
  uint64_t rng = a->seed;
  uint8_t *w = bf_malloc_aligned(PAGE, PAGE);
  uint8_t *expect = bf_malloc_aligned(PAGE, PAGE);
  struct bf_io_request reqs[4];
  uint64_t req_pages[4];
  for (int i = 0; i < 4; i++) reqs[i].buf = bf_malloc_aligned(PAGE, PAGE);
  long errors = 0;
  /* My pages: id, id + CONC_THREADS, ... */
  const uint64_t mine = CONC_PAGES / CONC_THREADS;
  for (long i = 0; i < a->iters; i++) {
    uint64_t page = a->id + CONC_THREADS * (test_rand(&rng) % mine);
    switch (test_rand(&rng) % 3) {
      case 0: /* write a new version */
        a->versions[page]++;
        fill_page(w, PAGE, a->versions[page], page);
        if (bf_io_write(a->io, w, PAGE, page * PAGE) != BF_OK) errors++;
        break;
      case 1: /* read one page */
        if (bf_io_read(a->io, w, PAGE, page * PAGE) != BF_OK) {
          errors++;
          break;
        }
        fill_page(expect, PAGE, a->versions[page], page);
        if (memcmp(w, expect, PAGE) != 0) errors++;
        break;
      default: /* batch of 4 */
        for (int k = 0; k < 4; k++) {
          req_pages[k] = a->id + CONC_THREADS * (test_rand(&rng) % mine);
          reqs[k].len = PAGE;
          reqs[k].offset = req_pages[k] * PAGE;
        }
        if (bf_io_read_batch(a->io, reqs, 4) != BF_OK) {
          errors++;
          break;
        }
        for (int k = 0; k < 4; k++) {
          fill_page(expect, PAGE, a->versions[req_pages[k]], req_pages[k]);
          if (memcmp(reqs[k].buf, expect, PAGE) != 0) errors++;
        }
        break;
    }
  }
  atomic_fetch_add(a->errors, errors);
  for (int i = 0; i < 4; i++) bf_free_aligned(reqs[i].buf);
  bf_free_aligned(w);
  bf_free_aligned(expect);
  return NULL;
}

static void t_concurrent(void **state) {
  struct fix *f = fix_get(state);
  uint64_t seed = test_seed("concurrent");
  uint32_t versions[CONC_PAGES];
  uint8_t *w = abuf(PAGE), *r = abuf(PAGE);
  for (uint64_t p = 0; p < CONC_PAGES; p++) {
    versions[p] = 0;
    fill_page(w, PAGE, 0, p);
    assert_int_equal(bf_io_write(f->io, w, PAGE, p * PAGE), BF_OK);
  }
  _Atomic long errors = 0;
  pthread_t th[CONC_THREADS];
  struct conc_arg args[CONC_THREADS];
  for (int t = 0; t < CONC_THREADS; t++) {
    args[t] = (struct conc_arg){f->io, t, seed + (uint64_t)t * 7919,
                                test_scale(1000), versions, &errors};
    assert_int_equal(pthread_create(&th[t], NULL, conc_thread, &args[t]), 0);
  }
  for (int t = 0; t < CONC_THREADS; t++) pthread_join(th[t], NULL);
  assert_int_equal(atomic_load(&errors), 0);
  for (uint64_t p = 0; p < CONC_PAGES; p++) {
    assert_int_equal(bf_io_read(f->io, r, PAGE, p * PAGE), BF_OK);
    fill_page(w, PAGE, versions[p], p);
    assert_memory_equal(r, w, PAGE);
  }
  bf_free_aligned(w);
  bf_free_aligned(r);
}

/* Injected read, write, ENOSPC and sync faults: the call fails without
** doing I/O and the file stays usable. */
static void t_faults(void **state) {
  struct fix *f = fix_get(state);
  uint8_t *a = abuf(PAGE), *b = abuf(PAGE), *r = abuf(PAGE);
  size_t got;
  fill_page(a, PAGE, 3, 0);
  fill_page(b, PAGE, 4, 0);
  assert_int_equal(bf_io_write(f->io, a, PAGE, 0), BF_OK);
  assert_int_equal(bf_io_write(f->io, a, PAGE, PAGE), BF_OK);

  /* Read fault: nothing read, then reads work again. */
  bf_faultsim_set(BF_FAULT_READ, 1, false);
  memset(r, 0xEE, PAGE);
  assert_int_equal(bf_io_read(f->io, r, PAGE, 0), BF_IOERR);
  assert_int_equal(bf_faultsim_hits(BF_FAULT_READ), 1);
  assert_int_equal(bf_io_last_errno(f->io), EIO);
  assert_true(all_bytes(r, PAGE, 0xEE));
  assert_int_equal(bf_io_read(f->io, r, PAGE, 0), BF_OK);
  assert_memory_equal(r, a, PAGE);

  /* The second read fails; persistent faults keep failing until disarmed. */
  bf_faultsim_set(BF_FAULT_READ, 2, true);
  assert_int_equal(bf_io_read(f->io, r, PAGE, 0), BF_OK);
  for (int i = 0; i < 3; i++)
    assert_int_equal(bf_io_read(f->io, r, PAGE, 0), BF_IOERR);
  assert_int_equal(bf_io_read_raw(f->io, r, 10, 0, &got), BF_IOERR);
  assert_int_equal(got, 0);
  bf_faultsim_set(BF_FAULT_READ, 0, false);
  assert_int_equal(bf_io_read(f->io, r, PAGE, 0), BF_OK);

  /* Write fault (EIO): the page keeps its old contents. */
  bf_faultsim_set(BF_FAULT_WRITE, 1, false);
  assert_int_equal(bf_io_write(f->io, b, PAGE, 0), BF_IOERR);
  assert_int_equal(bf_io_last_errno(f->io), EIO);
  assert_int_equal(bf_io_read(f->io, r, PAGE, 0), BF_OK);
  assert_memory_equal(r, a, PAGE);

  /* Write fault with ENOSPC chosen: BF_FULL, nothing written. */
  bf_faultsim_set(BF_FAULT_WRITE, 1, false);
  bf_faultsim_set(BF_FAULT_ENOSPC, 1, true);
  assert_int_equal(bf_io_write(f->io, b, PAGE, 0), BF_FULL);
  assert_int_equal(bf_io_last_errno(f->io), ENOSPC);
  assert_int_equal(bf_faultsim_hits(BF_FAULT_ENOSPC), 1);
  assert_int_equal(bf_io_read(f->io, r, PAGE, 0), BF_OK);
  assert_memory_equal(r, a, PAGE);
  /* ENOSPC only chooses the errno of a write fault: alone it never fires. */
  assert_int_equal(bf_io_write(f->io, b, PAGE, 0), BF_OK);
  assert_int_equal(bf_faultsim_hits(BF_FAULT_ENOSPC), 1);
  bf_faultsim_set(BF_FAULT_ENOSPC, 0, false);
  assert_int_equal(bf_io_read(f->io, r, PAGE, 0), BF_OK);
  assert_memory_equal(r, b, PAGE);

  /* The second write fails, the first and third succeed. */
  bf_faultsim_set(BF_FAULT_WRITE, 2, false);
  assert_int_equal(bf_io_write(f->io, a, PAGE, 0), BF_OK);
  assert_int_equal(bf_io_write(f->io, b, PAGE, PAGE), BF_IOERR);
  assert_int_equal(bf_io_write(f->io, b, PAGE, 2 * PAGE), BF_OK);
  assert_int_equal(bf_io_read(f->io, r, PAGE, PAGE), BF_OK);
  assert_memory_equal(r, a, PAGE);
  assert_int_equal(file_size(f->io), 3 * PAGE);

  /* Sync fault. */
  bf_faultsim_set(BF_FAULT_SYNC, 1, false);
  assert_int_equal(bf_io_sync(f->io), BF_IOERR);
  assert_int_equal(bf_faultsim_hits(BF_FAULT_SYNC), 1);
  assert_int_equal(bf_io_sync(f->io), BF_OK);

  /* A fault hits one request of a batch; the others are read. */
  struct bf_io_request reqs[5];
  for (int i = 0; i < 5; i++) {
    reqs[i] = (struct bf_io_request){abuf(PAGE), PAGE, 0, -1};
    memset(reqs[i].buf, 0xEE, PAGE);
  }
  bf_faultsim_set(BF_FAULT_READ, 3, false);
  assert_int_equal(bf_io_read_batch(f->io, reqs, 5), BF_IOERR);
  assert_int_equal(bf_faultsim_hits(BF_FAULT_READ), 1);
  for (int i = 0; i < 5; i++) {
    if (i == 2) {
      assert_int_equal(reqs[i].status, BF_IOERR);
      assert_true(all_bytes(reqs[i].buf, PAGE, 0xEE));
    } else {
      assert_int_equal(reqs[i].status, BF_OK);
      assert_memory_equal(reqs[i].buf, a, PAGE);
    }
    bf_free_aligned(reqs[i].buf);
  }
  bf_free_aligned(a);
  bf_free_aligned(b);
  bf_free_aligned(r);
}

/* File size and truncation, both ways. */
static void t_size_truncate(void **state) {
  struct fix *f = fix_get(state);
  uint8_t *w = abuf(PAGE), *r = abuf(PAGE), *zero = abuf(PAGE);
  memset(zero, 0, PAGE);
  assert_int_equal(file_size(f->io), 0);
  fill_page(w, PAGE, 5, 2);
  assert_int_equal(bf_io_write(f->io, w, PAGE, 2 * PAGE), BF_OK);
  assert_int_equal(file_size(f->io), 3 * PAGE);
  /* The hole reads as zeroes. */
  assert_int_equal(bf_io_read(f->io, r, PAGE, PAGE), BF_OK);
  assert_memory_equal(r, zero, PAGE);

  assert_int_equal(bf_io_truncate(f->io, PAGE), BF_OK);
  assert_int_equal(file_size(f->io), PAGE);
  assert_int_equal(bf_io_read(f->io, r, PAGE, PAGE), BF_IOERR);
  assert_int_equal(bf_io_read(f->io, r, PAGE, 2 * PAGE), BF_IOERR);

  assert_int_equal(bf_io_truncate(f->io, 4 * PAGE), BF_OK);
  assert_int_equal(file_size(f->io), 4 * PAGE);
  assert_int_equal(bf_io_read(f->io, r, PAGE, 2 * PAGE), BF_OK);
  assert_memory_equal(r, zero, PAGE); /* the old page is gone */
  assert_int_equal(bf_io_sync(f->io), BF_OK);

  assert_int_equal(bf_io_truncate(f->io, 0), BF_OK);
  assert_int_equal(file_size(f->io), 0);
  bf_free_aligned(w);
  bf_free_aligned(r);
  bf_free_aligned(zero);
}

/* bf_io_read_raw: any offset, length and buffer; short at the end. */
static void t_read_raw(void **state) {
  struct fix *f = fix_get(state);
  uint8_t *w = abuf(3 * PAGE);
  uint8_t *mem = malloc(3 * PAGE + 1);
  assert_non_null(mem);
  uint8_t *r = mem + 1; /* deliberately misaligned */
  size_t got = 99;
  assert_int_equal(bf_io_read_raw(f->io, r, 100, 0, &got), BF_OK);
  assert_int_equal(got, 0); /* empty file */

  fill_page(w, 3 * PAGE, 6, 0);
  assert_int_equal(bf_io_write(f->io, w, 3 * PAGE, 0), BF_OK);
  assert_int_equal(bf_io_read_raw(f->io, r, 100, 3, &got), BF_OK);
  assert_int_equal(got, 100);
  assert_memory_equal(r, w + 3, 100);
  assert_int_equal(bf_io_read_raw(f->io, r, 5000, 4000, &got), BF_OK);
  assert_int_equal(got, 5000);
  assert_memory_equal(r, w + 4000, 5000);
  assert_int_equal(bf_io_read_raw(f->io, r, 5000, 12000, &got), BF_OK);
  assert_int_equal(got, 3 * PAGE - 12000);
  assert_memory_equal(r, w + 12000, got);
  assert_int_equal(bf_io_read_raw(f->io, r, 100, 20000, &got), BF_OK);
  assert_int_equal(got, 0);
  assert_int_equal(bf_io_read_raw(f->io, r, 0, 0, &got), BF_OK);
  assert_int_equal(got, 0);

  /* A file whose size is not a multiple of 512. */
  assert_int_equal(bf_io_truncate(f->io, 1000), BF_OK);
  assert_int_equal(bf_io_read_raw(f->io, r, 3 * PAGE, 0, &got), BF_OK);
  assert_int_equal(got, 1000);
  assert_memory_equal(r, w, 1000);
  assert_int_equal(bf_io_read_raw(f->io, r, 100, 990, &got), BF_OK);
  assert_int_equal(got, 10);
  assert_memory_equal(r, w + 990, 10);
  free(mem);
  bf_free_aligned(w);
}

/* ------------------------------------------------------------------------
** Open tests.
*/
struct dir_fix {
  char *dir;
  char path[600];
};

static int dir_setup(void **state) {
  struct dir_fix *d = calloc(1, sizeof *d);
  if (!d) return -1;
  d->dir = test_tmpdir();
  if (!d->dir) return -1;
  snprintf(d->path, sizeof d->path, "%s/data", d->dir);
  *state = d;
  return 0;
}

static int dir_teardown(void **state) {
  struct dir_fix *d = *state;
  for (int id = 0; id < BF_FAULT_COUNT; id++)
    bf_faultsim_set((enum bf_fault)id, 0, false);
  bf_io_testing_refuse_direct(false);
  test_rmdir(d->dir);
  free(d);
  return 0;
}

/* The lock: a second open fails with BF_BUSY, in this process and in
** another; after close the file opens again. */
static void t_busy(void **state) {
  struct dir_fix *d = *state;
  struct bf_io *a = NULL, *b = NULL;
  char *msg = NULL;
  assert_int_equal(bf_io_open(d->path, BF_IO_PSYNC, BF_DIRECT_OFF, true, &a,
                              &msg), BF_OK);
  for (int mode = BF_IO_AUTO; mode <= BF_IO_PSYNC; mode++) {
    assert_int_equal(bf_io_open(d->path, mode, BF_DIRECT_AUTO, true, &b, &msg),
                     BF_BUSY);
    assert_null(b);
    assert_non_null(msg);
    char expect[700];
    snprintf(expect, sizeof expect,
             "%s is in use by another open tree (locked)", d->path);
    assert_string_equal(msg, expect);
    free(msg);
    msg = NULL;
  }
  /* errmsg may be NULL. */
  assert_int_equal(bf_io_open(d->path, BF_IO_AUTO, BF_DIRECT_AUTO, false, &b,
                              NULL), BF_BUSY);

  /* Another process. */
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct bf_io *c = NULL;
    int rc = bf_io_open(d->path, BF_IO_PSYNC, BF_DIRECT_OFF, false, &c, NULL);
    _exit(rc);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), BF_BUSY);

  bf_io_close(a);
  assert_int_equal(bf_io_open(d->path, BF_IO_AUTO, BF_DIRECT_AUTO, false, &b,
                              &msg), BF_OK);
  assert_null(msg);
  bf_io_close(b);
}

/* A missing file without create; bad arguments; not a regular file. */
static void t_open_errors(void **state) {
  struct dir_fix *d = *state;
  struct bf_io *io = (struct bf_io *)1;
  char *msg = NULL;
  char expect[700];
  struct stat st;
  assert_int_equal(bf_io_open(d->path, BF_IO_AUTO, BF_DIRECT_AUTO, false, &io,
                              &msg), BF_IOERR);
  assert_null(io);
  snprintf(expect, sizeof expect, "cannot open %s: No such file or directory",
           d->path);
  assert_non_null(msg);
  assert_string_equal(msg, expect);
  free(msg);
  assert_int_not_equal(stat(d->path, &st), 0); /* not created */

  assert_int_equal(bf_io_open(d->path, 7, BF_DIRECT_AUTO, true, &io, &msg),
                   BF_INVALID);
  assert_non_null(msg);
  free(msg);
  assert_int_equal(bf_io_open(d->path, BF_IO_AUTO, -1, true, &io, &msg),
                   BF_INVALID);
  free(msg);
  assert_int_equal(bf_io_open(NULL, BF_IO_AUTO, BF_DIRECT_AUTO, true, &io,
                              NULL), BF_INVALID);
  assert_int_equal(bf_io_open("", BF_IO_AUTO, BF_DIRECT_AUTO, true, &io, NULL),
                   BF_INVALID);
  assert_null(io);
  assert_int_not_equal(stat(d->path, &st), 0);

  /* A directory is not a data file. */
  assert_int_equal(bf_io_open(d->dir, BF_IO_AUTO, BF_DIRECT_AUTO, false, &io,
                              &msg), BF_IOERR);
  assert_non_null(msg);
  free(msg);
}

/* O_DIRECT refused: ON fails with a message (and leaves no lock behind),
** AUTO falls back to buffered and works. */
static void t_direct_refused(void **state) {
  struct dir_fix *d = *state;
  struct bf_io *io = NULL;
  char *msg = NULL;
  uint8_t *w = abuf(PAGE), *r = abuf(PAGE);
  fill_page(w, PAGE, 7, 0);

  if (have_shm && !shm_direct) {
    /* The real thing: this kernel's tmpfs refuses O_DIRECT. */
    char *shm = shm_tmpdir();
    char path[600];
    assert_non_null(shm);
    snprintf(path, sizeof path, "%s/data", shm);
    assert_int_equal(bf_io_open(path, BF_IO_AUTO, BF_DIRECT_ON, true, &io,
                                &msg), BF_IOERR);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "O_DIRECT"));
    free(msg);
    assert_int_equal(bf_io_open(path, BF_IO_AUTO, BF_DIRECT_AUTO, true, &io,
                                &msg), BF_OK);
    assert_false(bf_io_direct(io));
    bf_io_close(io);
    test_rmdir(shm);
  }

  bf_io_testing_refuse_direct(true);
  assert_int_equal(bf_io_open(d->path, BF_IO_AUTO, BF_DIRECT_ON, true, &io,
                              &msg), BF_IOERR);
  assert_null(io);
  assert_non_null(msg);
  assert_non_null(strstr(msg, "refuses O_DIRECT"));
  assert_non_null(strstr(msg, d->path));
  free(msg);
  msg = NULL;
  assert_int_equal(bf_io_open(d->path, BF_IO_AUTO, BF_DIRECT_AUTO, false, &io,
                              &msg), BF_OK);
  assert_null(msg);
  assert_false(bf_io_direct(io));
  assert_int_equal(bf_io_write(io, w, PAGE, 0), BF_OK);
  assert_int_equal(bf_io_read(io, r, PAGE, 0), BF_OK);
  assert_memory_equal(r, w, PAGE);
  bf_io_close(io);
  bf_io_testing_refuse_direct(false);

  assert_int_equal(bf_io_open(d->path, BF_IO_AUTO, BF_DIRECT_AUTO, false, &io,
                              &msg), BF_OK);
  assert_int_equal(bf_io_direct(io), tmp_direct);
  assert_int_equal(bf_io_read(io, r, PAGE, 0), BF_OK);
  assert_memory_equal(r, w, PAGE);
  bf_io_close(io);
  bf_free_aligned(w);
  bf_free_aligned(r);
}

/* io_uring refused: URING fails with a message, AUTO falls back. */
static void t_uring_refused(void **state) {
  struct dir_fix *d = *state;
  struct bf_io *io = NULL;
  char *msg = NULL;
  uint8_t *w = abuf(PAGE), *r = abuf(PAGE);
  fill_page(w, PAGE, 8, 0);

  bf_faultsim_set(BF_FAULT_URING, 1, true);
  assert_int_equal(bf_io_open(d->path, BF_IO_URING, BF_DIRECT_AUTO, true, &io,
                              &msg), BF_IOERR);
  assert_null(io);
  assert_non_null(msg);
  assert_non_null(strstr(msg, "io_uring"));
  free(msg);
  msg = NULL;
  assert_int_equal(bf_io_open(d->path, BF_IO_AUTO, BF_DIRECT_AUTO, true, &io,
                              &msg), BF_OK);
  assert_true(bf_faultsim_hits(BF_FAULT_URING) >= 2);
  assert_int_equal(bf_io_mode(io), BF_IO_PSYNC);
  assert_int_equal(bf_io_write(io, w, PAGE, 0), BF_OK);
  assert_int_equal(bf_io_read(io, r, PAGE, 0), BF_OK);
  assert_memory_equal(r, w, PAGE);
  bf_io_close(io);
  bf_faultsim_set(BF_FAULT_URING, 0, false);

  /* PSYNC never asks for io_uring. */
  bf_faultsim_set(BF_FAULT_URING, 1, true);
  assert_int_equal(bf_io_open(d->path, BF_IO_PSYNC, BF_DIRECT_AUTO, true, &io,
                              &msg), BF_OK);
  assert_int_equal(bf_faultsim_hits(BF_FAULT_URING), 0);
  bf_io_close(io);
  bf_faultsim_set(BF_FAULT_URING, 0, false);

  if (have_uring) {
    assert_int_equal(bf_io_open(d->path, BF_IO_AUTO, BF_DIRECT_AUTO, true, &io,
                                &msg), BF_OK);
    assert_int_equal(bf_io_mode(io), BF_IO_URING);
    assert_int_equal(bf_io_read(io, r, PAGE, 0), BF_OK);
    assert_memory_equal(r, w, PAGE);
    bf_io_close(io);
  }
  bf_free_aligned(w);
  bf_free_aligned(r);
}

/* Fail the n-th allocation of bf_io_open for n = 1, 2, ...: each failure is
** BF_NOMEM with nothing leaked and no lock left behind. */
static void t_open_nomem(void **state) {
  struct dir_fix *d = *state;
  int failures = 0;
  for (long n = 1; n < 50; n++) {
    struct bf_io *io = NULL;
    char *msg = NULL;
    bf_faultsim_set(BF_FAULT_MALLOC, n, false);
    int rc = bf_io_open(d->path, BF_IO_AUTO, BF_DIRECT_AUTO, true, &io, &msg);
    long hits = bf_faultsim_hits(BF_FAULT_MALLOC);
    bf_faultsim_set(BF_FAULT_MALLOC, 0, false);
    if (hits == 0) {
      assert_int_equal(rc, BF_OK);
      bf_io_close(io);
      break;
    }
    failures++;
    assert_int_equal(rc, BF_NOMEM);
    assert_null(io);
    free(msg);
    /* The lock is free again. */
    assert_int_equal(bf_io_open(d->path, BF_IO_PSYNC, BF_DIRECT_OFF, true, &io,
                                NULL), BF_OK);
    bf_io_close(io);
  }
  assert_true(failures >= 1);
}

/* Write batches: larger than a ring's depth and than the batch chunk, pages
** in random order (some past the end: the file grows), each read back; a
** fault hits one write of a batch, which fails alone and leaves its page as
** it was. */
static void t_write_batch(void **state) {
  struct fix *f = fix_get(state);
  uint64_t rng = test_seed("write_batch");
  const size_t n = 150;
  struct bf_io_request *reqs = calloc(n, sizeof *reqs);
  uint64_t *order = calloc(n, sizeof *order);
  uint8_t *expect = abuf(PAGE), *r = abuf(PAGE);
  assert_non_null(reqs);
  assert_non_null(order);
  for (size_t i = 0; i < n; i++) order[i] = i;
  for (size_t i = n - 1; i > 0; i--) { /* a random permutation of pages */
    size_t j = test_rand(&rng) % (i + 1);
    uint64_t tmp = order[i];
    order[i] = order[j];
    order[j] = tmp;
  }
  for (size_t i = 0; i < n; i++) {
    reqs[i] = (struct bf_io_request){abuf(PAGE), PAGE, order[i] * PAGE, -1};
    fill_page(reqs[i].buf, PAGE, 5, order[i]);
  }
  assert_int_equal(bf_io_write_batch(f->io, reqs, n), BF_OK);
  assert_int_equal(file_size(f->io), n * PAGE);
  for (size_t p = 0; p < n; p++) {
    assert_int_equal(reqs[p].status, BF_OK);
    fill_page(expect, PAGE, 5, p);
    assert_int_equal(bf_io_read(f->io, r, PAGE, p * PAGE), BF_OK);
    assert_memory_equal(r, expect, PAGE);
  }
  assert_int_equal(bf_io_write_batch(f->io, reqs, 0), BF_OK);

  /* The third write of five fails; the other four land. */
  for (size_t i = 0; i < 5; i++) fill_page(reqs[i].buf, PAGE, 6, order[i]);
  bf_faultsim_set(BF_FAULT_WRITE, 3, false);
  assert_int_equal(bf_io_write_batch(f->io, reqs, 5), BF_IOERR);
  assert_int_equal(bf_faultsim_hits(BF_FAULT_WRITE), 1);
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(reqs[i].status, i == 2 ? BF_IOERR : BF_OK);
    fill_page(expect, PAGE, i == 2 ? 5 : 6, order[i]);
    assert_int_equal(bf_io_read(f->io, r, PAGE, order[i] * PAGE), BF_OK);
    assert_memory_equal(r, expect, PAGE);
  }
  for (size_t i = 0; i < n; i++) bf_free_aligned(reqs[i].buf);
  free(reqs);
  free(order);
  bf_free_aligned(expect);
  bf_free_aligned(r);
}

/* ------------------------------------------------------------------------
*/
struct named_test {
  const char *name;
  CMUnitTestFunction fn;
};

static const struct named_test per_cfg[] = {
    {"roundtrip", t_roundtrip},   {"eof", t_eof},
    {"batch", t_batch},           {"concurrent", t_concurrent},
    {"faults", t_faults},         {"size_truncate", t_size_truncate},
    {"read_raw", t_read_raw},     {"write_batch", t_write_batch},
};
#define N_PER_CFG (sizeof per_cfg / sizeof per_cfg[0])

int main(void) {
  probe_machine();
  static char names[N_PER_CFG * N_CFGS][80];
  struct CMUnitTest tests[N_PER_CFG * N_CFGS + 5] = {
      cmocka_unit_test_setup_teardown(t_busy, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(t_open_errors, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(t_direct_refused, dir_setup,
                                      dir_teardown),
      cmocka_unit_test_setup_teardown(t_uring_refused, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(t_open_nomem, dir_setup, dir_teardown),
  };
  size_t k = 5;
  for (size_t c = 0; c < N_CFGS; c++) {
    for (size_t t = 0; t < N_PER_CFG; t++) {
      char *name = names[c * N_PER_CFG + t];
      snprintf(name, sizeof names[0], "%s [%s]", per_cfg[t].name,
               cfgs[c].name);
      tests[k++] = (struct CMUnitTest){name, per_cfg[t].fn, fix_setup,
                                       fix_teardown,
                                       (void *)(uintptr_t)&cfgs[c]};
    }
  }
  assert(k == sizeof tests / sizeof tests[0]);
  return cmocka_run_group_tests_name("bf_io", tests, NULL, NULL);
}
