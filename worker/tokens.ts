// Context tokens: the core's Token payload (key hash, highest HLC, version vector) made
// tamper-evident with an HMAC-SHA256, computed with Web Crypto, under TOKEN_SECRET (or the
// cluster's generated secret). The MAC covers the payload, the key's bytes and the
// cluster id, so a token is bound to one key of one cluster.
// Wire form: base64url(TOKEN_VERSION || payload || HMAC(...)[0..16]), no padding.
// Release 1's tokens had no version byte (their first byte is a protobuf tag).

/** Bytes of the truncated HMAC appended to the payload. */
export const TOKEN_MAC_BYTES = 16; // lint: encoding
/** Longest accepted token text (a token covering 256 explicit dots stays far below). */
export const TOKEN_TEXT_BYTES_MAX = 16384; // lint: api-limit (README: Limits)
/** The first byte of every release-2 token. 0x02 is never a protobuf tag (field 0). */
const TOKEN_VERSION = 2;
/** What the MAC input starts with: no other use of the secret can produce it. */
const MAC_DOMAIN = new TextEncoder().encode("ringkv context token v2\0");

/** A secret for signing: TOKEN_SECRET's text, or the generated secret's bytes. */
export type Secret = string | Uint8Array;

const keys = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: Secret): Promise<CryptoKey> {
  const id = typeof secret === "string" ? `s:${secret}` : `b:${Array.from(secret).join(",")}`;
  let key = keys.get(id);
  if (key === undefined) {
    const raw = typeof secret === "string" ? new TextEncoder().encode(secret) : secret;
    key = crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    keys.set(id, key);
  }
  return key;
}

async function mac(secret: Secret, clusterId: Uint8Array, key: Uint8Array, payload: Uint8Array): Promise<Uint8Array> {
  const input = new Uint8Array(MAC_DOMAIN.length + clusterId.length + 4 + key.length + payload.length); // lint: encoding (uint32 key length)
  let o = 0;
  input.set(MAC_DOMAIN, o);
  o += MAC_DOMAIN.length;
  input.set(clusterId, o);
  o += clusterId.length;
  new DataView(input.buffer).setUint32(o, key.length);
  o += 4; // lint: encoding (uint32 key length)
  input.set(key, o);
  o += key.length;
  input.set(payload, o);
  return new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), input));
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64_INDEX = new Int16Array(128).fill(-1); // lint: encoding (ASCII)
for (let i = 0; i < B64.length; i++) B64_INDEX[B64.charCodeAt(i)] = i;

/** base64url without padding. */
export function base64url(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) { // lint: encoding (base64 groups)
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2]; // lint: encoding (base64 groups)
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63]; // lint: encoding (base64 groups)
  }
  if (i + 1 === bytes.length) {
    const n = bytes[i] << 16; // lint: encoding (base64 groups)
    out += B64[n >> 18] + B64[(n >> 12) & 63]; // lint: encoding (base64 groups)
  } else if (i + 2 === bytes.length) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8); // lint: encoding (base64 groups)
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63]; // lint: encoding (base64 groups)
  }
  return out;
}

/** Strict base64url decoding (no padding, no whitespace, canonical trailing bits);
 *  returns undefined on anything else. */
export function unbase64url(text: string): Uint8Array | undefined {
  if (text.length % 4 === 1) return undefined; // lint: encoding (base64 groups)
  const out = new Uint8Array(Math.floor((text.length * 3) / 4)); // lint: encoding (base64 groups)
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? B64_INDEX[c] : -1; // lint: encoding (ASCII)
    if (v < 0) return undefined;
    acc = (acc << 6) | v; // lint: encoding (base64 groups)
    bits += 6; // lint: encoding (base64 groups)
    if (bits >= 8) { // lint: encoding (base64 groups)
      bits -= 8; // lint: encoding (base64 groups)
      out[o++] = (acc >> bits) & 0xff; // lint: encoding (base64 groups)
      acc &= (1 << bits) - 1;
    }
  }
  if (acc !== 0) return undefined;
  return out.subarray(0, o);
}

/** Standard base64 (with padding), for binary values in JSON. */
export function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) { // lint: platform-limit (arguments of one call)
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000)); // lint: platform-limit (arguments of one call)
  }
  return btoa(binary);
}

/** Signs a Token payload for `key`: the text a client gets in X-Ring-Context / "context". */
export async function signToken(secret: Secret, clusterId: Uint8Array, key: Uint8Array, payload: Uint8Array): Promise<string> {
  const m = await mac(secret, clusterId, key, payload);
  const token = new Uint8Array(1 + payload.length + TOKEN_MAC_BYTES);
  token[0] = TOKEN_VERSION;
  token.set(payload, 1);
  token.set(m.subarray(0, TOKEN_MAC_BYTES), 1 + payload.length);
  return base64url(token);
}

/** A verified token's payload, or why it is refused: "older" for a release-1 token,
 *  "invalid" for anything else that does not verify. The payload's contents are the
 *  core's to judge. Any of `secrets` may have signed it (rotation). */
export async function verifyToken(
  secrets: Secret[],
  clusterId: Uint8Array,
  key: Uint8Array,
  text: string,
): Promise<{ payload: Uint8Array } | { refused: "older" | "invalid" }> {
  if (text.length === 0 || text.length > TOKEN_TEXT_BYTES_MAX) return { refused: "invalid" };
  const raw = unbase64url(text);
  if (raw === undefined || raw.length <= 1 + TOKEN_MAC_BYTES) return { refused: "invalid" };
  if (raw[0] !== TOKEN_VERSION) {
    // Release 1: payload || MAC, the payload a Token message (fields 1, 2, 3).
    const release1 = raw[0] === 0x09 || raw[0] === 0x11 || raw[0] === 0x1a; // lint: abi (ringkv.proto Token fields 1, 2, 3)
    return { refused: release1 ? "older" : "invalid" };
  }
  const payload = raw.slice(1, raw.length - TOKEN_MAC_BYTES);
  for (const secret of secrets) {
    const m = await mac(secret, clusterId, key, payload);
    let diff = 0;
    for (let i = 0; i < TOKEN_MAC_BYTES; i++) diff |= m[i] ^ raw[1 + payload.length + i];
    if (diff === 0) return { payload };
  }
  return { refused: "invalid" };
}

/** Constant-time string comparison for bearer tokens. */
export function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ (y[i % Math.max(y.length, 1)] ?? 0);
  return diff === 0;
}
