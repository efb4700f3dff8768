import type { BackendView } from "../pool/pool.ts";
import type { Picker } from "./picker.ts";

/**
 * The backend with the fewest active connections per unit of weight; among equal ones the
 * one picked least recently, which is round robin: idle backends take turns in order.
 *
 * A tournament tree (typed arrays, leaves = routable backends) holds in every node the
 * best leaf below it by (active/weight, last picked, index). active/weight is kept as a
 * double: with counts below 2^31 and weights ≤ 1000, distinct ratios never round to the
 * same double and equal ratios always do, so comparisons are exact. A pick reads the root
 * (O(1)); the winner's new "last picked" reaches the tree with its new count when the data
 * plane reports the open (connectionOpened), and a close does the same: O(log N) each, no
 * allocation.
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
  /**
   * Node k holds its best leaf's key at 4k: [active/weight, last picked, leaf index, -],
   * so the two children of a node share one 64-byte cache line (node 1 is the root;
   * empty leaves have ratio Infinity and index -1). "Last picked" is a pick sequence
   * number, 0 for never.
   */
  private readonly tree: Float64Array;
  private readonly active: Int32Array;
  private readonly weight: Int32Array;
  /** slot → leaf, -1 where this picker has no backend on that slot. */
  private readonly leafOfSlot: Int32Array;
  private seq = 0;
  /** The last winner, whose new `last` is not yet in the tree (-1: none). */
  private pending = -1;
  /** Just past the last winner: where a retry starts looking. */
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
    const tree = new Float64Array(8 * base);
    for (let k = base; k < 2 * base; k++) {
      tree[4 * k] = Infinity;
      tree[4 * k + 2] = -1;
    }
    this.tree = tree;
    this.active = new Int32Array(n);
    this.weight = new Int32Array(n);
    let maxSlot = -1;
    for (const b of backends) if (b.slot > maxSlot) maxSlot = b.slot;
    this.leafOfSlot = new Int32Array(maxSlot + 1).fill(-1);
    // Keep the rotation across a pool change: each backend keeps its "last picked".
    const prev = previous instanceof LeastConnectionsPicker ? previous : null;
    if (prev) this.seq = prev.seq;
    for (let i = 0; i < n; i++) {
      const b = backends[i]!;
      const at = 4 * (base + i);
      this.weight[i] = b.weight;
      this.active[i] = this.read(b.slot);
      tree[at] = this.active[i]! / b.weight;
      tree[at + 2] = i;
      this.leafOfSlot[b.slot] = i;
      if (prev && b.slot < prev.leafOfSlot.length) {
        const old = prev.leafOfSlot[b.slot]!;
        if (old >= 0) tree[at + 1] = prev.tree[4 * (prev.base + old) + 1]!;
      }
    }
    for (let node = base - 1; node >= 1; node--) this.pull(node);
    if (prev && n > 0) this.cursor = prev.cursor % n;
  }

  pick(_clientIp: string, attempt: number): BackendView | undefined {
    if (this.n === 0) return undefined;
    if (this.pending >= 0) this.settle(this.pending);
    // Keep other threads' counts flowing in: one leaf per pick, in rotation.
    this.refresh(this.scrub);
    this.scrub = this.scrub + 1 === this.n ? 0 : this.scrub + 1;
    let chosen = this.choose(attempt);
    // The winner's count may have moved on another thread since we last looked.
    if (this.refresh(chosen)) chosen = this.choose(attempt);
    this.tree[4 * (this.base + chosen) + 1] = ++this.seq;
    this.pending = chosen;
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
   * The first pick (attempt 0) is the root. A retry is the best leaf at or after the
   * cursor (just past the backend handed out last), so successive retries walk the ring
   * and never return the backend that just failed while it is still the least loaded.
   */
  private choose(attempt: number): number {
    const root = this.tree[6]!;
    if (attempt === 0) return root;
    const found = this.bestFrom(this.cursor);
    return found >= 0 ? found : root;
  }

  /** Best leaf in [from, n): range query over the O(log N) canonical nodes. */
  private bestFrom(from: number): number {
    let best = -1; // a node
    let lo = from + this.base;
    let hi = 2 * this.base; // exclusive
    // `before` is a total order (ties end on the index), so combination order is free.
    while (lo < hi) {
      if (lo & 1) {
        if (best < 0 || this.before(lo, best)) best = lo;
        lo++;
      }
      if (hi & 1) {
        hi--;
        if (best < 0 || this.before(hi, best)) best = hi;
      }
      lo >>>= 1;
      hi >>>= 1;
    }
    return best < 0 ? -1 : this.tree[4 * best + 2]!;
  }

  private touch(slot: number): void {
    if (slot >= this.leafOfSlot.length) return;
    const leaf = this.leafOfSlot[slot]!;
    if (leaf < 0) return;
    if (!this.refresh(leaf) && leaf === this.pending) this.settle(leaf);
  }

  /** Re-reads a leaf's shared count; returns whether it changed (the tree then is updated). */
  private refresh(leaf: number): boolean {
    const now = this.read(this.backends[leaf]!.slot);
    if (now === this.active[leaf]) return false;
    this.active[leaf] = now;
    this.tree[4 * (this.base + leaf)] = now / this.weight[leaf]!;
    this.settle(leaf);
    return true;
  }

  /** Brings the leaf's path to the root up to date. */
  private settle(leaf: number): void {
    if (leaf === this.pending) this.pending = -1;
    for (let node = (leaf + this.base) >>> 1; node >= 1; node >>>= 1) this.pull(node);
  }

  /** Sets a node to the better of its two children. */
  private pull(node: number): void {
    const t = this.tree;
    const left = 8 * node;
    const from = this.before(2 * node, 2 * node + 1) ? left : left + 4;
    const to = 4 * node;
    t[to] = t[from]!;
    t[to + 1] = t[from + 1]!;
    t[to + 2] = t[from + 2]!;
  }

  private read(slot: number): number {
    // A count can dip below zero only transiently across threads; never let it sort first.
    const value = Atomics.load(this.shared, slot);
    return value < 0 ? 0 : value;
  }

  /**
   * Whether node a's leaf comes before node b's: lower active/weight, then picked longer
   * ago, then lower index. Empty leaves (ratio Infinity, index -1) come last.
   */
  private before(a: number, b: number): boolean {
    const t = this.tree;
    const ra = t[4 * a]!;
    const rb = t[4 * b]!;
    if (ra !== rb) return ra < rb;
    const la = t[4 * a + 1]!;
    const lb = t[4 * b + 1]!;
    if (la !== lb) return la < lb;
    const ia = t[4 * a + 2]!;
    const ib = t[4 * b + 2]!;
    return ib < 0 || (ia >= 0 && ia < ib);
  }
}
