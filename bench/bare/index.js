// The benchmark's baseline: a bare Durable Object Worker with ringkv's routing and none
// of its work. The Worker hashes the key to one of CLUSTER_SIZE Durable Objects (as
// ringkv routes a key to its first replica) and the Durable Object does exactly one
// SQLite statement per request: one read for GET, one write for PUT. No CRDT, no WASM,
// no gossip, no cache. `bench/run.mjs` runs it in Miniflare next to ringkv.
import { DurableObject } from "cloudflare:workers";

const KEY_BYTES_MAX = 1024;
const utf8 = new TextEncoder();

function json(status, body) {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

/** FNV-1a over the key's UTF-8 bytes: cheap and good enough to spread keys over nodes. */
function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export class BareNode extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value BLOB NOT NULL, content_type TEXT NOT NULL)`);
  }

  async fetch(request) {
    const key = request.headers.get("X-Bare-Key");
    if (request.method === "PUT") {
      const value = await request.arrayBuffer();
      this.sql.exec(
        `INSERT OR REPLACE INTO kv(key, value, content_type) VALUES (?, ?, ?)`,
        key,
        value,
        request.headers.get("Content-Type") ?? "",
      );
      return json(200, { key, node: request.headers.get("X-Bare-Node") });
    }
    const rows = this.sql.exec(`SELECT value, content_type FROM kv WHERE key = ?`, key).toArray();
    if (rows.length === 0) return json(404, { error: "not found" });
    return new Response(rows[0].value, { status: 200, headers: { "Content-Type": rows[0].content_type } });
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (!url.pathname.startsWith("/v1/kv/")) return json(404, { error: "not found" });
    if (request.method !== "GET" && request.method !== "PUT") return json(405, { error: "method not allowed" });
    let key;
    try {
      key = decodeURIComponent(url.pathname.slice("/v1/kv/".length));
    } catch {
      return json(400, { error: "bad key" });
    }
    const bytes = utf8.encode(key);
    if (bytes.length === 0) return json(400, { error: "bad key" });
    if (bytes.length > KEY_BYTES_MAX) return json(414, { error: "key too long" });
    const node = fnv1a(bytes) % Number(env.CLUSTER_SIZE ?? 8);
    const stub = env.NODE.get(env.NODE.idFromName(String(node)));
    const headers = new Headers(request.headers);
    headers.set("X-Bare-Key", key);
    headers.set("X-Bare-Node", String(node));
    return stub.fetch("https://node/", { method: request.method, headers, body: request.method === "PUT" ? request.body : null });
  },
};
