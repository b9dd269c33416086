/* control.h: RingControl's control step (RINGKV_OP_CONTROL): the ring, the cluster id and
 * the generated token secret, decided from the control object's persisted state. */
#ifndef RINGKV_CONTROL_H
#define RINGKV_CONTROL_H

#include "pb.h"

/* Runs one control step on a ControlRequest; *reply is a ControlReply in the arena.
 * Errors: RINGKV_E_DECODE (malformed request or persisted state), RINGKV_E_CONFIG
 * (CLUSTER_SIZE or the reported size out of range), RINGKV_E_VALUE (too few random
 * bytes), RINGKV_E_NOMEM. */
int rk_control_step(rk_arena *a, rk_slice req, rk_slice *reply);

#endif
