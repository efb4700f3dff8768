import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { encodeLocalHeader, encodeProxyHeader, parseProxyHeader, PROXY_HEADER_MAX, type ProxyEndpoint, type ProxyParseResult } from "./proxy-protocol.ts";

// Expected bytes below are written from the tables of HAProxy's doc/proxy-protocol.txt,
// not produced by the encoder, so encoder and parser are each checked against the text.
const SIGNATURE = "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a";
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");
const u16 = (n: number): string => n.toString(16).padStart(4, "0");
/** A v2 header: signature, version and command, family and protocol, length, then `body`. */
const v2 = (versionCommand: number, familyProtocol: number, body: string, length = hex(body).length): Buffer =>
  hex(`${SIGNATURE} ${versionCommand.toString(16).padStart(2, "0")} ${familyProtocol.toString(16).padStart(2, "0")} ${u16(length)} ${body}`);
/** 127.0.0.1:42 to 127.0.0.1:1337, as HAProxy's reg-tests/connection/proxy_protocol_tlv_validation.vtc sends it. */
const LOOPBACK_BLOCK = "7f000001 7f000001 002a 0539";
const loopback = { source: { ip: "127.0.0.1", port: 42 }, destination: { ip: "127.0.0.1", port: 1337 } };

type Addressed = { source: ProxyEndpoint; destination: ProxyEndpoint };
function done(version: 1 | 2, consumed: number, addressed?: Addressed, command: "proxy" | "local" = "proxy"): ProxyParseResult {
  return { status: "done", version, consumed, command, source: addressed?.source, destination: addressed?.destination };
}
const invalid = (reason: string): ProxyParseResult => ({ status: "invalid", reason });
const INCOMPLETE: ProxyParseResult = { status: "incomplete" };

/** Every prefix of `header` shorter than it is incomplete; all of it, with `payload` after, parses as `expected`. */
function assertIncremental(header: Buffer, expected: ProxyParseResult, payload: Buffer = Buffer.from("GET / HTTP/1.1\r\n\r\n")): void {
  const data = Buffer.concat([header, payload]);
  const before = Buffer.from(data);
  for (let n = 0; n < header.length; n++) assert.deepEqual(parseProxyHeader(data, n), INCOMPLETE, `prefix of ${n} bytes`);
  assert.deepEqual(parseProxyHeader(data, header.length), expected);
  assert.deepEqual(parseProxyHeader(data), expected);
  assert.deepEqual(data, before, "the bytes are left as they were");
}

/** `bytes` is incomplete up to `at` bytes and refused with `reason` from `at + 1` on. */
function assertRefusedAt(bytes: Buffer, at: number, reason: string): void {
  for (let n = 0; n < at; n++) assert.deepEqual(parseProxyHeader(bytes, n), INCOMPLETE, `prefix of ${n} bytes`);
  for (let n = at + 1; n <= bytes.length; n++) assert.deepEqual(parseProxyHeader(bytes, n), invalid(reason), `prefix of ${n} bytes`);
}

/** CRC32C (Castagnoli), bit by bit as RFC 4960 appendix B describes it. */
function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

describe("PROXY protocol v1: the specification's lines", () => {
  it("TCP4 before an HTTP request: the request is left after the header", () => {
    const line = Buffer.from("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    const request = Buffer.from("GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
    assertIncremental(line, done(1, line.length, { source: { ip: "192.168.0.1", port: 56324 }, destination: { ip: "192.168.0.11", port: 443 } }), request);
  });

  it("the longest lines: TCP4, TCP6 and UNKNOWN's worst case at 107 bytes", () => {
    const four = Buffer.from("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n");
    assert.equal(four.length, 56);
    const top4 = { ip: "255.255.255.255", port: 65535 };
    assertIncremental(four, done(1, 56, { source: top4, destination: top4 }));
    const f = Array(8).fill("ffff").join(":");
    const six = Buffer.from(`PROXY TCP6 ${f} ${f} 65535 65535\r\n`);
    assert.equal(six.length, 104);
    const top6 = { ip: f, port: 65535 };
    assertIncremental(six, done(1, 104, { source: top6, destination: top6 }));
    const worst = Buffer.from(`PROXY UNKNOWN ${f} ${f} 65535 65535\r\n`);
    assert.equal(worst.length, 107);
    assertIncremental(worst, done(1, 107));
  });

  it("UNKNOWN, short form and with addresses ignored", () => {
    assertIncremental(Buffer.from("PROXY UNKNOWN\r\n"), done(1, 15));
    assertIncremental(Buffer.from("PROXY UNKNOWN whatever the sender put\r\n"), done(1, 39));
  });

  it("TCP6 addresses come back as node:net prints them", () => {
    const line = Buffer.from("PROXY TCP6 2001:DB8:0:0:0:0:0:1 0:0:0:0:0:FFFF:0A00:0001 1 0\r\n");
    assertIncremental(line, done(1, line.length, { source: { ip: "2001:db8::1", port: 1 }, destination: { ip: "::ffff:10.0.0.1", port: 0 } }));
  });

  it("a line with no CRLF within 107 bytes is refused at the 108th", () => {
    const long = Buffer.from(`PROXY UNKNOWN ${"x".repeat(200)}\r\n`);
    assertRefusedAt(long, 107, "v1 header longer than 107 bytes");
  });

  it("garbage is refused at the first byte that rules the header out", () => {
    assertRefusedAt(Buffer.from("GET / HTTP/1.1\r\n"), 0, "not a PROXY protocol header");
    assertRefusedAt(hex("16 03 01 02 00 01"), 0, "not a PROXY protocol header"); // a TLS ClientHello
    assertRefusedAt(Buffer.from("PROXZ TCP4"), 4, "not a PROXY protocol header");
    assertRefusedAt(Buffer.from("proxy TCP4"), 0, "not a PROXY protocol header");
    assertRefusedAt(Buffer.from("\r\nGET /"), 2, "not a PROXY protocol header");
    assertRefusedAt(Buffer.from("PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n"), 6, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
    assertRefusedAt(Buffer.from("PROXY TCP5 1.2.3.4"), 9, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
    assertRefusedAt(Buffer.from("PROXYTCP4 1.2.3.4"), 5, "v1 expects a space after PROXY");
  });

  it("refuses bad addresses, ports, separators and line ends, each as soon as it shows", () => {
    const cases: [line: string, at: number, reason: string][] = [
      ["PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", 20, "v1 bad source address"],
      ["PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 16, "v1 bad source address"],
      ["PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", 19, "v1 bad source address"],
      ["PROXY TCP4 ::1 5.6.7.8 1 2\r\n", 11, "v1 bad source address"],
      ["PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", 20, "v1 bad source address"],
      ["PROXY TCP4 1111.2.3.4444444444 5.6.7.8 1 2\r\n", 26, "v1 bad source address"],
      ["PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", 19, "v1 bad destination address"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8\t1 2\r\n", 26, "v1 bad destination address"],
      ["PROXY TCP6 1.2.3.4 ::1 1 2\r\n", 18, "v1 bad source address"],
      ["PROXY TCP6 ::1 1:2:3:4:5:6:7:8:9 1 2\r\n", 32, "v1 bad destination address"],
      ["PROXY TCP6 ::1 1::2::3 1 2\r\n", 22, "v1 bad destination address"],
      ["PROXY TCP6 ::1 1::2: 1 2\r\n", 20, "v1 bad destination address"],
      ["PROXY TCP6 :1::2 ::1 1 2\r\n", 16, "v1 bad source address"],
      ["PROXY TCP6 1:2:3:4:5:6:7:8:: ::1 1 2\r\n", 29, "v1 bad source address"],
      ["PROXY TCP6 ::1%eth0 ::1 1 2\r\n", 14, "v1 bad source address"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", 28, "v1 bad source port"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 31, "v1 bad source port"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", 27, "v1 bad source port"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", 27, "v1 bad source port"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", 33, "v1 bad destination port"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 30, "v1 bad destination port"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", 29, "v1 bad destination port"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 30, "v1 line not ended by CRLF"],
      ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 31, "v1 line not ended by CRLF"],
      ["PROXY UNKNOWN\n", 13, "v1 line not ended by CRLF"],
      ["PROXY UNKNOWN x\rx\r\n", 16, "v1 line not ended by CRLF"],
      ["PROXY UNKNOWNX\r\n", 13, "v1 protocol is not TCP4, TCP6 or UNKNOWN"],
    ];
    for (const [line, at, reason] of cases) {
      assert.equal(Buffer.from(line)[at] !== undefined, true, line);
      assertRefusedAt(Buffer.from(line), at, reason);
    }
  });
});

describe("PROXY protocol v2: the specification's binary format", () => {
  it("the signature, then version 2 and a command, is what identifies v2", () => {
    assert.deepEqual(hex(SIGNATURE), Buffer.from("\r\n\r\n\0\r\nQUIT\n", "latin1"));
    assertIncremental(v2(0x21, 0x11, LOOPBACK_BLOCK), done(2, 28, loopback));
  });

  it("TCP over IPv4 and IPv6 carry addresses and ports in network order", () => {
    const block6 = "20010db8000000000000000000000001 000000000000000000000000000000ff 1f90 ffff";
    const six = { source: { ip: "2001:db8::1", port: 8080 }, destination: { ip: "::ff", port: 65535 } };
    assertIncremental(v2(0x21, 0x21, block6), done(2, 52, six));
    const mapped = "00000000000000000000ffff0a000001 00000000000000000000ffff0a000002 0001 0002";
    assertIncremental(v2(0x21, 0x21, mapped), done(2, 52, { source: { ip: "::ffff:10.0.0.1", port: 1 }, destination: { ip: "::ffff:10.0.0.2", port: 2 } }));
  });

  it("LOCAL: no addresses, whatever block and family come with it", () => {
    assertIncremental(v2(0x20, 0x00, ""), done(2, 16, undefined, "local"));
    assertIncremental(v2(0x20, 0x11, LOOPBACK_BLOCK), done(2, 28, undefined, "local"));
    assertIncremental(v2(0x20, 0x21, ""), done(2, 16, undefined, "local"));
  });

  it("UNSPEC, UDP and AF_UNIX fall back to no addresses; the block is skipped", () => {
    assertIncremental(v2(0x21, 0x00, ""), done(2, 16));
    assertIncremental(v2(0x21, 0x00, "0102030405"), done(2, 21));
    assertIncremental(v2(0x21, 0x12, LOOPBACK_BLOCK), done(2, 28));
    assertIncremental(v2(0x21, 0x22, "00".repeat(36)), done(2, 52));
    assertIncremental(v2(0x21, 0x31, "2f".repeat(216)), done(2, 232));
    assertIncremental(v2(0x21, 0x10, "00".repeat(12)), done(2, 28));
  });

  it("TLVs are skipped within the declared length", () => {
    const tlvs = [
      "01 0002 6832", // ALPN "h2"
      "02 0005 3132333435", // AUTHORITY "12345"
      "04 0000", // NOOP
      "05 0003 616263", // UNIQUE_ID
      "20 000f 01 00000000 21 0007 544c5376312e33", // SSL: client over TLS, verified, version "TLSv1.3"
      "e0 0001 ff", // custom range
    ].join(" ");
    assertIncremental(v2(0x21, 0x11, `${LOOPBACK_BLOCK} ${tlvs}`), done(2, 28 + hex(tlvs).length, loopback));
    // HAProxy's reg-tests: a valid AUTHORITY TLV, then one past the header, which is payload.
    const header = v2(0x21, 0x11, `${LOOPBACK_BLOCK} 02 0005 3132333435`);
    assertIncremental(header, done(2, 36, loopback), hex("02 0005 3534333231"));
  });

  it("refuses TLVs that do not fill the header exactly (HAProxy's reg-tests)", () => {
    // The length covers a TLV header but not all of its value...
    assert.deepEqual(parseProxyHeader(v2(0x21, 0x11, `${LOOPBACK_BLOCK} 02 000a 3132333435`)), invalid("v2 TLV overruns the header"));
    // ...or leaves a byte too few for another TLV.
    assert.deepEqual(parseProxyHeader(v2(0x21, 0x11, `${LOOPBACK_BLOCK} 02 0004 31323334 00`)), invalid("v2 TLV overruns the header"));
  });

  it("checks a CRC32C TLV over the header with the checksum zeroed", () => {
    assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283); // RFC 3720's check value
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720, B.4
    const zeroed = v2(0x21, 0x11, `${LOOPBACK_BLOCK} 03 0004 00000000 04 0001 00`);
    const header = Buffer.from(zeroed);
    header.writeUInt32BE(crc32c(zeroed), 31);
    assertIncremental(header, done(2, header.length, loopback));
    const corrupt = Buffer.from(header);
    corrupt[header.length - 1] = 1;
    assert.deepEqual(parseProxyHeader(corrupt), invalid("v2 CRC32C mismatch"));
    assert.deepEqual(parseProxyHeader(v2(0x21, 0x11, `${LOOPBACK_BLOCK} 03 0003 000000`)), invalid("v2 CRC32C TLV is not 4 bytes"));
  });

  it("refuses a wrong version or command, an unknown family or protocol, at that byte", () => {
    assertRefusedAt(v2(0x11, 0x11, LOOPBACK_BLOCK), 12, "v2 unsupported version 1");
    assertRefusedAt(v2(0x31, 0x11, LOOPBACK_BLOCK), 12, "v2 unsupported version 3");
    assertRefusedAt(v2(0x22, 0x11, LOOPBACK_BLOCK), 12, "v2 unknown command 2");
    assertRefusedAt(v2(0x2f, 0x11, LOOPBACK_BLOCK), 12, "v2 unknown command 15");
    assertRefusedAt(v2(0x21, 0x41, LOOPBACK_BLOCK), 13, "v2 unknown address family 4");
    assertRefusedAt(v2(0x21, 0x13, LOOPBACK_BLOCK), 13, "v2 unknown transport protocol 3");
    assertRefusedAt(Buffer.from("\r\n\r\n\0\r\nQUIT\r"), 11, "not a PROXY protocol header");
  });

  it("refuses an address block shorter than its family's, once the length is known", () => {
    assertRefusedAt(v2(0x21, 0x11, "7f000001 7f000001 002a"), 15, "v2 address length too short for AF_INET");
    assertRefusedAt(v2(0x21, 0x21, LOOPBACK_BLOCK), 15, "v2 address length too short for AF_INET6");
    assertRefusedAt(v2(0x21, 0x31, "00".repeat(108)), 15, "v2 address length too short for AF_UNIX");
  });

  it("refuses a declared length past PROXY_HEADER_MAX before the rest arrives", () => {
    const largest = v2(0x21, 0x11, `${LOOPBACK_BLOCK} 04 ${u16(PROXY_HEADER_MAX - 31)} ${"00".repeat(PROXY_HEADER_MAX - 31)}`);
    assert.equal(largest.length, PROXY_HEADER_MAX);
    assert.deepEqual(parseProxyHeader(largest), done(2, PROXY_HEADER_MAX, loopback));
    assertRefusedAt(v2(0x21, 0x11, LOOPBACK_BLOCK, PROXY_HEADER_MAX - 15), 15, `v2 header longer than ${PROXY_HEADER_MAX} bytes`);
    assertRefusedAt(v2(0x21, 0x00, "", 0xffff), 15, `v2 header longer than ${PROXY_HEADER_MAX} bytes`);
  });

  it("a caller's buffer of PROXY_HEADER_MAX bytes, once full, never parses as incomplete", () => {
    const full = Buffer.alloc(PROXY_HEADER_MAX, 0x20);
    for (const start of ["PROXY TCP4 ", "PROXY TCP6 ", "PROXY UNKNOWN ", "PROXY "]) {
      full.write(start, "latin1");
      assert.notEqual(parseProxyHeader(full).status, "incomplete", start);
    }
  });
});

describe("PROXY protocol encoding", () => {
  it("v1 lines", () => {
    const line = (s: string, d: string, v: 1 | 2 = 1) => encodeProxyHeader(v, { ip: s, port: 56324 }, { ip: d, port: 443 }).toString("latin1");
    assert.equal(line("192.168.0.1", "192.168.0.11"), "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    assert.equal(line("::ffff:192.168.0.1", "::ffff:192.168.0.11"), "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    assert.equal(line("192.168.0.1", "::ffff:192.168.0.11"), "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    assert.equal(line("2001:db8::1", "::1"), "PROXY TCP6 2001:db8::1 ::1 56324 443\r\n");
    assert.equal(line("2001:DB8:0:0::1", "fe80::1%eth0"), "PROXY TCP6 2001:db8::1 fe80::1 56324 443\r\n");
    assert.equal(line("10.0.0.1", "::1"), "PROXY TCP6 ::ffff:10.0.0.1 ::1 56324 443\r\n");
    for (const bad of ["", "localhost", "1.2.3.256", "::1::", "10.0.0.1%eth0", "fe80::1%", "１.2.3.4", "ĳ::1"]) {
      assert.equal(line(bad, "10.0.0.1"), "PROXY UNKNOWN\r\n", bad);
    }
    for (const port of [-1, 65536, 1.5, Number.NaN]) {
      assert.equal(encodeProxyHeader(1, { ip: "10.0.0.1", port }, { ip: "10.0.0.2", port: 1 }).toString(), "PROXY UNKNOWN\r\n");
    }
  });

  it("v2 headers, byte for byte", () => {
    const enc = (s: string, sp: number, d: string, dp: number) => encodeProxyHeader(2, { ip: s, port: sp }, { ip: d, port: dp });
    assert.deepEqual(enc("127.0.0.1", 42, "127.0.0.1", 1337), v2(0x21, 0x11, LOOPBACK_BLOCK));
    assert.deepEqual(enc("::ffff:192.168.0.1", 56324, "192.168.0.11", 443), v2(0x21, 0x11, "c0a80001 c0a8000b dc04 01bb"));
    assert.deepEqual(
      enc("2001:db8::1", 0, "::1", 65535),
      v2(0x21, 0x21, "20010db8000000000000000000000001 00000000000000000000000000000001 0000 ffff"),
    );
    assert.deepEqual(
      enc("10.0.0.1", 1, "fe80::a:b:c%2", 2),
      v2(0x21, 0x21, "00000000000000000000ffff0a000001 fe800000000000000000000a000b000c 0001 0002"),
    );
    assert.deepEqual(enc("not an address", 1, "10.0.0.1", 2), v2(0x21, 0x00, ""));
  });

  it("LOCAL headers for the balancer's own connections", () => {
    assert.deepEqual(encodeLocalHeader(2), v2(0x20, 0x00, ""));
    assert.equal(encodeLocalHeader(1).toString(), "PROXY UNKNOWN\r\n");
    assert.deepEqual(parseProxyHeader(encodeLocalHeader(2)), done(2, 16, undefined, "local"));
  });

  it("round trips through the parser, every prefix incomplete until the last byte", () => {
    const pairs: [string, string, string, string][] = [
      // source, destination as given; as parsed back
      ["192.168.0.1", "10.0.0.1", "192.168.0.1", "10.0.0.1"],
      ["::ffff:192.168.0.1", "::ffff:10.0.0.1", "192.168.0.1", "10.0.0.1"],
      ["0.0.0.0", "255.255.255.255", "0.0.0.0", "255.255.255.255"],
      ["::1", "2001:db8::8:800:200c:417a", "::1", "2001:db8::8:800:200c:417a"],
      ["::", "1:0:0:2:0:0:0:3", "::", "1:0:0:2::3"],
      ["1.2.3.4", "::1", "::ffff:1.2.3.4", "::1"],
      ["::1.2.3.4", "fe80::1%lo", "::1.2.3.4", "fe80::1"],
      ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:0:0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:0.0.0.0"],
    ];
    for (const version of [1, 2] as const) {
      for (const [s, d, ps, pd] of pairs) {
        const header = encodeProxyHeader(version, { ip: s, port: 0 }, { ip: d, port: 65535 });
        const expected = done(version, header.length, { source: { ip: ps, port: 0 }, destination: { ip: pd, port: 65535 } });
        assertIncremental(header, expected);
        for (const ip of [ps, pd]) assert.equal(new net.SocketAddress({ address: ip, family: net.isIPv4(ip) ? "ipv4" : "ipv6" }).address, ip);
      }
    }
  });
});
