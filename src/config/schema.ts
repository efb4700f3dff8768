import { isIP } from "node:net";
import { z } from "zod";
import { parseHostPort, type HostPort } from "../pool/address.ts";
import { PROXY_PROTOCOLS, type ProxyProtocol } from "../pool/backend.ts";
import { parseDuration } from "./duration.ts";

/**
 * The YAML config as users write it (snake_case, seed-compatible), validated and turned
 * into the typed Config the rest of the program uses. Defaults are applied here, once;
 * durations are parsed here, once. Unknown keys are errors so typos never pass silently.
 */

export const ALGORITHMS = ["round_robin", "least_connections", "weighted", "ip_hash"] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

export const MAX_WEIGHT = 1000;

const duration = () =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const ms = typeof value === "number" ? (value === 0 ? 0 : undefined) : parseDuration(value);
    if (ms === undefined) {
      ctx.issues.push({
        code: "custom",
        input: value,
        message: `must be a duration such as 250ms, 5s or 1m30s (got ${JSON.stringify(value)})`,
      });
      return z.NEVER;
    }
    return ms;
  });

const positiveDuration = () => duration().refine((ms) => ms > 0, { message: "must be greater than 0" });

const hostPort = (opts: { allowEmptyHost?: boolean; allowPortZero?: boolean }) =>
  z.string().transform((value, ctx): HostPort => {
    try {
      return parseHostPort(value, opts);
    } catch (err) {
      ctx.issues.push({ code: "custom", input: value, message: (err as Error).message });
      return z.NEVER;
    }
  });

export const backendAddress = hostPort({});
export const listenAddress = hostPort({ allowEmptyHost: true, allowPortZero: true });

export const weight = z
  .number({ error: `must be an integer 1-${MAX_WEIGHT}` })
  .int({ error: `must be an integer 1-${MAX_WEIGHT}` })
  .min(1, { error: `must be an integer 1-${MAX_WEIGHT}` })
  .max(MAX_WEIGHT, { error: `must be an integer 1-${MAX_WEIGHT}` });

/** "200-399", "200,204", "2xx"-free on purpose: explicit numbers and ranges only. */
const statusRanges = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const ranges: Array<[number, number]> = [];
  for (const part of String(value).split(",")) {
    const m = /^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$/.exec(part);
    const lo = m ? Number(m[1]) : NaN;
    const hi = m?.[2] ? Number(m[2]) : lo;
    if (!m || lo < 100 || hi > 599 || lo > hi) {
      ctx.issues.push({
        code: "custom",
        input: value,
        message: `must be status codes or ranges such as "200-399" or "200,204" (got ${JSON.stringify(value)})`,
      });
      return z.NEVER;
    }
    ranges.push([lo, hi]);
  }
  return ranges;
});

export const proxyProtocol = z.enum(PROXY_PROTOCOLS, { error: `must be one of ${PROXY_PROTOCOLS.join(", ")}` });

/** A backend's own connection limit: 0 = none. */
export const backendMaxConnections = z
  .number({ error: "must be a whole number of connections (0 = no limit)" })
  .int({ error: "must be a whole number of connections (0 = no limit)" })
  .min(0, { error: "must be a whole number of connections (0 = no limit)" })
  .max(1_000_000_000, { error: "must be at most 1000000000 (0 = no limit)" });

const staticBackend = z.strictObject({
  address: backendAddress,
  weight: weight.default(1),
  max_connections: backendMaxConnections.default(0),
  backup: z.boolean({ error: "must be true or false" }).default(false),
  /** Absent: the top-level proxy_protocol. */
  proxy_protocol: proxyProtocol.optional(),
});

/** "10.0.0.0/8", "2001:db8::/32" or a single address; kept as written once checked. */
const cidr = z.string().superRefine((value, ctx) => {
  const slash = value.indexOf("/");
  const ip = slash === -1 ? value : value.slice(0, slash);
  const family = isIP(ip);
  const bits = slash === -1 ? "" : value.slice(slash + 1);
  const max = family === 6 ? 128 : 32;
  if (family === 0 || (slash !== -1 && (!/^\d{1,3}$/.test(bits) || Number(bits) > max))) {
    ctx.issues.push({ code: "custom", input: value, message: `must be an IP address or a CIDR range such as "10.0.0.0/8" or "2001:db8::/32" (got ${JSON.stringify(value)})` });
  }
});

const etcdEndpoint = z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL such as "http://127.0.0.1:2379"' });

const rawConfig = z.strictObject({
  listen: listenAddress.prefault(":8080"),
  algorithm: z.enum(ALGORITHMS, { error: `must be one of ${ALGORITHMS.join(", ")}` }).default("round_robin"),
  retries: z.number().int().min(0).max(100).default(2),
  max_connections: z.number().int().min(0).default(0),
  workers: z
    .union([z.literal("auto"), z.number().int().min(1).max(256)], {
      error: 'must be a number of threads (1-256) or "auto"',
    })
    .default(1),
  data_path: z.enum(["auto", "handles", "sockets"], { error: "must be auto, handles or sockets" }).default("auto"),
  slow_start: duration().default(0),
  proxy_protocol: proxyProtocol.default("off"),
  listen_proxy_protocol: z
    .strictObject({
      enabled: z.boolean().default(false),
      trusted: z.array(cidr).default([]),
      timeout: positiveDuration().default(3000),
    })
    .prefault({})
    .superRefine((p, ctx) => {
      if (p.enabled && p.trusted.length === 0) {
        ctx.issues.push({
          code: "custom",
          input: p.trusted,
          path: ["trusted"],
          message: 'must list the upstream balancers\' addresses when enabled (e.g. ["10.0.0.0/8"]; "0.0.0.0/0" and "::/0" trust every source)',
        });
      }
    }),
  timeouts: z
    .strictObject({
      connect: positiveDuration().default(3000),
      idle: duration().default(600_000),
      shutdown: duration().default(30_000),
      queue: duration().default(0),
    })
    .prefault({}),
  health_check: z
    .strictObject({
      type: z.enum(["tcp", "http"], { error: "must be tcp or http" }).default("tcp"),
      interval: positiveDuration().default(5000),
      timeout: positiveDuration().default(2000),
      rise: z.number().int().min(1).max(100).default(2),
      fall: z.number().int().min(1).max(100).default(3),
      http: z
        .strictObject({
          path: z.string().startsWith("/", { error: 'must start with "/"' }).default("/health"),
          expect_status: statusRanges.default([[200, 399]]),
          host: z.string().default(""),
        })
        .prefault({}),
    })
    .prefault({}),
  api: z
    .strictObject({
      listen: listenAddress.prefault("127.0.0.1:8081"),
      token: z.string().default(""),
      allow_unauthenticated: z.boolean().default(false),
    })
    .prefault({}),
  state_file: z.string().min(1).default("data/state.json"),
  state_store: z
    .strictObject({
      type: z.enum(["file", "etcd"], { error: "must be file or etcd" }).default("file"),
      etcd: z
        .strictObject({
          endpoints: z.array(etcdEndpoint).min(1, { error: "must list at least one endpoint" }).default(["http://127.0.0.1:2379"]),
          prefix: z.string().min(1, { error: 'must not be empty (e.g. "/gobalancer/")' }).default("/gobalancer/"),
          username: z.string().default(""),
          password: z.string().default(""),
        })
        .prefault({}),
    })
    .prefault({}),
  access_log: z
    .strictObject({
      enabled: z.boolean().default(false),
      path: z.string().min(1, { error: 'must be "stdout" or a file path' }).default("stdout"),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(["debug", "info", "warn", "error"]).default("info"),
      format: z.enum(["json", "pretty"]).default("json"),
    })
    .prefault({}),
  discovery: z
    .strictObject({
      type: z.enum(["static", "docker", "kubernetes"], { error: "must be static, docker or kubernetes" }).default("static"),
      backends: z.array(staticBackend).default([]),
      docker: z
        .strictObject({
          host: z.string().default(""),
          label: z.string().min(1).default("lb.enable"),
          network: z.string().default(""),
        })
        .prefault({}),
      kubernetes: z
        .strictObject({
          namespace: z.string().min(1).default("default"),
          service: z.string().default(""),
          port: z.union([z.string(), z.number().int().min(1).max(65535)]).transform(String).default(""),
        })
        .prefault({}),
    })
    .prefault({})
    .superRefine((d, ctx) => {
      const seen = new Map<string, number>();
      d.backends.forEach((b, i) => {
        const first = seen.get(b.address.key);
        if (first !== undefined) {
          ctx.issues.push({
            code: "custom",
            input: b.address.key,
            path: ["backends", i, "address"],
            message: `duplicate of discovery.backends[${first}] (${b.address.key})`,
          });
        }
        seen.set(b.address.key, i);
      });
      if (d.type === "kubernetes" && d.kubernetes.service === "") {
        ctx.issues.push({ code: "custom", input: "", path: ["kubernetes", "service"], message: "is required when discovery.type is kubernetes" });
      }
    }),
});

export type RawConfig = z.input<typeof rawConfig>;

/** Every key the config file may use, at any depth (for "did you mean" hints). */
export function configKeys(): Set<string> {
  const keys = new Set<string>();
  const visit = (schema: z.core.$ZodType): void => {
    const def = schema._zod.def as unknown as Record<string, unknown> & { type: string };
    if (def.type === "object") {
      for (const [key, child] of Object.entries(def.shape as Record<string, z.core.$ZodType>)) {
        keys.add(key);
        visit(child);
      }
    }
    for (const field of ["innerType", "in", "element"]) {
      const child = def[field];
      if (child && typeof child === "object" && "_zod" in child) visit(child as z.core.$ZodType);
    }
  };
  visit(rawConfig);
  return keys;
}

/** The validated configuration, with durations in milliseconds and addresses parsed. */
export interface Config {
  listen: HostPort;
  algorithm: Algorithm;
  retries: number;
  maxConnections: number;
  workers: number | "auto";
  /** How the data path talks to sockets: bare libuv handles, net.Socket, or handles when available. */
  dataPath: "auto" | "handles" | "sockets";
  timeouts: { connectMs: number; idleMs: number; shutdownMs: number; queueMs: number };
  /** Ramp time for backends that join or come back up; 0 = off. */
  slowStartMs: number;
  /** PROXY protocol header sent to backends that do not set their own. */
  proxyProtocol: ProxyProtocol;
  /** PROXY protocol headers accepted from trusted upstream balancers. */
  listenProxyProtocol: ListenProxyProtocol;
  healthCheck: {
    type: "tcp" | "http";
    intervalMs: number;
    timeoutMs: number;
    rise: number;
    fall: number;
    http: { path: string; expectStatus: ReadonlyArray<readonly [number, number]>; host: string };
  };
  api: { listen: HostPort; token: string; allowUnauthenticated: boolean };
  stateFile: string;
  stateStore: { type: "file" | "etcd"; etcd: { endpoints: string[]; prefix: string; username: string; password: string } };
  /** One JSON line per finished connection, to stdout or a file (path "stdout" or a file). */
  accessLog: { enabled: boolean; path: string };
  log: { level: "debug" | "info" | "warn" | "error"; format: "json" | "pretty" };
  discovery: {
    type: "static" | "docker" | "kubernetes";
    backends: StaticBackend[];
    docker: { host: string; label: string; network: string };
    kubernetes: { namespace: string; service: string; port: string };
  };
}

export interface StaticBackend {
  address: HostPort;
  weight: number;
  maxConnections: number;
  backup: boolean;
  /** undefined: the top-level proxy_protocol. */
  proxyProtocol: ProxyProtocol | undefined;
}

export interface ListenProxyProtocol {
  enabled: boolean;
  /** Addresses and CIDR ranges (validated) a header is accepted from. */
  trusted: string[];
  timeoutMs: number;
}

export const configSchema = rawConfig.transform(
  (c): Config => ({
    listen: c.listen,
    algorithm: c.algorithm,
    retries: c.retries,
    maxConnections: c.max_connections,
    workers: c.workers,
    dataPath: c.data_path,
    timeouts: { connectMs: c.timeouts.connect, idleMs: c.timeouts.idle, shutdownMs: c.timeouts.shutdown, queueMs: c.timeouts.queue },
    slowStartMs: c.slow_start,
    proxyProtocol: c.proxy_protocol,
    listenProxyProtocol: { enabled: c.listen_proxy_protocol.enabled, trusted: c.listen_proxy_protocol.trusted, timeoutMs: c.listen_proxy_protocol.timeout },
    healthCheck: {
      type: c.health_check.type,
      intervalMs: c.health_check.interval,
      timeoutMs: c.health_check.timeout,
      rise: c.health_check.rise,
      fall: c.health_check.fall,
      http: {
        path: c.health_check.http.path,
        expectStatus: c.health_check.http.expect_status,
        host: c.health_check.http.host,
      },
    },
    api: { listen: c.api.listen, token: c.api.token, allowUnauthenticated: c.api.allow_unauthenticated },
    stateFile: c.state_file,
    stateStore: c.state_store,
    accessLog: c.access_log,
    log: c.log,
    discovery: {
      ...c.discovery,
      backends: c.discovery.backends.map((b) => ({
        address: b.address,
        weight: b.weight,
        maxConnections: b.max_connections,
        backup: b.backup,
        proxyProtocol: b.proxy_protocol,
      })),
    },
  }),
);
