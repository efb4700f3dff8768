import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pino from "pino";
import { CounterHistory } from "./history.ts";

const logger = pino({ level: "silent" });

describe("CounterHistory", () => {
  it("keeps the last window of samples, oldest first, in fixed memory", async () => {
    let now = 0;
    let n = 0;
    const history = new CounterHistory({
      logger,
      intervalMs: 1000,
      windowMs: 3000,
      clock: () => now,
      read: async () => ({ connections: n, bytesIn: 10 * n, bytesOut: 100 * n }),
    });
    for (n = 1; n <= 6; n++) {
      now = n * 1000;
      await history.sample();
    }
    now = 6500;
    const { samples, interval_ms, window_ms, now: servedAt } = history.toJSON();
    assert.equal(interval_ms, 1000);
    assert.equal(window_ms, 3000);
    assert.equal(servedAt, 6500, "the server's clock when served");
    // Capacity is window/interval + 1: one sample older than the window gives its first rate.
    assert.deepEqual(
      samples.map((s) => [s.t, s.connections, s.bytes_in, s.bytes_out]),
      [3, 4, 5, 6].map((i) => [i * 1000, i, 10 * i, 100 * i]),
    );
  });

  it("samples at start and on every tick, and leaves no timer behind after stop", async () => {
    const timers = new Set<number>();
    let next = 0;
    let tick: () => void = () => {};
    const fake = {
      setInterval: ((fn: () => void) => {
        tick = fn;
        timers.add(++next);
        return next;
      }) as unknown as typeof setInterval,
      clearInterval: ((id: number) => void timers.delete(id)) as unknown as typeof clearInterval,
    };
    let reads = 0;
    const history = new CounterHistory({ logger, timers: fake, read: async () => ({ connections: ++reads, bytesIn: 0, bytesOut: 0 }) });
    history.start();
    history.start();
    assert.equal(timers.size, 1);
    await new Promise((r) => setImmediate(r));
    tick();
    await new Promise((r) => setImmediate(r));
    assert.equal(history.toJSON().samples.length, 2);
    history.stop();
    assert.equal(timers.size, 0);
  });

  it("logs a failed read and keeps going", async () => {
    let fail = true;
    const history = new CounterHistory({
      logger,
      read: async () => {
        if (fail) throw new Error("boom");
        return { connections: 1, bytesIn: 2, bytesOut: 3 };
      },
    });
    await history.sample();
    fail = false;
    await history.sample();
    assert.equal(history.toJSON().samples.length, 1);
  });
});
