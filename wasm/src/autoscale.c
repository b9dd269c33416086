/* autoscale.c: RingControl's autoscale rule (see autoscale.h; SPEC: AUTOSCALE).
 *
 * mean = the ring's nodes' client request rates summed / N. Grow when mean > 1.25 x target;
 * shrink when mean < 0.5 x target has held for AUTOSCALE_SHRINK_SECONDS; the next size is
 * clamp(ceil(N x mean / target), MIN, MAX). One node above 1.25 x target while the mean of
 * the others is not is a hot shard (its busiest shard and that shard's share are
 * reported), never a reason to grow: more nodes would not split one shard's keys. */
#include "autoscale.h"

#include "fields.h"

/* Policy. Units last. */
#define GROW_PER_MILLE 1250u     /* grow above 1.25 x target */
#define SHRINK_PER_MILLE 500u    /* shrink below 0.5 x target */
#define LOOK_PER_WINDOW 6u       /* looks per window while nothing else is due */
#define LOOK_MS_MIN 1000u

static uint32_t clamp_size(const rk_autoscale_cfg *cfg, uint32_t least, uint64_t size) {
  uint64_t lo = RK_MAX(cfg->min, least), hi = RK_MAX(cfg->max, lo);
  return (uint32_t)RK_MIN(RK_MAX(size, lo), hi);
}

/* ceil(n x mean / target), both rates in thousandths, saturating. */
static uint64_t size_for(uint32_t n, uint64_t mean_milli, uint64_t target_rps) {
  uint64_t target_milli = RK_MAX(target_rps, 1u) * 1000u;
  if (mean_milli > (UINT64_MAX - target_milli) / RINGKV_CLUSTER_SIZE_MAX) return RINGKV_CLUSTER_SIZE_MAX;
  return ((uint64_t)n * mean_milli + target_milli - 1u) / target_milli;
}

rk_autoscale_decision rk_autoscale_decide(const rk_autoscale_cfg *cfg, rk_autoscale_state *st, const rk_ring *g,
                                          const rk_node_load *loads, size_t loads_len, uint32_t least, uint64_t now) {
  rk_autoscale_decision d;
  memset(&d, 0, sizeof d);
  d.at_ms = now;
  d.size = g->size;
  d.to = g->size;
  /* No decision during a transition; its end starts the cool-down. */
  if (g->phase != RK_PHASE_NONE) {
    st->in_transition = true;
    st->below_since_ms = 0;
    d.action = RK_AS_TRANSITION;
    return d;
  }
  if (st->in_transition) {
    st->in_transition = false;
    st->cooldown_until_ms = rk_add_sat(now, cfg->cooldown_ms);
  }
  uint32_t n = g->size;
  uint64_t sum = 0, hot_rate = 0;
  bool waiting = false;
  for (size_t i = 0; i < loads_len; i++) {
    const rk_node_load *l = &loads[i];
    if (l->node >= n) continue;
    if (!l->known) {
      waiting = true;
      continue;
    }
    d.nodes_known++;
    sum = rk_add_sat(sum, l->rate_milli);
    if (l->rate_milli > hot_rate) {
      hot_rate = l->rate_milli;
      d.hot_node = l->node;
      d.hot_shard = l->hot_shard;
      d.hot_milli = l->hot_milli;
    }
  }
  d.hot_rate_milli = hot_rate;
  d.mean_milli = n > 0 ? sum / n : 0;
  uint64_t target_milli = RK_MIN(RK_MAX(cfg->target_rps, 1u), (uint64_t)RK_AUTOSCALE_TARGET_RPS_MAX) * 1000u;
  if (now < st->cooldown_until_ms) {
    d.action = RK_AS_COOLDOWN;
    return d;
  }
  uint32_t clamped = clamp_size(cfg, least, n);
  if (clamped != n) {
    d.action = RK_AS_CLAMP;
    d.to = clamped;
    return d;
  }
  if (waiting) {
    d.action = RK_AS_WAITING;
    return d;
  }
  /* target_milli is at most RK_AUTOSCALE_TARGET_RPS_MAX x 1000: no product overflows. */
  uint64_t grow_above = target_milli * GROW_PER_MILLE / 1000u, shrink_below = target_milli * SHRINK_PER_MILLE / 1000u;
  /* Growth is judged without the busiest node: one node's load alone (a hot key, or a
   * client naming one node) must not grow the ring, since more nodes would not split one
   * shard's keys. The size still comes from the whole mean. */
  uint64_t others_milli = n > 1 ? (sum - RK_MIN(hot_rate, sum)) / (n - 1u) : d.mean_milli;
  if (d.mean_milli > grow_above && others_milli > grow_above) {
    st->below_since_ms = 0;
    d.to = clamp_size(cfg, least, size_for(n, d.mean_milli, cfg->target_rps));
    d.action = d.to > n ? RK_AS_GROW : RK_AS_HOLD;
    return d;
  }
  /* One node above the band alone: its shard is hot. */
  if (hot_rate > grow_above) {
    st->below_since_ms = 0;
    d.action = RK_AS_HOT;
    return d;
  }
  if (d.mean_milli < shrink_below) {
    if (st->below_since_ms == 0 || st->below_since_ms > now) st->below_since_ms = RK_MAX(now, 1u);
    d.below_since_ms = st->below_since_ms;
    if (now - st->below_since_ms < cfg->shrink_ms) {
      d.action = RK_AS_BELOW;
      return d;
    }
    d.to = clamp_size(cfg, least, size_for(n, d.mean_milli, cfg->target_rps));
    d.action = d.to < n ? RK_AS_SHRINK : RK_AS_HOLD;
    return d;
  }
  st->below_since_ms = 0;
  d.action = RK_AS_HOLD;
  return d;
}

bool rk_autoscale_news(const rk_autoscale_state *st, const rk_autoscale_decision *d) {
  if (!st->has_last || st->last.action != d->action) return true;
  /* A resize the rule asks for again (one the step refused: a bound, an older node) is
   * news only when its size changes; one that starts is always news (the caller's). */
  if (d->action == RK_AS_GROW || d->action == RK_AS_SHRINK || d->action == RK_AS_CLAMP) return st->last.to != d->to;
  /* A hot node moving is news; its busiest shard changing with every report is not (small
   * counts rank shards at random). */
  return d->action == RK_AS_HOT && st->last.hot_node != d->hot_node;
}

uint64_t rk_autoscale_alarm(const rk_autoscale_cfg *cfg, const rk_autoscale_state *st, uint64_t now) {
  if (!cfg->on) return 0;
  uint64_t look = RK_MAX(cfg->window_ms / LOOK_PER_WINDOW, (uint64_t)LOOK_MS_MIN);
  uint64_t at = rk_add_sat(now, look);
  if (st->below_since_ms != 0) at = RK_MIN(at, RK_MAX(rk_add_sat(st->below_since_ms, cfg->shrink_ms), now + 1u));
  if (st->cooldown_until_ms > now) at = RK_MIN(at, st->cooldown_until_ms);
  return at;
}

const char *rk_autoscale_action_name(uint32_t action) {
  static const char *const names[] = {"hold", "grow", "shrink", "clamp", "hot_shard", "transition", "cooldown",
                                      "waiting", "below"};
  return action < sizeof names / sizeof names[0] ? names[action] : "hold";
}

/* ---------------------------------------------------------------------------------------
 * Its messages (ringkv.proto Autoscale, NodeLoad, AutoscaleState, AutoscaleDecision). */

bool rk_autoscale_cfg_read(rk_slice s, rk_autoscale_cfg *c) {
  memset(c, 0, sizeof *c);
  int t_;
  bool ok = true;
  FIELDS(s) {
    case 1: ok = pb_get_u32(R, WT, &c->min); break;
    case 2: ok = pb_get_u32(R, WT, &c->max); break;
    case 3: ok = pb_get_u64(R, WT, &c->target_rps); break;
    case 4: ok = pb_get_u64(R, WT, &c->window_ms); break;
    case 5: ok = pb_get_u64(R, WT, &c->shrink_ms); break;
    case 6: ok = pb_get_u64(R, WT, &c->cooldown_ms); break;
    SKIP;
  }
  c->on = true;
  return ok && t_ >= 0 && c->min >= 1 && c->min <= c->max && c->max <= RINGKV_CLUSTER_SIZE_MAX && c->target_rps >= 1 &&
         c->target_rps <= RK_AUTOSCALE_TARGET_RPS_MAX && c->window_ms >= 1;
}

bool rk_autoscale_load_read(rk_slice s, rk_node_load *l) {
  memset(l, 0, sizeof *l);
  int t_;
  bool ok = true;
  FIELDS(s) {
    case 1: ok = pb_get_u32(R, WT, &l->node); break;
    case 2: ok = pb_get_bool(R, WT, &l->known); break;
    case 3: ok = pb_get_u64(R, WT, &l->rate_milli); break;
    case 4: ok = pb_get_u32(R, WT, &l->hot_shard); break;
    case 5: ok = pb_get_u32(R, WT, &l->hot_milli); break;
    SKIP;
  }
  return ok && t_ >= 0;
}

static bool decision_read(rk_slice s, rk_autoscale_decision *d) {
  memset(d, 0, sizeof *d);
  int t_;
  bool ok = true;
  FIELDS(s) {
    case 1: ok = pb_get_u64(R, WT, &d->at_ms); break;
    case 2: ok = pb_get_u32(R, WT, &d->action); break;
    case 3: ok = pb_get_u32(R, WT, &d->size); break;
    case 4: ok = pb_get_u32(R, WT, &d->to); break;
    case 5: ok = pb_get_u64(R, WT, &d->mean_milli); break;
    case 6: ok = pb_get_u32(R, WT, &d->nodes_known); break;
    case 7: ok = pb_get_u32(R, WT, &d->hot_node); break;
    case 8: ok = pb_get_u32(R, WT, &d->hot_shard); break;
    case 9: ok = pb_get_u32(R, WT, &d->hot_milli); break;
    case 10: ok = pb_get_u64(R, WT, &d->hot_rate_milli); break;
    case 11: ok = pb_get_u64(R, WT, &d->below_since_ms); break;
    SKIP;
  }
  return ok && t_ >= 0;
}

void rk_autoscale_decision_write(pb_enc *e, uint32_t field, const rk_autoscale_decision *d, const char *error) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, d->at_ms);
  pb_put_uint(e, 2, d->action);
  pb_put_uint(e, 3, d->size);
  pb_put_uint(e, 4, d->to);
  pb_put_uint(e, 5, d->mean_milli);
  pb_put_uint(e, 6, d->nodes_known);
  pb_put_uint(e, 7, d->hot_node);
  pb_put_uint(e, 8, d->hot_shard);
  pb_put_uint(e, 9, d->hot_milli);
  pb_put_uint(e, 10, d->hot_rate_milli);
  pb_put_uint(e, 11, d->below_since_ms);
  const char *name = rk_autoscale_action_name(d->action);
  pb_put_bytes(e, 12, (rk_slice){(const uint8_t *)name, strlen(name)});
  if (error != NULL) pb_put_bytes(e, 13, (rk_slice){(const uint8_t *)error, strlen(error)});
  pb_end(e, m);
}

bool rk_autoscale_state_read(rk_slice s, rk_autoscale_state *st) {
  memset(st, 0, sizeof *st);
  int t_;
  bool ok = true;
  rk_slice last;
  FIELDS(s) {
    case 1: ok = pb_get_u64(R, WT, &st->below_since_ms); break;
    case 2: ok = pb_get_u64(R, WT, &st->cooldown_until_ms); break;
    case 3: ok = pb_get_bool(R, WT, &st->in_transition); break;
    case 4: ok = pb_get_bytes(R, WT, &last) && decision_read(last, &st->last); st->has_last = ok; break;
    SKIP;
  }
  return ok && t_ >= 0;
}

void rk_autoscale_state_write(pb_enc *e, uint32_t field, const rk_autoscale_state *st) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, st->below_since_ms);
  pb_put_uint(e, 2, st->cooldown_until_ms);
  pb_put_bool(e, 3, st->in_transition);
  if (st->has_last) rk_autoscale_decision_write(e, 4, &st->last, NULL);
  pb_end(e, m);
}
