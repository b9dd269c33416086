/* fuzz_request: every request decoder. The first byte picks the operation (mod 20, so the
 * unknown code 0 is covered too), the rest is the request message, sent to a
 * node initialised with the standard config. */
#include "fuzzlib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  ringkv_node *n = fz_begin();
  uint32_t op = data[0] % 20u;
  rk_slice req = fz_slice(data + 1, size - 1), reply;
  int code = fz_call(n, op, req, &reply);
  if (code == RINGKV_OK && op == RINGKV_OP_WRITE) fz_check_meta(fz_bytes_field(reply, 2));
  /* The node stays usable after whatever it was given. */
  fz_call(n, RINGKV_OP_PLACE, fz_slice(NULL, 0), NULL);
  fz_end(n);
  return 0;
}
