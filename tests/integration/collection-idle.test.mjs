// Undecidable tombstones: a replica that is down keeps its keys' tombstones from being
// collected, but they neither hold back a key behind them (more than one batch of 128 of
// them, then one every replica can agree on) nor keep the node busy: with nothing else
// happening its collection passes back off until it is all but quiet.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startCluster, kvPath, waitFor, sleep, dumpEntry } from "./helpers.mjs";

let c;
before(async () => {
  c = await startCluster({ vars: { TOMBSTONE_GRACE_SECONDS: "1", FAULTS: "1", CACHE_TTL_SECONDS: "0" } });
});
after(async () => {
  await c?.dispose();
});

const faults = (body) => c.req("/v1/admin/faults", { method: "POST", body: JSON.stringify(body) });
const replicasOf = async (key) => (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas;
const UNDECIDABLE = 140; // more than one collection batch (GC_KEYS_MAX, 128)

test("undecidable tombstones are rotated past and back off until the node is quiet", async () => {
  const a = "0";
  const down = "7";
  // Keys node a replicates with the down node (undecidable), and one without it.
  const stuck = [];
  let free;
  for (let i = 0; stuck.length < UNDECIDABLE || free === undefined; i++) {
    const key = `idle/${i}`;
    const reps = await replicasOf(key);
    if (!reps.includes(a)) continue;
    if (reps.includes(down)) {
      if (stuck.length < UNDECIDABLE) stuck.push(key);
    } else if (free === undefined && stuck.length === UNDECIDABLE) free = key;
  }
  assert.equal((await faults({ down: [Number(down)] })).status, 200);
  // Deletes at a, the undecidable ones first (collection reads tombstones in row order).
  for (const key of [...stuck, free]) assert.equal((await c.req(kvPath(key, `?node=${a}`), { method: "DELETE" })).status, 200);
  await waitFor(`${free} collected at ${a} behind ${UNDECIDABLE} undecidable tombstones`, async () => (await c.req(kvPath(free, `?siblings=1&node=${a}`))).status === 404, {
    timeoutMs: 60_000,
  });
  const kept = await c.req(kvPath(stuck[0], `?siblings=1&node=${a}`));
  if (kept.status !== 200) {
    const reps = await replicasOf(stuck[0]);
    const dumps = await Promise.all(reps.map((n) => dumpEntry((p) => c.req(p), n, stuck[0])));
    console.log(`${stuck[0]} (replicas ${reps}): ${kept.status} ${kept.text}; dumps ${JSON.stringify(dumps)}`);
  }
  assert.equal(kept.status, 200, "a tombstone the down replica never acknowledged is kept");
  assert.equal(kept.json.siblings[0].deleted, true);

  // From now on a's messages are held (and so counted): its collection queries come in
  // bursts (a pass, in batches), further and further apart.
  assert.equal((await faults({ down: [Number(down)], hold: [Number(a)] })).status, 200);
  const gcHeld = async () => (await faults({ down: [Number(down)], hold: [Number(a)] })).json.held[a]?.["/internal/gc"] ?? 0;
  const bursts = async (seconds) => {
    let last = await gcHeld();
    let n = 0;
    for (let s = 0; s < seconds; s++) {
      await sleep(1000);
      const now = await gcHeld();
      if (now > last) n++;
      last = now;
    }
    return { n, total: last };
  };
  const early = await bursts(30);
  const late = await bursts(30);
  // A pass every round (release 1) would make about 30 bursts a window; a doubling wait
  // between passes leaves at most a few.
  assert.ok(early.total > 0, "collection kept trying while the replica was down");
  assert.ok(late.n <= 4, `collection bursts in the last 30 s: ${late.n} (the 30 s before: ${early.n})`);
  assert.equal((await faults({})).status, 200);
  // Once the replica is back, the kept tombstones are collected.
  await waitFor("collected once the replica is back", async () => (await c.req(kvPath(stuck[0], `?siblings=1&node=${a}`))).status === 404, {
    timeoutMs: 120_000,
    everyMs: 1000,
  });
});
