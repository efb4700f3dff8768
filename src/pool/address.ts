import { isIP } from "node:net";

/** A parsed `host:port`. `key` is the canonical spelling that identifies a backend. */
export interface HostPort {
  /** IP literal (IPv6 without brackets) or lower-cased DNS name; "" for "all interfaces". */
  readonly host: string;
  readonly port: number;
  /** Canonical `host:port`, IPv6 bracketed and compressed: the pool's identity for a backend. */
  readonly key: string;
}

// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
const HOSTNAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;

/**
 * Parses `host:port`. Host is IPv4, bracketed IPv6 (`[::1]:80`) or a DNS name.
 * Throws an Error whose message says what is wrong, phrased to follow a field name.
 * `allowEmptyHost` accepts `:8080` (listen on all interfaces); `allowPortZero` lets a
 * listener ask the kernel for a free port.
 */
export function parseHostPort(
  text: string,
  opts: { allowEmptyHost?: boolean; allowPortZero?: boolean } = {},
): HostPort {
  const colon = text.lastIndexOf(":");
  if (colon < 0) throw new Error(`"${text}" must be host:port`);
  let host = text.slice(0, colon);
  const portText = text.slice(colon + 1);

  const min = opts.allowPortZero ? 0 : 1;
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < min || Number(portText) > 65535) {
    throw new Error(`port must be ${min}-65535 (got "${portText}")`);
  }
  const port = Number(portText);

  if (host.startsWith("[") && host.endsWith("]")) {
    const inner = host.slice(1, -1);
    if (isIP(inner) !== 6) throw new Error(`"${inner}" is not a valid IPv6 address`);
    // The WHATWG URL parser gives the RFC 5952 compressed, lower-case form, so "[0:0::1]"
    // and "[::1]" are the same backend.
    host = new URL(`http://[${inner}]/`).hostname.slice(1, -1);
    return { host, port, key: `[${host}]:${port}` };
  }
  if (host.includes(":")) throw new Error(`IPv6 addresses must be bracketed, as in [::1]:${port}`);
  if (host === "") {
    if (!opts.allowEmptyHost) throw new Error("host is missing");
    return { host: "", port, key: `:${port}` };
  }
  if (isIP(host) === 4) return { host, port, key: `${host}:${port}` };
  if (/^[\d.]+$/.test(host)) throw new Error(`"${host}" is not a valid IPv4 address`);
  if (!HOSTNAME.test(host)) throw new Error(`"${host}" is not a valid host name`);
  host = host.toLowerCase().replace(/\.$/, "");
  return { host, port, key: `${host}:${port}` };
}

/** Formats host and port the way parseHostPort's `key` does. */
export function formatHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}
