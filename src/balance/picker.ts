import type { Algorithm } from "../config/schema.ts";
import type { BackendView } from "../pool/pool.ts";
import { RoundRobinPicker } from "./round-robin.ts";

/**
 * Chooses a backend for one new connection. Built from a snapshot's routable backends
 * whenever the pool changes, so `pick` itself must be O(1) or O(log N) and allocate
 * nothing: it runs once per accepted connection.
 */
export interface Picker {
  /**
   * `attempt` numbers this client's picks: 0 for the first choice, then 1, 2, … while
   * the data plane looks for a backend to retry on (it skips backends the client already
   * tried, so it may ask several times). A picker keyed on the client (ip_hash) must give
   * a different deterministic alternative for each attempt.
   * Returns undefined only when there is no routable backend.
   */
  pick(clientIp: string, attempt: number): BackendView | undefined;
}

/** What a picker may read besides the snapshot: live counts shared by all threads. */
export interface PickerContext {
  /** Active connections per backend slot (Atomics.load to read). */
  readonly active: Int32Array;
}

/**
 * Builds the picker for `algorithm`. `previous` is the picker of the last snapshot, so
 * state that should survive a change (a round-robin cursor) can carry over.
 */
export function createPicker(
  algorithm: Algorithm,
  routable: readonly BackendView[],
  _context: PickerContext,
  previous?: Picker,
): Picker {
  switch (algorithm) {
    case "round_robin":
    case "least_connections":
    case "weighted":
    case "ip_hash":
      return new RoundRobinPicker(routable, previous);
  }
}
