/* fuzz_step: the node step's decoders (StepRequest and every event in it, StepState,
 * PeerState), as an executor would hand them in. The first byte picks what the rest is:
 *   0: the StepState given to OP_INIT (InitRequest.state), then the start and an alarm;
 *   1: one PeerState given to OP_INIT (InitRequest.peers), then the start and an alarm;
 *   2: a StepRequest to a started node, then, as an executor must, `loaded` (empty) for
 *      as long as a reply asks for a load, then an alarm.
 * Bit 4 of the first byte turns the node's reports to RingControl on (Config.reports), bit 5
 * its dot leases and catch-up (Config.leases: the node starts with no state, so it asks
 * for a lease at start); with bit 5 and bit 6, mode 2 instead answers the start's lease
 * request with a LeaseReply overridden by the first half of the rest (so it often grants a
 * block and says the storage was lost), then every catch-up page asked with a CatchupReply
 * overridden by the second half (as a real executor would, `loaded` with the rows asked):
 * every step must succeed (a bad answer is refused and counted, never a failed step).
 * Oracles: whatever a node accepted must not wedge it (the next alarm step succeeds, and
 * its reply frames), and the state and peer rows the core asks to persist must be taken
 * back by OP_INIT on a fresh node (a restart never fails on the node's own state). */
#include "fuzzlib.h"

#define FZ_LOADS_MAX 8
#define FZ_TAGS_MAX 256

/* Whether the node reports to RingControl (Config.reports): bit 4 of the first byte; and
 * leases (Config.leases): bit 5. */
static bool fz_reports, fz_leases;

/* InitRequest{config, node{node 0}, [state], [peers]}. */
static rk_slice init_request(rk_slice state, const rk_slice *peers, size_t npeers) {
  pb_enc e = fz_enc();
  if (fz_reports || fz_leases) {
    pb_enc c = fz_enc();
    fz_put_config(&c, 1);
    rk_slice cs = fz_result(&c);
    pb_rd r = pb_reader(cs);
    uint32_t f, wt;
    rk_slice inner = {NULL, 0};
    if (pb_next(&r, &f, &wt) == 1) pb_get_bytes(&r, wt, &inner);
    size_t m = pb_begin(&e, 1);
    pb_put_raw(&e, inner.ptr, inner.len);
    pb_put_bool(&e, 20, fz_reports);
    pb_put_bool(&e, 30, fz_leases);
    pb_end(&e, m);
  } else {
    fz_put_config(&e, 1);
  }
  size_t m = pb_begin(&e, 2);
  pb_put_uint(&e, 1, 0);
  pb_end(&e, m);
  pb_put_bytes(&e, 4, state);
  for (size_t i = 0; i < npeers; i++) pb_put_bytes_always(&e, 5, peers[i]);
  return fz_result(&e);
}

/* StepRequest{now, random, <event field> = body or true}. */
static rk_slice step_request(uint64_t now, uint32_t event, rk_slice body) {
  pb_enc e = fz_enc();
  pb_put_uint(&e, 1, now);
  pb_put_uint(&e, 2, UINT64_C(0x9e3779b97f4a7c15));
  if (event == 3 || event == 8) pb_put_uint(&e, event, 1);
  else pb_put_bytes_always(&e, event, body);
  return fz_result(&e);
}

/* The state and peer rows of a StepReply, copied (a reply lives until the next call). */
typedef struct {
  rk_slice state;
  rk_slice peers[64];
  size_t npeers;
  int load;
} persisted;

static void collect(rk_slice reply, persisted *p) {
  pb_rd r = pb_reader(reply);
  uint32_t f, wt;
  rk_slice v;
  p->load = 0;
  while (pb_next(&r, &f, &wt) == 1) {
    if (wt == PB_LEN && (f == 1 || f == 4 || f == 5)) {
      FZ_CHECK(pb_get_bytes(&r, wt, &v), "StepReply field does not parse");
      uint8_t *copy = rk_alloc(fz_arena(), v.len ? v.len : 1);
      FZ_CHECK(copy != NULL, "harness arena");
      if (v.len) memcpy(copy, v.ptr, v.len);
      rk_slice c = fz_slice(copy, v.len);
      if (f == 1) p->load = 1;
      else if (f == 5 && v.len) p->state = c;
      else if (f == 4 && p->npeers < sizeof p->peers / sizeof p->peers[0]) p->peers[p->npeers++] = c;
    } else if (!pb_skip(&r, wt)) {
      break;
    }
  }
}

/* One step, then `loaded` while the replies ask for loads; the persisted rows collected. */
static int step(ringkv_node *n, uint64_t now, uint32_t event, rk_slice body, persisted *p) {
  rk_slice reply;
  int code = fz_call(n, RINGKV_OP_STEP, step_request(now, event, body), &reply);
  for (int i = 0; code == RINGKV_OK; i++) {
    collect(reply, p);
    if (!p->load || i == FZ_LOADS_MAX) break;
    code = fz_call(n, RINGKV_OP_STEP, step_request(now, 4, fz_slice(NULL, 0)), &reply);
  }
  return code;
}

/* The tags of a StepReply's sends, appended to `tags`. */
static void collect_tags(rk_slice reply, uint32_t *tags, size_t *n) {
  pb_rd r = pb_reader(reply);
  uint32_t f, wt;
  rk_slice send;
  while (pb_next(&r, &f, &wt) == 1) {
    if (f != 6 || wt != PB_LEN) {
      if (!pb_skip(&r, wt)) break;
      continue;
    }
    FZ_CHECK(pb_get_bytes(&r, wt, &send), "StepReply.sends does not parse");
    pb_rd t = pb_reader(send);
    uint32_t g, gw;
    rk_slice target;
    while (pb_next(&t, &g, &gw) == 1) {
      if (g == 3 && gw == PB_LEN && pb_get_bytes(&t, gw, &target)) {
        pb_rd q = pb_reader(target);
        uint32_t h, hw;
        uint64_t v;
        while (pb_next(&q, &h, &hw) == 1) {
          if (h == 2 && hw == PB_VARINT && pb_get_u64(&q, hw, &v)) {
            if (*n < FZ_TAGS_MAX) tags[(*n)++] = (uint32_t)v;
          } else if (!pb_skip(&q, hw)) {
            break;
          }
        }
      } else if (!pb_skip(&t, gw)) {
        break;
      }
    }
  }
}

/* Loaded{changed: Candidate{Local{key, meta, values: (dot, value)}, seq, from_client}} for
 * the row of a client write's StepReply. */
static rk_slice loaded_from_write(rk_slice reply, rk_slice key, rk_slice value) {
  rk_slice row = fz_bytes_field(reply, 2), applied = fz_bytes_field(row, 1), put = fz_bytes_field(applied, 6);
  uint64_t seq = 0;
  pb_rd r = pb_reader(row);
  uint32_t f, wt;
  while (pb_next(&r, &f, &wt) == 1) {
    if (f == 3 && wt == PB_VARINT) FZ_CHECK(pb_get_u64(&r, wt, &seq), "RowWrite.seq");
    else if (!pb_skip(&r, wt)) break;
  }
  pb_enc e = fz_enc();
  size_t c = pb_begin(&e, 4);
  size_t l = pb_begin(&e, 1);
  pb_put_bytes(&e, 1, key);
  pb_put_bytes(&e, 2, fz_bytes_field(applied, 3));
  size_t v = pb_begin(&e, 3);
  pb_put_bytes(&e, 1, fz_bytes_field(put, 1));
  pb_put_bytes(&e, 2, value);
  pb_end(&e, v);
  pb_end(&e, l);
  pb_put_uint(&e, 2, seq);
  pb_put_bool(&e, 3, true);
  pb_end(&e, c);
  return fz_result(&e);
}

/* Answer{tag, answered, refused}. */
static rk_slice answer(uint32_t tag, int outcome) {
  pb_enc e = fz_enc();
  pb_put_uint(&e, 1, tag);
  if (outcome == 0) pb_put_bool(&e, 3, true);
  if (outcome == 2) pb_put_bytes(&e, 4, fz_str("malformed"));
  if (outcome == 3) pb_put_bytes(&e, 4, fz_str("protocol_version"));
  return fz_result(&e);
}

/* The sends of a StepReply: tag, kind, peer and (catch-up pages) shard. */
typedef struct {
  uint32_t tag, kind, peer, shard;
} fz_send;
static fz_send fz_sends[FZ_TAGS_MAX];
static size_t fz_nsends;

static void collect_sends(rk_slice reply) {
  pb_rd r = pb_reader(reply);
  uint32_t f, wt;
  rk_slice send;
  while (pb_next(&r, &f, &wt) == 1) {
    if (f != 6 || wt != PB_LEN) {
      if (!pb_skip(&r, wt)) break;
      continue;
    }
    FZ_CHECK(pb_get_bytes(&r, wt, &send), "StepReply.sends does not parse");
    rk_slice target = fz_bytes_field(send, 3);
    if (fz_nsends == FZ_TAGS_MAX) continue;
    fz_send *s = &fz_sends[fz_nsends++];
    s->kind = (uint32_t)fz_u64(send, 1);
    s->tag = (uint32_t)fz_u64(target, 2);
    s->peer = (uint32_t)fz_u64(target, 1);
    s->shard = (uint32_t)fz_u64(fz_bytes_field(send, 2), 3);
  }
}

/* The `loaded` an executor answers a StepReply's load with, for key loads (every key
 * absent); other loads empty. */
static rk_slice loaded_for(rk_slice reply) {
  rk_slice load = fz_bytes_field(reply, 1);
  pb_enc e = fz_enc();
  pb_rd r = pb_reader(load);
  uint32_t f, wt;
  rk_slice key;
  while (pb_next(&r, &f, &wt) == 1) {
    if (f == 1 && wt == PB_LEN && pb_get_bytes(&r, wt, &key)) {
      size_t m = pb_begin(&e, 1);
      pb_put_bytes(&e, 1, key);
      pb_end(&e, m);
    } else if (!pb_skip(&r, wt)) {
      break;
    }
  }
  return fz_result(&e);
}

/* An answer step and the `loaded` chain it asks for; every step must succeed. */
static void answer_chain(ringkv_node *n, uint64_t now, rk_slice ans, persisted *p) {
  rk_slice reply;
  int code = fz_call(n, RINGKV_OP_STEP, step_request(now, 5, ans), &reply);
  FZ_CHECK(code == RINGKV_OK, "an answer step failed");
  for (int hop = 0;; hop++) {
    collect(reply, p);
    collect_sends(reply);
    if (!p->load || hop == FZ_LOADS_MAX) break;
    code = fz_call(n, RINGKV_OP_STEP, step_request(now, 4, loaded_for(reply)), &reply);
    FZ_CHECK(code == RINGKV_OK, "a loaded step after an answer failed");
  }
}

/* A key node 0 serves (a client write elsewhere is refused: RINGKV_E_NOT_SERVING). */
static rk_slice served_key(ringkv_node *n) {
  static char text[32];
  for (int i = 0; i < 1000; i++) {
    int len = snprintf(text, sizeof text, "scripted/key-%d", i);
    rk_slice key = {(const uint8_t *)text, (size_t)len};
    pb_enc q = fz_enc();
    pb_put_bytes(&q, 1, key);
    rk_slice reply;
    if (fz_call(n, RINGKV_OP_PLACE, fz_result(&q), &reply) != RINGKV_OK) continue;
    /* Placement{shard = 1, replicas = 2 (packed)} inside field 1. */
    pb_rd r = pb_reader(reply);
    uint32_t f, wt;
    rk_slice placement = {NULL, 0};
    while (pb_next(&r, &f, &wt) == 1) {
      if (f == 1) pb_get_bytes(&r, wt, &placement);
      else pb_skip(&r, wt);
    }
    pb_rd p = pb_reader(placement);
    while (pb_next(&p, &f, &wt) == 1) {
      if (f != 2 || wt != PB_LEN) {
        pb_skip(&p, wt);
        continue;
      }
      rk_slice packed;
      pb_get_bytes(&p, wt, &packed);
      pb_rd v = pb_reader(packed);
      uint32_t node;
      while (!pb_done(&v) && pb_get_u32(&v, PB_VARINT, &node)) {
        if (node == 0) return key;
      }
    }
  }
  return fz_str("scripted/key");
}

/* Mode 2 with bits 5 and 6: RingControl's and the replicas' answers, fuzzed. */
static void lease_script(ringkv_node *n, rk_slice rest, persisted *p) {
  size_t half = rest.len / 2;
  rk_slice a = fz_slice(rest.ptr, half), b = fz_slice(rest.len ? rest.ptr + half : NULL, rest.len - half);
  uint64_t now = FZ_NOW_MS;
  size_t done = 0;
  for (int i = 0; done < fz_nsends && i < 64; i++) {
    fz_send s = fz_sends[done++];
    pb_enc e = fz_enc();
    if (s.kind == 5) {
      pb_put_uint(&e, 1, 0);
      pb_put_uint(&e, 2, 1);
      pb_put_uint(&e, 3, RINGKV_LEASE_BLOCK);
      pb_put_bool(&e, 4, a.len == 0 || (a.ptr[0] & 1u) == 0);
      pb_put_raw(&e, a.ptr, a.len);
    } else if (s.kind == 6) {
      pb_put_uint(&e, 1, RINGKV_PROTOCOL_VERSION);
      pb_put_uint(&e, 2, s.peer);
      pb_put_uint(&e, 3, s.shard);
      pb_put_bool(&e, 4, (i & 1) == 0);
      pb_put_raw(&e, b.ptr, b.len);
    } else {
      continue;
    }
    pb_enc ans = fz_enc();
    pb_put_uint(&ans, 1, s.tag);
    pb_put_bytes(&ans, 2, fz_result(&e));
    pb_put_bool(&ans, 3, true);
    answer_chain(n, now, fz_result(&ans), p);
  }
}

/* Mode 3: the script. Every step must succeed, whatever order the outcomes come in. */
static void script(ringkv_node *n, rk_slice ops, persisted *p) {
  /* With leases, the start's lease request is granted first (its storage not lost). */
  for (size_t i = 0, len = fz_nsends; i < len; i++) {
    if (fz_sends[i].kind != 5) continue;
    pb_enc e = fz_enc();
    pb_put_uint(&e, 2, 1);
    pb_put_uint(&e, 3, RINGKV_LEASE_BLOCK);
    pb_enc ans = fz_enc();
    pb_put_uint(&ans, 1, fz_sends[i].tag);
    pb_put_bytes(&ans, 2, fz_result(&e));
    pb_put_bool(&ans, 3, true);
    answer_chain(n, FZ_NOW_MS, fz_result(&ans), p);
  }
  rk_slice key = served_key(n), value = fz_str("v");
  pb_enc w = fz_enc();
  pb_put_bytes(&w, 2, key);
  pb_put_bytes(&w, 6, value);
  pb_put_bytes(&w, 7, fz_str("text/plain"));
  rk_slice reply;
  FZ_CHECK(fz_call(n, RINGKV_OP_STEP, step_request(FZ_NOW_MS, 6, fz_result(&w)), &reply) == RINGKV_OK,
           "a client write");
  rk_slice loaded = loaded_from_write(reply, key, value);
  uint32_t tags[FZ_TAGS_MAX];
  size_t ntags = 0;
  uint64_t now = FZ_NOW_MS;
  for (size_t i = 0; i < ops.len && i < 512; i++) {
    uint8_t b = ops.ptr[i];
    int code;
    if ((b & 7u) == 0 || ntags == 0) {
      now += 1000u + (b >> 3);
      code = fz_call(n, RINGKV_OP_STEP, step_request(now, 3, fz_slice(NULL, 0)), &reply);
      for (int hop = 0; code == RINGKV_OK; hop++) {
        collect(reply, p);
        collect_tags(reply, tags, &ntags);
        if (!p->load || hop == FZ_LOADS_MAX) break;
        code = fz_call(n, RINGKV_OP_STEP, step_request(now, 4, hop == 0 ? loaded : fz_slice(NULL, 0)), &reply);
      }
    } else {
      code = fz_call(n, RINGKV_OP_STEP, step_request(now, 5, answer(tags[(b >> 3) % ntags], (b & 7u) % 4)), &reply);
      if (code == RINGKV_OK) {
        collect(reply, p);
        collect_tags(reply, tags, &ntags);
        for (int hop = 0; code == RINGKV_OK && p->load && hop < FZ_LOADS_MAX; hop++) {
          code = fz_call(n, RINGKV_OP_STEP, step_request(now, 4, fz_slice(NULL, 0)), &reply);
          if (code == RINGKV_OK) {
            collect(reply, p);
            collect_tags(reply, tags, &ntags);
          }
        }
      }
    }
    FZ_CHECK(code == RINGKV_OK, "a scripted step failed");
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  uint8_t mode = data[0] % 4;
  fz_reports = (data[0] & 0x10) != 0;
  fz_leases = (data[0] & 0x20) != 0;
  bool lease_answers = fz_leases && (data[0] & 0x40) != 0;
  fz_nsends = 0;
  rk_slice rest = fz_slice(data + 1, size - 1);
  persisted p;
  memset(&p, 0, sizeof p);
  rk_arena_reset(fz_arena());
  ringkv_node *n = ringkv_node_create();
  FZ_CHECK(n != NULL, "ringkv_node_create");
  rk_slice none = {NULL, 0};
  int code = fz_call(n, RINGKV_OP_INIT,
                     mode == 0 ? init_request(rest, NULL, 0) : mode == 1 ? init_request(none, &rest, 1)
                                                                         : init_request(none, NULL, 0),
                     NULL);
  if (code != RINGKV_OK) {
    FZ_CHECK(mode >= 2 ? 0 : 1, "OP_INIT with the standard config");
    ringkv_node_destroy(n);
    return 0;
  }
  {
    rk_slice reply;
    FZ_CHECK(fz_call(n, RINGKV_OP_STEP, step_request(FZ_NOW_MS, 8, none), &reply) == RINGKV_OK,
             "the start step of an accepted node");
    collect(reply, &p);
    collect_sends(reply);
  }
  if (mode == 3) script(n, rest, &p);
  if (mode == 2 && lease_answers) {
    lease_script(n, rest, &p);
  } else if (mode == 2) {
    /* The fuzzed StepRequest as it is (its own now and random bits). */
    rk_slice reply;
    code = fz_call(n, RINGKV_OP_STEP, rest, &reply);
    for (int i = 0; code == RINGKV_OK; i++) {
      collect(reply, &p);
      if (!p.load || i == FZ_LOADS_MAX) break;
      code = fz_call(n, RINGKV_OP_STEP, step_request(FZ_NOW_MS, 4, none), &reply);
    }
  }
  /* Not wedged: the alarm a minute on runs. */
  FZ_CHECK(step(n, FZ_NOW_MS + 60000, 3, none, &p) == RINGKV_OK, "an alarm step after the input");
  ringkv_node_destroy(n);

  /* A restart from what the core asked to persist. */
  ringkv_node *m = ringkv_node_create();
  FZ_CHECK(m != NULL, "ringkv_node_create");
  FZ_CHECK(fz_call(m, RINGKV_OP_INIT, init_request(p.state, p.peers, p.npeers), NULL) == RINGKV_OK,
           "OP_INIT refuses the state and peer rows the core asked to persist");
  ringkv_node_destroy(m);
  return 0;
}
