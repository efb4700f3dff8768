import type { Algorithm } from "../config/schema.ts";
import type { BackendView } from "../pool/pool.ts";
import { IpHashPicker } from "./ip-hash.ts";
import { LeastConnectionsPicker } from "./least-connections.ts";
import { RoundRobinPicker } from "./round-robin.ts";
import { WeightedPicker } from "./weighted.ts";

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
  /** This thread counted a new connection on `slot` (right after CounterView.opened). */
  connectionOpened?(slot: number): void;
  /**
   * This thread gave back a connection's count on `slot` (right after CounterView.closed).
   * The slot may belong to a backend this picker does not hold (it left the pool while
   * the connection was open): then it is ignored.
   */
  connectionClosed?(slot: number): void;
}

/** What a picker may read besides the snapshot: live counts shared by all threads. */
export interface PickerContext {
  /** Active connections per backend slot (Atomics.load to read). */
  readonly active: Int32Array;
  /**
   * Whether other threads change `active` too. When false, every change of a count is
   * this thread's and is reported (connectionOpened/Closed), so least_connections need
   * not re-read counts it was not told about. Default: true.
   */
  readonly countsChangedElsewhere?: boolean;
  /**
   * A counter shared by every data-plane thread, at index `ticketIndex`, so that round
   * robin takes turns across threads rather than per thread. Without it, a local one.
   */
  readonly tickets?: Int32Array;
  readonly ticketIndex?: number;
  /**
   * Runs a slice of background work (an ip_hash table build) later on this thread.
   * Default: setImmediate, unref'd so a build never holds the process open.
   */
  readonly schedule?: (task: () => void) => void;
  /** Monotonic milliseconds, for time-slicing background work. Default: performance.now. */
  readonly now?: () => number;
}

/**
 * Builds the picker for `algorithm`. `previous` is the picker of the last snapshot, so
 * state that should survive a change (a round-robin cursor, an ip_hash table and its
 * build in progress) can carry over.
 */
export function createPicker(
  algorithm: Algorithm,
  routable: readonly BackendView[],
  context: PickerContext,
  previous?: Picker,
): Picker {
  switch (algorithm) {
    case "round_robin":
      return new RoundRobinPicker(routable, context.tickets, context.ticketIndex);
    case "weighted":
      // Reuse the previous picker's arrays (the sequence restarts either way).
      if (previous instanceof WeightedPicker) {
        previous.update(routable);
        return previous;
      }
      return new WeightedPicker(routable);
    case "least_connections":
      // Move the changed backends in place: a change costs O(changes), not a rebuild.
      if (previous instanceof LeastConnectionsPicker && previous.sharesCounts(context.active) && previous.fits(routable.length)) {
        previous.update(routable);
        return previous;
      }
      return new LeastConnectionsPicker(routable, context);
    case "ip_hash":
      // The table and any build in progress live in the picker: update it in place so a
      // change at a million backends does not start over from an empty table.
      if (previous instanceof IpHashPicker) {
        previous.update(routable);
        return previous;
      }
      return new IpHashPicker(routable, context);
  }
}
