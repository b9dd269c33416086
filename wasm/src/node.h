/* node.h: the node as the core's modules share it (node.c: the operations; step.c: the
 * step that drives them). Internal: executors see only ringkv.h. */
#ifndef RINGKV_NODE_H
#define RINGKV_NODE_H

#include "util.h"

typedef struct {
  uint32_t cluster_size;   /* the ring's node ids: max(from, to) during a transition */
  uint32_t replicas;       /* R (with REPLICAS = "all": cluster_size) */
  /* The ring (SPEC: Resizing): its epoch and phase (RK_PHASE_*, resize.h). Outside a
   * transition size_old == size_new == cluster_size; during one, a shard's old replicas
   * are its replicas at size_old, its new ones at size_new. */
  uint64_t epoch;
  uint32_t phase, size_old, size_new;
  bool replicas_all;       /* REPLICAS = "all": every node of a size replicates every shard */
  uint32_t shards;
  uint64_t max_clock_skew_ms;
  uint64_t tombstone_grace_ms;
  uint32_t max_siblings;
  uint32_t fanout;
  uint32_t node_ids_max;   /* node ids below this have existed; dots of others are refused */
  uint64_t key_bytes_max;  /* value bytes a context write may leave in a key */
  uint64_t value_bytes_max;
  uint64_t gossip_interval_ms;  /* at most one gossip round per interval */
  uint64_t quorum_timeout_ms;   /* a write above ?consistency=one waits this long at most */
  bool reports;                 /* the node reports to RingControl (Config.reports) */
  bool leases;                  /* dots are leased; lost storage is caught up (Config.leases) */
} rk_config;

typedef struct rk_step rk_step;

struct ringkv_node {
  rk_arena arena;
  bool ready;
  rk_config cfg;
  uint32_t self;
  uint64_t clock;
  uint64_t counter;
  uint64_t *shard_digest;        /* [cfg.shards], owned (malloc) */
  uint32_t *shard_keys;          /* [cfg.shards]: key rows held (anti-entropy sizes its work) */
  bool digests_dirty;            /* shard digests changed during the current call */
  bool placement_only;           /* a Worker's instance: OP_PLACE only (no shards, no step) */
  /* Placement memo (node.c): memo_mask + 1 slots of cfg.replicas node ids, tagged shard + 1;
   * scratch for one shard's scores; the node ids 0..cluster_size-1. All owned. */
  uint16_t *memo;
  uint32_t *memo_tag;
  uint32_t memo_mask;
  void *memo_scratch;
  uint16_t *all_nodes;
  uint32_t *my_shards;           /* shards this node replicates, ascending, owned */
  size_t my_shards_len;
  uint32_t *ae_peers;            /* the nodes sharing a shard with this one, ascending, owned */
  size_t ae_peers_len;
  /* The protocol version each peer was last seen to speak (0: not heard from yet), so a
   * node writes the current version only to peers that read it. A cache: lost with the
   * instance, it costs one exchange in the previous version. [cfg.cluster_size], owned. */
  uint8_t *peer_version;
  rk_step *step;                 /* the step's schedule and what is in flight, owned */
};

/* Runs operation `op` (RINGKV_OP_PLACE .. RINGKV_OP_EXPIRE) inside the current call: the
 * arena is not reset, so replies of earlier operations in the same call stay valid. */
int rk_node_op(ringkv_node *n, uint32_t op, rk_slice req, rk_slice *reply);

/* How long a collection marker outlives its collection (SPEC: 10 x the grace). */
uint64_t rk_marker_keep_ms(const ringkv_node *n);

/* The shard's replicas (*len node ids, any order), valid until the next call: the nodes
 * that hold it and are pushed its writes (old ∪ new in joining and switching, new in
 * leaving; the phase table, SPEC: Resizing). */
const uint16_t *rk_replicas_of(const ringkv_node *n, uint32_t shard, uint32_t *len);
/* Whether `node` replicates `shard` (this node: one of its shards). */
bool rk_is_replica(const ringkv_node *n, uint32_t shard, uint32_t node);
/* Whether `node` takes client writes and serves reads of `shard` in the ring's phase: an old
 * replica while joining, a new one from switching on. */
bool rk_serves_phase(const ringkv_node *n, uint32_t shard, uint32_t node);
/* The replicas that hold everything written to `shard` so far, which catch-up pulls from:
 * the old ones while joining and switching. */
const uint16_t *rk_sources_of(const ringkv_node *n, uint32_t shard, uint32_t *len);
/* The shard's replicas at the ring's new size (outside a transition: its replicas). */
const uint16_t *rk_new_set_of(const ringkv_node *n, uint32_t shard, uint32_t *len);
/* Whether the shard's replica set changes in the ring's transition. */
bool rk_shard_moving(const ringkv_node *n, uint32_t shard);
/* Whether `node` is a new replica of `shard` only (joining it in this transition). */
bool rk_joins_shard(const ringkv_node *n, uint32_t shard, uint32_t node);
/* Whether `node` is an old replica of `shard` only (leaving it in this transition). */
bool rk_leaves_shard(const ringkv_node *n, uint32_t shard, uint32_t node);

/* step.c. rk_step_new decodes the persisted StepState and peer rows for a node of this
 * configuration (NULL with *err set when they do not decode); *clock and *counter are
 * replaced by the state's when it has them. */
rk_step *rk_step_new(const rk_config *cfg, uint32_t self, rk_slice state, const rk_slice *peers,
                     size_t peers_len, uint64_t legacy_seq, uint64_t *clock, uint64_t *counter, int *err);
void rk_step_free(rk_step *s);
/* After OP_INIT placed the node on its ring: a ring newer than the one its state was last
 * stepped on is adopted (SPEC: Resizing): ids the previous ring did not have start as
 * acknowledged at the current change sequence, and while joining, the shards this node
 * newly replicates are caught up from their old replicas before it serves them. */
void rk_step_adopt(ringkv_node *n);
/* The moving shards this node still copies (a new replica not caught up: every shard it
 * is catching up on) and still has to drop (an old-only replica holding keys of them). */
void rk_step_progress(const ringkv_node *n, uint32_t *copying, uint32_t *dropping);
/* Whether the node serves client reads and writes of this shard: RINGKV_OK,
 * RINGKV_E_NOT_SERVING (not in the ring's phase), or what rk_step_caught_up says. */
int rk_step_serves(const ringkv_node *n, uint32_t shard);
/* A client read served for a key of `shard`: counted in the load the node reports. */
void rk_step_client_read(ringkv_node *n, uint32_t shard);
/* Config.leases: whether the node holds all it should of this shard: RINGKV_OK,
 * RINGKV_E_LEASE (it started with no state and has not heard from RingControl yet) or
 * RINGKV_E_CATCHING_UP. */
int rk_step_caught_up(const ringkv_node *n, uint32_t shard);
/* RINGKV_OP_STEP. On an error code, the step's state is as before the call. */
int rk_step_run(ringkv_node *n, rk_slice req, rk_slice *reply);

#endif
