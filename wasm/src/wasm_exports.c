/* wasm_exports.c: the WebAssembly boundary: one node per instance, and the four exports
 * worker/core.ts uses (see ringkv.h). Only the WASM build compiles this file. */
#include <stdlib.h>

#include "util.h"

static ringkv_node *node;
static uint8_t *input;
static size_t input_cap;
static const uint8_t *output;
static size_t output_len;

/* A core-owned input buffer, reused across calls and grown on demand. */
__attribute__((export_name("ringkv_wasm_input"))) uint8_t *ringkv_wasm_input(uint32_t len) {
  if (len > RINGKV_MESSAGE_BYTES_MAX) return NULL;
  if (len > input_cap || input == NULL) {
    size_t cap = len < 4096 ? 4096 : len;
    uint8_t *grown = realloc(input, cap);
    if (grown == NULL) return NULL;
    input = grown;
    input_cap = cap;
  }
  return input;
}

__attribute__((export_name("ringkv_wasm_call"))) int32_t ringkv_wasm_call(uint32_t op, uint32_t len) {
  output = NULL;
  output_len = 0;
  if (len > input_cap) return RINGKV_E_DECODE;
  if (node == NULL && (node = ringkv_node_create()) == NULL) return RINGKV_E_NOMEM;
  size_t n = 0;
  int rc = ringkv_call(node, op, input, len, &output, &n);
  output_len = n;
  return rc;
}

__attribute__((export_name("ringkv_wasm_output"))) const uint8_t *ringkv_wasm_output(void) { return output; }

__attribute__((export_name("ringkv_wasm_output_len"))) uint32_t ringkv_wasm_output_len(void) {
  return (uint32_t)output_len;
}
