import type { Ring } from "./ring";

// Configuration from the Worker's environment (wrangler vars and secrets), validated once
// per isolate. The Worker and every node read the same variables; a bad value makes every
// request answer 503 with the reason, never a half-working cluster.

/** The validated configuration. Units last in names, as in the core. */
export interface RingConfig {
  clusterSize: number;
  /** REPLICAS; with REPLICAS = "all" the first size (replicasAt gives it at any size). */
  replicas: number;
  /** REPLICAS = "all": every node replicates every key, at every size. */
  replicasAll: boolean;
  shards: number;
  gossipIntervalMs: number;
  /** QUORUM_TIMEOUT_MS: a write above ?consistency=one waits this long for its replicas. */
  quorumTimeoutMs: number;
  cacheTtlSeconds: number;
  maxValueBytes: number;
  maxKeyBytes: number;
  maxClockSkewMs: number;
  tombstoneGraceSeconds: number;
  maxSiblings: number;
  fanout: number;
  apiToken: string | undefined;
  adminToken: string | undefined;
  /** TOKEN_SECRET's one or two space-separated secrets (sign with the first, accept
   *  either), or undefined: then the cluster's generated secret (RingControl) is used. */
  tokenSecrets: string[] | undefined;
  faultsEnabled: boolean;
  /** RECORD_CALLS=1 with FAULTS: nodes record every core call and what they performed
   *  (record/replay tests). */
  recordCalls: boolean;
  /** AUTOSCALE = "MIN-MAX" and its settings (SPEC: AUTOSCALE), or undefined. */
  autoscale: AutoscaleConfig | undefined;
}

export interface AutoscaleConfig {
  min: number;
  max: number;
  targetRps: number;
  windowSeconds: number;
  shrinkSeconds: number;
  cooldownSeconds: number;
}

// SQLite-backed Durable Objects cap a row at 2 MB: a value row holds the key too.
const VALUE_BYTES_LIMIT = 2_000_000 - 4096; // lint: platform-limit (SQLite row)

interface IntRule {
  name: string;
  fallback: number;
  min: number;
  max: number;
}

const RULES: IntRule[] = [
  { name: "CLUSTER_SIZE", fallback: 8, min: 1, max: 1024 }, // lint: config
  { name: "REPLICAS", fallback: 3, min: 1, max: 1024 }, // lint: config
  { name: "SHARDS", fallback: 16384, min: 1, max: 65536 }, // lint: config (max: RINGKV_SHARDS_MAX)
  { name: "GOSSIP_INTERVAL_MS", fallback: 1000, min: 10, max: 3_600_000 }, // lint: config
  { name: "CACHE_TTL_SECONDS", fallback: 5, min: 0, max: 86_400 }, // lint: config
  { name: "MAX_VALUE_BYTES", fallback: 1_048_576, min: 1, max: VALUE_BYTES_LIMIT }, // lint: config
  // The core refuses more than 32 MiB / (2 x REPLICAS) (RINGKV_NODE_KEY_BYTES_MAX).
  { name: "MAX_KEY_BYTES", fallback: 4_194_304, min: 1, max: 33_554_432 }, // lint: config (max: RINGKV_NODE_KEY_BYTES_MAX)
  { name: "MAX_CLOCK_SKEW_MS", fallback: 60_000, min: 0, max: 86_400_000 }, // lint: config
  { name: "TOMBSTONE_GRACE_SECONDS", fallback: 3600, min: 0, max: 10 * 365 * 86_400 }, // lint: config
  // The core refuses more than 4096 / (2 x REPLICAS) (RINGKV_SIBLINGS_MAX).
  { name: "MAX_SIBLINGS", fallback: 32, min: 1, max: 2048 }, // lint: config (max: RINGKV_SIBLINGS_MAX / 2)
  { name: "FANOUT", fallback: 8, min: 1, max: 1024 }, // lint: config
  { name: "QUORUM_TIMEOUT_MS", fallback: 2000, min: 1, max: 60_000 }, // lint: config
  { name: "AUTOSCALE_TARGET_RPS", fallback: 300, min: 1, max: 1_000_000 }, // lint: config (max: RK_AUTOSCALE_TARGET_RPS_MAX)
  { name: "AUTOSCALE_WINDOW_SECONDS", fallback: 60, min: 1, max: 86_400 }, // lint: config
  { name: "AUTOSCALE_SHRINK_SECONDS", fallback: 600, min: 0, max: 30 * 86_400 }, // lint: config
  { name: "AUTOSCALE_COOLDOWN_SECONDS", fallback: 600, min: 0, max: 30 * 86_400 }, // lint: config
];

function parseInt(env: Record<string, unknown>, rule: IntRule, errors: string[]): number {
  const raw = env[rule.name];
  if (raw === undefined || raw === null || raw === "") return rule.fallback;
  const text = String(raw).trim();
  if (!/^[0-9]{1,10}$/.test(text)) {
    errors.push(`${rule.name}=${JSON.stringify(String(raw))} is not a non-negative integer`);
    return rule.fallback;
  }
  const value = Number(text);
  if (value < rule.min || value > rule.max) {
    errors.push(`${rule.name}=${value} is out of range ${rule.min}..${rule.max}`);
  }
  return value;
}

function optionalSecret(env: Record<string, unknown>, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === null || raw === "") return undefined;
  return String(raw);
}

/** Parses and validates the environment; returns the config or the reasons it is bad. */
export function parseConfig(env: Record<string, unknown>): { config?: RingConfig; error?: string } {
  const errors: string[] = [];
  const v: Record<string, number> = {};
  const replicasAll = String(env.REPLICAS ?? "").trim() === "all";
  for (const rule of RULES) {
    if (rule.name === "REPLICAS" && replicasAll) continue;
    v[rule.name] = parseInt(env, rule, errors);
  }
  if (replicasAll) v.REPLICAS = v.CLUSTER_SIZE;
  if (v.REPLICAS > v.CLUSTER_SIZE) {
    errors.push(`REPLICAS=${v.REPLICAS} exceeds CLUSTER_SIZE=${v.CLUSTER_SIZE}`);
  }
  const tokenSecret = optionalSecret(env, "TOKEN_SECRET");
  const tokenSecrets = tokenSecret?.split(" ").filter((x) => x !== "");
  if (tokenSecrets !== undefined && (tokenSecrets.length < 1 || tokenSecrets.length > 2)) {
    errors.push("TOKEN_SECRET must hold one secret, or two separated by a space (sign with the first, accept both)");
  }
  const faults = optionalSecret(env, "FAULTS");
  const faultsOn = faults !== undefined && faults !== "0" && faults !== "false";
  if (faultsOn && env.ENVIRONMENT === "production") {
    errors.push("FAULTS is set with ENVIRONMENT=production (fault injection is for tests)");
  }
  let autoscale: AutoscaleConfig | undefined;
  const scale = optionalSecret(env, "AUTOSCALE");
  if (scale !== undefined) {
    const m = /^\s*([0-9]{1,4})\s*-\s*([0-9]{1,4})\s*$/.exec(scale);
    const least = replicasAll ? 1 : v.REPLICAS;
    if (m === null || Number(m[1]) < least || Number(m[1]) > Number(m[2]) || Number(m[2]) > 1024) { // lint: api-limit (node ids 0..1023)
      errors.push(`AUTOSCALE=${JSON.stringify(scale)} must be "MIN-MAX" with ${least} <= MIN <= MAX <= 1024 (MIN at least REPLICAS)`);
    } else {
      autoscale = {
        min: Number(m[1]),
        max: Number(m[2]),
        targetRps: v.AUTOSCALE_TARGET_RPS,
        windowSeconds: v.AUTOSCALE_WINDOW_SECONDS,
        shrinkSeconds: v.AUTOSCALE_SHRINK_SECONDS,
        cooldownSeconds: v.AUTOSCALE_COOLDOWN_SECONDS,
      };
    }
  }
  if (errors.length > 0) return { error: `bad configuration: ${errors.join("; ")}` };
  return {
    config: {
      clusterSize: v.CLUSTER_SIZE,
      replicas: v.REPLICAS,
      replicasAll,
      shards: v.SHARDS,
      gossipIntervalMs: v.GOSSIP_INTERVAL_MS,
      quorumTimeoutMs: v.QUORUM_TIMEOUT_MS,
      cacheTtlSeconds: v.CACHE_TTL_SECONDS,
      maxValueBytes: v.MAX_VALUE_BYTES,
      maxKeyBytes: v.MAX_KEY_BYTES,
      maxClockSkewMs: v.MAX_CLOCK_SKEW_MS,
      tombstoneGraceSeconds: v.TOMBSTONE_GRACE_SECONDS,
      maxSiblings: v.MAX_SIBLINGS,
      fanout: v.FANOUT,
      apiToken: optionalSecret(env, "API_TOKEN"),
      adminToken: optionalSecret(env, "ADMIN_TOKEN"),
      tokenSecrets,
      faultsEnabled: faultsOn,
      recordCalls: faultsOn && env.RECORD_CALLS === "1",
      autoscale,
    },
  };
}

/** The replica count at a size: REPLICAS, or the size itself with REPLICAS = "all". */
export function replicasAt(config: RingConfig, size: number): number {
  return config.replicasAll ? size : config.replicas;
}

/** The ring's node ids: old ∪ new during a transition. */
export function ringSpan(ring: Ring): number {
  return ring.phase === 0 ? ring.size : Math.max(ring.from, ring.to);
}

/** The core's Config message for this configuration on the ring (its phase included). */
export function coreConfig(config: RingConfig, ring: Ring): Record<string, unknown> {
  const span = ringSpan(ring);
  return {
    clusterSize: span,
    nodeIdsMax: ring.nodeIdsMax,
    replicas: config.replicasAll ? span : config.replicas,
    replicasAll: config.replicasAll,
    ringFrom: ring.phase === 0 ? 0 : ring.from,
    ringTo: ring.phase === 0 ? 0 : ring.to,
    ringPhase: ring.phase,
    ringEpoch: BigInt(ring.epoch),
    shards: config.shards,
    maxClockSkewMs: BigInt(config.maxClockSkewMs),
    tombstoneGraceMs: BigInt(config.tombstoneGraceSeconds) * 1000n, // lint: encoding (seconds to milliseconds)
    maxSiblings: config.maxSiblings,
    fanout: config.fanout,
    keyBytesMax: BigInt(config.maxKeyBytes),
    valueBytesMax: BigInt(config.maxValueBytes),
    gossipIntervalMs: BigInt(config.gossipIntervalMs),
    quorumTimeoutMs: BigInt(config.quorumTimeoutMs),
  };
}

const warned = new Set<string>();

/** Logs a warning once per isolate. */
export function warnOnce(message: string): void {
  if (warned.has(message)) return;
  warned.add(message);
  console.warn(`ringkv: ${message}`);
}

/** Warnings for an open or development configuration (logged once). */
export function warnOpenConfig(config: RingConfig): void {
  if (config.apiToken === undefined) warnOnce("API_TOKEN is unset: the data API is open to anyone");
  if (config.adminToken === undefined) warnOnce("ADMIN_TOKEN is unset: the admin API is open (or guarded by API_TOKEN)");
}
