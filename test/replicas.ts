/**
 * GoBalancer replicas sharing one etcd, for the replica tests and the replica benchmark:
 * the real process (harness.ts) with `state_store.type: etcd`, and a small REST client.
 */
import type { BackendJson } from "../src/api/schemas.ts";
import { startBalancer, type BalancerProcess, type StartOptions } from "./harness.ts";

export const PREFIX = "/gobalancer-test/";

/** Starts one replica on `endpoints` with no backends of its own: everything comes from etcd. */
export function startReplica(endpoints: readonly string[], config: Record<string, unknown> = {}, opts: StartOptions = {}): Promise<BalancerProcess> {
  return startBalancer(
    {
      state_store: { type: "etcd", etcd: { endpoints, prefix: PREFIX } },
      discovery: { type: "static", backends: [] },
      health_check: { interval: "1m" },
      ...config,
    },
    opts,
  );
}

export interface ApiAnswer<T = unknown> {
  status: number;
  body: T;
}

/** One API call; the body is parsed JSON (or undefined for 204). */
export async function call<T = BackendJson & { error?: string }>(lb: BalancerProcess, method: string, path: string, body?: unknown): Promise<ApiAnswer<T>> {
  const res = await fetch(`${lb.api}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

export const backendPath = (address: string) => `/backends/${encodeURIComponent(address)}`;

/** A replica's backends, as the fields replicas share: address, weight, state, source. */
export async function registry(lb: BalancerProcess): Promise<string[]> {
  const res = await call<BackendJson[]>(lb, "GET", "/backends");
  if (res.status !== 200) throw new Error(`GET /backends: ${res.status}`);
  return res.body.map((b) => `${b.address} w=${b.weight} ${b.state} ${b.source}`).sort();
}
