import type { BackendView } from "../pool/pool.ts";
import { hashString, hashWords, parseIp, SEED_SLOT, SEED_STEP } from "./hash.ts";
import { buildMaglev, EMPTY, type MaglevTable } from "./maglev.ts";
import type { Picker, PickerContext } from "./picker.ts";

/** Longest a build may hold the event loop in one go, in ms. */
const SLICE_MS = 8;
/**
 * Up to this many backends the first table is built at once, whole (tens of ms at most):
 * with no table yet there is nothing consistent to serve from meanwhile.
 */
const WHOLE_FIRST_BUILD = 16_384;
/** Entries a lookup follows before it gives up on the table (see `fallback`). */
const MAX_PROBES = 512;
/** Retries a client can make (config `retries` ≤ 100) plus the data plane's re-picks. */
const MAX_ATTEMPTS = 128;

/**
 * Consistent hashing of the client IP over a Maglev table (maglev.ts): O(1) per pick, no
 * allocation, the same mapping in every process for the same set of backends.
 *
 * A client hashes (fixed seeds, IPv4-mapped IPv6 alike with IPv4) to an entry and to a
 * probe step; it goes to the entry's backend, or, where the entry is empty or its backend
 * is no longer routable, to the next usable entry along its own probe sequence. Attempt k
 * (a retry) is the k-th distinct backend along that same sequence: deterministic, never
 * one tried before.
 *
 * The table is built from the routable backends, so a down backend's clients spread over
 * the others (Maglev moves them, and few besides) and come back when it recovers, since
 * the table is a function of the set. Building is heavy at large N, so:
 * - a change is visible at once: the current table stays in service, backends that left
 *   the set are skipped by the probing above (their clients spread deterministically),
 *   and views are updated in place (O(N), cheap);
 * - the exact table for the new set is built in slices of at most SLICE_MS, then swapped
 *   in. Small sets finish within the first slice, so they never see the interim state.
 *   A change during a build waits for that build to finish (so builds always complete,
 *   however often the set changes), then the newest set is built.
 */
export class IpHashPicker implements Picker {
  private readonly schedule: (task: () => void) => void;
  private readonly now: () => number;
  private routable: readonly BackendView[];
  private table: MaglevTable | null = null;
  /** Per table backend: 1 while it is in the routable set. */
  private alive = new Uint8Array(0);
  /** slot → table index (valid only where the key matches too). */
  private indexOfSlot = new Int32Array(0);
  /** Weights the table was built with, to notice a weight change. */
  private builtWeight = new Int32Array(0);
  private build: Generator<void, MaglevTable, void> | null = null;
  private sliceScheduled = false;
  private readonly words = new Uint32Array(4);
  private readonly groups = new Uint16Array(8);
  private readonly seen = new Int32Array(MAX_ATTEMPTS);

  constructor(routable: readonly BackendView[], context: PickerContext) {
    this.schedule = context.schedule ?? ((task) => void setImmediate(task).unref());
    this.now = context.now ?? (() => performance.now());
    this.routable = routable;
    this.update(routable);
  }

  /** Installs a new routable set (see the class comment for what happens when). */
  update(routable: readonly BackendView[]): void {
    this.routable = routable;
    // Nothing to route to, or the table is exact for this set: nothing to build. (An empty
    // set keeps the old table, all of it skipped, so the same set coming back costs nothing.)
    if (this.markAlive() || routable.length === 0) return;
    // A running build finishes first; install() then starts one for the newest set.
    if (this.build) return;
    this.build = buildMaglev(routable);
    if (this.table === null && routable.length <= WHOLE_FIRST_BUILD) this.finishBuilds();
    else this.runSlice();
  }

  /** True while a table build is under way. */
  get building(): boolean {
    return this.build !== null;
  }

  /** Runs any build to completion now (start-up, tests, benchmarks). */
  finishBuilds(): void {
    while (this.build) this.advance(Infinity);
  }

  pick(clientIp: string, attempt: number): BackendView | undefined {
    const n = this.routable.length;
    if (n === 0) return undefined;
    const table = this.table;
    const kind = parseIp(clientIp, this.words, this.groups);
    const h1 = kind > 0 ? hashWords(this.words, kind, SEED_SLOT) : hashString(clientIp, SEED_SLOT);
    if (table === null) return this.fallback(h1, attempt);
    const size = table.size;
    const h2 = kind > 0 ? hashWords(this.words, kind, SEED_STEP) : hashString(clientIp, SEED_STEP);
    const step = (h2 % (size - 1)) + 1;
    const entries = table.entries;
    const alive = this.alive;
    // With more attempts than backends, start again from the first (deterministically).
    const want = attempt < n ? attempt : attempt % n;
    if (want >= MAX_ATTEMPTS) return this.fallback(h1, attempt);
    let found = 0;
    let at = h1 % size;
    for (let probes = 0; probes < MAX_PROBES * (want + 1); probes++) {
      const e = entries[at]!;
      if (e !== EMPTY && alive[e] === 1) {
        let repeat = false;
        for (let k = 0; k < found; k++) {
          if (this.seen[k] === e) {
            repeat = true;
            break;
          }
        }
        if (!repeat) {
          if (found === want) return table.backends[e];
          this.seen[found++] = e;
        }
      }
      at += step;
      if (at >= size) at -= size;
    }
    return this.fallback(h1, attempt);
  }

  /**
   * Deterministic but not consistent: used only before the first table exists (the first
   * slices of a build at start-up) or when a client's probes meet no usable entry (almost
   * every backend in the table has left the set and the new table is still being built).
   */
  private fallback(h1: number, attempt: number): BackendView {
    return this.routable[(h1 + attempt) % this.routable.length]!;
  }

  /**
   * Points the current table at the current set: marks which of its backends are still
   * routable and takes their newest views. Returns whether the table is exact for the set.
   */
  private markAlive(): boolean {
    const table = this.table;
    if (table === null) return false;
    const alive = this.alive;
    alive.fill(0);
    let exact = this.routable.length === table.backends.length;
    for (const view of this.routable) {
      const e = view.slot < this.indexOfSlot.length ? this.indexOfSlot[view.slot]! : -1;
      if (e < 0 || table.backends[e]!.key !== view.key) {
        exact = false;
        continue;
      }
      alive[e] = 1;
      table.backends[e] = view;
      if (this.builtWeight[e] !== view.weight) exact = false;
    }
    return exact;
  }

  private runSlice(): void {
    this.advance(SLICE_MS);
    if (this.build && !this.sliceScheduled) {
      this.sliceScheduled = true;
      this.schedule(() => {
        this.sliceScheduled = false;
        if (this.build) this.runSlice();
      });
    }
  }

  /** Runs the build for up to `budgetMs`; installs the table when it is done. */
  private advance(budgetMs: number): void {
    const build = this.build;
    if (build === null) return;
    const deadline = this.now() + budgetMs;
    for (;;) {
      const step = build.next();
      if (step.done) {
        this.build = null;
        this.install(step.value);
        return;
      }
      if (this.now() >= deadline) return;
    }
  }

  private install(table: MaglevTable): void {
    const n = table.backends.length;
    this.table = table;
    this.alive = new Uint8Array(n);
    this.builtWeight = new Int32Array(n);
    let maxSlot = -1;
    for (const b of table.backends) if (b.slot > maxSlot) maxSlot = b.slot;
    this.indexOfSlot = new Int32Array(maxSlot + 1).fill(-1);
    for (let i = 0; i < n; i++) {
      const b = table.backends[i]!;
      this.indexOfSlot[b.slot] = i;
      this.builtWeight[i] = b.weight;
    }
    // The set may have moved on while this table was built.
    if (!this.markAlive() && this.routable.length > 0) this.build = buildMaglev(this.routable);
  }
}
