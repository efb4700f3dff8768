import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { seededRandom } from "../../test/seeded-random.ts";
import { parseIp, unmapped } from "./client-address.ts";

describe("client address", () => {
  it("writes an IPv4-mapped address as its IPv4, and leaves every other as it is", () => {
    for (const ip of ["10.0.0.1", "1.2.3.4", "255.255.255.255"]) {
      assert.equal(unmapped(ip), ip);
      assert.equal(unmapped(`::ffff:${ip}`), ip);
      // Other spellings of the same address, as ip_hash already reads them.
      assert.equal(unmapped(`::FFFF:${ip}`), ip);
      assert.equal(unmapped(`0:0:0:0:0:ffff:${ip}`), ip);
    }
    assert.equal(unmapped("::ffff:a00:1"), "10.0.0.1");
    assert.equal(unmapped("::ffff:010.0.0.1"), "10.0.0.1", "leading zeros are not kept");
    assert.equal(unmapped("::ffff:0.0.0.0"), "0.0.0.0");
    for (const ip of ["", "::", "::1", "::1.2.3.4", "2001:db8::1", "fe80::1%eth0", "::ffff:1.2.3.999", "0.1.2.3", "localhost"]) assert.equal(unmapped(ip), ip, ip);
    assert.equal(unmapped(), "");
  });

  it("agrees with node:net on which addresses are IPv4-mapped", () => {
    const rnd = seededRandom(5);
    for (let k = 0; k < 2_000; k++) {
      const ip = [0, 1, 2, 3].map(() => Math.floor(rnd() * 256)).join(".");
      // A dual-stack socket reports an IPv4 peer as node:net prints it mapped.
      const asReported = new net.SocketAddress({ address: `::ffff:${ip}`, family: "ipv6" }).address;
      assert.equal(unmapped(asReported), ip, asReported);
    }
  });

  it("parses addresses without allocating: IPv4, IPv6, zones, and rejects junk", () => {
    const out = new Uint32Array(4);
    const groups = new Uint16Array(8);
    assert.equal(parseIp("1.2.3.4", out, groups), 1);
    assert.equal(out[0], 0x01020304);
    assert.equal(parseIp("255.255.255.255", out, groups), 1);
    assert.equal(out[0], 0xffffffff);
    assert.equal(parseIp("10.0.0.1%eth0", out, groups), 1);
    assert.equal(out[0], 0x0a000001);
    assert.equal(parseIp("2001:db8::1", out, groups), 4);
    assert.deepEqual([...out], [0x20010db8, 0, 0, 1]);
    assert.equal(parseIp("fe80::1%eth0", out, groups), 4);
    assert.deepEqual([...out], [0xfe800000, 0, 0, 1]);
    assert.equal(parseIp("::", out, groups), 4);
    for (const junk of ["", "1.2.3", "1.2.3.256", "1.2.3.", ".1.2.3", "1..2.3", "1:2", ":::", "1::2::3", "gg::1", "1.2.3.4.5", "1234.1.1.1", "1.2.3.4x", "1.2.3.4 ", "::ffff:1.2.3.999"]) assert.equal(parseIp(junk, out, groups), 0, junk);
  });

  it("reads every spelling of random IPv6 addresses alike, and agrees with node:net on mutated ones", () => {
    const out = new Uint32Array(4);
    const groups = new Uint16Array(8);
    const rnd = seededRandom(23);
    const hex = (v: number, pad: boolean) => (pad ? v.toString(16).padStart(4, "0") : v.toString(16));
    for (let k = 0; k < 5_000; k++) {
      // Eight groups with runs of zeros, so that "::" has something to compress.
      const g = Array.from({ length: 8 }, () => (rnd() < 0.4 ? 0 : Math.floor(rnd() * 65536)));
      const words = [0, 1, 2, 3].map((w) => ((g[2 * w]! << 16) | g[2 * w + 1]!) >>> 0);
      const mapped = g.slice(0, 5).every((v) => v === 0) && g[5] === 0xffff;
      const spellings = [g.map((v) => hex(v, false)).join(":"), g.map((v) => hex(v, true)).join(":").toUpperCase()];
      // "::" in place of a run of zero groups (any run; the longest is only the canonical one).
      const at = Math.floor(rnd() * 8);
      let to = at;
      while (to < 8 && g[to] === 0) to++;
      if (to > at) spellings.push(`${g.slice(0, at).map((v) => hex(v, false)).join(":")}::${g.slice(to).map((v) => hex(v, false)).join(":")}`);
      spellings.push(new URL(`http://[${spellings[0]}]`).hostname.slice(1, -1)); // the WHATWG canonical form
      for (const ip of spellings) {
        assert.equal(parseIp(ip, out, groups), mapped ? 1 : 4, ip);
        if (mapped) assert.equal(out[0], words[3], ip);
        else assert.deepEqual([...out], words, ip);
      }
      // One character changed, added or removed: an address exactly when node:net says so.
      const base = spellings[k % spellings.length]!;
      const p = Math.floor(rnd() * (base.length + 1));
      const ch = ":.0a9fgG%"[Math.floor(rnd() * 9)]!;
      const mutated = [base.slice(0, p) + ch + base.slice(p + 1), base.slice(0, p) + ch + base.slice(p), base.slice(0, p) + base.slice(p + 1)][k % 3]!;
      if (mutated.includes("%")) continue; // zones: node:net and we both accept any suffix
      const kind = parseIp(mutated, out, groups);
      assert.equal(kind > 0, net.isIP(mutated) !== 0, mutated);
    }
  });

  it("reads a dotted quad exactly as a reference parser does, for random strings of digits and dots", () => {
    const out = new Uint32Array(4);
    const groups = new Uint16Array(8);
    const rnd = seededRandom(17);
    const quad = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
    let valid = 0;
    for (let k = 0; k < 20_000; k++) {
      // Mostly near-addresses (digit runs of 1-4 split by 2-5 dots), some noise.
      let ip = "";
      const parts = rnd() < 0.7 ? 4 : 2 + Math.floor(rnd() * 4);
      for (let p = 0; p < parts; p++) {
        if (p > 0) ip += rnd() < 0.97 ? "." : "";
        const digits = rnd() < 0.9 ? 1 + Math.floor(rnd() * 3) : Math.floor(rnd() * 5);
        for (let d = 0; d < digits; d++) ip += String(Math.floor(rnd() * (d === 0 ? 3 : 10)));
      }
      const m = quad.exec(ip);
      const expected = m !== null && m.slice(1).every((part) => Number(part) <= 255) ? m.slice(1).reduce((v, part) => v * 256 + Number(part), 0) : -1;
      const kind = parseIp(ip, out, groups);
      if (expected < 0) {
        assert.equal(kind, 0, ip);
      } else {
        valid++;
        assert.equal(kind, 1, ip);
        assert.equal(out[0], expected, ip);
      }
    }
    assert.ok(valid > 3000, `only ${valid} valid addresses generated`);
  });
});
