import type { DesiredBackend, SourceKind } from "../pool/pool.ts";

/**
 * A place backends come from. A source reports its *full* desired set each time it
 * learns something (never deltas), so a missed event or a reconnect cannot leave a
 * stale backend behind: the pool reconciles the source's claims to exactly that set.
 */
export interface DiscoverySource {
  readonly kind: SourceKind;
  /** Begins discovery; resolves once the first set is applied or retrying has begun. */
  start(): Promise<void>;
  /** Stops watching and releases every timer and connection. */
  stop(): Promise<void>;
}

/** How a source hands its desired set to the pool. */
export type ApplyDesired = (desired: readonly DesiredBackend[]) => void;
