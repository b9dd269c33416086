// Hostile clients and peers, in workerd over HTTP and through the NODE binding: forged,
// replayed and foreign context tokens, tokens claiming what no node issued, a peer's
// far-future and near-2^64 HLCs, unknown node ids, contradictory states, old and unknown
// protocol versions. Each is refused (4xx, counted) or harmless: no acknowledged write is
// lost, no 5xx, gossip carries on, and the cluster converges afterwards.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startCluster, kvPath, waitFor, root, dumpEntry, PROTOCOL_VERSION } from "./helpers.mjs";
import { encode, decode } from "../../worker/pb.ts";
import { Core, Op } from "../../worker/core.ts";
import { signToken, base64url, unbase64url } from "../../worker/tokens.ts";

let c;
let ns;
let core;
let clusterId;
const responses = [];

before(async () => {
  // TOKEN_SECRET unset: the cluster generates its own secret at first start.
  c = await startCluster({ vars: { TOKEN_SECRET: undefined, CACHE_TTL_SECONDS: "0", FAULTS: "1" } });
  ns = await c.mf.getDurableObjectNamespace("NODE");
  core = new Core(new WebAssembly.Module(readFileSync(join(root, "build/ringkv.wasm"))));
  core.call(Op.Init, {
    config: { clusterSize: 8, replicas: 3, shards: 16384, maxClockSkewMs: 60000n, tombstoneGraceMs: 3600000n, maxSiblings: 32, fanout: 8 },
    node: { node: 0 },
  });
  const ring = await toNode(0, "/internal/ring", undefined, "GET");
  clusterId = Buffer.from(JSON.parse(new TextDecoder().decode(ring.bytes)).cluster_id, "hex");
  assert.equal(clusterId.length, 16);
});
after(async () => {
  // Nothing any of these tests sent produced a 5xx.
  const fivexx = responses.filter((r) => r.status >= 500);
  await c?.dispose();
  assert.deepEqual(fivexx, []);
});

const utf8 = (s) => new TextEncoder().encode(s);
async function req(path, init) {
  const r = await c.req(path, init);
  responses.push({ path, status: r.status });
  return r;
}
const replicasOf = async (key) => (await req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas.map(Number);
const put = (key, body, query = "", headers = {}) => req(kvPath(key, query), { method: "PUT", body, headers });
const converged = async () => (await req("/v1/cluster")).json.converged;

async function toNode(node, path, body, method = "POST") {
  const stub = ns.get(ns.idFromName(String(node)));
  const r = await stub.fetch(`https://node${path}`, { method, body, headers: { "X-Ring-Node-Id": String(node) } });
  const bytes = new Uint8Array(await r.arrayBuffer());
  responses.push({ path: `node ${node} ${path}`, status: r.status });
  return { status: r.status, bytes };
}

/** The core Token payload inside a context token (release 2: version byte, payload, MAC). */
function payloadOf(context) {
  const raw = unbase64url(context);
  return raw.slice(1, raw.length - 16);
}

/** A canonical Token payload: the vv entries given (sorted by node), no explicit dots. */
function tokenPayload(key, maxHlc, vv) {
  const keyHash = core.call(Op.Place, { keys: [utf8(key)] }).placements[0].keyHash;
  const sorted = [...vv].sort((a, b) => a.node - b.node).map((d) => ({ node: d.node, counter: BigInt(d.counter) }));
  return encode("Token", { keyHash, maxHlc: BigInt(maxHlc), context: sorted.length ? { vv: sorted, dots: [] } : undefined });
}

/** What a replica holds, for comparing before and after. */
async function stateAt(key, node) {
  const r = await req(kvPath(key, `?siblings=1&node=${node}`));
  return r.status === 404 ? null : r.json.siblings.map((s) => [s.value, s.hlc, s.node, s.deleted]);
}


function stringLiterals() {
  const out = new Set(["ringkv-dev-secret: set TOKEN_SECRET in production", "integration-test-secret"]);
  for (const dir of ["worker", "tests/integration", "scripts", "bench"]) {
    for (const name of readdirSync(join(root, dir))) {
      if (!/\.(ts|mjs|js)$/.test(name)) continue;
      const text = readFileSync(join(root, dir, name), "utf8");
      for (const m of text.matchAll(/"([^"\\\n]{1,200})"/g)) out.add(m[1]);
    }
  }
  return [...out];
}

test("tokens signed with any secret found in the source, in either release's format, are refused and change nothing", async () => {
  const key = "hostile/forged";
  assert.equal((await put(key, "honest")).status, 200);
  const read = await req(kvPath(key));
  const payload = payloadOf(read.headers.get("x-ring-context"));
  const reps = await replicasOf(key);
  // Every replica holds the write first (else gossip, not a forged token, changes them).
  const before = await waitFor("every replica holds the write", async () => {
    const states = await Promise.all(reps.map((n) => stateAt(key, n)));
    return states.every((st) => st !== null && st.length === 1) ? states : undefined;
  }, { timeoutMs: 60_000, everyMs: 50 });
  const secrets = stringLiterals();
  assert.ok(secrets.length > 100);
  let tried = 0;
  for (const secret of secrets.filter((x) => x !== "").slice(0, 400)) {
    const forged = [
      await signToken(secret, clusterId, utf8(key), payload), // release 2, the real cluster id
      await signToken(secret, new Uint8Array(16), utf8(key), payload), // release 2, a guessed id
    ];
    // Release 1's format: payload || HMAC(secret, payload)[0..16].
    const k = await crypto.subtle.importKey("raw", utf8(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", k, payload)).slice(0, 16);
    forged.push(base64url(new Uint8Array([...payload, ...mac])));
    for (const token of forged) {
      const w = await put(key, "evil", "", { "X-Ring-Context": token });
      assert.equal(w.status, 400, `secret ${JSON.stringify(secret)}`);
      tried++;
    }
  }
  assert.ok(tried >= 300);
  // Release-1 tokens say so.
  const k = await crypto.subtle.importKey("raw", utf8("ringkv-dev-secret: set TOKEN_SECRET in production"), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", k, payload)).slice(0, 16);
  const old = await put(key, "evil", "", { "X-Ring-Context": base64url(new Uint8Array([...payload, ...mac])) });
  assert.equal(old.status, 400);
  assert.equal(old.json.error, "context from an older release");
  assert.deepEqual(await Promise.all(reps.map((n) => stateAt(key, n))), before);
});

test("a token replayed on another key, or taken from another cluster with the same TOKEN_SECRET, is refused", async () => {
  const a = await put("hostile/replay-a", "a");
  assert.equal(a.status, 200);
  assert.equal((await put("hostile/replay-b", "b")).status, 200);
  for (const method of ["PUT", "DELETE"]) {
    const r = await req(kvPath("hostile/replay-b"), { method, body: method === "PUT" ? "x" : undefined, headers: { "X-Ring-Context": a.json.context } });
    assert.equal(r.status, 400);
    assert.equal(r.json.error, "invalid context token");
  }
  assert.equal((await req(kvPath("hostile/replay-b"))).text, "b");

  const shared = { TOKEN_SECRET: "the-same-secret-in-two-clusters", CACHE_TTL_SECONDS: "0" };
  const one = await startCluster({ vars: shared });
  const two = await startCluster({ vars: shared });
  try {
    const w1 = await one.req(kvPath("same/key"), { method: "PUT", body: "one" });
    const w2 = await two.req(kvPath("same/key"), { method: "PUT", body: "two" });
    assert.equal(w1.status, 200);
    assert.equal(w2.status, 200);
    // Each cluster accepts its own token...
    assert.equal((await one.req(kvPath("same/key"), { method: "PUT", body: "one again", headers: { "X-Ring-Context": w1.json.context } })).status, 200);
    // ...and refuses the other's, though the secret and the key are the same.
    const cross = await two.req(kvPath("same/key"), { method: "PUT", body: "from one", headers: { "X-Ring-Context": w1.json.context } });
    assert.equal(cross.status, 400);
    assert.equal((await two.req(kvPath("same/key"))).text, "two");
  } finally {
    await one.dispose();
    await two.dispose();
  }
});

test("validly signed tokens claiming what no node issued are refused: own future dots, unknown node ids, far-future HLCs", async () => {
  const key = "hostile/impossible";
  const [x] = await replicasOf(key);
  const w = await put(key, "first", `?node=${x}`);
  assert.equal(w.status, 200);
  const entry = await dumpEntry(req, x, key);
  const counter = Number(entry.siblings.find((s) => s.node === x).counter);
  const hlc = BigInt(w.json.hlc);
  // The test holds the secret as an insider would (a node hands it to the Worker).
  const ring = JSON.parse(new TextDecoder().decode((await toNode(0, "/internal/ring", undefined, "GET")).bytes));
  const secret = new Uint8Array(Buffer.from(ring.secret, "hex"));
  const signed = (payload) => signToken(secret, clusterId, utf8(key), payload);
  // A genuine one passes (the harness signs correctly).
  const okToken = await signed(tokenPayload(key, hlc, [{ node: x, counter }]));
  const ok = await put(key, "second", `?node=${x}`, { "X-Ring-Context": okToken });
  assert.equal(ok.status, 200, ok.text);
  const before = await stateAt(key, x);
  const now = BigInt(Date.now());
  const claims = [
    ["its own dot above its counter", tokenPayload(key, hlc, [{ node: x, counter: counter + 5 }])],
    ["its own dot far above", tokenPayload(key, hlc, [{ node: x, counter: 2 ** 40 }])],
    ["a node id the cluster never had", tokenPayload(key, hlc, [{ node: 8, counter: 1 }])],
    ["node id 1023", tokenPayload(key, hlc, [{ node: 1023, counter: 1 }])],
    ["an HLC beyond the skew bound", tokenPayload(key, (now + 120_000n) << 16n, [{ node: x, counter }])],
    ["an HLC near 2^64", tokenPayload(key, (1n << 64n) - 2n, [{ node: x, counter }])],
  ];
  for (const [what, payload] of claims) {
    const r = await put(key, "evil", `?node=${x}`, { "X-Ring-Context": await signed(payload) });
    assert.equal(r.status, 400, what);
    assert.match(r.json.error, /context token/, what);
  }
  assert.deepEqual(await stateAt(key, x), before);
});

/** A Push from `from` holding one register: one live sibling per dot given. */
function pushOf({ version = 2, from, key, siblings, vv = [], dots = [] }) {
  const sibs = siblings.map((s) => {
    const value = utf8(s.value);
    return {
      dot: { node: s.node, counter: BigInt(s.counter) },
      hlc: BigInt(s.hlc),
      contentType: utf8("text/plain"),
      valueHash: core.call(Op.Place, { keys: [value] }).placements[0].keyHash,
      value,
    };
  });
  const covered = [...vv, ...siblings.map((s) => ({ node: s.node, counter: s.counter }))];
  const byNode = new Map();
  for (const d of covered) byNode.set(d.node, Math.max(byNode.get(d.node) ?? 0, Number(d.counter)));
  // A vector covering every dot named (each node's entry up to its highest).
  const context = { vv: [...byNode].sort((a, b) => a[0] - b[0]).map(([node, counter]) => ({ node, counter: BigInt(counter) })), dots };
  return encode("Push", { version, from, entries: [{ key: utf8(key), register: { siblings: sibs, context } }], speaks: version });
}

// /v1/cluster is served from the nodes' reports: counts are exact once converged (every
// node has reported since its last change).
const refusedAt = async (node) =>
  (await waitFor("converged", async () => {
    const s = (await req("/v1/cluster")).json;
    return s.converged ? s : undefined;
  }, { timeoutMs: 60_000, everyMs: 100 })).nodes[node].refused;

test("a peer's far-future and near-2^64 HLCs never reach a node's state or clock; gossip carries on", async () => {
  const key = "hostile/future";
  const [x, y, z] = await replicasOf(key);
  const dayAhead = BigInt(Date.now() + 86_400_000) << 16n;
  const before = await refusedAt(x);
  const answer = await toNode(x, "/internal/push", pushOf({ from: y, key, siblings: [{ node: y, counter: 1_000_000, hlc: dayAhead, value: "from tomorrow" }] }));
  assert.equal(answer.status, 200);
  // The answer tells the sender the entry waits (deferred, to be sent again).
  const told = decode("Push", answer.bytes);
  assert.deepEqual(told.deferred.map((k) => new TextDecoder().decode(k)), [key]);
  const near = await toNode(x, "/internal/push", pushOf({ from: y, key, siblings: [{ node: y, counter: 1_000_001, hlc: (1n << 64n) - 5n, value: "the end of time" }] }));
  assert.equal(near.status, 200);
  const after = await refusedAt(x);
  assert.equal((after.hlc_ahead ?? 0) - (before.hlc_ahead ?? 0), 1);
  assert.equal((after.hlc_out_of_range ?? 0) - (before.hlc_out_of_range ?? 0), 1);
  assert.equal((await req(kvPath(key, `?node=${x}`))).status, 404, "nothing stored");
  // A blind write at x afterwards: its HLC (so x's clock) stays within now + skew.
  const w = await put(key, "honest", `?node=${x}`);
  assert.equal(w.status, 200);
  assert.ok(BigInt(w.json.hlc) >> 16n <= BigInt(Date.now() + 60_000), `hlc ${w.json.hlc}`);
  // Gossip still carries x's writes to its replicas.
  for (const n of [y, z]) {
    await waitFor(`replica ${n} has the honest write`, async () => (await req(kvPath(key, `?node=${n}`))).text === "honest", { timeoutMs: 20_000 });
  }
});

test("a peer's unknown node ids, claims on the receiver's future dots, contradictory states and protocol versions", async () => {
  const key = "hostile/peer";
  const [x, y, z] = await replicasOf(key);
  const now = BigInt(Date.now()) << 16n;
  const before = await refusedAt(x);
  // A dot of a node id the cluster never had.
  assert.equal((await toNode(x, "/internal/push", pushOf({ from: y, key, siblings: [{ node: 9, counter: 1, hlc: now, value: "ghost" }] }))).status, 200);
  // A claim on x's dots beyond any counter a node can have (2^52, exact in JS numbers).
  assert.equal((await toNode(x, "/internal/push", pushOf({ from: y, key, siblings: [{ node: y, counter: 7, hlc: now, value: "claim" }], vv: [{ node: x, counter: 2 ** 53 }] }))).status, 200);
  // A claim at exactly 2^52 (the most a counter may reach), far above x's counter: refused
  // too (one message may raise a counter by at most 2^32), so x can still write.
  assert.equal((await toNode(x, "/internal/push", pushOf({ from: y, key, siblings: [{ node: y, counter: 8, hlc: now, value: "claim" }], vv: [{ node: x, counter: 2 ** 52 }] }))).status, 200);
  let after = await refusedAt(x);
  assert.equal((after.unknown_node ?? 0) - (before.unknown_node ?? 0), 1);
  assert.equal((after.dot_out_of_range ?? 0) - (before.dot_out_of_range ?? 0), 1);
  assert.equal((after.future_dot ?? 0) - (before.future_dot ?? 0), 1);
  let other = "hostile/still-0";
  for (let i = 1; !(await replicasOf(other)).includes(x); i++) other = `hostile/still-${i}`;
  const still = await put(other, "x still writes", `?node=${x}`);
  assert.equal(still.status, 200, still.text);
  assert.equal((await req(kvPath(key, `?node=${x}`))).status, 404, "nothing stored");

  // A contradictory state: x holds its own version and has superseded y's; the peer
  // claims to hold y's version and to have superseded x's. Nothing would remain.
  assert.equal((await put(key, "from y", `?node=${y}`)).status, 200);
  await waitFor("x has y's write", async () => (await req(kvPath(key, `?node=${x}`))).text === "from y", { timeoutMs: 20_000 });
  assert.equal((await put(key, "from x", `?node=${x}`)).status, 200);
  const dx = await dumpEntry(req, x, key);
  const mine = dx.siblings.find((s) => s.node === x);
  const ys = dx.context.vv.find(([node]) => node === y);
  assert.ok(mine && ys);
  const contradictory = pushOf({ from: z, key, siblings: [{ node: y, counter: Number(ys[1]), hlc: now, value: "from y" }], vv: [{ node: x, counter: Number(mine.counter) }] });
  assert.equal((await toNode(x, "/internal/push", contradictory)).status, 200);
  after = await refusedAt(x);
  assert.equal((after.no_version ?? 0) - (before.no_version ?? 0), 1);
  assert.equal((await req(kvPath(key, `?node=${x}`))).text, "from x");

  // Version 1 (release 1) is read and answered in version 1; a future one is refused.
  const v1 = pushOf({ version: 1, from: y, key: "hostile/v1", siblings: [{ node: y, counter: 3, hlc: now, value: "old peer" }] });
  const [v1x] = await replicasOf("hostile/v1");
  assert.equal((await toNode(v1x, "/internal/push", v1)).status, 200);
  const v5 = pushOf({ version: PROTOCOL_VERSION + 1, from: y, key, siblings: [{ node: y, counter: 4, hlc: now, value: "new peer" }] });
  assert.equal((await toNode(x, "/internal/push", v5)).status, 400);
  after = await refusedAt(x);
  assert.ok((after.protocol_version ?? 0) > (before.protocol_version ?? 0));
  // And after all of it the acknowledged writes stand and the cluster converges.
  await waitFor("converged", converged, { timeoutMs: 60_000 });
  for (const n of [x, y, z]) assert.equal((await req(kvPath(key, `?node=${n}`))).text, "from x");
});

test("a claim on another replica's future dots is harmless once it has reached that replica", async () => {
  // A node cannot judge another node's counter, so a validly signed token claiming node
  // x's future dots is accepted at y. When it reaches x, x raises its counter past the
  // claim: x's later writes get dots nobody covers, and none is lost on merge.
  const key = "hostile/claim-other";
  const [x, y, z] = await replicasOf(key);
  const ring = JSON.parse(new TextDecoder().decode((await toNode(0, "/internal/ring", undefined, "GET")).bytes));
  const secret = new Uint8Array(Buffer.from(ring.secret, "hex"));
  const w = await put(key, "first", `?node=${y}`);
  assert.equal(w.status, 200);
  const claim = tokenPayload(key, BigInt(w.json.hlc), [{ node: x, counter: 50_000_000 }, { node: y, counter: Number((await dumpEntry(req, y, key)).siblings[0].counter) }]);
  const forged = await put(key, "claims x's future", `?node=${y}`, { "X-Ring-Context": await signToken(secret, clusterId, utf8(key), claim) });
  assert.equal(forged.status, 200);
  await waitFor("converged", converged, { timeoutMs: 60_000 });
  const later = await put(key, "x writes later", `?node=${x}`);
  assert.equal(later.status, 200);
  await waitFor("converged", converged, { timeoutMs: 60_000 });
  for (const n of [x, y, z]) assert.equal((await req(kvPath(key, `?node=${n}`))).text, "x writes later", `replica ${n}`);
  const dot = (await dumpEntry(req, x, key)).siblings.find((s) => s.node === x);
  assert.ok(Number(dot.counter) > 50_000_000);
});

test("secret rotation: TOKEN_SECRET='new old' signs with new and accepts both; then old tokens are refused", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ringkv-rotate-"));
  try {
    let r = await startCluster({ vars: { TOKEN_SECRET: "old-secret", CACHE_TTL_SECONDS: "0" }, persistDir: dir });
    const old = await r.req(kvPath("rot/k"), { method: "PUT", body: "v1" });
    assert.equal(old.status, 200);
    await r.dispose();
    r = await startCluster({ vars: { TOKEN_SECRET: "new-secret old-secret", CACHE_TTL_SECONDS: "0" }, persistDir: dir });
    const viaOld = await r.req(kvPath("rot/k"), { method: "PUT", body: "v2", headers: { "X-Ring-Context": old.json.context } });
    assert.equal(viaOld.status, 200, viaOld.text);
    await r.dispose();
    r = await startCluster({ vars: { TOKEN_SECRET: "new-secret", CACHE_TTL_SECONDS: "0" }, persistDir: dir });
    const refused = await r.req(kvPath("rot/k"), { method: "PUT", body: "v3", headers: { "X-Ring-Context": old.json.context } });
    assert.equal(refused.status, 400);
    const viaNew = await r.req(kvPath("rot/k"), { method: "PUT", body: "v3", headers: { "X-Ring-Context": viaOld.json.context } });
    assert.equal(viaNew.status, 200, viaNew.text);
    assert.equal((await r.req(kvPath("rot/k"))).text, "v3");
    await r.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the generated secret survives a restart; another cluster's generated secret differs", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ringkv-gen-"));
  let token;
  try {
    let r = await startCluster({ vars: { TOKEN_SECRET: undefined, CACHE_TTL_SECONDS: "0" }, persistDir: dir });
    const w = await r.req(kvPath("gen/k"), { method: "PUT", body: "v1" });
    assert.equal(w.status, 200);
    await r.dispose();
    r = await startCluster({ vars: { TOKEN_SECRET: undefined, CACHE_TTL_SECONDS: "0" }, persistDir: dir });
    assert.equal((await r.req(kvPath("gen/k"), { method: "PUT", body: "v2", headers: { "X-Ring-Context": w.json.context } })).status, 200);
    token = w.json.context;
    await r.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // The shared cluster of this file generated its own secret and id: the token is foreign.
  assert.equal((await put("gen/k", "here")).status, 200);
  const other = await put("gen/k", "x", "", { "X-Ring-Context": token });
  assert.equal(other.status, 400);
  assert.equal((await req(kvPath("gen/k"))).text, "here");
});

test("after every hostile case above: the cluster converges and the honest writes stand", async () => {
  await waitFor("converged", converged, { timeoutMs: 60_000 });
  for (const [key, text] of [["hostile/forged", "honest"], ["hostile/replay-b", "b"], ["hostile/future", "honest"], ["hostile/peer", "from x"], ["gen/k", "here"]]) {
    for (const n of await replicasOf(key)) assert.equal((await req(kvPath(key, `?node=${n}`))).text, text, `${key} at ${n}`);
  }
});
