/* test_limits: one key as large as the configuration allows, and nothing stalls. The
 * configuration bounds (2 x replicas writers' siblings and bytes), MAX_KEY_BYTES on context
 * writes from the stored lengths, entries refused one by one (the rest of a push applies),
 * and gossip rounds bounded in bytes: a key too large for a round goes alone, in one
 * message shared by its peers. */
#include "testlib.h"
#include "register.h"

#define NOW_MS UINT64_C(1700000000000)
#define MIB (1024u * 1024u)

static rk_slice copy(rk_slice s) { return tl_dup(s); }
static void drop(rk_slice s) { free((void *)s.ptr); }

static int init_with(tl_config c, uint64_t value_bytes_max, ringkv_node **out, rk_slice *why) {
  ringkv_node *n = ringkv_node_create();
  pb_enc e = tl_enc();
  size_t m = pb_begin(&e, 1);
  pb_put_uint(&e, 1, c.cluster_size);
  pb_put_uint(&e, 2, c.replicas);
  pb_put_uint(&e, 3, c.shards);
  pb_put_uint(&e, 4, c.max_clock_skew_ms);
  pb_put_uint(&e, 5, c.tombstone_grace_ms);
  pb_put_uint(&e, 6, c.max_siblings);
  pb_put_uint(&e, 7, c.fanout);
  pb_put_uint(&e, 9, c.key_bytes_max);
  pb_put_uint(&e, 10, value_bytes_max);
  pb_end(&e, m);
  rk_slice reply;
  int code = tl_call(n, RINGKV_OP_INIT, tl_done(&e), &reply);
  if (why != NULL) *why = copy(tl_bytes_field(reply, 1));
  tl_reset();
  *out = n;
  return code;
}

static void test_config_bounds(void **state) {
  (void)state;
  ringkv_node *n;
  rk_slice why;
  tl_config c = tl_default_config();
  c.key_bytes_max = 4 * MIB;   /* 2 x 3 x 4 MiB = 24 MiB: fine */
  assert_int_equal(init_with(c, MIB, &n, NULL), RINGKV_OK);
  ringkv_node_destroy(n);
  c.replicas = 5;              /* 40 MiB: refused */
  assert_int_equal(init_with(c, MIB, &n, &why), RINGKV_E_CONFIG);
  assert_non_null(strstr((const char *)why.ptr, "MAX_KEY_BYTES"));
  drop(why);
  ringkv_node_destroy(n);
  c.key_bytes_max = 3 * MIB;   /* 30 MiB */
  assert_int_equal(init_with(c, MIB, &n, NULL), RINGKV_OK);
  ringkv_node_destroy(n);
  c.max_siblings = 410;        /* 2 x 5 x 410 siblings > 4096 */
  assert_int_equal(init_with(c, MIB, &n, &why), RINGKV_E_CONFIG);
  assert_non_null(strstr((const char *)why.ptr, "MAX_SIBLINGS"));
  drop(why);
  ringkv_node_destroy(n);
  c.max_siblings = 32;
  assert_int_equal(init_with(c, 4 * MIB, &n, &why), RINGKV_E_CONFIG);   /* value > key bytes */
  assert_non_null(strstr((const char *)why.ptr, "MAX_VALUE_BYTES"));
  drop(why);
  ringkv_node_destroy(n);
  /* Full replication at 1024 nodes (at most 1024 writers of a key): 32 KiB, 4 siblings. */
  c.cluster_size = 1024;
  c.replicas = 1024;
  c.shards = 16;
  c.key_bytes_max = 32 * 1024;
  c.max_siblings = 4;
  assert_int_equal(init_with(c, 16 * 1024, &n, NULL), RINGKV_OK);
  ringkv_node_destroy(n);
  c.max_siblings = 5;
  assert_int_equal(init_with(c, 16 * 1024, &n, NULL), RINGKV_E_CONFIG);
  ringkv_node_destroy(n);
  c.max_siblings = 4;
  c.key_bytes_max = 32 * 1024 + 1;
  assert_int_equal(init_with(c, 16 * 1024, &n, NULL), RINGKV_E_CONFIG);
  ringkv_node_destroy(n);
}

/* A write at node 0 of `key` with `value_len` bytes; `meta` the stored register, `token`
 * (optional), and the stored values' lengths `sizes` (dot counter -> bytes, node 0). */
static int write(ringkv_node *n, const char *key, rk_slice meta, const rk_slice *token, size_t value_len,
                 const uint64_t (*sizes)[2], size_t nsizes, rk_slice *reply) {
  uint8_t *value = calloc(value_len ? value_len : 1, 1);
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, NOW_MS);
  pb_put_bytes(&e, 2, tl_str(key));
  pb_put_bytes(&e, 3, meta);
  if (token != NULL) {
    pb_put_bool(&e, 4, true);
    pb_put_bytes(&e, 5, *token);
  }
  pb_put_bytes(&e, 6, (rk_slice){value, value_len});
  for (size_t i = 0; i < nsizes; i++) {
    size_t m = pb_begin(&e, 10);
    size_t d = pb_begin(&e, 1);
    pb_put_uint(&e, 2, sizes[i][0]);
    pb_end(&e, d);
    pb_put_uint(&e, 2, sizes[i][1]);
    pb_end(&e, m);
  }
  rk_slice r;
  int code = tl_call(n, RINGKV_OP_WRITE, tl_done(&e), &r);
  *reply = code == RINGKV_OK ? copy(r) : (rk_slice){NULL, 0};
  tl_reset();
  free(value);
  return code;
}

/* A token for `key` that covers nothing stored (another node's dot). */
static rk_slice foreign_token(const char *key) {
  rk_dot d = {1, 1};
  rk_ctx c = {&d, 1, NULL, 0};
  pb_enc e = tl_enc();
  pb_put_fixed64(&e, 1, ringkv_hash((const uint8_t *)key, strlen(key)));
  pb_put_fixed64(&e, 2, NOW_MS << 16);
  size_t m = pb_begin(&e, 3);
  rk_ctx_encode(&e, &c);
  pb_end_omit_empty(&e, 3, m);
  return copy(tl_done(&e));
}

static void test_key_bytes(void **state) {
  (void)state;
  ringkv_node *n;
  tl_config c = tl_default_config();
  c.key_bytes_max = 3 * MIB;
  assert_int_equal(init_with(c, MIB, &n, NULL), RINGKV_OK);
  const char *key = "big";
  rk_slice token = foreign_token(key);
  rk_slice reply, meta = {NULL, 0};
  uint64_t sizes[8][2];
  size_t nsizes = 0;
  /* Three context writes of 1 MiB keep each other as siblings: 3 MiB, the limit. */
  for (int i = 0; i < 3; i++) {
    assert_int_equal(write(n, key, meta, &token, MIB, sizes, nsizes, &reply), RINGKV_OK);
    if (meta.ptr != NULL) drop(meta);
    meta = copy(tl_bytes_field(reply, 2));
    sizes[nsizes][0] = tl_u64(tl_bytes_field(reply, 3), 2);
    sizes[nsizes][1] = MIB;
    nsizes++;
    assert_int_equal(tl_u64(reply, 6), (uint64_t)i + 1);
    drop(reply);
  }
  /* A fourth would leave 4 MiB: 409, even one byte. */
  assert_int_equal(write(n, key, meta, &token, 1, sizes, nsizes, &reply), RINGKV_E_KEY_BYTES);
  /* Tombstones hold no bytes; a blind write replaces everything. */
  assert_int_equal(write(n, key, meta, NULL, MIB, sizes, nsizes, &reply), RINGKV_OK);
  assert_int_equal(tl_u64(reply, 6), 1);
  drop(reply);
  drop(meta);
  drop(token);
  ringkv_node_destroy(n);
}

/* A Push from node 1 with the given entries (key, register bytes). */
static rk_slice push_of(size_t count, const char *const *keys, const rk_slice *regs) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 1);
  for (size_t i = 0; i < count; i++) {
    size_t m = pb_begin(&e, 3);
    pb_put_bytes(&e, 1, tl_str(keys[i]));
    pb_put_bytes(&e, 2, regs[i]);
    pb_end(&e, m);
  }
  return copy(tl_done(&e));
}

static rk_slice reg_one(uint32_t node, uint64_t counter, const char *value) {
  rk_sib s;
  memset(&s, 0, sizeof s);
  s.dot.node = node;
  s.dot.counter = counter;
  s.hlc = NOW_MS << 16;
  s.value = tl_str(value);
  s.value_hash = ringkv_hash(s.value.ptr, s.value.len);
  rk_reg r;
  memset(&r, 0, sizeof r);
  r.sibs = &s;
  r.sibs_len = 1;
  rk_ctx c = {&s.dot, 1, NULL, 0};
  r.ctx = c;
  pb_enc e = tl_enc();
  rk_reg_encode(&e, &r, true);
  return copy(tl_done(&e));
}

/* How many keys a MergeReply applied; each of them must be `key`. */
static size_t applied_only(rk_slice reply, const char *key) {
  pb_rd it = pb_reader(reply);
  rk_slice applied;
  size_t count = 0;
  while (tl_next_bytes(&it, 2, &applied)) {
    assert_true(rk_slice_eq(tl_bytes_field(applied, 1), tl_str(key)));
    count++;
  }
  return count;
}

static void test_entries_refused_alone(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  c.cluster_size = 2;
  c.replicas = 2;
  ringkv_node *n = tl_node(c, 0);
  const char *keys[4] = {"good", "bad", "twice", "twice"};
  uint8_t junk[3] = {0x0a, 0x05, 0x01};   /* a sibling field cut short */
  rk_slice regs[4] = {reg_one(1, 1, "g"), {junk, sizeof junk}, reg_one(1, 2, "a"), reg_one(1, 3, "b")};
  rk_slice push = push_of(4, keys, regs);
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, NOW_MS);
  pb_put_bytes(&e, 2, push);
  for (int i = 0; i < 3; i++) {
    size_t m = pb_begin(&e, 3);
    pb_put_bytes(&e, 1, tl_str(keys[i]));
    pb_end(&e, m);
  }
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_MERGE, tl_done(&e), &reply), RINGKV_OK);
  /* "good" applied; "bad" and both "twice" refused as malformed. */
  assert_int_equal(applied_only(reply, "good"), 1);
  assert_int_equal(tl_refused(reply, "malformed"), 3);
  tl_reset();
  drop(push);
  drop(regs[0]);
  drop(regs[2]);
  drop(regs[3]);
  ringkv_node_destroy(n);
}

/* A push merged in ranges of entries: each call applies only its range (with the rows of
 * its keys only), and the last one's answer names what every range deferred. */
static void test_merge_in_ranges(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  c.cluster_size = 2;
  c.replicas = 2;
  ringkv_node *n = tl_node(c, 0);
  const char *keys[3] = {"r0", "r1", "r2"};
  rk_slice regs[3] = {reg_one(1, 1, "a"), reg_one(1, 2, "b"), reg_one(1, 3, "c")};
  rk_slice push = push_of(3, keys, regs);
  for (uint32_t from = 0; from < 3; from++) {
    pb_enc e = tl_enc();
    pb_put_uint(&e, 1, NOW_MS);
    pb_put_bytes(&e, 2, push);
    size_t m = pb_begin(&e, 3);
    pb_put_bytes(&e, 1, tl_str(keys[from]));
    pb_end(&e, m);
    pb_put_uint(&e, 5, from);
    pb_put_uint(&e, 6, from + 1);
    if (from == 2) pb_put_bytes(&e, 7, tl_str("r-deferred-earlier"));
    rk_slice reply;
    assert_int_equal(tl_call(n, RINGKV_OP_MERGE, tl_done(&e), &reply), RINGKV_OK);
    assert_int_equal(applied_only(reply, keys[from]), 1);
    assert_int_equal(tl_u64(reply, 4), 1);   /* entries received in this range */
    rk_slice answer = tl_bytes_field(reply, 3);
    if (from == 2) assert_true(rk_slice_eq(tl_bytes_field(answer, 5), tl_str("r-deferred-earlier")));
    else assert_int_equal(answer.len, 0);
    tl_reset();
  }
  /* A range beyond the entries: malformed. */
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 2, push);
  pb_put_uint(&e, 5, 2);
  pb_put_uint(&e, 6, 4);
  assert_int_equal(tl_call(n, RINGKV_OP_MERGE, tl_done(&e), NULL), RINGKV_E_DECODE);
  tl_reset();
  drop(push);
  for (int i = 0; i < 3; i++) drop(regs[i]);
  ringkv_node_destroy(n);
}

/* OP_BUILD_PUSH over candidates (key, value bytes, seq) at node 0 of a 3-node cluster with
 * every key on every node (R = 3): the outgoing messages, copied. */
typedef struct {
  uint32_t peer;
  uint64_t acked;
  size_t entries;
  size_t bytes;
  uint32_t also[4];
  size_t also_len;
} out_msg;

static size_t build_push(ringkv_node *n, size_t count, const size_t *value_len, out_msg *out) {
  pb_enc e = tl_enc();
  for (size_t i = 0; i < count; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%zu", i);
    uint8_t *value = calloc(value_len[i], 1);
    rk_slice wreply;
    pb_enc w = tl_enc();
    pb_put_uint(&w, 1, NOW_MS);
    pb_put_bytes(&w, 2, tl_str(key));
    pb_put_bytes(&w, 6, (rk_slice){value, value_len[i]});
    assert_int_equal(tl_call(n, RINGKV_OP_WRITE, tl_done(&w), &wreply), RINGKV_OK);
    rk_slice meta = tl_bytes_field(wreply, 2);
    rk_slice dot = tl_bytes_field(wreply, 3);
    size_t m = pb_begin(&e, 1);
    size_t l = pb_begin(&e, 1);
    pb_put_bytes(&e, 1, tl_str(key));
    pb_put_bytes(&e, 2, meta);
    size_t v = pb_begin(&e, 3);
    pb_put_bytes(&e, 1, dot);
    pb_put_bytes(&e, 2, (rk_slice){value, value_len[i]});
    pb_end(&e, v);
    pb_end(&e, l);
    pb_put_uint(&e, 2, i + 1);
    pb_put_bool(&e, 3, true);
    pb_end(&e, m);
    free(value);
  }
  for (uint32_t p = 1; p <= 2; p++) {
    size_t m = pb_begin(&e, 2);
    pb_put_uint(&e, 1, p);
    pb_end(&e, m);
  }
  pb_put_uint(&e, 3, count);
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_BUILD_PUSH, tl_done(&e), &reply), RINGKV_OK);
  pb_rd it = pb_reader(reply);
  rk_slice o;
  size_t k = 0;
  while (tl_next_bytes(&it, 1, &o)) {
    out[k].peer = (uint32_t)tl_u64(o, 1);
    out[k].acked = tl_u64(o, 3);
    out[k].entries = tl_u64(o, 4);
    out[k].bytes = tl_bytes_field(o, 2).len;
    out[k].also_len = tl_repeated_u32(o, 5, out[k].also, 4);
    k++;
  }
  tl_reset();
  return k;
}

static void test_round_bounded(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  c.cluster_size = 3;
  c.replicas = 3;
  c.key_bytes_max = 4 * MIB;
  ringkv_node *n;
  assert_int_equal(init_with(c, 0, &n, NULL), RINGKV_OK);
  out_msg out[4];
  /* Small keys: one message per peer, each with all three, acknowledged to seq 3. */
  size_t small[3] = {100, 200, 300};
  assert_int_equal(build_push(n, 3, small, out), 2);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(out[i].entries, 3);
    assert_int_equal(out[i].acked, 3);
    assert_int_equal(out[i].also_len, 0);
  }
  ringkv_node_destroy(n);

  /* 3 x 3 MiB to 2 peers passes the 16 MiB round: the round stops after the second key. */
  assert_int_equal(init_with(c, 0, &n, NULL), RINGKV_OK);
  size_t three[3] = {3 * MIB, 3 * MIB, 3 * MIB};
  assert_int_equal(build_push(n, 3, three, out), 2);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(out[i].entries, 2);
    assert_int_equal(out[i].acked, 2);
  }
  ringkv_node_destroy(n);

  /* A key too large for a round (9 MiB to 2 peers) goes alone, one message for both. */
  c.key_bytes_max = 5 * MIB + MIB / 2;   /* 2 x 3 x 5.5 MiB = 33 MiB: too much */
  assert_int_equal(init_with(c, 0, &n, NULL), RINGKV_E_CONFIG);
  ringkv_node_destroy(n);
  c.key_bytes_max = 5 * MIB;
  assert_int_equal(init_with(c, 0, &n, NULL), RINGKV_OK);
  size_t big_first[2] = {9 * MIB, 100};
  assert_int_equal(build_push(n, 2, big_first, out), 1);
  assert_int_equal(out[0].entries, 1);
  assert_int_equal(out[0].acked, 1);
  assert_int_equal(out[0].also_len, 1);
  assert_true(out[0].bytes > 9 * MIB);
  assert_int_not_equal(out[0].peer, out[0].also[0]);
  ringkv_node_destroy(n);
  /* After a small key, the big one waits for the next round. */
  assert_int_equal(init_with(c, 0, &n, NULL), RINGKV_OK);
  size_t big_second[2] = {100, 9 * MIB};
  assert_int_equal(build_push(n, 2, big_second, out), 2);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(out[i].entries, 1);
    assert_int_equal(out[i].acked, 1);
  }
  ringkv_node_destroy(n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_bounds),
      cmocka_unit_test(test_key_bytes),
      cmocka_unit_test(test_entries_refused_alone),
      cmocka_unit_test(test_merge_in_ranges),
      cmocka_unit_test(test_round_bounded),
  };
  int failed = cmocka_run_group_tests_name("limits", tests, NULL, NULL);
  tl_free();
  return failed;
}
