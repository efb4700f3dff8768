/**
 * Every use of Node's undocumented internals in the data path, in one place. Each is
 * checked before it is relied on; where the check fails, the caller keeps to public APIs.
 *
 * - A listening net.Server's `_handle.onconnection`: the callback libuv's accept calls
 *   with each new connection's handle. Taking its place lets the data path build the
 *   client side itself (interceptAccepts).
 * - `new net.Socket({ handle, onread, pauseOnCreate })`: a socket around an accepted
 *   handle that reads through `onread`, as net.Server builds its own sockets.
 * - `process.binding("tcp_wrap")` and `("stream_wrap")`: the libuv TCP handles net.Socket
 *   is built on, for the data path that builds no net.Socket at all (handle-side.ts).
 *   Used, and checked by loadHandleBindings():
 *   `TCP` (constructor with `constants.SOCKET`): `connect`/`connect6(req, ip, port)`,
 *     `readStart`, `readStop`, `useUserBuffer(buffer)` (reads land in our buffer),
 *     `onread` (called per read, `this` = the handle), `writeBuffer(req, buffer)`,
 *     `shutdown(req)`, `close()`, `reset()` (close with RST; both without the optional
 *     callback, so that nothing calls back when libuv is done), `setNoDelay`,
 *     `getpeername(out)`, `getsockname(out)` (the address a PROXY header sent on names);
 *   the same with `constants.SERVER` for listeners: `bind`/`bind6(ip, port, flags)`
 *     (`constants.UV_TCP_REUSEPORT`), `setNoDelay`, `listen(backlog)`, `onconnection(status, handle)`,
 *     `getsockname(out)`;
 *   `TCPConnectWrap`, `WriteWrap`, `ShutdownWrap`: request objects whose `oncomplete`
 *     libuv calls when a connect or an asynchronous write is done (a shutdown request is
 *     made without one: Node calls back only when it is set);
 *   `streamBaseState` with `kReadBytesOrError` (a read's byte count or error) and
 *     `kLastWriteWasAsync` (whether the write just made is still pending);
 *   `UV_EOF` from `process.binding("uv")`.
 */
import net from "node:net";
import util from "node:util";

/** The handle of a connection a listening socket accepted, not yet wrapped in a net.Socket. */
export type AcceptedHandle = { readonly __accepted: unique symbol };

interface ListeningHandle {
  onconnection?: unknown;
}

/**
 * Has a listening `server` pass each accepted connection to `onAccept` as a bare handle,
 * so that it can be wrapped in a socket that reads through `onread` (socketForHandle).
 *
 * net.Server has no `onread` option (net.Socket and net.connect do), and building its
 * usual socket first and moving the handle over would cost a third socket per
 * connection. So this takes the place of the server's own accept callback on its
 * listening handle. Node sets `_handle.onconnection` to that callback and builds accepted
 * sockets from `{ handle }` itself, but neither is documented: when the listening handle
 * is not what this expects, nothing is changed and false is returned, and the caller
 * stays on the 'connection' event and the stream path. Accept errors (EMFILE and the
 * like) are emitted on the server as before.
 */
export function interceptAccepts(server: net.Server, onAccept: (handle: AcceptedHandle) => void): boolean {
  const listening = (server as unknown as { _handle: ListeningHandle | null })._handle;
  if (listening === null || typeof listening !== "object" || typeof listening.onconnection !== "function") return false;
  listening.onconnection = (status: number, handle: AcceptedHandle) => {
    if (status < 0) server.emit("error", acceptError(status));
    else onAccept(handle);
  };
  return true;
}

/** A socket for an accepted connection that reads through `onread`, paused until resumed. */
export function socketForHandle(handle: AcceptedHandle, onread: net.OnReadOpts): net.Socket {
  const options = { handle, allowHalfOpen: true, pauseOnCreate: true, onread };
  return new net.Socket(options as unknown as net.SocketConstructorOpts);
}

function acceptError(status: number): NodeJS.ErrnoException {
  const code = util.getSystemErrorName(status);
  return Object.assign(new Error(`accept ${code}`), { errno: status, code, syscall: "accept" });
}

// ---- libuv handles ----------------------------------------------------------------------

/** What the peer address lookup fills in. */
export interface PeerName {
  address?: string;
  port?: number;
}

/** A libuv TCP handle (tcp_wrap's TCP), as far as the data path uses it. */
export interface TcpHandle {
  /** Called per read; a Buffer returned becomes the buffer libuv reads into next. */
  onread: ((this: TcpHandle) => Buffer | undefined) | null;
  readStart(): number;
  readStop(): number;
  useUserBuffer(buffer: Buffer): void;
  writeBuffer(req: WriteRequest, data: Buffer): number;
  shutdown(req: ShutdownRequest): number;
  /** Closes; a callback given is called once libuv is done (the data path gives none). */
  close(onClose?: (this: TcpHandle) => void): void;
  reset(onClose?: (this: TcpHandle) => void): number;
  connect(req: ConnectRequest, ip: string, port: number): number;
  connect6(req: ConnectRequest, ip: string, port: number): number;
  setNoDelay(on: boolean): number;
  getpeername(out: PeerName): number;
  getsockname(out: PeerName): number;
}

/** Completion callbacks get the status (0 or a negative libuv error). */
export interface WriteRequest {
  oncomplete: ((this: WriteRequest, status: number) => void) | null;
}
export interface ShutdownRequest {
  oncomplete: ((this: ShutdownRequest, status: number) => void) | null;
}
export interface ConnectRequest {
  oncomplete: ((this: ConnectRequest, status: number, handle: TcpHandle) => void) | null;
}

/** A listening TCP handle. */
export interface ServerHandle {
  onconnection: ((this: ServerHandle, status: number, handle: TcpHandle | undefined) => void) | null;
  bind(ip: string, port: number, flags: number): number;
  bind6(ip: string, port: number, flags: number): number;
  /** TCP_NODELAY on the listening socket (accepted sockets inherit it on Linux). */
  setNoDelay(on: boolean): number;
  listen(backlog: number): number;
  getsockname(out: PeerName & { family?: string }): number;
  close(onClose?: () => void): void;
}

export interface HandleBindings {
  newTcp(): TcpHandle;
  newServer(): ServerHandle;
  /** The bind flag that shares a port between listeners (SO_REUSEPORT). */
  readonly REUSEPORT: number;
  newConnectRequest(): ConnectRequest;
  newWriteRequest(): WriteRequest;
  newShutdownRequest(): ShutdownRequest;
  /** Bytes (or a negative error) of the read that onread reports. */
  readResult(): number;
  /** The write just made did not complete at once: its request's oncomplete follows. */
  lastWriteWasAsync(): boolean;
  readonly UV_EOF: number;
}

const TCP_METHODS = [
  "readStart", "readStop", "useUserBuffer", "writeBuffer", "shutdown", "close", "reset",
  "connect", "connect6", "setNoDelay", "getpeername", "bind", "bind6", "listen", "getsockname",
] as const;

type Binding = Record<string, unknown>;

/**
 * The libuv handle bindings, or why they cannot be used: every constructor, method and
 * index the data path relies on is checked for its expected shape first.
 */
export function loadHandleBindings(): HandleBindings | string {
  let tcpWrap: Binding, streamWrap: Binding, uv: Binding;
  try {
    const binding = (process as unknown as { binding(name: string): Binding }).binding;
    tcpWrap = binding("tcp_wrap");
    streamWrap = binding("stream_wrap");
    uv = binding("uv");
  } catch (err) {
    return `process.binding is not available: ${(err as Error).message}`;
  }
  const TCP = tcpWrap.TCP as (new (type: number) => TcpHandle) | undefined;
  const TCPConnectWrap = tcpWrap.TCPConnectWrap as (new () => ConnectRequest) | undefined;
  const WriteWrap = streamWrap.WriteWrap as (new () => WriteRequest) | undefined;
  const ShutdownWrap = streamWrap.ShutdownWrap as (new () => ShutdownRequest) | undefined;
  const constants = tcpWrap.constants as Record<string, unknown> | undefined;
  const SOCKET = constants?.SOCKET;
  const SERVER = constants?.SERVER;
  const REUSEPORT = constants?.UV_TCP_REUSEPORT;
  const state = streamWrap.streamBaseState;
  const kRead = streamWrap.kReadBytesOrError;
  const kAsync = streamWrap.kLastWriteWasAsync;
  if (typeof TCP !== "function" || typeof TCPConnectWrap !== "function" || typeof WriteWrap !== "function" || typeof ShutdownWrap !== "function") {
    return "tcp_wrap/stream_wrap lack TCP, TCPConnectWrap, WriteWrap or ShutdownWrap";
  }
  if (typeof SOCKET !== "number" || typeof SERVER !== "number" || typeof REUSEPORT !== "number") {
    return "tcp_wrap.constants lacks SOCKET, SERVER or UV_TCP_REUSEPORT";
  }
  if (!(state instanceof Int32Array) || typeof kRead !== "number" || typeof kAsync !== "number" || kRead >= state.length || kAsync >= state.length) {
    return "stream_wrap.streamBaseState or its indices are not as expected";
  }
  if (typeof uv.UV_EOF !== "number") return "uv.UV_EOF is missing";
  const missing = TCP_METHODS.filter((m) => typeof (TCP.prototype as unknown as Record<string, unknown>)[m] !== "function");
  if (missing.length > 0) return `TCP handles lack ${missing.join(", ")}`;
  if (!("onread" in TCP.prototype)) return "TCP handles have no onread";
  return {
    newTcp: () => new TCP(SOCKET),
    newServer: () => new TCP(SERVER) as unknown as ServerHandle,
    REUSEPORT,
    newConnectRequest: () => new TCPConnectWrap(),
    newWriteRequest: () => new WriteWrap(),
    newShutdownRequest: () => new ShutdownWrap(),
    readResult: () => state[kRead]!,
    lastWriteWasAsync: () => state[kAsync] !== 0,
    UV_EOF: uv.UV_EOF,
  };
}

/** A libuv error status as its code ("ECONNRESET"). */
export function errorCode(status: number): string {
  return util.getSystemErrorName(status);
}

/** An accepted connection's handle is a TCP handle. */
export function acceptedTcp(handle: AcceptedHandle): TcpHandle {
  return handle as unknown as TcpHandle;
}
