// End-to-end Docker discovery against a real, private Docker engine (test/docker/engine.ts):
// real containers on the engine's own bridge, the real gobalancer process, real traffic.
import assert from "node:assert/strict";
import { symlinkSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import type Docker from "dockerode";
import { DockerEngine } from "./docker/engine.ts";
import { busyboxImage } from "./docker/images.ts";
import { cleanup, request, startBalancer, startNamedBackend, waitFor, type BalancerProcess, type LogLine } from "./harness.ts";

let engine: DockerEngine;
let image: string;

before(
  async () => {
    engine = await DockerEngine.start();
    image = await busyboxImage(engine);
  },
  { timeout: 600_000 }, // a fresh machine installs docker.io first
);

after(async () => {
  await cleanup();
  await engine?.stop();
});

afterEach(cleanup);

// ---- containers ----------------------------------------------------------------------

interface Backend {
  readonly id: string;
  readonly name: string;
  readonly container: Docker.Container;
  /** IPv4 address per network. */
  readonly ips: Record<string, string>;
  /** host:port on its first network, as the pool spells it. */
  readonly key: string;
}

interface BackendOptions {
  labels?: Record<string, string>;
  /** The port the container serves (default 80); say lb.port in labels to match. */
  port?: number;
  networks?: string[];
  /** A Docker HEALTHCHECK that fails once /tmp/healthy is removed. */
  healthcheck?: boolean;
  restartAlways?: boolean;
  start?: boolean;
}

const ENABLED = { "lb.enable": "true" };

async function runBackend(name: string, opts: BackendOptions = {}): Promise<Backend> {
  const networks = opts.networks ?? ["bridge"];
  const container = await engine.docker.createContainer({
    name,
    Hostname: name,
    Image: image,
    Labels: opts.labels ?? ENABLED,
    Env: [`PORT=${opts.port ?? 80}`],
    StopTimeout: 1,
    ...(opts.healthcheck ? { Healthcheck: { Test: ["CMD", "test", "-f", "/tmp/healthy"], Interval: 500e6, Timeout: 2e9, Retries: 1 } } : {}),
    HostConfig: { NetworkMode: networks[0], ...(opts.restartAlways ? { RestartPolicy: { Name: "always" } } : {}) },
  });
  for (const extra of networks.slice(1)) await engine.docker.getNetwork(extra).connect({ Container: container.id });
  if (opts.start !== false) await container.start();
  return describeBackend(container, name, opts.port ?? 80);
}

/** Its addresses; for a running container, once it accepts connections (started ≠ listening). */
async function describeBackend(container: Docker.Container, name: string, port = 80): Promise<Backend> {
  const info = await container.inspect();
  const ips: Record<string, string> = {};
  for (const [net, settings] of Object.entries(info.NetworkSettings.Networks)) ips[net] = settings.IPAddress;
  const first = Object.values(ips)[0] ?? "";
  if (info.State.Running) await listening(first, port);
  return { id: info.Id, name, container, ips, key: `${first}:${port}` };
}

async function listening(host: string, port: number): Promise<void> {
  const accepts = () =>
    new Promise<boolean>((resolve) => {
      const socket = net.connect({ host, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
      socket.setTimeout(1000, () => {
        socket.destroy();
        resolve(false);
      });
    });
  await waitFor(accepts, 10_000, `${host}:${port} listening`);
}

/** A user-defined network inside the engine's private 10.x range. */
async function createNetwork(name: string, third: number): Promise<void> {
  await engine.docker.createNetwork({ Name: name, IPAM: { Config: [{ Subnet: `10.${engine.net}.${third}.0/24` }] } });
}

async function exec(container: Docker.Container, cmd: string[]): Promise<void> {
  const e = await container.exec({ Cmd: cmd });
  await e.start({ Detach: true });
  await waitFor(async () => (await e.inspect()).Running === false, 5000, `exec ${cmd.join(" ")}`);
}

// ---- the balancer --------------------------------------------------------------------

function startDockerBalancer(docker: Record<string, unknown> = {}): Promise<BalancerProcess> {
  return startBalancer({
    discovery: { type: "docker", docker: { host: engine.host, ...docker } },
    // Our own probes stay out of the way: these tests are about Docker's view.
    health_check: { interval: "1m" },
    timeouts: { connect: "1s" },
  });
}

interface Member {
  weight: number;
  status: string;
  /** When the pool last changed this backend (from the log line's time). */
  at: number;
}

/** The pool as its log lines describe it: backend address → weight and status. */
function members(lb: BalancerProcess): Map<string, Member> {
  const pool = new Map<string, Member>();
  for (const l of lb.logs) {
    const key = String(l.backend);
    const at = Date.parse(String(l.time));
    if (l.msg === "backend added") pool.set(key, { weight: Number(l.weight), status: String(l.status), at });
    else if (l.msg === "backend removed") pool.delete(key);
    else if (l.msg === "backend state changed" && pool.has(key)) pool.set(key, { ...pool.get(key)!, status: String(l.to), at });
  }
  return pool;
}

function sameSet(a: Iterable<string>, b: Iterable<string>): boolean {
  const x = [...a].sort();
  const y = [...b].sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** Waits until the pool holds exactly `keys` (any status); returns it. */
async function waitForPool(lb: BalancerProcess, keys: string[], timeoutMs = 5000): Promise<Map<string, Member>> {
  try {
    return await waitFor(() => {
      const pool = members(lb);
      return sameSet(pool.keys(), keys) ? pool : undefined;
    }, timeoutMs);
  } catch {
    assert.fail(`pool ${JSON.stringify([...members(lb).keys()].sort())} never became ${JSON.stringify([...keys].sort())} within ${timeoutMs} ms`);
  }
}

/**
 * Runs `op` and waits for the pool to hold exactly `keys`, all routable; returns how long
 * after `op` finished the pool's last change happened (by the balancer's log line time).
 */
async function timedChange(lb: BalancerProcess, op: () => Promise<unknown>, keys: string[]): Promise<number> {
  await op();
  const done = Date.now();
  await waitForPool(lb, keys);
  await waitFor(() => sameSet(routableKeys(members(lb)), keys), 5000, `routable ${keys.join(",")}`);
  const changes = lb.logs.filter((l) => l.msg === "backend added" || l.msg === "backend removed" || l.msg === "backend state changed");
  return Math.max(0, Date.parse(String(changes.at(-1)?.time)) - done);
}

function routableKeys(pool: Map<string, Member>): string[] {
  return [...pool].filter(([, m]) => m.status === "up").map(([k]) => k);
}

/** An HTTP/1.0 GET through the balancer; the body names the container that answered. */
async function whoAnswers(lb: BalancerProcess): Promise<string> {
  const response = await request(lb.port, "GET / HTTP/1.0\r\n\r\n");
  const body = response.indexOf("\r\n\r\n");
  return (body < 0 ? response : response.slice(body + 4)).trim(); // non-HTTP test backends just say their name
}

interface ApiBackend {
  address: string;
  weight: number;
  status: string;
  source: string;
}

/** GET /backends, as [address, weight, source, status] rows in address order. */
async function apiBackends(lb: BalancerProcess): Promise<Array<[string, number, string, string]>> {
  const res = await fetch(`${lb.api}/backends`);
  assert.equal(res.status, 200);
  const list = (await res.json()) as ApiBackend[];
  return list.map((b): [string, number, string, string] => [b.address, b.weight, b.source, b.status]).sort();
}

async function apiAddresses(lb: BalancerProcess): Promise<string[]> {
  return (await apiBackends(lb)).map(([address]) => address);
}

async function answering(lb: BalancerProcess, requests: number): Promise<Set<string>> {
  const names = new Set<string>();
  for (let i = 0; i < requests; i++) names.add(await whoAnswers(lb));
  return names;
}

function logsWith(lb: BalancerProcess, msg: string, container?: string): LogLine[] {
  return lb.logs.filter((l) => l.msg === msg && (container === undefined || l.container === container));
}

// ---- tests ---------------------------------------------------------------------------
// Each test has its own enabling label (discovery.docker.label), so the containers of one
// test are invisible to the others and need not be removed in between: container starts
// and removals are the slow part here.

describe("docker discovery", () => {
  it("discovers labelled containers at their address, port and weight; skips bad labels with one warning", async () => {
    // The default label, lb.enable.
    const [plain, custom, heavy, , , badWeight] = await Promise.all([
      runBackend("plain"),
      runBackend("custom", { labels: { ...ENABLED, "lb.port": "8080" }, port: 8080 }),
      runBackend("heavy", { labels: { ...ENABLED, "lb.weight": "3" } }),
      runBackend("unlabelled", { labels: {} }),
      runBackend("bad-port", { labels: { ...ENABLED, "lb.port": "abc" } }),
      runBackend("bad-weight", { labels: { ...ENABLED, "lb.weight": "0" } }),
    ]);
    const lb = await startDockerBalancer();
    const pool = await waitForPool(lb, [plain!.key, custom!.key, heavy!.key]);
    assert.equal(pool.get(plain!.key)!.weight, 1);
    assert.equal(pool.get(custom!.key)!.weight, 1);
    assert.equal(pool.get(heavy!.key)!.weight, 3);
    assert.ok(custom!.key.endsWith(":8080"));
    for (const l of logsWith(lb, "backend added")) assert.equal(l.source, "docker");
    const rows: Array<[string, number, string, string]> = [
      [plain!.key, 1, "docker", "up"],
      [custom!.key, 1, "docker", "up"],
      [heavy!.key, 3, "docker", "up"],
    ];
    assert.deepEqual(await apiBackends(lb), rows.sort());
    const del = await fetch(`${lb.api}/backends/${plain!.key}`, { method: "DELETE" });
    assert.equal(del.status, 409, "a discovered backend is removed at its source, not through the API");
    assert.deepEqual([...(await answering(lb, 9))].sort(), ["custom", "heavy", "plain"]);

    await lb.waitForLog((l) => l.msg === "docker container skipped" && l.container === "bad-weight");
    assert.match(String(logsWith(lb, "docker container skipped", "bad-port")[0]?.problem), /lb\.port must be a port 1-65535 \(got "abc"\)/);
    assert.match(String(logsWith(lb, "docker container skipped", "bad-weight")[0]?.problem), /lb\.weight must be an integer 1-1000 \(got "0"\)/);

    // Started after the balancer: discovered from the events stream. More events for a
    // badly labelled container: still skipped, still warned about only once.
    await badWeight!.container.pause();
    await badWeight!.container.unpause();
    const late = await runBackend("late");
    await waitForPool(lb, [plain!.key, custom!.key, heavy!.key, late.key], 1000);
    assert.deepEqual([...(await answering(lb, 12))].sort(), ["custom", "heavy", "late", "plain"]);
    assert.equal(logsWith(lb, "docker container skipped", "bad-weight").length, 1);
    assert.equal(logsWith(lb, "docker container skipped", "bad-port").length, 1);
  });

  it("stop, kill, pause, unpause and the Docker HEALTHCHECK move a backend out and in within a second", async (t) => {
    const on = { "t2.enable": "true" };
    // The HEALTHCHECK is on "steady": Docker fails a check that a pause interrupts, which
    // would hold "moving" out after unpause until its next check passes.
    const [steady, moving] = await Promise.all([runBackend("t2-steady", { labels: on, healthcheck: true }), runBackend("t2-moving", { labels: on })]);
    const lb = await startDockerBalancer({ label: "t2.enable" });
    const both = [steady!.key, moving!.key];
    await waitForPool(lb, both);
    const timings: Record<string, number> = {};
    const out = [steady!.key];
    const c = moving!.container;

    timings.pause = await timedChange(lb, () => c.pause(), out);
    assert.deepEqual(await apiAddresses(lb), out);
    assert.deepEqual([...(await answering(lb, 4))], ["t2-steady"]);
    timings.unpause = await timedChange(lb, () => c.unpause(), both);
    assert.deepEqual([...(await answering(lb, 4))].sort(), ["t2-moving", "t2-steady"]);

    timings.stop = await timedChange(lb, () => c.stop(), out);
    assert.deepEqual([...(await answering(lb, 4))], ["t2-steady"]);
    timings.start = await timedChange(lb, () => c.start(), both);
    timings.kill = await timedChange(lb, () => c.kill(), out);
    await c.start();
    await describeBackend(c, "t2-moving");
    await waitForPool(lb, both);

    // Docker's verdict: unhealthy out, healthy back (the check runs every 500 ms).
    await exec(steady!.container, ["rm", "/tmp/healthy"]);
    await waitForPool(lb, [moving!.key], 5000);
    assert.equal(logsWith(lb, "docker container out of rotation", "t2-steady").at(-1)?.reason, "unhealthy");
    assert.deepEqual([...(await answering(lb, 4))], ["t2-moving"]);
    await exec(steady!.container, ["touch", "/tmp/healthy"]);
    await waitForPool(lb, both, 5000);
    assert.deepEqual([...(await answering(lb, 4))].sort(), ["t2-moving", "t2-steady"]);

    timings.remove = await timedChange(lb, () => c.remove({ force: true }), out);
    assert.deepEqual(await apiAddresses(lb), out, "a removed container's backend is gone from GET /backends");
    await steady!.container.remove({ force: true }); // its checks cost CPU every 500 ms
    t.diagnostic(`ms from the docker call returning to the pool change: ${JSON.stringify(timings)}`);
    for (const [op, ms] of Object.entries(timings)) assert.ok(ms < 1000, `${op} took ${ms} ms to reach the pool: ${JSON.stringify(timings)}`);
    // A graceful stop drains first (SIGTERM), then removes once the container has exited.
    assert.ok(
      lb.logs.some((l) => l.msg === "backend state changed" && l.backend === moving!.key && l.to === "draining"),
      "stop drains the backend before it goes",
    );
  });

  it("uses the network named by lb.network or the config, else the first by name with a warning", async () => {
    await createNetwork("net-a", 10);
    await createNetwork("net-b", 11);
    const on = { "t3.enable": "true" };
    const [labelled, unnamed] = await Promise.all([
      runBackend("t3-labelled", { labels: { ...on, "lb.network": "net-b" }, networks: ["net-a", "net-b"] }),
      runBackend("t3-unnamed", { labels: on, networks: ["net-b", "net-a"] }),
    ]);
    const lb = await startDockerBalancer({ label: "t3.enable" });
    await waitForPool(lb, [`${labelled!.ips["net-b"]}:80`, `${unnamed!.ips["net-a"]}:80`]);
    const warning = logsWith(lb, "docker container address chosen among several networks", "t3-unnamed");
    assert.equal(warning.length, 1);
    assert.match(String(warning[0]!.problem), /several networks \(net-a, net-b\); using "net-a"/);
    assert.deepEqual([...(await answering(lb, 4))].sort(), ["t3-labelled", "t3-unnamed"]);

    // discovery.docker.network for all; a container's lb.network still wins.
    const configured = await startDockerBalancer({ label: "t3.enable", network: "net-b" });
    await waitForPool(configured, [`${labelled!.ips["net-b"]}:80`, `${unnamed!.ips["net-b"]}:80`]);
  });

  it("ends equal to the running labelled set after bursts of 20 containers starting and stopping", async () => {
    const on = { "t4.enable": "true" };
    const lb = await startDockerBalancer({ label: "t4.enable" });
    const names = Array.from({ length: 20 }, (_, i) => `t4-burst-${String(i).padStart(2, "0")}`);
    // Every fifth is not labelled: it must never show up.
    const created = await Promise.all(names.map((n, i) => runBackend(n, { labels: i % 5 === 4 ? {} : on, start: false })));
    const labelled = created.filter((_, i) => i % 5 !== 4);

    // Burst 1: all 20 start at once.
    await Promise.all(created.map((c) => c.container.start()));
    let running = await Promise.all(labelled.map((c) => describeBackend(c.container, c.name)));
    await waitForPool(lb, running.map((c) => c.key), 10_000);

    // Burst 2: some stop, some are killed, at once; a few of the stopped start again.
    const stopped = labelled.filter((_, i) => i % 2 === 0);
    const killed = labelled.filter((_, i) => i % 4 === 1);
    await Promise.all([...stopped.map((c) => c.container.stop()), ...killed.map((c) => c.container.kill())]);
    const restarted = stopped.slice(0, 3);
    await Promise.all(restarted.map((c) => c.container.start()));
    const up = labelled.filter((c) => !stopped.includes(c) && !killed.includes(c)).concat(restarted);
    running = await Promise.all(up.map((c) => describeBackend(c.container, c.name)));
    await waitForPool(lb, running.map((c) => c.key), 10_000);
    assert.deepEqual(await apiAddresses(lb), running.map((c) => c.key).sort());
    const seen = await answering(lb, up.length * 2);
    assert.deepEqual([...seen].sort(), up.map((c) => c.name).sort());
    // Done with them: stopping 20 containers at the end of the file costs time too.
    await Promise.all(created.map((c) => c.container.remove({ force: true })));
  });

  it("reconnects after the engine restarts and resyncs what changed meanwhile", async () => {
    const on = { "t5.enable": "true" };
    const [survivor, casualty] = await Promise.all([
      runBackend("t5-survivor", { labels: on, restartAlways: true }),
      runBackend("t5-casualty", { labels: on }),
    ]);
    const lb = await startDockerBalancer({ label: "t5.enable" });
    await waitForPool(lb, [survivor!.key, casualty!.key]);

    await engine.restart();
    await lb.waitForLog((l) => l.msg === "docker connection lost; reconnecting", 5000);
    // "survivor" comes back by its restart policy; "casualty" stays stopped.
    await waitFor(async () => (await survivor!.container.inspect()).State.Running, 10_000, "survivor restarted");
    const back = await describeBackend(survivor!.container, "t5-survivor");
    const newcomer = await runBackend("t5-newcomer", { labels: on });
    await waitForPool(lb, [back.key, newcomer.key], 10_000);
    await lb.waitForLog((l) => l.msg === "docker reconnected; containers listed again", 5000);
    assert.deepEqual([...(await answering(lb, 4))].sort(), ["t5-newcomer", "t5-survivor"]);
  });

  it("starts while Docker is unreachable, says so, keeps serving, and discovers once it is there", async () => {
    const web = await runBackend("t6-web", { labels: { "t6.enable": "true" } });
    // A socket path that does not exist yet; it will point at the engine later.
    const link = path.join(engine.dir, `later-${process.pid}.sock`);
    const lb = await startDockerBalancer({ label: "t6.enable", host: `unix://${link}` });
    const unreachable = await lb.waitForLog((l) => l.msg.startsWith("docker unreachable"), 5000);
    assert.equal(unreachable.host, `unix://${link}`);
    assert.match(String(unreachable.err), /ENOENT/);
    assert.equal(members(lb).size, 0);

    // Meanwhile the balancer serves what it has: here a backend added through the API.
    const local = await startNamedBackend("local");
    const added = await fetch(`${lb.api}/backends`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ address: local.address }),
    });
    assert.equal(added.status, 201);
    assert.deepEqual([...(await answering(lb, 2))], ["local"]);

    symlinkSync(engine.socket, link);
    await waitForPool(lb, [local.address, web.key], 10_000);
    assert.deepEqual(await apiBackends(lb), [[local.address, 1, "api", "up"], [web.key, 1, "docker", "up"]].sort());
    assert.deepEqual([...(await answering(lb, 4))].sort(), ["local", "t6-web"]);
  });
});
