/**
 * `make bench-peers`: GoBalancer side by side with HAProxy and nginx stream on this machine.
 * See the "Peer benchmark" section of docs/benchmarks.md (which this script rewrites) for
 * what it measures. Options come from the environment: ROUNDS, DURATION, CONNECTIONS,
 * IDLE, PATHS, QUICK=1, DOCS=0, KEEP=1 (keep the temp dir with configs and logs).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { measureIdle, runIperf, runWrk, type LoadOptions } from "./load.ts";
import { ensureTools, machineFacts } from "./machine.ts";
import { MAX_IDLE, NOFILE, PATHS, REPO, startBackends, startPath, type RunningPath } from "./paths.ts";
import { Supervisor, treeCpu } from "./processes.ts";
import { PEER_HEADING, peerSection, record, replaceSection, resultTable, latencyTable, cpuTable, type Samples } from "./report.ts";

interface Options {
  rounds: number;
  durationS: number;
  connections: number;
  idle: number;
  /** Whether the descriptor limit forced fewer idle connections than the default. */
  idleCapped: boolean;
  paths: string[];
  writeDocs: boolean;
  keep: boolean;
  command: string;
}

const OPTION_VARS = ["ROUNDS", "DURATION", "CONNECTIONS", "IDLE", "PATHS", "BASELINE", "QUICK", "DOCS"] as const;

function intOption(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`${name} must be an integer ${min}-${max} (got ${JSON.stringify(raw)})`);
  return value;
}

function options(): Options {
  const quick = process.env.QUICK === "1";
  const paths = (process.env.PATHS ?? "").split(",").filter((p) => p !== "");
  for (const p of paths) {
    if (!PATHS.some((known) => known.id === p)) throw new Error(`PATHS: unknown path "${p}" (known: ${PATHS.map((k) => k.id).join(", ")})`);
  }
  const idleDefault = quick ? 1000 : 10_000;
  const command = [...OPTION_VARS.filter((v) => process.env[v]).map((v) => `${v}=${process.env[v]}`), "make bench-peers"].join(" ");
  return {
    rounds: intOption("ROUNDS", quick ? 1 : 5, 1, 50),
    durationS: intOption("DURATION", quick ? 1 : 4, 1, 60),
    connections: intOption("CONNECTIONS", 50, 1, 1000),
    idle: intOption("IDLE", Math.min(idleDefault, MAX_IDLE), 1, MAX_IDLE),
    idleCapped: !process.env.IDLE && idleDefault > MAX_IDLE,
    paths: paths.length > 0 ? paths : PATHS.filter((p) => !p.optional).map((p) => p.id),
    writeDocs: process.env.DOCS !== undefined ? process.env.DOCS !== "0" : !quick,
    keep: process.env.KEEP === "1",
    command,
  };
}

function rotate<T>(list: readonly T[], by: number): T[] {
  const n = by % list.length;
  return [...list.slice(n), ...list.slice(0, n)];
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function main(): Promise<number> {
  const opts = options();
  const began = Date.now();
  const tools = ensureTools(say);
  const facts = machineFacts(tools);
  const cores = facts.cores;
  const paths = PATHS.filter((p) => opts.paths.includes(p.id));
  say(`bench-peers: ${opts.rounds} round(s) of ${opts.durationS} s runs over ${paths.map((p) => p.id).join(", ")}; ${opts.idle} idle connections`);
  say(`machine: ${cores} cores, ${facts.cpu}, ${facts.kernel}; load average ${facts.loadAverage.map((l) => l.toFixed(2)).join(" ")}`);

  const dir = mkdtempSync(path.join(os.tmpdir(), "gobalancer-peers-"));
  const sup = new Supervisor(dir);
  sup.startReaper();
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) {
      sup.killAllSync();
      process.exit(130);
    }
    interrupted = true;
    say(`\n${signal}: stopping everything the benchmark started`);
    void sup.stopAll(2000).finally(() => {
      sup.stopReaper();
      if (!opts.keep) rmSync(dir, { recursive: true, force: true });
      process.exit(signal === "SIGINT" ? 130 : 143);
    });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal);
  process.on("exit", () => sup.killAllSync());

  let failed = true;
  try {
    const backends = await startBackends(sup, tools);
    const running: RunningPath[] = [];
    for (const info of paths) running.push(await startPath(sup, info, backends, tools, cores));
    say(`started: backends ${backends.http.join(", ")}, iperf3 ${backends.iperf}; ${running.map((r) => `${r.info.id} ${r.httpPort}/${r.bulkPort}`).join(", ")}`);

    const load: LoadOptions = { durationS: opts.durationS, connections: opts.connections, threads: cores };
    // Warm-up: JIT, connection pools and page cache settle before anything is recorded.
    for (const r of running) await runWrk(sup, tools.wrk, r.httpPort, { ...load, durationS: 1 }, false);

    const samples: Samples = {};
    const notes: string[] = [];
    if (opts.idleCapped) {
      notes.push(
        `${opts.idle} idle connections rather than 10,000: the descriptor limit here is ${NOFILE} and cannot be raised (no CAP_SYS_RESOURCE), and each proxied connection takes two in the balancer`,
      );
    }
    const note = (line: string) => {
      notes.push(line);
      say(`  ! ${line}`);
    };
    for (let round = 0; round < opts.rounds; round++) {
      const order = rotate(running, round);
      const tag = `round ${round + 1}`;
      say(`${tag}/${opts.rounds}: ${order.map((r) => r.info.id).join(" → ")}`);
      for (const r of order) {
        const { gbps, detail } = await runIperf(sup, tools.iperf3, r.bulkPort, opts.durationS);
        record(samples, r.info.id, "bulkGbps", gbps);
        if (gbps === undefined) note(`${tag} ${r.info.id} bulk: ${detail}`);
        else say(`  bulk       ${r.info.id.padEnd(16)} ${gbps.toFixed(2)} Gbit/s`);
      }
      for (const close of [false, true]) {
        const mode = close ? "close" : "keepAlive";
        for (const r of order) {
          const root = r.httpProcess?.pid;
          const cpuBefore = root === undefined ? undefined : treeCpu(root);
          const { result, detail } = await runWrk(sup, tools.wrk, r.httpPort, load, close);
          const cpuAfter = root === undefined ? undefined : treeCpu(root);
          if (!result) {
            note(`${tag} ${r.info.id} ${close ? "new-conn" : "keep-alive"}: ${detail}`);
            continue;
          }
          record(samples, r.info.id, close ? "closeRps" : "keepAliveRps", result.rps);
          record(samples, r.info.id, `${mode}P50Ms`, result.p50Ms);
          record(samples, r.info.id, `${mode}P90Ms`, result.p90Ms);
          record(samples, r.info.id, `${mode}P99Ms`, result.p99Ms);
          if (cpuBefore && cpuAfter && result.requests > 0) {
            const user = ((cpuAfter.userMs - cpuBefore.userMs) * 1000) / result.requests;
            const system = ((cpuAfter.systemMs - cpuBefore.systemMs) * 1000) / result.requests;
            record(samples, r.info.id, `${mode}CpuUs`, user + system);
            record(samples, r.info.id, `${mode}UserUs`, user);
            record(samples, r.info.id, `${mode}SystemUs`, system);
          }
          const errors = result.errors > 0 ? `, ${result.errors} errors` : "";
          say(`  ${(close ? "new-conn" : "keep-alive").padEnd(10)} ${r.info.id.padEnd(16)} ${Math.round(result.rps)} req/s, p99 ${result.p99Ms.toFixed(2)} ms${errors}`);
          if (result.errors > result.requests * 0.001) note(`${tag} ${r.info.id} ${close ? "new-conn" : "keep-alive"}: ${result.errors} errors in ${result.requests} requests`);
        }
      }
      for (const r of order) {
        if (!r.startFresh) continue;
        const idle = await measureIdle(sup, r, backends.http, opts.idle);
        record(samples, r.info.id, "idleKiB", idle.kibPerConnection);
        say(`  idle       ${r.info.id.padEnd(16)} ${idle.kibPerConnection?.toFixed(1) ?? "—"} KiB/conn (${idle.detail})`);
        if (idle.held < opts.idle) note(`${tag} ${r.info.id} idle: ${idle.detail}`);
      }
      // Each path's processes must have survived the round.
      for (const r of running) if (r.httpProcess?.exit) throw new Error(`${r.httpProcess.name} exited during the run; see ${r.httpProcess.logPath}`);
    }

    const minutes = (Date.now() - began) / 60_000;
    say("");
    say(resultTable(samples, paths));
    say("");
    say(latencyTable(samples, paths));
    say("");
    say(cpuTable(samples, paths));
    say(`\n${opts.rounds} round(s) in ${minutes.toFixed(1)} min`);
    if (opts.writeDocs) {
      const file = path.join(REPO, "docs", "benchmarks.md");
      const section = peerSection(
        {
          date: facts.date,
          command: opts.command,
          commit: facts.commit,
          machine: `${facts.cores} cores (nproc), ${facts.cpu}, ${facts.memoryGiB} GiB, ${facts.kernel}`,
          versions: facts.versions,
          loadAverage: facts.loadAverage,
          rounds: opts.rounds,
          durationS: opts.durationS,
          connections: opts.connections,
          idle: opts.idle,
          nofile: NOFILE,
          pathIds: PATHS.map((p) => p.id),
          minutes,
          notes,
        },
        samples,
        paths,
      );
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, replaceSection(existsSync(file) ? readFileSync(file, "utf8") : "", PEER_HEADING, section));
      say(`wrote ${path.relative(process.cwd(), file)}`);
    }
    failed = false;
    return 0;
  } finally {
    await sup.stopAll();
    sup.stopReaper();
    if (opts.keep || failed) say(`configs and logs kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench-peers: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
