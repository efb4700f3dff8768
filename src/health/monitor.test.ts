import assert from "node:assert/strict";
import net from "node:net";
import { after, describe, it } from "node:test";
import pino from "pino";
import { HealthMonitor, type HealthSettings, type HealthSink } from "./monitor.ts";
import type { ProbeDone, Prober, ProbeTarget, RunningProbe } from "./probe.ts";

const logger = pino({ level: "silent" });

function settings(over: Partial<HealthSettings> = {}): HealthSettings {
  return {
    type: "tcp",
    intervalMs: 50,
    timeoutMs: 100,
    rise: 2,
    fall: 3,
    http: { path: "/health", expectStatus: [[200, 399]], host: "" },
    ...over,
  };
}

/** Records what the monitor tells the pool. */
class RecordingSink implements HealthSink {
  readonly changes: Array<{ key: string; healthy: boolean; reason: string }> = [];
  readonly checks: Array<{ key: string; error: string | null }> = [];
  setHealthy(key: string, healthy: boolean, reason: string): void {
    this.changes.push({ key, healthy, reason });
  }
  recordCheck(key: string, _at: Date, error: string | null): void {
    this.checks.push({ key, error });
  }
}

/** Answers each probe from a script (null = pass), asynchronously, and logs when probes start. */
class ScriptedProber implements Prober {
  readonly starts: Array<{ key: string; at: number }> = [];
  script: (key: string, n: number) => string | null;
  constructor(script: (key: string, n: number) => string | null = () => null) {
    this.script = script;
  }
  start(target: ProbeTarget, done: ProbeDone): RunningProbe {
    const n = this.starts.filter((s) => s.key === target.key).length;
    this.starts.push({ key: target.key, at: performance.now() });
    const t = setImmediate(() => done(this.script(target.key, n), false));
    return { cancel: () => clearImmediate(t) };
  }
}

const target = (port: number): ProbeTarget => ({ key: `127.0.0.1:${port}`, host: "127.0.0.1", port });

/** A deterministic uniform [0, 1) sequence. */
function seeded(seed = 1): () => number {
  let x = seed;
  return () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

async function waitUntil(cond: () => boolean, timeoutMs = 3000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const servers: net.Server[] = [];
after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

async function countingListener(): Promise<{ target: ProbeTarget; accepted: () => number; open: () => number }> {
  let accepted = 0;
  let open = 0;
  const server = net.createServer((s) => {
    accepted++;
    open++;
    s.resume();
    s.on("error", () => {});
    s.on("close", () => open--);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  servers.push(server);
  return { target: target((server.address() as net.AddressInfo).port), accepted: () => accepted, open: () => open };
}

describe("health monitor", () => {
  it("takes a backend down after fall failures and back after rise successes, once each", async () => {
    const sink = new RecordingSink();
    // Probes 0-4 fail, then all pass.
    const prober = new ScriptedProber((_k, n) => (n < 5 ? "connect refused" : null));
    const m = new HealthMonitor({ settings: settings({ intervalMs: 10 }), sink, logger, prober });
    m.watch([target(1)]);
    await waitUntil(() => sink.checks.length >= 9, 3000, "nine checks");
    m.stop();
    assert.deepEqual(sink.changes, [
      { key: "127.0.0.1:1", healthy: false, reason: "connect refused" },
      { key: "127.0.0.1:1", healthy: true, reason: "2 consecutive checks passed" },
    ]);
    assert.deepEqual(sink.checks.slice(0, 6).map((c) => c.error), [...Array(5).fill("connect refused"), null]);
  });

  it("counts failed client dials toward fall", () => {
    const sink = new RecordingSink();
    const m = new HealthMonitor({ settings: settings({ intervalMs: 3_600_000, fall: 3 }), sink, logger, prober: new ScriptedProber() });
    m.watch([target(1)]);
    m.reportPassiveFailure("127.0.0.1:1", "connect refused");
    m.reportPassiveFailure("127.0.0.1:1", "connect refused");
    assert.equal(sink.changes.length, 0);
    m.reportPassiveFailure("127.0.0.1:1", "connect refused");
    assert.deepEqual(sink.changes, [{ key: "127.0.0.1:1", healthy: false, reason: "connect refused (client traffic)" }]);
    m.reportPassiveFailure("127.0.0.1:2", "connect refused"); // not watched: ignored
    m.stop();
    assert.equal(sink.changes.length, 1);
  });

  it("a backend alternating pass/fail faster than rise/fall does not change state", async () => {
    const sink = new RecordingSink();
    const prober = new ScriptedProber((_k, n) => (n % 2 === 0 ? "HTTP 503" : null));
    const m = new HealthMonitor({ settings: settings({ intervalMs: 5, rise: 2, fall: 2 }), sink, logger, prober });
    m.watch([target(1)]);
    await waitUntil(() => sink.checks.length >= 20, 3000, "twenty checks");
    m.stop();
    assert.deepEqual(sink.changes, []);
  });

  it("spreads the first probes of a large batch and jitters every interval by up to 10%", async () => {
    // Timers that only record what was asked of them, so the schedule is checked exactly.
    // The monitor's clock is the test's, so "when a timer was asked for" is exact, however
    // long the machine keeps this thread waiting between two lines.
    let clockMs = 1000.3;
    const clock = () => clockMs;
    const asked: Array<{ ms: number; fn: () => void; at: number }> = [];
    const timers = { after: (ms: number, fn: () => void) => asked.push({ ms, fn, at: clock() }), cancel: () => {} };
    const intervalMs = 2000;
    const prober = new ScriptedProber();
    const m = new HealthMonitor({ settings: settings({ intervalMs }), sink: new RecordingSink(), logger, prober, random: seeded(7), timers, clock });
    m.watch([target(1)]);
    assert.equal(asked.pop()!.ms, 0, "a lone new backend is probed at once");
    m.watch(Array.from({ length: 1000 }, (_, i) => target(10_000 + i)));
    const first = asked.splice(0);
    // A thousand first probes spread over a second (1 ms each), evenly enough.
    const buckets = new Array(10).fill(0);
    for (const { ms } of first) buckets[Math.min(9, Math.floor(ms / 100))]++;
    // (Starts are gathered on 20 ms ticks, so a delay may grow by up to one tick.)
    assert.ok(first.every(({ ms }) => ms >= 0 && ms <= 1020));
    assert.ok(buckets.every((n) => n > 60 && n < 140), `first probes bunched: ${buckets.join(" ")}`);
    // Each probe, once done, asks for the next one interval ± 10% after it started.
    const started = clock();
    for (const { fn } of first) fn();
    clockMs += 37.9; // the probes took a while
    await waitUntil(() => asked.length === 1000, 3000, "second round scheduled");
    const took = clock() - started; // already spent of each interval
    m.stop();
    const next = asked.map(({ ms }) => ms).sort((a, b) => a - b);
    assert.ok(next[0]! >= intervalMs * 0.9 - took - 1 && next.at(-1)! <= intervalMs * 1.1 + 21, `next probes after ${next[0]}-${next.at(-1)}ms`);
    assert.ok(next.at(-1)! - next[0]! > intervalMs * 0.15, "intervals are jittered, not all the same");
    // ...and fall due on 20 ms ticks (give or take the rounding to whole milliseconds), so
    // the thousand probes wake the event loop a few dozen times rather than a thousand.
    const offTick = asked.filter(({ ms, at }) => {
      const phase = (at + ms) % 20;
      return phase > 0.6 && phase < 19.4;
    });
    assert.deepEqual(offTick.map(({ ms, at }) => at + ms), []);
  });

  it("a reload that shortens the interval moves waiting probes to it, counted from the last probe's start", async () => {
    let clockMs = 5000;
    const clock = () => clockMs;
    const pending = new Map<number, { ms: number; at: number; fn: () => void }>();
    let next = 0;
    const timers = {
      after: (ms: number, fn: () => void) => (pending.set(++next, { ms, at: clock(), fn }), next),
      cancel: (handle: unknown) => void pending.delete(handle as number),
    };
    const prober = new ScriptedProber();
    const hour = 3_600_000;
    const m = new HealthMonitor({ settings: settings({ intervalMs: hour }), sink: new RecordingSink(), logger, prober, random: () => 0.5, timers, clock });
    m.watch([target(1)]);
    const [[firstHandle, first]] = [...pending];
    pending.delete(firstHandle);
    first!.fn(); // the first probe starts at 5000
    await waitUntil(() => pending.size === 1, 3000, "the next probe scheduled");
    assert.ok([...pending.values()][0]!.ms > hour * 0.8, "an hour away on the old interval");

    clockMs += 2000; // two seconds after that probe started, a reload asks for 5 s
    m.configure(settings({ intervalMs: 5000 }));
    assert.equal(pending.size, 1, "the old timer was cancelled, one new one is pending");
    const moved = [...pending.values()][0]!;
    // Due 5 s (random 0.5: no jitter) after the last start, so 3 s from now, rounded up to a 20 ms tick.
    assert.ok(moved.at + moved.ms >= 10_000 && moved.at + moved.ms <= 10_020, `due at ${moved.at + moved.ms}`);

    // A probe long overdue on the new interval starts at once.
    clockMs += 60_000;
    m.configure(settings({ intervalMs: 1000 }));
    assert.equal([...pending.values()][0]!.ms, 0);
    // The same interval again: timers are left alone.
    const before = [...pending.keys()];
    m.configure(settings({ intervalMs: 1000, fall: 5 }));
    assert.deepEqual([...pending.keys()], before);
    m.stop();
  });

  it("stops probing a removed backend at once, including a probe in flight", async () => {
    // A black hole under http checks: each probe stays open until the timeout.
    const hole = await countingListener();
    const sink = new RecordingSink();
    const m = new HealthMonitor({ settings: settings({ type: "http", intervalMs: 20, timeoutMs: 2000 }), sink, logger });
    m.watch([hole.target]);
    await waitUntil(() => hole.open() === 1, 2000, "probe in flight");
    m.unwatch([hole.target]);
    assert.equal(m.size, 0);
    await waitUntil(() => hole.open() === 0, 2000, "probe connection closed");
    const accepted = hole.accepted();
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(hole.accepted(), accepted, "no probe after removal");
    assert.deepEqual(sink.checks, [], "a cancelled probe is no verdict");
  });

  it("a hanging probe fails at the timeout and probing goes on", async () => {
    const hole = await countingListener();
    const sink = new RecordingSink();
    const m = new HealthMonitor({ settings: settings({ type: "http", intervalMs: 20, timeoutMs: 60, fall: 2 }), sink, logger });
    m.watch([hole.target]);
    await waitUntil(() => sink.checks.length >= 4, 3000, "four checks");
    m.stop();
    assert.deepEqual(sink.checks.slice(0, 4).map((c) => c.error), Array(4).fill("timeout after 60ms"));
    assert.deepEqual(sink.changes, [{ key: hole.target.key, healthy: false, reason: "timeout after 60ms" }]);
  });

  it("stop leaves no timer or socket behind and probes nothing more", async () => {
    const backends = await Promise.all([countingListener(), countingListener(), countingListener()]);
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const m = new HealthMonitor({ settings: settings({ intervalMs: 10 }), sink: new RecordingSink(), logger });
    m.watch(backends.map((b) => b.target));
    await waitUntil(() => backends.every((b) => b.accepted() >= 2), 2000, "probes running");
    m.stop();
    m.watch([backends[0]!.target]); // after stop: ignored
    assert.equal(m.size, 0);
    assert.equal(timers(), before);
    // A probe whose handshake the kernel finished just before stop() still reaches the
    // listener's accept a moment later: let those arrive, then nothing more may. (At a
    // 10 ms interval, probing that went on would add about ten per backend below.)
    await new Promise((r) => setTimeout(r, 50));
    const counts = backends.map((b) => b.accepted());
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(backends.map((b) => b.accepted()), counts);
  });
});
