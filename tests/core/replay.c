/* replay: runs a script of core calls through the native build, for the differential
 * test against the WebAssembly build (tests/core/wasm.test.mjs).
 * stdin: frames of (u32 node index, u32 op, u32 len, len bytes), little-endian.
 * stdout: for each frame, (i32 code, u32 len, len reply bytes). Nodes are created on
 * first use; their state lives for the whole script. */
#include <stdio.h>
#include <stdlib.h>

#include "ringkv.h"

static int read_u32(uint32_t *out) {
  uint8_t b[4];
  if (fread(b, 1, 4, stdin) != 4) return 0;
  *out = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
  return 1;
}

static void write_u32(uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  fwrite(b, 1, 4, stdout);
}

#define REPLAY_NODES_MAX 16u

int main(void) {
  ringkv_node *nodes[REPLAY_NODES_MAX] = {0};
  uint32_t index, op, len;
  while (read_u32(&index)) {
    if (!read_u32(&op) || !read_u32(&len) || index >= REPLAY_NODES_MAX) return 3;
    if (nodes[index] == NULL && (nodes[index] = ringkv_node_create()) == NULL) return 2;
    ringkv_node *node = nodes[index];
    uint8_t *req = malloc(len ? len : 1);
    if (req == NULL || fread(req, 1, len, stdin) != len) return 3;
    const uint8_t *reply = NULL;
    size_t reply_len = 0;
    int code = ringkv_call(node, op, req, len, &reply, &reply_len);
    write_u32((uint32_t)code);
    write_u32((uint32_t)reply_len);
    if (reply_len) fwrite(reply, 1, reply_len, stdout);
    free(req);
  }
  for (uint32_t i = 0; i < REPLAY_NODES_MAX; i++) ringkv_node_destroy(nodes[i]);
  return 0;
}
