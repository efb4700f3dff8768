// What active health checks cost: gobalancer with N backends (cheap listeners on 127.0.0.1
// in one helper process) probed every second, against the same set-up whose probes are an
// hour apart, measured side by side. Reports the balancer's CPU (utime+stime from
// /proc/PID/stat) and the latency of requests proxied meanwhile (stalls would show in the
// tail).
//
//   make build && node bench/health-probes.ts [--type tcp|http] [--backends 1000] [--seconds 15]
import { fork, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
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
    seconds: { type: "string", default: "15" },
    interval: { type: "string", default: "1s" },
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
  stateChanges: number;
}

async function main(): Promise<void> {
  const n = Number(values.backends);
  const seconds = Number(values.seconds);
  const helper = fork(import.meta.filename, ["--helper", "--backends", String(n)], { stdio: "inherit" });
  const { ports } = await message<{ ports: number[] }>(helper);
  try {
    console.log(`${n} backends, health_check.type ${values.type}, ${seconds}s per run, proxied requests every 5ms`);
    const idle = await measure(helper, ports, "1h", seconds);
    report(`probes every 1h (baseline)`, idle);
    const busy = await measure(helper, ports, values.interval!, seconds);
    report(`probes every ${values.interval}`, busy);
    console.log(`probing costs ${(busy.cpuPercent - idle.cpuPercent).toFixed(1)}% of one core; p99 latency ${busy.latency.p99.toFixed(2)}ms vs ${idle.latency.p99.toFixed(2)}ms`);
  } finally {
    helper.disconnect();
  }
}

async function measure(helper: ChildProcess, ports: number[], interval: string, seconds: number): Promise<Run> {
  const dir = mkdtempSync(path.join(tmpdir(), "gobalancer-bench-"));
  const config = path.join(dir, "config.yaml");
  writeFileSync(
    config,
    stringify({
      listen: "127.0.0.1:0",
      api: { listen: "127.0.0.1:0" },
      state_file: path.join(dir, "state.json"),
      health_check: { type: values.type, interval, timeout: "1s" },
      discovery: { type: "static", backends: ports.map((port) => ({ address: `127.0.0.1:${port}` })) },
    }),
  );
  const lb = spawn(process.execPath, [CLI, "--config", config], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  lb.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  try {
    const port = await waitForStart(() => out);
    await sleep(3000); // past start-up and the first round of probes
    const before = { cpu: cpuTicks(lb.pid!), at: performance.now(), helper: await message<{ connections: number }>(helper, "stats") };
    const latency = await proxyLatency(port, seconds * 1000);
    const after = { cpu: cpuTicks(lb.pid!), at: performance.now(), helper: await message<{ connections: number }>(helper, "stats") };
    const elapsed = (after.at - before.at) / 1000;
    const proxied = latency.count;
    return {
      cpuPercent: ((after.cpu - before.cpu) / TICKS_PER_SECOND / elapsed) * 100,
      probesPerSecond: (after.helper.connections - before.helper.connections - proxied) / elapsed,
      latency,
      stateChanges: out.split("\n").filter((l) => l.includes('"backend state changed"')).length,
    };
  } finally {
    lb.kill("SIGTERM");
    await new Promise((r) => lb.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Sequential proxied requests, one every 5 ms, each timed from connect to close. */
async function proxyLatency(port: number, durationMs: number): Promise<Run["latency"]> {
  const times: number[] = [];
  const end = performance.now() + durationMs;
  while (performance.now() < end && times.length < 10_000) {
    const t = performance.now();
    await new Promise<void>((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1", () => s.write("ping\n"));
      s.on("data", () => {});
      s.on("error", reject);
      s.on("close", () => resolve());
    });
    times.push(performance.now() - t);
    await sleep(5);
  }
  times.sort((a, b) => a - b);
  const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
  return { p50: q(0.5), p99: q(0.99), max: times.at(-1)!, count: times.length };
}

function report(label: string, r: Run): void {
  console.log(
    `${label.padEnd(26)} cpu ${r.cpuPercent.toFixed(1).padStart(5)}% of one core | probes ${r.probesPerSecond.toFixed(0).padStart(5)}/s | ` +
      `proxied ${r.latency.count} requests: p50 ${r.latency.p50.toFixed(2)}ms p99 ${r.latency.p99.toFixed(2)}ms max ${r.latency.max.toFixed(2)}ms | state changes ${r.stateChanges}`,
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
