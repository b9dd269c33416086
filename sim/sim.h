/* sim.h: the deterministic cluster simulator: N nodes, each a ringkv_node driven through
 * OP_INIT and OP_STEP as the Durable Object drives it (an executor: events in, actions out;
 * every policy is the core's, wasm/src/step.c), over a simulated network, with in-memory
 * storage standing in for SQLite. One seed (splitmix64) fixes every choice.
 *
 * A run has two phases, as in TigerBeetle's VOPR: faults and client writes (loss,
 * duplication, latency, partitions, restarts, clock skew), then heal and demand
 * convergence, then check the oracles (byte-identical replicas, no lost write, monotonic
 * clocks, consistent digests, contexts that only grow). */
#ifndef SIM_H
#define SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Deliberate mistakes in the simulated executor, to show the oracles catch them: node 0
 * stores no value a put names (drop-value), or writes none of the rows of replies to
 * `loaded` events (skip-rows). */
enum { SIM_BREAK_NONE = 0, SIM_BREAK_SKIP_ROWS = 1, SIM_BREAK_DROP_VALUE = 2, SIM_BREAK_CONFIRM_EARLY = 3 };

typedef struct {
  uint64_t seed;
  uint32_t nodes;
  uint32_t replicas;
  uint32_t shards;
  uint32_t keys;               /* key universe; writes pick among them */
  uint32_t writes;
  uint32_t fanout;
  uint32_t value_bytes;
  double loss;                 /* per message leg, during the fault phase */
  double heal_loss;            /* per message leg, after the heal */
  double dup;                  /* probability that a leg is delivered twice */
  double delay;                /* probability that a push's request leg (during the fault
                                  phase) is delivered once more, after the grace and the
                                  collection it allows have passed */
  uint32_t latency_rounds_max; /* each leg takes 0..max rounds */
  bool partitions;
  uint32_t partition_rounds_max; /* a partition lasts 2..max rounds */
  bool restarts;
  bool wipes;                  /* a node loses its storage and restarts with no state (the
                                  fence), once everything it acknowledged is elsewhere */
  bool skew;
  uint32_t fault_rounds;       /* writes are spread over these rounds */
  uint32_t rounds_max;         /* bound on rounds after the heal */
  uint32_t settle_rounds;      /* rounds run after convergence (must stay converged) */
  uint64_t interval_ms;        /* one round = one gossip interval (Config.gossip_interval_ms) */
  uint64_t skew_ms_max;
  uint64_t max_clock_skew_ms;
  uint64_t tombstone_grace_ms;
  uint32_t max_siblings;
  double delete_ratio;
  double context_ratio;
  bool fresh_keys;             /* every write goes to a key never written before */
  bool check_contexts;
  uint32_t series_rounds;      /* > 0: record per-round series for this many rounds */
  bool constant_writes;        /* writes keep arriving every round for series_rounds */
  int64_t trace_key;           /* >= 0: log every change of this key to stderr */
  int break_mode;              /* SIM_BREAK_*: oracle self-tests only */
  bool hostile;                /* the last node also sends forged messages (hostile.c) */
  bool collect_check;          /* after converging, idle until every tombstone is collected
                                  (oracle "collected": none is left behind for good) */
  bool verbose;
  uint32_t resize_to;          /* > 0: RingControl resizes the cluster to this many nodes
                                  (its control step, as the control object runs it) */
  uint32_t resize_round;       /* the round the resize is asked (0: a third of the faults') */
} sim_opts;

typedef struct {
  bool ok;
  char failed_check[64];
  char failed_detail[512];
  uint64_t acked_writes;
  uint64_t rejected_writes;
  uint64_t rounds_total;
  int64_t rounds_to_converge;        /* after the last write; -1 when it never did */
  int64_t rounds_after_heal;
  uint64_t messages;
  uint64_t bytes;
  uint64_t bytes_push;
  uint64_t bytes_ae;
  uint64_t bytes_repair;
  uint64_t bytes_gc;
  uint64_t bytes_to_converge;        /* from the first write to convergence */
  uint64_t converge_bytes_push;      /* the same, by kind (what the sweep reports) */
  uint64_t converge_bytes_ae;
  uint64_t converge_bytes_repair;
  uint64_t converge_messages;
  uint64_t messages_lost;
  uint64_t messages_duplicated;
  uint64_t messages_late;       /* --delay copies */
  uint64_t restarts;
  uint64_t wipes;                    /* nodes whose storage was wiped (--wipes) */
  uint64_t fences;                   /* of them by the admin fence, once the core said so */
  uint64_t reports;                  /* NodeReports sent to the control object */
  uint64_t partitions;
  uint64_t gc_collected;
  uint64_t expired;
  uint64_t entries_applied;
  double entry_bytes_mean;           /* encoded Entry of a write (key + register + value) */
  double bytes_per_update;
  double optimum_bytes_per_update;   /* (R - 1) x entry_bytes_mean */
  double ratio;
  uint64_t idle_bytes_per_round;     /* traffic in the last settle round */
  uint32_t checks_run;
  uint64_t hostile_sent;             /* forged messages delivered (--hostile) */
  uint64_t hostile_refused;          /* ... that the receiver refused whole */
  uint64_t ring_epoch;               /* RingControl's epoch at the end (--resize) */
  uint64_t resize_rounds;            /* from the ask to the ring's done (--resize) */
  /* Series (when series_rounds > 0): per round. */
  uint32_t series_len;
  uint64_t *series_bytes;
  uint32_t *series_keys_min;
  double *series_keys_mean;
  uint32_t *series_keys_max;
} sim_result;

void sim_opts_default(sim_opts *o);
/* Runs one simulation. Returns true when every oracle held. */
bool sim_run(const sim_opts *o, sim_result *r);
void sim_result_free(sim_result *r);
void sim_print_json(FILE *f, const sim_opts *o, const sim_result *r);

#endif
