/* hostile.c: the hostile peer (--hostile). The last node runs the honest core like every
 * other, and besides, in every round before the heal, sends each of its forged messages to
 * an honest node replicating the key it names, straight into that node's step (the answer
 * is dropped): what a member with a broken or malicious build can send.
 *
 *   far_future   a version whose HLC lies beyond now + max skew + RINGKV_HLC_HORIZON_MS
 *   deferred     a version beyond now + max skew, but within the horizon: it waits
 *   oversized    a value one byte above RINGKV_VALUE_BYTES_MAX (every 16th round)
 *   contradict   a sibling its own context does not cover
 *   dup_dot      two siblings with the same dot and different values
 *   claim        a dot of the receiver above its counter by more than RINGKV_DOT_CLAIM_MAX
 *   future_ver   a well-formed entry in protocol version RINGKV_PROTOCOL_VERSION + 1
 *   forged_from  a message claiming to come from a node the cluster never had
 *   many         RINGKV_ENTRIES_MAX + 1 entries (every fourth round)
 *   old_ver      a replay of the hostile node's own stored register, in protocol
 *                version RINGKV_PROTOCOL_VERSION_MIN (well-formed: may be applied)
 *
 * Oracles: every kind but old_ver leaves the receiver's shard digests as they were (the
 * message or its entry is refused), no step fails, and the run's own oracles (no
 * acknowledged write lost, convergence, consistent digests) still hold at the end. */
#include <inttypes.h>
#include <stdio.h>

#include "hash.h"
#include "simint.h"

enum { H_FAR_FUTURE, H_DEFERRED, H_OVERSIZED, H_CONTRADICT, H_DUP_DOT, H_CLAIM, H_FUTURE_VER, H_FORGED_FROM, H_MANY,
       H_OLD_VER, H_KINDS };
static const char *const kind_names[H_KINDS] = {"far_future", "deferred", "oversized", "contradict", "dup_dot",
                                                "claim", "future_ver", "forged_from", "many", "old_ver"};

static uint64_t digest_sum(const sim *s, const node *n) {
  uint64_t sum = 0;
  for (uint32_t sh = 0; sh < s->o->shards; sh++) sum = sum * UINT64_C(0x100000001B3) ^ n->shard_digest[sh];
  return sum;
}

typedef struct {
  Ringkv__Dot dots[3];
  Ringkv__Dot *vv[2];
  Ringkv__Sibling sibs[2];
  Ringkv__Sibling *psibs[2];
  Ringkv__Context ctx;
  Ringkv__Register reg;
  Ringkv__Entry entry;
} forged_entry;

/* One live version (dot, hlc, value) with the context {dot}. */
static void forge(forged_entry *f, ProtobufCBinaryData key, dot_t dot, uint64_t hlc, ProtobufCBinaryData value) {
  memset(f, 0, sizeof *f);
  ringkv__dot__init(&f->dots[0]);
  f->dots[0].node = dot.node;
  f->dots[0].counter = dot.counter;
  f->dots[1] = f->dots[0];
  f->vv[0] = &f->dots[1];
  ringkv__context__init(&f->ctx);
  f->ctx.n_vv = 1;
  f->ctx.vv = f->vv;
  ringkv__sibling__init(&f->sibs[0]);
  f->sibs[0].dot = &f->dots[0];
  f->sibs[0].hlc = hlc;
  f->sibs[0].content_type.data = (uint8_t *)"text/plain";
  f->sibs[0].content_type.len = 10;
  f->sibs[0].value = value;
  rk_slice v = {value.data, value.len};
  f->sibs[0].value_hash = rk_hash_slice(v);
  f->psibs[0] = &f->sibs[0];
  ringkv__register__init(&f->reg);
  f->reg.n_siblings = 1;
  f->reg.siblings = f->psibs;
  f->reg.context = &f->ctx;
  ringkv__entry__init(&f->entry);
  f->entry.key = key;
  f->entry.register_ = &f->reg;
}

static ProtobufCBinaryData pack_push(sim *s, uint32_t version, uint32_t from, Ringkv__Entry **entries, size_t n) {
  Ringkv__Push p = RINGKV__PUSH__INIT;
  p.version = version;
  p.from = from;
  p.n_entries = n;
  p.entries = entries;
  p.speaks = RINGKV_PROTOCOL_VERSION;
  ProtobufCBinaryData out;
  out.len = ringkv__push__get_packed_size(&p);
  out.data = rk_alloc(&s->ar, out.len ? out.len : 1);
  CHECK_ALLOC(out.data);
  ringkv__push__pack(&p, out.data);
  return out;
}

/* Builds forged message `kind` about key `k` for `to`; false when this round skips it. */
static bool build(sim *s, int kind, uint32_t k, uint32_t to, ProtobufCBinaryData *out) {
  const sim_opts *o = s->o;
  uint32_t h = o->nodes - 1;
  node *hn = &s->nodes[h], *tn = &s->nodes[to];
  ProtobufCBinaryData key = key_bytes(s, k);
  uint64_t now = now_ms(s, tn);
  static uint8_t small[] = "hostile";
  ProtobufCBinaryData value = {sizeof small - 1, small};
  uint64_t ms = now;
  dot_t dot = {h, hn->counter + 1};
  uint32_t version = RINGKV_PROTOCOL_VERSION, from = h;
  forged_entry f;
  switch (kind) {
    case H_FAR_FUTURE: ms = now + o->max_clock_skew_ms + RINGKV_HLC_HORIZON_MS + 86400000u; break;
    case H_DEFERRED: ms = now + o->max_clock_skew_ms + 60000u; break;
    case H_OVERSIZED: {
      /* Above the constant, not the configured MAX_VALUE_BYTES: a value written under a
       * larger setting must still merge everywhere, or the replicas would split for good. */
      if (s->round % 16 != 0) return false;
      size_t len = (size_t)RINGKV_VALUE_BYTES_MAX + 1;
      value.data = rk_alloc(&s->ar, len);
      CHECK_ALLOC(value.data);
      memset(value.data, 'x', len);
      value.len = len;
      break;
    }
    case H_CLAIM: dot = (dot_t){to, tn->counter + RINGKV_DOT_CLAIM_MAX + 1}; break;
    case H_FUTURE_VER: version = RINGKV_PROTOCOL_VERSION + 1; break;
    case H_FORGED_FROM: from = RINGKV_CLUSTER_SIZE_MAX + 7; break;
    case H_MANY: {
      if (s->round % 4 != 0) return false;
      size_t n = RINGKV_ENTRIES_MAX + 1;
      forged_entry *fs = rk_alloc_array(&s->ar, n, sizeof *fs);
      Ringkv__Entry **es = rk_alloc_array(&s->ar, n, sizeof *es);
      CHECK_ALLOC(fs);
      CHECK_ALLOC(es);
      for (size_t i = 0; i < n; i++) {
        forge(&fs[i], key, (dot_t){h, hn->counter + 1 + i}, ms << 16, value);
        es[i] = &fs[i].entry;
      }
      *out = pack_push(s, version, from, es, n);
      return true;
    }
    case H_OLD_VER: {
      Ringkv__Local *l = store_local(s, hn, k, true, false);
      if (l == NULL || l->meta.len == 0) return false;
      Ringkv__Register *r = ringkv__register__unpack(NULL, l->meta.len, l->meta.data);
      if (r == NULL) return false;
      /* The stored register has no values: put them back, as a push carries them. */
      for (size_t i = 0; i < r->n_siblings; i++) {
        for (size_t j = 0; j < l->n_values; j++) {
          const Ringkv__Dot *d = l->values[j]->dot;
          if (d && r->siblings[i]->dot && d->node == r->siblings[i]->dot->node &&
              d->counter == r->siblings[i]->dot->counter)
            r->siblings[i]->value = l->values[j]->value;
        }
      }
      Ringkv__Entry e = RINGKV__ENTRY__INIT, *pe = &e;
      e.key = key;
      e.register_ = r;
      *out = pack_push(s, RINGKV_PROTOCOL_VERSION_MIN, h, &pe, 1);
      for (size_t i = 0; i < r->n_siblings; i++) r->siblings[i]->value = (ProtobufCBinaryData){0, NULL};
      ringkv__register__free_unpacked(r, NULL);
      return true;
    }
    default: break;
  }
  forge(&f, key, dot, ms << 16, value);
  if (kind == H_CONTRADICT) f.dots[1].counter = dot.counter - 1;   /* the context misses the sibling */
  if (kind == H_DUP_DOT) {
    f.sibs[1] = f.sibs[0];
    static uint8_t other[] = "other";
    f.sibs[1].value = (ProtobufCBinaryData){sizeof other - 1, other};
    rk_slice v = {other, sizeof other - 1};
    f.sibs[1].value_hash = rk_hash_slice(v);
    f.psibs[1] = &f.sibs[1];
    f.reg.n_siblings = 2;
  }
  Ringkv__Entry *pe = &f.entry;
  *out = pack_push(s, version, from, &pe, 1);
  return true;
}

void hostile_round(sim *s) {
  const sim_opts *o = s->o;
  uint32_t h = o->nodes - 1;
  for (int kind = 0; kind < H_KINDS && !s->failed; kind++) {
    rk_arena_reset(&s->ar);
    uint32_t k = (uint32_t)rnd_below(&s->fault, o->keys);
    const key_entry *ke = &s->keys[k];
    uint32_t to = UINT32_MAX;
    for (uint32_t i = 0; i < o->replicas; i++) {
      if (ke->replicas[i] != h) {
        to = ke->replicas[i];
        break;
      }
    }
    if (to == UINT32_MAX) continue;
    ProtobufCBinaryData msg;
    if (!build(s, kind, k, to, &msg)) continue;
    node *tn = &s->nodes[to];
    uint64_t before = digest_sum(s, tn);
    Ringkv__Incoming in = RINGKV__INCOMING__INIT;
    in.kind = RINGKV__KIND__KIND_PUSH;
    in.message = msg;
    Ringkv__StepRequest req = RINGKV__STEP_REQUEST__INIT;
    req.message = &in;
    s->cause = kind_names[kind];
    step_result r = sim_step(s, tn, &req, msg);
    if (s->failed) return;
    s->res->hostile_sent++;
    if (r.code != RINGKV_OK) s->res->hostile_refused++;
    if (r.code != RINGKV_OK && r.code != RINGKV_E_DECODE && r.code != RINGKV_E_PROTOCOL) {
      failf(s, "hostile", "node %u: a forged %s message returned %d (%s)", to, kind_names[kind], r.code,
            ringkv_code_name(r.code));
      return;
    }
    if (kind != H_OLD_VER && digest_sum(s, tn) != before) {
      failf(s, "hostile", "node %u: a forged %s message about key %u changed its digests", to, kind_names[kind], k);
      return;
    }
  }
}
