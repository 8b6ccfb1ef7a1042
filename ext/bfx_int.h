/*
** bfx_int.h: internal interfaces of the bftree SQLite extension (ext/).
**
** Files:
**   bfx_codec.c    key and record encodings (pure C; bfx_codec.h)
**   bfx_shared.c   the process-wide registry of open trees (no SQLite)
**   bfx_schema.c   module arguments: options, column definitions, affinity,
**                  data file paths
**   bftree_vtab.c  the `bftree` virtual-table module and the entry point
**   bfx_stat.c     the bftree_stat table-valued function and bftree_check()
**
** Ownership: one bfx_shared per open data file in the process (reference
** counted, guarded by the registry mutex); one bfx_conn per database
** connection that loaded the extension (reference counted by the module, the
** helper functions and every bfx_vtab of that connection); one bfx_entry per
** bftree table the connection has used, holding the connection's reference
** to the table's bfx_shared until DROP TABLE or connection close.
*/
#ifndef BFX_INT_H
#define BFX_INT_H

#include "bftree.h"
#include "bfx_codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

/* ========================================================================
** bfx_shared.c: one open tree per data file, shared by the connections of
** the process.
*/
typedef struct bfx_shared {
  bf_tree *tree;        /* immutable while refs > 0 */
  dev_t dev;            /* identity of the data file (immutable) */
  ino_t ino;
  bool temporary;       /* anonymous file, already unlinked: never found by
                        ** lookup, abandoned (not written) at last release */
  /* The writer lock: one writing transaction per tree in the process.
  ** Protected by wmutex (waiters sleep on wcond). */
  pthread_mutex_t wmutex;
  pthread_cond_t wcond;
  const void *writer;   /* the holder's token, NULL when free */
  const void *writer_group; /* the holder's group (its connection) */
  bool poisoned;        /* a prepared transaction could not be aborted: the
                        ** log may still hold it; writes are refused until
                        ** the tree is reopened */
  /* Read and written only by the writer-lock holder. */
  uint64_t commit_floor; /* commit ids handed out are above this: the
                        ** database's committed number at open, then each
                        ** id prepared (see bftree_vtab.c, TRANSACTIONS) */
  /* Protected by the registry mutex. */
  char *path;           /* current path (changes on rename) */
  int refs;
  bool dropped;         /* unlinked by DROP TABLE: not found by lookup */
  struct bfx_shared *next;
} bfx_shared;

/*
** Open the tree of the data file at path, or take a new reference to the
** tree this process already has open on that file (same device and inode).
** create: make the file when it does not exist (otherwise a missing file is
** BF_IOERR with a message saying so).  A fresh open whose log still holds
** records after recovery is checkpointed once (an engine workaround, see
** reset_covered_log in bfx_shared.c).  On error *out is NULL and *errmsg
** a malloc()ed message (free()).  Statuses are those of bf_open().
*/
int bfx_shared_open(const char *path, const bf_options *opts, bool create,
                    bfx_shared **out, char **errmsg);

/* Open a new anonymous tree in a temporary file in directory dir; the file
** is unlinked at once.  Errors as bfx_shared_open(). */
int bfx_shared_open_temp(const char *dir, const bf_options *opts,
                         bfx_shared **out, char **errmsg);

/* Take one more reference to s (the caller holds one already). */
void bfx_shared_ref(bfx_shared *s);

/* Drop one reference; the last one closes the tree (bf_close, or
** bf_abandon for a temporary or dropped file).  Returns the close status. */
int bfx_shared_release(bfx_shared *s);

/*
** The writer lock of s for owner (any non-NULL token; the lock is not
** recursive) of group (the owner's connection: its owners run on one
** thread at a time, so one of them never waits for another).  Waits up to
** timeout_ms milliseconds (0: do not wait).  Returns BF_OK (held), BF_BUSY
** (timed out), BF_INVALID at once when an owner of the same group holds it,
** or BF_READONLY when s is poisoned (the lock is not taken).  Each BF_OK is
** paired with one bfx_shared_writer_unlock().
*/
int bfx_shared_writer_lock(bfx_shared *s, const void *owner, const void *group,
                           int timeout_ms);
void bfx_shared_writer_unlock(bfx_shared *s, const void *owner);
/* Mark s poisoned (see the field); the caller holds the writer lock. */
void bfx_shared_poison(bfx_shared *s);

/* DROP TABLE: unlink the data file and hide the tree from lookups; the tree
** stays usable by its holders until released.  Returns BF_OK or BF_IOERR
** (message in *errmsg) when the file could not be removed. */
int bfx_shared_drop(bfx_shared *s, char **errmsg);

/* Rename the data file of s to newpath (fails, changing nothing, when
** newpath exists).  BF_OK or BF_IOERR/BF_INVALID with a message. */
int bfx_shared_rename(bfx_shared *s, const char *newpath, char **errmsg);

/* A copy of the current path (malloc()ed), or NULL on OOM. */
char *bfx_shared_path(bfx_shared *s);

/* True when s is stale for path: dropped, or path now names another file. */
bool bfx_shared_stale(bfx_shared *s, const char *path);

/* ========================================================================
** bfx_schema.c: module arguments.
*/

/* Column affinities (the letters SQLite uses internally). */
enum bfx_affinity {
  BFX_AFF_BLOB = 'A',
  BFX_AFF_TEXT = 'B',
  BFX_AFF_NUMERIC = 'C',
  BFX_AFF_INTEGER = 'D',
  BFX_AFF_REAL = 'E'
};

/* The affinity SQLite gives a column of declared type zType (NULL or "" for
** no type), by the rules of sqlite3AffinityType(). */
int bfx_affinity_of(const char *zType);

enum bfx_sync { BFX_SYNC_OFF = 0, BFX_SYNC_NORMAL = 1, BFX_SYNC_FULL = 2 };

#define BFX_DEFAULT_BUFFER_SIZE (UINT64_C(32) << 20)
#define BFX_DEFAULT_PAGE_SIZE 4096

/* A parsed CREATE VIRTUAL TABLE ... USING bftree(...). */
typedef struct bfx_schema {
  int ncol;
  char **names;          /* [ncol] column names */
  char **types;          /* [ncol] declared types ("" when none) */
  char *affinity;        /* [ncol] enum bfx_affinity */
  bool *notnull;         /* [ncol] NOT NULL declared */
  int key_col;           /* the PRIMARY KEY column */
  char *declare_sql;     /* for sqlite3_declare_vtab() */
  /* options */
  char *file;            /* file= as given (NULL: default path) */
  uint64_t buffer_size;
  uint32_t page_size;
  int synchronous;       /* enum bfx_sync */
  uint64_t wal_size_limit; /* 0: the engine's default */
} bfx_schema;

/* Parse the module arguments argv[3..argc) (argv as given to xCreate).
** Uses a private in-memory database to let SQLite itself validate the column
** definitions.  On error returns an SQLite code and sets *pzErr (sqlite3_
** malloc()ed).  On success the caller frees *out with bfx_schema_free(). */
int bfx_schema_parse(int argc, const char *const *argv, bfx_schema **out,
                     char **pzErr);
void bfx_schema_free(bfx_schema *s);

/* The data file of table zTable in schema zDb of connection db:
**   - file= given: that path, relative paths resolved against the directory
**     of the database file (the current directory for in-memory and
**     temporary databases);
**   - otherwise "<database file>-<table>.bftree" beside the database file,
**     the table name with bytes other than [A-Za-z0-9_.-] and UTF-8 written
**     as %XX.
** Returns an sqlite3_malloc()ed path, or NULL with *is_temp set when the
** table needs an anonymous temporary file (in-memory or temporary database
** and no file=).  NULL with *is_temp clear means out of memory. */
struct sqlite3;
char *bfx_data_path(struct sqlite3 *db, const char *zDb, const char *zTable,
                    const char *file_opt, bool *is_temp);

/* The directory for anonymous temporary files. */
const char *bfx_temp_dir(void);

/* ========================================================================
** bftree_vtab.c and bfx_stat.c.
*/

typedef struct bfx_entry bfx_entry;
typedef struct bfx_conn bfx_conn;

/* Per-connection state. */
struct bfx_conn {
  struct sqlite3 *db;
  int refs;              /* module + helper functions + each bfx_vtab */
  bfx_entry *entries;    /* tables this connection has used */
  int writers;           /* bfx_vtabs of this connection holding their
                         ** tree's writer lock (in a write transaction) */
};

struct bfx_entry {
  char *zDb;             /* schema name ("main", "temp", attached name) */
  char *zName;           /* table name */
  bfx_shared *shared;    /* the connection's reference; NULL until opened */
  char *path;            /* the data file (NULL: anonymous temporary) */
  bool temporary;
  bf_options opts;       /* engine options from the module arguments */
  struct bfx_entry *next;
};

void bfx_conn_ref(bfx_conn *c);
void bfx_conn_unref(bfx_conn *c);
/* The entry of table zDb.zName (zDb NULL: any schema, main first). */
bfx_entry *bfx_conn_find(bfx_conn *c, const char *zDb, const char *zName);

/*
** Make sure e->shared is open (opening the data file on first use, with the
** replay limit read from the table's shadow table through c->db).
** Returns an SQLite code; on error *pzErr is an sqlite3_malloc()ed message.
*/
int bfx_entry_open(bfx_conn *c, bfx_entry *e, char **pzErr);

/* Map an engine status to an SQLite result code (one to one). */
int bfx_sqlite_rc(int bf_status);

/* Register bftree_stat and bftree_check on db; returns an SQLite code. */
int bfx_stat_register(struct sqlite3 *db, bfx_conn *conn);

/* Find (connecting it when needed) the bftree table named zArg ("table" or
** "schema.table") in conn; on error returns an SQLite code and sets *pzErr. */
int bfx_lookup_table(bfx_conn *conn, const char *zArg, bfx_entry **out,
                     char **pzErr);

/* The entry point (also declared by bftree.def). */
struct sqlite3_api_routines;
int sqlite3_bftree_init(struct sqlite3 *db, char **pzErrMsg,
                        const struct sqlite3_api_routines *pApi);

#endif /* BFX_INT_H */
