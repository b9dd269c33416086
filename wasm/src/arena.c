/* arena.c: the per-call bump allocator (see util.h). */
#include <stdlib.h>

#include "util.h"

struct rk_block {
  rk_block *next;
  size_t cap;
  size_t used;
  size_t last;   /* offset of the most recent allocation, for in-place realloc */
  _Alignas(8) uint8_t data[];
};

static rk_block *block_new(size_t cap) {
  rk_block *b = malloc(sizeof(rk_block) + cap);
  if (b == NULL) return NULL;
  b->next = NULL;
  b->cap = cap;
  b->used = 0;
  b->last = SIZE_MAX;
  return b;
}

void rk_arena_init(rk_arena *a) {
  a->first = NULL;
  a->head = NULL;
  a->failed = false;
}

void rk_arena_reset(rk_arena *a) {
  rk_block *b = a->head;
  while (b != NULL && b != a->first) {
    rk_block *next = b->next;
    free(b);
    b = next;
  }
  a->head = a->first;
  if (a->first != NULL) {
    a->first->used = 0;
    a->first->last = SIZE_MAX;
    a->first->next = NULL;
  }
  a->failed = false;
}

void rk_arena_free(rk_arena *a) {
  rk_arena_reset(a);
  free(a->first);
  a->first = NULL;
  a->head = NULL;
}

void *rk_alloc(rk_arena *a, size_t bytes) {
  if (bytes > SIZE_MAX / 2) {
    a->failed = true;
    return NULL;
  }
  size_t need = (bytes + 7u) & ~(size_t)7u;
  rk_block *b = a->head;
  if (b == NULL || b->cap - b->used < need) {
    size_t cap = RK_MAX(need, (size_t)RK_ARENA_BLOCK_BYTES);
    rk_block *nb = block_new(cap);
    if (nb == NULL) {
      a->failed = true;
      return NULL;
    }
    if (a->first == NULL) {
      a->first = nb;
    } else {
      nb->next = a->head;
    }
    a->head = nb;
    b = nb;
  }
  b->last = b->used;
  void *p = b->data + b->used;
  b->used += need;
  return p;
}

void *rk_zalloc(rk_arena *a, size_t bytes) {
  void *p = rk_alloc(a, bytes);
  if (p != NULL) memset(p, 0, bytes);
  return p;
}

void *rk_realloc(rk_arena *a, void *old, size_t old_bytes, size_t new_bytes) {
  if (old == NULL) return rk_alloc(a, new_bytes);
  rk_block *b = a->head;
  if (b != NULL && b->last != SIZE_MAX && b->data + b->last == (uint8_t *)old) {
    size_t need = (new_bytes + 7u) & ~(size_t)7u;
    if (new_bytes <= SIZE_MAX / 2 && b->cap - b->last >= need) {
      b->used = b->last + need;
      return old;
    }
  }
  void *p = rk_alloc(a, new_bytes);
  if (p != NULL) memcpy(p, old, RK_MIN(old_bytes, new_bytes));
  return p;
}
