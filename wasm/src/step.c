/* step.c: RINGKV_OP_STEP, the node step (see ringkv.h). One event in, the actions out.
 *
 * Every policy of a node lives here: when a gossip round runs, what it loads and pushes to
 * whom, quick retries and back-off, fetch time limits, how a peer's refusal is treated,
 * anti-entropy's schedule (quiet after a change, starvation, doubling while peers agree)
 * and its narrowing, expiry and collection batches, the alarm. The decisions themselves
 * are node.c's operations, run in-process (rk_node_op) on requests this file encodes.
 *
 * A chain of steps: an event that needs stored rows answers with `load`; the executor
 * answers at once with `loaded`, and the step goes on where it stood (`wait`). What a chain
 * or a send in flight needs across steps is copied out of the call's arena (malloc). */
#include <stdlib.h>

#include "fields.h"
#include "hash.h"
#include "node.h"
#include "catchup.h"
#include "cover.h"
#include "lease.h"
#include "quorum.h"
#include "range.h"
#include "report.h"
#include "resize.h"

/* Policy. Units last. */
#define PUSH_CANDIDATES_MAX 512u                 /* rows one round reads to push */
#define PUSH_ROW_BYTES_MAX (8u * 1024u * 1024u)  /* their metadata and values */
#define EXPIRE_KEYS_MAX 256u                     /* markers deleted (or old digests redone) per round */
#define GC_KEYS_MAX 128u                         /* tombstone keys one collection batch asks about */
#define GC_RETRY_MS_MIN 1000u                    /* a pass that left keys undecided waits this, */
#define GC_RETRY_MS_MAX 3600000u                 /* doubling each such pass, up to an hour */
#define GC_SETTLE_INTERVALS 2u  /* a new tombstone is asked about after its gossip has had this */
#define MERGE_ROWS_BYTES_MAX (8u * 1024u * 1024u) /* stored metadata merged per step */
#define AE_SHARDS_MAX 64u                        /* differing shards one comparison names */
#define AE_REPAIR_BYTES_MAX (16u * 1024u * 1024u) /* values and metadata one repair carries */
#define AE_INTERVAL_MS_MAX 60000u                /* an agreeing cluster's anti-entropy interval */
#define AE_QUIET_INTERVALS 1u   /* anti-entropy waits this long after a local change ... */
#define AE_STARVE_INTERVALS 30u /* ... but runs at least once per this many while changes go on */
/* An exchange lost after it found a difference (or its repair lost) goes to the same peer
 * again, at most this many times in a row: an exchange is up to six messages, so at 10%
 * loss half of them fail, and the difference was found (at R=N a node the epidemic missed
 * waited for several peers in turn). */
#define AE_RETRY_SAME_PEER 2u
/* Below a differing shard (a version-3 peer), key ranges are cut in 16 until a differing
 * range holds at most AE_LEAF_KEYS key rows on both sides; one repair exchange carries at
 * most RINGKV_AE_RANGES_MAX such leaves, so at most AE_REPAIR_ROWS_MAX rows each way
 * whatever the shards hold. 64: a leaf's entries cost about what the digests of one more
 * level would (16 parts x 12 bytes per range, and the round trip). */
#define AE_LEAF_KEYS 64u
#define AE_REPAIR_ROWS_MAX (AE_LEAF_KEYS * RINGKV_AE_RANGES_MAX)
#define QUORUM_ROWS_MAX 16u           /* rows of one key position loaded for a quorum push */
#define QUORUM_OVERFLOW_ID UINT32_MAX /* the wait of a write no slot was free for */
/* A failed push is retried at the next round this many times before backing off (2, 4, 8,
 * ... intervals): most failures are lost messages, and at 10% loss per message a pair of
 * nodes among a thousand's million sees a few in a row; backing off after two made the
 * convergence tail (22-39 rounds at N=128, R=3, 600 writes a node; 11-13 after five). */
#define PEER_RETRY_QUICK 5u
/* From this many failures in a row until the quick retries are spent, a push goes out
 * twice, as two requests, and fails only when both do ("The Tail at Scale"'s hedged
 * requests): at 10% loss per message an exchange fails 19% of the time, a hedged one 3.6%.
 * It costs at most three extra requests per failing episode (none once backing off, when
 * the peer is more likely down or overloaded than unlucky). */
#define PUSH_HEDGE_AFTER 2u
#define PEER_BACKOFF_MS_MAX 30000u
#define PEER_TIMEOUT_MS 10000u                   /* a send unanswered by then is lost */
/* A push's time limit grows with its size at this rate (bytes per ms: 10 MB/s, a slow
 * merge at the peer included). */
#define PUSH_BYTES_PER_MS 10000u
#define SENT_SLOTS 4096u  /* recently sent keys remembered (half of it: 4 rounds' candidates) */

enum { KIND_PUSH = 1, KIND_DIGEST = 2, KIND_GC = 3, KIND_REPORT = 4, KIND_LEASE = 5, KIND_CATCHUP = 6 };
enum {
  WAIT_NONE,
  WAIT_ROUND,
  WAIT_MERGE_RANGE,
  WAIT_MERGE_REPAIR,
  WAIT_GC_ANSWER,
  WAIT_AE_REPAIR,
  WAIT_GC_DECIDE,
  WAIT_AE_OWN_PARTS,      /* this node's parts of the ranges it is about to ask */
  WAIT_DIGEST_PARTS,      /* its parts of the ranges a peer asked */
  WAIT_REPORT,
  WAIT_CATCHUP_PAGE,      /* a catch-up page a peer asked for */
  WAIT_COVER_PAGE,        /* this node's page of a shard it leaves: to send, or to drop */
  WAIT_QUORUM_ROW,        /* a write above ?consistency=one: its row, to push at once */
};
enum { AE_IDLE, AE_ROOT, AE_NARROW, AE_RANGES };
enum { FENCE_NONE, FENCE_DRAIN, FENCE_FORCE };

typedef struct {
  uint64_t acked, retry_at, ack_on_success, push_at;
  uint64_t rtt_ms;   /* how long its answers take (in memory: an instance learns it again) */
  uint32_t failures, push_tag, entries;
  uint32_t hedge_tag;   /* a second copy of the push in flight (PUSH_HEDGE_AFTER) */
  bool dirty;   /* to be written */
} peer_t;

/* StepState, less the clock and counter (the node's). */
typedef struct {
  uint64_t seq, client_seq, last_round_ms, last_change_ms, ae_last_ms, ae_next_ms, ae_interval_ms;
  uint64_t expiry_at_ms, gc_at_ms, gc_cursor, gc_retry_ms, gc_due_ms, gc_pending_ms;
  bool gc_undecided, gc_begun;
  uint32_t ae_cursor, ae_agreed;
  uint32_t fence;   /* FENCE_*: the admin fence asked for */
  uint64_t ring_epoch;   /* the ring the state was last stepped on (rk_step_adopt) */
  uint32_t ring_span;    /* and its node ids */
} sched_t;

typedef struct {
  uint8_t *ptr;
  size_t len;
} buf_t;

struct rk_step {
  sched_t s;
  uint32_t peers_len;          /* cluster_size */
  peer_t *peers;
  uint32_t next_tag;
  bool tags_seeded;   /* tags start at a random point per instance (rk_step_run) */
  buf_t saved;                 /* the StepState last handed out for persisting */
  /* What a `loaded` event goes on with. */
  int wait;
  buf_t msg;                   /* the chain's message */
  buf_t mk;                    /* its MessageKeysReply */
  bool msg_answer;             /* it answers this node's send: deferrals come back */
  bool msg_short;              /* its merge refused or deferred an entry (a catch-up page
                                  then did not bring everything: it is asked again) */
  size_t msg_at;               /* where the message lies in the event's payload (a catch-up
                                  page's Push lies inside its CatchupReply): Applied.put
                                  offsets are moved by it */
  size_t keys_from;            /* the next range's first entry */
  buf_t deferred;              /* the earlier ranges' deferred keys, as MergeRequest field 7 */
  uint64_t scan_seq;           /* the round: the sequence when its rows were read */
  bool scan_push;              /* the round read rows to push */
  /* Anti-entropy in flight. */
  int ae_phase;
  uint32_t ae_tag, ae_peer, ae_repair_tag;
  uint32_t ae_repair_peer, ae_retry_peer, ae_retries;   /* same-peer retries in a row */
  uint32_t ae_failed;          /* exchanges in a row that no peer answered (in memory) */
  uint64_t ae_at, ae_repair_at;   /* when they were sent */
  /* Below shards: the ranges asked (and this node's parts of them), and the leaves found
   * so far, repaired together. */
  rk_range ae_asked[RINGKV_AE_RANGES_MAX];
  rk_parts ae_own[RINGKV_AE_RANGES_MAX];
  rk_range ae_leaves[RINGKV_AE_RANGES_MAX];
  size_t ae_asked_len, ae_leaves_len;
  uint64_t ae_leaves_rows;     /* their rows (the larger side's): a repair's budget */
  bool ae_cut;                 /* cutting a leaf too large to load, down to single keys */
  bool msg_ranges;             /* the chain's message is a repair request over key ranges */
  uint32_t ranges_loaded;      /* ... and the rows of its first ranges_loaded were loaded */
  /* Keys this node pushed or repaired lately, whose deferral it accepts back: an open-
   * addressed table of their xxh3 (0: empty), emptied when half full. */
  uint64_t sent[SENT_SLOTS];
  size_t sent_len;
  /* Collection in flight: one query per peer, then the decision on their replies. */
  uint32_t *gc_tags;
  buf_t *gc_replies;
  size_t gc_len, gc_waiting;
  uint64_t gc_at;
  buf_t gc_keys;               /* the batch's keys, as Load.keys */
  uint64_t gc_last_order;      /* the batch's last row (Local.order) */
  bool gc_full;                /* the batch was full: the pass goes on after it */
  bool gc_loading;             /* this round's load asked for a batch */
  rk_report rep;               /* reports to RingControl (report.c) */
  rk_lease lease;              /* dot leases (lease.c; Config.leases) */
  rk_catchup cu;               /* shards to catch up on (catchup.c; Config.leases) */
  uint32_t page_shard;         /* WAIT_CATCHUP_PAGE: the shard asked */
  uint32_t page_peer;          /* ... and who asked */
  rk_cover cover;              /* shards it leaves: covering passes, then the drop (cover.c) */
  uint32_t cover_loading;      /* WAIT_COVER_PAGE: the entry whose page is loaded */
  bool msg_moves;              /* the chain merges a shard moving here (MergeRequest.moves) */
  bool msg_cover;              /* ... a covering page: its answer counts what changed */
  uint32_t cover_changed;      /* ... so far */
  rk_quorum quorum;            /* writes above ?consistency=one waiting (quorum.c) */
  int quorum_loading;          /* WAIT_QUORUM_ROW: the wait whose row is loaded */
  buf_t quorum_reply;          /* ... and the write's answer, given back after the load */
};

#define STATS_MAX 32u
typedef struct {
  ringkv_node *n;
  rk_step *st;
  uint64_t now, rnd;
  pb_enc rows, sends, load;
  bool has_load;
  rk_slice reply;
  bool report_answer;          /* the event was the outcome of a report */
  uint32_t quorum_wait;        /* StepReply.quorum_wait */
  rk_quorum_outcome outcome[2];   /* StepReply.quorum: at most the event's write and one answer */
  size_t outcomes;
  int quorum_opened;           /* a wait this step opened (closed again if the step fails) */
  struct {
    rk_slice name;
    uint64_t delta;
  } stat[STATS_MAX];
  size_t stat_len;
} out_t;

/* ---------------------------------------------------------------------------------------
 * Small helpers */

static void buf_free(buf_t *b) {
  free(b->ptr);
  b->ptr = NULL;
  b->len = 0;
}

static bool buf_set(buf_t *b, rk_slice s) {
  buf_free(b);
  if (s.len == 0) return true;
  b->ptr = malloc(s.len);
  if (b->ptr == NULL) return false;
  memcpy(b->ptr, s.ptr, s.len);
  b->len = s.len;
  return true;
}

static bool buf_append(buf_t *b, rk_slice s) {
  if (s.len == 0) return true;
  uint8_t *p = realloc(b->ptr, b->len + s.len);
  if (p == NULL) return false;
  memcpy(p + b->len, s.ptr, s.len);
  b->ptr = p;
  b->len += s.len;
  return true;
}

static rk_slice buf_slice(const buf_t *b) {
  rk_slice s = {b->ptr, b->len};
  return s;
}

static uint64_t interval_ms(const ringkv_node *n) { return n->cfg.gossip_interval_ms; }

static uint32_t new_tag(rk_step *st) {
  if (++st->next_tag == 0) st->next_tag = 1;
  return st->next_tag;
}

static void stat_add(out_t *o, rk_slice name, uint64_t delta) {
  if (delta == 0) return;
  for (size_t i = 0; i < o->stat_len; i++) {
    if (rk_slice_eq(o->stat[i].name, name)) {
      o->stat[i].delta += delta;
      return;
    }
  }
  if (o->stat_len == STATS_MAX) return;
  o->stat[o->stat_len].name = name;
  o->stat[o->stat_len++].delta = delta;
}

static void stat_named(out_t *o, const char *name, uint64_t delta) {
  rk_slice s = {(const uint8_t *)name, strlen(name)};
  stat_add(o, s, delta);
}

/* "refused_<reason>" for a reason the core's merge gave. */
static void stat_refused(out_t *o, rk_slice reason, uint64_t count) {
  static const char prefix[] = "refused_";
  size_t pl = sizeof prefix - 1;
  uint8_t *name = rk_alloc(&o->n->arena, pl + reason.len);
  if (name == NULL) return;
  memcpy(name, prefix, pl);
  if (reason.len) memcpy(name + pl, reason.ptr, reason.len);
  rk_slice s = {name, pl + reason.len};
  stat_add(o, s, count);
}

/* One of node.c's operations inside this call; a failure leaves the node's clock and
 * counter as they were (the step may go on, counting the failure). */
static int inner(out_t *o, uint32_t op, const pb_enc *req, rk_slice *reply) {
  if (req->err) return req->err;
  uint64_t clock = o->n->clock, counter = o->n->counter;
  int rc = rk_node_op(o->n, op, pb_result(req), reply);
  if (rc != RINGKV_OK) {
    o->n->clock = clock;
    o->n->counter = counter;
  }
  return rc;
}

static void enc(out_t *o, pb_enc *e) { pb_enc_init(e, &o->n->arena); }

static uint64_t lowest_ack(const ringkv_node *n, const rk_step *st) {
  uint64_t low = st->s.seq;
  for (uint32_t p = 0; p < st->peers_len; p++) {
    if (p != n->self) low = RK_MIN(low, st->peers[p].acked);
  }
  return low;
}

/* Changes a peer should get: every change where learned ones are relayed, else clients'.
 * A node being fenced relays everything it holds: what it learned may be the last copy
 * (another replica's storage may have been lost since). */
static bool relaying(const ringkv_node *n, const rk_step *st) {
  return n->cfg.replicas - 1u > n->cfg.fanout || st->s.fence != FENCE_NONE;
}

static uint64_t push_target(const ringkv_node *n, const rk_step *st) {
  return relaying(n, st) ? st->s.seq : st->s.client_seq;
}

/* A Local's key, its seq and from_client columns, and the bytes it holds. */
typedef struct {
  rk_slice key;
  rk_slice meta;
  uint64_t seq;
  bool from_client;
  uint64_t bytes;
} local_info;

static bool local_info_read(rk_slice s, local_info *li) {
  int t_;
  bool ok = true;
  rk_slice meta = {NULL, 0}, v;
  memset(li, 0, sizeof *li);
  FIELDS(s) {
    case 1: ok = pb_get_bytes(R, WT, &li->key); break;
    case 2: ok = pb_get_bytes(R, WT, &meta); break;
    case 3: {
      ok = pb_get_bytes(R, WT, &v);
      if (!ok) break;
      rk_slice value = {NULL, 0};
      FIELDS(v) {
        case 2: ok = pb_get_bytes(R, WT, &value); break;
        SKIP;
      }
      li->bytes += value.len;
      break;
    }
    case 6: ok = pb_get_u64(R, WT, &li->seq); break;
    case 7: ok = pb_get_bool(R, WT, &li->from_client); break;
    SKIP;
  }
  li->bytes += meta.len;
  li->meta = meta;
  return ok && t_ >= 0;
}

/* ---------------------------------------------------------------------------------------
 * State in and out */

static void sched_write(pb_enc *e, const ringkv_node *n, const sched_t *s) {
  pb_put_fixed64(e, 1, n->clock);
  pb_put_uint(e, 2, n->counter);
  pb_put_uint(e, 3, s->seq);
  pb_put_uint(e, 4, s->client_seq);
  pb_put_uint(e, 5, s->last_round_ms);
  pb_put_uint(e, 6, s->last_change_ms);
  pb_put_uint(e, 7, s->ae_last_ms);
  pb_put_uint(e, 8, s->ae_next_ms);
  pb_put_uint(e, 9, s->ae_interval_ms);
  pb_put_uint(e, 10, s->ae_cursor);
  pb_put_uint(e, 11, s->ae_agreed);
  pb_put_uint(e, 12, s->expiry_at_ms);
  pb_put_uint(e, 13, s->gc_at_ms);
  pb_put_uint(e, 14, s->gc_cursor);
  pb_put_uint(e, 15, s->gc_retry_ms);
  pb_put_uint(e, 16, s->gc_due_ms);
  pb_put_bool(e, 17, s->gc_undecided);
  pb_put_bool(e, 18, s->gc_begun);
  pb_put_uint(e, 19, s->gc_pending_ms);
  pb_put_uint(e, 35, s->fence);
  pb_put_uint(e, 36, s->ring_epoch);
  pb_put_uint(e, 37, s->ring_span);
  if (n->cfg.reports) rk_report_state_write(e, &n->step->rep);
  if (n->cfg.leases) {
    const rk_step *st = n->step;
    pb_put_uint(e, 30, st->lease.end);
    pb_put_bool(e, 31, st->lease.fresh);
    rk_catchup_state_write(e, &st->cu);
    pb_put_fixed64(e, 34, st->lease.incarnation);
  }
}

rk_step *rk_step_new(const rk_config *cfg, uint32_t self, rk_slice state, const rk_slice *peers,
                     size_t peers_len, uint64_t legacy_seq, uint64_t *clock, uint64_t *counter, int *err) {
  int t_;
  bool ok = true;
  sched_t s;
  memset(&s, 0, sizeof s);
  uint64_t st_clock = *clock, st_counter = *counter;
  rk_report rep;
  memset(&rep, 0, sizeof rep);
  rk_lease lease;
  memset(&lease, 0, sizeof lease);
  if (state.len == 0) {
    s.seq = legacy_seq;
    s.client_seq = legacy_seq;
    /* No state at all (not a node of an earlier build, which kept its counter and sequence
     * in other rows): its storage may have been lost, which RingControl will tell. */
    lease.fresh = cfg->leases && legacy_seq == 0 && *counter == 0;
  }
  size_t active = 0;
  rk_slice cu_bits = {NULL, 0};
  FIELDS(state) {
    case 1: ok = pb_get_fixed64(R, WT, &st_clock); break;
    case 2: ok = pb_get_u64(R, WT, &st_counter); break;
    case 3: ok = pb_get_u64(R, WT, &s.seq); break;
    case 4: ok = pb_get_u64(R, WT, &s.client_seq); break;
    case 5: ok = pb_get_u64(R, WT, &s.last_round_ms); break;
    case 6: ok = pb_get_u64(R, WT, &s.last_change_ms); break;
    case 7: ok = pb_get_u64(R, WT, &s.ae_last_ms); break;
    case 8: ok = pb_get_u64(R, WT, &s.ae_next_ms); break;
    case 9: ok = pb_get_u64(R, WT, &s.ae_interval_ms); break;
    case 10: ok = pb_get_u32(R, WT, &s.ae_cursor); break;
    case 11: ok = pb_get_u32(R, WT, &s.ae_agreed); break;
    case 12: ok = pb_get_u64(R, WT, &s.expiry_at_ms); break;
    case 13: ok = pb_get_u64(R, WT, &s.gc_at_ms); break;
    case 14: ok = pb_get_u64(R, WT, &s.gc_cursor); break;
    case 15: ok = pb_get_u64(R, WT, &s.gc_retry_ms); break;
    case 16: ok = pb_get_u64(R, WT, &s.gc_due_ms); break;
    case 17: ok = pb_get_bool(R, WT, &s.gc_undecided); break;
    case 18: ok = pb_get_bool(R, WT, &s.gc_begun); break;
    case 19: ok = pb_get_u64(R, WT, &s.gc_pending_ms); break;
    case 20: ok = pb_get_u64(R, WT, &rep.live_keys); break;
    case 21: ok = pb_get_u32(R, WT, &rep.state); break;
    case 22: ok = pb_get_u64(R, WT, &rep.number); break;
    case 23: ok = pb_get_u32(R, WT, &rep.version); break;
    case 30: ok = pb_get_u64(R, WT, &lease.end); break;
    case 31: ok = pb_get_bool(R, WT, &lease.fresh); break;
    case 32: ok = pb_get_bytes(R, WT, &cu_bits); break;
    case 33: ok = pb_skip(R, WT); active++; break;
    case 34: ok = pb_get_fixed64(R, WT, &lease.incarnation); break;
    case 35: ok = pb_get_u32(R, WT, &s.fence); break;
    case 36: ok = pb_get_u64(R, WT, &s.ring_epoch); break;
    case 37: ok = pb_get_u32(R, WT, &s.ring_span); break;
    SKIP;
  }
  if (!ok || t_ < 0 || s.client_seq > s.seq || s.fence > FENCE_FORCE || rep.state > RK_REPORT_PENDING || active > RK_CATCHUP_ACTIVE_MAX ||
      lease.end > RINGKV_COUNTER_MAX) {
    *err = RINGKV_E_DECODE;
    return NULL;
  }
  if (s.ae_interval_ms < cfg->gossip_interval_ms) s.ae_interval_ms = cfg->gossip_interval_ms;
  rk_step *st = calloc(1, sizeof *st);
  peer_t *ps = st == NULL ? NULL : calloc(cfg->cluster_size, sizeof *ps);
  if (ps == NULL) {
    free(st);
    *err = RINGKV_E_NOMEM;
    return NULL;
  }
  st->s = s;
  st->rep = rep;
  st->lease = lease;
  rk_report_start(&st->rep);
  int cu_rc = rk_catchup_init(&st->cu, cfg->shards, cfg->cluster_size);
  if (cu_rc == RINGKV_OK && cu_bits.len > 0) cu_rc = rk_catchup_read_bits(&st->cu, cu_bits);
  FIELDS(state) {
    case 33: {
      rk_slice entry;
      ok = pb_get_bytes(R, WT, &entry);
      if (ok && cu_rc == RINGKV_OK) cu_rc = rk_catchup_read_active(&st->cu, cfg->shards, cfg->cluster_size, entry);
      break;
    }
    SKIP;
  }
  if (cu_rc == RINGKV_OK) cu_rc = rk_catchup_check(&st->cu);
  if (cu_rc != RINGKV_OK) {
    rk_step_free(st);
    free(ps);
    *err = cu_rc;
    return NULL;
  }
  st->peers = ps;
  st->peers_len = cfg->cluster_size;
  for (size_t i = 0; i < peers_len; i++) {
    uint32_t id = 0, failures = 0;
    uint64_t acked = 0, retry = 0;
    FIELDS(peers[i]) {
      case 1: ok = pb_get_u32(R, WT, &id); break;
      case 2: ok = pb_get_u64(R, WT, &acked); break;
      case 3: ok = pb_get_u32(R, WT, &failures); break;
      case 4: ok = pb_get_u64(R, WT, &retry); break;
      SKIP;
    }
    if (!ok || t_ < 0) {
      rk_step_free(st);
      *err = RINGKV_E_DECODE;
      return NULL;
    }
    /* Rows of ids the ring no longer has are kept in storage but not used. */
    if (id >= cfg->cluster_size || id == self) continue;
    ps[id].acked = RK_MIN(acked, s.seq);
    ps[id].failures = failures;
    ps[id].retry_at = retry;
  }
  *clock = st_clock;
  *counter = st_counter;
  return st;
}

static void chain_clear(rk_step *st) {
  st->wait = WAIT_NONE;
  st->msg_at = 0;
  st->msg_moves = false;
  st->msg_cover = false;
  st->cover_changed = 0;
  st->msg_ranges = false;
  st->ranges_loaded = 0;
  buf_free(&st->msg);
  buf_free(&st->mk);
  buf_free(&st->deferred);
  st->keys_from = 0;
}

static void gc_clear(rk_step *st);

/* A chain the executor did not go on with: what waited on it starts over (collection at
 * the next round, anti-entropy when next due). */
static void ae_clear(rk_step *st) {
  st->ae_phase = AE_IDLE;
  st->ae_tag = 0;
  st->ae_asked_len = 0;
  st->ae_leaves_len = 0;
  st->ae_leaves_rows = 0;
  st->ae_cut = false;
}

static void chain_drop(rk_step *st) {
  if (st->wait == WAIT_GC_DECIDE) gc_clear(st);
  if (st->wait == WAIT_AE_REPAIR || st->wait == WAIT_AE_OWN_PARTS) ae_clear(st);
  if (st->wait == WAIT_REPORT) rk_report_dropped(&st->rep);
  rk_catchup_unmerged(&st->cu, 0);
  chain_clear(st);
}

static void gc_clear(rk_step *st) {
  buf_free(&st->gc_keys);
  for (size_t i = 0; i < st->gc_len; i++) buf_free(&st->gc_replies[i]);
  free(st->gc_tags);
  free(st->gc_replies);
  st->gc_tags = NULL;
  st->gc_replies = NULL;
  st->gc_len = st->gc_waiting = 0;
}

void rk_step_free(rk_step *st) {
  if (st == NULL) return;
  chain_clear(st);
  gc_clear(st);
  buf_free(&st->saved);
  rk_report_free(&st->rep);
  rk_catchup_free(&st->cu);
  rk_quorum_free(&st->quorum);
  buf_free(&st->quorum_reply);
  free(st->peers);
  free(st);
}

/* ---------------------------------------------------------------------------------------
 * Actions */

static void load_begin(out_t *o) {
  if (!o->has_load) enc(o, &o->load);
  o->has_load = true;
}

/* A Send of `message` on `kind` to one peer; returns its tag. */
static uint32_t send_to(out_t *o, uint32_t kind, rk_slice message, uint32_t peer, uint64_t timeout_ms, bool on_path) {
  uint32_t tag = new_tag(o->st);
  size_t m = pb_begin(&o->sends, 6);
  pb_put_uint(&o->sends, 1, kind);
  pb_put_bytes(&o->sends, 2, message);
  size_t t = pb_begin(&o->sends, 3);
  pb_put_uint(&o->sends, 1, peer);
  pb_put_uint(&o->sends, 2, tag);
  pb_end(&o->sends, t);
  pb_put_uint(&o->sends, 4, timeout_ms);
  pb_put_bool(&o->sends, 5, on_path);
  pb_end(&o->sends, m);
  return tag;
}

static uint32_t send_one(out_t *o, uint32_t kind, rk_slice message, uint32_t peer, uint64_t timeout_ms) {
  return send_to(o, kind, message, peer, timeout_ms, false);
}

/* A send's time limit: one interval, or its transfer time, or four times what the peer's
 * answers have taken, whichever is longest (an answer takes milliseconds, so a lost
 * message is heard by the next round, not after PEER_TIMEOUT_MS: waiting for that made
 * the convergence tail); a push's doubled for each failure in a row after the first (most
 * failures are one lost message), as TCP's retransmission timer backs off: a peer that
 * answers in 1.5 s is sent a push three times, not until an estimate catches up; up to
 * PEER_TIMEOUT_MS. Used where the request bounds
 * the answer (pushes, digest exchanges), not for a repair, whose answer is the peer's. */
static uint64_t send_timeout_ms(const out_t *o, uint32_t peer, size_t bytes) {
  uint64_t t = RK_MAX(interval_ms(o->n), (uint64_t)(bytes / PUSH_BYTES_PER_MS));
  t = RK_MAX(t, 4u * RK_MIN(o->st->peers[peer].rtt_ms, (uint64_t)PEER_TIMEOUT_MS));
  return RK_MIN(t, (uint64_t)PEER_TIMEOUT_MS);
}

static uint64_t push_timeout_ms(const out_t *o, uint32_t peer, size_t bytes) {
  uint64_t t = send_timeout_ms(o, peer, bytes);
  uint32_t failures = o->st->peers[peer].failures;
  t <<= failures > 1u ? RK_MIN(failures - 1u, 16u) : 0u;
  return RK_MIN(t, (uint64_t)PEER_TIMEOUT_MS);
}

/* A row write for an Applied: seq 0 keeps the row's sequence. `was_live`: the row's
 * winner was live before (the live count follows). */
static void gc_schedule(out_t *o);
static bool applied_tombstones(rk_slice applied);

static void row_applied(out_t *o, rk_slice applied, uint64_t seq, bool from_client, bool was_live) {
  rk_report_row(&o->st->rep, was_live, applied);
  if (applied_tombstones(applied)) gc_schedule(o);
  size_t m = pb_begin(&o->rows, 2);
  pb_put_bytes_always(&o->rows, 1, applied);
  pb_put_uint(&o->rows, 3, seq);
  pb_put_bool(&o->rows, 4, from_client);
  pb_end(&o->rows, m);
}

/* A collection agreement noted or voided (GcMark, as GcDecideReply gives it). */
static void row_mark(out_t *o, rk_slice mark) {
  size_t m = pb_begin(&o->rows, 2);
  pb_put_bytes_always(&o->rows, 5, mark);
  pb_end(&o->rows, m);
}

static void row_touch(out_t *o, rk_slice key, uint64_t seq) {
  size_t m = pb_begin(&o->rows, 2);
  pb_put_bytes(&o->rows, 2, key);
  pb_put_uint(&o->rows, 3, seq);
  pb_end(&o->rows, m);
}

/* The key of an encoded Applied. */
static rk_slice applied_key(rk_slice applied) {
  int t_;
  bool ok = true;
  rk_slice key = {NULL, 0};
  FIELDS(applied) {
    case 1: ok = pb_get_bytes(R, WT, &key); break;
    SKIP;
  }
  return key;
}

static void note_change(out_t *o) { o->st->s.last_change_ms = o->now; }

/* A local change: anti-entropy starts its count over at the base interval. */
static void ae_reset(out_t *o) {
  sched_t *s = &o->st->s;
  uint64_t base = interval_ms(o->n);
  s->ae_agreed = 0;
  if (s->ae_interval_ms == base && s->ae_next_ms <= o->now + base) return;
  s->ae_interval_ms = base;
  s->ae_next_ms = o->now + base;
}

/* ---------------------------------------------------------------------------------------
 * Sent keys: the deferrals a peer may send back */

static bool sent_slot(const rk_step *st, uint64_t h, size_t *slot) {
  size_t i = (size_t)(h % SENT_SLOTS);
  while (st->sent[i] != 0 && st->sent[i] != h) i = (i + 1) % SENT_SLOTS;
  *slot = i;
  return st->sent[i] == h;
}

static void sent_add(rk_step *st, rk_slice key) {
  if (st->sent_len >= SENT_SLOTS / 2) {
    /* Older keys are forgotten: one deferred by then only waits for anti-entropy. */
    memset(st->sent, 0, sizeof st->sent);
    st->sent_len = 0;
  }
  uint64_t h = rk_hash_slice(key) | 1u;
  size_t slot;
  if (sent_slot(st, h, &slot)) return;
  st->sent[slot] = h;
  st->sent_len++;
}

static bool sent_has(const rk_step *st, rk_slice key) {
  size_t slot;
  return sent_slot(st, rk_hash_slice(key) | 1u, &slot);
}

/* ---------------------------------------------------------------------------------------
 * Merging a Push: gossip, a repair request, or the answer to this node's send */

static int merge_range(out_t *o, rk_slice rows_raw, local_info *rows, size_t rows_len, bool whole,
                       bool last, size_t from, size_t to);
static int applied_rebase(out_t *o, rk_slice *applied, size_t at);

/* Starts merging `message`. Incoming pushes (answer false) fail the step on a malformed
 * message; answers are only counted. */
static int merge_begin(out_t *o, rk_slice message, bool answer) {
  rk_step *st = o->st;
  pb_enc e;
  enc(o, &e);
  pb_put_bytes(&e, 1, message);
  rk_slice mk;
  int rc = inner(o, RINGKV_OP_MESSAGE_KEYS, &e, &mk);
  if (rc != RINGKV_OK) return rc;
  chain_clear(st);
  if (!buf_set(&st->msg, message) || !buf_set(&st->mk, mk)) return RINGKV_E_NOMEM;
  st->msg_answer = answer;
  st->msg_short = false;
  int t_;
  bool ok = true, repair = false, ranges = false;
  size_t keys = 0;
  rk_slice key;
  FIELDS(mk) {
    case 2: ok = pb_get_bytes(R, WT, &key); keys++; break;
    case 3: ok = pb_skip(R, WT); repair = true; break;
    case 4: ok = pb_skip(R, WT); ranges = true; break;
    SKIP;
  }
  if (ranges) {
    /* A repair request over key ranges: their rows (with values) as far as a repair's
     * bounds take them, and every key it carries (its merge needs their rows, whichever
     * range they lie in; the answer covers the ranges loaded). */
    load_begin(o);
    FIELDS(mk) {
      case 2: ok = pb_get_bytes(R, WT, &key); if (ok) pb_put_bytes_always(&o->load, 1, key); break;
      case 4: ok = pb_get_bytes(R, WT, &key); if (ok) pb_put_bytes_always(&o->load, 14, key); break;
      SKIP;
    }
    pb_put_uint(&o->load, 15, AE_REPAIR_ROWS_MAX);
    pb_put_uint(&o->load, 16, AE_REPAIR_BYTES_MAX);
    st->msg_ranges = true;
    st->wait = WAIT_MERGE_REPAIR;
    return RINGKV_OK;
  }
  if (repair) {
    /* A repair request is merged whole: its answer covers every local key of its shards,
     * loaded with them; only its keys of other shards are loaded apart. */
    bool *asked = rk_zalloc(&o->n->arena, o->n->cfg.shards);
    if (asked == NULL) return RINGKV_E_NOMEM;
    load_begin(o);
    FIELDS(mk) {
      case 3: {
        rk_slice packed;
        ok = pb_get_bytes(R, WT, &packed);
        pb_rd pr = pb_reader(packed);
        uint64_t v;
        while (ok && !pb_done(&pr) && pb_read_varint(&pr, &v)) {
          if (v < o->n->cfg.shards) asked[v] = true;
        }
        if (ok) {
          size_t m = pb_begin(&o->load, 3);
          pb_put_raw(&o->load, packed.ptr, packed.len);
          pb_end(&o->load, m);
        }
        break;
      }
      SKIP;
    }
    FIELDS(mk) {
      case 2:
        ok = pb_get_bytes(R, WT, &key);
        if (ok && !asked[rk_hash_slice(key) % o->n->cfg.shards]) pb_put_bytes_always(&o->load, 1, key);
        break;
      SKIP;
    }
    st->wait = WAIT_MERGE_REPAIR;
    return RINGKV_OK;
  }
  if (keys == 0) {
    rk_slice none = {NULL, 0};
    return merge_range(o, none, NULL, 0, true, true, 0, 0);
  }
  st->keys_from = 0;
  st->wait = WAIT_MERGE_RANGE;
  load_begin(o);
  FIELDS(mk) {
    case 2: ok = pb_get_bytes(R, WT, &key); pb_put_bytes_always(&o->load, 1, key); break;
    SKIP;
  }
  pb_put_uint(&o->load, 2, MERGE_ROWS_BYTES_MAX);
  return RINGKV_OK;
}

static int local_info_cmp(const void *x, const void *y) {
  return rk_slice_cmp(((const local_info *)x)->key, ((const local_info *)y)->key);
}

/* OP_MERGE over entries [from, to) (whole: all) with the loaded rows (sorted here by key),
 * and its writes. */
static int merge_range(out_t *o, rk_slice rows_raw, local_info *rows, size_t rows_len, bool whole,
                       bool last, size_t from, size_t to) {
  rk_step *st = o->st;
  ringkv_node *n = o->n;
  pb_enc e;
  enc(o, &e);
  pb_put_uint(&e, 1, o->now);
  pb_put_bytes(&e, 2, buf_slice(&st->msg));
  pb_put_raw(&e, rows_raw.ptr, rows_raw.len);
  pb_put_bool(&e, 4, st->msg_answer);
  pb_put_uint(&e, 8, st->ranges_loaded);
  pb_put_bool(&e, 9, st->msg_moves);
  if (!whole) {
    pb_put_uint(&e, 5, from);
    pb_put_uint(&e, 6, to);
    if (last) pb_put_raw(&e, st->deferred.ptr, st->deferred.len);
  }
  rk_slice rep;
  int rc = inner(o, RINGKV_OP_MERGE, &e, &rep);
  if (rc != RINGKV_OK) {
    chain_clear(st);
    return rc;
  }
  uint64_t low = lowest_ack(n, st);
  if (rows_len > 1) qsort(rows, rows_len, sizeof *rows, local_info_cmp);
  int t_;
  bool ok = true, changed = false;
  rk_slice s;
  FIELDS(rep) {
    case 2: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      if (st->msg_at != 0) RK_TRY(applied_rebase(o, &s, st->msg_at));
      local_info probe = {.key = applied_key(s)};
      const local_info *row = rows_len ? bsearch(&probe, rows, rows_len, sizeof *rows, local_info_cmp) : NULL;
      /* A client's write stays a client's write until every peer has it. */
      bool from_client = row != NULL && row->from_client && row->seq > low;
      row_applied(o, s, ++st->s.seq, from_client, row != NULL && rk_meta_live(row->meta));
      stat_named(o, "entries_applied", 1);
      changed = true;
      st->cover_changed++;
      break;
    }
    case 3: ok = pb_get_bytes(R, WT, &s); if (ok && last && !st->msg_answer) o->reply = s; break;
    case 5: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      rk_slice reason = {NULL, 0};
      uint32_t count = 0;
      FIELDS(s) {
        case 1: ok = pb_get_bytes(R, WT, &reason); break;
        case 2: ok = pb_get_u32(R, WT, &count); break;
        SKIP;
      }
      stat_refused(o, reason, count);
      if (count > 0) st->msg_short = true;
      /* A covering page's refused entries are not at this node: the sender must not drop
       * them (its pass runs again, and waits for good while the refusal stands). */
      st->cover_changed += count;
      break;
    }
    case 6: {
      /* Keys the peer deferred go out again (a new sequence puts them past its ack), but
       * only keys this node just sent it. */
      ok = pb_get_bytes(R, WT, &s);
      if (ok && sent_has(st, s)) row_touch(o, s, ++st->s.seq);
      break;
    }
    case 7: {
      ok = pb_get_bytes(R, WT, &s);
      if (ok) st->msg_short = true;
      if (ok) st->cover_changed++;
      if (ok && !last) {
        pb_enc d;
        enc(o, &d);
        pb_put_bytes_always(&d, 7, s);
        if (!buf_append(&st->deferred, pb_result(&d))) return RINGKV_E_NOMEM;
      }
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;   /* our own reply: a bug */
  /* Learned changes wait for a round that runs anyway unless they are relayed; a touched
   * key goes at the next round (the alarm follows from the state). */
  if (changed) note_change(o);
  /* A covering page's answer: how many of its entries changed this node (or waited). */
  if (last && st->msg_cover) RK_TRY(rk_cover_reply(n, st->page_shard, false, st->cover_changed, &o->reply));
  if (last) chain_clear(st);
  return RINGKV_OK;
}

/* An Applied whose put values' offsets are moved by `at` (into the arena). */
static int applied_rebase(out_t *o, rk_slice *applied, size_t at) {
  pb_enc e;
  enc(o, &e);
  int t_;
  bool ok = true;
  FIELDS(*applied) {
    case 6: {
      rk_slice v;
      ok = pb_get_bytes(R, WT, &v);
      if (!ok) break;
      rk_slice dot = {NULL, 0}, value = {NULL, 0};
      uint64_t off = 0, len = 0;
      FIELDS(v) {
        case 1: ok = pb_get_bytes(R, WT, &dot); break;
        case 2: ok = pb_get_bytes(R, WT, &value); break;
        case 3: ok = pb_get_u64(R, WT, &off); break;
        case 4: ok = pb_get_u64(R, WT, &len); break;
        SKIP;
      }
      size_t m = pb_begin(&e, 6);
      size_t d = pb_begin(&e, 1);
      pb_put_raw(&e, dot.ptr, dot.len);
      pb_end(&e, d);
      pb_put_bytes(&e, 2, value);
      pb_put_uint(&e, 3, value.len == 0 && len > 0 ? off + at : off);
      pb_put_uint(&e, 4, len);
      pb_end(&e, m);
      break;
    }
    default: {
      /* Every other field as it is. */
      const uint8_t *from = r_.p;
      ok = pb_skip(R, WT);
      size_t tag_len = pb_varint_size(((uint64_t)f_ << 3) | wt_);
      pb_put_raw(&e, from - tag_len, (size_t)(r_.p - from) + tag_len);
      break;
    }
  }
  if (!ok || t_ < 0) return RINGKV_E_STATE;
  if (e.err) return e.err;
  *applied = pb_result(&e);
  return RINGKV_OK;
}

/* Parses a `loaded` event's Local list (field `field`) into infos, and copies the raw
 * Locals into `raw` as field `out_field` (the locals of the next operation's request). */
static int locals_collect(out_t *o, rk_slice loaded, uint32_t field, pb_enc *raw, uint32_t out_field,
                          local_info **infos, size_t *len) {
  int t_;
  bool ok = true;
  size_t cap = 0;
  rk_slice s;
  *len = 0;
  *infos = NULL;
  FIELDS(loaded) {
    default:
      if (f_ != field) {
        ok = pb_skip(R, WT);
        break;
      }
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      if (*len == cap) {
        size_t nc = cap ? cap * 2 : 16;
        local_info *p = rk_realloc(&o->n->arena, *infos, cap * sizeof **infos, nc * sizeof **infos);
        if (p == NULL) return RINGKV_E_NOMEM;
        *infos = p;
        cap = nc;
      }
      ok = local_info_read(s, &(*infos)[*len]);
      (*len)++;
      if (raw != NULL) pb_put_bytes_always(raw, out_field, s);
      break;
  }
  return ok && t_ >= 0 ? RINGKV_OK : RINGKV_E_DECODE;
}

static size_t mk_keys(out_t *o, rk_slice **keys) {
  int t_;
  bool ok = true;
  size_t len = 0, cap = 0;
  rk_slice k;
  *keys = NULL;
  FIELDS(buf_slice(&o->st->mk)) {
    case 2: {
      ok = pb_get_bytes(R, WT, &k);
      if (!ok) break;
      if (len == cap) {
        size_t nc = cap ? cap * 2 : 64;
        rk_slice *p = rk_realloc(&o->n->arena, *keys, cap * sizeof *p, nc * sizeof *p);
        if (p == NULL) return len;
        *keys = p;
        cap = nc;
      }
      (*keys)[len++] = k;
      break;
    }
    SKIP;
  }
  return len;
}

/* A repair request over key ranges: the loaded ranges' rows (with values), and the rows of
 * its keys not among them. */
static int merge_ranges_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  pb_enc raw;
  enc(o, &raw);
  local_info *srows, *rows;
  size_t srows_len, rows_len;
  RK_TRY(locals_collect(o, loaded, 9, &raw, 3, &srows, &srows_len));
  RK_TRY(locals_collect(o, loaded, 1, NULL, 3, &rows, &rows_len));
  int t_;
  bool ok = true;
  FIELDS(loaded) {
    case 8: ok = pb_get_u32(R, WT, &st->ranges_loaded); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (srows_len > 1) qsort(srows, srows_len, sizeof *srows, local_info_cmp);
  local_info *all = rk_alloc_array(&o->n->arena, srows_len + rows_len + 1, sizeof *all);
  if (all == NULL) return RINGKV_E_NOMEM;
  if (srows_len) memcpy(all, srows, srows_len * sizeof *all);
  size_t len = srows_len;
  rk_slice s;
  FIELDS(loaded) {
    case 1: {
      ok = pb_get_bytes(R, WT, &s);
      local_info li;
      if (!ok || !local_info_read(s, &li)) {
        ok = false;
        break;
      }
      if (srows_len > 0 && bsearch(&li, srows, srows_len, sizeof *srows, local_info_cmp) != NULL) break;
      pb_put_bytes_always(&raw, 3, s);
      all[len++] = li;
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  return merge_range(o, pb_result(&raw), all, len, true, true, 0, 0);
}

static int merge_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  pb_enc raw;
  enc(o, &raw);
  local_info *rows;
  size_t rows_len;
  if (st->wait == WAIT_MERGE_REPAIR && st->msg_ranges) return merge_ranges_loaded(o, loaded);
  if (st->wait == WAIT_MERGE_REPAIR) {
    /* Its shards' rows (with values) and the rows of its other keys: no key twice. */
    local_info *srows;
    size_t srows_len;
    RK_TRY(locals_collect(o, loaded, 3, &raw, 3, &srows, &srows_len));
    RK_TRY(locals_collect(o, loaded, 1, &raw, 3, &rows, &rows_len));
    local_info *all = rk_alloc_array(&o->n->arena, srows_len + rows_len + 1, sizeof *all);
    if (all == NULL) return RINGKV_E_NOMEM;
    if (srows_len) memcpy(all, srows, srows_len * sizeof *all);
    if (rows_len) memcpy(all + srows_len, rows, rows_len * sizeof *all);
    return merge_range(o, pb_result(&raw), all, srows_len + rows_len, true, true, 0, 0);
  }
  RK_TRY(locals_collect(o, loaded, 1, &raw, 3, &rows, &rows_len));
  rk_slice *keys;
  size_t keys_len = mk_keys(o, &keys);
  size_t from = st->keys_from;
  size_t to = from + rows_len;
  if (rows_len == 0 || to > keys_len) {
    chain_clear(st);
    return RINGKV_E_STATE;   /* the executor loaded other rows than asked */
  }
  bool last = to >= keys_len;
  RK_TRY(merge_range(o, pb_result(&raw), rows, rows_len, false, last, from, to));
  if (!last) {
    st->keys_from = to;
    st->wait = WAIT_MERGE_RANGE;
    load_begin(o);
    for (size_t i = to; i < keys_len; i++) pb_put_bytes_always(&o->load, 1, keys[i]);
    pb_put_uint(&o->load, 2, MERGE_ROWS_BYTES_MAX);
  }
  return RINGKV_OK;
}

/* An answer to this node's push or repair: merged like any Push, a bad one only counted. */
static void merge_answer(out_t *o, rk_slice message) {
  if (message.len == 0) return;
  int rc = merge_begin(o, message, true);
  if (rc == RINGKV_E_PROTOCOL) stat_named(o, "refused_protocol_version", 1);
  else if (rc == RINGKV_E_DECODE || rc == RINGKV_E_VALUE) stat_named(o, "refused_malformed", 1);
  if (rc != RINGKV_OK) chain_clear(o->st);
}

/* ---------------------------------------------------------------------------------------
 * The gossip round */

static bool peer_ready(const out_t *o, uint32_t p) {
  const peer_t *ps = &o->st->peers[p];
  return p != o->n->self && ps->push_tag == 0 && ps->retry_at <= o->now;
}

static void ae_finish(out_t *o, int outcome);
static void push_outcome(out_t *o, uint32_t p, bool ok);
enum { AE_EQUAL, AE_DIFFER, AE_UNKNOWN };

/* Sends whose outcome never came back (the executor owes one per target, but a lost one
 * must not hold a peer, anti-entropy or collection forever): lost, after twice the time
 * limit. */
static void forget_stale_sends(out_t *o) {
  rk_step *st = o->st;
  uint64_t limit = 2u * (uint64_t)PEER_TIMEOUT_MS;
  uint64_t before = o->now > limit ? o->now - limit : 0;
  for (uint32_t p = 0; p < st->peers_len; p++) {
    if (st->peers[p].push_tag != 0 && st->peers[p].push_at < before) push_outcome(o, p, false);
  }
  if (st->ae_phase != AE_IDLE && st->wait != WAIT_AE_REPAIR && st->wait != WAIT_AE_OWN_PARTS && st->ae_at < before) {
    ae_finish(o, AE_UNKNOWN);
  }
  if (st->ae_repair_tag != 0 && st->ae_repair_at < before) st->ae_repair_tag = 0;
  if (st->gc_len > 0 && st->gc_at < before) gc_clear(st);
}

/* Markers collected before this are deleted. */
static uint64_t marker_before(const out_t *o) {
  uint64_t keep = rk_marker_keep_ms(o->n);
  return o->now > keep ? o->now - keep : 0;
}

static void round_begin(out_t *o) {
  rk_step *st = o->st;
  ringkv_node *n = o->n;
  forget_stale_sends(o);
  st->s.last_round_ms = o->now;
  stat_named(o, "rounds", 1);
  load_begin(o);
  /* Markers past their time (and an earlier release's zero digests). */
  pb_put_uint(&o->load, 10, EXPIRE_KEYS_MAX);
  pb_put_fixed64(&o->load, 11, marker_before(o));
  pb_put_bool(&o->load, 13, true);
  /* The rows changed since the lowest acknowledgement among the peers a push can go to. */
  uint64_t min_ack = UINT64_MAX;
  for (uint32_t p = 0; p < st->peers_len; p++) {
    if (peer_ready(o, p)) min_ack = RK_MIN(min_ack, st->peers[p].acked);
  }
  st->scan_push = min_ack != UINT64_MAX && min_ack < st->s.seq;
  st->scan_seq = st->s.seq;
  if (st->scan_push) {
    /* Without relaying only clients' writes are pushed, so only they are read: a backlog
     * of learned changes must not hold a client's write back. */
    pb_put_bool(&o->load, 5, true);
    pb_put_uint(&o->load, 6, min_ack);
    pb_put_bool(&o->load, 7, !relaying(n, st));
    pb_put_uint(&o->load, 8, PUSH_CANDIDATES_MAX);
    pb_put_uint(&o->load, 9, PUSH_ROW_BYTES_MAX);
  }
  /* Collection's next batch, when due and none is in flight. */
  st->gc_loading = st->gc_len == 0 && st->s.gc_at_ms != 0 && st->s.gc_at_ms <= o->now;
  if (st->gc_loading) {
    pb_put_uint(&o->load, 12, GC_KEYS_MAX);
    pb_put_uint(&o->load, 22, st->s.gc_cursor);
    /* A pass starting reads every tombstone row: what became one before is in it. */
    if (st->s.gc_cursor == 0) st->s.gc_pending_ms = 0;
  }
  st->wait = WAIT_ROUND;
}

static void push_outcome(out_t *o, uint32_t p, bool ok) {
  peer_t *ps = &o->st->peers[p];
  /* A peer answering again may be the replica collection waited for: a pass backing off
   * comes soon. */
  if (ok && ps->failures > 0 && o->st->s.gc_at_ms != 0) gc_schedule(o);
  if (ok) {
    ps->acked = RK_MAX(ps->acked, ps->ack_on_success);
    ps->failures = 0;
    ps->retry_at = 0;
  } else {
    /* The next round for the first PEER_RETRY_QUICK failures in a row, then 2, 4, 8, ...
     * intervals from the round's start, up to PEER_BACKOFF_MS_MAX. */
    ps->failures++;
    uint32_t backoff = ps->failures > PEER_RETRY_QUICK ? ps->failures - PEER_RETRY_QUICK : 0;
    uint64_t wait = interval_ms(o->n) << RK_MIN(backoff, 16u);
    ps->retry_at = backoff == 0 ? 0 : o->st->s.last_round_ms + RK_MIN(wait, (uint64_t)PEER_BACKOFF_MS_MAX);
  }
  ps->push_tag = 0;
  ps->hedge_tag = 0;
  ps->dirty = true;
}

static int round_push(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  pb_enc req;
  enc(o, &req);
  int t_;
  bool ok = true;
  size_t count = 0;
  uint64_t bytes = 0, last_seq = 0;
  rk_slice s;
  FIELDS(loaded) {
    case 4: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      pb_put_bytes_always(&req, 1, s);
      rk_slice local = {NULL, 0};
      FIELDS(s) {
        case 1: ok = pb_get_bytes(R, WT, &local); break;
        case 2: ok = pb_get_u64(R, WT, &last_seq); break;
        SKIP;
      }
      local_info li;
      if (ok) ok = local_info_read(local, &li);
      if (ok) sent_add(st, li.key);
      bytes += li.bytes;
      count++;
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  bool truncated = count >= PUSH_CANDIDATES_MAX || bytes >= PUSH_ROW_BYTES_MAX;
  for (uint32_t p = 0; p < st->peers_len; p++) {
    if (!peer_ready(o, p)) continue;
    size_t m = pb_begin(&req, 2);
    pb_put_uint(&req, 1, p);
    pb_put_uint(&req, 2, st->peers[p].acked);
    pb_end(&req, m);
  }
  pb_put_uint(&req, 3, truncated && count > 0 ? last_seq : st->scan_seq);
  pb_put_bool(&req, 4, st->s.fence != FENCE_NONE);
  rk_slice rep;
  RK_TRY(inner(o, RINGKV_OP_BUILD_PUSH, &req, &rep));
  FIELDS(rep) {
    case 1: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      uint32_t peer = 0, entries = 0;
      uint64_t ack = 0;
      rk_slice message = {NULL, 0}, shared = {NULL, 0};
      FIELDS(s) {
        case 1: ok = pb_get_u32(R, WT, &peer); break;
        case 2: ok = pb_get_bytes(R, WT, &message); break;
        case 3: ok = pb_get_u64(R, WT, &ack); break;
        case 4: ok = pb_get_u32(R, WT, &entries); break;
        case 5: ok = pb_get_bytes(R, WT, &shared); break;   /* packed */
        SKIP;
      }
      if (!ok || peer >= st->peers_len) break;
      /* The same message may go to more peers (a key too large for a round). */
      uint32_t targets[RINGKV_CLUSTER_SIZE_MAX];
      size_t tl = 0;
      targets[tl++] = peer;
      pb_rd pr = pb_reader(shared);
      uint64_t v;
      while (!pb_done(&pr) && pb_read_varint(&pr, &v) && tl < RINGKV_CLUSTER_SIZE_MAX) {
        if (v < st->peers_len) targets[tl++] = (uint32_t)v;
      }
      for (size_t i = 0; i < tl; i++) {
        peer_t *ps = &st->peers[targets[i]];
        ps->ack_on_success = ack;
        ps->entries = entries;
        if (message.len == 0) {
          push_outcome(o, targets[i], true);   /* nothing for this peer */
        } else {
          uint64_t limit = push_timeout_ms(o, targets[i], message.len);
          ps->push_tag = send_one(o, KIND_PUSH, message, targets[i], limit);
          if (ps->failures >= PUSH_HEDGE_AFTER && ps->failures < PEER_RETRY_QUICK)
            ps->hedge_tag = send_one(o, KIND_PUSH, message, targets[i], limit);
          ps->push_at = o->now;
        }
      }
      break;
    }
    SKIP;
  }
  return ok && t_ >= 0 ? RINGKV_OK : RINGKV_E_DECODE;
}

/* Collection decides on the batch's rows as they are when every reply is in. */
static void gc_decide_load(out_t *o) {
  load_begin(o);
  rk_slice keys = buf_slice(&o->st->gc_keys);
  pb_put_raw(&o->load, keys.ptr, keys.len);
  o->st->wait = WAIT_GC_DECIDE;
}

static int round_gc_query(out_t *o, rk_slice collectable_raw, size_t count) {
  rk_step *st = o->st;
  if (count == 0) return RINGKV_OK;
  pb_enc req;
  enc(o, &req);
  pb_put_uint(&req, 1, o->now);
  pb_put_raw(&req, collectable_raw.ptr, collectable_raw.len);   /* field 2 */
  rk_slice rep;
  RK_TRY(inner(o, RINGKV_OP_GC_QUERY, &req, &rep));
  int t_;
  bool ok = true;
  rk_slice s;
  size_t outs = 0;
  FIELDS(rep) {
    case 1: ok = pb_skip(R, WT); outs++; break;
    SKIP;
  }
  st->gc_tags = calloc(outs ? outs : 1, sizeof *st->gc_tags);
  st->gc_replies = calloc(outs ? outs : 1, sizeof *st->gc_replies);
  if (st->gc_tags == NULL || st->gc_replies == NULL) {
    gc_clear(st);
    return RINGKV_E_NOMEM;
  }
  FIELDS(rep) {
    case 1: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      uint32_t peer = 0;
      rk_slice message = {NULL, 0};
      FIELDS(s) {
        case 1: ok = pb_get_u32(R, WT, &peer); break;
        case 2: ok = pb_get_bytes(R, WT, &message); break;
        SKIP;
      }
      if (ok && message.len > 0) st->gc_tags[st->gc_len++] = send_one(o, KIND_GC, message, peer, PEER_TIMEOUT_MS);
      break;
    }
    SKIP;
  }
  st->gc_waiting = st->gc_len;
  st->gc_at = o->now;
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  /* No other replica to ask: decide now, with no replies. */
  if (st->gc_len == 0) gc_decide_load(o);
  return RINGKV_OK;
}

/* A pass over every tombstone row ended: the next one when a noted agreement's grace ends,
 * or (keys left undecided) after a wait that doubles each such pass, or not at all until a
 * tombstone row changes: an idle node with undecidable keys goes quiet. */
static void gc_pass_end(out_t *o) {
  sched_t *s = &o->st->s;
  uint64_t next = 0;
  if (s->gc_undecided) {
    uint64_t base = RK_MAX(interval_ms(o->n), (uint64_t)GC_RETRY_MS_MIN);
    s->gc_retry_ms = s->gc_retry_ms == 0 ? base : RK_MIN(s->gc_retry_ms * 2u, (uint64_t)GC_RETRY_MS_MAX);
    next = o->now + s->gc_retry_ms;
  } else {
    s->gc_retry_ms = 0;
  }
  if (s->gc_due_ms != 0) next = next == 0 ? s->gc_due_ms : RK_MIN(next, s->gc_due_ms);
  /* A row that became all tombstones during the pass (perhaps behind its cursor). */
  if (s->gc_pending_ms != 0) next = next == 0 ? s->gc_pending_ms : RK_MIN(next, s->gc_pending_ms);
  s->gc_pending_ms = 0;
  s->gc_at_ms = next == 0 ? 0 : RK_MAX(next, o->now + 1u);
  s->gc_cursor = 0;
  s->gc_due_ms = 0;
  s->gc_undecided = false;
}

/* A row became all tombstones: collection looks at it once its gossip has settled, and a
 * pass waiting out a back-off starts over; a pass under way runs again after it ends (it
 * may have gone past the row). */
static void gc_schedule(out_t *o) {
  sched_t *s = &o->st->s;
  uint64_t at = o->now + GC_SETTLE_INTERVALS * interval_ms(o->n);
  s->gc_retry_ms = 0;
  if (s->gc_at_ms == 0 || s->gc_at_ms > at) s->gc_at_ms = at;
  if (s->gc_pending_ms == 0 || s->gc_pending_ms > at) s->gc_pending_ms = at;
}

/* Whether an Applied leaves the row with versions, all tombstones (KeyInfo). */
static bool applied_tombstones(rk_slice applied) {
  int t_;
  bool ok = true, all_deleted = false;
  uint64_t siblings = 0;
  rk_slice info = {NULL, 0};
  FIELDS(applied) {
    case 9: ok = pb_get_bytes(R, WT, &info); break;
    SKIP;
  }
  FIELDS(info) {
    case 4: ok = pb_get_bool(R, WT, &all_deleted); break;
    case 6: ok = pb_get_u64(R, WT, &siblings); break;
    SKIP;
  }
  return ok && all_deleted && siblings > 0;
}

/* The batch's keys (for the decision's load) and its last row's order. */
static int gc_batch(out_t *o, rk_slice loaded, size_t count) {
  rk_step *st = o->st;
  pb_enc keys;
  enc(o, &keys);
  int t_;
  bool ok = true;
  rk_slice s;
  uint64_t last = st->s.gc_cursor;
  FIELDS(loaded) {
    case 6: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      rk_slice key = {NULL, 0};
      uint64_t order = 0;
      FIELDS(s) {
        case 1: ok = pb_get_bytes(R, WT, &key); break;
        case 10: ok = pb_get_u64(R, WT, &order); break;
        SKIP;
      }
      pb_put_bytes_always(&keys, 1, key);
      last = RK_MAX(last, order);
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (keys.err) return keys.err;
  if (!buf_set(&st->gc_keys, pb_result(&keys))) return RINGKV_E_NOMEM;
  st->gc_last_order = last;
  st->gc_full = count >= GC_KEYS_MAX;
  return RINGKV_OK;
}

static void ae_maybe_start(out_t *o);

static int round_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  ringkv_node *n = o->n;
  st->wait = WAIT_NONE;
  /* Expiry. */
  pb_enc ex, gc;
  enc(o, &ex);
  enc(o, &gc);
  local_info *infos;
  size_t expirable, collectable;
  pb_put_uint(&ex, 1, o->now);
  RK_TRY(locals_collect(o, loaded, 5, &ex, 2, &infos, &expirable));
  RK_TRY(locals_collect(o, loaded, 6, &gc, 2, &infos, &collectable));
  uint64_t next_expiry = 0;
  int t_;
  bool ok = true;
  rk_slice s;
  FIELDS(loaded) {
    case 7: ok = pb_get_fixed64(R, WT, &next_expiry); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (expirable > 0) {
    rk_slice rep;
    RK_TRY(inner(o, RINGKV_OP_EXPIRE, &ex, &rep));
    FIELDS(rep) {
      case 1: ok = pb_get_bytes(R, WT, &s); if (ok) row_applied(o, s, 0, false, false); break;
      SKIP;
    }
  }
  /* The next marker to delete, or the next round when this one left some. */
  if (expirable >= EXPIRE_KEYS_MAX) st->s.expiry_at_ms = o->now;
  else if (next_expiry != 0) st->s.expiry_at_ms = rk_add_sat(next_expiry, rk_marker_keep_ms(n)) + 1u;
  else st->s.expiry_at_ms = 0;
  if (st->scan_push) RK_TRY(round_push(o, loaded));
  if (st->gc_loading) {
    st->gc_loading = false;
    if (collectable == 0) {
      gc_pass_end(o);
    } else {
      RK_TRY(gc_batch(o, loaded, collectable));
      RK_TRY(round_gc_query(o, pb_result(&gc), collectable));
    }
  }
  ae_maybe_start(o);
  return RINGKV_OK;
}

/* ---------------------------------------------------------------------------------------
 * Tombstone collection */

static int gc_answered(out_t *o, size_t i, const rk_slice *message) {
  rk_step *st = o->st;
  if (message != NULL && !buf_set(&st->gc_replies[i], *message)) return RINGKV_E_NOMEM;
  st->gc_tags[i] = 0;
  /* Every peer answered or was lost: decide on the rows as they are now. */
  if (--st->gc_waiting == 0) gc_decide_load(o);
  return RINGKV_OK;
}

static int gc_decide(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  st->wait = WAIT_NONE;
  pb_enc req;
  enc(o, &req);
  pb_put_uint(&req, 1, o->now);
  /* An agreement noted under another ring is void (SPEC: Tombstones); epoch 0 (no ring
   * given: unit tests) counts as the first. */
  pb_put_uint(&req, 4, RK_MAX(o->n->cfg.epoch, 1u));
  int t_;
  bool ok = true;
  rk_slice s;
  FIELDS(loaded) {
    case 1: ok = pb_get_bytes(R, WT, &s); if (ok) pb_put_bytes_always(&req, 2, s); break;
    SKIP;
  }
  for (size_t i = 0; i < st->gc_len; i++) {
    if (st->gc_replies[i].len > 0) pb_put_bytes_always(&req, 3, buf_slice(&st->gc_replies[i]));
  }
  bool full = st->gc_full;
  uint64_t last = st->gc_last_order;
  gc_clear(st);
  /* The pass goes on after this batch (its last row), or ends with it. */
  st->s.gc_cursor = last;
  rk_slice rep;
  int rc = inner(o, RINGKV_OP_GC_DECIDE, &req, &rep);
  if (rc == RINGKV_E_DECODE || rc == RINGKV_E_PROTOCOL) {
    /* A peer's reply did not decode: the batch is undecided. */
    stat_named(o, "refused_malformed", 1);
    st->s.gc_undecided = true;
  } else {
    RK_TRY(rc);
    uint64_t due = 0;
    uint32_t undecided = 0;
    FIELDS(rep) {
      case 1: ok = pb_get_bytes(R, WT, &s); if (ok) { row_applied(o, s, 0, false, false); stat_named(o, "gc_collected", 1); } break;
      case 2: ok = pb_get_bytes(R, WT, &s); if (ok) row_mark(o, s); break;
      case 3: ok = pb_get_u64(R, WT, &due); break;
      case 4: ok = pb_get_u32(R, WT, &undecided); break;
      SKIP;
    }
    if (!ok || t_ < 0) return RINGKV_E_DECODE;
    if (due != 0) st->s.gc_due_ms = st->s.gc_due_ms == 0 ? due : RK_MIN(st->s.gc_due_ms, due);
    if (undecided > 0) st->s.gc_undecided = true;
  }
  if (full) st->s.gc_at_ms = o->now;
  else gc_pass_end(o);
  return RINGKV_OK;
}

/* A peer's GcQuery: load the rows of its keys, then answer. */
static int gc_incoming(out_t *o, rk_slice message) {
  rk_step *st = o->st;
  int t_;
  bool ok = true;
  rk_slice kd;
  size_t keys = 0;
  load_begin(o);
  FIELDS(message) {
    case 3: {
      ok = pb_get_bytes(R, WT, &kd) && keys < RINGKV_ENTRIES_MAX;
      if (!ok) break;
      rk_slice key = {NULL, 0};
      FIELDS(kd) {
        case 1: ok = pb_get_bytes(R, WT, &key); break;
        SKIP;
      }
      if (key.len < 1 || key.len > RINGKV_KEY_BYTES_MAX) ok = false;
      pb_put_bytes_always(&o->load, 1, key);
      keys++;
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  chain_clear(st);
  if (!buf_set(&st->msg, message)) return RINGKV_E_NOMEM;
  st->wait = WAIT_GC_ANSWER;
  return RINGKV_OK;
}

/* The request answering the chain's held message: the message as field 1 and the loaded
 * items of `field` (rows, or parts) as field 2. */
static bool held_request(out_t *o, rk_slice loaded, uint32_t field, pb_enc *req) {
  enc(o, req);
  pb_put_bytes(req, 1, buf_slice(&o->st->msg));
  int t_;
  bool ok = true;
  rk_slice s;
  FIELDS(loaded) {
    default:
      if (f_ != field) {
        ok = pb_skip(R, WT);
        break;
      }
      ok = pb_get_bytes(R, WT, &s);
      if (ok) pb_put_bytes_always(req, 2, s);
      break;
  }
  return ok && t_ >= 0;
}

static int gc_answer_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  pb_enc req;
  int t_;
  bool ok = held_request(o, loaded, 1, &req);
  rk_slice s, rep;
  int rc = inner(o, RINGKV_OP_GC_ANSWER, &req, &rep);
  chain_clear(st);
  RK_TRY(rc);
  FIELDS(rep) {
    case 1: ok = pb_get_bytes(R, WT, &s); if (ok) o->reply = s; break;
    SKIP;
  }
  return RINGKV_OK;
}

/* ---------------------------------------------------------------------------------------
 * Anti-entropy: with one peer at a time, the peers sharing a shard taken in turn. Root
 * digest over the shared shards; on a difference the peer answers bucket digests and a
 * second exchange asks the differing buckets' shard digests (with at most 64 shared
 * shards, the first answer holds them already); then a repair exchange of the differing
 * shards' registers. The interval doubles (up to AE_INTERVAL_MS_MAX) only once the last
 * full cycle of peers all agreed; a difference, a failure after one was seen, or a local
 * write resets it. A failed first exchange teaches nothing. */


static void ae_finish(out_t *o, int outcome) {
  rk_step *st = o->st;
  sched_t *s = &st->s;
  uint64_t base = interval_ms(o->n);
  uint32_t np = (uint32_t)o->n->ae_peers_len;
  if (outcome == AE_DIFFER) {
    s->ae_agreed = 0;
    s->ae_interval_ms = base;
  } else if (outcome == AE_EQUAL && ++s->ae_agreed >= np) {
    s->ae_agreed = np;
    s->ae_interval_ms = RK_MIN(s->ae_interval_ms * 2, (uint64_t)AE_INTERVAL_MS_MAX);
  } else if (outcome == AE_UNKNOWN && ++st->ae_failed >= np) {
    /* A full cycle of peers none of which answered (all down, or cut off): nothing to
     * learn sooner, so an idle node with no reachable peer backs off too. */
    st->ae_failed = np;
    s->ae_interval_ms = RK_MIN(s->ae_interval_ms * 2, (uint64_t)AE_INTERVAL_MS_MAX);
  }
  if (outcome != AE_UNKNOWN) st->ae_failed = 0;
  s->ae_interval_ms = RK_MAX(s->ae_interval_ms, base);
  s->ae_next_ms = o->now + s->ae_interval_ms;
  ae_clear(st);
}

static void ae_maybe_start(out_t *o) {
  rk_step *st = o->st;
  sched_t *s = &st->s;
  ringkv_node *n = o->n;
  size_t np = n->ae_peers_len;
  if (st->ae_phase != AE_IDLE || np == 0 || o->now < s->ae_next_ms) return;
  uint64_t base = interval_ms(n);
  /* Quiet after a local change (the node is still learning: comparing digests mid-flight
   * only ships shards twice), unless anti-entropy starves. Its own pushes do not hold it:
   * a node an epidemic missed is found only by anti-entropy, and at R=N every node went
   * on relaying for rounds after the last change (11 rounds at N=64, 600 keys; 5-7 now,
   * bytes the same). */
  uint64_t quiet_at = s->last_change_ms + base * AE_QUIET_INTERVALS;
  if (o->now < quiet_at && o->now - s->ae_last_ms < base * AE_STARVE_INTERVALS) {
    s->ae_next_ms = quiet_at;
    return;
  }
  s->ae_last_ms = o->now;
  if (s->ae_cursor == 0 || s->ae_cursor > np) s->ae_cursor = (uint32_t)(rk_mix64(&o->rnd) % np) + 1u;
  uint32_t peer = n->ae_peers[s->ae_cursor - 1u];
  s->ae_cursor = (uint32_t)(s->ae_cursor % np) + 1u;
  pb_enc req;
  enc(o, &req);
  pb_put_uint(&req, 1, peer);
  rk_slice rep, msg = {NULL, 0};
  if (inner(o, RINGKV_OP_AE_START, &req, &rep) != RINGKV_OK) {
    ae_finish(o, AE_UNKNOWN);
    return;
  }
  int t_;
  bool ok = true;
  FIELDS(rep) {
    case 1: ok = pb_get_bytes(R, WT, &msg); break;
    SKIP;
  }
  st->ae_peer = peer;
  st->ae_phase = AE_ROOT;
  st->ae_tag = send_one(o, KIND_DIGEST, msg, peer, send_timeout_ms(o, peer, msg.len));
  st->ae_at = o->now;
}

/* The next exchange goes to `peer` again (AE_RETRY_SAME_PEER). */
static void ae_retry(out_t *o, uint32_t peer) {
  rk_step *st = o->st;
  const ringkv_node *n = o->n;
  if (peer != st->ae_retry_peer) st->ae_retries = 0;
  st->ae_retry_peer = peer;
  if (st->ae_retries >= AE_RETRY_SAME_PEER) {
    st->ae_retries = 0;
    return;
  }
  for (size_t i = 0; i < n->ae_peers_len; i++) {
    if (n->ae_peers[i] != peer) continue;
    st->s.ae_cursor = (uint32_t)i + 1u;
    st->ae_retries++;
    return;
  }
}

/* OP_AE_COMPARE on a peer's DigestReply. One that does not decode or is in a version this
 * node does not read ends the exchange, counted (*ended): it never fails the step. */
static int ae_compare(out_t *o, const pb_enc *req, rk_slice *rep, bool *ended) {
  int rc = inner(o, RINGKV_OP_AE_COMPARE, req, rep);
  if (rc == RINGKV_E_DECODE || rc == RINGKV_E_PROTOCOL) {
    stat_named(o, rc == RINGKV_E_PROTOCOL ? "refused_protocol_version" : "refused_malformed", 1);
    ae_finish(o, AE_DIFFER);
    *ended = true;
    return RINGKV_OK;
  }
  return rc;
}

/* Loads this node's parts of st->ae_asked; the request goes out once they are in. */
static void ae_ranges_ask(out_t *o) {
  rk_step *st = o->st;
  rk_ranges_sort(st->ae_asked, st->ae_asked_len);   /* as the peer reads them: in order */
  load_begin(o);
  for (size_t i = 0; i < st->ae_asked_len; i++) rk_range_write(&o->load, 17, &st->ae_asked[i]);
  st->wait = WAIT_AE_OWN_PARTS;
  st->ae_tag = 0;
}

static int ae_own_parts_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  st->wait = WAIT_NONE;
  int t_;
  bool ok = true;
  size_t got = 0;
  rk_slice s;
  FIELDS(loaded) {
    case 10:
      ok = pb_get_bytes(R, WT, &s) && got < st->ae_asked_len && rk_parts_read(s, &st->ae_own[got]);
      got++;
      break;
    SKIP;
  }
  if (!ok || t_ < 0 || got != st->ae_asked_len) {
    ae_finish(o, AE_UNKNOWN);
    return RINGKV_E_STATE;   /* the executor loaded other parts than asked */
  }
  pb_enc req;
  enc(o, &req);
  pb_put_uint(&req, 1, st->ae_peer);
  for (size_t i = 0; i < st->ae_asked_len; i++) rk_range_write(&req, 3, &st->ae_asked[i]);
  rk_slice rep, msg = {NULL, 0};
  int rc = inner(o, RINGKV_OP_AE_START, &req, &rep);
  if (rc != RINGKV_OK) {
    ae_finish(o, AE_UNKNOWN);
    return rc == RINGKV_E_NOMEM ? rc : RINGKV_OK;
  }
  FIELDS(rep) {
    case 1: ok = pb_get_bytes(R, WT, &msg); break;
    SKIP;
  }
  st->ae_phase = AE_RANGES;
  st->ae_tag = send_one(o, KIND_DIGEST, msg, st->ae_peer, send_timeout_ms(o, st->ae_peer, msg.len));
  st->ae_at = o->now;
  return RINGKV_OK;
}

/* Appends to `out` (holding *len, at most RINGKV_AE_RANGES_MAX) the KeyRanges of `field` in
 * `msg`, from a random one on: a bad or lost exchange does not hold the others back. */
static bool ranges_pick(out_t *o, rk_slice msg, uint32_t field, rk_range *out, size_t *len) {
  rk_range *all = rk_alloc_array(&o->n->arena, RINGKV_AE_RANGES_MAX * RINGKV_AE_PARTS, sizeof *all);
  size_t n = 0;
  if (all == NULL) return false;
  int t_;
  bool ok = true;
  rk_slice s;
  FIELDS(msg) {
    default:
      if (f_ != field) {
        ok = pb_skip(R, WT);
        break;
      }
      ok = pb_get_bytes(R, WT, &s) && n < RINGKV_AE_RANGES_MAX * RINGKV_AE_PARTS &&
           rk_range_read(s, o->n->cfg.shards, &all[n]);
      n++;
      break;
  }
  if (!ok || t_ < 0) return false;
  size_t from = n > 0 ? (size_t)(rk_mix64(&o->rnd) % n) : 0;
  for (size_t i = 0; i < n && *len < RINGKV_AE_RANGES_MAX; i++) out[(*len)++] = all[(from + i) % n];
  return true;
}

/* Loads the leaves' rows, from a random leaf on: the loader stops at the first leaf that
 * does not fit, so one that never does holds back different ones each time. */
static void ae_leaves_load(out_t *o) {
  rk_step *st = o->st;
  size_t n = st->ae_leaves_len;
  rk_range rotated[RINGKV_AE_RANGES_MAX];
  size_t from = n > 0 ? (size_t)(rk_mix64(&o->rnd) % n) : 0;
  for (size_t i = 0; i < n; i++) rotated[i] = st->ae_leaves[(from + i) % n];
  memcpy(st->ae_leaves, rotated, n * sizeof *rotated);
  load_begin(o);
  for (size_t i = 0; i < n; i++) rk_range_write(&o->load, 14, &st->ae_leaves[i]);
  pb_put_uint(&o->load, 15, AE_REPAIR_ROWS_MAX);
  pb_put_uint(&o->load, 16, AE_REPAIR_BYTES_MAX);
  st->wait = WAIT_AE_REPAIR;
  st->ae_tag = 0;
}

/* The peer's parts of the ranges asked: leaves gather for one repair, differing parts too
 * large are asked again, cut in 16, until none is left or the leaves fill a repair. */
static int ae_ranges_answered(out_t *o, rk_slice message) {
  rk_step *st = o->st;
  pb_enc req;
  enc(o, &req);
  pb_put_bytes(&req, 1, message);
  for (size_t i = 0; i < st->ae_asked_len; i++) rk_range_write(&req, 3, &st->ae_asked[i]);
  for (size_t i = 0; i < st->ae_asked_len; i++) rk_parts_write(&req, 4, &st->ae_own[i]);
  /* Cutting a leaf that did not load: down to single keys. */
  pb_put_uint(&req, 5, st->ae_cut ? 1u : AE_LEAF_KEYS);
  pb_put_uint(&req, 6, AE_REPAIR_ROWS_MAX - RK_MIN(st->ae_leaves_rows, (uint64_t)AE_REPAIR_ROWS_MAX));
  pb_put_uint(&req, 7, RINGKV_AE_RANGES_MAX - st->ae_leaves_len);
  pb_put_uint(&req, 8, rk_mix64(&o->rnd));
  pb_put_uint(&req, 9, st->ae_cut ? 1u : AE_REPAIR_ROWS_MAX);
  rk_slice rep;
  bool ended = false;
  RK_TRY(ae_compare(o, &req, &rep, &ended));
  if (ended) return RINGKV_OK;
  int t_;
  bool ok = true, equal = false;
  uint64_t rows = 0;
  FIELDS(rep) {
    case 1: ok = pb_get_bool(R, WT, &equal); break;
    case 6: ok = pb_get_u64(R, WT, &rows); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (!ranges_pick(o, rep, 4, st->ae_leaves, &st->ae_leaves_len)) return RINGKV_E_DECODE;
  st->ae_leaves_rows += rows;
  size_t next = 0;
  if (st->ae_leaves_len < RINGKV_AE_RANGES_MAX && st->ae_leaves_rows < AE_REPAIR_ROWS_MAX) {
    if (!ranges_pick(o, rep, 5, st->ae_asked, &next)) return RINGKV_E_DECODE;
  }
  if (next > 0) {
    st->ae_asked_len = next;
    ae_ranges_ask(o);
    return RINGKV_OK;
  }
  if (st->ae_leaves_len == 0) {
    ae_finish(o, equal ? AE_EQUAL : AE_DIFFER);
    return RINGKV_OK;
  }
  ae_leaves_load(o);
  return RINGKV_OK;
}

static int ae_answered(out_t *o, const rk_slice *message) {
  rk_step *st = o->st;
  bool root = st->ae_phase == AE_ROOT;
  if (message == NULL) {
    ae_finish(o, root ? AE_UNKNOWN : AE_DIFFER);
    if (!root) ae_retry(o, st->ae_peer);
    /* Lost, not answered: the next exchange at the next round, not an interval later;
     * unless a full cycle of peers went unanswered (ae_finish backs off then). */
    if (st->ae_failed < o->n->ae_peers_len) st->s.ae_next_ms = o->now;
    return RINGKV_OK;
  }
  if (st->ae_phase == AE_RANGES) return ae_ranges_answered(o, *message);
  pb_enc req;
  enc(o, &req);
  pb_put_bytes(&req, 1, *message);
  pb_put_uint(&req, 2, AE_SHARDS_MAX);
  rk_slice rep;
  bool ended = false;
  RK_TRY(ae_compare(o, &req, &rep, &ended));
  if (ended) return RINGKV_OK;
  int t_;
  bool ok = true, equal = false;
  rk_slice buckets = {NULL, 0}, shards = {NULL, 0}, keys_mine = {NULL, 0}, keys_theirs = {NULL, 0};
  FIELDS(rep) {
    case 1: ok = pb_get_bool(R, WT, &equal); break;
    case 2: ok = pb_get_bytes(R, WT, &shards); break;
    case 3: ok = pb_get_bytes(R, WT, &buckets); break;
    case 7: ok = pb_get_bytes(R, WT, &keys_mine); break;
    case 8: ok = pb_get_bytes(R, WT, &keys_theirs); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (buckets.len > 0 && root) {
    pb_enc narrow;
    enc(o, &narrow);
    pb_put_uint(&narrow, 1, st->ae_peer);
    size_t m = pb_begin(&narrow, 2);
    pb_put_raw(&narrow, buckets.ptr, buckets.len);
    pb_end(&narrow, m);
    rk_slice nrep, msg = {NULL, 0};
    RK_TRY(inner(o, RINGKV_OP_AE_START, &narrow, &nrep));
    FIELDS(nrep) {
      case 1: ok = pb_get_bytes(R, WT, &msg); break;
      SKIP;
    }
    st->ae_phase = AE_NARROW;
    st->ae_tag = send_one(o, KIND_DIGEST, msg, st->ae_peer, send_timeout_ms(o, st->ae_peer, msg.len));
    st->ae_at = o->now;
    return RINGKV_OK;
  }
  if (equal || shards.len == 0) {
    st->ae_retries = 0;
    ae_finish(o, AE_EQUAL);
    return RINGKV_OK;
  }
  /* One repair exchange carries about AE_REPAIR_BYTES_MAX: the differing shards from a
   * random one on, the rest at the next exchanges (they still differ). */
  uint32_t list[AE_SHARDS_MAX];
  size_t len = 0;
  pb_rd pr = pb_reader(shards);
  uint64_t v;
  while (!pb_done(&pr) && len < AE_SHARDS_MAX && pb_read_varint(&pr, &v)) list[len++] = (uint32_t)v;
  if (len == 0) {
    ae_finish(o, AE_EQUAL);
    return RINGKV_OK;
  }
  size_t from = (size_t)(rk_mix64(&o->rnd) % len);
  if (o->n->peer_version[st->ae_peer] >= 3u) {
    /* A peer that narrows below shards. A differing shard small on both sides (or empty
     * on one) is a leaf at once, while the repair's rows allow; a larger one is a range
     * to cut. (Most shards hold a few keys: no round trip for their parts.) */
    uint64_t mine[AE_SHARDS_MAX], theirs[AE_SHARDS_MAX];
    size_t nm = 0, nt = 0;
    pb_rd km = pb_reader(keys_mine), kt = pb_reader(keys_theirs);
    while (!pb_done(&km) && nm < len && pb_read_varint(&km, &mine[nm])) nm++;
    while (!pb_done(&kt) && nt < len && pb_read_varint(&kt, &theirs[nt])) nt++;
    st->ae_leaves_len = 0;
    st->ae_leaves_rows = 0;
    st->ae_asked_len = 0;
    st->ae_cut = false;
    for (size_t i = 0; i < len; i++) {
      size_t k = (from + i) % len;
      uint64_t a = k < nm ? mine[k] : UINT64_MAX, b = k < nt ? theirs[k] : UINT64_MAX;
      uint64_t rows = RK_MAX(a, b);
      bool leaf = (rows <= AE_LEAF_KEYS || RK_MIN(a, b) == 0) && rows <= AE_REPAIR_ROWS_MAX;
      if (leaf) {
        if (st->ae_leaves_len < RINGKV_AE_RANGES_MAX && st->ae_leaves_rows + rows <= AE_REPAIR_ROWS_MAX) {
          st->ae_leaves[st->ae_leaves_len++] = rk_range_shard(list[k]);
          st->ae_leaves_rows += rows;
        }
      } else if (st->ae_asked_len < RINGKV_AE_RANGES_MAX) {
        st->ae_asked[st->ae_asked_len++] = rk_range_shard(list[k]);
      }
    }
    if (st->ae_asked_len > 0 && st->ae_leaves_len < RINGKV_AE_RANGES_MAX && st->ae_leaves_rows < AE_REPAIR_ROWS_MAX) {
      ae_ranges_ask(o);
    } else if (st->ae_leaves_len > 0) {
      ae_leaves_load(o);
    } else {
      ae_finish(o, AE_DIFFER);
    }
    return RINGKV_OK;
  }
  /* A version-2 peer: whole shards. */
  load_begin(o);
  size_t m = pb_begin(&o->load, 3);
  for (size_t i = 0; i < len; i++) pb_put_varint_raw(&o->load, list[(from + i) % len]);
  pb_end(&o->load, m);
  pb_put_uint(&o->load, 4, AE_REPAIR_BYTES_MAX);
  st->wait = WAIT_AE_REPAIR;
  st->ae_tag = 0;
  return RINGKV_OK;
}

static int u32_cmp(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* A loaded row into the AeRepairRequest; its key is one this node sent (a deferral of it
 * comes back). */
static bool repair_row(rk_step *st, pb_enc *req, rk_slice row) {
  pb_put_bytes_always(req, 3, row);
  local_info li;
  if (local_info_read(row, &li)) sent_add(st, li.key);
  return true;
}

/* OP_AE_REPAIR on the request built, and its Push to the exchange's peer. */
static int ae_repair_send(out_t *o, const pb_enc *req) {
  rk_step *st = o->st;
  rk_slice rep, msg = {NULL, 0};
  RK_TRY(inner(o, RINGKV_OP_AE_REPAIR, req, &rep));
  int t_;
  bool ok = true;
  FIELDS(rep) {
    case 1: ok = pb_get_bytes(R, WT, &msg); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  st->ae_repair_tag = send_one(o, KIND_PUSH, msg, st->ae_peer, PEER_TIMEOUT_MS);
  st->ae_repair_peer = st->ae_peer;
  st->ae_repair_at = o->now;
  ae_finish(o, AE_DIFFER);
  return RINGKV_OK;
}

/* The leaves' rows are in (as far as they fit): the repair request over those ranges. */
static int ae_ranges_repair_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  st->wait = WAIT_NONE;
  uint32_t ranges_loaded = 0;
  int t_;
  bool ok = true;
  rk_slice s;
  pb_enc req;
  enc(o, &req);
  pb_put_uint(&req, 1, st->ae_peer);
  FIELDS(loaded) {
    case 8: ok = pb_get_u32(R, WT, &ranges_loaded); break;
    case 9: ok = pb_get_bytes(R, WT, &s) && repair_row(st, &req, s); break;
    SKIP;
  }
  if (!ok || t_ < 0 || ranges_loaded > st->ae_leaves_len) return RINGKV_E_DECODE;
  if (ranges_loaded == 0) {
    /* Its first leaf alone is beyond a repair's rows or bytes (large values): it is cut
     * again, down to single keys, which always load. A leaf that cannot be cut (keys
     * crafted to share a position) is counted and left out: the rest load without it. */
    if (st->ae_leaves[0].bits < RINGKV_AE_PART_BITS || st->ae_cut) {
      stat_named(o, "refused_too_large", 1);
      if (st->ae_leaves_len > 1) {
        memmove(st->ae_leaves, st->ae_leaves + 1, (st->ae_leaves_len - 1) * sizeof *st->ae_leaves);
        st->ae_leaves_len--;
        ae_leaves_load(o);
        return RINGKV_OK;
      }
      ae_finish(o, AE_DIFFER);
      return RINGKV_OK;
    }
    st->ae_asked[0] = st->ae_leaves[0];
    st->ae_asked_len = 1;
    st->ae_leaves_len = 0;
    st->ae_leaves_rows = 0;
    st->ae_cut = true;
    ae_ranges_ask(o);
    return RINGKV_OK;
  }
  /* The request names them in order (the peer reads each row once). */
  rk_ranges_sort(st->ae_leaves, ranges_loaded);
  for (uint32_t i = 0; i < ranges_loaded; i++) rk_range_write(&req, 4, &st->ae_leaves[i]);
  return ae_repair_send(o, &req);
}

static int ae_repair_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  if (st->ae_leaves_len > 0) return ae_ranges_repair_loaded(o, loaded);
  st->wait = WAIT_NONE;
  uint32_t list[AE_SHARDS_MAX];
  size_t len = 0;
  int t_;
  bool ok = true;
  rk_slice s;
  pb_enc req;
  enc(o, &req);
  pb_put_uint(&req, 1, st->ae_peer);
  FIELDS(loaded) {
    case 2: {
      ok = pb_get_bytes(R, WT, &s);
      pb_rd pr = pb_reader(s);
      uint64_t v;
      while (ok && !pb_done(&pr) && len < AE_SHARDS_MAX && pb_read_varint(&pr, &v)) list[len++] = (uint32_t)v;
      break;
    }
    case 3: ok = pb_get_bytes(R, WT, &s) && repair_row(st, &req, s); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  qsort(list, len, sizeof *list, u32_cmp);
  pb_put_packed_u32(&req, 2, list, len);
  return ae_repair_send(o, &req);
}

/* ---------------------------------------------------------------------------------------
 * Events */

/* A client write: OP_WRITE, and its row for the executor. */
/* ---------------------------------------------------------------------------------------
 * Writes above ?consistency=one (quorum.c keeps the waits): the write's row is loaded with
 * its values once committed, pushed at once to the key's other replicas, and the answer
 * goes back with a quorum_wait the executor holds until its outcome. */

static void quorum_outcome(out_t *o, const rk_quorum_outcome *q) {
  if (o->outcomes < sizeof o->outcome / sizeof o->outcome[0]) o->outcome[o->outcomes++] = *q;
}

static int quorum_begin(out_t *o, rk_slice key, uint32_t level) {
  rk_step *st = o->st;
  ringkv_node *n = o->n;
  uint64_t h = rk_hash_slice(key);
  uint32_t shard = (uint32_t)(h % n->cfg.shards);
  bool done = false;
  rk_quorum_outcome out;
  int w = rk_quorum_open(&st->quorum, n, shard, level, &done, &out);
  if (w < 0) {
    /* Too many waiting (or no memory): answered at once as held here only. */
    out = (rk_quorum_outcome){QUORUM_OVERFLOW_ID, 1, false};
    o->quorum_wait = out.id;
    quorum_outcome(o, &out);
    return RINGKV_OK;
  }
  if (done) {
    o->quorum_wait = out.id;
    quorum_outcome(o, &out);
    return RINGKV_OK;
  }
  o->quorum_wait = rk_quorum_id(&st->quorum, w);
  o->quorum_opened = w;
  if (!buf_set(&st->quorum_reply, o->reply)) return RINGKV_E_NOMEM;
  o->reply = (rk_slice){NULL, 0};
  rk_range r = {shard, rk_key_position(h), 0};
  load_begin(o);
  rk_range_write(&o->load, 14, &r);
  pb_put_uint(&o->load, 15, QUORUM_ROWS_MAX);
  pb_put_uint(&o->load, 16, 1);   /* the first range whole whatever its bytes */
  st->quorum_loading = w;
  st->wait = WAIT_QUORUM_ROW;
  return RINGKV_OK;
}

/* The written row (and any other of its key position) is in: one push per peer, in the
 * version each speaks. */
static int quorum_row_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  st->wait = WAIT_NONE;
  int w = st->quorum_loading;
  o->quorum_opened = w;   /* closed again if this step fails */
  o->reply = buf_slice(&st->quorum_reply);
  /* The rows as OP_PAGE_PUSH takes them, read once for every peer. */
  pb_enc rows_enc;
  enc(o, &rows_enc);
  int t_;
  bool ok = true;
  rk_slice s;
  FIELDS(loaded) {
    case 9: ok = pb_get_bytes(R, WT, &s); if (ok) pb_put_bytes_always(&rows_enc, 3, s); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  rk_slice rows = pb_result(&rows_enc);
  const rk_quorum_wait *qw = &st->quorum.w[w];
  uint32_t len = qw->len;
  uint32_t *peers = rk_alloc_array(&o->n->arena, len + 1u, sizeof *peers);
  if (peers == NULL) return RINGKV_E_NOMEM;
  memcpy(peers, qw->peer, len * sizeof *peers);   /* the wait may close in the loop */
  for (uint32_t i = 0; i < len; i++) {
    pb_enc req;
    enc(o, &req);
    pb_put_uint(&req, 1, peers[i]);
    pb_put_raw(&req, rows.ptr, rows.len);
    rk_slice rep, push = {NULL, 0};
    uint64_t entries = 0;
    RK_TRY(inner(o, RINGKV_OP_PAGE_PUSH, &req, &rep));
    FIELDS(rep) {
      case 1: ok = pb_get_bytes(R, WT, &push); break;
      case 2: ok = pb_get_u64(R, WT, &entries); break;
      SKIP;
    }
    if (!ok || t_ < 0) return RINGKV_E_STATE;
    rk_quorum_outcome out;
    /* Nothing to send (the row is gone, or the peer's version cannot carry it): that
     * replica does not count. */
    if (entries == 0) {
      if (rk_quorum_ended(&st->quorum, w, i, false, &out)) quorum_outcome(o, &out);
      continue;
    }
    uint32_t tag = send_to(o, KIND_PUSH, push, peers[i], o->n->cfg.quorum_timeout_ms, true);
    rk_quorum_sent(&st->quorum, w, i, tag);
  }
  return RINGKV_OK;
}

/* A quorum push's answer: the peer holds the write unless it deferred it (a clock too far
 * behind) or refused the message. */
static void quorum_answered(out_t *o, int w, uint32_t i, const rk_slice *message) {
  bool held = message != NULL;
  if (held) {
    int t_;
    bool ok = true;
    rk_slice s;
    FIELDS(*message) {
      case 5: ok = pb_get_bytes(R, WT, &s); held = false; break;
      SKIP;
    }
    if (!ok || t_ < 0) held = false;
  }
  rk_quorum_outcome out;
  if (rk_quorum_ended(&o->st->quorum, w, i, held, &out)) quorum_outcome(o, &out);
}

static int client_write(out_t *o, rk_slice wreq) {
  rk_step *st = o->st;
  int t_;
  bool ok = true, deleted = false;
  rk_slice value = {NULL, 0}, wkey = {NULL, 0};
  uint32_t consistency = 0;
  FIELDS(wreq) {
    case 2: ok = pb_get_bytes(R, WT, &wkey); break;
    case 6: ok = pb_get_bytes(R, WT, &value); break;
    case 8: ok = pb_get_bool(R, WT, &deleted); break;
    case 12: ok = pb_get_u32(R, WT, &consistency); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  int level = rk_consistency_level(consistency);
  if (level < 0) return RINGKV_E_DECODE;
  /* A node being fenced takes no new write: what it holds must drain to its peers. */
  if (st->s.fence != FENCE_NONE) return RINGKV_E_FENCING;
  if (o->n->cfg.leases) {
    /* Not a shard it is catching up on, and a counter within its lease. */
    RK_TRY(rk_step_serves(o->n, (uint32_t)(rk_hash_slice(wkey) % o->n->cfg.shards)));
    if (!rk_lease_usable(&st->lease, o->n->counter)) return RINGKV_E_LEASE;
  }
  rk_report_request(&st->rep, o->n, (uint32_t)(rk_hash_slice(wkey) % o->n->cfg.shards));
  /* The step's time wins: a later field replaces an earlier one. */
  pb_enc req;
  enc(o, &req);
  pb_put_raw(&req, wreq.ptr, wreq.len);
  pb_put_uint(&req, 1, o->now);
  rk_slice rep;
  RK_TRY(inner(o, RINGKV_OP_WRITE, &req, &rep));
  rk_slice meta = {NULL, 0}, dropped_raw = {NULL, 0}, info = {NULL, 0}, key = {NULL, 0}, old_meta = {NULL, 0};
  uint64_t digest_old = 0, digest_new = 0, shard_digest = 0, shard_keys = 0;
  uint32_t shard = 0;
  rk_slice dot = {NULL, 0};
  bool replay = false;
  pb_enc drops;
  enc(o, &drops);
  FIELDS(rep) {
    case 14: ok = pb_get_bool(R, WT, &replay); break;
    case 2: ok = pb_get_bytes(R, WT, &meta); break;
    case 3: ok = pb_get_bytes(R, WT, &dot); break;
    case 7: ok = pb_get_fixed64(R, WT, &digest_old); break;
    case 8: ok = pb_get_fixed64(R, WT, &digest_new); break;
    case 9: ok = pb_get_bytes(R, WT, &dropped_raw); if (ok) pb_put_bytes_always(&drops, 7, dropped_raw); break;
    case 10: ok = pb_get_u32(R, WT, &shard); break;
    case 11: ok = pb_get_fixed64(R, WT, &shard_digest); break;
    case 12: ok = pb_get_bytes(R, WT, &info); break;
    case 13: ok = pb_get_u64(R, WT, &shard_keys); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  /* A replayed write id: the held version answers, and nothing is written (above
   * ?consistency=one it is pushed again and waited for, as a new write). */
  if (replay) {
    o->reply = rep;
    return level > RK_CONSISTENCY_ONE ? quorum_begin(o, wkey, (uint32_t)level) : RINGKV_OK;
  }
  FIELDS(wreq) {
    case 2: ok = pb_get_bytes(R, WT, &key); break;
    case 3: ok = pb_get_bytes(R, WT, &old_meta); break;
    SKIP;
  }
  pb_enc a;
  enc(o, &a);
  pb_put_bytes(&a, 1, key);
  pb_put_uint(&a, 2, shard);
  pb_put_bytes(&a, 3, meta);
  pb_put_fixed64(&a, 4, digest_old);
  pb_put_fixed64(&a, 5, digest_new);
  if (!deleted) {
    /* The value is the event's own payload: it crosses the boundary once. */
    size_t m = pb_begin(&a, 6);
    size_t d = pb_begin(&a, 1);
    pb_put_raw(&a, dot.ptr, dot.len);
    pb_end(&a, d);
    pb_put_uint(&a, 3, 0);
    pb_put_uint(&a, 4, value.len);
    pb_end(&a, m);
  }
  rk_slice dr = pb_result(&drops);
  pb_put_raw(&a, dr.ptr, dr.len);
  pb_put_fixed64(&a, 8, shard_digest);
  pb_put_uint(&a, 10, shard_keys);
  if (info.len > 0) {
    size_t m = pb_begin(&a, 9);
    pb_put_raw(&a, info.ptr, info.len);
    pb_end(&a, m);
  }
  if (a.err) return a.err;
  st->s.seq++;
  st->s.client_seq = st->s.seq;
  row_applied(o, pb_result(&a), st->s.seq, true, rk_meta_live(old_meta));
  o->reply = rep;
  note_change(o);
  ae_reset(o);
  return level > RK_CONSISTENCY_ONE ? quorum_begin(o, wkey, (uint32_t)level) : RINGKV_OK;
}

/* A peer's DigestRequest: answered at once, or (ranges asked) once their parts are loaded. */
static int digest_incoming(out_t *o, rk_slice message) {
  rk_step *st = o->st;
  pb_enc req;
  enc(o, &req);
  pb_put_bytes(&req, 1, message);
  rk_slice rep, range;
  RK_TRY(inner(o, RINGKV_OP_AE_ANSWER, &req, &rep));
  int t_;
  bool ok = true, load = false;
  FIELDS(rep) {
    case 1: ok = pb_get_bytes(R, WT, &o->reply); break;
    case 2:
      ok = pb_get_bytes(R, WT, &range);
      if (!ok) break;
      if (!load) {
        chain_clear(st);
        if (!buf_set(&st->msg, message)) return RINGKV_E_NOMEM;
        load_begin(o);
        load = true;
      }
      pb_put_bytes_always(&o->load, 17, range);
      break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (load) st->wait = WAIT_DIGEST_PARTS;
  return RINGKV_OK;
}

static int digest_parts_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  pb_enc req;
  int t_;
  bool ok = held_request(o, loaded, 10, &req);
  chain_clear(st);
  if (!ok) return RINGKV_E_STATE;
  rk_slice rep;
  RK_TRY(inner(o, RINGKV_OP_AE_ANSWER, &req, &rep));
  o->reply.len = 0;
  FIELDS(rep) {
    case 1: ok = pb_get_bytes(R, WT, &o->reply); break;
    SKIP;
  }
  /* The executor loaded other parts than asked: a bug, never answered with a guess. */
  return ok && t_ >= 0 && o->reply.len > 0 ? RINGKV_OK : RINGKV_E_STATE;
}

/* ---------------------------------------------------------------------------------------
 * Dot leases and catch-up (lease.c and catchup.c decide what and when; here: the step's
 * part) */

void rk_step_adopt(ringkv_node *n) {
  rk_step *st = n->step;
  const rk_config *c = &n->cfg;
  /* An older ring than the state's (a node restored from an old copy of its ring) changes
   * nothing here: the executor takes the newer ring when a message shows it. */
  if (st->s.ring_epoch >= c->epoch) return;
  if (st->s.ring_epoch != 0) {
    /* What came before reaches a new id by the joining copy and catch-up. */
    for (uint32_t p = st->s.ring_span; p < st->peers_len; p++) {
      if (p == n->self || st->peers[p].acked >= st->s.seq) continue;
      st->peers[p].acked = st->s.seq;
      st->peers[p].dirty = true;
    }
  }
  if (c->phase == RK_PHASE_JOINING && c->leases) {
    for (size_t i = 0; i < n->my_shards_len; i++) {
      if (rk_joins_shard(n, n->my_shards[i], n->self)) rk_catchup_begin(&st->cu, n->my_shards[i]);
    }
  }
  st->s.ring_epoch = c->epoch;
  st->s.ring_span = c->cluster_size;
  rk_report_changed(&st->rep);
}

void rk_step_progress(const ringkv_node *n, uint32_t *copying, uint32_t *dropping) {
  const rk_step *st = n->step;
  *copying = st == NULL ? 0 : st->cu.pending;
  *dropping = 0;
  if (n->cfg.phase != RK_PHASE_LEAVING) return;
  /* The shards it leaves are no longer among its own: every shard it holds keys of. */
  for (uint32_t s = 0; s < n->cfg.shards; s++) {
    if (n->shard_keys[s] > 0 && rk_leaves_shard(n, s, n->self)) (*dropping)++;
  }
}

void rk_step_client_read(ringkv_node *n, uint32_t shard) {
  if (n->step != NULL) rk_report_request(&n->step->rep, n, shard);
}

int rk_step_serves(const ringkv_node *n, uint32_t shard) {
  if (!rk_serves_phase(n, shard, n->self)) return RINGKV_E_NOT_SERVING;
  return rk_step_caught_up(n, shard);
}

int rk_step_caught_up(const ringkv_node *n, uint32_t shard) {
  const rk_step *st = n->step;
  if (st == NULL || !n->cfg.leases) return RINGKV_OK;
  if (st->lease.fresh) return RINGKV_E_LEASE;
  return rk_catchup_serves(&st->cu, shard) ? RINGKV_OK : RINGKV_E_CATCHING_UP;
}

/* ---------------------------------------------------------------------------------------
 * Leaving a shard (cover.c decides; here: the step's part) */

/* Whether every entry of the chain's message is a key of `shard` (a page that moves a shard
 * carries nothing else: its markers make rows). */
static bool chain_keys_in(const out_t *o, uint32_t shard) {
  rk_slice mk = buf_slice(&o->st->mk), key;
  int t_;
  bool ok = true;
  FIELDS(mk) {
    case 2:
      ok = pb_get_bytes(R, WT, &key);
      if (ok && rk_hash_slice(key) % o->n->cfg.shards != shard) return false;
      break;
    SKIP;
  }
  return ok && t_ >= 0;
}

/* A replica leaving a shard this node holds sends a covering page: answered at once when
 * the digests agree (or it carries no page), else once the page is merged. */
static int cover_incoming(out_t *o, rk_slice message) {
  rk_step *st = o->st;
  uint32_t shard = 0;
  bool equal = false;
  rk_slice push = {NULL, 0};
  RK_TRY(rk_cover_incoming(o->n, message, &shard, &equal, &push));
  if (equal || push.len == 0) return rk_cover_reply(o->n, shard, equal, 0, &o->reply);
  RK_TRY(merge_begin(o, push, false));
  /* Merged at once (a page of no entries): nothing changed. */
  if (st->wait == WAIT_NONE) return rk_cover_reply(o->n, shard, false, 0, &o->reply);
  if (!chain_keys_in(o, shard)) {
    chain_clear(st);
    return RINGKV_E_DECODE;
  }
  st->msg_at = (size_t)(push.ptr - message.ptr);
  st->msg_moves = true;
  st->msg_cover = true;
  st->cover_changed = 0;
  st->page_shard = shard;
  return RINGKV_OK;
}

/* The answer to a covering message (NULL: lost or refused). */
static int cover_answered(out_t *o, uint32_t i, const rk_slice *message) {
  int rc = rk_cover_answer(&o->st->cover, o->n, i, o->now, message);
  if (rc == RINGKV_E_DECODE) {
    stat_named(o, "refused_malformed", 1);
    return RINGKV_OK;
  }
  return rc;
}

/* This node's page of a shard it leaves: sent to the replica being covered, or deleted. */
static int cover_page_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  ringkv_node *n = o->n;
  rk_cover *c = &st->cover;
  st->wait = WAIT_NONE;
  uint32_t i = st->cover_loading;
  if (i >= c->active_len) return RINGKV_E_STATE;
  rk_cover_shard *e = &c->active[i];
  int t_;
  bool ok = true, more = false;
  rk_slice row, last = {NULL, 0};
  pb_enc req;
  enc(o, &req);
  bool drop = e->what == RK_CV_DROP;
  uint32_t target = rk_cover_target(c, n, i);
  if (drop) pb_put_uint(&req, 1, o->now);
  else pb_put_uint(&req, 1, target);
  size_t rows = 0;
  bool *live = rk_zalloc(&n->arena, RK_CATCHUP_PAGE_ROWS_MAX + 1u);
  if (live == NULL) return RINGKV_E_NOMEM;
  FIELDS(loaded) {
    case 30: {
      ok = pb_get_bytes(R, WT, &row);
      if (!ok) break;
      local_info li;
      /* The executor loaded another shard than asked, or more rows: a bug. */
      if (!local_info_read(row, &li) || li.key.len == 0 || rk_hash_slice(li.key) % n->cfg.shards != e->shard ||
          rows >= RK_CATCHUP_PAGE_ROWS_MAX) {
        return RINGKV_E_STATE;
      }
      live[rows++] = rk_meta_live(li.meta);
      last = li.key;
      pb_put_bytes_always(&req, drop ? 2 : 3, row);
      break;
    }
    case 31: ok = pb_get_bool(R, WT, &more); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  rk_slice rep;
  if (drop) {
    RK_TRY(inner(o, RINGKV_OP_DROP, &req, &rep));
    size_t k = 0;
    rk_slice s;
    FIELDS(rep) {
      case 1: ok = pb_get_bytes(R, WT, &s); if (ok && k < rows) row_applied(o, s, 0, false, live[k++]); break;
      SKIP;
    }
    if (!ok || t_ < 0 || k != rows) return RINGKV_E_STATE;
    stat_named(o, "keys_dropped", rows);
    rk_cover_dropped(c, i, more && rows > 0, o->now);
    return RINGKV_OK;
  }
  if (target == UINT32_MAX) return RINGKV_E_STATE;
  rk_slice push = {NULL, 0};
  RK_TRY(inner(o, RINGKV_OP_PAGE_PUSH, &req, &rep));
  FIELDS(rep) {
    case 1: ok = pb_get_bytes(R, WT, &push); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_STATE;
  rk_slice msg;
  RK_TRY(rk_cover_request(c, n, i, push, last, more, &msg));
  /* As long as a digest check's at least: a timeout near one round trip (a peer's RTT
   * measured on small pushes) lost every page on a slow link, and the pass never ended. */
  uint64_t timeout = RK_MAX(send_timeout_ms(o, target, msg.len), (uint64_t)RK_COVER_TIMEOUT_MS);
  rk_cover_sent(c, i, send_one(o, KIND_CATCHUP, msg, target, timeout), o->now);
  return RINGKV_OK;
}

/* After the event, in the leaving phase: the digests due to be compared are sent, and the
 * next page due is loaded when the chain has nothing else to load. */
static int cover_step(out_t *o) {
  rk_step *st = o->st;
  ringkv_node *n = o->n;
  rk_cover *c = &st->cover;
  if (n->cfg.phase != RK_PHASE_LEAVING) {
    if (c->active_len > 0 || c->quiet > 0) rk_cover_reset(c);
    return RINGKV_OK;
  }
  rk_cover_expire(c, o->now);
  rk_cover_fill(c, n, o->now);
  for (uint32_t k = 0; k < RK_COVER_ACTIVE_MAX; k++) {
    int i = rk_cover_check_due(c, o->now);
    if (i < 0) break;
    uint32_t target = rk_cover_target(c, n, (uint32_t)i);
    if (target == UINT32_MAX) return RINGKV_E_STATE;
    rk_slice msg, none = {NULL, 0};
    RK_TRY(rk_cover_request(c, n, (uint32_t)i, none, none, false, &msg));
    rk_cover_sent(c, (uint32_t)i, send_one(o, KIND_CATCHUP, msg, target, RK_COVER_TIMEOUT_MS), o->now);
  }
  if (!o->has_load && st->wait == WAIT_NONE) {
    int i = rk_cover_load_due(c, o->now);
    if (i >= 0) {
      load_begin(o);
      rk_cover_load(c, (uint32_t)i, &o->load);
      st->cover_loading = (uint32_t)i;
      st->wait = WAIT_COVER_PAGE;
    }
  }
  if (c->changed) {
    c->changed = false;
    if (n->cfg.reports) rk_report_changed(&st->rep);
  }
  return RINGKV_OK;
}

/* A peer's CatchupRequest: answered at once when the shard digests agree, else once its
 * page is loaded. */
static int catchup_incoming(out_t *o, rk_slice message) {
  rk_step *st = o->st;
  if (rk_catchup_is_probe(message)) return rk_catchup_probe_reply(o->n, message, &o->reply);
  if (rk_cover_is_request(message)) return cover_incoming(o, message);
  pb_enc load;
  enc(o, &load);
  bool equal = false;
  uint32_t from = 0, shard = 0;
  RK_TRY(rk_catchup_incoming(o->n, message, &equal, &load, &from, &shard));
  if (equal) {
    rk_slice none = {NULL, 0};
    return rk_catchup_reply(o->n, shard, true, none, none, false, &o->reply);
  }
  load_begin(o);
  rk_slice l = pb_result(&load);
  pb_put_raw(&o->load, l.ptr, l.len);
  st->page_shard = shard;
  st->page_peer = from;
  st->wait = WAIT_CATCHUP_PAGE;
  return RINGKV_OK;
}

static int catchup_page_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  st->wait = WAIT_NONE;
  int t_;
  bool ok = true, more = false;
  rk_slice row, last = {NULL, 0};
  pb_enc req;
  enc(o, &req);
  pb_put_uint(&req, 1, st->page_peer);
  FIELDS(loaded) {
    case 30: {
      ok = pb_get_bytes(R, WT, &row);
      if (!ok) break;
      rk_slice key = {NULL, 0};
      FIELDS(row) {
        case 1: ok = pb_get_bytes(R, WT, &key); break;
        SKIP;
      }
      /* The executor loaded another shard than asked: a bug, never answered with a guess. */
      if (!ok || t_ < 0 || key.len == 0 || rk_hash_slice(key) % o->n->cfg.shards != st->page_shard) return RINGKV_E_STATE;
      last = key;
      pb_put_bytes_always(&req, 3, row);
      break;
    }
    case 31: ok = pb_get_bool(R, WT, &more); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  rk_slice rep, push = {NULL, 0};
  RK_TRY(inner(o, RINGKV_OP_PAGE_PUSH, &req, &rep));
  FIELDS(rep) {
    case 1: ok = pb_get_bytes(R, WT, &push); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_STATE;
  return rk_catchup_reply(o->n, st->page_shard, false, push, last, more, &o->reply);
}

/* RingControl's answer to a lease request (NULL: lost or refused). */
static int lease_answered(out_t *o, const rk_slice *message) {
  rk_step *st = o->st;
  uint64_t counter = o->n->counter;
  bool lost = false;
  int rc = rk_lease_outcome(&st->lease, o->n, o->now, message, &counter, &lost);
  if (rc == RINGKV_E_DECODE) {
    stat_named(o, "refused_malformed", 1);
    return RINGKV_OK;
  }
  RK_TRY(rc);
  o->n->counter = counter;
  if (lost) rk_catchup_begin_all(&st->cu, o->n);
  return RINGKV_OK;
}

/* A replica's answer to a catch-up page (NULL: lost or refused). */
static int catchup_answered(out_t *o, uint32_t i, const rk_slice *message) {
  rk_step *st = o->st;
  rk_slice push;
  int rc = rk_catchup_answer(&st->cu, o->n, i, o->now, message, &push);
  if (rc == RINGKV_E_DECODE) {
    stat_named(o, "refused_malformed", 1);
    return RINGKV_OK;
  }
  RK_TRY(rc);
  if (rk_catchup_merging(&st->cu) != (int)i) return RINGKV_OK;
  /* The page merges like any push; the cursor moves once it is written (rk_step_run). Its
   * values are the answer's bytes, where the Push lies at an offset. */
  rc = merge_begin(o, push, true);
  if (rc == RINGKV_OK) st->msg_at = (size_t)(push.ptr - message->ptr);
  if (rc == RINGKV_OK && st->wait != WAIT_NONE && !chain_keys_in(o, st->cu.active[i].shard)) rc = RINGKV_E_DECODE;
  if (rc == RINGKV_OK) st->msg_moves = true;
  if (rc == RINGKV_E_NOMEM) return rc;
  if (rc != RINGKV_OK) {
    stat_named(o, rc == RINGKV_E_PROTOCOL ? "refused_protocol_version" : "refused_malformed", 1);
    chain_clear(st);
    rk_catchup_lost(&st->cu, o->n, i, o->now);
  }
  return RINGKV_OK;
}

/* After the event: a lease asked for ahead of need, and the catch-up's next pages (once
 * the node knows whether its storage was lost). */
static int leases_step(out_t *o) {
  rk_step *st = o->st;
  ringkv_node *n = o->n;
  if (rk_lease_due(&st->lease, n->counter, o->now)) {
    rk_slice msg;
    RK_TRY(rk_lease_request(&st->lease, n, &msg));
    rk_lease_sent(&st->lease, send_one(o, KIND_LEASE, msg, RINGKV_PEER_CONTROL, RK_LEASE_TIMEOUT_MS), o->now);
  }
  if (st->lease.fresh) return RINGKV_OK;
  /* The executor owes an outcome; one never reported counts as lost. */
  for (uint32_t i = 0; i < st->cu.active_len; i++) {
    const rk_cu_shard *e = &st->cu.active[i];
    if (e->tag != 0 && o->now > e->sent_ms + 2u * (uint64_t)RK_CATCHUP_TIMEOUT_MS) rk_catchup_lost(&st->cu, n, i, o->now);
  }
  for (uint32_t k = 0; k < RK_CATCHUP_ACTIVE_MAX; k++) {
    int i = rk_catchup_next(&st->cu, n, o->now);
    if (i < 0) break;
    rk_slice msg;
    RK_TRY(rk_catchup_request(&st->cu, n, (uint32_t)i, &msg));
    uint32_t source = st->cu.active[i].source;
    rk_catchup_sent(&st->cu, (uint32_t)i, send_one(o, KIND_CATCHUP, msg, source, RK_CATCHUP_TIMEOUT_MS), o->now);
  }
  /* Probes: shards every source holds equal are caught up without a pull. */
  rk_catchup_probe_expire(&st->cu, n, o->now);
  uint32_t probes = rk_catchup_probe_begin(&st->cu, n, o->now);
  for (uint32_t k = 0; k < probes; k++) {
    rk_slice msg;
    uint32_t peer;
    RK_TRY(rk_catchup_probe_request(&st->cu, n, k, &msg, &peer));
    rk_catchup_probe_sent(&st->cu, k, send_one(o, KIND_CATCHUP, msg, peer, RK_CATCHUP_TIMEOUT_MS), o->now);
  }
  st->rep.catching_up = st->cu.pending;
  if (st->cu.changed) {
    st->cu.changed = false;
    if (n->cfg.reports) rk_report_changed(&st->rep);
  }
  return RINGKV_OK;
}

static int incoming(out_t *o, rk_slice inc) {
  int t_;
  bool ok = true;
  uint32_t kind = 0;
  rk_slice message = {NULL, 0};
  FIELDS(inc) {
    case 1: ok = pb_get_u32(R, WT, &kind); break;
    case 2: ok = pb_get_bytes(R, WT, &message); break;
    SKIP;
  }
  if (!ok || t_ < 0 || message.len > RINGKV_PEER_MESSAGE_BYTES_MAX) return RINGKV_E_DECODE;
  /* A node that cannot know yet whether its storage was lost answers no collection query
   * (the asker hears of a failure); one catching up answers for its caught-up shards only
   * (op_gc_answer). */
  if (kind == KIND_GC && o->n->cfg.leases && o->st->lease.fresh) return RINGKV_E_CATCHING_UP;
  switch (kind) {
    case KIND_PUSH: return merge_begin(o, message, false);
    case KIND_DIGEST: return digest_incoming(o, message);
    case KIND_GC: return gc_incoming(o, message);
    case KIND_CATCHUP: return catchup_incoming(o, message);
  }
  return RINGKV_E_DECODE;
}

static int answer(out_t *o, rk_slice ans) {
  rk_step *st = o->st;
  int t_;
  bool ok = true, answered = false;
  uint32_t tag = 0;
  rk_slice message = {NULL, 0}, refused = {NULL, 0};
  FIELDS(ans) {
    case 1: ok = pb_get_u32(R, WT, &tag); break;
    case 2: ok = pb_get_bytes(R, WT, &message); break;
    case 3: ok = pb_get_bool(R, WT, &answered); break;
    case 4: ok = pb_get_bytes(R, WT, &refused); break;
    SKIP;
  }
  if (!ok || t_ < 0 || tag == 0) return RINGKV_E_DECODE;
  static const char malformed[] = "malformed", protocol[] = "protocol_version";
  rk_slice r_malformed = {(const uint8_t *)malformed, sizeof malformed - 1};
  rk_slice r_protocol = {(const uint8_t *)protocol, sizeof protocol - 1};
  bool was_malformed = rk_slice_eq(refused, r_malformed);
  int qw;
  uint32_t qi;
  if (rk_quorum_owner(&st->quorum, tag, &qw, &qi)) {
    quorum_answered(o, qw, qi, answered ? &message : NULL);
    return RINGKV_OK;
  }
  if (rk_report_owns(&st->rep, tag)) {
    rk_report_outcome(&st->rep, o->n, o->now, answered, refused.len > 0);
    o->report_answer = true;
    return RINGKV_OK;
  }
  if (rk_lease_owns(&st->lease, tag)) return lease_answered(o, answered ? &message : NULL);
  int cv = rk_cover_owner(&st->cover, tag);
  if (cv >= 0) return cover_answered(o, (uint32_t)cv, answered ? &message : NULL);
  int cu = rk_catchup_owner(&st->cu, tag);
  if (cu >= 0) return catchup_answered(o, (uint32_t)cu, answered ? &message : NULL);
  int probe = rk_catchup_probe_owner(&st->cu, tag);
  if (probe >= 0) {
    int rc = rk_catchup_probe_answer(&st->cu, o->n, (uint32_t)probe, answered ? &message : NULL);
    if (rc == RINGKV_E_DECODE) stat_named(o, "refused_malformed", 1);
    return rc == RINGKV_E_DECODE ? RINGKV_OK : rc;
  }
  for (uint32_t p = 0; p < st->peers_len; p++) {
    peer_t *pt = &st->peers[p];
    if (pt->push_tag != tag && pt->hedge_tag != tag) continue;
    /* One copy of a hedged push lost: the other may still arrive. (A refusal is final.) */
    if (!answered && refused.len == 0 && pt->push_tag != 0 && pt->hedge_tag != 0) {
      if (pt->push_tag == tag) pt->push_tag = pt->hedge_tag;
      pt->hedge_tag = 0;
      return RINGKV_OK;
    }
    /* A peer that does not read the version this node wrote (it went back a release):
     * forget what was learnt of its version, and write the previous one until it speaks. */
    if (rk_slice_eq(refused, r_protocol)) o->n->peer_version[p] = RINGKV_PROTOCOL_VERSION_MIN;
    /* A message the peer refuses as malformed is not sent again (it would be refused again,
     * and hold every later change back): anti-entropy repairs what it held. */
    if (was_malformed) stat_named(o, "refused_by_peer", 1);
    if (answered) {
      stat_named(o, "entries_sent", pt->entries);
      /* Up at once, down slowly (an eighth per answer): a slow peer keeps its time. */
      uint64_t took = o->now > pt->push_at ? RK_MIN(o->now - pt->push_at, (uint64_t)PEER_TIMEOUT_MS) : 0;
      pt->rtt_ms = took >= pt->rtt_ms ? took : (7u * pt->rtt_ms + took) / 8u;
    }
    /* A node being fenced counts no refusal as delivered: its rows would go with it. */
    push_outcome(o, p, answered || (was_malformed && st->s.fence == FENCE_NONE));
    if (answered) merge_answer(o, message);
    return RINGKV_OK;
  }
  if (tag == st->ae_tag && st->ae_phase != AE_IDLE) {
    /* Its answers teach the peer's time as pushes' do; no answer within the time limit
     * (not a quick failure: a refusal or an unreachable peer) doubles it, so exchanges with
     * a peer slower than its pushes said do not time out forever. */
    if (st->ae_peer < st->peers_len) {
      peer_t *pt = &st->peers[st->ae_peer];
      uint64_t took = o->now > st->ae_at ? RK_MIN(o->now - st->ae_at, (uint64_t)PEER_TIMEOUT_MS) : 0;
      if (answered) {
        pt->rtt_ms = took >= pt->rtt_ms ? took : (7u * pt->rtt_ms + took) / 8u;
      } else if (refused.len == 0 && took >= send_timeout_ms(o, st->ae_peer, 0)) {
        pt->rtt_ms = RK_MIN(RK_MAX(2u * pt->rtt_ms, (uint64_t)interval_ms(o->n)), (uint64_t)PEER_TIMEOUT_MS);
      }
    }
    /* An answer that cannot be taken further (it names buckets or shards this node does
     * not share with the peer) ends the exchange, counted: it never fails the step. */
    int rc = ae_answered(o, answered ? &message : NULL);
    if (rc == RINGKV_E_NOMEM || rc == RINGKV_OK) return rc;
    stat_named(o, "refused_malformed", 1);
    ae_finish(o, AE_DIFFER);
    return RINGKV_OK;
  }
  if (tag == st->ae_repair_tag) {
    st->ae_repair_tag = 0;
    if (answered) st->ae_retries = 0;
    else if (refused.len == 0 && st->ae_phase == AE_IDLE) ae_retry(o, st->ae_repair_peer);
    if (answered) merge_answer(o, message);
    return RINGKV_OK;
  }
  for (size_t i = 0; i < st->gc_len; i++) {
    if (st->gc_tags[i] == tag) return gc_answered(o, i, answered ? &message : NULL);
  }
  return RINGKV_OK;   /* a send the instance forgot (it was rebuilt): nothing to do */
}

/* ---------------------------------------------------------------------------------------
 * Reports to RingControl (report.c decides what and when; here: the step's part) */

/* Outgoing changes some peer has not acknowledged: what a push still has to carry. */
static uint64_t unacked_changes(const ringkv_node *n, const rk_step *st) {
  uint64_t target = push_target(n, st), low = lowest_ack(n, st);
  return target > low ? target - low : 0;
}

static int report_loaded(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  st->wait = WAIT_NONE;
  rk_slice msg, held;
  RK_TRY(rk_report_build(&st->rep, o->n, o->now, st->s.seq, unacked_changes(o->n, st), loaded, &msg, &held));
  rk_report_sent(&st->rep, send_one(o, KIND_REPORT, msg, RINGKV_PEER_CONTROL, RK_REPORT_TIMEOUT_MS), o->now);
  o->reply = held;
  return RINGKV_OK;
}

/* A peer's message the executor refused before the step could take it: counted here. */
static int refused_event(out_t *o, rk_slice reason) {
  if (reason.len < 1 || reason.len > RINGKV_COUNTER_NAME_BYTES_MAX / 2u) return RINGKV_E_DECODE;
  for (size_t i = 0; i < reason.len; i++) {
    uint8_t c = reason.ptr[i];
    if (!((c >= 'a' && c <= 'z') || c == '_')) return RINGKV_E_DECODE;
  }
  stat_refused(o, reason, 1);
  return RINGKV_OK;
}

static int loaded_event(out_t *o, rk_slice loaded) {
  rk_step *st = o->st;
  switch (st->wait) {
    case WAIT_ROUND: return round_loaded(o, loaded);
    case WAIT_MERGE_RANGE:
    case WAIT_MERGE_REPAIR: return merge_loaded(o, loaded);
    case WAIT_GC_ANSWER: return gc_answer_loaded(o, loaded);
    case WAIT_AE_REPAIR: return ae_repair_loaded(o, loaded);
    case WAIT_AE_OWN_PARTS: return ae_own_parts_loaded(o, loaded);
    case WAIT_DIGEST_PARTS: return digest_parts_loaded(o, loaded);
    case WAIT_GC_DECIDE: return gc_decide(o, loaded);
    case WAIT_REPORT: return report_loaded(o, loaded);
    case WAIT_CATCHUP_PAGE: return catchup_page_loaded(o, loaded);
    case WAIT_COVER_PAGE: return cover_page_loaded(o, loaded);
    case WAIT_QUORUM_ROW: return quorum_row_loaded(o, loaded);
  }
  return RINGKV_E_STATE;
}

/* When the node must wake next: pending pushes at the next allowed round, anti-entropy
 * when due, the next tombstone expiry, collection's retry; never twice per interval. */
static uint64_t next_alarm(const out_t *o) {
  const rk_step *st = o->st;
  const ringkv_node *n = o->n;
  uint64_t t = UINT64_MAX;
  if (n->ae_peers_len > 0) t = st->ae_phase == AE_IDLE ? st->s.ae_next_ms : t;
  if (st->s.expiry_at_ms != 0) t = RK_MIN(t, st->s.expiry_at_ms);
  if (st->s.gc_at_ms != 0) t = RK_MIN(t, st->s.gc_at_ms);
  uint64_t target = push_target(n, st);
  for (uint32_t p = 0; p < st->peers_len; p++) {
    const peer_t *ps = &st->peers[p];
    if (p == n->self || ps->push_tag != 0 || ps->acked >= target) continue;
    t = RK_MIN(t, ps->retry_at);
  }
  uint64_t gossip = t == UINT64_MAX ? 0 : RK_MAX(t, st->s.last_round_ms + interval_ms(n));
  /* A report may be due before the next round: that alarm runs no round (rk_step_run). */
  uint64_t report = rk_report_alarm(&st->rep, n);
  uint64_t at = gossip == 0 || (report != 0 && report < gossip) ? report : gossip;
  if (n->cfg.leases) {
    uint64_t lease = rk_lease_alarm(&st->lease, n->counter);
    uint64_t cu = st->lease.fresh ? 0 : rk_catchup_alarm(&st->cu);
    if (lease != 0 && (at == 0 || lease < at)) at = lease;
    if (cu != 0 && (at == 0 || cu < at)) at = cu;
  }
  if (n->cfg.phase == RK_PHASE_LEAVING) {
    uint64_t cv = rk_cover_alarm(&st->cover, n);
    if (cv != 0 && (at == 0 || cv < at)) at = cv;
  }
  /* What is due already is due now: an executor's clock may be skewed back from the
   * node's (FAULTS), and a time near 0 would then be before the epoch. */
  return at == 0 ? 0 : RK_MAX(at, o->now);
}

/* A node's clock may move back (a skew removed, a restored wall clock): times it set
 * ahead never wait longer than their own bound. */
static void clamp_to_clock(out_t *o) {
  rk_step *st = o->st;
  sched_t *s = &st->s;
  if (s->last_round_ms > o->now) s->last_round_ms = o->now;
  if (s->ae_next_ms > o->now + s->ae_interval_ms) s->ae_next_ms = o->now + s->ae_interval_ms;
  rk_report_clamp(&st->rep, o->now);
  rk_lease_clamp(&st->lease, o->now);
  rk_catchup_clamp(&st->cu, o->now);
  rk_cover_clamp(&st->cover, o->now);
  for (uint32_t p = 0; p < st->peers_len; p++) {
    peer_t *ps = &st->peers[p];
    if (ps->retry_at > o->now + PEER_BACKOFF_MS_MAX) {
      ps->retry_at = o->now + PEER_BACKOFF_MS_MAX;
      ps->dirty = true;
    }
  }
}

/* ---------------------------------------------------------------------------------------
 * The admin fence */

/* The fence asked for: every row goes to its other replicas again (their acknowledgements
 * start over), so that the wipe waits until each row is at another replica (each other
 * one; `fanout` of them where changes are relayed). With one replica per key there is no
 * other: only a forced fence is taken (RINGKV_E_VALUE). */
static int fence_asked(out_t *o, uint32_t fence) {
  rk_step *st = o->st;
  if (fence == FENCE_DRAIN && st->s.fence != FENCE_FORCE && o->n->cfg.replicas < 2) return RINGKV_E_VALUE;
  if (st->s.fence == FENCE_NONE) {
    for (uint32_t p = 0; p < st->peers_len; p++) {
      if (p == o->n->self) continue;
      st->peers[p].acked = 0;
      /* A push in flight was built before the fence (without learned rows): its answer
       * acknowledges nothing now. */
      st->peers[p].ack_on_success = 0;
      st->peers[p].dirty = true;
    }
  }
  st->s.fence = RK_MAX(st->s.fence, fence);
  return RINGKV_OK;
}

/* Whether the fence asked for may wipe the node now: between steps (no chain half done),
 * with its dots on record at RingControl (a lease granted, or no dot made: a node wiped
 * before its first lease would make its earlier dots again), and, unless forced, once
 * every peer has acknowledged every change a push carries (else a write only it held
 * would be lost with it). */
static bool fence_due(const ringkv_node *n, const rk_step *st) {
  if (st->s.fence == FENCE_NONE || st->wait != WAIT_NONE) return false;
  if (n->cfg.leases && st->lease.end == 0 && n->counter != 0) return false;
  return st->s.fence == FENCE_FORCE || unacked_changes(n, st) == 0;
}

/* ---------------------------------------------------------------------------------------
 * The step */

/* After the event: whatever a report shows that changed (rows, counters, sends, a peer's
 * answer) marks the report changed; a due report asks for the facts once the chain has
 * nothing else to load, holding the event's answer for the report's step. */
static int report_step(out_t *o, uint32_t event, int waited) {
  rk_step *st = o->st;
  bool report_chain = event == 4 && waited == WAIT_REPORT;
  bool sent = pb_result(&o->sends).len > 0 && !report_chain;
  bool answer = event == 5 && !o->report_answer;
  if (pb_result(&o->rows).len > 0 || o->stat_len > 0 || sent || answer) rk_report_changed(&st->rep);
  if (o->has_load || st->wait != WAIT_NONE || !rk_report_due(&st->rep, o->n, o->now)) return RINGKV_OK;
  load_begin(o);
  RK_TRY(rk_report_ask(&st->rep, &o->load, o->reply));
  o->reply.ptr = NULL;
  o->reply.len = 0;
  st->wait = WAIT_REPORT;
  return RINGKV_OK;
}

int rk_step_run(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_step *st = n->step;
  if (st == NULL) return RINGKV_E_STATE;
  int t_;
  bool ok = true, alarm = false, start = false;
  uint64_t now = 0, rnd = 0;
  rk_slice body = {NULL, 0};
  uint32_t event = 0, fence = 0;
  int events = 0;
  FIELDS(req) {
    case 1: ok = pb_get_u64(R, WT, &now); break;
    case 2: ok = pb_get_u64(R, WT, &rnd); break;
    case 3: ok = pb_get_bool(R, WT, &alarm); if (alarm) { event = 3; events++; } break;
    case 4: case 5: case 6: case 7: ok = pb_get_bytes(R, WT, &body); event = f_; events++; break;
    case 8: ok = pb_get_bool(R, WT, &start); if (start) { event = 8; events++; } break;
    case 9: ok = pb_get_u32(R, WT, &fence); if (fence != 0) { event = 9; events++; } break;
    case 20: ok = pb_get_bytes(R, WT, &body); event = f_; events++; break;
    SKIP;
  }
  if (!ok || t_ < 0 || events != 1 || fence > FENCE_FORCE) return RINGKV_E_DECODE;
  int waited = st->wait;
  /* Only `loaded` may follow a load; anything else drops the chain it would have gone on
   * with (as a lost message: its sender tries again). */
  if (st->wait != WAIT_NONE && event != 4) chain_drop(st);
  /* Tags start at a random point per instance, so an answer to an earlier instance's send
   * that an executor hands in anyway (it should drop it) names no send of this one: taken
   * for this one's, it would acknowledge changes the other message never carried. */
  if (!st->tags_seeded) {
    st->next_tag = (uint32_t)(rnd >> 32);
    st->tags_seeded = true;
  }
  RK_TRY(rk_report_ready(&st->rep, n));
  /* A node that started with no state draws the incarnation its lease requests carry. */
  if (n->cfg.leases && st->lease.fresh && st->lease.incarnation == 0) {
    st->lease.incarnation = rnd | 1u;
    /* Its reports are numbered from its clock on, so RingControl takes them as newer than
     * those of the life whose storage was lost (at most one report a millisecond). */
    if (st->rep.number == 0) st->rep.number = now;
  }
  sched_t saved = st->s;
  rk_report saved_rep = st->rep;
  rk_lease saved_lease = st->lease;
  out_t o;
  memset(&o, 0, sizeof o);
  o.n = n;
  o.st = st;
  o.now = now;
  o.rnd = rnd;
  o.quorum_opened = -1;
  enc(&o, &o.rows);
  enc(&o, &o.sends);
  clamp_to_clock(&o);
  int rc = RINGKV_OK;
  switch (event) {
    case 3:
      /* An alarm armed for a report (before the round is due) runs no round. */
      if (!n->cfg.reports || o.now >= st->s.last_round_ms + interval_ms(n)) round_begin(&o);
      break;
    case 4: rc = loaded_event(&o, body); break;
    case 5: rc = answer(&o, body); break;
    case 6: rc = client_write(&o, body); break;
    case 7: rc = incoming(&o, body); break;
    case 20: rc = refused_event(&o, body); break;
    case 9: rc = fence_asked(&o, fence); break;
    case 8:
      /* A node of an earlier release looks at its tombstones once. */
      if (!st->s.gc_begun) {
        st->s.gc_begun = true;
        if (st->s.gc_at_ms == 0) st->s.gc_at_ms = o.now + interval_ms(n);
      }
      break;
    default: break;
  }
  if (rc == RINGKV_OK && n->cfg.reports) rc = report_step(&o, event, waited);
  if (rc == RINGKV_OK && n->cfg.leases) {
    /* A catch-up page whose merge chain ended in this step is written with it. */
    int m = rk_catchup_merging(&st->cu);
    if (m >= 0 && st->wait == WAIT_NONE) {
      /* A page some entry of which was refused or deferred is asked again (never counted
       * as copied: the shard would serve reads without it). */
      if (st->msg_short) rk_catchup_lost(&st->cu, n, (uint32_t)m, o.now);
      else rk_catchup_merged(&st->cu, n, (uint32_t)m, o.now);
      st->msg_short = false;
    }
    rc = leases_step(&o);
  }
  if (rc == RINGKV_OK) rc = cover_step(&o);
  if (rc != RINGKV_OK) {
    /* A wait opened by the failed step is closed: its write's answer never goes back. */
    if (o.quorum_opened >= 0) {
      rk_quorum_close(&st->quorum, o.quorum_opened);
      if (st->wait == WAIT_QUORUM_ROW) st->wait = WAIT_NONE;
    }
    st->s = saved;
    /* The counter rolls back with the call (ringkv_call): so does the lease it lies in. */
    st->lease = saved_lease;
    if (st->wait == WAIT_NONE) rk_catchup_unmerged(&st->cu, now);
    /* Only the scalars roll back: the buffers are the report's own (a failed step sent
     * nothing, so nothing is in flight that was not before). */
    st->rep.live_keys = saved_rep.live_keys;
    st->rep.state = saved_rep.state;
    st->rep.number = saved_rep.number;
    return rc;
  }
  /* The reply, fields in order. */
  pb_enc e;
  enc(&o, &e);
  if (o.has_load) {
    size_t m = pb_begin(&e, 1);
    rk_slice l = pb_result(&o.load);
    pb_put_raw(&e, l.ptr, l.len);
    pb_end(&e, m);
  }
  rk_slice rows = pb_result(&o.rows);
  pb_put_raw(&e, rows.ptr, rows.len);
  for (uint32_t p = 0; p < st->peers_len; p++) {
    peer_t *ps = &st->peers[p];
    if (!ps->dirty) continue;
    ps->dirty = false;
    size_t m = pb_begin(&e, 4);
    pb_put_uint(&e, 1, p);
    pb_put_uint(&e, 2, ps->acked);
    pb_put_uint(&e, 3, ps->failures);
    pb_put_uint(&e, 4, ps->retry_at);
    pb_end(&e, m);
  }
  pb_enc se;
  enc(&o, &se);
  sched_write(&se, n, &st->s);
  rk_slice state = pb_result(&se);
  if (!rk_slice_eq(state, buf_slice(&st->saved))) {
    if (!buf_set(&st->saved, state)) return RINGKV_E_NOMEM;
    pb_put_bytes_always(&e, 5, state);
  }
  rk_slice sends = pb_result(&o.sends);
  pb_put_raw(&e, sends.ptr, sends.len);
  pb_put_bytes(&e, 7, o.reply);
  pb_put_uint(&e, 8, next_alarm(&o));
  for (size_t i = 0; i < o.stat_len; i++) {
    size_t m = pb_begin(&e, 9);
    pb_put_bytes(&e, 1, o.stat[i].name);
    pb_put_uint(&e, 2, o.stat[i].delta);
    pb_end(&e, m);
  }
  pb_put_bool(&e, 10, fence_due(n, st));
  /* Asked for with a start (RingControl's push is answered by one): counting what is left
   * to drop looks at every shard, too much for every step. */
  if (event == 8) rk_report_progress_write(&e, n, 11);
  if (o.quorum_wait != 0) pb_put_uint(&e, 12, o.quorum_wait);
  for (size_t i = 0; i < o.outcomes; i++) {
    size_t m = pb_begin(&e, 13);
    pb_put_uint(&e, 1, o.outcome[i].id);
    pb_put_uint(&e, 2, o.outcome[i].replicas);
    pb_put_bool(&e, 3, o.outcome[i].reached);
    pb_end(&e, m);
  }
  if (e.err) return e.err;
  *reply = pb_result(&e);
  return RINGKV_OK;
}
