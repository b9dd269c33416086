// The built core (build/ringkv.wasm) exercised from JavaScript through worker/core.ts:
// zero imports, a differential run against the native build, interop with a standard
// protobuf library (protobufjs), and linear memory bounded over a million calls.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import protobuf from "protobufjs";
import { Core, CoreError, Op } from "../../worker/core.ts";
import { encode, decode } from "../../worker/pb.ts";

const root = new URL("../../", import.meta.url).pathname;
const wasmBytes = readFileSync(join(root, "build/ringkv.wasm"));
const wasmModule = new WebAssembly.Module(wasmBytes);
const proto = protobuf.loadSync(join(root, "wasm/ringkv.proto"));
const T = (name) => proto.lookupType(`ringkv.${name}`);
const utf8 = (s) => new TextEncoder().encode(s);

const CONFIG = {
  clusterSize: 8,
  replicas: 3,
  shards: 64,
  maxClockSkewMs: 60000n,
  tombstoneGraceMs: 3600000n,
  maxSiblings: 32,
  fanout: 8,
};

function node(id, config = CONFIG) {
  const core = new Core(wasmModule);
  core.call(Op.Init, { config, node: { node: id, clock: 0n, counter: 0n }, shards: [] });
  return core;
}

// A deterministic PRNG (xorshift32), so every run replays the same script.
function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

test("the .wasm imports nothing and exports the boundary", () => {
  assert.deepEqual(WebAssembly.Module.imports(wasmModule), []);
  const names = WebAssembly.Module.exports(wasmModule).map((e) => e.name);
  for (const name of ["memory", "ringkv_wasm_input", "ringkv_wasm_call", "ringkv_wasm_output", "ringkv_wasm_output_len"]) {
    assert.ok(names.includes(name), `missing export ${name}`);
  }
});

test("init refuses a bad configuration with a reason", () => {
  const core = new Core(wasmModule);
  assert.throws(
    () => core.call(Op.Init, { config: { ...CONFIG, replicas: 9 }, node: { node: 0 }, shards: [] }),
    (err) => err instanceof CoreError && err.code === CoreError.E_CONFIG && err.message.length > "invalid configuration".length,
  );
});

// A script of calls over three nodes: writes (blind, with tokens, deletes), reads, and
// gossip between the nodes, built by running it on the WASM build. Returns the frames and
// the WASM replies.
function runScript(seed, steps) {
  const next = rng(seed);
  const cores = [node(0), node(1), node(2)];
  const metas = [new Map(), new Map(), new Map()];
  const tokens = new Map();
  const frames = [];
  const replies = [];
  const call = (i, op, name, request) => {
    const bytes = encode(`${name}Request`, request);
    const { code, reply } = cores[i].callRaw(op, bytes);
    frames.push({ index: i, op, bytes });
    replies.push({ code, reply });
    return code === 0 ? decode(`${name}Reply`, reply) : null;
  };
  // The script starts with the three nodes' INITs, as runScript's node() did.
  for (let i = 0; i < 3; i++) {
    frames.push({ index: i, op: Op.Init, bytes: encode("InitRequest", { config: CONFIG, node: { node: i, clock: 0n, counter: 0n }, shards: [] }) });
    replies.push(null);
  }
  let now = 1_700_000_000_000n;
  for (let step = 0; step < steps; step++) {
    now += BigInt(next() % 3);
    const i = next() % 3;
    const key = utf8(`key/${next() % 12}`);
    const k = new TextDecoder().decode(key);
    const kind = next() % 10;
    const meta = metas[i].get(k) ?? new Uint8Array();
    if (kind < 5) {
      const token = next() % 2 === 0 ? tokens.get(k) : undefined;
      const r = call(i, Op.Write, "Write", {
        nowMs: now,
        key,
        meta,
        hasToken: token !== undefined,
        token: token ?? new Uint8Array(),
        value: utf8(`v${step}`),
        contentType: utf8("text/plain"),
        deleted: kind === 4,
      });
      if (r) {
        metas[i].set(k, r.meta);
        tokens.set(k, r.token);
      }
    } else if (kind < 7) {
      const r = call(i, Op.Read, "Read", { key, meta });
      if (r && r.found) tokens.set(k, r.token);
    } else if (kind < 8) {
      call(i, Op.Place, "Place", { keys: [key, utf8(`other/${step}`)] });
    } else {
      // Node i sends every key it holds to node j as a repair request, and j merges it.
      const j = (i + 1 + (next() % 2)) % 3;
      const locals = [...metas[i].entries()].map(([key, meta]) => ({ key: utf8(key), meta, values: [] }));
      const shards = [...new Set(locals.map((l) => Number(cores[i].call(Op.Place, { keys: [l.key] }).placements[0].shard)))];
      const repair = call(i, Op.AeRepair, "AeRepair", { peer: j, shards, locals });
      if (!repair) continue;
      const keys = call(j, Op.MessageKeys, "MessageKeys", { message: repair.message });
      if (!keys) continue;
      const jLocals = keys.keys.map((key) => ({ key, meta: metas[j].get(new TextDecoder().decode(key)) ?? new Uint8Array(), values: [] }));
      const merged = call(j, Op.Merge, "Merge", { nowMs: now, message: repair.message, locals: jLocals });
      if (merged) for (const a of merged.applied) metas[j].set(new TextDecoder().decode(a.key), a.meta);
    }
  }
  return { frames, replies };
}

function replayNative(frames) {
  const dir = mkdtempSync(join(tmpdir(), "ringkv-diff-"));
  const exe = join(dir, "replay");
  const sources = execFileSync("bash", ["-c", "ls wasm/src/*.c | grep -v wasm_exports.c"], { cwd: root }).toString().trim().split("\n");
  execFileSync("cc", ["-std=c11", "-O1", "-Iwasm/include", "-Iwasm/src", "-o", exe, ...sources, "tests/core/replay.c"], { cwd: root });
  const parts = [];
  for (const f of frames) {
    const head = Buffer.alloc(12);
    head.writeUInt32LE(f.index, 0);
    head.writeUInt32LE(f.op, 4);
    head.writeUInt32LE(f.bytes.length, 8);
    parts.push(head, Buffer.from(f.bytes));
  }
  const input = join(dir, "script.bin");
  writeFileSync(input, Buffer.concat(parts));
  const out = execFileSync(exe, { input: readFileSync(input), maxBuffer: 1 << 28 });
  const replies = [];
  let pos = 0;
  while (pos < out.length) {
    const code = out.readInt32LE(pos);
    const len = out.readUInt32LE(pos + 4);
    replies.push({ code, reply: new Uint8Array(out.subarray(pos + 8, pos + 8 + len)) });
    pos += 8 + len;
  }
  return replies;
}

test("differential: the native and WASM builds give the same bytes for the same script", () => {
  for (const seed of [1, 2, 3]) {
    const { frames, replies } = runScript(seed, 400);
    const native = replayNative(frames);
    assert.equal(native.length, frames.length);
    let compared = 0;
    for (let n = 0; n < frames.length; n++) {
      if (replies[n] === null) continue;
      assert.equal(native[n].code, replies[n].code, `seed ${seed} call ${n} (op ${frames[n].op}): code`);
      assert.deepEqual(native[n].reply, replies[n].reply, `seed ${seed} call ${n} (op ${frames[n].op}): reply bytes`);
      compared++;
    }
    assert.ok(compared > 300);
  }
});

test("interop: protobufjs reads the core's messages and the core reads protobufjs's", () => {
  const core = node(0);
  const key = utf8("interop/ключ");
  // A request encoded by protobufjs.
  const request = T("WriteRequest")
    .encode({ nowMs: 1_700_000_000_000, key, value: utf8("hello"), contentType: utf8("text/plain") })
    .finish();
  const { code, reply } = core.callRaw(Op.Write, request);
  assert.equal(code, 0);
  const w = T("WriteReply").decode(reply);
  assert.equal(w.siblings, 1);
  assert.equal(w.dot.node, 0);
  assert.equal(String(w.dot.counter), "1");
  // The stored register, decoded by protobufjs.
  const reg = T("Register").decode(w.meta);
  assert.equal(reg.siblings.length, 1);
  assert.equal(reg.siblings[0].value.length, 0, "stored metadata carries no value bytes");
  assert.equal(BigInt(reg.siblings[0].hlc.toString()), BigInt(w.hlc.toString()));
  assert.ok(BigInt(w.hlc.toString()) >> 16n >= 1_700_000_000_000n);
  assert.equal(new TextDecoder().decode(reg.siblings[0].contentType), "text/plain");
  // The token, decoded by protobufjs, is bound to the key's hash.
  const token = T("Token").decode(w.token);
  const placed = core.call(Op.Place, { keys: [key] }).placements[0];
  assert.equal(BigInt(token.keyHash.toString()), placed.keyHash);
  // A Push built by protobufjs from that register (plus the value) merges on node 1.
  const other = node(1);
  const sibling = { ...reg.siblings[0], value: utf8("hello") };
  const push = T("Push").encode({ version: 1, from: 0, entries: [{ key, register: { siblings: [sibling], context: reg.context } }] }).finish();
  const keys = other.call(Op.MessageKeys, { message: push });
  assert.deepEqual(keys.keys, [key]);
  const merged = other.call(Op.Merge, { nowMs: 1_700_000_000_001n, message: push, locals: [{ key, meta: new Uint8Array(), values: [] }] });
  assert.equal(merged.applied.length, 1);
  assert.deepEqual(merged.applied[0].meta, w.meta, "the receiver stores the same canonical bytes");
  // The new value is named by its place in the merged message (it crossed in once).
  const put = merged.applied[0].put.map((p) => new TextDecoder().decode(push.subarray(Number(p.at), Number(p.at) + Number(p.length))));
  assert.deepEqual(put, ["hello"]);
  // Unknown fields are skipped: the same Push with an extra field 15 still decodes.
  const extra = new Uint8Array([...push, (15 << 3) | 0, 42]);
  assert.deepEqual(other.call(Op.MessageKeys, { message: extra }).keys, [key]);
  // Versions 1 to 5 are read; any other is refused.
  for (const version of [1, 2, 3, 4, 5]) {
    const ok = T("Push").encode({ version, from: 0, entries: [] }).finish();
    assert.deepEqual(other.call(Op.MessageKeys, { message: ok }).keys, []);
  }
  for (const version of [0, 6]) {
    const bad = T("Push").encode({ version, from: 0, entries: [] }).finish();
    assert.throws(() => other.call(Op.MessageKeys, { message: bad }), (e) => e.code === CoreError.E_PROTOCOL);
  }
});

test("a token for another key is refused", () => {
  const core = node(0);
  const first = core.call(Op.Write, { nowMs: 1n << 40n, key: utf8("a"), value: utf8("1") });
  assert.throws(
    () => core.call(Op.Write, { nowMs: 1n << 40n, key: utf8("b"), hasToken: true, token: first.token, value: utf8("2") }),
    (e) => e.code === CoreError.E_TOKEN,
  );
});

test("anti-entropy narrows down in two levels: root, bucket digests, shard digests", () => {
  const config = { ...CONFIG, clusterSize: 3, replicas: 2, shards: 4096 };
  const a = node(0, config);
  const b = node(1, config);
  // A key on a shard both replicate, written at node 0 only.
  let key;
  let shard;
  for (let i = 0; key === undefined; i++) {
    const p = a.call(Op.Place, { keys: [utf8(`ae/${i}`)] }).placements[0];
    if (p.replicas.includes(0) && p.replicas.includes(1)) [key, shard] = [utf8(`ae/${i}`), p.shard];
  }
  a.call(Op.Write, { nowMs: 1_700_000_000_000n, key, value: utf8("v"), contentType: utf8("text/plain") });
  const shared = a.call(Op.Place, { shards: [...Array(config.shards).keys()] }).placements
    .filter((p) => p.replicas.includes(0) && p.replicas.includes(1))
    .map((p) => p.shard);
  const buckets = Math.ceil(shared.length / 64);
  assert.ok(buckets > 1);
  // Root differs: every bucket's digest (protobufjs reads the packed fixed64s).
  const start = a.call(Op.AeStart, { peer: 1 });
  const answer = b.call(Op.AeAnswer, { message: start.message });
  const reply = T("DigestReply").decode(answer.message);
  assert.equal(reply.equal, false);
  assert.equal(reply.shards.length, 0);
  assert.equal(reply.bucketDigests.length, buckets);
  assert.ok(answer.message.length < buckets * 8 + 16);
  const first = a.call(Op.AeCompare, { message: answer.message, shardsMax: 64 });
  assert.equal(first.equal, false);
  assert.deepEqual(first.shards, []);
  assert.deepEqual(first.buckets, [Math.floor(shared.indexOf(shard) / 64)]);
  // The differing bucket: its shard digests, and exactly the written key's shard differs.
  const second = a.call(Op.AeStart, { peer: 1, buckets: first.buckets });
  const answer2 = b.call(Op.AeAnswer, { message: second.message });
  assert.equal(T("DigestReply").decode(answer2.message).bucketDigests.length, 0);
  const compare = a.call(Op.AeCompare, { message: answer2.message, shardsMax: 64 });
  assert.deepEqual(compare.shards, [shard]);
  assert.deepEqual(compare.buckets, []);
  // A bucket beyond the list is refused.
  assert.throws(() => a.call(Op.AeStart, { peer: 1, buckets: [buckets] }), (err) => err instanceof CoreError);
});

test("linear memory stays bounded over a million calls", () => {
  const core = node(0);
  const key = utf8("memory/key");
  let meta = core.call(Op.Write, { nowMs: 1_700_000_000_000n, key, value: new Uint8Array(4096) }).meta;
  const read = encode("ReadRequest", { key, meta });
  const place = encode("PlaceRequest", { keys: [key, utf8("another key")] });
  for (let i = 0; i < 10_000; i++) core.callRaw(i % 2 ? Op.Read : Op.Place, i % 2 ? read : place);
  const warm = core.memoryBytes();
  let checked = 0;
  for (let i = 0; i < 1_000_000; i++) {
    const { code } = core.callRaw(i % 2 ? Op.Read : Op.Place, i % 2 ? read : place);
    if (code !== 0) assert.fail(`call ${i} returned ${code}`);
    checked++;
  }
  assert.equal(checked, 1_000_000);
  assert.equal(core.memoryBytes(), warm, "memory grew after warm-up");
  // Large values do grow memory, and it is reused rather than grown again.
  const big = new Uint8Array(2 * 1024 * 1024);
  for (let i = 0; i < 20; i++) meta = core.call(Op.Write, { nowMs: 1_700_000_000_000n, key, meta, value: big }).meta;
  const afterBig = core.memoryBytes();
  for (let i = 0; i < 20; i++) meta = core.call(Op.Write, { nowMs: 1_700_000_000_000n, key, meta, value: big }).meta;
  assert.equal(core.memoryBytes(), afterBig);
});

test("a Worker's placement-only instance places all 65,536 shards in one call (RingControl places shards one by one as reports touch them)", () => {
  const core = new Core(wasmModule);
  const config = { ...CONFIG, shards: 65536 };
  core.call(Op.Init, { config, node: { node: 0, clock: 0n, counter: 0n }, shards: [], placementOnly: true });
  const shards = Array.from({ length: 65536 }, (_, i) => i);
  const placements = core.call(Op.Place, { shards }).placements;
  assert.equal(placements.length, 65536);
  // The same replicas a full node computes for its keys' shards.
  const full = node(3, config);
  for (const i of [0, 1, 4097, 65535]) {
    assert.equal(placements[i].shard, i);
    assert.deepEqual(placements[i].replicas, full.call(Op.Place, { shards: [i] }).placements[0].replicas);
  }
  // And nothing else: a placement-only instance has no node state.
  assert.throws(() => core.call(Op.Step, { nowMs: 1n, alarm: true }), CoreError);
});
