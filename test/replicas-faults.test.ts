// End-to-end: gobalancer replicas sharing one registry in a real etcd (Debian's
// etcd-server on loopback) while etcd fails: acknowledged writes survive the loss of the
// etcd leader, a member that loses its leader is noticed, an etcd outage leaves both
// replicas serving and refusing writes with 503, and both resync to exactly what etcd
// holds when it is back.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Etcd3 } from "etcd3";
import type { EtcdMember } from "./etcd.ts";
import { freePort } from "./ports.ts";
import { cleanup, request, startNamedBackend, waitFor, type BalancerProcess } from "./harness.ts";
import { PREFIX, backendPath, call, registry, startReplica } from "./replicas.ts";
import { etcdRegistry, twoReplicas, within } from "./etcd-replicas.ts";
import { seededRandom } from "./seeded-random.ts";

after(cleanup);

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
    const inFlightAtKill = next - done;
    await new Promise((r) => setTimeout(r, 1500));
    leader.start();
    await workers;
    await leader.healthy();

    const statuses = new Map<string, number>();
    for (const op of ops) statuses.set(`${op.kind} ${op.status}`, (statuses.get(`${op.kind} ${op.status}`) ?? 0) + 1);
    const ok = { post: 201, put: 200, delete: 204 } as const;
    // 503: refused, certainly not saved; 504: sent, and etcd never said (either outcome is right).
    for (const op of ops) assert.ok([ok[op.kind], 503, 504].includes(op.status!), `${op.kind} ${op.address}: ${op.status}`);
    assert.ok(inFlightAtKill > 0 && killedAt < ops.length, `the leader died while writes were in flight (${inFlightAtKill} sent and unanswered)`);
    t.diagnostic(`leader killed after ${killedAt} answers, ${inFlightAtKill} in flight; answers: ${JSON.stringify(Object.fromEntries(statuses))}`);

    const held = await etcdRegistry(etcd.endpoints);
    const expected = new Map<string, number>();
    for (const address of existing) expected.set(address, 1);
    for (const op of ops) {
      if (op.status === 504) {
        // Whichever etcd holds, as long as it is the state before or after this change.
        const now = held.find((line) => line.startsWith(`${op.address} `));
        const after = op.kind === "delete" ? undefined : `${op.address} w=${op.weight} ready api`;
        const before = op.kind === "post" ? undefined : `${op.address} w=1 ready api`;
        assert.ok(now === after || now === before, `${op.kind} ${op.address} answered 504; etcd holds ${now}`);
        if (now === undefined) expected.delete(op.address);
        else expected.set(op.address, Number(/ w=(\d+) /.exec(now)![1]));
        continue;
      }
      if (op.status !== ok[op.kind]) continue; // refused: must have changed nothing
      if (op.kind === "delete") expected.delete(op.address);
      else expected.set(op.address, op.weight);
    }
    const want = [...expected].map(([address, weight]) => `${address} w=${weight} ready api`).sort();
    assert.deepEqual(held, want, `etcd after ${JSON.stringify(Object.fromEntries(statuses))}`);
    for (const lb of [a, b]) {
      await waitFor(async () => JSON.stringify(await registry(lb)) === JSON.stringify(want), 5000, "a replica matching etcd");
    }
  });

  it("a replica whose etcd member loses the leader but stays up notices, lists again once the cluster has a leader, and follows changes", { timeout: 60_000 }, async () => {
    const { etcd, a } = r;
    const [member, ...others] = etcd.members as [EtcdMember, EtcdMember, EtcdMember];
    // What the previous test left (backends on addresses where nothing listens) goes.
    const direct = new Etcd3({ hosts: etcd.endpoints });
    await direct.delete().prefix(PREFIX);
    direct.close();
    await within(1000, "A emptied", async () => (await registry(a)).length === 0);
    // Only this member: its watch is on it, and nothing else can tell the replica what changed.
    const c = await startReplica([member.clientUrl]);
    const x = await startNamedBackend("x");
    assert.equal((await call(a, "POST", "/backends", { address: x.address })).status, 201);
    await within(1000, "C following A", async () => (await call(c, "GET", backendPath(x.address))).status === 200);

    // The other two frozen: the member is up and answers on its port, but has no quorum,
    // so it loses its leader and can learn of no change.
    const mark = c.logs.length;
    for (const m of others) m.signal("SIGSTOP");
    try {
      await c.waitForLog((l) => /state store etcd unreachable/.test(l.msg), 20_000, "the replica noticing its member has no leader");
      const ended = c.logs.slice(mark).find((l) => l.msg === "etcd watch ended; re-listing");
      assert.match(String(ended?.err), /no leader/, "the watch ended by etcd for want of a leader");
      assert.equal((await request(c.port)).trim(), "x", "serving what it knows");
    } finally {
      for (const m of others) m.signal("SIGCONT");
    }
    await c.waitForLog((l) => l.msg === "state store etcd reachable again: resynced", 15_000, "the replica listing again");
    assert.equal((await call(a, "DELETE", backendPath(x.address))).status, 204);
    await within(1000, "C following the next change", async () => (await call(c, "GET", backendPath(x.address))).status === 404);
    await c.stop();
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
      if (lb !== c) assert.equal(lb.logs.filter((l) => l.msg === "state store etcd: api change refused").length, 1, "refusals logged once per outage");
      const ignored = lb.logs.filter((l) => l.msg === "state store entry ignored").map((l) => String(l.key)).sort();
      assert.deepEqual(ignored, [`${PREFIX}backends/not-an-address`, `${PREFIX}weights/${x.address}`]);
    }
    // Writes work again, and y, in maintenance, takes no connection until made ready.
    assert.equal((await call(b, "PUT", backendPath(y.address), { state: "ready" })).status, 200);
    await waitFor(async () => (await request(a.port)).trim() === "y", 1000, "A routing to y");
  });
});
