// End-to-end: the PROXY protocol, as HAProxy's doc/proxy-protocol.txt specifies it.
// To backends: the header a backend sees first, byte for byte, then the client's bytes.
// From upstream balancers: a header read off a trusted source's connection stands for
// the client everywhere; anything else is refused and counted.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import { cleanup, startBalancer, startServer, waitFor, type BalancerProcess, type TestServer } from "./harness.ts";
import { accessLines, scrape, valueOf, type AccessLine } from "./observe.ts";

afterEach(cleanup);

const V2_SIGNATURE = Buffer.from("0d0a0d0a000d0a515549540a", "hex");
/** The headers of a connection without a client to speak for (the spec's LOCAL / UNKNOWN). */
const V2_LOCAL = Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0, 0])]);
const V1_UNKNOWN = Buffer.from("PROXY UNKNOWN\r\n");

/**
 * A backend that keeps, per connection, every byte it received, and answers `name`.
 * The balancer's health probes are not kept: they bring no byte, or only the header of a
 * connection the balancer opens for itself (v2 LOCAL, v1 UNKNOWN).
 */
async function recordingBackend(name = "ok") {
  const received: Buffer[] = [];
  const probe = (bytes: Buffer) => bytes.length === 0 || bytes.equals(V2_LOCAL) || bytes.equals(V1_UNKNOWN);
  const server = await startServer((socket) => {
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("end", () => {
      const bytes = Buffer.concat(chunks);
      if (!probe(bytes)) received.push(bytes);
      socket.end(name);
    });
  });
  return { server, received, address: server.address };
}

/**
 * The backend's accepted connections once the balancer's first health probe is done
 * (probes every hour after it, per the config below): any more are the clients'.
 */
async function probed(lb: BalancerProcess, backend: { server: TestServer }): Promise<number> {
  await waitFor(async () => {
    const list = (await (await fetch(`${lb.api}/backends`)).json()) as Array<{ last_checked_at: string | null }>;
    return list.every((b) => b.last_checked_at !== null);
  }, 3000, "the first health probe");
  await waitFor(() => backend.server.open() === 0, 1000, "the probe connection to close");
  return backend.server.accepted();
}

interface Exchange {
  /** The client's own port: what the balancer saw as the source port. */
  localPort: number;
  reply: string;
  /** Milliseconds from connect to close. */
  openMs: number;
}

/**
 * Connects, sends `parts` in order (each write separately, `gapMs` apart, with Nagle
 * off so each write is its own segment), half-closes unless `end` is false, and returns
 * what came back once the balancer closed.
 */
function exchange(port: number, parts: Array<Buffer | string>, opts: { host?: string; gapMs?: number; end?: boolean } = {}): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: opts.host ?? "127.0.0.1" });
    socket.setNoDelay(true);
    const chunks: Buffer[] = [];
    let connectedAt = 0;
    let localPort = 0;
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "ECONNRESET" && err.code !== "EPIPE") reject(err);
    });
    socket.on("close", () => resolve({ localPort, reply: Buffer.concat(chunks).toString(), openMs: performance.now() - connectedAt }));
    socket.setTimeout(10_000, () => socket.destroy(new Error("client timeout")));
    socket.on("connect", async () => {
      connectedAt = performance.now();
      localPort = socket.localPort!;
      for (const part of parts) {
        if (socket.destroyed) return;
        socket.write(part);
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
      }
      if (opts.end !== false && !socket.destroyed) socket.end();
    });
  });
}

// ---- headers, built here from the specification (not with the balancer's encoder) ------


function v1(source: string, destination: string, sourcePort: number, destinationPort: number): Buffer {
  const family = net.isIPv6(source) ? "TCP6" : "TCP4";
  return Buffer.from(`PROXY ${family} ${source} ${destination} ${sourcePort} ${destinationPort}\r\n`);
}

/** A v2 PROXY command for TCP over IPv4 or IPv6, without TLVs. */
function v2(source: string, destination: string, sourcePort: number, destinationPort: number): Buffer {
  const ipv6 = net.isIPv6(source);
  const addresses = ipv6 ? Buffer.concat([ipv6Bytes(source), ipv6Bytes(destination)]) : Buffer.from([...ipv4Bytes(source), ...ipv4Bytes(destination)]);
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(sourcePort, 0);
  ports.writeUInt16BE(destinationPort, 2);
  const length = addresses.length + 4;
  return Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, ipv6 ? 0x21 : 0x11, length >> 8, length & 0xff]), addresses, ports]);
}

function ipv4Bytes(ip: string): number[] {
  return ip.split(".").map(Number);
}

/** "2001:db8::7" as its 16 bytes. */
function ipv6Bytes(ip: string): Buffer {
  const [head, tail] = ip.includes("::") ? ip.split("::") : [ip, undefined];
  const groups = (s: string | undefined) => (s ? s.split(":").map((g) => parseInt(g, 16)) : []);
  const front = groups(head);
  const back = groups(tail);
  const all = tail === undefined ? front : [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

// ---- what the balancer reports ------------------------------------------------------------



/** Waits for `count` access-log lines (they are written in batches, at least every second). */
function linesWhen(lb: BalancerProcess, count: number): Promise<AccessLine[]> {
  return waitFor(() => {
    const lines = accessLines(lb);
    return lines.length >= count && lines;
  }, 4000, `${count} access-log lines`);
}



async function refusedForHeader(lb: BalancerProcess): Promise<number | undefined> {
  return valueOf(await scrape(lb), "gobalancer_connections_refused_total", { reason: "proxy_header" });
}

async function post(lb: BalancerProcess, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${lb.api}/backends`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** 64 KiB of random bytes: a payload that must arrive intact behind the header. */
const payload = () => randomBytes(64 * 1024);

describe("PROXY protocol to backends", () => {
  for (const family of ["IPv4", "IPv6"] as const) {
    it(`over ${family}: the exact v1 and v2 headers with the client's and the listener's addresses, then the client's bytes`, async () => {
      const host = family === "IPv4" ? "127.0.0.1" : "::1";
      const [a, b] = await Promise.all([recordingBackend("a"), recordingBackend("b")]);
      const lb = await startBalancer({
        listen: family === "IPv4" ? "127.0.0.1:0" : "[::1]:0",
        proxy_protocol: "v1", // a: the global v1; b: its own v2
        discovery: { type: "static", backends: [{ address: a.address }, { address: b.address, proxy_protocol: "v2" }] },
      });
      for (let i = 0; i < 2; i++) {
        const data = payload();
        const { localPort, reply } = await exchange(lb.port, [data], { host });
        const backend = reply === "a" ? a : reply === "b" ? b : assert.fail(`reply ${JSON.stringify(reply)}`);
        const header = (reply === "a" ? v1 : v2)(host, host, localPort, lb.port);
        assert.equal(backend.received.length, 1, "round robin: one connection each");
        const got = backend.received[0]!;
        assert.deepEqual(got.subarray(0, header.length), header, `header: ${JSON.stringify(got.subarray(0, header.length).toString("latin1"))}`);
        assert.ok(got.subarray(header.length).equals(data), "the client's bytes follow the header intact");
      }
    });
  }

  it("a backend's own setting overrides the global one, either way", async () => {
    const [a, b, c] = await Promise.all([recordingBackend("a"), recordingBackend("b"), recordingBackend("c")]);
    let lb = await startBalancer({
      proxy_protocol: "off",
      discovery: {
        type: "static",
        backends: [
          { address: a.address, proxy_protocol: "v1" },
          { address: b.address, proxy_protocol: "v2" },
          { address: c.address },
        ],
      },
    });
    const ports = new Map<string, number>();
    for (let i = 0; i < 3; i++) {
      const { reply, localPort } = await exchange(lb.port, ["hello"]);
      ports.set(reply, localPort);
    }
    assert.deepEqual([...ports.keys()].sort(), ["a", "b", "c"], "round robin: one connection each");
    assert.deepEqual(a.received[0], Buffer.concat([v1("127.0.0.1", "127.0.0.1", ports.get("a")!, lb.port), Buffer.from("hello")]));
    assert.deepEqual(b.received[0], Buffer.concat([v2("127.0.0.1", "127.0.0.1", ports.get("b")!, lb.port), Buffer.from("hello")]));
    assert.equal(c.received[0]!.toString(), "hello", "no setting of its own: the global off");
    const json = (await (await fetch(`${lb.api}/backends`)).json()) as Array<{ address: string; proxy_protocol: string | null }>;
    assert.deepEqual(
      json.map((j) => j.proxy_protocol),
      ["v1", "v2", null],
    );
    await lb.stop();

    lb = await startBalancer({
      proxy_protocol: "v2",
      discovery: { type: "static", backends: [{ address: a.address, proxy_protocol: "off" }, { address: b.address }] },
    });
    for (let i = 0; i < 2; i++) {
      const { reply, localPort } = await exchange(lb.port, ["again"]);
      ports.set(reply, localPort);
    }
    assert.equal(a.received[1]!.toString(), "again", "off overrides the global v2");
    assert.deepEqual(b.received[1], Buffer.concat([v2("127.0.0.1", "127.0.0.1", ports.get("b")!, lb.port), Buffer.from("again")]));
  });

  it("POST /backends takes proxy_protocol, which overrides the global one", async () => {
    const [a, b] = await Promise.all([recordingBackend("a"), recordingBackend("b")]);
    const lb = await startBalancer({ proxy_protocol: "v1", discovery: { type: "static", backends: [] } });
    const added = await post(lb, { address: a.address, proxy_protocol: "off" });
    assert.equal(added.status, 201);
    assert.equal(added.body.proxy_protocol, "off");
    const plain = await post(lb, { address: b.address });
    assert.equal(plain.status, 201);
    assert.equal(plain.body.proxy_protocol, null, "no setting of its own");
    const ports = new Map<string, number>();
    for (let i = 0; i < 2; i++) {
      const { reply, localPort } = await exchange(lb.port, ["hi"]);
      ports.set(reply, localPort);
    }
    assert.equal(a.received[0]!.toString(), "hi");
    assert.deepEqual(b.received[0], Buffer.concat([v1("127.0.0.1", "127.0.0.1", ports.get("b")!, lb.port), Buffer.from("hi")]));

    const c = await recordingBackend("c");
    await fetch(`${lb.api}/backends/${encodeURIComponent(a.address)}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ state: "drain" }) });
    await fetch(`${lb.api}/backends/${encodeURIComponent(b.address)}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ state: "drain" }) });
    assert.equal((await post(lb, { address: c.address, proxy_protocol: "v2" })).body.proxy_protocol, "v2");
    const { reply, localPort } = await exchange(lb.port, ["v2 please"]);
    assert.equal(reply, "c");
    assert.deepEqual(c.received[0], Buffer.concat([v2("127.0.0.1", "127.0.0.1", localPort, lb.port), Buffer.from("v2 please")]));
  });

  // HAProxy sends the header with health checks too when a server has send-proxy; a
  // backend that requires it (nginx `listen … proxy_protocol`) answers a bare request with
  // 400, which would mark it down.
  it("HTTP health checks carry the header to backends that require one (the global v2, a backend's own v1)", async () => {
    const requiring = () =>
      startServer((socket) => {
        let head = Buffer.alloc(0);
        socket.on("data", (d: Buffer) => {
          head = Buffer.concat([head, d]);
          const proxied = head.subarray(0, 6).toString() === "PROXY " || head.subarray(0, 12).equals(V2_SIGNATURE);
          if (!proxied && head.length >= 12) socket.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
          else if (proxied && head.includes("\r\n\r\n")) socket.end("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        });
      });
    const [a, b] = await Promise.all([requiring(), requiring()]);
    const lb = await startBalancer({
      proxy_protocol: "v2",
      health_check: { type: "http", interval: "100ms", timeout: "500ms", rise: 1, fall: 1, http: { path: "/" } },
      discovery: { type: "static", backends: [{ address: a.address }, { address: b.address, proxy_protocol: "v1" }] },
    });
    // Three probes each at least, any of which would have marked it down.
    await waitFor(() => a.accepted() >= 3 && b.accepted() >= 3, 3000, "three probes each");
    const list = (await (await fetch(`${lb.api}/backends`)).json()) as Array<{ status: string; last_error: string | null }>;
    assert.deepEqual(list.map((info) => [info.status, info.last_error]), [["up", null], ["up", null]]);
  });
});

describe("PROXY protocol from upstream balancers", () => {
  const accepting = (extra: Record<string, unknown> = {}) => ({
    listen_proxy_protocol: { enabled: true, trusted: ["127.0.0.1/32"], timeout: "3s" },
    access_log: { enabled: true, path: "access.log" },
    health_check: { interval: "1h" },
    ...extra,
  });

  for (const workers of [1, 2]) {
    it(`v1 and v2 from a trusted source: the backend gets the bytes after the header, the log the header's client (workers: ${workers})`, async () => {
      const backend = await recordingBackend();
      const lb = await startBalancer(accepting({ workers, discovery: { type: "static", backends: [{ address: backend.address }] } }));
      const sent = [
        { header: v1("203.0.113.7", "192.0.2.1", 40001, 443), client: "203.0.113.7:40001" },
        { header: v2("198.51.100.20", "192.0.2.1", 40002, 443), client: "198.51.100.20:40002" },
        { header: v1("2001:db8::7", "2001:db8::1", 40003, 443), client: "[2001:db8::7]:40003" },
        { header: v2("2001:db8::8", "2001:db8::1", 40004, 443), client: "[2001:db8::8]:40004" },
      ];
      for (const [i, { header }] of sent.entries()) {
        const data = payload();
        // The header and the first bytes in one segment, as upstream balancers send them.
        const { reply } = await exchange(lb.port, [Buffer.concat([header, data.subarray(0, 100)]), data.subarray(100)]);
        assert.equal(reply, "ok");
        assert.ok(backend.received[i]!.equals(data), `connection ${i}: exactly the client's bytes, header stripped`);
      }
      // Headers that carry no client (v1 UNKNOWN, v2 LOCAL): the real peer stands.
      const ports: number[] = [];
      for (const header of [V1_UNKNOWN, V2_LOCAL]) {
        const { reply, localPort } = await exchange(lb.port, [header, "local"]);
        assert.equal(reply, "ok");
        ports.push(localPort);
      }
      assert.deepEqual(backend.received.slice(sent.length).map((r) => r.toString()), ["local", "local"]);
      const expected = [...sent.map((s) => s.client), ...ports.map((p) => `127.0.0.1:${p}`)];
      const lines = await linesWhen(lb, expected.length);
      assert.deepEqual(lines.map((l) => l.client).sort(), expected.sort());
      assert.deepEqual(new Set(lines.map((l) => l.termination)), new Set(["client_fin"]));
      assert.equal(await refusedForHeader(lb), 0);
    });
  }

  it("a v2 header's TLVs are skipped; an IPv6 upstream is trusted by its range", async () => {
    const backend = await recordingBackend();
    const lb = await startBalancer(
      accepting({
        listen: "[::1]:0",
        listen_proxy_protocol: { enabled: true, trusted: ["::1/128"], timeout: "3s" },
        discovery: { type: "static", backends: [{ address: backend.address }] },
      }),
    );
    // PP2_TYPE_AUTHORITY ("example.com") and a PP2_TYPE_NOOP of 5 bytes after the addresses.
    const tlvs = Buffer.concat([Buffer.from([0x02, 0, 11]), Buffer.from("example.com"), Buffer.from([0x04, 0, 5]), Buffer.alloc(5)]);
    const plain = v2("192.0.2.77", "192.0.2.1", 6000, 443);
    const header = Buffer.concat([plain, tlvs]);
    header.writeUInt16BE(plain.length - 16 + tlvs.length, 14);
    const { reply } = await exchange(lb.port, [header, "after the TLVs"], { host: "::1" });
    assert.equal(reply, "ok");
    assert.deepEqual(backend.received.map((r) => r.toString()), ["after the TLVs"]);
    assert.deepEqual((await linesWhen(lb, 1)).map((l) => l.client), ["192.0.2.77:6000"]);
  });

  it("ip_hash hashes the header's client, not the upstream balancer's address", async () => {
    const [a, b] = await Promise.all([recordingBackend("a"), recordingBackend("b")]);
    const lb = await startBalancer(accepting({ algorithm: "ip_hash", discovery: { type: "static", backends: [{ address: a.address }, { address: b.address }] } }));
    const via = async (client: string) => (await exchange(lb.port, [v1(client, "192.0.2.1", 50000, 80), "x"])).reply;
    // Every connection comes from 127.0.0.1: only the header's address can tell them apart.
    const seen = new Map<string, string>();
    for (let i = 1; i <= 40 && new Set(seen.values()).size < 2; i++) seen.set(`203.0.113.${i}`, await via(`203.0.113.${i}`));
    const first = [...seen].find(([, backend]) => backend === "a");
    const second = [...seen].find(([, backend]) => backend === "b");
    assert.ok(first && second, `addresses on both backends: ${JSON.stringify([...seen])}`);
    for (let i = 0; i < 3; i++) {
      assert.equal(await via(first[0]), "a", `${first[0]} stays on a`);
      assert.equal(await via(second[0]), "b", `${second[0]} stays on b`);
    }
  });

  it("the header's client and destination are sent on to the backend (v1 in, v1 and v2 out)", async () => {
    const [a, b] = await Promise.all([recordingBackend("a"), recordingBackend("b")]);
    const lb = await startBalancer(
      accepting({
        discovery: { type: "static", backends: [{ address: a.address, proxy_protocol: "v1" }, { address: b.address, proxy_protocol: "v2" }] },
      }),
    );
    for (let i = 0; i < 2; i++) await exchange(lb.port, [v1("203.0.113.9", "192.0.2.10", 5555, 8443), "payload"]);
    assert.deepEqual(a.received[0], Buffer.concat([v1("203.0.113.9", "192.0.2.10", 5555, 8443), Buffer.from("payload")]));
    assert.deepEqual(b.received[0], Buffer.concat([v2("203.0.113.9", "192.0.2.10", 5555, 8443), Buffer.from("payload")]));
  });

  it("refuses a header from an untrusted source, and counts it", async () => {
    const backend = await recordingBackend();
    const lb = await startBalancer(
      accepting({
        listen_proxy_protocol: { enabled: true, trusted: ["10.0.0.0/8"], timeout: "3s" },
        discovery: { type: "static", backends: [{ address: backend.address }] },
      }),
    );
    const dialled = await probed(lb, backend);
    const { reply, localPort, openMs } = await exchange(lb.port, [v1("203.0.113.7", "192.0.2.1", 40001, 443), "hello"], { end: false });
    assert.equal(reply, "", "closed without an answer");
    assert.ok(openMs < 1000, `closed at once, not at the header timeout (${Math.round(openMs)} ms)`);
    assert.equal(backend.server.accepted(), dialled, "no backend connection");
    assert.equal(await refusedForHeader(lb), 1);
    const lines = await linesWhen(lb, 1);
    assert.deepEqual(lines, [{ ...lines[0], client: `127.0.0.1:${localPort}`, backend: "", termination: "proxy_header" }], "the real peer is logged");
  });

  it("refuses what is not a PROXY header at its first wrong byte, and counts it", async () => {
    const backend = await recordingBackend();
    const lb = await startBalancer(accepting({ discovery: { type: "static", backends: [{ address: backend.address }] } }));
    const dialled = await probed(lb, backend);
    const garbage = [
      "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", // a client that does not speak the protocol
      "PROXY TCP4 203.0.113.300 192.0.2.1 1 2\r\n", // a v1 line with a bad address
      Buffer.concat([V2_SIGNATURE, Buffer.from([0x31, 0x11, 0, 12])]), // v2 signature, version 3
      Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])]), // v2 longer than any upstream sends
    ];
    for (const bytes of garbage) {
      const { reply, openMs } = await exchange(lb.port, [bytes], { end: false });
      assert.equal(reply, "");
      assert.ok(openMs < 1000, `closed at once, not at the 3 s header timeout (${Math.round(openMs)} ms)`);
    }
    assert.equal(backend.server.accepted(), dialled, "no backend connection");
    assert.equal(await refusedForHeader(lb), garbage.length);
    const lines = await linesWhen(lb, garbage.length);
    assert.deepEqual(lines.map((l) => l.termination), garbage.map(() => "proxy_header"));
  });

  it("reads a header that arrives a byte at a time", async () => {
    const backend = await recordingBackend();
    const lb = await startBalancer(accepting({ discovery: { type: "static", backends: [{ address: backend.address }] } }));
    const headers = [v1("203.0.113.50", "192.0.2.1", 1234, 80), v2("2001:db8::50", "2001:db8::1", 1235, 80)];
    for (const header of headers) {
      const bytes = [...header].map((byte) => Buffer.from([byte]));
      const { reply } = await exchange(lb.port, [...bytes, "after"], { gapMs: 3 });
      assert.equal(reply, "ok");
    }
    assert.deepEqual(backend.received.map((r) => r.toString()), ["after", "after"]);
    const lines = await linesWhen(lb, 2);
    assert.deepEqual(lines.map((l) => l.client).sort(), ["203.0.113.50:1234", "[2001:db8::50]:1235"]);
  });

  it("closes a client that sends no complete header within listen_proxy_protocol.timeout, and counts it", async () => {
    const backend = await recordingBackend();
    const lb = await startBalancer(
      accepting({
        listen_proxy_protocol: { enabled: true, trusted: ["127.0.0.1/32"], timeout: "600ms" },
        discovery: { type: "static", backends: [{ address: backend.address }] },
      }),
    );
    const dialled = await probed(lb, backend);
    const [silent, partial] = await Promise.all([exchange(lb.port, [], { end: false }), exchange(lb.port, ["PROXY TCP4 203.0."], { end: false })]);
    for (const client of [silent, partial]) {
      assert.equal(client.reply, "");
      // The deadline, give or take the timer: not before it, and not long after.
      assert.ok(client.openMs >= 550 && client.openMs < 1600, `closed after ${Math.round(client.openMs)} ms`);
    }
    assert.equal(backend.server.accepted(), dialled, "no backend connection");
    assert.equal(await refusedForHeader(lb), 2);
    const lines = await linesWhen(lb, 2);
    assert.deepEqual(lines.map((l) => l.termination), ["proxy_header", "proxy_header"]);
  });
});
