import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backoffDelay, sleep } from "./retry.ts";

describe("discovery backoff", () => {
  const backoff = { initialMs: 500, maxMs: 30_000 };

  it("doubles from initialMs per attempt up to maxMs", () => {
    const middle = () => 0.5; // no jitter
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8, 9].map((a) => backoffDelay(backoff, a, middle)), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    assert.equal(backoffDelay(backoff, 100_000, middle), 30_000);
  });

  it("spreads every delay by ±20%, and by no more", () => {
    assert.equal(backoffDelay(backoff, 1, () => 0), 400);
    assert.equal(backoffDelay(backoff, 1, () => 0.999999), 600);
    assert.equal(backoffDelay(backoff, 12, () => 0), 24_000);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(backoff, 3);
      assert.ok(d >= 1600 && d <= 2400, String(d));
      seen.add(d);
    }
    assert.ok(seen.size > 20, "the delays differ from one another");
  });
});

describe("abortable sleep", () => {
  it("resolves after the delay", async () => {
    const t0 = performance.now();
    await sleep(50, new AbortController().signal);
    assert.ok(performance.now() - t0 >= 45);
  });

  it("resolves at once when aborted, before or during the wait, and never rejects", async () => {
    const before = new AbortController();
    before.abort(new Error("stopped"));
    const t0 = performance.now();
    await sleep(60_000, before.signal);
    const during = new AbortController();
    setTimeout(() => during.abort(), 20);
    await sleep(60_000, during.signal);
    assert.ok(performance.now() - t0 < 5000);
  });
});
