// The one module that touches the core's WebAssembly memory (see wasm/include/ringkv.h).
//
// Ownership: for each call we copy the encoded request into the core's input buffer,
// call, check the return code, and copy the reply out with .slice() before anything else
// can run; views on memory are rebuilt after every call because the core may grow it.
// Nothing allocated by the core is ever held by JS, and JS never frees core memory.
import { decode, encode, type Message } from "./pb";

/** Operation codes, as enum ringkv_op in ringkv.h; each maps to its proto message pair. */
export const Op = {
  Init: 1,
  Place: 2,
  Write: 3, // lint: abi
  Read: 4, // lint: abi
  MessageKeys: 5, // lint: abi
  Merge: 6, // lint: abi
  BuildPush: 7, // lint: abi
  AeStart: 8, // lint: abi
  AeAnswer: 9, // lint: abi
  AeCompare: 10, // lint: abi
  AeRepair: 11, // lint: abi
  GcQuery: 12, // lint: abi
  GcAnswer: 13, // lint: abi
  GcDecide: 14, // lint: abi
  Expire: 15, // lint: abi
  Control: 16, // lint: abi
  Step: 17, // lint: abi
  Report: 18, // lint: abi
  Cluster: 19, // lint: abi
  ClientRead: 20, // lint: abi
  PagePush: 21, // lint: abi
  Drop: 22, // lint: abi
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

const MESSAGE_NAMES: Record<number, string> = {
  [Op.Init]: "Init",
  [Op.Place]: "Place",
  [Op.Write]: "Write",
  [Op.Read]: "Read",
  [Op.MessageKeys]: "MessageKeys",
  [Op.Merge]: "Merge",
  [Op.BuildPush]: "BuildPush",
  [Op.AeStart]: "AeStart",
  [Op.AeAnswer]: "AeAnswer",
  [Op.AeCompare]: "AeCompare",
  [Op.AeRepair]: "AeRepair",
  [Op.GcQuery]: "GcQuery",
  [Op.GcAnswer]: "GcAnswer",
  [Op.GcDecide]: "GcDecide",
  [Op.Expire]: "Expire",
  [Op.Control]: "Control",
  [Op.Step]: "Step",
  [Op.Report]: "Report",
  [Op.Cluster]: "Cluster",
  [Op.ClientRead]: "Read",
  [Op.PagePush]: "AeRepair",
  [Op.Drop]: "Expire",
};

/** RINGKV_MESSAGE_BYTES_MAX (ringkv.h): the largest request the core reads. */
const MESSAGE_BYTES_MAX = 64 * 1024 * 1024; // lint: abi

const CODE_NAMES = [
  "ok",
  "malformed message",
  "unknown protocol version",
  "invalid context token",
  "context token from the future (clock skew)",
  "too many siblings",
  "clock exhausted",
  "invalid configuration",
  "core not initialised",
  "unknown operation",
  "out of memory",
  "value out of range",
  "key too large",
  "no dot lease yet",
  "catching up on this shard",
  "being fenced: no client write",
];

/** A non-zero return code from the core. */
export class CoreError extends Error {
  static readonly E_DECODE = 1;
  static readonly E_PROTOCOL = 2;
  static readonly E_TOKEN = 3; // lint: abi
  static readonly E_SKEW = 4; // lint: abi
  static readonly E_SIBLINGS = 5; // lint: abi
  static readonly E_CLOCK = 6; // lint: abi
  static readonly E_CONFIG = 7; // lint: abi
  static readonly E_STATE = 8; // lint: abi
  static readonly E_OP = 9; // lint: abi
  static readonly E_NOMEM = 10; // lint: abi
  static readonly E_VALUE = 11; // lint: abi
  static readonly E_KEY_BYTES = 12; // lint: abi
  static readonly E_LEASE = 13; // lint: abi
  static readonly E_CATCHING_UP = 14; // lint: abi
  static readonly E_FENCING = 15; // lint: abi
  static readonly E_NOT_SERVING = 16; // lint: abi
  static readonly E_WRITE_ID = 17; // lint: abi

  constructor(
    readonly code: number,
    readonly codeName: string,
    detail?: string,
  ) {
    super(detail ? `${codeName}: ${detail}` : codeName);
    this.name = "CoreError";
  }
}

interface CoreExports {
  memory: WebAssembly.Memory;
  ringkv_wasm_input(len: number): number;
  ringkv_wasm_call(op: number, len: number): number;
  ringkv_wasm_output(): number;
  ringkv_wasm_output_len(): number;
}

/** One core node: one WebAssembly instance with its own memory. */
export class Core {
  private readonly exports: CoreExports;
  /** Sees every call (record/replay): the request, the return code and the reply. */
  tap?: (op: number, request: Uint8Array, code: number, reply: Uint8Array) => void;

  constructor(module: WebAssembly.Module) {
    const instance = new WebAssembly.Instance(module, {});
    this.exports = instance.exports as unknown as CoreExports;
  }

  /** Runs `op` on the encoded request bytes; returns the reply bytes (a copy). */
  callRaw(op: OpCode, request: Uint8Array): { code: number; reply: Uint8Array } {
    const x = this.exports;
    // Beyond the core's message limit a request is too large (E_VALUE), not a lack of
    // memory: the caller says whose fault that is.
    if (request.length > MESSAGE_BYTES_MAX) throw new CoreError(CoreError.E_VALUE, "request too large for one core call");
    const input = x.ringkv_wasm_input(request.length);
    if (input === 0 && request.length > 0) throw new CoreError(CoreError.E_NOMEM, CODE_NAMES[CoreError.E_NOMEM]);
    new Uint8Array(x.memory.buffer, input, request.length).set(request);
    const code = x.ringkv_wasm_call(op, request.length);
    // The call may have grown memory: take a fresh view.
    const out = x.ringkv_wasm_output();
    const len = x.ringkv_wasm_output_len();
    const reply = new Uint8Array(x.memory.buffer, out, len).slice();
    this.tap?.(op, request, code, reply);
    return { code, reply };
  }

  /** Encodes `request` as the op's Request message, calls, decodes its Reply message.
   *  Throws CoreError on a non-zero return code. */
  call(op: OpCode, request: Message): Message {
    const name = MESSAGE_NAMES[op];
    const { code, reply } = this.callRaw(op, encode(`${name}Request`, request));
    if (code !== 0) {
      let detail: string | undefined;
      if (op === Op.Init && reply.length > 0) detail = decode("InitReply", reply).error;
      throw new CoreError(code, CODE_NAMES[code] ?? `code ${code}`, detail);
    }
    return decode(`${name}Reply`, reply);
  }

  /** Bytes of linear memory, for tests that check memory stays bounded. */
  memoryBytes(): number {
    return this.exports.memory.buffer.byteLength;
  }
}
