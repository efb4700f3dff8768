import type { BackendView } from "../pool/pool.ts";
import type { Picker } from "./picker.ts";

/**
 * Smooth weighted round robin, pick for pick the sequence nginx produces: on every pick
 * each backend's `current` grows by its weight, the largest `current` wins (the first in
 * order on a tie) and the winner's `current` drops by the total weight W. Weights 5,1,1
 * give a a b a c a a, and every W consecutive picks hold each backend exactly weight times.
 *
 * Done literally that is O(N) per pick. It need not be: after t picks a backend of weight
 * w picked c times has current = t·w − W·c, so among backends of EQUAL weight the largest
 * current is the one picked least, the lowest index among those. Within a weight group
 * the picks therefore rotate in index order, and only one candidate per group competes:
 * value t·w − W·c, ties to the lower backend index. A pick costs O(G), G the number of
 * distinct weights (weights are 1-1000, so G ≤ 1000; one to a handful in practice), and
 * allocates nothing. After W picks every current is back at 0, so the state restarts
 * there and no counter grows without bound.
 *
 * A new snapshot restarts the sequence from all-zero currents, as nginx does on reload.
 * Retries (attempt > 0) do not consume the sequence: they walk a plain rotation, so a
 * heavy backend that just failed is not handed out again and again.
 */
export class WeightedPicker implements Picker {
  private readonly backends: readonly BackendView[];
  /** Total weight W: the sequence's period. */
  private readonly total: number;
  /** Picks made in the current period, 0 ≤ t < W. */
  private t = 0;
  /** Per group: its weight, its members' range in `members`, rotation pointer, min count. */
  private readonly groupWeight: Int32Array;
  private readonly groupStart: Int32Array;
  private readonly groupSize: Int32Array;
  private readonly groupNext: Int32Array;
  private readonly groupCount: Int32Array;
  /** Backend indices, grouped by weight, ascending inside each group. */
  private readonly members: Int32Array;
  private retryCursor = 0;

  constructor(backends: readonly BackendView[], previous?: Picker) {
    this.backends = backends;
    const n = backends.length;
    // Counting sort by weight (1..1000) keeps index order inside each group, O(N + 1000).
    let maxWeight = 0;
    let total = 0;
    for (const b of backends) {
      if (b.weight > maxWeight) maxWeight = b.weight;
      total += b.weight;
    }
    this.total = total;
    const perWeight = new Int32Array(maxWeight + 1);
    for (const b of backends) perWeight[b.weight]!++;
    let groups = 0;
    for (let w = 1; w <= maxWeight; w++) if (perWeight[w]! > 0) groups++;
    this.groupWeight = new Int32Array(groups);
    this.groupStart = new Int32Array(groups);
    this.groupSize = new Int32Array(groups);
    this.groupNext = new Int32Array(groups);
    this.groupCount = new Int32Array(groups);
    const offset = new Int32Array(maxWeight + 1);
    // Heaviest group first: it wins most picks, so the scan's best-so-far settles early.
    for (let w = maxWeight, g = 0, at = 0; w >= 1; w--) {
      if (perWeight[w] === 0) continue;
      this.groupWeight[g] = w;
      this.groupStart[g] = at;
      this.groupSize[g] = perWeight[w]!;
      offset[w] = at;
      at += perWeight[w]!;
      g++;
    }
    this.members = new Int32Array(n);
    for (let i = 0; i < n; i++) this.members[offset[backends[i]!.weight]!++] = i;
    if (previous instanceof WeightedPicker && n > 0) this.retryCursor = previous.retryCursor % n;
  }

  pick(_clientIp: string, attempt: number): BackendView | undefined {
    const n = this.backends.length;
    if (n === 0) return undefined;
    if (attempt > 0) {
      const chosen = this.backends[this.retryCursor]!;
      this.retryCursor = this.retryCursor + 1 === n ? 0 : this.retryCursor + 1;
      return chosen;
    }
    const t = ++this.t;
    const W = this.total;
    const groups = this.groupWeight.length;
    let best = -1;
    let bestValue = 0;
    let bestIndex = 0;
    for (let g = 0; g < groups; g++) {
      // Exact in doubles: t·w ≤ W·1000 ≤ 1.7e10 at the 16M-backend limit.
      const value = t * this.groupWeight[g]! - W * this.groupCount[g]!;
      const index = this.members[this.groupStart[g]! + this.groupNext[g]!]!;
      if (best < 0 || value > bestValue || (value === bestValue && index < bestIndex)) {
        best = g;
        bestValue = value;
        bestIndex = index;
      }
    }
    const next = this.groupNext[best]! + 1;
    if (next === this.groupSize[best]) {
      this.groupNext[best] = 0;
      this.groupCount[best]!++;
    } else {
      this.groupNext[best] = next;
    }
    if (t === W) {
      // Every backend got exactly its weight: all currents are 0 again.
      this.t = 0;
      this.groupCount.fill(0);
    }
    return this.backends[bestIndex];
  }
}
