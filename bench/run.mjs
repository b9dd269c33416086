// `npm run bench`: the end-to-end figures of SPEC.md's targets table, measured in workerd
// (Miniflare) over HTTP on 127.0.0.1, each against a baseline in the same run.
//
//   e2e       ops/s and p50/p99 of 50/50 GET/PUT over 500 keys, 64-byte values, 16
//             concurrent clients, N=8 R=3, cache off and on, against the bare Durable
//             Object Worker of bench/bare (same routing, one SQL statement per request).
//             The three servers run side by side and are measured in alternating short
//             rounds (the order rotating per round), so machine drift cancels; medians.
//   latency   p50 of a cached GET (X-Ring-Cache: HIT) vs an uncached one, one client,
//             alternating rounds; the bare GET for reference.
//   gossip    bytes on the wire per unique update (400 PUTs to new keys, converged to
//             converged, anti-entropy included) vs the optimum (R-1) x encoded Entry, the
//             Entry encoded exactly (worker/pb.ts) from the stored registers, R=3 and R=8.
//   converge  time from the last acknowledged write of a burst of 600 writes at random
//             replicas (?node=) to `converged`, in ms and in gossip intervals (N=8 R=3).
//   round     cost of one gossip round on a node holding 1k vs 100k keys (N=2 R=2,
//             GOSSIP_INTERVAL_MS=10 so the rate limit does not hide it), timed from
//             outside: a write at node 0 until it is visible at node 1 (?node=1).
//             The keys are loaded through the nodes' own merge path (core-built Push
//             messages of 512 entries sent to both nodes' Durable Objects), because 100k
//             client PUTs at one node take longer than the benchmark should.
//   repair    bytes on the wire to repair one key (1 KiB value) that one replica lacks, in
//             a shard holding 100k keys (SHARDS=16, 64-byte values, N=3 R=3), from
//             converged to converged (every exchange counted, idle ones included), against
//             what shipping the shard would take (its entries, encoded). The keys are
//             seeded through the nodes' merge path (core-built Pushes to /internal/push,
//             tests/integration/seed.mjs): 100k client PUTs would take minutes.
//   cluster   /v1/cluster's time and one node's report (SQL rows read at the node and at
//             RingControl) with 1k vs 1M keys stored at a node (N=8 R=3). The keys are
//             seeded by a FAULTS-only route that inserts rows directly (POST
//             /internal/bulk: no value rows, outside the core, so no digest, count or
//             sequence includes them: inert stored rows, which is what the cost is to be
//             independent of); --cluster-keys=N for another size.
//   autoscale offered load stepping 10 -> 80 -> 30 -> 0 rps on AUTOSCALE=3-8 with short
//             windows (bench/autoscale.mjs): the size over time, the rate each node served,
//             the time from a threshold crossed to the end of its transition; it draws
//             docs/autoscale-size.svg and docs/autoscale-rate.svg.
//   core      the core's own table (bench/core.mjs): read from bench/out/core.json, or
//             produced by scripts/bench-core.sh (npm run bench:core) when that is missing.
//
// Options: --quick (a smoke run: fewer and shorter rounds, 10k keys instead of 100k),
// --only=e2e,latency,gossip,converge,round,bigkey,cluster,autoscale,core, --rounds=N, --seconds=S,
// --big-keys=N, --cluster-keys=N.
// A full run writes bench/results.json and bench/results.md (a partial one, with any of
// these options, writes bench/out/results.partial.*). Exit status 0 even when a target is
// missed (the table says so); non-zero only when the benchmark itself fails.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startCluster } from "../tests/integration/helpers.mjs";
import { Core, Op } from "../worker/core.ts";
import { encode } from "../worker/pb.ts";
import { registerMaker, pushEntries } from "../tests/integration/seed.mjs";
import { benchAutoscale } from "./autoscale.mjs";
import { coreConfig, parseConfig } from "../worker/config.ts";
import {
  clusterStatus,
  gossipTotal,
  kvPath,
  median,
  percentile,
  pool,
  randomValue,
  request,
  root,
  sleep,
  startBare,
  waitConverged,
} from "./lib.mjs";

process.env.WRANGLER_SEND_METRICS = "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    rounds: { type: "string" },
    seconds: { type: "string" },
    "big-keys": { type: "string" },
    "cluster-keys": { type: "string" },
  },
});
const QUICK = args.quick;
const ROUNDS = Number(args.rounds ?? (QUICK ? 2 : 4));
const SECONDS = Number(args.seconds ?? (QUICK ? 2 : 5));
const BIG_KEYS = Number(args["big-keys"] ?? (QUICK ? 10_000 : 100_000));
const SMALL_KEYS = 1000;
const CLUSTER_KEYS = Number(args["cluster-keys"] ?? (QUICK ? 100_000 : 1_000_000));
const SECTIONS = new Set((args.only ?? "e2e,latency,gossip,converge,round,bigkey,repair,cluster,autoscale,core").split(","));

const CLIENTS = 16;
const KEYSPACE = 500;
const VALUE_BYTES = 64;
const GOSSIP_INTERVAL_MS = 1000;
const GOSSIP_UPDATES = 400;
const BURST_WRITES = 600;
const BURST_KEYS = 200;
const CONTENT_TYPE = "application/octet-stream";
const CONVERGE_TIMEOUT_MS = 120_000;

const ringVars = (over = {}) => ({
  CLUSTER_SIZE: "8",
  REPLICAS: "3",
  GOSSIP_INTERVAL_MS: String(GOSSIP_INTERVAL_MS),
  CACHE_TTL_SECONDS: "0",
  TOKEN_SECRET: "bench-secret",
  ...over,
});

const started = new Set();
async function start(kind, options) {
  const server = kind === "bare" ? await startBare(options) : await startCluster(options);
  started.add(server);
  return server;
}
async function stop(server, opts) {
  started.delete(server);
  await server.dispose(opts);
}
async function stopAll() {
  for (const s of [...started]) await stop(s).catch(() => {});
}
process.on("SIGINT", () => stopAll().finally(() => process.exit(130)));

const log = (...a) => console.error("bench:", ...a);
const round1 = (x) => (Number.isFinite(x) ? Math.round(x * 10) / 10 : null);
const results = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? "", node: process.version, load_average_start: loadavg() },
  settings: { quick: QUICK, rounds: ROUNDS, seconds: SECONDS, clients: CLIENTS, keyspace: KEYSPACE, value_bytes: VALUE_BYTES },
};
const rows = []; // [what, measured, baseline, ratio, target, met]

// ---------------------------------------------------------------------------------------
// e2e: 50/50 GET/PUT.

async function preload(url, prefix) {
  const value = randomValue(VALUE_BYTES);
  const failed = (
    await pool(KEYSPACE, CLIENTS, async (i) =>
      (await request(url + kvPath(`${prefix}${i}`), { method: "PUT", body: value, headers: { "Content-Type": CONTENT_TYPE } })).status,
    )
  ).filter((s) => s !== 200).length;
  if (failed > 0) throw new Error(`preload of ${url}: ${failed} PUTs failed`);
}

/** CLIENTS loops of random GET/PUT for `seconds`. Only 200s count as operations. */
async function mixedLoad(url, prefix, seconds) {
  const value = randomValue(VALUE_BYTES);
  const lat = [];
  const hit = [];
  const miss = [];
  const puts = [];
  let ok = 0;
  let errors = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (performance.now() < end) {
        const key = `${prefix}${(Math.random() * KEYSPACE) | 0}`;
        const isGet = Math.random() < 0.5;
        const r = isGet
          ? await request(url + kvPath(key), { timeoutMs: 10_000 })
          : await request(url + kvPath(key), { method: "PUT", body: value, headers: { "Content-Type": CONTENT_TYPE }, timeoutMs: 10_000 });
        if (r.status !== 200) {
          errors++;
          continue;
        }
        ok++;
        lat.push(r.ms);
        if (isGet) (r.headers.get("x-ring-cache") === "HIT" ? hit : miss).push(r.ms);
        else puts.push(r.ms);
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  lat.sort((a, b) => a - b);
  return {
    ops_per_s: ok / elapsed,
    p50_ms: percentile(lat, 0.5),
    p99_ms: percentile(lat, 0.99),
    ops: ok,
    errors,
    get_hits: hit.length,
    get_misses: miss.length,
    get_miss_p50_ms: percentile(miss.sort((a, b) => a - b), 0.5),
    get_hit_p50_ms: percentile(hit.sort((a, b) => a - b), 0.5),
    put_p50_ms: percentile(puts.sort((a, b) => a - b), 0.5),
  };
}

/** Lets earlier load's gossip finish on every ringkv server, so it does not run into the
 *  next measured round. */
async function settle(servers) {
  for (const s of servers) {
    if (s.kind === "bare") continue;
    try {
      await waitConverged(s.server.url, { timeoutMs: 30_000, everyMs: 100 });
    } catch (err) {
      log(`warning: ${err.message}`);
    }
  }
}

async function benchE2E() {
  log("e2e: starting bare, ringkv (cache off), ringkv (cache on)");
  const servers = [
    { kind: "bare", name: "bare DO", server: await start("bare") },
    { kind: "ring", name: "ringkv cache off", server: await start("ring", { vars: ringVars() }) },
    { kind: "ring", name: "ringkv cache on", server: await start("ring", { vars: ringVars({ CACHE_TTL_SECONDS: "5" }) }) },
  ];
  try {
    for (const s of servers) await preload(s.server.url, "e2e/");
    await settle(servers);
    for (const s of servers) await mixedLoad(s.server.url, "e2e/", Math.min(2, SECONDS)); // warm-up
    const runs = servers.map(() => []);
    for (let round = 0; round < ROUNDS; round++) {
      for (let j = 0; j < servers.length; j++) {
        const i = (j + round) % servers.length;
        await settle(servers);
        const r = await mixedLoad(servers[i].server.url, "e2e/", SECONDS);
        runs[i].push(r);
        log(`e2e round ${round + 1}/${ROUNDS} ${servers[i].name}: ${r.ops_per_s.toFixed(0)} ops/s p50 ${r.p50_ms.toFixed(1)} ms p99 ${r.p99_ms.toFixed(1)} ms errors ${r.errors}`);
      }
    }
    const summary = {};
    servers.forEach((s, i) => {
      summary[s.name] = {
        ops_per_s: round1(median(runs[i].map((r) => r.ops_per_s))),
        p50_ms: round1(median(runs[i].map((r) => r.p50_ms))),
        p99_ms: round1(median(runs[i].map((r) => r.p99_ms))),
        errors: runs[i].reduce((a, r) => a + r.errors, 0),
        get_p50_ms: round1(median(runs[i].map((r) => r.get_miss_p50_ms))),
        put_p50_ms: round1(median(runs[i].map((r) => r.put_p50_ms))),
        rounds: runs[i],
      };
    });
    for (const i of [1, 2]) {
      const ratios = runs[i].map((r, k) => r.ops_per_s / runs[0][k].ops_per_s);
      const ratio = median(ratios);
      summary[servers[i].name].ratio_to_bare = Math.round(ratio * 1000) / 1000;
      summary[servers[i].name].ratios = ratios.map((x) => Math.round(x * 1000) / 1000);
      const b = summary["bare DO"];
      const m = summary[servers[i].name];
      const hits = runs[i].reduce((a, r) => a + r.get_hits, 0);
      const gets = runs[i].reduce((a, r) => a + r.get_hits + r.get_misses, 0);
      m.get_hit_rate = gets > 0 ? Math.round((hits / gets) * 1000) / 1000 : null;
      rows.push([
        `e2e ops/s, 50/50 GET/PUT, ${servers[i].name}`,
        `${m.ops_per_s} ops/s (p50 ${m.p50_ms} ms, p99 ${m.p99_ms} ms${hits > 0 ? `, ${Math.round((hits / gets) * 100)}% of GETs hit` : ""})`,
        `${b.ops_per_s} ops/s (p50 ${b.p50_ms} ms, p99 ${b.p99_ms} ms)`,
        `${ratio.toFixed(2)} x`,
        ">= 0.8 x bare",
        ratio >= 0.8,
      ]);
    }
    results.e2e = summary;
  } finally {
    for (const s of servers) await stop(s.server);
  }
}

// ---------------------------------------------------------------------------------------
// latency: cached vs uncached GET.

async function benchLatency() {
  log("latency: cached vs uncached GET p50 (one client)");
  const bare = await start("bare");
  const off = await start("ring", { vars: ringVars() });
  const on = await start("ring", { vars: ringVars({ CACHE_TTL_SECONDS: "60" }) });
  const KEYS = 50;
  const GETS = QUICK ? 100 : 300;
  try {
    for (const s of [bare, off, on]) {
      const value = randomValue(VALUE_BYTES);
      await pool(KEYS, 8, (i) => request(s.url + kvPath(`lat/${i}`), { method: "PUT", body: value }));
    }
    const samples = { hit: [], miss: [], bare: [] };
    const seen = { hit: 0, miss: 0, bare: 0 };
    const measure = async (s, name, wantCache) => {
      for (let i = 0; i < GETS; i++) {
        const r = await request(s.url + kvPath(`lat/${i % KEYS}`), { timeoutMs: 10_000 });
        if (r.status !== 200) continue;
        if (wantCache !== undefined && r.headers.get("x-ring-cache") !== wantCache) continue;
        seen[name]++;
        samples[name].push(r.ms);
      }
    };
    // Fill the cache, then alternate.
    for (let i = 0; i < KEYS; i++) await request(on.url + kvPath(`lat/${i}`));
    for (let round = 0; round < ROUNDS; round++) {
      await measure(on, "hit", "HIT");
      await measure(off, "miss", "MISS");
      await measure(bare, "bare", undefined);
    }
    const p50 = (xs) => round1(percentile([...xs].sort((a, b) => a - b), 0.5));
    const p99 = (xs) => round1(percentile([...xs].sort((a, b) => a - b), 0.99));
    results.latency = {
      cached_get_p50_ms: p50(samples.hit),
      cached_get_p99_ms: p99(samples.hit),
      uncached_get_p50_ms: p50(samples.miss),
      uncached_get_p99_ms: p99(samples.miss),
      bare_get_p50_ms: p50(samples.bare),
      samples: seen,
    };
    rows.push([
      "GET p50, cached (HIT) vs uncached (MISS)",
      `${results.latency.cached_get_p50_ms} ms (p99 ${results.latency.cached_get_p99_ms})`,
      `${results.latency.uncached_get_p50_ms} ms (p99 ${results.latency.uncached_get_p99_ms}); bare GET ${results.latency.bare_get_p50_ms} ms`,
      `${(results.latency.cached_get_p50_ms / results.latency.uncached_get_p50_ms).toFixed(2)} x`,
      "(reported)",
      null,
    ]);
  } finally {
    for (const s of [bare, off, on]) await stop(s);
  }
}

// ---------------------------------------------------------------------------------------
// gossip: bytes per unique update.

/** Every register of every node (the admin dump), by key. */
async function dumpAll(url, size, wanted) {
  const byKey = new Map();
  for (let node = 0; node < size; node++) {
    let cursor = "";
    for (let page = 0; page < 100_000; page++) {
      const r = await request(`${url}/v1/admin/nodes/${node}/keys${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`);
      if (r.status !== 200) throw new Error(`dump of node ${node}: ${r.status} ${r.text}`);
      for (const k of r.json.keys) if (wanted(k.key) && !byKey.has(k.key)) byKey.set(k.key, k);
      if (!r.json.cursor) break;
      cursor = r.json.cursor;
    }
  }
  return byKey;
}

const utf8 = (s) => new TextEncoder().encode(s);

/** The protobuf Entry of a dumped register, with its values, exactly as wasm/ringkv.proto
 *  lays it out. value_hash is a fixed64 (always 8 bytes), so any non-zero stand-in has
 *  the real size. */
function entryBytes(dumped) {
  const dot = (p) => ({ node: Number(p[0]), counter: BigInt(p[1]) });
  const register = {
    siblings: dumped.siblings.map((s) => ({
      dot: { node: Number(s.node), counter: BigInt(s.counter) },
      hlc: BigInt(s.hlc),
      deleted: s.deleted,
      contentType: utf8(s.content_type),
      valueHash: 0x9e3779b97f4a7c15n,
      value: s.encoding === "base64" ? new Uint8Array(Buffer.from(s.value, "base64")) : utf8(s.value),
    })),
    context: { vv: dumped.context.vv.map(dot), dots: dumped.context.dots.map(dot) },
  };
  return encode("Entry", { key: utf8(dumped.key), register }).length;
}

async function benchGossip() {
  results.gossip = {};
  const TRIALS = QUICK ? 1 : 3;
  for (const replicas of [3, 8]) {
    // 2 x REPLICAS x MAX_KEY_BYTES stays within 32 MiB (the core refuses more).
    const maxKeyBytes = String(Math.min(4 << 20, Math.floor((32 << 20) / (2 * replicas))));
    const c = await start("ring", { vars: ringVars({ REPLICAS: String(replicas), MAX_KEY_BYTES: maxKeyBytes }) });
    const trials = [];
    try {
      for (let trial = 0; trial < TRIALS; trial++) {
        log(`gossip: N=8 R=${replicas}, trial ${trial + 1}/${TRIALS}: ${GOSSIP_UPDATES} PUTs to new keys`);
        const before = (await waitConverged(c.url, { timeoutMs: 60_000 })).status;
        const bytes0 = gossipTotal(before, "bytes_sent");
        const messages0 = gossipTotal(before, "messages_sent");
        const prefix = `gossip/r${replicas}/t${trial}/`;
        const failed = (
          await pool(GOSSIP_UPDATES, CLIENTS, async (i) =>
            (await request(c.url + kvPath(`${prefix}${i}`), { method: "PUT", body: randomValue(VALUE_BYTES), headers: { "Content-Type": CONTENT_TYPE } })).status,
          )
        ).filter((st) => st !== 200).length;
        if (failed > 0) throw new Error(`${failed} PUTs failed`);
        const after = (await waitConverged(c.url, { timeoutMs: CONVERGE_TIMEOUT_MS, everyMs: 50 })).status;
        const bytes = gossipTotal(after, "bytes_sent") - bytes0;
        const messages = gossipTotal(after, "messages_sent") - messages0;
        const dumped = await dumpAll(c.url, 8, (k) => k.startsWith(prefix));
        if (dumped.size !== GOSSIP_UPDATES) throw new Error(`dump found ${dumped.size} of ${GOSSIP_UPDATES} keys`);
        const entrySizes = [...dumped.values()].map(entryBytes);
        const entryMean = entrySizes.reduce((x, y) => x + y, 0) / entrySizes.length;
        const optimum = (replicas - 1) * entryMean;
        const perUpdate = bytes / GOSSIP_UPDATES;
        trials.push({
          bytes_sent: bytes,
          messages_sent: messages,
          bytes_per_update: round1(perUpdate),
          encoded_entry_bytes_mean: round1(entryMean),
          optimum_bytes_per_update: round1(optimum),
          ratio: Math.round((perUpdate / optimum) * 1000) / 1000,
        });
        log(`gossip R=${replicas} trial ${trial + 1}: ${round1(perUpdate)} B per update, optimum ${round1(optimum)} B, ${messages} messages`);
        await sleep(2 * GOSSIP_INTERVAL_MS);
      }
    } finally {
      await stop(c);
    }
    const ratio = median(trials.map((t) => t.ratio));
    const perUpdate = median(trials.map((t) => t.bytes_per_update));
    const optimum = median(trials.map((t) => t.optimum_bytes_per_update));
    const entry = median(trials.map((t) => t.encoded_entry_bytes_mean));
    results.gossip[`R=${replicas}`] = { updates: GOSSIP_UPDATES, ratio_median: ratio, bytes_per_update_median: perUpdate, trials };
    rows.push([
      `gossip bytes per unique update, N=8 R=${replicas}`,
      `${perUpdate} B (trials: ${trials.map((t) => t.bytes_per_update).join(", ")})`,
      `${optimum} B = ${replicas - 1} x ${entry} B entry`,
      `${ratio.toFixed(2)} x`,
      "<= 2 x optimum",
      ratio <= 2,
    ]);
  }
}

// ---------------------------------------------------------------------------------------
// converge: a burst of 600 writes at random replicas.

async function benchConverge() {
  log(`converge: N=8 R=3, bursts of ${BURST_WRITES} writes at random replicas`);
  const c = await start("ring", { vars: ringVars() });
  const trials = [];
  try {
    await waitConverged(c.url, { timeoutMs: 30_000 });
    for (let t = 0; t < (QUICK ? 2 : 3); t++) {
      const keys = Array.from({ length: BURST_KEYS }, (_, i) => `burst/${t}/${i}`);
      const placements = await pool(keys.length, CLIENTS, async (i) => {
        const r = await request(`${c.url}/v1/cluster/placement?key=${encodeURIComponent(keys[i])}`);
        if (r.status !== 200) throw new Error(`placement: ${r.status}`);
        return r.json.replicas;
      });
      const value = randomValue(VALUE_BYTES);
      const start = performance.now();
      const statuses = await pool(BURST_WRITES, CLIENTS, async (i) => {
        const k = i % BURST_KEYS;
        const node = placements[k][(Math.random() * placements[k].length) | 0];
        return (await request(c.url + kvPath(keys[k], `?node=${node}`), { method: "PUT", body: value })).status;
      });
      const stopped = performance.now();
      const failed = statuses.filter((s) => s !== 200).length;
      const { ms } = await waitConverged(c.url, { timeoutMs: CONVERGE_TIMEOUT_MS, everyMs: 20 });
      trials.push({ burst_ms: Math.round(stopped - start), failed_writes: failed, converged_ms: Math.round(ms) });
      log(`converge trial ${t + 1}: burst ${Math.round(stopped - start)} ms, converged ${Math.round(ms)} ms after the last write`);
      await sleep(2 * GOSSIP_INTERVAL_MS);
    }
    const ms = median(trials.map((t) => t.converged_ms));
    const intervals = ms / GOSSIP_INTERVAL_MS;
    results.converge = { gossip_interval_ms: GOSSIP_INTERVAL_MS, converged_ms_median: ms, intervals: round1(intervals * 10) / 10, trials };
    rows.push([
      `convergence after a burst of ${BURST_WRITES} writes, N=8 R=3`,
      `${Math.round(ms)} ms = ${intervals.toFixed(2)} intervals`,
      `gossip interval ${GOSSIP_INTERVAL_MS} ms`,
      "",
      "<= 3 intervals",
      intervals <= 3,
    ]);
  } finally {
    await stop(c);
  }
}

// ---------------------------------------------------------------------------------------
// round: gossip round cost at 1k vs 100k keys.

const BULK_BATCH = 512;
// Dots of the bulk writer: far above the real node 0's counter, and within the 2^32 a
// message may raise it by (the node raises its counter past them: no dot is reused).
const BULK_COUNTER_BASE = 1n << 31n;

/** Loads `count` keys into both nodes of an N=2 R=2 cluster through their merge path: a
 *  core instance in this process plays a writer with node id 0 and counters from
 *  BULK_COUNTER_BASE (never reached by the real node 0, so no dot is reused), builds Push
 *  messages with OP_BUILD_PUSH, and both Durable Objects merge them (POST /internal/push,
 *  the route peers use). Both nodes end with identical registers. */
async function bulkLoad(cluster, count, prefix) {
  const parsed = parseConfig(cluster.vars);
  if (parsed.error) throw new Error(parsed.error);
  const core = new Core(new WebAssembly.Module(readFileSync(join(root, "build/ringkv.wasm"))));
  const size = parsed.config.clusterSize;
  const ring = { epoch: 1, size, from: 0, to: 0, phase: 0, nodeIdsMax: size };
  core.call(Op.Init, { config: coreConfig(parsed.config, ring), node: { node: 0, clock: 0n, counter: BULK_COUNTER_BASE }, shards: [] });
  const ns = await cluster.mf.getDurableObjectNamespace("NODE");
  const stubs = [0, 1].map((n) => ns.get(ns.idFromName(String(n))));
  const contentType = utf8(CONTENT_TYPE);
  for (let from = 0; from < count; from += BULK_BATCH) {
    const candidates = [];
    for (let i = from; i < Math.min(count, from + BULK_BATCH); i++) {
      const key = utf8(`${prefix}${String(i).padStart(7, "0")}`);
      const value = randomValue(16);
      const w = core.call(Op.Write, { nowMs: BigInt(Date.now()), key, value, contentType });
      candidates.push({ local: { key, meta: w.meta, values: [{ dot: w.dot, value }] }, seq: BigInt(i + 1), fromClient: true });
    }
    const push = core.call(Op.BuildPush, {
      candidates,
      acks: [{ peer: 1, ackedSeq: BigInt(from) }],
      scannedToSeq: BigInt(from + candidates.length),
    });
    const message = push.outgoing.find((o) => o.peer === 1)?.message;
    if (!message || message.length === 0) throw new Error("bulk load: the core built no Push");
    await Promise.all(
      stubs.map(async (stub, node) => {
        const response = await stub.fetch("https://node/internal/push", {
          method: "POST",
          body: message,
          headers: { "X-Ring-Node-Id": String(node), "Content-Type": "application/octet-stream" },
        });
        const body = await response.arrayBuffer();
        if (response.status !== 200) throw new Error(`bulk load: node ${node} answered ${response.status}: ${Buffer.from(body).toString()}`);
      }),
    );
  }
}

/** A write at `from` until GET ?node=`to` sees it; ms, or Infinity after `timeoutMs`. */
async function visibleAfter(url, key, from, to, timeoutMs) {
  const w = await request(url + kvPath(key, `?node=${from}`), { method: "PUT", body: randomValue(16) });
  if (w.status !== 200) throw new Error(`PUT ${key} at node ${from}: ${w.status} ${w.text}`);
  const t0 = performance.now();
  for (;;) {
    const r = await request(url + kvPath(key, `?node=${to}`), { timeoutMs: 10_000 });
    if (r.status === 200) return { visible_ms: performance.now() - t0, put_ms: w.ms };
    if (performance.now() - t0 > timeoutMs) return { visible_ms: Infinity, put_ms: w.ms };
    await sleep(2);
  }
}

/** After a bulk load, each node's next rounds scan the rows it learned (BuildPush skips
 *  learned rows but must pass them to advance its peers' acknowledgements, 512 rows per
 *  round), and its own client writes go out only after that. Waits (at the short load
 *  interval) until a write at either node reaches the other promptly; returns the ms. */
async function drain(c) {
  const start = performance.now();
  for (let i = 0; ; i++) {
    const a = await visibleAfter(c.url, `drain/${i}/a`, 0, 1, 5_000);
    const b = await visibleAfter(c.url, `drain/${i}/b`, 1, 0, 5_000);
    if (a.visible_ms < 500 && b.visible_ms < 500) return performance.now() - start;
    if (performance.now() - start > 600_000) throw new Error("the nodes' scans did not drain in 10 min");
  }
}

async function benchRound() {
  // The rate limit (one round per GOSSIP_INTERVAL_MS, anti-entropy rounds included) would
  // otherwise add up to a whole interval of waiting, depending on where a write lands in
  // the node's schedule: at the smallest interval it adds at most 10 ms.
  const ROUND_INTERVAL_MS = 10;
  const vars = ringVars({ CLUSTER_SIZE: "2", REPLICAS: "2", GOSSIP_INTERVAL_MS: String(ROUND_INTERVAL_MS) });
  const sizes = [SMALL_KEYS, BIG_KEYS];
  const clusters = [];
  try {
    for (const size of sizes) {
      log(`round: loading ${size} keys into an N=2 R=2 cluster`);
      const c = await start("ring", { vars });
      await waitConverged(c.url, { timeoutMs: 30_000 });
      const t = performance.now();
      await bulkLoad(c, size, "round/");
      const loadMs = performance.now() - t;
      await waitConverged(c.url, { timeoutMs: 300_000, everyMs: 500 });
      const drainMs = await drain(c);
      const status = await clusterStatus(c.url, 60_000);
      clusters.push({ size, c, loadMs, drainMs, keys: status?.nodes.map((n) => n.keys) });
      log(`round: ${size} keys loaded in ${(loadMs / 1000).toFixed(1)} s, scans drained in ${(drainMs / 1000).toFixed(1)} s; nodes hold ${status?.nodes.map((n) => n.keys).join(", ")} live keys`);
    }
    // One probe: a PUT at node 0, then GET ?node=1 until it is there.
    let probeNo = 0;
    const probe = async (entry) => {
      const s = await visibleAfter(entry.c.url, `probe/${probeNo++}`, 0, 1, 60_000);
      if (!Number.isFinite(s.visible_ms)) throw new Error("a probe was not visible at node 1 after 60 s");
      return s;
    };
    for (const e of clusters) e.samples = [];
    const n = QUICK ? 6 : 20;
    for (let i = 0; i < n + 2; i++) {
      const order = i % 2 === 0 ? clusters : [...clusters].reverse();
      for (const e of order) {
        const s = await probe(e);
        if (i >= 2) e.samples.push(s); // the first two are warm-up
        await sleep(200);
      }
    }
    results.round = {};
    for (const e of clusters) {
      results.round[`${e.size} keys`] = {
        visible_ms_median: round1(median(e.samples.map((s) => s.visible_ms))),
        visible_ms_min: round1(Math.min(...e.samples.map((s) => s.visible_ms))),
        visible_ms_max: round1(Math.max(...e.samples.map((s) => s.visible_ms))),
        samples: e.samples.length,
        gossip_interval_ms: 10,
        put_ms_median: round1(median(e.samples.map((s) => s.put_ms))),
        load_s: round1(e.loadMs / 1000),
        drain_s: round1(e.drainMs / 1000),
        live_keys_per_node: e.keys,
      };
    }
    const [small, big] = clusters.map((e) => median(e.samples.map((s) => s.visible_ms)));
    const ratio = big / small;
    results.round.ratio = Math.round(ratio * 1000) / 1000;
    rows.push([
      `gossip round (write at node 0 -> visible at node 1), ${BIG_KEYS} vs ${SMALL_KEYS} keys, N=2 R=2`,
      `${round1(big)} ms median`,
      `${round1(small)} ms with ${SMALL_KEYS} keys`,
      `${ratio.toFixed(2)} x`,
      "<= 1.5 x",
      ratio <= 1.5,
    ]);
  } finally {
    for (const e of clusters) await stop(e.c);
  }
}

// ---------------------------------------------------------------------------------------
// bigkey: the gossip round's cost with one maximal key present.

/** N=2 R=2 with SMALL_KEYS keys; one key built to MAX_KEY_BYTES (4 MiB, 1 MiB values) at
 *  each node while they are partitioned, so that healing makes each node push 4 MiB. A
 *  probe (a small write at node 0, visible at node 1) is timed in the rounds that carry the
 *  big key and after them, against the same cluster before the big key existed. */
async function benchBigKey() {
  const MIB = 1024 * 1024;
  const vars = ringVars({ CLUSTER_SIZE: "2", REPLICAS: "2", GOSSIP_INTERVAL_MS: "10", FAULTS: "1", MAX_KEY_BYTES: String(4 * MIB) });
  const c = await start("ring", { vars });
  try {
    await waitConverged(c.url, { timeoutMs: 30_000 });
    await bulkLoad(c, SMALL_KEYS, "bigkey/");
    await waitConverged(c.url, { timeoutMs: 120_000, everyMs: 200 });
    await drain(c);
    let probeNo = 0;
    const probe = async () => (await visibleAfter(c.url, `bigkey-probe/${probeNo++}`, 0, 1, 60_000)).visible_ms;
    const n = QUICK ? 6 : 20;
    const before = [];
    for (let i = 0; i < n; i++) before.push(await probe());
    // The big key: a first version everywhere, then four 1 MiB versions at each node under
    // that version's context, each node alone.
    const key = "bigkey/the-key";
    const first = await request(c.url + kvPath(key), { method: "PUT", body: "first" });
    await waitConverged(c.url, { timeoutMs: 30_000 });
    const context = JSON.parse(first.text).context;
    const faults = (body) => request(c.url + "/v1/admin/faults", { method: "POST", body: JSON.stringify(body) });
    await faults({ partitions: [[0], [1]] });
    for (const node of [0, 1]) {
      for (let i = 0; i < 4; i++) {
        const w = await request(c.url + kvPath(key, `?node=${node}`), {
          method: "PUT",
          body: randomValue(MIB),
          headers: { "X-Ring-Context": context },
        });
        if (w.status !== 200) throw new Error(`bigkey: write ${i} at node ${node}: ${w.status} ${w.text}`);
      }
    }
    const t0 = performance.now();
    await faults({});
    const during = [];
    for (let i = 0; i < 3; i++) during.push(await probe());
    const { ms } = await waitConverged(c.url, { timeoutMs: 120_000, everyMs: 20 });
    const convergedMs = performance.now() - t0;
    const after = [];
    for (let i = 0; i < n; i++) after.push(await probe());
    const status = await clusterStatus(c.url, 60_000);
    results.bigkey = {
      key_bytes_at_each_node: 8 * MIB,
      probe_visible_ms_median_before: round1(median(before)),
      probe_visible_ms_while_shipping: during.map(round1),
      probe_visible_ms_median_after: round1(median(after)),
      healed_to_converged_ms: round1(convergedMs),
      converged_poll_ms: round1(ms),
      gossip_bytes_sent: status?.nodes.map((x) => x.gossip.bytes_sent),
      refused: status?.nodes.map((x) => x.refused),
    };
    const ratio = median(after) / median(before);
    rows.push([
      "gossip round with one maximal key present (N=2 R=2, 2 x 4 MiB merged at each node): probe visible",
      `${round1(median(after))} ms median (${during.map(round1).join(", ")} ms while the key ships; converged ${round1(convergedMs)} ms after healing)`,
      `${round1(median(before))} ms before the key`,
      `${ratio.toFixed(2)} x`,
      "nothing stalls",
      null,
    ]);
  } finally {
    await stop(c);
  }
}

// ---------------------------------------------------------------------------------------
// repair: one differing key in a shard of 100k keys.

const REPAIR_SHARD_KEYS = 100_000;
const REPAIR_SHARDS = 16;

async function benchRepair() {
  const keysWanted = QUICK ? 10_000 : REPAIR_SHARD_KEYS;
  const c = await start("ring", { vars: ringVars({ CLUSTER_SIZE: "3", REPLICAS: "3", SHARDS: String(REPAIR_SHARDS), GOSSIP_INTERVAL_MS: "200" }) });
  try {
    const maker = registerMaker({ size: 3, replicas: 3, shards: REPAIR_SHARDS });
    // Keys of shard 0 only: about one candidate in 16.
    const keys = [];
    for (let base = 0; keys.length < keysWanted + 1; base += 65_536) {
      const candidates = Array.from({ length: 65_536 }, (_, i) => `repair/${base + i}`);
      maker.shardsOf(candidates).forEach((shard, i) => {
        if (shard === 0 && keys.length < keysWanted + 1) keys.push(candidates[i]);
      });
    }
    const lonely = keys.pop();
    const t = performance.now();
    const entries = keys.map((k) => maker.entry(k, randomValue(VALUE_BYTES)));
    for (let node = 0; node < 3; node++) await pushEntries(c.mf, node, (node + 1) % 3, entries);
    await waitConverged(c.url, { timeoutMs: 300_000, everyMs: 500 });
    log(`repair: ${keys.length} keys of one shard seeded into 3 replicas in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    const shardBytes = entries.reduce((sum, e) => sum + encode("Entry", e).length, 0);
    const before = gossipTotal(await clusterStatus(c.url), "bytes_sent");
    await pushEntries(c.mf, 1, 0, [maker.entry(lonely, randomValue(1024))]);
    const done = await waitConverged(c.url, { timeoutMs: 300_000, everyMs: 200 });
    const bytes = gossipTotal(done.status, "bytes_sent") - before;
    results.repair = { shard_keys: keys.length, bytes, shard_entries_bytes: shardBytes, ms: Math.round(done.ms) };
    rows.push([
      `anti-entropy repair of one key (1 KiB) in a shard of ${keys.length} keys (SHARDS=16, 64 B values)`,
      `${bytes} B`,
      `shard: ${shardBytes} B`,
      round1((bytes / shardBytes) * 1000) / 1000,
      "≤ 64 KiB",
      bytes <= 64 * 1024,
    ]);
  } finally {
    await stop(c);
  }
}

// ---------------------------------------------------------------------------------------
// cluster: /v1/cluster and one node's report, 1k vs 1M stored keys.

const SEED_BATCH = 100_000;
const STATUS_SAMPLES = 30;
const REPORT_WRITES = 10;

async function internal(c, binding, name, path, init = {}) {
  const ns = await c.mf.getDurableObjectNamespace(binding);
  const headers = binding === "NODE" ? { "X-Ring-Node-Id": name, ...(init.headers ?? {}) } : init.headers ?? {};
  const r = await ns.get(ns.idFromName(name)).fetch(`https://${binding.toLowerCase()}${path}`, { ...init, headers });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`${binding} ${name} ${path}: ${r.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

/** Seeds `count` rows at node 0 (the FAULTS-only bulk route); returns the seconds taken. */
async function seedRows(c, count) {
  const parsed = parseConfig(c.vars);
  const core = new Core(new WebAssembly.Module(readFileSync(join(root, "build/ringkv.wasm"))));
  const ring = { epoch: 1, size: 8, from: 0, to: 0, phase: 0, nodeIdsMax: 8 };
  core.call(Op.Init, { config: coreConfig(parsed.config, ring), node: { node: 0, clock: 0n, counter: 1n << 31n }, shards: [] });
  const w = core.call(Op.Write, { nowMs: BigInt(Date.now()), key: utf8("seed"), value: randomValue(VALUE_BYTES), contentType: utf8(CONTENT_TYPE) });
  const meta = Buffer.from(w.meta).toString("base64url");
  const t = performance.now();
  for (let from = 0; from < count; from += SEED_BATCH) {
    await internal(c, "NODE", "0", "/internal/bulk", {
      method: "POST",
      body: JSON.stringify({ prefix: "seed/", from, count: Math.min(SEED_BATCH, count - from), meta }),
    });
  }
  return (performance.now() - t) / 1000;
}

/** A key whose replicas include node 0, so that ?node=0 writes it there. */
async function keyAtNode0(url, prefix) {
  for (let i = 0; ; i++) {
    const r = await request(`${url}/v1/cluster/placement?key=${encodeURIComponent(`${prefix}${i}`)}`);
    if (r.json.replicas.includes("0")) return `${prefix}${i}`;
  }
}

async function benchCluster() {
  const sizes = [SMALL_KEYS, CLUSTER_KEYS];
  const clusters = [];
  try {
    for (const size of sizes) {
      const c = await start("ring", { vars: ringVars({ FAULTS: "1" }) });
      await waitConverged(c.url, { timeoutMs: 30_000 });
      log(`cluster: seeding ${size} rows at node 0`);
      const seedS = await seedRows(c, size);
      const stored = (await internal(c, "NODE", "0", "/internal/report-cost")).stored_rows;
      await waitConverged(c.url, { timeoutMs: 60_000 });
      log(`cluster: ${stored} rows stored at node 0 in ${seedS.toFixed(1)} s`);
      clusters.push({ size, c, seedS, stored, statusMs: [], statusRows: [], report: {} });
    }
    // /v1/cluster, alternating the two clusters.
    for (let i = 0; i < STATUS_SAMPLES + 2; i++) {
      for (const e of i % 2 === 0 ? clusters : [...clusters].reverse()) {
        const r = await request(`${e.c.url}/v1/cluster`);
        if (r.status !== 200) throw new Error(`/v1/cluster: ${r.status}`);
        if (i < 2) continue; // warm-up
        e.statusMs.push(r.ms);
        e.statusRows.push((await internal(e.c, "CONTROL", "control", "/control/stats")).cluster.rows_read);
      }
    }
    // Reports: writes at node 0, each until converged; the rows every report read.
    for (const e of clusters) {
      const key = await keyAtNode0(e.c.url, "report/");
      const node0 = await internal(e.c, "NODE", "0", "/internal/report-cost");
      const control0 = await internal(e.c, "CONTROL", "control", "/control/stats");
      for (let i = 0; i < REPORT_WRITES; i++) {
        const w = await request(e.c.url + kvPath(key, "?node=0"), { method: "PUT", body: randomValue(VALUE_BYTES) });
        if (w.status !== 200) throw new Error(`PUT at node 0: ${w.status}`);
        await waitConverged(e.c.url, { timeoutMs: 30_000 });
      }
      const node1 = await internal(e.c, "NODE", "0", "/internal/report-cost");
      const control1 = await internal(e.c, "CONTROL", "control", "/control/stats");
      const nodeReports = node1.reports - node0.reports;
      const controlReports = control1.reports - control0.reports;
      e.report = {
        node0_reports: nodeReports,
        node0_rows_per_report: (node1.rows_read - node0.rows_read) / Math.max(1, nodeReports),
        control_reports: controlReports,
        control_rows_per_report: (control1.report_rows_read - control0.report_rows_read) / Math.max(1, controlReports),
      };
    }
    results.cluster = {};
    for (const e of clusters) {
      results.cluster[`${e.size} keys`] = {
        stored_rows_node0: e.stored,
        seed_s: round1(e.seedS),
        status_ms_median: round1(median(e.statusMs)),
        status_ms_p90: round1(percentile([...e.statusMs].sort((a, b) => a - b), 0.9)),
        status_rows_read_median: median(e.statusRows),
        ...Object.fromEntries(Object.entries(e.report).map(([k, v]) => [k, round1(v)])),
      };
    }
    const [small, big] = clusters;
    const statusRatio = median(big.statusMs) / median(small.statusMs);
    const reportRows = (e) => e.report.node0_rows_per_report + e.report.control_rows_per_report;
    const reportRatio = reportRows(big) / reportRows(small);
    results.cluster.status_ratio = Math.round(statusRatio * 1000) / 1000;
    results.cluster.report_rows_ratio = Math.round(reportRatio * 1000) / 1000;
    rows.push([
      `/v1/cluster, ${big.stored} vs ${small.stored} keys stored at a node (seeded by the FAULTS-only bulk route), N=8 R=3`,
      `${round1(median(big.statusMs))} ms median, ${median(big.statusRows)} SQL rows at RingControl`,
      `${round1(median(small.statusMs))} ms, ${median(small.statusRows)} rows`,
      `${statusRatio.toFixed(2)} x`,
      "<= 1.5 x",
      statusRatio <= 1.5,
    ]);
    rows.push([
      `one node's report (SQL rows read: the node's facts + RingControl taking it), ${big.stored} vs ${small.stored} keys`,
      `${round1(reportRows(big))} rows (${round1(big.report.node0_rows_per_report)} + ${round1(big.report.control_rows_per_report)})`,
      `${round1(reportRows(small))} rows`,
      `${reportRatio.toFixed(2)} x`,
      "<= 1.5 x",
      reportRatio <= 1.5,
    ]);
  } finally {
    for (const e of clusters) await stop(e.c);
  }
}

// ---------------------------------------------------------------------------------------
// core: bench/core.mjs's table.

function benchCore() {
  const file = join(root, "bench/out/core.json");
  if (!existsSync(file) && existsSync(join(root, "scripts/bench-core.sh"))) {
    log("core: no bench/out/core.json yet: running scripts/bench-core.sh (npm run bench:core)");
    try {
      execFileSync("bash", ["scripts/bench-core.sh"], { cwd: root, stdio: ["ignore", "inherit", "inherit"], timeout: 600_000 });
    } catch (err) {
      log(`core: scripts/bench-core.sh failed: ${err.message}`);
    }
  }
  if (!existsSync(file)) {
    results.core = { missing: "bench/out/core.json (run `node --import tsx bench/core.mjs`)" };
    return;
  }
  const core = JSON.parse(readFileSync(file, "utf8"));
  results.core = { date: core.date, results: core.results };
}

function coreTable() {
  if (!results.core?.results) return [`(no core figures: ${results.core?.missing ?? "not run"})`];
  const engines = ["wasm", "native", "js"];
  const lines = [
    `Core (bench/core.mjs, ${results.core.date}): operations per second, median of interleaved rounds`,
    "",
    "| case | what | wasm ops/s | native ops/s | js ops/s |",
    "| --- | --- | ---: | ---: | ---: |",
  ];
  for (const [name, r] of Object.entries(results.core.results)) {
    const cell = (e) => (r[e]?.ops_per_s !== undefined ? Math.round(r[e].ops_per_s).toLocaleString("en-US") : "");
    lines.push(`| ${name} | ${r.what ?? ""} | ${engines.map(cell).join(" | ")} |`);
  }
  return lines;
}

// ---------------------------------------------------------------------------------------
// Report.

/** The autoscale run (bench/autoscale.mjs): the time from the load crossing a threshold to
 *  the end of the transition it caused, for growth and for shrinking. */
async function benchAutoscaleRun() {
  const f = await benchAutoscale({ quick: QUICK, log });
  results.autoscale = { grow: f.grow, shrink: f.shrink, status_5xx: f.status_5xx, decisions: f.decisions };
  const react = (r) => (r === null ? "never" : `${r.seconds} s (${r.from} -> ${r.to})${r.settled !== r.to ? `, ${r.settled_seconds} s to ${r.settled}` : ""}`);
  rows.push(["autoscale: load 10 -> 80 rps to the grown ring (3 s window)", react(f.grow), "-", "-", "grows, no 5xx", f.grow !== null && f.status_5xx === 0]);
  rows.push(["autoscale: load -> 0 to the shrunk ring (10 s below, 5 s cool-down)", react(f.shrink), "-", "-", "shrinks to MIN", f.shrink !== null && f.shrink.to === 3]);
}

function report() {
  const mark = (met) => (met === null ? "" : met ? "met" : "MISSED");
  const header = ["what", "ringkv", "baseline", "ratio", "target", "met"];
  const table = [header, ...rows.map((r) => [r[0], r[1], r[2], r[3], r[4], mark(r[5])])];
  const widths = header.map((_, i) => Math.max(...table.map((r) => String(r[i]).length)));
  console.log("");
  for (const [i, r] of table.entries()) {
    console.log(r.map((c, j) => String(c).padEnd(widths[j])).join("  "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
  console.log("");
  for (const line of coreTable()) console.log(line);

  const md = [
    "# ringkv benchmark results",
    "",
    `Generated by \`npm run bench\` (bench/run.mjs) on ${results.date}: ${results.machine.cpus} × ${results.machine.cpu}, Node ${results.machine.node}, load average at start ${results.machine.load_average_start.map((x) => x.toFixed(2)).join(" ")}.`,
    `Everything runs in workerd through Miniflare on 127.0.0.1 (local SQLite, one machine: absolute figures are not Cloudflare's; the ratios are the point). Each end-to-end figure alternates with its baseline in ${ROUNDS} rounds of ${SECONDS} s (medians). Raw figures: bench/results.json.`,
    "",
    "| what | ringkv | baseline | ratio | target | met |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map((r) => `| ${r[0]} | ${r[1]} | ${r[2]} | ${r[3]} | ${r[4]} | ${mark(r[5])} |`),
    "",
    "Notes:",
    `- e2e: 16 clients in this process, 50/50 GET/PUT over ${KEYSPACE} keys, ${VALUE_BYTES}-byte values; baseline: bench/bare (the same routing by a hash of the key to one of 8 SQLite Durable Objects, one SQL statement per request, no CRDT). With the cache on, GETs that hit the Cache API do not reach a node; every PUT evicts its key, so with 50% writes over 500 keys few GETs hit. Miniflare's Cache API is a local simulation (a separate service): here a HIT is not cheaper than a local Durable Object read, so the cache-on figure says what the cache calls cost in workerd, not what the cache saves on Cloudflare.`,
    "- gossip: sum of the nodes' gossip.bytes_sent (request and response bodies, anti-entropy included) from converged to converged; the optimum is (R−1) × the mean protobuf Entry of the stored registers with their values (worker/pb.ts).",
    "- convergence: from the last acknowledged write of the burst to the first `/v1/cluster` answer with converged = true (polled every 20 ms).",
    "- round: keys loaded into both nodes through their merge path (POST /internal/push with core-built Push messages of 512 entries, as a peer sends them); GOSSIP_INTERVAL_MS=10 so that the rate limit adds at most 10 ms; a probe PUT at node 0 is timed until GET ?node=1 (polled every 2 ms) sees it, alternating the two clusters. The figure includes the HTTP round trips and the merge at node 1, so it bounds the round's cost from above.",
    "",
    ...coreTable(),
    "",
  ];
  // Only a full run replaces the committed results; partial runs go to bench/out/.
  const partial =
    QUICK || args.only !== undefined || args.rounds !== undefined || args.seconds !== undefined || args["big-keys"] !== undefined ||
    args["cluster-keys"] !== undefined;
  const base = partial ? "bench/out/results.partial" : "bench/results";
  mkdirSync(join(root, "bench/out"), { recursive: true });
  writeFileSync(join(root, `${base}.md`), md.join("\n"));
  results.table = rows.map((r) => ({ what: r[0], ringkv: r[1], baseline: r[2], ratio: r[3], target: r[4], met: r[5] }));
  writeFileSync(join(root, `${base}.json`), JSON.stringify(results, null, 2) + "\n");
  console.log(`\nwrote ${base}.md and ${base}.json`);
}

const benches = [
  ["e2e", benchE2E],
  ["latency", benchLatency],
  ["gossip", benchGossip],
  ["converge", benchConverge],
  ["round", benchRound],
  ["bigkey", benchBigKey],
  ["repair", benchRepair],
  ["cluster", benchCluster],
  ["autoscale", benchAutoscaleRun],
  ["core", benchCore],
];
let failed = false;
try {
  for (const [name, fn] of benches) {
    if (!SECTIONS.has(name)) continue;
    const t = performance.now();
    try {
      await fn();
    } catch (err) {
      failed = true;
      log(`${name} failed: ${err.stack ?? err}`);
      results[`${name}_error`] = String(err.message ?? err);
    }
    log(`${name}: ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
} finally {
  await stopAll();
}
results.machine.load_average_end = loadavg();
report();
process.exit(failed ? 1 : 0);
