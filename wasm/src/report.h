/* report.h: what a node reports to RingControl and when (report.c, driven by step.c), and
 * how RingControl takes reports and answers /v1/cluster (control_report.c). Internal. */
#ifndef RINGKV_REPORT_H
#define RINGKV_REPORT_H

#include "pb.h"

struct ringkv_node;

/* A report unanswered by then is lost (its Send's time limit). */
#define RK_REPORT_TIMEOUT_MS 10000u

/* StepState.report_state */
enum { RK_REPORT_NEVER = 0, RK_REPORT_DONE = 1, RK_REPORT_PENDING = 2 };

typedef struct {
  /* Persisted in StepState (fields 20..23). */
  uint64_t live_keys;
  uint32_t state;
  uint64_t number;
  uint32_t version;       /* the protocol version of the last answered report: a node of a
                             new release reports once at its start, even with nothing
                             changed, so RingControl learns it (its resize gate waits on it) */
  uint64_t catching_up;   /* shards not caught up on (NodeReport.catching_up), set by the step */
  /* In memory: lost with the instance, which then reports in full if anything was
   * unacknowledged (state PENDING) and sends nothing if not (DONE). */
  bool counted;        /* live_keys is known (an earlier build's node counts once) */
  bool full;           /* the next report lists every non-zero shard digest */
  bool changed;        /* something changed since the last report was built */
  bool quiet;          /* the last report built showed no unacknowledged changes */
  bool waiting;        /* a chain waits for the facts (Load.report) */
  uint64_t *reported;  /* [shards]: the digests RingControl acknowledged, owned */
  uint64_t last_ms, sent_ms, retry_ms;
  uint32_t tag, failures;
  /* Client requests (writes and reads) served since the last acknowledged report, and by
   * shard (in memory: the load RingControl's autoscale reads; SPEC: AUTOSCALE). */
  uint64_t requests, fl_requests;
  uint32_t *shard_requests;   /* [shards], owned */
  /* The report in flight: its shards and digests, taken as acknowledged when answered. */
  uint32_t *fl_shard;
  uint64_t *fl_digest;
  size_t fl_len;
  bool fl_full;
  /* The chain's answer (a client write's WriteReply, a peer's answer), held while the
   * facts load, so that it still comes with the chain's last step. Owned. */
  uint8_t *reply;
  size_t reply_len;
} rk_report;

/* RingControl's measure of one node's load (its summary row's window; SPEC: AUTOSCALE):
 * the requests its reports carried since `window_ms`, and once a window of
 * AUTOSCALE_WINDOW_SECONDS has passed, their rate and the busiest shard's share. */
#define RK_LOAD_WINDOW_MS_DEFAULT 60000u
typedef struct {
  uint64_t window_ms, window_requests, rate_milli;
  uint32_t hot_shard, hot_milli;
  bool known;
} rk_load;
/* A report's requests taken at `now` (window 0: the default). */
void rk_load_take(rk_load *l, uint64_t now, uint64_t window, uint64_t requests, uint32_t hot_shard,
                  uint32_t hot_requests);
/* The node's rate at `now` (requests per 1000 s): the last full window's, or, when no report
 * has closed the current one for a whole window, the current one's so far. */
uint64_t rk_load_rate(const rk_load *l, uint64_t now, uint64_t window, bool *known);

/* Sets up the in-memory part from the persisted fields (state, live_keys, number). */
void rk_report_start(rk_report *r);
/* Before the instance's first event: what RingControl holds, as far as this node knows. */
int rk_report_ready(rk_report *r, const struct ringkv_node *n);
void rk_report_free(rk_report *r);
void rk_report_state_write(pb_enc *e, const rk_report *r);

/* A row write's effect on the live count: `was_live` its row's winner before (absent:
 * false), `applied` the Applied written (empty meta: the row is deleted). */
void rk_report_row(rk_report *r, bool was_live, rk_slice applied);
/* Whether stored metadata (a Register without values) has a live winner. */
bool rk_meta_live(rk_slice meta);

/* A client request served for a key of `shard` (a write or a read at this node). */
void rk_report_request(rk_report *r, const struct ringkv_node *n, uint32_t shard);

/* Something the report shows changed (rows, counters, sends, acknowledgements). */
void rk_report_changed(rk_report *r);
bool rk_report_owns(const rk_report *r, uint32_t tag);
/* The report in flight ended: answered (RingControl persisted it), or lost or refused
 * (sent again after a back-off, in full when refused). */
void rk_report_outcome(rk_report *r, const struct ringkv_node *n, uint64_t now, bool answered, bool refused);

/* Whether a report is due now (nothing in flight, something changed, and either the last
 * report was quiet or max(interval, N x 5 ms) has passed since it), and when one will be
 * (0: none). */
bool rk_report_due(rk_report *r, const struct ringkv_node *n, uint64_t now);
uint64_t rk_report_alarm(const rk_report *r, const struct ringkv_node *n);

/* The facts' Load fields (20, 21) into an open Load; `reply` is the chain's answer so far,
 * copied to come back with the report's step. */
int rk_report_ask(rk_report *r, pb_enc *load, rk_slice reply);
/* Builds the NodeReport from `loaded` (the Loaded with the facts) into the arena; *reply
 * is the held answer. `unacked`: the node's outgoing changes some peer has not acked. */
int rk_report_build(rk_report *r, struct ringkv_node *n, uint64_t now, uint64_t seq, uint64_t unacked, rk_slice loaded,
                    rk_slice *msg, rk_slice *reply);
void rk_report_sent(rk_report *r, uint32_t tag, uint64_t now);
/* The node's NodeProgress (the ring epoch it persisted, what it still copies and drops) as
 * field `field` of the message `e` encodes. */
void rk_report_progress_write(pb_enc *e, const struct ringkv_node *n, uint32_t field);
/* The chain waiting for the facts was dropped: the report goes at the next chance. */
void rk_report_dropped(rk_report *r);
/* The node's clock moved back (a skew removed): times set ahead wait no longer than their
 * own bound. */
void rk_report_clamp(rk_report *r, uint64_t now);

/* RingControl (control_report.c): RINGKV_OP_REPORT and RINGKV_OP_CLUSTER on a placement
 * instance (it knows the ring's size, replicas and shards). Errors: RINGKV_E_DECODE (a
 * malformed report or request), RINGKV_E_PROTOCOL (a version that carries no report),
 * RINGKV_E_VALUE (a node outside the ring, a shard out of range), RINGKV_E_NOMEM. */
int rk_control_report(struct ringkv_node *n, rk_slice req, rk_slice *reply);
int rk_control_cluster(struct ringkv_node *n, rk_slice req, rk_slice *reply);

#endif
