// The HTTP API of SPEC.md, endpoint by endpoint, against one 8-node cluster in workerd.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor } from "./helpers.mjs";

let c;
before(async () => {
  c = await startCluster();
});
after(async () => {
  await c?.dispose();
});

const put = (key, body, headers = {}, query = "") => c.req(kvPath(key, query), { method: "PUT", body, headers });
const del = (key, headers = {}, query = "") => c.req(kvPath(key, query), { method: "DELETE", headers });
const get = (key, query = "", headers = {}) => c.req(kvPath(key, query), { headers });

test("PUT then GET returns the value, its content type and the ring headers", async () => {
  const w = await put("greeting", "hello", { "Content-Type": "text/plain; charset=utf-8" });
  assert.equal(w.status, 200);
  assert.deepEqual(Object.keys(w.json).sort(), ["context", "hlc", "key", "node", "siblings"]);
  assert.equal(w.json.key, "greeting");
  assert.match(w.json.hlc, /^[0-9]+$/);
  assert.match(w.json.node, /^[0-7]$/);
  assert.equal(w.json.siblings, 1);
  assert.ok(w.json.context.length > 0);
  const placement = await c.req("/v1/cluster/placement?key=greeting");
  assert.equal(placement.status, 200);
  assert.equal(placement.json.key, "greeting");
  assert.equal(placement.json.replicas.length, 3);
  assert.equal(w.json.node, placement.json.replicas[0], "routed to the first replica");
  assert.ok(Number.isInteger(placement.json.shard) && placement.json.shard >= 0 && placement.json.shard < 16384);

  const r = await get("greeting");
  assert.equal(r.status, 200);
  assert.equal(r.text, "hello");
  assert.equal(r.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(r.headers.get("x-ring-siblings"), "1");
  assert.equal(r.headers.get("x-ring-node"), w.json.node);
  assert.equal(r.headers.get("x-ring-cache"), "MISS");
  assert.ok(r.headers.get("x-ring-context"));
  assert.equal(r.headers.get("x-ring-hlc"), w.json.hlc, "the winner's HLC");
});

test("binary values round-trip byte for byte; siblings=1 reports base64", async () => {
  const bytes = new Uint8Array(4096);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + 3) & 0xff;
  bytes[0] = 0xff;
  const w = await put("bin/blob", bytes, { "Content-Type": "application/x-test" });
  assert.equal(w.status, 200);
  const r = await get("bin/blob", "?node=" + w.json.node);
  assert.equal(r.status, 200);
  assert.deepEqual(r.bytes, bytes);
  assert.equal(r.headers.get("content-type"), "application/x-test");
  const s = await get("bin/blob", "?siblings=1");
  assert.equal(s.status, 200);
  assert.equal(s.json.siblings.length, 1);
  assert.equal(s.json.siblings[0].encoding, "base64");
  assert.deepEqual(new Uint8Array(Buffer.from(s.json.siblings[0].value, "base64")), bytes);
  // An empty value is a value.
  const e = await put("bin/empty", new Uint8Array(0));
  assert.equal(e.status, 200);
  const re = await get("bin/empty");
  assert.equal(re.status, 200);
  assert.equal(re.bytes.length, 0);
  assert.equal(re.headers.get("content-type"), "application/octet-stream");
});

test("unicode keys with slashes and percent-encoding", async () => {
  const key = "ünï/cødé/😀/a b/%/?#";
  const w = await put(key, "uni");
  assert.equal(w.status, 200);
  assert.equal(w.json.key, key);
  const r = await get(key);
  assert.equal(r.status, 200);
  assert.equal(r.text, "uni");
  // The same key spelled with every byte encoded.
  const encoded = "/v1/kv/" + [...new TextEncoder().encode(key)].map((b) => "%" + b.toString(16).padStart(2, "0")).join("");
  const r2 = await c.req(encoded, { headers: { "Cache-Control": "no-cache" } });
  assert.equal(r2.status, 200);
  assert.equal(r2.text, "uni");
  const s = await get(key, "?siblings=1");
  assert.equal(s.json.key, key);
  // A 1024-byte key is fine, 1025 is 414.
  const long = "k".repeat(1021) + "ü/";
  assert.equal(new TextEncoder().encode(long).length, 1024);
  assert.equal((await put(long, "x")).status, 200);
  assert.equal((await get(long)).text, "x");
  assert.equal((await put(long + "x", "x")).status, 414);
  assert.equal((await get(long + "x")).status, 414);
});

test("cache: a second plain GET hits, a write through the Worker evicts, siblings and ?node never cache", async () => {
  assert.equal((await put("cache/a", "v1")).status, 200);
  assert.equal((await get("cache/a")).headers.get("x-ring-cache"), "MISS");
  const hit = await waitFor("a cache hit", async () => {
    const r = await get("cache/a");
    return r.headers.get("x-ring-cache") === "HIT" ? r : undefined;
  }, { timeoutMs: 4000, everyMs: 50 });
  assert.equal(hit.text, "v1");
  assert.ok(hit.headers.get("x-ring-context"));
  assert.equal((await put("cache/a", "v2")).status, 200);
  const after = await get("cache/a");
  assert.equal(after.headers.get("x-ring-cache"), "MISS");
  assert.equal(after.text, "v2", "a client reads its own write");
  assert.equal((await del("cache/a")).status, 200);
  assert.equal((await get("cache/a")).status, 404);
  // 404s are not cached.
  const missing = await get("cache/never");
  assert.equal(missing.status, 404);
  assert.deepEqual(missing.json, { error: "not found" });
  assert.equal((await put("cache/never", "now")).status, 200);
  assert.equal((await get("cache/never")).text, "now");
  const node = (await c.req("/v1/cluster/placement?key=cache%2Fnever")).json.replicas[0];
  assert.notEqual((await get("cache/never", "?node=" + node)).headers.get("x-ring-cache"), "HIT");
  assert.notEqual((await get("cache/never", "?node=" + node)).headers.get("x-ring-cache"), "HIT");
});

test("DELETE: 404 afterwards with a context; siblings=1 lists the tombstone", async () => {
  assert.equal((await put("del/x", "here")).status, 200);
  const d = await del("del/x");
  assert.equal(d.status, 200);
  assert.deepEqual(Object.keys(d.json).sort(), ["context", "hlc", "key", "node"]);
  const r = await get("del/x");
  assert.equal(r.status, 404);
  assert.deepEqual(r.json, { error: "not found" });
  assert.ok(r.headers.get("x-ring-context"), "a 404 for a key with tombstones carries a context");
  const s = await get("del/x", "?siblings=1");
  assert.equal(s.status, 200);
  assert.equal(s.json.siblings.length, 1);
  assert.equal(s.json.siblings[0].deleted, true);
  assert.equal(s.json.siblings[0].value, "");
  // Never-written keys: 404 with no context, on every path.
  const n = await get("del/never", "?siblings=1");
  assert.equal(n.status, 404);
  assert.equal((await get("del/never")).headers.get("x-ring-context"), null);
  // Deleting a key that never existed leaves a tombstone, and a write revives it.
  assert.equal((await del("del/ghost")).status, 200);
  assert.equal((await put("del/ghost", "alive")).status, 200);
  assert.equal((await get("del/ghost")).text, "alive");
});

test("a context from a read supersedes exactly what it covers", async () => {
  const w = await put("ctx/a", "one");
  const r = await get("ctx/a", "?siblings=1");
  const w2 = await put("ctx/a", "two", { "X-Ring-Context": r.json.context });
  assert.equal(w2.status, 200);
  assert.equal(w2.json.siblings, 1);
  assert.ok(BigInt(w2.json.hlc) > BigInt(w.json.hlc));
  const d = await del("ctx/a", { "X-Ring-Context": w2.json.context });
  assert.equal(d.status, 200);
  assert.equal((await get("ctx/a")).status, 404);
  // A token is bound to its key.
  const other = await put("ctx/b", "b");
  assert.equal((await put("ctx/a", "x", { "X-Ring-Context": other.json.context })).status, 400);
});

/** Every key under `prefix` (encoded), page by page of at most `limit`. */
async function listPaged(prefix, limit) {
  const seen = [];
  let cursor = null;
  for (let page = 0; page < 20; page++) {
    const r = await c.req(`/v1/kv?prefix=${prefix}&limit=${limit}${cursor ? "&cursor=" + cursor : ""}`);
    assert.equal(r.status, 200);
    assert.ok(r.json.keys.length <= limit);
    seen.push(...r.json.keys);
    cursor = r.json.cursor;
    if (cursor === null) break;
  }
  return seen;
}

test("listing: rounds ask each node for at most ⌈2 × limit × R / N⌉ + 1 rows and still page exactly", async () => {
  // 300 keys over N=8 R=3: each node holds about 112; a page of 120 asks each for 91, so
  // several nodes' pages are full and the round continues from the smallest last key.
  const keys = Array.from({ length: 300 }, (_, i) => `bounded/${String(i).padStart(4, "0")}`);
  for (const k of keys) assert.equal((await put(k, "v")).status, 200);
  assert.deepEqual(await listPaged("bounded%2F", 120), keys);
});

test("listing: live keys in byte order, prefix, limit and cursor", async () => {
  const keys = [];
  for (let i = 0; i < 25; i++) keys.push(`list/${String(i).padStart(3, "0")}`);
  keys.push("list/ü", "list/z/1", "lisu", "lis");
  for (const k of keys) assert.equal((await put(k, "v")).status, 200);
  assert.equal((await del("list/005")).status, 200);
  const expected = keys.filter((k) => k.startsWith("list/") && k !== "list/005").sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  // Listing may lag by the gossip delay; the key's first replica has it at once.
  const all = await c.req("/v1/kv?prefix=list%2F");
  assert.equal(all.status, 200);
  assert.deepEqual(all.json.keys, expected);
  assert.equal(all.json.cursor, null);
  assert.deepEqual(await listPaged("list%2F", 7), expected);
  const everything = await c.req("/v1/kv");
  assert.ok(everything.json.keys.includes("lis") && everything.json.keys.includes("lisu"));
  assert.equal((await c.req("/v1/kv?limit=0")).status, 400);
  assert.equal((await c.req("/v1/kv?limit=1001")).status, 400);
  assert.equal((await c.req("/v1/kv?limit=abc")).status, 400);
  assert.equal((await c.req("/v1/kv?cursor=***")).status, 400);
  assert.equal((await c.req("/v1/kv?prefix=nothing-here")).json.keys.length, 0);
});

test("cluster status and convergence after writes", async () => {
  const r = await waitFor("converged", async () => {
    const s = await c.req("/v1/cluster");
    return s.json.converged ? s : undefined;
  }, { timeoutMs: 30_000 });
  assert.equal(r.json.size, 8);
  assert.equal(r.json.replicas, 3);
  assert.equal(r.json.nodes.length, 8);
  for (const [i, n] of r.json.nodes.entries()) {
    assert.equal(n.id, String(i));
    assert.ok(Number.isInteger(n.keys));
    assert.match(n.digest, /^[0-9]+$/);
    for (const f of ["rounds", "messages_sent", "bytes_sent", "entries_sent", "entries_applied"]) {
      assert.ok(Number.isInteger(n.gossip[f]), f);
    }
  }
  assert.ok(r.json.nodes.some((n) => n.gossip.bytes_sent > 0));
  assert.ok(r.json.nodes.some((n) => n.gossip.entries_applied > 0));
});

test("placement: errors", async () => {
  assert.equal((await c.req("/v1/cluster/placement")).status, 400);
  assert.equal((await c.req("/v1/cluster/placement?key=")).status, 400);
  assert.equal((await c.req("/v1/cluster/placement?key=" + "x".repeat(1025))).status, 414);
  assert.equal((await c.req("/v1/cluster/placement?key=a", { method: "POST" })).status, 405);
});

test("?node= picks the accepting replica; 400 when it is not a replica", async () => {
  const p = (await c.req("/v1/cluster/placement?key=nodes%2Fk")).json.replicas;
  const w = await put("nodes/k", "at-second", {}, "?node=" + p[1]);
  assert.equal(w.status, 200);
  assert.equal(w.json.node, p[1]);
  const local = await get("nodes/k", "?node=" + p[1]);
  assert.equal(local.text, "at-second");
  assert.equal(local.headers.get("x-ring-node"), p[1]);
  const outsider = [0, 1, 2, 3, 4, 5, 6, 7].map(String).find((n) => !p.includes(n));
  assert.equal((await put("nodes/k", "x", {}, "?node=" + outsider)).status, 400);
  assert.equal((await del("nodes/k", {}, "?node=" + outsider)).status, 400);
  assert.equal((await put("nodes/k", "x", {}, "?node=8")).status, 400);
  assert.equal((await put("nodes/k", "x", {}, "?node=-1")).status, 400);
  assert.equal((await get("nodes/k", "?node=abc")).status, 400);
});

test("admin dump lists one node's registers with siblings, paginated", async () => {
  const p = (await c.req("/v1/cluster/placement?key=dump%2Fk")).json.replicas;
  assert.equal((await put("dump/k", "dumped", { "Content-Type": "text/x-dump" })).status, 200);
  const keys = [];
  let cursor = null;
  for (let page = 0; page < 50; page++) {
    const r = await c.req(`/v1/admin/nodes/${p[0]}/keys${cursor ? "?cursor=" + cursor : ""}`);
    assert.equal(r.status, 200);
    keys.push(...r.json.keys);
    cursor = r.json.cursor;
    if (cursor === null) break;
  }
  const entry = keys.find((k) => k.key === "dump/k");
  assert.ok(entry);
  assert.equal(entry.siblings.length, 1);
  assert.equal(entry.siblings[0].value, "dumped");
  assert.equal(entry.siblings[0].content_type, "text/x-dump");
  // Any id a ring can hold is accepted; a node outside this ring answers an empty page.
  const outside = await c.req("/v1/admin/nodes/99/keys");
  assert.equal(outside.status, 200);
  assert.deepEqual(outside.json, { node: 99, keys: [], cursor: null });
  assert.equal((await c.req("/v1/admin/nodes/1024/keys")).status, 400);
  assert.equal((await c.req("/v1/admin/nodes/0/keys?cursor=%%%")).status, 400);
  assert.equal((await c.req("/v1/admin/nodes/0/keys", { method: "DELETE" })).status, 405);
});

test("methods, unknown paths and the error order", async () => {
  for (const method of ["POST", "PATCH", "OPTIONS"]) {
    const r = await c.req(kvPath("m/k"), { method, body: method === "OPTIONS" ? undefined : "x" });
    assert.equal(r.status, 405, method);
    assert.ok(r.json.error);
  }
  assert.equal((await c.req("/v1/cluster", { method: "PUT", body: "x" })).status, 405);
  assert.equal((await c.req("/v1/kv", { method: "DELETE" })).status, 405);
  assert.equal((await c.req("/nope")).status, 404);
  assert.equal((await c.req("/internal/write", { method: "POST" })).status, 404);
  assert.equal((await c.req("/v1/admin/faults", { method: "POST", body: "{}" })).status, 404, "faults are off");
  // 405 before 400: a bad key with a bad method.
  assert.equal((await c.req("/v1/kv/%ZZ", { method: "POST" })).status, 405);
  // 400 (bad context) before 414 before 413.
  const big = new Uint8Array(1048577);
  assert.equal((await c.req("/v1/kv/" + "k".repeat(1025), { method: "PUT", body: big, headers: { "X-Ring-Context": "!!" } })).status, 400);
  assert.equal((await c.req("/v1/kv/" + "k".repeat(1025), { method: "PUT", body: big })).status, 414);
  const reps = (await c.req("/v1/cluster/placement?key=big")).json.replicas;
  const outsider = ["0", "1", "2", "3", "4", "5", "6", "7"].find((n) => !reps.includes(n));
  assert.equal((await c.req("/v1/kv/big?node=" + outsider, { method: "PUT", body: big })).status, 400, "400 (query) before 413");
  const r = await c.req("/v1/kv/big", { method: "PUT", body: big });
  assert.equal(r.status, 413);
  assert.ok(r.json.error);
  assert.equal((await c.req("/v1/kv/big", { method: "PUT", body: new Uint8Array(1048576) })).status, 200);
});
