/* register.h: the multi-value LWW register with dotted version vectors: contexts, merge,
 * writes, the winner, and the canonical encoding that digests hash. */
#ifndef RINGKV_REGISTER_H
#define RINGKV_REGISTER_H

#include "pb.h"

typedef struct {
  uint32_t node;
  uint64_t counter;
} rk_dot;

/* A set of dots: every (n, c) with c <= vv[n], plus the explicit `dots`.
 * Normalised: vv sorted by node with no zero counters; dots sorted, none covered by vv,
 * and none equal to (n, vv[n] + 1) (those are folded into vv), so equal sets have one
 * representation. */
typedef struct {
  rk_dot *vv;
  size_t vv_len;
  rk_dot *dots;
  size_t dots_len;
} rk_ctx;

typedef struct {
  rk_dot dot;
  uint64_t hlc;
  bool deleted;
  rk_slice content_type;
  uint64_t value_hash;
  rk_slice value;      /* empty when decoded from metadata */
  rk_slice write_id;   /* the client's write id, empty when none (RINGKV_WRITE_ID_BYTES_MAX) */
} rk_sib;

/* Siblings sorted by dot, unique; the context covers every sibling's dot. */
typedef struct {
  rk_sib *sibs;
  size_t sibs_len;
  rk_ctx ctx;
} rk_reg;

static inline int rk_dot_cmp(rk_dot a, rk_dot b) {
  if (a.node != b.node) return a.node < b.node ? -1 : 1;
  if (a.counter != b.counter) return a.counter < b.counter ? -1 : 1;
  return 0;
}

/* (hlc, node) order: the winner is the highest. */
static inline bool rk_sib_outranks(const rk_sib *a, const rk_sib *b) {
  if (a->hlc != b->hlc) return a->hlc > b->hlc;
  return a->dot.node > b->dot.node;
}

/* A write id: 1 to RINGKV_WRITE_ID_BYTES_MAX of [A-Za-z0-9_-]. */
bool rk_write_id_valid(rk_slice id);

bool rk_ctx_covers(const rk_ctx *c, rk_dot d);
/* out = a ∪ b, normalised. */
int rk_ctx_join(rk_arena *a, const rk_ctx *x, const rk_ctx *y, rk_ctx *out);
/* Adds one dot, normalised. */
int rk_ctx_add(rk_arena *a, const rk_ctx *x, rk_dot d, rk_ctx *out);
/* Raises vv[node] to at least counter (and drops the explicit dots it now covers). */
int rk_ctx_raise(rk_arena *a, const rk_ctx *x, uint32_t node, uint64_t counter, rk_ctx *out);
void rk_ctx_encode(pb_enc *e, const rk_ctx *c);
/* Strict: validates limits and returns the normalised set (accepts any valid order). */
int rk_ctx_decode(rk_arena *a, rk_slice bytes, rk_ctx *out);

/* Encodes canonically. with_values = false gives the stored metadata (no value bytes). */
void rk_reg_encode(pb_enc *e, const rk_reg *r, bool with_values);
/* Decodes and validates (limits, sorted-unique-able, context covers siblings, tombstones
 * empty); the result is normalised. An empty slice is the empty register; a context with
 * no sibling is a marker (callers that must not take one check rk_reg_is_marker). */
int rk_reg_decode(rk_arena *a, rk_slice bytes, rk_reg *out);

/* out = merge(x, y): keeps a sibling unless the other side's context covers its dot and
 * the other side no longer holds it; contexts join. Commutative, associative,
 * idempotent. For a dot both hold, the copy with value bytes is kept. */
int rk_reg_merge(rk_arena *a, const rk_reg *x, const rk_reg *y, rk_reg *out);

/* A collection marker: no version, only the collected key's context. */
static inline bool rk_reg_is_marker(const rk_reg *r) { return r->sibs_len == 0 && r->ctx.vv_len + r->ctx.dots_len > 0; }

/* Index of the winner (highest (hlc, node)); -1 when empty. */
int rk_reg_winner(const rk_reg *r);
bool rk_reg_all_deleted(const rk_reg *r);
uint64_t rk_reg_max_hlc(const rk_reg *r);

/* The key's raw digest: xxh3-64 of the canonical metadata, seeded with xxh3-64(key);
 * 0 for the empty register. */
uint64_t rk_reg_digest(rk_arena *a, rk_slice key, const rk_reg *r);

#endif
