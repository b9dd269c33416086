// Upgrading in place: release 1 (commit f5133e2, built from this repository's history)
// writes keys and stops; this build starts on the same persisted Durable Object state.
// Every key reads back, release-1 context tokens get 400 "context from an older release",
// RingControl starts at epoch 1 with the size the nodes persisted, and the cluster
// converges and keeps serving.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare } from "miniflare";
import { startCluster, kvPath, waitFor, root, DEFAULT_VARS } from "./helpers.mjs";

const RELEASE_1 = "f5133e2";

function hasCommit() {
  try {
    execFileSync("git", ["cat-file", "-e", `${RELEASE_1}^{commit}`], { cwd: root, stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Release 1's Worker bundle, built once into build/release1/ from git history. */
function buildRelease1() {
  const dir = join(root, "build", `release1-${RELEASE_1}`);
  const script = join(dir, "dist", "index.js");
  if (existsSync(script)) return script;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  execFileSync("bash", ["-c", `git archive ${RELEASE_1} | tar -x -C "${dir}"`], { cwd: root });
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"));
  const env = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" };
  execFileSync("bash", ["build.sh", "wasm"], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
  execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", "dist"], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
  return script;
}

async function release1Cluster(script, dir, vars) {
  const mf = new Miniflare({
    scriptPath: script,
    modules: true,
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    compatibilityDate: "2026-04-01",
    compatibilityFlags: ["nodejs_compat"],
    durableObjects: { NODE: { className: "RingNode", useSQLite: true } },
    durableObjectsPersist: join(dir, "do"),
    cachePersist: join(dir, "cache"),
    bindings: vars,
    host: "127.0.0.1",
    port: 0,
  });
  const url = (await mf.ready).toString().replace(/\/$/, "");
  const req = async (path, init = {}) => {
    const r = await fetch(url + path, init);
    const text = await r.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: r.status, headers: r.headers, text, json };
  };
  return { mf, req };
}

test("a release-1 cluster upgrades in place: keys read back, old tokens are refused, converged", { skip: hasCommit() ? false : `commit ${RELEASE_1} is not in this clone's history` }, async () => {
  const script = buildRelease1();
  const dir = mkdtempSync(join(tmpdir(), "ringkv-upgrade-"));
  const vars = { ...DEFAULT_VARS, CACHE_TTL_SECONDS: "0" };
  try {
    // Release 1: live keys, a deleted key, keys with two concurrent siblings. (A blind write
    // supersedes what its node holds, so when the first write reached the second node before
    // the second write did, that key has one version: the test compares with what release 1
    // held, and needs one key of five to have both.)
    const old = await release1Cluster(script, dir, vars);
    const keys = Array.from({ length: 30 }, (_, i) => `upgrade/${i}`);
    const siblingKeys = Array.from({ length: 5 }, (_, i) => `upgrade/siblings-${i}`);
    const held = new Map();
    let token;
    try {
      for (const k of keys) {
        const w = await old.req(kvPath(k), { method: "PUT", body: `old-${k}` });
        assert.equal(w.status, 200);
        token = w.json.context;
      }
      assert.equal((await old.req(kvPath("upgrade/deleted"), { method: "PUT", body: "gone" })).status, 200);
      assert.equal((await old.req(kvPath("upgrade/deleted"), { method: "DELETE" })).status, 200);
      for (const k of siblingKeys) {
        const reps = (await old.req(`/v1/cluster/placement?key=${encodeURIComponent(k)}`)).json.replicas;
        assert.equal((await old.req(kvPath(k, `?node=${reps[0]}`), { method: "PUT", body: "left" })).status, 200);
        assert.equal((await old.req(kvPath(k, `?node=${reps[1]}`), { method: "PUT", body: "right" })).status, 200);
      }
      await waitFor("release 1 converged", async () => (await old.req("/v1/cluster")).json?.converged, { timeoutMs: 60_000 });
      for (const k of siblingKeys) {
        const r = await old.req(kvPath(k, "?siblings=1"));
        assert.equal(r.status, 200, k);
        held.set(k, r.json.siblings.map((x) => x.value).sort());
      }
    } finally {
      await old.mf.dispose();
    }

    // This build on the same storage.
    const c = await startCluster({ vars, persistDir: dir });
    try {
      for (const k of keys) {
        const r = await c.req(kvPath(k));
        assert.equal(r.status, 200, k);
        assert.equal(r.text, `old-${k}`);
      }
      assert.equal((await c.req(kvPath("upgrade/deleted"))).status, 404);
      for (const k of siblingKeys) {
        const r = await c.req(kvPath(k, "?siblings=1"));
        assert.equal(r.status, 200, k);
        assert.deepEqual(r.json.siblings.map((x) => x.value).sort(), held.get(k), k);
      }
      const sk = siblingKeys.find((k) => held.get(k).length === 2);
      assert.ok(sk !== undefined, `no key kept two siblings in release 1: ${JSON.stringify([...held])}`);
      const sib = await c.req(kvPath(sk, "?siblings=1"));
      assert.deepEqual(sib.json.siblings.map((x) => x.value).sort(), ["left", "right"]);
      const refused = await c.req(kvPath(keys[29]), { method: "PUT", body: "x", headers: { "X-Ring-Context": token } });
      assert.equal(refused.status, 400);
      assert.equal(refused.json.error, "context from an older release");
      const status = (await c.req("/v1/cluster")).json;
      assert.equal(status.epoch, 1);
      assert.equal(status.size, 8);
      await waitFor("converged after the upgrade", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 60_000 });
      // A fresh context resolves the siblings; new writes replicate.
      const resolve = await c.req(kvPath(sk), { method: "PUT", body: "resolved", headers: { "X-Ring-Context": sib.json.context } });
      assert.equal(resolve.status, 200, resolve.text);
      assert.equal(resolve.json.siblings, 1);
      assert.equal((await c.req(kvPath("upgrade/new"), { method: "PUT", body: "new" })).status, 200);
      await waitFor("converged after new writes", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 60_000 });
      for (const n of (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(sk)}`)).json.replicas) {
        assert.equal((await c.req(kvPath(sk, `?node=${n}`))).text, "resolved");
      }
    } finally {
      await c.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
