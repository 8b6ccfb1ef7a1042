/*
** zipf.h: the key-choice generators shared by the benchmark programs
** (engine_bench.c, ycsb.c): a splitmix64 random sequence and YCSB's Zipf
** generator over ranks [0, n) (Gray et al., "Quickly generating
** billion-record synthetic databases", as YCSB's ZipfianGenerator).
** Header-only (static functions): each program is one translation unit.
*/
#ifndef BENCH_ZIPF_H
#define BENCH_ZIPF_H

#include <math.h>
#include <stdint.h>

/* A bijection on 64-bit integers (splitmix64's finalizer). */
static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* The next number of the sequence whose state is *s. */
static inline uint64_t rng_next(uint64_t *s) { return mix64(*s += 0x9E3779B97F4A7C15ull); }

struct zipf {
  uint64_t n;
  double theta, alpha, zetan, eta, zeta2;
};

/* Set z up for ranks [0, n) with skew theta (0 < theta < 1); O(n). */
static inline void zipf_init(struct zipf *z, uint64_t n, double theta) {
  z->n = n;
  z->theta = theta;
  double zeta = 0;
  for (uint64_t i = 1; i <= n; i++) zeta += 1.0 / pow((double)i, theta);
  z->zetan = zeta;
  z->zeta2 = 1.0 + 1.0 / pow(2.0, theta);
  z->alpha = 1.0 / (1.0 - theta);
  z->eta = (1 - pow(2.0 / (double)n, 1 - theta)) / (1 - z->zeta2 / z->zetan);
}

/* A rank in [0, n): rank 0 the most frequent. */
static inline uint64_t zipf_next(const struct zipf *z, uint64_t *s) {
  double u = (double)(rng_next(s) >> 11) / 9007199254740992.0;
  double uz = u * z->zetan;
  if (uz < 1.0) return 0;
  if (uz < z->zeta2) return 1;
  uint64_t r = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1, z->alpha));
  return r < z->n ? r : z->n - 1;
}

#endif /* BENCH_ZIPF_H */
