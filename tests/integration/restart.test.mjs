// Restarts and configuration: acknowledged writes survive a runtime restart and gossip
// resumes; a node started under a different cluster shape refuses to serve (503 with the
// reason); a bad configuration answers 503 everywhere.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startCluster, kvPath, waitFor } from "./helpers.mjs";

test("acknowledged writes survive a restart, and gossip resumes", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ringkv-restart-"));
  try {
    const vars = { CACHE_TTL_SECONDS: "0", GOSSIP_INTERVAL_MS: "1000" };
    let c = await startCluster({ vars, persistDir: dir });
    const acked = [];
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let i = w; i < 120; i += 8) {
          const key = `restart/${i}`;
          const r = await c.req(kvPath(key), { method: "PUT", body: `value-${i}` });
          assert.equal(r.status, 200);
          acked.push({ key, node: r.json.node, value: `value-${i}` });
        }
      }),
    );
    // Stop at once: most of these writes have not been gossiped yet.
    await c.dispose();
    c = await startCluster({ vars, persistDir: dir });
    for (const a of acked) {
      const r = await c.req(kvPath(a.key, `?node=${a.node}`));
      assert.equal(r.status, 200, `${a.key} at node ${a.node}`);
      assert.equal(r.text, a.value);
    }
    await waitFor("convergence after the restart", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 60_000 });
    for (const a of acked.slice(0, 30)) {
      const reps = (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(a.key)}`)).json.replicas;
      for (const n of reps) assert.equal((await c.req(kvPath(a.key, `?node=${n}`))).text, a.value);
    }
    // A second restart in the middle of gossip, then more writes: nothing is lost.
    await c.dispose();
    c = await startCluster({ vars, persistDir: dir });
    const w = await c.req(kvPath("restart/after"), { method: "PUT", body: "after" });
    assert.equal(w.status, 200);
    await waitFor("convergence", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 60_000 });
    const status = (await c.req("/v1/cluster")).json;
    assert.equal(status.nodes.reduce((n, x) => n + x.keys, 0), 121 * 3);

    // The cluster's shape is fixed: a different REPLICAS or SHARDS is refused with a reason.
    await c.dispose();
    c = await startCluster({ vars: { ...vars, REPLICAS: "4" }, persistDir: dir });
    const r = await c.req(kvPath("restart/1"));
    assert.equal(r.status, 503);
    assert.match(r.json.error, /replicas/);
    const cl = await c.req("/v1/cluster");
    assert.equal(cl.status, 503);
    assert.match(cl.json.error, /mismatch/);
    const p = await c.req(kvPath("restart/new"), { method: "PUT", body: "x" });
    assert.equal(p.status, 503);
    await c.dispose();
    c = await startCluster({ vars: { ...vars, SHARDS: "1024" }, persistDir: dir });
    assert.equal((await c.req(kvPath("restart/1"))).status, 503);
    await c.dispose();
    // Back to the right shape: everything is still there.
    c = await startCluster({ vars, persistDir: dir });
    assert.equal((await c.req(kvPath("restart/1"))).text, "value-1");
    await c.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a bad configuration answers 503 with the reason on every route", async () => {
  const configs = [{ REPLICAS: "9" }, { REPLICAS: "ALL" }, { CLUSTER_SIZE: "abc" }, { SHARDS: "0" }, { CACHE_TTL_SECONDS: "-1" }, { CLUSTER_SIZE: "2000" },
    { TOKEN_SECRET: "one two three" }, { FAULTS: "1", ENVIRONMENT: "production" }];
  for (const vars of configs) {
    const c = await startCluster({ vars });
    try {
      for (const [path, method] of [["/v1/kv/a", "GET"], ["/v1/kv/a", "PUT"], ["/v1/kv", "GET"], ["/v1/cluster", "GET"], ["/nope", "GET"]]) {
        const r = await c.req(path, { method, body: method === "PUT" ? "x" : undefined });
        assert.equal(r.status, 503, `${JSON.stringify(vars)} ${method} ${path}`);
        assert.match(r.json.error, new RegExp(Object.keys(vars)[0]));
        assert.match(r.json.error, /^bad configuration: /);
      }
    } finally {
      await c.dispose();
    }
  }
});
