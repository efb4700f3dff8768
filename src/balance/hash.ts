/**
 * Fixed-seed hashing for ip_hash: MurmurHash3 (x86, 32-bit) over 32-bit words. The seeds
 * are constants, never per process, so every process, restart and replica maps a client
 * to the same backend. Nothing here allocates: these run once or twice per connection.
 */

/** Seeds for the independent hashes ip_hash needs. Changing one remaps every client. */
export const SEED_SLOT = 0x9747b28c;
export const SEED_STEP = 0x5bd1e995;
export const SEED_OFFSET = 0x2f0b3c4d;
export const SEED_SKIP = 0x6a09e667;
export const SEED_ORDER = 0x3c6ef372;

function mixWord(h: number, word: number): number {
  let k = Math.imul(word, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(h: number, length: number): number {
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Murmur3 of a string's UTF-16 code units, two per word. */
export function hashString(text: string, seed: number): number {
  let h = seed;
  const n = text.length;
  let i = 0;
  for (; i + 1 < n; i += 2) h = mixWord(h, text.charCodeAt(i) | (text.charCodeAt(i + 1) << 16));
  if (i < n) h = mixWord(h, text.charCodeAt(i));
  return finish(h, n * 2);
}

/** Murmur3 of the first `words` entries of `data`. */
export function hashWords(data: Uint32Array, words: number, seed: number): number {
  let h = seed;
  for (let i = 0; i < words; i++) h = mixWord(h, data[i]!);
  return finish(h, words * 4);
}

/**
 * The hash of a client's `i`-th probe (Murmur3 of the word i, seeded by the client's own
 * hash): a pseudo-random sequence of table entries per client. A linear one (a fixed step)
 * would be correlated with the backends' own permutations of the table (maglev.ts), and
 * some clients would then walk thousands of entries without meeting some backend.
 */
export function probeHash(seed: number, i: number): number {
  return finish(mixWord(seed, i), 4);
}

/**
 * Maps a 32-bit hash onto [0, size) as ⌊hash · size / 2^32⌋ (Lemire's multiply-shift
 * reduction) instead of hash % size: an integer division per pick costs several times
 * as much (docs/benchmarks.md, "Against the targets"). Exact for size < 2^32 in doubles:
 * both partial products stay below 2^53.
 */
export function reduce(hash: number, size: number): number {
  const high = (hash >>> 16) * size;
  const low = (hash & 0xffff) * size;
  return Math.floor((high + Math.floor(low / 65536)) / 65536);
}
