/* cluster.c: the simulated cluster (see sim.h): the executor of the node step at every
 * node, the client workload, rounds, faults, convergence and the oracles.
 *
 * A node is driven only through OP_INIT and OP_STEP, as the Durable Object drives it: an
 * event in (a client write, a peer's message, a Send's answer or its loss, the alarm, the
 * start), the actions out, performed in the documented order (rows, peer rows and state in
 * one transaction; `load` answered at once with `loaded`; sends; the reply; the alarm).
 * Every policy is the core's (wasm/src/step.c). OP_PLACE and OP_READ serve the workload
 * and the oracles. */
#include <inttypes.h>

#include "simint.h"

static const uint64_t BASE_MS = UINT64_C(1700000000000);

/* ---------------------------------------------------------------------------------------
 * Randomness. */
static uint64_t mix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}
uint64_t rnd(rng *r) { return mix64(&r->state); }
uint64_t rnd_below(rng *r, uint64_t n) { return n == 0 ? 0 : rnd(r) % n; }
bool rnd_chance(rng *r, double p) {
  if (p <= 0) return false;
  return (double)(rnd(r) >> 11) * (1.0 / 9007199254740992.0) < p;
}
rng rng_stream(uint64_t seed, uint64_t stream) {
  uint64_t st = seed ^ (stream * UINT64_C(0xD1B54A32D192ED03));
  rng r = {mix64(&st)};
  return r;
}

void failf(sim *s, const char *check, const char *fmt, ...) {
  if (s->failed) return;
  s->failed = true;
  s->res->ok = false;
  snprintf(s->res->failed_check, sizeof(s->res->failed_check), "%s", check);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->res->failed_detail, sizeof(s->res->failed_detail), fmt, ap);
  va_end(ap);
  fprintf(stderr, "sim: seed %" PRIu64 ": check %s failed at round %" PRIu64 ": %s\n", s->o->seed, check, s->round,
          s->res->failed_detail);
}

uint64_t now_ms(const sim *s, const node *n) {
  return (uint64_t)((int64_t)(BASE_MS + s->round * s->o->interval_ms) + n->skew_ms);
}

/* ---------------------------------------------------------------------------------------
 * Calling the core: the request packed by the generated code into the arena; the reply is
 * the node's (ringkv_call), valid only until the next call on that node, so every caller
 * unpacks it at once. */
int core_call(sim *s, ringkv_node *core, uint32_t op, const ProtobufCMessage *req, ProtobufCBinaryData *reply) {
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = rk_alloc(&s->ar, len ? len : 1);
  CHECK_ALLOC(buf);
  protobuf_c_message_pack(req, buf);
  const uint8_t *out = NULL;
  size_t out_len = 0;
  int code = ringkv_call(core, op, buf, len, &out, &out_len);
  reply->data = (uint8_t *)out;
  reply->len = out_len;
  return code;
}

static void note_clock(sim *s, node *n, uint64_t clock, uint64_t counter) {
  if (clock < n->clock)
    failf(s, "hlc_monotonic", "node %u clock went back from %" PRIu64 " to %" PRIu64, n->id, n->clock, clock);
  if (counter < n->counter)
    failf(s, "counter_monotonic", "node %u dot counter went back from %" PRIu64 " to %" PRIu64, n->id, n->counter,
          counter);
  n->clock = clock;
  n->counter = counter;
}

/* ---------------------------------------------------------------------------------------
 * The executor. One event, and the chain of `loaded` events its replies ask for. */

/* Performs one StepReply's actions but the load (rows, peer rows, state; sends; alarm). */
static void perform(sim *s, node *n, const Ringkv__StepReply *rep, ProtobufCBinaryData payload, bool after_load) {
  /* 1. One transaction: rows, peer rows, the state. */
  for (size_t i = 0; i < rep->n_rows && !s->failed; i++) {
    /* Oracle self-test: node 0's executor forgets the rows of replies to `loaded`. */
    if (s->o->break_mode == SIM_BREAK_SKIP_ROWS && after_load && n->id == 0) continue;
    store_row_write(s, n, rep->rows[i], payload);
  }
  for (size_t i = 0; i < rep->n_peers; i++) {
    const Ringkv__PeerState *p = rep->peers[i];
    if (p->peer >= s->span || p->peer == n->id) {
      failf(s, "peer_row", "node %u: a peer row for node %u", n->id, p->peer);
      return;
    }
    peer_row *pr = &n->peers[p->peer];
    pr->present = true;
    pr->acked_seq = p->acked_seq;
    pr->failures = p->failures;
    pr->retry_at_ms = p->retry_at_ms;
  }
  if (rep->state.len > 0) {
    Ringkv__StepState *st = ringkv__step_state__unpack(NULL, rep->state.len, rep->state.data);
    if (st == NULL) {
      failf(s, "core_reply_decode", "node %u: StepReply.state is not a StepState", n->id);
      return;
    }
    note_clock(s, n, st->clock, st->counter);
    ringkv__step_state__free_unpacked(st, NULL);
    free(n->state);
    n->state = malloc(rep->state.len);
    CHECK_ALLOC(n->state);
    memcpy(n->state, rep->state.data, rep->state.len);
    n->state_len = rep->state.len;
  }
  for (size_t i = 0; i < rep->n_stats; i++)
    if (strcmp(rep->stats[i]->name, "entries_applied") == 0) s->res->entries_applied += rep->stats[i]->delta;
}

/* A report to RingControl: checked as the control object would (it decodes, it is this
 * node's, its number grows), and answered later in the round. */
static void report_send(sim *s, node *n, const Ringkv__Send *sd) {
  if (sd->n_to != 1 || sd->to[0]->peer != RINGKV_PEER_CONTROL || sd->to[0]->tag == 0) {
    failf(s, "report_target", "node %u: a report not addressed to RingControl alone", n->id);
    return;
  }
  Ringkv__NodeReport *r = ringkv__node_report__unpack(NULL, sd->message.len, sd->message.data);
  if (r == NULL || r->from != n->id || r->number <= n->report_number) {
    failf(s, "report", "node %u: a report that RingControl would refuse", n->id);
    if (r) ringkv__node_report__free_unpacked(r, NULL);
    return;
  }
  n->report_number = r->number;
  s->res->reports++;
  sim_progress pr = {false, 0, 0, 0, 0};
  if (r->progress != NULL) pr = (sim_progress){true, r->progress->node, r->progress->epoch, r->progress->copying, r->progress->dropping};
  ringkv__node_report__free_unpacked(r, NULL);
  if (s->reports_len == s->reports_cap) {
    s->reports_cap = s->reports_cap ? s->reports_cap * 2 : 64;
    s->reports_q = realloc(s->reports_q, s->reports_cap * sizeof(*s->reports_q));
    CHECK_ALLOC(s->reports_q);
  }
  s->reports_q[s->reports_len].node = n->id;
  s->reports_q[s->reports_len].tag = sd->to[0]->tag;
  s->reports_q[s->reports_len].progress = pr;
  s->reports_q[s->reports_len++].epoch = n->epoch;
}

/* A lease request: RingControl's control step grants the block and persists its state at
 * once (before answering); the answer comes later in the round, or is lost. */
static void lease_send(sim *s, node *n, const Ringkv__Send *sd) {
  if (sd->n_to != 1 || sd->to[0]->peer != RINGKV_PEER_CONTROL || sd->to[0]->tag == 0) {
    failf(s, "lease_target", "node %u: a lease request not addressed to RingControl alone", n->id);
    return;
  }
  uint8_t random[RINGKV_CLUSTER_ID_BYTES + RINGKV_SECRET_BYTES];
  for (size_t i = 0; i < sizeof random; i++) random[i] = (uint8_t)rnd(&s->fault);
  Ringkv__ControlRequest cr = RINGKV__CONTROL_REQUEST__INIT;
  cr.state.data = s->control_state;
  cr.state.len = s->control_state_len;
  cr.cluster_size = s->o->nodes;
  cr.random.data = random;
  cr.random.len = sizeof random;
  cr.lease = sd->message;
  ProtobufCBinaryData raw;
  int code = core_call(s, s->control, RINGKV_OP_CONTROL, &cr.base, &raw);
  if (code != RINGKV_OK) {
    failf(s, "lease", "node %u: RingControl refused its lease request (%d: %s)", n->id, code, ringkv_code_name(code));
    return;
  }
  Ringkv__ControlReply *rep = ringkv__control_reply__unpack(NULL, raw.len, raw.data);
  if (rep == NULL || rep->lease.len == 0) {
    failf(s, "core_reply_decode", "RingControl's ControlReply holds no lease");
    if (rep) ringkv__control_reply__free_unpacked(rep, NULL);
    return;
  }
  if (rep->state.len > 0) {
    free(s->control_state);
    s->control_state = malloc(rep->state.len);
    CHECK_ALLOC(s->control_state);
    memcpy(s->control_state, rep->state.data, rep->state.len);
    s->control_state_len = rep->state.len;
  }
  if (s->leases_len == s->leases_cap) {
    s->leases_cap = s->leases_cap ? s->leases_cap * 2 : 16;
    s->leases_q = realloc(s->leases_q, s->leases_cap * sizeof(*s->leases_q));
    CHECK_ALLOC(s->leases_q);
  }
  uint8_t *body = malloc(rep->lease.len);
  CHECK_ALLOC(body);
  memcpy(body, rep->lease.data, rep->lease.len);
  s->leases_q[s->leases_len].node = n->id;
  s->leases_q[s->leases_len].tag = sd->to[0]->tag;
  s->leases_q[s->leases_len].epoch = n->epoch;
  s->leases_q[s->leases_len].body = body;
  s->leases_q[s->leases_len].len = (uint32_t)rep->lease.len;
  s->leases_q[s->leases_len++].lost = rnd_chance(&s->net, s->loss);
  ringkv__control_reply__free_unpacked(rep, NULL);
}

static void do_sends(sim *s, node *n, const Ringkv__StepReply *rep) {
  for (size_t i = 0; i < rep->n_sends && !s->failed; i++) {
    const Ringkv__Send *sd = rep->sends[i];
    if (sd->kind == RINGKV__KIND__KIND_REPORT) {
      report_send(s, n, sd);
      continue;
    }
    if (sd->kind == RINGKV__KIND__KIND_LEASE) {
      lease_send(s, n, sd);
      continue;
    }
    if ((sd->kind < RINGKV__KIND__KIND_PUSH || sd->kind > RINGKV__KIND__KIND_GC) && sd->kind != RINGKV__KIND__KIND_CATCHUP) {
      failf(s, "send_kind", "node %u: a Send of kind %u", n->id, sd->kind);
      return;
    }
    uint8_t cls = net_classify(sd->kind, sd->message);   /* once: the same bytes go to each */
    for (size_t j = 0; j < sd->n_to; j++) {
      const Ringkv__Target *t = sd->to[j];
      if (t->peer >= s->span || t->peer == n->id || t->tag == 0) {
        failf(s, "send_target", "node %u: a Send to node %u tag %u", n->id, t->peer, t->tag);
        return;
      }
      net_request(s, n, t->peer, sd->kind, cls, t->tag, sd->timeout_ms, sd->message);
    }
  }
}

/* Runs `req` (one event) at `n` and every `loaded` its chain asks for. A first step that
 * returns an error code changed nothing: its code is returned for the caller to judge; a
 * later one fails the run. */
step_result sim_step(sim *s, node *n, Ringkv__StepRequest *req, ProtobufCBinaryData payload) {
  step_result out = {0, {0, NULL}, {false, 0, 0, 0, 0}};
  bool after_load = false;
  for (uint32_t hop = 0;; hop++) {
    req->now_ms = now_ms(s, n);
    req->random = rnd(&s->step);
    ProtobufCBinaryData raw;
    int code = core_call(s, n->core, RINGKV_OP_STEP, &req->base, &raw);
    if (code != RINGKV_OK) {
      if (hop == 0) {
        out.code = code;
        return out;
      }
      failf(s, "core_error", "node %u: OP_STEP on `loaded` returned %d (%s)", n->id, code, ringkv_code_name(code));
      out.code = code;
      return out;
    }
    Ringkv__StepReply *rep = ringkv__step_reply__unpack(NULL, raw.len, raw.data);
    if (rep == NULL) {
      failf(s, "core_reply_decode", "node %u: the StepReply does not decode", n->id);
      out.code = -1;
      return out;
    }
    perform(s, n, rep, payload, after_load);
    if (rep->progress != NULL)
      out.progress = (sim_progress){true, rep->progress->node, rep->progress->epoch, rep->progress->copying, rep->progress->dropping};
    if (rep->reply.len > 0) {
      out.reply.data = rk_alloc(&s->ar, rep->reply.len);
      CHECK_ALLOC(out.reply.data);
      memcpy(out.reply.data, rep->reply.data, rep->reply.len);
      out.reply.len = rep->reply.len;
    }
    /* 2. load, answered at once; 3. sends; 5. the alarm. */
    Ringkv__Loaded *ld = rep->load != NULL && !s->failed ? store_load(s, n, rep->load) : NULL;
    do_sends(s, n, rep);
    n->alarm_ms = rep->alarm_ms;
    /* The fence is due: the node is wiped once this event is done (wipe_if_due). */
    if (rep->wipe) n->wipe_due = true;
    ringkv__step_reply__free_unpacked(rep, NULL);
    if (ld == NULL || s->failed) return out;
    if (hop > 100000) {
      failf(s, "step_chain", "node %u: a chain of more than 100000 loads", n->id);
      return out;
    }
    ringkv__step_request__init(req);
    req->loaded = ld;
    after_load = true;
  }
}

/* A step that must succeed on the simulator's well-formed input. */
static step_result run_step_ok(sim *s, node *n, Ringkv__StepRequest *req, ProtobufCBinaryData payload, const char *what) {
  step_result r = sim_step(s, n, req, payload);
  if (r.code > 0)
    failf(s, "core_error", "node %u: OP_STEP (%s) returned %d (%s)", n->id, what, r.code, ringkv_code_name(r.code));
  return r;
}

/* The core said wipe (a fence due): done at once, as the Durable Object does after the
 * step, once the oracle has checked that every acknowledged write it holds is elsewhere. */
static bool wipe_safe(sim *s, node *n);
static void node_wipe(sim *s, node *n);
static bool wipe_if_due(sim *s, node *n) {
  if (!n->wipe_due || s->failed) return false;
  n->wipe_due = false;
  n->fencing = false;
  if (!wipe_safe(s, n)) {
    failf(s, "fence_lost_write", "node %u: the core said wipe while it held an acknowledged write no other replica has", n->id);
    return true;
  }
  s->res->fences++;
  node_wipe(s, n);
  return true;
}

static void fire_alarm(sim *s, node *n) {
  Ringkv__StepRequest req = RINGKV__STEP_REQUEST__INIT;
  req.alarm = true;
  n->alarm_ms = 0;
  s->cause = "round";
  run_step_ok(s, n, &req, (ProtobufCBinaryData){0, NULL}, "alarm");
  wipe_if_due(s, n);
}

static bool o_resizing(const sim *s) { return s->o->resize_to != 0; }

static void deliver(sim *s, event *e) {
  node *to = &s->nodes[e->to];
  ProtobufCBinaryData body = {e->len, e->body};
  Ringkv__StepRequest req = RINGKV__STEP_REQUEST__INIT;
  if (e->kind == EV_MSG) {
    /* A message showing a newer ring: the receiver takes RingControl's first. */
    if (e->ring_epoch > to->ring.epoch) rz_adopt(s, to);
    if (to->core == NULL) {
      net_refuse(s, e);   /* a node outside its ring serves nothing */
      return;
    }
    Ringkv__Incoming in = RINGKV__INCOMING__INIT;
    in.kind = e->msg_kind;
    in.message = body;
    req.message = &in;
    s->cause = e->cls == CLS_REPAIR ? "repair request" : e->cls == CLS_GC ? "gc query" : "gossip push";
    step_result r = sim_step(s, to, &req, body);
    /* A node catching up answers a collection query 503 (the Durable Object's answer to
     * E_CATCHING_UP): no answer leg; the requester hears of a failure. */
    if (r.code == RINGKV_E_CATCHING_UP && e->msg_kind == RINGKV__KIND__KIND_GC) return;
    /* Sent on an older ring than the receiver's (a copy across an epoch): what no longer
     * fits the receiver's ring is refused (421, or 400 for shards or a sender its ring
     * does not share), and the sender takes the ring the answer shows. On one ring an
     * honest peer is never refused. */
    if (o_resizing(s) && (r.code == RINGKV_E_NOT_SERVING || r.code == RINGKV_E_DECODE) && e->ring_epoch < to->ring.epoch) {
      net_refuse(s, e);
      if (to->ring.epoch > s->nodes[e->from].ring.epoch) rz_adopt(s, &s->nodes[e->from]);
      return;
    }
    if (r.code > 0)
      failf(s, "core_error", "node %u: OP_STEP (message kind %u from node %u, ring epochs %" PRIu64 " -> %" PRIu64 ") returned %d (%s)",
            to->id, e->msg_kind, e->from, e->ring_epoch, to->ring.epoch, r.code, ringkv_code_name(r.code));
    if (r.code == 0 && !s->failed) net_answer(s, e, r.reply);
    wipe_if_due(s, to);
    return;
  }
  if (!net_requester_live(s, e)) return;
  Ringkv__Answer an = RINGKV__ANSWER__INIT;
  an.tag = e->tag;
  an.answered = e->kind == EV_ANSWER;
  if (an.answered) an.message = body;
  req.answer = &an;
  s->cause = e->cls == CLS_REPAIR ? "repair answer" : "answer";
  run_step_ok(s, to, &req, an.answered ? body : (ProtobufCBinaryData){0, NULL}, "answer");
  wipe_if_due(s, to);
  /* An answer from a node on a newer ring: taken after the answer (it was to this ring). */
  if (an.answered && e->ring_epoch > to->ring.epoch) rz_adopt(s, to);
}

/* ---------------------------------------------------------------------------------------
 * Node lifecycle: OP_INIT from what is persisted, then the start event. */
static Ringkv__Config sim_config(const sim *s);
Ringkv__Config sim_config_ring(const sim *s, const sim_ring *g) {
  Ringkv__Config c = sim_config(s);
  if (s->o->resize_to == 0) return c;
  c.cluster_size = ring_span(g);
  c.node_ids_max = g->node_ids_max;
  c.ring_phase = g->phase;
  c.ring_from = g->phase == 0 ? 0 : g->from;
  c.ring_to = g->phase == 0 ? 0 : g->to;
  c.ring_epoch = g->epoch;
  return c;
}

static Ringkv__Config sim_config(const sim *s) {
  const sim_opts *o = s->o;
  Ringkv__Config c = RINGKV__CONFIG__INIT;
  c.cluster_size = o->nodes;
  c.replicas = o->replicas;
  c.shards = o->shards;
  c.max_clock_skew_ms = o->max_clock_skew_ms;
  c.tombstone_grace_ms = o->tombstone_grace_ms;
  c.fanout = o->fanout;
  c.gossip_interval_ms = o->interval_ms;
  c.reports = true;
  c.leases = true;
  /* As a deployment must: up to 2 x replicas writers' siblings and bytes of one key stay
   * within the core's bounds (full replication at 1024 nodes: 16 KiB, 2 siblings). */
  uint64_t accepting = RK_MIN(2u * (uint64_t)o->replicas, RINGKV_CLUSTER_SIZE_MAX);
  c.key_bytes_max = RK_MIN(RINGKV_KEY_BYTES_DEFAULT, RINGKV_NODE_KEY_BYTES_MAX / accepting);
  c.max_siblings = (uint32_t)RK_MIN(o->max_siblings, RINGKV_SIBLINGS_MAX / accepting);
  return c;
}

sim_progress node_init_core(sim *s, node *n) {
  const sim_opts *o = s->o;
  sim_progress none = {false, 0, 0, 0, 0};
  if (n->core) ringkv_node_destroy(n->core);
  n->core = NULL;
  n->epoch++;
  if (o->resize_to != 0 && n->id >= ring_span(&n->ring)) {
    n->alarm_ms = 0;   /* a node its ring does not have: no core, no alarm */
    return none;
  }
  n->core = ringkv_node_create();
  CHECK_ALLOC(n->core);
  Ringkv__Config cfg = sim_config_ring(s, &n->ring);
  Ringkv__NodeState ns = RINGKV__NODE_STATE__INIT;
  ns.node = n->id;
  Ringkv__InitRequest in = RINGKV__INIT_REQUEST__INIT;
  in.config = &cfg;
  in.node = &ns;
  in.shards = rk_alloc_array(&s->ar, o->shards, sizeof(*in.shards));
  CHECK_ALLOC(in.shards);
  for (uint32_t sh = 0; sh < o->shards; sh++) {
    if (n->shard_digest[sh] == 0 && n->shard_keys[sh] == 0) continue;
    Ringkv__ShardDigest *d = rk_alloc(&s->ar, sizeof(*d));
    CHECK_ALLOC(d);
    ringkv__shard_digest__init(d);
    d->shard = sh;
    d->digest = n->shard_digest[sh];
    d->keys = n->shard_keys[sh];
    in.shards[in.n_shards++] = d;
  }
  in.state.data = n->state;
  in.state.len = n->state_len;
  in.peers = rk_alloc_array(&s->ar, s->span, sizeof(*in.peers));
  CHECK_ALLOC(in.peers);
  for (uint32_t p = 0; p < s->span; p++) {
    if (!n->peers[p].present) continue;
    Ringkv__PeerState *ps = rk_alloc(&s->ar, sizeof(*ps));
    CHECK_ALLOC(ps);
    ringkv__peer_state__init(ps);
    ps->peer = p;
    ps->acked_seq = n->peers[p].acked_seq;
    ps->failures = n->peers[p].failures;
    ps->retry_at_ms = n->peers[p].retry_at_ms;
    in.peers[in.n_peers++] = ps;
  }
  ProtobufCBinaryData reply;
  int code = core_call(s, n->core, RINGKV_OP_INIT, &in.base, &reply);
  if (code != RINGKV_OK) {
    Ringkv__InitReply *ir = ringkv__init_reply__unpack(NULL, reply.len, reply.data);
    failf(s, "init", "node %u OP_INIT returned %d: %s", n->id, code, ir ? ir->error : "?");
    if (ir) ringkv__init_reply__free_unpacked(ir, NULL);
    return none;
  }
  Ringkv__StepRequest req = RINGKV__STEP_REQUEST__INIT;
  req.start = true;
  return run_step_ok(s, n, &req, (ProtobufCBinaryData){0, NULL}, "start").progress;
}

static void node_restart(sim *s, node *n) {
  s->res->restarts++;
  if (s->o->skew) n->skew_ms = (int64_t)rnd_below(&s->fault, 2 * s->o->skew_ms_max + 1) - (int64_t)s->o->skew_ms_max;
  node_init_core(s, n);
}

/* The fence: every table of the node wiped, and it starts again with no state. Its clock
 * may start lower (a new life), but no dot it makes from now on may lie at or below one it
 * made before (checked at every acknowledged write). */
static void node_wipe(sim *s, node *n) {
  const sim_opts *o = s->o;
  s->res->wipes++;
  for (uint32_t k = 0; k < o->keys; k++) {
    row_free(n->rows[k]);
    n->rows[k] = NULL;
  }
  memset(n->shard_digest, 0, o->shards * sizeof(*n->shard_digest));
  memset(n->shard_keys, 0, o->shards * sizeof(*n->shard_keys));
  n->log_len = 0;
  memset(n->peers, 0, s->span * sizeof(*n->peers));
  free(n->state);
  n->state = NULL;
  n->state_len = 0;
  n->alarm_ms = 0;
  n->dots_below = RK_MAX(n->dots_below, n->counter);
  if (n->wiped_best == NULL) {
    n->wiped_best = malloc(o->keys * sizeof(*n->wiped_best));
    CHECK_ALLOC(n->wiped_best);
  }
  for (uint32_t k = 0; k < o->keys; k++) {
    n->wiped_best[k] = s->keys[k].best;
    if (!s->keys[k].acked) n->wiped_best[k].dot.node = UINT32_MAX;
  }
  n->clock = 0;
  n->counter = 0;
  node_init_core(s, n);
}

/* Whether the acknowledged write that is each of this node's keys' best is held by another
 * replica too, whichever node accepted it (so a wipe loses no acknowledged write: what the
 * core's fence waits for before it says wipe). */
static Ringkv__ReadReply *read_key(sim *s, node *n, uint32_t k);
static bool wipe_safe(sim *s, node *n) {
  for (uint32_t x = 0; x < n->keys_len; x++) {
    uint32_t k = n->keys[x];
    const key_entry *ke = &s->keys[k];
    /* A key it holds nothing of is lost by no wipe; a lost delete is the resurrection
     * oracle's (the key comes back only where another replica kept the old value). */
    if (!ke->acked || ke->best.deleted || n->rows[k] == NULL) continue;
    bool held = false;
    for (uint32_t j = 0; j < s->o->replicas && !held; j++) {
      node *r = &s->nodes[ke->replicas[j]];
      if (r == n || r->rows[k] == NULL) continue;
      Ringkv__ReadReply *rd = read_key(s, r, k);
      if (rd == NULL) return false;
      for (size_t i = 0; i < rd->n_siblings; i++) {
        const Ringkv__Dot *d = rd->siblings[i]->dot;
        if (d != NULL && d->node == ke->best.dot.node && d->counter == ke->best.dot.counter) held = true;
      }
      ringkv__read_reply__free_unpacked(rd, NULL);
    }
    if (!held) return false;
  }
  return true;
}

/* ---------------------------------------------------------------------------------------
 * Client writes. */
static void gen_value(uint64_t seed, uint8_t *out, uint32_t len) {
  uint64_t st = seed;
  for (uint32_t i = 0; i < len; i += 8) {
    uint64_t x = mix64(&st);
    for (uint32_t j = 0; j < 8 && i + j < len; j++) out[i + j] = (uint8_t)('a' + (x >> (8 * j)) % 26);
  }
}

/* The encoded size of Entry{key, register with values} of a row: what an optimal protocol
 * sends to each other replica. */
static size_t entry_bytes(sim *s, const row *r, uint32_t k) {
  Ringkv__Register *reg = ringkv__register__unpack(NULL, r->meta_len, r->meta);
  if (reg == NULL) return 0;
  for (size_t i = 0; i < reg->n_siblings; i++) {
    Ringkv__Sibling *sb = reg->siblings[i];
    for (uint32_t j = 0; j < r->values_len && sb->dot; j++) {
      if (r->values[j].dot.node == sb->dot->node && r->values[j].dot.counter == sb->dot->counter) {
        sb->value.data = r->values[j].bytes;
        sb->value.len = r->values[j].len;
      }
    }
  }
  Ringkv__Entry e = RINGKV__ENTRY__INIT;
  e.key = key_bytes(s, k);
  e.register_ = reg;
  size_t len = ringkv__entry__get_packed_size(&e);
  for (size_t i = 0; i < reg->n_siblings; i++) {
    reg->siblings[i]->value.data = NULL;   /* borrowed: not for free_unpacked */
    reg->siblings[i]->value.len = 0;
  }
  ringkv__register__free_unpacked(reg, NULL);
  return len;
}

/* OP_READ at `n` (for a context token, and for the oracles); NULL on an error. */
/* The rejoin oracle: a node whose storage was wiped serves a client read of a key only
 * once it holds a state at least as new as the key's best acknowledged write at the wipe
 * (OP_CLIENT_READ refuses until it has caught up on the shard). */
static void check_rejoined(sim *s) {
  for (uint32_t i = 0; i < s->o->nodes && !s->failed; i++) {
    node *n = &s->nodes[i];
    if (n->wiped_best == NULL) continue;
    for (uint32_t x = 0; x < n->keys_len && !s->failed; x++) {
      uint32_t k = n->keys[x];
      const ack *was = &n->wiped_best[k];
      /* A delete's key may be collected later: only live writes are followed. */
      if (was->dot.node == UINT32_MAX || was->deleted || s->keys[k].best.deleted) continue;
      rk_arena_reset(&s->ar);
      Ringkv__ReadRequest rq = RINGKV__READ_REQUEST__INIT;
      rq.key = key_bytes(s, k);
      if (n->rows[k]) {
        rq.meta.data = n->rows[k]->meta;
        rq.meta.len = n->rows[k]->meta_len;
      }
      ProtobufCBinaryData reply;
      int code = core_call(s, n->core, RINGKV_OP_CLIENT_READ, &rq.base, &reply);
      if (code == RINGKV_E_CATCHING_UP || code == RINGKV_E_LEASE) continue;
      if (code != RINGKV_OK) {
        failf(s, "core_error", "node %u OP_CLIENT_READ key %u returned %d", n->id, k, code);
        return;
      }
      Ringkv__ReadReply *rd = ringkv__read_reply__unpack(NULL, reply.len, reply.data);
      bool newer = false;
      if (rd != NULL && rd->found && rd->winner >= 0 && (size_t)rd->winner < rd->n_siblings) {
        const Ringkv__Sibling *w = rd->siblings[rd->winner];
        newer = w->dot != NULL && (w->hlc > was->hlc || (w->hlc == was->hlc && w->dot->node >= was->dot.node));
      }
      /* A collection marker: a delete that superseded the write was collected (every
       * replica agreed on it), a state newer than the write. */
      if (rd != NULL && n->rows[k] != NULL && rd->n_siblings == 0) newer = true;
      if (rd) ringkv__read_reply__free_unpacked(rd, NULL);
      if (!newer) {
        failf(s, "rejoin_stale_read",
              "node %u serves key %u after its wipe with a state older than the write acknowledged before it (hlc %" PRIu64 ")",
              n->id, k, was->hlc);
        return;
      }
      /* Served once with everything from before: the check is done for this key. */
      n->wiped_best[k].dot.node = UINT32_MAX;
    }
  }
}

static Ringkv__ReadReply *read_key(sim *s, node *n, uint32_t k) {
  rz_adopt(s, n);
  Ringkv__ReadRequest rq = RINGKV__READ_REQUEST__INIT;
  rq.key = key_bytes(s, k);
  if (n->rows[k]) {
    rq.meta.data = n->rows[k]->meta;
    rq.meta.len = n->rows[k]->meta_len;
  }
  ProtobufCBinaryData reply;
  int code = core_call(s, n->core, RINGKV_OP_READ, &rq.base, &reply);
  if (code != RINGKV_OK) {
    failf(s, "core_error", "node %u OP_READ key %u returned %d (%s)", n->id, k, code, ringkv_code_name(code));
    return NULL;
  }
  Ringkv__ReadReply *rd = ringkv__read_reply__unpack(NULL, reply.len, reply.data);
  if (rd == NULL) failf(s, "core_reply_decode", "node %u: ReadReply does not decode", n->id);
  return rd;
}

static void record_ack(sim *s, uint32_t k, const Ringkv__WriteReply *w, bool deleted, uint64_t value_hash) {
  key_entry *ke = &s->keys[k];
  ack a = {w->hlc, {w->dot->node, w->dot->counter}, deleted, value_hash};
  if (!ke->acked || a.hlc > ke->best.hlc || (a.hlc == ke->best.hlc && a.dot.node > ke->best.dot.node)) ke->best = a;
  ke->acked = true;
  s->res->acked_writes++;
}

static bool refused_here(int code) {
  return code == RINGKV_E_LEASE || code == RINGKV_E_CATCHING_UP || code == RINGKV_E_FENCING;
}

static void client_write(sim *s, uint64_t write_index) {
  const sim_opts *o = s->o;
  uint32_t k;
  if (o->fresh_keys) {
    if (s->keys_used >= o->keys) return;
    k = s->keys_used++;
  } else {
    k = (uint32_t)rnd_below(&s->work, o->keys);
  }
  key_entry *ke = &s->keys[k];
  uint32_t first = (uint32_t)rnd_below(&s->work, o->replicas);
  node *n = &s->nodes[ke->replicas[first]];
  /* The Worker places by RingControl's ring; its request shows that ring to the node. */
  rz_adopt(s, n);
  bool deleted = ke->acked && rnd_chance(&s->work, o->delete_ratio);
  bool with_context = ke->acked && rnd_chance(&s->work, o->context_ratio);
  uint32_t vlen = deleted ? 0 : o->value_bytes;
  uint8_t *value = rk_alloc(&s->ar, vlen + 1);
  CHECK_ALLOC(value);
  gen_value(s->o->seed ^ (write_index * UINT64_C(0x9E3779B97F4A7C15)), value, vlen);
  static const char *content_types[] = {"text/plain", "application/octet-stream", ""};
  const char *ct = deleted ? "" : content_types[rnd_below(&s->work, 3)];

  Ringkv__WriteRequest w = RINGKV__WRITE_REQUEST__INIT;
  Ringkv__ReadReply *rd = NULL;
  if (with_context) {
    /* The client read the key at some replica first (perhaps another one). */
    node *rn = &s->nodes[ke->replicas[rnd_below(&s->work, o->replicas)]];
    rd = read_key(s, rn, k);
    if (rd == NULL) return;
    if (rd->found) {
      w.has_token = true;
      w.token = rd->token;
    }
  }
  w.key = key_bytes(s, k);
  Ringkv__Local *l = store_local(s, n, k, false, true);   /* the row, with its values' sizes */
  w.meta = l->meta;
  w.expired = l->expired;
  if (w.has_token) {
    w.n_sizes = l->n_sizes;
    w.sizes = l->sizes;
  }
  w.value.data = value;
  w.value.len = vlen;
  w.content_type.data = (uint8_t *)ct;
  w.content_type.len = strlen(ct);
  w.deleted = deleted;
  Ringkv__StepRequest req = RINGKV__STEP_REQUEST__INIT;
  req.write = &w;
  s->cause = deleted ? "client delete" : w.has_token ? "client context write" : "client write";
  step_result r = sim_step(s, n, &req, w.value);
  /* A replica with no dot lease yet, catching up on the key's shard or being fenced
   * refuses it: the Worker asks the key's next replica (with that one's row). */
  for (uint32_t hop = 1; hop < o->replicas && refused_here(r.code); hop++) {
    n = &s->nodes[ke->replicas[(first + hop) % o->replicas]];
    rz_adopt(s, n);
    l = store_local(s, n, k, false, true);
    w.meta = l->meta;
    w.expired = l->expired;
    w.n_sizes = w.has_token ? l->n_sizes : 0;
    w.sizes = w.has_token ? l->sizes : NULL;
    ringkv__step_request__init(&req);
    req.write = &w;
    r = sim_step(s, n, &req, w.value);
  }
  if (refused_here(r.code)) {
    if (rd) ringkv__read_reply__free_unpacked(rd, NULL);
    s->res->rejected_writes++;
    return;
  }
  if (rd) ringkv__read_reply__free_unpacked(rd, NULL);
  if (r.code == RINGKV_E_SIBLINGS || r.code == RINGKV_E_SKEW || r.code == RINGKV_E_KEY_BYTES) {
    s->res->rejected_writes++;
    return;
  }
  if (r.code != 0) {
    if (r.code > 0)
      failf(s, "core_error", "node %u OP_STEP write key %u returned %d (%s)", n->id, k, r.code, ringkv_code_name(r.code));
    return;
  }
  if (s->failed) return;
  Ringkv__WriteReply *wr = ringkv__write_reply__unpack(NULL, r.reply.len, r.reply.data);
  if (wr == NULL || wr->dot == NULL) {
    failf(s, "core_reply_decode", "node %u: the write's reply is not a WriteReply", n->id);
    if (wr) ringkv__write_reply__free_unpacked(wr, NULL);
    return;
  }
  if (wr->node != NULL) note_clock(s, n, wr->node->clock, wr->node->counter);
  if (wr->shard != ke->shard)
    failf(s, "placement", "node %u key %u: WriteReply.shard %u, placement says %u", n->id, k, wr->shard, ke->shard);
  if (wr->dot->node != n->id) failf(s, "write_dot", "node %u wrote dot of node %u", n->id, wr->dot->node);
  if (wr->dot->counter <= n->dots_below)
    failf(s, "dot_reused", "node %u: dot %" PRIu64 " after its storage was wiped, at or below %" PRIu64 " of its earlier life",
          n->id, wr->dot->counter, n->dots_below);
  const row *rw = n->rows[k];
  if (rw == NULL || rw->meta_len != wr->meta.len || memcmp(rw->meta, wr->meta.data, wr->meta.len) != 0)
    failf(s, "write_row", "node %u key %u: the row written differs from WriteReply.meta", n->id, k);
  record_ack(s, k, wr, deleted, deleted ? 0 : ringkv_hash(value, vlen));
  ringkv__write_reply__free_unpacked(wr, NULL);
  if (rw != NULL) {
    s->entry_bytes_sum += (double)entry_bytes(s, rw, k);
    s->entry_count++;
  }
}

/* ---------------------------------------------------------------------------------------
 * Set-up: placement of the key universe, the shard table (by probing keys), the nodes. */
static void place_keys(sim *s, ringkv_node *placer, const ProtobufCBinaryData *keys, size_t n, uint32_t *shard,
                       uint32_t **replicas, uint64_t *key_hash) {
  for (size_t at = 0; at < n; at += 4096) {
    size_t cnt = n - at < 4096 ? n - at : 4096;
    rk_arena_reset(&s->ar);
    Ringkv__PlaceRequest rq = RINGKV__PLACE_REQUEST__INIT;
    rq.n_keys = cnt;
    rq.keys = (ProtobufCBinaryData *)(keys + at);
    ProtobufCBinaryData reply;
    int code = core_call(s, placer, RINGKV_OP_PLACE, &rq.base, &reply);
    Ringkv__PlaceReply *pl = code == RINGKV_OK ? ringkv__place_reply__unpack(NULL, reply.len, reply.data) : NULL;
    if (pl == NULL || pl->n_placements != cnt) {
      fprintf(stderr, "sim: OP_PLACE failed (%d)\n", code);
      exit(2);
    }
    for (size_t i = 0; i < cnt; i++) {
      const Ringkv__Placement *p = pl->placements[i];
      if (p->n_replicas != s->o->replicas || p->shard >= s->o->shards) {
        fprintf(stderr, "sim: OP_PLACE gave %zu replicas / shard %u\n", p->n_replicas, p->shard);
        exit(2);
      }
      shard[at + i] = p->shard;
      if (key_hash) key_hash[at + i] = p->key_hash;
      replicas[at + i] = malloc(p->n_replicas * sizeof(uint32_t));
      CHECK_ALLOC(replicas[at + i]);
      memcpy(replicas[at + i], p->replicas, p->n_replicas * sizeof(uint32_t));
    }
    ringkv__place_reply__free_unpacked(pl, NULL);
  }
}

ringkv_node *sim_placer(sim *s, Ringkv__Config cfg, int *code, ProtobufCBinaryData *reply) {
  ringkv_node *placer = ringkv_node_create();
  CHECK_ALLOC(placer);
  Ringkv__NodeState ns = RINGKV__NODE_STATE__INIT;
  Ringkv__InitRequest in = RINGKV__INIT_REQUEST__INIT;
  in.config = &cfg;
  in.node = &ns;
  *code = core_call(s, placer, RINGKV_OP_INIT, &in.base, reply);
  return placer;
}

static void setup(sim *s) {
  const sim_opts *o = s->o;
  ringkv_node *placer;
  {
    ProtobufCBinaryData reply;
    int code;
    placer = sim_placer(s, sim_config(s), &code, &reply);
    if (code != RINGKV_OK) {
      Ringkv__InitReply *ir = ringkv__init_reply__unpack(NULL, reply.len, reply.data);
      fprintf(stderr, "sim: OP_INIT refused the configuration (%d): %s\n", code, ir ? ir->error : "?");
      exit(2);
    }
  }

  /* The key universe. */
  s->keys = calloc(o->keys, sizeof(*s->keys));
  CHECK_ALLOC(s->keys);
  ProtobufCBinaryData *ks = malloc(o->keys * sizeof(*ks));
  uint32_t *shard = malloc(o->keys * sizeof(*shard));
  uint32_t **reps = malloc(o->keys * sizeof(*reps));
  uint64_t *hashes = malloc(o->keys * sizeof(*hashes));
  CHECK_ALLOC(ks);
  CHECK_ALLOC(shard);
  CHECK_ALLOC(reps);
  CHECK_ALLOC(hashes);
  for (uint32_t k = 0; k < o->keys; k++) {
    char buf[64];
    /* Keys with slashes and varying lengths, as clients use them. */
    int len = snprintf(buf, sizeof(buf), "%s/%u", (k % 3 == 0) ? "user" : (k % 3 == 1) ? "doc/v1" : "k", k);
    s->keys[k].bytes = malloc((size_t)len);
    CHECK_ALLOC(s->keys[k].bytes);
    memcpy(s->keys[k].bytes, buf, (size_t)len);
    s->keys[k].len = (uint32_t)len;
    ks[k] = key_bytes(s, k);
  }
  place_keys(s, placer, ks, o->keys, shard, reps, hashes);
  uint32_t map_size = 1;
  while (map_size < 2 * o->keys + 2) map_size *= 2;
  s->key_map = calloc(map_size, sizeof(uint32_t));
  CHECK_ALLOC(s->key_map);
  s->key_map_mask = map_size - 1;
  for (uint32_t k = 0; k < o->keys; k++) {
    s->keys[k].shard = shard[k];
    s->keys[k].replicas = reps[k];
    if (ringkv_hash(s->keys[k].bytes, s->keys[k].len) != hashes[k]) {
      fprintf(stderr, "sim: Placement.key_hash differs from xxh3-64 of the key\n");
      exit(2);
    }
    key_insert(s, k);
  }
  free(ks);
  free(shard);
  free(reps);
  free(hashes);

  /* The shard table: probe keys until every shard was hit (or give up at 64 per shard). */
  s->shard_replicas = calloc(o->shards, sizeof(*s->shard_replicas));
  CHECK_ALLOC(s->shard_replicas);
  for (uint32_t k = 0; k < o->keys; k++) {
    uint32_t sh = s->keys[k].shard;
    if (s->shard_replicas[sh] == NULL) s->shard_replicas[sh] = s->keys[k].replicas;
  }
  uint32_t missing = 0;
  for (uint32_t sh = 0; sh < o->shards; sh++) missing += s->shard_replicas[sh] == NULL;
  uint64_t probe = 0;
  const uint32_t batch = 4096;
  char (*names)[32] = malloc(batch * sizeof(*names));
  ProtobufCBinaryData *pk = malloc(batch * sizeof(*pk));
  uint32_t *psh = malloc(batch * sizeof(*psh));
  uint32_t **prep = malloc(batch * sizeof(*prep));
  CHECK_ALLOC(names);
  CHECK_ALLOC(pk);
  CHECK_ALLOC(psh);
  CHECK_ALLOC(prep);
  while (missing > 0 && probe < (uint64_t)o->shards * 64) {
    for (uint32_t i = 0; i < batch; i++) {
      int len = snprintf(names[i], sizeof(names[i]), "probe/%" PRIu64, probe + i);
      pk[i].data = (uint8_t *)names[i];
      pk[i].len = (size_t)len;
    }
    probe += batch;
    place_keys(s, placer, pk, batch, psh, prep, NULL);
    for (uint32_t i = 0; i < batch; i++) {
      if (s->shard_replicas[psh[i]] == NULL) {
        s->shard_replicas[psh[i]] = prep[i];
        missing--;
      } else {
        free(prep[i]);
      }
    }
  }
  free(names);
  free(pk);
  free(psh);
  free(prep);
  ringkv_node_destroy(placer);

  /* Keys by shard (CSR). */
  s->shard_keys_start = calloc(o->shards + 1, sizeof(uint32_t));
  s->shard_keys = malloc((o->keys + 1) * sizeof(uint32_t));
  CHECK_ALLOC(s->shard_keys_start);
  CHECK_ALLOC(s->shard_keys);
  for (uint32_t k = 0; k < o->keys; k++) s->shard_keys_start[s->keys[k].shard + 1]++;
  for (uint32_t sh = 0; sh < o->shards; sh++) s->shard_keys_start[sh + 1] += s->shard_keys_start[sh];
  uint32_t *fill = calloc(o->shards, sizeof(uint32_t));
  CHECK_ALLOC(fill);
  for (uint32_t k = 0; k < o->keys; k++) {
    uint32_t sh = s->keys[k].shard;
    s->shard_keys[s->shard_keys_start[sh] + fill[sh]++] = k;
  }
  free(fill);

  /* The control object (dot leases). */
  s->control = ringkv_node_create();
  CHECK_ALLOC(s->control);

  /* Nodes. */
  s->nodes = calloc(s->span, sizeof(*s->nodes));
  CHECK_ALLOC(s->nodes);
  uint32_t *cnt = calloc(s->span, sizeof(uint32_t));
  CHECK_ALLOC(cnt);
  for (uint32_t k = 0; k < o->keys; k++)
    for (uint32_t j = 0; j < o->replicas; j++) cnt[s->keys[k].replicas[j]]++;
  /* A resize moves keys between nodes: every node's tables may hold any key. */
  if (o->resize_to != 0)
    for (uint32_t i = 0; i < s->span; i++) cnt[i] = o->keys;
  for (uint32_t i = 0; i < s->span; i++) {
    node *n = &s->nodes[i];
    n->id = i;
    n->shard_digest = calloc(o->shards, sizeof(uint64_t));
    n->shard_keys = calloc(o->shards, sizeof(uint32_t));
    CHECK_ALLOC(n->shard_keys);
    n->rows = calloc(o->keys, sizeof(row *));
    n->peers = calloc(s->span, sizeof(peer_row));
    n->ring = s->ring;
    n->keys = malloc((cnt[i] + 1) * sizeof(uint32_t));
    CHECK_ALLOC(n->shard_digest);
    CHECK_ALLOC(n->rows);
    CHECK_ALLOC(n->peers);
    CHECK_ALLOC(n->keys);
    if (o->skew) n->skew_ms = (int64_t)rnd_below(&s->fault, 2 * o->skew_ms_max + 1) - (int64_t)o->skew_ms_max;
  }
  free(cnt);
  for (uint32_t k = 0; k < o->keys; k++) {
    if (o->resize_to != 0) {
      for (uint32_t i = 0; i < s->span; i++) s->nodes[i].keys[s->nodes[i].keys_len++] = k;
      for (uint32_t j = 0; j < o->replicas; j++) s->keys[k].ever |= UINT64_C(1) << s->keys[k].replicas[j];
      continue;
    }
    for (uint32_t j = 0; j < o->replicas; j++) {
      node *n = &s->nodes[s->keys[k].replicas[j]];
      n->keys[n->keys_len++] = k;
    }
  }
  for (uint32_t i = 0; i < s->span && !s->failed; i++) {
    rk_arena_reset(&s->ar);
    node_init_core(s, &s->nodes[i]);
  }
  s->tmp_digest = calloc(o->shards, sizeof(uint64_t));
  CHECK_ALLOC(s->tmp_digest);
  s->tmp_rows = calloc(o->shards, sizeof(uint32_t));
  CHECK_ALLOC(s->tmp_rows);
}

/* ---------------------------------------------------------------------------------------
 * Convergence: every node's persisted shard digests must equal the sum of its rows'
 * contributions (the core maintains them incrementally), and every shard's replicas must
 * hold equal digests. */
static void describe_shard(sim *s, uint32_t sh) {
  const sim_opts *o = s->o;
  uint32_t *r = s->shard_replicas[sh];
  fprintf(stderr, "  shard %u differs:", sh);
  for (uint32_t x = 0; x < o->replicas; x++)
    fprintf(stderr, " n%u=%016" PRIx64 "(alarm +%" PRId64 " ms)", r[x], s->nodes[r[x]].shard_digest[sh],
            s->nodes[r[x]].alarm_ms ? (int64_t)(s->nodes[r[x]].alarm_ms - now_ms(s, &s->nodes[r[x]])) : -1);
  fprintf(stderr, "\n");
  for (uint32_t q = s->shard_keys_start[sh]; q < s->shard_keys_start[sh + 1]; q++) {
    uint32_t k = s->shard_keys[q];
    for (uint32_t x = 0; x < o->replicas; x++) {
      const node *nx = &s->nodes[r[x]];
      const row *rw = nx->rows[k];
      fprintf(stderr, "    key %u n%u: ", k, r[x]);
      if (rw == NULL) fprintf(stderr, "absent");
      else
        fprintf(stderr, "seq %" PRIu64 " client %d digest %016" PRIx64 " expired %d all_deleted %d sibs %u", rw->seq,
                rw->from_client, rw->info.digest, rw->info.expired, rw->info.all_deleted, rw->info.siblings);
      fprintf(stderr, " | acks");
      for (uint32_t y = 0; y < o->replicas; y++)
        if (y != x) fprintf(stderr, " ->n%u:%" PRIu64 "(failures %u)", r[y], nx->peers[r[y]].acked_seq, nx->peers[r[y]].failures);
      fprintf(stderr, "\n");
    }
  }
}

static bool converged(sim *s) {
  const sim_opts *o = s->o;
  for (uint32_t i = 0; i < s->span && !s->failed; i++) {
    node *n = &s->nodes[i];
    memset(s->tmp_digest, 0, o->shards * sizeof(uint64_t));
    memset(s->tmp_rows, 0, o->shards * sizeof(uint32_t));
    for (uint32_t j = 0; j < n->keys_len; j++) {
      row *r = n->rows[n->keys[j]];
      if (r == NULL) continue;
      s->tmp_rows[s->keys[n->keys[j]].shard]++;
      if (!r->info.expired) s->tmp_digest[s->keys[n->keys[j]].shard] += r->info.digest;
    }
    for (uint32_t sh = 0; sh < o->shards; sh++) {
      if (s->tmp_digest[sh] != n->shard_digest[sh]) {
        failf(s, "digests_consistent", "node %u shard %u: persisted digest %016" PRIx64 ", sum of its rows %016" PRIx64,
              n->id, sh, n->shard_digest[sh], s->tmp_digest[sh]);
        return false;
      }
      if (s->tmp_rows[sh] != n->shard_keys[sh]) {
        failf(s, "shard_keys_consistent", "node %u shard %u: the core counts %u key rows, it holds %u", n->id, sh,
              n->shard_keys[sh], s->tmp_rows[sh]);
        return false;
      }
    }
  }
  uint32_t differing = 0;
  for (uint32_t sh = 0; sh < o->shards && (differing == 0 || o->verbose); sh++) {
    uint32_t *r = s->shard_replicas[sh];
    if (r == NULL) continue;
    for (uint32_t j = 1; j < o->replicas; j++)
      if (s->nodes[r[j]].shard_digest[sh] != s->nodes[r[0]].shard_digest[sh]) {
        differing++;
        if (o->verbose && differing <= 3) describe_shard(s, sh);
        break;
      }
  }
  if (o->verbose)
    fprintf(stderr, "round %" PRIu64 ": %u shards differ, %" PRIu64 " bytes, %zu events in flight\n", s->round,
            differing, s->bytes_this_round, s->heap_len);
  /* A resize asked must have ended at every node of old ∪ new. */
  return differing == 0 && (o->resize_to == 0 || rz_done(s));
}

/* The first key whose replicas differ, described for the failure report. */
static void describe_divergence(sim *s, char *out, size_t cap) {
  const sim_opts *o = s->o;
  snprintf(out, cap, "no differing key found");
  for (uint32_t k = 0; k < o->keys; k++) {
    const key_entry *ke = &s->keys[k];
    uint64_t d0 = 0;
    bool differs = false;
    for (uint32_t j = 0; j < o->replicas; j++) {
      const row *r = s->nodes[ke->replicas[j]].rows[k];
      uint64_t d = (r && !r->info.expired) ? r->info.digest : 0;
      if (j == 0) d0 = d;
      else if (d != d0) differs = true;
    }
    if (!differs) continue;
    size_t at = (size_t)snprintf(out, cap, "key %u (shard %u):", k, ke->shard);
    for (uint32_t j = 0; j < o->replicas && at < cap; j++) {
      const row *r = s->nodes[ke->replicas[j]].rows[k];
      at += (size_t)snprintf(out + at, cap - at, " node %u %s", ke->replicas[j],
                             r == NULL              ? "absent"
                             : r->info.siblings == 0 ? "a collection marker"
                             : r->info.all_deleted  ? "tombstones"
                             : r->info.siblings > 1 ? "live siblings"
                                                    : "live");
      if (r && at < cap)
        at += (size_t)snprintf(out + at, cap - at, " (winner %u@%" PRIu64 ")", r->info.winner_node, r->info.winner_hlc);
    }
    return;
  }
}

/* ---------------------------------------------------------------------------------------
 * The oracles after the heal. */
static void check_key_at(sim *s, uint32_t k, node *n, const ack *best) {
  row *r = n->rows[k];
  Ringkv__ReadReply *rd = read_key(s, n, k);
  if (rd == NULL) return;
  if (!rd->found || rd->winner < 0 || (size_t)rd->winner >= rd->n_siblings || rd->siblings[rd->winner]->dot == NULL) {
    failf(s, "read", "key %u node %u: a stored row reads as not found", k, n->id);
    ringkv__read_reply__free_unpacked(rd, NULL);
    return;
  }
  const Ringkv__Sibling *w = rd->siblings[rd->winner];
  if (best == NULL) {
    failf(s, "no_lost_write", "key %u node %u holds a state no client wrote", k, n->id);
  } else if (w->hlc != best->hlc || w->dot->node != best->dot.node || w->dot->counter != best->dot.counter ||
             (bool)w->deleted != best->deleted) {
    failf(s, "no_lost_write",
          "key %u node %u: winner (hlc %" PRIu64 ", dot %u:%" PRIu64 "%s), highest acknowledged write "
          "(hlc %" PRIu64 ", dot %u:%" PRIu64 "%s)",
          k, n->id, w->hlc, w->dot->node, w->dot->counter, w->deleted ? ", delete" : "", best->hlc, best->dot.node,
          best->dot.counter, best->deleted ? ", delete" : "");
  } else {
    if (r->info.winner_hlc != w->hlc || r->info.winner_node != w->dot->node || r->info.live == (bool)w->deleted)
      failf(s, "key_info", "key %u node %u: KeyInfo's winner differs from OP_READ's", k, n->id);
    /* Every live sibling has its value row, with the bytes its hash names. */
    for (size_t i = 0; i < rd->n_siblings && !s->failed; i++) {
      const Ringkv__Sibling *sb = rd->siblings[i];
      if (sb->deleted || sb->dot == NULL) continue;
      const stored_value *v = NULL;
      for (uint32_t x = 0; x < r->values_len; x++)
        if (r->values[x].dot.node == sb->dot->node && r->values[x].dot.counter == sb->dot->counter) v = &r->values[x];
      if (v == NULL)
        failf(s, "values_present", "key %u node %u: no value row for sibling %u:%" PRIu64, k, n->id, sb->dot->node,
              sb->dot->counter);
      else if (ringkv_hash(v->bytes, v->len) != sb->value_hash)
        failf(s, "values_present", "key %u node %u: value of %u:%" PRIu64 " does not match its hash", k, n->id,
              sb->dot->node, sb->dot->counter);
    }
    if (!best->deleted && w->value_hash != best->value_hash)
      failf(s, "no_lost_write", "key %u node %u: the winner's value is not the acknowledged one", k, n->id);
    if (r->values_len > rd->n_siblings)
      failf(s, "values_orphaned", "key %u node %u: %u value rows for %zu siblings", k, n->id, r->values_len,
            rd->n_siblings);
  }
  ringkv__read_reply__free_unpacked(rd, NULL);
}

static void run_round(sim *s, uint64_t *write_next, uint32_t *order);

/* Rows whose versions are all tombstones, at any node. */
static uint32_t tombstone_rows(const sim *s, uint32_t *key_out, uint32_t *node_out) {
  uint32_t count = 0;
  for (uint32_t i = 0; i < s->o->nodes; i++) {
    const node *n = &s->nodes[i];
    for (uint32_t j = 0; j < n->keys_len; j++) {
      const row *r = n->rows[n->keys[j]];
      if (r == NULL || !r->info.all_deleted || r->info.siblings == 0) continue;
      if (count++ == 0) {
        *key_out = n->keys[j];
        *node_out = n->id;
      }
    }
  }
  return count;
}

/* Oracle "collected": with every replica up and nothing written, every tombstone is
 * collected within a few graces of the last change (a key no pass comes back to would
 * stay for good: digests agree, so nothing else wakes it). */
static void check_collected(sim *s, uint64_t *write_next, uint32_t *order) {
  uint64_t grace_rounds = (s->o->tombstone_grace_ms + s->o->interval_ms - 1) / s->o->interval_ms;
  uint64_t limit = s->round + 4u * grace_rounds + 60u;
  uint32_t key = 0, at = 0;
  for (; s->round < limit && !s->failed; s->round++) {
    if (tombstone_rows(s, &key, &at) == 0) return;
    run_round(s, write_next, order);
  }
  uint32_t left = tombstone_rows(s, &key, &at);
  if (left > 0 && !s->failed)
    failf(s, "collected", "%u tombstone rows left %" PRIu64 " rounds after converging (key %u at node %u)", left,
          4u * grace_rounds + 60u, key, at);
}

static void check_oracles(sim *s) {
  const sim_opts *o = s->o;
  for (uint32_t k = 0; k < o->keys && !s->failed; k++) {
    key_entry *ke = &s->keys[k];
    const ack *best = ke->acked ? &ke->best : NULL;
    const row *first = NULL;
    uint32_t first_node = 0;
    bool any_live = false;
    for (uint32_t j = 0; j < o->replicas; j++) {
      const row *r = s->nodes[ke->replicas[j]].rows[k];
      if (r && r->info.siblings > 0) any_live = true;
    }
    for (uint32_t j = 0; j < o->replicas && !s->failed; j++) {
      node *n = &s->nodes[ke->replicas[j]];
      row *r = n->rows[k];
      s->res->checks_run++;
      if (any_live && (r == NULL || r->info.siblings == 0)) {
        failf(s, "replicas_identical", "key %u: node %u holds %s while another replica holds a live state", k, n->id,
              r ? "a collection marker" : "nothing");
        return;
      }
      if (r == NULL || r->info.siblings == 0) {
        if (best != NULL && !best->deleted) {
          failf(s, "no_lost_write",
                "key %u: node %u holds %s, but the highest acknowledged write is a PUT (hlc %" PRIu64 ", node %u)", k,
                n->id, r ? "a collection marker" : "nothing", best->hlc, best->dot.node);
          return;
        }
        continue;   /* nothing, or a marker: nothing to read */
      } else if (first == NULL) {
        first = r;
        first_node = n->id;
      } else if (first->meta_len != r->meta_len || memcmp(first->meta, r->meta, r->meta_len) != 0) {
        failf(s, "replicas_identical", "key %u: nodes %u and %u hold different metadata (%u vs %u bytes)", k, first_node,
              n->id, first->meta_len, r->meta_len);
        return;
      }
      rk_arena_reset(&s->ar);
      check_key_at(s, k, n, best);
    }
  }
  /* The live count the core keeps (StepState.live_keys) is the count of live rows. */
  for (uint32_t i = 0; i < s->span && !s->failed; i++) {
    node *n = &s->nodes[i];
    Ringkv__StepState *st = ringkv__step_state__unpack(NULL, n->state_len, n->state);
    if (st == NULL) continue;
    uint64_t live = 0;
    for (uint32_t x = 0; x < n->keys_len; x++) {
      const row *r = n->rows[n->keys[x]];
      if (r && r->info.live) live++;
    }
    if (st->report_state != 0 && st->live_keys != live)
      failf(s, "live_keys", "node %u: the core counts %" PRIu64 " live keys, its rows hold %" PRIu64, n->id, st->live_keys, live);
    ringkv__step_state__free_unpacked(st, NULL);
  }
  /* Nothing stored where it does not belong: after a resize, on the final ring (the old-only
   * replicas dropped what they covered; nodes outside it hold nothing). */
  s->strict_placement = true;
  for (uint32_t i = 0; i < s->span && !s->failed; i++)
    for (uint32_t k = 0; k < o->keys; k++)
      if (s->nodes[i].rows[k] && !is_replica(s, k, i)) {
        failf(s, "placement", "node %u stores key %u it does not replicate", i, k);
        break;
      }
}

/* ---------------------------------------------------------------------------------------
 * Faults and rounds. */
/* Whether some node is being fenced: the operator fences one node at a time (README,
 * "Replacing a node's storage"), and no disk is lost during a fence here. A drain counts
 * on its peers' acknowledgements, which a peer's wipe would take with it; a node still
 * catching up keeps what it acknowledges, so rejoins may overlap a fence. */
static bool any_fencing(const sim *s) {
  for (uint32_t i = 0; i < s->o->nodes; i++)
    if (s->nodes[i].fencing || s->nodes[i].wipe_due) return true;
  return false;
}

static void faults(sim *s) {
  const sim_opts *o = s->o;
  if (o->partitions) {
    if (s->partitioned && s->round >= s->partition_end) {
      s->partitioned = false;
    } else if (!s->partitioned && rnd_chance(&s->fault, 0.08)) {
      s->partitioned = true;
      s->partition_end = s->round + 2 + rnd_below(&s->fault, o->partition_rounds_max > 2 ? o->partition_rounds_max - 1 : 1);
      for (uint32_t i = 0; i < s->span; i++) s->nodes[i].side = (uint8_t)rnd_below(&s->fault, 2);
      s->res->partitions++;
    }
  }
  if (o->restarts) {
    for (uint32_t i = 0; i < s->span && !s->failed; i++)
      if (rnd_chance(&s->fault, 0.02) && s->nodes[i].core != NULL) {
        rk_arena_reset(&s->ar);
        node_restart(s, &s->nodes[i]);
      }
  }
  /* Not in the first round: a node's reports are numbered from its clock at a start with no
   * state, and the simulated clock does not move within a round. */
  if (o->wipes && s->round > 0) {
    for (uint32_t i = 0; i < o->nodes && !s->failed; i++) {
      node *n = &s->nodes[i];
      rk_arena_reset(&s->ar);
      if (wipe_if_due(s, n)) continue;
      if (n->fencing || !rnd_chance(&s->fault, 0.05)) continue;
      if (any_fencing(s)) continue;
      /* Its storage lost (the disk, not the admin): only when what it holds is elsewhere
       * (what only a wiped node held is lost by any protocol). */
      if (rnd_chance(&s->fault, 0.3)) {
        if (wipe_safe(s, n)) node_wipe(s, n);
        continue;
      }
      /* The admin fence, through the core: it says when the wipe may come (every peer
       * holds what this node does); the lost-write oracle checks that it waited. */
      n->fencing = true;
      Ringkv__StepRequest req = RINGKV__STEP_REQUEST__INIT;
      req.fence = 1;
      s->cause = "fence";
      step_result r = sim_step(s, n, &req, (ProtobufCBinaryData){0, NULL});
      /* With one replica per key a fence without force is refused (the 409): nothing. */
      if (r.code == RINGKV_E_VALUE && o->replicas < 2) {
        n->fencing = false;
        continue;
      }
      if (r.code > 0) failf(s, "core_error", "node %u: OP_STEP (fence) returned %d (%s)", n->id, r.code, ringkv_code_name(r.code));
      wipe_if_due(s, n);
    }
  }
}

static void record_series(sim *s) {
  sim_result *r = s->res;
  if (r->series_len >= s->o->series_rounds) return;
  uint32_t i = r->series_len++;
  r->series_bytes[i] = s->bytes_this_round;
  uint32_t mn = UINT32_MAX, mx = 0;
  uint64_t sum = 0;
  for (uint32_t j = 0; j < s->o->nodes; j++) {
    node *n = &s->nodes[j];
    uint32_t live = 0;
    for (uint32_t x = 0; x < n->keys_len; x++) {
      row *rw = n->rows[n->keys[x]];
      if (rw && rw->info.live) live++;
    }
    mn = live < mn ? live : mn;
    mx = live > mx ? live : mx;
    sum += live;
  }
  r->series_keys_min[i] = mn;
  r->series_keys_max[i] = mx;
  r->series_keys_mean[i] = (double)sum / s->o->nodes;
}

/* One round (one gossip interval): faults, client writes, then until nothing is left this
 * round: every network leg due (answers with no latency arrive within the round; a loss
 * reported at this round's time comes before the alarm of the same instant), and the
 * alarms whose time has come (nodes in a seeded order). */
static void run_round(sim *s, uint64_t *write_next, uint32_t *order) {
  const sim_opts *o = s->o;
  s->bytes_this_round = 0;
  if (!s->healed) faults(s);
  if (!s->healed && o->hostile) hostile_round(s);
  if (o->resize_to != 0) rz_round(s);
  uint64_t writes_until = (uint64_t)o->writes * (s->round + 1) / (o->fault_rounds ? o->fault_rounds : 1);
  if (writes_until > o->writes) writes_until = o->writes;
  while (*write_next < writes_until && !s->failed) {
    rk_arena_reset(&s->ar);
    client_write(s, (*write_next)++);
  }
  for (uint32_t i = s->span; i > 1; i--) {
    uint32_t j = (uint32_t)rnd_below(&s->net, i);
    uint32_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
  for (bool busy = true; busy && !s->failed;) {
    busy = false;
    event *e;
    while (!s->failed && (e = net_next(s)) != NULL) {
      rk_arena_reset(&s->ar);
      deliver(s, e);
      ev_free(e);
      busy = true;
    }
    /* The control object's answers (an instance restarted since forgets its report). */
    size_t due = s->reports_len;
    for (size_t i = 0; i < due && !s->failed; i++) {
      node *n = &s->nodes[s->reports_q[i].node];
      if (n->epoch != s->reports_q[i].epoch) continue;
      /* RingControl takes the report's confirmation of the node's ring. */
      if (o->resize_to != 0 && s->reports_q[i].progress.given) rz_control(s, &s->reports_q[i].progress, 0);
      Ringkv__StepRequest req = RINGKV__STEP_REQUEST__INIT;
      Ringkv__Answer an = RINGKV__ANSWER__INIT;
      an.tag = s->reports_q[i].tag;
      an.answered = true;
      req.answer = &an;
      s->cause = "report answer";
      rk_arena_reset(&s->ar);
      run_step_ok(s, n, &req, (ProtobufCBinaryData){0, NULL}, "report answer");
      busy = true;
    }
    memmove(s->reports_q, s->reports_q + due, (s->reports_len - due) * sizeof(*s->reports_q));
    s->reports_len -= due;
    due = s->leases_len;
    for (size_t i = 0; i < due && !s->failed; i++) {
      node *n = &s->nodes[s->leases_q[i].node];
      ProtobufCBinaryData body = {s->leases_q[i].len, s->leases_q[i].body};
      if (n->epoch == s->leases_q[i].epoch) {
        Ringkv__StepRequest req = RINGKV__STEP_REQUEST__INIT;
        Ringkv__Answer an = RINGKV__ANSWER__INIT;
        an.tag = s->leases_q[i].tag;
        an.answered = !s->leases_q[i].lost;
        if (an.answered) an.message = body;
        req.answer = &an;
        s->cause = "lease answer";
        rk_arena_reset(&s->ar);
        run_step_ok(s, n, &req, an.answered ? body : (ProtobufCBinaryData){0, NULL}, "lease answer");
        busy = true;
      }
      free(s->leases_q[i].body);
    }
    memmove(s->leases_q, s->leases_q + due, (s->leases_len - due) * sizeof(*s->leases_q));
    s->leases_len -= due;
    if (o->resize_to != 0 && rz_deliver(s)) busy = true;
    for (uint32_t i = 0; i < s->span && !s->failed; i++) {
      node *n = &s->nodes[order[i]];
      if (n->core == NULL || n->alarm_ms == 0 || now_ms(s, n) < n->alarm_ms) continue;
      rk_arena_reset(&s->ar);
      fire_alarm(s, n);
      busy = true;
    }
  }
  if (o->wipes && !s->failed) check_rejoined(s);
}

bool sim_run(const sim_opts *o, sim_result *res) {
  memset(res, 0, sizeof(*res));
  res->ok = true;
  res->rounds_to_converge = -1;
  res->rounds_after_heal = -1;
  sim *s = calloc(1, sizeof(*s));
  CHECK_ALLOC(s);
  s->o = o;
  s->res = res;
  rk_arena_init(&s->ar);
  s->net = rng_stream(o->seed, 1);
  s->work = rng_stream(o->seed, 2);
  s->fault = rng_stream(o->seed, 3);
  s->step = rng_stream(o->seed, 4);
  s->loss = o->loss;
  s->dup = o->dup;
  s->delay = o->delay;
  if (o->series_rounds) {
    res->series_bytes = calloc(o->series_rounds, sizeof(uint64_t));
    res->series_keys_min = calloc(o->series_rounds, sizeof(uint32_t));
    res->series_keys_max = calloc(o->series_rounds, sizeof(uint32_t));
    res->series_keys_mean = calloc(o->series_rounds, sizeof(double));
  }
  s->span = o->resize_to > o->nodes ? o->resize_to : o->nodes;
  s->ring = (sim_ring){1, o->nodes, 0, 0, 0, o->nodes};
  setup(s);
  uint32_t *order = malloc(s->span * sizeof(uint32_t));
  CHECK_ALLOC(order);
  for (uint32_t i = 0; i < s->span; i++) order[i] = i;

  uint64_t write_next = 0;
  uint64_t last_write_round = 0;
  uint64_t heal_round = o->fault_rounds;
  bool seen_converged = false;
  uint64_t settle_left = o->settle_rounds;
  uint64_t limit = heal_round + o->rounds_max;
  for (s->round = 0; s->round < limit && !s->failed; s->round++) {
    if (s->round == heal_round) {
      s->healed = true;
      s->partitioned = false;
      s->loss = o->heal_loss;
      s->dup = 0;
      s->delay = 0;
    }
    uint64_t before = write_next;
    run_round(s, &write_next, order);
    if (write_next > before) last_write_round = s->round;
    if (o->series_rounds) record_series(s);
    if (s->failed) break;
    if (write_next < o->writes) continue;
    bool conv = converged(s);
    if (s->failed) break;
    if (conv && !seen_converged) {
      seen_converged = true;
      res->rounds_to_converge = (int64_t)(s->round - last_write_round + 1);
      res->bytes_to_converge = res->bytes;
      res->converge_bytes_push = res->bytes_push;
      res->converge_bytes_ae = res->bytes_ae;
      res->converge_bytes_repair = res->bytes_repair;
      res->converge_messages = res->messages;
    }
    if (!s->healed) continue;
    if (res->rounds_after_heal < 0 && conv) res->rounds_after_heal = (int64_t)(s->round - heal_round + 1);
    if (!seen_converged) continue;
    if (settle_left > 0) {
      settle_left--;
      res->idle_bytes_per_round = s->bytes_this_round;
      continue;
    }
    /* A fence still draining is waited for (its wipe and rejoin come after). */
    if (o->wipes && any_fencing(s)) continue;
    if (conv && s->late_in_flight == 0 && (o->series_rounds == 0 || s->round + 1 >= o->series_rounds)) break;
  }
  res->rounds_total = s->round + (s->failed ? 0 : 1);
  if (!s->failed) {
    bool conv = converged(s);
    if (!s->failed && (!conv || !seen_converged)) {
      char why[320];
      describe_divergence(s, why, sizeof(why));
      if (o->resize_to != 0) rz_describe(s, why + strlen(why), sizeof(why) - strlen(why));
      failf(s, "converged", "not converged %" PRIu64 " rounds after the heal (rounds_max %u); %s", s->round - heal_round,
            o->rounds_max, why);
    }
  }
  res->ring_epoch = s->ring.epoch;
  for (uint32_t i = 0; i < o->nodes && !s->failed; i++) {
    if (s->nodes[i].fencing) failf(s, "fence_stalled", "node %u: its fence never became due (rounds_max %u)", i, o->rounds_max);
  }
  if (!s->failed && o->collect_check) check_collected(s, &write_next, order);
  if (!s->failed) check_oracles(s);

  res->entry_bytes_mean = s->entry_count ? s->entry_bytes_sum / (double)s->entry_count : 0;
  res->optimum_bytes_per_update = (double)(o->replicas - 1) * res->entry_bytes_mean;
  uint64_t bytes = res->bytes_to_converge ? res->bytes_to_converge : res->bytes;
  res->bytes_per_update = res->acked_writes ? (double)bytes / (double)res->acked_writes : 0;
  res->ratio = res->optimum_bytes_per_update > 0 ? res->bytes_per_update / res->optimum_bytes_per_update : 0;

  /* Tear down. */
  net_free(s);
  for (uint32_t i = 0; i < s->span; i++) {
    node *n = &s->nodes[i];
    ringkv_node_destroy(n->core);
    for (uint32_t k = 0; k < o->keys; k++) row_free(n->rows[k]);
    free(n->rows);
    free(n->shard_digest);
    free(n->shard_keys);
    free(n->log_seq);
    free(n->log_key);
    free(n->peers);
    free(n->state);
    free(n->keys);
    free(n->wiped_best);
  }
  free(s->nodes);
  /* Shard replica arrays are shared with keys or owned by probes; free each once. */
  for (uint32_t sh = 0; sh < o->shards; sh++) {
    uint32_t *r = s->shard_replicas[sh];
    if (r == NULL) continue;
    bool from_key = false;
    for (uint32_t j = s->shard_keys_start[sh]; j < s->shard_keys_start[sh + 1]; j++)
      if (s->keys[s->shard_keys[j]].replicas == r) from_key = true;
    if (!from_key) free(r);
  }
  for (uint32_t k = 0; k < o->keys; k++) {
    free(s->keys[k].bytes);
    free(s->keys[k].replicas);
  }
  free(s->keys);
  free(s->key_map);
  free(s->shard_replicas);
  free(s->shard_keys_start);
  free(s->shard_keys);
  free(s->tmp_digest);
  free(s->tmp_rows);
  free(s->reports_q);
  for (size_t i = 0; i < s->leases_len; i++) free(s->leases_q[i].body);
  free(s->leases_q);
  free(s->pushes_q);
  free(s->control_state);
  ringkv_node_destroy(s->control);
  free(order);
  rk_arena_free(&s->ar);
  free(s);
  return res->ok;
}

void sim_result_free(sim_result *r) {
  free(r->series_bytes);
  free(r->series_keys_min);
  free(r->series_keys_max);
  free(r->series_keys_mean);
}
