/*
** bfx_stat.c: SQL access to a table's engine statistics and integrity check.
**
** USAGE
**   SELECT * FROM bftree_stat('t');          -- name, value rows
**   SELECT value FROM bftree_stat('t') WHERE name = 'leaf_pages';
**   SELECT bftree_check('t');                -- 'ok' or the first problem
**   SELECT bftree_checkpoint('t');           -- 'ok': merged, log emptied
**
** bftree_stat is an eponymous-only table-valued function with the hidden
** column tbl (the table name, optionally "schema.table").  Its rows are the
** fields of bf_stats (one row per mini-page size class for the arrays, named
** mini_pages_<bytes>), then file, max_key_size and max_record_size.
** bftree_check(name) runs bf_check() on the table's tree;
** bftree_checkpoint(name) bf_checkpoint_nowait().
**
** A table that this connection has not used yet is connected first by
** preparing a statement that names it.  All are DIRECTONLY: they use the
** file system, so they may not run from triggers or views.
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include "bfx_int.h"

#include <stdlib.h>
#include <string.h>

int bfx_lookup_table(bfx_conn *conn, const char *zArg, bfx_entry **out,
                     char **pzErr) {
  *out = NULL;
  const char *dot = strchr(zArg, '.');
  bfx_entry *e = bfx_conn_find(conn, NULL, zArg);
  char *schema = dot ? sqlite3_mprintf("%.*s", (int)(dot - zArg), zArg) : NULL;
  if (dot && !schema) return SQLITE_NOMEM;
  if (!e && dot) e = bfx_conn_find(conn, schema, dot + 1);
  if (!e) {
    /* Connect it: preparing a statement that names the table calls xConnect. */
    char *sql = sqlite3_mprintf("SELECT 1 FROM \"%w\"", zArg);
    sqlite3_stmt *st = NULL;
    int rc = sql ? sqlite3_prepare_v2(conn->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    sqlite3_finalize(st);
    if (rc != SQLITE_OK && dot) {
      sql = sqlite3_mprintf("SELECT 1 FROM \"%w\".\"%w\"", schema, dot + 1);
      rc = sql ? sqlite3_prepare_v2(conn->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
      sqlite3_free(sql);
      sqlite3_finalize(st);
    }
    e = bfx_conn_find(conn, NULL, zArg);
    if (!e && dot) e = bfx_conn_find(conn, schema, dot + 1);
  }
  sqlite3_free(schema);
  if (!e) {
    *pzErr = sqlite3_mprintf("no bftree table named %s", zArg);
    return SQLITE_ERROR;
  }
  int rc = bfx_entry_open(conn, e, pzErr);
  if (rc == SQLITE_OK) *out = e;
  return rc;
}

/* ------------------------------------------------------------ bftree_stat */

typedef struct stat_vtab {
  sqlite3_vtab base; /* Base class. Must be first */
  bfx_conn *conn;    /* a reference */
} stat_vtab;

typedef struct stat_row {
  char *name;
  sqlite3_int64 ival;
  char *sval; /* when not NULL, the value is this text */
} stat_row;

typedef struct stat_cursor {
  sqlite3_vtab_cursor base; /* Base class. Must be first */
  stat_row *rows;
  int n, cap, i;
  char *tbl;
} stat_cursor;

static int statConnect(sqlite3 *db, void *pAux, int argc,
                       const char *const *argv, sqlite3_vtab **ppVtab,
                       char **pzErr) {
  (void)argc;
  (void)argv;
  (void)pzErr;
  int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(name TEXT, value, tbl HIDDEN)");
  if (rc != SQLITE_OK) return rc;
  sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
  stat_vtab *v = sqlite3_malloc64(sizeof *v);
  if (!v) return SQLITE_NOMEM;
  memset(v, 0, sizeof *v);
  v->conn = (bfx_conn *)pAux;
  bfx_conn_ref(v->conn);
  *ppVtab = &v->base;
  return SQLITE_OK;
}

static int statDisconnect(sqlite3_vtab *tab) {
  stat_vtab *v = (stat_vtab *)tab;
  bfx_conn_unref(v->conn);
  sqlite3_free(v);
  return SQLITE_OK;
}

/* Plan 1: tbl = ? given; plan 0: no table (xFilter reports the error). */
static int statBestIndex(sqlite3_vtab *tab, sqlite3_index_info *info) {
  (void)tab;
  info->idxNum = 0;
  info->estimatedCost = 1e9;
  for (int i = 0; i < info->nConstraint; i++) {
    const struct sqlite3_index_constraint *c = &info->aConstraint[i];
    if (c->iColumn == 2 && c->op == SQLITE_INDEX_CONSTRAINT_EQ && c->usable) {
      info->aConstraintUsage[i].argvIndex = 1;
      info->aConstraintUsage[i].omit = 1;
      info->idxNum = 1;
      info->estimatedCost = 10;
      info->estimatedRows = 50;
      break;
    }
  }
  return SQLITE_OK;
}

static int statOpen(sqlite3_vtab *tab, sqlite3_vtab_cursor **ppCur) {
  (void)tab;
  stat_cursor *c = sqlite3_malloc64(sizeof *c);
  if (!c) return SQLITE_NOMEM;
  memset(c, 0, sizeof *c);
  *ppCur = &c->base;
  return SQLITE_OK;
}

static void stat_reset(stat_cursor *c) {
  for (int i = 0; i < c->n; i++) {
    sqlite3_free(c->rows[i].name);
    sqlite3_free(c->rows[i].sval);
  }
  c->n = 0;
  c->i = 0;
  sqlite3_free(c->tbl);
  c->tbl = NULL;
}

static int statClose(sqlite3_vtab_cursor *cur) {
  stat_cursor *c = (stat_cursor *)cur;
  stat_reset(c);
  sqlite3_free(c->rows);
  sqlite3_free(c);
  return SQLITE_OK;
}

static int add_row(stat_cursor *c, char *name, sqlite3_int64 ival, char *sval) {
  if (!name) {
    sqlite3_free(sval);
    return SQLITE_NOMEM;
  }
  if (c->n == c->cap) {
    int nc = c->cap ? c->cap * 2 : 64;
    stat_row *r = sqlite3_realloc64(c->rows, sizeof *r * (size_t)nc);
    if (!r) {
      sqlite3_free(name);
      sqlite3_free(sval);
      return SQLITE_NOMEM;
    }
    c->rows = r;
    c->cap = nc;
  }
  c->rows[c->n++] = (stat_row){name, ival, sval};
  return SQLITE_OK;
}

#define ADD(field) \
  if (rc == SQLITE_OK) \
    rc = add_row(c, sqlite3_mprintf("%s", #field), (sqlite3_int64)s.field, NULL)

static int statFilter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr,
                      int argc, sqlite3_value **argv) {
  stat_cursor *c = (stat_cursor *)cur;
  stat_vtab *v = (stat_vtab *)cur->pVtab;
  (void)idxStr;
  stat_reset(c);
  if (idxNum != 1 || argc < 1 || sqlite3_value_type(argv[0]) == SQLITE_NULL) {
    sqlite3_free(v->base.zErrMsg);
    v->base.zErrMsg = sqlite3_mprintf(
        "bftree_stat needs a table name: SELECT * FROM bftree_stat('t')");
    return SQLITE_ERROR;
  }
  const char *name = (const char *)sqlite3_value_text(argv[0]);
  c->tbl = sqlite3_mprintf("%s", name ? name : "");
  if (!c->tbl) return SQLITE_NOMEM;
  bfx_entry *e = NULL;
  char *err = NULL;
  int rc = bfx_lookup_table(v->conn, c->tbl, &e, &err);
  if (rc != SQLITE_OK) {
    sqlite3_free(v->base.zErrMsg);
    v->base.zErrMsg = err;
    return rc;
  }
  bf_tree *tree = e->shared->tree;
  bf_stats s;
  bf_stats_get(tree, &s);
  ADD(page_size);
  ADD(buffer_size);
  ADD(buffer_used);
  ADD(buffer_live);
  for (uint32_t i = 0; i < s.size_class_count && i < BF_MAX_SIZE_CLASSES; i++) {
    if (rc == SQLITE_OK)
      rc = add_row(c, sqlite3_mprintf("mini_pages_%u", s.size_class_bytes[i]),
                   (sqlite3_int64)s.mini_pages[i], NULL);
  }
  ADD(full_page_minis);
  ADD(leaf_pages);
  ADD(inner_nodes);
  ADD(tree_height);
  ADD(inner_bytes);
  ADD(mapping_bytes);
  ADD(sketch_bytes);
  ADD(file_pages);
  ADD(free_pages);
  ADD(cache_hits);
  ADD(cache_misses);
  ADD(leaf_reads);
  ADD(leaf_writes);
  ADD(bytes_read);
  ADD(bytes_written);
  ADD(merges);
  ADD(splits);
  ADD(inner_splits);
  ADD(evictions);
  ADD(copy_on_access);
  ADD(buffer_retired);
  ADD(record_promotions);
  ADD(phantoms);
  ADD(admissions_refused);
  ADD(page_promotions);
  ADD(warm_fills);
  ADD(page_shrinks);
  ADD(read_ahead_leaves);
  ADD(read_ahead_dropped);
  ADD(mini_grows);
  ADD(commits);
  ADD(checkpoints);
  ADD(checkpoint_stall_us);
  ADD(wal_bytes);
  ADD(io_mode);
  ADD(direct_io);
  if (rc == SQLITE_OK) {
    char *p = bfx_shared_path(e->shared);
    rc = add_row(c, sqlite3_mprintf("file"), 0,
                 sqlite3_mprintf("%s", e->shared->temporary ? "(temporary)"
                                                            : (p ? p : "")));
    free(p);
  }
  if (rc == SQLITE_OK)
    rc = add_row(c, sqlite3_mprintf("max_key_size"),
                 (sqlite3_int64)bf_max_key_size(tree), NULL);
  if (rc == SQLITE_OK)
    rc = add_row(c, sqlite3_mprintf("max_record_size"),
                 (sqlite3_int64)bf_max_record_size(tree), NULL);
  return rc;
}

static int statNext(sqlite3_vtab_cursor *cur) {
  ((stat_cursor *)cur)->i++;
  return SQLITE_OK;
}

static int statEof(sqlite3_vtab_cursor *cur) {
  stat_cursor *c = (stat_cursor *)cur;
  return c->i >= c->n;
}

static int statColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) {
  stat_cursor *c = (stat_cursor *)cur;
  stat_row *r = &c->rows[c->i];
  if (i == 0)
    sqlite3_result_text(ctx, r->name, -1, SQLITE_TRANSIENT);
  else if (i == 1 && r->sval)
    sqlite3_result_text(ctx, r->sval, -1, SQLITE_TRANSIENT);
  else if (i == 1)
    sqlite3_result_int64(ctx, r->ival);
  else
    sqlite3_result_text(ctx, c->tbl, -1, SQLITE_TRANSIENT);
  return SQLITE_OK;
}

static int statRowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *pRowid) {
  *pRowid = ((stat_cursor *)cur)->i + 1;
  return SQLITE_OK;
}

static sqlite3_module stat_module = {
    .iVersion = 0,
    .xCreate = NULL, /* eponymous-only */
    .xConnect = statConnect,
    .xBestIndex = statBestIndex,
    .xDisconnect = statDisconnect,
    .xDestroy = statDisconnect,
    .xOpen = statOpen,
    .xClose = statClose,
    .xFilter = statFilter, /* gather the statistics of the named table */
    .xNext = statNext,
    .xEof = statEof,
    .xColumn = statColumn,
    .xRowid = statRowid,
};

/* ----------------------------------------------------------- bftree_check */

/* The table named by a function's argument (*name: that name), opened;
** NULL after setting the function's error (no name, no such table, cannot
** be opened). */
static bfx_entry *function_table(sqlite3_context *ctx, sqlite3_value *arg,
                                 const char *function, const char **name_out) {
  bfx_conn *conn = sqlite3_user_data(ctx);
  const char *name = (const char *)sqlite3_value_text(arg);
  *name_out = name;
  if (!name) {
    char *msg = sqlite3_mprintf("%s needs a table name", function);
    sqlite3_result_error(ctx, msg ? msg : "a table name is needed", -1);
    sqlite3_free(msg);
    return NULL;
  }
  bfx_entry *e = NULL;
  char *err = NULL;
  int rc = bfx_lookup_table(conn, name, &e, &err);
  if (rc != SQLITE_OK) {
    sqlite3_result_error(ctx, err ? err : "no such bftree table", -1);
    sqlite3_result_error_code(ctx, rc);
    sqlite3_free(err);
    return NULL;
  }
  return e;
}

static void check_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const char *name;
  bfx_entry *e = function_table(ctx, argv[0], "bftree_check", &name);
  if (!e) return;
  char *msg = NULL;
  int st = bf_check(e->shared->tree, &msg);
  if (st == BF_OK)
    sqlite3_result_text(ctx, "ok", 2, SQLITE_STATIC);
  else
    sqlite3_result_text(ctx, msg ? msg : bf_strerror(st), -1, SQLITE_TRANSIENT);
  free(msg);
}

/* ------------------------------------------------------ bftree_checkpoint */

/* bftree_checkpoint(name): merge the table's buffered writes into its data
** file and empty its log now (as when the log reaches wal_size_limit).
** Returns 'ok'.  Never waits for another connection's commit of the table
** (that commit may be waiting for this statement's database lock):
** SQLITE_BUSY then, to be tried again. */
static void checkpoint_func(sqlite3_context *ctx, int argc,
                            sqlite3_value **argv) {
  (void)argc;
  const char *name;
  bfx_entry *e = function_table(ctx, argv[0], "bftree_checkpoint", &name);
  if (!e) return;
  int st = bf_checkpoint_nowait(e->shared->tree);
  if (st == BF_OK) {
    sqlite3_result_text(ctx, "ok", 2, SQLITE_STATIC);
    return;
  }
  char *msg =
      st == BF_BUSY
          ? sqlite3_mprintf("bftree_checkpoint: table %s: another connection "
                            "is committing a transaction on it; try again",
                            name)
          : sqlite3_mprintf("bftree_checkpoint: table %s: %s", name,
                            bf_strerror(st));
  sqlite3_result_error(ctx, msg ? msg : "bftree_checkpoint failed", -1);
  sqlite3_result_error_code(ctx, bfx_sqlite_rc(st));
  sqlite3_free(msg);
}

static void check_destroy(void *p) { bfx_conn_unref((bfx_conn *)p); }

int bfx_stat_register(sqlite3 *db, bfx_conn *conn) {
  bfx_conn_ref(conn);
  int rc = sqlite3_create_module_v2(db, "bftree_stat", &stat_module, conn,
                                    check_destroy);
  if (rc != SQLITE_OK) return rc;
  bfx_conn_ref(conn);
  rc = sqlite3_create_function_v2(db, "bftree_check", 1,
                                  SQLITE_UTF8 | SQLITE_DIRECTONLY, conn,
                                  check_func, NULL, NULL, check_destroy);
  if (rc != SQLITE_OK) return rc;
  bfx_conn_ref(conn);
  return sqlite3_create_function_v2(db, "bftree_checkpoint", 1,
                                    SQLITE_UTF8 | SQLITE_DIRECTONLY, conn,
                                    checkpoint_func, NULL, NULL, check_destroy);
}
