// Node-to-node messages from a misbehaving peer: unknown protocol versions are refused
// and reported in /v1/cluster; malformed or random bodies on every internal route get
// 4xx, never 5xx, and change nothing. (Internal routes are reachable only through the
// NODE binding: here through Miniflare's handle on the namespace.)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor, rng } from "./helpers.mjs";
import { encode } from "../../worker/pb.ts";

let c;
let ns;
before(async () => {
  c = await startCluster({ vars: { CACHE_TTL_SECONDS: "0" } });
  ns = await c.mf.getDurableObjectNamespace("NODE");
});
after(async () => {
  await c?.dispose();
});

async function toNode(node, path, body) {
  const stub = ns.get(ns.idFromName(String(node)));
  const r = await stub.fetch(`https://node${path}`, { method: "POST", body, headers: { "X-Ring-Node-Id": String(node) } });
  const bytes = new Uint8Array(await r.arrayBuffer());
  return { status: r.status, bytes };
}

test("a Push with an unknown protocol version is refused (400) and counted in /v1/cluster", async () => {
  const message = encode("Push", { version: 99, from: 1, entries: [{ key: new TextEncoder().encode("pv"), register: { siblings: [] } }] });
  const r = await toNode(0, "/internal/push", message);
  assert.equal(r.status, 400);
  const d = await toNode(0, "/internal/digest", encode("DigestRequest", { version: 99, from: 1, root: 5n }));
  assert.equal(d.status, 400);
  // Counted by the node's core and reported to RingControl (exact once converged).
  const status = await waitFor("converged", async () => {
    const s = (await c.req("/v1/cluster")).json;
    return s.converged ? s : undefined;
  }, { timeoutMs: 30_000, everyMs: 100 });
  assert.ok(status.nodes[0].refused.protocol_version >= 2, JSON.stringify(status.nodes[0].refused));
});

test("random and mutated peer messages never cause a 5xx or change state", async () => {
  const keys = Array.from({ length: 6 }, (_, i) => `peer/${i}`);
  for (const k of keys) assert.equal((await c.req(kvPath(k), { method: "PUT", body: k })).status, 200);
  await waitFor("converged", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 30_000 });
  const digests = JSON.stringify((await c.req("/v1/cluster")).json.nodes.map((n) => n.digest));
  const rand = rng(99);
  const valid = [
    encode("Push", { version: 1, from: 2, entries: [] }),
    encode("DigestRequest", { version: 1, from: 2, root: 12345n }),
    encode("GcQuery", { version: 1, from: 2, keys: [{ key: new TextEncoder().encode("peer/0"), digest: 1n }] }),
  ];
  for (let i = 0; i < 300; i++) {
    let body;
    if (i % 3 === 0) {
      body = new Uint8Array(rand(200));
      for (let j = 0; j < body.length; j++) body[j] = rand(256);
    } else {
      body = valid[rand(valid.length)].slice();
      for (let f = 0, n = 1 + rand(4); f < n && body.length > 0; f++) body[rand(body.length)] = rand(256);
    }
    const path = ["/internal/push", "/internal/digest", "/internal/gc"][i % 3];
    const r = await toNode(i % 8, path, body);
    assert.ok(r.status < 500, `${path} with ${Buffer.from(body).toString("hex")}: ${r.status} ${new TextDecoder().decode(r.bytes)}`);
  }
  // Bodies that are not what a route expects at all.
  for (const path of ["/internal/list", "/internal/faults", "/internal/write", "/internal/nope"]) {
    const r = await toNode(1, path, "{not json");
    assert.ok(r.status >= 400 && r.status < 500, `${path}: ${r.status}`);
  }
  assert.equal(JSON.stringify((await c.req("/v1/cluster")).json.nodes.map((n) => n.digest)), digests, "state unchanged");
  for (const k of keys) assert.equal((await c.req(kvPath(k))).text, k);
});
