/* fuzz_step: the node step's decoders (StepRequest and every event in it, StepState,
 * PeerState), as an executor would hand them in. The first byte picks what the rest is:
 *   0: the StepState given to OP_INIT (InitRequest.state), then the start and an alarm;
 *   1: one PeerState given to OP_INIT (InitRequest.peers), then the start and an alarm;
 *   2: a StepRequest to a started node, then, as an executor must, `loaded` (empty) for
 *      as long as a reply asks for a load, then an alarm.
 * Oracles: whatever a node accepted must not wedge it (the next alarm step succeeds, and
 * its reply frames), and the state and peer rows the core asks to persist must be taken
 * back by OP_INIT on a fresh node (a restart never fails on the node's own state). */
#include "fuzzlib.h"

#define FZ_LOADS_MAX 8

/* InitRequest{config, node{node 0}, [state], [peers]}. */
static rk_slice init_request(rk_slice state, const rk_slice *peers, size_t npeers) {
  pb_enc e = fz_enc();
  fz_put_config(&e, 1);
  size_t m = pb_begin(&e, 2);
  pb_put_uint(&e, 1, 0);
  pb_end(&e, m);
  pb_put_bytes(&e, 4, state);
  for (size_t i = 0; i < npeers; i++) pb_put_bytes_always(&e, 5, peers[i]);
  return fz_result(&e);
}

/* StepRequest{now, random, <event field> = body or true}. */
static rk_slice step_request(uint64_t now, uint32_t event, rk_slice body) {
  pb_enc e = fz_enc();
  pb_put_uint(&e, 1, now);
  pb_put_uint(&e, 2, UINT64_C(0x9e3779b97f4a7c15));
  if (event == 3 || event == 8) pb_put_uint(&e, event, 1);
  else pb_put_bytes_always(&e, event, body);
  return fz_result(&e);
}

/* The state and peer rows of a StepReply, copied (a reply lives until the next call). */
typedef struct {
  rk_slice state;
  rk_slice peers[64];
  size_t npeers;
  int load;
} persisted;

static void collect(rk_slice reply, persisted *p) {
  pb_rd r = {reply.ptr, reply.ptr + reply.len};
  if (reply.len == 0) r.p = r.end = NULL;
  uint32_t f, wt;
  rk_slice v;
  p->load = 0;
  while (pb_next(&r, &f, &wt) == 1) {
    if (wt == PB_LEN && (f == 1 || f == 4 || f == 5)) {
      FZ_CHECK(pb_get_bytes(&r, wt, &v), "StepReply field does not parse");
      uint8_t *copy = rk_alloc(fz_arena(), v.len ? v.len : 1);
      FZ_CHECK(copy != NULL, "harness arena");
      if (v.len) memcpy(copy, v.ptr, v.len);
      rk_slice c = fz_slice(copy, v.len);
      if (f == 1) p->load = 1;
      else if (f == 5 && v.len) p->state = c;
      else if (f == 4 && p->npeers < sizeof p->peers / sizeof p->peers[0]) p->peers[p->npeers++] = c;
    } else if (!pb_skip(&r, wt)) {
      break;
    }
  }
}

/* One step, then `loaded` while the replies ask for loads; the persisted rows collected. */
static int step(ringkv_node *n, uint64_t now, uint32_t event, rk_slice body, persisted *p) {
  rk_slice reply;
  int code = fz_call(n, RINGKV_OP_STEP, step_request(now, event, body), &reply);
  for (int i = 0; code == RINGKV_OK; i++) {
    collect(reply, p);
    if (!p->load || i == FZ_LOADS_MAX) break;
    code = fz_call(n, RINGKV_OP_STEP, step_request(now, 4, fz_slice(NULL, 0)), &reply);
  }
  return code;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  uint8_t mode = data[0] % 3;
  rk_slice rest = fz_slice(data + 1, size - 1);
  persisted p;
  memset(&p, 0, sizeof p);
  rk_arena_reset(fz_arena());
  ringkv_node *n = ringkv_node_create();
  FZ_CHECK(n != NULL, "ringkv_node_create");
  rk_slice none = {NULL, 0};
  int code = fz_call(n, RINGKV_OP_INIT,
                     mode == 0 ? init_request(rest, NULL, 0) : mode == 1 ? init_request(none, &rest, 1)
                                                                         : init_request(none, NULL, 0),
                     NULL);
  if (code != RINGKV_OK) {
    FZ_CHECK(mode != 2, "OP_INIT with the standard config");
    ringkv_node_destroy(n);
    return 0;
  }
  FZ_CHECK(step(n, FZ_NOW_MS, 8, none, &p) == RINGKV_OK, "the start step of an accepted node");
  if (mode == 2) {
    /* The fuzzed StepRequest as it is (its own now and random bits). */
    rk_slice reply;
    code = fz_call(n, RINGKV_OP_STEP, rest, &reply);
    for (int i = 0; code == RINGKV_OK; i++) {
      collect(reply, &p);
      if (!p.load || i == FZ_LOADS_MAX) break;
      code = fz_call(n, RINGKV_OP_STEP, step_request(FZ_NOW_MS, 4, none), &reply);
    }
  }
  /* Not wedged: the alarm a minute on runs. */
  FZ_CHECK(step(n, FZ_NOW_MS + 60000, 3, none, &p) == RINGKV_OK, "an alarm step after the input");
  ringkv_node_destroy(n);

  /* A restart from what the core asked to persist. */
  ringkv_node *m = ringkv_node_create();
  FZ_CHECK(m != NULL, "ringkv_node_create");
  FZ_CHECK(fz_call(m, RINGKV_OP_INIT, init_request(p.state, p.peers, p.npeers), NULL) == RINGKV_OK,
           "OP_INIT refuses the state and peer rows the core asked to persist");
  ringkv_node_destroy(m);
  return 0;
}
