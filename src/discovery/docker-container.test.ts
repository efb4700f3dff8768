import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ContainerInspectInfo } from "dockerode";
import { factsFromInspect, judge, type ContainerFacts, type ContainerNetwork, type Verdict } from "./docker-container.ts";

const OPTS = { label: "lb.enable", network: "" };

function container(overrides: Partial<ContainerFacts> = {}): ContainerFacts {
  return {
    id: "5c8bfd88c95c1a59601a56b3abc5ad611a942c7da12247b545ee9c6b43fa515f",
    name: "web1",
    labels: { "lb.enable": "true" },
    running: true,
    paused: false,
    health: "",
    networks: [{ name: "bridge", ipv4: "172.17.0.2", ipv6: "" }],
    ...overrides,
  };
}

function address(v: Verdict): string {
  assert.equal(v.kind, "backend", JSON.stringify(v));
  return v.kind === "backend" ? `${v.backend.address.key} w${v.backend.weight}` : "";
}

function warning(v: Verdict): string {
  return v.kind === "skip" || v.kind === "backend" ? (v.warning ?? "") : "";
}

const net = (name: string, ipv4: string, ipv6 = ""): ContainerNetwork => ({ name, ipv4, ipv6 });

describe("docker container → backend", () => {
  it("defaults to port 80 and weight 1 on the only network", () => {
    assert.equal(address(judge(container(), OPTS)), "172.17.0.2:80 w1");
  });

  it("reads lb.port and lb.weight", () => {
    const labels = { "lb.enable": "true", "lb.port": "8080", "lb.weight": "1000" };
    assert.equal(address(judge(container({ labels }), OPTS)), "172.17.0.2:8080 w1000");
  });

  it("needs the enabling label set to exactly true; its name is configurable", () => {
    for (const labels of [{} as Record<string, string>, { "lb.enable": "false" }, { "lb.enable": "TRUE" }, { "lb.enable": "1" }]) {
      assert.deepEqual(judge(container({ labels }), OPTS), { kind: "out", reason: "not enabled" });
    }
    const labels = { "app.balanced": "true" };
    assert.equal(address(judge(container({ labels }), { label: "app.balanced", network: "" })), "172.17.0.2:80 w1");
  });

  it("skips bad labels with a warning naming the label and value", () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ "lb.port": "abc" }, /^label lb\.port must be a port 1-65535 \(got "abc"\)$/],
      [{ "lb.port": "0" }, /lb\.port .*"0"/],
      [{ "lb.port": "65536" }, /lb\.port .*"65536"/],
      [{ "lb.port": "" }, /lb\.port .*""/],
      [{ "lb.port": " 80" }, /lb\.port .*" 80"/],
      [{ "lb.weight": "0" }, /^label lb\.weight must be an integer 1-1000 \(got "0"\)$/],
      [{ "lb.weight": "1001" }, /lb\.weight .*"1001"/],
      [{ "lb.weight": "1.5" }, /lb\.weight .*"1.5"/],
      [{ "lb.weight": "-1" }, /lb\.weight .*"-1"/],
    ];
    for (const [labels, expected] of cases) {
      const v = judge(container({ labels: { "lb.enable": "true", ...labels } }), OPTS);
      assert.equal(v.kind, "skip", JSON.stringify(labels));
      assert.match(warning(v), expected);
    }
  });

  it("takes paused, unhealthy and stopped containers out; starting and healthy are in", () => {
    assert.deepEqual(judge(container({ paused: true }), OPTS), { kind: "out", reason: "paused" });
    assert.deepEqual(judge(container({ health: "unhealthy" }), OPTS), { kind: "out", reason: "unhealthy" });
    assert.deepEqual(judge(container({ running: false }), OPTS), { kind: "out", reason: "not running" });
    for (const health of ["", "starting", "healthy"]) assert.equal(judge(container({ health }), OPTS).kind, "backend", health);
  });

  it("uses the network named by lb.network, else by the config; the label wins", () => {
    const networks = [net("front", "10.1.0.2"), net("back", "10.2.0.2")];
    const labelled = container({ networks, labels: { "lb.enable": "true", "lb.network": "back" } });
    assert.equal(address(judge(labelled, OPTS)), "10.2.0.2:80 w1");
    assert.equal(address(judge(labelled, { ...OPTS, network: "front" })), "10.2.0.2:80 w1");
    const v = judge(container({ networks }), { ...OPTS, network: "front" });
    assert.equal(address(v), "10.1.0.2:80 w1");
    assert.equal(warning(v), "");
  });

  it("skips a container that is not on the named network, listing its networks", () => {
    const v = judge(container({ networks: [net("front", "10.1.0.2")] }), { ...OPTS, network: "back" });
    assert.equal(v.kind, "skip");
    assert.equal(warning(v), 'not on network "back" named by discovery.docker.network (its networks: front)');
  });

  it("with several networks and none named, picks the first by name whatever the order, and warns", () => {
    const a = net("alpha", "10.1.0.2");
    const b = net("beta", "10.2.0.2");
    for (const networks of [[a, b], [b, a]]) {
      const v = judge(container({ networks }), OPTS);
      assert.equal(address(v), "10.1.0.2:80 w1");
      assert.match(warning(v), /several networks \(alpha, beta\); using "alpha": set label lb\.network or discovery\.docker\.network/);
    }
  });

  it("uses IPv4 on a dual-stack network and the global IPv6 address on an IPv6-only one", () => {
    assert.equal(address(judge(container({ networks: [net("dual", "10.1.0.2", "fd00:6762::2")] }), OPTS)), "10.1.0.2:80 w1");
    const v6 = judge(container({ networks: [net("v6", "", "fd00:6762:0:0::2")] }), OPTS);
    assert.equal(address(v6), "[fd00:6762::2]:80 w1");
  });

  it("skips containers without an address (host or none network mode, no network)", () => {
    assert.match(warning(judge(container({ networks: [net("host", "")] }), OPTS)), /no IP address on network "host"/);
    assert.match(warning(judge(container({ networks: [] }), OPTS)), /is on no network/);
  });
});

describe("docker inspect → facts", () => {
  it("reads what discovery needs from a real inspect document", () => {
    // Trimmed from `docker inspect` of a running container (Docker 20.10) with a
    // HEALTHCHECK on a dual-stack user network.
    const info = {
      Id: "5c8bfd88c95c1a59601a56b3abc5ad611a942c7da12247b545ee9c6b43fa515f",
      Name: "/web1",
      State: { Status: "running", Running: true, Paused: false, Restarting: false, Health: { Status: "healthy", FailingStreak: 0, Log: [] } },
      Config: { Labels: { "lb.enable": "true", "lb.weight": "3" } },
      NetworkSettings: {
        Networks: {
          dual: {
            IPAMConfig: null,
            Aliases: ["5c8bfd88c95c", "web1"],
            NetworkID: "87a35d2d88e81041bce1aba13fd2c7e9f0cee41087dafadb81664b86698064c9",
            Gateway: "10.132.100.1",
            IPAddress: "10.132.100.2",
            IPPrefixLen: 24,
            IPv6Gateway: "fd00:6762:132::1",
            GlobalIPv6Address: "fd00:6762:132::2",
            GlobalIPv6PrefixLen: 64,
            MacAddress: "02:42:0a:84:64:02",
          },
        },
      },
    } as unknown as ContainerInspectInfo;
    const facts = factsFromInspect(info);
    assert.deepEqual(facts, {
      id: info.Id,
      name: "web1",
      labels: { "lb.enable": "true", "lb.weight": "3" },
      running: true,
      paused: false,
      health: "healthy",
      networks: [{ name: "dual", ipv4: "10.132.100.2", ipv6: "fd00:6762:132::2" }],
    });
    assert.equal(address(judge(facts, OPTS)), "10.132.100.2:80 w3");
  });

  it("treats a container without a HEALTHCHECK or networks as such", () => {
    const info = { Id: "x", Name: "/plain", State: { Running: false, Paused: false }, Config: { Labels: null }, NetworkSettings: { Networks: {} } };
    const facts = factsFromInspect(info as unknown as ContainerInspectInfo);
    assert.equal(facts.health, "");
    assert.deepEqual(facts.labels, {});
    assert.deepEqual(facts.networks, []);
  });
});
