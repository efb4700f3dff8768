// deployments/compose/replicas.yaml: two replicas and the etcd they share fit together (the
// config validates and names the etcd service's address), without running Docker.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { REPO, runCli } from "./harness.ts";

type Json = Record<string, any>; // compose files are free-form YAML

const DIR = path.join(REPO, "deployments", "compose");

describe("deployments/compose/replicas.yaml", () => {
  const compose = parseYaml(readFileSync(path.join(DIR, "replicas.yaml"), "utf8"), { merge: true }) as Json;
  const config = parseYaml(readFileSync(path.join(DIR, "replicas-config.yaml"), "utf8")) as Json;

  it("ships a config that gobalancer validate accepts, on the etcd service's advertised address", async () => {
    const result = await runCli(["validate", "--config", path.join(DIR, "replicas-config.yaml")]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.equal(config.state_store.type, "etcd");
    const advertised = (compose.services.etcd.command as string[]).find((a) => a.startsWith("--advertise-client-urls="))!.split("=")[1];
    assert.deepEqual(config.state_store.etcd.endpoints, [advertised]);
  });

  it("runs two replicas on that config, each on its own published ports, the API on this host only", () => {
    const replicas = Object.entries(compose.services as Record<string, Json>).filter(([, s]) => s.image === "gobalancer:latest");
    assert.equal(replicas.length, 2);
    const published = new Set<string>();
    for (const [name, service] of replicas) {
      assert.deepEqual(service.volumes, ["./replicas-config.yaml:/etc/gobalancer/config.yaml:ro"], name);
      assert.ok(service.environment.GOBALANCER_API_TOKEN, `${name}: an API token`);
      for (const port of service.ports as string[]) {
        const host = port.split(":").slice(0, -1).join(":");
        assert.ok(!published.has(host), `${name}: ${port} published once`);
        published.add(host);
        if (port.endsWith(":8081")) assert.match(port, /^127\.0\.0\.1:/, `${name}: the API stays on this host`);
      }
    }
  });
});
