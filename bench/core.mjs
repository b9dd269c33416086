// bench/core.mjs: operations per second of the core (issue 2). A benchmark, not a test.
//
// Each case is one pre-encoded request, timed three ways:
//   wasm   - build/ringkv.wasm under Node through worker/core.ts callRaw, so the figure is
//            the JS/WASM boundary (copy in, call, copy out) plus the core;
//   native - the same request bytes, as frames for build/core_native (bench/core_native.c)
//            against build/native/libringkv.a;
//   js     - merge only: the same DVV merge written in plain JavaScript over JS objects
//            (no protobuf decode/encode, no digests: the merge logic alone).
// Measurements alternate (every round runs every case and engine once, the engine order
// rotating per round) and the median of the rounds is reported, so drift cancels.
//
// Run with `npm run bench:core` (builds first). BENCH_ROUNDS (5) and BENCH_SECONDS (0.3)
// override the rounds and the seconds per measurement. BENCH_CASES (comma-separated names)
// runs a subset; BENCH_WASM times another .wasm build (e.g. an unstripped one to profile
// with node --cpu-prof); either writes bench/out/core.partial.json instead of core.json.
import { readFileSync, writeFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir, cpus, loadavg } from "node:os";
import { join } from "node:path";
import { Core, Op } from "../worker/core.ts";
import { encode, decode } from "../worker/pb.ts";

const root = new URL("../", import.meta.url).pathname;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 0.3);
const NATIVE = join(root, "build/core_native");
const wasmModule = new WebAssembly.Module(readFileSync(process.env.BENCH_WASM ?? join(root, "build/ringkv.wasm")));
const utf8 = (s) => new TextEncoder().encode(s);

const CONFIG = {
  clusterSize: 8,
  replicas: 3,
  shards: 64,
  maxClockSkewMs: 60000n,
  tombstoneGraceMs: 3600000n,
  maxSiblings: 32,
  fanout: 8,
};
const NOW = 1_700_000_000_000n;
const KEY = utf8("bench/users/1234/profile");
const CONTENT_TYPE = utf8("application/octet-stream");

function check(code, what) {
  if (code !== 0) throw new Error(`${what}: core returned ${code}`);
}

// ---------------------------------------------------------------------------------------
// The state: a local 3-sibling register and a concurrent remote 3-sibling register.

// The bench node is the key's first replica (OP_MERGE ignores keys it does not hold).
const probe = new Core(wasmModule);
probe.call(Op.Init, { config: CONFIG, node: { node: 0, clock: 0n, counter: 0n }, shards: [] });
const SELF = probe.call(Op.Place, { keys: [KEY] }).placements[0].replicas[0];
const hashOf = (bytes) => probe.call(Op.Place, { keys: [bytes] }).placements[0].keyHash; // xxh3-64
const others = [0, 1, 2, 3, 4, 5, 6, 7].filter((n) => n !== SELF);
const [A, B, C, D, E] = others;

function sibling(node, counter, msAgo, fill) {
  const value = new Uint8Array(64).fill(fill);
  return {
    dot: { node, counter },
    hlc: ((NOW - BigInt(msAgo)) << 16n) | 3n,
    deleted: false,
    contentType: CONTENT_TYPE,
    valueHash: hashOf(value),
    value,
  };
}
const byDot = (x, y) => x.dot.node - y.dot.node || Number(x.dot.counter - y.dot.counter);
// Local: A:17, B:42, C:9, context vv {A:17, B:42, C:9}.
const localReg = {
  siblings: [sibling(A, 17n, 900, 1), sibling(B, 42n, 500, 2), sibling(C, 9n, 300, 3)].sort(byDot),
  context: { vv: [{ node: A, counter: 17n }, { node: B, counter: 42n }, { node: C, counter: 9n }].sort((x, y) => x.node - y.node), dots: [] },
};
// Remote: C:9 (shared), D:5, E:23; its context covers A:17 (superseded there) and the
// explicit dot B:60, but not B:42: the merge drops A:17 and keeps B:42 and the rest.
const remoteReg = {
  siblings: [sibling(C, 9n, 300, 3), sibling(D, 5n, 200, 4), sibling(E, 23n, 100, 5)].sort(byDot),
  context: {
    vv: [{ node: A, counter: 17n }, { node: C, counter: 9n }, { node: D, counter: 5n }, { node: E, counter: 23n }].sort((x, y) => x.node - y.node),
    dots: [{ node: B, counter: 60n }],
  },
};
const push = (from, reg) => encode("Push", { version: 1, from, entries: [{ key: KEY, register: reg }] });

// Setup frames, replayed on every node (WASM instance or native process) before timing:
// INIT, then a merge of the local register into an empty row (which also gives its
// canonical stored metadata, as the core itself encodes it).
const setup = [
  { op: Op.Init, bytes: encode("InitRequest", { config: CONFIG, node: { node: SELF, clock: NOW << 16n, counter: 1000n }, shards: [] }) },
  { op: Op.Merge, bytes: encode("MergeRequest", { nowMs: NOW, message: push(A, localReg), locals: [{ key: KEY, meta: new Uint8Array(), values: [] }] }) },
];
function setupCore() {
  const core = new Core(wasmModule);
  let last;
  for (const f of setup) {
    const { code, reply } = core.callRaw(f.op, f.bytes);
    check(code, `setup op ${f.op}`);
    last = reply;
  }
  return { core, lastReply: last };
}
const localMeta = decode("MergeReply", setupCore().lastReply).applied[0].meta;

// ---------------------------------------------------------------------------------------
// The cases.

const batchKeys = Array.from({ length: 100 }, (_, i) => utf8(`bench/users/${i}/profile`));
const ALL_CASES = [
  {
    name: "merge",
    what: "OP_MERGE: Push of one 3-sibling entry into a local 3-sibling register",
    op: Op.Merge,
    bytes: encode("MergeRequest", { nowMs: NOW, message: push(D, remoteReg), locals: [{ key: KEY, meta: localMeta, values: [] }] }),
    perCall: 1,
    js: true,
  },
  {
    name: "write",
    what: "OP_WRITE: blind PUT of a 64-byte value on the stored 3-sibling register",
    op: Op.Write,
    bytes: encode("WriteRequest", { nowMs: NOW, key: KEY, meta: localMeta, value: new Uint8Array(64).fill(7), contentType: CONTENT_TYPE }),
    perCall: 1,
  },
  {
    name: "place",
    what: "OP_PLACE: one key",
    op: Op.Place,
    bytes: encode("PlaceRequest", { keys: [KEY] }),
    perCall: 1,
  },
  {
    name: "place_batch100",
    what: "OP_PLACE: 100 keys per call, reported per key",
    op: Op.Place,
    bytes: encode("PlaceRequest", { keys: batchKeys }),
    perCall: 100,
  },
  {
    name: "decode",
    what: "OP_READ of the stored 3-sibling register (register decode + token encode)",
    op: Op.Read,
    bytes: encode("ReadRequest", { key: KEY, meta: localMeta }),
    perCall: 1,
  },
];

const CASES = process.env.BENCH_CASES
  ? ALL_CASES.filter((c) => process.env.BENCH_CASES.split(",").includes(c.name))
  : ALL_CASES;
if (CASES.length === 0) throw new Error(`BENCH_CASES matches none of ${ALL_CASES.map((c) => c.name).join(", ")}`);

// ---------------------------------------------------------------------------------------
// Plain JavaScript DVV merge, over JS objects.
// Register: { siblings: [{ dot: {node, counter}, hlc, deleted, contentType, valueHash, value }]
// sorted by dot, context: { vv: Map node -> counter, dots: Map "node:counter" -> dot } }.

const dotKey = (d) => `${d.node}:${d.counter}`;
const dotCmp = (a, b) => (a.node !== b.node ? a.node - b.node : a.counter - b.counter);

function covers(ctx, d) {
  const c = ctx.vv.get(d.node);
  return (c !== undefined && d.counter <= c) || ctx.dots.has(dotKey(d));
}

// Join two contexts, normalised like the core's: no dot covered by vv, and (n, vv[n] + 1)
// folded into vv.
function joinContexts(x, y) {
  const vv = new Map(x.vv);
  for (const [n, c] of y.vv) {
    const mine = vv.get(n);
    if (mine === undefined || mine < c) vv.set(n, c);
  }
  const loose = [];
  for (const d of x.dots.values()) {
    const c = vv.get(d.node);
    if (c === undefined || d.counter > c) loose.push(d);
  }
  for (const [k, d] of y.dots) {
    const c = vv.get(d.node);
    if ((c === undefined || d.counter > c) && !x.dots.has(k)) loose.push(d);
  }
  const dots = new Map();
  if (loose.length > 0) {
    loose.sort(dotCmp);
    for (const d of loose) {
      const c = vv.get(d.node) ?? 0;
      if (d.counter === c + 1) vv.set(d.node, d.counter);
      else if (d.counter > c) dots.set(dotKey(d), d);
    }
  }
  return { vv, dots };
}

// Keeps a sibling unless the other side's context covers it and the other side lacks it.
function mergeJs(x, y) {
  const xs = x.siblings, ys = y.siblings;
  const siblings = [];
  let i = 0, j = 0;
  while (i < xs.length || j < ys.length) {
    const cmp = i >= xs.length ? 1 : j >= ys.length ? -1 : dotCmp(xs[i].dot, ys[j].dot);
    if (cmp === 0) {
      siblings.push(xs[i].value.length === 0 && ys[j].value.length !== 0 ? ys[j] : xs[i]);
      i++;
      j++;
    } else if (cmp < 0) {
      if (!covers(y.context, xs[i].dot)) siblings.push(xs[i]);
      i++;
    } else {
      if (!covers(x.context, ys[j].dot)) siblings.push(ys[j]);
      j++;
    }
  }
  return { siblings, context: joinContexts(x.context, y.context) };
}

function toJs(reg, withValues) {
  const dot = (d) => ({ node: d.node, counter: Number(d.counter) });
  return {
    siblings: reg.siblings.map((s) => ({
      dot: dot(s.dot),
      hlc: s.hlc,
      deleted: s.deleted,
      contentType: s.contentType,
      valueHash: s.valueHash,
      value: withValues ? s.value : new Uint8Array(0),
    })),
    context: {
      vv: new Map(reg.context.vv.map((d) => [d.node, Number(d.counter)])),
      dots: new Map(reg.context.dots.map((d) => [dotKey(dot(d)), dot(d)])),
    },
  };
}

// The JS merge works on the same two registers the core merges (local without values,
// as stored; remote with values, as pushed) and must agree with the core on the result.
const jsLocal = toJs(decode("Register", localMeta), false);
const jsRemote = toJs(remoteReg, true);
{
  const { core } = setupCore();
  const { code, reply } = core.callRaw(Op.Merge, ALL_CASES[0].bytes);
  check(code, "merge");
  const applied = decode("MergeReply", reply).applied;
  if (applied.length !== 1) throw new Error("merge: the benchmark merge must change the local register");
  const fromCore = toJs(decode("Register", applied[0].meta), false);
  const fromJs = mergeJs(jsLocal, jsRemote);
  const shape = (r) =>
    JSON.stringify({
      sibs: r.siblings.map((s) => dotKey(s.dot)),
      vv: [...r.context.vv].sort((a, b) => a[0] - b[0]),
      dots: [...r.context.dots.keys()].sort(),
    });
  if (shape(fromCore) !== shape(fromJs)) {
    throw new Error(`merge: JS and core disagree: ${shape(fromJs)} vs ${shape(fromCore)}`);
  }
  if (fromJs.siblings.length !== 4) throw new Error("merge: expected 4 siblings after the merge");
}

// ---------------------------------------------------------------------------------------
// Timing.

let sink = 0;
function timeLoop(fn, seconds) {
  let calls = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  let t = start;
  while (t < end) {
    for (let k = 0; k < 64; k++) fn();
    calls += 64;
    t = performance.now();
  }
  return calls / ((t - start) / 1000);
}

// One WASM instance per case, set up once; its calls are idempotent on the stored state
// (the core is sans-IO: the stored register comes in with every request).
const wasmCores = new Map();
function runWasm(c, seconds) {
  let core = wasmCores.get(c.name);
  if (!core) wasmCores.set(c.name, (core = setupCore().core));
  const { op, bytes } = c;
  return timeLoop(() => {
    const r = core.callRaw(op, bytes);
    if (r.code !== 0) throw new Error(`${c.name}: core returned ${r.code}`);
    sink += r.reply.length;
  }, seconds) * c.perCall;
}

function runJs(c, seconds) {
  return timeLoop(() => {
    sink += mergeJs(jsLocal, jsRemote).siblings.length;
  }, seconds) * c.perCall;
}

// Native: one frame file per case (setup frames with the high bit set, then the case).
const tmp = mkdtempSync(join(tmpdir(), "ringkv-bench-"));
function frames(list) {
  const parts = [];
  for (const f of list) {
    const head = Buffer.alloc(8);
    head.writeUInt32LE(f.op >>> 0, 0);
    head.writeUInt32LE(f.bytes.length, 4);
    parts.push(head, Buffer.from(f.bytes));
  }
  return Buffer.concat(parts);
}
for (const c of CASES) {
  c.file = join(tmp, `${c.name}.bin`);
  writeFileSync(c.file, frames([...setup.map((f) => ({ op: (f.op | 0x80000000) >>> 0, bytes: f.bytes })), c]));
}
function runNative(c, seconds) {
  let out;
  try {
    out = execFileSync(NATIVE, [c.file, String(seconds)], { encoding: "utf8" });
  } catch (e) {
    throw new Error(`${c.name}: build/core_native failed (exit ${e.status}; 3 = a setup frame, 4 = the timed call returned an error)`);
  }
  return JSON.parse(out.trim().split("\n").pop()).ops_per_s * c.perCall;
}

const ENGINES = { wasm: runWasm, native: runNative, js: runJs };
const enginesOf = (c) => (c.js ? ["wasm", "native", "js"] : ["wasm", "native"]);

const started = performance.now();
// Warm-up: let V8 tier the WASM and the JS merge up before anything is recorded.
for (const c of CASES) runWasm(c, SECONDS);
for (const c of CASES) if (c.js) runJs(c, SECONDS);

const samples = Object.fromEntries(CASES.map((c) => [c.name, Object.fromEntries(enginesOf(c).map((e) => [e, []]))]));
for (let round = 0; round < ROUNDS; round++) {
  for (const c of CASES) {
    const engines = enginesOf(c);
    for (let k = 0; k < engines.length; k++) {
      const e = engines[(k + round) % engines.length];
      samples[c.name][e].push(ENGINES[e](c, SECONDS));
    }
  }
}
rmSync(tmp, { recursive: true, force: true });

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const results = {};
for (const c of CASES) {
  const r = { what: c.what, request_bytes: c.bytes.length, per_call: c.perCall };
  for (const [e, xs] of Object.entries(samples[c.name])) {
    r[e] = { ops_per_s: Math.round(median(xs)), min: Math.round(Math.min(...xs)), max: Math.round(Math.max(...xs)), samples: xs.map(Math.round) };
  }
  // Ratios: the median of the per-round ratios (each pair measured back to back, so a
  // drift of the machine's speed between rounds cancels).
  const paired = (a, b) => median(a.map((x, i) => x / b[i]));
  const s = samples[c.name];
  r.native_over_wasm = +paired(s.native, s.wasm).toFixed(2);
  if (s.js) r.wasm_over_js = +paired(s.wasm, s.js).toFixed(3);
  results[c.name] = r;
}

// ---------------------------------------------------------------------------------------
// Report.

const fmt = (x) => (x === undefined ? "-" : Math.round(x).toLocaleString("en-US"));
const spread = (e) => (e ? `±${Math.round((100 * (e.max - e.min)) / 2 / e.ops_per_s)}%` : "");
const rows = [["case", "wasm ops/s", "native ops/s", "js ops/s", "native/wasm", "wasm/js"]];
for (const c of CASES) {
  const r = results[c.name];
  rows.push([
    c.name + (c.perCall > 1 ? " (per key)" : ""),
    `${fmt(r.wasm.ops_per_s)} ${spread(r.wasm)}`,
    `${fmt(r.native.ops_per_s)} ${spread(r.native)}`,
    r.js ? `${fmt(r.js.ops_per_s)} ${spread(r.js)}` : "-",
    `${r.native_over_wasm.toFixed(2)}x`,
    r.js ? `${r.wasm_over_js.toFixed(3)}x` : "-",
  ]);
}
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
const line = (r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join("  ");
console.log(`ringkv core: median of ${ROUNDS} interleaved rounds of ${SECONDS} s (± half the min-max spread;\n  ratios: median of the per-round ratios)`);
console.log(line(rows[0]));
console.log(widths.map((w) => "-".repeat(w)).join("  "));
for (const r of rows.slice(1)) console.log(line(r));
for (const c of CASES) console.log(`  ${c.name}: ${c.what} (${c.bytes.length}-byte request)`);
console.log("  js: the merge alone over JS objects; wasm and native include protobuf decode, merge, digests and reply encode.");

const out = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? "unknown",
  cpus: cpus().length,
  load_average: loadavg().map((x) => +x.toFixed(2)),
  rounds: ROUNDS,
  seconds_per_measurement: SECONDS,
  bench_node: SELF,
  seconds_total: +((performance.now() - started) / 1000).toFixed(1),
  results,
};
mkdirSync(join(root, "bench/out"), { recursive: true });
// A subset or another build does not overwrite the full run's figures.
const outName = process.env.BENCH_CASES || process.env.BENCH_WASM ? "core.partial.json" : "core.json";
if (process.env.BENCH_WASM) out.wasm = process.env.BENCH_WASM;
writeFileSync(join(root, "bench/out", outName), JSON.stringify(out, null, 2) + "\n");
console.log(`wrote bench/out/${outName} (${out.seconds_total} s; sink ${sink % 10})`);
