// End-to-end: the real gobalancer process discovering backends from EndpointSlices served by
// a faithful stand-in for the Kubernetes API server (test/k8s/apiserver.ts), reached by the
// real client library through a kubeconfig (KUBECONFIG). Backends are real servers on
// 127.0.0.x (Linux routes all of 127/8 to lo) and [::1], all on one port as pods are.
import assert from "node:assert/strict";
import type net from "node:net";
import { describe, it } from "node:test";
import { FakeApiServer, type EndpointInput, type SliceInput } from "./k8s/apiserver.ts";
import { cleanup, connect, request, startBalancer, startServer, tempDir, waitFor, type BalancerProcess, type TestServer } from "./harness.ts";

const fakes: FakeApiServer[] = [];
/**
 * Stops everything a test started. Registered per test with t.after (not afterEach, which
 * would also run between the steps of a test, and stop what the next step needs).
 */
async function stopAll(): Promise<void> {
  await cleanup();
  await Promise.all(fakes.splice(0).map((f) => f.stop()));
}

async function startApiServer(): Promise<FakeApiServer> {
  const fake = new FakeApiServer();
  await fake.start();
  fakes.push(fake);
  return fake;
}

/** gobalancer with `discovery.type: kubernetes`, pointed at `fake` through KUBECONFIG. */
function startK8sBalancer(fake: FakeApiServer, kubernetes: Record<string, unknown>, opts: { noWait?: boolean } = {}): Promise<BalancerProcess> {
  const dir = tempDir();
  return startBalancer(
    { discovery: { type: "kubernetes", kubernetes: { namespace: "default", ...kubernetes } } },
    // Importing client-node costs about a CPU-second, which a busy machine can stretch far.
    { dir, env: { KUBECONFIG: fake.writeKubeconfig(dir) }, noWait: opts.noWait, startTimeoutMs: 60_000 },
  );
}

/**
 * Backends on several loopback addresses sharing one port, like a Service's pods. Each
 * greets with its address on a line, then echoes, so a client learns where it landed.
 */
async function pods(hosts: string[]): Promise<{ port: number; servers: Map<string, TestServer> }> {
  const greet = (name: string) => (socket: net.Socket) => {
    socket.write(`${name}\n`);
    socket.pipe(socket);
  };
  for (let attempt = 0; ; attempt++) {
    const first = await startServer(greet(hosts[0]!), 0, hosts[0]!);
    const servers = new Map([[hosts[0]!, first]]);
    try {
      for (const host of hosts.slice(1)) servers.set(host, await startServer(greet(host), first.port, host));
      return { port: first.port, servers };
    } catch (err) {
      // That port was taken on another loopback address: try another.
      await Promise.all([...servers.values()].map((s) => s.close()));
      if (attempt === 5) throw err;
    }
  }
}

const ready = (address: string): EndpointInput => ({ address, ready: true, serving: true, terminating: false });
const notReady = (address: string): EndpointInput => ({ address, ready: false, serving: false, terminating: false });
const terminating = (address: string): EndpointInput => ({ address, ready: false, serving: true, terminating: true });
const slice = (name: string, endpoints: EndpointInput[], ports: SliceInput["ports"], extra: Partial<SliceInput> = {}): SliceInput => ({
  name,
  service: "web",
  endpoints,
  ports,
  ...extra,
});

/** The pool as the balancer's log lines tell it: backend → status. */
function pool(lb: BalancerProcess): Map<string, string> {
  const state = new Map<string, string>();
  for (const l of lb.logs) {
    const backend = l.backend as string | undefined;
    if (l.msg === "backend added") state.set(backend!, String(l.status));
    else if (l.msg === "backend removed") state.delete(backend!);
    else if (l.msg === "backend state changed") state.set(backend!, String(l.to));
  }
  return state;
}

/** Waits until the pool is exactly `expected` (address → status). */
async function poolIs(lb: BalancerProcess, expected: Record<string, string>, timeoutMs = 5000): Promise<void> {
  const want = JSON.stringify(Object.entries(expected).sort());
  await waitFor(() => JSON.stringify([...pool(lb)].sort()) === want, timeoutMs, `pool ${want}; have ${JSON.stringify([...pool(lb)])}`);
}

/** Where `n` new connections land, in order. */
async function landings(lb: BalancerProcess, n: number): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < n; i++) seen.push((await request(lb.port, "")).trim());
  return seen;
}

const watches = (fake: FakeApiServer) => fake.requests.filter((r) => r.verb === "watch");
const lists = (fake: FakeApiServer) => fake.requests.filter((r) => r.verb === "list");

describe("kubernetes discovery", () => {
  it("keeps the pool equal to the Service's ready endpoints through every change", async (t) => {
    t.after(stopAll);
    const fake = await startApiServer();
    const { port } = await pods(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]);
    const ports = [{ name: "", port }];
    fake.put(slice("web-a", [ready("127.0.0.2"), ready("127.0.0.3"), notReady("127.0.0.4")], ports));
    // Another Service's slice in the namespace, and this Service's name in another namespace.
    fake.put({ ...slice("api-a", [ready("127.0.0.9")], ports), service: "api" });
    fake.put(slice("web-other-ns", [ready("127.0.0.8")], ports, { namespace: "staging" }));
    const lb = await startK8sBalancer(fake, { service: "web" });

    await t.test("initial list: the ready endpoints, and traffic reaches each", async () => {
      await poolIs(lb, { [`127.0.0.2:${port}`]: "up", [`127.0.0.3:${port}`]: "up" });
      assert.equal(lb.logs.find((l) => l.msg === "gobalancer started")?.backends, 2, "backends known before traffic is accepted");
      const added = lb.logs.filter((l) => l.msg === "backend added");
      assert.ok(added.every((l) => l.source === "kubernetes"), JSON.stringify(added));
      assert.deepEqual([...new Set(await landings(lb, 6))].sort(), ["127.0.0.2", "127.0.0.3"]);
      // What the client asked: a list by label, then a watch from that list's resourceVersion.
      assert.equal(lists(fake)[0]?.query.labelSelector, "kubernetes.io/service-name=web");
      await waitFor(() => fake.openWatches === 1, 5000, "a watch");
      assert.equal(watches(fake)[0]!.query.resourceVersion, "1003");
      assert.equal(watches(fake)[0]!.query.allowWatchBookmarks, "true");
    });

    await t.test("scale up, then down", async () => {
      fake.put(slice("web-a", [ready("127.0.0.2"), ready("127.0.0.3"), ready("127.0.0.4")], ports));
      await poolIs(lb, { [`127.0.0.2:${port}`]: "up", [`127.0.0.3:${port}`]: "up", [`127.0.0.4:${port}`]: "up" });
      assert.deepEqual([...new Set(await landings(lb, 6))].sort(), ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
      fake.put(slice("web-a", [ready("127.0.0.2"), ready("127.0.0.3")], ports));
      await poolIs(lb, { [`127.0.0.2:${port}`]: "up", [`127.0.0.3:${port}`]: "up" });
    });

    await t.test("an endpoint turning not ready leaves", async () => {
      fake.put(slice("web-a", [ready("127.0.0.2"), notReady("127.0.0.3")], ports));
      await poolIs(lb, { [`127.0.0.2:${port}`]: "up" });
      assert.deepEqual(new Set(await landings(lb, 4)), new Set(["127.0.0.2"]));
    });

    await t.test("a second slice appears, and the first is deleted", async () => {
      fake.put(slice("web-b", [ready("127.0.0.5")], ports));
      await poolIs(lb, { [`127.0.0.2:${port}`]: "up", [`127.0.0.5:${port}`]: "up" });
      fake.remove("web-a");
      await poolIs(lb, { [`127.0.0.5:${port}`]: "up" });
      assert.deepEqual(new Set(await landings(lb, 4)), new Set(["127.0.0.5"]));
    });
  });

  it("drains a terminating endpoint: its open connection finishes, new ones go elsewhere", async (t) => {
    t.after(stopAll);
    const fake = await startApiServer();
    const { port } = await pods(["127.0.0.2", "127.0.0.3"]);
    const ports = [{ name: "http", port }];
    fake.put(slice("web-a", [ready("127.0.0.2"), ready("127.0.0.3")], ports));
    const lb = await startK8sBalancer(fake, { service: "web" });
    await poolIs(lb, { [`127.0.0.2:${port}`]: "up", [`127.0.0.3:${port}`]: "up" });

    // An open connection on 127.0.0.2 (round robin: one of the first two lands there).
    let open: net.Socket | undefined;
    let received = "";
    for (let i = 0; i < 2 && !open; i++) {
      const socket = await connect(lb.port);
      socket.setEncoding("utf8");
      let greeting = "";
      socket.on("data", (d: string) => (greeting += d));
      await waitFor(() => greeting.includes("\n"), 5000, "greeting");
      if (greeting === "127.0.0.2\n") {
        open = socket;
        socket.removeAllListeners("data");
        socket.on("data", (d: string) => (received += d));
      } else socket.destroy();
    }
    assert.ok(open, "a connection to 127.0.0.2");
    const ended = new Promise<void>((resolve) => open.once("end", resolve));

    fake.put(slice("web-a", [terminating("127.0.0.2"), ready("127.0.0.3")], ports));
    await poolIs(lb, { [`127.0.0.2:${port}`]: "draining", [`127.0.0.3:${port}`]: "up" });
    assert.deepEqual(new Set(await landings(lb, 6)), new Set(["127.0.0.3"]), "no new connection to the draining endpoint");
    open.write("still here");
    await waitFor(() => received === "still here", 5000, "echo on the draining connection");
    open.end();
    await ended; // finished normally: the backend's FIN came through

    fake.put(slice("web-a", [ready("127.0.0.3")], ports)); // the pod is gone
    await poolIs(lb, { [`127.0.0.3:${port}`]: "up" });
  });

  it("survives the watch ending: resumes without loss, and re-lists on 410 Gone", async (t) => {
    t.after(stopAll);
    const fake = await startApiServer();
    const { port } = await pods(["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]);
    const ports = [{ name: "http", port }];
    fake.put(slice("web-a", [ready("127.0.0.2")], ports));
    const lb = await startK8sBalancer(fake, { service: "web" });
    await waitFor(() => fake.openWatches === 1, 5000, "a watch");

    await t.test("the server's watch timeout: resumed from the last bookmark, nothing lost", async () => {
      fake.put(slice("web-a", [ready("127.0.0.2"), ready("127.0.0.3")], ports));
      await poolIs(lb, { [`127.0.0.2:${port}`]: "up", [`127.0.0.3:${port}`]: "up" });
      fake.put({ ...slice("api-x", [ready("127.0.0.9")], ports), service: "api" }); // moves the resourceVersion only
      fake.bookmark();
      const bookmarkRv = fake.resourceVersion;
      // The watch ends, and a change is made while none is open.
      fake.closeWatches();
      fake.put(slice("web-a", [ready("127.0.0.3"), ready("127.0.0.4")], ports));
      await poolIs(lb, { [`127.0.0.3:${port}`]: "up", [`127.0.0.4:${port}`]: "up" });
      assert.equal(lists(fake).length, 1, "resumed by watching, not by listing again");
      assert.equal(watches(fake)[1]?.query.resourceVersion, bookmarkRv, "resumed from the bookmark's resourceVersion");
      assert.ok(!lb.logs.some((l) => l.msg === "kubernetes watch failed"), "a server-side close is not a failure");
    });

    // Changes while no watch is open, then the history is compacted away: the resumed
    // watch is refused with 410 and only a new list can tell what was deleted meanwhile.
    for (const mode of ["event", "http"] as const) {
      await t.test(`410 Gone as ${mode === "event" ? "an ERROR event" : "an HTTP status"}: re-listed, nothing stale`, async () => {
        fake.tooOld = mode;
        await waitFor(() => fake.openWatches === 1, 5000, "a watch");
        const listsBefore = lists(fake).length;
        const resumeFrom = fake.resourceVersion;
        fake.closeWatches();
        const gone = mode === "event" ? "web-a" : "web-c";
        fake.remove(gone);
        fake.put(slice(mode === "event" ? "web-c" : "web-d", [ready(mode === "event" ? "127.0.0.5" : "127.0.0.2")], ports));
        fake.compact();
        const expected = mode === "event" ? ["127.0.0.5"] : ["127.0.0.2"];
        await poolIs(lb, Object.fromEntries(expected.map((h) => [`${h}:${port}`, "up"])));
        assert.equal(lists(fake).length, listsBefore + 1, "listed again");
        const refused = watches(fake).find((w) => w.status === (mode === "http" ? 410 : 200) && w.query.resourceVersion === resumeFrom);
        assert.ok(refused, JSON.stringify(fake.requests.slice(-4)));
        await waitFor(() => watches(fake).at(-1)?.query.resourceVersion === fake.resourceVersion, 5000, "a watch from the new list");
        assert.deepEqual([...new Set(await landings(lb, 4))].sort(), expected);
      });
    }
    assert.equal(lb.logs.filter((l) => l.msg === "kubernetes watch expired; re-listing").length, 2);
  });

  it("starts while the API server is down or forbids it, catches up when it can, and keeps serving while it is away", async (t) => {
    t.after(stopAll);
    const fake = await startApiServer();
    const { port } = await pods(["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    const ports = [{ name: "http", port }];
    fake.put(slice("web-a", [ready("127.0.0.2"), ready("127.0.0.3")], ports));
    await fake.stop();

    const lb = await startK8sBalancer(fake, { service: "web" });
    assert.equal(lb.logs.find((l) => l.msg === "gobalancer started")?.backends, 0);
    await lb.waitForLog((l) => l.msg === "kubernetes list failed" && /ECONNREFUSED/.test(String(l.err)));
    // Up, but the Role is not bound yet: the log says exactly what is missing.
    fake.forbidden = true;
    await fake.start();
    await lb.waitForLog((l) => l.msg === "kubernetes list failed" && /^HTTP 403: .*cannot list resource "endpointslices"/.test(String(l.err)), 10_000);
    fake.forbidden = false;
    await poolIs(lb, { [`127.0.0.2:${port}`]: "up", [`127.0.0.3:${port}`]: "up" }, 10_000);
    await waitFor(() => fake.openWatches === 1, 5000, "a watch");

    // The API server goes away: the backends already known keep serving.
    await fake.stop();
    await lb.waitForLog((l) => l.msg === "kubernetes watch failed");
    assert.deepEqual([...new Set(await landings(lb, 6))].sort(), ["127.0.0.2", "127.0.0.3"]);
    assert.equal(pool(lb).size, 2);

    // Changes made meanwhile arrive when it is back; nothing stale is left.
    fake.put(slice("web-a", [ready("127.0.0.3"), ready("127.0.0.4")], ports));
    await fake.start();
    await poolIs(lb, { [`127.0.0.3:${port}`]: "up", [`127.0.0.4:${port}`]: "up" }, 10_000);
    assert.deepEqual([...new Set(await landings(lb, 4))].sort(), ["127.0.0.3", "127.0.0.4"]);
  });

  it("selects the named port; a slice without it, or an FQDN slice, is ignored with one warning", async (t) => {
    t.after(stopAll);
    const fake = await startApiServer();
    const http = await pods(["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    const metrics = await startServer((s) => s.end("metrics\n"), 0, "127.0.0.2");
    const both = [{ name: "metrics", port: metrics.port }, { name: "http", port: http.port }];
    fake.put(slice("web-a", [ready("127.0.0.2")], both));
    fake.put(slice("web-b", [ready("127.0.0.3")], [{ name: "metrics", port: metrics.port }]));
    fake.put(slice("web-f", [ready("web.example.com")], both, { addressType: "FQDN" }));
    const lb = await startK8sBalancer(fake, { service: "web", port: "http" });
    await poolIs(lb, { [`127.0.0.2:${http.port}`]: "up" });
    assert.deepEqual(new Set(await landings(lb, 3)), new Set(["127.0.0.2"]));

    // More events touching the broken slices do not repeat the warning.
    fake.put(slice("web-b", [ready("127.0.0.3"), ready("127.0.0.4")], [{ name: "metrics", port: metrics.port }]));
    fake.put(slice("web-a", [ready("127.0.0.2"), ready("127.0.0.3")], both));
    await poolIs(lb, { [`127.0.0.2:${http.port}`]: "up", [`127.0.0.3:${http.port}`]: "up" });
    const warnings = (name: string) => lb.logs.filter((l) => l.slice === name && l.level === 40);
    assert.equal(warnings("web-b").length, 1, JSON.stringify(lb.logs.filter((l) => l.level === 40)));
    assert.match(warnings("web-b")[0]!.msg, /endpointslice ignored: has no TCP port named http \(ports: metrics=\d+\)/);
    assert.equal(warnings("web-f").length, 1);
    assert.match(warnings("web-f")[0]!.msg, /FQDN/);
    assert.equal(warnings("web-a").length, 0);
    // Fixed, it contributes.
    fake.put(slice("web-b", [ready("127.0.0.4")], both));
    await poolIs(lb, { [`127.0.0.2:${http.port}`]: "up", [`127.0.0.3:${http.port}`]: "up", [`127.0.0.4:${http.port}`]: "up" });
  });

  it("serves IPv6 endpoints, beside IPv4 ones (a dual-stack Service)", async (t) => {
    t.after(stopAll);
    const fake = await startApiServer();
    let v6: TestServer | undefined;
    let v4: TestServer | undefined;
    for (let attempt = 0; !v4; attempt++) {
      v6 = await startServer((s) => s.end("v6\n"), 0, "::1");
      v4 = await startServer((s) => s.end("v4\n"), v6.port, "127.0.0.2").catch(async (err: unknown) => {
        await v6!.close();
        if (attempt === 5) throw err;
        return undefined;
      });
    }
    const port = v6!.port;
    fake.put(slice("web-v6", [ready("::1")], [{ name: "http", port }], { addressType: "IPv6" }));
    fake.put(slice("web-v4", [ready("127.0.0.2")], [{ name: "http", port }]));
    const lb = await startK8sBalancer(fake, { service: "web" });
    await poolIs(lb, { [`[::1]:${port}`]: "up", [`127.0.0.2:${port}`]: "up" });
    assert.deepEqual([...new Set(await landings(lb, 4))].sort(), ["v4", "v6"]);
    fake.put(slice("web-v6", [notReady("::1")], [{ name: "http", port }], { addressType: "IPv6" }));
    await poolIs(lb, { [`127.0.0.2:${port}`]: "up" });
  });

  it("refuses to start with an unreadable kubeconfig, in one clear line", async (t) => {
    t.after(stopAll);
    const dir = tempDir();
    const lb = await startBalancer(
      { discovery: { type: "kubernetes", kubernetes: { service: "web" } } },
      { dir, env: { KUBECONFIG: `${dir}/missing-kubeconfig` }, noWait: true },
    );
    assert.equal((await lb.exited).code, 1);
    const errors = lb.logs.filter((l) => l.level === 50);
    assert.equal(errors.length, 1, JSON.stringify(lb.logs));
    assert.match(errors[0]!.msg, /^start failed: kubernetes discovery: cannot load kubeconfig: .*missing-kubeconfig/);
    assert.deepEqual(lb.otherOutput, []);
  });
});
