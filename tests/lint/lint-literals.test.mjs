// scripts/lint-literals.mjs: numeric literals in worker/ need a reason (platform limit,
// HTTP status, the API's published limits, encoding widths); policy numbers belong in the
// core. These check the lint itself on small fixtures.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lintSource } from "../../scripts/lint-literals.mjs";

const script = new URL("../../scripts/lint-literals.mjs", import.meta.url).pathname;
const lint = (text) => lintSource(text, "fixture.ts");
const literals = (text) => lint(text).filter((v) => v.kind === "literal").map((v) => v.literal);

test("a policy number is reported, with file, line and context", () => {
  const v = lint("// retry policy\nconst PEER_RETRY_QUICK = 3;\n");
  assert.equal(v.length, 1);
  assert.equal(v[0].line, 2);
  assert.equal(v[0].literal, "3");
  assert.equal(v[0].message, "fixture.ts:2: literal 3 (const PEER_RETRY_QUICK = 3;)");
});

test("0, 1, 2 (and their negations), 0n and 1n are allowed", () => {
  assert.deepEqual(literals("const a = x[0] + x[1] * 2 - 1; let b = -1; const c = 0n + 1n;"), []);
  assert.deepEqual(literals("const d = 2n; const e = 3;"), ["2n", "3"]);
});

test("HTTP status codes on a status / json( line are allowed", () => {
  assert.deepEqual(literals("return json(404, { error: \"not found\" });"), []);
  assert.deepEqual(literals("return new Response(null, { status: 204 });"), []);
  assert.deepEqual(literals("if (response.status === 503 || r.status !== 200) retry();"), []);
  assert.deepEqual(literals("switch (status) { case 429: break; }"), []);
  // Not a status line, or not a status-shaped number.
  assert.deepEqual(literals("const TIMEOUT = 404;"), ["404"]);
  assert.deepEqual(literals("return json(600, {});"), ["600"]);
  assert.deepEqual(literals("return json(4_04, {});"), ["4_04"]);
  // A comment mentioning status does not make the line a status line.
  assert.deepEqual(literals("const WAIT = 500; // status page"), ["500"]);
});

test("a status code as the first argument of HttpError( or fail( is allowed", () => {
  assert.deepEqual(literals('throw new HttpError(503, "the ring is not available yet");'), []);
  assert.deepEqual(literals('if (bytes.length === 0) fail(400, "bad key: empty");'), []);
  assert.deepEqual(literals("fail( 414 , `key too long`);"), []);
  // Only the first argument, only a status-shaped number, only these callees.
  assert.deepEqual(literals("fail(400, KEY, 1024);"), ["1024"]);
  assert.deepEqual(literals("throw new HttpError(600, \"x\");"), ["600"]);
  assert.deepEqual(literals("retry(500, x);"), ["500"]);
  assert.deepEqual(literals("unfail(400);"), ["400"]);
  assert.deepEqual(literals("fail(f(400));"), ["400"]);
});

test("the config and abi reasons are known reasons", () => {
  assert.deepEqual(lint('{ name: "SHARDS", fallback: 16384, min: 1, max: 65536 }, // lint: config'), []);
  assert.deepEqual(lint("  Write: 3, // lint: abi (RINGKV_OP_WRITE)"), []);
  // Still line by line, and still needing a literal on the line.
  assert.deepEqual(literals("const OP = 3; // lint: abi\nconst T = 15_000;\n"), ["15_000"]);
  assert.deepEqual(lint("// lint: config\n").map((x) => x.kind), ["marker"]);
});

test("a `// lint: <reason>` marker allows the literals of its line", () => {
  assert.deepEqual(lint('return x.toString(16).padStart(16, "0"); // lint: encoding'), []);
  for (const reason of ["http-status", "platform-limit", "api-limit", "encoding", "config", "abi"]) {
    assert.deepEqual(lint(`const X = 1024; // lint: ${reason}`), [], reason);
  }
  assert.deepEqual(lint("const ROW = 2_000_000; // lint: platform-limit (SQLite caps a row at 2 MB)"), []);
  // Only its own line.
  assert.deepEqual(literals("const A = 5; // lint: api-limit\nconst B = 6;\n"), ["6"]);
});

test("an unknown or missing reason is reported, and does not allow the literal", () => {
  const v = lint("const X = 7; // lint: whatever");
  assert.deepEqual(v.map((x) => x.kind).sort(), ["literal", "marker"]);
  const marker = v.find((x) => x.kind === "marker");
  assert.match(marker.message, /^fixture\.ts:1: unknown lint reason "whatever"/);
  assert.equal(lint("const X = 7; // lint:").filter((x) => x.kind === "marker").length, 1);
});

test("a marker on a line without a literal is reported (misplaced or stale)", () => {
  const v = lint("// lint: encoding\nconst X = 16;\n");
  assert.deepEqual(v.map((x) => [x.kind, x.line]), [["marker", 1], ["literal", 2]]);
});

test("numbers in strings, comments, template text and regexes are not literals", () => {
  const src = [
    'const s = "retry 3 times" + \'wait 500 ms\';',
    "// a comment with 42 and 0x10",
    "/* block 99\n   spanning 100 lines */",
    "const t = `${name} took 250 ms, ${`nested 77 ${inner}`}`;",
    "const r = /^[0-9]{1,4}$/.test(text) && /a{3}/g.exec(u);",
    "const q = x.replace(/\\/v1\\/[^/]*\\/7/, \"\");",
    "const k = cond ? /8/ : /9/;",
    "const base64url = utf8(x64) + u8.length;",
  ].join("\n");
  assert.deepEqual(lint(src), []);
});

test("code inside template substitutions is still checked", () => {
  assert.deepEqual(literals("const t = `a ${x * 60} b ${`c ${y + 7}`} d`;"), ["60", "7"]);
  // And the tokenizer resumes correctly after a template and an object literal in it.
  assert.deepEqual(literals("const t = `${ { a: 1 }.a }`; const z = 9;"), ["9"]);
});

test("division is not taken for a regex", () => {
  assert.deepEqual(literals("const h = (a + b) / 4 / c; const m = n / 3;"), ["4", "3"]);
});

test("all literal forms are recognised", () => {
  assert.deepEqual(
    literals("const a = 1_000, b = 0x10, c = 64n, d = 0b101, e = 0o17, f = 1.5, g = .5, h = 1e3, i = 2.5e-3, j = 0xffn;"),
    ["1_000", "0x10", "64n", "0b101", "0o17", "1.5", ".5", "1e3", "2.5e-3", "0xffn"],
  );
  // Trivial values in other spellings.
  assert.deepEqual(literals("const a = 0x0 + 0b1 + 1.0 + 0x1n;"), []);
  // Line numbers count lines inside strings, templates and comments.
  const v = lint("const a = `x\ny\n`;\n/*\n*/\nconst b = 'p\\\nq';\nconst c = 33;");
  assert.deepEqual(v.map((x) => x.line), [8]);
});

test("the CLI prints violations and exits 1, or exits 0 when clean", () => {
  const dir = mkdtempSync(join(tmpdir(), "lint-literals-"));
  const bad = join(dir, "bad.ts");
  const good = join(dir, "good.ts");
  writeFileSync(bad, "const PEER_RETRY_QUICK = 3;\n");
  writeFileSync(good, "return json(404, { error: \"x\" });\nconst n = 0;\n");
  const r1 = spawnSync(process.execPath, [script, bad], { encoding: "utf8" });
  assert.equal(r1.status, 1);
  assert.match(r1.stdout, /bad\.ts:1: literal 3 \(const PEER_RETRY_QUICK = 3;\)/);
  const r2 = spawnSync(process.execPath, [script, good], { encoding: "utf8" });
  assert.equal(r2.status, 0, r2.stdout + r2.stderr);
  assert.equal(r2.stdout, "");
});
