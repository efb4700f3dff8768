import type { AddressInfo } from "node:net";
import { availableParallelism } from "node:os";
import type { Logger } from "pino";
import { exposureProblem } from "./api/auth.ts";
import { BackendChanges } from "./api/changes.ts";
import { ApiServer } from "./api/server.ts";
import { openStateStore } from "./store/open.ts";
import { configDifferences, type ReloadResult } from "./config/reload.ts";
import { ConfigError, loadConfigFile } from "./config/load.ts";
import type { Config } from "./config/schema.ts";
import { DockerSource } from "./discovery/docker.ts";
import { StaticSource } from "./discovery/static.ts";
import type { DiscoverySource } from "./discovery/source.ts";
import { KubernetesSource } from "./discovery/kubernetes.ts";
import { HealthMonitor } from "./health/monitor.ts";
import { checkAccessLog, openAccessLog, type AccessLog } from "./log/access-log.ts";
import { Metrics } from "./metrics/metrics.ts";
import { packageVersion } from "./version.ts";
import { CounterTable, CounterView } from "./pool/counters.ts";
import { BackendPool, type BackendView } from "./pool/pool.ts";
import { DataPlane, type DataPath, type PlaneSettings } from "./proxy/data-plane.ts";
import { descriptorConnectionCap } from "./proxy/descriptors.ts";
import { loadHandleBindings } from "./proxy/node-internals.ts";
import { encodeLocalHeader } from "./proxy/proxy-protocol.ts";
import { ThreadedDataPlane } from "./proxy/threads.ts";

/**
 * GoBalancer assembled: the pool, its sources, and the data plane reading the pool's
 * snapshots. Owns start-up order and graceful shutdown.
 */
export class Balancer {
  readonly pool: BackendPool;
  private config: Config;
  /** The file reload() reads; undefined when the config did not come from a file. */
  private readonly configFile: string | undefined;
  private reloading: Promise<unknown> = Promise.resolve();
  private readonly log: Logger;
  private readonly dataPlane: DataPlane | ThreadedDataPlane;
  private readonly threads: number;
  private readonly dataPath: DataPath;
  private readonly health: HealthMonitor;
  private sources: DiscoverySource[] = [];
  private readonly changes: BackendChanges;
  private readonly api: ApiServer;
  private listening: AddressInfo | undefined;
  private shuttingDown = false;

  /**
   * `onFatal` is called if the process can no longer work correctly (a data-plane thread
   * died): the caller should log and exit so a supervisor restarts it.
   */
  constructor(config: Config, logger: Logger, onFatal: (err: Error) => void = () => {}, configFile?: string) {
    // Before anything starts (threads included): an open admin API is refused outright.
    const exposed = exposureProblem(config.api);
    if (exposed) throw new Error(exposed);
    this.config = config;
    this.configFile = configFile;
    this.log = logger;
    this.threads = config.workers === "auto" ? availableParallelism() : config.workers;
    // Threads open their own access log; with one thread the data plane below opens it.
    if (this.threads > 1) checkAccessLog(config.accessLog);
    const counters = new CounterTable(this.threads);
    this.pool = new BackendPool({ logger, counters });
    this.health = new HealthMonitor({ settings: config.healthCheck, sink: this.pool, logger, header: (target) => this.probeHeader(target.key) });
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
      ...planeSettings(config),
      listen: config.listen,
      dataPath: this.dataPath,
      descriptorCap: descriptorConnectionCap(),
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
      store: openStateStore(config, logger),
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
      reload: () => this.reload(),
    });
    this.sources = [this.createSource(config)];
  }

  /** Probes open with a LOCAL header where client traffic gets a PROXY header (as HAProxy's checks). */
  private probeHeader(key: string): Buffer | null {
    const protocol = this.pool.view(key)?.proxyProtocol ?? this.config.proxyProtocol;
    return protocol === "off" ? null : encodeLocalHeader(protocol === "v1" ? 1 : 2);
  }

  private createSource(config: Config): DiscoverySource {
    const { discovery } = config;
    const logger = this.log;
    if (discovery.type === "static") return new StaticSource(discovery.backends, (d) => this.pool.reconcile("static", d));
    if (discovery.type === "kubernetes") return new KubernetesSource({ ...discovery.kubernetes, logger, apply: (d) => void this.pool.reconcile("kubernetes", d) });
    if (discovery.type === "docker") return new DockerSource({ ...discovery.docker, logger, apply: (d) => void this.pool.reconcile("docker", d) });
    throw new Error(`discovery type ${discovery.type} is not available in this build`);
  }

  /**
   * Restores the API's saved changes, starts discovery, then listens (API first, then
   * clients). Rejects (with everything stopped) on failure.
   */
  async start(): Promise<AddressInfo> {
    // Before discovery, so saved weights apply as discovered backends appear.
    await this.changes.restore();
    for (const source of this.sources) await source.start();
    // From now on, backends that join or come back up ramp up; those here now do not.
    this.pool.setSlowStart(slowStartOf(this.config));
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
        dashboard: dashboardUrl(api),
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
    this.pool.stop();
    await this.stopSources();
    const forced = await this.dataPlane.drain(this.config.timeouts.shutdownMs);
    // The API serves (answering /health with 503) until the drain is over.
    await this.api.close();
    await this.changes.stop();
    this.log.info({ closed_at_deadline: forced }, "shutdown complete");
  }

  /**
   * Reads the config file again and applies what changed, without cutting an open
   * connection (SIGHUP, POST /reload). An invalid file, or a new listen address that
   * cannot be bound, changes nothing. Settings that need a restart are left as they were
   * and named. One reload at a time: a second waits for the first.
   */
  reload(): Promise<ReloadResult> {
    const run = this.reloading.then(() => this.reloadNow());
    this.reloading = run.catch(() => undefined);
    return run;
  }

  private async reloadNow(): Promise<ReloadResult> {
    const file = this.configFile;
    if (file === undefined) return this.refuse("the config did not come from a file");
    if (this.shuttingDown) return this.refuse("shutting down");
    let loaded: Config;
    try {
      loaded = await loadConfigFile(file);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      this.log.error({ config: file, problems: err.problems }, "reload refused: invalid config; still running on the previous one");
      return { status: "invalid", file, problems: err.problems };
    }
    const { applied, needRestart, config: next } = configDifferences(this.config, loaded);
    const previous = this.config;
    // What can fail comes first, so a failure leaves everything as it was.
    const exposed = exposureProblem(next.api);
    if (exposed !== undefined) return this.refuse(exposed);
    let accessLog: AccessLog | null = null;
    try {
      if (this.dataPlane instanceof DataPlane) accessLog = openAccessLog(next.accessLog, this.log);
      else checkAccessLog(next.accessLog);
    } catch (err) {
      return this.refuse((err as Error).message);
    }
    const moving = previous.listen.key !== next.listen.key;
    let listening: AddressInfo | undefined;
    if (moving) {
      try {
        listening = await this.dataPlane.addListener(next.listen);
      } catch (err) {
        void accessLog?.finish();
        return this.refuse((err as Error).message);
      }
    }
    this.config = next;
    this.log.level = next.log.level;
    if (next.api.token !== previous.api.token) this.api.setToken(next.api.token);
    this.health.configure(next.healthCheck);
    this.pool.setSlowStart(slowStartOf(next));
    if (this.dataPlane instanceof DataPlane) this.dataPlane.configure(planeSettings(next), accessLog);
    else await this.dataPlane.configure(planeSettings(next), next.accessLog, next.log.level);
    if (applied.includes("discovery")) await this.rediscover(previous, next);
    // The new backends (and slow-start settings) reach threads as a snapshot message after
    // the settings above: the reload is not done, nor said to be, until every thread routes by it.
    await this.dataPlane.snapshotApplied();
    if (listening !== undefined) {
      // Only now: the new listener has been accepting since addListener.
      await this.dataPlane.closeOldListener();
      this.listening = listening;
    }
    if (needRestart.length > 0) this.log.warn({ keys: needRestart }, "reload: these settings need a restart and were left as they were");
    this.log.info({ config: file, applied, ...(moving ? { listen: formatAddress(listening!) } : {}) }, "config reloaded");
    return { status: "reloaded", applied, needRestart };
  }

  private refuse(reason: string): ReloadResult {
    this.log.error({ reason }, "reload refused; still running on the previous config");
    return { status: "refused", reason };
  }

  /** Discovery changed: static backends are reconciled; another kind of source replaces the old. */
  private async rediscover(previous: Config, next: Config): Promise<void> {
    const [current] = this.sources;
    if (next.discovery.type === "static" && current instanceof StaticSource) {
      current.update(next.discovery.backends);
      return;
    }
    await this.stopSources();
    // Another kind of source: the old one's backends go (open connections to them finish).
    // The same kind, configured anew: its backends stay until the new source's first set
    // replaces them, so routing has no gap.
    if (previous.discovery.type !== next.discovery.type) this.pool.reconcile(previous.discovery.type, []);
    this.sources = [this.createSource(next)];
    for (const source of this.sources) await source.start();
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

/** ip_hash is not ramped (a client's backend must not depend on the time), so no share shows a ramp. */
function slowStartOf(config: Config): number {
  return config.algorithm === "ip_hash" ? 0 : config.slowStartMs;
}

/** The part of the config a running data plane takes (at start and on reload). */
function planeSettings(config: Config): PlaneSettings {
  return {
    algorithm: config.algorithm,
    retries: config.retries,
    maxConnections: config.maxConnections,
    connectTimeoutMs: config.timeouts.connectMs,
    idleTimeoutMs: config.timeouts.idleMs,
    queueTimeoutMs: config.timeouts.queueMs,
    proxyProtocol: config.proxyProtocol,
    listenProxyProtocol: config.listenProxyProtocol,
  };
}

export function formatAddress(a: AddressInfo): string {
  return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

/** Where a browser on this machine finds the dashboard: a wildcard API address reads as localhost. */
function dashboardUrl(api: AddressInfo): string {
  if (api.address === "::" || api.address === "0.0.0.0") return `http://localhost:${api.port}/`;
  return `http://${formatAddress(api)}/`;
}
