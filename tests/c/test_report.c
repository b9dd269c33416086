/* test_report: a node's reports to RingControl (wasm/src/report.c through OP_STEP), and
 * RingControl's side (OP_REPORT, OP_CLUSTER).
 *
 *  - A new node reports once at start, in full, after counting its live keys; nothing is
 *    sent again until something changes (an idle node stays idle).
 *  - The first change after a quiet report goes at once, the write's answer held until the
 *    report's step; while changes are unacknowledged, at most one report per
 *    max(interval, N x 5 ms); a lost report is sent again after a back-off; a refused one
 *    is sent in full.
 *  - The live key count follows writes, deletes and rewrites; a node persisted by an earlier
 *    build (no count) asks for one count; a restart with everything acknowledged sends
 *    nothing, one with changes unacknowledged sends a full report.
 *  - RingControl refuses a forged, old-version or out-of-range report; takes a newer one
 *    only; counts the shards whose replicas disagree; `converged` follows.
 */
#include "testlib.h"

#define NOW UINT64_C(1700000000000)
#define INTERVAL UINT64_C(1000)
enum { KIND_REPORT = 4 };

static tl_config cfg(void) {
  tl_config c = tl_default_config();
  return c;
}

/* InitRequest with Config.reports and an optional persisted StepState. */
static ringkv_node *reporting_node(uint32_t id, rk_slice state) {
  pb_enc e = tl_enc();
  pb_enc c = tl_enc();
  tl_put_config(&c, 1, cfg());
  rk_slice cs = tl_done(&c);
  /* tl_put_config wrote field 1 = Config; append Config.reports inside it. */
  pb_rd r = pb_reader(cs);
  uint32_t f, wt;
  rk_slice inner = {NULL, 0};
  if (pb_next(&r, &f, &wt) == 1) pb_get_bytes(&r, wt, &inner);
  size_t m = pb_begin(&e, 1);
  pb_put_raw(&e, inner.ptr, inner.len);
  pb_put_bool(&e, 20, true);
  pb_end(&e, m);
  m = pb_begin(&e, 2);
  pb_put_uint(&e, 1, id);
  pb_end(&e, m);
  pb_put_bytes(&e, 4, state);
  ringkv_node *n = ringkv_node_create();
  assert_non_null(n);
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_INIT, tl_done(&e), &reply), RINGKV_OK);
  return n;
}

typedef struct {
  int rc;
  bool load_report, load_count;
  bool has_load;
  size_t reports;
  uint32_t report_tag;
  rk_slice report;   /* copied */
  rk_slice reply;    /* copied */
  rk_slice state;    /* copied */
  uint64_t alarm;
} out;

/* A copy in the test's arena (the reply lives in the node's until its next call). */
static rk_slice keep(rk_slice s) {
  if (s.len == 0) return s;
  uint8_t *p = rk_alloc(tl_arena(), s.len);
  assert_non_null(p);
  memcpy(p, s.ptr, s.len);
  rk_slice d = {p, s.len};
  return d;
}

static out step(ringkv_node *n, uint64_t now, uint32_t field, rk_slice body) {
  out o;
  memset(&o, 0, sizeof o);
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, now);
  pb_put_uint(&e, 2, 0x123456789abcdefULL);
  if (field == 3 || field == 8) pb_put_bool(&e, field, true);
  else pb_put_bytes_always(&e, field, body);
  rk_slice rep;
  o.rc = tl_call(n, RINGKV_OP_STEP, tl_done(&e), &rep);
  if (o.rc != RINGKV_OK) return o;
  pb_rd at;
  if (tl_field(rep, 1, PB_LEN, &at)) {
    o.has_load = true;
    rk_slice load = tl_bytes_field(rep, 1);
    o.load_report = tl_u64(load, 20) != 0;
    o.load_count = tl_u64(load, 21) != 0;
  }
  pb_rd it = pb_reader(rep);
  rk_slice s;
  while (tl_next_bytes(&it, 6, &s)) {
    if (tl_u64(s, 1) != KIND_REPORT) continue;
    rk_slice t = tl_bytes_field(s, 3);
    assert_int_equal(tl_u64(t, 1), RINGKV_PEER_CONTROL);
    o.report_tag = (uint32_t)tl_u64(t, 2);
    o.report = keep(tl_bytes_field(s, 2));
    o.reports++;
  }
  o.reply = keep(tl_bytes_field(rep, 7));
  o.state = keep(tl_bytes_field(rep, 5));
  o.alarm = tl_u64(rep, 8);
  return o;
}

/* Loaded{facts{db_bytes, counters{rounds}}, live_keys}. */
static rk_slice facts(uint64_t live) {
  pb_enc e = tl_enc();
  size_t m = pb_begin(&e, 20);
  pb_put_uint(&e, 1, 4096);
  size_t c = pb_begin(&e, 2);
  pb_put_bytes(&e, 1, tl_str("rounds"));
  pb_put_uint(&e, 2, 7);
  pb_end(&e, c);
  pb_end(&e, m);
  pb_put_uint(&e, 21, live);
  return tl_done(&e);
}

/* Follows a step that asked for the facts: the report's step. */
static out report_step(ringkv_node *n, uint64_t now, out asked, uint64_t live) {
  assert_true(asked.load_report);
  out r = step(n, now, 4, facts(live));
  assert_int_equal(r.rc, RINGKV_OK);
  assert_int_equal(r.reports, 1);
  return r;
}

static rk_slice answer(uint32_t tag, bool answered, const char *refused) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, tag);
  pb_put_bool(&e, 3, answered);
  if (refused) pb_put_bytes(&e, 4, tl_str(refused));
  return tl_done(&e);
}

static rk_slice write_req(const char *key, bool deleted, rk_slice meta) {
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 2, tl_str(key));
  pb_put_bytes(&e, 3, meta);
  if (!deleted) pb_put_bytes(&e, 6, tl_str("value"));
  pb_put_bool(&e, 8, deleted);
  return tl_done(&e);
}

static uint64_t live_keys(rk_slice state) { return tl_u64(state, 20); }

/* Goes on with a chain (empty rows for any load) until it asks for the facts. */
static out until_report(ringkv_node *n, uint64_t now, out cur) {
  for (int i = 0; i < 8 && !cur.load_report && cur.has_load; i++) cur = step(n, now, 4, (rk_slice){NULL, 0});
  return cur;
}

/* A fresh node's start: a full report after one count, then quiet. */
static ringkv_node *started(uint32_t id, uint64_t now) {
  ringkv_node *n = reporting_node(id, (rk_slice){NULL, 0});
  out s = step(n, now, 8, (rk_slice){NULL, 0});
  assert_int_equal(s.rc, RINGKV_OK);
  assert_true(s.load_report && s.load_count);
  out r = report_step(n, now, s, 0);
  assert_true(tl_u64(r.report, 11) != 0);   /* full */
  assert_int_equal(tl_u64(r.report, 3), 1); /* number */
  out a = step(n, now, 5, answer(r.report_tag, true, NULL));
  assert_int_equal(a.rc, RINGKV_OK);
  assert_int_equal(a.reports, 0);
  assert_false(a.has_load);
  return n;
}

static void test_start_reports_once_then_idle(void **state) {
  (void)state;
  ringkv_node *n = started(0, NOW);
  /* A start again (the executor re-arms) changes nothing: nothing to report. */
  out s = step(n, NOW + 10, 8, (rk_slice){NULL, 0});
  assert_false(s.has_load);
  assert_int_equal(s.reports, 0);
  ringkv_node_destroy(n);
  tl_reset();
}

static void test_first_change_at_once_then_rate_limited(void **state) {
  (void)state;
  ringkv_node *n = started(1, NOW);
  out w = step(n, NOW + 5, 6, write_req("a", false, (rk_slice){NULL, 0}));
  assert_int_equal(w.rc, RINGKV_OK);
  /* The write's answer waits for the report's step. */
  assert_true(w.load_report);
  assert_false(w.load_count);
  assert_int_equal(w.reply.len, 0);
  out r = report_step(n, NOW + 5, w, 0);
  assert_true(r.reply.len > 0);
  assert_true(tl_u64(r.report, 5) > 0);   /* unacked: no peer has it */
  assert_int_equal(tl_u64(r.report, 6), 1);
  assert_int_equal(tl_u64(r.report, 11), 0);
  assert_true(tl_bytes_field(r.report, 10).len > 0);   /* the changed shard */
  assert_int_equal(step(n, NOW + 6, 5, answer(r.report_tag, true, NULL)).rc, RINGKV_OK);
  /* The last report showed unacknowledged changes: the next waits max(1000, 8 x 5) ms. */
  rk_slice meta = tl_bytes_field(r.reply, 2);
  out w2 = step(n, NOW + 10, 6, write_req("a", true, meta));
  assert_int_equal(w2.rc, RINGKV_OK);
  assert_false(w2.has_load);
  assert_true(w2.reply.len > 0);
  assert_int_equal(w2.reports, 0);
  assert_true(w2.alarm > 0 && w2.alarm <= NOW + 5 + INTERVAL);
  /* At that alarm the report follows the round (none has run yet). */
  out al = until_report(n, NOW + 5 + INTERVAL, step(n, NOW + 5 + INTERVAL, 3, (rk_slice){NULL, 0}));
  out r2 = report_step(n, NOW + 5 + INTERVAL, al, 0);
  assert_int_equal(tl_u64(r2.report, 6), 0);   /* deleted: no live key */
  assert_int_equal(tl_u64(r2.report, 3), 3);
  ringkv_node_destroy(n);
  tl_reset();
}

static void test_lost_and_refused_reports(void **state) {
  (void)state;
  ringkv_node *n = started(2, NOW);
  out w = step(n, NOW + 5, 6, write_req("b", false, (rk_slice){NULL, 0}));
  out r = report_step(n, NOW + 5, w, 0);
  /* Lost: sent again after one interval (back-off), not at once. */
  out l = step(n, NOW + 6, 5, answer(r.report_tag, false, NULL));
  assert_int_equal(l.rc, RINGKV_OK);
  assert_false(l.has_load);
  assert_true(l.alarm > 0 && l.alarm <= NOW + 6 + INTERVAL);
  /* The round (if due) loads first; the report follows once the chain is done. */
  out cur = until_report(n, NOW + 6 + INTERVAL, step(n, NOW + 6 + INTERVAL, 3, (rk_slice){NULL, 0}));
  out r2 = report_step(n, NOW + 6 + INTERVAL, cur, 0);
  assert_int_equal(tl_u64(r2.report, 11), 0);
  assert_true(tl_bytes_field(r2.report, 10).len > 0);   /* the lost report's shard again */
  /* Refused: the next one is full. */
  step(n, NOW + 7 + INTERVAL, 5, answer(r2.report_tag, false, "refused"));
  cur = until_report(n, NOW + 10 * INTERVAL, step(n, NOW + 10 * INTERVAL, 3, (rk_slice){NULL, 0}));
  out r3 = report_step(n, NOW + 10 * INTERVAL, cur, 0);
  assert_true(tl_u64(r3.report, 11) != 0);
  ringkv_node_destroy(n);
  tl_reset();
}

static void test_live_count_and_restarts(void **state) {
  (void)state;
  ringkv_node *n = started(3, NOW);
  uint64_t now = NOW;
  rk_slice meta_a = {NULL, 0}, last_state = {NULL, 0};
  const char *ops[][2] = {{"a", "put"}, {"b", "put"}, {"a", "del"}, {"c", "put"}, {"a", "put"}, {"b", "put"}};
  uint64_t want[] = {1, 2, 1, 2, 3, 3};
  rk_slice metas[3] = {{NULL, 0}, {NULL, 0}, {NULL, 0}};
  for (size_t i = 0; i < 6; i++) {
    now += 3 * INTERVAL;
    int k = ops[i][0][0] - 'a';
    out w = step(n, now, 6, write_req(ops[i][0], ops[i][1][0] == 'd', metas[k]));
    assert_int_equal(w.rc, RINGKV_OK);
    out last = w;
    if (w.load_report) {
      last = report_step(n, now, w, 0);
      assert_int_equal(tl_u64(last.report, 6), want[i]);
      step(n, now, 5, answer(last.report_tag, true, NULL));
    }
    if (w.state.len) last_state = w.state;
    metas[k] = tl_bytes_field(last.reply, 2);
    assert_int_equal(live_keys(last_state), want[i]);
  }
  (void)meta_a;
  ringkv_node_destroy(n);
  /* A restart with changes unacknowledged: a full report at start, no count needed. */
  ringkv_node *m = reporting_node(3, last_state);
  out s = step(m, now + 10, 8, (rk_slice){NULL, 0});
  assert_true(s.load_report);
  assert_false(s.load_count);
  out r = report_step(m, now + 10, s, 0);
  assert_true(tl_u64(r.report, 11) != 0);
  assert_int_equal(tl_u64(r.report, 6), 3);
  out a = step(m, now + 11, 5, answer(r.report_tag, true, NULL));
  rk_slice done_state = a.state.len ? a.state : last_state;
  assert_int_equal(tl_u64(done_state, 21), 1);   /* RK_REPORT_DONE */
  ringkv_node_destroy(m);
  /* A restart with everything acknowledged: nothing to send. */
  ringkv_node *q = reporting_node(3, done_state);
  out s2 = step(q, now + 20, 8, (rk_slice){NULL, 0});
  assert_false(s2.has_load);
  assert_int_equal(s2.reports, 0);
  ringkv_node_destroy(q);
  /* The same, acknowledged by a report of an earlier release (its version not this
   * build's): one report at start, so RingControl learns this release's version. */
  assert_int_equal(tl_u64(done_state, 23), RINGKV_PROTOCOL_VERSION);
  pb_enc older = tl_enc();
  pb_put_raw(&older, done_state.ptr, done_state.len);
  pb_put_uint(&older, 23, RINGKV_PROTOCOL_VERSION - 1);   /* a later field replaces it */
  ringkv_node *u = reporting_node(3, tl_done(&older));
  out s4 = step(u, now + 20, 8, (rk_slice){NULL, 0});
  assert_true(s4.load_report);
  ringkv_node_destroy(u);
  /* A node of an earlier build (StepState without the count): counted once. */
  pb_enc e = tl_enc();
  pb_put_uint(&e, 3, 9);
  pb_put_uint(&e, 4, 9);
  ringkv_node *old = reporting_node(4, tl_done(&e));
  out s3 = step(old, now, 8, (rk_slice){NULL, 0});
  assert_true(s3.load_count);
  out r3 = report_step(old, now, s3, 42);
  assert_int_equal(tl_u64(r3.report, 6), 42);
  ringkv_node_destroy(old);
  tl_reset();
}

/* ------------------------------------------------------------------------------------- */
/* RingControl */

static ringkv_node *control(void) {
  pb_enc e = tl_enc();
  tl_put_config(&e, 1, cfg());
  pb_put_bool(&e, 7, true);   /* placement only */
  ringkv_node *n = ringkv_node_create();
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_INIT, tl_done(&e), &reply), RINGKV_OK);
  return n;
}

static rk_slice node_report(uint32_t version, uint32_t from, uint64_t number, uint64_t unacked, uint32_t shard, uint64_t digest) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, version);
  pb_put_uint(&e, 2, from);
  pb_put_uint(&e, 3, number);
  pb_put_uint(&e, 5, unacked);
  size_t m = pb_begin(&e, 10);
  pb_put_uint(&e, 1, shard);
  pb_put_fixed64(&e, 2, digest);
  pb_end(&e, m);
  return tl_done(&e);
}

static int take(ringkv_node *c, rk_slice report, rk_slice loaded, rk_slice *reply) {
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, report);
  if (loaded.ptr != NULL || loaded.len == SIZE_MAX) pb_put_bytes_always(&e, 2, loaded.len == SIZE_MAX ? (rk_slice){NULL, 0} : loaded);
  return tl_call(c, RINGKV_OP_REPORT, tl_done(&e), reply);
}

static void test_control_refuses_bad_reports(void **state) {
  (void)state;
  ringkv_node *c = control();
  rk_slice rep;
  assert_int_equal(take(c, node_report(1, 0, 1, 0, 0, 1), (rk_slice){NULL, 0}, &rep), RINGKV_E_PROTOCOL);
  assert_int_equal(take(c, node_report(99, 0, 1, 0, 0, 1), (rk_slice){NULL, 0}, &rep), RINGKV_E_PROTOCOL);
  assert_int_equal(take(c, node_report(2, 8, 1, 0, 0, 1), (rk_slice){NULL, 0}, &rep), RINGKV_E_VALUE);
  assert_int_equal(take(c, node_report(2, 0, 0, 0, 0, 1), (rk_slice){NULL, 0}, &rep), RINGKV_E_VALUE);
  assert_int_equal(take(c, node_report(2, 0, 1, 0, 64, 1), (rk_slice){NULL, 0}, &rep), RINGKV_E_DECODE);
  /* Shards out of order. */
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, 2);
  pb_put_uint(&e, 3, 1);
  for (uint32_t sh = 5; sh >= 4; sh--) {
    size_t m = pb_begin(&e, 10);
    pb_put_uint(&e, 1, sh);
    pb_end(&e, m);
  }
  assert_int_equal(take(c, tl_done(&e), (rk_slice){NULL, 0}, &rep), RINGKV_E_DECODE);
  uint8_t junk[] = {0xff, 0xff, 0xff};
  assert_int_equal(take(c, (rk_slice){junk, sizeof junk}, (rk_slice){NULL, 0}, &rep), RINGKV_E_DECODE);
  /* An older number than the stored one is stale. */
  pb_enc l = tl_enc();
  pb_put_bool(&l, 1, true);
  pb_put_uint(&l, 2, 5);
  assert_int_equal(take(c, node_report(2, 0, 5, 0, 0, 1), tl_done(&l), &rep), RINGKV_OK);
  assert_true(tl_u64(rep, 2) != 0);
  ringkv_node_destroy(c);
  tl_reset();
}

/* Shard 0's replicas report digests one by one: it disagrees until all are equal. */
static void test_control_counts_disagreement(void **state) {
  (void)state;
  ringkv_node *c = control();
  rk_slice rep;
  pb_enc pe = tl_enc();
  uint32_t zero = 0;
  pb_put_packed_u32(&pe, 2, &zero, 1);
  rk_slice place;
  assert_int_equal(tl_call(c, RINGKV_OP_PLACE, tl_done(&pe), &place), RINGKV_OK);
  uint32_t reps[3];
  assert_int_equal(tl_repeated_u32(tl_bytes_field(place, 1), 2, reps, 3), 3);
  /* Stored rows so far, as RingControl's table would hold them. */
  uint64_t held[3] = {0, 0, 0};
  uint64_t differing = 0;
  for (int i = 0; i < 3; i++) {
    pb_enc l = tl_enc();
    for (int j = 0; j < 3; j++) {
      if (held[j] == 0) continue;
      size_t m = pb_begin(&l, 3);
      pb_put_uint(&l, 1, 0);
      pb_put_uint(&l, 2, reps[j]);
      pb_put_fixed64(&l, 3, held[j]);
      pb_end(&l, m);
    }
    pb_put_uint(&l, 4, differing);
    rk_slice loaded = tl_done(&l);
    if (loaded.len == 0) loaded.len = SIZE_MAX;   /* an empty Loaded, still given */
    assert_int_equal(take(c, node_report(2, reps[i], 1, 0, 0, 77), loaded, &rep), RINGKV_OK);
    differing = tl_u64(rep, 7);
    held[i] = 77;
    assert_int_equal(differing, i < 2 ? 1 : 0);
  }
  /* /v1/cluster: converged only when every node reported and nothing is unacknowledged. */
  pb_enc q = tl_enc();
  for (uint32_t id = 0; id < 8; id++) {
    size_t m = pb_begin(&q, 1);
    pb_put_uint(&q, 1, id);
    pb_put_bytes(&q, 2, node_report(2, id, 1, id == 7 ? 3 : 0, 0, 0));
    pb_end(&q, m);
  }
  rk_slice cl;
  assert_int_equal(tl_call(c, RINGKV_OP_CLUSTER, tl_done(&q), &cl), RINGKV_OK);
  assert_int_equal(tl_u64(cl, 2), 0);   /* node 7 has unacknowledged changes */
  pb_enc q2 = tl_enc();
  for (uint32_t id = 0; id < 7; id++) {
    size_t m = pb_begin(&q2, 1);
    pb_put_uint(&q2, 1, id);
    pb_put_bytes(&q2, 2, node_report(2, id, 1, 0, 0, 0));
    pb_end(&q2, m);
  }
  assert_int_equal(tl_call(c, RINGKV_OP_CLUSTER, tl_done(&q2), &cl), RINGKV_OK);
  assert_int_equal(tl_u64(cl, 2), 0);   /* node 7 never reported */
  uint32_t wake[8];
  assert_int_equal(tl_repeated_u32(cl, 3, wake, 8), 1);
  assert_int_equal(wake[0], 7);
  pb_enc q3 = tl_enc();
  for (uint32_t id = 0; id < 8; id++) {
    size_t m = pb_begin(&q3, 1);
    pb_put_uint(&q3, 1, id);
    pb_put_bytes(&q3, 2, node_report(2, id, 1, 0, 0, 0));
    pb_end(&q3, m);
  }
  assert_int_equal(tl_call(c, RINGKV_OP_CLUSTER, tl_done(&q3), &cl), RINGKV_OK);
  assert_int_equal(tl_u64(cl, 2), 1);
  ringkv_node_destroy(c);
  tl_reset();
}

/* A new ring counts the disagreeing shards again from every stored digest row (the stored
 * count was kept on the old ring's replica sets): rows of node ids outside the ring (a
 * shrink's leavers, which never report again) are not judged; a shard whose replicas hold
 * different digests counts once, whatever its stored rows repeat. */
static void test_control_recounts_on_a_new_ring(void **state) {
  (void)state;
  ringkv_node *c = control();   /* 8 nodes, R=3 */
  uint32_t reps[2][3];
  for (uint32_t sh = 0; sh < 2; sh++) {
    pb_enc pe = tl_enc();
    pb_put_packed_u32(&pe, 2, &sh, 1);
    rk_slice place;
    assert_int_equal(tl_call(c, RINGKV_OP_PLACE, tl_done(&pe), &place), RINGKV_OK);
    assert_int_equal(tl_repeated_u32(tl_bytes_field(place, 1), 2, reps[sh], 3), 3);
  }
  for (int mode = 0; mode < 3; mode++) {   /* 0 all equal, 1 shard 1 differs, 2 repeats */
    pb_enc q = tl_enc();
    for (uint32_t sh = 0; sh < 2; sh++) {
      for (uint32_t j = 0; j < 3; j++) {
        for (int k = 0; k < (mode == 2 ? 2 : 1); k++) {
          size_t m = pb_begin(&q, 6);
          pb_put_uint(&q, 1, sh);
          pb_put_uint(&q, 2, reps[sh][j]);
          pb_put_fixed64(&q, 3, mode >= 1 && sh == 1 && j == 2 ? 9 : 5);
          pb_end(&q, m);
        }
      }
    }
    /* A stale row of an id outside the ring, differing from everything. */
    size_t m = pb_begin(&q, 6);
    pb_put_uint(&q, 1, 0);
    pb_put_uint(&q, 2, 12);
    pb_put_fixed64(&q, 3, 1234);
    pb_end(&q, m);
    pb_put_uint(&q, 2, 40);   /* the stored count, from another ring: not taken */
    pb_put_bool(&q, 7, true);
    rk_slice cl;
    assert_int_equal(tl_call(c, RINGKV_OP_CLUSTER, tl_done(&q), &cl), RINGKV_OK);
    assert_int_equal(tl_u64(cl, 5), mode == 0 ? 0 : 1);
  }
  ringkv_node_destroy(c);
  tl_reset();
}

/* A node whose clock ran a day ahead, then was corrected (a skew removed), goes on
 * reporting: its report times are clamped to the clock like the gossip ones (before, no
 * report went for a day while the instance lived). */
#define DAY UINT64_C(86400000)
static void test_clock_back_keeps_reporting(void **state) {
  (void)state;
  ringkv_node *n = started(1, NOW + DAY);
  out w = step(n, NOW + DAY + 5, 6, write_req("a", false, (rk_slice){NULL, 0}));
  out r = report_step(n, NOW + DAY + 5, w, 0);
  assert_true(tl_u64(r.report, 5) > 0);   /* unacked: not quiet */
  assert_int_equal(step(n, NOW + DAY + 6, 5, answer(r.report_tag, true, NULL)).rc, RINGKV_OK);
  /* Clock corrected. An hour of writes and alarms: reports are asked for. */
  rk_slice meta = tl_bytes_field(r.reply, 2);
  size_t asked = 0;
  uint64_t alarm = 0;
  for (uint64_t t = NOW + 10; t < NOW + 3600000; t += 60000) {
    out w2 = step(n, t, 6, write_req("a", false, meta));
    assert_int_equal(w2.rc, RINGKV_OK);
    out cur = w2;
    for (int i = 0; i < 8 && cur.has_load && !cur.load_report; i++) cur = step(n, t, 4, (rk_slice){NULL, 0});
    if (cur.load_report) asked++;
    out al = step(n, t + 1, 3, (rk_slice){NULL, 0});
    for (int i = 0; i < 8 && al.has_load && !al.load_report; i++) al = step(n, t + 1, 4, (rk_slice){NULL, 0});
    if (al.load_report) asked++;
    if (w2.reply.len) meta = tl_bytes_field(w2.reply, 2);
    alarm = al.alarm;
  }
  assert_true(asked >= 30);   /* about one per minute's write (118 with no skew at all) */
  (void)alarm;
  ringkv_node_destroy(n);
  tl_reset();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_start_reports_once_then_idle),
      cmocka_unit_test(test_first_change_at_once_then_rate_limited),
      cmocka_unit_test(test_lost_and_refused_reports),
      cmocka_unit_test(test_live_count_and_restarts),
      cmocka_unit_test(test_control_refuses_bad_reports),
      cmocka_unit_test(test_control_counts_disagreement),
      cmocka_unit_test(test_control_recounts_on_a_new_ring),
      cmocka_unit_test(test_clock_back_keeps_reporting),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  tl_free();
  return failed;
}
