// What active health checks cost: gobalancer with N backends (cheap listeners on 127.0.0.1
// in one helper process) probed every second, against the same set-up whose probes are an
// hour apart, measured side by side. Reports the balancer's CPU (utime+stime from
// /proc/PID/stat) and the latency of requests proxied meanwhile (stalls would show in the
// tail). The timed requests go to a backend of their own in this process (weight 1000
// against 1 for each listener, so every other request), so the helper's own work in
// answering probes does not show up as the balancer's latency. The balancer's wait for a
// CPU (/proc/PID/schedstat) tells how busy the machine itself was.
//
//   make build && node bench/health-probes.ts [--type tcp|http] [--backends 1000] [--seconds 10] [--rounds 3] [--workers 1]
//
// Baseline and probing runs alternate, `rounds` of each, and the summary gives medians:
// the machine is shared, so a lone run says little.
import { fork, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { stringify } from "yaml";

const CLI = path.resolve(import.meta.dirname, "..", "dist", "cli.js");
const TICKS_PER_SECOND = 100; // USER_HZ: `getconf CLK_TCK` on Linux

const { values } = parseArgs({
  options: {
    helper: { type: "boolean", default: false },
    type: { type: "string", default: "tcp" },
    backends: { type: "string", default: "1000" },
    seconds: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
    interval: { type: "string", default: "1s" },
    workers: { type: "string", default: "1" },
  },
});

if (values.helper) await runHelper(Number(values.backends));
else await main();

/**
 * The backends: N listeners in this one process. A health check (GET …) gets 200, any
 * other client "pong"; a TCP probe just connects and leaves. Reports probes per second.
 */
async function runHelper(n: number): Promise<void> {
  let requests = 0;
  const ports: number[] = [];
  const onConnection = (s: net.Socket) => {
    s.on("error", () => {});
    s.once("data", (chunk: Buffer) => {
      if (chunk[0] === 0x47 /* G */) {
        requests++;
        s.end("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
      } else {
        s.end("pong\n");
      }
    });
  };
  let connections = 0;
  for (let i = 0; i < n; i++) {
    const server = net.createServer(onConnection);
    server.on("connection", () => connections++);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    ports.push((server.address() as net.AddressInfo).port);
  }
  process.send!({ ports });
  process.on("message", () => process.send!({ connections, requests }));
  process.on("disconnect", () => process.exit(0));
}

interface Run {
  cpuPercent: number;
  probesPerSecond: number;
  latency: { p50: number; p99: number; max: number; count: number };
  /** Milliseconds per second the balancer's main thread waited for a CPU. */
  runQueueMs: number;
  stateChanges: number;
  /** Why backends changed state, with how often. */
  reasons: Map<string, number>;
}

async function main(): Promise<void> {
  const n = Number(values.backends);
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const helper = fork(import.meta.filename, ["--helper", "--backends", String(n)], { stdio: "inherit" });
  const { ports } = await message<{ ports: number[] }>(helper);
  const timing = net.createServer((s) => {
    s.on("error", () => {});
    s.once("data", (chunk: Buffer) => s.end(chunk[0] === 0x47 /* G */ ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" : "timed\n"));
  });
  await new Promise<void>((r) => timing.listen(0, "127.0.0.1", r));
  const timingPort = (timing.address() as net.AddressInfo).port;
  const idle: Run[] = [];
  const busy: Run[] = [];
  try {
    console.log(`${n} backends, health_check.type ${values.type}, workers ${values.workers}, ${rounds} rounds of ${seconds}s each, proxied requests every 5ms, load average ${loadavg()[0]!.toFixed(1)}`);
    for (let round = 1; round <= rounds; round++) {
      idle.push(await measure(helper, ports, timingPort, "1h", seconds));
      report(`round ${round} probes every 1h`, idle.at(-1)!);
      busy.push(await measure(helper, ports, timingPort, values.interval!, seconds));
      report(`round ${round} probes every ${values.interval}`, busy.at(-1)!);
    }
  } finally {
    helper.disconnect();
    timing.close();
  }
  const med = (runs: Run[], f: (r: Run) => number) => median(runs.map(f));
  console.log(`\nmedians (load average now ${loadavg()[0]!.toFixed(1)}):`);
  for (const [label, runs] of [["probes every 1h (baseline)", idle], [`probes every ${values.interval}`, busy]] as const) {
    console.log(
      `${label.padEnd(28)} cpu ${med(runs, (r) => r.cpuPercent).toFixed(1)}% of one core | probes ${med(runs, (r) => r.probesPerSecond).toFixed(0)}/s | ` +
        `proxied p50 ${med(runs, (r) => r.latency.p50).toFixed(2)}ms p99 ${med(runs, (r) => r.latency.p99).toFixed(2)}ms max ${med(runs, (r) => r.latency.max).toFixed(2)}ms | ` +
        `waited for a CPU ${med(runs, (r) => r.runQueueMs).toFixed(0)}ms/s`,
    );
  }
  const cost = med(busy, (r) => r.cpuPercent) - med(idle, (r) => r.cpuPercent);
  const rate = med(busy, (r) => r.probesPerSecond);
  console.log(`probing costs ${cost.toFixed(1)}% of one core, about ${((cost / 100 / rate) * 1e6).toFixed(0)}µs of CPU per probe`);
  console.log(`state changes during the runs: ${[...idle, ...busy].reduce((sum, r) => sum + r.stateChanges, 0)} (every backend is up throughout: 0 expected)`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function measure(helper: ChildProcess, ports: number[], timingPort: number, interval: string, seconds: number): Promise<Run> {
  const dir = mkdtempSync(path.join(tmpdir(), "gobalancer-bench-"));
  const config = path.join(dir, "config.yaml");
  writeFileSync(
    config,
    stringify({
      listen: "127.0.0.1:0",
      api: { listen: "127.0.0.1:0" },
      state_file: path.join(dir, "state.json"),
      workers: Number(values.workers),
      health_check: { type: values.type, interval, timeout: "1s" },
      algorithm: "weighted",
      discovery: {
        type: "static",
        backends: [{ address: `127.0.0.1:${timingPort}`, weight: 1000 }, ...ports.map((port) => ({ address: `127.0.0.1:${port}` }))],
      },
    }),
  );
  const lb = spawn(process.execPath, [CLI, "--config", config], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  lb.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  try {
    const port = await waitForStart(() => out);
    await sleep(3000); // past start-up and the first round of probes
    const before = { cpu: cpuTicks(lb.pid!), wait: runQueueNs(lb.pid!), at: performance.now(), helper: await message<{ connections: number }>(helper, "stats") };
    const { latency, untimed } = await proxyLatency(port, seconds * 1000);
    const after = { cpu: cpuTicks(lb.pid!), wait: runQueueNs(lb.pid!), at: performance.now(), helper: await message<{ connections: number }>(helper, "stats") };
    const elapsed = (after.at - before.at) / 1000;
    return {
      cpuPercent: ((after.cpu - before.cpu) / TICKS_PER_SECOND / elapsed) * 100,
      probesPerSecond: (after.helper.connections - before.helper.connections - untimed) / elapsed,
      latency,
      runQueueMs: (after.wait - before.wait) / 1e6 / elapsed,
      ...stateChanges(out),
    };
  } finally {
    lb.kill("SIGTERM");
    await new Promise((r) => lb.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Sequential proxied requests, one every 5 ms, each timed from connect to close; only
 * those that reached the timing backend count (the rest went to the helper's listeners).
 */
async function proxyLatency(port: number, durationMs: number): Promise<{ latency: Run["latency"]; untimed: number }> {
  const times: number[] = [];
  let untimed = 0;
  const end = performance.now() + durationMs;
  while (performance.now() < end && times.length < 10_000) {
    const t = performance.now();
    const reply = await new Promise<string>((resolve, reject) => {
      let got = "";
      const s = net.connect(port, "127.0.0.1", () => s.write("ping\n"));
      s.on("data", (d: Buffer) => (got += d.toString()));
      s.on("error", reject);
      s.on("close", () => resolve(got));
    });
    if (reply === "timed\n") times.push(performance.now() - t);
    else untimed++;
    await sleep(5);
  }
  times.sort((a, b) => a - b);
  const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
  return { latency: { p50: q(0.5), p99: q(0.99), max: times.at(-1)!, count: times.length }, untimed };
}

function stateChanges(out: string): Pick<Run, "stateChanges" | "reasons"> {
  const reasons = new Map<string, number>();
  const lines = out.split("\n").filter((l) => l.includes('"backend state changed"'));
  for (const line of lines) {
    const { to, reason } = JSON.parse(line) as { to: string; reason: string };
    reasons.set(`${to}: ${reason}`, (reasons.get(`${to}: ${reason}`) ?? 0) + 1);
  }
  return { stateChanges: lines.length, reasons };
}

/** Nanoseconds the process's main thread has spent runnable but waiting for a CPU. */
function runQueueNs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, "utf8").split(" ")[1]);
}

function report(label: string, r: Run): void {
  console.log(
    `${label.padEnd(28)} cpu ${r.cpuPercent.toFixed(1).padStart(5)}% of one core | probes ${r.probesPerSecond.toFixed(0).padStart(5)}/s | ` +
      `timed ${r.latency.count} requests: p50 ${r.latency.p50.toFixed(2)}ms p99 ${r.latency.p99.toFixed(2)}ms max ${r.latency.max.toFixed(2)}ms | ` +
      `waited for a CPU ${r.runQueueMs.toFixed(0)}ms/s | state changes ${r.stateChanges}` +
      (r.stateChanges > 0 ? ` (${[...r.reasons].map(([k, n]) => `${n}× ${k}`).join(", ")})` : ""),
  );
}

function cpuTicks(pid: number): number {
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

async function waitForStart(output: () => string): Promise<number> {
  const deadline = performance.now() + 15_000;
  while (performance.now() < deadline) {
    const line = output().split("\n").find((l) => l.includes('"gobalancer started"'));
    if (line) {
      const listen = String((JSON.parse(line) as { listen: string }).listen);
      return Number(listen.slice(listen.lastIndexOf(":") + 1));
    }
    await sleep(20);
  }
  throw new Error(`gobalancer did not start: ${output()}`);
}

function message<T>(child: ChildProcess, ask?: string): Promise<T> {
  return new Promise((resolve) => {
    child.once("message", (m) => resolve(m as T));
    if (ask) child.send(ask);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
