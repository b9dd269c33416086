/* fuzz_digest: the anti-entropy and collection decoders: DigestRequest (OP_AE_ANSWER),
 * DigestReply (OP_AE_COMPARE; key ranges and their parts too), GcQuery (OP_GC_ANSWER, also
 * against a marker: the contexts it carries) and GcReply (OP_GC_DECIDE). */
#include "fuzzlib.h"
#include "range.h"

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

  /* Below shards (version 3): the message as a DigestRequest for ranges answered with
   * their parts, and as the reply to a request for three ranges' parts. */
  rk_parts parts[3];
  rk_range asked[3] = {rk_range_shard(3), rk_range_shard(17), {40, 0, 8}};
  memset(parts, 0, sizeof parts);
  parts[1].mask = 5;
  parts[1].counts[0] = 70;
  parts[1].counts[2] = 1;
  parts[1].digests[2] = 9;
  e = fz_enc();
  pb_put_bytes(&e, 1, msg);
  for (int i = 0; i < 3; i++) rk_parts_write(&e, 2, &parts[i]);
  fz_call(n, RINGKV_OP_AE_ANSWER, fz_result(&e), NULL);
  e = fz_enc();
  pb_put_bytes(&e, 1, msg);
  pb_put_uint(&e, 2, 64);
  for (int i = 0; i < 3; i++) rk_range_write(&e, 3, &asked[i]);
  for (int i = 0; i < 3; i++) rk_parts_write(&e, 4, &parts[i]);
  pb_put_uint(&e, 5, 64);
  pb_put_uint(&e, 6, 4096);
  pb_put_uint(&e, 7, 64);
  pb_put_uint(&e, 8, size);
  pb_put_uint(&e, 9, 4096);
  fz_call(n, RINGKV_OP_AE_COMPARE, fz_result(&e), NULL);

  e = fz_enc();
  pb_put_bytes(&e, 1, msg);
  fz_call(n, RINGKV_OP_GC_ANSWER, fz_result(&e), NULL);

  /* Answered where key "x" is a marker: the query's contexts are decoded and compared. */
  rk_dot mvv[2] = {{0, 1}, {1, 4}};
  rk_reg marker = {NULL, 0, {mvv, 2, NULL, 0}};
  pb_enc marker_enc = fz_enc();
  rk_reg_encode(&marker_enc, &marker, false);
  e = fz_enc();
  pb_put_bytes(&e, 1, msg);
  size_t mk = pb_begin(&e, 2);
  pb_put_bytes(&e, 1, fz_str("x"));
  pb_put_bytes(&e, 2, fz_result(&marker_enc));
  pb_end(&e, mk);
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
