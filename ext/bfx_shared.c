/*
** bfx_shared.c: the process-wide registry of open trees.
**
** OWNS: the list of bfx_shared objects, one per data file that some
** connection of this process has open, and the mutex guarding it.  The engine
** must never run twice on one file (it flock()s the file, and a second
** bf_open() in the same process would get BF_BUSY), so every connection that
** uses a table finds the tree through here, keyed by the file's device and
** inode (so two spellings of one path, or a renamed file, still share).
**
** Invariants:
**   1. At most one bfx_shared with dropped == false and temporary == false
**      exists per (dev, ino); lookups only ever return such an entry.
**   2. refs > 0 for every listed entry; the entry whose refs reaches 0 is
**      unlisted and its tree closed while the mutex is held, so a concurrent
**      open of the same file waits instead of seeing BF_BUSY from the flock
**      of the tree being closed.
**   3. A temporary tree's file is unlinked right after bf_open() (opened
**      without a log); its data lives only as long as the tree (bf_abandon
**      at the end: nothing to keep).  A dropped tree's file and its log are
**      unlinked too; the inode may be reused by a new file, which is why
**      invariant 1 excludes it from lookups.
**   4. The engine keeps its write-ahead log beside the data file, at the
**      data file's path + BF_WAL_SUFFIX, and during a checkpoint the log
**      from before it at + BF_WAL_PREV_SUFFIX: drop and rename treat the
**      three together (bf_files_remove, bf_files_rename; an open tree
**      renames its own: bf_rename).
**   5. Writer lock: writer != NULL exactly while one SQL transaction of this
**      process is writing the tree (bftree_vtab.c takes it at a write
**      transaction's first read or write of the table and drops it after
**      xCommit/xRollback); writer_group is then the holder's connection,
**      and another table of that connection over the same file is refused
**      at once instead of waiting for itself.  A waiter first yields the
**      CPU up to WRITER_SPINS times, re-checking under wmutex (holds last a
**      statement's work in memory, ~9 us, and a wake-up from the condition
**      costs as much); then it sleeps on wcond with a deadline on
**      CLOCK_MONOTONIC; unlock signals one waiter.  The lock
**      lives as long as the entry (refs > 0), and nobody holds it when the
**      last reference goes (a holder owns a reference).
**   6. commit_floor starts at the replay limit the tree was opened with (the
**      database's committed transaction number), 0 when there was none.
**
** States of an entry:
**   LISTED (refs > 0) -> DROPPED [bfx_shared_drop] -> closed [release]
**   LISTED -> closed [bfx_shared_release, refs 0: bf_close]
** Writer lock: FREE -> HELD [bfx_shared_writer_lock] -> FREE [unlock];
** poisoned is never cleared (the entry goes away with its last reference).
*/
#include "bfx_int.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static bfx_shared *registry; /* protected by registry_mutex */

/* A malloc()ed printf, or NULL on OOM. */
static char *msg_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

static bfx_shared *find_locked(dev_t dev, ino_t ino) {
  for (bfx_shared *s = registry; s; s = s->next)
    if (!s->dropped && !s->temporary && s->dev == dev && s->ino == ino)
      return s;
  return NULL;
}

/* Initialise the writer lock of s; false when the system refuses. */
static bool writer_lock_init(bfx_shared *s) {
  pthread_condattr_t attr;
  if (pthread_condattr_init(&attr) != 0) return false;
  bool ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
            pthread_cond_init(&s->wcond, &attr) == 0;
  pthread_condattr_destroy(&attr);
  if (!ok) return false;
  if (pthread_mutex_init(&s->wmutex, NULL) != 0) {
    pthread_cond_destroy(&s->wcond);
    return false;
  }
  return true;
}

/* Create and list an entry for a freshly opened tree (mutex held). */
static int list_locked(bf_tree *tree, const char *path, const struct stat *st,
                       bool temporary, const bf_options *opts,
                       bfx_shared **out) {
  bfx_shared *s = calloc(1, sizeof *s);
  char *p = strdup(path);
  if (!s || !p || !writer_lock_init(s)) {
    free(s);
    free(p);
    return BF_NOMEM;
  }
  /* invariant 6 */
  s->commit_floor = opts->replay_limit == UINT64_MAX ? 0 : opts->replay_limit;
  s->tree = tree;
  s->dev = st->st_dev;
  s->ino = st->st_ino;
  s->temporary = temporary;
  s->path = p;
  s->refs = 1;
  s->next = registry;
  registry = s;
  *out = s;
  return BF_OK;
}

int bfx_shared_open(const char *path, const bf_options *opts, bool create,
                    bfx_shared **out, char **errmsg) {
  struct stat st;
  bf_tree *tree = NULL;
  int rc;
  *out = NULL;
  *errmsg = NULL;
  pthread_mutex_lock(&registry_mutex);
  if (stat(path, &st) == 0) {
    bfx_shared *s = find_locked(st.st_dev, st.st_ino);
    if (s) {
      s->refs++;
      *out = s;
      pthread_mutex_unlock(&registry_mutex);
      return BF_OK;
    }
  } else if (errno == ENOENT && !create) {
    pthread_mutex_unlock(&registry_mutex);
    *errmsg = msg_printf("data file %s does not exist (moved or deleted?)", path);
    return BF_IOERR;
  }
  bf_options o = *opts;
  o.create = create;
  rc = bf_open(path, &o, &tree, errmsg);
  if (rc == BF_OK) {
    if (stat(path, &st) != 0) {
      *errmsg = msg_printf("%s: cannot stat the data file: %s", path,
                           strerror(errno));
      bf_close(tree);
      rc = BF_IOERR;
    } else {
      rc = list_locked(tree, path, &st, false, opts, out);
      if (rc != BF_OK) bf_close(tree);
    }
  }
  pthread_mutex_unlock(&registry_mutex);
  return rc;
}

int bfx_shared_open_temp(const char *dir, const bf_options *opts,
                         bfx_shared **out, char **errmsg) {
  struct stat st;
  bf_tree *tree = NULL;
  int rc;
  *out = NULL;
  *errmsg = NULL;
  char *path = msg_printf("%s/bftree-temp-XXXXXX", dir);
  if (!path) return BF_NOMEM;
  int fd = mkstemp(path);
  if (fd < 0) {
    *errmsg = msg_printf("cannot create a temporary file in %s: %s", dir,
                         strerror(errno));
    free(path);
    return BF_IOERR;
  }
  if (fstat(fd, &st) != 0) memset(&st, 0, sizeof st);
  close(fd);
  bf_options o = *opts;
  o.create = true;
  pthread_mutex_lock(&registry_mutex);
  rc = bf_open(path, &o, &tree, errmsg);
  if (rc == BF_OK) {
    rc = list_locked(tree, path, &st, true, opts, out);
    if (rc != BF_OK) bf_abandon(tree);
  }
  pthread_mutex_unlock(&registry_mutex);
  unlink(path); /* invariant 3: anonymous from now on */
  free(path);
  return rc;
}

void bfx_shared_ref(bfx_shared *s) {
  pthread_mutex_lock(&registry_mutex);
  s->refs++;
  pthread_mutex_unlock(&registry_mutex);
}

int bfx_shared_release(bfx_shared *s) {
  int rc = BF_OK;
  if (!s) return BF_OK;
  pthread_mutex_lock(&registry_mutex);
  if (--s->refs == 0) {
    for (bfx_shared **pp = &registry; *pp; pp = &(*pp)->next) {
      if (*pp == s) {
        *pp = s->next;
        break;
      }
    }
    /* invariant 2: closed under the mutex */
    if (s->temporary || s->dropped)
      bf_abandon(s->tree);
    else
      rc = bf_close(s->tree);
    pthread_cond_destroy(&s->wcond);
    pthread_mutex_destroy(&s->wmutex);
    free(s->path);
    free(s);
  }
  pthread_mutex_unlock(&registry_mutex);
  return rc;
}

int bfx_shared_drop(bfx_shared *s, char **errmsg) {
  int rc = BF_OK;
  *errmsg = NULL;
  pthread_mutex_lock(&registry_mutex);
  if (!s->temporary && !s->dropped) {
    rc = bf_files_remove(s->path, errmsg);
    if (rc == BF_OK) s->dropped = true;
  }
  pthread_mutex_unlock(&registry_mutex);
  return rc;
}

int bfx_shared_rename(bfx_shared *s, const char *newpath, char **errmsg) {
  int rc;
  *errmsg = NULL;
  char *copy = strdup(newpath);
  if (!copy) return BF_NOMEM;
  pthread_mutex_lock(&registry_mutex);
  rc = s->tree ? bf_rename(s->tree, newpath, errmsg)
               : bf_files_rename(s->path, newpath, errmsg);
  if (rc == BF_OK) {
    free(s->path);
    s->path = copy;
    copy = NULL;
  }
  pthread_mutex_unlock(&registry_mutex);
  free(copy);
  return rc;
}

char *bfx_shared_path(bfx_shared *s) {
  pthread_mutex_lock(&registry_mutex);
  char *p = strdup(s->path);
  pthread_mutex_unlock(&registry_mutex);
  return p;
}

bool bfx_shared_stale(bfx_shared *s, const char *path) {
  struct stat st;
  bool stale;
  pthread_mutex_lock(&registry_mutex);
  if (s->dropped)
    stale = true;
  else if (s->temporary)
    stale = false;
  else
    stale = stat(path, &st) != 0 || st.st_dev != s->dev || st.st_ino != s->ino;
  pthread_mutex_unlock(&registry_mutex);
  return stale;
}

/* ------------------------------------------------------------ writer lock */

#define WRITER_SPINS 20

int bfx_shared_writer_lock(bfx_shared *s, const void *owner, const void *group,
                           int timeout_ms) {
  struct timespec deadline;
  int rc = BF_OK;
  if (timeout_ms > 0) {
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_sec++;
      deadline.tv_nsec -= 1000000000L;
    }
  }
  int spins = 0;
  pthread_mutex_lock(&s->wmutex);
  for (;;) {
    if (s->poisoned) {
      rc = BF_READONLY;
      break;
    }
    if (!s->writer) {
      s->writer = owner; /* invariant 5 */
      s->writer_group = group;
      break;
    }
    if (s->writer_group == group) { /* it would wait for its own group */
      rc = BF_INVALID;
      break;
    }
    if (timeout_ms <= 0) {
      rc = BF_BUSY;
      break;
    }
    if (spins < WRITER_SPINS) {
      /* Holds are short (a statement's work in memory): yield a few times
      ** before sleeping on the condition, whose wake-up costs more. */
      spins++;
      pthread_mutex_unlock(&s->wmutex);
      sched_yield();
      pthread_mutex_lock(&s->wmutex);
      continue;
    }
    int w = pthread_cond_timedwait(&s->wcond, &s->wmutex, &deadline);
    if (w == ETIMEDOUT && s->writer && !s->poisoned) {
      rc = BF_BUSY;
      break;
    }
  }
  pthread_mutex_unlock(&s->wmutex);
  return rc;
}

void bfx_shared_writer_unlock(bfx_shared *s, const void *owner) {
  pthread_mutex_lock(&s->wmutex);
  if (s->writer == owner) {
    s->writer = NULL;
    s->writer_group = NULL;
    pthread_cond_signal(&s->wcond);
  }
  pthread_mutex_unlock(&s->wmutex);
}

void bfx_shared_poison(bfx_shared *s) {
  pthread_mutex_lock(&s->wmutex);
  s->poisoned = true;
  pthread_cond_broadcast(&s->wcond); /* waiters give up at once */
  pthread_mutex_unlock(&s->wmutex);
}
