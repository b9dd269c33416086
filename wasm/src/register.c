/* register.c: the multi-value LWW register with dotted version vectors (see register.h). */
#include <stdlib.h>

#include "hash.h"
#include "register.h"


static int dot_cmp_qsort(const void *a, const void *b) {
  return rk_dot_cmp(*(const rk_dot *)a, *(const rk_dot *)b);
}

/* ---------------------------------------------------------------------------------------
 * Contexts */

bool rk_ctx_covers(const rk_ctx *c, rk_dot d) {
  size_t lo = 0, hi = c->vv_len;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c->vv[mid].node < d.node) lo = mid + 1; else hi = mid;
  }
  if (lo < c->vv_len && c->vv[lo].node == d.node && d.counter <= c->vv[lo].counter) return true;
  lo = 0;
  hi = c->dots_len;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int cmp = rk_dot_cmp(c->dots[mid], d);
    if (cmp == 0) return true;
    if (cmp < 0) lo = mid + 1; else hi = mid;
  }
  return false;
}

/* Builds the normalised set from arbitrary vv entries (max per node) and explicit dots.
 * Both input arrays are arena-owned scratch and get sorted in place. */
static int ctx_normalise(rk_arena *a, rk_dot *vv, size_t vv_len, rk_dot *dots,
                         size_t dots_len, rk_ctx *out) {
  qsort(vv, vv_len, sizeof *vv, dot_cmp_qsort);
  qsort(dots, dots_len, sizeof *dots, dot_cmp_qsort);
  rk_dot *ovv = rk_alloc_array(a, vv_len + dots_len + 1, sizeof *ovv);
  rk_dot *odots = rk_alloc_array(a, dots_len + 1, sizeof *odots);
  if (ovv == NULL || odots == NULL) return RINGKV_E_NOMEM;
  size_t nv = 0, nd = 0, i = 0, j = 0;
  while (i < vv_len || j < dots_len) {
    uint32_t node;
    if (j >= dots_len || (i < vv_len && vv[i].node <= dots[j].node)) node = vv[i].node;
    else node = dots[j].node;
    uint64_t v = 0;
    for (; i < vv_len && vv[i].node == node; i++) v = RK_MAX(v, vv[i].counter);
    size_t first_dot = nd;
    for (; j < dots_len && dots[j].node == node; j++) {
      uint64_t c = dots[j].counter;
      if (c <= v) continue;
      if (c == v + 1 && nd == first_dot) {
        v = c;   /* contiguous with the vector: fold it in */
      } else if (nd == first_dot || odots[nd - 1].counter != c) {
        odots[nd++] = dots[j];
      }
    }
    /* Folding may have made earlier-kept dots contiguous only if they were kept before
     * v grew, which the nd == first_dot condition rules out: dots are ascending, so once
     * one is kept explicitly no later one can be contiguous with v. */
    if (v > 0) {
      ovv[nv].node = node;
      ovv[nv].counter = v;
      nv++;
    }
  }
  out->vv = ovv;
  out->vv_len = nv;
  out->dots = odots;
  out->dots_len = nd;
  return RINGKV_OK;
}

static int ctx_combine(rk_arena *a, const rk_ctx *x, const rk_ctx *y, const rk_dot *extra_vv,
                       const rk_dot *extra_dot, rk_ctx *out) {
  size_t vv_len = x->vv_len + (y ? y->vv_len : 0) + (extra_vv ? 1 : 0);
  size_t dots_len = x->dots_len + (y ? y->dots_len : 0) + (extra_dot ? 1 : 0);
  rk_dot *vv = rk_alloc_array(a, vv_len + 1, sizeof *vv);
  rk_dot *dots = rk_alloc_array(a, dots_len + 1, sizeof *dots);
  if (vv == NULL || dots == NULL) return RINGKV_E_NOMEM;
  size_t nv = 0, nd = 0;
  if (x->vv_len) memcpy(vv, x->vv, x->vv_len * sizeof *vv);
  nv += x->vv_len;
  if (x->dots_len) memcpy(dots, x->dots, x->dots_len * sizeof *dots);
  nd += x->dots_len;
  if (y != NULL) {
    if (y->vv_len) memcpy(vv + nv, y->vv, y->vv_len * sizeof *vv);
    nv += y->vv_len;
    if (y->dots_len) memcpy(dots + nd, y->dots, y->dots_len * sizeof *dots);
    nd += y->dots_len;
  }
  if (extra_vv) vv[nv++] = *extra_vv;
  if (extra_dot) dots[nd++] = *extra_dot;
  return ctx_normalise(a, vv, nv, dots, nd, out);
}

int rk_ctx_join(rk_arena *a, const rk_ctx *x, const rk_ctx *y, rk_ctx *out) {
  return ctx_combine(a, x, y, NULL, NULL, out);
}

int rk_ctx_add(rk_arena *a, const rk_ctx *x, rk_dot d, rk_ctx *out) {
  return ctx_combine(a, x, NULL, NULL, &d, out);
}

int rk_ctx_raise(rk_arena *a, const rk_ctx *x, uint32_t node, uint64_t counter, rk_ctx *out) {
  rk_dot d = {node, counter};
  return ctx_combine(a, x, NULL, &d, NULL, out);
}

static void dot_encode(pb_enc *e, uint32_t field, rk_dot d) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, d.node);
  pb_put_uint(e, 2, d.counter);
  pb_end(e, m);
}

void rk_ctx_encode(pb_enc *e, const rk_ctx *c) {
  for (size_t i = 0; i < c->vv_len; i++) dot_encode(e, 1, c->vv[i]);
  for (size_t i = 0; i < c->dots_len; i++) dot_encode(e, 2, c->dots[i]);
}

static int dot_decode(rk_slice bytes, rk_dot *out) {
  pb_rd r = pb_reader(bytes);
  out->node = 0;
  out->counter = 0;
  uint32_t f, wt;
  int t;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok = f == 1 ? pb_get_u32(&r, wt, &out->node)
            : f == 2 ? pb_get_u64(&r, wt, &out->counter)
                     : pb_skip(&r, wt);
    if (!ok) return RINGKV_E_DECODE;
  }
  if (t < 0 || out->counter == 0 || out->node >= RINGKV_CLUSTER_SIZE_MAX) return RINGKV_E_DECODE;
  return RINGKV_OK;
}

int rk_ctx_decode(rk_arena *a, rk_slice bytes, rk_ctx *out) {
  /* First pass counts, so the arrays are allocated once. */
  size_t nv = 0, nd = 0;
  pb_rd r = pb_reader(bytes);
  uint32_t f, wt;
  int t;
  rk_slice s;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    if (f == 1 || f == 2) {
      if (!pb_get_bytes(&r, wt, &s)) return RINGKV_E_DECODE;
      if (f == 1) nv++; else nd++;
    } else if (!pb_skip(&r, wt)) {
      return RINGKV_E_DECODE;
    }
  }
  if (t < 0 || nv > RINGKV_CLUSTER_SIZE_MAX || nd > RINGKV_CONTEXT_DOTS_MAX) return RINGKV_E_DECODE;
  rk_dot *vv = rk_alloc_array(a, nv + 1, sizeof *vv);
  rk_dot *dots = rk_alloc_array(a, nd + 1, sizeof *dots);
  if (vv == NULL || dots == NULL) return RINGKV_E_NOMEM;
  size_t iv = 0, id = 0;
  r = pb_reader(bytes);
  while (pb_next(&r, &f, &wt) == 1) {
    if (f == 1 || f == 2) {
      pb_get_bytes(&r, wt, &s);
      RK_TRY(dot_decode(s, f == 1 ? &vv[iv++] : &dots[id++]));
    } else {
      pb_skip(&r, wt);
    }
  }
  return ctx_normalise(a, vv, nv, dots, nd, out);
}

/* ---------------------------------------------------------------------------------------
 * Registers */

bool rk_write_id_valid(rk_slice id) {
  if (id.len == 0 || id.len > RINGKV_WRITE_ID_BYTES_MAX) return false;
  for (size_t i = 0; i < id.len; i++) {
    uint8_t c = id.ptr[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

/* A total order on one dot's copies by their metadata: copies that disagree come only
 * from a broken or hostile peer, and every replica must keep the same one. */
static int slice_cmp(rk_slice a, rk_slice b) {
  size_t n = RK_MIN(a.len, b.len);
  int c = n == 0 ? 0 : memcmp(a.ptr, b.ptr, n);
  if (c != 0) return c;
  return a.len == b.len ? 0 : a.len < b.len ? -1 : 1;
}
static int sib_meta_cmp(const rk_sib *a, const rk_sib *b) {
  if (a->hlc != b->hlc) return a->hlc < b->hlc ? -1 : 1;
  if (a->deleted != b->deleted) return a->deleted ? 1 : -1;
  if (a->value_hash != b->value_hash) return a->value_hash < b->value_hash ? -1 : 1;
  int c = slice_cmp(a->content_type, b->content_type);
  return c != 0 ? c : slice_cmp(a->write_id, b->write_id);
}

static void sib_encode(pb_enc *e, const rk_sib *s, bool with_values) {
  size_t m = pb_begin(e, 1);
  dot_encode(e, 1, s->dot);
  pb_put_fixed64(e, 2, s->hlc);
  pb_put_bool(e, 3, s->deleted);
  pb_put_bytes(e, 4, s->content_type);
  pb_put_fixed64(e, 5, s->value_hash);
  if (with_values) pb_put_bytes(e, 6, s->value);
  pb_put_bytes(e, 7, s->write_id);
  pb_end(e, m);
}

void rk_reg_encode(pb_enc *e, const rk_reg *r, bool with_values) {
  for (size_t i = 0; i < r->sibs_len; i++) sib_encode(e, &r->sibs[i], with_values);
  size_t m = pb_begin(e, 2);
  rk_ctx_encode(e, &r->ctx);
  pb_end_omit_empty(e, 2, m);
}

static int sib_decode(rk_slice bytes, rk_sib *out) {
  memset(out, 0, sizeof *out);
  pb_rd r = pb_reader(bytes);
  uint32_t f, wt;
  int t;
  bool has_dot = false;
  rk_slice s;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok;
    switch (f) {
      case 1:
        ok = pb_get_bytes(&r, wt, &s) && dot_decode(s, &out->dot) == RINGKV_OK;
        has_dot = true;
        break;
      case 2: ok = pb_get_fixed64(&r, wt, &out->hlc); break;
      case 3: ok = pb_get_bool(&r, wt, &out->deleted); break;
      case 4: ok = pb_get_bytes(&r, wt, &out->content_type); break;
      case 5: ok = pb_get_fixed64(&r, wt, &out->value_hash); break;
      case 6: ok = pb_get_bytes(&r, wt, &out->value); break;
      case 7: ok = pb_get_bytes(&r, wt, &out->write_id) && rk_write_id_valid(out->write_id); break;
      default: ok = pb_skip(&r, wt); break;
    }
    if (!ok) return RINGKV_E_DECODE;
  }
  if (t < 0 || !has_dot) return RINGKV_E_DECODE;
  if (out->content_type.len > RINGKV_CONTENT_TYPE_BYTES_MAX) return RINGKV_E_DECODE;
  if (out->value.len > RINGKV_VALUE_BYTES_MAX) return RINGKV_E_DECODE;
  if (out->deleted && (out->content_type.len != 0 || out->value.len != 0)) return RINGKV_E_DECODE;
  /* Carried values must match their hash: the metadata and the value rows stay paired. */
  if (out->value.len != 0 && out->value_hash != rk_hash_slice(out->value)) return RINGKV_E_DECODE;
  return RINGKV_OK;
}

static int sib_cmp_qsort(const void *a, const void *b) {
  return rk_dot_cmp(((const rk_sib *)a)->dot, ((const rk_sib *)b)->dot);
}

int rk_reg_decode(rk_arena *a, rk_slice bytes, rk_reg *out) {
  memset(out, 0, sizeof *out);
  size_t n = 0;
  pb_rd r = pb_reader(bytes);
  uint32_t f, wt;
  int t;
  rk_slice s, ctx_bytes = {NULL, 0};
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    if (f == 1) {
      if (!pb_get_bytes(&r, wt, &s)) return RINGKV_E_DECODE;
      n++;
    } else if (f == 2) {
      if (!pb_get_bytes(&r, wt, &ctx_bytes)) return RINGKV_E_DECODE;
    } else if (!pb_skip(&r, wt)) {
      return RINGKV_E_DECODE;
    }
  }
  if (t < 0 || n > RINGKV_SIBLINGS_MAX) return RINGKV_E_DECODE;
  if (n == 0) {
    /* The empty register, or a collection marker: a context without versions. */
    if (ctx_bytes.len == 0) return RINGKV_OK;
    RK_TRY(rk_ctx_decode(a, ctx_bytes, &out->ctx));
    return out->ctx.vv_len + out->ctx.dots_len > 0 ? RINGKV_OK : RINGKV_E_DECODE;
  }
  rk_sib *sibs = rk_alloc_array(a, n, sizeof *sibs);
  if (sibs == NULL) return RINGKV_E_NOMEM;
  size_t i = 0;
  r = pb_reader(bytes);
  while (pb_next(&r, &f, &wt) == 1) {
    if (f == 1) {
      pb_get_bytes(&r, wt, &s);
      RK_TRY(sib_decode(s, &sibs[i++]));
    } else {
      pb_skip(&r, wt);
    }
  }
  qsort(sibs, n, sizeof *sibs, sib_cmp_qsort);
  for (i = 1; i < n; i++) {
    if (rk_dot_cmp(sibs[i - 1].dot, sibs[i].dot) == 0) return RINGKV_E_DECODE;
  }
  RK_TRY(rk_ctx_decode(a, ctx_bytes, &out->ctx));
  for (i = 0; i < n; i++) {
    if (!rk_ctx_covers(&out->ctx, sibs[i].dot)) return RINGKV_E_DECODE;
  }
  out->sibs = sibs;
  out->sibs_len = n;
  return RINGKV_OK;
}

int rk_reg_merge(rk_arena *a, const rk_reg *x, const rk_reg *y, rk_reg *out) {
  rk_sib *sibs = rk_alloc_array(a, x->sibs_len + y->sibs_len + 1, sizeof *sibs);
  if (sibs == NULL) return RINGKV_E_NOMEM;
  size_t n = 0, i = 0, j = 0;
  while (i < x->sibs_len || j < y->sibs_len) {
    int cmp = i >= x->sibs_len ? 1 : j >= y->sibs_len ? -1 : rk_dot_cmp(x->sibs[i].dot, y->sibs[j].dot);
    if (cmp == 0) {
      /* One dot is one version: both copies agree except that one may carry its value.
       * Copies that disagree (a broken peer's) are settled by their metadata, so that the
       * merge stays commutative and the replicas keep the same one. */
      const rk_sib *s = &x->sibs[i], *o = &y->sibs[j];
      int c = sib_meta_cmp(s, o);
      if (c < 0 || (c == 0 && s->value.len == 0 && o->value.len != 0)) s = o;
      sibs[n++] = *s;
      i++;
      j++;
    } else if (cmp < 0) {
      if (!rk_ctx_covers(&y->ctx, x->sibs[i].dot)) sibs[n++] = x->sibs[i];
      i++;
    } else {
      if (!rk_ctx_covers(&x->ctx, y->sibs[j].dot)) sibs[n++] = y->sibs[j];
      j++;
    }
  }
  RK_TRY(rk_ctx_join(a, &x->ctx, &y->ctx, &out->ctx));
  out->sibs = sibs;
  out->sibs_len = n;
  return RINGKV_OK;
}

int rk_reg_winner(const rk_reg *r) {
  int w = -1;
  for (size_t i = 0; i < r->sibs_len; i++) {
    if (w < 0 || rk_sib_outranks(&r->sibs[i], &r->sibs[w])) w = (int)i;
  }
  return w;
}

bool rk_reg_all_deleted(const rk_reg *r) {
  for (size_t i = 0; i < r->sibs_len; i++) {
    if (!r->sibs[i].deleted) return false;
  }
  return r->sibs_len > 0;
}

uint64_t rk_reg_max_hlc(const rk_reg *r) {
  uint64_t m = 0;
  for (size_t i = 0; i < r->sibs_len; i++) m = RK_MAX(m, r->sibs[i].hlc);
  return m;
}

uint64_t rk_reg_digest(rk_arena *a, rk_slice key, const rk_reg *r) {
  if (r->sibs_len == 0) return 0;
  pb_enc e;
  pb_enc_init(&e, a);
  rk_reg_encode(&e, r, false);
  if (e.err != 0) return 0;
  return rk_hash_seed(e.buf, e.len, rk_hash_slice(key));
}
