/* test_quorum: the waits of writes at ?consistency=quorum|all (quorum.c): W of each set
 * that counts, this node included; a push that ends without the peer holding the write
 * (lost, refused, deferred by a clock behind) does not count; a duplicated or replayed
 * answer counts once; a wait ends once W is reached or every push has ended; during
 * joining both the old and the new set must reach W. */
#include "testlib.h"
#include "node.h"
#include "quorum.h"

/* A shard node `self` replicates (in both sets when `both`). */
static uint32_t shard_of_self(ringkv_node *n, uint32_t self, uint32_t shards, bool moving) {
  for (uint32_t s = 0; s < shards; s++) {
    uint32_t len;
    const uint16_t *set = rk_sources_of(n, s, &len);
    bool in_old = false;
    for (uint32_t i = 0; i < len; i++) in_old |= set[i] == self;
    if (!in_old) continue;
    if (!moving || rk_shard_moving(n, s)) return s;
  }
  fail_msg("no shard of node %u", self);
  return 0;
}

static void test_quorum_and_all(void **unused) {
  (void)unused;
  tl_config c = tl_default_config();   /* 8 nodes, R = 3 */
  ringkv_node *n = tl_node(c, 0);
  rk_quorum *q = calloc(1, sizeof *q);
  uint32_t shard = shard_of_self(n, 0, c.shards, false);
  bool done;
  rk_quorum_outcome out;
  /* Quorum: 2 of 3, this node counted: the first peer holding it ends the wait. */
  int w = rk_quorum_open(q, n, shard, RK_CONSISTENCY_QUORUM, &done, &out);
  assert_true(w >= 0);
  assert_false(done);
  assert_int_equal(q->w[w].len, 2);
  rk_quorum_sent(q, w, 0, 11);
  rk_quorum_sent(q, w, 1, 12);
  int ow;
  uint32_t oi;
  assert_true(rk_quorum_owner(q, 12, &ow, &oi));
  assert_int_equal(ow, w);
  assert_int_equal(oi, 1);
  assert_true(rk_quorum_ended(q, w, 1, true, &out));
  assert_true(out.reached);
  assert_int_equal(out.replicas, 2);
  /* Closed: the other answer belongs to nothing any more. */
  assert_false(rk_quorum_owner(q, 11, &ow, &oi));
  assert_int_equal(q->open, 0);
  /* All: one peer holds it, the other defers (a clock behind) or is lost: 503 with 2. */
  w = rk_quorum_open(q, n, shard, RK_CONSISTENCY_ALL, &done, &out);
  rk_quorum_sent(q, w, 0, 21);
  rk_quorum_sent(q, w, 1, 22);
  assert_false(rk_quorum_ended(q, w, 0, true, &out));
  /* The same answer delivered again (a duplicate, or a replay) counts once. */
  assert_false(rk_quorum_ended(q, w, 0, true, &out));
  assert_false(rk_quorum_owner(q, 21, &ow, &oi));
  assert_true(rk_quorum_ended(q, w, 1, false, &out));
  assert_false(out.reached);
  assert_int_equal(out.replicas, 2);
  /* A failed step closes its wait unanswered. */
  w = rk_quorum_open(q, n, shard, RK_CONSISTENCY_ALL, &done, &out);
  rk_quorum_sent(q, w, 0, 31);
  rk_quorum_close(q, w);
  assert_false(rk_quorum_owner(q, 31, &ow, &oi));
  assert_int_equal(q->open, 0);
  /* Every slot taken: the next write gets none (it answers at once, held here only). */
  for (uint32_t i = 0; i < RK_QUORUM_WAITS_MAX; i++) assert_true(rk_quorum_open(q, n, shard, RK_CONSISTENCY_ALL, &done, &out) >= 0);
  assert_int_equal(rk_quorum_open(q, n, shard, RK_CONSISTENCY_ALL, &done, &out), -1);
  rk_quorum_free(q);
  free(q);
  ringkv_node_destroy(n);
  tl_reset();
}

static void test_joining_counts_both_sets(void **unused) {
  (void)unused;
  tl_config c = tl_default_config();
  c.cluster_size = 6;
  c.from = 3;
  c.to = 6;
  c.phase = 1;   /* joining */
  c.epoch = 2;
  ringkv_node *n = tl_node(c, 0);
  uint32_t shard = shard_of_self(n, 0, c.shards, true);
  uint32_t new_len;
  const uint16_t *nw = rk_new_set_of(n, shard, &new_len);
  uint16_t new_set[8];
  memcpy(new_set, nw, new_len * sizeof *nw);
  rk_quorum *q = calloc(1, sizeof *q);
  bool done;
  rk_quorum_outcome out;
  int w = rk_quorum_open(q, n, shard, RK_CONSISTENCY_QUORUM, &done, &out);
  assert_true(w >= 0);
  assert_false(done);
  /* Old = all 3 nodes of size 3 (node 0 among them); the new set differs. Confirm the old
   * ones first: the old set reaches 2 of 3, but the wait goes on while the new set has not. */
  rk_quorum_wait *x = &q->w[w];
  bool self_new = false;
  for (uint32_t i = 0; i < new_len; i++) self_new |= new_set[i] == 0;
  uint32_t have_new = self_new ? 1 : 0, need_new = new_len / 2 + 1;
  bool closed = false;
  for (uint32_t i = 0; i < x->len && !closed; i++) {
    if (x->in[i] & 2) continue;   /* old-only peers first */
    closed = rk_quorum_ended(q, w, i, true, &out);
  }
  if (have_new < need_new) assert_false(closed);
  for (uint32_t i = 0; i < q->w[w].len && !closed; i++) {
    if (!(q->w[w].in[i] & 2) || (q->w[w].in[i] & 4)) continue;
    closed = rk_quorum_ended(q, w, i, true, &out);
    if (!closed) have_new++;
  }
  assert_true(closed);
  assert_true(out.reached);
  rk_quorum_free(q);
  free(q);
  ringkv_node_destroy(n);
  tl_reset();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quorum_and_all),
      cmocka_unit_test(test_joining_counts_both_sets),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  tl_free();
  return rc;
}
