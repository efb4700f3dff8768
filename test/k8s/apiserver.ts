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
 * Objects are stored exactly as the API server emits EndpointSlices (objects.ts); the
 * watch streams and the history they replay are watch.ts's.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import type http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import path from "node:path";
import { endpointSlice, labelsOf, parseSelector, status, type Json, type Selector, type SliceInput } from "./objects.ts";
import { Watches } from "./watch.ts";

export type { EndpointInput, SliceInput } from "./objects.ts";

// A test CA and a server certificate it signed, for 127.0.0.1, valid 2000-2125. Made with
// `openssl ca -startdate 20000101000000Z -enddate 21250101000000Z` (EC P-256).
const TLS_DIR = path.join(import.meta.dirname, "tls");

interface Stored {
  object: Json; // the EndpointSlice, with kind and apiVersion
  rv: number;
}

/** A request the server answered, for tests to assert on what the client asked. */
export interface SeenRequest {
  verb: "list" | "watch" | "other";
  namespace: string;
  query: Record<string, string>;
  status: number;
}

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
  private readonly objects = new Map<string, Stored>(); // "ns/name"
  private readonly watches = new Watches();
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
    this.watches.drop();
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
    this.watches.record({ rv, type: existing ? "MODIFIED" : "ADDED", namespace, object });
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
    this.watches.record({ rv, type: "DELETED", namespace, object });
  }

  /** Forgets the history up to now, as etcd compaction does: older watches get 410. */
  compact(): void {
    this.watches.compact(this.rv);
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allows them. */
  bookmark(): void {
    this.watches.bookmark(this.rv);
  }

  /** Ends every watch cleanly, as the server's watch timeout does. */
  closeWatches(): void {
    this.watches.closeAll();
  }

  get openWatches(): number {
    return this.watches.open;
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
      const items = [...this.matching(namespace, selector)]
        .sort((a, b) => String((a.metadata as Json).name).localeCompare(String((b.metadata as Json).name)))
        .map((object) => {
          // List items carry no kind/apiVersion: the list's own type says it.
          const { kind: _kind, apiVersion: _apiVersion, ...rest } = object;
          return rest;
        });
      return reply(200, { kind: "EndpointSliceList", apiVersion: "discovery.k8s.io/v1", metadata: { resourceVersion: String(this.rv) }, items });
    }
    seen.verb = "watch";
    const streaming = () => (seen.status = 200);
    this.watches.serve({ namespace, selector, query, res, reply, streaming }, this.matching(namespace, selector), { tooOld: this.tooOld, maxSeconds: this.maxWatchSeconds });
  }

  /** The stored slices in `namespace` that `selector` matches, as the API server emits them. */
  private *matching(namespace: string, selector: Selector): Iterable<Json> {
    for (const s of this.objects.values()) {
      if ((s.object.metadata as Json).namespace === namespace && selector(labelsOf(s.object))) yield s.object;
    }
  }
}
