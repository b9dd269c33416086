/* fuzz_push: the gossip decoder (Push), through OP_MESSAGE_KEYS and OP_MERGE. When the
 * message names keys, it is merged again with those keys loaded (in turn: a register whose
 * context has seen more than it holds, absent, two concurrent siblings), as the Durable
 * Object would. Every applied key's new metadata must read back. */
#include "fuzzlib.h"

#define FZ_LOCALS_MAX 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ringkv_node *n = fz_begin();
  rk_slice msg = fz_slice(data, size), reply;

  pb_enc e = fz_enc();
  pb_put_bytes(&e, 1, msg);
  rk_slice keys_reply = {NULL, 0};
  int keys_code = fz_call(n, RINGKV_OP_MESSAGE_KEYS, fz_result(&e), &reply);
  if (keys_code == RINGKV_OK) {
    /* Copy: the reply lives only until the next call. */
    uint8_t *copy = rk_alloc(fz_arena(), reply.len ? reply.len : 1);
    FZ_CHECK(copy != NULL, "harness arena");
    if (reply.len) memcpy(copy, reply.ptr, reply.len);
    keys_reply = fz_slice(copy, reply.len);
  }

  e = fz_enc();
  pb_put_uint(&e, 1, FZ_NOW_MS);
  pb_put_bytes(&e, 2, msg);
  if (fz_call(n, RINGKV_OP_MERGE, fz_result(&e), &reply) == RINGKV_OK) {
    /* Every applied key's new metadata must read back. */
    pb_rd r = {reply.ptr, reply.ptr + reply.len};
    if (reply.len == 0) r.p = r.end = NULL;
    uint32_t f, wt;
    rk_slice applied;
    while (pb_next(&r, &f, &wt) == 1) {
      if (f == 2 && wt == PB_LEN && pb_get_bytes(&r, wt, &applied)) {
        fz_check_meta(fz_bytes_field(applied, 3));
      } else if (!pb_skip(&r, wt)) {
        break;
      }
    }
  }

  if (keys_code == RINGKV_OK && keys_reply.len != 0) {
    /* MergeRequest{now, message, locals: one per key of MessageKeysReply}. */
    rk_slice metas[3] = {fz_sample_meta_seen(fz_arena()), {NULL, 0}, fz_sample_meta(fz_arena())};
    e = fz_enc();
    pb_put_uint(&e, 1, FZ_NOW_MS);
    pb_put_bytes(&e, 2, msg);
    pb_rd r = {keys_reply.ptr, keys_reply.ptr + keys_reply.len};
    uint32_t f, wt;
    rk_slice key;
    unsigned i = 0;
    while (pb_next(&r, &f, &wt) == 1 && i < FZ_LOCALS_MAX) {
      if (f == 2 && wt == PB_LEN && pb_get_bytes(&r, wt, &key)) {
        size_t m = pb_begin(&e, 3);
        pb_put_bytes_always(&e, 1, key);
        pb_put_bytes(&e, 2, metas[i % 3]);
        pb_end(&e, m);
        i++;
      } else if (!pb_skip(&r, wt)) {
        break;
      }
    }
    if (fz_call(n, RINGKV_OP_MERGE, fz_result(&e), &reply) == RINGKV_OK) {
      pb_rd rr = {reply.ptr, reply.ptr + reply.len};
      if (reply.len == 0) rr.p = rr.end = NULL;
      rk_slice applied;
      while (pb_next(&rr, &f, &wt) == 1) {
        if (f == 2 && wt == PB_LEN && pb_get_bytes(&rr, wt, &applied)) {
          fz_check_meta(fz_bytes_field(applied, 3));
        } else if (!pb_skip(&rr, wt)) {
          break;
        }
      }
    }
  }
  fz_end(n);
  return 0;
}
