import { createHash, timingSafeEqual } from "node:crypto";
import { BlockList, isIP } from "node:net";
import type { HostPort } from "../pool/address.ts";

/**
 * Checks `Authorization: Bearer <token>`. Both sides are hashed first so the
 * comparison is constant-time and of equal length whatever the client sends: neither
 * the token's content nor its length leaks through timing.
 */
export class BearerAuth {
  private readonly digest: Buffer | undefined;

  constructor(token: string) {
    this.digest = token === "" ? undefined : sha256(token);
  }

  get enabled(): boolean {
    return this.digest !== undefined;
  }

  /** Undefined when the request may pass; otherwise why it may not. */
  refusal(header: string | undefined): string | undefined {
    if (this.digest === undefined) return undefined;
    if (header === undefined || header === "") return 'missing bearer token: send "Authorization: Bearer <token>"';
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
    if (!match) return 'malformed Authorization header: expected "Bearer <token>"';
    return timingSafeEqual(sha256(match[1]!), this.digest) ? undefined : "invalid bearer token";
  }
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/** Whether only this machine can reach an address the API listens on. */
export function isLoopback(listen: HostPort): boolean {
  const host = listen.host;
  if (host === "localhost") return true;
  const family = isIP(host);
  // "" is every interface; a DNS name may resolve anywhere.
  if (family === 0) return false;
  // Built per call (start-up only) rather than kept as module state.
  const loopback = new BlockList();
  loopback.addSubnet("127.0.0.0", 8, "ipv4");
  loopback.addAddress("::1", "ipv6");
  // Also matches IPv4-mapped IPv6 such as ::ffff:127.0.0.1.
  return loopback.check(host, family === 4 ? "ipv4" : "ipv6");
}

/**
 * The reason the API must not start, if any: an admin API anyone on the network could
 * use to redirect traffic is refused unless the operator opted in explicitly.
 */
export function exposureProblem(api: { listen: HostPort; token: string; allowUnauthenticated: boolean }): string | undefined {
  if (api.token !== "" || api.allowUnauthenticated || isLoopback(api.listen)) return undefined;
  const where = api.listen.host === "" ? `every interface (${api.listen.key})` : api.listen.key;
  return (
    `api.listen serves ${where}, which is not loopback, without a token: ` +
    "set api.token (or GOBALANCER_API_TOKEN), or set api.allow_unauthenticated: true to allow it"
  );
}
