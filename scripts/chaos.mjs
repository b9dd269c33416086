// `npm run chaos`: a bounded fault-injection scenario against an 8-node cluster in
// workerd (Miniflare) on 127.0.0.1, with FAULTS enabled.
//
// Writers PUT and DELETE (blind, and with a context read from a replica) at random
// replicas of a small key set (?node=), while the scenario drops 30% of gossip
// messages, partitions the cluster, skews one node's clock (within MAX_CLOCK_SKEW_MS) and
// two nodes apart by more than it,
// crashes single nodes (ctx.abort()) and kills and restarts the whole runtime on the
// same persisted state. Every acknowledged write is recorded: (key, hlc, node, deleted,
// value). Then the faults are cleared, the cluster must report `converged`, and:
//   - every replica of every key holds the same versions (GET ?node=&siblings=1);
//   - no acknowledged write is lost: each key's winner (highest (hlc, node)) is its
//     acknowledged write with the highest (hlc, node), value included; a tombstone winner
//     means the key reads 404. A winner above every acknowledged write is allowed only
//     when a write to that key went unanswered (its response never arrived).
// Client errors during faults are allowed and counted. Prints a report; exits 1 on any
// violation, 2 when the scenario itself could not run.
//
//   node scripts/chaos.mjs [--short] [--seconds=N] [--seed=N] [--keys=N] [--writers=N] [--inject-lost]
//
// --short is the ~30 s version `npm test` runs (tests/chaos/chaos.test.mjs); the default
// is ~2 min of faults. The seed fixes every choice the script makes (which node, which
// split, which key), not the timing of the runtime.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startCluster } from "../tests/integration/helpers.mjs";
import { clusterStatus, kvPath, request, sleep, waitConverged } from "../bench/lib.mjs";

process.env.WRANGLER_SEND_METRICS = "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";

const { values: args } = parseArgs({
  options: {
    short: { type: "boolean", default: false },
    seconds: { type: "string" },
    seed: { type: "string" },
    keys: { type: "string" },
    writers: { type: "string" },
    quiet: { type: "boolean", default: false },
    // Checks the checker: records one acknowledged write that never happened (above every
    // real one), so the run must report exactly one lost write and exit 1.
    "inject-lost": { type: "boolean", default: false },
  },
});

const SECONDS = Number(args.seconds ?? (args.short ? 30 : 120));
const SEED = Number(args.seed ?? Date.now() % 1_000_000);
const KEYS = Number(args.keys ?? (args.short ? 24 : 48));
const WRITERS = Number(args.writers ?? 6);
const N = 8;
const R = 3;
const GOSSIP_INTERVAL_MS = 200;
const REQUEST_TIMEOUT_MS = 8_000;
const CONVERGE_TIMEOUT_MS = 240_000;
const DROP = 0.3;
const SKEW_MS = 3_000;
// Two nodes skewed apart by more than MAX_CLOCK_SKEW_MS (60 s): each defers the other's
// versions (they wait, unapplied) until the skews are gone.
const FAR_SKEW_MS = 40_000;

const log = (...a) => {
  if (!args.quiet) console.log(`chaos ${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s:`, ...a);
};
const t0 = performance.now();

/** mulberry32: a small seeded PRNG, so a seed fixes the scenario's choices. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = prng(SEED);
const pick = (xs) => xs[Math.floor(rand() * xs.length)];

function shuffledNodes() {
  const nodes = Array.from({ length: N }, (_, i) => i);
  for (let i = nodes.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [nodes[i], nodes[j]] = [nodes[j], nodes[i]];
  }
  return nodes;
}

// ---------------------------------------------------------------------------------------
// The cluster, restartable on its persisted state.

const dir = mkdtempSync(join(tmpdir(), "ringkv-chaos-"));
const vars = {
  CLUSTER_SIZE: String(N),
  REPLICAS: String(R),
  // 2 x REPLICAS x MAX_KEY_BYTES stays within 32 MiB (the core refuses more).
  MAX_KEY_BYTES: String(Math.min(4 << 20, Math.floor((32 << 20) / (2 * R)))),
  GOSSIP_INTERVAL_MS: String(GOSSIP_INTERVAL_MS),
  CACHE_TTL_SECONDS: "0",
  FAULTS: "1",
  TOKEN_SECRET: "chaos-secret",
};
let cluster;
let url; // undefined while the runtime is down

async function startRuntime() {
  cluster = await startCluster({ vars, persistDir: dir });
  url = cluster.url;
}

async function stopRuntime() {
  url = undefined;
  const c = cluster;
  cluster = undefined;
  if (c) await c.dispose();
}

// ---------------------------------------------------------------------------------------
// Faults.

let faults = { drop: 0, partitions: [], skew_ms: {} };
const counts = { restarts: 0, crashes: 0, fault_changes: 0 };

async function setFaults(next) {
  faults = next;
  counts.fault_changes++;
  log(`faults: ${JSON.stringify(next)}`);
  await applyFaults(10_000);
}

/** Sends the current faults to every node; retries until every node took them or the
 *  time runs out (returns false). */
async function applyFaults(timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (url !== undefined) {
      const r = await request(`${url}/v1/admin/faults`, {
        method: "POST",
        body: JSON.stringify(faults),
        headers: { "Content-Type": "application/json" },
        timeoutMs: REQUEST_TIMEOUT_MS,
      });
      if (r.status === 200) return true;
      if (r.status === 404) throw new Error("POST /v1/admin/faults answered 404: FAULTS is not enabled in the Worker");
    }
    if (performance.now() > deadline) return false;
    await sleep(100);
  }
}

async function crash(node) {
  counts.crashes++;
  log(`crash node ${node}`);
  const r = await request(`${url}/v1/admin/nodes/${node}/crash`, { method: "POST", timeoutMs: REQUEST_TIMEOUT_MS });
  if (r.status !== 200) log(`crash node ${node}: answered ${r.status || r.error}`);
}

async function restartRuntime() {
  counts.restarts++;
  log("kill the runtime (dispose Miniflare)");
  await stopRuntime();
  await sleep(300);
  await startRuntime();
  log(`runtime restarted on the same state at ${url}`);
}

// ---------------------------------------------------------------------------------------
// Writers.

const keys = Array.from({ length: KEYS }, (_, i) => `chaos/${SEED}/${i}`);
const replicasOf = new Map();
/** key -> acknowledged writes [{hlc: bigint, node: number, deleted, value}] */
const acked = new Map(keys.map((k) => [k, []]));
/** key -> number of writes whose outcome is unknown (no answer, 5xx) */
const unknown = new Map(keys.map((k) => [k, 0]));
const stats = { attempted: 0, acked: 0, puts: 0, deletes: 0, context_writes: 0, errors: {}, reads: 0 };
const countError = (what) => {
  stats.errors[what] = (stats.errors[what] ?? 0) + 1;
};

let writing = true;
let writeNo = 0;

async function writer(id) {
  const r = prng(SEED * 31 + id);
  while (writing) {
    const base = url;
    if (base === undefined) {
      await sleep(50);
      continue;
    }
    const key = keys[Math.floor(r() * keys.length)];
    const replicas = replicasOf.get(key);
    const node = replicas[Math.floor(r() * replicas.length)];
    const deleted = r() < 0.15;
    const headers = {};
    if (r() < 0.3) {
      // A context write: read one replica's versions, then supersede exactly those.
      const from = replicas[Math.floor(r() * replicas.length)];
      stats.reads++;
      const g = await request(base + kvPath(key, `?node=${from}&siblings=1`), { timeoutMs: REQUEST_TIMEOUT_MS });
      if (g.status === 200 && g.json?.context) {
        headers["X-Ring-Context"] = g.json.context;
        stats.context_writes++;
      }
    }
    const value = `${key}|w${id}|${writeNo++}`;
    stats.attempted++;
    if (deleted) stats.deletes++;
    else stats.puts++;
    const w = await request(base + kvPath(key, `?node=${node}`), {
      method: deleted ? "DELETE" : "PUT",
      body: deleted ? undefined : value,
      headers: deleted ? headers : { ...headers, "Content-Type": "text/plain" },
      timeoutMs: REQUEST_TIMEOUT_MS,
    });
    if (w.status === 200) {
      stats.acked++;
      acked.get(key).push({ hlc: BigInt(w.json.hlc), node: Number(w.json.node), deleted, value: deleted ? "" : value });
      if (Number(w.json.node) !== node) throw new Error(`write at ?node=${node} acknowledged by node ${w.json.node}`);
    } else if (w.status === 409) {
      countError("409");
    } else if (w.status >= 400 && w.status < 500) {
      // 400 with a token read from a node that lost it in a crash is possible; it did not write.
      countError(String(w.status));
    } else {
      // No answer, or 5xx: the write may or may not have happened.
      unknown.set(key, unknown.get(key) + 1);
      countError(w.status === 0 ? `network:${w.error}` : String(w.status));
      await sleep(20);
    }
  }
}

// ---------------------------------------------------------------------------------------
// The check.

const cmp = (a, b) => (a.hlc !== b.hlc ? (a.hlc < b.hlc ? -1 : 1) : a.node - b.node);
const maxVersion = (vs) => vs.reduce((m, v) => (m === undefined || cmp(v, m) > 0 ? v : m), undefined);

async function check() {
  const violations = [];
  let keysWithValue = 0;
  let keysDeleted = 0;
  let keysAbsent = 0;
  for (const key of keys) {
    const copies = [];
    for (const node of replicasOf.get(key)) {
      let g;
      for (let attempt = 0; attempt < 5; attempt++) {
        g = await request(url + kvPath(key, `?node=${node}&siblings=1`), { timeoutMs: REQUEST_TIMEOUT_MS });
        if (g.status === 200 || g.status === 404) break;
        await sleep(200);
      }
      if (g.status === 404) copies.push({ node, siblings: [] });
      else if (g.status === 200) {
        copies.push({
          node,
          siblings: g.json.siblings
            .map((s) => ({ hlc: BigInt(s.hlc), node: Number(s.node), deleted: s.deleted, value: s.deleted ? "" : s.value }))
            .sort(cmp),
        });
      } else {
        violations.push(`${key}: replica ${node} answered ${g.status || g.error}`);
      }
    }
    if (copies.length === 0) continue;
    // Every replica equal.
    const canon = (c) => JSON.stringify(c.siblings.map((s) => [s.hlc.toString(), s.node, s.deleted, s.value]));
    const first = canon(copies[0]);
    for (const c of copies.slice(1)) {
      if (canon(c) !== first) {
        violations.push(`${key}: replicas differ: node ${copies[0].node} ${first} vs node ${c.node} ${canon(c)}`);
      }
    }
    // No acknowledged write lost.
    const winner = maxVersion(copies[0].siblings);
    const best = maxVersion(acked.get(key));
    if (winner === undefined) keysAbsent++;
    else if (winner.deleted) keysDeleted++;
    else keysWithValue++;
    if (best === undefined) {
      if (winner !== undefined && unknown.get(key) === 0) {
        violations.push(`${key}: holds (${winner.hlc}, ${winner.node}) but no write to it was acknowledged or left unanswered`);
      }
      continue;
    }
    if (winner === undefined) {
      violations.push(`${key}: LOST: no version at all, acknowledged (${best.hlc}, ${best.node}${best.deleted ? ", delete" : ""})`);
      continue;
    }
    const c = cmp(winner, best);
    if (c < 0) {
      violations.push(
        `${key}: LOST: winner (${winner.hlc}, ${winner.node}${winner.deleted ? ", tombstone" : ""}) is below the acknowledged (${best.hlc}, ${best.node}${best.deleted ? ", delete" : ""})`,
      );
    } else if (c === 0) {
      if (winner.deleted !== best.deleted || winner.value !== best.value) {
        violations.push(
          `${key}: winner (${winner.hlc}, ${winner.node}) holds ${JSON.stringify(winner.deleted ? "<tombstone>" : winner.value)}, acknowledged ${JSON.stringify(best.deleted ? "<delete>" : best.value)}`,
        );
      }
    } else if (unknown.get(key) === 0) {
      violations.push(`${key}: winner (${winner.hlc}, ${winner.node}) is above every acknowledged write, and no write went unanswered`);
    }
    // The plain GET agrees with the winner (404 for a tombstone).
    const plain = await request(url + kvPath(key, `?node=${copies[0].node}`), { timeoutMs: REQUEST_TIMEOUT_MS });
    const expect = winner.deleted ? 404 : 200;
    if (plain.status !== expect || (expect === 200 && plain.text !== winner.value)) {
      violations.push(`${key}: GET ?node=${copies[0].node} answered ${plain.status} ${JSON.stringify(plain.text?.slice(0, 80))}, expected ${expect}`);
    }
  }
  return { violations, keysWithValue, keysDeleted, keysAbsent };
}

// ---------------------------------------------------------------------------------------
// The scenario.

async function main() {
  log(`seed ${SEED}, ${SECONDS} s of faults, ${KEYS} keys, ${WRITERS} writers, N=${N} R=${R}, gossip every ${GOSSIP_INTERVAL_MS} ms, state in ${dir}`);
  await startRuntime();
  if (!(await applyFaults(10_000))) throw new Error("could not clear the faults at start");
  for (const key of keys) {
    const p = await request(`${url}/v1/cluster/placement?key=${encodeURIComponent(key)}`);
    if (p.status !== 200) throw new Error(`placement of ${key}: ${p.status}`);
    replicasOf.set(key, p.json.replicas.map(Number));
  }

  const writers = Array.from({ length: WRITERS }, (_, i) => writer(i));
  const faultsStart = performance.now();
  const at = async (fraction) => {
    const wait = faultsStart + fraction * SECONDS * 1000 - performance.now();
    if (wait > 0) await sleep(wait);
  };
  const split = () => {
    const nodes = shuffledNodes();
    const cut = 2 + Math.floor(rand() * (N - 3));
    return [nodes.slice(0, cut).sort((a, b) => a - b), nodes.slice(cut).sort((a, b) => a - b)];
  };
  // Single-node crashes all along, besides the scheduled ones below.
  let faulting = true;
  const crashEveryMs = Math.max(3_000, (SECONDS * 1000) / 12);
  const crasher = (async () => {
    for (let next = faultsStart + crashEveryMs; ; next += crashEveryMs) {
      while (faulting && performance.now() < next) await sleep(Math.min(200, next - performance.now()));
      if (!faulting) return;
      if (url !== undefined) await crash(pick(shuffledNodes()));
    }
  })();
  let failure;
  try {
    if (SECONDS >= 60) {
      await at(0.05);
      await restartRuntime();
    }
    await at(0.1);
    await setFaults({ drop: DROP, partitions: [], skew_ms: {} });
    await at(0.2);
    const [ahead, behind] = shuffledNodes();
    await setFaults({ drop: 0, partitions: [], skew_ms: { [String(ahead)]: FAR_SKEW_MS, [String(behind)]: -FAR_SKEW_MS } });
    await at(0.3);
    await setFaults({ drop: 0, partitions: split(), skew_ms: { [String(pick(shuffledNodes()))]: SKEW_MS } });
    await at(0.5);
    await restartRuntime();
    await applyFaults(10_000);
    await at(0.6);
    await setFaults({ drop: DROP, partitions: split(), skew_ms: {} });
    await at(0.68);
    const [a, b] = shuffledNodes();
    await Promise.all([crash(a), crash(b)]);
    await at(0.78);
    await restartRuntime();
    await applyFaults(10_000);
    await at(0.85);
    await setFaults({ drop: DROP, partitions: [], skew_ms: {} });
    await at(1);
  } catch (err) {
    failure = err;
  } finally {
    faulting = false;
    writing = false;
    await crasher.catch((err) => (failure ??= err));
    await Promise.all(writers.map((w) => w.catch((err) => (failure ??= err))));
  }
  if (failure) throw failure;
  log(`writes stopped: ${stats.acked} acknowledged of ${stats.attempted}`);

  if (args["inject-lost"]) {
    const best = maxVersion(acked.get(keys[0])) ?? { hlc: 0n, node: 0 };
    acked.get(keys[0]).push({ hlc: best.hlc + (1n << 16n), node: 0, deleted: false, value: "never written" });
    log(`--inject-lost: recorded a fake acknowledgement for ${keys[0]}`);
  }

  // Heal, converge, check.
  faults = { drop: 0, partitions: [], skew_ms: {} };
  if (!(await applyFaults(30_000))) throw new Error("could not clear the faults");
  log("healed: faults cleared on every node; waiting for convergence");
  const healed = performance.now();
  let converged;
  try {
    converged = await waitConverged(url, { timeoutMs: CONVERGE_TIMEOUT_MS, everyMs: 250 });
  } catch {
    converged = undefined;
  }
  const convergeMs = performance.now() - healed;
  log(converged ? `converged ${(convergeMs / 1000).toFixed(1)} s after healing` : "NOT converged");
  const result = await check();
  if (!converged) result.violations.unshift(`the cluster did not converge within ${CONVERGE_TIMEOUT_MS / 1000} s of healing`);
  const status = await clusterStatus(url);

  const report = {
    seed: SEED,
    seconds: SECONDS,
    keys: KEYS,
    writers: WRITERS,
    cluster: { size: N, replicas: R, gossip_interval_ms: GOSSIP_INTERVAL_MS },
    faults: { ...counts, drop: DROP, skew_ms: SKEW_MS },
    writes: stats,
    unanswered_writes: [...unknown.values()].reduce((a, b) => a + b, 0),
    converged_after_heal_ms: converged ? Math.round(convergeMs) : null,
    final: {
      keys_with_value: result.keysWithValue,
      keys_deleted: result.keysDeleted,
      keys_absent: result.keysAbsent,
      gossip: status?.nodes.map((n) => n.gossip && { id: n.id, ...n.gossip }),
      // What nodes refused or deferred of each other (hlc_ahead: the far-skew phase).
      refused: status?.nodes.map((n) => n.refused && { id: n.id, ...n.refused }),
    },
    violations: result.violations,
  };
  return report;
}

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    writing = false;
    stopRuntime()
      .catch(() => {})
      .finally(() => {
        rmSync(dir, { recursive: true, force: true });
        process.exit(130);
      });
  });
}

let exitCode = 0;
try {
  const report = await main();
  console.log("\nringkv chaos report");
  console.log(`  seed ${report.seed}; ${report.seconds} s of faults on N=${N} R=${R}; ${report.keys} keys, ${report.writers} writers`);
  console.log(
    `  faults: ${report.faults.restarts} runtime restarts, ${report.faults.crashes} node crashes, ${report.faults.fault_changes} fault settings (drop ${DROP * 100}%, partitions, ${SKEW_MS} ms skew, two nodes ±${FAR_SKEW_MS} ms apart)`,
  );
  console.log(
    `  writes: ${report.writes.attempted} attempted (${report.writes.puts} PUT, ${report.writes.deletes} DELETE, ${report.writes.context_writes} with a context), ${report.writes.acked} acknowledged, ${report.unanswered_writes} unanswered`,
  );
  console.log(`  client errors (allowed): ${JSON.stringify(report.writes.errors)}`);
  console.log(
    `  converged ${report.converged_after_heal_ms === null ? "NOT" : `${(report.converged_after_heal_ms / 1000).toFixed(1)} s after healing`}; final: ${report.final.keys_with_value} keys with a value, ${report.final.keys_deleted} deleted, ${report.final.keys_absent} never written`,
  );
  if (report.violations.length === 0) {
    console.log(`  violations: 0 (every replica equal, 0 acknowledged writes lost)`);
  } else {
    console.log(`  VIOLATIONS: ${report.violations.length}`);
    for (const v of report.violations.slice(0, 50)) console.log(`    - ${v}`);
    exitCode = 1;
  }
  console.log(`CHAOS_REPORT ${JSON.stringify(report)}`);
} catch (err) {
  console.error(`chaos: the scenario failed to run: ${err.stack ?? err}`);
  exitCode = 2;
} finally {
  await stopRuntime().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}
process.exit(exitCode);
