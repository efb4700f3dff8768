import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seededRandom } from "../../test/seeded-random.ts";
import { groupByWeight, type WeightGroups } from "./weight-groups.ts";

function run(weights: number[], order: number[] | null, chunk = 1 << 15): { groups: WeightGroups; members: number[]; yields: number } {
  const members = new Int32Array(weights.length);
  const work = groupByWeight(Int32Array.from(weights), weights.length, Math.max(0, ...weights), order, members, chunk);
  let yields = 0;
  for (let step = work.next(); ; step = work.next(), yields++) {
    if (step.done) return { groups: step.value, members: [...members], yields };
  }
}

describe("grouping by weight", () => {
  it("heaviest group first; inside a group, the order given (index order by default)", () => {
    const r = run([2, 1, 2, 3, 1], null);
    assert.deepEqual([...r.groups.weight], [3, 2, 1]);
    assert.deepEqual([...r.groups.start], [0, 1, 3, 5]);
    assert.deepEqual(r.members, [3, 0, 2, 1, 4]);
    const reversed = run([2, 1, 2, 3, 1], [4, 3, 2, 1, 0]);
    assert.deepEqual(reversed.members, [3, 2, 0, 4, 1]);
  });

  it("no backends, no groups", () => {
    const r = run([], null, Infinity);
    assert.deepEqual([...r.groups.weight], []);
    assert.deepEqual([...r.groups.start], [0]);
  });

  it("matches a stable sort for large sets of weights 1-1000, yielding as it goes", () => {
    const rnd = seededRandom(4);
    const n = 100_000;
    const weights = Array.from({ length: n }, () => 1 + Math.floor(rnd() * (rnd() < 0.5 ? 3 : 1000)));
    const order = Array.from({ length: n }, (_, i) => i).sort(() => rnd() - 0.5);
    const r = run(weights, order);
    const expected = order.map((k, i) => ({ k, i })).sort((a, b) => weights[b.k]! - weights[a.k]! || a.i - b.i).map((x) => x.k);
    assert.deepEqual(r.members, expected);
    for (let g = 0; g < r.groups.weight.length; g++) {
      for (let m = r.groups.start[g]!; m < r.groups.start[g + 1]!; m++) assert.equal(weights[r.members[m]!], r.groups.weight[g]);
    }
    assert.equal(r.yields, 6, "after each of the first three chunks of 32,768, in each of the two passes");
    const whole = run(weights, order, Infinity);
    assert.deepEqual(whole.members, expected);
    assert.equal(whole.yields, 0);
  });
});
