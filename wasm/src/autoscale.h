/* autoscale.h: RingControl's autoscale rule (SPEC: AUTOSCALE), part of its control step
 * (control.c): from the nodes' measured client request rates, grow, shrink, hold, or report
 * a hot shard; never during a transition or its cool-down. Pure: no I/O, its state is
 * part of ControlState. */
#ifndef RINGKV_AUTOSCALE_H
#define RINGKV_AUTOSCALE_H

#include "pb.h"
#include "resize.h"

/* AUTOSCALE_TARGET_RPS is at most this (the configuration refuses more). */
#define RK_AUTOSCALE_TARGET_RPS_MAX 1000000u

/* AUTOSCALE = "MIN-MAX" and its settings (ControlRequest.autoscale). */
typedef struct {
  bool on;
  uint32_t min, max;
  uint64_t target_rps;
  uint64_t window_ms, shrink_ms, cooldown_ms;
} rk_autoscale_cfg;

/* One node's measured load (ControlRequest.loads; rates in requests per 1000 s). */
typedef struct {
  uint32_t node;
  bool known;
  uint64_t rate_milli;
  uint32_t hot_shard, hot_milli;
} rk_node_load;

enum {
  RK_AS_HOLD = 0,        /* inside the band */
  RK_AS_GROW = 1,
  RK_AS_SHRINK = 2,
  RK_AS_CLAMP = 3,       /* the size is outside MIN..MAX */
  RK_AS_HOT = 4,         /* one node above the band alone: a hot shard, no resize */
  RK_AS_TRANSITION = 5,  /* a resize is in progress */
  RK_AS_COOLDOWN = 6,
  RK_AS_WAITING = 7,     /* not every node's rate is measured yet */
  RK_AS_BELOW = 8,       /* below the band, not for long enough yet */
};

/* A decision and its inputs (ringkv.proto AutoscaleDecision). */
typedef struct {
  uint64_t at_ms;
  uint32_t action;       /* RK_AS_* */
  uint32_t size, to;     /* the size it saw; the size it asked for (grow, shrink, clamp) */
  uint64_t mean_milli;   /* the mean rate per node of the ring */
  uint32_t nodes_known;
  uint32_t hot_node, hot_shard, hot_milli;
  uint64_t hot_rate_milli;
  uint64_t below_since_ms;
} rk_autoscale_decision;

/* Persisted in ControlState.autoscale. */
typedef struct {
  uint64_t below_since_ms;   /* the mean went below 0.5 x target then (0: it is not) */
  uint64_t cooldown_until_ms;
  bool in_transition;        /* the last step saw one (its end starts the cool-down) */
  rk_autoscale_decision last;   /* the last decision logged */
  bool has_last;
} rk_autoscale_state;

/* The decision at `now` on ring `g` from `loads` (any order; nodes outside the ring are
 * ignored, a node of the ring without a load counts as idle). `least` is the smallest
 * size REPLICAS allows. Updates `st` (the window below the band, the cool-down). */
rk_autoscale_decision rk_autoscale_decide(const rk_autoscale_cfg *cfg, rk_autoscale_state *st, const rk_ring *g,
                                          const rk_node_load *loads, size_t loads_len, uint32_t least, uint64_t now);

/* Whether `d` is to be logged (and kept as the last decision): a resize asked, or another
 * action (or another hot node) than the last one logged. */
bool rk_autoscale_news(const rk_autoscale_state *st, const rk_autoscale_decision *d);

/* When the rule wants to look again (0: never, autoscale off). */
uint64_t rk_autoscale_alarm(const rk_autoscale_cfg *cfg, const rk_autoscale_state *st, uint64_t now);

const char *rk_autoscale_action_name(uint32_t action);

/* The messages: false when one does not decode or (cfg) holds an impossible setting. */
bool rk_autoscale_cfg_read(rk_slice s, rk_autoscale_cfg *c);
bool rk_autoscale_load_read(rk_slice s, rk_node_load *l);
bool rk_autoscale_state_read(rk_slice s, rk_autoscale_state *st);
void rk_autoscale_state_write(pb_enc *e, uint32_t field, const rk_autoscale_state *st);
/* `error`: why the resize it asked for was refused (NULL: none). */
void rk_autoscale_decision_write(pb_enc *e, uint32_t field, const rk_autoscale_decision *d, const char *error);

#endif
