import net from "node:net";
import type { Logger } from "pino";
import { unmapped } from "../balance/client-address.ts";
import type { Algorithm, ListenProxyProtocol } from "../config/schema.ts";
import type { AccessLog } from "../log/access-log.ts";
import { RateLimitedLog } from "../log/rate-limit.ts";
import { formatHostPort, type HostPort } from "../pool/address.ts";
import { GLOBAL_ACTIVE, type CounterView } from "../pool/counters.ts";
import type { BackendView, ProxyProtocol, Snapshot } from "../pool/pool.ts";
import { BackendChooser } from "./backend-chooser.ts";
import { Connection, type ConnectionHost } from "./connection.ts";
import { Deadlines } from "./deadlines.ts";
import { IDLE_SWEEPS, OpenConnections } from "./open-connections.ts";
import { ProxyHeaders } from "./proxy-headers.ts";
import { handlePath } from "./handle-side.ts";
import { handleListener, serverListener, type AcceptSink, type Listener } from "./listener.ts";
import { acceptedTcp, loadHandleBindings, socketForHandle, type AcceptedHandle, type HandleBindings } from "./node-internals.ts";
import { Relay } from "./relay.ts";
import { socketPath } from "./socket-path.ts";
import { DESCRIPTORS, LIMIT, NO_BACKEND, PROXY_HEADER, SHUTDOWN, TERMINATIONS } from "./termination.ts";

/** What a reload may change in a running data plane (configure()). */
export interface PlaneSettings {
  algorithm: Algorithm;
  /** Other backends tried after a failed dial, per client connection. */
  retries: number;
  /** 0 = unlimited. Counted across all data-plane threads. */
  maxConnections: number;
  connectTimeoutMs: number;
  /** 0 = no idle timeout. */
  idleTimeoutMs: number;
  /** How long a client may wait for room when every backend is at its max_connections; 0 = not at all. */
  queueTimeoutMs: number;
  /** Header sent to backends that do not set their own. */
  proxyProtocol: ProxyProtocol;
  listenProxyProtocol: ListenProxyProtocol;
}

export interface DataPlaneOptions extends PlaneSettings {
  listen: HostPort;
  /** Ceiling from the file-descriptor limit (see descriptors.ts); Infinity for none. */
  descriptorCap: number;
  /**
   * "handles": both sides of a connection on bare libuv handles (handle-side.ts);
   * "sockets": on net.Socket (socket-path.ts). Resolved from `data_path` at start.
   */
  dataPath: DataPath;
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
  private settings: PlaneSettings;
  private readonly log: Logger;
  private readonly warn: RateLimitedLog;
  private listener: Listener;
  /** The listener a reload's addListener() replaced, until closeOldListener(). */
  private previousListener: Listener | null = null;
  private readonly sink: AcceptSink;
  /** The libuv handle bindings, for the handles path (null on the sockets path). */
  private readonly bindings: HandleBindings | null = null;
  private readonly counters: CounterView;
  private accessLog: AccessLog | null;
  /** The client's address is looked up per connection only when something needs it. */
  private wantsClientAddress = false;
  /** The lower of max_connections and the descriptor ceiling. */
  private connectionCap = Infinity;
  private capReason = "";
  /** The cause a refusal at connectionCap is counted under: LIMIT, or DESCRIPTORS when the descriptor ceiling is the lower. */
  private capCause = LIMIT;
  private readonly chooser: BackendChooser;
  private readonly open = new OpenConnections();
  private drained: (() => void) | null = null;
  private idleSweeper: NodeJS.Timeout | null = null;
  private readonly bytesFlusher: NodeJS.Timeout;
  private readonly dials: Deadlines;
  private readonly headers: ProxyHeaders;
  /** What each connection may ask of this data plane. */
  private readonly host: ConnectionHost;

  constructor(opts: DataPlaneOptions) {
    this.opts = opts;
    this.settings = opts;
    this.log = opts.logger;
    this.warn = new RateLimitedLog(opts.logger);
    this.counters = opts.counters;
    this.accessLog = opts.accessLog ?? null;
    this.chooser = new BackendChooser({
      algorithm: opts.algorithm,
      queueTimeoutMs: opts.queueTimeoutMs,
      counters: opts.counters,
      warn: this.warn,
      threaded: opts.threaded === true,
    });
    this.dials = new Deadlines(opts.connectTimeoutMs, (conn) => conn.dialTimedOut());
    this.headers = new ProxyHeaders(opts.listenProxyProtocol, opts.proxyProtocol, this.warn, (conn) => conn.close(PROXY_HEADER));
    const plane = this;
    this.host = {
      get retries() {
        return plane.settings.retries;
      },
      acquire: (conn) => this.chooser.acquire(conn),
      connect: opts.dataPath === "handles" ? handlePath.connect : socketPath.connect,
      release: (view, bytesIn, bytesOut) => this.chooser.release(view, bytesIn, bytesOut),
      connected: (conn) => this.counters.connectTime(conn.view!.slot, (conn.connectedAt - conn.dialStartedAt) / 1000),
      dialStarted: (conn) => this.dials.add(conn),
      dialFailed: (view, reason) => this.dialFailed(view, reason),
      proxyHeader: (conn) => this.headers.build(conn),
      headerStarted: (conn) => this.headers.started(conn),
      readHeader: (conn, bytes) => this.headers.read(conn, bytes),
      finished: (conn) => this.finished(conn),
      now: () => performance.now(),
    };
    this.sink = {
      handle: (handle: AcceptedHandle) => this.acceptHandle(handle),
      socket: (socket: net.Socket) => this.acceptSocket(socket, new Relay(), true),
      // accept() failures, EMFILE/ENFILE above all, must not stop the listener: libuv
      // keeps accepting once descriptors free up.
      failed: (err: NodeJS.ErrnoException) => this.warn.warn(`accept:${err.code}`, { code: err.code, err: err.message }, "accept failed"),
    };
    if (opts.dataPath === "handles") {
      const bindings = loadHandleBindings();
      // The caller chose "handles" after the same check on the main thread.
      if (typeof bindings === "string") throw new Error(`data path on libuv handles unavailable: ${bindings}`);
      handlePath.use(bindings);
      this.bindings = bindings;
    }
    this.listener = this.newListener(opts.listen);
    this.bytesFlusher = setInterval(() => this.open.flushBytes(this.counters), BYTES_FLUSH_MS);
    this.bytesFlusher.unref();
    this.applySettings(opts);
  }

  /**
   * Takes a reloaded config's settings. Open connections keep what they have (their
   * deadlines, their backend); new ones get the new settings. An algorithm change
   * rebuilds the picker from the current snapshot.
   */
  configure(settings: PlaneSettings, accessLog?: AccessLog | null): void {
    this.settings = settings;
    if (accessLog !== undefined) {
      void this.accessLog?.finish();
      this.accessLog = accessLog;
    }
    this.chooser.setAlgorithm(settings.algorithm);
    this.applySettings(settings);
  }

  private applySettings(settings: PlaneSettings): void {
    const configured = settings.maxConnections > 0 ? settings.maxConnections : Infinity;
    this.connectionCap = Math.min(configured, this.opts.descriptorCap);
    const byConfig = configured <= this.opts.descriptorCap;
    this.capReason = byConfig ? "max_connections reached" : "file descriptor limit reached";
    this.capCause = byConfig ? LIMIT : DESCRIPTORS;
    this.dials.setTimeout(settings.connectTimeoutMs);
    this.chooser.queue.setTimeout(settings.queueTimeoutMs);
    this.headers.configure(settings.listenProxyProtocol, settings.proxyProtocol);
    this.updateWantsClientAddress();
    if (this.idleSweeper !== null) clearInterval(this.idleSweeper);
    this.idleSweeper = null;
    if (settings.idleTimeoutMs > 0) {
      this.idleSweeper = setInterval(() => this.open.sweepIdle(), Math.max(1, Math.floor(settings.idleTimeoutMs / IDLE_SWEEPS)));
      this.idleSweeper.unref();
    }
  }

  private updateWantsClientAddress(): void {
    this.wantsClientAddress = this.chooser.needsClientAddress || this.accessLog !== null || this.headers.needsClientAddress;
  }

  /** Installs a new pool snapshot; the next connection picks from it. */
  setSnapshot(snapshot: Snapshot): void {
    this.chooser.setSnapshot(snapshot);
    this.headers.setBackends(snapshot.routable);
    this.updateWantsClientAddress();
  }

  /** setSnapshot takes effect at once on this thread. */
  snapshotApplied(): Promise<void> {
    return Promise.resolve();
  }

  /** Starts listening; resolves with the bound address. */
  listen(): Promise<net.AddressInfo> {
    return this.listener.listen();
  }

  /**
   * Listens on `listen` as well (a reload moved it); the old listener keeps accepting
   * until closeOldListener(), so there is no moment without one. Rejects, with the old
   * listener untouched, when the new address cannot be bound.
   */
  async addListener(listen: HostPort): Promise<net.AddressInfo> {
    const next = this.newListener(listen);
    const address = await next.listen();
    this.previousListener = this.listener;
    this.listener = next;
    return address;
  }

  /** Closes the listener addListener() replaced. */
  closeOldListener(): void {
    this.previousListener?.close();
    this.previousListener = null;
  }

  /** Undoes addListener() (the reload failed elsewhere): the old listener stays. */
  dropNewListener(): void {
    if (this.previousListener === null) return;
    this.listener.close();
    this.listener = this.previousListener;
    this.previousListener = null;
  }

  private newListener(listen: HostPort): Listener {
    const reusePort = this.opts.threaded === true;
    if (this.bindings !== null) return handleListener(this.bindings, listen, reusePort, this.sink);
    return serverListener(listen, reusePort, this.sink);
  }

  get activeConnections(): number {
    return this.open.count;
  }

  /** Stops accepting new clients; open connections carry on. */
  stopAccepting(): void {
    this.listener.close();
    this.closeOldListener();
  }

  /**
   * Waits for open connections to finish, up to `timeoutMs`, then closes the rest.
   * Resolves with how many had to be closed. Leaves no timer armed.
   */
  async drain(timeoutMs: number): Promise<number> {
    this.stopAccepting();
    if (this.open.count > 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.drained = resolve;
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
      this.drained = null;
    }
    const forced = this.open.count;
    this.open.closeAll(SHUTDOWN);
    if (this.idleSweeper !== null) clearInterval(this.idleSweeper);
    clearInterval(this.bytesFlusher);
    this.dials.stop();
    this.chooser.queue.stop();
    this.headers.stop();
    await this.accessLog?.finish();
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
        if (this.headers.needsLocalAddress) {
          const local = client.local();
          conn.localIp = unmapped(local.address);
          conn.localPort = local.port ?? 0;
        }
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
    if (this.wantsClientAddress) {
      noteClient(conn, client.remoteAddress, client.remotePort);
      if (this.headers.needsLocalAddress) {
        conn.localIp = unmapped(client.localAddress);
        conn.localPort = client.localPort ?? 0;
      }
    }
    this.admit(conn);
  }

  /** Counts a new connection in, refuses it past the cap, else starts it. */
  private admit(conn: Connection): void {
    this.counters.accepted();
    this.open.add(conn);
    // Atomics.add returns the count before this connection: refusing at or past the cap.
    if (Atomics.add(this.counters.global, GLOBAL_ACTIVE, 1) >= this.connectionCap) {
      this.warn.warn("limit", { limit: this.connectionCap }, `connection refused: ${this.capReason}`);
      conn.close(this.capCause);
      return;
    }
    if (!this.headers.accepting) {
      conn.start();
    } else if (this.headers.trusted(conn.clientIp)) {
      conn.startAfterHeader();
    } else {
      this.warn.warn("proxy_untrusted", { client: conn.clientIp }, "connection refused: PROXY header from an untrusted source");
      conn.close(PROXY_HEADER);
    }
  }

  // ---- account ----------------------------------------------------------------------

  private dialFailed(view: BackendView, reason: string): void {
    this.counters.failed(view.slot);
    this.warn.warn(`dial:${view.key}`, { backend: view.key, reason }, "backend dial failed");
    this.opts.onDialFailure?.(view, reason);
  }

  /** The connection is closed: off the list, its cause counted and logged. */
  private finished(conn: Connection): void {
    this.open.remove(conn);
    Atomics.sub(this.counters.global, GLOBAL_ACTIVE, 1);
    this.counters.ended(conn.cause);
    this.counters.connectionTime((performance.now() - conn.acceptedAt) / 1000);
    if (conn.cause === DESCRIPTORS && conn.attempts > 0) this.warn.warn("emfile", {}, "connection closed: out of file descriptors");
    if (this.accessLog !== null) this.logAccess(this.accessLog, conn);
    else if (conn.cause !== NO_BACKEND && conn.cause !== LIMIT && conn.cause !== DESCRIPTORS && this.log.isLevelEnabled("debug")) {
      this.log.debug({ backend: conn.view?.key, bytes_in: conn.bytesIn, bytes_out: conn.bytesOut, attempts: conn.attempts, termination: TERMINATIONS[conn.cause] }, "connection closed");
    }
    if (this.open.count === 0 && this.drained) this.drained();
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
}

/** Records the client's address, an IPv4-mapped one as its IPv4 (see unmapped). */
function noteClient(conn: Connection, ip = "", port = 0): void {
  conn.clientIp = unmapped(ip);
  conn.clientPort = port;
}

/** Milliseconds to a tenth. */
function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
