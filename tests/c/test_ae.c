/* test_ae: anti-entropy narrows down in two levels (OP_AE_START, OP_AE_ANSWER,
 * OP_AE_COMPARE): equal roots answer `equal`; a difference answers bucket digests (64
 * shared shards per bucket), the differing buckets are asked next, and their shard
 * digests name exactly the differing shard. Bucket lists are bounded and checked. */
#include "testlib.h"

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
  };
  int failed = cmocka_run_group_tests_name("anti-entropy", tests, NULL, NULL);
  tl_free();
  return failed;
}
