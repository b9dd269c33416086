/* cover.c: a replica leaving a shard (SPEC: Resizing, leaving) runs covering passes against
 * each of the shard's new replicas in turn, then drops the shard. A pass first compares the
 * shard digests (equal: that replica covers this one, nothing sent); otherwise it sends
 * every row of the shard, a bounded page at a time in key order, and the receiver merges
 * each page and says how many of its entries changed its state (or waited: a clock beyond
 * its bound). A pass that changed nothing proves the replica covers this one; one that
 * changed something is run again. With every new replica covering it, the node deletes its
 * rows of the shard a page at a time; a shard with no rows left is done (it is counted out
 * of NodeProgress.dropping, which the done gate waits for).
 *
 * No client write or push reaches a shard a node leaves (the leaving phase takes writes at
 * the new replicas only), so what a pass proved stays true until the drop. */
#include "cover.h"

#include "catchup.h"
#include "fields.h"
#include "hash.h"
#include "node.h"
#include "resize.h"

/* Policy. Units last. */
#define CV_RETRY_MS_MIN 250u       /* a lost message is sent again after 0.25, 0.5 ... s */
#define CV_BACKOFF_MS_MAX 10000u   /* also the longest wait before a pass is run again */
#define CV_SCAN_SHARDS_MAX 4096u   /* shards one fill looks at */

_Static_assert(RINGKV_KEY_BYTES_MAX <= 1024u, "cursor keys fit rk_cover_shard.key");
_Static_assert(RK_COVER_DROP_ROWS_MAX <= RK_CATCHUP_PAGE_ROWS_MAX, "a drop page fits the step's page bound");

void rk_cover_reset(rk_cover *c) { memset(c, 0, sizeof *c); }

/* Nothing new becomes worth handing over while leaving (no write reaches a shard the node
 * leaves): an empty table after a look at every shard since the last one found means the
 * node has nothing left to do until the next ring. */
bool rk_cover_idle(const rk_cover *c, const ringkv_node *n) { return c->active_len == 0 && c->quiet >= n->cfg.shards; }

static bool is_active(const rk_cover *c, uint32_t shard) {
  for (uint32_t i = 0; i < c->active_len; i++) {
    if (c->active[i].shard == shard) return true;
  }
  return false;
}

void rk_cover_fill(rk_cover *c, const ringkv_node *n, uint64_t now) {
  uint32_t shards = n->cfg.shards;
  for (uint32_t looks = 0;
       looks < CV_SCAN_SHARDS_MAX && c->active_len < RK_COVER_ACTIVE_MAX && c->quiet < shards; looks++) {
    uint32_t s = c->scan < shards ? c->scan : 0;
    c->scan = s + 1u;
    c->quiet++;
    if (n->shard_keys[s] == 0 || is_active(c, s) || !rk_leaves_shard(n, s, n->self)) continue;
    c->quiet = 0;
    rk_cover_shard *e = &c->active[c->active_len++];
    memset(e, 0, sizeof *e);
    e->shard = s;
    e->what = RK_CV_CHECK;
    e->retry_ms = now;
  }
}

static bool due(const rk_cover_shard *e, uint64_t now) { return e->tag == 0 && now >= e->retry_ms; }

int rk_cover_check_due(const rk_cover *c, uint64_t now) {
  for (uint32_t i = 0; i < c->active_len; i++) {
    if (c->active[i].what == RK_CV_CHECK && due(&c->active[i], now)) return (int)i;
  }
  return -1;
}

int rk_cover_load_due(const rk_cover *c, uint64_t now) {
  for (uint32_t i = 0; i < c->active_len; i++) {
    if (c->active[i].what != RK_CV_CHECK && due(&c->active[i], now)) return (int)i;
  }
  return -1;
}

void rk_cover_load(const rk_cover *c, uint32_t i, pb_enc *load) {
  const rk_cover_shard *e = &c->active[i];
  /* A drop page is always the shard's first rows: the ones before it are deleted. */
  bool drop = e->what == RK_CV_DROP;
  bool started = !drop && e->started;
  pb_put_bool(load, 30, true);
  pb_put_uint(load, 31, e->shard);
  pb_put_bool(load, 32, started);
  if (started) {
    pb_put_uint(load, 33, e->position);
    rk_slice k = {e->key, e->key_len};
    pb_put_bytes(load, 34, k);
  }
  pb_put_uint(load, 35, drop ? RK_COVER_DROP_ROWS_MAX : RK_CATCHUP_PAGE_ROWS_MAX);
  pb_put_uint(load, 36, RK_CATCHUP_PAGE_BYTES_MAX);
}

uint32_t rk_cover_target(const rk_cover *c, const ringkv_node *n, uint32_t i) {
  uint32_t len;
  const uint16_t *r = rk_new_set_of(n, c->active[i].shard, &len);
  return c->active[i].target < len ? r[c->active[i].target] : UINT32_MAX;
}

int rk_cover_request(rk_cover *c, const ringkv_node *n, uint32_t i, rk_slice push, rk_slice last, bool more,
                     rk_slice *msg) {
  rk_cover_shard *e = &c->active[i];
  if (last.len > RINGKV_KEY_BYTES_MAX) return RINGKV_E_STATE;
  e->next_more = more && last.len > 0;
  e->next_key_len = 0;
  if (e->next_more) {
    e->next_position = rk_hash_slice(last) >> RINGKV_KEY_POSITION_SHIFT;
    memcpy(e->next_key, last.ptr, last.len);
    e->next_key_len = (uint32_t)last.len;
  }
  pb_enc p;
  pb_enc_init(&p, (rk_arena *)&n->arena);
  rk_catchup_header(&p, n, e->shard);
  pb_put_fixed64(&p, 4, n->shard_digest[e->shard]);
  pb_put_bool(&p, 10, true);
  pb_put_bytes(&p, 11, push);
  pb_put_uint(&p, 12, n->shard_keys[e->shard]);
  pb_put_uint(&p, 15, RINGKV_PROTOCOL_VERSION);
  if (p.err) return p.err;
  *msg = pb_result(&p);
  return RINGKV_OK;
}

void rk_cover_sent(rk_cover *c, uint32_t i, uint32_t tag, uint64_t now) {
  c->active[i].tag = tag;
  c->active[i].sent_ms = now;
}

int rk_cover_owner(const rk_cover *c, uint32_t tag) {
  if (tag == 0) return -1;
  for (uint32_t i = 0; i < c->active_len; i++) {
    if (c->active[i].tag == tag) return (int)i;
  }
  return -1;
}

static uint64_t backoff(uint32_t times) {
  uint32_t shift = RK_MIN(times, 16u);
  return RK_MIN((uint64_t)CV_RETRY_MS_MIN << shift, (uint64_t)CV_BACKOFF_MS_MAX);
}

static void lost(rk_cover_shard *e, uint64_t now) {
  e->tag = 0;
  e->retry_ms = now + backoff(e->failures);
  e->failures++;
}

/* The target covers this node: the next one, or the drop. */
static void target_done(rk_cover_shard *e, const ringkv_node *n, uint64_t now) {
  uint32_t len;
  rk_new_set_of(n, e->shard, &len);
  e->target++;
  e->what = e->target >= len ? RK_CV_DROP : RK_CV_CHECK;
  e->changed = false;
  e->passes = 0;
  e->started = false;
  e->key_len = 0;
  e->retry_ms = now;
}

int rk_cover_answer(rk_cover *c, const ringkv_node *n, uint32_t i, uint64_t now, const rk_slice *answer) {
  rk_cover_shard *e = &c->active[i];
  if (answer == NULL) {
    lost(e, now);
    return RINGKV_OK;
  }
  int t_;
  bool ok = true, equal = false, cover = false;
  uint32_t version = 0, from = 0, shard = 0, changed = 0;
  FIELDS(*answer) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &from); break;
    case 3: ok = pb_get_u32(R, WT, &shard); break;
    case 4: ok = pb_get_bool(R, WT, &equal); break;
    case 10: ok = pb_get_u32(R, WT, &changed); break;
    case 11: ok = pb_get_bool(R, WT, &cover); break;
    SKIP;
  }
  /* Only a covering answer proves anything: a plain catch-up reply (a receiver that took
   * the request for a pull) is not one. */
  if (!ok || t_ < 0 || !cover || version < RINGKV_PROTOCOL_VERSION_MIN || version > RINGKV_PROTOCOL_VERSION ||
      from != rk_cover_target(c, n, i) || shard != e->shard || (equal && changed > 0)) {
    lost(e, now);
    return RINGKV_E_DECODE;
  }
  e->tag = 0;
  e->failures = 0;
  if (equal) {
    target_done(e, n, now);
    return RINGKV_OK;
  }
  if (e->what == RK_CV_CHECK) {
    /* The digests differ: a pass of pages, from the shard's first row. */
    e->what = RK_CV_PAGE;
    e->started = false;
    e->key_len = 0;
    e->changed = false;
    e->retry_ms = now;
    return RINGKV_OK;
  }
  e->changed |= changed > 0;
  if (e->next_more) {
    e->started = true;
    e->position = e->next_position;
    memcpy(e->key, e->next_key, e->next_key_len);
    e->key_len = e->next_key_len;
    e->retry_ms = now;
    return RINGKV_OK;
  }
  if (!e->changed) {
    target_done(e, n, now);
    return RINGKV_OK;
  }
  /* The pass changed something (or the target deferred a version): again, after a wait
   * that grows with each such pass. */
  e->what = RK_CV_CHECK;
  e->retry_ms = now + backoff(e->passes);
  e->passes++;
  return RINGKV_OK;
}

void rk_cover_dropped(rk_cover *c, uint32_t i, bool more, uint64_t now) {
  rk_cover_shard *e = &c->active[i];
  e->retry_ms = now;
  if (more) return;
  c->active[i] = c->active[c->active_len - 1u];
  c->active_len--;
  c->changed = true;
}

void rk_cover_expire(rk_cover *c, uint64_t now) {
  for (uint32_t i = 0; i < c->active_len; i++) {
    rk_cover_shard *e = &c->active[i];
    if (e->tag != 0 && now > e->sent_ms + 2u * (uint64_t)RK_COVER_TIMEOUT_MS) lost(e, now);
  }
}

uint64_t rk_cover_alarm(const rk_cover *c, const ringkv_node *n) {
  uint64_t t = 0;
  for (uint32_t i = 0; i < c->active_len; i++) {
    const rk_cover_shard *e = &c->active[i];
    uint64_t at = e->tag != 0 ? e->sent_ms + 2u * (uint64_t)RK_COVER_TIMEOUT_MS + 1u : RK_MAX(e->retry_ms, 1u);
    if (t == 0 || at < t) t = at;
  }
  /* Shards not looked at yet are looked at in the next step. */
  if (t == 0 && !rk_cover_idle(c, n)) t = 1;
  return t;
}

void rk_cover_clamp(rk_cover *c, uint64_t now) {
  for (uint32_t i = 0; i < c->active_len; i++) {
    rk_cover_shard *e = &c->active[i];
    if (e->sent_ms > now) e->sent_ms = now;
    if (e->retry_ms > now + CV_BACKOFF_MS_MAX) e->retry_ms = now + CV_BACKOFF_MS_MAX;
  }
}

/* ---------------------------------------------------------------------------------------
 * The receiver */

bool rk_cover_is_request(rk_slice msg) {
  int t_;
  bool ok = true, cover = false;
  FIELDS(msg) {
    case 10: ok = pb_get_bool(R, WT, &cover); break;
    SKIP;
  }
  return ok && t_ >= 0 && cover;
}

int rk_cover_incoming(const ringkv_node *n, rk_slice msg, uint32_t *shard_out, bool *equal, rk_slice *push) {
  int t_;
  bool ok = true;
  uint32_t version = 0, from = 0, shard = 0, keys = 0;
  uint64_t digest = 0;
  rk_slice p = {NULL, 0};
  FIELDS(msg) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &from); break;
    case 3: ok = pb_get_u32(R, WT, &shard); break;
    case 4: ok = pb_get_fixed64(R, WT, &digest); break;
    case 11: ok = pb_get_bytes(R, WT, &p); break;
    case 12: ok = pb_get_u32(R, WT, &keys); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (version < RINGKV_PROTOCOL_VERSION_MIN || version > RINGKV_PROTOCOL_VERSION) return RINGKV_E_PROTOCOL;
  if (from == n->self || shard >= n->cfg.shards) return RINGKV_E_DECODE;
  /* A page of another phase or ring (a late or repeated copy across an epoch): answered with
   * this node's ring (421), never merged. */
  if (n->cfg.phase != RK_PHASE_LEAVING || from >= n->cfg.cluster_size || !rk_is_replica(n, shard, n->self) ||
      !rk_leaves_shard(n, shard, from)) {
    return RINGKV_E_NOT_SERVING;
  }
  *shard_out = shard;
  /* Markers add nothing to a digest: the key rows must agree too (a shard of markers only
   * at the sender, none here, is not covered by digests of 0). */
  *equal = digest == n->shard_digest[shard] && keys == n->shard_keys[shard];
  *push = p;
  return RINGKV_OK;
}

int rk_cover_reply(const ringkv_node *n, uint32_t shard, bool equal, uint32_t changed, rk_slice *reply) {
  pb_enc e;
  pb_enc_init(&e, (rk_arena *)&n->arena);
  rk_catchup_header(&e, n, shard);
  pb_put_bool(&e, 4, equal);
  pb_put_uint(&e, 10, changed);
  pb_put_bool(&e, 11, true);
  if (e.err) return e.err;
  *reply = pb_result(&e);
  return RINGKV_OK;
}
