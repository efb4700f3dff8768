/**
 * The four loads of the peer benchmark, each bounded in time: iperf3 bulk throughput, wrk
 * keep-alive and wrk with "Connection: close" (every request a new TCP connection through
 * the path), and idle connections held through a balancer while its memory is read.
 */
import http from "node:http";
import path from "node:path";
import readline from "node:readline";
import { sleep, treeRssKiB, waitUntil, type Started, type Supervisor } from "./processes.ts";
import { NOFILE, type RunningPath } from "./paths.ts";

export interface WrkResult {
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  requests: number;
  /** Connect, read, write and timeout errors, plus non-2xx/3xx responses. */
  errors: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function toMs(value: string, unit: string): number {
  return Number(value) * UNIT_MS[unit]!;
}

/** Parses `wrk --latency` output; undefined when it holds no request rate. */
export function parseWrk(output: string): WrkResult | undefined {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(output);
  const requests = /^\s*(\d+) requests in /m.exec(output);
  if (!rps || !requests) return undefined;
  const percentile = (p: number): number => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m|h)\\s*$`, "m").exec(output);
    return m ? toMs(m[1]!, m[2]!) : NaN;
  };
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output);
  const errors = (socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return { rps: Number(rps[1]), p50Ms: percentile(50), p90Ms: percentile(90), p99Ms: percentile(99), requests: Number(requests[1]), errors };
}

/** Received bits per second from `iperf3 -J` output, in Gbit/s. */
export function parseIperf(output: string): number | undefined {
  try {
    const report = JSON.parse(output) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
    const bps = report.end?.sum_received?.bits_per_second;
    return report.error === undefined && typeof bps === "number" && bps > 0 ? bps / 1e9 : undefined;
  } catch {
    return undefined;
  }
}

export interface LoadOptions {
  durationS: number;
  connections: number;
  threads: number;
}

export async function runWrk(sup: Supervisor, wrk: string, port: number, o: LoadOptions, close: boolean): Promise<{ result?: WrkResult; detail: string }> {
  const args = ["-t", String(o.threads), "-c", String(o.connections), "-d", `${o.durationS}s`, "--timeout", "2s", "--latency"];
  if (close) args.push("-H", "Connection: close");
  args.push(`http://127.0.0.1:${port}/`);
  const run = await sup.run(close ? "wrk-close" : "wrk-keepalive", wrk, args, (o.durationS + 15) * 1000);
  const result = run.timedOut ? undefined : parseWrk(run.stdout);
  return { result, detail: result ? "" : `wrk failed (exit ${run.code ?? run.signal}${run.timedOut ? ", timed out" : ""})` };
}

/**
 * One iperf3 run. iperf3's server takes one test at a time, and a TCP health probe from a
 * balancer can briefly look like a client to it, so a refused or failed start is retried.
 */
export async function runIperf(sup: Supervisor, iperf3: string, port: number, durationS: number): Promise<{ gbps?: number; detail: string }> {
  let detail = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt > 0) await sleep(1000);
    const args = ["-c", "127.0.0.1", "-p", String(port), "-t", String(durationS), "-J", "--connect-timeout", "3000"];
    const run = await sup.run("iperf3-client", iperf3, args, (durationS + 15) * 1000);
    const gbps = run.timedOut ? undefined : parseIperf(run.stdout);
    if (gbps !== undefined) return { gbps, detail: "" };
    const error = /"error":\s*"([^"]*)"/.exec(run.stdout)?.[1];
    detail = `iperf3 failed: ${error ?? `exit ${run.code ?? run.signal}`}${run.timedOut ? " (timed out)" : ""}`;
  }
  return { detail };
}

/** Connections the nginx backends hold right now (their own status request excluded). */
export async function backendConnections(ports: readonly number[]): Promise<number> {
  let total = 0;
  for (const port of ports) {
    const body = await new Promise<string>((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port, path: "/nginx-status", agent: false, timeout: 2000 }, (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (c: string) => (text += c));
        res.on("end", () => resolve(text));
      });
      req.on("timeout", () => req.destroy(new Error("status request timed out")));
      req.on("error", reject);
    });
    const m = /Active connections:\s*(\d+)/.exec(body);
    if (!m) throw new Error(`no connection count from backend ${port}`);
    total += Number(m[1]) - 1;
  }
  return total;
}

export interface IdleResult {
  kibPerConnection?: number;
  held: number;
  beforeKiB: number;
  afterKiB: number;
  detail: string;
}

/**
 * Starts a fresh instance of the balancer, opens `count` connections through it, waits
 * until the backends hold them too (so the balancer has both sides of every connection),
 * reads its resident memory before and after, then stops it and waits until the backends
 * are idle again.
 */
export async function measureIdle(sup: Supervisor, running: RunningPath, backendPorts: readonly number[], count: number): Promise<IdleResult> {
  if (!running.startFresh) throw new Error(`${running.info.id} has no balancer to measure`);
  const baseline = await backendConnections(backendPorts);
  const fresh = await running.startFresh(`${running.info.id}-idle`);
  let client: Started | undefined;
  try {
    // Start-up allocations settle first.
    await sleep(1000);
    const beforeKiB = treeRssKiB(fresh.process.pid);
    const script = path.join(import.meta.dirname, "idle-client.ts");
    client = sup.start("idle-client", process.execPath, [script, String(fresh.port), String(count), "200", "60000", "120000"], {
      nofile: NOFILE,
      pipe: true,
    });
    const lines = readline.createInterface({ input: client.child.stdout! });
    const reports: Array<Record<string, number>> = [];
    lines.on("line", (line) => reports.push(JSON.parse(line) as Record<string, number>));
    const c = client;
    await waitUntil(() => reports.length > 0 || c.exit !== undefined, 70_000, "the idle client to open its connections");
    const opened = reports[0];
    if (!opened) return { held: 0, beforeKiB, afterKiB: beforeKiB, detail: "idle client exited before opening its connections" };
    const held = opened.held ?? 0;
    // Both sides of every held connection established: the backends see (almost) all of them.
    let seen = 0;
    try {
      await waitUntil(
        async () => (seen = (await backendConnections(backendPorts)) - baseline) >= held * 0.99,
        20_000,
        "the backends to hold the idle connections",
      );
    } catch {
      // Measured anyway; the detail says how many reached the backends.
    }
    await sleep(1000);
    const afterKiB = treeRssKiB(fresh.process.pid);
    const detail = `${held} held (${opened.failed ?? 0} failed, ${seen} at backends) in ${opened.ms} ms, RSS ${beforeKiB} → ${afterKiB} KiB`;
    return { kibPerConnection: held > 0 ? (afterKiB - beforeKiB) / held : undefined, held, beforeKiB, afterKiB, detail };
  } finally {
    if (client) {
      client.child.stdin!.end();
      await Promise.race([client.exited, sleep(10_000)]);
      await sup.stop(client, 1000);
    }
    await sup.stop(fresh.process, 3000);
    // The next path starts from idle backends.
    await waitUntil(async () => (await backendConnections(backendPorts)) <= baseline + 10, 30_000, "the idle connections to close").catch(() => {});
  }
}
