// End-to-end: the REST admin API of the real gobalancer process, over HTTP.
import assert from "node:assert/strict";
import { execFile, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { stringify } from "yaml";
import type { BackendJson } from "../src/api/schemas.ts";
import {
  BalancerProcess,
  CLI,
  cleanup,
  connect,
  request,
  roundTrip,
  runCli,
  startBalancer,
  startEchoBackend,
  startNamedBackend,
  startServer,
  tempDir,
  waitFor,
  type TestServer,
} from "./harness.ts";

const run = promisify(execFile);

const BACKEND_FIELDS = [
  "active_connections",
  "address",
  "bytes_in",
  "bytes_out",
  "failed_connections",
  "healthy",
  "last_checked_at",
  "last_error",
  "state",
  "source",
  "status",
  "total_connections",
  "weight",
  "max_connections",
  "backup",
  "proxy_protocol",
  "slow_start_share",
].sort();

interface Reply<T = unknown> {
  status: number;
  body: T;
  headers: Headers;
}

/** One API call. `body` objects are sent as JSON; strings go as they are. */
async function call<T = unknown>(
  lb: BalancerProcess,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply<T>> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers = { "content-type": "application/json", ...headers };
  }
  const res = await fetch(`${lb.api}${path}`, init);
  const text = await res.text();
  return { status: res.status, body: (text === "" ? undefined : JSON.parse(text)) as T, headers: res.headers };
}

const list = async (lb: BalancerProcess, headers?: Record<string, string>) => (await call<BackendJson[]>(lb, "GET", "/backends", undefined, headers)).body;
/** address → weight of the backends the API owns. */
const apiBackends = async (lb: BalancerProcess) =>
  Object.fromEntries((await list(lb)).filter((b) => b.source === "api").map((b) => [b.address, b.weight]));
const stateFile = (lb: BalancerProcess) => path.join(lb.dir, "state.json");
const readState = (lb: BalancerProcess, file = stateFile(lb)) => JSON.parse(readFileSync(file, "utf8")) as { backends: Array<{ address: string; weight: number }>; weights: Array<{ address: string; weight: number }> };
const enc = encodeURIComponent;

const staticOf = (...servers: TestServer[]) => ({
  discovery: { type: "static", backends: servers.map((s) => ({ address: s.address })) },
});

/** Which named backend each of `n` sequential connections reached. */
async function names(lb: BalancerProcess, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push((await request(lb.port)).trim());
  return out;
}

const count = (items: string[]) => items.reduce<Record<string, number>>((acc, x) => ((acc[x] = (acc[x] ?? 0) + 1), acc), {});

describe("REST API endpoints", () => {
  let lb: BalancerProcess;
  let home: TestServer;
  before(async () => {
    home = await startNamedBackend("home");
    lb = await startBalancer(staticOf(home));
  });
  after(cleanup);

  it("reports the API address in the start-up line", () => {
    const started = lb.logs.find((l) => l.msg === "gobalancer started")!;
    assert.equal(started.api, `127.0.0.1:${lb.apiPort}`);
  });

  it("GET /health is ok", async () => {
    const res = await call(lb, "GET", "/health");
    assert.deepEqual([res.status, res.body], [200, { status: "ok" }]);
  });

  it("GET /backends lists every backend with every field", async () => {
    const { status, body } = await call<BackendJson[]>(lb, "GET", "/backends");
    assert.equal(status, 200);
    assert.equal(body.length, 1);
    assert.deepEqual(Object.keys(body[0]!).sort(), BACKEND_FIELDS);
    assert.deepEqual(body[0], {
      address: home.address,
      weight: 1,
      healthy: true,
      status: "up",
      source: "static",
      active_connections: 0,
      total_connections: 0,
      failed_connections: 0,
      bytes_in: 0,
      bytes_out: 0,
      last_checked_at: body[0]!.last_checked_at, // the health checker's business
      last_error: body[0]!.last_error,
      state: "ready",
      max_connections: 0,
      backup: false,
      proxy_protocol: null,
      slow_start_share: 1,
    });
  });

  it("counts connections and bytes per backend", async () => {
    assert.equal((await request(lb.port, "ping")).trim(), "home");
    const b = await waitFor(async () => {
      const got = (await call<BackendJson>(lb, "GET", `/backends/${home.address}`)).body;
      return got.bytes_out > 0 ? got : undefined;
    }, 2000, "the connection to be accounted");
    assert.equal(b.total_connections, 1);
    assert.equal(b.active_connections, 0);
    assert.equal(b.bytes_in, "ping".length, "from the client to the backend");
    assert.equal(b.bytes_out, "home\n".length, "from the backend to the client");
    assert.equal(b.failed_connections, 0);
  });

  it("POST /backends adds a backend owned by the API (201), weight defaulting to 1", async () => {
    const res = await call<BackendJson>(lb, "POST", "/backends", { address: "127.0.0.1:1", weight: 2 });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("location"), `/backends/${enc("127.0.0.1:1")}`);
    assert.deepEqual(Object.keys(res.body).sort(), BACKEND_FIELDS);
    assert.equal(res.body.address, "127.0.0.1:1");
    assert.equal(res.body.weight, 2);
    assert.equal(res.body.source, "api");
    assert.equal(res.body.status, "up");
    assert.equal(res.body.healthy, true);
    const plain = await call<BackendJson>(lb, "POST", "/backends", { address: "127.0.0.1:2" });
    assert.equal(plain.status, 201);
    assert.equal(plain.body.weight, 1);
  });

  it("GET /backends/{address} finds a backend by its address, plain or URL-encoded", async () => {
    for (const path of ["/backends/127.0.0.1:1", `/backends/${enc("127.0.0.1:1")}`]) {
      const res = await call<BackendJson>(lb, "GET", path);
      assert.equal(res.status, 200, path);
      assert.equal(res.body.address, "127.0.0.1:1");
    }
  });

  it("handles IPv6 addresses and treats every spelling of an address as one backend", async () => {
    const res = await call<BackendJson>(lb, "POST", "/backends", { address: "[0:0:0::1]:8443" });
    assert.equal(res.status, 201);
    assert.equal(res.body.address, "[::1]:8443");
    assert.equal((await call(lb, "GET", "/backends/%5B::1%5D:8443")).status, 200);
    assert.equal((await call(lb, "GET", `/backends/${enc("[0::1]:8443")}`)).status, 200);
    const again = await call<{ error: string }>(lb, "POST", "/backends", { address: "[::1]:8443" });
    assert.equal(again.status, 409);
    assert.match(again.body.error, /\[::1\]:8443 already exists/);
    const dns = await call<BackendJson>(lb, "POST", "/backends", { address: "LocalHost.:9" });
    assert.equal(dns.body.address, "localhost:9");
    assert.equal((await call(lb, "POST", "/backends", { address: "localhost:9" })).status, 409);
    assert.equal((await call(lb, "DELETE", `/backends/${enc("[::1]:8443")}`)).status, 204);
    assert.equal((await call(lb, "DELETE", "/backends/LOCALHOST:9")).status, 204);
  });

  it("PUT /backends/{address} changes the weight of any backend (200)", async () => {
    const res = await call<BackendJson>(lb, "PUT", "/backends/127.0.0.1:1", { weight: 5 });
    assert.equal(res.status, 200);
    assert.deepEqual([res.body.address, res.body.weight, res.body.source], ["127.0.0.1:1", 5, "api"]);
    const owned = await call<BackendJson>(lb, "PUT", `/backends/${home.address}`, { weight: 3 });
    assert.equal(owned.status, 200);
    assert.deepEqual([owned.body.weight, owned.body.source], [3, "static"]);
  });

  it("DELETE /backends/{address} removes an API backend (204), then it is gone (404)", async () => {
    const res = await call(lb, "DELETE", "/backends/127.0.0.1:2");
    assert.equal(res.status, 204);
    assert.equal(res.body, undefined);
    for (const [method, body] of [["GET"], ["PUT", { weight: 2 }], ["DELETE"]] as const) {
      const gone = await call<{ error: string }>(lb, method, "/backends/127.0.0.1:2", body);
      assert.equal(gone.status, 404, method);
      assert.equal(gone.body.error, "backend 127.0.0.1:2 not found");
    }
  });

  it("refuses to delete (409) or re-add (409) a backend static config owns, naming the owner", async () => {
    const del = await call<{ error: string }>(lb, "DELETE", `/backends/${home.address}`);
    assert.equal(del.status, 409);
    assert.match(del.body.error, new RegExp(`${home.address} is owned by static`));
    const add = await call<{ error: string }>(lb, "POST", "/backends", { address: home.address });
    assert.equal(add.status, 409);
    assert.match(add.body.error, new RegExp(`${home.address} already exists \\(source: static\\)`));
  });

  it("serves its OpenAPI document", async () => {
    const res = await call<{ openapi: string; info: { description: string }; paths: Record<string, unknown> }>(lb, "GET", "/openapi.json");
    assert.equal(res.status, 200);
    assert.equal(res.body.openapi, "3.1.0");
    assert.match(res.body.info.description, /admin states \(ready, drain, maint\), reload the config file/);
    assert.deepEqual(Object.keys(res.body.paths).sort(), ["/backends", "/backends/{address}", "/health", "/metrics", "/openapi.json", "/reload"]);
  });

  it("answers unknown paths 404 and wrong methods 405", async () => {
    const missing = await call<{ error: string }>(lb, "GET", "/nope");
    assert.deepEqual([missing.status, missing.body.error], [404, "no such endpoint: GET /nope"]);
    const wrong = await call<{ error: string }>(lb, "PATCH", "/backends");
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.get("allow"), "GET, POST");
  });

  it("persists API backends and weights, and a restart restores them", async () => {
    assert.deepEqual(readState(lb), {
      version: 1,
      backends: [{ address: "127.0.0.1:1", weight: 5 }],
      weights: [{ address: home.address, weight: 3 }],
    });
    const before = (await list(lb)).map((b) => [b.address, b.weight, b.source]);
    assert.deepEqual((await lb.stop()).code, 0);
    const again = await startBalancer(staticOf(home), { dir: lb.dir });
    assert.deepEqual((await list(again)).map((b) => [b.address, b.weight, b.source]).sort(), before.sort());
  });
});

describe("REST API changes apply to the next connection", () => {
  afterEach(cleanup);

  it("an added backend takes the very next connection; a deleted one takes no more while its open connections finish", async () => {
    const one = await startNamedBackend("one");
    const echo = await startEchoBackend();
    // Only the first health probe of each backend, so the backends' own accept counts
    // below are client connections.
    const lb = await startBalancer({ health_check: { interval: "10m" }, discovery: { type: "static", backends: [] } });
    assert.equal(await request(lb.port), "", "no backend yet: closed at once");
    assert.equal((await call(lb, "POST", "/backends", { address: one.address })).status, 201);
    assert.equal((await request(lb.port)).trim(), "one");

    assert.equal((await call(lb, "DELETE", `/backends/${one.address}`)).status, 204);
    assert.equal((await call(lb, "POST", "/backends", { address: echo.address })).status, 201);
    // The only backend is the echo one: this connection lands there and stays open.
    const open = await connect(lb.port);
    let got = "";
    open.on("data", (d) => (got += d));
    const echoed = new Promise<string>((resolve) => open.on("end", () => resolve(got)));
    open.write("before ");
    await waitFor(() => got === "before ", 5000, "the echo through the balancer");
    assert.equal((await call(lb, "POST", "/backends", { address: one.address })).status, 201);
    assert.equal((await call(lb, "DELETE", `/backends/${echo.address}`)).status, 204);
    const acceptedBefore = echo.accepted();
    assert.deepEqual(await names(lb, 6), Array(6).fill("one"));
    assert.equal(echo.accepted(), acceptedBefore, "the deleted backend got no new connection");
    // The connection opened before the delete still works both ways and ends normally.
    open.end("after");
    assert.equal(await echoed, "before after");
  });

  it("PUT weight 5 with the weighted algorithm: shares follow at once", async () => {
    const a = await startNamedBackend("a");
    const b = await startNamedBackend("b");
    const lb = await startBalancer({ algorithm: "weighted", ...staticOf(a, b) });
    assert.deepEqual(count(await names(lb, 4)), { a: 2, b: 2 });
    assert.equal((await call(lb, "PUT", `/backends/${b.address}`, { weight: 5 })).status, 200);
    // Smooth weighted round robin: every window of sum(weights) = 6 picks holds exactly 1 a and 5 b.
    const picks = await names(lb, 36);
    for (let w = 0; w < 36; w += 6) assert.deepEqual(count(picks.slice(w, w + 6)), { a: 1, b: 5 }, picks.join(""));
  });
});

describe("REST API input validation", () => {
  let lb: BalancerProcess;
  let baseline: string;
  let baselineFile: string;
  before(async () => {
    const home = await startNamedBackend("home");
    lb = await startBalancer(staticOf(home));
    assert.equal((await call(lb, "POST", "/backends", { address: "127.0.0.1:7", weight: 3 })).status, 201);
    baseline = JSON.stringify(await list(lb));
    baselineFile = readFileSync(stateFile(lb), "utf8");
  });
  after(cleanup);

  const MiB = "x".repeat(1 << 20);
  const json = (address: unknown, weight?: unknown) => JSON.stringify(weight === undefined ? { address } : { address, weight });
  const table: Array<{ what: string; method: string; path: string; body?: string; type?: string; status: number; error: RegExp }> = [
    { what: "malformed JSON", method: "POST", path: "/backends", body: '{"address": "127.0.0.1:8", ', status: 400, error: /^body is not valid JSON/ },
    { what: "address of the wrong type", method: "POST", path: "/backends", body: json(8080), status: 400, error: /^address: must be a string "host:port"$/ },
    { what: "weight of the wrong type", method: "POST", path: "/backends", body: json("127.0.0.1:8", "2"), status: 400, error: /^weight: must be an integer 1-1000$/ },
    { what: "fractional weight", method: "PUT", path: "/backends/127.0.0.1:7", body: '{"weight": 2.5}', status: 400, error: /^weight: must be an integer 1-1000$/ },
    { what: "body that is not an object", method: "POST", path: "/backends", body: '["127.0.0.1:8"]', status: 400, error: /^body: must be a JSON object$/ },
    { what: "missing address", method: "POST", path: "/backends", body: '{"weight": 2}', status: 400, error: /^address: is required$/ },
    { what: "neither weight nor state", method: "PUT", path: "/backends/127.0.0.1:7", body: "{}", status: 400, error: /^body: give weight, state or both$/ },
    { what: "an unknown state", method: "PUT", path: "/backends/127.0.0.1:7", body: '{"state": "off"}', status: 400, error: /^state: must be one of ready, drain, maint$/ },
    { what: "port 0", method: "POST", path: "/backends", body: json("127.0.0.1:0"), status: 400, error: /^address: port must be 1-65535 \(got "0"\)$/ },
    { what: "port 70000", method: "POST", path: "/backends", body: json("127.0.0.1:70000"), status: 400, error: /^address: port must be 1-65535 \(got "70000"\)$/ },
    { what: "no port", method: "POST", path: "/backends", body: json("127.0.0.1"), status: 400, error: /^address: "127.0.0.1" must be host:port$/ },
    { what: "unbracketed IPv6", method: "POST", path: "/backends", body: json("::1:80"), status: 400, error: /^address: IPv6 addresses must be bracketed/ },
    { what: "weight 0 on add", method: "POST", path: "/backends", body: json("127.0.0.1:8", 0), status: 400, error: /^weight: must be an integer 1-1000$/ },
    { what: "weight 1001 on add", method: "POST", path: "/backends", body: json("127.0.0.1:8", 1001), status: 400, error: /^weight: must be an integer 1-1000$/ },
    { what: "weight 0 on update", method: "PUT", path: "/backends/127.0.0.1:7", body: '{"weight": 0}', status: 400, error: /^weight: must be an integer 1-1000$/ },
    { what: "weight 1001 on update", method: "PUT", path: "/backends/127.0.0.1:7", body: '{"weight": 1001}', status: 400, error: /^weight: must be an integer 1-1000$/ },
    { what: "empty body on add", method: "POST", path: "/backends", body: "", status: 400, error: /^body: is required/ },
    { what: "empty body on update", method: "PUT", path: "/backends/127.0.0.1:7", body: "", status: 400, error: /^body: is required/ },
    { what: "1 MiB body", method: "POST", path: "/backends", body: json("127.0.0.1:8", MiB), status: 413, error: /^body is too large: the limit is 65536 bytes$/ },
    { what: "text/plain content type", method: "POST", path: "/backends", body: json("127.0.0.1:8"), type: "text/plain", status: 415, error: /^content-type must be application\/json \(got "text\/plain"\)$/ },
    { what: "form content type", method: "PUT", path: "/backends/127.0.0.1:7", body: "weight=2", type: "application/x-www-form-urlencoded", status: 415, error: /^content-type must be application\/json/ },
    { what: "unknown field on add", method: "POST", path: "/backends", body: '{"address": "127.0.0.1:8", "wieght": 2}', status: 400, error: /^unknown field "wieght"$/ },
    { what: "unknown field on update", method: "PUT", path: "/backends/127.0.0.1:7", body: '{"weight": 2, "address": "127.0.0.1:9"}', status: 400, error: /^unknown field "address"$/ },
    { what: "prototype key", method: "POST", path: "/backends", body: '{"address": "127.0.0.1:8", "__proto__": {"weight": 9}}', status: 400, error: /^unknown field "__proto__"$/ },
    { what: "duplicate add", method: "POST", path: "/backends", body: json("127.0.0.1:7"), status: 409, error: /^backend 127\.0\.0\.1:7 already exists \(source: api\)$/ },
    { what: "unknown address (GET)", method: "GET", path: "/backends/127.0.0.1:8", status: 404, error: /^backend 127\.0\.0\.1:8 not found$/ },
    { what: "unknown address (PUT)", method: "PUT", path: "/backends/127.0.0.1:8", body: '{"weight": 2}', status: 404, error: /^backend 127\.0\.0\.1:8 not found$/ },
    { what: "unknown address (DELETE)", method: "DELETE", path: "/backends/127.0.0.1:8", status: 404, error: /^backend 127\.0\.0\.1:8 not found$/ },
    { what: "malformed address in the path", method: "GET", path: "/backends/127.0.0.1:99999", status: 400, error: /^address: port must be 1-65535/ },
    { what: "bad URL encoding in the path", method: "DELETE", path: "/backends/%ZZ:80", status: 400, error: /^bad path: / },
    { what: "address in the path too long", method: "DELETE", path: `/backends/${"a".repeat(400)}:80`, status: 414, error: /^address: too long for a host:port$/ },
  ];

  for (const row of table) {
    it(`${row.what}: ${row.status}, naming the problem, pool unchanged`, async () => {
      const headers: Record<string, string> = {};
      if (row.body !== undefined) headers["content-type"] = row.type ?? "application/json";
      const res = await fetch(`${lb.api}${row.path}`, { method: row.method, headers, body: row.body });
      assert.equal(res.status, row.status);
      assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
      const body = (await res.json()) as { error: string };
      assert.deepEqual(Object.keys(body), ["error"]);
      assert.match(body.error, row.error);
      assert.equal(JSON.stringify(await list(lb)), baseline);
      assert.equal(readFileSync(stateFile(lb), "utf8"), baselineFile);
    });
  }

  it("survives all of the above: still serving, no error logged", async () => {
    assert.equal((await call(lb, "GET", "/health")).status, 200);
    assert.deepEqual(lb.logs.filter((l) => l.level >= 50), []);
  });
});

describe("REST API authentication", () => {
  afterEach(cleanup);

  it("needs the bearer token on every endpoint but /health, compared exactly", async () => {
    const lb = await startBalancer({ api: { token: "s3cret-token" }, discovery: { backends: [] } });
    const good = { authorization: "Bearer s3cret-token" };
    assert.equal((await call(lb, "GET", "/health")).status, 200);
    for (const [headers, error] of [
      [{}, /^missing bearer token/],
      [{ authorization: "Bearer s3cret-toke" }, /^invalid bearer token$/],
      [{ authorization: "Bearer s3cret-token2" }, /^invalid bearer token$/],
      [{ authorization: "Basic czNjcmV0LXRva2Vu" }, /^malformed Authorization header/],
    ] as const) {
      for (const [method, path, body] of [
        ["GET", "/backends"],
        ["POST", "/backends", { address: "127.0.0.1:1" }],
        ["GET", "/backends/127.0.0.1:1"],
        ["PUT", "/backends/127.0.0.1:1", { weight: 2 }],
        ["DELETE", "/backends/127.0.0.1:1"],
        ["GET", "/openapi.json"],
      ] as const) {
        const res = await call<{ error: string }>(lb, method, path, body, headers);
        assert.equal(res.status, 401, `${method} ${path} ${JSON.stringify(headers)}`);
        assert.match(res.body.error, error);
        assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="gobalancer"');
      }
    }
    assert.deepEqual(await list(lb, good), []);
    assert.ok(!existsSync(stateFile(lb)), "nothing was written");
    assert.equal((await call(lb, "POST", "/backends", { address: "127.0.0.1:1" }, good)).status, 201);
    assert.equal((await list(lb, good)).length, 1);
  });

  it("takes the token from GOBALANCER_API_TOKEN", async () => {
    const lb = await startBalancer({ discovery: { backends: [] } }, { env: { GOBALANCER_API_TOKEN: "from-env" } });
    assert.equal((await call(lb, "GET", "/backends")).status, 401);
    assert.equal((await call(lb, "GET", "/backends", undefined, { authorization: "Bearer from-env" })).status, 200);
  });

  it("refuses to serve a non-loopback address without a token", async () => {
    const dir = tempDir();
    const file = path.join(dir, "config.yaml");
    writeFileSync(file, stringify({ listen: "127.0.0.1:0", api: { listen: "0.0.0.0:0" }, state_file: path.join(dir, "state.json"), discovery: { backends: [] } }));
    const res = await runCli(["--config", file], { env: { GOBALANCER_API_TOKEN: "" } });
    assert.equal(res.code, 1);
    const lines = res.stdout.trim().split("\n");
    assert.equal(lines.length, 1, res.stdout);
    assert.match(JSON.parse(lines[0]!).msg, /^start failed: api\.listen serves 0\.0\.0\.0:0, which is not loopback, without a token: set api\.token \(or GOBALANCER_API_TOKEN\), or set api\.allow_unauthenticated: true/);
    assert.equal(res.stderr, "");
  });
});

/**
 * Restarts gobalancer `rounds` times on one state file, each time killing it with
 * SIGKILL while a burst of changes is in flight, and checks after every restart that
 * each acknowledged change is there (an unacknowledged one may or may not be).
 */
async function killChain(firstPort: number, rounds: number): Promise<void> {
  const dir = tempDir();
  /** address → weight (null: absent) that must hold after the next restart. */
  const must = new Map<string, number | null>();
  /** What unacknowledged operations may have left instead. */
  const may = new Map<string, Set<number | null>>();
  const check = (now: Record<string, number>, round: number) => {
    for (const [address, weight] of must) {
      const actual = now[address] ?? null;
      const allowed = new Set([weight, ...(may.get(address) ?? [])]);
      assert.ok(allowed.has(actual), `round ${round}: ${address} is ${actual}, expected one of ${[...allowed].join(", ")}`);
      must.set(address, actual);
    }
    for (const address of Object.keys(now)) assert.ok(must.has(address), `round ${round}: ${address} was never added`);
    may.clear();
  };
  let next = firstPort;
  for (let round = 0; round < rounds; round++) {
    const lb = await startBalancer({ discovery: { backends: [] } }, { dir });
    check(await apiBackends(lb), round);

    // New backends, weight changes and deletions of earlier ones, all at once.
    const present = [...must].filter(([, w]) => w !== null).map(([a]) => a);
    const ops: Array<{ address: string; method: string; weight: number | null }> = [];
    for (let i = 0; i < 8; i++) ops.push({ address: `127.0.0.1:${next++}`, method: "POST", weight: 1 + ((round + i) % 9) });
    for (const address of present.slice(0, 4)) ops.push({ address, method: "PUT", weight: 100 + round });
    for (const address of present.slice(4, 6)) ops.push({ address, method: "DELETE", weight: null });
    for (const op of ops) {
      if (!must.has(op.address)) must.set(op.address, null);
      may.set(op.address, new Set([op.weight]));
    }
    let acked = 0;
    const killAfter = Math.floor(Math.random() * ops.length);
    const inflight = ops.map(async (op) => {
      try {
        const res =
          op.method === "POST"
            ? await call(lb, "POST", "/backends", { address: op.address, weight: op.weight })
            : await call(lb, op.method, `/backends/${op.address}`, op.method === "PUT" ? { weight: op.weight } : undefined);
        if (res.status >= 200 && res.status < 300) {
          must.set(op.address, op.weight);
          may.delete(op.address);
          acked++;
        }
      } catch {
        // The process died under this request: not acknowledged.
      }
    });
    await waitFor(() => acked >= killAfter, 30_000, `${killAfter} acknowledgements`);
    lb.proc.kill("SIGKILL");
    await Promise.all(inflight);
    await lb.exited;
  }
  const last = await startBalancer({ discovery: { backends: [] } }, { dir });
  check(await apiBackends(last), rounds);
}

describe("REST API persistence", () => {
  afterEach(cleanup);

  it("200 concurrent POST/PUT/DELETE: the final state is exactly the acknowledged operations, before and after a restart", async () => {
    const dir = tempDir();
    // 100 API backends to start from, restored from a state file like any restart.
    const existing = Array.from({ length: 100 }, (_, i) => `127.0.0.1:${10_000 + i}`);
    writeFileSync(
      path.join(dir, "state.json"),
      JSON.stringify({ version: 1, backends: existing.map((address) => ({ address, weight: 1 })), weights: [] }),
    );
    const lb = await startBalancer({ discovery: { backends: [] } }, { dir });
    assert.equal(Object.keys(await apiBackends(lb)).length, 100);

    const ops: Array<{ method: string; address: string; weight?: number }> = [];
    for (let i = 0; i < 60; i++) ops.push({ method: "POST", address: `127.0.0.1:${20_000 + i}`, weight: 1 + (i % 7) });
    for (let i = 0; i < 10; i++) {
      // Pairs racing to add the same backend: exactly one may win.
      ops.push({ method: "POST", address: `127.0.0.1:${30_000 + i}`, weight: 2 });
      ops.push({ method: "POST", address: `127.0.0.1:${30_000 + i}`, weight: 3 });
    }
    for (let i = 0; i < 60; i++) ops.push({ method: "PUT", address: existing[i]!, weight: 10 + i });
    for (let i = 60; i < 100; i++) ops.push({ method: "DELETE", address: existing[i]! });
    for (let i = 0; i < 20; i++) ops.push({ method: "GET", address: existing[i]! });
    assert.equal(ops.length, 200);
    ops.sort(() => Math.random() - 0.5);

    const results = await Promise.all(
      ops.map((op) =>
        op.method === "POST"
          ? call<BackendJson>(lb, "POST", "/backends", { address: op.address, weight: op.weight })
          : call<BackendJson>(lb, op.method, `/backends/${op.address}`, op.method === "PUT" ? { weight: op.weight } : undefined),
      ),
    );

    const expected: Record<string, number> = Object.fromEntries(existing.map((a) => [a, 1]));
    const winners = new Map<string, number>();
    results.forEach((res, i) => {
      const op = ops[i]!;
      if (op.method === "POST" && res.status === 201) {
        assert.ok(!winners.has(op.address), `two adds of ${op.address} acknowledged`);
        winners.set(op.address, op.weight!);
        expected[op.address] = op.weight!;
      } else if (op.method === "POST") {
        assert.equal(res.status, 409, `${op.method} ${op.address}`);
        assert.ok(op.address.includes(":300"), `only racing duplicates may conflict: ${op.address}`);
      } else if (op.method === "PUT") {
        assert.equal(res.status, 200);
        expected[op.address] = op.weight!;
      } else if (op.method === "DELETE") {
        assert.equal(res.status, 204);
        delete expected[op.address];
      } else {
        assert.equal(res.status, 200);
      }
    });
    assert.equal([...winners.keys()].filter((a) => a.includes(":300")).length, 10);

    assert.deepEqual(await apiBackends(lb), expected);
    const file = readState(lb);
    assert.deepEqual(Object.fromEntries(file.backends.map((b) => [b.address, b.weight])), expected);
    assert.deepEqual(file.weights, []);

    lb.proc.kill("SIGKILL");
    await lb.exited;
    const again = await startBalancer({ discovery: { backends: [] } }, { dir });
    assert.deepEqual(await apiBackends(again), expected);
  });

  // 21 process starts: seconds on a quiet machine, minutes on a crowded one, hence its own limit.
  it("kill -9 while changes are being written, 20 times: every acknowledged change survives", { timeout: 300_000 }, async () => {
    // Two independent chains of ten kills each, side by side: start-up dominates, and
    // overlapping two halves the wall time.
    await Promise.all([killChain(40_000, 10), killChain(50_000, 10)]);
  });

  it("a state file that cannot be written: 500 naming it, the change undone", async () => {
    const dir = tempDir();
    const lb = await startBalancer({ state_file: path.join(dir, "sub", "state.json"), discovery: { backends: [] } }, { dir });
    assert.equal((await call(lb, "POST", "/backends", { address: "127.0.0.1:1" })).status, 201);
    // Replace the state file's directory by a plain file: every write now fails.
    rmSync(path.join(dir, "sub"), { recursive: true });
    writeFileSync(path.join(dir, "sub"), "");
    for (const [method, target, body] of [
      ["POST", "/backends", { address: "127.0.0.1:2" }],
      ["PUT", "/backends/127.0.0.1:1", { weight: 9 }],
      ["DELETE", "/backends/127.0.0.1:1"],
    ] as const) {
      const res = await call<{ error: string }>(lb, method, target, body);
      assert.equal(res.status, 500, method);
      assert.match(res.body.error, new RegExp(`^change not saved and undone: cannot write state file ${path.join(dir, "sub", "state.json")}`));
      assert.deepEqual(await apiBackends(lb), { "127.0.0.1:1": 1 }, method);
    }
    rmSync(path.join(dir, "sub"));
    assert.equal((await call(lb, "PUT", "/backends/127.0.0.1:1", { weight: 9 })).status, 200);
    assert.deepEqual(readState(lb, path.join(dir, "sub", "state.json")).backends, [{ address: "127.0.0.1:1", weight: 9 }]);
  });

  it("refuses to start on a corrupt state file, naming it", async () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, "state.json"), '{"version": 1, "backends": [{"address": "10.0.0');
    const lb = await startBalancer({ discovery: { backends: [] } }, { dir, noWait: true });
    assert.equal((await lb.exited).code, 1);
    const errors = lb.logs.filter((l) => l.level >= 50);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.msg, new RegExp(`^start failed: state file ${path.join(dir, "state.json")} is corrupt: not valid JSON .*; fix or remove it$`));
    assert.equal(readFileSync(path.join(dir, "state.json"), "utf8"), '{"version": 1, "backends": [{"address": "10.0.0', "left as it was");
  });

  it("refuses to start on an unreadable state file, naming it", async () => {
    const dir = tempDir();
    mkdirSync(path.join(dir, "state.json"));
    const lb = await startBalancer({ discovery: { backends: [] } }, { dir, noWait: true });
    assert.equal((await lb.exited).code, 1);
    assert.match(lb.logs.find((l) => l.level >= 50)!.msg, /^start failed: cannot read state file .*state\.json: it is a directory$/);
  });
});

describe("REST API start-up failures", () => {
  afterEach(cleanup);

  it("exits 1 with one line when the API port is in use", async () => {
    const taken = await startServer(() => {});
    const lb = await startBalancer({ api: { listen: taken.address }, discovery: { backends: [] } }, { noWait: true });
    assert.equal((await lb.exited).code, 1);
    const errors = lb.logs.filter((l) => l.level >= 50);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.msg, `start failed: api.listen ${taken.address}: address already in use`);
    assert.equal(lb.otherOutput.join(""), "");
  });
});

describe("REST API during graceful shutdown", () => {
  afterEach(cleanup);

  it("keeps serving while connections drain, /health answering 503 draining, then exits 0", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ ...staticOf(echo), timeouts: { shutdown: "10s" } });
    const open = await connect(lb.port);
    open.on("error", () => {});
    // A connection still in the listener's backlog would be reset when the listener
    // closes, leaving nothing to drain.
    await roundTrip(open);
    lb.signal("SIGTERM");
    await lb.waitForLog((l) => l.msg === "shutting down: draining connections");
    assert.deepEqual((await call(lb, "GET", "/health")).body, { status: "draining" });
    assert.equal((await call(lb, "GET", "/health")).status, 503);
    const during = await list(lb);
    assert.equal(during[0]!.active_connections, 1);
    open.end();
    assert.deepEqual(await lb.exited, { code: 0, signal: null });
    const apiClosed = await fetch(`${lb.api}/health`).then(() => false, () => true);
    assert.ok(apiClosed, "the API closes at the end of shutdown");
  });
});

describe("the seed README's curl examples, verbatim", () => {
  // The example adds 192.168.1.100:8080. Nothing may ever be sent there, so the balancer
  // runs in a network namespace of its own holding only a loopback interface: a health
  // probe or dial to that address fails inside it without a packet leaving.
  const netns = spawnSync("unshare", ["--net", "--map-root-user", "true"]).status === 0;
  after(cleanup);

  it("curl lists and adds backends exactly as the seed shows", { skip: netns ? false : "needs unshare(1) for a private network namespace" }, async () => {
    const dir = tempDir();
    const file = path.join(dir, "config.yaml");
    // The seed's own ports: free inside the namespace whatever runs outside it.
    writeFileSync(file, stringify({ listen: ":8080", api: { listen: "127.0.0.1:8081" }, state_file: path.join(dir, "state.json"), discovery: { backends: [] } }));
    const proc = spawn("unshare", ["--net", "--map-root-user", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', process.execPath, CLI, "--config", file], {
      cwd: dir,
      env: { ...process.env, GOBALANCER_API_TOKEN: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const lb = new BalancerProcess(proc, dir);
    try {
      const started = await Promise.race([
        lb.waitForLog((l) => l.msg === "gobalancer started", 15_000, "gobalancer started"),
        lb.exited.then((e) => {
          throw new Error(`exited early ${JSON.stringify(e)}: ${lb.otherOutput.join("\n")} ${JSON.stringify(lb.logs)}`);
        }),
      ]);
      assert.equal(started.api, "127.0.0.1:8081");
      const inside = (script: string) => run("nsenter", [`--net=/proc/${proc.pid}/ns/net`, "sh", "-c", script], { timeout: 10_000 });

      const listed = await inside("# List all backends\ncurl http://localhost:8081/backends");
      assert.deepEqual(JSON.parse(listed.stdout), []);

      const added = await inside(
        '# Add a backend\ncurl -X POST http://localhost:8081/backends \\\n-H "Content-Type: application/json" \\\n-d \'{"address": "192.168.1.100:8080", "weight": 2}\'',
      );
      const backend = JSON.parse(added.stdout) as BackendJson;
      assert.deepEqual([backend.address, backend.weight, backend.source], ["192.168.1.100:8080", 2, "api"]);

      const after = JSON.parse((await inside("curl http://localhost:8081/backends")).stdout) as BackendJson[];
      assert.deepEqual(after.map((b) => [b.address, b.weight]), [["192.168.1.100:8080", 2]]);
    } finally {
      await lb.stop(2000);
    }
  });
});
