// The autoscale run of `npm run bench` (also alone: `node --import tsx bench/autoscale.mjs
// [--quick]`): offered load stepping up and down on a local cluster in workerd with short
// windows (AUTOSCALE=3-8, target 5 rps per node, a 3 s window, 10 s below the band before
// shrinking, a 5 s cool-down), sampling /v1/cluster twice a second. It prints and returns
// the size over time, the rate each node served (from the load generator's answers), and
// the time from the load crossing a threshold to the end of the transition it caused;
// it draws docs/autoscale-size.svg and docs/autoscale-rate.svg.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { startCluster, sleep } from "../tests/integration/helpers.mjs";
import { runLoad } from "../scripts/load.mjs";
import { chart, COLORS } from "../scripts/svg-chart.mjs";

const root = new URL("../", import.meta.url).pathname;
const TARGET = 5;
const VARS = {
  CLUSTER_SIZE: "3",
  REPLICAS: "3",
  SHARDS: "256",
  CACHE_TTL_SECONDS: "0",
  AUTOSCALE: "3-8",
  AUTOSCALE_TARGET_RPS: String(TARGET),
  AUTOSCALE_WINDOW_SECONDS: "3",
  AUTOSCALE_SHRINK_SECONDS: "10",
  AUTOSCALE_COOLDOWN_SECONDS: "5",
};

export async function benchAutoscale({ quick = false, log = console.log } = {}) {
  // Offered load, total requests per second: low, high (far above 1.25 x 5 per node at 3
  // nodes), in the band at 8 nodes, then none (below 0.5 x 5).
  const steps = quick
    ? [{ rps: 10, seconds: 8 }, { rps: 80, seconds: 20 }, { rps: 0, seconds: 30 }]
    : [{ rps: 10, seconds: 20 }, { rps: 80, seconds: 40 }, { rps: 30, seconds: 20 }, { rps: 0, seconds: 45 }];
  const c = await startCluster({ vars: VARS });
  const t0 = Date.now();
  const samples = [];
  const served = [];
  const changes = [];
  let sampling = true;
  let fiveXX = 0;
  const sampler = (async () => {
    let last;
    while (sampling) {
      const r = await c.req("/v1/cluster");
      if (r.status === 200) {
        const s = r.json;
        const t = (Date.now() - t0) / 1000;
        samples.push({ t, size: s.size, phase: s.transition?.phase ?? null, observed_rps: s.autoscale?.observed_rps ?? 0 });
        const d = s.autoscale?.last_decision;
        if (d && d.at !== last) {
          last = d.at;
          changes.push({ t, action: d.action, size: d.size, to: d.to, mean_rps: d.mean_rps });
        }
      }
      await sleep(500);
    }
  })();
  const marks = [];
  try {
    for (const step of steps) {
      marks.push({ t: (Date.now() - t0) / 1000, rps: step.rps });
      if (step.rps === 0) {
        await sleep(step.seconds * 1000);
        continue;
      }
      const base = (Date.now() - t0) / 1000;
      await runLoad({
        url: c.url,
        rps: step.rps,
        seconds: step.seconds,
        keys: 500,
        reads: 0.5,
        prefix: "bench-as",
        onSecond: (f) => {
          fiveXX += f.status_5xx;
          served.push({ t: base + f.t, offered: step.rps, achieved: f.achieved_rps, by_node: f.by_node, p99_ms: f.p99_ms });
        },
      });
    }
  } finally {
    sampling = false;
    await sampler;
    await c.dispose();
  }
  // From a step crossing a threshold to the end of the transition it caused.
  // The first transition's end, and the end of the last one before the next step (the size
  // the step settled at: a window measured while the load ramped may grow it in two steps).
  const reaction = (markIndex, bigger) => {
    const m = marks[markIndex];
    if (m === undefined) return null;
    const until = marks[markIndex + 1]?.t ?? Infinity;
    const before = samples.filter((s) => s.t <= m.t).at(-1)?.size ?? 3;
    const within = samples.filter((s) => s.t > m.t && s.t <= until && s.phase === null);
    const done = within.find((s) => (bigger ? s.size > before : s.size < before));
    if (done === undefined) return null;
    const settled = within.at(-1).size;
    const reached = within.find((s) => s.size === settled);
    return { from: before, to: done.size, seconds: +(done.t - m.t).toFixed(1), settled, settled_seconds: +(reached.t - m.t).toFixed(1) };
  };
  const grow = reaction(1, true);
  const shrink = reaction(steps.length - 1, false);
  const figures = { target_rps: TARGET, vars: VARS, steps, marks, samples, served, decisions: changes, grow, shrink, status_5xx: fiveXX };
  mkdirSync(join(root, "bench/out"), { recursive: true });
  writeFileSync(join(root, "bench/out/autoscale.json"), JSON.stringify(figures, null, 2) + "\n");
  drawFigures(figures, quick);
  log(`autoscale: grow ${JSON.stringify(grow)}, shrink ${JSON.stringify(shrink)}, 5xx ${fiveXX}`);
  return figures;
}

function drawFigures(f, quick) {
  const out = join(root, quick ? "bench/out" : "docs");
  mkdirSync(out, { recursive: true });
  const offered = [];
  for (const [i, m] of f.marks.entries()) {
    const end = f.marks[i + 1]?.t ?? f.samples.at(-1)?.t ?? m.t;
    offered.push([m.t, m.rps], [end, m.rps]);
  }
  const size = f.samples.map((s) => [s.t, s.size]);
  writeFileSync(
    join(out, "autoscale-size.svg"),
    chart({
      title: `Autoscale: cluster size under stepped load (AUTOSCALE=3-8, target ${f.target_rps} rps per node)`,
      xlabel: "seconds",
      ylabel: "nodes",
      series: [
        { name: "size (/v1/cluster)", points: size, markers: false },
        { name: "offered rps / 10", points: offered.map(([t, r]) => [t, r / 10]), dash: true, markers: false, color: COLORS[5] },
      ],
    }),
  );
  const nodes = [...new Set(f.served.flatMap((s) => Object.keys(s.by_node)))].sort((a, b) => Number(a) - Number(b));
  writeFileSync(
    join(out, "autoscale-rate.svg"),
    chart({
      title: "Requests served per node per second (grow above 1.25 x target)",
      xlabel: "seconds",
      ylabel: "requests / s",
      series: [
        ...nodes.map((n, i) => ({ name: `node ${n}`, points: f.served.map((s) => [s.t, s.by_node[n] ?? 0]), markers: false, color: COLORS[i % COLORS.length] })),
        { name: "1.25 x target", points: [[0, 1.25 * f.target_rps], [f.samples.at(-1)?.t ?? 1, 1.25 * f.target_rps]], dash: true, markers: false, color: "#000" },
      ],
    }),
  );
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.env.WRANGLER_SEND_METRICS = "false";
  const f = await benchAutoscale({ quick: process.argv.includes("--quick") });
  if (f.grow === null || f.shrink === null) process.exit(1);
}
