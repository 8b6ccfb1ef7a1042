/*
** test_txn.c: transactions, the log, and recovery.
**
** - Transactions: isolation of uncommitted writes, own-write visibility in
**   gets and cursors, savepoints, commit, abort (before and after prepare).
** - Recovery: autocommit writes and transactions survive bf_abandon (a
**   crash: nothing flushed, no checkpoint); replay_limit; a torn log tail;
**   a corrupt record in the middle (recovery stops there, says so, keeps
**   the damaged log).
** - Checkpoints: auto_checkpoint and bf_checkpoint_if_due; checkpoints
**   taken while a writer commits, then a crash and recovery; the fuzzy
**   checkpoint's log rotation: writes after the rotation and after the
**   flush are in no image and come back from the log, also after a crash
**   with the rotated log still there; bf_rename of an open tree.
** - Crash points: a child process commits numbered transactions and
**   reports each after commit returns; the fault simulator kills it at its
**   Nth data-file or log write (optionally tearing that write), which lands
**   inside merges, splits and checkpoints; the parent recovers and checks
**   that every reported transaction is there entirely and none partly.
*/
#include "test_util.h"

#include "bftree.h"
#include "bf_int.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>

static char *dir;
static char path[600], wal_path[620], prev_path[620];

static int setup(void **state) {
  (void)state;
  dir = test_tmpdir();
  snprintf(path, sizeof path, "%s/t.bf", dir);
  snprintf(wal_path, sizeof wal_path, "%s" BF_WAL_SUFFIX, path);
  snprintf(prev_path, sizeof prev_path, "%s" BF_WAL_PREV_SUFFIX, path);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  test_rmdir(dir);
  dir = NULL;
  return 0;
}

static bf_tree *open_tree(bf_options *o) {
  bf_tree *t = NULL;
  char *err = NULL;
  int rc = bf_open(path, o, &t, &err);
  if (rc != BF_OK) fail_msg("bf_open: %s: %s", bf_strerror(rc), err ? err : "");
  free(err);
  return t;
}

static void small_options(bf_options *o) {
  bf_options_init(o);
  o->buffer_size = 128 << 10;
  o->page_size = 1024;
}

static void check_value(bf_tree *t, const char *k, const char *v) {
  char buf[256];
  size_t len = 0;
  int rc = bf_get(t, k, strlen(k), buf, sizeof buf, &len);
  if (!v) {
    if (rc != BF_NOTFOUND) fail_msg("%s: expected absent, got %s", k, bf_strerror(rc));
    return;
  }
  if (rc != BF_OK) fail_msg("%s: %s", k, bf_strerror(rc));
  assert_int_equal(len, strlen(v));
  assert_memory_equal(buf, v, len);
}

static void test_isolation_and_savepoints(void **state) {
  (void)state;
  bf_options o;
  small_options(&o);
  bf_tree *t = open_tree(&o);
  assert_int_equal(bf_put(t, "a", 1, "1", 1), BF_OK);
  assert_int_equal(bf_put(t, "c", 1, "3", 1), BF_OK);
  bf_txn *x;
  assert_int_equal(bf_txn_begin(t, &x), BF_OK);
  assert_int_equal(bf_txn_put(x, "b", 1, "2", 1), BF_OK);
  assert_int_equal(bf_txn_delete(x, "a", 1), BF_OK);
  /* others see nothing */
  check_value(t, "b", NULL);
  check_value(t, "a", "1");
  /* the transaction sees its writes */
  char buf[8];
  size_t len;
  assert_int_equal(bf_txn_get(x, "b", 1, buf, sizeof buf, &len), BF_OK);
  assert_int_equal(bf_txn_get(x, "a", 1, buf, sizeof buf, &len), BF_NOTFOUND);
  assert_int_equal(bf_txn_get(x, "c", 1, buf, sizeof buf, &len), BF_OK);
  /* a cursor of the transaction: b, c; a plain cursor: a, c */
  bf_cursor *cx, *cp;
  assert_int_equal(bf_cursor_open_txn(t, x, &cx), BF_OK);
  assert_int_equal(bf_cursor_open(t, &cp), BF_OK);
  const char *want_x[] = {"b", "c"}, *want_p[] = {"a", "c"};
  int n = 0;
  for (int rc = bf_cursor_seek(cx, NULL, NULL, false); rc == BF_OK; rc = bf_cursor_next(cx)) {
    const void *k;
    size_t kl;
    bf_cursor_key(cx, &k, &kl);
    assert_true(n < 2);
    assert_memory_equal(k, want_x[n], 1);
    n++;
  }
  assert_int_equal(n, 2);
  n = 0;
  for (int rc = bf_cursor_seek(cp, NULL, NULL, true); rc == BF_OK; rc = bf_cursor_next(cp)) {
    const void *k;
    size_t kl;
    bf_cursor_key(cp, &k, &kl);
    assert_memory_equal(k, want_p[1 - n], 1);
    n++;
  }
  assert_int_equal(n, 2);
  /* savepoints three deep */
  uint32_t s1 = bf_txn_savepoint(x);
  assert_int_equal(bf_txn_put(x, "d", 1, "4", 1), BF_OK);
  uint32_t s2 = bf_txn_savepoint(x);
  assert_int_equal(bf_txn_put(x, "e", 1, "5", 1), BF_OK);
  uint32_t s3 = bf_txn_savepoint(x);
  assert_int_equal(bf_txn_delete(x, "d", 1), BF_OK);
  assert_int_equal(bf_txn_rollback_to(x, s3), BF_OK);
  assert_int_equal(bf_txn_get(x, "d", 1, buf, sizeof buf, &len), BF_OK);
  assert_int_equal(bf_txn_rollback_to(x, s2), BF_OK);
  assert_int_equal(bf_txn_get(x, "e", 1, buf, sizeof buf, &len), BF_NOTFOUND);
  bf_txn_release(x, s2);
  assert_int_equal(bf_txn_rollback_to(x, s1), BF_OK);
  assert_int_equal(bf_txn_get(x, "d", 1, buf, sizeof buf, &len), BF_NOTFOUND);
  assert_int_equal(bf_txn_commit(x), BF_OK);
  check_value(t, "a", NULL);
  check_value(t, "b", "2");
  check_value(t, "d", NULL);
  /* abort before prepare */
  assert_int_equal(bf_txn_begin(t, &x), BF_OK);
  assert_int_equal(bf_txn_put(x, "z", 1, "26", 2), BF_OK);
  assert_int_equal(bf_txn_abort(x), BF_OK);
  check_value(t, "z", NULL);
  bf_cursor_close(cx);
  bf_cursor_close(cp);
  assert_int_equal(bf_close(t), BF_OK);
  /* a clean close removes the log */
  assert_int_equal(access(wal_path, F_OK), -1);
}

/* Writes made and committed survive a crash (bf_abandon); recovery replays
** exactly up to replay_limit; abort after prepare leaves no trace. */
static void test_recovery(void **state) {
  (void)state;
  bf_options o;
  small_options(&o);
  bf_tree *t = open_tree(&o);
  char k[32], v[64];
  const int n = (int)test_scale(3000);
  for (int i = 0; i < n; i++) {
    snprintf(k, sizeof k, "auto%06d", i);
    snprintf(v, sizeof v, "value-%d", i);
    assert_int_equal(bf_put(t, k, strlen(k), v, strlen(v)), BF_OK);
  }
  for (uint64_t id = 1; id <= 10; id++) {
    bf_txn *x;
    assert_int_equal(bf_txn_begin(t, &x), BF_OK);
    for (int j = 0; j < 50; j++) {
      snprintf(k, sizeof k, "txn%02d-%03d", (int)id, j);
      assert_int_equal(bf_txn_put(x, k, strlen(k), "x", 1), BF_OK);
    }
    assert_int_equal(bf_txn_prepare(x, id), BF_OK);
    assert_int_equal(bf_txn_commit(x), BF_OK);
  }
  /* prepared then aborted: must never come back */
  bf_txn *x;
  assert_int_equal(bf_txn_begin(t, &x), BF_OK);
  assert_int_equal(bf_txn_put(x, "ghost", 5, "boo", 3), BF_OK);
  assert_int_equal(bf_txn_prepare(x, 11), BF_OK);
  assert_int_equal(bf_txn_abort(x), BF_OK);
  check_value(t, "ghost", NULL);
  for (uint64_t id = 12; id <= 14; id++) {
    assert_int_equal(bf_txn_begin(t, &x), BF_OK);
    snprintf(k, sizeof k, "late%02d", (int)id);
    assert_int_equal(bf_txn_put(x, k, strlen(k), "y", 1), BF_OK);
    assert_int_equal(bf_txn_prepare(x, id), BF_OK);
    assert_int_equal(bf_txn_commit(x), BF_OK);
  }
  assert_int_equal(bf_last_commit_id(t), 14);
  bf_abandon(t); /* crash */

  o.replay_limit = 12; /* the "database" committed up to 12 */
  t = open_tree(&o);
  bf_recovery r;
  bf_recovery_info(t, &r);
  printf("[ RECOVERY ] %llu transactions, %llu operations, %llu skipped in %.3f s: %s\n",
         (unsigned long long)r.transactions, (unsigned long long)r.operations,
         (unsigned long long)r.skipped, r.seconds, r.message);
  assert_true(r.transactions > 0);
  assert_int_equal(r.skipped, 2);
  assert_int_equal(r.stop, 0);
  for (int i = 0; i < n; i += 7) {
    snprintf(k, sizeof k, "auto%06d", i);
    snprintf(v, sizeof v, "value-%d", i);
    check_value(t, k, v);
  }
  for (int id = 1; id <= 10; id++) {
    snprintf(k, sizeof k, "txn%02d-049", id);
    check_value(t, k, "x");
  }
  check_value(t, "ghost", NULL);
  check_value(t, "late12", "y");
  check_value(t, "late13", NULL);
  check_value(t, "late14", NULL);
  assert_int_equal(bf_last_commit_id(t), 12);
  char *err = NULL;
  assert_int_equal(bf_check(t, &err), BF_OK);
  /* recovery checkpointed: a second crash loses nothing either */
  bf_abandon(t);
  o.replay_limit = UINT64_MAX;
  t = open_tree(&o);
  check_value(t, "late12", "y");
  check_value(t, "late13", NULL); /* discarded for good */
  assert_int_equal(bf_close(t), BF_OK);
}

static off_t file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? st.st_size : -1;
}

/* A torn last record: the transactions before it are recovered. */
static void test_torn_tail(void **state) {
  (void)state;
  bf_options o;
  small_options(&o);
  bf_tree *t = open_tree(&o);
  for (int i = 0; i < 20; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%02d", i);
    assert_int_equal(bf_put(t, k, strlen(k), "value", 5), BF_OK);
  }
  bf_abandon(t);
  off_t size = file_size(wal_path);
  assert_true(size > 4096);
  assert_int_equal(truncate(wal_path, size - 3), 0);
  t = open_tree(&o);
  bf_recovery r;
  bf_recovery_info(t, &r);
  assert_int_equal(r.stop, 1); /* torn */
  assert_int_equal(r.transactions, 19);
  check_value(t, "k18", "value");
  check_value(t, "k19", NULL);
  assert_int_equal(bf_close(t), BF_OK);
}

/* A damaged record in the middle: replay stops there and says so, and the
** damaged log is kept beside the file. */
static void test_corrupt_middle(void **state) {
  (void)state;
  bf_options o;
  small_options(&o);
  bf_tree *t = open_tree(&o);
  for (int i = 0; i < 20; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%02d", i);
    assert_int_equal(bf_put(t, k, strlen(k), "value", 5), BF_OK);
  }
  bf_abandon(t);
  off_t size = file_size(wal_path);
  int fd = open(wal_path, O_RDWR);
  off_t at = 4096 + (size - 4096) / 2;
  uint8_t b;
  assert_int_equal(pread(fd, &b, 1, at), 1);
  b ^= 0x55;
  assert_int_equal(pwrite(fd, &b, 1, at), 1);
  close(fd);
  t = open_tree(&o);
  bf_recovery r;
  bf_recovery_info(t, &r);
  printf("[ RECOVERY ] stop %d: %s\n", r.stop, r.message);
  assert_int_equal(r.stop, 2);
  assert_true(r.transactions >= 5 && r.transactions < 20);
  assert_non_null(strstr(r.message, "corrupt"));
  char kept[700];
  snprintf(kept, sizeof kept, "%s.corrupt-", wal_path);
  assert_non_null(strstr(r.message, kept));
  check_value(t, "k00", "value");
  check_value(t, "k19", NULL);
  assert_int_equal(bf_close(t), BF_OK);
}

static bool copy_path(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
  char buf[8192];
  size_t n;
  bool ok = in && out;
  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
  if (in) fclose(in);
  if (out) fclose(out);
  return ok;
}

/* A crash between a checkpoint's superblock and the log's reset leaves a
** log whose records the checkpoint already holds: the tree must still take
** writes after reopening (regression). */
static void test_covered_log(void **state) {
  (void)state;
  bf_options o;
  small_options(&o);
  bf_tree *t = open_tree(&o);
  assert_int_equal(bf_put(t, "a", 1, "1", 1), BF_OK);
  assert_int_equal(bf_put(t, "b", 1, "2", 1), BF_OK);
  char saved[700];
  snprintf(saved, sizeof saved, "%s.saved", wal_path);
  assert_true(copy_path(wal_path, saved));
  assert_int_equal(bf_checkpoint(t), BF_OK); /* covers a, b; resets log */
  bf_abandon(t);
  assert_int_equal(rename(saved, wal_path), 0); /* the log before reset */
  t = open_tree(&o);
  check_value(t, "a", "1");
  assert_int_equal(bf_put(t, "c", 1, "3", 1), BF_OK);
  bf_txn *x;
  assert_int_equal(bf_txn_begin(t, &x), BF_OK);
  assert_int_equal(bf_txn_put(x, "d", 1, "4", 1), BF_OK);
  assert_int_equal(bf_txn_commit(x), BF_OK);
  bf_abandon(t);
  t = open_tree(&o);
  check_value(t, "c", "3");
  check_value(t, "d", "4");
  assert_int_equal(bf_close(t), BF_OK);
}

/* Options of the checkpoint tests: a 64 KiB log limit. */
static void checkpoint_options(bf_options *o, bool automatic) {
  small_options(o);
  o->wal_size_limit = 64 << 10;
  o->synchronous = BF_SYNC_NORMAL;
  o->auto_checkpoint = automatic;
}

/* 2000 puts "k%05d" -> 60 digits of the number: ~150 KB of log. */
static void put_numbered(bf_tree *t) {
  for (int i = 0; i < 2000; i++) {
    char k[16], v[64];
    snprintf(k, sizeof k, "k%05d", i);
    snprintf(v, sizeof v, "%060d", i);
    assert_int_equal(bf_put(t, k, strlen(k), v, strlen(v)), BF_OK);
  }
}

/* auto_checkpoint: on (default), a commit that finds the log past
** wal_size_limit checkpoints; off, none does, and bf_checkpoint_if_due
** runs the checkpoint the log calls for (and nothing when it calls for
** none). */
static void test_checkpoint_if_due(void **state) {
  (void)state;
  for (int automatic = 0; automatic < 2; automatic++) {
    bf_options o;
    checkpoint_options(&o, automatic);
    bf_tree *t = open_tree(&o);
    bf_stats st;
    assert_int_equal(bf_checkpoint_if_due(t), BF_OK); /* nothing due */
    bf_stats_get(t, &st);
    uint64_t base = st.checkpoints; /* bf_open's own, if any */
    put_numbered(t);
    bf_stats_get(t, &st);
    if (automatic) {
      assert_true(st.checkpoints > base);
      assert_true(st.wal_bytes < o.wal_size_limit);
    } else {
      assert_int_equal(st.checkpoints, base);
      assert_true(st.wal_bytes > o.wal_size_limit);
      assert_int_equal(st.checkpoint_stall_us, 0);
      assert_int_equal(bf_checkpoint_if_due(t), BF_OK);
      bf_stats_get(t, &st);
      assert_int_equal(st.checkpoints, base + 1);
      assert_true(st.wal_bytes < 4096 + 256);
      assert_true(st.checkpoint_stall_us > 0);
      assert_int_equal(bf_checkpoint_if_due(t), BF_OK); /* not due again */
      bf_stats_get(t, &st);
      assert_int_equal(st.checkpoints, base + 1);
    }
    bf_abandon(t); /* what the checkpoint did not cover replays */
    t = open_tree(&o);
    check_value(t, "k00000", "000000000000000000000000000000000000000000000000000000000000");
    char want[64];
    snprintf(want, sizeof want, "%060d", 1999);
    check_value(t, "k01999", want);
    assert_int_equal(bf_close(t), BF_OK);
    unlink(path);
    unlink(wal_path);
  }
}

/* The first phase of a checkpoint runs without the write gate, and
** bf_checkpoint_if_due and bf_checkpoint_nowait do not wait for a prepared
** transaction: with one
** prepared by this very thread (holding the gate), it merges the dirty
** leaves, then returns BF_BUSY instead of waiting for itself; the log stays
** due, and the checkpoint happens once the transaction has committed. */
static void test_checkpoint_busy(void **state) {
  (void)state;
  bf_options o;
  checkpoint_options(&o, false);
  bf_tree *t = open_tree(&o);
  put_numbered(t);
  bf_stats before, after;
  bf_stats_get(t, &before);
  bf_txn *x;
  assert_int_equal(bf_txn_begin(t, &x), BF_OK);
  assert_int_equal(bf_txn_put(x, "zz", 2, "prepared", 8), BF_OK);
  assert_int_equal(bf_txn_prepare(x, 0), BF_OK); /* holds the gate */
  assert_int_equal(bf_checkpoint_if_due(t), BF_BUSY);
  assert_int_equal(bf_checkpoint_nowait(t), BF_BUSY);
  bf_stats_get(t, &after);
  assert_true(after.merges > before.merges); /* the first phase ran */
  assert_int_equal(after.checkpoints, before.checkpoints);
  assert_true(after.wal_bytes > o.wal_size_limit);
  assert_int_equal(bf_txn_commit(x), BF_OK);
  assert_int_equal(bf_checkpoint_if_due(t), BF_OK);
  bf_stats_get(t, &after);
  assert_int_equal(after.checkpoints, before.checkpoints + 1);
  assert_true(after.wal_bytes < o.wal_size_limit);
  bf_abandon(t);
  t = open_tree(&o);
  check_value(t, "zz", "prepared");
  check_value(t, "k00007", "000000000000000000000000000000000000000000000000000000000007");
  assert_int_equal(bf_close(t), BF_OK);
}

/* Checkpoints while a writer commits: bf_checkpoint first merges the dirty
** mini-pages without the write gate (the writer goes on, its leaves split
** and merge meanwhile), then finishes under it.  The writer commits
** transactions of a few random keys (new keys split leaves, old ones are
** overwritten); the main thread checkpoints over and over.  Then a crash
** (bf_abandon) and recovery from the last checkpoint and the log: every key
** holds the value of the last committed transaction that wrote it. */
#define CC_KEYS 4000
struct cc_state {
  bf_tree *tree;
  uint64_t seed;
  uint32_t last[CC_KEYS]; /* writer's: last transaction per key, 0 = none */
  atomic_bool stop;
  _Atomic uint32_t committed;
  atomic_int error;
};

static void cc_value(uint32_t key, uint32_t txn, char *v, size_t cap) {
  snprintf(v, cap, "%05u:%07u:%0*u", key, txn, (int)(txn % 40), 0);
}

static void *cc_writer(void *arg) {
  struct cc_state *s = arg;
  uint64_t rnd = s->seed;
  for (uint32_t txn = 1; !atomic_load(&s->stop) || txn < 200; txn++) {
    bf_txn *x;
    uint32_t keys[4];
    int rc = bf_txn_begin(s->tree, &x);
    for (int j = 0; j < 4 && rc == BF_OK; j++) {
      char k[16], v[80];
      keys[j] = (uint32_t)(test_rand(&rnd) % CC_KEYS);
      snprintf(k, sizeof k, "key%05u", keys[j]);
      cc_value(keys[j], txn, v, sizeof v);
      rc = bf_txn_put(x, k, strlen(k), v, strlen(v));
    }
    if (rc == BF_OK) rc = bf_txn_commit(x);
    else bf_txn_abort(x);
    if (rc != BF_OK) {
      atomic_store(&s->error, rc);
      return NULL;
    }
    for (int j = 0; j < 4; j++) s->last[keys[j]] = txn;
    atomic_store(&s->committed, txn);
  }
  return NULL;
}

static void test_checkpoint_concurrent(void **state) {
  (void)state;
  static struct cc_state s;
  memset(&s, 0, sizeof s);
  s.seed = test_seed("checkpoint_concurrent");
  bf_options o;
  small_options(&o);
  o.synchronous = BF_SYNC_NORMAL;
  o.auto_checkpoint = false; /* only this test's checkpoints */
  s.tree = open_tree(&o);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, cc_writer, &s), 0);
  int checkpoints = 0, rc = BF_OK;
  while (checkpoints < 20 || atomic_load(&s.committed) < 3000) {
    usleep(1000); /* dirty leaves for the first phase to merge */
    rc = bf_checkpoint(s.tree);
    if (rc != BF_OK || atomic_load(&s.error)) break;
    checkpoints++;
  }
  atomic_store(&s.stop, true);
  pthread_join(th, NULL);
  if (rc != BF_OK) fail_msg("bf_checkpoint: %s", bf_strerror(rc));
  if (atomic_load(&s.error))
    fail_msg("writer: %s", bf_strerror(atomic_load(&s.error)));
  bf_stats st;
  bf_stats_get(s.tree, &st);
  assert_true(st.splits > 0); /* the writer's leaves split meanwhile */
  bf_abandon(s.tree);
  bf_tree *t = open_tree(&o);
  char *err = NULL;
  if (bf_check(t, &err) != BF_OK) fail_msg("bf_check: %s", err);
  uint32_t present = 0;
  for (uint32_t key = 0; key < CC_KEYS; key++) {
    char k[16], want[80];
    snprintf(k, sizeof k, "key%05u", key);
    if (s.last[key] == 0) {
      check_value(t, k, NULL);
      continue;
    }
    cc_value(key, s.last[key], want, sizeof want);
    check_value(t, k, want);
    present++;
  }
  printf("[ CKPT     ] %d checkpoints during %u transactions; %u keys recovered\n",
         checkpoints, atomic_load(&s.committed), present);
  assert_int_equal(bf_close(t), BF_OK);
}

/* Options of the log-rotation tests: the fuzzy checkpoint needs a log that
** is synced (normal), and only the tests' own checkpoints run. */
static void rotation_options(bf_options *o) {
  small_options(o);
  o->synchronous = BF_SYNC_NORMAL;
  o->auto_checkpoint = false;
}

/* The fuzzy checkpoint: keys [from, to) get value tag (a put each). */
static void put_range(bf_tree *t, int from, int to, char tag) {
  for (int i = from; i < to; i++) {
    char k[16], v[48];
    snprintf(k, sizeof k, "f%05d", i);
    snprintf(v, sizeof v, "%c%040d", tag, i);
    assert_int_equal(bf_put(t, k, strlen(k), v, strlen(v)), BF_OK);
  }
}

static void check_range(bf_tree *t, int from, int to, char tag) {
  for (int i = from; i < to; i++) {
    char k[16], v[48];
    snprintf(k, sizeof k, "f%05d", i);
    snprintf(v, sizeof v, "%c%040d", tag, i);
    check_value(t, k, v);
  }
}

/* The hook: at step 1 (log rotated) keys 500..1499 get 'b', at step 2
** (flushed, no image yet) keys 1000..1999 get 'c'; with fuzzy_fail, every
** data-file write fails from then on (the image cannot be written). */
static bool fuzzy_fail;
static int fuzzy_steps;
static void fuzzy_hook(bf_tree *t, int step) {
  struct stat st;
  fuzzy_steps |= 1 << step;
  assert_int_equal(stat(prev_path, &st), 0); /* rotated: the old log */
  if (step == 1) put_range(t, 500, 1500, 'b');
  if (step == 2) {
    put_range(t, 1000, 2000, 'c');
    if (fuzzy_fail) bf_faultsim_set(BF_FAULT_WRITE, 1, true);
  }
}

/* Flip a byte of the file at p: in its middle, or in its first record (the
** log header is 4096 bytes). */
static void flip_byte(const char *p, bool first_record) {
  int fd = open(p, O_RDWR);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  off_t at = first_record ? 4096 + 60 : st.st_size / 2;
  unsigned char c;
  assert_int_equal(pread(fd, &c, 1, at), 1);
  c ^= 0x5a;
  assert_int_equal(pwrite(fd, &c, 1, at), 1);
  close(fd);
}

/* Writes made while a checkpoint flushes (after the log's rotation) and
** after its flush are in no image: the log from the rotation holds them.
** A checkpoint that completes removes the rotated log and recovery finds
** every write; one that fails after the rotation leaves it, and recovery
** replays it, then the current log, and removes it.  With the rotated log
** damaged in the middle, recovery stops there, does not replay the current
** log (it would skip transactions), says so, and keeps both logs aside;
** also when the damage is in its first record (so that it ends where the
** checkpoint starts, like a rotated log the checkpoint covers). */
static void test_fuzzy_checkpoint(void **state) {
  (void)state;
  struct stat st;
  for (int mode = 0; mode < 4; mode++) {
    int fail = mode > 0;
    bf_options o;
    rotation_options(&o);
    bf_tree *t = open_tree(&o);
    put_range(t, 0, 1000, 'a');
    bf_stats before, after;
    bf_stats_get(t, &before);
    fuzzy_fail = fail;
    fuzzy_steps = 0;
    bf_testing_checkpoint_hook = fuzzy_hook;
    int rc = bf_checkpoint(t);
    bf_testing_checkpoint_hook = NULL;
    for (int i = 0; i < BF_FAULT_COUNT; i++) bf_faultsim_set((enum bf_fault)i, 0, false);
    assert_int_equal(fuzzy_steps, 6); /* both steps: the fuzzy form ran */
    bf_stats_get(t, &after);
    if (fail) {
      assert_int_not_equal(rc, BF_OK);
      assert_int_equal(after.checkpoints, before.checkpoints);
      assert_int_equal(stat(prev_path, &st), 0); /* still needed */
    } else {
      assert_int_equal(rc, BF_OK);
      assert_int_equal(after.checkpoints, before.checkpoints + 1);
      assert_int_equal(stat(prev_path, &st), -1); /* removed */
      /* The log kept what was written during the checkpoint: ~2000 puts. */
      assert_true(after.wal_bytes > 2000 * 40);
      check_range(t, 0, 500, 'a');
      check_range(t, 500, 1000, 'b');
      check_range(t, 1000, 2000, 'c');
    }
    bf_abandon(t); /* crash */
    if (mode >= 2) {
      flip_byte(prev_path, mode == 3);
      t = open_tree(&o);
      bf_recovery rec;
      bf_recovery_info(t, &rec);
      assert_int_equal(rec.stop, BF_WAL_STOP_CORRUPT);
      assert_non_null(strstr(rec.message, "not replayed"));
      if (mode == 2)
        assert_true(rec.transactions > 0 && rec.transactions < 1000);
      else
        assert_int_equal(rec.transactions, 0);
      assert_int_equal(stat(prev_path, &st), -1);
      /* Both logs kept aside: t.bf-wal-prev.corrupt-N, t.bf-wal.corrupt-N. */
      int kept = 0;
      DIR *d = opendir(dir);
      assert_non_null(d);
      for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (strncmp(de->d_name, "t.bf" BF_WAL_PREV_SUFFIX ".corrupt-", 22) == 0)
          kept |= 1;
        else if (strncmp(de->d_name, "t.bf" BF_WAL_SUFFIX ".corrupt-", 17) == 0)
          kept |= 2;
      }
      closedir(d);
      assert_int_equal(kept, 3);
      if (mode == 2) check_range(t, 0, 1, 'a');
      check_value(t, "f01999", NULL);
      assert_int_equal(bf_close(t), BF_OK);
      test_rmdir(dir);
      dir = test_tmpdir();
      snprintf(path, sizeof path, "%s/t.bf", dir);
      snprintf(wal_path, sizeof wal_path, "%s" BF_WAL_SUFFIX, path);
      snprintf(prev_path, sizeof prev_path, "%s" BF_WAL_PREV_SUFFIX, path);
      continue;
    }
    t = open_tree(&o);
    bf_recovery rec;
    bf_recovery_info(t, &rec);
    assert_int_equal(rec.stop, BF_WAL_STOP_END);
    /* What replay applied: everything after the rotation, and with the
    ** failed checkpoint the 1000 puts before it too. */
    assert_int_equal(rec.transactions, fail ? 3000 : 2000);
    assert_int_equal(stat(prev_path, &st), -1);
    check_range(t, 0, 500, 'a');
    check_range(t, 500, 1000, 'b');
    check_range(t, 1000, 2000, 'c');
    char *err = NULL;
    if (bf_check(t, &err) != BF_OK) fail_msg("bf_check: %s", err);
    /* And the log rotates again at the next checkpoint. */
    put_range(t, 2000, 2100, 'd');
    assert_int_equal(bf_checkpoint(t), BF_OK);
    assert_int_equal(stat(prev_path, &st), -1);
    assert_int_equal(bf_close(t), BF_OK);
    t = open_tree(&o);
    check_range(t, 2000, 2100, 'd');
    check_range(t, 1000, 2000, 'c');
    assert_int_equal(bf_close(t), BF_OK);
    unlink(path);
    unlink(wal_path);
  }
}

/* Hooks of the two tests below. */
static char saved_prev[700];
static void save_prev_hook(bf_tree *t, int step) {
  (void)t;
  if (step == 1) assert_true(copy_path(prev_path, saved_prev));
}
static void commit5_hook(bf_tree *t, int step) {
  if (step != 2) return;
  bf_txn *x;
  assert_int_equal(bf_txn_begin(t, &x), BF_OK);
  assert_int_equal(bf_txn_put(x, "t5-a", 4, "five", 4), BF_OK);
  assert_int_equal(bf_txn_put(x, "t5-z", 4, "five", 4), BF_OK);
  assert_int_equal(bf_txn_prepare(x, 5), BF_OK);
  assert_int_equal(bf_txn_commit(x), BF_OK);
}

/* A rotated log whose removal did not last (here: put back after the
** checkpoint) is wholly covered by the checkpoint: recovery ignores it and
** replays the current log, which does not join it. */
static void test_stale_prev_log(void **state) {
  (void)state;
  bf_options o;
  rotation_options(&o);
  snprintf(saved_prev, sizeof saved_prev, "%s.saved", prev_path);
  bf_tree *t = open_tree(&o);
  put_range(t, 0, 500, 'a');
  bf_testing_checkpoint_hook = save_prev_hook;
  assert_int_equal(bf_checkpoint(t), BF_OK);
  bf_testing_checkpoint_hook = NULL;
  put_range(t, 250, 750, 'b');
  assert_int_equal(bf_checkpoint(t), BF_OK); /* a second rotation */
  put_range(t, 500, 1000, 'c');
  bf_abandon(t);
  assert_int_equal(rename(saved_prev, prev_path), 0);
  t = open_tree(&o);
  bf_recovery rec;
  bf_recovery_info(t, &rec);
  assert_int_equal(rec.stop, BF_WAL_STOP_END);
  assert_int_equal(rec.transactions, 500);
  check_range(t, 0, 250, 'a');
  check_range(t, 250, 500, 'b');
  check_range(t, 500, 1000, 'c');
  struct stat st;
  assert_int_equal(stat(prev_path, &st), -1);
  assert_int_equal(bf_close(t), BF_OK);
}

/* A transaction the checkpoint counts as applied (commit id up to its
** last_commit_id) replays whole even past replay_limit: a fuzzy
** checkpoint's pages may hold part of it.  Here it committed after the
** merges (in no page); replay_limit 4 says its commit (5) was lost by the
** caller, yet it comes back, all of it. */
static void test_replay_applied(void **state) {
  (void)state;
  bf_options o;
  rotation_options(&o);
  bf_tree *t = open_tree(&o);
  put_range(t, 0, 500, 'a');
  bf_testing_checkpoint_hook = commit5_hook;
  assert_int_equal(bf_checkpoint(t), BF_OK);
  bf_testing_checkpoint_hook = NULL;
  bf_abandon(t);
  o.replay_limit = 4;
  t = open_tree(&o);
  check_value(t, "t5-a", "five");
  check_value(t, "t5-z", "five");
  check_range(t, 0, 500, 'a');
  assert_int_equal(bf_last_commit_id(t), 5);
  assert_int_equal(bf_close(t), BF_OK);
}

/* bf_rename moves an open tree's data file and logs; checkpoints (which
** rotate the log by name) and recovery then use the new names.  A target
** that exists is refused and nothing moves. */
static void test_rename_open(void **state) {
  (void)state;
  struct stat st;
  bf_options o;
  rotation_options(&o);
  bf_tree *t = open_tree(&o);
  put_range(t, 0, 300, 'a');
  char to[640], to_wal[660], to_prev[660], *err = NULL;
  snprintf(to, sizeof to, "%s.moved", path);
  snprintf(to_wal, sizeof to_wal, "%s" BF_WAL_SUFFIX, to);
  snprintf(to_prev, sizeof to_prev, "%s" BF_WAL_PREV_SUFFIX, to);
  /* A target's log in the way: refused, nothing moved. */
  int fd = open(to_prev, O_CREAT | O_WRONLY, 0644);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(bf_rename(t, to, &err), BF_INVALID);
  assert_non_null(err);
  free(err);
  err = NULL;
  assert_int_equal(stat(path, &st), 0);
  unlink(to_prev);
  assert_int_equal(bf_rename(t, to, &err), BF_OK);
  assert_null(err);
  assert_int_equal(stat(path, &st), -1);
  assert_int_equal(stat(wal_path, &st), -1);
  assert_int_equal(stat(to, &st), 0);
  assert_int_equal(stat(to_wal, &st), 0);
  put_range(t, 300, 600, 'b');
  assert_int_equal(bf_checkpoint(t), BF_OK); /* rotates under the new name */
  assert_int_equal(stat(to_prev, &st), -1);
  assert_int_equal(stat(wal_path, &st), -1);
  put_range(t, 600, 900, 'c');
  bf_abandon(t); /* the writes after the checkpoint are in to_wal only */
  t = NULL;
  char *e2 = NULL;
  assert_int_equal(bf_open(to, &o, &t, &e2), BF_OK);
  check_range(t, 0, 300, 'a');
  check_range(t, 300, 600, 'b');
  check_range(t, 600, 900, 'c');
  assert_int_equal(bf_close(t), BF_OK);
  unlink(to);
  unlink(to_wal);
}

/* The child of a crash run: commit transactions until killed. Each
** transaction i writes "t<i>-<j>" for j < width and sets "last" = i. */
static void crash_child(int report_fd, uint64_t first, int width, bool torn) {
  bf_options o;
  small_options(&o);
  o.wal_size_limit = 64 << 10; /* frequent checkpoints */
  o.buffer_size = 72 << 10;
  bf_tree *t = NULL;
  char *err = NULL;
  if (bf_open(path, &o, &t, &err) != BF_OK) _exit(3);
  (void)torn;
  for (uint64_t i = first;; i++) {
    bf_txn *x;
    char k[32], v[96];
    if (bf_txn_begin(t, &x) != BF_OK) _exit(4);
    for (int j = 0; j < width; j++) {
      snprintf(k, sizeof k, "t%08llu-%02d", (unsigned long long)i, j);
      snprintf(v, sizeof v, "%0*llu", 20 + (int)(i % 50), (unsigned long long)i);
      if (bf_txn_put(x, k, strlen(k), v, strlen(v)) != BF_OK) _exit(5);
    }
    snprintf(v, sizeof v, "%llu", (unsigned long long)i);
    if (bf_txn_put(x, "last", 4, v, strlen(v)) != BF_OK) _exit(6);
    if (bf_txn_prepare(x, i) != BF_OK) _exit(7);
    if (bf_txn_commit(x) != BF_OK) _exit(8);
    if (write(report_fd, &i, sizeof i) != sizeof i) _exit(9);
  }
}

static void test_crash_points(void **state) {
  (void)state;
  uint64_t seed = test_seed("crash points");
  uint64_t rs = seed;
  const int rounds = (int)test_scale(40);
  uint64_t next_id = 1;
  int crashes = 0;
  for (int round = 0; round < rounds; round++) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    long nth = 1 + (long)(test_rand(&rs) % 400);
    bool torn = test_rand(&rs) % 2;
    int width = 1 + (int)(test_rand(&rs) % 12);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      if (torn) setenv("BF_CRASH_TORN", "1", 1);
      bf_faultsim_set(BF_FAULT_CRASH, nth, false);
      crash_child(fds[1], next_id, width, torn);
      _exit(0);
    }
    close(fds[1]);
    uint64_t id, last_reported = 0;
    while (read(fds[0], &id, sizeof id) == sizeof id) last_reported = id;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != BF_CRASH_EXIT)
      fail_msg("child ended with status %d (round %d, nth %ld)", status, round, nth);
    crashes++;

    /* Recover and check: every reported transaction entirely; "last" names
    ** the newest transaction present, and every older one is entire. */
    bf_options o;
    small_options(&o);
    o.buffer_size = 72 << 10;
    bf_tree *t = open_tree(&o);
    char buf[128];
    size_t len = 0;
    uint64_t last = 0;
    int rc = bf_get(t, "last", 4, buf, sizeof buf, &len);
    if (rc == BF_OK) {
      buf[len] = 0;
      last = strtoull(buf, NULL, 10);
    } else {
      assert_int_equal(rc, BF_NOTFOUND);
    }
    if (last < last_reported)
      fail_msg("round %d: transaction %llu was reported committed but the "
               "newest recovered is %llu",
               round, (unsigned long long)last_reported, (unsigned long long)last);
    /* the newest recovered transaction and the one after it */
    for (uint64_t i = (last > 3 ? last - 3 : 1); i <= last + 1; i++) {
      bf_cursor *c;
      char lo[32];
      snprintf(lo, sizeof lo, "t%08llu-", (unsigned long long)i);
      bf_bound lower = {lo, strlen(lo), true};
      char hi[32];
      snprintf(hi, sizeof hi, "t%08llu.", (unsigned long long)i);
      bf_bound upper = {hi, strlen(hi), false};
      assert_int_equal(bf_cursor_open(t, &c), BF_OK);
      int count = 0;
      for (rc = bf_cursor_seek(c, &lower, &upper, false); rc == BF_OK; rc = bf_cursor_next(c))
        count++;
      assert_int_equal(rc, BF_DONE);
      bf_cursor_close(c);
      if (i <= last && i >= next_id) {
        /* written in this round with this width */
        if (count != width)
          fail_msg("round %d: transaction %llu has %d of %d keys", round,
                   (unsigned long long)i, count, width);
      } else if (i > last) {
        if (count != 0)
          fail_msg("round %d: uncommitted transaction %llu is partly there (%d keys)",
                   round, (unsigned long long)i, count);
      }
    }
    char *err = NULL;
    rc = bf_check(t, &err);
    if (rc != BF_OK) fail_msg("round %d: bf_check: %s", round, err);
    assert_int_equal(bf_close(t), BF_OK);
    next_id = last + 1;
  }
  printf("[ CRASHES  ] %d crash points recovered, %llu transactions in the end\n",
         crashes, (unsigned long long)(next_id - 1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_isolation_and_savepoints, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
      cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_middle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_covered_log, setup, teardown),
      cmocka_unit_test_setup_teardown(test_checkpoint_if_due, setup, teardown),
      cmocka_unit_test_setup_teardown(test_checkpoint_busy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_checkpoint_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fuzzy_checkpoint, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rename_open, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stale_prev_log, setup, teardown),
      cmocka_unit_test_setup_teardown(test_replay_applied, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash_points, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
