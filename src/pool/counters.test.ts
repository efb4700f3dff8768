import assert from "node:assert/strict";
import { once } from "node:events";
import { describe, it } from "node:test";
import { Worker } from "node:worker_threads";
import { CLIENT_FIN, CLIENT_RST, TERMINATIONS } from "../proxy/termination.ts";
import { CounterTable, CounterView, GLOBAL_ROOM_FREED } from "./counters.ts";

describe("shared counters", () => {
  it("refuses a thread count below one, and a view for a thread the table has no stripe for", () => {
    assert.throws(() => new CounterTable(0), /counter threads must be >= 1, got 0/);
    assert.throws(() => new CounterTable(1.5), /counter threads must be >= 1/);
    const table = new CounterTable(2);
    assert.throws(() => new CounterView(table.buffers, 2), /counter thread 2 out of range/);
    assert.throws(() => new CounterView(table.buffers, -1), /counter thread -1 out of range/);
  });

  it("counts a backend's connections, failures and bytes, summed over every thread", () => {
    const table = new CounterTable(2);
    const [a, b] = [new CounterView(table.buffers, 0), new CounterView(table.buffers, 1)];
    const slot = table.allocate();
    const other = table.allocate();
    assert.notEqual(slot, other);
    a.opened(slot);
    b.opened(slot);
    b.opened(slot);
    a.moved(slot, 100, 10); // an open connection's bytes count before it ends
    assert.deepEqual(table.read(slot), { active: 3, total: 3, failed: 0, bytesIn: 100, bytesOut: 10 });
    a.closed(slot, 5, 7);
    b.closed(slot, 1000, 2000);
    b.failed(slot);
    assert.deepEqual(table.read(slot), { active: 1, total: 3, failed: 1, bytesIn: 1105, bytesOut: 2017 });
    assert.deepEqual(table.read(other), { active: 0, total: 0, failed: 0, bytesIn: 0, bytesOut: 0 });
    // The active counts are the same memory every view reads.
    assert.equal(a.active[slot], 1);
    assert.equal(b.active[slot], 1);
  });

  it("adds up the data plane: accepted connections, and how each ended, by cause", () => {
    const table = new CounterTable(2);
    const [a, b] = [new CounterView(table.buffers, 0), new CounterView(table.buffers, 1)];
    a.accepted();
    b.accepted();
    b.accepted();
    a.ended(CLIENT_FIN);
    b.ended(CLIENT_FIN);
    b.ended(CLIENT_RST);
    const stats = table.planeStats();
    assert.equal(stats.accepted, 3);
    assert.deepEqual(Object.keys(stats.ended), [...TERMINATIONS], "every cause is reported, in order");
    assert.equal(stats.ended.client_fin, 2);
    assert.equal(stats.ended.client_rst, 1);
    assert.equal(Object.values(stats.ended).reduce((x, y) => x + y, 0), 3);
  });

  it("records connect and connection durations as cumulative histograms, over every thread", () => {
    const table = new CounterTable(2);
    const [a, b] = [new CounterView(table.buffers, 0), new CounterView(table.buffers, 1)];
    const slot = table.allocate();
    a.connectTime(slot, 0.0004); // in the first bucket (≤ 0.5 ms)
    b.connectTime(slot, 0.003); // ≤ 5 ms
    b.connectTime(slot, 60); // past the last bound: +Inf only
    const connect = table.connectTimes(slot);
    const le = (bound: number) => connect.cumulative[connect.bounds.indexOf(bound)];
    assert.equal(le(0.0005), 1);
    assert.equal(le(0.0025), 1);
    assert.equal(le(0.005), 2);
    assert.equal(le(10), 2);
    assert.equal(connect.cumulative.at(-1), 3);
    assert.ok(Math.abs(connect.sum - 60.0034) < 1e-9);
    a.connectionTime(2);
    b.connectionTime(0.002);
    const connections = table.connectionTimes();
    assert.equal(connections.cumulative.at(-1), 2);
    assert.equal(connections.sum, 2.002);
  });

  it("does not reuse a removed backend's slot while connections on it are open", () => {
    const table = new CounterTable(1);
    const view = new CounterView(table.buffers, 0);
    const slot = table.allocate();
    view.opened(slot);
    table.retire("10.0.0.1:80", slot);
    const others = Array.from({ length: 40 }, () => table.allocate());
    assert.ok(!others.includes(slot), "a slot with an open connection was handed to another backend");
    // The backend comes back while its connection is open: it gets its slot, and count, back.
    assert.equal(table.revive("10.0.0.1:80"), slot);
    assert.equal(table.revive("10.0.0.1:80"), undefined, "revived once");
    assert.equal(table.read(slot).active, 1);
    view.closed(slot, 0, 0);
    assert.equal(table.read(slot).active, 0, "the close counted against the right backend");
  });

  it("reuses a retired slot once its connections are closed, with its figures at zero", () => {
    const table = new CounterTable(1);
    const view = new CounterView(table.buffers, 0);
    const slot = table.allocate();
    view.opened(slot);
    view.closed(slot, 10, 20);
    view.failed(slot);
    view.connectTime(slot, 0.001);
    table.retire("10.0.0.1:80", slot);
    const next = table.allocate();
    assert.equal(next, slot, "an idle retired slot is reused rather than a new one taken");
    assert.deepEqual(table.read(next), { active: 0, total: 0, failed: 0, bytesIn: 0, bytesOut: 0 });
    assert.equal(table.connectTimes(next).cumulative.at(-1), 0);
    // Its old backend coming back cannot take it over: the slot is someone else's now.
    assert.equal(table.revive("10.0.0.1:80"), undefined);
  });

  it("grows past its first 1,024 slots; a view made before sees the new slots", () => {
    const table = new CounterTable(2);
    const early = new CounterView(table.buffers, 1);
    const slots = Array.from({ length: 5000 }, () => table.allocate());
    assert.equal(new Set(slots).size, 5000);
    const last = slots.at(-1)!;
    early.opened(last);
    early.moved(last, 1, 2);
    early.connectTime(last, 0.001);
    assert.deepEqual(table.read(last), { active: 1, total: 1, failed: 0, bytesIn: 1, bytesOut: 2 });
    assert.equal(table.connectTimes(last).cumulative.at(-1), 1);
  });

  it("counts from a worker thread into the same memory, including slots added after it started", async () => {
    const table = new CounterTable(2);
    const first = table.allocate();
    const worker = new Worker(
      `import { parentPort, workerData } from "node:worker_threads";
       const { CounterView } = await import(workerData.module);
       const view = new CounterView(workerData.buffers, 1);
       parentPort.on("message", (slots) => {
         for (const slot of slots) { view.opened(slot); view.opened(slot); view.closed(slot, 3, 4); }
         parentPort.postMessage("done");
       });
       parentPort.postMessage("ready");`,
      { eval: true, workerData: { buffers: table.buffers, module: new URL("./counters.ts", import.meta.url).href } },
    );
    try {
      await once(worker, "message");
      const later = Array.from({ length: 3000 }, () => table.allocate()).at(-1)!; // the buffers grow now
      worker.postMessage([first, later]);
      await once(worker, "message");
      new CounterView(table.buffers, 0).opened(later);
      assert.deepEqual(table.read(first), { active: 1, total: 2, failed: 0, bytesIn: 3, bytesOut: 4 });
      assert.deepEqual(table.read(later), { active: 2, total: 3, failed: 0, bytesIn: 3, bytesOut: 4 });
    } finally {
      await worker.terminate();
    }
  });

  it("openedWithin counts a connection only while the backend is below its limit, over every thread", () => {
    const table = new CounterTable(2);
    const [a, b] = [new CounterView(table.buffers, 0), new CounterView(table.buffers, 1)];
    const slot = table.allocate();
    assert.equal(a.openedWithin(slot, 2), true);
    assert.equal(b.openedWithin(slot, 2), true);
    assert.equal(a.openedWithin(slot, 2), false);
    assert.equal(b.openedWithin(slot, 2), false);
    assert.deepEqual(table.read(slot), { active: 2, total: 2, failed: 0, bytesIn: 0, bytesOut: 0 }, "a refusal counts nothing");
    b.closed(slot, 0, 0);
    assert.equal(a.openedWithin(slot, 2), true);
    assert.equal(table.read(slot).total, 3);
  });

  it("roomFreed wakes a thread waiting for room", async () => {
    const table = new CounterTable(2);
    const view = new CounterView(table.buffers, 0);
    const seen = Atomics.load(view.global, GLOBAL_ROOM_FREED);
    const waiting = Atomics.waitAsync(new Int32Array(table.buffers.global), GLOBAL_ROOM_FREED, seen, 5000);
    assert.equal(waiting.async, true);
    view.roomFreed();
    assert.equal(await waiting.value, "ok");
    assert.equal(Atomics.load(view.global, GLOBAL_ROOM_FREED), seen + 1);
  });
});
