/*
** twoconn.c: transactions of the bftree module seen from two connections
** of one process (the sqlite3 shell has only one).
**
** Usage: twoconn [path/to/bftree.so]        (default ./bftree.so)
**   BF_TEST_DIR=dir   where the databases go (default /tmp)
**
** Checks:
**   isolation   an open transaction's writes (bftree and native tables) are
**               seen by its own connection and by no other until COMMIT;
**               a reader is not blocked by the writer.
**   busy        a second writer of the same database waits for its busy
**               timeout, then gets SQLITE_BUSY.
**   lock        the module's per-tree writer lock, reached through two
**               databases whose tables share one data file: the second
**               writer waits for its busy timeout and gets SQLITE_BUSY with
**               a message naming the table; a writer in another thread that
**               waits long enough gets the lock when the first commits.
**   hook        a commit hook that refuses the COMMIT (xRollback after
**               xSync): nothing of the transaction remains, also after
**               reopening.
**   busycommit  COMMIT refused with SQLITE_BUSY after xSync (a reader holds
**               the database): more writes are refused with a message, a
**               second COMMIT succeeds.
**   cursor      a range scan overlaying the transaction that goes on across
**               COMMIT returns every row once, in order (both directions).
**   threads     two threads commit transactions on one table and a native
**               table (WAL mode): counts and a shared counter agree.
**   tempshare   four threads, each with a connection that declares the
**               table in its temp schema over one shared data file, add to
**               counters (autocommit and two-statement transactions): no
**               update is lost, and the rows outlive the declarations.
**   busyread    a transaction whose UPDATE got SQLITE_BUSY (the table
**               locked by a writer through another temp declaration) still
**               reads the table; its next write takes the lock.
**   samefile    main.m and temp.x over its file in one connection: both
**               work, but one transaction writing both is refused at once.
**   tempid      a transaction committed through a temp declaration over a
**               persistent table's file survives a crash and is recovered
**               by the persistent table.
**   rowcopy     UPDATE takes the old row from the point lookup SQLite just
**               made only while nothing else changed the table: a SELECT
**               held open on the row does not feed two later UPDATEs a stale
**               row, a ROLLBACK TO in between is respected, and a row that
**               a function of the UPDATE deletes stays deleted.
**
** Prints each failed check and ends with "N passed, M failed".
*/
#include <sqlite3.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;
static const char *so_path = "./bftree.so";
static char dir[4096];

static void check(int ok, const char *what, ...) {
  if (ok) {
    passed++;
    return;
  }
  va_list ap;
  va_start(ap, what);
  fprintf(stderr, "FAILED: ");
  vfprintf(stderr, what, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  failed++;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static sqlite3 *open_db(const char *name) {
  char path[4200];
  sqlite3 *db = NULL;
  char *err = NULL;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (sqlite3_open(path, &db) != SQLITE_OK) {
    fprintf(stderr, "twoconn: cannot open %s\n", path);
    exit(2);
  }
  sqlite3_enable_load_extension(db, 1);
  if (sqlite3_load_extension(db, so_path, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "twoconn: cannot load %s: %s\n", so_path, err);
    exit(2);
  }
  return db;
}

/* Run sql; returns the result code (the message goes to *msg when asked). */
static int run(sqlite3 *db, const char *sql, char **msg) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (msg)
    *msg = err;
  else
    sqlite3_free(err);
  return rc;
}

static void must(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (run(db, sql, &err) != SQLITE_OK) {
    fprintf(stderr, "FAILED: %s: %s\n", sql, err);
    failed++;
  }
  sqlite3_free(err);
}

/* The first column of the first row as an integer (-1 on error). */
static long long q_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  long long v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  else
    fprintf(stderr, "twoconn: %s: %s\n", sql, sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return v;
}

/* ---------------------------------------------------------------- tests */

static void test_isolation(void) {
  sqlite3 *a = open_db("iso.db"), *b = open_db("iso.db");
  must(a, "CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v);"
          "CREATE TABLE n(k INTEGER PRIMARY KEY, v);"
          "INSERT INTO t VALUES(1, 'one'); INSERT INTO n VALUES(1, 'one');");
  must(a, "BEGIN; INSERT INTO t VALUES(2, 'two'); INSERT INTO n VALUES(2, 'two');"
          "UPDATE t SET v = 'ONE' WHERE k = 1; DELETE FROM t WHERE k = 1;"
          "INSERT INTO t VALUES(1, 'uno');");
  check(q_int(a, "SELECT count(*) FROM t") == 2, "isolation: writer sees its rows");
  check(q_int(a, "SELECT count(*) FROM t WHERE v = 'uno'") == 1,
        "isolation: writer sees its update");
  double t0 = now_ms();
  check(q_int(b, "SELECT count(*) FROM t") == 1, "isolation: reader sees 1 row");
  check(q_int(b, "SELECT count(*) FROM t WHERE k = 2") == 0,
        "isolation: reader does not see the insert (point look-up)");
  check(q_int(b, "SELECT count(*) FROM t WHERE v = 'one'") == 1,
        "isolation: reader sees the old value");
  check(q_int(b, "SELECT count(*) FROM n") == 1, "isolation: native table too");
  check(now_ms() - t0 < 1000, "isolation: the reader was not blocked");
  must(a, "COMMIT");
  check(q_int(b, "SELECT count(*) FROM t") == 2, "isolation: committed rows seen");
  check(q_int(b, "SELECT count(*) FROM t WHERE v = 'uno'") == 1,
        "isolation: committed update seen");
  check(q_int(b, "SELECT count(*) FROM n") == 2, "isolation: native committed");
  /* rollback leaves nothing for the other connection either */
  must(a, "BEGIN; INSERT INTO t VALUES(3, 'three'); ROLLBACK");
  check(q_int(b, "SELECT count(*) FROM t") == 2, "isolation: rolled back");
  sqlite3_close(a);
  sqlite3_close(b);
}

static void test_busy(void) {
  sqlite3 *a = open_db("busy.db"), *b = open_db("busy.db");
  char *msg = NULL;
  must(a, "CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v)");
  must(a, "BEGIN; INSERT INTO t VALUES(1, 'a')");
  sqlite3_busy_timeout(b, 300);
  double t0 = now_ms();
  int rc = run(b, "INSERT INTO t VALUES(2, 'b')", &msg);
  double waited = now_ms() - t0;
  check(rc == SQLITE_BUSY, "busy: second writer gets SQLITE_BUSY (got %d: %s)",
        rc, msg ? msg : "");
  check(waited >= 250, "busy: second writer waited for its timeout (%.0f ms)",
        waited);
  sqlite3_free(msg);
  must(a, "COMMIT");
  must(b, "INSERT INTO t VALUES(2, 'b')");
  check(q_int(a, "SELECT count(*) FROM t") == 2, "busy: both rows in the end");
  sqlite3_close(a);
  sqlite3_close(b);
}

struct waiter {
  sqlite3 *db;
  int rc;
  double waited;
};

static void *waiter_main(void *arg) {
  struct waiter *w = arg;
  double t0 = now_ms();
  w->rc = run(w->db, "INSERT INTO s VALUES(20, 'from b')", NULL);
  w->waited = now_ms() - t0;
  return NULL;
}

static void test_lock(void) {
  sqlite3 *a = open_db("lock_a.db"), *b = open_db("lock_b.db");
  char *msg = NULL;
  must(a, "CREATE VIRTUAL TABLE s USING bftree(k INTEGER PRIMARY KEY, v, "
          "file='lock_shared.bftree')");
  must(b, "CREATE VIRTUAL TABLE s USING bftree(k INTEGER PRIMARY KEY, v, "
          "file='lock_shared.bftree')");
  must(a, "BEGIN; INSERT INTO s VALUES(10, 'from a')");
  sqlite3_busy_timeout(b, 300);
  double t0 = now_ms();
  int rc = run(b, "INSERT INTO s VALUES(11, 'b')", &msg);
  double waited = now_ms() - t0;
  check(rc == SQLITE_BUSY, "lock: second writer gets SQLITE_BUSY (got %d)", rc);
  check(msg && strstr(msg, "table s is locked"),
        "lock: the message names the table (%s)", msg ? msg : "");
  check(waited >= 250 && waited < 3000, "lock: waited for the busy timeout (%.0f ms)",
        waited);
  sqlite3_free(msg);
  check(q_int(b, "SELECT count(*) FROM s") == 0, "lock: reader not blocked");
  /* A waiter with a long timeout gets the lock when a commits. */
  struct waiter w = {b, -1, 0};
  pthread_t th;
  sqlite3_busy_timeout(b, 10000);
  pthread_create(&th, NULL, waiter_main, &w);
  usleep(200 * 1000);
  must(a, "COMMIT");
  pthread_join(th, NULL);
  check(w.rc == SQLITE_OK, "lock: the waiter wrote after the commit (rc %d)", w.rc);
  check(w.waited >= 150 && w.waited < 5000, "lock: the waiter waited (%.0f ms)",
        w.waited);
  check(q_int(a, "SELECT count(*) FROM s") == 2, "lock: both rows");
  /* busy_timeout 0: no wait at all */
  must(a, "BEGIN; INSERT INTO s VALUES(12, 'a')");
  sqlite3_busy_timeout(b, 0);
  t0 = now_ms();
  rc = run(b, "INSERT INTO s VALUES(13, 'b')", NULL);
  check(rc == SQLITE_BUSY && now_ms() - t0 < 100, "lock: no timeout, no wait");
  must(a, "ROLLBACK");
  must(b, "INSERT INTO s VALUES(13, 'b')");
  check(q_int(a, "SELECT count(*) FROM s") == 3, "lock: after the rollback");
  sqlite3_close(a);
  sqlite3_close(b);
}

static int refuse_commit(void *p) {
  return *(int *)p;
}

static void test_hook(void) {
  sqlite3 *a = open_db("hook.db");
  int refuse = 0;
  must(a, "CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v);"
          "CREATE TABLE n(k INTEGER PRIMARY KEY, v);"
          "INSERT INTO t VALUES(1, 'kept'); INSERT INTO n VALUES(1, 'kept')");
  long long id0 = q_int(a, "SELECT substr(hex(commit_id), 9) FROM t_bftree");
  sqlite3_commit_hook(a, refuse_commit, &refuse);
  refuse = 1;
  int rc = run(a, "BEGIN; INSERT INTO t VALUES(2, 'gone'); UPDATE t SET v = 'changed';"
                  "INSERT INTO n VALUES(2, 'gone'); COMMIT", NULL);
  check(rc == SQLITE_CONSTRAINT, "hook: COMMIT refused (rc %d)", rc);
  check(sqlite3_get_autocommit(a), "hook: transaction rolled back");
  rc = run(a, "INSERT INTO t VALUES(3, 'gone too')", NULL);
  check(rc == SQLITE_CONSTRAINT, "hook: autocommit refused (rc %d)", rc);
  check(q_int(a, "SELECT count(*) FROM t") == 1, "hook: bftree rows rolled back");
  check(q_int(a, "SELECT count(*) FROM t WHERE v = 'kept'") == 1,
        "hook: update rolled back");
  check(q_int(a, "SELECT count(*) FROM n") == 1, "hook: native rows rolled back");
  check(q_int(a, "SELECT substr(hex(commit_id), 9) FROM t_bftree") == id0,
        "hook: shadow number unchanged");
  refuse = 0;
  must(a, "INSERT INTO t VALUES(4, 'later'); INSERT INTO n VALUES(4, 'later')");
  sqlite3_close(a);
  a = open_db("hook.db");
  check(q_int(a, "SELECT count(*) FROM t") == 2, "hook: after reopening, 2 rows");
  check(q_int(a, "SELECT count(*) FROM t WHERE k IN (2, 3)") == 0,
        "hook: refused rows not replayed");
  check(q_int(a, "SELECT bftree_check('t') = 'ok'") == 1, "hook: check ok");
  sqlite3_close(a);
}

static void test_busy_commit(void) {
  sqlite3 *a = open_db("bc.db"), *b = open_db("bc.db");
  char *msg = NULL;
  must(a, "CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v);"
          "CREATE TABLE n(k INTEGER PRIMARY KEY, v);"
          "INSERT INTO n VALUES(0, 'x')");
  must(b, "BEGIN; SELECT count(*) FROM n"); /* b holds a SHARED lock */
  must(a, "BEGIN; INSERT INTO t VALUES(1, 'a'); INSERT INTO n VALUES(1, 'a')");
  int rc = run(a, "COMMIT", NULL);
  check(rc == SQLITE_BUSY, "busycommit: COMMIT busy (rc %d)", rc);
  check(!sqlite3_get_autocommit(a), "busycommit: still in the transaction");
  check(q_int(b, "SELECT count(*) FROM t") == 0, "busycommit: reader not blocked");
  rc = run(a, "INSERT INTO t VALUES(2, 'b')", &msg);
  check(rc == SQLITE_ERROR && msg && strstr(msg, "being committed"),
        "busycommit: further writes refused (%d %s)", rc, msg ? msg : "");
  sqlite3_free(msg);
  must(b, "COMMIT");
  must(a, "COMMIT");
  check(q_int(b, "SELECT count(*) FROM t") == 1, "busycommit: committed");
  check(q_int(b, "SELECT count(*) FROM n") == 2, "busycommit: native committed");
  /* the same, ending with ROLLBACK */
  must(b, "BEGIN; SELECT count(*) FROM n");
  must(a, "BEGIN; INSERT INTO t VALUES(3, 'c'); INSERT INTO n VALUES(3, 'c')");
  rc = run(a, "COMMIT", NULL);
  check(rc == SQLITE_BUSY, "busycommit: second COMMIT busy (rc %d)", rc);
  must(a, "ROLLBACK");
  must(b, "COMMIT");
  check(q_int(b, "SELECT count(*) FROM t") == 1, "busycommit: rolled back");
  must(a, "INSERT INTO t VALUES(4, 'd')");
  sqlite3_close(a);
  sqlite3_close(b);
  a = open_db("bc.db");
  check(q_int(a, "SELECT count(*) FROM t WHERE k IN (1, 4)") == 2,
        "busycommit: after reopening");
  check(q_int(a, "SELECT count(*) FROM t") == 2, "busycommit: 2 rows after reopening");
  sqlite3_close(a);
}

static void test_cursor(void) {
  sqlite3 *a = open_db("cur.db");
  must(a, "CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v, "
          "buffer_size='128KiB')");
  must(a, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
          "WHERE i < 2000) INSERT INTO t SELECT i * 2, printf('%0100d', i) FROM c");
  for (int desc = 0; desc < 2; desc++) {
    must(a, "BEGIN; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
            "FROM c WHERE i < 2000) INSERT OR REPLACE INTO t SELECT i * 2 + 1, 'odd' "
            "FROM c; DELETE FROM t WHERE k % 10 = 0");
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(a, desc ? "SELECT k FROM t WHERE k > 100 ORDER BY k DESC"
                               : "SELECT k FROM t WHERE k > 100 ORDER BY k",
                       -1, &st, NULL);
    long long prev = desc ? 1LL << 40 : 0, n = 0;
    int ok = 1, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
      long long k = sqlite3_column_int64(st, 0);
      if (desc ? k >= prev : k <= prev) ok = 0;
      if (k % 10 == 0) ok = 0;
      prev = k;
      if (++n == 500) {
        if (desc == 0)
          must(a, "COMMIT"); /* the scan goes on over the committed tree */
        else
          must(a, "COMMIT; INSERT INTO t VALUES(50, 'new')");
      }
    }
    check(step == SQLITE_DONE, "cursor %d: scan ended cleanly (%d)", desc, step);
    sqlite3_finalize(st);
    long long expect = q_int(a, "SELECT count(*) FROM t WHERE k > 100");
    check(ok, "cursor %d: rows in order, no deleted row", desc);
    check(n == expect, "cursor %d: %lld rows, expected %lld", desc, n, expect);
    must(a, "DELETE FROM t WHERE k % 2 = 1 OR k = 50");
  }
  check(q_int(a, "SELECT count(*) FROM t") == 2000 - 400, "cursor: final count");
  sqlite3_close(a);
}

struct worker {
  int id, n, rc;
  char err[256];
};

static void *worker_main(void *arg) {
  struct worker *w = arg;
  sqlite3 *db = open_db("thr.db");
  sqlite3_busy_timeout(db, 20000);
  char sql[512];
  w->rc = SQLITE_OK;
  for (int i = 0; i < w->n && w->rc == SQLITE_OK; i++) {
    int k = w->id * 100000 + i;
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO t VALUES(%d, 'w%d'); INSERT INTO n VALUES(%d, 'w%d');"
             "UPDATE t SET v = v + 1 WHERE k = 0; UPDATE n SET v = v + 1 WHERE k = 0;"
             "COMMIT",
             k, w->id, k, w->id);
    char *err = NULL;
    w->rc = run(db, sql, &err);
    if (w->rc != SQLITE_OK) {
      snprintf(w->err, sizeof w->err, "%s", err ? err : "?");
      run(db, "ROLLBACK", NULL);
    }
    sqlite3_free(err);
  }
  sqlite3_close(db);
  return NULL;
}

static void test_threads(void) {
  sqlite3 *a = open_db("thr.db");
  must(a, "PRAGMA journal_mode = WAL;"
          "CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v, synchronous=off);"
          "CREATE TABLE n(k INTEGER PRIMARY KEY, v);"
          "INSERT INTO t VALUES(0, 0); INSERT INTO n VALUES(0, 0)");
  pthread_t th[2];
  struct worker w[2];
  for (int i = 0; i < 2; i++) {
    w[i] = (struct worker){.id = i + 1, .n = 150};
    pthread_create(&th[i], NULL, worker_main, &w[i]);
  }
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 2; i++)
    check(w[i].rc == SQLITE_OK, "threads: worker %d: rc %d %s", i, w[i].rc, w[i].err);
  check(q_int(a, "SELECT count(*) FROM t") == 301, "threads: bftree count");
  check(q_int(a, "SELECT count(*) FROM n") == 301, "threads: native count");
  check(q_int(a, "SELECT v FROM t WHERE k = 0") == 300, "threads: bftree counter");
  check(q_int(a, "SELECT v FROM n WHERE k = 0") == 300, "threads: native counter");
  sqlite3_close(a);
}

/* tempshare: connections that each declare the table in their own temp
** schema over one data file (so SQLite's database write lock does not
** order them, only the module's writer lock does).  Every worker adds 1 to
** counters by key, as autocommit statements and as two-statement
** transactions; a lost update (a read outside the writer lock) shows as a
** short total. */
#define SHARE_KEYS 4
#define SHARE_THREADS 4
#define SHARE_ROUNDS 300

/* A connection to database `name` (":memory:" for none) declaring table
** temp.<table> over the data file <dir>/<file>, with a busy timeout. */
static sqlite3 *open_temp_table(const char *name, const char *table, const char *file,
                                const char *sync, int busy_ms) {
  sqlite3 *db = strcmp(name, ":memory:") == 0 ? NULL : open_db(name);
  char sql[4400];
  if (!db) {
    if (sqlite3_open(":memory:", &db) != SQLITE_OK) exit(2);
    sqlite3_enable_load_extension(db, 1);
    if (sqlite3_load_extension(db, so_path, NULL, NULL) != SQLITE_OK) exit(2);
  }
  sqlite3_busy_timeout(db, busy_ms);
  snprintf(sql, sizeof sql,
           "CREATE VIRTUAL TABLE temp.%s USING bftree(k INTEGER PRIMARY KEY, v INTEGER, "
           "synchronous=%s, file='%s/%s')", table, sync, dir, file);
  must(db, sql);
  return db;
}

static sqlite3 *open_shared_counters(void) {
  return open_temp_table(":memory:", "c", "counters.bft", "off", 20000);
}

static void *share_main(void *arg) {
  struct worker *w = arg;
  sqlite3 *db = open_shared_counters();
  char sql[256];
  w->rc = SQLITE_OK;
  for (int i = 0; i < w->n && w->rc == SQLITE_OK; i++) {
    int k = (i + w->id) % SHARE_KEYS;
    if (i % 3 == 2)
      snprintf(sql, sizeof sql,
               "BEGIN; UPDATE c SET v = v + 1 WHERE k = %d;"
               "UPDATE c SET v = v + 1 WHERE k = %d; COMMIT",
               k, (k + 1) % SHARE_KEYS);
    else
      snprintf(sql, sizeof sql, "UPDATE c SET v = v + 1 WHERE k = %d", k);
    char *err = NULL;
    w->rc = run(db, sql, &err);
    if (w->rc != SQLITE_OK) {
      snprintf(w->err, sizeof w->err, "%s", err ? err : "?");
      run(db, "ROLLBACK", NULL);
    }
    sqlite3_free(err);
  }
  sqlite3_close(db);
  return NULL;
}

static void test_tempshare(void) {
  sqlite3 *a = open_shared_counters();
  for (int k = 0; k < SHARE_KEYS; k++) {
    char sql[64];
    snprintf(sql, sizeof sql, "INSERT INTO c VALUES(%d, 0)", k);
    must(a, sql);
  }
  pthread_t th[SHARE_THREADS];
  struct worker w[SHARE_THREADS];
  for (int i = 0; i < SHARE_THREADS; i++) {
    w[i] = (struct worker){.id = i, .n = SHARE_ROUNDS};
    pthread_create(&th[i], NULL, share_main, &w[i]);
  }
  for (int i = 0; i < SHARE_THREADS; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < SHARE_THREADS; i++)
    check(w[i].rc == SQLITE_OK, "tempshare: worker %d: rc %d %s", i, w[i].rc, w[i].err);
  /* per worker: SHARE_ROUNDS statements, a third of them adding twice */
  long long expect = 0;
  for (int i = 0; i < SHARE_ROUNDS; i++) expect += i % 3 == 2 ? 2 : 1;
  expect *= SHARE_THREADS;
  check(q_int(a, "SELECT sum(v) FROM c") == expect, "tempshare: total %lld, want %lld",
        q_int(a, "SELECT sum(v) FROM c"), expect);
  sqlite3_close(a);
  /* the data outlives every declaration: a new connection declares it again */
  a = open_shared_counters();
  check(q_int(a, "SELECT sum(v) FROM c") == expect, "tempshare: total after reopen");
  check(q_int(a, "SELECT count(*) FROM c") == SHARE_KEYS, "tempshare: rows after reopen");
  sqlite3_close(a);
}

/* busyread: a transaction whose UPDATE found the table locked (the two
** connections declare it in their temp schemas over one file, so only the
** module's lock orders them) still reads it, as any reader would, instead
** of waiting for the lock again; its next write takes the lock. */
static void test_busyread(void) {
  sqlite3 *a = open_temp_table(":memory:", "s", "busyread.bft", "off", 0);
  sqlite3 *b = open_temp_table(":memory:", "s", "busyread.bft", "off", 0);
  must(a, "INSERT INTO s VALUES(1, 10), (2, 20)");
  must(a, "BEGIN; UPDATE s SET v = 11 WHERE k = 1");
  char *msg = NULL;
  int rc = run(b, "BEGIN; UPDATE s SET v = v + 1 WHERE k = 1", &msg);
  check(rc == SQLITE_BUSY, "busyread: second writer gets SQLITE_BUSY, got %d %s", rc,
        msg ? msg : "");
  sqlite3_free(msg);
  check(!sqlite3_get_autocommit(b), "busyread: the transaction stays open");
  check(q_int(b, "SELECT v FROM s WHERE k = 1") == 10,
        "busyread: point SELECT in the transaction reads the committed row");
  check(q_int(b, "SELECT sum(v) FROM s WHERE k >= 1") == 30,
        "busyread: range SELECT in the transaction reads the committed rows");
  rc = run(b, "UPDATE s SET v = v + 100 WHERE k = 1", NULL);
  check(rc == SQLITE_BUSY, "busyread: a write still waits for the lock, got %d", rc);
  must(a, "COMMIT");
  must(b, "UPDATE s SET v = v + 100 WHERE k = 1");
  check(q_int(b, "SELECT v FROM s WHERE k = 1") == 111,
        "busyread: the writer reads its own update under the lock");
  check(q_int(a, "SELECT v FROM s WHERE k = 1") == 11, "busyread: not yet committed");
  must(b, "COMMIT");
  check(q_int(a, "SELECT v FROM s WHERE k = 1") == 111, "busyread: committed");
  sqlite3_close(a);
  sqlite3_close(b);
}

/* samefile: two tables of one connection over one data file (a temp
** declaration over the file of a persistent table) both read and write
** it, but one transaction cannot write through both: the second gets an
** error at once, naming the first, instead of waiting for itself. */
static void test_samefile(void) {
  char sql[4400], *msg = NULL;
  sqlite3 *db = open_db("same.db");
  sqlite3_busy_timeout(db, 5000);
  must(db, "CREATE VIRTUAL TABLE m USING bftree(k INTEGER PRIMARY KEY, v);"
           "INSERT INTO m VALUES(1, 1)");
  snprintf(sql, sizeof sql,
           "CREATE VIRTUAL TABLE temp.x USING bftree(k INTEGER PRIMARY KEY, v, "
           "file='%s/same.db-m.bftree')", dir);
  must(db, sql);
  must(db, "INSERT INTO x VALUES(2, 2)");
  check(q_int(db, "SELECT count(*) FROM m") == 2, "samefile: m sees x's row");
  must(db, "BEGIN; INSERT INTO m VALUES(3, 3)");
  double t0 = now_ms();
  int rc = run(db, "INSERT INTO x VALUES(4, 4)", &msg);
  check(rc == SQLITE_ERROR && msg && strstr(msg, "table x cannot be written") &&
            strstr(msg, "table main.m of this connection"),
        "samefile: writing x while m writes the file: %d %s", rc, msg ? msg : "");
  check(now_ms() - t0 < 2500, "samefile: refused without waiting");
  sqlite3_free(msg);
  must(db, "COMMIT");
  must(db, "INSERT INTO x VALUES(4, 4)");
  check(q_int(db, "SELECT count(*) FROM m") == 4, "samefile: 4 rows");
  sqlite3_close(db);
}

/* tempid: a transaction committed through a temp declaration over the file
** of a persistent table is recovered when the persistent table opens the
** file after a crash (it commits with id 0, which recovery always replays;
** an id of its own, unknown to the persistent table's shadow row, would be
** skipped).  The crash: a child process that exits without closing. */
static void test_tempid(void) {
  sqlite3 *db = open_db("tempid.db");
  must(db, "CREATE VIRTUAL TABLE m USING bftree(k INTEGER PRIMARY KEY, v, synchronous=normal);"
           "INSERT INTO m VALUES(1, 1)");
  sqlite3_close(db);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    sqlite3 *c = open_temp_table(":memory:", "x", "tempid.db-m.bftree", "normal", 0);
    int ok = run(c, "BEGIN; INSERT INTO x VALUES(2, 2); INSERT INTO x VALUES(3, 3); COMMIT",
                 NULL) == SQLITE_OK;
    _exit(ok ? 0 : 3); /* no close: no checkpoint */
  }
  int status = 0;
  check(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
            WEXITSTATUS(status) == 0,
        "tempid: the child committed");
  db = open_db("tempid.db");
  check(q_int(db, "SELECT count(*) FROM m") == 3,
        "tempid: the persistent table recovers the temp transaction: %lld rows",
        q_int(db, "SELECT count(*) FROM m"));
  sqlite3_close(db);
}

/* del_self(k): deletes row k of table rc, returns k * 10. */
static void del_self(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  char sql[100];
  snprintf(sql, sizeof sql, "DELETE FROM rc WHERE k = %lld",
           (long long)sqlite3_value_int64(argv[0]));
  if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
    sqlite3_result_error(ctx, sqlite3_errmsg(db), -1);
    return;
  }
  sqlite3_result_int64(ctx, sqlite3_value_int64(argv[0]) * 10);
}

static void test_rowcopy(void) {
  sqlite3 *db = open_db("rowcopy.db");
  must(db, "CREATE VIRTUAL TABLE rc USING bftree(k INTEGER PRIMARY KEY, a, b);"
           "INSERT INTO rc VALUES(5, 0, 0), (6, 0, 0), (7, 0, 0)");
  /* A SELECT positioned on row 5 and left open across two UPDATEs. */
  sqlite3_stmt *sel = NULL;
  check(sqlite3_prepare_v2(db, "SELECT a FROM rc WHERE k = 5", -1, &sel, NULL) ==
                SQLITE_OK &&
            sqlite3_step(sel) == SQLITE_ROW,
        "rowcopy: SELECT positioned");
  must(db, "UPDATE rc SET b = 9 WHERE k = 5");
  must(db, "UPDATE rc SET a = 1 WHERE k = 5");
  sqlite3_finalize(sel);
  check(q_int(db, "SELECT a * 100 + b FROM rc WHERE k = 5") == 109,
        "rowcopy: row 5 is (1, 9) after UPDATEs under an open SELECT, not %lld",
        q_int(db, "SELECT a * 100 + b FROM rc WHERE k = 5"));
  /* ROLLBACK TO between UPDATEs of one row. */
  must(db, "BEGIN; UPDATE rc SET b = 7 WHERE k = 6; SAVEPOINT s;"
           "UPDATE rc SET a = 2 WHERE k = 6; ROLLBACK TO s;"
           "UPDATE rc SET b = b + 1 WHERE k = 6; COMMIT");
  check(q_int(db, "SELECT a * 100 + b FROM rc WHERE k = 6") == 8,
        "rowcopy: row 6 is (0, 8) after ROLLBACK TO, not %lld",
        q_int(db, "SELECT a * 100 + b FROM rc WHERE k = 6"));
  /* A function of the UPDATE deletes the row being updated. */
  check(sqlite3_create_function(db, "del_self", 1, SQLITE_UTF8, NULL, del_self,
                                NULL, NULL) == SQLITE_OK,
        "rowcopy: create function");
  char *msg = NULL;
  int rc = run(db, "UPDATE rc SET a = del_self(k) WHERE k = 7", &msg);
  check(rc == SQLITE_OK, "rowcopy: UPDATE with del_self: %s", msg ? msg : "");
  sqlite3_free(msg);
  check(q_int(db, "SELECT count(*) FROM rc WHERE k = 7") == 0,
        "rowcopy: row 7, deleted by a function of its UPDATE, came back");
  check(q_int(db, "SELECT count(*) FROM rc") == 2, "rowcopy: 2 rows left");
  sqlite3_close(db);
}

int main(int argc, char **argv) {
  if (argc > 1) so_path = argv[1];
  const char *base = getenv("BF_TEST_DIR");
  snprintf(dir, sizeof dir, "%s/bftree-twoconn-XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(dir)) {
    perror("twoconn: mkdtemp");
    return 2;
  }
  double t0 = now_ms();
  test_isolation();
  test_busy();
  test_lock();
  test_hook();
  test_busy_commit();
  test_cursor();
  test_threads();
  test_tempshare();
  test_busyread();
  test_samefile();
  test_tempid();
  test_rowcopy();
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (failed == 0 && system(cmd) != 0) fprintf(stderr, "twoconn: cannot remove %s\n", dir);
  printf("twoconn: %.1f s\n%d passed, %d failed\n", (now_ms() - t0) / 1e3, passed,
         failed);
  return failed ? 1 : 0;
}
