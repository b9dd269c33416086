// RingNode: one Durable Object is one node of the ring. It owns the node's SQLite storage,
// its alarm (the gossip round) and its network sends; every decision is the core's.
//
// The loop, for every event: load the rows the event needs, call the core once, apply its
// answer in one storage transaction, then send, reply and re-arm the alarm. Nothing is
// awaited between loading rows and applying the core's answer, so no other event can
// interleave with a read-modify-write of a key.
//
// Internal routes (reachable only through the NODE binding, i.e. from the Worker and from
// other nodes; the Worker never forwards a client's path here):
//   POST /internal/write    client PUT/DELETE (key, token payload in headers; body = value)
//   GET  /internal/read     client GET (?siblings=1)
//   POST /internal/list     listing page: {prefix, after, limit} (base64url keys)
//   GET  /internal/status   counters, digests, per-shard digests for `converged`
//   GET  /internal/dump     the admin dump (?cursor=)
//   POST /internal/push     gossip Push, or an anti-entropy repair request (answer: Push)
//   POST /internal/digest   anti-entropy DigestRequest (answer: DigestReply)
//   POST /internal/gc       tombstone collection GcQuery (answer: GcReply)
//   GET  /internal/ring     the ring, cluster id and generated secret, for a Worker isolate
//   POST /internal/faults   fault injection settings (only with FAULTS)
//   POST /internal/crash    ctx.abort() (only with FAULTS)
import { DurableObject } from "cloudflare:workers";
import wasmModule from "../build/ringkv.wasm";
import { Core, CoreError, Op } from "./core";
import { decode } from "./pb";
import { coreConfig, parseConfig, type RingConfig } from "./config";
import { base64, base64url, unbase64url } from "./tokens";
import { CONTROL_NAME } from "./control";
import { NEED_SECRET_HEADER, RING_HEADER, ringHeader, viewFromJson, viewJson, type RingView } from "./ring";

type Msg = Record<string, any>;

/** Header naming the node a request is for (the Worker and peers set it). */
export const NODE_ID_HEADER = "X-Ring-Node-Id";
/** Header on a node's 503 when it refuses to serve under this configuration. */
export const REFUSED_HEADER = "X-Ring-Refused";
/** Header on a node's 400 to a peer: why it refused the whole message. */
const REFUSED_REASON_HEADER = "X-Ring-Refused-Reason";

// Limits of one gossip round, units last.
const PUSH_CANDIDATES_MAX = 512;
const PUSH_VALUE_BYTES_MAX = 8 * 1024 * 1024;
const EXPIRE_KEYS_MAX = 256;
const GC_KEYS_MAX = 128;
const AE_SHARDS_MAX = 64;
const AE_REPAIR_BYTES_MAX = 16 * 1024 * 1024;
// A push is merged in ranges of entries whose stored metadata stays within this (rows are
// read MERGE_ROWS_GROUP keys per statement).
const MERGE_ROWS_BYTES_MAX = 8 * 1024 * 1024;
const MERGE_ROWS_GROUP = 25;
const AE_INTERVAL_MS_MAX = 60_000;
/** Anti-entropy waits this many intervals after a local change, but runs at least once
 *  every AE_STARVE_INTERVALS while changes keep coming (as the simulator does). */
const AE_QUIET_INTERVALS = 1;
const AE_STARVE_INTERVALS = 30;
const PEER_BACKOFF_MS_MAX = 30_000;
// A failed push is retried at the next round this many times before backing off (2, 4,
// 8, ... intervals): most failures are one lost message, and the back-off made the tail.
const PEER_RETRY_QUICK = 2;
const PEER_FETCH_TIMEOUT_MS = 10_000;
const GC_RETRY_MS_MIN = 1000;
const DUMP_KEYS_MAX = 100;
const DUMP_VALUE_BYTES_MAX = 8 * 1024 * 1024;
const CONTROL_TIMEOUT_MS = 10_000;
/** Node ids run 0 .. 1023 (the core's RINGKV_CLUSTER_SIZE_MAX). */
const NODE_IDS_MAX = 1024;
const PEER_PATHS = new Set(["/internal/push", "/internal/digest", "/internal/gc"]);
/** RINGKV_MESSAGE_BYTES_MAX (ringkv.h). */
const MESSAGE_BYTES_MAX = 64 * 1024 * 1024;
const LIST_KEYS_MAX = 1000;
// Durable Object SQLite binds at most 100 parameters per statement.
const SQL_PARAMS_MAX = 100;

const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/** 64-bit values as 16-char lowercase hex, so that SQL text order is numeric order. */
function hex64(v: bigint): string {
  return BigInt.asUintN(64, v).toString(16).padStart(16, "0");
}

/** A Uint8Array as an SQL BLOB binding. */
function blob(u8: Uint8Array): ArrayBuffer {
  if (u8.byteOffset === 0 && u8.byteLength === u8.buffer.byteLength) return u8.buffer as ArrayBuffer;
  return u8.slice().buffer as ArrayBuffer;
}

function bytesOf(v: unknown): Uint8Array {
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (v instanceof Uint8Array) return v;
  if (v === null || v === undefined) return EMPTY;
  return new Uint8Array(v as ArrayBuffer);
}

/** A map key for key bytes. */
function keyId(u8: Uint8Array): string {
  let s = "";
  for (let i = 0; i < u8.length; i += 0x4000) s += String.fromCharCode(...u8.subarray(i, i + 0x4000));
  return s;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

/** A value for JSON: utf8 text when the bytes are valid UTF-8, else base64. */
export function encodeValue(bytes: Uint8Array): { value: string; encoding: "utf8" | "base64" } {
  try {
    return { value: utf8Strict.decode(bytes), encoding: "utf8" };
  } catch {
    return { value: base64(bytes), encoding: "base64" };
  }
}

/** The smallest byte string greater than every string with this prefix (undefined: none). */
export function prefixSuccessor(prefix: Uint8Array): Uint8Array | undefined {
  let end = prefix.length;
  while (end > 0 && prefix[end - 1] === 0xff) end--;
  if (end === 0) return undefined;
  const out = prefix.slice(0, end);
  out[end - 1]++;
  return out;
}

interface Faults {
  down: number[];
  drop: number;
  partitions: number[][];
  skewMs: Record<string, number>;
}

interface PushPlan {
  outgoing: Msg[];
  healthy: PeerState[];
  truncated: boolean;
  changed: PeerState[];
  /** The rows the round read (their keys are the ones a peer may ask to have again). */
  candidates: Msg[];
}

interface PeerState {
  peer: number;
  ackedSeq: number;
  failures: number;
  retryAtMs: number;
}

/** A client-facing error raised inside the node, answered as JSON. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A KeyInfo as the key row's columns, in the order
 *  live, winner_hlc, winner_node, all_deleted, max_hlc, expired, siblings, digest. */
function infoColumns(info: Msg): unknown[] {
  return [
    info.live ? 1 : 0,
    hex64(info.winnerHlc),
    info.winnerNode,
    info.allDeleted ? 1 : 0,
    hex64(info.maxHlc),
    info.expired ? 1 : 0,
    info.siblings,
    hex64(info.digest),
  ];
}

export class RingNode extends DurableObject {
  private readonly sql: any;
  private config: RingConfig | undefined;
  private error: string | undefined;
  private nodeId: number | undefined;
  // The ring as RingControl gave it (persisted); undefined until the node first asks.
  private ringView: RingView | undefined;
  private ringPending: Promise<void> | undefined;
  private core: Core | undefined;
  private seq = 0;
  private alarmAtMs: number | undefined;
  private lastRoundMs = 0;
  private aeNextMs = 0;
  private aeIntervalMs = 0;
  // Anti-entropy peers: the nodes sharing a shard (InitReply.peers), visited in turn
  // from a random start (aeCursor, persisted); aeAgreed counts equal exchanges in a row
  // (up to the number of peers: a full cycle).
  private aePeers: number[] = [];
  private aeCursor = -1;
  private aeAgreed = 0;
  private lowestAck = 0;
  private lastChangeMs = 0;
  private lastAeMs = 0;
  private peers: PeerState[] | undefined;
  private readonly pendingStats = new Map<string, number>();
  private faults: Faults = { down: [], drop: 0, partitions: [], skewMs: {} };

  constructor(ctx: any, env: any) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    ctx.blockConcurrencyWhile(async () => {
      this.start();
      await this.armOnStart();
    });
  }

  // ---------------------------------------------------------------------------------
  // Start-up: schema, configuration check, core.

  private start(): void {
    const parsed = parseConfig(this.env as Record<string, unknown>);
    if (parsed.error !== undefined) {
      this.error = parsed.error;
      console.error(`ringkv node: ${parsed.error}`);
      return;
    }
    this.config = parsed.config!;
    const sql = this.sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS config(name TEXT PRIMARY KEY, value TEXT NOT NULL)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS keys(
      key BLOB PRIMARY KEY, shard INTEGER NOT NULL, meta BLOB NOT NULL, seq INTEGER NOT NULL,
      from_client INTEGER NOT NULL, live INTEGER NOT NULL, winner_hlc TEXT NOT NULL,
      winner_node INTEGER NOT NULL, all_deleted INTEGER NOT NULL, max_hlc TEXT NOT NULL,
      expired INTEGER NOT NULL, siblings INTEGER NOT NULL, digest TEXT NOT NULL)`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_shard ON keys(shard)`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_seq ON keys(seq)`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_client_seq ON keys(from_client, seq)`);
    sql.exec(`CREATE INDEX IF NOT EXISTS keys_expiry ON keys(all_deleted, expired, max_hlc)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS vals(key BLOB NOT NULL, node INTEGER NOT NULL,
      counter INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY(key, node, counter))`);
    sql.exec(`CREATE TABLE IF NOT EXISTS shard_digests(shard INTEGER PRIMARY KEY, digest TEXT NOT NULL)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS peers(peer INTEGER PRIMARY KEY, acked_seq INTEGER NOT NULL,
      failures INTEGER NOT NULL, retry_at_ms INTEGER NOT NULL)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS stats(name TEXT PRIMARY KEY, value INTEGER NOT NULL)`);

    // The cluster's shape is fixed at first start. Its size is the ring's (RingControl):
    // a release-1 node's persisted cluster_size only tells RingControl the size to start at.
    const c = this.config;
    const fixed: [string, number][] = [
      ["replicas", c.replicas],
      ["shards", c.shards],
    ];
    const mismatches: string[] = [];
    for (const [name, value] of fixed) {
      const stored = this.getConf(name);
      if (stored === undefined) this.setConf(name, String(value));
      else if (stored !== String(value)) mismatches.push(`${name} is ${stored} in storage but ${value} in the configuration`);
    }
    if (mismatches.length > 0) {
      this.error = `configuration mismatch: ${mismatches.join("; ")} (fixed in this release)`;
      console.error(`ringkv node: ${this.error}`);
      return;
    }
    this.seq = Number(this.getConf("seq") ?? "0");
    this.aeIntervalMs = Number(this.getConf("ae_interval_ms") ?? String(c.gossipIntervalMs));
    this.aeNextMs = Number(this.getConf("ae_next_ms") ?? "0");
    this.aeCursor = Number(this.getConf("ae_cursor") ?? "-1");
    const faults = this.getConf("faults");
    if (faults !== undefined) {
      try {
        // Settings kept from before a change of MAX_CLOCK_SKEW_MS (or of the rules) are
        // checked again: anything no longer allowed is dropped.
        const kept = JSON.parse(faults);
        this.faults = normalizeFaults({ ...kept, skew_ms: kept.skewMs }, c.maxClockSkewMs);
      } catch {
        this.setConf("faults", JSON.stringify(this.faults));
      }
    }
    // Release 1 counted refused protocol versions as refused_versions.
    this.sql.exec(`INSERT INTO stats(name, value) SELECT 'refused_protocol_version', value FROM stats WHERE name = 'refused_versions'
      ON CONFLICT(name) DO UPDATE SET value = value + excluded.value`);
    this.sql.exec(`DELETE FROM stats WHERE name = 'refused_versions'`);
    const view = this.getConf("ring_view");
    if (view !== undefined) this.ringView = viewFromJson(JSON.parse(view));
    const id = this.getConf("node_id");
    if (id !== undefined) {
      this.nodeId = Number(id);
      if (this.ringView !== undefined) this.initCore();
    }
  }

  /** The ring, from storage or (first start, or a release-1 node) from RingControl, which
   *  is asked once and never again on the request path. Persisted before use. */
  private async ensureRing(needSecret = false): Promise<void> {
    const satisfied = () => this.ringView !== undefined && (!needSecret || this.ringView.secret !== undefined);
    // A pending question may not have asked for the secret: ask again after it if need be.
    for (let asked = 0; !satisfied() && asked < 2; asked++) {
      this.ringPending ??= this.askControl(needSecret).finally(() => {
        this.ringPending = undefined;
      });
      await this.ringPending;
    }
    if (this.ringView === undefined) throw new HttpError(503, "the ring is not available yet");
  }

  private async askControl(needSecret: boolean): Promise<void> {
    const env = this.env as any;
    const reported = Number(this.getConf("cluster_size") ?? "0");
    const stub = env.CONTROL.get(env.CONTROL.idFromName(CONTROL_NAME));
    let timer: any;
    let response: Response;
    try {
      response = await Promise.race([
        stub.fetch("https://control/control/ring", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ reported_size: reported, secret_needed: needSecret || this.config!.tokenSecrets === undefined }),
        }) as Promise<Response>,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("RingControl timed out")), CONTROL_TIMEOUT_MS);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    const text = await response.text();
    if (response.status !== 200) throw new HttpError(503, `RingControl answered ${response.status}: ${text.slice(0, 200)}`);
    const view = viewFromJson(JSON.parse(text));
    this.setConf("ring_view", JSON.stringify(viewJson(view)));
    this.ringView = view;
    if (this.nodeId !== undefined && this.core === undefined) this.initCore();
  }

  private async armOnStart(): Promise<void> {
    if (this.error !== undefined || this.nodeId === undefined) return;
    const at = await this.ctx.storage.getAlarm();
    if (at === null) this.scheduleAt(Date.now() + this.config!.gossipIntervalMs);
    else this.alarmAtMs = at;
  }

  /** (Re)creates the core from storage: configuration, node state, shard digests. */
  private initCore(): void {
    const core = new Core(wasmModule as WebAssembly.Module);
    const shards: Msg[] = [];
    for (const row of this.sql.exec(`SELECT shard, digest FROM shard_digests`)) {
      shards.push({ shard: row.shard, digest: BigInt("0x" + row.digest) });
    }
    try {
      const init = core.call(Op.Init, {
        config: coreConfig(this.config!, this.ringView!.ring),
        node: {
          node: this.nodeId,
          clock: BigInt(this.getConf("clock") ?? "0"),
          counter: BigInt(this.getConf("counter") ?? "0"),
        },
        shards,
      });
      this.aePeers = init.peers;
    } catch (err) {
      this.error = `the core refused the configuration: ${(err as Error).message}`;
      console.error(`ringkv node: ${this.error}`);
      return;
    }
    this.core = core;
  }

  /** One core call. A trap (anything but a CoreError) drops the instance: the next call
   *  rebuilds it from storage. */
  private call(op: number, request: Msg): Msg {
    if (this.core === undefined && this.ringView !== undefined) this.initCore();
    if (this.core === undefined) throw new HttpError(503, this.error ?? "core unavailable");
    try {
      return this.core.call(op as any, request);
    } catch (err) {
      if (!(err instanceof CoreError)) {
        console.error(`ringkv node ${this.nodeId}: core trapped (${(err as Error).message}); rebuilding from storage`);
        this.core = undefined;
      }
      throw err;
    }
  }

  private getConf(name: string): string | undefined {
    const rows = this.sql.exec(`SELECT value FROM config WHERE name = ?`, name).toArray();
    return rows.length > 0 ? rows[0].value : undefined;
  }

  private setConf(name: string, value: string): void {
    this.sql.exec(`INSERT INTO config(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`, name, value);
  }

  /** Counts into memory; flushStats() persists (once per round and on status reads), so
   *  counting costs no SQL statement on the hot paths. */
  private addStat(name: string, delta: number): void {
    if (delta === 0) return;
    this.pendingStats.set(name, (this.pendingStats.get(name) ?? 0) + delta);
  }

  private flushStats(): void {
    for (const [name, delta] of this.pendingStats) {
      this.sql.exec(`INSERT INTO stats(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value`, name, delta);
    }
    this.pendingStats.clear();
  }

  /** The refused_<reason> counters, as {"<reason>": n}. */
  private refusedStats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const row of this.sql.exec(`SELECT name, value FROM stats WHERE name LIKE 'refused\\_%' ESCAPE '\\'`)) {
      out[String(row.name).slice("refused_".length)] = Number(row.value);
    }
    return out;
  }

  private stat(name: string): number {
    const rows = this.sql.exec(`SELECT value FROM stats WHERE name = ?`, name).toArray();
    return (rows.length > 0 ? Number(rows[0].value) : 0) + (this.pendingStats.get(name) ?? 0);
  }

  /** The node's notion of now: wall time plus an injected skew (faults only). */
  private nowMs(): number {
    const skew = this.config?.faultsEnabled ? Number(this.faults.skewMs?.[String(this.nodeId)] ?? 0) : 0;
    return Math.max(0, Date.now() + skew);
  }

  // ---------------------------------------------------------------------------------
  // Rows in and out of storage.

  private loadRow(key: Uint8Array): { meta: Uint8Array; expired: boolean } | undefined {
    const rows = this.sql.exec(`SELECT meta, expired FROM keys WHERE key = ?`, blob(key)).toArray();
    if (rows.length === 0) return undefined;
    return { meta: bytesOf(rows[0].meta), expired: rows[0].expired === 1 };
  }

  /** Rows of many keys with their values' lengths (not the values), SQL_PARAMS_MAX keys
   *  per statement: what a merge needs to bound the merged key's bytes. */
  private loadRows(keys: Uint8Array[]): Map<string, { meta: Uint8Array; expired: boolean; sizes: Msg[] }> {
    const out = new Map<string, { meta: Uint8Array; expired: boolean; sizes: Msg[] }>();
    for (let i = 0; i < keys.length; i += SQL_PARAMS_MAX) {
      const chunk = keys.slice(i, i + SQL_PARAMS_MAX);
      const marks = chunk.map(() => "?").join(", ");
      for (const row of this.sql.exec(`SELECT key, meta, expired FROM keys WHERE key IN (${marks})`, ...chunk.map(blob))) {
        out.set(keyId(bytesOf(row.key)), { meta: bytesOf(row.meta), expired: row.expired === 1, sizes: [] });
      }
      // Lengths apart (a JOIN would repeat each key's metadata once per value).
      for (const row of this.sql.exec(
        `SELECT key, node, counter, length(value) AS bytes FROM vals WHERE key IN (${marks})`,
        ...chunk.map(blob),
      )) {
        out.get(keyId(bytesOf(row.key)))?.sizes.push({ dot: { node: row.node, counter: BigInt(row.counter) }, bytes: BigInt(row.bytes) });
      }
    }
    return out;
  }

  private loadValues(key: Uint8Array): Msg[] {
    const values: Msg[] = [];
    for (const row of this.sql.exec(`SELECT node, counter, value FROM vals WHERE key = ?`, blob(key))) {
      values.push({ dot: { node: row.node, counter: BigInt(row.counter) }, value: bytesOf(row.value) });
    }
    return values;
  }

  /** Local rows of every key in `shards`, with values (repair requests and answers). With
   *  `bytesMax`, stops after the shard whose values pass it; returns the shards loaded. */
  private loadShards(shards: number[], into: Map<string, Msg>, bytesMax = Number.POSITIVE_INFINITY): number[] {
    let bytes = 0;
    const loaded: number[] = [];
    for (const shard of shards) {
      if (bytes >= bytesMax) break;
      loaded.push(shard);
      for (const row of this.sql.exec(`SELECT key, meta, expired FROM keys WHERE shard = ?`, shard).toArray()) {
        const key = bytesOf(row.key);
        const values = this.loadValues(key);
        bytes += bytesOf(row.meta).length;
        for (const v of values) bytes += v.value.length;
        into.set(keyId(key), { key, meta: bytesOf(row.meta), expired: row.expired === 1, values });
      }
    }
    return loaded;
  }

  private upsertKey(key: Uint8Array, shard: number, meta: Uint8Array, info: Msg, fromClient: boolean): void {
    this.seq++;
    this.sql.exec(
      `INSERT INTO keys(key, shard, meta, seq, from_client, live, winner_hlc, winner_node, all_deleted,
         max_hlc, expired, siblings, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(key) DO UPDATE SET shard = excluded.shard, meta = excluded.meta, seq = excluded.seq,
         from_client = CASE WHEN excluded.from_client = 1 OR (keys.from_client = 1 AND keys.seq > ?) THEN 1 ELSE 0 END,
         live = excluded.live, winner_hlc = excluded.winner_hlc, winner_node = excluded.winner_node,
         all_deleted = excluded.all_deleted, max_hlc = excluded.max_hlc, expired = excluded.expired,
         siblings = excluded.siblings, digest = excluded.digest`,
      blob(key),
      shard,
      blob(meta),
      this.seq,
      fromClient ? 1 : 0,
      ...infoColumns(info),
      this.lowestAck,
    );
  }

  /** Gives a key row a new change sequence (to be pushed again), keeping its state. */
  private touchKey(key: Uint8Array): void {
    const next = this.seq + 1;
    const changed = this.sql.exec(`UPDATE keys SET seq = ? WHERE key = ?`, next, blob(key)).rowsWritten;
    if (changed > 0) this.seq = next;
  }

  /** Updates a row's metadata in place, keeping its sequence (expiry is not news). */
  private updateKeyInPlace(key: Uint8Array, meta: Uint8Array, info: Msg): void {
    this.sql.exec(
      `UPDATE keys SET meta = ?, live = ?, winner_hlc = ?, winner_node = ?, all_deleted = ?, max_hlc = ?,
         expired = ?, siblings = ?, digest = ? WHERE key = ?`,
      blob(meta),
      ...infoColumns(info),
      blob(key),
    );
  }

  private putValue(key: Uint8Array, dot: Msg, value: Uint8Array): void {
    this.sql.exec(
      `INSERT OR REPLACE INTO vals(key, node, counter, value) VALUES (?, ?, ?, ?)`,
      blob(key),
      dot.node,
      Number(dot.counter),
      blob(value),
    );
  }

  private dropValue(key: Uint8Array, dot: Msg): void {
    this.sql.exec(`DELETE FROM vals WHERE key = ? AND node = ? AND counter = ?`, blob(key), dot.node, Number(dot.counter));
  }

  private setShardDigest(shard: number, digest: bigint): void {
    if (digest === 0n) this.sql.exec(`DELETE FROM shard_digests WHERE shard = ?`, shard);
    else {
      this.sql.exec(
        `INSERT INTO shard_digests(shard, digest) VALUES (?, ?) ON CONFLICT(shard) DO UPDATE SET digest = excluded.digest`,
        shard,
        hex64(digest),
      );
    }
  }

  /** Persists the core's node state (HLC, dot counter) and the change sequence, in one
   *  statement: this runs inside every write's transaction. */
  private saveNodeState(state: Msg | undefined): void {
    if (state === undefined) {
      this.setConf("seq", String(this.seq));
      return;
    }
    this.sql.exec(
      `INSERT INTO config(name, value) VALUES ('clock', ?), ('counter', ?), ('seq', ?)
       ON CONFLICT(name) DO UPDATE SET value = excluded.value`,
      BigInt.asUintN(64, state.clock).toString(),
      BigInt.asUintN(64, state.counter).toString(),
      String(this.seq),
    );
  }

  /** Applies one core Applied (merge, expiry, collection). `news`: the change is worth
   *  gossiping (a new sequence number); expiry and collection are not. */
  private applyApplied(a: Msg, news: boolean, message: Uint8Array = EMPTY): void {
    const key: Uint8Array = a.key;
    if (a.meta.length === 0) {
      this.sql.exec(`DELETE FROM keys WHERE key = ?`, blob(key));
      this.sql.exec(`DELETE FROM vals WHERE key = ?`, blob(key));
    } else {
      if (news) this.upsertKey(key, a.shard, a.meta, a.info ?? {}, false);
      else this.updateKeyInPlace(key, a.meta, a.info ?? {});
      for (const d of a.dropped) this.dropValue(key, d);
      // A merged value is given by its place in the message (it crossed into WASM once).
      for (const v of a.put) {
        const length = Number(v.length);
        this.putValue(key, v.dot, length > 0 ? message.subarray(Number(v.at), Number(v.at) + length) : v.value);
      }
    }
    this.setShardDigest(a.shard, a.shardDigest);
  }

  // ---------------------------------------------------------------------------------
  // Alarms: one gossip round per GOSSIP_INTERVAL_MS at most.

  /** Applies a core decision in one transaction. If storage refuses it, the core's
   *  in-memory state (HLC, counter, shard digests) is ahead of storage: drop the instance
   *  so the next call rebuilds it from what was persisted. */
  private commit(apply: () => void): void {
    try {
      this.ctx.storage.transactionSync(apply);
    } catch (err) {
      this.core = undefined;
      throw err;
    }
  }

  private scheduleAt(atMs: number): void {
    if (this.alarmAtMs !== undefined && this.alarmAtMs <= atMs) return;
    this.alarmAtMs = atMs;
    this.ctx.storage.setAlarm(atMs).catch((err: Error) => {
      this.alarmAtMs = undefined;
      console.error(`ringkv node ${this.nodeId}: setAlarm failed: ${err.message}`);
    });
  }

  /** After a local change: flush it at the next allowed round. */
  private scheduleFlush(): void {
    this.scheduleAt(Math.max(Date.now(), this.lastRoundMs + this.config!.gossipIntervalMs));
  }

  private resetAntiEntropy(): void {
    const interval = this.config!.gossipIntervalMs;
    this.aeAgreed = 0;
    if (this.aeIntervalMs === interval && this.aeNextMs <= Date.now() + interval) return;
    this.aeIntervalMs = interval;
    this.aeNextMs = Date.now() + interval;
    this.setConf("ae_interval_ms", String(this.aeIntervalMs));
    this.setConf("ae_next_ms", String(this.aeNextMs));
  }

  // ---------------------------------------------------------------------------------
  // Requests.

  async fetch(request: Request): Promise<Response> {
    const response = await this.serve(request);
    if (this.ringView !== undefined) response.headers.set(RING_HEADER, ringHeader(this.ringView.ring));
    return response;
  }

  private async serve(request: Request): Promise<Response> {
    if (this.error !== undefined) return json(503, { error: this.error }, { [REFUSED_HEADER]: "1" });
    const url = new URL(request.url);
    try {
      await this.ensureRing(request.headers.get(NEED_SECRET_HEADER) === "1");
      const idHeader = request.headers.get(NODE_ID_HEADER);
      if (idHeader !== null && this.nodeId === undefined) {
        const id = Number(idHeader);
        if (!/^[0-9]{1,4}$/.test(idHeader) || id >= NODE_IDS_MAX) return json(400, { error: "bad node id" });
        if (id >= this.ringView!.ring.size) return json(400, { error: `node ${id} is outside the ring (size ${this.ringView!.ring.size})` });
        this.nodeId = id;
        this.setConf("node_id", String(id));
        this.initCore();
        if (this.error !== undefined) return json(503, { error: this.error }, { [REFUSED_HEADER]: "1" });
        this.scheduleAt(Date.now() + this.config!.gossipIntervalMs);
      } else if (idHeader !== null && Number(idHeader) !== this.nodeId) {
        return json(500, { error: `node id mismatch: this is node ${this.nodeId}, asked for ${idHeader}` });
      }
      if (this.nodeId === undefined) return json(400, { error: "node id unknown" });
      // Fault injection: a node marked down answers 503 to everything but fault control.
      if (
        this.config!.faultsEnabled &&
        this.faults.down?.includes(this.nodeId) &&
        url.pathname !== "/internal/faults" &&
        url.pathname !== "/internal/crash" &&
        url.pathname !== "/internal/ring"
      ) {
        return json(503, { error: `node ${this.nodeId} is down (fault injection)` });
      }
      switch (url.pathname) {
        case "/internal/ring":
          return json(200, viewJson(this.ringView!));
        case "/internal/write":
          return await this.handleWrite(request);
        case "/internal/read":
          return this.handleRead(request, url);
        case "/internal/list":
          return this.handleList(await jsonBody(request));
        case "/internal/status":
          return this.handleStatus();
        case "/internal/dump":
          return this.handleDump(url);
        case "/internal/push":
          return this.handlePush(await peerBody(request));
        case "/internal/digest":
          return this.handleDigest(await peerBody(request));
        case "/internal/gc":
          return this.handleGc(await peerBody(request));
        case "/internal/faults":
          return this.handleFaults(await jsonBody(request));
        case "/internal/crash":
          if (!this.config!.faultsEnabled) return json(404, { error: "not found" });
          this.ctx.abort("crash requested by /v1/admin/nodes/{id}/crash");
          return json(200, { crashed: this.nodeId });
      }
      return json(404, { error: "not found" });
    } catch (err) {
      if (err instanceof HttpError) return json(err.status, { error: err.message });
      if (err instanceof CoreError) {
        switch (err.code) {
          case CoreError.E_TOKEN:
            return json(400, { error: "invalid context token" });
          case CoreError.E_SKEW:
            return json(400, { error: "invalid context token: its clock is too far ahead" });
          case CoreError.E_SIBLINGS:
            return json(409, { error: "too many siblings: read with ?siblings=1 and resolve first" });
          case CoreError.E_KEY_BYTES:
            return json(409, { error: "the key's siblings would exceed MAX_KEY_BYTES: read with ?siblings=1 and resolve first" });
          case CoreError.E_VALUE:
            if (PEER_PATHS.has(url.pathname)) {
              // This node's own request to its core came out too large (the rows a message
              // needs): not the peer's fault, so the peer keeps it unacknowledged.
              this.addStat("refused_request_too_large", 1);
              return json(503, { error: "the rows this message needs exceed one core call; try again later" });
            }
            return json(413, { error: "value or content type too large" });
          case CoreError.E_DECODE:
            if (PEER_PATHS.has(url.pathname)) this.addStat("refused_malformed", 1);
            return json(400, { error: "malformed message" }, { [REFUSED_REASON_HEADER]: "malformed" });
          case CoreError.E_PROTOCOL:
            this.addStat("refused_protocol_version", 1);
            return json(400, { error: "unknown protocol version" }, { [REFUSED_REASON_HEADER]: "protocol_version" });
        }
        console.error(`ringkv node ${this.nodeId}: ${err.message}`);
        return json(500, { error: err.message });
      }
      console.error(`ringkv node ${this.nodeId}: ${(err as Error).stack ?? err}`);
      return json(500, { error: "internal error" });
    }
  }

  private requestKey(request: Request): Uint8Array {
    const key = unbase64url(request.headers.get("X-Ring-Key") ?? "");
    if (key === undefined || key.length === 0) throw new HttpError(400, "bad key");
    return key;
  }

  /** A client PUT or DELETE: durable before the response. */
  private async handleWrite(request: Request): Promise<Response> {
    const key = this.requestKey(request);
    const deleted = request.headers.get("X-Ring-Deleted") === "1";
    const tokenText = request.headers.get("X-Ring-Token");
    const token = tokenText === null ? EMPTY : unbase64url(tokenText);
    if (token === undefined) throw new HttpError(400, "invalid context token");
    const contentType = utf8.encode(deleted ? "" : request.headers.get("X-Ring-Content-Type") ?? "");
    const value = deleted ? EMPTY : new Uint8Array(await request.arrayBuffer());
    // From here to the transaction's end nothing is awaited.
    const row = this.loadRow(key);
    // A context write may keep siblings: the core bounds the key's bytes by their lengths.
    const sizes =
      tokenText === null || row === undefined
        ? []
        : this.sql
            .exec(`SELECT node, counter, length(value) AS bytes FROM vals WHERE key = ?`, blob(key))
            .toArray()
            .map((r: any) => ({ dot: { node: r.node, counter: BigInt(r.counter) }, bytes: BigInt(r.bytes) }));
    const reply = this.call(Op.Write, {
      nowMs: BigInt(this.nowMs()),
      key,
      meta: row?.meta ?? EMPTY,
      expired: row?.expired ?? false,
      hasToken: tokenText !== null,
      token,
      value,
      contentType,
      deleted,
      sizes,
    });
    this.commit(() => {
      this.upsertKey(key, reply.shard, reply.meta, reply.info ?? {}, true);
      for (const d of reply.dropped) this.dropValue(key, d);
      if (!deleted) this.putValue(key, reply.dot, value);
      this.setShardDigest(reply.shard, reply.shardDigest);
      this.saveNodeState(reply.node);
    });
    this.lastChangeMs = Date.now();
    this.resetAntiEntropy();
    this.scheduleFlush();
    return json(200, {
      node: this.nodeId,
      hlc: BigInt.asUintN(64, reply.hlc).toString(),
      token: base64url(reply.token),
      siblings: reply.siblings,
    });
  }

  /** A client GET: the winner's value, or every sibling with ?siblings=1. */
  private handleRead(request: Request, url: URL): Response {
    const key = this.requestKey(request);
    const all = url.searchParams.get("siblings") === "1";
    const row = this.loadRow(key);
    if (row === undefined) return json(404, { error: "not found" });
    const reply = this.call(Op.Read, { key, meta: row.meta });
    if (!reply.found) return json(404, { error: "not found" });
    const token = base64url(reply.token);
    if (all) {
      const values = new Map<string, Uint8Array>();
      for (const v of this.loadValues(key)) values.set(`${v.dot.node}:${v.dot.counter}`, v.value);
      const siblings = reply.siblings.map((s: Msg) => {
        const bytes = s.deleted ? EMPTY : values.get(`${s.dot.node}:${s.dot.counter}`) ?? EMPTY;
        return {
          ...encodeValue(bytes),
          hlc: BigInt.asUintN(64, s.hlc).toString(),
          node: s.dot.node,
          deleted: s.deleted,
        };
      });
      return json(200, { token, siblings });
    }
    const winner = reply.siblings[reply.winner];
    const headers = {
      "X-Ring-Token": token,
      "X-Ring-Siblings": String(reply.siblings.length),
      "X-Ring-Node": String(this.nodeId),
    };
    if (winner === undefined || winner.deleted) return json(404, { error: "not found", token }, headers);
    const rows = this.sql
      .exec(`SELECT value FROM vals WHERE key = ? AND node = ? AND counter = ?`, blob(key), winner.dot.node, Number(winner.dot.counter))
      .toArray();
    if (rows.length === 0) throw new Error(`value row missing for dot (${winner.dot.node}, ${winner.dot.counter})`);
    let contentType = "";
    try {
      contentType = utf8Strict.decode(winner.contentType);
    } catch {
      contentType = "";
    }
    return new Response(bytesOf(rows[0].value), {
      status: 200,
      headers: { ...headers, "X-Ring-Content-Type": contentType, "X-Ring-Hlc": BigInt.asUintN(64, winner.hlc).toString() },
    });
  }

  /** One page of this node's keys for the cluster-wide listing, in byte order. */
  private handleList(body: any): Response {
    const prefix = unbase64url(String(body?.prefix ?? ""));
    const after = body?.after == null ? undefined : unbase64url(String(body.after));
    const limit = Number(body?.limit);
    if (prefix === undefined || (body?.after != null && after === undefined) || !Number.isInteger(limit) || limit < 1 || limit > LIST_KEYS_MAX) {
      throw new HttpError(400, "bad list request");
    }
    const conditions = ["key >= ?"];
    const params: unknown[] = [blob(prefix)];
    if (after !== undefined) {
      conditions.push("key > ?");
      params.push(blob(after));
    }
    const upper = prefixSuccessor(prefix);
    if (upper !== undefined) {
      conditions.push("key < ?");
      params.push(blob(upper));
    }
    const rows = this.sql
      .exec(
        `SELECT key, live, winner_hlc, winner_node FROM keys WHERE ${conditions.join(" AND ")} ORDER BY key LIMIT ?`,
        ...params,
        limit,
      )
      .toArray();
    return json(200, {
      rows: rows.map((r: any) => [base64url(bytesOf(r.key)), r.live === 1, r.winner_hlc, r.winner_node]),
      full: rows.length === limit,
    });
  }

  /** Counters and digests for /v1/cluster, with one sample key per non-zero shard so the
   *  Worker can place the shard and compare all its replicas. */
  private handleStatus(): Response {
    this.flushStats();
    let digest = 0n;
    const shards: [number, string, string][] = [];
    for (const row of this.sql
      .exec(`SELECT s.shard AS shard, s.digest AS digest, (SELECT k.key FROM keys k WHERE k.shard = s.shard LIMIT 1) AS sample
             FROM shard_digests s`)
      .toArray()) {
      digest = BigInt.asUintN(64, digest + BigInt("0x" + row.digest));
      shards.push([row.shard, row.digest, row.sample === null ? "" : base64url(bytesOf(row.sample))]);
    }
    const live = this.sql.exec(`SELECT count(*) AS n FROM keys WHERE live = 1`).one().n;
    return json(200, {
      id: this.nodeId,
      keys: Number(live),
      digest: digest.toString(),
      gossip: {
        rounds: this.stat("rounds"),
        messages_sent: this.stat("messages_sent"),
        bytes_sent: this.stat("bytes_sent"),
        entries_sent: this.stat("entries_sent"),
        entries_applied: this.stat("entries_applied"),
      },
      refused: this.refusedStats(),
      seq: this.seq,
      shards,
    });
  }

  /** The admin dump: this node's registers with their siblings, DUMP_KEYS_MAX at a time.
   *  Metadata is decoded in JS (no core call): it is the node's own canonical encoding. */
  private handleDump(url: URL): Response {
    const cursorText = url.searchParams.get("cursor");
    const cursor = cursorText === null || cursorText === "" ? undefined : unbase64url(cursorText);
    if (cursorText !== null && cursorText !== "" && cursor === undefined) throw new HttpError(400, "bad cursor");
    const rows = (
      cursor === undefined
        ? this.sql.exec(`SELECT key, meta, seq, expired FROM keys ORDER BY key LIMIT ?`, DUMP_KEYS_MAX)
        : this.sql.exec(`SELECT key, meta, seq, expired FROM keys WHERE key > ? ORDER BY key LIMIT ?`, blob(cursor), DUMP_KEYS_MAX)
    ).toArray();
    // A page ends after DUMP_KEYS_MAX keys, or once it holds DUMP_VALUE_BYTES_MAX of values
    // (a maximal key alone fills one).
    let pageBytes = 0;
    let taken = 0;
    const keys = [];
    for (const row of rows) {
      if (pageBytes >= DUMP_VALUE_BYTES_MAX) break;
      taken++;
      const key = bytesOf(row.key);
      const register = decode("Register", bytesOf(row.meta));
      pageBytes += bytesOf(row.meta).length;
      const values = new Map<string, Uint8Array>();
      for (const v of this.loadValues(key)) {
        values.set(`${v.dot.node}:${v.dot.counter}`, v.value);
        pageBytes += v.value.length;
      }
      const ctx = register.context ?? { vv: [], dots: [] };
      keys.push({
        ...keyJson(key),
        seq: row.seq,
        expired: row.expired === 1,
        siblings: register.siblings.map((s: Msg) => {
          const bytes = values.get(`${s.dot.node}:${s.dot.counter}`) ?? EMPTY;
          let contentType = "";
          try {
            contentType = utf8Strict.decode(s.contentType);
          } catch {
            contentType = base64(s.contentType);
          }
          return {
            ...encodeValue(s.deleted ? EMPTY : bytes),
            hlc: BigInt.asUintN(64, s.hlc).toString(),
            node: s.dot.node,
            counter: BigInt.asUintN(64, s.dot.counter).toString(),
            deleted: s.deleted,
            content_type: contentType,
          };
        }),
        context: {
          vv: ctx.vv.map((d: Msg) => [d.node, d.counter.toString()]),
          dots: ctx.dots.map((d: Msg) => [d.node, d.counter.toString()]),
        },
      });
    }
    const more = taken < rows.length || rows.length === DUMP_KEYS_MAX;
    const last = more ? base64url(bytesOf(rows[taken - 1].key)) : null;
    return json(200, { node: this.nodeId, keys, cursor: last });
  }

  /** Merges a Push (gossip, a repair request, or a repair answer); returns the core's
   *  reply bytes (a repair request's answer, else empty). */
  private mergePush(message: Uint8Array, sent?: Set<string>): Uint8Array {
    const wanted = this.call(Op.MessageKeys, { message });
    const keys = wanted.keys as Uint8Array[];
    if (wanted.shards.length > 0) {
      // A repair request is merged whole: its answer covers every local key of its shards.
      const locals = new Map<string, Msg>();
      this.loadShards(wanted.shards, locals);
      this.addRows(locals, keys.filter((key) => !locals.has(keyId(key))));
      return this.mergeRange(message, locals, sent, {}).reply;
    }
    // A push is merged in ranges of entries whose rows stay within MERGE_ROWS_BYTES_MAX,
    // so no core call is too large whatever the keys hold; the last range answers, naming
    // the keys every range deferred.
    const deferredBefore: Uint8Array[] = [];
    for (let from = 0; ; ) {
      const locals = new Map<string, Msg>();
      let to = from;
      let bytes = 0;
      while (to < keys.length && (to === from || bytes < MERGE_ROWS_BYTES_MAX)) {
        const group = keys.slice(to, Math.min(keys.length, to + MERGE_ROWS_GROUP));
        bytes += this.addRows(locals, group);
        to += group.length;
      }
      const last = to >= keys.length;
      const range = { entriesFrom: from, entriesTo: to, deferredBefore: last ? deferredBefore : [] };
      const reply = this.mergeRange(message, locals, sent, range);
      if (last) return reply.reply;
      deferredBefore.push(...(reply.deferred as Uint8Array[]));
      from = to;
    }
  }

  /** Loads the rows of `keys` (metadata and value lengths) into `locals`; returns the
   *  metadata bytes loaded. */
  private addRows(locals: Map<string, Msg>, keys: Uint8Array[]): number {
    const rows = this.loadRows(keys);
    let bytes = 0;
    for (const key of keys) {
      const row = rows.get(keyId(key));
      bytes += row?.meta.length ?? 0;
      locals.set(keyId(key), { key, meta: row?.meta ?? EMPTY, expired: row?.expired ?? false, sizes: row?.sizes ?? [] });
    }
    return bytes;
  }

  /** One OP_MERGE over (a range of) a message, applied in one transaction. */
  private mergeRange(message: Uint8Array, locals: Map<string, Msg>, sent: Set<string> | undefined, range: Msg): Msg {
    const reply = this.call(Op.Merge, {
      nowMs: BigInt(this.nowMs()),
      message,
      locals: [...locals.values()],
      answer: sent !== undefined,
      ...range,
    });
    // Keys a peer deferred go out again (a new sequence puts them past its ack), but only
    // keys this node just sent it.
    const resend = (reply.resend as Uint8Array[]).filter((key) => sent?.has(keyId(key)));
    if (reply.applied.length > 0 || reply.node !== undefined || resend.length > 0) {
      this.commit(() => {
        for (const a of reply.applied) this.applyApplied(a, true, message);
        for (const key of resend) this.touchKey(key);
        this.saveNodeState(reply.node);
        this.addStat("entries_applied", reply.applied.length);
      });
    }
    for (const r of reply.refused as Msg[]) this.addStat(`refused_${r.reason}`, r.count);
    if (resend.length > 0) this.scheduleFlush();
    if (reply.applied.length > 0) {
      this.lastChangeMs = Date.now();
      // Learned changes travel on only where the core relays them (REPLICAS - 1 >
      // FANOUT); otherwise their acknowledgements can wait for the next round that runs
      // anyway (a client write's, or anti-entropy's): no extra round per merge.
      if (this.config!.replicas - 1 > this.config!.fanout) this.scheduleFlush();
    }
    return reply;
  }

  /** A peer's answer to a push of `sent` keys: merged like any Push, but a bad one is only
   *  counted. */
  private mergeAnswer(answer: Uint8Array, sent: Set<string>): void {
    try {
      this.mergePush(answer, sent);
    } catch (err) {
      if (!(err instanceof CoreError)) throw err;
      this.addStat(err.code === CoreError.E_PROTOCOL ? "refused_protocol_version" : "refused_malformed", 1);
    }
  }

  private handlePush(body: Uint8Array): Response {
    const reply = this.mergePush(body);
    return new Response(reply, { status: 200, headers: { "Content-Type": "application/octet-stream" } });
  }

  private handleDigest(body: Uint8Array): Response {
    const reply = this.call(Op.AeAnswer, { message: body });
    return new Response(reply.message, { status: 200, headers: { "Content-Type": "application/octet-stream" } });
  }

  private handleGc(body: Uint8Array): Response {
    let query: Msg;
    try {
      query = decode("GcQuery", body);
    } catch {
      throw new HttpError(400, "malformed message");
    }
    const locals = query.keys.map((k: Msg) => {
      const row = this.loadRow(k.key);
      return { key: k.key, meta: row?.meta ?? EMPTY, expired: row?.expired ?? false };
    });
    const reply = this.call(Op.GcAnswer, { message: body, locals });
    return new Response(reply.message, { status: 200, headers: { "Content-Type": "application/octet-stream" } });
  }

  private handleFaults(body: any): Response {
    if (!this.config!.faultsEnabled) return json(404, { error: "not found" });
    this.faults = normalizeFaults(body, this.config!.maxClockSkewMs);
    this.setConf("faults", JSON.stringify(this.faults));
    return json(200, { node: this.nodeId, faults: this.faults });
  }

  // ---------------------------------------------------------------------------------
  // The gossip round.

  async alarm(): Promise<void> {
    this.alarmAtMs = undefined;
    if (this.error !== undefined || this.nodeId === undefined) return;
    const interval = this.config!.gossipIntervalMs;
    try {
      // A node upgraded from release 1 has data and an alarm but no ring yet.
      await this.ensureRing();
    } catch (err) {
      console.error(`ringkv node ${this.nodeId}: no ring yet (${(err as Error).message}); trying again`);
      this.scheduleAt(Date.now() + interval);
      return;
    }
    // The round starts now: a write that arrives while it runs schedules the next one
    // a full interval after this start, never right after it.
    this.lastRoundMs = Date.now();
    let nextMs = Number.POSITIVE_INFINITY;
    try {
      // All reads and core decisions first, then every send at once, then all writes:
      // storage is touched in as few turns of the event loop as possible.
      const now = this.nowMs();
      this.expireStep(now);
      nextMs = Math.min(nextMs, this.nextExpiryMs());
      const plan = this.planPush();
      const gcLocals = this.loadCollectable();
      const gcQuery = gcLocals.length > 0 ? this.call(Op.GcQuery, { nowMs: BigInt(now), locals: gcLocals }) : undefined;
      const [push, gcReplies] = await Promise.all([
        this.sendPush(plan),
        Promise.all((gcQuery?.outgoing ?? []).map((o: Msg) => this.send(o.peer, "/internal/gc", o.message))),
      ]);
      for (const p of plan.changed) this.savePeer(p);
      const sent = new Set<string>(plan.candidates.map((c: Msg) => keyId(c.local.key)));
      for (const answer of push.answers) this.mergeAnswer(answer, sent);
      if (push.pending) nextMs = Math.min(nextMs, Date.now() + interval);
      if (push.sent) this.lastChangeMs = Date.now();
      if (gcQuery !== undefined && this.collect(gcReplies)) {
        nextMs = Math.min(nextMs, Date.now() + Math.max(interval, GC_RETRY_MS_MIN));
      }
      await this.antiEntropyStep();
    } catch (err) {
      console.error(`ringkv node ${this.nodeId}: gossip round failed: ${(err as Error).stack ?? err}`);
      nextMs = Date.now() + interval;
    }
    this.addStat("rounds", 1);
    this.flushStats();
    // Next: pending work, anti-entropy, or the next tombstone to expire.
    nextMs = Math.min(nextMs, this.aeNextMs);
    this.scheduleAt(Math.max(nextMs, this.lastRoundMs + interval));
  }

  /** When the oldest unexpired tombstone-only key passes its grace (wall time). */
  private nextExpiryMs(): number {
    const row = this.sql.exec(`SELECT min(max_hlc) AS m FROM keys WHERE all_deleted = 1 AND expired = 0`).one();
    if (row.m === null) return Number.POSITIVE_INFINITY;
    const ms = Number(BigInt("0x" + row.m) >> 16n) + this.config!.tombstoneGraceSeconds * 1000 + 1;
    const skew = this.nowMs() - Date.now();
    return ms - skew;
  }
  /** Tombstones past their grace stop counting in digests. */
  private expireStep(now: number): void {
    const graceMs = BigInt(this.config!.tombstoneGraceSeconds) * 1000n;
    const bound = BigInt(now) > graceMs ? (BigInt(now) - graceMs) << 16n : 0n;
    const rows = this.sql
      .exec(`SELECT key, meta FROM keys WHERE all_deleted = 1 AND expired = 0 AND max_hlc < ? LIMIT ?`, hex64(bound), EXPIRE_KEYS_MAX)
      .toArray();
    if (rows.length === 0) return;
    const locals = rows.map((r: any) => ({ key: bytesOf(r.key), meta: bytesOf(r.meta), expired: false }));
    const reply = this.call(Op.Expire, { nowMs: BigInt(now), locals });
    this.commit(() => {
      for (const a of reply.applied) this.applyApplied(a, false);
    });
  }
  /** Every other node's gossip state, kept in memory (persisted in `peers`). */
  private peerStates(): PeerState[] {
    if (this.peers === undefined) {
      const known = new Map<number, PeerState>();
      for (const r of this.sql.exec(`SELECT peer, acked_seq, failures, retry_at_ms FROM peers`)) {
        known.set(r.peer, { peer: r.peer, ackedSeq: r.acked_seq, failures: r.failures, retryAtMs: r.retry_at_ms });
      }
      this.peers = [];
      for (let p = 0; p < this.ringView!.ring.size; p++) {
        if (p === this.nodeId) continue;
        this.peers.push(known.get(p) ?? { peer: p, ackedSeq: 0, failures: 0, retryAtMs: 0 });
      }
    }
    return this.peers;
  }

  private savePeer(p: PeerState): void {
    this.sql.exec(
      `INSERT INTO peers(peer, acked_seq, failures, retry_at_ms) VALUES (?, ?, ?, ?)
       ON CONFLICT(peer) DO UPDATE SET acked_seq = excluded.acked_seq, failures = excluded.failures,
         retry_at_ms = excluded.retry_at_ms`,
      p.peer,
      p.ackedSeq,
      p.failures,
      p.retryAtMs,
    );
  }
  /** Loads the rows changed since the healthy peers' lowest acknowledgement and lets the
   *  core decide who gets what. Synchronous: reads and one core call. */
  private planPush(): PushPlan {
    const peers = this.peerStates();
    const plan: PushPlan = { outgoing: [], healthy: [], truncated: false, changed: [], candidates: [] };
    if (peers.length === 0) return plan;
    this.lowestAck = Math.min(...peers.map((p) => p.ackedSeq));
    if (!peers.some((p) => p.ackedSeq < this.seq)) return plan;
    plan.healthy = peers.filter((p) => p.retryAtMs <= Date.now());
    if (plan.healthy.length === 0) return plan;
    const minAck = Math.min(...plan.healthy.map((p) => p.ackedSeq));
    const seqAtScan = this.seq;
    const candidates: Msg[] = [];
    let valueBytes = 0;
    if (minAck < seqAtScan) {
      // Without relaying (REPLICAS - 1 <= FANOUT) only clients' writes are pushed, so only
      // they are read: a backlog of learned changes must not hold a client's write back.
      const relay = this.config!.replicas - 1 > this.config!.fanout;
      const rows = this.sql
        .exec(
          relay
            ? `SELECT key, meta, expired, seq, from_client FROM keys WHERE seq > ? ORDER BY seq LIMIT ?`
            : `SELECT key, meta, expired, seq, from_client FROM keys WHERE from_client = 1 AND seq > ? ORDER BY seq LIMIT ?`,
          minAck,
          PUSH_CANDIDATES_MAX,
        )
        .toArray();
      for (const r of rows) {
        const key = bytesOf(r.key);
        const values = this.loadValues(key);
        // Metadata counts too: a key of thousands of siblings is large with empty values.
        valueBytes += bytesOf(r.meta).length;
        for (const v of values) valueBytes += v.value.length;
        candidates.push({
          local: { key, meta: bytesOf(r.meta), expired: r.expired === 1, values },
          seq: BigInt(r.seq),
          fromClient: r.from_client === 1,
        });
        if (valueBytes >= PUSH_VALUE_BYTES_MAX) break;
      }
      plan.truncated = candidates.length === PUSH_CANDIDATES_MAX || valueBytes >= PUSH_VALUE_BYTES_MAX;
    }
    const scannedTo = plan.truncated ? Number(candidates[candidates.length - 1].seq) : seqAtScan;
    plan.candidates = candidates;
    plan.outgoing = this.call(Op.BuildPush, {
      candidates,
      acks: plan.healthy.map((p) => ({ peer: p.peer, ackedSeq: BigInt(p.ackedSeq) })),
      scannedToSeq: BigInt(scannedTo),
    }).outgoing;
    return plan;
  }

  /** Sends the planned pushes in parallel and records acknowledgements and failures in
   *  memory (plan.changed lists the peers to persist). No storage access. */
  private async sendPush(plan: PushPlan): Promise<{ pending: boolean; sent: boolean; answers: Uint8Array[] }> {
    let failed = false;
    let sent = false;
    const answers: Uint8Array[] = [];
    // A message the core shares between peers (a key too large for a round) goes to each.
    const sends = plan.outgoing.flatMap((o: Msg) => [o.peer, ...o.peers].map((to: number) => ({ ...o, peer: to })));
    await Promise.all(
      sends.map(async (o: Msg) => {
        const peer = plan.healthy.find((p) => p.peer === o.peer);
        if (peer === undefined) return;
        let ok = true;
        if (o.message.length > 0) {
          sent = true;
          const result = await this.exchange(o.peer, "/internal/push", o.message);
          // A message the peer refuses as malformed is not sent again (it would be refused
          // again, and hold every later change back): anti-entropy repairs what it held.
          ok = result.answer !== undefined || result.refused === "malformed";
          if (result.refused === "malformed") this.addStat("refused_by_peer", 1);
          if (result.answer !== undefined) this.addStat("entries_sent", o.entries);
          // An answer names the entries the peer deferred (their HLC beyond its bound).
          if (result.answer !== undefined && result.answer.length > 0) answers.push(result.answer);
        }
        const before = `${peer.ackedSeq}/${peer.failures}/${peer.retryAtMs}`;
        if (ok) {
          peer.ackedSeq = Math.max(peer.ackedSeq, Number(o.ackedSeqOnSuccess));
          peer.failures = 0;
          peer.retryAtMs = 0;
        } else {
          // The next round for the first PEER_RETRY_QUICK failures in a row, then 2, 4,
          // 8, ... intervals from this round's start, up to PEER_BACKOFF_MS_MAX.
          failed = true;
          peer.failures++;
          const backoff = peer.failures - PEER_RETRY_QUICK;
          peer.retryAtMs =
            backoff <= 0
              ? 0
              : this.lastRoundMs + Math.min(this.config!.gossipIntervalMs * 2 ** Math.min(backoff, 16), PEER_BACKOFF_MS_MAX);
        }
        if (`${peer.ackedSeq}/${peer.failures}/${peer.retryAtMs}` !== before) plan.changed.push(peer);
      }),
    );
    const peers = this.peers ?? [];
    return { pending: plan.truncated || failed || peers.some((p) => p.ackedSeq < this.seq), sent, answers };
  }

  /** Anti-entropy with one peer when due. The peers are the nodes sharing a shard with
   *  this one, taken in turn. Root digest over the shared shards; on a difference the
   *  peer answers bucket digests (64 shared shards each) and a second exchange asks the
   *  differing buckets' shard digests (with at most 64 shared shards, the first answer
   *  holds them already); then a repair exchange of the differing shards' registers.
   *  The interval doubles (up to AE_INTERVAL_MS_MAX) only once the last full cycle of
   *  peers all agreed; a difference (or a failure after one was seen) or a local write
   *  resets it and starts the count over. A failed first exchange teaches nothing: it
   *  changes neither. */
  private async antiEntropyStep(): Promise<void> {
    const peers = this.aePeers;
    if (Date.now() < this.aeNextMs || peers.length === 0) return;
    const interval = this.config!.gossipIntervalMs;
    // Quiet for one interval after a change (pushes are doing the work; comparing
    // digests mid-flight only ships shards twice), unless anti-entropy starves.
    const quietAtMs = this.lastChangeMs + interval * AE_QUIET_INTERVALS;
    if (Date.now() < quietAtMs && Date.now() - this.lastAeMs < interval * AE_STARVE_INTERVALS) {
      this.aeNextMs = quietAtMs;
      return;
    }
    this.lastAeMs = Date.now();
    if (this.aeCursor < 0 || !Number.isInteger(this.aeCursor)) this.aeCursor = Math.floor(Math.random() * peers.length);
    const peer = peers[this.aeCursor % peers.length];
    this.aeCursor = (this.aeCursor + 1) % peers.length;
    this.setConf("ae_cursor", String(this.aeCursor));
    let outcome: "equal" | "differ" | "unknown" = "differ";
    try {
      const start = this.call(Op.AeStart, { peer });
      const answer = await this.send(peer, "/internal/digest", start.message);
      if (answer === undefined) {
        outcome = "unknown";
        return;
      }
      let compare = this.call(Op.AeCompare, { message: answer, shardsMax: AE_SHARDS_MAX });
      if (compare.buckets.length > 0) {
        const narrow = this.call(Op.AeStart, { peer, buckets: compare.buckets });
        const shards = await this.send(peer, "/internal/digest", narrow.message);
        if (shards === undefined) return;
        compare = this.call(Op.AeCompare, { message: shards, shardsMax: AE_SHARDS_MAX });
      }
      if (compare.equal || compare.shards.length === 0) {
        outcome = "equal";
        return;
      }
      const locals = new Map<string, Msg>();
      // One repair exchange carries about AE_REPAIR_BYTES_MAX of values: the differing
      // shards from a random one on, the rest at the next exchanges (they still differ).
      const from = Math.floor(Math.random() * compare.shards.length);
      const order = [...compare.shards.slice(from), ...compare.shards.slice(0, from)];
      const shards = this.loadShards(order, locals, AE_REPAIR_BYTES_MAX).sort((a, b) => a - b);
      const repair = this.call(Op.AeRepair, { peer, shards, locals: [...locals.values()] });
      const back = await this.send(peer, "/internal/push", repair.message);
      if (back !== undefined && back.length > 0) this.mergeAnswer(back, new Set(locals.keys()));
    } finally {
      if (outcome === "differ") {
        this.aeAgreed = 0;
        this.aeIntervalMs = interval;
      } else if (outcome === "equal" && ++this.aeAgreed >= peers.length) {
        // The last full cycle of peers all agreed: every further agreement doubles.
        this.aeAgreed = peers.length;
        this.aeIntervalMs = Math.min(this.aeIntervalMs * 2, AE_INTERVAL_MS_MAX);
      }
      this.aeIntervalMs = Math.max(this.aeIntervalMs, interval);
      this.aeNextMs = Date.now() + this.aeIntervalMs;
      this.setConf("ae_interval_ms", String(this.aeIntervalMs));
      this.setConf("ae_next_ms", String(this.aeNextMs));
    }
  }
  /** Expired tombstone-only keys, candidates for collection. */
  private loadCollectable(): Msg[] {
    return this.sql
      .exec(`SELECT key, meta FROM keys WHERE all_deleted = 1 AND expired = 1 LIMIT ?`, GC_KEYS_MAX)
      .toArray()
      .map((r: any) => ({ key: bytesOf(r.key), meta: bytesOf(r.meta), expired: true }));
  }

  /** Collects the keys every other replica holds identically, given their GcReplies.
   *  Returns true while collectable keys remain. */
  private collect(replies: (Uint8Array | undefined)[]): boolean {
    // The rows may have changed while we waited: decide on their current state.
    const current = this.loadCollectable();
    if (current.length === 0) return false;
    const decision = this.call(Op.GcDecide, {
      nowMs: BigInt(this.nowMs()),
      locals: current,
      replies: replies.filter((r): r is Uint8Array => r !== undefined),
    });
    if (decision.collected.length > 0) {
      this.commit(() => {
        for (const a of decision.collected) this.applyApplied(a, false);
      });
    }
    return current.length > decision.collected.length;
  }

  /** Sends one node-to-node message; returns the answer body, or undefined when the
   *  message was lost (fault injection), refused or failed. Counts bytes both ways. */
  private async send(peer: number, path: string, body: Uint8Array): Promise<Uint8Array | undefined> {
    return (await this.exchange(peer, path, body)).answer;
  }

  /** send(), also telling why a peer refused the message (REFUSED_REASON_HEADER). */
  private async exchange(peer: number, path: string, body: Uint8Array): Promise<{ answer?: Uint8Array; refused?: string }> {
    if (!this.reachable(peer)) return {};
    this.addStat("messages_sent", 1);
    if (this.config!.faultsEnabled && this.faults.drop > 0 && Math.random() < this.faults.drop) {
      this.addStat("bytes_sent", body.length);
      return {};
    }
    const env = this.env as any;
    const stub = env.NODE.get(env.NODE.idFromName(String(peer)));
    let timer: any;
    try {
      const response: Response = await Promise.race([
        stub.fetch(`https://node${path}`, {
          method: "POST",
          body,
          headers: { [NODE_ID_HEADER]: String(peer), "Content-Type": "application/octet-stream" },
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("peer timeout")), PEER_FETCH_TIMEOUT_MS);
        }),
      ]);
      const answer = new Uint8Array(await response.arrayBuffer());
      this.addStat("bytes_sent", body.length + answer.length);
      if (response.status !== 200) {
        const refused = response.headers.get(REFUSED_REASON_HEADER) ?? undefined;
        // A peer that does not read the version this node wrote (it heard the peer wrong,
        // or the peer went back a release): a new core instance forgets what it learnt of
        // peers' versions and writes the previous version until each speaks again.
        if (refused === "protocol_version") this.core = undefined;
        return { refused };
      }
      return { answer };
    } catch {
      this.addStat("bytes_sent", body.length);
      return {};
    } finally {
      clearTimeout(timer);
    }
  }

  private reachable(peer: number): boolean {
    if (!this.config!.faultsEnabled) return true;
    const sets = this.faults.partitions ?? [];
    if (sets.length === 0) return true;
    const mine = sets.findIndex((s) => s.includes(this.nodeId!));
    const theirs = sets.findIndex((s) => s.includes(peer));
    return mine < 0 || theirs < 0 || mine === theirs;
  }
}

/** A peer's message. One beyond the core's limit is the peer's fault: malformed (400). */
async function peerBody(request: Request): Promise<Uint8Array> {
  const body = new Uint8Array(await request.arrayBuffer());
  if (body.length > MESSAGE_BYTES_MAX) throw new CoreError(CoreError.E_DECODE, "message too large");
  return body;
}

/** A JSON request body; 400 when it is not JSON. */
async function jsonBody(request: Request): Promise<unknown> {
  try {
    return await request.json();
  } catch {
    throw new HttpError(400, "expected a JSON body");
  }
}

/** A key for JSON: its UTF-8 text (keys are validated UTF-8), or base64 if not. */
function keyJson(key: Uint8Array): { key: string; key_encoding?: string } {
  try {
    return { key: utf8Strict.decode(key) };
  } catch {
    return { key: base64(key), key_encoding: "base64" };
  }
}

/** Validates fault settings; throws HttpError(400) on nonsense. An injected skew stays
 *  within MAX_CLOCK_SKEW_MS: a node's own clock must never run past the bound it holds
 *  others to (its persisted HLC would stay ahead once the skew is gone). */
export function normalizeFaults(body: any, skewMsMax: number): Faults {
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw new HttpError(400, "faults: expected a JSON object");
  const drop = body.drop ?? 0;
  if (typeof drop !== "number" || !(drop >= 0 && drop <= 1)) throw new HttpError(400, "faults: drop must be a number in 0..1");
  const partitions = body.partitions ?? [];
  if (!Array.isArray(partitions) || partitions.some((s: any) => !Array.isArray(s) || s.some((n: any) => !Number.isInteger(n) || n < 0))) {
    throw new HttpError(400, "faults: partitions must be arrays of node ids");
  }
  const skew = body.skew_ms ?? {};
  if (typeof skew !== "object" || skew === null || Array.isArray(skew)) throw new HttpError(400, "faults: skew_ms must be an object");
  const skewMs: Record<string, number> = {};
  for (const [k, v] of Object.entries(skew)) {
    if (!/^[0-9]{1,4}$/.test(k) || typeof v !== "number" || !Number.isInteger(v) || Math.abs(v) > skewMsMax) {
      throw new HttpError(400, `faults: skew_ms maps node ids to integer milliseconds within ±${skewMsMax} (MAX_CLOCK_SKEW_MS)`);
    }
    skewMs[k] = v;
  }
  const down = body.down ?? [];
  if (!Array.isArray(down) || down.some((n: any) => !Number.isInteger(n) || n < 0)) {
    throw new HttpError(400, "faults: down must be an array of node ids");
  }
  return { down, drop, partitions, skewMs };
}
