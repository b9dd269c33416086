/* net.c: the simulated network. Every leg (request and answer) is counted on the wire, then
 * lost with probability `loss`, delayed 0..latency rounds, duplicated with probability
 * `dup`; a leg across a partition is lost when it arrives. A requester whose request or
 * answer is lost hears of it after 2 x latency + 2 rounds (the network failing the fetch),
 * or when the Send's timeout_ms has passed if that comes first, as an Answer with answered
 * false; an answer arriving after the timeout is dropped (only the first outcome of an
 * exchange counts). Events are kept in a heap ordered by (round, order). */
#include "simint.h"

static bool ev_less(const event *a, const event *b) {
  return a->round != b->round ? a->round < b->round : a->order < b->order;
}

static void heap_push(sim *s, event *e) {
  e->order = s->order_next++;
  if (s->heap_len == s->heap_cap) {
    s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 1024;
    s->heap = realloc(s->heap, s->heap_cap * sizeof(*s->heap));
    CHECK_ALLOC(s->heap);
  }
  size_t i = s->heap_len++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!ev_less(e, s->heap[p])) break;
    s->heap[i] = s->heap[p];
    i = p;
  }
  s->heap[i] = e;
}

static event *heap_pop(sim *s) {
  event *top = s->heap[0];
  event *last = s->heap[--s->heap_len];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= s->heap_len) break;
    if (c + 1 < s->heap_len && ev_less(s->heap[c + 1], s->heap[c])) c++;
    if (!ev_less(s->heap[c], last)) break;
    s->heap[i] = s->heap[c];
    i = c;
  }
  if (s->heap_len) s->heap[i] = last;
  return top;
}

void ev_free(event *e) {
  free(e->body);
  free(e);
}

/* The failure of the exchange `leg` belongs to, heard by its requester at `round`. */
static void push_fail(sim *s, const event *leg, uint64_t round) {
  event *f = calloc(1, sizeof(*f));
  CHECK_ALLOC(f);
  *f = *leg;
  f->late = false;
  f->body = NULL;
  f->len = 0;
  f->kind = EV_FAIL;
  f->from = leg->origin;
  f->to = leg->origin;
  f->round = round;
  heap_push(s, f);
}

/* A lost leg: its requester hears of it 2 x latency + 2 rounds after the request was sent,
 * or at the deadline (when that timer is not already set). */
static void schedule_fail(sim *s, const event *leg) {
  if (leg->timer) return;
  uint64_t round = leg->sent_round + 2u * (uint64_t)s->o->latency_rounds_max + 2u;
  push_fail(s, leg, RK_MIN(round, leg->deadline_round));
}

static void count_bytes(sim *s, uint8_t cls, uint32_t len) {
  sim_result *r = s->res;
  r->messages++;
  r->bytes += len;
  s->bytes_this_round += len;
  switch (cls) {
    case CLS_PUSH: r->bytes_push += len; break;
    case CLS_DIGEST: r->bytes_ae += len; break;
    case CLS_REPAIR: r->bytes_repair += len; break;
    default: r->bytes_gc += len; break;
  }
}

static void send_leg(sim *s, event *e) {
  count_bytes(s, e->cls, e->len);
  if (rnd_chance(&s->net, s->loss)) {
    s->res->messages_lost++;
    schedule_fail(s, e);
    ev_free(e);
    return;
  }
  uint32_t lat = (uint32_t)rnd_below(&s->net, (uint64_t)s->o->latency_rounds_max + 1);
  e->round = s->round + lat;
  if (rnd_chance(&s->net, s->dup)) {
    event *d = malloc(sizeof(*d));
    CHECK_ALLOC(d);
    *d = *e;
    d->body = malloc(e->len ? e->len : 1);
    CHECK_ALLOC(d->body);
    if (e->len) memcpy(d->body, e->body, e->len);
    d->round = s->round + rnd_below(&s->net, (uint64_t)s->o->latency_rounds_max + 1);
    s->res->messages_duplicated++;
    heap_push(s, d);
  }
  /* A copy arriving long after: past the grace, the settling and the collection it allows
   * (the receiver's answer to it is dropped, as a duplicate's). */
  if (e->kind == EV_MSG && (e->cls == CLS_PUSH || e->cls == CLS_REPAIR) && rnd_chance(&s->net, s->delay)) {
    event *d = malloc(sizeof(*d));
    CHECK_ALLOC(d);
    *d = *e;
    d->body = malloc(e->len ? e->len : 1);
    CHECK_ALLOC(d->body);
    if (e->len) memcpy(d->body, e->body, e->len);
    uint64_t grace_rounds = (s->o->tombstone_grace_ms + s->o->interval_ms - 1) / s->o->interval_ms;
    d->round = s->round + grace_rounds + SIM_LATE_EXTRA_ROUNDS;
    d->late = true;
    s->late_in_flight++;
    s->res->messages_late++;
    heap_push(s, d);
  }
  heap_push(s, e);
}

static uint8_t *copy_bytes(ProtobufCBinaryData b) {
  uint8_t *p = malloc(b.len ? b.len : 1);
  CHECK_ALLOC(p);
  if (b.len) memcpy(p, b.data, b.len);
  return p;
}

/* A Push is a repair request when it names shards (read through the generated code). */
uint8_t net_classify(uint32_t msg_kind, ProtobufCBinaryData body) {
  if (msg_kind == RINGKV__KIND__KIND_DIGEST) return CLS_DIGEST;
  if (msg_kind == RINGKV__KIND__KIND_GC) return CLS_GC;
  if (msg_kind == RINGKV__KIND__KIND_CATCHUP) return CLS_REPAIR;
  Ringkv__Push *p = ringkv__push__unpack(NULL, body.len, body.data);
  uint8_t cls = p != NULL && (p->n_shards > 0 || p->n_ranges > 0) ? CLS_REPAIR : CLS_PUSH;
  if (p) ringkv__push__free_unpacked(p, NULL);
  return cls;
}

void net_request(sim *s, node *from, uint32_t to, uint32_t msg_kind, uint8_t cls, uint32_t tag, uint64_t timeout_ms,
                 ProtobufCBinaryData body) {
  event *e = calloc(1, sizeof(*e));
  CHECK_ALLOC(e);
  e->kind = EV_MSG;
  e->cls = cls;
  e->msg_kind = msg_kind;
  e->from = from->id;
  e->to = to;
  e->origin = from->id;
  e->tag = tag;
  e->origin_epoch = from->epoch;
  e->ring_epoch = from->ring.epoch;
  e->req_id = ++s->req_next;
  e->sent_round = s->round;
  /* The first round at which the requester's clock is timeout_ms past the send. */
  e->deadline_round = timeout_ms == 0 ? UINT64_MAX : s->round + (timeout_ms + s->o->interval_ms - 1) / s->o->interval_ms;
  e->body = copy_bytes(body);
  e->len = (uint32_t)body.len;
  /* An answer may come as late as 2 x latency rounds after the send: when the deadline
   * comes no later, the timeout is armed now (ahead of any answer of the same round). */
  if (e->deadline_round <= s->round + 2u * (uint64_t)s->o->latency_rounds_max) {
    push_fail(s, e, e->deadline_round);
    e->timer = true;
  }
  if (e->req_id >= s->req_done_cap) {
    size_t cap = s->req_done_cap ? s->req_done_cap * 2 : 4096;
    while (cap <= e->req_id) cap *= 2;
    s->req_done = realloc(s->req_done, cap);
    CHECK_ALLOC(s->req_done);
    memset(s->req_done + s->req_done_cap, 0, cap - s->req_done_cap);
    s->req_done_cap = cap;
  }
  send_leg(s, e);
}

void net_answer(sim *s, const event *req, ProtobufCBinaryData body) {
  event *e = calloc(1, sizeof(*e));
  CHECK_ALLOC(e);
  *e = *req;
  e->late = false;
  e->kind = EV_ANSWER;
  e->from = req->to;
  e->to = req->origin;
  e->ring_epoch = s->nodes[req->to].ring.epoch;
  e->body = copy_bytes(body);
  e->len = (uint32_t)body.len;
  send_leg(s, e);
}

void net_refuse(sim *s, const event *req) { schedule_fail(s, req); }

event *net_next(sim *s) {
  while (s->heap_len > 0 && s->heap[0]->round <= s->round) {
    event *e = heap_pop(s);
    if (e->late) s->late_in_flight--;
    if (e->kind != EV_FAIL && s->partitioned && s->nodes[e->from].side != s->nodes[e->to].side) {
      s->res->messages_lost++;
      schedule_fail(s, e);
      ev_free(e);
      continue;
    }
    return e;
  }
  return NULL;
}

bool net_requester_live(sim *s, const event *e) {
  if (s->req_done[e->req_id]) return false;
  s->req_done[e->req_id] = 1;
  return s->nodes[e->origin].epoch == e->origin_epoch;
}

void net_free(sim *s) {
  while (s->heap_len) ev_free(heap_pop(s));
  free(s->heap);
  free(s->req_done);
}
