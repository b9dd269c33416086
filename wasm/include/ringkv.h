/* ringkv.h: the public API of the ringkv core, the one header a user of the core needs.
 *
 * The core is sans-IO. It never touches storage, clocks or the network: the caller hands
 * it bytes and the time, and it returns bytes and decisions. One ringkv_node holds what a
 * node must keep between calls (configuration, HLC, dot counter, shard digests); all of it
 * is derivable from what the Durable Object persists, so an instance can be dropped and
 * rebuilt with RINGKV_OP_INIT at any time.
 *
 * Every operation is one call: a request message in, a reply message out, both encoded
 * as in wasm/ringkv.proto (OP_X takes XRequest and returns XReply).
 *
 * Ownership: the request is borrowed for the call. The reply lives in the node's arena
 * and stays valid until the next call on the same node; the caller copies it out. Nothing
 * crosses the boundary to be freed later.
 *
 * Errors are return codes. Malformed input (a request, a peer's message, a client's
 * token) returns an error code and never trips an assertion; an assertion failure is a
 * bug in the core (in WASM it traps: drop the instance and rebuild it from storage).
 */
#ifndef RINGKV_H
#define RINGKV_H

#include <stddef.h>
#include <stdint.h>

/* Node-to-node protocol: a node speaks RINGKV_PROTOCOL_VERSION and accepts the version
 * before it too (an upgrade runs old and new nodes side by side). */
#define RINGKV_PROTOCOL_VERSION 5u   /* 3: anti-entropy narrows below shards (KeyRange);
                                        4: collection markers; 5: write ids */
#define RINGKV_PROTOCOL_VERSION_MIN 1u

/* Limits. Units last; every decoder enforces them. */
#define RINGKV_KEY_BYTES_MAX 1024u
#define RINGKV_CONTENT_TYPE_BYTES_MAX 256u
#define RINGKV_WRITE_ID_BYTES_MAX 64u
#define RINGKV_VALUE_BYTES_MAX (32u * 1024u * 1024u)   /* the shim's MAX_VALUE_BYTES is lower */
#define RINGKV_CLUSTER_SIZE_MAX 1024u
#define RINGKV_SHARDS_MAX 65536u
#define RINGKV_SIBLINGS_MAX 4096u          /* per register, in any decoded message */
#define RINGKV_CONTEXT_DOTS_MAX 4096u      /* explicit dots in one context */
/* The value bytes of one key at one node: up to A accepting nodes (2 x replicas across a
 * transition) each add at most key_bytes_max. A configuration beyond is refused. */
#define RINGKV_NODE_KEY_BYTES_MAX (32u * 1024u * 1024u)
#define RINGKV_KEY_BYTES_DEFAULT (4u * 1024u * 1024u)
#define RINGKV_ENTRIES_MAX 16384u          /* entries or keys in one message */
#define RINGKV_MESSAGE_BYTES_MAX (64u * 1024u * 1024u)
/* The largest node-to-node message a node takes (a larger one is malformed): with the rows
 * its merge needs and its envelope it stays one request. Honest ones stay below 34 MiB (a
 * round's 16 MiB, or one key of RINGKV_NODE_KEY_BYTES_MAX alone). */
#define RINGKV_PEER_MESSAGE_BYTES_MAX (48u * 1024u * 1024u)
#define RINGKV_HLC_MS_MAX ((UINT64_C(1) << 48) - 1u)
#define RINGKV_AE_BUCKET_SHARDS 64u        /* shared shards per anti-entropy bucket */
#define RINGKV_AE_BUCKETS_MAX 64u          /* buckets asked in one DigestRequest */
/* Below a shard, keys are ordered by position: their xxh3-64 >> RINGKV_KEY_POSITION_SHIFT
 * (52 bits, exact in a JavaScript number and an SQLite integer). A KeyRange is cut in
 * RINGKV_AE_PARTS parts; one DigestRequest or repair request names at most
 * RINGKV_AE_RANGES_MAX ranges. */
#define RINGKV_KEY_POSITION_SHIFT 12u
#define RINGKV_KEY_POSITION_BITS 52u
#define RINGKV_AE_PARTS 16u
#define RINGKV_AE_PART_BITS 4u
#define RINGKV_AE_RANGES_MAX 64u
/* A collection marker (what a collected key leaves, SPEC: Tombstones) is deleted this many
 * TOMBSTONE_GRACE_SECONDS after its collection. */
#define RINGKV_MARKER_GRACES 10u
/* A peer's version whose HLC lies beyond now + max skew waits (deferred); beyond now + max
 * skew + this horizon no clock can be that wrong, and the entry is refused. */
#define RINGKV_HLC_HORIZON_MS (UINT64_C(366) * 24u * 3600u * 1000u)
/* Dot counters stay at most 2^52 (exact in a JavaScript number, which stores them): a dot
 * beyond is refused wherever it appears, the same at every node, so no state holding one is
 * kept anywhere. A merged dot of this node above its counter (a claim on dots it never
 * made) raises the counter past it, so no dot is ever reused and no later write is covered
 * already; but no message may raise it by more than RINGKV_DOT_CLAIM_MAX (such an entry is
 * refused: one message cannot use up the counter space). */
#define RINGKV_COUNTER_MAX (UINT64_C(1) << 52)
#define RINGKV_DOT_CLAIM_MAX (UINT64_C(1) << 32)
/* The bytes of all messages one gossip round (OP_BUILD_PUSH) builds; a larger key goes
 * alone, in one message shared by its peers. */
#define RINGKV_PUSH_ROUND_BYTES_MAX (16u * 1024u * 1024u)
#define RINGKV_GOSSIP_INTERVAL_MS_DEFAULT 1000u  /* Config.gossip_interval_ms 0 */
#define RINGKV_QUORUM_TIMEOUT_MS_DEFAULT 2000u   /* QUORUM_TIMEOUT_MS */
#define RINGKV_CLUSTER_ID_BYTES 16u
#define RINGKV_SECRET_BYTES 32u
/* Node reports (NodeReport, RingControl's POST /control/report): the Target.peer of a
 * KIND_REPORT send names no node; a report is at most this large (one at 65,536 shards
 * is about 1 MiB); reports exist from protocol version 2 on. */
#define RINGKV_PEER_CONTROL 0xFFFFFFFFu
#define RINGKV_REPORT_BYTES_MAX (4u * 1024u * 1024u)
#define RINGKV_REPORT_VERSION_MIN 2u
#define RINGKV_REPORT_COUNTERS_MAX 64u     /* counters in one report */
#define RINGKV_COUNTER_NAME_BYTES_MAX 64u
/* Dot leases (Config.leases; SPEC: Semantics, "Dots are leased"): RingControl grants a node
 * blocks of RINGKV_LEASE_BLOCK counters (KIND_LEASE sends to RINGKV_PEER_CONTROL), each
 * persisted before it is answered; a node hands out no counter beyond its block's end. A
 * block starts above every block granted to that id before and above the counter the node
 * names, which may be at most RINGKV_LEASE_ABOVE_MAX (so a block always fits). */
#define RINGKV_LEASE_BLOCK (UINT64_C(1) << 20)
#define RINGKV_LEASE_ABOVE_MAX (RINGKV_COUNTER_MAX - RINGKV_LEASE_BLOCK)

/* Operations: RINGKV_OP_X takes an XRequest and returns an XReply (wasm/ringkv.proto). */
enum ringkv_op {
  RINGKV_OP_INIT = 1,         /* validate config, load node state and shard digests */
  RINGKV_OP_PLACE = 2,        /* keys -> shard, replicas (rendezvous order), key hash */
  RINGKV_OP_WRITE = 3,        /* a client PUT or DELETE at this node */
  RINGKV_OP_READ = 4,         /* winner, siblings, context token of a stored register */
  RINGKV_OP_MESSAGE_KEYS = 5, /* which local rows a Push needs loaded before OP_MERGE */
  RINGKV_OP_MERGE = 6,        /* apply a Push (gossip, or a repair request/answer) */
  RINGKV_OP_BUILD_PUSH = 7,   /* a gossip round: who gets which changed keys */
  RINGKV_OP_AE_START = 8,     /* anti-entropy: the DigestRequest for a peer */
  RINGKV_OP_AE_ANSWER = 9,    /* anti-entropy: answer a DigestRequest */
  RINGKV_OP_AE_COMPARE = 10,  /* anti-entropy: differing shards or buckets of a DigestReply */
  RINGKV_OP_AE_REPAIR = 11,   /* anti-entropy: the repair Push for differing shards */
  RINGKV_OP_GC_QUERY = 12,    /* tombstone collection: ask the other replicas */
  RINGKV_OP_GC_ANSWER = 13,   /* tombstone collection: answer a GcQuery */
  RINGKV_OP_GC_DECIDE = 14,   /* tombstone collection: which keys to collect */
  RINGKV_OP_EXPIRE = 15,      /* expired tombstones: digest contribution becomes 0 */
  RINGKV_OP_CONTROL = 16,     /* RingControl's step: the ring, cluster id and secret (no
                                 OP_INIT needed: the control object is not a node) */
  RINGKV_OP_STEP = 17,        /* the node step: one event in, the actions out (below) */
  RINGKV_OP_REPORT = 18,      /* RingControl: take a NodeReport (two calls: what to load,
                                 then what to write); on a placement-only instance */
  RINGKV_OP_CLUSTER = 19,     /* RingControl: /v1/cluster and `converged` from the stored
                                 summaries; on a placement-only instance */
  RINGKV_OP_CLIENT_READ = 20, /* a client's read: OP_READ (ReadRequest -> ReadReply) once the
                                 node serves the key's shard, else RINGKV_E_LEASE or
                                 RINGKV_E_CATCHING_UP */
  RINGKV_OP_PAGE_PUSH = 21,   /* a plain Push of the given rows (AeRepairRequest with peer and
                                 locals only -> AeRepairReply): a catch-up page's entries */
  RINGKV_OP_DROP = 22,        /* a replica leaving a shard drops the given rows of it
                                 (ExpireRequest -> ExpireReply: one delete each, in order) */
};

/* The node step (RINGKV_OP_STEP, StepRequest -> StepReply): the one entry an executor
 * (the Durable Object, the simulator) needs after OP_INIT. Ops 3..15 are its parts, kept
 * callable for tests and fuzzers.
 *
 * Events: a client write (with the key's row), a peer's message, a Send's answer or its
 * loss, the alarm, the node's start, `loaded` (the rows the previous reply asked for), and
 * `refused` (a peer's message the executor refused before the step could take it).
 * With Config.reports the step also reports to RingControl (KIND_REPORT sends to
 * RINGKV_PEER_CONTROL, see NodeReport): a report's facts come in by a `loaded` (Load.report),
 * and the event's `reply` then comes with that later step. With Config.leases it takes its
 * dot counters from RingControl (KIND_LEASE sends to RINGKV_PEER_CONTROL, answered with a
 * LeaseReply): a client write without a usable lease is RINGKV_E_LEASE; and a node told its
 * storage was lost catches up on each of its shards (KIND_CATCHUP sends to their replicas,
 * whose pages a `loaded` with Load.page serves), answering client writes of a shard it has
 * not caught up on with RINGKV_E_CATCHING_UP (reads: RINGKV_OP_CLIENT_READ).
 * The time and fresh random bits come with every event: the step never reads a clock.
 *
 * Actions, in this order:
 *   1. write rows, shard digests, peer rows and the state, in one transaction;
 *   2. if `load` is set: load those rows and call the step at once with `loaded` (no
 *      other event first; the step holds its place in memory until then);
 *   3. send each Send (in parallel; each target's outcome comes back as an Answer event,
 *      `answered` false when lost, unreachable, a 5xx, or past Send.timeout_ms; one the
 *      executor never reports counts as lost after twice the longest limit, 20 s);
 *   4. answer the event with `reply` (after the last `loaded` of its chain);
 *   5. arm the alarm at alarm_ms (0: delete it).
 * Applied.put values given by (at, length) lie in the payload of the event that began the
 * chain: Incoming.message, Answer.message, or the client write's value.
 *
 * Every policy is here: when rounds run, what a push carries and to whom, retries and
 * back-off, anti-entropy's schedule and narrowing, expiry and collection batches, fetch
 * time limits, how a peer's refusal is treated. What must survive a restart is in
 * StepState and the peer rows; what is in flight (sends awaiting answers, a chain
 * awaiting `loaded`) lives in the instance and is forgotten with it, as a lost message.
 * A step that returns an error code changed nothing and asks for nothing. */

/* Return codes. The shim maps the client-caused ones to 4xx. */
enum ringkv_code {
  RINGKV_OK = 0,
  RINGKV_E_DECODE = 1,       /* a request or message is not valid protobuf / breaks a limit */
  RINGKV_E_PROTOCOL = 2,     /* a peer message carries an unknown protocol version */
  RINGKV_E_TOKEN = 3,        /* context token malformed, bound to another key, or claiming
                                what no node issued: a dot of this node above its counter,
                                a node id the cluster never had, a counter beyond
                                RINGKV_COUNTER_MAX (400) */
  RINGKV_E_SKEW = 4,         /* token's highest HLC beyond now + max skew (400) */
  RINGKV_E_SIBLINGS = 5,     /* context write would leave > max_siblings (409) */
  RINGKV_E_CLOCK = 6,        /* the HLC cannot advance (48-bit milliseconds exhausted), or
                                the dot counter reached RINGKV_COUNTER_MAX */
  RINGKV_E_CONFIG = 7,       /* invalid configuration (InitReply.error says why) */
  RINGKV_E_STATE = 8,        /* called before a successful OP_INIT */
  RINGKV_E_OP = 9,           /* unknown operation */
  RINGKV_E_NOMEM = 10,       /* the arena could not grow */
  RINGKV_E_VALUE = 11,       /* value or content type too large, or a key out of range */
  RINGKV_E_KEY_BYTES = 12,   /* context write would leave more than key_bytes_max value
                                bytes in the key at this node (409) */
  RINGKV_E_LEASE = 13,       /* Config.leases: the node holds no usable dot lease yet (a client
                                write), or started with no state and has not heard from
                                RingControl yet (a client read): retry once the lease it
                                asked for is answered, or at another replica */
  RINGKV_E_CATCHING_UP = 14, /* the node is catching up on the key's shard (its storage was
                                lost): it takes no client write and serves no read for it;
                                ask another replica */
  RINGKV_E_FENCING = 15,     /* the admin fence was asked: the node takes no client write
                                while its peers acknowledge what it holds, then its storage
                                is wiped (StepReply.wipe); ask another replica */
  RINGKV_E_NOT_SERVING = 16, /* the node does not take client writes or serve reads of the
                                key's shard in its ring's phase (SPEC: Resizing): the sender
                                placed the key on an older ring; it takes the node's ring and
                                places the key again */
  RINGKV_E_WRITE_ID = 17,    /* the write id names a stored version with another value,
                                content type or kind (409) */
};

typedef struct ringkv_node ringkv_node;

/* Creates a node with no configuration (every node op returns RINGKV_E_STATE until OP_INIT
 * succeeds; OP_CONTROL needs no OP_INIT). Returns NULL when out of memory. */
ringkv_node *ringkv_node_create(void);

/* Frees the node and its arena. NULL is allowed. */
void ringkv_node_destroy(ringkv_node *node);

/* Runs one operation. `req` (req_len bytes) is borrowed for the call. On RINGKV_OK,
 * *reply and *reply_len give the encoded reply, owned by the node and valid until the
 * next call on it. On an error code, *reply is an empty reply except for OP_INIT, whose
 * InitReply carries the reason. */
int ringkv_call(ringkv_node *node, uint32_t op, const uint8_t *req, size_t req_len,
                const uint8_t **reply, size_t *reply_len);

/* A short static English name for a return code, for logs and JSON errors. */
const char *ringkv_code_name(int code);

/* Hashing as used for placement and token binding: xxh3-64 of the bytes, seed 0. */
uint64_t ringkv_hash(const uint8_t *bytes, size_t len);

/* The WebAssembly build exports a fixed-node wrapper of the calls above (one node per
 * instance, one instance per Durable Object), used only by worker/core.ts:
 *   uint8_t *ringkv_wasm_input(uint32_t len)   -> a core-owned input buffer of len bytes
 *                                                (valid until the next input/call; NULL
 *                                                when out of memory)
 *   int32_t  ringkv_wasm_call(uint32_t op, uint32_t len)  -> a ringkv_code; the request
 *                                                is the first len bytes of the input buffer
 *   uint8_t *ringkv_wasm_output(void), uint32_t ringkv_wasm_output_len(void)
 *                                             -> the last call's reply
 */

#endif
