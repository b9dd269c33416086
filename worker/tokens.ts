// Context tokens: the core's Token payload (key hash, highest HLC, version vector) made
// tamper-evident with an HMAC-SHA256 under TOKEN_SECRET, computed with Web Crypto.
// Wire form: base64url(payload || HMAC(payload)[0..16]), no padding.

/** Bytes of the truncated HMAC appended to the payload. */
export const TOKEN_MAC_BYTES = 16;
/** Longest accepted token text (a token covering 256 explicit dots stays far below). */
export const TOKEN_TEXT_BYTES_MAX = 16384;

const keys = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (key === undefined) {
    key = crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
    keys.set(secret, key);
  }
  return key;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64_INDEX = new Int16Array(128).fill(-1);
for (let i = 0; i < B64.length; i++) B64_INDEX[B64.charCodeAt(i)] = i;

/** base64url without padding. */
export function base64url(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  if (i + 1 === bytes.length) {
    const n = bytes[i] << 16;
    out += B64[n >> 18] + B64[(n >> 12) & 63];
  } else if (i + 2 === bytes.length) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63];
  }
  return out;
}

/** Strict base64url decoding (no padding, no whitespace, canonical trailing bits);
 *  returns undefined on anything else. */
export function unbase64url(text: string): Uint8Array | undefined {
  if (text.length % 4 === 1) return undefined;
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? B64_INDEX[c] : -1;
    if (v < 0) return undefined;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
      acc &= (1 << bits) - 1;
    }
  }
  if (acc !== 0) return undefined;
  return out.subarray(0, o);
}

/** Standard base64 (with padding), for binary values in JSON. */
export function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** Signs a Token payload: the text a client gets in X-Ring-Context / "context". */
export async function signToken(secret: string, payload: Uint8Array): Promise<string> {
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), payload));
  const token = new Uint8Array(payload.length + TOKEN_MAC_BYTES);
  token.set(payload);
  token.set(mac.subarray(0, TOKEN_MAC_BYTES), payload.length);
  return base64url(token);
}

/** Verifies a client's token text; returns its payload, or undefined when the text is not
 *  base64url or the HMAC does not match. The payload's contents are the core's to judge. */
export async function verifyToken(secret: string, text: string): Promise<Uint8Array | undefined> {
  if (text.length === 0 || text.length > TOKEN_TEXT_BYTES_MAX) return undefined;
  const raw = unbase64url(text);
  if (raw === undefined || raw.length <= TOKEN_MAC_BYTES) return undefined;
  const payload = raw.slice(0, raw.length - TOKEN_MAC_BYTES);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), payload));
  let diff = 0;
  for (let i = 0; i < TOKEN_MAC_BYTES; i++) diff |= mac[i] ^ raw[payload.length + i];
  return diff === 0 ? payload : undefined;
}

/** Constant-time string comparison for bearer tokens. */
export function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ (y[i % Math.max(y.length, 1)] ?? 0);
  return diff === 0;
}
