// End-to-end: 20 s of connection churn (resets, half-closes, slow readers, vanishing
// clients, resetting backends) through the real process leaves nothing behind.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";
import { churn, churnBackend } from "../bench/soak/churn.ts";
import { TERMINATIONS } from "../src/proxy/termination.ts";
import { cleanup, REPO, startBalancer, waitFor, type BalancerProcess } from "./harness.ts";
import { accessLines } from "./observe.ts";
import { seededRandom } from "./seeded-random.ts";

after(cleanup);

const PROBE = path.join(REPO, "bench", "soak", "probe.ts");
/** RSS may grow by this much over the run (heap and buffer pools warming up), no more. */
const RSS_GROWTH_BOUND = 96 * 1024 * 1024;

interface ProbeLine {
  timers: number;
  handles: number;
  rss: number;
}

function probeLines(lb: BalancerProcess): ProbeLine[] {
  try {
    return readFileSync(path.join(lb.dir, "probe.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as ProbeLine);
  } catch {
    return [];
  }
}

async function nextProbe(lb: BalancerProcess): Promise<ProbeLine> {
  const seen = probeLines(lb).length;
  await waitFor(() => probeLines(lb).length > seen, 3000, "a probe line");
  return probeLines(lb).at(-1)!;
}

const descriptors = (lb: BalancerProcess) => readdirSync(`/proc/${lb.proc.pid}/fd`).length;

describe("churn", () => {
  it("20 s of random endings from 200 concurrent clients: descriptors, counts, timers back; RSS bounded", async () => {
    const random = seededRandom(Number(process.env.CHURN_SEED ?? 13));
    const backends = await Promise.all([churnBackend(random), churnBackend(random)]);
    const lb = await startBalancer(
      {
        timeouts: { connect: "1s", idle: "3s", shutdown: "1s" },
        health_check: { interval: "1h", timeout: "1s" },
        access_log: { enabled: true, path: "access.log" },
        discovery: { type: "static", backends: backends.map((b) => ({ address: `127.0.0.1:${(b.address() as { port: number }).port}` })) },
      },
      { nodeArgs: ["--import", PROBE], env: { GOBALANCER_PROBE_FILE: "probe.jsonl", PROBE_INTERVAL_MS: "500" } },
    );
    after(() => backends.forEach((b) => b.close()));
    await new Promise((r) => setTimeout(r, 300)); // first health probes done
    const baseline = { fds: descriptors(lb), probe: await nextProbe(lb) };

    const result = await churn({ port: lb.port, durationMs: 20_000, concurrency: 200, random });
    assert.ok(result.started > 2000, `only ${result.started} connections in 20 s`);
    assert.equal(result.corrupted, 0, "normal connections got their bytes back intact");

    await waitFor(() => descriptors(lb) <= baseline.fds, 5000, `descriptors back to ${baseline.fds} (now ${descriptors(lb)})`);
    const api = await fetch(`${lb.api}/backends`).then((r) => r.json() as Promise<Array<{ active_connections: number }>>);
    assert.deepEqual(api.map((b) => b.active_connections), [0, 0]);
    const end = await nextProbe(lb);
    assert.ok(end.timers <= baseline.probe.timers, `timers ${end.timers}, at start ${baseline.probe.timers}`);
    assert.ok(end.rss - baseline.probe.rss < RSS_GROWTH_BOUND, `RSS grew by ${Math.round((end.rss - baseline.probe.rss) / 2 ** 20)} MiB`);
    // Every connection the clients made was counted once, under one cause.
    // Each line parses (accessLines), names a known cause, and there is one per connection.
    const lines = await waitFor(() => {
      const parsed = accessLines(lb);
      return parsed.length >= result.started ? parsed : null;
    }, 5000, "an access-log line per connection");
    assert.equal(lines.length, result.started);
    for (const line of lines) assert.ok((TERMINATIONS as readonly string[]).includes(line.termination), `cause ${line.termination}`);
    console.log(`churn: ${result.started} connections ${JSON.stringify(result.byBehaviour)}, cut ${result.cut}; RSS +${Math.round((end.rss - baseline.probe.rss) / 2 ** 20)} MiB`);
  });
});
