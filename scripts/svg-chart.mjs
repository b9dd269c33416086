// A line chart as hand-written SVG, no dependencies (the simulator's figures,
// sim/plots.mjs, and the benchmark's autoscale run, bench/autoscale.mjs).
const W = 720;
const H = 400;
const M = { left: 72, right: 200, top: 44, bottom: 56 };
export const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f"];

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
export function chart({ title, xlabel, ylabel, xlog2 = false, ylog = false, series, band, yMin }) {
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

