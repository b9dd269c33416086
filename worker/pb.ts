// A small proto3 codec for the messages that cross the JS/WASM boundary, driven by the
// field table generated from wasm/ringkv.proto (worker/schema.ts). The shim only builds
// boundary requests and reads boundary replies with it; node-to-node messages and stored
// registers are always encoded by the C core.
//
// Mapping: uint64/fixed64 <-> bigint, uint32/int32 <-> number, bool, bytes <-> Uint8Array,
// string, repeated <-> array, nested message <-> object (undefined when absent).
import { SCHEMA } from "./schema";

export type Message = Record<string, any>;

const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;
const FIXED32 = 5; // lint: encoding (wire type)

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

function isScalarNumeric(type: string): boolean {
  return type === "uint32" || type === "int32" || type === "uint64" || type === "fixed64" || type === "bool";
}

class Writer {
  private buf = new Uint8Array(256); // lint: encoding (the first buffer; it doubles)
  len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  varint(value: bigint | number): void {
    if (typeof value === "number" && value >= 0 && value <= 0xffffffff && Number.isInteger(value)) { // lint: encoding (uint32)
      this.uvarint(value);
      return;
    }
    let v = BigInt.asUintN(64, BigInt(value)); // lint: encoding (varint)
    this.reserve(10); // lint: encoding (varint)
    while (v >= 0x80n) { // lint: encoding (varint)
      this.buf[this.len++] = Number(v & 0x7fn) | 0x80; // lint: encoding (varint)
      v >>= 7n; // lint: encoding (varint)
    }
    this.buf[this.len++] = Number(v);
  }

  // Non-negative numbers below 2^32 (tags, lengths, ids) without BigInt, for speed.
  uvarint(value: number): void {
    this.reserve(5); // lint: encoding (varint)
    while (value >= 0x80) { // lint: encoding (varint)
      this.buf[this.len++] = (value & 0x7f) | 0x80; // lint: encoding (varint)
      value >>>= 7; // lint: encoding (varint)
    }
    this.buf[this.len++] = value;
  }

  fixed64(value: bigint): void {
    this.reserve(8); // lint: encoding (fixed64)
    let v = BigInt.asUintN(64, value); // lint: encoding (fixed64)
    for (let i = 0; i < 8; i++) { // lint: encoding (fixed64)
      this.buf[this.len++] = Number(v & 0xffn); // lint: encoding (fixed64)
      v >>= 8n; // lint: encoding (fixed64)
    }
  }

  bytes(value: Uint8Array): void {
    this.uvarint(value.length);
    this.reserve(value.length);
    this.buf.set(value, this.len);
    this.len += value.length;
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

function writeScalar(w: Writer, type: string, value: any): void {
  switch (type) {
    case "uint32":
    case "int32":
    case "uint64":
      w.varint(value);
      return;
    case "bool":
      w.uvarint(value ? 1 : 0);
      return;
    case "fixed64":
      w.fixed64(BigInt(value));
      return;
    case "bytes":
      w.bytes(value);
      return;
    case "string":
      w.bytes(utf8Encoder.encode(value));
      return;
  }
  throw new Error(`pb: unsupported type ${type}`);
}

function isDefault(type: string, value: any): boolean {
  if (value === undefined || value === null) return true;
  switch (type) {
    case "bool":
      return value === false;
    case "bytes":
    case "string":
      return value.length === 0;
    case "uint32":
    case "int32":
    case "uint64":
    case "fixed64":
      return value === 0 || value === 0n;
  }
  return false;
}

function encodeInto(w: Writer, typeName: string, msg: Message): void {
  const fields = SCHEMA[typeName];
  if (!fields) throw new Error(`pb: unknown message ${typeName}`);
  for (const [name, number, type, repeated] of fields) {
    const value = msg[name];
    if (value === undefined || value === null) continue;
    const nested = SCHEMA[type] !== undefined;
    if (repeated) {
      if (!Array.isArray(value) || value.length === 0) continue;
      if (!nested && isScalarNumeric(type)) {
        // proto3 packs repeated scalars.
        const inner = new Writer();
        for (const item of value) writeScalar(inner, type, item);
        w.uvarint((number << 3) | LEN); // lint: encoding (tag)
        w.bytes(inner.finish());
      } else {
        for (const item of value) {
          w.uvarint((number << 3) | (nested ? LEN : wireType(type))); // lint: encoding (tag)
          if (nested) w.bytes(encode(type, item));
          else writeScalar(w, type, item);
        }
      }
    } else if (nested) {
      w.uvarint((number << 3) | LEN); // lint: encoding (tag)
      w.bytes(encode(type, value));
    } else if (!isDefault(type, value)) {
      w.uvarint((number << 3) | wireType(type)); // lint: encoding (tag)
      writeScalar(w, type, value);
    }
  }
}

function wireType(type: string): number {
  if (type === "fixed64") return FIXED64;
  if (type === "bytes" || type === "string" || SCHEMA[type] !== undefined) return LEN;
  return VARINT;
}

/** Encodes `msg` as the proto message `typeName`. */
export function encode(typeName: string, msg: Message): Uint8Array {
  const w = new Writer();
  encodeInto(w, typeName, msg);
  return w.finish().slice();
}

class Reader {
  pos: number;
  constructor(readonly buf: Uint8Array, start: number, readonly end: number) {
    this.pos = start;
  }

  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) { // lint: encoding (varint)
      if (this.pos >= this.end) throw new Error("pb: truncated varint");
      const byte = this.buf[this.pos++];
      result |= BigInt(byte & 0x7f) << shift; // lint: encoding (varint)
      if (byte < 0x80) return BigInt.asUintN(64, result); // lint: encoding (varint)
      shift += 7n; // lint: encoding (varint)
    }
    throw new Error("pb: varint too long");
  }

  /** The next varint as a number when it takes at most four bytes (below 2^28: tags,
   *  lengths, node ids, small counters), else undefined with the position unchanged.
   *  BigInt arithmetic is the slow part of decoding; most varints never need it. */
  shortVarint(): number | undefined {
    let result = 0;
    const limit = Math.min(this.pos + 4, this.end); // lint: encoding (varint)
    for (let p = this.pos, shift = 0; p < limit; p++, shift += 7) { // lint: encoding (varint)
      const byte = this.buf[p];
      result |= (byte & 0x7f) << shift; // lint: encoding (varint)
      if (byte < 0x80) { // lint: encoding (varint)
        this.pos = p + 1;
        return result;
      }
    }
    return undefined;
  }

  uvarint(): number {
    const short = this.shortVarint();
    if (short !== undefined) return short;
    const v = this.varint();
    if (v > 0xffffffffn) throw new Error("pb: length out of range"); // lint: encoding (uint32)
    return Number(v);
  }

  private view: DataView | undefined;

  fixed64(): bigint {
    if (this.pos + 8 > this.end) throw new Error("pb: truncated fixed64"); // lint: encoding (fixed64)
    this.view ??= new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8; // lint: encoding (fixed64)
    return v;
  }

  slice(): [number, number] {
    const n = this.uvarint();
    if (this.pos + n > this.end) throw new Error("pb: truncated field");
    const start = this.pos;
    this.pos += n;
    return [start, this.pos];
  }

  skip(wire: number): void {
    if (wire === VARINT) this.varint();
    else if (wire === FIXED64) this.fixed64();
    else if (wire === LEN) this.slice();
    else if (wire === FIXED32) {
      if (this.pos + 4 > this.end) throw new Error("pb: truncated fixed32"); // lint: encoding (fixed32)
      this.pos += 4; // lint: encoding (fixed32)
    } else throw new Error(`pb: bad wire type ${wire}`);
  }
}

function readScalar(r: Reader, type: string): any {
  switch (type) {
    case "uint32": {
      const short = r.shortVarint();
      return short !== undefined ? short : Number(BigInt.asUintN(32, r.varint())); // lint: encoding (uint32)
    }
    case "int32": {
      const short = r.shortVarint();
      return short !== undefined ? short : Number(BigInt.asIntN(32, r.varint())); // lint: encoding (int32)
    }
    case "uint64": {
      const short = r.shortVarint();
      return short !== undefined ? BigInt(short) : r.varint();
    }
    case "bool": {
      const short = r.shortVarint();
      return short !== undefined ? short !== 0 : r.varint() !== 0n;
    }
    case "fixed64":
      return r.fixed64();
    case "bytes": {
      const [s, e] = r.slice();
      return r.buf.slice(s, e);
    }
    case "string": {
      const [s, e] = r.slice();
      return utf8Decoder.decode(r.buf.subarray(s, e));
    }
  }
  throw new Error(`pb: unsupported type ${type}`);
}

function defaultOf(type: string): any {
  switch (type) {
    case "uint32":
    case "int32":
      return 0;
    case "uint64":
    case "fixed64":
      return 0n;
    case "bool":
      return false;
    case "bytes":
      return new Uint8Array(0);
    case "string":
      return "";
  }
  return undefined;
}

type FieldEntry = readonly [string, number, string, number];
const FIELDS_BY_NUMBER = new Map<string, Map<number, FieldEntry>>();

/** Each message type's field table by field number, built once per isolate. */
function fieldsByNumber(typeName: string, fields: readonly FieldEntry[]): Map<number, FieldEntry> {
  let byNumber = FIELDS_BY_NUMBER.get(typeName);
  if (byNumber === undefined) {
    byNumber = new Map(fields.map((f) => [f[1], f] as const));
    FIELDS_BY_NUMBER.set(typeName, byNumber);
  }
  return byNumber;
}

function decodeRange(typeName: string, buf: Uint8Array, start: number, end: number): Message {
  const fields = SCHEMA[typeName];
  if (!fields) throw new Error(`pb: unknown message ${typeName}`);
  const msg: Message = {};
  for (const f of fields) msg[f[0]] = f[3] ? [] : defaultOf(f[2]); // lint: encoding (schema.ts field: repeated)
  const byNumber = fieldsByNumber(typeName, fields);
  const r = new Reader(buf, start, end);
  while (r.pos < end) {
    const tag = r.uvarint();
    const number = tag >>> 3; // lint: encoding (tag)
    const wire = tag & 7; // lint: encoding (tag)
    const field = byNumber.get(number);
    if (!field) {
      r.skip(wire);
      continue;
    }
    const [name, , type, repeated] = field;
    if (SCHEMA[type] !== undefined) {
      if (wire !== LEN) throw new Error(`pb: ${typeName}.${name}: bad wire type`);
      const [s, e] = r.slice();
      const value = decodeRange(type, buf, s, e);
      if (repeated) msg[name].push(value);
      else msg[name] = value;
    } else if (repeated && wire === LEN && isScalarNumeric(type)) {
      const [s, e] = r.slice();
      const inner = new Reader(buf, s, e);
      while (inner.pos < e) msg[name].push(readScalar(inner, type));
    } else {
      if (wire !== wireType(type)) throw new Error(`pb: ${typeName}.${name}: bad wire type`);
      const value = readScalar(r, type);
      if (repeated) msg[name].push(value);
      else msg[name] = value;
    }
  }
  return msg;
}

/** Decodes `bytes` as the proto message `typeName`; throws on malformed input. */
export function decode(typeName: string, bytes: Uint8Array): Message {
  return decodeRange(typeName, bytes, 0, bytes.length);
}
