import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pino from "pino";
import { RateLimitedLog } from "../log/rate-limit.ts";
import { CounterTable, CounterView } from "../pool/counters.ts";
import type { BackendView, Snapshot } from "../pool/pool.ts";
import { BackendChooser } from "./backend-chooser.ts";
import type { Connection } from "./connection.ts";

/** What the chooser and its queue read and call on a connection; the rest is not needed. */
function fakeConnection(name: string, log: string[]): Connection {
  return {
    attempt: 0,
    clientIp: "10.0.0.1",
    picks: 0,
    triedFirst: -1,
    triedMore: null,
    deadlines: null,
    deadline: 0,
    waitPrev: null,
    waitNext: null,
    dequeued: () => log.push(`${name} dequeued`),
    close: () => log.push(`${name} closed`),
  } as unknown as Connection;
}

/** A chooser on thread 0 of two, over one backend with max_connections 1. */
function setUp(queueTimeoutMs = 2000) {
  const table = new CounterTable(2);
  const here = new CounterView(table.buffers, 0);
  const other = new CounterView(table.buffers, 1);
  const slot = table.allocate();
  const logger = pino({ level: "silent" });
  const chooser = new BackendChooser({ algorithm: "round_robin", queueTimeoutMs, counters: here, warn: new RateLimitedLog(logger), threaded: true });
  const view: BackendView = { key: "10.0.0.2:80", host: "10.0.0.2", port: 80, weight: 1, slot, maxConnections: 1 };
  const snapshot: Snapshot = { version: 1, routable: [view], total: 1, limited: true, ramping: false, onBackups: false };
  chooser.setSnapshot(snapshot);
  return { chooser, here, other, view, slot };
}

describe("BackendChooser with per-backend limits", () => {
  it("a newcomer waits behind the clients already queued, even when a place has just freed on another thread", async () => {
    const { chooser, other, view, slot } = setUp();
    const log: string[] = [];
    // The one place is held by a connection of the other thread.
    assert.ok(other.openedWithin(slot, 1));
    assert.equal(chooser.acquire(fakeConnection("first", log)), null, "queued: the backend is full");
    assert.equal(chooser.queue.size, 1);
    // The other thread's connection ends; before this thread has been woken by it, a
    // new client arrives. It must not take the place the first one has waited for.
    other.closed(slot, 0, 0);
    other.roomFreed();
    const second = chooser.acquire(fakeConnection("second", log));
    assert.equal(second, null, "the newcomer queues instead of jumping ahead");
    await waitUntil(() => log.length > 0);
    assert.deepEqual(log, ["first dequeued"]);
    assert.equal(chooser.queue.size, 1, "the second waits on");
    chooser.release(view, 0, 0); // the first client's connection ends: the second's turn
    await waitUntil(() => log.length > 1);
    assert.deepEqual(log, ["first dequeued", "second dequeued"]);
    chooser.queue.stop();
  });

  it("serves queued clients in arrival order as places free on this thread", async () => {
    const { chooser, view } = setUp();
    const log: string[] = [];
    assert.equal(chooser.acquire(fakeConnection("holder", log)), view);
    for (const name of ["a", "b", "c"]) assert.equal(chooser.acquire(fakeConnection(name, log)), null);
    for (let i = 1; i <= 3; i++) {
      chooser.release(view, 0, 0);
      await waitUntil(() => log.length === i);
    }
    assert.deepEqual(log, ["a dequeued", "b dequeued", "c dequeued"]);
    chooser.queue.stop();
  });

  it("a reload setting the queue timeout to 0 leaves queued clients to their deadlines, and the thread free meanwhile", async () => {
    const { chooser, view } = setUp(300);
    const log: string[] = [];
    assert.equal(chooser.acquire(fakeConnection("holder", log)), view);
    const queuedAt = performance.now();
    assert.equal(chooser.acquire(fakeConnection("first", log)), null);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(chooser.acquire(fakeConnection("second", log)), null);
    chooser.queue.setTimeout(0); // as a reload to timeouts.queue: 0s does
    // Timers still run (a thread spinning on its queue would run none of them)...
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    await waitUntil(() => log.length === 2, 2000);
    clearInterval(ticker);
    // ...and the clients waited until their own deadlines, set when they queued.
    assert.deepEqual(log, ["first closed", "second closed"]);
    assert.ok(performance.now() - queuedAt >= 390, "the second waited its 300 ms");
    assert.ok(ticks >= 10, `timers ran ${ticks} times meanwhile`);
    chooser.queue.stop();
  });
});

/** A chooser per thread over one shared table, one backend with max_connections 1. */
function twoThreads() {
  const table = new CounterTable(2);
  const slot = table.allocate();
  const logger = pino({ level: "silent" });
  const view: BackendView = { key: "10.0.0.2:80", host: "10.0.0.2", port: 80, weight: 1, slot, maxConnections: 1 };
  const snapshot: Snapshot = { version: 1, routable: [view], total: 1, limited: true, ramping: false, onBackups: false };
  const [zero, one] = [0, 1].map((thread) => {
    const chooser = new BackendChooser({ algorithm: "round_robin", queueTimeoutMs: 2000, counters: new CounterView(table.buffers, thread), warn: new RateLimitedLog(logger), threaded: true });
    chooser.setSnapshot(snapshot);
    return chooser;
  });
  return { zero: zero!, one: one!, view, table, slot };
}
describe("BackendChooser queue across two threads", () => {


  it("a place freed on one thread goes to the client that came first, though it waits on the other", async () => {
    const { zero, one, view } = twoThreads();
    const log: string[] = [];
    assert.equal(zero.acquire(fakeConnection("holder", log)), view);
    assert.equal(one.acquire(fakeConnection("first", log)), null);
    assert.equal(zero.acquire(fakeConnection("second", log)), null, "queued behind the first, on the other thread");
    zero.release(view, 0, 0); // freed on thread 0, where "second" waits
    await waitUntil(() => log.length > 0);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(log, ["first dequeued"]);
    one.release(view, 0, 0);
    await waitUntil(() => log.length > 1);
    assert.deepEqual(log, ["first dequeued", "second dequeued"]);
    zero.queue.stop();
    one.queue.stop();
  });

  it("a client that leaves the queue hands the turn on to the other thread's next", async () => {
    const { zero, one, view } = twoThreads();
    const log: string[] = [];
    assert.equal(zero.acquire(fakeConnection("holder", log)), view);
    const gone = fakeConnection("gone", log);
    assert.equal(one.acquire(gone), null);
    assert.equal(zero.acquire(fakeConnection("next", log)), null);
    assert.equal(zero.queue.anyWaiting, true);
    gone.deadlines!.remove(gone); // what closing a queued connection does
    zero.release(view, 0, 0);
    await waitUntil(() => log.length > 0);
    assert.deepEqual(log, ["next dequeued"]);
    assert.equal(one.queue.anyWaiting, false, "nobody counted as waiting any more");
    zero.queue.stop();
    one.queue.stop();
  });
});

describe("BackendChooser queue across two threads, a departure alone", () => {
  it("wakes the other thread when the client that went first leaves, with a place already free", async () => {
    const { zero, one, view, table, slot } = twoThreads();
    const log: string[] = [];
    assert.equal(zero.acquire(fakeConnection("holder", log)), view);
    const gone = fakeConnection("gone", log);
    assert.equal(one.acquire(gone), null);
    assert.equal(zero.acquire(fakeConnection("next", log)), null);
    await new Promise((r) => setTimeout(r, 20)); // both threads now wait on each other
    // The place frees without a word to either thread...
    new CounterView(table.buffers, 0).closed(slot, 0, 0);
    // ...so only the first client's leaving can tell thread 0 its client goes next.
    gone.deadlines!.remove(gone);
    await waitUntil(() => log.length > 0);
    assert.deepEqual(log, ["next dequeued"]);
    zero.queue.stop();
    one.queue.stop();
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 1000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}
