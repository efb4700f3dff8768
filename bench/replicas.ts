// How fast replicas sharing one etcd agree: two gobalancer processes (A and B) on a real
// etcd on loopback (Debian's etcd-server, installed when missing), and a stream of API
// changes sent to A one after another: weight changes, adds and removes. For each change:
//
// - acknowledge: from sending the request to A until A answers (etcd committed it and A's
//   data plane routes by it);
// - to B: from A's answer until B's pool applied it (B's own log line for it: "backend
//   weight changed", "backend added", "backend removed"), which can be negative when B's
//   watch brings the change before A's answer reaches the client;
// - send to B: from sending the request to A until B applied it.
//
//   make build && node bench/replicas.ts [--changes 600] [--members 1|3]
//
// Prints medians and 99th percentiles (milliseconds). B's times come from its log's
// millisecond timestamps, so figures under a few milliseconds are rounded by that.
import { parseArgs } from "node:util";
import { EtcdCluster } from "../test/etcd.ts";
import { cleanup, type BalancerProcess, type LogLine } from "../test/harness.ts";
import { backendPath, call, startReplica } from "../test/replicas.ts";

const { values } = parseArgs({
  options: {
    changes: { type: "string", default: "600" },
    members: { type: "string", default: "1" },
  },
});
const changes = Number(values.changes);
const members = Number(values.members) === 3 ? 3 : 1;

interface Sample {
  kind: "weight" | "add" | "remove";
  ackMs: number;
  toBMs: number;
  sendToBMs: number;
}

const etcd = await EtcdCluster.start(members);
try {
  const [a, b] = await Promise.all([startReplica(etcd.endpoints), startReplica(etcd.endpoints)]);
  const samples: Sample[] = [];
  const target = "127.0.0.9:9000";
  await expect(await call(a, "POST", "/backends", { address: target }), 201);
  for (let i = 0; samples.length < changes; i++) {
    // A third of each: a weight change on the standing backend, an add, and its remove.
    const weight = 2 + (i % 500);
    samples.push(await measure(b, "weight", () => call(a, "PUT", backendPath(target), { weight }), (l) => l.msg === "backend weight changed" && l.backend === target && l.weight === weight, 200));
    const address = `127.0.0.10:${10_000 + i}`;
    samples.push(await measure(b, "add", () => call(a, "POST", "/backends", { address }), (l) => l.msg === "backend added" && l.backend === address, 201));
    samples.push(await measure(b, "remove", () => call(a, "DELETE", backendPath(address)), (l) => l.msg === "backend removed" && l.backend === address, 204));
    // Keep B's log short: only lines after the last change matter.
    b.logs.splice(0, b.logs.length);
  }
  report(samples);
  await Promise.all([a.stop(), b.stop()]);
} finally {
  await cleanup();
  await etcd.stop();
}

async function measure(
  b: BalancerProcess,
  kind: Sample["kind"],
  send: () => Promise<{ status: number; body: unknown }>,
  applied: (l: LogLine) => boolean,
  status: number,
): Promise<Sample> {
  const sentAt = Date.now();
  const started = performance.now();
  const res = await send();
  const ackMs = performance.now() - started;
  const ackAt = Date.now();
  await expect(res, status);
  const deadline = Date.now() + 5000;
  let line: LogLine | undefined;
  while (!(line = b.logs.find(applied))) {
    if (Date.now() > deadline) throw new Error(`B never applied a ${kind}`);
    await new Promise((r) => setTimeout(r, 1));
  }
  const at = Date.parse(String(line.time));
  return { kind, ackMs, toBMs: at - ackAt, sendToBMs: at - sentAt };
}

async function expect(res: { status: number; body: unknown }, status: number): Promise<void> {
  if (res.status !== status) throw new Error(`expected ${status}, got ${res.status}: ${JSON.stringify(res.body)}`);
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function report(all: Sample[]): void {
  const rows: string[] = [];
  const fmt = (n: number) => (Math.abs(n) < 10 ? n.toFixed(1) : n.toFixed(0));
  for (const kind of ["weight", "add", "remove", "all"] as const) {
    const s = kind === "all" ? all : all.filter((x) => x.kind === kind);
    const col = (pick: (x: Sample) => number) => {
      const v = s.map(pick).sort((x, y) => x - y);
      return `${fmt(quantile(v, 0.5))} / ${fmt(quantile(v, 0.99))}`;
    };
    rows.push(`| ${kind} | ${s.length} | ${col((x) => x.ackMs)} | ${col((x) => x.toBMs)} | ${col((x) => x.sendToBMs)} |`);
  }
  console.log(`etcd members: ${members}, changes: ${all.length} (sent one at a time to A)`);
  console.log("| change | n | acknowledge, median / p99 ms | A's answer to B applied | sent to B applied |");
  console.log("|---|---:|---:|---:|---:|");
  for (const r of rows) console.log(r);
}
