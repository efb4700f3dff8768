import type { Logger } from "pino";
import type { ConfigurationOptions, DiscoveryV1Api, KubeConfig, Watch } from "@kubernetes/client-node";
import { errorText } from "./error-text.ts";
import { desiredFromSlices, resourceVersionOf, sliceFacts, watchError, type SliceFacts } from "./kubernetes-slices.ts";
import { backoffDelay, sleep, WatchLoop, type Backoff } from "./retry.ts";
import type { ApplyDesired, DiscoverySource } from "./source.ts";

// The conversion from EndpointSlices to backends is kubernetes-slices.ts; this file is
// the list/watch loop that feeds it.

export interface KubernetesSourceOptions {
  readonly namespace: string;
  readonly service: string;
  /** Port name or number; "" for the only port. */
  readonly port: string;
  readonly logger: Logger;
  readonly apply: ApplyDesired;
  /** Delay after the first failure, doubled per failure up to maxMs (each ±20%, see retry.ts). */
  readonly backoff?: Backoff;
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
  private readonly backoff: Backoff;
  private readonly listTimeoutMs: number;
  /** The Service's slices by name: the informer's cache. */
  private readonly slices = new Map<string, SliceFacts>();
  /** The last warning logged per slice, so a broken slice warns once, not per event. */
  private readonly warned = new Map<string, string>();
  /** Aborted by stop(): cancels whatever the loop is waiting on (a list, a watch, or a backoff delay). */
  private readonly watch = new WatchLoop();
  private applyQueued = false;
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
    // Loaded here, not at the top, because importing client-node is slow (see
    // docs/benchmarks.md), which every other discovery type should not pay.
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
    await this.watch.start((firstAttempt) => this.run(firstAttempt));
  }

  async stop(): Promise<void> {
    await this.watch.stop();
  }

  private async run(firstAttempt: () => void): Promise<void> {
    let resourceVersion = ""; // "" = we must list
    let failures = 0;
    let justListed = false;
    while (!this.watch.stopped) {
      if (resourceVersion === "") {
        try {
          resourceVersion = await this.list();
          justListed = true;
        } catch (err) {
          if (this.watch.stopped) break;
          const delay = backoffDelay(this.backoff, ++failures);
          this.log.warn({ err: errorText(err), attempt: failures, retry_in_ms: delay }, "kubernetes list failed");
          firstAttempt();
          await sleep(delay, this.watch.signal);
          continue;
        }
        firstAttempt();
      }
      const fromList = justListed;
      justListed = false;
      const end = await this.watchOnce(resourceVersion);
      if (this.watch.stopped) break;
      resourceVersion = end.resourceVersion;
      // A watch that worked for a while proves the connection good: the next retry is quick.
      const healthy = end.connected && (end.events > 0 || end.durationMs >= 1000);
      if (healthy) failures = 0;
      if (end.expired) {
        this.log.info({ resource_version: resourceVersion }, "kubernetes watch expired; re-listing");
        resourceVersion = "";
        // A server answering 410 to a watch from the list it has just given is broken: do not spin.
        if (fromList && end.events === 0) await sleep(backoffDelay(this.backoff, ++failures), this.watch.signal);
        continue;
      }
      if (end.error !== undefined || !end.connected) {
        const delay = backoffDelay(this.backoff, ++failures);
        this.log.warn({ err: end.error ?? "watch failed", resource_version: resourceVersion, attempt: failures, retry_in_ms: delay }, "kubernetes watch failed");
        await sleep(delay, this.watch.signal);
        continue;
      }
      // A clean end (the server's watch timeout, or silence past the client's): resume from
      // the last resourceVersion, which loses nothing. Only a server that ends watches at
      // once, again and again, earns a delay.
      if (healthy) {
        this.log.debug({ resource_version: resourceVersion, events: end.events }, "kubernetes watch ended; resuming");
      } else {
        await sleep(backoffDelay(this.backoff, ++failures), this.watch.signal);
      }
    }
  }

  /** Lists the Service's slices, replaces the cache with them, and returns the list's resourceVersion. */
  private async list(): Promise<string> {
    const { api, withSignal } = this.client!;
    const slow = new AbortController();
    const timer = setTimeout(() => slow.abort(new Error(`no answer in ${this.listTimeoutMs}ms`)), this.listTimeoutMs);
    const signal = AbortSignal.any([this.watch.signal, slow.signal]);
    try {
      const list = await api.listNamespacedEndpointSlice(
        { namespace: this.opts.namespace, labelSelector: `${SERVICE_LABEL}=${this.opts.service}` },
        withSignal(signal),
      );
      if (this.watch.stopped) return "";
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
      throw signal.aborted ? signal.reason : err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** One watch request, from `resourceVersion` until the server or the client ends it. */
  private watchOnce(resourceVersion: string): Promise<WatchEnd> {
    const { watch } = this.client!;
    const lifetime = this.watch.signal;
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
        lifetime.removeEventListener("abort", onStop);
        // An HTTP 410 to the watch request is the other way a server says "too old".
        if ((err as { statusCode?: unknown } | null | undefined)?.statusCode === 410) expired = true;
        // Watch reports its own inactivity abort as TimeoutError: a quiet but healthy
        // stream (client-node aborts after 30s without a byte), resumed like a clean end.
        const timedOut = err instanceof Error && err.name === "TimeoutError" && connected;
        const error = expired || timedOut || this.watch.stopped ? undefined : err ? errorText(err) : eventError;
        resolve({ resourceVersion: latest, expired, connected, events, error, durationMs: Date.now() - started });
      };
      const onStop = () => {
        controller?.abort();
        done(undefined);
      };
      if (lifetime.aborted) return onStop();
      lifetime.addEventListener("abort", onStop, { once: true });
      const onEvent = (type: string, obj: unknown) => {
        if (ended || this.watch.stopped) return;
        const rv = resourceVersionOf(obj);
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
            const status = watchError(obj);
            if (status.expired) expired = true;
            else eventError = status.message;
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
          if (ended || this.watch.stopped) c.abort();
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
      if (!this.watch.stopped) this.applyNow();
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
}
