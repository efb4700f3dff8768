import { writeIPv4, writeIPv6 } from "./ip-bytes.ts";

/**
 * What both versions of the PROXY protocol codec share (proxy-protocol.ts is the entry):
 * the parse results and the scratch space addresses pass through.
 */

/** Where a connection comes from or goes to, as node:net reports it ("10.0.0.1", "::1"). */
export interface ProxyEndpoint {
  ip: string;
  port: number;
}

/** A complete, valid header. */
export interface ProxyHeader {
  readonly status: "done";
  readonly version: 1 | 2;
  /** The header's length: the client's own bytes start right after it. */
  readonly consumed: number;
  /**
   * "local": the sending proxy opened the connection itself (a health check). v1 cannot
   * say so; its UNKNOWN is "proxy" without addresses.
   */
  readonly command: "proxy" | "local";
  /**
   * Absent when the header carries no usable address (v1 UNKNOWN, v2 LOCAL, or a family
   * other than TCP over IPv4/IPv6): the connection's real peer stands.
   */
  readonly source?: ProxyEndpoint | undefined;
  readonly destination?: ProxyEndpoint | undefined;
}

export type ProxyParseResult =
  | { readonly status: "incomplete" }
  | { readonly status: "invalid"; readonly reason: string }
  | ProxyHeader;

/** The longest v1 line, CRLF included (the specification's worst case). */
export const V1_MAX = 107;
/**
 * The most a caller has to buffer before parseProxyHeader is no longer "incomplete": a
 * full buffer this size always parses as done or invalid. The cap is on v2, whose length
 * field allows far more. The bytes are held per connection until its header is complete,
 * so the cap bounds what an upstream can pin; it leaves room for the largest address block
 * (AF_UNIX) and the registered TLVs at sizes seen in practice, a client certificate
 * included, which is the only one that grows large.
 */
export const PROXY_HEADER_MAX = 4096;

// Scratch space, per thread (like relay.ts's read buffer). `addresses` holds a source at 0
// and a destination at 16, as IPv6 (IPv4 mapped) when encoding; `text` holds a v1 line
// being written or an address being formatted.
export const addresses = Buffer.allocUnsafeSlow(32);
export const text = Buffer.allocUnsafeSlow(V1_MAX);

export const INCOMPLETE: ProxyParseResult = Object.freeze({ status: "incomplete" });
export const invalid = (reason: string): ProxyParseResult => Object.freeze({ status: "invalid", reason });

/** A parsed header (the addresses are new strings; nothing else is allocated). */
export function done(version: 1 | 2, consumed: number, command: "proxy" | "local", source: ProxyEndpoint | undefined, destination: ProxyEndpoint | undefined): ProxyHeader {
  return { status: "done", version, consumed, command, source, destination };
}

/** The 4 (IPv4) or 16 bytes at src[o…) as node:net writes the address, through `text`. */
export function formatIP(ipv4: boolean, src: Uint8Array, o: number): string {
  return text.toString("latin1", 0, ipv4 ? writeIPv4(text, 0, src, o) : writeIPv6(text, 0, src, o));
}
