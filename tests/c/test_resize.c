/* test_resize: RingControl's resize decisions (wasm/src/resize.c) through OP_CONTROL, the
 * control step RingControl runs (SPEC: Resizing; release-2 API, POST /v1/admin/cluster).
 *
 *  - A resize is four epochs: joining (reads by the old size), switching (the new size),
 *    leaving, done (no transition, the new size); each epoch is sent to every node of
 *    old ∪ new, again every 5 s to those that did not confirm it, and the next phase comes
 *    only once all of them confirmed the current one (the barrier).
 *  - The gates: switching only once every node of the new size reports nothing left to
 *    copy; done only once every node of the old size reports nothing left to drop; who the
 *    transition waits for is `waiting_for`.
 *  - POST answers: 200 when already the size, 202 started, 202 again for the same `to`,
 *    409 for another during a transition, 400 out of range (before the 409), REPLICAS =
 *    "all" from 1.
 *  - Impossible confirmations (a node the ring never had, an epoch never written) are
 *    refused and change nothing; an older one changes nothing.
 *  - CLUSTER_SIZE: a changed value starts one resize (once none is in progress) and is
 *    stored as applied; an unchanged one never undoes an admin resize; an executor that
 *    cannot carry a resize out only logs it.
 *  - 4 -> 7 -> 3 end to end, every state persisted and read back between steps.
 */
#include "autoscale.h"
#include "testlib.h"

#define NOW UINT64_C(1700000000000)
#define RESEND UINT64_C(5000)

typedef struct {
  uint64_t epoch;
  uint32_t size, from, to, phase;
} tring;

typedef struct {
  int rc;
  bool state_changed;
  tring ring;
  uint32_t status;
  bool has_transition;
  uint32_t waiting[1024], sends[1024];
  size_t waiting_len, sends_len;
  uint64_t alarm;
  uint32_t as_action, as_to;   /* the autoscale evaluation */
  bool as_news;
} tctl;

/* The control object: its persisted state, CLUSTER_SIZE and REPLICAS. */
typedef struct {
  rk_slice state;
  uint32_t cluster_size, replicas;   /* replicas 0: "all" */
  bool resizing;
  bool stored_unknown;               /* the step is not given the nodes' stored counts */
  uint64_t stored_keys;
  const uint32_t *versions;          /* ControlRequest.versions (NULL: none given) */
  size_t versions_len;
  uint32_t as_min, as_max;           /* AUTOSCALE (as_max 0: unset), target 10 rps */
  uint64_t as_rps;                   /* every node's measured rate (rps) */
} tobj;

typedef struct {
  int64_t resize;          /* < 0: none */
  int64_t node;            /* < 0: no confirmation */
  uint64_t epoch;
  uint32_t copying, dropping;
  uint64_t now;
} tev;

static tev ev(void) {
  tev e = {-1, -1, 0, 0, 0, NOW};
  return e;
}

static tctl control(ringkv_node *core, tobj *o, tev v) {
  tctl c;
  memset(&c, 0, sizeof c);
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, o->state);
  pb_put_uint(&e, 2, o->cluster_size);
  uint8_t random[48];
  memset(random, 9, sizeof random);
  pb_put_bytes(&e, 4, (rk_slice){random, sizeof random});
  if (v.resize >= 0) {
    size_t m = pb_begin(&e, 7);   /* ResizeAsk: present even for size 0 */
    pb_put_varint_raw(&e, (1u << 3) | 0u);
    pb_put_varint_raw(&e, (uint64_t)v.resize);
    pb_end(&e, m);
  }
  if (v.node >= 0) {
    size_t m = pb_begin(&e, 8);
    pb_put_varint_raw(&e, (1u << 3) | 0u);
    pb_put_varint_raw(&e, (uint64_t)v.node);
    pb_put_uint(&e, 2, v.epoch);
    pb_put_uint(&e, 3, v.copying);
    pb_put_uint(&e, 4, v.dropping);
    pb_end(&e, m);
  }
  pb_put_uint(&e, 9, v.now);
  pb_put_uint(&e, 10, o->replicas);
  pb_put_bool(&e, 11, o->replicas == 0);
  pb_put_bool(&e, 12, o->resizing);
  pb_put_uint(&e, 15, o->stored_keys);
  pb_put_bool(&e, 17, !o->stored_unknown);
  if (o->versions != NULL) pb_put_packed_u32(&e, 18, o->versions, o->versions_len);
  if (o->as_max != 0) {
    size_t m = pb_begin(&e, 19);
    pb_put_uint(&e, 1, o->as_min);
    pb_put_uint(&e, 2, o->as_max);
    pb_put_uint(&e, 3, 10);
    pb_put_uint(&e, 4, 1000);
    pb_put_uint(&e, 5, 5000);
    pb_put_uint(&e, 6, 2000);
    pb_end(&e, m);
    for (uint32_t i = 0; i < 16; i++) {
      m = pb_begin(&e, 20);
      pb_put_uint(&e, 1, i);
      pb_put_bool(&e, 2, true);
      pb_put_uint(&e, 3, o->as_rps * 1000u);
      pb_end(&e, m);
    }
  }
  rk_slice rep;
  c.rc = tl_call(core, RINGKV_OP_CONTROL, tl_done(&e), &rep);
  if (c.rc != RINGKV_OK) return c;
  pb_rd at;
  if (tl_field(rep, 1, PB_LEN, &at)) {
    c.state_changed = true;
    rk_slice st = tl_bytes_field(rep, 1);
    uint8_t *copy = rk_alloc(tl_arena(), st.len + 1u);
    assert_non_null(copy);
    memcpy(copy, st.ptr, st.len);
    o->state = (rk_slice){copy, st.len};
  }
  rk_slice ring = tl_bytes_field(tl_bytes_field(rep, 2), 1);
  c.ring.epoch = tl_u64(ring, 1);
  c.ring.size = (uint32_t)tl_u64(ring, 2);
  c.ring.from = (uint32_t)tl_u64(ring, 3);
  c.ring.to = (uint32_t)tl_u64(ring, 4);
  c.ring.phase = (uint32_t)tl_u64(ring, 5);
  c.status = (uint32_t)tl_u64(tl_bytes_field(rep, 5), 1);
  c.has_transition = tl_field(rep, 6, PB_LEN, &at);
  c.waiting_len = tl_repeated_u32(tl_bytes_field(rep, 6), 1, c.waiting, 1024);
  c.sends_len = tl_repeated_u32(rep, 7, c.sends, 1024);
  c.alarm = tl_u64(rep, 8);
  c.as_action = (uint32_t)tl_u64(tl_bytes_field(rep, 10), 2);
  c.as_to = (uint32_t)tl_u64(tl_bytes_field(rep, 10), 4);
  c.as_news = tl_u64(rep, 11) != 0;
  return c;
}

static tctl ask(ringkv_node *core, tobj *o, int64_t size, uint64_t now) {
  tev v = ev();
  v.resize = size;
  v.now = now;
  tctl c = control(core, o, v);
  assert_int_equal(c.rc, RINGKV_OK);
  return c;
}

static tctl confirm(ringkv_node *core, tobj *o, uint32_t node, uint64_t epoch, uint32_t copying, uint32_t dropping,
                    uint64_t now) {
  tev v = ev();
  v.node = node;
  v.epoch = epoch;
  v.copying = copying;
  v.dropping = dropping;
  v.now = now;
  return control(core, o, v);
}

static void assert_nodes(const uint32_t *got, size_t len, uint32_t lo, uint32_t hi) {
  assert_int_equal(len, hi - lo);
  for (size_t i = 0; i < len; i++) assert_int_equal(got[i], lo + (uint32_t)i);
}

static void assert_ring(tring g, uint64_t epoch, uint32_t size, uint32_t from, uint32_t to, uint32_t phase) {
  assert_int_equal(g.epoch, epoch);
  assert_int_equal(g.size, size);
  assert_int_equal(g.from, from);
  assert_int_equal(g.to, to);
  assert_int_equal(g.phase, phase);
}

/* Every node below `span` confirms `epoch` (copying and dropping 0) at `now`; the last
 * step's result. */
static tctl confirm_all(ringkv_node *core, tobj *o, uint32_t span, uint64_t epoch, uint64_t now) {
  tctl c;
  memset(&c, 0, sizeof c);
  for (uint32_t i = 0; i < span; i++) {
    c = confirm(core, o, i, epoch, 0, 0, now);
    assert_int_equal(c.rc, RINGKV_OK);
  }
  return c;
}

static void test_grow_then_shrink(void **unused) {
  (void)unused;
  ringkv_node *core = ringkv_node_create();
  tobj o = {{NULL, 0}, 4, 3, true};
  tctl c = control(core, &o, ev());
  assert_int_equal(c.rc, RINGKV_OK);
  assert_ring(c.ring, 1, 4, 0, 0, 0);
  assert_false(c.has_transition);
  assert_int_equal(c.sends_len, 0);
  assert_int_equal(c.alarm, 0);

  /* 4 -> 7: joining; every node of old ∪ new is sent the epoch and waited for. */
  c = ask(core, &o, 7, NOW);
  assert_int_equal(c.status, 202);
  assert_ring(c.ring, 2, 4, 4, 7, 1);
  assert_nodes(c.sends, c.sends_len, 0, 7);
  assert_nodes(c.waiting, c.waiting_len, 0, 7);
  assert_int_equal(c.alarm, NOW + RESEND);
  /* Retried POST: the same transition; another size: 409; out of range: 400 first. */
  assert_int_equal(ask(core, &o, 7, NOW).status, 202);
  assert_int_equal(ask(core, &o, 5, NOW).status, 409);
  assert_int_equal(ask(core, &o, 2, NOW).status, 400);
  assert_int_equal(ask(core, &o, 1025, NOW).status, 400);
  c = ask(core, &o, 0, NOW);
  assert_int_equal(c.status, 400);
  assert_ring(c.ring, 2, 4, 4, 7, 1);

  /* Six confirm; node 6 is waited for, and sent the epoch again only after 5 s. */
  c = confirm_all(core, &o, 6, 2, NOW + 10);
  assert_ring(c.ring, 2, 4, 4, 7, 1);
  assert_nodes(c.waiting, c.waiting_len, 6, 7);
  assert_int_equal(c.sends_len, 0);
  c = confirm(core, &o, 0, 2, 0, 0, NOW + RESEND - 1);
  assert_int_equal(c.sends_len, 0);
  assert_false(c.state_changed);   /* the same confirmation again changes nothing */
  c = confirm(core, &o, 0, 1, 0, 0, NOW + RESEND + 1);   /* an older one neither */
  assert_nodes(c.sends, c.sends_len, 6, 7);                /* ... but the resend is due */
  /* Node 6 confirms with shards left to copy: the gate holds; then with none. */
  c = confirm(core, &o, 6, 2, 3, 0, NOW + RESEND + 2);
  assert_ring(c.ring, 2, 4, 4, 7, 1);
  assert_nodes(c.waiting, c.waiting_len, 6, 7);
  c = confirm(core, &o, 6, 2, 0, 0, NOW + RESEND + 3);
  assert_ring(c.ring, 3, 7, 4, 7, 2);   /* switching: the new size serves */
  assert_nodes(c.sends, c.sends_len, 0, 7);
  assert_nodes(c.waiting, c.waiting_len, 0, 7);

  /* Switching -> leaving once all confirmed; leaving waits for the drops of the old size
   * (growing: nothing leaves, but the gate asks every old node). */
  uint64_t t = NOW + 10 * RESEND;
  c = confirm_all(core, &o, 7, 3, t);
  assert_ring(c.ring, 4, 7, 4, 7, 3);
  c = confirm(core, &o, 2, 4, 0, 1, t);
  for (uint32_t i = 0; i < 7; i++) {
    if (i != 2) c = confirm(core, &o, i, 4, 0, 0, t);
  }
  assert_ring(c.ring, 4, 7, 4, 7, 3);
  assert_nodes(c.waiting, c.waiting_len, 2, 3);
  c = confirm(core, &o, 2, 4, 0, 0, t);
  assert_ring(c.ring, 5, 7, 0, 0, 0);   /* done */
  assert_false(c.has_transition);
  assert_nodes(c.sends, c.sends_len, 0, 7);   /* the done epoch reaches every node */
  c = confirm_all(core, &o, 7, 5, t + 1);
  assert_int_equal(c.alarm, 0);
  assert_int_equal(c.sends_len, 0);
  assert_int_equal(ask(core, &o, 7, t + 2).status, 200);

  /* 7 -> 3: node 3..6 leave; the done gate waits for their drops. */
  t += 100 * RESEND;
  c = ask(core, &o, 3, t);
  assert_int_equal(c.status, 202);
  assert_ring(c.ring, 6, 7, 7, 3, 1);
  /* Joining's gate: only the new size's copies (node 5 has none to do, it leaves). */
  c = confirm(core, &o, 5, 6, 4, 0, t);
  for (uint32_t i = 0; i < 7; i++) {
    if (i != 5) c = confirm(core, &o, i, 6, 0, 0, t);
  }
  assert_ring(c.ring, 7, 3, 7, 3, 2);
  c = confirm_all(core, &o, 7, 7, t);
  assert_ring(c.ring, 8, 3, 7, 3, 3);
  for (uint32_t i = 0; i < 7; i++) c = confirm(core, &o, i, 8, 0, i >= 3 ? 10 : 0, t);
  assert_nodes(c.waiting, c.waiting_len, 3, 7);
  for (uint32_t i = 3; i < 7; i++) c = confirm(core, &o, i, 8, 0, 0, t);
  assert_ring(c.ring, 9, 3, 0, 0, 0);
  assert_nodes(c.sends, c.sends_len, 0, 7);   /* the leavers learn they are out */
  ringkv_node_destroy(core);
  tl_reset();
}

static void test_impossible_confirmations(void **unused) {
  (void)unused;
  ringkv_node *core = ringkv_node_create();
  tobj o = {{NULL, 0}, 4, 3, true};
  assert_int_equal(control(core, &o, ev()).rc, RINGKV_OK);
  tctl c = ask(core, &o, 5, NOW);
  assert_int_equal(c.status, 202);
  rk_slice before = o.state;
  assert_int_equal(confirm(core, &o, 5, 2, 0, 0, NOW).rc, RINGKV_E_VALUE);    /* never in the ring */
  assert_int_equal(confirm(core, &o, 1024, 2, 0, 0, NOW).rc, RINGKV_E_VALUE);
  assert_int_equal(confirm(core, &o, 1, 3, 0, 0, NOW).rc, RINGKV_E_VALUE);    /* a future epoch */
  assert_int_equal(confirm(core, &o, 1, 0, 0, 0, NOW).rc, RINGKV_E_VALUE);
  assert_true(rk_slice_eq(o.state, before));
  /* Malformed progress is a decode error. */
  pb_enc e = tl_enc();
  pb_put_bytes(&e, 1, o.state);
  pb_put_uint(&e, 2, 4);
  uint8_t random[48] = {0};
  pb_put_bytes(&e, 4, (rk_slice){random, sizeof random});
  uint8_t junk[] = {0x0a, 0xff};
  pb_put_bytes(&e, 8, (rk_slice){junk, sizeof junk});
  rk_slice rep;
  assert_int_equal(tl_call(core, RINGKV_OP_CONTROL, tl_done(&e), &rep), RINGKV_E_DECODE);
  /* A resize ask that is not a message (found by fuzz_request: its slice was read unset). */
  e = tl_enc();
  pb_put_bytes(&e, 1, o.state);
  pb_put_uint(&e, 2, 4);
  pb_put_bytes(&e, 4, (rk_slice){random, sizeof random});
  pb_put_uint(&e, 7, 5);
  assert_int_equal(tl_call(core, RINGKV_OP_CONTROL, tl_done(&e), &rep), RINGKV_E_DECODE);
  assert_true(rk_slice_eq(o.state, before));
  /* A clock that went back: the unconfirmed are sent the epoch again at once. */
  c = confirm(core, &o, 0, 2, 0, 0, NOW - 60000);
  assert_nodes(c.sends, c.sends_len, 1, 5);
  ringkv_node_destroy(core);
  tl_reset();
}

static void test_cluster_size_and_all(void **unused) {
  (void)unused;
  ringkv_node *core = ringkv_node_create();
  tobj o = {{NULL, 0}, 4, 3, false};
  assert_int_equal(control(core, &o, ev()).rc, RINGKV_OK);
  /* An executor that cannot carry a resize out: a changed CLUSTER_SIZE is only logged. */
  o.cluster_size = 6;
  tctl c = control(core, &o, ev());
  assert_ring(c.ring, 1, 4, 0, 0, 0);
  assert_false(c.state_changed);
  /* One that can, but a step not given what the nodes store leaves the change to the next. */
  o.resizing = true;
  o.stored_unknown = true;
  c = control(core, &o, ev());
  assert_ring(c.ring, 1, 4, 0, 0, 0);
  assert_false(c.state_changed);
  /* Given the counts: the change starts one resize, stored as applied. */
  o.stored_unknown = false;
  c = control(core, &o, ev());
  assert_ring(c.ring, 2, 4, 4, 6, 1);
  c = confirm_all(core, &o, 6, 2, NOW);
  c = confirm_all(core, &o, 6, 3, NOW);
  c = confirm_all(core, &o, 6, 4, NOW);
  assert_ring(c.ring, 5, 6, 0, 0, 0);
  /* An admin resize to 8: the unchanged variable (6) never undoes it. */
  assert_int_equal(ask(core, &o, 8, NOW).status, 202);
  c = confirm_all(core, &o, 8, 6, NOW);
  c = confirm_all(core, &o, 8, 7, NOW);
  c = confirm_all(core, &o, 8, 8, NOW);
  assert_ring(c.ring, 9, 8, 0, 0, 0);
  c = control(core, &o, ev());
  assert_ring(c.ring, 9, 8, 0, 0, 0);
  /* A value out of range for REPLICAS is stored as applied and changes nothing. */
  o.cluster_size = 2;
  c = control(core, &o, ev());
  assert_ring(c.ring, 9, 8, 0, 0, 0);
  assert_true(c.state_changed);
  c = control(core, &o, ev());
  assert_false(c.state_changed);
  /* A change while a transition is in progress waits for it to end. */
  assert_int_equal(ask(core, &o, 9, NOW).status, 202);
  o.cluster_size = 5;
  c = control(core, &o, ev());
  assert_ring(c.ring, 10, 8, 8, 9, 1);
  c = confirm_all(core, &o, 9, 10, NOW);
  c = confirm_all(core, &o, 9, 11, NOW);
  c = confirm_all(core, &o, 9, 12, NOW);
  assert_ring(c.ring, 14, 9, 9, 5, 1);   /* done (13), then the waiting change: 9 -> 5 */
  c = confirm_all(core, &o, 9, 14, NOW);
  c = confirm_all(core, &o, 9, 15, NOW);
  c = confirm_all(core, &o, 9, 16, NOW);
  assert_ring(c.ring, 17, 5, 0, 0, 0);
  /* Keys stored move with the resize: they refuse nothing. */
  o.stored_keys = 1;
  c = ask(core, &o, 6, NOW);
  assert_int_equal(c.status, 202);
  assert_ring(c.ring, 18, 5, 5, 6, 1);
  ringkv_node_destroy(core);

  /* REPLICAS = "all": any size from 1. */
  core = ringkv_node_create();
  tobj all = {{NULL, 0}, 4, 0, true};
  assert_int_equal(control(core, &all, ev()).rc, RINGKV_OK);
  assert_int_equal(ask(core, &all, 0, NOW).status, 400);
  c = ask(core, &all, 1, NOW);
  assert_int_equal(c.status, 202);
  assert_ring(c.ring, 2, 4, 4, 1, 1);
  ringkv_node_destroy(core);
  tl_reset();
}

/* A node of an older release (SPEC: Versions) cannot adopt or confirm an epoch: a POST is
 * refused (409) and a changed CLUSTER_SIZE waits, not applied, until every node of the
 * ring reports this release's version. A node not heard from yet, or one outside the ring,
 * holds nothing back here. */
static void test_older_release_holds_resizes_back(void **unused) {
  (void)unused;
  ringkv_node *core = ringkv_node_create();
  tobj o = {{NULL, 0}, 4, 3, true};
  assert_int_equal(control(core, &o, ev()).rc, RINGKV_OK);
  uint32_t versions[6] = {RINGKV_PROTOCOL_VERSION, 0, RINGKV_PROTOCOL_VERSION - 1, RINGKV_PROTOCOL_VERSION, 1, 1};
  o.versions = versions;
  o.versions_len = 6;
  tctl c = ask(core, &o, 5, NOW);
  assert_int_equal(c.status, 409);
  assert_ring(c.ring, 1, 4, 0, 0, 0);
  assert_false(c.state_changed);
  /* Node 2 is sent the ring: that starts it, and a node of this release reports at its
   * start (idle, it would not report, and the resize would wait on it). */
  assert_int_equal(c.sends_len, 1);
  assert_int_equal(c.sends[0], 2);
  /* The same size is still 200, and out of range still 400 (the 400 checks first). */
  assert_int_equal(ask(core, &o, 4, NOW).status, 200);
  assert_int_equal(ask(core, &o, 2, NOW).status, 400);
  /* CLUSTER_SIZE changed meanwhile: it waits, and is not taken as applied. */
  o.cluster_size = 6;
  c = control(core, &o, ev());
  assert_ring(c.ring, 1, 4, 0, 0, 0);
  assert_false(c.state_changed);
  assert_int_equal(c.sends_len, 1);
  assert_int_equal(c.sends[0], 2);
  /* Node 2 upgraded (nodes 4 and 5, outside the ring of 4, do not count): it applies. */
  versions[2] = RINGKV_PROTOCOL_VERSION;
  c = control(core, &o, ev());
  assert_ring(c.ring, 2, 4, 4, 6, 1);
  assert_true(c.state_changed);
  ringkv_node_destroy(core);
  tl_reset();
}

/* Autoscale inside the control step: a load above the band starts a resize (news, logged);
 * during it nothing more is decided, after it the cool-down holds; an idle cluster shrinks
 * after the shrink window; an admin size outside MIN..MAX is 400. */
static void test_autoscale_in_the_control_step(void **unused) {
  (void)unused;
  ringkv_node *core = ringkv_node_create();
  tobj o = {{NULL, 0}, 4, 3, true};
  o.as_min = 3;
  o.as_max = 8;
  o.as_rps = 10;
  assert_int_equal(control(core, &o, ev()).rc, RINGKV_OK);
  assert_int_equal(ask(core, &o, 9, NOW).status, 400);
  assert_int_equal(ask(core, &o, 2, NOW).status, 400);
  tctl c = control(core, &o, ev());
  assert_int_equal(c.as_action, RK_AS_HOLD);
  assert_false(c.as_news);   /* logged once, at the first step */
  /* 4 nodes at 20 rps (target 10): ceil(4 x 20 / 10) = 8. */
  o.as_rps = 20;
  c = control(core, &o, ev());
  assert_int_equal(c.as_action, RK_AS_GROW);
  assert_int_equal(c.as_to, 8);
  assert_true(c.as_news);
  assert_ring(c.ring, 2, 4, 4, 8, 1);
  c = control(core, &o, ev());
  assert_int_equal(c.as_action, RK_AS_TRANSITION);
  c = confirm_all(core, &o, 8, 2, NOW);
  c = confirm_all(core, &o, 8, 3, NOW);
  c = confirm_all(core, &o, 8, 4, NOW);
  assert_ring(c.ring, 5, 8, 0, 0, 0);
  /* The cool-down (2 s) after the end, then idle below the band for 5 s: shrink to MIN. */
  o.as_rps = 0;
  tev later = ev();
  c = control(core, &o, later);
  assert_int_equal(c.as_action, RK_AS_COOLDOWN);
  later.now = NOW + 2000;
  c = control(core, &o, later);
  assert_int_equal(c.as_action, RK_AS_BELOW);
  later.now = NOW + 7000;
  c = control(core, &o, later);
  assert_int_equal(c.as_action, RK_AS_SHRINK);
  assert_int_equal(c.as_to, 3);
  assert_ring(c.ring, 6, 8, 8, 3, 1);
  ringkv_node_destroy(core);
  tl_reset();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_grow_then_shrink),
      cmocka_unit_test(test_impossible_confirmations),
      cmocka_unit_test(test_cluster_size_and_all),
      cmocka_unit_test(test_older_release_holds_resizes_back),
      cmocka_unit_test(test_autoscale_in_the_control_step),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  tl_free();
  return rc;
}
