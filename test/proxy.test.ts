// End-to-end: the real gobalancer process proxying to real backends on 127.0.0.1.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import {
  cleanup,
  connect,
  echoTransfer,
  refusedPort,
  request,
  roundTrip,
  startBalancer,
  startEchoBackend,
  startNamedBackend,
  startServer,
  unansweredPort,
  waitFor,
} from "./harness.ts";
import { scrape, valueOf } from "./observe.ts";

afterEach(cleanup);

const backendsOf = (...servers: Array<{ address: string }>) => ({
  discovery: { type: "static", backends: servers.map((s) => ({ address: s.address })) },
});

describe("proxying", () => {
  it("round robin is exact over three backends", async () => {
    const backends = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer(backendsOf(...backends));
    const seen: string[] = [];
    for (let i = 0; i < 30; i++) seen.push((await request(lb.port)).trim());
    assert.deepEqual(seen.slice(0, 3).sort(), ["a", "b", "c"]);
    for (let i = 3; i < 30; i++) assert.equal(seen[i], seen[i - 3], `pick ${i} breaks the rotation: ${seen.join("")}`);
    for (const name of ["a", "b", "c"]) assert.equal(seen.filter((s) => s === name).length, 10);
  });

  it("moves 100 MB each way intact", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer(backendsOf(echo));
    const { receivedBytes, intact } = await echoTransfer(lb.port, 100);
    assert.equal(receivedBytes, 100 << 20);
    assert.ok(intact, "the bytes that came back are the bytes sent");
  });

  it("honours half-close: the client's FIN passes on and the reply still arrives", async () => {
    // Replies only after the client has finished sending, like HTTP/1.0 or `nc -N`.
    const counter = await startServer((socket) => {
      let n = 0;
      socket.on("data", (c: Buffer) => (n += c.length));
      socket.on("end", () => socket.end(`got ${n} bytes`));
    });
    const lb = await startBalancer(backendsOf(counter));
    assert.equal(await request(lb.port, "x".repeat(70_000)), "got 70000 bytes");
  });

  it("skips a refused backend without the client noticing", async () => {
    const good = await startNamedBackend("good");
    const dead = await refusedPort();
    const lb = await startBalancer({
      retries: 2,
      discovery: { type: "static", backends: [{ address: `127.0.0.1:${dead}` }, { address: good.address }] },
    });
    for (let i = 0; i < 10; i++) assert.equal((await request(lb.port)).trim(), "good");
    await lb.waitForLog((l) => l.msg === "backend dial failed" && l.backend === `127.0.0.1:${dead}`);
  });

  it("closes the client at once when every backend is down", async () => {
    const lb = await startBalancer({
      retries: 1,
      discovery: { type: "static", backends: [{ address: `127.0.0.1:${await refusedPort()}` }] },
    });
    const started = Date.now();
    assert.equal(await request(lb.port), "");
    assert.ok(Date.now() - started < 1000, `took ${Date.now() - started}ms`);
  });

  it("closes a connection idle for timeouts.idle", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ ...backendsOf(echo), timeouts: { idle: "300ms" } });
    const socket = await connect(lb.port);
    const started = Date.now();
    await roundTrip(socket, "ping");
    await new Promise((r) => socket.once("close", r));
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 250 && elapsed < 2000, `closed after ${elapsed}ms`);
    await waitFor(() => echo.open() === 0, 2000, "backend side closed");
  });

  it("gives up a dial at timeouts.connect and retries another backend", async () => {
    const hanging = await unansweredPort();
    const echo = await startEchoBackend();
    const lb = await startBalancer({
      discovery: { backends: [{ address: `127.0.0.1:${hanging}` }, { address: echo.address }] },
      timeouts: { connect: "300ms" },
    });
    // Round robin: one of the two first connections dials the hanging backend first.
    const started = Date.now();
    const replies = await Promise.all([request(lb.port, "a"), request(lb.port, "b")]);
    const elapsed = Date.now() - started;
    assert.deepEqual(replies.sort(), ["a", "b"]);
    assert.ok(elapsed >= 250 && elapsed < 2000, `took ${elapsed}ms`);
    const failed = await lb.waitForLog((l) => l.msg === "backend dial failed" && l.backend === `127.0.0.1:${hanging}`);
    assert.equal(failed.reason, "connect timeout");
  });

  it("times out every pending dial at its own deadline", async () => {
    const hanging = await unansweredPort();
    const lb = await startBalancer({
      discovery: { backends: [{ address: `127.0.0.1:${hanging}` }] },
      timeouts: { connect: "300ms" },
      retries: 0,
    });
    const closedAfter = (delayMs: number) =>
      new Promise<void>((resolve) => setTimeout(resolve, delayMs)).then(async () => {
        const started = Date.now();
        assert.equal(await request(lb.port), "");
        return Date.now() - started;
      });
    const times = await Promise.all([closedAfter(0), closedAfter(100), closedAfter(200)]);
    for (const t of times) assert.ok(t >= 250 && t < 1000, `closed after ${times.join(", ")} ms`);
  });

  it("keeps a connection with traffic open past timeouts.idle, then closes it once quiet", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ ...backendsOf(echo), timeouts: { idle: "300ms" } });
    const socket = await connect(lb.port);
    let closedAt = 0;
    socket.once("close", () => (closedAt = Date.now()));
    // A byte every 100 ms for 1.2 s: four idle timeouts' worth, never 300 ms quiet.
    for (let i = 0; i < 12; i++) {
      await roundTrip(socket);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(closedAt, 0, "closed while traffic was flowing");
    const quietFrom = Date.now();
    await waitFor(() => closedAt !== 0, 2000, "closed once quiet");
    const quiet = closedAt - quietFrom;
    assert.ok(quiet >= 150 && quiet < 1000, `closed after ${quiet}ms quiet`);
  });

  it("passes a backend reset on to the client", async () => {
    const resetter = await startServer((socket) => socket.once("data", () => socket.resetAndDestroy()));
    const lb = await startBalancer(backendsOf(resetter));
    const socket = await connect(lb.port);
    socket.write("hello");
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => socket.once("error", resolve));
    assert.equal(err.code, "ECONNRESET");
  });

  it("applies back-pressure: a slow reader does not make the balancer buffer the stream", async () => {
    const chunk = Buffer.alloc(1 << 16, 7);
    let written = 0;
    const firehose = await startServer((socket) => {
      const pump = () => {
        while (written < 512 << 20) {
          written += chunk.length;
          if (!socket.write(chunk)) return void socket.once("drain", pump);
        }
        socket.end();
      };
      pump();
    });
    const lb = await startBalancer(backendsOf(firehose));
    const rssBefore = rssKiB(lb.proc.pid!);
    const socket = await connect(lb.port);
    socket.pause(); // the client reads nothing for a while
    await new Promise((r) => setTimeout(r, 1500));
    const rssDuring = rssKiB(lb.proc.pid!);
    assert.ok(written < 64 << 20, `backend got ${written >> 20} MiB out while the client read nothing`);
    assert.ok(rssDuring - rssBefore < 64 * 1024, `balancer grew by ${(rssDuring - rssBefore) >> 10} MiB`);
    socket.destroy();
  });

  it("refuses clients past max_connections and recovers", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ ...backendsOf(echo), max_connections: 2 });
    const held = [await connect(lb.port), await connect(lb.port)];
    for (const s of held) await roundTrip(s);
    // Refused at once: closed or reset, whichever reaches the client first.
    const outcome = await request(lb.port, "refused?").catch((e: NodeJS.ErrnoException) => e.code);
    assert.ok(outcome === "" || outcome === "ECONNRESET", `refused client got ${outcome}`);
    await lb.waitForLog((l) => /max_connections/.test(l.msg));
    const m = await scrape(lb);
    assert.equal(valueOf(m, "gobalancer_connections_refused_total", { reason: "limit" }), 1);
    assert.equal(valueOf(m, "gobalancer_connections_refused_total", { reason: "descriptors" }), 0);
    held[0]!.destroy();
    await waitFor(async () => (await request(lb.port, "again")) === "again", 3000, "a slot to free up");
  });

  it("refuses, logs and recovers at the file-descriptor limit instead of failing", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer(backendsOf(echo), { nofile: 100 });
    const clients: net.Socket[] = [];
    for (let i = 0; i < 60; i++) {
      const s = net.connect(lb.port, "127.0.0.1");
      s.on("error", () => {});
      clients.push(s);
    }
    await lb.waitForLog((l) => l.msg === "connection refused: file descriptor limit reached", 5000, "refusal logged");
    const m = await scrape(lb);
    assert.ok(valueOf(m, "gobalancer_connections_refused_total", { reason: "descriptors" })! >= 1, "counted as descriptors");
    assert.equal(valueOf(m, "gobalancer_connections_refused_total", { reason: "limit" }), 0, "not as max_connections");
    for (const s of clients) s.destroy();
    await waitFor(async () => (await request(lb.port, "alive")) === "alive", 10_000, "service after the limit");
    assert.equal(lb.proc.exitCode, null);
    assert.ok(!lb.logs.some((l) => l.msg === "backend dial failed"), "a local shortage is not the backend's failure");
  });
});

describe("graceful shutdown", () => {
  it("lets an in-flight transfer finish, refuses new clients and exits 0", async () => {
    // A backend that takes a second to answer in ten pieces.
    const slow = await startServer((socket) => {
      let i = 0;
      const timer = setInterval(() => {
        socket.write(`part${i}\n`);
        if (++i === 10) {
          clearInterval(timer);
          socket.end();
        }
      }, 100);
      socket.on("close", () => clearInterval(timer));
    });
    const lb = await startBalancer({ ...backendsOf(slow), timeouts: { shutdown: "10s" } });
    // The first health probe, at start-up, is a backend connection too.
    await waitFor(() => slow.accepted() === 1, 2000, "first health probe");
    const inflight = request(lb.port);
    await waitFor(() => slow.accepted() === 2, 2000, "backend connection");
    lb.signal("SIGTERM");
    await lb.waitForLog((l) => l.msg === "shutting down: draining connections");
    await assert.rejects(request(lb.port), /ECONNREFUSED/);
    const body = await inflight;
    assert.equal(body.split("\n").filter(Boolean).length, 10);
    assert.deepEqual(await lb.exited, { code: 0, signal: null });
  });

  it("closes what is left at timeouts.shutdown and exits 0", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ ...backendsOf(echo), timeouts: { shutdown: "500ms" } });
    const socket = await connect(lb.port);
    socket.on("error", () => {});
    const closed = new Promise((r) => socket.once("close", r));
    const started = Date.now();
    lb.signal("SIGTERM");
    await closed;
    assert.deepEqual(await lb.exited, { code: 0, signal: null });
    assert.ok(Date.now() - started < 3000);
  });

  it("exits at once on a second signal", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ ...backendsOf(echo), timeouts: { shutdown: "60s" } });
    const socket = await connect(lb.port);
    socket.on("error", () => {});
    lb.signal("SIGTERM");
    await lb.waitForLog((l) => l.msg === "shutting down: draining connections");
    const started = Date.now();
    lb.signal("SIGTERM");
    const exit = await lb.exited;
    assert.equal(exit.code, 1);
    assert.ok(Date.now() - started < 2000);
  });
});

describe("start-up failures", () => {
  it("exits 1 with one line when the port is in use", async () => {
    const taken = await startServer(() => {});
    const lb = await startBalancer({ listen: taken.address, discovery: { backends: [] } }, { noWait: true });
    const exit = await lb.exited;
    assert.equal(exit.code, 1);
    const errors = lb.logs.filter((l) => l.level >= 50);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.msg, new RegExp(`listen ${taken.address}: address already in use`));
    assert.equal(lb.otherOutput.join(""), "", "no stack trace or other noise");
  });

  it("exits 1 with the problem's path for a bad config", async () => {
    const lb = await startBalancer("listen: ':8080'\ndiscovery:\n  backends:\n    - address: '10.0.0.4:70000'\n", { noWait: true });
    assert.equal((await lb.exited).code, 1);
    const errors = lb.logs.filter((l) => l.level >= 50);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.msg, /discovery\.backends\[0\]\.address: port must be 1-65535/);
  });

  for (const workers of [1, 2]) {
    it(`exits 1 naming the access log when it cannot be opened (workers: ${workers})`, async () => {
      const lb = await startBalancer({ workers, access_log: { enabled: true, path: "no-such-dir/access.log" }, discovery: { backends: [] } }, { noWait: true });
      assert.equal((await lb.exited).code, 1);
      const errors = lb.logs.filter((l) => l.level >= 50);
      assert.equal(errors.length, 1);
      assert.match(errors[0]!.msg, /access_log\.path: cannot open no-such-dir\/access\.log: ENOENT/);
      assert.equal(lb.otherOutput.join(""), "", "no stack trace or other noise");
    });
  }
});

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}
