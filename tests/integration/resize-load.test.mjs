// Resizing under load, in workerd over HTTP (SPEC: Resizing, the guarantees): a cluster
// grows 4 -> 7 and shrinks 7 -> 3 while writes, context writes, deletes and reads hit it
// (some routed by the Worker, some pinned with `?node=` to a replica of the placement of
// the moment). In each phase of each resize a new replica and an old-only one are crashed
// (their Durable Objects restart from storage) with the load paused around the crash (in
// every phase seen: a phase can pass between two looks at /v1/cluster).
// Afterwards: no client request got a 5xx; every key's winner at every replica of the
// final ring is its highest acknowledged write (the lost-write rule), a key whose last
// write was a delete reads 404; `converged` is true with no further traffic; nodes 3..6
// hold no keys.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startCluster, waitFor, kvPath, compareVersion, rng, sleep } from "./helpers.mjs";

test("grow 4 -> 7 and shrink 7 -> 3 under writes, deletes and crashes: nothing acknowledged lost, nothing deleted back, no 5xx", { timeout: 600_000 }, async () => {
  const c = await startCluster({ vars: { CLUSTER_SIZE: "4", SHARDS: "256", FAULTS: "1", CACHE_TTL_SECONDS: "0" } });
  const keys = Array.from({ length: 80 }, (_, i) => `load/${i}`);
  const seeded = Array.from({ length: 400 }, (_, i) => `seed/${i}`);
  const acked = new Map([...keys, ...seeded].map((k) => [k, []]));
  const statuses = new Map();
  const fivexx = [];
  const random = rng(1337);
  let stop = false;
  let paused = null;      // a promise the workers wait on while crashes happen
  let inFlight = 0;
  // Every request is bounded in time: one that hangs is a failure, reported with the rest.
  const hung = [];
  const req = async (path, init = {}) => {
    try {
      return await c.req(path, { ...init, signal: AbortSignal.timeout(20_000) });
    } catch (err) {
      hung.push(`${init.method ?? "GET"} ${path}: ${err?.name ?? err}`);
      return { status: 0, text: String(err), headers: new Headers() };
    }
  };
  const count = (what, r) => {
    statuses.set(`${what} ${r.status}`, (statuses.get(`${what} ${r.status}`) ?? 0) + 1);
    if (r.status >= 500 || r.status === 0) fivexx.push(`${what}: ${r.status} ${r.text}`);
  };
  const replicasOf = async (k) => {
    const r = await req(`/v1/cluster/placement?key=${encodeURIComponent(k)}`);
    count("placement", r);
    return r.status === 200 ? r.json.replicas : [];
  };
  const one = async (w, i) => {
    const key = keys[random(keys.length)];
    const op = random(100);
    let query = "";
    if (op % 3 === 0) {
      const reps = await replicasOf(key);
      if (reps.length > 0) query = `?node=${reps[random(reps.length)]}`;
    }
    if (op < 45) {
      const r = await req(kvPath(key, query), { method: "PUT", body: `v${w}-${i}` });
      count("put", r);
      if (r.status === 200) acked.get(key).push({ hlc: r.json.hlc, node: r.json.node, deleted: false });
    } else if (op < 60) {
      const got = await req(kvPath(key));
      count("get", got);
      const ctx = got.headers.get("x-ring-context");
      const headers = ctx ? { "X-Ring-Context": ctx } : {};
      const r = await req(kvPath(key, query), { method: "PUT", body: `c${w}-${i}`, headers });
      count("context put", r);
      if (r.status === 200) acked.get(key).push({ hlc: r.json.hlc, node: r.json.node, deleted: false });
    } else if (op < 80) {
      const r = await req(kvPath(key, query), { method: "DELETE" });
      count("delete", r);
      if (r.status === 200) acked.get(key).push({ hlc: r.json.hlc, node: r.json.node, deleted: true });
    } else {
      count("get", await req(kvPath(key, query)));
    }
  };
  const workers = Array.from({ length: 4 }, async (_, w) => {
    for (let i = 0; !stop; i++) {
      while (paused) await paused;
      inFlight++;
      try {
        await one(w, i);
      } finally {
        inFlight--;
      }
    }
  });
  // Crashes a new replica and an old-only one once per phase, with the load paused.
  const crashed = [];
  const crashIn = async (phase, nodes) => {
    let resume;
    paused = new Promise((r) => (resume = r));
    try {
      await waitFor("requests in flight", async () => inFlight === 0, { everyMs: 20, timeoutMs: 30_000 });
      for (const node of nodes) {
        const r = await c.req(`/v1/admin/nodes/${node}/crash`, { method: "POST" });
        // The phase seen may have ended meanwhile, and a shrink's leaver left the ring.
        if (r.status === 400 && (await c.req("/v1/cluster")).json.transition === null) continue;
        assert.equal(r.status, 200, r.text);
        crashed.push(`${phase}:${node}`);
      }
    } finally {
      paused = null;
      resume();
    }
  };
  const resize = async (to, newNode, oldNode) => {
    const started = await c.req("/v1/admin/cluster", { method: "POST", body: JSON.stringify({ size: to }) });
    assert.equal(started.status, 202, started.text);
    const seen = new Set();
    return waitFor(`the resize to ${to} done under load`, async () => {
      const s = (await c.req("/v1/cluster")).json;
      const phase = s.transition?.phase;
      if (phase && !seen.has(phase)) {
        seen.add(phase);
        await crashIn(`${to}/${phase}`, [newNode, oldNode]);
      }
      return s.transition === null && s.size === to ? s : undefined;
    }, { timeoutMs: 240_000, everyMs: 30 });
  };
  // Keys in place before the load, so that the joining copies have rows to move.
  for (let i = 0; i < seeded.length; i += 8) {
    await Promise.all(seeded.slice(i, i + 8).map(async (k) => {
      const r = await c.req(kvPath(k), { method: "PUT", body: `seed-${k}` });
      assert.equal(r.status, 200, r.text);
      acked.get(k).push({ hlc: r.json.hlc, node: r.json.node, deleted: false });
    }));
  }
  try {
    await sleep(1000);
    const grown = await resize(7, 5, 1);
    assert.equal(grown.nodes.length, 7);
    await sleep(1000);
    const shrunk = await resize(3, 0, 5);
    assert.equal(shrunk.nodes.length, 3);
    await sleep(1000);
  } finally {
    stop = true;
    await Promise.all(workers);
  }
  try {
    console.log(`# statuses: ${JSON.stringify(Object.fromEntries(statuses))}; crashed: ${crashed.join(" ")}`);
    assert.deepEqual(hung, [], "no client request hangs");
    assert.deepEqual(fivexx, [], "no client request gets a 5xx during a resize");
    // Phases can pass between two looks (a resize of this size takes seconds): a crash in
    // at least one phase of each resize, in every phase seen.
    for (const to of [7, 3]) {
      const phases = new Set(crashed.filter((x) => x.startsWith(`${to}/`)).map((x) => x.split(":")[0]));
      assert.ok(phases.size >= 1, `crashes in the resize to ${to}: ${crashed}`);
    }
    const writes = [...acked.values()].reduce((n, w) => n + w.length, 0);
    assert.ok(writes >= 200, `enough acknowledged writes (${writes})`);
    try {
      await waitFor("convergence with no further traffic", async () => (await c.req("/v1/cluster")).json.converged, { timeoutMs: 120_000, everyMs: 500 });
    } catch (err) {
      console.log(`# not converged: ${(await c.req("/v1/cluster")).text}`);
      throw err;
    }
    let checked = 0, deletedChecked = 0;
    for (const [key, ws] of acked) {
      if (ws.length === 0) continue;
      const best = ws.reduce((a, b) => (compareVersion(a, b) >= 0 ? a : b));
      const reps = (await c.req(`/v1/cluster/placement?key=${encodeURIComponent(key)}`)).json.replicas;
      for (const node of reps) {
        assert.ok(Number(node) < 3);
        const s = await c.req(kvPath(key, `?siblings=1&node=${node}`));
        assert.equal(s.status, 200, `${key} at ${node}: ${s.text}`);
        const winner = s.json.siblings.reduce((a, b) => (compareVersion(a, b) >= 0 ? a : b));
        assert.equal(`${winner.hlc}/${winner.node}`, `${best.hlc}/${best.node}`, `${key} at ${node}`);
        assert.equal(winner.deleted, best.deleted, `${key} at ${node}`);
        checked++;
      }
      if (best.deleted) {
        assert.equal((await c.req(kvPath(key))).status, 404, `${key} was deleted last`);
        deletedChecked++;
      }
    }
    assert.ok(checked >= 1200, `checked ${checked}`);
    assert.ok(deletedChecked > 0, "some key was deleted last");
    for (const node of [3, 4, 5, 6]) {
      const listed = await c.req(`/v1/admin/nodes/${node}/keys`);
      assert.deepEqual(listed.json, { node, keys: [], cursor: null }, `node ${node} holds no keys`);
    }
  } finally {
    await c.dispose();
  }
});
