import type { HostPort } from "./address.ts";
import { SHARE_FULL } from "./slow-start.ts";

// One backend's facts as the pool keeps them, and the immutable view the data plane
// reads. The pool (pool.ts) decides membership and publishes snapshots of these.

/** Where a backend came from. The first source that named it owns it. */
export type SourceKind = "static" | "api" | "docker" | "kubernetes";
export type BackendStatus = "up" | "down" | "draining";
/**
 * What an operator set: `ready` takes connections while healthy; `drain` takes no new
 * ones (open ones go on, health checks too); `maint` as drain, with health checks paused.
 */
export const ADMIN_STATES = ["ready", "drain", "maint"] as const;
export type AdminState = (typeof ADMIN_STATES)[number];

/** PROXY protocol header sent to a backend: off, v1 (text) or v2 (binary). */
export const PROXY_PROTOCOLS = ["off", "v1", "v2"] as const;
export type ProxyProtocol = (typeof PROXY_PROTOCOLS)[number];

/** How a source (static config, the API) may shape one backend beyond its weight. */
export interface BackendOptions {
  /** Most connections open to it at once, over all threads; 0 = no limit. */
  readonly maxConnections?: number;
  /** Used only while no other (non-backup) backend is routable. */
  readonly backup?: boolean;
  /** Header sent to it first; undefined: the global `proxy_protocol`. */
  readonly proxyProtocol?: ProxyProtocol;
}

/** One backend as a source wants it. */
export interface DesiredBackend extends BackendOptions {
  readonly address: HostPort;
  readonly weight: number;
  /** Serving but going away (e.g. a terminating Kubernetes endpoint): no new connections. */
  readonly draining?: boolean;
}

/** What the data plane knows of a backend. Immutable; replaced when anything changes. */
export interface BackendView {
  readonly key: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  /** Index into the shared counters (see counters.ts). */
  readonly slot: number;
  // The pool always sets the fields below; views built elsewhere (tests, benchmarks of
  // the pickers, which read only key, slot and weight) may leave them out.
  /** 0 or absent: no limit (see BackendOptions). */
  readonly maxConnections?: number;
  readonly backup?: boolean;
  /** undefined: the global setting. */
  readonly proxyProtocol?: ProxyProtocol | undefined;
  /**
   * Tenths of its weight it gets while slow start ramps it up (1-10); SHARE_FULL or
   * absent when not ramping. See slow-start.ts.
   */
  readonly share?: number;
}


export interface SourceClaim extends BackendOptions {
  weight: number;
  draining: boolean;
}

export function sameClaim(a: SourceClaim, b: SourceClaim): boolean {
  return (
    a.weight === b.weight &&
    a.draining === b.draining &&
    (a.maxConnections ?? 0) === (b.maxConnections ?? 0) &&
    (a.backup ?? false) === (b.backup ?? false) &&
    a.proxyProtocol === b.proxyProtocol
  );
}

export function claimOf(d: Omit<DesiredBackend, "address">): SourceClaim {
  return {
    weight: d.weight,
    draining: d.draining ?? false,
    maxConnections: d.maxConnections ?? 0,
    backup: d.backup ?? false,
    proxyProtocol: d.proxyProtocol,
  };
}

export class Backend {
  /** Claims by source, in the order the sources named this backend. */
  readonly claims = new Map<SourceKind, SourceClaim>();
  /** Weight set through the API; wins over what sources say. */
  weightOverride: number | undefined;
  healthy = true; // routable until proven down
  adminState: AdminState = "ready";
  lastCheckedAt: Date | null = null;
  lastError: string | null = null;
  checksPassed = 0;
  checksFailed = 0;
  /** Whether the last snapshot counted it routable: a change to true starts slow start. */
  wasRoutable = false;
  /** When slow start began (pool clock), or -1: not ramping. */
  rampFrom = -1;
  share = SHARE_FULL;
  view: BackendView;
  readonly address: HostPort;

  constructor(address: HostPort, slot: number) {
    this.address = address;
    this.view = { key: address.key, host: address.host, port: address.port, weight: 1, slot, maxConnections: 0, backup: false, proxyProtocol: undefined, share: SHARE_FULL };
  }

  /** The owner's claim: its options apply (weight may be overridden). */
  private get claim(): SourceClaim {
    return this.claims.values().next().value!;
  }

  get owner(): SourceKind {
    return this.claims.keys().next().value!;
  }

  get weight(): number {
    return this.weightOverride ?? this.claim.weight;
  }

  get draining(): boolean {
    for (const claim of this.claims.values()) if (!claim.draining) return false;
    return true;
  }

  get status(): BackendStatus {
    if (this.draining || this.adminState !== "ready") return "draining";
    return this.healthy ? "up" : "down";
  }

  get routable(): boolean {
    return this.healthy && !this.draining && this.adminState === "ready";
  }

  /** Rebuilds the immutable view when anything in it changed; returns whether it did. */
  refreshView(): boolean {
    const claim = this.claim;
    const v = this.view;
    const maxConnections = claim.maxConnections ?? 0;
    const backup = claim.backup ?? false;
    if (v.weight === this.weight && v.maxConnections === maxConnections && v.backup === backup && v.proxyProtocol === claim.proxyProtocol && v.share === this.share) {
      return false;
    }
    this.view = { ...v, weight: this.weight, maxConnections, backup, proxyProtocol: claim.proxyProtocol, share: this.share };
    return true;
  }
}

