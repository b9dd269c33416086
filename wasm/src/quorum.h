/* quorum.h: writes at ?consistency=quorum|all (SPEC: release 2). The accepting node pushes
 * the write at once to the key's other replicas and its answer waits, at most
 * QUORUM_TIMEOUT_MS (the pushes' time limit), until W replicas hold it durably: W =
 * floor(|S|/2) + 1 of a set S for quorum, |S| for all. In joining and switching W counts in
 * the old and in the new set alike (a node in both counts for both); in leaving, and
 * outside a transition, in the new set only. The waits live in memory: a rebuilt core has
 * none, and its executor answers the writes that waited as unknown. */
#ifndef RINGKV_QUORUM_H
#define RINGKV_QUORUM_H

#include "pb.h"

struct ringkv_node;

#define RK_QUORUM_WAITS_MAX 256u   /* writes waiting at one node; more answer at once */

enum { RK_CONSISTENCY_ONE = 1, RK_CONSISTENCY_QUORUM = 2, RK_CONSISTENCY_ALL = 3 };

typedef struct {
  uint32_t id;           /* StepReply.quorum_wait; 0: a free slot */
  uint32_t shard;
  uint32_t need_old, need_new, have_old, have_new;
  bool both;             /* joining or switching: both sets count */
  uint32_t len;          /* the peers pushed to */
  uint32_t *peer, *tag;  /* [len], owned */
  uint8_t *in;           /* [len]: bit 0 in the old set, bit 1 in the new; bit 2 ended */
  uint32_t pending;      /* sends not ended */
  uint32_t holding;      /* replicas that hold the write (this node included) */
} rk_quorum_wait;

typedef struct {
  rk_quorum_wait w[RK_QUORUM_WAITS_MAX];
  uint32_t next_id;
  uint32_t open;         /* waits open: answers look up tags only while some are */
} rk_quorum;

typedef struct {
  uint32_t id, replicas;
  bool reached;
} rk_quorum_outcome;

/* Opens a wait for a write to `shard` at `level` (RK_CONSISTENCY_QUORUM or _ALL); the
 * peers to push to are its `peer` [len]. Returns its index, or -1 when no slot is free or
 * memory ran out; *done is set when the write needs no peer (W reached by this node
 * alone, or no peer counts): the wait is then already closed, with its outcome in *out. */
int rk_quorum_open(rk_quorum *q, const struct ringkv_node *n, uint32_t shard, uint32_t level, bool *done,
                   rk_quorum_outcome *out);
/* The push to peers[i] of wait `w` went out with this tag (0: it could not be sent). */
void rk_quorum_sent(rk_quorum *q, int w, uint32_t i, uint32_t tag);
/* Whether an answer's tag is a quorum push's: *w and *i say which. */
bool rk_quorum_owner(const rk_quorum *q, uint32_t tag, int *w, uint32_t *i);
/* The push ended: `held` when the peer answered holding the write durably. Returns true
 * when the wait closed (W reached, or every push ended first): *out says how. */
bool rk_quorum_ended(rk_quorum *q, int w, uint32_t i, bool held, rk_quorum_outcome *out);
/* Closes wait w unanswered (the step that opened or fed it failed). */
void rk_quorum_close(rk_quorum *q, int w);
/* The id of wait w (valid until it closes). */
uint32_t rk_quorum_id(const rk_quorum *q, int w);
void rk_quorum_free(rk_quorum *q);
/* A consistency level from its request field: 0 (absent) is one; above all: -1. */
static inline int rk_consistency_level(uint32_t v) { return v == 0 ? RK_CONSISTENCY_ONE : v <= RK_CONSISTENCY_ALL ? (int)v : -1; }

#endif
