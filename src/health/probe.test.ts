import assert from "node:assert/strict";
import net from "node:net";
import { after, describe, it } from "node:test";
import { encodeLocalHeader } from "../proxy/proxy-protocol.ts";
import { HttpProber, TcpProber, type Prober, type ProbeTarget } from "./probe.ts";

const servers: net.Server[] = [];
const sockets = new Set<net.Socket>();
after(() => {
  sockets.forEach((s) => s.destroy());
  return Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

/** A listener on 127.0.0.1 running `handler` per connection. */
async function listen(handler: (socket: net.Socket) => void): Promise<ProbeTarget> {
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    handler(socket);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  servers.push(server);
  const port = (server.address() as net.AddressInfo).port;
  return { key: `127.0.0.1:${port}`, host: "127.0.0.1", port };
}

async function refused(): Promise<ProbeTarget> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return { key: `127.0.0.1:${port}`, host: "127.0.0.1", port };
}

/** Answers every request with `status` and remembers the request heads it saw. */
function httpBackend(status: number | ((path: string) => number), seen: string[] = []): Promise<ProbeTarget> {
  return listen((socket) => {
    let head = "";
    socket.on("data", (c: Buffer) => {
      head += c.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      seen.push(head);
      const path = head.split(" ")[1]!;
      const code = typeof status === "number" ? status : status(path);
      socket.end(`HTTP/1.1 ${code} Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok`);
    });
  });
}

function run(prober: Prober, target: ProbeTarget): Promise<{ failure: string | null; inconclusive: boolean; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    prober.start(target, (failure, inconclusive) => resolve({ failure, inconclusive, ms: performance.now() - started }));
  });
}

const http = (opts: Partial<ConstructorParameters<typeof HttpProber>[0]> = {}) =>
  new HttpProber({ timeoutMs: 300, path: "/health", host: "", expectStatus: [[200, 399]], ...opts });

describe("tcp probe", () => {
  const tcp = new TcpProber({ timeoutMs: 300 });

  it("passes when the connection succeeds, and closes it", async () => {
    let closed = 0;
    const target = await listen((s) => s.on("close", () => closed++));
    assert.deepEqual((await run(tcp, target)).failure, null);
    await waitUntil(() => closed === 1);
  });

  it("fails with 'connect refused' on a closed port", async () => {
    assert.equal((await run(tcp, await refused())).failure, "connect refused");
  });

  it("passes against a backend that accepts and never answers", async () => {
    const target = await listen(() => {});
    assert.equal((await run(tcp, target)).failure, null);
  });
});

describe("http probe", () => {
  it("passes on 200 and sends GET path with the backend address as Host", async () => {
    const seen: string[] = [];
    const target = await httpBackend(200, seen);
    assert.equal((await run(http(), target)).failure, null);
    assert.match(seen[0]!, /^GET \/health HTTP\/1\.1\r\n/);
    assert.match(seen[0]!, new RegExp(`\r\nHost: ${target.key}\r\n`));
  });

  it("sends the configured Host header", async () => {
    const seen: string[] = [];
    const target = await httpBackend(200, seen);
    await run(http({ host: "app.example" }), target);
    assert.match(seen[0]!, /\r\nHost: app\.example\r\n/);
  });

  it("opens with the PROXY protocol header the backend is sent (a LOCAL one), before the request", async () => {
    const raw: Buffer[] = [];
    const target = await listen((socket) => {
      socket.on("data", (d: Buffer) => {
        raw.push(d);
        if (Buffer.concat(raw).includes("\r\n\r\n")) socket.end("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
      });
    });
    const local = encodeLocalHeader(2);
    const result = await run(http({ header: (t) => (t.key === target.key ? local : null) }), target);
    assert.equal(result.failure, null);
    const got = Buffer.concat(raw);
    assert.deepEqual(got.subarray(0, local.length), local);
    assert.match(got.subarray(local.length).toString("latin1"), /^GET \/health HTTP\/1\.1\r\n/);
    // TCP checks send it too, then close.
    const tcpRaw: Buffer[] = [];
    const tcpTarget = await listen((socket) => socket.on("data", (d: Buffer) => tcpRaw.push(d)));
    assert.equal((await run(new TcpProber({ timeoutMs: 1000, header: () => encodeLocalHeader(1) }), tcpTarget)).failure, null);
    for (let i = 0; i < 200 && Buffer.concat(tcpRaw).length < 15; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(Buffer.concat(tcpRaw).toString("latin1"), "PROXY UNKNOWN\r\n");
  });

  it("fails with 'HTTP 503' on 503 and 'HTTP 404' on a wrong path", async () => {
    assert.equal((await run(http(), await httpBackend(503))).failure, "HTTP 503");
    const onlyHealth = await httpBackend((path) => (path === "/health" ? 200 : 404));
    assert.equal((await run(http({ path: "/healthz" }), onlyHealth)).failure, "HTTP 404");
    assert.equal((await run(http(), onlyHealth)).failure, null);
  });

  it("honours custom expect_status ranges", async () => {
    const expect = http({ expectStatus: [[204, 204], [418, 418]] });
    assert.equal((await run(expect, await httpBackend(418))).failure, null);
    assert.equal((await run(expect, await httpBackend(204))).failure, null);
    assert.equal((await run(expect, await httpBackend(200))).failure, "HTTP 200");
  });

  it("fails at the timeout against a black hole (accepts, never answers)", async () => {
    const target = await listen(() => {});
    const result = await run(http({ timeoutMs: 250 }), target);
    assert.equal(result.failure, "timeout after 250ms");
    assert.ok(result.ms >= 240 && result.ms < 1000, `took ${result.ms}ms`);
  });

  it("fails at the timeout when the reply trickles in too slowly", async () => {
    const target = await listen((socket) => {
      const t = setInterval(() => socket.write("H"), 50);
      socket.on("close", () => clearInterval(t));
    });
    const result = await run(http({ timeoutMs: 300 }), target);
    assert.equal(result.failure, "timeout after 300ms");
  });

  it("reads a status line split across packets and skips an interim 1xx", async () => {
    const target = await listen((socket) => {
      socket.once("data", () => {
        socket.write("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2");
        setTimeout(() => socket.end("04 No Content\r\n\r\n"), 30);
      });
    });
    assert.equal((await run(http(), target)).failure, null);
  });

  it("fails on a reply that is not HTTP, or no reply at all", async () => {
    assert.equal((await run(http(), await listen((s) => s.end("SSH-2.0-OpenSSH\r\n")))).failure, "invalid HTTP response");
    assert.equal((await run(http(), await listen((s) => s.once("data", () => s.end())))).failure, "connection closed before a response");
    assert.equal((await run(http(), await listen((s) => s.once("data", () => s.resetAndDestroy())))).failure, "connection reset");
    assert.equal((await run(http(), await refused())).failure, "connect refused");
  });

  it("cancel closes the connection and reports nothing", async () => {
    let open = 0;
    const target = await listen((s) => {
      open++;
      s.resume(); // read, so the probe's FIN is seen
      s.on("close", () => open--);
    });
    let reported = false;
    const probe = http().start(target, () => (reported = true));
    await waitUntil(() => open === 1);
    probe.cancel();
    await waitUntil(() => open === 0);
    await new Promise((r) => setTimeout(r, 350)); // past the timeout: still nothing
    assert.equal(reported, false);
  });
});

async function waitUntil(cond: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}
