import { GroupTournament } from "./group-tournament.ts";
import { NONE, type Leaves } from "./leaves.ts";

/**
 * least_connections' order of its backends, as in the O(1) LFU cache: backends of one
 * weight form a group, and within a group every active count that some backend has is a
 * bucket, a doubly linked list of its backends in the order they arrived at that count.
 * A group knows its lowest count, so its best backend is the head of that bucket. Moving
 * a backend to another count takes it from its bucket to the tail of the other, O(1),
 * and the group's lowest count moves at most to the backend's new count. The groups meet
 * in a tournament (group-tournament.ts) keyed by (lowest count / weight, when the head of
 * that bucket arrived), so the best backend of all is read in O(1) and a move costs
 * O(log G) for G distinct weights (1 to 3 in most pools; weights are at most 1000).
 *
 * The order is therefore by count / weight, then by arrival at that count: among equal
 * loads the backend that reached the load first goes first, which for idle backends is
 * taking turns. The links and counts live in the picker's leaf arrays (leaves.ts).
 */
export class CountBuckets {
  private readonly leaves: Leaves;
  /**
   * Each group's buckets: the head leaf of count c at 2·c and its tail at 2·c + 1 (one
   * cache line for both), NONE where no member has that count.
   */
  private readonly buckets: Int32Array[] = [];
  private weightOf = new Int32Array(1);
  private sizeOf = new Int32Array(1);
  /** Lowest count of a member (meaningless while the group is empty). */
  private lowOf = new Int32Array(1);
  private groups = 0;
  private readonly groupOfWeight = new Map<number, number>();
  private readonly freeGroups: number[] = [];
  private readonly tournament = new GroupTournament();
  /** Arrival sequence (see Leaves.arrived). */
  private seq = 0;
  /** Scratch for nth's walk: each group's position (count, leaf), members passed, a heap. */
  private walkCount = new Int32Array(1);
  private walkLeaf = new Int32Array(1);
  private walkSeen = new Int32Array(1);
  private walkHeap = new Int32Array(1);

  constructor(leaves: Leaves) {
    this.leaves = leaves;
  }

  /** The first backend in the order (there must be one). */
  best(): number {
    const g = this.tournament.best();
    return this.buckets[g]![2 * this.lowOf[g]!]!;
  }

  /** The weight of a leaf's group. */
  weightOfLeaf(leaf: number): number {
    return this.weightOf[this.leaves.group[leaf]!]!;
  }

  /** The group of backends of this weight, made if there is none. */
  groupFor(weight: number): number {
    const known = this.groupOfWeight.get(weight);
    if (known !== undefined) return known;
    const g = this.freeGroups.pop() ?? this.groups++;
    if (g >= this.weightOf.length) this.widenGroups(g + 1);
    this.tournament.ensure(g + 1);
    if (g === this.buckets.length) this.buckets.push(new Int32Array(16).fill(NONE));
    this.weightOf[g] = weight;
    this.groupOfWeight.set(weight, g);
    return g;
  }

  /** Files a leaf into group `g` at `count`, at the back of those there. */
  attach(leaf: number, g: number, count: number): void {
    this.leaves.group[leaf] = g;
    this.link(g, leaf, count);
    if (this.sizeOf[g]!++ === 0 || count < this.lowOf[g]!) this.lowOf[g] = count;
    this.rank(g);
  }

  /** Takes a leaf out of its group (a removal or a weight change). */
  detach(leaf: number): void {
    const g = this.leaves.group[leaf]!;
    const count = this.leaves.count[leaf]!;
    this.unlink(g, leaf);
    if (--this.sizeOf[g]! === 0) {
      this.groupOfWeight.delete(this.weightOf[g]!);
      this.freeGroups.push(g);
    } else if (count === this.lowOf[g]! && this.buckets[g]![2 * count]! < 0) {
      // A membership change, not a connection: a scan up to the next count held is fine.
      this.lowOf[g] = this.nextHeld(g, count);
    }
    this.rank(g);
  }

  /** Moves a leaf to the tail of the `to` bucket of its group (`to` may be its own count). */
  move(leaf: number, to: number): void {
    const L = this.leaves;
    const g = L.group[leaf]!;
    const buckets = this.buckets[g]!;
    const next = L.next;
    const prev = L.prev;
    const from = L.count[leaf]!;
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
      L.count[leaf] = to;
      L.arrived[leaf] = ++this.seq;
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
    this.rank(g);
  }

  /**
   * The `skip`-th backend (0-based) in the order, not counting `avoid` (a leaf, or NONE);
   * there must be that many. A merge of the groups' orders through a binary heap of the
   * groups' positions: O(G + skip · log G), plus the empty counts passed on the way.
   */
  nth(skip: number, avoid: number): number {
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
      if (leaf !== avoid && found++ === skip) return leaf;
      // Step that group on: the next in its bucket, else the head of its next count held.
      ws[g]!++;
      let next = this.leaves.next[leaf]!;
      if (next < 0 && ws[g]! < this.sizeOf[g]!) {
        wc[g] = this.nextHeld(g, wc[g]!);
        next = this.buckets[g]![2 * wc[g]!]!;
      }
      if (next < 0) heap[0] = heap[--size]!; // that group is done
      else wl[g] = next;
      this.siftDown(heap, size, 0);
    }
  }

  /** Group g's best may have changed: its key in the tournament, from its lowest bucket. */
  private rank(g: number): void {
    if (this.sizeOf[g]! === 0) {
      this.tournament.remove(g);
      return;
    }
    const low = this.lowOf[g]!;
    // Exact: two distinct ratios a/w and b/v differ by at least 1/(w·v), more than a
    // double's rounding of either while counts stay below 2^31 and weights ≤ 10,000 (slow
    // start ramps weights up to ten times the configured 1-1000).
    this.tournament.set(g, low / this.weightOf[g]!, this.leaves.arrived[this.buckets[g]![2 * low]!]!);
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
    const L = this.leaves;
    const buckets = this.buckets[g]!;
    const tail = buckets[2 * count + 1]!;
    L.prev[leaf] = tail;
    L.next[leaf] = NONE;
    if (tail < 0) buckets[2 * count] = leaf;
    else L.next[tail] = leaf;
    buckets[2 * count + 1] = leaf;
    L.count[leaf] = count;
    L.arrived[leaf] = ++this.seq;
  }

  private unlink(g: number, leaf: number): void {
    const L = this.leaves;
    const count = L.count[leaf]!;
    const prev = L.prev[leaf]!;
    const next = L.next[leaf]!;
    if (prev < 0) this.buckets[g]![2 * count] = next;
    else L.next[prev] = next;
    if (next < 0) this.buckets[g]![2 * count + 1] = prev;
    else L.prev[next] = prev;
  }

  /** Room in a group's bucket arrays for `count` (they grow with connections). */
  private widen(g: number, count: number): void {
    let length = this.buckets[g]!.length * 2;
    while (length <= 2 * count + 1) length *= 2;
    const grown = new Int32Array(length).fill(NONE);
    grown.set(this.buckets[g]!);
    this.buckets[g] = grown;
  }

  /** Room for `groups` groups in the per-group arrays (rare: ≤ 1000 weights). */
  private widenGroups(groups: number): void {
    let length = this.weightOf.length;
    while (length < groups) length *= 2;
    const widen = (old: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> => {
      const grown = new Int32Array(length);
      grown.set(old);
      return grown;
    };
    this.weightOf = widen(this.weightOf);
    this.sizeOf = widen(this.sizeOf);
    this.lowOf = widen(this.lowOf);
    this.walkCount = new Int32Array(length);
    this.walkLeaf = new Int32Array(length);
    this.walkSeen = new Int32Array(length);
    this.walkHeap = new Int32Array(length);
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
    const arrived = this.leaves.arrived;
    return ka < kb || (ka === kb && arrived[this.walkLeaf[a]!]! < arrived[this.walkLeaf[b]!]!);
  }
}
