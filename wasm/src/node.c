/* node.c: the node-level operations behind ringkv_call (see ringkv.h and ringkv.proto):
 * configuration, placement, client writes and reads, gossip, anti-entropy and tombstone
 * collection. Every request is decoded and validated before any state changes. */
#include <stdlib.h>

#include "control.h"
#include "fields.h"
#include "hash.h"
#include "hlc.h"
#include "node.h"
#include "range.h"
#include "register.h"
#include "report.h"
#include "resize.h"



#define TOKEN_BYTES_MAX (64u * 1024u)

/* The Worker's policy (InitReply.worker): the shim reads these, it holds none. */
#define WORKER_LIST_ROUNDS_MAX 8u           /* fan-out rounds of one listing request */
#define WORKER_RING_ASK_NODES_MAX 3u        /* nodes asked in turn for the ring */
#define WORKER_NODE_TIMEOUT_MS 15000u       /* one Worker-to-node call, before it gives up */
#define WORKER_WRITE_GENERATIONS_MAX 10000u /* cache keys tracked for write generations */
#define WORKER_STALE_RING_RETRIES 3u   /* a request placed again on a newer ring (each 421 is
                                          an epoch on; a resize is four) */
#define WORKER_WRITE_SAME_REPLICA_RETRIES 1u /* SPEC: after a 5xx, once more at the same replica */
#define WORKER_WRITE_ID_RANDOM_BYTES 16u     /* 128 bits: 22 base64url characters */

/* ---------------------------------------------------------------------------------------
 * Small helpers */

static void *vec_grow(rk_arena *a, void *arr, size_t len, size_t *cap, size_t elem) {
  if (len < *cap) return arr;
  size_t nc = *cap ? *cap * 2 : 8;
  void *n = rk_realloc(a, arr, *cap * elem, nc * elem);
  if (n != NULL) *cap = nc;
  return n;
}
#define VEC_PUSH(a, arr, len, cap) \
  (((arr) = vec_grow((a), (arr), (len), &(cap), sizeof *(arr))) != NULL ? &(arr)[(len)++] : NULL)


static bool key_valid(rk_slice key) { return key.len >= 1 && key.len <= RINGKV_KEY_BYTES_MAX; }

static uint32_t shard_of(const ringkv_node *n, uint64_t key_hash) {
  return (uint32_t)(key_hash % n->cfg.shards);
}

/* ---------------------------------------------------------------------------------------
 * Placement: rendezvous hashing of shards over node ids, computed per shard on demand
 * (O(N) hashes) and memoised in a bounded direct-mapped cache per instance, never a table
 * of every shard (at N=1024 that took 0.37 s per instance at 16,384 shards, 1.4 s at 65,536,
 * and 3.3 s and 32 MiB with REPLICAS=all). */

typedef struct {
  uint64_t score;
  uint32_t node;
} scored;

static int scored_cmp(const void *a, const void *b) {
  const scored *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return x->node < y->node ? -1 : x->node > y->node ? 1 : 0;
}

static uint64_t rendezvous_score(uint32_t shard, uint32_t node) {
  uint8_t b[8];
  rk_le32(b, shard);
  rk_le32(b + 4, node);
  return rk_hash(b, sizeof b);
}

/* A shard's replica count at a size. */
static uint32_t reps_at(const rk_config *c, uint32_t size) { return c->replicas_all ? size : RK_MIN(c->replicas, size); }

/* The shard's `reps` replicas at `size` in rendezvous order (highest score first) into
 * out[reps]; `s` is scratch for `size` entries. */
static void rendezvous(uint32_t size, uint32_t reps, uint32_t shard, scored *s, uint16_t *out) {
  for (uint32_t node = 0; node < size; node++) {
    s[node].score = rendezvous_score(shard, node);
    s[node].node = node;
  }
  if (reps * 4 < size) {
    /* Partial selection: R passes beat a sort when R is small. */
    for (uint32_t i = 0; i < reps; i++) {
      uint32_t best = i;
      for (uint32_t j = i + 1; j < size; j++) {
        if (scored_cmp(&s[j], &s[best]) < 0) best = j;
      }
      scored tmp = s[i];
      s[i] = s[best];
      s[best] = tmp;
    }
  } else {
    qsort(s, size, sizeof *s, scored_cmp);
  }
  for (uint32_t i = 0; i < reps; i++) out[i] = (uint16_t)s[i].node;
}

static bool moving(const rk_config *c) { return c->phase != RK_PHASE_NONE; }

/* Every node of both sizes replicates every shard: sets are node id ranges, no hashing. */
static bool full_replication(const ringkv_node *n) {
  const rk_config *c = &n->cfg;
  return reps_at(c, c->size_old) >= c->size_old && reps_at(c, c->size_new) >= c->size_new;
}

/* A shard's replica sets (SPEC: Resizing): old (at size_old) and new (at size_new), each in
 * rendezvous order, and their union; valid until the next call (a cache slot). Outside a
 * transition old and new are the same. */
typedef struct {
  const uint16_t *old, *nw, *uni;
  uint32_t old_len, new_len, uni_len;
} sets_t;

/* A memo row: old[Wo] new[Wn] uni[Wo + Wn] and the union's length. */
static size_t row_width(const rk_config *c) {
  return 2u * ((size_t)reps_at(c, c->size_old) + reps_at(c, c->size_new)) + 1u;
}

/* One side in rendezvous order (every node of the size too: the first is routed to). */
static void fill_side(const ringkv_node *n, uint32_t size, uint32_t shard, uint16_t *out) {
  rendezvous(size, reps_at(&n->cfg, size), shard, n->memo_scratch, out);
}

/* The sets in rendezvous order from the memo (with full replication too: the order is
 * what routes a request). */
static void sets_memo(const ringkv_node *cn, uint32_t shard, sets_t *out) {
  ringkv_node *n = (ringkv_node *)cn;   /* the memo is a cache: placement is a pure function */
  const rk_config *c = &n->cfg;
  uint32_t wo = reps_at(c, c->size_old), wn = reps_at(c, c->size_new);
  uint32_t slot = shard & n->memo_mask;
  uint16_t *row = n->memo + (size_t)slot * row_width(c);
  uint16_t *old = row, *nw = row + wo, *uni = nw + wn, *uni_len = uni + wo + wn;
  if (n->memo_tag[slot] != shard + 1u) {
    fill_side(n, c->size_old, shard, old);
    if (moving(c)) fill_side(n, c->size_new, shard, nw);
    else memcpy(nw, old, wo * sizeof *old);
    uint32_t k = 0;
    for (uint32_t i = 0; i < wo; i++) uni[k++] = old[i];
    /* The union (with full replication the sets are id ranges: sets_of never asks). */
    for (uint32_t i = 0; i < wn && moving(c) && !full_replication(n); i++) {
      bool seen = false;
      for (uint32_t j = 0; j < wo && !seen; j++) seen = old[j] == nw[i];
      if (!seen) uni[k++] = nw[i];
    }
    *uni_len = (uint16_t)k;
    n->memo_tag[slot] = shard + 1u;
  }
  *out = (sets_t){old, nw, uni, wo, wn, *uni_len};
}

/* As sets; with full replication the node id ranges, no hashing (membership only). */
static void sets_of(const ringkv_node *n, uint32_t shard, sets_t *out) {
  const rk_config *c = &n->cfg;
  if (full_replication(n)) {
    *out = (sets_t){n->all_nodes, n->all_nodes, n->all_nodes, c->size_old, c->size_new, c->cluster_size};
    return;
  }
  sets_memo(n, shard, out);
}

/* The nodes holding the shard and pushed its writes: old ∪ new, less the old-only ones once
 * leaving. */
static const uint16_t *replicas_of(const ringkv_node *n, uint32_t shard, uint32_t *len) {
  sets_t s;
  sets_of(n, shard, &s);
  bool leaving = n->cfg.phase == RK_PHASE_LEAVING;
  *len = leaving ? s.new_len : s.uni_len;
  return leaving ? s.nw : s.uni;
}

/* The nodes taking client writes and serving reads in the phase, in rendezvous order (the
 * first is routed to): old while joining, new from switching on. */
static const uint16_t *serving_of(const ringkv_node *n, uint32_t shard, uint32_t *len) {
  sets_t s;
  sets_of(n, shard, &s);
  bool joining = n->cfg.phase == RK_PHASE_JOINING;
  *len = joining ? s.old_len : s.new_len;
  return joining ? s.old : s.nw;
}

const uint16_t *rk_replicas_of(const ringkv_node *n, uint32_t shard, uint32_t *len) { return replicas_of(n, shard, len); }

const uint16_t *rk_sources_of(const ringkv_node *n, uint32_t shard, uint32_t *len) {
  if (n->cfg.phase != RK_PHASE_JOINING && n->cfg.phase != RK_PHASE_SWITCHING) return replicas_of(n, shard, len);
  sets_t s;
  sets_of(n, shard, &s);
  *len = s.old_len;
  return s.old;
}

const uint16_t *rk_new_set_of(const ringkv_node *n, uint32_t shard, uint32_t *len) {
  sets_t s;
  sets_of(n, shard, &s);
  *len = s.new_len;
  return s.nw;
}

static bool among(const uint16_t *r, uint32_t len, uint32_t node) {
  for (uint32_t i = 0; i < len; i++) {
    if (r[i] == node) return true;
  }
  return false;
}

bool rk_serves_phase(const ringkv_node *n, uint32_t shard, uint32_t node) {
  uint32_t len;
  const uint16_t *r = serving_of(n, shard, &len);
  return among(r, len, node);
}

/* The shard's replica set changes in this transition. */
static bool shard_moving(const ringkv_node *n, uint32_t shard) {
  if (!moving(&n->cfg)) return false;
  sets_t s;
  sets_of(n, shard, &s);
  if (s.old_len != s.new_len) return true;
  for (uint32_t i = 0; i < s.old_len; i++) {
    if (!among(s.nw, s.new_len, s.old[i])) return true;
  }
  return false;
}

bool rk_shard_moving(const ringkv_node *n, uint32_t shard) { return shard_moving(n, shard); }

bool rk_joins_shard(const ringkv_node *n, uint32_t shard, uint32_t node) {
  if (!moving(&n->cfg)) return false;
  sets_t s;
  sets_of(n, shard, &s);
  return !among(s.old, s.old_len, node) && among(s.nw, s.new_len, node);
}

bool rk_leaves_shard(const ringkv_node *n, uint32_t shard, uint32_t node) {
  if (!moving(&n->cfg)) return false;
  sets_t s;
  sets_of(n, shard, &s);
  return among(s.old, s.old_len, node) && !among(s.nw, s.new_len, node);
}

static bool is_replica(const ringkv_node *n, uint32_t shard, uint32_t node);
bool rk_is_replica(const ringkv_node *n, uint32_t shard, uint32_t node) { return is_replica(n, shard, node); }

static bool is_mine(const ringkv_node *n, uint32_t shard) {
  size_t lo = 0, hi = n->my_shards_len;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (n->my_shards[mid] < shard) lo = mid + 1;
    else hi = mid;
  }
  return lo < n->my_shards_len && n->my_shards[lo] == shard;
}

static bool is_replica(const ringkv_node *n, uint32_t shard, uint32_t node) {
  if (node == n->self && n->my_shards != NULL) return is_mine(n, shard);
  uint32_t len;
  const uint16_t *r = replicas_of(n, shard, &len);
  return among(r, len, node);
}

/* The memo's bytes: every shard at R=3 up to 65,536 shards outside a transition (832 KiB),
 * a quarter of them during one; small beside an isolate's 128 MB. */
#define PLACEMENT_MEMO_BYTES_MAX (2u * 1024u * 1024u)

/* (Re)allocates the memo, the scratch and the node list for `c`. */
static int placement_init(ringkv_node *n, const rk_config *c) {
  size_t width = row_width(c) * sizeof(uint16_t);
  uint32_t slots = 1;
  while (slots * 2u <= c->shards && (uint64_t)slots * 2u * width <= PLACEMENT_MEMO_BYTES_MAX) slots *= 2u;
  uint16_t *memo = malloc((size_t)slots * width);
  uint32_t *tag = calloc(slots, sizeof *tag);
  scored *scratch = malloc(c->cluster_size * sizeof *scratch);
  uint16_t *all = malloc(c->cluster_size * sizeof *all);
  if (memo == NULL || tag == NULL || scratch == NULL || all == NULL) {
    free(memo);
    free(tag);
    free(scratch);
    free(all);
    return RINGKV_E_NOMEM;
  }
  for (uint32_t i = 0; i < c->cluster_size; i++) all[i] = (uint16_t)i;
  free(n->memo);
  free(n->memo_tag);
  free(n->memo_scratch);
  free(n->all_nodes);
  n->memo = memo;
  n->memo_tag = tag;
  n->memo_mask = slots - 1u;
  n->memo_scratch = scratch;
  n->all_nodes = all;
  return RINGKV_OK;
}

/* Whether `self` is among the shard's replicas at `size`: its score against every node's,
 * no sort. */
static bool ranks_replica(uint32_t size, uint32_t reps, uint32_t shard, uint32_t self) {
  if (self >= size) return false;
  scored me = {rendezvous_score(shard, self), self};
  uint32_t above = 0;
  for (uint32_t node = 0; node < size && above < reps; node++) {
    scored other = {rendezvous_score(shard, node), node};
    if (node != self && scored_cmp(&other, &me) < 0) above++;
  }
  return above < reps;
}

/* Whether `self` holds the shard in the ring's phase (replicas_of, without the memo). */
static bool holds_shard(const rk_config *c, uint32_t shard, uint32_t self) {
  bool in_new = ranks_replica(c->size_new, reps_at(c, c->size_new), shard, self);
  if (in_new || c->phase == RK_PHASE_LEAVING || !moving(c)) return in_new;
  return ranks_replica(c->size_old, reps_at(c, c->size_old), shard, self);
}

/* ---------------------------------------------------------------------------------------
 * Shared message parts */

typedef struct {
  rk_dot dot;
  rk_slice value;
} rk_value;

struct value_size;

typedef struct {
  rk_slice key;
  rk_slice meta;
  rk_value *values;
  size_t values_len;
  bool expired;
  struct value_size *sizes;   /* the stored values' lengths, when the executor gives them */
  size_t sizes_len;
  uint64_t gc_since_ms;       /* a noted collection agreement, or a marker's collection */
  uint64_t gc_epoch;
  uint64_t order;             /* the row's place in the executor's collection order */
} rk_local;

static int dot_read(rk_slice s, rk_dot *d) {
  int t_;
  bool ok = true;
  d->node = 0;
  d->counter = 0;
  FIELDS(s) {
    case 1: ok = pb_get_u32(R, WT, &d->node); break;
    case 2: ok = pb_get_u64(R, WT, &d->counter); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  return RINGKV_OK;
}

static int value_read(rk_slice s, rk_value *v) {
  int t_;
  bool ok = true;
  rk_slice d = {NULL, 0};
  memset(v, 0, sizeof *v);
  FIELDS(s) {
    case 1: ok = pb_get_bytes(R, WT, &d); break;
    case 2: ok = pb_get_bytes(R, WT, &v->value); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  return dot_read(d, &v->dot);
}

/* A stored value's length (WriteRequest.sizes, Local.sizes): SQLite length(). */
typedef struct value_size {
  rk_dot dot;
  uint64_t bytes;
} value_size;

static bool value_size_push(rk_arena *a, pb_rd *r, uint32_t wt, value_size **arr, size_t *len, size_t *cap) {
  int t_;
  bool ok = true;
  rk_slice vs, dot_bytes = {NULL, 0};
  if (!pb_get_bytes(r, wt, &vs) || *len >= RINGKV_SIBLINGS_MAX) return false;
  value_size *slot = VEC_PUSH(a, *arr, *len, *cap);
  if (slot == NULL) return false;
  memset(slot, 0, sizeof *slot);
  FIELDS(vs) {
    case 1: ok = pb_get_bytes(R, WT, &dot_bytes); break;
    case 2: ok = pb_get_u64(R, WT, &slot->bytes); break;
    SKIP;
  }
  return ok && t_ >= 0 && dot_read(dot_bytes, &slot->dot) == RINGKV_OK;
}

static int local_read(rk_arena *a, rk_slice s, rk_local *l) {
  int t_;
  bool ok = true;
  size_t cap = 0, sizes_cap = 0;
  rk_slice v;
  memset(l, 0, sizeof *l);
  FIELDS(s) {
    case 1: ok = pb_get_bytes(R, WT, &l->key); break;
    case 2: ok = pb_get_bytes(R, WT, &l->meta); break;
    case 3: {
      ok = pb_get_bytes(R, WT, &v);
      if (!ok) break;
      rk_value *slot = VEC_PUSH(a, l->values, l->values_len, cap);
      if (slot == NULL) return RINGKV_E_NOMEM;
      if (value_read(v, slot) != RINGKV_OK || l->values_len > RINGKV_SIBLINGS_MAX) ok = false;
      break;
    }
    case 4: ok = pb_get_bool(R, WT, &l->expired); break;
    case 5: ok = value_size_push(a, R, WT, &l->sizes, &l->sizes_len, &sizes_cap); break;
    case 8: ok = pb_get_u64(R, WT, &l->gc_since_ms); break;
    case 9: ok = pb_get_u64(R, WT, &l->gc_epoch); break;
    case 10: ok = pb_get_u64(R, WT, &l->order); break;
    SKIP;
  }
  if (!ok || t_ < 0 || !key_valid(l->key)) return RINGKV_E_DECODE;
  return RINGKV_OK;
}

/* Appends a decoded Local from a repeated field; used by every request carrying rows.
 * False on bad input or no memory (the arena remembers which: see ringkv_call). */
static bool locals_push(rk_arena *a, pb_rd *r, uint32_t wt, rk_local **arr, size_t *len, size_t *cap) {
  rk_slice s;
  if (!pb_get_bytes(r, wt, &s) || *len >= RINGKV_ENTRIES_MAX) return false;
  rk_local *slot = VEC_PUSH(a, *arr, *len, *cap);
  return slot != NULL && local_read(a, s, slot) == RINGKV_OK;
}

/* Attaches value bytes to the register's live siblings. Every live sibling must find its
 * value (or have the empty value): a register is never shipped without its data. */
static int reg_attach_values(rk_reg *reg, const rk_local *l) {
  for (size_t i = 0; i < reg->sibs_len; i++) {
    rk_sib *s = &reg->sibs[i];
    if (s->deleted) continue;
    bool found = false;
    for (size_t j = 0; j < l->values_len; j++) {
      if (rk_dot_cmp(l->values[j].dot, s->dot) == 0) {
        s->value = l->values[j].value;
        found = true;
        break;
      }
    }
    if (!found && s->value_hash != RK_HASH_EMPTY) return RINGKV_E_DECODE;
    if (found && s->value.len != 0 && rk_hash_slice(s->value) != s->value_hash) return RINGKV_E_DECODE;
  }
  return RINGKV_OK;
}

/* A remote register must carry every live sibling's value. */
static bool reg_values_complete(const rk_reg *reg) {
  for (size_t i = 0; i < reg->sibs_len; i++) {
    const rk_sib *s = &reg->sibs[i];
    if (!s->deleted && s->value.len == 0 && s->value_hash != RK_HASH_EMPTY) return false;
  }
  return true;
}

static int local_reg(rk_arena *a, const rk_local *l, bool with_values, rk_reg *out) {
  RK_TRY(rk_reg_decode(a, l->meta, out));
  if (with_values) RK_TRY(reg_attach_values(out, l));
  return RINGKV_OK;
}

static rk_slice reg_meta(rk_arena *a, const rk_reg *r, int *err) {
  pb_enc e;
  pb_enc_init(&e, a);
  rk_reg_encode(&e, r, false);
  if (e.err != 0) *err = e.err;
  return pb_result(&e);
}

uint64_t rk_marker_keep_ms(const ringkv_node *n) {
  return rk_mul_sat(n->cfg.tombstone_grace_ms, RINGKV_MARKER_GRACES);
}

/* A stored row: versions, or a collection marker. */
static bool reg_stored(const rk_reg *r) { return r->sibs_len > 0 || rk_reg_is_marker(r); }

/* Markers exist from protocol version 4, write ids from 5: an entry is never sent in a
 * version that cannot carry it (it waits, unacknowledged, until the peer speaks one). */
#define MARKER_VERSION_MIN 4u
#define WRITE_ID_VERSION_MIN 5u

static uint32_t reg_version_min(const rk_reg *r) {
  for (size_t i = 0; i < r->sibs_len; i++) {
    if (r->sibs[i].write_id.len > 0) return WRITE_ID_VERSION_MIN;
  }
  return r->sibs_len == 0 ? MARKER_VERSION_MIN : RINGKV_PROTOCOL_VERSION_MIN;
}

static void dot_write(pb_enc *e, uint32_t field, rk_dot d) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, d.node);
  pb_put_uint(e, 2, d.counter);
  pb_end(e, m);
}

static void node_state_write(pb_enc *e, uint32_t field, const ringkv_node *n) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, n->self);
  pb_put_fixed64(e, 2, n->clock);
  pb_put_uint(e, 3, n->counter);
  pb_end(e, m);
}

static void key_info_write(pb_enc *e, uint32_t field, const rk_reg *r, uint64_t raw, bool expired,
                           uint64_t key_hash) {
  size_t m = pb_begin(e, field);
  int w = rk_reg_winner(r);
  if (w >= 0) {
    pb_put_bool(e, 1, !r->sibs[w].deleted);
    pb_put_fixed64(e, 2, r->sibs[w].hlc);
    pb_put_uint(e, 3, r->sibs[w].dot.node);
  }
  pb_put_bool(e, 4, rk_reg_all_deleted(r));
  pb_put_fixed64(e, 5, rk_reg_max_hlc(r));
  pb_put_uint(e, 6, r->sibs_len);
  pb_put_fixed64(e, 7, raw);
  pb_put_bool(e, 8, expired);
  pb_put_uint(e, 9, rk_key_position(key_hash));
  pb_end(e, m);
}

static void token_write(pb_enc *e, uint64_t key_hash, uint64_t max_hlc, const rk_ctx *c) {
  pb_put_fixed64(e, 1, key_hash);
  pb_put_fixed64(e, 2, max_hlc);
  size_t m = pb_begin(e, 3);
  rk_ctx_encode(e, c);
  pb_end_omit_empty(e, 3, m);
}

static rk_slice token_bytes(rk_arena *a, uint64_t key_hash, uint64_t max_hlc, const rk_ctx *c, int *err) {
  pb_enc e;
  pb_enc_init(&e, a);
  token_write(&e, key_hash, max_hlc, c);
  if (e.err != 0) *err = e.err;
  return pb_result(&e);
}

typedef struct {
  uint64_t key_hash;
  uint64_t max_hlc;
  rk_ctx ctx;
} rk_token;

/* Strict: bounded, known fields only, and canonical (a token is always the core's own
 * bytes; anything else was made or altered elsewhere). */
static int token_read(rk_arena *a, rk_slice s, rk_token *t) {
  if (s.len > TOKEN_BYTES_MAX) return RINGKV_E_TOKEN;
  int t_;
  bool ok = true;
  rk_slice ctx = {NULL, 0};
  memset(t, 0, sizeof *t);
  FIELDS(s) {
    case 1: ok = pb_get_fixed64(R, WT, &t->key_hash); break;
    case 2: ok = pb_get_fixed64(R, WT, &t->max_hlc); break;
    case 3: ok = pb_get_bytes(R, WT, &ctx); break;
    default: ok = false; break;
  }
  if (!ok || t_ < 0) return RINGKV_E_TOKEN;
  int rc = rk_ctx_decode(a, ctx, &t->ctx);
  if (rc == RINGKV_E_NOMEM) return rc;
  if (rc != RINGKV_OK) return RINGKV_E_TOKEN;
  int err = 0;
  rk_slice again = token_bytes(a, t->key_hash, t->max_hlc, &t->ctx, &err);
  if (err != 0) return err;
  if (!rk_slice_eq(again, s)) return RINGKV_E_TOKEN;
  return RINGKV_OK;
}

/* Updates the shard digest by the key's change of contribution (sums mod 2^64), and its
 * count of key rows by `rows` (+1 a new row, -1 a row deleted). */
static uint64_t shard_update(ringkv_node *n, uint32_t shard, uint64_t old_contrib, uint64_t new_contrib, int rows) {
  n->shard_digest[shard] = n->shard_digest[shard] - old_contrib + new_contrib;
  if (rows > 0) n->shard_keys[shard]++;
  if (rows < 0 && n->shard_keys[shard] > 0) n->shard_keys[shard]--;
  n->digests_dirty = true;
  return n->shard_digest[shard];
}

static rk_slice finish(pb_enc *e, int *err) {
  if (e->err != 0) *err = e->err;
  return pb_result(e);
}

/* ---------------------------------------------------------------------------------------
 * OP_INIT */

static int config_read(rk_slice s, rk_config *c) {
  int t_;
  bool ok = true;
  memset(c, 0, sizeof *c);
  FIELDS(s) {
    case 1: ok = pb_get_u32(R, WT, &c->cluster_size); break;
    case 2: ok = pb_get_u32(R, WT, &c->replicas); break;
    case 3: ok = pb_get_u32(R, WT, &c->shards); break;
    case 4: ok = pb_get_u64(R, WT, &c->max_clock_skew_ms); break;
    case 5: ok = pb_get_u64(R, WT, &c->tombstone_grace_ms); break;
    case 6: ok = pb_get_u32(R, WT, &c->max_siblings); break;
    case 7: ok = pb_get_u32(R, WT, &c->fanout); break;
    case 8: ok = pb_get_u32(R, WT, &c->node_ids_max); break;
    case 9: ok = pb_get_u64(R, WT, &c->key_bytes_max); break;
    case 10: ok = pb_get_u64(R, WT, &c->value_bytes_max); break;
    case 11: ok = pb_get_u64(R, WT, &c->gossip_interval_ms); break;
    case 12: ok = pb_get_u32(R, WT, &c->size_old); break;
    case 13: ok = pb_get_u32(R, WT, &c->size_new); break;
    case 14: ok = pb_get_u32(R, WT, &c->phase); break;
    case 15: ok = pb_get_u64(R, WT, &c->epoch); break;
    case 16: ok = pb_get_bool(R, WT, &c->replicas_all); break;
    case 17: ok = pb_get_u64(R, WT, &c->quorum_timeout_ms); break;
    case 20: ok = pb_get_bool(R, WT, &c->reports); break;
    case 30: ok = pb_get_bool(R, WT, &c->leases); break;
    SKIP;
  }
  if (c->node_ids_max == 0) c->node_ids_max = c->cluster_size;
  if (c->phase == RK_PHASE_NONE) c->size_old = c->size_new = c->cluster_size;
  if (c->gossip_interval_ms == 0) c->gossip_interval_ms = RINGKV_GOSSIP_INTERVAL_MS_DEFAULT;
  if (c->quorum_timeout_ms == 0) c->quorum_timeout_ms = RINGKV_QUORUM_TIMEOUT_MS_DEFAULT;
  if (c->key_bytes_max == 0) c->key_bytes_max = RINGKV_KEY_BYTES_DEFAULT;
  return ok && t_ >= 0 ? RINGKV_OK : RINGKV_E_DECODE;
}

static const char *config_problem(const rk_config *c, uint32_t self) {
  if (c->cluster_size < 1 || c->cluster_size > RINGKV_CLUSTER_SIZE_MAX) return "cluster_size must be 1..1024";
  if (c->replicas < 1 || c->replicas > c->cluster_size) return "replicas must be 1..cluster_size";
  if (c->phase > RK_PHASE_LEAVING) return "phase must be 0..3";
  if (c->size_old < 1 || c->size_new < 1 || RK_MAX(c->size_old, c->size_new) != c->cluster_size) {
    return "a transition's sizes must be 1..cluster_size, the larger equal to it";
  }
  if (!c->replicas_all && c->replicas > RK_MIN(c->size_old, c->size_new)) return "replicas must be at most both sizes";
  if (c->shards < 1 || c->shards > RINGKV_SHARDS_MAX) return "shards must be 1..65536";
  /* Up to 2 x replicas nodes accept writes for a key across a resize; each may leave
   * max_siblings siblings and key_bytes_max value bytes, and the merge of them all must
   * still decode and fit a node's bound. */
  uint64_t accepting = c->replicas_all ? c->cluster_size : RK_MIN(2u * (uint64_t)c->replicas, RINGKV_CLUSTER_SIZE_MAX);
  if (c->max_siblings < 1 || accepting * c->max_siblings > RINGKV_SIBLINGS_MAX) {
    return "MAX_SIBLINGS x 2 x REPLICAS must be at most 4096 (the siblings a key may hold after merging a resize's writers)";
  }
  if (c->key_bytes_max > RINGKV_NODE_KEY_BYTES_MAX / accepting) {
    return "MAX_KEY_BYTES x 2 x REPLICAS must be at most 32 MiB (the bytes one key may hold at a node across a resize)";
  }
  if (c->value_bytes_max > c->key_bytes_max) return "MAX_VALUE_BYTES must not exceed MAX_KEY_BYTES";
  if (c->fanout < 1) return "fanout must be at least 1";
  if (c->max_clock_skew_ms > RINGKV_HLC_MS_MAX) return "max_clock_skew_ms is too large";
  if (c->tombstone_grace_ms > RINGKV_HLC_MS_MAX) return "tombstone_grace_ms is too large";
  if (c->node_ids_max < c->cluster_size || c->node_ids_max > RINGKV_CLUSTER_SIZE_MAX) {
    return "node_ids_max must be cluster_size..1024";
  }
  if (self >= c->cluster_size) return "node id must be below cluster_size";
  return NULL;
}

/* InitReply.worker: the Worker's policy numbers. */
static void worker_policy_write(pb_enc *e) {
  size_t worker = pb_begin(e, 3);
  pb_put_uint(e, 1, WORKER_LIST_ROUNDS_MAX);
  pb_put_uint(e, 2, WORKER_RING_ASK_NODES_MAX);
  pb_put_uint(e, 3, WORKER_NODE_TIMEOUT_MS);
  pb_put_uint(e, 4, WORKER_WRITE_GENERATIONS_MAX);
  pb_put_uint(e, 5, WORKER_STALE_RING_RETRIES);
  pb_put_uint(e, 6, WORKER_WRITE_SAME_REPLICA_RETRIES);
  pb_put_uint(e, 7, WORKER_WRITE_ID_RANDOM_BYTES);
  pb_end(e, worker);
}

static int op_init(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_;
  bool ok = true;
  rk_slice cfg_bytes = {NULL, 0}, state_bytes = {NULL, 0}, s;
  uint32_t *sd_shard = NULL, *sd_keys = NULL;
  uint64_t *sd_digest = NULL;
  size_t sd_len = 0, sd_cap = 0, sd_cap2 = 0, sd_cap3 = 0;
  rk_slice step_state = {NULL, 0};
  rk_slice *peer_rows = NULL;
  size_t peer_rows_len = 0, peer_rows_cap = 0;
  uint64_t legacy_seq = 0;
  bool placement_only = false;
  FIELDS(req) {
    case 1: ok = pb_get_bytes(R, WT, &cfg_bytes); break;
    case 2: ok = pb_get_bytes(R, WT, &state_bytes); break;
    case 4: ok = pb_get_bytes(R, WT, &step_state); break;
    case 5: {
      ok = pb_get_bytes(R, WT, &s) && peer_rows_len < RINGKV_CLUSTER_SIZE_MAX;
      if (!ok) break;
      rk_slice *slot = VEC_PUSH(a, peer_rows, peer_rows_len, peer_rows_cap);
      if (slot == NULL) return RINGKV_E_NOMEM;
      *slot = s;
      break;
    }
    case 6: ok = pb_get_u64(R, WT, &legacy_seq); break;
    case 7: ok = pb_get_bool(R, WT, &placement_only); break;
    case 3: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      uint32_t shard = 0, keys = 0;
      uint64_t digest = 0;
      FIELDS(s) {
        case 1: ok = pb_get_u32(R, WT, &shard); break;
        case 2: ok = pb_get_fixed64(R, WT, &digest); break;
        case 3: ok = pb_get_u32(R, WT, &keys); break;
        SKIP;
      }
      if (t_ < 0) ok = false;
      size_t l2 = sd_len, l3 = sd_len;
      uint32_t *p1 = VEC_PUSH(a, sd_shard, sd_len, sd_cap);
      uint64_t *p2 = VEC_PUSH(a, sd_digest, l2, sd_cap2);
      uint32_t *p3 = VEC_PUSH(a, sd_keys, l3, sd_cap3);
      if (p1 == NULL || p2 == NULL || p3 == NULL) return RINGKV_E_NOMEM;
      *p1 = shard;
      *p2 = digest;
      *p3 = keys;
      break;
    }
    SKIP;
  }
  (void)0;
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  rk_config cfg;
  RK_TRY(config_read(cfg_bytes, &cfg));
  uint32_t self = 0;
  uint64_t clock = 0, counter = 0;
  FIELDS(state_bytes) {
    case 1: ok = pb_get_u32(R, WT, &self); break;
    case 2: ok = pb_get_fixed64(R, WT, &clock); break;
    case 3: ok = pb_get_u64(R, WT, &counter); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  const char *problem = config_problem(&cfg, self);
  for (size_t i = 0; problem == NULL && i < sd_len; i++) {
    if (sd_shard[i] >= cfg.shards) problem = "a persisted shard digest is out of range";
  }
  if (problem != NULL) {
    pb_enc e;
    pb_enc_init(&e, a);
    rk_slice msg = {(const uint8_t *)problem, strlen(problem)};
    pb_put_bytes(&e, 1, msg);
    *reply = pb_result(&e);
    return RINGKV_E_CONFIG;
  }
  RK_TRY(placement_init(n, &cfg));
  if (placement_only) {
    /* A Worker's instance: it places keys and answers nothing else. */
    n->cfg = cfg;
    n->self = self;
    n->placement_only = true;
    n->ready = true;
    pb_enc e;
    pb_enc_init(&e, a);
    worker_policy_write(&e);
    int err = 0;
    *reply = finish(&e, &err);
    return err;
  }
  int step_err = RINGKV_OK;
  rk_step *step = rk_step_new(&cfg, self, step_state, peer_rows, peer_rows_len, legacy_seq, &clock, &counter,
                              &step_err);
  if (step == NULL) return step_err;
  uint64_t *digests = calloc(cfg.shards, sizeof *digests);
  uint32_t *shard_keys = calloc(cfg.shards, sizeof *shard_keys);
  uint32_t *mine = malloc(cfg.shards * sizeof *mine);
  uint8_t *versions = calloc(cfg.cluster_size, 1);
  uint32_t *ae_peers = malloc(cfg.cluster_size * sizeof *ae_peers);
  if (digests == NULL || shard_keys == NULL || mine == NULL || versions == NULL || ae_peers == NULL) {
    free(digests);
    free(shard_keys);
    free(mine);
    free(versions);
    free(ae_peers);
    rk_step_free(step);
    return RINGKV_E_NOMEM;
  }
  /* What was learnt of peers' versions stays valid for the ids that remain. */
  if (n->peer_version != NULL) memcpy(versions, n->peer_version, RK_MIN(n->cfg.cluster_size, cfg.cluster_size));
  free(n->peer_version);
  n->peer_version = versions;
  for (size_t i = 0; i < sd_len; i++) {
    digests[sd_shard[i]] = sd_digest[i];
    shard_keys[sd_shard[i]] = sd_keys[i];
  }
  free(n->shard_digest);
  free(n->shard_keys);
  n->shard_keys = shard_keys;
  free(n->my_shards);
  n->cfg = cfg;
  n->self = self;
  n->clock = clock;
  n->counter = counter;
  n->shard_digest = digests;
  n->placement_only = false;
  n->my_shards = mine;
  n->my_shards_len = 0;
  /* Its own shards: each shard's score for this node against the others', stopping at R
   * above it (about R ln N hashes a shard, not N). */
  for (uint32_t shard = 0; shard < cfg.shards; shard++) {
    if (full_replication(n) || holds_shard(&cfg, shard, self)) mine[n->my_shards_len++] = shard;
  }
  rk_step_free(n->step);
  n->step = step;
  /* The peers this node shares a shard with: the only ones it gossips with. */
  free(n->ae_peers);
  n->ae_peers = ae_peers;
  rk_step_adopt(n);
  n->ae_peers_len = 0;
  bool *shares = rk_zalloc(a, cfg.cluster_size);
  if (shares == NULL) return RINGKV_E_NOMEM;
  for (size_t i = 0; i < n->my_shards_len; i++) {
    uint32_t len;
    const uint16_t *r = replicas_of(n, mine[i], &len);
    for (uint32_t j = 0; j < len; j++) shares[r[j]] = true;
  }
  for (uint32_t p = 0; p < cfg.cluster_size; p++) {
    if (shares[p] && p != self) ae_peers[n->ae_peers_len++] = p;
  }
  n->ready = true;
  pb_enc e;
  pb_enc_init(&e, a);
  pb_put_packed_u32(&e, 2, ae_peers, n->ae_peers_len);
  worker_policy_write(&e);
  int err = 0;
  *reply = finish(&e, &err);
  return err;
}

/* ---------------------------------------------------------------------------------------
 * OP_PLACE */

static void placement_write(pb_enc *e, const ringkv_node *n, uint32_t shard, uint64_t key_hash) {
  size_t m = pb_begin(e, 1);
  pb_put_uint(e, 1, shard);
  /* In rendezvous order: the first is routed to (so with full replication too). */
  sets_t sets;
  sets_memo(n, shard, &sets);
  bool joining = n->cfg.phase == RK_PHASE_JOINING;
  uint32_t len = joining ? sets.old_len : sets.new_len;
  const uint16_t *r = joining ? sets.old : sets.nw;
  /* Packed; but node 0 must stay visible, so replicas are always written. */
  size_t bytes = 0;
  for (uint32_t i = 0; i < len; i++) bytes += pb_varint_size(r[i]);
  pb_put_varint_raw(e, (2u << 3) | PB_LEN);
  pb_put_varint_raw(e, bytes);
  for (uint32_t i = 0; i < len; i++) pb_put_varint_raw(e, r[i]);
  pb_put_fixed64(e, 3, key_hash);
  if (key_hash != 0) pb_put_uint(e, 4, rk_key_position(key_hash));
  pb_end(e, m);
}

static int op_place(ringkv_node *n, rk_slice req, rk_slice *reply) {
  int t_, err = 0;
  bool ok = true;
  pb_enc e;
  pb_enc_init(&e, &n->arena);
  rk_slice key;
  size_t count = 0;
  /* Keys first, then shards, whatever order the fields came in. */
  FIELDS(req) {
    case 1:
      ok = pb_get_bytes(R, WT, &key) && key_valid(key) && ++count <= RINGKV_ENTRIES_MAX;
      if (ok) {
        uint64_t h = rk_hash_slice(key);
        placement_write(&e, n, shard_of(n, h), h);
      }
      break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  FIELDS(req) {
    case 2: {
      uint32_t shard;
      if (WT == PB_LEN) {
        rk_slice packed;
        ok = pb_get_bytes(R, WT, &packed);
        pb_rd in = pb_reader(packed);
        while (ok && !pb_done(&in)) {
          ok = pb_get_u32(&in, PB_VARINT, &shard) && shard < n->cfg.shards && ++count <= RINGKV_SHARDS_MAX;
          if (ok) placement_write(&e, n, shard, 0);
        }
      } else {
        ok = pb_get_u32(R, WT, &shard) && shard < n->cfg.shards && ++count <= RINGKV_SHARDS_MAX;
        if (ok) placement_write(&e, n, shard, 0);
      }
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  *reply = finish(&e, &err);
  return err;
}

/* ---------------------------------------------------------------------------------------
 * OP_WRITE */



typedef struct {
  uint64_t now_ms;
  rk_slice key, meta, token, value, content_type, write_id;
  bool has_token, deleted, expired;
  value_size *sizes;
  size_t sizes_len;
} write_req;

/* Could some node have issued a token with this context? Not if it names a node id the
 * cluster never had, or a dot of this node above its counter (this node made no such dot;
 * a write under that token would cover, and so lose on merge, a later write of its own). */
static bool token_possible(const ringkv_node *n, const rk_ctx *c) {
  for (size_t i = 0; i < c->vv_len + c->dots_len; i++) {
    rk_dot d = i < c->vv_len ? c->vv[i] : c->dots[i - c->vv_len];
    if (d.node >= n->cfg.node_ids_max || d.counter > RINGKV_COUNTER_MAX) return false;
    if (d.node == n->self && d.counter > n->counter) return false;
  }
  return true;
}

/* The stored version carrying this write id, if any. */
static const rk_sib *write_id_held(const rk_reg *r, rk_slice id) {
  for (size_t i = 0; i < r->sibs_len; i++) {
    if (rk_slice_eq(r->sibs[i].write_id, id)) return &r->sibs[i];
  }
  return NULL;
}

/* The answer to a replayed write id: the held version, a context covering it only, the
 * key's current sibling count (SPEC: idempotent writes). */
static int write_replay(ringkv_node *n, const rk_reg *local, const rk_sib *held, uint64_t key_hash, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int err = 0;
  rk_ctx only = {NULL, 0, NULL, 0}, answer;
  RK_TRY(rk_ctx_add(a, &only, held->dot, &answer));
  rk_slice token = token_bytes(a, key_hash, held->hlc, &answer, &err);
  if (err != 0) return err;
  pb_enc e;
  pb_enc_init(&e, a);
  node_state_write(&e, 1, n);
  dot_write(&e, 3, held->dot);
  pb_put_fixed64(&e, 4, held->hlc);
  pb_put_bytes(&e, 5, token);
  pb_put_uint(&e, 6, local->sibs_len);
  pb_put_uint(&e, 10, shard_of(n, key_hash));
  pb_put_bool(&e, 14, true);
  *reply = finish(&e, &err);
  return err;
}

static int op_write(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true;
  write_req w;
  memset(&w, 0, sizeof w);
  size_t sizes_cap = 0;
  FIELDS(req) {
    case 1: ok = pb_get_u64(R, WT, &w.now_ms); break;
    case 2: ok = pb_get_bytes(R, WT, &w.key); break;
    case 3: ok = pb_get_bytes(R, WT, &w.meta); break;
    case 4: ok = pb_get_bool(R, WT, &w.has_token); break;
    case 5: ok = pb_get_bytes(R, WT, &w.token); break;
    case 6: ok = pb_get_bytes(R, WT, &w.value); break;
    case 7: ok = pb_get_bytes(R, WT, &w.content_type); break;
    case 8: ok = pb_get_bool(R, WT, &w.deleted); break;
    case 9: ok = pb_get_bool(R, WT, &w.expired); break;
    case 10: ok = value_size_push(a, R, WT, &w.sizes, &w.sizes_len, &sizes_cap); break;
    case 11: ok = pb_get_bytes(R, WT, &w.write_id); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (w.write_id.len > 0 && !rk_write_id_valid(w.write_id)) return RINGKV_E_VALUE;
  if (!key_valid(w.key) || w.value.len > RINGKV_VALUE_BYTES_MAX ||
      w.content_type.len > RINGKV_CONTENT_TYPE_BYTES_MAX ||
      (w.deleted && (w.value.len != 0 || w.content_type.len != 0))) {
    return RINGKV_E_VALUE;
  }
  rk_reg local;
  RK_TRY(rk_reg_decode(a, w.meta, &local));
  uint64_t key_hash = rk_hash_slice(w.key);
  rk_token tok;
  if (w.has_token) {
    RK_TRY(token_read(a, w.token, &tok));
    if (tok.key_hash != key_hash || !token_possible(n, &tok.ctx)) return RINGKV_E_TOKEN;
    if (tok.max_hlc > rk_hlc_bound(w.now_ms, n->cfg.max_clock_skew_ms)) return RINGKV_E_SKEW;
  }
  /* A replay of a write this node holds: answered with that version, changing nothing. */
  if (w.write_id.len > 0) {
    const rk_sib *held = write_id_held(&local, w.write_id);
    if (held != NULL) {
      if (held->deleted != w.deleted || held->value_hash != rk_hash_slice(w.value) ||
          !rk_slice_eq(held->content_type, w.content_type)) {
        return RINGKV_E_WRITE_ID;
      }
      return write_replay(n, &local, held, key_hash, reply);
    }
  }

  /* Which local versions this write supersedes, and the HLC floor they set. */
  rk_sib *kept = rk_alloc_array(a, local.sibs_len + 1, sizeof *kept);
  rk_dot *dropped = rk_alloc_array(a, local.sibs_len + 1, sizeof *dropped);
  if (kept == NULL || dropped == NULL) return RINGKV_E_NOMEM;
  size_t kept_len = 0, dropped_len = 0;
  uint64_t stored_floor = 0;
  bool kept_own = false;
  for (size_t i = 0; i < local.sibs_len; i++) {
    const rk_sib *s = &local.sibs[i];
    if (!w.has_token || rk_ctx_covers(&tok.ctx, s->dot)) {
      dropped[dropped_len++] = s->dot;
      stored_floor = RK_MAX(stored_floor, s->hlc);
    } else {
      kept[kept_len++] = *s;
      if (s->dot.node == n->self) kept_own = true;
    }
  }
  if (w.has_token && kept_len + 1 > n->cfg.max_siblings) return RINGKV_E_SIBLINGS;
  if (w.has_token) {
    /* The key's value bytes at this node after the write, from the stored lengths. */
    uint64_t bytes = w.value.len;
    for (size_t i = 0; i < kept_len; i++) {
      for (size_t j = 0; j < w.sizes_len && !kept[i].deleted; j++) {
        if (rk_dot_cmp(w.sizes[j].dot, kept[i].dot) == 0) bytes = rk_add_sat(bytes, w.sizes[j].bytes);
      }
    }
    if (bytes > n->cfg.key_bytes_max) return RINGKV_E_KEY_BYTES;
  }
  /* No stored version can pull the clock past the skew bound (merges defer such versions;
   * rows from before that rule may hold one): the write's HLC is then only at the bound,
   * and it still supersedes the version causally, through its context. The token's HLC
   * was checked against the bound already. */
  stored_floor = RK_MIN(stored_floor, rk_hlc_bound(w.now_ms, n->cfg.max_clock_skew_ms) - 1u);
  uint64_t floor = RK_MAX(stored_floor, w.has_token ? tok.max_hlc : 0);

  /* The new dot is above every dot of this node the stored row names (a row from before
   * the claim rule may name more than the counter says), so it is covered nowhere yet. */
  uint64_t counter = n->counter;
  for (size_t i = 0; i < local.ctx.vv_len + local.ctx.dots_len; i++) {
    rk_dot d = i < local.ctx.vv_len ? local.ctx.vv[i] : local.ctx.dots[i - local.ctx.vv_len];
    if (d.node == n->self) counter = RK_MAX(counter, d.counter);
  }
  if (counter >= RINGKV_COUNTER_MAX) return RINGKV_E_CLOCK;

  uint64_t hlc;
  RK_TRY(rk_hlc_tick(n->clock, w.now_ms, floor, &hlc));
  rk_sib fresh;
  memset(&fresh, 0, sizeof fresh);
  fresh.dot.node = n->self;
  fresh.dot.counter = counter + 1;
  fresh.hlc = hlc;
  fresh.deleted = w.deleted;
  fresh.content_type = w.content_type;
  fresh.value_hash = rk_hash_slice(w.value);
  fresh.write_id = w.write_id;

  /* The new register: kept versions plus the new one, in dot order. */
  rk_reg next;
  next.sibs = rk_alloc_array(a, kept_len + 1, sizeof *next.sibs);
  if (next.sibs == NULL) return RINGKV_E_NOMEM;
  next.sibs_len = 0;
  bool placed = false;
  for (size_t i = 0; i < kept_len; i++) {
    if (!placed && rk_dot_cmp(fresh.dot, kept[i].dot) < 0) {
      next.sibs[next.sibs_len++] = fresh;
      placed = true;
    }
    next.sibs[next.sibs_len++] = kept[i];
  }
  if (!placed) next.sibs[next.sibs_len++] = fresh;
  rk_ctx joined;
  if (w.has_token) {
    RK_TRY(rk_ctx_join(a, &local.ctx, &tok.ctx, &joined));
  } else {
    joined = local.ctx;
  }
  /* This node made every dot of its own for this key, so its vector entry may cover
   * them all. */
  RK_TRY(rk_ctx_raise(a, &joined, n->self, fresh.dot.counter, &next.ctx));

  /* The response context: what the client knew plus the new version, never a sibling it
   * has not seen. */
  rk_ctx known = w.has_token ? tok.ctx : local.ctx, answer;
  if (kept_own) {
    RK_TRY(rk_ctx_add(a, &known, fresh.dot, &answer));
  } else {
    RK_TRY(rk_ctx_raise(a, &known, n->self, fresh.dot.counter, &answer));
  }
  rk_slice token = token_bytes(a, key_hash, hlc, &answer, &err);
  rk_slice meta = reg_meta(a, &next, &err);
  if (err != 0) return err;

  uint64_t old_raw = rk_reg_digest(a, w.key, &local);
  uint64_t new_raw = rk_reg_digest(a, w.key, &next);
  uint64_t old_contrib = w.expired ? 0 : old_raw;
  uint32_t shard = shard_of(n, key_hash);

  /* Commit the node state only now that nothing can fail but the reply encoding. */
  n->clock = hlc;
  n->counter = fresh.dot.counter;
  uint64_t sd = shard_update(n, shard, old_contrib, new_raw, reg_stored(&local) ? 0 : 1);

  pb_enc e;
  pb_enc_init(&e, a);
  node_state_write(&e, 1, n);
  pb_put_bytes(&e, 2, meta);
  dot_write(&e, 3, fresh.dot);
  pb_put_fixed64(&e, 4, hlc);
  pb_put_bytes(&e, 5, token);
  pb_put_uint(&e, 6, next.sibs_len);
  pb_put_fixed64(&e, 7, old_contrib);
  pb_put_fixed64(&e, 8, new_raw);
  for (size_t i = 0; i < dropped_len; i++) dot_write(&e, 9, dropped[i]);
  pb_put_uint(&e, 10, shard);
  pb_put_fixed64(&e, 11, sd);
  key_info_write(&e, 12, &next, new_raw, false, key_hash);
  pb_put_uint(&e, 13, n->shard_keys[shard]);
  *reply = finish(&e, &err);
  return err;
}

/* ---------------------------------------------------------------------------------------
 * OP_READ */

static void sib_meta_write(pb_enc *e, uint32_t field, const rk_sib *s) {
  size_t m = pb_begin(e, field);
  dot_write(e, 1, s->dot);
  pb_put_fixed64(e, 2, s->hlc);
  pb_put_bool(e, 3, s->deleted);
  pb_put_bytes(e, 4, s->content_type);
  pb_put_fixed64(e, 5, s->value_hash);
  pb_end(e, m);
}

static int op_read(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true;
  rk_slice key = {NULL, 0}, meta = {NULL, 0};
  FIELDS(req) {
    case 1: ok = pb_get_bytes(R, WT, &key); break;
    case 2: ok = pb_get_bytes(R, WT, &meta); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (!key_valid(key)) return RINGKV_E_VALUE;
  rk_reg reg;
  RK_TRY(rk_reg_decode(a, meta, &reg));
  pb_enc e;
  pb_enc_init(&e, a);
  if (reg.sibs_len > 0) {
    pb_put_bool(&e, 1, true);
    pb_put_uint(&e, 2, (uint64_t)rk_reg_winner(&reg));
    for (size_t i = 0; i < reg.sibs_len; i++) sib_meta_write(&e, 3, &reg.sibs[i]);
    rk_slice token = token_bytes(a, rk_hash_slice(key), rk_reg_max_hlc(&reg), &reg.ctx, &err);
    pb_put_bytes(&e, 4, token);
  }
  *reply = finish(&e, &err);
  return err;
}

/* OP_CLIENT_READ: a client's read, served only once the node serves the key's shard
 * (Config.leases: it knows its storage was not lost, or it has caught up on the shard). */
static int op_client_read(ringkv_node *n, rk_slice req, rk_slice *reply) {
  int t_;
  bool ok = true;
  rk_slice key = {NULL, 0};
  FIELDS(req) {
    case 1: ok = pb_get_bytes(R, WT, &key); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (!key_valid(key)) return RINGKV_E_VALUE;
  uint32_t shard = shard_of(n, rk_hash_slice(key));
  RK_TRY(rk_step_serves(n, shard));
  rk_step_client_read(n, shard);
  return op_read(n, req, reply);
}

/* ---------------------------------------------------------------------------------------
 * Push messages */

typedef struct {
  rk_slice key;
  rk_slice reg;
} rk_entry;

typedef struct {
  uint32_t version;
  uint32_t from;
  rk_entry *entries;
  size_t entries_len;
  uint32_t *shards;
  size_t shards_len;
  rk_slice *deferred;     /* keys the sender of this answer did not apply yet */
  size_t deferred_len;
  rk_range *ranges;       /* a repair request over key ranges (version 3) */
  size_t ranges_len;
} rk_push;

static int version_check(uint32_t version) {
  return version >= RINGKV_PROTOCOL_VERSION_MIN && version <= RINGKV_PROTOCOL_VERSION ? RINGKV_OK
                                                                                       : RINGKV_E_PROTOCOL;
}

/* Records what a peer's message says of its protocol version (call after validating it). */
static void peer_heard(ringkv_node *n, uint32_t from, uint32_t version, uint32_t speaks) {
  if (from >= n->cfg.cluster_size) return;
  n->peer_version[from] = (uint8_t)RK_MIN(RK_MAX(version, speaks), RINGKV_PROTOCOL_VERSION);
}

/* The version to write to `peer`: the highest both speak once the peer was heard (or the
 * oldest one read after the peer refused this release's), else this release's. A peer of
 * an older release refuses that once (counted) and is then written the oldest version
 * until its own messages say what it speaks: waiting for every peer to be heard would hold
 * back every entry that needs this release (write ids) after each restart. */
static uint32_t version_for(const ringkv_node *n, uint32_t peer) {
  if (peer < n->cfg.cluster_size && n->peer_version[peer] >= RINGKV_PROTOCOL_VERSION_MIN) {
    return RK_MIN((uint32_t)n->peer_version[peer], RINGKV_PROTOCOL_VERSION);
  }
  return RINGKV_PROTOCOL_VERSION;
}

typedef struct {
  rk_arena *a;
  rk_push *p;
  size_t cap;
  uint32_t limit;
} shard_sink;

static bool shard_sink_push(void *ctx, uint32_t v) {
  shard_sink *s = ctx;
  if (v >= s->limit || s->p->shards_len >= RINGKV_SHARDS_MAX) return false;
  uint32_t *slot = VEC_PUSH(s->a, s->p->shards, s->p->shards_len, s->cap);
  if (slot == NULL) return false;
  *slot = v;
  return true;
}

/* Appends a KeyRange to a list of at most RINGKV_AE_RANGES_MAX. */
static bool range_push(rk_arena *a, const ringkv_node *n, pb_rd *r, uint32_t wt, rk_range **arr, size_t *len,
                       size_t *cap) {
  rk_slice s;
  if (!pb_get_bytes(r, wt, &s) || *len >= RINGKV_AE_RANGES_MAX) return false;
  rk_range *slot = VEC_PUSH(a, *arr, *len, *cap);
  return slot != NULL && rk_range_read(s, n->cfg.shards, slot);
}

static int push_read(ringkv_node *n, rk_slice s, rk_push *p) {
  rk_arena *a = &n->arena;
  int t_;
  bool ok = true;
  uint32_t version = 0, speaks = 0;
  size_t cap = 0, deferred_cap = 0, ranges_cap = 0;
  shard_sink sink = {a, p, 0, n->cfg.shards};
  rk_slice ent;
  memset(p, 0, sizeof *p);
  FIELDS(s) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &p->from); break;
    case 3: {
      ok = pb_get_bytes(R, WT, &ent) && p->entries_len < RINGKV_ENTRIES_MAX;
      if (!ok) break;
      rk_entry *slot = VEC_PUSH(a, p->entries, p->entries_len, cap);
      if (slot == NULL) return RINGKV_E_NOMEM;
      memset(slot, 0, sizeof *slot);
      FIELDS(ent) {
        case 1: ok = pb_get_bytes(R, WT, &slot->key); break;
        case 2: ok = pb_get_bytes(R, WT, &slot->reg); break;
        SKIP;
      }
      if (t_ < 0 || !key_valid(slot->key)) ok = false;
      break;
    }
    case 4: ok = pb_get_repeated_u32(R, WT, shard_sink_push, &sink); break;
    case 5: {
      rk_slice key;
      ok = pb_get_bytes(R, WT, &key) && key_valid(key) && p->deferred_len < RINGKV_ENTRIES_MAX;
      if (!ok) break;
      rk_slice *slot = VEC_PUSH(a, p->deferred, p->deferred_len, deferred_cap);
      if (slot == NULL) return RINGKV_E_NOMEM;
      *slot = key;
      break;
    }
    case 6: ok = range_push(a, n, R, WT, &p->ranges, &p->ranges_len, &ranges_cap); break;
    case 15: ok = pb_get_u32(R, WT, &speaks); break;
    SKIP;
  }
  if (a->failed) return RINGKV_E_NOMEM;
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  RK_TRY(version_check(version));
  if (p->from >= n->cfg.cluster_size) return RINGKV_E_DECODE;
  /* A repair request names whole shards or key ranges (version 3: ordered, disjoint), not both. */
  if (p->ranges_len > 0 && (version < 3u || p->shards_len > 0 || !rk_ranges_ordered(p->ranges, p->ranges_len))) {
    return RINGKV_E_DECODE;
  }
  p->version = version;
  peer_heard(n, p->from, version, speaks);
  return RINGKV_OK;
}

static int op_message_keys(ringkv_node *n, rk_slice req, rk_slice *reply) {
  int t_, err = 0;
  bool ok = true;
  rk_slice msg = {NULL, 0};
  FIELDS(req) {
    case 1: ok = pb_get_bytes(R, WT, &msg); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  rk_push p;
  RK_TRY(push_read(n, msg, &p));
  pb_enc e;
  pb_enc_init(&e, &n->arena);
  pb_put_uint(&e, 1, p.from);
  for (size_t i = 0; i < p.entries_len; i++) pb_put_bytes_always(&e, 2, p.entries[i].key);
  pb_put_packed_u32(&e, 3, p.shards, p.shards_len);
  for (size_t i = 0; i < p.ranges_len; i++) rk_range_write(&e, 4, &p.ranges[i]);
  *reply = finish(&e, &err);
  return err;
}

static int local_cmp_qsort(const void *x, const void *y) {
  return rk_slice_cmp(((const rk_local *)x)->key, ((const rk_local *)y)->key);
}

static rk_local *local_find(rk_local *ls, size_t len, rk_slice key) {
  size_t lo = 0, hi = len;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = rk_slice_cmp(ls[mid].key, key);
    if (c == 0) return &ls[mid];
    if (c < 0) lo = mid + 1; else hi = mid;
  }
  return NULL;
}

static void entry_write(pb_enc *e, uint32_t field, rk_slice key, const rk_reg *r) {
  size_t m = pb_begin(e, field);
  pb_put_bytes(e, 1, key);
  size_t m2 = pb_begin(e, 2);
  rk_reg_encode(e, r, true);
  pb_end(e, m2);
  pb_end(e, m);
}

/* Fields 1 and 2 of every node-to-node message: its version and its sender. */
static void push_header(pb_enc *e, const ringkv_node *n, uint32_t version) {
  pb_put_uint(e, 1, version);
  pb_put_uint(e, 2, n->self);
}

/* Field 15 of every node-to-node message, whatever its version: the sender's highest
 * version (release 1 skips the field; it is how a peer learns it may write the current
 * version). Written last (fields in number order). */
static void speaks_write(pb_enc *e) { pb_put_uint(e, 15, RINGKV_PROTOCOL_VERSION); }

static bool sib_in(const rk_reg *r, rk_dot d) {
  for (size_t i = 0; i < r->sibs_len; i++) {
    if (rk_dot_cmp(r->sibs[i].dot, d) == 0) return true;
  }
  return false;
}

/* Writes one Applied for a key going from `old` to `next` (next NULL: the row is deleted).
 * New values that lie inside `msg` (the merged message) are given by position, not copied.
 * A marker's row keeps its time of collection (gc_since). */
static void applied_write(pb_enc *e, uint32_t field, ringkv_node *n, rk_slice key, const rk_reg *old,
                          uint64_t old_contrib, const rk_reg *next, rk_slice next_meta, uint64_t new_raw,
                          bool new_expired, rk_slice msg, uint64_t gc_since) {
  uint32_t shard = shard_of(n, rk_hash_slice(key));
  uint64_t new_contrib = new_expired ? 0 : new_raw;
  int rows = (next != NULL ? 1 : 0) - (reg_stored(old) ? 1 : 0);
  uint64_t sd = shard_update(n, shard, old_contrib, next ? new_contrib : 0, rows);
  size_t m = pb_begin(e, field);
  pb_put_bytes(e, 1, key);
  pb_put_uint(e, 2, shard);
  if (next != NULL) pb_put_bytes(e, 3, next_meta);
  pb_put_fixed64(e, 4, old_contrib);
  pb_put_fixed64(e, 5, next ? new_contrib : 0);
  if (next != NULL) {
    for (size_t i = 0; i < next->sibs_len; i++) {
      const rk_sib *s = &next->sibs[i];
      if (s->deleted || sib_in(old, s->dot)) continue;
      size_t mv = pb_begin(e, 6);
      dot_write(e, 1, s->dot);
      bool inside = s->value.len > 0 && msg.len > 0 && s->value.ptr >= msg.ptr &&
                    s->value.ptr + s->value.len <= msg.ptr + msg.len;
      if (inside) {
        pb_put_uint(e, 3, (uint64_t)(s->value.ptr - msg.ptr));
        pb_put_uint(e, 4, s->value.len);
      } else {
        pb_put_bytes(e, 2, s->value);
      }
      pb_end(e, mv);
    }
  }
  for (size_t i = 0; i < old->sibs_len; i++) {
    if (next == NULL || !sib_in(next, old->sibs[i].dot)) dot_write(e, 7, old->sibs[i].dot);
  }
  pb_put_fixed64(e, 8, sd);
  if (next != NULL) key_info_write(e, 9, next, new_raw, new_expired, rk_hash_slice(key));
  pb_put_uint(e, 10, n->shard_keys[shard]);
  if (next != NULL) pb_put_uint(e, 11, gc_since);
  pb_end(e, m);
}

/* Why a peer's entry is not applied. Each is counted by name in MergeReply.refused. */
typedef enum {
  REFUSED_MALFORMED,
  REFUSED_NOT_REPLICA,
  REFUSED_UNKNOWN_NODE,
  REFUSED_DOT_OUT_OF_RANGE,
  REFUSED_FUTURE_DOT,
  REFUSED_HLC_AHEAD,
  REFUSED_HLC_OUT_OF_RANGE,
  REFUSED_NO_VERSION,
  REFUSED_TOO_LARGE,
  REFUSED_REASONS,
} refusal;

static const char *const refusal_names[REFUSED_REASONS] = {
    "malformed", "not_replica", "unknown_node", "dot_out_of_range", "future_dot", "hlc_ahead", "hlc_out_of_range",
    "no_version",
    "too_large",
};

/* Sorting entry indices by key (qsort has no context argument; calls do not nest). */
static const rk_entry *entries_by_key;
static int entry_index_cmp(const void *x, const void *y) {
  return rk_slice_cmp(entries_by_key[*(const size_t *)x].key, entries_by_key[*(const size_t *)y].key);
}

/* Notes what a dot claims (this node's highest, a counter past RINGKV_COUNTER_MAX); true
 * when it names a node id the cluster never had. */
static bool dot_judge(const ringkv_node *n, rk_dot d, uint64_t *own_max, bool *beyond) {
  if (d.node == n->self) *own_max = RK_MAX(*own_max, d.counter);
  *beyond |= d.counter > RINGKV_COUNTER_MAX;
  return d.node >= n->cfg.node_ids_max;
}

/* Judges a peer's register before it is merged: REFUSED_REASONS when it may be applied.
 * *own_max is the highest dot of this node it names (the counter must pass it). */
static refusal entry_judge(const ringkv_node *n, const rk_reg *r, uint64_t now_ms, uint64_t counter_before,
                           uint64_t *own_max) {
  *own_max = 0;
  bool unknown = false, beyond = false;
  for (size_t i = 0; i < r->sibs_len; i++) unknown |= dot_judge(n, r->sibs[i].dot, own_max, &beyond);
  for (size_t i = 0; i < r->ctx.vv_len; i++) unknown |= dot_judge(n, r->ctx.vv[i], own_max, &beyond);
  for (size_t i = 0; i < r->ctx.dots_len; i++) unknown |= dot_judge(n, r->ctx.dots[i], own_max, &beyond);
  if (unknown) return REFUSED_UNKNOWN_NODE;
  if (beyond) return REFUSED_DOT_OUT_OF_RANGE;
  uint64_t skew = n->cfg.max_clock_skew_ms;
  uint64_t bound = rk_hlc_bound(now_ms, skew);
  uint64_t horizon = rk_hlc_bound(rk_add_sat(now_ms, RINGKV_HLC_HORIZON_MS), skew);
  bool ahead = false;
  for (size_t i = 0; i < r->sibs_len; i++) {
    if (r->sibs[i].hlc > horizon) return REFUSED_HLC_OUT_OF_RANGE;
    ahead |= r->sibs[i].hlc > bound;
  }
  if (*own_max > rk_add_sat(counter_before, RINGKV_DOT_CLAIM_MAX)) return REFUSED_FUTURE_DOT;
  return ahead ? REFUSED_HLC_AHEAD : REFUSED_REASONS;
}

/* The merged register within what any node can decode, store and send: siblings, explicit
 * context dots, and value bytes (carried values, else the stored lengths of `l`). */
static bool reg_within_limits(const rk_reg *m, const rk_local *l) {
  if (m->sibs_len > RINGKV_SIBLINGS_MAX || m->ctx.dots_len > RINGKV_CONTEXT_DOTS_MAX) return false;
  uint64_t bytes = 0;
  for (size_t i = 0; i < m->sibs_len; i++) {
    const rk_sib *s = &m->sibs[i];
    if (s->deleted) continue;
    uint64_t b = s->value.len;
    for (size_t j = 0; b == 0 && l != NULL && j < l->sizes_len; j++) {
      if (rk_dot_cmp(l->sizes[j].dot, s->dot) == 0) b = l->sizes[j].bytes;
    }
    bytes = rk_add_sat(bytes, b);
  }
  return bytes <= RINGKV_NODE_KEY_BYTES_MAX;
}

/* Whether a repair request's answer covers `key`: its shard was asked, or it lies in one
 * of the first `ranges_loaded` ranges (the ones whose rows were loaded). */
static bool repair_covers(const ringkv_node *n, const rk_push *p, uint32_t ranges_loaded, rk_slice key) {
  uint64_t h = rk_hash_slice(key);
  uint32_t shard = shard_of(n, h);
  for (size_t s = 0; s < p->shards_len; s++) {
    if (p->shards[s] == shard) return true;
  }
  for (uint32_t r = 0; r < ranges_loaded; r++) {
    if (rk_range_has(&p->ranges[r], shard, h)) return true;
  }
  return false;
}

/* Whether a marker's context covers every version of `r`. */
static bool marker_covers(const rk_reg *marker, const rk_reg *r) {
  for (size_t i = 0; i < r->sibs_len; i++) {
    if (!rk_ctx_covers(&marker->ctx, r->sibs[i].dot)) return false;
  }
  return true;
}

static int op_merge(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true;
  uint64_t now_ms = 0;
  rk_slice msg = {NULL, 0};
  rk_local *locals = NULL;
  size_t locals_len = 0, locals_cap = 0;
  bool answer = false;
  uint32_t entries_from = 0, entries_to = 0, ranges_loaded = 0;
  bool moves = false;
  rk_slice *before = NULL;   /* keys earlier calls on this message deferred */
  size_t before_len = 0, before_cap = 0;
  FIELDS(req) {
    case 1: ok = pb_get_u64(R, WT, &now_ms); break;
    case 2: ok = pb_get_bytes(R, WT, &msg); break;
    case 3: ok = locals_push(a, R, WT, &locals, &locals_len, &locals_cap); break;
    case 4: ok = pb_get_bool(R, WT, &answer); break;
    case 5: ok = pb_get_u32(R, WT, &entries_from); break;
    case 6: ok = pb_get_u32(R, WT, &entries_to); break;
    case 7: {
      rk_slice key;
      ok = pb_get_bytes(R, WT, &key) && key_valid(key) && before_len < RINGKV_ENTRIES_MAX;
      if (!ok) break;
      rk_slice *slot = VEC_PUSH(a, before, before_len, before_cap);
      if (slot == NULL) return RINGKV_E_NOMEM;
      *slot = key;
      break;
    }
    case 8: ok = pb_get_u32(R, WT, &ranges_loaded); break;
    case 9: ok = pb_get_bool(R, WT, &moves); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  rk_push p;
  RK_TRY(push_read(n, msg, &p));
  if (ranges_loaded > p.ranges_len) return RINGKV_E_DECODE;
  /* A push may be merged in ranges of entries (the rows of each range loaded apart); a
   * repair request only whole, since its answer covers every local key of its shards. */
  size_t first = entries_from, end = entries_to == 0 ? p.entries_len : entries_to;
  bool repair = p.shards_len > 0 || p.ranges_len > 0;
  if (first > end || end > p.entries_len || (repair && (first != 0 || end != p.entries_len))) {
    return RINGKV_E_DECODE;
  }
  if (locals_len > 1) qsort(locals, locals_len, sizeof *locals, local_cmp_qsort);
  for (size_t i = 1; i < locals_len; i++) {
    if (rk_slice_eq(locals[i - 1].key, locals[i].key)) return RINGKV_E_DECODE;
  }

  /* Decode every register before touching state. An entry that does not decode (or
   * names a key twice) is refused on its own: the rest of the message still applies. */
  rk_reg *remote = rk_alloc_array(a, p.entries_len + 1, sizeof *remote);
  rk_reg *current = rk_alloc_array(a, locals_len + 1, sizeof *current);
  bool *malformed = rk_zalloc(a, p.entries_len + 1);
  size_t *order = rk_alloc_array(a, p.entries_len + 1, sizeof *order);
  if (remote == NULL || current == NULL || malformed == NULL || order == NULL) return RINGKV_E_NOMEM;
  size_t ranged = 0;
  for (size_t i = first; i < end; i++) {
    int rc = rk_reg_decode(a, p.entries[i].reg, &remote[i]);
    if (rc == RINGKV_E_NOMEM) return rc;
    /* An entry without versions is a marker, in a version that has them, or malformed. */
    bool marker_ok = rk_reg_is_marker(&remote[i]) && p.version >= MARKER_VERSION_MIN;
    malformed[i] = rc != RINGKV_OK || (remote[i].sibs_len == 0 && !marker_ok) || !reg_values_complete(&remote[i]);
    order[ranged++] = i;
  }
  entries_by_key = p.entries;
  if (ranged > 1) qsort(order, ranged, sizeof *order, entry_index_cmp);
  for (size_t k = 1; k < ranged; k++) {
    if (rk_slice_eq(p.entries[order[k - 1]].key, p.entries[order[k]].key)) {
      malformed[order[k - 1]] = true;
      malformed[order[k]] = true;
    }
  }
  /* The answer covers the keys of the asked shards, or of the key ranges loaded: their
   * rows come with values. */
  bool *answers = rk_zalloc(a, locals_len + 1);
  if (answers == NULL) return RINGKV_E_NOMEM;
  for (size_t i = 0; i < locals_len; i++) {
    answers[i] = repair && repair_covers(n, &p, ranges_loaded, locals[i].key);
    RK_TRY(local_reg(a, &locals[i], answers[i], &current[i]));
  }

  pb_enc e;
  pb_enc_init(&e, a);
  rk_slice empty = {NULL, 0};
  rk_reg none;
  memset(&none, 0, sizeof none);
  uint32_t refused[REFUSED_REASONS] = {0};
  /* Claims are judged against the counter as the message found it: one message can raise
   * it by at most RINGKV_DOT_CLAIM_MAX. */
  uint64_t counter_before = n->counter;
  rk_slice *deferred = rk_alloc_array(a, p.entries_len + 1, sizeof *deferred);
  if (deferred == NULL) return RINGKV_E_NOMEM;
  size_t deferred_len = 0;
  for (size_t i = first; i < end; i++) {
    rk_slice key = p.entries[i].key;
    if (malformed[i]) {
      refused[REFUSED_MALFORMED]++;
      continue;
    }
    uint32_t shard = shard_of(n, rk_hash_slice(key));
    if (!is_replica(n, shard, n->self)) {   /* not ours: never stored */
      refused[REFUSED_NOT_REPLICA]++;
      continue;
    }
    const rk_reg *rr = &remote[i];
    uint64_t own_max;
    refusal why = entry_judge(n, rr, now_ms, counter_before, &own_max);
    if (why != REFUSED_REASONS) {
      /* A version from beyond the clock bound waits: the sender is told to send it again,
       * and nothing of it reaches this node's state or clock. */
      refused[why]++;
      if (why == REFUSED_HLC_AHEAD) deferred[deferred_len++] = key;
      continue;
    }
    rk_local *l = local_find(locals, locals_len, key);
    size_t li = l ? (size_t)(l - locals) : 0;
    const rk_reg *old = l ? &current[li] : &none;
    /* A collected key stays collected: an entry whose versions its marker all covers is
     * superseded (a late or repeated copy of what was collected), and dropped. */
    if (rk_reg_is_marker(old) && rr->sibs_len > 0 && marker_covers(old, rr)) continue;
    rk_reg merged;
    RK_TRY(rk_reg_merge(a, old, rr, &merged));
    /* Only contradictory input (each side claims to have superseded the other's
     * versions) merges to nothing, unless one side is a marker (the result is then the
     * marker): refuse such an entry rather than store a register without versions. */
    /* A marker makes no row where there is none: it only turns the tombstones it covers
     * into itself. A replica that deleted its marker (or never held the key) keeps no copy,
     * so markers going round in repairs never outlive their deadline. */
    /* Except where the shard moves to this node (a catch-up or covering page): there the
     * marker comes with the shard, so a late copy of what it collected is still dropped. */
    if (merged.sibs_len == 0 && !reg_stored(old) && !moves) continue;
    if (merged.sibs_len == 0 && !rk_reg_is_marker(old) && !rk_reg_is_marker(rr)) {
      refused[REFUSED_NO_VERSION]++;
      continue;
    }
    /* What is stored must decode and travel again: a merge beyond the core's limits (only
     * hostile input or rows from before the limits get there) is refused. */
    if (!reg_within_limits(&merged, l)) {
      refused[REFUSED_TOO_LARGE]++;
      continue;
    }
    /* Accepted. A peer that names a dot of this node it never handed out (a claim no
     * honest token carries) raises the counter past it, so that no later write of this
     * node is covered already and lost on merge. */
    n->counter = RK_MAX(n->counter, own_max);
    for (size_t k = 0; k < rr->sibs_len; k++) {
      n->clock = rk_hlc_absorb(n->clock, rr->sibs[k].hlc, now_ms, n->cfg.max_clock_skew_ms);
    }
    rk_slice old_meta = l ? l->meta : empty;
    rk_slice new_meta = reg_meta(a, &merged, &err);
    if (err != 0) return err;
    if (rk_slice_eq(old_meta, new_meta) && reg_stored(old)) continue;
    uint64_t old_raw = rk_reg_digest(a, key, old);
    uint64_t old_contrib = (l && l->expired) ? 0 : old_raw;
    uint64_t new_raw = rk_reg_digest(a, key, &merged);
    /* A marker keeps its time of collection here: merging more context into it does not
     * put its deadline off (so copies going round never keep a marker alive). */
    uint64_t since = merged.sibs_len > 0 ? 0 : rk_reg_is_marker(old) ? l->gc_since_ms : now_ms;
    applied_write(&e, 2, n, key, old, old_contrib, &merged, new_meta, new_raw, false, msg, since);
    if (l != NULL) {
      current[li] = merged;
      l->meta = new_meta;
      l->expired = false;
    }
  }
  node_state_write(&e, 1, n);

  if (repair || deferred_len + before_len > 0) {
    /* Answer in the version addressed: a repair request's answer holds our registers in
     * those shards whose state the requester lacks; any answer names the deferred keys. */
    pb_enc r;
    pb_enc_init(&r, a);
    push_header(&r, n, p.version);
    for (size_t i = 0; repair && i < locals_len; i++) {
      rk_slice key = locals[i].key;
      /* Tombstones and markers are sent too: a replica that missed the delete needs them
       * (markers only in a version that has them). */
      if (!answers[i] || !reg_stored(&current[i])) continue;
      if (reg_version_min(&current[i]) > p.version) continue;
      bool same = false;
      for (size_t j = 0; j < p.entries_len; j++) {
        if (!malformed[j] && rk_slice_eq(p.entries[j].key, key)) {
          rk_slice theirs = reg_meta(a, &remote[j], &err);
          same = rk_slice_eq(theirs, locals[i].meta);
          break;
        }
      }
      if (!same) {
        /* Merged registers mix local and remote siblings; both carry their values. */
        entry_write(&r, 3, key, &current[i]);
      }
    }
    /* In every version: release 1 skips the field (and then its entry waits for
     * anti-entropy). */
    for (size_t i = 0; i < before_len; i++) pb_put_bytes_always(&r, 5, before[i]);
    for (size_t i = 0; i < deferred_len; i++) pb_put_bytes_always(&r, 5, deferred[i]);
    speaks_write(&r);
    rk_slice answer = finish(&r, &err);
    if (err != 0) return err;
    pb_put_bytes(&e, 3, answer);
  }
  pb_put_uint(&e, 4, end - first);
  for (uint32_t k = 0; k < REFUSED_REASONS; k++) {
    if (refused[k] == 0) continue;
    size_t m = pb_begin(&e, 5);
    rk_slice name = {(const uint8_t *)refusal_names[k], strlen(refusal_names[k])};
    pb_put_bytes(&e, 1, name);
    pb_put_uint(&e, 2, refused[k]);
    pb_end(&e, m);
  }
  /* Only the answer to a push this node sent asks it to send keys again. */
  for (size_t i = 0; answer && i < p.deferred_len; i++) pb_put_bytes_always(&e, 6, p.deferred[i]);
  for (size_t i = 0; i < deferred_len; i++) pb_put_bytes_always(&e, 7, deferred[i]);
  *reply = finish(&e, &err);
  return err;
}

/* ---------------------------------------------------------------------------------------
 * OP_BUILD_PUSH */

typedef struct {
  uint32_t peer;
  uint64_t acked;
  pb_enc enc;
  uint32_t entries;
  bool shared;   /* gets the round's one shared message (a key too large for a round) */
} peer_out;

static int op_build_push(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true, learned = false;
  uint64_t scanned = 0;
  rk_slice *cands = NULL;
  size_t cands_len = 0, cands_cap = 0;
  peer_out *peers = NULL;
  size_t peers_len = 0, peers_cap = 0;
  rk_slice s;
  FIELDS(req) {
    case 1: {
      ok = pb_get_bytes(R, WT, &s) && cands_len < RINGKV_ENTRIES_MAX;
      if (!ok) break;
      rk_slice *slot = VEC_PUSH(a, cands, cands_len, cands_cap);
      if (slot == NULL) return RINGKV_E_NOMEM;
      *slot = s;
      break;
    }
    case 2: {
      ok = pb_get_bytes(R, WT, &s) && peers_len < RINGKV_CLUSTER_SIZE_MAX;
      if (!ok) break;
      peer_out *slot = VEC_PUSH(a, peers, peers_len, peers_cap);
      if (slot == NULL) return RINGKV_E_NOMEM;
      memset(slot, 0, sizeof *slot);
      FIELDS(s) {
        case 1: ok = pb_get_u32(R, WT, &slot->peer); break;
        case 2: ok = pb_get_u64(R, WT, &slot->acked); break;
        SKIP;
      }
      if (t_ < 0 || slot->peer >= n->cfg.cluster_size || slot->peer == n->self) ok = false;
      break;
    }
    case 3: ok = pb_get_u64(R, WT, &scanned); break;
    case 4: ok = pb_get_bool(R, WT, &learned); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  /* Peer lookup by id. */
  int32_t *peer_index = rk_alloc_array(a, n->cfg.cluster_size, sizeof *peer_index);
  if (peer_index == NULL) return RINGKV_E_NOMEM;
  for (uint32_t i = 0; i < n->cfg.cluster_size; i++) peer_index[i] = -1;
  for (size_t i = 0; i < peers_len; i++) {
    if (peer_index[peers[i].peer] >= 0) return RINGKV_E_DECODE;
    peer_index[peers[i].peer] = (int32_t)i;
    pb_enc_init(&peers[i].enc, a);
  }
  /* Relaying is decided on R, as outside a transition: the old-only targets of a moving
   * shard are pushed to directly as well. */
  uint32_t others = n->cfg.replicas - 1;
  bool relay = others > n->cfg.fanout;
  uint32_t *targets = rk_alloc_array(a, n->cfg.cluster_size + 1, sizeof *targets);
  if (targets == NULL) return RINGKV_E_NOMEM;
  uint64_t round_bytes = 0, last_seq = 0;
  pb_enc shared;
  pb_enc_init(&shared, a);
  for (size_t c = 0; c < cands_len; c++) {
    rk_slice local_bytes = {NULL, 0};
    uint64_t seq = 0;
    bool from_client = false;
    FIELDS(cands[c]) {
      case 1: ok = pb_get_bytes(R, WT, &local_bytes); break;
      case 2: ok = pb_get_u64(R, WT, &seq); break;
      case 3: ok = pb_get_bool(R, WT, &from_client); break;
      SKIP;
    }
    if (!ok || t_ < 0) return RINGKV_E_DECODE;
    rk_local l;
    RK_TRY(local_read(a, local_bytes, &l));
    if (l.meta.len == 0) continue;
    if (!from_client && !relay && !learned) continue;   /* learned changes: anti-entropy covers them */
    uint64_t key_hash = rk_hash_slice(l.key);
    uint32_t shard = shard_of(n, key_hash);
    uint32_t reps_len;
    const uint16_t *reps = replicas_of(n, shard, &reps_len);
    uint32_t nt = 0;
    for (uint32_t i = 0; i < reps_len; i++) {
      if (reps[i] != n->self) targets[nt++] = reps[i];
    }
    if (relay) {
      /* A bounded random subset, seeded from the inputs so a replay chooses the same. */
      uint64_t st = key_hash ^ (seq * UINT64_C(0x9E3779B97F4A7C15)) ^ n->self;
      for (uint32_t i = 0; i < n->cfg.fanout && i < nt; i++) {
        uint32_t j = i + (uint32_t)(rk_mix64(&st) % (nt - i));
        uint32_t tmp = targets[i];
        targets[i] = targets[j];
        targets[j] = tmp;
      }
      nt = RK_MIN(nt, n->cfg.fanout);
    }
    rk_reg reg;
    RK_TRY(local_reg(a, &l, true, &reg));
    /* The peers that still need this version (a marker: only those whose version has
     * markers; an older peer's anti-entropy repairs it in the end). */
    uint32_t nw = 0;
    for (uint32_t i = 0; i < nt; i++) {
      int32_t pi = peer_index[targets[i]];
      if (reg_version_min(&reg) > version_for(n, targets[i])) continue;
      if (pi >= 0 && seq > peers[pi].acked) targets[nw++] = targets[i];
    }
    if (nw == 0) continue;
    pb_enc entry;
    pb_enc_init(&entry, a);
    entry_write(&entry, 3, l.key, &reg);
    if (entry.err != 0) return entry.err;
    /* A round's messages stay within RINGKV_PUSH_ROUND_BYTES_MAX: the scan stops before a
     * key that would pass it (acknowledgements stop there too; the next round starts with
     * it). A key too large for any round goes alone, in one message shared by its peers,
     * so that it is encoded once whatever the replica count. */
    uint64_t cost = (uint64_t)entry.len * nw;
    if (round_bytes + cost > RINGKV_PUSH_ROUND_BYTES_MAX) {
      if (round_bytes > 0) {
        scanned = last_seq;
        break;
      }
      pb_enc_init(&shared, a);
      uint32_t version = RINGKV_PROTOCOL_VERSION;
      for (uint32_t i = 0; i < nw; i++) version = RK_MIN(version, version_for(n, targets[i]));
      push_header(&shared, n, version);
      pb_put_raw(&shared, entry.buf, entry.len);
      speaks_write(&shared);
      if (shared.err != 0) return shared.err;
      for (uint32_t i = 0; i < nw; i++) {
        peer_out *po = &peers[peer_index[targets[i]]];
        po->shared = true;
        po->entries = 1;
      }
      scanned = seq;
      break;
    }
    round_bytes += cost;
    last_seq = seq;
    for (uint32_t i = 0; i < nw; i++) {
      peer_out *po = &peers[peer_index[targets[i]]];
      if (po->enc.len == 0) push_header(&po->enc, n, version_for(n, po->peer));
      pb_put_raw(&po->enc, entry.buf, entry.len);
      po->entries++;
    }
  }
  pb_enc e;
  pb_enc_init(&e, a);
  bool shared_written = false;
  for (size_t i = 0; i < peers_len; i++) {
    if (peers[i].shared) {
      if (shared_written) continue;
      /* One Outgoing for the shared message: its first peer, then the others. */
      size_t m = pb_begin(&e, 1);
      pb_put_uint(&e, 1, peers[i].peer);
      pb_put_bytes(&e, 2, pb_result(&shared));
      pb_put_uint(&e, 3, RK_MAX(scanned, peers[i].acked));
      pb_put_uint(&e, 4, 1);
      size_t also_len = 0;
      for (size_t j = i + 1; j < peers_len; j++) {
        if (peers[j].shared) targets[also_len++] = peers[j].peer;
      }
      pb_put_packed_u32(&e, 5, targets, also_len);   /* packed: node 0 stays visible */
      pb_end(&e, m);
      shared_written = true;
      continue;
    }
    size_t m = pb_begin(&e, 1);
    pb_put_uint(&e, 1, peers[i].peer);
    if (peers[i].enc.len > 0) speaks_write(&peers[i].enc);
    if (peers[i].enc.err != 0) return peers[i].enc.err;
    pb_put_bytes(&e, 2, pb_result(&peers[i].enc));
    pb_put_uint(&e, 3, RK_MAX(scanned, peers[i].acked));
    pb_put_uint(&e, 4, peers[i].entries);
    pb_end(&e, m);
  }
  *reply = finish(&e, &err);
  return err;
}

/* ---------------------------------------------------------------------------------------
 * Anti-entropy */

static uint64_t shard_term(uint32_t shard, uint64_t digest) {
  uint8_t b[12];
  rk_le32(b, shard);
  rk_le64(b + 4, digest);
  return rk_hash(b, sizeof b);
}

/* The shards this node shares with `peer`, ascending: both sides compute the same list.
 * Anti-entropy cuts it into buckets of RINGKV_AE_BUCKET_SHARDS: bucket i is
 * shared[i * 64 .. i * 64 + 63]. */
typedef struct {
  uint32_t *shards;
  size_t len;
  size_t buckets;
} shared_set;

static int shared_get(ringkv_node *n, uint32_t peer, shared_set *out) {
  out->shards = rk_alloc_array(&n->arena, n->my_shards_len + 1, sizeof *out->shards);
  out->len = 0;
  out->buckets = 0;
  if (out->shards == NULL) return RINGKV_E_NOMEM;
  for (size_t i = 0; i < n->my_shards_len; i++) {
    uint32_t s = n->my_shards[i];
    if (is_replica(n, s, peer)) out->shards[out->len++] = s;
  }
  out->buckets = (out->len + RINGKV_AE_BUCKET_SHARDS - 1) / RINGKV_AE_BUCKET_SHARDS;
  return RINGKV_OK;
}

/* A bucket's digest: a sum of per-shard hashes, so shards, not only their digests, are
 * bound into it. The root is the sum over every bucket. */
static uint64_t bucket_digest(const ringkv_node *n, const shared_set *sh, size_t bucket) {
  uint64_t d = 0;
  size_t lo = bucket * RINGKV_AE_BUCKET_SHARDS, hi = lo + RINGKV_AE_BUCKET_SHARDS;
  if (hi > sh->len) hi = sh->len;
  for (size_t i = lo; i < hi; i++) d += shard_term(sh->shards[i], n->shard_digest[sh->shards[i]]);
  return d;
}

static uint64_t shared_root(const ringkv_node *n, const shared_set *sh) {
  uint64_t root = 0;
  for (size_t b = 0; b < sh->buckets; b++) root += bucket_digest(n, sh, b);
  return root;
}

/* Buckets named in a request: at most RINGKV_AE_BUCKETS_MAX, strictly ascending. */
typedef struct {
  uint32_t v[RINGKV_AE_BUCKETS_MAX];
  size_t len;
} bucket_list;

static bool bucket_list_push(void *ctx, uint32_t v) {
  bucket_list *b = ctx;
  if (b->len >= RINGKV_AE_BUCKETS_MAX || (b->len > 0 && v <= b->v[b->len - 1])) return false;
  b->v[b->len++] = v;
  return true;
}

static int buckets_check(const bucket_list *b, const shared_set *sh) {
  return b->len == 0 || b->v[b->len - 1] < sh->buckets ? RINGKV_OK : RINGKV_E_DECODE;
}

static void shard_digests_write(pb_enc *m, const ringkv_node *n, const shared_set *sh, size_t bucket) {
  size_t lo = bucket * RINGKV_AE_BUCKET_SHARDS, hi = lo + RINGKV_AE_BUCKET_SHARDS;
  if (hi > sh->len) hi = sh->len;
  for (size_t i = lo; i < hi; i++) {
    uint32_t s = sh->shards[i];
    size_t mk = pb_begin(m, 4);
    pb_put_uint(m, 1, s);
    pb_put_fixed64(m, 2, n->shard_digest[s]);
    pb_put_uint(m, 3, n->shard_keys[s]);   /* version 3: sizes the narrowing */
    pb_end(m, mk);
  }
}

static int peer_id_read(const ringkv_node *n, uint32_t peer) {
  return peer < n->cfg.cluster_size && peer != n->self ? RINGKV_OK : RINGKV_E_DECODE;
}

/* Ranges of a DigestRequest: ordered and disjoint (each row is read once), of shards both
 * nodes replicate, and cut-able in parts. */
static int ranges_check(const ringkv_node *n, uint32_t peer, const rk_range *r, size_t len) {
  if (!rk_ranges_ordered(r, len)) return RINGKV_E_DECODE;
  for (size_t i = 0; i < len; i++) {
    if (r[i].bits < RINGKV_AE_PART_BITS || !is_replica(n, r[i].shard, n->self) || !is_replica(n, r[i].shard, peer)) {
      return RINGKV_E_DECODE;
    }
  }
  return RINGKV_OK;
}

static int op_ae_start(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true;
  uint32_t peer = 0;
  bucket_list bl;
  bl.len = 0;
  rk_range *ranges = NULL;
  size_t ranges_len = 0, ranges_cap = 0;
  FIELDS(req) {
    case 1: ok = pb_get_u32(R, WT, &peer); break;
    case 2: ok = pb_get_repeated_u32(R, WT, bucket_list_push, &bl); break;
    case 3: ok = range_push(a, n, R, WT, &ranges, &ranges_len, &ranges_cap); break;
    SKIP;
  }
  if (a->failed) return RINGKV_E_NOMEM;
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  RK_TRY(peer_id_read(n, peer));
  shared_set sh;
  RK_TRY(shared_get(n, peer, &sh));
  RK_TRY(buckets_check(&bl, &sh));
  RK_TRY(ranges_check(n, peer, ranges, ranges_len));
  uint32_t version = version_for(n, peer);
  /* Ranges only to a peer that reads them. */
  if (ranges_len > 0 && (version < 3u || bl.len > 0)) return RINGKV_E_STATE;
  pb_enc m;
  pb_enc_init(&m, a);
  push_header(&m, n, version);
  if (ranges_len == 0) pb_put_fixed64(&m, 3, shared_root(n, &sh));
  pb_put_packed_u32(&m, 4, bl.v, bl.len);
  for (size_t i = 0; i < ranges_len; i++) rk_range_write(&m, 5, &ranges[i]);
  speaks_write(&m);
  rk_slice msg = finish(&m, &err);
  pb_enc e;
  pb_enc_init(&e, &n->arena);
  pb_put_bytes(&e, 1, msg);
  *reply = finish(&e, &err);
  return err;
}

/* Appends a RangeParts to a list of at most RINGKV_AE_RANGES_MAX. */
static bool parts_push(rk_arena *a, pb_rd *r, uint32_t wt, rk_parts **arr, size_t *len, size_t *cap) {
  rk_slice s;
  if (!pb_get_bytes(r, wt, &s) || *len >= RINGKV_AE_RANGES_MAX) return false;
  rk_parts *slot = VEC_PUSH(a, *arr, *len, *cap);
  return slot != NULL && rk_parts_read(s, slot);
}

static int op_ae_answer(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true;
  rk_slice msg = {NULL, 0};
  rk_parts *parts = NULL;
  size_t parts_len = 0, parts_cap = 0;
  bool parts_given = false;
  FIELDS(req) {
    case 1: ok = pb_get_bytes(R, WT, &msg); break;
    case 2: ok = parts_push(a, R, WT, &parts, &parts_len, &parts_cap); parts_given = true; break;
    SKIP;
  }
  if (a->failed) return RINGKV_E_NOMEM;
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  uint32_t version = 0, from = 0, speaks = 0;
  uint64_t root = 0;
  bucket_list bl;
  bl.len = 0;
  rk_range *ranges = NULL;
  size_t ranges_len = 0, ranges_cap = 0;
  FIELDS(msg) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &from); break;
    case 3: ok = pb_get_fixed64(R, WT, &root); break;
    case 4: ok = pb_get_repeated_u32(R, WT, bucket_list_push, &bl); break;
    case 5: ok = range_push(a, n, R, WT, &ranges, &ranges_len, &ranges_cap); break;
    case 15: ok = pb_get_u32(R, WT, &speaks); break;
    SKIP;
  }
  if (a->failed) return RINGKV_E_NOMEM;
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  RK_TRY(version_check(version));
  RK_TRY(peer_id_read(n, from));
  if (ranges_len > 0 && (version < 3u || bl.len > 0)) return RINGKV_E_DECODE;
  RK_TRY(ranges_check(n, from, ranges, ranges_len));
  peer_heard(n, from, version, speaks);
  shared_set sh;
  RK_TRY(shared_get(n, from, &sh));
  RK_TRY(buckets_check(&bl, &sh));
  pb_enc m;
  pb_enc_init(&m, a);
  if (ranges_len > 0 && !parts_given) {
    /* The parts come from storage: the caller loads them and calls again. */
    for (size_t i = 0; i < ranges_len; i++) rk_range_write(&m, 2, &ranges[i]);
    *reply = finish(&m, &err);
    return err;
  }
  if (ranges_len > 0 && parts_len != ranges_len) return RINGKV_E_STATE;
  push_header(&m, n, version);
  if (ranges_len > 0) {
    for (size_t i = 0; i < parts_len; i++) rk_parts_write(&m, 6, &parts[i]);
  } else if (shared_root(n, &sh) == root) {
    pb_put_bool(&m, 3, true);
  } else if (bl.len > 0) {
    for (size_t i = 0; i < bl.len; i++) shard_digests_write(&m, n, &sh, bl.v[i]);
  } else if (sh.buckets <= 1) {
    /* One bucket: its shard digests straight away, not a round trip for one digest. */
    if (sh.buckets == 1) shard_digests_write(&m, n, &sh, 0);
  } else {
    /* Packed fixed64: every bucket's digest in bucket order. */
    pb_put_varint_raw(&m, (5u << 3) | PB_LEN);
    pb_put_varint_raw(&m, sh.buckets * 8u);
    for (size_t b = 0; b < sh.buckets; b++) {
      uint8_t le[8];
      rk_le64(le, bucket_digest(n, &sh, b));
      pb_put_raw(&m, le, sizeof le);
    }
  }
  speaks_write(&m);
  rk_slice out = finish(&m, &err);
  pb_enc e;
  pb_enc_init(&e, &n->arena);
  pb_put_bytes(&e, 1, out);
  *reply = finish(&e, &err);
  return err;
}

/* Appends bucket digests from DigestReply field 5, packed or not. */
static bool bucket_digests_read(rk_arena *a, pb_rd *r, uint32_t wt, uint64_t **arr, size_t *len, size_t *cap) {
  const size_t limit = RINGKV_SHARDS_MAX / RINGKV_AE_BUCKET_SHARDS;
  if (wt == PB_I64) {
    uint64_t d;
    if (!pb_get_fixed64(r, wt, &d) || *len >= limit) return false;
    uint64_t *slot = VEC_PUSH(a, *arr, *len, *cap);
    if (slot == NULL) return false;
    *slot = d;
    return true;
  }
  rk_slice s;
  if (!pb_get_bytes(r, wt, &s) || s.len % 8 != 0 || *len + s.len / 8 > limit) return false;
  for (size_t i = 0; i < s.len; i += 8) {
    uint64_t d = 0;
    for (int k = 7; k >= 0; k--) d = d << 8 | s.ptr[i + (size_t)k];
    uint64_t *slot = VEC_PUSH(a, *arr, *len, *cap);
    if (slot == NULL) return false;
    *slot = d;
  }
  return true;
}

/* A DigestReply to a request for ranges: the peer's parts against this node's own. Only
 * digests say what differs (counts size the work: an expired key contributes nothing,
 * whether or not it was collected). A differing range is a leaf, repaired whole, when it
 * holds at most leaf_keys key rows on both sides, or none on one side (cutting it would
 * find every part different); otherwise its differing parts are, or are cut again. Leaves
 * are taken from a random one on while they fit the repair's rows budget (what does not
 * fit waits for the next exchange); a leaf too large for any repair is cut instead. */
typedef struct {
  rk_range range;
  uint64_t rows;   /* the larger side's key rows */
} leaf_candidate;

static void leaf_or_next(leaf_candidate *c, size_t *c_len, pb_enc *next, rk_range r, uint64_t mine, uint64_t theirs,
                         uint32_t leaf_keys, uint64_t rows_max) {
  uint64_t rows = RK_MAX(mine, theirs);
  bool leaf = rows <= leaf_keys || RK_MIN(mine, theirs) == 0 || r.bits < RINGKV_AE_PART_BITS;
  if (leaf && (rows <= rows_max || r.bits < RINGKV_AE_PART_BITS)) {
    c[*c_len].range = r;
    c[*c_len].rows = rows;
    (*c_len)++;
  } else {
    rk_range_write(next, 5, &r);
  }
}

static int ae_compare_parts(ringkv_node *n, rk_slice msg, const rk_range *asked, const rk_parts *own, size_t len,
                            const uint64_t *limits, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true;
  uint32_t version = 0, from = 0, speaks = 0;
  rk_parts *theirs = NULL;
  size_t theirs_len = 0, theirs_cap = 0;
  FIELDS(msg) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &from); break;
    case 6: ok = parts_push(a, R, WT, &theirs, &theirs_len, &theirs_cap); break;
    case 15: ok = pb_get_u32(R, WT, &speaks); break;
    SKIP;
  }
  if (a->failed) return RINGKV_E_NOMEM;
  if (!ok || t_ < 0 || theirs_len != len) return RINGKV_E_DECODE;
  RK_TRY(version_check(version));
  RK_TRY(peer_id_read(n, from));
  peer_heard(n, from, version, speaks);
  uint32_t leaf_keys = (uint32_t)limits[0];
  uint64_t budget = limits[1], leaves_max = limits[2], rnd = limits[3], rows_max = limits[4];
  leaf_candidate *cand = rk_alloc_array(a, len * RINGKV_AE_PARTS + 1, sizeof *cand);
  if (cand == NULL) return RINGKV_E_NOMEM;
  size_t cand_len = 0;
  pb_enc e, next;
  pb_enc_init(&e, a);
  pb_enc_init(&next, a);
  bool differ = false;
  for (size_t i = 0; i < len; i++) {
    uint64_t mine_total = 0, their_total = 0;
    bool same = true;
    for (uint32_t k = 0; k < RINGKV_AE_PARTS; k++) {
      mine_total = rk_add_sat(mine_total, own[i].counts[k]);
      their_total = rk_add_sat(their_total, theirs[i].counts[k]);
      same = same && own[i].digests[k] == theirs[i].digests[k];
    }
    if (same) continue;
    differ = true;
    uint64_t rows = RK_MAX(mine_total, their_total);
    if ((rows <= leaf_keys || RK_MIN(mine_total, their_total) == 0) && rows <= rows_max) {
      leaf_or_next(cand, &cand_len, &next, asked[i], mine_total, their_total, leaf_keys, rows_max);
      continue;
    }
    for (uint32_t k = 0; k < RINGKV_AE_PARTS; k++) {
      if (own[i].digests[k] == theirs[i].digests[k]) continue;
      leaf_or_next(cand, &cand_len, &next, rk_range_part(asked[i], k), own[i].counts[k], theirs[i].counts[k],
                   leaf_keys, rows_max);
    }
  }
  uint64_t taken_rows = 0, taken = 0;
  size_t from_i = cand_len > 0 ? (size_t)(rnd % cand_len) : 0;
  for (size_t j = 0; j < cand_len && taken < leaves_max; j++) {
    const leaf_candidate *c = &cand[(from_i + j) % cand_len];
    if (taken_rows + c->rows > budget && taken > 0) continue;
    if (taken_rows + c->rows > budget && c->rows <= rows_max) continue;
    rk_range_write(&e, 4, &c->range);
    taken_rows += c->rows;
    taken++;
  }
  pb_put_bool(&e, 1, !differ);
  rk_slice nx = pb_result(&next);
  pb_put_raw(&e, nx.ptr, nx.len);
  if (next.err) return next.err;
  pb_put_uint(&e, 6, taken_rows);
  *reply = finish(&e, &err);
  return err;
}

static int op_ae_compare(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true;
  rk_slice msg = {NULL, 0}, sd;
  uint32_t shards_max = 0;
  uint64_t limits[5] = {0};   /* leaf_keys, rows_budget, leaves_max, random, rows_max */
  rk_range *asked = NULL;
  rk_parts *own = NULL;
  size_t asked_len = 0, asked_cap = 0, own_len = 0, own_cap = 0;
  FIELDS(req) {
    case 1: ok = pb_get_bytes(R, WT, &msg); break;
    case 2: ok = pb_get_u32(R, WT, &shards_max); break;
    case 3: ok = range_push(a, n, R, WT, &asked, &asked_len, &asked_cap); break;
    case 4: ok = parts_push(a, R, WT, &own, &own_len, &own_cap); break;
    case 5: case 6: case 7: case 8: case 9: ok = pb_get_u64(R, WT, &limits[f_ - 5]); break;
    SKIP;
  }
  if (a->failed) return RINGKV_E_NOMEM;
  if (!ok || t_ < 0 || own_len != asked_len) return RINGKV_E_DECODE;
  for (size_t i = 0; i < asked_len; i++) {
    if (asked[i].bits < RINGKV_AE_PART_BITS) return RINGKV_E_DECODE;   /* never asked: not cut-able */
  }
  if (asked_len > 0) return ae_compare_parts(n, msg, asked, own, asked_len, limits, reply);
  uint32_t version = 0, from = 0;
  bool equal = false;
  uint32_t *diff = NULL;
  uint64_t *diff_theirs = NULL;   /* the peer's key rows in each differing shard */
  size_t diff_len = 0, diff_cap = 0, theirs_cap = 0, seen = 0;
  uint64_t *bd = NULL;
  size_t bd_len = 0, bd_cap = 0;
  uint32_t buckets[RINGKV_AE_BUCKETS_MAX];
  size_t buckets_len = 0;
  /* Validate the version before reading shard lists, then collect differences. */
  uint32_t speaks = 0;
  FIELDS(msg) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &from); break;
    case 3: ok = pb_get_bool(R, WT, &equal); break;
    case 15: ok = pb_get_u32(R, WT, &speaks); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  RK_TRY(version_check(version));
  RK_TRY(peer_id_read(n, from));
  peer_heard(n, from, version, speaks);
  if (!equal) {
    FIELDS(msg) {
      case 4: {
        ok = pb_get_bytes(R, WT, &sd) && ++seen <= RINGKV_SHARDS_MAX;
        if (!ok) break;
        uint32_t shard = 0;
        uint64_t digest = 0, keys = UINT64_MAX;   /* a peer before version 3: unknown */
        FIELDS(sd) {
          case 1: ok = pb_get_u32(R, WT, &shard); break;
          case 2: ok = pb_get_fixed64(R, WT, &digest); break;
          case 3: ok = pb_get_u64(R, WT, &keys); break;
          SKIP;
        }
        if (!ok || t_ < 0 || shard >= n->cfg.shards) {
          ok = false;
          break;
        }
        if (!is_replica(n, shard, n->self) || !is_replica(n, shard, from)) break;
        if (n->shard_digest[shard] != digest && diff_len < shards_max) {
          size_t l2 = diff_len;
          uint32_t *slot = VEC_PUSH(a, diff, diff_len, diff_cap);
          uint64_t *kslot = VEC_PUSH(a, diff_theirs, l2, theirs_cap);
          if (slot == NULL || kslot == NULL) return RINGKV_E_NOMEM;
          *slot = shard;
          *kslot = keys;
        }
        break;
      }
      case 5: ok = bucket_digests_read(a, R, WT, &bd, &bd_len, &bd_cap); break;
      SKIP;
    }
    if (a->failed) return RINGKV_E_NOMEM;
    if (!ok || t_ < 0) return RINGKV_E_DECODE;
    if (bd_len > 0) {
      shared_set sh;
      RK_TRY(shared_get(n, from, &sh));
      if (bd_len != sh.buckets) return RINGKV_E_DECODE;
      for (size_t b = 0; b < sh.buckets && buckets_len < RINGKV_AE_BUCKETS_MAX; b++) {
        if (bucket_digest(n, &sh, b) != bd[b]) buckets[buckets_len++] = (uint32_t)b;
      }
    }
  }
  pb_enc e;
  pb_enc_init(&e, a);
  pb_put_bool(&e, 1, diff_len == 0 && buckets_len == 0);
  pb_put_packed_u32(&e, 2, diff, diff_len);
  pb_put_packed_u32(&e, 3, buckets, buckets_len);
  if (diff_len > 0) {
    /* Key rows in each differing shard, here and at the peer (UINT64_MAX: not said). */
    size_t m = pb_begin(&e, 7);
    for (size_t i = 0; i < diff_len; i++) pb_put_varint_raw(&e, n->shard_keys[diff[i]]);
    pb_end(&e, m);
    m = pb_begin(&e, 8);
    for (size_t i = 0; i < diff_len; i++) pb_put_varint_raw(&e, diff_theirs[i]);
    pb_end(&e, m);
  }
  *reply = finish(&e, &err);
  return err;
}

static int op_ae_repair(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true;
  uint32_t peer = 0;
  rk_push want;
  memset(&want, 0, sizeof want);
  shard_sink sink = {a, &want, 0, n->cfg.shards};
  rk_local *locals = NULL;
  size_t locals_len = 0, locals_cap = 0, ranges_cap = 0;
  FIELDS(req) {
    case 1: ok = pb_get_u32(R, WT, &peer); break;
    case 2: ok = pb_get_repeated_u32(R, WT, shard_sink_push, &sink); break;
    case 3: ok = locals_push(a, R, WT, &locals, &locals_len, &locals_cap); break;
    case 4: ok = range_push(a, n, R, WT, &want.ranges, &want.ranges_len, &ranges_cap); break;
    SKIP;
  }
  if (a->failed) return RINGKV_E_NOMEM;
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  RK_TRY(peer_id_read(n, peer));
  uint32_t version = version_for(n, peer);
  if (want.ranges_len > 0 && (version < 3u || want.shards_len > 0 || !rk_ranges_ordered(want.ranges, want.ranges_len))) {
    return RINGKV_E_STATE;
  }
  pb_enc m;
  pb_enc_init(&m, a);
  push_header(&m, n, version);
  for (size_t i = 0; i < locals_len; i++) {
    if (locals[i].meta.len == 0) continue;
    if (!repair_covers(n, &want, (uint32_t)want.ranges_len, locals[i].key)) continue;
    rk_reg reg;
    RK_TRY(local_reg(a, &locals[i], true, &reg));
    if (reg_version_min(&reg) > version) continue;
    entry_write(&m, 3, locals[i].key, &reg);
  }
  pb_put_packed_u32(&m, 4, want.shards, want.shards_len);
  for (size_t i = 0; i < want.ranges_len; i++) rk_range_write(&m, 6, &want.ranges[i]);
  speaks_write(&m);
  rk_slice msg = finish(&m, &err);
  pb_enc e;
  pb_enc_init(&e, a);
  pb_put_bytes(&e, 1, msg);
  *reply = finish(&e, &err);
  return err;
}

/* OP_PAGE_PUSH: a plain Push (no shards, no ranges) of every given row that holds a state:
 * a catch-up page's entries (catchup.c). */
static int op_page_push(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int t_, err = 0;
  bool ok = true;
  uint32_t peer = 0;
  rk_local *locals = NULL;
  size_t locals_len = 0, locals_cap = 0;
  FIELDS(req) {
    case 1: ok = pb_get_u32(R, WT, &peer); break;
    case 3: ok = locals_push(a, R, WT, &locals, &locals_len, &locals_cap); break;
    SKIP;
  }
  if (a->failed) return RINGKV_E_NOMEM;
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  RK_TRY(peer_id_read(n, peer));
  pb_enc m;
  pb_enc_init(&m, a);
  uint32_t version = version_for(n, peer);
  push_header(&m, n, version);
  uint64_t entries = 0;
  for (size_t i = 0; i < locals_len; i++) {
    if (locals[i].meta.len == 0) continue;
    rk_reg reg;
    RK_TRY(local_reg(a, &locals[i], true, &reg));
    if (reg_version_min(&reg) > version) continue;
    entry_write(&m, 3, locals[i].key, &reg);
    entries++;
  }
  speaks_write(&m);
  rk_slice msg = finish(&m, &err);
  pb_enc e;
  pb_enc_init(&e, a);
  pb_put_bytes(&e, 1, msg);
  pb_put_uint(&e, 2, entries);
  *reply = finish(&e, &err);
  return err;
}

/* ---------------------------------------------------------------------------------------
 * Tombstone collection and expiry */

typedef struct {
  uint64_t now_ms;
  rk_local *locals;
  size_t locals_len;
  rk_slice *extra;      /* GcAnswer: the message; GcDecide: the replies */
  size_t extra_len;
} rows_req;

/* Field 1 is now_ms, or (GcAnswerRequest) the message; field 2 the rows; field 3 replies. */
static int rows_req_read(ringkv_node *n, rk_slice req, bool field1_is_message, rows_req *out) {
  rk_arena *a = &n->arena;
  int t_;
  bool ok = true;
  size_t cap = 0, xcap = 0;
  rk_slice s;
  memset(out, 0, sizeof *out);
  FIELDS(req) {
    case 1:
      if (!field1_is_message) {
        ok = pb_get_u64(R, WT, &out->now_ms);
      } else {
        ok = pb_get_bytes(R, WT, &s);
        rk_slice *slot = ok ? VEC_PUSH(a, out->extra, out->extra_len, xcap) : NULL;
        if (ok && slot == NULL) return RINGKV_E_NOMEM;
        if (ok) *slot = s;
      }
      break;
    case 2: ok = locals_push(a, R, WT, &out->locals, &out->locals_len, &cap); break;
    case 3:
      ok = pb_get_bytes(R, WT, &s) && out->extra_len < RINGKV_CLUSTER_SIZE_MAX;
      if (ok) {
        rk_slice *slot = VEC_PUSH(a, out->extra, out->extra_len, xcap);
        if (slot == NULL) return RINGKV_E_NOMEM;
        *slot = s;
      }
      break;
    SKIP;
  }
  return ok && t_ >= 0 ? RINGKV_OK : RINGKV_E_DECODE;
}

/* Markers older than 10 x the grace are deleted (a version delayed longer can come back,
 * as documented); a row an earlier release gave a contribution of 0 gets its own back. */
static int op_expire(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int err = 0;
  rows_req q;
  RK_TRY(rows_req_read(n, req, false, &q));
  uint64_t keep_ms = rk_marker_keep_ms(n);
  pb_enc e;
  pb_enc_init(&e, a);
  rk_slice none = {NULL, 0};
  for (size_t i = 0; i < q.locals_len; i++) {
    rk_local *l = &q.locals[i];
    rk_reg reg;
    RK_TRY(local_reg(a, l, false, &reg));
    uint64_t raw = rk_reg_digest(a, l->key, &reg);
    uint64_t contrib = l->expired ? 0 : raw;
    if (rk_reg_is_marker(&reg) && rk_add_sat(l->gc_since_ms, keep_ms) <= q.now_ms) {
      applied_write(&e, 1, n, l->key, &reg, contrib, NULL, none, 0, false, none, 0);
    } else if (l->expired && reg_stored(&reg)) {
      applied_write(&e, 1, n, l->key, &reg, 0, &reg, l->meta, raw, false, none, l->gc_since_ms);
    }
  }
  *reply = finish(&e, &err);
  return err;
}

/* A replica leaving a shard, its covering passes done, deletes its rows of it, whatever
 * they hold (markers too): one delete per row given, in order. A row of a shard it does not
 * leave is a bug of the caller, never dropped. */
static int op_drop(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int err = 0;
  rows_req q;
  RK_TRY(rows_req_read(n, req, false, &q));
  pb_enc e;
  pb_enc_init(&e, a);
  rk_slice none = {NULL, 0};
  for (size_t i = 0; i < q.locals_len; i++) {
    rk_local *l = &q.locals[i];
    if (l->meta.len == 0) return RINGKV_E_DECODE;
    if (!rk_leaves_shard(n, shard_of(n, rk_hash_slice(l->key)), n->self)) return RINGKV_E_STATE;
    rk_reg reg;
    RK_TRY(local_reg(a, l, false, &reg));
    uint64_t contrib = l->expired ? 0 : rk_reg_digest(a, l->key, &reg);
    applied_write(&e, 1, n, l->key, &reg, contrib, NULL, none, 0, false, none, 0);
  }
  *reply = finish(&e, &err);
  return err;
}

/* A KeyDigest: a query's (ctx, version 4) or a reply's (covered and asked, version 4). */
static void key_digest_write(pb_enc *e, uint32_t field, rk_slice key, uint64_t digest, const rk_ctx *ctx,
                             bool covered, uint64_t asked) {
  size_t m = pb_begin(e, field);
  pb_put_bytes(e, 1, key);
  pb_put_fixed64(e, 2, digest);
  if (ctx != NULL) {
    size_t c = pb_begin(e, 3);
    rk_ctx_encode(e, ctx);
    pb_end_omit_empty(e, 3, c);
  }
  pb_put_bool(e, 4, covered);
  if (asked != 0) pb_put_fixed64(e, 5, asked);
  pb_end(e, m);
}

/* A row collection considers: every version a tombstone. */
static bool collectable(const rk_reg *r) { return r->sibs_len > 0 && rk_reg_all_deleted(r); }

static int op_gc_query(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int err = 0;
  rows_req q;
  RK_TRY(rows_req_read(n, req, false, &q));
  pb_enc *per_peer = rk_zalloc(a, n->cfg.cluster_size * sizeof *per_peer);
  uint32_t *peer_ver = rk_zalloc(a, n->cfg.cluster_size * sizeof *peer_ver);
  if (per_peer == NULL || peer_ver == NULL) return RINGKV_E_NOMEM;
  for (size_t i = 0; i < q.locals_len; i++) {
    rk_local *l = &q.locals[i];
    rk_reg reg;
    RK_TRY(local_reg(a, l, false, &reg));
    if (!collectable(&reg)) continue;
    uint32_t shard = shard_of(n, rk_hash_slice(l->key)), reps_len;
    if (shard_moving(n, shard)) continue;   /* collection pauses for moving shards */
    uint64_t raw = rk_reg_digest(a, l->key, &reg);
    const uint16_t *reps = replicas_of(n, shard, &reps_len);
    for (uint32_t r = 0; r < reps_len; r++) {
      if (reps[r] == n->self) continue;
      pb_enc *pe = &per_peer[reps[r]];
      if (pe->arena == NULL) {
        pb_enc_init(pe, a);
        peer_ver[reps[r]] = version_for(n, reps[r]);
        push_header(pe, n, peer_ver[reps[r]]);
      }
      key_digest_write(pe, 3, l->key, raw, peer_ver[reps[r]] >= MARKER_VERSION_MIN ? &reg.ctx : NULL, false, 0);
    }
  }
  pb_enc e;
  pb_enc_init(&e, a);
  for (uint32_t p = 0; p < n->cfg.cluster_size; p++) {
    if (per_peer[p].arena == NULL) continue;
    speaks_write(&per_peer[p]);
    rk_slice msg = finish(&per_peer[p], &err);
    size_t m = pb_begin(&e, 1);
    pb_put_uint(&e, 1, p);
    pb_put_bytes(&e, 2, msg);
    pb_end(&e, m);
  }
  *reply = finish(&e, &err);
  return err;
}

typedef struct {
  rk_slice key;
  uint64_t digest;
  rk_slice context;   /* a query's (version 4) */
  bool covered;       /* a reply's (version 4) */
  uint64_t asked;     /* a reply's (version 4): the state `covered` is about */
} key_digest;

/* Reads a GcQuery/GcReply: version check, sender, and its KeyDigest list. */
static int gc_message_read(ringkv_node *n, rk_slice msg, uint32_t *from, uint32_t *version_out, key_digest **keys,
                           size_t *len) {
  rk_arena *a = &n->arena;
  int t_;
  bool ok = true;
  uint32_t version = 0, speaks = 0;
  size_t cap = 0;
  rk_slice kd;
  *keys = NULL;
  *len = 0;
  *from = 0;
  FIELDS(msg) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, from); break;
    case 3: {
      ok = pb_get_bytes(R, WT, &kd) && *len < RINGKV_ENTRIES_MAX;
      if (!ok) break;
      key_digest *k = VEC_PUSH(a, *keys, *len, cap);
      if (k == NULL) return RINGKV_E_NOMEM;
      memset(k, 0, sizeof *k);
      FIELDS(kd) {
        case 1: ok = pb_get_bytes(R, WT, &k->key); break;
        case 2: ok = pb_get_fixed64(R, WT, &k->digest); break;
        case 3: ok = pb_get_bytes(R, WT, &k->context); break;
        case 4: ok = pb_get_bool(R, WT, &k->covered); break;
        case 5: ok = pb_get_fixed64(R, WT, &k->asked); break;
        SKIP;
      }
      if (t_ < 0 || !key_valid(k->key)) ok = false;
      break;
    }
    case 15: ok = pb_get_u32(R, WT, &speaks); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  RK_TRY(version_check(version));
  RK_TRY(peer_id_read(n, *from));
  peer_heard(n, *from, version, speaks);
  *version_out = version;
  return RINGKV_OK;
}

/* Whether `big` covers every dot of `small` (normalised: a vv entry below c leaves its
 * next dot uncovered, since such a dot would have been folded into it). */
static bool ctx_includes(const rk_ctx *big, const rk_ctx *small) {
  for (size_t i = 0; i < small->vv_len; i++) {
    uint64_t have = 0;
    for (size_t j = 0; j < big->vv_len; j++) {
      if (big->vv[j].node == small->vv[i].node) have = big->vv[j].counter;
    }
    if (have < small->vv[i].counter) return false;
  }
  for (size_t i = 0; i < small->dots_len; i++) {
    if (!rk_ctx_covers(big, small->dots[i])) return false;
  }
  return true;
}

static int op_gc_answer(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int err = 0;
  rows_req q;
  RK_TRY(rows_req_read(n, req, true, &q));
  if (q.extra_len != 1) return RINGKV_E_DECODE;
  uint32_t from, version;
  key_digest *keys;
  size_t len;
  RK_TRY(gc_message_read(n, q.extra[0], &from, &version, &keys, &len));
  if (q.locals_len > 1) qsort(q.locals, q.locals_len, sizeof *q.locals, local_cmp_qsort);
  pb_enc m;
  pb_enc_init(&m, a);
  push_header(&m, n, version);
  for (size_t i = 0; i < len; i++) {
    /* A shard this node is still catching up on: it may hold less than it will, so it
     * vouches for nothing there (no answer leaves the key undecided at the asker). */
    if (rk_step_caught_up(n, shard_of(n, rk_hash_slice(keys[i].key))) != RINGKV_OK) continue;
    rk_local *l = local_find(q.locals, q.locals_len, keys[i].key);
    uint64_t raw = 0;
    bool covered = false;
    if (l != NULL) {
      rk_reg reg;
      RK_TRY(local_reg(a, l, false, &reg));
      raw = rk_reg_digest(a, keys[i].key, &reg);
      if (rk_reg_is_marker(&reg) && version >= MARKER_VERSION_MIN && keys[i].context.len > 0) {
        /* The asker's state is covered when merging it into the marker changes nothing:
         * the marker's context includes the state's (which covers its versions). */
        rk_ctx theirs;
        int rc = rk_ctx_decode(a, keys[i].context, &theirs);
        if (rc == RINGKV_E_NOMEM) return rc;
        if (rc != RINGKV_OK) return RINGKV_E_DECODE;
        covered = ctx_includes(&reg.ctx, &theirs);
      }
    }
    key_digest_write(&m, 3, keys[i].key, raw, NULL, covered, version >= MARKER_VERSION_MIN ? keys[i].digest : 0);
  }
  speaks_write(&m);
  rk_slice msg = finish(&m, &err);
  pb_enc e;
  pb_enc_init(&e, a);
  pb_put_bytes(&e, 1, msg);
  *reply = finish(&e, &err);
  return err;
}

static void gc_mark_write(pb_enc *e, rk_slice key, uint64_t since, uint64_t epoch) {
  size_t m = pb_begin(e, 2);
  pb_put_bytes(e, 1, key);
  pb_put_uint(e, 2, since);
  pb_put_uint(e, 3, epoch);
  pb_end(e, m);
}

static int op_gc_decide(ringkv_node *n, rk_slice req, rk_slice *reply) {
  rk_arena *a = &n->arena;
  int err = 0;
  rows_req q;
  RK_TRY(rows_req_read(n, req, false, &q));
  uint64_t epoch = 0;
  {
    int t_;
    bool ok = true;
    FIELDS(req) {
      case 4: ok = pb_get_u64(R, WT, &epoch); break;
      SKIP;
    }
    if (!ok || t_ < 0) return RINGKV_E_DECODE;
  }
  typedef struct {
    uint32_t from, version;
    key_digest *keys;
    size_t len;
  } gc_reply;
  gc_reply *replies = rk_alloc_array(a, q.extra_len + 1, sizeof *replies);
  if (replies == NULL) return RINGKV_E_NOMEM;
  for (size_t i = 0; i < q.extra_len; i++) {
    gc_reply *g = &replies[i];
    RK_TRY(gc_message_read(n, q.extra[i], &g->from, &g->version, &g->keys, &g->len));
  }
  pb_enc e;
  pb_enc_init(&e, a);
  uint64_t due = 0;
  uint32_t undecided = 0;
  for (size_t i = 0; i < q.locals_len; i++) {
    rk_local *l = &q.locals[i];
    rk_reg reg;
    RK_TRY(local_reg(a, l, false, &reg));
    if (!collectable(&reg)) continue;
    uint32_t shard = shard_of(n, rk_hash_slice(l->key)), reps_len;
    if (shard_moving(n, shard)) {   /* collection pauses for moving shards */
      undecided++;
      continue;
    }
    uint64_t raw = rk_reg_digest(a, l->key, &reg);
    const uint16_t *reps = replicas_of(n, shard, &reps_len);
    /* Every other replica of the epoch holds this exact state, or a marker covering it
     * (about this state: `asked`); no row never agrees (it may be a replica that missed the
     * delete and the write). One that did not answer, or whose version cannot tell a marker
     * from no row (0), leaves the key undecided but voids nothing. */
    bool all = true, differs = false;
    for (uint32_t r = 0; r < reps_len; r++) {
      if (reps[r] == n->self) continue;
      int said = 0;   /* 0: nothing, 1: agrees, -1: holds another state */
      for (size_t j = 0; j < q.extra_len && said == 0; j++) {
        if (replies[j].from != reps[r]) continue;
        for (size_t k = 0; k < replies[j].len; k++) {
          const key_digest *kd = &replies[j].keys[k];
          if (!rk_slice_eq(kd->key, l->key)) continue;
          bool v4 = replies[j].version >= MARKER_VERSION_MIN;
          if (kd->digest == raw || (v4 && kd->covered && kd->asked == raw)) said = 1;
          else if (v4 || kd->digest != 0) said = -1;
          break;
        }
      }
      all &= said == 1;
      differs |= said == -1;
    }
    bool noted = l->gc_since_ms != 0 && l->gc_epoch == epoch;
    if (!all) {
      undecided++;
      if (differs && l->gc_since_ms != 0) gc_mark_write(&e, l->key, 0, 0);
      continue;
    }
    if (!noted) {
      gc_mark_write(&e, l->key, q.now_ms, epoch);
      uint64_t d = rk_add_sat(q.now_ms, n->cfg.tombstone_grace_ms);
      due = due == 0 ? d : RK_MIN(due, d);
      continue;
    }
    uint64_t d = rk_add_sat(l->gc_since_ms, n->cfg.tombstone_grace_ms);
    if (d > q.now_ms) {
      due = due == 0 ? d : RK_MIN(due, d);
      continue;
    }
    /* Collected: the row becomes a marker holding the key's context. */
    rk_reg marker;
    memset(&marker, 0, sizeof marker);
    marker.ctx = reg.ctx;
    rk_slice meta = reg_meta(a, &marker, &err);
    if (err != 0) return err;
    uint64_t contrib = l->expired ? 0 : raw;
    applied_write(&e, 1, n, l->key, &reg, contrib, &marker, meta, 0, false, (rk_slice){NULL, 0}, q.now_ms);
  }
  pb_put_uint(&e, 3, due);
  pb_put_uint(&e, 4, undecided);
  *reply = finish(&e, &err);
  return err;
}

/* ---------------------------------------------------------------------------------------
 * Dispatch */

ringkv_node *ringkv_node_create(void) {
  ringkv_node *n = calloc(1, sizeof *n);
  if (n != NULL) rk_arena_init(&n->arena);
  return n;
}

void ringkv_node_destroy(ringkv_node *n) {
  if (n == NULL) return;
  rk_arena_free(&n->arena);
  free(n->shard_digest);
  free(n->shard_keys);
  free(n->my_shards);
  free(n->peer_version);
  free(n->ae_peers);
  free(n->memo);
  free(n->memo_tag);
  free(n->memo_scratch);
  free(n->all_nodes);
  rk_step_free(n->step);
  free(n);
}

int rk_node_op(ringkv_node *n, uint32_t op, rk_slice in, rk_slice *reply) {
  rk_slice out = {NULL, 0};
  int rc;
  switch (op) {
    case RINGKV_OP_PLACE: rc = op_place(n, in, &out); break;
    case RINGKV_OP_WRITE: rc = op_write(n, in, &out); break;
    case RINGKV_OP_READ: rc = op_read(n, in, &out); break;
    case RINGKV_OP_MESSAGE_KEYS: rc = op_message_keys(n, in, &out); break;
    case RINGKV_OP_MERGE: rc = op_merge(n, in, &out); break;
    case RINGKV_OP_BUILD_PUSH: rc = op_build_push(n, in, &out); break;
    case RINGKV_OP_AE_START: rc = op_ae_start(n, in, &out); break;
    case RINGKV_OP_AE_ANSWER: rc = op_ae_answer(n, in, &out); break;
    case RINGKV_OP_AE_COMPARE: rc = op_ae_compare(n, in, &out); break;
    case RINGKV_OP_AE_REPAIR: rc = op_ae_repair(n, in, &out); break;
    case RINGKV_OP_GC_QUERY: rc = op_gc_query(n, in, &out); break;
    case RINGKV_OP_GC_ANSWER: rc = op_gc_answer(n, in, &out); break;
    case RINGKV_OP_GC_DECIDE: rc = op_gc_decide(n, in, &out); break;
    case RINGKV_OP_EXPIRE: rc = op_expire(n, in, &out); break;
    case RINGKV_OP_CLIENT_READ: rc = op_client_read(n, in, &out); break;
    case RINGKV_OP_PAGE_PUSH: rc = op_page_push(n, in, &out); break;
    case RINGKV_OP_DROP: rc = op_drop(n, in, &out); break;
    default: rc = RINGKV_E_OP; break;
  }
  *reply = out;
  return rc;
}

int ringkv_call(ringkv_node *n, uint32_t op, const uint8_t *req, size_t req_len,
                const uint8_t **reply, size_t *reply_len) {
  rk_arena_reset(&n->arena);
  n->digests_dirty = false;
  rk_slice in = {req, req_len};
  rk_slice out = {NULL, 0};
  int rc;
  if (req_len > RINGKV_MESSAGE_BYTES_MAX) {
    rc = RINGKV_E_DECODE;
  } else if (op == RINGKV_OP_INIT) {
    rc = op_init(n, in, &out);
  } else if (op == RINGKV_OP_CONTROL) {
    rc = rk_control_step(&n->arena, in, &out);
  } else if ((op == RINGKV_OP_REPORT || op == RINGKV_OP_CLUSTER) && n->ready) {
    /* RingControl's: placement only, no node state. */
    rc = op == RINGKV_OP_REPORT ? rk_control_report(n, in, &out) : rk_control_cluster(n, in, &out);
  } else if (!n->ready || (n->placement_only && op != RINGKV_OP_PLACE)) {
    rc = op >= RINGKV_OP_INIT && op <= RINGKV_OP_DROP && op != RINGKV_OP_CONTROL ? RINGKV_E_STATE : RINGKV_E_OP;
  } else {
    /* Node state is only committed by operations that succeed: keep a copy to restore. */
    uint64_t clock = n->clock, counter = n->counter;
    rc = op == RINGKV_OP_STEP ? rk_step_run(n, in, &out) : rk_node_op(n, op, in, &out);
    if (rc != RINGKV_OK) {
      n->clock = clock;
      n->counter = counter;
      /* A failure after digests moved (only out of memory gets that far) leaves them
       * unknown: refuse further calls until the shim re-initialises from storage. */
      if (n->digests_dirty) n->ready = false;
    }
  }
  /* Out of memory, wherever it struck (an allocation inside a decoder included), is
   * reported as such, never as bad input. */
  if (n->arena.failed && rc != RINGKV_E_CONFIG) rc = RINGKV_E_NOMEM;
  if (rc != RINGKV_OK && op != RINGKV_OP_INIT) {
    out.ptr = NULL;
    out.len = 0;
  }
  *reply = out.ptr;
  *reply_len = out.len;
  return rc;
}

const char *ringkv_code_name(int code) {
  switch (code) {
    case RINGKV_OK: return "ok";
    case RINGKV_E_DECODE: return "malformed message";
    case RINGKV_E_PROTOCOL: return "unknown protocol version";
    case RINGKV_E_TOKEN: return "invalid context token";
    case RINGKV_E_SKEW: return "context token is from the future (clock skew)";
    case RINGKV_E_SIBLINGS: return "too many siblings: resolve first";
    case RINGKV_E_CLOCK: return "clock exhausted";
    case RINGKV_E_CONFIG: return "invalid configuration";
    case RINGKV_E_STATE: return "node not initialised";
    case RINGKV_E_OP: return "unknown operation";
    case RINGKV_E_NOMEM: return "out of memory";
    case RINGKV_E_VALUE: return "value, content type or key out of range";
    case RINGKV_E_KEY_BYTES: return "the key's siblings would exceed MAX_KEY_BYTES: resolve first";
    case RINGKV_E_LEASE: return "no dot lease yet";
    case RINGKV_E_CATCHING_UP: return "catching up on this shard";
    case RINGKV_E_FENCING: return "being fenced: no client write";
    case RINGKV_E_NOT_SERVING: return "not serving this key's shard in the ring's phase";
    default: return "unknown error";
  }
}
