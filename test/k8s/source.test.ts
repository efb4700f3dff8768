// KubernetesSource in-process, for what the end-to-end tests cannot reach quickly: a
// wedged API server, stopping mid-request, and running with no credentials at all.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, describe, it } from "node:test";
import pino from "pino";
import { KubernetesSource } from "../../src/discovery/kubernetes.ts";
import type { DesiredBackend } from "../../src/pool/pool.ts";
import { tempDir, waitFor } from "../harness.ts";
import { FakeApiServer } from "./apiserver.ts";

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: "debug" }, stream), lines };
}

/** Runs `fn` with environment variables set, then restores them. */
async function withEnv<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

describe("KubernetesSource", () => {
  const fake = new FakeApiServer();
  after(() => fake.stop());

  it("gives up on a list that never answers, retries, and stops at once mid-request", async () => {
    await fake.start();
    fake.put({ name: "web-a", service: "web", endpoints: [{ address: "10.0.0.1", ready: true }], ports: [{ port: 80 }] });
    fake.hang = true;
    const { logger, lines } = capture();
    const applied: Array<readonly DesiredBackend[]> = [];
    const source = new KubernetesSource({
      namespace: "default",
      service: "web",
      port: "",
      logger,
      apply: (d) => applied.push(d),
      listTimeoutMs: 300,
      backoff: { initialMs: 50, maxMs: 100 },
    });
    await withEnv({ KUBECONFIG: fake.writeKubeconfig(tempDir()) }, () => source.start()); // resolves after the first failed attempt
    assert.ok(lines.some((l) => l.msg === "kubernetes list failed" && l.err === "no answer in 300ms"), JSON.stringify(lines));
    fake.hang = false;
    await waitFor(() => applied.length > 0, 5000, "a list after the wedge");
    assert.deepEqual(applied.at(-1)!.map((d) => d.address.key), ["10.0.0.1:80"]);

    // Wedged again, with the watch open: stop() does not wait for anything.
    await waitFor(() => fake.openWatches === 1, 5000, "a watch");
    fake.hang = true;
    const before = fake.requests.length;
    fake.closeWatches();
    await waitFor(() => fake.requests.length > before, 5000, "the resumed watch, unanswered");
    const started = Date.now();
    await source.stop();
    // Not the 30 s the client library would wait for an answer.
    assert.ok(Date.now() - started < 2000, `stop took ${Date.now() - started}ms`);
    const count = applied.length;
    fake.hang = false;
    fake.put({ name: "web-a", service: "web", endpoints: [{ address: "10.0.0.2", ready: true }], ports: [{ port: 80 }] });
    await new Promise((r) => setTimeout(r, 200)); // a window in which a leaked watch would apply
    assert.equal(applied.length, count, "nothing applied after stop");
  });

  it("refuses to start with no credentials rather than fall back to localhost:8080", async () => {
    const { logger } = capture();
    const source = new KubernetesSource({ namespace: "default", service: "web", port: "", logger, apply: () => {} });
    // Not in a pod (no service account token here), no KUBECONFIG, no ~/.kube/config.
    await withEnv({ KUBECONFIG: "", HOME: tempDir() }, () =>
      assert.rejects(source.start(), /^Error: kubernetes discovery: no cluster credentials \(not running in a pod with a service account token, and no KUBECONFIG or ~\/\.kube\/config\)$/),
    );
  });
});
