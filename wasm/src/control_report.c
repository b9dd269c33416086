/* control_report.c: RingControl's side of node reports (see report.h, ringkv.proto section
 * 6). A report is validated whole before anything is decided; taking it updates the node's
 * summary row, its shard digest rows, and the count of shards whose replicas disagree, from
 * the rows of the shards it touches only (never all shards, never any key). /v1/cluster
 * then reads one summary row per node and that count. */
#include <stdlib.h>

#include "fields.h"
#include "node.h"
#include "report.h"

/* Policy. Units last. */
#define WAKE_NODES_MAX 32u          /* nodes one /v1/cluster starts (a bounded fan-out) */
#define WAKE_STALE_MS 30000u        /* a node owing a report this long is started again */
/* Digest rows one report's second call takes (16 MiB of them here): a full report of a
 * node at REPLICAS=all beyond about 1,000 nodes x 1,000 shards is refused. */
#define ROWS_MAX (1024u * 1024u)

typedef struct {
  uint32_t version, from;
  uint64_t number, seq, unacked, keys, digest, db_bytes;
  pb_enc counters;         /* the Counter fields, re-encoded (validated) */
  uint32_t *shard;
  uint64_t *shard_digest;
  size_t shards_len;
  bool full;
  rk_slice progress;       /* its NodeProgress, for the control step (empty: none) */
  uint64_t requests;       /* client requests since its last acknowledged report */
  uint32_t hot_shard, hot_requests;
  rk_load load;            /* the summary's window, updated by the second call */
} report_t;

static bool name_ok(rk_slice s) {
  if (s.len < 1 || s.len > RINGKV_COUNTER_NAME_BYTES_MAX) return false;
  for (size_t i = 0; i < s.len; i++) {
    uint8_t c = s.ptr[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

/* Decodes and validates a NodeReport from node ids and shards of `n`'s ring. */
static int report_read(ringkv_node *n, rk_slice b, report_t *r) {
  memset(r, 0, sizeof *r);
  if (b.len > RINGKV_REPORT_BYTES_MAX) return RINGKV_E_DECODE;
  pb_enc_init(&r->counters, &n->arena);
  size_t shards = 0, counters = 0;
  int t_;
  bool ok = true;
  rk_slice s, last_name = {NULL, 0};
  FIELDS(b) {
    case 10: ok = pb_skip(R, WT) && ++shards <= n->cfg.shards; break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  r->shard = rk_alloc_array(&n->arena, shards + 1, sizeof *r->shard);
  r->shard_digest = rk_alloc_array(&n->arena, shards + 1, sizeof *r->shard_digest);
  if (r->shard == NULL || r->shard_digest == NULL) return RINGKV_E_NOMEM;
  FIELDS(b) {
    case 1: ok = pb_get_u32(R, WT, &r->version); break;
    case 2: ok = pb_get_u32(R, WT, &r->from); break;
    case 3: ok = pb_get_u64(R, WT, &r->number); break;
    case 4: ok = pb_get_u64(R, WT, &r->seq); break;
    case 5: ok = pb_get_u64(R, WT, &r->unacked); break;
    case 6: ok = pb_get_u64(R, WT, &r->keys); break;
    case 7: ok = pb_get_fixed64(R, WT, &r->digest); break;
    case 8: ok = pb_get_u64(R, WT, &r->db_bytes); break;
    case 9: {
      ok = pb_get_bytes(R, WT, &s) && ++counters <= RINGKV_REPORT_COUNTERS_MAX;
      if (!ok) break;
      rk_slice name = {NULL, 0};
      uint64_t value = 0;
      FIELDS(s) {
        case 1: ok = pb_get_bytes(R, WT, &name); break;
        case 2: ok = pb_get_u64(R, WT, &value); break;
        SKIP;
      }
      /* Sorted and unique, as the node writes them. */
      ok = ok && t_ >= 0 && name_ok(name) && (last_name.len == 0 || rk_slice_cmp(last_name, name) < 0);
      last_name = name;
      size_t m = pb_begin(&r->counters, 9);
      pb_put_bytes(&r->counters, 1, name);
      pb_put_uint(&r->counters, 2, value);
      pb_end(&r->counters, m);
      break;
    }
    case 10: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      uint32_t shard = 0;
      uint64_t digest = 0;
      FIELDS(s) {
        case 1: ok = pb_get_u32(R, WT, &shard); break;
        case 2: ok = pb_get_fixed64(R, WT, &digest); break;
        SKIP;
      }
      /* Ascending and unique: each shard's new digest is named once. */
      ok = ok && t_ >= 0 && shard < n->cfg.shards && (r->shards_len == 0 || r->shard[r->shards_len - 1] < shard);
      if (!ok) break;
      r->shard[r->shards_len] = shard;
      r->shard_digest[r->shards_len++] = digest;
      break;
    }
    case 11: ok = pb_get_bool(R, WT, &r->full); break;
    case 31: ok = pb_get_bytes(R, WT, &r->progress); break;
    case 32: ok = pb_get_u64(R, WT, &r->requests); break;
    case 33: ok = pb_get_u32(R, WT, &r->hot_shard); break;
    case 34: ok = pb_get_u32(R, WT, &r->hot_requests); break;
    SKIP;
  }
  if (!ok || t_ < 0 || r->counters.err) return r->counters.err ? r->counters.err : RINGKV_E_DECODE;
  if (r->version < RINGKV_REPORT_VERSION_MIN || r->version > RINGKV_PROTOCOL_VERSION) return RINGKV_E_PROTOCOL;
  if (r->from >= n->cfg.cluster_size || r->number == 0) return RINGKV_E_VALUE;
  if (r->hot_shard >= n->cfg.shards || r->hot_requests > r->requests) return RINGKV_E_VALUE;
  if (r->progress.len > 0) {
    /* A node confirms for itself only (proto3: node 0 is the absent field). */
    uint32_t node = 0;
    FIELDS(r->progress) {
      case 1: ok = pb_get_u32(R, WT, &node); break;
      SKIP;
    }
    if (!ok || t_ < 0 || node != r->from) return RINGKV_E_DECODE;
  }
  return RINGKV_OK;
}

typedef struct {
  uint32_t shard, node;
  uint64_t digest;
} row_t;

static int row_cmp(const void *a, const void *b) {
  const row_t *x = a, *y = b;
  if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
  return x->node < y->node ? -1 : x->node > y->node;
}

static int u32_cmp(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* The digest `node` holds for the shard whose rows are rows[lo, hi) (0: none). */
static uint64_t digest_in(const row_t *rows, size_t lo, size_t hi, uint32_t node) {
  for (size_t i = lo; i < hi; i++) {
    if (rows[i].node == node) return rows[i].digest;
  }
  return 0;
}

/* Whether the shard's replicas disagree, with `self`'s digest taken as `mine`. */
static bool shard_differs(const ringkv_node *n, uint32_t shard, const row_t *rows, size_t lo, size_t hi, uint32_t self,
                          uint64_t mine) {
  uint32_t len;
  const uint16_t *reps = rk_replicas_of(n, shard, &len);
  uint64_t first = 0;
  for (uint32_t i = 0; i < len; i++) {
    uint64_t d = reps[i] == self ? mine : digest_in(rows, lo, hi, reps[i]);
    if (i == 0) first = d;
    else if (d != first) return true;
  }
  return false;
}

static void summary_write(pb_enc *e, const report_t *r) {
  pb_put_uint(e, 1, r->version);
  pb_put_uint(e, 2, r->from);
  pb_put_uint(e, 3, r->number);
  pb_put_uint(e, 4, r->seq);
  pb_put_uint(e, 5, r->unacked);
  pb_put_uint(e, 6, r->keys);
  pb_put_fixed64(e, 7, r->digest);
  pb_put_uint(e, 8, r->db_bytes);
  rk_slice c = pb_result(&r->counters);
  pb_put_raw(e, c.ptr, c.len);
  const rk_load *l = &r->load;
  pb_put_uint(e, 40, l->window_ms);
  pb_put_uint(e, 41, l->window_requests);
  pb_put_uint(e, 42, l->rate_milli);
  pb_put_uint(e, 43, l->hot_shard);
  pb_put_uint(e, 44, l->hot_milli);
  pb_put_bool(e, 45, l->known);
}

/* The load fields of a stored summary. */
static bool load_read(rk_slice summary, rk_load *l) {
  memset(l, 0, sizeof *l);
  int t_;
  bool ok = true;
  FIELDS(summary) {
    case 40: ok = pb_get_u64(R, WT, &l->window_ms); break;
    case 41: ok = pb_get_u64(R, WT, &l->window_requests); break;
    case 42: ok = pb_get_u64(R, WT, &l->rate_milli); break;
    case 43: ok = pb_get_u32(R, WT, &l->hot_shard); break;
    case 44: ok = pb_get_u32(R, WT, &l->hot_milli); break;
    case 45: ok = pb_get_bool(R, WT, &l->known); break;
    SKIP;
  }
  return ok && t_ >= 0;
}

/* requests x 1000 x 1000 / ms, saturating: requests per 1000 s. */
static uint64_t rate_of(uint64_t requests, uint64_t ms) {
  if (ms == 0) return 0;
  if (requests > UINT64_MAX / 1000000u) return UINT64_MAX / ms;
  return requests * 1000000u / ms;
}

void rk_load_take(rk_load *l, uint64_t now, uint64_t window, uint64_t requests, uint32_t hot_shard,
                  uint32_t hot_requests) {
  if (window == 0) window = RK_LOAD_WINDOW_MS_DEFAULT;
  /* A first report, or a clock that went back: a new window from now. */
  if (l->window_ms == 0 || now < l->window_ms) {
    l->window_ms = RK_MAX(now, 1u);
    l->window_requests = 0;
  }
  l->window_requests = rk_add_sat(l->window_requests, requests);
  if (requests > 0 && hot_requests > 0) {
    l->hot_shard = hot_shard;
    l->hot_milli = (uint32_t)RK_MIN((uint64_t)hot_requests * 1000u / requests, 1000u);
  }
  if (now - l->window_ms >= window) {
    l->rate_milli = rate_of(l->window_requests, now - l->window_ms);
    l->known = true;
    l->window_ms = now;
    l->window_requests = 0;
  }
}

uint64_t rk_load_rate(const rk_load *l, uint64_t now, uint64_t window, bool *known) {
  if (window == 0) window = RK_LOAD_WINDOW_MS_DEFAULT;
  /* A window no report closed (a node gone quiet): what it counted over the time so far. */
  if (l->window_ms != 0 && now >= l->window_ms && now - l->window_ms >= window) {
    *known = true;
    return rate_of(l->window_requests, now - l->window_ms);
  }
  *known = l->known;
  return l->rate_milli;
}

/* The NodeShard rows in field `field` of `msg`: of this ring's shards and nodes only (rows
 * of other rings are not this ring's to judge), sorted by (shard, node), repeats dropped. */
static int rows_read(ringkv_node *n, rk_slice msg, uint32_t field, row_t **out, size_t *out_len) {
  int t_;
  bool ok = true;
  size_t len = 0;
  rk_slice s;
  FIELDS(msg) {
    default:
      if (f_ == field) ok = pb_skip(R, WT) && ++len <= ROWS_MAX;
      else ok = pb_skip(R, WT);
      break;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  row_t *rows = rk_alloc_array(&n->arena, len + 1, sizeof *rows);
  if (rows == NULL) return RINGKV_E_NOMEM;
  len = 0;
  FIELDS(msg) {
    default:
      if (f_ != field) {
        ok = pb_skip(R, WT);
        break;
      }
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      row_t row = {0, 0, 0};
      FIELDS(s) {
        case 1: ok = pb_get_u32(R, WT, &row.shard); break;
        case 2: ok = pb_get_u32(R, WT, &row.node); break;
        case 3: ok = pb_get_fixed64(R, WT, &row.digest); break;
        SKIP;
      }
      if (ok && row.shard < n->cfg.shards && row.node < n->cfg.cluster_size) rows[len++] = row;
      break;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  qsort(rows, len, sizeof *rows, row_cmp);
  size_t kept = 0;
  for (size_t i = 0; i < len; i++) {
    if (kept > 0 && row_cmp(&rows[kept - 1], &rows[i]) == 0) continue;
    rows[kept++] = rows[i];
  }
  *out = rows;
  *out_len = kept;
  return RINGKV_OK;
}

/* The second call: the loaded rows in, the writes out. */
static int report_apply(ringkv_node *n, report_t *r, rk_slice loaded, pb_enc *e) {
  int t_;
  bool ok = true, known = false;
  uint64_t stored = 0, differing = 0, now = 0, window = 0;
  rk_slice summary = {NULL, 0};
  row_t *rows;
  size_t rows_len;
  RK_TRY(rows_read(n, loaded, 3, &rows, &rows_len));
  FIELDS(loaded) {
    case 1: ok = pb_get_bool(R, WT, &known); break;
    case 2: ok = pb_get_u64(R, WT, &stored); break;
    case 4: ok = pb_get_u64(R, WT, &differing); break;
    case 5: ok = pb_get_bytes(R, WT, &summary); break;
    case 6: ok = pb_get_u64(R, WT, &now); break;
    case 7: ok = pb_get_u64(R, WT, &window); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (known && r->number <= stored) {
    pb_put_bool(e, 2, true);
    return RINGKV_OK;
  }
  /* The node's load over the window (a summary that does not decode starts a new one). */
  if (!known || !load_read(summary, &r->load)) memset(&r->load, 0, sizeof r->load);
  rk_load_take(&r->load, now, window, r->requests, r->hot_shard, r->hot_requests);
  /* The shards this report touches: those it names, and with `full` every shard the node
   * held a row of (the ones it does not name are gone). */
  uint32_t *touched = rk_alloc_array(&n->arena, r->shards_len + rows_len + 1, sizeof *touched);
  if (touched == NULL) return RINGKV_E_NOMEM;
  size_t tl = 0;
  for (size_t i = 0; i < r->shards_len; i++) touched[tl++] = r->shard[i];
  if (r->full) {
    for (size_t i = 0; i < rows_len; i++) {
      if (rows[i].node == r->from) touched[tl++] = rows[i].shard;
    }
  }
  qsort(touched, tl, sizeof *touched, u32_cmp);
  pb_enc put, drop;
  pb_enc_init(&put, &n->arena);
  pb_enc_init(&drop, &n->arena);
  size_t lo = 0, ri = 0, prev = SIZE_MAX;
  int64_t delta = 0;
  for (size_t i = 0; i < tl; i++) {
    uint32_t sh = touched[i];
    if (prev != SIZE_MAX && touched[prev] == sh) continue;
    prev = i;
    while (lo < rows_len && rows[lo].shard < sh) lo++;
    size_t hi = lo;
    while (hi < rows_len && rows[hi].shard == sh) hi++;
    while (ri < r->shards_len && r->shard[ri] < sh) ri++;
    uint64_t old = digest_in(rows, lo, hi, r->from);
    uint64_t mine = ri < r->shards_len && r->shard[ri] == sh ? r->shard_digest[ri] : r->full ? 0 : old;
    bool before = shard_differs(n, sh, rows, lo, hi, r->from, old);
    bool after = shard_differs(n, sh, rows, lo, hi, r->from, mine);
    delta += (int64_t)after - (int64_t)before;
    if (mine == old) continue;
    if (mine == 0) {
      pb_put_varint_raw(&drop, sh);
    } else {
      size_t m = pb_begin(&put, 5);
      pb_put_uint(&put, 1, sh);
      pb_put_fixed64(&put, 2, mine);
      pb_end(&put, m);
    }
  }
  /* The stored count is kept with the rows it counts; it cannot go below 0. */
  if (delta < 0 && (uint64_t)-delta > differing) delta = -(int64_t)differing;
  size_t m = pb_begin(e, 3);
  summary_write(e, r);
  pb_end(e, m);
  pb_put_uint(e, 4, r->number);
  rk_slice p = pb_result(&put);
  pb_put_raw(e, p.ptr, p.len);
  rk_slice d = pb_result(&drop);
  if (d.len > 0) {
    pb_put_varint_raw(e, (6u << 3) | PB_LEN);
    pb_put_varint_raw(e, d.len);
    pb_put_raw(e, d.ptr, d.len);
  }
  pb_put_uint(e, 7, (uint64_t)((int64_t)differing + delta));
  if (put.err || drop.err) return put.err ? put.err : drop.err;
  return RINGKV_OK;
}

int rk_control_report(ringkv_node *n, rk_slice req, rk_slice *reply) {
  int t_;
  bool ok = true, has_loaded = false;
  rk_slice report = {NULL, 0}, loaded = {NULL, 0};
  FIELDS(req) {
    case 1: ok = pb_get_bytes(R, WT, &report); break;
    case 2: ok = pb_get_bytes(R, WT, &loaded); has_loaded = ok; break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  report_t r;
  RK_TRY(report_read(n, report, &r));
  pb_enc e;
  pb_enc_init(&e, &n->arena);
  if (!has_loaded) {
    size_t m = pb_begin(&e, 1);
    pb_put_uint(&e, 1, r.from);
    pb_put_packed_u32(&e, 2, r.shard, r.shards_len);
    pb_put_bool(&e, 3, r.full);
    pb_end(&e, m);
    pb_put_bytes(&e, 8, r.progress);
  } else {
    RK_TRY(report_apply(n, &r, loaded, &e));
  }
  if (e.err) return e.err;
  *reply = pb_result(&e);
  return RINGKV_OK;
}

/* ---------------------------------------------------------------------------------------
 * /v1/cluster */

typedef struct {
  bool reported;
  uint64_t received_ms;
  rk_slice summary;
} slot_t;

static const char *const GOSSIP_COUNTERS[] = {"rounds", "messages_sent", "bytes_sent", "entries_sent", "entries_applied"};

/* A Counter of a stored summary. */
static bool counter_read(rk_slice s, rk_slice *name, uint64_t *value) {
  int t_;
  bool ok = true;
  *name = (rk_slice){NULL, 0};
  *value = 0;
  FIELDS(s) {
    case 1: ok = pb_get_bytes(R, WT, name); break;
    case 2: ok = pb_get_u64(R, WT, value); break;
    SKIP;
  }
  return ok && t_ >= 0;
}

/* One node's status from its summary; false when the summary does not decode. */
static bool status_write(pb_enc *e, uint32_t id, const slot_t *slot, uint64_t now, uint64_t window, uint64_t *unacked) {
  int t_;
  bool ok = true;
  uint64_t seq = 0, keys = 0, digest = 0, db = 0, gossip[5] = {0, 0, 0, 0, 0};
  uint32_t version = 0;
  rk_slice s;
  *unacked = 0;
  size_t m = pb_begin(e, 1);
  pb_put_uint(e, 1, id);
  if (!slot->reported) {
    pb_end(e, m);
    return true;
  }
  FIELDS(slot->summary) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 4: ok = pb_get_u64(R, WT, &seq); break;
    case 5: ok = pb_get_u64(R, WT, unacked); break;
    case 6: ok = pb_get_u64(R, WT, &keys); break;
    case 7: ok = pb_get_fixed64(R, WT, &digest); break;
    case 8: ok = pb_get_u64(R, WT, &db); break;
    SKIP;
  }
  if (!ok || t_ < 0) {
    pb_end(e, m);
    return false;
  }
  pb_put_bool(e, 2, true);
  pb_put_uint(e, 3, keys);
  pb_put_fixed64(e, 4, digest);
  FIELDS(slot->summary) {
    case 9: {
      rk_slice name;
      uint64_t value;
      ok = pb_get_bytes(R, WT, &s) && counter_read(s, &name, &value);
      if (!ok) break;
      for (size_t i = 0; i < 5; i++) {
        size_t l = strlen(GOSSIP_COUNTERS[i]);
        if (name.len == l && memcmp(name.ptr, GOSSIP_COUNTERS[i], l) == 0) gossip[i] = value;
      }
      break;
    }
    SKIP;
  }
  for (size_t i = 0; i < 5; i++) pb_put_uint(e, 5 + (uint32_t)i, gossip[i]);
  static const char prefix[] = "refused_";
  size_t pl = sizeof prefix - 1;
  FIELDS(slot->summary) {
    case 9: {
      rk_slice name;
      uint64_t value;
      ok = pb_get_bytes(R, WT, &s) && counter_read(s, &name, &value);
      if (!ok) break;
      if (name.len <= pl || memcmp(name.ptr, prefix, pl) != 0) break;
      size_t c = pb_begin(e, 10);
      rk_slice reason = {name.ptr + pl, name.len - pl};
      pb_put_bytes(e, 1, reason);
      pb_put_uint(e, 2, value);
      pb_end(e, c);
      break;
    }
    SKIP;
  }
  pb_put_uint(e, 11, *unacked);
  pb_put_uint(e, 12, seq);
  pb_put_uint(e, 13, db);
  pb_put_uint(e, 14, version);
  rk_load load;
  bool known = false;
  if (load_read(slot->summary, &load)) {
    uint64_t rate = rk_load_rate(&load, now, window, &known);
    pb_put_bool(e, 15, known);
    pb_put_uint(e, 16, rate);
    pb_put_uint(e, 17, load.hot_shard);
    pb_put_uint(e, 18, load.hot_milli);
  }
  pb_end(e, m);
  return true;
}

int rk_control_cluster(ringkv_node *n, rk_slice req, rk_slice *reply) {
  uint32_t size = n->cfg.cluster_size;
  slot_t *slots = rk_zalloc(&n->arena, size * sizeof *slots);
  if (slots == NULL) return RINGKV_E_NOMEM;
  int t_;
  bool ok = true;
  uint64_t differing = 0, now = 0, window = 0;
  uint32_t phase = 0;
  bool count_moving = false, recount = false;
  rk_slice s;
  FIELDS(req) {
    case 1: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      uint32_t node = 0;   /* proto3: node 0 is the absent field */
      slot_t slot = {true, 0, {NULL, 0}};
      FIELDS(s) {
        case 1: ok = pb_get_u32(R, WT, &node); break;
        case 2: ok = pb_get_bytes(R, WT, &slot.summary); break;
        case 3: ok = pb_get_u64(R, WT, &slot.received_ms); break;
        SKIP;
      }
      /* Summaries of ids outside this ring (an earlier, larger one) are not shown. */
      if (ok && node < size) slots[node] = slot;
      break;
    }
    case 2: ok = pb_get_u64(R, WT, &differing); break;
    case 3: ok = pb_get_u32(R, WT, &phase); break;
    case 4: ok = pb_get_u64(R, WT, &now); break;
    case 5: ok = pb_get_bool(R, WT, &count_moving); break;
    case 7: ok = pb_get_bool(R, WT, &recount); break;
    case 8: ok = pb_get_u64(R, WT, &window); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  /* The stored count of disagreeing shards was kept on the ring of each report: a new ring
   * (other replica sets) counts again from every stored row, once. */
  if (recount) {
    row_t *rows;
    size_t rows_len;
    RK_TRY(rows_read(n, req, 6, &rows, &rows_len));
    differing = 0;
    for (size_t lo = 0; lo < rows_len;) {
      size_t hi = lo;
      while (hi < rows_len && rows[hi].shard == rows[lo].shard) hi++;
      differing += shard_differs(n, rows[lo].shard, rows, lo, hi, UINT32_MAX, 0);
      lo = hi;
    }
  }
  uint32_t moving = 0;
  for (uint32_t sh = 0; count_moving && sh < n->cfg.shards; sh++) moving += rk_shard_moving(n, sh);
  pb_enc e;
  pb_enc_init(&e, &n->arena);
  /* converged (SPEC, release 2): every node reported (and, by when nodes report, since its
   * last change), none has unacknowledged outgoing changes, no transition, and every
   * shard's replicas reported equal digests. */
  bool converged = phase == 0 && differing == 0;
  uint32_t wake[WAKE_NODES_MAX];
  size_t wake_len = 0;
  for (uint32_t id = 0; id < size; id++) {
    uint64_t unacked = 0;
    bool decoded = status_write(&e, id, &slots[id], now, window, &unacked);
    bool reported = slots[id].reported && decoded;
    if (!reported || unacked > 0) converged = false;
    bool asleep = unacked > 0 && now > slots[id].received_ms + WAKE_STALE_MS;
    if ((!reported || asleep) && wake_len < WAKE_NODES_MAX) wake[wake_len++] = id;
  }
  pb_put_bool(&e, 2, converged);
  pb_put_packed_u32(&e, 3, wake, wake_len);
  pb_put_uint(&e, 4, moving);
  if (recount) pb_put_uint(&e, 5, differing);
  if (e.err) return e.err;
  *reply = pb_result(&e);
  return RINGKV_OK;
}
