/* wire.h: the simulator's side of the core's contract: request encoders and reply decoders
 * for the messages of wasm/ringkv.proto, built on the core's own pb.h.
 *
 * Ownership: decoded slices borrow the bytes they were decoded from; arrays are allocated
 * in the arena passed in. Decoders return false on any malformed reply (a core bug: the
 * simulator reports it as a failed check). */
#ifndef SIM_WIRE_H
#define SIM_WIRE_H

#include "pb.h"

typedef struct {
  uint32_t node;
  uint64_t counter;
} w_dot;

typedef struct {
  bool present;
  uint32_t node;
  uint64_t clock;
  uint64_t counter;
} w_node_state;

typedef struct {
  bool present;
  bool live;
  uint64_t winner_hlc;
  uint32_t winner_node;
  bool all_deleted;
  uint64_t max_hlc;
  uint32_t siblings;
  uint64_t digest;
  bool expired;
} w_key_info;

typedef struct {
  w_dot dot;
  rk_slice value;
  uint64_t at, length;   /* Applied.put: the value is the merged message's [at, at + length) */
} w_value;

/* A Local as the simulator sends it (values borrowed from storage). */
typedef struct {
  rk_slice key;
  rk_slice meta;
  const w_value *values;
  size_t values_len;
  bool expired;
} w_local;

typedef struct {
  rk_slice key;
  uint32_t shard;
  rk_slice meta;
  uint64_t digest_old;
  uint64_t digest_new;
  w_value *put;
  size_t put_len;
  w_dot *dropped;
  size_t dropped_len;
  uint64_t shard_digest;
  w_key_info info;
} w_applied;

typedef struct {
  uint32_t shard;
  uint32_t *replicas;
  size_t replicas_len;
  uint64_t key_hash;
} w_placement;

typedef struct {
  w_node_state node;
  rk_slice meta;
  w_dot dot;
  uint64_t hlc;
  rk_slice token;
  uint32_t siblings;
  uint64_t digest_old;
  uint64_t digest_new;
  w_dot *dropped;
  size_t dropped_len;
  uint32_t shard;
  uint64_t shard_digest;
  w_key_info info;
} w_write_reply;

typedef struct {
  w_dot dot;
  uint64_t hlc;
  bool deleted;
  uint64_t value_hash;
} w_sibling;

typedef struct {
  bool found;
  int32_t winner;
  w_sibling *siblings;
  size_t siblings_len;
  rk_slice token;
} w_read_reply;

typedef struct {
  uint32_t from;
  rk_slice *keys;
  size_t keys_len;
  uint32_t *shards;
  size_t shards_len;
} w_message_keys;

typedef struct {
  w_node_state node;
  w_applied *applied;
  size_t applied_len;
  rk_slice reply;
  uint32_t entries_received;
} w_merge_reply;

typedef struct {
  uint32_t peer;
  rk_slice message;
  uint64_t acked_seq_on_success;
  uint32_t entries;
  uint32_t *also;      /* the same message goes to these peers too (Outgoing.peers) */
  size_t also_len;
} w_outgoing;

typedef struct {
  w_outgoing *outgoing;
  size_t outgoing_len;
} w_outgoing_list;

typedef struct {
  bool equal;
  uint32_t *shards;
  size_t shards_len;
  uint32_t *buckets;        /* the reply held bucket digests: the differing buckets */
  size_t buckets_len;
} w_compare_reply;

/* Shapes of node-to-node messages the simulator inspects (for loading rows and metrics). */
typedef struct {
  uint32_t from;
  size_t entries;
  size_t entry_bytes;   /* sum of the encoded Entry sizes */
  size_t shards;
} w_push_summary;

/* ---- encoders (into e; check e->err once at the end) ---- */
typedef struct {
  uint32_t cluster_size;
  uint32_t replicas;
  uint32_t shards;
  uint64_t max_clock_skew_ms;
  uint64_t tombstone_grace_ms;
  uint32_t max_siblings;
  uint32_t fanout;
  uint64_t key_bytes_max;
} w_config;

void w_put_dot(pb_enc *e, uint32_t field, w_dot d);
void w_put_local(pb_enc *e, uint32_t field, const w_local *l);
void w_enc_init(pb_enc *e, const w_config *c, uint32_t node, uint64_t clock, uint64_t counter,
                const uint32_t *shards, const uint64_t *digests, size_t n);
void w_enc_place(pb_enc *e, const rk_slice *keys, size_t n);

/* ---- decoders ---- */
bool w_dec_init_reply(rk_slice b, rk_slice *error);
bool w_dec_place_reply(rk_arena *a, rk_slice b, w_placement **out, size_t *n);
bool w_dec_write_reply(rk_arena *a, rk_slice b, w_write_reply *out);
bool w_dec_read_reply(rk_arena *a, rk_slice b, w_read_reply *out);
bool w_dec_message_keys(rk_arena *a, rk_slice b, w_message_keys *out);
bool w_dec_merge_reply(rk_arena *a, rk_slice b, w_merge_reply *out);
/* BuildPushReply and GcQueryReply share the shape: repeated Outgoing = 1. */
bool w_dec_outgoing_list(rk_arena *a, rk_slice b, w_outgoing_list *out);
/* AeStartReply, AeAnswerReply, AeRepairReply, GcAnswerReply: bytes message = 1. */
bool w_dec_message_field(rk_slice b, rk_slice *message);
bool w_dec_compare_reply(rk_arena *a, rk_slice b, w_compare_reply *out);
/* ExpireReply (applied = 1) and GcDecideReply (collected = 1). */
bool w_dec_applied_list(rk_arena *a, rk_slice b, w_applied **out, size_t *n);
/* GcQuery: the keys it asks about. */
bool w_dec_gc_query_keys(rk_arena *a, rk_slice b, rk_slice **keys, size_t *n);
bool w_dec_push_summary(rk_slice b, w_push_summary *out);

#endif
