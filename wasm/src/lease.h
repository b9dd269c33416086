/* lease.h: a node's dot leases from RingControl (lease.c, driven by step.c): when a block is
 * asked for, what an answer must hold to be taken, and whether a counter may be handed out.
 * Internal. */
#ifndef RINGKV_LEASE_H
#define RINGKV_LEASE_H

#include "pb.h"

struct ringkv_node;

/* A lease request unanswered by then is lost (its Send's time limit). */
#define RK_LEASE_TIMEOUT_MS 10000u

typedef struct {
  /* Persisted in StepState (fields 30, 31). */
  uint64_t end;        /* the granted block's end (0: none yet) */
  bool fresh;          /* started with no state; RingControl not heard from since */
  uint64_t incarnation;   /* field 34: drawn at a start with no state */
  /* In memory: a request in flight is forgotten with the instance (as a lost message). */
  uint32_t tag, failures;
  uint64_t sent_ms, retry_ms;
} rk_lease;

/* A block may hand out counter + 1 (a client write's dot). */
bool rk_lease_usable(const rk_lease *l, uint64_t counter);
/* Whether a request is due now: none in flight, past any back-off, and the block is
 * missing, used up or less than half left. */
bool rk_lease_due(rk_lease *l, uint64_t counter, uint64_t now);
/* When the node must wake for its lease (0: never). */
uint64_t rk_lease_alarm(const rk_lease *l, uint64_t counter);
bool rk_lease_owns(const rk_lease *l, uint32_t tag);
/* The LeaseRequest into the arena. */
int rk_lease_request(rk_lease *l, const struct ringkv_node *n, rk_slice *msg);
void rk_lease_sent(rk_lease *l, uint32_t tag, uint64_t now);
/* The request's outcome. On an answer that holds a valid block for this node beyond the
 * current one, the block is taken (*counter raised to just below its start) and *lost
 * tells whether the node's storage was lost; RINGKV_E_DECODE when the answer does not
 * decode or holds no such block (nothing taken, asked again after a back-off). */
int rk_lease_outcome(rk_lease *l, const struct ringkv_node *n, uint64_t now, const rk_slice *answer,
                     uint64_t *counter, bool *lost);
void rk_lease_clamp(rk_lease *l, uint64_t now);

#endif
