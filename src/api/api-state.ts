import type { HostPort } from "../pool/address.ts";
import type { AdminState, BackendPool, BackendView } from "../pool/pool.ts";
import type { ApiBackend, PersistedState } from "../store/store.ts";

export interface WeightEntry {
  readonly address: HostPort;
  readonly weight: number;
}

export interface StateEntry {
  readonly address: HostPort;
  readonly state: AdminState;
}

/**
 * What the API has said about the pool, by address: the backends it added (with their
 * weight and options), weights it set on backends others own, and admin states other
 * than ready on any backend. Weights and states are kept while a backend is absent, so
 * they apply again when discovery brings it back (and at start-up, before discovery has
 * found it).
 */
export class ApiState {
  readonly added = new Map<string, ApiBackend>();
  readonly weights = new Map<string, WeightEntry>();
  readonly states = new Map<string, StateEntry>();

  static from(state: PersistedState): ApiState {
    const s = new ApiState();
    for (const b of state.backends) s.added.set(b.address.key, b);
    for (const w of state.weights) s.weights.set(w.address.key, w);
    for (const e of state.states ?? []) s.states.set(e.address.key, e);
    return s;
  }

  toPersisted(): PersistedState {
    return { backends: [...this.added.values()], weights: [...this.weights.values()], states: [...this.states.values()] };
  }

  /**
   * Makes the pool say exactly what this state says: the API's claims (one reconcile),
   * the weight overrides (an API backend's weight is its override too, so it wins when
   * another source also names the address) and the admin states. Touches only what
   * differs, so applying the same state twice changes nothing.
   */
  applyTo(pool: BackendPool): void {
    pool.reconcile("api", [...this.added.values()]);
    const wanted = new Map<string, number>();
    for (const e of [...this.added.values(), ...this.weights.values()]) wanted.set(e.address.key, e.weight);
    const overridden = new Map(pool.weightOverrides().map((o) => [o.address, o.weight]));
    for (const key of new Set([...wanted.keys(), ...overridden.keys()])) {
      if (pool.has(key) && overridden.get(key) !== wanted.get(key)) pool.setWeight(key, wanted.get(key));
    }
    for (const { address } of pool.adminStates()) if (!this.states.has(address)) pool.setAdminState(address, "ready");
    for (const [key, entry] of this.states) if (pool.has(key)) pool.setAdminState(key, entry.state);
  }

  /** Remembered weights and admin states apply to backends as they (re)appear. */
  applyRemembered(pool: BackendPool, views: readonly BackendView[]): void {
    for (const view of views) {
      const remembered = this.weights.get(view.key);
      if (remembered && remembered.weight !== view.weight) pool.setWeight(view.key, remembered.weight);
      const state = this.states.get(view.key);
      if (state) pool.setAdminState(view.key, state.state);
    }
  }
}
