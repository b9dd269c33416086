/* make_seeds: writes small valid seed inputs for one fuzz target into a directory.
 * Usage: make_seeds <target> <dir>. build.sh runs it for an empty tests/fuzz/corpus/<target>/.
 * Seeds are built with the core's own encoders (pb.h, register.h) so they are canonical;
 * libFuzzer mutates from there. */
#include <errno.h>

#include "fuzzlib.h"
#include "hash.h"
#include "range.h"

static const char *out_dir;
static int seeds;

static void emit(rk_slice s) {
  char path[4096];
  snprintf(path, sizeof path, "%s/seed-%02d", out_dir, seeds++);
  FILE *f = fopen(path, "wb");
  if (f == NULL || (s.len && fwrite(s.ptr, 1, s.len, f) != s.len) || fclose(f) != 0) {
    fprintf(stderr, "make_seeds: cannot write %s: %s\n", path, strerror(errno));
    exit(1);
  }
}

static rk_arena A;

static pb_enc enc(void) {
  pb_enc e;
  pb_enc_init(&e, &A);
  return e;
}

static rk_slice done(pb_enc *e) {
  if (e->err != 0) {
    fprintf(stderr, "make_seeds: encoder error %d\n", e->err);
    exit(1);
  }
  return pb_result(e);
}

/* ------------------------------------------------------------------------------------- */
/* State */

static rk_sib live(uint32_t node, uint64_t counter, uint64_t hlc, const char *value) {
  rk_sib s;
  memset(&s, 0, sizeof s);
  s.dot = (rk_dot){node, counter};
  s.hlc = hlc;
  s.content_type = fz_str("text/plain");
  s.value = fz_str(value);
  s.value_hash = rk_hash(value, strlen(value));
  return s;
}

static rk_sib tomb(uint32_t node, uint64_t counter, uint64_t hlc) {
  rk_sib s;
  memset(&s, 0, sizeof s);
  s.dot = (rk_dot){node, counter};
  s.hlc = hlc;
  s.deleted = true;
  return s;
}

#define MS(x) ((uint64_t)(x) << 16)

/* A few registers: one version; two concurrent (one deleted); sparse dots. */
static rk_reg sample_reg(int which) {
  static rk_sib s1[1], s2[3], s3[2];
  static rk_dot vv1[1] = {{0, 1}};
  static rk_dot vv2[3] = {{0, 2}, {1, 1}, {2, 5}};
  static rk_dot vv3[1] = {{3, 2}};
  static rk_dot d3[2] = {{3, 7}, {5, 9}};
  switch (which) {
    case 0:
      s1[0] = live(0, 1, MS(900), "hello");
      return (rk_reg){s1, 1, {vv1, 1, NULL, 0}};
    case 1:
      s2[0] = live(0, 2, MS(900) | 1, "a");
      s2[1] = tomb(1, 1, MS(950));
      s2[2] = live(2, 5, MS(940), "ccc");
      return (rk_reg){s2, 3, {vv2, 3, NULL, 0}};
    default:
      s3[0] = live(3, 7, MS(800), "");
      s3[1] = tomb(5, 9, MS(990) | 7);
      return (rk_reg){s3, 2, {vv3, 1, d3, 2}};
  }
}

static rk_slice reg_bytes(int which, bool with_values) {
  rk_reg r = sample_reg(which);
  pb_enc e = enc();
  rk_reg_encode(&e, &r, with_values);
  return done(&e);
}

static void put_ctx(pb_enc *e, uint32_t field, const rk_ctx *c) {
  size_t m = pb_begin(e, field);
  rk_ctx_encode(e, c);
  pb_end(e, m);
}

static rk_slice token(uint64_t key_hash, uint64_t max_hlc, const rk_ctx *c) {
  pb_enc e = enc();
  pb_put_fixed64(&e, 1, key_hash);
  pb_put_fixed64(&e, 2, max_hlc);
  if (c != NULL) put_ctx(&e, 3, c);
  return done(&e);
}

/* ------------------------------------------------------------------------------------- */
/* Messages */

static void put_entry(pb_enc *e, const char *key, int which) {
  size_t m = pb_begin(e, 3);
  pb_put_bytes(e, 1, fz_str(key));
  size_t m2 = pb_begin(e, 2);
  rk_reg r = sample_reg(which);
  rk_reg_encode(e, &r, true);
  pb_end(e, m2);
  pb_end(e, m);
}

static rk_slice push(uint32_t version, int entries, const uint32_t *shards, size_t nshards) {
  pb_enc e = enc();
  pb_put_uint(&e, 1, version);
  pb_put_uint(&e, 2, 1);
  /* "zz", "x" and "k5" are node 0's keys under the fuzz config, "a" is not. */
  static const char *keys[] = {"zz", "x", "k5", "a"};
  for (int i = 0; i < entries; i++) put_entry(&e, keys[i % 4], i % 3);
  pb_put_packed_u32(&e, 4, shards, nshards);
  return done(&e);
}

static rk_slice digest_request(uint64_t root) {
  pb_enc e = enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 1);
  pb_put_fixed64(&e, 3, root);
  return done(&e);
}

/* The second anti-entropy step: the shard digests of these buckets. */
static rk_slice digest_request_buckets(uint64_t root, const uint32_t *buckets, size_t n) {
  pb_enc e = enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 1);
  pb_put_fixed64(&e, 3, root);
  pb_put_packed_u32(&e, 4, buckets, n);
  return done(&e);
}

/* A root mismatch answered with `n` bucket digests (packed fixed64). */
static rk_slice digest_reply_buckets(int n) {
  pb_enc e = enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 1);
  uint8_t b[8 * 4];
  for (int i = 0; i < n && i < 4; i++) rk_le64(b + 8 * i, i == 0 ? 0 : rk_hash(&i, sizeof i));
  pb_put_bytes(&e, 5, (rk_slice){b, (size_t)(n < 4 ? n : 4) * 8});
  return done(&e);
}

static rk_slice digest_reply(bool equal, int shards) {
  pb_enc e = enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 1);
  pb_put_bool(&e, 3, equal);
  for (int i = 0; i < shards; i++) {
    size_t m = pb_begin(&e, 4);
    pb_put_uint(&e, 1, (uint32_t)(i * 5 % 64));
    pb_put_fixed64(&e, 2, i % 3 == 0 ? 0 : rk_hash(&i, sizeof i));
    pb_end(&e, m);
  }
  return done(&e);
}

/* The third step (version 3): the parts of key ranges of these shards. */
static rk_slice digest_request_ranges(const uint32_t *shards, size_t n, uint32_t bits) {
  pb_enc e = enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 1);
  for (size_t i = 0; i < n; i++) {
    rk_range r = {shards[i], 0, bits};
    rk_range_write(&e, 5, &r);
  }
  pb_put_uint(&e, 15, RINGKV_PROTOCOL_VERSION);
  return done(&e);
}

/* Its answer: `n` ranges' parts, some empty. */
static rk_slice digest_reply_parts(int n) {
  pb_enc e = enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 1);
  for (int i = 0; i < n; i++) {
    rk_parts p;
    memset(&p, 0, sizeof p);
    for (uint32_t k = 0; k < RINGKV_AE_PARTS; k += (uint32_t)i + 1u) {
      p.mask |= 1u << k;
      p.counts[k] = k * 7u + (uint32_t)i;
      p.digests[k] = rk_hash(&k, sizeof k);
    }
    rk_parts_write(&e, 6, &p);
  }
  pb_put_uint(&e, 15, RINGKV_PROTOCOL_VERSION);
  return done(&e);
}

static rk_slice gc_message(int keys) {
  pb_enc e = enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, 2);
  static const char *names[] = {"x", "gone", "k"};
  for (int i = 0; i < keys; i++) {
    size_t m = pb_begin(&e, 3);
    pb_put_bytes(&e, 1, fz_str(names[i % 3]));
    pb_put_fixed64(&e, 2, i == 1 ? 0 : UINT64_C(0x9E3779B97F4A7C15) * (uint64_t)(i + 1));
    /* Version 4: a query's context (vv {0: 1}), a reply's `covered`. */
    size_t c = pb_begin(&e, 3);
    size_t d = pb_begin(&e, 1);
    pb_put_uint(&e, 1, 0);
    pb_put_uint(&e, 2, 1);
    pb_end(&e, d);
    pb_end(&e, c);
    pb_put_bool(&e, 4, i == 1);
    pb_end(&e, m);
  }
  return done(&e);
}

/* ------------------------------------------------------------------------------------- */
/* Requests (for fuzz_request: one op byte, then the request). */

static void emit_op(uint32_t op, rk_slice req) {
  uint8_t *b = rk_alloc(&A, req.len + 1);
  b[0] = (uint8_t)op;
  if (req.len) memcpy(b + 1, req.ptr, req.len);
  emit(fz_slice(b, req.len + 1));
}

static void put_local(pb_enc *e, uint32_t field, const char *key, int which, bool values) {
  size_t m = pb_begin(e, field);
  pb_put_bytes(e, 1, fz_str(key));
  pb_put_bytes(e, 2, reg_bytes(which, false));
  if (values) {
    rk_reg r = sample_reg(which);
    for (size_t i = 0; i < r.sibs_len; i++) {
      if (r.sibs[i].deleted) continue;
      size_t mv = pb_begin(e, 3);
      size_t md = pb_begin(e, 1);
      pb_put_uint(e, 1, r.sibs[i].dot.node);
      pb_put_uint(e, 2, r.sibs[i].dot.counter);
      pb_end(e, md);
      pb_put_bytes(e, 2, r.sibs[i].value);
      pb_end(e, mv);
    }
  }
  pb_end(e, m);
}

static void request_seeds(void) {
  pb_enc e;
  size_t m;
  /* 1 INIT */
  e = enc();
  fz_put_config(&e, 1);
  m = pb_begin(&e, 2);
  pb_put_uint(&e, 1, 2);
  pb_put_fixed64(&e, 2, MS(500));
  pb_put_uint(&e, 3, 17);
  pb_end(&e, m);
  m = pb_begin(&e, 3);
  pb_put_uint(&e, 1, 5);
  pb_put_fixed64(&e, 2, 77);
  pb_end(&e, m);
  emit_op(RINGKV_OP_INIT, done(&e));
  /* 2 PLACE */
  e = enc();
  pb_put_bytes_always(&e, 1, fz_str("k"));
  pb_put_bytes_always(&e, 1, fz_str("user/42"));
  emit_op(RINGKV_OP_PLACE, done(&e));
  /* 3 WRITE: blind over a stored register; with a token; a delete. */
  e = enc();
  pb_put_uint(&e, 1, 1000);
  pb_put_bytes(&e, 2, fz_str("k"));
  pb_put_bytes(&e, 3, reg_bytes(1, false));
  pb_put_bytes(&e, 6, fz_str("value"));
  pb_put_bytes(&e, 7, fz_str("text/plain"));
  emit_op(RINGKV_OP_WRITE, done(&e));
  rk_reg r1 = sample_reg(1);
  e = enc();
  pb_put_uint(&e, 1, 1000);
  pb_put_bytes(&e, 2, fz_str("k"));
  pb_put_bytes(&e, 3, reg_bytes(1, false));
  pb_put_bool(&e, 4, true);
  pb_put_bytes(&e, 5, token(rk_hash("k", 1), MS(950), &r1.ctx));
  pb_put_bytes(&e, 6, fz_str("v2"));
  emit_op(RINGKV_OP_WRITE, done(&e));
  e = enc();
  pb_put_uint(&e, 1, 1000);
  pb_put_bytes(&e, 2, fz_str("k"));
  pb_put_bool(&e, 8, true);
  emit_op(RINGKV_OP_WRITE, done(&e));
  /* 4 READ */
  e = enc();
  pb_put_bytes(&e, 1, fz_str("k"));
  pb_put_bytes(&e, 2, reg_bytes(2, false));
  emit_op(RINGKV_OP_READ, done(&e));
  /* 5 MESSAGE_KEYS */
  e = enc();
  pb_put_bytes(&e, 1, push(RINGKV_PROTOCOL_VERSION, 2, NULL, 0));
  emit_op(RINGKV_OP_MESSAGE_KEYS, done(&e));
  /* 6 MERGE, with locals */
  e = enc();
  pb_put_uint(&e, 1, 1000);
  pb_put_bytes(&e, 2, push(RINGKV_PROTOCOL_VERSION, 2, NULL, 0));
  put_local(&e, 3, "zz", 1, false);
  emit_op(RINGKV_OP_MERGE, done(&e));
  /* 7 BUILD_PUSH */
  e = enc();
  for (int i = 0; i < 2; i++) {
    m = pb_begin(&e, 1);
    put_local(&e, 1, i ? "user/42" : "k", i, true);
    pb_put_uint(&e, 2, (uint64_t)i + 1);
    pb_put_bool(&e, 3, i == 0);
    pb_end(&e, m);
  }
  for (uint32_t p = 1; p < 4; p++) {
    m = pb_begin(&e, 2);
    pb_put_uint(&e, 1, p);
    pb_put_uint(&e, 2, 0);
    pb_end(&e, m);
  }
  pb_put_uint(&e, 3, 2);
  emit_op(RINGKV_OP_BUILD_PUSH, done(&e));
  /* 8 AE_START */
  e = enc();
  pb_put_uint(&e, 1, 1);
  emit_op(RINGKV_OP_AE_START, done(&e));
  /* 9 AE_ANSWER */
  e = enc();
  pb_put_bytes(&e, 1, digest_request(12345));
  emit_op(RINGKV_OP_AE_ANSWER, done(&e));
  /* 10 AE_COMPARE */
  e = enc();
  pb_put_bytes(&e, 1, digest_reply(false, 4));
  pb_put_uint(&e, 2, 64);
  emit_op(RINGKV_OP_AE_COMPARE, done(&e));
  /* 11 AE_REPAIR */
  e = enc();
  pb_put_uint(&e, 1, 1);
  uint32_t shards[2] = {3, 17};
  pb_put_packed_u32(&e, 2, shards, 2);
  put_local(&e, 3, "k", 0, true);
  emit_op(RINGKV_OP_AE_REPAIR, done(&e));
  /* 12 GC_QUERY */
  e = enc();
  pb_put_uint(&e, 1, 100000000);
  put_local(&e, 2, "x", 2, false);
  emit_op(RINGKV_OP_GC_QUERY, done(&e));
  /* 13 GC_ANSWER */
  e = enc();
  pb_put_bytes(&e, 1, gc_message(2));
  put_local(&e, 2, "x", 2, false);
  emit_op(RINGKV_OP_GC_ANSWER, done(&e));
  /* 14 GC_DECIDE */
  e = enc();
  pb_put_uint(&e, 1, 100000000);
  put_local(&e, 2, "x", 2, false);
  pb_put_bytes_always(&e, 3, gc_message(1));
  emit_op(RINGKV_OP_GC_DECIDE, done(&e));
  /* 15 EXPIRE */
  e = enc();
  pb_put_uint(&e, 1, 100000000);
  put_local(&e, 2, "x", 2, false);
  emit_op(RINGKV_OP_EXPIRE, done(&e));
  /* 16 AE_START, second step: bucket 0 */
  e = enc();
  pb_put_uint(&e, 1, 1);
  uint32_t bucket0[1] = {0};
  pb_put_packed_u32(&e, 2, bucket0, 1);
  emit_op(RINGKV_OP_AE_START, done(&e));
  /* 17 AE_ANSWER, second step */
  e = enc();
  pb_put_bytes(&e, 1, digest_request_buckets(12345, bucket0, 1));
  emit_op(RINGKV_OP_AE_ANSWER, done(&e));
  /* 18 AE_COMPARE of bucket digests */
  e = enc();
  pb_put_bytes(&e, 1, digest_reply_buckets(1));
  pb_put_uint(&e, 2, 64);
  emit_op(RINGKV_OP_AE_COMPARE, done(&e));
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: make_seeds <target> <dir>\n");
    return 2;
  }
  const char *t = argv[1];
  out_dir = argv[2];
  rk_arena_init(&A);
  if (strcmp(t, "fuzz_register") == 0) {
    for (int i = 0; i < 3; i++) emit(reg_bytes(i, false));
    emit(reg_bytes(1, true));
    emit(fz_slice(NULL, 0));
  } else if (strcmp(t, "fuzz_token") == 0) {
    uint64_t kh = rk_hash("k", 1);
    rk_dot vv[2] = {{0, 1}, {1, 1}};
    rk_dot d[1] = {{1, 1}};
    rk_ctx both = {vv, 2, NULL, 0}, first = {vv, 1, NULL, 0}, sparse = {NULL, 0, d, 1};
    emit(token(kh, 0, NULL));
    emit(token(kh, MS(900), &first));
    emit(token(kh, MS(950), &both));
    emit(token(kh, MS(950), &sparse));
    emit(token(kh, MS(1000 + 60000 + 1), &both));   /* beyond the skew bound */
    emit(token(kh ^ 1, MS(900), &first));             /* bound to another key */
  } else if (strcmp(t, "fuzz_push") == 0) {
    uint32_t shards[3] = {0, 7, 63};
    emit(push(RINGKV_PROTOCOL_VERSION, 1, NULL, 0));
    emit(push(RINGKV_PROTOCOL_VERSION, 4, NULL, 0));
    emit(push(RINGKV_PROTOCOL_VERSION, 2, shards, 3));
    emit(push(RINGKV_PROTOCOL_VERSION, 0, shards, 1));
    emit(push(RINGKV_PROTOCOL_VERSION + 1, 1, NULL, 0));
  } else if (strcmp(t, "fuzz_digest") == 0) {
    emit(digest_request(0));
    emit(digest_request(UINT64_C(0xDEADBEEFCAFEF00D)));
    emit(digest_reply(true, 0));
    emit(digest_reply(false, 6));
    uint32_t buckets[2] = {0, 1};
    emit(digest_request_buckets(7, buckets, 1));
    emit(digest_request_buckets(7, buckets, 2));
    emit(digest_reply_buckets(1));
    emit(digest_reply_buckets(3));
    uint32_t range_shards[3] = {3, 17, 40};
    emit(digest_request_ranges(range_shards, 1, RINGKV_KEY_POSITION_BITS));
    emit(digest_request_ranges(range_shards, 3, 8));
    emit(digest_reply_parts(1));
    emit(digest_reply_parts(3));
    emit(gc_message(1));
    emit(gc_message(3));
  } else if (strcmp(t, "fuzz_control") == 0) {
    /* ControlState{ring{epoch 1, size 8, node_ids_max 8}, cluster id, [secret], applied 8} */
    uint8_t id[RINGKV_CLUSTER_ID_BYTES] = {1, 2, 3}, secret[RINGKV_SECRET_BYTES] = {9};
    for (int with_secret = 0; with_secret < 2; with_secret++) {
      pb_enc e = enc();
      size_t m = pb_begin(&e, 1);
      pb_put_uint(&e, 1, 1);
      pb_put_uint(&e, 2, 8);
      pb_put_uint(&e, 6, 8);
      pb_end(&e, m);
      pb_put_bytes(&e, 2, fz_slice(id, sizeof id));
      if (with_secret) pb_put_bytes(&e, 3, fz_slice(secret, sizeof secret));
      pb_put_uint(&e, 4, 8);
      emit(done(&e));
    }
    emit(fz_slice(NULL, 0));
  } else if (strcmp(t, "fuzz_report") == 0) {
    /* A NodeReport (2-byte length first), then a ReportLoaded. */
    for (int full = 0; full < 2; full++) {
      pb_enc r = enc();
      pb_put_uint(&r, 1, RINGKV_PROTOCOL_VERSION);
      pb_put_uint(&r, 2, 3);
      pb_put_uint(&r, 3, 7);
      pb_put_uint(&r, 5, (uint64_t)full);
      size_t m = pb_begin(&r, 9);
      pb_put_bytes(&r, 1, fz_str("rounds"));
      pb_put_uint(&r, 2, 4);
      pb_end(&r, m);
      for (uint32_t sh = 1; sh < 4; sh++) {
        m = pb_begin(&r, 10);
        pb_put_uint(&r, 1, sh * 5u);
        pb_put_fixed64(&r, 2, sh);
        pb_end(&r, m);
      }
      pb_put_bool(&r, 11, full == 1);
      rk_slice rs = done(&r);
      pb_enc l = enc();
      pb_put_bool(&l, 1, true);
      pb_put_uint(&l, 2, 2);
      m = pb_begin(&l, 3);
      pb_put_uint(&l, 1, 5);
      pb_put_uint(&l, 2, 1);
      pb_put_fixed64(&l, 3, 9);
      pb_end(&l, m);
      pb_put_uint(&l, 4, 1);
      rk_slice ls = done(&l);
      uint8_t *buf = rk_alloc(&A, 2 + rs.len + ls.len);
      buf[0] = (uint8_t)(rs.len >> 8);
      buf[1] = (uint8_t)rs.len;
      memcpy(buf + 2, rs.ptr, rs.len);
      memcpy(buf + 2 + rs.len, ls.ptr, ls.len);
      emit(fz_slice(buf, 2 + rs.len + ls.len));
    }
  } else if (strcmp(t, "fuzz_step") == 0) {
    /* Mode bytes as fuzz_step.c reads them: 0 StepState, 1 PeerState, 2 StepRequest, 3 a
     * script of events. */
    static const uint8_t mode[3] = {0, 1, 2};
    pb_enc e = enc();
    pb_put_raw(&e, &mode[0], 1);
    pb_put_fixed64(&e, 1, UINT64_C(1000) << 16);
    pb_put_uint(&e, 2, 5);
    pb_put_uint(&e, 3, 9);
    pb_put_uint(&e, 5, 900);
    pb_put_uint(&e, 8, 2000);
    pb_put_uint(&e, 9, 1000);
    pb_put_uint(&e, 10, 2);
    emit(done(&e));
    e = enc();
    pb_put_raw(&e, &mode[1], 1);
    pb_put_uint(&e, 1, 3);
    pb_put_uint(&e, 2, 7);
    pb_put_uint(&e, 3, 2);
    pb_put_uint(&e, 4, 5000);
    emit(done(&e));
    /* Scripts (mode 3): rounds, then outcomes of sends by index, lost, answered, refused. */
    static const uint8_t script_a[] = {3, 0, 10, 0, 10, 0, 10, 0, 17, 9, 0, 0, 1, 8};
    static const uint8_t script_b[] = {3, 0, 11, 0, 2, 0, 10, 18, 26, 0, 3, 9, 9, 0, 0};
    emit(fz_slice(script_a, sizeof script_a));
    emit(fz_slice(script_b, sizeof script_b));
    /* StepRequests: the alarm, a client write, a gossip Push, an answer. */
    for (int ev = 0; ev < 4; ev++) {
      e = enc();
      pb_put_raw(&e, &mode[2], 1);
      pb_put_uint(&e, 1, 1000);
      pb_put_uint(&e, 2, 77);
      if (ev == 0) {
        pb_put_uint(&e, 3, 1);
      } else if (ev == 1) {
        size_t m = pb_begin(&e, 6);
        pb_put_bytes(&e, 2, fz_str("k"));
        pb_put_bytes(&e, 6, fz_str("v"));
        pb_end(&e, m);
      } else if (ev == 2) {
        size_t m = pb_begin(&e, 7);
        pb_put_uint(&e, 1, 1);
        pb_put_bytes(&e, 2, fz_str("\x08\x01"));
        pb_end(&e, m);
      } else {
        size_t m = pb_begin(&e, 5);
        pb_put_uint(&e, 1, 1);
        pb_put_uint(&e, 3, 1);
        pb_end(&e, m);
      }
      emit(done(&e));
    }
  } else if (strcmp(t, "fuzz_request") == 0) {
    request_seeds();
  } else {
    fprintf(stderr, "make_seeds: no seeds for %s\n", t);
    return 0;
  }
  rk_arena_free(&A);
  return 0;
}
