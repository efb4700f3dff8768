import { z } from "zod";
import { addBackendBody, backend, backendParams, errorBody, healthBody, reloadBody, reloadErrorBody, updateBackendBody } from "./schemas.ts";

/**
 * The API's endpoints as data: method, path, input schemas and documented responses.
 * server.ts registers a handler for each (validating with these schemas) and openapi.ts
 * documents them from the same table, so the document cannot drift from the code.
 */
export interface RouteSpec {
  readonly method: "GET" | "POST" | "PUT" | "DELETE";
  /** Fastify syntax: `/backends/:address`. */
  readonly url: string;
  readonly summary: string;
  /** Served without a bearer token. */
  readonly public?: boolean;
  readonly params?: z.ZodType;
  readonly body?: z.ZodType;
  readonly responses: Readonly<Record<number, { readonly description: string; readonly schema?: z.ZodType }>>;
}

const unauthorized = { description: "Missing or wrong bearer token", schema: errorBody };
const badRequest = { description: "Invalid input; the message names the field", schema: errorBody };
const notFound = { description: "No backend at that address", schema: errorBody };
const tooLong = { description: "Address in the path longer than any host:port", schema: errorBody };
const saveFailed = { description: "The state file could not be written; the change was undone", schema: errorBody };
const storeUnavailable = { description: "The shared state store (etcd) could not be reached or refused the change; nothing was changed", schema: errorBody };
const outcomeUnknown = {
  description:
    "With a shared state store (etcd): the change was sent and etcd never said whether it committed it; it may apply. Once etcd answers, GET /backends/{address} shows which",
  schema: errorBody,
};

export const ROUTES = {
  health: {
    method: "GET",
    url: "/health",
    summary: "Liveness of the balancer",
    public: true,
    responses: {
      200: { description: "Serving", schema: healthBody },
      503: { description: "Shutting down: draining connections", schema: healthBody },
    },
  },
  listBackends: {
    method: "GET",
    url: "/backends",
    summary: "List every backend with its status and counters",
    responses: { 200: { description: "All backends", schema: z.array(backend) }, 401: unauthorized },
  },
  addBackend: {
    method: "POST",
    url: "/backends",
    summary: "Add a backend (owned by the API, persisted to the state store)",
    body: addBackendBody,
    responses: {
      201: { description: "Added; takes traffic from the next connection", schema: backend },
      400: badRequest,
      401: unauthorized,
      409: { description: "A backend with that address already exists", schema: errorBody },
      413: { description: "Body larger than 64 KiB", schema: errorBody },
      415: { description: "Body is not application/json", schema: errorBody },
      500: saveFailed,
      503: storeUnavailable,
      504: outcomeUnknown,
    },
  },
  getBackend: {
    method: "GET",
    url: "/backends/:address",
    summary: "One backend",
    params: backendParams,
    responses: { 200: { description: "The backend", schema: backend }, 400: badRequest, 401: unauthorized, 404: notFound, 414: tooLong },
  },
  updateBackend: {
    method: "PUT",
    url: "/backends/:address",
    summary: "Change a backend's weight or admin state (any source; persisted to the state store)",
    params: backendParams,
    body: updateBackendBody,
    responses: {
      200: { description: "Updated; applies from the next connection", schema: backend },
      400: badRequest,
      401: unauthorized,
      404: notFound,
      409: { description: "With a shared state store: other replicas kept changing this backend meanwhile; try again", schema: errorBody },
      413: { description: "Body larger than 64 KiB", schema: errorBody },
      414: tooLong,
      415: { description: "Body is not application/json", schema: errorBody },
      500: saveFailed,
      503: storeUnavailable,
      504: outcomeUnknown,
    },
  },
  deleteBackend: {
    method: "DELETE",
    url: "/backends/:address",
    summary: "Remove a backend added through the API; open connections to it finish normally",
    params: backendParams,
    responses: {
      204: { description: "Removed; no new connections go to it" },
      400: badRequest,
      401: unauthorized,
      404: notFound,
      409: { description: "Owned by static config or discovery; remove it there", schema: errorBody },
      414: tooLong,
      500: saveFailed,
      503: storeUnavailable,
      504: outcomeUnknown,
    },
  },
  reload: {
    method: "POST",
    url: "/reload",
    summary: "Read the config file again and apply what changed (as SIGHUP does); open connections are never cut",
    responses: {
      200: { description: "Applied; settings that need a restart are named and were left as they were", schema: reloadBody },
      400: { description: "Invalid config, or it could not be applied: nothing changed; every problem listed", schema: reloadErrorBody },
      401: unauthorized,
      503: { description: "Shutting down", schema: reloadErrorBody },
    },
  },
  metrics: {
    method: "GET",
    url: "/metrics",
    summary: "Prometheus metrics (text format), summed over every data-plane thread",
    responses: { 200: { description: "Prometheus text exposition format 0.0.4" }, 401: unauthorized },
  },
  openapi: {
    method: "GET",
    url: "/openapi.json",
    summary: "This API's OpenAPI 3.1 document",
    responses: { 200: { description: "OpenAPI document" }, 401: unauthorized },
  },
} as const satisfies Record<string, RouteSpec>;

export type RouteName = keyof typeof ROUTES;

/**
 * The dashboard page, its assets and its chart history. Served like ROUTES but left out
 * of the OpenAPI document: a page for people, not part of the API's contract. The page
 * and assets are public so the page can ask for the token; the history is not.
 */
export const PAGE_ROUTES = {
  dashboard: {
    method: "GET",
    url: "/",
    summary: "The dashboard page",
    public: true,
    responses: { 200: { description: "HTML page" } },
  },
  dashboardAsset: {
    method: "GET",
    url: "/dashboard/assets/:file",
    summary: "The dashboard's scripts and styles (uPlot from node_modules, and ours)",
    public: true,
    responses: { 200: { description: "JavaScript or CSS" }, 404: notFound },
  },
  dashboardHistory: {
    method: "GET",
    url: "/dashboard/history.json",
    summary: "Connection and byte counters sampled every 5 s over the last 15 minutes",
    responses: { 200: { description: "Samples, oldest first" }, 401: unauthorized },
  },
} as const satisfies Record<string, RouteSpec>;
