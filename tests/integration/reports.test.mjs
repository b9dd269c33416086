// /v1/cluster from the nodes' reports to RingControl (SPEC: Storage, node reports; release
// 2, `converged`): false right after a write, true once the replicas agree; true again
// after RingControl was evicted and the cluster sat idle, and after a runtime restart on
// the same state; key counts follow puts and deletes. RingControl's report route refuses
// forged, oversized and old-version reports (4xx, nothing changes), and neither its routes
// nor the nodes' are reachable from a client.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startCluster, kvPath, waitFor, sleep } from "./helpers.mjs";
import { encode } from "../../worker/pb.ts";

const dir = mkdtempSync(join(tmpdir(), "ringkv-reports-"));
const vars = { CACHE_TTL_SECONDS: "0" };
let c;
before(async () => {
  c = await startCluster({ vars, persistDir: dir });
});
after(async () => {
  await c?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const status = async () => (await c.req("/v1/cluster")).json;
const converged = async () => {
  const s = await status();
  return s.converged ? s : undefined;
};

async function control(path, init = {}) {
  const ns = await c.mf.getDurableObjectNamespace("CONTROL");
  const r = await ns.get(ns.idFromName("control")).fetch(`https://control${path}`, init);
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, json, text };
}

test("converged is false right after a write and true once the replicas agree", async () => {
  await waitFor("converged at start", converged, { timeoutMs: 30_000 });
  for (let i = 0; i < 5; i++) {
    const w = await c.req(kvPath(`reports/${i}`), { method: "PUT", body: `v${i}` });
    assert.equal(w.status, 200);
    const s = await status();
    assert.equal(s.converged, false, `right after write ${i}`);
    const done = await waitFor(`converged after write ${i}`, converged, { timeoutMs: 30_000, everyMs: 50 });
    assert.equal(done.nodes.reduce((n, x) => n + x.keys, 0), (i + 1) * 3, "each live key on R = 3 nodes");
  }
  // Every node of the ring is listed, in the fixed shape.
  const s = await status();
  assert.deepEqual(Object.keys(s), ["size", "replicas", "epoch", "transition", "nodes", "converged"]);
  assert.deepEqual(s.nodes.map((n) => n.id), ["0", "1", "2", "3", "4", "5", "6", "7"]);
  for (const n of s.nodes) {
    assert.deepEqual(Object.keys(n), ["id", "keys", "digest", "gossip", "refused"]);
    assert.deepEqual(Object.keys(n.gossip), ["rounds", "messages_sent", "bytes_sent", "entries_sent", "entries_applied"]);
  }
  // A delete: the key count drops on every replica (the core keeps it per row write).
  assert.equal((await c.req(kvPath("reports/0"), { method: "DELETE" })).status, 200);
  assert.equal((await status()).converged, false, "right after a delete");
  const later = await waitFor("converged after the delete", converged, { timeoutMs: 30_000, everyMs: 50 });
  assert.equal(later.nodes.reduce((n, x) => n + x.keys, 0), 4 * 3);
  // A node's counters are the ones it reported (bytes of the pushes included).
  assert.ok(later.nodes.some((n) => n.gossip.bytes_sent > 0 && n.gossip.entries_sent > 0));
});

test("RingControl's report route refuses forged, oversized and old-version reports; nothing changes", async () => {
  const s0 = await waitFor("converged", converged, { timeoutMs: 30_000 });
  const shape = (s) => JSON.stringify(s.nodes.map((n) => [n.id, n.keys, n.digest]));
  const report = (fields) => encode("NodeReport", { version: 2, from: 3, number: 1n, keys: 999n, shards: [{ shard: 5, digest: 12345n }], ...fields });
  const cases = [
    ["an old protocol version", report({ version: 1, number: 1n << 40n }), 400],
    ["an unknown protocol version", report({ version: 99, number: 1n << 40n }), 400],
    ["a node outside the ring", report({ from: 8, number: 1n << 40n }), 400],
    ["a shard out of range", report({ number: 1n << 40n, shards: [{ shard: 16384, digest: 1n }] }), 400],
    ["shards out of order", report({ number: 1n << 40n, shards: [{ shard: 9, digest: 1n }, { shard: 4, digest: 1n }] }), 400],
    ["an older report than the one kept", report({ number: 1n }), 409],
    ["garbage", new Uint8Array([0xff, 0xff, 0xff, 0x01]), 400],
    ["an oversized body", new Uint8Array(4 * 1024 * 1024 + 1), 413],
  ];
  for (const [what, body, want] of cases) {
    const r = await control("/control/report", { method: "POST", body });
    assert.equal(r.status, want, `${what}: ${r.status} ${r.text}`);
  }
  const s1 = await status();
  assert.equal(shape(s1), shape(s0), "no report changed anything");
  assert.equal(s1.converged, true);
  // Clients reach neither RingControl's routes nor the nodes' (the Worker routes /v1 only).
  for (const [path, method] of [["/control/report", "POST"], ["/control/cluster", "GET"], ["/control/ring", "POST"], ["/internal/status", "GET"], ["/internal/push", "POST"]]) {
    const r = await c.req(path, { method, body: method === "POST" ? "x" : undefined });
    assert.equal(r.status, 404, `${method} ${path}`);
  }
});

test("converged after RingControl was evicted and the cluster sat idle, and after a restart", async () => {
  for (let i = 0; i < 20; i++) assert.equal((await c.req(kvPath(`idle/${i}`), { method: "PUT", body: "x" })).status, 200);
  const before = await waitFor("converged", converged, { timeoutMs: 30_000 });
  // Idle for longer than the local runtime keeps an idle object (about 10 s): RingControl
  // is evicted, and nodes have nothing to report. Its stored reports still say converged.
  await sleep(12_000);
  const idle = await status();
  assert.equal(idle.converged, true, "after sitting idle");
  assert.deepEqual(idle.nodes.map((n) => n.keys), before.nodes.map((n) => n.keys));
  // A runtime restart on the same state: nothing in memory anywhere, and still converged
  // at once (the reports are persisted; no node has anything to send).
  await c.dispose();
  c = await startCluster({ vars, persistDir: dir });
  const restarted = await status();
  assert.equal(restarted.converged, true, "right after a restart");
  assert.deepEqual(restarted.nodes.map((n) => n.keys), before.nodes.map((n) => n.keys));
  // And the first write after it is seen at once.
  assert.equal((await c.req(kvPath("idle/after"), { method: "PUT", body: "y" })).status, 200);
  assert.equal((await status()).converged, false, "right after a write following the restart");
  const done = await waitFor("converged after the write", converged, { timeoutMs: 30_000 });
  assert.equal(done.nodes.reduce((n, x) => n + x.keys, 0), before.nodes.reduce((n, x) => n + x.keys, 0) + 3);
});
