#!/usr/bin/env node
// lint-literals: no numeric literal in worker/ outside an allow-list of platform limits,
// HTTP status codes and the HTTP API's published limits: timing and policy numbers live
// in the core.
//
//   node scripts/lint-literals.mjs [file.ts ...]   (default: worker/*.ts but schema.ts)
//
// Prints `file:line: literal N (context)` for each literal not allowed and exits 1 when
// there is any. Allowed:
//   - 0, 1 and 2 (so also -1, -2), 0n and 1n: trivial arithmetic and indexing;
//   - a 3-digit decimal 100..599 on a line whose code mentions `status` or `json(`, or
//     that is the first argument of `HttpError(` or `fail(` (an HTTP status code);
//   - any literal on a line ending in a `// lint: <reason>` comment, with reason one of
//     REASONS (a comment may follow the reason: `// lint: platform-limit (SQLite row)`):
//       http-status     an HTTP status code the heuristic above does not see;
//       platform-limit  a limit of the platform (SQLite's 100 bound parameters, its 2 MB
//                       row, Workers' limits);
//       api-limit       a limit the HTTP API publishes (1024-byte keys, 256-byte content
//                       types, listing limit 1000, node ids 0..1023);
//       encoding        a constant of an encoding (bit widths, base64 groups, 0xff masks,
//                       radix 16, varint bits, HMAC and token byte lengths);
//       config          a default or range of a configuration variable as the README's configuration table (or
//                       ../shared/SPEC.md's Configuration section) publishes it;
//       abi             a constant mirroring wasm/include/ringkv.h or wasm/ringkv.proto:
//                       op codes, return codes, message limits.
// An unknown or missing reason is reported, and so is a marker on a line without any
// numeric literal (a misplaced or stale marker).
//
// A small tokenizer finds the literals: comments, string literals, template literal text
// and regular expression literals never count, and identifiers such as `base64` or `u8`
// are not numbers.
import { readdirSync, readFileSync, realpathSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

export const REASONS = ["http-status", "platform-limit", "api-limit", "encoding", "config", "abi"];
const TRIVIAL = new Set(["0", "1", "2"]);
const TRIVIAL_BIGINT = new Set(["0", "1"]);

// After one of these words a `/` starts a regular expression, not a division.
const REGEX_AFTER_WORDS = new Set([
  "return", "typeof", "instanceof", "in", "of", "new", "delete", "void", "throw", "case",
  "do", "else", "yield", "await",
]);

const isIdStart = (c) => /[A-Za-z_$\u0080-\uffff]/.test(c);
const isIdPart = (c) => /[A-Za-z0-9_$\u0080-\uffff]/.test(c);
const isDigit = (c) => c >= "0" && c <= "9";

/**
 * Splits TypeScript source into the pieces the lint needs: numeric literals (with their
 * line), line comments (with their line), and per line the code text with strings,
 * template text, regexes and comments blanked out.
 */
export function tokenize(text) {
  const numbers = []; // { raw, line, col } (col: offset in the line's code text)
  const lineComments = []; // { text, line } (text without the leading //)
  const code = []; // per line (1-based index): code-only text
  let line = 1;
  let i = 0;
  const n = text.length;
  // The last significant token, for the regex/division decision: "num", "id", "word"
  // (a keyword after which an expression starts), "close" () ] }), "punct", or null.
  let prev = null;
  // Template literal nesting: each entry counts the open braces inside a `${ ... }`.
  const templates = [];

  const emitCode = (s) => {
    code[line] = (code[line] ?? "") + s;
  };
  // Advances over text[i, j) that is not code (strings, comments...), counting lines.
  const skipTo = (j) => {
    for (; i < j; i++) if (text[i] === "\n") line++;
  };

  // Scans template literal text from i (just after ` or the } closing a ${), up to and
  // including the closing ` or the ${ that opens an expression.
  const scanTemplateText = () => {
    while (i < n) {
      const c = text[i];
      if (c === "\\") { skipTo(Math.min(i + 2, n)); continue; }
      if (c === "`") { i++; emitCode("``"); prev = "close"; return; }
      if (c === "$" && text[i + 1] === "{") { i += 2; emitCode("${"); templates.push(0); prev = "punct"; return; }
      skipTo(i + 1);
    }
  };

  while (i < n) {
    const c = text[i];
    const d = text[i + 1];
    if (c === "\n") { line++; i++; continue; }
    if (c === " " || c === "\t" || c === "\r" || c === "\f" || c === "\v" || c === "\ufeff") {
      emitCode(c === "\r" ? "" : " ");
      i++;
      continue;
    }
    // Comments.
    if (c === "/" && d === "/") {
      let j = text.indexOf("\n", i);
      if (j < 0) j = n;
      lineComments.push({ text: text.slice(i + 2, j), line });
      i = j;
      continue;
    }
    if (c === "/" && d === "*") {
      let j = text.indexOf("*/", i + 2);
      j = j < 0 ? n : j + 2;
      skipTo(j);
      emitCode(" ");
      continue;
    }
    // Strings.
    if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < n && text[j] !== c && text[j] !== "\n") j += text[j] === "\\" ? 2 : 1;
      skipTo(Math.min(j + 1, n));
      emitCode(c + c);
      prev = "num"; // a value: a following / divides
      continue;
    }
    if (c === "`") {
      i++;
      scanTemplateText();
      continue;
    }
    // Braces (tracking template expressions).
    if (c === "{") {
      if (templates.length) templates[templates.length - 1]++;
      emitCode(c); i++; prev = "punct";
      continue;
    }
    if (c === "}") {
      if (templates.length && templates[templates.length - 1] === 0) {
        templates.pop();
        emitCode("}"); i++;
        scanTemplateText();
        continue;
      }
      if (templates.length) templates[templates.length - 1]--;
      emitCode(c); i++; prev = "close";
      continue;
    }
    // Numbers: a digit, or a dot followed by a digit.
    if (isDigit(c) || (c === "." && isDigit(d ?? ""))) {
      let j = i;
      if (c === "0" && /[xXbBoO]/.test(d ?? "")) {
        j += 2;
        while (j < n && /[0-9A-Fa-f_]/.test(text[j])) j++;
      } else {
        while (j < n && (isDigit(text[j]) || text[j] === "_")) j++;
        if (text[j] === "." && !(text[j + 1] === ".")) {
          j++;
          while (j < n && (isDigit(text[j]) || text[j] === "_")) j++;
        }
        if (/[eE]/.test(text[j] ?? "") && /[0-9+-]/.test(text[j + 1] ?? "")) {
          j += 2;
          while (j < n && (isDigit(text[j]) || text[j] === "_")) j++;
        }
      }
      if (text[j] === "n") j++;
      // An identifier character straight after is not valid TS; take it along so that
      // the report shows what was written.
      while (j < n && isIdPart(text[j])) j++;
      const raw = text.slice(i, j);
      numbers.push({ raw, line, col: (code[line] ?? "").length });
      emitCode(raw);
      i = j;
      prev = "num";
      continue;
    }
    // Identifiers and keywords (private names #x too).
    if (isIdStart(c) || (c === "#" && isIdStart(d ?? ""))) {
      let j = i + 1;
      while (j < n && isIdPart(text[j])) j++;
      const word = text.slice(i, j);
      emitCode(word);
      i = j;
      // `x.return` or `{ case: 1 }` are names, not keywords; close enough for a lint.
      prev = REGEX_AFTER_WORDS.has(word) ? "word" : "id";
      continue;
    }
    // Regular expression literals.
    if (c === "/" && (prev === null || prev === "punct" || prev === "word")) {
      let j = i + 1;
      let inClass = false;
      while (j < n && text[j] !== "\n") {
        const r = text[j];
        if (r === "\\") { j += 2; continue; }
        if (r === "[") inClass = true;
        else if (r === "]") inClass = false;
        else if (r === "/" && !inClass) break;
        j++;
      }
      j++;
      while (j < n && isIdPart(text[j])) j++; // flags
      skipTo(Math.min(j, n));
      emitCode("/re/");
      prev = "num";
      continue;
    }
    // Punctuation.
    emitCode(c);
    i++;
    prev = c === ")" || c === "]" ? "close" : "punct";
  }
  return { numbers, lineComments, code };
}

// The numeric value of a literal as a canonical decimal string, or null when it is not a
// valid literal (e.g. `1_` or `08x`). Bigints keep their n in `bigint`.
function literalValue(raw) {
  let s = raw.replace(/_/g, "");
  const bigint = s.endsWith("n");
  if (bigint) s = s.slice(0, -1);
  if (!/^(0[xX][0-9A-Fa-f]+|0[bB][01]+|0[oO][0-7]+|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$/.test(s)) return null;
  if (bigint) {
    try { return { bigint: true, value: BigInt(s).toString() }; } catch { return null; }
  }
  const v = Number(s);
  return Number.isFinite(v) ? { bigint: false, value: String(v) } : null;
}

function isTrivial(raw) {
  const v = literalValue(raw);
  if (!v) return false;
  return v.bigint ? TRIVIAL_BIGINT.has(v.value) : TRIVIAL.has(v.value);
}

function isStatusCode(raw, codeLine, col) {
  if (!/^[1-5][0-9][0-9]$/.test(raw)) return false;
  if (/status/i.test(codeLine) || /json\s*\(/.test(codeLine)) return true;
  // The first argument of HttpError( or fail( (new HttpError(404, ...), fail(400, ...)).
  return /(?<![\w$])(?:HttpError|fail)\s*\(\s*$/.test(codeLine.slice(0, col));
}

function context(lines, line) {
  const s = (lines[line - 1] ?? "").trim().replace(/\s+/g, " ");
  return s.length > 100 ? s.slice(0, 97) + "..." : s;
}

/**
 * Lints one file's text. Returns the violations in source order, each
 * { file, line, kind: "literal" | "marker", literal?, message } where message is the
 * line the CLI prints.
 */
export function lintSource(text, fileName) {
  const { numbers, lineComments, code } = tokenize(text);
  const lines = text.split("\n");
  const out = [];
  const markers = new Map(); // line -> reason (valid ones)
  const numberLines = new Set(numbers.map((x) => x.line));
  for (const cm of lineComments) {
    const m = /^\s*lint\s*:\s*(\S*)/.exec(cm.text);
    if (!m) continue;
    const reason = m[1].replace(/[.,;:)]+$/, "");
    if (!REASONS.includes(reason)) {
      out.push({
        file: fileName, line: cm.line, kind: "marker",
        message: `${fileName}:${cm.line}: ${reason ? `unknown lint reason "${reason}"` : "lint marker without a reason"}` +
          ` (allowed: ${REASONS.join(", ")}) (${context(lines, cm.line)})`,
      });
      continue;
    }
    if (!numberLines.has(cm.line)) {
      out.push({
        file: fileName, line: cm.line, kind: "marker",
        message: `${fileName}:${cm.line}: lint marker "${reason}" on a line without a numeric literal (${context(lines, cm.line)})`,
      });
      continue;
    }
    markers.set(cm.line, reason);
  }
  for (const { raw, line, col } of numbers) {
    if (isTrivial(raw)) continue;
    if (markers.has(line)) continue;
    if (isStatusCode(raw, code[line] ?? "", col)) continue;
    out.push({
      file: fileName, line, kind: "literal", literal: raw,
      message: `${fileName}:${line}: literal ${raw} (${context(lines, line)})`,
    });
  }
  out.sort((a, b) => a.line - b.line);
  return out;
}

function main(argv) {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..");
  let files = argv;
  if (files.length === 0) {
    const dir = join(root, "worker");
    files = readdirSync(dir)
      .filter((f) => f.endsWith(".ts") && f !== "schema.ts")
      .sort()
      .map((f) => join(dir, f));
  }
  let count = 0;
  for (const f of files) {
    const name = relative(process.cwd(), f) || f;
    for (const v of lintSource(readFileSync(f, "utf8"), name)) {
      console.log(v.message);
      count++;
    }
  }
  if (count > 0) {
    console.error(`lint-literals: ${count} violation${count === 1 ? "" : "s"} in ${files.length} file${files.length === 1 ? "" : "s"}`);
    return 1;
  }
  return 0;
}

const invoked = (() => {
  try {
    return realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();
if (invoked) {
  process.exitCode = main(process.argv.slice(2));
}
