// A hostile or broken peer against the ring (SPEC: Resizing, adoption of newer rings), in
// workerd over HTTP: a message claiming an epoch RingControl never wrote, a forged ring
// pushed to /internal/ring, malformed and old-version catch-up probes. None of it changes
// a node's ring (it takes RingControl's only), makes a node stop serving, or answers a
// client with a 5xx; the cluster converges afterwards.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor } from "./helpers.mjs";
import { encode } from "../../worker/pb.ts";

let c;
let ns;

before(async () => {
  c = await startCluster({ vars: { CLUSTER_SIZE: "4", SHARDS: "256", CACHE_TTL_SECONDS: "0" } });
  ns = await c.mf.getDurableObjectNamespace("NODE");
});

after(async () => {
  await c.dispose();
});

async function toNode(node, path, init = {}) {
  const stub = ns.get(ns.idFromName(String(node)));
  const r = await stub.fetch(`https://node${path}`, { method: "POST", ...init, headers: { "X-Ring-Node-Id": String(node), ...(init.headers ?? {}) } });
  const text = await r.text();
  return { status: r.status, text, ring: r.headers.get("X-Ring-Ring"), reason: r.headers.get("X-Ring-Refused-Reason") };
}

const ringOf = async (node) => JSON.parse((await toNode(node, "/internal/ring", { method: "GET" })).text).ring;

test("forged epochs and rings change no node's ring; bad probes are refused; every node serves on", { timeout: 180_000 }, async () => {
  for (let i = 0; i < 12; i++) assert.equal((await c.req(kvPath(`hr-${i}`), { method: "PUT", body: `v${i}` })).status, 200);
  const before = await ringOf(0);
  const forged = `999999999999999.1.0.0.0.1`;
  // A peer message claiming an epoch far ahead: answered, the node's ring unchanged (it
  // asked RingControl, which never wrote that epoch); asked again, it does not ask again.
  const push = encode("Push", { version: 4, from: 1, speaks: 4 });
  for (let i = 0; i < 3; i++) {
    const r = await toNode(0, "/internal/push", { body: push, headers: { "X-Ring-Ring": forged } });
    assert.ok(r.status < 500, `${r.status} ${r.text}`);
    assert.equal(Number(r.ring.split(".")[0]), before.epoch);
  }
  assert.deepEqual(await ringOf(0), before);
  // A forged ring pushed as if by RingControl: the node takes RingControl's ring instead.
  const fake = { ring: { epoch: 123456, size: 1, from: 0, to: 0, phase: 0, nodeIdsMax: 1 }, cluster_id: "00".repeat(16), secret: null };
  const pushed = await toNode(1, "/internal/ring", { body: JSON.stringify(fake), headers: { "Content-Type": "application/json" } });
  assert.equal(pushed.status, 200, pushed.text);
  assert.equal(JSON.parse(pushed.text).epoch, before.epoch);
  assert.deepEqual(await ringOf(1), before);
  for (const bad of ["not json", JSON.stringify({ ring: { epoch: -1 } }), JSON.stringify({ ring: { ...fake.ring, size: 5000 }, cluster_id: "00" })]) {
    const r = await toNode(1, "/internal/ring", { body: bad });
    assert.equal(r.status, 400, `${bad}: ${r.status} ${r.text}`);
  }
  // Catch-up probes: more shards than allowed, shards out of order, an unknown version.
  const entry = (shard) => ({ shard, digest: 0n });
  const probes = [
    ["malformed", encode("CatchupRequest", { version: 4, from: 1, probe: Array.from({ length: 513 }, (_, i) => entry(i % 256)), speaks: 4 })],
    ["malformed", encode("CatchupRequest", { version: 4, from: 1, probe: [entry(5), entry(3)], speaks: 4 })],
    ["protocol_version", encode("CatchupRequest", { version: 99, from: 1, probe: [entry(1)], speaks: 99 })],
  ];
  for (const [reason, body] of probes) {
    const r = await toNode(2, "/internal/catchup", { body });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.reason, reason);
  }
  // A well-formed probe is answered.
  const ok = await toNode(2, "/internal/catchup", { body: encode("CatchupRequest", { version: 4, from: 1, probe: [entry(0), entry(7)], speaks: 4 }) });
  assert.equal(ok.status, 200, ok.text);
  // Every node still serves, with the writes acknowledged before.
  for (let i = 0; i < 12; i++) {
    const r = await c.req(kvPath(`hr-${i}`));
    assert.equal(r.status, 200);
    assert.equal(r.text, `v${i}`);
  }
  for (let n = 0; n < 4; n++) assert.deepEqual(await ringOf(n), before);
  await waitFor("converged", async () => (await c.req("/v1/cluster")).json?.converged === true, { timeoutMs: 60_000 });
});
