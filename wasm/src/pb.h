/* pb.h: protobuf wire primitives: a canonical encoder with a sticky error, and a bounded reader. */
#ifndef RINGKV_PB_H
#define RINGKV_PB_H

#include "util.h"

enum { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_I32 = 5 };

#define PB_VARINT_BYTES_MAX 10u
#define PB_FIELD_MAX ((1u << 29) - 1u)

/* Encoder into an arena-grown buffer. Every append checks `err` first and sets it on
 * failure, so a message is written straight through and checked once at the end. */
typedef struct {
  rk_arena *arena;
  uint8_t *buf;
  size_t len;
  size_t cap;
  int err;   /* 0 or a ringkv_code (RINGKV_E_NOMEM, RINGKV_E_VALUE for an oversize message) */
} pb_enc;

void pb_enc_init(pb_enc *e, rk_arena *arena);
void pb_put_raw(pb_enc *e, const void *bytes, size_t len);
void pb_put_varint_raw(pb_enc *e, uint64_t v);
/* Field writers omit proto3 defaults (0, false, empty), as canonical encoding requires. */
void pb_put_uint(pb_enc *e, uint32_t field, uint64_t v);
void pb_put_bool(pb_enc *e, uint32_t field, bool v);
void pb_put_fixed64(pb_enc *e, uint32_t field, uint64_t v);
void pb_put_bytes(pb_enc *e, uint32_t field, rk_slice v);
/* Writes `v` even when empty (repeated bytes elements keep their position). */
void pb_put_bytes_always(pb_enc *e, uint32_t field, rk_slice v);
/* Packed repeated uint32 (proto3's default for repeated scalars); nothing when n == 0. */
void pb_put_packed_u32(pb_enc *e, uint32_t field, const uint32_t *v, size_t n);
/* Nested messages: pb_begin writes the tag and returns a mark; pb_end inserts the minimal
 * length prefix in front of what was written since. */
size_t pb_begin(pb_enc *e, uint32_t field);
void pb_end(pb_enc *e, size_t mark);
/* Like pb_end, but drops the field entirely when the nested message came out empty. */
void pb_end_omit_empty(pb_enc *e, uint32_t field, size_t mark);
static inline rk_slice pb_result(const pb_enc *e) {
  rk_slice s = {e->buf, e->len};
  return s;
}
size_t pb_varint_size(uint64_t v);

/* Reader over an untrusted frame. Every read is bounds-checked; failures return false. */
typedef struct {
  const uint8_t *p;
  const uint8_t *end;
} pb_rd;

static inline pb_rd pb_reader(rk_slice s) {
  pb_rd r = {NULL, NULL};
  if (s.len != 0) {   /* an empty slice may hold NULL: no pointer arithmetic on it */
    r.p = s.ptr;
    r.end = s.ptr + s.len;
  }
  return r;
}
static inline bool pb_done(const pb_rd *r) { return r->p == r->end; }

bool pb_read_varint(pb_rd *r, uint64_t *v);
/* Reads the next tag. Returns 1 with field/wire type, 0 at the end, -1 on a bad tag. */
int pb_next(pb_rd *r, uint32_t *field, uint32_t *wt);
bool pb_skip(pb_rd *r, uint32_t wt);
/* Typed value readers: each checks the wire type. */
bool pb_get_u64(pb_rd *r, uint32_t wt, uint64_t *v);
bool pb_get_u32(pb_rd *r, uint32_t wt, uint32_t *v);   /* rejects values >= 2^32 */
bool pb_get_bool(pb_rd *r, uint32_t wt, bool *v);
bool pb_get_fixed64(pb_rd *r, uint32_t wt, uint64_t *v);
bool pb_get_bytes(pb_rd *r, uint32_t wt, rk_slice *v);
/* Repeated uint32, packed or not: calls back per element; false on error. */
typedef bool (*pb_u32_fn)(void *ctx, uint32_t v);
bool pb_get_repeated_u32(pb_rd *r, uint32_t wt, pb_u32_fn fn, void *ctx);

#endif
