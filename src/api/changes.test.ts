import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pino from "pino";
import { parseHostPort } from "../pool/address.ts";
import { CounterTable } from "../pool/counters.ts";
import { BackendPool, PoolError } from "../pool/pool.ts";
import { BackendChanges } from "./changes.ts";
import { EMPTY_STATE, type PersistedState, type StateStore } from "../store/store.ts";

const logger = pino({ level: "silent" });
const hp = parseHostPort;

/** A store held in memory whose writes finish when the test says so. */
class ManualStore implements StateStore {
  readonly path = "/state/test.json";
  readonly writes: PersistedState[] = [];
  initial: PersistedState = EMPTY_STATE;
  failNext = false;
  private release: Array<() => void> = [];

  async read(): Promise<PersistedState> {
    return this.initial;
  }

  write(state: PersistedState): Promise<void> {
    this.writes.push(state);
    const fail = this.failNext;
    this.failNext = false;
    return new Promise((resolve, reject) => this.release.push(() => (fail ? reject(new Error("disk full")) : resolve())));
  }

  /** Lets the write in flight finish. */
  finish(): void {
    this.release.shift()?.();
  }

  get inFlight(): number {
    return this.release.length;
  }
}

async function setup(initial: PersistedState = EMPTY_STATE) {
  const pool = new BackendPool({ logger, counters: new CounterTable(1) });
  const store = new ManualStore();
  store.initial = initial;
  const changes = new BackendChanges({ pool, store, logger });
  await changes.restore();
  return { pool, store, changes };
}

const tick = () => new Promise((r) => setImmediate(r));
const keys = (s: PersistedState) => ({
  backends: s.backends.map((b) => `${b.address.key}=${b.weight}`),
  weights: s.weights.map((w) => `${w.address.key}=${w.weight}`),
});

describe("BackendChanges", () => {
  it("acknowledges a change only once it is written, coalescing changes made meanwhile", async () => {
    const { pool, store, changes } = await setup();
    let acked = 0;
    const first = changes.add(hp("127.0.0.1:1"), 1).then(() => acked++);
    // Applied at once (the next connection sees it), but not yet acknowledged.
    assert.ok(pool.has("127.0.0.1:1"));
    const rest = [2, 3, 4, 5].map((p) => changes.add(hp(`127.0.0.1:${p}`), p).then(() => acked++));
    await tick();
    assert.equal(acked, 0);
    assert.equal(store.writes.length, 1, "one write in flight at a time");
    store.finish();
    await first;
    assert.equal(acked, 1);
    await tick();
    assert.equal(store.writes.length, 2, "the four queued changes share the next write");
    assert.deepEqual(keys(store.writes[1]!).backends, ["127.0.0.1:1=1", "127.0.0.1:2=2", "127.0.0.1:3=3", "127.0.0.1:4=4", "127.0.0.1:5=5"]);
    store.finish();
    await Promise.all(rest);
    assert.equal(acked, 5);
    await changes.settled();
  });

  it("undoes every unacknowledged change when a write fails", async () => {
    const { pool, store, changes } = await setup({
      backends: [{ address: hp("127.0.0.1:1"), weight: 1 }, { address: hp("127.0.0.1:2"), weight: 2 }],
      weights: [],
    });
    pool.reconcile("static", [{ address: hp("127.0.0.1:9"), weight: 1 }]);
    store.failNext = true;
    const inFirstWrite = [changes.add(hp("127.0.0.1:3"), 3), changes.setWeight(hp("127.0.0.1:9"), 50)];
    await tick();
    const queued = [changes.remove(hp("127.0.0.1:1")), changes.setWeight(hp("127.0.0.1:2"), 20)];
    assert.equal(pool.get("127.0.0.1:9")!.weight, 50);
    store.finish();
    for (const p of [...inFirstWrite, ...queued]) await assert.rejects(p, /change not saved and undone: disk full/);
    assert.deepEqual(
      pool.list().map((b) => `${b.address}=${b.weight}/${b.source}`).sort(),
      ["127.0.0.1:1=1/api", "127.0.0.1:2=2/api", "127.0.0.1:9=1/static"],
    );
    // Later changes work again and build on the restored state.
    const ok = changes.add(hp("127.0.0.1:4"), 4);
    await tick();
    store.finish();
    await ok;
    assert.deepEqual(keys(store.writes.at(-1)!).backends, ["127.0.0.1:1=1", "127.0.0.1:2=2", "127.0.0.1:4=4"]);
  });

  it("applies a saved weight when discovery brings its backend, and again when it returns", async () => {
    const { pool } = await setup({ backends: [], weights: [{ address: hp("10.0.0.4:3000"), weight: 9 }] });
    const snapshots: number[] = [];
    pool.onSnapshot((s) => snapshots.push(s.routable[0]?.weight ?? 0));
    pool.reconcile("static", [{ address: hp("10.0.0.4:3000"), weight: 1 }]);
    assert.equal(pool.get("10.0.0.4:3000")!.weight, 9);
    assert.equal(snapshots.at(-1), 9);
    pool.reconcile("static", []);
    pool.reconcile("static", [{ address: hp("10.0.0.4:3000"), weight: 1 }]);
    assert.equal(pool.get("10.0.0.4:3000")!.weight, 9);
  });

  it("restores API backends and folds their weight changes into them", async () => {
    const { pool, store, changes } = await setup({ backends: [{ address: hp("127.0.0.1:1"), weight: 2 }], weights: [] });
    assert.equal(pool.get("127.0.0.1:1")!.source, "api");
    const p = changes.setWeight(hp("127.0.0.1:1"), 5);
    store.finish();
    await p;
    assert.deepEqual(keys(store.writes[0]!), { backends: ["127.0.0.1:1=5"], weights: [] });
  });

  it("refuses what the pool refuses, without writing", async () => {
    const { pool, store, changes } = await setup();
    pool.reconcile("static", [{ address: hp("127.0.0.1:9"), weight: 1 }]);
    await assert.rejects(changes.add(hp("127.0.0.1:9"), 1), (e: Error) => e instanceof PoolError && e.kind === "exists");
    await assert.rejects(changes.remove(hp("127.0.0.1:9")), (e: Error) => e instanceof PoolError && e.kind === "owned");
    await assert.rejects(changes.setWeight(hp("127.0.0.1:8"), 2), (e: Error) => e instanceof PoolError && e.kind === "not_found");
    assert.equal(store.writes.length, 0);
  });

  it("withdraws the API's weight when deleting a backend that static config also names", async () => {
    const { pool, store, changes } = await setup({ backends: [{ address: hp("127.0.0.1:1"), weight: 2 }], weights: [] });
    pool.reconcile("static", [{ address: hp("127.0.0.1:1"), weight: 1 }]);
    const put = changes.setWeight(hp("127.0.0.1:1"), 7);
    store.finish();
    await put;
    const del = changes.remove(hp("127.0.0.1:1"));
    store.finish();
    await del;
    assert.deepEqual({ weight: pool.get("127.0.0.1:1")!.weight, source: pool.get("127.0.0.1:1")!.source }, { weight: 1, source: "static" });
    assert.deepEqual(keys(store.writes.at(-1)!), { backends: [], weights: [] });
  });

  it("an explicit weight on add beats a weight remembered for an absent backend", async () => {
    const { pool, store, changes } = await setup({ backends: [], weights: [{ address: hp("127.0.0.1:1"), weight: 9 }] });
    const add = changes.add(hp("127.0.0.1:1"), 2);
    store.finish();
    await add;
    assert.equal(pool.get("127.0.0.1:1")!.weight, 2);
    assert.deepEqual(keys(store.writes[0]!), { backends: ["127.0.0.1:1=2"], weights: [] });
    assert.equal(store.inFlight, 0);
  });
});
