import type { BackendView } from "../pool/pool.ts";
import type { Picker } from "./picker.ts";

/**
 * The backend with the fewest active connections per unit of weight; among equal ones the
 * next at or after a rotating cursor, so equal backends share evenly even when all idle.
 *
 * A tournament tree (typed arrays, leaves = routable backends) holds the minimum of
 * active/weight over each subtree, compared exactly in integers (a₁·w₂ vs a₂·w₁). A pick
 * reads the minimum at the root and descends to the first leaf at or after the cursor
 * that reaches it: O(log N), no allocation. A leaf changes only when this thread opens or
 * closes a connection there (connectionOpened/connectionClosed), O(log N) each.
 *
 * How exact with several data-plane threads: the counts themselves live in shared memory
 * (`active`, changed with Atomics by every thread), but each thread keeps its own tree.
 * A leaf is re-read from shared memory whenever this thread touches it: on its own opens
 * and closes, on the winner of every pick (re-checked before it is returned), and one
 * more leaf per pick in rotation, so every leaf is refreshed at least once per N picks.
 * So with one thread the pick is exactly a minimum; with several, the winner's count is
 * current at the moment of the pick, and another backend can look busier (or idler) than
 * it is only by the other threads' opens and closes on it since this thread last touched
 * it — and no backend is ever handed out on a stale low count, because the winner is
 * re-read. Two threads picking at the same instant may both choose the same idle backend.
 */
export class LeastConnectionsPicker implements Picker {
  private readonly backends: readonly BackendView[];
  private readonly shared: Int32Array;
  private readonly n: number;
  /** Leaves start here in `tree` (a power of two ≥ n). */
  private readonly base: number;
  /** Node → index of the best leaf below it, -1 for none. tree[1] is the root. */
  private readonly tree: Int32Array;
  private readonly active: Int32Array;
  private readonly weight: Int32Array;
  /** slot → leaf, -1 where this picker has no backend on that slot. */
  private readonly leafOfSlot: Int32Array;
  private cursor = 0;
  private scrub = 0;

  constructor(backends: readonly BackendView[], shared: Int32Array, previous?: Picker) {
    this.backends = backends;
    this.shared = shared;
    const n = backends.length;
    this.n = n;
    let base = 1;
    while (base < n) base <<= 1;
    this.base = base;
    this.tree = new Int32Array(2 * base).fill(-1);
    this.active = new Int32Array(n);
    this.weight = new Int32Array(n);
    let maxSlot = -1;
    for (const b of backends) if (b.slot > maxSlot) maxSlot = b.slot;
    this.leafOfSlot = new Int32Array(maxSlot + 1).fill(-1);
    for (let i = 0; i < n; i++) {
      const b = backends[i]!;
      this.weight[i] = b.weight;
      this.active[i] = this.read(b.slot);
      this.leafOfSlot[b.slot] = i;
      this.tree[base + i] = i;
    }
    for (let node = base - 1; node >= 1; node--) this.tree[node] = this.better(this.tree[2 * node]!, this.tree[2 * node + 1]!);
    if (previous instanceof LeastConnectionsPicker && n > 0) this.cursor = previous.cursor % n;
  }

  pick(_clientIp: string, attempt: number): BackendView | undefined {
    if (this.n === 0) return undefined;
    // Keep other threads' counts flowing in: one leaf per pick, in rotation.
    this.refresh(this.scrub);
    this.scrub = this.scrub + 1 === this.n ? 0 : this.scrub + 1;
    let chosen = this.choose(attempt);
    // The winner's count may have moved on another thread since we last looked.
    if (this.refresh(chosen)) chosen = this.choose(attempt);
    this.cursor = chosen + 1 === this.n ? 0 : chosen + 1;
    return this.backends[chosen];
  }

  connectionOpened(slot: number): void {
    this.touch(slot);
  }

  connectionClosed(slot: number): void {
    this.touch(slot);
  }

  /**
   * The first pick (attempt 0) is a global minimum: the first leaf at or after the cursor
   * that reaches the root's value. A retry is the least loaded at or after the cursor (the
   * cursor sits just past the backend handed out last), so successive retries walk the
   * ring and never return the backend that just failed while it is still the minimum.
   */
  private choose(attempt: number): number {
    const root = this.tree[1]!;
    if (attempt === 0) {
      const found = this.firstReaching(1, 0, this.base, this.cursor, this.active[root]!, this.weight[root]!);
      return found >= 0 ? found : this.firstReaching(1, 0, this.base, 0, this.active[root]!, this.weight[root]!);
    }
    const found = this.bestFrom(this.cursor);
    return found >= 0 ? found : root;
  }

  /** First leaf ≥ from, in the subtree `node` covering [lo, hi), whose ratio equals a/w. */
  private firstReaching(node: number, lo: number, hi: number, from: number, a: number, w: number): number {
    const best = this.tree[node]!;
    if (hi <= from || best < 0 || this.active[best]! * w !== a * this.weight[best]!) return -1;
    if (node >= this.base) return best;
    const mid = (lo + hi) >>> 1;
    const left = this.firstReaching(2 * node, lo, mid, from, a, w);
    return left >= 0 ? left : this.firstReaching(2 * node + 1, mid, hi, from, a, w);
  }

  /** Best leaf in [from, n): range minimum over the O(log N) canonical nodes, left to right. */
  private bestFrom(from: number): number {
    let best = -1;
    let lo = from + this.base;
    let hi = 2 * this.base; // exclusive
    // Standard bottom-up range query; nodes on the left edge come in index order, and
    // `better` prefers the lower index on ties, so the combination order does not matter.
    while (lo < hi) {
      if (lo & 1) best = this.better(best, this.tree[lo++]!);
      if (hi & 1) best = this.better(best, this.tree[--hi]!);
      lo >>>= 1;
      hi >>>= 1;
    }
    return best;
  }

  private touch(slot: number): void {
    if (slot >= this.leafOfSlot.length) return;
    const leaf = this.leafOfSlot[slot]!;
    if (leaf >= 0) this.refresh(leaf);
  }

  /** Re-reads a leaf's shared count; returns whether it changed (the tree then is updated). */
  private refresh(leaf: number): boolean {
    const now = this.read(this.backends[leaf]!.slot);
    if (now === this.active[leaf]) return false;
    this.active[leaf] = now;
    for (let node = (leaf + this.base) >>> 1; node >= 1; node >>>= 1) {
      this.tree[node] = this.better(this.tree[2 * node]!, this.tree[2 * node + 1]!);
    }
    return true;
  }

  private read(slot: number): number {
    // A count can dip below zero only transiently across threads; never let it sort first.
    const value = Atomics.load(this.shared, slot);
    return value < 0 ? 0 : value;
  }

  /** The leaf with the lower active/weight (exact: products stay below 2^53), lower index on ties. */
  private better(i: number, j: number): number {
    if (i < 0) return j;
    if (j < 0) return i;
    const left = this.active[i]! * this.weight[j]!;
    const right = this.active[j]! * this.weight[i]!;
    if (left !== right) return left < right ? i : j;
    return i < j ? i : j;
  }
}
