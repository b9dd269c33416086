// The admin fence and a storage-lost node's rejoin, in workerd over HTTP (SPEC: Semantics,
// "Dots are leased"; HTTP API, POST /v1/admin/nodes/{id}/fence).
//
// A cluster takes writes (some accepted by the node to be fenced, so it has issued dots) and
// converges. Node 1, cut off, takes a write no peer has, and is fenced: it keeps its
// storage and takes no client write (the Worker routes around it) until, healed, its peers
// hold everything it does; then it wipes, and the write survives with its dot. Then it is
// fenced with ?force=true while partitioned from its peers, so it stays catching up:
// meanwhile every read and write through the Worker succeeds (other replicas serve), a
// ?node=1 write is refused (400: not a write replica yet), and the fence of a bad or unknown
// id is a 4xx JSON that changes nothing. Healed, it catches up; then
//   (a) no dot is reused: its new dots are above every dot it issued before the fence, and
//       two concurrent writes to one key at node 1 and another replica both survive as
//       siblings with distinct dots;
//   (b) no acknowledged write is lost: every key written before and during the rejoin reads
//       its value at every replica after convergence;
//   (c) during the rejoin reads and writes through the Worker never failed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startCluster, waitFor, kvPath, dumpEntry } from "./helpers.mjs";

const VICTIM = 1;

async function placement(c, key) {
  const r = await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`);
  assert.equal(r.status, 200);
  return r.json.replicas.map(Number);
}

async function converged(c) {
  await waitFor("/v1/cluster converged", async () => (await c.req("/v1/cluster")).json?.converged === true, { timeoutMs: 120_000 });
}

/** Every dot counter of `node` in one node's dump (all its keys). */
async function dotsOf(c, dumpNode, node) {
  const counters = [];
  let cursor = null;
  for (let page = 0; page < 1000; page++) {
    const r = await c.req(`/v1/admin/nodes/${dumpNode}/keys${cursor ? `?cursor=${cursor}` : ""}`);
    assert.equal(r.status, 200);
    for (const k of r.json.keys) for (const s of k.siblings) if (s.node === node) counters.push(BigInt(s.counter));
    cursor = r.json.cursor;
    if (cursor === null) break;
  }
  return counters;
}

async function faults(c, body) {
  const r = await c.req("/v1/admin/faults", { method: "POST", body: JSON.stringify(body) });
  assert.equal(r.status, 200, r.text);
}

test("fence: the node rejoins with fresh dots, loses no acknowledged write, and requests are served meanwhile", async () => {
  const c = await startCluster({ vars: { SHARDS: "256", FAULTS: "1" } });
  try {
    const written = new Map();
    const put = async (key, value, query = "") => {
      const r = await c.req(kvPath(key, query), { method: "PUT", body: value });
      return r;
    };
    // Before: 60 keys through the Worker, and 20 accepted by the victim itself.
    for (let i = 0; i < 60; i++) {
      const r = await put(`before/${i}`, `v${i}`);
      assert.equal(r.status, 200, r.text);
      written.set(`before/${i}`, `v${i}`);
    }
    let victimWrites = 0;
    for (let i = 0; victimWrites < 20; i++) {
      const key = `victim/${i}`;
      if (!(await placement(c, key)).includes(VICTIM)) continue;
      const r = await put(key, `w${i}`, `?node=${VICTIM}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.node, String(VICTIM));
      written.set(key, `w${i}`);
      victimWrites++;
    }
    await converged(c);
    const before = await dotsOf(c, VICTIM, VICTIM);
    assert.ok(before.length >= 20, "the victim issued dots before the fence");
    let maxBefore = before.reduce((a, b) => (a > b ? a : b));

    // Bad fences change nothing.
    for (const [path, status] of [
      ["/v1/admin/nodes/abc/fence", 400],
      ["/v1/admin/nodes/-1/fence", 400],
      ["/v1/admin/nodes/99999/fence", 400],
      ["/v1/admin/nodes/8/fence", 404],
      ["/v1/admin/nodes/1023/fence", 404],
    ]) {
      const r = await c.req(path, { method: "POST" });
      assert.equal(r.status, status, `${path}: ${r.text}`);
      assert.equal(typeof r.json?.error, "string");
    }
    assert.equal((await c.req(`/v1/admin/nodes/${VICTIM}/fence`)).status, 405);
    // RingControl's and the nodes' lease and catch-up routes are not reachable from clients.
    for (const path of ["/control/lease", "/internal/catchup", "/internal/fence"]) {
      const r = await c.req(path, { method: "POST", body: new Uint8Array([8, 1, 16, 1, 24, 255, 255, 255, 255, 15]) });
      assert.equal(r.status, 404, path);
    }
    assert.ok((await dotsOf(c, VICTIM, VICTIM)).length >= 20, "a refused fence wiped nothing");
    assert.equal((await c.req(`/v1/admin/nodes/${VICTIM}/fence?force=yes`, { method: "POST" })).status, 400);

    // A fence drains first: a write only the victim holds (taken while cut off) keeps it
    // from wiping; meanwhile it takes no client write. Healed, it pushes the write out,
    // then wipes (its next dots come from a fresh block) and the write survives.
    const others = [0, 2, 3, 4, 5, 6, 7];
    await faults(c, { partitions: [[VICTIM], others] });
    let onlyKey;
    for (let i = 0; ; i++) {
      onlyKey = `only-victim/${i}`;
      if ((await placement(c, onlyKey)).includes(VICTIM)) break;
    }
    const only = await put(onlyKey, "held-by-the-victim-alone", `?node=${VICTIM}`);
    assert.equal(only.status, 200, only.text);
    written.set(onlyKey, "held-by-the-victim-alone");
    const drain = await c.req(`/v1/admin/nodes/${VICTIM}/fence`, { method: "POST" });
    assert.equal(drain.status, 202, drain.text);
    assert.deepEqual(drain.json, { node: String(VICTIM), fenced: true, wiped: false });
    const held = await c.req(kvPath(onlyKey, `?node=${VICTIM}`));
    assert.equal(held.status, 200, "not wiped while it holds a write no peer has");
    const onlyDot = (await dumpEntry(c.req, VICTIM, onlyKey)).siblings.find((s) => Number(s.node) === VICTIM).counter;
    const refusedWrite = await put(onlyKey, "no", `?node=${VICTIM}`);
    assert.equal(refusedWrite.status, 400, refusedWrite.text);
    assert.match(refusedWrite.json.error, /fenced/);
    let firstKey;
    for (let i = 0; ; i++) {
      firstKey = `first-victim/${i}`;
      if ((await placement(c, firstKey))[0] === VICTIM) break;
    }
    const routed = await put(firstKey, "routed");
    assert.equal(routed.status, 200, `the Worker routes around a node being fenced: ${routed.text}`);
    assert.notEqual(routed.json.node, String(VICTIM));
    written.set(firstKey, "routed");
    await faults(c, {});
    let drained = 0n;
    await waitFor(
      "the drained victim to wipe and take writes from a fresh block",
      async () => {
        const key = `drained/${drained}`;
        drained++;
        if (!(await placement(c, key)).includes(VICTIM)) return false;
        const r = await put(key, "d", `?node=${VICTIM}`);
        if (r.status !== 200) return false;
        written.set(key, "d");
        const mine = (await dumpEntry(c.req, VICTIM, key)).siblings.filter((s) => Number(s.node) === VICTIM);
        return mine.length === 1 && BigInt(mine[0].counter) > maxBefore;
      },
      { timeoutMs: 120_000, everyMs: 200 },
    );
    await converged(c);
    for (const r of await placement(c, onlyKey)) {
      const entry = await dumpEntry(c.req, r, onlyKey);
      const dots = entry.siblings.map((s) => `${s.node}:${s.counter}`);
      assert.ok(dots.includes(`${VICTIM}:${onlyDot}`), `the drained write ${VICTIM}:${onlyDot} at node ${r}: ${dots}`);
    }
    maxBefore = (await dotsOf(c, VICTIM, VICTIM)).reduce((a, b) => (a > b ? a : b));

    // Fenced with force while cut off from its peers (after convergence: it holds nothing
    // they lack): wiped at once, and it cannot catch up yet.
    await faults(c, { partitions: [[VICTIM], others] });
    const f = await c.req(`/v1/admin/nodes/${VICTIM}/fence?force=true`, { method: "POST" });
    assert.equal(f.status, 202, f.text);
    assert.deepEqual(f.json, { node: String(VICTIM), fenced: true, wiped: true });
    const local = await c.req(kvPath("victim/0", `?node=${VICTIM}&siblings=1`));
    assert.equal(local.status, 404, "its storage was wiped");

    // (c) While it catches up: every read and write through the Worker succeeds.
    const victimKey = [...written.keys()].find((k) => k.startsWith("victim/"));
    for (const [key, value] of written) {
      const r = await c.req(kvPath(key));
      assert.equal(r.status, 200, `${key} during the rejoin: ${r.text}`);
      assert.equal(r.text, value);
    }
    for (let i = 0; i < 40; i++) {
      const r = await put(`during/${i}`, `d${i}`);
      assert.equal(r.status, 200, `during/${i}: ${r.text}`);
      written.set(`during/${i}`, `d${i}`);
    }
    // Placement leaves the victim out of the keys it is catching up on.
    const victimPlacement = await placement(c, victimKey);
    assert.ok(!victimPlacement.includes(VICTIM), `placement while catching up: ${victimPlacement}`);
    assert.equal(victimPlacement.length, 2);
    // A write naming the victim is refused (not a write replica until caught up).
    const named = await put(victimKey, "no", `?node=${VICTIM}`);
    assert.equal(named.status, 400, named.text);
    assert.match(named.json.error, /catching up/);

    // Healed: it catches up, then accepts writes again.
    await faults(c, {});
    let probe = 0;
    await waitFor(
      "the victim to accept writes again",
      async () => {
        const key = `probe/${probe++}`;
        if (!(await placement(c, key)).includes(VICTIM)) return false;
        const r = await put(key, "p", `?node=${VICTIM}`);
        if (r.status === 200) written.set(key, "p");
        return r.status === 200;
      },
      { timeoutMs: 120_000, everyMs: 200 },
    );

    await waitFor("placement to name the victim again", async () => (await placement(c, victimKey)).includes(VICTIM), { timeoutMs: 120_000 });

    // (a) Two concurrent writes to one key, at the victim and at another replica (cut off
    // from each other so neither sees the other's first): both survive, with distinct dots.
    let key;
    for (let i = 0; ; i++) {
      key = `concurrent/${i}`;
      if ((await placement(c, key)).includes(VICTIM)) break;
    }
    const other = (await placement(c, key)).find((n) => n !== VICTIM);
    await faults(c, { partitions: [[VICTIM], others] });
    const a = await put(key, "from-victim", `?node=${VICTIM}`);
    const b = await put(key, "from-other", `?node=${other}`);
    assert.equal(a.status, 200, a.text);
    assert.equal(b.status, 200, b.text);
    await faults(c, {});
    await converged(c);
    const sib = await c.req(kvPath(key, "?siblings=1"));
    assert.equal(sib.status, 200);
    assert.deepEqual(sib.json.siblings.map((s) => s.value).sort(), ["from-other", "from-victim"]);
    const entry = await dumpEntry(c.req, other, key);
    const dots = entry.siblings.map((s) => `${s.node}:${s.counter}`);
    assert.equal(new Set(dots).size, 2, `distinct dots: ${dots}`);
    const victimDot = entry.siblings.find((s) => Number(s.node) === VICTIM);
    assert.ok(BigInt(victimDot.counter) > maxBefore, `new dot ${victimDot.counter} above ${maxBefore}`);
    // Every write the victim takes from now on gets a dot above every dot it issued before
    // (its earlier dots come back to it by the catch-up, so they are told apart by key).
    let fresh = 0;
    for (let i = 0; fresh < 5 && i < 500; i++) {
      const k = `after-fence/${i}`;
      if (!(await placement(c, k)).includes(VICTIM)) continue;
      const w = await put(k, `after-${i}`, `?node=${VICTIM}`);
      assert.equal(w.status, 200, w.text);
      const e = await dumpEntry(c.req, VICTIM, k);
      const mine = e.siblings.filter((s) => Number(s.node) === VICTIM);
      assert.equal(mine.length, 1);
      assert.ok(BigInt(mine[0].counter) > maxBefore, `${k}: dot ${mine[0].counter} reused at or below ${maxBefore}`);
      fresh++;
    }
    assert.equal(fresh, 5);

    // (b) No acknowledged write lost: every key at every replica.
    for (const [k, value] of written) {
      for (const r of await placement(c, k)) {
        const got = await c.req(kvPath(k, `?node=${r}`));
        assert.equal(got.status, 200, `${k} at node ${r}: ${got.text}`);
        assert.equal(got.text, value, `${k} at node ${r}`);
      }
    }
  } finally {
    await c.dispose();
  }
});

test("fence with REPLICAS=1: refused without force (no other node holds the keys), taken with it", async () => {
  const c = await startCluster({ vars: { CLUSTER_SIZE: "2", REPLICAS: "1", SHARDS: "16" } });
  try {
    const w = await c.req(kvPath("single/key"), { method: "PUT", body: "v" });
    assert.equal(w.status, 200, w.text);
    const node = Number(w.json.node);
    const refused = await c.req(`/v1/admin/nodes/${node}/fence`, { method: "POST" });
    assert.equal(refused.status, 409, refused.text);
    assert.match(refused.json.error, /REPLICAS=1/);
    assert.equal((await c.req(kvPath("single/key"))).text, "v", "a refused fence wipes nothing");
    const forced = await c.req(`/v1/admin/nodes/${node}/fence?force=true`, { method: "POST" });
    assert.equal(forced.status, 202, forced.text);
    assert.deepEqual(forced.json, { node: String(node), fenced: true, wiped: true });
  } finally {
    await c.dispose();
  }
});
