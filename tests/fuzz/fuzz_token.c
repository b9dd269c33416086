/* fuzz_token: the context-token decoder, through OP_WRITE with has_token (the input is the
 * Token payload the shim authenticated), over an absent key and over a stored register with
 * two siblings, so that coverage decisions run too. */
#include "fuzzlib.h"

static void write_with_token(ringkv_node *n, rk_slice meta, rk_slice token, bool deleted) {
  pb_enc e = fz_enc();
  pb_put_uint(&e, 1, FZ_NOW_MS);
  pb_put_bytes(&e, 2, fz_str("k"));
  pb_put_bytes(&e, 3, meta);
  pb_put_bool(&e, 4, true);
  pb_put_bytes(&e, 5, token);
  if (!deleted) pb_put_bytes(&e, 6, fz_str("v"));
  pb_put_bool(&e, 8, deleted);
  rk_slice reply;
  if (fz_call(n, RINGKV_OP_WRITE, fz_result(&e), &reply) == RINGKV_OK) {
    fz_check_meta(fz_bytes_field(reply, 2));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ringkv_node *n = fz_begin();
  rk_slice token = fz_slice(data, size);
  write_with_token(n, fz_slice(NULL, 0), token, false);
  rk_slice meta = fz_sample_meta(fz_arena());
  write_with_token(n, meta, token, false);
  write_with_token(n, meta, token, true);
  fz_end(n);
  return 0;
}
