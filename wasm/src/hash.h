/* hash.h: xxh3-64 as every node must compute it (placement, digests, token binding). */
#ifndef RINGKV_HASH_H
#define RINGKV_HASH_H

#include "util.h"

uint64_t rk_hash(const void *bytes, size_t len);
/* rk_hash of zero bytes: the value_hash of an empty value (a known answer, checked by
 * tests/c/test_primitives.c). */
#define RK_HASH_EMPTY UINT64_C(0x2D06800538D394C2)
uint64_t rk_hash_seed(const void *bytes, size_t len, uint64_t seed);
static inline uint64_t rk_hash_slice(rk_slice s) { return rk_hash(s.ptr, s.len); }

/* Little-endian stores, so hashed tuples are the same bytes on every platform. */
static inline void rk_le32(uint8_t *out, uint32_t v) {
  for (int i = 0; i < 4; i++) out[i] = (uint8_t)(v >> (8 * i));
}
static inline void rk_le64(uint8_t *out, uint64_t v) {
  for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (8 * i));
}

/* splitmix64: the core's only pseudo-random source, always seeded from its inputs. */
static inline uint64_t rk_mix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

#endif
