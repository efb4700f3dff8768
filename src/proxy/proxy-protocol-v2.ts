import { readU16 } from "./ip-bytes.ts";
import { addresses, done, formatIP, INCOMPLETE, invalid, PROXY_HEADER_MAX, type ProxyParseResult } from "./proxy-protocol-shared.ts";

/**
 * PROXY protocol version 2: a binary header, a fixed part then address block and TLVs,
 * checked by CRC32C when the sender includes one (proxy-protocol.ts is the entry).
 */

/** Signature, version and command, family and protocol, length. */
const V2_FIXED = 16;
const V2_MAX_LENGTH = PROXY_HEADER_MAX - V2_FIXED;

export const V2_SIGNATURE = Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
export const V2_PROXY = 0x21; // version 2, command PROXY
export const V2_LOCAL = 0x20; // version 2, command LOCAL
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

const V2_TOO_LONG = invalid(`v2 header longer than ${PROXY_HEADER_MAX} bytes`);
const V2_SHORT = [undefined, ...["AF_INET", "AF_INET6", "AF_UNIX"].map((f) => invalid(`v2 address length too short for ${f}`))];
const V2_TLV_OVERRUN = invalid("v2 TLV overruns the header");
const V2_CRC_LENGTH = invalid("v2 CRC32C TLV is not 4 bytes");
const V2_CRC_MISMATCH = invalid("v2 CRC32C mismatch");

/** The v2 header for addresses in the scratch space (proxy-protocol-shared.ts). */
export function encodeV2(ipv4: boolean, sourcePort: number, destinationPort: number): Buffer {
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
export function v2Unspecified(versionCommand: number): Buffer {
  const out = Buffer.alloc(V2_FIXED);
  out.set(V2_SIGNATURE, 0);
  out[12] = versionCommand;
  return out;
}

/** The v2 header at the start of data[0, n), whose 12-byte signature is already checked. */
export function parseV2(data: Uint8Array, n: number): ProxyParseResult {
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
