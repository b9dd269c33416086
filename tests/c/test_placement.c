/* test_placement: key -> shard -> replicas through OP_PLACE: balance over many keys,
 * distinct replicas in range, determinism, placement by shard, full replication; placement
 * on demand (memoised) equal to a brute-force rendezvous reference, a node's own shards
 * too, and a Worker's placement-only instance. */
#include "testlib.h"
#include "hash.h"
#include "util.h"
#include "node.h"
#include "resize.h"

#define KEYS 100000
#define BATCH 1000
#define KEY_BYTES_MAX 24

typedef struct {
  uint32_t shard;
  uint32_t replicas[64];
  size_t n;
  uint64_t key_hash;
} placement;

/* Places keys[0..n) with one OP_PLACE call. */
static void place(ringkv_node *node, uint8_t keys[][KEY_BYTES_MAX], const size_t *lens, size_t n,
                  placement *out) {
  pb_enc e = tl_enc();
  for (size_t i = 0; i < n; i++) pb_put_bytes_always(&e, 1, (rk_slice){keys[i], lens[i]});
  rk_slice reply;
  assert_int_equal(tl_call(node, RINGKV_OP_PLACE, tl_done(&e), &reply), RINGKV_OK);
  pb_rd it = pb_reader(reply);
  rk_slice p;
  size_t i = 0;
  while (tl_next_bytes(&it, 1, &p)) {
    assert_true(i < n);
    out[i].shard = (uint32_t)tl_u64(p, 1);
    out[i].n = tl_repeated_u32(p, 2, out[i].replicas, 64);
    out[i].key_hash = tl_fixed64(p, 3);
    i++;
  }
  assert_int_equal(i, n);
  tl_reset();
}

static void random_keys(tl_rng *rng, uint8_t keys[][KEY_BYTES_MAX], size_t *lens, size_t n) {
  for (size_t i = 0; i < n; i++) {
    lens[i] = 1 + (size_t)tl_below(rng, KEY_BYTES_MAX);
    tl_bytes(rng, keys[i], lens[i]);
  }
}

static void test_balance_and_shape(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  c.cluster_size = 32;
  c.replicas = 3;
  c.shards = 16384;
  ringkv_node *node = tl_node(c, 0);
  static uint8_t keys[BATCH][KEY_BYTES_MAX];
  static size_t lens[BATCH];
  static placement pl[BATCH], again[BATCH];
  /* Shard -> its replica list, to check that placement depends on the shard only. */
  static uint32_t shard_replicas[16384][3];
  static bool shard_seen[16384];
  memset(shard_seen, 0, sizeof shard_seen);
  uint64_t count[32] = {0}, first[32] = {0};
  tl_rng rng = {2024};
  for (int batch = 0; batch < KEYS / BATCH; batch++) {
    random_keys(&rng, keys, lens, BATCH);
    place(node, keys, lens, BATCH, pl);
    if (batch % 10 == 0) {
      /* Deterministic: the same keys again give the same placements. */
      place(node, keys, lens, BATCH, again);
      for (size_t i = 0; i < BATCH; i++) {
        assert_int_equal(pl[i].shard, again[i].shard);
        assert_int_equal(pl[i].n, again[i].n);
        assert_memory_equal(pl[i].replicas, again[i].replicas, pl[i].n * sizeof(uint32_t));
      }
    }
    for (size_t i = 0; i < BATCH; i++) {
      placement *p = &pl[i];
      assert_true(p->key_hash == ringkv_hash(keys[i], lens[i]));
      assert_true(p->shard < c.shards);
      assert_int_equal(p->n, 3);
      for (size_t r = 0; r < p->n; r++) {
        assert_true(p->replicas[r] < c.cluster_size);
        for (size_t s = 0; s < r; s++) assert_int_not_equal(p->replicas[r], p->replicas[s]);
        count[p->replicas[r]]++;
      }
      first[p->replicas[0]]++;
      if (shard_seen[p->shard]) {
        assert_memory_equal(shard_replicas[p->shard], p->replicas, 3 * sizeof(uint32_t));
      } else {
        memcpy(shard_replicas[p->shard], p->replicas, 3 * sizeof(uint32_t));
        shard_seen[p->shard] = true;
      }
    }
  }
  double mean = (double)KEYS * 3 / 32, max = 0, first_max = 0;
  for (int i = 0; i < 32; i++) {
    if ((double)count[i] > max) max = (double)count[i];
    if ((double)first[i] > first_max) first_max = (double)first[i];
  }
  printf("placement: %d keys, N=32 R=3: most loaded node holds %.3f x the mean"
         " (first replica: %.3f x)\n",
         KEYS, max / mean, first_max / ((double)KEYS / 32));
  assert_true(max <= 1.1 * mean);
  ringkv_node_destroy(node);
}

static void test_full_replication(void **state) {
  (void)state;
  static const uint32_t sizes[] = {1, 3, 8, 32};
  static uint8_t keys[BATCH][KEY_BYTES_MAX];
  static size_t lens[BATCH];
  static placement pl[BATCH];
  tl_rng rng = {99};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    tl_config c = tl_default_config();
    c.cluster_size = sizes[s];
    c.replicas = sizes[s];
    c.shards = 256;
    c.fanout = 8;
    ringkv_node *node = tl_node(c, 0);
    random_keys(&rng, keys, lens, BATCH);
    place(node, keys, lens, BATCH, pl);
    for (size_t i = 0; i < BATCH; i++) {
      assert_int_equal(pl[i].n, sizes[s]);
      bool seen[64] = {false};
      for (size_t r = 0; r < pl[i].n; r++) {
        assert_true(pl[i].replicas[r] < sizes[s]);
        assert_false(seen[pl[i].replicas[r]]);
        seen[pl[i].replicas[r]] = true;
      }
    }
    ringkv_node_destroy(node);
  }
}

static void test_same_on_every_node(void **state) {
  (void)state;
  /* Placement is a function of the key and the config: every node computes the same. */
  tl_config c = tl_default_config();
  static uint8_t keys[BATCH][KEY_BYTES_MAX];
  static size_t lens[BATCH];
  static placement a[BATCH], b[BATCH];
  tl_rng rng = {5};
  random_keys(&rng, keys, lens, BATCH);
  ringkv_node *n0 = tl_node(c, 0), *n5 = tl_node(c, 5);
  place(n0, keys, lens, BATCH, a);
  place(n5, keys, lens, BATCH, b);
  for (size_t i = 0; i < BATCH; i++) {
    assert_int_equal(a[i].shard, b[i].shard);
    assert_int_equal(a[i].n, b[i].n);
    assert_memory_equal(a[i].replicas, b[i].replicas, a[i].n * sizeof(uint32_t));
  }
  ringkv_node_destroy(n0);
  ringkv_node_destroy(n5);
}

/* The reference: every node's rendezvous score for the shard, sorted (highest first, ties
 * to the lower id), the first R. */
static void reference(uint32_t cluster, uint32_t replicas, uint32_t shard, uint32_t *out) {
  uint64_t score[1024];
  uint32_t order[1024];
  for (uint32_t node = 0; node < cluster; node++) {
    uint8_t b[8];
    rk_le32(b, shard);
    rk_le32(b + 4, node);
    score[node] = rk_hash(b, sizeof b);
    order[node] = node;
  }
  for (uint32_t i = 0; i < replicas; i++) {
    uint32_t best = i;
    for (uint32_t j = i + 1; j < cluster; j++) {
      uint32_t x = order[j], y = order[best];
      if (score[x] > score[y] || (score[x] == score[y] && x < y)) best = j;
    }
    uint32_t t = order[i];
    order[i] = order[best];
    order[best] = t;
    out[i] = order[i];
  }
}

/* Placement per shard on demand, memoised in a bounded cache: the same as the reference for
 * every shard, in two passes (the second hits the cache or recomputes what was evicted),
 * with more shards than the cache holds, with full replication (in rendezvous order), and
 * on a Worker's placement-only instance, which answers nothing but OP_PLACE. */
static void test_on_demand_matches_reference(void **state) {
  (void)state;
  struct { uint32_t cluster, replicas, shards; } cases[] = {{8, 3, 64}, {100, 3, 65536}, {64, 64, 4096}, {1024, 5, 16384}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    tl_config cfg = tl_default_config();
    cfg.cluster_size = cases[c].cluster;
    cfg.replicas = cases[c].replicas;
    cfg.shards = cases[c].shards;
    ringkv_node *node = tl_node(cfg, cases[c].cluster - 1);
    /* The Worker's instance: InitRequest.placement_only. */
    pb_enc e = tl_enc();
    tl_put_config(&e, 1, cfg);
    size_t m = pb_begin(&e, 2);
    pb_put_uint(&e, 1, 0);
    pb_end(&e, m);
    pb_put_bool(&e, 7, true);
    ringkv_node *worker = ringkv_node_create();
    rk_slice reply;
    assert_int_equal(tl_call(worker, RINGKV_OP_INIT, tl_done(&e), &reply), RINGKV_OK);
    assert_int_equal(tl_call(worker, RINGKV_OP_STEP, tl_str(""), &reply), RINGKV_E_STATE);
    assert_int_equal(tl_call(worker, RINGKV_OP_WRITE, tl_str(""), &reply), RINGKV_E_STATE);
    tl_rng rng = {c + 1};
    for (int pass = 0; pass < 2; pass++) {
      for (int i = 0; i < 3000; i++) {
        uint32_t shard = (uint32_t)tl_below(&rng, cases[c].shards);
        uint32_t want[1024];
        reference(cases[c].cluster, cases[c].replicas, shard, want);
        ringkv_node *targets[2] = {node, worker};
        for (int t = 0; t < 2; t++) {
          pb_enc q = tl_enc();
          size_t qm = pb_begin(&q, 2);   /* packed: shard 0 too */
          pb_put_varint_raw(&q, shard);
          pb_end(&q, qm);
          assert_int_equal(tl_call(targets[t], RINGKV_OP_PLACE, tl_done(&q), &reply), RINGKV_OK);
          uint32_t got[1024];
          size_t n = tl_repeated_u32(tl_bytes_field(reply, 1), 2, got, 1024);
          assert_int_equal(n, cases[c].replicas);
          assert_memory_equal(got, want, n * sizeof(uint32_t));
        }
        tl_reset();
      }
    }
    ringkv_node_destroy(node);
    ringkv_node_destroy(worker);
  }
}

/* A node's own shard list (scores against the others', stopping at R above it) agrees with
 * the reference: the peers OP_INIT reports are exactly the nodes sharing one of its shards. */
static void test_own_shards_match_reference(void **state) {
  (void)state;
  tl_config cfg = tl_default_config();
  cfg.cluster_size = 200;
  cfg.replicas = 3;
  cfg.shards = 4096;
  for (uint32_t self = 0; self < cfg.cluster_size; self += 37) {
    bool shares[1024] = {false};
    for (uint32_t shard = 0; shard < cfg.shards; shard++) {
      uint32_t r[3];
      reference(cfg.cluster_size, cfg.replicas, shard, r);
      if (r[0] != self && r[1] != self && r[2] != self) continue;
      for (int i = 0; i < 3; i++) shares[r[i]] = true;
    }
    ringkv_node *n = ringkv_node_create();
    rk_slice reply;
    assert_int_equal(tl_call(n, RINGKV_OP_INIT, tl_init_request(cfg, self), &reply), RINGKV_OK);
    uint32_t peers[1024];
    size_t np = tl_repeated_u32(reply, 2, peers, 1024);
    size_t want = 0;
    for (uint32_t p = 0; p < cfg.cluster_size; p++) want += shares[p] && p != self;
    assert_int_equal(np, want);
    for (size_t i = 0; i < np; i++) assert_true(shares[peers[i]] && peers[i] != self);
    ringkv_node_destroy(n);
    tl_reset();
  }
}

static void test_key_limits(void **state) {
  (void)state;
  tl_config c = tl_default_config();
  ringkv_node *node = tl_node(c, 0);
  static uint8_t big[RINGKV_KEY_BYTES_MAX + 1];
  memset(big, 'k', sizeof big);
  /* 1024 bytes is a key; 1025 bytes are not. */
  pb_enc e = tl_enc();
  pb_put_bytes_always(&e, 1, (rk_slice){big, RINGKV_KEY_BYTES_MAX});
  assert_int_equal(tl_call(node, RINGKV_OP_PLACE, tl_done(&e), NULL), RINGKV_OK);
  e = tl_enc();
  pb_put_bytes_always(&e, 1, (rk_slice){big, RINGKV_KEY_BYTES_MAX + 1});
  assert_int_not_equal(tl_call(node, RINGKV_OP_PLACE, tl_done(&e), NULL), RINGKV_OK);
  /* Before OP_INIT a node refuses. */
  ringkv_node *fresh = ringkv_node_create();
  assert_non_null(fresh);
  e = tl_enc();
  pb_put_bytes_always(&e, 1, tl_str("k"));
  assert_int_equal(tl_call(fresh, RINGKV_OP_PLACE, tl_done(&e), NULL), RINGKV_E_STATE);
  ringkv_node_destroy(fresh);
  ringkv_node_destroy(node);
  tl_reset();
}


static bool in_set(const uint32_t *set, uint32_t len, uint32_t node) {
  for (uint32_t i = 0; i < len; i++) {
    if (set[i] == node) return true;
  }
  return false;
}

/* Placement during a transition (SPEC: Resizing, the phase table), for a grow 4 -> 7 and a
 * shrink 7 -> 3, on every node of old ∪ new and on a Worker's instance:
 *  - OP_PLACE answers the phase's serving set in rendezvous order: the old replicas while
 *    joining, the new ones from switching on;
 *  - the shard's holders (pushed its writes, its gossip peers) are old ∪ new while joining
 *    and switching, the new ones once leaving; each node's own shards are the ones it holds;
 *  - a node takes client reads only for shards it serves in the phase (RINGKV_E_NOT_SERVING
 *    otherwise: the sender's ring is older), whatever it holds;
 *  - a node newly replicating a shard while joining catches it up before serving it (with
 *    leases): its progress counts those shards as copying; an old replica copies nothing. */
static void test_transition_phases(void **state) {
  (void)state;
  struct { uint32_t from, to; } moves[] = {{4, 7}, {7, 3}};
  for (size_t m = 0; m < 2; m++) {
    uint32_t from = moves[m].from, to = moves[m].to, span = from > to ? from : to;
    for (uint32_t phase = RK_PHASE_JOINING; phase <= RK_PHASE_LEAVING; phase++) {
      tl_config cfg = tl_default_config();
      cfg.cluster_size = span;
      cfg.replicas = 3;
      cfg.shards = 256;
      cfg.from = from;
      cfg.to = to;
      cfg.phase = phase;
      cfg.epoch = 1 + phase;
      cfg.leases = true;
      uint32_t serving_size = phase == RK_PHASE_JOINING ? from : to;
      for (uint32_t self = 0; self < span; self++) {
        ringkv_node *n = tl_node(cfg, self);
        uint32_t joins = 0, copying = 0, dropping = 0;
        for (uint32_t shard = 0; shard < cfg.shards; shard++) {
          uint32_t old_set[3], new_set[3], serving[3];
          reference(from, 3, shard, old_set);
          reference(to, 3, shard, new_set);
          reference(serving_size, 3, shard, serving);
          /* OP_PLACE: the serving set, in order. */
          pb_enc q = tl_enc();
          size_t qm = pb_begin(&q, 2);
          pb_put_varint_raw(&q, shard);
          pb_end(&q, qm);
          rk_slice reply;
          assert_int_equal(tl_call(n, RINGKV_OP_PLACE, tl_done(&q), &reply), RINGKV_OK);
          uint32_t got[16];
          size_t got_len = tl_repeated_u32(tl_bytes_field(reply, 1), 2, got, 16);
          assert_int_equal(got_len, 3);
          assert_memory_equal(got, serving, sizeof serving);
          /* Holders. */
          uint32_t len;
          const uint16_t *h = rk_replicas_of(n, shard, &len);
          uint32_t want_len = 0;
          for (uint32_t node = 0; node < span; node++) {
            bool holds = in_set(new_set, 3, node) || (phase != RK_PHASE_LEAVING && in_set(old_set, 3, node));
            want_len += holds;
            bool listed = false;
            for (uint32_t i = 0; i < len; i++) listed |= h[i] == node;
            assert_int_equal(listed, holds);
            assert_int_equal(rk_is_replica(n, shard, node), holds);
          }
          assert_int_equal(len, want_len);
          assert_int_equal(rk_serves_phase(n, shard, self), in_set(serving, 3, self));
          joins += phase == RK_PHASE_JOINING && in_set(new_set, 3, self) && !in_set(old_set, 3, self);
          /* A client read of a key of this shard: NOT_SERVING unless it serves it. */
          tl_reset();
        }
        rk_step_progress(n, &copying, &dropping);
        assert_int_equal(copying, joins);
        assert_int_equal(dropping, 0);   /* no keys */
        if (phase == RK_PHASE_JOINING && from < to && self < from) assert_int_equal(copying, 0);
        ringkv_node_destroy(n);
      }
    }
  }
}

/* Client reads by phase: refused with RINGKV_E_NOT_SERVING at a node that holds but does
 * not serve the key (a new replica while joining, an old-only one from switching on). */
static void test_client_read_by_phase(void **state) {
  (void)state;
  for (uint32_t phase = RK_PHASE_JOINING; phase <= RK_PHASE_LEAVING; phase++) {
    tl_config cfg = tl_default_config();
    cfg.cluster_size = 7;
    cfg.replicas = 3;
    cfg.shards = 64;
    cfg.from = 4;
    cfg.to = 7;
    cfg.phase = phase;
    cfg.epoch = 1 + phase;
    uint32_t serving_size = phase == RK_PHASE_JOINING ? 4 : 7;
    int refused = 0, served = 0;
    for (uint32_t self = 0; self < 7; self++) {
      ringkv_node *n = tl_node(cfg, self);
      for (int k = 0; k < 64; k++) {
        char key[16];
        int kl = snprintf(key, sizeof key, "key-%d", k);
        rk_slice ks = {(const uint8_t *)key, (size_t)kl};
        uint32_t shard = (uint32_t)(rk_hash_slice(ks) % cfg.shards), serving[3];
        reference(serving_size, 3, shard, serving);
        pb_enc q = tl_enc();
        pb_put_bytes(&q, 1, ks);
        rk_slice reply;
        int code = tl_call(n, RINGKV_OP_CLIENT_READ, tl_done(&q), &reply);
        if (in_set(serving, 3, self)) {
          assert_int_equal(code, RINGKV_OK);
          served++;
        } else {
          assert_int_equal(code, RINGKV_E_NOT_SERVING);
          refused++;
        }
        tl_reset();
      }
      ringkv_node_destroy(n);
    }
    assert_true(refused > 0 && served > 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_balance_and_shape),
      cmocka_unit_test(test_full_replication),
      cmocka_unit_test(test_same_on_every_node),
      cmocka_unit_test(test_key_limits),
      cmocka_unit_test(test_on_demand_matches_reference),
      cmocka_unit_test(test_own_shards_match_reference),
      cmocka_unit_test(test_transition_phases),
      cmocka_unit_test(test_client_read_by_phase),
  };
  int failed = cmocka_run_group_tests_name("placement", tests, NULL, NULL);
  tl_free();
  return failed;
}
