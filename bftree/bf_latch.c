/*
** bf_latch.c: reader/writer latches on one 32-bit atomic word.
**
** Owns: the latch word format and the waiting policy (spin, yield, nap).
** Used by the mapping table (one latch per leaf).  A latch is not
** recursive: a thread must not take a latch it already holds, in any mode
** (with a writer waiting, a second shared acquisition would deadlock).
**
** LATCH WORD (bf_latch, _Atomic uint32_t):
**
**   BITS    DESCRIPTION
**   0..29   number of shared holders (readers)
**   30      WAITING: some writer is waiting; new shared acquisitions wait
**   31      WRITER: held exclusively
**
** Invariants:
**   1. WRITER set implies reader count 0 (and vice versa: a reader count > 0
**      implies WRITER clear).
**   2. Only a thread inside bf_latch_exclusive() sets WAITING.  WAITING is
**      cleared when a writer acquires the latch; writers still waiting set
**      it again on their next wait round.  So preference is not strict FIFO:
**      a reader may slip in between one writer's release and the next
**      writer's re-assertion, but a continuous stream of readers cannot
**      starve a writer.
**   3. Every acquisition (shared or exclusive, including try, upgrade) is an
**      acquire operation; every release (unlatch, downgrade) is a release
**      operation.  So everything written under an exclusive latch is seen
**      by the next holder, and reads under a shared latch are ordered before
**      a later writer's changes.
**
** State machine of one latch (function performing each transition):
**   FREE -> SHARED(1)            [bf_latch_shared, bf_try_latch_shared]
**   SHARED(n) -> SHARED(n+1)     [bf_latch_shared, bf_try_latch_shared]
**   SHARED(n) -> SHARED(n-1)/FREE [bf_unlatch_shared]
**   FREE -> EXCLUSIVE            [bf_latch_exclusive, bf_try_latch_exclusive]
**   SHARED(1) -> EXCLUSIVE       [bf_try_upgrade]
**   EXCLUSIVE -> SHARED(1)       [bf_downgrade]
**   EXCLUSIVE -> FREE            [bf_unlatch_exclusive]
** WAITING is orthogonal: set by blocked writers [bf_latch_exclusive].
*/
#include "bf_int.h"

#include <sched.h>
#include <time.h>

#define LATCH_WRITER 0x80000000u
#define LATCH_WAITING 0x40000000u
#define LATCH_READERS 0x3fffffffu

/* Waiting policy: SPIN_ROUNDS rounds of busy waiting (each a few pause
** instructions), then YIELD_ROUNDS sched_yield()s, then naps. */
#define SPIN_ROUNDS 32
#define YIELD_ROUNDS 16
#define NAP_NANOS 5000

static inline void cpu_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* One round of waiting; *round counts the rounds so far (caller starts it
** at 0). */
static void latch_backoff(uint32_t *round) {
  uint32_t r = (*round)++;
  if (r < SPIN_ROUNDS) {
    for (uint32_t i = 0; i < 4u + r; i++) cpu_pause();
  } else if (r < SPIN_ROUNDS + YIELD_ROUNDS) {
    sched_yield();
  } else {
    struct timespec ts = {0, NAP_NANOS};
    nanosleep(&ts, NULL);
  }
}

/* Acquire in shared mode; waits while a writer holds or waits for it. */
void bf_latch_shared(bf_latch *latch) {
  uint32_t round = 0;
  for (;;) {
    uint32_t v = atomic_load_explicit(latch, memory_order_relaxed);
    if ((v & (LATCH_WRITER | LATCH_WAITING)) == 0) {
      assert((v & LATCH_READERS) != LATCH_READERS);
      /* Acquire: pairs with the release in bf_unlatch_exclusive() /
      ** bf_downgrade() of the previous writer, so its changes are visible. */
      if (atomic_compare_exchange_weak_explicit(latch, &v, v + 1,
                                                memory_order_acquire,
                                                memory_order_relaxed))
        return;
      continue; /* another reader changed the count: retry at once */
    }
    latch_backoff(&round);
  }
}

/* Release a shared hold. */
void bf_unlatch_shared(bf_latch *latch) {
  assert((atomic_load_explicit(latch, memory_order_relaxed) & LATCH_READERS) >
         0);
  /* Release: orders this reader's reads before a later writer's acquire
  ** (the CAS in bf_latch_exclusive / bf_try_latch_exclusive / upgrade). */
  atomic_fetch_sub_explicit(latch, 1, memory_order_release);
}

/* Acquire exclusively; announces itself with WAITING while it waits. */
void bf_latch_exclusive(bf_latch *latch) {
  uint32_t round = 0;
  for (;;) {
    uint32_t v = atomic_load_explicit(latch, memory_order_relaxed);
    if ((v & ~LATCH_WAITING) == 0) {
      /* Acquire: pairs with the release of the last reader
      ** (bf_unlatch_shared) or writer (bf_unlatch_exclusive). WAITING is
      ** cleared (invariant 2). */
      if (atomic_compare_exchange_weak_explicit(latch, &v, LATCH_WRITER,
                                                memory_order_acquire,
                                                memory_order_relaxed))
        return;
      continue;
    }
    if ((v & LATCH_WAITING) == 0) {
      /* Relaxed: WAITING only steers other threads' choices; it publishes
      ** no data. */
      atomic_fetch_or_explicit(latch, LATCH_WAITING, memory_order_relaxed);
    }
    latch_backoff(&round);
  }
}

/* Release an exclusive hold (keeps WAITING for the writers still waiting). */
void bf_unlatch_exclusive(bf_latch *latch) {
  assert(atomic_load_explicit(latch, memory_order_relaxed) & LATCH_WRITER);
  /* Release: publishes everything written under the latch to the next
  ** acquirer (the acquire CAS in any acquisition function). */
  atomic_fetch_and_explicit(latch, ~LATCH_WRITER, memory_order_release);
}

/* Shared without waiting: false when a writer holds or waits for it. */
bool bf_try_latch_shared(bf_latch *latch) {
  uint32_t v = atomic_load_explicit(latch, memory_order_relaxed);
  while ((v & (LATCH_WRITER | LATCH_WAITING)) == 0) {
    assert((v & LATCH_READERS) != LATCH_READERS);
    /* Acquire: as in bf_latch_shared().  On failure v is reloaded and the
    ** loop retries only while no writer is involved. */
    if (atomic_compare_exchange_weak_explicit(latch, &v, v + 1,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return true;
  }
  return false;
}

/* Exclusive without waiting: false when anyone holds it. */
bool bf_try_latch_exclusive(bf_latch *latch) {
  uint32_t v = atomic_load_explicit(latch, memory_order_relaxed);
  while ((v & ~LATCH_WAITING) == 0) {
    /* Acquire: as in bf_latch_exclusive(). */
    if (atomic_compare_exchange_weak_explicit(latch, &v, LATCH_WRITER,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return true;
  }
  return false;
}

/* Shared -> exclusive when the caller is the only reader.  WAITING is kept
** (the waiting writers still wait, now for us).  On false the caller still
** holds its shared latch. */
bool bf_try_upgrade(bf_latch *latch) {
  uint32_t v = atomic_load_explicit(latch, memory_order_relaxed);
  assert((v & LATCH_READERS) > 0 && (v & LATCH_WRITER) == 0);
  while ((v & LATCH_READERS) == 1) {
    /* Acquire: the caller's earlier shared reads need no ordering, but the
    ** other readers' releases (bf_unlatch_shared) must happen before our
    ** writes; success means their count decrements are all visible. */
    if (atomic_compare_exchange_weak_explicit(
            latch, &v, LATCH_WRITER | (v & LATCH_WAITING),
            memory_order_acquire, memory_order_relaxed))
      return true;
  }
  return false;
}

/* Exclusive -> shared, atomically (no writer can get in between). */
void bf_downgrade(bf_latch *latch) {
  uint32_t v = atomic_load_explicit(latch, memory_order_relaxed);
  assert(v & LATCH_WRITER);
  /* Release: publishes the writes made under the exclusive latch to the
  ** readers that acquire after this (their acquire CAS reads this value or
  ** a later one in the modification order). */
  while (!atomic_compare_exchange_weak_explicit(
      latch, &v, (v & LATCH_WAITING) | 1u, memory_order_release,
      memory_order_relaxed)) {
  }
}

bool bf_latch_held_exclusive(bf_latch *latch) {
  return (atomic_load_explicit(latch, memory_order_relaxed) & LATCH_WRITER) !=
         0;
}

bool bf_latch_held_shared(bf_latch *latch) {
  return (atomic_load_explicit(latch, memory_order_relaxed) & LATCH_READERS) !=
         0;
}
