/*
** bf_util.c: small services every other file uses.
**
** Owns: status text (bf_strerror), CRC-32C, the per-thread random number
** generator, allocation wrappers, bf_mprintf, the corruption breakpoint, and
** the fault simulator (BF_TESTING builds only).
**
** Invariants:
**   1. Every allocation the engine makes goes through bf_malloc, bf_calloc or
**      bf_malloc_aligned, so the fault simulator can fail any one of them.
**   2. The random generator state is thread-local: no sharing, no locks.
*/
#include "bf_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <pthread.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
** Status text.
*/
const char *bf_strerror(int status) {
  static const char *const text[BF_STATUS_COUNT] = {
      [BF_OK] = "ok",
      [BF_NOTFOUND] = "key not found",
      [BF_DONE] = "no more records",
      [BF_NOMEM] = "out of memory",
      [BF_IOERR] = "disk I/O error",
      [BF_CORRUPT] = "data file is corrupt",
      [BF_TOOBIG] = "key or record too large for the page size",
      [BF_INVALID] = "invalid argument",
      [BF_BUSY] = "data file is in use by another open tree",
      [BF_NOTBFTREE] = "file is not a bftree data file",
      [BF_FULL] = "disk is full",
      [BF_READONLY] = "tree refuses writes after an earlier error",
      [BF_RETRY] = "operation must be retried",
  };
  if (status < 0 || status >= BF_STATUS_COUNT) return "unknown status";
  return text[status];
}

int bf_error_bkpt(int status, const char *file, int line) {
#ifndef NDEBUG
  if (getenv("BF_DEBUG_ERRORS"))
    fprintf(stderr, "bftree: %s at %s:%d\n", bf_strerror(status), file, line);
#else
  BF_UNUSED(file);
  BF_UNUSED(line);
#endif
  return status;
}

/* ------------------------------------------------------------------------
** CRC-32C, slicing-by-8 tables built once.
*/
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++) {
    for (int t = 1; t < 8; t++)
      crc_table[t][i] =
          (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* The SSE4.2 crc32 instruction computes CRC-32C directly; used when the
** CPU has it (checked once).  Same results as the tables below. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc,
                                                            const uint8_t *p,
                                                            size_t len) {
  uint64_t c = ~crc;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    len -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (len--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return ~c32;
}
#define HAVE_CRC32C_HW 1
#endif

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len);

uint32_t bf_crc32c(uint32_t crc, const void *buf, size_t len) {
#ifdef HAVE_CRC32C_HW
  static _Atomic int hw = -1; /* -1 unknown; relaxed: any thread may set it */
  int h = atomic_load_explicit(&hw, memory_order_relaxed);
  if (h < 0) {
    h = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    atomic_store_explicit(&hw, h, memory_order_relaxed);
  }
  if (h) return crc32c_hw(crc, buf, len);
#endif
  return crc32c_sw(crc, buf, len);
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len) {
  pthread_once(&crc_once, crc_init);
  crc = ~crc;
  while (len >= 8) {
    uint32_t lo = bf_get32(p) ^ crc;
    uint32_t hi = bf_get32(p + 4);
    crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
          crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
          crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
          crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
    p += 8;
    len -= 8;
  }
  while (len--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
  return ~crc;
}

/* ------------------------------------------------------------------------
** Random numbers: xoshiro256** per thread, seeded by splitmix64 from a
** process-wide seed mixed with a per-thread counter.
*/
static _Atomic uint64_t random_base_seed = 0x9E3779B97F4A7C15ull;
static _Atomic uint64_t random_thread_counter = 0;
static _Thread_local uint64_t random_state[4];
static _Thread_local uint64_t random_epoch; /* base seed seen at seeding */
static _Thread_local bool random_seeded;

uint64_t bf_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t splitmix64(uint64_t *x) {
  return bf_mix64(*x += 0x9E3779B97F4A7C15ull);
}

void bf_random_seed(uint64_t seed) {
  /* Relaxed: the seed is a hint; each thread reseeds when it sees a change. */
  atomic_store_explicit(&random_base_seed, seed, memory_order_relaxed);
  atomic_store_explicit(&random_thread_counter, 0, memory_order_relaxed);
  random_seeded = false;
}

uint64_t bf_random(void) {
  uint64_t base = atomic_load_explicit(&random_base_seed, memory_order_relaxed);
  if (!random_seeded || random_epoch != base) {
    uint64_t x = base ^ (0xD1B54A32D192ED03ull *
                         (1 + atomic_fetch_add_explicit(&random_thread_counter,
                                                        1,
                                                        memory_order_relaxed)));
    for (int i = 0; i < 4; i++) random_state[i] = splitmix64(&x);
    random_epoch = base;
    random_seeded = true;
  }
  uint64_t *s = random_state;
  uint64_t result = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = (s[3] << 45) | (s[3] >> 19);
  return result;
}

bool bf_random_percent(uint32_t percent) {
  if (percent == 0) return false;
  if (percent >= 100) return true;
  return (bf_random() % 100) < percent;
}

/* ------------------------------------------------------------------------
** Allocation.
*/
void *bf_malloc(size_t size) {
  if (bf_faultsim(BF_FAULT_MALLOC)) return NULL;
  return malloc(size ? size : 1);
}

void *bf_calloc(size_t count, size_t size) {
  if (bf_faultsim(BF_FAULT_MALLOC)) return NULL;
  return calloc(count ? count : 1, size ? size : 1);
}

void bf_free(void *p) { free(p); }

/* Give free heap memory back to the system.  Opening a tree and writing a
** checkpoint allocate a key per leaf and free them all; glibc keeps that
** memory in the heap (about 3 MiB of resident memory per 50,000 leaves)
** unless asked.  Elsewhere a no-op. */
void bf_release_free_memory(void) {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

static void *big_map(size_t size) {
  void *p = mmap(NULL, size ? size : 1, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void *bf_big_alloc(size_t size) {
  if (bf_faultsim(BF_FAULT_MALLOC)) return NULL;
  return big_map(size);
}

void *bf_big_realloc(void *p, size_t old_size, size_t new_size) {
  if (!p) return big_map(new_size);
#ifdef MREMAP_MAYMOVE
  void *q = mremap(p, old_size ? old_size : 1, new_size ? new_size : 1, MREMAP_MAYMOVE);
  return q == MAP_FAILED ? NULL : q;
#else
  void *q = big_map(new_size);
  if (!q) return NULL;
  memcpy(q, p, old_size < new_size ? old_size : new_size);
  bf_big_free(p, old_size);
  return q;
#endif
}

void bf_big_free(void *p, size_t size) {
  if (p) munmap(p, size ? size : 1);
}

void *bf_malloc_aligned(size_t alignment, size_t size) {
  void *p = NULL;
  if (bf_faultsim(BF_FAULT_MALLOC)) return NULL;
  if (posix_memalign(&p, alignment, size ? size : alignment) != 0) return NULL;
  return p;
}

void bf_free_aligned(void *p) { free(p); }

char *bf_mprintf(const char *format, ...) {
  va_list ap;
  va_start(ap, format);
  int n = vsnprintf(NULL, 0, format, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1); /* not fault-injected: error text only */
  if (!s) return NULL;
  va_start(ap, format);
  vsnprintf(s, (size_t)n + 1, format, ap);
  va_end(ap);
  return s;
}

/* ------------------------------------------------------------------------
** Fault simulator.  Countdowns are atomics so that threads may hit them.
*/
#ifdef BF_TESTING
static _Atomic long fault_countdown[BF_FAULT_COUNT];
static _Atomic bool fault_persist[BF_FAULT_COUNT];
static _Atomic long fault_hits[BF_FAULT_COUNT];

void bf_faultsim_set(enum bf_fault id, long n, bool persist) {
  atomic_store(&fault_persist[id], persist);
  atomic_store(&fault_hits[id], 0);
  atomic_store(&fault_countdown[id], n);
}

long bf_faultsim_hits(enum bf_fault id) { return atomic_load(&fault_hits[id]); }

void bf_crash_point(int fd, const void *buf, size_t len, uint64_t offset) {
  if (!bf_faultsim(BF_FAULT_CRASH)) return;
  const char *torn = getenv("BF_CRASH_TORN");
  if (torn && *torn == '1' && len >= 2) {
    /* The first half only (may fail under O_DIRECT alignment: then the
    ** write is simply lost, which is also a crash outcome). */
    ssize_t n = pwrite(fd, buf, len / 2, (off_t)offset);
    BF_UNUSED(n);
  }
  _exit(BF_CRASH_EXIT);
}

int bf_faultsim(enum bf_fault id) {
  long n = atomic_load_explicit(&fault_countdown[id], memory_order_relaxed);
  if (n <= 0) return 0;
  if (n == 1) {
    if (!atomic_load(&fault_persist[id])) {
      long expect = 1;
      if (!atomic_compare_exchange_strong(&fault_countdown[id], &expect, 0))
        return bf_faultsim(id);
    }
    atomic_fetch_add(&fault_hits[id], 1);
    return 1;
  }
  long expect = n;
  if (!atomic_compare_exchange_strong(&fault_countdown[id], &expect, n - 1))
    return bf_faultsim(id);
  return 0;
}
#endif
