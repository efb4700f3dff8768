import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";
import type { BackendView } from "../pool/pool.ts";
import { IpHashPicker } from "./ip-hash.ts";
import type { PickerContext } from "./picker.ts";
import { createPicker } from "./registry.ts";

const ctx: PickerContext = { active: new Int32Array(16) };
const views = (n: number, weight: (i: number) => number = () => 1): BackendView[] =>
  Array.from({ length: n }, (_, i) => ({ key: `10.1.${i >> 8}.${i & 255}:8080`, host: `10.1.${i >> 8}.${i & 255}`, port: 8080, weight: weight(i), slot: i }));

/** Deterministic pseudo-random client addresses, IPv4 and IPv6. */
function clients(count: number, seed = 1): string[] {
  let x = seed >>> 0;
  const next = () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0);
  return Array.from({ length: count }, (_, i) =>
    i % 10 === 9
      ? `2001:db8:${(next() >>> 16).toString(16)}::${(next() >>> 16).toString(16)}`
      : `${next() >>> 24}.${(next() >>> 16) & 255}.${(next() >>> 8) & 255}.${next() & 255}`,
  );
}

function built(set: readonly BackendView[]): IpHashPicker {
  const picker = new IpHashPicker(set, ctx);
  picker.finishBuilds();
  return picker;
}

const ips = clients(100_000);

describe("ip_hash", () => {
  it("sends the same IP to the same backend", () => {
    const picker = built(views(10));
    for (const ip of ips.slice(0, 1000)) assert.equal(picker.pick(ip, 0), picker.pick(ip, 0));
  });

  it("maps 10,000 IPs identically in two separate processes", async () => {
    const script = `
      import { IpHashPicker } from ${JSON.stringify(path.join(import.meta.dirname, "ip-hash.ts"))};
      const set = Array.from({ length: 50 }, (_, i) => ({ key: "10.9.0." + i + ":80", host: "10.9.0." + i, port: 80, weight: 1 + (i % 4), slot: 49 - i }));
      const picker = new IpHashPicker(set, { active: new Int32Array(64) });
      picker.finishBuilds();
      let input = "";
      process.stdin.setEncoding("utf8").on("data", (d) => (input += d)).on("end", () => {
        process.stdout.write(JSON.parse(input).map((ip) => picker.pick(ip, 0).key).join("\\n"));
      });`;
    const run = () =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["pipe", "pipe", "inherit"] });
        let out = "";
        child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
        child.on("error", reject);
        child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}`))));
        child.stdin.end(JSON.stringify(ips.slice(0, 10_000)));
      });
    const [a, b] = await Promise.all([run(), run()]);
    const lines = a.split("\n");
    assert.equal(lines.length, 10_000);
    assert.equal(new Set(lines).size, 50, "every backend appears");
    assert.equal(a, b);
  });

  it("does not depend on the order the pool lists backends in", () => {
    const set = views(30, (i) => 1 + (i % 3));
    const a = built(set);
    const b = built([...set].reverse());
    for (const ip of ips.slice(0, 5000)) assert.equal(a.pick(ip, 0)!.key, b.pick(ip, 0)!.key);
  });

  for (const n of [10, 100, 1000]) {
    it(`removing 1 of ${n} moves only its clients, plus at most a few % of the others`, () => {
      const set = views(n);
      const before = built(set);
      const gone = set[Math.floor(n / 3)]!;
      const after = built(set.filter((b) => b !== gone));
      let own = 0;
      let others = 0;
      for (const ip of ips) {
        const was = before.pick(ip, 0)!;
        const now = after.pick(ip, 0)!;
        if (was === gone) own++;
        else if (now !== was) others++;
      }
      assert.ok(own > 0);
      const share = others / (ips.length - own);
      assert.ok(share < 0.03, `${(share * 100).toFixed(2)}% of other clients moved`);
    });
  }

  it("keeps each backend's share within a few % of its weight over 100,000 IPs", () => {
    const weights = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5];
    const picker = built(views(10, (i) => weights[i]!));
    const counts = new Array<number>(10).fill(0);
    for (const ip of ips) counts[picker.pick(ip, 0)!.slot]!++;
    const total = weights.reduce((a, b) => a + b, 0);
    for (let i = 0; i < 10; i++) {
      const expected = (ips.length * weights[i]!) / total;
      const error = Math.abs(counts[i]! - expected) / expected;
      assert.ok(error < 0.04, `backend ${i} (weight ${weights[i]}): ${counts[i]} picks, expected ${expected.toFixed(0)}`);
    }
  });

  it("maps an IPv4 client and its IPv4-mapped IPv6 forms alike", () => {
    const picker = built(views(20));
    for (const ip of ["10.0.0.1", "192.168.77.200", "1.2.3.4"]) {
      const [a, b, c, d] = ip.split(".").map(Number) as [number, number, number, number];
      const hex = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
      const want = picker.pick(ip, 0);
      for (const form of [`::ffff:${ip}`, `::FFFF:${ip}`, `::ffff:${hex}`, `0:0:0:0:0:ffff:${ip}`]) assert.equal(picker.pick(form, 0), want, form);
    }
  });

  it("spreads a down backend's clients over the others and brings them back when it recovers", () => {
    const set = views(10);
    const picker = createPicker("ip_hash", set, ctx) as IpHashPicker;
    picker.finishBuilds();
    const home = ips.map((ip) => picker.pick(ip, 0)!);
    const down = set[4]!;
    createPicker("ip_hash", set.filter((b) => b !== down), ctx, picker);
    // At once, before any rebuild: none of them goes to the down backend.
    const interim = ips.map((ip) => picker.pick(ip, 0)!);
    assert.ok(!interim.includes(down));
    picker.finishBuilds();
    const moved = new Map<string, number>();
    for (let i = 0; i < ips.length; i++) {
      const now = picker.pick(ips[i]!, 0)!;
      assert.notEqual(now, down);
      if (home[i] === down) moved.set(now.key, (moved.get(now.key) ?? 0) + 1);
    }
    assert.equal(moved.size, 9, "its clients spread over all the others");
    createPicker("ip_hash", set, ctx, picker);
    picker.finishBuilds();
    for (let i = 0; i < ips.length; i++) assert.equal(picker.pick(ips[i]!, 0), home[i]);
  });

  it("gives every client n different backends in its first n attempts, however the table lies", () => {
    // A linear probe step once followed some backend's own permutation of the table for
    // about one client in 2,000, which then met that backend's rivals only, again and again.
    for (const [n, weight] of [[2, () => 1], [5, () => 1], [7, (i: number) => 1 + (i % 3)], [12, (i: number) => (i === 0 ? 50 : 1)]] as const) {
      const picker = built(views(n, weight));
      for (const ip of ips.slice(0, 20_000)) {
        const tries = new Set(Array.from({ length: n }, (_, a) => picker.pick(ip, a)!.slot));
        assert.equal(tries.size, n, `${ip} with ${n} backends`);
      }
    }
  });

  it("gives each retry a different deterministic backend", () => {
    const picker = built(views(5));
    for (const ip of ips.slice(0, 200)) {
      const tries = [0, 1, 2, 3, 4].map((a) => picker.pick(ip, a)!.slot);
      assert.equal(new Set(tries).size, 5);
      assert.deepEqual([0, 1, 2, 3, 4].map((a) => picker.pick(ip, a)!.slot), tries);
    }
  });

  it("builds large tables in slices and serves the old table meanwhile", () => {
    const tasks: Array<() => void> = [];
    let clock = 0;
    // A clock that advances 1 ms per reading: slices end after a few steps.
    const sliced: PickerContext = { active: ctx.active, schedule: (t) => tasks.push(t), now: () => clock++ };
    const set = views(3000);
    const picker = new IpHashPicker(set.slice(0, 10), sliced);
    assert.ok(!picker.building, "a small first table is built at once");
    picker.update(set);
    assert.ok(picker.building && tasks.length === 1, "the build did not finish in one slice");
    // Meanwhile the old table serves: only its backends, each client on its own one.
    for (const ip of ips.slice(0, 200)) assert.ok(picker.pick(ip, 0)!.slot < 10);
    while (tasks.length > 0) tasks.shift()!();
    assert.ok(!picker.building);
    const first = ips.slice(0, 2000).map((ip) => picker.pick(ip, 0)!);
    // A backend with clients in the sample (so moving them is checked).
    const gone = first[0]!;
    picker.update(set.filter((b) => b !== gone));
    assert.ok(picker.building);
    for (let i = 0; i < 2000; i++) {
      const now = picker.pick(ips[i]!, 0)!;
      if (first[i] !== gone) assert.equal(now, first[i], "clients of other backends stay put meanwhile");
      else assert.notEqual(now, gone);
    }
    // It comes back before the build is done: the table in service is exact again, so
    // the build is dropped.
    picker.update(set);
    assert.ok(!picker.building);
    for (let i = 0; i < 2000; i++) assert.equal(picker.pick(ips[i]!, 0), first[i]);
    while (tasks.length > 0) tasks.shift()!();
    assert.ok(!picker.building);
    // And the next build reuses the dropped one's buffers without a trace of it.
    picker.update(set.filter((b) => b !== gone));
    picker.finishBuilds();
    const fresh = built(set.filter((b) => b !== gone));
    for (let i = 0; i < 2000; i++) assert.equal(picker.pick(ips[i]!, 0)!.key, fresh.pick(ips[i]!, 0)!.key);
  });

  it("follows any sequence of changes to the same table a fresh build makes, never picking a backend that left", () => {
    let x = 5;
    const rnd = () => ((x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    let nextId = 200;
    const newcomer = (): BackendView => {
      const id = nextId++;
      return { key: `10.1.${id >> 8}.${id & 255}:8080`, host: `10.1.${id >> 8}.${id & 255}`, port: 8080, weight: 1 + (id % 2), slot: id };
    };
    let set = views(120, (i) => 1 + (i % 3));
    const picker = createPicker("ip_hash", set, ctx) as IpHashPicker;
    const sample = ips.slice(0, 1500);
    for (let round = 0; round < 40; round++) {
      const next = set.slice();
      for (let c = 1 + Math.floor(rnd() * 4); c > 0; c--) {
        const at = Math.floor(rnd() * next.length);
        const kind = Math.floor(rnd() * 4);
        if (kind === 0 && next.length > 1) next.splice(at, 1);
        else if (kind === 1) next.splice(at, 0, newcomer());
        else if (kind === 2) next[at] = { ...next[at]!, weight: 1 + Math.floor(rnd() * 4) };
        else next.push(newcomer());
      }
      // Now and then every view is a copy, as a data-plane thread receives them.
      set = rnd() < 0.2 ? structuredClone(next) : next;
      createPicker("ip_hash", set, ctx, picker);
      const keys = new Set(set.map((b) => b.key));
      for (const ip of sample.slice(0, 300)) assert.ok(keys.has(picker.pick(ip, 0)!.key), `round ${round}: picked a backend that left`);
      picker.finishBuilds();
      const fresh = built(set);
      for (const ip of sample) assert.equal(picker.pick(ip, 0)!.key, fresh.pick(ip, 0)!.key, `round ${round}: differs from a fresh build`);
    }
  });
});
