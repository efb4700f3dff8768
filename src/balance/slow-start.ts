import type { Algorithm } from "../config/schema.ts";
import type { BackendView, Snapshot } from "../pool/pool.ts";
import { SHARE_FULL } from "../pool/slow-start.ts";
import type { Picker, PickerContext } from "./picker.ts";
import { createPicker } from "./registry.ts";

/**
 * The picker for a snapshot, with slow start applied (pool/slow-start.ts ramps each
 * returning backend's share in steps; this turns shares into what pickers read).
 *
 * While some backend ramps, every routable backend is given weight × share (share in
 * tenths: SHARE_FULL once ramped), so a ramping backend gets its fraction of what its
 * weight alone would give. round_robin ignores weights, so during a ramp it picks by
 * smooth weighted round robin over 1 × share, which is round robin again once all shares
 * are full. ip_hash is not ramped: a client's backend must not depend on the time.
 * Each ramp step is one snapshot, so this runs a bounded number of times per ramp.
 */
export function slowStartPicker(algorithm: Algorithm, snapshot: Snapshot, context: PickerContext, previous?: Picker): Picker {
  if (!snapshot.ramping || algorithm === "ip_hash") return createPicker(algorithm, snapshot.routable, context, previous);
  const ramped = snapshot.routable.map((view): BackendView => {
    const weight = algorithm === "round_robin" ? 1 : view.weight;
    return { ...view, weight: weight * (view.share ?? SHARE_FULL) };
  });
  return createPicker(algorithm === "round_robin" ? "weighted" : algorithm, ramped, context, previous);
}
