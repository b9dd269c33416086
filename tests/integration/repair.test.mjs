// Anti-entropy below shards, in workerd: with every key in one shard (SHARDS=1), a key only
// one replica holds is repaired by narrowing to a key range, in a few KiB, not by shipping
// the shard; and a shard with more keys than one message carries (20,000 > 16,384 entries)
// that two replicas lack entirely is repaired in bounded exchanges until they agree.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, waitFor } from "./helpers.mjs";
import { registerMaker, pushEntries, bytesSent } from "./seed.mjs";

const SIZE = 3;
const KEYS = 20_000;
const value = (i) => new TextEncoder().encode(`value-${i}-`.padEnd(64, "x"));

let c;
let maker;
before(async () => {
  c = await startCluster({ vars: { CLUSTER_SIZE: String(SIZE), REPLICAS: "3", SHARDS: "1", CACHE_TTL_SECONDS: "0" } });
  maker = registerMaker({ size: SIZE, replicas: 3, shards: 1 });
});
after(async () => {
  await c?.dispose();
});

const converged = async () => (await c.req("/v1/cluster")).json.converged;

async function readAt(node, key) {
  return c.req(`/v1/kv/${encodeURIComponent(key)}?node=${node}`);
}

test("a shard of 20,000 keys two replicas lack is repaired in bounded exchanges", { timeout: 300_000 }, async () => {
  const entries = Array.from({ length: KEYS }, (_, i) => maker.entry(`bulk/${i}`, value(i)));
  await pushEntries(c.mf, 0, 1, entries);
  // Only anti-entropy moves them (a node relays nothing it learns at REPLICAS <= FANOUT),
  // and it has begun while node 0 was still being seeded.
  assert.equal((await c.req("/v1/cluster")).json.nodes[0].keys, KEYS);
  await waitFor("the replicas agree", converged, { timeoutMs: 280_000, everyMs: 1000 });
  const after = (await c.req("/v1/cluster")).json;
  for (const n of after.nodes) assert.equal(n.keys, KEYS, JSON.stringify(after.nodes));
  for (const i of [0, 4321, KEYS - 1]) {
    const r = await readAt(2, `bulk/${i}`);
    assert.equal(r.status, 200, `bulk/${i} at node 2`);
    assert.deepEqual(r.bytes, value(i));
  }
});

test("one key among 20,000 in its shard is repaired in a few KiB", { timeout: 200_000 }, async () => {
  await waitFor("converged before", converged, { timeoutMs: 120_000 });
  const start = await bytesSent(c);
  // Only node 1 is given it (it relays nothing it learns): anti-entropy brings it to the others.
  await pushEntries(c.mf, 1, 0, [maker.entry("lonely/key", value(-1))]);
  await waitFor("the replicas agree", converged, { timeoutMs: 180_000, everyMs: 500 });
  const spent = (await bytesSent(c)) - start;
  for (const node of [0, 2]) {
    const r = await readAt(node, "lonely/key");
    assert.equal(r.status, 200, `node ${node} got the key`);
    assert.deepEqual(r.bytes, value(-1));
  }
  // Shipping the shard would take 20,000 entries (about 2 MB); narrowing takes the range
  // digests of a few levels and one leaf's entries. Idle exchanges meanwhile are counted too.
  assert.ok(spent < 64 * 1024, `repair took ${spent} bytes`);
  console.log(`# repair of one key among ${KEYS} in one shard: ${spent} bytes sent (digests and idle exchanges included)`);
});
