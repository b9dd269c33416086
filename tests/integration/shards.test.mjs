// SHARDS at its maximum (65,536) end to end: writes, reads, placement, listing, and
// /v1/cluster, which places every shard holding data (by shard number: the sample-key form
// was capped at 16,384 and answered 500 beyond) and says converged once replicas agree.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor } from "./helpers.mjs";

let c;
before(async () => {
  c = await startCluster({ vars: { SHARDS: "65536", CACHE_TTL_SECONDS: "0", GOSSIP_INTERVAL_MS: "200" } });
});
after(async () => {
  await c?.dispose();
});

test("SHARDS=65536: writes, reads, placement, listing and a converged /v1/cluster", async () => {
  const keys = Array.from({ length: 40 }, (_, i) => `s65536/${String(i).padStart(3, "0")}`);
  for (const k of keys) {
    const r = await c.req(kvPath(k), { method: "PUT", body: `v-${k}` });
    assert.equal(r.status, 200, JSON.stringify(r.json));
  }
  for (const k of keys) {
    const r = await c.req(kvPath(k));
    assert.equal(r.status, 200);
    assert.equal(r.text, `v-${k}`);
  }
  const shards = new Set();
  for (const k of keys) {
    const p = (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(k)}`)).json;
    assert.ok(p.shard >= 0 && p.shard < 65536);
    assert.equal(new Set(p.replicas).size, 3);
    shards.add(p.shard);
  }
  assert.ok(shards.size > 30, "40 keys land in many of 65,536 shards");
  const listed = (await c.req("/v1/kv?prefix=s65536/")).json.keys;
  assert.deepEqual(listed, keys);
  // Right after writes some replica may still lack a key; once gossip has run, converged.
  await waitFor("converged", async () => {
    const r = await c.req("/v1/cluster");
    assert.equal(r.status, 200, JSON.stringify(r.json));
    return r.json.converged === true;
  });
  const status = (await c.req("/v1/cluster")).json;
  assert.equal(status.nodes.reduce((n, node) => n + node.keys, 0), keys.length * 3);
});
