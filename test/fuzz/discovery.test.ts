// Property: whatever a Docker engine or the Kubernetes API hands discovery (missing
// fields, wrong types, odd addresses, huge arrays), the conversion to backends gives a
// verdict or skips with a reason; it never throws, and every backend it gives is valid.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ContainerInspectInfo } from "dockerode";
import fc from "fast-check";
import { factsFromInspect, judge, NETWORK_LABEL, PORT_LABEL, WEIGHT_LABEL } from "../../src/discovery/docker-container.ts";
import { desiredFromSlices, sliceFacts } from "../../src/discovery/kubernetes-slices.ts";
import type { DesiredBackend } from "../../src/pool/pool.ts";
import { checkProperty } from "./settings.ts";

/** A value as an API might send it: the expected shape, or missing, null, or anything. */
function loosely<T>(expected: fc.Arbitrary<T>): fc.Arbitrary<unknown> {
  return fc.oneof({ arbitrary: expected, weight: 6 }, fc.constant(undefined), fc.constant(null), fc.anything({ maxDepth: 1 }));
}
/** Optional as the API documents it, but of its documented type when present. */
function optional<T>(expected: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> {
  return fc.oneof({ arbitrary: expected, weight: 6 }, fc.constant(undefined));
}

const ip = fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom("", "not-an-ip", "10.0.0.300", "::1", "[::1]", "fe80::1%eth0", "10.0.0.1:80", " 10.0.0.1"), fc.string({ maxLength: 20 }));
const number = fc.oneof(fc.integer({ min: -2, max: 70000 }), fc.constantFrom(0, 1, 80, 65535, 65536, 1.5, -0, Number.NaN, Infinity, 2 ** 53));

function assertBackend(b: DesiredBackend): void {
  assert.equal(typeof b.address.key, "string");
  assert.ok(Number.isInteger(b.address.port) && b.address.port >= 1 && b.address.port <= 65535, `port ${b.address.port}`);
  assert.ok(Number.isInteger(b.weight) && b.weight >= 1 && b.weight <= 1000, `weight ${b.weight}`);
}

// ---- Docker -------------------------------------------------------------------------------

const labelValue = fc.oneof(fc.constantFrom("true", "false", "TRUE", "", "80", "0", "65536", "1000", "1001", "08", "1e3", "-1", " 80", "bridge", "backend"), fc.string({ maxLength: 12 }));
const labels = fc.dictionary(fc.constantFrom("lb.enable", PORT_LABEL, WEIGHT_LABEL, NETWORK_LABEL, "other", "__proto__"), loosely(labelValue), { maxKeys: 5 });
/**
 * `docker inspect` output. `documented`: Id and Name always strings, addresses valid IPs
 * or "" (what the engine guarantees); otherwise any field may be missing or of any type.
 */
const inspect = (documented: boolean) => {
  const loose = documented ? optional : loosely;
  const addr = documented ? fc.oneof(fc.ipV4(), fc.ipV6(), fc.constant("")) : ip;
  const network = fc.record({ IPAddress: loose(addr), GlobalIPv6Address: loose(addr) }, { requiredKeys: [] });
  return fc.record(
  {
    Id: (documented ? (a: fc.Arbitrary<string>) => a : loosely)(fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 12, maxLength: 64 })),
    Name: (documented ? (a: fc.Arbitrary<string>) => a : loosely)(fc.string({ maxLength: 20 }).map((s) => `/${s}`)),
    Config: loosely(fc.record({ Labels: loosely(labels) }, { requiredKeys: [] })),
    State: loosely(fc.record({ Running: loosely(fc.boolean()), Paused: loosely(fc.boolean()), Health: loosely(fc.record({ Status: loosely(fc.constantFrom("healthy", "unhealthy", "starting", "")) })) }, { requiredKeys: [] })),
    NetworkSettings: loosely(
      fc.record({
        Networks: loosely(fc.oneof(fc.dictionary(fc.constantFrom("bridge", "backend", "host", "none", ""), loosely(network), { maxKeys: 4 }), fc.integer({ min: 0, max: 3000 }).map((n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`net${i}`, { IPAddress: `10.1.${i >> 8}.${i & 255}` }]))))),
      }, { requiredKeys: [] }),
    ),
  },
  { requiredKeys: documented ? ["Id", "Name"] : [] },
  );
};

// ---- Kubernetes ---------------------------------------------------------------------------

/** `documented`: a port, when present, is 1-65535 as the API validates it; otherwise any number or value. */
const slicePort = (documented: boolean) =>
  fc.record({ name: loosely(fc.constantFrom("http", "dns", "", "8080")), port: documented ? optional(fc.integer({ min: 1, max: 65535 })) : loosely(number), protocol: loosely(fc.constantFrom("TCP", "UDP", "SCTP", "tcp")) }, { requiredKeys: [] });
const endpoint = fc.record(
  {
    addresses: loosely(fc.array(ip, { maxLength: 3 })),
    conditions: loosely(fc.record({ ready: loosely(fc.boolean()), serving: loosely(fc.boolean()), terminating: loosely(fc.boolean()) }, { requiredKeys: [] })),
  },
  { requiredKeys: [] },
);
const slice = (documented: boolean) => fc.record(
  {
    metadata: loosely(fc.record({ name: loosely(fc.string({ maxLength: 12 })) }, { requiredKeys: [] })),
    addressType: loosely(fc.constantFrom("IPv4", "IPv6", "FQDN", "")),
    ports: loosely(fc.array(loosely(slicePort(documented)), { maxLength: 4 })),
    endpoints: loosely(
      fc.oneof(
        fc.array(loosely(endpoint), { maxLength: 8 }),
        fc.integer({ min: 0, max: 5000 }).map((n) => Array.from({ length: n }, (_, i) => ({ addresses: [`10.2.${i >> 8}.${i & 255}`], conditions: { ready: i % 3 !== 0 } }))),
      ),
    ),
  },
  { requiredKeys: [] },
);

function dockerProperty(documented: boolean) {
  return fc.property(inspect(documented), fc.constantFrom("lb.enable", "other"), fc.constantFrom("", "backend", "missing"), (info, label, net) => {
    const facts = factsFromInspect(info as unknown as ContainerInspectInfo);
    const verdict = judge(facts, { label, network: net });
    assert.ok(["backend", "out", "skip"].includes(verdict.kind));
    if (verdict.kind === "backend") assertBackend(verdict.backend);
    if (verdict.kind === "skip") assert.ok(verdict.warning.length > 0);
  });
}

function kubernetesProperty(documented: boolean) {
  return fc.property(fc.array(loosely(slice(documented)), { maxLength: 4 }), fc.constantFrom("", "http", "8080", "80", "0"), (objects, port) => {
    const facts = objects.map(sliceFacts).filter((f) => f !== undefined);
    const { desired, problems } = desiredFromSlices(facts, port);
    desired.forEach(assertBackend);
    for (const [name, problem] of problems) {
      assert.equal(typeof name, "string");
      assert.ok(problem.length > 0);
    }
  });
}

describe("fuzz: discovery input", () => {
  it("docker inspect data as the engine documents it, any labels: a verdict, never a throw", async (t) => {
    await checkProperty(t, "docker inspect (documented types)", dockerProperty(true), 300);
  });
  it("docker inspect data of any type: a verdict, never a throw", async (t) => {
    await checkProperty(t, "docker inspect (any types)", dockerProperty(false), 300);
  });
  it("EndpointSlices with valid port numbers, anything else loose: converted or skipped, never a throw", async (t) => {
    await checkProperty(t, "kubernetes EndpointSlices (valid ports)", kubernetesProperty(true), 300);
  });
  it("EndpointSlices of any type: converted or skipped, never a throw", async (t) => {
    await checkProperty(t, "kubernetes EndpointSlices (any types)", kubernetesProperty(false), 300);
  });
});
