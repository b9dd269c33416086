// RingControl's record of the nodes' reports (SPEC: Storage, "A node reports to
// RingControl ..."): it executes the core's RINGKV_OP_REPORT (what to load, then what to
// write) and RINGKV_OP_CLUSTER (/v1/cluster and `converged`), on a placement-only core at
// the ring's size. Mechanics only: validation, agreement and `converged` are the core's.
//
// Tables: node_reports (one summary row per node), node_shards (each node's non-zero
// reported shard digests), and control('differing'): the shards whose replicas disagree,
// kept with the rows it counts. A report reads the rows of the shards it names (and, in
// full, of the node's own); /v1/cluster reads one row per node: neither reads a key.
import wasmModule from "../build/ringkv.wasm";
import { Core, CoreError, Op } from "./core";
import { coreConfig, type RingConfig } from "./config";
import { NODE_ID_HEADER } from "./node";
import type { Ring } from "./ring";

type Msg = Record<string, any>;

/** RINGKV_REPORT_BYTES_MAX (ringkv.h): a larger report is refused unread. */
const REPORT_BYTES_MAX = 4 * 1024 * 1024; // lint: abi
// Durable Object SQLite binds at most 100 parameters per statement.
const SQL_PARAMS_MAX = 100; // lint: platform-limit

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

function hex64(v: bigint): string {
  return BigInt.asUintN(64, v).toString(16).padStart(16, "0"); // lint: encoding
}

/** SQL rows read and written by the last report taken and the last status answered. */
export interface ReportCosts {
  report: { rows_read: number; rows_written: number; ms: number };
  cluster: { rows_read: number; ms: number };
  /** Since the instance started. */
  reports: number;
  report_rows_read: number;
}

export class ControlReports {
  private readonly core: Core;
  /** AUTOSCALE_WINDOW_SECONDS in ms (0: the core's default), over which loads are measured. */
  private readonly windowMs: bigint;
  readonly costs: ReportCosts = { report: { rows_read: 0, rows_written: 0, ms: 0 }, cluster: { rows_read: 0, ms: 0 }, reports: 0, report_rows_read: 0 };
  private read = 0;
  private written = 0;
  /** The core trapped (anything but a return code): RingControl builds a new one. */
  broken = false;
  /** The ring's epoch this instance places on. */
  readonly epoch: number;
  private moving: number | undefined;

  constructor(
    private readonly ctx: any,
    private readonly env: any,
    private readonly sql: any,
    config: RingConfig,
    private readonly ring: Ring,
  ) {
    sql.exec(`CREATE TABLE IF NOT EXISTS node_reports(node INTEGER PRIMARY KEY, number INTEGER NOT NULL,
      summary BLOB NOT NULL, received_ms INTEGER NOT NULL)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS node_shards(shard INTEGER NOT NULL, node INTEGER NOT NULL, digest TEXT NOT NULL,
      PRIMARY KEY(shard, node))`);
    sql.exec(`CREATE INDEX IF NOT EXISTS node_shards_node ON node_shards(node)`);
    this.windowMs = BigInt((config.autoscale?.windowSeconds ?? 0) * 1000); // lint: encoding (seconds to milliseconds; 0: the core's 60 s)
    this.core = new Core(wasmModule as WebAssembly.Module);
    this.core.call(Op.Init, { config: coreConfig(config, ring), node: { node: 0, clock: 0n, counter: 0n }, shards: [], placementOnly: true });
    this.epoch = ring.epoch;
    this.recountOnNewRing();
  }

  /** The stored count of disagreeing shards was kept on the ring of each report: on a new
   *  ring the core counts it again from every stored digest row, once (the epoch it was
   *  counted on is stored with it). */
  private recountOnNewRing(): void {
    const at = this.rows(`SELECT value FROM control WHERE name = 'differing_epoch'`);
    if (at.length > 0 && Number(new TextDecoder().decode(new Uint8Array(at[0].value as ArrayBuffer))) === this.epoch) return;
    const rows = this.rows(`SELECT shard, node, digest FROM node_shards`).map((r: any) => ({
      shard: r.shard,
      node: r.node,
      digest: BigInt("0x" + r.digest),
    }));
    const reply = this.call(Op.Cluster, { nodes: [], differing: 0n, phase: this.ring.phase, nowMs: 0n, rows, recount: true });
    this.ctx.storage.transactionSync(() => {
      this.setControl("differing", String(reply.differing ?? 0n));
      this.setControl("differing_epoch", String(this.epoch));
    });
  }

  private setControl(name: string, value: string): void {
    this.rows(
      `INSERT INTO control(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`,
      name,
      new TextEncoder().encode(value).buffer,
    );
  }

  /** The shards whose replica set changes in the ring's transition (the core counts them,
   *  once per ring). */
  shardsMoving(): number {
    this.moving ??= this.call(Op.Cluster, { nodes: [], differing: 0n, phase: this.ring.phase, nowMs: 0n, countMoving: true }).shardsMoving;
    return Number(this.moving ?? 0);
  }

  private call(op: number, request: Msg): Msg {
    try {
      return this.core.call(op as any, request);
    } catch (err) {
      if (!(err instanceof CoreError)) this.broken = true;
      throw err;
    }
  }

  private rows(query: string, ...params: unknown[]): any[] {
    const cursor = this.sql.exec(query, ...params);
    const rows = cursor.toArray();
    this.read += cursor.rowsRead;
    this.written += cursor.rowsWritten;
    return rows;
  }

  private differing(): bigint {
    const rows = this.rows(`SELECT value FROM control WHERE name = 'differing'`);
    return rows.length > 0 ? BigInt(new TextDecoder().decode(new Uint8Array(rows[0].value as ArrayBuffer))) : 0n;
  }

  /** POST /control/report: 200 once persisted; 400 malformed or not this ring's, 409 older
   *  than the stored one, 413 too large: nothing changes. */
  async take(request: Request): Promise<{ response: Response; progress?: Msg }> {
    const started = performance.now();
    const body = new Uint8Array(await request.arrayBuffer());
    if (body.length > REPORT_BYTES_MAX) return { response: json(413, { error: "report too large" }) };
    this.read = 0;
    this.written = 0;
    try {
      const first = this.call(Op.Report, { report: body });
      const loaded = this.load(first.load);
      // Nothing is awaited from here to the transaction's end.
      const reply = this.call(Op.Report, { report: body, loaded });
      if (reply.stale) return { response: json(409, { error: "an older report than the one kept" }) };
      this.ctx.storage.transactionSync(() => this.write(first.load.node, reply));
      this.costs.report = { rows_read: this.read, rows_written: this.written, ms: performance.now() - started };
      this.costs.reports++;
      this.costs.report_rows_read += this.read;
      // The node's confirmation of its ring, for the control step.
      return { response: new Response(null, { status: 200 }), progress: first.progress ?? undefined };
    } catch (err) {
      if (err instanceof CoreError && err.code !== CoreError.E_NOMEM) {
        console.error(JSON.stringify({ component: "ring_control", event: "report_refused", error: err.message }));
        return { response: json(400, { error: `report refused: ${err.message}` }) };
      }
      throw err;
    }
  }

  private load(l: Msg): Msg {
    const stored = this.rows(`SELECT number, summary FROM node_reports WHERE node = ?`, l.node);
    const rows: Msg[] = [];
    const take = (found: any[]) => {
      for (const r of found) rows.push({ shard: r.shard, node: r.node, digest: BigInt("0x" + r.digest) });
    };
    for (let i = 0; i < l.shards.length; i += SQL_PARAMS_MAX) {
      const chunk = l.shards.slice(i, i + SQL_PARAMS_MAX);
      take(this.rows(`SELECT shard, node, digest FROM node_shards WHERE shard IN (${chunk.map(() => "?").join(", ")})`, ...chunk));
    }
    if (l.nodeShards) {
      take(this.rows(`SELECT b.shard AS shard, b.node AS node, b.digest AS digest FROM node_shards a
        JOIN node_shards b ON b.shard = a.shard WHERE a.node = ?`, l.node));
    }
    return {
      known: stored.length > 0,
      number: stored.length > 0 ? BigInt(stored[0].number) : 0n,
      rows,
      differing: this.differing(),
      // The node's load window lives in its summary row (the core measures the rate).
      summary: stored.length > 0 ? new Uint8Array(stored[0].summary as ArrayBuffer) : new Uint8Array(0),
      nowMs: BigInt(Date.now()),
      windowMs: this.windowMs,
    };
  }

  private write(node: number, reply: Msg): void {
    this.rows(
      `INSERT INTO node_reports(node, number, summary, received_ms) VALUES (?, ?, ?, ?)
       ON CONFLICT(node) DO UPDATE SET number = excluded.number, summary = excluded.summary, received_ms = excluded.received_ms`,
      node,
      Number(reply.number),
      reply.summary.slice().buffer,
      Date.now(),
    );
    for (const p of reply.put) {
      this.rows(`INSERT INTO node_shards(shard, node, digest) VALUES (?, ?, ?) ON CONFLICT(shard, node) DO UPDATE SET digest = excluded.digest`, p.shard, node, hex64(p.digest));
    }
    for (let i = 0; i < reply.drop.length; i += SQL_PARAMS_MAX - 1) {
      const chunk = reply.drop.slice(i, i + SQL_PARAMS_MAX - 1);
      this.rows(`DELETE FROM node_shards WHERE node = ? AND shard IN (${chunk.map(() => "?").join(", ")})`, node, ...chunk);
    }
    this.setControl("differing", String(reply.differing));
  }

  /** What the nodes last reported, for a resize's checks and the autoscale rule: the bytes
   *  they store, summed (every replica counted), each node's protocol version, by id (0: no
   *  report), and each node's measured load. */
  stored(): { storedBytes: bigint; versions: number[]; loads: Msg[] } {
    let bytes = 0n;
    const versions: number[] = [];
    const loads: Msg[] = [];
    for (const n of this.status().nodes) {
      bytes += BigInt(n.dbBytes);
      versions[n.id] = n.version;
      loads.push({ node: n.id, known: n.rateKnown, rateMilli: n.rateMilli, hotShard: n.hotShard, hotMilli: n.hotMilli });
    }
    return { storedBytes: bytes, versions: Array.from(versions, (v) => v ?? 0), loads };
  }

  /** OP_CLUSTER on the stored summary rows. */
  status(): Msg {
    const nodes = this.rows(`SELECT node, summary, received_ms FROM node_reports`).map((r: any) => ({
      node: r.node,
      summary: new Uint8Array(r.summary as ArrayBuffer),
      receivedMs: BigInt(r.received_ms),
    }));
    return this.call(Op.Cluster, { nodes, differing: this.differing(), phase: this.ring.phase, nowMs: BigInt(Date.now()), windowMs: this.windowMs });
  }

  /** GET /control/cluster: every node's status from its summary row. Nodes that never
   *  reported (or owe a report for long) are started, a bounded number per call. */
  cluster(extra: Msg = {}): Response {
    const started = performance.now();
    this.read = 0;
    const reply = this.status();
    for (const id of reply.wake as number[]) this.ctx.waitUntil(this.wake(id));
    this.costs.cluster = { rows_read: this.read, ms: performance.now() - started };
    return json(200, {
      ...extra,
      converged: reply.converged,
      nodes: reply.nodes.map((n: Msg) => ({
        id: String(n.id),
        reported: n.reported,
        unacked: Number(n.unacked),
        seq: Number(n.seq),
        db_bytes: Number(n.dbBytes),
        keys: Number(n.keys),
        digest: BigInt.asUintN(64, n.digest).toString(), // lint: encoding (uint64)
        gossip: {
          rounds: Number(n.rounds),
          messages_sent: Number(n.messagesSent),
          bytes_sent: Number(n.bytesSent),
          entries_sent: Number(n.entriesSent),
          entries_applied: Number(n.entriesApplied),
        },
        refused: Object.fromEntries(n.refused.map((c: Msg) => [c.name, Number(c.value)])),
      })),
    });
  }

  /** Starts a node (a request that runs no step): a started node reports what it owes. */
  private async wake(id: number): Promise<void> {
    try {
      const stub = this.env.NODE.get(this.env.NODE.idFromName(String(id)));
      const response: Response = await stub.fetch("https://node/internal/ring", { headers: { [NODE_ID_HEADER]: String(id) } });
      await response.arrayBuffer();
    } catch {
      // The next /v1/cluster tries again.
    }
  }
}
