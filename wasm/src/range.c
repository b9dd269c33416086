/* range.c: KeyRange and RangeParts (range.h). */
#include "range.h"

#include <stdlib.h>
#include <string.h>

#include "fields.h"

bool rk_range_read(rk_slice s, uint32_t shards, rk_range *out) {
  int t_;
  bool ok = true;
  memset(out, 0, sizeof *out);
  FIELDS(s) {
    case 1: ok = pb_get_u32(R, WT, &out->shard); break;
    case 2: ok = pb_get_u64(R, WT, &out->lo); break;
    case 3: ok = pb_get_u32(R, WT, &out->bits); break;
    SKIP;
  }
  if (!ok || t_ < 0 || out->shard >= shards || out->bits > RINGKV_KEY_POSITION_BITS) return false;
  if (out->lo >= (UINT64_C(1) << RINGKV_KEY_POSITION_BITS)) return false;
  return (out->lo & ((UINT64_C(1) << out->bits) - 1u)) == 0;
}

void rk_range_write(pb_enc *e, uint32_t field, const rk_range *r) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, r->shard);
  pb_put_uint(e, 2, r->lo);
  pb_put_uint(e, 3, r->bits);
  pb_end(e, m);
}

bool rk_range_has(const rk_range *r, uint32_t shard, uint64_t key_hash) {
  if (shard != r->shard) return false;
  uint64_t p = rk_key_position(key_hash);
  return p >= r->lo && p - r->lo < (UINT64_C(1) << r->bits);
}

bool rk_ranges_ordered(const rk_range *r, size_t len) {
  for (size_t i = 1; i < len; i++) {
    const rk_range *p = &r[i - 1], *c = &r[i];
    if (p->shard > c->shard || (p->shard == c->shard && p->lo + (UINT64_C(1) << p->bits) > c->lo)) return false;
  }
  return true;
}

static int range_cmp(const void *x, const void *y) {
  const rk_range *a = x, *b = y;
  if (a->shard != b->shard) return a->shard < b->shard ? -1 : 1;
  return a->lo < b->lo ? -1 : a->lo > b->lo;
}

void rk_ranges_sort(rk_range *r, size_t len) {
  if (len > 1) qsort(r, len, sizeof *r, range_cmp);
}

/* Reads packed (or unpacked) varints or fixed64s into v[*len...], at most `max`. */
static bool read_u64s(pb_rd *r, uint32_t wt, bool fixed, uint64_t *v, size_t *len, size_t max) {
  if (wt != PB_LEN) {
    uint64_t x;
    if (!(fixed ? pb_get_fixed64(r, wt, &x) : pb_get_u64(r, wt, &x)) || *len >= max) return false;
    v[(*len)++] = x;
    return true;
  }
  rk_slice s;
  if (!pb_get_bytes(r, wt, &s)) return false;
  pb_rd in = pb_reader(s);
  while (!pb_done(&in)) {
    uint64_t x = 0;
    if (*len >= max) return false;
    if (fixed) {
      if ((size_t)(in.end - in.p) < 8) return false;
      for (int k = 7; k >= 0; k--) x = x << 8 | in.p[k];
      in.p += 8;
    } else if (!pb_read_varint(&in, &x)) {
      return false;
    }
    v[(*len)++] = x;
  }
  return true;
}

bool rk_parts_read(rk_slice s, rk_parts *out) {
  int t_;
  bool ok = true;
  uint64_t counts[RINGKV_AE_PARTS], digests[RINGKV_AE_PARTS];
  size_t nc = 0, nd = 0;
  memset(out, 0, sizeof *out);
  FIELDS(s) {
    case 1: ok = pb_get_u32(R, WT, &out->mask); break;
    case 2: ok = read_u64s(R, WT, false, counts, &nc, RINGKV_AE_PARTS); break;
    case 3: ok = read_u64s(R, WT, true, digests, &nd, RINGKV_AE_PARTS); break;
    SKIP;
  }
  if (!ok || t_ < 0 || out->mask >= (1u << RINGKV_AE_PARTS)) return false;
  size_t k = 0;
  for (uint32_t i = 0; i < RINGKV_AE_PARTS; i++) {
    if ((out->mask >> i & 1u) == 0) continue;
    if (k >= nc || k >= nd) return false;
    out->counts[i] = counts[k];
    out->digests[i] = digests[k];
    k++;
  }
  return k == nc && k == nd;
}

void rk_parts_write(pb_enc *e, uint32_t field, const rk_parts *p) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, p->mask);
  size_t c = pb_begin(e, 2);
  for (uint32_t i = 0; i < RINGKV_AE_PARTS; i++) {
    if (p->mask >> i & 1u) pb_put_varint_raw(e, p->counts[i]);
  }
  pb_end_omit_empty(e, 2, c);
  size_t d = pb_begin(e, 3);
  for (uint32_t i = 0; i < RINGKV_AE_PARTS; i++) {
    if ((p->mask >> i & 1u) == 0) continue;
    uint8_t le[8];
    for (int k = 0; k < 8; k++) le[k] = (uint8_t)(p->digests[i] >> (8 * k));
    pb_put_raw(e, le, sizeof le);
  }
  pb_end_omit_empty(e, 3, d);
  pb_end(e, m);
}
