import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pino from "pino";
import { parseHostPort } from "../pool/address.ts";
import { CounterTable, CounterView } from "../pool/counters.ts";
import { BackendPool, type BackendView } from "../pool/pool.ts";
import { createPicker, type Picker } from "./picker.ts";

const views = (weights: number[]): BackendView[] =>
  weights.map((weight, i) => ({ key: `10.0.0.${i}:80`, host: `10.0.0.${i}`, port: 80, weight, slot: i }));

/** A seeded PRNG (mulberry32), so failures reproduce. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What the data plane does around a pick: count the connection, tell the picker. */
function open(picker: Picker, active: Int32Array): BackendView {
  const b = picker.pick("", 0)!;
  Atomics.add(active, b.slot, 1);
  picker.connectionOpened?.(b.slot);
  return b;
}
function close(picker: Picker, active: Int32Array, slot: number): void {
  Atomics.sub(active, slot, 1);
  picker.connectionClosed?.(slot);
}

describe("least_connections", () => {
  it("always picks a minimum of active/weight while connections open and close at random", () => {
    const rnd = random(7);
    for (let trial = 0; trial < 20; trial++) {
      const weights = Array.from({ length: 1 + Math.floor(rnd() * 40) }, () => 1 + Math.floor(rnd() * 6));
      const set = views(weights);
      const active = new Int32Array(64);
      const picker = createPicker("least_connections", set, { active });
      const openSlots: number[] = [];
      for (let step = 0; step < 2000; step++) {
        if (openSlots.length > 0 && rnd() < 0.45) {
          const slot = openSlots.splice(Math.floor(rnd() * openSlots.length), 1)[0]!;
          close(picker, active, slot);
          continue;
        }
        const min = Math.min(...set.map((b) => active[b.slot]! / b.weight));
        const b = open(picker, active);
        assert.equal((active[b.slot]! - 1) / b.weight, min, `step ${step}: picked ${b.slot} above the minimum`);
        openSlots.push(b.slot);
      }
    }
  });

  it("shares ties round robin: idle backends take turns evenly", () => {
    const active = new Int32Array(8);
    const picker = createPicker("least_connections", views([1, 1, 1, 1]), { active });
    // No connection is ever held: all stay at zero, and each gets exactly a quarter.
    const counts = [0, 0, 0, 0];
    const order: number[] = [];
    for (let i = 0; i < 400; i++) {
      const slot = picker.pick("", 0)!.slot;
      counts[slot]!++;
      order.push(slot);
    }
    assert.deepEqual(counts, [100, 100, 100, 100]);
    assert.deepEqual(order.slice(0, 8), [0, 1, 2, 3, 0, 1, 2, 3]);
  });

  it("weights scale the share: weight 3 holds three times the connections of weight 1", () => {
    const active = new Int32Array(8);
    const picker = createPicker("least_connections", views([3, 1]), { active });
    for (let i = 0; i < 400; i++) open(picker, active);
    assert.deepEqual([active[0], active[1]], [300, 100]);
  });

  it("sees other threads' connections (shared counts) within N picks", () => {
    const active = new Int32Array(8);
    const picker = createPicker("least_connections", views([1, 1, 1]), { active });
    Atomics.add(active, 0, 50); // another thread's connections on backend 0
    Atomics.add(active, 1, 50);
    for (let i = 0; i < 3; i++) picker.pick("", 0);
    for (let i = 0; i < 10; i++) assert.equal(picker.pick("", 0)!.slot, 2);
  });

  it("retries move on to another backend even when the failed one is the least loaded", () => {
    const active = new Int32Array(8);
    const picker = createPicker("least_connections", views([1, 1, 1]), { active });
    Atomics.add(active, 1, 5);
    Atomics.add(active, 2, 5);
    const first = createPicker("least_connections", views([1, 1, 1]), { active }, picker);
    assert.equal(first.pick("", 0)!.slot, 0);
    const retried = new Set([first.pick("", 1)!.slot, first.pick("", 2)!.slot]);
    assert.deepEqual([...retried].sort(), [1, 2]);
  });

  it("counts return to zero when connections close, across a remove and re-add with connections open", () => {
    const logger = pino({ level: "silent" });
    const table = new CounterTable(1);
    const counters = new CounterView(table.buffers, 0);
    const pool = new BackendPool({ logger, counters: table });
    let picker = createPicker("least_connections", [], { active: counters.active });
    pool.onSnapshot((s) => (picker = createPicker("least_connections", s.routable, { active: counters.active }, picker)));
    const addresses = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"].map((a) => parseHostPort(a));
    pool.reconcile("static", addresses.map((address) => ({ address, weight: 1 })));

    // What the data plane does: count, then tell the picker (the picker that is current then).
    const held: number[] = [];
    const openOne = () => {
      const b = picker.pick("", 0)!;
      counters.opened(b.slot);
      picker.connectionOpened?.(b.slot);
      held.push(b.slot);
    };
    const closeOne = (slot: number) => {
      counters.closed(slot, 0, 0);
      picker.connectionClosed?.(slot);
    };
    for (let i = 0; i < 30; i++) openOne();
    assert.equal(pool.get("10.0.0.2:80")!.active, 10);
    // Remove a backend with its connections open, then add it back: it gets its old slot.
    pool.reconcile("static", addresses.filter((a) => a.key !== "10.0.0.2:80").map((address) => ({ address, weight: 1 })));
    for (let i = 0; i < 6; i++) openOne();
    pool.reconcile("static", addresses.map((address) => ({ address, weight: 1 })));
    assert.equal(pool.get("10.0.0.2:80")!.active, 10);
    for (let i = 0; i < 6; i++) openOne();
    for (const slot of held.splice(0)) {
      closeOne(slot);
      for (const b of pool.list()) assert.ok(b.active >= 0, `${b.address} went negative`);
    }
    assert.deepEqual(pool.list().map((b) => b.active), [0, 0, 0]);
    // And the picker, fed only by its hooks, agrees: idle again, ties shared evenly.
    const counts = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const k = picker.pick("", 0)!.key;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    assert.deepEqual([...counts.values()], [10, 10, 10]);
  });

  it("ignores a close for a slot it does not hold", () => {
    const active = new Int32Array(64);
    const picker = createPicker("least_connections", views([1, 1]), { active });
    picker.connectionClosed?.(40);
    picker.connectionClosed?.(1 << 20);
    assert.ok(picker.pick("", 0));
  });
});
