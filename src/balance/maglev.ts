import type { BackendView } from "../pool/pool.ts";
import { hashString, SEED_OFFSET, SEED_ORDER, SEED_SKIP } from "./hash.ts";

/**
 * Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
 * Load Balancer", NSDI 2016), weighted: M entries, M prime; each backend walks its own
 * permutation of the entries (offset + k·skip mod M, both from a fixed-seed hash of its
 * canonical key) and backends take turns claiming the next free entry on theirs, a
 * backend of weight w taking w turns for every wmax. Each backend thus owns its share of
 * the entries to within one entry, and a change of the set moves few entries besides the
 * changed backend's own.
 *
 * The table is a pure function of the set of (key, weight): backends take their turns in
 * a canonical order (by a hash of the key, then the key), not in the pool's order, so
 * every process builds the same table for the same set whatever its history.
 *
 * Two departures from the paper, both measured (docs/benchmarks.md):
 * - Filling stops at FILL of the entries. The last few percent cost most of the build
 *   (a backend probes M/free entries per claim, M·ln M in all for a full table against
 *   M·ln(1/(1-FILL)) here, about 4× less); a lookup that lands on an empty entry follows
 *   the client's own probe sequence to the next filled one, which keeps shares and
 *   disruption as they were.
 * - Builds are resumable (a generator yielding every few thousand steps), so a table for
 *   a million backends is built in slices without blocking the event loop.
 */

export const FILL = 0.97;
export const EMPTY = -1;

/**
 * Table sizes come from a fixed ladder (the first prime above 2^k), chosen from the
 * backend count: entries per backend ≥ 100 up to 1,000 backends (shares within 1%),
 * ≥ 20 beyond (within 5%), capped at ~2^26 entries (256 MB; ~6.7 per backend at 10M).
 * A step of the ladder remaps most clients once, so steps are rare: a size holds over a
 * doubling of the backend count.
 */
export function tableSize(backends: number): number {
  const wanted = Math.max(100 * Math.min(backends, 1000), 20 * backends);
  for (let k = 16; k < 26; k++) if (2 ** k + 1 >= wanted) return primeAbove(2 ** k);
  return primeAbove(2 ** 26);
}

function primeAbove(n: number): number {
  for (let p = n + 1; ; p++) if (isPrime(p)) return p;
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}

/** A finished table: entries index `backends`, in canonical order. */
export interface MaglevTable {
  readonly size: number;
  readonly entries: Int32Array;
  readonly backends: BackendView[];
}

/** Work units (probes, hashed keys, sorted items) between two yields of a build. */
const STEP = 8192;

/**
 * Builds the table for `set`. Yields between slices of work; returns the table. The
 * caller drives it (to completion at once for small sets, in time slices otherwise).
 */
export function* buildMaglev(set: readonly BackendView[]): Generator<void, MaglevTable, void> {
  const n = set.length;
  const size = tableSize(n);
  const order = yield* canonicalOrder(set);
  const backends: BackendView[] = new Array<BackendView>(n);
  const next = new Uint32Array(n);
  const skip = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const b = set[order[i]!]!;
    backends[i] = b;
    next[i] = hashString(b.key, SEED_OFFSET) % size;
    skip[i] = (hashString(b.key, SEED_SKIP) % (size - 1)) + 1;
    if (i % STEP === STEP - 1) yield;
  }
  const entries = new Int32Array(size);
  for (let at = 0; at < size; at += 1 << 20) {
    entries.fill(EMPTY, at, Math.min(size, at + (1 << 20)));
    yield;
  }
  if (n === 0) return { size, entries, backends };

  // Weight groups, heaviest first, members in canonical order (counting sort: O(N + 1000)).
  let wmax = 0;
  for (const b of backends) if (b.weight > wmax) wmax = b.weight;
  const perWeight = new Int32Array(wmax + 1);
  for (const b of backends) perWeight[b.weight]!++;
  let groups = 0;
  for (let w = 1; w <= wmax; w++) if (perWeight[w]! > 0) groups++;
  const groupWeight = new Int32Array(groups);
  const groupStart = new Int32Array(groups + 1);
  const startOf = new Int32Array(wmax + 1);
  for (let w = wmax, g = 0, at = 0; w >= 1; w--) {
    if (perWeight[w] === 0) continue;
    groupWeight[g] = w;
    groupStart[g] = at;
    startOf[w] = at;
    at += perWeight[w]!;
    groupStart[++g] = at;
  }
  const members = new Int32Array(n);
  for (let i = 0; i < n; i++) members[startOf[backends[i]!.weight]!++] = i;

  // Turns: a group of weight w gets one turn per round in which ⌊round·w/wmax⌋ grows
  // (credit += w; a turn when credit reaches wmax), every member of it one claim.
  const credit = new Int32Array(groups);
  const target = Math.max(1, Math.floor(size * FILL));
  let filled = 0;
  let work = 0;
  for (;;) {
    for (let g = 0; g < groups; g++) {
      credit[g]! += groupWeight[g]!;
      if (credit[g]! < wmax) continue;
      credit[g]! -= wmax;
      for (let m = groupStart[g]!, end = groupStart[g + 1]!; m < end; m++) {
        const i = members[m]!;
        const s = skip[i]!;
        let c = next[i]!;
        while (entries[c] !== EMPTY) {
          c += s;
          if (c >= size) c -= size;
          work++;
        }
        entries[c] = i;
        c += s;
        next[i] = c >= size ? c - size : c;
        if (++filled === target) return { size, entries, backends };
        if (++work >= STEP) {
          work = 0;
          yield;
        }
      }
    }
  }
}

/**
 * Indices of `set` sorted by (hash of key, key): LSD radix sort on the 32-bit hash in two
 * 16-bit passes (O(N), resumable), then the rare runs of equal hashes sorted by key.
 */
function* canonicalOrder(set: readonly BackendView[]): Generator<void, Uint32Array, void> {
  const n = set.length;
  const hash = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    hash[i] = hashString(set[i]!.key, SEED_ORDER);
    if (i % STEP === STEP - 1) yield;
  }
  let from = new Uint32Array(n);
  for (let i = 0; i < n; i++) from[i] = i;
  let to = new Uint32Array(n);
  const counts = new Uint32Array(1 << 16);
  for (const shift of [0, 16]) {
    counts.fill(0);
    for (let i = 0; i < n; i++) counts[(hash[i]! >>> shift) & 0xffff]!++;
    let sum = 0;
    for (let d = 0; d < counts.length; d++) {
      const c = counts[d]!;
      counts[d] = sum;
      sum += c;
    }
    yield;
    for (let i = 0; i < n; i++) {
      const idx = from[i]!;
      to[counts[(hash[idx]! >>> shift) & 0xffff]!++] = idx;
      if (i % STEP === STEP - 1) yield;
    }
    [from, to] = [to, from];
  }
  for (let i = 0, scanned = 0; i < n; ) {
    let j = i + 1;
    while (j < n && hash[from[j]!] === hash[from[i]!]) j++;
    if (j - i > 1) {
      const run = Array.from(from.subarray(i, j)).sort((a, b) => (set[a]!.key < set[b]!.key ? -1 : 1));
      from.set(run, i);
    }
    scanned += j - i;
    i = j;
    if (scanned >= STEP) {
      scanned = 0;
      yield;
    }
  }
  return from;
}
