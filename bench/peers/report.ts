/**
 * Turns per-round samples into the peer-benchmark table: medians per path and metric,
 * and GoBalancer's ratio to the best peer. Pure functions, so the numbers that end up in
 * docs/benchmarks.md can be unit-tested without running any load.
 */

export type Role = "ceiling" | "gobalancer" | "peer";

export interface PathInfo {
  id: string;
  label: string;
  role: Role;
  /** Measured only when named in PATHS. */
  optional?: boolean;
}

export const METRICS = [
  { key: "bulkGbps", title: "bulk Gbit/s", better: "higher", digits: 2, target: 1.0 },
  { key: "keepAliveRps", title: "keep-alive req/s", better: "higher", digits: 0, target: 0.9 },
  { key: "keepAliveP99Ms", title: "keep-alive p99 ms", better: "lower", digits: 2, target: 1.2 },
  { key: "closeRps", title: "new-conn req/s", better: "higher", digits: 0, target: 0.75 },
  { key: "closeP99Ms", title: "new-conn p99 ms", better: "lower", digits: 2, target: 1.2 },
  { key: "idleKiB", title: "KiB per idle conn", better: "lower", digits: 1, target: 2.0 },
] as const;

export type Metric = (typeof METRICS)[number]["key"];

/**
 * samples[pathId][key] = one value per round (absent when a run failed). Keys are the
 * table's metrics plus LATENCY_KEYS.
 */
export type Samples = Record<string, Record<string, number[] | undefined>>;

export const LATENCY_KEYS = ["keepAliveP50Ms", "keepAliveP90Ms", "keepAliveP99Ms", "closeP50Ms", "closeP90Ms", "closeP99Ms"] as const;

export function record(samples: Samples, path: string, key: string, value: number | undefined): void {
  if (value === undefined || !Number.isFinite(value)) return;
  const byKey = (samples[path] ??= {});
  (byKey[key] ??= []).push(value);
}

export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function medianOf(samples: Samples, path: string, key: string): number | undefined {
  return median(samples[path]?.[key] ?? []);
}

/** The best peer's median for a metric: highest throughput, or lowest latency and memory. */
export function bestPeer(samples: Samples, paths: readonly PathInfo[], metric: Metric): { path: PathInfo; value: number } | undefined {
  const lowerIsBetter = METRICS.find((m) => m.key === metric)!.better === "lower";
  let best: { path: PathInfo; value: number } | undefined;
  for (const path of paths) {
    if (path.role !== "peer") continue;
    const value = medianOf(samples, path.id, metric);
    if (value === undefined || !(value > 0)) continue;
    if (!best || (lowerIsBetter ? value < best.value : value > best.value)) best = { path, value };
  }
  return best;
}

/** GoBalancer's median divided by the best peer's (for every metric, lower-is-better too). */
export function ratioToBestPeer(samples: Samples, paths: readonly PathInfo[], path: string, metric: Metric): number | undefined {
  const mine = medianOf(samples, path, metric);
  const best = bestPeer(samples, paths, metric);
  if (mine === undefined || best === undefined) return undefined;
  return mine / best.value;
}

export function formatValue(value: number | undefined, digits: number): string {
  if (value === undefined || !Number.isFinite(value)) return "—";
  if (digits === 0) return Math.round(value).toString();
  return value.toFixed(digits);
}

export function formatRatio(ratio: number | undefined): string {
  return ratio === undefined || !Number.isFinite(ratio) ? "—" : `${ratio.toFixed(2)}×`;
}

/** The one table: a row per path with medians, a ratio row per GoBalancer path, the targets. */
export function resultTable(samples: Samples, paths: readonly PathInfo[]): string {
  const header = ["path", ...METRICS.map((m) => m.title)];
  const rows: string[][] = paths.map((p) => [p.label, ...METRICS.map((m) => formatValue(medianOf(samples, p.id, m.key), m.digits))]);
  for (const p of paths) {
    if (p.role !== "gobalancer") continue;
    rows.push([`${p.label} ÷ best peer`, ...METRICS.map((m) => formatRatio(ratioToBestPeer(samples, paths, p.id, m.key)))]);
  }
  rows.push(["target ratio", ...METRICS.map((m) => `${m.better === "higher" ? "≥" : "≤"} ${m.target.toFixed(2)}`)]);
  return markdownTable(header, rows);
}

/** Every round's value, so the spread behind each median is visible. */
export function samplesTable(samples: Samples, paths: readonly PathInfo[]): string {
  const header = ["path", ...METRICS.map((m) => m.title)];
  const rows = paths.map((p) => [
    p.label,
    ...METRICS.map((m) => {
      const values = samples[p.id]?.[m.key] ?? [];
      return values.length === 0 ? "—" : values.map((v) => formatValue(v, m.digits)).join(", ");
    }),
  ]);
  return markdownTable(header, rows);
}

/** Median p50 / p90 / p99 per path for both wrk modes. */
export function latencyTable(samples: Samples, paths: readonly PathInfo[]): string {
  const triple = (id: string, mode: "keepAlive" | "close") =>
    (["P50", "P90", "P99"] as const).map((p) => formatValue(medianOf(samples, id, `${mode}${p}Ms`), 2)).join(" / ");
  return markdownTable(
    ["path", "keep-alive p50 / p90 / p99 ms", "new-conn p50 / p90 / p99 ms"],
    paths.map((p) => [p.label, triple(p.id, "keepAlive"), triple(p.id, "close")]),
  );
}

/**
 * Median CPU time the balancer's processes used per request, in both wrk modes, with
 * its user and system parts (medians of their own, so they need not add up exactly).
 */
export function cpuTable(samples: Samples, paths: readonly PathInfo[]): string {
  const withCpu = paths.filter((p) => p.role !== "ceiling");
  const cell = (id: string, key: string) => formatValue(medianOf(samples, id, key), 0);
  const split = (id: string, mode: string) =>
    medianOf(samples, id, `${mode}UserUs`) === undefined ? "—" : `${cell(id, `${mode}UserUs`)} / ${cell(id, `${mode}SystemUs`)}`;
  return markdownTable(
    ["path", "keep-alive CPU µs per request", "user / system", "new-conn CPU µs per request", "user / system"],
    withCpu.map((p) => [p.label, cell(p.id, "keepAliveCpuUs"), split(p.id, "keepAlive"), cell(p.id, "closeCpuUs"), split(p.id, "close")]),
  );
}

export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/**
 * Replaces the section that starts with `heading` (up to the next heading of the same or
 * a higher level) in `doc`, or appends it, so other sections of the file stay untouched.
 */
export function replaceSection(doc: string, heading: string, section: string): string {
  const level = /^#+/.exec(heading)![0].length;
  const lines = doc.split("\n");
  const start = lines.findIndex((l) => l.trim() === heading);
  const body = section.trimEnd().split("\n");
  if (start === -1) {
    const kept = doc.trimEnd();
    return `${kept === "" ? "# Benchmarks" : kept}\n\n${body.join("\n")}\n`;
  }
  let end = lines.length;
  let fenced = false;
  for (let i = start + 1; i < lines.length; i++) {
    // A "# comment" inside a fenced shell block is not a heading.
    if (/^\s*(```|~~~)/.test(lines[i]!)) fenced = !fenced;
    const m = fenced ? null : /^(#+)\s/.exec(lines[i]!);
    if (m && m[1]!.length <= level) {
      end = i;
      break;
    }
  }
  const after = lines.slice(end);
  return [...lines.slice(0, start), ...body, ...(after.length > 0 ? ["", ...after] : [])].join("\n").trimEnd() + "\n";
}

export interface RunInfo {
  date: string;
  command: string;
  commit: string;
  machine: string;
  versions: Record<string, string>;
  loadAverage: readonly number[];
  rounds: number;
  durationS: number;
  connections: number;
  idle: number;
  /** Descriptor limit every started process got. */
  nofile: number;
  /** Every path the benchmark knows, for the PATHS option. */
  pathIds: readonly string[];
  minutes: number;
  notes: readonly string[];
}

export const PEER_HEADING = "## Peer benchmark";

/** The whole "Peer benchmark" section of docs/benchmarks.md: how it measures, then the last run. */
export function peerSection(run: RunInfo, samples: Samples, paths: readonly PathInfo[]): string {
  const busy = run.loadAverage[0]! > 0.5;
  const versions = Object.entries(run.versions)
    .map(([name, version]) => `${name} ${version}`)
    .join(", ");
  return `${PEER_HEADING}

\`make bench-peers\` measures GoBalancer side by side with the layer-4 balancers users would
otherwise pick, HAProxy and nginx's stream module, on the same machine in the same run. It
installs what it needs from Debian when missing (haproxy, nginx, libnginx-mod-stream,
iperf3, wrk), then starts on 127.0.0.1, each on its own port:

- backends: two nginx HTTP servers (one worker each, a 3-byte "ok" body) and an iperf3 server;
- GoBalancer (dist/cli.js, default settings apart from static backends) with \`workers: auto\`
  and with \`workers: 1\`; HAProxy (\`mode tcp\`, \`nbthread\` = cores, \`option splice-auto\`);
  nginx stream (\`worker_processes\` = cores); and the direct path to one backend as the ceiling.
  Each balancer runs one instance in front of both HTTP backends (round robin) and one in
  front of the iperf3 server, and every process gets a descriptor limit of ${run.nofile}.
The exact configurations are in bench/peers/paths.ts.

Then it runs interleaved rounds, the order of the paths rotated each round, of: iperf3 bulk
throughput (one stream, \`-t DURATION\`); wrk keep-alive and wrk \`-H "Connection: close"\`
(every request a new TCP connection through the balancer), both with CONNECTIONS
connections, threads = cores and \`--latency\`; and IDLE idle connections opened through a
fresh instance of each balancer (a process that has held connections before keeps the freed
memory in its allocator, which would hide the cost) and held, with the balancer's resident
memory (VmRSS summed over its process tree) read before and after. The table gives medians over the rounds; the ratio rows divide
GoBalancer's median by the best peer's (highest throughput, lowest latency and memory), so
above 1 is better for throughput and below 1 is better for latency and memory.

Options: \`ROUNDS\` (default 5), \`DURATION\` seconds per run (4), \`CONNECTIONS\` (50),
\`IDLE\` (10000), \`PATHS\` (a comma-separated subset of ${run.pathIds.join(", ")}),
\`QUICK=1\` (one round of 1 s runs and 1,000 idle connections, this file left alone) and
\`DOCS=0\` (print only). Everything it starts is stopped when it ends or is interrupted.
It is not part of \`make test\`.

### Latest run

- date: ${run.date}; command: \`${run.command}\`; GoBalancer source at ${run.commit}; took ${run.minutes.toFixed(1)} min
- machine: ${run.machine}
- versions: ${versions}
- load average at start: ${run.loadAverage.map((l) => l.toFixed(2)).join(", ")}${
    busy ? " — the machine was busy with other work, so treat the figures as indicative; ratios within one run are fairer than absolute values" : ""
  }
- ${run.rounds} round${run.rounds === 1 ? "" : "s"}, ${run.durationS} s per load run, ${run.connections} wrk connections, ${run.idle} idle connections

${resultTable(samples, paths)}

Latency percentiles (medians over the rounds):

${latencyTable(samples, paths)}

CPU time of each balancer's processes (user + system, all threads, from /proc) per request
during the wrk runs, medians over the rounds. System time includes the loopback delivery
the kernel does inside the balancer's own system calls:

${cpuTable(samples, paths)}

Every round's value:

${samplesTable(samples, paths)}
${run.notes.length > 0 ? `\nNotes from the run:\n\n${run.notes.map((n) => `- ${n}`).join("\n")}\n` : ""}`;
}
