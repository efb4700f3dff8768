// End-to-end: each setting a reload applies is checked by what it does afterwards, and the
// settings that need a restart by what stays as it was.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import {
  cleanup,
  connect,
  refusedPort,
  request,
  roundTrip,
  startBalancer,
  startEchoBackend,
  startNamedBackend,
  startServer,
  waitFor,
  type BalancerProcess,
} from "./harness.ts";
import { freePort } from "./ports.ts";
import { accepts, postReload, rewrite } from "./reloading.ts";

afterEach(cleanup);

/** Reloads `config` and asserts that exactly `applied` changed. */
async function reloadWith(lb: BalancerProcess, config: Record<string, unknown>, applied: string[]): Promise<void> {
  rewrite(lb, config);
  const res = await postReload(lb);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(res.body.applied, applied);
}

const backends = (...list: Array<Record<string, unknown>>) => ({ discovery: { type: "static", backends: list } });

describe("reload: each setting takes effect", () => {
  it("workers: 2: POST /reload answers only once every thread routes by the new backends", async () => {
    const [a, b] = await Promise.all([startNamedBackend("a"), startNamedBackend("b")]);
    const lb = await startBalancer({ workers: 2, ...backends({ address: a.address }) });
    // Each round swaps the only backend: the first connection after the answer, whichever
    // thread takes it, must already reach the new one.
    for (let round = 0; round < 8; round++) {
      const [next, name] = round % 2 === 0 ? [b, "b"] : [a, "a"];
      await reloadWith(lb, { workers: 2, ...backends({ address: next.address }) }, ["discovery"]);
      const got = await Promise.all([request(lb.port), request(lb.port), request(lb.port)]);
      assert.deepEqual(got.map((g) => g.trim()), [name, name, name], `round ${round}`);
    }
  });

  it("health_check: a shortened interval paces the probes from then on, not after the old one ran out", async () => {
    const probed = await startServer((socket) => socket.end());
    const lb = await startBalancer({ health_check: { interval: "1h" }, ...backends({ address: probed.address }) });
    await waitFor(() => probed.accepted() >= 1, 5000, "the first probe");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(probed.accepted(), 1, "one probe an hour");
    await reloadWith(lb, { health_check: { interval: "100ms" }, ...backends({ address: probed.address }) }, ["health_check"]);
    // About ten probes a second now; five within three seconds leaves room for a slow machine.
    await waitFor(() => probed.accepted() >= 6, 3000, "probes at the new pace");
  });

  it("log.level: threads (workers: 2) write debug lines once a reload asks for them", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ workers: 2, ...backends({ address: echo.address }) });
    await request(lb.port, "x");
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!lb.logs.some((l) => l.msg === "connection closed"), "no debug line at info");
    await reloadWith(lb, { workers: 2, log: { level: "debug" }, ...backends({ address: echo.address }) }, ["log"]);
    assert.equal(await request(lb.port, "x"), "x");
    const line = await lb.waitForLog((l) => l.msg === "connection closed", 5000, "the connection's debug line");
    assert.equal(line.level, 20);
    assert.equal(line.backend, echo.address);
  });

  for (const workers of [1, 2]) {
    it(`proxy_protocol (workers: ${workers}): a backend receives the client's PROXY header from the next connection on`, async () => {
      const echo = await startEchoBackend();
      const lb = await startBalancer({ workers, ...backends({ address: echo.address }) });
      const before = await connect(lb.port);
      assert.equal(await roundTrip(before, "hello"), "hello", "no header while off");
      await reloadWith(lb, { workers, proxy_protocol: "v1", ...backends({ address: echo.address }) }, ["proxy_protocol"]);
      const after = await connect(lb.port);
      const got = await roundTrip(after, "");
      assert.equal(got, `PROXY TCP4 127.0.0.1 127.0.0.1 ${after.localPort} ${lb.port}\r\n`);
      // The connection opened before the reload keeps what it had: no header in mid-stream.
      assert.equal(await roundTrip(before, "again"), "again");
      before.destroy();
      after.destroy();
    });
  }

  it("max_connections, global and per backend: the new limits count connections already open", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ workers: 2, ...backends({ address: echo.address }) });
    // What a client gets back: "" when refused (closed, or reset on the sockets data path).
    const echoed = () => request(lb.port, "x").catch(() => "");
    const held = [await connect(lb.port), await connect(lb.port)];
    for (const c of held) assert.equal(await roundTrip(c), "x");

    await reloadWith(lb, { workers: 2, max_connections: 2, ...backends({ address: echo.address }) }, ["max_connections"]);
    assert.equal(await echoed(), "", "a third client is refused by the global limit");
    held.pop()!.destroy();
    await waitFor(async () => (await echoed()) === "x", 5000, "room under the global limit");

    await reloadWith(lb, { workers: 2, ...backends({ address: echo.address, max_connections: 1 }) }, ["max_connections", "discovery"]);
    assert.equal(await echoed(), "", "the backend's one place is held");
    held.pop()!.destroy();
    await waitFor(async () => (await echoed()) === "x", 5000, "the backend's place free again");
    const metrics = await (await fetch(`${lb.api}/metrics`)).text();
    assert.match(metrics, /gobalancer_connections_refused_total\{reason="limit"\} [1-9]/);
    assert.match(metrics, /gobalancer_connections_refused_total\{reason="queue_timeout"\} [1-9]/);
  });

  it("retries: a dial that fails is tried on another backend once a reload allows it", async () => {
    const [a, dead] = await Promise.all([startNamedBackend("a"), refusedPort()]);
    // Health checks that take a long time to rule the dead backend out, so client dials reach it.
    const base = { retries: 0, health_check: { interval: "1h", fall: 100 }, ...backends({ address: `127.0.0.1:${dead}` }, { address: a.address }) };
    const lb = await startBalancer(base);
    const first = await Promise.all(Array.from({ length: 4 }, () => request(lb.port).catch(() => "")));
    assert.ok(first.includes(""), `round robin sends some clients to the dead backend, unretried: ${JSON.stringify(first)}`);
    await reloadWith(lb, { ...base, retries: 1 }, ["retries"]);
    const second = await Promise.all(Array.from({ length: 6 }, () => request(lb.port)));
    assert.deepEqual(second.map((s) => s.trim()), Array(6).fill("a"));
  });

  it("slow_start: a backend the reload adds is ramped from a tenth of its weight", async () => {
    const [a, b] = await Promise.all([startNamedBackend("a"), startNamedBackend("b")]);
    const lb = await startBalancer(backends({ address: a.address }));
    await reloadWith(lb, { slow_start: "30s", ...backends({ address: a.address }, { address: b.address }) }, ["slow_start", "discovery"]);
    const listed = (await (await fetch(`${lb.api}/backends/${b.address}`)).json()) as { slow_start_share: number };
    assert.ok(listed.slow_start_share < 0.2, `b starts at a tenth, got ${listed.slow_start_share}`);
    const seen: string[] = [];
    for (let i = 0; i < 33; i++) seen.push((await request(lb.port)).trim());
    // Weights 10:1 in tenths: about 3 of 33 (b's share may take its second step meanwhile).
    const toB = seen.filter((s) => s === "b").length;
    assert.ok(toB >= 1 && toB <= 6, `b got ${toB} of 33`);
  });

  it("api.listen and state_store are named in the warning and left as they were; api.token applies", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer(backends({ address: echo.address }));
    const newApiPort = await freePort();
    rewrite(lb, {
      api: { listen: `127.0.0.1:${newApiPort}`, token: "changed-by-reload" },
      state_store: { type: "etcd", etcd: { endpoints: ["http://127.0.0.1:1"] } },
      retries: 1,
      ...backends({ address: echo.address }),
    });
    const res = await postReload(lb);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.need_restart, ["api.listen", "state_store"]);
    assert.deepEqual(res.body.applied, ["retries", "api.token"]);
    const warning = await lb.waitForLog((l) => l.msg.startsWith("reload: these settings need a restart"));
    assert.deepEqual(warning.keys, ["api.listen", "state_store"]);
    assert.ok(!JSON.stringify(lb.logs).includes("changed-by-reload"), "the token is never logged");
    // The API stays where it was; nothing listens on the new address.
    assert.equal(await accepts(newApiPort), false);
    // The new token is needed from now on.
    const put = (token?: string) =>
      fetch(`${lb.api}/backends/${echo.address}`, {
        method: "PUT",
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: '{"weight": 4}',
      });
    assert.equal((await put()).status, 401);
    assert.equal((await put("changed-by-reload")).status, 200);
    // ...and changes are still kept in the state file, not in etcd.
    const saved = JSON.parse(readFileSync(path.join(lb.dir, "state.json"), "utf8")) as { weights: Array<{ weight: number }> };
    assert.deepEqual(saved.weights.map((w) => w.weight), [4]);
  });

  it("refuses a reload that would leave an API on every interface without a token", async () => {
    const echo = await startEchoBackend();
    const api = { listen: "0.0.0.0:0", token: "first" };
    const lb = await startBalancer({ api, ...backends({ address: echo.address }) });
    rewrite(lb, { api: { ...api, listen: `0.0.0.0:${lb.apiPort}`, token: "" }, ...backends({ address: echo.address }) });
    const res = await postReload(lb, "first");
    assert.equal(res.status, 400);
    assert.match(String(res.body.error), /not loopback, without a token/);
    // Nothing changed: the old token is still required.
    assert.equal((await fetch(`${lb.api}/backends`)).status, 401);
    assert.equal((await fetch(`${lb.api}/backends`, { headers: { authorization: "Bearer first" } })).status, 200);
  });
});
