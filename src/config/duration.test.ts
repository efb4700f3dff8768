import assert from "node:assert/strict";
import { it } from "node:test";
import { formatDuration, parseDuration } from "./duration.ts";

it("parses Go-style durations", () => {
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(parseDuration("5s"), 5000);
  assert.equal(parseDuration("1m30s"), 90_000);
  assert.equal(parseDuration("1.5h"), 5_400_000);
  assert.equal(parseDuration("0"), 0);
  for (const bad of ["", "5", "5 s", "s", "5x", "-1s", "1s junk"]) assert.equal(parseDuration(bad), undefined, bad);
});

it("formats milliseconds back", () => {
  assert.equal(formatDuration(2000), "2s");
  assert.equal(formatDuration(250), "250ms");
  assert.equal(formatDuration(90_000), "90s");
  assert.equal(formatDuration(600_000), "10m");
});
