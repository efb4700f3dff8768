import type { BackendView } from "../pool/pool.ts";
import { parseIp } from "./client-address.ts";
import { hashString, hashWords, probeHash, reduce, SEED_SLOT, SEED_STEP } from "./hash.ts";
import { diffRoutable } from "./diff.ts";
import { buildMaglev, EMPTY, MaglevWorkspace, type MaglevTable } from "./maglev.ts";
import type { Picker, PickerContext } from "./picker.ts";

/** Longest a build may hold the event loop in one go, in ms. */
const SLICE_MS = 8;
/**
 * Up to this many backends the first table is built at once, whole (the "build ms" of the
 * pick benchmark, docs/benchmarks.md): with no table yet there is nothing consistent to
 * serve from meanwhile. Later builds of sets this small start at once (and usually end)
 * within the change itself.
 */
const WHOLE_FIRST_BUILD = 16_384;
/**
 * Entries a lookup probes before it gives up on the table and takes the routable list in
 * order instead (see `unseen`). Fixed, not per attempt, so every attempt of a client sees
 * the same probed prefix and the attempts stay distinct.
 */
const PROBES = 1024;
/** Retries a client can make (config `retries` ≤ 100) plus the data plane's re-picks. */
const MAX_ATTEMPTS = 128;

/**
 * Consistent hashing of the client IP over a Maglev table (maglev.ts): O(1) per pick, no
 * allocation, the same mapping in every process for the same set of backends.
 *
 * A client hashes (fixed seeds, IPv4-mapped IPv6 alike with IPv4) to an entry; it goes to
 * the entry's backend, or, where the entry is empty or its backend is no longer routable,
 * to the next usable entry along its own pseudo-random probe sequence (probeHash).
 * Attempt k (a retry) is the k-th distinct backend along that same sequence, and past
 * PROBES entries the k-th in the routable list (from a place the client hashes to) not
 * met on the way: deterministic, never one tried before.
 *
 * The table is built from the routable backends, so a down backend's clients spread over
 * the others (Maglev moves them, and few besides) and come back when it recovers, since
 * the table is a function of the set. Building is heavy at large N, so:
 * - a change is visible at once: the current table stays in service and backends that
 *   left the set are skipped by the probing above (their clients spread
 *   deterministically); finding what changed is a linear walk comparing references
 *   (diff.ts), O(N) but reading few backends (docs/benchmarks.md);
 * - the exact table for the new set is built in slices of at most SLICE_MS, then swapped
 *   in. Small sets finish within the first slice, so they never see the interim state.
 *   A change during a build waits for that build to finish (so builds always complete,
 *   however often the set changes), then the newest set is built.
 * - builds reuse the buffers of the previous table and of earlier builds, so a rebuild
 *   allocates nothing: fresh memory (and its page faults, and the garbage collections
 *   that large allocations provoke) is needed only when the set outgrows what was there.
 */
export class IpHashPicker implements Picker {
  readonly needsClientAddress = true;
  private readonly schedule: (task: () => void) => void;
  private readonly now: () => number;
  /** The current routable set; the table's `alive` reflects it. */
  private routable: readonly BackendView[] = [];
  /** The table in service. */
  private table: MaglevTable | null = null;
  /** Members of `routable` that are in the table with the weight it was built with. */
  private matched = 0;
  /** Members of the table's set whose `alive` bit is clear: while 0, lookups skip the bits. */
  private down = 0;
  /** The previous table, out of service: the next build reuses its buffers. */
  private spare: MaglevTable | null = null;
  private readonly work = new MaglevWorkspace();
  private build: Generator<void, MaglevTable, void> | null = null;
  /** The spare table whose buffers the build under way writes into. */
  private buildSpare: MaglevTable | null = null;
  private sliceScheduled = false;
  private readonly words = new Uint32Array(4);
  private readonly groups = new Uint16Array(8);
  private readonly seen = new Int32Array(MAX_ATTEMPTS);

  constructor(routable: readonly BackendView[], context: PickerContext) {
    this.schedule = context.schedule ?? ((task) => void setImmediate(task).unref());
    this.now = context.now ?? (() => performance.now());
    this.update(routable);
  }

  /**
   * The picker for a new snapshot: `previous` updated in place when it is an ip_hash one,
   * since the table and any build in progress live in it, so that a change at a million
   * backends does not start over from an empty table.
   */
  static fromPrevious(routable: readonly BackendView[], context: PickerContext, previous?: Picker): IpHashPicker {
    if (!(previous instanceof IpHashPicker)) return new IpHashPicker(routable, context);
    previous.update(routable);
    return previous;
  }

  /** Installs a new routable set (see the class comment for what happens when). */
  update(routable: readonly BackendView[]): void {
    const before = this.routable;
    this.routable = routable;
    if (this.table !== null) this.follow(this.table, before, routable);
    // Nothing to route to, or the table is exact for this set: nothing to build. (An empty
    // set keeps the old table, all of it skipped, so the same set coming back costs nothing.)
    // A build under way has become pointless (a backend flapped down and up): drop it.
    if (this.exact() || routable.length === 0) {
      this.cancelBuild();
      return;
    }
    // A running build finishes first; install() then starts one for the newest set.
    if (this.build) return;
    this.startBuild();
    if (this.table === null && routable.length <= WHOLE_FIRST_BUILD) this.finishBuilds();
    // A small set is rebuilt within this first slice, so it never sees the interim state;
    // a large one takes many slices anyway: the first runs on the next turn of the event
    // loop, so that finding the change (a linear walk) and building do not add up.
    else if (routable.length <= WHOLE_FIRST_BUILD) this.runSlice();
    else this.scheduleSlice();
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
    const entries = table.entries;
    let at = reduce(h1, size);
    // The common case, a first attempt landing on a filled entry of a live backend, needs
    // neither the probe sequence's hash nor the probe loop.
    if (attempt === 0) {
      const e = entries[at]!;
      if (e !== EMPTY && (this.down === 0 || (table.alive[e >>> 5]! >>> (e & 31)) & 1)) return table.set[e];
    }
    // With more attempts than backends, start again from the first (deterministically).
    const want = attempt < n ? attempt : attempt % n;
    if (want >= MAX_ATTEMPTS) return this.fallback(h1, attempt);
    const h2 = kind > 0 ? hashWords(this.words, kind, SEED_STEP) : hashString(clientIp, SEED_STEP);
    const alive = table.alive;
    let found = 0;
    for (let probe = 1; probe <= PROBES; probe++) {
      const e = entries[at]!;
      if (e !== EMPTY && (alive[e >>> 5]! >>> (e & 31)) & 1) {
        let repeat = false;
        for (let k = 0; k < found; k++) {
          if (this.seen[k] === e) {
            repeat = true;
            break;
          }
        }
        if (!repeat) {
          // The view the table was built with: the same backend (key, address, slot) as
          // the current one, though its weight may since have changed.
          if (found === want) return table.set[e];
          this.seen[found++] = e;
        }
      }
      at = reduce(probeHash(h2, probe), size);
    }
    return this.unseen(table, h1, want - found, found);
  }

  /**
   * The `skip`-th routable backend (0-based), in list order from where the client hashes
   * to, that is not one of the `found` backends its probes met (this.seen). There are
   * enough: the backends met are routable ones, and fewer than skip + found + 1 of them.
   */
  private unseen(table: MaglevTable, h1: number, skip: number, found: number): BackendView {
    const routable = this.routable;
    const n = routable.length;
    for (let i = 0, at = h1 % n; i < n; i++, at = at + 1 === n ? 0 : at + 1) {
      const view = routable[at]!;
      let met = false;
      for (let k = 0; k < found; k++) {
        if (table.set[this.seen[k]!]!.slot === view.slot) {
          met = true;
          break;
        }
      }
      if (!met && skip-- === 0) return view;
    }
    return routable[h1 % n]!; // not reached: see above
  }

  /**
   * Deterministic but not consistent: used only before the first table exists (the first
   * slices of a build at start-up) or when a client's probes meet no usable entry (almost
   * every backend in the table has left the set and the new table is still being built).
   */
  private fallback(h1: number, attempt: number): BackendView {
    return this.routable[(h1 + attempt) % this.routable.length]!;
  }

  /** Whether the table in service is the one for the current set. */
  private exact(): boolean {
    const table = this.table;
    return table !== null && this.routable.length === table.set.length && this.matched === table.set.length;
  }

  /** The index of `view`'s backend in the table's set, or -1. */
  private indexIn(table: MaglevTable, view: BackendView): number {
    if (view.slot >= table.indexOfSlot.length) return -1;
    const e = table.indexOfSlot[view.slot]!;
    return e >= 0 && table.set[e]!.key === view.key ? e : -1;
  }

  /**
   * Moves the table's `alive` marks (and the `matched` and `down` counts) from set `from`
   * to set `to`: a linear walk comparing references (diff.ts), then O(1) per changed
   * backend.
   */
  private follow(table: MaglevTable, from: readonly BackendView[], to: readonly BackendView[]): void {
    if (from === to) return;
    const diff = diffRoutable(from, to, (view) => {
      const e = this.indexIn(table, view);
      return e >= 0 && ((table.alive[e >>> 5]! >>> (e & 31)) & 1) === 1;
    })!;
    const built = (e: number, view: BackendView) => (table.set[e]!.weight === view.weight ? 1 : 0);
    for (let k = 0; k < diff.renewed.length; k++) {
      const e = this.indexIn(table, diff.renewed[k]!);
      if (e >= 0) this.matched += built(e, diff.renewed[k]!) - built(e, diff.previous[k]!);
    }
    for (const view of diff.removed) {
      const e = this.indexIn(table, view);
      if (e < 0) continue;
      if ((table.alive[e >>> 5]! >>> (e & 31)) & 1) this.down++;
      table.alive[e >>> 5]! &= ~(1 << (e & 31));
      this.matched -= built(e, view);
    }
    for (const view of diff.added) {
      const e = this.indexIn(table, view);
      if (e < 0) continue;
      if (((table.alive[e >>> 5]! >>> (e & 31)) & 1) === 0) this.down--;
      table.alive[e >>> 5]! |= 1 << (e & 31);
      this.matched += built(e, view);
    }
  }

  private startBuild(): void {
    this.buildSpare = this.spare;
    this.spare = null; // the build writes into it
    this.build = buildMaglev(this.routable, this.work, this.buildSpare);
  }

  private cancelBuild(): void {
    if (this.build === null) return;
    this.build = null;
    // Its buffers are reusable as they are: every build fills them afresh.
    this.spare = this.buildSpare;
    this.buildSpare = null;
  }

  private runSlice(): void {
    this.advance(SLICE_MS);
    this.scheduleSlice();
  }

  private scheduleSlice(): void {
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
        this.buildSpare = null;
        this.install(step.value);
        return;
      }
      if (this.now() >= deadline) return;
    }
  }

  private install(table: MaglevTable): void {
    // The first table comes with a spare of the same size, allocated now (its pages are
    // touched only when a build fills it, chunk by chunk). Allocating that much memory is
    // what makes V8 collect garbage in one long pause on a large heap; better once at
    // start-up than on the first change.
    this.spare = this.table ?? {
      size: table.size,
      entries: new Int32Array(table.entries.length),
      set: [],
      alive: new Int32Array(table.alive.length),
      indexOfSlot: new Int32Array(table.indexOfSlot.length),
    };
    this.table = table;
    this.matched = table.set.length;
    this.down = 0; // a new table is built with every member alive
    // The set may have moved on while this table was built.
    this.follow(table, table.set, this.routable);
    if (!this.exact() && this.routable.length > 0) this.startBuild();
  }
}
