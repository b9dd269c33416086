/* pb.c: protobuf wire primitives (see pb.h). */
#include "pb.h"

void pb_enc_init(pb_enc *e, rk_arena *arena) {
  e->arena = arena;
  e->buf = NULL;
  e->len = 0;
  e->cap = 0;
  e->err = 0;
}

static bool reserve(pb_enc *e, size_t more) {
  if (e->err != 0) return false;
  if (more > RINGKV_MESSAGE_BYTES_MAX || e->len + more > RINGKV_MESSAGE_BYTES_MAX) {
    e->err = RINGKV_E_VALUE;
    return false;
  }
  if (e->len + more <= e->cap) return true;
  size_t cap = RK_MAX((size_t)256, e->cap * 2);
  while (cap < e->len + more) cap *= 2;
  uint8_t *nb = rk_realloc(e->arena, e->buf, e->len, cap);
  if (nb == NULL) {
    e->err = RINGKV_E_NOMEM;
    return false;
  }
  e->buf = nb;
  e->cap = cap;
  return true;
}

void pb_put_raw(pb_enc *e, const void *bytes, size_t len) {
  if (len == 0 || !reserve(e, len)) return;
  memcpy(e->buf + e->len, bytes, len);
  e->len += len;
}

size_t pb_varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static size_t varint_write(uint8_t *out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

void pb_put_varint_raw(pb_enc *e, uint64_t v) {
  if (!reserve(e, PB_VARINT_BYTES_MAX)) return;
  e->len += varint_write(e->buf + e->len, v);
}

static void put_tag(pb_enc *e, uint32_t field, uint32_t wt) {
  RK_ASSERT(field >= 1 && field <= PB_FIELD_MAX);
  pb_put_varint_raw(e, ((uint64_t)field << 3) | wt);
}

void pb_put_uint(pb_enc *e, uint32_t field, uint64_t v) {
  if (v == 0) return;
  put_tag(e, field, PB_VARINT);
  pb_put_varint_raw(e, v);
}

void pb_put_bool(pb_enc *e, uint32_t field, bool v) {
  if (v) pb_put_uint(e, field, 1);
}

void pb_put_fixed64(pb_enc *e, uint32_t field, uint64_t v) {
  if (v == 0) return;
  put_tag(e, field, PB_I64);
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
  pb_put_raw(e, b, 8);
}

void pb_put_bytes_always(pb_enc *e, uint32_t field, rk_slice v) {
  put_tag(e, field, PB_LEN);
  pb_put_varint_raw(e, v.len);
  pb_put_raw(e, v.ptr, v.len);
}

void pb_put_bytes(pb_enc *e, uint32_t field, rk_slice v) {
  if (v.len != 0) pb_put_bytes_always(e, field, v);
}

void pb_put_packed_u32(pb_enc *e, uint32_t field, const uint32_t *v, size_t n) {
  if (n == 0) return;
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) bytes += pb_varint_size(v[i]);
  put_tag(e, field, PB_LEN);
  pb_put_varint_raw(e, bytes);
  for (size_t i = 0; i < n; i++) pb_put_varint_raw(e, v[i]);
}

size_t pb_begin(pb_enc *e, uint32_t field) {
  put_tag(e, field, PB_LEN);
  return e->len;
}

void pb_end(pb_enc *e, size_t mark) {
  if (e->err != 0) return;
  RK_ASSERT(mark <= e->len);
  size_t body = e->len - mark;
  size_t n = pb_varint_size(body);
  if (!reserve(e, n)) return;
  memmove(e->buf + mark + n, e->buf + mark, body);
  varint_write(e->buf + mark, body);
  e->len += n;
}

void pb_end_omit_empty(pb_enc *e, uint32_t field, size_t mark) {
  if (e->err != 0) return;
  if (e->len == mark) {
    /* Drop the tag pb_begin wrote. */
    size_t tag_bytes = pb_varint_size(((uint64_t)field << 3) | PB_LEN);
    RK_ASSERT(mark >= tag_bytes);
    e->len = mark - tag_bytes;
    return;
  }
  pb_end(e, mark);
}

bool pb_read_varint(pb_rd *r, uint64_t *v) {
  uint64_t x = 0;
  for (unsigned i = 0; i < PB_VARINT_BYTES_MAX; i++) {
    if (r->p == r->end) return false;
    uint8_t b = *r->p++;
    if (i == 9 && b > 1) return false;   /* beyond 64 bits */
    x |= (uint64_t)(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      *v = x;
      return true;
    }
  }
  return false;
}

int pb_next(pb_rd *r, uint32_t *field, uint32_t *wt) {
  if (r->p == r->end) return 0;
  uint64_t tag;
  if (!pb_read_varint(r, &tag)) return -1;
  uint64_t f = tag >> 3;
  if (f == 0 || f > PB_FIELD_MAX) return -1;
  *field = (uint32_t)f;
  *wt = (uint32_t)(tag & 7);
  return 1;
}

bool pb_skip(pb_rd *r, uint32_t wt) {
  uint64_t v;
  switch (wt) {
    case PB_VARINT:
      return pb_read_varint(r, &v);
    case PB_I64:
      if (r->end - r->p < 8) return false;
      r->p += 8;
      return true;
    case PB_LEN:
      if (!pb_read_varint(r, &v) || v > (uint64_t)(r->end - r->p)) return false;
      r->p += v;
      return true;
    case PB_I32:
      if (r->end - r->p < 4) return false;
      r->p += 4;
      return true;
    default:   /* groups (3, 4) and reserved wire types */
      return false;
  }
}

bool pb_get_u64(pb_rd *r, uint32_t wt, uint64_t *v) {
  return wt == PB_VARINT && pb_read_varint(r, v);
}

bool pb_get_u32(pb_rd *r, uint32_t wt, uint32_t *v) {
  uint64_t x;
  if (!pb_get_u64(r, wt, &x) || x > UINT32_MAX) return false;
  *v = (uint32_t)x;
  return true;
}

bool pb_get_bool(pb_rd *r, uint32_t wt, bool *v) {
  uint64_t x;
  if (!pb_get_u64(r, wt, &x)) return false;
  *v = x != 0;
  return true;
}

bool pb_get_fixed64(pb_rd *r, uint32_t wt, uint64_t *v) {
  if (wt != PB_I64 || r->end - r->p < 8) return false;
  uint64_t x = 0;
  for (int i = 0; i < 8; i++) x |= (uint64_t)r->p[i] << (8 * i);
  r->p += 8;
  *v = x;
  return true;
}

bool pb_get_bytes(pb_rd *r, uint32_t wt, rk_slice *v) {
  uint64_t n;
  if (wt != PB_LEN || !pb_read_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return false;
  v->ptr = n ? r->p : NULL;
  v->len = (size_t)n;
  r->p += n;
  return true;
}

bool pb_get_repeated_u32(pb_rd *r, uint32_t wt, pb_u32_fn fn, void *ctx) {
  uint32_t x;
  if (wt == PB_VARINT) return pb_get_u32(r, wt, &x) && fn(ctx, x);
  rk_slice s;
  if (!pb_get_bytes(r, wt, &s)) return false;
  pb_rd in = pb_reader(s);
  while (!pb_done(&in)) {
    if (!pb_get_u32(&in, PB_VARINT, &x) || !fn(ctx, x)) return false;
  }
  return true;
}
