// Integration harness: the Worker bundled by wrangler (the same bundle `wrangler deploy`
// uploads, which doubles as the bundling test), run in workerd through Miniflare on
// 127.0.0.1 with SQLite-backed Durable Objects persisted to a temporary directory.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare } from "miniflare";

export const root = new URL("../../", import.meta.url).pathname;
const distDir = join(root, "dist");
const scriptPath = join(distDir, "index.js");

function newestMtime(dir) {
  let newest = 0;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = statSync(path);
    newest = Math.max(newest, st.isDirectory() ? newestMtime(path) : st.mtimeMs);
  }
  return newest;
}

/** Bundles the Worker with wrangler unless dist/ is newer than every source. */
export function buildBundle() {
  const sources = Math.max(
    newestMtime(join(root, "worker")),
    statSync(join(root, "build/ringkv.wasm")).mtimeMs,
    statSync(join(root, "wrangler.toml")).mtimeMs,
  );
  if (existsSync(scriptPath) && statSync(scriptPath).mtimeMs > sources) return scriptPath;
  execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", "dist"], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  });
  return scriptPath;
}

export const DEFAULT_VARS = {
  CLUSTER_SIZE: "8",
  REPLICAS: "3",
  SHARDS: "16384",
  GOSSIP_INTERVAL_MS: "200",
  CACHE_TTL_SECONDS: "5",
  MAX_VALUE_BYTES: "1048576",
  MAX_CLOCK_SKEW_MS: "60000",
  TOMBSTONE_GRACE_SECONDS: "3600",
  MAX_SIBLINGS: "32",
  FANOUT: "8",
  TOKEN_SECRET: "integration-test-secret",
};

/** Starts a cluster. `persistDir` reuses earlier state (a restart); `vars` override. */
export async function startCluster({ vars = {}, persistDir } = {}) {
  buildBundle();
  const dir = persistDir ?? mkdtempSync(join(tmpdir(), "ringkv-it-"));
  const bindings = { ...DEFAULT_VARS, ...vars };
  for (const [k, v] of Object.entries(bindings)) if (v === undefined) delete bindings[k];
  const mf = new Miniflare({
    scriptPath,
    modules: true,
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    compatibilityDate: "2026-04-01",
    compatibilityFlags: ["nodejs_compat"],
    durableObjects: { NODE: { className: "RingNode", useSQLite: true }, CONTROL: { className: "RingControl", useSQLite: true } },
    durableObjectsPersist: join(dir, "do"),
    cachePersist: join(dir, "cache"),
    bindings,
    host: "127.0.0.1",
    port: 0,
  });
  const url = (await mf.ready).toString().replace(/\/$/, "");
  const cluster = {
    mf,
    url,
    dir,
    vars: bindings,
    /** fetch relative to the cluster; returns { status, headers, text, json, bytes }. */
    async req(path, init = {}) {
      let response;
      try {
        response = await fetch(url + path, init);
      } catch (err) {
        // workerd now and then closes an idle keep-alive connection as the next request goes
        // out on it (seen while Durable Objects start during a resize; curl retries such a
        // GET by itself): a GET is sent again once, on a new connection.
        const method = (init.method ?? "GET").toUpperCase();
        if (method !== "GET" || err?.cause?.code !== "UND_ERR_SOCKET") throw err;
        response = await fetch(url + path, init);
      }
      const bytes = new Uint8Array(await response.arrayBuffer());
      const text = new TextDecoder().decode(bytes);
      let json;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: response.status, headers: response.headers, bytes, text, json };
    },
    async dispose({ keep = false } = {}) {
      await mf.dispose();
      if (!keep && persistDir === undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
  return cluster;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls fn until it returns a truthy value or the time runs out (then throws). */
export async function waitFor(what, fn, { timeoutMs = 60_000, everyMs = 250 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** The key path for a key text (every byte that needs it percent-encoded, slashes kept). */
export function kvPath(key, query = "") {
  return `/v1/kv/${key.split("/").map(encodeURIComponent).join("/")}${query}`;
}

/** Compares (hlc, node) pairs as the SPEC orders versions. */
export function compareVersion(a, b) {
  const ha = BigInt(a.hlc);
  const hb = BigInt(b.hlc);
  if (ha !== hb) return ha < hb ? -1 : 1;
  return Number(a.node) - Number(b.node);
}

/** A seeded xorshift32: rng(seed)(n) is a whole number below n, the same on every run. */
export function rng(seed) {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

/** A key's entry in node `node`'s admin dump (undefined when it holds none), `req` being a
 *  cluster's request function. */
export async function dumpEntry(req, node, key) {
  let cursor = null;
  for (let page = 0; page < 200; page++) {
    const r = await req(`/v1/admin/nodes/${node}/keys${cursor ? `?cursor=${cursor}` : ""}`);
    const entry = r.json.keys.find((k) => k.key === key);
    if (entry) return entry;
    cursor = r.json.cursor;
    if (cursor === null) return undefined;
  }
  return undefined;
}

/** The core's protocol version, as its header states it (a peer message in a later one is
 *  refused). */
export const PROTOCOL_VERSION = Number(/#define RINGKV_PROTOCOL_VERSION (\d+)u/.exec(readFileSync(new URL("../../wasm/include/ringkv.h", import.meta.url), "utf8"))[1]);
