import dns from "node:dns/promises";
import net from "node:net";
import type { HostPort } from "../pool/address.ts";
import { listenErrorReason } from "./socket-errors.ts";
import { errorCode, interceptAccepts, type AcceptedHandle, type HandleBindings, type ServerHandle, type TcpHandle } from "./node-internals.ts";

/** Where a listener hands what it accepts. */
export interface AcceptSink {
  /** A connection accepted as a bare handle. */
  handle(handle: AcceptedHandle): void;
  /** A connection accepted as a net.Socket (accepts could not be intercepted). */
  socket(socket: net.Socket): void;
  /** accept(2) failed (EMFILE and the like); the listener goes on. */
  failed(err: NodeJS.ErrnoException): void;
}

/** One listening socket of a data plane. */
export interface Listener {
  /** Binds and listens; rejects with "listen ADDRESS: reason". */
  listen(): Promise<net.AddressInfo>;
  /** Stops accepting; connections already accepted carry on. */
  close(): void;
}

const BACKLOG = 1024;

/**
 * The net.Server listener (data_path: sockets). Its accept callback is intercepted
 * (node-internals.ts) so that each connection arrives as a bare handle; if that is not
 * possible, connections arrive as sockets on 'connection', paused.
 */
export function serverListener(addr: HostPort, reusePort: boolean, sink: AcceptSink): Listener {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  let listening = false;
  server.on("connection", (socket) => sink.socket(socket));
  server.on("error", (err: NodeJS.ErrnoException) => {
    if (listening) sink.failed(err); // else a listen() error: listen() reports it
  });
  return {
    listen: () =>
      new Promise((resolve, reject) => {
        const onError = (err: NodeJS.ErrnoException) => reject(listenError(addr, err));
        server.once("error", onError);
        server.listen({ host: addr.host || undefined, port: addr.port, reusePort, backlog: BACKLOG }, () => {
          server.off("error", onError);
          listening = true;
          interceptAccepts(server, (handle) => sink.handle(handle));
          resolve(server.address() as net.AddressInfo);
        });
      }),
    close: () => {
      if (!listening) return;
      listening = false;
      server.close();
    },
  };
}

const LISTENER_SINK = Symbol("gobalancer.listener");
type OwnedServer = ServerHandle & { [LISTENER_SINK]: AcceptSink };

/**
 * Linux copies TCP_NODELAY from a listening socket to every socket it accepts: set once
 * on the listener, it saves a setsockopt(2) per connection. Elsewhere it is set per socket.
 */
export const NODELAY_INHERITED = process.platform === "linux";

/**
 * A listener on a bare libuv handle (data_path: handles), as net.Server sets one up:
 * an address-less listen tries the IPv6 wildcard (dual stack) and then IPv4's; a host
 * name is looked up first. Accepted sockets have Nagle's algorithm off (NODELAY_INHERITED).
 */
export function handleListener(bindings: HandleBindings, addr: HostPort, reusePort: boolean, sink: AcceptSink): Listener {
  let handle: OwnedServer | null = null;
  const flags = reusePort ? bindings.REUSEPORT : 0;
  const bindAndListen = (ip: string, family: number): number => {
    const h = bindings.newServer() as OwnedServer;
    let err = family === 6 ? h.bind6(ip, addr.port, flags) : h.bind(ip, addr.port, flags);
    if (err === 0 && NODELAY_INHERITED) err = h.setNoDelay(true);
    // libuv reports some bind errors (EADDRINUSE) only when listening.
    if (err === 0) err = h.listen(BACKLOG);
    if (err !== 0) {
      h.close();
      return err;
    }
    h[LISTENER_SINK] = sink;
    h.onconnection = onConnection;
    handle = h;
    return 0;
  };
  return {
    listen: async () => {
      let err: number;
      if (addr.host === "") {
        err = bindAndListen("::", 6);
        if (err !== 0) err = bindAndListen("0.0.0.0", 4);
      } else {
        let ip = addr.host;
        let family = net.isIP(ip);
        if (family === 0) {
          try {
            ({ address: ip, family } = await dns.lookup(addr.host));
          } catch (cause) {
            throw new Error(`listen ${addr.key}: cannot resolve ${addr.host}`, { cause });
          }
        }
        err = bindAndListen(ip, family);
      }
      if (err !== 0) throw listenError(addr, Object.assign(new Error(errorCode(err)), { code: errorCode(err) }));
      const out: { address?: string; port?: number; family?: string } = {};
      handle!.getsockname(out);
      return { address: out.address ?? "", port: out.port ?? 0, family: out.family ?? "" };
    },
    close: () => {
      handle?.close();
      handle = null;
    },
  };
}

function onConnection(this: ServerHandle, status: number, client: TcpHandle | undefined): void {
  const sink = (this as OwnedServer)[LISTENER_SINK];
  if (status < 0 || client === undefined) {
    const code = errorCode(status);
    sink.failed(Object.assign(new Error(`accept ${code}`), { code, errno: status, syscall: "accept" }));
  } else {
    sink.handle(client as unknown as AcceptedHandle);
  }
}

function listenError(addr: HostPort, err: NodeJS.ErrnoException): Error {
  return new Error(`listen ${addr.key}: ${listenErrorReason(err)}`, { cause: err });
}
