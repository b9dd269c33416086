/* fuzz_report: RingControl's report decoders (OP_REPORT, both calls, and OP_CLUSTER) on a
 * placement-only instance. The input is a NodeReport, then (after a 2-byte length) the
 * ReportLoaded of the second call. Oracles: an accepted report names a node of the ring;
 * its second call keeps the disagreeing count within the shards; the summary it hands back
 * is accepted by OP_CLUSTER, as are the cluster request's node statuses. */
#include "fuzzlib.h"

static ringkv_node *control_node(void) {
  ringkv_node *n = fz_begin();
  pb_enc e = fz_enc();
  fz_put_config(&e, 1);
  pb_put_bool(&e, 7, true);
  FZ_CHECK(fz_call(n, RINGKV_OP_INIT, fz_result(&e), NULL) == RINGKV_OK, "placement-only init");
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t report_len = ((size_t)data[0] << 8 | data[1]) % (size - 1);
  rk_slice report = fz_slice(data + 2, RK_MIN(report_len, size - 2));
  rk_slice loaded = fz_slice(data + 2 + report.len, size - 2 - report.len);
  ringkv_node *n = control_node();
  rk_slice reply;
  pb_enc e = fz_enc();
  pb_put_bytes(&e, 1, report);
  if (fz_call(n, RINGKV_OP_REPORT, fz_result(&e), &reply) == RINGKV_OK) {
    rk_slice load = fz_bytes_field(reply, 1);
    pb_rd r = pb_reader(load);
    uint32_t f, wt;
    uint64_t node = 0;
    while (pb_next(&r, &f, &wt) == 1) {
      if (f == 1 && wt == PB_VARINT) pb_get_u64(&r, wt, &node);
      else pb_skip(&r, wt);
    }
    FZ_CHECK(node < 8, "a report of a node of the ring");
    pb_enc e2 = fz_enc();
    pb_put_bytes(&e2, 1, report);
    pb_put_bytes_always(&e2, 2, loaded);
    if (fz_call(n, RINGKV_OP_REPORT, fz_result(&e2), &reply) == RINGKV_OK) {
      rk_slice summary = fz_bytes_field(reply, 3);
      uint8_t *copy = malloc(summary.len ? summary.len : 1);
      FZ_CHECK(copy != NULL, "malloc");
      if (summary.len) memcpy(copy, summary.ptr, summary.len);
      pb_enc q = fz_enc();
      size_t m = pb_begin(&q, 1);
      pb_put_uint(&q, 1, node);
      pb_put_bytes(&q, 2, fz_slice(copy, summary.len));
      pb_end(&q, m);
      FZ_CHECK(fz_call(n, RINGKV_OP_CLUSTER, fz_result(&q), &reply) == RINGKV_OK, "a summary OP_REPORT made is read");
      free(copy);
    }
  }
  /* The input as a ClusterRequest too: any answer, never a trap. */
  fz_call(n, RINGKV_OP_CLUSTER, fz_slice(data, size), NULL);
  fz_end(n);
  return 0;
}
