/* test_ae: anti-entropy narrows down in two levels (OP_AE_START, OP_AE_ANSWER,
 * OP_AE_COMPARE): equal roots answer `equal`; a difference answers bucket digests (64
 * shared shards per bucket), the differing buckets are asked next, and their shard
 * digests name exactly the differing shard. Bucket lists are bounded and checked. */
#include "testlib.h"
#include "range.h"

#define SHARDS_MAX 8192

typedef struct {
  uint32_t shared[SHARDS_MAX];   /* shards both nodes replicate, ascending */
  size_t shared_len;
} pair;

static rk_slice copy(rk_slice s) { return tl_dup(s); }
static void drop(rk_slice s) { free((void *)s.ptr); }

/* The shards nodes a and b share, from OP_PLACE over every shard. */
static void shared_of(ringkv_node *n, uint32_t shards, uint32_t a, uint32_t b, pair *out) {
  pb_enc e = tl_enc();
  uint32_t *all = malloc(shards * sizeof *all);
  assert_non_null(all);
  for (uint32_t s = 0; s < shards; s++) all[s] = s;
  pb_put_packed_u32(&e, 2, all, shards);
  free(all);
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_PLACE, tl_done(&e), &reply), RINGKV_OK);
  pb_rd it = pb_reader(reply);
  rk_slice p;
  out->shared_len = 0;
  while (tl_next_bytes(&it, 1, &p)) {
    uint32_t reps[64];
    size_t nr = tl_repeated_u32(p, 2, reps, 64);
    bool ha = false, hb = false;
    for (size_t i = 0; i < nr; i++) {
      ha |= reps[i] == a;
      hb |= reps[i] == b;
    }
    if (ha && hb) out->shared[out->shared_len++] = (uint32_t)tl_u64(p, 1);
  }
  tl_reset();
}

/* A key whose shard both a and b replicate; returns its shard. */
static uint32_t key_for(ringkv_node *n, const pair *pr, char *key, size_t cap) {
  for (int i = 0; i < 100000; i++) {
    snprintf(key, cap, "key-%d", i);
    pb_enc e = tl_enc();
    pb_put_bytes(&e, 1, tl_str(key));
    rk_slice reply;
    assert_int_equal(tl_call(n, RINGKV_OP_PLACE, tl_done(&e), &reply), RINGKV_OK);
    uint32_t shard = (uint32_t)tl_u64(tl_bytes_field(reply, 1), 1);
    tl_reset();
    for (size_t j = 0; j < pr->shared_len; j++)
      if (pr->shared[j] == shard) return shard;
  }
  fail_msg("no key found on a shared shard");
  return 0;
}

static void write_key(ringkv_node *n, const char *key) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, 1000000);
  pb_put_bytes(&e, 2, tl_str(key));
  pb_put_bytes(&e, 6, tl_str("value"));
  pb_put_bytes(&e, 7, tl_str("text/plain"));
  assert_int_equal(tl_call(n, RINGKV_OP_WRITE, tl_done(&e), NULL), RINGKV_OK);
  tl_reset();
}

/* OP_AE_START for peer (buckets optional): the DigestRequest, copied. */
static int ae_start(ringkv_node *n, uint32_t peer, const uint32_t *buckets, size_t nb, rk_slice *msg) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, peer);
  pb_put_packed_u32(&e, 2, buckets, nb);
  rk_slice reply;
  int code = tl_call(n, RINGKV_OP_AE_START, tl_done(&e), &reply);
  if (code == RINGKV_OK) *msg = copy(tl_bytes_field(reply, 1));
  tl_reset();
  return code;
}

/* OP_AE_ANSWER: the DigestReply, copied. */
static int ae_answer(ringkv_node *n, rk_slice request, rk_slice *msg) {
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, request);
  rk_slice reply;
  int code = tl_call(n, RINGKV_OP_AE_ANSWER, tl_done(&e), &reply);
  if (code == RINGKV_OK) *msg = copy(tl_bytes_field(reply, 1));
  tl_reset();
  return code;
}

typedef struct {
  bool equal;
  uint32_t shards[256];
  size_t shards_len;
  uint32_t buckets[256];
  size_t buckets_len;
} compared;

static void ae_compare(ringkv_node *n, rk_slice answer, compared *c) {
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, answer);
  pb_put_uint(&e, 2, 64);
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_AE_COMPARE, tl_done(&e), &reply), RINGKV_OK);
  c->equal = tl_u64(reply, 1) != 0;
  c->shards_len = tl_repeated_u32(reply, 2, c->shards, 256);
  c->buckets_len = tl_repeated_u32(reply, 3, c->buckets, 256);
  tl_reset();
}

static size_t count_field(rk_slice msg, uint32_t f) {
  pb_rd it = pb_reader(msg);
  rk_slice x;
  size_t k = 0;
  while (tl_next_bytes(&it, f, &x)) k++;
  return k;
}

static tl_config config(uint32_t n, uint32_t r, uint32_t shards) {
  tl_config c = tl_default_config();
  c.cluster_size = n;
  c.replicas = r;
  c.shards = shards;
  return c;
}

static void test_equal_roots(void **state) {
  (void)state;
  tl_config c = config(3, 2, 4096);
  ringkv_node *a = tl_node(c, 0), *b = tl_node(c, 1);
  rk_slice req, ans;
  assert_int_equal(ae_start(a, 1, NULL, 0, &req), RINGKV_OK);
  assert_int_equal(ae_answer(b, req, &ans), RINGKV_OK);
  assert_true(tl_u64(ans, 3) == 1);
  assert_int_equal(count_field(ans, 4), 0);
  assert_int_equal(tl_bytes_field(ans, 5).len, 0);
  compared cmp;
  ae_compare(a, ans, &cmp);
  assert_true(cmp.equal);
  assert_int_equal(cmp.shards_len + cmp.buckets_len, 0);
  drop(req);
  drop(ans);
  ringkv_node_destroy(a);
  ringkv_node_destroy(b);
}

/* Two nodes differing in one key: root differs -> bucket digests -> that bucket -> that
 * shard, and nothing else. */
static void test_one_key_two_levels(void **state) {
  (void)state;
  tl_config c = config(3, 2, 8192);
  ringkv_node *a = tl_node(c, 0), *b = tl_node(c, 1);
  static pair pr;
  shared_of(a, c.shards, 0, 1, &pr);
  size_t buckets = (pr.shared_len + 63) / 64;
  assert_true(buckets > 1);
  char key[32];
  uint32_t shard = key_for(a, &pr, key, sizeof key);
  size_t index = 0;
  while (pr.shared[index] != shard) index++;
  uint32_t bucket = (uint32_t)(index / 64);
  write_key(a, key);

  /* Both directions: the writer asks, and the other node asks. */
  for (int dir = 0; dir < 2; dir++) {
    ringkv_node *asker = dir == 0 ? a : b, *answerer = dir == 0 ? b : a;
    uint32_t peer = dir == 0 ? 1 : 0;
    rk_slice req, ans;
    assert_int_equal(ae_start(asker, peer, NULL, 0, &req), RINGKV_OK);
    assert_int_equal(ae_answer(answerer, req, &ans), RINGKV_OK);
    assert_false(tl_u64(ans, 3));
    assert_int_equal(count_field(ans, 4), 0);
    assert_int_equal(tl_bytes_field(ans, 5).len, buckets * 8);
    compared cmp;
    ae_compare(asker, ans, &cmp);
    assert_false(cmp.equal);
    assert_int_equal(cmp.shards_len, 0);
    assert_int_equal(cmp.buckets_len, 1);
    assert_int_equal(cmp.buckets[0], bucket);
    drop(req);
    drop(ans);

    assert_int_equal(ae_start(asker, peer, cmp.buckets, cmp.buckets_len, &req), RINGKV_OK);
    uint32_t asked[4];
    assert_int_equal(tl_repeated_u32(req, 4, asked, 4), 1);
    assert_int_equal(asked[0], bucket);
    assert_int_equal(ae_answer(answerer, req, &ans), RINGKV_OK);
    size_t in_bucket = pr.shared_len - bucket * 64 < 64 ? pr.shared_len - bucket * 64 : 64;
    assert_int_equal(count_field(ans, 4), in_bucket);
    assert_int_equal(tl_bytes_field(ans, 5).len, 0);
    ae_compare(asker, ans, &cmp);
    assert_false(cmp.equal);
    assert_int_equal(cmp.buckets_len, 0);
    assert_int_equal(cmp.shards_len, 1);
    assert_int_equal(cmp.shards[0], shard);
    drop(req);
    drop(ans);
  }
  ringkv_node_destroy(a);
  ringkv_node_destroy(b);
}

/* At most 64 shared shards: one bucket, whose shard digests come at once. */
static void test_one_bucket(void **state) {
  (void)state;
  tl_config c = config(2, 2, 64);
  ringkv_node *a = tl_node(c, 0), *b = tl_node(c, 1);
  static pair pr;
  shared_of(a, c.shards, 0, 1, &pr);
  assert_int_equal(pr.shared_len, 64);
  char key[32];
  uint32_t shard = key_for(a, &pr, key, sizeof key);
  write_key(b, key);
  rk_slice req, ans;
  assert_int_equal(ae_start(a, 1, NULL, 0, &req), RINGKV_OK);
  assert_int_equal(ae_answer(b, req, &ans), RINGKV_OK);
  assert_int_equal(count_field(ans, 4), 64);
  assert_int_equal(tl_bytes_field(ans, 5).len, 0);
  compared cmp;
  ae_compare(a, ans, &cmp);
  assert_false(cmp.equal);
  assert_int_equal(cmp.buckets_len, 0);
  assert_int_equal(cmp.shards_len, 1);
  assert_int_equal(cmp.shards[0], shard);
  drop(req);
  drop(ans);
  ringkv_node_destroy(a);
  ringkv_node_destroy(b);
}

/* Below shards (version 3): a request names key ranges only to a peer heard to speak it;
 * the answer is asked for the ranges' parts first (loaded by the executor); the compare
 * sorts differing parts into leaves (small on both sides, or empty on one, within the
 * repair's rows budget) and ranges to cut again (large on both sides, or too large for
 * any repair). Only digests decide what differs. */
typedef struct {
  rk_range leaves[64], next[64];
  size_t leaves_len, next_len;
  uint64_t leaves_rows;
  bool equal;
} ranges_compared;

static void read_ranges(rk_slice reply, uint32_t field, rk_range *out, size_t *len) {
  pb_rd it = pb_reader(reply);
  rk_slice x;
  *len = 0;
  while (tl_next_bytes(&it, field, &x)) assert_true(rk_range_read(x, 1, &out[(*len)++]));
}

static int compare_parts(ringkv_node *a, const rk_parts *mine, const rk_parts *theirs, uint64_t budget,
                         uint64_t rnd, ranges_compared *out) {
  pb_enc m = tl_enc();
  pb_put_uint(&m, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&m, 2, 1);
  rk_parts_write(&m, 6, theirs);
  pb_put_uint(&m, 15, RINGKV_PROTOCOL_VERSION);
  rk_slice msg = copy(tl_done(&m));
  rk_range whole = rk_range_shard(0);
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, msg);
  pb_put_uint(&e, 2, 64);
  rk_range_write(&e, 3, &whole);
  rk_parts_write(&e, 4, mine);
  pb_put_uint(&e, 5, 64);
  pb_put_uint(&e, 6, budget);
  pb_put_uint(&e, 7, 64);
  pb_put_uint(&e, 8, rnd);
  pb_put_uint(&e, 9, 4096);
  rk_slice reply;
  int code = tl_call(a, RINGKV_OP_AE_COMPARE, tl_done(&e), &reply);
  if (code == RINGKV_OK) {
    out->equal = tl_u64(reply, 1) != 0;
    read_ranges(reply, 4, out->leaves, &out->leaves_len);
    read_ranges(reply, 5, out->next, &out->next_len);
    out->leaves_rows = tl_u64(reply, 6);
  }
  tl_reset();
  drop(msg);
  return code;
}

static void part_set(rk_parts *p, uint32_t k, uint64_t count, uint64_t digest) {
  p->mask |= 1u << k;
  p->counts[k] = count;
  p->digests[k] = digest;
}

static bool has_part(const rk_range *list, size_t len, uint32_t k) {
  rk_range want = rk_range_part(rk_range_shard(0), k);
  for (size_t i = 0; i < len; i++) {
    if (list[i].lo == want.lo && list[i].bits == want.bits) return true;
  }
  return false;
}

static void test_ranges_below_shards(void **state) {
  (void)state;
  tl_config c = config(2, 2, 1);
  ringkv_node *a = tl_node(c, 0), *b = tl_node(c, 1);
  rk_range whole = rk_range_shard(0);
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, 1);
  rk_range_write(&e, 3, &whole);
  rk_slice req_bytes = copy(tl_done(&e));
  rk_slice reply;
  /* A peer not heard from yet is written this release's version, which has ranges. */
  assert_int_equal(tl_call(a, RINGKV_OP_AE_START, req_bytes, &reply), RINGKV_OK);
  tl_reset();
  rk_slice req, ans;
  assert_int_equal(ae_start(a, 1, NULL, 0, &req), RINGKV_OK);
  assert_int_equal(ae_answer(b, req, &ans), RINGKV_OK);
  compared cmp;
  ae_compare(a, ans, &cmp);
  assert_true(cmp.equal);
  drop(req);
  drop(ans);
  assert_int_equal(tl_call(a, RINGKV_OP_AE_START, req_bytes, &reply), RINGKV_OK);
  req = copy(tl_bytes_field(reply, 1));
  tl_reset();
  /* Ranges in an older version are no message of any node: refused, whatever they name. */
  pb_enc old = tl_enc();
  pb_put_uint(&old, 1, 2);
  pb_put_uint(&old, 2, 0);
  rk_range_write(&old, 5, &whole);
  pb_put_uint(&old, 15, 2);
  rk_slice old_req = copy(tl_done(&old));
  assert_int_equal(ae_answer(b, old_req, &ans), RINGKV_E_DECODE);
  pb_enc op = tl_enc();
  pb_put_uint(&op, 1, 2);
  pb_put_uint(&op, 2, 0);
  rk_range_write(&op, 6, &whole);
  pb_put_uint(&op, 15, 2);
  pb_enc mk = tl_enc();
  pb_put_bytes(&mk, 1, tl_done(&op));
  assert_int_equal(tl_call(b, RINGKV_OP_MESSAGE_KEYS, tl_done(&mk), &reply), RINGKV_E_DECODE);
  tl_reset();
  drop(old_req);
  /* b asks for the parts first, then answers with them. */
  e = tl_enc();
  pb_put_bytes(&e, 1, req);
  assert_int_equal(tl_call(b, RINGKV_OP_AE_ANSWER, tl_done(&e), &reply), RINGKV_OK);
  assert_int_equal(tl_bytes_field(reply, 1).len, 0);
  rk_range load;
  assert_true(rk_range_read(tl_bytes_field(reply, 2), 1, &load));
  assert_int_equal(load.bits, RINGKV_KEY_POSITION_BITS);
  tl_reset();
  rk_parts theirs, mine;
  memset(&theirs, 0, sizeof theirs);
  part_set(&theirs, 2, 7, 99);
  e = tl_enc();
  pb_put_bytes(&e, 1, req);
  rk_parts_write(&e, 2, &theirs);
  assert_int_equal(tl_call(b, RINGKV_OP_AE_ANSWER, tl_done(&e), &reply), RINGKV_OK);
  rk_parts back;
  assert_true(rk_parts_read(tl_bytes_field(tl_bytes_field(reply, 1), 6), &back));
  assert_int_equal(back.mask, 1u << 2);
  assert_int_equal(back.counts[2], 7);
  assert_true(back.digests[2] == 99);
  tl_reset();
  drop(req);

  /* Small in all: the shard itself is the leaf. */
  memset(&mine, 0, sizeof mine);
  part_set(&mine, 2, 8, 98);
  ranges_compared rc;
  assert_int_equal(compare_parts(a, &mine, &theirs, 4096, 1, &rc), RINGKV_OK);
  assert_false(rc.equal);
  assert_int_equal(rc.leaves_len, 1);
  assert_int_equal(rc.leaves[0].bits, RINGKV_KEY_POSITION_BITS);
  assert_int_equal(rc.next_len, 0);
  assert_int_equal(rc.leaves_rows, 8);

  /* Large: part 3 large on both sides is cut again, part 5 small is a leaf, part 7 empty
   * here is a leaf however large, part 9 beyond any repair is cut; equal parts (1, with
   * other counts) are left alone. */
  memset(&mine, 0, sizeof mine);
  memset(&theirs, 0, sizeof theirs);
  part_set(&mine, 1, 500, 11);
  part_set(&theirs, 1, 501, 11);
  part_set(&mine, 3, 1000, 1);
  part_set(&theirs, 3, 1000, 2);
  part_set(&mine, 5, 10, 3);
  part_set(&theirs, 5, 11, 4);
  part_set(&theirs, 7, 3000, 5);
  part_set(&theirs, 9, 5000, 6);
  assert_int_equal(compare_parts(a, &mine, &theirs, 4096, 0, &rc), RINGKV_OK);
  assert_int_equal(rc.next_len, 2);
  assert_true(has_part(rc.next, rc.next_len, 3));
  assert_true(has_part(rc.next, rc.next_len, 9));
  assert_int_equal(rc.leaves_len, 2);
  assert_true(has_part(rc.leaves, rc.leaves_len, 5));
  assert_true(has_part(rc.leaves, rc.leaves_len, 7));
  assert_false(has_part(rc.leaves, rc.leaves_len, 1) || has_part(rc.next, rc.next_len, 1));
  assert_int_equal(rc.leaves_rows, 3011);

  /* Within the budget: of two leaves of 3000 and 2000 rows only one fits 4096; which one
   * depends on the random start, and the other waits. */
  memset(&theirs, 0, sizeof theirs);
  memset(&mine, 0, sizeof mine);
  part_set(&theirs, 7, 3000, 5);
  part_set(&theirs, 11, 2000, 6);
  bool took7 = false, took11 = false;
  for (uint64_t rnd = 0; rnd < 8; rnd++) {
    assert_int_equal(compare_parts(a, &mine, &theirs, 4096, rnd, &rc), RINGKV_OK);
    assert_int_equal(rc.leaves_len, 1);
    assert_true(rc.leaves_rows <= 4096);
    took7 |= has_part(rc.leaves, 1, 7);
    took11 |= has_part(rc.leaves, 1, 11);
  }
  assert_true(took7 && took11);

  /* An asked range too narrow to cut is never the core's own: refused. */
  memset(&mine, 0, sizeof mine);
  pb_enc m2 = tl_enc();
  pb_put_uint(&m2, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&m2, 2, 1);
  rk_parts_write(&m2, 6, &mine);
  rk_slice narrow_msg = copy(tl_done(&m2));
  rk_range narrow = {0, 0, 2};
  pb_enc q = tl_enc();
  pb_put_bytes(&q, 1, narrow_msg);
  rk_range_write(&q, 3, &narrow);
  rk_parts_write(&q, 4, &mine);
  pb_put_uint(&q, 5, 64);
  assert_int_equal(tl_call(a, RINGKV_OP_AE_COMPARE, tl_done(&q), &reply), RINGKV_E_DECODE);
  tl_reset();
  drop(narrow_msg);

  /* A reply whose counts do not follow its mask is malformed. */
  pb_enc bad = tl_enc();
  pb_put_uint(&bad, 1, 1u << 4);
  pb_put_bytes(&bad, 3, (rk_slice){(const uint8_t *)"12345678", 8});
  rk_parts p;
  assert_false(rk_parts_read(tl_done(&bad), &p));
  tl_reset();
  drop(req_bytes);
  ringkv_node_destroy(a);
  ringkv_node_destroy(b);
}

/* Bucket lists: below the bucket count, strictly ascending, at most 64; a bucket digest
 * list of the wrong length is malformed. */
static void test_bucket_limits(void **state) {
  (void)state;
  tl_config c = config(2, 2, 65536);
  ringkv_node *a = tl_node(c, 0), *b = tl_node(c, 1);
  /* 65536 shared shards: 1024 buckets. */
  uint32_t many[65];
  for (uint32_t i = 0; i < 65; i++) many[i] = i;
  rk_slice req, ans;
  assert_int_equal(ae_start(a, 1, many, 64, &req), RINGKV_OK);
  assert_int_equal(ae_answer(b, req, &ans), RINGKV_OK);
  assert_true(tl_u64(ans, 3) == 1);   /* equal roots win over the buckets asked */
  drop(req);
  drop(ans);
  assert_int_equal(ae_start(a, 1, many, 65, &req), RINGKV_E_DECODE);
  uint32_t high[1] = {1024}, last[1] = {1023}, down[2] = {5, 3}, same[2] = {3, 3};
  assert_int_equal(ae_start(a, 1, high, 1, &req), RINGKV_E_DECODE);
  assert_int_equal(ae_start(a, 1, down, 2, &req), RINGKV_E_DECODE);
  assert_int_equal(ae_start(a, 1, same, 2, &req), RINGKV_E_DECODE);
  assert_int_equal(ae_start(a, 1, last, 1, &req), RINGKV_OK);
  drop(req);

  /* A DigestRequest naming a bucket beyond the list is refused by the answerer. */
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 0);
  pb_put_fixed64(&e, 3, 12345);
  pb_put_packed_u32(&e, 4, high, 1);
  rk_slice bad = copy(tl_done(&e));
  tl_reset();
  assert_int_equal(ae_answer(b, bad, &ans), RINGKV_E_DECODE);
  drop(bad);

  /* A DigestReply with too few bucket digests. */
  e = tl_enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 1);
  uint8_t zeros[16] = {0};
  pb_put_bytes(&e, 5, (rk_slice){zeros, sizeof zeros});
  rk_slice short_reply = copy(tl_done(&e));
  tl_reset();
  e = tl_enc();
  pb_put_bytes(&e, 1, short_reply);
  pb_put_uint(&e, 2, 64);
  assert_int_equal(tl_call(a, RINGKV_OP_AE_COMPARE, tl_done(&e), NULL), RINGKV_E_DECODE);
  tl_reset();
  drop(short_reply);
  ringkv_node_destroy(a);
  ringkv_node_destroy(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_equal_roots),
      cmocka_unit_test(test_one_key_two_levels),
      cmocka_unit_test(test_one_bucket),
      cmocka_unit_test(test_bucket_limits),
      cmocka_unit_test(test_ranges_below_shards),
  };
  int failed = cmocka_run_group_tests_name("anti-entropy", tests, NULL, NULL);
  tl_free();
  return failed;
}
