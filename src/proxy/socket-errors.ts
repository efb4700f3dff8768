/**
 * A socket error as the short reason users read in logs and in the API's last_error:
 * "connect refused" rather than "ECONNREFUSED". Shared by the data plane's dials and the
 * health probes so both name the same failure the same way.
 */
export function socketErrorReason(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case "ECONNREFUSED":
      return "connect refused";
    case "ETIMEDOUT":
      return "connect timeout";
    case "ECONNRESET":
    case "EPIPE":
      return "connection reset";
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return "unreachable";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "DNS lookup failed";
    default:
      return err.code ?? err.message;
  }
}

/**
 * Why a listen failed, in words: the data plane's listeners and the API's say the
 * same thing for the same cause.
 */
export function listenErrorReason(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case "EADDRINUSE":
      return "address already in use";
    case "EACCES":
      return "permission denied";
    case "EADDRNOTAVAIL":
      return "address not available on this host";
    default:
      return err.message;
  }
}
