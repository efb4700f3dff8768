import type { BackendView } from "../pool/pool.ts";
import { diffRoutable } from "./diff.ts";
import type { Picker, PickerContext } from "./picker.ts";

/**
 * The backend with the fewest active connections per unit of weight; among equal ones the
 * one that reached that load first, which is round robin: idle backends take turns in
 * order. (HAProxy's leastconn breaks ties the same way: a server requeued at a load goes
 * behind the servers already there.)
 *
 * Layout, as in the O(1) LFU cache: backends of one weight form a group, and within a
 * group every active count that some backend has is a bucket, a doubly linked list of
 * its backends in the order they arrived at that count. A group knows its lowest count,
 * so its best backend is the head of that bucket. A connection opening or closing moves
 * one backend from the bucket of its old count to the tail of its new one: O(1), and the
 * group's lowest count moves at most to the backend's new count. Groups compete in a
 * tournament tree by (lowest count / weight, arrival order of their best backend), so a
 * pick reads the root, O(1), and a move replays one path of it, O(log G) for G distinct
 * weights (G is 1 to 3 in most pools; weights are at most 1000). No step depends on N.
 *
 * A pick hands out the head and notes it (`pending`); the open that follows moves it to
 * the next count. If another pick comes first (a retry, or a caller that does not count
 * opens), the pending backend goes to the back of its bucket then, so repeated picks
 * take turns too.
 *
 * A pool change patches the buckets (`update`): a leaving backend is unlinked, a joining
 * one is linked at the tail of its count, a weight change moves it between groups, all
 * O(1) each. Finding the changes is a linear walk over the old and new routable lists
 * comparing references (the pool keeps a view object until its weight changes, and keeps
 * its order), a few ms at a million backends; views copied across threads compare by
 * slot and key.
 *
 * How exact with several data-plane threads: the counts themselves live in shared memory
 * (`active`, changed with Atomics by every thread), but each thread keeps its own
 * buckets, placed by the count it last read. A backend's count is re-read whenever this
 * thread touches it: on its own opens and closes, and, when other threads change counts
 * too (`countsChangedElsewhere`), on the winner of every pick (re-read before it is handed
 * out, and the choice made again if it moved, up to four times) and one more backend per
 * pick in rotation, so every backend is re-read at least once per N picks. So with one
 * thread the pick is exactly a minimum; with several, the winner's count is current at
 * the moment of the pick (unless it moved four times over), and another backend can look busier (or idler) than it is only by the other
 * threads' opens and closes on it since this thread last read it — and no backend is
 * handed out on a stale low count. Two threads picking at the same instant may both
 * choose the same idle backend. A re-read may move a backend by more than one count; the
 * group's new lowest count is then found by scanning the buckets in between, which costs
 * as many steps as the other threads made changes on that backend.
 */

/** From this capacity on, the arrays for the next one are prepared ahead (prepareGrowth). */
const GROW_AHEAD_FROM = 1 << 15;
/** Longest a slice of that preparation holds the event loop, in ms. */
const SLICE_MS = 4;
/** End of a list; an empty bucket, leaf or tree node. */
const NONE = -1;
/** Retries (attempt ≥ 1) walk at most this far down the order; the data plane tries ≤ 16 picks. */
const MAX_WALK = 128;

/** The per-backend arrays, indexed by leaf. */
interface Leaves {
  /** Neighbours in the backend's bucket list. */
  readonly next: Int32Array<ArrayBuffer>;
  readonly prev: Int32Array<ArrayBuffer>;
  /** The count the backend is filed under (the shared count as last read, never < 0). */
  readonly count: Int32Array<ArrayBuffer>;
  readonly group: Int32Array<ArrayBuffer>;
  /** Its counter slot, NONE for a free leaf (a re-read needs no trip to the view). */
  readonly slot: Int32Array<ArrayBuffer>;
  /** When it arrived at its bucket: orders backends of different groups with equal loads. */
  readonly arrived: Float64Array<ArrayBuffer>;
  /** Free leaves below `top`, a stack. */
  readonly free: Int32Array<ArrayBuffer>;
}

function allocateLeaves(capacity: number): Leaves {
  return {
    next: new Int32Array(capacity),
    prev: new Int32Array(capacity),
    count: new Int32Array(capacity),
    group: new Int32Array(capacity),
    slot: new Int32Array(capacity),
    arrived: new Float64Array(capacity),
    free: new Int32Array(capacity),
  };
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

  /** Room for leaves [0, size) at least. */
  ensure(size: number): void {
    while (this.chunks.length * 32768 < size) this.chunks.push(new Array<BackendView | undefined>(32768).fill(undefined));
  }
}

export class LeastConnectionsPicker implements Picker {
  private readonly shared: Int32Array;
  /** Other threads change `shared` too, unannounced (see the class comment). */
  private readonly countsChangedElsewhere: boolean;
  /** The routable list the buckets reflect, to diff the next one against. */
  private routable: readonly BackendView[] = [];
  /** Live backends (occupied leaves). */
  private n = 0;
  /** Leaves in [0, top) have been used; leaves at or past it are all free. */
  private top = 0;
  private freeCount = 0;
  private capacity = 0;
  // Per leaf (see Leaves), kept as fields: they are read on every open and close.
  private next = new Int32Array(0);
  private prev = new Int32Array(0);
  private count = new Int32Array(0);
  private groupOf = new Int32Array(0);
  private slotOf = new Int32Array(0);
  private arrived = new Float64Array(0);
  private free = new Int32Array(0);
  private readonly views = new ViewSlots();
  /** slot → leaf, NONE where this picker has no backend on that slot. */
  private leafOfSlot = new Int32Array(0);

  // Per group: backends of one weight, in buckets by count.
  /**
   * Each count's bucket: its head leaf at 2·count and its tail at 2·count + 1 (one cache
   * line for both), NONE where no member has that count.
   */
  private readonly buckets: Int32Array[] = [];
  private weightOf = new Int32Array(1);
  private sizeOf = new Int32Array(1);
  /** Lowest count of a member (meaningless while the group is empty). */
  private lowOf = new Int32Array(1);
  /**
   * The group's key in the tournament: lowest count / weight (exact: with counts below
   * 2^31 and weights ≤ 1000, distinct ratios never round to the same double), then when
   * the head of that bucket arrived there.
   */
  private ratioOf = new Float64Array(1);
  private firstOf = new Float64Array(1);
  private groups = 0;
  private readonly groupOfWeight = new Map<number, number>();
  private readonly freeGroups: number[] = [];
  /**
   * Tournament tree over the groups: node k (1 is the root) holds the better group of its
   * subtree, NONE if all are empty; group g's own node is gBase + g.
   */
  private gBase = 1;
  private gTree = new Int32Array(2).fill(NONE);
  /** Scratch for a retry's walk: each group's position (count, leaf), members passed, a heap. */
  private walkCount = new Int32Array(1);
  private walkLeaf = new Int32Array(1);
  private walkSeen = new Int32Array(1);
  private walkHeap = new Int32Array(1);

  /** Arrival sequence (see Leaves.arrived). */
  private seq = 0;
  /** The last leaf handed out, until its open is reported (then it has moved anyway). */
  private pending = NONE;
  /** The last leaf handed out: what a retry walks around. */
  private lastHanded = NONE;
  /** Next leaf to re-read in rotation when other threads change counts. */
  private scrub = 0;

  private readonly schedule: (task: () => void) => void;
  private readonly now: () => number;
  /** Arrays for twice the capacity, being prepared in the background (see prepareGrowth). */
  private spare: { leaves: Leaves; capacity: number; ready: boolean } | null = null;

  constructor(backends: readonly BackendView[], context: PickerContext) {
    this.shared = context.active;
    this.countsChangedElsewhere = context.countsChangedElsewhere ?? true;
    this.schedule = context.schedule ?? ((task) => void setImmediate(task).unref());
    this.now = context.now ?? (() => performance.now());
    this.update(backends);
  }

  /** Whether this picker reads these shared counts (so it can be updated in place). */
  sharesCounts(active: Int32Array): boolean {
    return this.shared === active;
  }

  /**
   * Whether updating in place suits a set of `size` backends. Capacity never shrinks in
   * place, so a pool that fell to an eighth of it (from millions, say) is better served
   * by a new picker: it gives the memory back, and the idle order restarts in pool order.
   */
  fits(size: number): boolean {
    return this.capacity <= GROW_AHEAD_FROM || size >= this.capacity >>> 3;
  }

  /** Number of backends held (for tests). */
  get size(): number {
    return this.n;
  }

  /**
   * Makes the buckets reflect `next`: O(N) reference comparisons to find the changes,
   * then O(1) per changed backend (plus O(log G) to replay its group's path). Counts and
   * places of unchanged backends carry over.
   */
  update(next: readonly BackendView[]): void {
    if (next === this.routable) return;
    // From empty (the first build), everything is new: no walk, no list of additions.
    const diff = this.n === 0 ? { removed: [], renewed: [], added: next } : diffRoutable(this.routable, next, (view) => this.holds(view))!;
    this.routable = next;
    this.settlePending();
    for (const view of diff.removed) if (this.holds(view)) this.removeLeaf(this.leafOfSlot[view.slot]!, view.slot);
    for (let k = 0; k < diff.renewed.length; k++) {
      const view = diff.renewed[k]!;
      const leaf = this.leafOfSlot[view.slot]!;
      this.views.set(leaf, view);
      if (view.weight !== this.weightOf[this.groupOf[leaf]!]) {
        const count = this.count[leaf]!;
        this.detach(leaf);
        this.attach(leaf, this.groupFor(view.weight), count);
      }
    }
    if (this.n + diff.added.length > this.capacity) this.grow(this.n + diff.added.length);
    let maxSlot = -1;
    for (const view of diff.added) if (view.slot > maxSlot) maxSlot = view.slot;
    if (maxSlot >= this.leafOfSlot.length) this.widenSlots(maxSlot);
    let weight = 0;
    let group = NONE;
    for (const view of diff.added) {
      if (view.weight !== weight) {
        weight = view.weight;
        group = this.groupFor(weight);
      }
      const leaf = this.freeCount > 0 ? this.free[--this.freeCount]! : this.top++;
      this.addLeaf(leaf, view, group);
    }
    if (this.scrub >= this.top) this.scrub = 0;
    this.prepareGrowth();
  }

  pick(_clientIp: string, attempt: number): BackendView | undefined {
    if (this.n === 0) return undefined;
    this.settlePending();
    let chosen: number;
    if (this.countsChangedElsewhere) {
      // Keep other threads' counts flowing in: one leaf per pick, in rotation.
      if (this.scrub < this.top) this.refresh(this.scrub);
      this.scrub = this.scrub + 1 >= this.top ? 0 : this.scrub + 1;
      chosen = this.choose(attempt);
      // The winner's count may have moved on another thread since we last read it.
      for (let i = 0; i < 4 && this.refresh(chosen); i++) chosen = this.choose(attempt);
    } else {
      chosen = this.choose(attempt);
    }
    this.pending = chosen;
    this.lastHanded = chosen;
    return this.views.get(chosen);
  }

  connectionOpened(slot: number): void {
    this.touch(slot);
  }

  connectionClosed(slot: number): void {
    this.touch(slot);
  }

  /** A first pick is the head of the best group's lowest bucket; a retry walks on (see walk). */
  private choose(attempt: number): number {
    if (attempt > 0) return this.walk(attempt - 1);
    const g = this.gTree[1]!;
    return this.buckets[g]![2 * this.lowOf[g]!]!;
  }

  /** Whether `view`'s backend has a leaf here. */
  private holds(view: BackendView): boolean {
    if (view.slot >= this.leafOfSlot.length) return false;
    const leaf = this.leafOfSlot[view.slot]!;
    return leaf >= 0 && this.views.get(leaf)!.key === view.key;
  }

  /** Re-files the leaf of `slot` under its shared count (an open or close on it). */
  private touch(slot: number): void {
    if (slot >= this.leafOfSlot.length) return;
    const leaf = this.leafOfSlot[slot]!;
    if (leaf < 0) return;
    if (leaf === this.pending) {
      // Its open (or a close that came first): to the back of its new bucket either way.
      this.pending = NONE;
      this.move(leaf, this.read(slot));
    } else {
      this.refresh(leaf);
    }
  }

  /** Re-reads a leaf's shared count; returns whether it changed (the leaf then moved). */
  private refresh(leaf: number): boolean {
    const slot = this.slotOf[leaf]!;
    if (slot < 0) return false;
    const count = this.read(slot);
    if (count === this.count[leaf]) return false;
    if (leaf === this.pending) this.pending = NONE;
    this.move(leaf, count);
    return true;
  }

  /** The last pick's winner, not reported open: to the back of its bucket, so turns pass on. */
  private settlePending(): void {
    const leaf = this.pending;
    if (leaf < 0) return;
    this.pending = NONE;
    this.move(leaf, this.count[leaf]!);
  }

  /** Moves a leaf to the tail of the `to` bucket of its group: one connection more or less. */
  private move(leaf: number, to: number): void {
    const g = this.groupOf[leaf]!;
    const buckets = this.buckets[g]!;
    const next = this.next;
    const prev = this.prev;
    const from = this.count[leaf]!;
    // Unlink from the `from` bucket (`unlink` written out, as below).
    const p = prev[leaf]!;
    const q = next[leaf]!;
    if (p < 0) buckets[2 * from] = q;
    else next[p] = q;
    if (q < 0) buckets[2 * from + 1] = p;
    else prev[q] = p;
    if (2 * to >= buckets.length) {
      this.link(g, leaf, to); // which widens the group's buckets first
    } else {
      // Link at the tail of the `to` bucket: `link` written out, since this is every open
      // and close (calling unlink and link instead measured slower in alternating runs).
      const tail = buckets[2 * to + 1]!;
      prev[leaf] = tail;
      next[leaf] = NONE;
      if (tail < 0) buckets[2 * to] = leaf;
      else next[tail] = leaf;
      buckets[2 * to + 1] = leaf;
      this.count[leaf] = to;
      this.arrived[leaf] = ++this.seq;
    }
    const low = this.lowOf[g]!;
    if (to < low) {
      this.lowOf[g] = to;
    } else if (from === low && this.buckets[g]![2 * from]! < 0) {
      // Its bucket was the lowest and is empty now: the next one up is at most `to`.
      this.lowOf[g] = this.nextHeld(g, from);
    } else if (from !== low) {
      // The group's best did not change (it is not this leaf, which came from higher up).
      return;
    }
    this.replay(g);
  }

  /** The lowest count above `count` that a member of group g has (the caller knows there is one). */
  private nextHeld(g: number, count: number): number {
    const buckets = this.buckets[g]!;
    let c = count + 1;
    while (buckets[2 * c]! < 0) c++;
    return c;
  }

  /** Links a leaf at the tail of its group's `count` bucket. */
  private link(g: number, leaf: number, count: number): void {
    if (2 * count >= this.buckets[g]!.length) this.widen(g, count);
    const buckets = this.buckets[g]!;
    const tail = buckets[2 * count + 1]!;
    this.prev[leaf] = tail;
    this.next[leaf] = NONE;
    if (tail < 0) buckets[2 * count] = leaf;
    else this.next[tail] = leaf;
    buckets[2 * count + 1] = leaf;
    this.count[leaf] = count;
    this.arrived[leaf] = ++this.seq;
  }

  private unlink(g: number, leaf: number): void {
    const count = this.count[leaf]!;
    const prev = this.prev[leaf]!;
    const next = this.next[leaf]!;
    if (prev < 0) this.buckets[g]![2 * count] = next;
    else this.next[prev] = next;
    if (next < 0) this.buckets[g]![2 * count + 1] = prev;
    else this.prev[next] = prev;
  }

  /** Room in a group's bucket arrays for `count` (they grow with connections). */
  private widen(g: number, count: number): void {
    let length = this.buckets[g]!.length * 2;
    while (length <= 2 * count + 1) length *= 2;
    const grown = new Int32Array(length).fill(NONE);
    grown.set(this.buckets[g]!);
    this.buckets[g] = grown;
  }

  /** Room in leafOfSlot for `slot`, with headroom: new backends take new slots. */
  private widenSlots(slot: number): void {
    let length = Math.max(16, this.leafOfSlot.length);
    while (length <= slot) length += (length >>> 3) + 16;
    const grown = new Int32Array(length).fill(NONE);
    grown.set(this.leafOfSlot);
    this.leafOfSlot = grown;
  }

  private addLeaf(leaf: number, view: BackendView, g: number): void {
    this.views.set(leaf, view);
    this.slotOf[leaf] = view.slot;
    this.leafOfSlot[view.slot] = leaf;
    this.attach(leaf, g, this.read(view.slot));
    this.n++;
  }

  private removeLeaf(leaf: number, slot: number): void {
    if (leaf === this.pending) this.pending = NONE;
    if (leaf === this.lastHanded) this.lastHanded = NONE;
    this.detach(leaf);
    this.views.set(leaf, undefined);
    this.slotOf[leaf] = NONE;
    this.leafOfSlot[slot] = NONE;
    this.free[this.freeCount++] = leaf;
    this.n--;
  }

  /** Files a leaf into group `g` under `count`. */
  private attach(leaf: number, g: number, count: number): void {
    this.groupOf[leaf] = g;
    this.link(g, leaf, count);
    if (this.sizeOf[g]!++ === 0 || count < this.lowOf[g]!) this.lowOf[g] = count;
    this.replay(g);
  }

  /** Takes a leaf out of its group (a removal or a weight change). */
  private detach(leaf: number): void {
    const g = this.groupOf[leaf]!;
    const count = this.count[leaf]!;
    this.unlink(g, leaf);
    if (--this.sizeOf[g]! === 0) {
      this.groupOfWeight.delete(this.weightOf[g]!);
      this.freeGroups.push(g);
    } else if (count === this.lowOf[g]! && this.buckets[g]![2 * count]! < 0) {
      // A membership change, not a connection: a scan up to the next count held is fine.
      this.lowOf[g] = this.nextHeld(g, count);
    }
    this.replay(g);
  }

  /** The group of backends of this weight, made if there is none. */
  private groupFor(weight: number): number {
    const known = this.groupOfWeight.get(weight);
    if (known !== undefined) return known;
    const g = this.freeGroups.pop() ?? this.groups++;
    if (g >= this.gBase) this.widenGroups(g + 1);
    if (g === this.buckets.length) {
      this.buckets.push(new Int32Array(16).fill(NONE));
    }
    this.weightOf[g] = weight;
    this.groupOfWeight.set(weight, g);
    return g;
  }

  /** Room for `groups` groups: the per-group arrays and the tree, rebuilt (rare: ≤ 1000 weights). */
  private widenGroups(groups: number): void {
    let base = this.gBase;
    while (base < groups) base *= 2;
    const widen = <T extends Int32Array | Float64Array>(old: T, make: (n: number) => T): T => {
      const grown = make(base);
      grown.set(old);
      return grown;
    };
    this.weightOf = widen(this.weightOf, (n) => new Int32Array(n));
    this.sizeOf = widen(this.sizeOf, (n) => new Int32Array(n));
    this.lowOf = widen(this.lowOf, (n) => new Int32Array(n));
    this.ratioOf = widen(this.ratioOf, (n) => new Float64Array(n));
    this.firstOf = widen(this.firstOf, (n) => new Float64Array(n));
    this.walkCount = new Int32Array(base);
    this.walkLeaf = new Int32Array(base);
    this.walkSeen = new Int32Array(base);
    this.walkHeap = new Int32Array(base);
    this.gBase = base;
    this.gTree = new Int32Array(2 * base).fill(NONE);
    for (let g = 0; g < this.groups; g++) if (this.sizeOf[g]! > 0) this.gTree[base + g] = g;
    for (let node = base - 1; node >= 1; node--) this.gTree[node] = this.better(this.gTree[2 * node]!, this.gTree[2 * node + 1]!);
  }

  /**
   * Group g's best may have changed: refreshes its key and replays its path of the
   * tournament. Stops at the first node whose winner is another group before and after
   * (every other path is up to date, so nothing above it changes).
   */
  private replay(g: number): void {
    const t = this.gTree;
    let node = this.gBase + g;
    if (this.sizeOf[g]! > 0) {
      const low = this.lowOf[g]!;
      this.ratioOf[g] = low / this.weightOf[g]!;
      this.firstOf[g] = this.arrived[this.buckets[g]![2 * low]!]!;
      t[node] = g;
    } else {
      t[node] = NONE;
    }
    for (node >>>= 1; node >= 1; node >>>= 1) {
      const was = t[node]!;
      const now = this.better(t[2 * node]!, t[2 * node + 1]!);
      t[node] = now;
      if (was !== g && now !== g) return;
    }
  }

  /** The better of two groups (NONE is worse than any): lower count/weight, then earlier arrival. */
  private better(a: number, b: number): number {
    if (a < 0) return b;
    if (b < 0) return a;
    const ra = this.ratioOf[a]!;
    const rb = this.ratioOf[b]!;
    if (ra !== rb) return ra < rb ? a : b;
    return this.firstOf[a]! <= this.firstOf[b]! ? a : b;
  }

  /**
   * A retry: the `skip`-th backend (0-based) in least-connections order, not counting the
   * one handed out last. A backend that failed was opened and closed, which put it at the
   * back of its bucket, so successive retries go down the order to backends not yet
   * tried. A merge of the groups' orders through a binary heap of the groups' positions:
   * O(G + skip · log G), plus the empty counts passed on the way; retries are the rare
   * path (a dial failed).
   */
  private walk(skip: number): number {
    const avoid = this.n > 1 ? this.lastHanded : NONE;
    const want = Math.min(skip, MAX_WALK, this.n - (avoid >= 0 ? 2 : 1));
    const wc = this.walkCount;
    const wl = this.walkLeaf;
    const ws = this.walkSeen;
    const heap = this.walkHeap;
    let size = 0;
    for (let g = 0; g < this.groups; g++) {
      if (this.sizeOf[g]! === 0) continue;
      wc[g] = this.lowOf[g]!;
      wl[g] = this.buckets[g]![2 * wc[g]!]!;
      ws[g] = 0;
      heap[size++] = g;
    }
    for (let i = (size >>> 1) - 1; i >= 0; i--) this.siftDown(heap, size, i);
    let found = 0;
    for (;;) {
      const g = heap[0]!;
      const leaf = wl[g]!;
      if (leaf !== avoid && found++ === want) return leaf;
      // Step that group on: the next in its bucket, else the head of its next count held.
      ws[g]!++;
      let next = this.next[leaf]!;
      if (next < 0 && ws[g]! < this.sizeOf[g]!) {
        wc[g] = this.nextHeld(g, wc[g]!);
        next = this.buckets[g]![2 * wc[g]!]!;
      }
      if (next < 0) heap[0] = heap[--size]!; // that group is done
      else wl[g] = next;
      this.siftDown(heap, size, 0);
    }
  }

  /** Restores the heap order below position i (by each group's walk position). */
  private siftDown(heap: Int32Array, size: number, i: number): void {
    for (;;) {
      const l = 2 * i + 1;
      if (l >= size) return;
      const c = l + 1 < size && this.walksBefore(heap[l + 1]!, heap[l]!) ? l + 1 : l;
      if (!this.walksBefore(heap[c]!, heap[i]!)) return;
      const t = heap[c]!;
      heap[c] = heap[i]!;
      heap[i] = t;
      i = c;
    }
  }

  /** Whether group a's walk position comes before group b's (count · other weight compares exactly). */
  private walksBefore(a: number, b: number): boolean {
    const ka = this.walkCount[a]! * this.weightOf[b]!;
    const kb = this.walkCount[b]! * this.weightOf[a]!;
    return ka < kb || (ka === kb && this.arrived[this.walkLeaf[a]!]! < this.arrived[this.walkLeaf[b]!]!);
  }

  /** Room for at least `needed` leaves: the prepared arrays if they are ready, else new ones. */
  private grow(needed: number): void {
    let capacity = Math.max(16, this.capacity);
    while (capacity < needed) capacity *= 2;
    const spare = this.spare?.ready === true && this.spare.capacity >= capacity ? this.spare : null;
    const leaves = spare?.leaves ?? allocateLeaves(capacity);
    // O(N) copies of memory already touched (if prepared): a few ms at a million.
    leaves.next.set(this.next);
    leaves.prev.set(this.prev);
    leaves.count.set(this.count);
    leaves.group.set(this.groupOf);
    leaves.slot.set(this.slotOf);
    leaves.arrived.set(this.arrived);
    leaves.free.set(this.free.subarray(0, this.freeCount));
    this.next = leaves.next;
    this.prev = leaves.prev;
    this.count = leaves.count;
    this.groupOf = leaves.group;
    this.slotOf = leaves.slot;
    this.arrived = leaves.arrived;
    this.free = leaves.free;
    this.capacity = spare?.capacity ?? capacity;
    this.views.ensure(this.capacity);
    this.spare = null;
  }

  /**
   * Once the leaves are three quarters full (and many), allocates the arrays for twice the
   * capacity and touches them a slice at a time on the event loop, so that growing later
   * finds them ready: the first touch of fresh memory is a page fault, ~20 µs per 4 KiB
   * page here, which at millions of backends would hold the loop for hundreds of ms.
   */
  private prepareGrowth(): void {
    const capacity = 2 * this.capacity;
    if (this.capacity < GROW_AHEAD_FROM || this.n <= (this.capacity >>> 2) * 3 || this.spare?.capacity === capacity) return;
    const spare = { leaves: allocateLeaves(capacity), capacity, ready: false };
    this.spare = spare;
    let at = 0;
    const slice = () => {
      if (this.spare !== spare) return; // superseded
      const deadline = this.now() + SLICE_MS;
      const L = spare.leaves;
      while (at < capacity && this.now() < deadline) {
        const end = Math.min(capacity, at + 16_384);
        for (const array of [L.next, L.prev, L.count, L.group, L.slot, L.arrived, L.free]) array.fill(0, at, end);
        at = end;
      }
      // Room for the views too, a chunk per slice.
      const viewsReady = this.views.reserve(capacity);
      if (at < capacity || !viewsReady) this.schedule(slice);
      else spare.ready = true;
    };
    this.schedule(slice);
  }

  private read(slot: number): number {
    // A count can dip below zero only transiently across threads; never let it sort first.
    const value = Atomics.load(this.shared, slot);
    return value < 0 ? 0 : value;
  }
}
