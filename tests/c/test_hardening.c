/* test_hardening: what a hostile client or peer can send, and what the core does with it.
 * Tokens that no node could have issued are refused; a peer's far-future versions wait
 * (deferred, never absorbed into the clock) and near-2^64 ones are refused; dots of
 * unknown nodes are refused; a claim on this node's own future dots raises its counter
 * (so no dot is reused) or, beyond the claim limit, is refused; a merge that would leave
 * no version is refused and counted; protocol version N-1 is accepted and answered in N-1;
 * and RingControl's control step. */
#include "testlib.h"
#include "register.h"

#define NOW_MS UINT64_C(1700000000000)
#define SKEW_MS UINT64_C(60000)

static rk_slice copy(rk_slice s) { return tl_dup(s); }
static void drop(rk_slice s) { free((void *)s.ptr); }

/* A key node `self` replicates together with `peer`. */
static void key_shared(ringkv_node *n, uint32_t self, uint32_t peer, char *key, size_t cap) {
  for (int i = 0; i < 100000; i++) {
    snprintf(key, cap, "key-%d", i);
    pb_enc e = tl_enc();
    pb_put_bytes(&e, 1, tl_str(key));
    rk_slice reply;
    assert_int_equal(tl_call(n, RINGKV_OP_PLACE, tl_done(&e), &reply), RINGKV_OK);
    uint32_t reps[16];
    size_t nr = tl_repeated_u32(tl_bytes_field(reply, 1), 2, reps, 16);
    tl_reset();
    bool a = false, b = false;
    for (size_t j = 0; j < nr; j++) {
      a |= reps[j] == self;
      b |= reps[j] == peer;
    }
    if (a && b) return;
  }
  fail_msg("no shared key");
}

/* One live sibling (node, counter) at hlc with value "v"; context = its dot plus `extra`. */
static rk_slice reg_one(uint32_t node, uint64_t counter, uint64_t hlc, const rk_dot *extra, size_t n_extra) {
  rk_arena *a = tl_arena();
  rk_sib s;
  memset(&s, 0, sizeof s);
  s.dot.node = node;
  s.dot.counter = counter;
  s.hlc = hlc;
  s.value = tl_str("v");
  s.value_hash = ringkv_hash(s.value.ptr, s.value.len);
  rk_reg r;
  memset(&r, 0, sizeof r);
  r.sibs = &s;
  r.sibs_len = 1;
  rk_ctx c = {NULL, 0, NULL, 0};
  assert_int_equal(rk_ctx_add(a, &c, s.dot, &r.ctx), RINGKV_OK);
  for (size_t i = 0; i < n_extra; i++) {
    rk_ctx next;
    assert_int_equal(rk_ctx_add(a, &r.ctx, extra[i], &next), RINGKV_OK);
    r.ctx = next;
  }
  pb_enc e = tl_enc();
  rk_reg_encode(&e, &r, true);
  return copy(tl_done(&e));
}


typedef struct {
  int code;
  rk_slice reply;      /* MergeReply, copied */
} merged;

/* OP_MERGE of `push` with the key absent locally (`meta` empty) or holding `meta`. */
static merged merge(ringkv_node *n, uint64_t now, rk_slice push, const char *key, rk_slice meta) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, now);
  pb_put_bytes(&e, 2, push);
  size_t m = pb_begin(&e, 3);
  pb_put_bytes(&e, 1, tl_str(key));
  pb_put_bytes(&e, 2, meta);
  pb_end(&e, m);
  rk_slice reply;
  merged out;
  out.code = tl_call(n, RINGKV_OP_MERGE, tl_done(&e), &reply);
  out.reply = copy(reply);
  tl_reset();
  return out;
}

static size_t applied_count(rk_slice reply) {
  pb_rd it = pb_reader(reply);
  rk_slice x;
  size_t k = 0;
  while (tl_next_bytes(&it, 2, &x)) k++;
  return k;
}

static uint64_t node_clock(rk_slice merge_reply) { return tl_fixed64(tl_bytes_field(merge_reply, 1), 2); }
static uint64_t node_counter(rk_slice merge_reply) { return tl_u64(tl_bytes_field(merge_reply, 1), 3); }

/* OP_WRITE of a blind or context write; returns the code, *reply copied. */
static int write_key(ringkv_node *n, uint64_t now, const char *key, rk_slice meta, const rk_slice *token,
                     rk_slice *reply) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, now);
  pb_put_bytes(&e, 2, tl_str(key));
  pb_put_bytes(&e, 3, meta);
  if (token != NULL) {
    pb_put_bool(&e, 4, true);
    pb_put_bytes(&e, 5, *token);
  }
  pb_put_bytes(&e, 6, tl_str("value"));
  rk_slice r;
  int code = tl_call(n, RINGKV_OP_WRITE, tl_done(&e), &r);
  if (reply != NULL) *reply = code == RINGKV_OK ? copy(r) : (rk_slice){NULL, 0};
  tl_reset();
  return code;
}

/* OP_WRITE with a write id (NULL: none) and a value or a delete. */
static int write_id_key(ringkv_node *n, const char *key, rk_slice meta, const char *id, const char *value,
                        rk_slice *reply) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, NOW_MS);
  pb_put_bytes(&e, 2, tl_str(key));
  pb_put_bytes(&e, 3, meta);
  if (value != NULL) pb_put_bytes(&e, 6, tl_str(value));
  else pb_put_bool(&e, 8, true);
  if (id != NULL) pb_put_bytes(&e, 11, tl_str(id));
  rk_slice r;
  int code = tl_call(n, RINGKV_OP_WRITE, tl_done(&e), &r);
  if (reply != NULL) *reply = code == RINGKV_OK ? copy(r) : (rk_slice){NULL, 0};
  tl_reset();
  return code;
}

/* A Token payload for `key` covering `dots` as explicit dots (canonical, as the core
 * encodes it) with the given max HLC. */
static rk_slice token_of(const char *key, uint64_t max_hlc, const rk_dot *dots, size_t n) {
  rk_arena *a = tl_arena();
  rk_ctx c = {NULL, 0, NULL, 0};
  for (size_t i = 0; i < n; i++) {
    rk_ctx next;
    assert_int_equal(rk_ctx_add(a, &c, dots[i], &next), RINGKV_OK);
    c = next;
  }
  pb_enc e = tl_enc();
  pb_put_fixed64(&e, 1, ringkv_hash((const uint8_t *)key, strlen(key)));
  pb_put_fixed64(&e, 2, max_hlc);
  size_t m = pb_begin(&e, 3);
  rk_ctx_encode(&e, &c);
  pb_end_omit_empty(&e, 3, m);
  return copy(tl_done(&e));
}

static void test_impossible_tokens(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  ringkv_node *n = tl_node(c, 0);
  char key[32];
  key_shared(n, 0, 1, key, sizeof key);
  rk_slice reply;
  assert_int_equal(write_key(n, NOW_MS, key, (rk_slice){NULL, 0}, NULL, &reply), RINGKV_OK);
  rk_slice meta = copy(tl_bytes_field(reply, 2));
  uint64_t hlc = tl_fixed64(reply, 4);
  drop(reply);

  /* Its own dot 1 exists: a token covering it is fine. */
  rk_dot own = {0, 1};
  rk_slice ok_token = token_of(key, hlc, &own, 1);
  assert_int_equal(write_key(n, NOW_MS, key, meta, &ok_token, &reply), RINGKV_OK);
  drop(reply);
  /* Node 0 has handed out 2 dots now: dot 3 (or a vv entry of 5) it never made. */
  rk_dot future = {0, 3};
  rk_slice bad = token_of(key, hlc, &future, 1);
  assert_int_equal(write_key(n, NOW_MS, key, meta, &bad, NULL), RINGKV_E_TOKEN);
  drop(bad);
  /* A node id no size of this cluster has had (the cluster has had 8 nodes). */
  rk_dot stranger = {8, 1};
  bad = token_of(key, hlc, &stranger, 1);
  assert_int_equal(write_key(n, NOW_MS, key, meta, &bad, NULL), RINGKV_E_TOKEN);
  drop(bad);
  rk_dot max_id = {7, 1000};   /* another existing node's dots cannot be judged here */
  rk_slice fine = token_of(key, hlc, &max_id, 1);
  assert_int_equal(write_key(n, NOW_MS, key, meta, &fine, &reply), RINGKV_OK);
  drop(reply);
  drop(fine);
  /* An HLC beyond now + skew, and one near 2^64. */
  bad = token_of(key, (NOW_MS + SKEW_MS + 1) << 16, &own, 1);
  assert_int_equal(write_key(n, NOW_MS, key, meta, &bad, NULL), RINGKV_E_SKEW);
  drop(bad);
  bad = token_of(key, UINT64_MAX - 1, &own, 1);
  assert_int_equal(write_key(n, NOW_MS, key, meta, &bad, NULL), RINGKV_E_SKEW);
  drop(bad);
  /* Bound to another key. */
  bad = token_of("another key", hlc, &own, 1);
  assert_int_equal(write_key(n, NOW_MS, key, meta, &bad, NULL), RINGKV_E_TOKEN);
  drop(bad);
  drop(ok_token);
  drop(meta);
  ringkv_node_destroy(n);

  /* A cluster that has had 12 nodes accepts node 11's dots at size 8. */
  c.cluster_size = 8;
  ringkv_node *m = ringkv_node_create();
  pb_enc e = tl_enc();
  size_t mk = pb_begin(&e, 1);
  pb_put_uint(&e, 1, 8);
  pb_put_uint(&e, 2, 3);
  pb_put_uint(&e, 3, 64);
  pb_put_uint(&e, 4, SKEW_MS);
  pb_put_uint(&e, 6, 32);
  pb_put_uint(&e, 7, 8);
  pb_put_uint(&e, 8, 12);
  pb_end(&e, mk);
  assert_int_equal(tl_call(m, RINGKV_OP_INIT, tl_done(&e), NULL), RINGKV_OK);
  tl_reset();
  rk_dot eleven = {11, 4};
  rk_slice t11 = token_of(key, NOW_MS << 16, &eleven, 1);
  assert_int_equal(write_key(m, NOW_MS, key, (rk_slice){NULL, 0}, &t11, &reply), RINGKV_OK);
  drop(reply);
  drop(t11);
  ringkv_node_destroy(m);
}

static void test_future_hlc_waits(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  ringkv_node *n = tl_node(c, 0);
  char key[32];
  key_shared(n, 0, 1, key, sizeof key);
  uint64_t ahead_ms = NOW_MS + SKEW_MS + 5000;
  rk_slice reg = reg_one(1, 1, ahead_ms << 16, NULL, 0);
  rk_slice push = tl_push_of(RINGKV_PROTOCOL_VERSION, 1, key, reg);
  merged r = merge(n, NOW_MS, push, key, (rk_slice){NULL, 0});
  assert_int_equal(r.code, RINGKV_OK);
  assert_int_equal(applied_count(r.reply), 0);
  assert_int_equal(tl_refused(r.reply, "hlc_ahead"), 1);
  assert_true(node_clock(r.reply) < ahead_ms << 16);   /* nothing absorbed */
  /* The answer tells the sender to send it again, in the version it was addressed in. */
  rk_slice answer = tl_bytes_field(r.reply, 3);
  assert_int_equal(tl_u64(answer, 1), RINGKV_PROTOCOL_VERSION);
  assert_true(rk_slice_eq(tl_bytes_field(answer, 5), tl_str(key)));
  /* The sender merges that answer: it names the key to send again. */
  rk_slice answer_copy = copy(answer);
  drop(r.reply);
  ringkv_node *sender = tl_node(c, 1);
  for (int as_answer = 0; as_answer < 2; as_answer++) {
    pb_enc e = tl_enc();
    pb_put_uint(&e, 1, NOW_MS);
    pb_put_bytes(&e, 2, answer_copy);
    pb_put_bool(&e, 4, as_answer);
    rk_slice sr;
    assert_int_equal(tl_call(sender, RINGKV_OP_MERGE, tl_done(&e), &sr), RINGKV_OK);
    /* Only as the answer to its own push does it send anything again. */
    if (as_answer) assert_true(rk_slice_eq(tl_bytes_field(sr, 6), tl_str(key)));
    else assert_int_equal(tl_bytes_field(sr, 6).len, 0);
    tl_reset();
  }
  drop(answer_copy);
  ringkv_node_destroy(sender);

  /* Once the receiver's clock reaches it, the same entry applies. */
  r = merge(n, ahead_ms, push, key, (rk_slice){NULL, 0});
  assert_int_equal(r.code, RINGKV_OK);
  assert_int_equal(applied_count(r.reply), 1);
  assert_int_equal(tl_refused(r.reply, "hlc_ahead"), 0);
  assert_int_equal(tl_bytes_field(r.reply, 3).len, 0);   /* nothing deferred: no answer */
  drop(r.reply);
  drop(push);
  drop(reg);

  /* Near 2^64: refused outright, never deferred. */
  reg = reg_one(1, 2, UINT64_MAX - 7, NULL, 0);
  push = tl_push_of(RINGKV_PROTOCOL_VERSION, 1, key, reg);
  r = merge(n, NOW_MS, push, key, (rk_slice){NULL, 0});
  assert_int_equal(r.code, RINGKV_OK);
  assert_int_equal(applied_count(r.reply), 0);
  assert_int_equal(tl_refused(r.reply, "hlc_out_of_range"), 1);
  assert_int_equal(tl_bytes_field(r.reply, 3).len, 0);
  drop(r.reply);
  drop(push);
  drop(reg);
  ringkv_node_destroy(n);
}

/* A blind write over a stored version from beyond the bound (rows kept from before the
 * deferral rule) keeps the node's clock within the bound. */
static void test_write_clock_bounded(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  ringkv_node *n = tl_node(c, 0);
  char key[32];
  key_shared(n, 0, 1, key, sizeof key);
  rk_slice reg = reg_one(1, 1, (NOW_MS + 86400000) << 16, NULL, 0);
  rk_reg decoded;
  assert_int_equal(rk_reg_decode(tl_arena(), reg, &decoded), RINGKV_OK);
  pb_enc e = tl_enc();
  rk_reg_encode(&e, &decoded, false);
  rk_slice meta = copy(tl_done(&e));
  tl_reset();
  rk_slice reply;
  assert_int_equal(write_key(n, NOW_MS, key, meta, NULL, &reply), RINGKV_OK);
  uint64_t bound = ((NOW_MS + SKEW_MS) << 16) | 0xFFFF;
  assert_true(tl_fixed64(reply, 4) <= bound);
  assert_true(tl_fixed64(tl_bytes_field(reply, 1), 2) <= bound);
  assert_int_equal(tl_u64(reply, 6), 1);   /* the blind write superseded it all the same */
  drop(reply);
  drop(meta);
  drop(reg);
  ringkv_node_destroy(n);
}

static void test_dot_claims(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  ringkv_node *n = tl_node(c, 0);
  char key[32];
  key_shared(n, 0, 1, key, sizeof key);
  /* A peer's context names node 0's dot 500 (node 0 has made none): the counter rises. */
  rk_dot claim = {0, 500};
  rk_slice reg = reg_one(1, 1, NOW_MS << 16, &claim, 1);
  rk_slice push = tl_push_of(RINGKV_PROTOCOL_VERSION, 1, key, reg);
  merged r = merge(n, NOW_MS, push, key, (rk_slice){NULL, 0});
  assert_int_equal(r.code, RINGKV_OK);
  assert_int_equal(applied_count(r.reply), 1);
  assert_int_equal(node_counter(r.reply), 500);
  rk_slice meta = copy(tl_bytes_field(tl_bytes_field(r.reply, 2), 3));
  drop(r.reply);
  drop(push);
  drop(reg);
  /* So node 0's next write has dot 501: not covered, not lost. */
  rk_slice reply;
  assert_int_equal(write_key(n, NOW_MS, key, meta, NULL, &reply), RINGKV_OK);
  assert_int_equal(tl_u64(tl_bytes_field(reply, 3), 2), 501);
  drop(reply);
  drop(meta);

  /* Beyond RINGKV_COUNTER_MAX, any node's dot: refused (the same everywhere), the counter
   * stays. */
  for (uint32_t who = 0; who < 2; who++) {
    rk_dot absurd = {who, RINGKV_COUNTER_MAX + 1};
    reg = reg_one(1, 2, NOW_MS << 16, &absurd, 1);
    push = tl_push_of(RINGKV_PROTOCOL_VERSION, 1, key, reg);
    r = merge(n, NOW_MS, push, key, (rk_slice){NULL, 0});
    assert_int_equal(r.code, RINGKV_OK);
    assert_int_equal(applied_count(r.reply), 0);
    assert_int_equal(tl_refused(r.reply, "dot_out_of_range"), 1);
    assert_int_equal(node_counter(r.reply), 501);
    drop(r.reply);
    drop(push);
    drop(reg);
  }
  /* A claim more than 2^32 above the counter is refused (future_dot): one message cannot
   * use up the counter space. Within one message, claims are judged against the counter
   * the message found: a second entry cannot climb on the first one's raise. */
  rk_dot far = {0, 501 + RINGKV_DOT_CLAIM_MAX + 1};
  reg = reg_one(1, 3, NOW_MS << 16, &far, 1);
  push = tl_push_of(RINGKV_PROTOCOL_VERSION, 1, key, reg);
  r = merge(n, NOW_MS, push, key, (rk_slice){NULL, 0});
  assert_int_equal(r.code, RINGKV_OK);
  assert_int_equal(tl_refused(r.reply, "future_dot"), 1);
  assert_int_equal(node_counter(r.reply), 501);
  drop(r.reply);
  drop(push);
  drop(reg);
  ringkv_node_destroy(n);

  /* The counter never passes RINGKV_COUNTER_MAX: at it, a write gets no dot. */
  ringkv_node *full = ringkv_node_create();
  pb_enc e = tl_enc();
  tl_put_config(&e, 1, c);
  size_t m = pb_begin(&e, 2);
  pb_put_uint(&e, 3, RINGKV_COUNTER_MAX);
  pb_end(&e, m);
  assert_int_equal(tl_call(full, RINGKV_OP_INIT, tl_done(&e), NULL), RINGKV_OK);
  tl_reset();
  assert_int_equal(write_key(full, NOW_MS, key, (rk_slice){NULL, 0}, NULL, NULL), RINGKV_E_CLOCK);
  ringkv_node_destroy(full);
  n = tl_node(c, 0);

  /* A node id the cluster never had. */
  reg = reg_one(9, 1, NOW_MS << 16, NULL, 0);
  push = tl_push_of(RINGKV_PROTOCOL_VERSION, 1, key, reg);
  r = merge(n, NOW_MS, push, key, (rk_slice){NULL, 0});
  assert_int_equal(r.code, RINGKV_OK);
  assert_int_equal(applied_count(r.reply), 0);
  assert_int_equal(tl_refused(r.reply, "unknown_node"), 1);
  drop(r.reply);
  drop(push);
  drop(reg);
  ringkv_node_destroy(n);
}

/* Each side claims to have superseded the other's only version: no version would remain.
 * Local holds (0,1) and covers (1,1), (1,2); the peer holds (1,2) and covers (0,1). */
static void test_no_version_refused(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  ringkv_node *n = tl_node(c, 0);
  char key[32];
  key_shared(n, 0, 1, key, sizeof key);
  rk_slice reply;   /* node 0 makes its dot 1, so the peer's claim on it is no future dot */
  assert_int_equal(write_key(n, NOW_MS, "warm-up", (rk_slice){NULL, 0}, NULL, &reply), RINGKV_OK);
  drop(reply);
  rk_dot covered[2] = {{1, 1}, {1, 2}}, mine = {0, 1};
  rk_slice local = reg_one(0, 1, NOW_MS << 16, covered, 2);
  rk_reg decoded;
  assert_int_equal(rk_reg_decode(tl_arena(), local, &decoded), RINGKV_OK);
  pb_enc e = tl_enc();
  rk_reg_encode(&e, &decoded, false);
  rk_slice meta = copy(tl_done(&e));
  tl_reset();
  rk_slice remote = reg_one(1, 2, NOW_MS << 16, &mine, 1);
  rk_slice push = tl_push_of(RINGKV_PROTOCOL_VERSION, 1, key, remote);
  merged r = merge(n, NOW_MS, push, key, meta);
  assert_int_equal(r.code, RINGKV_OK);
  assert_int_equal(applied_count(r.reply), 0);
  assert_int_equal(tl_refused(r.reply, "no_version"), 1);
  drop(r.reply);
  drop(push);
  drop(remote);
  drop(local);
  drop(meta);
  ringkv_node_destroy(n);
}

/* Version N-1 is accepted and answered in N-1; others are refused; a node writes to a
 * peer in N-1 until it has seen the peer speak N. */
static void test_protocol_versions(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  ringkv_node *a = tl_node(c, 0);
  ringkv_node *b = tl_node(c, 1);
  char key[32];
  key_shared(a, 0, 1, key, sizeof key);
  rk_slice reg = reg_one(1, 1, NOW_MS << 16, NULL, 0);
  for (uint32_t v = 0; v <= RINGKV_PROTOCOL_VERSION + 1; v++) {
    rk_slice push = tl_push_of(v, 1, key, reg);
    merged r = merge(a, NOW_MS, push, key, (rk_slice){NULL, 0});
    bool known = v >= RINGKV_PROTOCOL_VERSION_MIN && v <= RINGKV_PROTOCOL_VERSION;
    assert_int_equal(r.code, known ? RINGKV_OK : RINGKV_E_PROTOCOL);
    drop(r.reply);
    drop(push);
  }
  drop(reg);

  /* Anti-entropy: b's first DigestRequest to a (not heard from yet) is in this release's
   * version (an older peer refuses it once and is then written the oldest). */
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, 0);
  rk_slice reply;
  assert_int_equal(tl_call(b, RINGKV_OP_AE_START, tl_done(&e), &reply), RINGKV_OK);
  rk_slice req_now = copy(tl_bytes_field(reply, 1));
  tl_reset();
  assert_int_equal(tl_u64(req_now, 1), RINGKV_PROTOCOL_VERSION);
  assert_int_equal(tl_u64(req_now, 15), RINGKV_PROTOCOL_VERSION);
  /* The same request in version 1, as b writes it to a peer that refused its version. */
  e = tl_enc();
  pb_put_raw(&e, req_now.ptr, req_now.len);
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION_MIN);   /* a later field replaces the first */
  rk_slice req_b = copy(tl_done(&e));
  drop(req_now);
  tl_reset();
  assert_int_equal(tl_u64(req_b, 15), RINGKV_PROTOCOL_VERSION);   /* it says it speaks N */
  /* a answers b's version-1 request in version 1. */
  e = tl_enc();
  pb_put_bytes(&e, 1, req_b);
  assert_int_equal(tl_call(a, RINGKV_OP_AE_ANSWER, tl_done(&e), &reply), RINGKV_OK);
  rk_slice ans = copy(tl_bytes_field(reply, 1));
  tl_reset();
  assert_int_equal(tl_u64(ans, 1), RINGKV_PROTOCOL_VERSION_MIN);
  drop(ans);
  drop(req_b);
  /* a heard b speak version 2: a now writes version 2 to b. */
  e = tl_enc();
  pb_put_uint(&e, 1, 1);
  assert_int_equal(tl_call(a, RINGKV_OP_AE_START, tl_done(&e), &reply), RINGKV_OK);
  rk_slice req_a = copy(tl_bytes_field(reply, 1));
  tl_reset();
  assert_int_equal(tl_u64(req_a, 1), RINGKV_PROTOCOL_VERSION);
  assert_int_equal(tl_u64(req_a, 15), RINGKV_PROTOCOL_VERSION);
  /* b learns from it, and answers in version 2. */
  e = tl_enc();
  pb_put_bytes(&e, 1, req_a);
  assert_int_equal(tl_call(b, RINGKV_OP_AE_ANSWER, tl_done(&e), &reply), RINGKV_OK);
  ans = copy(tl_bytes_field(reply, 1));
  tl_reset();
  assert_int_equal(tl_u64(ans, 1), RINGKV_PROTOCOL_VERSION);
  drop(ans);
  drop(req_a);
  e = tl_enc();
  pb_put_uint(&e, 1, 0);
  assert_int_equal(tl_call(b, RINGKV_OP_AE_START, tl_done(&e), &reply), RINGKV_OK);
  assert_int_equal(tl_u64(tl_bytes_field(reply, 1), 1), RINGKV_PROTOCOL_VERSION);
  tl_reset();
  ringkv_node_destroy(a);
  ringkv_node_destroy(b);
}

/* ControlRequest -> ControlReply. */
static int control(rk_slice state, uint32_t cluster_size, uint32_t reported, size_t random_len, bool need_secret,
                   uint8_t seed, rk_slice *reply) {
  ringkv_node *n = ringkv_node_create();
  uint8_t random[64];
  for (size_t i = 0; i < sizeof random; i++) random[i] = (uint8_t)(seed + i * 7u);
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, state);
  pb_put_uint(&e, 2, cluster_size);
  pb_put_uint(&e, 3, reported);
  pb_put_bytes(&e, 4, (rk_slice){random, random_len});
  pb_put_bool(&e, 5, need_secret);
  rk_slice r;
  int code = tl_call(n, RINGKV_OP_CONTROL, tl_done(&e), &r);
  *reply = code == RINGKV_OK ? copy(r) : (rk_slice){NULL, 0};
  tl_reset();
  ringkv_node_destroy(n);
  return code;
}

static void test_control_step(void **state) {
  (void)state;
  rk_slice none = {NULL, 0}, first, again, third;
  /* First start of an upgraded cluster: the size the nodes persisted, not CLUSTER_SIZE. */
  assert_int_equal(control(none, 8, 5, 48, false, 1, &first), RINGKV_OK);
  rk_slice st = copy(tl_bytes_field(first, 1));
  assert_true(st.len > 0);
  rk_slice view = tl_bytes_field(first, 2);
  rk_slice ring = tl_bytes_field(view, 1);
  assert_int_equal(tl_u64(ring, 1), 1);
  assert_int_equal(tl_u64(ring, 2), 5);
  assert_int_equal(tl_u64(ring, 6), 5);
  rk_slice id = copy(tl_bytes_field(view, 2));
  assert_int_equal(id.len, RINGKV_CLUSTER_ID_BYTES);
  assert_int_equal(tl_bytes_field(view, 3).len, 0);   /* TOKEN_SECRET set: no secret */
  /* Later steps keep the ring and id, whatever randomness comes in; a secret is drawn
   * once when needed and then kept. */
  assert_int_equal(control(st, 8, 0, 48, false, 99, &again), RINGKV_OK);
  assert_int_equal(tl_bytes_field(again, 1).len, 0);   /* unchanged: nothing to persist */
  assert_true(rk_slice_eq(tl_bytes_field(tl_bytes_field(again, 2), 2), id));
  drop(again);
  assert_int_equal(control(st, 8, 0, 48, true, 42, &again), RINGKV_OK);
  rk_slice st2 = copy(tl_bytes_field(again, 1));
  assert_true(st2.len > 0);
  rk_slice secret = copy(tl_bytes_field(tl_bytes_field(again, 2), 3));
  assert_int_equal(secret.len, RINGKV_SECRET_BYTES);
  assert_true(rk_slice_eq(tl_bytes_field(tl_bytes_field(again, 2), 2), id));
  assert_int_equal(control(st2, 8, 0, 48, true, 7, &third), RINGKV_OK);
  assert_int_equal(tl_bytes_field(third, 1).len, 0);
  assert_true(rk_slice_eq(tl_bytes_field(tl_bytes_field(third, 2), 3), secret));
  drop(third);
  /* Two clusters (other randomness) get other ids. */
  assert_int_equal(control(none, 8, 0, 48, false, 2, &third), RINGKV_OK);
  assert_false(rk_slice_eq(tl_bytes_field(tl_bytes_field(third, 2), 2), id));
  assert_int_equal(tl_u64(tl_bytes_field(tl_bytes_field(third, 2), 1), 2), 8);
  drop(third);
  /* Refusals: too few random bytes, sizes out of range, a corrupt stored state. */
  assert_int_equal(control(none, 8, 0, 47, false, 1, &third), RINGKV_E_VALUE);
  assert_int_equal(control(none, 0, 0, 48, false, 1, &third), RINGKV_E_CONFIG);
  assert_int_equal(control(none, 1025, 0, 48, false, 1, &third), RINGKV_E_CONFIG);
  assert_int_equal(control(none, 8, 1025, 48, false, 1, &third), RINGKV_E_CONFIG);
  uint8_t junk[3] = {0x0a, 0x01, 0x08};
  assert_int_equal(control((rk_slice){junk, sizeof junk}, 8, 0, 48, false, 1, &third), RINGKV_E_DECODE);
  rk_slice cut = {st.ptr, st.len - 1};
  assert_int_equal(control(cut, 8, 0, 48, false, 1, &third), RINGKV_E_DECODE);
  drop(secret);
  drop(st2);
  drop(again);
  drop(id);
  drop(st);
  drop(first);
}

/* Write ids: a replay of a held version answers it and changes nothing (the same dot, HLC
 * and a context covering it only); another value, content or kind under the id is
 * RINGKV_E_WRITE_ID; ids outside 1..64 of [A-Za-z0-9_-] are refused. */
static void test_write_ids(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  ringkv_node *n = tl_node(c, 0);
  rk_slice first, again, other;
  assert_int_equal(write_id_key(n, "k", (rk_slice){NULL, 0}, "id-1", "v1", &first), RINGKV_OK);
  assert_int_equal(tl_u64(first, 14), 0);
  rk_slice meta = copy(tl_bytes_field(first, 2));
  /* A second write without an id: two versions would be siblings only with a context;
   * a blind one supersedes, so write the replay against the first state. */
  assert_int_equal(write_id_key(n, "k", meta, "id-1", "v1", &again), RINGKV_OK);
  assert_int_equal(tl_u64(again, 14), 1);
  assert_int_equal(tl_fixed64(again, 4), tl_fixed64(first, 4));
  assert_true(rk_slice_eq(tl_bytes_field(again, 3), tl_bytes_field(first, 3)));
  assert_int_equal(tl_u64(again, 6), 1);
  assert_int_equal(tl_bytes_field(again, 2).len, 0);   /* no new row */
  /* The counter did not move: the next write takes the next dot. */
  assert_int_equal(write_id_key(n, "k", meta, "id-2", "v2", &other), RINGKV_OK);
  assert_int_equal(tl_u64(tl_bytes_field(other, 3), 2), tl_u64(tl_bytes_field(first, 3), 2) + 1);
  drop(other);
  /* The same id with another value, or as a delete: refused. */
  assert_int_equal(write_id_key(n, "k", meta, "id-1", "v2", NULL), RINGKV_E_WRITE_ID);
  assert_int_equal(write_id_key(n, "k", meta, "id-1", NULL, NULL), RINGKV_E_WRITE_ID);
  /* Ids a client cannot send. */
  char long_id[RINGKV_WRITE_ID_BYTES_MAX + 2];
  memset(long_id, 'a', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = 0;
  assert_int_equal(write_id_key(n, "k", meta, long_id, "v", NULL), RINGKV_E_VALUE);
  long_id[RINGKV_WRITE_ID_BYTES_MAX] = 0;
  assert_int_equal(write_id_key(n, "k", meta, long_id, "v", NULL), RINGKV_OK);
  assert_int_equal(write_id_key(n, "k", meta, "a b", "v", NULL), RINGKV_E_VALUE);
  assert_int_equal(write_id_key(n, "k", meta, "a/b", "v", NULL), RINGKV_E_VALUE);
  /* The id is part of the stored version: its metadata decodes with it, and a register
   * naming an invalid one does not decode. */
  rk_reg r;
  assert_int_equal(rk_reg_decode(tl_arena(), meta, &r), RINGKV_OK);
  assert_int_equal(r.sibs_len, 1);
  assert_true(rk_slice_eq(r.sibs[0].write_id, tl_str("id-1")));
  r.sibs[0].write_id = tl_str("bad id");
  pb_enc e = tl_enc();
  rk_reg_encode(&e, &r, false);
  rk_reg back;
  assert_int_equal(rk_reg_decode(tl_arena(), tl_done(&e), &back), RINGKV_E_DECODE);
  tl_reset();
  drop(first);
  drop(again);
  drop(meta);
  ringkv_node_destroy(n);
}

/* Two copies of one dot that disagree (a broken peer's) merge to the same copy in either
 * order, so replicas cannot be split for good by them. */
static void test_contradictory_copies(void **state) {
  (void)state;
  rk_arena *a = tl_arena();
  rk_dot d = {1, 7};
  rk_ctx none = {NULL, 0, NULL, 0}, ctx;
  assert_int_equal(rk_ctx_add(a, &none, d, &ctx), RINGKV_OK);
  rk_sib s1, s2;
  memset(&s1, 0, sizeof s1);
  s1.dot = d;
  s1.hlc = 100;
  s1.value_hash = 5;
  s2 = s1;
  const char *pairs[][2] = {{"hlc", ""}, {"id", "w1"}, {"type", "text/plain"}};
  for (size_t i = 0; i < 3; i++) {
    s2 = s1;
    if (i == 0) s2.hlc = 101;
    if (i == 1) s2.write_id = tl_str(pairs[i][1]);
    if (i == 2) s2.content_type = tl_str(pairs[i][1]);
    rk_reg x = {&s1, 1, ctx}, y = {&s2, 1, ctx}, xy, yx;
    assert_int_equal(rk_reg_merge(a, &x, &y, &xy), RINGKV_OK);
    assert_int_equal(rk_reg_merge(a, &y, &x, &yx), RINGKV_OK);
    pb_enc e1 = tl_enc(), e2 = tl_enc();
    rk_reg_encode(&e1, &xy, false);
    rk_reg_encode(&e2, &yx, false);
    assert_true(rk_slice_eq(pb_result(&e1), pb_result(&e2)));
  }
  tl_reset();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_impossible_tokens),  cmocka_unit_test(test_future_hlc_waits),
      cmocka_unit_test(test_write_clock_bounded), cmocka_unit_test(test_dot_claims),
      cmocka_unit_test(test_no_version_refused), cmocka_unit_test(test_protocol_versions),
      cmocka_unit_test(test_control_step), cmocka_unit_test(test_write_ids),
      cmocka_unit_test(test_contradictory_copies),
  };
  int failed = cmocka_run_group_tests_name("hardening", tests, NULL, NULL);
  tl_free();
  return failed;
}
