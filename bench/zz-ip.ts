import { IpHashPicker } from "../src/balance/ip-hash.ts";
import type { BackendView } from "../src/pool/pool.ts";
import { PerformanceObserver, monitorEventLoopDelay } from "node:perf_hooks";
const N = Number(process.argv[2] ?? 10_000);
const cpu = () => { const u = process.threadCpuUsage(); return (u.user + u.system) / 1000; };
const view = (i: number, w: number): BackendView => { const host = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`; return { key: `${host}:80`, host, port: 80, weight: w, slot: i }; };
const set = Array.from({ length: N }, (_, i) => view(i, 1 + (i % 3)));
let gcMax = 0; const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) gcMax = Math.max(gcMax, e.duration); }); obs.observe({ entryTypes: ["gc"] });
let slices: number[] = [];
const schedule = (t: () => void) => setImmediate(() => { const c = cpu(); t(); slices.push(cpu() - c); });
let t0 = cpu();
const p = new IpHashPicker(set, { active: new Int32Array(1), schedule });
const wait = () => new Promise<void>((r) => { const f = () => (p.building ? setImmediate(f) : r()); f(); });
await wait();
console.log("first build cpu", (cpu() - t0).toFixed(1), "max slice", Math.max(0, ...slices).toFixed(1), "gc max", gcMax.toFixed(1));
const mid = N >> 1;
const variants: Array<[string, BackendView[]]> = [
  ["add", [...set, view(N, 1)]],
  ["remove", set.filter((_, i) => i !== mid)],
  ["weight", set.map((b, i) => (i === mid ? { ...b, weight: 5 } : b))],
];
const h = monitorEventLoopDelay({ resolution: 1 }); h.enable();
for (let r = 0; r < (N >= 1_000_000 ? 1 : 3); r++) for (const [name, next] of [...variants, ["back", set] as [string, BackendView[]]]) {
  slices = []; gcMax = 0; h.reset();
  const w0 = performance.now(); t0 = cpu();
  p.update(next);
  const sync = cpu() - t0;
  await wait();
  const total = cpu() - t0;
  console.log(name.padEnd(7), "sync", sync.toFixed(2), "max slice", Math.max(0, ...slices).toFixed(1), "slices", slices.length, "in service cpu", total.toFixed(1), "wall", (performance.now() - w0).toFixed(0), "gc max", gcMax.toFixed(1), "loop delay max", (h.max / 1e6).toFixed(1));
}
obs.disconnect();
