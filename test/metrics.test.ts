// End-to-end: /metrics, read by a Prometheus text-format parser, after known traffic.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { cleanup, refusedPort, request, startBalancer, startEchoBackend, startServer, waitFor } from "./harness.ts";
import { scrape, valueOf, type Scrape } from "./observe.ts";

afterEach(cleanup);

const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;


/**
 * The count and sum of histogram `name` for the series with `labels`. The parser reads
 * histograms with no label but `le` only, so it is given that series' lines alone, with
 * those labels taken out.
 */
function histogramOf(scraped: Scrape, name: string, labels: Record<string, string> = {}) {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const lines = scraped.text.split("\n").filter((l) => l.startsWith(`# HELP ${name} `) || l.startsWith(`# TYPE ${name} `) || (l.startsWith(`${name}_`) && pairs.every((p) => l.includes(p))));
  const unlabelled = lines.map((l) => pairs.reduce((line, p) => line.replace(`${p},`, "").replace(`{${p}}`, "").replace(p, ""), l));
  const families = parsePrometheusTextFormat(unlabelled.join("\n") + "\n");
  const family = families.find((f) => f.name === name);
  assert.equal(family?.type, "HISTOGRAM", `${name} is a histogram`);
  const sample = family!.metrics[0];
  assert.ok(sample?.buckets, `${name} ${JSON.stringify(labels)} has buckets`);
  // Keys such as "10" come first in a JS object: order by the bound.
  const counts = Object.entries(sample.buckets)
    .map(([le, n]) => [le === "+Inf" ? Infinity : Number(le), Number(n)] as const)
    .sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < counts.length; i++) assert.ok(counts[i]![1] >= counts[i - 1]![1], `${name} buckets are cumulative`);
  return { count: Number(sample.count), sum: Number(sample.sum) };
}


for (const workers of [1, 2]) {
  describe(`/metrics, workers: ${workers}`, () => {
    it("counts known traffic exactly, summed over threads", async () => {
      const [a, b] = await Promise.all([startEchoBackend(), startEchoBackend()]);
      const refused = `127.0.0.1:${await refusedPort()}`;
      const lb = await startBalancer({
        workers,
        retries: 0,
        // The refused backend stays in rotation: exactly one connection in three goes to it.
        health_check: { interval: "1h", timeout: "1s", fall: 100 },
        discovery: { type: "static", backends: [a, b].map((s) => ({ address: s.address })).concat([{ address: refused }]) },
      });
      const replies = [];
      for (let i = 0; i < 12; i++) replies.push(await request(lb.port, "hello").catch(() => "failed"));
      assert.equal(replies.filter((r) => r === "hello").length, 8, JSON.stringify(replies));
      const m = await scrape(lb);
      for (const backend of [a.address, b.address]) {
        assert.equal(valueOf(m, "gobalancer_backend_connections_total", { backend }), 4);
        assert.equal(valueOf(m, "gobalancer_backend_bytes_in_total", { backend }), 20);
        assert.equal(valueOf(m, "gobalancer_backend_bytes_out_total", { backend }), 20);
        assert.equal(valueOf(m, "gobalancer_backend_connection_failures_total", { backend }), 0);
        assert.equal(valueOf(m, "gobalancer_backend_up", { backend, source: "static" }), 1);
        assert.equal(valueOf(m, "gobalancer_backend_weight", { backend }), 1);
        assert.equal(valueOf(m, "gobalancer_backend_active_connections", { backend }), 0);
      }
      assert.equal(valueOf(m, "gobalancer_backend_connections_total", { backend: refused }), 4);
      assert.equal(valueOf(m, "gobalancer_backend_connection_failures_total", { backend: refused }), 4);
      assert.equal(valueOf(m, "gobalancer_connections_accepted_total"), 12);
      assert.equal(valueOf(m, "gobalancer_active_connections"), 0);
      assert.equal(valueOf(m, "gobalancer_connections_refused_total", { reason: "dials_exhausted" }), 4);
      assert.equal(valueOf(m, "gobalancer_connections_refused_total", { reason: "no_backend" }), 0);
      assert.equal(valueOf(m, "gobalancer_connections_closed_total", { termination: "connect_refused" }), 4);
      // Request and FIN from the client first: client_fin.
      assert.equal(valueOf(m, "gobalancer_connections_closed_total", { termination: "client_fin" }), 8);
      assert.equal(valueOf(m, "gobalancer_build_info", { version: PACKAGE_VERSION, node: process.version }), 1);
      // Histograms recorded by every thread into shared memory: successful dials only.
      for (const backend of [a.address, b.address]) {
        const connect = histogramOf(m, "gobalancer_backend_connect_duration_seconds", { backend });
        assert.equal(connect.count, 4);
        assert.ok(connect.sum > 0 && connect.sum < 4, `connect time sum ${connect.sum}`);
      }
      assert.equal(histogramOf(m, "gobalancer_backend_connect_duration_seconds", { backend: refused }).count, 0);
      assert.equal(histogramOf(m, "gobalancer_connection_duration_seconds").count, 12);
      assert.ok(m.some((f) => f.name === "process_resident_memory_bytes"), "prom-client's process metrics");
      assert.ok(m.some((f) => f.name === "nodejs_eventloop_lag_seconds"), "prom-client's Node.js metrics");
      // Each backend's first health probe, made at start-up.
      const checks = async () => {
        const now = await scrape(lb);
        return [a.address, b.address, refused].map((backend) => ["pass", "fail"].map((result) => valueOf(now, "gobalancer_backend_health_checks_total", { backend, result })));
      };
      await waitFor(async () => (await checks()).flat().reduce((n, v) => n! + (v ?? 0), 0) === 3, 5000, "three first probes");
      assert.deepEqual(await checks(), [[1, 0], [1, 0], [0, 1]]);
    });

    it("counts clients refused for want of a backend", async () => {
      const lb = await startBalancer({ workers, discovery: { type: "static", backends: [] } });
      for (let i = 0; i < 3; i++) assert.equal(await request(lb.port, "anyone?").catch(() => ""), "");
      const m = await scrape(lb);
      assert.equal(valueOf(m, "gobalancer_connections_accepted_total"), 3);
      assert.equal(valueOf(m, "gobalancer_connections_refused_total", { reason: "no_backend" }), 3);
      assert.equal(valueOf(m, "gobalancer_connections_closed_total", { termination: "no_backend" }), 3);
      assert.equal(valueOf(m, "gobalancer_active_connections"), 0);
    });
  });
}

describe("/metrics", () => {
  it("gauges follow a backend going down and coming back", async () => {
    const echo = await startEchoBackend();
    const port = echo.port;
    const lb = await startBalancer({
      health_check: { interval: "200ms", timeout: "500ms", rise: 1, fall: 1 },
      discovery: { type: "static", backends: [{ address: echo.address }] },
    });
    const up = async () => valueOf(await scrape(lb), "gobalancer_backend_up", { backend: echo.address });
    assert.equal(await up(), 1);
    await echo.close();
    await waitFor(async () => (await up()) === 0, 5000, "backend_up 0");
    const failed = valueOf(await scrape(lb), "gobalancer_backend_health_checks_total", { backend: echo.address, result: "fail" });
    assert.ok(failed !== undefined && failed >= 1, `failed checks counted: ${failed}`);
    await startServer((s) => s.pipe(s), port);
    await waitFor(async () => (await up()) === 1, 5000, "backend_up 1 again");
  });

  it("shows the bytes of an open connection within 5 s, before it closes", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ discovery: { type: "static", backends: [{ address: echo.address }] } });
    const socket = net.connect({ port: lb.port, host: "127.0.0.1" });
    socket.on("data", () => {});
    await new Promise((r) => socket.once("connect", r));
    socket.write(Buffer.alloc(1000, 1));
    const bytesIn = async () => valueOf(await scrape(lb), "gobalancer_backend_bytes_in_total", { backend: echo.address });
    await waitFor(async () => (await bytesIn()) === 1000, 5000, "1000 bytes in while the connection is open");
    assert.equal(valueOf(await scrape(lb), "gobalancer_active_connections"), 1);
    socket.destroy();
  });

  it("needs the token when one is set", async () => {
    const lb = await startBalancer({ api: { token: "s3cret" }, discovery: { backends: [] } });
    assert.equal((await fetch(`${lb.api}/metrics`)).status, 401);
    assert.ok((await scrape(lb, "s3cret")).length > 0);
  });
});
