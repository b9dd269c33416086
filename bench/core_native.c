/* core_native: times the native core on the same request bytes the WASM benchmark uses
 * (bench/core.mjs writes them). argv[1]: frames of (u32 op, u32 len, bytes), LE.
 * argv[2]: seconds per frame. Prints one JSON line per frame: {"op":N,"ops_per_s":X}.
 * Every frame runs on one node that first replays the setup frames (op with the high
 * bit set: run once, not timed). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ringkv.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  FILE *f = fopen(argv[1], "rb");
  if (f == NULL) return 2;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc((size_t)size);
  if (buf == NULL || fread(buf, 1, (size_t)size, f) != (size_t)size) return 2;
  fclose(f);
  double seconds = atof(argv[2]);
  ringkv_node *node = ringkv_node_create();
  if (node == NULL) return 2;
  const uint8_t *reply;
  size_t reply_len;
  for (long pos = 0; pos + 8 <= size;) {
    uint32_t op = le32(buf + pos), len = le32(buf + pos + 4);
    const uint8_t *req = buf + pos + 8;
    pos += 8 + (long)len;
    if (op & 0x80000000u) {
      if (ringkv_call(node, op & 0x7fffffffu, req, len, &reply, &reply_len) != RINGKV_OK) return 3;
      continue;
    }
    uint64_t calls = 0;
    double start = now_s(), end = start + seconds, t = start;
    while (t < end) {
      for (int i = 0; i < 256; i++) {
        if (ringkv_call(node, op, req, len, &reply, &reply_len) != RINGKV_OK) return 4;
      }
      calls += 256;
      t = now_s();
    }
    printf("{\"op\":%u,\"ops_per_s\":%.0f}\n", op, (double)calls / (t - start));
  }
  ringkv_node_destroy(node);
  return 0;
}
