import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { BackendView } from "../pool/pool.ts";
import { Leaves, NONE } from "./leaves.ts";

const view = (i: number): BackendView => ({ key: `10.1.${i >> 8}.${i & 255}:80`, host: "h", port: 80, weight: 1, slot: 1000 + i });

/** Leaves whose background work waits in `tasks` until the test runs it; each clock read is a ms later. */
function setup() {
  const tasks: Array<() => void> = [];
  let clock = 0;
  const leaves = new Leaves(
    (task) => void tasks.push(task),
    () => clock++,
  );
  return {
    leaves,
    tasks,
    /** Runs the scheduled work, and what it schedules, to the end; returns how many slices ran. */
    drain(): number {
      let slices = 0;
      for (let task = tasks.shift(); task !== undefined; task = tasks.shift()) {
        task();
        slices++;
      }
      return slices;
    },
  };
}

/** Takes `n` leaves holding views first..first+n-1, with made-up counts; returns them. */
function fill(leaves: Leaves, n: number, first = 0): number[] {
  leaves.reserve(n);
  return Array.from({ length: n }, (_, k) => {
    const leaf = leaves.take(view(first + k));
    leaves.count[leaf] = (first + k) % 7;
    return leaf;
  });
}

describe("least_connections leaves", () => {
  it("gives each backend a leaf holding its view and slot, and reuses freed leaves first", () => {
    const { leaves } = setup();
    const [a, b, c] = fill(leaves, 3);
    assert.deepEqual([a, b, c], [0, 1, 2]);
    assert.equal(leaves.size, 3);
    assert.equal(leaves.view(b!)?.key, view(1).key);
    assert.equal(leaves.slot[b!], 1001);
    leaves.release(b!);
    assert.equal(leaves.size, 2);
    assert.equal(leaves.view(b!), undefined);
    assert.equal(leaves.slot[b!], NONE);
    leaves.reserve(2);
    assert.equal(leaves.take(view(10)), b, "the freed leaf is taken again");
    assert.equal(leaves.take(view(11)), 3, "then a leaf never used");
    assert.equal(leaves.slot[b!], 1010);
  });

  it("keeps every leaf's fields and view when it grows", () => {
    const { leaves } = setup();
    const taken = fill(leaves, 10);
    leaves.release(taken[4]!);
    const more = fill(leaves, 1000, 10);
    assert.equal(more[0], taken[4], "the free leaf survives the growth");
    for (const k of [0, 1, 2, 3, 5, 6, 7, 8, 9]) {
      assert.equal(leaves.slot[taken[k]!], 1000 + k);
      assert.equal(leaves.view(taken[k]!)?.slot, 1000 + k);
      assert.equal(leaves.count[taken[k]!], k % 7);
    }
    for (let k = 0; k < 1000; k++) {
      assert.equal(leaves.slot[more[k]!], 1010 + k);
      assert.equal(leaves.count[more[k]!], (10 + k) % 7);
    }
    assert.equal(leaves.size, 1009);
  });

  it("suits any size while small, but not a set that fell to an eighth of a large capacity", () => {
    const { leaves } = setup();
    fill(leaves, 1 << 10);
    assert.ok(leaves.suits(0), "small: always updated in place");
    fill(leaves, (1 << 16) - (1 << 10), 1 << 10);
    assert.ok(leaves.suits(1 << 13));
    assert.ok(!leaves.suits((1 << 13) - 1));
  });

  it("prepares the arrays for twice the capacity in slices once three quarters full, and grows into them", () => {
    const { leaves, tasks, drain } = setup();
    const capacity = 1 << 15;
    fill(leaves, (capacity >>> 2) * 3);
    leaves.prepareGrowth();
    assert.equal(tasks.length, 0, "not before three quarters are taken");
    const last = fill(leaves, 1, (capacity >>> 2) * 3)[0]!;
    leaves.prepareGrowth();
    leaves.prepareGrowth();
    assert.equal(tasks.length, 1, "prepared once, whatever the number of calls");
    assert.ok(drain() > 1, "the preparation takes several slices");
    const grown = fill(leaves, capacity, capacity);
    assert.equal(leaves.size, (capacity >>> 2) * 3 + 1 + capacity);
    assert.equal(leaves.slot[last], 1000 + (capacity >>> 2) * 3);
    assert.equal(leaves.view(grown.at(-1)!)?.slot, 1000 + 2 * capacity - 1);
  });

  it("prepares nothing below the capacity where growing is cheap", () => {
    const { leaves, tasks } = setup();
    fill(leaves, 1 << 14);
    leaves.prepareGrowth();
    assert.equal(tasks.length, 0);
  });
});
