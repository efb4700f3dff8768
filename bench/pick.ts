/**
 * Pick micro-benchmark: every algorithm at N = 10 … 10,000,000 backends.
 *
 *   make bench            (node --expose-gc --max-old-space-size=20000 bench/pick.ts)
 *   node … bench/pick.ts --max 100000     only up to 100,000 backends
 *   node … bench/pick.ts --min 10000000 --only ip_hash,weighted     some rows only
 *
 * Per algorithm and N it prints: ns per pick (median of 5 runs), the seed's published
 * figure and the speed-up; the time one change takes to apply (add, remove, weight change,
 * health flip) — for ip_hash the event-loop block and, after the slash, the time until the
 * rebuilt table is in service; and the pickers' memory per backend.
 * Times are the process's CPU time (the machine is shared; wall time would count other
 * processes' work), so "hold" means CPU time spent in one go on the event loop. Changes
 * are applied from the event loop, ip_hash builds run in its real slices (setImmediate),
 * and every row also reports the longest garbage-collection pause (PerformanceObserver)
 * and the longest event-loop delay (monitorEventLoopDelay, wall time: on a busy machine
 * it includes time the process was not scheduled at all).
 * least_connections is timed per connection: pick + count the open + close an older one
 * (1,000 held), since its buckets move on every open and close; as with the default single
 * data-plane thread, and up to 100,000 backends also as one of several threads (shared
 * counts, which each pick re-reads).
 */
import os from "node:os";
import { constants, monitorEventLoopDelay, PerformanceObserver, type PerformanceEntry } from "node:perf_hooks";
import type { Picker, PickerContext } from "../src/balance/picker.ts";
import { createPicker } from "../src/balance/registry.ts";
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
const option = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const max = Number(option("--max") ?? Infinity);
const min = Number(option("--min") ?? 0);
const only = option("--only")?.split(",");
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

/** Longest GC pause since the last reset, in ms (not counting the ones the bench forces). */
let gcPause = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const flags = (entry as PerformanceEntry & { detail?: { flags?: number } }).detail?.flags ?? 0;
    if ((flags & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED) === 0) gcPause = Math.max(gcPause, entry.duration);
  }
}).observe({ entryTypes: ["gc"] });
const loopDelay = monitorEventLoopDelay({ resolution: 1 });

/** Context whose background slices run on the event loop, each one timed and counted. */
function benchContext(active: Int32Array, countsChangedElsewhere: boolean): PickerContext & { slices: number[]; pending: { count: number } } {
  const slices: number[] = [];
  const pending = { count: 0 };
  return {
    active,
    countsChangedElsewhere,
    slices,
    pending,
    schedule: (task) => {
      pending.count++;
      setImmediate(() => {
        pending.count--;
        const t0 = cpuMs();
        task();
        slices.push(cpuMs() - t0);
      });
    },
  };
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Waits (on the event loop) until the picker's background work is done: an ip_hash table
 * in service, least_connections' next capacity prepared.
 */
async function settled(picker: Picker, pending: { count: number }): Promise<void> {
  while ((picker instanceof IpHashPicker && picker.building) || pending.count > 0) await nextTurn();
}

/**
 * CPU milliseconds of this process: the machine is shared, so wall time would count other
 * processes' work. (Of the process, not the thread: the thread clock is too coarse here.
 * It includes V8's helper threads, so a hold can only be overstated.)
 */
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
  gc: number;
  delay: number;
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

/** `threaded`: as one of several data-plane threads (workers > 1), which share the counts. */
async function benchOne(algorithm: Algorithm, label: string, set: BackendView[], seed: number, threaded = false): Promise<Row> {
  const n = set.length;
  const active = new Int32Array(new SharedArrayBuffer(4 * (n + 1)));
  const ctx = benchContext(active, threaded);
  const before = memory();
  let t0 = cpuMs();
  let picker = createPicker(algorithm, set, ctx);
  const firstSync = cpuMs() - t0;
  await settled(picker, ctx.pending);
  const build = cpuMs() - t0;
  const longestBuildSlice = Math.max(firstSync, ...ctx.slices);
  const bytes = n >= 10_000 ? (memory() - before) / n : NaN;

  const picks = n >= 1_000_000 ? 200_000 : 1_000_000;
  timePicks(algorithm, picker, active, Math.min(picks, 200_000)); // warm-up
  const runs: number[] = [];
  for (let r = 0; r < RUNS; r++) runs.push(timePicks(algorithm, picker, active, picks));

  // One change of each kind, applied to the picker in service (as the data plane does),
  // from the event loop; then back to the measured set.
  const mid = Math.floor(n / 2);
  const changed = (f: (s: BackendView[]) => BackendView[]) => f(set.slice());
  const variants: Array<[string, BackendView[]]> = [
    ["add", changed((s) => (s.push(view(n, 1)), s))],
    ["remove", changed((s) => (s.splice(mid, 1), s))],
    ["weight", changed((s) => ((s[mid] = { ...s[mid]!, weight: s[mid]!.weight + 1 }), s))],
    ["health", changed((s) => (s.splice(mid + 1, 1), s))],
  ];
  // Each change is applied REPEAT times (median), except the full ip_hash rebuilds at
  // ≥ 1M backends, which take seconds each.
  const repeat = algorithm === "ip_hash" && n >= 1_000_000 ? 1 : 3;
  const holds: number[][] = variants.map(() => []);
  const totals: number[][] = variants.map(() => []);
  gc();
  await nextTurn();
  await nextTurn(); // the forced collection's entry is delivered by now
  gcPause = 0;
  loopDelay.reset();
  loopDelay.enable();
  for (let r = 0; r < repeat; r++) {
    for (const [v, [kind, next]] of variants.entries()) {
      await nextTurn();
      ctx.slices.length = 0;
      t0 = cpuMs();
      picker = createPicker(algorithm, next, ctx, picker);
      const sync = cpuMs() - t0;
      if (algorithm === "ip_hash" && !(n >= 1_000_000 && kind !== "add")) {
        // ip_hash: until the rebuilt table is in service, in slices on the event loop. (At
        // ≥ 1M backends only "add" is rebuilt: the others rebuild the same table size; the
        // hold is the synchronous part and the first slice, and going back to the measured
        // set drops that build.)
        await settled(picker, ctx.pending);
        totals[v]!.push(cpuMs() - t0);
      }
      holds[v]!.push(Math.max(sync, ...ctx.slices));
      picker = createPicker(algorithm, set, ctx, picker);
      await settled(picker, ctx.pending);
    }
  }
  const changes = variants.map((_, v) => {
    const hold = fmtMs(median(holds[v]!));
    if (algorithm !== "ip_hash") return fmtMs(median(holds[v]!));
    return totals[v]!.length > 0 ? `${hold} / ${fmtMs(median(totals[v]!))}` : `${hold} / ≈ ${variants[0]![0]}`;
  });
  loopDelay.disable();
  const buildText = algorithm === "ip_hash" ? `${fmtMs(longestBuildSlice)} / ${fmtMs(build)}` : fmtMs(build);
  return { n, algorithm: label, ns: median(runs), seed, build: buildText, changes, bytes, gc: gcPause, delay: loopDelay.max / 1e6 };
}

function format(r: Row): string {
  const speedup = r.seed / r.ns;
  const x = speedup >= 100 ? `${Math.round(speedup).toLocaleString("en")}×` : `${speedup.toFixed(1)}×`;
  return `| ${r.n.toLocaleString("en")} | ${r.algorithm} | ${r.ns.toFixed(0)} | ${r.seed.toLocaleString("en")} | ${x} | ${r.build} | ${r.changes.join(" | ")} | ${Number.isNaN(r.bytes) ? "—" : r.bytes < 1 ? "≈0" : r.bytes.toFixed(0)} | ${fmtMs(r.gc)} | ${fmtMs(r.delay)} |`;
}

// Rows are printed as they complete, so a long run can be read (or cut short) as it goes.
console.log("| backends | algorithm | ns/pick | seed ns/pick | speed-up | build ms | add ms | remove ms | weight ms | health flip ms | bytes/backend | GC pause ms | loop delay ms |");
console.log("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
const started = performance.now();
for (const n of SIZES) {
  if (n > max) break;
  if (n < min) continue;
  const set = backends(n, (i) => 1 + (i % 3));
  for (const [a, algorithm] of ALGORITHMS.entries()) {
    if (only && !only.includes(algorithm)) continue;
    process.stderr.write(`N=${n} ${algorithm}…\n`);
    console.log(format(await benchOne(algorithm, algorithm, set, SEED[n]![a])));
    if (algorithm === "least_connections" && n <= 100_000) {
      process.stderr.write(`N=${n} least_connections, workers > 1…\n`);
      console.log(format(await benchOne(algorithm, "least_connections, workers > 1", set, SEED[n]![a], true)));
    }
  }
  if (n === 100_000 && (!only || only.includes("weighted"))) {
    process.stderr.write(`N=${n} weighted, 1000 distinct weights…\n`);
    console.log(format(await benchOne("weighted", "weighted, 1000 distinct weights", backends(n, (i) => 1 + (i % 1000)), SEED[n]![2])));
  }
}
console.log(`\nnode ${process.version}, ${((performance.now() - started) / 1000).toFixed(0)} s in all; load average at the end ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}`);
