import type { Logger } from "pino";
import type { HostPort } from "../pool/address.ts";
import { PoolError, type AdminState, type BackendInfo, type BackendOptions, type BackendPool, type BackendView } from "../pool/pool.ts";
import { StateFileError, type ApiBackend, type PersistedState, type StateStore } from "./state-file.ts";

interface Entry {
  readonly address: HostPort;
  readonly weight: number;
}

interface StateEntry {
  readonly address: HostPort;
  readonly state: AdminState;
}

/** A PUT on a backend: a weight (null clears the API's override), an admin state, or both. */
export interface BackendUpdate {
  weight?: number | null;
  state?: AdminState;
}

/** An API backend's weight when its override is cleared: the default, as for a POST without one. */
const DEFAULT_WEIGHT = 1;

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
  /** Backends added through the API, with their current weight and options. */
  private readonly added = new Map<string, ApiBackend>();
  /**
   * Weights set through the API on backends others own. Kept by address even while the
   * backend is absent, so the weight applies again when discovery brings it back (and at
   * start-up, when discovery has not yet found it).
   */
  private readonly weights = new Map<string, Entry>();
  /** Admin states other than ready, by address, kept like weights while a backend is absent. */
  private readonly states = new Map<string, StateEntry>();
  private persisted: PersistedState = { backends: [], weights: [], states: [] };
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
    this.pool.onMembership((change) => this.applyRemembered(change.added));
    for (const b of state.backends) this.pool.add("api", b.address, b.weight, b);
    if (state.backends.length > 0 || state.weights.length > 0 || (state.states ?? []).length > 0) {
      this.log.info(
        { state_file: this.store.path, backends: state.backends.length, weights: state.weights.length, states: (state.states ?? []).length },
        "api state restored",
      );
    }
  }

  /** Adds a backend owned by the API. Throws PoolError "exists" if any source has it. */
  async add(address: HostPort, weight: number, options: BackendOptions = {}): Promise<BackendInfo> {
    // An explicit weight on add beats one remembered for an absent backend.
    if (!this.pool.has(address.key)) this.weights.delete(address.key);
    const info = this.pool.add("api", address, weight, options);
    this.added.set(address.key, { ...options, address, weight });
    await this.persist();
    return info;
  }

  /** Sets any backend's weight. Throws PoolError "not_found". */
  async setWeight(address: HostPort, weight: number): Promise<BackendInfo> {
    return this.update(address, { weight });
  }

  /**
   * A weight and/or an admin state on any backend. A null weight clears the API's
   * override: the owner's weight applies again (the default for an API backend).
   * Throws PoolError "not_found" before changing anything.
   */
  async update(address: HostPort, change: BackendUpdate): Promise<BackendInfo> {
    let info = this.pool.get(address.key);
    if (!info) throw new PoolError("not_found", `backend ${address.key} not found`);
    if (change.weight === null) {
      const added = this.added.get(address.key);
      if (added) {
        this.added.set(address.key, { ...added, weight: DEFAULT_WEIGHT });
        info = this.pool.setWeight(address.key, DEFAULT_WEIGHT);
      } else {
        this.weights.delete(address.key);
        info = this.pool.setWeight(address.key, undefined);
      }
    } else if (change.weight !== undefined) {
      info = this.pool.setWeight(address.key, change.weight);
      const added = this.added.get(address.key);
      if (added) this.added.set(address.key, { ...added, weight: change.weight });
      else this.weights.set(address.key, { address, weight: change.weight });
    }
    if (change.state !== undefined) {
      info = this.pool.setAdminState(address.key, change.state);
      if (change.state === "ready") this.states.delete(address.key);
      else this.states.set(address.key, { address, state: change.state });
    }
    await this.persist();
    return this.pool.get(address.key) ?? info;
  }

  /** Removes an API backend. Throws PoolError "not_found", or "owned" for others' backends. */
  async remove(address: HostPort): Promise<void> {
    this.pool.remove("api", address.key);
    this.added.delete(address.key);
    if (!this.pool.has(address.key)) this.states.delete(address.key);
    // Still there: another source names it too. The API's word on it, weight included, is withdrawn.
    if (this.pool.has(address.key)) this.pool.setWeight(address.key, undefined);
    await this.persist();
  }

  /** Resolves once no write is in flight or queued. */
  async settled(): Promise<void> {
    while (this.writing) await this.writing.catch(() => undefined);
  }

  private current(): PersistedState {
    return { backends: [...this.added.values()], weights: [...this.weights.values()], states: [...this.states.values()] };
  }

  private reset(state: PersistedState): void {
    this.added.clear();
    this.weights.clear();
    this.states.clear();
    for (const b of state.backends) this.added.set(b.address.key, b);
    for (const w of state.weights) this.weights.set(w.address.key, w);
    for (const s of state.states ?? []) this.states.set(s.address.key, s);
  }

  /** Remembered weights and admin states apply to backends as they (re)appear. */
  private applyRemembered(views: readonly BackendView[]): void {
    for (const view of views) {
      const remembered = this.weights.get(view.key);
      if (remembered && remembered.weight !== view.weight) this.pool.setWeight(view.key, remembered.weight);
      const state = this.states.get(view.key);
      if (state) this.pool.setAdminState(view.key, state.state);
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
    const wantedStates = new Map<string, AdminState>((state.states ?? []).map((s) => [s.address.key, s.state]));
    for (const { address } of this.pool.adminStates()) if (!wantedStates.has(address)) this.pool.setAdminState(address, "ready");
    for (const [key, adminState] of wantedStates) if (this.pool.has(key)) this.pool.setAdminState(key, adminState);
  }
}
