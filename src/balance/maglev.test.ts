import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { BackendView } from "../pool/pool.ts";
import { seededRandom } from "../../test/seeded-random.ts";
import { buildMaglev, EMPTY, FILL, MaglevWorkspace, tableSize, type MaglevTable } from "./maglev.ts";

const view = (i: number, weight = 1, slot = i): BackendView => ({ key: `10.7.${i >> 8}.${i & 255}:8080`, host: `10.7.${i >> 8}.${i & 255}`, port: 8080, weight, slot });

/** Runs a build to the end; returns the table and how many times it yielded. */
function build(set: readonly BackendView[], work = new MaglevWorkspace(), spare: MaglevTable | null = null): { table: MaglevTable; yields: number } {
  const steps = buildMaglev(set, work, spare);
  let yields = 0;
  for (let step = steps.next(); ; step = steps.next(), yields++) if (step.done) return { table: step.value, yields };
}

/** Each entry's backend key ("" for an empty entry). */
const owners = (t: MaglevTable) => Array.from(t.entries.subarray(0, t.size), (e) => (e === EMPTY ? "" : t.set[e]!.key));

const isPrime = (n: number) => {
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return n > 1;
};

describe("maglev table", () => {
  it("sizes tables from a ladder of primes: ≥ 100 entries per backend up to 1,000 backends, ≥ 20 beyond, at most ~2^26", () => {
    let previous = 0;
    for (const n of [0, 1, 10, 100, 655, 656, 1000, 5000, 10_000, 100_000, 1_000_000, 3_355_443, 10_000_000]) {
      const size = tableSize(n);
      assert.ok(isPrime(size), `${size} for ${n} backends`);
      assert.ok(size >= previous, "never smaller for more backends");
      if (n <= 3_355_443) assert.ok(size >= Math.max(100 * Math.min(n, 1000), 20 * n), `${size} entries for ${n} backends`);
      previous = size;
    }
    assert.equal(tableSize(1), 65_537);
    assert.ok(tableSize(10_000_000) > 2 ** 26 && tableSize(10_000_000) < 2 ** 26 + 1000);
    // A size holds over a doubling of the backend count, so steps (which remap most clients) are rare.
    assert.equal(tableSize(13_108), tableSize(26_214));
  });

  it("fills 90% of the entries, each with an index into the set; marks every backend alive; maps slots to indices", () => {
    const set = [view(0, 1, 40), view(1, 3, 2), view(2, 2, 17)];
    const { table } = build(set);
    assert.equal(table.size, tableSize(3));
    assert.equal(table.set, set);
    const entries = table.entries.subarray(0, table.size);
    assert.equal(entries.filter((e) => e !== EMPTY).length, Math.floor(table.size * FILL));
    assert.ok(entries.every((e) => e === EMPTY || (e >= 0 && e < 3)));
    for (let k = 0; k < 3; k++) assert.equal((table.alive[k >>> 5]! >>> (k & 31)) & 1, 1);
    assert.equal(table.indexOfSlot[40], 0);
    assert.equal(table.indexOfSlot[2], 1);
    assert.equal(table.indexOfSlot[17], 2);
    assert.equal(table.indexOfSlot[3], -1);
  });

  it("has no entries for no backends, and every filled entry for the only one", () => {
    const empty = build([]).table;
    assert.ok(empty.entries.subarray(0, empty.size).every((e) => e === EMPTY));
    const one = build([view(0, 7)]).table;
    assert.ok(one.entries.subarray(0, one.size).every((e) => e === EMPTY || e === 0));
  });

  it("gives each backend its weight's share of the entries, to within a couple of entries", () => {
    const rnd = seededRandom(3);
    for (const weights of [[1, 1, 1], [5, 1, 1], [1000, 1], Array.from({ length: 200 }, () => 1 + Math.floor(rnd() * 4))]) {
      const set = weights.map((w, i) => view(i, w));
      const { table } = build(set);
      const counts = new Array<number>(set.length).fill(0);
      for (const e of table.entries.subarray(0, table.size)) if (e !== EMPTY) counts[e]!++;
      const filled = counts.reduce((a, b) => a + b, 0);
      const total = weights.reduce((a, b) => a + b, 0);
      counts.forEach((c, k) => assert.ok(Math.abs(c - (filled * weights[k]!) / total) <= 2, `weights ${weights.length}: backend ${k} of weight ${weights[k]} has ${c} of ${filled}`));
    }
  });

  it("is a function of the set of (key, weight): order, slots and earlier builds change nothing", () => {
    const rnd = seededRandom(8);
    const set = Array.from({ length: 300 }, (_, i) => view(i, 1 + (i % 5)));
    const reference = owners(build(set).table);
    const shuffled = set.map((v, i) => view(i, v.weight, 1000 + ((i * 7) % 300))).sort(() => rnd() - 0.5);
    // The same workspace, after a build of another set, and writing into that build's table.
    const work = new MaglevWorkspace();
    const other = build(set.slice(0, 120).map((v) => view(v.slot, 9)), work).table;
    const again = build(shuffled, work, other).table;
    assert.deepEqual(owners(again), reference);
    assert.equal(again.entries, other.entries, "the spare table's buffer was reused");
    const heavier = set.map((v, i) => (i === 0 ? view(0, 6) : v));
    assert.notDeepEqual(owners(build(heavier).table), reference, "a weight is part of the set");
  });

  it("moves few entries of the other backends when one leaves or joins", () => {
    for (const n of [10, 100, 1000]) {
      const set = Array.from({ length: n }, (_, i) => view(i));
      const before = owners(build(set).table);
      const gone = set[Math.floor(n / 2)]!.key;
      const after = owners(build(set.filter((v) => v.key !== gone)).table);
      let others = 0;
      let moved = 0;
      for (let e = 0; e < before.length; e++) {
        if (before[e] === "" || before[e] === gone) continue;
        others++;
        if (after[e] !== before[e]) moved++;
      }
      assert.ok(moved / others < 0.03, `${n} backends: ${((100 * moved) / others).toFixed(2)}% of the others' entries moved`);
      assert.ok(!after.includes(gone));
      // And back: the same table as before it left.
      assert.deepEqual(owners(build(set).table), before);
    }
  });

  it("builds a large set in slices: at least one yield per 4,096 claims", () => {
    const set = Array.from({ length: 20_000 }, (_, i) => view(i, 1 + (i % 3)));
    const { table, yields } = build(set);
    assert.equal(table.size, tableSize(20_000));
    assert.ok(yields > (table.size * FILL) / 4096, `${yields} yields for ${table.size} entries`);
  });
});
