/**
 * The peer benchmark's arithmetic and parsing, offline: the load itself only runs under
 * `make bench-peers`.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseIperf, parseWrk } from "../bench/peers/load.ts";
import { haproxyConfig, nginxStreamConfig } from "../bench/peers/paths.ts";
import { treeCpuMs } from "../bench/peers/processes.ts";
import { cpuTable, median, ratioToBestPeer, record, replaceSection, resultTable, type PathInfo, type Samples } from "../bench/peers/report.ts";

const WRK = `Running 4s test @ http://127.0.0.1:40001/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.00ms    2.14ms  28.05ms   94.57%
    Req/Sec     5.09k     1.31k    6.63k    71.43%
  Latency Distribution
     50%  541.00us
     75%  800.00us
     90%    1.81ms
     99%    1.20s
  10632 requests in 1.10s, 1.47MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 1
Requests/sec:   9666.32
Transfer/sec:      1.34MB
`;

const PATHS: PathInfo[] = [
  { id: "direct", label: "direct", role: "ceiling" },
  { id: "gb", label: "GoBalancer", role: "gobalancer" },
  { id: "ha", label: "HAProxy", role: "peer" },
  { id: "ng", label: "nginx", role: "peer" },
];

function samples(): Samples {
  const s: Samples = {};
  const put = (path: string, key: string, values: number[]) => values.forEach((v) => record(s, path, key, v));
  put("direct", "keepAliveRps", [60_000, 70_000, 65_000]);
  put("gb", "keepAliveRps", [30_000, 27_000, 36_000]);
  put("ha", "keepAliveRps", [40_000, 20_000, 35_000]);
  put("ng", "keepAliveRps", [33_000, 34_000, 32_000]);
  put("gb", "keepAliveP99Ms", [3, 4, 5]);
  put("ha", "keepAliveP99Ms", [2, 2, 2]);
  put("ng", "keepAliveP99Ms", [8, 8, 8]);
  return s;
}

describe("peer benchmark report", () => {
  it("takes the median of odd and even counts, and none of nothing", () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(median([]), undefined);
  });

  it("divides by the best peer: the highest throughput, the lowest latency", () => {
    const s = samples();
    // GoBalancer 30k; HAProxy median 35k beats nginx 33k.
    assert.equal(ratioToBestPeer(s, PATHS, "gb", "keepAliveRps"), 30_000 / 35_000);
    // Lower is better: HAProxy's 2 ms is the best peer.
    assert.equal(ratioToBestPeer(s, PATHS, "gb", "keepAliveP99Ms"), 2);
    assert.equal(ratioToBestPeer(s, PATHS, "gb", "bulkGbps"), undefined);
  });

  it("prints a row per path, a ratio row for GoBalancer and the targets", () => {
    const table = resultTable(samples(), PATHS).split("\n");
    assert.equal(table.length, 2 + PATHS.length + 2);
    assert.match(table[2]!, /^\| direct \| — \| 65000 \| — \|/);
    assert.match(table[3]!, /^\| GoBalancer \| — \| 30000 \| 4\.00 \|/);
    assert.match(table[6]!, /^\| GoBalancer ÷ best peer \| — \| 0\.86× \| 2\.00× \|/);
    assert.match(table[7]!, /^\| target ratio \| ≥ 1\.00 \| ≥ 0\.90 \| ≤ 1\.20 \| ≥ 0\.75 \| ≤ 1\.20 \| ≤ 2\.00 \|$/);
  });

  it("gives CPU per request for every balancer, not the direct path", () => {
    const s = samples();
    [12, 10, 11].forEach((v) => record(s, "gb", "keepAliveCpuUs", v));
    [90, 80].forEach((v) => record(s, "ha", "closeCpuUs", v));
    [20, 16].forEach((v) => record(s, "ha", "closeUserUs", v));
    [70, 64].forEach((v) => record(s, "ha", "closeSystemUs", v));
    const table = cpuTable(s, PATHS).split("\n");
    assert.deepEqual(table.slice(2), ["| GoBalancer | 11 | — | — | — |", "| HAProxy | — | — | 85 | 18 / 67 |", "| nginx | — | — | — | — |"]);
  });

  it("reads the CPU time of a process tree from /proc", () => {
    const before = treeCpuMs(process.pid);
    const start = process.cpuUsage();
    const cpuSince = () => {
      const u = process.cpuUsage(start);
      return (u.user + u.system) / 1000;
    };
    while (cpuSince() < 200); // burn 200 ms of CPU, however busy the machine is
    const used = treeCpuMs(process.pid) - before;
    // /proc counts in 10 ms ticks; other threads of this process may add a little.
    assert.ok(used >= 170 && used < 1000, `measured ${used} ms of ${cpuSince()} ms`);
  });

  it("replaces only its own section of the document", () => {
    const doc = "# Benchmarks\n\n## Pick benchmark\n\npick figures\n\n## Peer benchmark\n\nold\n```sh\n# not a heading\n```\nstill old\n\n## Later\n\nkept\n";
    const out = replaceSection(doc, "## Peer benchmark", "## Peer benchmark\n\nnew\n");
    assert.equal(out, "# Benchmarks\n\n## Pick benchmark\n\npick figures\n\n## Peer benchmark\n\nnew\n\n## Later\n\nkept\n");
    assert.equal(replaceSection("", "## Peer benchmark", "## Peer benchmark\n\nnew"), "# Benchmarks\n\n## Peer benchmark\n\nnew\n");
    assert.equal(replaceSection("# B\n\n## Pick\n\nx\n", "## Peer benchmark", "## Peer benchmark\n\nnew"), "# B\n\n## Pick\n\nx\n\n## Peer benchmark\n\nnew\n");
  });
});

describe("peer benchmark parsing and configs", () => {
  it("reads wrk's rate, percentiles in any unit, and errors", () => {
    const r = parseWrk(WRK)!;
    assert.equal(r.rps, 9666.32);
    assert.equal(r.requests, 10632);
    assert.equal(r.p50Ms, 0.541);
    assert.equal(r.p90Ms, 1.81);
    assert.equal(r.p99Ms, 1200);
    assert.equal(r.errors, 6);
    assert.equal(parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"), undefined);
  });

  it("reads iperf3's received rate and rejects its errors", () => {
    assert.equal(parseIperf(JSON.stringify({ end: { sum_received: { bits_per_second: 6.5e9 } } })), 6.5);
    assert.equal(parseIperf(JSON.stringify({ error: "the server is busy running a test. try again later" })), undefined);
    assert.equal(parseIperf("not json"), undefined);
  });

  it("configures the peers as the issue says, on loopback only", () => {
    const ha = haproxyConfig({ listenPort: 4000, backends: [4001, 4002], threads: 2 });
    for (const line of ["nbthread 2", "mode tcp", "option splice-auto", "bind 127.0.0.1:4000", "server s2 127.0.0.1:4002"]) assert.ok(ha.includes(line), line);
    const ng = nginxStreamConfig({ listenPort: 4000, backends: [4001], workers: 2, dir: "/tmp/x" });
    for (const line of ["load_module", "worker_processes 2;", "listen 127.0.0.1:4000;", "server 127.0.0.1:4001;"]) assert.ok(ng.includes(line), line);
  });
});
