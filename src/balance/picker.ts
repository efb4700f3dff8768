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
   * `attempt` is 0 for the first choice and k after k failed dials for this client;
   * a retry should land on a backend not tried yet where there is one.
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
