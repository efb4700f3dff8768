import type { HostPort } from "../pool/address.ts";
import type { ApplyDesired, DiscoverySource } from "./source.ts";

/** The backends listed under `discovery.backends` in the config file. */
export class StaticSource implements DiscoverySource {
  readonly kind = "static" as const;
  private readonly backends: ReadonlyArray<{ address: HostPort; weight: number }>;
  private readonly apply: ApplyDesired;

  constructor(backends: ReadonlyArray<{ address: HostPort; weight: number }>, apply: ApplyDesired) {
    this.backends = backends;
    this.apply = apply;
  }

  async start(): Promise<void> {
    this.apply(this.backends);
  }

  async stop(): Promise<void> {}
}
