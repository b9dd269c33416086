// Resizing a cluster through RingControl's epochs, in workerd over HTTP (SPEC:
// Resizing; HTTP API, POST /v1/admin/cluster and /v1/cluster's epoch and transition).
//
//   1. An empty cluster grows 4 -> 7 and shrinks 7 -> 3, each through joining, switching,
//      leaving and done (four epochs, seen in /v1/cluster's epoch). The Worker isolate,
//      which no node reply told of the new ring, still routes by the old one: the first node
//      it asks refuses with its newer ring (421, counted as `stale_ring`), the Worker takes
//      it and places the key again, so every write lands on a replica of the new ring and
//      nothing reaches a node outside it. Afterwards nodes 3..6 are outside the ring:
//      `?node=` names them no more, the listing and every read see only the new placement.
//   2. A node that cannot be told an epoch (down and cut off) stalls the transition in
//      joining and is named in `waiting_for`; meanwhile a POST of the same size is 202 with
//      the transition, another size 409, out-of-range sizes 400, and reads and writes keep
//      working. Every node restarted mid-phase (the whole cluster, from its storage) resumes
//      the transition, in joining, in switching and in leaving (node 6 held at each by fault
//      injection, `ring_phase_held`); healed, it is sent the epoch again and the resize ends.
//   3. A node of the previous release (its report to RingControl says an older protocol
//      version) could neither adopt nor confirm an epoch: a POST is 409 with the reason and
//      nothing starts; once that node reports this release's version, the resize runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startCluster, waitFor, kvPath, PROTOCOL_VERSION } from "./helpers.mjs";
import { encode } from "../../worker/pb.ts";

async function post(c, size) {
  return c.req("/v1/admin/cluster", { method: "POST", body: JSON.stringify({ size }) });
}

async function status(c) {
  const r = await c.req("/v1/cluster");
  assert.equal(r.status, 200, r.text);
  return r.json;
}

async function resized(c, size, timeoutMs = 60_000) {
  return waitFor(`the resize to ${size} done`, async () => {
    const s = await status(c);
    return s.transition === null && s.size === size ? s : undefined;
  }, { timeoutMs });
}

async function placement(c, key) {
  const r = await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`);
  assert.equal(r.status, 200, r.text);
  return r.json.replicas.map(Number);
}

function staleRefusals(s) {
  return s.nodes.reduce((sum, n) => sum + (n.refused.stale_ring ?? 0), 0);
}

test("an empty cluster grows 4 -> 7, shrinks 7 -> 3 and grows 3 -> 7 through every phase; a stale Worker is refused and retries", { timeout: 300_000 }, async () => {
  const vars = { CLUSTER_SIZE: "4", SHARDS: "1024", FAULTS: "1" };
  // The placement at size 7, from a cluster of that size (placement is a function of the
  // shard count, the size and R): a key whose first replica at size 4 is not among its
  // replicas at size 7 (about one in 35: nodes 4, 5 and 6 all outrank it) is refused
  // there once the ring has moved on.
  const ref = await startCluster({ vars: { ...vars, CLUSTER_SIZE: "7" } });
  const keys = Array.from({ length: 300 }, (_, i) => `grow-${i}`);
  const at7 = new Map();
  try {
    for (const k of keys) at7.set(k, await placement(ref, k));
  } finally {
    await ref.dispose();
  }
  const c = await startCluster({ vars });
  try {
    const before = await status(c);
    assert.equal(before.size, 4);
    assert.equal(before.transition, null);
    assert.equal(before.nodes.length, 4);
    // Placements on the old ring, seen by this isolate before the resize.
    const oldFirst = new Map();
    for (const k of keys) oldFirst.set(k, (await placement(c, k))[0]);
    const moving = keys.filter((k) => !at7.get(k).includes(oldFirst.get(k)));
    assert.ok(moving.length > 0, "some key's first replica at size 4 is not one at size 7");

    let epoch = before.epoch;
    for (const to of [7, 3, 7]) {
      const from = (await status(c)).size;
      const started = await post(c, to);
      assert.equal(started.status, 202, started.text);
      assert.deepEqual(started.json, { epoch: epoch + 1, from, to, phase: "joining" });
      const done = await resized(c, to, 120_000);
      // Joining, switching, leaving, done: four epochs.
      assert.equal(done.epoch, epoch + 4);
      assert.equal(done.nodes.length, to);
      assert.deepEqual(done.nodes.map((n) => n.id), Array.from({ length: to }, (_, i) => String(i)));
      epoch = done.epoch;
      // The same size again: nothing to do.
      const again = await post(c, to);
      assert.equal(again.status, 200, again.text);
      assert.deepEqual(again.json, { epoch, from: to, to, phase: null });
      if (to === 3) {
        // Nodes 3..6 are outside the ring: not to be named, holding nothing.
        assert.equal((await c.req(kvPath("grow-0", "?node=5"))).status, 400);
        assert.equal((await c.req(kvPath("grow-0", "?node=3"), { method: "PUT", body: "x" })).status, 400);
        for (const node of [3, 4, 5, 6]) {
          const keysOf = await c.req(`/v1/admin/nodes/${node}/keys`);
          assert.deepEqual(keysOf.json, { node, keys: [], cursor: null });
        }
      }
    }

    // After 3: nodes 3..6 were outside the ring, and are back with nothing.
    // This isolate has heard of no new ring (it spoke to RingControl only): the first write
    // goes by the size-4 placement to a node that serves the key no more, is refused there
    // with the newer ring, and lands on a replica of the size-7 ring.
    const order = [moving[0], ...keys.filter((k) => k !== moving[0]).slice(0, 30)];
    for (const k of order) {
      const w = await c.req(kvPath(k), { method: "PUT", body: `v-${k}` });
      assert.equal(w.status, 200, w.text);
      const now = await placement(c, k);
      assert.deepEqual(now, at7.get(k));
      assert.ok(now.includes(Number(w.json.node)), `${k} written at ${w.json.node}, not a replica of the new ring (${now})`);
      const r = await c.req(kvPath(k));
      assert.equal(r.text, `v-${k}`);
    }
    const s = await waitFor("the refusal reported", async () => {
      const st = await status(c);
      return staleRefusals(st) > 0 ? st : undefined;
    }, { timeoutMs: 30_000 });
    assert.ok(staleRefusals(s) > 0);

    assert.equal((await c.req(kvPath("grow-0", "?node=7"))).status, 400);
    // A cluster holding keys resizes too: 7 -> 5 moves them, every value still reads
    // back, and nodes 5 and 6 end with none.
    const shrunk = await post(c, 5);
    assert.equal(shrunk.status, 202, shrunk.text);
    await resized(c, 5, 120_000);
    for (const k of order) assert.equal((await c.req(kvPath(k))).text, `v-${k}`);
    for (const node of [5, 6]) {
      const keysOf = await c.req(`/v1/admin/nodes/${node}/keys`);
      assert.deepEqual(keysOf.json, { node, keys: [], cursor: null });
    }
  } finally {
    await c.dispose();
  }
});

test("a node that cannot confirm stalls the transition and is named; POSTs meanwhile; a restart mid-phase resumes", { timeout: 240_000 }, async () => {
  const vars = { CLUSTER_SIZE: "7", REPLICAS: "3", SHARDS: "256", FAULTS: "1" };
  const c = await startCluster({ vars });
  let d;
  try {
    // Node 6 is down and cut off: it takes no epoch, from RingControl or from a peer.
    const cut = await c.req("/v1/admin/faults", {
      method: "POST",
      body: JSON.stringify({ down: [6], partitions: [[6], [0, 1, 2, 3, 4, 5]] }),
    });
    assert.equal(cut.status, 200, cut.text);
    const started = await post(c, 4);
    assert.equal(started.status, 202, started.text);
    assert.equal(started.json.phase, "joining");
    // Node 6 never confirms; the new replicas wait too, for the shards whose old replicas
    // include node 6 (a copy pulls every old replica of the shard, empty or not).
    const stalled = await waitFor("node 6 named", async () => {
      const s = await status(c);
      return s.transition?.waiting_for?.includes("6") ? s : undefined;
    }, { timeoutMs: 30_000 });
    assert.ok(stalled.transition.waiting_for.every((n) => ["0", "1", "2", "3", "6"].includes(n)), stalled.transition.waiting_for);
    assert.equal(stalled.transition.phase, "joining");
    assert.equal(stalled.transition.from, 7);
    assert.equal(stalled.transition.to, 4);
    assert.ok(stalled.transition.shards_moving > 0);
    assert.equal(stalled.size, 7, "joining: the old replicas serve");
    assert.equal(stalled.nodes.length, 7, "old ∪ new");
    assert.equal(stalled.converged, false);

    // POSTs during the transition: 400 before 409.
    const same = await post(c, 4);
    assert.equal(same.status, 202, same.text);
    assert.deepEqual(same.json, { epoch: started.json.epoch, from: 7, to: 4, phase: "joining" });
    const other = await post(c, 5);
    assert.equal(other.status, 409, other.text);
    assert.match(other.json.error, /in progress/);
    for (const bad of [0, 2, 1025, 4.5, "4", null]) {
      const r = await post(c, bad);
      assert.equal(r.status, 400, `${JSON.stringify(bad)}: ${r.text}`);
      assert.equal(typeof r.json.error, "string");
    }
    const notJson = await c.req("/v1/admin/cluster", { method: "POST", body: "size=4" });
    assert.equal(notJson.status, 400);
    assert.equal((await c.req("/v1/admin/cluster")).status, 405);

    // Reads go on (old replicas serve in joining).
    for (let i = 0; i < 10; i++) assert.equal((await c.req(kvPath(`absent-${i}`))).status, 404);

    // Every node restarts from its storage mid-phase: the transition is still there.
    await c.dispose({ keep: true });
    d = await startCluster({ vars, persistDir: c.dir });
    const resumed = await status(d);
    assert.equal(resumed.transition?.phase, "joining");
    assert.ok(resumed.transition.waiting_for.includes("6"), JSON.stringify(resumed.transition));

    // Healed, but node 6 holds at switching (it takes no ring of that phase or later): the
    // transition reaches switching (the new replicas serve) and waits for node 6 there; every
    // node restarts again and it is still there. Then the same in leaving.
    let cur = d;
    for (const [phase, number] of [["switching", 2], ["leaving", 3]]) {
      const hold = await cur.req("/v1/admin/faults", { method: "POST", body: JSON.stringify({ ring_phase_held: { 6: number } }) });
      assert.equal(hold.status, 200, hold.text);
      const at = await waitFor(`${phase}, waiting for node 6`, async () => {
        const s = await status(cur);
        return s.transition?.phase === phase && s.transition.waiting_for.join() === "6" ? s : undefined;
      }, { timeoutMs: 60_000 });
      assert.equal(at.size, 4, "from switching on the new replicas serve");
      assert.equal(at.nodes.length, 7);
      await cur.dispose({ keep: true });
      cur = await startCluster({ vars, persistDir: c.dir });
      d = cur;
      const again = await status(cur);
      assert.equal(again.transition?.phase, phase);
      assert.deepEqual(again.transition.waiting_for, ["6"]);
      assert.equal(again.epoch, at.epoch);
    }
    // Healed for good: the resize ends.
    const heal = await cur.req("/v1/admin/faults", { method: "POST", body: JSON.stringify({}) });
    assert.equal(heal.status, 200, heal.text);
    const done = await resized(cur, 4, 120_000);
    assert.equal(done.epoch, started.json.epoch + 3);
    assert.equal(done.nodes.length, 4);
  } finally {
    if (d !== undefined) await d.dispose();
    else await c.dispose();
  }
});

test("a changed CLUSTER_SIZE resizes the cluster once, never undoing an admin resize", { timeout: 240_000 }, async () => {
  const vars = { CLUSTER_SIZE: "4", SHARDS: "256" };
  let c = await startCluster({ vars });
  try {
    assert.equal((await status(c)).size, 4);
    // Deployed again with CLUSTER_SIZE=6: RingControl applies it once it knows what the
    // nodes store, from its next step on.
    await c.dispose({ keep: true });
    c = await startCluster({ vars: { ...vars, CLUSTER_SIZE: "6" }, persistDir: c.dir });
    const grown = await resized(c, 6, 120_000);
    assert.equal(grown.nodes.length, 6);
    // An admin resize to 5: the unchanged variable (6) does not undo it.
    assert.equal((await post(c, 5)).status, 202);
    await resized(c, 5, 120_000);
    for (let i = 0; i < 10; i++) assert.equal((await c.req(kvPath(`kept-${i}`), { method: "PUT", body: `k${i}` })).status, 200);
    // Restarted with the same variable: nothing happens (the value applied is 6).
    await c.dispose({ keep: true });
    c = await startCluster({ vars: { ...vars, CLUSTER_SIZE: "6" }, persistDir: c.dir });
    const s0 = await status(c);
    for (let i = 0; i < 6; i++) {
      // Reports come in (each a control step): still size 5, no transition.
      await new Promise((r) => setTimeout(r, 500));
      const s = await status(c);
      assert.equal(s.size, 5);
      assert.equal(s.transition, null);
      assert.equal(s.epoch, s0.epoch);
    }
    // CLUSTER_SIZE=3 with keys stored: applied, the keys move.
    await c.dispose({ keep: true });
    c = await startCluster({ vars: { ...vars, CLUSTER_SIZE: "3" }, persistDir: c.dir });
    const shrunk = await resized(c, 3, 120_000);
    assert.equal(shrunk.epoch, s0.epoch + 4);
    for (let i = 0; i < 10; i++) assert.equal((await c.req(kvPath(`kept-${i}`))).text, `k${i}`);
  } finally {
    await c.dispose();
  }
});

test("a node of the previous release holds a resize back (409 with the reason) until it reports this release's version", { timeout: 120_000 }, async () => {
  const c = await startCluster({ vars: { CLUSTER_SIZE: "4", REPLICAS: "3", SHARDS: "256" } });
  try {
    assert.equal((await c.req(kvPath("before"), { method: "PUT", body: "v" })).status, 200);
    const ns = await c.mf.getDurableObjectNamespace("CONTROL");
    const control = ns.get(ns.idFromName("control"));
    // Node 3's report as a node of the release before would send it (RingControl judges the
    // version of each node's last report; the number is above any the real node 3 sent).
    const report = async (version, number) => {
      const r = await control.fetch("https://control/control/report", {
        method: "POST",
        body: encode("NodeReport", { version, from: 3, number, speaks: version, full: true }),
      });
      assert.equal(r.status, 200, await r.text());
    };
    const current = PROTOCOL_VERSION;
    await report(current - 1, 1n << 52n);
    const refused = await post(c, 5);
    assert.equal(refused.status, 409, refused.text);
    assert.match(refused.json.error, /older release/);
    const s = await status(c);
    assert.equal(s.transition, null);
    assert.equal(s.size, 4);
    // Still 400 before 409, and 200 for the size it has.
    assert.equal((await post(c, 0)).status, 400);
    assert.equal((await post(c, 4)).status, 200);
    // Node 3 upgraded: the same POST starts the resize, which ends.
    await report(current, (1n << 52n) + 1n);
    const started = await post(c, 5);
    assert.equal(started.status, 202, started.text);
    await resized(c, 5);
    assert.equal((await c.req(kvPath("after-upgrade"), { method: "PUT", body: "v" })).status, 200);
  } finally {
    await c.dispose();
  }
});
