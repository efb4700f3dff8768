import net from "node:net";
import type { BackendView } from "../pool/pool.ts";
import type { Connection } from "./connection.ts";
import type { Relay } from "./relay.ts";
import type { Side } from "./side.ts";
import { socketErrorReason } from "./socket-errors.ts";

// The connection an event belongs to hangs off its sockets under this symbol, so the
// event handlers below are shared functions rather than closures per connection.
const CONN = Symbol("gobalancer.connection");
type ProxiedSocket = net.Socket & { [CONN]: Connection };

/**
 * The data path on net.Socket: each side of a connection is a socket whose events are
 * passed to the connection's event methods. A net.Socket is a Side as it is.
 */
export const socketPath = {
  /**
   * Hands `socket`'s events to `conn`. `streamPath`: the socket reads through 'data'
   * events (accepts could not be intercepted, node-internals.ts) rather than its relay.
   */
  adoptClient(socket: net.Socket, conn: Connection, streamPath: boolean): void {
    const client = socket as ProxiedSocket;
    client[CONN] = conn;
    client.on("error", onClientError);
    client.on("close", onClientClose);
    client.on("end", onClientEnd);
    client.on("drain", onClientDrain);
    if (streamPath) client.on("data", onClientData);
  },

  connect(conn: Connection, view: BackendView, relay: Relay): Side {
    const backend = net.connect({
      host: view.host,
      port: view.port,
      allowHalfOpen: true,
      noDelay: true,
      onread: relay.readOptions(),
    }) as ProxiedSocket;
    backend[CONN] = conn;
    backend.on("connect", onBackendConnect);
    backend.on("error", onBackendError);
    backend.on("close", onBackendClose);
    backend.on("end", onBackendEnd);
    backend.on("drain", onBackendDrain);
    return backend;
  },
};

// ---- event handlers (shared by all connections; `this` is the socket) ----------------

function onClientError(this: ProxiedSocket): void {
  this[CONN].clientFailed();
}

function onClientClose(this: ProxiedSocket): void {
  this[CONN].clientClosed();
}

function onClientEnd(this: ProxiedSocket): void {
  this[CONN].clientEnded();
}

function onClientDrain(this: ProxiedSocket): void {
  this[CONN].clientDrained();
}

function onClientData(this: ProxiedSocket, chunk: Buffer): void {
  if (!this[CONN].upstream.forwardChunk(chunk)) this.pause();
}

function onBackendConnect(this: ProxiedSocket): void {
  this[CONN].backendConnected(this);
}

function onBackendError(this: ProxiedSocket, err: NodeJS.ErrnoException): void {
  this[CONN].backendFailed(this, err.code, socketErrorReason(err));
}

function onBackendClose(this: ProxiedSocket): void {
  this[CONN].backendClosed(this);
}

function onBackendEnd(this: ProxiedSocket): void {
  this[CONN].backendEnded(this);
}

function onBackendDrain(this: ProxiedSocket): void {
  this[CONN].backendDrained(this);
}
