/* wire.c: request encoders and reply decoders for the simulator (see wire.h). */
#include "wire.h"

/* Grows an arena array by one element; returns the new element's address or NULL. */
static void *grow(rk_arena *a, void **arr, size_t *len, size_t *cap, size_t elem) {
  if (*len == *cap) {
    size_t ncap = *cap ? *cap * 2 : 8;
    void *n = rk_alloc_array(a, ncap, elem);
    if (n == NULL) return NULL;
    if (*len) memcpy(n, *arr, *len * elem);
    *arr = n;
    *cap = ncap;
  }
  return (uint8_t *)*arr + (*len)++ * elem;
}
#define GROW(a, arr, len, cap) ((__typeof__(arr))grow((a), (void **)&(arr), &(len), &(cap), sizeof(*(arr))))

void w_put_dot(pb_enc *e, uint32_t field, w_dot d) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, d.node);
  pb_put_uint(e, 2, d.counter);
  pb_end(e, m);
}

void w_put_local(pb_enc *e, uint32_t field, const w_local *l) {
  size_t m = pb_begin(e, field);
  pb_put_bytes(e, 1, l->key);
  pb_put_bytes(e, 2, l->meta);
  for (size_t i = 0; i < l->values_len; i++) {
    size_t v = pb_begin(e, 3);
    w_put_dot(e, 1, l->values[i].dot);
    pb_put_bytes(e, 2, l->values[i].value);
    pb_end(e, v);
  }
  pb_put_bool(e, 4, l->expired);
  pb_end(e, m);
}

void w_enc_init(pb_enc *e, const w_config *c, uint32_t node, uint64_t clock, uint64_t counter,
                const uint32_t *shards, const uint64_t *digests, size_t n) {
  size_t m = pb_begin(e, 1);
  pb_put_uint(e, 1, c->cluster_size);
  pb_put_uint(e, 2, c->replicas);
  pb_put_uint(e, 3, c->shards);
  pb_put_uint(e, 4, c->max_clock_skew_ms);
  pb_put_uint(e, 5, c->tombstone_grace_ms);
  pb_put_uint(e, 6, c->max_siblings);
  pb_put_uint(e, 7, c->fanout);
  pb_put_uint(e, 9, c->key_bytes_max);
  pb_end(e, m);
  m = pb_begin(e, 2);
  pb_put_uint(e, 1, node);
  pb_put_fixed64(e, 2, clock);
  pb_put_uint(e, 3, counter);
  pb_end(e, m);
  for (size_t i = 0; i < n; i++) {
    size_t s = pb_begin(e, 3);
    pb_put_uint(e, 1, shards[i]);
    pb_put_fixed64(e, 2, digests[i]);
    pb_end(e, s);
  }
}

void w_enc_place(pb_enc *e, const rk_slice *keys, size_t n) {
  for (size_t i = 0; i < n; i++) pb_put_bytes_always(e, 1, keys[i]);
}

/* ---- decoding helpers ---- */

static bool dec_dot(rk_slice b, w_dot *d) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  d->node = 0;
  d->counter = 0;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok = f == 1 ? pb_get_u32(&r, wt, &d->node) : f == 2 ? pb_get_u64(&r, wt, &d->counter) : pb_skip(&r, wt);
    if (!ok) return false;
  }
  return t == 0;
}

static bool dec_node_state(rk_slice b, w_node_state *s) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  memset(s, 0, sizeof(*s));
  s->present = true;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok = f == 1   ? pb_get_u32(&r, wt, &s->node)
              : f == 2 ? pb_get_fixed64(&r, wt, &s->clock)
              : f == 3 ? pb_get_u64(&r, wt, &s->counter)
                       : pb_skip(&r, wt);
    if (!ok) return false;
  }
  return t == 0;
}

static bool dec_key_info(rk_slice b, w_key_info *k) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  memset(k, 0, sizeof(*k));
  k->present = true;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok;
    switch (f) {
      case 1: ok = pb_get_bool(&r, wt, &k->live); break;
      case 2: ok = pb_get_fixed64(&r, wt, &k->winner_hlc); break;
      case 3: ok = pb_get_u32(&r, wt, &k->winner_node); break;
      case 4: ok = pb_get_bool(&r, wt, &k->all_deleted); break;
      case 5: ok = pb_get_fixed64(&r, wt, &k->max_hlc); break;
      case 6: ok = pb_get_u32(&r, wt, &k->siblings); break;
      case 7: ok = pb_get_fixed64(&r, wt, &k->digest); break;
      case 8: ok = pb_get_bool(&r, wt, &k->expired); break;
      default: ok = pb_skip(&r, wt);
    }
    if (!ok) return false;
  }
  return t == 0;
}

static bool dec_value(rk_slice b, w_value *v) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  memset(v, 0, sizeof(*v));
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    rk_slice s;
    bool ok;
    if (f == 1) {
      ok = pb_get_bytes(&r, wt, &s) && dec_dot(s, &v->dot);
    } else if (f == 2) {
      ok = pb_get_bytes(&r, wt, &v->value);
    } else if (f == 3) {
      ok = pb_get_u64(&r, wt, &v->at);
    } else if (f == 4) {
      ok = pb_get_u64(&r, wt, &v->length);
    } else {
      ok = pb_skip(&r, wt);
    }
    if (!ok) return false;
  }
  return t == 0;
}

typedef struct {
  rk_arena *a;
  uint32_t **arr;
  size_t *len;
  size_t cap;
} u32_sink;

static bool u32_push(void *ctx, uint32_t v) {
  u32_sink *s = ctx;
  uint32_t *slot = GROW(s->a, *s->arr, *s->len, s->cap);
  if (slot == NULL) return false;
  *slot = v;
  return true;
}

bool w_dec_init_reply(rk_slice b, rk_slice *error) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  error->ptr = NULL;
  error->len = 0;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok = f == 1 ? pb_get_bytes(&r, wt, error) : pb_skip(&r, wt);
    if (!ok) return false;
  }
  return t == 0;
}

static bool dec_placement(rk_arena *a, rk_slice b, w_placement *p) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  memset(p, 0, sizeof(*p));
  u32_sink sink = {a, &p->replicas, &p->replicas_len, 0};
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok = f == 1   ? pb_get_u32(&r, wt, &p->shard)
              : f == 2 ? pb_get_repeated_u32(&r, wt, u32_push, &sink)
              : f == 3 ? pb_get_fixed64(&r, wt, &p->key_hash)
                       : pb_skip(&r, wt);
    if (!ok) return false;
  }
  return t == 0;
}

bool w_dec_place_reply(rk_arena *a, rk_slice b, w_placement **out, size_t *n) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  size_t cap = 0;
  *out = NULL;
  *n = 0;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    if (f == 1) {
      rk_slice s;
      w_placement *p = GROW(a, *out, *n, cap);
      if (p == NULL || !pb_get_bytes(&r, wt, &s) || !dec_placement(a, s, p)) return false;
    } else if (!pb_skip(&r, wt)) {
      return false;
    }
  }
  return t == 0;
}

bool w_dec_write_reply(rk_arena *a, rk_slice b, w_write_reply *w) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  size_t dropped_cap = 0;
  memset(w, 0, sizeof(*w));
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    rk_slice s;
    bool ok;
    switch (f) {
      case 1: ok = pb_get_bytes(&r, wt, &s) && dec_node_state(s, &w->node); break;
      case 2: ok = pb_get_bytes(&r, wt, &w->meta); break;
      case 3: ok = pb_get_bytes(&r, wt, &s) && dec_dot(s, &w->dot); break;
      case 4: ok = pb_get_fixed64(&r, wt, &w->hlc); break;
      case 5: ok = pb_get_bytes(&r, wt, &w->token); break;
      case 6: ok = pb_get_u32(&r, wt, &w->siblings); break;
      case 7: ok = pb_get_fixed64(&r, wt, &w->digest_old); break;
      case 8: ok = pb_get_fixed64(&r, wt, &w->digest_new); break;
      case 9: {
        w_dot *d = GROW(a, w->dropped, w->dropped_len, dropped_cap);
        ok = d != NULL && pb_get_bytes(&r, wt, &s) && dec_dot(s, d);
        break;
      }
      case 10: ok = pb_get_u32(&r, wt, &w->shard); break;
      case 11: ok = pb_get_fixed64(&r, wt, &w->shard_digest); break;
      case 12: ok = pb_get_bytes(&r, wt, &s) && dec_key_info(s, &w->info); break;
      default: ok = pb_skip(&r, wt);
    }
    if (!ok) return false;
  }
  return t == 0;
}

static bool dec_sibling(rk_slice b, w_sibling *s) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  memset(s, 0, sizeof(*s));
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    rk_slice x;
    bool ok;
    switch (f) {
      case 1: ok = pb_get_bytes(&r, wt, &x) && dec_dot(x, &s->dot); break;
      case 2: ok = pb_get_fixed64(&r, wt, &s->hlc); break;
      case 3: ok = pb_get_bool(&r, wt, &s->deleted); break;
      case 5: ok = pb_get_fixed64(&r, wt, &s->value_hash); break;
      default: ok = pb_skip(&r, wt);
    }
    if (!ok) return false;
  }
  return t == 0;
}

bool w_dec_read_reply(rk_arena *a, rk_slice b, w_read_reply *o) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  size_t cap = 0;
  memset(o, 0, sizeof(*o));
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    rk_slice s;
    bool ok;
    uint64_t v;
    switch (f) {
      case 1: ok = pb_get_bool(&r, wt, &o->found); break;
      case 2:
        ok = pb_get_u64(&r, wt, &v);
        o->winner = (int32_t)(uint32_t)v;
        break;
      case 3: {
        w_sibling *sib = GROW(a, o->siblings, o->siblings_len, cap);
        ok = sib != NULL && pb_get_bytes(&r, wt, &s) && dec_sibling(s, sib);
        break;
      }
      case 4: ok = pb_get_bytes(&r, wt, &o->token); break;
      default: ok = pb_skip(&r, wt);
    }
    if (!ok) return false;
  }
  return t == 0;
}

bool w_dec_message_keys(rk_arena *a, rk_slice b, w_message_keys *o) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  size_t cap = 0;
  memset(o, 0, sizeof(*o));
  u32_sink sink = {a, &o->shards, &o->shards_len, 0};
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok;
    if (f == 1) {
      ok = pb_get_u32(&r, wt, &o->from);
    } else if (f == 2) {
      rk_slice *k = GROW(a, o->keys, o->keys_len, cap);
      ok = k != NULL && pb_get_bytes(&r, wt, k);
    } else if (f == 3) {
      ok = pb_get_repeated_u32(&r, wt, u32_push, &sink);
    } else {
      ok = pb_skip(&r, wt);
    }
    if (!ok) return false;
  }
  return t == 0;
}

static bool dec_applied(rk_arena *a, rk_slice b, w_applied *p) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  size_t put_cap = 0, dropped_cap = 0;
  memset(p, 0, sizeof(*p));
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    rk_slice s;
    bool ok;
    switch (f) {
      case 1: ok = pb_get_bytes(&r, wt, &p->key); break;
      case 2: ok = pb_get_u32(&r, wt, &p->shard); break;
      case 3: ok = pb_get_bytes(&r, wt, &p->meta); break;
      case 4: ok = pb_get_fixed64(&r, wt, &p->digest_old); break;
      case 5: ok = pb_get_fixed64(&r, wt, &p->digest_new); break;
      case 6: {
        w_value *v = GROW(a, p->put, p->put_len, put_cap);
        ok = v != NULL && pb_get_bytes(&r, wt, &s) && dec_value(s, v);
        break;
      }
      case 7: {
        w_dot *d = GROW(a, p->dropped, p->dropped_len, dropped_cap);
        ok = d != NULL && pb_get_bytes(&r, wt, &s) && dec_dot(s, d);
        break;
      }
      case 8: ok = pb_get_fixed64(&r, wt, &p->shard_digest); break;
      case 9: ok = pb_get_bytes(&r, wt, &s) && dec_key_info(s, &p->info); break;
      default: ok = pb_skip(&r, wt);
    }
    if (!ok) return false;
  }
  return t == 0;
}

bool w_dec_merge_reply(rk_arena *a, rk_slice b, w_merge_reply *o) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  size_t cap = 0;
  memset(o, 0, sizeof(*o));
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    rk_slice s;
    bool ok;
    switch (f) {
      case 1: ok = pb_get_bytes(&r, wt, &s) && dec_node_state(s, &o->node); break;
      case 2: {
        w_applied *p = GROW(a, o->applied, o->applied_len, cap);
        ok = p != NULL && pb_get_bytes(&r, wt, &s) && dec_applied(a, s, p);
        break;
      }
      case 3: ok = pb_get_bytes(&r, wt, &o->reply); break;
      case 4: ok = pb_get_u32(&r, wt, &o->entries_received); break;
      default: ok = pb_skip(&r, wt);
    }
    if (!ok) return false;
  }
  return t == 0;
}

typedef struct {
  rk_arena *a;
  w_outgoing *o;
  size_t cap;
} also_sink;

static bool also_push(void *ctx, uint32_t v) {
  also_sink *k = ctx;
  uint32_t *slot = GROW(k->a, k->o->also, k->o->also_len, k->cap);
  if (slot == NULL) return false;
  *slot = v;
  return true;
}

static bool dec_outgoing(rk_arena *a, rk_slice b, w_outgoing *o) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  memset(o, 0, sizeof(*o));
  also_sink sink = {a, o, 0};
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok = f == 1   ? pb_get_u32(&r, wt, &o->peer)
              : f == 2 ? pb_get_bytes(&r, wt, &o->message)
              : f == 3 ? pb_get_u64(&r, wt, &o->acked_seq_on_success)
              : f == 4 ? pb_get_u32(&r, wt, &o->entries)
              : f == 5 ? pb_get_repeated_u32(&r, wt, also_push, &sink)
                       : pb_skip(&r, wt);
    if (!ok) return false;
  }
  return t == 0;
}

bool w_dec_outgoing_list(rk_arena *a, rk_slice b, w_outgoing_list *o) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  size_t cap = 0;
  memset(o, 0, sizeof(*o));
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    if (f == 1) {
      rk_slice s;
      w_outgoing *x = GROW(a, o->outgoing, o->outgoing_len, cap);
      if (x == NULL || !pb_get_bytes(&r, wt, &s) || !dec_outgoing(a, s, x)) return false;
    } else if (!pb_skip(&r, wt)) {
      return false;
    }
  }
  return t == 0;
}

bool w_dec_message_field(rk_slice b, rk_slice *message) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  message->ptr = NULL;
  message->len = 0;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok = f == 1 ? pb_get_bytes(&r, wt, message) : pb_skip(&r, wt);
    if (!ok) return false;
  }
  return t == 0;
}

bool w_dec_compare_reply(rk_arena *a, rk_slice b, w_compare_reply *o) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  memset(o, 0, sizeof(*o));
  u32_sink sink = {a, &o->shards, &o->shards_len, 0};
  u32_sink bsink = {a, &o->buckets, &o->buckets_len, 0};
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok = f == 1   ? pb_get_bool(&r, wt, &o->equal)
              : f == 2 ? pb_get_repeated_u32(&r, wt, u32_push, &sink)
              : f == 3 ? pb_get_repeated_u32(&r, wt, u32_push, &bsink)
                       : pb_skip(&r, wt);
    if (!ok) return false;
  }
  return t == 0;
}

bool w_dec_applied_list(rk_arena *a, rk_slice b, w_applied **out, size_t *n) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  size_t cap = 0;
  *out = NULL;
  *n = 0;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    if (f == 1) {
      rk_slice s;
      w_applied *p = GROW(a, *out, *n, cap);
      if (p == NULL || !pb_get_bytes(&r, wt, &s) || !dec_applied(a, s, p)) return false;
    } else if (!pb_skip(&r, wt)) {
      return false;
    }
  }
  return t == 0;
}

bool w_dec_gc_query_keys(rk_arena *a, rk_slice b, rk_slice **keys, size_t *n) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  size_t cap = 0;
  *keys = NULL;
  *n = 0;
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    if (f == 3) {
      rk_slice s;
      if (!pb_get_bytes(&r, wt, &s)) return false;
      pb_rd kr = pb_reader(s);
      uint32_t kf, kwt;
      int kt;
      rk_slice *k = GROW(a, *keys, *n, cap);
      if (k == NULL) return false;
      k->ptr = NULL;
      k->len = 0;
      while ((kt = pb_next(&kr, &kf, &kwt)) == 1) {
        bool ok = kf == 1 ? pb_get_bytes(&kr, kwt, k) : pb_skip(&kr, kwt);
        if (!ok) return false;
      }
      if (kt != 0) return false;
    } else if (!pb_skip(&r, wt)) {
      return false;
    }
  }
  return t == 0;
}

bool w_dec_push_summary(rk_slice b, w_push_summary *o) {
  pb_rd r = pb_reader(b);
  uint32_t f, wt;
  int t;
  memset(o, 0, sizeof(*o));
  while ((t = pb_next(&r, &f, &wt)) == 1) {
    bool ok;
    if (f == 2) {
      ok = pb_get_u32(&r, wt, &o->from);
    } else if (f == 3) {
      rk_slice s;
      ok = pb_get_bytes(&r, wt, &s);
      o->entries++;
      o->entry_bytes += s.len;
    } else if (f == 4) {
      ok = pb_skip(&r, wt);
      o->shards++;
    } else {
      ok = pb_skip(&r, wt);
    }
    if (!ok) return false;
  }
  return t == 0;
}
