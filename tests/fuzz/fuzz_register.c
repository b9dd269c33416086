/* fuzz_register: the stored-register decoder, through OP_READ and OP_WRITE (the input is a
 * key row's metadata), plus the decoder's own round trip: whatever rk_reg_decode accepts
 * re-encodes canonically, decodes again to the same bytes, and merges idempotently. */
#include "fuzzlib.h"

static void check_round_trip(const uint8_t *data, size_t size) {
  rk_arena a;
  rk_arena_init(&a);
  rk_reg r, back, m;
  if (rk_reg_decode(&a, fz_slice(data, size), &r) == RINGKV_OK) {
    for (int with_values = 0; with_values <= 1; with_values++) {
      pb_enc e;
      pb_enc_init(&e, &a);
      rk_reg_encode(&e, &r, with_values);
      FZ_CHECK(e.err == 0, "encode of a decoded register");
      rk_slice once = pb_result(&e);
      FZ_CHECK(rk_reg_decode(&a, once, &back) == RINGKV_OK, "canonical bytes do not decode");
      pb_enc e2;
      pb_enc_init(&e2, &a);
      rk_reg_encode(&e2, &back, with_values);
      FZ_CHECK(e2.err == 0 && rk_slice_eq(pb_result(&e2), once), "encoding is not a fixed point");
    }
    FZ_CHECK(rk_reg_merge(&a, &r, &r, &m) == RINGKV_OK, "merge(r, r)");
    pb_enc e1, e2;
    pb_enc_init(&e1, &a);
    pb_enc_init(&e2, &a);
    rk_reg_encode(&e1, &r, true);
    rk_reg_encode(&e2, &m, true);
    FZ_CHECK(rk_slice_eq(pb_result(&e1), pb_result(&e2)), "merge(r, r) != r");
    int w = rk_reg_winner(&r);
    FZ_CHECK((w < 0) == (r.sibs_len == 0), "winner of a non-empty register");
  }
  rk_arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_round_trip(data, size);

  ringkv_node *n = fz_begin();
  rk_slice input = fz_slice(data, size), reply;

  pb_enc e = fz_enc();
  pb_put_bytes(&e, 1, fz_str("k"));
  pb_put_bytes(&e, 2, input);
  fz_call(n, RINGKV_OP_READ, fz_result(&e), NULL);

  /* A blind PUT over the stored register. */
  e = fz_enc();
  pb_put_uint(&e, 1, FZ_NOW_MS);
  pb_put_bytes(&e, 2, fz_str("k"));
  pb_put_bytes(&e, 3, input);
  pb_put_bytes(&e, 6, fz_str("v"));
  if (fz_call(n, RINGKV_OP_WRITE, fz_result(&e), &reply) == RINGKV_OK) {
    fz_check_meta(fz_bytes_field(reply, 2));
  }

  /* A DELETE of an expired row. */
  e = fz_enc();
  pb_put_uint(&e, 1, FZ_NOW_MS);
  pb_put_bytes(&e, 2, fz_str("k"));
  pb_put_bytes(&e, 3, input);
  pb_put_bool(&e, 8, true);
  pb_put_bool(&e, 9, true);
  if (fz_call(n, RINGKV_OP_WRITE, fz_result(&e), &reply) == RINGKV_OK) {
    fz_check_meta(fz_bytes_field(reply, 2));
  }

  fz_end(n);
  return 0;
}
