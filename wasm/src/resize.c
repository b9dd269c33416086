/* resize.c: RingControl's resize decisions (see resize.h; SPEC: Resizing).
 *
 * A resize from N to M is four epochs: joining, switching, leaving, done. RingControl sends
 * each epoch to every node of old ∪ new (ids below max(N, M)) and enters the next phase
 * only once all of them have confirmed persisting the current one (the barrier), and:
 * switching only once every node of the new size reports no moving shard left to copy,
 * done only once every node of the old size reports no moving shard left to cover and drop
 * (the gates, from what the nodes report at the current epoch). A node that does not
 * confirm stalls the transition and is named in `waiting_for`; it is sent the epoch again
 * every RESEND_MS. */
#include "resize.h"

/* Policy. Units last. */
#define RESEND_MS 5000u   /* an unconfirmed node is sent the current epoch again after this */

static uint32_t span_of(const rk_ring *g) { return RK_MAX(g->from, g->to); }

static void epoch_next(rk_resize *r) {
  r->ring.epoch++;
  for (uint32_t i = 0; i < r->notify_below; i++) r->progress[i].sent_ms = 0;
}

bool rk_resize_ask(rk_resize *r, uint32_t size, const rk_resize_limits *lim, rk_resize_answer *ans) {
  rk_ring *g = &r->ring;
  uint32_t replicas = lim->replicas;
  uint32_t least = replicas == 0 ? 1u : replicas;
  if (size < least || size > RINGKV_CLUSTER_SIZE_MAX) {
    ans->status = 400;
    ans->error = replicas == 0 ? "size must be an integer in 1 … 1024 (REPLICAS = \"all\")"
                               : "size must be an integer in REPLICAS … 1024";
    return false;
  }
  if (lim->max != 0 && (size < lim->min || size > lim->max)) {
    ans->status = 400;
    ans->error = "size must be within AUTOSCALE's MIN … MAX";
    return false;
  }
  if (g->phase != RK_PHASE_NONE) {
    ans->status = size == g->to ? 202 : 409;
    ans->error = size == g->to ? NULL : "another resize is in progress";
    return false;
  }
  if (size == g->size) {
    ans->status = 200;
    ans->error = NULL;
    return false;
  }
  /* A node of an older release (a deployment still rolling out) neither adopts nor confirms
   * epochs: the transition would stall on it. It waits until every node reports this
   * release's version (a node not heard from yet is judged by the barrier instead). */
  for (uint32_t i = 0; i < g->size && i < lim->versions_len; i++) {
    uint32_t v = lim->versions[i];
    if (v != 0 && v < RINGKV_PROTOCOL_VERSION) {
      ans->status = 409;
      ans->error = "a node of the ring runs an older release (protocol version): resize once the deployment has reached every node";
      ans->later = true;
      ans->node = i;
      return false;
    }
  }
  /* The stored bytes count every replica: a node's share after is data x R / size. */
  uint32_t r_now = replicas == 0 ? g->size : replicas, r_then = replicas == 0 ? size : replicas;
  uint64_t data = lim->stored_bytes / r_now;
  if (data / size * r_then > RK_RESIZE_NODE_BYTES_MAX) {
    ans->status = 409;
    ans->error = "the resize would put more than 8 GB on a node (from the nodes' reported storage)";
    return false;
  }
  /* With REPLICAS = "all" every node of old ∪ new accepts writes for a key (SPEC: the
   * byte bound during a transition); with R replicas the configuration bounds 2R. */
  uint32_t writers = RK_MAX(size, g->size);
  if (replicas == 0 && lim->key_bytes_max > RINGKV_NODE_KEY_BYTES_MAX / writers) {
    ans->status = 409;
    ans->error = "MAX_KEY_BYTES x the nodes of the transition would exceed 32 MiB (REPLICAS = \"all\")";
    return false;
  }
  /* And the siblings their writes may leave must still merge (a node's core would refuse
   * the ring: the cluster would stop serving). */
  if (replicas == 0 && (uint64_t)RK_MAX(lim->max_siblings, 1u) * writers > RINGKV_SIBLINGS_MAX) {
    ans->status = 409;
    ans->error = "MAX_SIBLINGS x the nodes of the transition would exceed 4096 (REPLICAS = \"all\")";
    return false;
  }
  g->from = g->size;
  g->to = size;
  g->phase = RK_PHASE_JOINING;
  g->node_ids_max = RK_MAX(g->node_ids_max, size);
  /* Nodes an earlier transition left that have not confirmed its done are still told. */
  r->notify_below = RK_MAX(span_of(g), r->notify_below);
  epoch_next(r);
  ans->status = 202;
  ans->error = NULL;
  return true;
}

int rk_resize_confirm(rk_resize *r, uint32_t node, uint64_t epoch, uint32_t copying, uint32_t dropping,
                      bool *changed) {
  *changed = false;
  if (node >= r->ring.node_ids_max || epoch == 0 || epoch > r->ring.epoch) return RINGKV_E_VALUE;
  rk_progress *p = &r->progress[node];
  if (epoch < p->epoch) return RINGKV_OK;
  if (epoch == p->epoch && copying == p->copying && dropping == p->dropping) return RINGKV_OK;
  p->epoch = epoch;
  p->copying = copying;
  p->dropping = dropping;
  *changed = true;
  return RINGKV_OK;
}

/* Whether node `i` holds the transition back: it has not confirmed the current epoch, or
 * the phase's gate waits for its copying (joining, a node of the new size) or its dropping
 * (leaving, a node of the old size). */
static bool holds_back(const rk_resize *r, uint32_t i) {
  const rk_ring *g = &r->ring;
  const rk_progress *p = &r->progress[i];
  if (p->epoch < g->epoch) return true;
  if (g->phase == RK_PHASE_JOINING) return i < g->to && p->copying > 0;
  if (g->phase == RK_PHASE_LEAVING) return i < g->from && p->dropping > 0;
  return false;
}

bool rk_resize_advance(rk_resize *r) {
  rk_ring *g = &r->ring;
  bool changed = false;
  while (g->phase != RK_PHASE_NONE) {
    uint32_t span = span_of(g);
    bool held = false;
    for (uint32_t i = 0; i < span && !held; i++) held = holds_back(r, i);
    if (held) break;
    if (g->phase == RK_PHASE_JOINING) {
      g->phase = RK_PHASE_SWITCHING;
      g->size = g->to;   /* the new replicas serve reads and take writes */
    } else if (g->phase == RK_PHASE_SWITCHING) {
      g->phase = RK_PHASE_LEAVING;
    } else {
      g->phase = RK_PHASE_NONE;
      g->size = g->to;
      g->from = 0;
      g->to = 0;
    }
    epoch_next(r);
    changed = true;
  }
  return changed;
}

size_t rk_resize_waiting(const rk_resize *r, uint32_t *out) {
  if (r->ring.phase == RK_PHASE_NONE) return 0;
  size_t k = 0;
  uint32_t span = span_of(&r->ring);
  for (uint32_t i = 0; i < span; i++) {
    if (holds_back(r, i)) out[k++] = i;
  }
  return k;
}

size_t rk_resize_due(rk_resize *r, uint64_t now, uint32_t *out, uint64_t *alarm_ms) {
  size_t k = 0;
  uint64_t next = 0;
  for (uint32_t i = 0; i < r->notify_below; i++) {
    rk_progress *p = &r->progress[i];
    if (p->epoch >= r->ring.epoch) continue;
    /* Never sent, due again, or sent "later" than now (the clock went back). */
    if (p->sent_ms == 0 || now >= p->sent_ms + RESEND_MS || now < p->sent_ms) {
      out[k++] = i;
      p->sent_ms = RK_MAX(now, 1u);
    }
    uint64_t at = p->sent_ms + RESEND_MS;
    next = next == 0 ? at : RK_MIN(next, at);
  }
  *alarm_ms = next;
  return k;
}
