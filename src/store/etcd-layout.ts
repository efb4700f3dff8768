import { z } from "zod";
import { backendMaxConnections, proxyProtocol, weight } from "../config/schema.ts";
import { formatPath } from "../config/load.ts";
import { parseHostPort, type HostPort } from "../pool/address.ts";
import { ADMIN_STATES, type AdminState } from "../pool/pool.ts";
import type { ApiBackend } from "./store.ts";

// How the API's state is laid out in etcd, under the configured prefix: one key per
// thing that can change on its own, so that replicas changing different backends never
// touch the same key:
//
//   <prefix>backends/<address>  {"weight":2,"max_connections":50,"backup":true,"proxy_protocol":"v2","id":"…"}
//   <prefix>weights/<address>   {"weight":5}
//   <prefix>states/<address>    {"state":"drain"}
//
// <address> is the canonical host:port (parseHostPort's key). Values are JSON; "id" names
// the POST that created an API backend, so a replica that retries a create whose first
// attempt did commit recognises its own backend rather than calling it a conflict.

export const KINDS = ["backends", "weights", "states"] as const;
export type Kind = (typeof KINDS)[number];

/** The key of one entry, relative to the prefix. */
export function keyOf(kind: Kind, address: HostPort): string {
  return `${kind}/${address.key}`;
}

/** One entry of the layout, decoded. */
export type Entry =
  | { readonly kind: "backends"; readonly backend: ApiBackend; readonly id: string | undefined }
  | { readonly kind: "weights"; readonly address: HostPort; readonly weight: number }
  | { readonly kind: "states"; readonly address: HostPort; readonly state: AdminState };

const backendValue = z.strictObject({
  weight,
  max_connections: backendMaxConnections.optional(),
  backup: z.boolean().optional(),
  proxy_protocol: proxyProtocol.optional(),
  id: z.string().max(100).optional(),
});
const weightValue = z.strictObject({ weight });
const stateValue = z.strictObject({ state: z.enum(ADMIN_STATES, { error: `must be one of ${ADMIN_STATES.join(", ")}` }) });

export function encodeBackend(b: ApiBackend, id: string | undefined): string {
  return JSON.stringify({
    weight: b.weight,
    ...(b.maxConnections ? { max_connections: b.maxConnections } : {}),
    ...(b.backup ? { backup: true } : {}),
    ...(b.proxyProtocol ? { proxy_protocol: b.proxyProtocol } : {}),
    ...(id !== undefined ? { id } : {}),
  });
}

export function encodeWeight(w: number): string {
  return JSON.stringify({ weight: w });
}

export function encodeState(state: AdminState): string {
  return JSON.stringify({ state });
}

/**
 * Decodes one key (relative to the prefix) and its value. Returns a problem, phrased to
 * follow the key in a log line, for anything else: an unknown kind, an address that is
 * not canonical, a value that is not JSON or not the kind's shape. A "ready" state is
 * an entry too (the same as no entry).
 */
export function decodeEntry(key: string, value: string): Entry | { readonly problem: string } {
  const slash = key.indexOf("/");
  const kind = key.slice(0, slash) as Kind;
  if (slash < 0 || !KINDS.includes(kind)) return { problem: `not a key gobalancer writes (expected ${KINDS.map((k) => `${k}/<address>`).join(", ")})` };
  const text = key.slice(slash + 1);
  let address: HostPort;
  try {
    address = parseHostPort(text);
  } catch (err) {
    return { problem: `address: ${(err as Error).message}` };
  }
  if (address.key !== text) return { problem: `address must be written canonically, as ${address.key}` };
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch (err) {
    return { problem: `value is not valid JSON (${(err as Error).message})` };
  }
  const schema = kind === "backends" ? backendValue : kind === "weights" ? weightValue : stateValue;
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    return { problem: `value is invalid: ${parsed.error.issues.map((i) => (i.path.length > 0 ? `${formatPath(i.path)}: ${i.message}` : i.message)).join("; ")}` };
  }
  if (kind === "weights") return { kind, address, weight: (parsed.data as z.infer<typeof weightValue>).weight };
  if (kind === "states") return { kind, address, state: (parsed.data as z.infer<typeof stateValue>).state };
  const b = parsed.data as z.infer<typeof backendValue>;
  return {
    kind,
    id: b.id,
    backend: {
      address,
      weight: b.weight,
      ...(b.max_connections ? { maxConnections: b.max_connections } : {}),
      ...(b.backup ? { backup: true } : {}),
      ...(b.proxy_protocol ? { proxyProtocol: b.proxy_protocol } : {}),
    },
  };
}
