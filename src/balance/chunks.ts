/** Entries per chunk: 2^15. */
export const CHUNK_BITS = 15;
export const CHUNK_SIZE = 1 << CHUNK_BITS;
/** `i & CHUNK_MASK` is entry i's place in its chunk (`of(i)`). */
export const CHUNK_MASK = CHUNK_SIZE - 1;

/**
 * Storage for a growing number of entries as a list of fixed-size chunks (each made by
 * `make`, for CHUNK_SIZE entries): growing adds chunks instead of copying one large array
 * into a larger one, which would touch fresh memory all at once (a page fault per 4 KiB)
 * and copy what is there. Chunks can also be added one at a time ahead of need, a slice
 * of background work each (reserve).
 */
export class Chunks<C> {
  private readonly list: C[] = [];
  private readonly make: () => C;

  constructor(make: () => C) {
    this.make = make;
  }

  /** The chunk that holds entry i (there must be room for it); its place there is i & CHUNK_MASK. */
  of(i: number): C {
    return this.list[i >>> CHUNK_BITS]!;
  }

  /** Adds one chunk towards room for `size` entries; returns whether there is room now. */
  reserve(size: number): boolean {
    if (this.list.length * CHUNK_SIZE >= size) return true;
    this.list.push(this.make());
    return false;
  }

  /** Room for entries [0, size) at least. */
  ensure(size: number): void {
    while (this.list.length * CHUNK_SIZE < size) this.list.push(this.make());
  }
}
