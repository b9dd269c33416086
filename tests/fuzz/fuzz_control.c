/* fuzz_control: RingControl's control step (OP_CONTROL) over an untrusted persisted
 * ControlState (the input). Oracles: a state the step accepts yields a view whose ring
 * is valid, and a state it hands back to persist is accepted again with the same view.
 * Then the input as a node's LeaseRequest, against a first-start state and against one
 * that holds a block for every node: a request granted yields one whole block within the
 * counter space, above the block held, whose state is accepted again; a request refused
 * changes nothing. Then the input as a node's NodeProgress during a resize from 8 to 12:
 * accepted or refused, the ring stays valid, its epoch never falls, and a state handed back
 * is accepted again unchanged. */
#include "fuzzlib.h"

static int step_lease(ringkv_node *n, rk_slice state, bool secret_needed, const rk_slice *lease, rk_slice *reply) {
  uint8_t random[48];
  for (size_t i = 0; i < sizeof random; i++) random[i] = (uint8_t)(i * 31u + 7u);
  pb_enc e = fz_enc();
  pb_put_bytes(&e, 1, state);
  pb_put_uint(&e, 2, 8);
  pb_put_bytes(&e, 4, fz_slice(random, sizeof random));
  pb_put_bool(&e, 5, secret_needed);
  if (lease != NULL) pb_put_bytes_always(&e, 6, *lease);
  return fz_call(n, RINGKV_OP_CONTROL, fz_result(&e), reply);
}

static int step(ringkv_node *n, rk_slice state, bool secret_needed, rk_slice *reply) {
  return step_lease(n, state, secret_needed, NULL, reply);
}

static uint8_t *dup_slice(rk_slice s) {
  uint8_t *p = malloc(s.len ? s.len : 1);
  FZ_CHECK(p != NULL, "malloc");
  if (s.len) memcpy(p, s.ptr, s.len);
  return p;
}

/* The input as a LeaseRequest against `state` (copied by the caller). */
static void lease_case(ringkv_node *n, rk_slice state, rk_slice input) {
  rk_slice reply;
  /* The block each node held before, if any: LeaseReply of a request from it, not kept. */
  int code = step_lease(n, state, false, &input, &reply);
  if (code != RINGKV_OK) return;
  rk_slice lease = fz_bytes_field(reply, 4);
  uint64_t start = fz_u64(lease, 2), end = fz_u64(lease, 3);
  FZ_CHECK(start >= 1 && end == start + RINGKV_LEASE_BLOCK - 1u && end <= RINGKV_COUNTER_MAX, "one whole block");
  uint32_t node = (uint32_t)fz_u64(lease, 1);
  rk_slice saved = fz_bytes_field(reply, 1);
  FZ_CHECK(saved.len > 0, "a granted block is persisted");
  uint8_t *copy = dup_slice(saved);
  /* The state with the block is taken back, and the next block of that node lies above. */
  pb_enc e = fz_enc();
  pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
  pb_put_uint(&e, 2, node);
  rk_slice again = fz_result(&e);
  FZ_CHECK(step_lease(n, fz_slice(copy, saved.len), false, &again, &reply) == RINGKV_OK, "the state with a block");
  FZ_CHECK(fz_u64(fz_bytes_field(reply, 4), 2) == end + 1u || end + RINGKV_LEASE_BLOCK > RINGKV_COUNTER_MAX,
           "the next block follows");
  free(copy);
}

/* One resize-aware control step: a POST to `resize` (0: none), a progress (NULL: none). */
static int step_resize(ringkv_node *n, rk_slice state, uint32_t resize, const rk_slice *progress, rk_slice *reply) {
  uint8_t random[48] = {0};
  pb_enc e = fz_enc();
  pb_put_bytes(&e, 1, state);
  pb_put_uint(&e, 2, 8);
  pb_put_bytes(&e, 4, fz_slice(random, sizeof random));
  if (resize != 0) {
    size_t m = pb_begin(&e, 7);
    pb_put_uint(&e, 1, resize);
    pb_end(&e, m);
  }
  if (progress != NULL) pb_put_bytes_always(&e, 8, *progress);
  pb_put_uint(&e, 10, 3);
  pb_put_bool(&e, 12, true);
  pb_put_bool(&e, 17, true);
  return fz_call(n, RINGKV_OP_CONTROL, fz_result(&e), reply);
}

static void progress_case(ringkv_node *n, rk_slice held, rk_slice input) {
  rk_slice reply;
  FZ_CHECK(step_resize(n, held, 12, NULL, &reply) == RINGKV_OK, "a resize from 8 to 12");
  uint8_t *state = dup_slice(fz_bytes_field(reply, 1));
  size_t state_len = fz_bytes_field(reply, 1).len;
  uint64_t epoch = fz_u64(fz_bytes_field(fz_bytes_field(reply, 2), 1), 1);
  int code = step_resize(n, fz_slice(state, state_len), 0, &input, &reply);
  if (code == RINGKV_OK) {
    rk_slice ring = fz_bytes_field(fz_bytes_field(reply, 2), 1);
    FZ_CHECK(fz_u64(ring, 1) >= epoch, "the epoch never falls");
    uint32_t phase = (uint32_t)fz_u64(ring, 5);
    FZ_CHECK(phase <= 3, "a phase");
    /* One confirmation cannot pass the barrier of twelve nodes. */
    FZ_CHECK(fz_u64(ring, 1) == epoch && phase == 1, "one node never moves the transition on");
    rk_slice saved = fz_bytes_field(reply, 1);
    if (saved.len > 0) {
      uint8_t *copy = dup_slice(saved);
      FZ_CHECK(step_resize(n, fz_slice(copy, saved.len), 0, NULL, &reply) == RINGKV_OK, "the state is accepted");
      FZ_CHECK(fz_bytes_field(reply, 1).len == 0, "and stable");
      free(copy);
    }
  }
  free(state);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The control step needs no OP_INIT; fz_begin also resets the harness arena. */
  ringkv_node *n = fz_begin();
  rk_slice reply;
  for (int secret = 0; secret < 2; secret++) {
    if (step(n, fz_slice(data, size), secret == 1, &reply) != RINGKV_OK) continue;
    rk_slice view = fz_bytes_field(reply, 2);
    FZ_CHECK(fz_bytes_field(view, 2).len == RINGKV_CLUSTER_ID_BYTES, "cluster id of 16 bytes");
    FZ_CHECK(fz_bytes_field(view, 1).len > 0, "a ring");
    rk_slice saved = fz_bytes_field(reply, 1);
    if (saved.len == 0) continue;
    /* Copy out: the reply lives in the node's arena until the next call. */
    uint8_t *copy = malloc(saved.len);
    FZ_CHECK(copy != NULL, "malloc");
    memcpy(copy, saved.ptr, saved.len);
    size_t view_len = view.len;
    uint8_t *view_copy = malloc(view_len);
    FZ_CHECK(view_copy != NULL, "malloc");
    memcpy(view_copy, view.ptr, view_len);
    FZ_CHECK(step(n, fz_slice(copy, saved.len), secret == 1, &reply) == RINGKV_OK, "persisted state accepted");
    FZ_CHECK(fz_bytes_field(reply, 1).len == 0, "a persisted state is stable");
    rk_slice again = fz_bytes_field(reply, 2);
    FZ_CHECK(again.len == view_len && memcmp(again.ptr, view_copy, view_len) == 0, "same view");
    free(copy);
    free(view_copy);
  }
  /* The input as a LeaseRequest: at first start, and with a block held by every node. */
  lease_case(n, fz_slice(NULL, 0), fz_slice(data, size));
  rk_slice none = {NULL, 0};
  FZ_CHECK(step(n, none, false, &reply) == RINGKV_OK, "first start");
  uint8_t *state = dup_slice(fz_bytes_field(reply, 1));
  size_t state_len = fz_bytes_field(reply, 1).len;
  for (uint32_t id = 0; id < 8; id++) {
    pb_enc e = fz_enc();
    pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
    pb_put_uint(&e, 2, id);
    rk_slice req = fz_result(&e);
    FZ_CHECK(step_lease(n, fz_slice(state, state_len), false, &req, &reply) == RINGKV_OK, "a first lease");
    rk_slice next = fz_bytes_field(reply, 1);
    free(state);
    state = dup_slice(next);
    state_len = next.len;
  }
  lease_case(n, fz_slice(state, state_len), fz_slice(data, size));
  progress_case(n, fz_slice(state, state_len), fz_slice(data, size));
  free(state);
  fz_end(n);
  return 0;
}
