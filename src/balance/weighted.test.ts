import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { BackendView } from "../pool/pool.ts";
import { createPicker } from "./registry.ts";
import { WeightedPicker } from "./weighted.ts";
import { seededRandom } from "../../test/seeded-random.ts";

const ctx = { active: new Int32Array(64) };
const views = (weights: number[]): BackendView[] =>
  weights.map((weight, i) => ({ key: `10.0.0.${i}:80`, host: `10.0.0.${i}`, port: 80, weight, slot: i }));

/** nginx's smooth weighted round robin, literally (O(N) per pick): the reference. */
function nginx(weights: number[], picks: number): number[] {
  const current = weights.map(() => 0);
  const total = weights.reduce((a, b) => a + b, 0);
  const out: number[] = [];
  for (let p = 0; p < picks; p++) {
    let best = -1;
    for (let i = 0; i < weights.length; i++) {
      current[i]! += weights[i]!;
      if (best < 0 || current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    out.push(best);
  }
  return out;
}

describe("weighted", () => {
  it("weights 5,1,1 give a a b a c a a, period after period", () => {
    const picker = createPicker("weighted", views([5, 1, 1]), ctx);
    const seq = Array.from({ length: 21 }, () => "abc"[picker.pick("", 0)!.slot]).join("");
    assert.equal(seq, "aabacaa".repeat(3));
  });

  it("matches nginx pick for pick, and every window of sum(weights) picks matches the weights", () => {
    const rnd = seededRandom(42);
    for (let trial = 0; trial < 60; trial++) {
      const n = 1 + Math.floor(rnd() * 12);
      // Few distinct weights (many ties) and wide ranges both.
      const spread = trial % 2 === 0 ? 4 : 1000;
      const weights = Array.from({ length: n }, () => 1 + Math.floor(rnd() * spread));
      const total = weights.reduce((a, b) => a + b, 0);
      const picks = Math.min(3 * total, 6000);
      const picker = createPicker("weighted", views(weights), ctx);
      const got = Array.from({ length: picks }, () => picker.pick("", 0)!.slot);
      assert.deepEqual(got, nginx(weights, picks), `weights ${weights.join(",")}`);
      if (picks < 2 * total) continue;
      // Sliding window: add the pick entering, remove the one leaving.
      const inWindow = new Array<number>(n).fill(0);
      for (let i = 0; i < picks; i++) {
        inWindow[got[i]!]!++;
        if (i >= total) inWindow[got[i - total]!]!--;
        if (i >= total - 1) assert.deepEqual(inWindow, weights, `window ending at ${i}, weights ${weights.join(",")}`);
      }
    }
  });

  it("with many distinct weights (a kinetic tournament) matches nginx pick for pick too", () => {
    const rnd = seededRandom(9);
    for (let trial = 0; trial < 12; trial++) {
      const n = 2 + Math.floor(rnd() * 150);
      const spread = [3, 20, 1000][trial % 3]!;
      const weights = Array.from({ length: n }, () => 1 + Math.floor(rnd() * spread));
      const total = weights.reduce((a, b) => a + b, 0);
      const picks = Math.min(2 * total + 7, 40_000);
      // Forced on from 1 group, so small and tie-heavy sets go through it as well.
      const picker = new WeightedPicker(views(weights), 0);
      const got = Array.from({ length: picks }, () => picker.pick("", 0)!.slot);
      assert.deepEqual(got, nginx(weights, picks), `weights ${weights.join(",")}`);
    }
  });

  it("interleaves: a heavy backend is never picked weight times in a row when others are due", () => {
    const picker = createPicker("weighted", views([3, 3, 2]), ctx);
    const seq = Array.from({ length: 8 }, () => picker.pick("", 0)!.slot);
    assert.deepEqual(seq, nginx([3, 3, 2], 8));
    let run = 1;
    for (let i = 1; i < seq.length; i++) run = seq[i] === seq[i - 1] ? run + 1 : 1;
    assert.ok(run < 3);
  });

  it("retries walk the other backends instead of repeating the heavy one", () => {
    const picker = createPicker("weighted", views([1000, 1, 1]), ctx);
    const retries = new Set([1, 2, 3].map((a) => picker.pick("", a)!.slot));
    assert.equal(retries.size, 3);
  });

  it("a new set restarts the sequence, in the same picker", () => {
    const picker = createPicker("weighted", views([5, 1, 1]), ctx);
    for (let i = 0; i < 4; i++) picker.pick("", 0);
    const updated = createPicker("weighted", views([3, 3, 2]), ctx, picker);
    assert.equal(updated, picker);
    assert.deepEqual(Array.from({ length: 16 }, () => updated.pick("", 0)!.slot), nginx([3, 3, 2], 16));
  });

  it("only the routable backends take part", () => {
    const all = views([5, 1, 1]);
    const picker = createPicker("weighted", [all[0]!, all[2]!], ctx);
    const seq = Array.from({ length: 12 }, () => picker.pick("", 0)!.slot);
    assert.equal(seq.filter((s) => s === 0).length, 10);
    assert.equal(seq.filter((s) => s === 2).length, 2);
  });
});
