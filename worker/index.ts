// The Worker: the public HTTP API of SPEC.md. It authenticates, validates, places keys
// with the core (OP_PLACE), signs and verifies context tokens, fronts reads with the
// Cache API, and calls the nodes (Durable Objects) on internal paths it builds itself:
// no client path ever reaches a node.
//
// Checks run in the order the SPEC fixes: 401, 405, 400 (key, context, query), 414, 413,
// then the node's answer (409 for too many siblings).
import wasmModule from "../build/ringkv.wasm";
import { Core, CoreError, Op } from "./core";
import { parseConfig, warnOnce, warnOpenConfig, coreConfig, replicasAt, ringSpan, type RingConfig } from "./config";
import { base64url, unbase64url, signToken, verifyToken, sameSecret, type Secret } from "./tokens";
import {
  CATCHING_UP_HEADER,
  CONSISTENCY_HEADER,
  CONSISTENCY_LEVELS,
  LOCAL_HEADER,
  NODE_ID_HEADER,
  QUORUM_FAILED_HEADER,
  REFUSED_HEADER,
  WRITE_ID_HEADER,
  prefixSuccessor,
} from "./node";
import { HttpError } from "./errors";
import { normalizeFaults } from "./faults";
import { NEED_SECRET_HEADER, RING_HEADER, STALE_RING_HEADER, headerEpoch, hex as hexOf, ringHeader, viewFromJson, type RingView } from "./ring";

export { RingNode } from "./node";
export { RingControl } from "./control";
import { CONTROL_NAME } from "./control";

type Msg = Record<string, any>;

const KEY_BYTES_MAX = 1024; // lint: api-limit
/** X-Ring-Write-Id (SPEC: idempotent writes). */
const WRITE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const CONTENT_TYPE_BYTES_MAX = 256; // lint: api-limit
const LIST_LIMIT_MAX = 1000; // lint: api-limit
/** Node ids run 0 .. 1023 (the core's RINGKV_CLUSTER_SIZE_MAX). */
const NODE_IDS_MAX = 1024; // lint: api-limit
/** A {"size": M} body is a few bytes. */
const RESIZE_BODY_BYTES_MAX = 1024; // lint: api-limit
const CACHE_ORIGIN = "https://ringkv.cache";
const DEFAULT_CONTENT_TYPE = "application/octet-stream";

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

interface Setup {
  config?: RingConfig;
  error?: string;
  /** The core that judged the configuration, placed at CLUSTER_SIZE: the ring's core
   *  when the ring has that size (it usually does), so placement is not built twice. */
  checked?: Core;
  /** The Worker's policy numbers, from that core's OP_INIT (InitReply.worker). */
  policy?: WorkerPolicy;
}

/** InitReply.worker (wasm/ringkv.proto WorkerPolicy): timing and policy live in the core. */
interface WorkerPolicy {
  /** Fan-out rounds of one listing request. */
  listRoundsMax: number;
  /** Nodes asked in turn for the ring when this isolate has none. */
  ringAskNodesMax: number;
  /** One Worker-to-node call. */
  nodeTimeoutMs: number;
  /** Cache keys tracked for write generations before the map is cleared. */
  writeGenerationsMax: number;
  /** Times a request is placed again on the newer ring a node's 421 shows. */
  staleRingRetries: number;
  /** Times a write that failed (5xx or no answer) is sent again to the same replica. */
  writeSameReplicaRetries: number;
  /** Random bytes of a generated write id. */
  writeIdRandomBytes: number;
}

/** This isolate's copy of the ring, taken from a node the first time it is needed. */
interface RingState {
  setup: Setup;
  view: RingView;
  /** Placement at the ring's size. */
  core: Core;
  /** Tokens are signed with the first and accepted under any. */
  secrets: Secret[];
  policy: WorkerPolicy;
}

let ringCache: RingState | undefined;
let ringPending: { setup: Setup; promise: Promise<RingState> } | undefined;

let setupCache: { env: Msg; envKey: string; setup: Setup } | undefined;

const ENV_NAMES = [
  "CLUSTER_SIZE", "REPLICAS", "SHARDS", "GOSSIP_INTERVAL_MS", "CACHE_TTL_SECONDS", "MAX_VALUE_BYTES",
  "MAX_CLOCK_SKEW_MS", "TOMBSTONE_GRACE_SECONDS", "MAX_SIBLINGS", "FANOUT", "MAX_KEY_BYTES", "QUORUM_TIMEOUT_MS", "API_TOKEN", "ADMIN_TOKEN",
  "TOKEN_SECRET", "FAULTS", "ENVIRONMENT",
];

/** Validates the configuration, once per isolate (again only if the variables change). */
function setup(env: Msg): Setup {
  // The runtime hands every request the same env object: only a new one needs comparing.
  if (setupCache !== undefined && setupCache.env === env) return setupCache.setup;
  const envKey = JSON.stringify(ENV_NAMES.map((name) => env[name] ?? null));
  if (setupCache !== undefined && setupCache.envKey === envKey) {
    setupCache.env = env;
    return setupCache.setup;
  }
  const parsed = parseConfig(env);
  const s: Setup = { config: parsed.config, error: parsed.error };
  if (s.config !== undefined) {
    // The core judges the configuration (its limits relate sizes, replicas and bytes).
    const size = s.config.clusterSize;
    try {
      const placed = placementCore(s.config, { epoch: 1, size, from: 0, to: 0, phase: 0, nodeIdsMax: size });
      s.checked = placed.core;
      s.policy = placed.policy;
      warnOpenConfig(s.config);
    } catch (err) {
      s.error = `bad configuration: ${(err as CoreError).message.replace(/^invalid configuration: /, "")}`;
    }
  }
  if (s.error !== undefined) warnOnce(s.error);
  setupCache = { env, envKey, setup: s };
  ringCache = undefined;
  return s;
}

/** The ring, the cluster id and the token secrets: from this isolate's copy, or asked of
 *  a node (node 0 first; the others of the configured size if it fails). */
async function ringOf(env: Msg, s: Setup): Promise<RingState> {
  if (ringCache !== undefined && ringCache.setup === s) return ringCache;
  // A question asked under another configuration (other secrets) is not this one's answer.
  if (ringPending === undefined || ringPending.setup !== s) {
    const pending = {
      setup: s,
      promise: fetchRing(env, s).finally(() => {
        if (ringPending === pending) ringPending = undefined;
      }),
    };
    ringPending = pending;
  }
  return ringPending.promise;
}

async function fetchRing(env: Msg, s: Setup): Promise<RingState> {
  const config = s.config!;
  const policy = s.policy!;
  const needSecret = config.tokenSecrets === undefined;
  let last = "no node answered";
  for (let node = 0; node < Math.max(1, Math.min(config.clusterSize, policy.ringAskNodesMax)); node++) {
    try {
      const response = await callNode(env, node, "/internal/ring", { headers: needSecret ? { [NEED_SECRET_HEADER]: "1" } : {} }, policy.nodeTimeoutMs);
      const text = await response.text();
      if (response.status !== 200) {
        last = `node ${node} answered ${response.status}: ${text.slice(0, 200)}`;
        if (response.headers.get(REFUSED_HEADER) !== null) break;
        continue;
      }
      const view = viewFromJson(JSON.parse(text));
      if (needSecret && view.secret === undefined) throw new Error("no generated token secret");
      const sameShape = view.ring.phase === 0 && view.ring.size === config.clusterSize && view.ring.nodeIdsMax === config.clusterSize;
      const core = sameShape && s.checked !== undefined ? s.checked : placementCore(config, view.ring).core;
      const state: RingState = { setup: s, view, core, secrets: config.tokenSecrets ?? [view.secret!], policy };
      if (setupCache?.setup === s) ringCache = state;
      return state;
    } catch (err) {
      last = `node ${node}: ${(err as Error).message}`;
    }
  }
  throw new HttpError(503, `the ring is not available yet (${last})`);
}

/** A core that places keys (node 0's view; a Worker holds no node state) on `ring`, and
 *  the Worker's policy its OP_INIT answers with. */
function placementCore(config: RingConfig, ring: RingView["ring"]): { core: Core; policy: WorkerPolicy } {
  const core = new Core(wasmModule as WebAssembly.Module);
  const reply = core.call(Op.Init, {
    config: coreConfig(config, ring),
    node: { node: 0, clock: 0n, counter: 0n },
    shards: [],
    placementOnly: true,
  });
  const w = reply.worker as Msg;
  const policy: WorkerPolicy = {
    listRoundsMax: w.listRoundsMax,
    ringAskNodesMax: w.ringAskNodesMax,
    nodeTimeoutMs: Number(w.nodeTimeoutMs),
    writeGenerationsMax: w.writeGenerationsMax,
    staleRingRetries: w.staleRingRetries,
    writeSameReplicaRetries: w.writeSameReplicaRetries,
    writeIdRandomBytes: w.writeIdRandomBytes,
  };
  return { core, policy };
}

/** The ring a node's 421 carried, when newer than `rs`'s: this isolate's copy from now on
 *  (the cluster id and secrets do not change with the ring). Undefined if it is not. */
function newerRing(rs: RingState, ring: unknown): RingState | undefined {
  let view: RingView;
  try {
    view = viewFromJson({ ring, cluster_id: hexOf(rs.view.clusterId) });
  } catch {
    return undefined;
  }
  if (view.ring.epoch <= rs.view.ring.epoch) return undefined;
  const state: RingState = { ...rs, view: { ...rs.view, ring: view.ring }, core: placementCore(rs.setup.config!, view.ring).core };
  if (setupCache?.setup === rs.setup && (ringCache === undefined || ringCache.view.ring.epoch < view.ring.epoch)) ringCache = state;
  return state;
}

/** A reply naming a newer epoch than this isolate's copy: take the ring again. */
function noteRing(response: Response): void {
  if (ringCache !== undefined && headerEpoch(response.headers.get(RING_HEADER)) > ringCache.view.ring.epoch) {
    ringCache = undefined;
  }
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", "Cache-Control": "no-store", ...headers },
  });
}

function fail(status: number, error: string): never {
  throw new HttpError(status, error);
}

/** Places keys, then shards by number, with the core; rebuilds the instance if it ever
 *  traps. */
function place(rs: RingState, keys: Uint8Array[], shards: number[] = []): Msg[] {
  try {
    return rs.core.call(Op.Place, { keys, shards }).placements;
  } catch (err) {
    if (!(err instanceof CoreError)) {
      ringCache = undefined;
    }
    if (err instanceof CoreError && err.code === CoreError.E_VALUE) fail(400, "bad key");
    throw err;
  }
}

function stub(env: Msg, node: number): any {
  return env.NODE.get(env.NODE.idFromName(String(node)));
}

/** Calls a node on an internal path, with a time limit. Throws on network failure. */
async function callNode(env: Msg, node: number, path: string, init: RequestInit = {}, timeoutMs?: number): Promise<Response> {
  const headers = new Headers(init.headers ?? {});
  headers.set(NODE_ID_HEADER, String(node));
  if (ringCache !== undefined) headers.set(RING_HEADER, ringHeader(ringCache.view.ring));
  const call = (stub(env, node).fetch(`https://node${path}`, { ...init, headers }) as Promise<Response>).then((r) => {
    noteRing(r);
    return r;
  });
  // Client requests rely on the runtime's own limits; fan-out calls (status, listing)
  // bound each node so one stuck node cannot hold the whole answer.
  if (timeoutMs === undefined) return call;
  let timer: any;
  try {
    return await Promise.race([
      call,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`node ${node} timed out`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Tries the nodes in order; moves on when one throws or answers 5xx. Client errors
 *  (4xx) are final. A write (`write` given) is sent again to a replica whose
 *  answer was lost or a 5xx before the next one, always with the same write id, so a
 *  replica that committed answers the replay; its final 5xx says how many replicas
 *  accepted it: 0 when each refused before committing (a replica catching up, fenced or
 *  without a lease), null when one may have committed. */
async function callReplicas(env: Msg, nodes: number[], path: string, init: () => RequestInit, write?: { sameReplicaRetries: number }): Promise<Response> {
  let last: Response | undefined;
  let unknown = false;
  for (const node of nodes) {
    for (let attempt = 0; attempt <= (write?.sameReplicaRetries ?? 0); attempt++) {
      try {
        const response = await callNode(env, node, path, init());
        // A node's "not enough replicas" is final: the write is durable there (SPEC).
        if (response.status < 500 || response.headers.get(QUORUM_FAILED_HEADER) !== null) return response;
        if (last !== undefined) await last.arrayBuffer().catch(() => undefined);
        last = response;
        // A replica that refused before committing (CATCHING_UP_HEADER) is not asked again.
        if (response.headers.get(CATCHING_UP_HEADER) !== null) break;
        unknown = true;
        console.warn(`ringkv: node ${node} answered ${response.status} on ${path}`);
      } catch (err) {
        unknown = true;
        console.warn(`ringkv: node ${node} failed on ${path} (${(err as Error).message})`);
      }
    }
  }
  const writing = write !== undefined;
  if (last !== undefined) {
    const text = await last.text();
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    const catchingUp = last.headers.get(CATCHING_UP_HEADER);
    if (catchingUp !== null) headers[CATCHING_UP_HEADER] = catchingUp;
    if (!writing) return new Response(text, { status: last.status, headers });
    let error = "no replica of this key accepted the write";
    try {
      error = JSON.parse(text).error ?? error;
    } catch {
      // keep the default
    }
    return new Response(JSON.stringify({ error, accepted_by: unknown ? null : 0 }), { status: last.status, headers });
  }
  return json(503, writing ? { error: "no replica of this key is available", accepted_by: null } : { error: "no replica of this key is available" });
}

function bearer(request: Request): string | undefined {
  const header = request.headers.get("Authorization");
  if (header === null) return undefined;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return m === null ? undefined : m[1];
}

function parseNodeId(rs: RingState, text: string | null): number | undefined {
  if (text === null) return undefined;
  if (!/^[0-9]{1,4}$/.test(text) || Number(text) >= ringSpan(rs.view.ring)) fail(400, "bad node id");
  return Number(text);
}

// Writes that started in this isolate, per cache key: a read that began before a write
// must not put its (older) answer into the cache.
const writeGeneration = new Map<string, number>();
let generation = 0;
let generationEpoch = 0;

export default {
  async fetch(request: Request, env: Msg, ctx: any): Promise<Response> {
    try {
      return await route(request, env, ctx);
    } catch (err) {
      await discardBody(request);
      const writing = isWrite(request);
      if (err instanceof HttpError) return json(err.status, err.status >= 500 && writing ? { error: err.message, accepted_by: null } : { error: err.message });
      console.error(`ringkv: ${(err as Error).stack ?? err}`);
      // Every 5xx to a write says how many replicas accepted it (here: not known).
      return json(500, writing ? { error: "internal error", accepted_by: null } : { error: "internal error" });
    }
  },
};

/** A PUT or DELETE: every 5xx it gets says how many replicas accepted it. */
function isWrite(request: Request): boolean {
  return request.method === "PUT" || request.method === "DELETE";
}

// A body refused unread (a bad key, query or context; too large) is read and dropped
// before the answer, up to this much, so that a client still sending it gets the 4xx
// rather than a reset connection (seen as "fetch failed" by Node's fetch).
const DISCARD_BYTES_MAX = 64 * 1024 * 1024; // lint: platform-limit (a bound on the time a refused upload may take)

async function discardBody(request: Request): Promise<void> {
  if (request.body === null || request.bodyUsed) return;
  try {
    const reader = request.body.getReader();
    for (let bytes = 0; bytes <= DISCARD_BYTES_MAX; ) {
      const { done, value } = await reader.read();
      if (done) return;
      bytes += value.byteLength;
    }
    await reader.cancel();
  } catch {
    // the client went away, or the body was taken meanwhile: nothing to drop
  }
}

async function route(request: Request, env: Msg, ctx: any): Promise<Response> {
  const s = setup(env);
  if (s.error !== undefined) return json(503, isWrite(request) ? { error: s.error, accepted_by: 0 } : { error: s.error });
  const config = s.config!;
  const url = new URL(request.url);
  const path = url.pathname;
  const method = request.method;

  // 401 first: admin paths need ADMIN_TOKEN when set (else API_TOKEN when set).
  const isAdmin = path.startsWith("/v1/admin/") || path === "/v1/admin";
  const required = isAdmin ? config.adminToken ?? config.apiToken : config.apiToken;
  if (required !== undefined) {
    const given = bearer(request);
    if (given === undefined || !sameSecret(given, required)) {
      return json(401, { error: "missing or wrong bearer token" }, { "WWW-Authenticate": 'Bearer realm="ringkv"' });
    }
  }

  if (path.startsWith("/v1/kv/")) {
    if (method !== "GET" && method !== "PUT" && method !== "DELETE") return methodNotAllowed("GET, PUT, DELETE");
    return kv(request, env, ctx, await ringOf(env, s), url);
  }
  if (path === "/v1/kv") {
    if (method !== "GET") return methodNotAllowed("GET");
    return list(env, await ringOf(env, s), url);
  }
  if (path === "/v1/cluster") {
    if (method !== "GET") return methodNotAllowed("GET");
    return cluster(env, await ringOf(env, s));
  }
  if (path === "/v1/cluster/placement") {
    if (method !== "GET") return methodNotAllowed("GET");
    return placement(env, await ringOf(env, s), url);
  }
  let m = /^\/v1\/admin\/nodes\/([^/]*)\/keys$/.exec(path);
  if (m !== null) {
    if (method !== "GET") return methodNotAllowed("GET");
    const rs = await ringOf(env, s);
    // Any id a ring can hold is accepted; a node outside this ring holds nothing.
    if (!/^[0-9]{1,4}$/.test(m[1]) || Number(m[1]) >= NODE_IDS_MAX) fail(400, "bad node id");
    const node = Number(m[1]);
    const cursor = url.searchParams.get("cursor");
    if (cursor !== null && cursor !== "" && unbase64url(cursor) === undefined) fail(400, "bad cursor");
    if (node >= ringSpan(rs.view.ring)) return json(200, { node, keys: [], cursor: null });
    const response = await callNode(env, node, `/internal/dump${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`);
    return passJson(response);
  }
  if (path === "/v1/admin/cluster") {
    if (method !== "POST") return methodNotAllowed("POST");
    return resize(request, env);
  }
  m = /^\/v1\/admin\/nodes\/([^/]*)\/fence$/.exec(path);
  if (m !== null) {
    if (method !== "POST") return methodNotAllowed("POST");
    const force = url.searchParams.get("force");
    if (force !== null && force !== "true" && force !== "false") fail(400, "bad force: true or false");
    return fence(env, await ringOf(env, s), m[1], force === "true");
  }
  if (config.faultsEnabled) {
    if (path === "/v1/admin/faults") {
      if (method !== "POST") return methodNotAllowed("POST");
      return faults(request, env, await ringOf(env, s));
    }
    m = /^\/v1\/admin\/nodes\/([^/]*)\/calls$/.exec(path);
    if (m !== null) {
      // Record/replay: the core calls one node recorded (RECORD_CALLS).
      const node = parseNodeId(await ringOf(env, s), m[1])!;
      return passJson(await callNode(env, node, `/internal/calls?after=${Number(url.searchParams.get("after") ?? "0") || 0}`));
    }
    m = /^\/v1\/admin\/nodes\/([^/]*)\/crash$/.exec(path);
    if (m !== null) {
      if (method !== "POST") return methodNotAllowed("POST");
      const node = parseNodeId(await ringOf(env, s), m[1])!;
      try {
        const response = await callNode(env, node, "/internal/crash", { method: "POST" });
        await response.arrayBuffer();
      } catch {
        // ctx.abort() resets the object: the call fails by design.
      }
      return json(200, { crashed: String(node) });
    }
  }
  return json(404, { error: "not found" });
}

/** POST /v1/admin/nodes/{id}/fence[?force=true]: the node takes no client write from now
 *  on and wipes its storage once its peers hold everything it does (at once with force,
 *  losing what only it holds), then restarts with no state (a fresh dot lease, then it
 *  catches up on its shards). 202 with `wiped` saying whether that happened already; 400
 *  for an id that is not one, 404 for a node outside the ring. */
async function fence(env: Msg, rs: RingState, idText: string, force: boolean): Promise<Response> {
  if (!/^[0-9]{1,4}$/.test(idText) || Number(idText) >= NODE_IDS_MAX) fail(400, "bad node id");
  const node = Number(idText);
  if (node >= ringSpan(rs.view.ring)) return json(404, { error: `unknown node ${node}: the ring has nodes 0 to ${ringSpan(rs.view.ring) - 1}` });
  let response: Response;
  try {
    response = await callNode(env, node, `/internal/fence${force ? "?force=true" : ""}`, { method: "POST" }, rs.policy.nodeTimeoutMs);
  } catch (err) {
    fail(503, `node ${node} did not answer the fence: ${(err as Error).message}`);
  }
  const text = await response.text();
  if (response.status !== 202) { // lint: http-status
    return new Response(text, { status: response.status, headers: { "Content-Type": "application/json", "Cache-Control": "no-store" } });
  }
  const body = JSON.parse(text) as Msg;
  return json(202, { node: String(node), fenced: true, wiped: body.wiped === true }); // lint: http-status
}

/** POST /v1/admin/cluster {"size": M}: RingControl's control step decides (SPEC: 202 with
 *  the transition, 200 when already the size, 400 out of range, 409 during another resize
 *  or when a node would hold too much). */
async function resize(request: Request, env: Msg): Promise<Response> {
  const text = new TextDecoder().decode(await readBody(request, RESIZE_BODY_BYTES_MAX));
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    fail(400, 'expected a JSON body: {"size": M}');
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) fail(400, 'expected a JSON body: {"size": M}');
  const stubControl = env.CONTROL.get(env.CONTROL.idFromName(CONTROL_NAME));
  let response: Response;
  try {
    response = await stubControl.fetch("https://control/control/resize", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ size: (body as Msg).size }),
    });
  } catch (err) {
    fail(503, `RingControl did not answer: ${(err as Error).message}`);
  }
  return passJson(response);
}

function methodNotAllowed(allow: string): Response {
  return json(405, { error: "method not allowed" }, { Allow: allow });
}

async function passJson(response: Response): Promise<Response> {
  const text = await response.text();
  return new Response(text, { status: response.status, headers: { "Content-Type": "application/json", "Cache-Control": "no-store" } });
}

/** Percent-decodes a key and checks it is UTF-8; 400 if not, 414 if longer than allowed
 *  (the caller checks the length after the other 400s). */
function decodeKeyText(raw: string): { text: string; bytes: Uint8Array } {
  let text: string;
  try {
    text = decodeURIComponent(raw);
  } catch {
    fail(400, "bad key: invalid percent-encoding or UTF-8");
  }
  const bytes = utf8.encode(text);
  if (bytes.length === 0) fail(400, "bad key: empty");
  // decodeURIComponent refuses encoded lone surrogates, but a raw one could come in.
  if (utf8Strict.decode(bytes) !== text) fail(400, "bad key: not UTF-8");
  return { text, bytes };
}

function cacheUrl(keyText: string): string {
  return `${CACHE_ORIGIN}/v1/kv/${encodeURIComponent(keyText)}`;
}

/** Signs a core Token payload (base64url, as nodes pass it) for the key. */
function sign(rs: RingState, key: Uint8Array, payloadText: string): Promise<string> {
  return signToken(rs.secrets[0], rs.view.clusterId, key, unbase64url(payloadText)!);
}

async function kv(request: Request, env: Msg, ctx: any, rs: RingState, url: URL): Promise<Response> {
  const config = rs.setup.config!;
  const method = request.method;

  // 400s: key, context, query.
  const key = decodeKeyText(url.pathname.slice("/v1/kv/".length));
  let tokenPayload: Uint8Array | undefined;
  const contextText = request.headers.get("X-Ring-Context");
  if (contextText !== null && method !== "GET") {
    const verified = await verifyToken(rs.secrets, rs.view.clusterId, key.bytes, contextText.trim());
    if ("refused" in verified) fail(400, verified.refused === "older" ? "context from an older release" : "invalid context token");
    tokenPayload = verified.payload;
  }
  // Every write carries an id: the client's, or one made here (SPEC: idempotent writes).
  let writeId: string | undefined;
  if (method !== "GET") {
    const given = request.headers.get("X-Ring-Write-Id");
    if (given !== null && !WRITE_ID_PATTERN.test(given)) fail(400, "bad write id: 1 to 64 characters of A-Z, a-z, 0-9, _ and -");
    writeId = given ?? base64url(crypto.getRandomValues(new Uint8Array(rs.policy.writeIdRandomBytes)));
  }
  const consistencyParam = url.searchParams.get("consistency");
  if (consistencyParam !== null && !CONSISTENCY_LEVELS.includes(consistencyParam)) fail(400, "bad query: consistency must be one, quorum or all");
  const consistency = consistencyParam ?? "one";
  // Merged reads across replicas are the next step of this release: said plainly, never
  // answered as a read of one replica.
  if (method === "GET" && consistency !== "one") fail(400, "consistency above one on reads is not available in this build");
  const nodeParam = parseNodeId(rs, url.searchParams.get("node"));
  let siblings = false;
  const siblingsParam = url.searchParams.get("siblings");
  if (siblingsParam !== null) {
    if (siblingsParam === "1" || siblingsParam === "true") siblings = true;
    else if (siblingsParam !== "0" && siblingsParam !== "false" && siblingsParam !== "") fail(400, "bad query: siblings must be 1 or 0");
  }
  if (key.bytes.length > KEY_BYTES_MAX) fail(414, `key too long: ${key.bytes.length} bytes, at most ${KEY_BYTES_MAX}`);
  const [where] = place(rs, [key.bytes]);
  const replicas: number[] = where.replicas;
  if (nodeParam !== undefined && method !== "GET" && !replicas.includes(nodeParam)) {
    fail(400, `node ${nodeParam} is not a replica of this key (replicas: ${replicas.join(", ")})`);
  }

  // 413: the value, before reading more of it than allowed.
  let value: Uint8Array | undefined;
  let contentType = "";
  if (method === "PUT") {
    const declared = request.headers.get("Content-Length");
    if (declared !== null && /^[0-9]+$/.test(declared) && Number(declared) > config.maxValueBytes) {
      fail(413, `value too large: at most ${config.maxValueBytes} bytes`);
    }
    value = await readBody(request, config.maxValueBytes);
    contentType = request.headers.get("Content-Type") ?? "";
    if (utf8.encode(contentType).length > CONTENT_TYPE_BYTES_MAX) fail(413, `content type too long: at most ${CONTENT_TYPE_BYTES_MAX} bytes`);
  }

  let targets = nodeParam !== undefined ? [nodeParam] : replicas;
  const keyHeader = base64url(key.bytes);
  // A node answering 421 holds a newer ring than this isolate's copy (which its reply
  // replaced): the key is placed again on that ring and asked again (SPEC: Resizing).
  let placed = rs;
  const callPlaced = async (path: string, init: () => RequestInit, write?: { sameReplicaRetries: number }): Promise<Response> => {
    for (let attempt = 0; ; attempt++) {
      const response = await callReplicas(env, targets, path, init, write);
      if (response.headers.get(STALE_RING_HEADER) === null) return response;
      const refusal = (await response.json().catch(() => ({}))) as Msg;
      if (attempt >= rs.policy.staleRingRetries) return json(503, { error: "the ring is changing: try again", accepted_by: 0 });
      placed = newerRing(placed, refusal.ring) ?? (await ringOf(env, placed.setup));
      const [again] = place(placed, [key.bytes]);
      if (nodeParam === undefined) targets = again.replicas;
      else if (!again.replicas.includes(nodeParam)) {
        fail(400, `node ${nodeParam} is not a replica of this key (replicas: ${again.replicas.join(", ")})`);
      }
    }
  };
  const cacheOn = config.cacheTtlSeconds > 0 && nodeParam === undefined;
  const cacheKey = cacheUrl(key.text);

  if (method === "PUT" || method === "DELETE") {
    const deleted = method === "DELETE";
    // Clearing keeps the map bounded; the epoch tells a read that started before the
    // clear to skip its put.
    if (writeGeneration.size >= rs.policy.writeGenerationsMax) {
      writeGeneration.clear();
      generationEpoch++;
    }
    writeGeneration.set(cacheKey, ++generation);
    const response = await callPlaced("/internal/write", () => {
      const headers: Record<string, string> = { "X-Ring-Key": keyHeader, [WRITE_ID_HEADER]: writeId!, [CONSISTENCY_HEADER]: consistency };
      if (tokenPayload !== undefined) headers["X-Ring-Token"] = base64url(tokenPayload);
      if (deleted) headers["X-Ring-Deleted"] = "1";
      else headers["X-Ring-Content-Type"] = contentType;
      return { method: "POST", headers, body: deleted ? undefined : value };
    }, { sameReplicaRetries: rs.policy.writeSameReplicaRetries });
    // Again once the write is in: a read that started after the first bump may have read
    // the old version just before the write landed, and must not cache it.
    writeGeneration.set(cacheKey, ++generation);
    if (config.cacheTtlSeconds > 0) {
      try {
        await (caches as any).default.delete(cacheKey);
      } catch (err) {
        warnOnce(`cache delete failed: ${(err as Error).message}`);
      }
    }
    // A named replica still catching up after a rejoin (or being fenced) accepts no client
    // write (SPEC: it is not among the key's write replicas until it has caught up).
    if (nodeParam !== undefined && response.status === 503 && response.headers.get(CATCHING_UP_HEADER) !== null) { // lint: http-status
      const why = ((await response.json().catch(() => ({}))) as Msg).error ?? "";
      fail(400, `node ${nodeParam} is not one of this key's write replicas now (${why})`);
    }
    if (response.status !== 200) return passJson(response);
    const r = (await response.json()) as Msg;
    const context = await sign(rs, key.bytes, r.token);
    const body: Msg = { key: key.text, node: String(r.node), hlc: r.hlc, context };
    if (!deleted) body.siblings = r.siblings;
    if (r.replicas !== undefined) body.replicas = r.replicas;
    return json(200, body);
  }

  // GET.
  const plain = !siblings;
  if (plain && cacheOn) {
    try {
      const hit = await (caches as any).default.match(cacheKey);
      if (hit !== undefined) {
        const headers = new Headers(hit.headers);
        headers.set("X-Ring-Cache", "HIT");
        return new Response(hit.body, { status: 200, headers });
      }
    } catch (err) {
      warnOnce(`cache match failed: ${(err as Error).message}`);
    }
  }
  const startGeneration = writeGeneration.get(cacheKey) ?? 0;
  const startEpoch = generationEpoch;
  // ?node= names a node's local copy: served even while it catches up.
  const readHeaders: Record<string, string> = { "X-Ring-Key": keyHeader };
  if (nodeParam !== undefined) readHeaders[LOCAL_HEADER] = "1";
  const response = await callPlaced(`/internal/read${siblings ? "?siblings=1" : ""}`, () => ({
    method: "GET",
    headers: readHeaders,
  }));
  if (siblings) {
    if (response.status !== 200) return passJson(response);
    const r = (await response.json()) as Msg;
    const context = await sign(rs, key.bytes, r.token);
    return json(200, {
      key: key.text,
      context,
      siblings: r.siblings.map((x: Msg) => ({ ...x, node: String(x.node) })),
    });
  }
  const tokenText = response.headers.get("X-Ring-Token");
  const headers: Record<string, string> = { "X-Ring-Cache": "MISS" };
  if (tokenText !== null) {
    headers["X-Ring-Context"] = await sign(rs, key.bytes, tokenText);
    headers["X-Ring-Siblings"] = response.headers.get("X-Ring-Siblings") ?? "0";
    headers["X-Ring-Node"] = response.headers.get("X-Ring-Node") ?? "";
  }
  if (response.status !== 200) {
    const text = await response.text();
    let error = "not found";
    try {
      error = JSON.parse(text).error ?? error;
    } catch {
      // keep the default
    }
    return json(response.status, { error }, headers);
  }
  const body = new Uint8Array(await response.arrayBuffer());
  headers["Content-Type"] = response.headers.get("X-Ring-Content-Type") || DEFAULT_CONTENT_TYPE;
  const hlc = response.headers.get("X-Ring-Hlc");
  if (hlc !== null) headers["X-Ring-Hlc"] = hlc;
  if (cacheOn) {
    headers["Cache-Control"] = `max-age=${config.cacheTtlSeconds}`;
    if (generationEpoch === startEpoch && (writeGeneration.get(cacheKey) ?? 0) === startGeneration) {
      const stored = new Response(body, { status: 200, headers: { ...headers } });
      ctx.waitUntil(
        (caches as any).default.put(cacheKey, stored).catch((err: Error) => warnOnce(`cache put failed: ${err.message}`)),
      );
    }
  } else {
    headers["Cache-Control"] = "no-store";
  }
  return new Response(body, { status: 200, headers });
}

/** Reads a request body, refusing (413) once it passes `max` bytes. */
async function readBody(request: Request, max: number): Promise<Uint8Array> {
  if (request.body === null) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel().catch(() => {});
      fail(413, `value too large: at most ${max} bytes`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** The live keys of the whole cluster, in byte order: every node's page merged, a key
 *  live iff its copy with the highest winner (hlc, node) is live. */
async function list(env: Msg, rs: RingState, url: URL): Promise<Response> {
  const config = rs.setup.config!;
  const size = ringSpan(rs.view.ring);
  const prefixText = url.searchParams.get("prefix") ?? "";
  const prefix = utf8.encode(prefixText);
  if (prefix.length > KEY_BYTES_MAX) fail(400, "bad query: prefix too long");
  const cursorText = url.searchParams.get("cursor");
  let after: Uint8Array | undefined;
  if (cursorText !== null && cursorText !== "") {
    after = unbase64url(cursorText);
    if (after === undefined || after.length === 0 || after.length > KEY_BYTES_MAX) fail(400, "bad query: bad cursor");
  }
  let limit = LIST_LIMIT_MAX;
  const limitText = url.searchParams.get("limit");
  if (limitText !== null && limitText !== "") {
    if (!/^[0-9]{1,4}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > LIST_LIMIT_MAX) {
      fail(400, `bad query: limit must be 1..${LIST_LIMIT_MAX}`);
    }
    limit = Number(limitText);
  }
  const upper = prefixSuccessor(prefix);
  const keys: string[] = [];
  let cursor: Uint8Array | undefined = after;
  let next: Uint8Array | null = null;
  for (let round = 0; round < rs.policy.listRoundsMax; round++) {
    // Each node holds about R/N of the keys: ⌈2 × limit × R / N⌉ + 1 rows of each node
    // make a page with room to spare (one subrequest per node per round).
    const want = Math.min(limit - keys.length, Math.ceil((2 * limit * replicasAt(config, size)) / size) + 1);
    const pages = await Promise.all(
      Array.from({ length: size }, async (_, node) => {
        try {
          const response = await callNode(env, node, "/internal/list", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ prefix: base64url(prefix), after: cursor === undefined ? null : base64url(cursor), limit: want }),
          }, rs.policy.nodeTimeoutMs);
          if (response.status !== 200) return undefined;
          return (await response.json()) as { rows: [string, boolean, string, number][]; full: boolean };
        } catch {
          return undefined;
        }
      }),
    );
    const failed = pages.filter((p) => p === undefined).length;
    if (failed === size || (failed > 0 && failed >= replicasAt(config, size))) {
      return json(503, { error: `${failed} node(s) did not answer: the listing would be incomplete` });
    }
    // Keys beyond the smallest last key of a full page may be missing from that node.
    let bound: Uint8Array | undefined;
    for (const page of pages) {
      if (page === undefined || !page.full || page.rows.length === 0) continue;
      const last = unbase64url(page.rows[page.rows.length - 1][0])!;
      if (bound === undefined || compareBytes(last, bound) < 0) bound = last;
    }
    const best = new Map<string, { bytes: Uint8Array; hlc: string; node: number; live: boolean }>();
    for (const page of pages) {
      if (page === undefined) continue;
      for (const [k, live, hlc, node] of page.rows) {
        const bytes = unbase64url(k)!;
        if (bound !== undefined && compareBytes(bytes, bound) > 0) continue;
        if (upper !== undefined && compareBytes(bytes, upper) >= 0) continue;
        const seen = best.get(k);
        if (seen === undefined || hlc > seen.hlc || (hlc === seen.hlc && node > seen.node)) {
          best.set(k, { bytes, hlc, node, live });
        }
      }
    }
    const ordered = [...best.values()].sort((a, b) => compareBytes(a.bytes, b.bytes));
    let stopped = false;
    for (const entry of ordered) {
      if (entry.live) {
        keys.push(utf8Strict.decode(entry.bytes));
        if (keys.length === limit) {
          next = entry.bytes;
          stopped = true;
          break;
        }
      }
    }
    if (stopped) break;
    // Every node's page ended before `bound`: the listing is complete up to there.
    next = bound ?? null;
    if (bound === undefined) break;
    cursor = bound;
  }
  return json(200, { keys, cursor: next === null ? null : base64url(next) });
}

/** The cluster's status, from the nodes' reports to RingControl: one subrequest whatever
 *  the size, and no key read anywhere (SPEC, release 2). A node that never reported shows
 *  zeros, and the cluster is not converged until it has. */
async function cluster(env: Msg, rs: RingState): Promise<Response> {
  const config = rs.setup.config!;
  const stubControl = env.CONTROL.get(env.CONTROL.idFromName(CONTROL_NAME));
  let status: Msg;
  try {
    const response: Response = await stubControl.fetch("https://control/control/cluster");
    const text = await response.text();
    if (response.status !== 200) fail(503, `RingControl answered ${response.status}: ${text.slice(0, 200)}`); // lint: http-status
    status = JSON.parse(text);
  } catch (err) {
    if (err instanceof HttpError) throw err;
    fail(503, `RingControl did not answer: ${(err as Error).message}`);
  }
  // The ring as RingControl holds it (this isolate's copy may be an epoch behind).
  const ring = status.ring as RingView["ring"];
  return json(200, {
    size: ring.size,
    replicas: replicasAt(config, ring.size),
    epoch: ring.epoch,
    transition: status.transition,
    nodes: status.nodes.map((n: Msg) => ({ id: n.id, keys: n.keys, digest: n.digest, gossip: n.gossip, refused: n.refused })),
    converged: status.converged,
    ...(status.autoscale === undefined ? {} : { autoscale: status.autoscale }),
  });
}

/** The key's shard and its replicas in rendezvous order, less any replica still catching
 *  up on the shard after a rejoin (each replica's core says; one that does not answer is
 *  kept: not known to be catching up). */
async function placement(env: Msg, rs: RingState, url: URL): Promise<Response> {
  const text = url.searchParams.get("key");
  if (text === null || text === "") fail(400, "bad query: key is required");
  const bytes = utf8.encode(text);
  if (bytes.length > KEY_BYTES_MAX) fail(414, `key too long: ${bytes.length} bytes, at most ${KEY_BYTES_MAX}`);
  const [where] = place(rs, [bytes]);
  const replicas: number[] = where.replicas;
  const serving = await Promise.all(
    replicas.map(async (node) => {
      try {
        const r = await callNode(env, node, "/internal/serves", { headers: { "X-Ring-Key": base64url(bytes) } }, rs.policy.nodeTimeoutMs);
        const body = (await r.json().catch(() => undefined)) as Msg | undefined;
        return !(r.status === 200 && body?.serves === false); // lint: http-status
      } catch {
        return true;
      }
    }),
  );
  return json(200, { key: text, shard: where.shard, replicas: replicas.filter((_, i) => serving[i]).map((r) => String(r)) });
}

async function faults(request: Request, env: Msg, rs: RingState): Promise<Response> {
  let body: unknown;
  try {
    body = await request.json();
  } catch {
    fail(400, "faults: expected a JSON object");
  }
  const settings = normalizeFaults(body, rs.setup.config!.maxClockSkewMs);
  const answers = await Promise.all(
    Array.from({ length: ringSpan(rs.view.ring) }, async (_, node) => {
      try {
        const response = await callNode(env, node, "/internal/faults", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
        if (response.status !== 200) {
          await response.arrayBuffer();
          return undefined;
        }
        return (await response.json()) as Msg;
      } catch {
        return undefined;
      }
    }),
  );
  const failed = answers.map((a, node) => (a !== undefined ? -1 : node)).filter((n) => n >= 0);
  const held: Record<string, Record<string, number>> = {};
  let delivered = 0;
  answers.forEach((a, node) => {
    if (a === undefined) return;
    delivered += a.delivered ?? 0;
    if (Object.keys(a.held ?? {}).length > 0) held[String(node)] = a.held;
  });
  return json(failed.length === 0 ? 200 : 503, {
    faults: {
      down: settings.down,
      drop: settings.drop,
      partitions: settings.partitions,
      skew_ms: settings.skewMs,
      hold: settings.hold,
      ring_phase_held: settings.ringPhaseHeld,
      fail_after_commit: settings.failAfterCommit,
      gossip: settings.gossip,
    },
    failed_nodes: failed.map(String),
    held,
    delivered,
  });
}
