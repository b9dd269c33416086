/* lease.c: dot leases (SPEC: Semantics, "Dots are leased"). A node takes blocks of
 * RINGKV_LEASE_BLOCK counters from RingControl, which records each block before answering
 * (control.c); the node persists the block's end and hands out no counter beyond it. The
 * next block is asked for when less than half of the current one is left, so only a node's
 * first write after starting with no state waits on RingControl. A block always starts
 * above the node's counter, and above every block its id held before: a node whose storage
 * was lost continues above every dot it ever made. */
#include "fields.h"
#include "lease.h"
#include "node.h"

/* Policy. Units last. */
#define LEASE_RETRY_MS_MIN 200u      /* a lost request is asked again after 0.2, 0.4 ... s */
#define LEASE_BACKOFF_MS_MAX 10000u  /* at most this long */

_Static_assert(RINGKV_LEASE_BLOCK % 2u == 0u, "half a block is ahead of need");

bool rk_lease_usable(const rk_lease *l, uint64_t counter) { return counter < l->end; }

static bool wanted(const rk_lease *l, uint64_t counter) {
  return l->end == 0 || counter >= l->end || l->end - counter < RINGKV_LEASE_BLOCK / 2u;
}

bool rk_lease_due(rk_lease *l, uint64_t counter, uint64_t now) {
  /* The executor owes an outcome; one never reported counts as lost. */
  if (l->tag != 0 && now > l->sent_ms + 2u * (uint64_t)RK_LEASE_TIMEOUT_MS) {
    l->tag = 0;
    l->failures++;
  }
  return l->tag == 0 && wanted(l, counter) && now >= l->retry_ms;
}

uint64_t rk_lease_alarm(const rk_lease *l, uint64_t counter) {
  if (l->tag != 0) return l->sent_ms + 2u * (uint64_t)RK_LEASE_TIMEOUT_MS + 1u;
  if (!wanted(l, counter)) return 0;
  return RK_MAX(l->retry_ms, 1u);
}

bool rk_lease_owns(const rk_lease *l, uint32_t tag) { return tag != 0 && tag == l->tag; }

int rk_lease_request(rk_lease *l, const ringkv_node *n, rk_slice *msg) {
  pb_enc e;
  pb_enc_init(&e, (rk_arena *)&n->arena);
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, n->self);
  /* Above the counter as it is now: RingControl's record covers the blocks before. */
  pb_put_uint(&e, 3, RK_MIN(n->counter, RINGKV_LEASE_ABOVE_MAX));
  pb_put_bool(&e, 4, l->fresh);
  pb_put_fixed64(&e, 5, l->incarnation);
  pb_put_uint(&e, 15, RINGKV_PROTOCOL_VERSION);
  if (e.err) return e.err;
  *msg = pb_result(&e);
  return RINGKV_OK;
}

void rk_lease_sent(rk_lease *l, uint32_t tag, uint64_t now) {
  l->tag = tag;
  l->sent_ms = now;
}

static void backoff(rk_lease *l, uint64_t now) {
  l->failures++;
  uint32_t shift = RK_MIN(l->failures - 1u, 16u);
  l->retry_ms = now + RK_MIN((uint64_t)LEASE_RETRY_MS_MIN << shift, (uint64_t)LEASE_BACKOFF_MS_MAX);
}

int rk_lease_outcome(rk_lease *l, const ringkv_node *n, uint64_t now, const rk_slice *answer, uint64_t *counter,
                     bool *lost) {
  l->tag = 0;
  *lost = false;
  if (answer == NULL) {
    backoff(l, now);
    return RINGKV_OK;
  }
  int t_;
  bool ok = true, was_lost = false;
  uint32_t node = 0;
  uint64_t start = 0, end = 0;
  FIELDS(*answer) {
    case 1: ok = pb_get_u32(R, WT, &node); break;
    case 2: ok = pb_get_u64(R, WT, &start); break;
    case 3: ok = pb_get_u64(R, WT, &end); break;
    case 4: ok = pb_get_bool(R, WT, &was_lost); break;
    SKIP;
  }
  /* Only a whole block for this node, within the counter space, beyond the one held: a
   * forged, stale or repeated answer takes nothing. */
  bool block = start >= 1 && end == start + RINGKV_LEASE_BLOCK - 1u && end <= RINGKV_COUNTER_MAX;
  if (!ok || t_ < 0 || node != n->self || !block || end <= l->end) {
    backoff(l, now);
    return RINGKV_E_DECODE;
  }
  l->end = end;
  l->failures = 0;
  l->retry_ms = 0;
  /* Counters below the block may belong to an earlier life of this id: none is used. */
  if (*counter < start - 1u) *counter = start - 1u;
  *lost = l->fresh && was_lost;
  l->fresh = false;
  return RINGKV_OK;
}

void rk_lease_clamp(rk_lease *l, uint64_t now) {
  if (l->sent_ms > now) l->sent_ms = now;
  if (l->retry_ms > now + LEASE_BACKOFF_MS_MAX) l->retry_ms = now + LEASE_BACKOFF_MS_MAX;
}
