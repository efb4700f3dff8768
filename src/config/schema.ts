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

/**
 * A field's documentation, which the README's configuration reference is generated from
 * (reference.ts): what it is for, and its default as a user writes it where that differs
 * from the parsed value (durations, addresses).
 */
function doc(description: string | undefined, written?: string): { description?: string; written?: string } {
  return { ...(description !== undefined ? { description } : {}), ...(written !== undefined ? { written } : {}) };
}

export const proxyProtocol = z.enum(PROXY_PROTOCOLS, { error: `must be one of ${PROXY_PROTOCOLS.join(", ")}` });

/** A backend's own connection limit: 0 = none. */
export const backendMaxConnections = z
  .number({ error: "must be a whole number of connections (0 = no limit)" })
  .int({ error: "must be a whole number of connections (0 = no limit)" })
  .min(0, { error: "must be a whole number of connections (0 = no limit)" })
  .max(1_000_000_000, { error: "must be at most 1000000000 (0 = no limit)" });

const staticBackend = z.strictObject({
  address: backendAddress.meta(doc("required: host:port, host an IPv4, [IPv6] or DNS name", '"10.0.0.4:3000"')),
  weight: weight.default(1).meta(doc("integer 1-1000")),
  max_connections: backendMaxConnections.default(0).meta(doc("most connections open to it at once; 0 = no limit")),
  backup: z.boolean({ error: "must be true or false" }).default(false).meta(doc("true: used only while no other backend is routable")),
  proxy_protocol: proxyProtocol.optional().meta(doc("optional: overrides the top-level proxy_protocol for it", "v2")),
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
  listen: listenAddress.prefault(":8080").meta(doc("where clients connect (TCP); \":8080\" = every interface", "\":8080\"")),
  algorithm: z.enum(ALGORITHMS, { error: `must be one of ${ALGORITHMS.join(", ")}` }).default("round_robin").meta(doc("round_robin | least_connections | weighted | ip_hash")),
  retries: z.number().int().min(0).max(100).default(2).meta(doc("other backends tried when a dial fails, per connection")),
  max_connections: z.number().int().min(0).default(0).meta(doc("0 = unlimited; past it new clients are refused and counted")),
  workers: z
    .union([z.literal("auto"), z.number().int().min(1).max(256)], {
      error: 'must be a number of threads (1-256) or "auto"',
    })
    .default(1).meta(doc("data-plane threads; \"auto\" = one per core")),
  data_path: z.enum(["auto", "handles", "sockets"], { error: "must be auto, handles or sockets" }).default("auto").meta(doc("auto | handles | sockets (see \"How connections are handled\")")),
  slow_start: duration().default(0).meta(doc("ramp a joining or returning backend's share over this time; 0s = off", "0s")),
  proxy_protocol: proxyProtocol.default("off").meta(doc("off | v1 | v2: PROXY header sent to backends (see \"Operations\")")),
  listen_proxy_protocol: z
    .strictObject({
      enabled: z.boolean().default(false).meta(doc("clients must open with a PROXY header")),
      trusted: z.array(cidr).default([]).meta(doc("sources whose header is believed: [\"10.0.0.0/8\", \"2001:db8::/32\"]")),
      timeout: positiveDuration().default(3000).meta(doc("a header not complete by then: the client is closed and counted", "3s")),
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
    }).meta(doc("PROXY headers from upstream balancers (see \"Operations\")")),
  timeouts: z
    .strictObject({
      connect: positiveDuration().default(3000).meta(doc("dial timeout to a backend", "3s")),
      idle: duration().default(600_000).meta(doc("close a proxied connection with no traffic either way; 0 = never\n(checked every idle/8: closed within 1.125 × idle of its last byte)", "10m")),
      shutdown: duration().default(30_000).meta(doc("graceful drain limit, then remaining connections are closed", "30s")),
      queue: duration().default(0).meta(doc("how long a client may wait when every backend is at its\nmax_connections; 0s = refused at once", "0s")),
    })
    .prefault({}).meta(doc("how long each step may take")),
  health_check: z
    .strictObject({
      type: z.enum(["tcp", "http"], { error: "must be tcp or http" }).default("tcp").meta(doc("tcp | http")),
      interval: positiveDuration().default(5000).meta(doc("between two probes of a backend (each slightly jittered)", "5s")),
      timeout: positiveDuration().default(2000).meta(doc("a probe not answered by then fails", "2s")),
      rise: z.number().int().min(1).max(100).default(2).meta(doc("consecutive successes to bring a backend back")),
      fall: z.number().int().min(1).max(100).default(3).meta(doc("consecutive failures to take it out")),
      http: z
        .strictObject({
          path: z.string().startsWith("/", { error: 'must start with "/"' }).default("/health").meta(doc("the path a probe GETs")),
          expect_status: statusRanges.default([[200, 399]]).meta(doc("codes and ranges: \"200\", \"200,204\", \"200-299,404\"", "\"200-399\"")),
          host: z.string().default("").meta(doc("Host header; default the backend address")),
        })
        .prefault({}).meta(doc("used when type is http")),
    })
    .prefault({}).meta(doc("active probes of every backend (see \"Health checking\")")),
  api: z
    .strictObject({
      listen: listenAddress.prefault("127.0.0.1:8081").meta(doc("where the API and dashboard listen", "\"127.0.0.1:8081\"")),
      token: z.string().default("").meta(doc("bearer token; also from env GOBALANCER_API_TOKEN")),
      allow_unauthenticated: z.boolean().default(false).meta(doc("true: start without a token on a non-loopback listen")),
    })
    .prefault({}).meta(doc("the REST admin API (see \"API\")")),
  state_file: z.string().min(1).default("data/state.json").meta(doc("where API changes persist across restarts (state_store: file)")),
  state_store: z
    .strictObject({
      type: z.enum(["file", "etcd"], { error: "must be file or etcd" }).default("file").meta(doc("file | etcd")),
      etcd: z
        .strictObject({
          endpoints: z.array(etcdEndpoint).min(1, { error: "must list at least one endpoint" }).default(["http://127.0.0.1:2379"]).meta(doc("the etcd cluster's client URLs", '["http://127.0.0.1:2379"]')),
          prefix: z.string().min(1, { error: 'must not be empty (e.g. "/gobalancer/")' }).default("/gobalancer/").meta(doc("every key GoBalancer writes is under it")),
          username: z.string().default("").meta(doc("etcd authentication; \"\" = none")),
          password: z.string().default("").meta(doc("with username")),
          tls: z
            .strictObject({
              ca_file: z.string().default("").meta(doc("PEM CA certificates the members' certificates are checked against; \"\" = Node's list")),
              cert_file: z.string().default("").meta(doc("PEM client certificate, for members that require one (--client-cert-auth)")),
              key_file: z.string().default("").meta(doc("its PEM private key")),
            })
            .prefault({}).meta(doc("for https:// endpoints")),
        })
        .superRefine((etcd, ctx) => {
          // Endpoints that are not URLs at all have their own issue already.
          const schemes = new Set(etcd.endpoints.map((e) => /^(https?):\/\//i.exec(e)?.[1]!.toLowerCase()).filter((scheme) => scheme !== undefined));
          if (schemes.size > 1) ctx.issues.push({ code: "custom", input: etcd.endpoints, path: ["endpoints"], message: "must be all http:// or all https:// (one connection setting serves every member)" });
          const { ca_file, cert_file, key_file } = etcd.tls;
          if ((cert_file === "") !== (key_file === "")) ctx.issues.push({ code: "custom", input: etcd.tls, path: ["tls"], message: "cert_file and key_file go together: set both or neither" });
          if ((ca_file !== "" || cert_file !== "") && schemes.has("http")) ctx.issues.push({ code: "custom", input: etcd.tls, path: ["tls"], message: "is for https:// endpoints; these are http://" });
        })
        .prefault({}).meta(doc("used when type is etcd")),
    })
    .prefault({}).meta(doc("where API changes live: file (state_file) or etcd, shared by replicas")),
  access_log: z
    .strictObject({
      enabled: z.boolean().default(false).meta(doc("true: every finished connection is logged")),
      path: z.string().min(1, { error: 'must be "stdout" or a file path' }).default("stdout").meta(doc("stdout, or a file appended to (its directory must exist)")),
    })
    .prefault({}).meta(doc("one JSON line per finished connection (see \"Access log\")")),
  log: z
    .strictObject({
      level: z.enum(["debug", "info", "warn", "error"]).default("info").meta(doc("debug | info | warn | error")),
      format: z.enum(["json", "pretty"]).default("json").meta(doc("json | pretty")),
    })
    .prefault({}).meta(doc("GoBalancer's own log (see \"Logs\")")),
  discovery: z
    .strictObject({
      type: z.enum(["static", "docker", "kubernetes"], { error: "must be static, docker or kubernetes" }).default("static").meta(doc("static | docker | kubernetes")),
      backends: z.array(staticBackend).default([]).meta(doc("static only")),
      docker: z
        .strictObject({
          host: z.string().default("").meta(doc("default: DOCKER_HOST, else /var/run/docker.sock")),
          label: z.string().min(1).default("lb.enable").meta(doc("containers with <label>=true are backends")),
          network: z.string().default("").meta(doc("which container network's IP to use when several")),
        })
        .prefault({}).meta(doc("docker only")),
      kubernetes: z
        .strictObject({
          namespace: z.string().min(1).default("default").meta(doc("the Service's namespace")),
          service: z.string().default("").meta(doc("required with discovery.type kubernetes")),
          port: z.union([z.string(), z.number().int().min(1).max(65535)]).transform(String).default("").meta(doc("port name or number when the Service has several")),
        })
        .prefault({}).meta(doc("kubernetes only")),
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
    }).meta(doc("where backends come from")),
});

export type RawConfig = z.input<typeof rawConfig>;

/** The config file's top-level fields, for the generated reference (reference.ts). */
export function configSchemaShape(): Record<string, z.core.$ZodType> {
  return rawConfig.shape;
}

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
  stateStore: {
    type: "file" | "etcd";
    etcd: { endpoints: string[]; prefix: string; username: string; password: string; tls: { caFile: string; certFile: string; keyFile: string } };
  };
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
    stateStore: {
      type: c.state_store.type,
      etcd: { ...c.state_store.etcd, tls: { caFile: c.state_store.etcd.tls.ca_file, certFile: c.state_store.etcd.tls.cert_file, keyFile: c.state_store.etcd.tls.key_file } },
    },
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
