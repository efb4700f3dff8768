import net from "node:net";
import type { Logger } from "pino";
import { createPicker, type Picker, type PickerContext } from "../balance/picker.ts";
import type { Algorithm } from "../config/schema.ts";
import { RateLimitedLog } from "../log/rate-limit.ts";
import type { HostPort } from "../pool/address.ts";
import { GLOBAL_ACTIVE, GLOBAL_RR_TICKET, type CounterView } from "../pool/counters.ts";
import type { BackendView, Snapshot } from "../pool/pool.ts";
import { interceptAccepts, Relay, socketForHandle, type AcceptedHandle } from "./relay.ts";
import { socketErrorReason } from "./socket-errors.ts";

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
  /** 0 = no idle timeout. */
  idleTimeoutMs: number;
  counters: CounterView;
  logger: Logger;
  /**
   * One of several data-plane threads: the listener shares the port with the others'
   * (reusePort, the kernel spreads connections) and the others change the counts too.
   */
  threaded?: boolean;
  /** Passive health: a dial to `backend` failed for `reason`. */
  onDialFailure?: (backend: BackendView, reason: string) => void;
}

/** Figures of this data plane that are not per backend. */
export interface DataPlaneStats {
  accepted: number;
  /** Refused because max_connections (or the descriptor ceiling) was reached. */
  refusedLimit: number;
  /** Closed at once because no backend was routable. */
  refusedNoBackend: number;
  /** Closed because every dial (first try and retries) failed. */
  dialsExhausted: number;
  /** Closed because the process ran out of file descriptors (EMFILE/ENFILE). */
  refusedNoDescriptors: number;
}

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

// The connection an event belongs to hangs off its sockets under this symbol, so the
// event handlers below are shared functions rather than closures made per connection.
const CONN = Symbol("gobalancer.connection");
type ProxiedSocket = net.Socket & { [CONN]: Connection };

/**
 * One client connection and, once dialled, its backend connection. Plain fields and one
 * relay per direction: these and two sockets are all a proxied connection costs.
 */
class Connection {
  readonly plane: DataPlane;
  client!: ProxiedSocket;
  /** Client to backend. The client reads through it unless accepts could not be intercepted (relay.ts). */
  readonly upstream = new Relay();
  /** Backend to client. */
  readonly downstream = new Relay();
  clientReadsInto = false;
  clientIp = "";
  backend: ProxiedSocket | null = null;
  view: BackendView | null = null;
  /** Failed dials so far; the retry budget is `retries`. */
  attempt = 0;
  /** Picks made so far; passed to the picker so each can differ (ip_hash alternatives). */
  picks = 0;
  /** Slots already dialled: the first in a field, any more in an array made on demand. */
  triedFirst = -1;
  triedMore: number[] | null = null;
  connected = false;
  /** Idle sweeps in a row that found no traffic either way. */
  idleSweeps = 0;
  /** The current attempt holds an active count on `view` that is not yet given back. */
  counted = false;
  done = false;
  clientClosed = false;
  backendClosed = true;
  /** Intrusive list of open connections: O(1) add and remove, no allocation. */
  prev: Connection | null = null;
  next: Connection | null = null;
  /** Intrusive list of dials in progress, oldest first, with this dial's deadline. */
  dialPrev: Connection | null = null;
  dialNext: Connection | null = null;
  dialling = false;
  dialDeadline = 0;

  constructor(plane: DataPlane) {
    this.plane = plane;
  }
}

/**
 * Accepts clients on one listener and proxies each to a backend:
 * accept → pick (from the current snapshot) → dial with retry → pipe → account.
 * It only reads pool snapshots; health, discovery and the API live elsewhere.
 */
export class DataPlane {
  readonly stats: DataPlaneStats = { accepted: 0, refusedLimit: 0, refusedNoBackend: 0, dialsExhausted: 0, refusedNoDescriptors: 0 };
  private readonly opts: DataPlaneOptions;
  private readonly log: Logger;
  private readonly warn: RateLimitedLog;
  private readonly server: net.Server;
  private readonly counters: CounterView;
  private readonly needsClientIp: boolean;
  /** The lower of max_connections and the descriptor ceiling. */
  private readonly connectionCap: number;
  private readonly capReason: string;
  private picker: Picker;
  private readonly pickerContext: PickerContext;
  private head: Connection | null = null;
  private openCount = 0;
  private accepting = false;
  private drained: (() => void) | null = null;
  private readonly idleSweeper: NodeJS.Timeout | null = null;
  /**
   * Dials in progress, oldest first. Every dial has the same connect timeout, so the
   * oldest expires first and one timer, armed for it, serves them all: no timer is made
   * or cancelled per connection.
   */
  private dialHead: Connection | null = null;
  private dialTail: Connection | null = null;
  private dialTimer: NodeJS.Timeout | null = null;

  constructor(opts: DataPlaneOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.warn = new RateLimitedLog(opts.logger);
    this.counters = opts.counters;
    this.needsClientIp = opts.algorithm === "ip_hash";
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
    // pauseOnConnect: read nothing from a client until its backend is connected, so
    // no client bytes are buffered here while dialling.
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    // The stream path, used only if accepts cannot be intercepted (see listen).
    this.server.on("connection", (socket) => this.accept(socket, new Connection(this)));
    this.server.on("error", (err: NodeJS.ErrnoException) => this.onServerError(err));
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
    const { host, port } = this.opts.listen;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => reject(listenError(this.opts.listen, err));
      this.server.once("error", onError);
      this.server.listen({ host: host || undefined, port, reusePort: this.opts.threaded === true, backlog: 1024 }, () => {
        this.server.off("error", onError);
        this.accepting = true;
        interceptAccepts(this.server, (handle) => this.acceptHandle(handle));
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  get activeConnections(): number {
    return this.openCount;
  }

  /** Stops accepting new clients; open connections carry on. */
  stopAccepting(): void {
    if (!this.accepting) return;
    this.accepting = false;
    this.server.close();
  }

  /**
   * Waits for open connections to finish, up to `timeoutMs`, then closes the rest.
   * Resolves with how many had to be closed.
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
    for (let c = this.head; c !== null; c = c.next) {
      c.client.destroy();
      c.backend?.destroy();
    }
    if (this.idleSweeper !== null) clearInterval(this.idleSweeper);
    if (this.dialTimer !== null) {
      clearTimeout(this.dialTimer);
      this.dialTimer = null;
    }
    return forced;
  }

  /** Closes connections with no traffic either way for idle_timeout (see IDLE_SWEEPS). */
  private sweepIdle(): void {
    for (let c = this.head; c !== null; c = c.next) {
      if (!c.connected) continue; // a dial has its own connect timeout
      if (c.upstream.active || c.downstream.active) {
        c.upstream.active = false;
        c.downstream.active = false;
        c.idleSweeps = 0;
      } else if (++c.idleSweeps >= IDLE_SWEEPS) {
        // Both close later, from their 'close' events, so the list stays intact here.
        c.backend?.destroy();
        c.client.destroy();
      }
    }
  }

  // ---- accept ---------------------------------------------------------------------

  /** An accepted connection whose client socket reads through its relay (relay.ts). */
  private acceptHandle(handle: AcceptedHandle): void {
    const conn = new Connection(this);
    const client = socketForHandle(handle, conn.upstream.readOptions());
    client.setNoDelay(true);
    conn.clientReadsInto = true;
    this.accept(client, conn);
  }

  private accept(accepted: net.Socket, conn: Connection): void {
    this.stats.accepted++;
    const global = this.counters.global;
    if (Atomics.load(global, GLOBAL_ACTIVE) >= this.connectionCap) {
      this.stats.refusedLimit++;
      this.warn.warn("limit", { limit: this.connectionCap }, `connection refused: ${this.capReason}`);
      accepted.on("error", ignoreError);
      accepted.destroy();
      return;
    }
    Atomics.add(global, GLOBAL_ACTIVE, 1);
    const client = accepted as ProxiedSocket;
    conn.client = client;
    conn.downstream.dst = client;
    client[CONN] = conn;
    this.link(conn);
    client.on("error", onClientError);
    client.on("close", onClientClose);
    if (this.needsClientIp) conn.clientIp = normaliseIp(client.remoteAddress ?? "");
    this.dial(conn);
  }

  // ---- pick and dial ----------------------------------------------------------------

  /** Picks a backend for `conn` and dials it; a failed dial comes back to dialFailed. */
  dial(conn: Connection): void {
    const view = conn.attempt === 0 ? this.picker.pick(conn.clientIp, conn.picks++) : this.pickUntried(conn);
    if (view === undefined) {
      if (conn.attempt === 0) {
        this.stats.refusedNoBackend++;
        this.warn.warn("no_backend", {}, "connection closed: no healthy backend");
      } else {
        this.stats.dialsExhausted++;
      }
      conn.client.destroy();
      return;
    }
    conn.view = view;
    if (conn.triedFirst === -1) conn.triedFirst = view.slot;
    else (conn.triedMore ??= []).push(view.slot);
    conn.counted = true;
    this.counters.opened(view.slot); // counted from the dial on, so least_connections sees it
    this.picker.connectionOpened?.(view.slot);
    const backend = net.connect({
      host: view.host,
      port: view.port,
      allowHalfOpen: true,
      noDelay: true,
      onread: conn.downstream.readOptions(),
    }) as ProxiedSocket;
    backend[CONN] = conn;
    conn.backend = backend;
    conn.backendClosed = false;
    conn.upstream.dst = backend;
    this.dialStarted(conn);
    backend.on("connect", onBackendConnect);
    backend.on("error", onBackendError);
    backend.on("close", onBackendClose);
  }

  /**
   * The dial could not even start for want of file descriptors. That is this process's
   * shortage, not the backend's fault: no passive failure, no retry, the client is closed.
   * (Accepts that hit EMFILE never reach us: libuv closes them itself and keeps going.)
   */
  outOfDescriptors(conn: Connection, code: string): void {
    this.release(conn);
    conn.backend = null;
    this.stats.refusedNoDescriptors++;
    this.warn.warn("emfile", { code }, "connection closed: out of file descriptors");
    if (conn.clientClosed) this.finished(conn);
    else conn.client.destroy();
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

  /** The dial to conn's backend failed before connecting: count it, then retry or give up. */
  dialFailed(conn: Connection, reason: string): void {
    const view = conn.view!;
    this.release(conn);
    conn.backend = null; // abandoned: its remaining events are ignored
    this.counters.failed(view.slot);
    this.warn.warn(`dial:${view.key}`, { backend: view.key, reason }, "backend dial failed");
    this.opts.onDialFailure?.(view, reason);
    if (conn.clientClosed) {
      this.finished(conn);
    } else if (conn.attempt < this.opts.retries) {
      conn.attempt++;
      this.dial(conn);
    } else {
      this.stats.dialsExhausted++;
      conn.client.destroy();
    }
  }

  /** Backend connected: start piping both ways. */
  connected(conn: Connection): void {
    const client = conn.client;
    const backend = conn.backend!;
    conn.connected = true;
    this.dialEnded(conn);
    if (!conn.clientReadsInto) client.on("data", onClientData);
    client.on("end", onClientEnd);
    client.on("drain", onClientDrain);
    backend.on("end", onBackendEnd);
    backend.on("drain", onBackendDrain);
    client.resume();
  }

  // ---- connect timeout --------------------------------------------------------------

  private dialStarted(conn: Connection): void {
    conn.dialDeadline = performance.now() + this.opts.connectTimeoutMs;
    conn.dialling = true;
    conn.dialPrev = this.dialTail;
    conn.dialNext = null;
    if (this.dialTail !== null) this.dialTail.dialNext = conn;
    else this.dialHead = conn;
    this.dialTail = conn;
    if (this.dialTimer === null) this.armDialTimer();
  }

  /** The dial connected, failed or was abandoned; called more than once is fine. */
  private dialEnded(conn: Connection): void {
    if (!conn.dialling) return;
    conn.dialling = false;
    if (conn.dialPrev !== null) conn.dialPrev.dialNext = conn.dialNext;
    else this.dialHead = conn.dialNext;
    if (conn.dialNext !== null) conn.dialNext.dialPrev = conn.dialPrev;
    else this.dialTail = conn.dialPrev;
    conn.dialPrev = conn.dialNext = null;
    // The timer is left armed: when it fires it re-arms for the then oldest dial.
  }

  private armDialTimer(): void {
    const head = this.dialHead;
    if (head === null) {
      this.dialTimer = null;
      return;
    }
    this.dialTimer = setTimeout(() => this.expireDials(), Math.max(1, Math.ceil(head.dialDeadline - performance.now())));
    this.dialTimer.unref();
  }

  private expireDials(): void {
    const now = performance.now();
    for (let c = this.dialHead; c !== null && c.dialDeadline <= now; c = this.dialHead) {
      this.dialEnded(c);
      c.backend!.destroy(new DialTimeoutError());
    }
    this.armDialTimer();
  }

  // ---- account ----------------------------------------------------------------------

  /** Gives back the backend's active count (once per dial), with bytes if it connected. */
  release(conn: Connection): void {
    this.dialEnded(conn);
    if (!conn.counted) return;
    conn.counted = false;
    const slot = conn.view!.slot;
    if (conn.connected) this.counters.closed(slot, conn.client.bytesRead, conn.client.bytesWritten);
    else this.counters.closed(slot, 0, 0);
    this.picker.connectionClosed?.(slot);
  }

  /** Both sides are closed: the connection is over. */
  finished(conn: Connection): void {
    if (conn.done) return;
    conn.done = true;
    if (conn.connected && this.log.isLevelEnabled("debug")) {
      this.log.debug(
        { backend: conn.view!.key, bytes_in: conn.client.bytesRead, bytes_out: conn.client.bytesWritten, attempts: conn.attempt + 1 },
        "connection closed",
      );
    }
    this.release(conn);
    this.unlink(conn);
    Atomics.sub(this.counters.global, GLOBAL_ACTIVE, 1);
    if (this.openCount === 0 && this.drained) this.drained();
  }

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

  private onServerError(err: NodeJS.ErrnoException): void {
    if (!this.accepting) return; // a listen() error; listen() reports it
    // accept() failures, EMFILE/ENFILE above all, must not stop the server: libuv keeps
    // accepting once descriptors free up.
    this.warn.warn(`accept:${err.code}`, { code: err.code, err: err.message }, "accept failed");
  }
}

// ---- event handlers (shared by all connections; `this` is the socket) ----------------

function onBackendConnect(this: ProxiedSocket): void {
  const conn = this[CONN];
  if (conn.clientClosed) {
    this.destroy();
    return;
  }
  conn.plane.connected(conn);
}

function onBackendError(this: ProxiedSocket, err: NodeJS.ErrnoException): void {
  const conn = this[CONN];
  if (conn.backend !== this) return; // an abandoned attempt, or the client already left
  if (!conn.connected) {
    if (err.code === "EMFILE" || err.code === "ENFILE") conn.plane.outOfDescriptors(conn, err.code);
    else conn.plane.dialFailed(conn, socketErrorReason(err));
  } else if (!conn.clientClosed) {
    // A reset from the backend resets the client too, so the client does not mistake
    // a failure for a clean end of stream.
    conn.client.resetAndDestroy();
  }
}

function onBackendClose(this: ProxiedSocket): void {
  const conn = this[CONN];
  if (conn.backend !== this) return;
  conn.backendClosed = true;
  conn.plane.release(conn);
  if (conn.clientClosed) conn.plane.finished(conn);
  else if (!conn.connected) conn.client.destroy();
  // Connected and closed cleanly: the backend's FIN was passed on in onBackendEnd and
  // the client side finishes on its own once its buffered bytes are written.
  else if (!conn.client.writableEnded) conn.client.end();
}

function onClientError(this: ProxiedSocket): void {
  const conn = this[CONN];
  const backend = conn.backend;
  if (backend === null || conn.backendClosed) return;
  // resetAndDestroy on a socket still connecting would raise an error that reads as a
  // failed dial; a plain destroy abandons the dial quietly.
  if (conn.connected) backend.resetAndDestroy();
  else backend.destroy();
}

function onClientClose(this: ProxiedSocket): void {
  const conn = this[CONN];
  conn.clientClosed = true;
  const backend = conn.backend;
  if (backend === null || conn.backendClosed) {
    conn.plane.finished(conn);
    return;
  }
  // The backend's close finishes the connection. A backend we already sent a FIN to is
  // still flushing the client's last bytes: leave it be. Otherwise nobody is left to
  // read what it sends, so close it now.
  if (!conn.connected || !backend.writableEnded) backend.destroy();
}

/** The client's bytes when accepts could not be intercepted (relay.ts): the stream path. */
function onClientData(this: ProxiedSocket, chunk: Buffer): void {
  const conn = this[CONN];
  conn.upstream.active = true;
  if (!conn.backend!.write(chunk)) this.pause();
}

function onClientDrain(this: ProxiedSocket): void {
  const conn = this[CONN];
  conn.downstream.drained();
  conn.backend!.resume();
}

function onBackendDrain(this: ProxiedSocket): void {
  const conn = this[CONN];
  conn.upstream.drained();
  conn.client.resume();
}

/** Half-close: the client's FIN goes on to the backend; the other direction keeps flowing. */
function onClientEnd(this: ProxiedSocket): void {
  finishWriting(this[CONN].backend!);
}

function onBackendEnd(this: ProxiedSocket): void {
  finishWriting(this[CONN].client);
}

/**
 * Passes a FIN on to `socket`. If its own side has already ended and nothing is left to
 * write, both directions are done: close it outright, which sends the same FIN but skips
 * the shutdown(2) and the second close step (a request/response connection ends this
 * way, so this saves a syscall per connection). Otherwise shut down its write side only.
 */
function finishWriting(socket: ProxiedSocket): void {
  if (socket.readableEnded && socket.writableLength === 0) socket.destroy();
  else socket.end();
}

function ignoreError(): void {}

class DialTimeoutError extends Error {
  readonly code = "ETIMEDOUT";
  constructor() {
    super("connect timeout");
  }
}

/** "::ffff:10.0.0.1" and "10.0.0.1" are the same client. */
function normaliseIp(ip: string): string {
  return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
}

function listenError(addr: HostPort, err: NodeJS.ErrnoException): Error {
  const what =
    err.code === "EADDRINUSE"
      ? "address already in use"
      : err.code === "EACCES"
        ? "permission denied"
        : err.code === "EADDRNOTAVAIL"
          ? "address not available on this host"
          : err.message;
  return new Error(`listen ${addr.key}: ${what}`, { cause: err });
}
