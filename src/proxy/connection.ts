import net from "node:net";
import type { BackendView } from "../pool/pool.ts";
import { Relay } from "./relay.ts";
import { socketErrorReason } from "./socket-errors.ts";
import {
  BACKEND_FIN,
  BACKEND_RST,
  CLIENT_FIN,
  CLIENT_GONE,
  CLIENT_RST,
  DESCRIPTORS,
  dialFailureCause,
  NO_BACKEND,
  OPEN,
  type Termination,
} from "./termination.ts";

/** What a connection needs from the data plane that owns it; nothing more. */
export interface ConnectionHost {
  /** Other backends a connection may try after a failed dial. */
  readonly retries: number;
  /**
   * The backend for `conn`'s next attempt (on a retry, one it has not tried), its
   * active count taken; undefined when there is none.
   */
  acquire(conn: Connection): BackendView | undefined;
  /** Gives back the count acquire() took, with the bytes the connection moved. */
  release(view: BackendView, bytesIn: number, bytesOut: number): void;
  /** A dial started: its connect deadline runs until dialEnded. */
  dialStarted(conn: Connection): void;
  dialEnded(conn: Connection): void;
  /** A dial to `view` failed for `reason`: counted against the backend. */
  dialFailed(view: BackendView, reason: string): void;
  /** `conn` is closed, its cause set: take it off the books. Called once. */
  finished(conn: Connection): void;
  /** Monotonic milliseconds. */
  now(): number;
}

/** The phases of a proxied connection; each only moves forward. */
export const DIALLING = 0;
/** Both sockets open, bytes flowing both ways. */
export const CONNECTED = 1;
/** One side has sent its FIN (passed on); the other direction still flows. */
export const HALF_CLOSED = 2;
export const CLOSED = 3;
type Phase = typeof DIALLING | typeof CONNECTED | typeof HALF_CLOSED | typeof CLOSED;

/** Sockets of a connection not yet closed, as bits. */
const CLIENT_OPEN = 1;
const BACKEND_OPEN = 2;

// The connection an event belongs to hangs off its sockets under this symbol, so the
// event handlers at the bottom are shared functions rather than closures per connection.
const CONN = Symbol("gobalancer.connection");
type ProxiedSocket = net.Socket & { [CONN]: Connection };

/**
 * One client connection and, once dialled, its backend connection, from accept to close:
 *
 *   start → dial (retry on failure) → connected → half-closed → close(cause)
 *
 * Every way it can end goes through close(cause), once: it tears both sockets down as
 * the cause requires (a reset is passed on as a reset), gives the backend's count back,
 * ends the dial deadline and hands the connection to the host's finished(). Whatever
 * arrives afterwards from either socket finds the phase CLOSED and is ignored.
 */
export class Connection {
  phase: Phase = DIALLING;
  /** Why it ended (termination.ts); OPEN until close. */
  cause: Termination = OPEN;
  readonly client: ProxiedSocket;
  /** The socket of the current attempt; null between a failed attempt and the next. */
  private backend: ProxiedSocket | null = null;
  /** Backend of the current (or last) attempt. */
  view: BackendView | null = null;
  /** `view`'s active count is held by this connection and not yet given back. */
  private counted = false;
  /** Client to backend; holds what the client sends while the dial is under way. */
  readonly upstream: Relay;
  /** Backend to client. */
  readonly downstream = new Relay();
  /** The client reads through `upstream.onread` (else through 'data' events). */
  private readonly clientReadsInto: boolean;
  /** The client IP the picker hashes ("" unless the algorithm needs it). */
  clientIp = "";
  /** Failed dials so far; the retry budget is the host's `retries`. */
  attempt = 0;
  /** Picks made so far; passed to the picker so each can differ (ip_hash alternatives). */
  picks = 0;
  /** Slots already dialled: the first in a field, any more in an array made on demand. */
  triedFirst = -1;
  triedMore: number[] | null = null;
  /** The side whose FIN came first; the cause of a connection that ends normally. */
  private firstFin: Termination = OPEN;
  private lastDialFailure: Termination = OPEN;
  private clientEnded = false;
  private open = CLIENT_OPEN;
  readonly acceptedAt: number;
  connectedAt = 0;
  /** Idle sweeps in a row that found no traffic either way (data-plane.ts). */
  idleSweeps = 0;
  /** The host's intrusive lists: open connections, and dials by deadline. */
  prev: Connection | null = null;
  next: Connection | null = null;
  dialPrev: Connection | null = null;
  dialNext: Connection | null = null;
  dialDeadline = 0;
  dialListed = false;
  private readonly host: ConnectionHost;

  /**
   * `client` is paused. It reads through `upstream` when given one (relay.ts), else
   * through 'data' events (the stream path).
   */
  constructor(host: ConnectionHost, client: net.Socket, upstream: Relay | null) {
    this.host = host;
    this.client = client as ProxiedSocket;
    this.client[CONN] = this;
    this.clientReadsInto = upstream !== null;
    this.upstream = upstream ?? new Relay();
    this.acceptedAt = host.now();
  }

  /**
   * Dials the first backend and reads the client meanwhile, so that a client that
   * leaves during the dial is seen at once. Its bytes wait in `upstream`.
   */
  start(): void {
    const client = this.client;
    this.downstream.attach(client);
    client.on("error", onClientError);
    client.on("close", onClientClose);
    client.on("end", onClientEnd);
    client.on("drain", onClientDrain);
    if (!this.clientReadsInto) client.on("data", onClientData);
    this.dial();
    if (this.phase === DIALLING) client.resume();
  }

  // ---- dial --------------------------------------------------------------------------

  private dial(): void {
    const view = this.host.acquire(this);
    if (view === undefined) {
      // On a retry, no untried backend is left: the last failure stands.
      this.close(this.attempt === 0 ? NO_BACKEND : this.lastDialFailure);
      return;
    }
    this.view = view;
    this.counted = true;
    if (this.triedFirst === -1) this.triedFirst = view.slot;
    else (this.triedMore ??= []).push(view.slot);
    const backend = net.connect({
      host: view.host,
      port: view.port,
      allowHalfOpen: true,
      noDelay: true,
      onread: this.downstream.readOptions(),
    }) as ProxiedSocket;
    backend[CONN] = this;
    this.backend = backend;
    this.host.dialStarted(this);
    backend.on("connect", onBackendConnect);
    backend.on("error", onBackendError);
    backend.on("close", onBackendClose);
    backend.on("end", onBackendEnd);
    backend.on("drain", onBackendDrain);
  }

  /** The backend accepted: pass on what the client sent so far (and its FIN), then pipe. */
  connected(): void {
    this.host.dialEnded(this);
    this.phase = CONNECTED;
    this.connectedAt = this.host.now();
    this.open |= BACKEND_OPEN;
    const backend = this.backend!;
    const more = this.upstream.attach(backend);
    if (this.clientEnded) {
      this.phase = HALF_CLOSED;
      finishWriting(backend);
    } else if (more) {
      this.client.resume();
    }
  }

  /**
   * The current attempt failed before connecting (error or deadline). The backend is
   * charged with it, and the next untried backend dialled while retries remain.
   */
  dialFailed(code: string | undefined, reason: string): void {
    const view = this.view!;
    const backend = this.backend!;
    this.backend = null; // its remaining events are ignored
    backend.destroy();
    this.host.dialEnded(this);
    this.giveBack(0, 0);
    if (code === "EMFILE" || code === "ENFILE") {
      // This process's shortage, not the backend's: no passive failure, no retry.
      this.close(DESCRIPTORS);
      return;
    }
    this.host.dialFailed(view, reason);
    this.lastDialFailure = dialFailureCause(code);
    if (this.attempt < this.host.retries) {
      this.attempt++;
      this.dial();
    } else {
      this.close(this.lastDialFailure);
    }
  }

  /** The host's connect deadline passed for the current attempt. */
  dialTimedOut(): void {
    this.dialFailed("ETIMEDOUT", socketErrorReason({ code: "ETIMEDOUT" } as NodeJS.ErrnoException));
  }

  // ---- pipe: FINs, resets and closes from either side ---------------------------------

  clientFin(): void {
    this.clientEnded = true;
    if (this.firstFin === OPEN) this.firstFin = CLIENT_FIN;
    if (this.phase === DIALLING) return; // passed on once the backend is there
    this.phase = HALF_CLOSED;
    finishWriting(this.backend!);
  }

  backendFin(): void {
    if (this.firstFin === OPEN) this.firstFin = BACKEND_FIN;
    this.phase = HALF_CLOSED;
    finishWriting(this.client);
  }

  /** The client took everything written to it: the backend may be read again. */
  clientDrained(): void {
    this.downstream.drained();
    if (this.phase !== CLOSED) this.backend?.resume();
  }

  /** The backend took everything written to it: the client may be read again. */
  backendDrained(): void {
    this.upstream.drained();
    if (this.phase !== CLOSED) this.client.resume();
  }

  /** A socket closed cleanly (both of its directions done); the last one ends the connection. */
  socketClosed(bit: number): void {
    this.open &= ~bit;
    if (this.open === 0) this.close(this.firstFin === OPEN ? (bit === CLIENT_OPEN ? CLIENT_FIN : BACKEND_FIN) : this.firstFin);
  }

  // ---- close -------------------------------------------------------------------------

  /**
   * Ends the connection for `cause`; any later call does nothing. A reset from one side
   * is passed on as a reset, so the other side does not mistake a failure for a clean
   * end of stream; every other cause closes both sockets (FIN).
   */
  close(cause: Termination): void {
    if (this.phase === CLOSED) return;
    const connected = this.phase !== DIALLING;
    this.phase = CLOSED;
    this.cause = cause;
    this.host.dialEnded(this);
    const client = this.client;
    const backend = this.backend;
    if (cause === BACKEND_RST) {
      if (!client.destroyed) client.resetAndDestroy();
    } else {
      client.destroy();
    }
    if (backend !== null) {
      // A reset on a socket still connecting would surface as a failed dial: a plain
      // destroy abandons the dial quietly.
      if (cause === CLIENT_RST && connected && !backend.destroyed) backend.resetAndDestroy();
      else backend.destroy();
    }
    if (connected) this.giveBack(client.bytesRead, client.bytesWritten);
    else this.giveBack(0, 0);
    this.host.finished(this);
  }

  /** Bytes from the client (so far, or in all once closed). */
  get bytesIn(): number {
    return this.client.bytesRead;
  }

  /** Bytes to the client. */
  get bytesOut(): number {
    return this.client.bytesWritten;
  }

  /** Attempts made: dials started, the failed ones included. */
  get attempts(): number {
    return this.triedFirst === -1 ? 0 : 1 + (this.triedMore?.length ?? 0);
  }

  /** The backend's active count, once per attempt. */
  private giveBack(bytesIn: number, bytesOut: number): void {
    if (!this.counted) return;
    this.counted = false;
    this.host.release(this.view!, bytesIn, bytesOut);
  }

  /** The current attempt's socket, for the event handlers: others are stale. */
  isCurrent(socket: net.Socket): boolean {
    return socket === this.backend && this.phase !== CLOSED;
  }
}

// ---- event handlers (shared by all connections; `this` is the socket) ----------------

function onClientError(this: ProxiedSocket): void {
  const conn = this[CONN];
  conn.close(conn.phase === DIALLING ? CLIENT_GONE : CLIENT_RST);
}

function onClientClose(this: ProxiedSocket): void {
  const conn = this[CONN];
  if (conn.phase === CLOSED) return;
  // A client closes by itself only once both of its directions are done, which needs
  // the backend's FIN: during a dial that cannot happen, so it left.
  if (conn.phase === DIALLING) conn.close(CLIENT_GONE);
  else conn.socketClosed(CLIENT_OPEN);
}

function onClientEnd(this: ProxiedSocket): void {
  const conn = this[CONN];
  if (conn.phase !== CLOSED) conn.clientFin();
}

function onClientDrain(this: ProxiedSocket): void {
  this[CONN].clientDrained();
}

/** The client's bytes when accepts could not be intercepted (relay.ts): the stream path. */
function onClientData(this: ProxiedSocket, chunk: Buffer): void {
  if (!this[CONN].upstream.forwardChunk(chunk)) this.pause();
}

function onBackendConnect(this: ProxiedSocket): void {
  const conn = this[CONN];
  if (conn.isCurrent(this)) conn.connected();
}

function onBackendError(this: ProxiedSocket, err: NodeJS.ErrnoException): void {
  const conn = this[CONN];
  if (!conn.isCurrent(this)) return; // an abandoned attempt, or the connection is over
  if (conn.phase === DIALLING) conn.dialFailed(err.code, socketErrorReason(err));
  else conn.close(BACKEND_RST);
}

function onBackendClose(this: ProxiedSocket): void {
  const conn = this[CONN];
  if (!conn.isCurrent(this)) return;
  // Closed without an error while connecting: nothing was dialled; count it as a failure.
  if (conn.phase === DIALLING) conn.dialFailed("ECONNRESET", "connection closed during connect");
  else conn.socketClosed(BACKEND_OPEN);
}

function onBackendEnd(this: ProxiedSocket): void {
  const conn = this[CONN];
  if (conn.isCurrent(this)) conn.backendFin();
}

function onBackendDrain(this: ProxiedSocket): void {
  const conn = this[CONN];
  if (conn.isCurrent(this)) conn.backendDrained();
}

/**
 * Passes a FIN on to `socket`. If its own side has already ended and nothing is left to
 * write, both directions are done: close it outright, which sends the same FIN but skips
 * the shutdown(2) and the second close step (a request/response connection ends this
 * way, so this saves a syscall per connection). Otherwise shut down its write side only.
 */
function finishWriting(socket: net.Socket): void {
  if (socket.readableEnded && socket.writableLength === 0) socket.destroy();
  else socket.end();
}
