import type { BackendView } from "../pool/pool.ts";
import { Chunks, CHUNK_MASK, CHUNK_SIZE } from "./chunks.ts";
import { hashString, SEED_OFFSET, SEED_ORDER, SEED_SKIP } from "./hash.ts";
import { groupByWeight } from "./weight-groups.ts";

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
 * - Filling stops at FILL of the entries. The last entries cost most of the build
 *   (a backend probes M/free entries per claim, M·ln M in all for a full table against
 *   M·ln(1/(1-FILL)) here, about 6× less at 2^18 entries); a lookup that lands on an empty entry follows
 *   the client's own probe sequence to the next filled one, which keeps shares and
 *   disruption as they were.
 * - Builds are resumable (a generator yielding every few thousand steps), so a table for
 *   a million backends is built in slices without blocking the event loop, and they
 *   reuse the buffers of earlier builds (MaglevWorkspace, the table out of service).
 */

export const FILL = 0.9;
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

/**
 * A finished table. Entries hold indices into `set`, the routable list the table was
 * built from (so no array of views is made per build); `alive` and `indexOfSlot` are
 * kept by the picker as the set moves on. Buffers may be longer than needed: they are
 * reused by later builds.
 */
export interface MaglevTable {
  /** Entries in use: [0, size). */
  readonly size: number;
  /** Entry → index into `set`, or EMPTY. */
  readonly entries: Int32Array;
  /** The backends the table was built for, as given. */
  readonly set: readonly BackendView[];
  /**
   * One bit per index into `set`: set while that backend is routable (all set when
   * built). Bits rather than bytes: at millions of backends it stays in cache, and a
   * lookup reads it for every pick.
   */
  readonly alive: Int32Array;
  /** Backend slot → index into `set`, -1 for none. */
  readonly indexOfSlot: Int32Array;
}

/**
 * Scratch arrays of the builds, kept between builds. Allocating them afresh for every
 * build would make each build touch new memory, and first touches are page faults, tens
 * of MB of them at a million backends, expensive in one go on some hosts. Here
 * memory is allocated only when a build needs more than before, and then first touched
 * a chunk per slice.
 */
export class MaglevWorkspace {
  hash = new Uint32Array(0);
  from = new Uint32Array(0);
  to = new Uint32Array(0);
  next = new Uint32Array(0);
  skip = new Uint32Array(0);
  weight = new Int32Array(0);
  slot = new Int32Array(0);
  members = new Int32Array(0);
  /** One bit per table entry, set once the entry is claimed. */
  occupied = new Int32Array(0);
  readonly counts = new Uint32Array(1 << 16);
  readonly keyHashes = new KeyHashes();
}

/**
 * The three hashes of each backend's key, by slot, kept from build to build (a set
 * changes by a few backends at a time, and hashing every key again is a noticeable part
 * of a build). A slot's entry is trusted only for the same key. In chunks, so
 * growing never copies or touches much fresh memory at once.
 */
class KeyHashes {
  private readonly keys = new Chunks(() => new Array<string | undefined>(CHUNK_SIZE).fill(undefined));
  private readonly hashes = new Chunks(() => new Uint32Array(3 * CHUNK_SIZE));

  /** Writes the hashes of `key` (on `slot`) to out[0], out[1], out[2]. */
  get(slot: number, key: string, out: Uint32Array): void {
    this.keys.ensure(slot + 1);
    this.hashes.ensure(slot + 1);
    const i = slot & CHUNK_MASK;
    const keys = this.keys.of(slot);
    const hashes = this.hashes.of(slot);
    if (keys[i] !== key) {
      keys[i] = key;
      hashes[3 * i] = hashString(key, SEED_ORDER);
      hashes[3 * i + 1] = hashString(key, SEED_OFFSET);
      hashes[3 * i + 2] = hashString(key, SEED_SKIP);
    }
    out[0] = hashes[3 * i]!;
    out[1] = hashes[3 * i + 1]!;
    out[2] = hashes[3 * i + 2]!;
  }
}

/** Work units (probes, hashed keys, sorted items) between two yields of a build. */
const STEP = 4096;
/** Views read between two yields, minus one (a mask). */
const OBJECTS = (1 << 11) - 1;
/** Iterations of a simple loop over typed arrays between two yields, minus one (a mask). */
const LOOP = (1 << 15) - 1;
/**
 * Elements written between two yields when filling (and so first touching) an array: a
 * simple loop's worth (LOOP). A slice of work, not chunks.ts's storage chunk, though the
 * two happen to be the same size.
 */
const FILL_STEP = LOOP + 1;

/** Room for a set of `n`, with headroom so that growing by a few backends does not reallocate. */
function roomFor(n: number): number {
  return n + (n >>> 3) + 16;
}

/** `array` filled with `value` over [0, end), a chunk per yield. */
function* fill<T extends Int32Array | Uint32Array | Uint8Array>(array: T, value: number, end: number): Generator<void, T, void> {
  for (let at = 0; at < end; at += FILL_STEP) {
    array.fill(value, at, Math.min(end, at + FILL_STEP));
    yield;
  }
  return array;
}

/**
 * Builds the table for `set`. Yields between slices of work; returns the table. The
 * caller drives it (to completion at once for small sets, in time slices otherwise).
 * `spare` is a table no longer in service whose buffers may be reused.
 */
export function* buildMaglev(
  set: readonly BackendView[],
  work: MaglevWorkspace,
  spare: MaglevTable | null,
): Generator<void, MaglevTable, void> {
  const n = set.length;
  const size = tableSize(n);
  if (work.hash.length < n) {
    const room = roomFor(n);
    // Fresh memory: first touched chunk by chunk here, not in one go later.
    work.hash = yield* fill(new Uint32Array(room), 0, room);
    work.from = yield* fill(new Uint32Array(room), 0, room);
    work.to = yield* fill(new Uint32Array(room), 0, room);
    work.next = yield* fill(new Uint32Array(room), 0, room);
    work.skip = yield* fill(new Uint32Array(room), 0, room);
    work.weight = yield* fill(new Int32Array(room), 0, room);
    work.slot = yield* fill(new Int32Array(room), 0, room);
    work.members = yield* fill(new Int32Array(room), 0, room);
  }
  // One sequential pass over the views: keys hashed, weights and slots read. Everything
  // after works on typed arrays only, indexed like `set` (views are scattered over the
  // heap: reading them in any other order would be a cache miss per backend).
  const hash = work.hash;
  const next = work.next;
  const skip = work.skip;
  const weight = work.weight;
  const slots = work.slot;
  const keyHashes = work.keyHashes;
  const three = new Uint32Array(3);
  let maxSlot = -1;
  let wmax = 0;
  for (let k = 0; k < n; k++) {
    const b = set[k]!;
    keyHashes.get(b.slot, b.key, three);
    hash[k] = three[0]!;
    next[k] = three[1]! % size;
    skip[k] = (three[2]! % (size - 1)) + 1;
    weight[k] = b.weight;
    slots[k] = b.slot;
    if (b.weight > wmax) wmax = b.weight;
    if (b.slot > maxSlot) maxSlot = b.slot;
    if ((k & OBJECTS) === OBJECTS) yield;
  }
  const order = yield* canonicalOrder(set, work);
  const words = (size + 31) >>> 5;
  if (work.occupied.length < words) work.occupied = new Int32Array(words);
  const occupied = yield* fill(work.occupied, 0, words);
  const entries = yield* fill(spare !== null && spare.entries.length >= size ? spare.entries : new Int32Array(size), EMPTY, size);
  const aliveWords = (n + 31) >>> 5;
  const alive = yield* fill(spare !== null && spare.alive.length >= aliveWords ? spare.alive : new Int32Array(roomFor(aliveWords)), -1, aliveWords);
  let indexOfSlot = spare?.indexOfSlot;
  if (indexOfSlot === undefined || indexOfSlot.length <= maxSlot || indexOfSlot.length > 2 * maxSlot + 4096) {
    indexOfSlot = new Int32Array(roomFor(maxSlot + 1));
  }
  yield* fill(indexOfSlot, -1, indexOfSlot.length);
  for (let k = 0; k < n; k++) {
    indexOfSlot[slots[k]!] = k;
    if ((k & LOOP) === LOOP) yield;
  }
  const table: MaglevTable = { size, entries, set, alive, indexOfSlot };
  if (n === 0) return table;

  // Weight groups, heaviest first, members (indices into `set`) in canonical order.
  const members = work.members;
  const { weight: groupWeight, start: groupStart } = yield* groupByWeight(weight, n, wmax, order, members, LOOP + 1);
  const groups = groupWeight.length;
  // The claiming walks the members in turn and reads each one's next entry and skip: laid
  // out in member order, those reads are sequential instead of a cache miss each. (Into
  // two arrays the sort is done with: the hashes, and the radix buffer not holding it.)
  const memberNext = work.hash;
  const memberSkip = order === work.from ? work.to : work.from;
  for (let m = 0; m < n; m++) {
    const k = members[m]!;
    memberNext[m] = next[k]!;
    memberSkip[m] = skip[k]!;
    if ((m & LOOP) === LOOP) yield;
  }
  yield;

  // Turns: a group of weight w gets one turn per round in which ⌊round·w/wmax⌋ grows
  // (credit += w; a turn when credit reaches wmax), every member of it one claim. The
  // claiming runs in a plain function between yields: it is the hot loop of a build, and
  // compiles better outside the generator.
  const claims: Claims = {
    size,
    target: Math.max(1, Math.floor(size * FILL)),
    filled: 0,
    group: 0,
    member: -1,
    wmax,
    credit: new Int32Array(groups),
    groupWeight,
    groupStart,
    members,
    next: memberNext,
    skip: memberSkip,
    occupied,
    entries,
  };
  while (!claim(claims, STEP)) yield;
  return table;
}

/** Where the claiming of a build is, between two batches. */
interface Claims {
  readonly size: number;
  readonly target: number;
  filled: number;
  /** The group whose turn it is, and the member of it to claim next (-1: turn not yet taken). */
  group: number;
  member: number;
  readonly wmax: number;
  readonly credit: Int32Array;
  readonly groupWeight: Int32Array;
  readonly groupStart: Int32Array;
  readonly members: Int32Array;
  /** Per member (in `members` order): the next entry on its permutation, and its step. */
  readonly next: Uint32Array;
  readonly skip: Uint32Array;
  readonly occupied: Int32Array;
  readonly entries: Int32Array;
}

/** Claims entries for about `budget` probes; returns whether the table is full enough. */
function claim(st: Claims, budget: number): boolean {
  const { size, target, wmax, credit, groupWeight, groupStart, members, next, skip, occupied, entries } = st;
  const groups = groupWeight.length;
  let filled = st.filled;
  let g = st.group;
  let m = st.member;
  let steps = 0;
  for (;;) {
    if (m < 0) {
      credit[g]! += groupWeight[g]!;
      if (credit[g]! < wmax) {
        g = g + 1 === groups ? 0 : g + 1;
        continue;
      }
      credit[g]! -= wmax;
      m = groupStart[g]!;
    }
    for (const end = groupStart[g + 1]!; m < end; m++) {
      const s = skip[m]!;
      let c = next[m]!;
      // Probe the bitmap (size/8 bytes, which stays in cache far longer than the
      // entries themselves) rather than the entries.
      while ((occupied[c >>> 5]! >>> (c & 31)) & 1) {
        c += s;
        if (c >= size) c -= size;
        steps++;
      }
      occupied[c >>> 5]! |= 1 << (c & 31);
      entries[c] = members[m]!;
      c += s;
      next[m] = c >= size ? c - size : c;
      if (++filled === target) return true;
      if (++steps >= budget) {
        st.filled = filled;
        st.group = g;
        st.member = m + 1;
        return false;
      }
    }
    m = -1;
    g = g + 1 === groups ? 0 : g + 1;
  }
}

/**
 * Indices of `set` sorted by (hash of key, key), given the hashes in `work.hash`: LSD
 * radix sort on the 32-bit hash (O(N), resumable), then the rare runs of equal hashes
 * sorted by key.
 * Returns one of the workspace's arrays (valid over [0, N)).
 */
function* canonicalOrder(set: readonly BackendView[], work: MaglevWorkspace): Generator<void, Uint32Array, void> {
  const n = set.length;
  const hash = work.hash;
  let from = work.from;
  for (let i = 0; i < n; i++) {
    from[i] = i;
    if ((i & LOOP) === LOOP) yield;
  }
  let to = work.to;
  const counts = work.counts;
  // Two 16-bit passes for large sets; four 8-bit ones for small sets, where clearing and
  // summing 65,536 counters twice would cost more than the sort itself.
  const bits = n < 1 << 16 ? 8 : 16;
  const radix = 1 << bits;
  const mask = radix - 1;
  for (let shift = 0; shift < 32; shift += bits) {
    counts.fill(0, 0, radix);
    for (let i = 0; i < n; i++) {
      counts[(hash[i]! >>> shift) & mask]!++;
      if ((i & LOOP) === LOOP) yield;
    }
    let sum = 0;
    for (let d = 0; d < radix; d++) {
      const c = counts[d]!;
      counts[d] = sum;
      sum += c;
    }
    yield;
    for (let i = 0; i < n; i++) {
      const idx = from[i]!;
      to[counts[(hash[idx]! >>> shift) & mask]!++] = idx;
      if (i % STEP === STEP - 1) yield;
    }
    const swap = from;
    from = to;
    to = swap;
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
