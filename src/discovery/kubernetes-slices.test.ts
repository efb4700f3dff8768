import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { choosePort, desiredFromSlices, sliceFacts, type SliceFacts, type SlicePort } from "./kubernetes-slices.ts";

/** An EndpointSlice in the API's JSON, trimmed to the fields that matter here. */
function slice(name: string, endpoints: unknown[], ports: unknown[] = [{ name: "http", protocol: "TCP", port: 8080 }], addressType = "IPv4"): unknown {
  return { kind: "EndpointSlice", apiVersion: "discovery.k8s.io/v1", metadata: { name, resourceVersion: "7" }, addressType, endpoints, ports };
}
const ep = (address: string, conditions: Record<string, boolean> = { ready: true, serving: true, terminating: false }) => ({ addresses: [address], conditions });

function desired(slices: unknown[], port = "") {
  const facts = slices.map((s) => sliceFacts(s)).filter((f): f is SliceFacts => f !== undefined);
  const { desired: list, problems } = desiredFromSlices(facts, port);
  return { keys: list.map((d) => (d.draining ? `${d.address.key} draining` : d.address.key)), problems: Object.fromEntries(problems) };
}

describe("EndpointSlice conditions", () => {
  it("ready endpoints are routable; not-ready ones are out", () => {
    const r = desired([slice("a", [ep("10.0.0.1"), ep("10.0.0.2", { ready: false, serving: false, terminating: false })])]);
    assert.deepEqual(r.keys, ["10.0.0.1:8080"]);
  });

  it("nil conditions: ready counts as ready, serving follows ready, terminating is false", () => {
    const r = desired([slice("a", [{ addresses: ["10.0.0.1"], conditions: {} }, { addresses: ["10.0.0.2"] }])]);
    assert.deepEqual(r.keys, ["10.0.0.1:8080", "10.0.0.2:8080"]);
  });

  it("serving and terminating drains; terminating and not serving is out", () => {
    const r = desired([
      slice("a", [
        ep("10.0.0.1", { ready: false, serving: true, terminating: true }),
        ep("10.0.0.2", { ready: false, serving: false, terminating: true }),
        ep("10.0.0.3", { ready: false, terminating: true }), // serving nil → follows ready → out
      ]),
    ]);
    assert.deepEqual(r.keys, ["10.0.0.1:8080 draining"]);
  });

  it("ready while terminating (publishNotReadyAddresses) stays routable", () => {
    const r = desired([slice("a", [ep("10.0.0.1", { ready: true, serving: true, terminating: true })])]);
    assert.deepEqual(r.keys, ["10.0.0.1:8080"]);
  });

  it("unions slices; an endpoint in two slices takes its best state", () => {
    const r = desired([
      slice("a", [ep("10.0.0.1"), ep("10.0.0.2", { ready: false, serving: true, terminating: true })]),
      slice("b", [ep("10.0.0.2"), ep("10.0.0.3")]),
      slice("c", [ep("10.0.0.1", { ready: false, serving: true, terminating: true })]),
    ]);
    assert.deepEqual(r.keys, ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]);
  });

  it("uses the first address of an endpoint", () => {
    assert.deepEqual(desired([slice("a", [{ addresses: ["10.0.0.1", "10.0.0.9"], conditions: { ready: true } }])]).keys, ["10.0.0.1:8080"]);
  });

  it("an empty slice (endpoints: null) contributes nothing and is no problem", () => {
    assert.deepEqual(desired([slice("a", null as unknown as unknown[])]), { keys: [], problems: {} });
  });
});

describe("address families", () => {
  it("IPv6 slices give bracketed, canonical addresses", () => {
    const r = desired([slice("v6", [ep("fd00:0:0::1"), ep("::1")], undefined, "IPv6"), slice("v4", [ep("10.0.0.1")])]);
    assert.deepEqual(r.keys, ["10.0.0.1:8080", "[::1]:8080", "[fd00::1]:8080"]);
  });

  it("FQDN slices are ignored with a reason", () => {
    const r = desired([slice("f", [ep("web.example.com")], undefined, "FQDN")]);
    assert.deepEqual(r.keys, []);
    assert.match(r.problems.f!, /addressType FQDN/);
  });

  it("an address of the wrong family is skipped, the rest of the slice used", () => {
    const r = desired([slice("a", [ep("::1"), ep("10.0.0.1")])]);
    assert.deepEqual(r.keys, ["10.0.0.1:8080"]);
    assert.match(r.problems.a!, /not IPv4: ::1/);
  });
});

describe("port selection", () => {
  const ports: SlicePort[] = [
    { name: "http", port: 8080, protocol: "TCP" },
    { name: "metrics", port: 9090, protocol: "TCP" },
    { name: "dns", port: 53, protocol: "UDP" },
  ];

  it("by name", () => assert.deepEqual(choosePort(ports, "metrics"), { port: 9090 }));
  it("by number", () => assert.deepEqual(choosePort(ports, "8080"), { port: 8080 }));
  it("the only TCP port when none is named, ignoring UDP", () => {
    assert.deepEqual(choosePort([ports[0]!, ports[2]!], ""), { port: 8080 });
    assert.deepEqual(choosePort([{ name: "", port: 80, protocol: "TCP" }], ""), { port: 80 });
  });
  it("several TCP ports and none named is a problem that lists them", () => {
    const r = choosePort(ports, "");
    assert.ok("problem" in r);
    assert.match(r.problem, /several TCP ports \(http=8080, metrics=9090\)/);
  });
  it("a missing name or number is a problem", () => {
    assert.ok("problem" in choosePort(ports, "grpc"));
    assert.ok("problem" in choosePort(ports, "53")); // UDP only
    assert.ok("problem" in choosePort([], ""));
    assert.ok("problem" in choosePort([{ name: "all", port: undefined, protocol: "TCP" }], ""));
  });

  it("a slice without the wanted port contributes nothing; others still do", () => {
    const r = desired(
      [slice("a", [ep("10.0.0.1")], [{ name: "http", port: 8080 }]), slice("b", [ep("10.0.0.2")], [{ name: "metrics", port: 9090 }])],
      "http",
    );
    assert.deepEqual(r.keys, ["10.0.0.1:8080"]);
    assert.deepEqual(Object.keys(r.problems), ["b"]);
    assert.match(r.problems.b!, /no TCP port named http \(ports: metrics=9090\)/);
  });
});

describe("sliceFacts", () => {
  it("rejects what is not a named object", () => {
    assert.equal(sliceFacts(null), undefined);
    assert.equal(sliceFacts({ metadata: {} }), undefined);
    assert.equal(sliceFacts([1]), undefined);
  });

  it("reads the protocol default and a missing port", () => {
    const f = sliceFacts({ metadata: { name: "a" }, addressType: "IPv4", endpoints: [], ports: [{ name: "x" }, { port: 1 }] });
    assert.deepEqual(f?.ports, [
      { name: "x", port: undefined, protocol: "TCP" },
      { name: "", port: 1, protocol: "TCP" },
    ]);
  });

  it("reads client-node's model objects the same as raw JSON", async () => {
    const { loadYaml, V1EndpointSlice } = await import("@kubernetes/client-node");
    const raw = slice("m", [ep("10.0.0.1", { ready: false, serving: true, terminating: true })]);
    // loadYaml deserializes by kind through the same serializer as API responses (JSON is YAML).
    const model: unknown = loadYaml(JSON.stringify(raw));
    assert.ok(model instanceof V1EndpointSlice);
    assert.deepEqual(sliceFacts(model), sliceFacts(raw));
  });
});
