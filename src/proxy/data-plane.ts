import net from "node:net";
import type { Logger } from "pino";
import type { Picker, PickerContext } from "../balance/picker.ts";
import { createPicker } from "../balance/registry.ts";
import type { Algorithm } from "../config/schema.ts";
import type { AccessLog } from "../log/access-log.ts";
import { RateLimitedLog } from "../log/rate-limit.ts";
import { formatHostPort, type HostPort } from "../pool/address.ts";
import { GLOBAL_ACTIVE, GLOBAL_RR_TICKET, type CounterView } from "../pool/counters.ts";
import type { BackendView, Snapshot } from "../pool/pool.ts";
import { Connection, DIALLING, type ConnectionHost } from "./connection.ts";
import { DialDeadlines } from "./dial-deadlines.ts";
import { handlePath } from "./handle-side.ts";
import { handleListener, serverListener, type Listener } from "./listener.ts";
import { acceptedTcp, loadHandleBindings, socketForHandle, type AcceptedHandle } from "./node-internals.ts";
import { Relay } from "./relay.ts";
import { socketPath } from "./socket-path.ts";
import { DESCRIPTORS, IDLE_TIMEOUT, LIMIT, NO_BACKEND, SHUTDOWN, TERMINATIONS, type Termination } from "./termination.ts";

export interface DataPlaneOptions {
  listen: HostPort;
  algorithm: Algorithm;
  /** Other backends tried after a failed dial, per client connection. */
  retries: number;
  /** 0 = unlimited. Counted across all data-plane threads. */
  maxConnections: number;
  /** Ceiling from the file-descriptor limit (see descriptors.ts); Infinity for none. */
  descriptorCap: number;
  connectTimeoutMs: number;
  /**
   * "handles": both sides of a connection on bare libuv handles (handle-side.ts);
   * "sockets": on net.Socket (socket-path.ts). Resolved from `data_path` at start.
   */
  dataPath: DataPath;
  /** 0 = no idle timeout. */
  idleTimeoutMs: number;
  counters: CounterView;
  logger: Logger;
  /** One line per finished connection; null when off. */
  accessLog?: AccessLog | null;
  /**
   * One of several data-plane threads: the listener shares the port with the others'
   * (reusePort, the kernel spreads connections) and the others change the counts too.
   */
  threaded?: boolean;
  /** Passive health: a dial to `backend` failed for `reason`. */
  onDialFailure?: (backend: BackendView, reason: string) => void;
}

export type DataPath = "handles" | "sockets";

/** Picks a retry may make while looking for a backend not tried yet. */
const MAX_RETRY_PICKS = 16;

/**
 * Idle connections are found by a sweep every idle_timeout / IDLE_SWEEPS rather than a
 * timer per connection, which Node would re-arm on every read and write (that cost about
 * 5% of the CPU per connection and per keep-alive request). A connection closes after
 * IDLE_SWEEPS sweeps in a row without a byte either way: between 1 and 1 + 1/IDLE_SWEEPS
 * times idle_timeout after its last byte.
 */
const IDLE_SWEEPS = 8;

/**
 * Bytes of open connections are added to their backend's counters this often, so that
 * long-lived connections show in the metrics before they end.
 */
const BYTES_FLUSH_MS = 2000;

/**
 * Accepts clients on one listener and proxies each to a backend. The data path, in the
 * order a connection meets it: accept (here) → pick (acquire) → dial with retry, pipe and
 * close (connection.ts) → account (release, finished). It only reads pool snapshots;
 * health, discovery and the API live elsewhere.
 */
export class DataPlane {
  private readonly opts: DataPlaneOptions;
  private readonly log: Logger;
  private readonly warn: RateLimitedLog;
  private readonly listener: Listener;
  private readonly counters: CounterView;
  private readonly accessLog: AccessLog | null;
  /** The client's address is looked up per connection only for ip_hash and the access log. */
  private readonly wantsClientAddress: boolean;
  /** The lower of max_connections and the descriptor ceiling. */
  private readonly connectionCap: number;
  private readonly capReason: string;
  private picker: Picker;
  private readonly pickerContext: PickerContext;
  /** Open connections: an intrusive list, O(1) add and remove, no allocation. */
  private head: Connection | null = null;
  private openCount = 0;
  private drained: (() => void) | null = null;
  private readonly idleSweeper: NodeJS.Timeout | null = null;
  private readonly bytesFlusher: NodeJS.Timeout;
  private readonly deadlines: DialDeadlines;
  /** What each connection may ask of this data plane. */
  private readonly host: ConnectionHost;

  constructor(opts: DataPlaneOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.warn = new RateLimitedLog(opts.logger);
    this.counters = opts.counters;
    this.accessLog = opts.accessLog ?? null;
    this.wantsClientAddress = opts.algorithm === "ip_hash" || this.accessLog !== null;
    const configured = opts.maxConnections > 0 ? opts.maxConnections : Infinity;
    this.connectionCap = Math.min(configured, opts.descriptorCap);
    this.capReason = configured <= opts.descriptorCap ? "max_connections reached" : "file descriptor limit reached";
    this.pickerContext = {
      active: opts.counters.active,
      countsChangedElsewhere: opts.threaded === true,
      tickets: opts.counters.global,
      ticketIndex: GLOBAL_RR_TICKET,
    };
    this.picker = createPicker(opts.algorithm, [], this.pickerContext);
    this.deadlines = new DialDeadlines(opts.connectTimeoutMs);
    this.host = {
      retries: opts.retries,
      acquire: (conn) => this.acquire(conn),
      connect: opts.dataPath === "handles" ? handlePath.connect : socketPath.connect,
      release: (view, bytesIn, bytesOut) => this.release(view, bytesIn, bytesOut),
      // The dial started one connect timeout before its deadline.
      connected: (conn) => this.counters.connectTime(conn.view!.slot, (conn.connectedAt - conn.dialDeadline + opts.connectTimeoutMs) / 1000),
      dialStarted: (conn) => this.deadlines.add(conn),
      dialEnded: (conn) => this.deadlines.remove(conn),
      dialFailed: (view, reason) => this.dialFailed(view, reason),
      finished: (conn) => this.finished(conn),
      now: () => performance.now(),
    };
    const sink = {
      handle: (handle: AcceptedHandle) => this.acceptHandle(handle),
      socket: (socket: net.Socket) => this.acceptSocket(socket, new Relay(), true),
      // accept() failures, EMFILE/ENFILE above all, must not stop the listener: libuv
      // keeps accepting once descriptors free up.
      failed: (err: NodeJS.ErrnoException) => this.warn.warn(`accept:${err.code}`, { code: err.code, err: err.message }, "accept failed"),
    };
    const reusePort = opts.threaded === true;
    if (opts.dataPath === "handles") {
      const bindings = loadHandleBindings();
      // The caller chose "handles" after the same check on the main thread.
      if (typeof bindings === "string") throw new Error(`data path on libuv handles unavailable: ${bindings}`);
      handlePath.use(bindings);
      this.listener = handleListener(bindings, opts.listen, reusePort, sink);
    } else {
      this.listener = serverListener(opts.listen, reusePort, sink);
    }
    this.bytesFlusher = setInterval(() => this.flushBytes(), BYTES_FLUSH_MS);
    this.bytesFlusher.unref();
    if (opts.idleTimeoutMs > 0) {
      this.idleSweeper = setInterval(() => this.sweepIdle(), Math.max(1, Math.floor(opts.idleTimeoutMs / IDLE_SWEEPS)));
      this.idleSweeper.unref();
    }
  }

  /** Installs a new pool snapshot; the next connection picks from it. */
  setSnapshot(snapshot: Snapshot): void {
    this.picker = createPicker(this.opts.algorithm, snapshot.routable, this.pickerContext, this.picker);
  }

  /** setSnapshot takes effect at once on this thread. */
  snapshotApplied(): Promise<void> {
    return Promise.resolve();
  }

  /** Starts listening; resolves with the bound address. */
  listen(): Promise<net.AddressInfo> {
    return this.listener.listen();
  }

  get activeConnections(): number {
    return this.openCount;
  }

  /** Stops accepting new clients; open connections carry on. */
  stopAccepting(): void {
    this.listener.close();
  }

  /**
   * Waits for open connections to finish, up to `timeoutMs`, then closes the rest.
   * Resolves with how many had to be closed. Leaves no timer armed.
   */
  async drain(timeoutMs: number): Promise<number> {
    this.stopAccepting();
    if (this.openCount > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.drained = resolve;
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
      this.drained = null;
    }
    const forced = this.openCount;
    this.closeAll(SHUTDOWN);
    if (this.idleSweeper !== null) clearInterval(this.idleSweeper);
    clearInterval(this.bytesFlusher);
    this.deadlines.stop();
    this.accessLog?.flush();
    return forced;
  }

  // ---- accept ---------------------------------------------------------------------

  /** An accepted connection's bare handle (node-internals.ts). */
  private acceptHandle(handle: AcceptedHandle): void {
    const upstream = new Relay();
    if (this.opts.dataPath === "handles") {
      const conn = new Connection(this.host, upstream, new Relay());
      const client = handlePath.adoptClient(acceptedTcp(handle), conn, upstream);
      conn.client = client;
      if (this.wantsClientAddress) {
        const peer = client.peer();
        noteClient(conn, peer.address, peer.port);
      }
      this.admit(conn);
      return;
    }
    // The socket reads through the connection's upstream relay, made first.
    const client = socketForHandle(handle, upstream.readOptions());
    client.setNoDelay(true);
    this.acceptSocket(client, upstream, false);
  }

  private acceptSocket(client: net.Socket, upstream: Relay, streamPath: boolean): void {
    const conn = new Connection(this.host, upstream, new Relay());
    conn.client = client;
    socketPath.adoptClient(client, conn, streamPath);
    if (this.wantsClientAddress) noteClient(conn, client.remoteAddress, client.remotePort);
    this.admit(conn);
  }

  /** Counts a new connection in, refuses it past the cap, else starts it. */
  private admit(conn: Connection): void {
    this.counters.accepted();
    this.link(conn);
    // Atomics.add returns the count before this connection: refusing at or past the cap.
    if (Atomics.add(this.counters.global, GLOBAL_ACTIVE, 1) >= this.connectionCap) {
      this.warn.warn("limit", { limit: this.connectionCap }, `connection refused: ${this.capReason}`);
      conn.close(LIMIT);
      return;
    }
    conn.start();
  }

  // ---- pick ---------------------------------------------------------------------------

  /** The backend for conn's next attempt, counted from the dial on so least_connections sees it. */
  private acquire(conn: Connection): BackendView | undefined {
    const view = conn.attempt === 0 ? this.picker.pick(conn.clientIp, conn.picks++) : this.pickUntried(conn);
    if (view === undefined) {
      if (conn.attempt === 0) this.warn.warn("no_backend", {}, "connection closed: no healthy backend");
      return undefined;
    }
    this.counters.opened(view.slot);
    this.picker.connectionOpened?.(view.slot);
    return view;
  }

  /**
   * A retry goes to a backend this client has not tried yet. Concurrent clients move the
   * pickers on between our attempts, so the next pick may be one we already failed on:
   * pick again, a bounded number of times. Only failed dials get here.
   */
  private pickUntried(conn: Connection): BackendView | undefined {
    for (let i = 0; i < MAX_RETRY_PICKS; i++) {
      const view = this.picker.pick(conn.clientIp, conn.picks++);
      if (view === undefined) return undefined;
      if (view.slot !== conn.triedFirst && !conn.triedMore?.includes(view.slot)) return view;
    }
    return undefined;
  }

  // ---- account ----------------------------------------------------------------------

  private release(view: BackendView, bytesIn: number, bytesOut: number): void {
    this.counters.closed(view.slot, bytesIn, bytesOut);
    this.picker.connectionClosed?.(view.slot);
  }

  private dialFailed(view: BackendView, reason: string): void {
    this.counters.failed(view.slot);
    this.warn.warn(`dial:${view.key}`, { backend: view.key, reason }, "backend dial failed");
    this.opts.onDialFailure?.(view, reason);
  }

  /** The connection is closed: off the list, its cause counted and logged. */
  private finished(conn: Connection): void {
    this.unlink(conn);
    Atomics.sub(this.counters.global, GLOBAL_ACTIVE, 1);
    this.counters.ended(conn.cause);
    this.counters.connectionTime((performance.now() - conn.acceptedAt) / 1000);
    if (conn.cause === DESCRIPTORS) this.warn.warn("emfile", {}, "connection closed: out of file descriptors");
    if (this.accessLog !== null) this.logAccess(this.accessLog, conn);
    else if (conn.cause !== NO_BACKEND && conn.cause !== LIMIT && this.log.isLevelEnabled("debug")) {
      this.log.debug({ backend: conn.view?.key, bytes_in: conn.bytesIn, bytes_out: conn.bytesOut, attempts: conn.attempts, termination: TERMINATIONS[conn.cause] }, "connection closed");
    }
    if (this.openCount === 0 && this.drained) this.drained();
  }

  private logAccess(log: AccessLog, conn: Connection): void {
    log.write(
      formatHostPort(conn.clientIp, conn.clientPort),
      conn.view?.key ?? "",
      conn.bytesIn,
      conn.bytesOut,
      round(performance.now() - conn.acceptedAt),
      conn.connectedAt === 0 ? null : round(conn.connectedAt - conn.acceptedAt),
      conn.attempts,
      TERMINATIONS[conn.cause]!,
    );
  }

  // ---- the list of open connections -----------------------------------------------------

  private link(conn: Connection): void {
    conn.next = this.head;
    if (this.head) this.head.prev = conn;
    this.head = conn;
    this.openCount++;
  }

  private unlink(conn: Connection): void {
    if (conn.prev) conn.prev.next = conn.next;
    else this.head = conn.next;
    if (conn.next) conn.next.prev = conn.prev;
    conn.prev = conn.next = null;
    this.openCount--;
  }

  private closeAll(cause: Termination): void {
    for (let c = this.head, next: Connection | null; c !== null; c = next) {
      next = c.next; // close() takes c off the list
      c.close(cause);
    }
  }

  /** Counts the bytes open connections moved since the last flush (see BYTES_FLUSH_MS). */
  private flushBytes(): void {
    for (let c = this.head; c !== null; c = c.next) {
      if (c.phase === DIALLING) continue;
      const bytesIn = c.bytesIn - c.reportedIn;
      const bytesOut = c.bytesOut - c.reportedOut;
      if (bytesIn === 0 && bytesOut === 0) continue;
      this.counters.moved(c.view!.slot, bytesIn, bytesOut);
      c.reportedIn += bytesIn;
      c.reportedOut += bytesOut;
    }
  }

  /** Closes connections with no traffic either way for idle_timeout (see IDLE_SWEEPS). */
  private sweepIdle(): void {
    for (let c = this.head, next: Connection | null; c !== null; c = next) {
      next = c.next;
      if (c.phase === DIALLING) continue; // a dial has its own connect timeout
      if (c.upstream.active || c.downstream.active) {
        c.upstream.active = false;
        c.downstream.active = false;
        c.idleSweeps = 0;
      } else if (++c.idleSweeps >= IDLE_SWEEPS) {
        c.close(IDLE_TIMEOUT);
      }
    }
  }
}

/** Records the client's address; "::ffff:10.0.0.1" and "10.0.0.1" are the same client. */
function noteClient(conn: Connection, ip = "", port = 0): void {
  conn.clientIp = ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
  conn.clientPort = port;
}

/** Milliseconds to a tenth. */
function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
