// RingControl: the one control Durable Object (class RingControl, SQLite). It executes the
// core's control step (RINGKV_OP_CONTROL): it persists the ControlState the step hands
// back and answers with the ring, the cluster id and, when TOKEN_SECRET is unset, the
// generated secret. It is never on the request path: only a node without a ring asks.
// It also keeps each node's latest report (reports.ts) and answers /v1/cluster from them.
//
// Internal routes (reachable only through the CONTROL binding, from nodes and the Worker,
// which never forwards a client's path here):
//   POST /control/ring     {reported_size, secret_needed} -> the RingView as JSON
//   POST /control/report   a node's NodeReport (200: persisted; 4xx: refused, nothing kept)
//   POST /control/lease    a node's LeaseRequest (200: the LeaseReply, after the block is
//                          persisted; 4xx JSON: refused, nothing granted)
//   GET  /control/cluster  the nodes' statuses and `converged`, as JSON for /v1/cluster
//   GET  /control/stats    SQL rows of the last report and status (only with FAULTS)
import { DurableObject } from "cloudflare:workers";
import wasmModule from "../build/ringkv.wasm";
import { Core, CoreError, Op } from "./core";
import { parseConfig, type RingConfig } from "./config";
import { viewJson, type RingView } from "./ring";
import { ControlReports } from "./reports";

/** The control object's name under the CONTROL binding: there is one. */
export const CONTROL_NAME = "control";
/** Random bytes one control step may draw on (cluster id and secret). */
const CONTROL_RANDOM_BYTES = 48; // lint: abi (RINGKV_CLUSTER_ID_BYTES + RINGKV_SECRET_BYTES)
/** A LeaseRequest is a few varints: a larger body is refused unread. */
const LEASE_REQUEST_BYTES_MAX = 256; // lint: abi

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

export class RingControl extends DurableObject {
  private readonly sql: any;
  private core: Core | undefined;
  private reports: ControlReports | undefined;

  constructor(ctx: any, env: any) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS control(name TEXT PRIMARY KEY, value BLOB NOT NULL)`);
  }

  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const parsed = parseConfig(this.env as Record<string, unknown>);
    if (parsed.error !== undefined) return json(503, { error: parsed.error });
    if (url.pathname === "/control/report" && request.method === "POST") return this.reportsOf(parsed.config!).take(request);
    if (url.pathname === "/control/cluster" && request.method === "GET") return this.reportsOf(parsed.config!).cluster();
    if (url.pathname === "/control/lease" && request.method === "POST") return this.lease(parsed.config!, request);
    if (url.pathname === "/control/stats" && request.method === "GET" && parsed.config!.faultsEnabled) return json(200, this.reportsOf(parsed.config!).costs);
    if (url.pathname !== "/control/ring" || request.method !== "POST") return json(404, { error: "not found" });
    let body: any;
    try {
      body = await request.json();
    } catch {
      return json(400, { error: "expected a JSON body" });
    }
    const reported = Number(body?.reported_size ?? 0);
    if (!Number.isInteger(reported) || reported < 0 || reported > 1024) return json(400, { error: "bad reported_size" }); // lint: abi (RINGKV_CLUSTER_SIZE_MAX)
    try {
      return json(200, viewJson(this.step(parsed.config!.clusterSize, reported, body?.secret_needed === true)));
    } catch (err) {
      if (err instanceof CoreError) {
        console.error(JSON.stringify({ component: "ring_control", event: "refused", error: err.message }));
        return json(503, { error: `ring control: ${err.message}` });
      }
      throw err;
    }
  }

  /** The reports, on a placement core at the ring's size (the ring as this object holds it;
   *  the ring does not change in this release, so it is taken once per instance). */
  private reportsOf(config: RingConfig): ControlReports {
    if (this.reports === undefined || this.reports.broken) {
      const view = this.step(config.clusterSize, 0, false);
      this.reports = new ControlReports(this.ctx, this.env, this.sql, config, view.ring);
    }
    return this.reports;
  }

  /** A node's LeaseRequest through the control step: the block is persisted with the state
   *  before the LeaseReply goes back. Refusals (malformed, an unknown node id, a counter
   *  too high) are 400 and grant nothing. */
  private async lease(config: RingConfig, request: Request): Promise<Response> {
    const body = new Uint8Array(await request.arrayBuffer());
    if (body.length === 0 || body.length > LEASE_REQUEST_BYTES_MAX) return json(400, { error: "bad lease request" });
    try {
      const lease = this.step(config.clusterSize, 0, false, body).lease;
      return new Response(lease, { status: 200, headers: { "Content-Type": "application/octet-stream" } }); // lint: http-status
    } catch (err) {
      if (err instanceof CoreError && err.code !== CoreError.E_NOMEM) {
        console.error(JSON.stringify({ component: "ring_control", event: "lease_refused", error: err.message }));
        return json(400, { error: `lease refused: ${err.message}` });
      }
      throw err;
    }
  }

  /** One control step: stored state in, new state persisted, the view out. */
  private step(clusterSize: number, reportedSize: number, secretNeeded: boolean): RingView;
  private step(clusterSize: number, reportedSize: number, secretNeeded: boolean, lease: Uint8Array): { view: RingView; lease: Uint8Array };
  private step(clusterSize: number, reportedSize: number, secretNeeded: boolean, lease?: Uint8Array): RingView | { view: RingView; lease: Uint8Array } {
    const rows = this.sql.exec(`SELECT value FROM control WHERE name = 'state'`).toArray();
    const state = rows.length > 0 ? new Uint8Array(rows[0].value as ArrayBuffer) : new Uint8Array(0);
    const random = crypto.getRandomValues(new Uint8Array(CONTROL_RANDOM_BYTES));
    this.core ??= new Core(wasmModule as WebAssembly.Module);
    let reply;
    try {
      reply = this.core.call(Op.Control, { state, clusterSize, reportedSize, random, secretNeeded, ...(lease !== undefined ? { lease } : {}) });
    } catch (err) {
      if (!(err instanceof CoreError)) this.core = undefined;
      throw err;
    }
    if (reply.state.length > 0) {
      this.sql.exec(
        `INSERT INTO control(name, value) VALUES ('state', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`,
        reply.state.slice().buffer,
      );
    }
    for (const line of reply.log as string[]) console.log(JSON.stringify({ component: "ring_control", event: "decision", message: line }));
    const v = reply.view;
    const view: RingView = {
      ring: {
        epoch: Number(v.ring.epoch),
        size: v.ring.size,
        from: v.ring.from,
        to: v.ring.to,
        phase: v.ring.phase,
        nodeIdsMax: v.ring.nodeIdsMax,
      },
      clusterId: v.clusterId,
      secret: v.secret.length > 0 ? v.secret : undefined,
    };
    return lease !== undefined ? { view, lease: reply.lease } : view;
  }
}
