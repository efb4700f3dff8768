import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seededRandom } from "../../test/seeded-random.ts";
import { GroupTournament } from "./group-tournament.ts";

describe("group tournament", () => {
  it("has no best while empty, and none again once every group is removed", () => {
    const t = new GroupTournament();
    assert.equal(t.best(), -1);
    t.ensure(3);
    t.set(2, 0.5, 1);
    t.set(0, 0.25, 2);
    assert.equal(t.best(), 0);
    t.remove(0);
    assert.equal(t.best(), 2);
    t.remove(2);
    assert.equal(t.best(), -1);
  });

  it("the lowest ratio wins; on equal ratios the earlier first", () => {
    const t = new GroupTournament();
    t.ensure(4);
    t.set(0, 2, 10);
    t.set(1, 1, 30);
    t.set(2, 1, 20);
    t.set(3, 3, 1);
    assert.equal(t.best(), 2);
    t.set(2, 1, 40); // its head moved to the back: group 1's head arrived earlier now
    assert.equal(t.best(), 1);
    t.set(3, 0.5, 50);
    assert.equal(t.best(), 3);
  });

  it("always holds the minimum through random keys, removals and widening", () => {
    const rnd = seededRandom(21);
    const t = new GroupTournament();
    const keys = new Map<number, [number, number]>();
    let groups = 0;
    let clock = 0;
    for (let step = 0; step < 20_000; step++) {
      const r = rnd();
      if (r < 0.05 && groups < 300) {
        groups += 1 + Math.floor(rnd() * 8); // room for more groups, as new weights appear
        t.ensure(groups);
      } else if (groups > 0 && r < 0.25) {
        const g = Math.floor(rnd() * groups);
        t.remove(g);
        keys.delete(g);
      } else if (groups > 0) {
        const g = Math.floor(rnd() * groups);
        // Ratios as least_connections makes them: count / weight, often equal across groups.
        const key: [number, number] = [Math.floor(rnd() * 6) / (1 + Math.floor(rnd() * 3)), ++clock];
        t.set(g, key[0], key[1]);
        keys.set(g, key);
      }
      let expected = -1;
      for (const [g, [ratio, first]] of keys) {
        const [bestRatio, bestFirst] = expected < 0 ? [Infinity, Infinity] : keys.get(expected)!;
        if (ratio < bestRatio || (ratio === bestRatio && first < bestFirst)) expected = g;
      }
      assert.equal(t.best(), expected, `step ${step}`);
    }
  });
});
