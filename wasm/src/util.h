/* util.h: the core's common ground: the trapping assertion, byte slices and the per-call arena. */
#ifndef RINGKV_UTIL_H
#define RINGKV_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ringkv.h"

/* libc's assert pulls in WASI file imports; ours traps. A failed assertion is a bug in the
 * core, never the result of bad input. */
#define RK_ASSERT(cond)          \
  do {                           \
    if (!(cond)) __builtin_trap(); \
  } while (0)

#define RK_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RK_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Propagates a non-zero return code. */
#define RK_TRY(expr)          \
  do {                        \
    int rk_try_rc_ = (expr);  \
    if (rk_try_rc_ != 0) return rk_try_rc_; \
  } while (0)

/* Borrowed bytes: points into a request, a reply or the arena. */
typedef struct {
  const uint8_t *ptr;
  size_t len;
} rk_slice;

static inline bool rk_slice_eq(rk_slice a, rk_slice b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Byte-wise order (memcmp, then length). */
static inline int rk_slice_cmp(rk_slice a, rk_slice b) {
  size_t n = RK_MIN(a.len, b.len);
  int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
  if (c != 0) return c;
  return a.len < b.len ? -1 : a.len > b.len ? 1 : 0;
}

/* A bump allocator reset at the start of every call, so that memory stays bounded however
 * many calls a node serves. The first block is kept across resets; larger ones are freed. */
typedef struct rk_block rk_block;
typedef struct {
  rk_block *head;    /* current block (newest first) */
  rk_block *first;   /* kept across resets */
  bool failed;       /* sticky: an allocation failed since the last reset */
} rk_arena;

#define RK_ARENA_BLOCK_BYTES (64u * 1024u)

void rk_arena_init(rk_arena *a);
void rk_arena_reset(rk_arena *a);
void rk_arena_free(rk_arena *a);
/* Returns 8-byte aligned, uninitialised memory, or NULL (and sets a->failed). */
void *rk_alloc(rk_arena *a, size_t bytes);
/* Like rk_alloc, zeroed. */
void *rk_zalloc(rk_arena *a, size_t bytes);
/* Resizes the most recent allocation in place when possible, else copies. */
void *rk_realloc(rk_arena *a, void *old, size_t old_bytes, size_t new_bytes);

/* Overflow-checked array allocation. */
static inline void *rk_alloc_array(rk_arena *a, size_t count, size_t size) {
  if (size != 0 && count > SIZE_MAX / size) {
    a->failed = true;
    return NULL;
  }
  return rk_alloc(a, count * size ? count * size : 1);
}

static inline uint64_t rk_mul_sat(uint64_t a, uint64_t b) {
  return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

static inline uint64_t rk_add_sat(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

#endif
