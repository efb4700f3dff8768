import type { BackendView } from "../pool/pool.ts";
import { CountBuckets } from "./count-buckets.ts";
import { diffRoutable } from "./diff.ts";
import { Leaves, NONE } from "./leaves.ts";
import type { Picker, PickerContext } from "./picker.ts";

/**
 * The backend with the fewest active connections per unit of weight; among equal ones the
 * one that reached that load first, which is round robin: idle backends take turns in
 * order. (HAProxy's leastconn breaks ties the same way: a server requeued at a load goes
 * behind the servers already there.)
 *
 * Three parts: each backend held is a leaf, a row of typed arrays (leaves.ts); the leaves
 * are kept in that order in buckets by active count, one set of buckets per weight, with
 * a tournament over the weights (count-buckets.ts, group-tournament.ts). A pick reads the
 * first of the order, O(1); a connection opening or closing moves one backend to the
 * neighbouring bucket, O(1), plus O(log G) for G distinct weights. No step depends on N.
 * This class keeps the order in step with the shared counts and the pool.
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
 * its order), so it rarely reads a backend at all; views copied across threads compare
 * by slot and key.
 *
 * How exact with several data-plane threads: the counts themselves live in shared memory
 * (`active`, changed with Atomics by every thread), but each thread keeps its own
 * buckets, placed by the count it last read. A backend's count is re-read whenever this
 * thread touches it: on its own opens and closes, and, when other threads change counts
 * too (`countsChangedElsewhere`), on the winner of every pick (re-read before it is handed
 * out, and the choice made again if it moved, up to four times) and one more backend per
 * pick in rotation, so every backend is re-read at least once per N picks. So with one
 * thread the pick is exactly a minimum; with several, the winner's count is current at
 * the moment of the pick (unless it moved four times over), and another backend can look
 * busier (or idler) than it is only by the other threads' opens and closes on it since
 * this thread last read it — and no backend is handed out on a stale low count. Two
 * threads picking at the same instant may both choose the same idle backend. A re-read
 * may move a backend by more than one count; the group's new lowest count is then found
 * by scanning the buckets in between, which costs as many steps as the other threads
 * made changes on that backend.
 */

/** Retries (attempt ≥ 1) walk at most this far down the order; the data plane tries ≤ 16 picks. */
const MAX_WALK = 128;

export class LeastConnectionsPicker implements Picker {
  private readonly shared: Int32Array;
  /** Other threads change `shared` too, unannounced (see the class comment). */
  private readonly countsChangedElsewhere: boolean;
  /** The routable list the buckets reflect, to diff the next one against. */
  private routable: readonly BackendView[] = [];
  private readonly leaves: Leaves;
  private readonly order: CountBuckets;
  /** slot → leaf, NONE where this picker has no backend on that slot. */
  private leafOfSlot = new Int32Array(0);
  /** The last leaf handed out, until its open is reported (then it has moved anyway). */
  private pending = NONE;
  /** The last leaf handed out: what a retry walks around. */
  private lastHanded = NONE;
  /** Next leaf to re-read in rotation when other threads change counts. */
  private scrub = 0;

  constructor(backends: readonly BackendView[], context: PickerContext) {
    this.shared = context.active;
    this.countsChangedElsewhere = context.countsChangedElsewhere ?? true;
    this.leaves = new Leaves(context.schedule ?? ((task) => void setImmediate(task).unref()), context.now ?? (() => performance.now()));
    this.order = new CountBuckets(this.leaves);
    this.update(backends);
  }

  /**
   * The picker for a new snapshot: `previous` with the changed backends moved in place, a
   * change costing O(changes) rather than a rebuild, when it reads the same shared counts
   * and its leaf arrays suit the new size (see Leaves.suits); otherwise a new one.
   */
  static fromPrevious(routable: readonly BackendView[], context: PickerContext, previous?: Picker): LeastConnectionsPicker {
    if (!(previous instanceof LeastConnectionsPicker) || previous.shared !== context.active || !previous.leaves.suits(routable.length)) {
      return new LeastConnectionsPicker(routable, context);
    }
    previous.update(routable);
    return previous;
  }

  /** Number of backends held (for tests). */
  get size(): number {
    return this.leaves.size;
  }

  /**
   * Makes the buckets reflect `next`: O(N) reference comparisons to find the changes,
   * then O(1) per changed backend (plus O(log G) to replay its group's path). Counts and
   * places of unchanged backends carry over.
   */
  update(next: readonly BackendView[]): void {
    if (next === this.routable) return;
    // From empty (the first build), everything is new: no walk, no list of additions.
    const diff = this.leaves.size === 0 ? { removed: [], renewed: [], added: next } : diffRoutable(this.routable, next, (view) => this.holds(view))!;
    this.routable = next;
    this.settlePending();
    for (const view of diff.removed) if (this.holds(view)) this.removeLeaf(this.leafOfSlot[view.slot]!, view.slot);
    for (let k = 0; k < diff.renewed.length; k++) {
      const view = diff.renewed[k]!;
      const leaf = this.leafOfSlot[view.slot]!;
      this.leaves.setView(leaf, view);
      if (view.weight !== this.order.weightOfLeaf(leaf)) {
        const count = this.leaves.count[leaf]!;
        this.order.detach(leaf);
        this.order.attach(leaf, this.order.groupFor(view.weight), count);
      }
    }
    this.leaves.reserve(diff.added.length);
    let maxSlot = -1;
    for (const view of diff.added) if (view.slot > maxSlot) maxSlot = view.slot;
    if (maxSlot >= this.leafOfSlot.length) this.widenSlots(maxSlot);
    let weight = 0;
    let group = NONE;
    for (const view of diff.added) {
      if (view.weight !== weight) {
        weight = view.weight;
        group = this.order.groupFor(weight);
      }
      const leaf = this.leaves.take(view);
      this.leafOfSlot[view.slot] = leaf;
      this.order.attach(leaf, group, this.read(view.slot));
    }
    if (this.scrub >= this.leaves.top) this.scrub = 0;
    this.leaves.prepareGrowth();
  }

  pick(_clientIp: string, attempt: number): BackendView | undefined {
    if (this.leaves.size === 0) return undefined;
    this.settlePending();
    let chosen: number;
    if (this.countsChangedElsewhere) {
      // Keep other threads' counts flowing in: one leaf per pick, in rotation.
      const top = this.leaves.top;
      if (this.scrub < top) this.refresh(this.scrub);
      this.scrub = this.scrub + 1 >= top ? 0 : this.scrub + 1;
      chosen = this.choose(attempt);
      // The winner's count may have moved on another thread since we last read it.
      for (let i = 0; i < 4 && this.refresh(chosen); i++) chosen = this.choose(attempt);
    } else {
      chosen = this.choose(attempt);
    }
    this.pending = chosen;
    this.lastHanded = chosen;
    return this.leaves.view(chosen);
  }

  connectionOpened(slot: number): void {
    this.touch(slot);
  }

  connectionClosed(slot: number): void {
    this.touch(slot);
  }

  /** A first pick is the head of the order; a retry walks on (see retry). */
  private choose(attempt: number): number {
    return attempt === 0 ? this.order.best() : this.retry(attempt - 1);
  }

  /**
   * The `skip`-th backend (0-based) in the order, not counting the one handed out last:
   * a backend that failed was opened and closed, which put it at the back of its bucket,
   * so successive retries go down the order to backends not yet tried. Retries are the
   * rare path (a dial failed). Kept out of choose, which is inlined into every pick.
   */
  private retry(skip: number): number {
    const n = this.leaves.size;
    const avoid = n > 1 ? this.lastHanded : NONE;
    return this.order.nth(Math.min(skip, MAX_WALK, n - (avoid >= 0 ? 2 : 1)), avoid);
  }

  /** Whether `view`'s backend has a leaf here. */
  private holds(view: BackendView): boolean {
    if (view.slot >= this.leafOfSlot.length) return false;
    const leaf = this.leafOfSlot[view.slot]!;
    return leaf >= 0 && this.leaves.view(leaf)!.key === view.key;
  }

  /** Re-files the leaf of `slot` under its shared count (an open or close on it). */
  private touch(slot: number): void {
    if (slot >= this.leafOfSlot.length) return;
    const leaf = this.leafOfSlot[slot]!;
    if (leaf < 0) return;
    if (leaf === this.pending) {
      // Its open (or a close that came first): to the back of its new bucket either way.
      this.pending = NONE;
      this.order.move(leaf, this.read(slot));
    } else {
      this.refresh(leaf);
    }
  }

  /** Re-reads a leaf's shared count; returns whether it changed (the leaf then moved). */
  private refresh(leaf: number): boolean {
    const slot = this.leaves.slot[leaf]!;
    if (slot < 0) return false;
    const count = this.read(slot);
    if (count === this.leaves.count[leaf]) return false;
    if (leaf === this.pending) this.pending = NONE;
    this.order.move(leaf, count);
    return true;
  }

  /** The last pick's winner, not reported open: to the back of its bucket, so turns pass on. */
  private settlePending(): void {
    const leaf = this.pending;
    if (leaf < 0) return;
    this.pending = NONE;
    this.order.move(leaf, this.leaves.count[leaf]!);
  }

  private removeLeaf(leaf: number, slot: number): void {
    if (leaf === this.pending) this.pending = NONE;
    if (leaf === this.lastHanded) this.lastHanded = NONE;
    this.order.detach(leaf);
    this.leaves.release(leaf);
    this.leafOfSlot[slot] = NONE;
  }

  /** Room in leafOfSlot for `slot`, with headroom: new backends take new slots. */
  private widenSlots(slot: number): void {
    let length = Math.max(16, this.leafOfSlot.length);
    while (length <= slot) length += (length >>> 3) + 16;
    const grown = new Int32Array(length).fill(NONE);
    grown.set(this.leafOfSlot);
    this.leafOfSlot = grown;
  }

  private read(slot: number): number {
    // A count can dip below zero only transiently across threads; never let it sort first.
    const value = Atomics.load(this.shared, slot);
    return value < 0 ? 0 : value;
  }
}
