import { createPicker } from "../src/balance/picker.ts";
import type { BackendView } from "../src/pool/pool.ts";
const N = Number(process.argv[2] ?? 1_000_000);
const view = (i: number, w: number): BackendView => { const host = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`; return { key: `${host}:80`, host, port: 80, weight: w, slot: i }; };
const set = Array.from({ length: N }, (_, i) => view(i, 1 + (i % 3)));
const active = new Int32Array(new SharedArrayBuffer(4 * (N + 10)));
const t = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
let t0 = t();
let p = createPicker("least_connections", set, { active });
console.log("build", (t() - t0).toFixed(1));
for (let i = 0; i < 100000; i++) p.pick("", 0);
const mid = N >> 1;
const variants: Array<[string, BackendView[]]> = [
  ["add", [...set, view(N, 1)]],
  ["remove", set.filter((_, i) => i !== mid)],
  ["weight", set.map((b, i) => (i === mid ? { ...b, weight: 5 } : b))],
  ["remove 1%", set.filter((_, i) => i % 100 !== 0)],
  ["remove 20%", set.filter((_, i) => i % 5 !== 0)],
  ["clone", structuredClone(set)],
  ["reverse", set.slice().reverse()],
];
for (const [name, next] of variants) {
  const a: number[] = [], b: number[] = [];
  for (let r = 0; r < 5; r++) {
    t0 = t();
    p = createPicker("least_connections", next, { active }, p);
    a.push(t() - t0);
    t0 = t();
    p = createPicker("least_connections", set, { active }, p);
    b.push(t() - t0);
  }
  console.log(name.padEnd(12), "min", Math.min(...a).toFixed(2), "back min", Math.min(...b).toFixed(2), "max", Math.max(...a, ...b).toFixed(1));
}
