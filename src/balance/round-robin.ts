import type { BackendView } from "../pool/pool.ts";
import type { Picker, PickerContext } from "./picker.ts";

/**
 * Each routable backend in turn: over k·N picks, every backend gets exactly k. O(1).
 *
 * The turn is a ticket from a counter shared by all data-plane threads (one Atomics.add),
 * so the rotation is exact across threads, not merely per thread, and it carries over
 * pool changes without restarting at the first backend. The counter wraps after 2^32
 * picks, where one rotation is cut short.
 */
export class RoundRobinPicker implements Picker {
  private readonly backends: readonly BackendView[];
  private readonly tickets: Int32Array;
  private readonly index: number;

  constructor(backends: readonly BackendView[], tickets?: Int32Array, index = 0) {
    this.backends = backends;
    this.tickets = tickets ?? new Int32Array(1);
    this.index = tickets ? index : 0;
  }

  /**
   * The picker for a new snapshot. Always a new one: it holds nothing but the list, and
   * the turn lives in the shared counter, so it carries over anyway.
   */
  static fromPrevious(routable: readonly BackendView[], context: PickerContext): RoundRobinPicker {
    return new RoundRobinPicker(routable, context.tickets, context.ticketIndex);
  }

  pick(): BackendView | undefined {
    const n = this.backends.length;
    if (n === 0) return undefined;
    const ticket = Atomics.add(this.tickets, this.index, 1) >>> 0;
    return this.backends[ticket % n];
  }
}
