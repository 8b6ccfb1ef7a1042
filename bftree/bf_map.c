/*
** bf_map.c: the mapping table, leaf id -> struct bf_leaf_entry.
**
** Owns: the storage of leaf entries and the assignment of leaf ids.  The
** fields of an entry belong to the leaf's users (bf_tree.c), protected by the
** entry's latch; this file only creates zeroed entries and finds them.
**
** LAYOUT: entries live in CHUNKS of MAP_CHUNK_ENTRIES entries each.  The
** directory (part of struct bf_map) holds MAP_DIR_SIZE chunk pointers, enough
** for every 32-bit id:
**
**   id bits   DESCRIPTION
**   16..31    directory index (chunk number)
**   0..15     entry index within the chunk
**
** The directory array is allocated zeroed with the map (512 KiB of virtual
** memory; the kernel backs only the pages that are written).  Chunks are
** allocated zeroed on first use, so a new entry is all zeros (latch free,
** flags 0, mini NULL, disk_page BF_NO_PAGE).
**
** Invariants:
**   1. count <= MAP_DIR_SIZE * MAP_CHUNK_ENTRIES - 1 (id UINT32_MAX is never
**      handed out, so count fits in 32 bits).
**   2. For every id < count, dir[id >> 16] is non-NULL and was published
**      (release) before count was raised past id (release).
**   3. Chunks never move and are freed only by bf_map_destroy(), so an entry
**      pointer stays valid for the lifetime of the map.
**   4. count, dir[] and nchunks change only under add_mutex.
*/
#include "bf_int.h"

#include <pthread.h>
#include <stdlib.h>

#define MAP_CHUNK_SHIFT 16
#define MAP_CHUNK_ENTRIES (1u << MAP_CHUNK_SHIFT)
#define MAP_DIR_SIZE (1u << (32 - MAP_CHUNK_SHIFT))
#define MAP_MAX_COUNT 0xffffffffu /* ids 0 .. 0xfffffffe */

struct bf_map {
  pthread_mutex_t add_mutex; /* serialises bf_map_add() */
  /* Written under add_mutex, read without it (atomics): */
  _Atomic uint32_t count;   /* ids handed out: 0 .. count-1 */
  _Atomic uint32_t nchunks; /* chunks allocated (for bf_map_bytes) */
  _Atomic(struct bf_leaf_entry *) dir[MAP_DIR_SIZE];
};

/* Create an empty map.  BF_OK or BF_NOMEM (*out NULL). */
int bf_map_create(struct bf_map **out) {
  *out = NULL;
  struct bf_map *map = bf_calloc(1, sizeof *map);
  if (!map) return BF_NOMEM;
  if (pthread_mutex_init(&map->add_mutex, NULL) != 0) {
    bf_free(map);
    return BF_NOMEM;
  }
  /* calloc's zero bytes are valid null pointers / zero counts for the
  ** atomics on every platform we build for; the map is not shared yet. */
  *out = map;
  return BF_OK;
}

/* Free the map and every chunk.  No other thread may be using it. */
void bf_map_destroy(struct bf_map *map) {
  if (!map) return;
  uint32_t n = atomic_load_explicit(&map->nchunks, memory_order_relaxed);
  for (uint32_t i = 0; i < n; i++) {
    bf_free(atomic_load_explicit(&map->dir[i], memory_order_relaxed));
  }
  pthread_mutex_destroy(&map->add_mutex);
  bf_free(map);
}

/*
** Hand out the next id; *id and *entry (may be NULL) get it and its zeroed
** entry.  Returns BF_OK, or BF_NOMEM when a chunk cannot be allocated or all
** 2^32-1 ids are used (then *id and *entry are untouched and the map is
** unchanged).  Safe to call from any number of threads.
*/
int bf_map_add(struct bf_map *map, uint32_t *id, struct bf_leaf_entry **entry) {
  int rc = BF_OK;
  pthread_mutex_lock(&map->add_mutex);
  uint32_t n = atomic_load_explicit(&map->count, memory_order_relaxed);
  if (n == MAP_MAX_COUNT) {
    rc = BF_NOMEM;
    goto out_unlock;
  }
  uint32_t chunk = n >> MAP_CHUNK_SHIFT;
  struct bf_leaf_entry *base =
      atomic_load_explicit(&map->dir[chunk], memory_order_relaxed);
  if (!base) {
    assert(chunk == atomic_load_explicit(&map->nchunks, memory_order_relaxed));
    base = bf_calloc(MAP_CHUNK_ENTRIES, sizeof *base);
    if (!base) {
      rc = BF_NOMEM;
      goto out_unlock;
    }
    /* Release: publishes the zeroed chunk; pairs with the acquire load in
    ** bf_map_get() (invariant 2). */
    atomic_store_explicit(&map->dir[chunk], base, memory_order_release);
    atomic_store_explicit(&map->nchunks, chunk + 1, memory_order_relaxed);
  }
  /* Release: a thread that reads count (acquire, in bf_map_count) and then
  ** looks up any id below it finds the chunk published above. */
  atomic_store_explicit(&map->count, n + 1, memory_order_release);
  *id = n;
  if (entry) *entry = &base[n & (MAP_CHUNK_ENTRIES - 1)];
out_unlock:
  pthread_mutex_unlock(&map->add_mutex);
  return rc;
}

/* The entry of id.  id must be < bf_map_count() as seen by this thread, or
** must have been obtained (directly or through a published structure) from
** bf_map_add().  Lock-free. */
struct bf_leaf_entry *bf_map_get(struct bf_map *map, uint32_t id) {
  /* Acquire: pairs with the release store of the chunk pointer in
  ** bf_map_add(), so the chunk's zeroed contents are visible. */
  struct bf_leaf_entry *base = atomic_load_explicit(
      &map->dir[id >> MAP_CHUNK_SHIFT], memory_order_acquire);
  assert(base != NULL);
  return &base[id & (MAP_CHUNK_ENTRIES - 1)];
}

uint32_t bf_map_count(const struct bf_map *map) {
  /* Acquire: pairs with the release store in bf_map_add() (invariant 2).
  ** The cast drops const only for the benefit of older atomic_load
  ** prototypes; nothing is written. */
  return atomic_load_explicit((_Atomic uint32_t *)&map->count,
                              memory_order_acquire);
}

/* Bytes held: the map struct (with its directory) plus every chunk. */
uint64_t bf_map_bytes(const struct bf_map *map) {
  uint32_t n = atomic_load_explicit((_Atomic uint32_t *)&map->nchunks,
                                    memory_order_relaxed);
  return (uint64_t)sizeof *map +
         (uint64_t)n * MAP_CHUNK_ENTRIES * sizeof(struct bf_leaf_entry);
}
