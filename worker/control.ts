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
import { type AutoscaleConfig, parseConfig, ringSpan, type RingConfig } from "./config";
import { viewJson, type RingView } from "./ring";
import { NODE_ID_HEADER } from "./node";
import { ControlReports } from "./reports";

/** The control object's name under the CONTROL binding: there is one. */
export const CONTROL_NAME = "control";
/** Random bytes one control step may draw on (cluster id and secret). */
const CONTROL_RANDOM_BYTES = 48; // lint: abi (RINGKV_CLUSTER_ID_BYTES + RINGKV_SECRET_BYTES)
/** A LeaseRequest is a few varints: a larger body is refused unread. */
const LEASE_REQUEST_BYTES_MAX = 256; // lint: abi

type Msg = Record<string, any>;

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

const PHASES = [null, "joining", "switching", "leaving"] as const;

export class RingControl extends DurableObject {
  private readonly sql: any;
  private core: Core | undefined;
  private reports: ControlReports | undefined;
  /** The CLUSTER_SIZE RingControl last applied, and the view, from its last step. */
  private applied: number | undefined;
  private lastView: RingView | undefined;

  constructor(ctx: any, env: any) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS control(name TEXT PRIMARY KEY, value BLOB NOT NULL)`);
  }

  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const parsed = parseConfig(this.env as Record<string, unknown>);
    if (parsed.error !== undefined) return json(503, { error: parsed.error });
    const config = parsed.config!;
    try {
      if (url.pathname === "/control/report" && request.method === "POST") return await this.report(config, request);
      if (url.pathname === "/control/cluster" && request.method === "GET") return this.cluster(config);
      if (url.pathname === "/control/lease" && request.method === "POST") return await this.lease(config, request);
      if (url.pathname === "/control/resize" && request.method === "POST") return await this.resize(config, request);
      if (url.pathname === "/control/stats" && request.method === "GET" && config.faultsEnabled) return json(200, this.reportsOf(config).costs);
      if (url.pathname !== "/control/ring" || request.method !== "POST") return json(404, { error: "not found" });
      let body: any;
      try {
        body = await request.json();
      } catch {
        return json(400, { error: "expected a JSON body" });
      }
      const reported = Number(body?.reported_size ?? 0);
      if (!Number.isInteger(reported) || reported < 0 || reported > 1024) return json(400, { error: "bad reported_size" }); // lint: abi (RINGKV_CLUSTER_SIZE_MAX)
      const { view } = this.step(config, { reportedSize: reported, secretNeeded: body?.secret_needed === true });
      return json(200, viewJson(view));
    } catch (err) {
      if (err instanceof CoreError) {
        console.error(JSON.stringify({ component: "ring_control", event: "refused", error: err.message }));
        return json(503, { error: `ring control: ${err.message}` });
      }
      throw err;
    }
  }

  /** The alarm: epochs not confirmed yet are sent again (the core says to whom and when). */
  async alarm(): Promise<void> {
    const parsed = parseConfig(this.env as Record<string, unknown>);
    if (parsed.error !== undefined) return;
    const config = parsed.config!;
    // With AUTOSCALE the rule looks at the nodes' loads (one summary row per node).
    this.step(config, config.autoscale !== undefined ? { ...this.reportsOf(config).stored(), storedKnown: true } : {});
  }

  /** The reports, on a placement core on the ring as this object holds it (rebuilt when the
   *  ring moves on: a transition's nodes are old ∪ new). */
  private reportsOf(config: RingConfig): ControlReports {
    // The ring from this instance's last step (a step persists whatever it changes, and the
    // ring changes only in steps); one step only when there was none yet.
    const ring = (this.lastView ?? this.step(config, {}).view).ring;
    if (this.reports === undefined || this.reports.broken || this.reports.epoch !== ring.epoch) {
      this.reports = new ControlReports(this.ctx, this.env, this.sql, config, ring);
    }
    return this.reports;
  }

  /** A node's report: kept, and its confirmation of its ring taken by the control step. */
  private async report(config: RingConfig, request: Request): Promise<Response> {
    const taken = await this.reportsOf(config).take(request);
    if (taken.progress !== undefined) this.confirm(config, taken.progress);
    return taken.response;
  }

  /** A node's progress through the control step. A confirmation that cannot be true (an
   *  epoch this object never wrote) is logged only. */
  private confirm(config: RingConfig, progress: Msg): void {
    try {
      this.step(config, { progress });
    } catch (err) {
      if (!(err instanceof CoreError)) throw err;
      console.error(JSON.stringify({ component: "ring_control", event: "progress_refused", error: err.message, progress: { ...progress, epoch: String(progress.epoch) } }));
    }
  }

  /** POST /control/resize {"size"}: the control step decides (SPEC: POST /v1/admin/cluster). */
  private async resize(config: RingConfig, request: Request): Promise<Response> {
    let body: any;
    try {
      body = await request.json();
    } catch {
      return json(400, { error: "expected a JSON body: {\"size\": M}" });
    }
    const size = body?.size;
    const least = config.replicasAll ? 1 : config.replicas;
    if (typeof size !== "number" || !Number.isInteger(size) || size < 0 || size > 4294967295) { // lint: abi (uint32)
      return json(400, { error: `size must be an integer in ${least} … 1024` });
    }
    const taken = this.step(config, { resize: { size }, ...this.reportsOf(config).stored(), storedKnown: true });
    const answer = taken.reply.resize;
    const ring = taken.view.ring;
    if (answer.status === 400 || answer.status === 409) return json(answer.status, { error: answer.error }); // lint: http-status
    if (answer.status === 200) return json(200, { epoch: ring.epoch, from: size, to: size, phase: null });
    return json(202, { epoch: ring.epoch, from: ring.from, to: ring.to, phase: PHASES[ring.phase] });
  }

  /** Carries a step's resize actions out: arms the alarm for re-sending, and sends the
   *  current epoch to the nodes it named; each confirmation goes through the step again
   *  (and may move the transition on: the next epoch then goes out the same way). */
  private carryOut(config: RingConfig, reply: Msg, view: RingView): void {
    if (Number(reply.alarmMs) > 0) {
      this.ctx.storage.setAlarm(Number(reply.alarmMs)).catch((err: Error) => console.error(`ringkv control: setting the alarm failed: ${err.message}`));
    }
    for (const node of reply.sendTo as number[]) {
      const sent = this.sendRing(node, view).then((progress) => {
        if (progress !== undefined) this.confirm(config, progress);
      });
      // Not tied to the request that led here (its caller's connection): the object runs
      // it to the end, and the alarm re-sends whatever is lost.
      void sent.catch((err: Error) => console.error(`ringkv control: sending the ring to node ${node} failed: ${err.message}`));
    }
  }

  /** The ring to one node (POST /internal/ring): its confirmation, or undefined. */
  private async sendRing(node: number, view: RingView): Promise<Msg | undefined> {
    const env = this.env as any;
    try {
      const stub = env.NODE.get(env.NODE.idFromName(String(node)));
      const response: Response = await stub.fetch("https://node/internal/ring", {
        method: "POST",
        headers: { "Content-Type": "application/json", [NODE_ID_HEADER]: String(node) },
        body: JSON.stringify(viewJson({ ...view, secret: undefined })),
      });
      const body = (await response.json().catch(() => undefined)) as Msg | undefined;
      if (response.status !== 200 || body === undefined) return undefined; // lint: http-status
      // Only a node the ring no longer has may confirm with nothing to copy or drop.
      if (body.outside === true) return node >= ringSpan(view.ring) ? { node, epoch: BigInt(body.epoch), copying: 0, dropping: 0 } : undefined;
      return { node: body.node, epoch: BigInt(body.epoch), copying: body.copying, dropping: body.dropping };
    } catch {
      return undefined;
    }
  }

  /** GET /control/cluster: the nodes' statuses, and the ring and its transition. */
  private cluster(config: RingConfig): Response {
    const { reply, view } = this.step(config, config.autoscale !== undefined ? { ...this.reportsOf(config).stored(), storedKnown: true } : {});
    const reports = this.reportsOf(config);   // on the ring of the step just taken
    const ring = view.ring;
    const t = reply.transition;
    return reports.cluster({
      ring,
      transition:
        ring.phase === 0 || t === undefined
          ? null
          : {
              from: ring.from,
              to: ring.to,
              phase: PHASES[ring.phase],
              shards_moving: reports.shardsMoving(),
              shards_done: PHASES[ring.phase] === "leaving" ? Math.max(0, reports.shardsMoving() - Number(t.dropping)) : 0,
              waiting_for: t.waitingFor.map(String),
            },
      ...(config.autoscale === undefined ? {} : { autoscale: autoscaleJson(config.autoscale, reply) }),
    });
  }

  /** A node's LeaseRequest through the control step: the block is persisted with the state
   *  before the LeaseReply goes back. Refusals (malformed, an unknown node id, a counter
   *  too high) are 400 and grant nothing. */
  private async lease(config: RingConfig, request: Request): Promise<Response> {
    const body = new Uint8Array(await request.arrayBuffer());
    if (body.length === 0 || body.length > LEASE_REQUEST_BYTES_MAX) return json(400, { error: "bad lease request" });
    try {
      const lease = this.step(config, { lease: body }).reply.lease;
      return new Response(lease, { status: 200, headers: { "Content-Type": "application/octet-stream" } }); // lint: http-status
    } catch (err) {
      if (err instanceof CoreError && err.code !== CoreError.E_NOMEM) {
        console.error(JSON.stringify({ component: "ring_control", event: "lease_refused", error: err.message }));
        return json(400, { error: `lease refused: ${err.message}` });
      }
      throw err;
    }
  }

  /** One control step: stored state in, new state persisted, its resize actions carried
   *  out (the epochs it sends go out after the answer), the reply and view out. */
  private step(config: RingConfig, extra: Msg): { reply: Msg; view: RingView } {
    // A changed CLUSTER_SIZE is judged against what the nodes store, like a POST: the
    // counts go in while this object's value differs from the one last applied.
    if (extra.storedKnown === undefined && this.applied !== config.clusterSize && this.reports !== undefined && !this.reports.broken) {
      extra = { ...extra, ...this.reports.stored(), storedKnown: true };
    }
    const rows = this.sql.exec(`SELECT value FROM control WHERE name = 'state'`).toArray();
    const state = rows.length > 0 ? new Uint8Array(rows[0].value as ArrayBuffer) : new Uint8Array(0);
    const random = crypto.getRandomValues(new Uint8Array(CONTROL_RANDOM_BYTES));
    this.core ??= new Core(wasmModule as WebAssembly.Module);
    let reply;
    try {
      reply = this.core.call(Op.Control, {
        state,
        clusterSize: config.clusterSize,
        random,
        replicas: config.replicas,
        replicasAll: config.replicasAll,
        resizing: true,
        keyBytesMax: BigInt(config.maxKeyBytes),
        maxSiblings: config.maxSiblings,
        nowMs: BigInt(Date.now()),
        ...(config.autoscale === undefined ? {} : { autoscale: autoscaleMsg(config.autoscale) }),
        ...extra,
      });
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
    if (reply.autoscaleNews) console.log(JSON.stringify({ component: "ring_control", event: "autoscale", decision: decisionJson(reply.autoscale) }));
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
    this.applied = reply.clusterSizeApplied;
    this.lastView = view;
    this.carryOut(config, reply, view);
    return { reply, view };
  }
}

/** The Autoscale message of ControlRequest. */
function autoscaleMsg(a: AutoscaleConfig): Msg {
  const ms = (seconds: number) => BigInt(seconds) * 1000n; // lint: encoding (seconds to milliseconds)
  return { min: a.min, max: a.max, targetRps: BigInt(a.targetRps), windowMs: ms(a.windowSeconds), shrinkMs: ms(a.shrinkSeconds), cooldownMs: ms(a.cooldownSeconds) };
}

/** Rates in thousandths of a request per second, as the core measures them. */
const rps = (milli: bigint | number) => Number(milli) / 1000; // lint: encoding (thousandths)

/** An AutoscaleDecision as JSON (the log line, /v1/cluster's last_decision). */
function decisionJson(d: Msg): Record<string, unknown> {
  return {
    at: new Date(Number(d.atMs)).toISOString(),
    action: d.actionName,
    size: d.size,
    to: d.to,
    mean_rps: rps(d.meanMilli),
    nodes_measured: d.nodesKnown,
    busiest: { node: d.hotNode, rps: rps(d.hotRateMilli), shard: d.hotShard, shard_share: rps(d.hotMilli) },
    ...(d.belowSinceMs > 0n ? { below_since: new Date(Number(d.belowSinceMs)).toISOString() } : {}),
    ...(d.error !== "" ? { refused: d.error } : {}),
  };
}

/** /v1/cluster's autoscale field (SPEC: GET /v1/cluster). */
function autoscaleJson(a: AutoscaleConfig, reply: Msg): Record<string, unknown> {
  return {
    min: a.min,
    max: a.max,
    target_rps: a.targetRps,
    observed_rps: reply.autoscale === undefined ? null : rps(reply.autoscale.meanMilli),
    last_decision: reply.autoscaleLast === undefined ? null : decisionJson(reply.autoscaleLast),
  };
}
