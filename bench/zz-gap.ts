import { buildMaglev, MaglevWorkspace, type MaglevTable } from "../src/balance/maglev.ts";
import type { BackendView } from "../src/pool/pool.ts";
import { PerformanceObserver } from "node:perf_hooks";
const N = Number(process.argv[2] ?? 1_000_000);
const cpu = () => { const u = process.threadCpuUsage(); return (u.user + u.system) / 1000; };
const view = (i: number, w: number): BackendView => { const host = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`; return { key: `${host}:80`, host, port: 80, weight: w, slot: i }; };
const set = Array.from({ length: N }, (_, i) => view(i, 1 + (i % 3)));
const gcs: string[] = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) if (e.duration > 5) gcs.push(`${(e as any).detail?.kind}:${e.duration.toFixed(0)}`); }).observe({ entryTypes: ["gc"] });
const work = new MaglevWorkspace();
let spare: MaglevTable | null = null, cur: MaglevTable | null = null;
for (let r = 0; r < 3; r++) {
  const g = buildMaglev(r === 2 ? [...set, view(N, 1)] : set, work, spare);
  let last = cpu(), max = 0, at = 0, k = 0, total = 0;
  const gaps: number[] = [];
  for (;;) {
    const s = g.next(); const now = cpu(); const gap = now - last; total += gap; last = now; k++;
    if (gap > max) { max = gap; at = k; }
    if (gap > 15) gaps.push(k);
    if (s.done) { spare = cur; cur = s.value; break; }
  }
  await new Promise((r) => setImmediate(r));
  console.log(`build ${r}: total ${total.toFixed(0)} ms, ${k} steps, max gap ${max.toFixed(1)} ms at step ${at}; gaps>15ms at ${gaps.slice(0, 10).join(",")} (${gaps.length}); gc>5ms: ${gcs.splice(0).join(" ")}`);
}
