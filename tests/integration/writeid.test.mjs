// Idempotent writes (X-Ring-Write-Id): a replayed id answers the version it wrote and
// writes nothing; the same id with another value is 409; bad ids are 400; a replica that
// commits and then answers 500 (fault fail_after_commit) is asked again with the same id
// and answers the replay, so the client sees one version; every 5xx to a write carries
// accepted_by.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath } from "./helpers.mjs";

let c;
before(async () => {
  c = await startCluster({ vars: { FAULTS: "1", CACHE_TTL_SECONDS: "0", CLUSTER_SIZE: "5", SHARDS: "256" } });
});
after(async () => {
  await c?.dispose();
});

const faults = (body) => c.req("/v1/admin/faults", { method: "POST", body: JSON.stringify(body) });
const put = (key, value, headers = {}, query = "") => c.req(kvPath(key, query), { method: "PUT", body: value, headers });
const placement = async (key) => (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas.map(Number);
const siblingsAt = async (key, node) => {
  const r = await c.req(kvPath(key, `?siblings=1&node=${node}`));
  return r.status === 404 ? [] : r.json.siblings;
};

test("a replayed write id answers its version and writes nothing; another value under it is 409", async () => {
  const key = "wid/replay";
  const first = await put(key, "one", { "X-Ring-Write-Id": "order-42_a" });
  assert.equal(first.status, 200, first.text);
  const again = await put(key, "one", { "X-Ring-Write-Id": "order-42_a" });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.hlc, first.json.hlc);
  assert.equal(again.json.node, first.json.node);
  assert.equal(again.json.siblings, 1);
  const [replica] = await placement(key);
  assert.equal((await siblingsAt(key, replica)).length, 1);
  // The replay's context covers that version: a context write with it supersedes it.
  const next = await put(key, "two", { "X-Ring-Context": again.json.context });
  assert.equal(next.status, 200, next.text);
  assert.equal(next.json.siblings, 1);
  const reused = await put(key, "three", { "X-Ring-Write-Id": "other-id" });
  assert.equal(reused.status, 200);
  // The id of a version still held, with another value or as a delete: 409, nothing changes.
  const clash = await put(key, "not three", { "X-Ring-Write-Id": "other-id" });
  assert.equal(clash.status, 409, clash.text);
  assert.deepEqual(clash.json, { error: "write id reused with another value" });
  const del = await c.req(kvPath(key), { method: "DELETE", headers: { "X-Ring-Write-Id": "other-id" } });
  assert.equal(del.status, 409, del.text);
  const read = await c.req(kvPath(key));
  assert.equal(read.status, 200);
  assert.equal(read.text, "three");
  assert.equal(read.headers.get("X-Ring-Hlc"), reused.json.hlc);
  // A DELETE replayed answers like the first.
  const d1 = await c.req(kvPath(key), { method: "DELETE", headers: { "X-Ring-Write-Id": "del-1" } });
  const d2 = await c.req(kvPath(key), { method: "DELETE", headers: { "X-Ring-Write-Id": "del-1" } });
  assert.equal(d1.status, 200);
  assert.equal(d2.status, 200);
  assert.equal(d2.json.hlc, d1.json.hlc);
});

test("write ids outside 1..64 of [A-Za-z0-9_-] are 400 and write nothing", async () => {
  const key = "wid/bad";
  for (const id of ["", "a b", "a/b", "x".repeat(65), "a.b"]) {
    const r = await put(key, "v", { "X-Ring-Write-Id": id });
    assert.equal(r.status, 400, `${JSON.stringify(id)}: ${r.text}`);
    assert.match(r.json.error, /write id/);
  }
  assert.equal((await c.req(kvPath(key))).status, 404);
  assert.equal((await put(key, "v", { "X-Ring-Write-Id": "x".repeat(64) })).status, 200);
});

test("a replica that commits then answers 500 is asked again with the same id: one version", async () => {
  const key = "wid/after-commit";
  const [first] = await placement(key);
  assert.equal((await faults({ fail_after_commit: [first] })).status, 200);
  try {
    // Without an id of its own the Worker makes one, and resends it to the same replica.
    const r = await put(key, "once", {}, `?node=${first}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.node, String(first));
    assert.equal(r.json.siblings, 1);
    const held = await siblingsAt(key, first);
    assert.equal(held.length, 1, JSON.stringify(held));
    assert.equal(held[0].hlc, r.json.hlc);
    // With the client's id, a second attempt of the client is answered the same way.
    const a = await put(key, "twice", { "X-Ring-Write-Id": "client-retry" }, `?node=${first}`);
    const b = await put(key, "twice", { "X-Ring-Write-Id": "client-retry" }, `?node=${first}`);
    assert.equal(a.status, 200, a.text);
    assert.equal(b.status, 200, b.text);
    assert.equal(b.json.hlc, a.json.hlc);
    assert.equal((await siblingsAt(key, first)).length, 1);
  } finally {
    assert.equal((await faults({})).status, 200);
  }
});

test("every 5xx to a write carries accepted_by", async () => {
  const key = "wid/down";
  const replicas = await placement(key);
  assert.equal((await faults({ down: replicas })).status, 200);
  try {
    const r = await put(key, "v");
    assert.ok(r.status >= 500, `${r.status} ${r.text}`);
    assert.ok("accepted_by" in r.json, r.text);
    assert.ok(r.json.accepted_by === null || Number.isInteger(r.json.accepted_by), r.text);
    const d = await c.req(kvPath(key), { method: "DELETE" });
    assert.ok(d.status >= 500);
    assert.ok("accepted_by" in d.json, d.text);
  } finally {
    assert.equal((await faults({})).status, 200);
  }
  assert.equal((await put(key, "v")).status, 200);
});
