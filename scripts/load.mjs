// A steady load on a running local cluster (`npm run load -- --rps R --seconds S`): PUTs and
// GETs over a key space at R requests a second for S seconds, printing each second the
// achieved rate, the status counts and the latency percentiles. Bounded: 127.0.0.1 (or
// localhost) only, at most --concurrency requests in flight (a request beyond it is
// skipped and counted), each with a 10 s time limit, and at most 10,000 rps for 3,600 s.
//
//   npm run load -- --rps 200 --seconds 30 [--url http://127.0.0.1:8787] [--keys 1000]
//                   [--reads 0.5] [--concurrency 64] [--token API_TOKEN]
import { pathToFileURL } from "node:url";

const LIMITS = { rps: 10_000, seconds: 3_600, concurrency: 1_024, keys: 1_000_000, timeoutMs: 10_000 };

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Runs the load; `onSecond` gets each second's figures. Resolves with the totals. */
export async function runLoad({ url = "http://127.0.0.1:8787", rps, seconds, keys = 1000, reads = 0.5, concurrency = 64, token, prefix = "load", onSecond = () => {} }) {
  const base = new URL(url);
  if (base.hostname !== "127.0.0.1") throw new Error(`load: ${base.hostname} is not 127.0.0.1: the load generator drives a local cluster only`);
  if (!(rps > 0 && rps <= LIMITS.rps)) throw new Error(`load: --rps must be in 1..${LIMITS.rps}`);
  if (!(seconds > 0 && seconds <= LIMITS.seconds)) throw new Error(`load: --seconds must be in 1..${LIMITS.seconds}`);
  if (!(Number.isInteger(keys) && keys >= 1 && keys <= LIMITS.keys)) throw new Error(`load: --keys must be an integer in 1..${LIMITS.keys}`);
  if (!(concurrency >= 1 && concurrency <= LIMITS.concurrency)) throw new Error(`load: --concurrency must be in 1..${LIMITS.concurrency}`);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const totals = { sent: 0, ok: 0, errors: 0, skipped: 0, status5xx: 0, latencies: [] };
  let inFlight = 0;
  let second = { sent: 0, ok: 0, errors: 0, skipped: 0, status5xx: 0, latencies: [], byNode: {} };
  const started = performance.now();
  const pending = new Set();
  const one = async (i) => {
    const key = `${prefix}/${i % keys}`;
    const read = Math.random() < reads;
    const t0 = performance.now();
    try {
      const r = await fetch(new URL(`/v1/kv/${encodeURIComponent(key)}`, base), {
        method: read ? "GET" : "PUT",
        body: read ? undefined : `v${i}`,
        headers,
        signal: AbortSignal.timeout(LIMITS.timeoutMs),
        redirect: "error",   // a redirect could lead elsewhere: 127.0.0.1 only
      });
      const text = await r.text();
      const ms = performance.now() - t0;
      // The node that served it (a GET's X-Ring-Node, a PUT's "node"): the load per node.
      let node = r.headers.get("X-Ring-Node");
      if (!read && r.status === 200) {
        try {
          node = String(JSON.parse(text).node);
        } catch {
          node = null;
        }
      }
      if (node !== null && node !== "") second.byNode[node] = (second.byNode[node] ?? 0) + 1;
      for (const s of [second, totals]) {
        s.latencies.push(ms);
        if (r.status >= 500) s.status5xx++;
        else s.ok++;
      }
    } catch {
      second.errors++;
      totals.errors++;
    }
  };
  const report = (t) => {
    const l = second.latencies.sort((a, b) => a - b);
    const figures = {
      t,
      achieved_rps: second.ok + second.status5xx,
      sent: second.sent,
      ok: second.ok,
      status_5xx: second.status5xx,
      errors: second.errors,
      skipped: second.skipped,
      p50_ms: +percentile(l, 50).toFixed(1),
      p95_ms: +percentile(l, 95).toFixed(1),
      p99_ms: +percentile(l, 99).toFixed(1),
      by_node: second.byNode,
    };
    onSecond(figures);
    second = { sent: 0, ok: 0, errors: 0, skipped: 0, status5xx: 0, latencies: [], byNode: {} };
  };
  let i = 0;
  for (let t = 1; t <= seconds; t++) {
    // The second's requests, spread evenly over it.
    const end = started + t * 1000;
    for (let k = 0; k < rps; k++) {
      const at = started + (t - 1) * 1000 + (k * 1000) / rps;
      const wait = at - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (inFlight >= concurrency) {
        second.skipped++;
        totals.skipped++;
        continue;
      }
      inFlight++;
      second.sent++;
      totals.sent++;
      const p = one(i++).finally(() => {
        inFlight--;
        pending.delete(p);
      });
      pending.add(p);
    }
    const rest = end - performance.now();
    if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    report(t);
  }
  await Promise.all(pending);
  const l = totals.latencies.sort((a, b) => a - b);
  return {
    seconds,
    sent: totals.sent,
    ok: totals.ok,
    status_5xx: totals.status5xx,
    errors: totals.errors,
    skipped: totals.skipped,
    achieved_rps: +((totals.ok + totals.status5xx) / seconds).toFixed(1),
    p50_ms: +percentile(l, 50).toFixed(1),
    p95_ms: +percentile(l, 95).toFixed(1),
    p99_ms: +percentile(l, 99).toFixed(1),
  };
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`load: ${a} needs a value`);
      return argv[++i];
    };
    if (a === "--rps") out.rps = Number(next());
    else if (a === "--seconds") out.seconds = Number(next());
    else if (a === "--url") out.url = next();
    else if (a === "--keys") out.keys = Number(next());
    else if (a === "--reads") out.reads = Number(next());
    else if (a === "--concurrency") out.concurrency = Number(next());
    else if (a === "--token") out.token = next();
    else throw new Error(`load: unknown argument ${a}`);
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    const args = parseArgs(process.argv.slice(2));
    const totals = await runLoad({ ...args, onSecond: (f) => console.log(JSON.stringify(f)) });
    console.log(JSON.stringify({ total: totals }));
  } catch (err) {
    console.error(err.message);
    process.exit(2);
  }
}
