import type { BackendView } from "../pool/pool.ts";

// The interfaces only: which picker serves which algorithm is registry.ts's, so that
// this file imports none of them (the pickers import it).

/**
 * Chooses a backend for one new connection. Built from a snapshot's routable backends
 * whenever the pool changes, so `pick` itself must be O(1) or O(log N) and allocate
 * nothing: it runs once per accepted connection.
 */
export interface Picker {
  /**
   * pick() reads the client's address (ip_hash): the data plane then looks it up for
   * every connection, which it otherwise skips.
   */
  readonly needsClientAddress?: boolean;
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
