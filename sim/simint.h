/* simint.h: the simulator's parts as its files share them (store.c: the in-memory tables
 * and the Load queries; net.c: the simulated network; cluster.c: the executor of the node
 * step, the workload, convergence and the oracles). Internal to sim/.
 *
 * The simulator is an executor of RINGKV_OP_STEP (wasm/include/ringkv.h): it holds no
 * policy and no codec of its own. Every request and reply goes through the protobuf-c code
 * generated from wasm/ringkv.proto (build/gen/ringkv.pb-c.h). */
#ifndef SIM_INT_H
#define SIM_INT_H

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ringkv.h"
#include "ringkv.pb-c.h"
#include "sim.h"
#include "util.h"

#define CHECK_ALLOC(p)                         \
  do {                                         \
    if ((p) == NULL) {                         \
      fprintf(stderr, "sim: out of memory\n"); \
      exit(2);                                 \
    }                                          \
  } while (0)

/* ---------------------------------------------------------------------------------------
 * Seeded randomness: splitmix64, one stream per concern. */
typedef struct {
  uint64_t state;
} rng;

uint64_t rnd(rng *r);
uint64_t rnd_below(rng *r, uint64_t n);
bool rnd_chance(rng *r, double p);
rng rng_stream(uint64_t seed, uint64_t stream);

/* ---------------------------------------------------------------------------------------
 * Storage: what the Durable Object keeps in SQLite. */
typedef struct {
  uint32_t node;
  uint64_t counter;
} dot_t;

typedef struct {
  dot_t dot;
  uint8_t *bytes;
  uint32_t len;
} stored_value;

/* The KeyInfo columns. */
typedef struct {
  bool live;
  uint64_t winner_hlc;
  uint32_t winner_node;
  bool all_deleted;
  uint64_t max_hlc;
  uint32_t siblings;
  uint64_t digest;
  bool expired;
  uint64_t position;   /* the kh column */
} key_info;

typedef struct {
  uint8_t *meta;
  uint32_t meta_len;
  uint64_t seq;
  uint64_t gc_since, gc_epoch;   /* a noted collection agreement, or a marker's collection */
  bool from_client;
  key_info info;
  stored_value *values;
  uint32_t values_len, values_cap;
} row;

typedef struct {
  bool present;
  uint64_t acked_seq;
  uint32_t failures;
  uint64_t retry_at_ms;
} peer_row;

/* The ring (ringkv.proto Ring): a node's persisted view, or RingControl's. */
typedef struct {
  uint64_t epoch;
  uint32_t size, from, to, phase, node_ids_max;
} sim_ring;

/* A node's confirmation of its ring (ringkv.proto NodeProgress). */
typedef struct {
  bool given;
  uint32_t node;
  uint64_t epoch;
  uint32_t copying, dropping;
} sim_progress;

/* The node ids the ring spans (old ∪ new during a transition). */
static inline uint32_t ring_span(const sim_ring *g) { return g->phase == 0 ? g->size : (g->from > g->to ? g->from : g->to); }

typedef struct {
  uint32_t id;
  ringkv_node *core;       /* NULL: outside its ring (it serves nothing, arms no alarm) */
  sim_ring ring;           /* persisted: the ring it adopted last (--resize) */
  uint64_t epoch;          /* bumped at every restart: answers to the old instance die */
  /* persisted */
  uint64_t *shard_digest;  /* [shards], 0 = no row (with shard_keys 0) */
  uint32_t *shard_keys;    /* [shards]: the key rows the core counts */
  row **rows;              /* [keys] */
  uint64_t *log_seq;       /* the seq index: (seq, key) at every seq change, by seq */
  uint32_t *log_key;
  size_t log_len, log_cap;
  peer_row *peers;         /* [nodes] */
  uint8_t *state;          /* the StepState bytes */
  size_t state_len;
  uint64_t alarm_ms;       /* the armed alarm, 0 = none */
  uint64_t clock, counter; /* the last seen (monotonic oracles) */
  uint64_t report_number;  /* the last report's (RingControl drops an older one) */
  uint64_t dots_below;     /* its storage was wiped: every new dot must lie above this */
  bool fencing, wipe_due;  /* a fence was asked for (--wipes); the core said wipe */
  struct ack *wiped_best;  /* [keys]: each key's best acknowledged write when it was wiped
                              (dot.node UINT32_MAX: none): a read it serves is no older */
  /* volatile */
  int64_t skew_ms;
  uint8_t side;            /* partition side */
  uint32_t *keys;          /* keys this node replicates */
  uint32_t keys_len;
} node;

/* An acknowledged client write. */
typedef struct ack {
  uint64_t hlc;
  dot_t dot;
  bool deleted;
  uint64_t value_hash;
} ack;

typedef struct {
  uint8_t *bytes;
  uint32_t len;
  uint32_t shard;
  uint32_t *replicas;      /* the current ring's (its phase's readers and writers) */
  uint64_t ever;           /* --resize: every node a ring of the run made a replica (bit
                              per id): where a row of the key may be during the run */
  bool acked;              /* a write to this key was acknowledged; then best is: */
  ack best;                /* the acknowledged write with the highest (hlc, node) */
} key_entry;

/* Network events: a request leg arriving, its answer leg arriving back, or the requester
 * hearing that the exchange failed. */
enum { EV_MSG = 1, EV_ANSWER, EV_FAIL };
/* A --delay copy arrives this many rounds after the grace: past the settling and the
 * agreement collection waits for. */
#define SIM_LATE_EXTRA_ROUNDS 20u
/* Traffic classes, for the byte counts. */
enum { CLS_PUSH = 0, CLS_DIGEST, CLS_REPAIR, CLS_GC };

typedef struct {
  uint64_t round;
  uint64_t order;
  uint8_t kind;            /* EV_* */
  uint8_t cls;             /* CLS_* */
  uint32_t msg_kind;       /* Kind of the channel */
  uint32_t from, to;
  uint32_t origin;         /* the requester */
  uint32_t tag;            /* the requester's Target.tag */
  uint64_t origin_epoch;
  uint64_t ring_epoch;     /* the sender's ring (the ring header on every message) */
  uint64_t req_id;
  uint64_t sent_round;
  uint64_t deadline_round;  /* Send.timeout_ms passed: the requester hears of a failure */
  bool timer;               /* a failure at deadline_round is scheduled already */
  bool late;                /* a copy delivered after the grace (--delay) */
  uint8_t *body;
  uint32_t len;
} event;

typedef struct {
  const sim_opts *o;
  sim_result *res;
  rk_arena ar;
  rng net, work, fault, step;
  uint64_t round;
  node *nodes;
  key_entry *keys;
  uint32_t keys_used;      /* fresh_keys: keys handed out so far */
  uint32_t *key_map;       /* open addressing: key id + 1 */
  uint32_t key_map_mask;
  uint32_t **shard_replicas;   /* [shards] -> replicas (NULL when no probe hit it) */
  uint32_t *shard_keys_start;  /* CSR: keys by shard */
  uint32_t *shard_keys;
  event **heap;
  size_t heap_len, heap_cap;
  uint64_t order_next;
  uint64_t req_next;
  uint8_t *req_done;
  size_t req_done_cap;
  bool partitioned;
  uint64_t partition_end;
  bool healed;
  double loss;
  double dup;
  double delay;
  uint64_t late_in_flight;   /* --delay copies not yet delivered: the run waits for them */
  uint64_t bytes_this_round;
  double entry_bytes_sum;
  uint64_t entry_count;
  bool failed;
  uint64_t *tmp_digest;    /* [shards] */
  uint32_t *tmp_rows;      /* [shards] */
  /* Reports sent this round, answered by the simulated control object (never lost: the
   * report path is not gossip) once the round's network is quiet. */
  struct { uint32_t node, tag; uint64_t epoch; sim_progress progress; } *reports_q;
  size_t reports_len, reports_cap;
  /* The control object's dot leases: its persisted ControlState, run through OP_CONTROL
   * on its own core; the LeaseReplies of this round, answered with the reports (lost like
   * a message during the fault phase: the block stays recorded). */
  ringkv_node *control;
  uint8_t *control_state;
  size_t control_state_len;
  struct { uint32_t node, tag; uint64_t epoch; uint8_t *body; uint32_t len; bool lost; } *leases_q;
  size_t leases_len, leases_cap;
  const char *cause;       /* what the current change is, for --trace-key */
  /* --resize (resize.c): the node ids any ring of the run spans, RingControl's ring as its
   * last step returned it, its epochs sent to nodes this round (lost like a message during
   * the fault phase), and whether placement is judged on the final ring only. */
  uint32_t span;
  sim_ring ring;
  struct { uint32_t node; bool lost; } *pushes_q;
  size_t pushes_len, pushes_cap;
  uint64_t resize_asked_round;   /* 0: not asked yet */
  uint32_t waiting[64];          /* the transition's waiting_for, as its last step said */
  size_t waiting_len;
  bool strict_placement;
} sim;

void failf(sim *s, const char *check, const char *fmt, ...);

typedef struct {
  int code;                    /* the first step's return code (0: the chain ran) */
  ProtobufCBinaryData reply;   /* the event's answer (in the arena) */
  sim_progress progress;       /* StepReply.progress (a start event's) */
} step_result;
/* Runs `req` (one event) at `n` and every `loaded` its chain asks for; a first step that
 * returns an error code changed nothing and its code is returned (cluster.c). */
step_result sim_step(sim *s, node *n, Ringkv__StepRequest *req, ProtobufCBinaryData payload);

/* A node's core from what it persisted, then its start event, whose progress is returned
 * (cluster.c). */
sim_progress node_init_core(sim *s, node *n);
/* A core for OP_PLACE only, initialised on `cfg` (its OP_INIT's code and reply out). */
ringkv_node *sim_placer(sim *s, Ringkv__Config cfg, int *code, ProtobufCBinaryData *reply);
/* One core call with a generated message (its reply in the core's buffer). */
int core_call(sim *s, ringkv_node *core, uint32_t op, const ProtobufCMessage *req, ProtobufCBinaryData *reply);
/* The Config a node's core runs on its ring (cluster.c). */
Ringkv__Config sim_config_ring(const sim *s, const sim_ring *g);

/* resize.c: RingControl's resize as the control object carries it out. */
/* One control step (ControlRequest): `progress` a node's confirmation (may be NULL),
 * `resize_to` > 0 a resize asked. The reply's state is persisted, its ring taken (the
 * placement moves with it), its epochs queued for the nodes it names. */
void rz_control(sim *s, const sim_progress *progress, uint32_t resize_to);
/* At a round's start: the resize asked at its round, and RingControl's alarm. */
void rz_round(sim *s);
/* The epochs sent this round, each adopted and confirmed (or lost); true when any was. */
bool rz_deliver(sim *s);
/* A node takes RingControl's ring when it is newer than its own (a message or the Worker
 * showed a newer epoch: the node asks RingControl), rebuilding its core on it. */
sim_progress rz_adopt(sim *s, node *n);
/* The ring's placement of every key (OP_PLACE on a core configured with the ring). */
void rz_place(sim *s, const sim_ring *g);
/* The resize asked is done and every node of old ∪ new confirmed the last epoch. */
bool rz_done(const sim *s);
/* Where the resize stands, for a failure's detail. */
void rz_describe(const sim *s, char *out, size_t cap);

/* hostile.c: the hostile peer's forged messages of one round (--hostile). */
void hostile_round(sim *s);
uint64_t now_ms(const sim *s, const node *n);

/* store.c */
int64_t key_lookup(const sim *s, const uint8_t *k, size_t len);
void key_insert(sim *s, uint32_t id);
ProtobufCBinaryData key_bytes(const sim *s, uint32_t k);
bool is_replica(const sim *s, uint32_t k, uint32_t n);
void row_free(row *r);
/* The Loaded answering `load`, built in the arena. */
Ringkv__Loaded *store_load(sim *s, node *n, const Ringkv__Load *load);
/* Applies one RowWrite; `payload` holds the values Applied.put names by (at, length). */
void store_row_write(sim *s, node *n, const Ringkv__RowWrite *w, ProtobufCBinaryData payload);
/* A Local of a stored row (meta, expired, seq, from_client; values or sizes). */
Ringkv__Local *store_local(sim *s, node *n, uint32_t k, bool values, bool sizes);
void trace_row(sim *s, const node *n, uint32_t k, const char *what);

/* net.c */
/* The traffic class (CLS_*) of a Send's message. */
uint8_t net_classify(uint32_t msg_kind, ProtobufCBinaryData body);
/* Sends a request leg from `from` to `to` (kind = the channel, cls = net_classify's, tag =
 * the Target's, timeout_ms = the Send's). */
void net_request(sim *s, node *from, uint32_t to, uint32_t msg_kind, uint8_t cls, uint32_t tag, uint64_t timeout_ms,
                 ProtobufCBinaryData body);
/* Sends the answer leg of request leg `req`. */
void net_answer(sim *s, const event *req, ProtobufCBinaryData body);
/* The receiver of request leg `req` refused it (a node outside its ring): the requester
 * hears of a failure. */
void net_refuse(sim *s, const event *req);
/* The next event due this round, or NULL. Lost legs (partitions) are turned into failures. */
event *net_next(sim *s);
/* An answer or failure reaching its requester: true only for the first one, and only while
 * the requester's instance lives. */
bool net_requester_live(sim *s, const event *e);
void ev_free(event *e);
void net_free(sim *s);

#endif
