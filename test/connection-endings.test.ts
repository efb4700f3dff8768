// End-to-end: however a proxied connection ends, within a second both of its sockets
// are closed the right way (a reset passed on as a reset), the backend's count is back
// down, the balancer holds no descriptor for it, and its cause is counted once.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { afterEach, describe, it } from "node:test";
import {
  cleanup,
  refusedPort,
  roundTrip,
  startBalancer,
  startServer,
  unansweredPort,
  waitFor,
  type BalancerProcess,
} from "./harness.ts";
import { accessLines, type AccessLine } from "./observe.ts";

afterEach(cleanup);

/** How a socket ended, as its owner saw it. */
class Ending {
  fin = false;
  rst = false;
  closedAt = 0;
  readonly socket: net.Socket;
  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.resume(); // read to the end, or no FIN is ever seen
    socket.on("end", () => {
      this.fin = true;
      socket.end(); // like most peers: done once the other side is
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNRESET" || err.code === "EPIPE") this.rst = true;
    });
    socket.on("close", () => (this.closedAt = performance.now()));
  }
  get closed(): boolean {
    return this.closedAt > 0;
  }
  /** "fin", "rst" or "open". */
  get kind(): string {
    return this.rst ? "rst" : this.closed ? "fin" : "open";
  }
}

/** A backend whose connections are tracked; `behave` runs on each. */
async function trackedBackend(behave: (s: net.Socket) => void = (s) => s.pipe(s)) {
  const endings: Ending[] = [];
  const server = await startServer((socket) => {
    endings.push(new Ending(socket));
    behave(socket);
  });
  return { server, endings };
}

function openClient(port: number): Promise<Ending> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const ending = new Ending(socket);
    socket.once("connect", () => resolve(ending));
    socket.once("error", reject);
  });
}

function descriptors(lb: BalancerProcess): number {
  return readdirSync(`/proc/${lb.proc.pid}/fd`).length;
}

/** GET on the API over a connection that is closed after, so it holds no descriptor. */
function apiGet<T>(lb: BalancerProcess, urlPath: string): Promise<T> {
  return new Promise((resolve, reject) => {
    http
      .get(`${lb.api}${urlPath}`, { agent: false, headers: { connection: "close" } }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve(JSON.parse(body) as T));
      })
      .on("error", reject);
  });
}


/**
 * The access-log lines of the client whose local port is `port`, once the balancer has
 * stopped: it writes out every line on the way out, so a second line cannot be missed.
 */
async function finalLinesOf(lb: BalancerProcess, port: number): Promise<AccessLine[]> {
  lb.signal("SIGTERM");
  assert.equal((await lb.exited).code, 0);
  return accessLines(lb).filter((l) => l.client === `127.0.0.1:${port}`);
}

function balancerFor(workers: number, backends: string[], extra: Record<string, unknown> = {}) {
  return startBalancer({
    workers,
    retries: 0,
    timeouts: { connect: "500ms", idle: "1s", shutdown: "500ms" },
    // Probes open sockets of their own: keep them out of the descriptor counts.
    health_check: { interval: "1h", timeout: "1s" },
    access_log: { enabled: true, path: "access.log" },
    discovery: { type: "static", backends: backends.map((address) => ({ address })) },
    ...extra,
  });
}

interface Row {
  name: string;
  termination: string;
  /**
   * How the client and the backend saw the end: "self" for the side that ended it,
   * "none" when no backend connection was made.
   */
  client: "fin" | "rst" | "self";
  backend: "fin" | "rst" | "none" | "self";
  backendBehaviour?: (s: net.Socket) => void;
  /** The access line's bytes_in and bytes_out; none either way when absent. */
  bytes?: [number, number];
  /** No dial was made at all (the line's backend is "", attempts 0). */
  undialled?: boolean;
  /** Backends that are not tracked servers; null for none at all. */
  backendAddress?: () => Promise<string | null>;
  extra?: Record<string, unknown>;
  /** Does what ends the connection; resolves with the moment it did. */
  act(client: Ending, backend: () => Ending | undefined): Promise<number>;
  /** The connection to check is not the first one made (max_connections). */
  lb?: (lb: BalancerProcess) => Promise<void>;
}

const at = () => performance.now();
const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

const rows: Row[] = [
  {
    name: "client FIN",
    termination: "client_fin",
    client: "fin",
    backend: "fin",
    bytes: [3, 3], // "bye", echoed
    act: async (client, backend) => {
      await waitFor(backend, 2000, "the backend connection");
      client.socket.end("bye");
      return at();
    },
  },
  {
    name: "client RST",
    termination: "client_rst",
    client: "self",
    backend: "rst",
    bytes: [1, 1], // the echo below
    act: async (client, backend) => {
      await waitFor(backend, 2000, "the backend connection");
      // The backend having accepted does not mean the balancer has seen its dial
      // complete (a reset before that is client_gone, the dial abandoned): an echo does.
      await roundTrip(client.socket);
      client.socket.resetAndDestroy();
      return at();
    },
  },
  {
    name: "client RST during the dial",
    termination: "client_gone",
    client: "self",
    backend: "none",
    backendAddress: async () => `127.0.0.1:${await unansweredPort()}`,
    extra: { timeouts: { connect: "5s", idle: "1s", shutdown: "500ms" } },
    act: async (client) => {
      await settle(200);
      client.socket.resetAndDestroy();
      return at();
    },
  },
  {
    name: "client FIN during the dial (half-close: the dial goes on to its timeout)",
    termination: "connect_timeout",
    client: "fin",
    backend: "none",
    backendAddress: async () => `127.0.0.1:${await unansweredPort()}`,
    bytes: [11, 0], // read from the client (bytes_in, like HAProxy's bytes_uploaded), never delivered
    act: async (client) => {
      client.socket.end("early bytes");
      await settle(500); // the connect timeout
      return at();
    },
  },
  {
    name: "backend FIN",
    termination: "backend_fin",
    client: "fin",
    backend: "fin",
    backendBehaviour: (s) => setTimeout(() => s.end("bye\n"), 100),
    bytes: [0, 4],
    act: async (client) => {
      await new Promise((r) => client.socket.once("end", r));
      const t = at();
      client.socket.end();
      return t;
    },
  },
  {
    name: "backend RST",
    termination: "backend_rst",
    client: "rst",
    backend: "self",
    backendBehaviour: (s) => setTimeout(() => s.resetAndDestroy(), 100),
    act: async (_client, backend) => {
      await waitFor(() => backend()?.closed, 2000, "the backend to reset");
      return at();
    },
  },
  {
    name: "backend refuses",
    termination: "connect_refused",
    client: "fin",
    backend: "none",
    backendAddress: async () => `127.0.0.1:${await refusedPort()}`,
    act: async () => at(),
  },
  {
    name: "backend never answers (connect timeout)",
    termination: "connect_timeout",
    client: "fin",
    backend: "none",
    backendAddress: async () => `127.0.0.1:${await unansweredPort()}`,
    act: async () => {
      await settle(500);
      return at();
    },
  },
  {
    name: "idle timeout",
    termination: "idle_timeout",
    client: "fin",
    backend: "fin",
    act: async () => {
      await settle(1125); // idle_timeout and one sweep: the latest it may close
      return at();
    },
  },
  {
    name: "no backend at all",
    termination: "no_backend",
    client: "fin",
    backend: "none",
    undialled: true,
    backendAddress: async () => null,
    act: async () => at(),
  },
  {
    name: "max_connections refusal",
    termination: "limit",
    client: "fin",
    backend: "none",
    undialled: true,
    extra: { max_connections: 1 },
    lb: async (lb) => {
      const holder = await openClient(lb.port); // holds the only place
      await roundTrip(holder.socket); // its backend connection made, before the count of them is taken
      await waitFor(async () => (await apiGet<Array<{ active_connections: number }>>(lb, "/backends"))[0]!.active_connections === 1, 3000);
    },
    act: async () => at(),
  },
];

for (const workers of [1, 2]) {
  describe(`connection endings, workers: ${workers}`, () => {
    for (const row of rows) {
      it(row.name, async () => {
        const tracked = await trackedBackend(row.backendBehaviour);
        const address = row.backendAddress ? await row.backendAddress() : tracked.server.address;
        const lb = await balancerFor(workers, address === null ? [] : [address], row.extra);
        await settle(200); // the first health probes are done
        const baseline = descriptors(lb);
        await row.lb?.(lb);
        const before = tracked.endings.length;
        const client = await openClient(lb.port);
        const clientPort = client.socket.localPort!;
        const backend = () => tracked.endings[before];
        const endedAt = await row.act(client, backend);

        await waitFor(() => client.closed, 1000 + Math.max(0, endedAt - at()), "the client socket to close");
        assert.ok(client.closedAt - endedAt < 1000, `client closed ${Math.round(client.closedAt - endedAt)} ms after the end`);
        if (row.client !== "self") assert.equal(client.kind, row.client, "how the client saw the end");
        if (row.backend === "none") {
          assert.equal(tracked.endings.length, before, "no backend connection was made");
        } else {
          const b = await waitFor(backend, 1000, "the backend connection");
          await waitFor(() => b.closed, 1000, "the backend socket to close");
          assert.ok(b.closedAt - endedAt < 1000, `backend closed ${Math.round(b.closedAt - endedAt)} ms after the end`);
          if (row.backend !== "self") assert.equal(b.kind, row.backend, "how the backend saw the end");
        }

        if (row.name !== "max_connections refusal") {
          await waitFor(() => descriptors(lb) <= baseline, 1000, `descriptors back to ${baseline}`);
          const list = await apiGet<Array<{ active_connections: number }>>(lb, "/backends");
          for (const info of list) assert.equal(info.active_connections, 0, "active_connections back to 0");
        }

        const lines = await finalLinesOf(lb, clientPort);
        assert.equal(lines.length, 1, `one access-log line: ${JSON.stringify(lines)}`);
        const line = lines[0]!;
        assert.equal(line.termination, row.termination);
        assert.deepEqual([line.bytes_in, line.bytes_out], row.bytes ?? [0, 0], "bytes in and out");
        assert.equal(line.backend, row.undialled ? "" : address, "the backend dialled");
        assert.equal(line.attempts, row.undialled ? 0 : 1, "attempts");
        assert.ok(Number.isFinite(line.duration_ms) && line.duration_ms >= 0, `duration_ms ${line.duration_ms}`);
        if (row.backend === "none") assert.equal(line.connect_ms, null, "no dial connected");
        else assert.ok(line.connect_ms !== null && line.connect_ms >= 0 && line.connect_ms <= line.duration_ms, `connect_ms ${line.connect_ms} within duration_ms ${line.duration_ms}`);
      });
    }

    it("shutdown deadline: closes what is still open, counted under shutdown", async () => {
      const tracked = await trackedBackend();
      const lb = await balancerFor(workers, [tracked.server.address], { timeouts: { connect: "1s", idle: "0s", shutdown: "300ms" } });
      await settle(200); // the first health probes are done
      const before = tracked.endings.length;
      const client = await openClient(lb.port);
      const clientPort = client.socket.localPort!;
      // Not only in the listener's backlog, where a connection is reset when the listener closes.
      let echoed = false;
      void roundTrip(client.socket).then(() => (echoed = true));
      await waitFor(() => echoed, 2000, "the echo through the balancer");
      const b = tracked.endings[before]!;
      lb.signal("SIGTERM");
      const signalled = at();
      await waitFor(() => client.closed && b.closed, 1300, "both sockets to close at the deadline");
      assert.equal(client.kind, "fin");
      assert.equal(b.kind, "fin");
      assert.ok(client.closedAt - signalled < 1300);
      assert.equal((await lb.exited).code, 0);
      const lines = accessLines(lb).filter((l) => l.client === `127.0.0.1:${clientPort}`);
      assert.deepEqual(lines.map((l) => l.termination), ["shutdown"]);
    });
  });
}

describe("connection endings", () => {
  it("a client reset closes the backend connection (40 clients)", async () => {
    const tracked = await trackedBackend();
    const lb = await balancerFor(1, [tracked.server.address]);
    const clients = await Promise.all(Array.from({ length: 40 }, () => openClient(lb.port)));
    await waitFor(() => tracked.server.open() === 40, 5000, "40 backend connections");
    for (const c of clients) c.socket.resetAndDestroy();
    await waitFor(() => tracked.server.open() === 0, 3000, "the backend connections to close");
  });

  it("bytes a client sends during the dial reach the backend a retry connects to", async () => {
    const tracked = await trackedBackend();
    const refused = `127.0.0.1:${await refusedPort()}`;
    const lb = await balancerFor(1, [refused, tracked.server.address], { retries: 1 });
    for (let i = 0; i < 4; i++) {
      const reply = await new Promise<string>((resolve, reject) => {
        const socket = net.connect({ port: lb.port, host: "127.0.0.1", allowHalfOpen: true });
        let got = "";
        socket.on("data", (d) => (got += d));
        socket.on("end", () => socket.end());
        socket.on("close", () => resolve(got));
        socket.on("error", reject);
        socket.end(`hello ${i}`); // queued before the connect: in flight during the dial
      });
      assert.equal(reply, `hello ${i}`);
    }
    await waitFor(() => accessLines(lb).length === 4, 3000, "four access-log lines");
    const lines = accessLines(lb);
    assert.deepEqual(lines.map((l) => l.termination), ["client_fin", "client_fin", "client_fin", "client_fin"]);
    // Round robin sends every other client to the refused backend first: two attempts.
    assert.deepEqual(lines.map((l) => l.attempts).sort(), [1, 1, 2, 2]);
    for (const l of lines) assert.equal(l.backend, tracked.server.address, "the line names the backend that served");
  });
});
