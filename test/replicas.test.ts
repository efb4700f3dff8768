// End-to-end: several gobalancer replicas sharing one registry in a real etcd (Debian's
// etcd-server, one member or three, on loopback): changes through one replica route the
// other's connections within a second, etcd arbitrates conflicting writes, acknowledged
// writes survive the loss of the etcd leader, an etcd outage leaves both serving and
// refusing writes with 503, and both resync to exactly what etcd holds when it is back.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import net from "node:net";
import { Etcd3 } from "etcd3";
import type { BackendJson } from "../src/api/schemas.ts";
import { createPicker } from "../src/balance/registry.ts";
import type { BackendView } from "../src/pool/pool.ts";
import { EtcdCluster } from "./etcd.ts";
import { freePort } from "./ports.ts";
import { cleanup, request, startNamedBackend, waitFor, type BalancerProcess } from "./harness.ts";
import { PREFIX, backendPath, call, registry, startReplica } from "./replicas.ts";
import { seededRandom } from "./seeded-random.ts";

after(cleanup);

/** Polls `check` every few milliseconds; resolves with the milliseconds it took. */
async function within(ms: number, what: string, check: () => Promise<boolean>): Promise<number> {
  const started = performance.now();
  await waitFor(check, ms, what);
  return performance.now() - started;
}

/**
 * Two replicas (with `config` on top of startReplica's) on a fresh etcd of `members`
 * members, started before the suite's tests and stopped after them.
 */
function twoReplicas(members: 1 | 3, config: Record<string, unknown> = {}): { etcd: EtcdCluster; a: BalancerProcess; b: BalancerProcess } {
  const fixture = {} as { etcd: EtcdCluster; a: BalancerProcess; b: BalancerProcess };
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

describe("replicas on one etcd member", () => {
  const r = twoReplicas(1);

  it("a change through one replica routes the other's next connection within a second", async () => {
    const { a, b } = r;
    const one = await startNamedBackend("one");
    const two = await startNamedBackend("two");

    const added = await call(a, "POST", "/backends", { address: one.address, weight: 3 });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    // Acknowledged means routable on A at once.
    assert.equal((await request(a.port)).trim(), "one");
    const seen = await within(1000, "B routing to the new backend", async () => (await request(b.port)).trim() === "one");
    assert.ok(seen < 1000);

    assert.equal((await call(b, "POST", "/backends", { address: two.address, backup: true, max_connections: 7 })).status, 201);
    await within(1000, "A listing B's backend with its options", async () => {
      const res = await call(a, "GET", backendPath(two.address));
      return res.status === 200 && res.body.backup === true && res.body.max_connections === 7;
    });

    assert.equal((await call(a, "PUT", backendPath(one.address), { weight: 9 })).status, 200);
    await within(1000, "B seeing the weight", async () => (await call(b, "GET", backendPath(one.address))).body.weight === 9);

    assert.equal((await call(b, "PUT", backendPath(one.address), { state: "drain" })).status, 200);
    await within(1000, "A draining it", async () => {
      const res = await call(a, "GET", backendPath(one.address));
      return res.body.state === "drain" && res.body.status === "draining";
    });
    // Drained on A: A's next connection goes to the backup, the only routable backend left.
    assert.equal((await request(a.port)).trim(), "two");

    assert.equal((await call(a, "PUT", backendPath(one.address), { state: "ready", weight: null })).status, 200);
    await within(1000, "B back to ready with the default weight", async () => {
      const res = await call(b, "GET", backendPath(one.address));
      return res.body.state === "ready" && res.body.weight === 1;
    });

    assert.equal((await call(b, "DELETE", backendPath(one.address))).status, 204);
    await within(1000, "A forgetting the deleted backend", async () => (await call(a, "GET", backendPath(one.address))).status === 404);
    assert.equal((await request(a.port)).trim(), "two");
    assert.deepEqual(await registry(a), await registry(b));
    assert.deepEqual(await registry(a), [`${two.address} w=1 ready api`]);
    assert.equal((await call(a, "DELETE", backendPath(two.address))).status, 204);
  });

  it("the same address posted to both at once: exactly one 201, the other 409", async () => {
    const { a, b } = r;
    for (let i = 0; i < 20; i++) {
      const address = `127.0.0.3:${2000 + i}`;
      const answers = await Promise.all([a, b].map((lb) => call(lb, "POST", "/backends", { address, weight: i + 1 })));
      assert.deepEqual(answers.map((r) => r.status).sort(), [201, 409], `round ${i}: ${JSON.stringify(answers.map((r) => r.body))}`);
      assert.match(String(answers.find((r) => r.status === 409)!.body.error), new RegExp(`backend ${address} already exists`));
    }
    await within(1000, "both replicas listing the same twenty", async () => {
      const [ra, rb] = await Promise.all([registry(a), registry(b)]);
      return ra.length === 20 && JSON.stringify(ra) === JSON.stringify(rb);
    });
    for (let i = 0; i < 20; i++) assert.equal((await call(a, "DELETE", backendPath(`127.0.0.3:${2000 + i}`))).status, 204);
  });
});

/** What etcd holds under the prefix, as the replicas' registry() spells it. */
async function etcdRegistry(endpoints: readonly string[]): Promise<string[]> {
  const client = new Etcd3({ hosts: [...endpoints] });
  try {
    const kvs = await client.getAll().prefix(PREFIX).strings();
    const weights = new Map<string, number>();
    const states = new Map<string, string>();
    for (const [key, value] of Object.entries(kvs)) {
      const [kind, address] = [key.slice(PREFIX.length).split("/")[0], key.slice(PREFIX.length).split("/").slice(1).join("/")];
      if (kind === "weights") weights.set(address!, (JSON.parse(value) as { weight: number }).weight);
      if (kind === "states") states.set(address!, (JSON.parse(value) as { state: string }).state);
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

describe("replicas on a three-member etcd cluster", () => {
  const r = twoReplicas(3);

  it("200 concurrent writes while the leader is killed and restarted: every acknowledged write is kept, nothing refused is", { timeout: 60_000 }, async (t) => {
    const { etcd, a, b } = r;
    const existing = Array.from({ length: 80 }, (_, i) => `127.0.0.4:${1000 + i}`);
    for (let i = 0; i < existing.length; i += 20) {
      const batch = existing.slice(i, i + 20).map((address) => call(a, "POST", "/backends", { address }));
      for (const res of await Promise.all(batch)) assert.equal(res.status, 201);
    }
    // 120 creates, 40 weight changes and 40 deletes, each on its own address, alternating replicas.
    type Op = { kind: "post" | "put" | "delete"; address: string; weight: number; via: BalancerProcess; status?: number };
    const ops: Op[] = [];
    for (let i = 0; i < 120; i++) ops.push({ kind: "post", address: `127.0.0.5:${1000 + i}`, weight: 1 + (i % 7), via: i % 2 ? a : b });
    for (let i = 0; i < 40; i++) ops.push({ kind: "put", address: existing[i]!, weight: 10 + i, via: i % 2 ? b : a });
    for (let i = 0; i < 40; i++) ops.push({ kind: "delete", address: existing[40 + i]!, weight: 1, via: i % 2 ? a : b });
    const random = seededRandom(17);
    ops.sort(() => random() - 0.5);

    const leader = await etcd.leader();
    let next = 0;
    let done = 0;
    const worker = async () => {
      while (next < ops.length) {
        const op = ops[next++]!;
        const res =
          op.kind === "post"
            ? await call(op.via, "POST", "/backends", { address: op.address, weight: op.weight })
            : op.kind === "put"
              ? await call(op.via, "PUT", backendPath(op.address), { weight: op.weight })
              : await call(op.via, "DELETE", backendPath(op.address));
        op.status = res.status;
        done++;
      }
    };
    const workers = Promise.all(Array.from({ length: 20 }, worker));
    await waitFor(() => done >= 30, 10_000, "the first writes");
    await leader.kill("SIGKILL");
    const killedAt = done;
    await new Promise((r) => setTimeout(r, 1500));
    leader.start();
    await workers;
    await leader.healthy();

    const statuses = new Map<string, number>();
    for (const op of ops) statuses.set(`${op.kind} ${op.status}`, (statuses.get(`${op.kind} ${op.status}`) ?? 0) + 1);
    const ok = { post: 201, put: 200, delete: 204 } as const;
    for (const op of ops) assert.ok(op.status === ok[op.kind] || op.status === 503, `${op.kind} ${op.address}: ${op.status}`);
    assert.ok(killedAt < ops.length, "the leader died while writes were in flight");
    t.diagnostic(`leader killed after ${killedAt} answers; answers: ${JSON.stringify(Object.fromEntries(statuses))}`);

    const expected = new Map<string, number>();
    for (const address of existing) expected.set(address, 1);
    for (const op of ops) {
      if (op.status !== ok[op.kind]) continue; // refused: must have changed nothing
      if (op.kind === "delete") expected.delete(op.address);
      else expected.set(op.address, op.weight);
    }
    const want = [...expected].map(([address, weight]) => `${address} w=${weight} ready api`).sort();
    assert.deepEqual(await etcdRegistry(etcd.endpoints), want, `etcd after ${JSON.stringify(Object.fromEntries(statuses))}`);
    for (const lb of [a, b]) {
      await waitFor(async () => JSON.stringify(await registry(lb)) === JSON.stringify(want), 5000, "a replica matching etcd");
    }
  });
});

describe("replicas while etcd is away", () => {
  const r = twoReplicas(1);

  it("both keep serving and refuse writes with 503 naming the store; back, both resync to what etcd holds, changes made there meanwhile included", { timeout: 60_000 }, async () => {
    const { etcd, a, b } = r;
    const x = await startNamedBackend("x");
    const y = await startNamedBackend("y");
    assert.equal((await call(a, "POST", "/backends", { address: x.address })).status, 201);
    await waitFor(async () => (await registry(b)).length === 1, 1000, "B following A");
    const before = await registry(a);

    const member = etcd.members[0]!;
    const url = member.clientUrl;
    await member.kill();
    for (const lb of [a, b]) await lb.waitForLog((l) => /state store etcd unreachable/.test(l.msg), 10_000, "the outage logged");
    for (const lb of [a, b]) assert.equal((await request(lb.port)).trim(), "x", "serving what it knows");
    // A replica that starts now starts all the same, with no API backends, and catches up later.
    const c = await startReplica(etcd.endpoints);
    assert.deepEqual(await registry(c), []);
    for (const [lb, method, path, body] of [
      [a, "POST", "/backends", { address: y.address }],
      [b, "PUT", backendPath(x.address), { weight: 5 }],
      [a, "PUT", backendPath(x.address), { state: "drain" }],
      [b, "DELETE", backendPath(x.address), undefined],
    ] as const) {
      const res = await call<{ error: string }>(lb, method, path, body);
      assert.equal(res.status, 503, `${method} ${path}`);
      assert.match(res.body.error, /^state store etcd unreachable: /);
      assert.deepEqual(await registry(lb), before, "nothing half-applied");
    }

    // Meanwhile, someone changes etcd where the replicas cannot see it: the same member on
    // another client address.
    member.start(`http://127.0.0.1:${await freePort()}`);
    await member.healthy();
    const direct = new Etcd3({ hosts: member.clientUrl });
    await direct.delete().key(`${PREFIX}backends/${x.address}`);
    await direct.put(`${PREFIX}backends/${y.address}`).value(JSON.stringify({ weight: 2 }));
    await direct.put(`${PREFIX}states/${y.address}`).value(JSON.stringify({ state: "maint" }));
    await direct.put(`${PREFIX}backends/not-an-address`).value("{}");
    await direct.put(`${PREFIX}weights/${x.address}`).value("{not json");
    direct.close();
    await member.kill();
    member.start(url);
    await member.healthy();

    const want = [`${y.address} w=2 maint api`];
    for (const lb of [a, b, c]) {
      await waitFor(async () => JSON.stringify(await registry(lb)) === JSON.stringify(want), 15_000, "a replica resynced");
      await lb.waitForLog((l) => l.msg === "state store etcd reachable again: resynced", 1000, "the return logged");
      assert.equal(lb.logs.filter((l) => /state store etcd unreachable/.test(l.msg)).length, 1, "the outage logged once");
      const ignored = lb.logs.filter((l) => l.msg === "state store entry ignored").map((l) => String(l.key)).sort();
      assert.deepEqual(ignored, [`${PREFIX}backends/not-an-address`, `${PREFIX}weights/${x.address}`]);
    }
    // Writes work again, and y, in maintenance, takes no connection until made ready.
    assert.equal((await call(b, "PUT", backendPath(y.address), { state: "ready" })).status, 200);
    await waitFor(async () => (await request(a.port)).trim() === "y", 1000, "A routing to y");
  });
});

describe("ip_hash across replicas", () => {
  const r = twoReplicas(1, { algorithm: "ip_hash" });

  it("both replicas make the same pick for every client address", { timeout: 60_000 }, async () => {
    const { a, b } = r;
    const names = ["b1", "b2", "b3", "b4", "b5"];
    const servers = await Promise.all(names.map((n) => startNamedBackend(n)));
    // Added through both replicas in opposite orders, so each learned them in another order.
    for (let i = 0; i < servers.length; i++) {
      const via = i % 2 ? a : b;
      const server = servers[i % 2 ? i : servers.length - 1 - i]!;
      assert.equal((await call(via, "POST", "/backends", { address: server.address, weight: 1 + i })).status, 201);
    }
    await waitFor(async () => JSON.stringify(await registry(a)) === JSON.stringify(await registry(b)), 1000, "the same registry");

    // End to end: clients on 200 loopback addresses, each connecting to both replicas.
    const random = seededRandom(42);
    for (let i = 0; i < 200; i++) {
      const client = `127.${1 + Math.floor(random() * 250)}.${Math.floor(random() * 256)}.${1 + Math.floor(random() * 250)}`;
      const [viaA, viaB] = await Promise.all([a, b].map((lb) => requestFrom(client, lb.port)));
      assert.equal(viaA, viaB, `client ${client}`);
    }

    // The pickers themselves, for 10,000 addresses, built from each replica's own list.
    const pickers = await Promise.all(
      [a, b].map(async (lb, n) => {
        const list = (await call<BackendJson[]>(lb, "GET", "/backends")).body;
        if (n === 1) list.reverse();
        const views: BackendView[] = list.map((x, slot) => {
          const port = Number(x.address.slice(x.address.lastIndexOf(":") + 1));
          return { key: x.address, host: x.address.slice(0, x.address.lastIndexOf(":")), port, weight: x.weight, slot: slot + 10 * n };
        });
        const picker = createPicker("ip_hash", views, { active: new Int32Array(64) });
        (picker as { finishBuilds?: () => void }).finishBuilds?.();
        return picker;
      }),
    );
    const picked = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const ip =
        i % 4 === 3
          ? `2001:db8::${Math.floor(random() * 65536).toString(16)}:${Math.floor(random() * 65536).toString(16)}`
          : `${Math.floor(random() * 256)}.${Math.floor(random() * 256)}.${Math.floor(random() * 256)}.${Math.floor(random() * 256)}`;
      const [pa, pb] = pickers.map((p) => p.pick(ip, 0)?.key);
      assert.equal(pa, pb, `client ${ip}`);
      picked.add(pa!);
    }
    assert.equal(picked.size, names.length, "every backend takes a share");
  });
});

/** One connection from `localAddress` (any 127/8 address is this host's); returns what the backend said. */
function requestFrom(localAddress: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", localAddress });
    const chunks: Buffer[] = [];
    socket.on("data", (c) => chunks.push(c));
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(chunks).toString().trim()));
    socket.setTimeout(5000, () => socket.destroy(new Error("timeout")));
  });
}
