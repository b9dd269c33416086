/* catchup.c: per-shard catch-up (SPEC: Resizing, the joining copy and catch-up; Semantics,
 * a node whose storage was lost). A shard to catch up on is pulled from each other replica
 * in turn: a page is that replica's rows after a cursor in key order (by position, then key
 * bytes, as KeyRange orders them), bounded in rows and bytes; the cursor moves only once a
 * page is merged and written, so a pull resumes where it stopped after a restart. The first
 * pull is the copy (from the replica the core chooses: spread over the replicas by shard);
 * each other pull is an anti-entropy pass, which ends at its first page when the two shard
 * digests agree. A replica that keeps losing pages is left for the next one (its pull starts
 * over). With every other replica pulled, the shard is caught up, which is persisted with
 * the state and reported. The pending shards are a bitmap; at most RK_CATCHUP_ACTIVE_MAX are
 * pulled at once, so the work of one step is bounded whatever the node holds. */
#include <stdlib.h>

#include "catchup.h"
#include "fields.h"
#include "hash.h"
#include "node.h"

/* Policy. Units last. */
#define CU_RETRY_MS_MIN 250u       /* a lost page is asked again after 0.25, 0.5 ... s */
#define CU_BACKOFF_MS_MAX 10000u
#define CU_SWITCH_AFTER 3u         /* lost pages in a row before another replica is tried */
#define CU_SCAN_BYTES_MAX 4096u    /* bitmap bytes one pick looks at */

_Static_assert(RINGKV_KEY_BYTES_MAX <= 1024u, "cursor keys fit rk_cu_shard.key");

static bool bit(const rk_catchup *c, uint32_t s) { return (c->bits[s / 8u] >> (s % 8u)) & 1u; }

static void bit_set(rk_catchup *c, uint32_t s, bool on) {
  if (bit(c, s) == on) return;
  c->bits[s / 8u] ^= (uint8_t)(1u << (s % 8u));
  if (on) c->pending++;
  else c->pending--;
}

int rk_catchup_init(rk_catchup *c, uint32_t shards, uint32_t replicas) {
  /* `replicas`: the most replicas a shard can have (old ∪ new during a transition), and
   * the node ids a probe may go to. */
  memset(c, 0, sizeof *c);
  c->bytes = (shards + 7u) / 8u;
  c->bits = calloc(c->bytes ? c->bytes : 1u, 1);
  c->peers_max = replicas ? replicas : 1u;
  c->probe_peer = calloc(c->peers_max, sizeof *c->probe_peer);
  c->probe_tag = calloc(c->peers_max, sizeof *c->probe_tag);
  if (c->bits == NULL || c->probe_peer == NULL || c->probe_tag == NULL) {
    rk_catchup_free(c);
    return RINGKV_E_NOMEM;
  }
  for (uint32_t i = 0; i < RK_CATCHUP_ACTIVE_MAX; i++) {
    c->active[i].done = calloc(replicas ? replicas : 1u, sizeof *c->active[i].done);
    if (c->active[i].done == NULL) {
      rk_catchup_free(c);
      return RINGKV_E_NOMEM;
    }
  }
  return RINGKV_OK;
}

void rk_catchup_free(rk_catchup *c) {
  free(c->bits);
  free(c->probe_peer);
  free(c->probe_tag);
  for (uint32_t i = 0; i < RK_CATCHUP_ACTIVE_MAX; i++) free(c->active[i].done);
  memset(c, 0, sizeof *c);
}

int rk_catchup_read_bits(rk_catchup *c, rk_slice b) {
  if (b.len != c->bytes) return RINGKV_E_DECODE;
  memcpy(c->bits, b.ptr, b.len);
  c->pending = 0;
  for (size_t i = 0; i < b.len; i++) c->pending += (uint32_t)__builtin_popcount(b.ptr[i]);
  return RINGKV_OK;
}

static bool is_done(const rk_cu_shard *e, uint32_t node) {
  for (uint32_t i = 0; i < e->done_len; i++) {
    if (e->done[i] == node) return true;
  }
  return false;
}

int rk_catchup_read_active(rk_catchup *c, uint32_t shards, uint32_t cluster_size, rk_slice s) {
  if (c->active_len == RK_CATCHUP_ACTIVE_MAX) return RINGKV_E_DECODE;
  rk_cu_shard *e = &c->active[c->active_len];
  uint16_t *done = e->done;
  memset(e, 0, sizeof *e);
  e->done = done;
  int t_;
  bool ok = true;
  rk_slice key = {NULL, 0};
  uint32_t d = 0;
  bool gone = false;   /* it names a node id the ring no longer has (a shrink since) */
  FIELDS(s) {
    case 1: ok = pb_get_u32(R, WT, &e->shard); break;
    case 2: ok = pb_get_u32(R, WT, &e->source); break;
    case 3:
      ok = pb_get_u32(R, WT, &d) && d <= UINT16_MAX;
      if (ok && e->done_len == RINGKV_CLUSTER_SIZE_MAX) return RINGKV_E_DECODE;
      if (ok && d >= cluster_size) gone = true;
      else if (ok && e->done_len < cluster_size) e->done[e->done_len++] = (uint16_t)d;
      break;
    case 4: ok = pb_get_bool(R, WT, &e->started); break;
    case 5: ok = pb_get_u64(R, WT, &e->position); break;
    case 6: ok = pb_get_bytes(R, WT, &key); break;
    case 7: ok = pb_get_u32(R, WT, &e->failures); break;
    SKIP;
  }
  if (!ok || t_ < 0 || e->shard >= shards || e->source > UINT16_MAX) return RINGKV_E_DECODE;
  if (key.len > RINGKV_KEY_BYTES_MAX || (e->started && key.len == 0)) return RINGKV_E_DECODE;
  /* The shard stays pending and is taken up again from the start on the ring it has now. */
  if (gone || e->source >= cluster_size) return RINGKV_OK;
  if (key.len) memcpy(e->key, key.ptr, key.len);
  e->key_len = (uint32_t)key.len;
  c->active_len++;
  return RINGKV_OK;
}

int rk_catchup_check(rk_catchup *c) {
  for (uint32_t i = 0; i < c->active_len; i++) {
    if (!bit(c, c->active[i].shard)) return RINGKV_E_DECODE;
    for (uint32_t j = 0; j < i; j++) {
      if (c->active[j].shard == c->active[i].shard) return RINGKV_E_DECODE;
    }
  }
  return RINGKV_OK;
}

void rk_catchup_state_write(pb_enc *e, const rk_catchup *c) {
  if (c->pending == 0) return;
  rk_slice b = {c->bits, c->bytes};
  pb_put_bytes(e, 32, b);
  for (uint32_t i = 0; i < c->active_len; i++) {
    const rk_cu_shard *s = &c->active[i];
    size_t m = pb_begin(e, 33);
    pb_put_uint(e, 1, s->shard);
    pb_put_uint(e, 2, s->source);
    for (uint32_t j = 0; j < s->done_len; j++) pb_put_uint(e, 3, s->done[j]);
    pb_put_bool(e, 4, s->started);
    pb_put_uint(e, 5, s->position);
    rk_slice k = {s->key, s->key_len};
    pb_put_bytes(e, 6, k);
    pb_put_uint(e, 7, s->failures);
    pb_end(e, m);
  }
}

bool rk_catchup_serves(const rk_catchup *c, uint32_t shard) {
  return c->pending == 0 || shard / 8u >= c->bytes || !bit(c, shard);
}

void rk_catchup_begin(rk_catchup *c, uint32_t shard) {
  bit_set(c, shard, true);
  c->changed = true;
  c->probe_passed = false;
}

void rk_catchup_begin_all(rk_catchup *c, const ringkv_node *n) {
  for (size_t i = 0; i < n->my_shards_len; i++) bit_set(c, n->my_shards[i], true);
  c->changed = true;
  c->probe_passed = false;
}

/* The next replica of the shard to pull from: the first after `after` (in the placement's
 * order, cyclic; UINT32_MAX: start where the shard spreads the copies) that is not this
 * node and not done. UINT32_MAX when none is left. */
static uint32_t source_after(const ringkv_node *n, const rk_cu_shard *e, uint32_t after) {
  uint32_t len;
  const uint16_t *r = rk_sources_of(n, e->shard, &len);
  uint32_t at = (e->shard + n->self) % len;
  for (uint32_t i = 0; i < len; i++) {
    if (r[i] == after) {
      at = i + 1u;
      break;
    }
  }
  for (uint32_t k = 0; k < len; k++) {
    uint32_t p = r[(at + k) % len];
    if (p != n->self && !is_done(e, p)) return p;
  }
  return UINT32_MAX;
}

static void cursor_reset(rk_cu_shard *e) {
  e->started = false;
  e->position = 0;
  e->key_len = 0;
  e->failures = 0;
}

static void finish(rk_catchup *c, uint32_t i) {
  bit_set(c, c->active[i].shard, false);
  uint16_t *done = c->active[i].done;
  c->active[i] = c->active[c->active_len - 1u];
  c->active[c->active_len - 1u].done = done;
  c->active_len--;
  c->changed = true;
}

/* The pull from `source` is complete: the next replica, or the shard is caught up. */
static void source_done(rk_catchup *c, const ringkv_node *n, uint32_t i, uint64_t now) {
  rk_cu_shard *e = &c->active[i];
  if (!is_done(e, e->source) && e->done_len < n->cfg.cluster_size) e->done[e->done_len++] = (uint16_t)e->source;
  cursor_reset(e);
  e->retry_ms = now;
  uint32_t next = source_after(n, e, e->source);
  if (next == UINT32_MAX) finish(c, i);
  else e->source = next;
}

static bool is_active(const rk_catchup *c, uint32_t shard) {
  for (uint32_t j = 0; j < c->active_len; j++) {
    if (c->active[j].shard == shard) return true;
  }
  return false;
}

/* Whether `peer` is one of the shard's sources (catch-up pulls and probes ask only them). */
static bool is_source(const ringkv_node *n, uint32_t shard, uint32_t peer) {
  uint32_t len;
  const uint16_t *r = rk_sources_of(n, shard, &len);
  for (uint32_t i = 0; i < len; i++) {
    if (r[i] == peer) return true;
  }
  return false;
}

int rk_catchup_next(rk_catchup *c, const ringkv_node *n, uint64_t now) {
  /* Fill the table from the bitmap, a bounded scan at a time (an empty byte is one look). */
  for (uint32_t looks = 0; c->active_len < RK_CATCHUP_ACTIVE_MAX && c->pending > c->active_len &&
                           looks < CU_SCAN_BYTES_MAX * 8u;
       looks++) {
    uint32_t s = c->scan < n->cfg.shards ? c->scan : 0;
    if (s % 8u == 0 && c->bits[s / 8u] == 0) {
      c->scan = s + 8u;
      continue;
    }
    c->scan = s + 1u;
    if (!bit(c, s)) continue;
    if (is_active(c, s)) continue;
    rk_cu_shard *e = &c->active[c->active_len];
    uint16_t *done = e->done;
    memset(e, 0, sizeof *e);
    e->done = done;
    e->shard = s;
    e->retry_ms = now;
    uint32_t src = source_after(n, e, UINT32_MAX);
    c->active_len++;
    /* A shard with no other replica has nothing to pull. */
    if (src == UINT32_MAX) finish(c, c->active_len - 1u);
    else e->source = src;
  }
  for (uint32_t i = 0; i < c->active_len; i++) {
    const rk_cu_shard *e = &c->active[i];
    if (e->tag == 0 && !e->merging && now >= e->retry_ms) return (int)i;
  }
  return -1;
}

void rk_catchup_header(pb_enc *e, const ringkv_node *n, uint32_t shard) {
  pb_put_uint(e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(e, 2, n->self);
  pb_put_uint(e, 3, shard);
}

int rk_catchup_request(rk_catchup *c, const ringkv_node *n, uint32_t i, rk_slice *msg) {
  const rk_cu_shard *e = &c->active[i];
  pb_enc p;
  pb_enc_init(&p, (rk_arena *)&n->arena);
  rk_catchup_header(&p, n, e->shard);
  pb_put_fixed64(&p, 4, n->shard_digest[e->shard]);
  pb_put_bool(&p, 5, e->started);
  pb_put_uint(&p, 6, e->position);
  rk_slice k = {e->key, e->key_len};
  pb_put_bytes(&p, 7, k);
  pb_put_uint(&p, 15, RINGKV_PROTOCOL_VERSION);
  if (p.err) return p.err;
  *msg = pb_result(&p);
  return RINGKV_OK;
}

void rk_catchup_sent(rk_catchup *c, uint32_t i, uint32_t tag, uint64_t now) {
  c->active[i].tag = tag;
  c->active[i].sent_ms = now;
}

int rk_catchup_owner(const rk_catchup *c, uint32_t tag) {
  if (tag == 0) return -1;
  for (uint32_t i = 0; i < c->active_len; i++) {
    if (c->active[i].tag == tag) return (int)i;
  }
  return -1;
}

void rk_catchup_lost(rk_catchup *c, const ringkv_node *n, uint32_t i, uint64_t now) {
  rk_cu_shard *e = &c->active[i];
  e->tag = 0;
  e->merging = false;
  e->failures++;
  uint32_t shift = RK_MIN(e->failures - 1u, 16u);
  e->retry_ms = now + RK_MIN((uint64_t)CU_RETRY_MS_MIN << shift, (uint64_t)CU_BACKOFF_MS_MAX);
  if (e->failures < CU_SWITCH_AFTER) return;
  /* Another replica's turn; this one stays to be pulled later (it is not done). */
  uint32_t next = source_after(n, e, e->source);
  if (next != UINT32_MAX && next != e->source) {
    uint64_t retry = e->retry_ms;
    cursor_reset(e);
    e->source = next;
    e->retry_ms = retry;
  }
}

int rk_catchup_answer(rk_catchup *c, const ringkv_node *n, uint32_t i, uint64_t now, const rk_slice *answer,
                      rk_slice *push) {
  rk_cu_shard *e = &c->active[i];
  push->ptr = NULL;
  push->len = 0;
  if (answer == NULL) {
    rk_catchup_lost(c, n, i, now);
    return RINGKV_OK;
  }
  int t_;
  bool ok = true, equal = false, more = false;
  uint32_t version = 0, from = 0, shard = 0;
  uint64_t position = 0;
  rk_slice p = {NULL, 0}, key = {NULL, 0};
  FIELDS(*answer) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &from); break;
    case 3: ok = pb_get_u32(R, WT, &shard); break;
    case 4: ok = pb_get_bool(R, WT, &equal); break;
    case 5: ok = pb_get_bytes(R, WT, &p); break;
    case 6: ok = pb_get_bool(R, WT, &more); break;
    case 7: ok = pb_get_u64(R, WT, &position); break;
    case 8: ok = pb_get_bytes(R, WT, &key); break;
    SKIP;
  }
  /* Only a page of this shard from the replica asked; `equal` carries nothing; a page with
   * more to come names its last key, which lies in the shard after the cursor. */
  bool valid = ok && t_ >= 0 && version >= RINGKV_PROTOCOL_VERSION_MIN && version <= RINGKV_PROTOCOL_VERSION &&
               from == e->source && shard == e->shard && !(equal && (p.len > 0 || more));
  if (valid && more) {
    uint64_t h = rk_hash_slice(key);
    rk_slice cur = {e->key, e->key_len};
    valid = key.len >= 1 && key.len <= RINGKV_KEY_BYTES_MAX && h % n->cfg.shards == e->shard &&
            position == h >> RINGKV_KEY_POSITION_SHIFT &&
            (!e->started || position > e->position || (position == e->position && rk_slice_cmp(key, cur) > 0));
  }
  if (!valid) {
    rk_catchup_lost(c, n, i, now);
    return RINGKV_E_DECODE;
  }
  e->tag = 0;
  e->failures = 0;
  if (equal) {
    source_done(c, n, i, now);
    return RINGKV_OK;
  }
  e->merging = true;
  e->next_more = more;
  e->next_position = position;
  if (key.len) memcpy(e->next_key, key.ptr, key.len);
  e->next_key_len = (uint32_t)key.len;
  *push = p;
  return RINGKV_OK;
}

void rk_catchup_merged(rk_catchup *c, const ringkv_node *n, uint32_t i, uint64_t now) {
  rk_cu_shard *e = &c->active[i];
  e->merging = false;
  if (!e->next_more) {
    source_done(c, n, i, now);
    return;
  }
  e->started = true;
  e->position = e->next_position;
  memcpy(e->key, e->next_key, e->next_key_len);
  e->key_len = e->next_key_len;
  e->retry_ms = now;
}

void rk_catchup_unmerged(rk_catchup *c, uint64_t now) {
  for (uint32_t i = 0; i < c->active_len; i++) {
    if (!c->active[i].merging) continue;
    c->active[i].merging = false;
    c->active[i].retry_ms = now;
  }
}

int rk_catchup_merging(const rk_catchup *c) {
  for (uint32_t i = 0; i < c->active_len; i++) {
    if (c->active[i].merging) return (int)i;
  }
  return -1;
}

uint64_t rk_catchup_alarm(const rk_catchup *c) {
  uint64_t t = 0;
  for (uint32_t i = 0; i < c->active_len; i++) {
    const rk_cu_shard *e = &c->active[i];
    uint64_t at = e->tag != 0 ? e->sent_ms + 2u * (uint64_t)RK_CATCHUP_TIMEOUT_MS + 1u : e->merging ? 0 : RK_MAX(e->retry_ms, 1u);
    if (at != 0 && (t == 0 || at < t)) t = at;
  }
  if (c->probe_sends > 0) {
    uint64_t at = c->probe_sent_ms + RK_CATCHUP_TIMEOUT_MS + 1u;
    if (t == 0 || at < t) t = at;
  }
  /* Pending shards not in the table yet are picked at the next step. */
  if (t == 0 && c->pending > c->active_len) t = 1;
  return t;
}

void rk_catchup_clamp(rk_catchup *c, uint64_t now) {
  if (c->probe_sent_ms > now) c->probe_sent_ms = now;
  for (uint32_t i = 0; i < c->active_len; i++) {
    rk_cu_shard *e = &c->active[i];
    if (e->sent_ms > now) e->sent_ms = now;
    if (e->retry_ms > now + CU_BACKOFF_MS_MAX) e->retry_ms = now + CU_BACKOFF_MS_MAX;
  }
}

int rk_catchup_incoming(const ringkv_node *n, rk_slice msg, bool *equal, pb_enc *load, uint32_t *from_out,
                        uint32_t *shard_out) {
  int t_;
  bool ok = true, started = false;
  uint32_t version = 0, from = 0, shard = 0;
  uint64_t digest = 0, position = 0;
  rk_slice key = {NULL, 0};
  FIELDS(msg) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &from); break;
    case 3: ok = pb_get_u32(R, WT, &shard); break;
    case 4: ok = pb_get_fixed64(R, WT, &digest); break;
    case 5: ok = pb_get_bool(R, WT, &started); break;
    case 6: ok = pb_get_u64(R, WT, &position); break;
    case 7: ok = pb_get_bytes(R, WT, &key); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (version < RINGKV_PROTOCOL_VERSION_MIN || version > RINGKV_PROTOCOL_VERSION) return RINGKV_E_PROTOCOL;
  if (from == n->self || shard >= n->cfg.shards) return RINGKV_E_DECODE;
  /* Not this ring's question (the sender is on another ring: a late or repeated copy across
   * an epoch): the executor answers with this node's ring (421). */
  if (from >= n->cfg.cluster_size || !rk_is_replica(n, shard, n->self) || !rk_is_replica(n, shard, from)) {
    return RINGKV_E_NOT_SERVING;
  }
  if (started && (key.len < 1 || key.len > RINGKV_KEY_BYTES_MAX || position >= (UINT64_C(1) << RINGKV_KEY_POSITION_BITS))) {
    return RINGKV_E_DECODE;
  }
  if (!started && (key.len != 0 || position != 0)) return RINGKV_E_DECODE;
  *from_out = from;
  *shard_out = shard;
  *equal = !started && digest == n->shard_digest[shard];
  if (*equal) return RINGKV_OK;
  pb_put_bool(load, 30, true);
  pb_put_uint(load, 31, shard);
  pb_put_bool(load, 32, started);
  pb_put_uint(load, 33, position);
  pb_put_bytes(load, 34, key);
  pb_put_uint(load, 35, RK_CATCHUP_PAGE_ROWS_MAX);
  pb_put_uint(load, 36, RK_CATCHUP_PAGE_BYTES_MAX);
  return RINGKV_OK;
}

int rk_catchup_reply(const ringkv_node *n, uint32_t shard, bool equal, rk_slice push, rk_slice last, bool more,
                     rk_slice *reply) {
  pb_enc e;
  pb_enc_init(&e, (rk_arena *)&n->arena);
  rk_catchup_header(&e, n, shard);
  pb_put_bool(&e, 4, equal);
  pb_put_bytes(&e, 5, push);
  bool going_on = more && last.len > 0;
  pb_put_bool(&e, 6, going_on);
  if (going_on) {
    pb_put_uint(&e, 7, rk_hash_slice(last) >> RINGKV_KEY_POSITION_SHIFT);
    pb_put_bytes(&e, 8, last);
  }
  if (e.err) return e.err;
  *reply = pb_result(&e);
  return RINGKV_OK;
}

/* ---------------------------------------------------------------------------------------
 * Probes: most shards a node catches up on are often empty, or equal at every source (a
 * new replica of a resize, a wiped node of a quiet cluster), and a pull costs one exchange
 * per (shard, source). A probe asks each source about a batch of pending shards in one
 * message; a shard every source says equal is caught up with no pull. The rest are pulled
 * as before, so a lost or refused probe only costs time. */

/* Ends the batch: shards every source said equal (and not being pulled meanwhile) are
 * caught up. */
static void probe_close(rk_catchup *c) {
  for (uint32_t i = 0; i < c->probed_len; i++) {
    const rk_cu_probed *p = &c->probed[i];
    if (p->equal == p->sources && bit(c, p->shard) && !is_active(c, p->shard)) {
      bit_set(c, p->shard, false);
      c->changed = true;
    }
  }
  c->probed_len = 0;
  c->probe_sends = 0;
  c->probe_open = 0;
}

static int peer_index(const rk_catchup *c, uint32_t peer) {
  for (uint32_t k = 0; k < c->probe_sends; k++) {
    if (c->probe_peer[k] == peer) return (int)k;
  }
  return -1;
}

uint32_t rk_catchup_probe_begin(rk_catchup *c, const ringkv_node *n, uint64_t now) {
  (void)now;
  if (c->probe_sends > 0 || c->probe_passed || c->pending <= c->active_len) return 0;
  c->probed_len = 0;
  uint32_t shards = n->cfg.shards;
  for (uint32_t looks = 0; looks < shards && c->probed_len < RK_CATCHUP_PROBE_MAX; looks++) {
    uint32_t s = c->probe_scan;
    c->probe_scan = s + 1u >= shards ? 0 : s + 1u;
    if (c->probe_scan == 0) c->probe_passed = true;   /* one pass over every shard */
    if (!bit(c, s) || is_active(c, s)) {
      if (c->probe_passed) break;
      continue;
    }
    uint32_t len;
    const uint16_t *r = rk_sources_of(n, s, &len);
    uint16_t sources = 0;
    bool room = true;
    for (uint32_t i = 0; i < len && room; i++) {
      if (r[i] == n->self) continue;
      if (peer_index(c, r[i]) < 0) {
        if (c->probe_sends == c->peers_max) room = false;
        else c->probe_peer[c->probe_sends++] = r[i];
      }
      sources++;
    }
    if (room && sources > 0) c->probed[c->probed_len++] = (rk_cu_probed){s, sources, 0};
    if (c->probe_passed) break;
  }
  if (c->probed_len == 0) c->probe_sends = 0;
  c->probe_open = c->probe_sends;
  for (uint32_t k = 0; k < c->probe_sends; k++) c->probe_tag[k] = 0;
  return c->probe_sends;
}

int rk_catchup_probe_request(rk_catchup *c, const ringkv_node *n, uint32_t k, rk_slice *msg, uint32_t *peer) {
  uint32_t to = c->probe_peer[k];
  pb_enc p;
  pb_enc_init(&p, (rk_arena *)&n->arena);
  pb_put_uint(&p, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&p, 2, n->self);
  for (uint32_t i = 0; i < c->probed_len; i++) {
    uint32_t s = c->probed[i].shard;
    if (!is_source(n, s, to)) continue;
    size_t m = pb_begin(&p, 8);
    pb_put_uint(&p, 1, s);
    pb_put_fixed64(&p, 2, n->shard_digest[s]);
    pb_end(&p, m);
  }
  pb_put_uint(&p, 15, RINGKV_PROTOCOL_VERSION);
  if (p.err) return p.err;
  *msg = pb_result(&p);
  *peer = to;
  return RINGKV_OK;
}

void rk_catchup_probe_sent(rk_catchup *c, uint32_t k, uint32_t tag, uint64_t now) {
  c->probe_tag[k] = tag;
  c->probe_sent_ms = now;
}

int rk_catchup_probe_owner(const rk_catchup *c, uint32_t tag) {
  if (tag == 0) return -1;
  for (uint32_t k = 0; k < c->probe_sends; k++) {
    if (c->probe_tag[k] == tag) return (int)k;
  }
  return -1;
}

static rk_cu_probed *probed_find(rk_catchup *c, uint32_t shard) {
  for (uint32_t i = 0; i < c->probed_len; i++) {
    if (c->probed[i].shard == shard) return &c->probed[i];
  }
  return NULL;
}

int rk_catchup_probe_answer(rk_catchup *c, const ringkv_node *n, uint32_t k, const rk_slice *answer) {
  uint32_t from_peer = c->probe_peer[k];
  c->probe_tag[k] = 0;
  c->probe_open--;
  int rc = RINGKV_OK;
  if (answer != NULL) {
    int t_;
    bool ok = true;
    uint32_t version = 0, from = 0;
    rk_slice equal = {NULL, 0};
    FIELDS(*answer) {
      case 1: ok = pb_get_u32(R, WT, &version); break;
      case 2: ok = pb_get_u32(R, WT, &from); break;
      case 9: ok = WT == PB_LEN && pb_get_bytes(R, WT, &equal); break;
      SKIP;
    }
    ok = ok && t_ >= 0 && version >= RINGKV_PROTOCOL_VERSION_MIN && version <= RINGKV_PROTOCOL_VERSION && from == from_peer;
    /* Strictly ascending shards of the batch that name this peer as a source: each counts
     * once, from the peer it was asked of. */
    pb_rd in = pb_reader(equal);
    uint32_t last = 0, shard;
    bool first = true;
    while (ok && !pb_done(&in)) {
      ok = pb_get_u32(&in, PB_VARINT, &shard) && (first || shard > last);
      first = false;
      last = shard;
      rk_cu_probed *p = ok ? probed_find(c, shard) : NULL;
      if (p != NULL && is_source(n, shard, from_peer) && p->equal < p->sources) p->equal++;
    }
    if (!ok) {
      /* Nothing of a malformed answer counts: its equal shards stay short of their sources. */
      for (uint32_t i = 0; i < c->probed_len; i++) c->probed[i].equal = 0;
      rc = RINGKV_E_DECODE;
    }
  }
  if (c->probe_open == 0) probe_close(c);
  return rc;
}

void rk_catchup_probe_expire(rk_catchup *c, const ringkv_node *n, uint64_t now) {
  (void)n;
  if (c->probe_sends == 0 || now <= c->probe_sent_ms + RK_CATCHUP_TIMEOUT_MS) return;
  /* Unanswered sources never said equal: their shards are left to the pulls. */
  probe_close(c);
}

bool rk_catchup_is_probe(rk_slice msg) {
  int t_;
  bool ok = true, probe = false;
  FIELDS(msg) {
    case 8: probe = true; ok = pb_skip(R, WT); break;
    SKIP;
  }
  return probe && t_ >= 0;
}

int rk_catchup_probe_reply(const ringkv_node *n, rk_slice msg, rk_slice *reply) {
  int t_;
  bool ok = true;
  uint32_t version = 0, from = 0, entries = 0;
  FIELDS(msg) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &from); break;
    case 8: ok = ++entries <= RK_CATCHUP_PROBE_MAX && pb_skip(R, WT); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (version < RINGKV_PROTOCOL_VERSION_MIN || version > RINGKV_PROTOCOL_VERSION) return RINGKV_E_PROTOCOL;
  if (from >= n->cfg.cluster_size || from == n->self) return RINGKV_E_DECODE;
  uint32_t *equal = rk_alloc_array((rk_arena *)&n->arena, RK_CATCHUP_PROBE_MAX, sizeof *equal);
  if (equal == NULL) return RINGKV_E_NOMEM;
  uint32_t equal_len = 0;
  int64_t last = -1;
  FIELDS(msg) {
    case 8: {
      rk_slice e;
      ok = pb_get_bytes(R, WT, &e);
      if (!ok) break;
      uint32_t shard = 0;
      uint64_t digest = 0;
      FIELDS(e) {
        case 1: ok = pb_get_u32(R, WT, &shard); break;
        case 2: ok = pb_get_fixed64(R, WT, &digest); break;
        SKIP;
      }
      ok = ok && t_ >= 0 && shard < n->cfg.shards && (int64_t)shard > last;
      if (!ok) break;
      last = shard;
      /* It vouches only for a shard both hold, that it is not catching up on itself. */
      if (digest == n->shard_digest[shard] && rk_is_replica(n, shard, n->self) && rk_is_replica(n, shard, from) &&
          rk_step_caught_up(n, shard) == RINGKV_OK) {
        equal[equal_len++] = shard;
      }
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  pb_enc e;
  pb_enc_init(&e, (rk_arena *)&n->arena);
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, n->self);
  pb_put_packed_u32(&e, 9, equal, equal_len);
  if (e.err) return e.err;
  *reply = pb_result(&e);
  return RINGKV_OK;
}
