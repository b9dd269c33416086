/* fuzzlib.h: what the libFuzzer targets in tests/fuzz/ share: a freshly initialised node
 * per input (so every crash reproduces from its one input file), request builders on the
 * core's own encoder (pb.h), and oracles that turn silent corruption into crashes.
 *
 * The targets drive the core through its public API (ringkv_call) only; return codes are
 * expected, sanitizer reports and failed oracles are the findings. */
#ifndef RINGKV_FUZZLIB_H
#define RINGKV_FUZZLIB_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pb.h"
#include "register.h"
#include "ringkv.h"

#define FZ_NOW_MS UINT64_C(1000)

/* A failed oracle: report and abort, so libFuzzer keeps the input. */
#define FZ_CHECK(cond, what)                                          \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "fuzz oracle failed: %s (%s:%d)\n", what, __FILE__, __LINE__); \
      abort();                                                        \
    }                                                                 \
  } while (0)

static rk_arena fz_arena_;
static int fz_arena_ready_;

/* The harness's own arena (for building requests), reset per input. */
static inline rk_arena *fz_arena(void) {
  if (!fz_arena_ready_) {
    rk_arena_init(&fz_arena_);
    fz_arena_ready_ = 1;
  }
  return &fz_arena_;
}

static inline pb_enc fz_enc(void) {
  pb_enc e;
  pb_enc_init(&e, fz_arena());
  return e;
}

static inline rk_slice fz_slice(const uint8_t *p, size_t n) {
  rk_slice s = {n ? p : NULL, n};
  return s;
}

static inline rk_slice fz_str(const char *s) { return fz_slice((const uint8_t *)s, strlen(s)); }

static inline rk_slice fz_result(pb_enc *e) {
  FZ_CHECK(e->err == 0, "harness encoder failed");
  return pb_result(e);
}

/* Config{cluster_size 8, replicas 3, shards 64, skew 60 s, grace 1 h, max_siblings 32,
 * fanout 8}, as field `field` of the message being built. */
static inline void fz_put_config(pb_enc *e, uint32_t field) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, 8);
  pb_put_uint(e, 2, 3);
  pb_put_uint(e, 3, 64);
  pb_put_uint(e, 4, 60000);
  pb_put_uint(e, 5, 3600000);
  pb_put_uint(e, 6, 32);
  pb_put_uint(e, 7, 8);
  pb_end(e, m);
}

/* InitRequest{config, node{node 0}}. */
static inline rk_slice fz_init_request(void) {
  pb_enc e = fz_enc();
  fz_put_config(&e, 1);
  size_t m = pb_begin(&e, 2);
  pb_put_uint(&e, 1, 0);
  pb_end(&e, m);
  return fz_result(&e);
}

/* A reply must be a well-formed protobuf message (every top-level field parses). */
static inline void fz_check_reply(int code, const uint8_t *reply, size_t len) {
  FZ_CHECK(ringkv_code_name(code) != NULL, "code without a name");
  FZ_CHECK(len == 0 || reply != NULL, "reply length without bytes");
  if (len == 0) return;
  pb_rd r = {reply, reply + len};
  uint32_t f, wt;
  int t;
  while ((t = pb_next(&r, &f, &wt)) == 1) FZ_CHECK(pb_skip(&r, wt), "reply field does not parse");
  FZ_CHECK(t == 0, "reply tag does not parse");
}

/* One call; checks the reply's framing; returns the code and the reply. */
static inline int fz_call(ringkv_node *n, uint32_t op, rk_slice req, rk_slice *reply) {
  const uint8_t *p = NULL;
  size_t len = 0;
  int code = ringkv_call(n, op, req.ptr, req.len, &p, &len);
  fz_check_reply(code, p, len);
  if (reply != NULL) *reply = fz_slice(p, len);
  return code;
}

/* A fresh node initialised with the standard config, and the harness arena reset. */
static inline ringkv_node *fz_begin(void) {
  rk_arena_reset(fz_arena());
  ringkv_node *n = ringkv_node_create();
  FZ_CHECK(n != NULL, "ringkv_node_create");
  int code = fz_call(n, RINGKV_OP_INIT, fz_init_request(), NULL);
  FZ_CHECK(code == RINGKV_OK, "OP_INIT with the standard config");
  return n;
}

static inline void fz_end(ringkv_node *n) { ringkv_node_destroy(n); }

/* The last occurrence of a length-delimited field of `msg` (empty when absent). */
static inline rk_slice fz_bytes_field(rk_slice msg, uint32_t field) {
  rk_slice out = {NULL, 0}, v;
  pb_rd r = {msg.ptr, msg.ptr + msg.len};
  if (msg.len == 0) r.p = r.end = NULL;
  uint32_t f, wt;
  while (pb_next(&r, &f, &wt) == 1) {
    if (f == field && wt == PB_LEN) {
      if (!pb_get_bytes(&r, wt, &v)) break;
      out = v;
    } else if (!pb_skip(&r, wt)) {
      break;
    }
  }
  return out;
}

/* Stored metadata the core produced must read back, and re-encode to the same bytes. */
/* A message's last varint field `field` (0 when absent). */
static inline uint64_t fz_u64(rk_slice msg, uint32_t field) {
  pb_rd r = pb_reader(msg);
  uint32_t f, wt;
  uint64_t v = 0, got;
  while (pb_next(&r, &f, &wt) == 1) {
    if (f == field && wt == PB_VARINT) {
      if (!pb_get_u64(&r, wt, &got)) return 0;
      v = got;
    } else if (!pb_skip(&r, wt)) {
      return v;
    }
  }
  return v;
}

static inline void fz_check_meta(rk_slice meta) {
  if (meta.len == 0) return;
  rk_arena a;
  rk_arena_init(&a);
  rk_reg r;
  FZ_CHECK(rk_reg_decode(&a, meta, &r) == RINGKV_OK, "the core's own metadata does not decode");
  pb_enc e;
  pb_enc_init(&e, &a);
  rk_reg_encode(&e, &r, false);
  FZ_CHECK(e.err == 0 && rk_slice_eq(pb_result(&e), meta), "the core's metadata is not canonical");
  rk_arena_free(&a);
}

/* A stored register with two concurrent siblings, one of them a tombstone:
 * siblings (0,1) hlc 900ms and (1,1) hlc 950ms, context {0:1, 1:1}. */
static inline rk_slice fz_sample_meta(rk_arena *a) {
  rk_sib s[2];
  memset(s, 0, sizeof s);
  s[0].dot = (rk_dot){0, 1};
  s[0].hlc = UINT64_C(900) << 16;
  s[0].content_type = fz_str("text/plain");
  s[0].value_hash = UINT64_C(0x1234);
  s[1].dot = (rk_dot){1, 1};
  s[1].hlc = UINT64_C(950) << 16;
  s[1].deleted = true;
  rk_dot vv[2] = {{0, 1}, {1, 1}};
  rk_reg r = {s, 2, {vv, 2, NULL, 0}};
  pb_enc e;
  pb_enc_init(&e, a);
  rk_reg_encode(&e, &r, false);
  return fz_result(&e);
}

/* A stored register whose context covers more than its siblings: (0,1) live, context
 * {0:1, 1:1} (it has seen (1,1) superseded elsewhere). A push that covers (0,1) without
 * holding it must not leave this key without versions. */
static inline rk_slice fz_sample_meta_seen(rk_arena *a) {
  rk_sib s;
  memset(&s, 0, sizeof s);
  s.dot = (rk_dot){0, 1};
  s.hlc = UINT64_C(900) << 16;
  s.content_type = fz_str("text/plain");
  s.value_hash = UINT64_C(0x5678);
  rk_dot vv[2] = {{0, 1}, {1, 1}};
  rk_reg r = {&s, 1, {vv, 2, NULL, 0}};
  pb_enc e;
  pb_enc_init(&e, a);
  rk_reg_encode(&e, &r, false);
  return fz_result(&e);
}

#endif
