import type { Logger } from "pino";
import type { HostPort } from "../pool/address.ts";
import { PoolError, type BackendInfo, type BackendOptions, type BackendPool } from "../pool/pool.ts";
import { StateFileError } from "../store/file.ts";
import type { PersistedState, StateStore } from "../store/store.ts";
import { ApiState } from "./api-state.ts";
import { DEFAULT_WEIGHT, type BackendUpdate, type ChangeFlow } from "./change-flow.ts";

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

/**
 * The API's changes kept in a store this replica alone writes (the state file). A change
 * is applied to the pool at once (so it is checked against the pool atomically: no two
 * requests can add the same backend) and is acknowledged only once the state file
 * holding it is durably written. Writes are serialised and coalesced: while one write is
 * in flight, every change made meanwhile waits for the next write, which carries them all.
 *
 * If a write fails, the pool goes back to the last state that is on disk and every
 * change not yet acknowledged is refused: nothing is left half-applied.
 */
export class FileChanges implements ChangeFlow {
  private readonly pool: BackendPool;
  private readonly store: StateStore;
  private readonly log: Logger;
  private model = new ApiState();
  private persisted: PersistedState = { backends: [], weights: [], states: [] };
  private waiting: Waiter[] = [];
  private writing: Promise<void> | undefined;
  private readonly applied: () => Promise<void>;

  constructor(opts: { pool: BackendPool; store: StateStore; logger: Logger; applied: () => Promise<void> }) {
    this.pool = opts.pool;
    this.store = opts.store;
    this.log = opts.logger;
    this.applied = opts.applied;
  }

  async restore(): Promise<void> {
    const state = await this.store.read();
    this.persisted = state;
    this.model = ApiState.from(state);
    this.pool.onMembership((change) => this.model.applyRemembered(this.pool, change.added));
    for (const b of state.backends) this.pool.add("api", b.address, b.weight, b);
    if (state.backends.length > 0 || state.weights.length > 0 || (state.states ?? []).length > 0) {
      this.log.info(
        { state_file: this.store.path, backends: state.backends.length, weights: state.weights.length, states: (state.states ?? []).length },
        "api state restored",
      );
    }
  }

  async add(address: HostPort, weight: number, options: BackendOptions): Promise<BackendInfo> {
    // An explicit weight on add beats one remembered for an absent backend.
    if (!this.pool.has(address.key)) this.model.weights.delete(address.key);
    const info = this.pool.add("api", address, weight, options);
    this.model.added.set(address.key, { ...options, address, weight });
    await this.persist();
    return info;
  }

  async update(address: HostPort, change: BackendUpdate): Promise<BackendInfo> {
    const { added, weights, states } = this.model;
    let info = this.pool.get(address.key);
    if (!info) throw new PoolError("not_found", `backend ${address.key} not found`);
    if (change.weight === null) {
      const api = added.get(address.key);
      if (api) {
        added.set(address.key, { ...api, weight: DEFAULT_WEIGHT });
        info = this.pool.setWeight(address.key, DEFAULT_WEIGHT);
      } else {
        weights.delete(address.key);
        info = this.pool.setWeight(address.key, undefined);
      }
    } else if (change.weight !== undefined) {
      info = this.pool.setWeight(address.key, change.weight);
      const api = added.get(address.key);
      if (api) added.set(address.key, { ...api, weight: change.weight });
      else weights.set(address.key, { address, weight: change.weight });
    }
    if (change.state !== undefined) {
      info = this.pool.setAdminState(address.key, change.state);
      if (change.state === "ready") states.delete(address.key);
      else states.set(address.key, { address, state: change.state });
    }
    await this.persist();
    return this.pool.get(address.key) ?? info;
  }

  async remove(address: HostPort): Promise<void> {
    this.pool.remove("api", address.key);
    this.model.added.delete(address.key);
    if (!this.pool.has(address.key)) this.model.states.delete(address.key);
    // Still there: another source names it too. The API's word on it, weight included, is withdrawn.
    if (this.pool.has(address.key)) this.pool.setWeight(address.key, undefined);
    await this.persist();
  }

  async settled(): Promise<void> {
    while (this.writing) await this.writing.catch(() => undefined);
  }

  async stop(): Promise<void> {
    await this.settled();
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
      const state = this.model.toPersisted();
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
        // Back to the state last written.
        this.model = ApiState.from(this.persisted);
        this.model.applyTo(this.pool);
        for (const w of refused) w.reject(error);
      }
    }
    // Cleared in the same tick the queue is seen empty, so a change made right after
    // starts a new flush rather than waiting on this finished one.
    this.writing = undefined;
  }
}
