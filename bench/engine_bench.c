/*
** engine_bench.c: micro-benchmark of the bftree engine alone (no SQLite).
**
** Phases, each timed separately, on one tree whose data is larger than its
** buffer (default: 4x):
**   load   random-order inserts of every key
**   get    point reads, Zipf(theta) or uniform key choice
**   update overwrites of existing keys, same key choice
**   mixed  50% reads / 50% updates
**   scan   100-record ascending range scans from a chosen start key
**
** Keys are 8-byte big-endian integers (scrambled so that hot keys spread
** over the key space, as in YCSB); values are --value bytes.  For each
** phase: operations per second, and leaf pages / bytes read and written per
** operation, from bf_stats.
**
** Usage: engine_bench [--keys N] [--value B] [--buffer MiB] [--ops N]
**                     [--threads T] [--theta X | --uniform] [--dir D]
**                     [--io auto|uring|psync] [--direct auto|on|off]
**                     [--sync off|normal|full]   (default normal: the log
**                     is written at every commit, fsynced at checkpoints)
*/
#include "bftree.h"
#include "zipf.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t opt_keys = 0;
static size_t opt_value = 100;
static uint64_t opt_buffer_mib = 16;
static uint64_t opt_ops = 0;
static int opt_threads = 1;
static double opt_theta = 0.9;
static const char *opt_dir = "/tmp";
static int opt_io = BF_IO_AUTO, opt_direct = BF_DIRECT_AUTO;
static int opt_sync = BF_SYNC_NORMAL; /* log on, no fsync per operation */
static int opt_promote = -1; /* read_promote_percent, admission off; -1: default */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static struct zipf zipf;
static bf_tree *tree;

/* Scramble rank -> key number: a bijection on [0, keys), so hot ranks
** spread over the key space.  x -> (x * odd + c) mod 2^k is a bijection on
** [0, 2^k); walking its cycle until the value is below keys restricts it
** to [0, keys). */
static uint64_t key_of_rank(uint64_t rank) {
  uint64_t mask = 1;
  while (mask < opt_keys) mask <<= 1;
  mask -= 1;
  uint64_t y = rank;
  do y = (y * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) & mask;
  while (y >= opt_keys);
  return y;
}

static uint64_t pick(uint64_t *s) {
  uint64_t r = opt_theta > 0 ? zipf_next(&zipf, s) : rng_next(s) % opt_keys;
  return key_of_rank(r);
}

static void encode_key(uint64_t n, uint8_t *k) {
  for (int i = 0; i < 8; i++) k[i] = (uint8_t)(n >> (56 - 8 * i));
}

enum phase { P_LOAD, P_GET, P_UPDATE, P_MIXED, P_SCAN };
static const char *phase_name[] = {"load", "get", "update", "mixed", "scan"};

struct worker {
  int id;
  enum phase phase;
  uint64_t ops;
  uint64_t done;
  uint64_t found;
  int error;
};

static void *run_worker(void *p) {
  struct worker *w = p;
  uint64_t s = 12345 + (uint64_t)w->id * 7777;
  uint8_t k[8], v[4096], buf[4096];
  bf_cursor *c = NULL;
  memset(v, 'v', sizeof v);
  if (w->phase == P_SCAN && bf_cursor_open(tree, &c) != BF_OK) return NULL;
  for (uint64_t i = 0; i < w->ops; i++) {
    int rc = BF_OK;
    size_t vl;
    switch (w->phase) {
      case P_LOAD: {
        uint64_t n = (i * (uint64_t)opt_threads + (uint64_t)w->id);
        encode_key(key_of_rank(n), k);
        memcpy(v, &i, sizeof i);
        rc = bf_put(tree, k, 8, v, opt_value);
        break;
      }
      case P_GET:
        encode_key(pick(&s), k);
        rc = bf_get(tree, k, 8, buf, sizeof buf, &vl);
        if (rc == BF_OK) w->found++;
        if (rc == BF_NOTFOUND) rc = BF_OK;
        break;
      case P_UPDATE:
        encode_key(pick(&s), k);
        memcpy(v, &i, sizeof i);
        rc = bf_put(tree, k, 8, v, opt_value);
        break;
      case P_MIXED:
        encode_key(pick(&s), k);
        if (rng_next(&s) & 1) {
          rc = bf_get(tree, k, 8, buf, sizeof buf, &vl);
          if (rc == BF_NOTFOUND) rc = BF_OK;
        } else {
          memcpy(v, &i, sizeof i);
          rc = bf_put(tree, k, 8, v, opt_value);
        }
        break;
      case P_SCAN: {
        encode_key(pick(&s), k);
        bf_bound lo = {k, 8, true};
        int n = 0;
        for (rc = bf_cursor_seek(c, &lo, NULL, false); rc == BF_OK && n < 100;
             rc = bf_cursor_next(c))
          n++;
        if (rc == BF_DONE) rc = BF_OK;
        w->found += (uint64_t)n;
        break;
      }
    }
    if (rc != BF_OK) {
      w->error = rc;
      break;
    }
    w->done++;
  }
  if (c) bf_cursor_close(c);
  return NULL;
}

static void run_phase(enum phase phase, uint64_t ops) {
  pthread_t th[64];
  struct worker w[64];
  bf_stats before, after;
  bf_stats_get(tree, &before);
  double t0 = now();
  for (int i = 0; i < opt_threads; i++) {
    w[i] = (struct worker){.id = i, .phase = phase, .ops = ops / (uint64_t)opt_threads};
    pthread_create(&th[i], NULL, run_worker, &w[i]);
  }
  uint64_t done = 0, found = 0;
  for (int i = 0; i < opt_threads; i++) {
    pthread_join(th[i], NULL);
    done += w[i].done;
    found += w[i].found;
    if (w[i].error) {
      fprintf(stderr, "%s: error %s\n", phase_name[phase], bf_strerror(w[i].error));
      exit(1);
    }
  }
  double dt = now() - t0;
  bf_stats_get(tree, &after);
  double d = done ? (double)done : 1;
  printf("%-7s %10.0f ops/s  %8.3f s  reads/op %.3f  writes/op %.3f  "
         "KiB read/op %.2f  KiB written/op %.2f  hit %.1f%%",
         phase_name[phase], done / dt, dt,
         (after.leaf_reads - before.leaf_reads) / d,
         (after.leaf_writes - before.leaf_writes) / d,
         (after.bytes_read - before.bytes_read) / d / 1024,
         (after.bytes_written - before.bytes_written) / d / 1024,
         100.0 * (after.cache_hits - before.cache_hits) /
             (double)((after.cache_hits - before.cache_hits) +
                      (after.cache_misses - before.cache_misses) + 1e-9));
  if (phase == P_GET) printf("  found %.1f%%", 100.0 * found / d);
  if (phase == P_SCAN) printf("  rows/scan %.1f", found / d);
  printf("\n");
  fflush(stdout);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--keys") && v) opt_keys = strtoull(v, NULL, 0), i++;
    else if (!strcmp(a, "--value") && v) opt_value = strtoull(v, NULL, 0), i++;
    else if (!strcmp(a, "--buffer") && v) opt_buffer_mib = strtoull(v, NULL, 0), i++;
    else if (!strcmp(a, "--ops") && v) opt_ops = strtoull(v, NULL, 0), i++;
    else if (!strcmp(a, "--threads") && v) opt_threads = atoi(v), i++;
    else if (!strcmp(a, "--theta") && v) opt_theta = atof(v), i++;
    else if (!strcmp(a, "--uniform")) opt_theta = 0;
    else if (!strcmp(a, "--promote") && v) opt_promote = atoi(v), i++;
    else if (!strcmp(a, "--sync") && v) {
      opt_sync = !strcmp(v, "full") ? BF_SYNC_FULL : !strcmp(v, "off") ? BF_SYNC_OFF : BF_SYNC_NORMAL;
      i++;
    }
    else if (!strcmp(a, "--dir") && v) opt_dir = v, i++;
    else if (!strcmp(a, "--io") && v) {
      opt_io = !strcmp(v, "uring") ? BF_IO_URING : !strcmp(v, "psync") ? BF_IO_PSYNC : BF_IO_AUTO;
      i++;
    } else if (!strcmp(a, "--direct") && v) {
      opt_direct = !strcmp(v, "on") ? BF_DIRECT_ON : !strcmp(v, "off") ? BF_DIRECT_OFF : BF_DIRECT_AUTO;
      i++;
    } else {
      fprintf(stderr, "usage: %s [--keys N] [--value B] [--buffer MiB] [--ops N] "
                      "[--threads T] [--theta X | --uniform] [--dir D] "
                      "[--io auto|uring|psync] [--direct auto|on|off] [--sync off|normal|full]\n", argv[0]);
      return 2;
    }
  }
  if (opt_threads < 1 || opt_threads > 64) opt_threads = 1;
  if (opt_value > 1000) opt_value = 1000;
  uint64_t buffer = opt_buffer_mib << 20;
  /* Default data set: 4x the buffer in key+value bytes. */
  if (!opt_keys) opt_keys = 4 * buffer / (8 + opt_value);
  if (!opt_ops) opt_ops = opt_keys < 1000000 ? opt_keys : 1000000;
  if (opt_theta > 0) zipf_init(&zipf, opt_keys, opt_theta);

  char path[512];
  snprintf(path, sizeof path, "%s/engine_bench.%d.bf", opt_dir, (int)getpid());
  unlink(path);
  bf_options o;
  bf_options_init(&o);
  o.buffer_size = buffer;
  o.io_mode = opt_io;
  o.direct_io = opt_direct;
  o.synchronous = opt_sync;
  if (opt_promote >= 0) { /* a chance: admission off */
    o.read_promote_percent = (uint32_t)opt_promote;
    o.read_admission = false;
  }
  char *err = NULL;
  int rc = bf_open(path, &o, &tree, &err);
  if (rc != BF_OK) {
    fprintf(stderr, "bf_open: %s\n", err ? err : bf_strerror(rc));
    return 1;
  }
  bf_stats st;
  bf_stats_get(tree, &st);
  printf("engine_bench: %llu keys x (8 B key + %zu B value) = %.1f MiB of data, "
         "buffer %llu MiB (data/buffer %.1fx), %llu ops per phase, %d thread(s), "
         "key choice %s, io %s, O_DIRECT %s\n",
         (unsigned long long)opt_keys, opt_value,
         opt_keys * (8.0 + opt_value) / 1048576, (unsigned long long)opt_buffer_mib,
         opt_keys * (8.0 + opt_value) / (double)buffer, (unsigned long long)opt_ops,
         opt_threads, opt_theta > 0 ? "zipf" : "uniform",
         st.io_mode == BF_IO_URING ? "io_uring" : "pread/pwrite",
         st.direct_io ? "on" : "off");
  if (opt_theta > 0) printf("zipf theta %.2f\n", opt_theta);
  run_phase(P_LOAD, opt_keys);
  run_phase(P_GET, opt_ops);
  run_phase(P_UPDATE, opt_ops);
  run_phase(P_MIXED, opt_ops);
  run_phase(P_SCAN, opt_ops / 10);
  bf_stats_get(tree, &st);
  printf("tree: %llu leaves, height %u, inner nodes %llu (%.1f KiB), mapping "
         "table %.1f KiB, file %llu pages (%llu free), buffer used %.1f MiB\n",
         (unsigned long long)st.leaf_pages, st.tree_height,
         (unsigned long long)st.inner_nodes, st.inner_bytes / 1024.0,
         st.mapping_bytes / 1024.0, (unsigned long long)st.file_pages,
         (unsigned long long)st.free_pages, st.buffer_used / 1048576.0);
  double t0 = now();
  rc = bf_close(tree);
  printf("close (flush + checkpoint): %.3f s %s\n", now() - t0, bf_strerror(rc));
  unlink(path);
  return rc == BF_OK ? 0 : 1;
}
