import type { HostPort } from "../pool/address.ts";
import type { AdminState, BackendInfo, BackendOptions } from "../pool/pool.ts";

/** A PUT on a backend: a weight (null clears the API's override), an admin state, or both. */
export interface BackendUpdate {
  weight?: number | null;
  state?: AdminState;
}

/** An API backend's weight when its override is cleared: the default, as for a POST without one. */
export const DEFAULT_WEIGHT = 1;

/**
 * How the API's changes reach the pool and the store: file-changes.ts (this replica's
 * state file) or shared-changes.ts (a store every replica follows). Every method that
 * changes something resolves only once the change is stored and the data plane routes
 * by it, and leaves the pool as it was when it throws.
 */
export interface ChangeFlow {
  /** Loads what is stored and applies it; for a shared store, also starts following it. */
  restore(): Promise<void>;
  /** Adds a backend owned by the API. Throws PoolError "exists" if any source has it. */
  add(address: HostPort, weight: number, options: BackendOptions): Promise<BackendInfo>;
  /** A weight and/or an admin state on any backend. Throws PoolError "not_found". */
  update(address: HostPort, change: BackendUpdate): Promise<BackendInfo>;
  /** Removes an API backend. Throws PoolError "not_found", or "owned" for others' backends. */
  remove(address: HostPort): Promise<void>;
  /** Resolves once no change is in flight. */
  settled(): Promise<void>;
  /** Stops following the store (after settled). */
  stop(): Promise<void>;
}

/** A change that kept meeting other replicas' changes to the same backend (API 409). */
export class ChangeConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ChangeConflictError";
  }
}
