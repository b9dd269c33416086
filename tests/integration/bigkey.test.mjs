// One key as large as the API allows, and nothing stalls: at every replica, context writes
// build the key up to MAX_KEY_BYTES (the next one is 409), while the replicas are
// partitioned; healed, the replicas merge it (3 x MAX_KEY_BYTES), small writes at the same
// nodes still reach their replicas, and the cluster converges. ?siblings=1 and the admin
// dump serve it (the dump pages by bytes). Malformed and oversized node-to-node messages
// are refused and counted; the rest of a push still applies.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor } from "./helpers.mjs";
import { encode } from "../../worker/pb.ts";

const MIB = 1024 * 1024;
const VALUE_BYTES = MIB;
const KEY_BYTES = 4 * MIB;

let c;
let ns;
before(async () => {
  c = await startCluster({
    vars: { CACHE_TTL_SECONDS: "0", FAULTS: "1", MAX_VALUE_BYTES: String(VALUE_BYTES), MAX_KEY_BYTES: String(KEY_BYTES) },
  });
  ns = await c.mf.getDurableObjectNamespace("NODE");
});
after(async () => {
  await c?.dispose();
});

const replicasOf = async (key) => (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas.map(Number);
const faults = (body) => c.req("/v1/admin/faults", { method: "POST", body: JSON.stringify(body) });
// /v1/cluster is served from the nodes' reports: counts are exact once converged (every
// node has reported since its last change).
const refusedAt = async (node) =>
  (await waitFor("converged", async () => {
    const s = (await c.req("/v1/cluster")).json;
    return s.converged ? s : undefined;
  }, { timeoutMs: 60_000, everyMs: 100 })).nodes[node].refused;

async function toNode(node, path, body) {
  const stub = ns.get(ns.idFromName(String(node)));
  const r = await stub.fetch(`https://node${path}`, { method: "POST", body, headers: { "X-Ring-Node-Id": String(node) } });
  await r.arrayBuffer();
  return r.status;
}

test("a key built to MAX_KEY_BYTES at every replica merges, and small writes at the same nodes still replicate", async () => {
  const key = "big/key";
  const reps = await replicasOf(key);
  const small = Array.from({ length: 30 }, (_, i) => `big/small-${i}`);
  // A first version everywhere; its context covers only it.
  const first = await c.req(kvPath(key), { method: "PUT", body: "first" });
  assert.equal(first.status, 200);
  await waitFor("the first version everywhere", async () => {
    for (const n of reps) if ((await c.req(kvPath(key, `?node=${n}`))).text !== "first") return false;
    return true;
  }, { timeoutMs: 30_000 });
  // Each replica alone (a partition), so each builds its own siblings.
  assert.equal((await faults({ partitions: reps.map((n) => [n]) })).status, 200);
  for (const n of reps) {
    // Writes with the first version's context keep this replica's own earlier versions.
    for (let i = 0; i < KEY_BYTES / VALUE_BYTES; i++) {
      const w = await c.req(kvPath(key, `?node=${n}`), {
        method: "PUT",
        body: `${n}:${i}:`.padEnd(VALUE_BYTES, "y"),
        headers: { "X-Ring-Context": first.json.context },
      });
      assert.equal(w.status, 200, w.text);
      assert.equal(w.json.siblings, i + 1);
    }
    // One byte more than MAX_KEY_BYTES at this node: 409, and nothing changes.
    const over = await c.req(kvPath(key, `?node=${n}`), { method: "PUT", body: "z", headers: { "X-Ring-Context": first.json.context } });
    assert.equal(over.status, 409);
    assert.match(over.json.error, /MAX_KEY_BYTES/);
  }
  await faults({});
  // A replica restarted in the middle of shipping the big key: nothing of it is lost.
  assert.equal((await c.req(`/v1/admin/nodes/${reps[1]}/crash`, { method: "POST" })).status, 200);
  // Small writes at the same nodes while the big key travels.
  for (let i = 0; i < small.length; i++) {
    const n = reps[i % reps.length];
    const r = await replicasOf(small[i]);
    const at = r.includes(n) ? n : r[0];
    assert.equal((await c.req(kvPath(small[i], `?node=${at}`), { method: "PUT", body: `small-${i}` })).status, 200);
  }
  await waitFor("converged", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 120_000, everyMs: 500 });
  const siblings = KEY_BYTES / VALUE_BYTES * reps.length;
  for (const n of reps) {
    const r = await c.req(kvPath(key, `?siblings=1&node=${n}`));
    assert.equal(r.status, 200);
    assert.equal(r.json.siblings.length, siblings, `replica ${n}`);
    assert.equal(r.json.siblings.reduce((t, s) => t + s.value.length, 0), siblings * VALUE_BYTES);
  }
  for (let i = 0; i < small.length; i++) {
    for (const n of await replicasOf(small[i])) assert.equal((await c.req(kvPath(small[i], `?node=${n}`))).text, `small-${i}`);
  }
  // The admin dump pages by bytes: the big key fills a page alone, and every key is listed.
  const seen = new Set();
  let cursor = null;
  let pages = 0;
  for (; pages < 50; pages++) {
    const d = await c.req(`/v1/admin/nodes/${reps[0]}/keys${cursor ? `?cursor=${cursor}` : ""}`);
    assert.equal(d.status, 200);
    const big = d.json.keys.find((k) => k.key === key);
    if (big) {
      assert.equal(big.siblings.length, siblings);
      assert.equal(d.json.keys.length, 1, "the big key is alone on its page");
    }
    for (const k of d.json.keys) seen.add(k.key);
    cursor = d.json.cursor;
    if (cursor === null) break;
  }
  assert.ok(seen.has(key));
  assert.ok(pages >= 1);
  // A blind write resolves it everywhere.
  assert.equal((await c.req(kvPath(key), { method: "PUT", body: "small again" })).status, 200);
  await waitFor("converged after resolving", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 60_000 });
  for (const n of reps) assert.equal((await c.req(kvPath(key, `?node=${n}`))).text, "small again");
});

test("malformed and oversized node-to-node messages are refused and counted; gossip goes on", async () => {
  const key = "big/peer";
  const [x, y] = await replicasOf(key);
  const before = await refusedAt(x);
  assert.equal((await c.req(kvPath(key, `?node=${y}`), { method: "PUT", body: "from y" })).status, 200);
  // An entry that does not decode (a sibling without a dot or value hash) is refused alone.
  const other = "big/peer-broken";
  const bad = encode("Push", {
    version: 2,
    from: y,
    entries: [
      { key: new TextEncoder().encode(other), register: { siblings: [{ hlc: 5n }], context: { vv: [], dots: [] } } },
    ],
  });
  assert.equal(await toNode(x, "/internal/push", bad), 200);
  // Too many entries, and a body beyond the message limit: the whole message is refused.
  const many = encode("Push", {
    version: 2,
    from: y,
    entries: Array.from({ length: 16385 }, (_, i) => ({ key: new TextEncoder().encode(`m${i}`) })),
  });
  assert.equal(await toNode(x, "/internal/push", many), 400);
  const huge = new Uint8Array(64 * MIB + 16);
  assert.equal(await toNode(x, "/internal/push", huge), 400);
  const after = await refusedAt(x);
  assert.ok((after.malformed ?? 0) - (before.malformed ?? 0) >= 3, JSON.stringify(after));
  assert.equal((await c.req(kvPath(other, `?node=${x}`))).status, 404);
  // Gossip goes on: y's write reaches x.
  await waitFor("x has y's write", async () => (await c.req(kvPath(key, `?node=${x}`))).text === "from y", { timeoutMs: 30_000 });
});
