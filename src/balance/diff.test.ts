import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { BackendView } from "../pool/pool.ts";
import { seededRandom } from "../../test/seeded-random.ts";
import { diffRoutable, type RoutableDiff } from "./diff.ts";

const view = (i: number, weight = 1): BackendView => ({ key: `10.0.${i >> 8}.${i & 255}:80`, host: `10.0.${i >> 8}.${i & 255}`, port: 80, weight, slot: i });
const keys = (views: readonly BackendView[]) => views.map((v) => v.key);
/** What a picker holding `old` answers: whether it has that backend. */
const holding = (old: readonly BackendView[]) => {
  const held = new Set(old.map((v) => `${v.slot} ${v.key}`));
  return (v: BackendView) => held.has(`${v.slot} ${v.key}`);
};

describe("routable list diff", () => {
  it("finds nothing between a list and itself, without asking what is held", () => {
    const list = [view(1), view(2), view(3)];
    const d = diffRoutable(list, list.slice(), () => assert.fail("held() asked for identical lists"))!;
    assert.deepEqual(d, { removed: [], added: [], previous: [], renewed: [] });
  });

  it("finds removals and additions anywhere in the pool's order", () => {
    const all = Array.from({ length: 8 }, (_, i) => view(i));
    const old = [all[0]!, all[1]!, all[3]!, all[4]!, all[6]!];
    const next = [all[1]!, all[2]!, all[3]!, all[5]!, all[6]!, all[7]!];
    const d = diffRoutable(old, next, holding(old))!;
    assert.deepEqual(keys(d.removed), keys([all[0]!, all[4]!]));
    assert.deepEqual(keys(d.added), keys([all[2]!, all[5]!, all[7]!]));
    assert.deepEqual(d.renewed, []);
    // Removed entries are the old views themselves, added ones the new.
    assert.equal(d.removed[0], all[0]);
    assert.equal(d.added[0], all[2]);
  });

  it("pairs a backend whose view was replaced (a weight change) with its previous view", () => {
    const old = [view(1), view(2, 5), view(3)];
    const heavier = { ...old[1]!, weight: 9 };
    const d = diffRoutable(old, [old[0]!, heavier, old[2]!], holding(old))!;
    assert.deepEqual(d.removed, []);
    assert.deepEqual(d.added, []);
    assert.equal(d.previous[0], old[1]);
    assert.equal(d.renewed[0], heavier);
  });

  it("matches copies made for another thread by slot and key: nothing removed or added", () => {
    const old = Array.from({ length: 50 }, (_, i) => view(i, 1 + (i % 4)));
    const copies = structuredClone(old);
    const d = diffRoutable(old, copies, holding(old))!;
    assert.equal(d.renewed.length, 50);
    assert.deepEqual(d.removed, []);
    assert.deepEqual(d.added, []);
    assert.ok(d.previous.every((v, k) => v === old[k] && d.renewed[k] === copies[k]));
  });

  it("a backend on a reused slot under another key is a removal and an addition, not a renewal", () => {
    const old = [view(1), view(2)];
    const reused = { ...view(9), slot: 2 };
    const d = diffRoutable(old, [old[0]!, reused], holding(old))!;
    assert.deepEqual(keys(d.removed), [old[1]!.key]);
    assert.deepEqual(keys(d.added), [reused.key]);
    assert.deepEqual(d.renewed, []);
  });

  it("gives up (null) as soon as more than `limit` backends were removed or added", () => {
    const old = Array.from({ length: 10 }, (_, i) => view(i));
    const next = [...old.slice(3), view(20), view(21)]; // 3 removed, 2 added
    assert.notEqual(diffRoutable(old, next, holding(old), 5), null);
    assert.equal(diffRoutable(old, next, holding(old), 4), null);
    assert.equal(diffRoutable(old, [], holding(old), 9), null);
    assert.equal(diffRoutable([], old, () => false, 9), null);
    // And it stops walking there: a replaced set costs the caller no full walk before its rebuild.
    const replaced = Array.from({ length: 100 }, (_, i) => view(100 + i));
    let asked = 0;
    const many = Array.from({ length: 100 }, (_, i) => view(i));
    assert.equal(diffRoutable(many, replaced, () => (asked++, false), 2), null);
    assert.ok(asked <= 3, `held() asked ${asked} times`);
  });

  it("on random changes: exact with a truthful held(); every backend accounted for even when it lies", () => {
    const rnd = seededRandom(9);
    for (let trial = 0; trial < 300; trial++) {
      // Both lists are subsequences of one pool order, as the pool keeps its backends.
      const pool = Array.from({ length: 1 + Math.floor(rnd() * 60) }, (_, i) => view(trial * 100 + i, 1 + Math.floor(rnd() * 3)));
      const old = pool.filter(() => rnd() < 0.7);
      const next = pool.filter(() => rnd() < 0.7).map((v) => (rnd() < 0.1 ? { ...v, weight: v.weight + 1 } : v));
      const oldKeys = new Set(keys(old));
      const nextKeys = new Set(keys(next));

      const exact = diffRoutable(old, next, holding(old))!;
      assert.deepEqual(new Set(keys(exact.removed)), new Set([...oldKeys].filter((k) => !nextKeys.has(k))), `trial ${trial}: removed`);
      assert.deepEqual(new Set(keys(exact.added)), new Set([...nextKeys].filter((k) => !oldKeys.has(k))), `trial ${trial}: added`);
      assertAccounted(old, next, exact, trial);

      const lying = diffRoutable(old, next, () => rnd() < 0.5)!;
      assertAccounted(old, next, lying, trial);
      // What a lie can cost: a backend reported removed and added again, never lost.
      for (const k of keys(lying.removed)) if (nextKeys.has(k)) assert.ok(keys(lying.added).includes(k), `trial ${trial}: ${k} lost`);
    }
  });
});

/**
 * Every old entry is removed or matched, every new one added or matched, in one order:
 * what is left of the old list after the removals pairs up, entry for entry, with what is
 * left of the new one after the additions, either the same view or a renewed one (same
 * slot and key), and the renewed pairs are exactly those.
 */
function assertAccounted(old: readonly BackendView[], next: readonly BackendView[], d: RoutableDiff, trial: number): void {
  const removed = new Set(d.removed);
  const added = new Set(d.added);
  assert.equal(removed.size, d.removed.length, `trial ${trial}: a removal reported twice`);
  assert.equal(added.size, d.added.length, `trial ${trial}: an addition reported twice`);
  assert.ok(d.removed.every((v) => old.includes(v)) && d.added.every((v) => next.includes(v)), `trial ${trial}: entries from the wrong list`);
  const keptOld = old.filter((v) => !removed.has(v));
  const keptNew = next.filter((v) => !added.has(v));
  assert.equal(keptOld.length, keptNew.length, `trial ${trial}: unmatched entries`);
  const previous: BackendView[] = [];
  const renewed: BackendView[] = [];
  keptOld.forEach((a, k) => {
    const b = keptNew[k]!;
    if (a === b) return;
    assert.ok(a.slot === b.slot && a.key === b.key, `trial ${trial}: ${a.key} paired with ${b.key}`);
    previous.push(a);
    renewed.push(b);
  });
  assert.deepEqual(d.previous, previous, `trial ${trial}: previous`);
  assert.deepEqual(d.renewed, renewed, `trial ${trial}: renewed`);
}
