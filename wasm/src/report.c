/* report.c: a node's reports to RingControl (SPEC: Storage, "A node reports to RingControl
 * what changed ..."): the live key count kept per row write, which shard digests changed
 * since RingControl last acknowledged them, when a report goes (at once on the first
 * change after a quiet report, otherwise at most once per max(GOSSIP_INTERVAL_MS, N x
 * 5 ms), never when nothing changed), and its retries. step.c calls these; the executor
 * only loads the facts it alone knows (database size, counters) and performs the send. */
#include <stdlib.h>

#include "fields.h"
#include "node.h"
#include "report.h"

/* Policy. Units last. */
#define REPORT_MS_PER_NODE 5u          /* the rate limit grows with N: RingControl takes at
                                          most about 200 reports a second at any size */
#define REPORT_BACKOFF_MS_MAX 30000u   /* a lost report is sent again after 1, 2, 4 ...
                                          intervals, at most this long */

static uint64_t rate_ms(const ringkv_node *n) {
  return RK_MAX(n->cfg.gossip_interval_ms, (uint64_t)n->cfg.cluster_size * REPORT_MS_PER_NODE);
}

void rk_report_start(rk_report *r) {
  /* An earlier build kept no count and reported nothing (report_state 0): count once,
   * report in full. A restart with changes unacknowledged does not know which shards
   * RingControl holds. (A state of this build always has report_state set.) */
  r->counted = r->state != RK_REPORT_NEVER;
  r->full = r->state != RK_REPORT_DONE;
  r->changed = r->state != RK_REPORT_DONE || r->version != RINGKV_PROTOCOL_VERSION;
  r->quiet = true;
}

int rk_report_ready(rk_report *r, const ringkv_node *n) {
  if (r->reported != NULL || !n->cfg.reports) return RINGKV_OK;
  r->reported = calloc(n->cfg.shards, sizeof *r->reported);
  r->shard_requests = calloc(n->cfg.shards, sizeof *r->shard_requests);
  if (r->reported == NULL || r->shard_requests == NULL) return RINGKV_E_NOMEM;
  /* Everything was acknowledged before this instance: RingControl holds these digests
   * (taken before the instance's first event changes any). */
  if (!r->full) memcpy(r->reported, n->shard_digest, n->cfg.shards * sizeof *r->reported);
  return RINGKV_OK;
}

void rk_report_free(rk_report *r) {
  free(r->reported);
  free(r->shard_requests);
  free(r->fl_shard);
  free(r->fl_digest);
  free(r->reply);
  memset(r, 0, sizeof *r);
}

void rk_report_state_write(pb_enc *e, const rk_report *r) {
  pb_put_uint(e, 20, r->live_keys);
  pb_put_uint(e, 21, r->state);
  pb_put_uint(e, 22, r->number);
  pb_put_uint(e, 23, r->version);
}

/* The winner (highest (hlc, node)) of stored metadata, read without decoding the whole
 * register: its siblings' dot node, hlc and deleted flag. */
bool rk_meta_live(rk_slice meta) {
  int t_;
  bool ok = true, have = false, live = false;
  uint64_t best_hlc = 0;
  uint32_t best_node = 0;
  rk_slice sib;
  FIELDS(meta) {
    case 1: {
      ok = pb_get_bytes(R, WT, &sib);
      if (!ok) break;
      uint64_t hlc = 0;
      uint32_t node = 0;
      bool deleted = false;
      rk_slice dot = {NULL, 0};
      FIELDS(sib) {
        case 1: ok = pb_get_bytes(R, WT, &dot); break;
        case 2: ok = pb_get_fixed64(R, WT, &hlc); break;
        case 3: ok = pb_get_bool(R, WT, &deleted); break;
        SKIP;
      }
      FIELDS(dot) {
        case 1: ok = pb_get_u32(R, WT, &node); break;
        SKIP;
      }
      if (!have || hlc > best_hlc || (hlc == best_hlc && node > best_node)) {
        have = true;
        best_hlc = hlc;
        best_node = node;
        live = !deleted;
      }
      break;
    }
    SKIP;
  }
  return ok && live;
}

void rk_report_row(rk_report *r, bool was_live, rk_slice applied) {
  int t_;
  bool ok = true, live = false, has_meta = false;
  rk_slice s;
  FIELDS(applied) {
    case 3: ok = pb_get_bytes(R, WT, &s); has_meta = ok && s.len > 0; break;
    case 9: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      FIELDS(s) {
        case 1: ok = pb_get_bool(R, WT, &live); break;
        SKIP;
      }
      break;
    }
    SKIP;
  }
  live = live && has_meta;
  if (live && !was_live) r->live_keys++;
  else if (!live && was_live && r->live_keys > 0) r->live_keys--;
}

void rk_report_request(rk_report *r, const ringkv_node *n, uint32_t shard) {
  if (!n->cfg.reports || r->shard_requests == NULL || shard >= n->cfg.shards) return;
  r->requests++;
  if (r->shard_requests[shard] < UINT32_MAX) r->shard_requests[shard]++;
  rk_report_changed(r);
}

void rk_report_changed(rk_report *r) {
  r->changed = true;
  if (r->state == RK_REPORT_DONE) r->state = RK_REPORT_PENDING;
}

bool rk_report_owns(const rk_report *r, uint32_t tag) { return tag != 0 && tag == r->tag; }

static void flight_clear(rk_report *r) {
  free(r->fl_shard);
  free(r->fl_digest);
  r->fl_shard = NULL;
  r->fl_digest = NULL;
  r->fl_len = 0;
  r->fl_full = false;
  r->tag = 0;
}

void rk_report_outcome(rk_report *r, const ringkv_node *n, uint64_t now, bool answered, bool refused) {
  if (answered && r->reported != NULL) {
    if (r->fl_full) memset(r->reported, 0, n->cfg.shards * sizeof *r->reported);
    for (size_t i = 0; i < r->fl_len; i++) r->reported[r->fl_shard[i]] = r->fl_digest[i];
    if (r->fl_full) r->full = false;
    /* The requests it carried are RingControl's; the shard counts start again. */
    r->requests -= RK_MIN(r->fl_requests, r->requests);
    if (r->shard_requests != NULL) memset(r->shard_requests, 0, n->cfg.shards * sizeof *r->shard_requests);
    r->failures = 0;
    r->retry_ms = 0;
    r->version = RINGKV_PROTOCOL_VERSION;
    if (!r->changed) r->state = RK_REPORT_DONE;
  } else {
    /* Lost: what it carried still differs from `reported`, so the next one carries it.
     * Refused: RingControl may hold less than this node thinks; the next is full. */
    r->changed = true;
    if (refused) r->full = true;
    r->failures++;
    uint32_t shift = RK_MIN(r->failures - 1u, 16u);
    r->retry_ms = now + RK_MIN(n->cfg.gossip_interval_ms << shift, (uint64_t)REPORT_BACKOFF_MS_MAX);
  }
  flight_clear(r);
}

bool rk_report_due(rk_report *r, const ringkv_node *n, uint64_t now) {
  if (!n->cfg.reports) return false;
  /* The executor owes an outcome; one never reported counts as lost. */
  if (r->tag != 0 && now > r->sent_ms + 2u * (uint64_t)RK_REPORT_TIMEOUT_MS) rk_report_outcome(r, n, now, false, false);
  if (!r->changed || r->tag != 0 || r->waiting || now < r->retry_ms) return false;
  return r->quiet || now >= r->last_ms + rate_ms(n);
}

uint64_t rk_report_alarm(const rk_report *r, const ringkv_node *n) {
  if (!n->cfg.reports) return 0;
  if (r->tag != 0) return r->sent_ms + 2u * (uint64_t)RK_REPORT_TIMEOUT_MS + 1u;
  if (!r->changed) return 0;
  uint64_t at = r->quiet ? 0 : r->last_ms + rate_ms(n);
  return RK_MAX(RK_MAX(at, r->retry_ms), 1u);
}

int rk_report_ask(rk_report *r, pb_enc *load, rk_slice reply) {
  free(r->reply);
  r->reply = NULL;
  r->reply_len = 0;
  if (reply.len > 0) {
    r->reply = malloc(reply.len);
    if (r->reply == NULL) return RINGKV_E_NOMEM;
    memcpy(r->reply, reply.ptr, reply.len);
    r->reply_len = reply.len;
  }
  pb_put_bool(load, 20, true);
  pb_put_bool(load, 21, !r->counted);
  r->waiting = true;
  return RINGKV_OK;
}

void rk_report_dropped(rk_report *r) { r->waiting = false; }

void rk_report_clamp(rk_report *r, uint64_t now) {
  if (r->last_ms > now) r->last_ms = now;
  if (r->sent_ms > now) r->sent_ms = now;
  if (r->retry_ms > now + REPORT_BACKOFF_MS_MAX) r->retry_ms = now + REPORT_BACKOFF_MS_MAX;
}

typedef struct {
  rk_slice name;
  uint64_t value;
} counter_t;

void rk_report_progress_write(pb_enc *e, const ringkv_node *n, uint32_t field) {
  uint32_t copying, dropping;
  rk_step_progress(n, &copying, &dropping);
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, n->self);
  pb_put_uint(e, 2, n->cfg.epoch);
  pb_put_uint(e, 3, copying);
  pb_put_uint(e, 4, dropping);
  pb_end(e, m);
}

static int counter_cmp(const void *a, const void *b) {
  return rk_slice_cmp(((const counter_t *)a)->name, ((const counter_t *)b)->name);
}

static bool counter_name_ok(rk_slice s) {
  if (s.len < 1 || s.len > RINGKV_COUNTER_NAME_BYTES_MAX) return false;
  for (size_t i = 0; i < s.len; i++) {
    uint8_t c = s.ptr[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

int rk_report_build(rk_report *r, ringkv_node *n, uint64_t now, uint64_t seq, uint64_t unacked, rk_slice loaded,
                    rk_slice *msg, rk_slice *reply) {
  r->waiting = false;
  int t_;
  bool ok = true;
  uint64_t db_bytes = 0, count = 0;
  counter_t counters[RINGKV_REPORT_COUNTERS_MAX];
  size_t counters_len = 0;
  rk_slice facts = {NULL, 0}, s;
  FIELDS(loaded) {
    case 20: ok = pb_get_bytes(R, WT, &facts); break;
    case 21: ok = pb_get_u64(R, WT, &count); break;
    SKIP;
  }
  FIELDS(facts) {
    case 1: ok = pb_get_u64(R, WT, &db_bytes); break;
    case 2: {
      ok = pb_get_bytes(R, WT, &s);
      if (!ok) break;
      counter_t c = {{NULL, 0}, 0};
      FIELDS(s) {
        case 1: ok = pb_get_bytes(R, WT, &c.name); break;
        case 2: ok = pb_get_u64(R, WT, &c.value); break;
        SKIP;
      }
      /* The executor's own counters: one it should not have is left out, not fatal. */
      if (ok && counter_name_ok(c.name) && counters_len < RINGKV_REPORT_COUNTERS_MAX) counters[counters_len++] = c;
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  /* This Loaded answers the ask: its count is there (0 is the absent field). */
  if (!r->counted) {
    r->live_keys = count;
    r->counted = true;
  }
  if (r->reported == NULL) return RINGKV_E_STATE;
  qsort(counters, counters_len, sizeof *counters, counter_cmp);
  size_t kept = 0;
  for (size_t i = 0; i < counters_len; i++) {
    if (kept > 0 && rk_slice_eq(counters[kept - 1].name, counters[i].name)) counters[kept - 1] = counters[i];
    else counters[kept++] = counters[i];
  }
  /* The shards to carry: changed since acknowledged (or all held, when full). */
  size_t len = 0;
  uint64_t digest = 0;
  for (uint32_t sh = 0; sh < n->cfg.shards; sh++) {
    digest += n->shard_digest[sh];
    if (r->full ? n->shard_digest[sh] != 0 : n->shard_digest[sh] != r->reported[sh]) len++;
  }
  flight_clear(r);
  r->fl_shard = malloc((len ? len : 1) * sizeof *r->fl_shard);
  r->fl_digest = malloc((len ? len : 1) * sizeof *r->fl_digest);
  if (r->fl_shard == NULL || r->fl_digest == NULL) {
    flight_clear(r);
    return RINGKV_E_NOMEM;
  }
  pb_enc e;
  pb_enc_init(&e, &n->arena);
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, n->self);
  pb_put_uint(&e, 3, r->number + 1u);
  pb_put_uint(&e, 4, seq);
  pb_put_uint(&e, 5, unacked);
  pb_put_uint(&e, 6, r->live_keys);
  pb_put_fixed64(&e, 7, digest);
  pb_put_uint(&e, 8, db_bytes);
  for (size_t i = 0; i < kept; i++) {
    size_t m = pb_begin(&e, 9);
    pb_put_bytes(&e, 1, counters[i].name);
    pb_put_uint(&e, 2, counters[i].value);
    pb_end(&e, m);
  }
  for (uint32_t sh = 0; sh < n->cfg.shards; sh++) {
    uint64_t d = n->shard_digest[sh];
    if (r->full ? d == 0 : d == r->reported[sh]) continue;
    r->fl_shard[r->fl_len] = sh;
    r->fl_digest[r->fl_len++] = d;
    size_t m = pb_begin(&e, 10);
    pb_put_uint(&e, 1, sh);
    pb_put_fixed64(&e, 2, d);
    pb_end(&e, m);
  }
  pb_put_bool(&e, 11, r->full);
  pb_put_uint(&e, 15, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 30, r->catching_up);
  rk_report_progress_write(&e, n, 31);
  /* The load: requests since the last acknowledged report, and its busiest shard. */
  uint32_t hot = 0;
  for (uint32_t sh = 1; r->shard_requests != NULL && sh < n->cfg.shards; sh++) {
    if (r->shard_requests[sh] > r->shard_requests[hot]) hot = sh;
  }
  r->fl_requests = r->requests;
  pb_put_uint(&e, 32, r->requests);
  if (r->shard_requests != NULL && r->shard_requests[hot] > 0) {
    pb_put_uint(&e, 33, hot);
    pb_put_uint(&e, 34, r->shard_requests[hot]);
  }
  if (e.err) {
    flight_clear(r);
    return e.err;
  }
  r->fl_full = r->full;
  r->number++;
  r->changed = false;
  r->quiet = unacked == 0;
  r->last_ms = now;
  *msg = pb_result(&e);
  reply->ptr = r->reply;
  reply->len = r->reply_len;
  return RINGKV_OK;
}

void rk_report_sent(rk_report *r, uint32_t tag, uint64_t now) {
  r->tag = tag;
  r->sent_ms = now;
}
