import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseHostPort } from "../pool/address.ts";
import { decodeEntry, encodeBackend, encodeState, encodeWeight, keyOf } from "./etcd-layout.ts";

describe("etcd key layout", () => {
  it("one key per backend, weight and state, by canonical address; values read back as written", () => {
    const address = parseHostPort("[0:0::1]:80");
    assert.equal(keyOf("backends", address), "backends/[::1]:80");
    assert.equal(keyOf("weights", parseHostPort("Example.COM:81")), "weights/example.com:81");
    const backend = { address, weight: 3, maxConnections: 50, backup: true, proxyProtocol: "v2" as const };
    const value = encodeBackend(backend, "id-1");
    assert.deepEqual(JSON.parse(value), { weight: 3, max_connections: 50, backup: true, proxy_protocol: "v2", id: "id-1" });
    assert.deepEqual(decodeEntry("backends/[::1]:80", value), { kind: "backends", id: "id-1", backend });
    assert.equal(encodeBackend({ address, weight: 1 }, undefined), '{"weight":1}');
    assert.deepEqual(decodeEntry("weights/10.0.0.4:3000", encodeWeight(5)), { kind: "weights", address: parseHostPort("10.0.0.4:3000"), weight: 5 });
    assert.deepEqual(decodeEntry("states/10.0.0.4:3000", encodeState("maint")), { kind: "states", address: parseHostPort("10.0.0.4:3000"), state: "maint" });
  });

  it("names what is wrong with a key or value it cannot use", () => {
    for (const [key, value, problem] of [
      ["config/x", "{}", /^not a key gobalancer writes/],
      ["backends", "{}", /^not a key gobalancer writes/],
      ["backends/10.0.0.1", "{}", /^address: "10.0.0.1" must be host:port/],
      ["backends/[0:0::1]:80", '{"weight":1}', /^address must be written canonically, as \[::1\]:80$/],
      ["backends/10.0.0.1:80", "{weight", /^value is not valid JSON/],
      ["backends/10.0.0.1:80", '{"weight":0}', /^value is invalid: weight: must be an integer 1-1000/],
      ["backends/10.0.0.1:80", '{"weight":1,"extra":true}', /^value is invalid: .*extra/],
      ["weights/10.0.0.1:80", "[]", /^value is invalid/],
      ["states/10.0.0.1:80", '{"state":"off"}', /^value is invalid: state: must be one of ready, drain, maint$/],
    ] as const) {
      const decoded = decodeEntry(key, value);
      assert.ok("problem" in decoded, `${key} ${value}`);
      assert.match(decoded.problem, problem, `${key} ${value}`);
    }
  });
});
