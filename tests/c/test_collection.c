/* test_collection: tombstone collection as the SPEC states it. An agreement is noted the
 * first time every other replica holds the exact state (or a marker covering it), and the
 * key is collected only once the grace has passed since then; no row never agrees; a
 * collected row becomes a marker holding the key's context, which drops any entry it
 * covers (a late copy of a collected version), merges with anything else, exists on the
 * wire from version 4 only, and is deleted after 10 x the grace; a release-1 zero digest is
 * given back. Three nodes, three replicas: every node replicates every key. */
#include "testlib.h"
#include "register.h"

#define NOW_MS UINT64_C(1700000000000)
#define GRACE_MS UINT64_C(3600000)

static rk_slice copy(rk_slice s) { return tl_dup(s); }
static void drop(rk_slice s) { free((void *)s.ptr); }

static ringkv_node *node3(uint32_t self) {
  tl_config c = tl_default_config();
  c.cluster_size = 3;
  c.replicas = 3;
  c.tombstone_grace_ms = GRACE_MS;
  return tl_node(c, self);
}

static rk_ctx ctx_of(const rk_dot *dots, size_t n) {
  rk_ctx c = {NULL, 0, NULL, 0};
  for (size_t i = 0; i < n; i++) {
    rk_ctx next;
    assert_int_equal(rk_ctx_add(tl_arena(), &c, dots[i], &next), RINGKV_OK);
    c = next;
  }
  return c;
}

/* A register of one sibling `d` (a tombstone, or live with value "v") and context `ctx`
 * (which must cover d); with_values as stored (false) or on the wire (true). */
static rk_slice reg_bytes(rk_dot d, bool deleted, const rk_dot *ctx, size_t n, bool with_values) {
  rk_sib s;
  memset(&s, 0, sizeof s);
  s.dot = d;
  s.hlc = (NOW_MS - 1000) << 16;
  s.deleted = deleted;
  if (!deleted) s.value = tl_str("v");
  s.value_hash = ringkv_hash(s.value.ptr, s.value.len);
  rk_reg r = {&s, 1, ctx_of(ctx, n)};
  pb_enc e = tl_enc();
  rk_reg_encode(&e, &r, with_values);
  return copy(tl_done(&e));
}

static rk_slice marker_bytes(const rk_dot *ctx, size_t n) {
  rk_reg r = {NULL, 0, ctx_of(ctx, n)};
  pb_enc e = tl_enc();
  rk_reg_encode(&e, &r, false);
  return copy(tl_done(&e));
}

static uint64_t digest_of(const char *key, rk_slice meta) {
  rk_reg r;
  assert_int_equal(rk_reg_decode(tl_arena(), meta, &r), RINGKV_OK);
  return rk_reg_digest(tl_arena(), tl_str(key), &r);
}

static void local_write(pb_enc *e, uint32_t field, const char *key, rk_slice meta, uint64_t since, uint64_t epoch,
                        bool expired) {
  size_t m = pb_begin(e, field);
  pb_put_bytes(e, 1, tl_str(key));
  pb_put_bytes(e, 2, meta);
  pb_put_bool(e, 4, expired);
  pb_put_uint(e, 8, since);
  pb_put_uint(e, 9, epoch);
  pb_end(e, m);
}

/* A GcReply in `version` from `from` for `key`: its digest, and whether it holds a marker
 * covering the state whose digest was `asked`. */
static rk_slice gc_reply_v(uint32_t version, uint32_t from, const char *key, uint64_t digest, bool covered,
                           uint64_t asked) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, version);
  pb_put_uint(&e, 2, from);
  size_t m = pb_begin(&e, 3);
  pb_put_bytes(&e, 1, tl_str(key));
  pb_put_fixed64(&e, 2, digest);
  pb_put_bool(&e, 4, covered);
  pb_put_fixed64(&e, 5, asked);
  pb_end(&e, m);
  pb_put_uint(&e, 15, version);
  return copy(tl_done(&e));
}

static rk_slice gc_reply(uint32_t from, const char *key, uint64_t digest, bool covered, uint64_t asked) {
  return gc_reply_v(RINGKV_PROTOCOL_VERSION, from, key, digest, covered, asked);
}

typedef struct {
  size_t collected, marks;
  uint64_t mark_since, due;
  uint32_t undecided;
  rk_slice marker_meta;   /* the first collected row's meta, copied */
  uint64_t marker_since;
} decided;

static decided decide_epoch(ringkv_node *n, uint64_t now, const char *key, rk_slice meta, uint64_t since,
                            uint64_t since_epoch, const rk_slice *replies, size_t nr) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, now);
  local_write(&e, 2, key, meta, since, since_epoch, false);
  for (size_t i = 0; i < nr; i++) pb_put_bytes(&e, 3, replies[i]);
  pb_put_uint(&e, 4, 1);
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_GC_DECIDE, tl_done(&e), &reply), RINGKV_OK);
  decided d;
  memset(&d, 0, sizeof d);
  pb_rd it = pb_reader(reply);
  rk_slice x;
  while (tl_next_bytes(&it, 1, &x)) {
    if (d.collected++ == 0) {
      d.marker_meta = copy(tl_bytes_field(x, 3));
      d.marker_since = tl_u64(x, 11);
    }
  }
  it = pb_reader(reply);
  while (tl_next_bytes(&it, 2, &x)) {
    d.marks++;
    d.mark_since = tl_u64(x, 2);
  }
  d.due = tl_u64(reply, 3);
  d.undecided = (uint32_t)tl_u64(reply, 4);
  tl_reset();
  return d;
}

/* A decision where the row's noted agreement (if any) is of this epoch (1). */
static decided decide(ringkv_node *n, uint64_t now, const char *key, rk_slice meta, uint64_t since,
                      const rk_slice *replies, size_t nr) {
  return decide_epoch(n, now, key, meta, since, 1, replies, nr);
}

static void test_agreement_then_grace(void **state) {
  (void)state;
  ringkv_node *n = node3(0);
  const char *key = "gone";
  rk_dot ctx[2] = {{0, 1}, {1, 1}};
  rk_slice tomb = reg_bytes((rk_dot){0, 1}, true, ctx, 2, false);
  uint64_t raw = digest_of(key, tomb);
  rk_slice agree[2] = {gc_reply(1, key, raw, false, raw), gc_reply(2, key, raw, false, raw)};

  /* First agreement: noted now, collected no sooner than a grace later. */
  decided d = decide(n, NOW_MS, key, tomb, 0, agree, 2);
  assert_int_equal(d.collected, 0);
  assert_int_equal(d.marks, 1);
  assert_int_equal(d.mark_since, NOW_MS);
  assert_int_equal(d.due, NOW_MS + GRACE_MS);
  /* Still within the grace: nothing, and the due time stays the first agreement's. */
  d = decide(n, NOW_MS + GRACE_MS - 1, key, tomb, NOW_MS, agree, 2);
  assert_int_equal(d.collected + d.marks, 0);
  assert_int_equal(d.due, NOW_MS + GRACE_MS);
  /* The grace has passed and they still agree: the row becomes a marker with its context. */
  d = decide(n, NOW_MS + GRACE_MS, key, tomb, NOW_MS, agree, 2);
  assert_int_equal(d.collected, 1);
  assert_int_equal(d.marker_since, NOW_MS + GRACE_MS);
  rk_reg m;
  assert_int_equal(rk_reg_decode(tl_arena(), d.marker_meta, &m), RINGKV_OK);
  assert_true(rk_reg_is_marker(&m));
  assert_true(rk_ctx_covers(&m.ctx, ctx[0]) && rk_ctx_covers(&m.ctx, ctx[1]));
  drop(d.marker_meta);
  tl_reset();

  /* A replica with no row never agrees (it may have missed the write and the delete): the
   * noted agreement is voided. One that holds a covering marker agrees. */
  rk_slice none[2] = {gc_reply(1, key, raw, false, raw), gc_reply(2, key, 0, false, raw)};
  d = decide(n, NOW_MS + GRACE_MS, key, tomb, NOW_MS, none, 2);
  assert_int_equal(d.collected, 0);
  assert_int_equal(d.undecided, 1);
  assert_int_equal(d.marks, 1);
  assert_int_equal(d.mark_since, 0);
  rk_slice covered[2] = {gc_reply(1, key, raw, false, raw), gc_reply(2, key, 0, true, raw)};
  d = decide(n, NOW_MS + GRACE_MS, key, tomb, NOW_MS, covered, 2);
  assert_int_equal(d.collected, 1);
  drop(d.marker_meta);
  /* `covered` is about the state asked: a marker covering another (the row changed since
   * the query) is a replica holding another state. */
  rk_slice stale[2] = {gc_reply(1, key, raw, false, raw), gc_reply(2, key, 0, true, raw + 1)};
  d = decide(n, NOW_MS + GRACE_MS, key, tomb, NOW_MS, stale, 2);
  assert_int_equal(d.collected, 0);
  assert_int_equal(d.marks, 1);
  assert_int_equal(d.mark_since, 0);
  /* A replica that did not answer: undecided, nothing collected, the note kept. */
  d = decide(n, NOW_MS + GRACE_MS, key, tomb, NOW_MS, agree, 1);
  assert_int_equal(d.collected, 0);
  assert_int_equal(d.undecided, 1);
  assert_int_equal(d.marks, 0);
  /* A version-3 replica's 0 may be a marker it cannot name: undecided, the note kept; its
   * `covered` (a field it does not have) counts for nothing. */
  rk_slice old[2] = {gc_reply(1, key, raw, false, raw), gc_reply_v(3, 2, key, 0, true, raw)};
  d = decide(n, NOW_MS + GRACE_MS, key, tomb, NOW_MS, old, 2);
  assert_int_equal(d.collected + d.marks, 0);
  assert_int_equal(d.undecided, 1);
  /* An agreement noted under another epoch is void: noted again, not collected. */
  d = decide_epoch(n, NOW_MS + GRACE_MS, key, tomb, NOW_MS, 2, agree, 2);
  assert_int_equal(d.collected, 0);
  assert_int_equal(d.marks, 1);
  assert_int_equal(d.mark_since, NOW_MS + GRACE_MS);
  /* A live row is not collection's at all. */
  rk_slice live = reg_bytes((rk_dot){0, 1}, false, ctx, 2, false);
  d = decide(n, NOW_MS + GRACE_MS, key, live, NOW_MS, agree, 2);
  assert_int_equal(d.collected + d.marks + d.undecided, 0);
  for (int i = 0; i < 2; i++) drop(agree[i]), drop(none[i]), drop(covered[i]), drop(stale[i]), drop(old[i]);
  drop(tomb);
  drop(live);
  ringkv_node_destroy(n);
}

/* A GcQuery from node 1 about `key` with its state's context. */
static rk_slice gc_query(const char *key, uint64_t digest, const rk_dot *ctx, size_t n) {
  rk_ctx c = ctx_of(ctx, n);
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 1);
  size_t m = pb_begin(&e, 3);
  pb_put_bytes(&e, 1, tl_str(key));
  pb_put_fixed64(&e, 2, digest);
  size_t cm = pb_begin(&e, 3);
  rk_ctx_encode(&e, &c);
  pb_end(&e, cm);
  pb_end(&e, m);
  pb_put_uint(&e, 15, RINGKV_PROTOCOL_VERSION);
  return copy(tl_done(&e));
}

static bool answer_covered(ringkv_node *n, rk_slice query, const char *key, rk_slice meta) {
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, query);
  local_write(&e, 2, key, meta, 0, 0, false);
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_GC_ANSWER, tl_done(&e), &reply), RINGKV_OK);
  rk_slice kd = tl_bytes_field(tl_bytes_field(reply, 1), 3);
  bool covered = tl_u64(kd, 4) != 0;
  tl_reset();
  return covered;
}

static void test_marker_answers_covered(void **state) {
  (void)state;
  ringkv_node *n = node3(0);
  const char *key = "gone";
  rk_dot ctx[3] = {{0, 1}, {1, 1}, {1, 2}};
  rk_slice marker = marker_bytes(ctx, 3);
  rk_slice inside = gc_query(key, 5, ctx, 2);
  rk_slice beyond = gc_query(key, 5, (rk_dot[]){{0, 1}, {1, 3}}, 2);
  assert_true(answer_covered(n, inside, key, marker));
  assert_false(answer_covered(n, beyond, key, marker));
  /* A tombstone with an equal context is no marker: its digest answers, not `covered`. */
  rk_slice tomb = reg_bytes((rk_dot){1, 2}, true, ctx, 3, false);
  assert_false(answer_covered(n, inside, key, tomb));
  drop(marker);
  drop(inside);
  drop(beyond);
  drop(tomb);
  ringkv_node_destroy(n);
}

/* A push from node 1. */
static rk_slice push_of(uint32_t version, const char *key, rk_slice reg) { return tl_push_of(version, 1, key, reg); }

typedef struct {
  size_t applied;
  bool marker;        /* the first Applied's meta is a marker */
  uint64_t digest_new, gc_since;
  uint32_t malformed;
} merged;

/* OP_MERGE of `push` where `key` holds `meta` (a marker collected here at `since`). */
static merged merge_since(ringkv_node *n, uint64_t now, rk_slice push, const char *key, rk_slice meta, uint64_t since) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, now);
  pb_put_bytes(&e, 2, push);
  local_write(&e, 3, key, meta, since, 0, false);
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_MERGE, tl_done(&e), &reply), RINGKV_OK);
  merged out;
  memset(&out, 0, sizeof out);
  pb_rd it = pb_reader(reply);
  rk_slice x;
  while (tl_next_bytes(&it, 2, &x)) {
    if (out.applied++ > 0) continue;
    rk_reg r;
    assert_int_equal(rk_reg_decode(tl_arena(), tl_bytes_field(x, 3), &r), RINGKV_OK);
    out.marker = rk_reg_is_marker(&r);
    out.digest_new = tl_fixed64(x, 5);
    out.gc_since = tl_u64(x, 11);
  }
  out.malformed = tl_refused(reply, "malformed");
  tl_reset();
  return out;
}

static merged merge(ringkv_node *n, uint64_t now, rk_slice push, const char *key, rk_slice meta) {
  return merge_since(n, now, push, key, meta, 0);
}

static void test_marker_merges(void **state) {
  (void)state;
  ringkv_node *n = node3(0);
  const char *key = "gone";
  rk_dot ctx[2] = {{0, 1}, {1, 1}};
  rk_slice marker = marker_bytes(ctx, 2);
  /* A late copy of a collected live version: covered, dropped. */
  rk_slice old = reg_bytes((rk_dot){1, 1}, false, ctx, 2, true);
  rk_slice p = push_of(RINGKV_PROTOCOL_VERSION, key, old);
  merged m = merge(n, NOW_MS, p, key, marker);
  assert_int_equal(m.applied, 0);
  assert_int_equal(m.malformed, 0);
  drop(p);
  /* A version the marker never saw merges as usual: the key lives again, its context kept. */
  rk_dot later_ctx[3] = {{0, 1}, {1, 1}, {1, 2}};
  rk_slice later = reg_bytes((rk_dot){1, 2}, false, later_ctx, 3, true);
  p = push_of(RINGKV_PROTOCOL_VERSION, key, later);
  m = merge(n, NOW_MS, p, key, marker);
  assert_int_equal(m.applied, 1);
  assert_false(m.marker);
  assert_int_not_equal(m.digest_new, 0);
  drop(p);
  /* A marker arriving where the tombstone it covers is stored: the row becomes the marker
   * (digest 0), collected here now. */
  rk_slice tomb = reg_bytes((rk_dot){0, 1}, true, ctx, 2, false);
  rk_slice marker_wire = marker_bytes(later_ctx, 3);
  p = push_of(RINGKV_PROTOCOL_VERSION, key, marker_wire);
  m = merge(n, NOW_MS, p, key, tomb);
  assert_int_equal(m.applied, 1);
  assert_true(m.marker);
  assert_int_equal(m.digest_new, 0);
  assert_int_equal(m.gc_since, NOW_MS);
  drop(p);
  /* Into a marker it brings its context but not a later deadline: the row's time stays. */
  p = push_of(RINGKV_PROTOCOL_VERSION, key, marker_wire);
  m = merge_since(n, NOW_MS, p, key, marker, NOW_MS - 5000);
  assert_int_equal(m.applied, 1);
  assert_true(m.marker);
  assert_int_equal(m.gc_since, NOW_MS - 5000);
  /* Where no row is stored it makes none (a replica that deleted its marker keeps no copy
   * a repair brings back, so markers never outlive their deadline going round). */
  m = merge(n, NOW_MS, p, key, (rk_slice){NULL, 0});
  assert_int_equal(m.applied, 0);
  assert_int_equal(m.malformed, 0);
  drop(p);
  /* Before version 4 an entry without versions is malformed, marker or not. */
  p = push_of(3, key, marker_wire);
  m = merge(n, NOW_MS, p, key, tomb);
  assert_int_equal(m.applied, 0);
  assert_int_equal(m.malformed, 1);
  drop(p);
  drop(marker);
  drop(old);
  drop(later);
  drop(tomb);
  drop(marker_wire);
  ringkv_node_destroy(n);
}

/* OP_EXPIRE: how many rows it deletes and how many it rewrites. */
static void expire(ringkv_node *n, uint64_t now, const char *key, rk_slice meta, uint64_t since, bool expired,
                   size_t *deleted, size_t *rewritten, uint64_t *digest_new) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, now);
  local_write(&e, 2, key, meta, since, 0, expired);
  rk_slice reply;
  assert_int_equal(tl_call(n, RINGKV_OP_EXPIRE, tl_done(&e), &reply), RINGKV_OK);
  *deleted = *rewritten = 0;
  pb_rd it = pb_reader(reply);
  rk_slice x;
  while (tl_next_bytes(&it, 1, &x)) {
    if (tl_bytes_field(x, 3).len == 0) (*deleted)++;
    else (*rewritten)++;
    *digest_new = tl_fixed64(x, 5);
  }
  tl_reset();
}

static void test_marker_expiry(void **state) {
  (void)state;
  ringkv_node *n = node3(0);
  const char *key = "gone";
  rk_dot ctx[2] = {{0, 1}, {1, 1}};
  rk_slice marker = marker_bytes(ctx, 2);
  size_t deleted, rewritten;
  uint64_t digest = 0;
  uint64_t keep = RINGKV_MARKER_GRACES * GRACE_MS;
  expire(n, NOW_MS + keep - 1, key, marker, NOW_MS, false, &deleted, &rewritten, &digest);
  assert_int_equal(deleted + rewritten, 0);
  expire(n, NOW_MS + keep, key, marker, NOW_MS, false, &deleted, &rewritten, &digest);
  assert_int_equal(deleted, 1);
  /* A release-1 row whose tombstones counted 0 gets its digest back, whatever its age. */
  rk_slice tomb = reg_bytes((rk_dot){0, 1}, true, ctx, 2, false);
  expire(n, NOW_MS, key, tomb, 0, true, &deleted, &rewritten, &digest);
  assert_int_equal(rewritten, 1);
  assert_int_equal(digest, digest_of(key, tomb));
  expire(n, NOW_MS, key, tomb, 0, false, &deleted, &rewritten, &digest);
  assert_int_equal(deleted + rewritten, 0);
  drop(marker);
  drop(tomb);
  ringkv_node_destroy(n);
}

/* ------------------------------------------------------------------------------------- */
/* The step's schedule: a tombstone no pass can decide (both other replicas lost to it). */

static rk_slice step_event(uint64_t now, uint32_t field, rk_slice body) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, now);
  pb_put_uint(&e, 2, now * 7u);
  if (field == 3 || field == 8) pb_put_bool(&e, field, true);
  else pb_put_bytes_always(&e, field, body);
  return copy(tl_done(&e));
}

typedef struct {
  uint64_t alarm;
  bool loads, asks_collectable;
  uint32_t tags[16];
  size_t ntags;
} stepped;

static stepped run_step(ringkv_node *n, rk_slice req) {
  rk_slice rep;
  assert_int_equal(tl_call(n, RINGKV_OP_STEP, req, &rep), RINGKV_OK);
  drop(req);
  stepped o;
  memset(&o, 0, sizeof o);
  o.alarm = tl_u64(rep, 8);
  pb_rd r;
  if (tl_field(rep, 1, PB_LEN, &r)) {
    o.loads = true;
    o.asks_collectable = tl_u64(tl_bytes_field(rep, 1), 12) > 0;
  }
  pb_rd it = pb_reader(rep);
  rk_slice send;
  while (tl_next_bytes(&it, 6, &send)) {
    pb_rd ti = pb_reader(send);
    rk_slice t;
    while (tl_next_bytes(&ti, 3, &t) && o.ntags < 16) o.tags[o.ntags++] = (uint32_t)tl_u64(t, 2);
  }
  return o;
}

/* The `loaded` answering a load: the tombstone row, in the list the load asked. */
static rk_slice loaded_tomb(uint32_t field, rk_slice tomb) {
  pb_enc e = tl_enc();
  size_t m = pb_begin(&e, field);
  pb_put_bytes(&e, 1, tl_str("gone"));
  pb_put_bytes(&e, 2, tomb);
  pb_put_uint(&e, 10, 1);
  pb_end(&e, m);
  return tl_done(&e);
}

static void test_undecidable_backs_off(void **state) {
  (void)state;
  ringkv_node *n = node3(0);
  rk_dot ctx[1] = {{0, 1}};
  rk_slice tomb = reg_bytes((rk_dot){0, 1}, true, ctx, 1, false);
  stepped s = run_step(n, step_event(NOW_MS, 8, (rk_slice){NULL, 0}));
  uint64_t t = s.alarm, passes[32];
  size_t npass = 0, rounds = 0;
  const uint64_t until = NOW_MS + 2u * 3600u * 1000u;   /* two hours */
  uint64_t now = NOW_MS;
  while (t != 0 && t <= until && rounds < 10000) {
    rounds++;
    if (t < now) t = now;   /* an alarm in the past fires at once */
    now = t;
    s = run_step(n, step_event(t, 3, (rk_slice){NULL, 0}));
    uint64_t next = s.alarm;
    /* The executor answers each load at once, and every send is lost. */
    size_t pending_tags = 0;
    uint32_t tags[64];
    for (int hop = 0; hop < 8 && (s.loads || s.ntags > 0); hop++) {
      for (size_t i = 0; i < s.ntags && pending_tags < 64; i++) tags[pending_tags++] = s.tags[i];
      if (s.loads) {
        if (s.asks_collectable && npass < 32) passes[npass++] = t;
        rk_slice body = s.asks_collectable ? loaded_tomb(6, tomb) : loaded_tomb(1, tomb);
        s = run_step(n, step_event(t, 4, body));
        next = s.alarm;
        continue;
      }
      s.ntags = 0;
      while (pending_tags > 0 && !s.loads) {
        pb_enc e = tl_enc();
        pb_put_uint(&e, 1, tags[--pending_tags]);
        pb_put_bool(&e, 3, false);
        s = run_step(n, step_event(t, 5, tl_done(&e)));
        next = s.alarm;
        for (size_t i = 0; i < s.ntags && pending_tags < 64; i++) tags[pending_tags++] = s.tags[i];
        s.ntags = 0;
      }
    }
    assert_true(next == 0 || next > t);
    t = next;
    tl_reset();
  }
  /* Passes come further and further apart: each wait at least doubles (to an hour). */
  assert_true(npass >= 5);
  for (size_t i = 2; i < npass; i++) {
    uint64_t before = passes[i - 1] - passes[i - 2], gap = passes[i] - passes[i - 1];
    if (before < UINT64_C(3600000)) assert_true(gap + 1000u >= 2u * before);
  }
  /* Two hours hold about a dozen passes, not one a second (release 1: 7,200), and the node
   * wakes about once a minute (anti-entropy with peers that never answer backs off too). */
  assert_true(npass <= 16);
  assert_true(rounds <= 400);
  drop(tomb);
  ringkv_node_destroy(n);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_agreement_then_grace),
      cmocka_unit_test(test_marker_answers_covered),
      cmocka_unit_test(test_marker_merges),
      cmocka_unit_test(test_marker_expiry),
      cmocka_unit_test(test_undecidable_backs_off),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  tl_free();
  return rc;
}
