import type { Algorithm } from "../config/schema.ts";
import type { BackendView, Snapshot } from "../pool/pool.ts";
import { SHARE_FULL } from "../pool/slow-start.ts";
import type { Picker, PickerContext } from "./picker.ts";
import { createPicker, rampOf } from "./registry.ts";

/**
 * The picker for a snapshot, with slow start applied (pool/slow-start.ts ramps each
 * returning backend's share in steps; this turns shares into what pickers read).
 *
 * While some backend ramps, every routable backend is given weight × share (share in
 * tenths: SHARE_FULL once ramped), so a ramping backend gets its fraction of what its
 * weight alone would give; which weight, and which picker reads it, is the algorithm's
 * ramp (registry.ts). An algorithm without one is not ramped.
 * Each ramp step is one snapshot, so this runs a bounded number of times per ramp.
 */
export function slowStartPicker(algorithm: Algorithm, snapshot: Snapshot, context: PickerContext, previous?: Picker): Picker {
  const ramp = snapshot.ramping ? rampOf(algorithm) : undefined;
  if (ramp === undefined) return createPicker(algorithm, snapshot.routable, context, previous);
  const equal = ramp.weight === "equal";
  const ramped = snapshot.routable.map((view): BackendView => ({ ...view, weight: (equal ? 1 : view.weight) * (view.share ?? SHARE_FULL) }));
  return ramp.build(ramped, context, previous);
}
