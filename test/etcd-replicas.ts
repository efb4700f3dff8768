/**
 * Fixtures shared by the replica suites: two replicas on a fresh etcd, what etcd holds
 * in the replicas' own spelling, and connections from chosen client addresses.
 */
import net from "node:net";
import { after, before } from "node:test";
import { Etcd3 } from "etcd3";
import { EtcdCluster } from "./etcd.ts";
import { waitFor, type BalancerProcess } from "./harness.ts";
import { PREFIX, startReplica } from "./replicas.ts";

/** Polls `check` every few milliseconds; resolves with the milliseconds it took. */
export async function within(ms: number, what: string, check: () => Promise<boolean>): Promise<number> {
  const started = performance.now();
  await waitFor(check, ms, what);
  return performance.now() - started;
}

export interface TwoReplicas {
  etcd: EtcdCluster;
  a: BalancerProcess;
  b: BalancerProcess;
}

/**
 * Two replicas (with `config` on top of startReplica's) on a fresh etcd of `members`
 * members, started before the suite's tests and stopped after them.
 */
export function twoReplicas(members: 1 | 3, config: Record<string, unknown> = {}): TwoReplicas {
  const fixture = {} as TwoReplicas;
  before(async () => {
    fixture.etcd = await EtcdCluster.start(members);
    [fixture.a, fixture.b] = await Promise.all([startReplica(fixture.etcd.endpoints, config), startReplica(fixture.etcd.endpoints, config)]);
  });
  after(async () => {
    await Promise.all([fixture.a?.stop(), fixture.b?.stop()]);
    await fixture.etcd?.stop();
  });
  return fixture;
}

/** What etcd holds under the prefix, as the replicas' registry() spells it. */
export async function etcdRegistry(endpoints: readonly string[]): Promise<string[]> {
  const client = new Etcd3({ hosts: [...endpoints] });
  try {
    const kvs = await client.getAll().prefix(PREFIX).strings();
    const states = new Map<string, string>();
    for (const [key, value] of Object.entries(kvs)) {
      const [kind, ...rest] = key.slice(PREFIX.length).split("/");
      if (kind === "states") states.set(rest.join("/"), (JSON.parse(value) as { state: string }).state);
    }
    return Object.entries(kvs)
      .filter(([key]) => key.startsWith(`${PREFIX}backends/`))
      .map(([key, value]) => {
        const address = key.slice(`${PREFIX}backends/`.length);
        return `${address} w=${(JSON.parse(value) as { weight: number }).weight} ${states.get(address) ?? "ready"} api`;
      })
      .sort();
  } finally {
    client.close();
  }
}

/** One connection from `localAddress` (any 127/8 address is this host's); returns what the backend said. */
export function requestFrom(localAddress: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", localAddress });
    const chunks: Buffer[] = [];
    socket.on("data", (c) => chunks.push(c));
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(chunks).toString().trim()));
    socket.setTimeout(5000, () => socket.destroy(new Error(`no answer from ${localAddress} within 5 s`)));
  });
}

/** Runs `task` on every item, at most `concurrency` at a time. */
export async function eachLimited<T>(items: readonly T[], concurrency: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await task(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
