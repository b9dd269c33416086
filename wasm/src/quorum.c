/* quorum.c: the waits of writes at ?consistency=quorum|all (see quorum.h). */
#include <stdlib.h>

#include "node.h"
#include "quorum.h"
#include "resize.h"

enum { IN_OLD = 1, IN_NEW = 2, ENDED = 4 };

static bool has(const uint16_t *set, uint32_t len, uint32_t node) {
  for (uint32_t i = 0; i < len; i++) {
    if (set[i] == node) return true;
  }
  return false;
}

static uint32_t need_of(uint32_t level, uint32_t size) { return level == RK_CONSISTENCY_ALL ? size : size / 2u + 1u; }

static bool reached(const rk_quorum_wait *w) {
  return w->have_new >= w->need_new && (!w->both || w->have_old >= w->need_old);
}

static void close_wait(rk_quorum *q, rk_quorum_wait *w, rk_quorum_outcome *out) {
  out->id = w->id;
  out->replicas = w->holding;
  out->reached = reached(w);
  free(w->peer);
  free(w->tag);
  free(w->in);
  memset(w, 0, sizeof *w);
  q->open--;
}

int rk_quorum_open(rk_quorum *q, const ringkv_node *n, uint32_t shard, uint32_t level, bool *done,
                   rk_quorum_outcome *out) {
  *done = false;
  int slot = -1;
  for (uint32_t i = 0; i < RK_QUORUM_WAITS_MAX && slot < 0; i++) {
    if (q->w[i].id == 0) slot = (int)i;
  }
  if (slot < 0) return -1;
  rk_quorum_wait *w = &q->w[slot];
  uint32_t old_len, new_len, all_len;
  /* Copied: the placement memo is valid only until the next call. */
  const uint16_t *o = rk_sources_of(n, shard, &old_len);
  uint16_t old[2u * RINGKV_CLUSTER_SIZE_MAX];
  memcpy(old, o, old_len * sizeof *old);
  const uint16_t *nw_ = rk_new_set_of(n, shard, &new_len);
  uint16_t nw[2u * RINGKV_CLUSTER_SIZE_MAX];
  memcpy(nw, nw_, new_len * sizeof *nw);
  const uint16_t *all = rk_replicas_of(n, shard, &all_len);
  w->peer = calloc(all_len + 1u, sizeof *w->peer);
  w->tag = calloc(all_len + 1u, sizeof *w->tag);
  w->in = calloc(all_len + 1u, sizeof *w->in);
  if (w->peer == NULL || w->tag == NULL || w->in == NULL) {
    free(w->peer);
    free(w->tag);
    free(w->in);
    memset(w, 0, sizeof *w);
    return -1;
  }
  w->id = ++q->next_id == 0 ? ++q->next_id : q->next_id;
  q->open++;
  w->shard = shard;
  w->both = n->cfg.phase == RK_PHASE_JOINING || n->cfg.phase == RK_PHASE_SWITCHING;
  w->need_old = need_of(level, old_len);
  w->need_new = need_of(level, new_len);
  w->have_old = has(old, old_len, n->self) ? 1u : 0u;
  w->have_new = has(nw, new_len, n->self) ? 1u : 0u;
  w->holding = 1;
  for (uint32_t i = 0; i < all_len; i++) {
    if (all[i] == n->self) continue;
    uint8_t in = (uint8_t)((has(old, old_len, all[i]) ? IN_OLD : 0) | (has(nw, new_len, all[i]) ? IN_NEW : 0));
    /* Only the sets that count are waited on (in leaving the old-only replicas are not
     * pushed client writes any more). */
    if (!w->both && !(in & IN_NEW)) continue;
    w->peer[w->len] = all[i];
    w->in[w->len] = in;
    w->len++;
  }
  w->pending = w->len;
  if (reached(w) || w->len == 0) {
    *done = true;
    close_wait(q, w, out);
  }
  return slot;
}

void rk_quorum_sent(rk_quorum *q, int w, uint32_t i, uint32_t tag) {
  if (w < 0 || (uint32_t)w >= RK_QUORUM_WAITS_MAX || i >= q->w[w].len) return;
  q->w[w].tag[i] = tag;
}

bool rk_quorum_owner(const rk_quorum *q, uint32_t tag, int *w, uint32_t *i) {
  if (tag == 0 || q->open == 0) return false;
  for (uint32_t k = 0; k < RK_QUORUM_WAITS_MAX; k++) {
    const rk_quorum_wait *x = &q->w[k];
    if (x->id == 0) continue;
    for (uint32_t j = 0; j < x->len; j++) {
      if (x->tag[j] == tag && !(x->in[j] & ENDED)) {
        *w = (int)k;
        *i = j;
        return true;
      }
    }
  }
  return false;
}

bool rk_quorum_ended(rk_quorum *q, int wi, uint32_t i, bool held, rk_quorum_outcome *out) {
  if (wi < 0 || (uint32_t)wi >= RK_QUORUM_WAITS_MAX) return false;
  rk_quorum_wait *w = &q->w[wi];
  if (w->id == 0 || i >= w->len || (w->in[i] & ENDED)) return false;
  w->in[i] |= ENDED;
  w->pending--;
  if (held) {
    w->holding++;
    if (w->in[i] & IN_OLD) w->have_old++;
    if (w->in[i] & IN_NEW) w->have_new++;
  }
  if (!reached(w) && w->pending > 0) return false;
  close_wait(q, w, out);
  return true;
}

void rk_quorum_close(rk_quorum *q, int w) {
  if (w < 0 || (uint32_t)w >= RK_QUORUM_WAITS_MAX || q->w[w].id == 0) return;
  rk_quorum_outcome gone;
  close_wait(q, &q->w[w], &gone);
}

uint32_t rk_quorum_id(const rk_quorum *q, int w) {
  return w >= 0 && (uint32_t)w < RK_QUORUM_WAITS_MAX ? q->w[w].id : 0;
}

void rk_quorum_free(rk_quorum *q) {
  for (uint32_t k = 0; k < RK_QUORUM_WAITS_MAX; k++) {
    free(q->w[k].peer);
    free(q->w[k].tag);
    free(q->w[k].in);
  }
  memset(q, 0, sizeof *q);
}
