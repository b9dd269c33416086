// ?consistency on writes, with gossip rounds stopped (fault "gossip": false) so that only the
// write's own pushes move it: quorum and all are held by that many replicas before the
// answer; all with a replica down is 503 "not enough replicas" with accepted_by, and the
// Worker does not fail it over; bad levels are 400.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath } from "./helpers.mjs";

let c;
before(async () => {
  c = await startCluster({ vars: { FAULTS: "1", CACHE_TTL_SECONDS: "0", CLUSTER_SIZE: "5", SHARDS: "256", QUORUM_TIMEOUT_MS: "1500" } });
  assert.equal((await faults({ gossip: false })).status, 200);
});
after(async () => {
  await c?.dispose();
});

const faults = (body) => c.req("/v1/admin/faults", { method: "POST", body: JSON.stringify(body) });
const placement = async (key) => (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas.map(Number);
/** The replicas whose own copy holds a version with this HLC. */
async function holding(key, hlc) {
  const held = [];
  for (const node of await placement(key)) {
    const r = await c.req(kvPath(key, `?siblings=1&node=${node}`));
    if (r.status === 200 && r.json.siblings.some((s) => s.hlc === hlc)) held.push(node);
  }
  return held;
}

test("a write at quorum is held by a majority before its answer, at all by every replica", async () => {
  for (let i = 0; i < 6; i++) {
    const key = `cons/quorum/${i}`;
    const r = await c.req(kvPath(key, "?consistency=quorum"), { method: "PUT", body: `q${i}` });
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.replicas >= 2, r.text);
    assert.ok((await holding(key, r.json.hlc)).length >= 2);
    const a = await c.req(kvPath(`cons/all/${i}`, "?consistency=all"), { method: "PUT", body: `a${i}` });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.replicas, 3);
    assert.equal((await holding(`cons/all/${i}`, a.json.hlc)).length, 3);
  }
  // Without a level (or with one), gossip stopped: the accepting replica alone.
  const one = await c.req(kvPath("cons/one", "?consistency=one"), { method: "PUT", body: "1" });
  assert.equal(one.status, 200);
  assert.equal(one.json.replicas, undefined);
  assert.deepEqual(await holding("cons/one", one.json.hlc), [Number(one.json.node)]);
  // A DELETE at all: every replica holds the tombstone.
  const d = await c.req(kvPath("cons/all/0", "?consistency=all"), { method: "DELETE" });
  assert.equal(d.status, 200, d.text);
  assert.equal(d.json.replicas, 3);
  assert.equal((await holding("cons/all/0", d.json.hlc)).length, 3);
});

test("all with a replica down is 503 with accepted_by, not failed over; quorum still succeeds", async () => {
  const key = "cons/down";
  const [first, , third] = await placement(key);
  assert.equal((await faults({ gossip: false, down: [third] })).status, 200);
  try {
    const all = await c.req(kvPath(key, "?consistency=all"), { method: "PUT", body: "x", headers: { "X-Ring-Write-Id": "down-all" } });
    assert.equal(all.status, 503, all.text);
    assert.equal(all.json.error, "not enough replicas");
    assert.equal(all.json.accepted_by, 2);
    // Durable at the first replica (not failed over to another, which would hold a second version).
    const at = await c.req(kvPath(key, `?siblings=1&node=${first}`));
    assert.equal(at.json.siblings.length, 1);
    // The replay at quorum is answered once a majority holds it.
    const q = await c.req(kvPath(key, "?consistency=quorum"), { method: "PUT", body: "x", headers: { "X-Ring-Write-Id": "down-all" } });
    assert.equal(q.status, 200, q.text);
    assert.equal(q.json.replicas, 2);
    assert.equal(q.json.hlc, at.json.siblings[0].hlc);
  } finally {
    assert.equal((await faults({ gossip: false })).status, 200);
  }
});

test("bad consistency levels are 400", async () => {
  for (const q of ["", "two", "QUORUM", "1"]) {
    const r = await c.req(kvPath("cons/bad", `?consistency=${q}`), { method: "PUT", body: "v" });
    assert.equal(r.status, 400, `${q}: ${r.text}`);
    const g = await c.req(kvPath("cons/bad", `?consistency=${q}`));
    assert.equal(g.status, 400, `${q}: ${g.text}`);
  }
  assert.equal((await c.req(kvPath("cons/bad"))).status, 404);
});
