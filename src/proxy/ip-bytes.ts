/**
 * IP addresses between text and bytes, for the PROXY protocol codec (proxy-protocol.ts):
 * strict parsers of dotted quads and IPv6 text into a byte array, and formatters of 4 or 16
 * bytes into the text node:net prints, all working in caller-given buffers so that no
 * string or array is made per address beyond the result.
 */

export const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const COLON = 0x3a;
const DOT = 0x2e;

// Byte classes for scanning v1 text.
export const DIGIT = 1;
export const IPV4_CHAR = 2;
export const IPV6_CHAR = 4;
export const CHAR_CLASS = new Uint8Array(256);
for (const c of ascii("0123456789")) CHAR_CLASS[c] = DIGIT | IPV4_CHAR | IPV6_CHAR;
for (const c of ascii(".")) CHAR_CLASS[c] = IPV4_CHAR | IPV6_CHAR;
for (const c of ascii(":abcdefABCDEF")) CHAR_CLASS[c] = IPV6_CHAR;
const HEX_VALUE = new Int8Array(256).fill(-1);
for (const c of ascii("0123456789abcdefABCDEF")) HEX_VALUE[c] = parseInt(String.fromCharCode(c), 16);
const DIGITS = ascii("0123456789abcdef");
/** The longest IPv4 and IPv6 text ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"). */
export const IPV4_TEXT_MAX = 15;
export const IPV6_TEXT_MAX = 45;


/** A dotted quad at src[i, end) into out[o, o + 4): decimal parts 0-255, no leading zeros. */
export function parseIPv4(src: Uint8Array, i: number, end: number, out: Uint8Array, o: number): boolean {
  let part = 0;
  let value = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = src[i]!;
    if (c === DOT) {
      if (digits === 0 || part === 3) return false;
      out[o + part++] = value;
      value = 0;
      digits = 0;
    } else if ((CHAR_CLASS[c]! & DIGIT) !== 0) {
      if (digits > 0 && value === 0) return false;
      value = value * 10 + (c - 0x30);
      if (value > 255) return false;
      digits++;
    } else return false;
  }
  if (digits === 0 || part !== 3) return false;
  out[o + 3] = value;
  return true;
}

/**
 * IPv6 text at src[i, end) into out[o, o + 16): groups of one to four hex digits, at most
 * one "::" standing for at least one zero group, and optionally a dotted quad for the last
 * two groups (what inet_pton accepts, and net.isIPv6 without a scope).
 */
export function parseIPv6(src: Uint8Array, i: number, end: number, out: Uint8Array, o: number): boolean {
  out.fill(0, o, o + 16);
  let words = 0;
  let gap = -1;
  let value = 0;
  let digits = 0;
  let groupStart = i;
  if (i < end && src[i] === COLON) {
    if (i + 1 >= end || src[i + 1] !== COLON) return false;
    i++;
  }
  for (; i < end; i++) {
    const c = src[i]!;
    const hex = HEX_VALUE[c]!;
    if (hex >= 0) {
      if (digits === 4) return false;
      value = (value << 4) | hex;
      digits++;
    } else if (c === COLON) {
      if (digits === 0) {
        if (gap >= 0) return false;
        gap = words;
      } else {
        if (i + 1 >= end || words === 8) return false;
        out[o + 2 * words] = value >> 8;
        out[o + 2 * words + 1] = value & 0xff;
        words++;
        value = 0;
        digits = 0;
      }
      groupStart = i + 1;
    } else if (c === DOT) {
      if (words > 6 || !parseIPv4(src, groupStart, end, out, o + 2 * words)) return false;
      words += 2;
      digits = 0;
      break;
    } else return false;
  }
  if (digits > 0) {
    if (words === 8) return false;
    out[o + 2 * words] = value >> 8;
    out[o + 2 * words + 1] = value & 0xff;
    words++;
  }
  if (gap < 0) return words === 8;
  if (words === 8) return false;
  // Move the groups after "::" to the end; the zeros between them are the gap.
  const shift = 2 * (8 - words);
  for (let k = o + 2 * words - 1; k >= o + 2 * gap; k--) {
    out[k + shift] = out[k]!;
    out[k] = 0;
  }
  return true;
}

/** src[o, o + 4) as a dotted quad into out at pos; returns the position after it. */
export function writeIPv4(out: Uint8Array, pos: number, src: Uint8Array, o: number): number {
  for (let k = 0; k < 4; k++) {
    if (k > 0) out[pos++] = DOT;
    pos = writeNumber(out, pos, src[o + k]!, 10);
  }
  return pos;
}

/**
 * src[o, o + 16) as IPv6 text the way node:net prints addresses (libuv's inet_ntop):
 * lower case, no leading zeros, the longest run of two or more zero groups (the first
 * on a tie) as "::", and a dotted quad after "::" and "::ffff:".
 */
export function writeIPv6(out: Uint8Array, pos: number, src: Uint8Array, o: number): number {
  let bestBase = -1;
  let bestLength = 0;
  let base = -1;
  for (let w = 0; w < 8; w++) {
    if (src[o + 2 * w] === 0 && src[o + 2 * w + 1] === 0) {
      if (base < 0) base = w;
      if (w - base + 1 > bestLength) {
        bestBase = base;
        bestLength = w - base + 1;
      }
    } else base = -1;
  }
  if (bestLength < 2) bestBase = -1;
  const embedsIPv4 = bestBase === 0 && (bestLength === 6 || (bestLength === 5 && src[o + 10] === 0xff && src[o + 11] === 0xff));
  for (let w = 0; w < 8; w++) {
    if (bestBase >= 0 && w >= bestBase && w < bestBase + bestLength) {
      if (w === bestBase) out[pos++] = COLON;
      continue;
    }
    if (w > 0) out[pos++] = COLON;
    if (w === 6 && embedsIPv4) return writeIPv4(out, pos, src, o + 12);
    pos = writeNumber(out, pos, readU16(src, o + 2 * w), 16);
  }
  if (bestBase >= 0 && bestBase + bestLength === 8) out[pos++] = COLON;
  return pos;
}

/** `value` (below 2^16) in `base` (10 or 16, lower case) without leading zeros. */
export function writeNumber(out: Uint8Array, pos: number, value: number, base: number): number {
  let end = pos + 1;
  for (let v = value; v >= base; v = (v / base) | 0) end++;
  for (let i = end - 1; i >= pos; i--, value = (value / base) | 0) out[i] = DIGITS[value % base]!;
  return end;
}

/** The big-endian 16-bit number at data[i, i + 2). */
export function readU16(data: Uint8Array, i: number): number {
  return (data[i]! << 8) | data[i + 1]!;
}
