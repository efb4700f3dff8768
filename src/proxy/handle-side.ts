import dns from "node:dns";
import net from "node:net";
import type { BackendView } from "../pool/pool.ts";
import type { Connection } from "./connection.ts";
import { NODELAY_INHERITED } from "./listener.ts";
import {
  errorCode,
  type ConnectRequest,
  type HandleBindings,
  type PeerName,
  type TcpHandle,
  type WriteRequest,
} from "./node-internals.ts";
import { FULL_READ, release, sharedReadBuffer, takeChunk, type Relay } from "./relay.ts";
import type { Side } from "./side.ts";
import { socketErrorReason } from "./socket-errors.ts";

/**
 * A side of a proxied connection on a bare libuv TCP handle: no net.Socket, no stream
 * machinery, no EventEmitter. It does what the data path needs of a socket (side.ts):
 * reads land in the thread's buffer and go straight to the relay; writes that the kernel
 * takes at once cost no request object; a FIN is a shutdown request once the writes are
 * out; the handle is closed once both directions are done, as net.Socket's autoDestroy
 * would. Events go to the connection's event methods, from shared functions (`this` is
 * the handle or the request), so nothing is allocated per read or per connection beyond
 * the side itself and its handle.
 *
 * Only what the data path must wait for calls back into JavaScript: reads, a connect,
 * a write the kernel did not take at once. A shutdown and a close are left to libuv
 * without a callback (Node calls none when the request has no `oncomplete` or the
 * handle no close callback), which saves a call into JavaScript per close and per
 * shutdown: the shutdown is requested only once every write is done, so our direction
 * is finished as soon as it is asked for (a close that overtakes it sends the same FIN);
 * and a closed side tells its connection at once, since libuv reads into its buffer no
 * more and cancels its pending writes (whose buffers their requests hold till then).
 *
 * Bulk transfers skip a copy: after a read that fills the thread's buffer, the side
 * hands libuv a 64 KiB chunk of its own to read into next (the onread callback's return
 * value), writes from that chunk directly, and goes back to the shared buffer with the
 * first read that does not fill it. A connection holds a chunk of its own only while
 * its reads keep filling it (or, at worst, idle after one that did).
 */

/** Past this many bytes queued, write() asks the reader to pause (as net.Socket's default). */
const HIGH_WATER_MARK = 64 * 1024;

// The side a handle or request belongs to hangs off it under this symbol.
const SIDE = Symbol("gobalancer.side");
type OwnedHandle = TcpHandle & { [SIDE]: HandleSide };
type OwnedWrite = WriteRequest & { [SIDE]: HandleSide; buffer: Buffer | null; bytes: number };
type OwnedConnect = ConnectRequest & { [SIDE]: HandleSide };

let bindings: HandleBindings;
/** A write request not handed to libuv yet: a write the kernel takes at once leaves it unused. */
let spareWrite: OwnedWrite | null = null;

export class HandleSide implements Side {
  writableLength = 0;
  readableEnded = false;
  destroyed = false;
  bytesRead = 0;
  bytesWritten = 0;
  private readonly handle: OwnedHandle;
  private readonly conn: Connection;
  private readonly isClient: boolean;
  private readonly relay: Relay;
  private reading = false;
  /** end() was called: the shutdown follows the queued writes. */
  private ending = false;
  /** The shutdown is done: our direction is finished. */
  private writeFinished = false;
  /** write() returned false: drained() is owed once the queue empties. */
  private needDrain = false;
  /** The chunk libuv reads into for this side during a bulk transfer; null: the shared buffer. */
  private own: Buffer | null = null;

  constructor(handle: TcpHandle, conn: Connection, isClient: boolean, relay: Relay) {
    this.handle = handle as OwnedHandle;
    this.handle[SIDE] = this;
    this.conn = conn;
    this.isClient = isClient;
    this.relay = relay;
  }

  /**
   * Sets the handle up to read into the thread's buffer (not reading yet), with Nagle's
   * algorithm off unless the socket already has it off.
   */
  prepare(noDelayInherited: boolean): void {
    const handle = this.handle;
    if (!noDelayInherited) handle.setNoDelay(true);
    handle.onread = onRead;
    handle.useUserBuffer(sharedReadBuffer());
  }

  peer(): PeerName {
    const out: PeerName = {};
    this.handle.getpeername(out);
    return out;
  }

  /** The address the peer connected to (getsockname). */
  local(): PeerName {
    const out: PeerName = {};
    this.handle.getsockname(out);
    return out;
  }

  write(data: Buffer): boolean {
    if (this.destroyed) return false;
    const req = spareWrite ?? (bindings.newWriteRequest() as OwnedWrite);
    spareWrite = null;
    const err = this.handle.writeBuffer(req, data);
    this.bytesWritten += data.length;
    if (err !== 0) {
      spareWrite = req;
      this.failLater(err);
      return false;
    }
    if (!bindings.lastWriteWasAsync()) {
      spareWrite = req; // libuv never saw it: reusable
      return !this.needDrain;
    }
    // libuv holds `data` until oncomplete: keep it referenced till then.
    req.oncomplete = onWriteDone;
    req[SIDE] = this;
    req.buffer = data;
    req.bytes = data.length;
    this.writableLength += data.length;
    if (this.writableLength >= HIGH_WATER_MARK) this.needDrain = true;
    return !this.needDrain;
  }

  end(): void {
    if (this.ending || this.destroyed) return;
    this.ending = true;
    if (this.writableLength === 0) this.shutdown();
  }

  /** Closes the handle and tells the connection at once (see the top of this file). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.handle.close();
    this.closed();
  }

  resetAndDestroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    if (this.handle.reset() !== 0) this.handle.close();
    this.closed();
  }

  pause(): void {
    if (!this.reading) return;
    this.reading = false;
    if (!this.destroyed) this.handle.readStop();
  }

  resume(): void {
    if (this.reading || this.readableEnded || this.destroyed) return;
    this.reading = true;
    const err = this.handle.readStart();
    if (err !== 0) this.failLater(err);
  }

  // ---- what libuv reports -----------------------------------------------------------

  /** What libuv read; returns the buffer to read into next when that changes. */
  read(nread: number): Buffer | undefined {
    if (nread > 0) {
      this.bytesRead += nread;
      const own = this.own;
      let next: Buffer | undefined;
      let more: boolean;
      if (own === null) {
        more = this.relay.forward(nread);
        // Bytes read before the relay is attached are held, not written: no chunk then
        // (nor once the read ended the connection: a PROXY header found malformed).
        if (nread === FULL_READ && this.relay.attached && !this.destroyed) next = this.own = takeChunk();
      } else {
        more = this.relay.forwardChunkRead(own, nread);
        // A chunk still being written is the relay's to recycle; else it can be read into again.
        if (this.relay.chunkInFlight) this.own = nread === FULL_READ ? takeChunk() : null;
        else if (nread < FULL_READ) {
          release(own);
          this.own = null;
        }
        if (this.own !== own) next = this.own ?? sharedReadBuffer();
      }
      if (!more) this.pause();
      return next;
    }
    if (nread === bindings.UV_EOF) {
      this.reading = false;
      this.readableEnded = true;
      if (this.isClient) this.conn.clientEnded();
      else this.conn.backendEnded(this);
      this.closeIfDone();
    } else if (nread < 0) {
      this.fail(nread);
    }
  }

  writeDone(req: OwnedWrite, status: number): void {
    this.writableLength -= req.bytes;
    req.buffer = null;
    if (status < 0) {
      this.fail(status);
      return;
    }
    if (this.writableLength > 0 || this.destroyed) return;
    if (this.ending && !this.writeFinished) this.shutdown();
    if (this.needDrain) {
      this.needDrain = false;
      if (this.isClient) this.conn.clientDrained();
      else this.conn.backendDrained(this);
    }
  }

  connected(status: number): void {
    if (status < 0) {
      this.fail(status);
      return;
    }
    this.prepare(false);
    this.resume();
    this.conn.backendConnected(this);
  }

  /** An error from libuv: the handle is closed and the connection told. */
  fail(status: number): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.handle.close();
    this.dropOwnChunk();
    const code = errorCode(status);
    if (this.isClient) this.conn.clientFailed();
    else this.conn.backendFailed(this, code, socketErrorReason({ code } as NodeJS.ErrnoException));
  }

  /** An error found while the connection is in the middle of something: reported next tick. */
  failLater(status: number): void {
    process.nextTick(failSide, this, status);
  }

  /**
   * Sends the FIN; called once every write is done. An error (the peer already gone)
   * ends our direction all the same.
   */
  private shutdown(): void {
    this.handle.shutdown(bindings.newShutdownRequest());
    this.writeFinished = true;
    this.closeIfDone();
  }

  /** Both directions done: close, as a net.Socket would by itself. */
  private closeIfDone(): void {
    if (this.readableEnded && this.writeFinished) this.destroy();
  }

  /** The handle is closed. */
  private closed(): void {
    this.dropOwnChunk();
    if (this.isClient) this.conn.clientClosed();
    else this.conn.backendClosed(this);
  }

  /** libuv reads into this side's chunk no more: another connection may. */
  private dropOwnChunk(): void {
    if (this.own !== null) release(this.own);
    this.own = null;
  }

  /** Starts connecting a handle to `host`:`port` (an IP literal). */
  connectTo(host: string, port: number, family: number): void {
    const req = bindings.newConnectRequest() as OwnedConnect;
    req.oncomplete = onConnected;
    req[SIDE] = this;
    const err = family === 6 ? this.handle.connect6(req, host, port) : this.handle.connect(req, host, port);
    if (err !== 0) this.failLater(err);
  }
}

// ---- shared callbacks (`this` is the handle or the request) ----------------------------

/** Returning a buffer makes it the one libuv reads into next (Node's onread contract). */
function onRead(this: TcpHandle): Buffer | undefined {
  return (this as OwnedHandle)[SIDE].read(bindings.readResult());
}

function onWriteDone(this: WriteRequest, status: number): void {
  const req = this as OwnedWrite;
  req[SIDE].writeDone(req, status);
}

function onConnected(this: ConnectRequest, status: number): void {
  (this as OwnedConnect)[SIDE].connected(status);
}

function failSide(side: HandleSide, status: number): void {
  side.fail(status);
}

/** The data path on libuv handles (node-internals.ts): the client and backend sides. */
export const handlePath = {
  /** Uses `b` from now on (once per thread, checked by the caller). */
  use(b: HandleBindings): void {
    bindings = b;
  },

  /**
   * The client side of an accepted handle, reading into `upstream` once resumed. Where
   * the listener's TCP_NODELAY is inherited (handleListener), it is not set again.
   */
  adoptClient(handle: TcpHandle, conn: Connection, upstream: Relay): HandleSide {
    const side = new HandleSide(handle, conn, true, upstream);
    side.prepare(NODELAY_INHERITED);
    return side;
  },

  connect(conn: Connection, view: BackendView, relay: Relay): Side {
    const side = new HandleSide(bindings.newTcp(), conn, false, relay);
    const family = net.isIP(view.host);
    if (family !== 0) {
      side.connectTo(view.host, view.port, family);
    } else {
      // A DNS name: looked up per dial, as net.connect does.
      dns.lookup(view.host, (err, address, fam) => {
        if (side.destroyed) return;
        if (err) side.fail(-3008 /* UV_EAI_NONAME: "DNS lookup failed" */);
        else side.connectTo(address, view.port, fam);
      });
    }
    return side;
  },
};
