/*
** test_keyenc.c: the bftree SQLite module's key and record encodings
** (ext/bfx_codec.c), tested without SQLite or the engine.
**
** The codec source is compiled into this program directly, so the generic
** unit-test rule of the Makefile (which links the engine library) builds it;
** ext/ext.mk adds the codec files as prerequisites.
**
** - key order: for random pairs of values of every class, memcmp-then-length
**   order of the keys equals a reference comparator written from SQLite's
**   documented BINARY order (NULL < numbers < text < blob, integers and reals
**   compared exactly), and equal keys <=> equal values (invariants 1, 2);
** - key decode gives the value back (integers, text, blobs exactly; reals by
**   value);
** - records: random rows encode, parse and decode column by column exactly,
**   with and without the key column taken from the key;
** - malformed records and keys: every truncation and random byte flips are
**   refused or decoded without reading outside the buffer (run under asan).
*/
#include "test_util.h"

#include "../ext/bfx_codec.c"

#include <float.h>
#include <math.h>

/* ------------------------------------------------------------ reference */

static int class_of(const bfx_value *v) {
  switch (v->type) {
    case BFX_NULL: return 0;
    case BFX_INTEGER:
    case BFX_FLOAT: return 1;
    case BFX_TEXT: return 2;
    default: return 3;
  }
}

/* Exact comparison of an integer with a real (no rounding of i). */
static int int_real_cmp(int64_t i, double r) {
  if (r < -9223372036854775808.0) return 1;
  if (r >= 9223372036854775808.0) return -1;
  int64_t y = (int64_t)r;
  if (i < y) return -1;
  if (i > y) return 1;
  double s = (double)i;
  if (s < r) return -1;
  if (s > r) return 1;
  return 0;
}

static int ref_cmp(const bfx_value *a, const bfx_value *b) {
  int ca = class_of(a), cb = class_of(b);
  if (ca != cb) return ca < cb ? -1 : 1;
  if (ca == 0) return 0;
  if (ca == 1) {
    if (a->type == BFX_INTEGER && b->type == BFX_INTEGER)
      return a->i < b->i ? -1 : a->i > b->i;
    if (a->type == BFX_FLOAT && b->type == BFX_FLOAT)
      return a->r < b->r ? -1 : a->r > b->r;
    if (a->type == BFX_INTEGER) return int_real_cmp(a->i, b->r);
    return -int_real_cmp(b->i, a->r);
  }
  size_t n = a->n < b->n ? a->n : b->n;
  int c = n ? memcmp(a->z, b->z, n) : 0;
  if (c) return c < 0 ? -1 : 1;
  return a->n < b->n ? -1 : a->n > b->n;
}

static int key_cmp(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
  size_t n = na < nb ? na : nb;
  int c = memcmp(a, b, n);
  if (c) return c < 0 ? -1 : 1;
  return na < nb ? -1 : na > nb;
}

/* ------------------------------------------------------------ generator */

static const double special_reals[] = {
    0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 5.0, 5.5, -5.5,
    255.0, 255.5, 256.0, -256.0, -256.5, 1e-300, -1e-300, 4.9e-324,
    -4.9e-324, 2.2250738585072014e-308, 0.1, -0.1, 1e15 + 0.5,
    4503599627370495.5, 9007199254740992.0, 9007199254740993.0,
    9223372036854775807.0, -9223372036854775808.0, 9223372036854774784.0,
    -9223372036854777856.0, 1.8446744073709552e19, -1.8446744073709552e19,
    1e300, -1e300, DBL_MAX, -DBL_MAX, INFINITY, -INFINITY};

static const int64_t special_ints[] = {
    0, 1, -1, 2, -2, 127, 128, -128, -129, 255, 256, -256, -257, 65535,
    65536, -65536, -65537, 9007199254740992LL, 9007199254740993LL,
    -9007199254740993LL, INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1,
    (int64_t)1 << 32, -((int64_t)1 << 32), 5, 6, -5, -6};

#define NSPEC_R (sizeof special_reals / sizeof special_reals[0])
#define NSPEC_I (sizeof special_ints / sizeof special_ints[0])

static uint8_t pool[1 << 16];

static void gen_value(uint64_t *st, bfx_value *v, uint8_t *buf) {
  memset(v, 0, sizeof *v);
  uint64_t r = test_rand(st);
  switch (r % 10) {
    case 0:
      v->type = BFX_NULL;
      break;
    case 1:
      v->type = BFX_INTEGER;
      v->i = special_ints[test_rand(st) % NSPEC_I];
      break;
    case 2:
    case 3: {
      v->type = BFX_INTEGER;
      int bits = (int)(test_rand(st) % 64);
      int64_t x = (int64_t)(test_rand(st) >> (63 - bits));
      v->i = (test_rand(st) & 1) ? x : -x;
      if (test_rand(st) % 4 == 0) v->i = (int64_t)(test_rand(st) % 21) - 10;
      break;
    }
    case 4:
      v->type = BFX_FLOAT;
      v->r = special_reals[test_rand(st) % NSPEC_R];
      break;
    case 5: {
      v->type = BFX_FLOAT;
      uint64_t u = test_rand(st);
      double d;
      memcpy(&d, &u, sizeof d);
      if (isnan(d)) d = 0.25;
      v->r = d;
      break;
    }
    case 6: {
      v->type = BFX_FLOAT;
      /* near small integers, so that ties with integers are frequent */
      int64_t ip = (int64_t)(test_rand(st) % 21) - 10;
      v->r = (double)ip + (double)(test_rand(st) % 4) / 4.0;
      break;
    }
    default: {
      v->type = (r % 10 == 9) ? BFX_BLOB : BFX_TEXT;
      size_t n = test_rand(st) % 6;
      if (test_rand(st) % 8 == 0) n = test_rand(st) % 300;
      for (size_t k = 0; k < n; k++) {
        uint64_t c = test_rand(st);
        buf[k] = (c & 3) ? (uint8_t)('a' + c % 3) : (uint8_t)(c >> 8);
      }
      v->z = buf;
      v->n = n;
      break;
    }
  }
}

static size_t enc(const bfx_value *v, uint8_t *out, size_t cap) {
  size_t n = bfx_key_encode(v, out, cap);
  assert_true(n <= cap);
  if (v->type == BFX_INTEGER || v->type == BFX_FLOAT)
    assert_true(n <= BFX_KEY_NUM_MAX);
  /* a short buffer reports the same length and writes only what fits */
  uint8_t small[4];
  assert_int_equal(bfx_key_encode(v, small, sizeof small), n);
  assert_int_equal(bfx_key_encode(v, NULL, 0), n);
  return n;
}

/* --------------------------------------------------------------- tests */

static void test_key_order_random(void **state) {
  (void)state;
  uint64_t st = test_seed("test_key_order_random");
  long iters = test_scale(200000);
  uint8_t ka[512], kb[512];
  for (long it = 0; it < iters; it++) {
    bfx_value a, b;
    gen_value(&st, &a, pool);
    gen_value(&st, &b, pool + 1024);
    size_t na = enc(&a, ka, sizeof ka), nb = enc(&b, kb, sizeof kb);
    int want = ref_cmp(&a, &b);
    int got = key_cmp(ka, na, kb, nb);
    if (want != got) {
      fail_msg("order mismatch at iteration %ld: types %d/%d i=%lld/%lld "
               "r=%.17g/%.17g want %d got %d",
               it, a.type, b.type, (long long)a.i, (long long)b.i, a.r, b.r,
               want, got);
    }
  }
}

static void test_key_order_specials(void **state) {
  (void)state;
  /* every pair of special integers and reals */
  bfx_value vals[NSPEC_I + NSPEC_R];
  size_t nv = 0;
  for (size_t k = 0; k < NSPEC_I; k++) {
    memset(&vals[nv], 0, sizeof vals[nv]);
    vals[nv].type = BFX_INTEGER;
    vals[nv++].i = special_ints[k];
  }
  for (size_t k = 0; k < NSPEC_R; k++) {
    memset(&vals[nv], 0, sizeof vals[nv]);
    vals[nv].type = BFX_FLOAT;
    vals[nv++].r = special_reals[k];
  }
  uint8_t ka[512], kb[512];
  for (size_t x = 0; x < nv; x++) {
    for (size_t y = 0; y < nv; y++) {
      size_t na = enc(&vals[x], ka, sizeof ka);
      size_t nb = enc(&vals[y], kb, sizeof kb);
      int want = ref_cmp(&vals[x], &vals[y]);
      int got = key_cmp(ka, na, kb, nb);
      if (want != got)
        fail_msg("pair %zu/%zu (%.17g vs %.17g): want %d got %d", x, y,
                 vals[x].type == BFX_FLOAT ? vals[x].r : (double)vals[x].i,
                 vals[y].type == BFX_FLOAT ? vals[y].r : (double)vals[y].i,
                 want, got);
    }
  }
}

static void test_key_compact(void **state) {
  (void)state;
  uint8_t k[512];
  bfx_value v = {.type = BFX_INTEGER, .i = 0};
  assert_int_equal(bfx_key_encode(&v, k, sizeof k), 1);
  v.i = 200;
  assert_int_equal(bfx_key_encode(&v, k, sizeof k), 2);
  v.i = -1;
  assert_int_equal(bfx_key_encode(&v, k, sizeof k), 1);
  v.i = 100000;
  assert_int_equal(bfx_key_encode(&v, k, sizeof k), 4);
  v.i = INT64_MIN;
  assert_int_equal(bfx_key_encode(&v, k, sizeof k), 9);
  bfx_value r = {.type = BFX_FLOAT, .r = 5.0};
  bfx_value i5 = {.type = BFX_INTEGER, .i = 5};
  uint8_t k2[16];
  size_t n1 = bfx_key_encode(&r, k, sizeof k);
  size_t n2 = bfx_key_encode(&i5, k2, sizeof k2);
  assert_int_equal(n1, n2);
  assert_memory_equal(k, k2, n1);
  r.r = 5.5; /* 5 then one fraction byte 0x80 */
  assert_int_equal(bfx_key_encode(&r, k, sizeof k), n2 + 1);
  assert_int_equal(k[n2], 0x80);
  r.r = -0.0; /* same key as 0 */
  assert_int_equal(bfx_key_encode(&r, k, sizeof k), 1);
  assert_int_equal(k[0], BFX_TAG_POS_BASE);
  r.r = 4.9e-324; /* longest fraction */
  assert_true(bfx_key_encode(&r, k, sizeof k) <= BFX_KEY_NUM_MAX);
  bfx_value t = {.type = BFX_TEXT, .z = (const uint8_t *)"abc", .n = 3};
  assert_int_equal(bfx_key_encode(&t, k, sizeof k), 4);
  assert_int_equal(k[0], BFX_TAG_TEXT);
  assert_memory_equal(k + 1, "abc", 3);
}

static void test_key_decode(void **state) {
  (void)state;
  uint64_t st = test_seed("test_key_decode");
  long iters = test_scale(100000);
  uint8_t k[512];
  for (long it = 0; it < iters; it++) {
    bfx_value a, d;
    gen_value(&st, &a, pool);
    size_t n = enc(&a, k, sizeof k);
    assert_int_equal(bfx_key_decode(k, n, &d), BFX_OK);
    assert_int_equal(ref_cmp(&a, &d), 0);
    if (bfx_key_roundtrips(&a)) {
      assert_int_equal(d.type, a.type);
      if (a.type == BFX_INTEGER) assert_true(d.i == a.i);
      if (a.type == BFX_TEXT || a.type == BFX_BLOB) {
        assert_int_equal(d.n, a.n);
        if (a.n) assert_memory_equal(d.z, a.z, a.n);
      }
    }
    if (a.type == BFX_FLOAT && d.type == BFX_FLOAT)
      assert_true(d.r == a.r);
    /* truncations and flips decode or fail cleanly, never read outside */
    for (size_t cut = 0; cut < n; cut++) {
      uint8_t *copy = malloc(cut ? cut : 1);
      memcpy(copy, k, cut);
      (void)bfx_key_decode(copy, cut, &d);
      free(copy);
    }
    if (n) {
      uint8_t *copy = malloc(n);
      memcpy(copy, k, n);
      copy[test_rand(&st) % n] ^= (uint8_t)(1u << (test_rand(&st) % 8));
      (void)bfx_key_decode(copy, n, &d);
      free(copy);
    }
  }
}

static void value_equal(const bfx_value *a, const bfx_value *b) {
  assert_int_equal(a->type, b->type);
  switch (a->type) {
    case BFX_INTEGER: assert_true(a->i == b->i); break;
    case BFX_FLOAT:
      assert_memory_equal(&a->r, &b->r, sizeof a->r); /* bit exact: -0.0 */
      break;
    case BFX_TEXT:
    case BFX_BLOB:
      assert_int_equal(a->n, b->n);
      if (a->n) assert_memory_equal(a->z, b->z, a->n);
      break;
    default: break;
  }
}

static void test_record_roundtrip(void **state) {
  (void)state;
  uint64_t st = test_seed("test_record_roundtrip");
  long iters = test_scale(50000);
  enum { MAXCOL = 12 };
  uint8_t bufs[MAXCOL][400];
  uint8_t key[512];
  for (long it = 0; it < iters; it++) {
    int ncol = 1 + (int)(test_rand(&st) % MAXCOL);
    bfx_value vals[MAXCOL];
    for (int c = 0; c < ncol; c++) gen_value(&st, &vals[c], bufs[c]);
    int kc = (int)(test_rand(&st) % ncol);
    if (vals[kc].type == BFX_NULL) vals[kc].type = BFX_INTEGER;
    size_t kn = enc(&vals[kc], key, sizeof key);
    int key_col = bfx_key_roundtrips(&vals[kc]) && (test_rand(&st) & 1) ? kc : -1;
    size_t n = bfx_record_encode(ncol, vals, key_col, NULL, 0);
    uint8_t *rec = malloc(n);
    assert_int_equal(bfx_record_encode(ncol, vals, key_col, rec, n), n);
    uint64_t types[MAXCOL + 2];
    size_t offs[MAXCOL + 2];
    bfx_record r = {.types = types, .offsets = offs};
    /* asking for more columns than stored: the extra ones read NULL */
    int ask = ncol + (int)(test_rand(&st) % 3);
    assert_int_equal(bfx_record_parse(rec, n, ask, &r), BFX_OK);
    for (int c = 0; c < ask; c++) {
      bfx_value d;
      assert_int_equal(bfx_record_column(&r, c, key, kn, &d), BFX_OK);
      if (c < ncol)
        value_equal(&vals[c], &d);
      else
        assert_int_equal(d.type, BFX_NULL);
    }
    /* asking for fewer columns works too */
    if (ncol > 1) {
      assert_int_equal(bfx_record_parse(rec, n, ncol - 1, &r), BFX_OK);
      bfx_value d;
      assert_int_equal(bfx_record_column(&r, 0, key, kn, &d), BFX_OK);
      value_equal(&vals[0], &d);
    }
    /* every truncation is refused or decodes inside the buffer */
    for (size_t cut = 0; cut < n; cut++) {
      uint8_t *copy = malloc(cut ? cut : 1);
      memcpy(copy, rec, cut);
      if (bfx_record_parse(copy, cut, ask, &r) == BFX_OK) {
        bfx_value d;
        for (int c = 0; c < ask; c++) (void)bfx_record_column(&r, c, key, kn, &d);
      }
      free(copy);
    }
    /* random corruption likewise */
    for (int flip = 0; flip < 4; flip++) {
      uint8_t *copy = malloc(n);
      memcpy(copy, rec, n);
      copy[test_rand(&st) % n] = (uint8_t)test_rand(&st);
      if (bfx_record_parse(copy, n, ask, &r) == BFX_OK) {
        bfx_value d;
        for (int c = 0; c < ask; c++) (void)bfx_record_column(&r, c, key, kn, &d);
      }
      free(copy);
    }
    free(rec);
  }
}

static void test_record_compact(void **state) {
  (void)state;
  /* (id INTEGER key from the key, v TEXT 'hello', n NULL, i 1) */
  bfx_value vals[4] = {
      {.type = BFX_INTEGER, .i = 123456},
      {.type = BFX_TEXT, .z = (const uint8_t *)"hello", .n = 5},
      {.type = BFX_NULL},
      {.type = BFX_INTEGER, .i = 1}};
  uint8_t rec[64];
  size_t n = bfx_record_encode(4, vals, 0, rec, sizeof rec);
  /* format + ncol + 4 types (1 byte each) + 5 text bytes */
  assert_int_equal(n, 1 + 1 + 4 + 5);
  assert_int_equal(rec[2], BFX_ST_FROM_KEY);
  /* reserved serial types are corrupt */
  uint8_t bad[] = {BFX_RECORD_FORMAT, 1, 13};
  uint64_t t[2];
  size_t o[2];
  bfx_record r = {.types = t, .offsets = o};
  assert_int_equal(bfx_record_parse(bad, sizeof bad, 1, &r), BFX_CORRUPT);
  uint8_t badfmt[] = {7, 0};
  assert_int_equal(bfx_record_parse(badfmt, sizeof badfmt, 1, &r), BFX_CORRUPT);
  /* a body running past the end is corrupt */
  uint8_t over[] = {BFX_RECORD_FORMAT, 1, BFX_ST_TEXT_BASE + 2 * 10, 'a'};
  assert_int_equal(bfx_record_parse(over, sizeof over, 1, &r), BFX_CORRUPT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_key_compact),
      cmocka_unit_test(test_key_order_specials),
      cmocka_unit_test(test_key_order_random),
      cmocka_unit_test(test_key_decode),
      cmocka_unit_test(test_record_compact),
      cmocka_unit_test(test_record_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
