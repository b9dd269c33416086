// The executor loop: every event a node sees goes through the core's step
// (RINGKV_OP_STEP), and this file performs the actions it returns, in the contract's order
// (wasm/include/ringkv.h): write in one transaction, load and step again while the core
// asks, send, reply, arm the alarm. It holds no policy: what to load, send and when is the
// core's. Nothing is awaited between a step and the loads and writes of its chain, so no
// other event interleaves with them.
import { Core, CoreError, Op } from "./core";
import type { NodeStorage, Msg } from "./storage";
import type { Stats } from "./stats";

const EMPTY = new Uint8Array(0);

/** What the executor needs from its Durable Object. */
export interface ExecutorHost {
  /** The core (rebuilt from storage when it was dropped); throws when unavailable. */
  core(): Core;
  /** Counts core instances: an answer to a send of an earlier instance is dropped (its
   *  tag means nothing to the new one; to the core it is a lost message). */
  coreGeneration(): number;
  /** Drops the core: storage refused a write, so its memory is ahead of storage. */
  dropCore(): void;
  readonly storage: NodeStorage;
  readonly stats: Stats;
  /** The node's clock: wall time plus any injected skew. */
  nowMs(): number;
  /** Sends one message; resolves with the answer, the peer's refusal, or neither.
   *  `onPath`: made on a request's path (fault injection's "gossip": false keeps it). */
  send(peer: number, kind: number, message: Uint8Array, timeoutMs: number, onPath: boolean): Promise<{ answer?: Uint8Array; refused?: string }>;
  /** A send is under way: `settled` resolves once its outcome has been through the core
   *  (a write that found no lease waits for the lease asked for). */
  sent(kind: number, settled: Promise<void>): void;
  /** Arms the alarm at this time of the node's clock (undefined: none). */
  setAlarm(atMs: number | undefined): void;
  /** What one step's actions performed (record/replay, when recording): key rows written
   *  and sends made ([peer, kind, bytes]); the host adds the alarm it armed. */
  record(performed: { rows: number; sends: number[][] }): void;
  /** The core says the fence asked for is due (StepReply.wipe): the host wipes the node's
   *  storage and starts it again with no state, before any other event. */
  wipe(): void;
}

function random64(): bigint {
  const a = new BigUint64Array(1);
  crypto.getRandomValues(a);
  return a[0];
}

/** How a write above ?consistency=one ended (QuorumOutcome); undefined: not known (the
 *  core that held its wait was dropped). */
export type QuorumOutcome = { replicas: number; reached: boolean } | undefined;

export class Executor {
  /** Reports whose facts were loaded, and the SQL rows those loads read (the benchmark's
   *  "one node's report"; the count of a node from an earlier build included). */
  readonly reportCost = { reports: 0, rows_read: 0 };
  /** Writes waiting for their QuorumOutcome, by StepReply.quorum_wait: registered in the
   *  step that names the wait, before any outcome can come. */
  private readonly quorumWaiting = new Map<number, (o: QuorumOutcome) => void>();

  constructor(private readonly host: ExecutorHost) {}

  /** One event through the core. `payload` holds the values the step's writes point into
   *  (the event's message or value). Returns the event's answer and a promise of every
   *  send it led to (their answers included) being done. */
  run(
    event: Msg,
    payload: Uint8Array,
  ): { reply: Uint8Array; progress: Msg | undefined; done: Promise<void>; quorum: Promise<QuorumOutcome> | undefined } {
    const pending: Promise<void>[] = [];
    let reply = this.step(event);
    let quorum: Promise<QuorumOutcome> | undefined;
    for (;;) {
      const performed = { rows: this.commit(reply, payload), sends: [] as number[][] };
      this.host.stats.addAll(reply.stats);
      const wait = reply.quorumWait;
      if (wait) quorum = new Promise((resolve) => this.quorumWaiting.set(wait, resolve));
      for (const q of reply.quorum ?? []) this.quorumEnded(q.id, { replicas: q.replicas, reached: q.reached });
      for (const send of reply.sends) pending.push(...this.dispatch(send, performed.sends));
      this.arm(reply.alarmMs);
      this.host.record(performed);
      if (reply.wipe) {
        this.host.wipe();
        break;
      }
      if (reply.load === undefined) break;
      const loaded = this.host.storage.load(reply.load);
      // A report's facts only the executor knows: the database's size and its counters.
      if (reply.load.report) {
        loaded.facts = { dbBytes: BigInt(this.host.storage.databaseBytes()), counters: this.host.stats.all() };
        this.reportCost.reports++;
        this.reportCost.rows_read += this.host.stats.lastRowsRead + this.host.storage.lastCountRowsRead;
      }
      reply = this.step({ loaded });
    }
    return { reply: reply.reply, progress: reply.progress, done: Promise.all(pending).then(() => undefined), quorum };
  }

  /** The core was dropped or rebuilt: the waits it held are gone. */
  abandonQuorum(): void {
    for (const resolve of this.quorumWaiting.values()) resolve(undefined);
    this.quorumWaiting.clear();
  }

  private quorumEnded(id: number, outcome: QuorumOutcome): void {
    this.quorumWaiting.get(id)?.(outcome);
    this.quorumWaiting.delete(id);
  }

  private step(event: Msg): Msg {
    const request = { nowMs: BigInt(this.host.nowMs()), random: random64(), ...event };
    const core = this.host.core();
    try {
      return core.call(Op.Step, request);
    } catch (err) {
      // A trap (anything but a return code) leaves the instance unusable: the next event
      // rebuilds it from storage, and what it had in flight counts as lost.
      if (!(err instanceof CoreError)) {
        this.host.dropCore();
        this.abandonQuorum();
      }
      throw err;
    }
  }

  private commit(reply: Msg, payload: Uint8Array): number {
    try {
      return this.host.storage.apply(reply, payload);
    } catch (err) {
      this.host.dropCore();
      this.abandonQuorum();
      throw err;
    }
  }

  private dispatch(send: Msg, performed: number[][]): Promise<void>[] {
    const generation = this.host.coreGeneration();
    return send.to.map((t: Msg) => {
      performed.push([t.peer, send.kind, send.message.length]);
      let settled!: () => void;
      this.host.sent(send.kind, new Promise<void>((resolve) => (settled = resolve)));
      return this.host
        .send(t.peer, send.kind, send.message, Number(send.timeoutMs), send.onPath === true)
        .then((r) => {
          if (this.host.coreGeneration() !== generation) return undefined;
          const answer = { tag: t.tag, message: r.answer ?? EMPTY, answered: r.answer !== undefined, refused: r.refused ?? "" };
          const ran = this.run({ answer }, r.answer ?? EMPTY);
          settled();
          return ran.done;
        })
        .catch((err: Error) => console.error(`ringkv node: handling an answer failed: ${err.stack ?? err}`))
        .finally(() => settled());
    });
  }

  private arm(alarmMs: bigint): void {
    this.host.setAlarm(alarmMs === 0n ? undefined : Number(alarmMs));
  }

}
