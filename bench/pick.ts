/**
 * Pick micro-benchmark: every algorithm at N = 10 … 10,000,000 backends.
 *
 *   make bench            (node --expose-gc --max-old-space-size=20000 bench/pick.ts)
 *   node … bench/pick.ts --max 100000     only up to 100,000 backends
 *
 * Per algorithm and N it prints: ns per pick (median of 5 runs), the seed's published
 * figure and the speed-up; the time one change takes to apply (add, remove, weight change,
 * health flip) — for ip_hash the event-loop block and, after the slash, the time until the
 * rebuilt table is in service; and the pickers' memory per backend.
 * Times are this process's CPU time (the machine is shared; wall time would count other
 * processes' work), so "block" means CPU time spent in one go on the event loop.
 * least_connections is timed per connection: pick + count the open + close an older one
 * (1,000 held), since its tree moves on every open and close.
 */
import { createPicker, type Picker, type PickerContext } from "../src/balance/picker.ts";
import { IpHashPicker } from "../src/balance/ip-hash.ts";
import type { Algorithm } from "../src/config/schema.ts";
import type { BackendView } from "../src/pool/pool.ts";

const SIZES = [10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];
const ALGORITHMS: Algorithm[] = ["round_robin", "least_connections", "weighted", "ip_hash"];
/** The seed's "Measured latency (ns/op)" table, by N: RR, LC, weighted, IP hash (HRW). */
const SEED: Record<number, [number, number, number, number]> = {
  10: [60, 140, 150, 640],
  100: [255, 630, 1024, 4700],
  1_000: [3180, 11000, 9300, 45000],
  10_000: [67200, 156000, 135000, 500000],
  100_000: [870000, 2000000, 2280000, 5500000],
  1_000_000: [10000000, 23000000, 21000000, 61000000],
  10_000_000: [190000000, 320000000, 210000000, 940000000],
};
const RUNS = 5;
const HELD = 1000;

const args = process.argv.slice(2);
const max = args.includes("--max") ? Number(args[args.indexOf("--max") + 1]) : Infinity;
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

function view(i: number, weight: number): BackendView {
  const host = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
  const port = 1000 + (i >>> 24);
  return { key: `${host}:${port}`, host, port, weight, slot: i };
}

function backends(n: number, weight: (i: number) => number): BackendView[] {
  const out = new Array<BackendView>(n);
  for (let i = 0; i < n; i++) out[i] = view(i, weight(i));
  return out;
}

const clientIps = Array.from({ length: 4096 }, (_, i) => {
  const x = Math.imul(i + 1, 0x9e3779b1) >>> 0;
  return i % 8 === 7 ? `2001:db8::${(x >>> 16).toString(16)}:${(x & 0xffff).toString(16)}` : `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;
});

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Context whose background slices are recorded and run by the benchmark itself. */
function benchContext(active: Int32Array): PickerContext & { tasks: Array<() => void> } {
  const tasks: Array<() => void> = [];
  return { active, tasks, schedule: (t) => tasks.push(t) };
}

/** Runs queued build slices; returns the longest one in ms. */
function drain(tasks: Array<() => void>): number {
  let longest = 0;
  while (tasks.length > 0) {
    const t0 = cpuMs();
    tasks.shift()!();
    longest = Math.max(longest, cpuMs() - t0);
  }
  return longest;
}

/** CPU milliseconds of this process: the machine is shared, so wall time would count others' work. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function timePicks(algorithm: Algorithm, picker: Picker, active: Int32Array, picks: number): number {
  let sum = 0;
  const t0 = cpuMs();
  if (algorithm === "least_connections") {
    const held = new Int32Array(HELD).fill(-1);
    for (let i = 0; i < picks; i++) {
      const slot = picker.pick("", 0)!.slot;
      Atomics.add(active, slot, 1);
      picker.connectionOpened!(slot);
      const old = held[i % HELD]!;
      if (old >= 0) {
        Atomics.sub(active, old, 1);
        picker.connectionClosed!(old);
      }
      held[i % HELD] = slot;
      sum += slot;
    }
    for (const slot of held) {
      if (slot < 0) continue;
      Atomics.sub(active, slot, 1);
      picker.connectionClosed!(slot);
    }
  } else {
    for (let i = 0; i < picks; i++) sum += picker.pick(clientIps[i & 4095]!, 0)!.slot;
  }
  const ns = ((cpuMs() - t0) * 1e6) / picks;
  if (sum < 0) console.log(sum);
  return ns;
}

interface Row {
  n: number;
  algorithm: string;
  ns: number;
  seed: number;
  build: string;
  changes: string[];
  bytes: number;
}

function fmtMs(ms: number): string {
  if (ms < 0.01) return "<0.01";
  if (ms < 10) return ms.toFixed(2);
  if (ms < 1000) return ms.toFixed(0);
  return `${(ms / 1000).toFixed(1)} s`;
}

function memory(): number {
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

function benchOne(algorithm: Algorithm, label: string, set: BackendView[], seed: number): Row {
  const n = set.length;
  const active = new Int32Array(new SharedArrayBuffer(4 * (n + 1)));
  const ctx = benchContext(active);
  const before = memory();
  let t0 = cpuMs();
  let picker = createPicker(algorithm, set, ctx);
  let sync = cpuMs() - t0;
  const longestBuildSlice = drain(ctx.tasks);
  const build = cpuMs() - t0;
  const bytes = n >= 10_000 ? (memory() - before) / n : NaN;

  const picks = n >= 1_000_000 ? 200_000 : 1_000_000;
  timePicks(algorithm, picker, active, Math.min(picks, 200_000)); // warm-up
  const runs: number[] = [];
  for (let r = 0; r < RUNS; r++) runs.push(timePicks(algorithm, picker, active, picks));

  // One change of each kind, applied to the picker in service (as the data plane does).
  const mid = Math.floor(n / 2);
  const changed = (f: (s: BackendView[]) => BackendView[]) => f(set.slice());
  const variants: Array<[string, BackendView[]]> = [
    ["add", changed((s) => (s.push(view(n, 1)), s))],
    ["remove", changed((s) => (s.splice(mid, 1), s))],
    ["weight", changed((s) => ((s[mid] = { ...s[mid]!, weight: s[mid]!.weight + 1 }), s))],
    ["health", changed((s) => (s.splice(mid + 1, 1), s))],
  ];
  const changes: string[] = [];
  for (const [kind, next] of variants) {
    // Full ip_hash rebuilds at a million backends and more take long: time one (add).
    if (algorithm === "ip_hash" && ((n >= 1_000_000 && kind !== "add") || n >= 10_000_000)) {
      t0 = cpuMs();
      picker = createPicker(algorithm, next, ctx, picker);
      sync = cpuMs() - t0;
      changes.push(`${fmtMs(sync)} / ≈ add`);
      (picker as IpHashPicker).update(set);
      ctx.tasks.length = 0;
      continue;
    }
    t0 = cpuMs();
    picker = createPicker(algorithm, next, ctx, picker);
    sync = cpuMs() - t0;
    if (algorithm === "ip_hash") {
      const longest = drain(ctx.tasks);
      const total = cpuMs() - t0;
      changes.push(`${fmtMs(Math.max(sync, longest))} / ${fmtMs(total)}`);
    } else {
      changes.push(fmtMs(sync));
    }
    picker = createPicker(algorithm, set, ctx, picker); // back to the measured set
    drain(ctx.tasks);
  }
  const buildText = algorithm === "ip_hash" ? `${fmtMs(longestBuildSlice)} / ${fmtMs(build)}` : fmtMs(build);
  return { n, algorithm: label, ns: median(runs), seed, build: buildText, changes, bytes };
}

function format(r: Row): string {
  const speedup = r.seed / r.ns;
  const x = speedup >= 100 ? `${Math.round(speedup).toLocaleString("en")}×` : `${speedup.toFixed(1)}×`;
  return `| ${r.n.toLocaleString("en")} | ${r.algorithm} | ${r.ns.toFixed(0)} | ${r.seed.toLocaleString("en")} | ${x} | ${r.build} | ${r.changes.join(" | ")} | ${Number.isNaN(r.bytes) ? "—" : r.bytes.toFixed(0)} |`;
}

// Rows are printed as they complete, so a long run can be read (or cut short) as it goes.
console.log("| backends | algorithm | ns/pick | seed ns/pick | speed-up | build ms | add ms | remove ms | weight ms | health flip ms | bytes/backend |");
console.log("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
const started = performance.now();
for (const n of SIZES) {
  if (n > max) break;
  const set = backends(n, (i) => 1 + (i % 3));
  for (const [a, algorithm] of ALGORITHMS.entries()) {
    process.stderr.write(`N=${n} ${algorithm}…\n`);
    console.log(format(benchOne(algorithm, algorithm, set, SEED[n]![a])));
  }
  if (n === 100_000) {
    process.stderr.write(`N=${n} weighted, 1000 distinct weights…\n`);
    console.log(format(benchOne("weighted", "weighted, 1000 distinct weights", backends(n, (i) => 1 + (i % 1000)), SEED[n]![2])));
  }
}
console.log(`\nnode ${process.version}, ${((performance.now() - started) / 1000).toFixed(0)} s in all`);
