import { buildMaglev, MaglevWorkspace, type MaglevTable } from "../src/balance/maglev.ts";
import type { BackendView } from "../src/pool/pool.ts";
const N = Number(process.argv[2] ?? 10_000);
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const view = (i: number, w: number): BackendView => { const host = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`; return { key: `${host}:80`, host, port: 80, weight: w, slot: i }; };
const set = Array.from({ length: N }, (_, i) => view(i, 1 + (i % 3)));
const work = new MaglevWorkspace();
let spare: MaglevTable | null = null, cur: MaglevTable | null = null;
const times: number[] = [];
for (let r = 0; r < 30; r++) {
  const t0 = cpu();
  const g = buildMaglev(set, work, spare);
  let s = g.next(); while (!s.done) s = g.next();
  times.push(cpu() - t0);
  spare = cur; cur = s.value;
}
times.sort((a, b) => a - b);
console.log("min", times[0]!.toFixed(2), "median", times[15]!.toFixed(2));
