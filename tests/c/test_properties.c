/* test_properties: the CRDT laws over random histories, plus the HLC's.
 *
 * Every case simulates a small universe: 3-5 nodes, each with its own register for one key,
 * dot counter and clock, running a random history of writes (blind, or with the context a
 * client read earlier from any node), deletes, reads and merges between nodes. The laws are
 * then checked on the nodes' states (canonical bytes compared):
 *   commutative   merge(a, b) == merge(b, a)
 *   associative   merge(merge(a, b), c) == merge(a, merge(b, c))
 *   idempotent    merge(a, a) == a, and merge(merge(a, b), b) == merge(a, b)
 *   convergent    every merge order of 3-4 states gives the same state and the same winner
 *   context_write the core's OP_WRITE with a token removes exactly the covered siblings, keeps
 *                 the rest, answers with a token that covers no sibling the client has not
 *                 seen, and orders the new version above what it supersedes
 *   hlc_tick      tick is monotonic and causal: above the clock and the floor, at least now
 * Cases per law: $RINGKV_PROPERTY_CASES (default 100000; `npm run test:long` sets 1000000).
 * Seeds are the case numbers, so a failure names its case (RINGKV_PROPERTY_SEED=n reruns it). */
#include "testlib.h"

#include "hash.h"
#include "hlc.h"
#include "register.h"

#define UNODES_MAX 5
#define OBSERVED_MAX 16
#define SKEW_MS 60000u

typedef struct {
  rk_reg reg;
  uint64_t counter;   /* last dot counter handed out */
  uint64_t clock;     /* HLC */
} unode;

/* What a client read: the context token of a state (covers all its siblings). */
typedef struct {
  rk_ctx ctx;
  uint64_t max_hlc;
} observed;

typedef struct {
  unode nodes[UNODES_MAX];
  size_t n;
  observed obs[OBSERVED_MAX];
  size_t nobs;
  uint64_t now_ms;
} universe;

static long cases_run[8];
enum { LAW_COMM, LAW_ASSOC, LAW_IDEM, LAW_CONV, LAW_WRITE, LAW_READ, LAW_HLC, LAW_COUNT };
static const char *law_names[LAW_COUNT] = {"commutative", "associative", "idempotent",
                                           "convergent (same state and winner in every merge order)",
                                           "context write (core OP_WRITE)",
                                           "read (core OP_READ: winner, token covers every sibling)",
                                           "hlc tick monotonic and causal"};

static uint64_t current_case;
/* How often the interesting shapes occur, so a reader can see the laws are not vacuous. */
static long write_kept_and_dropped, merges_with_siblings, markers_made;

#define CHECK(cond, what)                                                              \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      print_error("case %llu: %s\n", (unsigned long long)current_case, what);          \
      fail();                                                                          \
    }                                                                                  \
  } while (0)

/* ------------------------------------------------------------------------------------- */
/* Helpers on registers */

static rk_slice enc_reg(const rk_reg *r) {
  pb_enc e = tl_enc();
  rk_reg_encode(&e, r, false);
  CHECK(e.err == 0, "encode");
  return pb_result(&e);
}

static bool same_state(const rk_reg *a, const rk_reg *b) {
  return rk_slice_eq(enc_reg(a), enc_reg(b));
}

static rk_reg merge(const rk_reg *a, const rk_reg *b) {
  rk_reg out;
  CHECK(rk_reg_merge(tl_arena(), a, b, &out) == RINGKV_OK, "rk_reg_merge failed");
  return out;
}

static const rk_ctx no_ctx = {NULL, 0, NULL, 0};

/* A write at node `id` (the model of the spec's write rule): a new sibling with dot
 * (id, ++counter) and an HLC above the clock and everything superseded; the local siblings
 * the token covers are dropped (all of them for a blind write, tok == NULL); the context
 * becomes local ⊔ token ⊔ dot, with vv[id] raised to the counter. */
static void model_write(universe *u, uint32_t id, const observed *tok, bool deleted) {
  unode *nd = &u->nodes[id];
  rk_arena *a = tl_arena();
  uint64_t floor = tok != NULL ? tok->max_hlc : rk_reg_max_hlc(&nd->reg);
  uint64_t hlc;
  CHECK(rk_hlc_tick(nd->clock, u->now_ms, floor, &hlc) == RINGKV_OK, "tick");
  nd->clock = hlc;
  rk_dot dot = {id, ++nd->counter};
  rk_sib *sibs = rk_alloc_array(a, nd->reg.sibs_len + 1, sizeof *sibs);
  size_t n = 0;
  bool placed = false;
  rk_sib fresh;
  memset(&fresh, 0, sizeof fresh);
  fresh.dot = dot;
  fresh.hlc = hlc;
  fresh.deleted = deleted;
  /* Some writes carry a write id (part of the version; merge ignores it). */
  static const char *const write_ids[4] = {"w-a", "w_b", "W9", ""};
  fresh.write_id = tl_str(write_ids[dot.counter % 4]);
  if (!deleted) {
    fresh.content_type = tl_str("text/plain");
    fresh.value_hash = rk_hash(&dot.counter, sizeof dot.counter) ^ dot.node;
  }
  for (size_t i = 0; i < nd->reg.sibs_len; i++) {
    const rk_sib *s = &nd->reg.sibs[i];
    bool superseded = tok == NULL || rk_ctx_covers(&tok->ctx, s->dot);
    if (!placed && rk_dot_cmp(dot, s->dot) < 0) {
      sibs[n++] = fresh;
      placed = true;
    }
    if (!superseded) sibs[n++] = *s;
  }
  if (!placed) sibs[n++] = fresh;
  rk_ctx c1, c2, c3;
  CHECK(rk_ctx_join(a, &nd->reg.ctx, tok != NULL ? &tok->ctx : &no_ctx, &c1) == RINGKV_OK, "join");
  CHECK(rk_ctx_add(a, &c1, dot, &c2) == RINGKV_OK, "add");
  CHECK(rk_ctx_raise(a, &c2, id, nd->counter, &c3) == RINGKV_OK, "raise");
  nd->reg.sibs = sibs;
  nd->reg.sibs_len = n;
  nd->reg.ctx = c3;
}

/* Node `to` receives node `from`'s state (gossip). */
static void model_gossip(universe *u, uint32_t from, uint32_t to) {
  unode *t = &u->nodes[to];
  t->reg = merge(&t->reg, &u->nodes[from].reg);
  t->clock = rk_hlc_absorb(t->clock, rk_reg_max_hlc(&u->nodes[from].reg), u->now_ms, SKEW_MS);
}

/* Collection: a node whose versions are all tombstones keeps only their context (a
 * marker), which merges as any state does. */
static void model_collect(universe *u, uint32_t id) {
  rk_reg *r = &u->nodes[id].reg;
  if (rk_reg_all_deleted(r)) {
    r->sibs_len = 0;
    markers_made++;
  }
}

static void model_read(universe *u, uint32_t id) {
  const rk_reg *r = &u->nodes[id].reg;
  if (r->sibs_len == 0) return;
  observed o = {r->ctx, rk_reg_max_hlc(r)};
  if (u->nobs < OBSERVED_MAX) {
    u->obs[u->nobs++] = o;
  } else {
    u->obs[current_case % OBSERVED_MAX] = o;
  }
}

/* A random history. */
static void simulate(universe *u, tl_rng *rng) {
  memset(u, 0, sizeof *u);
  u->n = 3 + (size_t)tl_below(rng, 3);
  u->now_ms = 1000 + tl_below(rng, 1000);
  for (size_t i = 0; i < u->n; i++) u->nodes[i].counter = tl_below(rng, 3) * 10;
  int steps = 4 + (int)tl_below(rng, 14);
  for (int s = 0; s < steps; s++) {
    uint32_t id = (uint32_t)tl_below(rng, u->n);
    uint64_t r = tl_below(rng, 100);
    if (r < 45) {
      const observed *tok = NULL;
      if (u->nobs > 0 && tl_below(rng, 2) == 0) tok = &u->obs[tl_below(rng, u->nobs)];
      model_write(u, id, tok, tl_below(rng, 5) == 0);
    } else if (r < 60) {
      model_read(u, id);
    } else if (r < 66) {
      model_collect(u, id);
    } else {
      uint32_t to = (uint32_t)tl_below(rng, u->n);
      if (to != id) model_gossip(u, id, to);
    }
    /* Time: often the same millisecond (the logical part carries), sometimes later. */
    if (tl_below(rng, 2) == 0) u->now_ms += tl_below(rng, 5);
  }
}

static const rk_reg *pick(universe *u, tl_rng *rng) {
  return &u->nodes[tl_below(rng, u->n)].reg;
}

/* ------------------------------------------------------------------------------------- */
/* Laws on rk_reg_merge */

static void law_merge(universe *u, tl_rng *rng) {
  const rk_reg *a = pick(u, rng), *b = pick(u, rng), *c = pick(u, rng);
  /* Commutative. */
  rk_reg ab = merge(a, b), ba = merge(b, a);
  CHECK(same_state(&ab, &ba), "merge(a, b) != merge(b, a)");
  cases_run[LAW_COMM]++;
  /* Associative. */
  rk_reg bc = merge(b, c), ab_c = merge(&ab, c), a_bc = merge(a, &bc);
  CHECK(same_state(&ab_c, &a_bc), "merge(merge(a, b), c) != merge(a, merge(b, c))");
  cases_run[LAW_ASSOC]++;
  /* Idempotent. */
  rk_reg aa = merge(a, a), abb = merge(&ab, b);
  CHECK(same_state(&aa, a), "merge(a, a) != a");
  CHECK(same_state(&abb, &ab), "merge(merge(a, b), b) != merge(a, b)");
  cases_run[LAW_IDEM]++;
  /* The merged state is valid: decodes, canonical, every sibling covered. */
  rk_slice bytes = enc_reg(&ab_c);
  rk_reg back;
  CHECK(rk_reg_decode(tl_arena(), bytes, &back) == RINGKV_OK, "merged state does not decode");
  CHECK(rk_slice_eq(enc_reg(&back), bytes), "merged state is not canonical");
}

/* Merges states[0..n) in the order perm, folding from the left or the right. */
static rk_reg fold(const rk_reg *states, const size_t *perm, size_t n, bool right) {
  rk_reg acc = states[perm[right ? n - 1 : 0]];
  for (size_t k = 1; k < n; k++) {
    const rk_reg *next = &states[perm[right ? n - 1 - k : k]];
    acc = right ? merge(next, &acc) : merge(&acc, next);
  }
  return acc;
}

static void law_convergent(universe *u, tl_rng *rng) {
  size_t n = 3 + (size_t)tl_below(rng, 2);
  rk_reg states[4];
  for (size_t i = 0; i < n; i++) states[i] = *pick(u, rng);
  size_t perm[4] = {0, 1, 2, 3};
  rk_slice first = {NULL, 0};
  int first_winner = -2;
  rk_dot first_dot = {0, 0};
  for (int trial = 0; trial < 4; trial++) {
    for (size_t i = n; i > 1; i--) {   /* Fisher-Yates */
      size_t j = (size_t)tl_below(rng, i);
      size_t t = perm[i - 1];
      perm[i - 1] = perm[j];
      perm[j] = t;
    }
    rk_reg r = fold(states, perm, n, trial % 2 == 1);
    rk_slice bytes = enc_reg(&r);
    int w = rk_reg_winner(&r);
    if (first_winner == -2) {
      first = bytes;
      first_winner = w;
      if (r.sibs_len > 1) merges_with_siblings++;
      if (w >= 0) first_dot = r.sibs[w].dot;
      /* The winner is the highest (hlc, node) of the merged siblings. */
      for (size_t i = 0; i < r.sibs_len; i++) {
        CHECK((int)i == w || rk_sib_outranks(&r.sibs[w], &r.sibs[i]), "winner is not the highest");
      }
    } else {
      CHECK(rk_slice_eq(bytes, first), "merge order changes the state");
      CHECK((w < 0) == (first_winner < 0), "merge order changes whether there is a winner");
      if (w >= 0) CHECK(rk_dot_cmp(r.sibs[w].dot, first_dot) == 0, "merge order changes the winner");
    }
  }
  cases_run[LAW_CONV]++;
}

/* ------------------------------------------------------------------------------------- */
/* The core's write (OP_WRITE) against the spec's rule. */

static ringkv_node *core_node;

static rk_slice token_bytes(const observed *o) {
  pb_enc e = tl_enc();
  pb_put_fixed64(&e, 1, rk_hash("k", 1));
  pb_put_fixed64(&e, 2, o->max_hlc);
  size_t m = pb_begin(&e, 3);
  rk_ctx_encode(&e, &o->ctx);
  pb_end(&e, m);
  return tl_done(&e);
}

static rk_dot dot_of(rk_slice msg) {
  rk_dot d = {(uint32_t)tl_u64(msg, 1), tl_u64(msg, 2)};
  return d;
}

static void law_context_write(universe *u, tl_rng *rng) {
  uint32_t id = (uint32_t)tl_below(rng, u->n);
  unode *nd = &u->nodes[id];
  const observed *tok = NULL;
  if (u->nobs > 0 && tl_below(rng, 4) != 0) tok = &u->obs[tl_below(rng, u->nobs)];
  bool deleted = tl_below(rng, 5) == 0;

  /* Init the core node as universe node `id` with its clock and counter. */
  tl_config cfg = tl_default_config();
  cfg.cluster_size = UNODES_MAX;
  cfg.replicas = UNODES_MAX;
  cfg.shards = 16;
  pb_enc e = tl_enc();
  tl_put_config(&e, 1, cfg);
  size_t m = pb_begin(&e, 2);
  pb_put_uint(&e, 1, id);
  pb_put_fixed64(&e, 2, nd->clock);
  pb_put_uint(&e, 3, nd->counter);
  pb_end(&e, m);
  CHECK(tl_call(core_node, RINGKV_OP_INIT, tl_done(&e), NULL) == RINGKV_OK, "OP_INIT");

  rk_slice meta = enc_reg(&nd->reg);
  e = tl_enc();
  pb_put_uint(&e, 1, u->now_ms);
  pb_put_bytes(&e, 2, tl_str("k"));
  pb_put_bytes(&e, 3, meta);
  if (tok != NULL) {
    pb_put_bool(&e, 4, true);
    pb_put_bytes(&e, 5, token_bytes(tok));
  }
  if (!deleted) {
    pb_put_bytes(&e, 6, tl_str("value"));
    pb_put_bytes(&e, 7, tl_str("text/plain"));
  }
  pb_put_bool(&e, 8, deleted);
  rk_slice reply;
  int code = tl_call(core_node, RINGKV_OP_WRITE, tl_done(&e), &reply);
  if (code != RINGKV_OK) print_error("case %llu: OP_WRITE: %s\n", (unsigned long long)current_case, ringkv_code_name(code));
  CHECK(code == RINGKV_OK, "OP_WRITE failed");

  rk_reg out;
  CHECK(rk_reg_decode(tl_arena(), tl_bytes_field(reply, 2), &out) == RINGKV_OK, "reply meta does not decode");
  rk_dot dot = dot_of(tl_bytes_field(reply, 3));
  uint64_t hlc = tl_fixed64(reply, 4);
  CHECK(dot.node == id && dot.counter == nd->counter + 1, "new dot is not (node, counter + 1)");
  /* Exactly: the old siblings the token does not cover, plus the new one. */
  size_t expect = 1;
  for (size_t i = 0; i < nd->reg.sibs_len; i++) {
    const rk_sib *s = &nd->reg.sibs[i];
    bool covered = tok == NULL || rk_ctx_covers(&tok->ctx, s->dot);
    bool kept = false;
    for (size_t j = 0; j < out.sibs_len; j++) kept |= rk_dot_cmp(out.sibs[j].dot, s->dot) == 0;
    CHECK(kept == !covered, covered ? "a covered sibling survived the write" : "an uncovered sibling was dropped");
    expect += !covered;
  }
  CHECK(out.sibs_len == expect, "the write added more than one sibling");
  if (expect > 1 && expect < nd->reg.sibs_len + 1) write_kept_and_dropped++;
  int w = -1;
  for (size_t j = 0; j < out.sibs_len; j++) {
    if (rk_dot_cmp(out.sibs[j].dot, dot) == 0) w = (int)j;
  }
  CHECK(w >= 0, "the new sibling is missing");
  CHECK(out.sibs[w].hlc == hlc, "reply hlc differs from the stored sibling's");
  CHECK(out.sibs[w].deleted == deleted, "deleted flag");
  /* HLC: above the clock, the superseded versions, and at least now. */
  uint64_t floor = tok != NULL ? tok->max_hlc : rk_reg_max_hlc(&nd->reg);
  CHECK(hlc > nd->clock && hlc > floor && hlc >= (u->now_ms << 16), "write hlc too low");
  /* The stored context covers old ⊔ token ⊔ dot. */
  rk_ctx want, t1, joined;
  CHECK(rk_ctx_join(tl_arena(), &nd->reg.ctx, tok != NULL ? &tok->ctx : &no_ctx, &t1) == RINGKV_OK, "join");
  CHECK(rk_ctx_add(tl_arena(), &t1, dot, &want) == RINGKV_OK, "add");
  CHECK(rk_ctx_join(tl_arena(), &out.ctx, &want, &joined) == RINGKV_OK, "join");
  pb_enc e1 = tl_enc(), e2 = tl_enc();
  rk_ctx_encode(&e1, &joined);
  rk_ctx_encode(&e2, &out.ctx);
  CHECK(rk_slice_eq(pb_result(&e1), pb_result(&e2)), "stored context lost coverage");
  /* The answered token: bound to the key, covers what the client saw plus the new version,
   * never a sibling the client has not seen. */
  rk_slice tb = tl_bytes_field(reply, 5);
  CHECK(tl_fixed64(tb, 1) == rk_hash("k", 1), "token not bound to the key");
  CHECK(tl_fixed64(tb, 2) == hlc, "token max_hlc is not the new version's");
  rk_ctx tctx;
  CHECK(rk_ctx_decode(tl_arena(), tl_bytes_field(tb, 3), &tctx) == RINGKV_OK, "token context");
  CHECK(rk_ctx_covers(&tctx, dot), "token does not cover the new version");
  for (size_t j = 0; j < out.sibs_len; j++) {
    if (j == (size_t)w) continue;
    CHECK(!rk_ctx_covers(&tctx, out.sibs[j].dot), "token covers a sibling the client has not seen");
  }
  if (tok != NULL) {
    for (size_t i = 0; i < tok->ctx.vv_len; i++) {
      CHECK(rk_ctx_covers(&tctx, tok->ctx.vv[i]), "token lost what the client had seen");
    }
    for (size_t i = 0; i < tok->ctx.dots_len; i++) {
      CHECK(rk_ctx_covers(&tctx, tok->ctx.dots[i]), "token lost what the client had seen");
    }
  }
  cases_run[LAW_WRITE]++;

  /* Reading the new state back: the winner is the highest (hlc, node) and the token covers
   * every sibling. */
  rk_slice stored = tl_dup(tl_bytes_field(reply, 2));
  e = tl_enc();
  pb_put_bytes(&e, 1, tl_str("k"));
  pb_put_bytes(&e, 2, stored);
  CHECK(tl_call(core_node, RINGKV_OP_READ, tl_done(&e), &reply) == RINGKV_OK, "OP_READ failed");
  rk_reg back;
  CHECK(rk_reg_decode(tl_arena(), stored, &back) == RINGKV_OK, "stored meta");
  CHECK(tl_u64(reply, 1) == 1, "read: not found");
  CHECK((int)tl_u64(reply, 2) == rk_reg_winner(&back), "read: wrong winner");
  size_t listed = 0;
  pb_rd it = pb_reader(reply);
  rk_slice one;
  while (tl_next_bytes(&it, 3, &one)) listed++;
  CHECK(listed == back.sibs_len, "read: sibling count");
  rk_slice rt = tl_bytes_field(reply, 4);
  CHECK(tl_fixed64(rt, 2) == rk_reg_max_hlc(&back), "read: token max_hlc");
  rk_ctx rctx;
  CHECK(rk_ctx_decode(tl_arena(), tl_bytes_field(rt, 3), &rctx) == RINGKV_OK, "read: token context");
  for (size_t j = 0; j < back.sibs_len; j++) {
    CHECK(rk_ctx_covers(&rctx, back.sibs[j].dot), "read: token misses a sibling");
  }
  free((void *)stored.ptr);
  cases_run[LAW_READ]++;
}

/* ------------------------------------------------------------------------------------- */
/* HLC */

static uint64_t hlc_value(tl_rng *rng) {
  switch (tl_below(rng, 6)) {
    case 0: return 0;
    case 1: return UINT64_MAX - tl_below(rng, 3);
    case 2: return (RINGKV_HLC_MS_MAX << 16) | (0xFFFF - tl_below(rng, 2));
    case 3: return (tl_below(rng, 5000) << 16) | (0xFFFF - tl_below(rng, 3));
    default: return (tl_below(rng, 5000) << 16) | tl_below(rng, 0x10000);
  }
}

static void law_hlc(tl_rng *rng) {
  uint64_t clock = hlc_value(rng), floor = hlc_value(rng);
  uint64_t now = tl_below(rng, 8) == 0 ? RINGKV_HLC_MS_MAX + tl_below(rng, 2) : tl_below(rng, 5000);
  uint64_t out = 0;
  int code = rk_hlc_tick(clock, now, floor, &out);
  bool exhausted = clock == UINT64_MAX || floor == UINT64_MAX || now > RINGKV_HLC_MS_MAX;
  CHECK((code == RINGKV_E_CLOCK) == exhausted, "E_CLOCK exactly when exhausted");
  CHECK(code == RINGKV_OK || code == RINGKV_E_CLOCK, "tick code");
  if (code == RINGKV_OK) {
    CHECK(out > clock && out > floor && out >= (now << 16), "tick not above its inputs");
    uint64_t want = RK_MAX(RK_MAX(clock + 1, now << 16), floor + 1);
    CHECK(out == want, "tick is not the least HLC above its inputs");
    /* Monotonic: ticking again from the result goes strictly up. */
    uint64_t again;
    if (out != UINT64_MAX) {
      CHECK(rk_hlc_tick(out, now, floor, &again) == RINGKV_OK && again > out, "tick not monotonic");
    }
    /* Absorbing a remote within the bound never moves the clock back. */
    uint64_t absorbed = rk_hlc_absorb(out, hlc_value(rng), now, SKEW_MS);
    CHECK(absorbed >= out, "absorb moved the clock back");
    CHECK(absorbed == out || absorbed <= rk_hlc_bound(now, SKEW_MS), "absorbed beyond the bound");
  }
  cases_run[LAW_HLC]++;
}

/* ------------------------------------------------------------------------------------- */

static void test_laws(void **state) {
  (void)state;
  long cases = tl_cases();
  const char *only = getenv("RINGKV_PROPERTY_SEED");
  long first = 0;
  if (only != NULL) {
    first = strtol(only, NULL, 10);
    cases = first + 1;
  }
  core_node = ringkv_node_create();
  assert_non_null(core_node);
  universe u;
  for (long c = first; c < cases; c++) {
    current_case = (uint64_t)c;
    tl_rng rng = {UINT64_C(0x5EED) ^ ((uint64_t)c * UINT64_C(0x9E3779B97F4A7C15))};
    simulate(&u, &rng);
    law_merge(&u, &rng);
    law_convergent(&u, &rng);
    law_context_write(&u, &rng);
    law_hlc(&rng);
    tl_reset();
  }
  ringkv_node_destroy(core_node);
  for (int l = 0; l < LAW_COUNT; l++) printf("law %s: %ld cases\n", law_names[l], cases_run[l]);
  printf("  (%ld merged states with concurrent siblings; %ld context writes that kept some"
         " siblings and dropped others; %ld collection markers among the states)\n", merges_with_siblings,
         write_kept_and_dropped, markers_made);
  for (int l = 0; l < LAW_COUNT; l++) assert_true(cases_run[l] >= cases - first);
  assert_true(markers_made > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_laws),
  };
  int failed = cmocka_run_group_tests_name("properties", tests, NULL, NULL);
  tl_free();
  return failed;
}
