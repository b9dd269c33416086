/* test_lease: dot leases (wasm/src/lease.c, control.c) and the per-shard catch-up of a node
 * whose storage was lost (wasm/src/catchup.c), through OP_CONTROL and OP_STEP.
 *
 *  - RingControl grants blocks of 2^20 counters, each above every block that id held and
 *    above the counter asked; a fresh node of another incarnation is told its storage was
 *    lost, and told so again when it asks again (its answer lost), while a brand-new node
 *    asking again is not; an unknown node id, a
 *    counter too high, a malformed request are refused and change nothing.
 *  - A node with no state asks for a lease at start, answers client writes (E_LEASE) and
 *    reads (E_LEASE) only once it has one; its first dot is the block's start; the next block
 *    is asked for when less than half is left; a claim that takes the counter past the block
 *    stops writes until the next block.
 *  - Forged or stale lease answers (another node, a partial block, beyond the counter space,
 *    not beyond the current block, garbage) take nothing and are asked again after a back-off.
 *  - A node told its storage was lost refuses client writes and reads of its shards
 *    (E_CATCHING_UP) but merges pushes; it pulls each shard from every other replica in
 *    turn, a page at a time (the cursor moving only once a page is merged, and surviving a
 *    restart); a forged page (another source, another shard, `equal` with rows, a cursor
 *    outside the shard) is refused and changes nothing; with every replica pulled it serves.
 *  - A node that may hold less than it will answers no collection query before its lease
 *    answer (E_CATCHING_UP: the query waits), and while catching up leaves the keys of the
 *    shards still to catch up on out of its answers; once caught up it names them.
 *  - The admin fence: no client write from the fence on (persisted); no wipe while the
 *    peers have not acknowledged what it holds, at once forced or with nothing to drain,
 *    never before its dots are on record at RingControl (a node of an earlier build).
 *  - The responder answers `equal` when the digests agree, else asks for the page's rows in
 *    key order and answers them with the cursor; a request for a shard the two do not share
 *    is malformed.
 */
#include "testlib.h"
#include "catchup.h"
#include "cover.h"
#include "resize.h"
#include "node.h"

#define NOW UINT64_C(1700000000000)
#define BLOCK (UINT64_C(1) << 20)
enum { KIND_PUSH = 1, KIND_LEASE = 5, KIND_CATCHUP = 6 };

/* ------------------------------------------------------------------------------------- */
/* Nodes and steps */

static tl_config cfg(void) { return tl_default_config(); }   /* N=8, R=3, 64 shards */

/* A node with Config.leases, from a persisted StepState (empty: a node with no state). */
static ringkv_node *lease_node(uint32_t id, rk_slice state) {
  pb_enc c = tl_enc();
  tl_put_config(&c, 1, cfg());
  rk_slice cs = tl_done(&c);
  pb_rd r = pb_reader(cs);
  uint32_t f, wt;
  rk_slice inner = {NULL, 0};
  if (pb_next(&r, &f, &wt) == 1) pb_get_bytes(&r, wt, &inner);
  pb_enc e = tl_enc();
  size_t m = pb_begin(&e, 1);
  pb_put_raw(&e, inner.ptr, inner.len);
  pb_put_bool(&e, 30, true);
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

static rk_slice keep(rk_slice s) {
  if (s.len == 0) return s;
  uint8_t *p = rk_alloc(tl_arena(), s.len);
  assert_non_null(p);
  memcpy(p, s.ptr, s.len);
  rk_slice d = {p, s.len};
  return d;
}

typedef struct {
  uint32_t kind, peer, tag;
  rk_slice message;
} tsend;

typedef struct {
  int rc;
  bool has_load;
  rk_slice load, reply, state;
  uint64_t alarm;
  size_t nsends;
  tsend sends[128];
  uint64_t refused_malformed;
  bool has_put;
  uint64_t put_at, put_len;   /* the first row's first value: payload[at, at + len) */
  bool wipe;
} tout;

/* One StepRequest (its time and random bits, then `event`: a field already encoded). */
static tout run_step(ringkv_node *n, uint64_t now, rk_slice event) {
  tout o;
  memset(&o, 0, sizeof o);
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, now);
  pb_put_uint(&e, 2, 0x5eed5eed5eedULL);
  pb_put_raw(&e, event.ptr, event.len);
  rk_slice rep;
  o.rc = tl_call(n, RINGKV_OP_STEP, tl_done(&e), &rep);
  if (o.rc != RINGKV_OK) return o;
  pb_rd at;
  if (tl_field(rep, 1, PB_LEN, &at)) {
    o.has_load = true;
    o.load = keep(tl_bytes_field(rep, 1));
  }
  pb_rd it = pb_reader(rep);
  rk_slice s;
  while (tl_next_bytes(&it, 6, &s)) {
    pb_rd ti = pb_reader(s);
    rk_slice t;
    while (tl_next_bytes(&ti, 3, &t) && o.nsends < 128) {
      o.sends[o.nsends].kind = (uint32_t)tl_u64(s, 1);
      o.sends[o.nsends].peer = (uint32_t)tl_u64(t, 1);
      o.sends[o.nsends].tag = (uint32_t)tl_u64(t, 2);
      o.sends[o.nsends].message = keep(tl_bytes_field(s, 2));
      o.nsends++;
    }
  }
  it = pb_reader(rep);
  while (!o.has_put && tl_next_bytes(&it, 2, &s)) {
    rk_slice applied = tl_bytes_field(s, 1);
    pb_rd pi;
    if (!tl_field(applied, 6, PB_LEN, &pi)) continue;
    rk_slice put = tl_bytes_field(applied, 6);
    o.has_put = true;
    o.put_at = tl_u64(put, 3);
    o.put_len = tl_u64(put, 4);
  }
  it = pb_reader(rep);
  while (tl_next_bytes(&it, 9, &s)) {
    if (rk_slice_eq(tl_bytes_field(s, 1), tl_str("refused_malformed"))) o.refused_malformed += tl_u64(s, 2);
  }
  o.reply = keep(tl_bytes_field(rep, 7));
  o.state = keep(tl_bytes_field(rep, 5));
  o.alarm = tl_u64(rep, 8);
  o.wipe = tl_u64(rep, 10) != 0;
  return o;
}

static tout step(ringkv_node *n, uint64_t now, uint32_t field, rk_slice body) {
  pb_enc e = tl_enc();
  if (field == 3 || field == 8) pb_put_bool(&e, field, true);
  else pb_put_bytes_always(&e, field, body);
  return run_step(n, now, tl_done(&e));
}

/* The admin fence: 1 once drained, 2 forced. */
static tout fence_step(ringkv_node *n, uint64_t now, uint32_t mode) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 9, mode);
  return run_step(n, now, tl_done(&e));
}

static const tsend *find_send(const tout *o, uint32_t kind) {
  for (size_t i = 0; i < o->nsends; i++) {
    if (o->sends[i].kind == kind) return &o->sends[i];
  }
  return NULL;
}

static size_t count_sends(const tout *o, uint32_t kind) {
  size_t k = 0;
  for (size_t i = 0; i < o->nsends; i++) k += o->sends[i].kind == kind;
  return k;
}

static rk_slice answer_msg(uint32_t tag, bool answered, rk_slice message) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, tag);
  pb_put_bytes(&e, 2, message);
  pb_put_bool(&e, 3, answered);
  return tl_done(&e);
}

static rk_slice lease_reply(uint32_t node, uint64_t start, uint64_t end, bool lost) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, node);
  pb_put_uint(&e, 2, start);
  pb_put_uint(&e, 3, end);
  pb_put_bool(&e, 4, lost);
  return tl_done(&e);
}

static rk_slice write_req(const char *key) {
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 2, tl_str(key));
  pb_put_bytes(&e, 6, tl_str("value"));
  return tl_done(&e);
}

/* A client write: its code, and the new dot's counter. */
static int client_write(ringkv_node *n, uint64_t now, const char *key, uint64_t *counter) {
  tout o = step(n, now, 6, write_req(key));
  if (o.rc == RINGKV_OK && counter != NULL) *counter = tl_u64(tl_bytes_field(o.reply, 3), 2);
  return o.rc;
}

static int client_read(ringkv_node *n, const char *key) {
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, tl_str(key));
  rk_slice rep;
  return tl_call(n, RINGKV_OP_CLIENT_READ, tl_done(&e), &rep);
}

static uint32_t shard_of_key(const char *key) { return (uint32_t)(ringkv_hash((const uint8_t *)key, strlen(key)) % cfg().shards); }

static bool replicates(ringkv_node *n, uint32_t shard, uint32_t node) { return rk_is_replica(n, shard, node); }

/* A key of `shard` (written into buf). */
static const char *key_in(uint32_t shard, char *buf, size_t cap) {
  for (int i = 0;; i++) {
    snprintf(buf, cap, "key/%d", i);
    if (shard_of_key(buf) == shard) return buf;
  }
}

/* A key of a shard node `id` replicates (n is that node). */
static const char *key_of(ringkv_node *n, uint32_t id, char *buf, size_t cap) {
  for (int i = 0;; i++) {
    snprintf(buf, cap, "mine/%d", i);
    if (replicates(n, shard_of_key(buf), id)) return buf;
  }
}

/* A node with no state, started, holding the lease it asked for. */
static ringkv_node *leased_node(uint32_t id, uint64_t start, bool lost, tout *after) {
  rk_slice none = {NULL, 0};
  ringkv_node *n = lease_node(id, none);
  tout s = step(n, NOW, 8, none);
  assert_int_equal(s.rc, RINGKV_OK);
  const tsend *l = find_send(&s, KIND_LEASE);
  assert_non_null(l);
  tout a = step(n, NOW, 5, answer_msg(l->tag, true, lease_reply(id, start, start + BLOCK - 1u, lost)));
  assert_int_equal(a.rc, RINGKV_OK);
  if (after != NULL) *after = a;
  return n;
}

/* ------------------------------------------------------------------------------------- */
/* RingControl */

static rk_slice control_req(rk_slice state, rk_slice lease) {
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, state);
  pb_put_uint(&e, 2, 8);
  uint8_t random[48];
  memset(random, 7, sizeof random);
  rk_slice r = {random, sizeof random};
  pb_put_bytes(&e, 4, r);
  pb_put_bytes_always(&e, 6, lease);
  return tl_done(&e);
}

static rk_slice lease_req(uint32_t from, uint64_t above, bool fresh, uint64_t incarnation) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, from);
  pb_put_uint(&e, 3, above);
  pb_put_bool(&e, 4, fresh);
  pb_put_fixed64(&e, 5, incarnation);
  return tl_done(&e);
}

typedef struct {
  int rc;
  rk_slice state, lease;
} tgrant;

static tgrant grant(ringkv_node *ctl, rk_slice state, rk_slice req) {
  tgrant g;
  memset(&g, 0, sizeof g);
  rk_slice rep;
  g.rc = tl_call(ctl, RINGKV_OP_CONTROL, control_req(state, req), &rep);
  if (g.rc != RINGKV_OK) return g;
  g.state = keep(tl_bytes_field(rep, 1));
  g.lease = keep(tl_bytes_field(rep, 4));
  if (g.state.len == 0) g.state = state;
  return g;
}

static void test_control_grants_blocks(void **unused) {
  (void)unused;
  ringkv_node *ctl = ringkv_node_create();
  rk_slice none = {NULL, 0};
  /* First start, node 3 fresh: [1, 2^20], not lost. */
  tgrant g = grant(ctl, none, lease_req(3, 0, true, 11));
  assert_int_equal(g.rc, RINGKV_OK);
  assert_int_equal(tl_u64(g.lease, 1), 3);
  assert_int_equal(tl_u64(g.lease, 2), 1);
  assert_int_equal(tl_u64(g.lease, 3), BLOCK);
  assert_int_equal(tl_u64(g.lease, 4), 0);
  /* The next block follows; a counter named above it moves the block up. */
  g = grant(ctl, g.state, lease_req(3, 5, false, 11));
  assert_int_equal(tl_u64(g.lease, 2), BLOCK + 1u);
  g = grant(ctl, g.state, lease_req(3, 10u * BLOCK, false, 11));
  assert_int_equal(tl_u64(g.lease, 2), 10u * BLOCK + 1u);
  /* The same incarnation asking again as fresh (its answer was lost): not lost. */
  g = grant(ctl, g.state, lease_req(3, 0, true, 11));
  assert_int_equal(tl_u64(g.lease, 2), 11u * BLOCK + 1u);
  assert_int_equal(tl_u64(g.lease, 4), 0);
  /* Another incarnation with no state: its storage was lost; above every block before. */
  g = grant(ctl, g.state, lease_req(3, 0, true, 12));
  assert_int_equal(tl_u64(g.lease, 2), 12u * BLOCK + 1u);
  assert_int_equal(tl_u64(g.lease, 4), 1);
  /* That incarnation asking again (its answer lost) is told the same: lost. */
  g = grant(ctl, g.state, lease_req(3, 0, true, 12));
  assert_int_equal(tl_u64(g.lease, 2), 13u * BLOCK + 1u);
  assert_int_equal(tl_u64(g.lease, 4), 1);
  /* Other nodes have their own record. */
  tgrant h = grant(ctl, g.state, lease_req(0, 0, true, 5));
  assert_int_equal(tl_u64(h.lease, 2), 1);
  assert_int_equal(tl_u64(h.lease, 4), 0);
  g = grant(ctl, h.state, lease_req(3, 0, false, 12));
  assert_int_equal(tl_u64(g.lease, 2), 14u * BLOCK + 1u);
  assert_int_equal(tl_u64(g.lease, 4), 0);
  /* Refused, nothing granted: an id the cluster never had, a counter too high to lease
   * above, a malformed request, an unknown version. */
  assert_int_equal(grant(ctl, g.state, lease_req(8, 0, false, 1)).rc, RINGKV_E_VALUE);
  assert_int_equal(grant(ctl, g.state, lease_req(1, RINGKV_LEASE_ABOVE_MAX + 1u, false, 1)).rc, RINGKV_E_VALUE);
  uint8_t junk[] = {0x0a, 0xff, 0x01};
  rk_slice j = {junk, sizeof junk};
  assert_int_equal(grant(ctl, g.state, j).rc, RINGKV_E_DECODE);
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, 99);
  pb_put_uint(&e, 2, 1);
  assert_int_equal(grant(ctl, g.state, tl_done(&e)).rc, RINGKV_E_PROTOCOL);
  /* The refused requests left the record as it was. */
  tgrant k = grant(ctl, g.state, lease_req(3, 0, false, 12));
  assert_int_equal(tl_u64(k.lease, 2), 15u * BLOCK + 1u);
  ringkv_node_destroy(ctl);
  tl_reset();
}

/* Incoming{KIND_GC, GcQuery{version, from 0}} (no keys). */
static rk_slice gc_query(void) {
  pb_enc q = tl_enc();
  pb_put_uint(&q, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&q, 15, RINGKV_PROTOCOL_VERSION);
  pb_enc in = tl_enc();
  pb_put_uint(&in, 1, 3);
  pb_put_bytes_always(&in, 2, tl_done(&q));
  return tl_done(&in);
}

/* ------------------------------------------------------------------------------------- */
/* The node's lease */

static void test_fresh_node_waits_for_its_lease(void **unused) {
  (void)unused;
  rk_slice none = {NULL, 0};
  ringkv_node *n = lease_node(2, none);
  char kbuf[32];
  const char *key = key_of(n, 2, kbuf, sizeof kbuf);
  /* Before anything: no lease, and no read (its storage may have been lost). */
  assert_int_equal(client_write(n, NOW, key, NULL), RINGKV_E_LEASE);
  assert_int_equal(client_read(n, key), RINGKV_E_LEASE);
  /* Nor does it vouch for any state in collection's agreement. */
  assert_int_equal(step(n, NOW, 7, gc_query()).rc, RINGKV_E_CATCHING_UP);
  tout s = step(n, NOW, 8, none);
  assert_int_equal(s.rc, RINGKV_OK);
  const tsend *l = find_send(&s, KIND_LEASE);
  assert_non_null(l);
  assert_int_equal(l->peer, RINGKV_PEER_CONTROL);
  assert_int_equal(tl_u64(l->message, 2), 2);
  assert_int_equal(tl_u64(l->message, 4), 1);   /* fresh */
  uint64_t incarnation = tl_fixed64(l->message, 5);
  assert_true(incarnation != 0);
  /* The fresh flag and incarnation are persisted before any answer. */
  assert_int_equal(tl_u64(s.state, 31), 1);
  /* One request in flight: the next events send no other. */
  tout s2 = step(n, NOW + 10, 3, none);
  assert_null(find_send(&s2, KIND_LEASE));
  assert_int_equal(client_write(n, NOW, key, NULL), RINGKV_E_LEASE);
  /* Lost: asked again after a back-off, as fresh, with the same incarnation. */
  tout lost = step(n, NOW + 20, 5, answer_msg(l->tag, false, none));
  assert_null(find_send(&lost, KIND_LEASE));
  assert_true(lost.alarm > NOW + 20 && lost.alarm <= NOW + 20 + 10000);
  tout again = step(n, lost.alarm, 3, none);
  l = find_send(&again, KIND_LEASE);
  assert_non_null(l);
  assert_int_equal(tl_u64(l->message, 4), 1);
  assert_int_equal(tl_fixed64(l->message, 5), incarnation);
  uint64_t start = 7u * BLOCK + 1u;
  tout a = step(n, lost.alarm, 5, answer_msg(l->tag, true, lease_reply(2, start, start + BLOCK - 1u, false)));
  assert_int_equal(a.rc, RINGKV_OK);
  assert_int_equal(tl_u64(a.state, 30), start + BLOCK - 1u);
  assert_int_equal(tl_u64(a.state, 31), 0);
  assert_int_equal(tl_u64(a.state, 2), start - 1u);   /* the counter, persisted with it */
  /* Served now; the first dot is the block's start; no catch-up (not lost). */
  assert_int_equal(count_sends(&a, KIND_CATCHUP), 0);
  assert_int_equal(client_read(n, key), RINGKV_OK);
  assert_int_equal(step(n, lost.alarm, 7, gc_query()).rc, RINGKV_OK);
  uint64_t dot = 0;
  assert_int_equal(client_write(n, lost.alarm, key, &dot), RINGKV_OK);
  assert_int_equal(dot, start);
  assert_int_equal(client_write(n, lost.alarm, key, &dot), RINGKV_OK);
  assert_int_equal(dot, start + 1u);
  ringkv_node_destroy(n);
  tl_reset();
}

static void test_forged_lease_answers_take_nothing(void **unused) {
  (void)unused;
  rk_slice none = {NULL, 0};
  ringkv_node *n = lease_node(4, none);
  char kbuf[32];
  const char *key = key_of(n, 4, kbuf, sizeof kbuf);
  tout s = step(n, NOW, 8, none);
  uint64_t now = NOW;
  uint8_t junk[] = {0x08, 0x80};
  rk_slice forged[] = {
      lease_reply(5, 1, BLOCK, false),                                   /* another node */
      lease_reply(4, 1, 2u * BLOCK, false),                              /* not one block */
      lease_reply(4, RINGKV_COUNTER_MAX, RINGKV_COUNTER_MAX + BLOCK - 1u, false),   /* beyond */
      lease_reply(4, 0, BLOCK - 1u, false),                              /* starts at 0 */
      {junk, sizeof junk},                                               /* garbage */
  };
  const tsend *first = find_send(&s, KIND_LEASE);
  assert_non_null(first);
  tsend l = *first;
  for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
    tout a = step(n, now, 5, answer_msg(l.tag, true, forged[i]));
    assert_int_equal(a.rc, RINGKV_OK);
    assert_int_equal(a.refused_malformed, 1);
    assert_int_equal(tl_u64(a.state, 30), 0);   /* no lease taken */
    assert_int_equal(client_write(n, now, key, NULL), RINGKV_E_LEASE);
    assert_int_equal(client_read(n, key), RINGKV_E_LEASE);
    /* Asked again, after a back-off (not at once). */
    tout soon = step(n, now + 1, 3, none);
    assert_null(find_send(&soon, KIND_LEASE));
    now += 11000;
    tout r = step(n, now, 3, none);
    const tsend *again = find_send(&r, KIND_LEASE);
    assert_non_null(again);
    l = *again;
  }
  /* A real block is taken; a stale answer (not beyond it) afterwards takes nothing. */
  tout ok = step(n, now, 5, answer_msg(l.tag, true, lease_reply(4, 1, BLOCK, false)));
  assert_int_equal(tl_u64(ok.state, 30), BLOCK);
  assert_int_equal(client_write(n, now, key, NULL), RINGKV_OK);
  ringkv_node_destroy(n);
  tl_reset();
}

/* A Push from node `from` of one key with a version of `from` at `counter` (a claim on this
 * node's dots when `from` is the receiver's id in the dot). */
static rk_slice push_at(ringkv_node *maker, const char *key, uint32_t to, uint64_t now) {
  pb_enc w = tl_enc();
  pb_put_uint(&w, 1, now);
  pb_put_bytes(&w, 2, tl_str(key));
  pb_put_bytes(&w, 6, tl_str("pushed"));
  rk_slice wrep;
  assert_int_equal(tl_call(maker, RINGKV_OP_WRITE, tl_done(&w), &wrep), RINGKV_OK);
  rk_slice meta = keep(tl_bytes_field(wrep, 2));
  rk_slice dot = keep(tl_bytes_field(wrep, 3));
  pb_enc r = tl_enc();
  pb_put_uint(&r, 1, to);
  size_t m = pb_begin(&r, 3);
  pb_put_bytes(&r, 1, tl_str(key));
  pb_put_bytes(&r, 2, meta);
  size_t v = pb_begin(&r, 3);
  pb_put_bytes(&r, 1, dot);
  pb_put_bytes(&r, 2, tl_str("pushed"));
  pb_end(&r, v);
  pb_end(&r, m);
  rk_slice rep;
  assert_int_equal(tl_call(maker, RINGKV_OP_PAGE_PUSH, tl_done(&r), &rep), RINGKV_OK);
  return keep(tl_bytes_field(rep, 1));
}

static rk_slice push_of(ringkv_node *maker, const char *key, uint32_t to) { return push_at(maker, key, to, NOW); }

/* The Loaded for a load that asks for keys: every asked key absent. */
static rk_slice absent_rows(rk_slice load) {
  pb_enc l = tl_enc();
  pb_rd it = pb_reader(load);
  rk_slice k;
  while (tl_next_bytes(&it, 1, &k)) {
    size_t m = pb_begin(&l, 1);
    pb_put_bytes(&l, 1, k);
    pb_end(&l, m);
  }
  return tl_done(&l);
}

/* Merges an incoming push at `n` (its rows absent) as an executor would. */
static tout merge_push(ringkv_node *n, uint64_t now, rk_slice push, uint32_t kind_field, uint32_t tag) {
  tout o;
  if (kind_field == 7) {
    pb_enc in = tl_enc();
    pb_put_uint(&in, 1, KIND_PUSH);
    pb_put_bytes(&in, 2, push);
    o = step(n, now, 7, tl_done(&in));
  } else {
    o = step(n, now, 5, answer_msg(tag, true, push));
  }
  assert_int_equal(o.rc, RINGKV_OK);
  while (o.has_load) {
    o = step(n, now, 4, absent_rows(o.load));
    assert_int_equal(o.rc, RINGKV_OK);
    /* A merged value lies in the event's payload (for a catch-up page: inside the reply). */
    if (o.has_put) {
      assert_true(o.put_at + o.put_len <= push.len);
      assert_memory_equal(push.ptr + o.put_at, "pushed", 6);
      assert_int_equal(o.put_len, 6);
    }
  }
  return o;
}

static void test_next_block_ahead_of_need(void **unused) {
  (void)unused;
  tout a;
  ringkv_node *n = leased_node(1, 1, false, &a);
  assert_null(find_send(&a, KIND_LEASE));   /* a whole block: nothing asked */
  char kbuf[32];
  const char *key = key_of(n, 1, kbuf, sizeof kbuf);
  /* A peer's entry claims a dot of this node past half the block (an honest token's raise):
   * the counter follows, and the next block is asked for at once, above it. */
  ringkv_node *claimer = tl_node(cfg(), 1);
  claimer->counter = BLOCK / 2u + 10u;
  rk_slice made = push_of(claimer, key, 0);
  ringkv_node_destroy(claimer);
  /* The same entry as node 0's push. */
  pb_enc pe = tl_enc();
  pb_put_uint(&pe, 2, 0);
  pb_rd it = pb_reader(made);
  uint32_t f, wt;
  while (pb_next(&it, &f, &wt) == 1) {
    const uint8_t *at = it.p;
    assert_true(pb_skip(&it, wt));
    if (f == 2) continue;
    pb_put_varint_raw(&pe, ((uint64_t)f << 3) | wt);
    pb_put_raw(&pe, at, (size_t)(it.p - at));
  }
  rk_slice push = tl_done(&pe);
  tout m = merge_push(n, NOW + 1, push, 7, 0);
  assert_true(n->counter >= BLOCK / 2u + 11u);
  const tsend *l = find_send(&m, KIND_LEASE);
  assert_non_null(l);
  assert_int_equal(tl_u64(l->message, 3), n->counter);
  assert_int_equal(tl_u64(l->message, 4), 0);   /* not fresh */
  /* Writes go on meanwhile, within the block. */
  uint64_t dot = 0;
  assert_int_equal(client_write(n, NOW + 2, key, &dot), RINGKV_OK);
  assert_true(dot <= BLOCK);
  /* A counter taken past the block's end (a claim) stops writes until the next block. */
  n->counter = BLOCK;
  assert_int_equal(client_write(n, NOW + 3, key, NULL), RINGKV_E_LEASE);
  tout b = step(n, NOW + 4, 5, answer_msg(l->tag, true, lease_reply(1, BLOCK + 1u, 2u * BLOCK, false)));
  assert_int_equal(b.rc, RINGKV_OK);
  assert_int_equal(client_write(n, NOW + 5, key, &dot), RINGKV_OK);
  assert_int_equal(dot, BLOCK + 1u);
  ringkv_node_destroy(n);
  tl_reset();
}

/* ------------------------------------------------------------------------------------- */
/* Catch-up */

static rk_slice cu_reply(uint32_t from, uint32_t shard, bool equal, rk_slice push, bool more, const char *last) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, from);
  pb_put_uint(&e, 3, shard);
  pb_put_bool(&e, 4, equal);
  pb_put_bytes(&e, 5, push);
  pb_put_bool(&e, 6, more);
  if (last != NULL) {
    rk_slice k = tl_str(last);
    pb_put_uint(&e, 7, ringkv_hash(k.ptr, k.len) >> RINGKV_KEY_POSITION_SHIFT);
    pb_put_bytes(&e, 8, k);
  }
  return tl_done(&e);
}

/* A collection query from replica `from` about `key` (all rows absent, as an executor
 * would load them): how many keys the GcReply names. */
static size_t gc_answered_keys(ringkv_node *n, uint64_t now, uint32_t from, const char *key) {
  pb_enc kd = tl_enc();
  pb_put_bytes(&kd, 1, tl_str(key));
  pb_put_fixed64(&kd, 2, 1);
  pb_enc q = tl_enc();
  pb_put_uint(&q, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&q, 2, from);
  pb_put_bytes(&q, 3, tl_done(&kd));
  pb_put_uint(&q, 15, RINGKV_PROTOCOL_VERSION);
  pb_enc in = tl_enc();
  pb_put_uint(&in, 1, 3);
  pb_put_bytes_always(&in, 2, tl_done(&q));
  tout o = step(n, now, 7, tl_done(&in));
  assert_int_equal(o.rc, RINGKV_OK);
  while (o.has_load) {
    o = step(n, now, 4, absent_rows(o.load));
    assert_int_equal(o.rc, RINGKV_OK);
  }
  assert_true(o.reply.len > 0);
  size_t named = 0;
  pb_rd it = pb_reader(o.reply);
  rk_slice k;
  while (tl_next_bytes(&it, 3, &k)) {
    assert_true(rk_slice_eq(tl_bytes_field(k, 1), tl_str(key)));
    named++;
  }
  return named;
}

static void test_lost_storage_catches_up_per_shard(void **unused) {
  (void)unused;
  tout a;
  ringkv_node *n = leased_node(1, 5u * BLOCK + 1u, true, &a);
  /* Storage lost: the counter continues above every earlier block. */
  assert_int_equal(n->counter, 5u * BLOCK);
  size_t mine = n->my_shards_len;
  assert_true(mine > 8);
  /* Every shard of the node is caught up on; a bounded number at a time. */
  assert_int_equal(count_sends(&a, KIND_CATCHUP), RK_MIN(mine, (size_t)RK_CATCHUP_ACTIVE_MAX));
  assert_true(tl_bytes_field(a.state, 32).len == 8);   /* 64 shards: an 8-byte bitmap */
  const tsend *c = find_send(&a, KIND_CATCHUP);
  uint32_t shard = (uint32_t)tl_u64(c->message, 3);
  uint32_t source = c->peer;
  assert_true(replicates(n, shard, 1) && replicates(n, shard, source) && source != 1);
  assert_int_equal(tl_u64(c->message, 5), 0);   /* from the shard's first row */
  /* Its shards are neither written nor read by clients; pushes merge. */
  char kbuf[32], k2[32];
  const char *key = key_in(shard, kbuf, sizeof kbuf);
  assert_int_equal(client_write(n, NOW, key, NULL), RINGKV_E_CATCHING_UP);
  assert_int_equal(client_read(n, key), RINGKV_E_CATCHING_UP);
  /* Nor does it vouch for any state of those shards in collection's agreement (the key is
   * left out of its answer: undecided at the asker). */
  assert_int_equal(gc_answered_keys(n, NOW, source, key), 0);
  ringkv_node *peer = tl_node(cfg(), source);
  tout pm = merge_push(n, NOW, push_of(peer, key_in(shard, k2, sizeof k2), 1), 7, 0);
  assert_true(pm.has_put);
  /* Forged pages change nothing: another source, another shard, equal with rows, a cursor
   * in another shard. */
  rk_slice page = push_of(peer, key, 1);
  uint32_t other_shard = (shard + 1u) % cfg().shards;
  char ko[32];
  rk_slice forged[] = {
      cu_reply((source + 1u) % 8u, shard, true, (rk_slice){NULL, 0}, false, NULL),
      cu_reply(source, other_shard, true, (rk_slice){NULL, 0}, false, NULL),
      cu_reply(source, shard, true, page, false, NULL),
      cu_reply(source, shard, false, page, true, key_in(other_shard, ko, sizeof ko)),
  };
  uint64_t now = NOW;
  uint32_t tag = c->tag;
  for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
    tout f = step(n, now, 5, answer_msg(tag, true, forged[i]));
    assert_int_equal(f.rc, RINGKV_OK);
    assert_int_equal(f.refused_malformed, 1);
    assert_false(f.has_load);   /* nothing merged */
    assert_int_equal(client_read(n, key), RINGKV_E_CATCHING_UP);
    /* Asked again after a back-off: from the same replica at first, from the start. */
    now += 3000;
    tout r = step(n, now, 3, (rk_slice){NULL, 0});
    const tsend *again = NULL;
    for (size_t k = 0; k < r.nsends; k++) {
      if (r.sends[k].kind == KIND_CATCHUP && tl_u64(r.sends[k].message, 3) == shard) again = &r.sends[k];
    }
    assert_non_null(again);
    assert_int_equal(tl_u64(again->message, 5), 0);
    tag = again->tag;
    source = again->peer;   /* after three losses in a row another replica is tried */
  }
  /* A page the merge could not take whole (an entry whose clock is beyond the bound, from
   * a peer whose clock runs ahead) is not counted as copied: the same page is asked
   * again, not the next. */
  ringkv_node *ahead = tl_node(cfg(), source);
  tout d = merge_push(n, now, cu_reply(source, shard, false, push_at(ahead, key, 1, now + 3600u * 1000u), true, key), 5, tag);
  ringkv_node_destroy(ahead);
  assert_false(d.has_put);
  assert_int_equal(client_read(n, key), RINGKV_E_CATCHING_UP);
  tsend retry;
  bool asked = false;
  for (uint64_t t = now; t < now + 60000u && !asked; t += 1000u) {
    tout r = t == now ? d : step(n, t, 3, (rk_slice){NULL, 0});
    for (size_t k = 0; k < r.nsends && !asked; k++) {
      if (r.sends[k].kind != KIND_CATCHUP || tl_u64(r.sends[k].message, 3) != shard) continue;
      retry = r.sends[k];
      asked = true;
      now = t;
    }
  }
  assert_true(asked);
  assert_int_equal(tl_u64(retry.message, 5), 0);   /* from the start again */
  assert_int_equal(tl_bytes_field(retry.message, 7).len, 0);
  tag = retry.tag;
  source = retry.peer;
  /* A real page with more to come: merged, then the next page asks after its last key. */
  page = push_of(peer, key, 1);
  tout p = merge_push(n, now, cu_reply(source, shard, false, page, true, key), 5, tag);
  const tsend *next = NULL;
  for (size_t k = 0; k < p.nsends; k++) {
    if (p.sends[k].kind == KIND_CATCHUP && tl_u64(p.sends[k].message, 3) == shard) next = &p.sends[k];
  }
  assert_non_null(next);
  assert_int_equal(tl_u64(next->message, 5), 1);
  assert_true(rk_slice_eq(tl_bytes_field(next->message, 7), tl_str(key)));
  assert_int_equal(client_read(n, key), RINGKV_E_CATCHING_UP);
  /* Restarted here, it resumes the pull where it stood. */
  rk_slice state = p.state;
  assert_true(state.len > 0);
  ringkv_node *r = lease_node(1, state);
  tout rs = step(r, now, 8, (rk_slice){NULL, 0});
  const tsend *resumed = NULL;
  for (size_t k = 0; k < rs.nsends; k++) {
    if (rs.sends[k].kind == KIND_CATCHUP && tl_u64(rs.sends[k].message, 3) == shard) resumed = &rs.sends[k];
  }
  assert_non_null(resumed);
  assert_int_equal(resumed->peer, next->peer);
  assert_true(rk_slice_eq(tl_bytes_field(resumed->message, 7), tl_str(key)));
  assert_null(find_send(&rs, KIND_LEASE));   /* its lease survived too */
  ringkv_node_destroy(n);
  n = r;
  /* Every page answered `equal` from here: each shard is pulled from both other replicas,
   * then served. */
  tsend queue[4096];
  size_t qlen = 0, pulls = 0;
  for (size_t k = 0; k < rs.nsends; k++) {
    if (rs.sends[k].kind == KIND_CATCHUP) queue[qlen++] = rs.sends[k];
  }
  bool answered_while_pending = false;
  for (int guard = 0; guard < 100000 && qlen > 0; guard++) {
    tsend s = queue[--qlen];
    tout o2 = step(n, now, 5, answer_msg(s.tag, true, cu_reply(s.peer, (uint32_t)tl_u64(s.message, 3), true, (rk_slice){NULL, 0}, false, NULL)));
    assert_int_equal(o2.rc, RINGKV_OK);
    pulls++;
    /* A shard caught up on while others are not: collection queries about it are
     * answered (only the pending shards' keys are left out). */
    uint32_t done_shard = (uint32_t)tl_u64(s.message, 3);
    if (!answered_while_pending && rk_step_serves(n, done_shard) == RINGKV_OK &&
        rk_step_serves(n, shard) == RINGKV_E_CATCHING_UP) {
      char kd[32];
      assert_int_equal(gc_answered_keys(n, now, s.peer, key_in(done_shard, kd, sizeof kd)), 1);
      assert_int_equal(gc_answered_keys(n, now, source, key), 0);
      answered_while_pending = true;
    }
    for (size_t k = 0; k < o2.nsends; k++) {
      if (o2.sends[k].kind == KIND_CATCHUP) {
        assert_true(qlen < 4096);
        queue[qlen++] = o2.sends[k];
      }
    }
  }
  assert_true(answered_while_pending);
  /* Nothing left to pull, and nothing asked for later. */
  tout idle = step(n, now + 60000, 3, (rk_slice){NULL, 0});
  assert_int_equal(count_sends(&idle, KIND_CATCHUP), 0);
  /* Two other replicas per shard (the one pulled from in part above still in full). */
  assert_true(pulls >= 2u * mine - 1u);
  assert_int_equal(client_read(n, key), RINGKV_OK);
  assert_int_equal(client_write(n, now, key, NULL), RINGKV_OK);
  assert_int_equal(gc_answered_keys(n, now, source, key), 1);
  ringkv_node_destroy(n);
  ringkv_node_destroy(peer);
  tl_reset();
}

static rk_slice cu_request(uint32_t from, uint32_t shard, uint64_t digest, const char *after) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, from);
  pb_put_uint(&e, 3, shard);
  pb_put_fixed64(&e, 4, digest);
  if (after != NULL) {
    rk_slice k = tl_str(after);
    pb_put_bool(&e, 5, true);
    pb_put_uint(&e, 6, ringkv_hash(k.ptr, k.len) >> RINGKV_KEY_POSITION_SHIFT);
    pb_put_bytes(&e, 7, k);
  }
  pb_enc in = tl_enc();
  pb_put_uint(&in, 1, KIND_CATCHUP);
  pb_put_bytes(&in, 2, tl_done(&e));
  return tl_done(&in);
}

static void test_responder_pages_in_key_order(void **unused) {
  (void)unused;
  ringkv_node *n = leased_node(2, 1, false, NULL);
  uint32_t shard = n->my_shards[0];
  uint32_t other = UINT32_MAX, stranger = UINT32_MAX;
  for (uint32_t p = 0; p < 8; p++) {
    if (p == 2) continue;
    if (replicates(n, shard, p) && other == UINT32_MAX) other = p;
    if (!replicates(n, shard, p) && stranger == UINT32_MAX) stranger = p;
  }
  /* Digests equal (both empty): `equal` at once, nothing loaded. */
  tout e = step(n, NOW, 7, cu_request(other, shard, 0, NULL));
  assert_int_equal(e.rc, RINGKV_OK);
  assert_false(e.has_load);
  assert_int_equal(tl_u64(e.reply, 4), 1);
  assert_int_equal(tl_u64(e.reply, 2), 2);
  /* Different: the page is loaded (after the cursor, bounded), then answered. */
  char kbuf[32];
  const char *key = key_in(shard, kbuf, sizeof kbuf);
  tout p = step(n, NOW, 7, cu_request(other, shard, 42, key));
  assert_true(p.has_load);
  assert_int_equal(tl_u64(p.load, 30), 1);
  assert_int_equal(tl_u64(p.load, 31), shard);
  assert_int_equal(tl_u64(p.load, 32), 1);
  assert_true(rk_slice_eq(tl_bytes_field(p.load, 34), tl_str(key)));
  assert_true(tl_u64(p.load, 35) > 0 && tl_u64(p.load, 36) > 0);
  char k2[32];
  snprintf(k2, sizeof k2, "%s", key);
  const char *row_key = NULL;
  for (int i = 0;; i++) {
    snprintf(k2, sizeof k2, "row/%d", i);
    if (shard_of_key(k2) == shard) {
      row_key = k2;
      break;
    }
  }
  ringkv_node *maker = tl_node(cfg(), other);
  pb_enc w = tl_enc();
  pb_put_uint(&w, 1, NOW);
  pb_put_bytes(&w, 2, tl_str(row_key));
  pb_put_bytes(&w, 6, tl_str("v"));
  rk_slice wrep;
  assert_int_equal(tl_call(maker, RINGKV_OP_WRITE, tl_done(&w), &wrep), RINGKV_OK);
  pb_enc l = tl_enc();
  size_t m = pb_begin(&l, 30);
  pb_put_bytes(&l, 1, tl_str(row_key));
  pb_put_bytes(&l, 2, tl_bytes_field(wrep, 2));
  size_t v = pb_begin(&l, 3);
  pb_put_bytes(&l, 1, tl_bytes_field(wrep, 3));
  pb_put_bytes(&l, 2, tl_str("v"));
  pb_end(&l, v);
  pb_end(&l, m);
  pb_put_bool(&l, 31, true);
  tout ans = step(n, NOW, 4, tl_done(&l));
  assert_int_equal(ans.rc, RINGKV_OK);
  assert_int_equal(tl_u64(ans.reply, 4), 0);
  assert_int_equal(tl_u64(ans.reply, 6), 1);
  assert_true(rk_slice_eq(tl_bytes_field(ans.reply, 8), tl_str(row_key)));
  rk_slice push = tl_bytes_field(ans.reply, 5);
  assert_true(push.len > 0);
  assert_true(rk_slice_eq(tl_bytes_field(tl_bytes_field(push, 3), 1), tl_str(row_key)));
  /* A row of another shard loaded: the executor's bug, never answered. */
  tout p2 = step(n, NOW, 7, cu_request(other, shard, 42, NULL));
  assert_true(p2.has_load);
  char k3[32];
  pb_enc bad = tl_enc();
  m = pb_begin(&bad, 30);
  pb_put_bytes(&bad, 1, tl_str(key_in((shard + 1u) % 64u, k3, sizeof k3)));
  pb_end(&bad, m);
  assert_int_equal(step(n, NOW, 4, tl_done(&bad)).rc, RINGKV_E_STATE);
  /* Not this ring's question (a shard the two do not share: 421 with the ring), then
   * malformed: from itself, a shard out of range. */
  assert_int_equal(step(n, NOW, 7, cu_request(stranger, shard, 42, NULL)).rc, RINGKV_E_NOT_SERVING);
  assert_int_equal(step(n, NOW, 7, cu_request(2, shard, 42, NULL)).rc, RINGKV_E_DECODE);
  assert_int_equal(step(n, NOW, 7, cu_request(other, 64, 42, NULL)).rc, RINGKV_E_DECODE);
  ringkv_node_destroy(maker);
  ringkv_node_destroy(n);
  tl_reset();
}

/* ------------------------------------------------------------------------------------- */
/* The admin fence */

static void test_fence_drains_then_wipes(void **unused) {
  (void)unused;
  rk_slice none = {NULL, 0};
  char kbuf[32];
  /* A node that never took a write has nothing to drain: the wipe is due at once. */
  ringkv_node *idle = leased_node(3, 1, false, NULL);
  tout f0 = fence_step(idle, NOW + 1, 1);
  assert_int_equal(f0.rc, RINGKV_OK);
  assert_true(f0.wipe);
  ringkv_node_destroy(idle);

  /* A node holding a write its peers have not acknowledged: no wipe yet, and from now on
   * no client write (reads go on), persisted across a restart. */
  ringkv_node *n = leased_node(1, 1, false, NULL);
  const char *key = key_of(n, 1, kbuf, sizeof kbuf);
  uint64_t dot = 0;
  assert_int_equal(client_write(n, NOW + 1, key, &dot), RINGKV_OK);
  tout f = fence_step(n, NOW + 2, 1);
  assert_int_equal(f.rc, RINGKV_OK);
  assert_false(f.wipe);
  assert_int_equal(tl_u64(f.state, 35), 1);
  assert_int_equal(client_write(n, NOW + 3, key, NULL), RINGKV_E_FENCING);
  assert_int_equal(client_read(n, key), RINGKV_OK);
  /* Its pushes go on (the alarm is armed, a round reads rows to push). */
  assert_true(f.alarm != 0);
  tout r = step(n, f.alarm, 3, none);
  assert_int_equal(r.rc, RINGKV_OK);
  assert_false(r.wipe);
  assert_true(r.has_load);
  rk_slice kept = f.state;
  ringkv_node_destroy(n);
  ringkv_node *again = lease_node(1, kept);
  assert_int_equal(client_write(again, NOW + 4, key, NULL), RINGKV_E_FENCING);
  /* Bad modes are malformed and change nothing. */
  assert_int_equal(fence_step(again, NOW + 5, 3).rc, RINGKV_E_DECODE);
  assert_false(fence_step(again, NOW + 5, 1).wipe);
  /* Forced: at once, what only it holds notwithstanding. */
  tout forced = fence_step(again, NOW + 6, 2);
  assert_int_equal(forced.rc, RINGKV_OK);
  assert_true(forced.wipe);
  ringkv_node_destroy(again);

  /* A node of an earlier build (dots made, none leased: RingControl has no record of
   * them) is not wiped, even forced, until its lease is granted: a wipe then would let
   * its next life make the same dots. */
  pb_enc st = tl_enc();
  pb_put_uint(&st, 2, 5);   /* counter 5, no lease */
  ringkv_node *old = lease_node(2, tl_done(&st));
  tout s = step(old, NOW, 8, none);
  const tsend *l = find_send(&s, KIND_LEASE);
  assert_non_null(l);
  assert_int_equal(tl_u64(l->message, 3), 5);   /* above its counter */
  tout fo = fence_step(old, NOW + 1, 2);
  assert_int_equal(fo.rc, RINGKV_OK);
  assert_false(fo.wipe);
  tout a = step(old, NOW + 2, 5, answer_msg(l->tag, true, lease_reply(2, 6, 5u + BLOCK, false)));
  assert_int_equal(a.rc, RINGKV_OK);
  assert_true(a.wipe);
  ringkv_node_destroy(old);
  tl_reset();
}


/* The answer a source gives a probe, and what its outcome does at the asker:
 *  - a source says equal only for shards both hold, whose digests agree (not for a shard
 *    the asker is not a replica of, nor one whose digest differs); shards out of order,
 *    repeated, out of range or more than RK_CATCHUP_PROBE_MAX are malformed;
 *  - at the asker a pending shard is caught up only when every source said equal: one
 *    source silent, lost or naming it twice (malformed) leaves it to the pulls. */
static uint32_t source_count(ringkv_node *n, uint32_t shard) {
  uint32_t len, k = 0;
  const uint16_t *r = rk_sources_of(n, shard, &len);
  for (uint32_t i = 0; i < len; i++) k += r[i] != n->self;
  return k;
}

static rk_slice probe_msg(uint32_t from, const uint32_t *shards, const uint64_t *digests, size_t len) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, from);
  for (size_t i = 0; i < len; i++) {
    size_t m = pb_begin(&e, 8);
    pb_put_uint(&e, 1, shards[i]);
    pb_put_fixed64(&e, 2, digests[i]);
    pb_end(&e, m);
  }
  return tl_done(&e);
}

static void test_probe_answers_and_outcomes(void **state) {
  (void)state;
  tl_config cfg = tl_default_config();   /* 8 nodes, R=3, 64 shards */
  ringkv_node *n = tl_node(cfg, 0);
  /* Shards node 0 shares with node 1, and one it holds that node 1 does not. */
  uint32_t shared[4], shared_len = 0, other = UINT32_MAX;
  for (uint32_t s = 0; s < cfg.shards; s++) {
    if (!rk_is_replica(n, s, 0)) continue;
    if (rk_is_replica(n, s, 1) && shared_len < 4) shared[shared_len++] = s;
    else if (!rk_is_replica(n, s, 1) && other == UINT32_MAX) other = s;
  }
  assert_true(shared_len == 4 && other != UINT32_MAX);
  n->shard_digest[shared[2]] = 77;   /* node 0 holds rows there */
  uint32_t asked[5] = {shared[0], shared[1], shared[2], shared[3], other};
  uint64_t digests[5] = {0, 0, 0, 5, 0};
  /* Ascending as a probe must be. */
  for (int i = 0; i < 5; i++) {
    for (int j = i + 1; j < 5; j++) {
      if (asked[j] < asked[i]) {
        uint32_t t = asked[i]; asked[i] = asked[j]; asked[j] = t;
        uint64_t d = digests[i]; digests[i] = digests[j]; digests[j] = d;
      }
    }
  }
  rk_slice msg = probe_msg(1, asked, digests, 5);
  assert_true(rk_catchup_is_probe(msg));
  rk_slice reply;
  assert_int_equal(rk_catchup_probe_reply(n, msg, &reply), RINGKV_OK);
  uint32_t equal[8];
  size_t equal_len = tl_repeated_u32(reply, 9, equal, 8);
  /* Equal: shared[0] and shared[1] only (shared[2]: digest differs; shared[3]: the asker's
   * digest differs; `other`: node 1 does not replicate it). */
  assert_int_equal(equal_len, 2);
  for (size_t i = 0; i < equal_len; i++) assert_true(equal[i] == shared[0] || equal[i] == shared[1]);
  /* Malformed probes. */
  uint32_t twice[2] = {shared[0], shared[0]};
  uint64_t zeros[RK_CATCHUP_PROBE_MAX + 1] = {0};
  assert_int_equal(rk_catchup_probe_reply(n, probe_msg(1, twice, zeros, 2), &reply), RINGKV_E_DECODE);
  uint32_t far[1] = {cfg.shards};
  assert_int_equal(rk_catchup_probe_reply(n, probe_msg(1, far, zeros, 1), &reply), RINGKV_E_DECODE);
  uint32_t many[RK_CATCHUP_PROBE_MAX + 1];
  for (uint32_t i = 0; i <= RK_CATCHUP_PROBE_MAX; i++) many[i] = i % cfg.shards + (i / cfg.shards) * 0;
  assert_int_equal(rk_catchup_probe_reply(n, probe_msg(1, many, zeros, RK_CATCHUP_PROBE_MAX + 1), &reply), RINGKV_E_DECODE);
  assert_int_equal(rk_catchup_probe_reply(n, probe_msg(0, asked, digests, 1), &reply), RINGKV_E_DECODE);   /* from itself */
  tl_reset();

  /* The asker: shared[0] pending; each source answers in turn. */
  for (int mode = 0; mode < 4; mode++) {   /* 0 all equal, 1 one silent, 2 one lost, 3 one repeats */
    rk_catchup c;
    assert_int_equal(rk_catchup_init(&c, cfg.shards, cfg.cluster_size), RINGKV_OK);
    rk_catchup_begin(&c, shared[0]);
    uint32_t sends = rk_catchup_probe_begin(&c, n, 1000);
    assert_int_equal(sends, source_count(n, shared[0]));
    for (uint32_t k = 0; k < sends; k++) {
      rk_slice m;
      uint32_t peer;
      assert_int_equal(rk_catchup_probe_request(&c, n, k, &m, &peer), RINGKV_OK);
      rk_catchup_probe_sent(&c, k, 100 + k, 1000);
      assert_int_equal(rk_catchup_probe_owner(&c, 100 + k), (int)k);
      pb_enc a = tl_enc();
      pb_put_uint(&a, 1, RINGKV_PROTOCOL_VERSION);
      pb_put_uint(&a, 2, peer);
      uint32_t eq[2] = {shared[0], shared[0]};
      bool last = k + 1 == sends;
      if (!(mode == 1 && last)) pb_put_packed_u32(&a, 9, eq, mode == 3 && last ? 2 : 1);
      rk_slice ans = tl_done(&a);
      int rc = rk_catchup_probe_answer(&c, n, k, mode == 2 && last ? NULL : &ans);
      assert_int_equal(rc, mode == 3 && last ? RINGKV_E_DECODE : RINGKV_OK);
    }
    assert_int_equal(c.pending, mode == 0 ? 0u : 1u);
    assert_int_equal(rk_catchup_probe_owner(&c, 100), -1);   /* the batch is closed */
    rk_catchup_free(&c);
    tl_reset();
  }
  ringkv_node_destroy(n);
}

/* Leaving a shard (cover.c), for a grow 4 -> 7 in the leaving phase:
 *  - the receiver takes a covering message only from a replica that leaves a shard it
 *    holds, in the leaving phase (a forged sender, itself, another phase: malformed); it
 *    says equal only when digests and key rows both agree (markers add nothing to a digest);
 *  - the sender compares digests with each new replica in turn; differing, it sends pages;
 *    a pass that changed something runs again; an answer that is not a covering one (no
 *    cover flag, another peer or shard, equal with changes) proves nothing; with every new
 *    replica covering it, the drop; a shard dropped leaves the node idle. */
static rk_slice cover_answer(uint32_t from, uint32_t shard, bool equal, uint32_t changed, bool flag) {
  pb_enc a = tl_enc();
  pb_put_uint(&a, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&a, 2, from);
  pb_put_uint(&a, 3, shard);
  pb_put_bool(&a, 4, equal);
  pb_put_uint(&a, 10, changed);
  pb_put_bool(&a, 11, flag);
  return tl_done(&a);
}

static void test_cover_passes_and_drop(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  c.cluster_size = 7;
  c.from = 4;
  c.to = 7;
  c.phase = RK_PHASE_LEAVING;
  c.epoch = 4;
  ringkv_node *old = NULL;
  uint32_t shard = UINT32_MAX, self = 0;
  for (self = 0; self < 4 && shard == UINT32_MAX; self++) {
    old = tl_node(c, self);
    for (uint32_t s = 0; s < c.shards && shard == UINT32_MAX; s++) {
      if (rk_leaves_shard(old, s, self)) shard = s;
    }
    if (shard == UINT32_MAX) ringkv_node_destroy(old);
  }
  self--;
  assert_true(shard != UINT32_MAX);
  uint32_t len;
  const uint16_t *nw = rk_new_set_of(old, shard, &len);
  uint16_t targets[8];
  memcpy(targets, nw, len * sizeof *targets);
  assert_int_equal(len, 3);
  uint32_t stay = UINT32_MAX;   /* a node that neither leaves the shard nor is `self` */
  for (uint32_t k = 0; k < 7; k++) {
    if (k != self && !rk_leaves_shard(old, shard, k)) stay = k;
  }
  assert_true(stay != UINT32_MAX);

  /* The receiver. */
  ringkv_node *recv = tl_node(c, targets[0]);
  recv->shard_digest[shard] = 99;
  recv->shard_keys[shard] = 2;
  old->shard_digest[shard] = 99;
  old->shard_keys[shard] = 2;
  rk_cover cv;
  rk_cover_reset(&cv);
  rk_cover_fill(&cv, old, 1000);
  assert_int_equal(cv.active_len, 1);
  assert_int_equal(cv.active[0].shard, shard);
  rk_slice msg, none = {NULL, 0}, push;
  assert_int_equal(rk_cover_request(&cv, old, 0, none, none, false, &msg), RINGKV_OK);
  assert_true(rk_cover_is_request(msg));
  uint32_t got = UINT32_MAX;
  bool equal = false;
  assert_int_equal(rk_cover_incoming(recv, msg, &got, &equal, &push), RINGKV_OK);
  assert_true(equal && got == shard && push.len == 0);
  recv->shard_keys[shard] = 1;   /* same digest, a marker row fewer: not covered */
  assert_int_equal(rk_cover_incoming(recv, msg, &got, &equal, &push), RINGKV_OK);
  assert_false(equal);
  /* Forged: from a node that does not leave the shard, or from the receiver itself. */
  ringkv_node *liar = tl_node(c, stay);
  liar->shard_digest[shard] = 99;
  liar->shard_keys[shard] = 2;
  rk_cover lc;
  rk_cover_reset(&lc);
  lc.active[0].shard = shard;
  lc.active_len = 1;
  rk_slice forged;
  assert_int_equal(rk_cover_request(&lc, liar, 0, none, none, false, &forged), RINGKV_OK);
  assert_int_equal(rk_cover_incoming(recv, forged, &got, &equal, &push), RINGKV_E_NOT_SERVING);
  /* Outside the leaving phase nothing is taken (answered with the ring: 421). */
  tl_config sw = c;
  sw.phase = RK_PHASE_SWITCHING;
  sw.epoch = 3;
  ringkv_node *early = tl_node(sw, targets[0]);
  assert_int_equal(rk_cover_incoming(early, msg, &got, &equal, &push), RINGKV_E_NOT_SERVING);
  ringkv_node_destroy(early);
  ringkv_node_destroy(liar);

  /* The sender, target by target. */
  uint64_t now = 1000;
  assert_int_equal(rk_cover_check_due(&cv, now), 0);
  assert_int_equal(rk_cover_target(&cv, old, 0), targets[0]);
  rk_cover_sent(&cv, 0, 7, now);
  assert_int_equal(rk_cover_owner(&cv, 7), 0);
  /* Not covering answers: no flag, another peer, another shard, equal yet changed. */
  rk_slice bad[4] = {cover_answer(targets[0], shard, true, 0, false), cover_answer(targets[1], shard, true, 0, true),
                     cover_answer(targets[0], shard + 1, true, 0, true), cover_answer(targets[0], shard, true, 3, true)};
  for (int k = 0; k < 4; k++) {
    rk_cover_sent(&cv, 0, 7, now);
    assert_int_equal(rk_cover_answer(&cv, old, 0, now, &bad[k]), RINGKV_E_DECODE);
    assert_int_equal(cv.active[0].target, 0);
    assert_int_equal(cv.active[0].what, RK_CV_CHECK);
  }
  now += 20000;
  rk_cover_sent(&cv, 0, 7, now);
  rk_slice differ = cover_answer(targets[0], shard, false, 0, true);
  assert_int_equal(rk_cover_answer(&cv, old, 0, now, &differ), RINGKV_OK);
  assert_int_equal(cv.active[0].what, RK_CV_PAGE);
  assert_int_equal(rk_cover_load_due(&cv, now), 0);
  /* A page that changed something, the last: the pass runs again later, from a check. */
  assert_int_equal(rk_cover_request(&cv, old, 0, tl_str("p"), none, false, &msg), RINGKV_OK);
  rk_cover_sent(&cv, 0, 8, now);
  rk_slice changed = cover_answer(targets[0], shard, false, 2, true);
  assert_int_equal(rk_cover_answer(&cv, old, 0, now, &changed), RINGKV_OK);
  assert_int_equal(cv.active[0].what, RK_CV_CHECK);
  assert_int_equal(cv.active[0].target, 0);
  assert_int_equal(rk_cover_check_due(&cv, now), -1);   /* after a wait */
  assert_true(rk_cover_alarm(&cv, old) > now);
  now += 20000;
  /* The next pass changes nothing: that target covers it; the others say equal. */
  rk_cover_sent(&cv, 0, 9, now);
  assert_int_equal(rk_cover_answer(&cv, old, 0, now, &differ), RINGKV_OK);
  assert_int_equal(rk_cover_request(&cv, old, 0, tl_str("p"), none, false, &msg), RINGKV_OK);
  rk_cover_sent(&cv, 0, 10, now);
  rk_slice quiet = cover_answer(targets[0], shard, false, 0, true);
  assert_int_equal(rk_cover_answer(&cv, old, 0, now, &quiet), RINGKV_OK);
  for (uint32_t t = 1; t < 3; t++) {
    assert_int_equal(cv.active[0].what, RK_CV_CHECK);
    assert_int_equal(rk_cover_target(&cv, old, 0), targets[t]);
    rk_cover_sent(&cv, 0, 10 + t, now);
    rk_slice eq = cover_answer(targets[t], shard, true, 0, true);
    assert_int_equal(rk_cover_answer(&cv, old, 0, now, &eq), RINGKV_OK);
  }
  /* Covered by every new replica: the drop, page by page, then nothing left to do. */
  assert_int_equal(cv.active[0].what, RK_CV_DROP);
  assert_int_equal(rk_cover_load_due(&cv, now), 0);
  rk_cover_dropped(&cv, 0, true, now);
  assert_int_equal(cv.active_len, 1);
  rk_cover_dropped(&cv, 0, false, now);
  assert_int_equal(cv.active_len, 0);
  old->shard_keys[shard] = 0;
  for (int k = 0; k < 4; k++) rk_cover_fill(&cv, old, now);
  assert_true(rk_cover_idle(&cv, old));
  assert_int_equal(rk_cover_alarm(&cv, old), 0);
  ringkv_node_destroy(recv);
  ringkv_node_destroy(old);
  tl_reset();
}

/* A covering page at the new replica, step by step as an executor runs it (its rows
 * absent): an entry it takes counts as changed, and so does an entry it cannot take
 * counts too, so the leaving replica never drops it: a version a day ahead of its clock
 * (deferred) and one beyond the HLC horizon (refused). */
static uint32_t cover_page_changed(ringkv_node *recv, uint32_t from, uint32_t shard, rk_slice push) {
  pb_enc q = tl_enc();
  pb_put_uint(&q, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&q, 2, from);
  pb_put_uint(&q, 3, shard);
  pb_put_fixed64(&q, 4, 1);   /* differs from the receiver's */
  pb_put_bool(&q, 10, true);
  pb_put_bytes(&q, 11, push);
  pb_put_uint(&q, 12, 1);
  pb_enc in = tl_enc();
  pb_put_uint(&in, 1, KIND_CATCHUP);
  pb_put_bytes(&in, 2, tl_done(&q));
  tout o = step(recv, NOW, 7, tl_done(&in));
  assert_int_equal(o.rc, RINGKV_OK);
  while (o.has_load) {
    o = step(recv, NOW, 4, absent_rows(o.load));
    assert_int_equal(o.rc, RINGKV_OK);
  }
  assert_true(tl_u64(o.reply, 11) != 0);   /* a covering answer */
  assert_int_equal(tl_u64(o.reply, 4), 0);
  assert_int_equal(tl_u64(o.reply, 3), shard);
  return (uint32_t)tl_u64(o.reply, 10);
}

static void test_cover_page_counts_what_it_could_not_take(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  c.cluster_size = 7;
  c.from = 4;
  c.to = 7;
  c.phase = RK_PHASE_LEAVING;
  c.epoch = 4;
  ringkv_node *probe = tl_node(c, 0);
  uint32_t shard = UINT32_MAX, self = 0;
  for (uint32_t id = 0; id < 4 && shard == UINT32_MAX; id++) {
    for (uint32_t sh = 0; sh < c.shards && shard == UINT32_MAX; sh++) {
      if (rk_leaves_shard(probe, sh, id)) {
        shard = sh;
        self = id;
      }
    }
  }
  assert_true(shard != UINT32_MAX);
  uint32_t len;
  uint32_t target = rk_new_set_of(probe, shard, &len)[0];
  ringkv_node_destroy(probe);
  ringkv_node *recv = tl_node(c, target);
  /* The leaving replica's versions, made on the old ring (of 4) under its id. */
  tl_config plain = tl_default_config();
  plain.cluster_size = 4;
  char k1[32], k2[32], k3[32];
  key_in(shard, k1, sizeof k1);
  ringkv_node *maker = tl_node(plain, self);
  rk_slice now_push = push_at(maker, k1, (self + 1u) % 4u, NOW);
  assert_int_equal(cover_page_changed(recv, self, shard, now_push), 1);
  /* A day ahead of the receiver's clock: deferred, so not covered. */
  for (int i = 0;; i++) {
    snprintf(k2, sizeof k2, "ahead/%d", i);
    if (shard_of_key(k2) == shard) break;
  }
  ringkv_node *ahead = tl_node(plain, self);
  assert_true(cover_page_changed(recv, self, shard, push_at(ahead, k2, (self + 1u) % 4u, NOW + UINT64_C(86400000))) > 0);
  /* Beyond the HLC horizon: refused, so not covered either. */
  for (int i = 0;; i++) {
    snprintf(k3, sizeof k3, "far/%d", i);
    if (shard_of_key(k3) == shard) break;
  }
  ringkv_node *far = tl_node(plain, self);
  assert_true(cover_page_changed(recv, self, shard, push_at(far, k3, (self + 1u) % 4u, NOW + 2u * RINGKV_HLC_HORIZON_MS)) > 0);
  ringkv_node_destroy(far);
  ringkv_node_destroy(ahead);
  ringkv_node_destroy(maker);
  ringkv_node_destroy(recv);
  tl_reset();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_control_grants_blocks),
      cmocka_unit_test(test_fresh_node_waits_for_its_lease),
      cmocka_unit_test(test_forged_lease_answers_take_nothing),
      cmocka_unit_test(test_next_block_ahead_of_need),
      cmocka_unit_test(test_lost_storage_catches_up_per_shard),
      cmocka_unit_test(test_responder_pages_in_key_order),
      cmocka_unit_test(test_probe_answers_and_outcomes),
      cmocka_unit_test(test_cover_passes_and_drop),
      cmocka_unit_test(test_cover_page_counts_what_it_could_not_take),
      cmocka_unit_test(test_fence_drains_then_wipes),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  tl_free();
  return failed;
}
