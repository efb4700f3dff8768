// Property: whatever request reaches the REST API (method, path with URL-encoded
// addresses, headers, content type, body), the answer is never a 5xx; every 4xx is JSON
// {"error": "..."}; and a refused request leaves the backends and the state file as
// they were. The API runs in-process on a real socket, with a real state file.
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import pino from "pino";
import { BackendChanges } from "../../src/api/changes.ts";
import { ApiServer } from "../../src/api/server.ts";
import { StateFile } from "../../src/store/file.ts";
import { parseHostPort } from "../../src/pool/address.ts";
import { CounterTable } from "../../src/pool/counters.ts";
import { BackendPool } from "../../src/pool/pool.ts";
import { tempDir } from "../harness.ts";
import { checkProperty } from "./settings.ts";

const TOKEN = "fuzz-token";
const STATIC = "10.9.9.9:80";

const hostPort = fc.oneof(
  fc.constantFrom("10.0.0.4:3000", "10.0.0.5:3000", "[::1]:80", "[0:0::1]:80", "backend.internal:3000", STATIC, "BACKEND.internal:3000"),
  fc.constantFrom("10.0.0.4:0", "10.0.0.4:70000", "10.0.0.300:80", "::1:80", "[::1]", "10.0.0.4", ":80", "[]:1", "[zz::1]:80", "a b:1", "", "x".repeat(400) + ":1"),
  fc.tuple(fc.string({ maxLength: 20 }), fc.integer({ min: -1, max: 70000 })).map(([h, p]) => `${h}:${p}`),
  fc.string({ maxLength: 30, unit: "grapheme" }),
);

/** A path segment as a client might encode it: properly, not at all, twice, or broken. */
const encodedAddress = fc.tuple(hostPort, fc.constantFrom("component", "uri", "twice", "raw-ish", "broken")).map(([a, how]) => {
  switch (how) {
    case "component":
      return encodeURIComponent(a);
    case "uri":
      return encodeURI(a).replace(/[/?#]/g, encodeURIComponent);
    case "twice":
      return encodeURIComponent(encodeURIComponent(a));
    case "raw-ish":
      return encodeURI(a);
    default:
      return `${encodeURIComponent(a)}%${a.length % 2 ? "zz" : "E0%A4"}`;
  }
});

const requestPath = fc.oneof(
  { arbitrary: hostPort.filter((a) => a.length < 40).map((a) => `/backends/${encodeURIComponent(a)}`), weight: 3 },
  fc.constantFrom("/health", "/backends", "/backends/", "/openapi.json", "/metrics", "/", "//backends", "/backends/..", "/backends/%2e%2e", "/BACKENDS", "/backends?x=1", "/backends#x"),
  encodedAddress.map((a) => `/backends/${a}`),
  fc.tuple(encodedAddress, fc.constantFrom("", "/", "/x", "?weight=5", "%00")).map(([a, tail]) => `/backends/${a}${tail}`),
  fc.webPath().map((p) => (p.startsWith("/") ? p : `/${p}`)),
);

const method = fc.oneof({ arbitrary: fc.constantFrom("GET", "POST", "PUT", "DELETE"), weight: 4 }, fc.constantFrom("PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "post"));

const contentType = fc.oneof(
  { arbitrary: fc.constant("application/json"), weight: 3 },
  fc.constantFrom(undefined, "application/json", "application/json; charset=utf-8", "Application/JSON", "application/json;charset=latin1", "application/json; x", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "application/jsonx", "*/*", "application/vnd.api+json"),
  fc.string({ maxLength: 30 }).filter((s) => /^[\x20-\x7e]*$/.test(s)),
);

const body = fc.oneof(
  { arbitrary: fc.record({ address: hostPort, weight: fc.integer({ min: 0, max: 1001 }) }, { requiredKeys: ["address"] }).map((v) => JSON.stringify(v)), weight: 3 },
  fc.record({ address: fc.oneof(hostPort, fc.jsonValue({ maxDepth: 2 })), weight: fc.oneof(fc.integer({ min: -5, max: 1005 }), fc.jsonValue({ maxDepth: 1 })) }, { requiredKeys: [] }).map((v) => JSON.stringify(v)),
  fc.record({ weight: fc.oneof(fc.integer({ min: -5, max: 1005 }), fc.double()) }, { requiredKeys: [] }).map((v) => JSON.stringify(v)),
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.constantFrom("", "{", "null", "[]", '{"address":"10.0.0.6:1","__proto__":{"weight":5}}', '{"address":"10.0.0.6:1","weight":1,"extra":1}', '{"address":"10.0.0.6:1","address":"10.0.0.7:1"}', "\ufeff{}", '{"weight":1e400}'),
  fc.integer({ min: 64 * 1024 - 10, max: 70 * 1024 }).map((n) => JSON.stringify({ address: "10.0.0.8:1", pad: "x".repeat(n) })),
  fc.integer({ min: 1, max: 20000 }).map((n) => `${"[".repeat(n)}${"]".repeat(n)}`),
  fc.string({ maxLength: 60 }),
  fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
);

/** Requests a client of the API would send, so changes happen and refusals meet real state. */
const wellFormed = fc.record({
  method: fc.constantFrom("GET", "POST", "PUT", "DELETE"),
  path: fc.oneof(fc.constant("/backends"), hostPort.filter((a) => a.length < 40).map((a) => `/backends/${encodeURIComponent(a)}`)),
  contentType: fc.constant("application/json"),
  auth: fc.constant(`Bearer ${TOKEN}`),
  body: fc.record({ address: hostPort, weight: fc.integer({ min: 0, max: 1001 }) }, { requiredKeys: [] }).map((v): string | Buffer | null => JSON.stringify(v)),
  lengthLie: fc.constant<number | null>(null),
});

const anyRequest = fc.record({
  method,
  path: requestPath,
  contentType,
  auth: fc.oneof({ arbitrary: fc.constant(`Bearer ${TOKEN}`), weight: 8 }, { arbitrary: fc.constantFrom(undefined, "Bearer wrong", "bearer fuzz-token", `Basic ${TOKEN}`, "Bearer", "", `Bearer ${TOKEN} `), weight: 2 }),
  body: fc.option(body, { freq: 4 }),
  lengthLie: fc.option(fc.integer({ min: -3, max: 3 }), { freq: 10 }),
});

const request = fc.oneof(wellFormed, anyRequest, anyRequest);

type Request = typeof request extends fc.Arbitrary<infer T> ? T : never;

function send(port: number, r: Request): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = r.body === null ? undefined : Buffer.isBuffer(r.body) ? r.body : Buffer.from(r.body);
    const headers: Record<string, string> = {};
    if (r.contentType !== undefined) headers["content-type"] = r.contentType;
    if (r.auth !== undefined) headers.authorization = r.auth;
    if (payload) headers["content-length"] = String(Math.max(0, payload.length + (r.lengthLie ?? 0)));
    const req = http.request({ host: "127.0.0.1", port, method: r.method, path: r.path, headers, agent: false, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer in 5 s to ${r.method} ${r.path}`)));
    req.on("error", reject);
    // A body shorter than its content-length would leave the server waiting: that is a
    // timeout, tested elsewhere (server.test.ts), and bytes past it would start another
    // request: so a lying content-length is honoured by padding or cutting the body.
    const lie = r.lengthLie ?? 0;
    if (payload) req.end(lie > 0 ? Buffer.concat([payload, Buffer.alloc(lie, 0x20)]) : payload.subarray(0, Math.max(0, payload.length + lie)));
    else req.end();
  });
}

describe("fuzz: the REST API", () => {
  const dir = tempDir("gobalancer-fuzz-api-");
  const stateFile = path.join(dir, "state.json");
  const logger = pino({ level: "silent" });
  const pool = new BackendPool({ logger, counters: new CounterTable(1) });
  const changes = new BackendChanges({ pool, store: new StateFile(stateFile), logger });
  let server: ApiServer;
  let port: number;

  before(async () => {
    pool.reconcile("static", [{ address: parseHostPort(STATIC), weight: 1 }]);
    await changes.restore();
    server = new ApiServer({ listen: parseHostPort("127.0.0.1:0", { allowPortZero: true }), token: TOKEN, pool, changes, logger, draining: () => false });
    port = (await server.listen()).port;
  });
  after(async () => {
    await server.close();
  });

  const backends = () => JSON.stringify(pool.list().map((b) => [b.address, b.weight, b.source]));
  const stateBytes = () => (existsSync(stateFile) ? readFileSync(stateFile, "utf8") : "(none)");

  it("any request: no 5xx, JSON errors, no change when refused", async (t) => {
    const seen = new Map<number, number>();
    await checkProperty(
      t,
      "REST API",
      fc.asyncProperty(request, async (r) => {
        const [beforeBackends, beforeState] = [backends(), stateBytes()];
        const res = await send(port, r);
        seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
        const what = `${r.method} ${r.path} -> ${res.status} ${res.text.slice(0, 200)}`;
        assert.ok(res.status < 500, what);
        if (res.status >= 400) {
          if (r.method !== "HEAD") {
            assert.match(String(res.headers["content-type"]), /^application\/json/, what);
            const parsed = JSON.parse(res.text) as { error?: unknown };
            assert.equal(typeof parsed.error, "string", what);
            assert.ok((parsed.error as string).length > 0, what);
          }
          assert.equal(backends(), beforeBackends, `backends changed by a refused request: ${what}`);
          assert.equal(stateBytes(), beforeState, `state file changed by a refused request: ${what}`);
        }
        // Whatever happened, the state file says what the API changed.
        await changes.settled();
      }),
      300,
    );
    t.diagnostic(`statuses ${JSON.stringify(Object.fromEntries([...seen].sort((a, b) => a[0] - b[0])))}`);
  });

  it("raw bytes on the socket: a 4xx or a closed connection, and the API still serves", async (t) => {
    const line = fc.constantFrom("GET /health HTTP/1.1", "POST /backends HTTP/1.1", "DELETE /backends/10.0.0.4%3A3000 HTTP/1.1", "GET / HTTP/9.9", "GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked", "GET /health HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6", "PRI * HTTP/2.0", "\x16\x03\x01\x02\x00\x01");
    const raw = fc.tuple(fc.option(line), fc.oneof(fc.string({ maxLength: 80 }), fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b).toString("latin1"))), fc.boolean()).map(([start, rest, crlf]) => Buffer.from(`${start ?? ""}${crlf ? "\r\n" : ""}${rest}${crlf ? "\r\n\r\n" : ""}`, "latin1"));
    const exchange = (bytes: Buffer) =>
      new Promise<string>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const socket = net.connect(port, "127.0.0.1", () => socket.end(bytes)); // half-close: nothing more is coming
        socket.on("data", (c: Buffer) => chunks.push(c));
        socket.on("error", () => {}); // a reset is a refusal too
        socket.on("close", () => resolve(Buffer.concat(chunks).toString("latin1")));
        socket.setTimeout(5000, () => {
          socket.destroy();
          reject(new Error(`connection held for 5 s after ${JSON.stringify(bytes.toString("latin1"))}`));
        });
      });
    const rawSeen = new Map<string, number>();
    await checkProperty(
      t,
      "REST API raw bytes",
      fc.asyncProperty(raw, async (bytes) => {
        const [beforeBackends, beforeState] = [backends(), stateBytes()];
        const answer = await exchange(bytes);
        const first = /^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1] ?? "closed";
        rawSeen.set(first, (rawSeen.get(first) ?? 0) + 1);
        for (const m of answer.matchAll(/HTTP\/1\.[01] (\d{3})/g)) assert.ok(Number(m[1]) < 500, `${m[1]} for ${JSON.stringify(bytes.toString("latin1"))}`);
        assert.equal(backends(), beforeBackends);
        assert.equal(stateBytes(), beforeState);
      }),
      200,
    );
    t.diagnostic(`first answers ${JSON.stringify(Object.fromEntries(rawSeen))}`);
    const health = await send(port, { method: "GET", path: "/health", contentType: undefined, auth: undefined, body: null, lengthLie: null });
    assert.equal(health.status, 200);
  });
});
