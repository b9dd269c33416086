// Draws the simulator's figures from sim/results.json (written by `build/sim --sweep`)
// as hand-written SVG, no dependencies: docs/sim-rounds.svg, docs/sim-bytes.svg,
// docs/sim-traffic.svg, docs/sim-keys.svg.
// Usage: node sim/plots.mjs [results.json] [out dir]
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../", import.meta.url).pathname;
const input = process.argv[2] ?? join(root, "sim/results.json");
const outDir = process.argv[3] ?? join(root, "docs");
const results = JSON.parse(readFileSync(input, "utf8"));

const W = 720;
const H = 400;
const M = { left: 72, right: 200, top: 44, bottom: 56 };
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f"];

const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function fmt(v) {
  if (v >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toPrecision(3)}k`;
  return `${+v.toPrecision(3)}`;
}

function linearTicks(lo, hi, count = 5) {
  const span = hi - lo || 1;
  const step0 = span / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

/** A line chart. x: {log2?}, y: {log10?}; series: [{name, points: [[x, y]], dash?}];
 *  band: {name, lo: [[x, y]], hi: [[x, y]]} drawn under the lines. */
function chart({ title, xlabel, ylabel, xlog2 = false, ylog = false, series, band, yMin }) {
  const all = series.flatMap((s) => s.points).concat(band ? [...band.lo, ...band.hi] : []);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]).filter((y) => !ylog || y > 0);
  const tx = (x) => (xlog2 ? Math.log2(x) : x);
  const ty = (y) => (ylog ? Math.log10(Math.max(y, 1e-9)) : y);
  let x0 = tx(Math.min(...xs));
  let x1 = tx(Math.max(...xs));
  let y0 = ylog ? Math.floor(ty(Math.min(...ys))) : Math.min(yMin ?? 0, ...ys);
  let y1 = ylog ? Math.ceil(ty(Math.max(...ys))) : Math.max(...ys) * 1.08;
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const px = (x) => M.left + ((tx(x) - x0) / (x1 - x0)) * pw;
  const py = (y) => M.top + ph - ((ty(y) - y0) / (y1 - y0)) * ph;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="12" y="24" font-size="14" font-weight="bold">${esc(title)}</text>`);
  // Grid and ticks.
  const xticks = xlog2
    ? Array.from({ length: Math.round(x1 - x0) + 1 }, (_, i) => 2 ** (x0 + i))
    : linearTicks(x0, x1).filter((t) => t >= x0 && t <= x1);
  for (const t of xticks) {
    const x = px(t);
    out.push(`<line x1="${x}" y1="${M.top}" x2="${x}" y2="${M.top + ph}" stroke="#eee"/>`);
    out.push(`<text x="${x}" y="${M.top + ph + 18}" text-anchor="middle">${xlog2 ? String(t) : fmt(t)}</text>`);
  }
  const yticks = ylog
    ? Array.from({ length: y1 - y0 + 1 }, (_, i) => 10 ** (y0 + i))
    : linearTicks(y0, y1);
  for (const t of yticks) {
    const y = py(t);
    if (y < M.top - 0.5 || y > M.top + ph + 0.5) continue;
    out.push(`<line x1="${M.left}" y1="${y}" x2="${M.left + pw}" y2="${y}" stroke="#eee"/>`);
    out.push(`<text x="${M.left - 8}" y="${y + 4}" text-anchor="end">${fmt(t)}</text>`);
  }
  out.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${M.left + pw / 2}" y="${H - 14}" text-anchor="middle">${esc(xlabel)}</text>`);
  out.push(`<text transform="translate(18 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(ylabel)}</text>`);
  let legendY = M.top + 8;
  const legend = (color, name, dash, fill) => {
    const lx = M.left + pw + 14;
    if (fill) out.push(`<rect x="${lx}" y="${legendY - 6}" width="22" height="10" fill="${color}" opacity="0.25"/>`);
    else out.push(`<line x1="${lx}" y1="${legendY}" x2="${lx + 22}" y2="${legendY}" stroke="${color}" stroke-width="2"${dash ? ' stroke-dasharray="5 4"' : ""}/>`);
    out.push(`<text x="${lx + 28}" y="${legendY + 4}">${esc(name)}</text>`);
    legendY += 20;
  };
  if (band) {
    const pts = band.hi.map(([x, y]) => `${px(x)},${py(y)}`).concat(
      band.lo.slice().reverse().map(([x, y]) => `${px(x)},${py(y)}`),
    );
    out.push(`<polygon points="${pts.join(" ")}" fill="${band.color ?? COLORS[0]}" opacity="0.25" stroke="none"/>`);
    legend(band.color ?? COLORS[0], band.name, false, true);
  }
  series.forEach((s, i) => {
    const color = s.color ?? COLORS[i % COLORS.length];
    const pts = s.points.filter(([, y]) => !ylog || y > 0).map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`);
    out.push(`<polyline points="${pts.join(" ")}" fill="none" stroke="${color}" stroke-width="2"${s.dash ? ' stroke-dasharray="5 4"' : ""}/>`);
    if (s.markers !== false && s.points.length <= 40) {
      for (const p of pts) {
        const [x, y] = p.split(",");
        out.push(`<circle cx="${x}" cy="${y}" r="3" fill="${color}"/>`);
      }
    }
    legend(color, s.name, s.dash);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

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
