import { isIP } from "node:net";
import type { ContainerInspectInfo } from "dockerode";
import { MAX_WEIGHT } from "../config/schema.ts";
import { parseHostPort } from "../pool/address.ts";
import type { DesiredBackend } from "../pool/pool.ts";

/**
 * What Docker discovery needs to know of one container, taken from `docker inspect` at the
 * boundary so the rules below read plain data (and are tested without an engine).
 */
export interface ContainerFacts {
  readonly id: string;
  /** Without Docker's leading "/". */
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly running: boolean;
  readonly paused: boolean;
  /** "" without a HEALTHCHECK; else "starting", "healthy" or "unhealthy". */
  readonly health: string;
  readonly networks: readonly ContainerNetwork[];
}

export interface ContainerNetwork {
  readonly name: string;
  /** "" when the network gave no address of that family. */
  readonly ipv4: string;
  readonly ipv6: string;
}

/** Labels read from each container; only the enabling label's name is configurable. */
export const PORT_LABEL = "lb.port";
export const WEIGHT_LABEL = "lb.weight";
export const NETWORK_LABEL = "lb.network";

export interface JudgeOptions {
  /** The enabling label (`discovery.docker.label`); its value must be "true". */
  readonly label: string;
  /** `discovery.docker.network`; "" when not set. The container's lb.network wins. */
  readonly network: string;
}

/** What discovery makes of one container. */
export type Verdict =
  /** A backend; `warning` says why the address was a guess (several networks). */
  | { readonly kind: "backend"; readonly backend: DesiredBackend; readonly network: string; readonly warning?: string }
  /** Not serving now, for a reason a user would expect (not a mistake). */
  | { readonly kind: "out"; readonly reason: "not enabled" | "not running" | "paused" | "unhealthy" }
  /** A mistake in labels or networks; the container is left out with one warning. */
  | { readonly kind: "skip"; readonly warning: string };

export function factsFromInspect(info: ContainerInspectInfo): ContainerFacts {
  const networks = Object.entries(info.NetworkSettings?.Networks ?? {}).map(
    ([name, n]): ContainerNetwork => ({ name, ipv4: n?.IPAddress ?? "", ipv6: n?.GlobalIPv6Address ?? "" }),
  );
  return {
    id: info.Id,
    // A name is always there from a real engine; anything else says nothing useful.
    name: typeof info.Name === "string" ? info.Name.replace(/^\//, "") : info.Id,
    labels: info.Config?.Labels ?? {},
    running: info.State?.Running === true,
    paused: info.State?.Paused === true,
    health: info.State?.Health?.Status ?? "",
    networks,
  };
}

/**
 * Decides whether a container is a backend, and at which address and weight.
 *
 * Which IP: the network named by the container's `lb.network` label, else by
 * `discovery.docker.network`; else the container's only network; with several and none
 * named, the first by name (sorted, so every replica and restart picks the same) and a
 * warning. On the chosen network the IPv4 address is used, or the global IPv6 address
 * when the network gives no IPv4 (IPv6-only containers).
 */
export function judge(c: ContainerFacts, opts: JudgeOptions): Verdict {
  if (c.labels[opts.label] !== "true") return { kind: "out", reason: "not enabled" };

  const port = parseLabel(c.labels[PORT_LABEL], 80, 65535);
  if (port === undefined) return { kind: "skip", warning: `label ${PORT_LABEL} must be a port 1-65535 (got ${JSON.stringify(c.labels[PORT_LABEL])})` };
  const weight = parseLabel(c.labels[WEIGHT_LABEL], 1, MAX_WEIGHT);
  if (weight === undefined) {
    return { kind: "skip", warning: `label ${WEIGHT_LABEL} must be an integer 1-${MAX_WEIGHT} (got ${JSON.stringify(c.labels[WEIGHT_LABEL])})` };
  }

  if (!c.running) return { kind: "out", reason: "not running" };
  if (c.paused) return { kind: "out", reason: "paused" };
  if (c.health === "unhealthy") return { kind: "out", reason: "unhealthy" };

  const named = c.labels[NETWORK_LABEL] || opts.network;
  const by = c.labels[NETWORK_LABEL] ? `label ${NETWORK_LABEL}` : "discovery.docker.network";
  let network: ContainerNetwork | undefined;
  let warning: string | undefined;
  if (named) {
    network = c.networks.find((n) => n.name === named);
    if (!network) {
      const on = c.networks.length > 0 ? c.networks.map((n) => n.name).join(", ") : "none";
      return { kind: "skip", warning: `not on network "${named}" named by ${by} (its networks: ${on})` };
    }
  } else if (c.networks.length === 1) {
    network = c.networks[0]!;
  } else if (c.networks.length === 0) {
    return { kind: "skip", warning: "is on no network, so it has no address to balance to" };
  } else {
    const sorted = [...c.networks].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    network = sorted.find((n) => n.ipv4 || n.ipv6) ?? sorted[0]!;
    warning = `is on several networks (${sorted.map((n) => n.name).join(", ")}); using "${network.name}": set label ${NETWORK_LABEL} or discovery.docker.network to choose`;
  }

  const ip = network.ipv4 || network.ipv6;
  // network_mode host/none/container:… report a network without an address.
  if (!ip) return { kind: "skip", warning: `has no IP address on network "${network.name}"` };
  // The engine reports IP literals; anything else is skipped with its reason, not thrown.
  if (isIP(ip) !== (network.ipv4 ? 4 : 6)) return { kind: "skip", warning: `has an IP address on network "${network.name}" that is not one: ${JSON.stringify(ip)}` };
  const address = parseHostPort(network.ipv4 ? `${ip}:${port}` : `[${ip}]:${port}`);
  return { kind: "backend", backend: { address, weight }, network: network.name, ...(warning ? { warning } : {}) };
}

/** A decimal integer label in 1..max; `fallback` when absent; undefined when malformed. */
function parseLabel(value: string | undefined, fallback: number, max: number): number | undefined {
  if (value === undefined) return fallback;
  if (!/^\d{1,7}$/.test(value)) return undefined;
  const n = Number(value);
  return n >= 1 && n <= max ? n : undefined;
}
