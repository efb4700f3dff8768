import { CHAR_CLASS, DIGIT, IPV4_CHAR, IPV4_TEXT_MAX, IPV6_CHAR, IPV6_TEXT_MAX, parseIPv4, parseIPv6, writeIPv4, writeIPv6, writeNumber } from "./ip-bytes.ts";

/**
 * The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy's
 * doc/proxy-protocol.txt specifies it: the header a proxy sends first on a connection so
 * that the server learns whom the connection is really from.
 *
 * Encoding runs once per backend connection and parsing once per accepted connection, so
 * neither allocates beyond what it returns: addresses pass through scratch space kept per
 * thread (like relay.ts's read buffer), text is read and written byte by byte, and there
 * are no regular expressions.
 */

/** Where a connection comes from or goes to, as node:net reports it ("10.0.0.1", "::1"). */
export interface ProxyEndpoint {
  ip: string;
  port: number;
}

/** A complete, valid header. */
export interface ProxyHeader {
  readonly status: "done";
  readonly version: 1 | 2;
  /** The header's length: the client's own bytes start right after it. */
  readonly consumed: number;
  /**
   * "local": the sending proxy opened the connection itself (a health check). v1 cannot
   * say so; its UNKNOWN is "proxy" without addresses.
   */
  readonly command: "proxy" | "local";
  /**
   * Absent when the header carries no usable address (v1 UNKNOWN, v2 LOCAL, or a family
   * other than TCP over IPv4/IPv6): the connection's real peer stands.
   */
  readonly source?: ProxyEndpoint | undefined;
  readonly destination?: ProxyEndpoint | undefined;
}

export type ProxyParseResult =
  | { readonly status: "incomplete" }
  | { readonly status: "invalid"; readonly reason: string }
  | ProxyHeader;

/** The longest v1 line, CRLF included (the specification's worst case). */
const V1_MAX = 107;
/** Signature, version and command, family and protocol, length. */
const V2_FIXED = 16;
/**
 * The most a caller has to buffer before parseProxyHeader is no longer "incomplete": a
 * full buffer this size always parses as done or invalid. The cap is on v2, whose length
 * field allows far more. The bytes are held per connection until its header is complete,
 * so the cap bounds what an upstream can pin; it leaves room for the largest address block
 * (AF_UNIX) and the registered TLVs at sizes seen in practice, a client certificate
 * included, which is the only one that grows large.
 */
export const PROXY_HEADER_MAX = 4096;
const V2_MAX_LENGTH = PROXY_HEADER_MAX - V2_FIXED;

const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;

const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const V1_SIGNATURE = ascii("PROXY");
const V2_SIGNATURE = Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
const V1_TCP4 = ascii("PROXY TCP4 ");
const V1_TCP6 = ascii("PROXY TCP6 ");
const V1_UNKNOWN_LINE = ascii("PROXY UNKNOWN\r\n");
// Protocol words as they follow "PROXY " on a v1 line.
const WORD_TCP4 = V1_TCP4.subarray(6);
const WORD_TCP6 = V1_TCP6.subarray(6);
const WORD_UNKNOWN = ascii("UNKNOWN");

const V2_PROXY = 0x21; // version 2, command PROXY
const V2_LOCAL = 0x20; // version 2, command LOCAL
const TCP_OVER_IPV4 = 0x11;
const TCP_OVER_IPV6 = 0x21;
/** Address block length by v2 family (UNSPEC, INET, INET6, UNIX) when the protocol is set. */
const ADDRESS_LENGTH = [0, 12, 36, 216] as const;
const PP2_TYPE_CRC32C = 0x03;

const CRC32C_TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  CRC32C_TABLE[n] = c >>> 0;
}

// Scratch space, per thread. `addresses` holds a source at 0 and a destination at 16, as
// IPv6 (IPv4 mapped) when encoding; `text` holds a v1 line being written or an address
// being formatted; `chars` holds an address string's characters while it is parsed.
const addresses = Buffer.allocUnsafeSlow(32);
const text = Buffer.allocUnsafeSlow(V1_MAX);
const chars = new Uint8Array(IPV6_TEXT_MAX);

// ---- Encoding -------------------------------------------------------------------------

/**
 * The header announcing a connection from `source` to `destination`, in one Buffer.
 * Both sides IPv4, or IPv4-mapped IPv6, go as TCP over IPv4 (what backends expect from an
 * IPv4 client on a dual-stack listener); otherwise as TCP over IPv6, an IPv4 side mapped.
 * An address that is neither (a closed socket reports none) or a bad port gives the
 * header for an unknown connection: v1 UNKNOWN, v2 PROXY over AF_UNSPEC. A scope
 * ("fe80::1%eth0") is dropped: it means nothing on the backend's host.
 */
export function encodeProxyHeader(version: 1 | 2, source: ProxyEndpoint, destination: ProxyEndpoint): Buffer {
  const known = storeAddress(source.ip, 0) && storeAddress(destination.ip, 16) && isPort(source.port) && isPort(destination.port);
  if (!known) return version === 2 ? v2Unspecified(V2_PROXY) : Buffer.from(V1_UNKNOWN_LINE);
  const ipv4 = isMappedIPv4(0) && isMappedIPv4(16);
  return version === 2 ? encodeV2(ipv4, source.port, destination.port) : encodeV1(ipv4, source.port, destination.port);
}

/**
 * The header of a connection the balancer opens for itself, such as a health check: v2
 * LOCAL, so the backend uses the connection's real addresses. v1 has no such command and
 * gets UNKNOWN, which the specification discourages for connections expected to succeed;
 * prefer v2 or encodeProxyHeader with the connection's own addresses.
 */
export function encodeLocalHeader(version: 1 | 2): Buffer {
  return version === 2 ? v2Unspecified(V2_LOCAL) : Buffer.from(V1_UNKNOWN_LINE);
}

function encodeV1(ipv4: boolean, sourcePort: number, destinationPort: number): Buffer {
  text.set(ipv4 ? V1_TCP4 : V1_TCP6, 0);
  let pos = V1_TCP4.length;
  pos = ipv4 ? writeIPv4(text, pos, addresses, 12) : writeIPv6(text, pos, addresses, 0);
  text[pos++] = SPACE;
  pos = ipv4 ? writeIPv4(text, pos, addresses, 28) : writeIPv6(text, pos, addresses, 16);
  text[pos++] = SPACE;
  pos = writeNumber(text, pos, sourcePort, 10);
  text[pos++] = SPACE;
  pos = writeNumber(text, pos, destinationPort, 10);
  text[pos++] = CR;
  text[pos++] = LF;
  const out = Buffer.allocUnsafe(pos);
  text.copy(out, 0, 0, pos);
  return out;
}

function encodeV2(ipv4: boolean, sourcePort: number, destinationPort: number): Buffer {
  const length = ipv4 ? ADDRESS_LENGTH[1] : ADDRESS_LENGTH[2];
  const out = Buffer.allocUnsafe(V2_FIXED + length);
  out.set(V2_SIGNATURE, 0);
  out[12] = V2_PROXY;
  out[13] = ipv4 ? TCP_OVER_IPV4 : TCP_OVER_IPV6;
  out[14] = 0;
  out[15] = length;
  if (ipv4) {
    addresses.copy(out, V2_FIXED, 12, 16);
    addresses.copy(out, V2_FIXED + 4, 28, 32);
  } else addresses.copy(out, V2_FIXED);
  out.writeUInt16BE(sourcePort, V2_FIXED + length - 4);
  out.writeUInt16BE(destinationPort, V2_FIXED + length - 2);
  return out;
}

/** A v2 header without addresses. */
function v2Unspecified(versionCommand: number): Buffer {
  const out = Buffer.alloc(V2_FIXED);
  out.set(V2_SIGNATURE, 0);
  out[12] = versionCommand;
  return out;
}

function isPort(port: number): boolean {
  return Number.isInteger(port) && port >= 0 && port <= 0xffff;
}

/** Parses an address string into addresses[o, o + 16) as IPv6, IPv4 mapped; false if it is neither. */
function storeAddress(ip: string, o: number): boolean {
  if (typeof ip !== "string") return false;
  let end = ip.indexOf("%");
  if (end < 0) end = ip.length;
  else if (end === ip.length - 1) return false;
  if (end > IPV6_TEXT_MAX) return false;
  for (let i = 0; i < end; i++) {
    const c = ip.charCodeAt(i);
    if (c > 0x7f) return false;
    chars[i] = c;
  }
  if (end === ip.length && parseIPv4(chars, 0, end, addresses, o + 12)) {
    addresses.fill(0, o, o + 10);
    addresses[o + 10] = 0xff;
    addresses[o + 11] = 0xff;
    return true;
  }
  return parseIPv6(chars, 0, end, addresses, o);
}

function isMappedIPv4(o: number): boolean {
  for (let i = o; i < o + 10; i++) if (addresses[i] !== 0) return false;
  return addresses[o + 10] === 0xff && addresses[o + 11] === 0xff;
}

// ---- Parsing --------------------------------------------------------------------------

const INCOMPLETE: ProxyParseResult = Object.freeze({ status: "incomplete" });
const invalid = (reason: string): ProxyParseResult => Object.freeze({ status: "invalid", reason });
const NOT_PROXY = invalid("not a PROXY protocol header");
const V1_TOO_LONG = invalid(`v1 header longer than ${V1_MAX} bytes`);
const V1_NO_SPACE = invalid("v1 expects a space after PROXY");
const V1_BAD_PROTOCOL = invalid("v1 protocol is not TCP4, TCP6 or UNKNOWN");
const V1_BAD_SOURCE = invalid("v1 bad source address");
const V1_BAD_DESTINATION = invalid("v1 bad destination address");
const V1_BAD_SOURCE_PORT = invalid("v1 bad source port");
const V1_BAD_DESTINATION_PORT = invalid("v1 bad destination port");
const V1_NO_CRLF = invalid("v1 line not ended by CRLF");
const V2_TOO_LONG = invalid(`v2 header longer than ${PROXY_HEADER_MAX} bytes`);
const V2_SHORT = [undefined, ...["AF_INET", "AF_INET6", "AF_UNIX"].map((f) => invalid(`v2 address length too short for ${f}`))];
const V2_TLV_OVERRUN = invalid("v2 TLV overruns the header");
const V2_CRC_LENGTH = invalid("v2 CRC32C TLV is not 4 bytes");
const V2_CRC_MISMATCH = invalid("v2 CRC32C mismatch");

/** Scanning ran out of bytes. */
const MORE = -1;
/** Scanning met a byte that cannot be there. */
const BAD = -2;

/**
 * Reads the header at the start of `data`, of which the first `length` bytes have arrived.
 * Called again with more bytes while "incomplete"; "invalid" comes at the first byte that
 * rules a header out, so a client that does not speak the protocol is refused at once.
 * Only from trusted upstreams: the header replaces the connection's real peer.
 */
export function parseProxyHeader(data: Uint8Array, length: number = data.length): ProxyParseResult {
  const n = Math.min(length, data.length);
  if (!(n > 0)) return INCOMPLETE;
  const first = data[0];
  const signature = first === V1_SIGNATURE[0] ? V1_SIGNATURE : first === V2_SIGNATURE[0] ? V2_SIGNATURE : null;
  if (signature === null) return NOT_PROXY;
  const upTo = n < signature.length ? n : signature.length;
  for (let i = 1; i < upTo; i++) if (data[i] !== signature[i]) return NOT_PROXY;
  if (n <= signature.length) return INCOMPLETE;
  return signature === V1_SIGNATURE ? parseV1(data, n) : parseV2(data, n);
}

function parseV1(data: Uint8Array, n: number): ProxyParseResult {
  // Past V1_MAX bytes without a CRLF the line is refused rather than awaited.
  const end = n < V1_MAX ? n : V1_MAX;
  const more = n < V1_MAX ? INCOMPLETE : V1_TOO_LONG;
  if (data[5] !== SPACE) return V1_NO_SPACE;
  let family = 4;
  let i = matchWord(data, 6, end, WORD_TCP4);
  if (i === BAD) {
    family = 6;
    i = matchWord(data, 6, end, WORD_TCP6);
  }
  if (i === BAD) {
    i = matchWord(data, 6, end, WORD_UNKNOWN);
    if (i >= 0) return unknownTail(data, i, end, more);
  }
  if (i === BAD) return V1_BAD_PROTOCOL;
  if (i === MORE) return more;

  const cls = family === 4 ? IPV4_CHAR : IPV6_CHAR;
  const textMax = family === 4 ? IPV4_TEXT_MAX : IPV6_TEXT_MAX;
  const parseAddress = family === 4 ? parseIPv4 : parseIPv6;
  let j = tokenEnd(data, i, end, cls, textMax);
  if (j === MORE) return more;
  if (j === BAD || j === i || data[j] !== SPACE || !parseAddress(data, i, j, addresses, 0)) return V1_BAD_SOURCE;
  i = j + 1;
  j = tokenEnd(data, i, end, cls, textMax);
  if (j === MORE) return more;
  if (j === BAD || j === i || data[j] !== SPACE || !parseAddress(data, i, j, addresses, 16)) return V1_BAD_DESTINATION;
  i = j + 1;
  j = portEnd(data, i, end);
  if (j === MORE) return more;
  if (j === BAD || data[j] !== SPACE) return V1_BAD_SOURCE_PORT;
  const sourcePort = readDecimal(data, i, j);
  i = j + 1;
  j = portEnd(data, i, end);
  if (j === MORE) return more;
  if (j !== BAD && data[j] === LF) return V1_NO_CRLF;
  if (j === BAD || data[j] !== CR) return V1_BAD_DESTINATION_PORT;
  const destinationPort = readDecimal(data, i, j);
  if (j + 1 >= end) return more;
  if (data[j + 1] !== LF) return V1_NO_CRLF;
  const ipv4 = family === 4;
  return done(1, j + 2, "proxy", { ip: formatIP(ipv4, addresses, 0), port: sourcePort }, { ip: formatIP(ipv4, addresses, 16), port: destinationPort });
}

/** After "UNKNOWN": CRLF, or a space and anything up to CRLF (which receivers ignore). */
function unknownTail(data: Uint8Array, i: number, end: number, more: ProxyParseResult): ProxyParseResult {
  if (i >= end) return more;
  if (data[i] === SPACE) {
    i++;
    while (i < end && data[i] !== CR && data[i] !== LF) i++;
    if (i >= end) return more;
  }
  if (data[i] === LF) return V1_NO_CRLF;
  if (data[i] !== CR) return V1_BAD_PROTOCOL;
  if (i + 1 >= end) return more;
  if (data[i + 1] !== LF) return V1_NO_CRLF;
  return done(1, i + 2, "proxy", undefined, undefined);
}

/** The index after `word` at data[i], MORE if data ends inside it, BAD on a mismatch. */
function matchWord(data: Uint8Array, i: number, end: number, word: Uint8Array): number {
  for (let k = 0; k < word.length; k++, i++) {
    if (i >= end) return MORE;
    if (data[i] !== word[k]) return BAD;
  }
  return i;
}

/** The index of the first byte at or after i not of class `cls`; BAD once longer than max. */
function tokenEnd(data: Uint8Array, i: number, end: number, cls: number, max: number): number {
  for (let j = i; j < end; j++) {
    if ((CHAR_CLASS[data[j]!]! & cls) === 0) return j;
    if (j - i >= max) return BAD;
  }
  return MORE;
}

/** Like tokenEnd for a port: refused as soon as it has a leading zero or exceeds 65535. */
function portEnd(data: Uint8Array, i: number, end: number): number {
  let value = 0;
  for (let j = i; j < end; j++) {
    const c = data[j]!;
    if ((CHAR_CLASS[c]! & DIGIT) === 0) return j === i ? BAD : j;
    if (j > i && value === 0) return BAD;
    value = value * 10 + (c - 0x30);
    if (value > 0xffff) return BAD;
  }
  return MORE;
}

function readDecimal(data: Uint8Array, i: number, end: number): number {
  let value = 0;
  for (; i < end; i++) value = value * 10 + (data[i]! - 0x30);
  return value;
}

function parseV2(data: Uint8Array, n: number): ProxyParseResult {
  const versionCommand = data[12]!;
  if (versionCommand >> 4 !== 2) return invalid(`v2 unsupported version ${versionCommand >> 4}`);
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid(`v2 unknown command ${command}`);
  if (n <= 13) return INCOMPLETE;
  const familyProtocol = data[13]!;
  const family = familyProtocol >> 4;
  const protocol = familyProtocol & 0x0f;
  if (family > 3) return invalid(`v2 unknown address family ${family}`);
  if (protocol > 2) return invalid(`v2 unknown transport protocol ${protocol}`);
  if (n < V2_FIXED) return INCOMPLETE;
  const length = (data[14]! << 8) | data[15]!;
  if (length > V2_MAX_LENGTH) return V2_TOO_LONG;
  // LOCAL ignores the block whatever its family says, and without a transport protocol
  // the addresses' layout is unknown: either way the block is skipped whole, unread.
  const addressLength = command === 1 && protocol !== 0 ? ADDRESS_LENGTH[family as 0 | 1 | 2 | 3] : 0;
  if (addressLength > length) return V2_SHORT[family]!;
  const total = V2_FIXED + length;
  if (n < total) return INCOMPLETE;
  if (addressLength > 0) {
    const bad = checkTlvs(data, V2_FIXED + addressLength, total);
    if (bad !== null) return bad;
  }
  if (command === 0) return done(2, total, "local", undefined, undefined);
  if (familyProtocol === TCP_OVER_IPV4 || familyProtocol === TCP_OVER_IPV6) {
    const ipv4 = familyProtocol === TCP_OVER_IPV4;
    const size = ipv4 ? 4 : 16;
    const ports = V2_FIXED + 2 * size;
    const source = { ip: formatIP(ipv4, data, V2_FIXED), port: readU16(data, ports) };
    return done(2, total, "proxy", source, { ip: formatIP(ipv4, data, V2_FIXED + size), port: readU16(data, ports + 2) });
  }
  // UDP, AF_UNIX and unspecified protocols: the addresses are ignored, as the
  // specification lets receivers do with the combinations they do not implement.
  return done(2, total, "proxy", undefined, undefined);
}

/**
 * The TLVs between the addresses and the header's end must fill it exactly. Their
 * contents are skipped, except a CRC32C, which a receiver that supports it must check.
 */
function checkTlvs(data: Uint8Array, i: number, total: number): ProxyParseResult | null {
  while (i < total) {
    if (i + 3 > total) return V2_TLV_OVERRUN;
    const type = data[i]!;
    const value = i + 3;
    i = value + readU16(data, i + 1);
    if (i > total) return V2_TLV_OVERRUN;
    if (type === PP2_TYPE_CRC32C) {
      if (i - value !== 4) return V2_CRC_LENGTH;
      const sent = ((data[value]! << 24) | (data[value + 1]! << 16) | (data[value + 2]! << 8) | data[value + 3]!) >>> 0;
      if (crc32c(data, total, value) !== sent) return V2_CRC_MISMATCH;
    }
  }
  return null;
}

/** CRC32C of data[0, total) with the checksum's own four bytes, at `zeroAt`, taken as zero. */
function crc32c(data: Uint8Array, total: number, zeroAt: number): number {
  let crc = 0xffffffff;
  for (let i = 0; i < total; i++) {
    const byte = i >= zeroAt && i < zeroAt + 4 ? 0 : data[i]!;
    crc = CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function readU16(data: Uint8Array, i: number): number {
  return (data[i]! << 8) | data[i + 1]!;
}

function done(version: 1 | 2, consumed: number, command: "proxy" | "local", source: ProxyEndpoint | undefined, destination: ProxyEndpoint | undefined): ProxyHeader {
  return { status: "done", version, consumed, command, source, destination };
}

function formatIP(ipv4: boolean, src: Uint8Array, o: number): string {
  return text.toString("latin1", 0, ipv4 ? writeIPv4(text, 0, src, o) : writeIPv6(text, 0, src, o));
}
