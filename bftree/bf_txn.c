/*
** bf_txn.c: transactions.
**
** A transaction is a private write set (bf_wset.c) plus a state:
**
**   ACTIVE --bf_txn_prepare--> PREPARED --bf_txn_commit--> (freed)
**      |                          |
**      +--bf_txn_abort--> (freed) +--bf_txn_abort--> checkpoint, (freed)
**
** bf_txn_prepare takes the tree's write gate EXCLUSIVE and holds it until
** the transaction commits or aborts: prepared transactions are serialised
** with each other, with autocommit writes (which hold the gate shared) and
** with checkpoints.  That is what keeps the log's order equal to the order
** in which writes reach the tree, so that replay after a crash rebuilds the
** state that was visible.  Readers never take the gate.
**
** Invariants:
**   1. Between prepare and commit/abort the transaction holds the gate
**      exclusive; nothing else is appended to the log meanwhile.
**   2. A prepared transaction's operations are in the log (durable per
**      `synchronous`) before any of them is applied to the tree.
**   3. Abort after prepare checkpoints (after releasing the gate), so the
**      log no longer holds the transaction and replay cannot resurrect it.
*/
#include "bf_int.h"

#include <stdlib.h>

struct bf_txn {
  bf_tree *tree;
  struct bf_wset *wset;
  bool prepared;
  uint64_t commit_id;
};

int bf_txn_begin(bf_tree *t, bf_txn **out) {
  bf_txn *x = bf_calloc(1, sizeof *x);
  *out = NULL;
  if (!x) return BF_NOMEM;
  int rc = bf_wset_create(&x->wset);
  if (rc != BF_OK) {
    bf_free(x);
    return rc;
  }
  x->tree = t;
  *out = x;
  return BF_OK;
}

static void txn_free(bf_txn *x) {
  bf_wset_destroy(x->wset);
  bf_free(x);
}

int bf_txn_put(bf_txn *x, const void *key, size_t klen, const void *value,
               size_t vlen) {
  if (x->prepared) return BF_INVALID;
  int rc = bf_tree_check_write(x->tree, key, klen, value, vlen);
  if (rc != BF_OK) return rc;
  return bf_wset_put(x->wset, key, (uint32_t)klen, value, (uint32_t)vlen);
}

int bf_txn_delete(bf_txn *x, const void *key, size_t klen) {
  if (x->prepared) return BF_INVALID;
  int rc = bf_tree_check_write(x->tree, key, klen, NULL, 0);
  if (rc != BF_OK) return rc;
  return bf_wset_delete(x->wset, key, (uint32_t)klen);
}

int bf_txn_get(bf_txn *x, const void *key, size_t klen, void *buffer,
               size_t buffer_size, size_t *value_len) {
  int op;
  const uint8_t *v;
  uint32_t vl;
  if (klen > x->tree->max_key) return BF_TOOBIG;
  if (bf_wset_get(x->wset, key, (uint32_t)klen, &op, &v, &vl) == BF_OK) {
    if (op == BF_WAL_DELETE) return BF_NOTFOUND;
    size_t n = vl < buffer_size ? vl : buffer_size;
    if (n) memcpy(buffer, v, n);
    *value_len = vl;
    return BF_OK;
  }
  return bf_get(x->tree, key, klen, buffer, buffer_size, value_len);
}

uint32_t bf_txn_savepoint(bf_txn *x) { return bf_wset_savepoint(x->wset); }

int bf_txn_rollback_to(bf_txn *x, uint32_t mark) {
  if (x->prepared) return BF_INVALID;
  return bf_wset_rollback_to(x->wset, mark);
}

void bf_txn_release(bf_txn *x, uint32_t mark) { bf_wset_release(x->wset, mark); }

uint64_t bf_txn_size(const bf_txn *x) { return bf_wset_count(x->wset); }

struct bf_wset *bf_txn_wset(bf_txn *x) { return x->wset; }

static int batch_add(void *ctx, int op, const uint8_t *key, uint32_t klen,
                     const uint8_t *value, uint32_t vlen) {
  struct bf_wal_batch *b = ctx;
  return op == BF_WAL_PUT ? bf_wal_batch_put(b, key, klen, value, vlen)
                          : bf_wal_batch_delete(b, key, klen);
}

int bf_txn_prepare(bf_txn *x, uint64_t commit_id) {
  bf_tree *t = x->tree;
  if (x->prepared) return BF_INVALID;
  /* The evictions the commit would do holding the gate, done before it.
  ** Best effort, but a failed eviction merge puts the tree in its error
  ** state: checked next, before anything is logged. */
  (void)bf_make_room(t);
  if (atomic_load(&t->error) != BF_OK) return BF_READONLY;
  bf_gate_exclusive(&t->checkpoint_gate);
  /* Checked again: a checkpoint that held the gate may have failed. */
  int rc = atomic_load(&t->error) != BF_OK ? BF_READONLY : BF_OK;
  if (rc == BF_OK && t->wal) {
    struct bf_wal_batch batch;
    uint64_t end = 0;
    memset(&batch, 0, sizeof batch);
    rc = bf_wset_range(x->wset, NULL, 0, true, NULL, 0, true, batch_add,
                       &batch);
    if (rc == BF_OK) rc = bf_wal_append(t->wal, &batch, commit_id, &end);
    if (rc == BF_OK && t->opts.synchronous == BF_SYNC_FULL)
      rc = bf_wal_sync(t->wal, end);
    bf_wal_batch_free(&batch);
    if (rc == BF_OK) BF_COUNT(t, commits, 1);
  }
  if (rc != BF_OK) {
    bf_gate_release(&t->checkpoint_gate);
    return rc;
  }
  x->prepared = true;
  x->commit_id = commit_id;
  return BF_OK;
}

static int apply_one(void *ctx, int op, const uint8_t *key, uint32_t klen,
                     const uint8_t *value, uint32_t vlen) {
  return bf_tree_apply(ctx, op == BF_WAL_PUT ? BF_REC_INSERT : BF_REC_TOMBSTONE,
                       key, klen, value, vlen);
}

int bf_txn_commit(bf_txn *x) {
  bf_tree *t = x->tree;
  int rc = BF_OK;
  if (!x->prepared) rc = bf_txn_prepare(x, 0);
  if (rc != BF_OK) {
    txn_free(x);
    return rc;
  }
  /* Invariant 2: logged; now make it visible.  A failure here leaves the
  ** tree short of what the log holds: the tree goes into its error state
  ** (recovery from the log repairs it at the next open). */
  rc = bf_wset_range(x->wset, NULL, 0, true, NULL, 0, true, apply_one, t);
  if (rc != BF_OK) bf_tree_set_error(t, rc);
  bf_tree_note_commit(t, x->commit_id);
  bf_gate_release(&t->checkpoint_gate);
  txn_free(x);
  if (rc == BF_OK) bf_tree_maybe_checkpoint(t);
  return rc;
}

int bf_txn_abort(bf_txn *x) {
  bf_tree *t = x->tree;
  bool prepared = x->prepared;
  int rc = BF_OK;
  if (prepared) bf_gate_release(&t->checkpoint_gate);
  txn_free(x);
  if (prepared && t->wal) rc = bf_checkpoint(t); /* invariant 3 */
  return rc;
}
