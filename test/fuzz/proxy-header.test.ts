// Property: whatever bytes a connection starts with, parseProxyHeader answers incomplete,
// invalid or done without throwing, and more bytes never change an answer once given; a
// header the encoder wrote parses back to the same addresses however it arrives in
// pieces, with the client's bytes after it untouched. Addresses are checked against
// node:net (net.isIPv4/isIPv6 for what is accepted, net.SocketAddress for how it prints).
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import fc from "fast-check";
import { encodeProxyHeader, parseProxyHeader, PROXY_HEADER_MAX, type ProxyParseResult } from "../../src/proxy/proxy-protocol.ts";
import { checkProperty } from "./settings.ts";

const V2_SIGNATURE = Buffer.from("\r\n\r\n\0\r\nQUIT\n", "latin1");

/** node:net's form of an address: IPv4 as is, IPv6 as net.SocketAddress prints it. */
const canonical = (ip: string): string => (net.isIPv4(ip) ? ip : new net.SocketAddress({ address: ip, family: "ipv6" }).address);
/** The IPv4 inside a canonical IPv4 or IPv4-mapped IPv6 address, else null. */
const ipv4Of = (ip: string): string | null => (net.isIPv4(ip) ? ip : ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : null);

function assertWellFormed(r: ProxyParseResult, n: number): void {
  if (r.status === "incomplete") return;
  if (r.status === "invalid") {
    assert.ok(typeof r.reason === "string" && r.reason.length > 0 && r.reason.length < 60, r.reason);
    return;
  }
  assert.equal(r.status, "done");
  assert.ok(Number.isInteger(r.consumed) && r.consumed >= 15 && r.consumed <= n && r.consumed <= PROXY_HEADER_MAX, `consumed ${r.consumed}`);
  assert.equal(r.source === undefined, r.destination === undefined);
  for (const e of [r.source, r.destination]) {
    if (e === undefined) continue;
    assert.ok(net.isIP(e.ip) !== 0 && canonical(e.ip) === e.ip, e.ip);
    assert.ok(Number.isInteger(e.port) && e.port >= 0 && e.port <= 65535);
  }
  if (r.command === "local") assert.equal(r.source, undefined);
}

/** Parses every prefix: each answer well formed, and invalid or done stays as first given. */
function parseEveryPrefix(bytes: Uint8Array): ProxyParseResult {
  let settled: ProxyParseResult | null = null;
  let last: ProxyParseResult = { status: "incomplete" };
  for (let n = 0; n <= bytes.length; n++) {
    last = parseProxyHeader(bytes, n);
    assertWellFormed(last, n);
    if (settled !== null) assert.deepEqual(last, settled, `prefix of ${n} bytes`);
    else if (last.status !== "incomplete") settled = last;
  }
  if (bytes.length >= PROXY_HEADER_MAX) assert.notEqual(last.status, "incomplete");
  return last;
}

const port = fc.integer({ min: 0, max: 65535 });
const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((ip) => `::ffff:${ip}`), fc.constantFrom("::", "::1", "0.0.0.0", "fe80::1%eth0"));
const endpoint = fc.record({ ip: address, port });
const version = fc.constantFrom<1 | 2>(1, 2);

/** A v2 header from arbitrary fields: mostly the valid nibbles, TCP blocks with words often 0 or ffff. */
const word = fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff }));
const v2Header = fc
  .tuple(
    fc.oneof(fc.constantFrom(0x20, 0x21, 0x21, 0x21), fc.integer({ min: 0, max: 255 })),
    fc.oneof(fc.constantFrom(0x00, 0x11, 0x21, 0x21, 0x12, 0x31), fc.integer({ min: 0, max: 255 })),
    fc.array(word, { minLength: 18, maxLength: 18 }),
    fc.uint8Array({ maxLength: 40 }),
    fc.option(fc.integer({ min: 0, max: 0xffff }), { freq: 4 }),
  )
  .map(([versionCommand, familyProtocol, words, tail, declared]) => {
    const block = Buffer.alloc(36);
    words.forEach((w, k) => block.writeUInt16BE(w, 2 * k));
    const body = Buffer.concat([block, tail]);
    // By default the length its family needs, so that TCP headers are mostly complete.
    const length = declared ?? (familyProtocol === 0x11 ? 12 : familyProtocol === 0x21 ? 36 : tail.length);
    const fixed = Buffer.from([versionCommand, familyProtocol, length >> 8, length & 0xff]);
    return Buffer.concat([V2_SIGNATURE, fixed, body.subarray(0, length)]);
  });

/** Starts that get past the first bytes: signatures, protocol words, or a real header. */
const start = fc.oneof(
  fc.constantFrom("", "PROXY ", "PROXY TCP4 ", "PROXY TCP6 ", "PROXY UNKNOWN", "PROXY TCP4 1.2.3.4 5.6.7.8 ", "PROXY TCP6 ::1 ").map((s) => Buffer.from(s)),
  fc.constant(V2_SIGNATURE),
  fc.tuple(version, endpoint, endpoint).map(([v, s, d]) => encodeProxyHeader(v, s, d)),
);
const v1Alphabet = [..."PROXY TCP46UNKW0123456789abcdefABCDEF.:\r\n %"];
const anyStart = fc.oneof(
  fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.from(b)),
  fc.tuple(start, fc.uint8Array({ maxLength: 60 })).map(([s, b]) => Buffer.concat([s, b])),
  fc.tuple(start, fc.string({ unit: fc.constantFrom(...v1Alphabet), maxLength: 110 })).map(([s, t]) => Buffer.concat([s, Buffer.from(t)])),
  v2Header,
);
/** A byte replaced, inserted or removed somewhere in `bytes`. */
const mutated = fc.tuple(anyStart, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom("replace", "insert", "remove")).map(([b, at, byte, how]) => {
  if (b.length === 0) return b;
  const i = at % b.length;
  const one = Buffer.from([byte]);
  if (how === "replace") return Buffer.concat([b.subarray(0, i), one, b.subarray(i + 1)]);
  if (how === "insert") return Buffer.concat([b.subarray(0, i), one, b.subarray(i)]);
  return Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
});

describe("fuzz: the PROXY protocol header", () => {
  it("any first bytes get one well-formed answer per prefix, and later bytes never change it", async (t) => {
    await checkProperty(t, "proxy header bytes", fc.property(fc.oneof(anyStart, mutated), (bytes) => void parseEveryPrefix(bytes)), 400);
  });

  it("v2 TCP addresses print as net.SocketAddress prints them", async (t) => {
    await checkProperty(
      t,
      "proxy header v2 addresses",
      fc.property(v2Header, (bytes) => {
        const r = parseEveryPrefix(bytes);
        if (r.status !== "done" || r.source === undefined) return;
        const words = (at: number) => Array.from({ length: 8 }, (_, k) => bytes.readUInt16BE(at + 2 * k).toString(16)).join(":");
        if (bytes[13] === 0x21) {
          assert.equal(r.source.ip, new net.SocketAddress({ address: words(16), family: "ipv6" }).address);
          assert.equal(r.destination!.ip, new net.SocketAddress({ address: words(32), family: "ipv6" }).address);
          assert.deepEqual([r.source.port, r.destination!.port], [bytes.readUInt16BE(48), bytes.readUInt16BE(50)]);
        } else {
          assert.equal(r.source.ip, [...bytes.subarray(16, 20)].join("."));
          assert.equal(r.destination!.ip, [...bytes.subarray(20, 24)].join("."));
          assert.deepEqual([r.source.port, r.destination!.port], [bytes.readUInt16BE(24), bytes.readUInt16BE(26)]);
        }
      }),
      400,
    );
  });

  it("encode then parse gives the addresses back, however the bytes arrive, payload untouched", async (t) => {
    const chunks = fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 30 });
    const payload = fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b));
    await checkProperty(
      t,
      "proxy header round trip",
      fc.property(version, endpoint, endpoint, chunks, payload, (v, source, destination, sizes, after) => {
        const header = encodeProxyHeader(v, source, destination);
        const stream = Buffer.concat([header, after]);
        const buffer = Buffer.alloc(PROXY_HEADER_MAX);
        let filled = 0;
        let result: ProxyParseResult = { status: "incomplete" };
        for (let k = 0; filled < stream.length; k++) {
          filled = Math.min(stream.length, filled + (sizes[k] ?? stream.length));
          stream.copy(buffer, 0, 0, filled);
          result = parseProxyHeader(buffer, filled);
          if (filled < header.length) assert.deepEqual(result, { status: "incomplete" }, `${filled} of ${header.length} bytes`);
          else break;
        }
        const s = canonical(source.ip.split("%")[0]!);
        const d = canonical(destination.ip.split("%")[0]!);
        const [s4, d4] = [ipv4Of(s), ipv4Of(d)];
        const both4 = s4 !== null && d4 !== null;
        const expected = (ip: string, four: string | null): string => (both4 ? four! : four !== null ? `::ffff:${four}` : ip);
        assert.deepEqual(result, {
          status: "done",
          version: v,
          consumed: header.length,
          command: "proxy",
          source: { ip: expected(s, s4), port: source.port },
          destination: { ip: expected(d, d4), port: destination.port },
        });
        assert.ok(buffer.subarray(header.length, filled).equals(after.subarray(0, filled - header.length)));
      }),
      400,
    );
  });

  it("v1 accepts exactly the addresses net.isIPv4/isIPv6 accept, and the encoder too", async (t) => {
    const hexish = fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF:."), maxLength: 46 });
    const nearValid = fc.tuple(fc.oneof(fc.ipV4(), fc.ipV6()), fc.nat(), fc.constantFrom("", ":", ".", "0", "00", "::", "f", "fffff", "256")).map(([ip, at, s]) => {
      // The ends are where most of the rules are (a lone colon, a missing group).
      const i = at % 4 === 0 ? 0 : at % 4 === 1 ? ip.length : at % (ip.length + 1);
      return ip.slice(0, i) + s + ip.slice(i + (at % 2));
    });
    await checkProperty(
      t,
      "proxy header v1 addresses",
      fc.property(fc.oneof(hexish, nearValid, fc.ipV4(), fc.ipV6()), (ip) => {
        for (const family of [4, 6] as const) {
          const line = Buffer.from(`PROXY TCP${family} ${ip} ${family === 4 ? "10.0.0.1" : "::1"} 1 2\r\n`);
          const r = parseEveryPrefix(line);
          const valid = family === 4 ? net.isIPv4(ip) : net.isIPv6(ip);
          assert.equal(r.status, valid ? "done" : "invalid", `${line.toString()} ${JSON.stringify(r)}`);
          if (r.status === "done") assert.equal(r.source!.ip, canonical(ip));
        }
        const encoded = encodeProxyHeader(1, { ip, port: 1 }, { ip: "::1", port: 2 }).toString("latin1");
        assert.equal(encoded === "PROXY UNKNOWN\r\n", net.isIP(ip) === 0, encoded);
      }),
      400,
    );
  });

  it("a header followed by anything is parsed with consumed = the header's length", async (t) => {
    const header = fc.oneof(
      fc.tuple(version, endpoint, endpoint).map(([v, s, d]) => encodeProxyHeader(v, s, d)),
      fc.constantFrom("PROXY UNKNOWN\r\n", "PROXY UNKNOWN 1 2 3\r\n", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n").map((s) => Buffer.from(s)),
      v2Header.filter((b) => parseProxyHeader(b).status === "done"),
    );
    await checkProperty(
      t,
      "proxy header with payload",
      fc.property(header, fc.uint8Array({ maxLength: 200 }), (h, payload) => {
        const alone = parseProxyHeader(h);
        assert.equal(alone.status, "done");
        const consumed = alone.status === "done" ? alone.consumed : -1;
        const data = Buffer.concat([h.subarray(0, consumed), payload]);
        assert.deepEqual(parseProxyHeader(data), alone);
      }),
      400,
    );
  });
});
