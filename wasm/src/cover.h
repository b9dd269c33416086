/* cover.h: a replica leaving a shard hands it over, then drops it (cover.c, driven by
 * step.c; SPEC: Resizing, leaving). Internal. */
#ifndef RINGKV_COVER_H
#define RINGKV_COVER_H

#include "pb.h"

struct ringkv_node;

#define RK_COVER_ACTIVE_MAX 8u         /* shards handed over at once */
#define RK_COVER_TIMEOUT_MS 10000u     /* a covering message unanswered by then is lost */
#define RK_COVER_DROP_ROWS_MAX 256u    /* rows one drop page deletes */

enum { RK_CV_CHECK, RK_CV_PAGE, RK_CV_DROP };

typedef struct {
  uint32_t shard;
  uint32_t target;           /* index into the shard's new set: the replica being covered */
  uint8_t what;              /* RK_CV_*: compare digests, send the next page, drop a page */
  bool changed;              /* this pass changed something at the target */
  uint32_t passes;           /* passes against the target that changed something */
  bool started;              /* the page cursor: rows after (position, key) */
  uint64_t position;
  uint8_t key[1024];
  uint32_t key_len;
  bool next_more;            /* the page in flight: rows follow it, up to (position, key) */
  uint64_t next_position;
  uint8_t next_key[1024];
  uint32_t next_key_len;
  uint32_t tag, failures;
  uint64_t sent_ms, retry_ms;
} rk_cover_shard;

/* In memory only: after a restart the passes start over (merging a page again changes
 * nothing) and the drop goes on with the rows that are left. */
typedef struct {
  rk_cover_shard active[RK_COVER_ACTIVE_MAX];
  uint32_t active_len;
  uint32_t scan;             /* where the next look for a shard to hand over starts */
  uint32_t quiet;            /* shards looked at since the last one taken into the table */
  bool changed;              /* a shard was dropped (the report shows it) */
} rk_cover;

/* Outside the leaving phase: nothing to do, nothing remembered. */
void rk_cover_reset(rk_cover *c);
/* Fills the table with shards this node leaves that still hold rows (a bounded look). */
void rk_cover_fill(rk_cover *c, const struct ringkv_node *n, uint64_t now);
/* The next entry whose digests are due to be compared (a message with no page), or -1. */
int rk_cover_check_due(const rk_cover *c, uint64_t now);
/* The next entry whose page (to send or to drop) is due to be loaded, or -1. */
int rk_cover_load_due(const rk_cover *c, uint64_t now);
/* The Load fields (30..36) of active[i]'s page. */
void rk_cover_load(const rk_cover *c, uint32_t i, pb_enc *load);
/* The shard's replica active[i] is being covered by. */
uint32_t rk_cover_target(const rk_cover *c, const struct ringkv_node *n, uint32_t i);
/* The CatchupRequest (cover) for active[i]: `push` its page (empty: digests only), `last`
 * the page's last key, `more` rows follow it. */
int rk_cover_request(rk_cover *c, const struct ringkv_node *n, uint32_t i, rk_slice push, rk_slice last, bool more,
                     rk_slice *msg);
void rk_cover_sent(rk_cover *c, uint32_t i, uint32_t tag, uint64_t now);
int rk_cover_owner(const rk_cover *c, uint32_t tag);
/* A covering message's outcome (answer NULL: lost or refused). RINGKV_E_DECODE for an
 * answer that is not one (counted, treated as lost). */
int rk_cover_answer(rk_cover *c, const struct ringkv_node *n, uint32_t i, uint64_t now, const rk_slice *answer);
/* A drop page of active[i] was deleted; `more`: rows of the shard follow it. */
void rk_cover_dropped(rk_cover *c, uint32_t i, bool more, uint64_t now);
/* Sends unanswered long past their time limit count as lost. */
void rk_cover_expire(rk_cover *c, uint64_t now);
uint64_t rk_cover_alarm(const rk_cover *c, const struct ringkv_node *n);
/* Every shard this node leaves is dropped (or it leaves none). */
bool rk_cover_idle(const rk_cover *c, const struct ringkv_node *n);
void rk_cover_clamp(rk_cover *c, uint64_t now);

/* The receiver's side. Whether a CatchupRequest is a covering page. */
bool rk_cover_is_request(rk_slice msg);
/* Validates one (E_DECODE: not from a replica leaving a shard this node holds in the
 * leaving phase; E_PROTOCOL: an unknown version); *equal when the shard digests agree,
 * else *push is its page (a slice of msg; empty: digests only). */
int rk_cover_incoming(const struct ringkv_node *n, rk_slice msg, uint32_t *shard, bool *equal, rk_slice *push);
/* Its CatchupReply. */
int rk_cover_reply(const struct ringkv_node *n, uint32_t shard, bool equal, uint32_t changed, rk_slice *reply);

#endif
