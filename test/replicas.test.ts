// End-to-end: several gobalancer replicas sharing one registry in a real etcd (Debian's
// etcd-server, one member or three, on loopback): changes through one replica route the
// other's connections within a second, on every data-plane thread; etcd arbitrates
// conflicting writes; and both replicas make the same ip_hash pick for 10,000 clients.
// What happens when etcd fails is in replicas-faults.test.ts.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { cleanup, request, startNamedBackend, type BalancerProcess } from "./harness.ts";
import { backendPath, call, registry } from "./replicas.ts";
import { eachLimited, requestFrom, twoReplicas, within } from "./etcd-replicas.ts";
import { seededRandom } from "./seeded-random.ts";

after(cleanup);

/** The backends' names answering `count` consecutive connections, tallied. */
async function tally(lb: BalancerProcess, count: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    const name = (await request(lb.port)).trim();
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

for (const members of [1, 3] as const) {
  describe(`replicas on ${members === 1 ? "one etcd member" : "a three-member etcd cluster"}`, () => {
    // weighted: smooth weighted round robin, where every W consecutive picks hold each
    // backend exactly its weight times, so a weight shows in routing after W connections.
    const r = twoReplicas(members, { algorithm: "weighted" });

    it("a change through one replica routes the other's next connection within a second", async () => {
      const { a, b } = r;
      const [one, two, three] = await Promise.all(["one", "two", "three"].map((n) => startNamedBackend(n)));

      const added = await call(a, "POST", "/backends", { address: one!.address, weight: 3 });
      assert.equal(added.status, 201, JSON.stringify(added.body));
      // Acknowledged means routable on A at once.
      assert.equal((await request(a.port)).trim(), "one");
      await within(1000, "B routing to the new backend", async () => (await request(b.port)).trim() === "one");

      assert.equal((await call(b, "POST", "/backends", { address: two!.address, backup: true, max_connections: 7 })).status, 201);
      await within(1000, "A listing B's backend with its options", async () => {
        const res = await call(a, "GET", backendPath(two!.address));
        return res.status === 200 && res.body.backup === true && res.body.max_connections === 7;
      });
      assert.equal((await call(b, "POST", "/backends", { address: three!.address, weight: 1 })).status, 201);
      await within(1000, "A routing to three", async () => (await tally(a, 4)).three === 1);

      // A weight of 9 against three's 1: nine connections in ten, on A at once, on B within a second.
      assert.equal((await call(a, "PUT", backendPath(one!.address), { weight: 9 })).status, 200);
      assert.deepEqual(await tally(a, 10), { one: 9, three: 1 });
      await within(1000, "B routing by the weight", async () => JSON.stringify(await tally(b, 10)) === JSON.stringify({ one: 9, three: 1 }));

      assert.equal((await call(b, "PUT", backendPath(one!.address), { state: "drain" })).status, 200);
      await within(1000, "A draining it", async () => {
        const res = await call(a, "GET", backendPath(one!.address));
        return res.body.state === "drain" && res.body.status === "draining";
      });
      assert.deepEqual(await tally(a, 4), { three: 4 }, "drained on A: no new connection goes to it");

      assert.equal((await call(a, "PUT", backendPath(one!.address), { state: "ready", weight: null })).status, 200);
      await within(1000, "B back to ready with the default weight", async () => {
        const res = await call(b, "GET", backendPath(one!.address));
        return res.body.state === "ready" && res.body.weight === 1;
      });
      assert.deepEqual(await tally(b, 4), { one: 2, three: 2 });

      assert.equal((await call(b, "DELETE", backendPath(three!.address))).status, 204);
      assert.equal((await call(b, "DELETE", backendPath(one!.address))).status, 204);
      await within(1000, "A forgetting the deleted backends", async () => (await call(a, "GET", backendPath(one!.address))).status === 404);
      // Only the backup is left, and it takes the connections.
      assert.equal((await request(a.port)).trim(), "two");
      assert.deepEqual(await registry(a), await registry(b));
      assert.deepEqual(await registry(a), [`${two!.address} w=1 ready api`]);
      assert.equal((await call(a, "DELETE", backendPath(two!.address))).status, 204);
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
}

describe("replicas with two data-plane threads each", () => {
  // debug: each connection's "connection closed" line names the thread that carried it.
  const r = twoReplicas(1, { workers: 2, log: { level: "debug" } });

  /**
   * Sends `count` connections at once (the kernel spreads them over both threads by
   * source port) and returns what answered them and the threads that carried them.
   */
  async function burst(lb: BalancerProcess, count: number): Promise<{ names: string[]; threads: number[] }> {
    const mark = lb.logs.length;
    const names = (await Promise.all(Array.from({ length: count }, () => request(lb.port)))).map((s) => s.trim());
    await within(5000, "every connection's closed line", async () => lb.logs.slice(mark).filter((l) => l.msg === "connection closed").length >= count);
    const threads = lb.logs.slice(mark).filter((l) => l.msg === "connection closed").map((l) => Number(l.thread));
    return { names: [...new Set(names)].sort(), threads: [...new Set(threads)].sort() };
  }

  it("an API change acknowledged on one replica routes both its threads at once, and the other replica's within a second", async () => {
    const { a, b } = r;
    const [one, two] = await Promise.all(["one", "two"].map((n) => startNamedBackend(n)));
    assert.equal((await call(a, "POST", "/backends", { address: one!.address })).status, 201);
    // 60 connections all hashing to one thread: a chance of 2^-59.
    assert.deepEqual(await burst(a, 60), { names: ["one"], threads: [0, 1] });
    await within(1000, "B routing to it", async () => (await request(b.port)).trim() === "one");
    assert.deepEqual(await burst(b, 60), { names: ["one"], threads: [0, 1] });

    // Then every connection moves to another backend: two added, one put in maintenance.
    assert.equal((await call(a, "POST", "/backends", { address: two!.address })).status, 201);
    assert.equal((await call(a, "PUT", backendPath(one!.address), { state: "maint" })).status, 200);
    assert.deepEqual(await burst(a, 60), { names: ["two"], threads: [0, 1] });
    await within(1000, "B following", async () => (await call(b, "GET", backendPath(one!.address))).body.state === "maint");
    assert.deepEqual(await burst(b, 60), { names: ["two"], threads: [0, 1] });
    for (const backend of [one!, two!]) assert.equal((await call(b, "DELETE", backendPath(backend.address))).status, 204);
  });
});

describe("ip_hash across replicas", () => {
  const r = twoReplicas(1, { algorithm: "ip_hash" });

  it("both replicas make the same pick for 10,000 client addresses, end to end", { timeout: 120_000 }, async (t) => {
    const { a, b } = r;
    const names = ["b1", "b2", "b3", "b4", "b5"];
    const servers = await Promise.all(names.map((n) => startNamedBackend(n)));
    // Added through both replicas in opposite orders, so each learned them in another order.
    for (let i = 0; i < servers.length; i++) {
      const via = i % 2 ? a : b;
      const server = servers[i % 2 ? i : servers.length - 1 - i]!;
      assert.equal((await call(via, "POST", "/backends", { address: server.address, weight: 1 + i })).status, 201);
    }
    await within(1000, "the same registry", async () => JSON.stringify(await registry(a)) === JSON.stringify(await registry(b)));

    // 10,000 distinct clients, each a 127/8 source address (all of 127/8 is this host's),
    // each connecting to both replicas.
    const random = seededRandom(42);
    const clients = new Set<string>();
    while (clients.size < 10_000) clients.add(`127.${1 + Math.floor(random() * 254)}.${Math.floor(random() * 256)}.${1 + Math.floor(random() * 254)}`);
    const started = performance.now();
    const differ: string[] = [];
    const share: Record<string, number> = {};
    await eachLimited([...clients], 32, async (client) => {
      const [viaA, viaB] = await Promise.all([requestFrom(client, a.port), requestFrom(client, b.port)]);
      if (viaA !== viaB) differ.push(`${client}: ${viaA} / ${viaB}`);
      share[viaA] = (share[viaA] ?? 0) + 1;
    });
    t.diagnostic(`20,000 connections in ${Math.round(performance.now() - started)} ms; picks per backend: ${JSON.stringify(share)}`);
    assert.deepEqual(differ, [], `${differ.length} clients picked differently`);
    assert.deepEqual(Object.keys(share).sort(), names, "every backend takes a share, and only backends answer");
  });
});
