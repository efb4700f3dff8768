/**
 * A client's IP address as the 32-bit words ip_hash hashes (ip-hash.ts), parsed without
 * allocating, once per connection. IPv4 and IPv4-mapped IPv6 give the same single word,
 * so a client is one client whichever way its address is written.
 *
 * The one place that knows IPv4-mapped IPv6: the data plane's text form of an address
 * (`unmapped`) asks the same parser, so the access log, the PROXY header sent on and
 * ip_hash agree on who a client is.
 */

// unmapped()'s scratch, per thread (each worker loads its own copy of this module): it
// runs on every connection, and allocates nothing but its result.
const unmappedWords = new Uint32Array(4);
const unmappedGroups = new Uint16Array(8);

/**
 * `ip` as the data plane keeps an address: an IPv4-mapped IPv6 one as the IPv4 it maps
 * ("::ffff:10.0.0.1" → "10.0.0.1"), any other as it is.
 */
export function unmapped(ip = ""): string {
  // Mapped text starts with "::" (as node:net and the PROXY codec write it, "::ffff:a.b.c.d")
  // or "0:"; anything else is returned at the first comparison, an IPv4 client above all.
  const c = ip.charCodeAt(0);
  if (c !== 58 && c !== 48) return ip;
  // IPv4 clients of a dual-stack listener: "::ffff:" and the IPv4 as it is, kept as a slice.
  if (ip.startsWith("::ffff:") && parseIpv4(ip, 7, ip.length) >= 0 && !leadingZero(ip, 7)) return ip.slice(7);
  if (!ip.includes(":") || parseIpv6(ip, unmappedWords, unmappedGroups) !== 1) return ip;
  const v4 = unmappedWords[0]!;
  return `${v4 >>> 24}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`;
}

/**
 * Parses an IP address into `out` (4 words, network order) without allocating and returns
 * how many words it holds: 1 for IPv4 and for IPv4-mapped IPv6 (so ::ffff:10.0.0.1,
 * ::ffff:a00:1 and 10.0.0.1 are one client), 4 for other IPv6, 0 if `ip` is not an
 * address (then hash the string). A zone (`%eth0`) is ignored. `groups` is scratch.
 */
export function parseIp(ip: string, out: Uint32Array, groups: Uint16Array): number {
  // Plain dotted IPv4, the common case, in one pass; anything else (IPv6, an IPv4 with a
  // zone, junk) goes to the general parse, also one pass.
  const v4 = parseIpv4(ip, 0, ip.length);
  if (v4 >= 0) {
    out[0] = v4;
    return 1;
  }
  return parseIpv6(ip, out, groups);
}

/**
 * IPv6 in one pass over the characters (an IPv4 with a zone too): groups before "::"
 * fill from the front, groups after it are moved to the back; a dotted IPv4 tail holds the
 * last two groups; "%" ends the address (the zone is ignored).
 */
function parseIpv6(ip: string, out: Uint32Array, groups: Uint16Array): number {
  const n = ip.length;
  let count = 0;
  let gap = -1;
  let i = 0;
  if (n >= 2 && ip.charCodeAt(0) === 58 && ip.charCodeAt(1) === 58) {
    gap = 0;
    i = 2;
    if (i === n || ip.charCodeAt(i) === 37) return finishIpv6(out, groups, 0, 0);
  }
  for (;;) {
    if (count >= 8) return 0;
    const start = i;
    let value = 0;
    // Up to four hex digits (a fifth is read only to reject it).
    for (; i < n && i - start < 5; i++) {
      const c = ip.charCodeAt(i);
      let d = c - 48;
      if (d < 0) break;
      if (d > 9) {
        d = (c | 32) - 87; // a-f and A-F
        if (d < 10 || d > 15) break;
      }
      value = value * 16 + d;
    }
    const c = i < n ? ip.charCodeAt(i) : 37; // the end reads as the start of a zone
    if (c === 46) {
      // A dotted IPv4 tail holds the last two groups; alone, it is an IPv4 with a zone.
      if (count > 6) return 0;
      let end = ip.indexOf("%", i);
      if (end < 0) end = n;
      const v4 = parseIpv4(ip, start, end);
      if (v4 < 0) return 0;
      if (count === 0 && gap < 0) {
        out[0] = v4;
        return 1;
      }
      groups[count++] = v4 >>> 16;
      groups[count++] = v4 & 0xffff;
      break;
    }
    const digits = i - start;
    if (digits === 0 || digits > 4) return 0;
    groups[count++] = value;
    if (c === 37) break;
    if (c !== 58) return 0;
    i++;
    if (i < n && ip.charCodeAt(i) === 58) {
      if (gap >= 0) return 0;
      gap = count;
      i++;
      if (i === n || ip.charCodeAt(i) === 37) break;
    }
    // (After a single ":", a group must follow: the next turn rejects an empty one.)
  }
  return finishIpv6(out, groups, count, gap);
}

function finishIpv6(out: Uint32Array, groups: Uint16Array, count: number, gap: number): number {
  if (gap < 0) {
    if (count !== 8) return 0;
  } else {
    if (count > 7) return 0;
    const tail = count - gap;
    for (let k = tail - 1; k >= 0; k--) groups[8 - tail + k] = groups[gap + k]!;
    for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  }
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    out[0] = ((groups[6]! << 16) | groups[7]!) >>> 0;
    return 1;
  }
  for (let k = 0; k < 4; k++) out[k] = ((groups[2 * k]! << 16) | groups[2 * k + 1]!) >>> 0;
  return 4;
}

/** Whether a part of the dotted quad from `start` has a leading zero ("010"): not as unmapped() writes it. */
function leadingZero(ip: string, start: number): boolean {
  for (let i = start; i < ip.length - 1; i++) {
    if (ip.charCodeAt(i) === 48 && (i === start || ip.charCodeAt(i - 1) === 46) && ip.charCodeAt(i + 1) !== 46) return true;
  }
  return false;
}

/**
 * ip[start, end) as a 32-bit IPv4 address if it is exactly a dotted quad (1-3 digits per
 * part, each ≤ 255), else -1. Unrolled by part: a digit test and a multiply-add per
 * character, no per-character bookkeeping, which measured clearly cheaper than a loop
 * counting dots and digits (docs/benchmarks.md, "Against the targets").
 */
function parseIpv4(ip: string, start: number, end: number): number {
  let value = 0;
  let i = start;
  for (let part = 0; ; part++) {
    if (i >= end) return -1;
    let octet = ip.charCodeAt(i) - 48;
    if (octet < 0 || octet > 9) return -1;
    i++;
    if (i < end) {
      const d = ip.charCodeAt(i) - 48;
      if (d >= 0 && d <= 9) {
        octet = octet * 10 + d;
        i++;
        if (i < end) {
          const e = ip.charCodeAt(i) - 48;
          if (e >= 0 && e <= 9) {
            octet = octet * 10 + e;
            i++;
          }
        }
      }
    }
    if (octet > 255) return -1;
    value = value * 256 + octet;
    if (part === 3) return i === end ? value : -1;
    if (i >= end || ip.charCodeAt(i) !== 46) return -1;
    i++;
  }
}
