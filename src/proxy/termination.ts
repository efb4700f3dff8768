/**
 * Why a proxied connection ended: one cause per connection, recorded by its close() and
 * counted once (counters.ts), written to the access log and read by the metrics.
 *
 * The names are what users see (access log `termination`, docs). A connection that ended
 * normally is named after the side that sent the first FIN; an abnormal end after the
 * first thing that went wrong.
 */
export const TERMINATIONS = [
  /** The client sent the first FIN; both directions then finished. */
  "client_fin",
  /** The client reset the connection (or a write to it failed); the backend was reset too. */
  "client_rst",
  /** The client left while its backend was being dialled; the dial was abandoned. */
  "client_gone",
  /** The backend sent the first FIN; both directions then finished. */
  "backend_fin",
  /** The backend reset the connection; the client was reset too. */
  "backend_rst",
  /** Every dial allowed was refused (the last one by ECONNREFUSED). */
  "connect_refused",
  /** Every dial allowed failed, the last one by the connect timeout. */
  "connect_timeout",
  /** Every dial allowed failed, the last one otherwise (unreachable, reset, DNS). */
  "connect_error",
  /** No traffic either way for timeouts.idle. */
  "idle_timeout",
  /** No backend was routable when the client arrived, or none was left to retry. */
  "no_backend",
  /** max_connections was reached. */
  "limit",
  /** Still open at the graceful shutdown's deadline. */
  "shutdown",
  /**
   * The ceiling the descriptor limit sets (below max_connections) was reached, or this
   * process ran out of file descriptors (EMFILE/ENFILE) while dialling.
   */
  "descriptors",
  /** Every routable backend was at its max_connections for timeouts.queue. */
  "queue_timeout",
  /**
   * listen_proxy_protocol: the source is not trusted, or its PROXY header was malformed,
   * missing (the client ended or the timeout passed first) or unsupported.
   */
  "proxy_header",
] as const;

export type TerminationName = (typeof TERMINATIONS)[number];

/** A cause as a small integer: an index into TERMINATIONS, kept on the connection. */
export type Termination = number;

const index = (name: TerminationName): Termination => TERMINATIONS.indexOf(name);

export const CLIENT_FIN = index("client_fin");
export const CLIENT_RST = index("client_rst");
export const CLIENT_GONE = index("client_gone");
export const BACKEND_FIN = index("backend_fin");
export const BACKEND_RST = index("backend_rst");
export const CONNECT_REFUSED = index("connect_refused");
export const CONNECT_TIMEOUT = index("connect_timeout");
export const CONNECT_ERROR = index("connect_error");
export const IDLE_TIMEOUT = index("idle_timeout");
export const NO_BACKEND = index("no_backend");
export const LIMIT = index("limit");
export const SHUTDOWN = index("shutdown");
export const DESCRIPTORS = index("descriptors");
export const QUEUE_TIMEOUT = index("queue_timeout");
export const PROXY_HEADER = index("proxy_header");

/** Not ended yet. */
export const OPEN: Termination = -1;

/** The cause a failed dial leaves when it was the last one allowed. */
export function dialFailureCause(code: string | undefined): Termination {
  if (code === "ECONNREFUSED") return CONNECT_REFUSED;
  if (code === "ETIMEDOUT") return CONNECT_TIMEOUT;
  return CONNECT_ERROR;
}
