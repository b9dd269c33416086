/* test_register: unit vectors for contexts (dotted version vectors), the register's
 * canonical encoding, merge and the winner (register.h). */
#include "testlib.h"

#include "hash.h"
#include "register.h"

/* ------------------------------------------------------------------------------------- */
/* Building contexts and registers by hand. */

typedef struct {
  uint32_t node;
  uint64_t counter;
} pair;

/* A context from normalised lists (the tests state them in canonical form). */
static rk_ctx ctx_of(const pair *vv, size_t nv, const pair *dots, size_t nd) {
  rk_ctx c;
  c.vv = rk_alloc_array(tl_arena(), nv + 1, sizeof(rk_dot));
  c.dots = rk_alloc_array(tl_arena(), nd + 1, sizeof(rk_dot));
  assert_non_null(c.vv);
  assert_non_null(c.dots);
  for (size_t i = 0; i < nv; i++) c.vv[i] = (rk_dot){vv[i].node, vv[i].counter};
  for (size_t i = 0; i < nd; i++) c.dots[i] = (rk_dot){dots[i].node, dots[i].counter};
  c.vv_len = nv;
  c.dots_len = nd;
  return c;
}

#define N_(a) (sizeof(a) / sizeof((a)[0]))
#define CTX(vv, dots) ctx_of(vv, N_(vv), dots, N_(dots))
#define CTX_VV(vv) ctx_of(vv, N_(vv), NULL, 0)
#define CTX_DOTS(dots) ctx_of(NULL, 0, dots, N_(dots))

static const rk_ctx empty_ctx = {NULL, 0, NULL, 0};

static void assert_ctx(const rk_ctx *got, const pair *vv, size_t nv, const pair *dots, size_t nd) {
  if (got->vv_len != nv || got->dots_len != nd) {
    print_error("context has %zu vv entries and %zu dots, expected %zu and %zu\n", got->vv_len,
                got->dots_len, nv, nd);
  }
  assert_int_equal(got->vv_len, nv);
  assert_int_equal(got->dots_len, nd);
  for (size_t i = 0; i < nv; i++) {
    assert_int_equal(got->vv[i].node, vv[i].node);
    assert_int_equal(got->vv[i].counter, vv[i].counter);
  }
  for (size_t i = 0; i < nd; i++) {
    assert_int_equal(got->dots[i].node, dots[i].node);
    assert_int_equal(got->dots[i].counter, dots[i].counter);
  }
}
#define ASSERT_CTX(got, vv, dots) assert_ctx(got, vv, N_(vv), dots, N_(dots))
#define ASSERT_CTX_VV(got, vv) assert_ctx(got, vv, N_(vv), NULL, 0)

static rk_slice ctx_bytes(const rk_ctx *c) {
  pb_enc e = tl_enc();
  rk_ctx_encode(&e, c);
  return tl_done(&e);
}

static rk_slice reg_bytes(const rk_reg *r, bool with_values) {
  pb_enc e = tl_enc();
  rk_reg_encode(&e, r, with_values);
  return tl_done(&e);
}

static void assert_slice_equal(rk_slice a, rk_slice b) {
  assert_int_equal(a.len, b.len);
  if (a.len) assert_memory_equal(a.ptr, b.ptr, a.len);
}

static rk_sib sib(uint32_t node, uint64_t counter, uint64_t hlc) {
  rk_sib s;
  memset(&s, 0, sizeof s);
  s.dot = (rk_dot){node, counter};
  s.hlc = hlc;
  s.content_type = tl_str("text/plain");
  s.value_hash = rk_hash(&hlc, sizeof hlc);
  return s;
}

static rk_sib tomb(uint32_t node, uint64_t counter, uint64_t hlc) {
  rk_sib s;
  memset(&s, 0, sizeof s);
  s.dot = (rk_dot){node, counter};
  s.hlc = hlc;
  s.deleted = true;
  return s;
}

static rk_reg reg_of(const rk_sib *sibs, size_t n, rk_ctx ctx) {
  rk_reg r;
  r.sibs = rk_alloc_array(tl_arena(), n + 1, sizeof(rk_sib));
  assert_non_null(r.sibs);
  if (n) memcpy(r.sibs, sibs, n * sizeof(rk_sib));
  r.sibs_len = n;
  r.ctx = ctx;
  return r;
}

static bool holds(const rk_reg *r, uint32_t node, uint64_t counter) {
  for (size_t i = 0; i < r->sibs_len; i++) {
    if (r->sibs[i].dot.node == node && r->sibs[i].dot.counter == counter) return true;
  }
  return false;
}

/* ------------------------------------------------------------------------------------- */
/* Contexts */

static void test_ctx_covers(void **state) {
  (void)state;
  static const pair vv[] = {{0, 3}, {2, 1}};
  static const pair dots[] = {{0, 6}, {1, 4}};
  rk_ctx c = CTX(vv, dots);
  assert_true(rk_ctx_covers(&c, (rk_dot){0, 1}));
  assert_true(rk_ctx_covers(&c, (rk_dot){0, 3}));
  assert_false(rk_ctx_covers(&c, (rk_dot){0, 4}));
  assert_false(rk_ctx_covers(&c, (rk_dot){0, 5}));
  assert_true(rk_ctx_covers(&c, (rk_dot){0, 6}));
  assert_false(rk_ctx_covers(&c, (rk_dot){0, 7}));
  assert_false(rk_ctx_covers(&c, (rk_dot){1, 1}));
  assert_true(rk_ctx_covers(&c, (rk_dot){1, 4}));
  assert_true(rk_ctx_covers(&c, (rk_dot){2, 1}));
  assert_false(rk_ctx_covers(&c, (rk_dot){2, 2}));
  assert_false(rk_ctx_covers(&c, (rk_dot){3, 1}));
  assert_false(rk_ctx_covers(&empty_ctx, (rk_dot){0, 1}));
  tl_reset();
}

static void test_ctx_add(void **state) {
  (void)state;
  static const pair v3[] = {{0, 3}};
  rk_ctx c = CTX_VV(v3), out;
  /* (0,4) is contiguous with vv[0] = 3: folded in. */
  assert_int_equal(rk_ctx_add(tl_arena(), &c, (rk_dot){0, 4}, &out), RINGKV_OK);
  static const pair v4[] = {{0, 4}};
  ASSERT_CTX_VV(&out, v4);
  /* (0,6) is not: it stays explicit. */
  assert_int_equal(rk_ctx_add(tl_arena(), &c, (rk_dot){0, 6}, &out), RINGKV_OK);
  static const pair d6[] = {{0, 6}};
  ASSERT_CTX(&out, v3, d6);
  /* Filling the gap folds everything: {0:3} + (0,6) + (0,4) + (0,5) = {0:6}. */
  rk_ctx c2;
  assert_int_equal(rk_ctx_add(tl_arena(), &out, (rk_dot){0, 4}, &c2), RINGKV_OK);
  static const pair v4b[] = {{0, 4}};
  ASSERT_CTX(&c2, v4b, d6);
  assert_int_equal(rk_ctx_add(tl_arena(), &c2, (rk_dot){0, 5}, &out), RINGKV_OK);
  static const pair v6[] = {{0, 6}};
  ASSERT_CTX_VV(&out, v6);
  /* A covered dot changes nothing. */
  assert_int_equal(rk_ctx_add(tl_arena(), &c, (rk_dot){0, 2}, &out), RINGKV_OK);
  ASSERT_CTX_VV(&out, v3);
  /* Another node: (1,1) starts its vector entry, (1,5) is explicit. */
  assert_int_equal(rk_ctx_add(tl_arena(), &c, (rk_dot){1, 1}, &out), RINGKV_OK);
  static const pair v31[] = {{0, 3}, {1, 1}};
  ASSERT_CTX_VV(&out, v31);
  assert_int_equal(rk_ctx_add(tl_arena(), &empty_ctx, (rk_dot){1, 5}, &out), RINGKV_OK);
  static const pair d15[] = {{1, 5}};
  assert_ctx(&out, NULL, 0, d15, 1);
  assert_int_equal(rk_ctx_add(tl_arena(), &out, (rk_dot){1, 1}, &c2), RINGKV_OK);
  static const pair v11[] = {{1, 1}};
  ASSERT_CTX(&c2, v11, d15);
  /* Adding a dot twice is idempotent. */
  assert_int_equal(rk_ctx_add(tl_arena(), &c2, (rk_dot){1, 5}, &out), RINGKV_OK);
  ASSERT_CTX(&out, v11, d15);
  tl_reset();
}

static void test_ctx_join(void **state) {
  (void)state;
  static const pair v3[] = {{0, 3}};
  static const pair d5[] = {{0, 5}};
  rk_ctx a = CTX_VV(v3), b = CTX_DOTS(d5), out, out2;
  /* {0:3} ⊔ {(0,5)}: 4 is missing, so (0,5) stays explicit. */
  assert_int_equal(rk_ctx_join(tl_arena(), &a, &b, &out), RINGKV_OK);
  ASSERT_CTX(&out, v3, d5);
  assert_int_equal(rk_ctx_join(tl_arena(), &b, &a, &out2), RINGKV_OK);
  ASSERT_CTX(&out2, v3, d5);
  /* ... ⊔ {(0,4)} closes the gap. */
  static const pair d4[] = {{0, 4}};
  rk_ctx c = CTX_DOTS(d4);
  assert_int_equal(rk_ctx_join(tl_arena(), &out, &c, &out2), RINGKV_OK);
  static const pair v5[] = {{0, 5}};
  ASSERT_CTX_VV(&out2, v5);
  /* Pointwise maximum over several nodes. */
  static const pair x[] = {{0, 3}, {2, 1}};
  static const pair y[] = {{0, 1}, {1, 7}};
  rk_ctx cx = CTX_VV(x), cy = CTX_VV(y);
  assert_int_equal(rk_ctx_join(tl_arena(), &cx, &cy, &out), RINGKV_OK);
  static const pair xy[] = {{0, 3}, {1, 7}, {2, 1}};
  ASSERT_CTX_VV(&out, xy);
  /* An explicit dot the other side's vector covers disappears. */
  static const pair d27[] = {{2, 7}};
  static const pair v28[] = {{2, 8}};
  rk_ctx cd = CTX_DOTS(d27), cv = CTX_VV(v28);
  assert_int_equal(rk_ctx_join(tl_arena(), &cd, &cv, &out), RINGKV_OK);
  ASSERT_CTX_VV(&out, v28);
  /* Joining with the empty context is the identity. */
  static const pair dd[] = {{1, 9}, {3, 4}};
  rk_ctx cz = CTX(x, dd);
  assert_int_equal(rk_ctx_join(tl_arena(), &cz, &empty_ctx, &out), RINGKV_OK);
  ASSERT_CTX(&out, x, dd);
  assert_int_equal(rk_ctx_join(tl_arena(), &empty_ctx, &empty_ctx, &out), RINGKV_OK);
  assert_ctx(&out, NULL, 0, NULL, 0);
  tl_reset();
}

static void test_ctx_raise(void **state) {
  (void)state;
  static const pair v3[] = {{0, 3}};
  static const pair d[] = {{0, 5}, {0, 9}};
  rk_ctx c = CTX(v3, d), out;
  /* Raising to 6 covers (0,5) and leaves (0,9). */
  assert_int_equal(rk_ctx_raise(tl_arena(), &c, 0, 6, &out), RINGKV_OK);
  static const pair v6[] = {{0, 6}};
  static const pair d9[] = {{0, 9}};
  ASSERT_CTX(&out, v6, d9);
  /* Raising to 8 makes (0,9) contiguous: it folds in. */
  assert_int_equal(rk_ctx_raise(tl_arena(), &c, 0, 8, &out), RINGKV_OK);
  static const pair v9[] = {{0, 9}};
  ASSERT_CTX_VV(&out, v9);
  /* Raising below the current entry changes nothing. */
  assert_int_equal(rk_ctx_raise(tl_arena(), &c, 0, 2, &out), RINGKV_OK);
  ASSERT_CTX(&out, v3, d);
  /* A new node. */
  assert_int_equal(rk_ctx_raise(tl_arena(), &c, 4, 2, &out), RINGKV_OK);
  static const pair v342[] = {{0, 3}, {4, 2}};
  ASSERT_CTX(&out, v342, d);
  tl_reset();
}

static void test_ctx_encoding(void **state) {
  (void)state;
  static const pair vv[] = {{0, 3}, {5, 300}};
  static const pair dots[] = {{0, 6}, {1, 4}};
  rk_ctx c = CTX(vv, dots), back;
  rk_slice b = ctx_bytes(&c);
  assert_int_equal(rk_ctx_decode(tl_arena(), b, &back), RINGKV_OK);
  ASSERT_CTX(&back, vv, dots);
  assert_slice_equal(ctx_bytes(&back), b);
  /* The node-0 entries omit the default node field: Dot{counter 3} is 0x10 0x03. */
  assert_true(b.len > 4);
  assert_int_equal(b.ptr[0], 0x0a);
  assert_int_equal(b.ptr[1], 0x02);
  assert_int_equal(b.ptr[2], 0x10);
  assert_int_equal(b.ptr[3], 0x03);

  /* Any order and redundancy decodes to the normalised set. */
  pb_enc e = tl_enc();
  static const pair raw_vv[] = {{5, 300}, {0, 2}, {0, 3}, {5, 1}};
  static const pair raw_dots[] = {{1, 4}, {0, 6}, {0, 1}, {1, 4}, {5, 200}};
  for (size_t i = 0; i < N_(raw_dots); i++) {
    size_t m = pb_begin(&e, 2);
    pb_put_uint(&e, 1, raw_dots[i].node);
    pb_put_uint(&e, 2, raw_dots[i].counter);
    pb_end(&e, m);
  }
  for (size_t i = 0; i < N_(raw_vv); i++) {
    size_t m = pb_begin(&e, 1);
    pb_put_uint(&e, 1, raw_vv[i].node);
    pb_put_uint(&e, 2, raw_vv[i].counter);
    pb_end(&e, m);
  }
  assert_int_equal(rk_ctx_decode(tl_arena(), tl_done(&e), &back), RINGKV_OK);
  ASSERT_CTX(&back, vv, dots);
  assert_slice_equal(ctx_bytes(&back), b);

  /* The empty context encodes to nothing and decodes from nothing. */
  assert_int_equal(ctx_bytes(&empty_ctx).len, 0);
  assert_int_equal(rk_ctx_decode(tl_arena(), (rk_slice){NULL, 0}, &back), RINGKV_OK);
  assert_ctx(&back, NULL, 0, NULL, 0);

  /* Rejected: a dot with counter 0, a node id beyond the cluster limit, garbage. */
  e = tl_enc();
  size_t m = pb_begin(&e, 2);
  pb_put_uint(&e, 1, 1);
  pb_end(&e, m);
  assert_int_not_equal(rk_ctx_decode(tl_arena(), tl_done(&e), &back), RINGKV_OK);
  e = tl_enc();
  m = pb_begin(&e, 1);
  pb_put_uint(&e, 1, RINGKV_CLUSTER_SIZE_MAX);
  pb_put_uint(&e, 2, 1);
  pb_end(&e, m);
  assert_int_not_equal(rk_ctx_decode(tl_arena(), tl_done(&e), &back), RINGKV_OK);
  static const uint8_t garbage[3] = {0x0a, 0x05, 0x10};
  assert_int_not_equal(rk_ctx_decode(tl_arena(), (rk_slice){garbage, 3}, &back), RINGKV_OK);
  tl_reset();
}

/* ------------------------------------------------------------------------------------- */
/* Registers */

static rk_reg sample_register(void) {
  static const pair vv[] = {{0, 4}, {1, 2}};
  static const pair dots[] = {{3, 9}};
  rk_sib s[3] = {sib(0, 4, 100), tomb(1, 2, 200), sib(3, 9, 150)};
  s[2].content_type = tl_str("application/octet-stream");
  return reg_of(s, 3, CTX(vv, dots));
}

static void test_reg_round_trip(void **state) {
  (void)state;
  rk_reg r = sample_register(), back;
  rk_slice meta = reg_bytes(&r, false);
  assert_int_equal(rk_reg_decode(tl_arena(), meta, &back), RINGKV_OK);
  assert_int_equal(back.sibs_len, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(rk_dot_cmp(back.sibs[i].dot, r.sibs[i].dot), 0);
    assert_true(back.sibs[i].hlc == r.sibs[i].hlc);
    assert_int_equal(back.sibs[i].deleted, r.sibs[i].deleted);
    assert_true(back.sibs[i].value_hash == r.sibs[i].value_hash);
    assert_true(rk_slice_eq(back.sibs[i].content_type, r.sibs[i].content_type));
    assert_int_equal(back.sibs[i].value.len, 0);
  }
  assert_slice_equal(reg_bytes(&back, false), meta);

  /* With values: carried when asked for, and checked against their hash. */
  static const char v0[] = "hello";
  r.sibs[0].value = tl_str(v0);
  r.sibs[0].value_hash = rk_hash(v0, 5);
  rk_slice full = reg_bytes(&r, true);
  rk_slice meta2 = reg_bytes(&r, false);
  assert_true(full.len == meta2.len + 2 + 5);
  assert_int_equal(rk_reg_decode(tl_arena(), full, &back), RINGKV_OK);
  assert_true(rk_slice_eq(back.sibs[0].value, tl_str(v0)));
  assert_slice_equal(reg_bytes(&back, true), full);
  assert_slice_equal(reg_bytes(&back, false), meta2);
  r.sibs[0].value_hash ^= 1;
  assert_int_equal(rk_reg_decode(tl_arena(), reg_bytes(&r, true), &back), RINGKV_E_DECODE);

  /* The empty register: no bytes either way. */
  rk_reg empty;
  assert_int_equal(rk_reg_decode(tl_arena(), (rk_slice){NULL, 0}, &empty), RINGKV_OK);
  assert_int_equal(empty.sibs_len, 0);
  assert_int_equal(reg_bytes(&empty, false).len, 0);
  assert_int_equal(rk_reg_winner(&empty), -1);
  assert_false(rk_reg_all_deleted(&empty));
  assert_true(rk_reg_max_hlc(&empty) == 0);
  assert_true(rk_reg_digest(tl_arena(), tl_str("k"), &empty) == 0);
  tl_reset();
}

static void test_reg_canonical_order(void **state) {
  (void)state;
  /* Siblings written in reverse order decode to the sorted register. */
  rk_reg r = sample_register(), back;
  rk_slice canon = reg_bytes(&r, false);
  rk_sib rev[3] = {r.sibs[2], r.sibs[1], r.sibs[0]};
  rk_reg rr = reg_of(rev, 3, r.ctx);
  rk_slice reversed = reg_bytes(&rr, false);
  assert_int_equal(reversed.len, canon.len);
  assert_true(memcmp(reversed.ptr, canon.ptr, canon.len) != 0);
  assert_int_equal(rk_reg_decode(tl_arena(), reversed, &back), RINGKV_OK);
  assert_slice_equal(reg_bytes(&back, false), canon);
  /* Equal states built along different paths encode identically. */
  rk_ctx c1, c2, t;
  assert_int_equal(rk_ctx_add(tl_arena(), &empty_ctx, (rk_dot){3, 9}, &t), RINGKV_OK);
  assert_int_equal(rk_ctx_raise(tl_arena(), &t, 1, 2, &c1), RINGKV_OK);
  assert_int_equal(rk_ctx_raise(tl_arena(), &c1, 0, 4, &t), RINGKV_OK);
  c1 = t;
  static const pair a[] = {{0, 1}, {0, 2}, {0, 3}, {0, 4}, {1, 1}, {1, 2}, {3, 9}};
  c2 = empty_ctx;
  for (size_t i = N_(a); i-- > 0;) {
    assert_int_equal(rk_ctx_add(tl_arena(), &c2, (rk_dot){a[i].node, a[i].counter}, &t), RINGKV_OK);
    c2 = t;
  }
  assert_slice_equal(ctx_bytes(&c1), ctx_bytes(&c2));
  rk_reg r1 = reg_of(r.sibs, 3, c1), r2 = reg_of(rev, 3, c2);
  rk_reg d1, d2;
  assert_int_equal(rk_reg_decode(tl_arena(), reg_bytes(&r1, false), &d1), RINGKV_OK);
  assert_int_equal(rk_reg_decode(tl_arena(), reg_bytes(&r2, false), &d2), RINGKV_OK);
  assert_slice_equal(reg_bytes(&d1, false), reg_bytes(&d2, false));
  assert_slice_equal(reg_bytes(&d1, false), canon);
  assert_true(rk_reg_digest(tl_arena(), tl_str("key"), &d1) ==
              rk_reg_digest(tl_arena(), tl_str("key"), &d2));
  tl_reset();
}

static void test_reg_decode_rejects(void **state) {
  (void)state;
  rk_reg back;
  static const pair v1[] = {{0, 1}};
  /* A sibling its context does not cover. */
  rk_sib s1[1] = {sib(0, 2, 10)};
  rk_reg r = reg_of(s1, 1, CTX_VV(v1));
  assert_int_equal(rk_reg_decode(tl_arena(), reg_bytes(&r, false), &back), RINGKV_E_DECODE);
  /* No context at all. */
  r = reg_of(s1, 1, empty_ctx);
  assert_int_equal(rk_reg_decode(tl_arena(), reg_bytes(&r, false), &back), RINGKV_E_DECODE);
  /* The same dot twice. */
  static const pair v2[] = {{0, 2}};
  rk_sib s2[2] = {sib(0, 2, 10), sib(0, 2, 11)};
  r = reg_of(s2, 2, CTX_VV(v2));
  assert_int_equal(rk_reg_decode(tl_arena(), reg_bytes(&r, false), &back), RINGKV_E_DECODE);
  /* A tombstone with a content type. */
  rk_sib s3[1] = {tomb(0, 2, 10)};
  s3[0].content_type = tl_str("text/plain");
  r = reg_of(s3, 1, CTX_VV(v2));
  assert_int_equal(rk_reg_decode(tl_arena(), reg_bytes(&r, false), &back), RINGKV_E_DECODE);
  /* A content type over the limit; exactly at the limit is fine. */
  static uint8_t ct[RINGKV_CONTENT_TYPE_BYTES_MAX + 1];
  memset(ct, 'a', sizeof ct);
  rk_sib s4[1] = {sib(0, 2, 10)};
  s4[0].content_type = (rk_slice){ct, sizeof ct};
  r = reg_of(s4, 1, CTX_VV(v2));
  assert_int_equal(rk_reg_decode(tl_arena(), reg_bytes(&r, false), &back), RINGKV_E_DECODE);
  s4[0].content_type.len = RINGKV_CONTENT_TYPE_BYTES_MAX;
  r = reg_of(s4, 1, CTX_VV(v2));
  assert_int_equal(rk_reg_decode(tl_arena(), reg_bytes(&r, false), &back), RINGKV_OK);
  /* A sibling without a dot. */
  pb_enc e = tl_enc();
  size_t m = pb_begin(&e, 1);
  pb_put_fixed64(&e, 2, 5);
  pb_end(&e, m);
  m = pb_begin(&e, 2);
  rk_ctx_encode(&e, &r.ctx);
  pb_end(&e, m);
  assert_int_equal(rk_reg_decode(tl_arena(), tl_done(&e), &back), RINGKV_E_DECODE);
  /* A context without siblings: a collection marker, whose context is kept. */
  rk_ctx c = CTX_VV(v2);
  e = tl_enc();
  m = pb_begin(&e, 2);
  rk_ctx_encode(&e, &c);
  pb_end(&e, m);
  assert_int_equal(rk_reg_decode(tl_arena(), tl_done(&e), &back), RINGKV_OK);
  assert_true(rk_reg_is_marker(&back));
  assert_true(rk_ctx_covers(&back.ctx, (rk_dot){0, 2}));
  /* ... but an empty context there is not canonical. */
  e = tl_enc();
  m = pb_begin(&e, 2);
  pb_put_uint(&e, 5, 1);
  pb_end(&e, m);
  assert_int_not_equal(rk_reg_decode(tl_arena(), tl_done(&e), &back), RINGKV_OK);
  /* Truncated bytes. */
  rk_slice ok = reg_bytes(&r, false);
  for (size_t cut = 1; cut < ok.len; cut++) {
    int code = rk_reg_decode(tl_arena(), (rk_slice){ok.ptr, cut}, &back);
    /* Any prefix either fails or is a valid shorter message; it never crashes. */
    (void)code;
  }
  tl_reset();
}

static void test_merge(void **state) {
  (void)state;
  rk_reg out, out2;
  /* Concurrent writes: neither side has seen the other's, both survive. */
  static const pair c01[] = {{0, 1}};
  static const pair c11[] = {{1, 1}};
  rk_sib sa[1] = {sib(0, 1, 100)}, sb[1] = {sib(1, 1, 90)};
  rk_reg a = reg_of(sa, 1, CTX_VV(c01)), b = reg_of(sb, 1, CTX_VV(c11));
  assert_int_equal(rk_reg_merge(tl_arena(), &a, &b, &out), RINGKV_OK);
  assert_int_equal(out.sibs_len, 2);
  assert_true(holds(&out, 0, 1) && holds(&out, 1, 1));
  static const pair both[] = {{0, 1}, {1, 1}};
  ASSERT_CTX_VV(&out.ctx, both);
  assert_int_equal(rk_reg_winner(&out), 0);   /* hlc 100 > 90 */
  assert_int_equal(rk_reg_merge(tl_arena(), &b, &a, &out2), RINGKV_OK);
  assert_slice_equal(reg_bytes(&out, false), reg_bytes(&out2, false));

  /* b2 has seen a's version and superseded it: a's sibling goes. */
  rk_reg b2 = reg_of(sb, 1, CTX_VV(both));
  assert_int_equal(rk_reg_merge(tl_arena(), &a, &b2, &out), RINGKV_OK);
  assert_int_equal(out.sibs_len, 1);
  assert_true(holds(&out, 1, 1));
  ASSERT_CTX_VV(&out.ctx, both);
  assert_int_equal(rk_reg_merge(tl_arena(), &b2, &a, &out2), RINGKV_OK);
  assert_slice_equal(reg_bytes(&out, false), reg_bytes(&out2, false));

  /* Both hold (0,1), one has seen (1,1) as well: (0,1) stays (both still hold it). */
  rk_sib sab[2] = {sib(0, 1, 100), sib(1, 1, 90)};
  rk_reg ab = reg_of(sab, 2, CTX_VV(both));
  assert_int_equal(rk_reg_merge(tl_arena(), &a, &ab, &out), RINGKV_OK);
  assert_int_equal(out.sibs_len, 2);

  /* An explicit dot covers exactly that version: a token that saw (0,5) but not (0,3). */
  static const pair v0_5[] = {{0, 5}};
  static const pair d05[] = {{0, 5}};
  rk_sib s35[2] = {sib(0, 3, 10), sib(0, 5, 20)};
  rk_reg x = reg_of(s35, 2, CTX_VV(v0_5));
  rk_sib s7[1] = {sib(2, 1, 30)};
  static const pair v21[] = {{2, 1}};
  rk_reg y = reg_of(s7, 1, CTX(v21, d05));
  assert_int_equal(rk_reg_merge(tl_arena(), &x, &y, &out), RINGKV_OK);
  assert_int_equal(out.sibs_len, 2);
  assert_true(holds(&out, 0, 3) && holds(&out, 2, 1));
  assert_false(holds(&out, 0, 5));

  /* The same dot on both sides: the copy carrying its value wins, whichever side. */
  rk_sib with_value[1] = {sib(0, 1, 100)};
  with_value[0].value = tl_str("v");
  with_value[0].value_hash = rk_hash("v", 1);
  rk_sib meta_only[1] = {with_value[0]};
  meta_only[0].value = (rk_slice){NULL, 0};
  rk_reg wv = reg_of(with_value, 1, CTX_VV(c01)), mo = reg_of(meta_only, 1, CTX_VV(c01));
  assert_int_equal(rk_reg_merge(tl_arena(), &mo, &wv, &out), RINGKV_OK);
  assert_int_equal(out.sibs_len, 1);
  assert_int_equal(out.sibs[0].value.len, 1);
  assert_int_equal(rk_reg_merge(tl_arena(), &wv, &mo, &out), RINGKV_OK);
  assert_int_equal(out.sibs[0].value.len, 1);

  /* Merging with the empty register is the identity. */
  rk_reg empty = {NULL, 0, {NULL, 0, NULL, 0}};
  assert_int_equal(rk_reg_merge(tl_arena(), &ab, &empty, &out), RINGKV_OK);
  assert_slice_equal(reg_bytes(&out, false), reg_bytes(&ab, false));
  assert_int_equal(rk_reg_merge(tl_arena(), &empty, &empty, &out), RINGKV_OK);
  assert_int_equal(out.sibs_len, 0);
  tl_reset();
}

static void test_winner(void **state) {
  (void)state;
  static const pair vv[] = {{0, 1}, {1, 1}, {2, 1}};
  /* Highest HLC wins. */
  rk_sib s[3] = {sib(0, 1, 50), sib(1, 1, 70), sib(2, 1, 60)};
  rk_reg r = reg_of(s, 3, CTX_VV(vv));
  assert_int_equal(rk_reg_winner(&r), 1);
  assert_true(rk_reg_max_hlc(&r) == 70);
  /* Equal HLCs: the higher node id wins (ids compare as numbers). */
  s[0].hlc = s[1].hlc = s[2].hlc = 70;
  r = reg_of(s, 3, CTX_VV(vv));
  assert_int_equal(rk_reg_winner(&r), 2);
  /* A tombstone can win; all_deleted only when every sibling is one. */
  rk_sib t[2] = {tomb(0, 1, 80), sib(1, 1, 70)};
  r = reg_of(t, 2, CTX_VV(vv));
  assert_int_equal(rk_reg_winner(&r), 0);
  assert_true(r.sibs[rk_reg_winner(&r)].deleted);
  assert_false(rk_reg_all_deleted(&r));
  rk_sib tt[2] = {tomb(0, 1, 80), tomb(1, 1, 90)};
  r = reg_of(tt, 2, CTX_VV(vv));
  assert_true(rk_reg_all_deleted(&r));
  assert_true(rk_reg_max_hlc(&r) == 90);
  /* rk_sib_outranks is a strict order. */
  assert_true(rk_sib_outranks(&tt[1], &tt[0]));
  assert_false(rk_sib_outranks(&tt[0], &tt[1]));
  assert_false(rk_sib_outranks(&tt[0], &tt[0]));
  tl_reset();
}

static void test_digest(void **state) {
  (void)state;
  rk_reg r = sample_register();
  rk_slice meta = reg_bytes(&r, false);
  uint64_t d = rk_reg_digest(tl_arena(), tl_str("key"), &r);
  assert_true(d == rk_hash_seed(meta.ptr, meta.len, rk_hash("key", 3)));
  assert_true(d != rk_reg_digest(tl_arena(), tl_str("key2"), &r));
  /* Values do not change the digest (stored metadata hashes like the full register). */
  r.sibs[0].value = tl_str("payload");
  r.sibs[0].value_hash = rk_hash("payload", 7);
  uint64_t with_value = rk_reg_digest(tl_arena(), tl_str("key"), &r);
  r.sibs[0].value = (rk_slice){NULL, 0};
  assert_true(with_value == rk_reg_digest(tl_arena(), tl_str("key"), &r));
  tl_reset();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ctx_covers),        cmocka_unit_test(test_ctx_add),
      cmocka_unit_test(test_ctx_join),          cmocka_unit_test(test_ctx_raise),
      cmocka_unit_test(test_ctx_encoding),      cmocka_unit_test(test_reg_round_trip),
      cmocka_unit_test(test_reg_canonical_order), cmocka_unit_test(test_reg_decode_rejects),
      cmocka_unit_test(test_merge),             cmocka_unit_test(test_winner),
      cmocka_unit_test(test_digest),
  };
  int failed = cmocka_run_group_tests_name("register", tests, NULL, NULL);
  tl_free();
  return failed;
}
