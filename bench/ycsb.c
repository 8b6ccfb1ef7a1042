/*
** ycsb.c: a YCSB-style benchmark driver running one (engine, workload,
** data set) configuration per process, with every engine behind the same
** adapter interface (ycsb.h).
**
** WORKLOADS (every operation is one autocommit transaction of the engine;
** one client thread, or --threads N, each with its own handle):
**   load  insert every record once, in random key order (record r has key
**         mix64(r), so inserting r = 0, 1, 2, ... is random in key space);
**         creates the data set, measured whole (no warm-up dropped);
**         --load-batch N groups N inserts per transaction (as YCSB's JDBC
**         binding's db.batchsize), each insert timed with its share of the
**         commit falling on the batch's last
**   A     50% read, 50% update           B  95% read, 5% update
**   C     100% read                       E  100% scans of 100 rows
**   F     50% read, 50% read-modify-write W  5% read, 95% update
**   Aput  A with every update an upsert of the whole record: SQL engines
**         INSERT OR REPLACE (a put, which need not find the row) instead of
**         UPDATE ... WHERE k= (which must); the other engines' update is
**         already their put, so for them Aput is A
** Workloads other than load open the data set the load left (the same
** records, so they may run in any order, as YCSB's own runs do).  The record
** an operation uses is chosen by Zipf(theta) over record ranks (rank r is
** record r, whose key is spread over the key space by mix64), or uniformly.
**
** PHASES of a workload run: open; warm-up; measured window; close.  The
** client threads run operations; the main thread watches their counts and
** sets the phase (an operation belongs to the phase it starts in).
**   warm-up   at least --warmup-min seconds, then until the throughput of two
**             consecutive 0.5 s windows differs by less than 10%, at most
**             --warmup-max seconds (then "capped" is reported).  Everything
**             done in it is dropped from latency and throughput.
**   measured  --seconds seconds (or --ops operations, the first reached).
**   close     timed separately (close_s); its writes are charged (below).
**
** FIGURES (one CSV row per run, see csv_header below):
**   ops_per_s          measured operations / measured seconds
**   p50/p99/p999_us    latency of measured operations, from a log-linear
**                      histogram (16 buckets per power of two: <= 6.25% off)
**   read_B_per_op      read_bytes of /proc/self/io over the measured window
**                      / measured operations (bytes the process made the
**                      block layer read: page-cache misses and direct I/O)
**   write_B_per_op     write_bytes - cancelled_write_bytes of /proc/self/io
**                      from after open to after close / all operations of
**                      the run (warm-up included), so that writes deferred
**                      by buffering (flushes, checkpoints at close) are
**                      charged to the operations that caused them
**   write_amp          those bytes / (write operations x (key + value
**                      bytes)); empty for read-only workloads
**   write_amp_window   the same over the measured window alone: bytes
**                      written in it / (its write operations x (key + value
**                      bytes)).  The steady-state rate: it leaves out what
**                      close pays for earlier operations (a final
**                      checkpoint), which write_amp charges to a short run
**   peak_rss_mib       VmHWM of the process (mapped file pages included)
**   peak_cg_mib        memory.max_usage_in_bytes of the process's memory
**                      cgroup (page cache included; the runner resets it)
**   drift              throughput of the 2nd half of the measured window /
**                      the 1st half: near 1.0 means past warm-up
**   errors             reads that found nothing, values that do not belong
**                      to their key, scan rows out of order or wrong
**
** The memory cap itself is the runner's job (run.sh puts this process in a
** memory cgroup); this program reports what it finds: capped = yes when its
** cgroup (or an ancestor) limits memory to at most 105% of the budget.
*/
#include "ycsb.h"
#include "zipf.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ options */

static const char *opt_engine, *opt_workload = "C", *opt_dir, *opt_csv;
static const char *opt_ext = "./bftree.so", *opt_label = "";
static const char *opt_dropped = "unknown", *opt_failure;
static double opt_budget_mib = 64, opt_ratio = 4, opt_share = 50;
static uint64_t opt_records, opt_ops;
static size_t opt_key = 8, opt_value = 100;
static double opt_theta = 0.9;
static int opt_uniform;
static double opt_wmin = 2, opt_wmax = 10, opt_seconds = 10;
static int opt_sql_mode = -1;
static uint64_t opt_seed = 1;
static uint64_t opt_load_batch = 1;
static int opt_threads = 1;

static const ycsb_adapter *const adapters[] = {
    &ycsb_sqlite_sql, &ycsb_sqlite_c, &ycsb_bftree_sql, &ycsb_bftree_sql_prep,
    &ycsb_bftree_c,   &ycsb_rocksdb,  &ycsb_lmdb,       &ycsb_wiredtiger};
#define N_ADAPTERS (sizeof adapters / sizeof adapters[0])

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------ keys, values */

static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

int64_t ycsb_key_to_int(const uint8_t *key) {
  return (int64_t)(get_be64(key) ^ 0x8000000000000000ull);
}

void ycsb_int_to_key(int64_t v, uint8_t *key) {
  put_be64(key, (uint64_t)v ^ 0x8000000000000000ull);
}

static void make_key(uint64_t r, uint8_t *key) {
  put_be64(key, mix64(r));
  if (opt_key == 16) put_be64(key + 8, mix64(r ^ YCSB_KEY2_SALT));
}

static void make_value(uint64_t r, uint64_t version, uint64_t *rng, uint8_t *v) {
  put_le64(v, r);
  put_le64(v + 8, version);
  for (size_t i = 16; i < opt_value; i += 8) {
    uint64_t x = rng_next(rng);
    size_t n = opt_value - i < 8 ? opt_value - i : 8;
    memcpy(v + i, &x, n);
  }
}

/* True when value (len bytes) is a value of record r's key. */
static bool value_ok(const uint8_t *key, const uint8_t *v, size_t len) {
  if (len != opt_value) return false;
  uint64_t r = get_le64(v);
  uint8_t k[16];
  make_key(r, k);
  return memcmp(k, key, opt_key) == 0;
}

void ycsb_scan_row(ycsb_scan_state *st, const uint8_t *key, size_t key_len,
                   const uint8_t *value, size_t value_len) {
  bool bad = key_len != opt_key || !value_ok(key, value, value_len);
  if (st->rows > 0 && !bad) {
    size_t m = st->prev_len < key_len ? st->prev_len : key_len;
    int c = memcmp(st->prev, key, m);
    if (c > 0 || (c == 0 && st->prev_len >= key_len)) bad = true;
  }
  if (bad) st->bad++;
  if (key_len <= sizeof st->prev) {
    memcpy(st->prev, key, key_len);
    st->prev_len = key_len;
  }
  st->rows++;
}

/* --------------------------------------------------------- key choice */

static struct zipf zipf;

static uint64_t pick_record(uint64_t *s) {
  return opt_uniform ? rng_next(s) % opt_records : zipf_next(&zipf, s);
}

/* ---------------------------------------------------------- histogram */

#define HSUB 16
#define HBUCKETS (61 * HSUB)

typedef struct hist {
  uint64_t count[HBUCKETS];
  uint64_t n, sum_ns, max_ns;
} hist;

static int hist_index(uint64_t ns) {
  if (ns < HSUB) return (int)ns;
  int e = 63 - __builtin_clzll(ns); /* >= 4 */
  int i = (e - 3) * HSUB + (int)((ns >> (e - 4)) & (HSUB - 1));
  return i < HBUCKETS ? i : HBUCKETS - 1;
}

/* The middle of bucket i, in ns. */
static double hist_value(int i) {
  if (i < HSUB) return i;
  int e = i / HSUB + 3, sub = i % HSUB;
  double lo = (double)((uint64_t)(HSUB + sub) << (e - 4));
  double w = (double)(1ull << (e - 4));
  return lo + w / 2;
}

static void hist_add(hist *h, uint64_t ns) {
  h->count[hist_index(ns)]++;
  h->n++;
  h->sum_ns += ns;
  if (ns > h->max_ns) h->max_ns = ns;
}

static void hist_merge(hist *into, const hist *from) {
  for (int i = 0; i < HBUCKETS; i++) into->count[i] += from->count[i];
  into->n += from->n;
  into->sum_ns += from->sum_ns;
  if (from->max_ns > into->max_ns) into->max_ns = from->max_ns;
}

/* The q-quantile in microseconds. */
static double hist_quantile(const hist *h, double q) {
  if (!h->n) return 0;
  uint64_t want = (uint64_t)ceil(q * (double)h->n), seen = 0;
  if (want < 1) want = 1;
  for (int i = 0; i < HBUCKETS; i++) {
    seen += h->count[i];
    if (seen >= want) {
      double v = hist_value(i);
      if (v > (double)h->max_ns) v = (double)h->max_ns;
      return v / 1000.0;
    }
  }
  return (double)h->max_ns / 1000.0;
}

/* ------------------------------------------------- process accounting */

typedef struct io_sample {
  uint64_t read_bytes, write_bytes, cancelled;
} io_sample;

static io_sample io_now(void) {
  io_sample s = {0, 0, 0};
  FILE *f = fopen("/proc/self/io", "r");
  char line[128];
  if (!f) return s;
  while (fgets(line, sizeof line, f)) {
    unsigned long long v;
    if (sscanf(line, "read_bytes: %llu", &v) == 1) s.read_bytes = v;
    else if (sscanf(line, "write_bytes: %llu", &v) == 1) s.write_bytes = v;
    else if (sscanf(line, "cancelled_write_bytes: %llu", &v) == 1) s.cancelled = v;
  }
  fclose(f);
  return s;
}

static double written(io_sample a, io_sample b) {
  double w = (double)(b.write_bytes - a.write_bytes) - (double)(b.cancelled - a.cancelled);
  return w > 0 ? w : 0;
}

static double vm_hwm_mib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  double kb = 0;
  if (!f) return 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %lf", &kb) == 1) break;
  fclose(f);
  return kb / 1024;
}

/* The memory cgroup (v1) directory of this process, or "" */
static void cgroup_dir(char *out, size_t n) {
  FILE *f = fopen("/proc/self/cgroup", "r");
  char line[1024];
  out[0] = 0;
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    char *p = strstr(line, ":memory:");
    if (!p) continue;
    p += 8;
    p[strcspn(p, "\n")] = 0;
    snprintf(out, n, "/sys/fs/cgroup/memory%s", strcmp(p, "/") ? p : "");
    break;
  }
  fclose(f);
}

static double read_number(const char *dir, const char *file) {
  char path[1200];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  FILE *f = fopen(path, "r");
  double v = -1;
  if (!f) return -1;
  if (fscanf(f, "%lf", &v) != 1) v = -1;
  fclose(f);
  return v;
}

/* The tightest memory limit over this cgroup and its ancestors (bytes; a
** huge number when none). */
static double cgroup_limit(const char *dir) {
  char d[1024];
  double best = 1e30;
  snprintf(d, sizeof d, "%s", dir);
  while (d[0] && strlen(d) >= strlen("/sys/fs/cgroup/memory")) {
    double v = read_number(d, "memory.limit_in_bytes");
    if (v > 0 && v < best) best = v;
    char *slash = strrchr(d, '/');
    if (!slash || strlen(d) == strlen("/sys/fs/cgroup/memory")) break;
    *slash = 0;
  }
  return best;
}

/* ---------------------------------------------------- data directory */

#define MARKER ".ycsb-bench"
#define META ".ycsb-meta"

/* Empty dir for a new load: it must not exist, be empty, or carry our
** marker (we never delete a directory we did not create). */
static int prepare_dir(const char *dir) {
  char path[2048];
  struct stat st;
  if (stat(dir, &st) != 0) {
    if (mkdir(dir, 0755) != 0) {
      fprintf(stderr, "ycsb: cannot create %s: %s\n", dir, strerror(errno));
      return -1;
    }
  } else {
    DIR *d = opendir(dir);
    struct dirent *e;
    bool marked = false, empty = true;
    if (!d) {
      fprintf(stderr, "ycsb: cannot open %s: %s\n", dir, strerror(errno));
      return -1;
    }
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      empty = false;
      if (!strcmp(e->d_name, MARKER)) marked = true;
    }
    if (!empty && !marked) {
      closedir(d);
      fprintf(stderr, "ycsb: %s is not empty and was not made by ycsb; "
                      "refusing to clear it\n", dir);
      return -1;
    }
    rewinddir(d);
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      if (unlink(path) != 0) {
        fprintf(stderr, "ycsb: cannot remove %s: %s\n", path, strerror(errno));
        closedir(d);
        return -1;
      }
    }
    closedir(d);
  }
  snprintf(path, sizeof path, "%s/%s", dir, MARKER);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  fclose(f);
  return 0;
}

static void meta_line(char *buf, size_t n) {
  snprintf(buf, n, "engine=%s records=%llu key=%zu value=%zu\n", opt_engine,
           (unsigned long long)opt_records, opt_key, opt_value);
}

static int write_meta(const char *dir) {
  char path[2048], line[256];
  snprintf(path, sizeof path, "%s/%s", dir, META);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  meta_line(line, sizeof line);
  fputs(line, f);
  return fclose(f);
}

static int check_meta(const char *dir) {
  char path[2048], want[256], have[256] = "";
  snprintf(path, sizeof path, "%s/%s", dir, META);
  FILE *f = fopen(path, "r");
  meta_line(want, sizeof want);
  if (f) {
    if (!fgets(have, sizeof have, f)) have[0] = 0;
    fclose(f);
  }
  if (strcmp(want, have) != 0) {
    fprintf(stderr, "ycsb: %s holds no completed load of this configuration "
                    "(%s); run the load workload first\n", dir,
            have[0] ? "it holds another" : "none");
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------- output */

static const char *csv_header =
    "run_id,engine,workload,dist,ratio,budget_mib,cache_mib,key_size,"
    "value_size,records,data_mib,capped,cg_limit_mib,cache_dropped,"
    "warmup_s,warmup_ops,warmup_note,seconds,ops,ops_per_s,mean_us,p50_us,"
    "p99_us,p999_us,read_B_per_op,write_B_per_op,write_amp,peak_rss_mib,"
    "peak_cg_mib,drift,close_s,errors,status,threads,write_amp_window";

typedef struct result {
  double warmup_s, seconds, ops_per_s, mean_us, p50, p99, p999;
  double rd_per_op, wr_per_op, wamp, wamp_window, rss, cg_peak, drift, close_s;
  uint64_t warmup_ops, ops, errors;
  const char *warm_note, *status;
  bool has_wamp;
} result;

static void csv_write(const result *r, const char *cgdir) {
  if (!opt_csv) return;
  FILE *f = fopen(opt_csv, "a+");
  if (!f) {
    fprintf(stderr, "ycsb: cannot open %s: %s\n", opt_csv, strerror(errno));
    return;
  }
  fseek(f, 0, SEEK_END);
  if (ftell(f) == 0) fprintf(f, "%s\n", csv_header);
  double budget = opt_budget_mib * 1048576;
  double lim = cgdir[0] ? cgroup_limit(cgdir) : 1e30;
  bool capped = lim <= budget * 1.05;
  char limtxt[32] = "";
  if (lim < 1e29) snprintf(limtxt, sizeof limtxt, "%.1f", lim / 1048576);
  fprintf(f, "%s,%s,%s,%s,%g,%g,%.1f,%zu,%zu,%llu,%.1f,%s,%s,%s,", opt_label,
          opt_engine, opt_workload,
          opt_uniform ? "uniform" : "zipf", opt_ratio, opt_budget_mib,
          opt_budget_mib * opt_share / 100, opt_key, opt_value,
          (unsigned long long)opt_records,
          (double)opt_records * (double)(opt_key + opt_value) / 1048576,
          capped ? "yes" : "no", limtxt, opt_dropped);
  if (r->status && strcmp(r->status, "ok") != 0 && !r->ops) {
    fprintf(f, ",,,,,,,,,,,,,,%.1f,,,,%s,%d,\n", r->cg_peak, r->status, opt_threads);
  } else {
    char wamp[32] = "", wwin[32] = "";
    if (r->has_wamp) snprintf(wamp, sizeof wamp, "%.2f", r->wamp);
    if (r->has_wamp && r->wamp_window >= 0)
      snprintf(wwin, sizeof wwin, "%.2f", r->wamp_window);
    fprintf(f, "%.1f,%llu,%s,%.1f,%llu,%.0f,%.2f,%.2f,%.2f,%.2f,%.0f,%.0f,%s,"
               "%.1f,%.1f,%.3f,%.2f,%llu,%s,%d,%s\n",
            r->warmup_s, (unsigned long long)r->warmup_ops, r->warm_note,
            r->seconds, (unsigned long long)r->ops, r->ops_per_s, r->mean_us,
            r->p50, r->p99, r->p999, r->rd_per_op, r->wr_per_op, wamp, r->rss,
            r->cg_peak, r->drift, r->close_s, (unsigned long long)r->errors,
            r->status, opt_threads, wwin);
  }
  fclose(f);
}

/* ----------------------------------------------------------- the runs */

enum op { OP_READ, OP_UPDATE, OP_SCAN, OP_RMW, OP_INSERT };

typedef struct workload {
  const char *name;
  int read, update, scan, rmw; /* percent */
  bool upsert; /* updates through the adapter's upsert, where it has one */
} workload;

static const workload workloads[] = {
    {"A", 50, 50, 0, 0, false}, {"B", 95, 5, 0, 0, false},
    {"C", 100, 0, 0, 0, false}, {"E", 0, 0, 100, 0, false},
    {"F", 50, 0, 0, 50, false}, {"W", 5, 95, 0, 0, false},
    {"Aput", 50, 50, 0, 0, true},
};

static const ycsb_adapter *ad;
static const workload *current; /* the workload being run */
static void *db; /* the first handle: the load's, and client 0's */
static uint64_t errors; /* wrong answers of the measured window */

/* One client thread's state.  ops and measured are written by their client
** only and read by the coordinator (relaxed: counts, not synchronisation). */
typedef struct client {
  pthread_t thread;
  int id;
  void *db;                  /* db for client 0, else an attached handle */
  uint64_t rng;
  uint64_t version;          /* of update values: client id in the top byte */
  hist H;                    /* latency of measured operations */
  uint64_t writes, wwrites;  /* write operations measured / in warm-up */
  uint64_t errors;           /* measured wrong answers */
  _Atomic uint64_t ops, measured;
  int rc;                    /* 0, or -1 when an operation failed */
} client;

/* Phases of a workload run, set by the coordinator (main thread). */
enum { PHASE_WARM, PHASE_MEASURE, PHASE_STOP };
static _Atomic int phase;

/* One operation of client c; returns YCSB_ERR on an engine error.  Wrong
** answers are counted in c->errors when count_errors. */
static int do_op(client *c, enum op op, bool count_errors) {
  uint8_t key[16], val[4096], got[4096];
  size_t len = 0;
  uint64_t r = op == OP_INSERT ? 0 : pick_record(&c->rng);
  uint64_t bad = 0;
  int rc = YCSB_OK;
  make_key(r, key);
  switch (op) {
    case OP_INSERT: break;
    case OP_READ:
    case OP_RMW:
      rc = ad->read(c->db, key, got, &len);
      if (rc == YCSB_NOTFOUND || (rc == YCSB_OK && !value_ok(key, got, len))) {
        bad++;
        rc = YCSB_OK;
        break;
      }
      if (rc != YCSB_OK || op == OP_READ) break;
      /* read-modify-write: write the next version of the value read */
      make_value(r, get_le64(got + 8) + 1, &c->rng, val);
      rc = ad->update(c->db, key, val);
      break;
    case OP_UPDATE:
      make_value(r, ++c->version, &c->rng, val);
      rc = current->upsert && ad->upsert ? ad->upsert(c->db, key, val)
                                         : ad->update(c->db, key, val);
      break;
    case OP_SCAN: {
      ycsb_scan_state st;
      memset(&st, 0, sizeof st);
      rc = ad->scan(c->db, key, YCSB_SCAN_ROWS, &st);
      /* fewer rows only when the start is among the last 99 keys */
      if (st.rows == 0 || st.bad) bad++;
      break;
    }
  }
  if (rc == YCSB_NOTFOUND) { /* an update that found no row (SQL) */
    bad++;
    rc = YCSB_OK;
  }
  if (count_errors) c->errors += bad;
  return rc;
}

static enum op choose(const workload *w, uint64_t *rng) {
  int x = (int)(rng_next(rng) % 100);
  if ((x -= w->read) < 0) return OP_READ;
  if ((x -= w->update) < 0) return OP_UPDATE;
  if ((x -= w->scan) < 0) return OP_SCAN;
  return OP_RMW;
}

static hist H; /* the load's latencies; a workload's: its clients' merged */

/* A client thread: operations until the coordinator says stop.  An
** operation belongs to the measured window when it starts in it. */
static void *client_main(void *arg) {
  client *c = arg;
  const workload *w = current;
  for (;;) {
    int ph = atomic_load_explicit(&phase, memory_order_relaxed);
    if (ph == PHASE_STOP) break;
    enum op op = choose(w, &c->rng);
    bool measured = ph == PHASE_MEASURE;
    uint64_t s = measured ? now_ns() : 0;
    if (do_op(c, op, measured) != YCSB_OK) {
      c->rc = -1;
      atomic_store(&phase, PHASE_STOP); /* every client stops */
      break;
    }
    bool write = op == OP_UPDATE || op == OP_RMW;
    if (measured) {
      hist_add(&c->H, now_ns() - s);
      if (write) c->writes++;
      atomic_fetch_add_explicit(&c->measured, 1, memory_order_relaxed);
    } else if (write) {
      c->wwrites++;
    }
    atomic_fetch_add_explicit(&c->ops, 1, memory_order_relaxed);
  }
  return NULL;
}

static int run_load(result *res) {
  uint8_t key[16], val[4096];
  uint64_t rng = opt_seed * 0x1234567ull + 99;
  double t0 = now(), last = t0;
  uint64_t batch = ad->begin && ad->commit ? opt_load_batch : 1;
  io_sample a = io_now();
  for (uint64_t r = 0; r < opt_records; r++) {
    make_key(r, key);
    make_value(r, 0, &rng, val);
    uint64_t s = now_ns();
    if (batch > 1 && r % batch == 0 && ad->begin(db) != YCSB_OK) return -1;
    if (ad->insert(db, key, val) != YCSB_OK) return -1;
    if (batch > 1 && (r % batch == batch - 1 || r + 1 == opt_records) &&
        ad->commit(db) != YCSB_OK)
      return -1;
    hist_add(&H, now_ns() - s);
    if ((r & 1023) == 0) {
      double t = now();
      if (t - last >= 10) {
        fprintf(stderr, "ycsb: %s load %.0f%% (%.0f ops/s)\n", opt_engine,
                100.0 * (double)r / (double)opt_records, (double)r / (t - t0));
        last = t;
      }
    }
  }
  double t1 = now();
  io_sample b = io_now();
  int rc = ad->close(db);
  db = NULL;
  double t2 = now();
  io_sample c = io_now();
  if (rc != YCSB_OK) return -1;
  res->warmup_s = 0;
  res->warmup_ops = 0;
  res->warm_note = batch > 1 ? "none(load in transactions)" : "none(load)";
  res->seconds = t1 - t0;
  res->ops = opt_records;
  res->rd_per_op = (double)(b.read_bytes - a.read_bytes) / (double)opt_records;
  res->wr_per_op = written(a, c) / (double)opt_records;
  res->wamp = written(a, c) / ((double)opt_records * (double)(opt_key + opt_value));
  res->wamp_window = -1; /* a load has no measured window of its own */
  res->has_wamp = true;
  res->close_s = t2 - t1;
  res->drift = 1;
  return 0;
}

/* Sleep until the monotonic time t (seconds), or until the clients stop. */
static void sleep_until(double t) {
  for (;;) {
    double left = t - now();
    if (left <= 0 || atomic_load(&phase) == PHASE_STOP) return;
    if (left > 0.05) left = 0.05;
    struct timespec ts = {0, (long)(left * 1e9)};
    nanosleep(&ts, NULL);
  }
}

static uint64_t total(client *cs, int n, bool measured) {
  uint64_t t = 0;
  for (int i = 0; i < n; i++)
    t += atomic_load_explicit(measured ? &cs[i].measured : &cs[i].ops,
                              memory_order_relaxed);
  return t;
}

/*
** Run workload w with opt_threads clients and fill res.  The main thread
** coordinates: it attaches a handle per extra client, starts the clients,
** decides the end of the warm-up from their operation counts (0.5 s
** windows), opens and closes the measured window, then joins the clients,
** detaches their handles and closes db.
*/
static int run_workload(const workload *w, result *res) {
  int n = opt_threads;
  client *cs = calloc((size_t)n, sizeof *cs);
  if (!cs) return -1;
  int rc = 0, started = 0;
  for (int i = 0; i < n; i++) {
    cs[i].id = i;
    cs[i].rng = (opt_seed + (uint64_t)i * 0x10001ull) * 0x9E3779B9ull + 7;
    cs[i].version = (uint64_t)i << 56;
    cs[i].db = db;
    if (i > 0 && ad->attach(db, &cs[i].db) != YCSB_OK) {
      cs[i].db = NULL;
      rc = -1;
      break;
    }
  }
  io_sample a = io_now(), b = a, c;
  double t0 = now(), tw = t0, tm = t0;
  current = w;
  atomic_store(&phase, PHASE_WARM);
  for (; rc == 0 && started < n; started++)
    if (pthread_create(&cs[started].thread, NULL, client_main, &cs[started]) != 0) {
      fprintf(stderr, "ycsb: cannot start client thread %d\n", started);
      atomic_store(&phase, PHASE_STOP);
      rc = -1;
    }
  /* warm-up */
  res->warm_note = "stable";
  double win_start = t0, prev_tp = -1;
  uint64_t win_base = 0;
  while (rc == 0 && atomic_load(&phase) == PHASE_WARM) {
    sleep_until(win_start + 0.5);
    double t = now();
    uint64_t ops = total(cs, n, false);
    double tp = (double)(ops - win_base) / (t - win_start);
    if (t - t0 >= opt_wmin && prev_tp > 0 && fabs(tp - prev_tp) < 0.10 * prev_tp) {
      break;
    } else if (t - t0 >= opt_wmax) {
      res->warm_note = "capped";
      break;
    }
    prev_tp = tp;
    win_base = ops;
    win_start = t;
  }
  /* measured window */
  uint64_t half = 0;
  if (rc == 0 && atomic_load(&phase) == PHASE_WARM) {
    b = io_now();
    tw = now();
    res->warmup_s = tw - t0;
    atomic_store(&phase, PHASE_MEASURE);
    double end = tw + opt_seconds;
    if (opt_ops) end = tw + 1e9;
    sleep_until(tw + opt_seconds / 2);
    half = total(cs, n, true);
    while (now() < end && atomic_load(&phase) == PHASE_MEASURE &&
           (!opt_ops || total(cs, n, true) < opt_ops))
      sleep_until(now() + (opt_ops ? 0.001 : end - now()));
  }
  c = io_now();
  tm = now();
  atomic_store(&phase, PHASE_STOP);
  for (int i = 0; i < started; i++) pthread_join(cs[i].thread, NULL);
  uint64_t ops = total(cs, n, true), writes = 0, wwrites = 0;
  errors = 0;
  for (int i = 0; i < started; i++) {
    if (cs[i].rc) rc = -1;
    hist_merge(&H, &cs[i].H);
    writes += cs[i].writes;
    wwrites += cs[i].wwrites;
    errors += cs[i].errors;
  }
  res->warmup_ops = total(cs, n, false) - ops; /* all ops - measured ones */
  for (int i = 1; i < n; i++)
    if (cs[i].db && ad->detach(cs[i].db) != YCSB_OK) rc = -1;
  free(cs);
  double t1 = now();
  int crc = ad->close(db);
  db = NULL;
  double t2 = now();
  io_sample d = io_now();
  if (rc != 0 || crc != YCSB_OK || !ops) return -1;
  double meas = tm - tw;
  res->seconds = meas;
  res->ops = ops;
  res->rd_per_op = (double)(c.read_bytes - b.read_bytes) / (double)ops;
  double all_ops = (double)(ops + res->warmup_ops);
  res->wr_per_op = written(a, d) / all_ops;
  res->has_wamp = w->update + w->rmw > 0;
  if (res->has_wamp)
    res->wamp = written(a, d) / ((double)(writes + wwrites) * (double)(opt_key + opt_value));
  res->wamp_window = writes ? written(b, c) / ((double)writes * (double)(opt_key + opt_value))
                            : -1;
  res->close_s = t2 - t1;
  /* drift: 2nd half vs 1st half of the measured window */
  double h1 = opt_seconds / 2, h2 = meas - h1;
  if (!opt_ops && half && ops > half && h2 > 0)
    res->drift = ((double)(ops - half) / h2) / ((double)half / h1);
  else
    res->drift = 1;
  return 0;
}

/* ------------------------------------------------------------- main */

static void usage(void) {
  fprintf(stderr,
      "usage: ycsb-FAMILY --engine E --workload W --dir DIR [options]\n"
      "  engines: sqlite-sql sqlite-c bftree-sql bftree-sql-prep (in ycsb-sqlite),\n"
      "  bftree-c\n"
      "  (ycsb-bftree), rocksdb, lmdb, wiredtiger (ycsb-rocksdb, -lmdb, -wiredtiger)\n"
      "  workloads: load A B C E F W Aput  (load first: it creates DIR's data set)\n"
      "  --budget MiB        memory budget of the process (64)\n"
      "  --ratio X           data size / budget (4); or --records N\n"
      "  --key-size 8|16     (8)      --value-size N (100, >= 16)\n"
      "  --dist zipf|uniform (zipf)   --theta X (0.9)\n"
      "  --cache-share PCT   percent of the budget for the engine's own memory\n"
      "                      knobs (50)\n"
      "  --warmup-min S (2)  --warmup-max S (10)  --seconds S (10)  --ops N\n"
      "  --sql-mode text|prepared  (sqlite-sql, bftree-sql: text; sqlite-c,\n"
      "                      bftree-sql-prep: prepared)\n"
      "  --ext PATH          bftree.so for bftree-sql (./bftree.so)\n"
      "  --csv FILE          append a result row   --label ID  run id column\n"
      "  --cache-dropped yes|no   recorded in the CSV (the runner drops it)\n"
      "  --record-failure STATUS  only append a row saying the run failed\n"
      "  --load-batch N      load: N inserts per transaction where the engine\n"
      "                      has transactions or write batches (1: each its own)\n"
      "  --threads N         client threads of a workload (1), each with its\n"
      "                      own handle (SQL: its own connection)\n"
      "  --seed N\n");
  exit(2);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    i++;
    if (!strcmp(a, "--engine")) opt_engine = v;
    else if (!strcmp(a, "--workload")) opt_workload = v;
    else if (!strcmp(a, "--dir")) opt_dir = v;
    else if (!strcmp(a, "--budget")) opt_budget_mib = atof(v);
    else if (!strcmp(a, "--ratio")) opt_ratio = atof(v);
    else if (!strcmp(a, "--records")) opt_records = strtoull(v, NULL, 0);
    else if (!strcmp(a, "--key-size")) opt_key = strtoul(v, NULL, 0);
    else if (!strcmp(a, "--value-size")) opt_value = strtoul(v, NULL, 0);
    else if (!strcmp(a, "--dist")) opt_uniform = !strcmp(v, "uniform");
    else if (!strcmp(a, "--theta")) opt_theta = atof(v);
    else if (!strcmp(a, "--cache-share")) opt_share = atof(v);
    else if (!strcmp(a, "--warmup-min")) opt_wmin = atof(v);
    else if (!strcmp(a, "--warmup-max")) opt_wmax = atof(v);
    else if (!strcmp(a, "--seconds")) opt_seconds = atof(v);
    else if (!strcmp(a, "--ops")) opt_ops = strtoull(v, NULL, 0);
    else if (!strcmp(a, "--sql-mode")) opt_sql_mode = !strcmp(v, "prepared");
    else if (!strcmp(a, "--ext")) opt_ext = v;
    else if (!strcmp(a, "--csv")) opt_csv = v;
    else if (!strcmp(a, "--label")) opt_label = v;
    else if (!strcmp(a, "--cache-dropped")) opt_dropped = v;
    else if (!strcmp(a, "--record-failure")) opt_failure = v;
    else if (!strcmp(a, "--seed")) opt_seed = strtoull(v, NULL, 0);
    else if (!strcmp(a, "--load-batch")) opt_load_batch = strtoull(v, NULL, 0);
    else if (!strcmp(a, "--threads")) opt_threads = atoi(v);
    else usage();
  }
  if (!opt_engine || !opt_dir || opt_load_batch < 1) usage();
  for (size_t i = 0; i < N_ADAPTERS; i++)
    if (adapters[i] && !strcmp(adapters[i]->name, opt_engine)) ad = adapters[i];
  if (!ad) {
    fprintf(stderr, "ycsb: engine %s is not in this binary, which has:", opt_engine);
    for (size_t i = 0; i < N_ADAPTERS; i++)
      if (adapters[i]) fprintf(stderr, " %s", adapters[i]->name);
    fprintf(stderr, " (build/rel/bench/ycsb-<family>: sqlite for sqlite-sql, "
                    "sqlite-c and bftree-sql; bftree for bftree-c; rocksdb; lmdb; "
                    "wiredtiger)\n");
    return 2;
  }
  const workload *w = NULL;
  for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++)
    if (!strcmp(workloads[i].name, opt_workload)) w = &workloads[i];
  if (!ad || (!w && strcmp(opt_workload, "load") != 0)) usage();
  if ((opt_key != 8 && opt_key != 16) || opt_value < 16 || opt_value > 4000 ||
      opt_budget_mib <= 0 || opt_ratio <= 0 || opt_share <= 0 || opt_share > 100)
    usage();
  if (opt_threads < 1 || opt_threads > 256) usage();
  if (opt_threads > 1 && !w) {
    fprintf(stderr, "ycsb: --threads applies to workloads; the load runs on one thread\n");
    return 2;
  }
  if (opt_threads > 1 && (!ad->attach || !ad->detach)) {
    fprintf(stderr, "ycsb: engine %s has no multi-threaded adapter (--threads)\n",
            opt_engine);
    return 2;
  }
  if (!opt_records)
    opt_records = (uint64_t)(opt_ratio * opt_budget_mib * 1048576 /
                             (double)(opt_key + opt_value));
  else
    opt_ratio = (double)opt_records * (double)(opt_key + opt_value) /
                (opt_budget_mib * 1048576);
  if (opt_records < 200) opt_records = 200;

  char cgdir[1024];
  cgroup_dir(cgdir, sizeof cgdir);
  result res;
  memset(&res, 0, sizeof res);
  if (opt_failure) {
    res.status = opt_failure;
    res.cg_peak = cgdir[0] ? read_number(cgdir, "memory.max_usage_in_bytes") / 1048576 : 0;
    csv_write(&res, cgdir);
    return 0;
  }

  ycsb_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.dir = opt_dir;
  cfg.ext_path = opt_ext;
  cfg.budget = (uint64_t)(opt_budget_mib * 1048576);
  cfg.cache_bytes = (uint64_t)((double)cfg.budget * opt_share / 100);
  cfg.key_size = opt_key;
  cfg.value_size = opt_value;
  cfg.records = opt_records;
  cfg.threads = opt_threads;
  cfg.sql_mode = opt_sql_mode >= 0 ? opt_sql_mode
                 : !strcmp(opt_engine, "sqlite-c") ||
                           !strcmp(opt_engine, "bftree-sql-prep")
                       ? YCSB_SQL_PREPARED
                       : YCSB_SQL_TEXT;
  bool load = w == NULL;
  if (load ? prepare_dir(opt_dir) : check_meta(opt_dir)) return 1;
  if (!opt_uniform && !load) zipf_init(&zipf, opt_records, opt_theta);

  char desc[1024];
  ad->describe(&cfg, desc, sizeof desc);
  double lim = cgdir[0] ? cgroup_limit(cgdir) : 1e30;
  printf("ycsb: %s %s | %llu records x (%zu B key + %zu B value) = %.1f MiB = "
         "%.2fx budget %.0f MiB | %s | memory cap: %s\n",
         opt_engine, opt_workload, (unsigned long long)opt_records, opt_key,
         opt_value, (double)opt_records * (double)(opt_key + opt_value) / 1048576,
         opt_ratio, opt_budget_mib,
         load ? "random-order inserts" : opt_uniform ? "uniform" : "zipf",
         lim <= cfg.budget * 1.05 ? "cgroup limit" : "NONE (not capped)");
  printf("ycsb: config: %s\n", desc);
  fflush(stdout);

  if (ad->open(&cfg, load, &db) != YCSB_OK) {
    res.status = "error";
    csv_write(&res, cgdir);
    return 1;
  }
  int rc = load ? run_load(&res) : run_workload(w, &res);
  if (rc != 0) {
    if (db) ad->close(db);
    res.status = "error";
    res.ops = 0;
    res.cg_peak = cgdir[0] ? read_number(cgdir, "memory.max_usage_in_bytes") / 1048576 : 0;
    csv_write(&res, cgdir);
    return 1;
  }
  if (load && write_meta(opt_dir) != 0) {
    fprintf(stderr, "ycsb: cannot write %s/%s\n", opt_dir, META);
    return 1;
  }
  res.ops_per_s = (double)res.ops / res.seconds;
  res.mean_us = H.n ? (double)H.sum_ns / (double)H.n / 1000 : 0;
  res.p50 = hist_quantile(&H, 0.50);
  res.p99 = hist_quantile(&H, 0.99);
  res.p999 = hist_quantile(&H, 0.999);
  res.rss = vm_hwm_mib();
  res.cg_peak = cgdir[0] ? read_number(cgdir, "memory.max_usage_in_bytes") / 1048576 : 0;
  res.errors = errors;
  res.status = res.errors ? "wrong" : "ok";
  printf("ycsb: %s %s: %.0f ops/s over %.1f s (%llu ops; warm-up dropped: "
         "%.1f s, %llu ops, %s) | latency us p50 %.1f p99 %.1f p99.9 %.1f | "
         "read %.0f B/op, written %.0f B/op%s | peak RSS %.1f MiB, cgroup peak "
         "%.1f MiB | drift %.2f | close %.2f s | errors %llu\n",
         opt_engine, opt_workload, res.ops_per_s, res.seconds,
         (unsigned long long)res.ops, res.warmup_s,
         (unsigned long long)res.warmup_ops, res.warm_note, res.p50, res.p99,
         res.p999, res.rd_per_op, res.wr_per_op,
         res.has_wamp ? "" : " (read-only)", res.rss, res.cg_peak, res.drift,
         res.close_s, (unsigned long long)res.errors);
  if (res.has_wamp && res.wamp_window >= 0)
    printf("ycsb: write amplification %.2f (measured window alone: %.2f)\n", res.wamp,
           res.wamp_window);
  else if (res.has_wamp)
    printf("ycsb: write amplification %.2f\n", res.wamp);
  csv_write(&res, cgdir);
  return res.errors ? 3 : 0;
}
