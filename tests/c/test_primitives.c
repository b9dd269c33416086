/* test_primitives: the protobuf wire primitives (pb.h), the hybrid logical clock (hlc.h),
 * xxh3 as the core computes it (hash.h, ringkv_hash) and the per-call arena (util.h). */
#include "testlib.h"

#include "hash.h"
#include "hlc.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/allocator_interface.h>
#define TL_HAVE_ASAN_STATS 1
#endif
#endif

static rk_slice sl(const uint8_t *p, size_t n) {
  rk_slice s = {p, n};
  return s;
}

/* ------------------------------------------------------------------------------------- */
/* pb.h */

static void varint_round_trip_one(uint64_t v) {
  pb_enc e = tl_enc();
  pb_put_varint_raw(&e, v);
  rk_slice s = tl_done(&e);
  assert_int_equal(s.len, pb_varint_size(v));
  /* Minimal: the last byte is non-zero unless the value is 0. */
  if (v != 0) assert_int_not_equal(s.ptr[s.len - 1], 0);
  pb_rd r = pb_reader(s);
  uint64_t got = ~v;
  assert_true(pb_read_varint(&r, &got));
  assert_true(got == v);
  assert_true(pb_done(&r));
}

static void test_varint_round_trip(void **state) {
  (void)state;
  static const uint64_t edges[] = {0, 1, 127, 128, 255, 256, 16383, 16384, 2097151, 2097152,
                                   UINT32_MAX, (uint64_t)UINT32_MAX + 1, UINT64_C(1) << 56,
                                   (UINT64_C(1) << 63) - 1, UINT64_C(1) << 63, UINT64_MAX};
  for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) varint_round_trip_one(edges[i]);
  assert_int_equal(pb_varint_size(0), 1);
  assert_int_equal(pb_varint_size(127), 1);
  assert_int_equal(pb_varint_size(128), 2);
  assert_int_equal(pb_varint_size(UINT64_MAX), 10);
  tl_rng rng = {1};
  for (int i = 0; i < 20000; i++) {
    uint64_t v = tl_next(&rng) >> tl_below(&rng, 64);
    varint_round_trip_one(v);
  }
  tl_reset();
}

static void test_varint_rejections(void **state) {
  (void)state;
  uint64_t v;
  /* 11 bytes: longer than any 64-bit varint. */
  static const uint8_t overlong[11] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                       0x80, 0x80, 0x80, 0x80, 0x00};
  pb_rd r = pb_reader(sl(overlong, sizeof overlong));
  assert_false(pb_read_varint(&r, &v));
  /* 10 bytes whose last byte carries bits beyond 2^64. */
  static const uint8_t too_big[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
  r = pb_reader(sl(too_big, sizeof too_big));
  assert_false(pb_read_varint(&r, &v));
  /* UINT64_MAX in 10 bytes is fine. */
  static const uint8_t max[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  r = pb_reader(sl(max, sizeof max));
  assert_true(pb_read_varint(&r, &v));
  assert_true(v == UINT64_MAX);
  /* Truncated: continuation bit set on the last byte. */
  static const uint8_t trunc[2] = {0x80, 0x81};
  r = pb_reader(sl(trunc, sizeof trunc));
  assert_false(pb_read_varint(&r, &v));
  /* Empty input. */
  r = pb_reader(sl(NULL, 0));
  assert_false(pb_read_varint(&r, &v));
  assert_true(pb_done(&r));
}

static void test_tags(void **state) {
  (void)state;
  uint32_t f, wt;
  pb_rd r = pb_reader(sl(NULL, 0));
  assert_int_equal(pb_next(&r, &f, &wt), 0);
  static const uint8_t field0[1] = {0x02};   /* field 0, LEN */
  r = pb_reader(sl(field0, 1));
  assert_int_equal(pb_next(&r, &f, &wt), -1);
  /* Field number 2^29 (one beyond PB_FIELD_MAX). */
  pb_enc e = tl_enc();
  pb_put_varint_raw(&e, ((uint64_t)PB_FIELD_MAX + 1) << 3);
  r = pb_reader(tl_done(&e));
  assert_int_equal(pb_next(&r, &f, &wt), -1);
  /* PB_FIELD_MAX itself is fine. */
  e = tl_enc();
  pb_put_uint(&e, PB_FIELD_MAX, 7);
  r = pb_reader(tl_done(&e));
  assert_int_equal(pb_next(&r, &f, &wt), 1);
  assert_int_equal(f, PB_FIELD_MAX);
  assert_int_equal(wt, PB_VARINT);
  /* A tag that is a truncated varint. */
  static const uint8_t badtag[1] = {0x88};
  r = pb_reader(sl(badtag, 1));
  assert_int_equal(pb_next(&r, &f, &wt), -1);
  tl_reset();
}

static void test_skip(void **state) {
  (void)state;
  static const uint8_t four[4] = {1, 2, 3, 4};
  static const uint8_t seven[7] = {1, 2, 3, 4, 5, 6, 7};
  pb_rd r;
  /* Groups and reserved wire types are refused. */
  for (uint32_t wt = 3; wt <= 7; wt++) {
    if (wt == PB_I32) continue;
    r = pb_reader(sl(four, 4));
    assert_false(pb_skip(&r, wt));
  }
  r = pb_reader(sl(seven, 7));
  assert_false(pb_skip(&r, PB_I64));
  r = pb_reader(sl(four, 3));
  assert_false(pb_skip(&r, PB_I32));
  r = pb_reader(sl(four, 4));
  assert_true(pb_skip(&r, PB_I32));
  assert_true(pb_done(&r));
  static const uint8_t len_over[3] = {0x05, 'a', 'b'};
  r = pb_reader(sl(len_over, 3));
  assert_false(pb_skip(&r, PB_LEN));
  static const uint8_t len_ok[3] = {0x02, 'a', 'b'};
  r = pb_reader(sl(len_ok, 3));
  assert_true(pb_skip(&r, PB_LEN));
  assert_true(pb_done(&r));
}

static void test_typed_readers(void **state) {
  (void)state;
  uint64_t v;
  uint32_t u;
  bool b;
  rk_slice s;
  static const uint8_t one[1] = {0x01};
  pb_rd r = pb_reader(sl(one, 1));
  /* Wire type mismatches. */
  assert_false(pb_get_u64(&r, PB_LEN, &v));
  assert_false(pb_get_u32(&r, PB_I64, &u));
  assert_false(pb_get_bool(&r, PB_I32, &b));
  assert_false(pb_get_fixed64(&r, PB_VARINT, &v));
  assert_false(pb_get_bytes(&r, PB_VARINT, &s));
  r = pb_reader(sl(one, 1));
  assert_true(pb_get_bool(&r, PB_VARINT, &b));
  assert_true(b);

  /* u32: 2^32 - 1 accepted, 2^32 rejected. */
  pb_enc e = tl_enc();
  pb_put_varint_raw(&e, UINT32_MAX);
  r = pb_reader(tl_done(&e));
  assert_true(pb_get_u32(&r, PB_VARINT, &u));
  assert_true(u == UINT32_MAX);
  e = tl_enc();
  pb_put_varint_raw(&e, (uint64_t)UINT32_MAX + 1);
  r = pb_reader(tl_done(&e));
  assert_false(pb_get_u32(&r, PB_VARINT, &u));

  /* fixed64: little-endian, needs 8 bytes. */
  static const uint8_t f64[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
  r = pb_reader(sl(f64, 8));
  assert_true(pb_get_fixed64(&r, PB_I64, &v));
  assert_true(v == UINT64_C(0x0807060504030201));
  r = pb_reader(sl(f64, 7));
  assert_false(pb_get_fixed64(&r, PB_I64, &v));

  /* bytes: length beyond the end, truncated length, exact fit, empty. */
  static const uint8_t over[4] = {0x04, 'a', 'b', 'c'};
  r = pb_reader(sl(over, 4));
  assert_false(pb_get_bytes(&r, PB_LEN, &s));
  static const uint8_t trunc_len[2] = {0x80, 0x80};
  r = pb_reader(sl(trunc_len, 2));
  assert_false(pb_get_bytes(&r, PB_LEN, &s));
  static const uint8_t huge_len[11] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'x'};
  r = pb_reader(sl(huge_len, 11));
  assert_false(pb_get_bytes(&r, PB_LEN, &s));
  static const uint8_t fit[4] = {0x03, 'a', 'b', 'c'};
  r = pb_reader(sl(fit, 4));
  assert_true(pb_get_bytes(&r, PB_LEN, &s));
  assert_int_equal(s.len, 3);
  assert_memory_equal(s.ptr, "abc", 3);
  assert_true(pb_done(&r));
  static const uint8_t empty[1] = {0x00};
  r = pb_reader(sl(empty, 1));
  assert_true(pb_get_bytes(&r, PB_LEN, &s));
  assert_int_equal(s.len, 0);
  tl_reset();
}

static void test_canonical_omission(void **state) {
  (void)state;
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, 0);
  pb_put_bool(&e, 2, false);
  pb_put_fixed64(&e, 3, 0);
  pb_put_bytes(&e, 4, sl(NULL, 0));
  pb_put_packed_u32(&e, 5, NULL, 0);
  size_t m = pb_begin(&e, 6);
  pb_end_omit_empty(&e, 6, m);
  assert_int_equal(e.err, 0);
  assert_int_equal(e.len, 0);

  /* pb_put_bytes_always keeps an empty element; pb_end keeps an empty message. */
  pb_put_bytes_always(&e, 4, sl(NULL, 0));
  m = pb_begin(&e, 6);
  pb_end(&e, m);
  rk_slice s = tl_done(&e);
  static const uint8_t want[4] = {0x22, 0x00, 0x32, 0x00};
  assert_int_equal(s.len, 4);
  assert_memory_equal(s.ptr, want, 4);

  /* Non-defaults, in the order written, with exact bytes. */
  e = tl_enc();
  pb_put_uint(&e, 1, 150);
  pb_put_bool(&e, 2, true);
  pb_put_fixed64(&e, 3, 1);
  pb_put_bytes(&e, 4, tl_str("hi"));
  s = tl_done(&e);
  static const uint8_t want2[] = {0x08, 0x96, 0x01, 0x10, 0x01, 0x19, 1, 0, 0, 0, 0, 0, 0, 0,
                                  0x22, 0x02, 'h', 'i'};
  assert_int_equal(s.len, sizeof want2);
  assert_memory_equal(s.ptr, want2, sizeof want2);
  tl_reset();
}

static void test_nested_length_prefix(void **state) {
  (void)state;
  /* A nested body of 200 bytes needs a 2-byte length: pb_end moves the body. */
  uint8_t body[200];
  for (int i = 0; i < 200; i++) body[i] = (uint8_t)i;
  pb_enc e = tl_enc();
  size_t outer = pb_begin(&e, 1);
  size_t inner = pb_begin(&e, 2);
  pb_put_raw(&e, body, sizeof body);
  pb_end(&e, inner);
  pb_end(&e, outer);
  rk_slice s = tl_done(&e);
  assert_int_equal(s.len, 1 + 2 + 1 + 2 + 200);
  pb_rd r = pb_reader(s);
  uint32_t f, wt;
  rk_slice o, i2;
  assert_int_equal(pb_next(&r, &f, &wt), 1);
  assert_int_equal(f, 1);
  assert_true(pb_get_bytes(&r, wt, &o));
  assert_true(pb_done(&r));
  pb_rd ri = pb_reader(o);
  assert_int_equal(pb_next(&ri, &f, &wt), 1);
  assert_int_equal(f, 2);
  assert_true(pb_get_bytes(&ri, wt, &i2));
  assert_int_equal(i2.len, 200);
  assert_memory_equal(i2.ptr, body, 200);
  tl_reset();
}

static void test_repeated_u32(void **state) {
  (void)state;
  uint32_t vals[5] = {0, 1, 300, 70000, UINT32_MAX};
  pb_enc e = tl_enc();
  pb_put_packed_u32(&e, 4, vals, 5);
  for (int i = 0; i < 5; i++) {   /* the same values unpacked */
    pb_put_varint_raw(&e, (4u << 3) | PB_VARINT);
    pb_put_varint_raw(&e, vals[i]);
  }
  rk_slice s = tl_done(&e);
  uint32_t out[16];
  assert_int_equal(tl_repeated_u32(s, 4, out, 16), 10);
  for (int i = 0; i < 10; i++) assert_true(out[i] == vals[i % 5]);
  /* A packed element above 2^32 is refused. */
  e = tl_enc();
  size_t m = pb_begin(&e, 4);
  pb_put_varint_raw(&e, (uint64_t)UINT32_MAX + 1);
  pb_end(&e, m);
  s = tl_done(&e);
  pb_rd r = pb_reader(s);
  uint32_t f, wt;
  tl_u32s acc = {out, 0, 16};
  assert_int_equal(pb_next(&r, &f, &wt), 1);
  assert_false(pb_get_repeated_u32(&r, wt, tl_u32s_push, &acc));
  /* A packed run cut in the middle of a varint is refused. */
  static const uint8_t cut[3] = {0x22, 0x01, 0x80};
  r = pb_reader(sl(cut, 3));
  assert_int_equal(pb_next(&r, &f, &wt), 1);
  assert_false(pb_get_repeated_u32(&r, wt, tl_u32s_push, &acc));
  tl_reset();
}

/* ------------------------------------------------------------------------------------- */
/* hlc.h */

static uint64_t tick(uint64_t clock, uint64_t now, uint64_t floor) {
  uint64_t out = 0;
  assert_int_equal(rk_hlc_tick(clock, now, floor, &out), RINGKV_OK);
  return out;
}

static void test_hlc_tick(void **state) {
  (void)state;
  /* The wall clock dominates a stale node clock. */
  assert_true(tick(0, 5, 0) == UINT64_C(5) << 16);
  assert_true(tick(UINT64_C(3) << 16, 5, 0) == UINT64_C(5) << 16);
  /* Within one millisecond the logical part counts. */
  assert_true(tick((UINT64_C(5) << 16) | 3, 5, 0) == ((UINT64_C(5) << 16) | 4));
  /* A clock ahead of the wall clock keeps counting. */
  assert_true(tick((UINT64_C(9) << 16) | 3, 5, 0) == ((UINT64_C(9) << 16) | 4));
  /* Logical overflow carries into the milliseconds. */
  assert_true(tick((UINT64_C(5) << 16) | 0xFFFF, 0, 0) == UINT64_C(6) << 16);
  /* The floor (what the write supersedes) is exceeded. */
  assert_true(tick(1, 0, (UINT64_C(9) << 16) | 7) == ((UINT64_C(9) << 16) | 8));
  assert_true(tick(1, 9, (UINT64_C(9) << 16) | 0xFFFF) == UINT64_C(10) << 16);
  /* The largest representable millisecond still ticks. */
  assert_true(tick(0, RINGKV_HLC_MS_MAX, 0) == RINGKV_HLC_MS_MAX << 16);
  uint64_t out = 0;
  /* Exhausted: no HLC above the clock or the floor, or now beyond 48 bits. */
  assert_int_equal(rk_hlc_tick(UINT64_MAX, 0, 0, &out), RINGKV_E_CLOCK);
  assert_int_equal(rk_hlc_tick(0, 0, UINT64_MAX, &out), RINGKV_E_CLOCK);
  assert_int_equal(rk_hlc_tick(0, RINGKV_HLC_MS_MAX + 1, 0, &out), RINGKV_E_CLOCK);
  assert_int_equal(rk_hlc_tick((RINGKV_HLC_MS_MAX << 16) | 0xFFFF, 1, 0, &out), RINGKV_E_CLOCK);
  assert_true(tick((RINGKV_HLC_MS_MAX << 16) | 0xFFFE, 1, 0) == UINT64_MAX);
}

static void test_hlc_bound_absorb(void **state) {
  (void)state;
  uint64_t b = rk_hlc_bound(1000, 60000);
  assert_true(b == ((UINT64_C(61000) << 16) | 0xFFFF));
  /* Saturates instead of wrapping. */
  assert_true(rk_hlc_bound(RINGKV_HLC_MS_MAX, 1) == UINT64_MAX);
  assert_true(rk_hlc_bound(UINT64_MAX, UINT64_MAX) == UINT64_MAX);
  uint64_t clock = UINT64_C(500) << 16;
  /* Within the bound and ahead: absorbed. */
  assert_true(rk_hlc_absorb(clock, b, 1000, 60000) == b);
  assert_true(rk_hlc_absorb(clock, clock + 1, 1000, 60000) == clock + 1);
  /* Beyond the bound: ignored. */
  assert_true(rk_hlc_absorb(clock, b + 1, 1000, 60000) == clock);
  assert_true(rk_hlc_absorb(clock, UINT64_MAX, 1000, 60000) == clock);
  /* Behind the clock: the clock stays. */
  assert_true(rk_hlc_absorb(clock, clock - 1, 1000, 60000) == clock);
  assert_true(rk_hlc_absorb(clock, 0, 1000, 60000) == clock);
}

/* ------------------------------------------------------------------------------------- */
/* xxh3 */

static void test_hash_known_answers(void **state) {
  (void)state;
  /* Published XXH3_64bits (seed 0) values. */
  assert_true(ringkv_hash((const uint8_t *)"", 0) == UINT64_C(0x2D06800538D394C2));
  assert_true(rk_hash("", 0) == UINT64_C(0x2D06800538D394C2));
  assert_true(RK_HASH_EMPTY == rk_hash("", 0));
  assert_true(ringkv_hash((const uint8_t *)"abc", 3) == UINT64_C(0x78AF5F94892F3950));
  /* Every length class of XXH3 agrees with the library's own entry points. */
  uint8_t buf[1200];
  tl_rng rng = {42};
  tl_bytes(&rng, buf, sizeof buf);
  static const size_t lens[] = {0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 1200};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    assert_true(ringkv_hash(buf, lens[i]) == XXH3_64bits(buf, lens[i]));
    assert_true(rk_hash(buf, lens[i]) == XXH3_64bits(buf, lens[i]));
    assert_true(rk_hash_seed(buf, lens[i], 7) == XXH3_64bits_withSeed(buf, lens[i], 7));
  }
  rk_slice abc = tl_str("abc");
  assert_true(rk_hash_slice(abc) == UINT64_C(0x78AF5F94892F3950));
  /* Little-endian helpers. */
  uint8_t le[8];
  rk_le64(le, UINT64_C(0x0102030405060708));
  static const uint8_t want[8] = {8, 7, 6, 5, 4, 3, 2, 1};
  assert_memory_equal(le, want, 8);
  rk_le32(le, 0x0A0B0C0D);
  static const uint8_t want32[4] = {0x0D, 0x0C, 0x0B, 0x0A};
  assert_memory_equal(le, want32, 4);
}

/* ------------------------------------------------------------------------------------- */
/* arena */

static void test_arena_basics(void **state) {
  (void)state;
  rk_arena a;
  rk_arena_init(&a);
  uint8_t *p = rk_alloc(&a, 3);
  assert_non_null(p);
  assert_int_equal((uintptr_t)p % 8, 0);
  uint8_t *q = rk_alloc(&a, 5);
  assert_int_equal((uintptr_t)q % 8, 0);
  assert_true(q >= p + 3);
  /* Growing the last allocation happens in place. */
  memset(q, 0xAB, 5);
  uint8_t *q2 = rk_realloc(&a, q, 5, 100);
  assert_ptr_equal(q, q2);
  assert_int_equal(q2[4], 0xAB);
  /* Growing an older allocation copies. */
  memset(p, 0x11, 3);
  uint8_t *p2 = rk_realloc(&a, p, 3, 50);
  assert_ptr_not_equal(p, p2);
  assert_int_equal(p2[0], 0x11);
  assert_int_equal(p2[2], 0x11);
  uint8_t *z = rk_zalloc(&a, 4096);
  for (int i = 0; i < 4096; i++) assert_int_equal(z[i], 0);
  /* A block larger than the default block size. */
  uint8_t *big = rk_alloc(&a, 3 * RK_ARENA_BLOCK_BYTES);
  assert_non_null(big);
  memset(big, 1, 3 * RK_ARENA_BLOCK_BYTES);
  /* Overflowing array allocations fail and the failure is sticky until reset. */
  assert_null(rk_alloc_array(&a, SIZE_MAX / 2, 4));
  assert_true(a.failed);
  assert_null(rk_alloc(&a, SIZE_MAX));
  rk_arena_reset(&a);
  assert_false(a.failed);
  /* After a reset the first block is reused from its start. */
  uint8_t *p3 = rk_alloc(&a, 3);
  assert_ptr_equal(p3, p);
  rk_arena_free(&a);
  rk_arena_free(&a);   /* idempotent */
}

static void test_arena_bounded(void **state) {
  (void)state;
  rk_arena a;
  rk_arena_init(&a);
  tl_rng rng = {7};
  uint8_t *first = NULL;
#ifdef TL_HAVE_ASAN_STATS
  size_t base = 0;
#endif
  for (int call = 0; call < 5000; call++) {
    rk_arena_reset(&a);
    size_t total = 0;
    uint8_t *p0 = rk_alloc(&a, 8);
    if (first == NULL) first = p0;
    assert_ptr_equal(p0, first);   /* the kept first block, from its start */
    int n = 1 + (int)tl_below(&rng, 64);
    for (int i = 0; i < n; i++) {
      size_t sz = (size_t)tl_below(&rng, call % 50 == 0 ? 200000 : 4000);
      void *p = rk_alloc(&a, sz);
      assert_non_null(p);
      memset(p, (int)i, sz);
      total += sz;
    }
    (void)total;
#ifdef TL_HAVE_ASAN_STATS
    if (call == 0) {
      rk_arena_reset(&a);
      base = __sanitizer_get_current_allocated_bytes();
    }
#endif
  }
  rk_arena_reset(&a);
#ifdef TL_HAVE_ASAN_STATS
  /* After a reset only the first block is held, however many calls ran. */
  size_t now = __sanitizer_get_current_allocated_bytes();
  assert_true(now <= base + 1024);
#endif
  rk_arena_free(&a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_varint_round_trip),
      cmocka_unit_test(test_varint_rejections),
      cmocka_unit_test(test_tags),
      cmocka_unit_test(test_skip),
      cmocka_unit_test(test_typed_readers),
      cmocka_unit_test(test_canonical_omission),
      cmocka_unit_test(test_nested_length_prefix),
      cmocka_unit_test(test_repeated_u32),
      cmocka_unit_test(test_hlc_tick),
      cmocka_unit_test(test_hlc_bound_absorb),
      cmocka_unit_test(test_hash_known_answers),
      cmocka_unit_test(test_arena_basics),
      cmocka_unit_test(test_arena_bounded),
  };
  int failed = cmocka_run_group_tests_name("primitives", tests, NULL, NULL);
  tl_free();
  return failed;
}
