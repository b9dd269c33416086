/* range.h: key ranges below a shard (KeyRange) and their parts' digests (RangeParts), the
 * third level of anti-entropy (ringkv.proto, DigestRequest.ranges). */
#ifndef RINGKV_RANGE_H
#define RINGKV_RANGE_H

#include "pb.h"
#include "ringkv.h"

/* The keys of `shard` whose position lies in [lo, lo + 2^bits). */
typedef struct {
  uint32_t shard;
  uint64_t lo;
  uint32_t bits;
} rk_range;

/* One range's 16 parts, dense: part i is [lo + i * 2^(bits - 4), ...). */
typedef struct {
  uint32_t mask;   /* bit i: part i holds a key row */
  uint64_t counts[RINGKV_AE_PARTS];
  uint64_t digests[RINGKV_AE_PARTS];
} rk_parts;

static inline uint64_t rk_key_position(uint64_t key_hash) { return key_hash >> RINGKV_KEY_POSITION_SHIFT; }

/* A whole shard as a range. */
static inline rk_range rk_range_shard(uint32_t shard) {
  rk_range r = {shard, 0, RINGKV_KEY_POSITION_BITS};
  return r;
}

/* Part i of r (r.bits >= RINGKV_AE_PART_BITS). */
static inline rk_range rk_range_part(rk_range r, uint32_t i) {
  rk_range p = {r.shard, r.lo + ((uint64_t)i << (r.bits - RINGKV_AE_PART_BITS)), r.bits - RINGKV_AE_PART_BITS};
  return p;
}

/* Decodes a KeyRange: false unless its fields are in range (shard below `shards`, bits at
 * most 52, lo below 2^52 and a multiple of 2^bits). */
bool rk_range_read(rk_slice s, uint32_t shards, rk_range *out);
void rk_range_write(pb_enc *e, uint32_t field, const rk_range *r);
/* Whether the key with this hash (of shard `shard`) lies in r. */
bool rk_range_has(const rk_range *r, uint32_t shard, uint64_t key_hash);

/* Whether ranges are in (shard, lo) order and none overlaps the next: a list a node loads
 * or answers for reads every row at most once. */
bool rk_ranges_ordered(const rk_range *r, size_t len);
/* Puts ranges in (shard, lo) order. */
void rk_ranges_sort(rk_range *r, size_t len);

/* Decodes a RangeParts: false unless counts and digests follow the mask's set bits. */
bool rk_parts_read(rk_slice s, rk_parts *out);
/* Writes the non-empty parts only. */
void rk_parts_write(pb_enc *e, uint32_t field, const rk_parts *p);

#endif
