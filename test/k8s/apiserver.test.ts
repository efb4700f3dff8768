// The stand-in API server checked against a client it was not written for: client-node's
// own informer (ListWatch), plus the raw wire shapes the discovery tests rely on.
import assert from "node:assert/strict";
import { request as httpsRequest } from "node:https";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { tempDir, waitFor } from "../harness.ts";
import { FakeApiServer } from "./apiserver.ts";

const PATH = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
const CA = readFileSync(path.join(import.meta.dirname, "tls", "ca.crt"));

/** One GET; resolves with the status and the body's lines, once `lines` arrived or it ended. */
function get(fake: FakeApiServer, query: string, lines = Infinity, token = fake.token): Promise<{ status: number; lines: string[] }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`${fake.url}${PATH}?${query}`, { ca: CA, headers: { Authorization: `Bearer ${token}` } }, (res) => {
      let body = "";
      const finish = () => {
        req.destroy();
        resolve({ status: res.statusCode!, lines: body.split("\n").filter(Boolean) });
      };
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
        if (body.split("\n").filter(Boolean).length >= lines) finish();
      });
      res.on("end", finish);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("fake Kubernetes API server", () => {
  const fake = new FakeApiServer();
  const web = (name: string, address: string) => ({ name, service: "web", endpoints: [{ address, ready: true }], ports: [{ name: "http", port: 80 }] });
  before(() => fake.start());
  after(() => fake.stop());

  it("speaks the list and watch wire format", async () => {
    fake.put(web("web-a", "10.0.0.1"));
    fake.put({ ...web("api-a", "10.0.0.9"), service: "api" });
    const list = await get(fake, "labelSelector=kubernetes.io%2Fservice-name%3Dweb");
    assert.equal(list.status, 200);
    const body = JSON.parse(list.lines.join("")) as { kind: string; metadata: { resourceVersion: string }; items: Array<Record<string, unknown>> };
    assert.equal(body.kind, "EndpointSliceList");
    assert.equal(body.metadata.resourceVersion, fake.resourceVersion);
    assert.deepEqual(body.items.map((i) => (i.metadata as { name: string }).name), ["web-a"]);
    assert.equal(body.items[0]!.kind, undefined, "list items carry no kind");

    const from = fake.resourceVersion;
    const watch = get(fake, `watch=true&allowWatchBookmarks=true&resourceVersion=${from}&labelSelector=kubernetes.io%2Fservice-name%3Dweb`, 2);
    await waitFor(() => fake.openWatches === 1);
    fake.put(web("web-b", "10.0.0.2"));
    fake.bookmark();
    const events = (await watch).lines.map((l) => JSON.parse(l) as { type: string; object: { kind: string; metadata: Record<string, unknown> } });
    assert.deepEqual(events.map((e) => e.type), ["ADDED", "BOOKMARK"]);
    assert.equal(events[0]!.object.kind, "EndpointSlice");
    assert.deepEqual(events[1]!.object.metadata, { resourceVersion: fake.resourceVersion, creationTimestamp: null });
  });

  it("refuses a compacted resourceVersion with 410, as an ERROR event or an HTTP status", async () => {
    const old = fake.resourceVersion;
    fake.put(web("web-c", "10.0.0.3"));
    fake.compact();
    const event = await get(fake, `watch=true&resourceVersion=${old}`);
    assert.equal(event.status, 200);
    const error = JSON.parse(event.lines[0]!) as { type: string; object: Record<string, unknown> };
    assert.equal(error.type, "ERROR");
    assert.deepEqual({ ...error.object, message: undefined }, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", reason: "Expired", code: 410, message: undefined });
    fake.tooOld = "http";
    assert.equal((await get(fake, `watch=true&resourceVersion=${old}`)).status, 410);
    fake.tooOld = "event";
    assert.equal((await get(fake, "", Infinity, "wrong")).status, 401);
  });

  it("keeps client-node's own informer in sync, through a re-list on 410", async () => {
    const k8s = await import("@kubernetes/client-node");
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(fake.writeKubeconfig(tempDir()));
    const api = kc.makeApiClient(k8s.DiscoveryV1Api);
    const informer = k8s.makeInformer(kc, PATH, () => api.listNamespacedEndpointSlice({ namespace: "default", labelSelector: "kubernetes.io/service-name=web" }), "kubernetes.io/service-name=web");
    const names = () => informer.list("default").map((s) => s.metadata!.name).sort().join(",");
    await informer.start();
    try {
      assert.equal(names(), "web-a,web-b,web-c");
      fake.remove("web-a");
      await waitFor(() => names() === "web-b,web-c", 5000, "delete seen");
      fake.closeWatches();
      fake.remove("web-b");
      fake.compact();
      await waitFor(() => names() === "web-c", 5000, "re-listed after 410");
    } finally {
      await informer.stop();
    }
  });
});
