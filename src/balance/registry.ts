import type { Algorithm } from "../config/schema.ts";
import type { BackendView } from "../pool/pool.ts";
import { IpHashPicker } from "./ip-hash.ts";
import { LeastConnectionsPicker } from "./least-connections.ts";
import type { Picker, PickerContext } from "./picker.ts";
import { RoundRobinPicker } from "./round-robin.ts";
import { WeightedPicker } from "./weighted.ts";

/**
 * Builds a picker for a new snapshot; `previous` is the last snapshot's picker, so state
 * that should survive a change (a round-robin cursor, an ip_hash table and its build in
 * progress) can carry over.
 */
type PickerFactory = (routable: readonly BackendView[], context: PickerContext, previous?: Picker) => Picker;

/** Each algorithm's picker, and when it reuses the previous one. */
const FACTORIES: Record<Algorithm, PickerFactory> = {
  round_robin: (routable, context) => new RoundRobinPicker(routable, context.tickets, context.ticketIndex),
  // Reuse the previous picker's arrays (the sequence restarts either way).
  weighted: (routable, _context, previous) => {
    if (previous instanceof WeightedPicker) {
      previous.update(routable);
      return previous;
    }
    return new WeightedPicker(routable);
  },
  // Move the changed backends in place: a change costs O(changes), not a rebuild.
  least_connections: (routable, context, previous) => {
    if (previous instanceof LeastConnectionsPicker && previous.sharesCounts(context.active) && previous.fits(routable.length)) {
      previous.update(routable);
      return previous;
    }
    return new LeastConnectionsPicker(routable, context);
  },
  // The table and any build in progress live in the picker: update it in place so a
  // change at a million backends does not start over from an empty table.
  ip_hash: (routable, context, previous) => {
    if (previous instanceof IpHashPicker) {
      previous.update(routable);
      return previous;
    }
    return new IpHashPicker(routable, context);
  },
};

/** Builds the picker for `algorithm` (see PickerFactory). */
export function createPicker(algorithm: Algorithm, routable: readonly BackendView[], context: PickerContext, previous?: Picker): Picker {
  return FACTORIES[algorithm](routable, context, previous);
}
