// Tombstones: collected once every replica holds the same state for the grace; a
// partitioned replica blocks collection until it has the tombstone; a replica that missed
// the delete, and one that missed the collection, are reconciled; anti-entropy and late
// copies of collected versions (held messages, delivered after the collection) never bring
// a collected key back.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor, sleep, dumpEntry } from "./helpers.mjs";

let c;
before(async () => {
  c = await startCluster({ vars: { TOMBSTONE_GRACE_SECONDS: "1", FAULTS: "1", CACHE_TTL_SECONDS: "0" } });
});
after(async () => {
  await c?.dispose();
});

const replicasOf = async (key) => (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas;
const siblingsAt = (key, node) => c.req(kvPath(key, `?siblings=1&node=${node}`));
const faults = (body) => c.req("/v1/admin/faults", { method: "POST", body: JSON.stringify(body) });

async function statesOf(key) {
  return Promise.all((await replicasOf(key)).map((n) => siblingsAt(key, n)));
}

test("a deleted key is collected on every replica once all of them hold the tombstone", async () => {
  const keys = Array.from({ length: 10 }, (_, i) => `tomb/${i}`);
  for (const k of keys) assert.equal((await c.req(kvPath(k), { method: "PUT", body: "v" })).status, 200);
  for (const k of keys) assert.equal((await c.req(kvPath(k), { method: "DELETE" })).status, 200);
  for (const k of keys) {
    await waitFor(`${k} collected`, async () => (await statesOf(k)).every((s) => s.status === 404), { timeoutMs: 30_000 });
  }
  // Anti-entropy and gossip keep running: nothing comes back.
  await waitFor("converged", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 30_000 });
  await sleep(2000);
  for (const k of keys) {
    for (const s of await statesOf(k)) assert.equal(s.status, 404);
    assert.equal((await c.req(kvPath(k))).status, 404);
  }
  assert.equal((await c.req("/v1/kv?prefix=tomb%2F")).json.keys.length, 0);
  // What a collected key leaves is a marker: its context, no version; deleted after ten
  // times the grace (1 s here).
  const node = (await replicasOf(keys[1]))[0];
  const req = (path) => c.req(path);
  const marker = await dumpEntry(req, node, keys[1]);
  assert.ok(marker, "the marker is a row");
  assert.equal(marker.siblings.length, 0);
  assert.ok(marker.context.vv.length > 0, "the marker keeps the key's context");
  await waitFor("marker deleted after 10 x the grace", async () => (await dumpEntry(req, node, keys[1])) === undefined, { timeoutMs: 30_000, everyMs: 1000 });
  // A collected key can be written again.
  assert.equal((await c.req(kvPath(keys[0]), { method: "PUT", body: "again" })).status, 200);
  assert.equal((await c.req(kvPath(keys[0]))).text, "again");
});

test("a partitioned replica blocks collection until it has the tombstone", async () => {
  const key = "tomb/partitioned";
  const [a, b, cc] = await replicasOf(key);
  assert.equal((await c.req(kvPath(key, `?node=${a}`), { method: "PUT", body: "live" })).status, 200);
  await waitFor("replicated", async () => (await statesOf(key)).every((s) => s.status === 200), { timeoutMs: 30_000 });
  const others = [0, 1, 2, 3, 4, 5, 6, 7].filter((n) => String(n) !== cc);
  assert.equal((await faults({ partitions: [[Number(cc)], others] })).status, 200);
  try {
    assert.equal((await c.req(kvPath(key, `?node=${a}`), { method: "DELETE" })).status, 200);
    await sleep(3500);
    const during = await Promise.all([a, b, cc].map((n) => siblingsAt(key, n)));
    assert.equal(during[0].status, 200, "the tombstone is kept while a replica is unreachable");
    assert.equal(during[0].json.siblings[0].deleted, true);
    assert.equal(during[1].status, 200);
    assert.equal(during[2].status, 200);
    assert.equal(during[2].json.siblings[0].deleted, false, "the partitioned replica still has the value");
  } finally {
    assert.equal((await faults({})).status, 200);
  }
  await waitFor("collected everywhere after healing", async () => (await statesOf(key)).every((s) => s.status === 404), { timeoutMs: 60_000 });
  await sleep(1500);
  for (const s of await statesOf(key)) assert.equal(s.status, 404, "the value did not come back");
});

test("a missed delete and a missed collection are reconciled; late copies of collected versions are dropped", async () => {
  const [k1, k2] = ["tomb/late/1", "tomb/late/2"];
  const [a, b, cc] = await replicasOf(k1);
  const [a2, b2, c2] = await replicasOf(k2);
  const others = (n) => [0, 1, 2, 3, 4, 5, 6, 7].filter((x) => String(x) !== n);
  // a's first pushes of both values are held: the late copies delivered at the end.
  assert.equal((await faults({ hold: [Number(a), Number(a2)] })).status, 200);
  assert.equal((await c.req(kvPath(k1, `?node=${a}`), { method: "PUT", body: "old" })).status, 200);
  assert.equal((await c.req(kvPath(k2, `?node=${a2}`), { method: "PUT", body: "old" })).status, 200);
  const held = (await faults({})).json.held;
  assert.ok(held[a]?.["/internal/push"] > 0, `${a} held its pushes: ${JSON.stringify(held)}`);
  await waitFor("both values everywhere", async () => [...(await statesOf(k1)), ...(await statesOf(k2))].every((s) => s.status === 200), { timeoutMs: 30_000 });

  // k1: replica cc misses the delete; the others keep the tombstone until it has it.
  assert.equal((await faults({ partitions: [[Number(cc)], others(cc)] })).status, 200);
  assert.equal((await c.req(kvPath(k1, `?node=${a}`), { method: "DELETE" })).status, 200);
  await sleep(3000);
  const during = await statesOf(k1);
  assert.equal(during[0].status, 200, "not collected while a replica misses the delete");
  assert.equal(during[2].json.siblings[0].deleted, false);
  assert.equal((await faults({})).status, 200);
  await waitFor("k1 collected everywhere", async () => (await statesOf(k1)).every((s) => s.status === 404), { timeoutMs: 60_000 });

  // k2: replica c2 sends nothing (its messages are held), so it cannot decide a collection
  // itself; the others collect and their markers reconcile it.
  assert.equal((await faults({ hold: [Number(c2)] })).status, 200);
  assert.equal((await c.req(kvPath(k2, `?node=${a2}`), { method: "DELETE" })).status, 200);
  await waitFor("k2 collected everywhere", async () => (await statesOf(k2)).every((s) => s.status === 404), { timeoutMs: 60_000 });
  const heldNow = (await faults({ hold: [Number(c2)] })).json.held;
  assert.ok(heldNow[c2]?.["/internal/gc"] > 0, `${c2}'s own collection queries never left: ${JSON.stringify(heldNow)}`);

  // Every held message, the first pushes of both values included, arrives now.
  const late = await faults({ deliver_held: true });
  assert.equal(late.status, 200);
  assert.ok(late.json.delivered >= 2, `delivered ${late.json.delivered}`);
  await waitFor("converged", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 30_000 });
  await sleep(2000);
  for (const k of [k1, k2]) {
    for (const s of await statesOf(k)) assert.equal(s.status, 404, `${k} did not come back`);
    assert.equal((await c.req(kvPath(k))).status, 404);
  }
  assert.equal((await c.req("/v1/kv?prefix=tomb%2Flate%2F")).json.keys.length, 0);
});

test("replicas holding different tombstones past the grace are reconciled before anything is collected", async () => {
  const key = "tomb/concurrent";
  const [a, b, cc] = await replicasOf(key);
  assert.equal((await c.req(kvPath(key, `?node=${a}`), { method: "PUT", body: "v" })).status, 200);
  await waitFor("replicated", async () => (await statesOf(key)).every((s) => s.status === 200), { timeoutMs: 30_000 });
  const rest = [0, 1, 2, 3, 4, 5, 6, 7].filter((n) => String(n) !== a);
  assert.equal((await faults({ partitions: [[Number(a)], rest] })).status, 200);
  try {
    // Two concurrent deletes: each side holds its own tombstone, well past the grace.
    assert.equal((await c.req(kvPath(key, `?node=${a}`), { method: "DELETE" })).status, 200);
    assert.equal((await c.req(kvPath(key, `?node=${b}`), { method: "DELETE" })).status, 200);
    await sleep(3000);
    const [sa, sb] = await Promise.all([siblingsAt(key, a), siblingsAt(key, b)]);
    assert.equal(sa.status, 200, "a tombstone no other replica holds is not collected");
    assert.equal(sb.status, 200);
    assert.notDeepEqual(sa.json.siblings, sb.json.siblings);
  } finally {
    assert.equal((await faults({})).status, 200);
  }
  // Converged means the same state everywhere (both tombstones), or collected everywhere:
  // never two different expired tombstones that both count as nothing.
  await waitFor("converged", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 60_000 });
  const states = await Promise.all([a, b, cc].map((n) => siblingsAt(key, n)));
  const shapes = states.map((s) => (s.status === 404 ? "collected" : JSON.stringify(s.json.siblings.map((x) => [x.node, x.hlc, x.deleted]))));
  assert.ok(shapes.every((x) => x === "collected") || new Set(shapes).size === 1, `replica states: ${shapes.join(" | ")}`);
  if (shapes[0] !== "collected") assert.equal(states[0].json.siblings.length, 2, "both tombstones kept until collected");
  await waitFor("collected everywhere", async () => (await statesOf(key)).every((s) => s.status === 404), { timeoutMs: 60_000 });
});

test("faults: partition settings are validated; the routes 404 without FAULTS", async () => {
  assert.equal((await faults({ drop: 2 })).status, 400);
  assert.equal((await faults({ hold: ["x"] })).status, 400);
  assert.equal((await faults({ deliver_held: 1 })).status, 400);
  assert.equal((await faults({ partitions: "x" })).status, 400);
  assert.equal((await faults({ skew_ms: { a: 1 } })).status, 400);
  assert.equal((await c.req("/v1/admin/faults", { method: "POST", body: "not json" })).status, 400);
  assert.equal((await c.req("/v1/admin/faults", { method: "GET" })).status, 405);
  assert.equal((await faults({})).status, 200);
});
