import type { AddressInfo } from "node:net";
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Logger } from "pino";
import type { z } from "zod";
import type { ReloadResult } from "../config/reload.ts";
import type { Metrics } from "../metrics/metrics.ts";
import type { HostPort } from "../pool/address.ts";
import { listenErrorReason } from "../proxy/socket-errors.ts";
import { PoolError, type BackendPool } from "../pool/pool.ts";
import { BearerAuth } from "./auth.ts";
import type { BackendChanges } from "./changes.ts";
import { buildOpenApi } from "./openapi.ts";
import { Dashboard, PAGE_CSP } from "./dashboard/dashboard.ts";
import { PAGE_ROUTES, ROUTES, type RouteSpec } from "./routes.ts";
import { describeInputError, toBackendJson, type AddBackendBody, type BackendParams, type UpdateBackendBody } from "./schemas.ts";
import { StateFileError } from "../store/file.ts";
import { StoreOutcomeUnknownError, StoreUnavailableError } from "../store/store.ts";
import { ChangeConflictError } from "./change-flow.ts";

/** Limits that keep a slow or abusive client from holding the API (or the process). */
export interface ApiLimits {
  bodyBytes: number;
  /** Whole request (headers and body) must arrive within this. */
  requestTimeoutMs: number;
  /** A connection with no traffic either way is closed after this. */
  idleTimeoutMs: number;
  keepAliveTimeoutMs: number;
  /** How often Node looks for requests past requestTimeoutMs. */
  timeoutCheckMs: number;
  /** Concurrent API connections; more are refused so the data plane keeps its descriptors. */
  maxConnections: number;
}

export const DEFAULT_API_LIMITS: ApiLimits = {
  bodyBytes: 64 * 1024,
  requestTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  timeoutCheckMs: 1_000,
  maxConnections: 256,
};

export interface ApiServerOptions {
  listen: HostPort;
  token: string;
  pool: BackendPool;
  changes: BackendChanges;
  logger: Logger;
  /** True once graceful shutdown has begun: /health answers 503. */
  draining: () => boolean;
  /** POST /reload; without it /reload is not found. */
  reload?: () => Promise<ReloadResult>;
  /** Served at /metrics; without it /metrics is not found. */
  metrics?: Metrics;
  limits?: Partial<ApiLimits>;
}

/** A request input that fails its schema; the message names the field. */
class InputError extends Error {
  readonly statusCode = 400;
}

/**
 * The REST admin API (the seed's endpoints) on its own listener. Handlers only call the
 * pool and BackendChanges, which do no I/O on the connection path, so a slow API client
 * costs the data plane nothing but its socket.
 */
export class ApiServer {
  private readonly app: FastifyInstance;
  private readonly opts: ApiServerOptions;
  /** Replaced by setToken (a reload); read per request. */
  private auth: BearerAuth;
  private readonly limits: ApiLimits;
  private openapi: Record<string, unknown>;
  private readonly dashboard: Dashboard;

  constructor(opts: ApiServerOptions) {
    this.opts = opts;
    this.auth = new BearerAuth(opts.token);
    this.limits = { ...DEFAULT_API_LIMITS, ...opts.limits };
    this.openapi = buildOpenApi(ROUTES, { bearerAuth: this.auth.enabled });
    this.dashboard = new Dashboard({ pool: opts.pool, logger: opts.logger, ...(opts.metrics ? { metrics: opts.metrics } : {}) });
    const log = opts.logger.child({ component: "api" });
    this.app = Fastify({
      loggerInstance: log as FastifyBaseLogger,
      // The pool logs every change it makes; a line per request would drown them.
      logController: new LogController({ disableRequestLogging: true }),
      bodyLimit: this.limits.bodyBytes,
      requestTimeout: this.limits.requestTimeoutMs,
      connectionTimeout: this.limits.idleTimeoutMs,
      keepAliveTimeout: this.limits.keepAliveTimeoutMs,
      http: {
        headersTimeout: this.limits.requestTimeoutMs,
        connectionsCheckingInterval: this.limits.timeoutCheckMs,
      },
      forceCloseConnections: "idle",
      // Long enough for any host:port (a DNS name may be 253 characters).
      routerOptions: { maxParamLength: 300 },
      // Errors the router meets before any route runs, in the same {"error"} shape.
      frameworkErrors: (err: FastifyError, _request: FastifyRequest, reply: FastifyReply) => {
        const tooLong = err.code === "FST_ERR_MAX_PARAM_LENGTH";
        void reply.code(tooLong ? 414 : 400).send({ error: tooLong ? "address: too long for a host:port" : `bad path: ${err.message}` });
      },
    });
    this.app.server.maxConnections = this.limits.maxConnections;

    // JSON only (Fastify also parses text/plain by default), with parse errors that say
    // what is wrong. JSON.parse makes "__proto__" an ordinary key, which the strict
    // schemas then refuse as an unknown field.
    this.app.removeAllContentTypeParsers();
    this.app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
      // No body at all is for the route's schema to judge: fine for DELETE, "required" for POST.
      if (body === "") return done(null, undefined);
      try {
        done(null, JSON.parse(body as string));
      } catch (err) {
        done(new InputError(`body is not valid JSON: ${(err as Error).message}`), undefined);
      }
    });
    this.app.setValidatorCompiler(({ schema, httpPart }) => {
      const zod = schema as unknown as z.ZodType;
      const part = httpPart === "params" ? "path" : (httpPart ?? "input");
      return (data: unknown) => {
        const result = zod.safeParse(data, { reportInput: true });
        return result.success ? { value: result.data } : { error: new InputError(describeInputError(result.error, part)) };
      };
    });
    this.app.addHook("onRequest", async (request, reply) => {
      if ((request.routeOptions.config as { public?: boolean }).public) return;
      const refusal = this.auth.refusal(request.headers.authorization);
      if (refusal !== undefined) {
        reply.code(401).header("www-authenticate", 'Bearer realm="gobalancer"');
        throw Object.assign(new Error(refusal), { statusCode: 401 });
      }
    });
    this.app.setErrorHandler((err: FastifyError, request, reply) => {
      const { status, message } = describeError(err, request, this.limits.bodyBytes);
      // A shared store's failures are logged by the store (an outage once), not per request.
      if (status >= 500 && !(err instanceof StoreUnavailableError || err instanceof StoreOutcomeUnknownError)) log.error({ method: request.method, url: request.url, err: err.message }, "api request failed");
      void reply.code(status).send({ error: message });
    });
    this.app.setNotFoundHandler((request, reply) => {
      const path = request.url.split("?")[0]!;
      const allowed = allowedMethods(path);
      if (allowed.length > 0) {
        void reply.code(405).header("allow", allowed.join(", ")).send({ error: `method ${request.method} not allowed on ${path} (allowed: ${allowed.join(", ")})` });
      } else {
        void reply.code(404).send({ error: `no such endpoint: ${request.method} ${path}` });
      }
    });
    this.routes();
  }

  /**
   * A reload changed api.token: requests from now on need the new one ("" for none).
   * Requests already past the check are not affected.
   */
  setToken(token: string): void {
    this.auth = new BearerAuth(token);
    this.openapi = buildOpenApi(ROUTES, { bearerAuth: this.auth.enabled });
  }

  /** Binds `api.listen`; resolves with the bound address. */
  async listen(): Promise<AddressInfo> {
    const { host, port, key } = this.opts.listen;
    try {
      await this.app.listen({ host: host || "::", port, listenTextResolver: (address) => `api listening on ${address}` });
    } catch (err) {
      throw new Error(`api.listen ${key}: ${listenErrorReason(err as NodeJS.ErrnoException)}`, { cause: err });
    }
    this.dashboard.start();
    return this.app.server.address() as AddressInfo;
  }

  /** Finishes requests in flight (and their state writes), then closes. */
  async close(): Promise<void> {
    this.dashboard.stop();
    await this.app.close();
    await this.opts.changes.settled();
  }

  private routes(): void {
    const { pool, changes } = this.opts;
    this.route(ROUTES.health, async (_request, reply) => {
      const draining = this.opts.draining();
      return reply.code(draining ? 503 : 200).send({ status: draining ? "draining" : "ok" });
    });
    this.route(ROUTES.listBackends, async () => pool.list().map(toBackendJson));
    this.route<{ Body: AddBackendBody }>(ROUTES.addBackend, async (request, reply) => {
      const body = request.body;
      const info = await changes.add(body.address, body.weight, { maxConnections: body.max_connections, backup: body.backup, proxyProtocol: body.proxy_protocol });
      return reply
        .code(201)
        .header("location", `/backends/${encodeURIComponent(info.address)}`)
        .send(toBackendJson(info));
    });
    this.route<{ Params: BackendParams }>(ROUTES.getBackend, async (request) => {
      const info = pool.get(request.params.address.key);
      if (!info) throw new PoolError("not_found", `backend ${request.params.address.key} not found`);
      return toBackendJson(info);
    });
    this.route<{ Params: BackendParams; Body: UpdateBackendBody }>(ROUTES.updateBackend, async (request) => {
      return toBackendJson(await changes.update(request.params.address, request.body));
    });
    this.route<{ Params: BackendParams }>(ROUTES.deleteBackend, async (request, reply) => {
      await changes.remove(request.params.address);
      return reply.code(204).send();
    });
    const metrics = this.opts.metrics;
    if (metrics) {
      this.route(ROUTES.metrics, async (_request, reply) => {
        const { contentType, body } = await metrics.scrape();
        return reply.header("content-type", contentType).send(body);
      });
    }
    const reload = this.opts.reload;
    if (reload) {
      this.route(ROUTES.reload, async (_request, reply) => {
        const result = await reload();
        if (result.status === "reloaded") return { status: "reloaded", applied: result.applied, need_restart: result.needRestart };
        if (result.status === "invalid") return reply.code(400).send({ error: `${result.file}: invalid config; nothing changed`, problems: result.problems });
        return reply.code(result.reason === "shutting down" ? 503 : 400).send({ error: `reload refused, nothing changed: ${result.reason}`, problems: [result.reason] });
      });
    }
    this.route(ROUTES.openapi, async () => this.openapi);
    const dashboard = this.dashboard;
    this.route(PAGE_ROUTES.dashboard, async (_request, reply) => {
      const { contentType, body } = dashboard.page();
      return reply.header("content-type", contentType).header("content-security-policy", PAGE_CSP).header("cache-control", "no-cache").send(body);
    });
    this.route<{ Params: { file: string } }>(PAGE_ROUTES.dashboardAsset, async (request, reply) => {
      const asset = dashboard.asset(request.params.file);
      if (!asset) return reply.code(404).send({ error: `no such dashboard asset: ${request.params.file}` });
      return reply.header("content-type", asset.contentType).header("cache-control", "no-cache").send(asset.body);
    });
    this.route(PAGE_ROUTES.dashboardHistory, async () => dashboard.historyJson());
  }

  private route<T extends { Body?: unknown; Params?: unknown }>(
    spec: RouteSpec,
    handler: (request: FastifyRequest<T>, reply: FastifyReply) => Promise<unknown>,
  ): void {
    this.app.route<T>({
      method: spec.method,
      url: spec.url,
      config: { public: spec.public ?? false },
      schema: {
        ...(spec.params ? { params: spec.params } : {}),
        ...(spec.body ? { body: spec.body } : {}),
      },
      handler: handler as never,
    });
  }
}

const PATHS = Object.values(ROUTES as Record<string, RouteSpec>).map((r) => ({
  method: r.method,
  pattern: new RegExp(`^${r.url.replace(/[.]/g, "\\.").replace(/:\w+/g, "[^/]+")}/?$`),
}));

function allowedMethods(path: string): string[] {
  return PATHS.filter((p) => p.pattern.test(path)).map((p) => p.method);
}

/** Maps any error a request can meet to a status and a message naming the problem. */
function describeError(err: FastifyError, request: FastifyRequest, bodyLimit: number): { status: number; message: string } {
  if (err instanceof InputError) return { status: 400, message: err.message };
  if (err instanceof PoolError) return { status: err.kind === "not_found" ? 404 : 409, message: err.message };
  if (err instanceof ChangeConflictError) return { status: 409, message: err.message };
  if (err instanceof StateFileError) return { status: 500, message: err.message };
  if (err instanceof StoreUnavailableError) return { status: 503, message: err.message };
  // Not 503: the change may have been saved, and a client that took it for refused could
  // act on a state that is not etcd's.
  if (err instanceof StoreOutcomeUnknownError) return { status: 504, message: err.message };
  switch (err.code) {
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return { status: 415, message: `content-type must be application/json (got ${JSON.stringify(request.headers["content-type"] ?? "none")})` };
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return { status: 413, message: `body is too large: the limit is ${bodyLimit} bytes` };
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return { status: 400, message: "content-length does not match the body" };
  }
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) return { status, message: err.message };
  return { status: 500, message: "internal error" };
}
