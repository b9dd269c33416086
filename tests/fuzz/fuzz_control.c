/* fuzz_control: RingControl's control step (OP_CONTROL) over an untrusted persisted
 * ControlState (the input). Oracles: a state the step accepts yields a view whose ring
 * is valid, and a state it hands back to persist is accepted again with the same view. */
#include "fuzzlib.h"

static int step(ringkv_node *n, rk_slice state, bool secret_needed, rk_slice *reply) {
  uint8_t random[48];
  for (size_t i = 0; i < sizeof random; i++) random[i] = (uint8_t)(i * 31u + 7u);
  pb_enc e = fz_enc();
  pb_put_bytes(&e, 1, state);
  pb_put_uint(&e, 2, 8);
  pb_put_bytes(&e, 4, fz_slice(random, sizeof random));
  pb_put_bool(&e, 5, secret_needed);
  return fz_call(n, RINGKV_OP_CONTROL, fz_result(&e), reply);
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
  fz_end(n);
  return 0;
}
