import type { Picker, PickerContext } from "../balance/picker.ts";
import { createPicker } from "../balance/registry.ts";
import { slowStartPicker } from "../balance/slow-start.ts";
import type { Algorithm } from "../config/schema.ts";
import type { RateLimitedLog } from "../log/rate-limit.ts";
import { GLOBAL_RR_TICKET, type CounterView } from "../pool/counters.ts";
import type { BackendView, Snapshot } from "../pool/pool.ts";
import { BackendQueue } from "./backend-queue.ts";
import type { Connection } from "./connection.ts";
import { QUEUE_TIMEOUT } from "./termination.ts";

/** Picks a retry (or a look for room) may make before it stops asking the picker. */
const MAX_PICKS = 16;

/**
 * Which backend a connection gets: the algorithm's pick from the latest snapshot, a
 * backend not tried yet on a retry, and, where backends have a `max_connections`, one
 * with room, or a place in the queue (backend-queue.ts). Counts each connection on its
 * backend from the dial on (so least_connections sees it) and gives it back at the end.
 */
export class BackendChooser {
  private readonly counters: CounterView;
  private readonly warn: RateLimitedLog;
  private readonly threaded: boolean;
  private readonly context: PickerContext;
  private algorithm: Algorithm;
  private picker: Picker;
  private snapshot: Snapshot | null = null;
  readonly queue: BackendQueue;

  constructor(opts: { algorithm: Algorithm; queueTimeoutMs: number; counters: CounterView; warn: RateLimitedLog; threaded: boolean }) {
    this.counters = opts.counters;
    this.warn = opts.warn;
    this.threaded = opts.threaded;
    this.algorithm = opts.algorithm;
    this.context = {
      active: opts.counters.active,
      countsChangedElsewhere: opts.threaded,
      tickets: opts.counters.global,
      ticketIndex: GLOBAL_RR_TICKET,
    };
    this.picker = createPicker(opts.algorithm, [], this.context);
    this.queue = new BackendQueue({
      timeoutMs: opts.queueTimeoutMs,
      counters: opts.counters,
      findRoom: (conn) => this.pickWithRoom(conn),
      expired: (conn) => conn.close(QUEUE_TIMEOUT),
    });
  }

  /** Whether the picker reads the client's address (see Picker). */
  get needsClientAddress(): boolean {
    return this.picker.needsClientAddress === true;
  }

  /** The next connection picks from `snapshot`. */
  setSnapshot(snapshot: Snapshot): void {
    this.snapshot = snapshot;
    this.picker = slowStartPicker(this.algorithm, snapshot, this.context, this.picker);
    // A new backend, a raised limit: queued clients may fit now.
    if (this.queue.size > 0) this.queue.roomFreed();
  }

  /**
   * A reload changed the algorithm: a picker for it over the current snapshot (the old
   * picker is reused only where its own fromPrevious accepts it).
   */
  setAlgorithm(algorithm: Algorithm): void {
    if (algorithm === this.algorithm) return;
    this.algorithm = algorithm;
    if (this.snapshot !== null) this.setSnapshot(this.snapshot);
    else this.picker = createPicker(algorithm, [], this.context);
  }

  /**
   * The backend for conn's next attempt, its count taken; undefined when there is none.
   * With connection limits, one with room; when every backend is full the client waits
   * in the queue, or is refused when there is none (null either way: the connection is
   * the queue's, or closed).
   */
  acquire(conn: Connection): BackendView | undefined | null {
    const first = conn.attempt === 0;
    const limited = this.snapshot?.limited === true;
    // First come, first served: while others wait for room (on any thread), a newcomer
    // waits behind them, even when a place is free now: it is theirs, and the wake-up that
    // serves them (backend-queue.ts) is on its way.
    if (limited && first && this.queue.timeout > 0 && this.queue.anyWaiting) {
      this.queue.add(conn);
      return null;
    }
    let view = first ? this.picker.pick(conn.clientIp, conn.picks++) : this.pickUntried(conn);
    if (view === undefined) {
      if (first) this.warn.warn("no_backend", {}, "connection closed: no healthy backend");
      return undefined;
    }
    if (!limited) {
      this.counters.opened(view.slot);
      return this.opened(view);
    }
    if (this.takePlace(view)) return this.opened(view);
    view = this.pickWithRoom(conn);
    if (view !== undefined) return view;
    if (!first) return undefined; // every other backend is full: the last dial failure stands
    if (this.queue.timeout > 0) {
      this.queue.add(conn);
    } else {
      this.warn.warn("queue_full", {}, "connection refused: every backend is at its max_connections");
      conn.close(QUEUE_TIMEOUT);
    }
    return null;
  }

  /** Gives back a connection's count, with the bytes it moved since last counted. */
  release(view: BackendView, bytesIn: number, bytesOut: number): void {
    this.counters.closed(view.slot, bytesIn, bytesOut);
    this.picker.connectionClosed?.(view.slot);
    if ((view.maxConnections ?? 0) > 0) {
      this.queue.roomFreed();
      if (this.threaded) this.counters.roomFreed();
    }
  }

  /** Counts a connection on `view` unless it is at its limit. */
  private takePlace(view: BackendView): boolean {
    const max = view.maxConnections ?? 0;
    if (max === 0) {
      this.counters.opened(view.slot);
      return true;
    }
    return this.counters.openedWithin(view.slot, max);
  }

  /**
   * A backend with room for `conn` that it has not tried, its place taken, or undefined.
   * The picker is asked first (so the algorithm still decides among backends with room);
   * only when every backend it offered was full is the routable set scanned in order.
   * The scan costs O(N), and runs only while limits are being hit.
   */
  private pickWithRoom(conn: Connection): BackendView | undefined {
    const routable = this.snapshot?.routable ?? [];
    const tries = Math.min(routable.length, MAX_PICKS);
    for (let i = 0; i < tries; i++) {
      const view = this.picker.pick(conn.clientIp, conn.picks++);
      if (view === undefined) return undefined;
      if (!tried(conn, view) && this.takePlace(view)) return this.opened(view);
    }
    for (let i = 0; i < routable.length; i++) {
      const view = routable[(conn.picks + i) % routable.length]!;
      if (!tried(conn, view) && this.takePlace(view)) return this.opened(view);
    }
    return undefined;
  }

  private opened(view: BackendView): BackendView {
    this.picker.connectionOpened?.(view.slot);
    return view;
  }

  /**
   * A retry goes to a backend this client has not tried yet. Concurrent clients move the
   * pickers on between our attempts, so the next pick may be one we already failed on:
   * pick again, a bounded number of times. Only failed dials get here.
   */
  private pickUntried(conn: Connection): BackendView | undefined {
    for (let i = 0; i < MAX_PICKS; i++) {
      const view = this.picker.pick(conn.clientIp, conn.picks++);
      if (view === undefined) return undefined;
      if (!tried(conn, view)) return view;
    }
    return undefined;
  }
}

function tried(conn: Connection, view: BackendView): boolean {
  return view.slot === conn.triedFirst || conn.triedMore?.includes(view.slot) === true;
}
