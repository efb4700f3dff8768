import net from "node:net";
import { unmapped } from "../balance/client-address.ts";
import type { ListenProxyProtocol } from "../config/schema.ts";
import type { RateLimitedLog } from "../log/rate-limit.ts";
import type { BackendView, ProxyProtocol } from "../pool/pool.ts";
import type { Connection } from "./connection.ts";
import { Deadlines } from "./deadlines.ts";
import { encodeProxyHeader, parseProxyHeader, PROXY_HEADER_MAX } from "./proxy-protocol.ts";

/**
 * The PROXY protocol as the data plane uses it (the codec is proxy-protocol.ts):
 * headers read from trusted upstream balancers (`listen_proxy_protocol`), whose client
 * address then stands for the connection's everywhere (ip_hash, the access log, the
 * header sent on), and headers sent to backends (`proxy_protocol`, global or per backend).
 */
export class ProxyHeaders {
  private trustedSources: net.BlockList | null = null;
  private global: ProxyProtocol = "off";
  /** Some routable backend is sent a header: connections need their addresses. */
  private sending = false;
  private routable: readonly BackendView[] = [];
  private readonly waits: Deadlines;
  private readonly warn: RateLimitedLog;

  /** `expired` closes a connection whose header did not arrive in time. */
  constructor(listen: ListenProxyProtocol, global: ProxyProtocol, warn: RateLimitedLog, expired: (conn: Connection) => void) {
    this.warn = warn;
    this.waits = new Deadlines(listen.timeoutMs, (conn) => {
      this.warn.warn("proxy_header_timeout", { client: conn.clientIp }, "connection refused: no PROXY header in time");
      expired(conn);
    });
    this.configure(listen, global);
  }

  configure(listen: ListenProxyProtocol, global: ProxyProtocol): void {
    this.global = global;
    this.waits.setTimeout(listen.timeoutMs);
    this.trustedSources = listen.enabled ? trustedList(listen.trusted) : null;
    this.setBackends(this.routable);
  }

  /** The routable backends changed: whether any is sent a header. */
  setBackends(routable: readonly BackendView[]): void {
    this.routable = routable;
    this.sending = false;
    for (const view of routable) {
      if ((view.proxyProtocol ?? this.global) !== "off") {
        this.sending = true;
        break;
      }
    }
  }

  /** Clients must open with a header (listen_proxy_protocol.enabled). */
  get accepting(): boolean {
    return this.trustedSources !== null;
  }

  /** The client's address is needed: to check the source, or to send it on. */
  get needsClientAddress(): boolean {
    return this.accepting || this.sending;
  }

  /** The address the client connected to is needed, for the header sent on. */
  get needsLocalAddress(): boolean {
    return this.sending;
  }

  /** Whether a header from `ip` is accepted. */
  trusted(ip: string): boolean {
    const family = net.isIPv6(ip) ? "ipv6" : "ipv4";
    return this.trustedSources?.check(ip, family) === true;
  }

  /** The header is awaited from now on, up to listen_proxy_protocol.timeout. */
  started(conn: Connection): void {
    this.waits.add(conn);
  }

  /**
   * Reads the header off the front of `bytes` (connection.ts ConnectionHost.readHeader):
   * its length once complete (its addresses then replace the connection's), 0 while
   * incomplete, -1 when malformed.
   */
  read(conn: Connection, bytes: Buffer): number {
    const header = parseProxyHeader(bytes, bytes.length);
    if (header.status === "incomplete") {
      if (bytes.length < PROXY_HEADER_MAX) return 0;
      this.refused(conn, "PROXY header too long");
      return -1;
    }
    if (header.status === "invalid") {
      this.refused(conn, header.reason);
      return -1;
    }
    // LOCAL, UNKNOWN and non-TCP families carry no client: the real peer stands.
    if (header.command === "proxy" && header.source !== undefined && header.destination !== undefined) {
      conn.clientIp = unmapped(header.source.ip);
      conn.clientPort = header.source.port;
      conn.localIp = unmapped(header.destination.ip);
      conn.localPort = header.destination.port;
    }
    return header.consumed;
  }

  /** The header to send `conn`'s backend first, or null when it gets none. */
  build(conn: Connection): Buffer | null {
    const protocol = conn.view!.proxyProtocol ?? this.global;
    if (protocol === "off") return null;
    return encodeProxyHeader(protocol === "v1" ? 1 : 2, { ip: conn.clientIp, port: conn.clientPort }, { ip: conn.localIp, port: conn.localPort });
  }

  stop(): void {
    this.waits.stop();
  }

  private refused(conn: Connection, reason: string): void {
    this.warn.warn(`proxy_header:${reason}`, { client: conn.clientIp, reason }, "connection refused: bad PROXY header");
  }
}

/** The trusted sources (validated by the config schema) as a BlockList to check against. */
function trustedList(entries: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const entry of entries) {
    const slash = entry.indexOf("/");
    const ip = slash === -1 ? entry : entry.slice(0, slash);
    const family = net.isIPv6(ip) ? "ipv6" : "ipv4";
    if (slash === -1) list.addAddress(ip, family);
    else list.addSubnet(ip, Number(entry.slice(slash + 1)), family);
  }
  return list;
}
