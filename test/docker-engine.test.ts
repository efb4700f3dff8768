// The test engine (test/docker/engine.ts) on a host that runs a standard Docker daemon. Such
// a daemon sets the iptables FORWARD policy to DROP and sends bridged traffic through that
// chain (br_netfilter, bridge-nf-call-iptables = 1), which stops containers on one bridge
// from reaching each other unless the engine keeps its traffic out of the host's chain.
// The machine's own firewall is never touched: a network namespace of ours plays the host,
// and the engine is started from inside it.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { DockerEngine, ensurePackages } from "./docker/engine.ts";
import { busyboxImage } from "./docker/images.ts";
import { waitFor } from "./harness.ts";

const run = promisify(execFile);
const BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/** A network namespace held by a bind mount on a file, so it outlives every process in it. */
class Namespace {
  readonly dir = mkdtempSync("/tmp/gbd-host-");
  readonly file = path.join(this.dir, "net");

  async create(): Promise<void> {
    writeFileSync(this.file, "");
    await run("unshare", [`--net=${this.file}`, "true"]);
  }

  /** Runs a command inside the namespace; rejects with its output on failure. */
  async exec(args: string[], timeoutMs = 20_000): Promise<string> {
    try {
      return (await run("nsenter", [`--net=${this.file}`, ...args], { timeout: timeoutMs })).stdout;
    } catch (err) {
      const e = err as Error & { stdout?: string; stderr?: string };
      throw new Error(`in the host namespace, ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}${e.stderr ?? ""}`.trim());
    }
  }

  /** What the firewall and the sysctls that route and filter traffic say, to compare. */
  async firewall(): Promise<string> {
    const [forward, bridgeNf] = (await this.exec(["cat", "/proc/sys/net/ipv4/ip_forward", BRIDGE_NF])).split("\n");
    return `ip_forward=${forward} bridge-nf-call-iptables=${bridgeNf}\n${await this.exec(["iptables", "-S"])}`;
  }

  /** Unmounting the last reference ends the namespace and every interface in it. */
  async remove(): Promise<void> {
    await run("umount", [this.file]).catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const host = new Namespace();
let engine: DockerEngine | undefined;

before(
  async () => {
    ensurePackages([{ pkg: "iptables", provides: "/usr/sbin/iptables" }]);
    await host.create();
    await host.exec(["ip", "link", "set", "lo", "up"]);
    // As dockerd sets up a host it runs on: forwarding on, FORWARD policy DROP, bridged
    // traffic through iptables. Namespaced: the machine's own values stay as they are.
    await host.exec(["iptables", "-P", "FORWARD", "DROP"]);
    await host.exec(["sh", "-c", `echo 1 >/proc/sys/net/ipv4/ip_forward && echo 1 >${BRIDGE_NF}`]);
  },
  { timeout: 600_000 }, // a fresh machine installs docker.io and iptables first
);

after(async () => {
  await engine?.stop();
  await host.remove();
});

describe("docker test engine", () => {
  it("works on a host whose FORWARD policy is DROP: containers reach each other, the host reaches them and their ports", async (t) => {
    // br_netfilter is a kernel module; loading it would change the machine for everyone.
    if (!existsSync(BRIDGE_NF)) return t.skip("br_netfilter is not loaded, so no host here filters bridged traffic");
    const before = await host.firewall();
    assert.match(before, /^ip_forward=1 bridge-nf-call-iptables=1$/m);
    assert.match(before, /^-P FORWARD DROP$/m);

    engine = await DockerEngine.start({ netns: host.file });
    const image = await busyboxImage(engine);
    // A user-defined network, as docker-compose makes for a project; fw-a's port 80 is
    // published, as the compose file publishes the balancer's.
    await engine.docker.createNetwork({ Name: "fw", IPAM: { Config: [{ Subnet: `10.${engine.net}.20.0/24` }] } });
    const published = `${engine.address}:8080`;
    const ips: Record<string, string> = {};
    for (const name of ["fw-a", "fw-b"]) {
      const ports = name === "fw-a" ? { PortBindings: { "80/tcp": [{ HostIp: engine.address, HostPort: "8080" }] } } : {};
      const container = await engine.docker.createContainer({
        name,
        Hostname: name,
        Image: image,
        StopTimeout: 1,
        ExposedPorts: { "80/tcp": {} },
        HostConfig: { NetworkMode: "fw", ...ports },
      });
      await container.start();
      ips[name] = `${(await container.inspect()).NetworkSettings.Networks.fw!.IPAddress}:80`;
    }

    // One GET with busybox wget, "" when it fails. Bounded by busybox timeout: Debian's
    // static busybox 1.35 crashes on wget -T.
    const GET = (at: string) => ["/bin/busybox", "timeout", "2", "/bin/busybox", "wget", "-q", "-O", "-", `http://${at}/`];
    const fromHost = (at: string) => host.exec(GET(at)).then((s) => s.trim(), () => "");
    const fromA = (at: string) => engine!.cli(["exec", "fw-a", ...GET(at)]).then((r) => r.stdout.trim(), () => "");

    await waitFor(async () => (await fromHost(ips["fw-a"]!)) === "fw-a", 10_000).catch(() => {
      assert.fail(`the host did not reach fw-a at ${ips["fw-a"]}\n${engine!.logTail()}`);
    });
    await waitFor(async () => (await fromA(ips["fw-b"]!)) === "fw-b", 10_000).catch(() => {
      assert.fail(`fw-a did not reach fw-b at ${ips["fw-b"]} on one network, with the host's FORWARD policy DROP`);
    });
    assert.equal(await fromHost(ips["fw-b"]!), "fw-b");
    assert.equal(await fromHost(published), "fw-a", `fw-a's port published on ${published}`);

    // Nothing was let through by opening the host's firewall.
    assert.equal(await host.firewall(), before);
  });
});
