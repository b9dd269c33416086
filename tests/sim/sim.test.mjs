// The deterministic cluster simulator (sim/): every seed in sim/seeds.txt must end with all
// oracles holding (convergence after the heal, byte-identical replicas, no lost write,
// monotonic clocks, consistent digests, contexts that only grow); the same seed must give
// the same output twice; and deliberately broken executors (the simulator's side of the
// node step: storage, the network) must be caught.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";

const root = new URL("../../", import.meta.url).pathname;
const sim = join(root, "build/sim");

before(() => {
  execFileSync("bash", [join(root, "sim/build.sh")], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
});

function run(args) {
  const r = spawnSync(sim, args, { cwd: root, encoding: "utf8", timeout: 60_000 });
  const line = r.stdout.trim().split("\n").pop() ?? "";
  let result = null;
  try {
    result = JSON.parse(line);
  } catch {
    // leave null: the assertion below reports stdout and stderr
  }
  return { status: r.status, result, stdout: r.stdout, stderr: r.stderr };
}

function seedLines() {
  return readFileSync(join(root, "sim/seeds.txt"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const known = l.match(/^known:(\S+)\s+(.*)$/);
      return known ? { known: known[1], args: known[2].split(/\s+/) } : { known: null, args: l.split(/\s+/) };
    });
}

for (const { known, args } of seedLines()) {
  const name = `sim ${args.join(" ")}`;
  const options = known ? { todo: `known core bug: ${known}` } : {};
  test(name, options, () => {
    const { status, result, stdout, stderr } = run(args);
    assert.ok(result, `no JSON result\nstdout: ${stdout}\nstderr: ${stderr}`);
    assert.equal(
      result.ok,
      true,
      `seed ${result.seed}: check ${result.failed_check} failed: ${result.failed_detail}\nrerun: build/sim ${args.join(" ")}`,
    );
    assert.equal(result.oracles, "ok");
    assert.equal(status, 0);
    assert.ok(result.acked_writes > 0, "the workload acknowledged no write");
    assert.ok(result.rounds_after_heal >= 1, "converged after the heal");
    if (args.includes("--hostile")) {
      // The forged messages reached the nodes, and some were refused whole (the rest were
      // refused entry by entry: hostile.c checks that none changed a digest).
      assert.ok(result.hostile_sent > 0 && result.hostile_refused > 0, `hostile peer: ${JSON.stringify(result)}`);
    }
  });
}

test("the same seed gives the same run, byte for byte", () => {
  const args = ["--seed", "99", "--nodes", "8", "--replicas", "3", "--keys", "50", "--writes", "300", "--loss", "0.2",
    "--dup", "0.05", "--latency", "2", "--partitions", "--restarts", "--skew"];
  const a = run(args);
  const b = run(args);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
  const c = run(args.map((x) => (x === "99" ? "100" : x)));
  assert.notEqual(a.stdout, c.stdout, "another seed gives another run");
});

test("the oracles catch an executor that skips the row writes of replies to `loaded`", () => {
  const { status, result } = run(["--seed", "1", "--loss", "0.3", "--rounds-max", "60", "--break", "skip-rows"]);
  assert.equal(status, 1);
  assert.equal(result.ok, false);
  assert.match(result.failed_check, /digests_consistent|converged|no_lost_write|replicas_identical/);
});

test("an executor that loses value rows is caught", () => {
  const { status, result } = run(["--seed", "1", "--loss", "0.1", "--break", "drop-value"]);
  assert.equal(status, 1);
  assert.equal(result.ok, false);
  // The core refuses the rows it loads without their values (core_error), or the oracles
  // find the value missing.
  assert.match(result.failed_check, /core_error|values_present|no_lost_write/);
});

test("an executor that confirms a resize's epochs before the data moved is caught", () => {
  // RingControl's gates wait for what the nodes report left to copy and drop; told nothing
  // is left, it ends the transition early: old-only replicas keep rows no ring gives them,
  // a write only they held is lost, or a node still copying on the final ring is refused
  // by its peer on the same ring (core_error: an honest peer on one ring never is).
  for (const [seed, nodes, to] of [["1", "7", "3"], ["4", "7", "3"], ["1", "4", "7"], ["2", "4", "7"]]) {
    const { status, result } = run(["--seed", seed, "--nodes", nodes, "--resize", to, "--replicas", "3", "--keys", "200",
      "--writes", "400", "--loss", "0.2", "--latency", "2", "--break", "confirm-early"]);
    assert.equal(status, 1, `seed ${seed}: ${JSON.stringify(result)}`);
    assert.equal(result.ok, false);
    assert.match(result.failed_check, /placement|no_lost_write|core_error/);
  }
});

test("a resize in the simulator runs RingControl's four epochs to the end", () => {
  const { status, result } = run(["--seed", "1", "--nodes", "4", "--resize", "7", "--replicas", "3", "--keys", "200",
    "--writes", "400", "--loss", "0.2", "--latency", "2", "--partitions", "--restarts"]);
  assert.equal(status, 0, JSON.stringify(result));
  assert.equal(result.ring_epoch, 5);   // joining, switching, leaving, done
  assert.ok(result.resize_rounds > 0, JSON.stringify(result));
});

test("a small sweep writes its results and the figures draw from them", () => {
  const dir = mkdtempSync(join(tmpdir(), "ringkv-sim-"));
  const out = join(dir, "results.json");
  const r = spawnSync(sim, ["--sweep", "--nodes-max", "16", "--sweep-seeds", "1", "--out", out], { cwd: root, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const results = JSON.parse(readFileSync(out, "utf8"));
  assert.equal(results.sweep.rows.length, 4);
  for (const row of results.sweep.rows) assert.ok(row.ok && row.rounds_to_converge >= 1);
  execFileSync("node", [join(root, "sim/plots.mjs"), out, dir]);
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith(".svg")).sort(), ["sim-bytes.svg", "sim-keys.svg", "sim-rounds.svg", "sim-traffic.svg"]);
});
