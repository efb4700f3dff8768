import type { BackendView } from "../pool/pool.ts";
import type { HeldReader, Relay } from "./relay.ts";
import type { Side } from "./side.ts";
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
  PROXY_HEADER,
  type Termination,
} from "./termination.ts";

/** What a connection needs from the data plane that owns it; nothing more. */
export interface ConnectionHost {
  /** Other backends a connection may try after a failed dial. */
  readonly retries: number;
  /**
   * The backend for `conn`'s next attempt (on a retry, one it has not tried), its
   * active count taken; undefined when there is none; null when the host took the
   * connection over: it waits in the backend queue (dequeued() follows) or was closed.
   */
  acquire(conn: Connection): BackendView | undefined | null;
  /** The PROXY protocol header to send `conn`'s backend first, or null for none. */
  proxyHeader(conn: Connection): Buffer | null;
  /** A PROXY header is awaited: its deadline runs until the connection leaves its list (deadlines.ts). */
  headerStarted(conn: Connection): void;
  /**
   * Reads a PROXY header off the front of `bytes` and takes the client's address from
   * it: the header's length once complete, 0 while incomplete, -1 if malformed.
   */
  readHeader(conn: Connection, bytes: Buffer): number;
  /** Gives back the count acquire() took, with the bytes the connection moved. */
  release(view: BackendView, bytesIn: number, bytesOut: number): void;
  /**
   * Starts connecting to `view`; the side reads through `relay` and reports to `conn`'s
   * backend event methods (socket-path.ts, handle-side.ts).
   */
  connect(conn: Connection, view: BackendView, relay: Relay): Side;
  /** The current attempt connected (connectedAt is set). */
  connected(conn: Connection): void;
  /** A dial started: its connect deadline runs until the connection leaves its list (deadlines.ts). */
  dialStarted(conn: Connection): void;
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

/** Sides of a connection not yet closed, as bits. */
const CLIENT_OPEN = 1;
const BACKEND_OPEN = 2;

/** The connect timeout, as a dial failure. */
const TIMED_OUT = "ETIMEDOUT";

/**
 * One client connection and, once dialled, its backend connection, from accept to close:
 *
 *   start → dial (retry on failure) → connected → half-closed → close(cause)
 *
 * Every way it can end goes through close(cause), once: it tears both sides down as
 * the cause requires (a reset is passed on as a reset), gives the backend's count back,
 * ends the dial deadline and hands the connection to the host's finished(). Whatever
 * arrives afterwards from either side finds the phase CLOSED and is ignored.
 *
 * The sides (side.ts) report through the event methods below; an event from a backend
 * side that is not the current attempt's (one abandoned after a failed dial) is dropped.
 */
export class Connection implements HeldReader {
  phase: Phase = DIALLING;
  /** Why it ended (termination.ts); OPEN until close. */
  cause: Termination = OPEN;
  /** Set by the accept path right after construction (the side may need the connection first). */
  client!: Side;
  /** The side of the current attempt; null between a failed attempt and the next. */
  private backend: Side | null = null;
  /** Backend of the current (or last) attempt. */
  view: BackendView | null = null;
  /** `view`'s active count is held by this connection and not yet given back. */
  private counted = false;
  /** Client to backend; holds what the client sends while the dial is under way. */
  readonly upstream: Relay;
  /** Backend to client. */
  readonly downstream: Relay;
  /** The client's address, for the picker (ip_hash) and the access log; else unset. */
  clientIp = "";
  clientPort = 0;
  /** The address the client connected to, for the PROXY header sent on; else unset. */
  localIp = "";
  localPort = 0;
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
  private clientFinished = false;
  private open = CLIENT_OPEN;
  /** Bytes already counted for the backend while the connection was open (data-plane.ts). */
  reportedIn = 0;
  reportedOut = 0;
  readonly acceptedAt: number;
  connectedAt = 0;
  /** Idle sweeps in a row that found no traffic either way (data-plane.ts). */
  idleSweeps = 0;
  /** The host's intrusive lists: open connections, and dials by deadline. */
  prev: Connection | null = null;
  next: Connection | null = null;
  /** The deadline list it waits on (dial, queue or header), if any: deadlines.ts, which this only leaves. */
  deadlines: { remove(conn: Connection): void } | null = null;
  deadline = 0;
  waitPrev: Connection | null = null;
  waitNext: Connection | null = null;
  /** When the current attempt's dial began (host clock). */
  dialStartedAt = 0;
  private readonly host: ConnectionHost;

  /** The client side (paused) reads through `upstream`; `downstream` will feed it. */
  constructor(host: ConnectionHost, upstream: Relay, downstream: Relay) {
    this.host = host;
    this.upstream = upstream;
    this.downstream = downstream;
    this.acceptedAt = host.now();
  }

  /**
   * Dials the first backend and reads the client meanwhile, so that a client that
   * leaves during the dial is seen at once. Its bytes wait in `upstream`.
   */
  start(): void {
    this.downstream.attach(this.client);
    this.dial();
    if (this.phase === DIALLING) this.client.resume();
  }

  /**
   * As start(), once a PROXY header from a trusted upstream balancer has been read off
   * the front of what the client sends (listen_proxy_protocol): the client is read, its
   * bytes held and offered to the host's readHeader, and the dial starts once the header
   * is complete.
   */
  startAfterHeader(): void {
    this.downstream.attach(this.client);
    this.upstream.awaiting = this;
    this.host.headerStarted(this);
    this.client.resume();
  }

  /** Bytes arrived while the header is awaited (Relay.awaiting). */
  held(relay: Relay): boolean {
    if (this.phase === CLOSED) return false;
    const length = this.host.readHeader(this, relay.heldBytes());
    if (length === 0) return true;
    relay.awaiting = null;
    this.deadlines?.remove(this);
    if (length < 0) {
      this.close(PROXY_HEADER);
      return false;
    }
    relay.dropHeld(length);
    this.dial();
    if ((this.phase as Phase) === CLOSED) return false;
    // The client's FIN may have come with the header.
    return relay.roomToHold && !this.clientFinished;
  }

  // ---- dial --------------------------------------------------------------------------

  private dial(): void {
    const view = this.host.acquire(this);
    if (view === null) return; // queued (dequeued() follows) or closed by the host
    if (view === undefined) {
      // On a retry, no untried backend is left: the last failure stands.
      this.close(this.attempt === 0 ? NO_BACKEND : this.lastDialFailure);
      return;
    }
    this.connectTo(view);
  }

  /** The host found room on `view` for this queued connection (its count taken). */
  dequeued(view: BackendView): void {
    this.connectTo(view);
  }

  private connectTo(view: BackendView): void {
    this.view = view;
    this.counted = true;
    if (this.triedFirst === -1) this.triedFirst = view.slot;
    else (this.triedMore ??= []).push(view.slot);
    this.dialStartedAt = this.host.now();
    this.backend = this.host.connect(this, view, this.downstream);
    this.host.dialStarted(this);
  }

  /** The backend accepted: pass on what the client sent so far (and its FIN), then pipe. */
  backendConnected(side: Side): void {
    if (side !== this.backend || this.phase !== DIALLING) return;
    this.deadlines?.remove(this);
    this.phase = CONNECTED;
    this.connectedAt = this.host.now();
    this.host.connected(this);
    this.open |= BACKEND_OPEN;
    const backend = this.backend!;
    const header = this.host.proxyHeader(this);
    if (header !== null) backend.write(header);
    const more = this.upstream.attach(backend);
    if (this.clientFinished) {
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
  private dialFailed(code: string | undefined, reason: string): void {
    const view = this.view!;
    const backend = this.backend!;
    this.backend = null; // its remaining events are ignored
    backend.destroy();
    this.deadlines?.remove(this);
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
    this.dialFailed(TIMED_OUT, "connect timeout");
  }

  // ---- events from the client side ------------------------------------------------------

  /** The client's FIN: passed on (once the backend is there); the other way flows on. */
  clientEnded(): void {
    if (this.phase === CLOSED) return;
    this.clientFinished = true;
    if (this.firstFin === OPEN) this.firstFin = CLIENT_FIN;
    // The header can no longer be completed.
    if (this.upstream.awaiting !== null) this.close(PROXY_HEADER);
    if (this.phase === DIALLING) return;
    this.phase = HALF_CLOSED;
    finishWriting(this.backend!);
  }

  /** The client reset the connection, or a read or write on it failed. */
  clientFailed(): void {
    this.close(this.phase === DIALLING ? CLIENT_GONE : CLIENT_RST);
  }

  clientClosed(): void {
    if (this.phase === CLOSED) return;
    // A client closes by itself only once both of its directions are done, which needs
    // the backend's FIN: during a dial that cannot happen, so it left.
    if (this.phase === DIALLING) this.close(CLIENT_GONE);
    else this.sideClosed(CLIENT_OPEN);
  }

  // ---- events from the backend side -------------------------------------------------------

  backendEnded(side: Side): void {
    if (side !== this.backend || this.phase === CLOSED) return;
    if (this.firstFin === OPEN) this.firstFin = BACKEND_FIN;
    this.phase = HALF_CLOSED;
    finishWriting(this.client);
  }

  /** An error on the backend side: a failed dial, or a reset once connected. */
  backendFailed(side: Side, code: string | undefined, reason: string): void {
    if (side !== this.backend || this.phase === CLOSED) return;
    if (this.phase === DIALLING) this.dialFailed(code, reason);
    else this.close(BACKEND_RST);
  }

  backendClosed(side: Side): void {
    if (side !== this.backend || this.phase === CLOSED) return;
    // Closed without an error while connecting: nothing was dialled; count it as a failure.
    if (this.phase === DIALLING) this.dialFailed("ECONNRESET", "connection closed during connect");
    else this.sideClosed(BACKEND_OPEN);
  }

  /** The client took everything written to it: the backend may be read again. */
  clientDrained(): void {
    this.downstream.drained();
    if (this.phase !== CLOSED) this.backend?.resume();
  }

  /** The backend took everything written to it: the client may be read again. */
  backendDrained(side: Side): void {
    if (side !== this.backend) return;
    this.upstream.drained();
    if (this.phase !== CLOSED) this.client.resume();
  }

  /** A side closed cleanly (both of its directions done); the last one ends the connection. */
  private sideClosed(bit: number): void {
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
    this.deadlines?.remove(this);
    this.upstream.awaiting = null;
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
    if (connected) this.giveBack(this.bytesIn - this.reportedIn, this.bytesOut - this.reportedOut);
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
}

/**
 * Passes a FIN on to `socket`. If its own side has already ended and nothing is left to
 * write, both directions are done: close it outright, which sends the same FIN but skips
 * the shutdown(2) and the second close step (a request/response connection ends this
 * way, so this saves a syscall per connection). Otherwise shut down its write side only.
 */
function finishWriting(socket: Side): void {
  if (socket.readableEnded && socket.writableLength === 0) socket.destroy();
  else socket.end();
}
