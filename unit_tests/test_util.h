/*
** test_util.h: helpers shared by the cmocka unit tests.
**
** - test_seed(): the seed of a randomized test.  Taken from BF_TEST_SEED when
**   set (to replay a failure), otherwise from the clock; always printed.
** - test_scale(n): n scaled by BF_TEST_SCALE percent (default 100), so the
**   sanitizer builds can run the same tests smaller.  Never below 1.
** - test_tmpdir(): a fresh directory for the test's files (removed by
**   test_rmdir()).  BF_TEST_DIR overrides the parent (default /tmp).
*/
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

static inline uint64_t test_seed(const char *test_name) {
  const char *env = getenv("BF_TEST_SEED");
  uint64_t seed;
  if (env && *env) {
    seed = strtoull(env, NULL, 0);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^
           ((uint64_t)getpid() << 20);
  }
  printf("[ SEED     ] %s: BF_TEST_SEED=%llu\n", test_name,
         (unsigned long long)seed);
  fflush(stdout);
  return seed;
}

static inline long test_scale(long n) {
  const char *env = getenv("BF_TEST_SCALE");
  long pct = env && *env ? atol(env) : 100;
  long r = n * pct / 100;
  return r < 1 ? 1 : r;
}

/* A deterministic generator for tests (splitmix64). */
static inline uint64_t test_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static inline char *test_tmpdir(void) {
  const char *parent = getenv("BF_TEST_DIR");
  char tmpl[512];
  snprintf(tmpl, sizeof tmpl, "%s/bftree-test-XXXXXX",
           parent && *parent ? parent : "/tmp");
  char *d = mkdtemp(tmpl);
  if (!d) return NULL;
  return strdup(d);
}

static inline void test_rmdir(char *dir) {
  if (!dir) return;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  free(dir);
}

#endif
