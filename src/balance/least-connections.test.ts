import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pino from "pino";
import { parseHostPort } from "../pool/address.ts";
import { CounterTable, CounterView } from "../pool/counters.ts";
import { BackendPool, type BackendView } from "../pool/pool.ts";
import { LeastConnectionsPicker } from "./least-connections.ts";
import type { Picker } from "./picker.ts";
import { createPicker } from "./registry.ts";
import { seededRandom } from "../../test/seeded-random.ts";

const views = (weights: number[]): BackendView[] =>
  weights.map((weight, i) => ({ key: `10.0.0.${i}:80`, host: `10.0.0.${i}`, port: 80, weight, slot: i }));

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
  for (const countsChangedElsewhere of [false, true]) {
    const threads = countsChangedElsewhere ? "counts shared with other threads" : "this thread the only one";
    it(`always picks a minimum of active/weight while connections open and close at random (${threads})`, () => {
      const rnd = seededRandom(7);
      for (let trial = 0; trial < 20; trial++) {
        const weights = Array.from({ length: 1 + Math.floor(rnd() * 40) }, () => 1 + Math.floor(rnd() * 6));
        const set = views(weights);
        const active = new Int32Array(64);
        const picker = createPicker("least_connections", set, { active, countsChangedElsewhere });
        const openSlots: number[] = [];
        const closeOne = () => close(picker, active, openSlots.splice(Math.floor(rnd() * openSlots.length), 1)[0]!);
        for (let step = 0; step < 2000; step++) {
          if (openSlots.length > 0 && rnd() < 0.45) {
            closeOne();
            continue;
          }
          const min = Math.min(...set.map((b) => active[b.slot]! / b.weight));
          const b = picker.pick("", 0)!;
          assert.equal(active[b.slot]! / b.weight, min, `step ${step}: picked ${b.slot} above the minimum`);
          // Sometimes another connection closes between a pick and the report of its open.
          if (openSlots.length > 0 && rnd() < 0.3) closeOne();
          Atomics.add(active, b.slot, 1);
          picker.connectionOpened?.(b.slot);
          openSlots.push(b.slot);
        }
      }
    });
  }

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

  it("shares ties across weights in turn too (idle backends of weights 1 and 2)", () => {
    const active = new Int32Array(8);
    const picker = createPicker("least_connections", views([1, 2, 1, 2]), { active });
    const order = Array.from({ length: 12 }, () => picker.pick("", 0)!.slot);
    assert.deepEqual(order, [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
  });

  it("among equal loads, the backend that reached that load first goes first", () => {
    const active = new Int32Array(8);
    const picker = createPicker("least_connections", views([1, 1, 1]), { active, countsChangedElsewhere: false });
    assert.deepEqual([open(picker, active), open(picker, active), open(picker, active)].map((b) => b.slot), [0, 1, 2]);
    close(picker, active, 2); // 2 is back at zero first, then 0
    close(picker, active, 0);
    assert.equal(open(picker, active).slot, 2);
    assert.equal(open(picker, active).slot, 0);
    // All at one again, reached in the order 1, 2, 0.
    assert.deepEqual([open(picker, active), open(picker, active), open(picker, active)].map((b) => b.slot), [1, 2, 0]);
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

  it("a retry takes the next lowest load, not counting the backend that just failed", () => {
    const rnd = seededRandom(5);
    for (let trial = 0; trial < 50; trial++) {
      // A few distinct weights, then many (each its own group in the walk's merge).
      const set = views(Array.from({ length: 2 + Math.floor(rnd() * 30) }, () => 1 + Math.floor(rnd() * (trial < 25 ? 4 : 40))));
      const active = new Int32Array(64);
      for (const b of set) active[b.slot] = Math.floor(rnd() * 6);
      const picker = createPicker("least_connections", set, { active, countsChangedElsewhere: false });
      // What the data plane does when dials fail: count the open, give it back, pick again.
      let failed = open(picker, active);
      close(picker, active, failed.slot);
      for (let attempt = 1; attempt <= Math.min(6, set.length); attempt++) {
        const others = set.filter((b) => b !== failed).map((b) => active[b.slot]! / b.weight).sort((x, y) => x - y);
        const b = picker.pick("", attempt)!;
        assert.notEqual(b, failed, `trial ${trial}, attempt ${attempt}: the failed backend again`);
        assert.equal(active[b.slot]! / b.weight, others[Math.min(attempt - 1, others.length - 1)], `trial ${trial}, attempt ${attempt}`);
        Atomics.add(active, b.slot, 1);
        picker.connectionOpened?.(b.slot);
        close(picker, active, b.slot);
        failed = b;
      }
    }
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

  it("patches its buckets across pool changes: adds, removes, weight changes, copies, slot reuse", () => {
    const rnd = seededRandom(11);
    const active = new Int32Array(256);
    let nextId = 0;
    const freeSlots: number[] = [];
    const make = (weight: number): BackendView => {
      const id = nextId++;
      const slot = freeSlots.length > 0 && rnd() < 0.5 ? freeSlots.pop()! : id % 256;
      return { key: `10.2.${id >> 8}.${id & 255}:80`, host: `10.2.${id >> 8}.${id & 255}`, port: 80, weight, slot };
    };
    // Slots are unique among live backends, as the pool's are.
    let set: BackendView[] = [];
    const used = new Set<number>();
    const add = () => {
      for (;;) {
        const b = make(1 + Math.floor(rnd() * 4));
        if (!used.has(b.slot)) {
          used.add(b.slot);
          return b;
        }
      }
    };
    for (let i = 0; i < 40; i++) set.push(add());
    let picker = createPicker("least_connections", set, { active });
    const first = picker;
    for (let round = 0; round < 300; round++) {
      const next = set.slice();
      const changes = 1 + Math.floor(rnd() * (rnd() < 0.1 ? 40 : 3));
      for (let c = 0; c < changes; c++) {
        const at = Math.floor(rnd() * next.length);
        const kind = Math.floor(rnd() * 5);
        if (kind === 0 && next.length > 0) {
          const [gone] = next.splice(at, 1);
          used.delete(gone!.slot);
          freeSlots.push(gone!.slot);
        } else if (kind === 1 && next.length < 150) next.splice(at, 0, add());
        else if (kind === 2 && next.length < 150) next.push(add());
        else if (kind === 3 && next.length > 0) next[at] = { ...next[at]!, weight: 1 + Math.floor(rnd() * 4) };
        else if (kind === 4 && rnd() < 0.2) next.reverse();
      }
      // Sometimes a copy of every view, as a data-plane thread receives them.
      set = rnd() < 0.15 ? structuredClone(next) : next;
      // Sometimes the change comes between a pick and the report of its open.
      const unreported = rnd() < 0.3 ? picker.pick("", 0) : undefined;
      picker = createPicker("least_connections", set, { active }, picker);
      assert.equal(picker, first, "updated in place");
      assert.equal((picker as LeastConnectionsPicker).size, set.length);
      if (unreported !== undefined && set.includes(unreported)) {
        Atomics.add(active, unreported.slot, 1);
        picker.connectionOpened?.(unreported.slot);
      }
      if (set.length === 0) {
        assert.equal(picker.pick("", 0), undefined);
        continue;
      }
      for (let p = 0; p < 5; p++) {
        const min = Math.min(...set.map((b) => active[b.slot]! / b.weight));
        const b = open(picker, active);
        assert.ok(set.includes(b), `round ${round}: picked a view not in the current set`);
        assert.equal((active[b.slot]! - 1) / b.weight, min, `round ${round}: picked above the minimum`);
      }
      // Let go of a few, so counts move both ways.
      for (const b of set) if (active[b.slot]! > 0 && rnd() < 0.3) close(picker, active, b.slot);
    }
  });

  it("keeps the rotation across a change: idle backends still take turns", () => {
    const active = new Int32Array(16);
    const set = views([1, 1, 1, 1]);
    let picker = createPicker("least_connections", set, { active });
    const order: number[] = [];
    for (let i = 0; i < 2; i++) order.push(picker.pick("", 0)!.slot);
    picker = createPicker("least_connections", [...set, { key: "10.0.0.9:80", host: "10.0.0.9", port: 80, weight: 1, slot: 9 }], { active }, picker);
    for (let i = 0; i < 5; i++) order.push(picker.pick("", 0)!.slot);
    // The rotation resumes where it was; the newcomer joins the back of the idle ones.
    assert.deepEqual(order, [0, 1, 2, 3, 0, 1, 9]);
  });

  it("grows into capacity prepared in the background, keeping every backend's place", () => {
    const active = new Int32Array(50_000);
    const tasks: Array<() => void> = [];
    const set = Array.from({ length: 30_000 }, (_, i): BackendView => ({ key: `10.3.${i >> 8}.${i & 255}:80`, host: "h", port: 80, weight: 1 + (i % 2), slot: i }));
    let picker = createPicker("least_connections", set, { active, schedule: (t) => tasks.push(t) });
    // 3/4 full: twice the room is being prepared, a slice at a time.
    assert.ok(tasks.length > 0);
    while (tasks.length > 0) tasks.shift()!();
    for (let i = 0; i < 30_000; i++) picker.pick("", 0); // every old backend picked once
    const more = Array.from({ length: 4_000 }, (_, i): BackendView => ({ key: `10.4.${i >> 8}.${i & 255}:80`, host: "h", port: 80, weight: 1, slot: 30_000 + i }));
    picker = createPicker("least_connections", [...set, ...more], { active }, picker);
    assert.equal((picker as LeastConnectionsPicker).size, 34_000);
    // The rotation resumes where it was (every old backend once more, in order), and the
    // newcomers, in line behind them, come next, each once.
    const old = Array.from({ length: 30_000 }, () => picker.pick("", 0)!.slot);
    assert.deepEqual(old, set.map((b) => b.slot));
    const newcomers = new Set(Array.from({ length: 4_000 }, () => picker.pick("", 0)!.slot));
    assert.equal(newcomers.size, 4_000);
    assert.ok([...newcomers].every((slot) => slot >= 30_000));
    assert.equal(picker.pick("", 0)!.slot, 0);
    // And it still finds the minimum as connections come and go.
    const rnd = seededRandom(3);
    for (let step = 0; step < 3000; step++) {
      if (rnd() < 0.3) Atomics.add(active, Math.floor(rnd() * 34_000), 1);
      const b = open(picker, active);
      assert.equal(active[b.slot]! - 1, 0, `step ${step}: a backend with connections was picked while idle ones remain`);
    }
  });

  it("gives memory back when the pool shrinks to a small part of its capacity", () => {
    const active = new Int32Array(50_000);
    const big = Array.from({ length: 40_000 }, (_, i): BackendView => ({ key: `10.5.${i >> 8}.${i & 255}:80`, host: "h", port: 80, weight: 1, slot: i }));
    const picker = createPicker("least_connections", big, { active, schedule: () => {} });
    Atomics.add(active, 7, 3); // connections still open on one backend that stays
    const small = big.slice(0, 10);
    const after = createPicker("least_connections", small, { active }, picker);
    assert.notEqual(after, picker, "a new, smaller picker");
    assert.equal((after as LeastConnectionsPicker).size, 10);
    const picked = new Set(Array.from({ length: 9 }, () => open(after, active).slot));
    assert.deepEqual([...picked].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 8, 9]);
    // And a few backends more or less are patched in place again.
    assert.equal(createPicker("least_connections", big.slice(0, 12), { active }, after), after);
  });

  it("ignores a close for a slot it does not hold", () => {
    const active = new Int32Array(64);
    const picker = createPicker("least_connections", views([1, 1]), { active });
    picker.connectionClosed?.(40);
    picker.connectionClosed?.(1 << 20);
    assert.ok(picker.pick("", 0));
  });
});
