// The Docker deployment as users run it: deployments/docker/Dockerfile built unchanged and
// deployments/docker/docker-compose.yaml brought up on a real, private Docker engine.
// No registry is reachable, so the base images are local stand-ins under the same names
// (test/docker/images.ts) and `npm ci` in the build reads a mirror of this machine's npm
// cache (test/docker/npm-mirror.ts), passed in through the Dockerfile's NPM_CONFIG_REGISTRY.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { DockerEngine } from "./docker/engine.ts";
import { BUSYBOX_IMAGE, busyboxImage, nodeStandInImage } from "./docker/images.ts";
import { hostNpm, startNpmMirror, type NpmMirror } from "./docker/npm-mirror.ts";
import { REPO, request, waitFor } from "./harness.ts";

const DOCKERFILE = path.join(REPO, "deployments/docker/Dockerfile");
const COMPOSE = path.join(REPO, "deployments/docker/docker-compose.yaml");
const PROJECT = "gbdeploy";

let engine: DockerEngine;
let mirror: NpmMirror | undefined;

before(
  async () => {
    engine = await DockerEngine.start();
    // On the host's end of the engine's link: the build, in the engine's namespace, reaches it.
    mirror = await startNpmMirror(engine.hostAddress);
  },
  { timeout: 600_000 },
);

after(async () => {
  if (engine) {
    await engine.command("docker-compose", ["-f", COMPOSE, "-p", PROJECT, "down", "-t", "1"], { env: composeEnv() }).catch(() => {});
    await engine.stop();
  }
  await mirror?.close();
});

/** The images the Dockerfile starts FROM (not its own stages). */
function baseImages(dockerfile: string): string[] {
  const stages = new Set<string>();
  const bases = new Set<string>();
  for (const m of dockerfile.matchAll(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/gim)) {
    if (!stages.has(m[1]!)) bases.add(m[1]!);
    if (m[2]) stages.add(m[2]);
  }
  return [...bases];
}

const token = randomBytes(12).toString("hex");
/**
 * The ports as the compose file's defaults have them, published on the engine's address:
 * the engine has a network namespace of its own, where only this test publishes anything,
 * and whose 127.0.0.1 is not ours.
 */
const BALANCED_PORT = 8080;
const API_PORT = 8081;

/** What a user sets for docker-compose, pointed at the test engine. */
function composeEnv(): NodeJS.ProcessEnv {
  return {
    DOCKER_SOCKET: engine.socket,
    DOCKER_GID: String(statSync(engine.socket).gid),
    GOBALANCER_API_TOKEN: token,
    GOBALANCER_LISTEN: `${engine.address}:${BALANCED_PORT}`,
    GOBALANCER_API_LISTEN: `${engine.address}:${API_PORT}`,
  };
}

async function compose(args: string[]): Promise<string> {
  return (await engine.command("docker-compose", ["-f", COMPOSE, "-p", PROJECT, ...args], { env: composeEnv(), timeoutMs: 180_000 })).stdout;
}

describe("docker deployment", () => {
  it("the Dockerfile builds, and the compose setup balances to its labelled backends", { timeout: 600_000 }, async () => {
    // Stand-ins for the base images: the compose backends' nginx:alpine serves its
    // hostname (the container id) over HTTP on port 80, as our busybox image does.
    const npm = hostNpm();
    const node = path.join(REPO, "toolchain/node_modules/node/bin/node");
    for (const base of baseImages(readFileSync(DOCKERFILE, "utf8"))) await nodeStandInImage(engine, node, npm.dir, base);
    await busyboxImage(engine);
    await engine.cli(["tag", BUSYBOX_IMAGE, "nginx:alpine"]);

    // The real Dockerfile, unchanged; the engine's host network for the build, which
    // reaches the mirror on our end of the engine's link.
    await engine
      .cli(["build", "--network", "host", "--build-arg", `NPM_CONFIG_REGISTRY=${mirror!.url}`, "-f", DOCKERFILE, "-t", "gobalancer:latest", REPO], {
        env: { DOCKER_BUILDKIT: "1" },
        timeoutMs: 480_000,
      })
      .catch((err: Error) => {
        throw new Error(`${err.message.slice(-3000)}\nnpm mirror misses: ${mirror!.misses.join(" ") || "none"}`);
      });
    const built = await engine.docker.getImage("gobalancer:latest").inspect();
    assert.equal(built.Config.User, "node", "runs as the unprivileged node user");
    assert.deepEqual(Object.keys(built.Config.ExposedPorts ?? {}).sort(), ["8080/tcp", "8081/tcp"]);
    assert.ok(built.Config.Healthcheck?.Test?.join(" ").includes("/health"), "has a HEALTHCHECK on /health");
    assert.ok(built.Config.Cmd?.includes("/etc/gobalancer/config.yaml"));

    await compose(["up", "-d", "--no-build"]);
    const ids = async (service: string) => (await compose(["ps", "-q", service])).trim();
    const backends = new Set([(await ids("backend1")).slice(0, 12), (await ids("backend2")).slice(0, 12)]);
    const published = (await compose(["port", "gobalancer", "8080"])).trim();
    assert.equal(published, `${engine.address}:${BALANCED_PORT}`);

    // Both backends answer through the published port once discovery has found them.
    const seen = new Set<string>();
    try {
      await waitFor(async () => {
        const response = await request(BALANCED_PORT, "GET / HTTP/1.0\r\n\r\n", engine.address).catch(() => "");
        const body = response.slice(response.indexOf("\r\n\r\n") + 4).trim();
        if (backends.has(body)) seen.add(body);
        return seen.size === backends.size;
      }, 60_000);
    } catch {
      const logs = await compose(["logs", "--no-color", "gobalancer"]).catch((e: Error) => e.message);
      assert.fail(`only ${[...seen].join(", ") || "no backend"} of ${[...backends].join(", ")} answered on ${published}\n${logs.slice(-3000)}`);
    }

    // The API is published (on the engine's address here) and asks for the token; it lists
    // both backends as Docker's, with the weights from their labels.
    const api = `http://${engine.address}:${API_PORT}`;
    assert.equal((await fetch(`${api}/backends`)).status, 401);
    const listed = (await (await fetch(`${api}/backends`, { headers: { authorization: `Bearer ${token}` } })).json()) as Array<{ source: string; weight: number }>;
    assert.deepEqual(listed.map((b) => `${b.source} ${b.weight}`).sort(), ["docker 1", "docker 2"]);

    // The image's HEALTHCHECK (GET /health) passes: its first run is one interval (10 s) in.
    const balancer = engine.docker.getContainer(await ids("gobalancer"));
    await waitFor(async () => (await balancer.inspect()).State.Health?.Status === "healthy", 60_000, "HEALTHCHECK healthy");

    const logs = await compose(["logs", "--no-color", "gobalancer"]);
    assert.match(logs, /docker discovery started/);
    assert.doesNotMatch(logs, /"level":(50|60)/, "no errors logged");
  });
});
