import type { BackendView } from "../pool/pool.ts";
import type { Picker, PickerContext } from "./picker.ts";
import { groupByWeight, type WeightGroups } from "./weight-groups.ts";

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
 * value t·w − W·c, ties to the lower backend index. With a few distinct weights (one to a
 * handful in practice) a pick scans the G candidates; with more than SCAN_GROUPS, a
 * kinetic tournament keeps the largest (O(log² G) amortised per pick, G ≤ 1000 since
 * weights are 1-1000). Nothing is allocated per pick. After W picks every current is
 * back at 0, so the state restarts there and no counter grows without bound.
 *
 * A new snapshot restarts the sequence from all-zero currents, as nginx does on reload.
 * Retries (attempt > 0) do not consume the sequence: they walk a plain rotation, so a
 * heavy backend that just failed is not handed out again and again.
 */
/** Up to this many distinct weights a pick scans them all; beyond, a kinetic tournament. */
export const SCAN_GROUPS = 16;

export class WeightedPicker implements Picker {
  private backends: readonly BackendView[] = [];
  /** Total weight W: the sequence's period. */
  private total = 0;
  /** Picks made in the current period, 0 ≤ t < W. */
  private t = 0;
  /** Per group: its weight, its members' range in `members`, rotation pointer, min count. */
  private groupWeight = new Int32Array(0);
  private groupStart = new Int32Array(0);
  private groupSize = new Int32Array(0);
  private groupNext = new Int32Array(0);
  private groupCount = new Int32Array(0);
  /** Backend indices, grouped by weight, ascending inside each group (the buffer may be longer). */
  private members = new Int32Array(0);
  /** Each backend's weight, read once per set (the buffer may be longer). */
  private weights = new Int32Array(0);
  /** The tournament over the groups when there are many (null: scan them). */
  private kinetic: KineticTournament | null = null;
  private readonly scanGroups: number;
  private retryCursor = 0;

  constructor(backends: readonly BackendView[], scanGroups = SCAN_GROUPS) {
    this.scanGroups = scanGroups;
    this.update(backends);
  }

  /**
   * The picker for a new snapshot: `previous` updated in place when it is a weighted one,
   * to reuse its arrays (the sequence restarts either way).
   */
  static fromPrevious(routable: readonly BackendView[], _context: PickerContext, previous?: Picker): WeightedPicker {
    if (!(previous instanceof WeightedPicker)) return new WeightedPicker(routable);
    previous.update(routable);
    return previous;
  }

  /**
   * Takes a new routable set. The sequence restarts from all-zero currents (as nginx's
   * does on reload); the arrays are reused, so a change allocates nothing but the small
   * per-group arrays: O(N) in one pass over the views and a counting sort by weight.
   */
  update(backends: readonly BackendView[]): void {
    this.backends = backends;
    const n = backends.length;
    if (this.weights.length < n) {
      this.weights = new Int32Array(n + (n >>> 3));
      this.members = new Int32Array(n + (n >>> 3));
    }
    const weights = this.weights;
    let maxWeight = 0;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const w = backends[i]!.weight;
      weights[i] = w;
      if (w > maxWeight) maxWeight = w;
      total += w;
    }
    this.total = total;
    this.t = 0;
    // Index order inside each group; heaviest group first: it wins most picks, so the
    // scan's best-so-far settles early. With no chunk limit it never yields: its first
    // step is its result.
    const { weight, start } = groupByWeight(weights, n, maxWeight, null, this.members, Infinity).next().value as WeightGroups;
    const groups = weight.length;
    this.groupWeight = weight;
    this.groupStart = start;
    this.groupSize = new Int32Array(groups);
    for (let g = 0; g < groups; g++) this.groupSize[g] = start[g + 1]! - start[g]!;
    this.groupNext = new Int32Array(groups);
    this.groupCount = new Int32Array(groups);
    this.kinetic = groups > this.scanGroups ? new KineticTournament(this) : null;
    this.retryCursor = n > 0 ? this.retryCursor % n : 0;
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
    const best = this.kinetic !== null ? this.kinetic.winner(t) : this.scan(t);
    const chosen = this.candidate(best);
    const next = this.groupNext[best]! + 1;
    if (next === this.groupSize[best]) {
      this.groupNext[best] = 0;
      this.groupCount[best]!++;
    } else {
      this.groupNext[best] = next;
    }
    if (t === this.total) {
      // Every backend got exactly its weight: all currents are 0 again.
      this.t = 0;
      this.groupCount.fill(0);
      this.kinetic?.restart();
    } else {
      this.kinetic?.moved(best, t);
    }
    return this.backends[chosen];
  }

  /** Group g's candidate: its next backend in rotation (an index into the backends). */
  candidate(g: number): number {
    return this.members[this.groupStart[g]! + this.groupNext[g]!]!;
  }

  /** Group g's candidate's `current` at pick t, less a term common to all: t·w − W·count. */
  value(g: number, t: number): number {
    // Exact in doubles: t·w ≤ W·wmax, and with 2^24 backends of weight ≤ 10,000 (1000 in
    // tenths, as slow start hands them over) that is below 2^53.
    return t * this.groupWeight[g]! - this.total * this.groupCount[g]!;
  }

  weightOf(g: number): number {
    return this.groupWeight[g]!;
  }

  get groups(): number {
    return this.groupWeight.length;
  }

  /** Whether group a's candidate wins over group b's at pick t (larger current; on a tie the lower index). */
  beats(a: number, b: number, t: number): boolean {
    const va = this.value(a, t);
    const vb = this.value(b, t);
    return va > vb || (va === vb && this.candidate(a) < this.candidate(b));
  }

  /** The winning group at pick t, by looking at every group: O(G). */
  private scan(t: number): number {
    const groups = this.groupWeight.length;
    const W = this.total;
    let best = -1;
    let bestValue = 0;
    let bestIndex = 0;
    for (let g = 0; g < groups; g++) {
      const value = t * this.groupWeight[g]! - W * this.groupCount[g]!;
      const index = this.members[this.groupStart[g]! + this.groupNext[g]!]!;
      if (best < 0 || value > bestValue || (value === bestValue && index < bestIndex)) {
        best = g;
        bestValue = value;
        bestIndex = index;
      }
    }
    return best;
  }
}

/**
 * The largest of G moving values, for many distinct weights: a kinetic tournament
 * (Basch, Guibas and Hershberger's kinetic data structures). Group g's value
 * t·w_g − W·count_g is a line in t; a tournament tree holds the winner of every node
 * for the current t, and with it a certificate: the first t at which the loser at that
 * node would overtake the winner (never, if the loser is not heavier). A pick first
 * replays the certificates that fall due (a heap by time), then reads the root; the
 * picked group's line then drops (its count grew) or its candidate changed, and only
 * its path to the root is re-evaluated. Each certificate replay or path step is
 * O(log G), and a pick causes O(log G) of them amortised, against O(G) for a scan (the
 * difference at 1,000 distinct weights is in docs/benchmarks.md). The order is exactly the
 * scan's, since every comparison is the scan's comparison.
 *
 * After W picks every value is back to 0 and every rotation at its start: the state at
 * t = 0 is kept and copied back (O(G) once per W ≥ G picks).
 */
class KineticTournament {
  private readonly picker: WeightedPicker;
  /** Leaves start here; leaf base+g is group g (leaves past the groups are empty). */
  private readonly base: number;
  /** Winning group of each node (-1: none below). */
  private readonly win: Int32Array;
  /** Per inner node: the t at which its winner stops winning (Infinity: never). */
  private readonly due: Float64Array;
  /** Min-heap of inner nodes by `due`, and each node's place in it. */
  private readonly heap: Int32Array;
  private readonly place: Int32Array;
  private readonly start: { win: Int32Array; due: Float64Array; heap: Int32Array; place: Int32Array };

  constructor(picker: WeightedPicker) {
    this.picker = picker;
    const groups = picker.groups;
    let base = 1;
    while (base < groups) base <<= 1;
    this.base = base;
    this.win = new Int32Array(2 * base).fill(-1);
    for (let g = 0; g < groups; g++) this.win[base + g] = g;
    this.due = new Float64Array(base).fill(Infinity);
    this.heap = new Int32Array(Math.max(0, base - 1));
    this.place = new Int32Array(base);
    // Winners and certificates at t = 0 bottom up, then the heap over them.
    for (let k = base - 1; k >= 1; k--) this.evaluate(k, 0, false);
    for (let k = 1; k < base; k++) {
      this.heap[k - 1] = k;
      this.place[k] = k - 1;
    }
    for (let i = (this.heap.length >>> 1) - 1; i >= 0; i--) this.down(i);
    this.start = { win: this.win.slice(), due: this.due.slice(), heap: this.heap.slice(), place: this.place.slice() };
  }

  /** The winning group at pick t (certificates due by t replayed first). */
  winner(t: number): number {
    const heap = this.heap;
    while (heap.length > 0 && this.due[heap[0]!]! <= t) {
      // The loser at this node overtakes now: re-evaluate it and, as long as winners
      // change, its ancestors. (Each new certificate is due after t, so this ends.)
      let k = heap[0]!;
      let changed = this.evaluate(k, t);
      for (k >>>= 1; k >= 1 && changed; k >>>= 1) changed = this.evaluate(k, t);
    }
    return this.win[1]!;
  }

  /** Group g's value or candidate changed at pick t: re-evaluate its path. */
  moved(g: number, t: number): void {
    for (let k = (this.base + g) >>> 1; k >= 1; k >>>= 1) this.evaluate(k, t);
  }

  /** Back to the state at t = 0 (all values 0, rotations at their start). */
  restart(): void {
    this.win.set(this.start.win);
    this.due.set(this.start.due);
    this.heap.set(this.start.heap);
    this.place.set(this.start.place);
  }

  /**
   * Sets node k's winner at pick t from its children's, and its certificate (kept in the
   * heap unless `inHeap` is false). Returns whether the winner changed.
   */
  private evaluate(k: number, t: number, inHeap = true): boolean {
    const p = this.picker;
    const a = this.win[2 * k]!;
    const b = this.win[2 * k + 1]!;
    let winner: number;
    let loser: number;
    if (b < 0 || (a >= 0 && p.beats(a, b, t))) {
      winner = a;
      loser = b;
    } else {
      winner = b;
      loser = a;
    }
    const changed = this.win[k] !== winner;
    this.win[k] = winner;
    let due = Infinity;
    if (loser >= 0 && p.weightOf(loser) > p.weightOf(winner)) {
      // The gap closes by the difference of the weights per pick.
      const gap = p.value(winner, t) - p.value(loser, t);
      const closing = p.weightOf(loser) - p.weightOf(winner);
      due = p.candidate(loser) < p.candidate(winner) ? t + Math.ceil(gap / closing) : t + Math.floor(gap / closing) + 1;
    }
    if (due !== this.due[k]) {
      const rising = due > this.due[k]!;
      this.due[k] = due;
      if (inHeap) {
        if (rising) this.down(this.place[k]!);
        else this.up(this.place[k]!);
      }
    }
    return changed;
  }

  private up(i: number): void {
    const heap = this.heap;
    const node = heap[i]!;
    const due = this.due[node]!;
    while (i > 0) {
      const parent = (i - 1) >>> 1;
      const other = heap[parent]!;
      if (this.due[other]! <= due) break;
      heap[i] = other;
      this.place[other] = i;
      i = parent;
    }
    heap[i] = node;
    this.place[node] = i;
  }

  private down(i: number): void {
    const heap = this.heap;
    const size = heap.length;
    const node = heap[i]!;
    const due = this.due[node]!;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= size) break;
      if (child + 1 < size && this.due[heap[child + 1]!]! < this.due[heap[child]!]!) child++;
      const other = heap[child]!;
      if (this.due[other]! >= due) break;
      heap[i] = other;
      this.place[other] = i;
      i = child;
    }
    heap[i] = node;
    this.place[node] = i;
  }
}
