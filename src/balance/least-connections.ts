import type { BackendView } from "../pool/pool.ts";
import { diffRoutable } from "./diff.ts";
import type { Picker, PickerContext } from "./picker.ts";

/**
 * The backend with the fewest active connections per unit of weight; among equal ones the
 * one picked least recently, which is round robin: idle backends take turns in order.
 *
 * A tournament tree (typed arrays, one leaf per backend) holds in every node the best
 * leaf below it by (active/weight, last picked, leaf index). active/weight is kept as a
 * double: with counts below 2^31 and weights ≤ 1000, distinct ratios never round to the
 * same double and equal ratios always do, so comparisons are exact. A pick reads the root
 * (O(1)); the winner's new "last picked" reaches the tree with its new count when the data
 * plane reports the open (connectionOpened), and a close does the same: O(log N) each, no
 * allocation. (The open walks the whole path, since the winner was best everywhere on it;
 * a close stops where the backend no longer wins, often well below the root.)
 *
 * A pool change patches the tree instead of rebuilding it (`update`): a backend keeps its
 * leaf for as long as it stays routable, a leaving backend frees its leaf, a joining one
 * takes a free leaf, and only the paths above changed leaves are recomputed. Finding the
 * changes is a linear walk over the old and new routable lists comparing references (the
 * pool keeps a view object until its weight changes, and keeps its order), so a change at
 * a million backends costs a few ms; views copied across threads compare by slot and key.
 *
 * How exact with several data-plane threads: the counts themselves live in shared memory
 * (`active`, changed with Atomics by every thread), but each thread keeps its own tree.
 * A leaf is re-read from shared memory whenever this thread touches it: on its own opens
 * and closes, and, when other threads change counts too (`countsChangedElsewhere`), on
 * the winner of every pick (re-checked before it is returned) and one more leaf per pick
 * in rotation, so every leaf is refreshed at least once per N picks.
 * So with one thread the pick is exactly a minimum; with several, the winner's count is
 * current at the moment of the pick, and another backend can look busier (or idler) than
 * it is only by the other threads' opens and closes on it since this thread last touched
 * it — and no backend is ever handed out on a stale low count, because the winner is
 * re-read. Two threads picking at the same instant may both choose the same idle backend.
 */
/** From this capacity on, the arrays for the next one are prepared ahead (prepareGrowth). */
const GROW_AHEAD_FROM = 1 << 15;
/** Longest a slice of that preparation holds the event loop, in ms. */
const SLICE_MS = 4;

interface Spare {
  readonly base: number;
  ready: boolean;
  readonly tree: Float64Array<ArrayBuffer>;
  readonly weight: Int32Array<ArrayBuffer>;
  readonly active: Int32Array<ArrayBuffer>;
  readonly free: Int32Array<ArrayBuffer>;
}

/**
 * Views by leaf, in chunks of 32,768: growing adds chunks instead of copying one large
 * array into another (fresh memory, touched all at once).
 */
class ViewSlots {
  private readonly chunks: Array<Array<BackendView | undefined>> = [];

  get(i: number): BackendView | undefined {
    return this.chunks[i >>> 15]![i & 32767];
  }

  set(i: number, view: BackendView | undefined): void {
    this.chunks[i >>> 15]![i & 32767] = view;
  }

  /** Adds one chunk towards room for `size` leaves; returns whether there is room now. */
  reserve(size: number): boolean {
    if (this.chunks.length * 32768 >= size) return true;
    this.chunks.push(new Array<BackendView | undefined>(32768).fill(undefined));
    return false;
  }

  /** Room for leaves [0, size), nothing past it. */
  resize(size: number): void {
    const chunks = Math.ceil(size / 32768);
    while (this.chunks.length < chunks) this.chunks.push(new Array<BackendView | undefined>(32768).fill(undefined));
    if (this.chunks.length > chunks) this.chunks.length = chunks;
  }
}

export class LeastConnectionsPicker implements Picker {
  private readonly shared: Int32Array;
  /** Other threads change `shared` too, unannounced (see the class comment). */
  private readonly countsChangedElsewhere: boolean;
  /** The routable list this tree reflects, to diff the next one against. */
  private routable: readonly BackendView[] = [];
  /** Live backends (occupied leaves). */
  private n = 0;
  /** Leaf capacity, a power of two; leaves start at node `base` in `tree`. */
  private base = 1;
  /** Leaves in [0, top) have been used; leaves at or past it are all empty. */
  private top = 0;
  /**
   * Node k holds its best leaf's key at 4k: [active/weight, last picked, leaf index, -],
   * so the two children of a node share one 64-byte cache line (node 1 is the root;
   * empty leaves have ratio Infinity and index -1). "Last picked" is a pick sequence
   * number, 0 for never.
   */
  private tree = new Float64Array(8);
  /** Per leaf: its view (undefined when empty), weight and last-read shared count. */
  private readonly views = new ViewSlots();
  private weight = new Int32Array(1);
  private active = new Int32Array(1);
  /** slot → leaf, -1 where this picker has no backend on that slot. */
  private leafOfSlot = new Int32Array(0);
  /** Free leaves below `top`, a stack. */
  private free = new Int32Array(1);
  /** Room for one double per backend, used by rebuild. */
  private scratch = new Float64Array(0);
  private freeCount = 0;
  private seq = 0;
  /** The last winner, whose new `last` is not yet in the tree (-1: none). */
  private pending = -1;
  /** Just past the last winner: where a retry starts looking. */
  private cursor = 0;
  private scrub = 0;

  private readonly schedule: (task: () => void) => void;
  private readonly now: () => number;
  /** Arrays for twice the capacity, being prepared in the background (see prepareGrowth). */
  private spare: Spare | null = null;

  constructor(backends: readonly BackendView[], context: PickerContext) {
    this.shared = context.active;
    this.countsChangedElsewhere = context.countsChangedElsewhere ?? true;
    this.schedule = context.schedule ?? ((task) => void setImmediate(task).unref());
    this.now = context.now ?? (() => performance.now());
    this.rebuild(backends);
  }

  /** Whether this picker reads these shared counts (so it can be updated in place). */
  sharesCounts(active: Int32Array): boolean {
    return this.shared === active;
  }

  /** Number of backends held (for tests). */
  get size(): number {
    return this.n;
  }

  /**
   * Makes the tree reflect `next`, patching what changed: O(N) reference comparisons to
   * find the changes, then O(log N) per changed backend (or one O(N) pass over the inner
   * nodes when that is cheaper). Counts and "last picked" of unchanged backends carry over.
   */
  update(next: readonly BackendView[]): void {
    if (next === this.routable) return;
    // Past this many removes and adds, one O(N) rebuild beats patching leaf by leaf.
    const limit = 64 + (Math.max(this.routable.length, next.length) >>> 3);
    const diff = diffRoutable(this.routable, next, (view) => this.holds(view), limit);
    const n = diff === null ? 0 : this.n - diff.removed.length + diff.added.length;
    // Out of room, with twice the room ready: grow into it (O(N) copying, no rebuild).
    if (diff !== null && n > this.base && n <= 2 * this.base && this.spare?.ready === true && this.spare.base === 2 * this.base) this.grow();
    // Too many changes, out of room, or mostly empty: lay the leaves out afresh (O(N)).
    if (diff === null || n > this.base || (this.base > 1024 && n < this.base >>> 3)) {
      this.rebuild(next);
      return;
    }
    this.routable = next;
    this.settlePending(); // settle() stops early only if every other path is up to date
    const views = this.views;
    const changed: number[] = []; // leaves whose weight moved
    for (let k = 0; k < diff.renewed.length; k++) {
      const view = diff.renewed[k]!;
      const leaf = this.leafOfSlot[view.slot]!;
      views.set(leaf, view);
      if (view.weight !== this.weight[leaf]) changed.push(leaf);
    }
    const touched = diff.removed.length + diff.added.length + changed.length;
    // Each path costs log N; past N of them, recomputing every inner node is cheaper.
    const paths = touched * (Math.log2(this.base) + 1) < this.base;
    for (const view of diff.removed) {
      const leaf = this.leafOfSlot[view.slot]!;
      this.clearLeaf(leaf, view.slot);
      if (paths) this.settle(leaf);
    }
    for (const leaf of changed) {
      this.weight[leaf] = views.get(leaf)!.weight;
      this.tree[4 * (this.base + leaf)] = this.active[leaf]! / this.weight[leaf]!;
      if (paths) this.settle(leaf);
    }
    for (const view of diff.added) {
      const leaf = this.freeCount > 0 ? this.free[--this.freeCount]! : this.top++;
      this.fillLeaf(leaf, view, 0);
      if (paths) this.settle(leaf);
    }
    this.n = n;
    if (!paths) this.pullAll();
    if (this.scrub >= this.top) this.scrub = 0;
    if (this.cursor >= this.top) this.cursor = 0;
    this.prepareGrowth();
  }

  pick(_clientIp: string, attempt: number): BackendView | undefined {
    if (this.n === 0) return undefined;
    this.settlePending();
    let chosen: number;
    if (this.countsChangedElsewhere) {
      // Keep other threads' counts flowing in: one leaf per pick, in rotation.
      this.refresh(this.scrub);
      this.scrub = this.scrub + 1 === this.top ? 0 : this.scrub + 1;
      chosen = this.choose(attempt);
      // The winner's count may have moved on another thread since we last looked.
      if (this.refresh(chosen)) chosen = this.choose(attempt);
    } else {
      chosen = this.choose(attempt);
    }
    this.tree[4 * (this.base + chosen) + 1] = ++this.seq;
    this.pending = chosen;
    this.cursor = chosen + 1 === this.top ? 0 : chosen + 1;
    return this.views.get(chosen);
  }

  connectionOpened(slot: number): void {
    this.touch(slot);
  }

  connectionClosed(slot: number): void {
    this.touch(slot);
  }

  /** Whether `view`'s backend has a leaf here. */
  private holds(view: BackendView): boolean {
    if (view.slot >= this.leafOfSlot.length) return false;
    const leaf = this.leafOfSlot[view.slot]!;
    return leaf >= 0 && this.views.get(leaf)!.key === view.key;
  }

  /**
   * Lays out `backends` on leaves 0..N-1 in their order, keeping each one's "last picked"
   * (so the rotation survives). O(N) in two passes over typed arrays, reusing them when
   * they are big enough: the cost of the first build and of a change that touches a
   * large part of the set.
   */
  private rebuild(backends: readonly BackendView[]): void {
    const n = backends.length;
    let base = 1;
    while (base < n) base <<= 1;
    // Pass 1: every backend's "last picked" as it is now, and the largest slot. (Read
    // before anything is overwritten: the tree may be reused in place.)
    if (this.scratch.length < n) this.scratch = new Float64Array(base);
    const last = this.scratch;
    const oldTree = this.tree;
    const oldBase = this.base;
    const oldLeafOfSlot = this.leafOfSlot;
    const oldViews = this.views;
    let maxSlot = -1;
    for (let i = 0; i < n; i++) {
      const b = backends[i]!;
      const slot = b.slot;
      if (slot > maxSlot) maxSlot = slot;
      let seen = 0;
      if (slot < oldLeafOfSlot.length) {
        const leaf = oldLeafOfSlot[slot]!;
        if (leaf >= 0) {
          const was = oldViews.get(leaf)!;
          if (was === b || was.key === b.key) seen = oldTree[4 * (oldBase + leaf) + 1]!;
        }
      }
      last[i] = seen;
    }
    if (base !== oldBase || oldTree.length !== 8 * base) {
      const spare = this.spare?.base === base && this.spare.ready ? this.spare : null;
      this.tree = spare?.tree ?? new Float64Array(8 * base);
      this.weight = spare?.weight ?? new Int32Array(base);
      this.active = spare?.active ?? new Int32Array(base);
      this.free = spare?.free ?? new Int32Array(base);
      this.spare = null;
    }
    this.views.resize(Math.max(base, this.spare?.base ?? 0));
    if (maxSlot >= oldLeafOfSlot.length || oldLeafOfSlot.length > 2 * maxSlot + 1024) {
      // Headroom: new backends take new slots, and growing means fresh memory.
      this.leafOfSlot = new Int32Array(maxSlot + 1 + ((maxSlot + 1) >>> 3) + 16).fill(-1);
    } else {
      oldLeafOfSlot.fill(-1);
    }
    this.base = base;
    // Pass 2: the leaves.
    const tree = this.tree;
    const views = this.views;
    const weight = this.weight;
    const active = this.active;
    const leafOfSlot = this.leafOfSlot;
    const shared = this.shared;
    for (let i = 0; i < n; i++) {
      const b = backends[i]!;
      const slot = b.slot;
      const count = Atomics.load(shared, slot);
      const a = count < 0 ? 0 : count;
      views.set(i, b);
      weight[i] = b.weight;
      active[i] = a;
      leafOfSlot[slot] = i;
      const at = 4 * (base + i);
      tree[at] = a / b.weight;
      tree[at + 1] = last[i]!;
      tree[at + 2] = i;
    }
    for (let i = n; i < base; i++) {
      views.set(i, undefined);
      const at = 4 * (base + i);
      tree[at] = Infinity;
      tree[at + 1] = 0;
      tree[at + 2] = -1;
    }
    this.n = n;
    this.top = n;
    this.freeCount = 0;
    this.routable = backends;
    this.pending = -1;
    this.pullAll();
    if (this.scrub >= this.top) this.scrub = 0;
    if (this.cursor >= this.top) this.cursor = 0;
    this.prepareGrowth();
  }

  /**
   * Doubles the capacity using the arrays prepared in the background: the old tree
   * becomes the new root's left subtree (node k at depth d moves to k + 2^d, a copy per
   * level), leaves keep their indices, so nothing else moves. O(N) copying of memory
   * already touched: a few ms at a million backends, where allocating and filling new
   * arrays on the spot costs hundreds (first touches of fresh memory are page faults).
   */
  private grow(): void {
    const spare = this.spare!;
    const old = this.tree;
    const oldBase = this.base;
    for (let d = 1; d <= oldBase; d <<= 1) spare.tree.set(old.subarray(4 * d, 8 * d), 8 * d);
    spare.weight.set(this.weight);
    spare.active.set(this.active);
    spare.free.set(this.free.subarray(0, this.freeCount));
    this.tree = spare.tree;
    this.weight = spare.weight;
    this.active = spare.active;
    this.free = spare.free;
    this.base = spare.base;
    this.views.resize(this.base);
    this.spare = null;
    this.pull(1);
  }

  /**
   * Once the tree is three quarters full (and large), allocates the arrays for twice the
   * capacity and touches them a slice at a time on the event loop, so that growing later
   * (grow) finds them ready. The tree's new nodes start empty, as grow expects.
   */
  private prepareGrowth(): void {
    const base = 2 * this.base;
    if (this.base < GROW_AHEAD_FROM || this.n <= (this.base >>> 2) * 3 || this.spare?.base === base) return;
    const spare: Spare = {
      base,
      ready: false,
      tree: new Float64Array(8 * base),
      weight: new Int32Array(base),
      active: new Int32Array(base),
      free: new Int32Array(base),
    };
    this.spare = spare;
    let node = 0;
    const slice = () => {
      if (this.spare !== spare) return; // superseded
      const deadline = this.now() + SLICE_MS;
      while (node < 2 * base && this.now() < deadline) {
        const end = Math.min(2 * base, node + 16_384);
        for (let k = node; k < end; k++) {
          spare.tree[4 * k] = Infinity;
          spare.tree[4 * k + 2] = -1;
        }
        // The leaf arrays, touched alongside (their values are all written by grow).
        if (node < base) {
          const to = Math.min(base, end);
          spare.weight.fill(0, node, to);
          spare.active.fill(0, node, to);
          spare.free.fill(0, node, to);
        }
        node = end;
      }
      // Room for the views too, a chunk per slice (chunks past the capacity are unused).
      const viewsReady = this.views.reserve(base);
      if (node < 2 * base || !viewsReady) this.schedule(slice);
      else spare.ready = true;
    };
    this.schedule(slice);
  }

  private fillLeaf(leaf: number, view: BackendView, last: number): void {
    if (view.slot >= this.leafOfSlot.length) {
      let length = Math.max(16, this.leafOfSlot.length);
      while (length <= view.slot) length += (length >>> 3) + 16;
      const grown = new Int32Array(length).fill(-1);
      grown.set(this.leafOfSlot);
      this.leafOfSlot = grown;
    }
    this.views.set(leaf, view);
    this.weight[leaf] = view.weight;
    const active = this.read(view.slot);
    this.active[leaf] = active;
    this.leafOfSlot[view.slot] = leaf;
    const at = 4 * (this.base + leaf);
    this.tree[at] = active / view.weight;
    this.tree[at + 1] = last;
    this.tree[at + 2] = leaf;
  }

  private clearLeaf(leaf: number, slot: number): void {
    this.views.set(leaf, undefined);
    this.leafOfSlot[slot] = -1;
    const at = 4 * (this.base + leaf);
    this.tree[at] = Infinity;
    this.tree[at + 1] = 0;
    this.tree[at + 2] = -1;
    this.free[this.freeCount++] = leaf;
    if (leaf === this.pending) this.pending = -1;
  }

  /** Settles the last pick's winner, whose new "last picked" is not yet in the tree. */
  private settlePending(): void {
    if (this.pending >= 0) this.settle(this.pending);
  }

  /** Recomputes every inner node, bottom up (which settles any pending winner too). */
  private pullAll(): void {
    for (let node = this.base - 1; node >= 1; node--) this.pull(node);
    this.pending = -1;
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

  /** Best leaf in [from, capacity): range query over the O(log N) canonical nodes. */
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
    if (!this.refresh(leaf) && leaf === this.pending) this.settlePending();
  }

  /** Re-reads a leaf's shared count; returns whether it changed (the tree then is updated). */
  private refresh(leaf: number): boolean {
    const view = this.views.get(leaf);
    if (view === undefined) return false;
    const now = this.read(view.slot);
    if (now === this.active[leaf]) return false;
    if (leaf !== this.pending) this.settlePending();
    this.active[leaf] = now;
    this.tree[4 * (this.base + leaf)] = now / this.weight[leaf]!;
    this.settle(leaf);
    return true;
  }

  /**
   * Brings the tree up to date after a change of this leaf's key, from the leaf up. It
   * stops at the first node whose winner is another leaf both before and after: that
   * node is unchanged (its winner beat the leaf's old key within its subtree and still
   * does, or the leaf's new key lost to it), so nothing above it changes either. That
   * holds only while every other path is up to date: a pick's pending winner is settled
   * (settlePending) before any other leaf changes.
   */
  private settle(leaf: number): void {
    if (leaf === this.pending) this.pending = -1;
    const t = this.tree;
    for (let node = (leaf + this.base) >>> 1; node >= 1; node >>>= 1) {
      const was = t[4 * node + 2];
      this.pull(node);
      if (was !== leaf && t[4 * node + 2] !== leaf) return;
    }
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
