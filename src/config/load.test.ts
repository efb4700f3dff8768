import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, parseConfig } from "./load.ts";

/** The problems parseConfig reports for `yaml`, or [] when it loads. */
function problems(yaml: string): readonly string[] {
  try {
    parseConfig(yaml);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe("config: the seed's examples load unchanged", () => {
  it("static discovery", () => {
    const c = parseConfig(`discovery:
  type: "static"
  backends:
    - address: "10.0.0.4:3000"
      weight: 1
    - address: "10.0.0.5:3000"
      weight: 2
`);
    assert.equal(c.discovery.type, "static");
    assert.deepEqual(
      c.discovery.backends.map((b) => [b.address.key, b.weight]),
      [["10.0.0.4:3000", 1], ["10.0.0.5:3000", 2]],
    );
  });

  it("docker discovery", () => {
    assert.equal(parseConfig(`discovery:\n  type: "docker"\n`).discovery.type, "docker");
  });

  it("kubernetes discovery", () => {
    const c = parseConfig(`discovery:\n  type: "kubernetes"\n  kubernetes:\n    namespace: "default"\n    service: "my-backend-service"\n`);
    assert.deepEqual(c.discovery.kubernetes, { namespace: "default", service: "my-backend-service", port: "" });
  });

  it("the contract's full example", () => {
    const c = parseConfig(`
listen: ":8080"
algorithm: round_robin
retries: 2
max_connections: 0
workers: 1
timeouts:
  connect: 3s
  idle: 10m
  shutdown: 30s
health_check:
  type: tcp
  interval: 5s
  timeout: 2s
  rise: 2
  fall: 3
  http:
    path: /health
    expect_status: "200-399"
    host: ""
api:
  listen: "127.0.0.1:8081"
  token: ""
  allow_unauthenticated: false
state_file: data/state.json
log:
  level: info
  format: json
discovery:
  type: static
  backends:
    - address: "10.0.0.4:3000"
      weight: 1
  docker:
    host: ""
    label: lb.enable
    network: ""
  kubernetes:
    namespace: default
    service: my-backend-service
    port: ""
`);
    assert.deepEqual(c.timeouts, { connectMs: 3000, idleMs: 600_000, shutdownMs: 30_000, queueMs: 0 });
    assert.deepEqual(c.healthCheck.http.expectStatus, [[200, 399]]);
    assert.equal(c.listen.port, 8080);
    assert.equal(c.listen.host, "");
  });

  it("an empty file gives every default", () => {
    const c = parseConfig("");
    assert.equal(c.listen.key, ":8080");
    assert.equal(c.api.listen.key, "127.0.0.1:8081");
    assert.equal(c.algorithm, "round_robin");
    assert.equal(c.retries, 2);
    assert.equal(c.workers, 1);
    assert.equal(c.healthCheck.intervalMs, 5000);
    assert.equal(c.slowStartMs, 0);
    assert.equal(c.proxyProtocol, "off");
    assert.deepEqual(c.listenProxyProtocol, { enabled: false, trusted: [], timeoutMs: 3000 });
    assert.deepEqual(c.stateStore, {
      type: "file",
      etcd: { endpoints: ["http://127.0.0.1:2379"], prefix: "/gobalancer/", username: "", password: "", tls: { caFile: "", certFile: "", keyFile: "" } },
    });
  });

  it("reads the operations keys: slow start, PROXY protocol, per-backend limits, backups, the state store", () => {
    const c = parseConfig(`
slow_start: 30s
proxy_protocol: v2
listen_proxy_protocol: { enabled: true, trusted: ["10.0.0.0/8", "::1", "2001:db8::/32"], timeout: 1s }
timeouts: { queue: 5s }
state_store: { type: etcd, etcd: { endpoints: ["http://10.0.0.1:2379"], prefix: /lb/ } }
discovery:
  backends:
    - { address: "10.0.0.4:80", max_connections: 100, proxy_protocol: v1 }
    - { address: "10.0.0.5:80", backup: true }
`);
    assert.equal(c.slowStartMs, 30_000);
    assert.equal(c.proxyProtocol, "v2");
    assert.deepEqual(c.listenProxyProtocol, { enabled: true, trusted: ["10.0.0.0/8", "::1", "2001:db8::/32"], timeoutMs: 1000 });
    assert.equal(c.timeouts.queueMs, 5000);
    assert.equal(c.stateStore.type, "etcd");
    assert.deepEqual(c.stateStore.etcd.endpoints, ["http://10.0.0.1:2379"]);
    const [a, b] = c.discovery.backends;
    assert.deepEqual({ ...a, address: a!.address.key }, { address: "10.0.0.4:80", weight: 1, maxConnections: 100, backup: false, proxyProtocol: "v1" });
    assert.deepEqual({ ...b, address: b!.address.key }, { address: "10.0.0.5:80", weight: 1, maxConnections: 0, backup: true, proxyProtocol: undefined });
  });

  for (const [what, yaml, expected] of [
    ["a bad CIDR", "listen_proxy_protocol: { enabled: true, trusted: ['10.0.0.0/33'] }", /^listen_proxy_protocol\.trusted\[0\]: must be an IP address or a CIDR range/],
    ["a host name as trusted", "listen_proxy_protocol: { trusted: ['lb.example'] }", /^listen_proxy_protocol\.trusted\[0\]: must be an IP address/],
    ["enabled with nothing trusted", "listen_proxy_protocol: { enabled: true }", /^listen_proxy_protocol\.trusted: must list the upstream balancers/],
    ["an unknown PROXY version", "proxy_protocol: v3", /^proxy_protocol: must be one of off, v1, v2/],
    ["a negative backend limit", "discovery: { backends: [{ address: '10.0.0.4:80', max_connections: -1 }] }", /^discovery\.backends\[0\]\.max_connections: must be a whole number/],
    ["an etcd endpoint without scheme", "state_store: { type: etcd, etcd: { endpoints: ['127.0.0.1:2379'] } }", /^state_store\.etcd\.endpoints\[0\]: must be an http/],
    ["http and https etcd endpoints mixed", "state_store: { etcd: { endpoints: ['http://10.0.0.1:2379', 'https://10.0.0.2:2379'] } }", /^state_store\.etcd\.endpoints: must be all http:\/\/ or all https:\/\//],
    ["an etcd client certificate without its key", "state_store: { etcd: { endpoints: ['https://10.0.0.1:2379'], tls: { cert_file: c.pem } } }", /^state_store\.etcd\.tls: cert_file and key_file go together/],
    ["etcd TLS files for http endpoints", "state_store: { etcd: { tls: { ca_file: ca.pem } } }", /^state_store\.etcd\.tls: is for https:\/\/ endpoints/],
    ["a typo suggested from the schema", "slow_strat: 1s", /did you mean "slow_start"/],
  ] as const) {
    it(`refuses ${what}`, () => {
      assert.throws(() => parseConfig(yaml), (err: ConfigError) => {
        assert.ok(err.problems.some((p) => expected.test(p)), err.problems.join("\n"));
        return true;
      });
    });
  }
});

describe("config: every mistake is named by its path", () => {
  const cases: Array<[string, string, RegExp]> = [
    ["a typo in a key", "algoritm: weighted", /^algoritm: unknown key \(did you mean "algorithm"\?\)$/],
    ["a nested typo", "timeouts:\n  conect: 1s", /^timeouts\.conect: unknown key \(did you mean "connect"\?\)$/],
    ["an unknown algorithm", "algorithm: random", /^algorithm: must be one of round_robin, least_connections, weighted, ip_hash$/],
    ["port 70000", "discovery:\n  backends:\n    - address: '10.0.0.4:3000'\n    - address: '10.0.0.4:70000'", /^discovery\.backends\[1\]\.address: port must be 1-65535/],
    ["port 0 for a backend", "discovery:\n  backends:\n    - address: '10.0.0.4:0'", /^discovery\.backends\[0\]\.address: port must be 1-65535/],
    ["a missing port", "discovery:\n  backends:\n    - address: '10.0.0.4'", /^discovery\.backends\[0\]\.address: "10\.0\.0\.4" must be host:port/],
    ["an unbracketed IPv6", "discovery:\n  backends:\n    - address: '::1:80'", /^discovery\.backends\[0\]\.address: IPv6 addresses must be bracketed/],
    ["a bad IPv4", "discovery:\n  backends:\n    - address: '10.0.0.300:80'", /^discovery\.backends\[0\]\.address: "10\.0\.0\.300" is not a valid IPv4 address/],
    ["weight 0", "discovery:\n  backends:\n    - {address: '10.0.0.4:80', weight: 0}", /^discovery\.backends\[0\]\.weight: must be an integer 1-1000$/],
    ["weight 1001", "discovery:\n  backends:\n    - {address: '10.0.0.4:80', weight: 1001}", /^discovery\.backends\[0\]\.weight: must be an integer 1-1000$/],
    ["a fractional weight", "discovery:\n  backends:\n    - {address: '10.0.0.4:80', weight: 1.5}", /^discovery\.backends\[0\]\.weight: must be an integer 1-1000$/],
    ["a duplicate backend", "discovery:\n  backends:\n    - address: '10.0.0.4:80'\n    - address: '10.0.0.4:80'", /^discovery\.backends\[1\]\.address: duplicate of discovery\.backends\[0\]/],
    ["a bad duration", "timeouts:\n  connect: 5 seconds", /^timeouts\.connect: must be a duration such as 250ms, 5s or 1m30s \(got "5 seconds"\)$/],
    ["a bare number as duration", "health_check:\n  interval: 5", /^health_check\.interval: must be a duration/],
    ["a zero interval", "health_check:\n  interval: 0s", /^health_check\.interval: must be greater than 0$/],
    ["negative retries", "retries: -1", /^retries: must be >= 0$/],
    ["a string where a number goes", "max_connections: lots", /^max_connections: must be a number, got string "lots"$/],
    ["bad workers", "workers: many", /^workers: must be a number of threads \(1-256\) or "auto"$/],
    ["bad expect_status", "health_check:\n  http:\n    expect_status: 2xx", /^health_check\.http\.expect_status: must be status codes or ranges/],
    ["kubernetes without a service", "discovery:\n  type: kubernetes", /^discovery\.kubernetes\.service: is required when discovery\.type is kubernetes$/],
    ["a bad listen address", "listen: 'localhost'", /^listen: "localhost" must be host:port/],
    ["YAML syntax", "listen: [", /^line 1 column \d+: YAML syntax error/],
    ["a list at the top", "- a\n- b", /must be a YAML mapping/],
  ];
  for (const [name, yaml, expected] of cases) {
    it(name, () => {
      const found = problems(yaml);
      assert.equal(found.length, 1, `expected one problem, got ${JSON.stringify(found)}`);
      assert.match(found[0]!, expected);
    });
  }

  it("reports every problem at once", () => {
    assert.equal(problems("retries: -1\nalgorithm: x\nworkers: 0").length, 3);
  });

  it("takes the API token from GOBALANCER_API_TOKEN when the file has none", () => {
    assert.equal(parseConfig("", "f", { GOBALANCER_API_TOKEN: "s3cret" }).api.token, "s3cret");
    assert.equal(parseConfig("api:\n  token: mine", "f", { GOBALANCER_API_TOKEN: "s3cret" }).api.token, "mine");
  });
});

describe("config: every YAML error is a config error with its line and column", () => {
  /** Loads `yaml`, failing the test on anything but a ConfigError or a process warning. */
  function yamlProblems(yaml: string): readonly string[] {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on("warning", onWarning);
    try {
      parseConfig(yaml, "f.yaml");
      assert.fail("expected a ConfigError");
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      assert.match(err.message, /^invalid config f\.yaml: /);
      for (const p of err.problems) assert.doesNotMatch(p, /[\r\n]/, "one line per problem");
      return err.problems;
    } finally {
      process.off("warning", onWarning);
      assert.deepEqual(warnings, [], "no process warnings");
    }
  }

  const bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"];
  for (const name of "bcdefg") bomb.push(`${name}: &${name} [${Array(9).fill(`*${String.fromCharCode(name.charCodeAt(0) - 1)}`).join(", ")}]`);
  const cases: Array<[string, string, RegExp]> = [
    ["an alias whose anchor is missing", "listen: *a", /^line 1 column 9: YAML error: alias \*a has no anchor &a before it$/],
    ["an alias before its anchor", "listen: *a\napi:\n  listen: &a '127.0.0.1:1'", /^line 1 column 9: YAML error: alias \*a has no anchor &a before it$/],
    ["a merge key from nothing", "<<: *nothing\nlisten: ':1'", /^line 1 column 5: YAML error: alias \*nothing has no anchor &nothing before it$/],
    ["a merge of a scalar (YAML 1.1)", "%YAML 1.1\n---\nx: &x 1\n<<: *x", /^line 4 column 1: YAML error: Merge sources must be maps or map aliases$/],
    ["an alias bomb", bomb.join("\n"), /^line \d+ column \d+: YAML error: Excessive alias count/],
    ["a list as a key", "? [a, b]\n: 1", /^line 1 column 3: YAML error: keys must be plain values, not lists or mappings$/],
    ["a mapping as a key through an alias", "x: &m {a: 1}\n*m : 2", /^line 2 column 1: YAML error: keys must be plain values, not lists or mappings$/],
    ["an unknown tag", "listen: !foo ':1'", /^line 1 column 9: YAML error: Unresolved tag: !foo$/],
    ["nesting too deep", `listen: ${"[".repeat(150)}${"]".repeat(150)}`, /^line 1 column \d+: YAML error: nested deeper than 100 levels$/],
    ["a duplicate key", "listen: ':1'\nlisten: ':2'", /^line 2 column 1: YAML syntax error: Map keys must be unique$/],
  ];
  for (const [name, yaml, expected] of cases) {
    it(name, () => {
      const found = yamlProblems(yaml);
      assert.equal(found.length, 1, `expected one problem, got ${JSON.stringify(found)}`);
      assert.match(found[0]!, expected);
    });
  }

  it("very deep nesting is one problem, not thousands", () => {
    const found = yamlProblems(`listen: ${"[".repeat(20000)}${"]".repeat(20000)}`);
    assert.ok(found.length <= 21, `${found.length} problems`);
    assert.match(found[0]!, /^line 1 column \d+: YAML /);
  });

  it("a key with a line break stays on one line", () => {
    const found = yamlProblems('"al\\ngorithm": x');
    assert.equal(found.length, 1);
    assert.match(found[0]!, /^"al\\ngorithm": unknown key/);
  });
});
