/* main.c: the simulator's command line: one seeded run (one JSON line, exit 1 when an
 * oracle fails), or --sweep over cluster sizes (a table, and sim/results.json for the
 * figures that sim/plots.mjs draws). */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

void sim_opts_default(sim_opts *o) {
  memset(o, 0, sizeof(*o));
  o->seed = 1;
  o->nodes = 8;
  o->replicas = 3;
  o->shards = 1024;
  o->keys = 200;
  o->writes = 400;
  o->fanout = 8;
  o->value_bytes = 64;
  o->latency_rounds_max = 0;
  o->fault_rounds = 30;
  o->partition_rounds_max = 16;
  o->rounds_max = 300;
  o->settle_rounds = 5;
  o->interval_ms = 1000;
  o->skew_ms_max = 3000;
  o->max_clock_skew_ms = 10000;
  o->tombstone_grace_ms = 15000;   /* > 2 x skew_ms_max: see sim/README.md */
  o->max_siblings = 32;
  o->delete_ratio = 0.15;
  o->context_ratio = 0.3;
  o->check_contexts = true;
  o->trace_key = -1;
}

void sim_print_json(FILE *f, const sim_opts *o, const sim_result *r) {
  fprintf(f,
          "{\"seed\":%" PRIu64 ",\"nodes\":%u,\"replicas\":%u,\"shards\":%u,\"keys\":%u,\"writes\":%u,"
          "\"loss\":%g,\"dup\":%g,\"latency\":%u,\"partitions\":%s,\"restarts\":%s,\"skew\":%s,"
          "\"ok\":%s,",
          o->seed, o->nodes, o->replicas, o->shards, o->keys, o->writes, o->loss, o->dup, o->latency_rounds_max,
          o->partitions ? "true" : "false", o->restarts ? "true" : "false", o->skew ? "true" : "false",
          r->ok ? "true" : "false");
  if (!r->ok) {
    fprintf(f, "\"failed_check\":\"%s\",\"failed_detail\":\"", r->failed_check);
    for (const char *p = r->failed_detail; *p; p++) {
      if (*p == '"' || *p == '\\') fputc('\\', f);
      fputc(*p, f);
    }
    fprintf(f, "\",");
  }
  fprintf(f,
          "\"oracles\":\"%s\",\"acked_writes\":%" PRIu64 ",\"rejected_writes\":%" PRIu64 ",\"rounds_total\":%" PRIu64
          ",\"rounds_to_converge\":%" PRId64 ",\"rounds_after_heal\":%" PRId64 ",\"messages\":%" PRIu64
          ",\"bytes\":%" PRIu64 ",\"bytes_push\":%" PRIu64 ",\"bytes_ae\":%" PRIu64 ",\"bytes_repair\":%" PRIu64
          ",\"bytes_gc\":%" PRIu64 ",\"bytes_to_converge\":%" PRIu64 ",\"messages_lost\":%" PRIu64
          ",\"messages_duplicated\":%" PRIu64 ",\"messages_late\":%" PRIu64 ",\"restarts\":%" PRIu64 ",\"partitions_made\":%" PRIu64
          ",\"expired\":%" PRIu64 ",\"gc_collected\":%" PRIu64 ",\"entries_applied\":%" PRIu64
          ",\"entry_bytes_mean\":%.1f,\"bytes_per_update\":%.1f,\"optimum_bytes_per_update\":%.1f,\"ratio\":%.3f"
          ",\"idle_bytes_per_round\":%" PRIu64 ",\"replica_checks\":%u,\"hostile_sent\":%" PRIu64
          ",\"hostile_refused\":%" PRIu64 ",\"wipes\":%" PRIu64 ",\"fences\":%" PRIu64
          ",\"resize_to\":%u,\"ring_epoch\":%" PRIu64 ",\"resize_rounds\":%" PRIu64 "}\n",
          r->ok ? "ok" : "failed", r->acked_writes, r->rejected_writes, r->rounds_total, r->rounds_to_converge,
          r->rounds_after_heal, r->messages, r->bytes, r->bytes_push, r->bytes_ae, r->bytes_repair, r->bytes_gc,
          r->bytes_to_converge, r->messages_lost, r->messages_duplicated, r->messages_late, r->restarts, r->partitions, r->expired,
          r->gc_collected, r->entries_applied, r->entry_bytes_mean, r->bytes_per_update, r->optimum_bytes_per_update,
          r->ratio, r->idle_bytes_per_round, r->checks_run, r->hostile_sent, r->hostile_refused, r->wipes, r->fences,
          o->resize_to, r->ring_epoch, r->resize_rounds);
}

static void usage(void) {
  fprintf(stderr,
          "usage: sim [--seed S] [--nodes N] [--replicas R] [--shards SH] [--keys K] [--writes W]\n"
          "           [--loss P] [--heal-loss P] [--dup P] [--delay P] [--latency L] [--partitions] [--restarts] [--wipes] [--skew]\n"
          "           [--fanout F] [--rounds-max M] [--fault-rounds F] [--settle-rounds S] [--value-bytes B]\n"
          "           [--fresh-keys] [--deletes P] [--contexts P] [--grace-ms MS] [--skew-ms MS]\n"
          "           [--max-skew-ms MS] [--max-siblings S] [--interval-ms MS] [--no-context-check] [--verbose]\n"
          "           [--partition-rounds P] [--trace-key K] [--hostile] [--collect-check]\n"
          "           [--resize M [--resize-round R]]   (RingControl resizes to M nodes: R <= M <= 64, no --wipes)\n"
          "           [--break skip-rows|drop-value|confirm-early]   (oracle self-tests: a broken executor)\n"
          "       sim --sweep [--seed S] [--sweep-seeds K] [--out sim/results.json] [--nodes-max N]\n"
          "   Every policy (gossip, retries, anti-entropy, expiry, collection) is the core's.\n");
  exit(2);
}

/* --------------------------------------------------------------------------------------- */

typedef struct {
  uint32_t nodes, replicas, shards, writes, seeds;
  bool ok;
  int64_t rounds[16];           /* per seed; -1 when it never converged */
  int64_t rounds_max, rounds_median;
  double bytes_per_update, optimum, ratio, idle, entry_bytes;   /* means over seeds */
  uint64_t messages, bytes, push, ae, repair;                   /* the first seed's */
  double seconds;
} sweep_row;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The scale experiment: a burst of writes to new keys at random replicas in round 0, 10%
 * loss on every leg throughout, then rounds until every shard's replicas are digest-equal.
 * At the real shard count, with enough writes that the core's limits bind: every node
 * pushes more changes than one round carries (PUSH_CANDIDATES_MAX, 512), and anti-entropy
 * meets more differing shards than one comparison names (AE_SHARDS_MAX, 64). R=3: 600
 * client writes per node (614,400 keys at N=1024, 37 per shard); R=N: 600 keys, every
 * node relaying all of them. */
#define SWEEP_SHARDS 16384u
#define SWEEP_WRITES_PER_NODE 600u
static void sweep_opts(sim_opts *o, const sim_opts *base, uint64_t seed, uint32_t n, uint32_t r) {
  *o = *base;   /* the flags given on the command line */
  o->seed = seed;
  o->nodes = n;
  o->replicas = r;
  o->shards = SWEEP_SHARDS;
  o->writes = r == n ? SWEEP_WRITES_PER_NODE : SWEEP_WRITES_PER_NODE * n;
  o->keys = o->writes;
  o->fresh_keys = true;
  o->delete_ratio = 0;
  o->context_ratio = 0;
  o->loss = 0.1;
  o->heal_loss = 0.1;
  o->fault_rounds = 1;
  o->rounds_max = 200;
  o->settle_rounds = 10;
  o->check_contexts = n <= 64;
}

/* What the sweep runs, for the record. */
static void policy_string(const sim_opts *o, char *out, size_t cap) {
  snprintf(out, cap, "the core's (wasm/src/step.c), --fanout %u --interval-ms %" PRIu64, o->fanout, o->interval_ms);
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* Runs the N = 8, 16, ..., nodes_max sweep for R = 3 and R = N under one policy, printing
 * a table row per configuration. Returns false when any run failed an oracle. */
static bool run_sweep(const sim_opts *base, uint32_t seeds, uint32_t nodes_max, sweep_row *rows, size_t *nrows,
                      char *policy, size_t policy_cap) {
  uint64_t seed = base->seed;
  bool all_ok = true;
  policy_string(base, policy, policy_cap);
  printf("seeds %" PRIu64 "..%" PRIu64 ", 10%% loss on every message, writes in round 0 at random replicas\n", seed,
         seed + seeds - 1);
  printf("policy: %s\n", policy);
  printf("%6s %6s %7s %12s %7s %7s %12s %12s %7s %9s %8s\n", "N", "R", "writes", "rounds(max)", "median", "target",
         "bytes/upd", "optimum", "ratio", "idle B/r", "secs");
  *nrows = 0;
  for (uint32_t n = 8; n <= nodes_max; n *= 2) {
    uint32_t rs[2] = {3, n};
    for (int i = 0; i < 2; i++) {
      sweep_row *row = &rows[(*nrows)++];
      memset(row, 0, sizeof(*row));
      row->ok = true;
      row->seeds = seeds;
      double t0 = now_s();
      for (uint32_t k = 0; k < seeds; k++) {
        sim_opts o;
        sweep_opts(&o, base, seed + k, n, rs[i]);
        sim_result r;
        bool ok = sim_run(&o, &r);
        row->nodes = n;
        row->replicas = rs[i];
        row->shards = o.shards;
        row->writes = o.writes;
        row->rounds[k] = r.rounds_to_converge;
        row->bytes_per_update += r.bytes_per_update / seeds;
        row->optimum += r.optimum_bytes_per_update / seeds;
        row->ratio += r.ratio / seeds;
        row->idle += (double)r.idle_bytes_per_round / seeds;
        row->entry_bytes += r.entry_bytes_mean / seeds;
        if (k == 0) {
          row->messages = r.converge_messages;
          row->bytes = r.bytes_to_converge;
          row->push = r.converge_bytes_push;
          row->ae = r.converge_bytes_ae;
          row->repair = r.converge_bytes_repair;
        }
        if (!ok) {
          sim_print_json(stderr, &o, &r);
          row->ok = false;
          all_ok = false;
        }
        sim_result_free(&r);
      }
      row->seconds = now_s() - t0;
      int64_t sorted[16];
      memcpy(sorted, row->rounds, seeds * sizeof(int64_t));
      qsort(sorted, seeds, sizeof(int64_t), cmp_i64);
      row->rounds_max = sorted[0] < 0 ? -1 : sorted[seeds - 1];
      row->rounds_median = sorted[seeds / 2];
      double target = log2((double)n) + 3;
      printf("%6u %6u %7u %8" PRId64 " %3s %7" PRId64 " %7.0f %12.1f %12.1f %7.2f %9.0f %8.1f\n", n, rs[i], row->writes,
             row->rounds_max, !row->ok ? "!!" : (row->rounds_max >= 0 && row->rounds_max <= target ? "ok" : ">"),
             row->rounds_median, target, row->bytes_per_update, row->optimum, row->ratio, row->idle, row->seconds);
      fflush(stdout);
    }
  }
  return all_ok;
}

static void write_sweep_json(FILE *f, const char *name, const char *policy, const sweep_row *rows, size_t nrows) {
  fprintf(f, "  \"%s\": {\"policy\": \"%s\", \"rows\": [\n", name, policy);
  for (size_t i = 0; i < nrows; i++) {
    const sweep_row *w = &rows[i];
    fprintf(f,
            "    {\"nodes\": %u, \"replicas\": %u, \"shards\": %u, \"writes\": %u, \"ok\": %s, "
            "\"rounds_to_converge\": %" PRId64 ", \"rounds_median\": %" PRId64 ", \"rounds_per_seed\": [",
            w->nodes, w->replicas, w->shards, w->writes, w->ok ? "true" : "false", w->rounds_max, w->rounds_median);
    for (uint32_t k = 0; k < w->seeds; k++) fprintf(f, "%s%" PRId64, k ? ", " : "", w->rounds[k]);
    fprintf(f,
            "], \"target_rounds\": %.2f, \"bytes_per_update\": %.1f, \"optimum_bytes_per_update\": %.1f, "
            "\"ratio\": %.3f, \"idle_bytes_per_round\": %.0f, \"entry_bytes_mean\": %.1f, \"first_seed\": "
            "{\"messages\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"bytes_push\": %" PRIu64 ", \"bytes_ae\": %" PRIu64
            ", \"bytes_repair\": %" PRIu64 "}}%s\n",
            log2((double)w->nodes) + 3, w->bytes_per_update, w->optimum, w->ratio, w->idle, w->entry_bytes, w->messages,
            w->bytes, w->push, w->ae, w->repair, i + 1 < nrows ? "," : "");
  }
  fprintf(f, "  ]},\n");
}

static int sweep(const sim_opts *base, uint32_t seeds, const char *out_path,
                 uint32_t nodes_max) {
  uint64_t seed = base->seed;
  static sweep_row rows[32];
  size_t nrows = 0;
  char policy[400];
  int rc = 0;
  if (seeds < 1) seeds = 1;
  if (seeds > 16) seeds = 16;
  if (!run_sweep(base, seeds, nodes_max, rows, &nrows, policy, sizeof(policy))) rc = 1;

  /* Series: traffic over time (a burst, then idle), and keys per node under constant writes. */
  sim_opts ot = *base;
  ot.seed = seed;
  ot.nodes = 64;
  ot.replicas = 3;
  ot.keys = 2000;
  ot.writes = 600;
  ot.fault_rounds = 10;
  ot.loss = 0.1;
  ot.heal_loss = 0.1;
  ot.fresh_keys = false;
  ot.rounds_max = 200;
  ot.settle_rounds = 0;
  ot.series_rounds = 120;
  sim_result rt;
  if (!sim_run(&ot, &rt)) {
    sim_print_json(stderr, &ot, &rt);
    rc = 1;
  }

  sim_opts ok_ = *base;
  ok_.seed = seed;
  ok_.nodes = 32;
  ok_.replicas = 3;
  ok_.keys = 4000;
  ok_.writes = 4000;
  ok_.fresh_keys = true;
  ok_.delete_ratio = 0;
  ok_.context_ratio = 0;
  ok_.fault_rounds = 100;
  ok_.loss = 0.1;
  ok_.heal_loss = 0.1;
  ok_.settle_rounds = 0;
  ok_.series_rounds = 110;
  sim_result rk;
  if (!sim_run(&ok_, &rk)) {
    sim_print_json(stderr, &ok_, &rk);
    rc = 1;
  }

  FILE *f = fopen(out_path, "w");
  if (f == NULL) {
    perror(out_path);
    return 2;
  }
  fprintf(f, "{\n  \"seed\": %" PRIu64 ",\n  \"seeds\": %u,\n  \"loss\": 0.1,\n", seed, seeds);
  write_sweep_json(f, "sweep", policy, rows, nrows);
  fprintf(f, "  \"traffic\": {\"nodes\": %u, \"replicas\": %u, \"writes\": %u, \"write_rounds\": %u, "
             "\"loss\": %g, \"bytes_per_round\": [", ot.nodes, ot.replicas, ot.writes, ot.fault_rounds, ot.loss);
  for (uint32_t i = 0; i < rt.series_len; i++) fprintf(f, "%s%" PRIu64, i ? "," : "", rt.series_bytes[i]);
  fprintf(f, "]},\n  \"keys_per_node\": {\"nodes\": %u, \"replicas\": %u, \"writes_per_round\": %u, "
             "\"write_rounds\": %u, \"min\": [", ok_.nodes, ok_.replicas, ok_.writes / ok_.fault_rounds, ok_.fault_rounds);
  for (uint32_t i = 0; i < rk.series_len; i++) fprintf(f, "%s%u", i ? "," : "", rk.series_keys_min[i]);
  fprintf(f, "], \"mean\": [");
  for (uint32_t i = 0; i < rk.series_len; i++) fprintf(f, "%s%.2f", i ? "," : "", rk.series_keys_mean[i]);
  fprintf(f, "], \"max\": [");
  for (uint32_t i = 0; i < rk.series_len; i++) fprintf(f, "%s%u", i ? "," : "", rk.series_keys_max[i]);
  fprintf(f, "]}\n}\n");
  fclose(f);
  printf("wrote %s\n", out_path);
  sim_result_free(&rt);
  sim_result_free(&rk);
  return rc;
}

/* --------------------------------------------------------------------------------------- */

static const char *next_arg(int argc, char **argv, int *i) {
  if (*i + 1 >= argc) usage();
  return argv[++*i];
}

int main(int argc, char **argv) {
  sim_opts o;
  sim_opts_default(&o);
  bool do_sweep = false;
  const char *out = "sim/results.json";
  uint32_t nodes_max = 1024;
  uint32_t sweep_seeds = 3;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
#define U32(name, field) else if (strcmp(a, name) == 0) o.field = (uint32_t)strtoul(next_arg(argc, argv, &i), NULL, 10)
#define U64(name, field) else if (strcmp(a, name) == 0) o.field = strtoull(next_arg(argc, argv, &i), NULL, 10)
#define DBL(name, field) else if (strcmp(a, name) == 0) o.field = strtod(next_arg(argc, argv, &i), NULL)
#define FLAG(name, field, v) else if (strcmp(a, name) == 0) o.field = v
    if (strcmp(a, "--sweep") == 0) do_sweep = true;
    else if (strcmp(a, "--out") == 0) out = next_arg(argc, argv, &i);
    else if (strcmp(a, "--sweep-seeds") == 0) sweep_seeds = (uint32_t)strtoul(next_arg(argc, argv, &i), NULL, 10);
    else if (strcmp(a, "--nodes-max") == 0) nodes_max = (uint32_t)strtoul(next_arg(argc, argv, &i), NULL, 10);
    U64("--seed", seed);
    U32("--nodes", nodes);
    U32("--replicas", replicas);
    U32("--shards", shards);
    U32("--keys", keys);
    U32("--writes", writes);
    U32("--fanout", fanout);
    U32("--value-bytes", value_bytes);
    DBL("--loss", loss);
    DBL("--heal-loss", heal_loss);
    DBL("--dup", dup);
    DBL("--delay", delay);
    U32("--latency", latency_rounds_max);
    FLAG("--partitions", partitions, true);
    FLAG("--restarts", restarts, true);
    FLAG("--wipes", wipes, true);
    FLAG("--skew", skew, true);
    U32("--fault-rounds", fault_rounds);
    U32("--partition-rounds", partition_rounds_max);
    U32("--rounds-max", rounds_max);
    U32("--settle-rounds", settle_rounds);
    U64("--skew-ms", skew_ms_max);
    U64("--max-skew-ms", max_clock_skew_ms);
    U64("--grace-ms", tombstone_grace_ms);
    U32("--max-siblings", max_siblings);
    DBL("--deletes", delete_ratio);
    DBL("--contexts", context_ratio);
    FLAG("--fresh-keys", fresh_keys, true);
    FLAG("--no-context-check", check_contexts, false);
    U64("--interval-ms", interval_ms);
    FLAG("--verbose", verbose, true);
    FLAG("--hostile", hostile, true);
    FLAG("--collect-check", collect_check, true);
    U32("--resize", resize_to);
    U32("--resize-round", resize_round);
    else if (strcmp(a, "--trace-key") == 0) o.trace_key = strtoll(next_arg(argc, argv, &i), NULL, 10);
    else if (strcmp(a, "--break") == 0) {
      const char *m = next_arg(argc, argv, &i);
      if (strcmp(m, "skip-rows") == 0) o.break_mode = SIM_BREAK_SKIP_ROWS;
      else if (strcmp(m, "drop-value") == 0) o.break_mode = SIM_BREAK_DROP_VALUE;
      else if (strcmp(m, "confirm-early") == 0) o.break_mode = SIM_BREAK_CONFIRM_EARLY;
      else usage();
    }
    else usage();
  }
  if (o.interval_ms == 0) usage();
  if (do_sweep) return sweep(&o, sweep_seeds, out, nodes_max);
  if (o.nodes == 0 || o.replicas == 0 || o.replicas > o.nodes || o.shards == 0 || o.keys == 0) usage();
  /* A resize keeps REPLICAS, never goes below it, and is not mixed with wipes (a wipe's
   * oracles judge one placement); node ids stay below 64 (the placement masks). */
  if (o.resize_to != 0 && (o.resize_to < o.replicas || o.resize_to > 64 || o.nodes > 64 || o.wipes || o.hostile)) usage();
  if (o.fresh_keys && o.keys < o.writes) o.keys = o.writes;
  sim_result r;
  bool ok = sim_run(&o, &r);
  sim_print_json(stdout, &o, &r);
  if (!ok) fprintf(stderr, "sim: FAILED seed %" PRIu64 " check %s: %s\n", o.seed, r.failed_check, r.failed_detail);
  sim_result_free(&r);
  return ok ? 0 : 1;
}
