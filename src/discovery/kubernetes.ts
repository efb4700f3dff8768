import { isIP } from "node:net";
import type { Logger } from "pino";
import type { ConfigurationOptions, DiscoveryV1Api, KubeConfig, Watch } from "@kubernetes/client-node";
import { formatHostPort, parseHostPort } from "../pool/address.ts";
import type { DesiredBackend } from "../pool/pool.ts";
import type { ApplyDesired, DiscoverySource } from "./source.ts";

// ---- EndpointSlices → desired backends (pure) -----------------------------------------

/** One port of an EndpointSlice. */
export interface SlicePort {
  readonly name: string;
  /** Absent means "all ports" in the API, which gives us no port to dial. */
  readonly port: number | undefined;
  readonly protocol: string;
}

/** One endpoint, with the API's nil conditions already resolved to their documented meaning. */
export interface SliceEndpoint {
  /** The first address; the API says the others are fungible and consumers may ignore them. */
  readonly address: string | undefined;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
}

/** What discovery needs of one EndpointSlice, converted at the API boundary. */
export interface SliceFacts {
  readonly name: string;
  readonly addressType: string;
  readonly ports: readonly SlicePort[];
  readonly endpoints: readonly SliceEndpoint[];
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const optionalBool = (v: unknown): boolean | undefined => (typeof v === "boolean" ? v : undefined);

/**
 * Reads an EndpointSlice as the API server sends it (watch events carry raw JSON; the list
 * call returns client-node's model objects, which use the same property names). Returns
 * undefined for something that is not a named object.
 */
export function sliceFacts(obj: unknown): SliceFacts | undefined {
  if (!isObject(obj) || !isObject(obj.metadata) || typeof obj.metadata.name !== "string") return undefined;
  const ports: SlicePort[] = [];
  for (const p of Array.isArray(obj.ports) ? obj.ports : []) {
    if (!isObject(p)) continue;
    ports.push({
      name: typeof p.name === "string" ? p.name : "",
      port: typeof p.port === "number" ? p.port : undefined,
      protocol: typeof p.protocol === "string" ? p.protocol : "TCP", // the API's default
    });
  }
  const endpoints: SliceEndpoint[] = [];
  for (const e of Array.isArray(obj.endpoints) ? obj.endpoints : []) {
    if (!isObject(e)) continue;
    const c = isObject(e.conditions) ? e.conditions : {};
    // API semantics: a nil `ready` is unknown and "consumers should interpret this as ready";
    // a nil `serving` defers to `ready`; a nil `terminating` means not terminating.
    const ready = optionalBool(c.ready) ?? true;
    endpoints.push({
      address: Array.isArray(e.addresses) && typeof e.addresses[0] === "string" ? e.addresses[0] : undefined,
      ready,
      serving: optionalBool(c.serving) ?? ready,
      terminating: optionalBool(c.terminating) ?? false,
    });
  }
  return {
    name: obj.metadata.name,
    addressType: typeof obj.addressType === "string" ? obj.addressType : "",
    ports,
    endpoints,
  };
}

/**
 * The port to dial for `wanted` (a port name, a port number, or "" for the only port).
 * Only TCP ports count: a Service that also exposes UDP (DNS, say) still has one TCP port.
 */
export function choosePort(ports: readonly SlicePort[], wanted: string): { port: number } | { problem: string } {
  const tcp = ports.filter((p): p is SlicePort & { port: number } => p.protocol === "TCP" && p.port !== undefined);
  const list = tcp.map((p) => (p.name ? `${p.name}=${p.port}` : String(p.port))).join(", ");
  if (wanted === "") {
    if (tcp.length === 1) return checkedPort(tcp[0]!.port);
    if (tcp.length === 0) return { problem: "has no TCP port" };
    return { problem: `has several TCP ports (${list}); set discovery.kubernetes.port to pick one` };
  }
  // Port names must contain a letter (IANA_SVC_NAME), so an all-digit value is a number.
  const byNumber = /^\d+$/.test(wanted);
  const match = tcp.find((p) => (byNumber ? p.port === Number(wanted) : p.name === wanted));
  if (match) return checkedPort(match.port);
  return { problem: `has no TCP port ${byNumber ? "numbered" : "named"} ${wanted} (ports: ${list || "none"})` };
}

/** The API server validates ports; a slice that got past it with a bad one is skipped, not thrown on. */
function checkedPort(port: number): { port: number } | { problem: string } {
  return Number.isInteger(port) && port >= 1 && port <= 65535 ? { port } : { problem: `has TCP port ${JSON.stringify(port)}, not 1-65535` };
}

/** The desired set for one Service, and why any slice contributed nothing (by slice name). */
export interface DesiredFromSlices {
  readonly desired: DesiredBackend[];
  readonly problems: Map<string, string>;
}

/**
 * The union of the Service's slices: ready endpoints are routable; serving endpoints that
 * are terminating drain (open connections finish, no new ones); anything else is out.
 * An endpoint listed in two slices (as it can be while it moves) takes its best state.
 */
export function desiredFromSlices(slices: Iterable<SliceFacts>, wantedPort: string): DesiredFromSlices {
  const problems = new Map<string, string>();
  const chosen = new Map<string, DesiredBackend>();
  for (const slice of slices) {
    const family = slice.addressType === "IPv4" ? 4 : slice.addressType === "IPv6" ? 6 : 0;
    if (family === 0) {
      problems.set(slice.name, `has addressType ${slice.addressType || "(none)"}; only IPv4 and IPv6 slices are used`);
      continue;
    }
    const choice = choosePort(slice.ports, wantedPort);
    if ("problem" in choice) {
      problems.set(slice.name, choice.problem);
      continue;
    }
    for (const e of slice.endpoints) {
      const draining = !e.ready && e.serving && e.terminating;
      if (!e.ready && !draining) continue;
      if (e.address === undefined || isIP(e.address) !== family) {
        if (!problems.has(slice.name)) problems.set(slice.name, `has an endpoint address that is not ${slice.addressType}: ${e.address ?? "(none)"}`);
        continue;
      }
      const address = parseHostPort(formatHostPort(e.address, choice.port));
      const previous = chosen.get(address.key);
      if (previous && !previous.draining) continue;
      chosen.set(address.key, draining ? { address, weight: 1, draining: true } : { address, weight: 1 });
    }
  }
  // Sorted, so every replica hands the pool the same order.
  const desired = [...chosen.values()].sort((a, b) => (a.address.key < b.address.key ? -1 : a.address.key > b.address.key ? 1 : 0));
  return { desired, problems };
}

// ---- the informer ---------------------------------------------------------------------

export interface KubernetesSourceOptions {
  readonly namespace: string;
  readonly service: string;
  /** Port name or number; "" for the only port. */
  readonly port: string;
  readonly logger: Logger;
  readonly apply: ApplyDesired;
  /** Delay after the first failure, doubled per failure up to maxMs (each ±20%). */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  /** A list that has not answered in this time is abandoned and retried. */
  readonly listTimeoutMs?: number;
}

/** How one watch connection ended. */
interface WatchEnd {
  /** The newest resourceVersion seen (an event or a bookmark), to resume from. */
  readonly resourceVersion: string;
  /** The server says that resourceVersion is gone (410): only a fresh list can resync. */
  readonly expired: boolean;
  /** The response began streaming; false when the request itself failed. */
  readonly connected: boolean;
  readonly events: number;
  readonly error: string | undefined;
  readonly durationMs: number;
}

const SERVICE_LABEL = "kubernetes.io/service-name";

/**
 * Follows the EndpointSlices of one Service: list, then watch from the list's
 * resourceVersion, and hand the pool the full desired set after every change.
 *
 * Why a loop of our own over client-node's Watch and DiscoveryV1Api rather than its
 * ListWatch/makeInformer (2.0.1): ListWatch stops for good on any error other than 410 or
 * a client timeout (the caller must notice and restart it); its stop() cannot cancel a
 * list or a watch whose response has not begun, so events can arrive after stop; an
 * exception thrown while authenticating a reconnect becomes an unhandled rejection; it
 * never asks for bookmarks; and its reconnect delay grows to 30s on quiet watches that
 * the server closes. Watch and DiscoveryV1Api still do the parts that matter to get right:
 * kubeconfig and in-cluster auth, TLS, and the watch stream's framing.
 */
export class KubernetesSource implements DiscoverySource {
  readonly kind = "kubernetes" as const;
  private readonly opts: KubernetesSourceOptions;
  private readonly log: Logger;
  private readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  private readonly listTimeoutMs: number;
  /** The Service's slices by name: the informer's cache. */
  private readonly slices = new Map<string, SliceFacts>();
  /** The last warning logged per slice, so a broken slice warns once, not per event. */
  private readonly warned = new Map<string, string>();
  private stopped = false;
  private applyQueued = false;
  private loop: Promise<void> | undefined;
  /** Cancels whatever the loop is waiting on: a list, a watch, or a backoff delay. */
  private cancelWait: (() => void) | undefined;
  private client: { api: DiscoveryV1Api; watch: Watch; withSignal: (signal: AbortSignal) => ConfigurationOptions } | undefined;

  constructor(opts: KubernetesSourceOptions) {
    this.opts = opts;
    this.log = opts.logger.child({ discovery: "kubernetes" });
    this.backoff = opts.backoff ?? { initialMs: 500, maxMs: 30_000 };
    this.listTimeoutMs = opts.listTimeoutMs ?? 10_000;
  }

  /**
   * Loads credentials (a user error here fails start-up), then resolves after the first
   * list has answered or failed, so a reachable cluster has its backends before traffic.
   */
  async start(): Promise<void> {
    // Loaded here, not at the top, because importing client-node takes about a second,
    // which every other discovery type should not pay.
    const k8s = await import("@kubernetes/client-node");
    const kc: KubeConfig = new k8s.KubeConfig();
    try {
      kc.loadFromDefault();
    } catch (err) {
      throw new Error(`kubernetes discovery: cannot load kubeconfig: ${(err as Error).message}`, { cause: err });
    }
    const cluster = kc.getCurrentCluster();
    // loadFromDefault falls back to an unauthenticated http://localhost:8080 when it finds
    // nothing; talking to whatever listens there would be a silent misconfiguration.
    if (!cluster || kc.getCurrentContext() === "loaded-context") {
      throw new Error(
        "kubernetes discovery: no cluster credentials (not running in a pod with a service account token, and no KUBECONFIG or ~/.kube/config)",
      );
    }
    this.client = {
      api: kc.makeApiClient(k8s.DiscoveryV1Api),
      watch: new k8s.Watch(kc),
      // The generated API takes no AbortSignal argument; a request middleware sets one,
      // so a hung list can be abandoned and stop() cancels it.
      withSignal: (signal) => ({
        middleware: [
          {
            pre: (ctx) => (ctx.setSignal(signal), new k8s.Observable(Promise.resolve(ctx))),
            post: (res) => new k8s.Observable(Promise.resolve(res)),
          },
        ],
        middlewareMergeStrategy: "append",
      }),
    };
    this.log.info({ server: cluster.server, namespace: this.opts.namespace, service: this.opts.service, port: this.opts.port || "(only)" }, "kubernetes discovery starting");
    let firstAttempt!: () => void;
    const attempted = new Promise<void>((resolve) => (firstAttempt = resolve));
    // finally: stop() during the first list must not leave start() waiting.
    this.loop = this.run(firstAttempt).finally(firstAttempt);
    await attempted;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelWait?.();
    await this.loop;
  }

  private async run(firstAttempt: () => void): Promise<void> {
    let resourceVersion = ""; // "" = we must list
    let failures = 0;
    let justListed = false;
    while (!this.stopped) {
      if (resourceVersion === "") {
        try {
          resourceVersion = await this.list();
          justListed = true;
        } catch (err) {
          if (this.stopped) break;
          const delay = this.delayFor(++failures);
          this.log.warn({ err: describeError(err), attempt: failures, retry_in_ms: delay }, "kubernetes list failed");
          firstAttempt();
          await this.sleep(delay);
          continue;
        }
        firstAttempt();
      }
      const fromList = justListed;
      justListed = false;
      const end = await this.watchOnce(resourceVersion);
      if (this.stopped) break;
      resourceVersion = end.resourceVersion;
      // A watch that worked for a while proves the connection good: the next retry is quick.
      const healthy = end.connected && (end.events > 0 || end.durationMs >= 1000);
      if (healthy) failures = 0;
      if (end.expired) {
        this.log.info({ resource_version: resourceVersion }, "kubernetes watch expired; re-listing");
        resourceVersion = "";
        // A server answering 410 to a watch from the list it has just given is broken: do not spin.
        if (fromList && end.events === 0) await this.sleep(this.delayFor(++failures));
        continue;
      }
      if (end.error !== undefined || !end.connected) {
        const delay = this.delayFor(++failures);
        this.log.warn({ err: end.error ?? "watch failed", resource_version: resourceVersion, attempt: failures, retry_in_ms: delay }, "kubernetes watch failed");
        await this.sleep(delay);
        continue;
      }
      // A clean end (the server's watch timeout, or silence past the client's): resume from
      // the last resourceVersion, which loses nothing. Only a server that ends watches at
      // once, again and again, earns a delay.
      if (healthy) {
        this.log.debug({ resource_version: resourceVersion, events: end.events }, "kubernetes watch ended; resuming");
      } else {
        await this.sleep(this.delayFor(++failures));
      }
    }
  }

  /** Lists the Service's slices, replaces the cache with them, and returns the list's resourceVersion. */
  private async list(): Promise<string> {
    const { api, withSignal } = this.client!;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`no answer in ${this.listTimeoutMs}ms`)), this.listTimeoutMs);
    this.cancelWait = () => abort.abort(new Error("stopped"));
    try {
      const list = await api.listNamespacedEndpointSlice(
        { namespace: this.opts.namespace, labelSelector: `${SERVICE_LABEL}=${this.opts.service}` },
        withSignal(abort.signal),
      );
      if (this.stopped) return "";
      this.slices.clear();
      for (const item of list.items) {
        const facts = sliceFacts(item);
        if (facts) this.slices.set(facts.name, facts);
      }
      const resourceVersion = list.metadata?.resourceVersion ?? "";
      const backends = this.applyNow();
      this.log.info({ slices: this.slices.size, backends, resource_version: resourceVersion }, "kubernetes endpoints listed");
      return resourceVersion;
    } catch (err) {
      throw abort.signal.aborted ? abort.signal.reason : err;
    } finally {
      clearTimeout(timer);
      this.cancelWait = undefined;
    }
  }

  /** One watch request, from `resourceVersion` until the server or the client ends it. */
  private watchOnce(resourceVersion: string): Promise<WatchEnd> {
    const { watch } = this.client!;
    const started = Date.now();
    let latest = resourceVersion;
    let expired = false;
    let events = 0;
    let eventError: string | undefined;
    let connected = false;
    let ended = false;
    let controller: AbortController | undefined;
    return new Promise<WatchEnd>((resolve) => {
      const done = (err: unknown) => {
        if (ended) return;
        ended = true;
        this.cancelWait = undefined;
        // An HTTP 410 to the watch request is the other way a server says "too old".
        if (isObject(err) && err.statusCode === 410) expired = true;
        // Watch reports its own inactivity abort as TimeoutError: a quiet but healthy
        // stream (client-node aborts after 30s without a byte), resumed like a clean end.
        const timedOut = err instanceof Error && err.name === "TimeoutError" && connected;
        const error = expired || timedOut || this.stopped ? undefined : err ? describeError(err) : eventError;
        resolve({ resourceVersion: latest, expired, connected, events, error, durationMs: Date.now() - started });
      };
      this.cancelWait = () => {
        controller?.abort();
        done(undefined);
      };
      const onEvent = (type: string, obj: unknown) => {
        if (ended || this.stopped) return;
        const rv = isObject(obj) && isObject(obj.metadata) && typeof obj.metadata.resourceVersion === "string" ? obj.metadata.resourceVersion : undefined;
        switch (type) {
          case "ADDED":
          case "MODIFIED": {
            const facts = sliceFacts(obj);
            if (facts) this.slices.set(facts.name, facts);
            this.queueApply();
            break;
          }
          case "DELETED": {
            const facts = sliceFacts(obj);
            if (facts) this.slices.delete(facts.name);
            this.queueApply();
            break;
          }
          case "BOOKMARK":
            break; // only moves the resourceVersion forward
          case "ERROR": {
            // A Status object. 410 Expired/Gone: our resourceVersion was compacted away.
            const status = isObject(obj) ? obj : {};
            if (status.code === 410) expired = true;
            else eventError = `watch error event: ${typeof status.message === "string" ? status.message : JSON.stringify(status)}`;
            return; // a Status's resourceVersion is not a position in the stream
          }
          default:
            return;
        }
        events++;
        if (rv) latest = rv;
      };
      const query = {
        labelSelector: `${SERVICE_LABEL}=${this.opts.service}`,
        resourceVersion,
        allowWatchBookmarks: true,
        // Like client-go: ask the server to end the watch after 5-10 minutes, so watches
        // are spread over API servers and none stays pinned to a stale connection.
        timeoutSeconds: 300 + Math.floor(Math.random() * 300),
      };
      watch.watch(`/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(this.opts.namespace)}/endpointslices`, query, onEvent, done).then(
        (c) => {
          controller = c;
          if (ended || this.stopped) c.abort();
          else connected = true;
        },
        (err: unknown) => done(err ?? new Error("watch failed")),
      );
    });
  }

  /** Coalesces the events of one read from the stream into one reconcile. */
  private queueApply(): void {
    if (this.applyQueued) return;
    this.applyQueued = true;
    queueMicrotask(() => {
      this.applyQueued = false;
      if (!this.stopped) this.applyNow();
    });
  }

  /** Hands the pool the full desired set; warns once per slice that contributes nothing. */
  private applyNow(): number {
    const { desired, problems } = desiredFromSlices(this.slices.values(), this.opts.port);
    for (const [slice, problem] of problems) {
      if (this.warned.get(slice) === problem) continue;
      this.warned.set(slice, problem);
      this.log.warn({ slice, namespace: this.opts.namespace, service: this.opts.service }, `endpointslice ignored: ${problem}`);
    }
    for (const slice of this.warned.keys()) if (!problems.has(slice)) this.warned.delete(slice);
    this.opts.apply(desired);
    return desired.length;
  }

  private delayFor(failures: number): number {
    const base = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(failures - 1, 30));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(finish, ms);
      function finish() {
        clearTimeout(timer);
        resolve();
      }
      this.cancelWait = () => {
        this.cancelWait = undefined;
        finish();
      };
    });
  }
}

/** One line for a failed API call: status and the server's message, or the network error. */
function describeError(err: unknown): string {
  if (!isObject(err) && !(err instanceof Error)) return String(err);
  const e = err as Json & { message?: string; cause?: unknown };
  const code = typeof e.code === "number" ? e.code : typeof e.statusCode === "number" ? e.statusCode : undefined;
  if (code !== undefined) {
    let detail = "";
    if (isObject(e.body) && typeof e.body.message === "string") detail = e.body.message;
    else if (typeof e.body === "string" && e.body !== "") {
      try {
        const parsed: unknown = JSON.parse(e.body);
        if (isObject(parsed) && typeof parsed.message === "string") detail = parsed.message;
      } catch {
        detail = e.body.slice(0, 200);
      }
    } else if (typeof e.message === "string") {
      // client-node's ApiException message is "HTTP-Code: 401\nMessage: Unauthorized\nBody: …".
      detail = /^Message: (.*)$/m.exec(e.message)?.[1] ?? (e.message.startsWith("HTTP-Code") ? "" : e.message);
    }
    return `HTTP ${code}${detail ? `: ${detail}` : ""}`;
  }
  const cause = isObject(e.cause) || e.cause instanceof Error ? (e.cause as Json & { message?: string }) : undefined;
  const causeText = cause ? String(cause.message ?? cause.code ?? "") : "";
  const message = typeof e.message === "string" ? e.message : String(err);
  return causeText && !message.includes(causeText) ? `${message}: ${causeText}` : message;
}
