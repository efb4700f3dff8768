// End-to-end: each balancing algorithm through the real gobalancer process, with three
// real backends on 127.0.0.1 and clients on several loopback source addresses.
import assert from "node:assert/strict";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import { IpHashPicker } from "../src/balance/ip-hash.ts";
import { parseHostPort } from "../src/pool/address.ts";
import { cleanup, request, startBalancer, startNamedBackend, startServer, waitFor, type TestServer } from "./harness.ts";

afterEach(cleanup);

const discovery = (backends: Array<{ server: TestServer; weight?: number }>) => ({
  discovery: { type: "static", backends: backends.map((b) => ({ address: b.server.address, weight: b.weight ?? 1 })) },
});

/** Names the backend that answered: each test backend writes its name first. */
async function names(port: number, count: number): Promise<string> {
  let out = "";
  for (let i = 0; i < count; i++) out += (await request(port)).trim();
  return out;
}

/** A backend that writes its name and holds the connection until the client ends it. */
function holdingBackend(name: string): Promise<TestServer> {
  return startServer((socket) => {
    socket.write(name);
    socket.on("end", () => socket.end());
  });
}

/** Opens a connection from `localAddress` and resolves with it and the backend's name. */
function openFrom(port: number, localAddress = "127.0.0.1"): Promise<{ socket: net.Socket; name: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", localAddress });
    socket.setTimeout(10_000, () => socket.destroy(new Error("client timeout")));
    socket.once("data", (d) => resolve({ socket, name: d.toString() }));
    socket.once("error", reject);
  });
}

async function requestFrom(port: number, localAddress: string): Promise<string> {
  const { socket, name } = await openFrom(port, localAddress);
  socket.destroy();
  return name.trim();
}

describe("algorithms end to end", () => {
  it("round_robin: 30 connections, exactly 10 each, in a fixed rotation", async () => {
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer({ algorithm: "round_robin", ...discovery([{ server: a! }, { server: b! }, { server: c! }]) });
    const seq = await names(lb.port, 30);
    assert.deepEqual([...seq.slice(0, 3)].sort(), ["a", "b", "c"]);
    assert.equal(seq, seq.slice(0, 3).repeat(10));
  });

  it("weighted: weights 5,1,1 give a a b a c a a, twice over", async () => {
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer({ algorithm: "weighted", ...discovery([{ server: a!, weight: 5 }, { server: b! }, { server: c! }]) });
    assert.equal(await names(lb.port, 14), "aabacaa".repeat(2));
  });

  it("least_connections: new connections go to the least loaded per weight, ties in turn", async () => {
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((n) => holdingBackend(n)));
    const lb = await startBalancer({ algorithm: "least_connections", ...discovery([{ server: a!, weight: 2 }, { server: b! }, { server: c! }]) });
    const held: Array<{ socket: net.Socket; name: string }> = [];
    for (let i = 0; i < 8; i++) held.push(await openFrom(lb.port));
    // a (weight 2) holds twice as many: 4, 2, 2.
    const count = (n: string) => held.filter((h) => h.name === n).length;
    assert.deepEqual([count("a"), count("b"), count("c")], [4, 2, 2]);
    // Close b's two: the next two connections go to b, the least loaded.
    for (const h of held.filter((x) => x.name === "b")) h.socket.destroy();
    // The backend sees the close only after the balancer has given back the counts.
    await waitFor(() => b!.open() === 0, 5000, "b's connections closed");
    const next = [await openFrom(lb.port), await openFrom(lb.port)];
    assert.deepEqual(next.map((h) => h.name), ["b", "b"]);
    // Everything closed: counts back to zero, so idle backends share in turn again.
    for (const h of [...held, ...next]) h.socket.destroy();
    await waitFor(() => a!.open() + b!.open() + c!.open() === 0, 5000, "all closed");
    const idle = [await openFrom(lb.port), await openFrom(lb.port), await openFrom(lb.port)];
    assert.deepEqual(idle.map((h) => h.name).sort(), ["a", "b", "c"]);
    for (const h of idle) h.socket.destroy();
  });

  it("least_connections with workers: 2: each thread sees the other's connections, so the shares stay exact", async () => {
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((n) => holdingBackend(n)));
    const lb = await startBalancer({ workers: 2, log: { level: "debug" }, algorithm: "least_connections", ...discovery([{ server: a!, weight: 2 }, { server: b! }, { server: c! }]) });
    // One at a time, so each pick comes after the previous connection was counted, on
    // whichever thread the kernel gave it to.
    const held: Array<{ socket: net.Socket; name: string }> = [];
    const weight: Record<string, number> = { a: 2, b: 1, c: 1 };
    const count = (n: string) => held.filter((h) => h.name === n).length;
    for (let i = 0; i < 24; i++) {
      // Every connection goes to a least loaded backend, counting both threads' connections.
      const least = Math.min(...["a", "b", "c"].map((n) => count(n) / weight[n]!));
      const h = await openFrom(lb.port);
      assert.equal(count(h.name) / weight[h.name]!, least, `connection ${i} went to ${h.name} with ${count(h.name)} open`);
      held.push(h);
    }
    assert.deepEqual([count("a"), count("b"), count("c")], [12, 6, 6]);
    // Both threads took some (the kernel spreads them by source port: all 24 on one has
    // a chance of 2^-23), so the shares above were kept across threads.
    for (const h of held) h.socket.destroy();
    const closed = await waitFor(() => {
      const lines = lb.logs.filter((l) => l.msg === "connection closed");
      return lines.length === 24 && lines;
    }, 5000, "24 closed connections");
    assert.deepEqual([...new Set(closed.map((l) => l.thread))].sort(), [0, 1]);
  });

  it("ip_hash: each client address sticks to one backend, the same one this module computes", async () => {
    const servers = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer({ algorithm: "ip_hash", retries: 2, ...discovery(servers.map((server) => ({ server }))) });
    // The mapping is a function of the backend set alone: compute it here, independently.
    const byKey = new Map(servers.map((s, i) => [parseHostPort(s.address).key, "abc"[i]!]));
    const views = [...byKey.keys()].map((key, slot) => ({ key, host: "127.0.0.1", port: 0, weight: 1, slot }));
    const local = new IpHashPicker(views, { active: new Int32Array(8) });
    local.finishBuilds();
    const clients = Array.from({ length: 24 }, (_, i) => `127.0.0.${i + 2}`);
    const want = clients.map((ip) => byKey.get(local.pick(ip, 0)!.key)!);
    assert.equal(new Set(want).size, 3, "24 clients reach all three backends");
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < clients.length; i++) assert.equal(await requestFrom(lb.port, clients[i]!), want[i], clients[i]);
    }
    // A backend goes away: its clients go to their deterministic alternative, the rest stay
    // until the table of the remaining backends is built in the background; from then on
    // each client follows that table (Maglev moves only a few % of the others). Which of
    // the two a request meets depends on timing, so both mappings are computed here.
    const gone = want[0]!;
    await servers["abc".indexOf(gone)]!.close();
    const rebuilt = new IpHashPicker(views.filter((v) => byKey.get(v.key) !== gone), { active: new Int32Array(8) });
    rebuilt.finishBuilds();
    const after = clients.map((ip) => byKey.get(rebuilt.pick(ip, 0)!.key)!);
    for (let i = 0; i < clients.length; i++) {
      const got = await requestFrom(lb.port, clients[i]!);
      if (want[i] === gone) assert.notEqual(got, gone);
      else assert.ok(got === want[i] || got === after[i], `${clients[i]} moved to ${got}: neither its backend (${want[i]}) nor its place in the rebuilt table (${after[i]})`);
    }
  });
});
