// Convergence: bursts of writes (PUT and DELETE, blind and with contexts) at random
// replicas, then every replica must hold the same state and each key's winner must be the
// acknowledged write with the highest (hlc, node).
import { test } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor, compareVersion, rng } from "./helpers.mjs";

/** Runs `count` writes over `keyCount` keys at random replicas, 16 at a time. Returns the
 *  acknowledged writes per key. */
async function burst(c, { seed, count, keyCount, prefix }) {
  const rand = rng(seed);
  const keys = Array.from({ length: keyCount }, (_, i) => `${prefix}/${i}/ü`);
  const replicas = new Map();
  for (const k of keys) replicas.set(k, (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(k)}`)).json.replicas);
  const acked = new Map(keys.map((k) => [k, []]));
  const jobs = Array.from({ length: count }, (_, i) => {
    const key = keys[rand(keys.length)];
    const reps = replicas.get(key);
    return { i, key, node: reps[rand(reps.length)], del: rand(10) === 0, useContext: rand(3) === 0 };
  });
  let next = 0;
  async function worker() {
    while (next < jobs.length) {
      const job = jobs[next++];
      const headers = {};
      if (job.useContext) {
        const s = await c.req(kvPath(job.key, `?siblings=1&node=${job.node}`));
        if (s.status === 200) headers["X-Ring-Context"] = s.json.context;
      }
      const value = `v${job.i}`;
      const r = await c.req(kvPath(job.key, `?node=${job.node}`), {
        method: job.del ? "DELETE" : "PUT",
        body: job.del ? undefined : value,
        headers,
      });
      assert.equal(r.status, 200, `write ${job.i}: ${r.text}`);
      assert.equal(r.json.node, job.node);
      acked.get(job.key).push({ hlc: r.json.hlc, node: r.json.node, value, deleted: job.del });
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker));
  return { acked, replicas };
}

async function checkConverged(c, { acked, replicas }) {
  const start = Date.now();
  const status = await waitFor("/v1/cluster converged", async () => {
    const s = await c.req("/v1/cluster");
    return s.json.converged ? s.json : undefined;
  }, { timeoutMs: 60_000, everyMs: 200 });
  const elapsedMs = Date.now() - start;
  const live = [];
  for (const [key, writes] of acked) {
    if (writes.length === 0) continue;
    const best = writes.reduce((a, b) => (compareVersion(a, b) >= 0 ? a : b));
    let first;
    for (const node of replicas.get(key)) {
      const s = await c.req(kvPath(key, `?siblings=1&node=${node}`));
      assert.equal(s.status, 200, `${key} at ${node}`);
      const state = JSON.stringify(s.json.siblings);
      if (first === undefined) first = state;
      assert.equal(state, first, `replicas of ${key} differ`);
      const winner = s.json.siblings.reduce((a, b) => (compareVersion(a, b) >= 0 ? a : b));
      assert.equal(winner.hlc, best.hlc, `${key}: winner is the acknowledged write with the highest (hlc, node)`);
      assert.equal(winner.node, best.node);
      assert.equal(winner.deleted, best.deleted);
      if (!best.deleted) assert.equal(winner.value, best.value);
      const plain = await c.req(kvPath(key, `?node=${node}`));
      if (best.deleted) assert.equal(plain.status, 404);
      else {
        assert.equal(plain.status, 200);
        assert.equal(plain.text, best.value);
      }
    }
    if (!best.deleted) live.push(key);
  }
  return { status, elapsedMs, live };
}

test("N=8 R=3: 300 writes at random replicas converge, winners are the highest acknowledged writes", async () => {
  const c = await startCluster({ vars: { CLUSTER_SIZE: "8", REPLICAS: "3", CACHE_TTL_SECONDS: "0" } });
  try {
    const writes = await burst(c, { seed: 7, count: 300, keyCount: 60, prefix: "conv3" });
    const { status, live } = await checkConverged(c, writes);
    const listed = (await c.req("/v1/kv?prefix=conv3%2F")).json.keys;
    assert.deepEqual(listed, [...live].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    assert.equal(status.nodes.reduce((n, x) => n + x.keys, 0), live.length * 3, "each live key on exactly R nodes");
    // Idle: no client traffic, so rounds back off (anti-entropy doubles its interval while
    // roots agree) instead of running every interval, and nothing but digests is sent.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const sum = (s, f) => s.nodes.reduce((n, x) => n + x.gossip[f], 0);
    const before = (await c.req("/v1/cluster")).json;
    await new Promise((resolve) => setTimeout(resolve, 4000));
    const later = (await c.req("/v1/cluster")).json;
    assert.equal(later.converged, true);
    const rounds = sum(later, "rounds") - sum(before, "rounds");
    assert.ok(rounds < 8 * 10, `idle rounds back off: ${rounds} rounds in 4 s (every 200 ms would be 160)`);
    assert.equal(sum(later, "entries_sent"), sum(before, "entries_sent"), "no entries sent while idle");
  } finally {
    await c.dispose();
  }
});

test("N=8 REPLICAS=all (full replication): every node is a replica, 200 writes converge", async () => {
  const c = await startCluster({ vars: { CLUSTER_SIZE: "8", REPLICAS: "all", MAX_KEY_BYTES: "2097152", CACHE_TTL_SECONDS: "0" } });
  try {
    const placed = await c.req("/v1/cluster/placement?key=any%2Fkey");
    assert.equal(placed.status, 200, placed.text);
    assert.deepEqual([...placed.json.replicas].sort(), ["0", "1", "2", "3", "4", "5", "6", "7"]);
    const writes = await burst(c, { seed: 11, count: 200, keyCount: 40, prefix: "conv8" });
    const { status, live } = await checkConverged(c, writes);
    assert.equal(status.replicas, 8);
    for (const n of status.nodes) assert.equal(n.keys, live.length);
    const digests = new Set(status.nodes.map((n) => n.digest));
    assert.equal(digests.size, 1, "full replication: every node has the same digest");
  } finally {
    await c.dispose();
  }
});

test("R=N with fanout below R-1: changes are relayed and still converge", async () => {
  const c = await startCluster({ vars: { CLUSTER_SIZE: "8", REPLICAS: "8", MAX_KEY_BYTES: "2097152", FANOUT: "2", CACHE_TTL_SECONDS: "0" } });
  try {
    const writes = await burst(c, { seed: 5, count: 120, keyCount: 30, prefix: "relay" });
    await checkConverged(c, writes);
  } finally {
    await c.dispose();
  }
});
