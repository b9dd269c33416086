/* hash.c: the one translation unit that includes xxhash (inline, from libxxhash-dev). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "hash.h"

uint64_t rk_hash(const void *bytes, size_t len) { return XXH3_64bits(bytes, len); }

uint64_t rk_hash_seed(const void *bytes, size_t len, uint64_t seed) {
  return XXH3_64bits_withSeed(bytes, len, seed);
}

uint64_t ringkv_hash(const uint8_t *bytes, size_t len) { return XXH3_64bits(bytes, len); }
