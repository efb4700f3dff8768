/**
 * A stand-in for the Kubernetes API server, for the EndpointSlice calls GoBalancer makes.
 * No real API server can run here, so this one speaks the real wire format:
 *
 * - GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=…
 *   → an EndpointSliceList with metadata.resourceVersion (items without kind/apiVersion,
 *   as the API server encodes list items).
 * - The same path with watch=true&resourceVersion=N → 200, chunked JSON, one
 *   `{"type":…,"object":…}` per line: ADDED/MODIFIED/DELETED from the history after N,
 *   then live; BOOKMARK when asked with allowWatchBookmarks; the watch ends after
 *   timeoutSeconds (or the server's own cap), as the server's watch timeout does.
 * - A resourceVersion older than the compacted history: 200 with an ERROR event carrying
 *   a 410 Expired Status, then the stream ends (what the watch cache does), or, in
 *   `tooOld: "http"` mode, HTTP 410 Gone with a Status body (the etcd path).
 * - HTTPS with a certificate from a test CA (client-node refuses plain HTTP), bearer-token
 *   auth (401 Status otherwise), 404/405 Status for anything else.
 *
 * Objects are stored exactly as the API server emits EndpointSlices (see endpointSlice()).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import type http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import path from "node:path";

type Json = Record<string, unknown>;

// A test CA and a server certificate it signed, for 127.0.0.1, valid 2000-2125. Made with
// `openssl ca -startdate 20000101000000Z -enddate 21250101000000Z` (EC P-256).
const TLS_DIR = path.join(import.meta.dirname, "tls");

export interface EndpointInput {
  /** The endpoint's (first) address. */
  address: string;
  /** undefined leaves the condition out (nil in the API); null is not sent either. */
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  /** Pod name for targetRef; default derived from the address. */
  pod?: string;
}

export interface SliceInput {
  name: string;
  service: string;
  namespace?: string;
  addressType?: "IPv4" | "IPv6" | "FQDN";
  endpoints: EndpointInput[];
  /** Port entries as in the API; name "" for a Service's single unnamed port. */
  ports: Array<{ name?: string; port?: number; protocol?: string }>;
}

interface Stored {
  object: Json; // the EndpointSlice, with kind and apiVersion
  rv: number;
}

interface HistoryEvent {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  namespace: string;
  object: Json;
}

interface Watcher {
  namespace: string;
  selector: Selector;
  bookmarks: boolean;
  res: http.ServerResponse;
  timer: NodeJS.Timeout | undefined;
}

/** A request the server answered, for tests to assert on what the client asked. */
export interface SeenRequest {
  verb: "list" | "watch" | "other";
  namespace: string;
  query: Record<string, string>;
  status: number;
}

type Selector = (labels: Record<string, string>) => boolean;

export class FakeApiServer {
  readonly token = randomBytes(16).toString("hex");
  readonly requests: SeenRequest[] = [];
  /** How a watch from a compacted resourceVersion is refused. */
  tooOld: "event" | "http" = "event";
  /** Accept requests and never answer them, like an API server that is wedged. */
  hang = false;
  /** Answer 403 as RBAC does when the service account lacks the verb. */
  forbidden = false;
  /** The server's own cap on a watch's length (the real one's is min-request-timeout). */
  maxWatchSeconds = 1800;

  private server: https.Server | undefined;
  private sockets = new Set<Socket>();
  private rv = 1000;
  private compactedRv = 0;
  private readonly objects = new Map<string, Stored>(); // "ns/name"
  private readonly history: HistoryEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private port = 0;

  /** Listens on 127.0.0.1 (port 0 for any, or a given port to come back on the same one). */
  async start(port = this.port): Promise<void> {
    const server = https.createServer(
      { cert: readFileSync(path.join(TLS_DIR, "server.crt")), key: readFileSync(path.join(TLS_DIR, "server.key")) },
      (req, res) => this.handle(req, res),
    );
    server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  /** Goes away like a crashed API server: every connection is cut. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const w of this.watchers) clearTimeout(w.timer);
    this.watchers.clear();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Writes a kubeconfig for this server (bearer-token user) into `dir`; returns its path. */
  writeKubeconfig(dir: string, namespace = "default"): string {
    const file = path.join(dir, "kubeconfig");
    writeFileSync(
      file,
      [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: fake",
        "  cluster:",
        `    server: ${this.url}`,
        `    certificate-authority-data: ${readFileSync(path.join(TLS_DIR, "ca.crt")).toString("base64")}`,
        "contexts:",
        "- name: fake",
        "  context:",
        "    cluster: fake",
        "    user: fake",
        `    namespace: ${namespace}`,
        "current-context: fake",
        "users:",
        "- name: fake",
        "  user:",
        `    token: ${this.token}`,
        "",
      ].join("\n"),
    );
    return file;
  }

  // ---- the cluster's state, as the EndpointSlice controller would change it ----------

  /** Creates or replaces a slice (ADDED or MODIFIED event). Returns its resourceVersion. */
  put(input: SliceInput): string {
    const namespace = input.namespace ?? "default";
    const key = `${namespace}/${input.name}`;
    const existing = this.objects.get(key);
    const rv = ++this.rv;
    const object = endpointSlice(input, {
      resourceVersion: String(rv),
      uid: existing ? String((existing.object.metadata as Json).uid) : randomUUID(),
      generation: existing ? Number((existing.object.metadata as Json).generation) + 1 : 1,
      creationTimestamp: existing ? String((existing.object.metadata as Json).creationTimestamp) : new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    });
    this.objects.set(key, { object, rv });
    this.record({ rv, type: existing ? "MODIFIED" : "ADDED", namespace, object });
    return String(rv);
  }

  /** Deletes a slice (DELETED event carrying its last state at the deletion's resourceVersion). */
  remove(name: string, namespace = "default"): void {
    const key = `${namespace}/${name}`;
    const existing = this.objects.get(key);
    if (!existing) throw new Error(`no slice ${key}`);
    this.objects.delete(key);
    const rv = ++this.rv;
    const object = structuredClone(existing.object);
    (object.metadata as Json).resourceVersion = String(rv);
    this.record({ rv, type: "DELETED", namespace, object });
  }

  /** Forgets the history up to now, as etcd compaction does: older watches get 410. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history.length = 0;
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allows them. */
  bookmark(): void {
    for (const w of this.watchers) if (w.bookmarks) this.send(w, "BOOKMARK", bookmarkObject(this.rv));
  }

  /** Ends every watch cleanly, as the server's watch timeout does. */
  closeWatches(): void {
    for (const w of [...this.watchers]) this.endWatch(w);
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  // ---- HTTP --------------------------------------------------------------------------

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://localhost");
    const query = Object.fromEntries(url.searchParams);
    const match = /^\/apis\/discovery\.k8s\.io\/v1\/namespaces\/([^/]+)\/endpointslices$/.exec(url.pathname);
    const seen: SeenRequest = { verb: "other", namespace: match ? decodeURIComponent(match[1]!) : "", query, status: 0 };
    this.requests.push(seen);
    const reply = (code: number, body: Json) => {
      seen.status = code;
      res.writeHead(code, { "Content-Type": "application/json", "Cache-Control": "no-cache, private" });
      res.end(JSON.stringify(body) + "\n");
    };

    if (this.hang) return;
    if (req.headers.authorization !== `Bearer ${this.token}`) return reply(401, status(401, "Unauthorized", "Unauthorized"));
    if (!match) return reply(404, status(404, "NotFound", "the server could not find the requested resource"));
    if (req.method !== "GET") return reply(405, status(405, "MethodNotAllowed", `the server does not allow this method on the requested resource`));
    const namespace = seen.namespace;
    if (this.forbidden) {
      const verb = query.watch === "true" || query.watch === "1" ? "watch" : "list";
      return reply(
        403,
        status(403, "Forbidden", `endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:default:gobalancer" cannot ${verb} resource "endpointslices" in API group "discovery.k8s.io" in the namespace "${namespace}"`),
      );
    }
    let selector: Selector;
    try {
      selector = parseSelector(query.labelSelector ?? "");
    } catch (err) {
      return reply(400, status(400, "BadRequest", `unable to parse requirement: ${(err as Error).message}`));
    }
    const watch = query.watch === "true" || query.watch === "1";
    if (!watch) {
      seen.verb = "list";
      const items = [...this.objects.values()]
        .filter((s) => (s.object.metadata as Json).namespace === namespace && selector(labelsOf(s.object)))
        .sort((a, b) => String((a.object.metadata as Json).name).localeCompare(String((b.object.metadata as Json).name)))
        .map((s) => {
          // List items carry no kind/apiVersion: the list's own type says it.
          const { kind: _kind, apiVersion: _apiVersion, ...rest } = s.object;
          return rest;
        });
      return reply(200, { kind: "EndpointSliceList", apiVersion: "discovery.k8s.io/v1", metadata: { resourceVersion: String(this.rv) }, items });
    }

    seen.verb = "watch";
    const from = query.resourceVersion ?? "";
    if (from !== "" && from !== "0" && !/^\d+$/.test(from)) {
      return reply(400, status(400, "BadRequest", `resourceVersion: Invalid value: "${from}": strconv.ParseUint: parsing "${from}": invalid syntax`));
    }
    const fromRv = Number(from);
    const tooOld = from !== "" && from !== "0" && fromRv < this.compactedRv;
    const expired = status(410, "Expired", `too old resource version: ${fromRv} (${this.compactedRv})`);
    if (tooOld && this.tooOld === "http") return reply(410, { ...expired, reason: "Gone", message: `too old resource version: ${fromRv} (${this.compactedRv})` });

    seen.status = 200;
    res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-cache, private", "Transfer-Encoding": "chunked" });
    res.flushHeaders();
    const watcher: Watcher = { namespace, selector, bookmarks: query.allowWatchBookmarks === "true", res, timer: undefined };
    if (tooOld) {
      res.end(JSON.stringify({ type: "ERROR", object: expired }) + "\n");
      return;
    }
    const seconds = Math.min(query.timeoutSeconds ? Number(query.timeoutSeconds) : this.maxWatchSeconds, this.maxWatchSeconds);
    watcher.timer = setTimeout(() => this.endWatch(watcher), seconds * 1000);
    this.watchers.add(watcher);
    res.on("close", () => {
      clearTimeout(watcher.timer);
      this.watchers.delete(watcher);
    });
    if (from === "" || from === "0") {
      // "Start at most recent / any": synthetic ADDED for the current state first.
      for (const s of this.objects.values()) {
        if ((s.object.metadata as Json).namespace === namespace && selector(labelsOf(s.object))) this.send(watcher, "ADDED", s.object);
      }
    } else {
      for (const e of this.history) if (e.rv > fromRv) this.deliver(watcher, e);
    }
  }

  private record(e: HistoryEvent): void {
    this.history.push(e);
    for (const w of this.watchers) this.deliver(w, e);
  }

  private deliver(w: Watcher, e: HistoryEvent): void {
    if (w.namespace === e.namespace && w.selector(labelsOf(e.object))) this.send(w, e.type, e.object);
  }

  private send(w: Watcher, type: string, object: Json): void {
    w.res.write(JSON.stringify({ type, object }) + "\n");
  }

  private endWatch(w: Watcher): void {
    clearTimeout(w.timer);
    this.watchers.delete(w);
    w.res.end();
  }
}

/** An EndpointSlice as the API server emits it (watch events include kind/apiVersion). */
export function endpointSlice(
  input: SliceInput,
  meta: { resourceVersion: string; uid: string; generation: number; creationTimestamp: string },
): Json {
  const namespace = input.namespace ?? "default";
  return {
    kind: "EndpointSlice",
    apiVersion: "discovery.k8s.io/v1",
    metadata: {
      name: input.name,
      generateName: `${input.service}-`,
      namespace,
      uid: meta.uid,
      resourceVersion: meta.resourceVersion,
      generation: meta.generation,
      creationTimestamp: meta.creationTimestamp,
      labels: {
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        "kubernetes.io/service-name": input.service,
      },
      annotations: { "endpoints.kubernetes.io/last-change-trigger-time": meta.creationTimestamp },
      ownerReferences: [
        { apiVersion: "v1", kind: "Service", name: input.service, uid: "5b1d1c9e-8f0a-4c47-9a43-2b0c6f1e7d11", controller: true, blockOwnerDeletion: true },
      ],
      managedFields: [
        {
          manager: "kube-controller-manager",
          operation: "Update",
          apiVersion: "discovery.k8s.io/v1",
          time: meta.creationTimestamp,
          fieldsType: "FieldsV1",
          fieldsV1: { "f:addressType": {}, "f:endpoints": {}, "f:metadata": { "f:labels": { ".": {}, "f:kubernetes.io/service-name": {} } }, "f:ports": {} },
        },
      ],
    },
    addressType: input.addressType ?? "IPv4",
    // The API encodes an empty endpoints list as null (the field has no omitempty).
    endpoints:
      input.endpoints.length === 0
        ? null
        : input.endpoints.map((e, i) => {
            const conditions: Json = {};
            if (e.ready !== undefined) conditions.ready = e.ready;
            if (e.serving !== undefined) conditions.serving = e.serving;
            if (e.terminating !== undefined) conditions.terminating = e.terminating;
            return {
              addresses: [e.address],
              conditions,
              targetRef: { kind: "Pod", namespace, name: e.pod ?? `${input.service}-7d4b9c6f5-${i}x${e.address.replace(/[^0-9a-f]/g, "")}`, uid: randomUUID() },
              nodeName: "node-1",
              zone: "zone-a",
            };
          }),
    ports: input.ports.map((p) => ({ name: p.name ?? "", protocol: p.protocol ?? "TCP", ...(p.port !== undefined ? { port: p.port } : {}) })),
  };
}

function bookmarkObject(rv: number): Json {
  // What the API server sends: an empty object of the watched kind with only a resourceVersion.
  return { kind: "EndpointSlice", apiVersion: "discovery.k8s.io/v1", metadata: { resourceVersion: String(rv), creationTimestamp: null }, addressType: "", endpoints: null };
}

function status(code: number, reason: string, message: string): Json {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

function labelsOf(object: Json): Record<string, string> {
  return ((object.metadata as Json).labels as Record<string, string> | undefined) ?? {};
}

/** Equality-based selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-joined. */
function parseSelector(text: string): Selector {
  const terms: Selector[] = [];
  for (const raw of text.split(",").map((t) => t.trim()).filter(Boolean)) {
    const m = /^(!?)([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*))?$/.exec(raw);
    if (!m) throw new Error(`"${raw}"`);
    const [, not, key, op, value] = m;
    if (op === undefined) terms.push(not ? (l) => !(key! in l) : (l) => key! in l);
    else if (op === "!=") terms.push((l) => l[key!] !== value);
    else terms.push((l) => l[key!] === value);
  }
  return (labels) => terms.every((t) => t(labels));
}
