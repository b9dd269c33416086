// Autoscaling from measured load, in workerd over HTTP (SPEC: AUTOSCALE; /v1/cluster's
// autoscale field). With short windows set through configuration (target 4 rps per node,
// a 3 s window, 6 s below the band before shrinking, a 4 s cool-down), steady load from
// the load generator (scripts/load.mjs) well above the target grows the cluster from 3
// nodes; idleness then shrinks it back to MIN. Throughout: no 5xx, every acknowledged
// PUT reads back at the end as its last value (the resize invariants), and each decision
// shows in /v1/cluster with its inputs. An admin size outside MIN..MAX is 400.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startCluster, waitFor, kvPath } from "./helpers.mjs";
import { runLoad } from "../../scripts/load.mjs";

async function status(c) {
  const r = await c.req("/v1/cluster");
  assert.equal(r.status, 200, r.text);
  return r.json;
}

test("steady load above the target grows the cluster; idleness shrinks it; decisions are shown", { timeout: 240_000 }, async () => {
  const vars = {
    CLUSTER_SIZE: "3",
    REPLICAS: "3",
    SHARDS: "256",
    CACHE_TTL_SECONDS: "0",
    AUTOSCALE: "3-6",
    AUTOSCALE_TARGET_RPS: "4",
    AUTOSCALE_WINDOW_SECONDS: "3",
    AUTOSCALE_SHRINK_SECONDS: "6",
    AUTOSCALE_COOLDOWN_SECONDS: "4",
  };
  const c = await startCluster({ vars });
  try {
    const s0 = await status(c);
    assert.equal(s0.size, 3);
    assert.deepEqual([s0.autoscale.min, s0.autoscale.max, s0.autoscale.target_rps], [3, 6, 4]);
    // Out of MIN..MAX: 400, nothing starts.
    for (const size of [2, 7]) {
      const r = await c.req("/v1/admin/cluster", { method: "POST", body: JSON.stringify({ size }) });
      assert.equal(r.status, 400, r.text);
    }
    // Keys written first, kept to check after both resizes.
    const written = new Map();
    for (let i = 0; i < 40; i++) {
      const key = `as/${i}`;
      const r = await c.req(kvPath(key), { method: "PUT", body: `first-${i}` });
      assert.equal(r.status, 200, r.text);
      written.set(key, `first-${i}`);
    }
    // About 40 rps over 3 nodes (each sees its share of the replicas' requests): far above
    // 1.25 x 4 per node. The cluster grows to MAX (ceil(3 x mean / 4) > 6).
    let fiveXX = 0;
    const grown = (async () => {
      const t0 = Date.now();
      const s = await waitFor("the cluster grown by autoscale", async () => {
        const s = await status(c);
        return s.size > 3 && s.transition === null ? s : undefined;
      }, { timeoutMs: 90_000, everyMs: 500 });
      return { s, ms: Date.now() - t0 };
    })();
    const load = await runLoad({ url: c.url, rps: 40, seconds: 25, keys: 200, reads: 0.5, prefix: "as-load", onSecond: (f) => (fiveXX += f.status_5xx) });
    const { s: big, ms } = await grown;
    console.log(`# autoscale grew 3 -> ${big.size} in ${ms} ms under ${load.achieved_rps} rps (p50 ${load.p50_ms} ms, p99 ${load.p99_ms} ms)`);
    assert.equal(fiveXX, 0, "no 5xx under load while resizing");
    assert.equal(load.status_5xx, 0);
    assert.ok(big.size >= 4 && big.size <= 6, `size ${big.size}`);
    const grow = big.autoscale.last_decision;
    assert.ok(grow !== null, JSON.stringify(big.autoscale));
    // The last decision logged after the growth is the transition or the cool-down, or the
    // growth itself: each names its inputs.
    assert.ok(["grow", "transition", "cooldown", "hold", "below"].includes(grow.action), JSON.stringify(grow));
    assert.equal(typeof grow.mean_rps, "number");
    // Idle now: below 0.5 x target for 6 s after the cool-down, so it shrinks to MIN.
    const small = await waitFor("the cluster shrunk by autoscale", async () => {
      const s = await status(c);
      return s.size === 3 && s.transition === null ? s : undefined;
    }, { timeoutMs: 120_000, everyMs: 1000 });
    assert.equal(small.size, 3);
    assert.ok(small.autoscale.observed_rps < 2, JSON.stringify(small.autoscale));
    // Every value written before reads back as written; the load's keys read 200.
    for (const [key, value] of written) {
      const r = await c.req(kvPath(key));
      assert.equal(r.status, 200, `${key}: ${r.text}`);
      assert.equal(r.text, value);
    }
    await waitFor("converged", async () => (await status(c)).converged, { timeoutMs: 60_000 });
    const end = await status(c);
    assert.equal(end.nodes.length, 3);
  } finally {
    await c.dispose();
  }
});
