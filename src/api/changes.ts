import type { Logger } from "pino";
import type { HostPort } from "../pool/address.ts";
import type { BackendInfo, BackendPool, BackendView } from "../pool/pool.ts";
import { StateFileError, type PersistedState, type StateStore } from "./state-file.ts";

interface Entry {
  readonly address: HostPort;
  readonly weight: number;
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

/**
 * The API's changes to the pool, and their persistence. A change is applied to the pool
 * at once (so it is checked against the pool atomically: no two requests can add the
 * same backend) and is acknowledged only once the state file holding it is durably
 * written. Writes are serialised and coalesced: while one write is in flight, every
 * change made meanwhile waits for the next write, which carries them all.
 *
 * If a write fails, the pool goes back to the last state that is on disk and every
 * change not yet acknowledged is refused: nothing is left half-applied.
 */
export class BackendChanges {
  private readonly pool: BackendPool;
  private readonly store: StateStore;
  private readonly log: Logger;
  /** Backends added through the API, with their current weight. */
  private readonly added = new Map<string, Entry>();
  /**
   * Weights set through the API on backends others own. Kept by address even while the
   * backend is absent, so the weight applies again when discovery brings it back (and at
   * start-up, when discovery has not yet found it).
   */
  private readonly weights = new Map<string, Entry>();
  private persisted: PersistedState = { backends: [], weights: [] };
  private waiting: Waiter[] = [];
  private writing: Promise<void> | undefined;

  /** Resolves once the data plane routes by the pool's latest snapshot (see Balancer). */
  private readonly applied: () => Promise<void>;

  constructor(opts: { pool: BackendPool; store: StateStore; logger: Logger; applied?: () => Promise<void> }) {
    this.pool = opts.pool;
    this.store = opts.store;
    this.log = opts.logger;
    this.applied = opts.applied ?? (() => Promise.resolve());
  }

  get file(): string {
    return this.store.path;
  }

  /**
   * Reads the state file and applies it. Call before discovery starts: API backends
   * join now, and weights for backends others own apply whenever those backends appear.
   * Throws StateFileError when the file exists but cannot be used.
   */
  async restore(): Promise<void> {
    const state = await this.store.read();
    this.persisted = state;
    this.reset(state);
    this.pool.onMembership((change) => this.applyWeights(change.added));
    for (const b of state.backends) this.pool.add("api", b.address, b.weight);
    if (state.backends.length > 0 || state.weights.length > 0) {
      this.log.info({ state_file: this.store.path, backends: state.backends.length, weights: state.weights.length }, "api state restored");
    }
  }

  /** Adds a backend owned by the API. Throws PoolError "exists" if any source has it. */
  async add(address: HostPort, weight: number): Promise<BackendInfo> {
    // An explicit weight on add beats one remembered for an absent backend.
    if (!this.pool.has(address.key)) this.weights.delete(address.key);
    const info = this.pool.add("api", address, weight);
    this.added.set(address.key, { address, weight });
    await this.persist();
    return info;
  }

  /** Sets any backend's weight. Throws PoolError "not_found". */
  async setWeight(address: HostPort, weight: number): Promise<BackendInfo> {
    const info = this.pool.setWeight(address.key, weight);
    if (this.added.has(address.key)) this.added.set(address.key, { address, weight });
    else this.weights.set(address.key, { address, weight });
    await this.persist();
    return info;
  }

  /** Removes an API backend. Throws PoolError "not_found", or "owned" for others' backends. */
  async remove(address: HostPort): Promise<void> {
    this.pool.remove("api", address.key);
    this.added.delete(address.key);
    // Still there: another source names it too. The API's word on it, weight included, is withdrawn.
    if (this.pool.has(address.key)) this.pool.setWeight(address.key, undefined);
    await this.persist();
  }

  /** Resolves once no write is in flight or queued. */
  async settled(): Promise<void> {
    while (this.writing) await this.writing.catch(() => undefined);
  }

  private current(): PersistedState {
    return { backends: [...this.added.values()], weights: [...this.weights.values()] };
  }

  private reset(state: PersistedState): void {
    this.added.clear();
    this.weights.clear();
    for (const b of state.backends) this.added.set(b.address.key, b);
    for (const w of state.weights) this.weights.set(w.address.key, w);
  }

  private applyWeights(views: readonly BackendView[]): void {
    for (const view of views) {
      const remembered = this.weights.get(view.key);
      if (remembered && remembered.weight !== view.weight) this.pool.setWeight(view.key, remembered.weight);
    }
  }

  /**
   * Resolves when a write that includes every change made so far is on disk and every
   * data-plane thread routes by it: only then is the change acknowledged, so the very
   * next client connection sees it whichever thread accepts it.
   */
  private async persist(): Promise<void> {
    const written = new Promise<void>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.writing ??= this.flush();
    });
    await Promise.all([written, this.applied()]);
  }

  private async flush(): Promise<void> {
    while (this.waiting.length > 0) {
      const batch = this.waiting.splice(0);
      const state = this.current();
      try {
        await this.store.write(state);
        this.persisted = state;
        for (const w of batch) w.resolve();
      } catch (err) {
        // Changes made during the failed write build on it: they are undone and refused too.
        const refused = [...batch, ...this.waiting.splice(0)];
        const reason = err instanceof Error ? err.message : String(err);
        const error = new StateFileError(`change not saved and undone: ${reason}`, { cause: err });
        this.log.error({ state_file: this.store.path, refused: refused.length, err: reason }, "state file write failed: undoing api changes");
        this.rollback();
        for (const w of refused) w.reject(error);
      }
    }
    // Cleared in the same tick the queue is seen empty, so a change made right after
    // starts a new flush rather than waiting on this finished one.
    this.writing = undefined;
  }

  /** Puts the pool back to the state last written. */
  private rollback(): void {
    const state = this.persisted;
    this.reset(state);
    this.pool.reconcile("api", state.backends);
    const wanted = new Map<string, number>();
    for (const e of [...state.backends, ...state.weights]) wanted.set(e.address.key, e.weight);
    const overridden = new Map(this.pool.weightOverrides().map((o) => [o.address, o.weight]));
    for (const key of new Set([...wanted.keys(), ...overridden.keys()])) {
      if (this.pool.has(key) && overridden.get(key) !== wanted.get(key)) this.pool.setWeight(key, wanted.get(key));
    }
  }
}
