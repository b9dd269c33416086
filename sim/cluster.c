/* cluster.c: the simulated cluster (see sim.h): storage, the Durable Object's loop per node,
 * the network, faults, convergence and the oracles. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>

#include "hash.h"
#include "register.h"
#include "sim.h"
#include "wire.h"

#define CHECK_ALLOC(p)                                   \
  do {                                                   \
    if ((p) == NULL) {                                   \
      fprintf(stderr, "sim: out of memory\n");           \
      exit(2);                                           \
    }                                                    \
  } while (0)

static const uint64_t BASE_MS = UINT64_C(1700000000000);

/* ---------------------------------------------------------------------------------------
 * Seeded randomness: splitmix64, one stream per concern so that changing the faults does
 * not change the workload. */
typedef struct {
  uint64_t state;
} rng;

static uint64_t rnd(rng *r) { return rk_mix64(&r->state); }
static uint64_t rnd_below(rng *r, uint64_t n) { return n == 0 ? 0 : rnd(r) % n; }
static bool rnd_chance(rng *r, double p) {
  if (p <= 0) return false;
  return (double)(rnd(r) >> 11) * (1.0 / 9007199254740992.0) < p;
}
static rng rng_stream(uint64_t seed, uint64_t stream) {
  uint64_t s = seed ^ (stream * UINT64_C(0xD1B54A32D192ED03));
  rng r = {rk_mix64(&s)};
  return r;
}

/* ---------------------------------------------------------------------------------------
 * Storage: what the Durable Object keeps in SQLite. */
typedef struct {
  w_dot dot;
  uint8_t *bytes;
  uint32_t len;
} stored_value;

typedef struct {
  uint8_t *meta;
  uint32_t meta_len;
  uint64_t seq;
  bool from_client;
  w_key_info info;
  stored_value *values;
  uint32_t values_len;
  uint32_t values_cap;
} row;

typedef struct {
  uint32_t id;
  ringkv_node *core;
  uint64_t epoch;          /* bumped at every restart: pending requests die with it */
  /* persisted */
  uint64_t clock;
  uint64_t counter;
  uint64_t *shard_digest;  /* [shards] */
  row **rows;              /* [keys] */
  uint64_t seq;
  uint64_t *log_seq;       /* change log: (seq, key) appended at every row change */
  uint32_t *log_key;
  size_t log_len, log_cap;
  uint64_t *acked_seq;     /* [nodes] */
  uint64_t *retry_round;   /* [nodes] */
  uint32_t *retry_backoff; /* [nodes] */
  /* volatile */
  int64_t skew_ms;
  uint8_t side;            /* partition side */
  bool ae_busy;
  uint64_t ae_next_round;      /* persisted by the DO (conf ae_next_ms) */
  uint32_t ae_backoff_rounds;  /* the current anti-entropy interval (conf ae_interval_ms) */
  uint32_t ae_cursor;          /* the next peer in turn (conf ae_cursor) */
  uint32_t ae_agreed;          /* in memory: equal exchanges in a row, up to a full cycle
                                  of peers (from then on each one doubles the interval) */
  int64_t last_change_round;   /* in memory: a write, an applied merge or a push sent */
  int64_t last_ae_round;       /* in memory */
  uint64_t lowest_ack;         /* in memory: the lowest ack over all peers at the last push */
  bool gc_busy;
  uint64_t gc_session;
  uint32_t gc_pending;
  uint8_t **gc_replies;
  uint32_t *gc_reply_lens;
  uint32_t gc_replies_len;
  uint32_t *gc_keys;
  uint32_t gc_keys_len;
  /* peers for pushes and acks (every other node, or nodes sharing a shard) */
  uint32_t *peers;
  uint32_t peers_len;
  /* anti-entropy peers: the nodes sharing a shard (InitReply.peers), or every other node */
  uint32_t *ae_peers;
  uint32_t ae_peers_len;
  uint32_t *keys;          /* keys this node replicates */
  uint32_t keys_len;
} node;

typedef struct {
  uint8_t *bytes;
  uint32_t len;
  uint32_t shard;
  uint32_t *replicas;
  int64_t best_ack;        /* the acknowledged write with the highest (hlc, node) */
  bool written;
} key_entry;

typedef struct {
  uint32_t key;
  uint64_t hlc;
  w_dot dot;
  bool deleted;
  uint64_t value_hash;
} ack;

/* Network events. A request and its response are two legs of one exchange (req_id). */
enum {
  EV_PUSH_REQ = 1,
  EV_PUSH_RESP,
  EV_AE_DIGEST_REQ,
  EV_AE_DIGEST_RESP,
  EV_AE_REPAIR_REQ,
  EV_AE_REPAIR_RESP,
  EV_GC_REQ,
  EV_GC_RESP,
  EV_FAIL,                 /* the requester's fetch failed (lost leg, timeout) */
};

typedef struct {
  uint64_t round;
  uint64_t order;
  uint8_t kind;
  uint8_t req_kind;        /* for EV_FAIL: the request's kind */
  uint32_t from;
  uint32_t to;
  uint32_t origin;         /* the requester */
  uint32_t peer;           /* the node the requester asked */
  uint64_t origin_epoch;
  uint64_t req_id;
  uint64_t sent_round;
  uint64_t aux;            /* push: acked_seq_on_success; gc: session */
  uint8_t *body;
  uint32_t len;
} event;

typedef struct {
  const sim_opts *o;
  sim_result *res;
  rk_arena ar;
  rng net, work, fault;
  uint64_t round;
  node *nodes;
  key_entry *keys;
  uint32_t keys_used;      /* fresh_keys: keys handed out so far */
  uint32_t *key_map;       /* open addressing: key id + 1 */
  uint32_t key_map_mask;
  uint32_t **shard_replicas;   /* [shards] -> replicas (NULL when no probe hit it) */
  uint32_t *shard_keys_start;  /* CSR: keys by shard */
  uint32_t *shard_keys;
  ack *acks;
  size_t acks_len, acks_cap;
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
  uint64_t bytes_this_round;
  double entry_bytes_sum;
  uint64_t entry_count;
  bool failed;
  w_config cfg;
  uint64_t *tmp_digest;    /* [shards] */
  const char *cause;       /* what the current change is, for --trace-key */
  uint32_t cause_peer;
} sim;

static void failf(sim *s, const char *check, const char *fmt, ...) {
  if (s->failed) return;
  s->failed = true;
  s->res->ok = false;
  snprintf(s->res->failed_check, sizeof(s->res->failed_check), "%s", check);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->res->failed_detail, sizeof(s->res->failed_detail), fmt, ap);
  va_end(ap);
  fprintf(stderr, "sim: seed %" PRIu64 ": check %s failed at round %" PRIu64 ": %s\n", s->o->seed, check,
          s->round, s->res->failed_detail);
}

static uint64_t now_ms(const sim *s, const node *n) {
  return (uint64_t)((int64_t)(BASE_MS + s->round * s->o->interval_ms) + n->skew_ms);
}

/* ---------------------------------------------------------------------------------------
 * Calling the core: the request is built in the simulator's arena, the reply copied out of
 * the node's arena at once (it is valid only until the next call on that node). */
static int core_call(sim *s, node *n, uint32_t op, const pb_enc *e, rk_slice *reply) {
  if (e->err != 0) {
    failf(s, "sim_encoder", "encoding a request for op %u failed (%d)", op, e->err);
    return -1;
  }
  const uint8_t *out = NULL;
  size_t out_len = 0;
  int code = ringkv_call(n->core, op, e->buf, e->len, &out, &out_len);
  uint8_t *copy = rk_alloc(&s->ar, out_len ? out_len : 1);
  CHECK_ALLOC(copy);
  if (out_len) memcpy(copy, out, out_len);
  reply->ptr = copy;
  reply->len = out_len;
  return code;
}

/* A call that must succeed on the simulator's well-formed input. */
static bool core_call_ok(sim *s, node *n, uint32_t op, const pb_enc *e, rk_slice *reply) {
  int code = core_call(s, n, op, e, reply);
  if (code < 0) return false;
  if (code != RINGKV_OK) {
    failf(s, "core_error", "node %u op %u returned %d (%s) on a %zu-byte request", n->id, op, code,
          ringkv_code_name(code), e->len);
    return false;
  }
  return true;
}

static bool decode_failed(sim *s, node *n, const char *what) {
  failf(s, "core_reply_decode", "node %u: %s reply does not decode", n->id, what);
  return false;
}

static void note_state(sim *s, node *n, const w_node_state *st) {
  if (!st->present) return;
  if (st->node != n->id) failf(s, "node_state", "node %u got a NodeState for node %u", n->id, st->node);
  if (st->clock < n->clock)
    failf(s, "hlc_monotonic", "node %u clock went back from %" PRIu64 " to %" PRIu64, n->id, n->clock,
          st->clock);
  if (st->counter < n->counter)
    failf(s, "counter_monotonic", "node %u dot counter went back from %" PRIu64 " to %" PRIu64, n->id,
          n->counter, st->counter);
  n->clock = st->clock;
  n->counter = st->counter;
}

/* ---------------------------------------------------------------------------------------
 * Keys. */
static int64_t key_lookup(const sim *s, rk_slice k) {
  uint64_t h = rk_hash(k.ptr, k.len);
  for (uint32_t i = (uint32_t)h & s->key_map_mask;; i = (i + 1) & s->key_map_mask) {
    uint32_t v = s->key_map[i];
    if (v == 0) return -1;
    const key_entry *e = &s->keys[v - 1];
    if (e->len == k.len && memcmp(e->bytes, k.ptr, k.len) == 0) return v - 1;
  }
}

static void key_insert(sim *s, uint32_t id) {
  uint64_t h = rk_hash(s->keys[id].bytes, s->keys[id].len);
  uint32_t i = (uint32_t)h & s->key_map_mask;
  while (s->key_map[i] != 0) i = (i + 1) & s->key_map_mask;
  s->key_map[i] = id + 1;
}

static rk_slice key_slice(const sim *s, uint32_t k) {
  rk_slice x = {s->keys[k].bytes, s->keys[k].len};
  return x;
}

static bool is_replica(const sim *s, uint32_t k, uint32_t n) {
  for (uint32_t i = 0; i < s->o->replicas; i++)
    if (s->keys[k].replicas[i] == n) return true;
  return false;
}

/* ---------------------------------------------------------------------------------------
 * Rows. */
static void log_append(node *n, uint64_t seq, uint32_t key) {
  if (n->log_len == n->log_cap) {
    n->log_cap = n->log_cap ? n->log_cap * 2 : 256;
    n->log_seq = realloc(n->log_seq, n->log_cap * sizeof(*n->log_seq));
    n->log_key = realloc(n->log_key, n->log_cap * sizeof(*n->log_key));
    CHECK_ALLOC(n->log_seq);
    CHECK_ALLOC(n->log_key);
  }
  n->log_seq[n->log_len] = seq;
  n->log_key[n->log_len] = key;
  n->log_len++;
}

static void row_free(row *r) {
  if (r == NULL) return;
  for (uint32_t i = 0; i < r->values_len; i++) free(r->values[i].bytes);
  free(r->values);
  free(r->meta);
  free(r);
}

static void row_drop_value(row *r, w_dot d) {
  for (uint32_t i = 0; i < r->values_len; i++) {
    if (r->values[i].dot.node == d.node && r->values[i].dot.counter == d.counter) {
      free(r->values[i].bytes);
      r->values[i] = r->values[--r->values_len];
      return;
    }
  }
}

static void row_put_value(row *r, w_dot d, rk_slice v) {
  row_drop_value(r, d);
  if (r->values_len == r->values_cap) {
    r->values_cap = r->values_cap ? r->values_cap * 2 : 2;
    r->values = realloc(r->values, r->values_cap * sizeof(*r->values));
    CHECK_ALLOC(r->values);
  }
  stored_value *sv = &r->values[r->values_len++];
  sv->dot = d;
  sv->len = (uint32_t)v.len;
  sv->bytes = malloc(v.len ? v.len : 1);
  CHECK_ALLOC(sv->bytes);
  if (v.len) memcpy(sv->bytes, v.ptr, v.len);
}

/* The values of a row as the core wants them, sorted by dot so requests are canonical. */
static int value_cmp(const void *a, const void *b) {
  const w_value *x = a, *y = b;
  if (x->dot.node != y->dot.node) return x->dot.node < y->dot.node ? -1 : 1;
  if (x->dot.counter != y->dot.counter) return x->dot.counter < y->dot.counter ? -1 : 1;
  return 0;
}

static w_local row_local(sim *s, const row *r, uint32_t k, bool with_values) {
  w_local l;
  memset(&l, 0, sizeof(l));
  l.key = key_slice(s, k);
  if (r == NULL) return l;
  l.meta.ptr = r->meta;
  l.meta.len = r->meta_len;
  l.expired = r->info.expired;
  if (with_values && r->values_len) {
    w_value *v = rk_alloc_array(&s->ar, r->values_len, sizeof(*v));
    CHECK_ALLOC(v);
    for (uint32_t i = 0; i < r->values_len; i++) {
      v[i].dot = r->values[i].dot;
      v[i].value.ptr = r->values[i].bytes;
      v[i].value.len = r->values[i].len;
    }
    qsort(v, r->values_len, sizeof(*v), value_cmp);
    l.values = v;
    l.values_len = r->values_len;
  }
  return l;
}

/* Contexts only grow: every dot the old context covers, the new one covers. */
static void check_context_grows(sim *s, node *n, uint32_t k, const row *old, rk_slice meta) {
  if (!s->o->check_contexts || old == NULL || old->meta_len == 0) return;
  rk_reg a, b;
  rk_slice om = {old->meta, old->meta_len};
  if (rk_reg_decode(&s->ar, om, &a) != 0 || rk_reg_decode(&s->ar, meta, &b) != 0) {
    failf(s, "meta_decode", "node %u key %u: stored meta does not decode", n->id, k);
    return;
  }
  for (size_t i = 0; i < a.ctx.vv_len; i++) {
    uint64_t have = 0;
    for (size_t j = 0; j < b.ctx.vv_len; j++)
      if (b.ctx.vv[j].node == a.ctx.vv[i].node) have = b.ctx.vv[j].counter;
    if (have < a.ctx.vv[i].counter)
      failf(s, "contexts_grow", "node %u key %u: vv[%u] went from %" PRIu64 " to %" PRIu64, n->id, k,
            a.ctx.vv[i].node, a.ctx.vv[i].counter, have);
  }
  for (size_t i = 0; i < a.ctx.dots_len; i++)
    if (!rk_ctx_covers(&b.ctx, a.ctx.dots[i]))
      failf(s, "contexts_grow", "node %u key %u: dot (%u,%" PRIu64 ") no longer covered", n->id, k,
            a.ctx.dots[i].node, a.ctx.dots[i].counter);
}

static void set_shard_digest(sim *s, node *n, uint32_t shard, uint64_t d) {
  if (shard >= s->o->shards) {
    failf(s, "shard_range", "node %u: shard %u out of range", n->id, shard);
    return;
  }
  n->shard_digest[shard] = d;
}

static void trace_row(sim *s, const node *n, uint32_t k, const char *what) {
  const row *r = n->rows[k];
  fprintf(stderr, "trace round %" PRIu64 " node %u key %u: %s (peer %u): ", s->round, n->id, k, what, s->cause_peer);
  if (r == NULL) {
    fprintf(stderr, "absent\n");
    return;
  }
  fprintf(stderr, "seq %" PRIu64 " from_client %d winner %u@%" PRIu64 " siblings %u%s%s digest %016" PRIx64 "\n", r->seq,
          r->from_client, r->info.winner_node, r->info.winner_hlc, r->info.siblings, r->info.all_deleted ? " all-deleted" : "",
          r->info.expired ? " expired" : "", r->info.digest);
}

/* Applies one Applied (merge, expire, GC) in one "transaction". */
static void apply_applied(sim *s, node *n, const w_applied *a, bool bump_seq, rk_slice message) {
  int64_t k = key_lookup(s, a->key);
  if (k < 0) {
    failf(s, "unknown_key", "node %u: core applied a key the simulator never wrote", n->id);
    return;
  }
  if (a->shard != s->keys[k].shard)
    failf(s, "placement", "node %u key %" PRId64 ": Applied.shard %u, placement says %u", n->id, k, a->shard,
          s->keys[k].shard);
  row *r = n->rows[k];
  if (a->meta.len == 0) {
    row_free(r);
    n->rows[k] = NULL;
  } else {
    if (!is_replica(s, (uint32_t)k, n->id))
      failf(s, "placement", "node %u stores key %" PRId64 " it does not replicate", n->id, k);
    check_context_grows(s, n, (uint32_t)k, r, a->meta);
    if (r == NULL) {
      r = calloc(1, sizeof(*r));
      CHECK_ALLOC(r);
      n->rows[k] = r;
    }
    if (r->meta_len != a->meta.len || memcmp(r->meta, a->meta.ptr, a->meta.len) != 0) {
      free(r->meta);
      r->meta = malloc(a->meta.len);
      CHECK_ALLOC(r->meta);
      memcpy(r->meta, a->meta.ptr, a->meta.len);
      r->meta_len = (uint32_t)a->meta.len;
    }
    if (!a->info.present) failf(s, "key_info", "node %u key %" PRId64 ": Applied without KeyInfo", n->id, k);
    r->info = a->info;
    for (size_t i = 0; i < a->dropped_len; i++) row_drop_value(r, a->dropped[i]);
    for (size_t i = 0; i < a->put_len; i++) {
      if (s->o->break_mode == SIM_BREAK_DROP_VALUE && n->id == 0) continue;   /* oracle self-test */
      rk_slice v = a->put[i].value;
      if (a->put[i].length > 0) {
        /* Given by its place in the merged message. */
        if (a->put[i].at > message.len || a->put[i].length > message.len - a->put[i].at) {
          failf(s, "applied_value", "node %u: Applied names bytes outside the message", n->id);
          return;
        }
        v.ptr = message.ptr + a->put[i].at;
        v.len = a->put[i].length;
      }
      row_put_value(r, a->put[i].dot, v);
    }
    if (bump_seq) {
      uint64_t old_seq = r->seq;
      r->seq = ++n->seq;
      /* A learned change. Plain: the row is no longer "from a client", so a client write
       * that some replica has not acknowledged yet is left to anti-entropy. Until-acked:
       * the flag stays while any other replica's acknowledgement is below the client
       * write's sequence. Sticky: it stays for good. */
      if (s->o->from_client_mode == SIM_FROM_CLIENT_PLAIN) {
        r->from_client = false;
      } else if (s->o->from_client_mode == SIM_FROM_CLIENT_UNTIL_ACKED && r->from_client) {
        /* worker/node.ts: from_client stays 1 while keys.seq > the lowest ack over all
         * peers, as of the last push step. */
        if (old_seq <= n->lowest_ack) r->from_client = false;
      }
      log_append(n, r->seq, (uint32_t)k);
    }
  }
  set_shard_digest(s, n, a->shard, a->shard_digest);
  if (s->o->trace_key == k) trace_row(s, n, (uint32_t)k, s->cause ? s->cause : "?");
}

/* ---------------------------------------------------------------------------------------
 * Node lifecycle. */
static void node_init_core(sim *s, node *n) {
  if (n->core) ringkv_node_destroy(n->core);
  n->core = ringkv_node_create();
  CHECK_ALLOC(n->core);
  uint32_t cnt = 0;
  for (uint32_t i = 0; i < s->o->shards; i++) cnt += n->shard_digest[i] != 0;
  uint32_t *sh = rk_alloc_array(&s->ar, cnt + 1, sizeof(uint32_t));
  uint64_t *dg = rk_alloc_array(&s->ar, cnt + 1, sizeof(uint64_t));
  CHECK_ALLOC(sh);
  CHECK_ALLOC(dg);
  cnt = 0;
  for (uint32_t i = 0; i < s->o->shards; i++) {
    if (n->shard_digest[i] != 0) {
      sh[cnt] = i;
      dg[cnt++] = n->shard_digest[i];
    }
  }
  pb_enc e;
  pb_enc_init(&e, &s->ar);
  w_enc_init(&e, &s->cfg, n->id, n->clock, n->counter, sh, dg, cnt);
  rk_slice reply;
  int code = core_call(s, n, RINGKV_OP_INIT, &e, &reply);
  if (code != RINGKV_OK) {
    rk_slice err = {0};
    w_dec_init_reply(reply, &err);
    failf(s, "init", "node %u OP_INIT returned %d: %.*s", n->id, code, (int)err.len, (const char *)err.ptr);
  }
  n->epoch++;
  /* What the Durable Object keeps only in memory is lost with the instance. */
  n->ae_busy = false;
  n->ae_agreed = 0;
  n->gc_busy = false;
  for (uint32_t i = 0; i < n->gc_replies_len; i++) free(n->gc_replies[i]);
  n->gc_replies_len = 0;
  n->last_change_round = INT64_MIN / 2;
  n->last_ae_round = INT64_MIN / 2;
  n->lowest_ack = 0;
  if (n->ae_backoff_rounds == 0) n->ae_backoff_rounds = 1;
}

static void node_restart(sim *s, node *n) {
  s->res->restarts++;
  if (s->o->skew) n->skew_ms = (int64_t)rnd_below(&s->fault, 2 * s->o->skew_ms_max + 1) - (int64_t)s->o->skew_ms_max;
  node_init_core(s, n);
}

/* ---------------------------------------------------------------------------------------
 * The network: a heap of events ordered by (round, order). */
static bool ev_less(const event *a, const event *b) {
  return a->round != b->round ? a->round < b->round : a->order < b->order;
}

static void heap_push(sim *s, event *e) {
  e->order = s->order_next++;
  if (s->heap_len == s->heap_cap) {
    s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 1024;
    s->heap = realloc(s->heap, s->heap_cap * sizeof(*s->heap));
    CHECK_ALLOC(s->heap);
  }
  size_t i = s->heap_len++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!ev_less(e, s->heap[p])) break;
    s->heap[i] = s->heap[p];
    i = p;
  }
  s->heap[i] = e;
}

static event *heap_pop(sim *s) {
  event *top = s->heap[0];
  event *last = s->heap[--s->heap_len];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= s->heap_len) break;
    if (c + 1 < s->heap_len && ev_less(s->heap[c + 1], s->heap[c])) c++;
    if (!ev_less(s->heap[c], last)) break;
    s->heap[i] = s->heap[c];
    i = c;
  }
  if (s->heap_len) s->heap[i] = last;
  return top;
}

static void ev_free(event *e) {
  free(e->body);
  free(e);
}

static uint64_t timeout_rounds(const sim *s) { return 2u * s->o->latency_rounds_max + 2u; }

static void schedule_fail(sim *s, const event *leg) {
  event *f = calloc(1, sizeof(*f));
  CHECK_ALLOC(f);
  *f = *leg;
  f->body = NULL;
  f->len = 0;
  f->kind = EV_FAIL;
  f->req_kind = leg->kind % 2 == 1 ? leg->kind : (uint8_t)(leg->kind - 1);
  f->from = leg->origin;
  f->to = leg->origin;
  f->round = leg->sent_round + timeout_rounds(s);
  heap_push(s, f);
}

static void count_bytes(sim *s, uint8_t kind, uint32_t len) {
  sim_result *r = s->res;
  r->messages++;
  r->bytes += len;
  s->bytes_this_round += len;
  switch (kind) {
    case EV_PUSH_REQ:
    case EV_PUSH_RESP: r->bytes_push += len; break;
    case EV_AE_DIGEST_REQ:
    case EV_AE_DIGEST_RESP: r->bytes_ae += len; break;
    case EV_AE_REPAIR_REQ:
    case EV_AE_REPAIR_RESP: r->bytes_repair += len; break;
    default: r->bytes_gc += len; break;
  }
}

/* Sends one leg: counted on the wire, then lost, delayed or duplicated. */
static void send_leg(sim *s, event *e) {
  count_bytes(s, e->kind, e->len);
  if (rnd_chance(&s->net, s->loss)) {
    s->res->messages_lost++;
    schedule_fail(s, e);
    ev_free(e);
    return;
  }
  uint32_t lat = (uint32_t)rnd_below(&s->net, (uint64_t)s->o->latency_rounds_max + 1);
  e->round = s->round + lat;
  if (rnd_chance(&s->net, s->dup)) {
    event *d = malloc(sizeof(*d));
    CHECK_ALLOC(d);
    *d = *e;
    d->body = malloc(e->len ? e->len : 1);
    CHECK_ALLOC(d->body);
    if (e->len) memcpy(d->body, e->body, e->len);
    d->round = s->round + rnd_below(&s->net, (uint64_t)s->o->latency_rounds_max + 1);
    s->res->messages_duplicated++;
    heap_push(s, d);
  }
  heap_push(s, e);
}

static uint8_t *copy_bytes(rk_slice b) {
  uint8_t *p = malloc(b.len ? b.len : 1);
  CHECK_ALLOC(p);
  if (b.len) memcpy(p, b.ptr, b.len);
  return p;
}

static void send_request(sim *s, uint8_t kind, node *from, uint32_t to, rk_slice body, uint64_t aux) {
  event *e = calloc(1, sizeof(*e));
  CHECK_ALLOC(e);
  e->kind = kind;
  e->from = from->id;
  e->to = to;
  e->origin = from->id;
  e->peer = to;
  e->origin_epoch = from->epoch;
  e->req_id = ++s->req_next;
  e->sent_round = s->round;
  e->aux = aux;
  e->body = copy_bytes(body);
  e->len = (uint32_t)body.len;
  if (e->req_id >= s->req_done_cap) {
    size_t cap = s->req_done_cap ? s->req_done_cap * 2 : 4096;
    while (cap <= e->req_id) cap *= 2;
    s->req_done = realloc(s->req_done, cap);
    CHECK_ALLOC(s->req_done);
    memset(s->req_done + s->req_done_cap, 0, cap - s->req_done_cap);
    s->req_done_cap = cap;
  }
  send_leg(s, e);
}

static void send_response(sim *s, const event *req, rk_slice body) {
  event *e = calloc(1, sizeof(*e));
  CHECK_ALLOC(e);
  *e = *req;
  e->kind = (uint8_t)(req->kind + 1);
  e->from = req->to;
  e->to = req->origin;
  e->body = copy_bytes(body);
  e->len = (uint32_t)body.len;
  send_leg(s, e);
}

/* ---------------------------------------------------------------------------------------
 * Merging a Push (gossip, repair request, repair answer): OP_MESSAGE_KEYS, load the rows,
 * OP_MERGE, apply. Returns the reply bytes (a repair answer) in the arena. */
static bool merge_push(sim *s, node *n, rk_slice msg, rk_slice *answer) {
  answer->ptr = NULL;
  answer->len = 0;
  pb_enc e;
  pb_enc_init(&e, &s->ar);
  pb_put_bytes(&e, 1, msg);
  rk_slice reply;
  if (!core_call_ok(s, n, RINGKV_OP_MESSAGE_KEYS, &e, &reply)) return false;
  w_message_keys mk;
  if (!w_dec_message_keys(&s->ar, reply, &mk)) return decode_failed(s, n, "MessageKeys");

  pb_enc_init(&e, &s->ar);
  pb_put_uint(&e, 1, now_ms(s, n));
  pb_put_bytes(&e, 2, msg);
  bool repair = mk.shards_len > 0;
  /* Rows of the shards named by a repair request, with values; then the entries' keys. */
  uint8_t *loaded = NULL;
  if (repair) {
    loaded = rk_zalloc(&s->ar, s->o->keys);
    CHECK_ALLOC(loaded);
    for (size_t i = 0; i < mk.shards_len; i++) {
      uint32_t sh = mk.shards[i];
      if (sh >= s->o->shards) {
        failf(s, "shard_range", "node %u: MessageKeys names shard %u", n->id, sh);
        return false;
      }
      for (uint32_t j = s->shard_keys_start[sh]; j < s->shard_keys_start[sh + 1]; j++) {
        uint32_t k = s->shard_keys[j];
        if (n->rows[k] == NULL || loaded[k]) continue;
        loaded[k] = 1;
        w_local l = row_local(s, n->rows[k], k, true);
        w_put_local(&e, 3, &l);
      }
    }
  }
  for (size_t i = 0; i < mk.keys_len; i++) {
    int64_t k = key_lookup(s, mk.keys[i]);
    if (k < 0) {
      failf(s, "unknown_key", "node %u: a message names a key the simulator never wrote", n->id);
      return false;
    }
    if (loaded && loaded[k]) continue;
    if (loaded) loaded[k] = 1;
    w_local l = row_local(s, n->rows[k], (uint32_t)k, repair);
    w_put_local(&e, 3, &l);
  }
  if (!core_call_ok(s, n, RINGKV_OP_MERGE, &e, &reply)) return false;
  w_merge_reply mr;
  if (!w_dec_merge_reply(&s->ar, reply, &mr)) return decode_failed(s, n, "Merge");
  note_state(s, n, &mr.node);
  if (s->o->trace_key >= 0) {
    for (size_t i = 0; i < mk.keys_len; i++)
      if (key_lookup(s, mk.keys[i]) == s->o->trace_key) {
        s->cause_peer = mk.from;
        fprintf(stderr, "trace round %" PRIu64 " node %u key %" PRId64 ": %s from %u arrives\n", s->round, n->id,
                s->o->trace_key, s->cause ? s->cause : "message", mk.from);
      }
  }
  for (size_t i = 0; i < mr.applied_len; i++) apply_applied(s, n, &mr.applied[i], true, msg);
  s->res->entries_applied += mr.applied_len;
  if (mr.applied_len) {
    n->last_change_round = (int64_t)s->round;
    if (s->o->ae_reset_on_learn) n->ae_backoff_rounds = 1;   /* a difference learned */
  }
  *answer = mr.reply;
  return true;
}

/* ---------------------------------------------------------------------------------------
 * Client operations. */
static void gen_value(uint64_t seed, uint8_t *out, uint32_t len) {
  uint64_t st = seed;
  for (uint32_t i = 0; i < len; i += 8) {
    uint64_t x = rk_mix64(&st);
    for (uint32_t j = 0; j < 8 && i + j < len; j++) out[i + j] = (uint8_t)('a' + (x >> (8 * j)) % 26);
  }
}

/* The encoded size of Entry{key, register with values} of a row: what an optimal protocol
 * sends to each other replica. */
static size_t entry_bytes(sim *s, const row *r, uint32_t k) {
  rk_reg reg;
  rk_slice meta = {r->meta, r->meta_len};
  if (rk_reg_decode(&s->ar, meta, &reg) != 0) return 0;
  for (size_t i = 0; i < reg.sibs_len; i++) {
    for (uint32_t j = 0; j < r->values_len; j++) {
      if (r->values[j].dot.node == reg.sibs[i].dot.node && r->values[j].dot.counter == reg.sibs[i].dot.counter) {
        reg.sibs[i].value.ptr = r->values[j].bytes;
        reg.sibs[i].value.len = r->values[j].len;
      }
    }
  }
  pb_enc e;
  pb_enc_init(&e, &s->ar);
  pb_put_bytes(&e, 1, key_slice(s, k));
  size_t m = pb_begin(&e, 2);
  rk_reg_encode(&e, &reg, true);
  pb_end(&e, m);
  return e.err ? 0 : e.len;
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
  node *n = &s->nodes[ke->replicas[rnd_below(&s->work, o->replicas)]];
  bool deleted = ke->written && rnd_chance(&s->work, o->delete_ratio);
  bool with_context = ke->written && rnd_chance(&s->work, o->context_ratio);
  uint32_t vlen = deleted ? 0 : o->value_bytes;
  uint8_t *value = rk_alloc(&s->ar, vlen + 1);
  CHECK_ALLOC(value);
  gen_value(s->o->seed ^ (write_index * UINT64_C(0x9E3779B97F4A7C15)), value, vlen);
  static const char *content_types[] = {"text/plain", "application/octet-stream", ""};
  const char *ct = deleted ? "" : content_types[rnd_below(&s->work, 3)];

  rk_slice token = {0};
  bool has_token = false;
  if (with_context) {
    /* The client read the key at some replica first (perhaps another one). */
    node *rn = &s->nodes[ke->replicas[rnd_below(&s->work, o->replicas)]];
    row *rr = rn->rows[k];
    pb_enc e;
    pb_enc_init(&e, &s->ar);
    pb_put_bytes(&e, 1, key_slice(s, k));
    if (rr) {
      rk_slice m = {rr->meta, rr->meta_len};
      pb_put_bytes(&e, 2, m);
    }
    rk_slice reply;
    if (!core_call_ok(s, rn, RINGKV_OP_READ, &e, &reply)) return;
    w_read_reply rd;
    if (!w_dec_read_reply(&s->ar, reply, &rd)) {
      decode_failed(s, rn, "Read");
      return;
    }
    if (rd.found) {
      token = rd.token;
      has_token = true;
    }
  }

  row *r = n->rows[k];
  pb_enc e;
  pb_enc_init(&e, &s->ar);
  pb_put_uint(&e, 1, now_ms(s, n));
  pb_put_bytes(&e, 2, key_slice(s, k));
  if (r) {
    rk_slice m = {r->meta, r->meta_len};
    pb_put_bytes(&e, 3, m);
  }
  pb_put_bool(&e, 4, has_token);
  pb_put_bytes(&e, 5, token);
  rk_slice vs = {value, vlen};
  pb_put_bytes(&e, 6, vs);
  rk_slice cts = {(const uint8_t *)ct, strlen(ct)};
  pb_put_bytes(&e, 7, cts);
  pb_put_bool(&e, 8, deleted);
  pb_put_bool(&e, 9, r ? r->info.expired : false);
  rk_slice reply;
  int code = core_call(s, n, RINGKV_OP_WRITE, &e, &reply);
  if (code < 0) return;
  if (code == RINGKV_E_SIBLINGS || code == RINGKV_E_SKEW) {
    s->res->rejected_writes++;
    return;
  }
  if (code != RINGKV_OK) {
    failf(s, "core_error", "node %u OP_WRITE key %u returned %d (%s)", n->id, k, code, ringkv_code_name(code));
    return;
  }
  w_write_reply w;
  if (!w_dec_write_reply(&s->ar, reply, &w)) {
    decode_failed(s, n, "Write");
    return;
  }
  note_state(s, n, &w.node);
  if (w.shard != ke->shard)
    failf(s, "placement", "node %u key %u: WriteReply.shard %u, placement says %u", n->id, k, w.shard, ke->shard);
  if (w.dot.node != n->id) failf(s, "write_dot", "node %u wrote dot of node %u", n->id, w.dot.node);
  check_context_grows(s, n, k, r, w.meta);
  if (r == NULL) {
    r = calloc(1, sizeof(*r));
    CHECK_ALLOC(r);
    n->rows[k] = r;
  }
  free(r->meta);
  r->meta = copy_bytes(w.meta);
  r->meta_len = (uint32_t)w.meta.len;
  r->info = w.info;
  if (!w.info.present) failf(s, "key_info", "node %u key %u: WriteReply without KeyInfo", n->id, k);
  for (size_t i = 0; i < w.dropped_len; i++) row_drop_value(r, w.dropped[i]);
  if (!deleted) row_put_value(r, w.dot, vs);
  r->seq = ++n->seq;
  r->from_client = true;
  log_append(n, r->seq, k);
  set_shard_digest(s, n, w.shard, w.shard_digest);
  s->cause_peer = n->id;
  if (s->o->trace_key == (int64_t)k) trace_row(s, n, k, deleted ? "client delete" : has_token ? "client context write" : "client write");

  /* Record the acknowledged write. */
  if (s->acks_len == s->acks_cap) {
    s->acks_cap = s->acks_cap ? s->acks_cap * 2 : 1024;
    s->acks = realloc(s->acks, s->acks_cap * sizeof(*s->acks));
    CHECK_ALLOC(s->acks);
  }
  ack *a = &s->acks[s->acks_len];
  a->key = k;
  a->hlc = w.hlc;
  a->dot = w.dot;
  a->deleted = deleted;
  a->value_hash = deleted ? 0 : rk_hash(value, vlen);
  if (ke->best_ack < 0) {
    ke->best_ack = (int64_t)s->acks_len;
  } else {
    const ack *b = &s->acks[ke->best_ack];
    if (a->hlc > b->hlc || (a->hlc == b->hlc && a->dot.node > b->dot.node)) ke->best_ack = (int64_t)s->acks_len;
  }
  s->acks_len++;
  ke->written = true;
  s->res->acked_writes++;
  size_t eb = entry_bytes(s, r, k);
  s->entry_bytes_sum += (double)eb;
  s->entry_count++;
  /* A write is a change, and resets the anti-entropy interval (resetAntiEntropy). */
  n->last_change_round = (int64_t)s->round;
  n->ae_agreed = 0;
  if (!(n->ae_backoff_rounds == 1 && n->ae_next_round <= s->round + s->o->ae_first_rounds)) {
    n->ae_backoff_rounds = 1;
    n->ae_next_round = s->round + s->o->ae_first_rounds;
  }
}

/* ---------------------------------------------------------------------------------------
 * A gossip round at one node: expire, push, anti-entropy, collection. */
static void step_expire(sim *s, node *n) {
  uint64_t now = now_ms(s, n);
  if (now <= s->o->tombstone_grace_ms) return;
  uint64_t bound = (now - s->o->tombstone_grace_ms) << 16;
  pb_enc e;
  pb_enc_init(&e, &s->ar);
  pb_put_uint(&e, 1, now);
  uint32_t cnt = 0;
  for (uint32_t i = 0; i < n->keys_len && cnt < 512; i++) {
    uint32_t k = n->keys[i];
    row *r = n->rows[k];
    if (r == NULL || !r->info.all_deleted || r->info.expired || r->info.max_hlc >= bound) continue;
    w_local l = row_local(s, r, k, false);
    w_put_local(&e, 2, &l);
    cnt++;
  }
  if (cnt == 0) return;
  rk_slice reply;
  if (!core_call_ok(s, n, RINGKV_OP_EXPIRE, &e, &reply)) return;
  w_applied *ap;
  size_t ap_len;
  if (!w_dec_applied_list(&s->ar, reply, &ap, &ap_len)) {
    decode_failed(s, n, "Expire");
    return;
  }
  s->cause = "expire";
  for (size_t i = 0; i < ap_len; i++) apply_applied(s, n, &ap[i], false, (rk_slice){NULL, 0});
  s->res->expired += ap_len;
}

static bool peer_healthy(const sim *s, const node *n, uint32_t p) { return n->retry_round[p] <= s->round; }

static void step_push(sim *s, node *n) {
  if (n->peers_len == 0) return;
  uint64_t lowest = UINT64_MAX;
  for (uint32_t i = 0; i < n->peers_len; i++)
    if (n->acked_seq[n->peers[i]] < lowest) lowest = n->acked_seq[n->peers[i]];
  n->lowest_ack = lowest;
  uint64_t min_ack = UINT64_MAX;
  uint32_t healthy = 0;
  for (uint32_t i = 0; i < n->peers_len; i++) {
    uint32_t p = n->peers[i];
    if (!peer_healthy(s, n, p)) continue;
    healthy++;
    if (n->acked_seq[p] < min_ack) min_ack = n->acked_seq[p];
  }
  if (healthy == 0 || min_ack >= n->seq) return;
  /* Candidates: rows changed since min_ack, by seq, at most candidates_max. */
  size_t lo = 0, hi = n->log_len;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (n->log_seq[mid] <= min_ack) lo = mid + 1;
    else hi = mid;
  }
  pb_enc e;
  pb_enc_init(&e, &s->ar);
  uint32_t cnt = 0;
  uint64_t scanned_to = n->seq;
  for (size_t i = lo; i < n->log_len; i++) {
    uint32_t k = n->log_key[i];
    row *r = n->rows[k];
    if (r == NULL || r->seq != n->log_seq[i]) continue;
    if (cnt == s->o->candidates_max) {
      scanned_to = n->log_seq[i] - 1;
      break;
    }
    size_t m = pb_begin(&e, 1);
    w_local l = row_local(s, r, k, true);
    w_put_local(&e, 1, &l);
    pb_put_uint(&e, 2, r->seq);
    pb_put_bool(&e, 3, r->from_client);
    pb_end(&e, m);
    cnt++;
  }
  for (uint32_t i = 0; i < n->peers_len; i++) {
    uint32_t p = n->peers[i];
    if (!peer_healthy(s, n, p)) continue;
    size_t m = pb_begin(&e, 2);
    pb_put_uint(&e, 1, p);
    pb_put_uint(&e, 2, n->acked_seq[p]);
    pb_end(&e, m);
  }
  pb_put_uint(&e, 3, scanned_to);
  rk_slice reply;
  if (!core_call_ok(s, n, RINGKV_OP_BUILD_PUSH, &e, &reply)) return;
  w_outgoing_list out;
  if (!w_dec_outgoing_list(&s->ar, reply, &out)) {
    decode_failed(s, n, "BuildPush");
    return;
  }
  for (size_t i = 0; i < out.outgoing_len; i++) {
    const w_outgoing *og = &out.outgoing[i];
    if (og->peer >= s->o->nodes || og->peer == n->id) {
      failf(s, "push_peer", "node %u: BuildPush names peer %u", n->id, og->peer);
      return;
    }
    /* An acknowledgement never claims rows the candidates did not cover. */
    uint64_t ack_bound = n->acked_seq[og->peer] > scanned_to ? n->acked_seq[og->peer] : scanned_to;
    if (og->acked_seq_on_success > ack_bound)
      failf(s, "push_ack", "node %u: acked_seq_on_success %" PRIu64 " for peer %u beyond scanned_to_seq %" PRIu64, n->id,
            og->acked_seq_on_success, og->peer, scanned_to);
    if (og->message.len == 0) {
      /* Nothing for this peer: its acknowledgement moves on without a send. */
      if (og->acked_seq_on_success > n->acked_seq[og->peer]) n->acked_seq[og->peer] = og->acked_seq_on_success;
      continue;
    }
    for (size_t k = 0; k <= og->also_len; k++) {
      /* The message goes to og->peer, then to every peer it names as sharing it. */
      uint32_t to = k == 0 ? og->peer : og->also[k - 1];
      if (to >= s->o->nodes || to == n->id) {
        failf(s, "push_peer", "node %u: BuildPush shares a message with peer %u", n->id, to);
        return;
      }
      if (s->o->break_mode == SIM_BREAK_ACK_ON_SEND && og->acked_seq_on_success > n->acked_seq[to])
        n->acked_seq[to] = og->acked_seq_on_success;   /* deliberately wrong: oracle self-test */
      send_request(s, EV_PUSH_REQ, n, to, og->message, og->acked_seq_on_success);
    }
    n->last_change_round = (int64_t)s->round;
  }
}

static void step_ae(sim *s, node *n) {
  const sim_opts *o = s->o;
  if (o->break_mode == SIM_BREAK_ACK_ON_SEND) return;
  if (n->ae_busy || s->round < n->ae_next_round || n->ae_peers_len == 0) return;
  /* Quiet while changes flow (pushes do the work), unless anti-entropy starves. */
  int64_t quiet_at = n->last_change_round + (int64_t)o->ae_quiet_rounds;
  if ((int64_t)s->round < quiet_at && (int64_t)s->round - n->last_ae_round < (int64_t)o->ae_starve_rounds) {
    n->ae_next_round = (uint64_t)quiet_at;
    return;
  }
  n->last_ae_round = (int64_t)s->round;
  uint32_t peer;
  if (o->ae_pick == SIM_AE_RANDOM) {
    peer = n->ae_peers[rnd_below(&s->net, n->ae_peers_len)];
  } else {
    peer = n->ae_peers[n->ae_cursor % n->ae_peers_len];
    n->ae_cursor = (n->ae_cursor + 1) % n->ae_peers_len;
  }
  pb_enc e;
  pb_enc_init(&e, &s->ar);
  pb_put_uint(&e, 1, peer);
  rk_slice reply, msg;
  if (!core_call_ok(s, n, RINGKV_OP_AE_START, &e, &reply)) return;
  if (!w_dec_message_field(reply, &msg)) {
    decode_failed(s, n, "AeStart");
    return;
  }
  n->ae_busy = true;
  send_request(s, EV_AE_DIGEST_REQ, n, peer, msg, 0);
}

/* An anti-entropy exchange ended. Equal: once the last full cycle of peers all agreed,
 * every further agreement doubles the interval (up to the maximum). A difference (or a
 * lost repair) resets it to one round and starts the count over. (--ae-backoff exchange,
 * the old worker: every equal exchange doubles, every failure resets.) */
static void ae_done(sim *s, node *n, bool equal) {
  n->ae_busy = false;
  if (equal) {
    if (s->o->ae_backoff_per_exchange || ++n->ae_agreed >= n->ae_peers_len) {
      n->ae_agreed = n->ae_peers_len;
      uint32_t next = n->ae_backoff_rounds * 2;
      n->ae_backoff_rounds = next > s->o->ae_backoff_rounds_max ? s->o->ae_backoff_rounds_max : next;
    }
  } else {
    n->ae_agreed = 0;
    n->ae_backoff_rounds = 1;
  }
  n->ae_next_round = s->round + n->ae_backoff_rounds;
}

/* The first digest exchange failed (lost, timed out): nothing learned, so neither an
 * agreement nor a difference; the next peer comes at the current interval. */
static void ae_failed(sim *s, node *n) {
  n->ae_busy = false;
  n->ae_next_round = s->round + n->ae_backoff_rounds;
}

static void gc_decide(sim *s, node *n) {
  n->gc_busy = false;
  pb_enc e;
  pb_enc_init(&e, &s->ar);
  pb_put_uint(&e, 1, now_ms(s, n));
  for (uint32_t i = 0; i < n->gc_keys_len; i++) {
    uint32_t k = n->gc_keys[i];
    if (n->rows[k] == NULL) continue;
    w_local l = row_local(s, n->rows[k], k, false);
    w_put_local(&e, 2, &l);
  }
  for (uint32_t i = 0; i < n->gc_replies_len; i++) {
    rk_slice b = {n->gc_replies[i], n->gc_reply_lens[i]};
    pb_put_bytes_always(&e, 3, b);
  }
  rk_slice reply;
  bool ok = core_call_ok(s, n, RINGKV_OP_GC_DECIDE, &e, &reply);
  for (uint32_t i = 0; i < n->gc_replies_len; i++) free(n->gc_replies[i]);
  n->gc_replies_len = 0;
  if (!ok) return;
  w_applied *ap;
  size_t ap_len;
  if (!w_dec_applied_list(&s->ar, reply, &ap, &ap_len)) {
    decode_failed(s, n, "GcDecide");
    return;
  }
  for (size_t i = 0; i < ap_len; i++) {
    if (ap[i].meta.len != 0) failf(s, "gc_collected", "node %u: GcDecide collected with non-empty meta", n->id);
    int64_t k = key_lookup(s, ap[i].key);
    if (k >= 0 && n->rows[k] && !n->rows[k]->info.expired)
      failf(s, "gc_collected", "node %u collected key %" PRId64 " that is not expired", n->id, k);
    s->cause = "gc collect";
    apply_applied(s, n, &ap[i], false, (rk_slice){NULL, 0});
  }
  s->res->gc_collected += ap_len;
}

static void step_gc(sim *s, node *n) {
  if (n->gc_busy) return;
  pb_enc e;
  pb_enc_init(&e, &s->ar);
  pb_put_uint(&e, 1, now_ms(s, n));
  n->gc_keys_len = 0;
  for (uint32_t i = 0; i < n->keys_len && n->gc_keys_len < 256; i++) {
    uint32_t k = n->keys[i];
    row *r = n->rows[k];
    if (r == NULL || !r->info.expired) continue;
    w_local l = row_local(s, r, k, false);
    w_put_local(&e, 2, &l);
    n->gc_keys[n->gc_keys_len++] = k;
  }
  if (n->gc_keys_len == 0) return;
  rk_slice reply;
  if (!core_call_ok(s, n, RINGKV_OP_GC_QUERY, &e, &reply)) return;
  w_outgoing_list out;
  if (!w_dec_outgoing_list(&s->ar, reply, &out)) {
    decode_failed(s, n, "GcQuery");
    return;
  }
  n->gc_busy = true;
  n->gc_session++;
  n->gc_pending = 0;
  n->gc_replies_len = 0;
  for (size_t i = 0; i < out.outgoing_len; i++) {
    if (out.outgoing[i].message.len == 0) continue;
    if (out.outgoing[i].peer >= s->o->nodes || out.outgoing[i].peer == n->id) {
      failf(s, "gc_peer", "node %u: GcQuery names peer %u", n->id, out.outgoing[i].peer);
      return;
    }
    n->gc_pending++;
    send_request(s, EV_GC_REQ, n, out.outgoing[i].peer, out.outgoing[i].message, n->gc_session);
  }
  if (n->gc_pending == 0) gc_decide(s, n);
}

static void node_step(sim *s, node *n) {
  step_expire(s, n);
  if (s->failed) return;
  step_push(s, n);
  if (s->failed) return;
  step_ae(s, n);
  if (s->failed) return;
  step_gc(s, n);
}

/* ---------------------------------------------------------------------------------------
 * Delivering events. */
static bool partitioned(const sim *s, uint32_t a, uint32_t b) {
  return s->partitioned && s->nodes[a].side != s->nodes[b].side;
}

/* A response or failure reaches the requester: only the first one counts, and only if the
 * requester has not restarted since (its fetch died with it). */
static bool requester_live(sim *s, const event *e) {
  if (s->req_done[e->req_id]) return false;
  s->req_done[e->req_id] = 1;
  return s->nodes[e->origin].epoch == e->origin_epoch;
}

static void on_fail(sim *s, node *n, const event *e) {
  switch (e->req_kind) {
    case EV_PUSH_REQ: {
      /* Consecutive failures back the peer off: the next round for the first retry_quick
       * failures, then 2, 4, 8 ... rounds up to retry_rounds_max (worker/node.ts:
       * retry_quick 0, interval x 2^failures up to 30 s). */
      uint32_t f = ++n->retry_backoff[e->peer];
      uint64_t wait = 1;
      if (f > s->o->retry_quick) {
        uint32_t shift = f - s->o->retry_quick;
        wait = shift >= 20 ? s->o->retry_rounds_max : (uint64_t)1 << shift;
        if (wait > s->o->retry_rounds_max) wait = s->o->retry_rounds_max;
      }
      n->retry_round[e->peer] = s->round + wait;
      break;
    }
    case EV_AE_DIGEST_REQ:
      /* The second step (aux 1) fails after buckets were seen to differ: a difference. */
      if (e->aux == 0 && !s->o->ae_backoff_per_exchange) ae_failed(s, n);
      else ae_done(s, n, false);
      break;
    case EV_AE_REPAIR_REQ:
      ae_done(s, n, false);
      break;
    case EV_GC_REQ:
      if (n->gc_busy && e->aux == n->gc_session && --n->gc_pending == 0) gc_decide(s, n);
      break;
    default: break;
  }
}

static void deliver(sim *s, event *e) {
  node *to = &s->nodes[e->to];
  if (e->kind != EV_FAIL && partitioned(s, e->from, e->to)) {
    s->res->messages_lost++;
    schedule_fail(s, e);
    return;
  }
  rk_slice body = {e->body, e->len};
  rk_slice reply, msg;
  pb_enc enc;
  switch (e->kind) {
    case EV_PUSH_REQ: {
      rk_slice answer;
      s->cause = "gossip push";
      if (!merge_push(s, to, body, &answer)) return;
      send_response(s, e, answer);
      break;
    }
    case EV_AE_DIGEST_REQ:
      pb_enc_init(&enc, &s->ar);
      pb_put_bytes(&enc, 1, body);
      if (!core_call_ok(s, to, RINGKV_OP_AE_ANSWER, &enc, &reply)) return;
      if (!w_dec_message_field(reply, &msg)) {
        decode_failed(s, to, "AeAnswer");
        return;
      }
      send_response(s, e, msg);
      break;
    case EV_AE_REPAIR_REQ: {
      rk_slice answer;
      s->cause = "repair request";
      if (!merge_push(s, to, body, &answer)) return;
      send_response(s, e, answer);
      break;
    }
    case EV_GC_REQ: {
      rk_slice *keys;
      size_t keys_len;
      if (!w_dec_gc_query_keys(&s->ar, body, &keys, &keys_len)) {
        failf(s, "gc_query_decode", "node %u: a GcQuery from %u does not decode", to->id, e->from);
        return;
      }
      pb_enc_init(&enc, &s->ar);
      pb_put_bytes(&enc, 1, body);
      for (size_t i = 0; i < keys_len; i++) {
        int64_t k = key_lookup(s, keys[i]);
        if (k < 0) {
          failf(s, "unknown_key", "node %u: a GcQuery names an unknown key", to->id);
          return;
        }
        w_local l = row_local(s, to->rows[k], (uint32_t)k, false);
        w_put_local(&enc, 2, &l);
      }
      if (!core_call_ok(s, to, RINGKV_OP_GC_ANSWER, &enc, &reply)) return;
      if (!w_dec_message_field(reply, &msg)) {
        decode_failed(s, to, "GcAnswer");
        return;
      }
      send_response(s, e, msg);
      break;
    }
    case EV_PUSH_RESP:
      if (!requester_live(s, e)) return;
      if (e->aux > to->acked_seq[e->peer]) to->acked_seq[e->peer] = e->aux;
      to->retry_backoff[e->peer] = 0;
      break;
    case EV_AE_DIGEST_RESP: {
      if (!requester_live(s, e)) return;
      pb_enc_init(&enc, &s->ar);
      pb_put_bytes(&enc, 1, body);
      pb_put_uint(&enc, 2, s->o->ae_shards_max);
      if (!core_call_ok(s, to, RINGKV_OP_AE_COMPARE, &enc, &reply)) return;
      w_compare_reply cr;
      if (!w_dec_compare_reply(&s->ar, reply, &cr)) {
        decode_failed(s, to, "AeCompare");
        return;
      }
      if (cr.buckets_len > 0 && e->aux == 0) {
        /* Second level: the differing buckets' shard digests (aux 1 marks the step). */
        pb_enc_init(&enc, &s->ar);
        pb_put_uint(&enc, 1, e->peer);
        pb_put_packed_u32(&enc, 2, cr.buckets, cr.buckets_len);
        if (!core_call_ok(s, to, RINGKV_OP_AE_START, &enc, &reply)) return;
        if (!w_dec_message_field(reply, &msg)) {
          decode_failed(s, to, "AeStart");
          return;
        }
        send_request(s, EV_AE_DIGEST_REQ, to, e->peer, msg, 1);
        return;
      }
      if (cr.equal || cr.shards_len == 0) {
        ae_done(s, to, true);
        return;
      }
      pb_enc_init(&enc, &s->ar);
      pb_put_uint(&enc, 1, e->peer);
      pb_put_packed_u32(&enc, 2, cr.shards, cr.shards_len);
      uint8_t *loaded = rk_zalloc(&s->ar, s->o->keys);
      CHECK_ALLOC(loaded);
      for (size_t i = 0; i < cr.shards_len; i++) {
        uint32_t sh = cr.shards[i];
        if (sh >= s->o->shards) {
          failf(s, "shard_range", "node %u: AeCompare names shard %u", to->id, sh);
          return;
        }
        for (uint32_t j = s->shard_keys_start[sh]; j < s->shard_keys_start[sh + 1]; j++) {
          uint32_t k = s->shard_keys[j];
          if (to->rows[k] == NULL || loaded[k]) continue;
          loaded[k] = 1;
          w_local l = row_local(s, to->rows[k], k, true);
          w_put_local(&enc, 3, &l);
        }
      }
      if (!core_call_ok(s, to, RINGKV_OP_AE_REPAIR, &enc, &reply)) return;
      if (!w_dec_message_field(reply, &msg)) {
        decode_failed(s, to, "AeRepair");
        return;
      }
      /* A fresh exchange: the repair request and its answer. */
      send_request(s, EV_AE_REPAIR_REQ, to, e->peer, msg, 0);
      break;
    }
    case EV_AE_REPAIR_RESP: {
      if (!requester_live(s, e)) return;
      rk_slice ignored;
      s->cause = "repair answer";
      if (e->len && !merge_push(s, to, body, &ignored)) return;
      ae_done(s, to, false);
      break;
    }
    case EV_GC_RESP:
      if (!requester_live(s, e)) return;
      if (!to->gc_busy || e->aux != to->gc_session) return;
      to->gc_replies[to->gc_replies_len] = copy_bytes(body);
      to->gc_reply_lens[to->gc_replies_len++] = e->len;
      if (--to->gc_pending == 0) gc_decide(s, to);
      break;
    case EV_FAIL:
      if (!requester_live(s, e)) return;
      on_fail(s, to, e);
      break;
    default: break;
  }
}

/* ---------------------------------------------------------------------------------------
 * Set-up: placement of the key universe, the shard table (by probing keys), peers. */
static void place_keys(sim *s, ringkv_node *placer, rk_slice *keys, size_t n, w_placement *out) {
  for (size_t at = 0; at < n; at += 4096) {
    size_t cnt = n - at < 4096 ? n - at : 4096;
    rk_arena_reset(&s->ar);
    pb_enc e;
    pb_enc_init(&e, &s->ar);
    w_enc_place(&e, keys + at, cnt);
    const uint8_t *reply = NULL;
    size_t reply_len = 0;
    int code = e.err ? e.err : ringkv_call(placer, RINGKV_OP_PLACE, e.buf, e.len, &reply, &reply_len);
    w_placement *pl;
    size_t pl_len;
    rk_slice rs = {reply, reply_len};
    if (code != RINGKV_OK || !w_dec_place_reply(&s->ar, rs, &pl, &pl_len) || pl_len != cnt) {
      fprintf(stderr, "sim: OP_PLACE failed (%d)\n", code);
      exit(2);
    }
    for (size_t i = 0; i < cnt; i++) {
      if (pl[i].replicas_len != s->o->replicas || pl[i].shard >= s->o->shards) {
        fprintf(stderr, "sim: OP_PLACE gave %zu replicas / shard %u\n", pl[i].replicas_len, pl[i].shard);
        exit(2);
      }
      out[at + i].shard = pl[i].shard;
      out[at + i].key_hash = pl[i].key_hash;
      out[at + i].replicas_len = pl[i].replicas_len;
      out[at + i].replicas = malloc(pl[i].replicas_len * sizeof(uint32_t));
      CHECK_ALLOC(out[at + i].replicas);
      memcpy(out[at + i].replicas, pl[i].replicas, pl[i].replicas_len * sizeof(uint32_t));
    }
  }
}

static void setup(sim *s) {
  const sim_opts *o = s->o;
  s->cfg.cluster_size = o->nodes;
  s->cfg.replicas = o->replicas;
  s->cfg.shards = o->shards;
  s->cfg.max_clock_skew_ms = o->max_clock_skew_ms;
  s->cfg.tombstone_grace_ms = o->tombstone_grace_ms;
  s->cfg.max_siblings = o->max_siblings;
  s->cfg.fanout = o->fanout;
  /* As a deployment must: up to 2 x replicas writers' siblings and bytes of one key stay
   * within the core's bounds (full replication at 1024 nodes: 16 KiB, 2 siblings). */
  uint64_t accepting = RK_MIN(2u * (uint64_t)o->replicas, RINGKV_CLUSTER_SIZE_MAX);
  s->cfg.key_bytes_max = RK_MIN(RINGKV_KEY_BYTES_DEFAULT, RINGKV_NODE_KEY_BYTES_MAX / accepting);
  s->cfg.max_siblings = (uint32_t)RK_MIN(s->cfg.max_siblings, RINGKV_SIBLINGS_MAX / accepting);

  ringkv_node *placer = ringkv_node_create();
  CHECK_ALLOC(placer);
  {
    pb_enc e;
    pb_enc_init(&e, &s->ar);
    w_enc_init(&e, &s->cfg, 0, 0, 0, NULL, NULL, 0);
    const uint8_t *reply;
    size_t reply_len;
    int code = ringkv_call(placer, RINGKV_OP_INIT, e.buf, e.len, &reply, &reply_len);
    if (code != RINGKV_OK) {
      rk_slice err = {0}, rs = {reply, reply_len};
      w_dec_init_reply(rs, &err);
      fprintf(stderr, "sim: OP_INIT refused the configuration (%d): %.*s\n", code, (int)err.len,
              (const char *)err.ptr);
      exit(2);
    }
  }

  /* The key universe. */
  s->keys = calloc(o->keys, sizeof(*s->keys));
  CHECK_ALLOC(s->keys);
  rk_slice *ks = malloc(o->keys * sizeof(*ks));
  w_placement *pl = calloc(o->keys, sizeof(*pl));
  CHECK_ALLOC(ks);
  CHECK_ALLOC(pl);
  for (uint32_t k = 0; k < o->keys; k++) {
    char buf[64];
    /* Keys with slashes and varying lengths, as clients use them. */
    int len = snprintf(buf, sizeof(buf), "%s/%u", (k % 3 == 0) ? "user" : (k % 3 == 1) ? "doc/v1" : "k", k);
    s->keys[k].bytes = malloc((size_t)len);
    CHECK_ALLOC(s->keys[k].bytes);
    memcpy(s->keys[k].bytes, buf, (size_t)len);
    s->keys[k].len = (uint32_t)len;
    s->keys[k].best_ack = -1;
    ks[k].ptr = s->keys[k].bytes;
    ks[k].len = (size_t)len;
  }
  place_keys(s, placer, ks, o->keys, pl);
  uint32_t map_size = 1;
  while (map_size < 2 * o->keys + 2) map_size *= 2;
  s->key_map = calloc(map_size, sizeof(uint32_t));
  CHECK_ALLOC(s->key_map);
  s->key_map_mask = map_size - 1;
  for (uint32_t k = 0; k < o->keys; k++) {
    s->keys[k].shard = pl[k].shard;
    s->keys[k].replicas = pl[k].replicas;
    if (rk_hash(s->keys[k].bytes, s->keys[k].len) != pl[k].key_hash) {
      fprintf(stderr, "sim: Placement.key_hash differs from xxh3-64 of the key\n");
      exit(2);
    }
    key_insert(s, k);
  }
  free(pl);
  free(ks);

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
  rk_slice *pk = malloc(batch * sizeof(*pk));
  w_placement *pp = calloc(batch, sizeof(*pp));
  CHECK_ALLOC(names);
  CHECK_ALLOC(pk);
  CHECK_ALLOC(pp);
  while (missing > 0 && probe < (uint64_t)o->shards * 64) {
    for (uint32_t i = 0; i < batch; i++) {
      int len = snprintf(names[i], sizeof(names[i]), "probe/%" PRIu64, probe + i);
      pk[i].ptr = (const uint8_t *)names[i];
      pk[i].len = (size_t)len;
    }
    probe += batch;
    place_keys(s, placer, pk, batch, pp);
    for (uint32_t i = 0; i < batch; i++) {
      if (s->shard_replicas[pp[i].shard] == NULL) {
        s->shard_replicas[pp[i].shard] = pp[i].replicas;
        missing--;
      } else {
        free(pp[i].replicas);
      }
    }
  }
  free(names);
  free(pk);
  free(pp);
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

  /* Nodes. */
  s->nodes = calloc(o->nodes, sizeof(*s->nodes));
  CHECK_ALLOC(s->nodes);
  uint8_t *adj = calloc((size_t)o->nodes * o->nodes, 1);
  CHECK_ALLOC(adj);
  for (uint32_t sh = 0; sh < o->shards; sh++) {
    uint32_t *r = s->shard_replicas[sh];
    if (r == NULL) continue;
    for (uint32_t i = 0; i < o->replicas; i++)
      for (uint32_t j = 0; j < o->replicas; j++)
        if (i != j) adj[(size_t)r[i] * o->nodes + r[j]] = 1;
  }
  for (uint32_t i = 0; i < o->nodes; i++) {
    node *n = &s->nodes[i];
    n->id = i;
    n->shard_digest = calloc(o->shards, sizeof(uint64_t));
    n->rows = calloc(o->keys, sizeof(row *));
    n->acked_seq = calloc(o->nodes, sizeof(uint64_t));
    n->retry_round = calloc(o->nodes, sizeof(uint64_t));
    n->retry_backoff = calloc(o->nodes, sizeof(uint32_t));
    n->gc_keys = malloc(256 * sizeof(uint32_t));
    n->gc_replies = calloc(o->nodes, sizeof(uint8_t *));
    n->gc_reply_lens = calloc(o->nodes, sizeof(uint32_t));
    n->peers = malloc(o->nodes * sizeof(uint32_t));
    n->ae_peers = malloc(o->nodes * sizeof(uint32_t));
    CHECK_ALLOC(n->shard_digest);
    CHECK_ALLOC(n->rows);
    CHECK_ALLOC(n->acked_seq);
    CHECK_ALLOC(n->retry_round);
    CHECK_ALLOC(n->retry_backoff);
    CHECK_ALLOC(n->gc_keys);
    CHECK_ALLOC(n->gc_replies);
    CHECK_ALLOC(n->gc_reply_lens);
    CHECK_ALLOC(n->peers);
    CHECK_ALLOC(n->ae_peers);
    for (uint32_t j = 0; j < o->nodes; j++)
      if (j != i && (o->peers_all || adj[(size_t)i * o->nodes + j])) n->peers[n->peers_len++] = j;
    for (uint32_t j = 0; j < o->nodes; j++)
      if (j != i && (o->ae_peers_all || adj[(size_t)i * o->nodes + j])) n->ae_peers[n->ae_peers_len++] = j;
    if (o->skew) n->skew_ms = (int64_t)rnd_below(&s->fault, 2 * o->skew_ms_max + 1) - (int64_t)o->skew_ms_max;
    /* worker/node.ts starts at a random place, so no peer is everyone's first. */
    n->ae_cursor = o->ae_pick == SIM_AE_TURN_RANDOM_START ? (uint32_t)rnd_below(&s->net, n->ae_peers_len ? n->ae_peers_len : 1) : 0;
    n->ae_backoff_rounds = 1;
    n->ae_next_round = 1;
  }
  free(adj);
  uint32_t *cnt = calloc(o->nodes, sizeof(uint32_t));
  CHECK_ALLOC(cnt);
  for (uint32_t k = 0; k < o->keys; k++)
    for (uint32_t j = 0; j < o->replicas; j++) cnt[s->keys[k].replicas[j]]++;
  for (uint32_t i = 0; i < o->nodes; i++) {
    s->nodes[i].keys = malloc((cnt[i] + 1) * sizeof(uint32_t));
    CHECK_ALLOC(s->nodes[i].keys);
  }
  for (uint32_t k = 0; k < o->keys; k++)
    for (uint32_t j = 0; j < o->replicas; j++) {
      node *n = &s->nodes[s->keys[k].replicas[j]];
      n->keys[n->keys_len++] = k;
    }
  free(cnt);
  for (uint32_t i = 0; i < o->nodes; i++) {
    rk_arena_reset(&s->ar);
    node_init_core(s, &s->nodes[i]);
  }
  s->tmp_digest = calloc(o->shards, sizeof(uint64_t));
  CHECK_ALLOC(s->tmp_digest);
}

/* ---------------------------------------------------------------------------------------
 * Convergence: every node's persisted shard digests must equal the sum of its rows'
 * contributions (the core maintains them incrementally), and every shard's replicas must
 * hold equal digests. */
static bool converged(sim *s) {
  const sim_opts *o = s->o;
  bool eq = true;
  for (uint32_t i = 0; i < o->nodes && !s->failed; i++) {
    node *n = &s->nodes[i];
    memset(s->tmp_digest, 0, o->shards * sizeof(uint64_t));
    for (uint32_t j = 0; j < n->keys_len; j++) {
      row *r = n->rows[n->keys[j]];
      if (r && !r->info.expired) s->tmp_digest[s->keys[n->keys[j]].shard] += r->info.digest;
    }
    for (uint32_t sh = 0; sh < o->shards; sh++) {
      if (s->tmp_digest[sh] != n->shard_digest[sh]) {
        failf(s, "digests_consistent",
              "node %u shard %u: persisted digest %016" PRIx64 ", sum of its rows %016" PRIx64, n->id, sh,
              n->shard_digest[sh], s->tmp_digest[sh]);
        return false;
      }
    }
  }
  uint32_t differing = 0;
  for (uint32_t sh = 0; sh < o->shards && (eq || o->verbose); sh++) {
    uint32_t *r = s->shard_replicas[sh];
    if (r == NULL) continue;
    for (uint32_t j = 1; j < o->replicas; j++)
      if (s->nodes[r[j]].shard_digest[sh] != s->nodes[r[0]].shard_digest[sh]) {
        eq = false;
        differing++;
        if (o->verbose && differing <= 3) {
          fprintf(stderr, "  shard %u differs:", sh);
          for (uint32_t x = 0; x < o->replicas; x++)
            fprintf(stderr, " n%u=%016" PRIx64 "(ae_next %" PRIu64 " interval %u busy %d)", r[x],
                    s->nodes[r[x]].shard_digest[sh], s->nodes[r[x]].ae_next_round, s->nodes[r[x]].ae_backoff_rounds,
                    s->nodes[r[x]].ae_busy);
          fprintf(stderr, "\n");
          if (differing == 1) {
            for (uint32_t q = s->shard_keys_start[sh]; q < s->shard_keys_start[sh + 1]; q++) {
              uint32_t k = s->shard_keys[q];
              for (uint32_t x = 0; x < o->replicas; x++) {
                const node *nx = &s->nodes[r[x]];
                const row *rw = nx->rows[k];
                fprintf(stderr, "    key %u n%u: ", k, r[x]);
                if (rw == NULL) {
                  fprintf(stderr, "absent");
                } else {
                  fprintf(stderr, "seq %" PRIu64 " client %d digest %016" PRIx64 " expired %d all_deleted %d sibs %u meta ",
                          rw->seq, rw->from_client, rw->info.digest, rw->info.expired, rw->info.all_deleted,
                          rw->info.siblings);
                  for (uint32_t b = 0; b < rw->meta_len && b < 400; b++) fprintf(stderr, "%02x", rw->meta[b]);
                }
                fprintf(stderr, " | node seq %" PRIu64 " acks", nx->seq);
                for (uint32_t y = 0; y < o->replicas; y++)
                  if (y != x) fprintf(stderr, " ->n%u:%" PRIu64 "(retry %" PRIu64 ")", r[y], nx->acked_seq[r[y]], nx->retry_round[r[y]]);
                fprintf(stderr, "\n");
              }
            }
          }
        }
        break;
      }
  }
  if (o->verbose)
    fprintf(stderr, "round %" PRIu64 ": %u shards differ, %" PRIu64 " bytes, %zu events in flight\n", s->round,
            differing, s->bytes_this_round, s->heap_len);
  return eq;
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
                             r == NULL                ? "absent"
                             : r->info.expired        ? "expired tombstones"
                             : r->info.all_deleted    ? "tombstones"
                             : r->info.siblings > 1   ? "live siblings"
                                                      : "live");
      if (r && at < cap)
        at += (size_t)snprintf(out + at, cap - at, " (winner %u@%" PRIu64 ")", r->info.winner_node, r->info.winner_hlc);
    }
    return;
  }
}

/* ---------------------------------------------------------------------------------------
 * The oracles after the heal. */
static void check_oracles(sim *s) {
  const sim_opts *o = s->o;
  for (uint32_t k = 0; k < o->keys && !s->failed; k++) {
    key_entry *ke = &s->keys[k];
    const ack *best = ke->best_ack >= 0 ? &s->acks[ke->best_ack] : NULL;
    const row *first = NULL;
    uint32_t first_node = 0;
    bool any_live = false;
    for (uint32_t j = 0; j < o->replicas; j++) {
      const row *r = s->nodes[ke->replicas[j]].rows[k];
      if (r && !r->info.expired) any_live = true;
    }
    for (uint32_t j = 0; j < o->replicas && !s->failed; j++) {
      node *n = &s->nodes[ke->replicas[j]];
      row *r = n->rows[k];
      s->res->checks_run++;
      if (any_live && (r == NULL || r->info.expired)) {
        failf(s, "replicas_identical", "key %u: node %u holds %s while another replica holds a live state", k, n->id,
              r ? "an expired tombstone" : "nothing");
        return;
      }
      if (r == NULL || r->info.expired) {
        if (best != NULL && !best->deleted) {
          failf(s, "no_lost_write", "key %u: node %u holds %s, but the highest acknowledged write is a PUT "
                "(hlc %" PRIu64 ", node %u)", k, n->id, r ? "an expired tombstone" : "nothing", best->hlc, best->dot.node);
          return;
        }
        if (r == NULL) continue;
      } else {
        if (first == NULL) {
          first = r;
          first_node = n->id;
        } else if (first->meta_len != r->meta_len || memcmp(first->meta, r->meta, r->meta_len) != 0) {
          failf(s, "replicas_identical", "key %u: nodes %u and %u hold different metadata (%u vs %u bytes)", k,
                first_node, n->id, first->meta_len, r->meta_len);
          return;
        }
      }
      /* The winner, through the core. */
      rk_arena_reset(&s->ar);
      pb_enc e;
      pb_enc_init(&e, &s->ar);
      pb_put_bytes(&e, 1, key_slice(s, k));
      rk_slice m = {r->meta, r->meta_len};
      pb_put_bytes(&e, 2, m);
      rk_slice reply;
      if (!core_call_ok(s, n, RINGKV_OP_READ, &e, &reply)) return;
      w_read_reply rd;
      if (!w_dec_read_reply(&s->ar, reply, &rd)) {
        decode_failed(s, n, "Read");
        return;
      }
      if (!rd.found || rd.winner < 0 || (size_t)rd.winner >= rd.siblings_len) {
        failf(s, "read", "key %u node %u: a stored row reads as not found", k, n->id);
        return;
      }
      const w_sibling *w = &rd.siblings[rd.winner];
      if (r->info.expired) {
        if (!w->deleted) failf(s, "no_lost_write", "key %u node %u: expired row with a live winner", k, n->id);
        continue;
      }
      if (best == NULL) {
        failf(s, "no_lost_write", "key %u node %u holds a state no client wrote", k, n->id);
        return;
      }
      if (w->hlc != best->hlc || w->dot.node != best->dot.node || w->dot.counter != best->dot.counter ||
          w->deleted != best->deleted) {
        failf(s, "no_lost_write",
              "key %u node %u: winner (hlc %" PRIu64 ", dot %u:%" PRIu64 "%s), highest acknowledged write "
              "(hlc %" PRIu64 ", dot %u:%" PRIu64 "%s)",
              k, n->id, w->hlc, w->dot.node, w->dot.counter, w->deleted ? ", delete" : "", best->hlc, best->dot.node,
              best->dot.counter, best->deleted ? ", delete" : "");
        return;
      }
      if (r->info.winner_hlc != w->hlc || r->info.winner_node != w->dot.node || r->info.live == w->deleted)
        failf(s, "key_info", "key %u node %u: KeyInfo's winner differs from OP_READ's", k, n->id);
      /* Every live sibling has its value row, with the bytes its hash names. */
      for (size_t i = 0; i < rd.siblings_len; i++) {
        const w_sibling *sb = &rd.siblings[i];
        if (sb->deleted) continue;
        const stored_value *v = NULL;
        for (uint32_t x = 0; x < r->values_len; x++)
          if (r->values[x].dot.node == sb->dot.node && r->values[x].dot.counter == sb->dot.counter) v = &r->values[x];
        if (v == NULL) {
          failf(s, "values_present", "key %u node %u: no value row for sibling %u:%" PRIu64, k, n->id, sb->dot.node,
                sb->dot.counter);
          return;
        }
        if (rk_hash(v->bytes, v->len) != sb->value_hash) {
          failf(s, "values_present", "key %u node %u: value of %u:%" PRIu64 " does not match its hash", k, n->id,
                sb->dot.node, sb->dot.counter);
          return;
        }
      }
      if (!best->deleted && w->value_hash != best->value_hash)
        failf(s, "no_lost_write", "key %u node %u: the winner's value is not the acknowledged one", k, n->id);
      if (r->values_len > rd.siblings_len)
        failf(s, "values_orphaned", "key %u node %u: %u value rows for %zu siblings", k, n->id, r->values_len,
              rd.siblings_len);
    }
  }
  /* Nothing stored where it does not belong. */
  for (uint32_t i = 0; i < o->nodes && !s->failed; i++)
    for (uint32_t k = 0; k < o->keys; k++)
      if (s->nodes[i].rows[k] && !is_replica(s, k, i)) {
        failf(s, "placement", "node %u stores key %u it does not replicate", i, k);
        break;
      }
}

/* ---------------------------------------------------------------------------------------
 * Faults. */
static void faults(sim *s) {
  const sim_opts *o = s->o;
  if (o->partitions) {
    if (s->partitioned && s->round >= s->partition_end) {
      s->partitioned = false;
    } else if (!s->partitioned && rnd_chance(&s->fault, 0.08)) {
      s->partitioned = true;
      s->partition_end = s->round + 2 + rnd_below(&s->fault, o->partition_rounds_max > 2 ? o->partition_rounds_max - 1 : 1);
      for (uint32_t i = 0; i < o->nodes; i++) s->nodes[i].side = (uint8_t)rnd_below(&s->fault, 2);
      s->res->partitions++;
    }
  }
  if (o->restarts) {
    for (uint32_t i = 0; i < o->nodes; i++)
      if (rnd_chance(&s->fault, 0.02)) node_restart(s, &s->nodes[i]);
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

/* One round: faults, client writes, every node's gossip round (in a seeded order), then
 * every message due this round (answers with no latency arrive within the round). */
static void run_round(sim *s, uint64_t *write_next, uint32_t *order) {
  const sim_opts *o = s->o;
  s->bytes_this_round = 0;
  if (!s->healed) faults(s);
  uint64_t writes_until = (uint64_t)o->writes * (s->round + 1) / (o->fault_rounds ? o->fault_rounds : 1);
  if (writes_until > o->writes) writes_until = o->writes;
  while (*write_next < writes_until && !s->failed) {
    rk_arena_reset(&s->ar);
    client_write(s, (*write_next)++);
  }
  for (uint32_t i = o->nodes; i > 1; i--) {
    uint32_t j = (uint32_t)rnd_below(&s->net, i);
    uint32_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
  for (uint32_t i = 0; i < o->nodes && !s->failed; i++) {
    rk_arena_reset(&s->ar);
    node_step(s, &s->nodes[order[i]]);
  }
  while (s->heap_len > 0 && s->heap[0]->round <= s->round && !s->failed) {
    event *e = heap_pop(s);
    rk_arena_reset(&s->ar);
    deliver(s, e);
    ev_free(e);
  }
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
  s->loss = o->loss;
  s->dup = o->dup;
  if (o->series_rounds) {
    res->series_bytes = calloc(o->series_rounds, sizeof(uint64_t));
    res->series_keys_min = calloc(o->series_rounds, sizeof(uint32_t));
    res->series_keys_max = calloc(o->series_rounds, sizeof(uint32_t));
    res->series_keys_mean = calloc(o->series_rounds, sizeof(double));
  }
  setup(s);
  uint32_t *order = malloc(o->nodes * sizeof(uint32_t));
  CHECK_ALLOC(order);
  for (uint32_t i = 0; i < o->nodes; i++) order[i] = i;

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
      res->converge_bytes_gc = res->bytes_gc;
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
    if (conv && (o->series_rounds == 0 || s->round + 1 >= o->series_rounds)) break;
  }
  res->rounds_total = s->round + (s->failed ? 0 : 1);
  if (!s->failed) {
    bool conv = converged(s);
    if (!s->failed && (!conv || !seen_converged)) {
      char why[320];
      describe_divergence(s, why, sizeof(why));
      failf(s, "converged", "not converged %" PRIu64 " rounds after the heal (rounds_max %u); %s",
            s->round - heal_round, o->rounds_max, why);
    }
  }
  if (!s->failed) check_oracles(s);

  res->unique_updates = res->acked_writes;
  res->entry_bytes_mean = s->entry_count ? s->entry_bytes_sum / (double)s->entry_count : 0;
  res->optimum_bytes_per_update = (double)(o->replicas - 1) * res->entry_bytes_mean;
  uint64_t bytes = res->bytes_to_converge ? res->bytes_to_converge : res->bytes;
  res->bytes_per_update = res->unique_updates ? (double)bytes / (double)res->unique_updates : 0;
  res->ratio = res->optimum_bytes_per_update > 0 ? res->bytes_per_update / res->optimum_bytes_per_update : 0;

  /* Tear down. */
  while (s->heap_len) ev_free(heap_pop(s));
  free(s->heap);
  for (uint32_t i = 0; i < o->nodes; i++) {
    node *n = &s->nodes[i];
    ringkv_node_destroy(n->core);
    for (uint32_t k = 0; k < o->keys; k++) row_free(n->rows[k]);
    for (uint32_t j = 0; j < n->gc_replies_len; j++) free(n->gc_replies[j]);
    free(n->rows);
    free(n->shard_digest);
    free(n->log_seq);
    free(n->log_key);
    free(n->acked_seq);
    free(n->retry_round);
    free(n->retry_backoff);
    free(n->gc_keys);
    free(n->gc_replies);
    free(n->gc_reply_lens);
    free(n->peers);
    free(n->ae_peers);
    free(n->keys);
  }
  free(s->nodes);
  for (uint32_t k = 0; k < o->keys; k++) {
    free(s->keys[k].bytes);
  }
  /* Shard replica arrays are shared with keys or owned by probes; free each once. */
  {
    for (uint32_t sh = 0; sh < o->shards; sh++) {
      uint32_t *r = s->shard_replicas[sh];
      if (r == NULL) continue;
      bool from_key = false;
      for (uint32_t j = s->shard_keys_start[sh]; j < s->shard_keys_start[sh + 1]; j++)
        if (s->keys[s->shard_keys[j]].replicas == r) from_key = true;
      if (!from_key) free(r);
    }
  }
  for (uint32_t k = 0; k < o->keys; k++) free(s->keys[k].replicas);
  free(s->keys);
  free(s->key_map);
  free(s->shard_replicas);
  free(s->shard_keys_start);
  free(s->shard_keys);
  free(s->acks);
  free(s->req_done);
  free(s->tmp_digest);
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
