// End-to-end: a backend's own max_connections with the first-come queue in front of it
// (timeouts.queue), and backup backends that take over only while no primary is up.
import assert from "node:assert/strict";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import { cleanup, request, startBalancer, startNamedBackend, startServer, waitFor, type BalancerProcess, type TestServer } from "./harness.ts";
import { accessLines, scrape, valueOf } from "./observe.ts";

afterEach(cleanup);

/**
 * A backend that answers each client's first bytes (its id) with "served <id>" and then
 * holds the connection until release() closes it. It counts the clients' connections
 * open on it (health probes, which send nothing, are not counted) and the most ever
 * open at once. A release counts the connection closed at once, before the balancer can
 * know: the count here never runs behind the balancer's, so the peak is a sound check.
 */
async function holdingBackend() {
  const held: Array<{ socket: net.Socket; done: () => void }> = [];
  const ids: string[] = [];
  let open = 0;
  let peak = 0;
  const server = await startServer((socket) => {
    let counted = false;
    const done = () => {
      if (!counted) return;
      counted = false;
      open--;
    };
    socket.once("data", (d: Buffer) => {
      counted = true;
      open++;
      peak = Math.max(peak, open);
      ids.push(d.toString());
      held.push({ socket, done });
      socket.write(`served ${d}`);
    });
    socket.on("end", done);
    socket.on("close", done);
  });
  return {
    server,
    ids,
    get open() {
      return open;
    },
    get peak() {
      return peak;
    },
    /** Closes the connection held longest; false when none is held. */
    release(): boolean {
      const next = held.shift();
      if (next === undefined) return false;
      next.done(); // counted closed now (see above)
      next.socket.destroy();
      return true;
    },
  };
}

interface Client {
  socket: net.Socket;
  id: string;
  /** Its own port: how the access log names it. */
  port: number;
  /** Resolves with what the backend answered once it did. */
  served: Promise<string>;
  /** Resolves once the balancer closed the connection, with how long it was open (ms). */
  closed: Promise<number>;
  reply: () => string;
}

/** Connects and sends `id`; once connected, resolves. */
function client(port: number, id: string): Promise<Client> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    let got = "";
    let connectedAt = 0;
    let onServed: (s: string) => void = () => {};
    const served = new Promise<string>((r) => (onServed = r));
    const closed = new Promise<number>((r) => socket.on("close", () => r(performance.now() - connectedAt)));
    socket.on("data", (d: Buffer) => {
      got += d.toString();
      onServed(got);
    });
    socket.on("error", () => {});
    socket.once("error", reject);
    socket.once("connect", () => {
      connectedAt = performance.now();
      socket.write(id);
      resolve({ socket, id, port: socket.localPort!, served, closed, reply: () => got });
    });
  });
}



/** Connections the balancer has accepted and not yet closed, over all threads. */
async function active(lb: BalancerProcess): Promise<number | undefined> {
  return valueOf(await scrape(lb), "gobalancer_active_connections");
}

async function queueTimeouts(lb: BalancerProcess): Promise<number | undefined> {
  return valueOf(await scrape(lb), "gobalancer_connections_refused_total", { reason: "queue_timeout" });
}

interface BackendJson {
  address: string;
  status: string;
  backup: boolean;
  max_connections: number;
  active_connections: number;
}

async function backends(lb: BalancerProcess): Promise<BackendJson[]> {
  return (await (await fetch(`${lb.api}/backends`)).json()) as BackendJson[];
}

async function statusOf(lb: BalancerProcess, server: TestServer): Promise<string | undefined> {
  return (await backends(lb)).find((b) => b.address === server.address)?.status;
}


/** The access-log line of the client whose local port is `port` (lines come in batches, at least every second). */
function lineOf(lb: BalancerProcess, port: number) {
  return waitFor(() => accessLines(lb).find((l) => l.client === `127.0.0.1:${port}`), 4000, `the access-log line of client port ${port}`);
}

function limited(workers: number, address: string, maxConnections: number, queue: string, extra: Record<string, unknown> = {}) {
  return startBalancer({
    workers,
    timeouts: { queue },
    access_log: { enabled: true, path: "access.log" },
    health_check: { interval: "1h" },
    discovery: { type: "static", backends: [{ address, max_connections: maxConnections }] },
    ...extra,
  });
}

describe("per-backend max_connections", () => {
  for (const workers of [1, 2]) {
    it(`never more than max_connections open to the backend; every queued client is served as places free (workers: ${workers})`, async () => {
      const backend = await holdingBackend();
      const lb = await limited(workers, backend.server.address, 3, "10s");
      const clients = await Promise.all(Array.from({ length: 12 }, (_, i) => client(lb.port, `c${i}`)));
      await waitFor(async () => (await active(lb)) === 12, 3000, "all 12 clients accepted");
      await waitFor(() => backend.open === 3, 3000, "3 connections on the backend");
      const list = await backends(lb);
      assert.deepEqual([list[0]!.max_connections, list[0]!.active_connections], [3, 3]);
      // Free one place at a time; each lets exactly one queued client through.
      for (let served = 3; served < 12; served++) {
        assert.ok(backend.release());
        await waitFor(() => backend.ids.length === served + 1, 3000, `client ${served + 1} served`);
        assert.ok(backend.open <= 3);
      }
      while (backend.release());
      const replies = await Promise.all(clients.map((c) => c.served));
      assert.deepEqual(replies, clients.map((c) => `served ${c.id}`), "each client answered by its own backend connection");
      assert.deepEqual([...backend.ids].sort(), clients.map((c) => c.id).sort(), "every client served once");
      assert.equal(backend.peak, 3, "never more than max_connections at once");
      await Promise.all(clients.map((c) => c.closed));
      assert.equal(await queueTimeouts(lb), 0);
    });
  }

  for (const workers of [1, 2]) {
    it(`queued clients are served in the order they arrived, whichever thread took them (workers: ${workers})`, async () => {
      const backend = await holdingBackend();
      const lb = await limited(workers, backend.server.address, 1, "10s");
      const clients: Client[] = [];
      // Ten: with two threads, the kernel's hash puts them all on one thread in about one
      // run in 500 (six would be one in 32), so the order is nearly always across threads.
      const COUNT = 10;
      for (let i = 0; i < COUNT; i++) {
        clients.push(await client(lb.port, `c${i}`));
        // Accepted (and so queued) before the next one connects.
        await waitFor(async () => (await active(lb)) === i + 1, 3000, `client ${i} accepted`);
      }
      await waitFor(() => backend.ids.length === 1, 3000, "the first client served");
      for (let i = 1; i < COUNT; i++) {
        backend.release();
        await waitFor(() => backend.ids.length === i + 1, 3000, `client ${i} served`);
      }
      assert.deepEqual(backend.ids, Array.from({ length: COUNT }, (_, i) => `c${i}`));
      assert.equal(backend.peak, 1);
    });

    it(`a client that waits timeouts.queue in vain is closed and counted as queue_timeout (workers: ${workers})`, async () => {
      const backend = await holdingBackend();
      const lb = await limited(workers, backend.server.address, 1, "500ms");
      const first = await client(lb.port, "first");
      await first.served;
      const waiting = await client(lb.port, "waiting");
      const openMs = await waiting.closed;
      assert.ok(openMs >= 450 && openMs < 1500, `closed after ${Math.round(openMs)} ms, at the queue timeout`);
      assert.equal(waiting.reply(), "", "never served");
      assert.deepEqual(backend.ids, ["first"]);
      assert.equal(await queueTimeouts(lb), 1);
      const line = await lineOf(lb, waiting.port);
      assert.deepEqual([line.termination, line.backend], ["queue_timeout", ""]);
      // The first client is still served, and the place is free again once it is released.
      assert.equal(first.socket.destroyed, false);
      backend.release();
      await first.closed;
      const next = await client(lb.port, "next");
      assert.equal(await next.served, "served next");
    });
  }

  it("timeouts.queue 0: refused at once when every backend is full, counted as queue_timeout", async () => {
    const backend = await holdingBackend();
    const lb = await limited(1, backend.server.address, 1, "0s");
    const first = await client(lb.port, "first");
    await first.served;
    const refused = await client(lb.port, "refused");
    const openMs = await refused.closed;
    assert.ok(openMs < 400, `closed at once (${Math.round(openMs)} ms)`);
    assert.equal(refused.reply(), "");
    assert.equal(await queueTimeouts(lb), 1);
    assert.equal((await lineOf(lb, refused.port)).termination, "queue_timeout");
    assert.deepEqual(backend.ids, ["first"]);
  });

  it("a second backend without a limit takes the overflow: nobody waits, nobody is refused", async () => {
    const [small, big] = await Promise.all([holdingBackend(), holdingBackend()]);
    const lb = await startBalancer({
      timeouts: { queue: "0s" },
      health_check: { interval: "1h" },
      discovery: { type: "static", backends: [{ address: small.server.address, max_connections: 1 }, { address: big.server.address }] },
    });
    const clients = await Promise.all(Array.from({ length: 6 }, (_, i) => client(lb.port, `c${i}`)));
    const replies = await Promise.all(clients.map((c) => c.served));
    assert.deepEqual(replies, clients.map((c) => `served ${c.id}`));
    assert.deepEqual([small.open, big.open], [1, 5]);
    assert.equal(small.peak, 1);
    assert.equal(await queueTimeouts(lb), 0);
  });
});

describe("backup backends", () => {
  const fastChecks = { interval: "200ms", timeout: "500ms", rise: 1, fall: 1 };
  const names = async (lb: BalancerProcess, n: number): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push((await request(lb.port)).trim());
    return out;
  };

  it("a backup takes connections only while every primary is down, and is left as soon as one is back", async () => {
    let [p1, p2] = await Promise.all([startNamedBackend("p1"), startNamedBackend("p2")]);
    const backup = await startNamedBackend("backup");
    const lb = await startBalancer({
      health_check: fastChecks,
      discovery: {
        type: "static",
        backends: [{ address: p1.address }, { address: backup.address, backup: true }, { address: p2.address }],
      },
    });
    assert.deepEqual((await backends(lb)).map((b) => b.backup), [false, true, false]);
    assert.deepEqual(new Set(await names(lb, 6)), new Set(["p1", "p2"]));

    await p1.close();
    await waitFor(async () => (await statusOf(lb, p1)) === "down", 3000, "p1 down");
    assert.deepEqual(new Set(await names(lb, 4)), new Set(["p2"]), "one primary left: the backup stays idle");

    await p2.close();
    await waitFor(async () => (await statusOf(lb, p2)) === "down", 3000, "p2 down");
    assert.deepEqual(await names(lb, 4), ["backup", "backup", "backup", "backup"]);

    p1 = await startNamedBackend("p1", p1.port);
    await waitFor(async () => (await statusOf(lb, p1)) === "up", 3000, "p1 up again");
    await waitFor(async () => (await names(lb, 1))[0] === "p1", 1000, "connections to p1 again");
    assert.deepEqual(await names(lb, 4), ["p1", "p1", "p1", "p1"]);

    p2 = await startNamedBackend("p2", p2.port);
    await waitFor(async () => (await statusOf(lb, p2)) === "up", 3000, "p2 up again");
    await waitFor(async () => (await names(lb, 1))[0] === "p2", 1000, "connections to p2 again");
    assert.deepEqual(new Set(await names(lb, 6)), new Set(["p1", "p2"]));
  });

  it("POST /backends with backup: true adds a backup", async () => {
    const primary = await startNamedBackend("primary");
    const backup = await startNamedBackend("backup");
    const lb = await startBalancer({ health_check: fastChecks, discovery: { type: "static", backends: [{ address: primary.address }] } });
    const res = await fetch(`${lb.api}/backends`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ address: backup.address, backup: true }),
    });
    assert.equal(res.status, 201);
    assert.equal(((await res.json()) as BackendJson).backup, true);
    assert.equal((await backends(lb)).find((b) => b.address === backup.address)?.backup, true);
    assert.deepEqual(await names(lb, 4), ["primary", "primary", "primary", "primary"]);

    await primary.close();
    await waitFor(async () => (await statusOf(lb, primary)) === "down", 3000, "the primary down");
    assert.deepEqual(await names(lb, 3), ["backup", "backup", "backup"]);
  });
});
