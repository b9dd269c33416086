/* testlib.h: small helpers shared by the cmocka tests in tests/c/: a seeded PRNG, the
 * property-test case count, building requests with the core's own encoder (pb.h) and
 * reading fields out of replies. Header-only (static functions). */
#ifndef RINGKV_TESTLIB_H
#define RINGKV_TESTLIB_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pb.h"
#include "ringkv.h"

/* ------------------------------------------------------------------------------------- */
/* PRNG: splitmix64, seeded, so every failure names a reproducible case. */

typedef struct {
  uint64_t s;
} tl_rng;

static inline uint64_t tl_next(tl_rng *r) {
  uint64_t z = (r->s += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

/* Uniform in [0, n) (n > 0); the tiny modulo bias is irrelevant here. */
static inline uint64_t tl_below(tl_rng *r, uint64_t n) { return tl_next(r) % n; }

static inline void tl_bytes(tl_rng *r, uint8_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = (uint8_t)tl_next(r);
}

/* Number of cases per property law: $RINGKV_PROPERTY_CASES, default 100000. */
static inline long tl_cases(void) {
  const char *s = getenv("RINGKV_PROPERTY_CASES");
  long n = s != NULL ? strtol(s, NULL, 10) : 0;
  return n > 0 ? n : 100000;
}

/* ------------------------------------------------------------------------------------- */
/* Encoding requests: one arena for the test process, reset by tl_reset(). */

static rk_arena tl_arena_;
static int tl_arena_ready_;

static inline rk_arena *tl_arena(void) {
  if (!tl_arena_ready_) {
    rk_arena_init(&tl_arena_);
    tl_arena_ready_ = 1;
  }
  return &tl_arena_;
}

static inline void tl_reset(void) { rk_arena_reset(tl_arena()); }
static inline void tl_free(void) {
  if (tl_arena_ready_) rk_arena_free(&tl_arena_);
  tl_arena_ready_ = 0;
}

static inline pb_enc tl_enc(void) {
  pb_enc e;
  pb_enc_init(&e, tl_arena());
  return e;
}

static inline rk_slice tl_str(const char *s) {
  rk_slice v = {(const uint8_t *)s, strlen(s)};
  return v;
}

static inline rk_slice tl_done(pb_enc *e) {
  assert_int_equal(e->err, 0);
  return pb_result(e);
}

/* A copy of `s` in malloc'd memory (replies live only until the next call). */
static inline rk_slice tl_dup(rk_slice s) {
  uint8_t *p = malloc(s.len ? s.len : 1);
  assert_non_null(p);
  if (s.len) memcpy(p, s.ptr, s.len);
  rk_slice d = {p, s.len};
  return d;
}

/* ------------------------------------------------------------------------------------- */
/* Reading replies. */

/* The last occurrence of field `f` with wire type `want` (proto3 "last one wins"). */
/* A Push in `version` from `from` with one entry (key, encoded register with values),
 * heap-copied (free it). */
static inline rk_slice tl_push_of(uint32_t version, uint32_t from, const char *key, rk_slice reg) {
  pb_enc e = tl_enc();
  pb_put_uint(&e, 1, version);
  pb_put_uint(&e, 2, from);
  size_t m = pb_begin(&e, 3);
  pb_put_bytes(&e, 1, tl_str(key));
  pb_put_bytes(&e, 2, reg);
  pb_end(&e, m);
  pb_put_uint(&e, 15, version);
  return tl_dup(tl_done(&e));
}

static inline int tl_field(rk_slice msg, uint32_t f, uint32_t want, pb_rd *at) {
  pb_rd r = pb_reader(msg);
  uint32_t field, wt;
  int found = 0, k;
  while ((k = pb_next(&r, &field, &wt)) == 1) {
    if (field == f && wt == want) {
      *at = r;
      found = 1;
    }
    if (!pb_skip(&r, wt)) return 0;
  }
  return k == 0 && found;
}

static inline uint64_t tl_u64(rk_slice msg, uint32_t f) {
  pb_rd r;
  uint64_t v = 0;
  if (tl_field(msg, f, PB_VARINT, &r)) assert_true(pb_read_varint(&r, &v));
  return v;
}

static inline uint64_t tl_fixed64(rk_slice msg, uint32_t f) {
  pb_rd r;
  uint64_t v = 0;
  if (tl_field(msg, f, PB_I64, &r)) assert_true(pb_get_fixed64(&r, PB_I64, &v));
  return v;
}

static inline rk_slice tl_bytes_field(rk_slice msg, uint32_t f) {
  pb_rd r;
  rk_slice v = {NULL, 0};
  if (tl_field(msg, f, PB_LEN, &r)) assert_true(pb_get_bytes(&r, PB_LEN, &v));
  return v;
}

/* Iterates the elements of a repeated length-delimited field: returns 1 and the next
 * element in *out, 0 at the end. Start with *it = pb_reader(msg). */
static inline int tl_next_bytes(pb_rd *it, uint32_t f, rk_slice *out) {
  uint32_t field, wt;
  while (pb_next(it, &field, &wt) == 1) {
    if (field == f && wt == PB_LEN) return pb_get_bytes(it, wt, out) ? 1 : 0;
    if (!pb_skip(it, wt)) return 0;
  }
  return 0;
}

/* Collects a repeated uint32 field (packed or not) into out[]; returns the count. */
typedef struct {
  uint32_t *v;
  size_t n, cap;
} tl_u32s;

static inline bool tl_u32s_push(void *ctx, uint32_t x) {
  tl_u32s *s = ctx;
  if (s->n == s->cap) return false;
  s->v[s->n++] = x;
  return true;
}

static inline size_t tl_repeated_u32(rk_slice msg, uint32_t f, uint32_t *out, size_t cap) {
  tl_u32s s = {out, 0, cap};
  pb_rd r = pb_reader(msg);
  uint32_t field, wt;
  while (pb_next(&r, &field, &wt) == 1) {
    if (field == f) {
      assert_true(pb_get_repeated_u32(&r, wt, tl_u32s_push, &s));
    } else {
      assert_true(pb_skip(&r, wt));
    }
  }
  return s.n;
}

/* How many entries a MergeReply refused for `reason` (MergeReply.refused, field 5). */
static inline uint32_t tl_refused(rk_slice merge_reply, const char *reason) {
  pb_rd it = pb_reader(merge_reply);
  rk_slice r;
  while (tl_next_bytes(&it, 5, &r)) {
    if (rk_slice_eq(tl_bytes_field(r, 1), tl_str(reason))) return (uint32_t)tl_u64(r, 2);
  }
  return 0;
}

/* ------------------------------------------------------------------------------------- */
/* Calling the core. */

typedef struct {
  uint32_t cluster_size, replicas, shards;
  uint64_t max_clock_skew_ms, tombstone_grace_ms;
  uint32_t max_siblings, fanout;
  uint64_t key_bytes_max;   /* 0: the largest the replicas allow, up to the default */
  /* The ring's transition (Config 12..15; phase 0: none) and Config.leases. */
  uint32_t from, to, phase;
  uint64_t epoch;
  bool leases;
} tl_config;

static inline tl_config tl_default_config(void) {
  tl_config c = {8, 3, 64, 60000, 3600000, 32, 8, 0, 0, 0, 0, 0, false};
  return c;
}

/* Up to 2 x replicas nodes may accept a key's writes: a configuration keeps that many
 * writers' siblings and bytes within the core's bounds (as a deployment must). */
static inline void tl_put_config(pb_enc *e, uint32_t field, tl_config c) {
  uint64_t accepting = 2u * (uint64_t)c.replicas;
  if (accepting > RINGKV_CLUSTER_SIZE_MAX) accepting = RINGKV_CLUSTER_SIZE_MAX;
  if (c.key_bytes_max == 0) {
    c.key_bytes_max = RINGKV_NODE_KEY_BYTES_MAX / accepting;
    if (c.key_bytes_max > RINGKV_KEY_BYTES_DEFAULT) c.key_bytes_max = RINGKV_KEY_BYTES_DEFAULT;
  }
  if (c.max_siblings * accepting > RINGKV_SIBLINGS_MAX) c.max_siblings = (uint32_t)(RINGKV_SIBLINGS_MAX / accepting);
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, c.cluster_size);
  pb_put_uint(e, 2, c.replicas);
  pb_put_uint(e, 3, c.shards);
  pb_put_uint(e, 4, c.max_clock_skew_ms);
  pb_put_uint(e, 5, c.tombstone_grace_ms);
  pb_put_uint(e, 6, c.max_siblings);
  pb_put_uint(e, 7, c.fanout);
  pb_put_uint(e, 9, c.key_bytes_max);
  pb_put_uint(e, 12, c.from);
  pb_put_uint(e, 13, c.to);
  pb_put_uint(e, 14, c.phase);
  pb_put_uint(e, 15, c.epoch);
  pb_put_bool(e, 30, c.leases);
  pb_end(e, m);
}

/* InitRequest{config, node{node}}. */
static inline rk_slice tl_init_request(tl_config c, uint32_t node) {
  pb_enc e = tl_enc();
  tl_put_config(&e, 1, c);
  size_t m = pb_begin(&e, 2);
  pb_put_uint(&e, 1, node);
  pb_end(&e, m);
  return tl_done(&e);
}

static inline int tl_call(ringkv_node *n, uint32_t op, rk_slice req, rk_slice *reply) {
  const uint8_t *p = NULL;
  size_t len = 0;
  int code = ringkv_call(n, op, req.ptr, req.len, &p, &len);
  if (reply != NULL) {
    reply->ptr = p;
    reply->len = len;
  }
  return code;
}

/* A node initialised with `c` as node `id`; fails the test otherwise. */
static inline ringkv_node *tl_node(tl_config c, uint32_t id) {
  ringkv_node *n = ringkv_node_create();
  assert_non_null(n);
  rk_slice reply;
  int code = tl_call(n, RINGKV_OP_INIT, tl_init_request(c, id), &reply);
  if (code != RINGKV_OK) {
    rk_slice why = tl_bytes_field(reply, 1);
    print_error("OP_INIT failed: %s: %.*s\n", ringkv_code_name(code), (int)why.len,
                why.ptr ? (const char *)why.ptr : "");
  }
  assert_int_equal(code, RINGKV_OK);
  return n;
}

#endif
