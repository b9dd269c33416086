// Faults (FAULTS=1): 30% gossip loss, a partition, single-node crashes and clock skew
// during a burst of writes; after healing the cluster converges and no acknowledged write
// is lost (each key's winner is its highest acknowledged (hlc, node)).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor, compareVersion } from "./helpers.mjs";

let c;
before(async () => {
  c = await startCluster({ vars: { FAULTS: "1", CACHE_TTL_SECONDS: "0" } });
});
after(async () => {
  await c?.dispose();
});

const faults = (body) => c.req("/v1/admin/faults", { method: "POST", body: JSON.stringify(body) });

test("loss, a partition and crashes during writes: no acknowledged write lost after healing", async () => {
  const keys = Array.from({ length: 40 }, (_, i) => `fault/${i}`);
  const replicas = new Map();
  for (const k of keys) replicas.set(k, (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(k)}`)).json.replicas);
  assert.equal((await faults({ drop: 0.3, partitions: [[0, 1, 2], [3, 4, 5, 6, 7]] })).status, 200);
  const acked = new Map(keys.map((k) => [k, []]));
  let n = 0;
  await Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 25; i++) {
        const j = n++;
        const key = keys[(j * 7 + w) % keys.length];
        const reps = replicas.get(key);
        const node = reps[j % reps.length];
        if (j === 60) assert.equal((await c.req(`/v1/admin/nodes/${reps[0]}/crash`, { method: "POST" })).status, 200);
        if (j === 120) assert.equal((await c.req(`/v1/admin/nodes/${reps[1]}/crash`, { method: "POST" })).status, 200);
        const del = j % 9 === 0;
        const r = await c.req(kvPath(key, `?node=${node}`), { method: del ? "DELETE" : "PUT", body: del ? undefined : `v${j}` });
        // A crash may fail a request in flight; only acknowledged writes count.
        if (r.status === 200) acked.get(key).push({ hlc: r.json.hlc, node: r.json.node, value: `v${j}`, deleted: del });
        else assert.ok(r.status >= 500, `write failed with ${r.status}: ${r.text}`);
      }
    }),
  );
  assert.equal((await c.req("/v1/cluster")).json.converged, false, "a partition keeps replicas apart");
  assert.equal((await faults({})).status, 200);
  await waitFor("convergence after healing", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 90_000, everyMs: 500 });
  let checked = 0;
  for (const [key, writes] of acked) {
    if (writes.length === 0) continue;
    const best = writes.reduce((a, b) => (compareVersion(a, b) >= 0 ? a : b));
    for (const node of replicas.get(key)) {
      const s = await c.req(kvPath(key, `?siblings=1&node=${node}`));
      assert.equal(s.status, 200);
      const winner = s.json.siblings.reduce((a, b) => (compareVersion(a, b) >= 0 ? a : b));
      assert.equal(`${winner.hlc}/${winner.node}`, `${best.hlc}/${best.node}`, `${key} at ${node}`);
      checked++;
    }
  }
  assert.ok(checked >= 90);
});

test("clock skew: a token from a node far ahead is refused elsewhere (400); injected skew stays within the bound", async () => {
  const key = "skew/k";
  const [a, b] = (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas;
  // A node's own clock may not be set beyond MAX_CLOCK_SKEW_MS (60 s here).
  const tooFar = await faults({ skew_ms: { [a]: 120_000 } });
  assert.equal(tooFar.status, 400);
  assert.match(tooFar.json.error, /MAX_CLOCK_SKEW_MS/);
  // Two nodes skewed apart by more than the bound (+50 s and -50 s).
  assert.equal((await faults({ skew_ms: { [a]: 50_000, [b]: -50_000 } })).status, 200);
  try {
    const w = await c.req(kvPath(key, `?node=${a}`), { method: "PUT", body: "future" });
    assert.equal(w.status, 200);
    const r = await c.req(kvPath(key, `?node=${b}`), { method: "PUT", body: "x", headers: { "X-Ring-Context": w.json.context } });
    assert.equal(r.status, 400);
    assert.match(r.json.error, /context token/);
  } finally {
    assert.equal((await faults({})).status, 200);
  }
  // Without skew, the same token is accepted, and the write converges everywhere.
  const w2 = await c.req(kvPath(key, `?node=${b}`), { method: "PUT", body: "now" });
  assert.equal(w2.status, 200);
});

test("a crashed node restarts on the next request and keeps its data", async () => {
  const key = "crash/k";
  const [a] = (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas;
  assert.equal((await c.req(kvPath(key, `?node=${a}`), { method: "PUT", body: "kept" })).status, 200);
  assert.equal((await c.req(`/v1/admin/nodes/${a}/crash`, { method: "POST" })).status, 200);
  const r = await c.req(kvPath(key, `?node=${a}`));
  assert.equal(r.status, 200);
  assert.equal(r.text, "kept");
  assert.equal((await c.req(`/v1/admin/nodes/99/crash`, { method: "POST" })).status, 400);
});

test("failover: a replica that fails is retried at the key's next replica (not with ?node=)", async () => {
  const key = "failover/k";
  const reps = (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas;
  assert.equal((await faults({ down: [Number(reps[0])] })).status, 200);
  try {
    const w = await c.req(kvPath(key), { method: "PUT", body: "via-second" });
    assert.equal(w.status, 200);
    assert.equal(w.json.node, reps[1]);
    const r = await c.req(kvPath(key));
    assert.equal(r.status, 200);
    assert.equal(r.text, "via-second");
    assert.equal(r.headers.get("x-ring-node"), reps[1]);
    const pinned = await c.req(kvPath(key, `?node=${reps[0]}`), { method: "PUT", body: "x" });
    assert.equal(pinned.status, 503);
    assert.equal((await faults({ down: reps.map(Number) })).status, 200);
    const none = await c.req(kvPath(key), { method: "PUT", body: "x" });
    assert.equal(none.status, 503);
    assert.equal(typeof none.json.error, "string");
    assert.equal((await c.req("/v1/cluster")).json.converged, false);
  } finally {
    assert.equal((await faults({})).status, 200);
  }
  await waitFor("the first replica catches up", async () => (await c.req(kvPath(key, `?node=${reps[0]}`))).text === "via-second", { timeoutMs: 30_000 });
});
