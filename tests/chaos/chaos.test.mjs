// The short chaos scenario (scripts/chaos.mjs --short, ~30 s of faults): runtime restarts,
// node crashes, 30% gossip loss, partitions and clock skew while writers write at random
// replicas; then heal and demand convergence, equal replicas and 0 acknowledged writes
// lost. It runs in a child process so that its Miniflare runtimes are its own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";

const root = new URL("../../", import.meta.url).pathname;
const TIMEOUT_MS = 360_000;

function run(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["scripts/chaos.mjs", ...args], {
      cwd: root,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => {
      child.kill("SIGTERM");
      reject(new Error(`chaos did not finish in ${TIMEOUT_MS / 1000} s\n${out}`));
    }, TIMEOUT_MS);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

test("chaos --short: 0 acknowledged writes lost, every replica equal after healing", { timeout: TIMEOUT_MS + 10_000 }, async (t) => {
  const { code, out, err } = await run(["--short"]);
  const line = out.split("\n").find((l) => l.startsWith("CHAOS_REPORT "));
  const summary = out.slice(out.indexOf("ringkv chaos report")).split("\nCHAOS_REPORT")[0];
  for (const l of summary.trim().split("\n")) t.diagnostic(l);
  if (code !== 0 && line === undefined) {
    assert.fail(`chaos failed to run (exit ${code}):\n${out.slice(-4000)}\n${err.slice(-4000)}`);
  }
  const report = JSON.parse(line.slice("CHAOS_REPORT ".length));
  assert.deepEqual(report.violations, [], `violations (seed ${report.seed}):\n${report.violations.join("\n")}`);
  assert.ok(report.converged_after_heal_ms !== null, "converged after healing");
  assert.ok(report.writes.acked > 0, "some writes were acknowledged");
  assert.ok(report.faults.restarts >= 2 && report.faults.crashes >= 3, "the faults ran");
  assert.equal(code, 0);
});
