// RingNode: one Durable Object is one node of the ring. It routes requests, owns the
// node's start-up (configuration check, the ring, the core) and its network sends; every
// event goes through the core's step (executor.ts), which decides everything. Storage is
// storage.ts, counters stats.ts, fault injection faults.ts.
//
// Internal routes (reachable only through the NODE binding, i.e. from the Worker and from
// other nodes; the Worker never forwards a client's path here):
//   POST /internal/write    client PUT/DELETE (key, token payload in headers; body = value)
//   GET  /internal/read     client GET (?siblings=1)
//   POST /internal/list     listing page: {prefix, after, limit} (base64url keys)
//   GET  /internal/dump     the admin dump (?cursor=)
//   POST /internal/push     gossip Push, or an anti-entropy repair request (answer: Push)
//   POST /internal/digest   anti-entropy DigestRequest (answer: DigestReply)
//   POST /internal/gc       tombstone collection GcQuery (answer: GcReply)
//   GET  /internal/ring     the ring, cluster id and generated secret, for a Worker isolate
//   POST /internal/faults   fault injection settings (only with FAULTS)
//   POST /internal/crash    ctx.abort() (only with FAULTS)
//   POST /internal/bulk     rows inserted directly, outside the core (only with FAULTS:
//                           the benchmark's seeding)
//   GET  /internal/report-cost  reports sent and the SQL rows their facts read (FAULTS)
//   POST /internal/catchup  a catch-up page (CatchupRequest; answer: CatchupReply)
//   GET  /internal/serves   whether the node serves client reads and writes of the key's
//                           shard (it is not catching up on it): {"serves": bool}
//   POST /internal/fence    wipes every table and starts again with no state (the admin
//                           fence): the node takes a fresh dot lease and catches up
import { DurableObject } from "cloudflare:workers";
import wasmModule from "../build/ringkv.wasm";
import { Core, CoreError, Op } from "./core";
import { decode } from "./pb";
import { coreConfig, parseConfig, ringSpan, type RingConfig } from "./config";
import { base64, base64url, unbase64url } from "./tokens";
import { CONTROL_NAME } from "./control";
import { NEED_SECRET_HEADER, RING_HEADER, STALE_RING_HEADER, headerEpoch, ringHeader, viewFromJson, viewJson, type RingView } from "./ring";
import { HttpError } from "./errors";
import { NO_FAULTS, heldPhase, normalizeFaults, reachable, skewOf, type Faults } from "./faults";
import { NodeStorage, blob, bytesOf, type Msg } from "./storage";
import { Stats } from "./stats";
import { Executor } from "./executor";

/** Header naming the node a request is for (the Worker and peers set it). */
export const NODE_ID_HEADER = "X-Ring-Node-Id";
/** Header on a node's 503 when it refuses to serve under this configuration. */
export const REFUSED_HEADER = "X-Ring-Refused";
/** Header on a node's 503 when it is catching up on the key's shard (its storage was
 *  lost, or it has no dot lease yet): the Worker asks another replica. */
export const CATCHING_UP_HEADER = "X-Ring-Catching-Up";
/** Header on a Worker's read asking for the node's local copy (a plain GET ?node=), served
 *  even while the node catches up. */
export const LOCAL_HEADER = "X-Ring-Local";
/** A client write's id (X-Ring-Write-Id, checked by the Worker), on /internal/write. */
export const WRITE_ID_HEADER = "X-Ring-Write-Id";
/** ?consistency of a write or read: one, quorum or all. */
export const CONSISTENCY_HEADER = "X-Ring-Consistency";
export const CONSISTENCY_LEVELS = ["one", "quorum", "all"];
/** On a node's 503 "not enough replicas": the write is durable there, not failed over. */
export const QUORUM_FAILED_HEADER = "X-Ring-Quorum-Failed";
/** The kinds gossip rounds and anti-entropy send (KIND_PUSH, KIND_DIGEST, KIND_GC). */
const GOSSIP_KINDS = [1, 2, 3]; // lint: abi
/** Header on a node's 400 to a peer: why it refused the whole message. */
const REFUSED_REASON_HEADER = "X-Ring-Refused-Reason";

/** Node ids run 0 .. 1023 (the HTTP API's, and the core's RINGKV_CLUSTER_SIZE_MAX). */
const NODE_IDS_MAX = 1024; // lint: api-limit
/** RINGKV_PEER_MESSAGE_BYTES_MAX (ringkv.h): a larger peer message is malformed (the core
 *  says so too; refusing it here spares copying it into the core). */
const PEER_MESSAGE_BYTES_MAX = 48 * 1024 * 1024; // lint: abi
const LIST_KEYS_MAX = 1000; // lint: api-limit
/** One admin dump page: at most this many keys, or this many bytes of values. */
const DUMP_KEYS_MAX = 100; // lint: api-limit
const DUMP_VALUE_BYTES_MAX = 8 * 1024 * 1024; // lint: platform-limit
/** The channel (StepRequest Kind) each peer path carries. */
const KIND_PATHS = ["", "/internal/push", "/internal/digest", "/internal/gc", "", "", "/internal/catchup"];
/** Refuted ring claims a node remembers (a bound on memory, not a policy). */
const REFUTED_CLAIMS_KEPT = 64; // lint: platform-limit
/** Kind KIND_REPORT (wasm/ringkv.proto): a NodeReport for RingControl. */
const KIND_REPORT = 4; // lint: abi
/** Kind KIND_LEASE: a LeaseRequest for RingControl. */
const KIND_LEASE = 5; // lint: abi
/** RingControl's routes for reports and leases (worker/control.ts). */
const REPORT_PATH = "/control/report";
const LEASE_PATH = "/control/lease";

const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

function octets(body: Uint8Array): Response {
  return new Response(body, { status: 200, headers: { "Content-Type": "application/octet-stream" } });
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
  while (end > 0 && prefix[end - 1] === 0xff) end--; // lint: encoding
  if (end === 0) return undefined;
  const out = prefix.slice(0, end);
  out[end - 1]++;
  return out;
}

export class RingNode extends DurableObject {
  private readonly sql: any;
  private readonly storage: NodeStorage;
  private readonly stats: Stats;
  private readonly executor: Executor;
  private config: RingConfig | undefined;
  private error: string | undefined;
  private nodeId: number | undefined;
  // The ring as RingControl gave it (persisted); undefined until the node first asks.
  private ringView: RingView | undefined;
  private ringPending: Promise<void> | undefined;
  /** Epochs messages claimed that RingControl's ring did not reach: not asked about again
   *  (a broken sender repeating a claim cannot make every message cost a question to
   *  RingControl; a genuine epoch, which RingControl also pushes, is never among them). */
  private readonly ringRefuted = new Set<number>();
  private coreInstance: Core | undefined;
  private coreGeneration = 0;
  /** The alarm armed, in the node's clock (the core's times); undefined: none. */
  private alarmAtMs: number | undefined;
  private faults: Faults = NO_FAULTS;
  /** The outcome of the lease request in flight, once the core has taken it. */
  private leaseSettled: Promise<void> | undefined;
  /** The wipe the core asked for (a fence due), until it is done. */
  private wiping: Promise<void> | undefined;

  constructor(ctx: any, env: any) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.storage = new NodeStorage(this.sql, ctx.storage);
    this.stats = new Stats(this.sql);
    this.executor = new Executor({
      core: () => this.core(),
      coreGeneration: () => this.coreGeneration,
      dropCore: () => {
        console.error(`ringkv node ${this.nodeId}: dropping the core; the next event rebuilds it from storage`);
        this.coreInstance = undefined;
      },
      storage: this.storage,
      stats: this.stats,
      nowMs: () => this.nowMs(),
      send: (peer, kind, message, timeoutMs, onPath) =>
        !onPath && this.gossipStopped(kind)
          ? Promise.resolve({})   // fault injection: lost
          : kind === KIND_REPORT
          ? this.toControl(REPORT_PATH, message, timeoutMs)
          : kind === KIND_LEASE
            ? this.toControl(LEASE_PATH, message, timeoutMs)
            : this.exchange(peer, KIND_PATHS[kind] ?? "", message, timeoutMs),
      sent: (kind, settled) => {
        if (kind === KIND_LEASE) this.leaseSettled = settled;
      },
      setAlarm: (atMs) => this.setAlarm(atMs),
      wipe: () => {
        this.wiping ??= this.wipe().finally(() => (this.wiping = undefined));
      },
      record: (performed) => {
        if (!this.config?.recordCalls) return;
        this.recordCall(0, utf8.encode(JSON.stringify({ ...performed, alarmMs: this.alarmAtMs ?? 0 })), 0, EMPTY);
      },
    });
    ctx.blockConcurrencyWhile(async () => {
      this.start();
      // Every node re-arms its alarm when it starts (timers do not survive eviction).
      if (this.coreInstance !== undefined) this.armOnStart();
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
    this.storage.createSchema();
    // The cluster's shape is fixed at first start. Its size is the ring's (RingControl):
    // a release-1 node's persisted cluster_size only tells RingControl the size to start at.
    const c = this.config;
    const fixed: [string, number | string][] = [
      ["replicas", c.replicasAll ? "all" : c.replicas],
      ["shards", c.shards],
    ];
    const mismatches: string[] = [];
    for (const [name, value] of fixed) {
      const stored = this.storage.getConf(name);
      if (stored === undefined) this.storage.setConf(name, String(value));
      else if (stored !== String(value)) mismatches.push(`${name} is ${stored} in storage but ${value} in the configuration`);
    }
    if (mismatches.length > 0) {
      this.error = `configuration mismatch: ${mismatches.join("; ")} (fixed in this release)`;
      console.error(`ringkv node: ${this.error}`);
      return;
    }
    const faults = this.storage.getConf("faults");
    if (faults !== undefined) {
      try {
        // Settings kept from before a change of MAX_CLOCK_SKEW_MS (or of the rules) are
        // checked again: anything no longer allowed is dropped.
        const kept = JSON.parse(faults);
        this.faults = normalizeFaults({ ...kept, skew_ms: kept.skewMs, ring_phase_held: kept.ringPhaseHeld, deliver_held: undefined }, c.maxClockSkewMs);
      } catch {
        this.storage.setConf("faults", JSON.stringify(this.faults));
      }
    }
    this.stats.migrate();
    const view = this.storage.getConf("ring_view");
    if (view !== undefined) this.ringView = viewFromJson(JSON.parse(view));
    const id = this.storage.getConf("node_id");
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
    const reported = Number(this.storage.getConf("cluster_size") ?? "0");
    const stub = env.CONTROL.get(env.CONTROL.idFromName(CONTROL_NAME));
    const response: Response = await stub.fetch("https://control/control/ring", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reported_size: reported, secret_needed: needSecret || this.config!.tokenSecrets === undefined }),
    });
    const text = await response.text();
    if (response.status !== 200) throw new HttpError(503, `RingControl answered ${response.status}: ${text.slice(0, 200)}`); // lint: http-status
    const view = viewFromJson(JSON.parse(text));
    if (this.ringView === undefined) {
      this.storage.setConf("ring_view", JSON.stringify(viewJson(view)));
      this.ringView = view;
      if (this.nodeId !== undefined && this.coreInstance === undefined) {
        this.initCore();
        if (this.coreInstance !== undefined) this.armOnStart();
      }
    } else {
      this.adopt(view);
    }
  }

  /** A message showed a newer ring than this node's: RingControl's ring is taken (the
   *  message's claim is only a reason to ask) before the message is acted on. */
  private async catchUpRing(claimed: number, fromControl = false): Promise<void> {
    if (claimed <= this.ringView!.ring.epoch || (this.ringRefuted.has(claimed) && !fromControl)) return;
    // An ask already in flight may have started before RingControl wrote this epoch: one
    // more after it (RingControl's own push always gets an answer to the epoch it names).
    for (let asks = 0; asks < 2 && this.ringView!.ring.epoch < claimed; asks++) {
      this.ringPending ??= this.askControl(false).finally(() => {
        this.ringPending = undefined;
      });
      await this.ringPending;
    }
    // RingControl writes an epoch before anyone can show it: a claim beyond its ring is not
    // asked about again (the last few such claims are remembered).
    if (this.ringView!.ring.epoch < claimed) {
      if (this.ringRefuted.size >= REFUTED_CLAIMS_KEPT) this.ringRefuted.clear();
      this.ringRefuted.add(claimed);
    }
  }

  /** A newer ring (SPEC: Resizing): persisted before the node acts on it, then the core is
   *  rebuilt on it (the core adopts it: new peers acknowledged from its change sequence,
   *  the shards it joins caught up). An older or equal one changes nothing. Returns the
   *  node's progress on the ring it holds, for RingControl. */
  private adopt(view: RingView): Msg | undefined {
    const held = this.ringView!;
    const stop = this.config!.faultsEnabled ? this.faults.ringPhaseHeld?.[String(this.nodeId)] : undefined;
    // Fault injection: a node told to hold at a phase stays on the ring it has.
    const refused = stop !== undefined && heldPhase(view.ring.phase) >= stop;
    if (view.ring.epoch > held.ring.epoch && !refused) {
      if (view.clusterId.length !== held.clusterId.length || view.clusterId.some((b, i) => b !== held.clusterId[i])) {
        throw new HttpError(400, "a ring of another cluster");
      }
      const next: RingView = { ...view, secret: view.secret ?? held.secret };
      this.storage.setConf("ring_view", JSON.stringify(viewJson(next)));
      this.ringView = next;
      console.log(JSON.stringify({ component: "node", node: this.nodeId, event: "ring_adopted", ring: next.ring }));
      if (this.nodeId === undefined) return undefined;
      this.coreInstance = undefined;
      this.initCore();
    }
    if (this.nodeId === undefined || this.coreInstance === undefined) return undefined;
    return this.armOnStart();
  }

  /** Every node re-arms its alarm when it starts (the core says when). A failure is only
   *  logged: the next event tries again. */
  private armOnStart(): Msg | undefined {
    try {
      return this.executor.run({ start: true }, EMPTY).progress;
    } catch (err) {
      console.error(`ringkv node ${this.nodeId}: arming the alarm at start failed: ${(err as Error).message}`);
      return undefined;
    }
  }

  /** (Re)creates the core from storage: configuration, node and step state, peers, shard
   *  digests. A node persisted by an earlier build has no step state: its clock, counter
   *  and sequence come from the config rows it kept. */
  private initCore(): void {
    if (this.nodeId! >= ringSpan(this.ringView!.ring)) {
      // A node the ring no longer has (after a shrink): it serves nothing and arms no alarm
      // (and answers to what its last core sent are dropped with it).
      this.coreInstance = undefined;
      this.coreGeneration++;
      this.executor.abandonQuorum();
      this.setAlarm(undefined);
      return;
    }
    const core = new Core(wasmModule as WebAssembly.Module);
    if (this.config!.recordCalls) core.tap = (op, request, code, reply) => this.recordCall(op, request, code, reply);
    const conf = (name: string) => this.storage.getConf(name) ?? "0";
    try {
      core.call(Op.Init, {
        config: { ...coreConfig(this.config!, this.ringView!.ring), reports: true, leases: true },
        node: { node: this.nodeId, clock: BigInt(conf("clock")), counter: BigInt(conf("counter")) },
        shards: this.storage.shardDigests(),
        state: this.storage.stepState(),
        peers: this.storage.peerRows(),
        seq: BigInt(conf("seq")),
      });
    } catch (err) {
      this.error = `the core refused the configuration: ${(err as Error).message}`;
      console.error(`ringkv node: ${this.error}`);
      return;
    }
    this.coreInstance = core;
    this.coreGeneration++;
    this.executor.abandonQuorum();
    const filled = this.storage.backfillPositions((keys) => core.call(Op.Place, { keys, shards: [] }).placements.map((p: any) => p.position));
    if (filled > 0) console.log(`ringkv node ${this.nodeId}: gave ${filled} rows of an earlier build their key positions`);
  }

  /** Record/replay (RECORD_CALLS with FAULTS): every core call, and (op 0) what each step's
   *  actions performed, in order, kept across restarts. */
  private recordCall(op: number, request: Uint8Array, code: number, reply: Uint8Array): void {
    this.callsTable();
    this.sql.exec(`INSERT INTO core_calls(op, code, request, reply) VALUES (?, ?, ?, ?)`, op, code, blob(request), blob(reply));
  }

  private callsTable(): void {
    this.sql.exec(`CREATE TABLE IF NOT EXISTS core_calls(n INTEGER PRIMARY KEY AUTOINCREMENT, op INTEGER NOT NULL,
      code INTEGER NOT NULL, request BLOB NOT NULL, reply BLOB NOT NULL)`);
  }

  /** The recorded calls after `after`, a page at a time (hex). */
  private handleCalls(url: URL): Response {
    if (!this.config!.recordCalls) return json(404, { error: "not found" });
    const after = Number(url.searchParams.get("after") ?? "0");
    this.callsTable();
    const rows = this.sql
      .exec(`SELECT n, op, code, request, reply FROM core_calls WHERE n > ? ORDER BY n LIMIT ?`, after, DUMP_KEYS_MAX)
      .toArray();
    const hex = (b: unknown) => Array.from(bytesOf(b), (x) => x.toString(16).padStart(2, "0")).join(""); // lint: encoding
    return json(200, { calls: rows.map((r: any) => [r.n, r.op, r.code, hex(r.request), hex(r.reply)]), more: rows.length === DUMP_KEYS_MAX });
  }

  /** The core, rebuilt from storage after a trap or a refused write. */
  private core(): Core {
    if (this.coreInstance === undefined && this.ringView !== undefined && this.nodeId !== undefined) this.initCore();
    if (this.coreInstance === undefined && this.ringView !== undefined && this.nodeId !== undefined && this.nodeId >= ringSpan(this.ringView.ring)) {
      // Placed on an older ring: the sender takes this one (the reply's ring header).
      throw new CoreError(CoreError.E_NOT_SERVING, `node ${this.nodeId} is outside the ring (size ${this.ringView.ring.size})`);
    }
    if (this.coreInstance === undefined) throw new HttpError(503, this.error ?? "core unavailable");
    return this.coreInstance;
  }

  /** OP_READ (reads change nothing, so they need no step). A trap drops the instance: the
   *  next call rebuilds it from storage. */
  private coreRead(request: Msg, op: typeof Op.Read | typeof Op.ClientRead): Msg {
    const core = this.core();
    try {
      return core.call(op, request);
    } catch (err) {
      if (!(err instanceof CoreError)) this.coreInstance = undefined;
      throw err;
    }
  }

  /** The node's notion of now: wall time plus an injected skew (faults only). */
  private nowMs(): number {
    const skew = this.config?.faultsEnabled ? skewOf(this.faults, this.nodeId) : 0;
    return Math.max(0, Date.now() + skew);
  }

  /** Arms the alarm at `atMs` of the node's clock: the alarm runs on wall time, so less any
   *  injected skew. */
  private setAlarm(atMs: number | undefined): void {
    if (atMs === this.alarmAtMs) return;
    this.alarmAtMs = atMs;
    const skew = this.config?.faultsEnabled ? skewOf(this.faults, this.nodeId) : 0;
    const done = atMs === undefined ? this.ctx.storage.deleteAlarm() : this.ctx.storage.setAlarm(atMs - skew);
    done.catch((err: Error) => {
      this.alarmAtMs = undefined;
      console.error(`ringkv node ${this.nodeId}: setting the alarm failed: ${err.message}`);
    });
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
    const peerPath = KIND_PATHS.indexOf(url.pathname);
    try {
      await this.ensureRing(request.headers.get(NEED_SECRET_HEADER) === "1");
      const idHeader = request.headers.get(NODE_ID_HEADER);
      if (idHeader !== null && this.nodeId === undefined) {
        const id = Number(idHeader);
        if (!/^[0-9]{1,4}$/.test(idHeader) || id >= NODE_IDS_MAX) return json(400, { error: "bad node id" });
        if (id >= ringSpan(this.ringView!.ring)) {
          await this.catchUpRing(headerEpoch(request.headers.get(RING_HEADER)));
          if (id >= ringSpan(this.ringView!.ring)) return json(400, { error: `node ${id} is outside the ring (size ${this.ringView!.ring.size})` });
        }
        this.nodeId = id;
        this.storage.setConf("node_id", String(id));
        this.initCore();
        if (this.error !== undefined) return json(503, { error: this.error }, { [REFUSED_HEADER]: "1" });
        this.armOnStart();
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
        !(url.pathname === "/internal/ring" && request.method === "GET")
      ) {
        return json(503, { error: `node ${this.nodeId} is down (fault injection)` });
      }
      // Any message showing a newer ring: this node takes it first (SPEC: Resizing).
      await this.catchUpRing(headerEpoch(request.headers.get(RING_HEADER)));
      if (peerPath > 0) {
        const body = await peerBody(request);
        return octets(this.executor.run({ message: { kind: peerPath, message: body } }, body).reply);
      }
      switch (url.pathname) {
        case "/internal/ring":
          if (request.method === "POST") {
            // RingControl sends each epoch of a resize. The ring taken is RingControl's own
            // answer (the body only says which epoch to ask for, so no sender can make this
            // node adopt a ring RingControl never wrote); adopted (persisted) before the
            // answer, which confirms it with the node's progress.
            let view: RingView;
            try {
              view = viewFromJson(await request.json());
            } catch {
              return json(400, { error: "malformed ring" });
            }
            await this.catchUpRing(view.ring.epoch, true);
            if (this.nodeId >= ringSpan(this.ringView!.ring)) return json(200, { node: this.nodeId, epoch: this.ringView!.ring.epoch, outside: true });
            this.core(); // rebuilt from storage if it was dropped, else a 503: nothing confirmed
            const progress = this.adopt(this.ringView!);
            if (progress === undefined) return json(503, { error: `node ${this.nodeId} could not step on the ring` });
            return json(200, { node: progress.node, epoch: Number(progress.epoch), copying: progress.copying, dropping: progress.dropping });
          }
          return json(200, viewJson(this.ringView!));
        case "/internal/write":
          return await this.handleWrite(request);
        case "/internal/read":
          return await this.handleRead(request, url);
        case "/internal/fence":
          return await this.fence(url.searchParams.get("force") === "true");
        case "/internal/serves":
          return await this.handleServes(request);
        case "/internal/list":
          return this.handleList(await jsonBody(request));
        case "/internal/dump":
          return this.handleDump(url);
        case "/internal/calls":
          return this.handleCalls(url);
        case "/internal/bulk":
          return this.handleBulk(await jsonBody(request));
        case "/internal/report-cost":
          if (!this.config!.faultsEnabled) return json(404, { error: "not found" });
          return json(200, { ...this.executor.reportCost, stored_rows: this.sql.exec(`SELECT count(*) AS n FROM keys`).one().n });
        case "/internal/faults":
          return await this.handleFaults(await jsonBody(request));
        case "/internal/crash":
          if (!this.config!.faultsEnabled) return json(404, { error: "not found" });
          this.ctx.abort("crash requested by /v1/admin/nodes/{id}/crash");
          return json(200, { crashed: this.nodeId });
      }
      return json(404, { error: "not found" });
    } catch (err) {
      return this.failure(err, peerPath > 0);
    }
  }

  /** An error as the node's answer: client-caused ones are 4xx, a peer's bad message 400
   *  with the reason (REFUSED_REASON_HEADER), so that the peer drops it. */
  private failure(err: unknown, fromPeer: boolean): Response {
    if (err instanceof HttpError) return json(err.status, { error: err.message });
    if (err instanceof CoreError) {
      switch (err.code) {
        case CoreError.E_TOKEN:
          return json(400, { error: "invalid context token" });
        case CoreError.E_SKEW:
          return json(400, { error: "invalid context token: its clock is too far ahead" });
        case CoreError.E_WRITE_ID:
          return json(409, { error: "write id reused with another value" });
        case CoreError.E_SIBLINGS:
          return json(409, { error: "too many siblings: read with ?siblings=1 and resolve first" });
        case CoreError.E_KEY_BYTES:
          return json(409, { error: "the key's siblings would exceed MAX_KEY_BYTES: read with ?siblings=1 and resolve first" });
        case CoreError.E_LEASE:
          return json(503, { error: `node ${this.nodeId} has no dot lease yet` }, { [CATCHING_UP_HEADER]: "1" });
        case CoreError.E_CATCHING_UP:
          return json(503, { error: `node ${this.nodeId} is catching up on this shard` }, { [CATCHING_UP_HEADER]: "1" });
        case CoreError.E_NOT_SERVING:
          // The sender placed the key on an older ring: it takes this one (the reply's
          // ring header) and places the key again.
          this.countRefused("stale_ring");
          // The ring goes with the refusal, so the sender need not ask a node still behind.
          return json(
            421, // lint: http-status
            { error: `node ${this.nodeId} does not serve this key in epoch ${this.ringView!.ring.epoch}`, ring: this.ringView!.ring },
            { [STALE_RING_HEADER]: "1" },
          );
        case CoreError.E_FENCING:
          return json(503, { error: `node ${this.nodeId} is being fenced: it takes no client write` }, { [CATCHING_UP_HEADER]: "1" });
        case CoreError.E_VALUE:
          if (fromPeer) {
            // This node's own request to its core came out too large (the rows a message
            // needs): not the peer's fault, so the peer keeps it unacknowledged.
            this.countRefused("request_too_large");
            return json(503, { error: "the rows this message needs exceed one core call; try again later" });
          }
          return json(413, { error: "value or content type too large" });
        case CoreError.E_DECODE:
          if (fromPeer) this.countRefused("malformed");
          return json(400, { error: "malformed message" }, { [REFUSED_REASON_HEADER]: "malformed" });
        case CoreError.E_PROTOCOL:
          this.countRefused("protocol_version");
          return json(400, { error: "unknown protocol version" }, { [REFUSED_REASON_HEADER]: "protocol_version" });
      }
      console.error(`ringkv node ${this.nodeId}: ${err.message}`);
      return json(500, { error: err.message });
    }
    console.error(`ringkv node ${this.nodeId}: ${(err as Error).stack ?? err}`);
    return json(500, { error: "internal error" });
  }

  /** A peer's message refused before its step could take it: the core counts it (and so
   *  reports it); counted here only when the core is unavailable. */
  private countRefused(reason: string): void {
    try {
      this.executor.run({ refused: reason }, EMPTY);
    } catch {
      this.stats.add(`refused_${reason}`, 1);
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
    const writeId = utf8.encode(request.headers.get(WRITE_ID_HEADER) ?? "");
    const consistency = CONSISTENCY_LEVELS.indexOf(request.headers.get(CONSISTENCY_HEADER) ?? "one") + 1;
    if (consistency === 0) throw new HttpError(400, "bad consistency");
    const attempt = () => {
      // From here to the transaction's end nothing is awaited.
      const row = this.storage.loadRow(key);
      // A context write may keep siblings: the core bounds the key's bytes by their lengths.
      const sizes = tokenText === null || row === undefined ? [] : this.storage.valueSizes(key);
      const write = {
        key,
        meta: row?.meta ?? EMPTY,
        expired: row?.expired ?? false,
        hasToken: tokenText !== null,
        token,
        value,
        contentType,
        deleted,
        sizes,
        writeId,
        consistency,
      };
      const ran = this.executor.run({ write }, value);
      return { reply: decode("WriteReply", ran.reply), quorum: ran.quorum };
    };
    const { reply, quorum } = await this.withLease(attempt);
    // Above ?consistency=one the answer waits for the core's outcome (its pushes' limit is
    // QUORUM_TIMEOUT_MS); short of W: 503, the write durable at `accepted_by` replicas.
    let replicas: number | undefined;
    if (quorum !== undefined) {
      const outcome = await quorum;
      if (outcome === undefined || !outcome.reached) {
        return json(503, { error: "not enough replicas", accepted_by: outcome?.replicas ?? null }, { [QUORUM_FAILED_HEADER]: "1" });
      }
      replicas = outcome.replicas;
    }
    // Fault injection: the write is committed, the answer is lost (a replay is answered).
    if (!reply.replay && this.config!.faultsEnabled && this.faults.failAfterCommit?.includes(this.nodeId!)) {
      return json(500, { error: `node ${this.nodeId}: injected failure after commit` });
    }
    return json(200, {
      node: this.nodeId,
      hlc: BigInt.asUintN(64, reply.hlc).toString(), // lint: encoding
      token: base64url(reply.token),
      siblings: reply.siblings,
      replicas,
    });
  }

  /** Fault injection's "gossip": false: rounds and anti-entropy send nothing. */
  private gossipStopped(kind: number): boolean {
    return this.config?.faultsEnabled === true && this.faults.gossip === false && GOSSIP_KINDS.includes(kind);
  }

  /** Runs `attempt`; when the core answers that the node has no dot lease yet, waits for
   *  the lease request in flight to be taken and runs it once more (the core decides when
   *  leases are asked for; a node with none in flight answers 503 and the Worker asks
   *  another replica). */
  private async withLease<T>(attempt: () => T): Promise<T> {
    try {
      return attempt();
    } catch (err) {
      const settled = this.leaseSettled;
      if (!(err instanceof CoreError) || err.code !== CoreError.E_LEASE || settled === undefined) throw err;
      await settled;
      return attempt();
    }
  }

  /** Whether the core serves the key's shard to clients (OP_CLIENT_READ's verdict on an
   *  absent row: nothing is read), for /v1/cluster/placement. */
  private async handleServes(request: Request): Promise<Response> {
    const key = this.requestKey(request);
    try {
      await this.withLease(() => this.coreRead({ key, meta: EMPTY }, Op.ClientRead));
      return json(200, { serves: true });
    } catch (err) {
      if (err instanceof CoreError && (err.code === CoreError.E_LEASE || err.code === CoreError.E_CATCHING_UP || err.code === CoreError.E_NOT_SERVING)) {
        return json(200, { serves: false });
      }
      throw err;
    }
  }

  /** A client GET: the winner's value, or every sibling with ?siblings=1. A plain GET of the
   *  local copy (LOCAL_HEADER) is served while the node catches up; any other only once
   *  the core says the node serves the key's shard. */
  private async handleRead(request: Request, url: URL): Promise<Response> {
    const key = this.requestKey(request);
    const all = url.searchParams.get("siblings") === "1";
    const local = request.headers.get(LOCAL_HEADER) === "1";
    const read = () => {
      const row = this.storage.loadRow(key);
      return { row, reply: this.coreRead({ key, meta: row?.meta ?? EMPTY }, local ? Op.Read : Op.ClientRead) };
    };
    const { row, reply } = await this.withLease(read);
    if (row === undefined || !reply.found) return json(404, { error: "not found" });
    const token = base64url(reply.token);
    if (all) {
      const values = new Map<string, Uint8Array>();
      for (const v of this.storage.loadValues(key)) values.set(`${v.dot.node}:${v.dot.counter}`, v.value);
      const siblings = reply.siblings.map((s: Msg) => {
        const bytes = s.deleted ? EMPTY : values.get(`${s.dot.node}:${s.dot.counter}`) ?? EMPTY;
        return {
          ...encodeValue(bytes),
          hlc: BigInt.asUintN(64, s.hlc).toString(), // lint: encoding (uint64)
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
    const value = this.storage.value(key, winner.dot);
    if (value === undefined) throw new Error(`value row missing for dot (${winner.dot.node}, ${winner.dot.counter})`);
    let contentType = "";
    try {
      contentType = utf8Strict.decode(winner.contentType);
    } catch {
      contentType = "";
    }
    return new Response(value, {
      status: 200,
      headers: { ...headers, "X-Ring-Content-Type": contentType, "X-Ring-Hlc": BigInt.asUintN(64, winner.hlc).toString() }, // lint: encoding (uint64)
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
      for (const v of this.storage.loadValues(key)) {
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
            hlc: BigInt.asUintN(64, s.hlc).toString(), // lint: encoding (uint64)
            node: s.dot.node,
            counter: BigInt.asUintN(64, s.dot.counter).toString(), // lint: encoding (uint64)
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

  /** The admin fence, through the core: from now on the node takes no client write, and
   *  once its peers have acknowledged every change it holds (at once with `force`: what
   *  only it holds is lost) the core says wipe. 202 either way; `wiped` tells which. */
  private async fence(force: boolean): Promise<Response> {
    const id = this.nodeId!;
    let ran;
    try {
      ran = this.executor.run({ fence: force ? 2 : 1 }, EMPTY);
    } catch (err) {
      if (err instanceof CoreError && err.code === CoreError.E_VALUE) {
        return json(409, { error: `with REPLICAS=1 no other node holds node ${id}'s keys: a fence would lose them all (?force=true to fence anyway)` });
      }
      throw err;
    }
    const { done } = ran;
    this.ctx.waitUntil(done);
    const wiped = this.wiping !== undefined;
    if (this.wiping !== undefined) await this.wiping;
    else console.log(JSON.stringify({ component: "ringkv_node", event: "fence_draining", node: id }));
    return json(202, { node: String(id), fenced: true, wiped });
  }

  /** The fence due: wipes every table (and the alarm) and starts again with no state, as a
   *  node whose storage was lost would. It keeps only its id; the core then takes a fresh
   *  dot lease, learns from RingControl that its storage was lost, and catches up on every
   *  shard before it serves it. Nothing else runs meanwhile. */
  private async wipe(): Promise<void> {
    const id = this.nodeId!;
    await this.ctx.blockConcurrencyWhile(async () => {
      // The old core's sends in flight are dropped when they come back (a new generation).
      this.coreInstance = undefined;
      this.coreGeneration++;
      this.executor.abandonQuorum();
      this.leaseSettled = undefined;
      this.alarmAtMs = undefined;
      await this.ctx.storage.deleteAlarm();
      await this.ctx.storage.deleteAll();
      this.stats.clear();
      this.ringView = undefined;
      this.nodeId = undefined;
      this.start();
      this.nodeId = id;
      this.storage.setConf("node_id", String(id));
      // Fault injection settings are the test's, not the node's data: they stay.
      if (this.config?.faultsEnabled) this.storage.setConf("faults", JSON.stringify(this.faults));
      // The ring again from RingControl; the core starts (with no state) once it is here.
      await this.ensureRing();
    });
    console.log(JSON.stringify({ component: "ringkv_node", event: "fenced", node: id }));
  }

  /** FAULTS only: the benchmark's bulk seeding (NodeStorage.bulkInsert). */
  private handleBulk(body: any): Response {
    if (!this.config!.faultsEnabled) return json(404, { error: "not found" });
    const from = Number(body?.from);
    const count = Number(body?.count);
    const meta = unbase64url(String(body?.meta ?? ""));
    if (!Number.isInteger(from) || !Number.isInteger(count) || from < 0 || count < 1 || meta === undefined) throw new HttpError(400, "bad bulk request");
    let written = 0;
    this.ctx.storage.transactionSync(() => {
      written = this.storage.bulkInsert(String(body?.prefix ?? "bulk/"), from, count, this.config!.shards, meta);
    });
    return json(200, { written });
  }

  /** New fault settings; with deliver_held the messages this node held are sent first, in
   *  order, as they were (their answers are dropped: each counted as lost when held). */
  private async handleFaults(body: any): Promise<Response> {
    if (!this.config!.faultsEnabled) return json(404, { error: "not found" });
    const faults = normalizeFaults(body, this.config!.maxClockSkewMs);
    let delivered = 0;
    if (body.deliver_held === true) {
      const env = this.env as any;
      for (const m of this.storage.heldMessages()) {
        const stub = env.NODE.get(env.NODE.idFromName(String(m.peer)));
        try {
          const r: Response = await stub.fetch(`https://node${m.path}`, {
            method: "POST",
            body: m.body,
            headers: { [NODE_ID_HEADER]: String(m.peer), "Content-Type": "application/octet-stream" },
          });
          await r.arrayBuffer();
          delivered++;
        } catch {
          // A held message lost on delivery is as lost as any other.
        }
      }
      this.storage.clearHeld();
    }
    this.faults = faults;
    this.storage.setConf("faults", JSON.stringify(this.faults));
    return json(200, { node: this.nodeId, faults: this.faults, delivered, held: this.storage.heldCounts() });
  }

  // ---------------------------------------------------------------------------------
  // The alarm and the network.

  async alarm(): Promise<void> {
    this.alarmAtMs = undefined;
    if (this.error !== undefined || this.nodeId === undefined) return;
    try {
      // A node upgraded from release 1 has data and an alarm but no ring yet: with no core
      // to ask, it tries again after one gossip interval.
      await this.ensureRing();
    } catch (err) {
      console.error(`ringkv node ${this.nodeId}: no ring yet (${(err as Error).message}); trying again`);
      this.setAlarm(this.nowMs() + this.config!.gossipIntervalMs);
      return;
    }
    // A node the ring no longer has arms no alarm.
    if (this.nodeId >= ringSpan(this.ringView!.ring)) return;
    try {
      // The round's sends, and what their answers lead to, finish before the alarm does.
      await this.executor.run({ alarm: true }, EMPTY).done;
    } catch (err) {
      console.error(`ringkv node ${this.nodeId}: gossip round failed: ${(err as Error).stack ?? err}`);
      this.setAlarm(this.nowMs() + this.config!.gossipIntervalMs);
    }
    this.stats.flush();
  }

  /** Sends a NodeReport or a LeaseRequest to RingControl (not gossip: not in the gossip
   *  counters). Resolves with the answer (RingControl persisted it), a refusal (4xx), or
   *  neither. */
  private async toControl(path: string, body: Uint8Array, timeoutMs: number): Promise<{ answer?: Uint8Array; refused?: string }> {
    const env = this.env as any;
    const stub = env.CONTROL.get(env.CONTROL.idFromName(CONTROL_NAME));
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const response: Response = await stub.fetch(`https://control${path}`, {
        method: "POST",
        body,
        headers: { "Content-Type": "application/octet-stream" },
        signal: abort.signal,
      });
      const answer = new Uint8Array(await response.arrayBuffer());
      if (response.status === 200) return { answer }; // lint: http-status
      if (response.status < 500) return { refused: "refused" }; // lint: http-status
      return {};
    } catch {
      return {};
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends one node-to-node message; resolves with the answer body, or the reason the peer
   *  refused it (REFUSED_REASON_HEADER), or neither (lost to fault injection, unreachable,
   *  failed, timed out). Counts bytes both ways. */
  private async exchange(peer: number, path: string, body: Uint8Array, timeoutMs: number): Promise<{ answer?: Uint8Array; refused?: string }> {
    const faulty = this.config!.faultsEnabled;
    if (faulty && !reachable(this.faults, this.nodeId!, peer)) return {};
    this.stats.add("messages_sent", 1);
    if (faulty && this.faults.hold.includes(this.nodeId!)) {
      this.storage.holdMessage(peer, path, body);
      return {};
    }
    if (faulty && this.faults.drop > 0 && Math.random() < this.faults.drop) {
      this.stats.add("bytes_sent", body.length);
      return {};
    }
    const env = this.env as any;
    const stub = env.NODE.get(env.NODE.idFromName(String(peer)));
    let timer: any;
    // The core's time limit covers the answer's body too; past it the fetch is aborted, so
    // the peer is not left working for an answer no one reads.
    const abort = new AbortController();
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        abort.abort();
        reject(new Error("peer timeout"));
      }, timeoutMs);
    });
    try {
      const response: Response = await Promise.race([
        stub.fetch(`https://node${path}`, {
          method: "POST",
          body,
          headers: { [NODE_ID_HEADER]: String(peer), "Content-Type": "application/octet-stream", [RING_HEADER]: ringHeader(this.ringView!.ring) },
          signal: abort.signal,
        }),
        deadline,
      ]);
      const answer = new Uint8Array(await Promise.race([response.arrayBuffer(), deadline]));
      this.stats.add("bytes_sent", body.length + answer.length);
      // A peer on a newer ring: take it (after this answer: the answer is to this ring).
      const claimed = headerEpoch(response.headers.get(RING_HEADER));
      if (claimed > this.ringView!.ring.epoch) this.ctx.waitUntil(this.catchUpRing(claimed).catch(() => {}));
      if (response.status !== 200) return { refused: response.headers.get(REFUSED_REASON_HEADER) ?? undefined }; // lint: http-status
      return { answer };
    } catch {
      this.stats.add("bytes_sent", body.length);
      return {};
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A peer's message. One beyond the core's limit is the peer's fault: malformed (400). */
async function peerBody(request: Request): Promise<Uint8Array> {
  const body = new Uint8Array(await request.arrayBuffer());
  if (body.length > PEER_MESSAGE_BYTES_MAX) throw new CoreError(CoreError.E_DECODE, "message too large");
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

