// `node --import tsx bench/resize.mjs [shards]`: how long an empty cluster's resize takes,
// POST /v1/admin/cluster to `/v1/cluster` showing it done, in workerd on 127.0.0.1: 4 -> 7
// then 7 -> 3 (every phase: joining's catch-up of each moving shard, switching, leaving,
// done), at SHARDS=16384 by default. Bounded: each resize is given 10 minutes.
import { startCluster, sleep } from "../tests/integration/helpers.mjs";

const shards = process.argv[2] ?? "16384";
const c = await startCluster({ vars: { CLUSTER_SIZE: "4", SHARDS: shards } });
try {
  for (const to of [7, 3]) {
    const from = (await c.req("/v1/cluster")).json.size;
    const t0 = performance.now();
    const r = await c.req("/v1/admin/cluster", { method: "POST", body: JSON.stringify({ size: to }) });
    if (r.status !== 202) throw new Error(`POST ${to}: ${r.status} ${r.text}`);
    let s;
    for (;;) {
      s = (await c.req("/v1/cluster")).json;
      if (s.transition === null && s.size === to) break;
      if (performance.now() - t0 > 600_000) throw new Error(`resize to ${to} not done in 10 minutes`);
      await sleep(100);
    }
    console.log(`resize ${from} -> ${to}, SHARDS=${shards}, empty: ${((performance.now() - t0) / 1000).toFixed(1)} s (epoch ${s.epoch})`);
  }
} finally {
  await c.dispose();
}
