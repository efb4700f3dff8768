import assert from "node:assert/strict";
import { describe, it } from "node:test";
import pino from "pino";
import { parseHostPort } from "./address.ts";
import { CounterTable } from "./counters.ts";
import { BackendPool, PoolError, type DesiredBackend, type Snapshot } from "./pool.ts";
import { SHARE_FULL } from "./slow-start.ts";

const logger = pino({ level: "silent" });

function pool(now?: () => number): { pool: BackendPool; snapshots: Snapshot[] } {
  const p = new BackendPool({ logger, counters: new CounterTable(1), ...(now ? { now } : {}) });
  const snapshots: Snapshot[] = [];
  p.onSnapshot((s) => snapshots.push(s));
  return { pool: p, snapshots };
}

const desired = (address: string, extra: Partial<DesiredBackend> = {}): DesiredBackend => ({ address: parseHostPort(address), weight: 1, ...extra });
const keys = (s: Snapshot) => s.routable.map((v) => v.key);

describe("BackendPool", () => {
  it("reconciles a source to exactly its desired set, one snapshot per change, none when nothing changed", () => {
    const { pool: p, snapshots } = pool();
    const joined: string[][] = [];
    p.onMembership((c) => joined.push([...c.added.map((v) => `+${v.key}`), ...c.removed.map((v) => `-${v.key}`)]));
    p.reconcile("static", [desired("10.0.0.1:80"), desired("10.0.0.2:80")]);
    assert.deepEqual(keys(p.snapshot()), ["10.0.0.1:80", "10.0.0.2:80"]);
    p.reconcile("static", [desired("10.0.0.1:80"), desired("10.0.0.2:80")]);
    assert.equal(snapshots.length, 1, "an unchanged set publishes nothing");
    p.reconcile("static", [desired("10.0.0.2:80", { weight: 3 }), desired("10.0.0.3:80")]);
    assert.deepEqual(keys(p.snapshot()), ["10.0.0.2:80", "10.0.0.3:80"]);
    assert.equal(p.snapshot().routable[0]!.weight, 3);
    assert.deepEqual(joined, [["+10.0.0.1:80", "+10.0.0.2:80"], ["+10.0.0.3:80", "-10.0.0.1:80"]]);
    assert.equal(snapshots.length, 2);
  });

  it("the first source to name a backend owns it; the API cannot delete what others own", () => {
    const { pool: p } = pool();
    p.reconcile("static", [desired("10.0.0.1:80")]);
    assert.throws(() => p.add("api", parseHostPort("10.0.0.1:80"), 1), (e: PoolError) => e.kind === "exists" && /source: static/.test(e.message));
    assert.throws(() => p.remove("api", "10.0.0.1:80"), (e: PoolError) => e.kind === "owned");
    assert.throws(() => p.remove("api", "10.0.0.9:80"), (e: PoolError) => e.kind === "not_found");
    p.add("api", parseHostPort("10.0.0.2:80"), 2);
    assert.equal(p.get("10.0.0.2:80")!.source, "api");
    p.remove("api", "10.0.0.2:80");
    assert.equal(p.has("10.0.0.2:80"), false);
  });

  it("a weight override wins over the source's weight until cleared", () => {
    const { pool: p } = pool();
    p.reconcile("static", [desired("10.0.0.1:80", { weight: 2 })]);
    assert.equal(p.setWeight("10.0.0.1:80", 7).weight, 7);
    p.reconcile("static", [desired("10.0.0.1:80", { weight: 4 })]);
    assert.equal(p.get("10.0.0.1:80")!.weight, 7, "the override stands");
    assert.equal(p.setWeight("10.0.0.1:80", undefined).weight, 4);
    assert.deepEqual(p.weightOverrides(), []);
  });

  it("drain and maint take a backend out of rotation, ready brings it back; unhealthy ones are not routable", () => {
    const { pool: p } = pool();
    p.reconcile("static", [desired("10.0.0.1:80"), desired("10.0.0.2:80")]);
    const states: string[] = [];
    p.onAdminState((view, state, previous) => states.push(`${view.key}:${previous}->${state}`));
    assert.equal(p.setAdminState("10.0.0.1:80", "drain").status, "draining");
    assert.deepEqual(keys(p.snapshot()), ["10.0.0.2:80"]);
    p.setAdminState("10.0.0.1:80", "maint");
    p.setAdminState("10.0.0.1:80", "ready");
    assert.deepEqual(states, ["10.0.0.1:80:ready->drain", "10.0.0.1:80:drain->maint", "10.0.0.1:80:maint->ready"]);
    p.setHealthy("10.0.0.2:80", false, "refused");
    assert.deepEqual(keys(p.snapshot()), ["10.0.0.1:80"]);
    assert.equal(p.get("10.0.0.2:80")!.status, "down");
    assert.equal(p.get("10.0.0.2:80")!.lastError, "refused");
  });

  it("backups are routable only while no primary is, and left as soon as one is back", () => {
    const { pool: p } = pool();
    p.reconcile("static", [desired("10.0.0.1:80"), desired("10.0.0.2:80"), desired("10.0.0.9:80", { backup: true })]);
    assert.deepEqual(keys(p.snapshot()), ["10.0.0.1:80", "10.0.0.2:80"]);
    assert.equal(p.snapshot().onBackups, false);
    p.setHealthy("10.0.0.1:80", false, "down");
    assert.deepEqual(keys(p.snapshot()), ["10.0.0.2:80"], "one primary is enough");
    p.setAdminState("10.0.0.2:80", "maint");
    assert.deepEqual(keys(p.snapshot()), ["10.0.0.9:80"]);
    assert.equal(p.snapshot().onBackups, true);
    p.setHealthy("10.0.0.1:80", true, "back");
    assert.deepEqual(keys(p.snapshot()), ["10.0.0.1:80"]);
    assert.equal(p.snapshot().onBackups, false);
  });

  it("a snapshot says whether any routable backend has a connection limit; options change without a new backend", () => {
    const { pool: p } = pool();
    p.reconcile("static", [desired("10.0.0.1:80"), desired("10.0.0.2:80")]);
    assert.equal(p.snapshot().limited, false);
    p.reconcile("static", [desired("10.0.0.1:80", { maxConnections: 5, proxyProtocol: "v2" }), desired("10.0.0.2:80")]);
    assert.equal(p.snapshot().limited, true);
    const info = p.get("10.0.0.1:80")!;
    assert.deepEqual([info.maxConnections, info.proxyProtocol, info.backup], [5, "v2", false]);
    assert.equal(p.snapshot().routable[0]!.maxConnections, 5);
    p.setAdminState("10.0.0.1:80", "drain");
    assert.equal(p.snapshot().limited, false, "only routable backends count");
  });

  it("slow start: nothing ramps before it is set; then a returning backend goes from a tenth to all of its share in steps", async () => {
    let now = 1000;
    const { pool: p } = pool(() => now);
    p.reconcile("static", [desired("10.0.0.1:80"), desired("10.0.0.2:80", { weight: 3 })]);
    p.setSlowStart(9000);
    assert.equal(p.snapshot().ramping, false, "backends already up are not ramped");
    p.setHealthy("10.0.0.2:80", false, "down");
    p.setHealthy("10.0.0.2:80", true, "up");
    const share = () => p.snapshot().routable.find((v) => v.key === "10.0.0.2:80")!.share;
    assert.equal(p.snapshot().ramping, true);
    assert.equal(share(), 1);
    assert.equal(p.get("10.0.0.2:80")!.weight, 3, "the API shows the configured weight");
    // Steps every ramp / 9: share k + 1 after k steps, whatever the clock reads between.
    let weight = 1;
    for (const [at, expected] of [[0, 1], [999, 1], [1000, 2], [4500, 5], [8999, 9], [9000, SHARE_FULL]] as const) {
      now = 1000 + at;
      p.setWeight("10.0.0.1:80", (weight = 3 - weight)); // any change publishes, with shares as of now
      assert.equal(share(), expected, `${at} ms into the ramp`);
    }
    assert.equal(p.snapshot().ramping, false);
    p.stop();
  });

  it("slow start steps on its own timer, and a new backend ramps too", async () => {
    const { pool: p, snapshots } = pool();
    p.reconcile("static", [desired("127.0.0.1:1")]);
    p.setSlowStart(90);
    p.reconcile("static", [desired("127.0.0.1:1"), desired("127.0.0.1:2")]);
    const shares = () => snapshots.map((s) => s.routable.find((v) => v.key === "127.0.0.1:2")?.share).filter((x) => x !== undefined);
    await new Promise((r) => setTimeout(r, 250));
    const seen = shares();
    assert.equal(seen[0], 1);
    assert.equal(seen.at(-1), SHARE_FULL);
    assert.ok(seen.length >= 5 && seen.length <= SHARE_FULL, `a bounded number of steps: ${seen.join(",")}`);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, `rising: ${seen.join(",")}`);
    p.stop();
  });
});
