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
 * progress) can carry over. Each picker's `fromPrevious` decides when it reuses one.
 */
export type PickerFactory = (routable: readonly BackendView[], context: PickerContext, previous?: Picker) => Picker;

/**
 * How a slow-start ramp reaches an algorithm (balance/slow-start.ts): every routable
 * backend is given `weight` × its share, and `build` makes the picker over those weights.
 */
export interface Ramp {
  /** "own": the backend's configured weight; "equal": 1, for an algorithm that ignores weights. */
  readonly weight: "own" | "equal";
  readonly build: PickerFactory;
}

/** What the registry holds per algorithm. */
interface PickerKind {
  readonly build: PickerFactory;
  /** Absent: the algorithm is not ramped. */
  readonly ramp?: Ramp;
}

const KINDS: Record<Algorithm, PickerKind> = {
  // round_robin ignores weights, so a ramp picks by smooth weighted round robin over
  // 1 × share, which is round robin again once all shares are full.
  round_robin: { build: RoundRobinPicker.fromPrevious, ramp: { weight: "equal", build: WeightedPicker.fromPrevious } },
  weighted: { build: WeightedPicker.fromPrevious, ramp: { weight: "own", build: WeightedPicker.fromPrevious } },
  least_connections: { build: LeastConnectionsPicker.fromPrevious, ramp: { weight: "own", build: LeastConnectionsPicker.fromPrevious } },
  // Not ramped: a client's backend must not depend on the time.
  ip_hash: { build: IpHashPicker.fromPrevious },
};

/** Builds the picker for `algorithm` (see PickerFactory). */
export function createPicker(algorithm: Algorithm, routable: readonly BackendView[], context: PickerContext, previous?: Picker): Picker {
  return KINDS[algorithm].build(routable, context, previous);
}

/** How `algorithm` is ramped during slow start; undefined when it is not. */
export function rampOf(algorithm: Algorithm): Ramp | undefined {
  return KINDS[algorithm].ramp;
}
