/**
 * `make soak`: connection churn (churn.ts) through a real gobalancer for SOAK (default
 * 5m; "10m", "90s"), printing descriptors, RSS, active connections, event-loop delay
 * and live timers every 10 s, and failing when any of them trends up or the end state
 * is not back to the start. SOAK_WORKERS (default 1), SOAK_CONCURRENCY (default 200),
 * SOAK_DATA_PATH (auto, handles or sockets; default auto).
 * Traffic stays on 127.0.0.1; the run ends by itself.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { parseDuration } from "../../src/config/duration.ts";
import { seededRandom } from "../../test/seeded-random.ts";
import { churn, churnBackend } from "./churn.ts";

const REPO = path.resolve(import.meta.dirname, "..", "..");
const SAMPLE_MS = 10_000;

interface Sample {
  at: number;
  fds: number;
  rss: number;
  active: number;
  eldP99: number;
  timers: number;
}

/** Samples after the warm-up whose second half rises past the first by more than `slack`. */
export function trendsUp(values: number[], relative: number, absolute: number): boolean {
  const settled = values.slice(Math.floor(values.length / 5));
  if (settled.length < 4) return false;
  const half = Math.floor(settled.length / 2);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const first = median(settled.slice(0, half));
  const second = median(settled.slice(half));
  return second > first * (1 + relative) + absolute;
}

async function main(): Promise<void> {
  const durationMs = parseDuration(process.env.SOAK ?? "5m");
  if (durationMs === undefined || durationMs <= 0) throw new Error(`SOAK: not a duration: ${process.env.SOAK}`);
  const workers = Number(process.env.SOAK_WORKERS ?? 1);
  const concurrency = Number(process.env.SOAK_CONCURRENCY ?? 200);
  const random = seededRandom(Number(process.env.SOAK_SEED ?? 1));
  const dir = mkdtempSync(path.join(tmpdir(), "gobalancer-soak-"));
  const backends = await Promise.all([churnBackend(random), churnBackend(random)]);
  const config = {
    listen: "127.0.0.1:0",
    workers,
    data_path: process.env.SOAK_DATA_PATH ?? "auto",
    timeouts: { connect: "1s", idle: "3s", shutdown: "2s" },
    health_check: { interval: "2s", timeout: "1s" },
    state_file: path.join(dir, "state.json"),
    api: { listen: "127.0.0.1:0" },
    discovery: { type: "static", backends: backends.map((b) => ({ address: `127.0.0.1:${(b.address() as { port: number }).port}` })) },
  };
  writeFileSync(path.join(dir, "config.yaml"), stringify(config));
  const probeFile = path.join(dir, "probe.jsonl");
  const lb = spawn(process.execPath, ["--import", path.join(REPO, "bench", "soak", "probe.ts"), path.join(REPO, "dist", "cli.js"), "--config", path.join(dir, "config.yaml")], {
    env: { ...process.env, GOBALANCER_PROBE_FILE: probeFile, PROBE_INTERVAL_MS: String(SAMPLE_MS / 2) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const started = await new Promise<{ listen: string; api: string; data_path: string }>((resolve, reject) => {
    let out = "";
    lb.stdout!.on("data", (d: Buffer) => {
      out += d;
      for (const line of out.split("\n")) if (line.includes('"gobalancer started"')) resolve(JSON.parse(line));
    });
    lb.once("exit", (code) => reject(new Error(`gobalancer exited with ${code}`)));
  });
  const port = Number(started.listen.split(":").pop());
  const api = `http://${started.api}`;
  const pid = lb.pid!;

  const probe = () => JSON.parse(readFileSync(probeFile, "utf8").trim().split("\n").at(-1)!) as { eld_p99_ms: number; timers: number; rss: number };
  const sample = async (): Promise<Sample> => {
    const list = (await (await fetch(`${api}/backends`)).json()) as Array<{ active_connections: number }>;
    const p = probe();
    return {
      at: performance.now(),
      fds: readdirSync(`/proc/${pid}/fd`).length,
      rss: p.rss,
      active: list.reduce((sum, b) => sum + b.active_connections, 0),
      eldP99: p.eld_p99_ms,
      timers: p.timers,
    };
  };
  await new Promise((r) => setTimeout(r, SAMPLE_MS / 2 + 500));
  const start = await sample();
  const samples: Sample[] = [];
  const t0 = performance.now();
  console.log(`soak: ${Math.round(durationMs / 1000)} s, workers ${workers}, data path ${started.data_path}, ${concurrency} concurrent clients, gobalancer pid ${pid}`);
  console.log("   t(s)   fds   rss(MiB)   active   eld p99(ms)   timers");
  const print = (s: Sample) =>
    console.log(
      `${String(Math.round((s.at - t0) / 1000)).padStart(7)} ${String(s.fds).padStart(5)} ${(s.rss / 2 ** 20).toFixed(1).padStart(10)} ${String(s.active).padStart(8)} ${s.eldP99.toFixed(1).padStart(13)} ${String(s.timers).padStart(8)}`,
    );
  print(start);
  const ticker = setInterval(async () => {
    const s = await sample();
    samples.push(s);
    print(s);
  }, SAMPLE_MS);
  const result = await churn({ port, durationMs, concurrency, random });
  clearInterval(ticker);
  await new Promise((r) => setTimeout(r, 6000)); // idle connections reaped, a fresh probe line
  const end = await sample();
  print(end);
  lb.kill("SIGTERM");
  await new Promise((r) => lb.once("exit", r));
  backends.forEach((b) => b.close());
  rmSync(dir, { recursive: true, force: true });

  const problems: string[] = [];
  const series = (k: keyof Sample) => samples.map((s) => s[k]);
  if (trendsUp(series("fds"), 0.05, 20)) problems.push("descriptors trend up");
  if (trendsUp(series("rss"), 0.1, 16 * 2 ** 20)) problems.push("RSS trends up");
  if (trendsUp(series("active"), 0.1, 20)) problems.push("active connections trend up");
  if (trendsUp(series("eldP99"), 0.5, 5)) problems.push("event-loop delay trends up");
  if (trendsUp(series("timers"), 0.1, 5)) problems.push("timers trend up");
  if (end.fds > start.fds) problems.push(`descriptors ${end.fds} at the end, ${start.fds} at the start`);
  if (end.active !== 0) problems.push(`${end.active} connections still active at the end`);
  if (end.timers > start.timers) problems.push(`timers ${end.timers} at the end, ${start.timers} at the start`);
  if (result.corrupted > 0) problems.push(`${result.corrupted} normal connections got wrong bytes back`);
  console.log(`soak: ${result.started} connections ${JSON.stringify(result.byBehaviour)}, cut by the client ${result.cut}`);
  if (problems.length > 0) {
    console.error(`soak FAILED: ${problems.join("; ")}`);
    process.exit(1);
  }
  console.log("soak passed: flat");
}

if (import.meta.main) await main();
