import type { DesiredBackend } from "../pool/pool.ts";
import type { ApplyDesired, DiscoverySource } from "./source.ts";

/** The backends listed under `discovery.backends` in the config file. */
export class StaticSource implements DiscoverySource {
  readonly kind = "static" as const;
  private backends: readonly DesiredBackend[];
  private readonly apply: ApplyDesired;

  constructor(backends: readonly DesiredBackend[], apply: ApplyDesired) {
    this.backends = backends;
    this.apply = apply;
  }

  async start(): Promise<void> {
    this.apply(this.backends);
  }

  /** A reloaded config's list: applied as a difference by the pool. */
  update(backends: readonly DesiredBackend[]): void {
    this.backends = backends;
    this.apply(backends);
  }

  async stop(): Promise<void> {}
}
