/**
 * Images for the test engine, made locally with `docker import` because no registry is
 * reachable: a busybox image for backends, and a stand-in for the official Node image so
 * the real Dockerfile builds unchanged.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, copyFileSync, cpSync, linkSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { DOCKER_CLI, type DockerEngine } from "./engine.ts";

export const BUSYBOX_IMAGE = "gobalancer-test/busybox:1";

/**
 * Serves its hostname on $PORT (default 80, plain HTTP), so a response names the container. The
 * "healthy" file is what the test HEALTHCHECK looks for; removing it makes the container
 * unhealthy. The shell traps TERM so `docker stop` ends it at once (PID 1 ignores signals
 * it does not handle).
 */
export const BACKEND_COMMAND = ["sh", "-c", "hostname > /www/index.html; touch /tmp/healthy; trap 'exit 0' TERM; httpd -f -p ${PORT:-80} -h /www & wait"];

/** Hard-links (the Node binary is 100+ MB) when on the same file system, else copies. */
function linkOrCopy(from: string, to: string): void {
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}

/** `docker import` of the directory tree at `root`, streamed (no tarball on disk). */
async function importTree(engine: DockerEngine, root: string, name: string, changes: string[]): Promise<void> {
  chmodSync(root, 0o755); // it becomes the image's "/" (mkdtemp made it 0700)
  const script = 'root=$1; shift; tar -C "$root" --numeric-owner -c . | "$0" import "$@"';
  await engine.command("sh", ["-c", script, DOCKER_CLI, root, ...changes.flatMap((c) => ["--change", c]), "-", name]);
}

/** Adds busybox and a symlink per applet under root/bin, like a tiny distribution. */
function addBusybox(root: string): void {
  mkdirSync(path.join(root, "bin"), { recursive: true });
  copyFileSync("/bin/busybox", path.join(root, "bin", "busybox"));
  chmodSync(path.join(root, "bin", "busybox"), 0o755);
  const applets = spawnSync("/bin/busybox", ["--list"], { encoding: "utf8" }).stdout.split("\n").filter(Boolean);
  for (const applet of applets) if (applet !== "busybox") symlinkSync("busybox", path.join(root, "bin", applet));
}

/** gobalancer-test/busybox: static busybox with its applets, /www and /tmp. */
export async function busyboxImage(engine: DockerEngine): Promise<string> {
  const root = mkdtempSync("/tmp/gbd-rootfs-");
  try {
    addBusybox(root);
    for (const dir of ["www", "tmp", "etc"]) mkdirSync(path.join(root, dir), { recursive: true });
    chmodSync(path.join(root, "tmp"), 0o1777);
    await importTree(engine, root, BUSYBOX_IMAGE, [`CMD ${JSON.stringify(BACKEND_COMMAND)}`]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  return BUSYBOX_IMAGE;
}

/**
 * A stand-in for the official `node:<tag>` image: this machine's Node binary with the
 * shared libraries `ldd` names, npm, busybox for /bin/sh and the usual tools, and the
 * image's `node` user (uid 1000). Laid out as the official image is: /usr/local/bin/node,
 * /usr/local/lib/node_modules/npm.
 */
export async function nodeStandInImage(engine: DockerEngine, nodeBinary: string, npmDir: string, name: string): Promise<string> {
  const fs = mkdtempSync("/tmp/gbd-rootfs-");
  try {
    addBusybox(fs);
    for (const dir of ["usr/local/bin", "usr/local/lib/node_modules", "usr/bin", "tmp", "etc", "home/node", "root"]) mkdirSync(path.join(fs, dir), { recursive: true });
    symlinkSync("/bin/busybox", path.join(fs, "usr/bin/env")); // for npm's "#!/usr/bin/env node"
    chmodSync(path.join(fs, "tmp"), 0o1777);
    const node = realpathSync(nodeBinary);
    linkOrCopy(node, path.join(fs, "usr/local/bin/node"));
    const ldd = spawnSync("ldd", [node], { encoding: "utf8" });
    if (ldd.status !== 0) throw new Error(`ldd ${node} failed: ${ldd.stderr}`);
    for (const m of ldd.stdout.matchAll(/(\/\S+)\s+\(0x/g)) {
      const lib = m[1]!;
      mkdirSync(path.join(fs, path.dirname(lib)), { recursive: true });
      copyFileSync(realpathSync(lib), path.join(fs, lib));
    }
    cpSync(realpathSync(npmDir), path.join(fs, "usr/local/lib/node_modules/npm"), { recursive: true });
    symlinkSync("../lib/node_modules/npm/bin/npm-cli.js", path.join(fs, "usr/local/bin/npm"));
    symlinkSync("../lib/node_modules/npm/bin/npx-cli.js", path.join(fs, "usr/local/bin/npx"));
    writeFileSync(path.join(fs, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n");
    writeFileSync(path.join(fs, "etc/group"), "root:x:0:\nnode:x:1000:\n");
    chownSync(path.join(fs, "home/node"), 1000, 1000);
    await importTree(engine, fs, name, ["ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["node"]']);
  } finally {
    rmSync(fs, { recursive: true, force: true });
  }
  return name;
}
