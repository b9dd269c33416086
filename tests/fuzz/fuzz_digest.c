/* fuzz_digest: the anti-entropy and collection decoders: DigestRequest (OP_AE_ANSWER),
 * DigestReply (OP_AE_COMPARE), GcQuery (OP_GC_ANSWER) and GcReply (OP_GC_DECIDE). */
#include "fuzzlib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ringkv_node *n = fz_begin();
  rk_slice msg = fz_slice(data, size);

  pb_enc e = fz_enc();
  pb_put_bytes(&e, 1, msg);
  fz_call(n, RINGKV_OP_AE_ANSWER, fz_result(&e), NULL);

  e = fz_enc();
  pb_put_bytes(&e, 1, msg);
  pb_put_uint(&e, 2, 64);
  fz_call(n, RINGKV_OP_AE_COMPARE, fz_result(&e), NULL);

  e = fz_enc();
  pb_put_bytes(&e, 1, msg);
  fz_call(n, RINGKV_OP_GC_ANSWER, fz_result(&e), NULL);

  /* GcDecideRequest{now, locals{key "x" (node 0 replicates it), meta: an all-tombstone
   * register}, replies}. */
  rk_sib s;
  memset(&s, 0, sizeof s);
  s.dot = (rk_dot){0, 1};
  s.hlc = UINT64_C(1) << 16;
  s.deleted = true;
  rk_dot vv[1] = {{0, 1}};
  rk_reg tomb = {&s, 1, {vv, 1, NULL, 0}};
  pb_enc me = fz_enc();
  rk_reg_encode(&me, &tomb, false);
  rk_slice meta = fz_result(&me);
  e = fz_enc();
  pb_put_uint(&e, 1, UINT64_C(100000000));
  size_t m = pb_begin(&e, 2);
  pb_put_bytes(&e, 1, fz_str("x"));
  pb_put_bytes(&e, 2, meta);
  pb_end(&e, m);
  pb_put_bytes_always(&e, 3, msg);
  fz_call(n, RINGKV_OP_GC_DECIDE, fz_result(&e), NULL);

  fz_end(n);
  return 0;
}
