// Seeding many keys straight into chosen replicas, as a peer would: registers made by a
// local instance of the core (OP_WRITE, as node `dotNode`), sent as gossip Pushes to each
// node's /internal/push through Miniflare's handle on the NODE namespace (internal routes
// are not reachable from outside). With REPLICAS within FANOUT a node relays nothing it
// learns, so a key given to some replicas only stays there until anti-entropy finds it.
// Used by repair.test.mjs and bench/run.mjs (the repair figure).
import { readFileSync } from "node:fs";
import { Core, Op } from "../../worker/core.ts";
import { decode, encode } from "../../worker/pb.ts";
import { root } from "./helpers.mjs";

const ENTRIES_PER_PUSH = 8192; // half of RINGKV_ENTRIES_MAX

/** A maker of registers for a cluster of `size` nodes with `shards` shards. */
export function registerMaker({ size, replicas, shards, dotNode = 0 }) {
  const core = new Core(new WebAssembly.Module(readFileSync(`${root}build/ringkv.wasm`)));
  core.call(Op.Init, {
    config: { clusterSize: size, replicas, shards, maxClockSkewMs: 60_000n, tombstoneGraceMs: 3_600_000n, maxSiblings: 32, fanout: 8 },
    node: { node: dotNode, clock: 0n, counter: 0n },
    shards: [],
  });
  return {
    /** An Entry (key and register with its value) for a first write of `value`. */
    entry(key, value) {
      const keyBytes = new TextEncoder().encode(key);
      const w = core.call(Op.Write, { nowMs: BigInt(Date.now()), key: keyBytes, value });
      const reg = decode("Register", w.meta);
      reg.siblings = reg.siblings.map((s) => ({ ...s, value }));
      return { key: keyBytes, register: reg };
    },
    /** The shards of keys (strings), in order. */
    shardsOf(keys) {
      const out = [];
      for (let i = 0; i < keys.length; i += ENTRIES_PER_PUSH) {
        const batch = keys.slice(i, i + ENTRIES_PER_PUSH).map((k) => new TextEncoder().encode(k));
        for (const p of core.call(Op.Place, { keys: batch, shards: [] }).placements) out.push(p.shard);
      }
      return out;
    },
  };
}

/** Sends `entries` to node `node` as Pushes from `from`; throws unless each is answered 200. */
export async function pushEntries(mf, node, from, entries) {
  const ns = await mf.getDurableObjectNamespace("NODE");
  const stub = ns.get(ns.idFromName(String(node)));
  for (let i = 0; i < entries.length; i += ENTRIES_PER_PUSH) {
    const body = encode("Push", { version: 2, from, entries: entries.slice(i, i + ENTRIES_PER_PUSH), speaks: 2 });
    const r = await stub.fetch("https://node/internal/push", { method: "POST", body, headers: { "X-Ring-Node-Id": String(node) } });
    const text = await r.text();
    if (r.status !== 200) throw new Error(`seeding node ${node}: ${r.status} ${text.slice(0, 200)}`);
  }
}

/** The cluster's total gossip bytes sent. */
export async function bytesSent(c) {
  const status = (await c.req("/v1/cluster")).json;
  return status.nodes.reduce((sum, n) => sum + (n.gossip?.bytes_sent ?? 0), 0);
}
