// Draws the simulator's figures from sim/results.json (written by `build/sim --sweep`)
// as hand-written SVG, no dependencies: docs/sim-rounds.svg, docs/sim-bytes.svg,
// docs/sim-traffic.svg, docs/sim-keys.svg.
// Usage: node sim/plots.mjs [results.json] [out dir]
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chart, COLORS } from "../scripts/svg-chart.mjs";

const root = new URL("../", import.meta.url).pathname;
const input = process.argv[2] ?? join(root, "sim/results.json");
const outDir = process.argv[3] ?? join(root, "docs");
const results = JSON.parse(readFileSync(input, "utf8"));

const sweep = results.sweep.rows;
const r3 = sweep.filter((r) => r.replicas === 3);
const rN = sweep.filter((r) => r.replicas === r.nodes);
const rec = results.sweep_old?.rows ?? [];
const rec3 = rec.filter((r) => r.replicas === 3);
const recN = rec.filter((r) => r.replicas === r.nodes);
const loss = `${Math.round((results.loss ?? 0.1) * 100)}% loss`;
const seeds = results.seeds > 1 ? `, worst of ${results.seeds} seeds` : "";

mkdirSync(outDir, { recursive: true });
const roundsSeries = [
  { name: rec.length ? "R = 3, worker policy" : "R = 3", points: r3.map((r) => [r.nodes, r.rounds_to_converge]), color: COLORS[0] },
  { name: rec.length ? "R = N, worker policy" : "R = N", points: rN.map((r) => [r.nodes, r.rounds_to_converge]), color: COLORS[1] },
];
if (rec.length > 0) {
  roundsSeries.push(
    { name: "R = 3, old worker policy", points: rec3.map((r) => [r.nodes, r.rounds_to_converge]), color: COLORS[2], dash: true },
    { name: "R = N, old worker policy", points: recN.map((r) => [r.nodes, r.rounds_to_converge]), color: COLORS[3], dash: true },
  );
}
roundsSeries.push({ name: "target log2(N)+3", points: r3.map((r) => [r.nodes, r.target_rounds]), dash: true, color: "#7f7f7f", markers: false });
const figures = {
  "sim-rounds.svg": chart({
    title: `Rounds to converge after a burst of writes (${loss}${seeds})`,
    xlabel: "nodes (N)",
    ylabel: "gossip rounds",
    xlog2: true,
    series: roundsSeries,
  }),
  "sim-bytes.svg": chart({
    title: `Gossip bytes per unique update (${loss})`,
    xlabel: "nodes (N)",
    ylabel: "bytes per update",
    xlog2: true,
    ylog: true,
    series: [
      { name: "R = 3", points: r3.map((r) => [r.nodes, r.bytes_per_update]), color: COLORS[0] },
      { name: "R = 3 optimum", points: r3.map((r) => [r.nodes, r.optimum_bytes_per_update]), dash: true, color: COLORS[0], markers: false },
      { name: "R = N", points: rN.map((r) => [r.nodes, r.bytes_per_update]), color: COLORS[1] },
      { name: "R = N optimum", points: rN.map((r) => [r.nodes, r.optimum_bytes_per_update]), dash: true, color: COLORS[1], markers: false },
    ],
  }),
};
if (results.traffic) {
  const t = results.traffic;
  figures["sim-traffic.svg"] = chart({
    title: `Gossip traffic, N=${t.nodes} R=${t.replicas}: ${t.writes} writes in ${t.write_rounds} rounds, then idle`,
    xlabel: "round",
    ylabel: "bytes sent in the round (log)",
    ylog: true,
    series: [{ name: "all gossip", points: t.bytes_per_round.map((b, i) => [i, b]), markers: false }],
  });
}
if (results.keys_per_node) {
  const k = results.keys_per_node;
  figures["sim-keys.svg"] = chart({
    title: `Live keys per node, N=${k.nodes} R=${k.replicas}, ${k.writes_per_round} new keys per round`,
    xlabel: "round",
    ylabel: "live keys stored",
    band: { name: "min..max over nodes", lo: k.min.map((v, i) => [i, v]), hi: k.max.map((v, i) => [i, v]) },
    series: [{ name: "mean", points: k.mean.map((v, i) => [i, v]), markers: false }],
  });
}
for (const [name, svg] of Object.entries(figures)) {
  writeFileSync(join(outDir, name), svg);
  console.log(`wrote ${join(outDir, name)}`);
}
