// deployments/compose/replicas.yaml: two replicas and the etcd they share fit together (the
// config validates and names the etcd service's address), and the file, brought up with
// docker-compose on a real, private Docker engine, shares an API change between the two.
// No registry is reachable, so the images are local stand-ins under the names the file
// uses (test/docker/images.ts): busybox for nginx, Debian's etcd for etcd's image, and for
// gobalancer the Node stand-in running this checkout's build (the Dockerfile itself is
// built in docker-deployment.test.ts).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { DOCKER_CLI, DockerEngine } from "./docker/engine.ts";
import { BUSYBOX_IMAGE, busyboxImage, nodeStandInImage } from "./docker/images.ts";
import { hostNpm } from "./docker/npm-mirror.ts";
import { ensureDebianPackages } from "./apt.ts";
import { REPO, request, runCli, waitFor } from "./harness.ts";

type Json = Record<string, any>; // compose files are free-form YAML

const DIR = path.join(REPO, "deployments", "compose");
const COMPOSE = path.join(DIR, "replicas.yaml");
const PROJECT = "gbreplicas";

describe("deployments/compose/replicas.yaml", () => {
  const compose = parseYaml(readFileSync(COMPOSE, "utf8"), { merge: true }) as Json;
  const config = parseYaml(readFileSync(path.join(DIR, "replicas-config.yaml"), "utf8")) as Json;

  it("ships a config that gobalancer validate accepts, on the etcd service's advertised address", async () => {
    const result = await runCli(["validate", "--config", path.join(DIR, "replicas-config.yaml")]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.equal(config.state_store.type, "etcd");
    const advertised = (compose.services.etcd.command as string[]).find((a) => a.startsWith("--advertise-client-urls="))!.split("=")[1];
    assert.deepEqual(config.state_store.etcd.endpoints, [advertised]);
  });

  it("runs two replicas on that config, each on its own published ports, the API on this host only by default", () => {
    const replicas = Object.entries(compose.services as Record<string, Json>).filter(([, s]) => s.image === "gobalancer:latest");
    assert.equal(replicas.length, 2);
    const published = new Set<string>();
    for (const [name, service] of replicas) {
      assert.deepEqual(service.volumes, ["./replicas-config.yaml:/etc/gobalancer/config.yaml:ro"], name);
      assert.ok(service.environment.GOBALANCER_API_TOKEN, `${name}: an API token`);
      for (const port of service.ports as string[]) {
        // "${VARIABLE:-default}:container port": the default is what a user gets.
        const host = /^\$\{\w+:-(.+)\}:\d+$/.exec(port)?.[1] ?? port.split(":").slice(0, -1).join(":");
        assert.ok(!published.has(host), `${name}: ${port} published once`);
        published.add(host);
        if (port.endsWith(":8081")) assert.match(host, /^127\.0\.0\.1:/, `${name}: the API stays on this host`);
      }
    }
  });

  describe("brought up on a Docker engine", () => {
    let engine: DockerEngine | undefined;
    const scratch = mkdtempSync("/tmp/gbr-");
    const token = randomBytes(12).toString("hex");
    const env = (): NodeJS.ProcessEnv => ({
      GOBALANCER_API_TOKEN: token,
      GOBALANCER_A_LISTEN: `${engine!.address}:8080`,
      GOBALANCER_A_API_LISTEN: `${engine!.address}:8081`,
      GOBALANCER_B_LISTEN: `${engine!.address}:8090`,
      GOBALANCER_B_API_LISTEN: `${engine!.address}:8091`,
    });
    // The override only puts this checkout's build where the image's /app would have it.
    const override = path.join(scratch, "build.yaml");
    const composeCli = (args: string[]) =>
      engine!.command("docker-compose", ["-f", COMPOSE, "-f", override, "-p", PROJECT, ...args], { env: env(), timeoutMs: 180_000 }).then((r) => r.stdout);

    after(async () => {
      if (engine) {
        await composeCli(["down", "-v", "-t", "1"]).catch(() => {});
        await engine.stop();
      }
      rmSync(scratch, { recursive: true, force: true });
    });

    it("a backend added through one replica's API is listed and routed by the other", { timeout: 300_000 }, async () => {
      ensureDebianPackages(["etcd-server"], "the compose replicas test");
      engine = await DockerEngine.start();
      await busyboxImage(engine);
      await engine.cli(["tag", BUSYBOX_IMAGE, "nginx:alpine"]);
      await etcdImage(engine, String(compose.services.etcd.image), scratch);
      await gobalancerImage(engine);
      const mount = (from: string) => `${path.join(REPO, from)}:/app/${from}:ro`;
      const volumes = ["dist", "node_modules", "package.json"].map(mount);
      writeFileSync(override, JSON.stringify({ version: "3.8", services: { "gobalancer-a": { volumes }, "gobalancer-b": { volumes } } }));

      await composeCli(["up", "-d", "--no-build"]);
      const container = async (service: string) => (await composeCli(["ps", "-q", service])).trim().slice(0, 12);
      const [web1, web2] = [await container("web1"), await container("web2")];
      const api = (port: number, method: string, url: string, body?: unknown) =>
        fetch(`http://${engine!.address}:${port}${url}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
          ...(body ? { body: JSON.stringify(body) } : {}),
          signal: AbortSignal.timeout(5000),
        });
      const via = async (port: number) => {
        const response = await request(port, "GET / HTTP/1.0\r\n\r\n", engine!.address).catch(() => "");
        return response.slice(response.indexOf("\r\n\r\n") + 4).trim();
      };
      const logs = () => composeCli(["logs", "--no-color"]).catch((e: Error) => e.message);
      try {
        for (const port of [8080, 8090]) await waitFor(async () => (await via(port)) === web1, 60_000, `the replica on ${port} serving web1`);

        const added = await api(8081, "POST", "/backends", { address: "web2:80" });
        assert.equal(added.status, 201, await added.text());
        await waitFor(async () => {
          const listed = (await (await api(8091, "GET", "/backends")).json()) as Array<{ address: string; source: string }>;
          return listed.some((b) => b.address === "web2:80" && b.source === "api");
        }, 2000, "replica b listing the backend added through a");
        // web1 in maintenance through b: both replicas send every connection to web2.
        assert.equal((await api(8091, "PUT", "/backends/web1%3A80", { state: "maint" })).status, 200);
        for (const port of [8080, 8090]) await waitFor(async () => (await via(port)) === web2, 2000, `the replica on ${port} routing to web2`);
      } catch (err) {
        throw new Error(`${(err as Error).message}\n${(await logs()).slice(-3000)}`);
      }
      const all = await logs();
      assert.match(all, /state store etcd: following/);
      assert.doesNotMatch(all, /"level":(50|60)/, "no errors logged");
    });
  });
});

/**
 * A stand-in for etcd's image under its name: Debian's etcd binary (with the libraries
 * ldd names) on the PATH, as `etcd` is in the official image.
 */
async function etcdImage(engine: DockerEngine, name: string, scratch: string): Promise<void> {
  const root = path.join(scratch, "etcd-rootfs");
  const binary = realpathSync("/usr/bin/etcd");
  mkdirSync(path.join(root, "usr/local/bin"), { recursive: true });
  copyFileSync(binary, path.join(root, "usr/local/bin/etcd"));
  chmodSync(path.join(root, "usr/local/bin/etcd"), 0o755);
  const ldd = spawnSync("ldd", [binary], { encoding: "utf8" });
  for (const m of ldd.stdout.matchAll(/(\/\S+)\s+\(0x/g)) {
    mkdirSync(path.join(root, path.dirname(m[1]!)), { recursive: true });
    copyFileSync(realpathSync(m[1]!), path.join(root, m[1]!));
  }
  mkdirSync(path.join(root, "tmp"), { recursive: true });
  chmodSync(root, 0o755);
  const script = 'root=$1; shift; tar -C "$root" --numeric-owner -c . | "$0" import "$@"';
  await engine.command("sh", ["-c", script, DOCKER_CLI, root, "--change", "ENV PATH=/usr/local/bin", "--change", 'CMD ["etcd"]', "-", name]);
}

/**
 * gobalancer:latest as the Dockerfile's runtime stage has it (Node, /app, the node user,
 * the same entry point), with /app's contents mounted from this checkout by the override.
 */
async function gobalancerImage(engine: DockerEngine): Promise<void> {
  const node = path.join(REPO, "toolchain/node_modules/node/bin/node");
  const base = await nodeStandInImage(engine, node, hostNpm().dir, "gobalancer-test/node:24");
  const dockerfile = readFileSync(path.join(REPO, "deployments/docker/Dockerfile"), "utf8");
  const runtime = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
  const line = (instruction: string) => new RegExp(`^${instruction} (.+)$`, "m").exec(runtime)![1]!;
  const created = (await engine.cli(["create", base])).stdout.trim();
  const changes = [`WORKDIR /app`, `USER ${line("USER")}`, `ENTRYPOINT ${line("ENTRYPOINT")}`, `CMD ${line("CMD")}`, `ENV ${line("ENV")}`];
  await engine.cli(["commit", ...changes.flatMap((c) => ["--change", c]), created, "gobalancer:latest"]);
  await engine.cli(["rm", created]);
}
