/**
 * Test helpers: the real gobalancer process, real backend servers on 127.0.0.1, and
 * clients. Everything listens on port 0 and everything started is stopped by `cleanup`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { stringify } from "yaml";

export const REPO = path.resolve(import.meta.dirname, "..");
export const CLI = path.join(REPO, "dist", "cli.js");

type Truthy<T> = Exclude<T, false | null | undefined | 0 | "">;

/** Thrown by a waitFor check to stop waiting at once: what it waits for can no longer happen. */
export class GiveUp extends Error {}

/**
 * Polls `check` until it returns a truthy value or `timeoutMs` passes (then throws). A
 * check that throws is tried again (the last error is reported), unless it throws GiveUp.
 */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 5000, what = "condition"): Promise<Truthy<Awaited<T>>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as Truthy<Awaited<T>>;
    } catch (err) {
      if (err instanceof GiveUp) throw err;
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function tempDir(prefix = "gobalancer-test-"): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running gobalancer process. */
export class BalancerProcess {
  readonly proc: ChildProcess;
  readonly logs: LogLine[] = [];
  /** Lines on stdout/stderr that were not JSON. */
  readonly otherOutput: string[] = [];
  readonly exited: Promise<Exit>;
  readonly dir: string;
  port = 0;
  apiPort = 0;

  constructor(proc: ChildProcess, dir: string) {
    this.proc = proc;
    this.dir = dir;
    const onLine = (line: string) => {
      if (line.trim() === "") return;
      try {
        this.logs.push(JSON.parse(line) as LogLine);
      } catch {
        this.otherOutput.push(line);
      }
    };
    lineReader(proc.stdout!, onLine);
    lineReader(proc.stderr!, onLine);
    this.exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  }

  /** Waits for a log line matching `predicate`. */
  waitForLog(predicate: (l: LogLine) => boolean, timeoutMs = 5000, what = "log line"): Promise<LogLine> {
    return waitFor(() => this.logs.find(predicate), timeoutMs, what);
  }

  signal(sig: NodeJS.Signals = "SIGTERM"): void {
    this.proc.kill(sig);
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 5000): Promise<Exit> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.exited;
    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  /** Base URL of the admin API. */
  get api(): string {
    return `http://127.0.0.1:${this.apiPort}`;
  }
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  /** Extra CLI arguments after --config. */
  args?: string[];
  /** Resolve as soon as the process is spawned, without waiting for "gobalancer started". */
  noWait?: boolean;
  /** Keep this directory (state file lives here); default: a new temp dir. */
  dir?: string;
  /** Run with this RLIMIT_NOFILE (soft and hard), through prlimit. */
  nofile?: number;
  /** How long to wait for "gobalancer started"; default 15 s. */
  startTimeoutMs?: number;
  /** Node options before the script (e.g. --import of a probe). */
  nodeArgs?: string[];
}

/**
 * The data path the end-to-end suites run on: `make test` runs them once on each
 * (GOBALANCER_TEST_DATA_PATH=handles, then sockets); unset, the default (auto) applies.
 */
export const TEST_DATA_PATH = process.env.GOBALANCER_TEST_DATA_PATH;

/**
 * `config` with the test defaults startBalancer adds: listen and API on 127.0.0.1 port 0
 * (the API's address as given, if given), the state file in `dir`, this run's data path.
 */
export function testConfig(dir: string, config: Record<string, unknown>): Record<string, unknown> {
  return {
    listen: "127.0.0.1:0",
    state_file: path.join(dir, "state.json"),
    ...(TEST_DATA_PATH ? { data_path: TEST_DATA_PATH } : {}),
    ...config,
    api: { listen: "127.0.0.1:0", ...(config.api as object | undefined) },
  };
}

/**
 * Starts gobalancer with `config` (an object written as YAML, or YAML text). Defaults
 * make it test-friendly: listen and API on 127.0.0.1 port 0, state file in a temp dir,
 * the data path of this run (TEST_DATA_PATH) unless the config names one.
 */
export async function startBalancer(config: Record<string, unknown> | string, opts: StartOptions = {}): Promise<BalancerProcess> {
  const dir = opts.dir ?? tempDir();
  const file = path.join(dir, "config.yaml");
  writeFileSync(file, typeof config === "string" ? config : stringify(testConfig(dir, config)));
  const argv = [process.execPath, ...(opts.nodeArgs ?? []), CLI, "--config", file, ...(opts.args ?? [])];
  if (opts.nofile) argv.unshift("prlimit", `--nofile=${opts.nofile}:${opts.nofile}`, "--");
  const proc = spawn(argv[0]!, argv.slice(1), {
    cwd: dir,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const balancer = new BalancerProcess(proc, dir);
  track(() => balancer.stop(1000).then(() => undefined));
  if (opts.noWait) return balancer;
  const started = await Promise.race([
    balancer.waitForLog((l) => l.msg === "gobalancer started", opts.startTimeoutMs ?? 15_000, "gobalancer started"),
    balancer.exited.then((e) => {
      throw new Error(`gobalancer exited early (${JSON.stringify(e)}): ${JSON.stringify(balancer.logs.slice(-3))} ${balancer.otherOutput.join("\n")}`);
    }),
  ]);
  balancer.port = portOf(String(started.listen));
  if (typeof started.api === "string") balancer.apiPort = portOf(started.api);
  return balancer;
}

/** Runs the CLI to completion; returns exit code and output. */
export function runCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [CLI, ...args], { cwd: opts.cwd ?? REPO, env: { ...process.env, ...opts.env } });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (d) => (stdout += d));
    proc.stderr.on("data", (d) => (stderr += d));
    proc.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

function lineReader(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  createInterface({ input: stream, crlfDelay: Infinity }).on("line", onLine);
}

// ---- backends ------------------------------------------------------------------------

export interface TestServer {
  readonly server: net.Server;
  readonly port: number;
  readonly address: string;
  /** Connections accepted so far. */
  readonly accepted: () => number;
  /** Connections open now. */
  readonly open: () => number;
  close(): Promise<void>;
}

/**
 * A backend on 127.0.0.1 (port 0 unless given) running `handler` for each connection.
 * `close` also destroys open connections.
 */
export async function startServer(handler: (socket: net.Socket) => void, port = 0, host = "127.0.0.1"): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    accepted++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    handler(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as net.AddressInfo).port;
  const result: TestServer = {
    server,
    port: bound,
    address: host.includes(":") ? `[${host}]:${bound}` : `${host}:${bound}`,
    accepted: () => accepted,
    open: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  track(() => result.close());
  return result;
}

/** A backend that writes `name` and a newline, then closes. */
export function startNamedBackend(name: string, port = 0): Promise<TestServer> {
  return startServer((socket) => socket.end(`${name}\n`), port);
}

/** A backend that echoes everything back and half-closes when the client does. */
export function startEchoBackend(): Promise<TestServer> {
  return startServer((socket) => socket.pipe(socket));
}

/** A port on 127.0.0.1 that refuses connections (bound, then closed). */
export async function refusedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/**
 * A port on 127.0.0.1 where connects hang: a listener in another process with a backlog
 * of 1 whose thread is blocked, so it never accepts. Once its accept queue is full (filled
 * here), the kernel drops further SYNs and a connect waits until the caller's timeout.
 */
export async function unansweredPort(): Promise<number> {
  const listener = spawn(
    process.execPath,
    [
      "-e",
      `const s = require("node:net").createServer();
       s.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () => {
         console.log(s.address().port);
         Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // never accept
       });`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  track(async () => void listener.kill("SIGKILL"));
  const port = await new Promise<number>((resolve, reject) => {
    listener.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
    listener.once("exit", (code) => reject(new Error(`listener exited with ${code}`)));
  });
  // Fill the accept queue: connect until a connect does not complete.
  for (let i = 0; i < 16; i++) {
    const socket = net.connect({ port, host: "127.0.0.1" });
    socket.on("error", () => {});
    track(async () => void socket.destroy());
    const connected = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 300);
      socket.once("connect", () => (clearTimeout(timer), resolve(true)));
    });
    if (!connected) return port;
  }
  throw new Error("could not fill the accept queue of the unanswered listener");
}

// ---- clients -------------------------------------------------------------------------

/** Connects, optionally sends and half-closes, and returns everything received until close. */
export function request(port: number, send?: string | Buffer, host = "127.0.0.1"): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on("data", (c) => chunks.push(c));
    socket.on("end", () => socket.end()); // like any client: done once the server is
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(chunks).toString()));
    socket.on("connect", () => {
      if (send !== undefined) socket.end(send);
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error("client timeout")));
  });
}

/** Opens a connection and resolves once it is established. */
export function connect(port: number, host = "127.0.0.1", allowHalfOpen = false): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host, allowHalfOpen });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
    track(async () => void socket.destroy());
  });
}

/**
 * Writes `text` on `socket` and resolves with the first bytes that come back: through an
 * echo backend, proof that the connection is proxied end to end (not merely accepted by
 * the kernel, nor stood in for by a health probe's connection).
 */
export function roundTrip(socket: net.Socket, text = "x"): Promise<string> {
  return new Promise((resolve) => {
    socket.once("data", (d: Buffer) => resolve(d.toString()));
    socket.write(text);
  });
}

// ---- cleanup -------------------------------------------------------------------------

const cleanups: Array<() => Promise<void>> = [];
function track(fn: () => Promise<void>): void {
  cleanups.push(fn);
}

/** Stops every process and server started through this module. Use in `after`/`afterEach`. */
export async function cleanup(): Promise<void> {
  const fns = cleanups.splice(0).reverse();
  await Promise.allSettled(fns.map((fn) => fn()));
}

/** Removes a temp directory made by tempDir. */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Sends `megabytes` of random data through an echo path on `port` (a balancer in front of
 * startEchoBackend) and reads it back, honouring back-pressure; `pace` runs before each
 * mebibyte is written (to slow the start of a transfer down, say). Resolves with the
 * bytes received and whether they hash the same as what was sent.
 */
export async function echoTransfer(port: number, megabytes: number, pace?: (block: number) => Promise<void>): Promise<{ receivedBytes: number; intact: boolean }> {
  const block = randomBytes(1 << 20);
  const sent = createHash("sha256");
  const received = createHash("sha256");
  let receivedBytes = 0;
  const socket = await connect(port);
  const done = new Promise<void>((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => {
      received.update(chunk);
      receivedBytes += chunk.length;
    });
    socket.on("end", resolve);
    socket.on("error", reject);
  });
  for (let i = 0; i < megabytes; i++) {
    await pace?.(i);
    sent.update(block);
    if (!socket.write(block)) await new Promise((r) => socket.once("drain", r));
  }
  socket.end();
  await done;
  return { receivedBytes, intact: received.digest("hex") === sent.digest("hex") };
}
