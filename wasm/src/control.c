/* control.c: RingControl's control step (see control.h and ringkv.proto, section 4).
 *
 * At first start the control object has no state: the ring starts at epoch 1 with the size
 * the asking node persisted (a release-1 cluster upgrading in place) or else CLUSTER_SIZE;
 * the cluster id is 16 random bytes; when TOKEN_SECRET is unset a 256-bit secret is drawn
 * once and kept. Randomness comes in with the request, so the step is deterministic.
 *
 * Dot leases: a node's LeaseRequest is granted a block of RINGKV_LEASE_BLOCK counters above
 * every block that id was granted before (and above the counter it names); the block's end
 * is part of the returned state, which the control object persists before it answers, so
 * no counter is granted twice even across a lost answer. A node that says it started with
 * no state while blocks were granted to its id before is told its storage was lost. */
#include "control.h"
#include "fields.h"
#include "autoscale.h"
#include "resize.h"

typedef rk_ring ring;

typedef struct {
  uint32_t node;
  uint64_t end, incarnation;
  bool lost;
} lease_t;

typedef struct {
  rk_resize rz;   /* the ring, and what each node confirmed of it */
  rk_slice cluster_id;
  rk_slice secret;
  uint32_t cluster_size_applied;
  lease_t *leases;   /* by node, ascending, unique; in the arena */
  size_t leases_len;
  rk_autoscale_state as;
} control_state;

/* ControlRequest.versions, by node id. */
typedef struct {
  uint32_t *v;
  size_t len;
} version_list;

static bool version_push(void *ctx, uint32_t v) {
  version_list *l = ctx;
  if (l->len >= RINGKV_CLUSTER_SIZE_MAX) return false;
  l->v[l->len++] = v;
  return true;
}

static bool size_valid(uint32_t size) { return size >= 1 && size <= RINGKV_CLUSTER_SIZE_MAX; }

static int ring_read(rk_slice s, ring *g) {
  int t_;
  bool ok = true;
  memset(g, 0, sizeof *g);
  FIELDS(s) {
    case 1: ok = pb_get_u64(R, WT, &g->epoch); break;
    case 2: ok = pb_get_u32(R, WT, &g->size); break;
    case 3: ok = pb_get_u32(R, WT, &g->from); break;
    case 4: ok = pb_get_u32(R, WT, &g->to); break;
    case 5: ok = pb_get_u32(R, WT, &g->phase); break;
    case 6: ok = pb_get_u32(R, WT, &g->node_ids_max); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  /* The ring is this object's own record: anything inconsistent was not written by it. */
  bool moving = g->phase != RK_PHASE_NONE;
  if (g->epoch < 1 || !size_valid(g->size) || g->phase > RK_PHASE_LEAVING) return RINGKV_E_DECODE;
  if (moving ? !size_valid(g->from) || !size_valid(g->to) : g->from != 0 || g->to != 0) {
    return RINGKV_E_DECODE;
  }
  uint32_t widest = RK_MAX(g->size, RK_MAX(g->from, g->to));
  if (g->node_ids_max < widest || g->node_ids_max > RINGKV_CLUSTER_SIZE_MAX) return RINGKV_E_DECODE;
  return RINGKV_OK;
}

static void ring_write(pb_enc *e, uint32_t field, const ring *g) {
  size_t m = pb_begin(e, field);
  pb_put_uint(e, 1, g->epoch);
  pb_put_uint(e, 2, g->size);
  pb_put_uint(e, 3, g->from);
  pb_put_uint(e, 4, g->to);
  pb_put_uint(e, 5, g->phase);
  pb_put_uint(e, 6, g->node_ids_max);
  pb_end(e, m);
}

/* A NodeProgress (persisted, or a node's confirmation: its sent_ms is then 0). */
static bool progress_read(rk_slice s, uint32_t *node, rk_progress *p) {
  int t_;
  bool ok = true;
  *node = 0;
  memset(p, 0, sizeof *p);
  FIELDS(s) {
    case 1: ok = pb_get_u32(R, WT, node); break;
    case 2: ok = pb_get_u64(R, WT, &p->epoch); break;
    case 3: ok = pb_get_u32(R, WT, &p->copying); break;
    case 4: ok = pb_get_u32(R, WT, &p->dropping); break;
    case 5: ok = pb_get_u64(R, WT, &p->sent_ms); break;
    SKIP;
  }
  return ok && t_ >= 0;
}

static int state_read(rk_arena *a, rk_slice s, control_state *st) {
  int t_;
  bool ok = true;
  rk_slice ring_bytes = {NULL, 0}, lease = {NULL, 0};
  memset(st, 0, sizeof *st);
  size_t leases = 0;
  FIELDS(s) {
    case 5: ok = pb_skip(R, WT); leases++; break;
    SKIP;
  }
  if (!ok || t_ < 0 || leases > RINGKV_CLUSTER_SIZE_MAX) return RINGKV_E_DECODE;
  /* One slot more for a node's first lease. */
  st->leases = rk_alloc_array(a, leases + 1u, sizeof *st->leases);
  st->rz.progress = rk_alloc_array(a, RINGKV_CLUSTER_SIZE_MAX, sizeof *st->rz.progress);
  if (st->leases == NULL || st->rz.progress == NULL) return RINGKV_E_NOMEM;
  memset(st->rz.progress, 0, RINGKV_CLUSTER_SIZE_MAX * sizeof *st->rz.progress);
  FIELDS(s) {
    case 1: ok = pb_get_bytes(R, WT, &ring_bytes); break;
    case 2: ok = pb_get_bytes(R, WT, &st->cluster_id); break;
    case 3: ok = pb_get_bytes(R, WT, &st->secret); break;
    case 4: ok = pb_get_u32(R, WT, &st->cluster_size_applied); break;
    case 6: {
      rk_slice pr;
      uint32_t node = 0;
      rk_progress p;
      ok = pb_get_bytes(R, WT, &pr) && progress_read(pr, &node, &p) && node < RINGKV_CLUSTER_SIZE_MAX;
      if (ok) st->rz.progress[node] = p;
      break;
    }
    case 7: ok = pb_get_u32(R, WT, &st->rz.notify_below); break;
    case 8: {
      rk_slice as;
      ok = pb_get_bytes(R, WT, &as) && rk_autoscale_state_read(as, &st->as);
      break;
    }
    case 5: {
      ok = pb_get_bytes(R, WT, &lease);
      if (!ok) break;
      lease_t l = {0, 0, 0, false};
      FIELDS(lease) {
        case 1: ok = pb_get_u32(R, WT, &l.node); break;
        case 2: ok = pb_get_u64(R, WT, &l.end); break;
        case 3: ok = pb_get_fixed64(R, WT, &l.incarnation); break;
        case 4: ok = pb_get_bool(R, WT, &l.lost); break;
        SKIP;
      }
      if (ok && t_ >= 0) {
        /* This object's own record: ascending by node, within the counter space. */
        bool ordered = st->leases_len == 0 || st->leases[st->leases_len - 1].node < l.node;
        if (!ordered || l.node >= RINGKV_CLUSTER_SIZE_MAX || l.end == 0 || l.end > RINGKV_COUNTER_MAX) return RINGKV_E_DECODE;
        st->leases[st->leases_len++] = l;
      }
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  RK_TRY(ring_read(ring_bytes, &st->rz.ring));
  if (st->rz.notify_below > st->rz.ring.node_ids_max) return RINGKV_E_DECODE;
  if (st->cluster_id.len != RINGKV_CLUSTER_ID_BYTES) return RINGKV_E_DECODE;
  if (st->secret.len != 0 && st->secret.len != RINGKV_SECRET_BYTES) return RINGKV_E_DECODE;
  if (st->cluster_size_applied > RINGKV_CLUSTER_SIZE_MAX) return RINGKV_E_DECODE;
  return RINGKV_OK;
}

static void state_write(pb_enc *e, const control_state *st) {
  ring_write(e, 1, &st->rz.ring);
  pb_put_bytes(e, 2, st->cluster_id);
  pb_put_bytes(e, 3, st->secret);
  pb_put_uint(e, 4, st->cluster_size_applied);
  for (uint32_t i = 0; i < st->rz.ring.node_ids_max; i++) {
    const rk_progress *p = &st->rz.progress[i];
    if (p->epoch == 0 && p->sent_ms == 0) continue;
    size_t m = pb_begin(e, 6);
    pb_put_uint(e, 1, i);
    pb_put_uint(e, 2, p->epoch);
    pb_put_uint(e, 3, p->copying);
    pb_put_uint(e, 4, p->dropping);
    pb_put_uint(e, 5, p->sent_ms);
    pb_end(e, m);
  }
  pb_put_uint(e, 7, st->rz.notify_below);
  rk_autoscale_state_write(e, 8, &st->as);
  for (size_t i = 0; i < st->leases_len; i++) {
    size_t m = pb_begin(e, 5);
    pb_put_uint(e, 1, st->leases[i].node);
    pb_put_uint(e, 2, st->leases[i].end);
    pb_put_fixed64(e, 3, st->leases[i].incarnation);
    pb_put_bool(e, 4, st->leases[i].lost);
    pb_end(e, m);
  }
}

static void log_write(pb_enc *e, const char *text, uint64_t a, uint64_t b);

/* Grants a LeaseRequest (see the file comment) into st; *reply is the LeaseReply. Errors:
 * RINGKV_E_DECODE (malformed), RINGKV_E_PROTOCOL (a version this core does not speak),
 * RINGKV_E_VALUE (a node id the cluster never had, a counter too high to lease above). */
static int lease_grant(rk_arena *a, control_state *st, rk_slice req, pb_enc *logs, rk_slice *reply) {
  int t_;
  bool ok = true, fresh = false;
  uint32_t version = 0, from = 0;
  uint64_t above = 0, incarnation = 0;
  FIELDS(req) {
    case 1: ok = pb_get_u32(R, WT, &version); break;
    case 2: ok = pb_get_u32(R, WT, &from); break;
    case 3: ok = pb_get_u64(R, WT, &above); break;
    case 4: ok = pb_get_bool(R, WT, &fresh); break;
    case 5: ok = pb_get_fixed64(R, WT, &incarnation); break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (version < RINGKV_PROTOCOL_VERSION_MIN || version > RINGKV_PROTOCOL_VERSION) return RINGKV_E_PROTOCOL;
  if (from >= st->rz.ring.node_ids_max || above > RINGKV_LEASE_ABOVE_MAX) return RINGKV_E_VALUE;
  size_t i = 0;
  while (i < st->leases_len && st->leases[i].node < from) i++;
  bool known = i < st->leases_len && st->leases[i].node == from;
  uint64_t granted = known ? st->leases[i].end : 0;
  /* Every block granted before ends at or below `granted`, within the counter space. */
  uint64_t start = RK_MAX(granted, above) + 1u;
  if (start > RINGKV_LEASE_ABOVE_MAX + 1u) return RINGKV_E_VALUE;
  uint64_t end = start + RINGKV_LEASE_BLOCK - 1u;
  if (!known) {
    memmove(st->leases + i + 1, st->leases + i, (st->leases_len - i) * sizeof *st->leases);
    st->leases_len++;
    st->leases[i].node = from;
  }
  /* A fresh node of the incarnation that holds the record asks again (an answer was lost):
   * it is given the same verdict as the first time. */
  bool again = known && st->leases[i].incarnation == incarnation;
  bool lost = fresh && (again ? st->leases[i].lost : known);
  st->leases[i].end = end;
  st->leases[i].incarnation = incarnation;
  st->leases[i].lost = lost;
  if (lost) log_write(logs, "node % started with no state after holding dot blocks: its storage was lost, it rejoins from counter %", from, start);
  pb_enc e;
  pb_enc_init(&e, a);
  pb_put_uint(&e, 1, from);
  pb_put_uint(&e, 2, start);
  pb_put_uint(&e, 3, end);
  pb_put_bool(&e, 4, lost);
  if (e.err) return e.err;
  *reply = pb_result(&e);
  return RINGKV_OK;
}

/* A log line of static text and up to two numbers ("%" marks where each goes). */
/* The 409 of a resize held back by a node of an older release, naming it. */
static const char *older_release_error(rk_arena *a, uint32_t node) {
  static const char head[] = "node ", tail[] = " of the ring runs an older release (protocol version): resize once the deployment has reached every node";
  char digits[12];
  size_t nd = 0;
  do {
    digits[nd++] = (char)('0' + node % 10u);
    node /= 10u;
  } while (node > 0 && nd < sizeof digits);
  char *s = rk_alloc(a, sizeof head + nd + sizeof tail);
  if (s == NULL) return tail + 1;
  size_t len = 0;
  memcpy(s, head, sizeof head - 1);
  len = sizeof head - 1;
  while (nd > 0) s[len++] = digits[--nd];
  memcpy(s + len, tail, sizeof tail);   /* with its terminator */
  return s;
}

static void log_write(pb_enc *e, const char *text, uint64_t a, uint64_t b) {
  char buf[256];
  size_t len = 0;
  uint64_t args[2] = {a, b};
  int used = 0;
  for (const char *p = text; *p != '\0' && len < sizeof buf - 24; p++) {
    if (*p != '%' || used == 2) {
      buf[len++] = *p;
      continue;
    }
    char digits[20];
    int nd = 0;
    uint64_t v = args[used++];
    do {
      digits[nd++] = (char)('0' + v % 10u);
      v /= 10u;
    } while (v != 0);
    while (nd > 0) buf[len++] = digits[--nd];
  }
  rk_slice line = {(const uint8_t *)buf, len};
  pb_put_bytes(e, 3, line);
}

int rk_control_step(rk_arena *a, rk_slice req, rk_slice *reply) {
  int t_, err = 0;
  bool ok = true;
  rk_slice state_bytes = {NULL, 0}, random = {NULL, 0};
  uint32_t cluster_size = 0, reported = 0;
  bool secret_needed = false;
  rk_slice lease_req = {NULL, 0}, lease_reply = {NULL, 0}, progress = {NULL, 0};
  bool lease_asked = false, resize_asked = false, progress_given = false, replicas_all = false, resizing = false;
  uint32_t resize_to = 0, replicas = 0;
  uint64_t now = 0, stored_bytes = 0, key_bytes_max = 0;
  uint32_t max_siblings = 0;
  version_list versions = {rk_alloc_array(a, RINGKV_CLUSTER_SIZE_MAX, sizeof(uint32_t)), 0};
  if (versions.v == NULL) return RINGKV_E_NOMEM;
  rk_autoscale_cfg as_cfg;
  memset(&as_cfg, 0, sizeof as_cfg);
  size_t loads_cap = 0, loads_len = 0;
  FIELDS(req) {
    case 20: ok = pb_skip(R, WT) && ++loads_cap <= RINGKV_CLUSTER_SIZE_MAX; break;
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  rk_node_load *loads = rk_alloc_array(a, loads_cap + 1u, sizeof *loads);
  if (loads == NULL) return RINGKV_E_NOMEM;
  bool stored_known = false;
  FIELDS(req) {
    case 1: ok = pb_get_bytes(R, WT, &state_bytes); break;
    case 2: ok = pb_get_u32(R, WT, &cluster_size); break;
    case 3: ok = pb_get_u32(R, WT, &reported); break;
    case 4: ok = pb_get_bytes(R, WT, &random); break;
    case 5: ok = pb_get_bool(R, WT, &secret_needed); break;
    case 6: ok = pb_get_bytes(R, WT, &lease_req); lease_asked = true; break;
    case 7: {
      rk_slice ask = {NULL, 0};
      ok = pb_get_bytes(R, WT, &ask);
      if (!ok) break;   /* ask is unset: not a reader's bounds */
      resize_asked = true;
      FIELDS(ask) {
        case 1: ok = pb_get_u32(R, WT, &resize_to); break;
        SKIP;
      }
      ok = ok && t_ >= 0;
      break;
    }
    case 8: ok = pb_get_bytes(R, WT, &progress); progress_given = true; break;
    case 9: ok = pb_get_u64(R, WT, &now); break;
    case 10: ok = pb_get_u32(R, WT, &replicas); break;
    case 11: ok = pb_get_bool(R, WT, &replicas_all); break;
    case 12: ok = pb_get_bool(R, WT, &resizing); break;
    case 13: ok = pb_get_u64(R, WT, &stored_bytes); break;
    case 14: ok = pb_get_u64(R, WT, &key_bytes_max); break;
    case 16: ok = pb_get_u32(R, WT, &max_siblings); break;
    case 17: ok = pb_get_bool(R, WT, &stored_known); break;
    case 18: ok = pb_get_repeated_u32(R, WT, version_push, &versions); break;
    case 19: {
      rk_slice c;
      ok = pb_get_bytes(R, WT, &c) && rk_autoscale_cfg_read(c, &as_cfg);
      break;
    }
    case 20: {
      rk_slice l;
      ok = pb_get_bytes(R, WT, &l) && rk_autoscale_load_read(l, &loads[loads_len]);
      if (ok) loads_len++;
      break;
    }
    SKIP;
  }
  if (!ok || t_ < 0) return RINGKV_E_DECODE;
  if (replicas_all) replicas = 0;
  else if (replicas == 0 || replicas > RINGKV_CLUSTER_SIZE_MAX) replicas = 1;
  if (!size_valid(cluster_size) || reported > RINGKV_CLUSTER_SIZE_MAX) return RINGKV_E_CONFIG;
  if (random.len < RINGKV_CLUSTER_ID_BYTES + RINGKV_SECRET_BYTES) return RINGKV_E_VALUE;

  pb_enc logs;
  pb_enc_init(&logs, a);
  control_state st;
  bool changed = false;
  if (state_bytes.len == 0) {
    memset(&st, 0, sizeof st);
    st.leases = rk_alloc_array(a, 1, sizeof *st.leases);
    st.rz.progress = rk_alloc_array(a, RINGKV_CLUSTER_SIZE_MAX, sizeof *st.rz.progress);
    if (st.leases == NULL || st.rz.progress == NULL) return RINGKV_E_NOMEM;
    memset(st.rz.progress, 0, RINGKV_CLUSTER_SIZE_MAX * sizeof *st.rz.progress);
    st.rz.ring.epoch = 1;
    st.rz.ring.size = reported != 0 ? reported : cluster_size;
    st.rz.ring.node_ids_max = st.rz.ring.size;
    st.cluster_id.ptr = random.ptr;
    st.cluster_id.len = RINGKV_CLUSTER_ID_BYTES;
    st.cluster_size_applied = cluster_size;
    changed = true;
    log_write(&logs, reported != 0 ? "ring created at epoch %, size % (the size the nodes persisted)"
                                   : "ring created at epoch %, size % (CLUSTER_SIZE)",
              st.rz.ring.epoch, st.rz.ring.size);
  } else {
    RK_TRY(state_read(a, state_bytes, &st));
  }
  if (lease_asked) {
    RK_TRY(lease_grant(a, &st, lease_req, &logs, &lease_reply));
    changed = true;
  }
  if (secret_needed && st.secret.len == 0) {
    st.secret.ptr = random.ptr + RINGKV_CLUSTER_ID_BYTES;
    st.secret.len = RINGKV_SECRET_BYTES;
    changed = true;
    log_write(&logs, "TOKEN_SECRET is unset: generated a random 256-bit token secret, kept in RingControl's storage", 0, 0);
  }
  ring *g = &st.rz.ring;
  if (progress_given) {
    uint32_t node;
    rk_progress p;
    bool moved = false;
    if (!progress_read(progress, &node, &p)) return RINGKV_E_DECODE;
    RK_TRY(rk_resize_confirm(&st.rz, node, p.epoch, p.copying, p.dropping, &moved));
    changed |= moved;
  }
  rk_resize_answer answer = {0, NULL, false, 0};
  rk_resize_limits limits = {replicas, stored_bytes, key_bytes_max, max_siblings, versions.v, versions.len,
                             as_cfg.on ? as_cfg.min : 0, as_cfg.on ? as_cfg.max : 0};
  /* A node holding a resize back by an older version it last reported is sent the ring:
   * that starts it, and a node of this release reports at its start (an idle one would
   * not report, and the resize would wait for as long as it stays idle). */
  uint32_t wake = UINT32_MAX;
  if (resize_asked && rk_resize_ask(&st.rz, resize_to, &limits, &answer)) {
    changed = true;
    log_write(&logs, "resize asked: from % to %, joining", g->from, g->to);
  }
  if (answer.later) {
    wake = answer.node;
    answer.error = older_release_error(a, answer.node);
  }
  if (rk_resize_advance(&st.rz)) {
    changed = true;
    log_write(&logs, g->phase == RK_PHASE_NONE ? "epoch %: resize done, size %" : "epoch %: phase %", g->epoch,
              g->phase == RK_PHASE_NONE ? g->size : g->phase);
  }
  if (cluster_size != st.cluster_size_applied) {
    if (!resizing) {
      /* An executor that cannot carry a resize out: the ring keeps its size, and the
       * variable is not taken as applied. */
      log_write(&logs, "CLUSTER_SIZE=% differs from the size last applied (%): the ring keeps its size",
                cluster_size, st.cluster_size_applied);
    } else if (g->phase == RK_PHASE_NONE && stored_known) {
      /* The value last applied, not the live size, is compared: an unchanged variable
       * never undoes an admin or autoscale resize. (Judged, like a POST, against what the
       * nodes store: a step without those counts leaves it to the next.) */
      rk_resize_answer env = {0, NULL, false, 0};
      if (rk_resize_ask(&st.rz, cluster_size, &limits, &env)) {
        log_write(&logs, "CLUSTER_SIZE changed: resize from % to %, joining", g->from, g->to);
      } else if (env.later) {
        /* Not applied yet: a later step (the next report) tries again. */
        log_write(&logs, "CLUSTER_SIZE=% waits: node % reports an older protocol version", cluster_size, env.node);
        wake = env.node;
      } else if (env.status == 400 || env.status == 409) {
        log_write(&logs, "CLUSTER_SIZE=% cannot be applied (out of range for REPLICAS, keys stored, or a bound per node: see POST /v1/admin/cluster): the ring keeps size %",
                  cluster_size, g->size);
      }
      if (!env.later) {
        st.cluster_size_applied = cluster_size;
        changed = true;
      }
    }
  }
  /* Autoscale (SPEC: AUTOSCALE): decided on this step's ring, in an executor that can carry
   * a resize out; the news (a resize asked, another action) is logged and kept. */
  rk_autoscale_decision as_now;
  memset(&as_now, 0, sizeof as_now);
  const char *as_error = NULL;
  bool as_news = false;
  if (as_cfg.on && resizing && stored_known) {
    rk_autoscale_state before = st.as;
    as_now = rk_autoscale_decide(&as_cfg, &st.as, g, loads, loads_len, replicas == 0 ? 1u : replicas, now);
    bool as_started = false;
    if (as_now.action == RK_AS_GROW || as_now.action == RK_AS_SHRINK || as_now.action == RK_AS_CLAMP) {
      rk_resize_answer as_ans = {0, NULL, false, 0};
      if (rk_resize_ask(&st.rz, as_now.to, &limits, &as_ans)) {
        as_started = true;
        st.as.in_transition = true;
        log_write(&logs, "autoscale: resize from % to %, joining", g->from, g->to);
      } else {
        as_error = as_ans.later ? older_release_error(a, as_ans.node) : as_ans.error;
        if (as_ans.later) wake = as_ans.node;
      }
    }
    as_news = as_started || rk_autoscale_news(&st.as, &as_now);
    if (as_news) {
      st.as.last = as_now;
      st.as.has_last = true;
    }
    changed |= as_news || before.below_since_ms != st.as.below_since_ms ||
               before.cooldown_until_ms != st.as.cooldown_until_ms || before.in_transition != st.as.in_transition;
  }
  uint32_t *send_to = rk_alloc_array(a, RINGKV_CLUSTER_SIZE_MAX, sizeof *send_to);
  uint32_t *waiting = rk_alloc_array(a, RINGKV_CLUSTER_SIZE_MAX, sizeof *waiting);
  if (send_to == NULL || waiting == NULL) return RINGKV_E_NOMEM;
  uint64_t alarm = 0;
  size_t sends = now != 0 ? rk_resize_due(&st.rz, now, send_to, &alarm) : 0;
  changed |= sends > 0;
  bool listed = false;
  for (size_t i = 0; i < sends; i++) listed |= send_to[i] == wake;
  if (wake != UINT32_MAX && !listed && sends < RINGKV_CLUSTER_SIZE_MAX) send_to[sends++] = wake;
  size_t waiting_len = rk_resize_waiting(&st.rz, waiting);

  pb_enc e;
  pb_enc_init(&e, a);
  if (changed) {
    size_t m = pb_begin(&e, 1);
    state_write(&e, &st);
    pb_end(&e, m);
  }
  size_t m = pb_begin(&e, 2);
  ring_write(&e, 1, g);
  pb_put_bytes(&e, 2, st.cluster_id);
  if (secret_needed) pb_put_bytes(&e, 3, st.secret);
  pb_end(&e, m);
  if (logs.err != 0) err = logs.err;
  pb_put_raw(&e, logs.buf, logs.len);
  pb_put_bytes(&e, 4, lease_reply);
  if (resize_asked) {
    m = pb_begin(&e, 5);
    pb_put_uint(&e, 1, answer.status);
    if (answer.error != NULL) pb_put_bytes(&e, 2, (rk_slice){(const uint8_t *)answer.error, strlen(answer.error)});
    pb_end(&e, m);
  }
  if (g->phase != RK_PHASE_NONE) {
    uint64_t copying = 0, dropping = 0;
    for (uint32_t i = 0; i < st.rz.notify_below; i++) {
      const rk_progress *p = &st.rz.progress[i];
      if (p->epoch != g->epoch) continue;
      copying += p->copying;
      dropping += p->dropping;
    }
    m = pb_begin(&e, 6);
    pb_put_packed_u32(&e, 1, waiting, waiting_len);
    pb_put_uint(&e, 2, copying);
    pb_put_uint(&e, 3, dropping);
    pb_end(&e, m);
  }
  pb_put_packed_u32(&e, 7, send_to, sends);
  uint64_t as_alarm = as_cfg.on && now != 0 ? rk_autoscale_alarm(&as_cfg, &st.as, now) : 0;
  if (as_alarm != 0) alarm = alarm == 0 ? as_alarm : RK_MIN(alarm, as_alarm);
  pb_put_uint(&e, 8, alarm);
  pb_put_uint(&e, 9, st.cluster_size_applied);
  if (as_cfg.on) {
    rk_autoscale_decision_write(&e, 10, &as_now, as_error);
    pb_put_bool(&e, 11, as_news);
    if (st.as.has_last) rk_autoscale_decision_write(&e, 12, &st.as.last, NULL);
  }
  if (e.err != 0) err = e.err;
  *reply = pb_result(&e);
  return err;
}
