// End-to-end: admin states (ready, drain, maint) and clearing a weight override through
// the API, as users of HAProxy's "set server state" would use them.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { cleanup, connect, request, roundTrip, startBalancer, startEchoBackend, tempDir, waitFor, type BalancerProcess } from "./harness.ts";

afterEach(cleanup);

interface BackendJson {
  address: string;
  weight: number;
  total_connections: number;
  status: string;
  state: string;
  last_checked_at: string | null;
}

async function put(lb: BalancerProcess, address: string, body: unknown): Promise<{ status: number; body: BackendJson & { error?: string } }> {
  const res = await fetch(`${lb.api}/backends/${encodeURIComponent(address)}`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as BackendJson & { error?: string } };
}

async function get(lb: BalancerProcess, address: string): Promise<BackendJson> {
  return (await (await fetch(`${lb.api}/backends/${encodeURIComponent(address)}`)).json()) as BackendJson;
}

describe("admin state", () => {
  for (const workers of [1, 2]) {
    it(`drain: no new connections, open ones carry on, health checks go on; ready: back in rotation (workers: ${workers})`, async () => {
      const [a, b] = await Promise.all([startEchoBackend(), startEchoBackend()]);
      const lb = await startBalancer({
        workers,
        health_check: { interval: "100ms", timeout: "500ms" },
        discovery: { type: "static", backends: [{ address: a.address }, { address: b.address }] },
      });
      const open = await connect(lb.port); // round robin: the first connection goes to a
      await roundTrip(open);

      const drained = await put(lb, a.address, { state: "drain" });
      assert.equal(drained.status, 200);
      assert.deepEqual([drained.body.state, drained.body.status], ["drain", "draining"]);
      const total = async (s: { address: string }) => (await get(lb, s.address)).total_connections;
      const bBefore = await total(b);
      for (let i = 0; i < 4; i++) assert.equal(await request(lb.port, `x${i}`), `x${i}`);
      assert.equal((await total(b)) - bBefore, 4, "every new connection went to b");
      assert.equal(await total(a), 1, "none to the drained backend");
      // The open connection to a still works.
      assert.equal(await roundTrip(open, "still here"), "still here");
      open.destroy();
      // Checks go on while drained: the last check time keeps moving.
      const checked = (await get(lb, a.address)).last_checked_at;
      assert.notEqual(checked, null);
      await waitFor(async () => (await get(lb, a.address)).last_checked_at !== checked, 3000, "a check while drained");

      const ready = await put(lb, a.address, { state: "ready" });
      assert.deepEqual([ready.body.state, ready.body.status], ["ready", "up"]);
      for (let i = 0; i < 4; i++) await request(lb.port, "y");
      assert.equal(await total(a), 3, "a takes its share again");
    });
  }

  for (const workers of [1, 2]) {
    it(`maint: health checks pause, an open connection carries on, and checks start again on ready (workers: ${workers})`, async () => {
      const echo = await startEchoBackend();
      const lb = await startBalancer({
        workers,
        health_check: { interval: "100ms", timeout: "500ms" },
        discovery: { type: "static", backends: [{ address: echo.address }] },
      });
      await waitFor(async () => (await get(lb, echo.address)).last_checked_at !== null, 3000, "a first check");
      const open = await connect(lb.port);
      assert.equal(await roundTrip(open, "before"), "before");
      const maint = await put(lb, echo.address, { state: "maint" });
      assert.deepEqual([maint.body.state, maint.body.status], ["maint", "draining"]);
      const frozen = (await get(lb, echo.address)).last_checked_at;
      await new Promise((r) => setTimeout(r, 600));
      assert.equal((await get(lb, echo.address)).last_checked_at, frozen, "no check while in maint");
      assert.equal(await request(lb.port).catch(() => ""), "", "no backend takes a new connection");
      assert.equal(await roundTrip(open, "during"), "during", "the open connection carries on");
      await put(lb, echo.address, { state: "ready" });
      await waitFor(async () => (await get(lb, echo.address)).last_checked_at !== frozen, 3000, "checks again after ready");
      assert.equal(await request(lb.port, "back"), "back");
      assert.equal(await roundTrip(open, "after"), "after");
      open.destroy();
    });
  }

  it("a weight of null clears the override; states and weights survive a restart", async () => {
    const echo = await startEchoBackend();
    const dir = tempDir();
    const config = { discovery: { type: "static", backends: [{ address: echo.address, weight: 3 }] } };
    let lb = await startBalancer(config, { dir });
    assert.equal((await put(lb, echo.address, { weight: 7, state: "drain" })).body.weight, 7);
    await lb.stop();
    lb = await startBalancer(config, { dir });
    const restored = await get(lb, echo.address);
    assert.deepEqual([restored.weight, restored.state, restored.status], [7, "drain", "draining"]);
    const cleared = await put(lb, echo.address, { weight: null, state: "ready" });
    assert.deepEqual([cleared.body.weight, cleared.body.state, cleared.body.status], [3, "ready", "up"]);
    await lb.stop();
    lb = await startBalancer(config, { dir });
    const again = await get(lb, echo.address);
    assert.deepEqual([again.weight, again.state], [3, "ready"]);
  });

  it("refuses what it cannot do, naming the field, and changes nothing", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ discovery: { type: "static", backends: [{ address: echo.address }] } });
    const bad = await put(lb, echo.address, { state: "off", weight: 5 });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error!, /^state: must be one of ready, drain, maint$/);
    const missing = await put(lb, "127.0.0.1:1", { state: "drain" });
    assert.equal(missing.status, 404);
    const now = await get(lb, echo.address);
    assert.deepEqual([now.weight, now.state], [1, "ready"]);
  });
});
