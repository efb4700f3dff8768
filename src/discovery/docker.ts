import { createInterface } from "node:readline";
import Docker from "dockerode";
import type { Logger } from "pino";
import type { DesiredBackend } from "../pool/pool.ts";
import { factsFromInspect, judge, type ContainerFacts, type JudgeOptions, type Verdict } from "./docker-container.ts";
import { errorText } from "./error-text.ts";
import { backoffDelay, sleep, type Backoff } from "./retry.ts";
import type { ApplyDesired, DiscoverySource } from "./source.ts";

/**
 * Docker discovery: every running container labelled `<label>=true` is a backend (see
 * judge() for address and weight). It lists the containers, then follows the events
 * stream; every change re-inspects the container concerned and hands the pool the full
 * desired set. When the stream breaks or the engine restarts it reconnects with backoff
 * and lists again, so nothing missed while away can linger.
 */
export interface DockerSourceOptions {
  /** `discovery.docker.host`: "" for DOCKER_HOST, else /var/run/docker.sock. */
  readonly host: string;
  readonly label: string;
  readonly network: string;
  readonly apply: ApplyDesired;
  readonly logger: Logger;
  /** Where DOCKER_HOST and friends are read; the process environment by default. */
  readonly env?: NodeJS.ProcessEnv;
  /** Reconnect delays: doubling from initialMs up to maxMs, each ±20% (see retry.ts). */
  readonly backoff?: Backoff;
  /** Limit for one list or inspect call (never for the events stream). */
  readonly requestTimeoutMs?: number;
}

/** A connection that lasted this long resets the reconnect backoff. */
const STABLE_MS = 60_000;

/** The container and network events that can change a container's verdict. */
const EVENTS = ["start", "unpause", "die", "stop", "kill", "pause", "destroy", "health_status", "connect", "disconnect"];

/**
 * Signals (as Docker reports them in kill events) that end a container in practice:
 * the backend drains from that moment rather than when the process finally exits.
 */
const TERMINATING_SIGNALS = new Set(["2", "3", "9", "15", "SIGINT", "SIGQUIT", "SIGKILL", "SIGTERM", "INT", "QUIT", "KILL", "TERM"]);

interface DockerEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
}

interface Tracked {
  facts: ContainerFacts;
  verdict: Verdict;
}

/** How to reach the engine, and how to name it in logs. */
export interface DockerEndpoint {
  /** undefined: let dockerode read DOCKER_HOST itself (TLS and ssh settings included). */
  readonly options: Docker.DockerOptions | undefined;
  readonly describe: string;
}

/**
 * Resolves `discovery.docker.host`: `unix:///path`, a socket path, or `tcp://host:port`.
 * Empty means DOCKER_HOST when set, else /var/run/docker.sock.
 */
export function dockerEndpoint(host: string, env: NodeJS.ProcessEnv): DockerEndpoint {
  if (host === "") {
    const fromEnv = env.DOCKER_HOST ?? "";
    if (fromEnv === "") return { options: { socketPath: "/var/run/docker.sock" }, describe: "unix:///var/run/docker.sock" };
    return { options: undefined, describe: fromEnv };
  }
  if (host.startsWith("/")) return { options: { socketPath: host }, describe: `unix://${host}` };
  if (host.startsWith("unix://") && host.length > "unix://".length) {
    return { options: { socketPath: host.slice("unix://".length) }, describe: host };
  }
  const m = /^tcp:\/\/(\[[0-9a-fA-F:.]+\]|[^:/\s]+):(\d{1,5})\/?$/.exec(host);
  if (m && Number(m[2]) >= 1 && Number(m[2]) <= 65535) {
    return { options: { host: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]), protocol: "http" }, describe: host };
  }
  throw new Error(`discovery.docker.host must be unix:///path/to/docker.sock, a socket path or tcp://host:port (got ${JSON.stringify(host)})`);
}

export class DockerSource implements DiscoverySource {
  readonly kind = "docker" as const;
  private readonly docker: Docker;
  private readonly endpoint: string;
  private readonly judging: JudgeOptions;
  private readonly apply: ApplyDesired;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly requestTimeoutMs: number;

  private readonly containers = new Map<string, Tracked>();
  /** Containers sent a terminating signal that have not died yet: draining. */
  private readonly stopping = new Set<string>();
  /** Bumped per container on every event, so a slow inspect cannot undo a newer one. */
  private readonly generation = new Map<string, number>();
  /** The last warning logged per container, so each problem is logged once. */
  private readonly warned = new Map<string, string>();

  /** Aborted by stop(): ends the wait for a reconnect. */
  private readonly lifetime = new AbortController();
  /** Aborts everything belonging to the current connection (stream, lists, inspects). */
  private session: AbortController | undefined;
  /** Connection attempts that failed since the last success (for log cadence). */
  private failures = 0;
  /** Reconnects since the backoff was reset; only a connection that lasted a while resets it (no reconnect storms). */
  private retries = 0;
  /** When the current connection was established; undefined while disconnected. */
  private connectedAt: number | undefined;
  private connectedOnce = false;

  constructor(opts: DockerSourceOptions) {
    const endpoint = dockerEndpoint(opts.host, opts.env ?? process.env);
    this.docker = new Docker(endpoint.options);
    this.endpoint = endpoint.describe;
    this.judging = { label: opts.label, network: opts.network };
    this.apply = opts.apply;
    this.log = opts.logger.child({ discovery: "docker" });
    this.backoff = opts.backoff ?? { initialMs: 250, maxMs: 5000 };
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
  }

  /** Resolves after the first full set is applied, or once retrying has begun. */
  async start(): Promise<void> {
    await this.connect();
  }

  async stop(): Promise<void> {
    this.lifetime.abort();
    this.session?.abort();
    this.session = undefined;
  }

  private get stopped(): boolean {
    return this.lifetime.signal.aborted;
  }

  /**
   * Subscribes to events first and lists second, so nothing that happens in between is
   * lost; events that arrive during the listing wait until it is applied.
   */
  private async connect(): Promise<void> {
    if (this.stopped) return;
    const session = new AbortController();
    this.session = session;
    const pending: DockerEvent[] = [];
    let listed = false;
    // The stream itself must live forever, so only its start is limited in time.
    const slow = setTimeout(() => session.abort(new Error(`no answer within ${this.requestTimeoutMs} ms`)), this.requestTimeoutMs);
    try {
      const stream = (await this.docker
        .getEvents({ filters: { type: ["container", "network"], event: EVENTS }, abortSignal: session.signal })
        .finally(() => clearTimeout(slow))) as NodeJS.ReadableStream;
      this.follow(stream, session, (event) => (listed ? this.onEvent(event, session) : pending.push(event)));
      await this.resync(session);
      listed = true;
      for (const event of pending.splice(0)) this.onEvent(event, session);
    } catch (err) {
      this.lost(session, err);
      return;
    }
    if (session !== this.session) return;
    const fields = { host: this.endpoint, containers: this.containers.size, backends: this.desired().length };
    if (this.connectedOnce) this.log.info(fields, "docker reconnected; containers listed again");
    else this.log.info({ ...fields, label: this.judging.label }, "docker discovery started");
    this.failures = 0;
    this.connectedAt = Date.now();
    this.connectedOnce = true;
  }

  /** Parses the newline-delimited JSON events stream; its end means reconnecting. */
  private follow(stream: NodeJS.ReadableStream, session: AbortController, onEvent: (e: DockerEvent) => void): void {
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    lines.on("line", (raw: string) => {
      const line = raw.trim();
      if (line === "") return;
      try {
        onEvent(JSON.parse(line) as DockerEvent);
      } catch {
        this.log.debug({ line: line.slice(0, 200) }, "docker event not understood");
      }
    });
    // readline passes the stream's errors on; they are handled on the stream below.
    lines.on("error", () => {});
    const ended = (err?: Error) => this.lost(session, err ?? new Error("events stream ended"));
    stream.on("error", ended);
    stream.on("end", () => ended());
    stream.on("close", () => ended());
  }

  /** The connection is gone (or never came): drop it and try again after a delay. */
  private lost(session: AbortController, err: unknown): void {
    if (this.stopped || session !== this.session) return; // already handled, or stopping
    session.abort();
    this.session = undefined;
    const wasConnected = this.connectedAt !== undefined;
    if (wasConnected && Date.now() - this.connectedAt! > STABLE_MS) this.retries = 0;
    this.connectedAt = undefined;
    const delay = backoffDelay(this.backoff, ++this.retries);
    const fields = { host: this.endpoint, err: errorText(err), retry_in_ms: delay };
    if (wasConnected) {
      this.log.warn(fields, "docker connection lost; reconnecting");
    } else {
      this.failures++;
      // Logged on attempts 1, 2, 4, 8, …: visible, without a line every few seconds for hours.
      if ((this.failures & (this.failures - 1)) === 0) {
        const line = { ...fields, attempt: this.failures };
        if (!this.connectedOnce) this.log.error(line, "docker unreachable; retrying (other backends keep serving)");
        else this.log.warn(line, "docker still unreachable; retrying");
      }
    }
    // After stop() the sleep ends at once and connect() returns.
    void sleep(delay, this.lifetime.signal).then(() => this.connect());
  }

  /** Lists every enabled container and replaces what we knew with it. */
  private async resync(session: AbortController): Promise<void> {
    const signal = AbortSignal.any([session.signal, AbortSignal.timeout(this.requestTimeoutMs)]);
    // Running and paused containers; stopped ones are no backends anyway.
    const list = await this.docker.listContainers({ filters: { label: [`${this.judging.label}=true`] }, abortSignal: signal });
    const found = new Map<string, Tracked>();
    await eachLimited(list, 8, async (c) => {
      const facts = await this.inspect(c.Id, session);
      if (facts) found.set(facts.id, { facts, verdict: judge(facts, this.judging) });
    });
    if (session !== this.session) return;
    for (const [id, tracked] of found) this.report(tracked, this.containers.get(id)?.verdict);
    for (const id of this.containers.keys()) if (!found.has(id)) this.forget(id);
    for (const [id, tracked] of found) this.containers.set(id, tracked);
    this.publish();
  }

  /** `docker inspect`, as facts; undefined when the container no longer exists. */
  private async inspect(id: string, session: AbortController): Promise<ContainerFacts | undefined> {
    const signal = AbortSignal.any([session.signal, AbortSignal.timeout(this.requestTimeoutMs)]);
    try {
      return factsFromInspect(await this.docker.getContainer(id).inspect({ abortSignal: signal }));
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw err;
    }
  }

  private onEvent(event: DockerEvent, session: AbortController): void {
    const attributes = event.Actor?.Attributes ?? {};
    let id: string;
    if (event.Type === "network") {
      // connect/disconnect name the container in an attribute; only ours matter.
      id = attributes.container ?? "";
      if (!this.containers.has(id)) return;
    } else {
      id = event.Actor?.ID ?? "";
      if (attributes[this.judging.label] !== "true") return;
    }
    if (id === "") return;
    const action = event.Action ?? "";
    const generation = (this.generation.get(id) ?? 0) + 1;
    this.generation.set(id, generation);

    if (action === "destroy") {
      this.forget(id);
      this.publish();
      return;
    }
    if (action === "kill" && TERMINATING_SIGNALS.has(attributes.signal ?? "")) {
      this.stopping.add(id);
      if (this.containers.has(id)) this.publish();
      // No inspect: the container is still running until it dies, which is its own event.
      return;
    }
    if (action === "die" || action === "start") this.stopping.delete(id);

    this.inspect(id, session).then(
      (facts) => {
        if (session !== this.session || this.generation.get(id) !== generation) return; // superseded
        if (!facts) {
          this.forget(id);
        } else {
          const before = this.containers.get(id)?.verdict;
          const tracked = { facts, verdict: judge(facts, this.judging) };
          this.containers.set(id, tracked);
          this.report(tracked, before);
        }
        this.publish();
      },
      (err: unknown) => {
        // The stream is probably going too; its end triggers the reconnect and full resync.
        if (session === this.session) this.log.warn({ container: id.slice(0, 12), err: errorText(err) }, "docker inspect failed");
      },
    );
  }

  private forget(id: string): void {
    this.containers.delete(id);
    this.stopping.delete(id);
    this.warned.delete(id);
    this.generation.delete(id);
  }

  /** Logs what a user should know about one container: problems once, and why it left. */
  private report(tracked: Tracked, before: Verdict | undefined): void {
    const { facts, verdict } = tracked;
    const who = { container: facts.name, id: facts.id.slice(0, 12) };
    const warning = verdict.kind === "skip" || verdict.kind === "backend" ? verdict.warning : undefined;
    if (warning !== undefined && this.warned.get(facts.id) !== warning) {
      this.warned.set(facts.id, warning);
      if (verdict.kind === "skip") this.log.warn({ ...who, problem: warning }, "docker container skipped");
      else this.log.warn({ ...who, problem: warning }, "docker container address chosen among several networks");
    }
    if (verdict.kind === "out" && (verdict.reason === "paused" || verdict.reason === "unhealthy")) {
      if (before?.kind !== "out" || before.reason !== verdict.reason) this.log.info({ ...who, reason: verdict.reason }, "docker container out of rotation");
    }
  }

  /** The full desired set, in a stable order (by container name). */
  private desired(): DesiredBackend[] {
    const out: DesiredBackend[] = [];
    const seen = new Set<string>();
    const tracked = [...this.containers.values()].sort((a, b) => (a.facts.name < b.facts.name ? -1 : 1));
    for (const { facts, verdict } of tracked) {
      if (verdict.kind !== "backend") continue;
      const key = verdict.backend.address.key;
      if (seen.has(key)) continue; // two containers, one address (overlapping networks): first wins
      seen.add(key);
      out.push(this.stopping.has(facts.id) ? { ...verdict.backend, draining: true } : verdict.backend);
    }
    return out;
  }

  private publish(): void {
    if (!this.stopped) this.apply(this.desired());
  }
}

/** Runs `fn` over `items` with at most `limit` calls in flight; rejects on the first error. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
