import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { BackendView } from "../pool/pool.ts";
import { seededRandom } from "../../test/seeded-random.ts";
import { CountBuckets } from "./count-buckets.ts";
import { Leaves } from "./leaves.ts";

const view = (i: number, weight: number): BackendView => ({ key: `10.1.${i >> 8}.${i & 255}:80`, host: "h", port: 80, weight, slot: i });

/** Buckets over fresh leaves, and a model of what they should hold: count, weight, arrival. */
function setup() {
  const leaves = new Leaves(
    () => {},
    () => 0,
  );
  const buckets = new CountBuckets(leaves);
  const model = new Map<number, { count: number; weight: number; arrived: number }>();
  let clock = 0;
  let id = 0;
  return {
    buckets,
    model,
    add(weight: number, count: number): number {
      leaves.reserve(1);
      const leaf = leaves.take(view(id++, weight));
      buckets.attach(leaf, buckets.groupFor(weight), count);
      model.set(leaf, { count, weight, arrived: ++clock });
      return leaf;
    },
    move(leaf: number, count: number): void {
      buckets.move(leaf, count);
      model.set(leaf, { ...model.get(leaf)!, count, arrived: ++clock });
    },
    reweigh(leaf: number, weight: number): void {
      const { count } = model.get(leaf)!;
      buckets.detach(leaf);
      buckets.attach(leaf, buckets.groupFor(weight), count);
      model.set(leaf, { count, weight, arrived: ++clock });
    },
    remove(leaf: number): void {
      buckets.detach(leaf);
      leaves.release(leaf);
      model.delete(leaf);
    },
    /** Every leaf in the order: by count / weight (compared exactly), then arrival. */
    order(): number[] {
      return [...model.entries()]
        .sort(([, a], [, b]) => a.count * b.weight - b.count * a.weight || a.arrived - b.arrived)
        .map(([leaf]) => leaf);
    },
  };
}

describe("count buckets", () => {
  it("idle backends take turns: one moved to its own count goes behind the others", () => {
    const s = setup();
    const [a, b, c] = [s.add(1, 0), s.add(1, 0), s.add(1, 0)];
    assert.equal(s.buckets.best(), a);
    s.move(a, 0);
    assert.equal(s.buckets.best(), b);
    s.move(b, 1); // b opened a connection
    assert.equal(s.buckets.best(), c);
    s.move(c, 0);
    assert.equal(s.buckets.best(), a);
    s.move(b, 0); // and closed it: behind a and c now
    assert.deepEqual([0, 1, 2].map((k) => s.buckets.nth(k, -1)), [a, c, b]);
  });

  it("weighs counts: weight 3 at 3 connections ties weight 1 at 1, and the earlier arrival goes first", () => {
    const s = setup();
    const heavy = s.add(3, 3);
    const light = s.add(1, 1);
    assert.equal(s.buckets.best(), heavy);
    s.move(heavy, 3); // to the back of its count
    assert.equal(s.buckets.best(), light);
    s.move(light, 2);
    assert.equal(s.buckets.best(), heavy);
  });

  it("nth walks the order, skipping the leaf to avoid", () => {
    const s = setup();
    for (const [weight, count] of [[1, 2], [2, 2], [1, 0], [3, 5], [2, 9]] as const) s.add(weight, count);
    const order = s.order();
    assert.deepEqual([0, 1, 2, 3, 4].map((k) => s.buckets.nth(k, -1)), order);
    const avoid = order[1]!;
    assert.deepEqual([0, 1, 2, 3].map((k) => s.buckets.nth(k, avoid)), order.filter((l) => l !== avoid));
  });

  it("keeps the exact order through random moves, weight changes, removals and additions", () => {
    const rnd = seededRandom(17);
    const s = setup();
    for (let i = 0; i < 30; i++) s.add(1 + Math.floor(rnd() * 4), Math.floor(rnd() * 5));
    for (let step = 0; step < 5000; step++) {
      const held = [...s.model.keys()];
      const r = rnd();
      if (held.length < 2 || r < 0.05) {
        s.add(1 + Math.floor(rnd() * (rnd() < 0.1 ? 1000 : 4)), Math.floor(rnd() * 5));
      } else {
        const leaf = held[Math.floor(rnd() * held.length)]!;
        const count = s.model.get(leaf)!.count;
        if (r < 0.1) s.remove(leaf);
        else if (r < 0.15) s.reweigh(leaf, 1 + Math.floor(rnd() * 4));
        // Mostly one connection more or less; sometimes a jump (other threads' changes read at once).
        else if (r < 0.2) s.move(leaf, Math.floor(rnd() * 40));
        else s.move(leaf, Math.max(0, count + (rnd() < 0.5 ? -1 : 1)));
      }
      const order = s.order();
      assert.equal(s.buckets.best(), order[0], `step ${step}`);
      const k = Math.floor(rnd() * order.length);
      assert.equal(s.buckets.nth(k, -1), order[k], `step ${step}: nth(${k})`);
      const avoid = order[Math.floor(rnd() * order.length)]!;
      const rest = order.filter((l) => l !== avoid);
      if (rest.length > 0) {
        const j = Math.floor(rnd() * rest.length);
        assert.equal(s.buckets.nth(j, avoid), rest[j], `step ${step}: nth(${j}) avoiding ${avoid}`);
      }
    }
  });
});
