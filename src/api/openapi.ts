import { z } from "zod";
import type { RouteSpec } from "./routes.ts";

type JsonObject = Record<string, unknown>;

/**
 * The OpenAPI 3.1 document for `routes`, built from the very zod schemas that validate
 * requests. Schemas with a `meta({ id })` become named components.
 */
export function buildOpenApi(routes: Readonly<Record<string, RouteSpec>>, opts: { bearerAuth: boolean }): JsonObject {
  const components: Record<string, unknown> = {};
  const toSchema = (schema: z.ZodType, io: "input" | "output"): JsonObject => {
    const json = z.toJSONSchema(schema, { io, target: "draft-2020-12", unrepresentable: "any" }) as JsonObject;
    delete json.$schema;
    const defs = json.$defs as Record<string, unknown> | undefined;
    delete json.$defs;
    for (const [id, def] of Object.entries(defs ?? {})) components[id] = relink(def);
    return relink(json) as JsonObject;
  };

  const paths: Record<string, Record<string, unknown>> = {};
  for (const [name, route] of Object.entries(routes)) {
    const path = route.url.replace(/:(\w+)/g, "{$1}");
    const operation: JsonObject = { summary: route.summary, operationId: name };
    if (route.params) {
      const params = toSchema(route.params, "input");
      const properties = (params.properties ?? {}) as Record<string, JsonObject>;
      operation.parameters = Object.entries(properties).map(([name, schema]) => {
        const { description, ...rest } = schema;
        return { name, in: "path", required: true, description, schema: rest };
      });
    }
    if (route.body) {
      operation.requestBody = { required: true, content: { "application/json": { schema: toSchema(route.body, "input") } } };
    }
    operation.responses = Object.fromEntries(
      Object.entries(route.responses).map(([status, r]) => [
        status,
        r.schema ? { description: r.description, content: { "application/json": { schema: toSchema(r.schema, "output") } } } : { description: r.description },
      ]),
    );
    if (route.public || !opts.bearerAuth) operation.security = [];
    (paths[path] ??= {})[route.method.toLowerCase()] = operation;
  }

  return {
    openapi: "3.1.0",
    info: {
      title: "GoBalancer admin API",
      version: "1.0.0",
      description: "Manage a running GoBalancer: list backends, add and remove them, change weights and admin states (ready, drain, maint), reload the config file. Backend changes apply to the next client connection and persist to the state store (state_file or etcd).",
    },
    ...(opts.bearerAuth ? { security: [{ bearerAuth: [] }] } : {}),
    paths,
    components: {
      schemas: components,
      securitySchemes: { bearerAuth: { type: "http", scheme: "bearer", description: "api.token or GOBALANCER_API_TOKEN" } },
    },
  };
}

/** zod refers to named schemas under `#/$defs/`; OpenAPI keeps them in components. */
function relink(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value).replaceAll('"#/$defs/', '"#/components/schemas/'));
}
