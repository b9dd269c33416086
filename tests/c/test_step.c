/* test_step: RINGKV_OP_STEP under hostile or broken input (wasm/src/step.c).
 *
 *  - A truncated StepRequest (any event) is an error code, never a trap, and the node
 *    goes on.
 *  - The alarm never asks for a round sooner than one interval after the last one (no hot
 *    loop), whatever Loaded.next_expiry says, and it is never 0 while the node has peers.
 *  - A hostile DigestReply naming another node as `from`, or garbage, ends the exchange:
 *    anti-entropy goes on afterwards.
 *  - After two failures in a row a push goes out as two copies, and fails only when both
 *    are lost; a node restarted in the middle pushes again, hedged, and the old instance's
 *    late answers are dropped.
 *  - A push's time limit is one interval for the first try and the first retry (a lost
 *    push is retried at the next round), then doubles per failure, never past
 *    PEER_TIMEOUT_MS.
 *  - State persisted by a clock that then moved back (last_round_ms, ae_next_ms, a peer's
 *    retry_at in the future) must not stop rounds, pushes or anti-entropy for that long.
 *
 */
#include "testlib.h"
#include "node.h"

#define NOW UINT64_C(1700000000000)
#define DAY UINT64_C(86400000)
#define INTERVAL UINT64_C(1000)        /* Config.gossip_interval_ms 0: the default */
#define TIMEOUT UINT64_C(10000)        /* a send's time limit (step.c PEER_TIMEOUT_MS) */
#define AE_INTERVAL_MAX UINT64_C(60000)
#define BACKOFF_MAX UINT64_C(30000)

enum { KIND_PUSH = 1, KIND_DIGEST = 2, KIND_GC = 3 };

/* ------------------------------------------------------------------------------------- */
/* Building requests */

typedef struct {
  uint64_t last_round_ms, ae_next_ms, ae_interval_ms, seq, client_seq;
} tstate;

static rk_slice step_state(tstate s) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 3, s.seq);
  pb_put_uint(&e, 4, s.client_seq);
  pb_put_uint(&e, 5, s.last_round_ms);
  pb_put_uint(&e, 8, s.ae_next_ms);
  pb_put_uint(&e, 9, s.ae_interval_ms);
  return tl_done(&e);
}

typedef struct {
  uint32_t peer, failures;
  uint64_t acked, retry_at;
} tpeer;

/* A node of `c` as `id`, from a persisted StepState and peer rows. */
static ringkv_node *node_from(tl_config c, uint32_t id, rk_slice state, const tpeer *peers, size_t np) {
  pb_enc e = tl_enc();
  tl_put_config(&e, 1, c);
  size_t m = pb_begin(&e, 2);
  pb_put_uint(&e, 1, id);
  pb_end(&e, m);
  pb_put_bytes(&e, 4, state);
  for (size_t i = 0; i < np; i++) {
    m = pb_begin(&e, 5);
    pb_put_uint(&e, 1, peers[i].peer);
    pb_put_uint(&e, 2, peers[i].acked);
    pb_put_uint(&e, 3, peers[i].failures);
    pb_put_uint(&e, 4, peers[i].retry_at);
    pb_end(&e, m);
  }
  ringkv_node *n = ringkv_node_create();
  assert_non_null(n);
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_INIT, tl_done(&e), &reply), RINGKV_OK);
  return n;
}

static tl_config big_config(void) {
  tl_config c = tl_default_config();
  c.shards = 16384;   /* several anti-entropy buckets per peer, as in the integration tests */
  return c;
}

/* A StepRequest: now, random, and one event: a bool (alarm 3, start 8) or bytes (4..7). */
static rk_slice step_req(uint64_t now, uint64_t rnd, uint32_t field, rk_slice body) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, now);
  pb_put_uint(&e, 2, rnd);
  if (field == 3 || field == 8) pb_put_bool(&e, field, true);
  else pb_put_bytes_always(&e, field, body);
  return tl_done(&e);
}

static rk_slice answer_msg(uint32_t tag, bool answered, rk_slice message) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, tag);
  pb_put_bytes(&e, 2, message);
  pb_put_bool(&e, 3, answered);
  return tl_done(&e);
}

static rk_slice no_rows(void) {
  rk_slice s = {NULL, 0};
  return s;
}

/* ------------------------------------------------------------------------------------- */
/* Reading StepReply */

typedef struct {
  uint32_t kind, peer, tag;
  uint64_t timeout;
} tsend;

typedef struct {
  int rc;
  uint64_t alarm;
  bool has_load, load_changed, wipe;
  size_t nsends;
  tsend sends[64];
} tout;

/* When set, every successful step's reply is shown to it (what an executor persists). */
static void (*on_reply)(rk_slice rep);

static tout step(ringkv_node *n, rk_slice req) {
  tout o;
  memset(&o, 0, sizeof o);
  rk_slice rep;
  o.rc = tl_call(n, RINGKV_OP_STEP, req, &rep);
  if (o.rc != RINGKV_OK) return o;
  if (on_reply != NULL) on_reply(rep);
  o.alarm = tl_u64(rep, 8);
  o.wipe = tl_u64(rep, 10) != 0;
  pb_rd r;
  if (tl_field(rep, 1, PB_LEN, &r)) {
    o.has_load = true;
    o.load_changed = tl_u64(tl_bytes_field(rep, 1), 5) != 0;
  }
  pb_rd it = pb_reader(rep);
  rk_slice s;
  while (tl_next_bytes(&it, 6, &s)) {
    pb_rd ti = pb_reader(s);
    rk_slice t;
    while (tl_next_bytes(&ti, 3, &t) && o.nsends < 64) {
      o.sends[o.nsends].kind = (uint32_t)tl_u64(s, 1);
      o.sends[o.nsends].peer = (uint32_t)tl_u64(t, 1);
      o.sends[o.nsends].tag = (uint32_t)tl_u64(t, 2);
      o.sends[o.nsends].timeout = tl_u64(s, 4);
      o.nsends++;
    }
  }
  return o;
}

/* An alarm at `now` and the `loaded` that follows (no rows, or the given Loaded). */
static tout round_at(ringkv_node *n, uint64_t now, uint64_t rnd, rk_slice loaded, bool *asked_changed) {
  tout a = step(n, step_req(now, rnd, 3, no_rows()));
  assert_int_equal(a.rc, RINGKV_OK);
  assert_true(a.has_load);
  if (asked_changed != NULL) *asked_changed = a.load_changed;
  tout b = step(n, step_req(now, rnd, 4, loaded));
  assert_int_equal(b.rc, RINGKV_OK);
  return b;
}

typedef struct {
  size_t rounds, digests, changed_asked;
  uint64_t first_round_ms;
} tlog;

/* Follows the node's alarms from `now` up to `until`, as an executor would: every round
 * finds no rows; every send is lost (its Answer says so at once). */
static tlog follow(ringkv_node *n, uint64_t now, uint64_t until, uint64_t alarm) {
  tlog l;
  memset(&l, 0, sizeof l);
  uint64_t t = alarm;
  for (int i = 0; i < 10000; i++) {
    if (t == 0 || t > until) break;
    if (t < now) t = now;
    bool changed = false;
    tout r = round_at(n, t, (uint64_t)i, no_rows(), &changed);
    if (l.rounds == 0) l.first_round_ms = t;
    l.rounds++;
    l.changed_asked += changed;
    uint64_t next = r.alarm;
    for (size_t k = 0; k < r.nsends; k++) {
      if (r.sends[k].kind == KIND_DIGEST) l.digests++;
      tout a = step(n, step_req(t, 0, 5, answer_msg(r.sends[k].tag, false, no_rows())));
      assert_int_equal(a.rc, RINGKV_OK);
      next = a.alarm;
    }
    /* No hot loop: the next round is at least one interval after this one. */
    assert_true(next == 0 || next >= t + INTERVAL);
    now = t;
    t = next;
  }
  tl_reset();
  return l;
}

/* ------------------------------------------------------------------------------------- */
/* Truncated requests */

static rk_slice write_req(void) {
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 2, tl_str("truncated/key"));
  pb_put_bytes(&e, 6, tl_str("a value"));
  pb_put_bytes(&e, 7, tl_str("text/plain"));
  return tl_done(&e);
}

static rk_slice incoming_req(uint32_t kind, rk_slice message) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, kind);
  pb_put_bytes(&e, 2, message);
  return tl_done(&e);
}

/* Every strict prefix of `full` is an error (the event is its last field, so no prefix
 * holds a whole one); none traps (ASan/UBSan build); the full request then still works. */
static void check_prefixes(ringkv_node *n, rk_slice full, int want_full) {
  rk_slice whole = tl_dup(full);
  for (size_t len = 0; len < whole.len; len++) {
    rk_slice cut = {whole.ptr, len};
    rk_slice rep;
    int rc = tl_call(n, RINGKV_OP_STEP, cut, &rep);
    if (rc == RINGKV_OK) print_error("prefix of %zu/%zu bytes accepted\n", len, whole.len);
    assert_int_not_equal(rc, RINGKV_OK);
  }
  rk_slice rep;
  assert_int_equal(tl_call(n, RINGKV_OP_STEP, whole, &rep), want_full);
  free((void *)whole.ptr);
}

static void test_truncated_step_requests_are_errors(void **state) {
  (void)state;
  ringkv_node *n = tl_node(tl_default_config(), 0);
  check_prefixes(n, step_req(NOW, 1, 6, write_req()), RINGKV_OK);
  /* A Push of version 2 with no entries, from node 1. */
  pb_enc p = tl_enc();
  pb_put_uint(&p, 1, 2);
  pb_put_uint(&p, 2, 1);
  pb_put_uint(&p, 15, 2);
  rk_slice push = tl_done(&p);
  check_prefixes(n, step_req(NOW, 2, 7, incoming_req(KIND_PUSH, push)), RINGKV_OK);
  check_prefixes(n, step_req(NOW, 3, 5, answer_msg(77, true, push)), RINGKV_OK);
  /* `loaded` with no chain waiting is an error even whole. */
  pb_enc l = tl_enc();
  pb_put_fixed64(&l, 7, 12345);
  check_prefixes(n, step_req(NOW, 4, 4, tl_done(&l)), RINGKV_E_STATE);
  /* Two events, or none, are malformed. */
  pb_enc two = tl_enc();
  pb_put_uint(&two, 1, NOW);
  pb_put_bool(&two, 3, true);
  pb_put_bool(&two, 8, true);
  rk_slice rep;
  assert_int_equal(tl_call(n, RINGKV_OP_STEP, tl_done(&two), &rep), RINGKV_E_DECODE);
  /* And the node still writes. */
  assert_int_equal(step(n, step_req(NOW + 1, 5, 6, write_req())).rc, RINGKV_OK);
  ringkv_node_destroy(n);
  tl_reset();
}

/* ------------------------------------------------------------------------------------- */
/* The alarm */

/* A fresh node keeps rounds and anti-entropy going, one round per interval at most. */
static void test_alarm_paces_rounds(void **state) {
  (void)state;
  ringkv_node *n = tl_node(big_config(), 0);
  tout s = step(n, step_req(NOW, 0, 8, no_rows()));
  assert_int_equal(s.rc, RINGKV_OK);
  assert_true(s.alarm != 0);
  assert_true(s.alarm <= NOW + INTERVAL);
  tlog l = follow(n, NOW, NOW + 3 * AE_INTERVAL_MAX, s.alarm);
  assert_true(l.rounds >= 3);
  assert_true(l.digests >= 2);   /* anti-entropy runs at least once per AE_INTERVAL_MAX */
  ringkv_node_destroy(n);
}

/* Loaded.next_expiry at either extreme (a tombstone from the far future, or from long ago)
 * neither stops the alarm nor makes it fire before the next interval. */
static void test_alarm_with_extreme_next_expiry(void **state) {
  (void)state;
  uint64_t extremes[] = {UINT64_MAX, UINT64_C(1), (NOW + DAY) << 16, (uint64_t)RINGKV_HLC_MS_MAX << 16};
  for (size_t i = 0; i < sizeof extremes / sizeof *extremes; i++) {
    ringkv_node *n = tl_node(big_config(), 0);
    uint64_t t = NOW;
    for (int r = 0; r < 5; r++) {
      pb_enc l = tl_enc();
      pb_put_fixed64(&l, 7, extremes[i]);
      tout o = round_at(n, t, (uint64_t)r, tl_done(&l), NULL);
      for (size_t k = 0; k < o.nsends; k++) {
        tout a = step(n, step_req(t, 0, 5, answer_msg(o.sends[k].tag, false, no_rows())));
        assert_int_equal(a.rc, RINGKV_OK);
        o.alarm = a.alarm;
      }
      assert_true(o.alarm != 0);
      assert_true(o.alarm >= t + INTERVAL);
      assert_true(o.alarm <= t + AE_INTERVAL_MAX + INTERVAL);
      t = o.alarm;
    }
    ringkv_node_destroy(n);
    tl_reset();
  }
}

/* State persisted while the node's clock was ahead (FAULTS skew, or a wall clock stepped
 * back) holds last_round_ms in the future: rounds, pending pushes included, still come
 * within an interval (clamp_to_clock), not once the clock catches up (a day here). */
static void test_clock_back_last_round_stalls_rounds(void **state) {
  (void)state;
  tstate s = {.last_round_ms = NOW + DAY, .ae_next_ms = NOW, .ae_interval_ms = INTERVAL, .seq = 5, .client_seq = 5};
  ringkv_node *n = node_from(big_config(), 0, step_state(s), NULL, 0);
  tout st = step(n, step_req(NOW, 0, 8, no_rows()));
  assert_int_equal(st.rc, RINGKV_OK);
  /* Changes wait for every peer (acked 0 < seq 5): a round is due within an interval. */
  assert_true(st.alarm != 0);
  assert_true(st.alarm <= NOW + AE_INTERVAL_MAX);
  ringkv_node_destroy(n);
  tl_reset();
}

/* A peer's retry_at persisted a day ahead (clock moved back) waits no longer than the
 * back-off's cap, PEER_BACKOFF_MS_MAX. */
static void test_clock_back_retry_at_stalls_pushes(void **state) {
  (void)state;
  tstate s = {.last_round_ms = NOW - INTERVAL, .ae_next_ms = NOW, .ae_interval_ms = INTERVAL, .seq = 5, .client_seq = 5};
  tpeer peers[7];
  for (uint32_t p = 1; p < 8; p++) peers[p - 1] = (tpeer){p, 3, 0, NOW + DAY};
  ringkv_node *n = node_from(big_config(), 0, step_state(s), peers, 7);
  tout st = step(n, step_req(NOW, 0, 8, no_rows()));
  assert_int_equal(st.rc, RINGKV_OK);
  tlog l = follow(n, NOW, NOW + 2 * BACKOFF_MAX, st.alarm);
  assert_true(l.rounds > 0);
  assert_true(l.changed_asked > 0);   /* some round reads the changes to push them */
  ringkv_node_destroy(n);
}

/* The same node without the future retry_at does push (the test above can fail). */
static void test_backoff_retries_within_the_cap(void **state) {
  (void)state;
  tstate s = {.last_round_ms = NOW - INTERVAL, .ae_next_ms = NOW, .ae_interval_ms = INTERVAL, .seq = 5, .client_seq = 5};
  tpeer peers[7];
  for (uint32_t p = 1; p < 8; p++) peers[p - 1] = (tpeer){p, 30, 0, NOW + BACKOFF_MAX};
  ringkv_node *n = node_from(big_config(), 0, step_state(s), peers, 7);
  tout st = step(n, step_req(NOW, 0, 8, no_rows()));
  assert_int_equal(st.rc, RINGKV_OK);
  tlog l = follow(n, NOW, NOW + 2 * BACKOFF_MAX + INTERVAL, st.alarm);
  assert_true(l.changed_asked > 0);
  ringkv_node_destroy(n);
}

/* ae_next_ms persisted a day ahead (clock moved back) waits no longer than one
 * anti-entropy interval. */
static void test_clock_back_ae_next_stalls_anti_entropy(void **state) {
  (void)state;
  tstate s = {.last_round_ms = NOW - INTERVAL, .ae_next_ms = NOW + DAY, .ae_interval_ms = AE_INTERVAL_MAX};
  ringkv_node *n = node_from(big_config(), 0, step_state(s), NULL, 0);
  tout st = step(n, step_req(NOW, 0, 8, no_rows()));
  assert_int_equal(st.rc, RINGKV_OK);
  assert_true(st.alarm != 0 && st.alarm <= NOW + AE_INTERVAL_MAX + INTERVAL);
  tlog l = follow(n, NOW, NOW + 3 * AE_INTERVAL_MAX, st.alarm);
  assert_true(l.digests > 0);
  ringkv_node_destroy(n);
}

/* ------------------------------------------------------------------------------------- */
/* Hostile DigestReply */

/* The number of anti-entropy buckets node n shares with `peer`: the one length of
 * DigestReply.bucket_digests that OP_AE_COMPARE accepts from it. */
static size_t buckets_with(ringkv_node *n, uint32_t peer) {
  for (size_t len = 2; len <= RINGKV_AE_BUCKETS_MAX; len++) {
    pb_enc d = tl_enc();
    pb_put_uint(&d, 1, RINGKV_PROTOCOL_VERSION);
    pb_put_uint(&d, 2, peer);
    for (size_t i = 0; i < len; i++) pb_put_fixed64(&d, 5, 1);
    pb_put_uint(&d, 15, RINGKV_PROTOCOL_VERSION);
    pb_enc e = tl_enc();
    pb_put_bytes(&e, 1, tl_done(&d));
    pb_put_uint(&e, 2, 64);
    rk_slice rep;
    if (tl_call(n, RINGKV_OP_AE_COMPARE, tl_done(&e), &rep) == RINGKV_OK) return len;
  }
  return 0;
}

static rk_slice digest_reply_from(uint32_t from, size_t buckets) {
  pb_enc d = tl_enc();
  pb_put_uint(&d, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&d, 2, from);
  for (size_t i = 0; i < buckets; i++) pb_put_fixed64(&d, 5, 1);
  pb_put_uint(&d, 15, RINGKV_PROTOCOL_VERSION);
  return tl_done(&d);
}

/* A node whose first round sends its DigestRequest to a peer sharing fewer buckets with
 * it than another peer `*q` does; the send's tag in *tag. */
static ringkv_node *node_in_ae(uint32_t *p, uint32_t *q, size_t *qb, uint32_t *tag) {
  for (uint32_t self = 0; self < 8; self++) {
    ringkv_node *n = tl_node(big_config(), self);
    size_t b[8] = {0}, best = 0;
    uint32_t bq = 0;
    for (size_t i = 0; i < n->ae_peers_len; i++) {
      uint32_t peer = n->ae_peers[i];
      b[peer] = buckets_with(n, peer);
      if (b[peer] > best) {
        best = b[peer];
        bq = peer;
      }
    }
    for (uint64_t rnd = 0; rnd < 64; rnd++) {
      if (rnd > 0) {
        ringkv_node_destroy(n);
        n = tl_node(big_config(), self);
      }
      tout r = round_at(n, NOW, rnd, no_rows(), NULL);
      for (size_t k = 0; k < r.nsends; k++) {
        if (r.sends[k].kind != KIND_DIGEST) continue;
        if (b[r.sends[k].peer] != 0 && b[r.sends[k].peer] < best) {
          *p = r.sends[k].peer;
          *q = bq;
          *qb = best;
          *tag = r.sends[k].tag;
          tl_reset();
          return n;
        }
      }
    }
    ringkv_node_destroy(n);
  }
  fail_msg("no node has peers with different bucket counts");
  return NULL;
}

/* Garbage as the answer to a DigestRequest ends the exchange; anti-entropy goes on. */
static void test_garbage_digest_reply_ends_exchange(void **state) {
  (void)state;
  uint32_t p, q, tag;
  size_t qb;
  ringkv_node *n = node_in_ae(&p, &q, &qb, &tag);
  uint8_t junk[] = {0xff, 0xff, 0xff};
  rk_slice j = {junk, sizeof junk};
  tout a = step(n, step_req(NOW, 0, 5, answer_msg(tag, true, j)));
  assert_int_equal(a.rc, RINGKV_OK);
  tlog l = follow(n, NOW, NOW + 3 * AE_INTERVAL_MAX, a.alarm);
  assert_true(l.digests > 0);
  ringkv_node_destroy(n);
}

static bool contains(rk_slice hay, const char *needle) {
  size_t len = strlen(needle);
  for (size_t i = 0; i + len <= hay.len; i++) {
    if (memcmp(hay.ptr + i, needle, len) == 0) return true;
  }
  return false;
}

/* Peer P answers the root DigestRequest with a DigestReply whose `from` names another
 * node Q sharing more buckets with this node: OP_AE_COMPARE judges it against Q's shards
 * and names buckets P does not have, so the narrowing request cannot be built. The answer
 * is refused and counted and the exchange ends; anti-entropy goes on. */
static void test_digest_reply_from_another_node_ends_its_exchange(void **state) {
  (void)state;
  uint32_t p, q, tag;
  size_t qb;
  ringkv_node *n = node_in_ae(&p, &q, &qb, &tag);
  assert_int_not_equal(p, q);
  rk_slice rep;
  assert_int_equal(tl_call(n, RINGKV_OP_STEP, step_req(NOW, 0, 5, answer_msg(tag, true, digest_reply_from(q, qb))), &rep),
                   RINGKV_OK);
  assert_true(contains(rep, "refused_malformed"));
  tout a = step(n, step_req(NOW, 0, 8, no_rows()));
  assert_int_equal(a.rc, RINGKV_OK);
  tlog l = follow(n, NOW, NOW + 3 * AE_INTERVAL_MAX, a.alarm);
  assert_true(l.digests > 0);
  ringkv_node_destroy(n);
}

/* A send whose outcome never comes back (the executor owes one; say it lost it) holds
 * anti-entropy only until twice the send's time limit, then the exchange counts as lost
 * and the next one starts. */
static void test_unanswered_send_is_forgotten(void **state) {
  (void)state;
  uint32_t p, q, tag;
  size_t qb;
  ringkv_node *n = node_in_ae(&p, &q, &qb, &tag);
  size_t early = 0, late = 0;
  for (uint64_t t = NOW + INTERVAL; t <= NOW + 2 * TIMEOUT + 3 * INTERVAL; t += INTERVAL) {
    tout r = round_at(n, t, t, no_rows(), NULL);
    for (size_t k = 0; k < r.nsends; k++) {
      if (r.sends[k].kind != KIND_DIGEST) continue;
      if (t < NOW + 2 * TIMEOUT) early++;
      else late++;
      /* Later sends are answered (lost), as an executor does. */
      assert_int_equal(step(n, step_req(t, 0, 5, answer_msg(r.sends[k].tag, false, no_rows()))).rc, RINGKV_OK);
    }
    tl_reset();
  }
  assert_int_equal(early, 0);   /* the exchange in flight holds the next one ... */
  assert_true(late > 0);        /* ... but not forever */
  ringkv_node_destroy(n);
}

/* A client write's row as the round's `loaded` would hold it: Loaded{changed: Candidate{
 * Local{key, meta, values: (dot, value)}, seq, from_client}}. */
static rk_slice changed_row(ringkv_node *n, const char *key, const char *value, bool from_client) {
  pb_enc w = tl_enc();
  pb_put_bytes(&w, 2, tl_str(key));
  pb_put_bytes(&w, 6, tl_str(value));
  pb_put_bytes(&w, 7, tl_str("text/plain"));
  rk_slice rep;
  assert_int_equal(tl_call(n, RINGKV_OP_STEP, step_req(NOW, 1, 6, tl_done(&w)), &rep), RINGKV_OK);
  rk_slice row = tl_dup(tl_bytes_field(rep, 2));
  rk_slice applied = tl_bytes_field(row, 1);
  rk_slice put = tl_bytes_field(applied, 6);
  pb_enc e = tl_enc();
  size_t c = pb_begin(&e, 4);
  size_t l = pb_begin(&e, 1);
  pb_put_bytes(&e, 1, tl_str(key));
  pb_put_bytes(&e, 2, tl_bytes_field(applied, 3));
  size_t v = pb_begin(&e, 3);
  pb_put_bytes(&e, 1, tl_bytes_field(put, 1));
  pb_put_bytes(&e, 2, tl_str(value));
  pb_end(&e, v);
  pb_end(&e, l);
  pb_put_uint(&e, 2, tl_u64(row, 3));
  pb_put_bool(&e, 3, from_client);
  pb_end(&e, c);
  rk_slice out = tl_dup(tl_done(&e));
  free((void *)row.ptr);
  return out;
}

static rk_slice changed_from_write(ringkv_node *n, const char *key, const char *value) {
  return changed_row(n, key, value, true);
}

static size_t pushes_in(const tout *o) {
  size_t k = 0;
  for (size_t i = 0; i < o->nsends; i++) k += o->sends[i].kind == KIND_PUSH;
  return k;
}

/* A node being fenced pushes what it learned too (where learned changes are not relayed):
 * it may be the last copy. It wipes only once every push is acknowledged. */
static void test_fence_pushes_learned_rows(void **state) {
  (void)state;
  ringkv_node *n = tl_node(tl_default_config(), 0);   /* R=3, fanout 2: no relaying */
  assert_int_equal(step(n, step_req(NOW, 0, 8, no_rows())).rc, RINGKV_OK);
  rk_slice learned = changed_row(n, "learned/key", "v", false);
  tout before = round_at(n, NOW + INTERVAL, 1, learned, NULL);
  assert_int_equal(pushes_in(&before), 0);
  pb_enc f = tl_enc();
  pb_put_uint(&f, 1, NOW + INTERVAL);
  pb_put_uint(&f, 2, 2);
  pb_put_uint(&f, 9, 1);
  tout fenced = step(n, tl_done(&f));
  assert_int_equal(fenced.rc, RINGKV_OK);
  assert_false(fenced.wipe);
  uint64_t t = NOW + 2u * INTERVAL;
  tout r = round_at(n, t, 3, learned, NULL);
  /* To each other replica of the key. */
  const char *key = "learned/key";
  uint32_t shard = (uint32_t)(ringkv_hash((const uint8_t *)key, strlen(key)) % tl_default_config().shards);
  size_t others = 0;
  for (uint32_t p = 1; p < 8; p++) others += rk_is_replica(n, shard, p);
  assert_true(others >= 2);
  assert_int_equal(pushes_in(&r), others);
  for (size_t k = 0; k < r.nsends; k++) assert_true(rk_is_replica(n, shard, r.sends[k].peer));
  assert_false(r.wipe);
  tout last = r;
  for (size_t k = 0; k < r.nsends; k++) {
    if (r.sends[k].kind != KIND_PUSH) continue;
    last = step(n, step_req(t, 0, 5, answer_msg(r.sends[k].tag, true, no_rows())));
    assert_int_equal(last.rc, RINGKV_OK);
  }
  /* Every peer acknowledged (those the key is not on, by the round's scan). */
  for (int i = 0; i < 8 && !last.wipe; i++) {
    t += INTERVAL;
    last = round_at(n, t, 4u + (uint64_t)i, no_rows(), NULL);
    for (size_t k = 0; k < last.nsends && !last.wipe; k++) {
      last = step(n, step_req(t, 0, 5, answer_msg(last.sends[k].tag, true, no_rows())));
    }
  }
  assert_true(last.wipe);
  free((void *)learned.ptr);
  tl_reset();
  ringkv_node_destroy(n);
}

/* A push in flight when the fence comes was built before it (clients' rows only): its
 * answer acknowledges nothing, so the learned row still goes to each of its replicas
 * before the wipe. */
static void test_fence_drops_acks_of_pushes_in_flight(void **state) {
  (void)state;
  ringkv_node *n = tl_node(tl_default_config(), 0);
  assert_int_equal(step(n, step_req(NOW, 0, 8, no_rows())).rc, RINGKV_OK);
  rk_slice learned = changed_row(n, "learned/key", "v", false);
  rk_slice client = changed_row(n, "client/key", "w", true);
  uint8_t *both_bytes = malloc(learned.len + client.len);
  assert_non_null(both_bytes);
  memcpy(both_bytes, learned.ptr, learned.len);
  memcpy(both_bytes + learned.len, client.ptr, client.len);
  rk_slice both = {both_bytes, learned.len + client.len};
  /* Before the fence: the client row goes out, the pushes stay in flight. */
  tout r0 = round_at(n, NOW + INTERVAL, 1, client, NULL);
  assert_true(pushes_in(&r0) > 0);
  pb_enc f = tl_enc();
  pb_put_uint(&f, 1, NOW + INTERVAL);
  pb_put_uint(&f, 2, 2);
  pb_put_uint(&f, 9, 1);
  assert_int_equal(step(n, tl_done(&f)).rc, RINGKV_OK);
  tout last = r0;
  for (size_t k = 0; k < r0.nsends; k++) {
    last = step(n, step_req(NOW + INTERVAL, 0, 5, answer_msg(r0.sends[k].tag, true, no_rows())));
    assert_int_equal(last.rc, RINGKV_OK);
    assert_false(last.wipe);
  }
  /* Every replica of the learned key gets a push after the fence before the wipe. */
  const char *key = "learned/key";
  uint32_t shard = (uint32_t)(ringkv_hash((const uint8_t *)key, strlen(key)) % tl_default_config().shards);
  bool pushed[8] = {false};
  uint64_t t = NOW + INTERVAL;
  for (int i = 0; i < 10 && !last.wipe; i++) {
    t += INTERVAL;
    last = round_at(n, t, 10u + (uint64_t)i, both, NULL);
    tout r = last;
    for (size_t k = 0; k < r.nsends && !last.wipe; k++) {
      if (r.sends[k].kind == KIND_PUSH) pushed[r.sends[k].peer] = true;
      last = step(n, step_req(t, 0, 5, answer_msg(r.sends[k].tag, true, no_rows())));
    }
  }
  assert_true(last.wipe);
  for (uint32_t p = 1; p < 8; p++) {
    if (rk_is_replica(n, shard, p)) assert_true(pushed[p]);
  }
  free((void *)learned.ptr);
  free((void *)client.ptr);
  free(both_bytes);
  tl_reset();
  ringkv_node_destroy(n);
}

/* What an executor persists across steps: the peer rows and the StepState. */
static tpeer persisted_peers[8];
static uint8_t persisted_state[4096];
static size_t persisted_state_len;

static void persist(rk_slice rep) {
  pb_rd it = pb_reader(rep);
  rk_slice pr;
  while (tl_next_bytes(&it, 4, &pr)) {
    uint32_t p = (uint32_t)tl_u64(pr, 1);
    assert_true(p < 8);
    persisted_peers[p] = (tpeer){p, (uint32_t)tl_u64(pr, 3), tl_u64(pr, 2), tl_u64(pr, 4)};
  }
  pb_rd at;
  if (tl_field(rep, 5, PB_LEN, &at)) {
    rk_slice st = tl_bytes_field(rep, 5);
    assert_true(st.len <= sizeof persisted_state);
    memcpy(persisted_state, st.ptr, st.len);
    persisted_state_len = st.len;
  }
}

/* A node restarted mid-fence (its core rebuilt from what was persisted) still refuses
 * client writes and pushes every row again: the acknowledgements the fence reset are
 * persisted with it. */
static void test_fence_survives_restart(void **state) {
  (void)state;
  memset(persisted_peers, 0, sizeof persisted_peers);
  for (uint32_t p = 0; p < 8; p++) persisted_peers[p].peer = p;
  persisted_state_len = 0;
  on_reply = persist;
  tl_config c = tl_default_config();
  ringkv_node *n = tl_node(c, 0);
  assert_int_equal(step(n, step_req(NOW, 0, 8, no_rows())).rc, RINGKV_OK);
  rk_slice learned = changed_row(n, "learned/key", "v", false);
  rk_slice client = changed_row(n, "client/key", "w", true);
  uint8_t *both_bytes = malloc(learned.len + client.len);
  assert_non_null(both_bytes);
  memcpy(both_bytes, learned.ptr, learned.len);
  memcpy(both_bytes + learned.len, client.ptr, client.len);
  rk_slice both = {both_bytes, learned.len + client.len};
  /* Before the fence every peer acknowledges everything (persisted). */
  tout r0 = round_at(n, NOW + INTERVAL, 1, both, NULL);
  for (size_t k = 0; k < r0.nsends; k++) {
    assert_int_equal(step(n, step_req(NOW + INTERVAL, 0, 5, answer_msg(r0.sends[k].tag, true, no_rows()))).rc, RINGKV_OK);
  }
  uint64_t acked_before = 0;
  for (uint32_t p = 1; p < 8; p++) acked_before = persisted_peers[p].acked > acked_before ? persisted_peers[p].acked : acked_before;
  assert_true(acked_before >= 2);
  pb_enc f = tl_enc();
  pb_put_uint(&f, 1, NOW + INTERVAL);
  pb_put_uint(&f, 9, 1);
  tout fenced = step(n, tl_done(&f));
  assert_int_equal(fenced.rc, RINGKV_OK);
  assert_false(fenced.wipe);
  ringkv_node_destroy(n);
  /* Restarted from what was persisted. */
  rk_slice kept = {persisted_state, persisted_state_len};
  ringkv_node *r = node_from(c, 0, kept, persisted_peers + 1, 7);
  assert_int_equal(step(r, step_req(NOW + 2u * INTERVAL, 0, 8, no_rows())).rc, RINGKV_OK);
  pb_enc w = tl_enc();
  pb_put_bytes(&w, 2, tl_str("client/key"));
  pb_put_bytes(&w, 6, tl_str("x"));
  assert_int_equal(step(r, step_req(NOW + 2u * INTERVAL, 1, 6, tl_done(&w))).rc, RINGKV_E_FENCING);
  tout again = round_at(r, NOW + 3u * INTERVAL, 2, both, NULL);
  const char *key = "learned/key";
  uint32_t shard = (uint32_t)(ringkv_hash((const uint8_t *)key, strlen(key)) % c.shards);
  size_t others = 0;
  for (uint32_t p = 1; p < 8; p++) others += rk_is_replica(r, shard, p);
  size_t to_replicas = 0;
  for (size_t k = 0; k < again.nsends; k++) to_replicas += again.sends[k].kind == KIND_PUSH && rk_is_replica(r, shard, again.sends[k].peer);
  assert_int_equal(to_replicas, others);
  assert_false(again.wipe);
  on_reply = NULL;
  free((void *)learned.ptr);
  free((void *)client.ptr);
  free(both_bytes);
  tl_reset();
  ringkv_node_destroy(r);
}

/* With one replica per key no other node holds this one's keys: only a forced fence. */
static void test_fence_with_one_replica_is_forced_only(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  c.replicas = 1;
  ringkv_node *n = tl_node(c, 0);
  assert_int_equal(step(n, step_req(NOW, 0, 8, no_rows())).rc, RINGKV_OK);
  pb_enc f = tl_enc();
  pb_put_uint(&f, 1, NOW);
  pb_put_uint(&f, 9, 1);
  assert_int_equal(step(n, tl_done(&f)).rc, RINGKV_E_VALUE);
  pb_enc g = tl_enc();
  pb_put_uint(&g, 1, NOW);
  pb_put_uint(&g, 9, 2);
  tout forced = step(n, tl_done(&g));
  assert_int_equal(forced.rc, RINGKV_OK);
  assert_true(forced.wipe);
  tl_reset();
  ringkv_node_destroy(n);
}

static void test_push_time_limit(void **state) {
  (void)state;
  ringkv_node *n = tl_node(tl_default_config(), 0);
  assert_int_equal(step(n, step_req(NOW, 0, 8, no_rows())).rc, RINGKV_OK);
  rk_slice loaded = changed_from_write(n, "pushed/key", "v");
  uint64_t t = NOW + INTERVAL, last_timeout = 0, max_timeout = 0;
  size_t pushes = 0, quick = 0;
  for (int round = 0; round < 40; round++, t += INTERVAL) {
    tout r = round_at(n, t, (uint64_t)round, loaded, NULL);
    bool pushed = false;
    for (size_t k = 0; k < r.nsends; k++) {
      if (r.sends[k].kind != KIND_PUSH || r.sends[k].peer != r.sends[0].peer) continue;
      pushed = true;
      pushes++;
      /* Never shorter than the last one (it only grows with failures), never past the cap. */
      assert_true(r.sends[k].timeout >= last_timeout);
      assert_true(r.sends[k].timeout <= TIMEOUT);
      if (r.sends[k].timeout == INTERVAL && (size_t)round == quick) quick++;
      last_timeout = r.sends[k].timeout;
      max_timeout = r.sends[k].timeout > max_timeout ? r.sends[k].timeout : max_timeout;
    }
    for (size_t k = 0; k < r.nsends; k++) {
      assert_int_equal(step(n, step_req(t, 0, 5, answer_msg(r.sends[k].tag, false, no_rows()))).rc, RINGKV_OK);
    }
    (void)pushed;
  }
  /* The first push and its first retry: one interval each, in consecutive rounds. */
  assert_int_equal(quick, 2);
  assert_true(pushes > quick);        /* it goes on trying ... */
  assert_int_equal(max_timeout, TIMEOUT);   /* ... with more time, up to the cap */
  free((void *)loaded.ptr);
  tl_reset();
  ringkv_node_destroy(n);
}

/* Two failures in a row and the push goes out twice; it fails only when both copies do. */
static void test_hedged_push(void **state) {
  (void)state;
  ringkv_node *n = tl_node(tl_default_config(), 0);
  assert_int_equal(step(n, step_req(NOW, 0, 8, no_rows())).rc, RINGKV_OK);
  rk_slice loaded = changed_from_write(n, "hedged/key", "v");
  uint64_t t = NOW + INTERVAL;
  uint32_t peer = UINT32_MAX;
  size_t copies[8] = {0};
  for (int round = 0; round < 8; round++, t += INTERVAL) {
    tout r = round_at(n, t, (uint64_t)round, loaded, NULL);
    uint32_t tags[4];
    size_t nt = 0;
    for (size_t k = 0; k < r.nsends; k++) {
      if (r.sends[k].kind != KIND_PUSH) continue;
      if (peer == UINT32_MAX) peer = r.sends[k].peer;
      if (r.sends[k].peer == peer && nt < 4) tags[nt++] = r.sends[k].tag;
    }
    copies[round] = nt;
    /* Every other send is lost; of this peer's copies, in round 4 the second is answered. */
    for (size_t k = 0; k < r.nsends; k++) {
      bool ok = round == 4 && r.sends[k].peer == peer && nt == 2 && r.sends[k].tag == tags[1];
      if (r.sends[k].peer == peer && r.sends[k].tag == tags[0] && round == 4) ok = false;
      assert_int_equal(step(n, step_req(t, 0, 5, answer_msg(r.sends[k].tag, ok, no_rows()))).rc, RINGKV_OK);
    }
  }
  assert_int_equal(copies[0], 1);
  assert_int_equal(copies[1], 1);
  assert_int_equal(copies[2], 2);   /* after two failures: hedged */
  assert_int_equal(copies[3], 2);
  assert_int_equal(copies[4], 2);   /* the first copy lost, the second answered: delivered */
  assert_int_equal(copies[5], 0);   /* so the key is not pushed to that peer again */
  free((void *)loaded.ptr);
  tl_reset();
  ringkv_node_destroy(n);
}

/* A node restarted in the middle of a hedged push: the new instance, from the persisted
 * state and peer rows (failures 3), pushes again at its first round, hedged; the old
 * instance's answers arriving late (answered or lost) are dropped, not taken for its own;
 * one copy of the new push answered delivers it, and the key is not pushed to that peer
 * again. Nothing stalls, nothing is acknowledged that was not delivered. */
static void test_restart_mid_hedged_push(void **state) {
  (void)state;
  tpeer peers[7];
  for (uint32_t p = 1; p < 8; p++) peers[p - 1] = (tpeer){p, 3, 0, 0};
  tstate s0 = {.last_round_ms = NOW - INTERVAL, .ae_next_ms = NOW + 60 * INTERVAL, .ae_interval_ms = INTERVAL};
  ringkv_node *old = node_from(tl_default_config(), 0, step_state(s0), peers, 7);
  /* Each instance's first step brings its own random bits, as an executor's do. */
  assert_int_equal(step(old, step_req(NOW, UINT64_C(0x1111) << 32, 8, no_rows())).rc, RINGKV_OK);
  rk_slice loaded = changed_from_write(old, "restart/key", "v");
  tout r = round_at(old, NOW + INTERVAL, 1, loaded, NULL);
  uint32_t peer = UINT32_MAX, old_tags[4];
  size_t nold = 0;
  for (size_t k = 0; k < r.nsends; k++) {
    if (r.sends[k].kind != KIND_PUSH) continue;
    if (peer == UINT32_MAX) peer = r.sends[k].peer;
    if (r.sends[k].peer == peer && nold < 4) old_tags[nold++] = r.sends[k].tag;
  }
  assert_int_equal(nold, 2);   /* failures 3: hedged */
  ringkv_node_destroy(old);
  tl_reset();

  /* The restart: the write's row and seq were persisted (seq 1), the peer rows unchanged. */
  tstate s1 = {.last_round_ms = NOW + INTERVAL, .ae_next_ms = NOW + 60 * INTERVAL, .ae_interval_ms = INTERVAL,
               .seq = 1, .client_seq = 1};
  ringkv_node *n = node_from(tl_default_config(), 0, step_state(s1), peers, 7);
  assert_int_equal(step(n, step_req(NOW + 2 * INTERVAL, UINT64_C(0x2222) << 32, 8, no_rows())).rc, RINGKV_OK);
  r = round_at(n, NOW + 2 * INTERVAL, 2, loaded, NULL);
  uint32_t tags[4];
  size_t nt = 0;
  for (size_t k = 0; k < r.nsends; k++) {
    if (r.sends[k].kind == KIND_PUSH && r.sends[k].peer == peer && nt < 4) tags[nt++] = r.sends[k].tag;
  }
  assert_int_equal(nt, 2);   /* pushed again at once, hedged */
  /* The old instance's answers, late: answered and lost. Neither is this instance's. */
  for (size_t i = 0; i < nold; i++) {
    /* Tags start at a random point per instance (the first steps' random bits differ). */
    assert_true(old_tags[i] != tags[0] && old_tags[i] != tags[1]);
    assert_int_equal(step(n, step_req(NOW + 2 * INTERVAL, 0, 5, answer_msg(old_tags[i], i == 0, no_rows()))).rc, RINGKV_OK);
  }
  /* Still pending: the next round (its answers not in) sends nothing new to the peer... */
  tout mid = round_at(n, NOW + 3 * INTERVAL, 3, loaded, NULL);
  for (size_t k = 0; k < mid.nsends; k++) assert_false(mid.sends[k].kind == KIND_PUSH && mid.sends[k].peer == peer);
  /* ... then one copy lost, the other answered: delivered. */
  assert_int_equal(step(n, step_req(NOW + 3 * INTERVAL, 0, 5, answer_msg(tags[0], false, no_rows()))).rc, RINGKV_OK);
  assert_int_equal(step(n, step_req(NOW + 3 * INTERVAL, 0, 5, answer_msg(tags[1], true, no_rows()))).rc, RINGKV_OK);
  tout after = round_at(n, NOW + 4 * INTERVAL, 4, loaded, NULL);
  for (size_t k = 0; k < after.nsends; k++) assert_false(after.sends[k].kind == KIND_PUSH && after.sends[k].peer == peer);
  free((void *)loaded.ptr);
  tl_reset();
  ringkv_node_destroy(n);
}

/* A peer's DigestReply (in `version`) naming every shard node 0 shares with `peer` with a
 * digest of 7: every one differs. */
static rk_slice shard_digests_reply(tl_config c, uint32_t peer, uint32_t version) {
  pb_enc shards = tl_enc();
  ringkv_node *pl = tl_node(c, 1);
  for (uint32_t sh = 0; sh < c.shards; sh++) {
    bool mine = false, theirs = false;
    pb_enc q = tl_enc();
    size_t qm = pb_begin(&q, 2);
    pb_put_varint_raw(&q, sh);
    pb_end(&q, qm);
    rk_slice rep;
    assert_int_equal(tl_call(pl, RINGKV_OP_PLACE, tl_done(&q), &rep), RINGKV_OK);
    pb_rd reps = pb_reader(tl_bytes_field(tl_bytes_field(rep, 1), 2));
    uint64_t v;
    while (!pb_done(&reps) && pb_read_varint(&reps, &v)) {
      mine |= v == 0;
      theirs |= v == peer;
    }
    if (!mine || !theirs) continue;
    size_t m = pb_begin(&shards, 4);
    pb_put_uint(&shards, 1, sh);
    pb_put_fixed64(&shards, 2, 7);
    pb_end(&shards, m);
  }
  ringkv_node_destroy(pl);
  rk_slice body = tl_dup(tl_done(&shards));
  pb_enc d = tl_enc();
  pb_put_uint(&d, 1, version);
  pb_put_uint(&d, 2, peer);
  pb_put_raw(&d, body.ptr, body.len);
  pb_put_uint(&d, 15, version);
  free((void *)body.ptr);
  return tl_done(&d);
}

/* A chain the executor does not go on with (another event instead of `loaded`) frees what
 * waited on it: here a repair that was to load its shards, and anti-entropy goes on. */
static void test_dropped_repair_chain_frees_anti_entropy(void **state) {
  (void)state;
  tl_config c = tl_default_config();   /* 64 shards: the first answer holds shard digests */
  ringkv_node *n = tl_node(c, 0);
  tout r = round_at(n, NOW, 1, no_rows(), NULL);
  uint32_t tag = 0, peer = 0;
  for (size_t k = 0; k < r.nsends; k++) {
    if (r.sends[k].kind == KIND_DIGEST) {
      tag = r.sends[k].tag;
      peer = r.sends[k].peer;
    }
  }
  assert_int_not_equal(tag, 0);
  /* The peer holds something in every shard the two share: every one differs. */
  rk_slice reply = tl_dup(shard_digests_reply(c, peer, RINGKV_PROTOCOL_VERSION));
  tout a = step(n, step_req(NOW, 0, 5, answer_msg(tag, true, reply)));
  free((void *)reply.ptr);
  assert_int_equal(a.rc, RINGKV_OK);
  assert_true(a.has_load);   /* it asks for the differing shards' rows ... */
  /* ... and gets an alarm instead: the chain is dropped. */
  tout b = step(n, step_req(NOW + INTERVAL, 0, 8, no_rows()));
  assert_int_equal(b.rc, RINGKV_OK);
  tlog l = follow(n, NOW + INTERVAL, NOW + 3 * AE_INTERVAL_MAX, b.alarm);
  assert_true(l.digests > 0);
  ringkv_node_destroy(n);
}

/* A ranges exchange whose repair chain is dropped (another event instead of `loaded`)
 * leaves nothing behind: a later exchange with a peer gone back to version 2 repairs
 * whole shards (it took the stale leaves' path and sent nothing, before ae_clear). */
static rk_slice range_parts_loaded(rk_slice load) {
  pb_enc l = tl_enc();
  pb_rd it = pb_reader(load);
  rk_slice r;
  size_t n = 0;
  while (tl_next_bytes(&it, 17, &r)) {
    size_t m = pb_begin(&l, 10);
    pb_end(&l, m);
    n++;
  }
  assert_true(n > 0);
  return tl_done(&l);
}


static void test_dropped_ranges_chain_leaves_nothing_behind(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  ringkv_node *n = tl_node(c, 0);
  tout r = round_at(n, NOW, 1, no_rows(), NULL);
  uint32_t tag = 0, peer = 0;
  for (size_t k = 0; k < r.nsends; k++) if (r.sends[k].kind == KIND_DIGEST) { tag = r.sends[k].tag; peer = r.sends[k].peer; }
  assert_int_not_equal(tag, 0);
  rk_slice rep;
  /* 1. peer speaks 3: the differing shards become ranges; own parts are loaded */
  rk_slice msg = tl_dup(shard_digests_reply(c, peer, 3));
  assert_int_equal(tl_call(n, RINGKV_OP_STEP, step_req(NOW, 0, 5, answer_msg(tag, true, msg)), &rep), RINGKV_OK);
  rk_slice load = tl_dup(tl_bytes_field(rep, 1));
  (void)range_parts_loaded(load);
  /* count */
  size_t asked = 0; { pb_rd it = pb_reader(load); rk_slice x; while (tl_next_bytes(&it, 17, &x)) asked++; }
  pb_enc pl = tl_enc();
  for (size_t i = 0; i < asked; i++) pb_put_bytes_always(&pl, 10, (rk_slice){NULL, 0});
  rk_slice loaded = tl_dup(tl_done(&pl));
  assert_int_equal(tl_call(n, RINGKV_OP_STEP, step_req(NOW, 0, 4, loaded), &rep), RINGKV_OK);
  tout o;
  memset(&o, 0, sizeof o);
  { pb_rd it = pb_reader(rep); rk_slice s; while (tl_next_bytes(&it, 6, &s)) { pb_rd ti = pb_reader(s); rk_slice t;
      while (tl_next_bytes(&ti, 3, &t)) { tag = (uint32_t)tl_u64(t, 2); assert_int_equal(tl_u64(s,1), KIND_DIGEST);} } }
  /* 2. the peer's parts: one key in part 0 of every range -> every range a leaf */
  pb_enc d = tl_enc();
  pb_put_uint(&d, 1, 3);
  pb_put_uint(&d, 2, peer);
  for (size_t i = 0; i < asked; i++) {
    size_t m = pb_begin(&d, 6);
    pb_put_uint(&d, 1, 1);
    size_t cm = pb_begin(&d, 2); pb_put_varint_raw(&d, 1); pb_end(&d, cm);
    size_t dm = pb_begin(&d, 3); uint8_t le[8] = {5}; pb_put_raw(&d, le, 8); pb_end(&d, dm);
    pb_end(&d, m);
  }
  pb_put_uint(&d, 15, 3);
  rk_slice reply3 = tl_dup(tl_done(&d));
  assert_int_equal(tl_call(n, RINGKV_OP_STEP, step_req(NOW, 0, 5, answer_msg(tag, true, reply3)), &rep), RINGKV_OK);
  rk_slice l2 = tl_bytes_field(rep, 1);
  { pb_rd it = pb_reader(l2); rk_slice x; assert_true(tl_next_bytes(&it, 14, &x)); }   /* leaves' rows asked */
  /* 3. the chain is dropped (a start event instead of `loaded`) */
  assert_int_equal(step(n, step_req(NOW + 1, 0, 8, no_rows())).rc, RINGKV_OK);
  /* 4. the peer goes back to version 2 (a DigestRequest of version 2 from it) */
  pb_enc q = tl_enc();
  pb_put_uint(&q, 1, 2);
  pb_put_uint(&q, 2, peer);
  pb_put_fixed64(&q, 3, 1);
  pb_put_uint(&q, 15, 2);
  rk_slice dq = tl_dup(tl_done(&q));
  assert_int_equal(step(n, step_req(NOW + 2, 0, 7, incoming_req(KIND_DIGEST, dq))).rc, RINGKV_OK);
  assert_int_equal(n->peer_version[peer], 2);
  /* 5. next exchanges until one goes to `peer`, answered with differing shards (v2) */
  uint64_t t = NOW + 10 * AE_INTERVAL_MAX;
  bool pushed = false, ranges_loaded_again = false;
  for (int round = 0; round < 200 && !pushed && !ranges_loaded_again; round++, t += 10 * AE_INTERVAL_MAX) {
    tout a = round_at(n, t, (uint64_t)round + 7, no_rows(), NULL);
    uint32_t dt = 0;
    for (size_t k = 0; k < a.nsends; k++) {
      if (a.sends[k].kind == KIND_DIGEST) { dt = a.sends[k].tag; peer = a.sends[k].peer; }
    }
    if (dt == 0) continue;
    rk_slice v2 = tl_dup(shard_digests_reply(c, peer, 2));
    assert_int_equal(tl_call(n, RINGKV_OP_STEP, step_req(t, 0, 5, answer_msg(dt, true, v2)), &rep), RINGKV_OK);
    rk_slice ld = tl_bytes_field(rep, 1);
    assert_true(ld.len > 0);   /* the shards' rows */
    pb_enc none = tl_enc();
    pb_put_uint(&none, 2, 0);
    /* Loaded with no rows: the shards whole (field 2 = shards loaded) */
    { pb_rd it = pb_reader(ld); rk_slice sh; if (tl_next_bytes(&it, 3, &sh)) { size_t m = pb_begin(&none, 2); pb_put_raw(&none, sh.ptr, sh.len); pb_end(&none, m);} }
    assert_int_equal(tl_call(n, RINGKV_OP_STEP, step_req(t, 0, 4, tl_done(&none)), &rep), RINGKV_OK);
    pb_rd it = pb_reader(rep); rk_slice s;
    while (tl_next_bytes(&it, 6, &s)) {
      if (tl_u64(s, 1) != KIND_PUSH) continue;
      rk_slice pm = tl_bytes_field(s, 2);
      pushed = tl_bytes_field(pm, 4).len > 0;   /* a repair of whole shards */
    }
    rk_slice ld2 = tl_bytes_field(rep, 1);
    { pb_rd i2 = pb_reader(ld2); rk_slice x; if (tl_next_bytes(&i2, 17, &x)) ranges_loaded_again = true; }
    free((void *)v2.ptr);
  }
  assert_true(pushed);
  assert_false(ranges_loaded_again);
  rk_slice dups[] = {msg, load, loaded, reply3, dq};
  for (size_t i = 0; i < sizeof dups / sizeof *dups; i++) free((void *)dups[i].ptr);
  ringkv_node_destroy(n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_truncated_step_requests_are_errors),
      cmocka_unit_test(test_alarm_paces_rounds),
      cmocka_unit_test(test_alarm_with_extreme_next_expiry),
      cmocka_unit_test(test_clock_back_last_round_stalls_rounds),
      cmocka_unit_test(test_clock_back_retry_at_stalls_pushes),
      cmocka_unit_test(test_backoff_retries_within_the_cap),
      cmocka_unit_test(test_clock_back_ae_next_stalls_anti_entropy),
      cmocka_unit_test(test_garbage_digest_reply_ends_exchange),
      cmocka_unit_test(test_digest_reply_from_another_node_ends_its_exchange),
      cmocka_unit_test(test_unanswered_send_is_forgotten),
      cmocka_unit_test(test_dropped_repair_chain_frees_anti_entropy),
      cmocka_unit_test(test_push_time_limit),
      cmocka_unit_test(test_fence_pushes_learned_rows),
      cmocka_unit_test(test_fence_drops_acks_of_pushes_in_flight),
      cmocka_unit_test(test_fence_with_one_replica_is_forced_only),
      cmocka_unit_test(test_fence_survives_restart),
      cmocka_unit_test(test_hedged_push),
      cmocka_unit_test(test_restart_mid_hedged_push),
      cmocka_unit_test(test_dropped_ranges_chain_leaves_nothing_behind),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  tl_free();
  return rc;
}
