import type { BackendView } from "../pool/pool.ts";
import { Chunks, CHUNK_MASK, CHUNK_SIZE } from "./chunks.ts";

/** End of a list; a free leaf's slot; no leaf. */
export const NONE = -1;

/** From this capacity on, the arrays for the next one are prepared ahead (prepareGrowth). */
const GROW_AHEAD_FROM = 1 << 15;
/** Longest a slice of that preparation holds the event loop, in ms. */
const SLICE_MS = 4;

/** The per-backend arrays, indexed by leaf. */
interface LeafArrays {
  readonly next: Int32Array<ArrayBuffer>;
  readonly prev: Int32Array<ArrayBuffer>;
  readonly count: Int32Array<ArrayBuffer>;
  readonly group: Int32Array<ArrayBuffer>;
  readonly slot: Int32Array<ArrayBuffer>;
  readonly arrived: Float64Array<ArrayBuffer>;
  readonly free: Int32Array<ArrayBuffer>;
}

function allocate(capacity: number): LeafArrays {
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
 * least_connections' record of each backend it holds (a leaf), as parallel typed arrays
 * indexed by leaf, and the views. Leaves are reused (a free list) and the arrays grow by
 * doubling; they never shrink (a picker that holds far fewer backends than its capacity
 * is replaced instead: see suits).
 *
 * The fields are read directly by the bucket lists (count-buckets.ts) and the picker,
 * since they are read on every open and close; growing replaces the arrays, so hold them
 * only for the length of one call.
 */
export class Leaves {
  /** Neighbours in the backend's bucket list. */
  next = new Int32Array(0);
  prev = new Int32Array(0);
  /** The count the backend is filed under (the shared count as last read, never < 0). */
  count = new Int32Array(0);
  group = new Int32Array(0);
  /** Its counter slot, NONE for a free leaf (a re-read needs no trip to the view). */
  slot = new Int32Array(0);
  /** When it arrived at its bucket: orders backends of different groups with equal loads. */
  arrived = new Float64Array(0);
  /** Free leaves below `top`, a stack. */
  private free = new Int32Array(0);
  private freeCount = 0;
  private readonly views = new Chunks(() => new Array<BackendView | undefined>(CHUNK_SIZE).fill(undefined));
  /** Occupied leaves. */
  size = 0;
  /** Leaves in [0, top) have been used; leaves at or past it are all free. */
  top = 0;
  private capacity = 0;

  private readonly schedule: (task: () => void) => void;
  private readonly now: () => number;
  /** Arrays for twice the capacity, being prepared in the background (see prepareGrowth). */
  private spare: { arrays: LeafArrays; capacity: number; ready: boolean } | null = null;

  constructor(schedule: (task: () => void) => void, now: () => number) {
    this.schedule = schedule;
    this.now = now;
  }

  view(leaf: number): BackendView | undefined {
    return this.views.of(leaf)[leaf & CHUNK_MASK];
  }

  setView(leaf: number, view: BackendView): void {
    this.views.of(leaf)[leaf & CHUNK_MASK] = view;
  }

  /**
   * Whether updating in place suits a set of `size` backends. Capacity never shrinks in
   * place, so a pool that fell to an eighth of it (from millions, say) is better served
   * by a new picker: it gives the memory back, and the idle order restarts in pool order.
   */
  suits(size: number): boolean {
    return this.capacity <= GROW_AHEAD_FROM || size >= this.capacity >>> 3;
  }

  /** Room for `more` leaves besides the occupied ones. */
  reserve(more: number): void {
    if (this.size + more > this.capacity) this.grow(this.size + more);
  }

  /** A free leaf (room made by reserve), now holding `view` on its slot. */
  take(view: BackendView): number {
    const leaf = this.freeCount > 0 ? this.free[--this.freeCount]! : this.top++;
    this.setView(leaf, view);
    this.slot[leaf] = view.slot;
    this.size++;
    return leaf;
  }

  /** Frees a leaf (already out of its bucket). */
  release(leaf: number): void {
    this.views.of(leaf)[leaf & CHUNK_MASK] = undefined;
    this.slot[leaf] = NONE;
    this.free[this.freeCount++] = leaf;
    this.size--;
  }

  /** Room for at least `needed` leaves: the prepared arrays if they are ready, else new ones. */
  private grow(needed: number): void {
    let capacity = Math.max(16, this.capacity);
    while (capacity < needed) capacity *= 2;
    const spare = this.spare?.ready === true && this.spare.capacity >= capacity ? this.spare : null;
    const arrays = spare?.arrays ?? allocate(capacity);
    // O(N) copies, but into memory already touched (if prepared): no page faults.
    arrays.next.set(this.next);
    arrays.prev.set(this.prev);
    arrays.count.set(this.count);
    arrays.group.set(this.group);
    arrays.slot.set(this.slot);
    arrays.arrived.set(this.arrived);
    arrays.free.set(this.free.subarray(0, this.freeCount));
    this.next = arrays.next;
    this.prev = arrays.prev;
    this.count = arrays.count;
    this.group = arrays.group;
    this.slot = arrays.slot;
    this.arrived = arrays.arrived;
    this.free = arrays.free;
    this.capacity = spare?.capacity ?? capacity;
    this.views.ensure(this.capacity);
    this.spare = null;
  }

  /**
   * Once the leaves are three quarters full (and many), allocates the arrays for twice the
   * capacity and touches them a slice at a time on the event loop, so that growing later
   * finds them ready: the first touch of fresh memory is a page fault per 4 KiB page, and
   * at millions of backends touching them all in one go would hold the loop far longer
   * than any change should (docs/benchmarks.md, "least_connections internals").
   */
  prepareGrowth(): void {
    const capacity = 2 * this.capacity;
    if (this.capacity < GROW_AHEAD_FROM || this.size <= (this.capacity >>> 2) * 3 || this.spare?.capacity === capacity) return;
    const spare = { arrays: allocate(capacity), capacity, ready: false };
    this.spare = spare;
    let at = 0;
    const slice = () => {
      if (this.spare !== spare) return; // superseded
      const deadline = this.now() + SLICE_MS;
      const A = spare.arrays;
      while (at < capacity && this.now() < deadline) {
        const end = Math.min(capacity, at + 16_384);
        for (const array of [A.next, A.prev, A.count, A.group, A.slot, A.arrived, A.free]) array.fill(0, at, end);
        at = end;
      }
      // Room for the views too, a chunk per slice.
      const viewsReady = this.views.reserve(capacity);
      if (at < capacity || !viewsReady) this.schedule(slice);
      else spare.ready = true;
    };
    this.schedule(slice);
  }
}
