import { IPV6_TEXT_MAX, parseIPv4, parseIPv6 } from "./ip-bytes.ts";
import { addresses, INCOMPLETE, invalid, type ProxyEndpoint, type ProxyParseResult } from "./proxy-protocol-shared.ts";
import { encodeV1, parseV1, V1_SIGNATURE, V1_UNKNOWN_LINE } from "./proxy-protocol-v1.ts";
import { encodeV2, parseV2, V2_LOCAL, V2_PROXY, V2_SIGNATURE, v2Unspecified } from "./proxy-protocol-v2.ts";

export { PROXY_HEADER_MAX, type ProxyEndpoint, type ProxyHeader, type ProxyParseResult } from "./proxy-protocol-shared.ts";

/**
 * The PROXY protocol, versions 1 (text) and 2 (binary), as HAProxy's
 * doc/proxy-protocol.txt specifies it: the header a proxy sends first on a connection so
 * that the server learns whom the connection is really from.
 *
 * Encoding runs once per backend connection and parsing once per accepted connection, so
 * neither allocates beyond what it returns: addresses pass through scratch space kept per
 * thread (like relay.ts's read buffer), text is read and written byte by byte, and there
 * are no regular expressions.
 *
 * This file is the entry: addresses in, the version's codec chosen. The text codec is
 * proxy-protocol-v1.ts, the binary one proxy-protocol-v2.ts.
 */

// An address string's characters while it is parsed (scratch, per thread).
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

const NOT_PROXY = invalid("not a PROXY protocol header");

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
