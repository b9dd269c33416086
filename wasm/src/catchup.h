/* catchup.h: a node's per-shard catch-up (catchup.c, driven by step.c): for each shard it has
 * not caught up on, pull the shard from each other replica in turn, a bounded page at a time
 * in key order (the first pull is the copy, from a replica the core chooses; the others are
 * the anti-entropy passes, which end at once when the shard digests agree), and record the
 * shard as caught up. Generic over why a shard needs it: a node whose storage was lost
 * rejoins every shard it replicates this way. Internal. */
#ifndef RINGKV_CATCHUP_H
#define RINGKV_CATCHUP_H

#include "pb.h"

struct ringkv_node;

#define RK_CATCHUP_TIMEOUT_MS 10000u   /* a page unanswered by then is lost */
#define RK_CATCHUP_ACTIVE_MAX 32u      /* shards pulled at once (pages in flight) */
#define RK_CATCHUP_PAGE_ROWS_MAX 256u  /* rows of one page */
#define RK_CATCHUP_PAGE_BYTES_MAX (4u * 1024u * 1024u)   /* their metadata and values: the
                                                            row that reaches it ends the page */

typedef struct {
  /* Persisted (StepState.catchup_active, CatchupShard). */
  uint32_t shard, source, failures;
  uint16_t *done;            /* replicas pulled in full, [replicas], owned */
  uint32_t done_len;
  bool started;              /* cursor (position, key): pages after it */
  uint64_t position;
  uint8_t key[1024];
  uint32_t key_len;
  /* In memory. */
  uint32_t tag;
  uint64_t sent_ms, retry_ms;
  bool merging;              /* its page is being merged: the cursor moves once it is */
  bool next_more;
  uint64_t next_position;
  uint8_t next_key[1024];
  uint32_t next_key_len;
} rk_cu_shard;

#define RK_CATCHUP_PROBE_MAX 512u      /* shards one probe batch asks every source about */

/* A shard of the probe batch: how many sources it has, and how many said equal. */
typedef struct {
  uint32_t shard;
  uint16_t sources, equal;
} rk_cu_probed;

typedef struct {
  uint8_t *bits;             /* [bytes]: shards not caught up (StepState.catchup), owned */
  size_t bytes;
  uint32_t pending;          /* bits set */
  uint32_t scan;             /* where the next pick starts */
  rk_cu_shard active[RK_CATCHUP_ACTIVE_MAX];
  uint32_t active_len;
  bool changed;              /* a shard was caught up (the report shows it) */
  /* The probe batch (in memory: a lost one only leaves its shards to the pulls). */
  rk_cu_probed probed[RK_CATCHUP_PROBE_MAX];
  uint32_t probed_len;
  uint32_t *probe_peer, *probe_tag;   /* [peers_max], owned: one message per source */
  uint32_t probe_sends, probe_open, peers_max;
  uint64_t probe_sent_ms;
  uint32_t probe_scan;       /* where the next batch starts */
  bool probe_passed;         /* every pending shard was probed once since the last begin */
} rk_catchup;

int rk_catchup_init(rk_catchup *c, uint32_t shards, uint32_t replicas);
void rk_catchup_free(rk_catchup *c);
/* Decodes StepState fields 32 and 33 (one call per field occurrence). */
int rk_catchup_read_bits(rk_catchup *c, rk_slice bits);
int rk_catchup_read_active(rk_catchup *c, uint32_t shards, uint32_t cluster_size, rk_slice entry);
/* After the state is read: every active shard is one of the pending ones. */
int rk_catchup_check(rk_catchup *c);
void rk_catchup_state_write(pb_enc *e, const rk_catchup *c);

/* The node serves (client reads and writes) this shard. */
bool rk_catchup_serves(const rk_catchup *c, uint32_t shard);
/* This shard needs catching up (the node newly replicates it). */
void rk_catchup_begin(rk_catchup *c, uint32_t shard);
/* Every shard the node replicates needs catching up (its storage was lost). */
void rk_catchup_begin_all(rk_catchup *c, const struct ringkv_node *n);

/* Fills the active table from the pending shards (at most RK_CATCHUP_ACTIVE_MAX, a bounded
 * scan per call) and returns the index of the next shard whose page is due (no page in
 * flight or merging, past its back-off), or -1. */
int rk_catchup_next(rk_catchup *c, const struct ringkv_node *n, uint64_t now);
/* The CatchupRequest for active[i]; the send's tag. */
int rk_catchup_request(rk_catchup *c, const struct ringkv_node *n, uint32_t i, rk_slice *msg);
void rk_catchup_sent(rk_catchup *c, uint32_t i, uint32_t tag, uint64_t now);
/* Probes: builds the next batch when none is open and one is due (its sends: one per
 * source, rk_catchup_probe_request for each k < the count returned), and takes their
 * outcomes; with every answer in (or lost), a shard every source said equal is caught up. */
uint32_t rk_catchup_probe_begin(rk_catchup *c, const struct ringkv_node *n, uint64_t now);
int rk_catchup_probe_request(rk_catchup *c, const struct ringkv_node *n, uint32_t k, rk_slice *msg, uint32_t *peer);
void rk_catchup_probe_sent(rk_catchup *c, uint32_t k, uint32_t tag, uint64_t now);
int rk_catchup_probe_owner(const rk_catchup *c, uint32_t tag);
/* answer NULL: lost or refused. RINGKV_E_DECODE for an answer that is not one (counted). */
int rk_catchup_probe_answer(rk_catchup *c, const struct ringkv_node *n, uint32_t k, const rk_slice *answer);
/* Probes unanswered past RK_CATCHUP_TIMEOUT_MS count as lost. */
void rk_catchup_probe_expire(rk_catchup *c, const struct ringkv_node *n, uint64_t now);
/* A peer's probe (CatchupRequest.probe): its CatchupReply, at once. */
int rk_catchup_probe_reply(const struct ringkv_node *n, rk_slice msg, rk_slice *reply);
/* Whether a CatchupRequest is a probe. */
bool rk_catchup_is_probe(rk_slice msg);

/* Which active shard a tag is the page of (-1: none). */
int rk_catchup_owner(const rk_catchup *c, uint32_t tag);
/* A page's outcome: lost or refused (answer NULL: asked again after a back-off, from
 * another replica after a few), or answered: equal (that replica is done) or a page whose
 * Push *push the step merges (rk_catchup_merged once it is). RINGKV_E_DECODE for an answer
 * that is not a page of this shard from that replica (counted, treated as lost). */
int rk_catchup_answer(rk_catchup *c, const struct ringkv_node *n, uint32_t i, uint64_t now, const rk_slice *answer,
                      rk_slice *push);
/* The page of active[i] was merged (and written): the cursor moves on, or that replica is
 * done; with every replica done the shard is caught up. */
void rk_catchup_merged(rk_catchup *c, const struct ringkv_node *n, uint32_t i, uint64_t now);
/* A page lost, refused, or whose Push does not merge: asked again after a back-off. */
void rk_catchup_lost(rk_catchup *c, const struct ringkv_node *n, uint32_t i, uint64_t now);
/* A merge that did not finish (the chain was dropped, or the step failed): asked again. */
void rk_catchup_unmerged(rk_catchup *c, uint64_t now);
/* The active shard whose page is merging (-1: none). */
int rk_catchup_merging(const rk_catchup *c);
uint64_t rk_catchup_alarm(const rk_catchup *c);
void rk_catchup_clamp(rk_catchup *c, uint64_t now);

/* The fields every CatchupRequest and CatchupReply about one shard opens with (version,
 * from, shard): the pulls', the pages' and the covering ones (cover.c). */
void rk_catchup_header(pb_enc *e, const struct ringkv_node *n, uint32_t shard);

/* The responder's side: a peer's CatchupRequest, validated (E_DECODE for a shard the two do
 * not share, E_PROTOCOL for an unknown version); *equal when the digests agree (answer with
 * rk_catchup_reply at once), else the Load fields (30..36) of its page go into `load`. */
int rk_catchup_incoming(const struct ringkv_node *n, rk_slice msg, bool *equal, pb_enc *load, uint32_t *from,
                        uint32_t *shard);
/* The CatchupReply: `push` the page's Push (empty when equal), `last` the page's last key
 * (empty when equal or none), `more` rows follow. */
int rk_catchup_reply(const struct ringkv_node *n, uint32_t shard, bool equal, rk_slice push, rk_slice last, bool more,
                     rk_slice *reply);

#endif
