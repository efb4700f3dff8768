import type { Logger } from "pino";
import type { HostPort } from "../pool/address.ts";
import type { BackendInfo, BackendOptions, BackendPool } from "../pool/pool.ts";
import { isSharedStore, type SharedStore, type StateStore } from "../store/store.ts";
import type { BackendUpdate, ChangeFlow } from "./change-flow.ts";
import { FileChanges } from "./file-changes.ts";
import { SharedChanges } from "./shared-changes.ts";

export type { BackendUpdate } from "./change-flow.ts";

/**
 * The API's changes to the pool, and where they are kept. With a state file
 * (file-changes.ts) a change applies at once and is undone if the file cannot be
 * written; with a store that several replicas share (shared-changes.ts) the store
 * decides first and every replica applies what it committed. Either way a change is
 * acknowledged only once it is stored and the data plane routes by it.
 */
export class BackendChanges {
  private readonly flow: ChangeFlow;

  /** `applied` resolves once the data plane routes by the pool's latest snapshot (see Balancer). */
  constructor(opts: { pool: BackendPool; store: StateStore | SharedStore; logger: Logger; applied?: () => Promise<void> }) {
    const applied = opts.applied ?? (() => Promise.resolve());
    const { pool, store, logger } = opts;
    this.flow = isSharedStore(store) ? new SharedChanges({ pool, store, logger, applied }) : new FileChanges({ pool, store, logger, applied });
  }

  /**
   * Loads what is stored and applies it. Call before discovery starts: API backends join
   * now, and weights for backends others own apply whenever those backends appear.
   * Throws StateFileError when the state file exists but cannot be used; a shared store
   * that cannot be reached is retried in the background.
   */
  restore(): Promise<void> {
    return this.flow.restore();
  }

  /** Adds a backend owned by the API. Throws PoolError "exists" if any source has it. */
  add(address: HostPort, weight: number, options: BackendOptions = {}): Promise<BackendInfo> {
    return this.flow.add(address, weight, options);
  }

  /** Sets any backend's weight. Throws PoolError "not_found". */
  setWeight(address: HostPort, weight: number): Promise<BackendInfo> {
    return this.flow.update(address, { weight });
  }

  /**
   * A weight and/or an admin state on any backend. A null weight clears the API's
   * override: the owner's weight applies again (the default for an API backend).
   * Throws PoolError "not_found" before changing anything.
   */
  update(address: HostPort, change: BackendUpdate): Promise<BackendInfo> {
    return this.flow.update(address, change);
  }

  /** Removes an API backend. Throws PoolError "not_found", or "owned" for others' backends. */
  remove(address: HostPort): Promise<void> {
    return this.flow.remove(address);
  }

  /** Resolves once no change is in flight. */
  settled(): Promise<void> {
    return this.flow.settled();
  }

  /** Waits for changes in flight, then stops following a shared store. */
  stop(): Promise<void> {
    return this.flow.stop();
  }
}
