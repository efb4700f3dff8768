import { z } from "zod";
import { ADMIN_STATES } from "../pool/pool.ts";
import { backendMaxConnections, MAX_WEIGHT, proxyProtocol } from "../config/schema.ts";
import { parseHostPort, type HostPort } from "../pool/address.ts";
import type { BackendInfo } from "../pool/pool.ts";
import { SHARE_FULL } from "../pool/slow-start.ts";

/**
 * The API's request and response shapes, defined once: the same zod schemas validate
 * requests (see server.ts) and produce the OpenAPI document (see openapi.ts).
 */

const WEIGHT_RULE = `must be an integer 1-${MAX_WEIGHT}`;

/** `host:port`, parsed to its canonical form so two spellings of one backend are one key. */
const address = z
  .string({ error: (issue) => (issue.input === undefined ? "is required" : 'must be a string "host:port"') })
  .transform((value, ctx): HostPort => {
    try {
      return parseHostPort(value);
    } catch (err) {
      ctx.issues.push({ code: "custom", input: value, message: (err as Error).message });
      return z.NEVER;
    }
  })
  .meta({ description: "Backend address host:port: IPv4, bracketed IPv6 ([::1]:80) or DNS name; port 1-65535", examples: ["10.0.0.4:3000"] });

const jsonObject = {
  error: (issue: { input?: unknown }) => (issue.input == null ? "is required: send a JSON object" : "must be a JSON object"),
};

const weight = z
  .number({ error: (issue) => (issue.input === undefined ? "is required" : WEIGHT_RULE) })
  .int({ error: WEIGHT_RULE })
  .min(1, { error: WEIGHT_RULE })
  .max(MAX_WEIGHT, { error: WEIGHT_RULE })
  .meta({ description: `Share of traffic relative to other backends (integer 1-${MAX_WEIGHT})` });

const maxConnections = backendMaxConnections.meta({
  description: "Most connections open to this backend at once, over all threads; 0 = no limit. Past it the backend is not picked; clients wait up to timeouts.queue when every backend is full",
});
const backup = z.boolean({ error: "must be true or false" }).meta({ description: "Used only while no non-backup backend is routable" });
const proxy = proxyProtocol.meta({ description: "PROXY protocol header sent to this backend before the client's bytes; absent: the global proxy_protocol" });

export const addBackendBody = z
  .strictObject(
    { address, weight: weight.default(1), max_connections: maxConnections.default(0), backup: backup.default(false), proxy_protocol: proxy.optional() },
    jsonObject,
  )
  .meta({ id: "NewBackend", examples: [{ address: "10.0.0.4:3000", weight: 2 }, { address: "10.0.0.5:3000", max_connections: 100, backup: true, proxy_protocol: "v2" }] });
export type AddBackendBody = z.output<typeof addBackendBody>;

export const updateBackendBody = z
  .strictObject(
    {
      weight: weight.nullable().optional().meta({ description: "New weight; null clears the API's override (the owner's weight applies again)" }),
      state: z
        .enum(ADMIN_STATES, { error: `must be one of ${ADMIN_STATES.join(", ")}` })
        .optional()
        .meta({ description: "ready: takes connections; drain: no new connections, open ones continue; maint: as drain, health checks paused" }),
    },
    jsonObject,
  )
  .refine((b) => b.weight !== undefined || b.state !== undefined, { error: "give weight, state or both" })
  .meta({ id: "BackendUpdate", examples: [{ weight: 5 }, { state: "drain" }, { weight: null, state: "ready" }] });
export type UpdateBackendBody = z.output<typeof updateBackendBody>;

export const backendParams = z.strictObject({
  address: address.meta({ description: "URL-encoded host:port, e.g. 10.0.0.4:3000 or %5B::1%5D:80" }),
});
export type BackendParams = z.output<typeof backendParams>;

export const backend = z
  .strictObject({
    address: z.string().meta({ description: "Canonical host:port" }),
    weight: z.int(),
    healthy: z.boolean(),
    status: z.enum(["up", "down", "draining"]).meta({ description: "draining while the admin state is drain or maint, or discovery drains it" }),
    state: z.enum(ADMIN_STATES).meta({ description: "Admin state set through the API" }),
    max_connections: maxConnections,
    backup,
    proxy_protocol: proxyProtocol.nullable().meta({ description: "This backend's own PROXY protocol setting; null: the global proxy_protocol applies" }),
    slow_start_share: z.number().meta({ description: "Share of its weight it gets now, 0.1-1 (below 1 while slow start ramps it up)" }),
    source: z.enum(["static", "api", "docker", "kubernetes"]).meta({ description: "Who owns the backend; only api backends can be deleted" }),
    active_connections: z.int(),
    total_connections: z.number(),
    failed_connections: z.number().meta({ description: "Dials that failed (refused, timed out, reset)" }),
    bytes_in: z.number().meta({ description: "Bytes clients sent through to this backend (open connections' every 2 s)" }),
    bytes_out: z.number().meta({ description: "Bytes this backend sent back to clients (open connections' every 2 s)" }),
    last_checked_at: z.string().nullable().meta({ description: "Time of the last health probe (ISO 8601)" }),
    last_error: z.string().nullable(),
  })
  .meta({ id: "Backend" });
export type BackendJson = z.output<typeof backend>;

export const errorBody = z
  .strictObject({ error: z.string().meta({ description: "What is wrong, naming the offending field" }) })
  .meta({ id: "Error" });

export const reloadBody = z
  .strictObject({
    status: z.literal("reloaded"),
    applied: z.array(z.string()).meta({ description: "Config keys whose change was applied (top-level keys, and api.token or api.allow_unauthenticated)" }),
    need_restart: z.array(z.string()).meta({ description: "Changed keys left as they were: they need a restart (workers, data_path, api.listen, state_file, state_store, log.format)" }),
  })
  .meta({ id: "Reloaded" });

export const reloadErrorBody = z
  .strictObject({
    error: z.string(),
    problems: z.array(z.string()).meta({ description: "Every problem, each with its YAML path" }),
  })
  .meta({ id: "ReloadError" });

export const healthBody = z.strictObject({ status: z.enum(["ok", "draining"]) }).meta({ id: "Health" });

/** The pool's view of a backend in the API's snake_case JSON. */
export function toBackendJson(info: BackendInfo): BackendJson {
  return {
    address: info.address,
    weight: info.weight,
    healthy: info.healthy,
    status: info.status,
    source: info.source,
    active_connections: info.active,
    total_connections: info.total,
    failed_connections: info.failed,
    bytes_in: info.bytesIn,
    bytes_out: info.bytesOut,
    last_checked_at: info.lastCheckedAt?.toISOString() ?? null,
    last_error: info.lastError,
    state: info.state,
    max_connections: info.maxConnections,
    backup: info.backup,
    proxy_protocol: info.proxyProtocol ?? null,
    slow_start_share: info.share / SHARE_FULL,
  };
}

/**
 * One line naming every problem with a request's input, e.g.
 * `address: port must be 1-65535 (got "0")` or `unknown field "wieght"`.
 * `part` labels problems with the whole input ("body" or "path").
 */
export function describeInputError(error: z.ZodError, part: string): string {
  const problems = error.issues.map((issue) => {
    const at = issue.path.map(String).join(".");
    if (issue.code === "unrecognized_keys") {
      const fields = issue.keys.map((k) => `"${k}"`).join(", ");
      return `${at ? `${at}: ` : ""}unknown field${issue.keys.length > 1 ? "s" : ""} ${fields}`;
    }
    return `${at || part}: ${issue.message}`;
  });
  return problems.join("; ");
}
