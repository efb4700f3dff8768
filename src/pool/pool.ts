import type { Logger } from "pino";
import type { HostPort } from "./address.ts";
import { CounterTable, type BackendStats } from "./counters.ts";
import { SHARE_FULL, SlowStart } from "./slow-start.ts";

import { Backend, claimOf, sameClaim, type AdminState, type BackendOptions, type BackendStatus, type BackendView, type DesiredBackend, type ProxyProtocol, type SourceClaim, type SourceKind } from "./backend.ts";

export { ADMIN_STATES, PROXY_PROTOCOLS } from "./backend.ts";
export type { AdminState, BackendOptions, BackendStatus, BackendView, DesiredBackend, ProxyProtocol, SourceKind } from "./backend.ts";

/**
 * An immutable picture of the pool, published on every change. `routable` holds the
 * backends that may take new connections (healthy, not draining), in a stable order.
 */
export interface Snapshot {
  readonly version: number;
  readonly routable: readonly BackendView[];
  readonly total: number;
  /** Some routable backend has a connection limit: the data plane checks room on pick. */
  readonly limited: boolean;
  /** Some routable backend is ramping up (share < SHARE_FULL). */
  readonly ramping: boolean;
  /** `routable` holds backup backends: no primary is routable. */
  readonly onBackups: boolean;
}

/** The full state of one backend, for the API. */
export interface BackendInfo extends BackendStats {
  address: string;
  weight: number;
  healthy: boolean;
  status: BackendStatus;
  source: SourceKind;
  lastCheckedAt: Date | null;
  lastError: string | null;
  /** The backend's slot in the shared counters (counters.ts). */
  slot: number;
  state: AdminState;
  maxConnections: number;
  backup: boolean;
  /** What this backend asked for; undefined: the global setting. */
  proxyProtocol: ProxyProtocol | undefined;
  /** Tenths of its weight it currently gets (slow start); 10 when not ramping. */
  share: number;
  /** Active health checks so far, by outcome. */
  checksPassed: number;
  checksFailed: number;
}

/** Health-relevant facts the pool reports when membership changes. */
export interface MembershipChange {
  readonly added: readonly BackendView[];
  readonly removed: readonly BackendView[];
}

export class PoolError extends Error {
  readonly kind: "exists" | "not_found" | "owned";
  constructor(kind: PoolError["kind"], message: string) {
    super(message);
    this.name = "PoolError";
    this.kind = kind;
  }
}

/**
 * All backends, keyed by canonical address, with membership per source. Discovery,
 * health checking and the API write here; every change publishes a new Snapshot that
 * the data plane reads. Nothing here runs per connection.
 */
export class BackendPool {
  readonly counters: CounterTable;
  private readonly backends = new Map<string, Backend>();
  private readonly log: Logger;
  private version = 0;
  private current: Snapshot = { version: 0, routable: [], total: 0, limited: false, ramping: false, onBackups: false };
  private readonly slowStart: SlowStart;
  private readonly now: () => number;
  private readonly snapshotListeners: Array<(s: Snapshot) => void> = [];
  private readonly membershipListeners: Array<(c: MembershipChange) => void> = [];
  private readonly adminListeners: Array<(view: BackendView, state: AdminState, previous: AdminState) => void> = [];

  /** `now`: a monotonic clock in milliseconds, for slow start (default performance.now). */
  constructor(opts: { logger: Logger; counters: CounterTable; now?: () => number }) {
    this.log = opts.logger;
    this.counters = opts.counters;
    this.now = opts.now ?? (() => performance.now());
    this.slowStart = new SlowStart(() => this.publish({ added: [], removed: [] }));
  }

  /**
   * Ramps backends that join or come back up from now on over `ms` (0: off). Backends
   * already routable are left at full share: at start-up nothing ramps.
   */
  setSlowStart(ms: number): void {
    if (ms === 0 && !this.slowStart.enabled) return;
    this.slowStart.setDuration(ms);
    this.publish({ added: [], removed: [] });
  }

  /** Stops the slow-start timer (shutdown). */
  stop(): void {
    this.slowStart.cancel();
  }

  snapshot(): Snapshot {
    return this.current;
  }

  /** Called with every new snapshot (synchronously, right after the change). */
  onSnapshot(listener: (s: Snapshot) => void): void {
    this.snapshotListeners.push(listener);
  }

  /** Called when backends join or leave, so health checking can start and stop probes. */
  onMembership(listener: (c: MembershipChange) => void): void {
    this.membershipListeners.push(listener);
  }

  /** Called when an operator changes a backend's admin state (maint pauses its checks). */
  onAdminState(listener: (view: BackendView, state: AdminState, previous: AdminState) => void): void {
    this.adminListeners.push(listener);
  }

  get size(): number {
    return this.backends.size;
  }

  has(key: string): boolean {
    return this.backends.has(key);
  }

  /**
   * Makes `source`'s backends exactly `desired`: adds what is new, updates weights and
   * draining, and drops the source's claim on everything else. One snapshot for the lot.
   */
  reconcile(source: SourceKind, desired: readonly DesiredBackend[]): MembershipChange {
    const added: BackendView[] = [];
    const removed: BackendView[] = [];
    let changed = false;
    const wanted = new Set<string>();
    for (const d of desired) {
      wanted.add(d.address.key);
      const claim = claimOf(d);
      const existing = this.backends.get(d.address.key);
      if (!existing) {
        added.push(this.insert(d.address, source, claim).view);
        changed = true;
        continue;
      }
      const before = existing.claims.get(source);
      if (before && sameClaim(before, claim)) continue;
      const statusBefore = existing.status;
      existing.claims.set(source, claim);
      existing.refreshView();
      if (existing.status !== statusBefore) {
        this.log.info({ backend: existing.address.key, from: statusBefore, to: existing.status, reason: `${source} discovery` }, "backend state changed");
      }
      changed = true;
    }
    for (const backend of this.backends.values()) {
      if (wanted.has(backend.address.key) || !backend.claims.has(source)) continue;
      const statusBefore = backend.status;
      backend.claims.delete(source);
      changed = true;
      if (backend.claims.size === 0) {
        this.delete(backend);
        removed.push(backend.view);
      } else {
        backend.refreshView();
        if (backend.status !== statusBefore) {
          this.log.info({ backend: backend.address.key, from: statusBefore, to: backend.status, reason: `${source} discovery` }, "backend state changed");
        }
      }
    }
    if (changed) this.publish({ added, removed });
    return { added, removed };
  }

  /** Adds one backend on behalf of `source` (the API). */
  add(source: SourceKind, address: HostPort, weight: number, options: BackendOptions = {}): BackendInfo {
    const existing = this.backends.get(address.key);
    if (existing) throw new PoolError("exists", `backend ${address.key} already exists (source: ${existing.owner})`);
    const backend = this.insert(address, source, claimOf({ ...options, weight }));
    this.publish({ added: [backend.view], removed: [] });
    return this.describe(backend);
  }

  /** Removes `source`'s claim on a backend; refuses when another source owns it. */
  remove(source: SourceKind, key: string): void {
    const backend = this.require(key);
    if (!backend.claims.has(source)) {
      throw new PoolError("owned", `backend ${key} is owned by ${backend.owner}, not ${source}; remove it there`);
    }
    backend.claims.delete(source);
    if (backend.claims.size === 0) {
      this.delete(backend);
      this.publish({ added: [], removed: [backend.view] });
    } else {
      backend.refreshView();
      this.publish({ added: [], removed: [] });
    }
  }

  /** Overrides a backend's weight whatever its source (undefined returns to the source's). */
  setWeight(key: string, weight: number | undefined): BackendInfo {
    const backend = this.require(key);
    backend.weightOverride = weight;
    if (backend.refreshView()) {
      this.log.info({ backend: key, weight: backend.weight }, "backend weight changed");
      this.publish({ added: [], removed: [] });
    }
    return this.describe(backend);
  }

  /** An operator's admin state; logs and publishes only when it changes. Throws PoolError "not_found". */
  setAdminState(key: string, state: AdminState): BackendInfo {
    const backend = this.require(key);
    const previous = backend.adminState;
    if (previous !== state) {
      const statusBefore = backend.status;
      backend.adminState = state;
      this.log.info({ backend: key, from: previous, to: state, status: backend.status, status_before: statusBefore }, "backend admin state changed");
      this.publish({ added: [], removed: [] });
      for (const listener of this.adminListeners) listener(backend.view, state, previous);
    }
    return this.describe(backend);
  }

  /** Backends whose admin state is not ready. */
  adminStates(): Array<{ address: string; state: AdminState }> {
    const out: Array<{ address: string; state: AdminState }> = [];
    for (const b of this.backends.values()) if (b.adminState !== "ready") out.push({ address: b.address.key, state: b.adminState });
    return out;
  }

  /** The health checker's verdict. Logs and publishes only when it changes the state. */
  setHealthy(key: string, healthy: boolean, reason: string): void {
    const backend = this.backends.get(key);
    if (!backend || backend.healthy === healthy) return;
    const from = backend.status;
    backend.healthy = healthy;
    if (!healthy) backend.lastError = reason;
    this.log[healthy ? "info" : "warn"]({ backend: key, from, to: backend.status, reason }, "backend state changed");
    this.publish({ added: [], removed: [] });
  }

  /** Records the outcome of one probe, for the API; no snapshot. */
  recordCheck(key: string, at: Date, error: string | null): void {
    const backend = this.backends.get(key);
    if (!backend) return;
    backend.lastCheckedAt = at;
    if (error === null) backend.checksPassed++;
    else {
      backend.checksFailed++;
      backend.lastError = error;
    }
  }

  /** The current view of a backend (what the data plane reads), without reading its counters. */
  view(key: string): BackendView | undefined {
    return this.backends.get(key)?.view;
  }

  get(key: string): BackendInfo | undefined {
    const backend = this.backends.get(key);
    return backend && this.describe(backend);
  }

  list(): BackendInfo[] {
    return Array.from(this.backends.values(), (b) => this.describe(b));
  }

  /** The weight overrides set through the API, for persistence. */
  weightOverrides(): Array<{ address: string; weight: number }> {
    const out: Array<{ address: string; weight: number }> = [];
    for (const b of this.backends.values()) if (b.weightOverride !== undefined) out.push({ address: b.address.key, weight: b.weightOverride });
    return out;
  }

  private insert(address: HostPort, source: SourceKind, claim: SourceClaim): Backend {
    const slot = this.counters.revive(address.key) ?? this.counters.allocate();
    const backend = new Backend(address, slot);
    backend.claims.set(source, claim);
    backend.refreshView();
    this.backends.set(address.key, backend);
    this.log.info({ backend: address.key, weight: backend.weight, source, status: backend.status }, "backend added");
    return backend;
  }

  private delete(backend: Backend): void {
    this.backends.delete(backend.address.key);
    this.counters.retire(backend.address.key, backend.view.slot);
    this.log.info({ backend: backend.address.key }, "backend removed");
  }

  private require(key: string): Backend {
    const backend = this.backends.get(key);
    if (!backend) throw new PoolError("not_found", `backend ${key} not found`);
    return backend;
  }

  private describe(b: Backend): BackendInfo {
    return {
      address: b.address.key,
      weight: b.weight,
      healthy: b.healthy,
      status: b.status,
      source: b.owner,
      lastCheckedAt: b.lastCheckedAt,
      lastError: b.lastError,
      slot: b.view.slot,
      state: b.adminState,
      maxConnections: b.view.maxConnections ?? 0,
      backup: b.view.backup ?? false,
      proxyProtocol: b.view.proxyProtocol,
      share: b.share,
      checksPassed: b.checksPassed,
      checksFailed: b.checksFailed,
      ...this.counters.read(b.view.slot),
    };
  }

  private publish(change: MembershipChange): void {
    const now = this.now();
    const primaries: BackendView[] = [];
    const backups: BackendView[] = [];
    let nextStep = Infinity;
    for (const b of this.backends.values()) {
      const routable = b.routable;
      if (routable && !b.wasRoutable && this.slowStart.enabled) b.rampFrom = now;
      b.wasRoutable = routable;
      b.share = routable ? this.slowStart.share(b.rampFrom, now) : SHARE_FULL;
      if (b.share === SHARE_FULL) b.rampFrom = -1;
      else nextStep = Math.min(nextStep, this.slowStart.nextStepAt(b.rampFrom, now));
      b.refreshView();
      if (routable) (b.view.backup ? backups : primaries).push(b.view);
    }
    this.slowStart.schedule(nextStep, now);
    const onBackups = primaries.length === 0 && backups.length > 0;
    if (onBackups !== this.current.onBackups) {
      if (onBackups) this.log.warn({ backups: backups.length }, "no primary backend routable: using backup backends");
      else if (primaries.length > 0) this.log.info({ primaries: primaries.length }, "primary backends routable again: backups idle");
    }
    const routable = onBackups ? backups : primaries;
    let limited = false;
    let ramping = false;
    for (const v of routable) {
      if ((v.maxConnections ?? 0) > 0) limited = true;
      if ((v.share ?? SHARE_FULL) !== SHARE_FULL) ramping = true;
    }
    this.current = Object.freeze({ version: ++this.version, routable: Object.freeze(routable), total: this.backends.size, limited, ramping, onBackups });
    for (const listener of this.snapshotListeners) listener(this.current);
    if (change.added.length > 0 || change.removed.length > 0) {
      for (const listener of this.membershipListeners) listener(change);
    }
  }
}
