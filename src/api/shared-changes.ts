import type { Logger } from "pino";
import type { HostPort } from "../pool/address.ts";
import { PoolError, type BackendInfo, type BackendOptions, type BackendPool } from "../pool/pool.ts";
import type { PersistedState, SharedStore, SharedWrite } from "../store/store.ts";
import { ApiState } from "./api-state.ts";
import { ChangeConflictError, DEFAULT_WEIGHT, type BackendUpdate, type ChangeFlow } from "./change-flow.ts";

/** Times a change is decided again after the store says another replica changed its basis. */
const ATTEMPTS = 3;

/**
 * The API's changes kept in a store that several replicas share (etcd). The store
 * decides first: a change is checked against this replica's pool, committed to the store
 * (which refuses it if another replica's change got there first), and only then applied
 * to the pool, by the same path that applies every other replica's changes: the store
 * hands over the whole state it knows after each change, and the pool is made to match
 * it. A change the store does not commit never touches the pool.
 */
export class SharedChanges implements ChangeFlow {
  private readonly pool: BackendPool;
  private readonly store: SharedStore;
  private readonly log: Logger;
  private readonly applied: () => Promise<void>;
  private model = new ApiState();
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(opts: { pool: BackendPool; store: SharedStore; logger: Logger; applied: () => Promise<void> }) {
    this.pool = opts.pool;
    this.store = opts.store;
    this.log = opts.logger;
    this.applied = opts.applied;
  }

  async restore(): Promise<void> {
    this.pool.onMembership((change) => this.model.applyRemembered(this.pool, change.added));
    await this.store.start((state) => this.sync(state));
  }

  async add(address: HostPort, weight: number, options: BackendOptions): Promise<BackendInfo> {
    const key = address.key;
    const existing = this.pool.get(key);
    if (existing) throw new PoolError("exists", `backend ${key} already exists (source: ${existing.source})`);
    const backend = {
      address,
      weight,
      ...(options.maxConnections ? { maxConnections: options.maxConnections } : {}),
      ...(options.backup ? { backup: true } : {}),
      ...(options.proxyProtocol ? { proxyProtocol: options.proxyProtocol } : {}),
    };
    // weight: null, as with the state file: an explicit weight on add beats one remembered
    // for an absent backend.
    const result = await this.write({ address, basis: "absent", backend, weight: null });
    if (result === "stale") throw new PoolError("exists", `backend ${key} already exists (source: api, added through another replica)`);
    return this.acknowledge(key);
  }

  async update(address: HostPort, change: BackendUpdate): Promise<BackendInfo> {
    const key = address.key;
    for (let attempt = 1; ; attempt++) {
      if (!this.pool.has(key)) throw new PoolError("not_found", `backend ${key} not found`);
      const api = this.model.added.get(key);
      let write: SharedWrite = { address, basis: "any" };
      if (change.weight !== undefined) {
        // An API backend's weight is part of its record; others' weights have keys of their own.
        write = api
          ? { address, basis: "present", backend: { ...api, weight: change.weight ?? DEFAULT_WEIGHT } }
          : { address, basis: "absent", weight: change.weight };
      }
      if (change.state !== undefined) write = { ...write, state: change.state === "ready" ? null : change.state };
      if ((await this.write(write)) === "done") return this.acknowledge(key);
      if (attempt === ATTEMPTS) {
        throw new ChangeConflictError(`backend ${key} was changed by another replica ${ATTEMPTS} times while this change was being made; try again`);
      }
      this.log.debug({ backend: key, attempt }, "api change met another replica's change; deciding it again");
    }
  }

  async remove(address: HostPort): Promise<void> {
    const key = address.key;
    const info = this.pool.get(key);
    if (!info) throw new PoolError("not_found", `backend ${key} not found`);
    if (!this.model.added.has(key)) throw new PoolError("owned", `backend ${key} is owned by ${info.source}, not api; remove it there`);
    // The admin state goes with a backend the API owns (it leaves the pool); one that
    // another source owns keeps its state, as with the state file.
    const forgetState = info.source === "api" && this.model.states.has(key);
    await this.write({ address, basis: "any", backend: null, ...(forgetState ? { state: null } : {}) });
    await this.applied();
  }

  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  async stop(): Promise<void> {
    await this.settled();
    await this.store.stop();
  }

  /** The store's whole state, after any change: the pool is made to match it. */
  private sync(state: PersistedState): void {
    this.model = ApiState.from(state);
    this.model.applyTo(this.pool);
  }

  private write(write: SharedWrite): Promise<"done" | "stale"> {
    const pending = this.store.write(write);
    this.inFlight.add(pending);
    const forget = () => void this.inFlight.delete(pending);
    pending.then(forget, forget);
    return pending;
  }

  /** The backend as committed, once the data plane routes by it. */
  private async acknowledge(key: string): Promise<BackendInfo> {
    // Read now: a later change from another replica may follow while the data plane catches up.
    const info = this.pool.get(key);
    await this.applied();
    if (!info) throw new PoolError("not_found", `backend ${key} was removed through another replica as this change was made`);
    return this.pool.get(key) ?? info;
  }
}
