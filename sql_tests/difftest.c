/*
** difftest.c: differential test of the bftree module against native SQLite.
**
** Usage: difftest [path/to/bftree.so]     (default ./bftree.so)
**   BF_TEST_SEED=n      replay a run (the seed is always printed)
**   BF_DIFFTEST_OPS=n   random statements per schema (default 1200)
**   BF_DIFFTEST_VERBOSE=1  print every statement
**   BF_TEST_DIR=dir     where the database files go (default /dev/shm when
**                       writable, else /tmp)
**
** For each key type (INTEGER, TEXT, REAL, BLOB, NUMERIC, none) it creates
**   native:  CREATE TABLE t(k <type> PRIMARY KEY, a INTEGER, b TEXT, c) WITHOUT ROWID
**   bftree:  CREATE VIRTUAL TABLE t USING bftree(<same>, buffer_size='128KiB')
** in two connections (the bftree one on a file database in a temporary
** directory), then runs the same random statements on both: inserts with
** every conflict clause (single rows, several rows, INSERT ... SELECT, bulk
** loads that outgrow the 128 KiB buffer), updates including key changes,
** deletes, selects with random bounds of mixed types, IN lists, IS, ORDER BY
** ASC/DESC, LIMIT/OFFSET, and transactions with savepoints.  After every
** statement it compares the rows (type and exact value), the result code
** (extended), the error message and changes(); every 100 statements it
** compares the whole table.  Known differences (ext/README-sql.md) are
** skipped and the bftree table is re-synchronised from the native one.
**
** Prints the seed, each mismatch (statement, both results), and ends with
** "N passed, M failed"; exits non-zero on failure.
*/
#include <sqlite3.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- random */

static uint64_t rng_state;

static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static int rn(int n) { return (int)(rnd() % (uint64_t)n); }

/* ------------------------------------------------------------ strings */

typedef struct str {
  char *p;
  size_t n, cap;
} str;

static void s_add(str *s, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int k = vsnprintf(s->p ? s->p + s->n : NULL, s->p ? s->cap - s->n : 0, fmt, ap);
    va_end(ap);
    if (k < 0) abort();
    if (s->p && s->n + (size_t)k < s->cap) {
      s->n += (size_t)k;
      return;
    }
    size_t nc = s->cap ? s->cap * 2 : 256;
    while (nc < s->n + (size_t)k + 1) nc *= 2;
    s->p = realloc(s->p, nc);
    if (!s->p) abort();
    s->cap = nc;
  }
}

static void s_reset(str *s) {
  s->n = 0;
  if (s->p)
    s->p[0] = 0;
  else
    s_add(s, "%s", ""); /* never NULL after a reset */
}

/* --------------------------------------------------- SQL generation */

/* A random value literal, biased to collide and to cross classes. */
static void gen_value(str *s) {
  switch (rn(16)) {
    case 0: s_add(s, "NULL"); break;
    case 1: case 2: case 3: case 4: s_add(s, "%d", rn(41) - 20); break;
    case 5: s_add(s, "%d.0", rn(41) - 20); break;
    case 6: s_add(s, "%d.5", rn(41) - 20); break;
    case 7: s_add(s, "%d.25", -rn(20)); break;
    case 8: s_add(s, "'%d'", rn(41) - 20); break;
    case 9: s_add(s, "'%d.0'", rn(21)); break;
    case 10: {
      static const char *t[] = {"''", "'a'", "'abc'", "'b'", "'ab'", "' 7'",
                                "'x'", "'5.5'", "'1e2'", "'-0'"};
      s_add(s, "%s", t[rn(10)]);
      break;
    }
    case 11: {
      static const char *b[] = {"x''", "x'00'", "x'61'", "x'6162'", "x'ff'", "x'35'"};
      s_add(s, "%s", b[rn(6)]);
      break;
    }
    case 12: s_add(s, "%d", rn(200000) - 100000); break;
    case 13: s_add(s, "%lld", (long long)(rnd() >> rn(64))); break;
    case 14: s_add(s, "%.17g", (double)(rn(2000) - 1000) / 7.0); break;
    default: s_add(s, "%d", rn(10)); break;
  }
}

static void gen_key_cond(str *s) {
  static const char *ops[] = {"=", "<", "<=", ">", ">=", "IS", "!="};
  switch (rn(9)) {
    case 0: case 1:
      s_add(s, "k %s ", ops[rn(7)]);
      gen_value(s);
      break;
    case 2:
      s_add(s, "k BETWEEN ");
      gen_value(s);
      s_add(s, " AND ");
      gen_value(s);
      break;
    case 3: {
      int n = 1 + rn(5);
      s_add(s, "k IN (");
      for (int i = 0; i < n; i++) {
        if (i) s_add(s, ", ");
        gen_value(s);
      }
      s_add(s, ")");
      break;
    }
    case 4: /* bound on the right */
      gen_value(s);
      s_add(s, " %s k", ops[rn(5)]);
      break;
    case 5:
      s_add(s, "k > ");
      gen_value(s);
      s_add(s, " AND k < ");
      gen_value(s);
      s_add(s, " AND k >= ");
      gen_value(s);
      break;
    case 6:
      s_add(s, "a %s ", ops[rn(5)]);
      gen_value(s);
      break;
    case 7:
      s_add(s, rn(2) ? "k IS NULL" : "k IS NOT NULL");
      break;
    default:
      s_add(s, "(k < ");
      gen_value(s);
      s_add(s, " OR k = ");
      gen_value(s);
      s_add(s, ")");
      break;
  }
}

static void gen_where(str *s) {
  int n = rn(4);
  if (n == 0) return;
  s_add(s, " WHERE ");
  for (int i = 0; i < n; i++) {
    if (i) s_add(s, " AND ");
    gen_key_cond(s);
  }
}

static const char *conflict(void) {
  static const char *c[] = {"", " OR ABORT", " OR FAIL", " OR IGNORE",
                            " OR REPLACE", " OR ROLLBACK"};
  return c[rn(6)];
}

static void gen_row(str *s) {
  s_add(s, "(");
  gen_value(s);
  s_add(s, ", ");
  gen_value(s);
  s_add(s, ", ");
  gen_value(s);
  s_add(s, ", ");
  if (rn(3) == 0)
    s_add(s, "printf('%%0%dd', %d)", rn(120), rn(1000));
  else
    gen_value(s);
  s_add(s, ")");
}

static void gen_key_expr(str *s) {
  switch (rn(8)) {
    case 0: s_add(s, "k + %d", rn(7) - 3); break;
    case 1: s_add(s, "-k"); break;
    case 2: s_add(s, "k * 2"); break;
    case 3: s_add(s, "k || ''"); break;
    case 4: s_add(s, "k + 0.5"); break;
    case 5: s_add(s, "k + 1000"); break;
    default: gen_value(s); break;
  }
}

/* One random statement into s.  *in_txn tracks BEGIN/COMMIT. */
static void gen_statement(str *s, int *in_txn) {
  int r = rn(100);
  if (r < 20) {
    int n = 1 + (rn(3) == 0 ? rn(4) : 0);
    s_add(s, "INSERT%s INTO t VALUES", conflict());
    for (int i = 0; i < n; i++) {
      if (i) s_add(s, ", ");
      gen_row(s);
    }
  } else if (r < 24) {
    s_add(s, "INSERT%s INTO t SELECT ", conflict());
    gen_key_expr(s);
    s_add(s, ", a, b, c FROM t");
    gen_where(s);
  } else if (r < 29) {
    /* a bulk load, so that the data outgrows the buffer */
    int base = rn(1000000), n = 100 + rn(300);
    s_add(s,
          "INSERT%s INTO t WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i "
          "+ 1 FROM c WHERE i < %d) SELECT %d + i * %d, i, 'row' || i, "
          "printf('%%060d', i) FROM c",
          conflict(), n, base, 1 + rn(5));
  } else if (r < 39) {
    s_add(s, "UPDATE%s t SET ", conflict());
    switch (rn(4)) {
      case 0:
        s_add(s, "k = ");
        gen_key_expr(s);
        break;
      case 1:
        s_add(s, "k = ");
        gen_key_expr(s);
        s_add(s, ", b = ");
        gen_value(s);
        break;
      case 2:
        s_add(s, "a = coalesce(a, 0) + 1");
        break;
      default:
        s_add(s, "c = ");
        gen_value(s);
        break;
    }
    gen_where(s);
  } else if (r < 44) {
    s_add(s, "DELETE FROM t");
    gen_where(s);
    if (!strstr(s->p, "WHERE")) s_add(s, " WHERE k BETWEEN %d AND %d", rn(1000000), rn(1000000));
  } else if (r < 88) {
    static const char *cols[] = {"k, a, b, c", "k", "count(*)",
                                 "count(*), sum(a), min(k), max(k)", "typeof(k), k"};
    int ci = rn(5);
    s_add(s, "SELECT %s FROM t", cols[ci]);
    gen_where(s);
    if (ci < 2 || ci == 4) {
      int o = rn(4);
      if (o == 1) s_add(s, " ORDER BY k");
      if (o == 2) s_add(s, " ORDER BY k DESC");
      if (o >= 1 && rn(2)) {
        s_add(s, " LIMIT %d", rn(20) - 1);
        if (rn(2)) s_add(s, " OFFSET %d", rn(10));
      }
    }
  } else if (r < 92) {
    s_add(s, "%s", *in_txn ? (rn(3) ? "COMMIT" : "ROLLBACK") : "BEGIN");
    *in_txn = !*in_txn;
  } else if (r < 96) {
    static const char *sp[] = {"SAVEPOINT s1", "SAVEPOINT s2", "ROLLBACK TO s1",
                               "ROLLBACK TO s2", "RELEASE s1", "RELEASE s2"};
    s_add(s, "%s", sp[rn(6)]);
  } else {
    s_add(s, "SELECT k FROM t WHERE k IN (SELECT k FROM t WHERE ");
    gen_key_cond(s);
    s_add(s, ") ORDER BY k DESC LIMIT 5");
  }
}

/* ----------------------------------------------------------- running */

/* Run sql on db; describe the outcome (rows, code, message, changes) in out.
** sorted: sort the rows (the statement has no ORDER BY). */
static int cmp_line(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run(sqlite3 *db, const char *sql, str *out, int sorted) {
  sqlite3_stmt *st = NULL;
  str rows = {0};
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  s_reset(out);
  if (rc == SQLITE_OK) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      int n = sqlite3_column_count(st);
      for (int i = 0; i < n; i++) {
        switch (sqlite3_column_type(st, i)) {
          case SQLITE_INTEGER:
            s_add(&rows, "i%lld", (long long)sqlite3_column_int64(st, i));
            break;
          case SQLITE_FLOAT:
            s_add(&rows, "r%.17g", sqlite3_column_double(st, i));
            break;
          case SQLITE_TEXT:
            s_add(&rows, "t'%s'", (const char *)sqlite3_column_text(st, i));
            break;
          case SQLITE_BLOB: {
            const unsigned char *b = sqlite3_column_blob(st, i);
            int bn = sqlite3_column_bytes(st, i);
            s_add(&rows, "x'");
            for (int j = 0; j < bn; j++) s_add(&rows, "%02x", b[j]);
            s_add(&rows, "'");
            break;
          }
          default:
            s_add(&rows, "NULL");
        }
        s_add(&rows, i + 1 < n ? "|" : "\n");
      }
    }
  }
  if (rows.n && sorted) {
    size_t nl = 0;
    for (size_t i = 0; i < rows.n; i++) nl += rows.p[i] == '\n';
    char **lines = malloc(nl * sizeof *lines);
    size_t k = 0;
    for (char *p = rows.p; k < nl; k++) {
      lines[k] = p;
      p = strchr(p, '\n');
      *p++ = 0;
    }
    qsort(lines, nl, sizeof *lines, cmp_line);
    for (k = 0; k < nl; k++) s_add(out, "%s\n", lines[k]);
    free(lines);
  } else if (rows.n) {
    s_add(out, "%s", rows.p);
  }
  free(rows.p);
  if (rc != SQLITE_DONE) {
    s_add(out, "ERROR %d: %s\n", sqlite3_extended_errcode(db), sqlite3_errmsg(db));
  } else if (strncmp(sql, "INSERT", 6) == 0 || strncmp(sql, "UPDATE", 6) == 0 ||
             strncmp(sql, "DELETE", 6) == 0) {
    s_add(out, "changes %d\n", sqlite3_changes(db));
  }
  sqlite3_finalize(st);
}

static int exec_ok(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) {
    fprintf(stderr, "difftest: %s: %s\n", sql, err ? err : "?");
    sqlite3_free(err);
  }
  return rc == SQLITE_OK;
}

/* Make the bftree table equal to the native one (after a known difference). */
static int resync(sqlite3 *nat, sqlite3 *bft) {
  sqlite3_stmt *q = NULL, *ins = NULL;
  int ok = exec_ok(bft, "DELETE FROM t");
  ok = ok && sqlite3_prepare_v2(nat, "SELECT k, a, b, c FROM t", -1, &q, NULL) == SQLITE_OK;
  ok = ok && sqlite3_prepare_v2(bft, "INSERT INTO t VALUES(?1, ?2, ?3, ?4)", -1, &ins, NULL) == SQLITE_OK;
  while (ok && sqlite3_step(q) == SQLITE_ROW) {
    for (int i = 0; i < 4; i++) sqlite3_bind_value(ins, i + 1, sqlite3_column_value(q, i));
    ok = sqlite3_step(ins) == SQLITE_DONE;
    sqlite3_reset(ins);
  }
  sqlite3_finalize(q);
  sqlite3_finalize(ins);
  return ok;
}

static int known_difference(const char *bft_out) {
  return strstr(bft_out, "moved a row onto a key that the same statement") != NULL;
}

int main(int argc, char **argv) {
  const char *so = argc > 1 ? argv[1] : "./bftree.so";
  const char *env = getenv("BF_TEST_SEED");
  uint64_t seed;
  if (env && *env) {
    seed = strtoull(env, NULL, 0);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 20);
  }
  const char *e_ops = getenv("BF_DIFFTEST_OPS");
  int nops = e_ops && *e_ops ? atoi(e_ops) : 1200;
  int verbose = getenv("BF_DIFFTEST_VERBOSE") != NULL;
  printf("difftest: BF_TEST_SEED=%llu (%d statements per schema)\n",
         (unsigned long long)seed, nops);
  fflush(stdout);
  rng_state = seed;

  /* The test is about SQL semantics, not I/O: prefer a memory file system
  ** (the engine falls back to buffered I/O there), BF_TEST_DIR overrides. */
  const char *parent = getenv("BF_TEST_DIR");
  if (!parent || !*parent) parent = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  char tmpl[600];
  snprintf(tmpl, sizeof tmpl, "%s/bftree-difftest-XXXXXX", parent);
  char *dir = mkdtemp(tmpl);
  if (!dir) {
    perror("mkdtemp");
    return 1;
  }
  static const char *types[] = {"INTEGER", "TEXT", "REAL", "BLOB", "NUMERIC", ""};
  long passed = 0, failed = 0, skipped = 0;
  for (size_t si = 0; si < sizeof types / sizeof types[0]; si++) {
    char path[512], cols[256], sql[1024];
    snprintf(path, sizeof path, "%s/schema%zu.db", dir, si);
    snprintf(cols, sizeof cols, "k %s PRIMARY KEY, a INTEGER, b TEXT, c", types[si]);
    sqlite3 *nat = NULL, *bft = NULL;
    char *err = NULL;
    if (sqlite3_open(":memory:", &nat) != SQLITE_OK || sqlite3_open(path, &bft) != SQLITE_OK) {
      fprintf(stderr, "difftest: cannot open databases\n");
      return 1;
    }
    sqlite3_enable_load_extension(bft, 1);
    if (sqlite3_load_extension(bft, so, "sqlite3_bftree_init", &err) != SQLITE_OK) {
      fprintf(stderr, "difftest: cannot load %s: %s\n", so, err ? err : "?");
      return 1;
    }
    snprintf(sql, sizeof sql, "CREATE TABLE t(%s) WITHOUT ROWID", cols);
    if (!exec_ok(nat, sql)) return 1;
    snprintf(sql, sizeof sql, "CREATE VIRTUAL TABLE t USING bftree(%s, buffer_size='128KiB')", cols);
    if (!exec_ok(bft, sql)) return 1;
    printf("schema %zu: (%s)\n", si, cols);
    fflush(stdout);

    str stmt = {0}, o1 = {0}, o2 = {0};
    int in_txn = 0, schema_failures = 0;
    size_t max_rows = 0;
    for (int op = 0; op < nops && schema_failures < 5; op++) {
      s_reset(&stmt);
      int full = op % 100 == 99;
      if (full)
        s_add(&stmt, "SELECT * FROM t ORDER BY k");
      else
        gen_statement(&stmt, &in_txn);
      if (verbose) printf("%s\n", stmt.p);
      int sorted = strncmp(stmt.p, "SELECT", 6) == 0 && !strstr(stmt.p, "ORDER BY");
      run(nat, stmt.p, &o1, sorted);
      run(bft, stmt.p, &o2, sorted);
      /* keep the transaction flag in step with what really happened */
      in_txn = !sqlite3_get_autocommit(nat);
      if (full) {
        size_t nl = 0;
        for (size_t i = 0; i < o1.n; i++) nl += o1.p[i] == '\n';
        if (nl > max_rows) max_rows = nl;
      }
      if (strcmp(o1.p, o2.p) == 0) {
        passed++;
        continue;
      }
      if (known_difference(o2.p)) {
        skipped++;
        if (!resync(nat, bft)) return 1;
        continue;
      }
      failed++;
      schema_failures++;
      printf("MISMATCH (schema %zu, statement %d): %s\n--- native:\n%s--- bftree:\n%s",
             si, op, stmt.p, o1.p, o2.p);
      fflush(stdout);
      if (sqlite3_get_autocommit(nat) != sqlite3_get_autocommit(bft)) {
        if (!sqlite3_get_autocommit(nat)) exec_ok(nat, "ROLLBACK");
        if (!sqlite3_get_autocommit(bft)) exec_ok(bft, "ROLLBACK");
      }
      if (!resync(nat, bft)) return 1;
    }
    if (!sqlite3_get_autocommit(nat)) exec_ok(nat, "COMMIT");
    if (!sqlite3_get_autocommit(bft)) exec_ok(bft, "COMMIT");
    /* the integrity check of the tree, and a last full comparison */
    run(bft, "SELECT bftree_check('t')", &o2, 0);
    if (strcmp(o2.p, "t'ok'\n") != 0) {
      failed++;
      printf("MISMATCH (schema %zu): bftree_check: %s", si, o2.p);
    } else {
      passed++;
    }
    run(nat, "SELECT * FROM t ORDER BY k", &o1, 0);
    run(bft, "SELECT * FROM t ORDER BY k", &o2, 0);
    if (strcmp(o1.p, o2.p) == 0) {
      passed++;
    } else {
      failed++;
      printf("MISMATCH (schema %zu): final table contents differ\n", si);
    }
    run(bft, "SELECT value FROM bftree_stat('t') WHERE name = 'leaf_pages'", &o2, 0);
    run(nat, "SELECT count(*) FROM t", &o1, 0);
    if (o1.n) o1.p[o1.n - 1] = 0; /* drop the newlines */
    if (o2.n) o2.p[o2.n - 1] = 0;
    printf("schema %zu: %s rows, %s leaf pages at the end; at most %zu rows\n", si,
           o1.n > 1 ? o1.p + 1 : "?", o2.n > 1 ? o2.p + 1 : "?", max_rows);
    free(stmt.p);
    free(o1.p);
    free(o2.p);
    sqlite3_close(nat);
    sqlite3_close(bft);
  }
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "difftest: could not remove %s\n", dir);
  if (skipped) printf("difftest: %ld statements skipped (known differences)\n", skipped);
  printf("%ld passed, %ld failed\n", passed, failed);
  return failed ? 1 : 0;
}
