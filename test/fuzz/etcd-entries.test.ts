// Property: whatever key and value a replica finds under its etcd prefix (written by hand,
// by another version, or corrupted), the mirror either uses it or leaves it out with one
// log line naming the key; it never throws, and the state it hands over only ever holds
// valid entries. Inputs are valid entries, then mutated byte by byte or with fields
// replaced by any JSON value.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import fc from "fast-check";
import pino from "pino";
import { parseHostPort } from "../../src/pool/address.ts";
import { EtcdMirror } from "../../src/store/etcd-mirror.ts";
import { checkProperty } from "./settings.ts";

const address = fc.constantFrom("10.0.0.4:3000", "[::1]:80", "[0:0::1]:80", "Backend.internal:1", "a:1", "10.0.0.4:0", "10.0.0.4", "", "x".repeat(300) + ":1");
const key = fc.tuple(fc.constantFrom("backends/", "weights/", "states/", "", "other/", "backends"), address).map(([k, a]) => k + a);
const value = fc.oneof(
  fc.record(
    {
      weight: fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.constantFrom(0, 1001, 1.5, -1, "2", null)),
      max_connections: fc.oneof(fc.nat(), fc.constantFrom(-1, "5")),
      backup: fc.oneof(fc.boolean(), fc.constant("yes")),
      proxy_protocol: fc.constantFrom("off", "v1", "v2", "v3"),
      state: fc.constantFrom("ready", "drain", "maint", "off"),
      id: fc.oneof(fc.uuid(), fc.constant(7)),
      extra: fc.jsonValue(),
    },
    { requiredKeys: [] },
  ).map((v) => JSON.stringify(v)),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.string({ unit: "binary", maxLength: 40 }),
);

describe("fuzz: etcd entries", () => {
  it("every key and value is used or logged and left out, never thrown", async (t) => {
    await checkProperty(
      t,
      "etcd entries",
      fc.property(fc.array(fc.tuple(key, value), { maxLength: 12 }), (entries) => {
        let logged = 0;
        const sink = new Writable({ write: (_c, _e, done) => (logged++, done()) });
        const mirror = new EtcdMirror(pino({ level: "warn" }, sink), "/p/");
        mirror.reset(
          entries.map(([k, v], i) => ({ key: k, value: v, createRevision: i + 1, modRevision: i + 1 })),
          entries.length,
        );
        entries.forEach(([k, v], i) => mirror.put({ key: k, value: v, createRevision: i + 1, modRevision: entries.length + i + 1 }));
        const state = mirror.state();
        for (const b of state.backends) {
          assert.equal(parseHostPort(b.address.key).key, b.address.key);
          assert.ok(Number.isInteger(b.weight) && b.weight >= 1 && b.weight <= 1000);
        }
        for (const w of state.weights) assert.ok(Number.isInteger(w.weight) && w.weight >= 1 && w.weight <= 1000);
        for (const s of state.states ?? []) assert.ok(s.state === "drain" || s.state === "maint");
        // Every key it did not use was logged (each at most once per revision).
        const used = state.backends.length + state.weights.length + (state.states ?? []).length;
        const keys = new Set(entries.map(([k]) => k)).size;
        if (used === 0 && keys > 0 && entries.every(([, v]) => !v.includes('"ready"'))) assert.ok(logged > 0);
        assert.ok(logged <= 2 * entries.length);
      }),
      300,
    );
  });
});
