import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import pino from "pino";
import { EtcdMirror, type MirroredKeyValue } from "./etcd-mirror.ts";

function mirror() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk))), done()) });
  return { mirror: new EtcdMirror(pino({ level: "warn" }, sink), "/p/"), lines };
}
const kv = (key: string, value: unknown, modRevision: number, createRevision = modRevision): MirroredKeyValue => ({
  key,
  value: typeof value === "string" ? value : JSON.stringify(value),
  createRevision,
  modRevision,
});
const summary = (m: EtcdMirror) => {
  const s = m.state();
  return [
    ...s.backends.map((b) => `b ${b.address.key}=${b.weight}`),
    ...s.weights.map((w) => `w ${w.address.key}=${w.weight}`),
    ...(s.states ?? []).map((e) => `s ${e.address.key}=${e.state}`),
  ];
};

describe("EtcdMirror", () => {
  it("applies each change once, in revision order per key, whatever path brings it first", () => {
    const { mirror: m } = mirror();
    m.reset([kv("backends/10.0.0.1:80", { weight: 1 }, 5)], 10);
    // Older than the list: already in it.
    assert.equal(m.put(kv("backends/10.0.0.2:80", { weight: 1 }, 9)), false);
    assert.equal(m.put(kv("backends/10.0.0.1:80", { weight: 4 }, 11, 5)), true);
    // The same change again (an own write, then its watch event): nothing new.
    assert.equal(m.put(kv("backends/10.0.0.1:80", { weight: 4 }, 11, 5)), false);
    // A delete at 13 arrives before a put at 12: the put is stale when it comes.
    assert.equal(m.delete("backends/10.0.0.1:80", 13), true);
    assert.equal(m.put(kv("backends/10.0.0.1:80", { weight: 7 }, 12, 5)), false);
    assert.deepEqual(summary(m), []);
    assert.equal(m.put(kv("weights/10.0.0.9:80", { weight: 3 }, 14)), true);
    assert.equal(m.put(kv("states/10.0.0.9:80", { state: "drain" }, 15)), true);
    assert.equal(m.put(kv("states/10.0.0.8:80", { state: "ready" }, 16)), true);
    assert.deepEqual(summary(m), ["w 10.0.0.9:80=3", "s 10.0.0.9:80=drain"]);
    assert.deepEqual(m.backend({ host: "10.0.0.1", port: 80, key: "10.0.0.1:80" }), undefined);
  });

  it("a list replaces everything, older revisions included", () => {
    const { mirror: m } = mirror();
    m.reset([kv("backends/10.0.0.1:80", { weight: 1, id: "a" }, 3)], 3);
    assert.equal(m.put(kv("backends/10.0.0.2:80", { weight: 2 }, 20)), true);
    m.reset([kv("backends/10.0.0.3:80", { weight: 3 }, 7)], 30);
    assert.deepEqual(summary(m), ["b 10.0.0.3:80=3"]);
    assert.deepEqual({ ...m.backend({ host: "10.0.0.3", port: 80, key: "10.0.0.3:80" }), backend: undefined }, { createRevision: 7, id: undefined, backend: undefined });
  });

  it("leaves out what it cannot use, logging each key once per value, and a corrupt value hides the old one", () => {
    const { mirror: m, lines } = mirror();
    m.reset([kv("backends/10.0.0.1:80", { weight: 1 }, 2), kv("junk", "x", 3)], 5);
    m.reset([kv("backends/10.0.0.1:80", { weight: 1 }, 2), kv("junk", "x", 3)], 6);
    assert.equal(lines.length, 1, "the same bad key is logged once");
    assert.deepEqual([lines[0]!.key, lines[0]!.msg], ["/p/junk", "state store entry ignored"]);
    assert.equal(m.put(kv("backends/10.0.0.1:80", "{oops", 7, 2)), true);
    assert.deepEqual(summary(m), [], "every replica ends with the same state: without it");
    assert.match(String(lines[1]!.problem), /^value is not valid JSON/);
    assert.equal(m.put(kv("backends/10.0.0.1:80", { weight: 2 }, 8, 2)), true);
    assert.deepEqual(summary(m), ["b 10.0.0.1:80=2"]);
  });
});
