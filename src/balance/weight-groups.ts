/**
 * Backends grouped by weight: the groups' weights, heaviest first, and each group's range
 * in a `members` array of backend indices.
 */
export interface WeightGroups {
  /** Group g's weight; heaviest first. */
  readonly weight: Int32Array<ArrayBuffer>;
  /** Group g's members are members[start[g]] … members[start[g + 1] − 1]. */
  readonly start: Int32Array<ArrayBuffer>;
}

/**
 * Writes backend indices into `members` grouped by weight, heaviest group first; inside a
 * group they keep the order they come in (`order`, or 0 … n−1 when null). A counting sort:
 * O(N + maxWeight), with weights 1 … maxWeight read from `weights` by backend index.
 *
 * Yields after every `chunk` backends of each of its two passes, so a caller can spread
 * a large set over slices of time (an ip_hash table build); with chunk ≥ n it runs through
 * without yielding. The passes themselves are plain functions: loops inside a generator
 * compile to slower code.
 */
export function* groupByWeight(
  weights: Int32Array,
  n: number,
  maxWeight: number,
  order: ArrayLike<number> | null,
  members: Int32Array,
  chunk: number,
): Generator<void, WeightGroups, void> {
  const perWeight = new Int32Array(maxWeight + 1);
  for (let at = 0; at < n; at += chunk) {
    tally(weights, at, Math.min(n, at + chunk), perWeight);
    if (at + chunk < n) yield;
  }
  let groups = 0;
  for (let w = 1; w <= maxWeight; w++) if (perWeight[w]! > 0) groups++;
  const weight = new Int32Array(groups);
  const start = new Int32Array(groups + 1);
  // Becomes, per weight, where its next member goes.
  const next = perWeight;
  for (let w = maxWeight, g = 0, at = 0; w >= 1; w--) {
    const size = perWeight[w]!;
    if (size === 0) continue;
    weight[g] = w;
    start[g] = at;
    next[w] = at;
    at += size;
    start[++g] = at;
  }
  for (let at = 0; at < n; at += chunk) {
    place(weights, order, at, Math.min(n, at + chunk), next, members);
    if (at + chunk < n) yield;
  }
  return { weight, start };
}

function tally(weights: Int32Array, from: number, to: number, perWeight: Int32Array): void {
  for (let k = from; k < to; k++) perWeight[weights[k]!]!++;
}

/** Places the backends at positions [from, to) of the order. */
function place(weights: Int32Array, order: ArrayLike<number> | null, from: number, to: number, next: Int32Array, members: Int32Array): void {
  if (order === null) {
    for (let k = from; k < to; k++) members[next[weights[k]!]!++] = k;
  } else {
    for (let i = from; i < to; i++) {
      const k = order[i]!;
      members[next[weights[k]!]!++] = k;
    }
  }
}
