/* store.c: a node's tables as the Durable Object keeps them in SQLite (key rows with their
 * KeyInfo columns, seq and from_client; value rows per (key, dot); shard digests), the
 * queries a step's `load` asks for, and the row writes a step's reply makes. */
#include <inttypes.h>

#include "simint.h"

/* ---------------------------------------------------------------------------------------
 * Keys. */
int64_t key_lookup(const sim *s, const uint8_t *k, size_t len) {
  uint64_t h = ringkv_hash(k, len);
  for (uint32_t i = (uint32_t)h & s->key_map_mask;; i = (i + 1) & s->key_map_mask) {
    uint32_t v = s->key_map[i];
    if (v == 0) return -1;
    const key_entry *e = &s->keys[v - 1];
    if (e->len == len && (len == 0 || memcmp(e->bytes, k, len) == 0)) return v - 1;
  }
}

void key_insert(sim *s, uint32_t id) {
  uint64_t h = ringkv_hash(s->keys[id].bytes, s->keys[id].len);
  uint32_t i = (uint32_t)h & s->key_map_mask;
  while (s->key_map[i] != 0) i = (i + 1) & s->key_map_mask;
  s->key_map[i] = id + 1;
}

ProtobufCBinaryData key_bytes(const sim *s, uint32_t k) {
  ProtobufCBinaryData b = {s->keys[k].len, s->keys[k].bytes};
  return b;
}

bool is_replica(const sim *s, uint32_t k, uint32_t n) {
  /* During a resize a key's rows may be at any replica some ring of the run gave it. */
  if (s->o->resize_to != 0 && !s->strict_placement) return n < 64 && ((s->keys[k].ever >> n) & 1);
  for (uint32_t i = 0; i < s->o->replicas; i++)
    if (s->keys[k].replicas[i] == n) return true;
  return false;
}

/* ---------------------------------------------------------------------------------------
 * Rows. */
static void log_append(node *n, uint64_t seq, uint32_t key) {
  if (n->log_len == n->log_cap) {
    n->log_cap = n->log_cap ? n->log_cap * 2 : 256;
    n->log_seq = realloc(n->log_seq, n->log_cap * sizeof(*n->log_seq));
    n->log_key = realloc(n->log_key, n->log_cap * sizeof(*n->log_key));
    CHECK_ALLOC(n->log_seq);
    CHECK_ALLOC(n->log_key);
  }
  /* Sequences only grow; an index entry out of order is put in its place all the same. */
  size_t i = n->log_len;
  while (i > 0 && n->log_seq[i - 1] > seq) i--;
  memmove(n->log_seq + i + 1, n->log_seq + i, (n->log_len - i) * sizeof(*n->log_seq));
  memmove(n->log_key + i + 1, n->log_key + i, (n->log_len - i) * sizeof(*n->log_key));
  n->log_seq[i] = seq;
  n->log_key[i] = key;
  n->log_len++;
}

void row_free(row *r) {
  if (r == NULL) return;
  for (uint32_t i = 0; i < r->values_len; i++) free(r->values[i].bytes);
  free(r->values);
  free(r->meta);
  free(r);
}

/* A row's value rows are kept by dot, so that loads (and the requests built from them) are
 * canonical. */
static int dot_cmp(dot_t a, dot_t b) {
  if (a.node != b.node) return a.node < b.node ? -1 : 1;
  if (a.counter != b.counter) return a.counter < b.counter ? -1 : 1;
  return 0;
}

/* The index of `d` in r->values, or where it would go. */
static uint32_t value_at(const row *r, dot_t d) {
  uint32_t i = 0;
  while (i < r->values_len && dot_cmp(r->values[i].dot, d) < 0) i++;
  return i;
}

static void row_drop_value(row *r, dot_t d) {
  uint32_t i = value_at(r, d);
  if (i == r->values_len || dot_cmp(r->values[i].dot, d) != 0) return;
  free(r->values[i].bytes);
  memmove(r->values + i, r->values + i + 1, (r->values_len - i - 1) * sizeof(*r->values));
  r->values_len--;
}

static void row_put_value(row *r, dot_t d, const uint8_t *v, size_t len) {
  row_drop_value(r, d);
  if (r->values_len == r->values_cap) {
    r->values_cap = r->values_cap ? r->values_cap * 2 : 2;
    r->values = realloc(r->values, r->values_cap * sizeof(*r->values));
    CHECK_ALLOC(r->values);
  }
  uint32_t i = value_at(r, d);
  memmove(r->values + i + 1, r->values + i, (r->values_len - i) * sizeof(*r->values));
  r->values_len++;
  stored_value *sv = &r->values[i];
  sv->dot = d;
  sv->len = (uint32_t)len;
  sv->bytes = malloc(len ? len : 1);
  CHECK_ALLOC(sv->bytes);
  if (len) memcpy(sv->bytes, v, len);
}

static Ringkv__Dot *arena_dot(sim *s, dot_t d) {
  Ringkv__Dot *x = rk_alloc(&s->ar, sizeof(*x));
  CHECK_ALLOC(x);
  ringkv__dot__init(x);
  x->node = d.node;
  x->counter = d.counter;
  return x;
}

/* The bytes a loaded row counts against a Load bound: metadata, and values when loaded. */
static uint64_t local_bytes(const Ringkv__Local *l) {
  uint64_t b = l->meta.len;
  for (size_t i = 0; i < l->n_values; i++) b += l->values[i]->value.len;
  return b;
}

Ringkv__Local *store_local(sim *s, node *n, uint32_t k, bool values, bool sizes) {
  Ringkv__Local *l = rk_alloc(&s->ar, sizeof(*l));
  CHECK_ALLOC(l);
  ringkv__local__init(l);
  l->key = key_bytes(s, k);
  const row *r = n->rows[k];
  if (r == NULL) return l;
  l->meta.data = r->meta;
  l->meta.len = r->meta_len;
  l->expired = r->info.expired;
  l->seq = r->seq;
  l->from_client = r->from_client;
  l->gc_since_ms = r->gc_since;
  l->gc_epoch = r->gc_epoch;
  l->order = (uint64_t)k + 1u;
  if (r->values_len == 0 || (!values && !sizes)) return l;
  if (values) {
    l->values = rk_alloc_array(&s->ar, r->values_len, sizeof(*l->values));
    CHECK_ALLOC(l->values);
    for (uint32_t i = 0; i < r->values_len; i++) {
      Ringkv__Value *v = rk_alloc(&s->ar, sizeof(*v));
      CHECK_ALLOC(v);
      ringkv__value__init(v);
      v->dot = arena_dot(s, r->values[i].dot);
      v->value.data = r->values[i].bytes;
      v->value.len = r->values[i].len;
      l->values[l->n_values++] = v;
    }
  } else {
    l->sizes = rk_alloc_array(&s->ar, r->values_len, sizeof(*l->sizes));
    CHECK_ALLOC(l->sizes);
    for (uint32_t i = 0; i < r->values_len; i++) {
      Ringkv__ValueSize *v = rk_alloc(&s->ar, sizeof(*v));
      CHECK_ALLOC(v);
      ringkv__value_size__init(v);
      v->dot = arena_dot(s, r->values[i].dot);
      v->bytes = r->values[i].len;
      l->sizes[l->n_sizes++] = v;
    }
  }
  return l;
}

/* Key order inside a shard (Load.page): by position, then key bytes. */
static int key_cmp(const sim *s, uint32_t a, uint64_t pa, ProtobufCBinaryData b, uint64_t pb) {
  if (pa != pb) return pa < pb ? -1 : 1;
  ProtobufCBinaryData ka = key_bytes(s, a);
  size_t m = ka.len < b.len ? ka.len : b.len;
  int c = m ? memcmp(ka.data, b.data, m) : 0;
  if (c != 0) return c;
  return ka.len < b.len ? -1 : ka.len > b.len ? 1 : 0;
}

static bool page_after(const sim *s, uint32_t k, uint64_t position, uint64_t cur_position, ProtobufCBinaryData cur_key) {
  return key_cmp(s, k, position, cur_key, cur_position) > 0;
}

static bool page_before(const sim *s, const node *n, uint32_t a, uint32_t b) {
  return key_cmp(s, a, n->rows[a]->info.position, key_bytes(s, b), n->rows[b]->info.position) < 0;
}

/* ---------------------------------------------------------------------------------------
 * The Load queries (ringkv.proto, message Load), in the order the message documents. */
Ringkv__Loaded *store_load(sim *s, node *n, const Ringkv__Load *load) {
  const sim_opts *o = s->o;
  Ringkv__Loaded *ld = rk_alloc(&s->ar, sizeof(*ld));
  CHECK_ALLOC(ld);
  ringkv__loaded__init(ld);
  /* keys: metadata with sizes, absent ones as empty meta; stop after the key at which the
   * metadata reaches rows_bytes_max. */
  if (load->n_keys > 0) {
    ld->rows = rk_alloc_array(&s->ar, load->n_keys, sizeof(*ld->rows));
    CHECK_ALLOC(ld->rows);
    uint64_t bytes = 0;
    for (size_t i = 0; i < load->n_keys; i++) {
      int64_t k = key_lookup(s, load->keys[i].data, load->keys[i].len);
      Ringkv__Local *l;
      if (k < 0) {
        /* A key the workload never wrote: it is absent here. */
        l = rk_alloc(&s->ar, sizeof(*l));
        CHECK_ALLOC(l);
        ringkv__local__init(l);
        l->key = load->keys[i];
      } else {
        l = store_local(s, n, (uint32_t)k, false, true);
      }
      ld->rows[ld->n_rows++] = l;
      bytes += l->meta.len;
      if (load->rows_bytes_max > 0 && bytes >= load->rows_bytes_max) break;
    }
  }
  /* shards: every row of each, with values; stop after the shard at which the bytes
   * reach shard_bytes_max. */
  if (load->n_shards > 0) {
    size_t cap = 0;
    for (size_t i = 0; i < load->n_shards; i++) {
      uint32_t sh = load->shards[i];
      if (sh < o->shards) cap += s->shard_keys_start[sh + 1] - s->shard_keys_start[sh];
    }
    ld->shards = rk_alloc_array(&s->ar, load->n_shards, sizeof(*ld->shards));
    ld->shard_rows = rk_alloc_array(&s->ar, cap, sizeof(*ld->shard_rows));
    CHECK_ALLOC(ld->shards);
    CHECK_ALLOC(ld->shard_rows);
    uint64_t bytes = 0;
    for (size_t i = 0; i < load->n_shards; i++) {
      uint32_t sh = load->shards[i];
      if (sh >= o->shards) {
        failf(s, "shard_range", "node %u: Load names shard %u", n->id, sh);
        break;
      }
      ld->shards[ld->n_shards++] = sh;
      for (uint32_t j = s->shard_keys_start[sh]; j < s->shard_keys_start[sh + 1]; j++) {
        uint32_t k = s->shard_keys[j];
        if (n->rows[k] == NULL) continue;
        Ringkv__Local *l = store_local(s, n, k, true, false);
        bytes += local_bytes(l);
        ld->shard_rows[ld->n_shard_rows++] = l;
      }
      if (load->shard_bytes_max > 0 && bytes >= load->shard_bytes_max) break;
    }
  }
  /* ranges: whole ranges only, within ranges_rows_max and (after the first) bytes max. */
  if (load->n_ranges > 0) {
    size_t cap = 0;
    for (size_t i = 0; i < load->n_ranges; i++) {
      uint32_t sh = load->ranges[i]->shard;
      if (sh < o->shards) cap += s->shard_keys_start[sh + 1] - s->shard_keys_start[sh];
    }
    ld->range_rows = rk_alloc_array(&s->ar, cap + 1, sizeof(*ld->range_rows));
    CHECK_ALLOC(ld->range_rows);
    uint64_t rows = 0, bytes = 0;
    for (size_t i = 0; i < load->n_ranges; i++) {
      const Ringkv__KeyRange *kr = load->ranges[i];
      if (kr->shard >= o->shards || kr->bits > RINGKV_KEY_POSITION_BITS) {
        failf(s, "shard_range", "node %u: Load names range of shard %u", n->id, kr->shard);
        break;
      }
      size_t first = ld->n_range_rows;
      uint64_t range_bytes = 0;
      bool over = false;
      for (uint32_t j = s->shard_keys_start[kr->shard]; j < s->shard_keys_start[kr->shard + 1] && !over; j++) {
        uint32_t k = s->shard_keys[j];
        const row *r = n->rows[k];
        if (r == NULL || r->info.position < kr->lo || r->info.position - kr->lo >= (UINT64_C(1) << kr->bits)) continue;
        Ringkv__Local *l = store_local(s, n, k, true, false);
        range_bytes += local_bytes(l);
        ld->range_rows[ld->n_range_rows++] = l;
        uint64_t got = ld->n_range_rows - first;
        bool alone = i == 0 && got == 1;
        over = (load->ranges_rows_max > 0 && rows + got > load->ranges_rows_max) ||
               (load->ranges_bytes_max > 0 && bytes + range_bytes > load->ranges_bytes_max && !alone);
      }
      uint64_t got = ld->n_range_rows - first;
      if (over) {
        ld->n_range_rows = first;
        break;
      }
      rows += got;
      bytes += range_bytes;
      ld->ranges_loaded++;
    }
  }
  /* page: the shard's rows after the cursor (position, then key bytes), with values, at
   * most page_rows_max, stopping after the row at which the bytes reach page_bytes_max. */
  if (load->page) {
    uint32_t sh = load->page_shard;
    if (sh >= o->shards) {
      failf(s, "shard_range", "node %u: Load names a page of shard %u", n->id, sh);
      return ld;
    }
    uint32_t span = s->shard_keys_start[sh + 1] - s->shard_keys_start[sh];
    uint32_t *order = rk_alloc_array(&s->ar, span + 1, sizeof(*order));
    CHECK_ALLOC(order);
    uint32_t len = 0;
    for (uint32_t j = s->shard_keys_start[sh]; j < s->shard_keys_start[sh + 1]; j++) {
      uint32_t k = s->shard_keys[j];
      const row *r = n->rows[k];
      if (r == NULL) continue;
      if (load->page_started && !page_after(s, k, r->info.position, load->page_position, load->page_key)) continue;
      /* Insertion in key order: a shard holds few of the simulated keys. */
      uint32_t at = len++;
      while (at > 0 && page_before(s, n, k, order[at - 1])) {
        order[at] = order[at - 1];
        at--;
      }
      order[at] = k;
    }
    ld->page_rows = rk_alloc_array(&s->ar, len + 1, sizeof(*ld->page_rows));
    CHECK_ALLOC(ld->page_rows);
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < len; i++) {
      if (ld->n_page_rows >= load->page_rows_max || (load->page_bytes_max > 0 && bytes >= load->page_bytes_max)) {
        ld->page_more = true;
        break;
      }
      Ringkv__Local *l = store_local(s, n, order[i], true, false);
      bytes += local_bytes(l);
      ld->page_rows[ld->n_page_rows++] = l;
    }
  }
  /* range_parts: each range's 16 parts' rows and digest contributions. */
  if (load->n_range_parts > 0) {
    ld->parts = rk_alloc_array(&s->ar, load->n_range_parts, sizeof(*ld->parts));
    CHECK_ALLOC(ld->parts);
    for (size_t i = 0; i < load->n_range_parts; i++) {
      const Ringkv__KeyRange *kr = load->range_parts[i];
      uint64_t counts[RINGKV_AE_PARTS] = {0}, digests[RINGKV_AE_PARTS] = {0};
      uint32_t mask = 0;
      if (kr->shard < o->shards && kr->bits >= RINGKV_AE_PART_BITS && kr->bits <= RINGKV_KEY_POSITION_BITS) {
        for (uint32_t j = s->shard_keys_start[kr->shard]; j < s->shard_keys_start[kr->shard + 1]; j++) {
          const row *r = n->rows[s->shard_keys[j]];
          if (r == NULL || r->info.position < kr->lo || r->info.position - kr->lo >= (UINT64_C(1) << kr->bits)) continue;
          uint32_t part = (uint32_t)((r->info.position - kr->lo) >> (kr->bits - RINGKV_AE_PART_BITS));
          mask |= 1u << part;
          counts[part]++;
          if (!r->info.expired) digests[part] += r->info.digest;
        }
      }
      Ringkv__RangeParts *rp = rk_alloc(&s->ar, sizeof(*rp));
      CHECK_ALLOC(rp);
      ringkv__range_parts__init(rp);
      rp->mask = mask;
      rp->counts = rk_alloc_array(&s->ar, RINGKV_AE_PARTS, sizeof(*rp->counts));
      rp->digests = rk_alloc_array(&s->ar, RINGKV_AE_PARTS, sizeof(*rp->digests));
      CHECK_ALLOC(rp->counts);
      CHECK_ALLOC(rp->digests);
      for (uint32_t k = 0; k < RINGKV_AE_PARTS; k++) {
        if ((mask >> k & 1u) == 0) continue;
        rp->counts[rp->n_counts++] = counts[k];
        rp->digests[rp->n_digests++] = digests[k];
      }
      ld->parts[ld->n_parts++] = rp;
    }
  }
  /* changed: rows with seq > changed_after, by seq, with values. */
  if (load->changed) {
    size_t lo = 0, hi = n->log_len;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (n->log_seq[mid] <= load->changed_after) lo = mid + 1;
      else hi = mid;
    }
    size_t cap = RK_MIN(n->log_len - lo, (size_t)load->changed_limit);
    ld->changed = rk_alloc_array(&s->ar, cap, sizeof(*ld->changed));
    CHECK_ALLOC(ld->changed);
    uint64_t bytes = 0;
    for (size_t i = lo; i < n->log_len && ld->n_changed < cap; i++) {
      uint32_t k = n->log_key[i];
      const row *r = n->rows[k];
      if (r == NULL || r->seq != n->log_seq[i]) continue;   /* a stale index entry */
      if (load->changed_client_only && !r->from_client) continue;
      Ringkv__Candidate *c = rk_alloc(&s->ar, sizeof(*c));
      CHECK_ALLOC(c);
      ringkv__candidate__init(c);
      c->local = store_local(s, n, k, true, false);
      c->seq = r->seq;
      c->from_client = r->from_client;
      ld->changed[ld->n_changed++] = c;
      bytes += local_bytes(c->local);
      if (load->changed_bytes_max > 0 && bytes >= load->changed_bytes_max) break;
    }
  }
  /* expirable, collectable, next_expiry: over the node's keys, in key order. */
  if (load->expirable > 0 || load->collectable > 0 || load->next_expiry) {
    if (load->expirable > 0) {
      ld->expirable = rk_alloc_array(&s->ar, load->expirable, sizeof(*ld->expirable));
      CHECK_ALLOC(ld->expirable);
    }
    if (load->collectable > 0) {
      ld->collectable = rk_alloc_array(&s->ar, load->collectable, sizeof(*ld->collectable));
      CHECK_ALLOC(ld->collectable);
    }
    /* n->keys ascends, and a row's order is its key id + 1. */
    for (uint32_t i = 0; i < n->keys_len; i++) {
      uint32_t k = n->keys[i];
      const row *r = n->rows[k];
      if (r == NULL) continue;
      bool marker = r->info.siblings == 0;
      if (r->info.all_deleted && !marker && (uint64_t)k + 1u > load->collect_after &&
          ld->n_collectable < load->collectable)
        ld->collectable[ld->n_collectable++] = store_local(s, n, k, false, false);
      if ((marker && r->gc_since < load->expire_before) || r->info.expired) {
        if (ld->n_expirable < load->expirable) ld->expirable[ld->n_expirable++] = store_local(s, n, k, false, false);
      } else if (marker && load->next_expiry && (ld->next_expiry == 0 || r->gc_since < ld->next_expiry)) {
        ld->next_expiry = r->gc_since;
      }
    }
  }
  /* A report's facts: the simulator keeps no counters of its own and no database. */
  if (load->report) {
    Ringkv__ReportFacts *f = rk_alloc(&s->ar, sizeof(*f));
    CHECK_ALLOC(f);
    ringkv__report_facts__init(f);
    ld->facts = f;
  }
  if (load->count_live) {
    for (uint32_t x = 0; x < n->keys_len; x++) {
      const row *r = n->rows[n->keys[x]];
      if (r && r->info.live) ld->live_keys++;
    }
  }
  return ld;
}

/* ---------------------------------------------------------------------------------------
 * Row writes. */

/* Contexts only grow: every dot the old context covers, the new one covers. */
static bool ctx_covers(const Ringkv__Context *c, uint32_t node, uint64_t counter) {
  if (c == NULL) return false;
  for (size_t i = 0; i < c->n_vv; i++)
    if (c->vv[i]->node == node && counter <= c->vv[i]->counter) return true;
  for (size_t i = 0; i < c->n_dots; i++)
    if (c->dots[i]->node == node && c->dots[i]->counter == counter) return true;
  return false;
}

static void check_context_grows(sim *s, node *n, uint32_t k, const row *old, ProtobufCBinaryData meta) {
  if (!s->o->check_contexts || old == NULL || old->meta_len == 0) return;
  Ringkv__Register *a = ringkv__register__unpack(NULL, old->meta_len, old->meta);
  Ringkv__Register *b = ringkv__register__unpack(NULL, meta.len, meta.data);
  if (a == NULL || b == NULL) {
    failf(s, "meta_decode", "node %u key %u: stored meta does not decode", n->id, k);
  } else if (a->context != NULL) {
    for (size_t i = 0; i < a->context->n_vv && !s->failed; i++) {
      const Ringkv__Dot *d = a->context->vv[i];
      if (!ctx_covers(b->context, d->node, d->counter))
        failf(s, "contexts_grow", "node %u key %u: vv[%u] %" PRIu64 " no longer covered", n->id, k, d->node, d->counter);
    }
    for (size_t i = 0; i < a->context->n_dots && !s->failed; i++) {
      const Ringkv__Dot *d = a->context->dots[i];
      if (!ctx_covers(b->context, d->node, d->counter))
        failf(s, "contexts_grow", "node %u key %u: dot (%u,%" PRIu64 ") no longer covered", n->id, k, d->node,
              d->counter);
    }
  }
  if (a) ringkv__register__free_unpacked(a, NULL);
  if (b) ringkv__register__free_unpacked(b, NULL);
}

void trace_row(sim *s, const node *n, uint32_t k, const char *what) {
  const row *r = n->rows[k];
  fprintf(stderr, "trace round %" PRIu64 " node %u key %u: %s: ", s->round, n->id, k, what);
  if (r == NULL) {
    fprintf(stderr, "absent\n");
    return;
  }
  fprintf(stderr, "seq %" PRIu64 " from_client %d winner %u@%" PRIu64 " siblings %u%s%s digest %016" PRIx64 "\n", r->seq,
          r->from_client, r->info.winner_node, r->info.winner_hlc, r->info.siblings, r->info.all_deleted ? " all-deleted" : "",
          r->info.expired ? " expired" : "", r->info.digest);
}

static void apply_applied(sim *s, node *n, const Ringkv__Applied *a, uint64_t seq, bool from_client,
                          ProtobufCBinaryData payload) {
  int64_t k = key_lookup(s, a->key.data, a->key.len);
  if (k < 0) {
    failf(s, "unknown_key", "node %u: the core wrote a key the simulator never wrote", n->id);
    return;
  }
  if (a->shard != s->keys[k].shard)
    failf(s, "placement", "node %u key %" PRId64 ": Applied.shard %u, placement says %u", n->id, k, a->shard,
          s->keys[k].shard);
  if (a->shard >= s->o->shards) return;
  row *r = n->rows[k];
  if (a->meta.len == 0) {
    row_free(r);
    n->rows[k] = NULL;
  } else {
    if (!is_replica(s, (uint32_t)k, n->id))
      failf(s, "placement", "node %u stores key %" PRId64 " it does not replicate", n->id, k);
    check_context_grows(s, n, (uint32_t)k, r, a->meta);
    if (r == NULL) {
      r = calloc(1, sizeof(*r));
      CHECK_ALLOC(r);
      n->rows[k] = r;
    }
    if (r->meta_len != a->meta.len || memcmp(r->meta, a->meta.data, a->meta.len) != 0) {
      free(r->meta);
      r->meta = malloc(a->meta.len);
      CHECK_ALLOC(r->meta);
      memcpy(r->meta, a->meta.data, a->meta.len);
      r->meta_len = (uint32_t)a->meta.len;
    }
    if (a->info == NULL) {
      failf(s, "key_info", "node %u key %" PRId64 ": Applied without KeyInfo", n->id, k);
    } else {
      if (a->info->expired && !r->info.expired) s->res->expired++;
      if (a->info->siblings == 0 && r->info.siblings > 0) s->res->gc_collected++;   /* now a marker */
      r->info.live = a->info->live;
      r->info.winner_hlc = a->info->winner_hlc;
      r->info.winner_node = a->info->winner_node;
      r->info.all_deleted = a->info->all_deleted;
      r->info.max_hlc = a->info->max_hlc;
      r->info.siblings = a->info->siblings;
      r->info.digest = a->info->digest;
      r->info.expired = a->info->expired;
      r->info.position = a->info->position;
    }
    for (size_t i = 0; i < a->n_dropped; i++) {
      dot_t d = {a->dropped[i]->node, a->dropped[i]->counter};
      row_drop_value(r, d);
    }
    for (size_t i = 0; i < a->n_put; i++) {
      const Ringkv__Value *v = a->put[i];
      if (v->dot == NULL) {
        failf(s, "applied_value", "node %u key %" PRId64 ": a put without its dot", n->id, k);
        return;
      }
      if (s->o->break_mode == SIM_BREAK_DROP_VALUE && n->id == 0) continue;   /* oracle self-test */
      dot_t d = {v->dot->node, v->dot->counter};
      if (v->value.len > 0) {
        row_put_value(r, d, v->value.data, v->value.len);
      } else {
        /* Given by its place in the payload of the event that began the chain. */
        if (v->at > payload.len || v->length > payload.len - v->at) {
          failf(s, "applied_value", "node %u: Applied names bytes outside the event's payload", n->id);
          return;
        }
        row_put_value(r, d, payload.data + v->at, v->length);
      }
    }
    if (seq != 0) {
      r->seq = seq;
      r->from_client = from_client;
      log_append(n, seq, (uint32_t)k);
    }
    /* A change voids a noted agreement; a marker keeps its time of collection. */
    r->gc_since = a->gc_since_ms;
    r->gc_epoch = 0;
  }
  n->shard_digest[a->shard] = a->shard_digest;
  n->shard_keys[a->shard] = a->shard_keys;
  if (s->o->trace_key == k) trace_row(s, n, (uint32_t)k, s->cause ? s->cause : "?");
}

void store_row_write(sim *s, node *n, const Ringkv__RowWrite *w, ProtobufCBinaryData payload) {
  if (w->applied != NULL) {
    apply_applied(s, n, w->applied, w->seq, w->from_client, payload);
    return;
  }
  if (w->mark != NULL) {
    int64_t mk = key_lookup(s, w->mark->key.data, w->mark->key.len);
    if (mk < 0 || n->rows[mk] == NULL) return;
    n->rows[mk]->gc_since = w->mark->since_ms;
    n->rows[mk]->gc_epoch = w->mark->epoch;
    return;
  }
  /* A touch: an existing row takes a new seq (it is sent again). */
  int64_t k = key_lookup(s, w->key.data, w->key.len);
  if (k < 0 || n->rows[k] == NULL || w->seq == 0) return;
  n->rows[k]->seq = w->seq;
  log_append(n, w->seq, (uint32_t)k);
  if (s->o->trace_key == k) trace_row(s, n, (uint32_t)k, "touch");
}
