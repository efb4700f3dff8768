import { isIP } from "node:net";
import { formatHostPort, parseHostPort } from "../pool/address.ts";
import type { DesiredBackend } from "../pool/pool.ts";
import { isObject } from "./json.ts";

// Kubernetes discovery's rules, on plain data: the API's objects are converted here at the
// boundary (sliceFacts, resourceVersionOf, watchError), and the desired set follows from
// the converted slices alone (desiredFromSlices), so all of it is tested without a cluster.
// The list/watch loop that feeds it is kubernetes.ts.

/** One port of an EndpointSlice. */
export interface SlicePort {
  readonly name: string;
  /** Absent means "all ports" in the API, which gives us no port to dial. */
  readonly port: number | undefined;
  readonly protocol: string;
}

/** One endpoint, with the API's nil conditions already resolved to their documented meaning. */
export interface SliceEndpoint {
  /** The first address; the API says the others are fungible and consumers may ignore them. */
  readonly address: string | undefined;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
}

/** What discovery needs of one EndpointSlice, converted at the API boundary. */
export interface SliceFacts {
  readonly name: string;
  readonly addressType: string;
  readonly ports: readonly SlicePort[];
  readonly endpoints: readonly SliceEndpoint[];
}

const optionalBool = (v: unknown): boolean | undefined => (typeof v === "boolean" ? v : undefined);

/**
 * Reads an EndpointSlice as the API server sends it (watch events carry raw JSON; the list
 * call returns client-node's model objects, which use the same property names). Returns
 * undefined for something that is not a named object.
 */
export function sliceFacts(obj: unknown): SliceFacts | undefined {
  if (!isObject(obj) || !isObject(obj.metadata) || typeof obj.metadata.name !== "string") return undefined;
  const ports: SlicePort[] = [];
  for (const p of Array.isArray(obj.ports) ? obj.ports : []) {
    if (!isObject(p)) continue;
    ports.push({
      name: typeof p.name === "string" ? p.name : "",
      port: typeof p.port === "number" ? p.port : undefined,
      protocol: typeof p.protocol === "string" ? p.protocol : "TCP", // the API's default
    });
  }
  const endpoints: SliceEndpoint[] = [];
  for (const e of Array.isArray(obj.endpoints) ? obj.endpoints : []) {
    if (!isObject(e)) continue;
    const c = isObject(e.conditions) ? e.conditions : {};
    // API semantics: a nil `ready` is unknown and "consumers should interpret this as ready";
    // a nil `serving` defers to `ready`; a nil `terminating` means not terminating.
    const ready = optionalBool(c.ready) ?? true;
    endpoints.push({
      address: Array.isArray(e.addresses) && typeof e.addresses[0] === "string" ? e.addresses[0] : undefined,
      ready,
      serving: optionalBool(c.serving) ?? ready,
      terminating: optionalBool(c.terminating) ?? false,
    });
  }
  return {
    name: obj.metadata.name,
    addressType: typeof obj.addressType === "string" ? obj.addressType : "",
    ports,
    endpoints,
  };
}

/**
 * The port to dial for `wanted` (a port name, a port number, or "" for the only port).
 * Only TCP ports count: a Service that also exposes UDP (DNS, say) still has one TCP port.
 */
export function choosePort(ports: readonly SlicePort[], wanted: string): { port: number } | { problem: string } {
  const tcp = ports.filter((p): p is SlicePort & { port: number } => p.protocol === "TCP" && p.port !== undefined);
  const list = tcp.map((p) => (p.name ? `${p.name}=${p.port}` : String(p.port))).join(", ");
  if (wanted === "") {
    if (tcp.length === 1) return checkedPort(tcp[0]!.port);
    if (tcp.length === 0) return { problem: "has no TCP port" };
    return { problem: `has several TCP ports (${list}); set discovery.kubernetes.port to pick one` };
  }
  // Port names must contain a letter (IANA_SVC_NAME), so an all-digit value is a number.
  const byNumber = /^\d+$/.test(wanted);
  const match = tcp.find((p) => (byNumber ? p.port === Number(wanted) : p.name === wanted));
  if (match) return checkedPort(match.port);
  return { problem: `has no TCP port ${byNumber ? "numbered" : "named"} ${wanted} (ports: ${list || "none"})` };
}

/** The API server validates ports; a slice that got past it with a bad one is skipped, not thrown on. */
function checkedPort(port: number): { port: number } | { problem: string } {
  return Number.isInteger(port) && port >= 1 && port <= 65535 ? { port } : { problem: `has TCP port ${JSON.stringify(port)}, not 1-65535` };
}

/** The desired set for one Service, and why any slice contributed nothing (by slice name). */
export interface DesiredFromSlices {
  readonly desired: DesiredBackend[];
  readonly problems: Map<string, string>;
}

/**
 * The union of the Service's slices: ready endpoints are routable; serving endpoints that
 * are terminating drain (open connections finish, no new ones); anything else is out.
 * An endpoint listed in two slices (as it can be while it moves) takes its best state.
 */
export function desiredFromSlices(slices: Iterable<SliceFacts>, wantedPort: string): DesiredFromSlices {
  const problems = new Map<string, string>();
  const chosen = new Map<string, DesiredBackend>();
  for (const slice of slices) {
    const family = slice.addressType === "IPv4" ? 4 : slice.addressType === "IPv6" ? 6 : 0;
    if (family === 0) {
      problems.set(slice.name, `has addressType ${slice.addressType || "(none)"}; only IPv4 and IPv6 slices are used`);
      continue;
    }
    const choice = choosePort(slice.ports, wantedPort);
    if ("problem" in choice) {
      problems.set(slice.name, choice.problem);
      continue;
    }
    for (const e of slice.endpoints) {
      const draining = !e.ready && e.serving && e.terminating;
      if (!e.ready && !draining) continue;
      if (e.address === undefined || isIP(e.address) !== family) {
        if (!problems.has(slice.name)) problems.set(slice.name, `has an endpoint address that is not ${slice.addressType}: ${e.address ?? "(none)"}`);
        continue;
      }
      const address = parseHostPort(formatHostPort(e.address, choice.port));
      const previous = chosen.get(address.key);
      if (previous && !previous.draining) continue;
      chosen.set(address.key, draining ? { address, weight: 1, draining: true } : { address, weight: 1 });
    }
  }
  // Sorted, so every replica hands the pool the same order.
  const desired = [...chosen.values()].sort((a, b) => (a.address.key < b.address.key ? -1 : a.address.key > b.address.key ? 1 : 0));
  return { desired, problems };
}

/** The resourceVersion an object of a watch event carries, if any. */
export function resourceVersionOf(obj: unknown): string | undefined {
  return isObject(obj) && isObject(obj.metadata) && typeof obj.metadata.resourceVersion === "string" ? obj.metadata.resourceVersion : undefined;
}

/**
 * What the Status object of a watch ERROR event says: that our resourceVersion was
 * compacted away (410 Expired/Gone: only a fresh list can resync), or else why the watch
 * failed.
 */
export function watchError(obj: unknown): { readonly expired: true } | { readonly expired: false; readonly message: string } {
  const status = isObject(obj) ? obj : {};
  if (status.code === 410) return { expired: true };
  return { expired: false, message: `watch error event: ${typeof status.message === "string" ? status.message : JSON.stringify(status)}` };
}
