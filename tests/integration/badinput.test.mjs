// Bad input: malformed paths, percent-encoding, methods, headers, bodies, tokens and
// queries get 4xx, never 5xx, and leave the stored state unchanged. Then auth, on and off.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor, rng } from "./helpers.mjs";

async function snapshot(c, keys) {
  const out = [];
  for (const k of keys) {
    const reps = (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(k)}`)).json.replicas;
    for (const n of reps) out.push(JSON.stringify((await c.req(kvPath(k, `?siblings=1&node=${n}`))).json));
  }
  const cluster = (await c.req("/v1/cluster")).json;
  out.push(JSON.stringify(cluster.nodes.map((n) => [n.id, n.keys, n.digest])));
  return out;
}

test("malformed requests get 4xx, never 5xx, and change nothing", async () => {
  const c = await startCluster({ vars: { MAX_VALUE_BYTES: "1000", CACHE_TTL_SECONDS: "0" } });
  try {
    const keys = Array.from({ length: 12 }, (_, i) => `bad/${i}`);
    const tokens = [];
    for (const k of keys) {
      const r = await c.req(kvPath(k), { method: "PUT", body: `v-${k}` });
      assert.equal(r.status, 200);
      tokens.push(r.json.context);
    }
    await waitFor("converged", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 30_000 });
    const before = await snapshot(c, keys);

    const cases = [];
    const add = (path, init = {}, expect) => cases.push({ path, init, expect });
    // Paths and percent-encoding.
    for (const p of ["/v1/kv/%", "/v1/kv/%G1", "/v1/kv/%C3%28", "/v1/kv/%ED%A0%80", "/v1/kv/%FF", "/v1/kv/%E2%82", "/v1/kv/", "/v1/kv/bad%2", "/v1/kv/%%30"]) {
      add(p, { method: "PUT", body: "x" }, 400);
      add(p, { method: "DELETE" }, 400);
      add(p, {}, 400);
    }
    add("/v1/kv/" + "x".repeat(1025), { method: "PUT", body: "x" }, 414);
    add("/v1/kv/" + "%C3%BC".repeat(513), { method: "PUT", body: "x" }, 414);
    add("/v1/kv/" + "y".repeat(5000), {}, 414);
    // Queries.
    for (const q of ["?node=", "?node=1.5", "?node=1e1", "?node=%20", "?node=-0", "?node=08x", "?node=99999", "?siblings=2", "?siblings=yes"]) {
      add(kvPath("bad/0", q), { method: "PUT", body: "x" }, 400);
      add(kvPath("bad/0", q), {}, 400);
    }
    // Methods.
    // (Methods workerd itself does not know, e.g. FOO, get its own 501 before any Worker runs.)
    for (const m of ["POST", "PATCH", "HEAD", "OPTIONS", "PROPFIND"]) add(kvPath("bad/1"), { method: m, body: m === "HEAD" || m === "OPTIONS" ? undefined : "x" }, 405);
    // Bodies and headers.
    add(kvPath("bad/2"), { method: "PUT", body: new Uint8Array(1001) }, 413);
    add(kvPath("bad/2"), {
      method: "PUT",
      duplex: "half",
      body: new ReadableStream({
        pull(ctrl) {
          ctrl.enqueue(new Uint8Array(600));
          if (++this.n >= 2) ctrl.close();
        },
        n: 0,
      }),
    }, 413);
    add(kvPath("bad/2"), { method: "PUT", body: "x", headers: { "Content-Type": "t/" + "x".repeat(300) } }, 413);
    // Tokens: garbage, tampered, another key's, on PUT and DELETE.
    const rand = rng(42);
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. %";
    for (let i = 0; i < 40; i++) {
      const len = rand(120);
      let t = "";
      for (let j = 0; j < len; j++) t += alphabet[rand(alphabet.length)];
      if (t.trim() === "") t = "@";
      add(kvPath(keys[i % keys.length]), { method: i % 2 ? "PUT" : "DELETE", body: i % 2 ? "evil" : undefined, headers: { "X-Ring-Context": t } }, 400);
    }
    for (let i = 0; i < keys.length; i++) {
      const t = tokens[i];
      const pos = rand(t.length);
      const flipped = t.slice(0, pos) + (t[pos] === "Q" ? "R" : "Q") + t.slice(pos + 1);
      add(kvPath(keys[i]), { method: "PUT", body: "evil", headers: { "X-Ring-Context": flipped } }, 400);
      add(kvPath(keys[i]), { method: "PUT", body: "evil", headers: { "X-Ring-Context": tokens[(i + 1) % keys.length] } }, 400);
      add(kvPath(keys[i]), { method: "DELETE", headers: { "X-Ring-Context": tokens[(i + 1) % keys.length] } }, 400);
    }
    // Listing, placement, admin.
    for (const q of ["?limit=-1", "?limit=1.5", "?limit=99999", "?cursor=%%%", "?cursor=a", "?cursor=" + "A".repeat(2000), "?prefix=" + "p".repeat(1025)]) {
      add("/v1/kv" + q, {}, 400);
    }
    add("/v1/cluster/placement?key=" + "k".repeat(1025), {}, 414);
    for (const p of ["/v1/admin/nodes/abc/keys", "/v1/admin/nodes/-1/keys", "/v1/admin/nodes/1e3/keys", "/v1/admin/nodes/1024/keys", "/v1/admin/nodes//keys", "/v1/admin/nodes/0/keys?cursor=*"]) {
      add(p, {}, 400);
    }
    for (const p of ["/internal/write", "/internal/push", "/v1", "/v1/kvx", "/v1/admin/nodes/0", "/v1/admin/faults"]) add(p, { method: "POST", body: "x" }, 404);
    // Random paths under /v1/kv with a bad token: whatever the key, no write may happen.
    const chars = ["a", "/", "%", "%2F", "%FF", "%C3", "%BC", "ü", "😀", "?", "#", "..", ".", "%00", "%25", " ", "\\"];
    for (let i = 0; i < 60; i++) {
      let p = "";
      for (let j = 0, n = 1 + rand(12); j < n; j++) p += chars[rand(chars.length)];
      add("/v1/kv/" + p, { method: ["PUT", "DELETE"][rand(2)], body: undefined, headers: { "X-Ring-Context": "%%" } }, undefined);
      add("/v1/kv/" + p, {}, undefined);
    }

    for (const { path, init, expect } of cases) {
      let r;
      try {
        r = await c.req(path, init);
      } catch (err) {
        // The client itself refused the request (an invalid URL): nothing reached us.
        if (/Invalid URL|invalid/i.test(String(err))) continue;
        throw err;
      }
      const what = `${init.method ?? "GET"} ${path.slice(0, 80)}`;
      assert.ok(r.status < 500, `${what}: ${r.status} ${r.text}`);
      if (expect !== undefined) assert.equal(r.status, expect, `${what}: ${r.text}`);
      if (init.method === "PUT" || init.method === "DELETE") assert.ok(r.status >= 400, `${what} must not be accepted`);
      if (r.status >= 400 && init.method !== "HEAD") assert.equal(typeof r.json?.error, "string", `${what}: JSON error`);
    }
    assert.deepEqual(await snapshot(c, keys), before, "state unchanged");
  } finally {
    await c.dispose();
  }
});

test("auth: API_TOKEN guards the data API, ADMIN_TOKEN the admin API; 401 comes first", async () => {
  const c = await startCluster({ vars: { API_TOKEN: "api-secret", ADMIN_TOKEN: "admin-secret" } });
  try {
    const api = { Authorization: "Bearer api-secret" };
    const admin = { Authorization: "Bearer admin-secret" };
    assert.equal((await c.req(kvPath("auth/k"), { method: "PUT", body: "x" })).status, 401);
    assert.equal((await c.req(kvPath("auth/k"), { method: "PUT", body: "x", headers: { Authorization: "Bearer wrong" } })).status, 401);
    assert.equal((await c.req(kvPath("auth/k"), { method: "PUT", body: "x", headers: { Authorization: "api-secret" } })).status, 401);
    assert.equal((await c.req(kvPath("auth/k"), { method: "PATCH", body: "x" })).status, 401, "401 before 405");
    assert.equal((await c.req("/v1/kv/%FF", {})).status, 401, "401 before 400");
    assert.equal((await c.req("/v1/cluster")).status, 401);
    const w = await c.req(kvPath("auth/k"), { method: "PUT", body: "x", headers: api });
    assert.equal(w.status, 200);
    assert.equal((await c.req(kvPath("auth/k"), { headers: api })).text, "x");
    assert.equal((await c.req(kvPath("auth/k"), { method: "PATCH", headers: api })).status, 405);
    assert.equal((await c.req("/v1/cluster", { headers: api })).status, 200);
    assert.equal((await c.req(kvPath("auth/k"), { headers: admin })).status, 401, "the admin token is not the API token");
    assert.equal((await c.req("/v1/admin/nodes/0/keys", { headers: api })).status, 401);
    assert.equal((await c.req("/v1/admin/nodes/0/keys")).status, 401);
    assert.equal((await c.req("/v1/admin/nodes/0/keys", { headers: admin })).status, 200);
  } finally {
    await c.dispose();
  }
  // Open when unset (with a warning in the log).
  const open = await startCluster({ vars: { API_TOKEN: undefined, ADMIN_TOKEN: undefined } });
  try {
    assert.equal((await open.req(kvPath("auth/open"), { method: "PUT", body: "x" })).status, 200);
    assert.equal((await open.req("/v1/admin/nodes/0/keys")).status, 200);
    // A bearer header is simply ignored when no token is configured.
    assert.equal((await open.req(kvPath("auth/open"), { headers: { Authorization: "Bearer anything" } })).status, 200);
  } finally {
    await open.dispose();
  }
});
