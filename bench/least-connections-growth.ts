/**
 * What it costs least_connections to apply a change that outgrows its capacity (the
 * leaf arrays double), against the same change within capacity.
 *
 *   node --expose-gc bench/least-connections-growth.ts [--n 131072] [--runs 7] [--background run|drop]
 *
 * One process per measurement, alternating the two kinds, because the C allocator keeps
 * memory a process freed and hands it back already touched, which would hide the cost of
 * fresh memory (its first touch is a page fault per 4 KiB). Each process builds a picker
 * of --n backends (weights 1, 2, 3), lets the picker's background tasks run to the end
 * (or drops them: --background drop), opens and closes 200,000 connections, then times
 * one update that adds a backend: to n backends ("crossing": n is a power of two, the
 * capacity) or to n − 1 ("within"). Times are CPU ms of the process (the machine is
 * shared); the update's wall time and the background tasks' CPU are printed too.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createPicker } from "../src/balance/registry.ts";
import type { PickerContext } from "../src/balance/picker.ts";
import type { BackendView } from "../src/pool/pool.ts";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : fallback);

function view(i: number): BackendView {
  const host = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
  return { key: `${host}:80`, host, port: 80, weight: 1 + (i % 3), slot: i };
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

interface Sample {
  kind: string;
  updateCpuMs: number;
  updateWallMs: number;
  backgroundCpuMs: number;
  longestSliceMs: number;
  slices: number;
}

async function child(kind: "crossing" | "within", n: number, background: string): Promise<Sample> {
  const size = kind === "crossing" ? n : n - 1;
  const set = Array.from({ length: size }, (_, i) => view(i));
  const active = new Int32Array(new SharedArrayBuffer(4 * (n + 16)));
  const slices: number[] = [];
  let pending = 0;
  const context: PickerContext = {
    active,
    countsChangedElsewhere: false,
    schedule: (task) => {
      if (background === "drop") return;
      pending++;
      setImmediate(() => {
        pending--;
        const t0 = cpuMs();
        task();
        slices.push(cpuMs() - t0);
      });
    },
  };
  const picker = createPicker("least_connections", set, context);
  while (pending > 0) await new Promise((resolve) => setImmediate(resolve));
  const held = new Int32Array(1000).fill(-1);
  for (let i = 0; i < 200_000; i++) {
    const slot = picker.pick("", 0)!.slot;
    Atomics.add(active, slot, 1);
    picker.connectionOpened!(slot);
    const old = held[i % 1000]!;
    if (old >= 0) {
      Atomics.sub(active, old, 1);
      picker.connectionClosed!(old);
    }
    held[i % 1000] = slot;
  }
  (globalThis as { gc?: () => void }).gc?.();
  await new Promise((resolve) => setImmediate(resolve));
  const next = [...set, view(size)];
  const wall0 = performance.now();
  const cpu0 = cpuMs();
  const updated = createPicker("least_connections", next, context, picker);
  const updateCpuMs = cpuMs() - cpu0;
  const updateWallMs = performance.now() - wall0;
  if (updated !== picker || updated.pick("", 0) === undefined) throw new Error("not updated in place");
  return { kind, updateCpuMs, updateWallMs, backgroundCpuMs: slices.reduce((a, b) => a + b, 0), longestSliceMs: Math.max(0, ...slices), slices: slices.length };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const range = (xs: number[]) => `${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)}`;

const n = Number(option("--n", "131072"));
const background = option("--background", "run");
if (args.includes("--child")) {
  const sample = await child(option("--child", "within") as "crossing" | "within", n, background);
  process.stdout.write(JSON.stringify(sample));
} else {
  const runs = Number(option("--runs", "7"));
  const samples: Sample[] = [];
  for (let r = 0; r < runs; r++) {
    for (const kind of r % 2 === 0 ? ["crossing", "within"] : ["within", "crossing"]) {
      const out = spawnSync(process.execPath, ["--expose-gc", fileURLToPath(import.meta.url), "--child", kind, "--n", String(n), "--background", background], { encoding: "utf8" });
      if (out.status !== 0) throw new Error(out.stderr);
      samples.push(JSON.parse(out.stdout) as Sample);
    }
  }
  console.log(`n = ${n}, background tasks: ${background}, ${runs} processes each`);
  for (const kind of ["crossing", "within"]) {
    const s = samples.filter((x) => x.kind === kind);
    const cpu = s.map((x) => x.updateCpuMs);
    const wall = s.map((x) => x.updateWallMs);
    const bg = s.map((x) => x.backgroundCpuMs);
    console.log(
      `${kind.padEnd(8)} update: CPU median ${median(cpu).toFixed(2)} ms (${range(cpu)}), wall median ${median(wall).toFixed(2)} ms (${range(wall)}); ` +
        `background: ${median(bg).toFixed(2)} ms CPU in ${median(s.map((x) => x.slices))} slices, longest ${median(s.map((x) => x.longestSliceMs)).toFixed(2)} ms`,
    );
  }
}
