import type { BackendView } from "../pool/pool.ts";
import type { Picker } from "./picker.ts";

/** Each routable backend in turn: over k·N picks, every backend gets exactly k. O(1). */
export class RoundRobinPicker implements Picker {
  private readonly backends: readonly BackendView[];
  private cursor: number;

  constructor(backends: readonly BackendView[], previous?: Picker) {
    this.backends = backends;
    // Carry the cursor over a pool change so a change does not restart the rotation at
    // the first backend (which would load it more than the others).
    this.cursor = previous instanceof RoundRobinPicker ? previous.cursor % Math.max(backends.length, 1) : 0;
  }

  pick(): BackendView | undefined {
    const n = this.backends.length;
    if (n === 0) return undefined;
    const chosen = this.backends[this.cursor]!;
    this.cursor = this.cursor + 1 === n ? 0 : this.cursor + 1;
    return chosen;
  }
}
