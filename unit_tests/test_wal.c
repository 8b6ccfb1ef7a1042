/*
** test_wal.c: tests of bf_wal.c, the write-ahead log.
**
** Every test replays into a recorder that writes each applied operation in
** a flat form (op, key length, value length or ~0 for a delete, key, value)
** and compares it byte for byte with the same form built while the batches
** were made, so order, contents and NULL values of deletes are all checked.
**
**   batch            encoding: counts, reset, free
**   roundtrip        puts, deletes, empty keys/values, 0-op commits, values
**                    up to 32 KiB, a 5 MiB transaction over several records;
**                    replay on the same handle and after reopening
**   torn_tail        the file cut at every byte of the last transaction
**                    (and at sampled offsets of a 5 MiB one) -> TORN, the
**                    earlier transactions exactly
**   corrupt_middle   a byte flipped in the 2nd of 5 transactions (and in a
**                    PART record) -> CORRUPT with a message, the 1st only
**   commit_limit     ids beyond the limit skipped and counted, id 0 always
**   from_lsn         transactions before from_lsn passed over
**   reset_stale      reset, append, old bytes written back after the new
**                    tail: never replayed; reset below the end refused
**   open_checks      file_id mismatch, bad header, torn header, foreign file
**   group_commit     8 threads appending+syncing: all replayed, few syncs
**   faults           write fault sticky until reset, ENOSPC -> BF_FULL, sync
**                    fault sticky, faults in open/reset, malloc failures
**   rotate           bf_wal_rotate: the old log renamed holds every record
**                    below the rotation LSN, the new one starts there; a
**                    second rotation refused while the old log exists;
**                    failed renames change nothing, a failed sync is
**                    sticky until reset; remove
*/
#include "test_util.h"

#include "bf_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>


#define FILE_ID 0x1234567890abcdefull
#define HEADER 4096

/* ------------------------------------------------------------------------
** Helpers: a growable byte buffer, the flat operation form, files.
*/
struct tbuf {
  uint8_t *p;
  size_t len, cap;
};

static void tbuf_add(struct tbuf *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    b->p = realloc(b->p, cap);
    assert_non_null(b->p);
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, data, n);
  b->len += n;
}

static void tbuf_free(struct tbuf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

static void flat_op(struct tbuf *b, int op, const uint8_t *key, uint32_t klen,
                    const uint8_t *val, uint32_t vlen) {
  uint8_t h[9];
  h[0] = (uint8_t)op;
  bf_put32(h + 1, klen);
  bf_put32(h + 5, op == BF_WAL_DELETE ? 0xffffffffu : vlen);
  tbuf_add(b, h, sizeof h);
  tbuf_add(b, key, klen);
  if (op == BF_WAL_PUT) tbuf_add(b, val, vlen);
}

/* The replay recorder. */
struct recorder {
  struct tbuf got;
  uint64_t ops;
  long fail_after;   /* >= 0: return fail_status once ops reaches it */
  int fail_status;
};

static int record_apply(void *ctx, int op, const uint8_t *key,
                        uint32_t key_len, const uint8_t *value,
                        uint32_t value_len) {
  struct recorder *r = ctx;
  if (r->fail_after >= 0 && r->ops == (uint64_t)r->fail_after)
    return r->fail_status;
  assert_non_null(key);
  if (op == BF_WAL_DELETE) {
    assert_null(value);
    assert_int_equal(value_len, 0);
  } else {
    assert_int_equal(op, BF_WAL_PUT);
    assert_non_null(value);
  }
  flat_op(&r->got, op, key, key_len, value, value_len);
  r->ops++;
  return BF_OK;
}

static void recorder_init(struct recorder *r) {
  memset(r, 0, sizeof *r);
  r->fail_after = -1;
}

static void write_file(const char *path, const uint8_t *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    assert_true(n > 0);
    done += (size_t)n;
  }
  close(fd);
}

static void write_at(const char *path, const uint8_t *data, size_t len,
                     off_t off) {
  int fd = open(path, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
  close(fd);
}

static uint8_t *read_file(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  uint8_t *p = malloc((size_t)st.st_size + 1);
  assert_non_null(p);
  size_t done = 0;
  while (done < (size_t)st.st_size) {
    ssize_t n = pread(fd, p + done, (size_t)st.st_size - done, (off_t)done);
    assert_true(n > 0);
    done += (size_t)n;
  }
  close(fd);
  *len = done;
  return p;
}

static char *path_in(const char *dir, const char *name) {
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  assert_non_null(p);
  sprintf(p, "%s/%s", dir, name);
  return p;
}

static struct bf_wal *open_ok(const char *path, uint64_t base_lsn) {
  struct bf_wal *wal = NULL;
  char *msg = NULL;
  int rc = bf_wal_open(path, FILE_ID, base_lsn, &wal, &msg);
  if (rc != BF_OK) fprintf(stderr, "open: %s\n", msg ? msg : "?");
  assert_int_equal(rc, BF_OK);
  assert_non_null(wal);
  assert_null(msg);
  return wal;
}

/* Replay everything; the recorder gets the operations. */
static int replay(struct bf_wal *wal, uint64_t from_lsn, uint64_t limit,
                  struct recorder *r, struct bf_wal_replay_info *info) {
  return bf_wal_replay(wal, from_lsn, limit, record_apply, r, info);
}

/* Random bytes. */
static void fill_random(uint64_t *rng, uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if ((i & 7) == 0) {
      uint64_t x = test_rand(rng);
      for (size_t k = 0; k < 8 && i + k < n; k++) p[i + k] = (uint8_t)(x >> (8 * k));
    }
  }
}

/*
** A random transaction of up to max_ops operations into batch (reset
** first) and its flat form appended to expect.  Keys 0..64 bytes (often
** empty), values 0..max_val bytes with some at max_val exactly.
*/
static void gen_txn(uint64_t *rng, struct bf_wal_batch *batch,
                    struct tbuf *expect, uint32_t max_ops, uint32_t max_val) {
  static uint8_t key[64], val[32768];
  bf_wal_batch_reset(batch);
  uint32_t n = max_ops ? (uint32_t)(test_rand(rng) % (max_ops + 1)) : 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t x = test_rand(rng);
    uint32_t klen = (x & 3) == 0 ? 0 : (uint32_t)((x >> 8) % sizeof key);
    fill_random(rng, key, klen);
    if ((x >> 16) % 4 == 0) {
      assert_int_equal(bf_wal_batch_delete(batch, key, klen), BF_OK);
      flat_op(expect, BF_WAL_DELETE, key, klen, NULL, 0);
    } else {
      uint32_t vlen;
      uint32_t pick = (uint32_t)((x >> 24) % 10);
      if (pick == 0) vlen = 0;
      else if (pick == 1) vlen = max_val;
      else if (pick == 2) vlen = (uint32_t)((x >> 32) % (max_val + 1));
      else vlen = (uint32_t)((x >> 32) % (max_val < 100 ? max_val + 1 : 100));
      fill_random(rng, val, vlen);
      assert_int_equal(bf_wal_batch_put(batch, key, klen, val, vlen), BF_OK);
      flat_op(expect, BF_WAL_PUT, key, klen, val, vlen);
    }
  }
  assert_int_equal(batch->count, n);
}

/* A big transaction: puts of 32 KiB values until the encoding exceeds
** bytes. */
static void gen_big_txn(uint64_t *rng, struct bf_wal_batch *batch,
                        struct tbuf *expect, size_t bytes) {
  static uint8_t val[32768];
  bf_wal_batch_reset(batch);
  uint32_t i = 0;
  while (batch->len < bytes) {
    uint8_t key[8];
    bf_put32(key, i);
    bf_put32(key + 4, (uint32_t)test_rand(rng));
    uint32_t vlen = sizeof val - (uint32_t)(test_rand(rng) % 64);
    fill_random(rng, val, vlen);
    assert_int_equal(bf_wal_batch_put(batch, key, sizeof key, val, vlen), BF_OK);
    flat_op(expect, BF_WAL_PUT, key, sizeof key, val, vlen);
    i++;
  }
}

/* The size of the big transactions: 5 MiB (four PART records and a COMMIT)
** at scale 100; 2 MiB and a bit (two PARTs) below, where the sanitizers
** make checksumming slow. */
static size_t big_bytes(void) {
  return test_scale(100) >= 100 ? (size_t)5 << 20 : ((size_t)2 << 20) + 1000;
}

static void append_ok(struct bf_wal *wal, const struct bf_wal_batch *batch,
                      uint64_t commit_id, uint64_t *end) {
  uint64_t lsn = 0;
  assert_int_equal(bf_wal_append(wal, batch, commit_id, &lsn), BF_OK);
  assert_int_equal(bf_wal_end_lsn(wal), lsn);
  if (end) *end = lsn;
}

static void assert_same(const struct tbuf *got, const uint8_t *want,
                        size_t want_len) {
  assert_int_equal(got->len, want_len);
  if (want_len) assert_memory_equal(got->p, want, want_len);
}

/* ------------------------------------------------------------------------
** Tests.
*/
static void test_batch(void **state) {
  BF_UNUSED(state);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  assert_int_equal(bf_wal_batch_put(&b, (const uint8_t *)"k", 1,
                                    (const uint8_t *)"v", 1), BF_OK);
  assert_int_equal(bf_wal_batch_delete(&b, (const uint8_t *)"k", 1), BF_OK);
  assert_int_equal(bf_wal_batch_put(&b, NULL, 0, NULL, 0), BF_OK);
  assert_int_equal(b.count, 3);
  /* put: op, klen, vlen, k, v = 5; delete: op, klen, k = 3; empty put: 3 */
  assert_int_equal(b.len, 11);
  assert_int_equal(b.data[0], BF_WAL_PUT);
  assert_int_equal(b.data[5], BF_WAL_DELETE);
  /* A 200-byte value needs a two-byte length. */
  uint8_t v[200] = {0};
  bf_wal_batch_reset(&b);
  assert_int_equal(b.count, 0);
  assert_int_equal(b.len, 0);
  assert_int_equal(bf_wal_batch_put(&b, v, 1, v, sizeof v), BF_OK);
  assert_int_equal(b.len, 1 + 1 + 2 + 1 + 200);
  size_t cap = b.cap;
  bf_wal_batch_reset(&b);
  assert_int_equal(b.cap, cap);
  bf_wal_batch_free(&b);
  assert_null(b.data);
  assert_int_equal(b.cap, 0);
}

static void test_roundtrip(void **state) {
  BF_UNUSED(state);
  uint64_t rng = test_seed("roundtrip");
  char *dir = test_tmpdir();
  char *path = path_in(dir, "t-wal");
  struct bf_wal *wal = open_ok(path, 1000);
  assert_int_equal(bf_wal_end_lsn(wal), 1000);
  assert_int_equal(bf_wal_size(wal), 0);

  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  struct tbuf expect = {0};
  uint64_t n_txn = 0, n_ops = 0, end = 0;

  /* Fixed cases: an empty key, an empty value, a delete, a 0-op commit. */
  assert_int_equal(bf_wal_batch_put(&b, NULL, 0, (const uint8_t *)"x", 1), BF_OK);
  flat_op(&expect, BF_WAL_PUT, NULL, 0, (const uint8_t *)"x", 1);
  assert_int_equal(bf_wal_batch_put(&b, (const uint8_t *)"a", 1, NULL, 0), BF_OK);
  flat_op(&expect, BF_WAL_PUT, (const uint8_t *)"a", 1, NULL, 0);
  assert_int_equal(bf_wal_batch_delete(&b, NULL, 0), BF_OK);
  flat_op(&expect, BF_WAL_DELETE, NULL, 0, NULL, 0);
  append_ok(wal, &b, 1, &end);
  n_txn++;
  n_ops += 3;
  bf_wal_batch_reset(&b);
  append_ok(wal, &b, 2, &end); /* 0 operations: a COMMIT record alone */
  n_txn++;
  assert_int_equal(bf_wal_size(wal), end - 1000);

  /* Random transactions, values up to 32 KiB. */
  long rounds = test_scale(200);
  for (long i = 0; i < rounds; i++) {
    gen_txn(&rng, &b, &expect, 20, i % 5 == 0 ? 32768 : 300);
    n_ops += b.count;
    append_ok(wal, &b, (uint64_t)i + 3, &end);
    n_txn++;
  }
  /* 5 MiB: four PART records and a COMMIT. */
  gen_big_txn(&rng, &b, &expect, 5u << 20);
  n_ops += b.count;
  uint64_t before_big = end;
  append_ok(wal, &b, 0, &end);
  n_txn++;
  assert_true(end - before_big > (5u << 20));
  assert_true(end - before_big < (5u << 20) + 4 * 64 + 32768 + 64);
  /* And a small one after it. */
  gen_txn(&rng, &b, &expect, 5, 50);
  n_ops += b.count;
  append_ok(wal, &b, 7777, &end);
  n_txn++;

  /* Replay on the same handle. */
  struct recorder r;
  struct bf_wal_replay_info info;
  recorder_init(&r);
  assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
  assert_int_equal(info.stop, BF_WAL_STOP_END);
  assert_int_equal(info.transactions, n_txn);
  assert_int_equal(info.operations, n_ops);
  assert_int_equal(info.skipped, 0);
  assert_int_equal(info.last_commit_id, 7777);
  assert_int_equal(info.end_lsn, end);
  assert_true(strstr(info.message, "cleanly") != NULL);
  assert_same(&r.got, expect.p, expect.len);
  tbuf_free(&r.got);

  /* The file is exactly header + records. */
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal((uint64_t)st.st_size, HEADER + end - 1000);
  bf_wal_close(wal);

  /* Reopen: a log with records replays, refuses appends until reset. */
  wal = open_ok(path, 5);
  recorder_init(&r);
  assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
  assert_int_equal(info.stop, BF_WAL_STOP_END);
  assert_int_equal(info.transactions, n_txn);
  assert_int_equal(info.end_lsn, end);
  assert_same(&r.got, expect.p, expect.len);
  tbuf_free(&r.got);
  assert_int_equal(bf_wal_end_lsn(wal), end);
  uint64_t lsn;
  assert_int_equal(bf_wal_append(wal, &b, 1, &lsn), BF_INVALID);
  assert_int_equal(bf_wal_reset(wal, end - 1), BF_INVALID);
  assert_int_equal(bf_wal_reset(wal, end + 100), BF_OK);
  assert_int_equal(bf_wal_end_lsn(wal), end + 100);
  assert_int_equal(bf_wal_size(wal), 0);
  append_ok(wal, &b, 1, &lsn);
  assert_int_equal(bf_wal_sync(wal, lsn), BF_OK);
  bf_wal_close(wal);

  tbuf_free(&expect);
  bf_wal_batch_free(&b);
  free(path);
  test_rmdir(dir);
}

/*
** Build a log of small transactions then one last transaction (big or not),
** keep its bytes, and replay prefixes cut inside the last transaction.
*/
static void torn_case(uint64_t *rng, const char *dir, bool big) {
  char *path = path_in(dir, "torn-wal");
  char *cut = path_in(dir, "cut-wal");
  unlink(path);
  struct bf_wal *wal = open_ok(path, 0);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  struct tbuf expect = {0};
  int n = 5;
  uint64_t ends[6] = {0};
  size_t expect_before_last = 0;
  for (int i = 0; i < n; i++) {
    if (i == n - 1) {
      expect_before_last = expect.len;
      if (big) gen_big_txn(rng, &b, &expect, big_bytes());
      else gen_txn(rng, &b, &expect, 30, 100);
    } else {
      gen_txn(rng, &b, &expect, 8, 60);
    }
    append_ok(wal, &b, (uint64_t)i + 1, &ends[i + 1]);
  }
  size_t parts = (b.len - 1) >> 20; /* PART records of the last one */
  bf_wal_close(wal);
  size_t len;
  uint8_t *bytes = read_file(path, &len);
  size_t last_start = HEADER + ends[n - 1], last_end = HEADER + ends[n];
  assert_int_equal(len, last_end);

  /* The offsets to cut at: every byte of a small transaction; for the big
  ** one the record boundaries (and one byte either side) plus samples. */
  size_t n_cuts = 0, *cuts;
  if (!big) {
    cuts = malloc((last_end - last_start) * sizeof *cuts);
    /* Every byte at scale 100; a stride at smaller scales, always keeping
    ** the record header's bytes and the last byte. */
    size_t stride = (size_t)(100 / test_scale(100));
    if (stride < 1) stride = 1;
    for (size_t off = last_start + 1; off < last_end; off++)
      if (off < last_start + 48 || off == last_end - 1 ||
          (off - last_start) % stride == 0)
        cuts[n_cuts++] = off;
  } else {
    long samples = test_scale(12);
    cuts = malloc((size_t)(samples + 20) * sizeof *cuts);
    for (size_t k = 0; k <= parts; k++) { /* PART records, then COMMIT */
      size_t at = last_start + k * (48 + (1u << 20));
      if (k) cuts[n_cuts++] = at;
      if (k) cuts[n_cuts++] = at - 1;
      cuts[n_cuts++] = at + 1;
    }
    cuts[n_cuts++] = last_end - 1;
    for (long k = 0; k < samples; k++)
      cuts[n_cuts++] = last_start + 1 + test_rand(rng) % (last_end - last_start - 1);
  }
  for (size_t k = 0; k < n_cuts; k++) {
    write_file(cut, bytes, cuts[k]);
    wal = open_ok(cut, 0);
    struct recorder r;
    struct bf_wal_replay_info info;
    recorder_init(&r);
    assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
    if (info.stop != BF_WAL_STOP_TORN)
      fprintf(stderr, "cut at %zu: stop %d: %s\n", cuts[k], info.stop,
              info.message);
    assert_int_equal(info.stop, BF_WAL_STOP_TORN);
    assert_true(strstr(info.message, "torn") != NULL);
    assert_int_equal(info.transactions, (uint64_t)n - 1);
    assert_int_equal(info.last_commit_id, (uint64_t)n - 1);
    assert_true(info.end_lsn >= ends[n - 1] && info.end_lsn <= cuts[k] - HEADER);
    assert_same(&r.got, expect.p, expect_before_last);
    tbuf_free(&r.got);
    /* The caller's recovery (on some cuts: a reset syncs): reset past the
    ** end, append, replay. */
    if (k % 97 != 0 && !(big && k < 18)) {
      bf_wal_close(wal);
      continue;
    }
    assert_int_equal(bf_wal_reset(wal, info.end_lsn), BF_OK);
    bf_wal_batch_reset(&b);
    assert_int_equal(bf_wal_batch_put(&b, (const uint8_t *)"z", 1,
                                      (const uint8_t *)"z", 1), BF_OK);
    uint64_t lsn;
    append_ok(wal, &b, 99, &lsn);
    recorder_init(&r);
    assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
    assert_int_equal(info.stop, BF_WAL_STOP_END);
    assert_int_equal(info.transactions, 1);
    tbuf_free(&r.got);
    bf_wal_close(wal);
  }
  /* The whole file replays cleanly. */
  wal = open_ok(path, 0);
  struct recorder r;
  struct bf_wal_replay_info info;
  recorder_init(&r);
  assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
  assert_int_equal(info.stop, BF_WAL_STOP_END);
  assert_int_equal(info.transactions, (uint64_t)n);
  assert_same(&r.got, expect.p, expect.len);
  tbuf_free(&r.got);
  bf_wal_close(wal);

  free(cuts);
  free(bytes);
  tbuf_free(&expect);
  bf_wal_batch_free(&b);
  free(path);
  free(cut);
}

static void test_torn_tail(void **state) {
  BF_UNUSED(state);
  uint64_t rng = test_seed("torn_tail");
  char *dir = test_tmpdir();
  torn_case(&rng, dir, false);
  torn_case(&rng, dir, true);
  test_rmdir(dir);
}

static void test_corrupt_middle(void **state) {
  BF_UNUSED(state);
  uint64_t rng = test_seed("corrupt_middle");
  char *dir = test_tmpdir();
  char *path = path_in(dir, "c-wal");
  char *bad = path_in(dir, "bad-wal");

  for (int big = 0; big < 2; big++) {
    unlink(path);
    struct bf_wal *wal = open_ok(path, 0);
    struct bf_wal_batch b;
    memset(&b, 0, sizeof b);
    struct tbuf expect = {0};
    uint64_t ends[6] = {0};
    size_t expect_after_first = 0;
    for (int i = 0; i < 5; i++) {
      if (big && i == 1) gen_big_txn(&rng, &b, &expect, big_bytes());
      else gen_txn(&rng, &b, &expect, 10, 80);
      if (i == 0) expect_after_first = expect.len;
      append_ok(wal, &b, (uint64_t)i + 1, &ends[i + 1]);
    }
    bf_wal_close(wal);
    size_t len;
    uint8_t *bytes = read_file(path, &len);
    size_t start = HEADER + ends[1], stop = HEADER + ends[2];
    long flips = test_scale(big ? 8 : 60);
    for (long k = 0; k < flips; k++) {
      size_t off = start + test_rand(&rng) % (stop - start);
      if (k == 0) off = start;              /* the CRC */
      if (k == 1) off = start + 12;         /* the salt */
      if (k == 2) off = stop - 1;           /* the last byte (maybe padding) */
      uint8_t bit = (uint8_t)(1u << (test_rand(&rng) % 8));
      bytes[off] ^= bit;
      write_file(bad, bytes, len);
      bytes[off] ^= bit;
      wal = open_ok(bad, 0);
      struct recorder r;
      struct bf_wal_replay_info info;
      recorder_init(&r);
      assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
      if (info.stop != BF_WAL_STOP_CORRUPT)
        fprintf(stderr, "flip at %zu: stop %d: %s\n", off, info.stop,
                info.message);
      assert_int_equal(info.stop, BF_WAL_STOP_CORRUPT);
      assert_int_equal(info.transactions, 1);
      assert_int_equal(info.last_commit_id, 1);
      assert_same(&r.got, expect.p, expect_after_first);
      assert_true(strstr(info.message, "corrupt") != NULL);
      char lsn_text[32];
      snprintf(lsn_text, sizeof lsn_text, "LSN %llu", (unsigned long long)ends[1]);
      if (off < start + 48 + (big ? (1u << 20) : stop - start))
        assert_true(strstr(info.message, lsn_text) != NULL);
      tbuf_free(&r.got);
      bf_wal_close(wal);
    }
    free(bytes);
    tbuf_free(&expect);
    bf_wal_batch_free(&b);
  }
  free(path);
  free(bad);
  test_rmdir(dir);
}

/* A misplaced record (a misdirected write: a later transaction's valid
** record at an earlier position) is not replayed there. */
static void test_misplaced(void **state) {
  BF_UNUSED(state);
  char *dir = test_tmpdir();
  char *path = path_in(dir, "m-wal");
  struct bf_wal *wal = open_ok(path, 0);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  uint64_t ends[4] = {0};
  for (int i = 0; i < 3; i++) {
    bf_wal_batch_reset(&b);
    uint8_t key = (uint8_t)i;
    assert_int_equal(bf_wal_batch_put(&b, &key, 1, &key, 1), BF_OK);
    append_ok(wal, &b, (uint64_t)i + 1, &ends[i + 1]);
  }
  bf_wal_close(wal);
  size_t len;
  uint8_t *bytes = read_file(path, &len);
  size_t rec = (size_t)(ends[1] - ends[0]);
  assert_int_equal(ends[2] - ends[1], rec);
  /* The 2nd record's bytes written over the 1st. */
  memcpy(bytes + HEADER, bytes + HEADER + rec, rec);
  write_file(path, bytes, len);
  wal = open_ok(path, 0);
  struct recorder r;
  struct bf_wal_replay_info info;
  recorder_init(&r);
  assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
  assert_int_equal(info.transactions, 0);
  assert_int_equal(info.stop, BF_WAL_STOP_CORRUPT);
  assert_true(strstr(info.message, "LSN") != NULL);
  tbuf_free(&r.got);
  bf_wal_close(wal);
  free(bytes);
  bf_wal_batch_free(&b);
  free(path);
  test_rmdir(dir);
}

static void test_commit_limit(void **state) {
  BF_UNUSED(state);
  uint64_t rng = test_seed("commit_limit");
  char *dir = test_tmpdir();
  char *path = path_in(dir, "l-wal");
  struct bf_wal *wal = open_ok(path, 0);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  struct tbuf expect = {0}, scratch = {0};
  /* ids: 1..10, and id 0 after every third one. */
  uint64_t applied = 0;
  for (uint64_t id = 1; id <= 10; id++) {
    struct tbuf *t = id <= 6 ? &expect : &scratch;
    gen_txn(&rng, &b, t, 4, 20);
    append_ok(wal, &b, id, NULL);
    if (id <= 6) applied++;
    if (id % 3 == 0) {
      gen_txn(&rng, &b, &expect, 4, 20);
      append_ok(wal, &b, 0, NULL);
      applied++;
    }
  }
  struct recorder r;
  struct bf_wal_replay_info info;
  recorder_init(&r);
  assert_int_equal(replay(wal, 0, 6, &r, &info), BF_OK);
  assert_int_equal(info.stop, BF_WAL_STOP_END);
  assert_int_equal(info.skipped, 4);
  assert_int_equal(info.transactions, applied);
  assert_int_equal(info.last_commit_id, 6);
  assert_same(&r.got, expect.p, expect.len);
  tbuf_free(&r.got);
  /* Limit 0: only id-0 transactions. */
  recorder_init(&r);
  assert_int_equal(replay(wal, 0, 0, &r, &info), BF_OK);
  assert_int_equal(info.skipped, 10);
  assert_int_equal(info.transactions, 3);
  assert_int_equal(info.last_commit_id, 0);
  tbuf_free(&r.got);
  bf_wal_close(wal);
  tbuf_free(&expect);
  tbuf_free(&scratch);
  bf_wal_batch_free(&b);
  free(path);
  test_rmdir(dir);
}

static void test_from_lsn(void **state) {
  BF_UNUSED(state);
  uint64_t rng = test_seed("from_lsn");
  char *dir = test_tmpdir();
  char *path = path_in(dir, "f-wal");
  struct bf_wal *wal = open_ok(path, 500);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  struct tbuf expect = {0};
  enum { N = 8 };
  uint64_t ends[N + 1];
  size_t flat_at[N + 1];
  ends[0] = 500;
  flat_at[0] = 0;
  for (int i = 0; i < N; i++) {
    gen_txn(&rng, &b, &expect, 6, i == 3 ? 20000 : 40);
    append_ok(wal, &b, (uint64_t)i + 1, &ends[i + 1]);
    flat_at[i + 1] = expect.len;
  }
  for (int k = 0; k <= N; k++) {
    struct recorder r;
    struct bf_wal_replay_info info;
    recorder_init(&r);
    assert_int_equal(replay(wal, ends[k], UINT64_MAX, &r, &info), BF_OK);
    assert_int_equal(info.stop, BF_WAL_STOP_END);
    assert_int_equal(info.transactions, (uint64_t)(N - k));
    assert_int_equal(info.skipped, 0);
    assert_int_equal(info.end_lsn, ends[N]);
    assert_same(&r.got, expect.p + flat_at[k], expect.len - flat_at[k]);
    tbuf_free(&r.got);
    /* An LSN inside transaction k+1 still replays it. */
    if (k < N) {
      recorder_init(&r);
      assert_int_equal(replay(wal, ends[k] + 8, UINT64_MAX, &r, &info), BF_OK);
      assert_int_equal(info.transactions, (uint64_t)(N - k));
      tbuf_free(&r.got);
    }
  }
  bf_wal_close(wal);
  tbuf_free(&expect);
  bf_wal_batch_free(&b);
  free(path);
  test_rmdir(dir);
}

static void test_reset_stale(void **state) {
  BF_UNUSED(state);
  uint64_t rng = test_seed("reset_stale");
  char *dir = test_tmpdir();
  char *path = path_in(dir, "r-wal");
  struct bf_wal *wal = open_ok(path, 0);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  struct tbuf old = {0}, expect = {0};
  uint64_t end = 0;
  for (int i = 0; i < 6; i++) {
    static const uint8_t filler[300];
    gen_txn(&rng, &b, &old, 10, 200);
    assert_int_equal(bf_wal_batch_put(&b, filler, 4, filler, sizeof filler), BF_OK);
    flat_op(&old, BF_WAL_PUT, filler, 4, filler, sizeof filler);
    append_ok(wal, &b, (uint64_t)i + 1, &end);
  }
  size_t old_len;
  uint8_t *old_bytes = read_file(path, &old_len);

  assert_int_equal(bf_wal_reset(wal, end - 1), BF_INVALID);
  assert_int_equal(bf_wal_reset(wal, end), BF_OK);
  assert_int_equal(bf_wal_size(wal), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, HEADER);
  /* The new header has a new salt. */
  size_t hlen;
  uint8_t *hdr = read_file(path, &hlen);
  assert_int_not_equal(bf_get32(hdr + 32), bf_get32(old_bytes + 32));
  assert_int_equal(bf_get64(hdr + 24), end);
  free(hdr);

  gen_txn(&rng, &b, &expect, 3, 10);
  uint64_t new_end;
  append_ok(wal, &b, 7, &new_end);
  size_t new_off = HEADER + (size_t)(new_end - end);
  assert_true(new_off < old_len);
  /* Stale bytes of the old log come back after the new tail (a file
  ** system that lost the truncation). */
  write_at(path, old_bytes + new_off, old_len - new_off, (off_t)new_off);
  for (int reopen = 0; reopen < 2; reopen++) {
    if (reopen) {
      bf_wal_close(wal);
      wal = open_ok(path, 0);
    }
    struct recorder r;
    struct bf_wal_replay_info info;
    recorder_init(&r);
    assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
    assert_int_equal(info.transactions, 1);
    assert_int_equal(info.last_commit_id, 7);
    assert_int_equal(info.end_lsn, new_end);
    assert_true(info.stop == BF_WAL_STOP_TORN || info.stop == BF_WAL_STOP_END);
    assert_same(&r.got, expect.p, expect.len);
    tbuf_free(&r.got);
  }
  /* Worse: the whole old log written back after the new header, records at
  ** the same offsets as before: the salt and the LSNs both differ. */
  write_at(path, old_bytes + HEADER, old_len - HEADER, HEADER);
  struct recorder r;
  struct bf_wal_replay_info info;
  recorder_init(&r);
  assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
  assert_int_equal(info.transactions, 0);
  assert_int_equal(info.stop, BF_WAL_STOP_TORN);
  assert_int_equal(r.got.len, 0);
  bf_wal_close(wal);

  free(old_bytes);
  tbuf_free(&old);
  tbuf_free(&expect);
  bf_wal_batch_free(&b);
  free(path);
  test_rmdir(dir);
}

/* The salt alone: records of another log with the same file_id and the
** same base LSN (so every LSN matches its position) behind this log's
** header are never replayed. */
static void test_salt_only(void **state) {
  BF_UNUSED(state);
  uint64_t rng = test_seed("salt_only");
  char *dir = test_tmpdir();
  char *a = path_in(dir, "a-wal"), *b2 = path_in(dir, "b-wal");
  struct bf_wal *wal = open_ok(a, 300);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  struct tbuf expect = {0};
  for (int i = 0; i < 4; i++) {
    gen_txn(&rng, &b, &expect, 6, 100);
    append_ok(wal, &b, (uint64_t)i + 1, NULL);
  }
  bf_wal_close(wal);
  wal = open_ok(b2, 300);
  bf_wal_close(wal);
  size_t alen, blen;
  uint8_t *abytes = read_file(a, &alen), *bbytes = read_file(b2, &blen);
  assert_int_equal(blen, HEADER);
  assert_int_not_equal(bf_get32(abytes + 32), bf_get32(bbytes + 32));
  memcpy(abytes, bbytes, HEADER); /* a's records behind b's header */
  write_file(b2, abytes, alen);
  wal = open_ok(b2, 300);
  struct recorder r;
  struct bf_wal_replay_info info;
  recorder_init(&r);
  assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
  assert_int_equal(info.transactions, 0);
  assert_int_equal(info.stop, BF_WAL_STOP_TORN);
  assert_true(strstr(info.message, "salt") != NULL);
  assert_int_equal(info.end_lsn, 300);
  bf_wal_close(wal);
  free(abytes);
  free(bbytes);
  tbuf_free(&expect);
  bf_wal_batch_free(&b);
  free(a);
  free(b2);
  test_rmdir(dir);
}

static void test_open_checks(void **state) {
  BF_UNUSED(state);
  char *dir = test_tmpdir();
  char *path = path_in(dir, "o-wal");
  struct bf_wal *wal = open_ok(path, 0);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  assert_int_equal(bf_wal_batch_put(&b, (const uint8_t *)"k", 1,
                                    (const uint8_t *)"v", 1), BF_OK);
  uint64_t end;
  append_ok(wal, &b, 1, &end);
  bf_wal_close(wal);

  /* Another data file's log. */
  char *msg = NULL;
  wal = (struct bf_wal *)&msg; /* must be set to NULL */
  assert_int_equal(bf_wal_open(path, FILE_ID + 1, 0, &wal, &msg), BF_CORRUPT);
  assert_null(wal);
  assert_non_null(msg);
  assert_true(strstr(msg, "another data file") != NULL);
  free(msg);
  /* Without errmsg. */
  assert_int_equal(bf_wal_open(path, FILE_ID + 1, 0, &wal, NULL), BF_CORRUPT);

  /* A damaged header on a log with records. */
  size_t len;
  uint8_t *bytes = read_file(path, &len);
  bytes[20] ^= 1;
  write_file(path, bytes, len);
  msg = NULL;
  assert_int_equal(bf_wal_open(path, FILE_ID, 0, &wal, &msg), BF_CORRUPT);
  assert_non_null(msg);
  assert_true(strstr(msg, "header") != NULL);
  free(msg);
  bytes[20] ^= 1;

  /* A torn header (a prefix of one, no records): rewritten. */
  write_file(path, bytes, 100);
  wal = open_ok(path, 77);
  assert_int_equal(bf_wal_end_lsn(wal), 77);
  append_ok(wal, &b, 1, &end);
  bf_wal_close(wal);
  write_file(path, NULL, 0); /* empty */
  wal = open_ok(path, 5);
  assert_int_equal(bf_wal_end_lsn(wal), 5);
  bf_wal_close(wal);
  uint8_t zeros[HEADER] = {0};
  write_file(path, zeros, 512); /* size extended, data never written */
  wal = open_ok(path, 6);
  bf_wal_close(wal);
  /* An empty log named a lower LSN than the caller's: restarted there; a
  ** higher one is kept. */
  wal = open_ok(path, 1000);
  assert_int_equal(bf_wal_end_lsn(wal), 1000);
  bf_wal_close(wal);
  wal = open_ok(path, 10);
  assert_int_equal(bf_wal_end_lsn(wal), 1000);
  bf_wal_close(wal);

  /* Not a log: never overwritten. */
  const char *text = "this is somebody's notes file\n";
  write_file(path, (const uint8_t *)text, strlen(text));
  msg = NULL;
  assert_int_equal(bf_wal_open(path, FILE_ID, 0, &wal, &msg), BF_CORRUPT);
  assert_non_null(msg);
  free(msg);
  uint8_t *after = read_file(path, &len);
  assert_int_equal(len, strlen(text));
  assert_memory_equal(after, text, len);
  free(after);

  /* A directory, and a missing parent. */
  msg = NULL;
  assert_int_equal(bf_wal_open(dir, FILE_ID, 0, &wal, &msg), BF_IOERR);
  free(msg);
  char *missing = path_in(dir, "no/such/dir-wal");
  msg = NULL;
  assert_int_equal(bf_wal_open(missing, FILE_ID, 0, &wal, &msg), BF_IOERR);
  assert_non_null(msg);
  free(msg);
  free(missing);

  free(bytes);
  bf_wal_batch_free(&b);
  free(path);
  test_rmdir(dir);
}

/* ------------------------------------------------------------------------
** Group commit.
*/
struct gc_thread {
  struct bf_wal *wal;
  int id;
  long count;
  int status;
};

static void *gc_main(void *arg) {
  struct gc_thread *t = arg;
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  t->status = BF_OK;
  for (long i = 0; i < t->count && t->status == BF_OK; i++) {
    uint8_t key[8], val[24];
    bf_put32(key, (uint32_t)t->id);
    bf_put32(key + 4, (uint32_t)i);
    memset(val, t->id, sizeof val);
    bf_wal_batch_reset(&b);
    t->status = bf_wal_batch_put(&b, key, sizeof key, val, sizeof val);
    uint64_t lsn = 0;
    if (t->status == BF_OK)
      t->status = bf_wal_append(t->wal, &b, (uint64_t)t->id * 100000 + (uint64_t)i + 1, &lsn);
    if (t->status == BF_OK) t->status = bf_wal_sync(t->wal, lsn);
  }
  bf_wal_batch_free(&b);
  return NULL;
}

struct gc_check {
  long per_thread;
  uint8_t *seen; /* [thread][i] */
  uint64_t bad;
};

static int gc_apply(void *ctx, int op, const uint8_t *key, uint32_t key_len,
                    const uint8_t *value, uint32_t value_len) {
  struct gc_check *c = ctx;
  if (op != BF_WAL_PUT || key_len != 8 || value_len != 24) {
    c->bad++;
    return BF_OK;
  }
  uint32_t t = bf_get32(key), i = bf_get32(key + 4);
  if (t >= 8 || i >= c->per_thread || value[0] != t) {
    c->bad++;
    return BF_OK;
  }
  c->seen[t * c->per_thread + i]++;
  return BF_OK;
}

static void test_group_commit(void **state) {
  BF_UNUSED(state);
  char *dir = test_tmpdir();
  char *path = path_in(dir, "g-wal");
  enum { THREADS = 8 };
  long per = test_scale(200);
  for (int slow = 1; slow >= 0; slow--) {
    unlink(path);
    struct bf_wal *wal = open_ok(path, 0);
    uint64_t syncs0 = bf_wal_testing_syncs(wal);
    if (slow) bf_wal_testing_sync_delay(wal, 300);
    pthread_t th[THREADS];
    struct gc_thread t[THREADS];
    for (int i = 0; i < THREADS; i++) {
      t[i] = (struct gc_thread){.wal = wal, .id = i, .count = per};
      assert_int_equal(pthread_create(&th[i], NULL, gc_main, &t[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
      pthread_join(th[i], NULL);
      assert_int_equal(t[i].status, BF_OK);
    }
    uint64_t syncs = bf_wal_testing_syncs(wal) - syncs0;
    uint64_t total = (uint64_t)THREADS * (uint64_t)per;
    printf("[ INFO     ] group commit (%s disk): %llu txns, %llu fdatasyncs\n",
           slow ? "slow" : "fast", (unsigned long long)total,
           (unsigned long long)syncs);
    assert_true(syncs >= 1);
    assert_true(syncs <= total);
    if (slow && per >= 50) assert_true(syncs * 2 < total);
    bf_wal_close(wal);

    wal = open_ok(path, 0);
    struct gc_check c = {.per_thread = per};
    c.seen = calloc((size_t)total, 1);
    struct bf_wal_replay_info info;
    assert_int_equal(bf_wal_replay(wal, 0, UINT64_MAX, gc_apply, &c, &info),
                     BF_OK);
    assert_int_equal(info.stop, BF_WAL_STOP_END);
    assert_int_equal(info.transactions, total);
    assert_int_equal(c.bad, 0);
    for (uint64_t k = 0; k < total; k++) assert_int_equal(c.seen[k], 1);
    assert_int_equal(info.last_commit_id, 7 * 100000 + (uint64_t)per);
    free(c.seen);
    bf_wal_close(wal);
  }
  free(path);
  test_rmdir(dir);
}

/* Syncs are counted and skipped when already durable. */
static void test_sync_basics(void **state) {
  BF_UNUSED(state);
  char *dir = test_tmpdir();
  char *path = path_in(dir, "s-wal");
  struct bf_wal *wal = open_ok(path, 0);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  assert_int_equal(bf_wal_batch_put(&b, (const uint8_t *)"k", 1,
                                    (const uint8_t *)"v", 1), BF_OK);
  uint64_t s0 = bf_wal_testing_syncs(wal), lsn;
  assert_int_equal(bf_wal_sync(wal, 0), BF_OK); /* nothing to do */
  assert_int_equal(bf_wal_testing_syncs(wal), s0);
  append_ok(wal, &b, 1, &lsn);
  assert_int_equal(bf_wal_sync(wal, lsn), BF_OK);
  assert_int_equal(bf_wal_testing_syncs(wal), s0 + 1);
  assert_int_equal(bf_wal_sync(wal, lsn), BF_OK); /* already durable */
  assert_int_equal(bf_wal_testing_syncs(wal), s0 + 1);
  append_ok(wal, &b, 2, &lsn);
  assert_int_equal(bf_wal_sync(wal, lsn + 1000), BF_OK); /* clamped */
  assert_int_equal(bf_wal_testing_syncs(wal), s0 + 2);
  bf_wal_close(wal);
  bf_wal_batch_free(&b);
  free(path);
  test_rmdir(dir);
}

/* Write-behind: every MiB of appends starts the writeback of the chunk and
** drops the chunk before it from the page cache; checked by the count of
** chunks (against the rule, from the LSNs) and, for a chunk that was clean
** when it was dropped (synced before), by its pages' residency (mincore). */
static int resident_pages(const char *path, uint64_t from, uint64_t to) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  long page = sysconf(_SC_PAGESIZE);
  uint64_t first = (from + (uint64_t)page - 1) / (uint64_t)page;
  uint64_t last = to / (uint64_t)page; /* whole pages in [from, to) */
  int resident = 0;
  if (last > first) {
    size_t n = (size_t)(last - first);
    void *map = mmap(NULL, n * (size_t)page, PROT_READ, MAP_SHARED, fd,
                     (off_t)(first * (uint64_t)page));
    assert_true(map != MAP_FAILED);
    unsigned char *vec = malloc(n);
    assert_non_null(vec);
    assert_int_equal(mincore(map, n * (size_t)page, vec), 0);
    for (size_t i = 0; i < n; i++) resident += vec[i] & 1;
    free(vec);
    munmap(map, n * (size_t)page);
  }
  close(fd);
  return resident;
}

static void test_write_behind(void **state) {
  BF_UNUSED(state);
  char *dir = test_tmpdir();
  char *path = path_in(dir, "wb-wal");
  struct bf_wal *wal = open_ok(path, 0);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  uint8_t v[1000];
  memset(v, 0x5a, sizeof v);
  assert_int_equal(bf_wal_batch_put(&b, (const uint8_t *)"key", 3, v, sizeof v), BF_OK);
  const uint64_t chunk = 1u << 20;
  uint64_t base = 0, behind = 0, dropped = 0, lsn = 0, expect = 0;
  uint64_t clean_from = 0, clean_to = 0;
  uint64_t k0 = bf_wal_testing_write_behinds(wal);
  for (int phase = 0; phase < 2; phase++) {
    uint64_t stop = lsn + (phase == 0 ? 3 : 2) * chunk + chunk / 4;
    while (lsn < stop) {
      append_ok(wal, &b, 0, &lsn);
      if (lsn - behind >= chunk) { /* the rule of bf_wal_append */
        expect++;
        if (phase == 1 && clean_to == 0 && behind - dropped > 0) {
          /* this kick drops [dropped, behind): synced at the phase change */
          clean_from = dropped;
          clean_to = behind;
        }
        dropped = behind;
        behind = lsn;
      }
    }
    assert_int_equal(bf_wal_testing_write_behinds(wal) - k0, expect);
    if (phase == 0) assert_int_equal(bf_wal_sync(wal, lsn), BF_OK); /* all clean */
  }
  assert_true(expect >= 5);
  assert_true(clean_to > clean_from);
  /* offsets: 4096 + (lsn - base) */
  int res = resident_pages(path, 4096 + clean_from - base, 4096 + clean_to - base);
  assert_int_equal(res, 0);
  /* After a reset the chunks start again from the new base. */
  assert_int_equal(bf_wal_reset(wal, lsn + 8), BF_OK);
  uint64_t k1 = bf_wal_testing_write_behinds(wal), start = lsn + 8;
  do append_ok(wal, &b, 0, &lsn); while (lsn - start < chunk - 1100);
  assert_int_equal(bf_wal_testing_write_behinds(wal), k1); /* not a chunk yet */
  append_ok(wal, &b, 0, &lsn);
  append_ok(wal, &b, 0, &lsn);
  assert_int_equal(bf_wal_testing_write_behinds(wal), k1 + 1);
  bf_wal_close(wal);
  bf_wal_batch_free(&b);
  free(path);
  test_rmdir(dir);
}

/* ------------------------------------------------------------------------
** Fault injection.
*/
static void disarm(void) {
  for (int i = 0; i < BF_FAULT_COUNT; i++) bf_faultsim_set((enum bf_fault)i, 0, false);
}

static void test_faults(void **state) {
  BF_UNUSED(state);
  uint64_t rng = test_seed("faults");
  char *dir = test_tmpdir();
  char *path = path_in(dir, "x-wal");
  struct bf_wal *wal = open_ok(path, 0);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  struct tbuf expect = {0}, lost = {0};
  uint64_t lsn = 0, good = 0;

  gen_txn(&rng, &b, &lost, 5, 50);
  append_ok(wal, &b, 1, &good);

  /* A write fault: BF_IOERR, then sticky. */
  bf_faultsim_set(BF_FAULT_WRITE, 1, false);
  gen_txn(&rng, &b, &lost, 5, 50);
  assert_int_equal(bf_wal_append(wal, &b, 2, &lsn), BF_IOERR);
  assert_int_equal(bf_faultsim_hits(BF_FAULT_WRITE), 1);
  assert_int_equal(bf_wal_append(wal, &b, 2, &lsn), BF_IOERR);
  assert_int_equal(bf_wal_end_lsn(wal), good);
  assert_int_equal(bf_wal_sync(wal, good), BF_OK); /* earlier data still fine */
  assert_int_equal(bf_wal_reset(wal, good), BF_OK);
  gen_txn(&rng, &b, &lost, 5, 50);
  append_ok(wal, &b, 3, &good);

  /* ENOSPC: BF_FULL, sticky. */
  bf_faultsim_set(BF_FAULT_WRITE, 1, false);
  bf_faultsim_set(BF_FAULT_ENOSPC, 1, false);
  assert_int_equal(bf_wal_append(wal, &b, 4, &lsn), BF_FULL);
  assert_int_equal(bf_wal_append(wal, &b, 4, &lsn), BF_FULL);
  disarm();
  /* A reset that fails is sticky too; the next one works. */
  bf_faultsim_set(BF_FAULT_WRITE, 1, false);
  assert_int_equal(bf_wal_reset(wal, good), BF_IOERR);
  assert_int_equal(bf_wal_append(wal, &b, 4, &lsn), BF_IOERR);
  bf_faultsim_set(BF_FAULT_SYNC, 1, false);
  assert_int_equal(bf_wal_reset(wal, good), BF_IOERR);
  assert_int_equal(bf_wal_reset(wal, good), BF_OK);
  tbuf_free(&expect);
  gen_txn(&rng, &b, &expect, 5, 50);
  append_ok(wal, &b, 5, &good);

  /* A sync fault: BF_IOERR; later syncs and appends refused until reset. */
  bf_faultsim_set(BF_FAULT_SYNC, 1, false);
  assert_int_equal(bf_wal_sync(wal, good), BF_IOERR);
  assert_int_equal(bf_wal_sync(wal, good), BF_IOERR);
  assert_int_equal(bf_wal_append(wal, &b, 6, &lsn), BF_IOERR);

  /* Replay sees the transaction appended before the sync failure. */
  struct recorder r;
  struct bf_wal_replay_info info;
  recorder_init(&r);
  assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_OK);
  assert_int_equal(info.transactions, 1);
  assert_int_equal(info.last_commit_id, 5);
  assert_same(&r.got, expect.p, expect.len);
  tbuf_free(&r.got);
  assert_int_equal(bf_wal_reset(wal, good), BF_OK);
  assert_int_equal(bf_wal_sync(wal, good), BF_OK);
  append_ok(wal, &b, 7, &lsn);
  assert_int_equal(bf_wal_sync(wal, lsn), BF_OK);

  /* An apply error stops replay and is returned. */
  recorder_init(&r);
  r.fail_after = 0;
  r.fail_status = BF_FULL;
  if (b.count) {
    assert_int_equal(replay(wal, 0, UINT64_MAX, &r, &info), BF_FULL);
    assert_int_equal(info.transactions, 0);
  }
  tbuf_free(&r.got);

  /* Allocation failures: a big append and replay fail with BF_NOMEM and
  ** nothing sticks. */
  tbuf_free(&lost);
  gen_big_txn(&rng, &b, &lost, big_bytes());
  bf_faultsim_set(BF_FAULT_MALLOC, 1, false);
  assert_int_equal(bf_wal_append(wal, &b, 8, &lsn), BF_NOMEM);
  append_ok(wal, &b, 8, &lsn);
  int nomem = 0;
  for (long n = 1;; n++) {
    bf_faultsim_set(BF_FAULT_MALLOC, n, false);
    recorder_init(&r);
    int rc = replay(wal, 0, UINT64_MAX, &r, &info);
    bool hit = bf_faultsim_hits(BF_FAULT_MALLOC) > 0;
    tbuf_free(&r.got);
    if (!hit) {
      assert_int_equal(rc, BF_OK);
      assert_int_equal(info.transactions, 2);
      break;
    }
    assert_int_equal(rc, BF_NOMEM);
    nomem++;
  }
  assert_true(nomem >= 2); /* the read buffer and the transaction buffer */
  disarm();
  bf_wal_close(wal);

  /* Faults while creating a log. */
  unlink(path);
  char *msg = NULL;
  bf_faultsim_set(BF_FAULT_WRITE, 1, false);
  assert_int_equal(bf_wal_open(path, FILE_ID, 0, &wal, &msg), BF_IOERR);
  assert_null(wal);
  free(msg);
  bf_faultsim_set(BF_FAULT_WRITE, 1, false);
  bf_faultsim_set(BF_FAULT_ENOSPC, 1, false);
  msg = NULL;
  assert_int_equal(bf_wal_open(path, FILE_ID, 0, &wal, &msg), BF_FULL);
  free(msg);
  disarm();
  for (long n = 1; n <= 2; n++) { /* the log's fdatasync, the dir's fsync */
    unlink(path);
    bf_faultsim_set(BF_FAULT_SYNC, n, false);
    msg = NULL;
    assert_int_equal(bf_wal_open(path, FILE_ID, 0, &wal, &msg), BF_IOERR);
    free(msg);
  }
  for (long n = 1;; n++) {
    unlink(path);
    bf_faultsim_set(BF_FAULT_MALLOC, n, false);
    msg = NULL;
    int rc = bf_wal_open(path, FILE_ID, 0, &wal, &msg);
    free(msg);
    if (bf_faultsim_hits(BF_FAULT_MALLOC) == 0) {
      assert_int_equal(rc, BF_OK);
      bf_wal_close(wal);
      break;
    }
    assert_int_equal(rc, BF_NOMEM);
  }
  disarm();
  /* The failed opens left a log that opens fine. */
  wal = open_ok(path, 0);
  bf_wal_close(wal);

  tbuf_free(&expect);
  tbuf_free(&lost);
  bf_wal_batch_free(&b);
  free(path);
  test_rmdir(dir);
}

/* Replay the log at path from from_lsn and compare with want; returns the
** LSN after its last record (the replay must end cleanly). */
static uint64_t replay_file(const char *path, uint64_t base, uint64_t from_lsn,
                            const struct tbuf *want) {
  struct bf_wal *wal = open_ok(path, base);
  struct recorder r;
  struct bf_wal_replay_info info;
  recorder_init(&r);
  assert_int_equal(replay(wal, from_lsn, UINT64_MAX, &r, &info), BF_OK);
  assert_int_equal(info.stop, BF_WAL_STOP_END);
  assert_same(&r.got, want->p, want->len);
  bf_wal_close(wal);
  tbuf_free(&r.got);
  return info.end_lsn;
}

static void test_rotate(void **state) {
  BF_UNUSED(state);
  uint64_t rng = test_seed("rotate");
  char *dir = test_tmpdir();
  char *path = path_in(dir, "r-wal");
  char *prev = path_in(dir, "r-wal-prev");
  struct bf_wal *wal = open_ok(path, 500);
  struct bf_wal_batch b;
  memset(&b, 0, sizeof b);
  struct tbuf before = {0}, after = {0}, scratch = {0};
  uint64_t end = 500, lsn = 0;
  struct stat st;

  /* Records, then a rotation at their end. */
  for (int i = 0; i < 20; i++) {
    gen_txn(&rng, &b, &before, 8, 200);
    append_ok(wal, &b, (uint64_t)i + 1, &end);
  }
  assert_int_equal(bf_wal_rotate(wal, path, prev, &lsn), BF_OK);
  assert_int_equal(lsn, end);
  assert_int_equal(bf_wal_end_lsn(wal), end);
  assert_int_equal(bf_wal_size(wal), 0);
  assert_int_equal(bf_wal_base_lsn(wal), end);
  assert_int_equal(stat(prev, &st), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, HEADER);

  /* Appends go to the new file; a second rotation waits for the old log
  ** to go. */
  for (int i = 0; i < 20; i++) {
    gen_txn(&rng, &b, &after, 8, 200);
    append_ok(wal, &b, (uint64_t)i + 21, &end);
  }
  uint64_t lsn2 = 0;
  assert_int_equal(bf_wal_rotate(wal, path, prev, &lsn2), BF_BUSY);
  assert_int_equal(bf_wal_end_lsn(wal), end);
  bf_wal_close(wal);

  /* Each file replays its own part; they join without a gap. */
  uint64_t prev_end = replay_file(prev, 0, 0, &before);
  assert_int_equal(prev_end, lsn);
  assert_int_equal(replay_file(path, 0, 0, &after), end);
  /* From the rotation LSN, the old log has nothing left to apply. */
  assert_int_equal(replay_file(prev, 0, lsn, &scratch), lsn);

  /* Once the old log is removed, the log rotates again (after a reset:
  ** a reopened log with records must be replayed first). */
  assert_int_equal(bf_wal_remove(prev), BF_OK);
  assert_int_equal(stat(prev, &st), -1);
  assert_int_equal(bf_wal_remove(prev), BF_OK); /* gone already: fine */
  wal = open_ok(path, 0);
  assert_int_equal(bf_wal_rotate(wal, path, prev, &lsn2), BF_INVALID);
  assert_int_equal(bf_wal_reset(wal, end), BF_OK);
  assert_int_equal(bf_wal_rotate(wal, path, prev, &lsn2), BF_OK);
  assert_int_equal(lsn2, end); /* an empty log rotates too */
  assert_int_equal(bf_wal_remove(prev), BF_OK);

  /* A failed sync is sticky, as in bf_wal_sync: the log is broken (no
  ** rotation, no append) until a reset. */
  gen_txn(&rng, &b, &scratch, 8, 200);
  append_ok(wal, &b, 49, &end);
  bf_faultsim_set(BF_FAULT_SYNC, 1, false);
  assert_int_equal(bf_wal_rotate(wal, path, prev, &lsn2), BF_IOERR);
  disarm();
  assert_int_equal(bf_wal_rotate(wal, path, prev, &lsn2), BF_INVALID);
  assert_int_equal(bf_wal_append(wal, &b, 49, &lsn2), BF_IOERR);
  assert_int_equal(stat(prev, &st), -1);
  assert_int_equal(bf_wal_reset(wal, end), BF_OK);

  /* A failed rename changes nothing: the log goes on in place. */
  tbuf_free(&after);
  gen_txn(&rng, &b, &after, 8, 200);
  append_ok(wal, &b, 50, &end);
  bf_faultsim_set(BF_FAULT_WRITE, 1, false);
  assert_int_equal(bf_wal_rotate(wal, path, prev, &lsn2), BF_IOERR);
  disarm();
  assert_int_equal(stat(prev, &st), -1);
  gen_txn(&rng, &b, &after, 8, 200);
  append_ok(wal, &b, 51, &end);
  /* A failure writing the new file's header: renamed back. */
  bf_faultsim_set(BF_FAULT_WRITE, 2, false);
  assert_int_equal(bf_wal_rotate(wal, path, prev, &lsn2), BF_IOERR);
  disarm();
  assert_int_equal(stat(prev, &st), -1);
  gen_txn(&rng, &b, &after, 8, 200);
  append_ok(wal, &b, 52, &end);
  bf_wal_close(wal);
  assert_int_equal(replay_file(path, 0, 0, &after), end);

  /* A rotation under the wrong name (the file moved away) fails cleanly. */
  wal = open_ok(path, 0);
  assert_int_equal(bf_wal_reset(wal, end), BF_OK);
  char *gone = path_in(dir, "moved-wal");
  assert_int_equal(bf_wal_rotate(wal, gone, prev, &lsn2), BF_IOERR);
  assert_int_equal(stat(prev, &st), -1);
  bf_wal_close(wal);

  tbuf_free(&before);
  tbuf_free(&after);
  tbuf_free(&scratch);
  bf_wal_batch_free(&b);
  free(gone);
  free(path);
  free(prev);
  test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_batch),
      cmocka_unit_test(test_roundtrip),
      cmocka_unit_test(test_torn_tail),
      cmocka_unit_test(test_corrupt_middle),
      cmocka_unit_test(test_misplaced),
      cmocka_unit_test(test_commit_limit),
      cmocka_unit_test(test_from_lsn),
      cmocka_unit_test(test_reset_stale),
      cmocka_unit_test(test_salt_only),
      cmocka_unit_test(test_open_checks),
      cmocka_unit_test(test_sync_basics),
      cmocka_unit_test(test_write_behind),
      cmocka_unit_test(test_group_commit),
      cmocka_unit_test(test_faults),
      cmocka_unit_test(test_rotate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
