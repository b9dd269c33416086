// `node --import tsx bench/placement.mjs`: what placement costs a Worker isolate and a
// node, in the built .wasm under Node: the first OP_INIT (a Worker's placement-only
// instance, and a node's), then OP_PLACE of 10k random keys, one call per key. Each
// configuration runs in a fresh module instance (the isolate's first request), median of 5.
import { readFileSync } from "node:fs";
import { Core, Op } from "../worker/core.ts";

const module = new WebAssembly.Module(readFileSync(new URL("../build/ringkv.wasm", import.meta.url)));
const KEYS = 10_000;

function config(n, r, shards) {
  return {
    clusterSize: n, nodeIdsMax: n, replicas: r, shards, maxClockSkewMs: 60000n, tombstoneGraceMs: 86400000n,
    maxSiblings: 1, fanout: 8, keyBytesMax: 16384n, valueBytesMax: 16384n, gossipIntervalMs: 1000n,
  };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function measure(n, r, shards, placementOnly) {
  const inits = [], places = [], warm = [];
  for (let run = 0; run < 5; run++) {
    const core = new Core(module);
    const t0 = performance.now();
    const req = { config: config(n, r, shards), node: { node: 0, clock: 0n, counter: 0n }, shards: [] };
    if (placementOnly) req.placementOnly = true;
    core.call(Op.Init, req);
    const t1 = performance.now();
    for (let i = 0; i < KEYS; i++) core.call(Op.Place, { keys: [new TextEncoder().encode(`k${run}-${i}`)] });
    const t2 = performance.now();
    for (let i = 0; i < KEYS; i++) core.call(Op.Place, { keys: [new TextEncoder().encode(`k${run}-${i}`)] });
    const t3 = performance.now();
    inits.push(t1 - t0);
    places.push(((t2 - t1) * 1000) / KEYS);
    warm.push(((t3 - t2) * 1000) / KEYS);
  }
  return { init_ms: median(inits), place_us: median(places), warm_us: median(warm) };
}

const rows = [];
for (const [n, r, shards] of [[8, 3, 16384], [1024, 3, 16384], [1024, 3, 65536], [1024, 1024, 16384]]) {
  for (const placementOnly of [true, false]) {
    const m = measure(n, r, shards, placementOnly);
    rows.push({ n, r, shards, instance: placementOnly ? "worker" : "node", ...m });
    console.log(`N=${n} R=${r} SHARDS=${shards} ${placementOnly ? "worker" : "node  "}: first OP_INIT ${m.init_ms.toFixed(1)} ms, OP_PLACE ${m.place_us.toFixed(2)} µs/key, the same keys again ${m.warm_us.toFixed(2)} µs/key`);
  }
}
