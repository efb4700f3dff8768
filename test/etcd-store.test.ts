// The etcd store against a real etcd (Debian's etcd-server, one member on loopback): the
// keys and values it writes, transactions that let one of two replicas win, a create
// whose answer is lost after etcd committed it, a write etcd never answers, and a watch
// whose start etcd has compacted away.
import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { Etcd3 } from "etcd3";
import pino from "pino";
import { parseHostPort } from "../src/pool/address.ts";
import { EtcdStore } from "../src/store/etcd.ts";
import { EtcdMirror } from "../src/store/etcd-mirror.ts";
import { EtcdFollower } from "../src/store/etcd-watch.ts";
import { StoreOutcomeUnknownError, type PersistedState } from "../src/store/store.ts";
import { EtcdCluster } from "./etcd.ts";
import { waitFor } from "./harness.ts";

const logger = pino({ level: "silent" });
const hp = parseHostPort;

describe("EtcdStore", () => {
  let etcd: EtcdCluster;
  let raw: Etcd3;
  const stores: EtcdStore[] = [];
  const closers: Array<() => void> = [];
  before(async () => {
    etcd = await EtcdCluster.start(1);
    raw = new Etcd3({ hosts: etcd.endpoints });
  });
  after(async () => {
    for (const close of closers) close();
    await Promise.all(stores.map((s) => s.stop()));
    raw?.close();
    await etcd?.stop();
  });

  async function open(prefix: string, endpoints = etcd.endpoints, resolveMs?: number): Promise<{ store: EtcdStore; last: () => PersistedState }> {
    const store = new EtcdStore({ endpoints, prefix, username: "", password: "", logger, ...(resolveMs ? { resolveMs, backoff: { initialMs: 100, maxMs: 500 } } : {}) });
    stores.push(store);
    let state: PersistedState = { backends: [], weights: [], states: [] };
    await store.start((s) => (state = s));
    return { store, last: () => state };
  }
  const values = async (prefix: string) => {
    const kvs = await raw.getAll().prefix(prefix).strings();
    return Object.fromEntries(Object.entries(kvs).map(([k, v]) => [k.slice(prefix.length), JSON.parse(v) as Record<string, unknown>]));
  };

  it("writes one key per backend, weight and state, and hands over each change", async () => {
    const { store, last } = await open("/layout/");
    const address = hp("10.0.0.4:3000");
    assert.equal(await store.write({ address, basis: "absent", backend: { address, weight: 2, maxConnections: 5 }, weight: null }), "done");
    const created = (await values("/layout/"))["backends/10.0.0.4:3000"]!;
    assert.deepEqual({ ...created, id: typeof created.id }, { weight: 2, max_connections: 5, id: "string" });
    assert.deepEqual(last().backends.map((b) => [b.address.key, b.weight, b.maxConnections]), [["10.0.0.4:3000", 2, 5]]);

    // A weight on the API backend rewrites its record, keeping its options and id.
    assert.equal(await store.write({ address, basis: "present", backend: { address, weight: 7, maxConnections: 5 }, state: "drain" }), "done");
    const other = hp("[::1]:80");
    assert.equal(await store.write({ address: other, basis: "absent", weight: 9 }), "done");
    assert.deepEqual(await values("/layout/"), {
      "backends/10.0.0.4:3000": { weight: 7, max_connections: 5, id: created.id },
      "states/10.0.0.4:3000": { state: "drain" },
      "weights/[::1]:80": { weight: 9 },
    });
    assert.deepEqual(last().weights.map((w) => [w.address.key, w.weight]), [["[::1]:80", 9]]);
    assert.deepEqual(last().states?.map((s) => [s.address.key, s.state]), [["10.0.0.4:3000", "drain"]]);

    assert.equal(await store.write({ address, basis: "any", backend: null, state: null }), "done");
    assert.equal(await store.write({ address: other, basis: "absent", weight: null }), "done");
    assert.deepEqual(await values("/layout/"), {});
    assert.deepEqual(last(), { backends: [], weights: [], states: [] });
  });

  it("two replicas adding one address: one commits, the other is told its basis is stale; both end with the winner", async () => {
    const [one, two] = await Promise.all([open("/race/"), open("/race/")]);
    for (let i = 0; i < 10; i++) {
      const address = hp(`10.0.1.${i}:80`);
      const results = await Promise.all(
        [one, two].map(({ store }, n) => store.write({ address, basis: "absent", backend: { address, weight: n + 1 }, weight: null })),
      );
      assert.deepEqual([...results].sort(), ["done", "stale"]);
      const winner = results[0] === "done" ? 1 : 2;
      for (const { last } of [one, two]) assert.equal(last().backends.find((b) => b.address.key === address.key)?.weight, winner);
    }
    // A weight decided on a backend that another replica has since removed and added again is stale too.
    const address = hp("10.0.1.0:80");
    await waitFor(() => one.store["mirror"].backend(address) !== undefined, 1000, "one knowing the backend");
    const raceKey = `/race/backends/${address.key}`;
    await raw.delete().key(raceKey);
    await raw.put(raceKey).value(JSON.stringify({ weight: 3 }));
    await waitFor(() => one.last().backends.find((b) => b.address.key === address.key)?.weight === 3, 1000, "the watch");
    // Known again, so a change decided now is current, and commits.
    assert.equal(await one.store.write({ address, basis: "present", backend: { address, weight: 4 } }), "done");
    assert.equal(JSON.parse((await raw.get(raceKey).string())!).weight, 4);
  });

  it("a create whose answer was lost after etcd committed it is recognised on retry, not refused as a conflict", async () => {
    const proxy = await droppingProxy(etcd.members[0]!.clientUrl);
    closers.push(() => proxy.close());
    const { store } = await open("/lost/", [proxy.url]);
    const address = hp("10.0.2.1:80");
    let committedBeforeCut = false;
    proxy.beforeCut = async () => void (committedBeforeCut = await raw.get(`/lost/backends/${address.key}`).exists());
    proxy.dropNextAnswer = true;
    assert.equal(await store.write({ address, basis: "absent", backend: { address, weight: 6 }, weight: null }), "done");
    assert.equal(proxy.dropped, 1, "the connection carrying the answer was cut");
    assert.ok(committedBeforeCut, "etcd had committed the create when its answer was lost");
    const kv = await raw.get(`/lost/backends/${address.key}`).exec();
    assert.equal(kv.kvs[0]!.version, "1", "created once, not written again");
  });

  it("a write etcd committed but never answered, while etcd stays silent, is not refused: its outcome is unknown, and it applies once etcd answers", async () => {
    const proxy = await droppingProxy(etcd.members[0]!.clientUrl);
    closers.push(() => proxy.close());
    const { store, last } = await open("/silent/", [proxy.url], 1500);
    const address = hp("10.0.2.2:80");
    // The answer is lost, and from then on every connection through the proxy is cut at once.
    proxy.beforeCut = async () => void (proxy.refuse = true);
    proxy.dropNextAnswer = true;
    await assert.rejects(store.write({ address, basis: "absent", backend: { address, weight: 3 }, weight: null }), (err: Error) => {
      assert.ok(err instanceof StoreOutcomeUnknownError, `${err.name}: ${err.message}`);
      assert.match(err.message, /^state store etcd did not answer whether it saved the change .*: it was sent and may still apply/);
      return true;
    });
    assert.ok(await raw.get(`/silent/backends/${address.key}`).exists(), "etcd committed it: a refusal would have been false");
    proxy.refuse = false;
    await waitFor(() => last().backends.some((b) => b.address.key === address.key && b.weight === 3), 5000, "the store following it once etcd answers");
  });

  it("a watch from a revision etcd has compacted away lists again at once, and follows changes made afterwards", async () => {
    const prefix = "/compacted/";
    const client = new Etcd3({ hosts: etcd.endpoints });
    closers.push(() => client.close());
    await raw.put(`${prefix}backends/10.0.3.1:80`).value(JSON.stringify({ weight: 1 }));
    // The first list is answered only after etcd has moved on and compacted its history
    // past the list's revision, so the watch that follows starts from a revision that is gone.
    const getAll = client.getAll.bind(client);
    let lists = 0;
    client.getAll = () => {
      const builder = getAll();
      const exec = builder.exec.bind(builder);
      builder.exec = async () => {
        const res = await exec();
        if (++lists === 1) {
          // Two changes: etcd keeps the revision compacted at, so the watch's start (the
          // first of them) must lie before it.
          await raw.put(`${prefix}backends/10.0.3.2:80`).value(JSON.stringify({ weight: 1 }));
          const put = await raw.put(`${prefix}backends/10.0.3.2:80`).value(JSON.stringify({ weight: 2 })).exec();
          await raw.kv.compact({ revision: put.header.revision });
        }
        return res;
      };
      return builder;
    };
    const lines: Array<{ msg: string }> = [];
    const log = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as { msg: string }) });
    const mirror = new EtcdMirror(log, prefix);
    let state: PersistedState | undefined;
    // A backoff far longer than the test waits: a re-list after compaction must not wait for it.
    const follower = new EtcdFollower({ client, prefix, mirror, logger: log, changed: () => (state = mirror.state()), backoff: { initialMs: 30_000, maxMs: 30_000 } });
    closers.push(() => void follower.stop());
    await follower.start();
    assert.deepEqual(state?.backends.map((b) => b.address.key), ["10.0.3.1:80"], "the first list, from before the compaction");
    await waitFor(() => state?.backends.length === 2, 2000, "a second list, at once, bringing the change the watch could not");
    assert.ok(lines.some((l) => l.msg === "etcd watch history compacted; re-listing"), JSON.stringify(lines.map((l) => l.msg)));
    await raw.put(`${prefix}backends/10.0.3.3:80`).value(JSON.stringify({ weight: 3 }));
    await waitFor(() => state?.backends.length === 3, 1000, "the watch after the re-list delivering a later change");
  });
});

interface DroppingProxy {
  url: string;
  dropNextAnswer: boolean;
  /** Cuts every connection as soon as it is made: etcd cannot be reached, as if silent. */
  refuse: boolean;
  dropped: number;
  /** Runs once etcd has had time to commit what it was sent, just before the cut. */
  beforeCut: () => Promise<void>;
  close(): void;
}

/**
 * A TCP proxy to etcd that, when armed, holds back everything etcd sends from the next
 * bytes on, gives etcd a moment to finish the request just sent, and then cuts the
 * connection, as a network failure would: the request arrived, its answer never does.
 */
async function droppingProxy(target: string): Promise<DroppingProxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const state: DroppingProxy = { url: "", dropNextAnswer: false, refuse: false, dropped: 0, beforeCut: async () => {}, close: () => {} };
  const server = net.createServer((client) => {
    if (state.refuse) return void client.destroy();
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => (sockets.delete(s), client.destroy(), upstream.destroy()));
    }
    let holding = false;
    client.on("data", (d) => upstream.write(d));
    upstream.on("data", (d) => {
      if (holding) return;
      if (state.dropNextAnswer) {
        state.dropNextAnswer = false;
        holding = true;
        setTimeout(() => {
          void state.beforeCut().finally(() => {
            state.dropped++;
            client.destroy();
            upstream.destroy();
          });
        }, 200);
        return;
      }
      client.write(d);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  state.close = () => {
    server.close();
    for (const s of sockets) s.destroy();
  };
  return state;
}
