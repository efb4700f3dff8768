import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RiseFall } from "./rise-fall.ts";

describe("rise/fall", () => {
  it("starts healthy and goes down on exactly the fall-th consecutive failure", () => {
    const s = new RiseFall(2, 3);
    assert.equal(s.healthy, true);
    assert.deepEqual([s.failure(), s.failure(), s.failure()], [false, false, true]);
    assert.equal(s.healthy, false);
    assert.equal(s.failure(), false, "already down: no second change");
  });

  it("comes back on exactly the rise-th consecutive success", () => {
    const s = new RiseFall(2, 1);
    s.failure();
    assert.deepEqual([s.success(), s.success()], [false, true]);
    assert.equal(s.healthy, true);
    assert.equal(s.success(), false);
  });

  it("a success resets the failure streak and a failure the success streak", () => {
    const up = new RiseFall(2, 2);
    for (let i = 0; i < 20; i++) assert.equal(i % 2 === 0 ? up.failure() : up.success(), false);
    assert.equal(up.healthy, true);
    const down = new RiseFall(2, 1);
    down.failure();
    for (let i = 0; i < 20; i++) assert.equal(i % 2 === 0 ? down.success() : down.failure(), false);
    assert.equal(down.healthy, false);
  });

  it("rise 1 / fall 1 follow every result", () => {
    const s = new RiseFall(1, 1);
    assert.equal(s.failure(), true);
    assert.equal(s.success(), true);
    assert.equal(s.failure(), true);
  });
});
