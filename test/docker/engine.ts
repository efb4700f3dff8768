/**
 * A real, private Docker engine for the tests: installs what is missing (Debian packages),
 * starts dockerd through engine.sh with everything under a temporary directory and in a
 * network namespace of its own (so the host's firewall does not apply to its containers),
 * and tears it all down afterwards, also when the test process dies (engine.sh sees its
 * stdin close).
 */
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import Docker from "dockerode";

const run = promisify(execFile);
const SCRIPT = path.join(import.meta.dirname, "engine.sh");
/** The client that comes with the engine (docker.io), whatever else is on PATH. */
export const DOCKER_CLI = "/usr/bin/docker";

/** What the Docker tests need from the machine, by Debian package. */
const PACKAGES: ReadonlyArray<{ pkg: string; provides: string }> = [
  { pkg: "docker.io", provides: "/usr/sbin/dockerd" },
  // Static, so it runs alone in an image made from nothing but itself.
  { pkg: "busybox-static", provides: "/bin/busybox" },
  { pkg: "docker-compose", provides: "/usr/bin/docker-compose" },
];

function installed(pkg: string): boolean {
  const r = spawnSync("dpkg-query", ["-W", "-f=${Status}", pkg], { encoding: "utf8" });
  return r.status === 0 && r.stdout.startsWith("install ok installed");
}

/** Installs the missing packages with apt-get; a no-op when all are there. */
export function ensurePackages(extra: ReadonlyArray<{ pkg: string; provides: string }> = []): void {
  const missing = [...PACKAGES, ...extra].filter((p) => !installed(p.pkg) || !existsSync(p.provides)).map((p) => p.pkg);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new Error(`docker tests need root to install ${missing.join(", ")} and run dockerd; run as root or install them first`);
  }
  const apt = (args: string[]) =>
    spawnSync("apt-get", ["-o", "DPkg::Lock::Timeout=300", ...args], {
      encoding: "utf8",
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  const install = ["install", "-y", "--no-install-recommends", ...missing];
  let r = apt(install);
  if (r.status !== 0) {
    // A fresh machine may have no package lists yet.
    apt(["update"]);
    r = apt(install);
  }
  if (r.error || r.status !== 0) {
    throw new Error(`apt-get install ${missing.join(" ")} failed: ${r.error?.message ?? r.stderr.trim().split("\n").slice(-3).join(" | ")}`);
  }
}

/** A /16 in 10.0.0.0/8 that no interface or route on this machine uses yet. */
function freeNetwork(): number {
  const used = new Set<number>();
  const text = ["addr", "route"].map((what) => spawnSync("ip", ["-4", "-o", what], { encoding: "utf8" }).stdout ?? "").join("\n");
  for (const m of text.matchAll(/\b10\.(\d+)\./g)) used.add(Number(m[1]));
  const candidates: number[] = [];
  for (let n = 128; n < 255; n++) if (!used.has(n)) candidates.push(n);
  if (candidates.length === 0) throw new Error("no free 10.x.0.0/16 network for the test engine");
  return candidates[Math.floor(Math.random() * candidates.length)]!;
}

/** How an engine uses its 10.x.0.0/16 (x is `net`). */
function addressPlan(net: number) {
  const x = `10.${net}`;
  return {
    subnet: `${x}.0.0/16`,
    /** Networks the engine creates, a /24 each. */
    pool: `${x}.0.0/17`,
    /** The default bridge. */
    bridge: `${x}.255.1/24`,
    /** The link between the host and the engine's namespace, a /30: the host's end… */
    host: `${x}.254.1`,
    /** …and the engine's. */
    engine: `${x}.254.2`,
  };
}

export interface CliResult {
  stdout: string;
  stderr: string;
}

export class DockerEngine {
  /** DOCKER_HOST value for this engine. */
  readonly host: string;
  readonly socket: string;
  readonly docker: Docker;
  readonly dir: string;
  /** Second octet of this engine's 10.x.0.0/16; networks the tests create live inside it. */
  readonly net: number;
  /**
   * The engine's end of the link to its namespace: where published ports listen (publish
   * on this address, not 127.0.0.1, which is the namespace's own loopback) and where
   * `--network host` containers and builds live.
   */
  readonly address: string;
  /** This side's end of that link: what the engine's containers reach of the host. */
  readonly hostAddress: string;
  private readonly wrapper: ChildProcess;
  private readonly exited: Promise<void>;
  private stdout = "";

  private constructor(dir: string, net: number, wrapper: ChildProcess) {
    this.dir = dir;
    this.net = net;
    const plan = addressPlan(net);
    this.address = plan.engine;
    this.hostAddress = plan.host;
    this.socket = path.join(dir, "docker.sock");
    this.host = `unix://${this.socket}`;
    this.docker = new Docker({ socketPath: this.socket });
    this.wrapper = wrapper;
    wrapper.stdout!.setEncoding("utf8").on("data", (d: string) => (this.stdout += d));
    wrapper.stderr!.setEncoding("utf8").on("data", (d: string) => (this.stdout += d));
    wrapper.stdin!.on("error", () => {}); // the wrapper may be gone already
    this.exited = new Promise((resolve) => wrapper.once("exit", () => resolve()));
  }

  /**
   * Installs what is missing, starts dockerd and waits until it answers. `netns` (a
   * namespace file) runs the engine from inside that network namespace instead of ours,
   * as if it were the host: for tests of the engine itself.
   */
  static async start(opts: { netns?: string } = {}): Promise<DockerEngine> {
    ensurePackages();
    // Short path: the engine's sockets live below it and unix socket paths are limited.
    const dir = mkdtempSync("/tmp/gbd-");
    const net = freeNetwork();
    // The host's end of the link; it shows in `ip link` and must fit 15 characters.
    const link = `gbd${process.pid % 100000}x${net}`;
    const plan = addressPlan(net);
    const argv = ["sh", SCRIPT, dir, link, plan.subnet, plan.bridge, plan.pool, `${plan.host}/30`, `${plan.engine}/30`];
    if (opts.netns) argv.unshift("nsenter", `--net=${opts.netns}`);
    // detached: in its own process group, so a Ctrl-C meant for the test runner does not
    // kill the engine before it has cleaned up; it cleans up when our pipe closes.
    const wrapper = spawn(argv[0]!, argv.slice(1), {
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    const engine = new DockerEngine(dir, net, wrapper);
    try {
      await engine.waitReady(30_000);
    } catch (err) {
      const why = `${(err as Error).message}\n${engine.logTail()}`;
      await engine.stop();
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`could not start a Docker engine for the tests: ${why}`);
    }
    return engine;
  }

  /** Last lines of dockerd's log and of the wrapper's output, for error messages. */
  logTail(lines = 15): string {
    let log = "";
    try {
      log = readFileSync(path.join(this.dir, "dockerd.log"), "utf8");
    } catch {}
    return [...log.trim().split("\n").slice(-lines), this.stdout.trim()].filter(Boolean).join("\n");
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let gone = false;
    void this.exited.then(() => (gone = true));
    let last: unknown;
    while (Date.now() < deadline) {
      if (gone) throw new Error("dockerd exited during start-up");
      try {
        await Promise.race([this.docker.ping(), new Promise((_, reject) => setTimeout(() => reject(new Error("ping timed out")), 2000).unref())]);
        return;
      } catch (err) {
        last = err;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`dockerd did not answer within ${timeoutMs} ms: ${String(last)}`);
  }

  /** Stops dockerd and starts it again on the same state (containers, images, networks). */
  async restart(): Promise<void> {
    const before = this.stdout.length;
    this.wrapper.stdin!.write("restart\n");
    const deadline = Date.now() + 40_000;
    while (!this.stdout.slice(before).includes("restarted")) {
      if (Date.now() > deadline) throw new Error(`engine restart timed out\n${this.logTail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.waitReady(30_000);
  }

  /** Removes every container and network, stops dockerd and deletes the directory. */
  async stop(): Promise<void> {
    this.wrapper.stdin!.end();
    const timer = setTimeout(() => this.wrapper.kill("SIGKILL"), 120_000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Runs the docker CLI against this engine; rejects with its stderr on failure. */
  async cli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
    return this.command(DOCKER_CLI, args, opts);
  }

  /** Runs any command with DOCKER_HOST set to this engine. */
  async command(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
    try {
      return await run(file, args, {
        cwd: opts.cwd,
        env: { ...process.env, ...opts.env, DOCKER_HOST: this.host },
        maxBuffer: 64 << 20,
        timeout: opts.timeoutMs ?? 120_000,
      });
    } catch (err) {
      const e = err as Error & { stderr?: string; stdout?: string };
      throw new Error(`${file} ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`.trim());
    }
  }
}
