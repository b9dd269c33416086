/* replay: replays the core calls one Durable Object recorded (RECORD_STEPS, FAULTS only)
 * through the native core and checks each reply, byte for byte, and each return code.
 *
 * Input (one node per file), one call per line:  <op> <code> <request hex> <reply hex>
 * (an empty field is "-"). An OP_INIT line starts a new instance, as the Durable Object
 * does when it (re)builds its core.
 *
 * Output: one line "replay: N calls (S steps, I inits), M mismatched", exit 1 when M > 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringkv.h"

static size_t unhex(const char *s, unsigned char **out) {
  if (strcmp(s, "-") == 0) {
    *out = NULL;
    return 0;
  }
  size_t n = strlen(s) / 2;
  unsigned char *b = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    sscanf(s + 2 * i, "%2x", &v);
    b[i] = (unsigned char)v;
  }
  *out = b;
  return n;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: replay FILE\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "r");
  if (f == NULL) {
    perror(argv[1]);
    return 2;
  }
  ringkv_node *node = NULL;
  size_t calls = 0, steps = 0, inits = 0, bad = 0, cap = 1u << 20, lineno = 0;
  char *line = malloc(cap);
  ssize_t len;
  while ((len = getline(&line, &cap, f)) > 0) {
    lineno++;
    if (line[len - 1] == '\n') line[len - 1] = 0;
    char *op_s = strtok(line, " "), *code_s = strtok(NULL, " "), *req_s = strtok(NULL, " "), *rep_s = strtok(NULL, " ");
    if (op_s == NULL || code_s == NULL || req_s == NULL || rep_s == NULL) continue;
    unsigned op = (unsigned)atoi(op_s);
    int want_code = atoi(code_s);
    unsigned char *req, *want;
    size_t req_len = unhex(req_s, &req), want_len = unhex(rep_s, &want);
    if (op == RINGKV_OP_INIT) {
      ringkv_node_destroy(node);
      node = ringkv_node_create();
      inits++;
    }
    if (op == RINGKV_OP_STEP) steps++;
    calls++;
    const uint8_t *got;
    size_t got_len;
    int code = node == NULL ? -1 : ringkv_call(node, op, req, req_len, &got, &got_len);
    if (code != want_code || got_len != want_len || (want_len && memcmp(got, want, want_len) != 0)) {
      if (bad < 5) fprintf(stderr, "replay: line %zu: op %u gave code %d and %zu bytes, recorded %d and %zu\n", lineno, op, code, got_len, want_code, want_len);
      bad++;
    }
    free(req);
    free(want);
  }
  free(line);
  fclose(f);
  ringkv_node_destroy(node);
  printf("replay: %zu calls (%zu steps, %zu inits), %zu mismatched\n", calls, steps, inits, bad);
  return bad == 0 && calls > 0 ? 0 : 1;
}
