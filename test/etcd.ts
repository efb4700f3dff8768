/**
 * Real etcd clusters on 127.0.0.1 for tests: Debian's etcd-server (installed when
 * missing), one or three members on free ports, data in a temp dir. Every member started
 * here is killed by `stop()`, and by this process's exit whatever happens.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import path from "node:path";
import { ensureDebianPackages } from "./apt.ts";
import { GiveUp, tempDir, waitFor } from "./harness.ts";
import { freePort } from "./ports.ts";

const ETCD = "/usr/bin/etcd";

/** PEM files for a cluster that serves clients over TLS and requires their certificates. */
export interface EtcdTls {
  ca: string;
  cert: string;
  key: string;
}
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

export class EtcdMember {
  readonly name: string;
  readonly dataDir: string;
  readonly peerUrl: string;
  clientUrl: string;
  private proc: ChildProcess | undefined;
  private readonly cluster: EtcdCluster;
  /** How the last process exited, when it did. */
  private exit: string | undefined;
  /** The last lines etcd wrote, for failure messages. */
  readonly output: string[] = [];

  /** Plain http, for /health when clients must speak TLS. */
  private readonly metricsUrl: string | undefined;

  constructor(cluster: EtcdCluster, name: string, dataDir: string, clientPort: number, peerPort: number, metricsPort?: number) {
    this.cluster = cluster;
    this.name = name;
    this.dataDir = dataDir;
    this.clientUrl = `${cluster.tls ? "https" : "http"}://127.0.0.1:${clientPort}`;
    this.peerUrl = `http://127.0.0.1:${peerPort}`;
    this.metricsUrl = metricsPort === undefined ? undefined : `http://127.0.0.1:${metricsPort}`;
  }

  get running(): boolean {
    return this.proc !== undefined;
  }

  /** Whether the last process this member started has exited. */
  get exited(): boolean {
    return this.exit !== undefined;
  }

  /** Starts the member; `clientUrl` moves it to another client address (its data stays). */
  start(clientUrl = this.clientUrl): void {
    if (this.proc) throw new Error(`etcd ${this.name} is already running`);
    this.clientUrl = clientUrl;
    const proc = spawn(
      ETCD,
      [
        `--name=${this.name}`,
        `--data-dir=${this.dataDir}`,
        `--listen-client-urls=${clientUrl}`,
        `--advertise-client-urls=${clientUrl}`,
        `--listen-peer-urls=${this.peerUrl}`,
        `--initial-advertise-peer-urls=${this.peerUrl}`,
        `--initial-cluster=${this.cluster.initialCluster}`,
        "--initial-cluster-state=new",
        `--initial-cluster-token=${this.cluster.token}`,
        "--logger=zap",
        "--log-level=warn",
        ...(this.cluster.tls
          ? [`--cert-file=${this.cluster.tls.cert}`, `--key-file=${this.cluster.tls.key}`, `--trusted-ca-file=${this.cluster.tls.ca}`, "--client-cert-auth", `--listen-metrics-urls=${this.metricsUrl}`]
          : []),
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    proc.stderr!.on("data", (d: Buffer) => {
      this.output.push(...d.toString().trim().split("\n"));
      this.output.splice(0, Math.max(0, this.output.length - 20));
    });
    running.add(proc);
    this.exit = undefined;
    proc.once("exit", (code, signal) => {
      running.delete(proc);
      this.exit = `exited with ${code ?? signal}`;
      if (this.proc === proc) this.proc = undefined;
    });
    this.proc = proc;
  }

  /** Kills the member (SIGKILL by default: no goodbye to its peers) and waits for it to exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill(signal);
    await exited;
  }

  /** Sends the member's process a signal: SIGSTOP freezes it (its peers lose it, its port stays open), SIGCONT resumes it. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void {
    this.proc?.kill(signal);
  }

  /** Resolves once the member answers its health check; fails at once if it exits. */
  async healthy(timeoutMs = 30_000): Promise<void> {
    let last = "no answer yet";
    const check = async () => {
      if (this.exit) throw new GiveUp(this.exit);
      try {
        const res = await fetch(`${this.metricsUrl ?? this.clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
        const body = await res.text();
        if (res.ok && (JSON.parse(body) as { health?: string }).health === "true") return true;
        last = `${res.status} ${body.trim()}`;
      } catch (err) {
        const cause = (err as Error).cause as Error | undefined;
        last = `${String(err)}${cause ? ` (${cause.message})` : ""}`;
      }
      return false;
    };
    try {
      await waitFor(check, timeoutMs, `etcd ${this.name} healthy`);
    } catch (err) {
      const why = err instanceof GiveUp ? err.message : `not healthy after ${timeoutMs} ms: ${last}`;
      throw new Error(`etcd ${this.name} at ${this.clientUrl} ${why}; it said: ${this.output.slice(-5).join(" | ") || "nothing"}`);
    }
  }

  /** This member's status through etcd's JSON gateway: its id and the leader it knows. */
  async status(): Promise<{ memberId: string; leader: string }> {
    const res = await fetch(`${this.clientUrl}/v3/maintenance/status`, { method: "POST", body: "{}", signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { header: { member_id: string }; leader: string };
    return { memberId: body.header.member_id, leader: body.leader };
  }
}

export class EtcdCluster {
  readonly members: EtcdMember[] = [];
  readonly token = `gobalancer-test-${process.pid}-${Date.now()}`;
  readonly tls: EtcdTls | undefined;
  private readonly root: string;

  private constructor(root: string, tls: EtcdTls | undefined) {
    this.root = root;
    this.tls = tls;
  }

  /**
   * Starts `size` members and waits until every one is healthy. A member that exits while
   * starting (its port taken meanwhile by another process) costs one more try on new ports.
   */
  static async start(size: 1 | 3, tls?: EtcdTls): Promise<EtcdCluster> {
    ensureDebianPackages(["etcd-server"], "the etcd tests");
    for (let attempt = 1; ; attempt++) {
      const cluster = new EtcdCluster(tempDir("gobalancer-etcd-"), tls);
      for (let i = 0; i < size; i++) {
        const metricsPort = tls ? await freePort() : undefined;
        cluster.members.push(new EtcdMember(cluster, `m${i}`, path.join(cluster.root, `m${i}`), await freePort(), await freePort(), metricsPort));
      }
      for (const m of cluster.members) m.start();
      try {
        await Promise.all(cluster.members.map((m) => m.healthy()));
        return cluster;
      } catch (err) {
        await cluster.stop();
        if (attempt === 3 || !cluster.members.some((m) => m.exited)) throw err;
      }
    }
  }

  get initialCluster(): string {
    return this.members.map((m) => `${m.name}=${m.peerUrl}`).join(",");
  }

  get endpoints(): string[] {
    return this.members.map((m) => m.clientUrl);
  }

  /** The member every running member names as leader. */
  async leader(): Promise<EtcdMember> {
    return waitFor(
      async () => {
        const statuses = await Promise.all(this.members.filter((m) => m.running).map(async (m) => ({ m, s: await m.status() })));
        const leaders = new Set(statuses.map(({ s }) => s.leader));
        if (leaders.size !== 1) return undefined;
        return statuses.find(({ s }) => s.memberId === s.leader)?.m;
      },
      10_000,
      "an etcd leader",
    );
  }

  /** Kills every member and removes the data. */
  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => m.kill()));
    rmSync(this.root, { recursive: true, force: true });
  }
}
