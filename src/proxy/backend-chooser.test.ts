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
function setUp() {
  const table = new CounterTable(2);
  const here = new CounterView(table.buffers, 0);
  const other = new CounterView(table.buffers, 1);
  const slot = table.allocate();
  const logger = pino({ level: "silent" });
  const chooser = new BackendChooser({ algorithm: "round_robin", queueTimeoutMs: 2000, counters: here, warn: new RateLimitedLog(logger), threaded: true });
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
});

async function waitUntil(check: () => boolean, timeoutMs = 1000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}
