/*
** crashtest.c: kill -9 a process that commits SQL transactions writing a
** bftree table and a native table of one database, reopen, and check that
** the two tables stayed one atomic, durable whole.
**
** Usage: crashtest [path/to/bftree.so]        (default ./bftree.so)
**   BF_TEST_SEED=n     replay a run (the seed is always printed)
**   BF_CRASH_KILLS=n   kills (default 30); the first two thirds with the
**                      table's synchronous='full' and the database in
**                      rollback-journal mode, the rest with
**                      synchronous='normal' and the database in WAL mode
**                      (both must survive a process crash)
**   BF_TEST_DIR=dir    where the databases go (default /tmp)
**   BF_CRASH_VERBOSE=1 a line per kill
**   BF_CRASH_ONLY=full|normal  run only that phase (debugging)
**
** THE CHILD (a fork of this process) opens the database, reads the last
** committed transaction number M from the native table txlog, and commits
** transactions n = M+1, M+2, ... for ever.  Transaction n, in one BEGIN ..
** COMMIT:
**   - inserts rows n*8 + j, j = 0 .. R(n)-1 (R(n) = 3 + n % 4) with value
**     val(n, j) into bt (bftree) and nt (native); row j = 0 goes in as
**     n*8 + 7 and is moved to n*8 by an UPDATE of the key;
**   - inside SAVEPOINT s writes junk into both tables, then ROLLBACK TO s;
**   - sets the shared row -(n % 8 + 1) to n in both tables;
**   - deletes the rows of transaction n - WINDOW (a range DELETE) in both;
**   - inserts n into txlog;
** and after COMMIT returns it inserts row n into the bftree table at in an
** autocommit statement (a one-table commit: no shadow row, logged with
** commit id 0), then writes n to a pipe; at its start it inserts row M
** into at if missing (killed between the two).  Every 5th n it first runs
** a transaction that it rolls back; every 11th n a commit hook first
** refuses the COMMIT (SQLite rolls back after the module's xSync); every
** 37th n it closes and reopens the database (a clean close checkpoints).
**
** THE PARENT forks the child, waits for it to report that it opened the
** table (three times in four; otherwise it counts from the fork, so some
** kills land in the child's recovery), sleeps 0-50 ms, sends SIGKILL, and
** collects the reported numbers.  Three kills in four (and always the last)
** it then reopens the database itself and verifies, with M = max(txlog):
**   - every reported transaction is there: M >= the largest reported, and
**     at most one unreported transaction per child since the last report
**     (or verification) committed;
**   - txlog holds exactly 1..M; at holds exactly 1..M or 1..M-1, each
**     row with its value, every number a child reported among them (a
**     number a verification found in txlog but no child reported may be
**     missing from at until a child's start inserts it);
**   - bt and nt each hold exactly the rows that transactions 1..M leave
**     (nothing of a later, rolled-back or refused transaction, nothing
**     missing), compared row by row in key order (a full scan);
**   - range scans of bt in both directions return their rows in order;
**   - bftree_check('bt') is ok.
** Prints the seed, kills, verifications, transactions verified, the time,
** and "N passed, M failed" (checks); exits non-zero on failure.
*/
#include <sqlite3.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WINDOW 150 /* transactions whose rows are kept */

static const char *so_path = "./bftree.so";
static int verbose;
static long passed, failed;

/* ------------------------------------------------------------- random */

static uint64_t rng_state;

static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(int ok, const char *fmt, ...) {
  if (ok) {
    passed++;
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAILED: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  failed++;
}

/* ------------------------------------------------------------ content */

static int rows_of(long long n) { return 3 + (int)(n % 4); }

/* val(n, j) into buf (at least 400 bytes). */
static void val_of(long long n, int j, char *buf) {
  int len = snprintf(buf, 64, "%lld.%d.", n, j);
  int pad = (int)((n * 7 + j * 13) % 300);
  memset(buf + len, 'x', (size_t)pad);
  buf[len + pad] = 0;
}

static sqlite3 *open_db(const char *path) {
  sqlite3 *db = NULL;
  char *err = NULL;
  if (sqlite3_open(path, &db) != SQLITE_OK) {
    fprintf(stderr, "crashtest: cannot open %s: %s\n", path, sqlite3_errmsg(db));
    return NULL;
  }
  sqlite3_busy_timeout(db, 10000);
  sqlite3_enable_load_extension(db, 1);
  if (sqlite3_load_extension(db, so_path, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "crashtest: cannot load %s: %s\n", so_path, err);
    sqlite3_free(err);
    sqlite3_close(db);
    return NULL;
  }
  return db;
}

static int exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) rc = sqlite3_extended_errcode(db);
  if (rc != SQLITE_OK && rc != SQLITE_CONSTRAINT_COMMITHOOK)
    fprintf(stderr, "crashtest: %.200s: %s\n", sql, err ? err : sqlite3_errstr(rc));
  sqlite3_free(err);
  return rc;
}

static long long q_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  long long v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  else
    fprintf(stderr, "crashtest: %s: %s\n", sql, sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return v;
}

/* -------------------------------------------------------------- child */

static int refuse_once(void *p) {
  int *flag = p;
  int r = *flag;
  *flag = 0;
  return r;
}

/* Append to s (a buffer of 64 KiB). */
static void add(char *s, const char *fmt, ...) {
  size_t n = strlen(s);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s + n, 65536 - n, fmt, ap);
  va_end(ap);
}

static char *txn_sql(long long n) {
  static char s[65536];
  char v[400];
  s[0] = 0;
  add(s, "BEGIN;");
  for (int j = 0; j < rows_of(n); j++) {
    val_of(n, j, v);
    long long k = j == 0 ? n * 8 + 7 : n * 8 + j;
    add(s, "INSERT INTO bt VALUES(%lld, '%s'); INSERT INTO nt VALUES(%lld, '%s');",
        k, v, k, v);
  }
  add(s, "UPDATE bt SET k = %lld WHERE k = %lld; UPDATE nt SET k = %lld WHERE k = %lld;",
      n * 8, n * 8 + 7, n * 8, n * 8 + 7);
  add(s, "SAVEPOINT s; INSERT INTO bt VALUES(%lld, 'junk'); INSERT INTO nt VALUES"
         "(%lld, 'junk'); UPDATE bt SET v = 'junk' WHERE k BETWEEN %lld AND %lld;"
         "DELETE FROM nt WHERE k = %lld; ROLLBACK TO s; RELEASE s;",
      -5000 - n, -5000 - n, n * 8 - 40, n * 8 + 1, n * 8 + 1);
  add(s, "UPDATE bt SET v = %lld WHERE k = %lld; UPDATE nt SET v = %lld WHERE k = %lld;",
      n, -(n % 8 + 1), n, -(n % 8 + 1));
  if (n > WINDOW)
    add(s, "DELETE FROM bt WHERE k BETWEEN %lld AND %lld;"
           "DELETE FROM nt WHERE k BETWEEN %lld AND %lld;",
        (n - WINDOW) * 8, (n - WINDOW) * 8 + 7, (n - WINDOW) * 8, (n - WINDOW) * 8 + 7);
  add(s, "INSERT INTO txlog VALUES(%lld); COMMIT;", n);
  return s;
}

static void child_main(const char *path, int fd) {
  sqlite3 *db = open_db(path);
  if (!db) _exit(3);
  int refuse = 0;
  sqlite3_commit_hook(db, refuse_once, &refuse);
  long long m = q_int(db, "SELECT coalesce(max(n), 0) FROM txlog");
  /* Open the tree (recovery runs here), then say so. */
  if (m < 0 || q_int(db, "SELECT count(*) FROM bt WHERE k = -1") != 1) _exit(4);
  char ac[128];
  if (m > 0) {
    snprintf(ac, sizeof ac, "INSERT OR IGNORE INTO at VALUES(%lld, 'a%lld')", m, m);
    if (exec(db, ac) != SQLITE_OK) _exit(13);
  }
  long long zero = 0;
  if (write(fd, &zero, sizeof zero) != sizeof zero) _exit(5);
  for (long long n = m + 1;; n++) {
    char sql[256];
    if (n % 5 == 0) {
      snprintf(sql, sizeof sql,
               "BEGIN; INSERT INTO bt VALUES(%lld, 'rolled back'); INSERT INTO nt "
               "VALUES(%lld, 'rolled back'); UPDATE bt SET v = 'bad' WHERE k < 0;"
               "DELETE FROM bt WHERE k > %lld; ROLLBACK",
               -1000 - n, -1000 - n, n * 8 - 100);
      if (exec(db, sql) != SQLITE_OK) _exit(6);
    }
    if (n % 11 == 0) {
      refuse = 1;
      if (exec(db, txn_sql(n)) != SQLITE_CONSTRAINT_COMMITHOOK) _exit(7);
    }
    if (exec(db, txn_sql(n)) != SQLITE_OK) _exit(8);
    snprintf(ac, sizeof ac, "INSERT INTO at VALUES(%lld, 'a%lld')", n, n);
    if (exec(db, ac) != SQLITE_OK) _exit(14);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) _exit(12); /* fd stolen */
    if (write(fd, &n, sizeof n) != sizeof n) _exit(9);
    if (n % 37 == 0) {
      if (sqlite3_close(db) != SQLITE_OK) _exit(10);
      db = open_db(path);
      if (!db) _exit(11);
      sqlite3_commit_hook(db, refuse_once, &refuse);
    }
  }
}

/* ------------------------------------------------------------- verify */

typedef struct row {
  long long k;
  char v[400];
} row;

/* The rows both tables must hold after transactions 1..m, in key order. */
static row *expected_rows(long long m, size_t *count) {
  size_t cap = 8 + (size_t)WINDOW * 7, n = 0;
  row *r = malloc(cap * sizeof *r);
  if (!r) abort();
  for (int s = 7; s >= 0; s--) { /* k = -8 .. -1 */
    long long last = 0;
    for (long long x = m; x >= 1 && x > m - 8; x--)
      if (x % 8 == s) last = x;
    r[n].k = -(s + 1);
    snprintf(r[n].v, sizeof r[n].v, "%lld", last);
    n++;
  }
  long long first = m > WINDOW ? m - WINDOW + 1 : 1;
  for (long long x = first; x <= m; x++) {
    for (int j = 0; j < rows_of(x); j++) {
      r[n].k = x * 8 + j;
      val_of(x, j, r[n].v);
      n++;
    }
  }
  *count = n;
  return r;
}

/* Compare the rows of sql (k, v) with exp[lo, hi) (descending: reversed). */
static void compare(sqlite3 *db, const char *what, const char *sql, const row *exp,
                    size_t lo, size_t hi, int desc) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    check(0, "%s: %s: %s", what, sql, sqlite3_errmsg(db));
    return;
  }
  size_t i = 0, n = hi - lo;
  int rc, ok = 1;
  long long prev = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    long long k = sqlite3_column_int64(st, 0);
    const char *v = (const char *)sqlite3_column_text(st, 1);
    if (i > 0 && (desc ? k >= prev : k <= prev)) {
      check(0, "%s: key %lld after %lld: out of order", what, k, prev);
      ok = 0;
      break;
    }
    prev = k;
    const row *e = i < n ? &exp[desc ? hi - 1 - i : lo + i] : NULL;
    if (!e || e->k != k || !v || strcmp(e->v, v) != 0) {
      check(0, "%s: row %zu is (%lld, %.40s), expected %s%lld", what, i, k,
            v ? v : "NULL", e ? "" : "nothing, not ", e ? e->k : k);
      ok = 0;
      break;
    }
    i++;
  }
  if (ok && rc != SQLITE_DONE) {
    check(0, "%s: step: %s", what, sqlite3_errmsg(db));
    ok = 0;
  }
  if (ok && i != n) {
    check(0, "%s: %zu rows, expected %zu (next expected key %lld)", what, i, n,
          exp[desc ? hi - 1 - i : lo + i].k);
    ok = 0;
  }
  if (ok) check(1, "");
  sqlite3_finalize(st);
}

/* Returns the committed number M, or -1 when the database cannot be read. */
/* reported: the largest transaction number known committed (reported by a
** child, or found by an earlier verification); acked: the largest number a
** child reported, i.e. whose autocommit insert into at returned. */
static long long verify(const char *path, long long reported, long long acked,
                        long pending) {
  sqlite3 *db = open_db(path);
  if (!db) {
    check(0, "reopen %s", path);
    return -1;
  }
  long long m = q_int(db, "SELECT coalesce(max(n), 0) FROM txlog");
  check(m >= reported, "transaction %lld was reported committed, the database "
                       "has only up to %lld", reported, m);
  check(m <= reported + pending,
        "transactions up to %lld committed, only %lld reported (at most %ld "
        "more can be unreported)", m, reported, pending);
  check(q_int(db, "SELECT count(*) FROM txlog") == m &&
            q_int(db, "SELECT coalesce(min(n), 1) FROM txlog") == 1,
        "txlog holds 1..%lld", m);
  long long at_max = q_int(db, "SELECT coalesce(max(k), 0) FROM at");
  check((at_max == m || at_max == m - 1 || (m == 0 && at_max == 0)) &&
            q_int(db, "SELECT count(*) FROM at") == at_max &&
            q_int(db, "SELECT coalesce(min(k), 1) FROM at") == 1 &&
            q_int(db, "SELECT count(*) FROM at WHERE v IS NOT 'a' || k") == 0,
        "autocommit table at: rows 1..%lld (count %lld), transactions 1..%lld",
        at_max, q_int(db, "SELECT count(*) FROM at"), m);
  check(at_max >= acked, "autocommit insert %lld was reported, at has only "
                         "up to %lld", acked, at_max);
  size_t n = 0;
  row *exp = expected_rows(m, &n);
  compare(db, "bt", "SELECT k, v FROM bt", exp, 0, n, 0);
  compare(db, "nt", "SELECT k, v FROM nt ORDER BY k", exp, 0, n, 0);
  compare(db, "bt desc", "SELECT k, v FROM bt ORDER BY k DESC", exp, 0, n, 1);
  for (int r = 0; r < 4 && n > 8; r++) {
    size_t a = 8 + (size_t)(rnd() % (n - 8)), b = 8 + (size_t)(rnd() % (n - 8));
    if (a > b) {
      size_t t = a;
      a = b;
      b = t;
    }
    char sql[200];
    int desc = (int)(rnd() % 2);
    snprintf(sql, sizeof sql, "SELECT k, v FROM bt WHERE k >= %lld AND k < %lld%s",
             exp[a].k, exp[b].k, desc ? " ORDER BY k DESC" : "");
    compare(db, "bt range", sql, exp, a, b, desc);
  }
  sqlite3_stmt *st = NULL;
  const char *ck = NULL;
  if (sqlite3_prepare_v2(db, "SELECT bftree_check('bt')", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    ck = (const char *)sqlite3_column_text(st, 0);
  check(ck && strcmp(ck, "ok") == 0, "bftree_check: %s", ck ? ck : sqlite3_errmsg(db));
  sqlite3_finalize(st);
  free(exp);
  if (sqlite3_close(db) != SQLITE_OK) check(0, "close: %s", sqlite3_errmsg(db));
  return m;
}

/* -------------------------------------------------------------- parent */

static int setup(const char *path, const char *sync, int wal) {
  sqlite3 *db = open_db(path);
  if (!db) return -1;
  char sql[512];
  snprintf(sql, sizeof sql,
           "%s"
           "CREATE VIRTUAL TABLE bt USING bftree(k INTEGER PRIMARY KEY, v, "
           "synchronous='%s', buffer_size='128KiB');"
           "CREATE VIRTUAL TABLE at USING bftree(k INTEGER PRIMARY KEY, v, "
           "synchronous='%s', buffer_size='128KiB');"
           "CREATE TABLE nt(k INTEGER PRIMARY KEY, v);"
           "CREATE TABLE txlog(n INTEGER PRIMARY KEY);"
           "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 8)"
           "INSERT INTO bt SELECT -i, 0 FROM c;"
           "INSERT INTO nt SELECT k, v FROM bt;",
           wal ? "PRAGMA journal_mode = WAL;" : "", sync, sync);
  int rc = exec(db, sql);
  sqlite3_close(db);
  return rc == SQLITE_OK ? 0 : -1;
}

struct phase_stats {
  long kills, verifies, committed, reported;
};

/* Wait up to ms for fd to be readable; true when it is. */
static int readable(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, ms) > 0;
}

static int run_phase(const char *dir, const char *name, const char *sync, int wal,
                     long kills, struct phase_stats *ps) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s.db", dir, name);
  if (setup(path, sync, wal) != 0) return -1;
  long long reported = 0, acked = 0;
  long pending = 0; /* commits that may be unreported: see verify() */
  memset(ps, 0, sizeof *ps);
  for (long i = 0; i < kills; i++) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
      close(fds[0]);
      child_main(path, fds[1]);
      _exit(0);
    }
    close(fds[1]);
    int from_start = rnd() % 4 == 0;
    if (!from_start && !readable(fds[0], 20000))
      check(0, "%s: the child did not start within 20 s", name);
    usleep((useconds_t)(rnd() % 51) * 1000);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFSIGNALED(status))
      check(0, "%s: the child exited by itself (status %d) before the kill", name,
            WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    long long v, last = reported;
    ssize_t got;
    while ((got = read(fds[0], &v, sizeof v)) == (ssize_t)sizeof v) {
      if (v > 0) {
        if (v > acked) acked = v;
        if (v != last + 1 && last != reported)
          check(0, "%s: reports out of sequence (%lld after %lld)", name, v, last);
        last = v;
      }
    }
    close(fds[0]);
    /* A child may commit once more after its last report; a child that
    ** reports nothing adds that one to what earlier children left. */
    pending = last > reported ? 1 : pending + 1;
    if (last > reported) ps->reported += last - reported;
    reported = last > reported ? last : reported;
    ps->kills++;
    if (rnd() % 4 != 0 || i == kills - 1) {
      long long m = verify(path, reported, acked, pending);
      if (m < 0) return -1;
      reported = m; /* unreported commits are now known */
      pending = 0;
      ps->verifies++;
      ps->committed = m;
    }
    if (verbose)
      printf("%s kill %ld: reported %lld, passed %ld failed %ld\n", name, i + 1,
             reported, passed, failed);
    if (failed) break;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1) so_path = argv[1];
  verbose = getenv("BF_CRASH_VERBOSE") != NULL;
  const char *e = getenv("BF_TEST_SEED");
  uint64_t seed = e && *e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid() << 16;
  rng_state = seed;
  e = getenv("BF_CRASH_KILLS");
  long kills = e && *e ? atol(e) : 30;
  if (kills < 2) kills = 2;
  printf("crashtest: seed %llu (BF_TEST_SEED replays), %ld kills\n",
         (unsigned long long)seed, kills);
  char dir[4096];
  const char *base = getenv("BF_TEST_DIR");
  snprintf(dir, sizeof dir, "%s/bftree-crash-XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(dir)) {
    perror("crashtest: mkdtemp");
    return 2;
  }
  double t0 = now_s();
  long full = kills * 2 / 3, normal = kills - full;
  e = getenv("BF_CRASH_ONLY"); /* debugging: "full" or "normal" */
  if (e && strcmp(e, "full") == 0) full = kills, normal = 0;
  if (e && strcmp(e, "normal") == 0) full = 0, normal = kills;
  struct phase_stats a, b;
  memset(&b, 0, sizeof b);
  memset(&a, 0, sizeof a);
  int rc = full ? run_phase(dir, "full", "full", 0, full, &a) : 0;
  if (rc == 0 && !failed && normal)
    rc = run_phase(dir, "normal", "normal", 1, normal, &b);
  if (rc != 0) check(0, "setup or fork failed");
  double secs = now_s() - t0;
  printf("synchronous=full:   %ld kills, %ld verifications, %ld transactions "
         "verified (%ld reported)\n", a.kills, a.verifies, a.committed, a.reported);
  printf("synchronous=normal: %ld kills, %ld verifications, %ld transactions "
         "verified (%ld reported)\n", b.kills, b.verifies, b.committed, b.reported);
  printf("crashtest: %.1f s, seed %llu\n", secs, (unsigned long long)seed);
  if (!failed) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "crashtest: cannot remove %s\n", dir);
  } else {
    printf("crashtest: files kept in %s\n", dir);
  }
  printf("%ld passed, %ld failed\n", passed, failed);
  return failed ? 1 : 0;
}
