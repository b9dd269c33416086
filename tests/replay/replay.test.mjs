// Record and replay: a real workerd cluster runs with faults (loss, a partition healed, a
// crashed node, tombstone collection) while every node records each core call and what it
// performed (RECORD_CALLS). The native core then replays each node's calls and must give
// the same replies byte for byte (sim/replay/replay.c), and each step's performed actions
// must be exactly its reply's: the key rows written, the sends made, the alarm armed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startCluster, kvPath, waitFor, root, sleep } from "../integration/helpers.mjs";
import { decode } from "../../worker/pb.ts";

const STEP = 17;
const INIT = 1;
const N = 6;
let c;
const replayer = join(root, "build/sim-replay");

before(async () => {
  const core = readdirSync(join(root, "wasm/src"))
    .filter((f) => f.endsWith(".c") && f !== "wasm_exports.c")
    .map((f) => join(root, "wasm/src", f));
  execFileSync("clang", ["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g", "-fsanitize=address,undefined",
    "-Iwasm/include", "-Iwasm/src", ...core, "sim/replay/replay.c", "-o", replayer], { cwd: root, stdio: "inherit" });
  c = await startCluster({
    vars: { FAULTS: "1", RECORD_CALLS: "1", CACHE_TTL_SECONDS: "0", CLUSTER_SIZE: String(N), TOMBSTONE_GRACE_SECONDS: "1" },
  });
});
after(async () => {
  await c?.dispose();
});

const faults = (body) => c.req("/v1/admin/faults", { method: "POST", body: JSON.stringify(body) });

async function calls(node) {
  const out = [];
  for (let after = 0; ; ) {
    const r = await c.req(`/v1/admin/nodes/${node}/calls?after=${after}`);
    assert.equal(r.status, 200, r.text);
    out.push(...r.json.calls);
    if (!r.json.more) return out;
    after = r.json.calls.at(-1)[0];
  }
}

const bytes = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));

test("the native core replays every node's recorded calls byte for byte, and each step's actions were performed exactly", { timeout: 240_000 }, async () => {
  const keys = Array.from({ length: 30 }, (_, i) => `replay/${i}`);
  for (const [i, k] of keys.entries()) assert.equal((await c.req(kvPath(k), { method: "PUT", body: `a${i}` })).status, 200);
  assert.equal((await faults({ drop: 0.3, partitions: [[0, 1, 2], [3, 4, 5]] })).status, 200);
  for (const [i, k] of keys.entries()) {
    const r = await c.req(kvPath(k), { method: i % 3 === 0 ? "DELETE" : "PUT", body: i % 3 === 0 ? undefined : `b${i}` });
    assert.equal(r.status, 200, r.text);
    if (i === 10) assert.equal((await c.req(`/v1/admin/nodes/2/crash`, { method: "POST" })).status, 200);
  }
  await sleep(1500);
  assert.equal((await faults({})).status, 200);
  await waitFor("converged", async () => (await c.req("/v1/cluster")).json.converged === true, { timeoutMs: 90_000 });
  // Tombstones pass their 1 s grace and are collected at every replica.
  await waitFor("tombstones collected", async () => {
    for (const k of keys.filter((_, i) => i % 3 === 0)) {
      if ((await c.req(kvPath(k, "?siblings=1"))).status !== 404) return false;
    }
    return true;
  }, { timeoutMs: 90_000 });

  const dir = mkdtempSync(join(tmpdir(), "ringkv-replay-"));
  const seen = { alarm: 0, lost: 0, answered: 0, message: 0, write: 0, loaded: 0, inits: 0, collected: 0, sends: 0 };
  for (let node = 0; node < N; node++) {
    const log = await calls(node);
    const lines = [];
    for (let i = 0; i < log.length; i++) {
      const [, op, code, req, rep] = log[i];
      if (op === 0) continue;
      lines.push(`${op} ${code} ${req || "-"} ${rep || "-"}`);
      if (op === INIT) seen.inits++;
      if (op !== STEP) continue;
      const request = decode("StepRequest", bytes(req));
      if (request.alarm) seen.alarm++;
      if (request.answer) request.answer.answered ? seen.answered++ : seen.lost++;
      if (request.message) seen.message++;
      if (request.write) seen.write++;
      if (request.loaded) seen.loaded++;
      if (code !== 0) continue;
      // The performed record that follows this step: exactly its actions.
      const reply = decode("StepReply", bytes(rep));
      const next = log[i + 1];
      assert.ok(next && next[1] === 0, `node ${node}: step ${log[i][0]} has no performed record after it`);
      const performed = JSON.parse(Buffer.from(bytes(next[3])).toString("utf8"));
      assert.equal(performed.rows, reply.rows.length, `node ${node}: rows written`);
      const wanted = reply.sends.flatMap((s) => s.to.map((t) => [t.peer, s.kind, s.message.length])).map(String).sort();
      assert.deepEqual(performed.sends.map(String).sort(), wanted, `node ${node}: sends`);
      assert.equal(BigInt(performed.alarmMs), reply.alarmMs, `node ${node}: alarm armed`);
      seen.sends += wanted.length;
      // A collected row becomes a marker: metadata with no sibling.
      seen.collected += reply.rows.filter((r) => r.applied && r.applied.meta.length > 0 && (r.applied.info?.siblings ?? 0) === 0).length;
    }
    const file = join(dir, `node-${node}.calls`);
    writeFileSync(file, lines.join("\n") + "\n");
    const r = spawnSync(replayer, [file], { encoding: "utf8" });
    console.log(`node ${node}: ${r.stdout.trim()}`);
    assert.equal(r.status, 0, `node ${node}: ${r.stdout}${r.stderr}`);
  }
  console.log(`recorded: ${JSON.stringify(seen)}`);
  // The run exercised what it claims to: rounds, lost and answered sends, peer messages,
  // client writes, loads, a rebuilt core (the crash) and collection.
  for (const [what, n] of Object.entries(seen)) assert.ok(n > 0, `no ${what} in the recording`);
  assert.ok(seen.inits > N, "the crashed node's core was rebuilt");
});
