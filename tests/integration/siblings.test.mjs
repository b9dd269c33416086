// Siblings: concurrent writes are kept, ordered by (hlc, node); a context write resolves
// exactly what it covers; a blind write supersedes what its node holds; MAX_SIBLINGS.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor, compareVersion } from "./helpers.mjs";

let c;
before(async () => {
  c = await startCluster({ vars: { MAX_SIBLINGS: "4", CACHE_TTL_SECONDS: "0" } });
});
after(async () => {
  await c?.dispose();
});

const replicasOf = async (key) => (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas;
const write = (key, node, body, context) =>
  c.req(kvPath(key, `?node=${node}`), {
    method: body === null ? "DELETE" : "PUT",
    body: body ?? undefined,
    headers: context !== undefined ? { "X-Ring-Context": context } : {},
  });
const siblingsAt = (key, node) => c.req(kvPath(key, `?siblings=1&node=${node}`));

async function everyReplica(key, predicate, what) {
  const reps = await replicasOf(key);
  return waitFor(what, async () => {
    const states = await Promise.all(reps.map((n) => siblingsAt(key, n)));
    return states.every((s) => s.status === 200 && predicate(s.json)) ? states : undefined;
  }, { timeoutMs: 30_000, everyMs: 100 });
}

test("two writes with the same stale context at one node become siblings; a covering context resolves them everywhere", async () => {
  const key = "sib/stale";
  const [a] = await replicasOf(key);
  assert.equal((await write(key, a, "v0")).status, 200);
  const stale = (await siblingsAt(key, a)).json.context;
  const w1 = await write(key, a, "v1", stale);
  const w2 = await write(key, a, "v2", stale);
  assert.equal(w1.status, 200);
  assert.equal(w1.json.siblings, 1, "v1 supersedes v0");
  assert.equal(w2.status, 200);
  assert.equal(w2.json.siblings, 2, "v2 does not cover v1");
  const s = await siblingsAt(key, a);
  assert.deepEqual(s.json.siblings.map((x) => x.value).sort(), ["v1", "v2"]);
  const plain = await c.req(kvPath(key, `?node=${a}`));
  assert.equal(plain.text, "v2", "the winner is the highest (hlc, node)");
  assert.equal(plain.headers.get("x-ring-siblings"), "2");
  // Every replica learns both siblings.
  await everyReplica(key, (j) => j.siblings.length === 2, "both siblings on every replica");
  // The response context of w2 does not cover v1: a write with it keeps v1.
  const w3 = await write(key, a, "v3", w2.json.context);
  assert.equal(w3.json.siblings, 2);
  // A context covering all siblings resolves them.
  const all = (await siblingsAt(key, a)).json.context;
  const w4 = await write(key, a, "resolved", all);
  assert.equal(w4.json.siblings, 1);
  await everyReplica(key, (j) => j.siblings.length === 1 && j.siblings[0].value === "resolved", "resolution on every replica");
});

test("concurrent writes at two replicas: both kept, the same winner everywhere; a blind write supersedes", async () => {
  const key = "sib/concurrent";
  const [a, b] = await replicasOf(key);
  const [wa, wb] = await Promise.all([write(key, a, "from-a"), write(key, b, "from-b")]);
  assert.equal(wa.status, 200);
  assert.equal(wb.status, 200);
  // Wait until every replica holds the same state (gossip has run both ways).
  const reps = await replicasOf(key);
  await waitFor("identical replicas", async () => {
    const states = await Promise.all(reps.map((n) => siblingsAt(key, n)));
    return new Set(states.map((x) => JSON.stringify(x.json.siblings))).size === 1;
  }, { timeoutMs: 30_000, everyMs: 100 });
  // If gossip happened to order them, one supersedes the other; usually they are concurrent.
  const best = [wa.json, wb.json].reduce((x, y) => (compareVersion(x, y) >= 0 ? x : y));
  await everyReplica(key, (j) => {
    const w = j.siblings.reduce((x, y) => (compareVersion(x, y) >= 0 ? x : y));
    return w.hlc === best.hlc && w.node === best.node;
  }, "the same winner everywhere");
  const blind = await write(key, b, "blind");
  assert.equal(blind.json.siblings, 1, "a blind write supersedes everything its node holds");
  await everyReplica(key, (j) => j.siblings.length === 1 && j.siblings[0].value === "blind", "blind write everywhere");
});

test("a delete concurrent with a write: the tombstone is a sibling; resolving with the context works", async () => {
  const key = "sib/delete";
  const [a] = await replicasOf(key);
  assert.equal((await write(key, a, "base")).status, 200);
  const ctx = (await siblingsAt(key, a)).json.context;
  assert.equal((await write(key, a, null, ctx)).status, 200);
  const w = await write(key, a, "alive", ctx);
  assert.equal(w.json.siblings, 2);
  const s = await siblingsAt(key, a);
  assert.equal(s.json.siblings.filter((x) => x.deleted).length, 1);
  const plain = await c.req(kvPath(key, `?node=${a}`));
  assert.equal(plain.status, 200, "the write outranks the tombstone");
  assert.equal(plain.text, "alive");
  const d = await write(key, a, null, s.json.context);
  assert.equal(d.status, 200);
  const gone = await c.req(kvPath(key, `?node=${a}`));
  assert.equal(gone.status, 404);
  assert.equal(gone.headers.get("x-ring-siblings"), "1");
});

test("MAX_SIBLINGS: a context write that would leave too many siblings gets 409", async () => {
  const key = "sib/many";
  const [a] = await replicasOf(key);
  assert.equal((await write(key, a, "x")).status, 200);
  const stale = (await siblingsAt(key, a)).json.context;
  const codes = [];
  for (let i = 0; i < 6; i++) codes.push((await write(key, a, `s${i}`, stale)).status);
  assert.deepEqual(codes, [200, 200, 200, 200, 409, 409]);
  const s = await siblingsAt(key, a);
  assert.equal(s.json.siblings.length, 4, "the refused writes left no trace");
  // Resolving is still possible, and so is a blind write.
  assert.equal((await write(key, a, "resolved", s.json.context)).json.siblings, 1);
});

test("context tokens: tampered, truncated or foreign tokens are 400 and change nothing", async () => {
  const key = "sib/tokens";
  const [a] = await replicasOf(key);
  const w = await write(key, a, "orig");
  const token = w.json.context;
  const flip = (t, i) => t.slice(0, i) + (t[i] === "A" ? "B" : "A") + t.slice(i + 1);
  const bad = [flip(token, 0), flip(token, token.length - 1), flip(token, Math.floor(token.length / 2)), token.slice(0, -3), token + "A",
    "", " ", "====", "a", "not a token", token.replace(/[-_]/g, "+"), "A".repeat(20000)];
  for (const t of bad.filter((x) => x !== token)) {
    const r = await write(key, a, "evil", t);
    assert.equal(r.status, 400, `token ${JSON.stringify(t.slice(0, 40))}`);
    assert.equal(r.json.error, "invalid context token");
  }
  const other = await write("sib/tokens-other", (await replicasOf("sib/tokens-other"))[0], "o");
  assert.equal((await write(key, a, "evil", other.json.context)).status, 400);
  const s = await siblingsAt(key, a);
  assert.deepEqual(s.json.siblings.map((x) => x.value), ["orig"]);
});
