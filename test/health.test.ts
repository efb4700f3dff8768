// End-to-end: health checking in the real gobalancer process, against real backends on
// 127.0.0.1 that die, hang, answer wrongly and come back.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { afterEach, describe, it } from "node:test";
import { cleanup, connect, refusedPort, request, roundTrip, startBalancer, startServer, waitFor, type BalancerProcess, type LogLine } from "./harness.ts";

// ---- backends that are real processes, so they can be killed and started again --------

// Writes its name to every client and closes, like the harness's named backend. It reads
// what the client sends, so closing never resets a connection with unread bytes.
const NAMED_BACKEND = `
const net = require("node:net");
const [name, port] = process.argv.slice(1);
const server = net.createServer((s) => { s.on("error", () => {}); s.resume(); s.end(name + "\\n"); });
server.listen(Number(port), "127.0.0.1", () => console.log(server.address().port));
`;

interface ProcessBackend {
  readonly port: number;
  readonly address: string;
  kill(): Promise<void>;
}

const processes = new Set<ChildProcess>();
afterEach(async () => {
  for (const p of processes) p.kill("SIGKILL");
  processes.clear();
  await cleanup();
});

async function startProcessBackend(name: string, port = 0): Promise<ProcessBackend> {
  const proc = spawn(process.execPath, ["-e", NAMED_BACKEND, name, String(port)], { stdio: ["ignore", "pipe", "inherit"] });
  processes.add(proc);
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const bound = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
    proc.once("exit", (code) => reject(new Error(`backend ${name} exited with ${code}`)));
  });
  return {
    port: bound,
    address: `127.0.0.1:${bound}`,
    kill: async () => {
      proc.kill("SIGKILL");
      await exited;
      processes.delete(proc);
    },
  };
}

/**
 * A backend answering health checks with `status(path)` and any other client with its name.
 * Counts the health checks it has seen.
 */
async function startHttpBackend(name: string, status: (path: string) => number) {
  let checks = 0;
  const server = await startServer((socket) => {
    socket.once("data", (chunk: Buffer) => {
      const m = /^GET (\S+) HTTP\/1\.1\r\n/.exec(chunk.toString("latin1"));
      if (!m) return void socket.end(`${name}\n`);
      checks++;
      socket.end(`HTTP/1.1 ${status(m[1]!)} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    });
  });
  return Object.assign(server, { checks: () => checks });
}

// ---- load and log helpers ---------------------------------------------------------------

interface Outcome {
  readonly startedAt: number;
  readonly reply?: string;
  readonly failure?: string;
}

/** `concurrency` clients, each making requests back to back until stopped (bounded). */
function startLoad(port: number, concurrency: number) {
  const outcomes: Outcome[] = [];
  let stopped = false;
  const deadline = Date.now() + 20_000;
  const loop = async () => {
    for (let i = 0; i < 3000 && !stopped && Date.now() < deadline; i++) {
      const startedAt = performance.now();
      try {
        const reply = (await request(port, "hi")).trim();
        outcomes.push(reply === "" ? { startedAt, failure: "closed without a reply" } : { startedAt, reply });
      } catch (err) {
        outcomes.push({ startedAt, failure: (err as NodeJS.ErrnoException).code ?? String(err) });
      }
    }
  };
  const loops = Array.from({ length: concurrency }, loop);
  return {
    outcomes,
    replies: () => outcomes.flatMap((o) => (o.reply === undefined ? [] : [o.reply])),
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

const changes = (lb: BalancerProcess, backend: string): LogLine[] =>
  lb.logs.filter((l) => l.msg === "backend state changed" && l.backend === backend);

const stateChange = (lb: BalancerProcess, backend: string, to: "up" | "down", timeoutMs = 5000) =>
  lb.waitForLog((l) => l.msg === "backend state changed" && l.backend === backend && l.to === to, timeoutMs, `${backend} ${to}`);

const staticBackends = (...addresses: string[]) => ({
  discovery: { type: "static", backends: addresses.map((address) => ({ address })) },
});

// ---- tests ------------------------------------------------------------------------------

describe("health checking", () => {
  it("a backend killed under load leaves rotation unnoticed, and returns after rise checks when restarted", async () => {
    const a = await startProcessBackend("a");
    const b = await startProcessBackend("b");
    const lb = await startBalancer({
      retries: 2,
      health_check: { type: "tcp", interval: "200ms", timeout: "200ms", rise: 2, fall: 3 },
      ...staticBackends(a.address, b.address),
    });
    const load = startLoad(lb.port, 4);
    await waitFor(() => load.replies().includes("a") && load.outcomes.length >= 40, 5000, "load on both backends");
    await a.kill();
    const killedAt = performance.now();
    const down = await stateChange(lb, a.address, "down");
    assert.match(String(down.reason), /connect refused/);
    const afterDown = load.outcomes.length;
    await waitFor(() => load.outcomes.length >= afterDown + 100, 5000, "more load");
    await load.stop();
    // Connections that a was serving when it died break with it: no balancer can save
    // bytes already sent to a dead process. Every connection opened after that succeeds.
    const later = load.outcomes.filter((o) => o.startedAt > killedAt);
    assert.deepEqual(later.filter((o) => o.failure), [], "clients saw no failed connection");
    const broken = load.outcomes.filter((o) => o.failure);
    assert.ok(broken.length <= 4 && broken.every((o) => o.failure === "ECONNRESET"), `in flight at the kill: ${JSON.stringify(broken)}`);
    // The rotation is b only once a is down (a reply or two may have been in flight).
    assert.ok(load.outcomes.slice(afterDown + 8).every((o) => o.reply === "b"), "a out of rotation");

    const restarted = await startProcessBackend("a", a.port);
    const restartedAt = Date.now();
    const up = await stateChange(lb, a.address, "up");
    assert.equal(up.reason, "2 consecutive checks passed");
    assert.ok(Date.now() - restartedAt >= 150, "back only after rise probes, not at once");
    const replies = [];
    for (let i = 0; i < 10; i++) replies.push((await request(lb.port, "hi")).trim());
    assert.equal(replies.filter((r) => r === "a").length, 5, `a takes its share again: ${replies.join("")}`);
    await restarted.kill();
  });

  for (const workers of [1, 2]) {
    it(`a backend refusing every dial is out after at most fall client attempts (workers: ${workers})`, async () => {
      const good = await startProcessBackend("good");
      const dead = `127.0.0.1:${await refusedPort()}`;
      const lb = await startBalancer({
        workers,
        retries: 2,
        // Probes are an hour apart: only client traffic can take it out.
        health_check: { type: "tcp", interval: "1h", timeout: "1s", fall: 3 },
        ...staticBackends(dead, good.address),
      });
      let requests = 0;
      while (changes(lb, dead).length === 0) {
        assert.equal((await request(lb.port, "hi")).trim(), "good");
        assert.ok(++requests <= 6, "still in rotation after 6 client connections (3 picks of it)");
        // From threads the failure arrives by message: give it a moment before the next.
        if (workers > 1) await new Promise((r) => setTimeout(r, 20));
      }
      const [change] = changes(lb, dead);
      assert.equal(change!.to, "down");
      for (let i = 0; i < 10; i++) assert.equal((await request(lb.port, "hi")).trim(), "good");
    });
  }

  it("a black hole (accepts, never answers) is down at the timeout with http checks", async () => {
    const hole = await startServer(() => {});
    const lb = await startBalancer({
      health_check: { type: "http", interval: "100ms", timeout: "300ms", fall: 1 },
      ...staticBackends(hole.address),
    });
    const started = Date.now();
    const down = await stateChange(lb, hole.address, "down");
    assert.equal(down.reason, "timeout after 300ms");
    assert.ok(Date.now() - started >= 250, `down after ${Date.now() - started}ms`);
    // Closed at once: nothing healthy is left.
    const t = Date.now();
    assert.equal(await request(lb.port), "");
    assert.ok(Date.now() - t < 1000, `closed after ${Date.now() - t}ms`);
  });

  it("a black hole stays up with tcp checks (the connection succeeds)", async () => {
    const hole = await startServer(() => {});
    const lb = await startBalancer({
      health_check: { type: "tcp", interval: "50ms", timeout: "300ms", fall: 1 },
      ...staticBackends(hole.address),
    });
    await waitFor(() => hole.accepted() >= 6, 5000, "six probes");
    assert.deepEqual(changes(lb, hole.address), []);
  });

  it("http checks: 200 up, 503 down, wrong path (404) down", async () => {
    const ok = await startHttpBackend("ok", (path) => (path === "/ready" ? 200 : 404));
    const unavailable = await startHttpBackend("unavailable", () => 503);
    const wrongPath = await startHttpBackend("wrong", (path) => (path === "/health" ? 200 : 404));
    const lb = await startBalancer({
      health_check: { type: "http", interval: "100ms", timeout: "500ms", fall: 2, http: { path: "/ready" } },
      ...staticBackends(ok.address, unavailable.address, wrongPath.address),
    });
    assert.equal((await stateChange(lb, unavailable.address, "down")).reason, "HTTP 503");
    assert.equal((await stateChange(lb, wrongPath.address, "down")).reason, "HTTP 404");
    await waitFor(() => ok.checks() >= 4, 5000, "checks of the healthy backend");
    assert.deepEqual(changes(lb, ok.address), []);
    for (let i = 0; i < 6; i++) assert.equal((await request(lb.port, "hi")).trim(), "ok");
  });

  it("http checks honour a custom expect_status and Host header", async () => {
    const teapot = await startHttpBackend("teapot", () => 418);
    const plain = await startHttpBackend("plain", () => 200);
    let host = "";
    const hostCheck = await startServer((socket) =>
      socket.once("data", (c: Buffer) => {
        host = /\r\nHost: ([^\r]*)\r\n/.exec(c.toString("latin1"))?.[1] ?? "";
        socket.end("HTTP/1.1 418 I'm a teapot\r\n\r\n");
      }),
    );
    const lb = await startBalancer({
      health_check: { type: "http", interval: "100ms", timeout: "500ms", fall: 1, http: { expect_status: "204,418", host: "app.internal" } },
      ...staticBackends(teapot.address, plain.address, hostCheck.address),
    });
    assert.equal((await stateChange(lb, plain.address, "down")).reason, "HTTP 200");
    await waitFor(() => teapot.checks() >= 3, 5000, "checks of the 418 backend");
    assert.deepEqual(changes(lb, teapot.address), []);
    assert.equal(host, "app.internal");
  });

  it("with every backend down clients are closed at once; the first one back takes traffic", async () => {
    const a = await startProcessBackend("a");
    const b = await startProcessBackend("b");
    const lb = await startBalancer({
      health_check: { type: "tcp", interval: "100ms", timeout: "300ms", rise: 2, fall: 1 },
      ...staticBackends(a.address, b.address),
    });
    await a.kill();
    await b.kill();
    await stateChange(lb, a.address, "down");
    await stateChange(lb, b.address, "down");
    for (let i = 0; i < 3; i++) {
      const t = Date.now();
      assert.equal(await request(lb.port), "");
      assert.ok(Date.now() - t < 1000, `closed after ${Date.now() - t}ms`);
    }
    await lb.waitForLog((l) => l.msg === "connection closed: no healthy backend");
    await startProcessBackend("b", b.port);
    await stateChange(lb, b.address, "up");
    for (let i = 0; i < 4; i++) assert.equal((await request(lb.port, "hi")).trim(), "b");
  });

  it("a backend flapping faster than rise/fall does not flap the pool state", async () => {
    let n = 0;
    const flapping = await startHttpBackend("flapping", () => (n++ % 2 === 0 ? 503 : 200));
    const lb = await startBalancer({
      health_check: { type: "http", interval: "50ms", timeout: "500ms", rise: 2, fall: 2 },
      ...staticBackends(flapping.address),
    });
    await waitFor(() => flapping.checks() >= 12, 5000, "twelve checks");
    assert.deepEqual(changes(lb, flapping.address), []);
    assert.equal((await request(lb.port, "hi")).trim(), "flapping");
  });

  it("the API shows each backend's health, and probes stop at once for a removed backend", async () => {
    const good = await startHttpBackend("good", () => 200);
    const failing = await startHttpBackend("failing", () => 503);
    const lb = await startBalancer({
      health_check: { type: "http", interval: "50ms", timeout: "500ms", fall: 2 },
      discovery: { type: "static", backends: [] },
    });
    const api = (method: string, address?: string, body?: object) =>
      fetch(`${lb.api}/backends${address ? `/${encodeURIComponent(address)}` : ""}`, {
        method,
        headers: body ? { "content-type": "application/json" } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
    assert.equal((await api("POST", undefined, { address: good.address })).status, 201);
    assert.equal((await api("POST", undefined, { address: failing.address })).status, 201);
    await stateChange(lb, failing.address, "down");
    await waitFor(() => good.checks() >= 2, 5000, "checks of the good backend");
    const down = (await (await api("GET", failing.address)).json()) as Record<string, unknown>;
    assert.equal(down.healthy, false);
    assert.equal(down.status, "down");
    assert.equal(down.last_error, "HTTP 503");
    assert.ok(Date.now() - Date.parse(String(down.last_checked_at)) < 5000, `last_checked_at ${down.last_checked_at}`);
    const up = (await (await api("GET", good.address)).json()) as Record<string, unknown>;
    assert.deepEqual([up.healthy, up.status, up.last_error], [true, "up", null]);
    assert.equal(typeof up.last_checked_at, "string");

    assert.equal((await api("DELETE", failing.address)).status, 204);
    await new Promise((r) => setTimeout(r, 50)); // a probe already connecting may still land
    const checks = failing.checks();
    const goodChecks = good.checks();
    await new Promise((r) => setTimeout(r, 300)); // six intervals
    assert.equal(failing.checks(), checks, "no probe of a removed backend");
    assert.ok(good.checks() > goodChecks, "the remaining backend is still probed");
  });

  it("probes stop at shutdown, while connections still drain", async () => {
    const echo = await startServer((s) => s.pipe(s));
    const lb = await startBalancer({
      health_check: { type: "tcp", interval: "50ms", timeout: "300ms" },
      timeouts: { shutdown: "10s" },
      ...staticBackends(echo.address),
    });
    await waitFor(() => echo.accepted() >= 3, 5000, "probes");
    // A client connection keeps the process up, draining, after SIGTERM.
    const client = await connect(lb.port);
    await roundTrip(client);
    lb.signal("SIGTERM");
    await lb.waitForLog((l) => l.msg === "shutting down: draining connections");
    await new Promise((r) => setTimeout(r, 100)); // a probe already connecting may still land
    const accepted = echo.accepted();
    await new Promise((r) => setTimeout(r, 300)); // six intervals
    assert.equal(lb.proc.exitCode, null, "still draining");
    assert.equal(echo.accepted(), accepted, "no probe after shutdown began");
    client.end();
    assert.deepEqual(await lb.exited, { code: 0, signal: null });
  });
});
