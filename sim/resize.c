/* resize.c: RingControl's resize in the simulator (--resize M), carried out as the control
 * object and the Durable Objects carry it out (worker/control.ts, worker/node.ts), with no
 * rule of its own: the control step (RINGKV_OP_CONTROL, the same core) decides the epochs,
 * the barrier, the gates and the re-sends; a node adopts RingControl's ring when it is sent
 * an epoch, or when a message or the Worker shows a newer one, persists it and rebuilds
 * its core on it; its start event's progress confirms an epoch it was sent, and its
 * reports carry the rest. Client writes are placed on RingControl's ring (the Worker's). */
#include "simint.h"

#include <inttypes.h>

static const uint64_t BASE_MS = UINT64_C(1700000000000);

static sim_ring ring_of(const Ringkv__Ring *r) {
  sim_ring g = {r->epoch, r->size, r->from, r->to, r->phase, r->node_ids_max};
  return g;
}

static void control_persist(sim *s, ProtobufCBinaryData state) {
  if (state.len == 0) return;
  free(s->control_state);
  s->control_state = malloc(state.len);
  CHECK_ALLOC(s->control_state);
  memcpy(s->control_state, state.data, state.len);
  s->control_state_len = state.len;
}

/* Places every key on ring `g`: its replicas taken (`take`) and added to `ever`. */
static void place_on(sim *s, const sim_ring *g, bool take) {
  const sim_opts *o = s->o;
  ProtobufCBinaryData reply;
  int code;
  ringkv_node *placer = sim_placer(s, sim_config_ring(s, g), &code, &reply);
  if (code != RINGKV_OK) {
    failf(s, "init", "a placer on ring epoch %" PRIu64 ": OP_INIT returned %d", g->epoch, code);
    ringkv_node_destroy(placer);
    return;
  }
  for (uint32_t at = 0; at < o->keys && !s->failed; at += 4096) {
    uint32_t cnt = o->keys - at < 4096 ? o->keys - at : 4096;
    rk_arena_reset(&s->ar);
    ProtobufCBinaryData *ks = rk_alloc_array(&s->ar, cnt, sizeof(*ks));
    CHECK_ALLOC(ks);
    for (uint32_t i = 0; i < cnt; i++) ks[i] = key_bytes(s, at + i);
    Ringkv__PlaceRequest rq = RINGKV__PLACE_REQUEST__INIT;
    rq.n_keys = cnt;
    rq.keys = ks;
    code = core_call(s, placer, RINGKV_OP_PLACE, &rq.base, &reply);
    Ringkv__PlaceReply *pl = code == RINGKV_OK ? ringkv__place_reply__unpack(NULL, reply.len, reply.data) : NULL;
    if (pl == NULL || pl->n_placements != cnt) {
      failf(s, "placement", "OP_PLACE on ring epoch %" PRIu64 " failed (%d)", g->epoch, code);
      if (pl) ringkv__place_reply__free_unpacked(pl, NULL);
      break;
    }
    for (uint32_t i = 0; i < cnt; i++) {
      const Ringkv__Placement *p = pl->placements[i];
      key_entry *ke = &s->keys[at + i];
      if (p->n_replicas != o->replicas || p->shard != ke->shard) {
        failf(s, "placement", "key %u on ring epoch %" PRIu64 ": %zu replicas, shard %u (was %u)", at + i, g->epoch,
              p->n_replicas, p->shard, ke->shard);
        break;
      }
      /* In place: the shard table shares these arrays. */
      if (take) memcpy(ke->replicas, p->replicas, o->replicas * sizeof(uint32_t));
      for (uint32_t j = 0; j < o->replicas; j++) ke->ever |= UINT64_C(1) << p->replicas[j];
    }
    ringkv__place_reply__free_unpacked(pl, NULL);
  }
  ringkv_node_destroy(placer);
}

void rz_place(sim *s, const sim_ring *g) {
  place_on(s, g, true);
  /* A transition's old and new replica sets may both hold rows (the phase's readers are
   * one of them). */
  if (g->phase != 0) {
    sim_ring from = {g->epoch, g->from, 0, 0, 0, g->node_ids_max};
    sim_ring to = {g->epoch, g->to, 0, 0, 0, g->node_ids_max};
    place_on(s, &from, false);
    place_on(s, &to, false);
  }
}

static void push_queue(sim *s, uint32_t node) {
  if (s->pushes_len == s->pushes_cap) {
    s->pushes_cap = s->pushes_cap ? s->pushes_cap * 2 : 64;
    s->pushes_q = realloc(s->pushes_q, s->pushes_cap * sizeof(*s->pushes_q));
    CHECK_ALLOC(s->pushes_q);
  }
  s->pushes_q[s->pushes_len].node = node;
  s->pushes_q[s->pushes_len++].lost = rnd_chance(&s->net, s->loss);
}

void rz_control(sim *s, const sim_progress *progress, uint32_t resize_to) {
  const sim_opts *o = s->o;
  uint8_t random[RINGKV_CLUSTER_ID_BYTES + RINGKV_SECRET_BYTES];
  for (size_t i = 0; i < sizeof random; i++) random[i] = (uint8_t)rnd(&s->fault);
  Ringkv__ControlRequest cr = RINGKV__CONTROL_REQUEST__INIT;
  cr.state.data = s->control_state;
  cr.state.len = s->control_state_len;
  cr.cluster_size = o->nodes;
  cr.random.data = random;
  cr.random.len = sizeof random;
  cr.now_ms = BASE_MS + s->round * o->interval_ms;
  cr.replicas = o->replicas;
  cr.resizing = true;
  cr.stored_known = true;   /* the simulated nodes store far below any bound */
  Ringkv__ResizeAsk ask = RINGKV__RESIZE_ASK__INIT;
  if (resize_to > 0) {
    ask.size = resize_to;
    cr.resize = &ask;
  }
  Ringkv__NodeProgress np = RINGKV__NODE_PROGRESS__INIT;
  if (progress != NULL && progress->given) {
    np.node = progress->node;
    np.epoch = progress->epoch;
    np.copying = progress->copying;
    np.dropping = progress->dropping;
    cr.progress = &np;
  }
  ProtobufCBinaryData raw;
  int code = core_call(s, s->control, RINGKV_OP_CONTROL, &cr.base, &raw);
  if (code != RINGKV_OK) {
    failf(s, "control", "RingControl's step returned %d (%s)", code, ringkv_code_name(code));
    return;
  }
  Ringkv__ControlReply *rep = ringkv__control_reply__unpack(NULL, raw.len, raw.data);
  if (rep == NULL || rep->view == NULL || rep->view->ring == NULL) {
    failf(s, "core_reply_decode", "RingControl's ControlReply holds no ring");
    if (rep) ringkv__control_reply__free_unpacked(rep, NULL);
    return;
  }
  if (resize_to > 0 && (rep->resize == NULL || rep->resize->status != 202))
    failf(s, "resize", "RingControl answered the resize to %u with %u", resize_to, rep->resize ? rep->resize->status : 0);
  control_persist(s, rep->state);
  sim_ring g = ring_of(rep->view->ring);
  if (g.epoch < s->ring.epoch) failf(s, "ring_epoch", "RingControl's epoch went back (%" PRIu64 " after %" PRIu64 ")", g.epoch, s->ring.epoch);
  if (g.epoch > s->ring.epoch) {
    s->ring = g;
    rz_place(s, &s->ring);
    if (g.phase == 0 && s->resize_asked_round != 0 && s->res->resize_rounds == 0)
      s->res->resize_rounds = s->round - s->resize_asked_round + 1;
  }
  s->waiting_len = 0;
  if (rep->transition != NULL)
    for (size_t i = 0; i < rep->transition->n_waiting_for && s->waiting_len < 64; i++) s->waiting[s->waiting_len++] = rep->transition->waiting_for[i];
  for (size_t i = 0; i < rep->n_send_to; i++) {
    if (rep->send_to[i] >= s->span) {
      failf(s, "send_target", "RingControl sends the ring to node %u (span %u)", rep->send_to[i], s->span);
      break;
    }
    push_queue(s, rep->send_to[i]);
  }
  ringkv__control_reply__free_unpacked(rep, NULL);
}

void rz_round(sim *s) {
  const sim_opts *o = s->o;
  uint32_t at = o->resize_round != 0 ? o->resize_round : (o->fault_rounds / 3 > 0 ? o->fault_rounds / 3 : 1);
  if (s->resize_asked_round == 0 && s->round == at) {
    s->resize_asked_round = s->round;
    rz_control(s, NULL, o->resize_to);
    return;
  }
  /* RingControl's alarm: the epoch re-sent to every node that has not confirmed it. */
  if (s->resize_asked_round != 0) rz_control(s, NULL, 0);
}

sim_progress rz_adopt(sim *s, node *n) {
  sim_progress none = {false, 0, 0, 0, 0};
  if (s->ring.epoch <= n->ring.epoch) return none;
  n->ring = s->ring;   /* persisted before the node acts on it */
  return node_init_core(s, n);
}

bool rz_deliver(sim *s) {
  size_t due = s->pushes_len;
  if (due == 0) return false;
  for (size_t i = 0; i < due && !s->failed; i++) {
    node *n = &s->nodes[s->pushes_q[i].node];
    if (s->pushes_q[i].lost) continue;   /* RingControl's alarm sends it again */
    bool newer = s->ring.epoch > n->ring.epoch;
    rk_arena_reset(&s->ar);
    sim_progress p = rz_adopt(s, n);
    if (n->core == NULL) {
      /* A node the ring no longer has confirms with nothing to copy or drop. */
      p = (sim_progress){true, n->id, n->ring.epoch, 0, 0};
    } else if (!newer) {
      /* Already on this ring: its start event says where it stands (node.ts armOnStart). */
      Ringkv__StepRequest req = RINGKV__STEP_REQUEST__INIT;
      req.start = true;
      p = sim_step(s, n, &req, (ProtobufCBinaryData){0, NULL}).progress;
    }
    /* Oracle self-test: the executor confirms an epoch as if nothing were left to copy or
     * drop (RingControl then ends the transition before the data has moved). */
    if (s->o->break_mode == SIM_BREAK_CONFIRM_EARLY) p.copying = p.dropping = 0;
    if (p.given) rz_control(s, &p, 0);
  }
  memmove(s->pushes_q, s->pushes_q + due, (s->pushes_len - due) * sizeof(*s->pushes_q));
  s->pushes_len -= due;
  return true;
}

void rz_describe(const sim *s, char *out, size_t cap) {
  size_t at = (size_t)snprintf(out, cap, "; RingControl at epoch %" PRIu64 " phase %u (waiting for:", s->ring.epoch, s->ring.phase);
  for (size_t i = 0; i < s->waiting_len && at < cap; i++) {
    const node *n = &s->nodes[s->waiting[i] < s->span ? s->waiting[i] : 0];
    uint32_t rows = 0;
    uint32_t first = 0;
    for (uint32_t k = 0; k < s->o->keys; k++)
      if (n->rows[k] != NULL && rows++ == 0) first = k;
    at += (size_t)snprintf(out + at, cap - at, " %u (%u rows, the first key %u; alarm %s)", s->waiting[i], rows, first,
                           n->alarm_ms ? "armed" : "none");
  }
  if (at < cap) at += (size_t)snprintf(out + at, cap - at, "); nodes behind:");
  for (uint32_t i = 0; i < s->span && at < cap; i++)
    if (s->nodes[i].ring.epoch != s->ring.epoch) at += (size_t)snprintf(out + at, cap - at, " %u@%" PRIu64, i, s->nodes[i].ring.epoch);
}

bool rz_done(const sim *s) {
  if (s->resize_asked_round == 0 || s->ring.phase != 0) return false;
  for (uint32_t i = 0; i < s->span; i++)
    if (s->nodes[i].ring.epoch != s->ring.epoch) return false;
  return true;
}
