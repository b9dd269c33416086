// The ring as every node and Worker isolate keeps a copy of it: RingControl's record of
// the cluster's size and transitions (wasm/ringkv.proto, Ring), the cluster id tokens are
// bound to, and the generated token secret when TOKEN_SECRET is unset. RingControl is
// never on the request path: a node asks it once (it has no ring persisted) and answers
// the Worker's /internal/ring; every node reply carries the ring's header, so a Worker
// sees a newer epoch and fetches it again.

/** The Ring message: phase 0 = no transition. */
export interface Ring {
  epoch: number;
  size: number;
  from: number;
  to: number;
  phase: number;
  nodeIdsMax: number;
}

/** What a node hands the Worker (and RingControl hands a node). */
export interface RingView {
  ring: Ring;
  clusterId: Uint8Array;
  /** The generated secret, when TOKEN_SECRET is unset. */
  secret: Uint8Array | undefined;
}

/** Header carrying the sender's ring on every Worker->node request and node reply. */
export const RING_HEADER = "X-Ring-Ring";
/** Header on a node's 421: the key was placed on an older ring than the node's. */
export const STALE_RING_HEADER = "X-Ring-Stale-Ring";
/** Header on /internal/ring: the Worker needs the generated secret (TOKEN_SECRET unset). */
export const NEED_SECRET_HEADER = "X-Ring-Need-Secret";

export function ringHeader(r: Ring): string {
  return `${r.epoch}.${r.size}.${r.from}.${r.to}.${r.phase}.${r.nodeIdsMax}`;
}

/** The epoch a ring header names, or 0 when absent or malformed. */
export function headerEpoch(text: string | null): number {
  if (text === null) return 0;
  const m = /^([0-9]{1,15})\./.exec(text);
  return m === null ? 0 : Number(m[1]);
}

export function hex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0"); // lint: encoding (hex)
  return out;
}

export function unhex(text: string): Uint8Array {
  if (!/^(?:[0-9a-f]{2})*$/.test(text)) throw new Error("bad hex");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16); // lint: encoding (hex)
  return out;
}

/** The JSON form on internal paths (RingControl -> node, node -> Worker). */
export function viewJson(v: RingView): Record<string, unknown> {
  return { ring: v.ring, cluster_id: hex(v.clusterId), secret: v.secret === undefined ? null : hex(v.secret) };
}

export function viewFromJson(j: any): RingView {
  const r = j?.ring;
  const ring: Ring = {
    epoch: Number(r?.epoch),
    size: Number(r?.size),
    from: Number(r?.from ?? 0),
    to: Number(r?.to ?? 0),
    phase: Number(r?.phase ?? 0),
    nodeIdsMax: Number(r?.nodeIdsMax),
  };
  const ids = [ring.size, ring.from, ring.to, ring.nodeIdsMax];
  if (!Number.isInteger(ring.epoch) || ring.epoch < 1 || ring.size < 1 || !Number.isInteger(ring.phase) || ring.phase < 0 ||
      ids.some((x) => !Number.isInteger(x) || x < 0 || x > 1024) || ring.nodeIdsMax < ring.size) { // lint: api-limit (node ids 0..1023)
    throw new Error("malformed ring");
  }
  const clusterId = unhex(String(j.cluster_id));
  if (clusterId.length !== 16) throw new Error("malformed cluster id"); // lint: abi (RINGKV_CLUSTER_ID_BYTES)
  return { ring, clusterId, secret: j.secret == null ? undefined : unhex(String(j.secret)) };
}
