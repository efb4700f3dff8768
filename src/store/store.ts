import type { HostPort } from "../pool/address.ts";
import type { AdminState, BackendOptions } from "../pool/pool.ts";

// What the API's changes are, and the two kinds of place they are kept: a store that
// holds one replica's whole state (the state file), and a store that several replicas
// share and follow (etcd). The implementations are file.ts and etcd.ts; open.ts picks one
// from the config.

/** What the API changed, as kept across restarts. */
export interface PersistedState {
  /** Backends added through the API, with their current weight and the options they were added with. */
  readonly backends: ReadonlyArray<ApiBackend>;
  /** Weights set through the API on backends that static config or discovery own. */
  readonly weights: ReadonlyArray<{ readonly address: HostPort; readonly weight: number }>;
  /** Admin states other than ready, on any backend, by address (none when absent). */
  readonly states?: ReadonlyArray<{ readonly address: HostPort; readonly state: AdminState }>;
}

/** A backend added through the API. */
export interface ApiBackend extends BackendOptions {
  readonly address: HostPort;
  readonly weight: number;
}

export const EMPTY_STATE: PersistedState = { backends: [], weights: [], states: [] };

/**
 * A store written whole by one replica: read at start, then every change rewrites it.
 * An interface so tests can make writes fail.
 */
export interface StateStore {
  readonly path: string;
  read(): Promise<PersistedState>;
  write(state: PersistedState): Promise<void>;
}

/**
 * One change to a shared store, on one address, as the keys it sets (a value) or deletes
 * (null); undefined leaves a key alone. `basis` is what the change was decided on, and the
 * store refuses the change ("stale") when it no longer holds:
 * - "absent": no API backend at this address (adding one, or a weight for another owner's);
 * - "present": the API backend this replica knows, the same one (not removed and re-added);
 * - "any": nothing is checked (admin states, removals).
 */
export interface SharedWrite {
  readonly address: HostPort;
  readonly basis: "absent" | "present" | "any";
  readonly backend?: ApiBackend | null;
  readonly weight?: number | null;
  readonly state?: Exclude<AdminState, "ready"> | null;
}

/**
 * A store several replicas share. Each replica follows it and hands every change, its
 * own included, to `onChange` as the whole state it now knows.
 */
export interface SharedStore {
  /** Names the store for logs and errors, e.g. "etcd". */
  readonly name: string;
  /**
   * Starts following the store. Resolves after the first attempt to read it, whether or
   * not it succeeded (an unreachable store is retried in the background).
   */
  start(onChange: (state: PersistedState) => void): Promise<void>;
  stop(): Promise<void>;
  /**
   * Commits `write` atomically. Resolves "done" once the store has committed it and
   * onChange has been called with it; "stale" when its basis no longer holds (onChange
   * has then been called with what the store holds). Throws StoreUnavailableError when
   * the change is certainly not committed, StoreOutcomeUnknownError when the store may
   * have committed it but never said so.
   */
  write(write: SharedWrite): Promise<"done" | "stale">;
}

/** The shared store cannot be reached or refused a change: nothing was changed (API 503). */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreUnavailableError";
  }
}

/**
 * The shared store was sent a change and never said whether it committed it (API 504):
 * the change may be saved, and then every replica applies it, or not. Not a refusal.
 */
export class StoreOutcomeUnknownError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreOutcomeUnknownError";
  }
}

export function isSharedStore(store: StateStore | SharedStore): store is SharedStore {
  return "start" in store;
}
