// Shared by the benchmark (bench/run.mjs) and the chaos scenario (scripts/chaos.mjs): a
// bounded HTTP client, statistics, the cluster's status, and the bare baseline Worker in
// Miniflare. Every request and every wait here has a time limit.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare } from "miniflare";

export const root = new URL("../", import.meta.url).pathname;

const REQUEST_TIMEOUT_MS = 15_000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One HTTP request, bounded by `timeoutMs`; never throws for an HTTP status. Returns
 *  { status, headers, bytes, text, json, ms } or, on a network error or timeout,
 *  { status: 0, error, ms }. */
export async function request(url, { method = "GET", body, headers, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
  const start = performance.now();
  try {
    const response = await fetch(url, { method, body, headers, signal: AbortSignal.timeout(timeoutMs) });
    const bytes = new Uint8Array(await response.arrayBuffer());
    const ms = performance.now() - start;
    let text;
    let json;
    const result = { status: response.status, headers: response.headers, bytes, ms };
    Object.defineProperty(result, "text", { get: () => (text ??= new TextDecoder().decode(bytes)) });
    Object.defineProperty(result, "json", {
      get: () => {
        if (json === undefined) {
          try {
            json = JSON.parse(result.text);
          } catch {
            json = null;
          }
        }
        return json;
      },
    });
    return result;
  } catch (err) {
    return { status: 0, error: err?.cause?.code ?? err?.name ?? String(err), ms: performance.now() - start };
  }
}

/** The key path for a key text (slashes kept, everything else percent-encoded). */
export function kvPath(key, query = "") {
  return `/v1/kv/${key.split("/").map(encodeURIComponent).join("/")}${query}`;
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p + 0.5))];
}

export function median(values) {
  const s = [...values].filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** GET /v1/cluster, or undefined when it failed. */
export async function clusterStatus(url, timeoutMs = 10_000) {
  const r = await request(`${url}/v1/cluster`, { timeoutMs });
  return r.status === 200 ? r.json : undefined;
}

/** Sum of one gossip counter over the nodes of a /v1/cluster answer. */
export function gossipTotal(status, counter) {
  return status.nodes.reduce((sum, n) => sum + Number(n.gossip?.[counter] ?? 0), 0);
}

/** Polls /v1/cluster until `converged`; returns { status, ms } (ms since the call) or
 *  throws after timeoutMs. */
export async function waitConverged(url, { timeoutMs = 60_000, everyMs = 50 } = {}) {
  const start = performance.now();
  const deadline = start + timeoutMs;
  for (;;) {
    const status = await clusterStatus(url);
    if (status?.converged) return { status, ms: performance.now() - start };
    if (performance.now() > deadline) {
      throw new Error(`cluster at ${url} not converged after ${timeoutMs} ms`);
    }
    await sleep(everyMs);
  }
}

/** Runs `worker(i)` for i in 0..count-1 with at most `concurrency` running at once. */
export async function pool(count, concurrency, worker) {
  let next = 0;
  const results = new Array(count);
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= count) return;
        results[i] = await worker(i);
      }
    }),
  );
  return results;
}

/** The bare baseline (bench/bare/index.js) in Miniflare: routing by key hash to one of
 *  CLUSTER_SIZE SQLite Durable Objects, one SQL statement per request. */
export async function startBare({ clusterSize = 8 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "ringkv-bare-"));
  const mf = new Miniflare({
    scriptPath: join(root, "bench/bare/index.js"),
    modules: true,
    compatibilityDate: "2026-04-01",
    compatibilityFlags: ["nodejs_compat"],
    durableObjects: { NODE: { className: "BareNode", useSQLite: true } },
    durableObjectsPersist: join(dir, "do"),
    bindings: { CLUSTER_SIZE: String(clusterSize) },
    host: "127.0.0.1",
    port: 0,
  });
  const url = (await mf.ready).toString().replace(/\/$/, "");
  return {
    url,
    dir,
    async dispose() {
      await mf.dispose();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A random 64-byte value as a Uint8Array. */
export function randomValue(bytes = 64) {
  const v = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) v[i] = (Math.random() * 256) | 0;
  return v;
}
