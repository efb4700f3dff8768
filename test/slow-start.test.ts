// End-to-end: slow start. A backend that joins (through the API) or comes back up gets a
// tenth of its share at first and all of it after `slow_start`, growing in between
// (pool/slow-start.ts: linearly, in nine steps). Backends there at start-up do not ramp;
// ip_hash does not ramp at all (a client's backend must not depend on the time).
//
// Shares are measured over consecutive windows of traffic and compared with what the
// ramp gives for the same moments. Tolerance: in every window the observed fraction is
// within TOLERANCE (absolute) of the expected mean fraction over the window's requests.
import assert from "node:assert/strict";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import { cleanup, startBalancer, startNamedBackend, startServer, waitFor, type BalancerProcess, type TestServer } from "./harness.ts";

afterEach(cleanup);

const SLOW_START_MS = 3000;
/** Observed fraction vs expected, per window: 6 percentage points either way. */
const TOLERANCE = 0.06;
const WINDOW_MS = 500;

/** The ramp (pool/slow-start.ts): tenths of its weight a backend gets `t` ms after it joined. */
function share(t: number): number {
  if (t >= SLOW_START_MS) return 10;
  return 1 + Math.floor((9 * Math.max(0, t)) / SLOW_START_MS);
}

/** One request: the name of the backend that answered. */
function ask(port: number, localAddress?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", ...(localAddress ? { localAddress } : {}) });
    let got = "";
    socket.on("data", (d: Buffer) => (got += d.toString()));
    socket.on("close", () => resolve(got.trim()));
    socket.on("error", reject);
    socket.setTimeout(5000, () => socket.destroy(new Error("client timeout")));
  });
}

interface Sample {
  /** Milliseconds since the ramp began (performance.now() clock). */
  t: number;
  backend: string;
}

/**
 * Requests from `parallel` loops until `untilMs` after `t0`; each sample is stamped with
 * the time its connection was opened.
 */
async function traffic(port: number, t0: number, untilMs: number, parallel = 4): Promise<Sample[]> {
  const samples: Sample[] = [];
  const loop = async () => {
    while (performance.now() - t0 < untilMs) {
      const t = performance.now() - t0;
      samples.push({ t, backend: await ask(port) });
    }
  };
  await Promise.all(Array.from({ length: parallel }, loop));
  return samples.sort((a, b) => a.t - b.t);
}

interface Window {
  from: number;
  n: number;
  observed: number;
  expected: number;
}

/**
 * `backend`'s fraction per window of WINDOW_MS, next to the mean of `expected(t)` over
 * the same requests.
 */
function windows(samples: Sample[], backend: string, expected: (t: number) => number, untilMs: number): Window[] {
  const out: Window[] = [];
  for (let from = 0; from + WINDOW_MS <= untilMs; from += WINDOW_MS) {
    const inside = samples.filter((s) => s.t >= from && s.t < from + WINDOW_MS);
    const hits = inside.filter((s) => s.backend === backend).length;
    const mean = inside.reduce((sum, s) => sum + expected(s.t), 0) / inside.length;
    out.push({ from, n: inside.length, observed: hits / inside.length, expected: mean });
  }
  return out;
}

function assertFollows(ws: Window[], what: string): void {
  const table = ws.map((w) => `${w.from}ms n=${w.n} observed=${w.observed.toFixed(3)} expected=${w.expected.toFixed(3)}`).join("\n");
  for (const w of ws) {
    assert.ok(w.n >= 20, `${what}: too few requests in the window at ${w.from} ms to measure\n${table}`);
    assert.ok(Math.abs(w.observed - w.expected) <= TOLERANCE, `${what}: window at ${w.from} ms off the ramp by more than ${TOLERANCE}\n${table}`);
  }
}

interface BackendJson {
  address: string;
  status: string;
  slow_start_share: number;
}

async function list(lb: BalancerProcess): Promise<BackendJson[]> {
  return (await (await fetch(`${lb.api}/backends`)).json()) as BackendJson[];
}

async function shareOf(lb: BalancerProcess, server: TestServer): Promise<number | undefined> {
  return (await list(lb)).find((b) => b.address === server.address)?.slow_start_share;
}

/** POSTs a backend; returns the moment the pool took it (the middle of the call). */
async function add(lb: BalancerProcess, body: Record<string, unknown>): Promise<number> {
  const sent = performance.now();
  const res = await fetch(`${lb.api}/backends`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const answered = performance.now();
  assert.equal(res.status, 201, await res.text());
  return (sent + answered) / 2;
}

const staticBackends = (servers: TestServer[], weights: number[] = []) => ({
  type: "static",
  backends: servers.map((s, i) => ({ address: s.address, weight: weights[i] ?? 1 })),
});

describe("slow start", () => {
  it("at start-up nothing ramps; ready after drain does", async () => {
    const servers = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer({ slow_start: "3s", health_check: { interval: "1h" }, discovery: staticBackends(servers) });
    assert.deepEqual((await list(lb)).map((b) => b.slow_start_share), [1, 1, 1]);
    const counts = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const name = await ask(lb.port);
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(counts), { a: 10, b: 10, c: 10 }, "round robin, exact, from the first connection");
    // Back to ready after a drain counts as coming back: that ramps.
    const put = (state: string) =>
      fetch(`${lb.api}/backends/${encodeURIComponent(servers[2]!.address)}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ state }) });
    await put("drain");
    assert.equal(((await (await put("ready")).json()) as BackendJson).slow_start_share, 0.1);
  });

  it("round_robin: a backend added through the API gets a tenth at first, its full share after slow_start", async () => {
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer({ slow_start: "3s", health_check: { interval: "1h" }, discovery: staticBackends([a!, b!]) });
    const t0 = await add(lb, { address: c!.address });
    assert.ok((await shareOf(lb, c!))! <= 0.2, "the API shows the ramp's first steps");
    const samples = await traffic(lb.port, t0, SLOW_START_MS + 1000);
    // Weights 1, 1 and 1 × share/10: the new backend's fraction is s / (20 + s).
    assertFollows(windows(samples, "c", (t) => share(t) / (20 + share(t)), SLOW_START_MS + 1000), "round_robin");
    assert.equal(await shareOf(lb, c!), 1, "full share once the ramp is over");
    // And round robin again, exact: one in three.
    const after = await Promise.all(Array.from({ length: 30 }, (_, i) => i).map(() => ask(lb.port)));
    assert.equal(after.filter((n) => n === "c").length, 10);
  });

  it("weighted: the new backend's share of its weight ramps; the others keep their ratio", async () => {
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer({ algorithm: "weighted", slow_start: "3s", health_check: { interval: "1h" }, discovery: staticBackends([a!, b!], [3, 1]) });
    const t0 = await add(lb, { address: c!.address, weight: 2 });
    const until = SLOW_START_MS + 1000;
    const samples = await traffic(lb.port, t0, until);
    // Weights 3, 1 and 2 × share/10: the new backend's fraction is 2s / (40 + 2s).
    assertFollows(windows(samples, "c", (t) => (2 * share(t)) / (40 + 2 * share(t)), until), "weighted, the new backend");
    // a has three times b's weight throughout: three quarters of what does not go to c.
    const others = samples.filter((s) => s.backend !== "c");
    assertFollows(windows(others, "a", () => 0.75, until), "weighted, a against b");
  });

  it("least_connections: the new backend holds its ramped share of the connections open at once", async () => {
    // least_connections sends each connection to the fewest open per unit of weight, so
    // the ramp (weight × share) shows in how many connections a backend holds at once:
    // a batch of held connections splits 10 : 10 : s over a, b and the new c. (Short
    // connections one at a time leave every count at 0, and idle backends take turns.)
    const names = ["a", "b", "c"] as const;
    const [a, b, c] = await Promise.all(names.map((n) => startServer((socket) => {
      socket.write(n);
      socket.on("end", () => socket.end()); // the client leaving closes it here too
    })));
    const lb = await startBalancer({ algorithm: "least_connections", slow_start: "3s", health_check: { interval: "1h" }, discovery: staticBackends([a!, b!]) });
    const t0 = await add(lb, { address: c!.address });
    const N = 40;
    const batch = async (): Promise<{ from: number; to: number; onC: number }> => {
      const from = performance.now() - t0;
      const held: net.Socket[] = [];
      let onC = 0;
      for (let i = 0; i < N; i++) {
        // Each is answered, so counted on its backend, before the next one is picked.
        const socket = net.connect({ port: lb.port, host: "127.0.0.1" });
        held.push(socket);
        const name = await new Promise<string>((resolve, reject) => {
          socket.once("data", (d: Buffer) => resolve(d.toString()));
          socket.once("error", reject);
        });
        if (name === "c") onC++;
      }
      const to = performance.now() - t0;
      for (const socket of held) socket.destroy();
      await waitFor(async () => (await list(lb)).every((x) => (x as BackendJson & { active_connections: number }).active_connections === 0), 3000, "the batch closed");
      return { from, to, onC };
    };
    const expected = (t: number) => share(t) / (20 + share(t));
    const seen: string[] = [];
    for (const at of [100, 1500, 2600, SLOW_START_MS + 300]) {
      await new Promise((r) => setTimeout(r, Math.max(0, at - (performance.now() - t0))));
      const { from, to, onC } = await batch();
      const observed = onC / N;
      // The split follows the weights at the end of the batch; a step may fall inside it.
      const low = Math.min(expected(from), expected(to)) - TOLERANCE;
      const high = Math.max(expected(from), expected(to)) + TOLERANCE;
      seen.push(`${Math.round(from)}-${Math.round(to)}ms: c ${onC}/${N}, expected ${(N * expected(from)).toFixed(1)}-${(N * expected(to)).toFixed(1)}`);
      assert.ok(observed >= low && observed <= high, seen.join("\n"));
    }
  });

  it("a backend that comes back up after being down ramps again (workers: 2, each thread ramps it)", async () => {
    const servers = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    let c = servers[2]!;
    const lb = await startBalancer({
      workers: 2,
      slow_start: "3s",
      health_check: { interval: "100ms", timeout: "500ms", rise: 1, fall: 1 },
      discovery: staticBackends(servers),
    });
    await c.close();
    await waitFor(async () => (await list(lb))[2]!.status === "down", 3000, "c down");
    c = await startNamedBackend("c", c.port);
    // The ramp starts when the check finds it up: seen here within one poll.
    const t0 = await waitFor(async () => (await list(lb))[2]!.status === "up" && performance.now(), 3000, "c up again");
    const shares = [await shareOf(lb, c)];
    const until = SLOW_START_MS + 1000;
    const samples = await traffic(lb.port, t0, until);
    shares.push(await shareOf(lb, c));
    assert.ok(shares[0]! <= 0.2 && shares[1] === 1, `the API's share: ${shares.join(" then ")}`);
    assertFollows(windows(samples, "c", (t) => share(t) / (20 + share(t)), until), "returning backend");
  });

  it("ip_hash does not ramp: a client's backend does not depend on the time", async () => {
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer({ algorithm: "ip_hash", slow_start: "3s", health_check: { interval: "1h" }, discovery: staticBackends([a!, b!]) });
    // 60 clients, told apart by their source address (all of 127.0.0.0/8 is loopback).
    const clients = Array.from({ length: 60 }, (_, i) => `127.0.0.${i + 2}`);
    const map = async () => {
      const out: string[] = [];
      for (const address of clients) out.push(await ask(lb.port, address));
      return out;
    };
    const t0 = await add(lb, { address: c!.address });
    const early = await map();
    const earlyMs = performance.now() - t0;
    assert.ok(earlyMs < SLOW_START_MS / 3, `mapped during the ramp's first third (${Math.round(earlyMs)} ms)`);
    // A third of the clients would be about 20; a tenth of that would be 2.
    const onC = early.filter((n) => n === "c").length;
    assert.ok(onC >= 10, `the new backend takes its full share of clients at once: ${onC} of 60`);
    await waitFor(async () => (await shareOf(lb, c!)) === 1, SLOW_START_MS + 1000, "the ramp over");
    assert.deepEqual(await map(), early, "every client on the same backend as during the ramp");
  });
});
