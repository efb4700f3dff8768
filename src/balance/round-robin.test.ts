import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { BackendView } from "../pool/pool.ts";
import { createPicker } from "./registry.ts";

const ctx = { active: new Int32Array(64) };
const views = (n: number): BackendView[] => Array.from({ length: n }, (_, i) => ({ key: `10.0.0.${i}:80`, host: `10.0.0.${i}`, port: 80, weight: 1 + (i % 3), slot: i }));

describe("round_robin", () => {
  it("gives every backend exactly k picks over k·N picks, in a fixed rotation", () => {
    const set = views(7);
    const picker = createPicker("round_robin", set, ctx);
    const counts = new Array<number>(7).fill(0);
    const order: number[] = [];
    for (let i = 0; i < 7 * 50; i++) {
      const slot = picker.pick("", 0)!.slot;
      counts[slot]!++;
      order.push(slot);
    }
    assert.deepEqual(counts, new Array(7).fill(50));
    for (let i = 7; i < order.length; i++) assert.equal(order[i], order[i - 7]);
  });

  it("skips backends that are not routable (only the snapshot's routable list is used)", () => {
    const set = views(5);
    const down = set.filter((b) => b.slot !== 2);
    const picker = createPicker("round_robin", down, ctx, createPicker("round_robin", set, ctx));
    for (let i = 0; i < 40; i++) assert.notEqual(picker.pick("", 0)!.slot, 2);
  });

  it("takes turns across threads that share the ticket counter", () => {
    // Two data-plane threads: each has its own picker, both draw from one shared counter.
    const tickets = new Int32Array(new SharedArrayBuffer(8));
    const shared = { active: ctx.active, tickets, ticketIndex: 1 };
    const set = views(3);
    const threadA = createPicker("round_robin", set, shared);
    const threadB = createPicker("round_robin", set, shared);
    const counts = [0, 0, 0];
    for (let i = 0; i < 300; i++) counts[(i % 5 < 2 ? threadA : threadB).pick("", 0)!.slot]!++;
    assert.deepEqual(counts, [100, 100, 100]);
    // A new snapshot carries on from the shared counter instead of starting over.
    const next = createPicker("round_robin", set, shared, threadA);
    assert.equal(next.pick("", 0)!.slot, 300 % 3);
  });

  it("returns undefined with no routable backend", () => {
    assert.equal(createPicker("round_robin", [], ctx).pick("", 0), undefined);
  });
});
