// The node step (RINGKV_OP_STEP, executor.ts) under hostile peers and clients, in workerd:
// malformed, oversized and foreign-version peer messages; GcQuery key limits; a Push whose
// merge needs several load ranges (with deferred keys in the first and the last range); a
// peer a day ahead by push and by repair request; a crash after a multi-range merge; the
// largest key and value and forged tokens through the step's write path. Each is refused
// (4xx) or applied; no 500 anywhere; gossip carries on afterwards.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startCluster, kvPath, waitFor, root, dumpEntry, PROTOCOL_VERSION } from "./helpers.mjs";
import { encode, decode } from "../../worker/pb.ts";
import { Core, Op } from "../../worker/core.ts";

const MiB = 1024 * 1024;
const DAY_MS = 86_400_000;
let c;
let ns;
let core;
const responses = [];

before(async () => {
  c = await startCluster({ vars: { CACHE_TTL_SECONDS: "0", FAULTS: "1" } });
  ns = await c.mf.getDurableObjectNamespace("NODE");
  core = new Core(new WebAssembly.Module(readFileSync(join(root, "build/ringkv.wasm"))));
  core.call(Op.Init, {
    config: { clusterSize: 8, replicas: 3, shards: 16384, maxClockSkewMs: 60000n, tombstoneGraceMs: 3600000n, maxSiblings: 32, fanout: 8 },
    node: { node: 0 },
  });
});
after(async () => {
  await c?.dispose();
  // A 503 is a node's own "try again" (documented); a 500 is a bug.
  assert.deepEqual(responses.filter((r) => r.status >= 500 && r.status !== 503), []);
});

const utf8 = (s) => new TextEncoder().encode(s);
const text = (b) => new TextDecoder().decode(b);
async function req(path, init) {
  const r = await c.req(path, init);
  responses.push({ path, status: r.status });
  return r;
}
async function toNode(node, path, body, method = "POST") {
  const stub = ns.get(ns.idFromName(String(node)));
  const r = await stub.fetch(`https://node${path}`, { method, body, headers: { "X-Ring-Node-Id": String(node) } });
  const bytes = new Uint8Array(await r.arrayBuffer());
  responses.push({ path: `node ${node} ${path} (${body?.length ?? 0} bytes)`, status: r.status });
  return { status: r.status, bytes, reason: r.headers.get("X-Ring-Refused-Reason") };
}
const place = (key) => core.call(Op.Place, { keys: [utf8(key)] }).placements[0];
const replicasOf = (key) => place(key).replicas.map(Number);
const hash = (bytes) => core.call(Op.Place, { keys: [bytes] }).placements[0].keyHash;
const status = async () => (await req("/v1/cluster")).json;
/** Keys named `prefix<i>` whose replicas include `node`. */
function keysAt(node, prefix, count) {
  const out = [];
  for (let i = 0; out.length < count; i++) if (replicasOf(`${prefix}${i}`).includes(node)) out.push(`${prefix}${i}`);
  return out;
}

/** An Entry: one live sibling (node, counter, hlc) with `value`; the context covers it
 *  plus `dots` explicit dots (large metadata). */
function entryOf(key, { node, counter, hlc, value, dots = [] }) {
  const v = utf8(value);
  return {
    key: utf8(key),
    register: {
      siblings: [{ dot: { node, counter: BigInt(counter) }, hlc: BigInt(hlc), contentType: utf8("text/plain"), valueHash: hash(v), value: v }],
      context: { vv: [{ node, counter: BigInt(counter) }], dots },
    },
  };
}
const pushOf = (from, entries, extra = {}) => encode("Push", { version: 2, from, entries, speaks: 2, ...extra });
const nowHlc = () => BigInt(Date.now()) << 16n;
const dayAheadHlc = () => BigInt(Date.now() + DAY_MS) << 16n;

test("malformed, oversized and foreign-version peer messages are refused (400, reason), never a 500", async () => {
  const x = 2;
  for (const path of ["/internal/push", "/internal/digest", "/internal/gc"]) {
    for (const body of [new Uint8Array([0xff, 0xff, 0xff]), new Uint8Array([0x0a, 0x05, 0x01])]) {
      const r = await toNode(x, path, body);
      assert.equal(r.status, 400, path);
      assert.equal(r.reason, "malformed");
    }
  }
  // Version 0 and the one after this release's are refused on every channel; version 1 is read.
  const future = PROTOCOL_VERSION + 1;
  const unknown = [
    ["/internal/push", encode("Push", { version: future, from: 1, speaks: future })],
    ["/internal/digest", encode("DigestRequest", { version: future, from: 1, root: 5n, speaks: future })],
    ["/internal/gc", encode("GcQuery", { version: future, from: 1, keys: [{ key: utf8("k"), digest: 1n }], speaks: future })],
    ["/internal/push", encode("Push", { version: 0, from: 1 })],
  ];
  for (const [path, body] of unknown) {
    const r = await toNode(x, path, body);
    assert.equal(r.status, 400, path);
    assert.equal(r.reason, "protocol_version", path);
  }
  assert.equal((await toNode(x, "/internal/push", encode("Push", { version: 1, from: 1 }))).status, 200);
  // One byte beyond RINGKV_PEER_MESSAGE_BYTES_MAX (48 MiB) is the peer's fault: malformed,
  // dropped; so is anything up to the core's request limit and beyond.
  for (const size of [48 * MiB + 1, 64 * MiB - 64, 64 * MiB, 64 * MiB + 1]) {
    const over = await toNode(x, "/internal/push", size <= 64 * MiB ? paddedPush(size) : new Uint8Array(size));
    assert.equal(over.status, 400, `${size} bytes`);
    assert.equal(over.reason, "malformed", `${size} bytes`);
  }
  // A valid Push of exactly 48 MiB (one unknown field) is read: 200, never a 503 that its
  // sender would retry forever.
  const r = await toNode(x, "/internal/push", paddedPush(48 * MiB));
  assert.equal(r.status, 200, `${r.reason} ${text(r.bytes)}`);
  // The node still works.
  const [mine] = keysAt(x, "step/after-junk/", 1);
  const w = await req(kvPath(mine, `?node=${x}`), { method: "PUT", body: "ok" });
  assert.equal(w.status, 200, w.text);
});

/** A valid empty Push of exactly `size` bytes: the rest is one unknown field (100). */
function paddedPush(size) {
  const head = encode("Push", { version: 2, from: 1, speaks: 2 });
  const filler = new Uint8Array(size - head.length);
  // Field 100, wire type 2: a 2-byte tag and a 4-byte varint length.
  const len = filler.length - 6;
  filler.set([0xa2, 0x06, (len & 0x7f) | 0x80, ((len >> 7) & 0x7f) | 0x80, ((len >> 14) & 0x7f) | 0x80, len >> 21]);
  const out = new Uint8Array(size);
  out.set(head);
  out.set(filler, head.length);
  return out;
}

test("GcQuery: 16,384 keys are answered; 16,385 keys, or a key of 0 or 1025 bytes, are malformed", async () => {
  const x = 3;
  const keys = (n, len = 8) => Array.from({ length: n }, (_, i) => ({ key: utf8(`g${String(i).padStart(len - 1, "0")}`), digest: 1n }));
  const ok = await toNode(x, "/internal/gc", encode("GcQuery", { version: 2, from: 1, keys: keys(16384), speaks: 2 }));
  assert.equal(ok.status, 200);
  assert.equal(decode("GcReply", ok.bytes).keys.length, 16384);
  const big = [{ key: new Uint8Array(1024).fill(0x61), digest: 1n }];
  assert.equal((await toNode(x, "/internal/gc", encode("GcQuery", { version: 2, from: 1, keys: big, speaks: 2 }))).status, 200);
  for (const bad of [keys(16385), [{ key: new Uint8Array(0), digest: 1n }], [{ key: new Uint8Array(1025).fill(0x61), digest: 1n }]]) {
    const r = await toNode(x, "/internal/gc", encode("GcQuery", { version: 2, from: 1, keys: bad, speaks: 2 }));
    assert.equal(r.status, 400);
    assert.equal(r.reason, "malformed");
  }
});

test("a Push merged in several ranges applies every entry and names the deferred keys of every range; a crash after it loses nothing", async () => {
  const x = 0;
  const y = 1;
  const z = replicasOf("step/z-probe").find((n) => n !== x && n !== y) ?? 2;
  const n = 1300;
  const keys = keysAt(x, "step/big/", n);
  // ~7 KB of explicit context dots per key (of a node neither x nor the sender): about
  // 9 MiB of stored metadata once the first push is in, so the second is merged in ranges.
  const dots = Array.from({ length: 1000 }, (_, i) => ({ node: z, counter: BigInt(2 * i + 2) }));
  const first = keys.map((k, i) => entryOf(k, { node: y, counter: 9_000_000 + i, hlc: nowHlc(), value: `one ${i}`, dots }));
  const r1 = await toNode(x, "/internal/push", pushOf(y, first));
  assert.equal(r1.status, 200);
  const second = keys.map((k, i) => entryOf(k, { node: y, counter: 9_100_000 + i, hlc: nowHlc(), value: `two ${i}`, dots }));
  // The first and the last entry come from a clock a day ahead: both wait.
  second[0] = entryOf(keys[0], { node: y, counter: 9_200_000, hlc: dayAheadHlc(), value: "tomorrow first", dots });
  second[n - 1] = entryOf(keys[n - 1], { node: y, counter: 9_200_001, hlc: dayAheadHlc(), value: "tomorrow last", dots });
  const before = (await status()).nodes[x].refused.hlc_ahead ?? 0;
  const r2 = await toNode(x, "/internal/push", pushOf(y, second));
  assert.equal(r2.status, 200);
  const answer = decode("Push", r2.bytes);
  assert.deepEqual(answer.deferred.map(text).sort(), [keys[0], keys[n - 1]].sort());
  assert.equal(((await status()).nodes[x].refused.hlc_ahead ?? 0) - before, 2);
  // The stored metadata really needed more than one range (8 MiB each): ~7 KB per key.
  const dumped = await dumpEntry(req, x, keys[1]);
  assert.ok(dumped && dumped.context.dots.length >= 1000, "the explicit dots are stored");
  // Crash x at once; it restarts on the next request and holds what it acknowledged.
  assert.equal((await req(`/v1/admin/nodes/${x}/crash`, { method: "POST" })).status, 200);
  for (const i of [1, 700, n - 2]) assert.equal((await req(kvPath(keys[i], `?node=${x}`))).text, `two ${i}`);
  for (const i of [0, n - 1]) assert.equal((await req(kvPath(keys[i], `?node=${x}`))).text, `one ${i}`, "the deferred version is not applied");
  // Its alarm was re-armed: its own client writes still reach the other replicas.
  const probe = keysAt(x, "step/after-crash/", 1)[0];
  assert.equal((await req(kvPath(probe, `?node=${x}`), { method: "PUT", body: "after crash" })).status, 200);
  for (const r of replicasOf(probe).filter((r) => r !== x)) {
    await waitFor(`replica ${r} has the write`, async () => (await req(kvPath(probe, `?node=${r}`))).text === "after crash", { timeoutMs: 20_000 });
  }
});

test("a peer a day ahead, by push and by repair request: deferred, never applied or stored; rounds and gossip of other keys go on", async () => {
  const x = 4;
  const [key] = keysAt(x, "step/tomorrow/", 1);
  const y = replicasOf(key).find((r) => r !== x);
  const shard = Number(place(key).shard);
  const roundsBefore = (await status()).nodes[x].gossip.rounds;
  const push = await toNode(x, "/internal/push", pushOf(y, [entryOf(key, { node: y, counter: 7_000_000, hlc: dayAheadHlc(), value: "tomorrow" })]));
  assert.equal(push.status, 200);
  assert.deepEqual(decode("Push", push.bytes).deferred.map(text), [key]);
  // The repair request half of anti-entropy: entries are all the sender's rows of `shards`.
  const repair = await toNode(x, "/internal/push", pushOf(y, [entryOf(key, { node: y, counter: 7_000_001, hlc: dayAheadHlc(), value: "tomorrow again" })], { shards: [shard] }));
  assert.equal(repair.status, 200);
  assert.deepEqual(decode("Push", repair.bytes).deferred.map(text), [key]);
  assert.equal((await req(kvPath(key, `?node=${x}`))).status, 404);
  // x keeps its rounds and pushes its own writes.
  const [other] = keysAt(x, "step/today/", 1);
  assert.equal((await req(kvPath(other, `?node=${x}`), { method: "PUT", body: "today" })).status, 200);
  for (const r of replicasOf(other).filter((r) => r !== x)) {
    await waitFor(`replica ${r} has today's write`, async () => (await req(kvPath(other, `?node=${r}`))).text === "today", { timeoutMs: 20_000 });
  }
  await waitFor("x runs rounds", async () => (await status()).nodes[x].gossip.rounds > roundsBefore + 3, { timeoutMs: 10_000 });
  assert.equal((await req(kvPath(key, `?node=${x}`))).status, 404, "still deferred");
});

test("the step's write path: the largest key and value are stored, one byte more is refused; forged and replayed tokens are 400", async () => {
  const key = "k".repeat(1024);
  const value = new Uint8Array(Number(c.vars.MAX_VALUE_BYTES)).fill(0x62);
  const w = await req(kvPath(key), { method: "PUT", body: value });
  assert.equal(w.status, 200, w.text);
  const r = await req(kvPath(key));
  assert.equal(r.status, 200);
  assert.equal(r.bytes.length, value.length);
  assert.equal((await req(kvPath("k".repeat(1025)), { method: "PUT", body: "x" })).status, 414);
  assert.equal((await req(kvPath("step/too-big"), { method: "PUT", body: new Uint8Array(value.length + 1) })).status, 413);
  // A context write with the token just read works; the same token on another key, or
  // altered in any byte, is refused.
  const token = r.headers.get("X-Ring-Context");
  assert.ok(token);
  const ok = await req(kvPath(key), { method: "PUT", body: "replaced", headers: { "X-Ring-Context": token } });
  assert.equal(ok.status, 200, ok.text);
  assert.equal((await req(kvPath("step/other-key"), { method: "PUT", body: "x", headers: { "X-Ring-Context": token } })).status, 400);
  for (const i of [0, 5, token.length - 1]) {
    const forged = token.slice(0, i) + (token[i] === "A" ? "B" : "A") + token.slice(i + 1);
    const f = await req(kvPath(key), { method: "PUT", body: "forged", headers: { "X-Ring-Context": forged } });
    assert.equal(f.status, 400, `forged at ${i}: ${f.text}`);
  }
  assert.equal((await req(kvPath(key), { method: "PUT", body: "x", headers: { "X-Ring-Context": "!!!" } })).status, 400);
  const siblings = (await req(kvPath(key, "?siblings=1"))).json.siblings;
  assert.deepEqual(siblings.map((s) => s.value), ["replaced"]);
});
