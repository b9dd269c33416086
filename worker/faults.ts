// Fault injection (only with FAULTS set): nodes marked down, dropped messages, partitions,
// clock skew, and held messages (a held node's messages are kept instead of sent, and
// delivered late on request: delayed messages). The executor applies them to what it sends and to the time it gives the
// core; the core never knows.
import { HttpError } from "./errors";

export interface Faults {
  down: number[];
  drop: number;
  partitions: number[][];
  skewMs: Record<string, number>;
  hold: number[];
  /** Per node id: the first phase (1 joining, 2 switching, 3 leaving, 4 done) of a ring it
   *  does not take (it stays on the one it holds, so a transition stalls there). */
  ringPhaseHeld: Record<string, number>;
  /** Node ids that commit a new client write and then answer 500 (a replay of a write id
   *  they hold is answered normally). */
  failAfterCommit: number[];
  /** false: gossip rounds and anti-entropy stop; calls on a request's path go on. */
  gossip: boolean;
}

export const NO_FAULTS: Faults = { down: [], drop: 0, partitions: [], skewMs: {}, hold: [], ringPhaseHeld: {}, failAfterCommit: [], gossip: true };

/** The phase number fault injection compares (done, phase 0 of a later epoch, is 4). */
export function heldPhase(phase: number): number {
  return phase === 0 ? 4 : phase; // lint: abi (RK_PHASE_*; 4: done)
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
  const hold = body.hold ?? [];
  if (!Array.isArray(hold) || hold.some((n: any) => !Number.isInteger(n) || n < 0)) {
    throw new HttpError(400, "faults: hold must be an array of node ids");
  }
  if (body.deliver_held !== undefined && typeof body.deliver_held !== "boolean") throw new HttpError(400, "faults: deliver_held must be a boolean");
  const held = body.ring_phase_held ?? {};
  if (typeof held !== "object" || held === null || Array.isArray(held)) throw new HttpError(400, "faults: ring_phase_held must be an object");
  const ringPhaseHeld: Record<string, number> = {};
  for (const [k, v] of Object.entries(held)) {
    if (!/^[0-9]{1,4}$/.test(k) || typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 4) { // lint: abi (phases 1..4)
      throw new HttpError(400, "faults: ring_phase_held maps node ids to a phase 1 (joining) … 4 (done)");
    }
    ringPhaseHeld[k] = v;
  }
  const failAfterCommit = body.fail_after_commit ?? [];
  if (!Array.isArray(failAfterCommit) || failAfterCommit.some((n: any) => !Number.isInteger(n) || n < 0)) {
    throw new HttpError(400, "faults: fail_after_commit must be an array of node ids");
  }
  const gossip = body.gossip ?? true;
  if (typeof gossip !== "boolean") throw new HttpError(400, "faults: gossip must be a boolean");
  return { down, drop, partitions, skewMs, hold, ringPhaseHeld, failAfterCommit, gossip };
}

/** Whether `from` can reach `to` across the injected partitions. */
export function reachable(f: Faults, from: number, to: number): boolean {
  const sets = f.partitions ?? [];
  if (sets.length === 0) return true;
  const mine = sets.findIndex((s) => s.includes(from));
  const theirs = sets.findIndex((s) => s.includes(to));
  return mine < 0 || theirs < 0 || mine === theirs;
}

/** The injected skew of `node`'s clock. */
export function skewOf(f: Faults, node: number | undefined): number {
  return Number(f.skewMs?.[String(node)] ?? 0);
}
