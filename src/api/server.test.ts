import assert from "node:assert/strict";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import pino from "pino";
import { parseHostPort } from "../pool/address.ts";
import { CounterTable } from "../pool/counters.ts";
import { BackendPool } from "../pool/pool.ts";
import { BackendChanges } from "./changes.ts";
import { ROUTES } from "./routes.ts";
import { backend } from "./schemas.ts";
import { ApiServer } from "./server.ts";
import { EMPTY_STATE, type PersistedState, type StateStore } from "../store/store.ts";

const logger = pino({ level: "silent" });

interface JsonSchemaLike {
  additionalProperties?: boolean;
  required: string[];
  properties: Record<string, { minimum?: number; maximum?: number; type?: string; enum?: string[]; anyOf?: Array<{ type?: string; minimum?: number; maximum?: number }> }>;
}
interface OpenApiDoc {
  openapi: string;
  security: unknown;
  paths: Record<string, Record<string, { operationId: string; responses: Record<string, unknown>; security?: unknown; parameters: Array<{ in: string }> }>>;
  components: { schemas: Record<string, JsonSchemaLike> };
}

class MemoryStore implements StateStore {
  readonly path = "/memory/state.json";
  last: PersistedState = EMPTY_STATE;
  async read(): Promise<PersistedState> {
    return EMPTY_STATE;
  }
  async write(state: PersistedState): Promise<void> {
    this.last = state;
  }
}

async function startApi(opts: { token?: string; limits?: ConstructorParameters<typeof ApiServer>[0]["limits"] } = {}) {
  const pool = new BackendPool({ logger, counters: new CounterTable(1) });
  const store = new MemoryStore();
  const changes = new BackendChanges({ pool, store, logger });
  await changes.restore();
  const server = new ApiServer({
    listen: parseHostPort("127.0.0.1:0", { allowPortZero: true }),
    token: opts.token ?? "",
    pool,
    changes,
    logger,
    draining: () => false,
    limits: opts.limits,
  });
  const address = await server.listen();
  return { pool, store, server, port: address.port, url: `http://127.0.0.1:${address.port}` };
}

/** Resolves with how long the server took to close a connection that sends `bytes` and stalls. */
function stall(port: number, bytes: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = net.connect(port, "127.0.0.1", () => socket.write(bytes));
    socket.on("error", () => {});
    socket.resume(); // read (and discard) the 408, so the server's close is seen
    socket.on("close", () => resolve(performance.now() - started));
    socket.setTimeout(5000, () => {
      socket.destroy();
      reject(new Error("the server kept a stalled connection open for 5 s"));
    });
  });
}

describe("ApiServer limits", () => {
  let api: Awaited<ReturnType<typeof startApi>>;
  before(async () => {
    api = await startApi({ limits: { requestTimeoutMs: 400, idleTimeoutMs: 600, keepAliveTimeoutMs: 300, timeoutCheckMs: 100, maxConnections: 4 } });
  });
  after(() => api.server.close());

  it("drops a client that sends its headers too slowly", async () => {
    const took = await stall(api.port, "GET /backends HTTP/1.1\r\nHost: x\r\n");
    assert.ok(took >= 300 && took < 2000, `closed after ${took} ms`);
  });

  it("drops a client that never finishes its body", async () => {
    const took = await stall(api.port, 'POST /backends HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"addr');
    assert.ok(took >= 300 && took < 2000, `closed after ${took} ms`);
    assert.equal(api.pool.size, 0);
  });

  it("drops a connection that opens and says nothing", async () => {
    const took = await stall(api.port, "");
    assert.ok(took < 2000, `closed after ${took} ms`);
  });

  it("caps concurrent connections, and serves again once they close", async () => {
    const held = await Promise.all(
      Array.from({ length: 4 }, () => new Promise<net.Socket>((resolve) => {
        const s = net.connect(api.port, "127.0.0.1", () => resolve(s));
        s.on("error", () => {});
      })),
    );
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(api.port, "127.0.0.1");
      s.on("error", () => resolve(true));
      s.on("close", () => resolve(true));
      s.on("data", () => resolve(false));
      s.on("connect", () => s.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    });
    assert.ok(refused);
    for (const s of held) s.destroy();
    const deadline = Date.now() + 2000;
    for (;;) {
      try {
        assert.equal((await fetch(`${api.url}/health`)).status, 200);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  });
});

describe("ApiServer responses", () => {
  let api: Awaited<ReturnType<typeof startApi>>;
  before(async () => {
    api = await startApi({ token: "t0ken" });
  });
  after(() => api.server.close());
  const auth = { authorization: "Bearer t0ken" };

  it("answers with the documented Backend shape", async () => {
    const res = await fetch(`${api.url}/backends`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ address: "Example.COM.:8080" }),
    });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("location"), "/backends/example.com%3A8080");
    const body = backend.parse(await res.json());
    assert.equal(body.address, "example.com:8080");
    assert.deepEqual(api.store.last.backends.map((b) => b.address.key), ["example.com:8080"]);
    const list = await (await fetch(`${api.url}/backends`, { headers: auth })).json();
    assert.deepEqual(list, [body]);
  });

  it("needs the token everywhere but /health, even for unknown paths", async () => {
    assert.equal((await fetch(`${api.url}/health`)).status, 200);
    for (const path of ["/backends", "/openapi.json", "/backends/1.2.3.4:5", "/nothing"]) {
      const res = await fetch(`${api.url}${path}`);
      assert.equal(res.status, 401, path);
      assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="gobalancer"');
      assert.match(((await res.json()) as { error: string }).error, /missing bearer token/);
    }
  });

  it("serves an OpenAPI document that covers every route", async () => {
    const doc = (await (await fetch(`${api.url}/openapi.json`, { headers: auth })).json()) as OpenApiDoc;
    assert.equal(doc.openapi, "3.1.0");
    for (const [name, route] of Object.entries(ROUTES)) {
      const op = doc.paths[route.url.replace(/:(\w+)/g, "{$1}")]?.[route.method.toLowerCase()];
      assert.ok(op, `${route.method} ${route.url} documented`);
      assert.equal(op.operationId, name);
      assert.deepEqual(Object.keys(op.responses).map(Number).sort(), Object.keys(route.responses).map(Number).sort());
    }
    const schemas = doc.components.schemas;
    assert.deepEqual(Object.keys(schemas).sort(), ["Backend", "BackendUpdate", "Error", "Health", "NewBackend", "ReloadError", "Reloaded"]);
    assert.equal(schemas.NewBackend.additionalProperties, false);
    assert.deepEqual(schemas.NewBackend.required, ["address"]);
    // The weight is 1-1000, or null (clears an override).
    const weightSchema = schemas.BackendUpdate.properties.weight;
    const integer = weightSchema.anyOf?.find((s) => s.type === "integer") ?? weightSchema;
    assert.deepEqual([integer.minimum, integer.maximum], [1, 1000]);
    assert.ok(weightSchema.anyOf?.some((s) => s.type === "null"), "weight may be null");
    assert.deepEqual(schemas.BackendUpdate.properties.state.enum, ["ready", "drain", "maint"]);
    assert.ok(schemas.Backend.required.includes("last_error"));
    assert.deepEqual(doc.security, [{ bearerAuth: [] }]);
    assert.deepEqual(doc.paths["/health"].get.security, []);
    assert.equal(doc.paths["/backends/{address}"].delete.parameters[0].in, "path");
  });
});
