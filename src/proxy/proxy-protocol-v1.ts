import { ascii, CHAR_CLASS, DIGIT, IPV4_CHAR, IPV4_TEXT_MAX, IPV6_CHAR, IPV6_TEXT_MAX, parseIPv4, parseIPv6, writeIPv4, writeIPv6, writeNumber } from "./ip-bytes.ts";
import { addresses, done, formatIP, INCOMPLETE, invalid, text, V1_MAX, type ProxyParseResult } from "./proxy-protocol-shared.ts";

/**
 * PROXY protocol version 1: one line of text, "PROXY TCP4 <source> <destination> <source
 * port> <destination port>\r\n", read and written byte by byte, without regular
 * expressions (proxy-protocol.ts is the entry).
 */

const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;

export const V1_SIGNATURE = ascii("PROXY");
const V1_TCP4 = ascii("PROXY TCP4 ");
const V1_TCP6 = ascii("PROXY TCP6 ");
export const V1_UNKNOWN_LINE = ascii("PROXY UNKNOWN\r\n");
// Protocol words as they follow "PROXY " on a v1 line.
const WORD_TCP4 = V1_TCP4.subarray(6);
const WORD_TCP6 = V1_TCP6.subarray(6);
const WORD_UNKNOWN = ascii("UNKNOWN");

const V1_TOO_LONG = invalid(`v1 header longer than ${V1_MAX} bytes`);
const V1_NO_SPACE = invalid("v1 expects a space after PROXY");
const V1_BAD_PROTOCOL = invalid("v1 protocol is not TCP4, TCP6 or UNKNOWN");
const V1_BAD_SOURCE = invalid("v1 bad source address");
const V1_BAD_DESTINATION = invalid("v1 bad destination address");
const V1_BAD_SOURCE_PORT = invalid("v1 bad source port");
const V1_BAD_DESTINATION_PORT = invalid("v1 bad destination port");
const V1_NO_CRLF = invalid("v1 line not ended by CRLF");

/** Scanning ran out of bytes. */
const MORE = -1;
/** Scanning met a byte that cannot be there. */
const BAD = -2;

/** The v1 line for addresses in the scratch space (proxy-protocol-shared.ts). */
export function encodeV1(ipv4: boolean, sourcePort: number, destinationPort: number): Buffer {
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

/** The v1 line at the start of data[0, n), whose signature ("PROXY") is already checked. */
export function parseV1(data: Uint8Array, n: number): ProxyParseResult {
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
