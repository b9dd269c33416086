/* resize.h: RingControl's resize decisions (SPEC: Resizing), part of its control step
 * (control.c): a resize's four epochs, the barrier between them, the caught-up and dropped
 * gates, who the transition waits for, and when each node is sent the current epoch. */
#ifndef RINGKV_RESIZE_H
#define RINGKV_RESIZE_H

#include "util.h"

enum { RK_PHASE_NONE = 0, RK_PHASE_JOINING = 1, RK_PHASE_SWITCHING = 2, RK_PHASE_LEAVING = 3 };

/* The ring as every node and Worker keeps it (ringkv.proto Ring). `size` is the size whose
 * replicas serve reads: `from` while joining, `to` from switching on. */
typedef struct {
  uint64_t epoch;
  uint32_t size, from, to, phase, node_ids_max;
} rk_ring;

/* What a node confirmed (ringkv.proto NodeProgress): the highest epoch it persisted, and at
 * that epoch the moving shards it still copies as a new replica and still covers and drops
 * as an old-only one. `sent_ms`: when the current epoch was last sent to it (0: not yet). */
typedef struct {
  uint64_t epoch;
  uint32_t copying, dropping;
  uint64_t sent_ms;
} rk_progress;

typedef struct {
  rk_ring ring;
  rk_progress *progress;   /* [RINGKV_CLUSTER_SIZE_MAX], by node id */
  uint32_t notify_below;   /* nodes below this id are sent the current epoch until they
                              confirm it: old ∪ new of the transition (kept after done) */
} rk_resize;

/* The answer to POST /v1/admin/cluster (ringkv.proto ResizeReply). */
typedef struct {
  uint32_t status;        /* 200, 202, 400 or 409 */
  const char *error;      /* static text, for 400 and 409 */
  bool later;             /* a 409 that passes by itself (a node of an older release) */
  uint32_t node;          /* with `later`: the node that holds it back */
} rk_resize_answer;

/* What a resize is judged against: REPLICAS (0: "all"), the bytes the nodes last reported
 * storing (all replicas counted), and MAX_KEY_BYTES. */
typedef struct {
  uint32_t replicas;
  uint64_t stored_bytes, key_bytes_max;
  uint32_t max_siblings;  /* MAX_SIBLINGS */
  const uint32_t *versions;   /* by node id: the protocol version of its last report (0: none) */
  size_t versions_len;
  uint32_t min, max;          /* AUTOSCALE's MIN..MAX (max 0: not set) */
} rk_resize_limits;

/* A node may hold at most this much after a resize (SPEC: POST /v1/admin/cluster). */
#define RK_RESIZE_NODE_BYTES_MAX (8ull * 1000u * 1000u * 1000u)

/* A resize to `size` asked (POST /v1/admin/cluster, or a changed CLUSTER_SIZE): started,
 * or answered as the SPEC says (the current transition, 200 when already the size, 400
 * out of range, 409 during another resize, while a node of the ring reports an older
 * protocol version (it could not take part: the epochs' confirmations are this release's),
 * or when a node would hold more than 8 GB, or a key more than 32 MiB across the writers
 * of the transition). Returns whether the ring changed. */
bool rk_resize_ask(rk_resize *r, uint32_t size, const rk_resize_limits *lim, rk_resize_answer *ans);

/* A node's confirmation. RINGKV_E_VALUE when it cannot be true (a node the ring never had,
 * an epoch this object never wrote); an older one than held changes nothing. */
int rk_resize_confirm(rk_resize *r, uint32_t node, uint64_t epoch, uint32_t copying, uint32_t dropping,
                      bool *changed);

/* Enters every phase whose barrier and gate hold; true when the ring changed. */
bool rk_resize_advance(rk_resize *r);

/* The nodes the transition waits for (ascending; at most RINGKV_CLUSTER_SIZE_MAX). */
size_t rk_resize_waiting(const rk_resize *r, uint32_t *out);

/* The nodes to send the current epoch to now (each unconfirmed node once per resend
 * interval; their sent_ms set), and when to look again (0: every node confirmed). */
size_t rk_resize_due(rk_resize *r, uint64_t now, uint32_t *out, uint64_t *alarm_ms);

#endif
