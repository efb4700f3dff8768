import type { AddressInfo } from "node:net";
import { availableParallelism } from "node:os";
import type { Logger } from "pino";
import { exposureProblem } from "./api/auth.ts";
import { BackendChanges } from "./api/changes.ts";
import { ApiServer } from "./api/server.ts";
import { StateFile } from "./api/state-file.ts";
import type { Config } from "./config/schema.ts";
import { DockerSource } from "./discovery/docker.ts";
import { StaticSource } from "./discovery/static.ts";
import type { DiscoverySource } from "./discovery/source.ts";
import { KubernetesSource } from "./discovery/kubernetes.ts";
import { HealthMonitor } from "./health/monitor.ts";
import { checkAccessLog, openAccessLog } from "./log/access-log.ts";
import { Metrics } from "./metrics/metrics.ts";
import { packageVersion } from "./version.ts";
import { CounterTable, CounterView } from "./pool/counters.ts";
import { BackendPool, type BackendView } from "./pool/pool.ts";
import { DataPlane, type DataPath } from "./proxy/data-plane.ts";
import { descriptorConnectionCap } from "./proxy/descriptors.ts";
import { loadHandleBindings } from "./proxy/node-internals.ts";
import { ThreadedDataPlane } from "./proxy/threads.ts";

/**
 * GoBalancer assembled: the pool, its sources, and the data plane reading the pool's
 * snapshots. Owns start-up order and graceful shutdown.
 */
export class Balancer {
  readonly pool: BackendPool;
  private readonly config: Config;
  private readonly log: Logger;
  private readonly dataPlane: DataPlane | ThreadedDataPlane;
  private readonly threads: number;
  private readonly dataPath: DataPath;
  private readonly health: HealthMonitor;
  private readonly sources: DiscoverySource[] = [];
  private readonly changes: BackendChanges;
  private readonly api: ApiServer;
  private listening: AddressInfo | undefined;
  private shuttingDown = false;

  /**
   * `onFatal` is called if the process can no longer work correctly (a data-plane thread
   * died): the caller should log and exit so a supervisor restarts it.
   */
  constructor(config: Config, logger: Logger, onFatal: (err: Error) => void = () => {}) {
    // Before anything starts (threads included): an open admin API is refused outright.
    const exposed = exposureProblem(config.api);
    if (exposed) throw new Error(exposed);
    this.config = config;
    this.log = logger;
    this.threads = config.workers === "auto" ? availableParallelism() : config.workers;
    // Threads open their own access log; with one thread the data plane below opens it.
    if (this.threads > 1) checkAccessLog(config.accessLog);
    const counters = new CounterTable(this.threads);
    this.pool = new BackendPool({ logger, counters });
    this.health = new HealthMonitor({ settings: config.healthCheck, sink: this.pool, logger });
    // Registered before any source starts, so every backend is probed from the moment it joins.
    this.pool.onMembership((change) => {
      this.health.unwatch(change.removed);
      this.health.watch(change.added);
    });
    // maint pauses a backend's health checks; leaving it starts them again.
    this.pool.onAdminState((view, state, previous) => {
      if (state === "maint") this.health.unwatch([view]);
      else if (previous === "maint") this.health.watch([view]);
    });
    // Failed client dials count toward `fall`; from threads they arrive by message.
    const onDialFailure = (backend: BackendView, reason: string) => this.health.reportPassiveFailure(backend.key, reason);
    this.dataPath = resolveDataPath(config.dataPath, logger);
    const planeOptions = {
      listen: config.listen,
      dataPath: this.dataPath,
      algorithm: config.algorithm,
      retries: config.retries,
      maxConnections: config.maxConnections,
      descriptorCap: descriptorConnectionCap(),
      connectTimeoutMs: config.timeouts.connectMs,
      idleTimeoutMs: config.timeouts.idleMs,
    };
    // One thread: the data plane shares the main thread's event loop, with no message
    // hop for snapshots. More: each thread has its own listener on the same port.
    this.dataPlane =
      this.threads === 1
        ? new DataPlane({
            ...planeOptions,
            counters: new CounterView(counters.buffers, 0),
            logger,
            accessLog: openAccessLog(config.accessLog, logger),
            onDialFailure,
          })
        : new ThreadedDataPlane({
            threads: this.threads,
            options: planeOptions,
            counters: counters.buffers,
            log: config.log,
            accessLog: config.accessLog,
            logger,
            onDialFailure,
            onThreadCrash: (err) => onFatal(new Error(`data-plane thread crashed: ${err.message}`, { cause: err })),
          });
    this.pool.onSnapshot((snapshot) => this.dataPlane.setSnapshot(snapshot));
    this.changes = new BackendChanges({
      pool: this.pool,
      store: new StateFile(config.stateFile),
      logger,
      applied: () => this.dataPlane.snapshotApplied(),
    });
    const metrics = new Metrics({
      pool: this.pool,
      counters,
      activeConnections: () => this.dataPlane.activeConnections,
      version: packageVersion(),
    });
    this.api = new ApiServer({
      metrics,
      listen: config.api.listen,
      token: config.api.token,
      pool: this.pool,
      changes: this.changes,
      logger,
      draining: () => this.shuttingDown,
    });
    if (config.discovery.type === "static") {
      this.sources.push(new StaticSource(config.discovery.backends, (d) => this.pool.reconcile("static", d)));
    } else if (config.discovery.type === "kubernetes") {
      this.sources.push(new KubernetesSource({ ...config.discovery.kubernetes, logger, apply: (d) => void this.pool.reconcile("kubernetes", d) }));
    } else if (config.discovery.type === "docker") {
      this.sources.push(new DockerSource({ ...config.discovery.docker, logger, apply: (d) => void this.pool.reconcile("docker", d) }));
    } else {
      throw new Error(`discovery type ${config.discovery.type} is not available in this build`);
    }
  }

  /**
   * Restores the API's saved changes, starts discovery, then listens (API first, then
   * clients). Rejects (with everything stopped) on failure.
   */
  async start(): Promise<AddressInfo> {
    // Before discovery, so saved weights apply as discovered backends appear.
    await this.changes.restore();
    for (const source of this.sources) await source.start();
    let api: AddressInfo;
    try {
      api = await this.api.listen();
    } catch (err) {
      this.health.stop();
      await this.stopSources();
      throw err;
    }
    try {
      this.listening = await this.dataPlane.listen();
    } catch (err) {
      this.health.stop();
      await Promise.allSettled([this.api.close(), this.stopSources()]);
      throw err;
    }
    this.log.info(
      {
        listen: formatAddress(this.listening),
        api: formatAddress(api),
        algorithm: this.config.algorithm,
        workers: this.threads,
        data_path: this.dataPath,
        backends: this.pool.size,
        discovery: this.config.discovery.type,
      },
      "gobalancer started",
    );
    return this.listening;
  }

  get draining(): boolean {
    return this.shuttingDown;
  }

  /** Stops accepting, lets open connections finish up to timeouts.shutdown, then closes them. */
  async shutdown(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    // Close the listeners before saying so: a client that connects after this line must
    // be refused, not accepted into a backlog that is about to be reset.
    await this.dataPlane.stopAccepting();
    const active = this.dataPlane.activeConnections;
    this.log.info({ active_connections: active, timeout_ms: this.config.timeouts.shutdownMs }, "shutting down: draining connections");
    this.health.stop(); // no new connections will be routed, so verdicts no longer matter
    await this.stopSources();
    const forced = await this.dataPlane.drain(this.config.timeouts.shutdownMs);
    // The API serves (answering /health with 503) until the drain is over.
    await this.api.close();
    this.log.info({ closed_at_deadline: forced }, "shutdown complete");
  }

  private async stopSources(): Promise<void> {
    await Promise.allSettled(this.sources.map((s) => s.stop()));
  }
}

/**
 * `auto` and `handles` run on libuv handles when this Node has them as expected
 * (node-internals.ts), else on net.Socket, said once, here.
 */
function resolveDataPath(wanted: "auto" | "handles" | "sockets", log: Logger): DataPath {
  if (wanted === "sockets") return "sockets";
  const bindings = loadHandleBindings();
  if (typeof bindings !== "string") return "handles";
  log.warn({ data_path: wanted, reason: bindings }, "libuv handles unavailable on this Node: the data path runs on net.Socket");
  return "sockets";
}

export function formatAddress(a: AddressInfo): string {
  return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
