/*
** bfx_schema.c: the arguments of CREATE VIRTUAL TABLE ... USING bftree(...).
**
** OWNS: splitting the module arguments into column definitions and options,
** validating both, the affinity of a declared type, and where a table's data
** file lives.
**
** ARGUMENTS.  An argument of the form `name = value` (an identifier, then
** '=') is an option; every other argument is a column definition or a table
** constraint, as in CREATE TABLE.  Options:
**
**   NAME         VALUE                                   DEFAULT
**   file         path of the data file (quoted or bare)  beside the database
**   buffer_size  bytes, units B K KB KiB M MB MiB G GB   32MiB
**                GiB (all binary: K = KiB = 1024)
**   page_size    power of two, 512 .. 32768              4096
**   synchronous  off | normal | full: syncing of the      full
**                engine's log at each commit, as SQLite's
**                PRAGMA synchronous (bf_options.synchronous)
**   wal_size_limit  bytes (units as buffer_size), at      64MiB
**                least 64KiB: the log size past which the
**                next commit checkpoints
**
** COLUMNS.  The definitions are handed to SQLite itself (CREATE TABLE in a
** private in-memory database) so that names, types and constraints are
** parsed exactly as SQLite parses them; then PRAGMA table_xinfo reads them
** back.  Refused, because a virtual table could not enforce them the way a
** native table does: CHECK, UNIQUE, REFERENCES / FOREIGN KEY, ON CONFLICT
** clauses, DEFAULT (SQLite passes NULL for an omitted column of a virtual
** table, so a default could not be told from an explicit NULL), generated
** columns, more than one PRIMARY KEY column, and a collation other than
** BINARY on the key.  NOT NULL is enforced by the module; COLLATE on other
** columns is applied by SQLite.
** No column at all means (key PRIMARY KEY, value).  No PRIMARY KEY means the
** first column is the key.
**
** Invariant: declare_sql is accepted by sqlite3_declare_vtab() and declares
** exactly ncol columns, of which key_col is the single PRIMARY KEY, WITHOUT
** ROWID.
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include "bfx_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- affinity */

int bfx_affinity_of(const char *zType) {
  if (!zType || !zType[0]) return BFX_AFF_BLOB;
  /* The last four characters seen, lower-cased, as a big-endian word; the
  ** first match of INT wins outright; CHAR/CLOB/TEXT beat BLOB, REAL, FLOA
  ** and DOUB; BLOB beats REAL... (the order of sqlite3AffinityType()). */
  uint32_t h = 0;
  int aff = BFX_AFF_NUMERIC;
#define W4(a, b, c, d) \
  (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (uint32_t)(d))
  for (const unsigned char *p = (const unsigned char *)zType; *p; p++) {
    h = (h << 8) | (uint32_t)tolower(*p);
    if (h == W4('c', 'h', 'a', 'r') || h == W4('c', 'l', 'o', 'b') ||
        h == W4('t', 'e', 'x', 't')) {
      aff = BFX_AFF_TEXT;
    } else if (h == W4('b', 'l', 'o', 'b') &&
               (aff == BFX_AFF_NUMERIC || aff == BFX_AFF_REAL)) {
      aff = BFX_AFF_BLOB;
    } else if ((h == W4('r', 'e', 'a', 'l') || h == W4('f', 'l', 'o', 'a') ||
                h == W4('d', 'o', 'u', 'b')) &&
               aff == BFX_AFF_NUMERIC) {
      aff = BFX_AFF_REAL;
    } else if ((h & 0x00ffffffu) == W4(0, 'i', 'n', 't')) {
      aff = BFX_AFF_INTEGER;
      break;
    }
  }
#undef W4
  return aff;
}

/* --------------------------------------------------------------- options */

static const char *skip_space(const char *p) {
  while (*p && isspace((unsigned char)*p)) p++;
  return p;
}

/* If arg is `identifier = value`, return the length of the identifier and
** set *value to the text after '='; otherwise 0. */
static size_t option_name_len(const char *arg, const char **value) {
  const char *p = skip_space(arg);
  const char *start = p;
  if (!(isalpha((unsigned char)*p) || *p == '_')) return 0;
  while (isalnum((unsigned char)*p) || *p == '_') p++;
  size_t n = (size_t)(p - start);
  p = skip_space(p);
  if (*p != '=') return 0;
  *value = p + 1;
  return n;
}

/* The option value, trimmed and dequoted ('..', "..", `..`, [..]). */
static char *dequote_value(const char *v) {
  v = skip_space(v);
  size_t n = strlen(v);
  while (n && isspace((unsigned char)v[n - 1])) n--;
  char *out = sqlite3_malloc64(n + 1);
  if (!out) return NULL;
  char q = n >= 2 ? v[0] : 0;
  char qe = q == '[' ? ']' : q;
  if ((q == '\'' || q == '"' || q == '`' || q == '[') && v[n - 1] == qe) {
    size_t j = 0;
    for (size_t i = 1; i + 1 < n; i++) {
      out[j++] = v[i];
      if (v[i] == qe && q != '[' && i + 2 < n && v[i + 1] == qe) i++;
    }
    out[j] = 0;
  } else {
    memcpy(out, v, n);
    out[n] = 0;
  }
  return out;
}

static bool parse_size(const char *z, uint64_t *out) {
  const char *p = skip_space(z);
  if (!isdigit((unsigned char)*p)) return false;
  uint64_t v = 0;
  while (isdigit((unsigned char)*p)) {
    if (v > (UINT64_MAX - 9) / 10) return false;
    v = v * 10 + (uint64_t)(*p - '0');
    p++;
  }
  p = skip_space(p);
  static const struct {
    const char *unit;
    int shift;
  } units[] = {{"", 0},    {"b", 0},    {"k", 10},  {"kb", 10}, {"kib", 10},
               {"m", 20},  {"mb", 20},  {"mib", 20}, {"g", 30}, {"gb", 30},
               {"gib", 30}};
  size_t n = strlen(p);
  while (n && isspace((unsigned char)p[n - 1])) n--;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strlen(units[i].unit) == n && sqlite3_strnicmp(p, units[i].unit, (int)n) == 0) {
      if (units[i].shift && v > (UINT64_MAX >> units[i].shift)) return false;
      *out = v << units[i].shift;
      return true;
    }
  }
  return false;
}

#define OPTION_LIST "file, buffer_size, page_size, synchronous, wal_size_limit"
#define OPTION_COUNT 5
#define MIN_WAL_SIZE_LIMIT (64u << 10)
/* What parse_size accepts, for the messages of the size options. */
#define SIZE_FORM                                                          \
  "(a whole number with an optional unit B, K, KB, KiB, M, MB, MiB, G, GB " \
  "or GiB; all binary multiples)"

static int parse_option(bfx_schema *s, const char *arg, size_t nlen,
                        const char *zval, bool seen[OPTION_COUNT],
                        char **pzErr) {
  const char *name = skip_space(arg);
  static const char *const names[OPTION_COUNT] = {
      "file", "buffer_size", "page_size", "synchronous", "wal_size_limit"};
  int which = -1;
  for (int i = 0; i < OPTION_COUNT; i++)
    if (strlen(names[i]) == nlen && sqlite3_strnicmp(name, names[i], (int)nlen) == 0)
      which = i;
  if (which < 0) {
    *pzErr = sqlite3_mprintf("bftree: unknown option \"%.*s\" (options are "
                             OPTION_LIST ")", (int)nlen, name);
    return SQLITE_ERROR;
  }
  if (seen[which]) {
    *pzErr = sqlite3_mprintf("bftree: option %s given twice", names[which]);
    return SQLITE_ERROR;
  }
  seen[which] = true;
  char *v = dequote_value(zval);
  if (!v) return SQLITE_NOMEM;
  int rc = SQLITE_OK;
  switch (which) {
    case 0:
      if (!v[0]) {
        *pzErr = sqlite3_mprintf("bftree: bad file '': give the path of the "
                                 "table's data file");
        rc = SQLITE_ERROR;
      } else {
        s->file = v;
        v = NULL;
      }
      break;
    case 1: {
      uint64_t sz;
      if (!parse_size(v, &sz) || sz == 0) {
        *pzErr = sqlite3_mprintf(
            "bftree: bad buffer_size '%s': give a size such as '64MiB' "
            SIZE_FORM, v);
        rc = SQLITE_ERROR;
      } else {
        s->buffer_size = sz;
      }
      break;
    }
    case 2: {
      char *end;
      long ps = strtol(v, &end, 10);
      if (end == v || *skip_space(end) || ps < 512 || ps > 32768 ||
          (ps & (ps - 1))) {
        *pzErr = sqlite3_mprintf("bftree: bad page_size '%s': give a power of "
                                 "two from 512 to 32768", v);
        rc = SQLITE_ERROR;
      } else {
        s->page_size = (uint32_t)ps;
      }
      break;
    }
    case 4: {
      uint64_t sz;
      if (!parse_size(v, &sz) || sz < MIN_WAL_SIZE_LIMIT) {
        *pzErr = sqlite3_mprintf(
            "bftree: bad wal_size_limit '%s': give a size of at least 64KiB, "
            "such as '256MiB' " SIZE_FORM, v);
        rc = SQLITE_ERROR;
      } else {
        s->wal_size_limit = sz;
      }
      break;
    }
    default:
      if (sqlite3_stricmp(v, "off") == 0)
        s->synchronous = BFX_SYNC_OFF;
      else if (sqlite3_stricmp(v, "normal") == 0)
        s->synchronous = BFX_SYNC_NORMAL;
      else if (sqlite3_stricmp(v, "full") == 0)
        s->synchronous = BFX_SYNC_FULL;
      else {
        *pzErr = sqlite3_mprintf("bftree: bad synchronous '%s': give off, "
                                 "normal or full", v);
        rc = SQLITE_ERROR;
      }
      break;
  }
  sqlite3_free(v);
  return rc;
}

/* ------------------------------------------------------- column checks */

/* Scan SQL text for bare keywords that the module refuses (outside string
** literals and quoted identifiers).  Returns the message or NULL. */
static const char *refused_keyword(const char *sql) {
  const char *p = sql;
  char prev[16] = "";
  while (*p) {
    char c = *p;
    if (c == '\'' || c == '"' || c == '`' || c == '[') {
      char e = c == '[' ? ']' : c;
      p++;
      while (*p) {
        if (*p == e) {
          if (e != ']' && p[1] == e) {
            p += 2;
            continue;
          }
          break;
        }
        p++;
      }
      if (*p) p++;
      prev[0] = 0;
      continue;
    }
    if (c == '-' && p[1] == '-') {
      while (*p && *p != '\n') p++;
      continue;
    }
    if (c == '/' && p[1] == '*') {
      const char *e = strstr(p + 2, "*/");
      p = e ? e + 2 : p + strlen(p);
      continue;
    }
    if (isalpha((unsigned char)c) || c == '_') {
      const char *s = p;
      while (isalnum((unsigned char)*p) || *p == '_' || *p == '$') p++;
      size_t n = (size_t)(p - s);
      char w[16];
      if (n < sizeof w) {
        for (size_t i = 0; i < n; i++) w[i] = (char)toupper((unsigned char)s[i]);
        w[n] = 0;
      } else {
        w[0] = 0;
      }
      if (!strcmp(w, "CHECK")) return "CHECK constraints are not supported";
      if (!strcmp(w, "UNIQUE"))
        return "UNIQUE constraints are not supported (only the PRIMARY KEY is unique)";
      if (!strcmp(w, "REFERENCES") || !strcmp(w, "FOREIGN"))
        return "foreign keys are not supported";
      if (!strcmp(w, "DEFAULT"))
        return "DEFAULT values are not supported (SQLite does not apply them "
               "to virtual tables)";
      if (!strcmp(w, "CONFLICT") && !strcmp(prev, "ON"))
        return "ON CONFLICT clauses in column definitions are not supported "
               "(use INSERT OR ... / UPDATE OR ...)";
      memcpy(prev, w, sizeof prev);
      continue;
    }
    if (!isspace((unsigned char)c)) prev[0] = 0;
    p++;
  }
  return NULL;
}

void bfx_schema_free(bfx_schema *s) {
  if (!s) return;
  for (int i = 0; i < s->ncol; i++) {
    if (s->names) sqlite3_free(s->names[i]);
    if (s->types) sqlite3_free(s->types[i]);
  }
  sqlite3_free(s->names);
  sqlite3_free(s->types);
  sqlite3_free(s->affinity);
  sqlite3_free(s->notnull);
  sqlite3_free(s->declare_sql);
  sqlite3_free(s->file);
  sqlite3_free(s);
}

/* Run the column definitions through a private database.  defs is the
** comma-joined column definitions. */
static int analyse_columns(bfx_schema *s, const char *zTable, const char *defs,
                           char **pzErr) {
  sqlite3 *scratch = NULL;
  sqlite3_stmt *st = NULL;
  char *sql = NULL;
  int rc = sqlite3_open_v2(":memory:", &scratch,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (rc != SQLITE_OK) goto done;
  /* The scratch tables carry the real name, for SQLite's messages. */
  sql = sqlite3_mprintf("CREATE TABLE \"%w\"(%s)", zTable, defs);
  if (!sql) {
    rc = SQLITE_NOMEM;
    goto done;
  }
  rc = sqlite3_exec(scratch, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    *pzErr = sqlite3_mprintf("bftree: %s", sqlite3_errmsg(scratch));
    rc = SQLITE_ERROR;
    goto done;
  }
  rc = sqlite3_prepare_v2(scratch,
                          "SELECT name, type, \"notnull\", pk, hidden "
                          "FROM pragma_table_xinfo(?1) ORDER BY cid",
                          -1, &st, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 1, zTable, -1, SQLITE_STATIC);
  if (rc != SQLITE_OK) goto done;
  int cap = 8, n = 0, npk = 0, pk = -1;
  s->names = sqlite3_malloc64(sizeof(char *) * (size_t)cap);
  s->types = sqlite3_malloc64(sizeof(char *) * (size_t)cap);
  s->notnull = sqlite3_malloc64(sizeof(bool) * (size_t)cap);
  if (!s->names || !s->types || !s->notnull) {
    rc = SQLITE_NOMEM;
    goto done;
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (n == cap) {
      cap *= 2;
      char **nn = sqlite3_realloc64(s->names, sizeof(char *) * (size_t)cap);
      if (nn) s->names = nn;
      char **tt = sqlite3_realloc64(s->types, sizeof(char *) * (size_t)cap);
      if (tt) s->types = tt;
      bool *bb = sqlite3_realloc64(s->notnull, sizeof(bool) * (size_t)cap);
      if (bb) s->notnull = bb;
      if (!nn || !tt || !bb) {
        rc = SQLITE_NOMEM;
        goto done;
      }
    }
    const char *name = (const char *)sqlite3_column_text(st, 0);
    const char *type = (const char *)sqlite3_column_text(st, 1);
    s->names[n] = sqlite3_mprintf("%s", name ? name : "");
    s->types[n] = sqlite3_mprintf("%s", type ? type : "");
    s->notnull[n] = sqlite3_column_int(st, 2) != 0;
    s->ncol = ++n;
    if (!s->names[n - 1] || !s->types[n - 1]) {
      rc = SQLITE_NOMEM;
      goto done;
    }
    if (sqlite3_column_int(st, 3) > 0) {
      npk++;
      pk = n - 1;
    }
    if (sqlite3_column_int(st, 4) != 0) {
      *pzErr = sqlite3_mprintf("bftree: generated column %s is not supported",
                               name);
      rc = SQLITE_ERROR;
      goto done;
    }
  }
  if (rc != SQLITE_DONE) goto done;
  rc = SQLITE_OK;
  sqlite3_finalize(st);
  st = NULL;
  if (npk > 1) {
    *pzErr = sqlite3_mprintf("bftree: exactly one PRIMARY KEY column is "
                             "allowed, found %d", npk);
    rc = SQLITE_ERROR;
    goto done;
  }
  s->key_col = pk >= 0 ? pk : 0;
  s->affinity = sqlite3_malloc64((size_t)n);
  if (!s->affinity) {
    rc = SQLITE_NOMEM;
    goto done;
  }
  for (int i = 0; i < n; i++) s->affinity[i] = (char)bfx_affinity_of(s->types[i]);

  /* The declared table: WITHOUT ROWID, the key marked. */
  if (pk >= 0)
    s->declare_sql = sqlite3_mprintf("CREATE TABLE x(%s) WITHOUT ROWID", defs);
  else
    s->declare_sql = sqlite3_mprintf(
        "CREATE TABLE x(%s, PRIMARY KEY(\"%w\")) WITHOUT ROWID", defs,
        s->names[0]);
  if (!s->declare_sql) {
    rc = SQLITE_NOMEM;
    goto done;
  }
  sqlite3_free(sql);
  /* Validate the WITHOUT ROWID form too (AUTOINCREMENT, ...). */
  sql = pk >= 0 ? sqlite3_mprintf("DROP TABLE \"%w\"; CREATE TABLE \"%w\"(%s) "
                                  "WITHOUT ROWID", zTable, zTable, defs)
                : sqlite3_mprintf("DROP TABLE \"%w\"; CREATE TABLE \"%w\"(%s, "
                                  "PRIMARY KEY(\"%w\")) WITHOUT ROWID",
                                  zTable, zTable, defs, s->names[0]);
  if (!sql) {
    rc = SQLITE_NOMEM;
    goto done;
  }
  rc = sqlite3_exec(scratch, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    *pzErr = sqlite3_mprintf("bftree: %s", sqlite3_errmsg(scratch));
    rc = SQLITE_ERROR;
    goto done;
  }
  const char *coll = NULL;
  rc = sqlite3_table_column_metadata(scratch, "main", zTable, s->names[s->key_col],
                                     NULL, &coll, NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    *pzErr = sqlite3_mprintf("bftree: %s", sqlite3_errmsg(scratch));
    rc = SQLITE_ERROR;
    goto done;
  }
  if (coll && sqlite3_stricmp(coll, "BINARY") != 0) {
    *pzErr = sqlite3_mprintf("bftree: the PRIMARY KEY column %s has collation "
                             "%s; only BINARY is supported for the key",
                             s->names[s->key_col], coll);
    rc = SQLITE_ERROR;
    goto done;
  }
done:
  if (rc == SQLITE_NOMEM && !*pzErr) *pzErr = sqlite3_mprintf("out of memory");
  sqlite3_finalize(st);
  sqlite3_free(sql);
  sqlite3_close(scratch);
  return rc;
}

int bfx_schema_parse(int argc, const char *const *argv, bfx_schema **out,
                     char **pzErr) {
  bool seen[OPTION_COUNT] = {false};
  int rc = SQLITE_OK;
  *out = NULL;
  bfx_schema *s = sqlite3_malloc64(sizeof *s);
  if (!s) return SQLITE_NOMEM;
  memset(s, 0, sizeof *s);
  s->buffer_size = BFX_DEFAULT_BUFFER_SIZE;
  s->page_size = BFX_DEFAULT_PAGE_SIZE;
  s->synchronous = BFX_SYNC_FULL; /* as SQLite's own default */
  sqlite3_str *defs = sqlite3_str_new(NULL);
  int ndefs = 0;
  for (int i = 3; i < argc && rc == SQLITE_OK; i++) {
    const char *val = NULL;
    size_t nlen = option_name_len(argv[i], &val);
    if (nlen) {
      rc = parse_option(s, argv[i], nlen, val, seen, pzErr);
    } else {
      const char *msg = refused_keyword(argv[i]);
      if (msg) {
        *pzErr = sqlite3_mprintf("bftree: %s", msg);
        rc = SQLITE_ERROR;
      }
      if (ndefs++) sqlite3_str_appendall(defs, ", ");
      sqlite3_str_appendall(defs, argv[i]);
    }
  }
  if (rc == SQLITE_OK && ndefs == 0) sqlite3_str_appendall(defs, "key PRIMARY KEY, value");
  char *zDefs = sqlite3_str_finish(defs);
  if (rc == SQLITE_OK && !zDefs) rc = SQLITE_NOMEM;
  /* The engine checks that the buffer holds at least 16 pages (its message
  ** names buffer_size and the minimum). */
  if (rc == SQLITE_OK) rc = analyse_columns(s, argc > 2 ? argv[2] : "x", zDefs, pzErr);
  sqlite3_free(zDefs);
  if (rc != SQLITE_OK) {
    if (rc == SQLITE_NOMEM && !*pzErr) *pzErr = sqlite3_mprintf("out of memory");
    bfx_schema_free(s);
    return rc;
  }
  *out = s;
  return SQLITE_OK;
}

/* ------------------------------------------------------------- paths */

const char *bfx_temp_dir(void) {
  const char *d = getenv("SQLITE_TMPDIR");
  if (!d || !*d) d = getenv("TMPDIR");
  if (!d || !*d) d = "/tmp";
  return d;
}

char *bfx_data_path(sqlite3 *db, const char *zDb, const char *zTable,
                    const char *file_opt, bool *is_temp) {
  const char *dbfile = sqlite3_db_filename(db, zDb);
  bool has_db_file = dbfile && dbfile[0];
  *is_temp = false;
  if (file_opt) {
    if (file_opt[0] == '/' || !has_db_file) return sqlite3_mprintf("%s", file_opt);
    const char *slash = strrchr(dbfile, '/');
    if (!slash) return sqlite3_mprintf("%s", file_opt);
    return sqlite3_mprintf("%.*s/%s", (int)(slash - dbfile), dbfile, file_opt);
  }
  if (!has_db_file) {
    *is_temp = true;
    return NULL;
  }
  sqlite3_str *p = sqlite3_str_new(NULL);
  sqlite3_str_appendf(p, "%s-", dbfile);
  for (const unsigned char *c = (const unsigned char *)zTable; *c; c++) {
    if (isalnum(*c) || *c == '_' || *c == '-' || *c == '.' || *c >= 0x80)
      sqlite3_str_appendchar(p, 1, (char)*c);
    else
      sqlite3_str_appendf(p, "%%%02X", *c);
  }
  sqlite3_str_appendall(p, ".bftree");
  return sqlite3_str_finish(p);
}
