/**
 * The machine side of the peer benchmark: the Debian packages it needs (installed when
 * missing, skipped when present) and the facts recorded next to the figures.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { NGINX_STREAM_MODULE, REPO } from "./paths.ts";

export interface Tools {
  node: string;
  haproxy: string;
  nginx: string;
  iperf3: string;
  wrk: string;
}

const PACKAGES = ["haproxy", "nginx", "libnginx-mod-stream", "iperf3", "wrk"];

function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/sbin", "/usr/bin"];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

function findTools(): Partial<Tools> & { missing: string[] } {
  const found = { node: process.execPath, haproxy: which("haproxy"), nginx: which("nginx"), iperf3: which("iperf3"), wrk: which("wrk") };
  const missing: string[] = (["haproxy", "nginx", "iperf3", "wrk"] as const).filter((t) => !found[t]);
  if (!existsSync(NGINX_STREAM_MODULE)) missing.push("libnginx-mod-stream");
  return { ...found, missing };
}

/** Finds the tools, installing the Debian packages first if any is missing. */
export function ensureTools(log: (line: string) => void): Tools {
  let tools = findTools();
  if (tools.missing.length > 0) {
    if (process.getuid?.() !== 0) {
      throw new Error(`missing ${tools.missing.join(", ")}: run "sudo apt-get install -y ${PACKAGES.join(" ")}" first`);
    }
    log(`installing ${PACKAGES.join(" ")} (missing: ${tools.missing.join(", ")})`);
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    // Another apt run on a shared machine holds the lock for a while: wait for it.
    const install = () =>
      spawnSync("apt-get", ["install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", ...PACKAGES], { env, stdio: ["ignore", "inherit", "inherit"] }).status;
    if (install() !== 0) {
      spawnSync("apt-get", ["update", "-q", "-o", "DPkg::Lock::Timeout=600"], { env, stdio: ["ignore", "inherit", "inherit"] });
      if (install() !== 0) throw new Error(`apt-get install ${PACKAGES.join(" ")} failed`);
    }
    tools = findTools();
    if (tools.missing.length > 0) throw new Error(`still missing after install: ${tools.missing.join(", ")}`);
  }
  return tools as Tools;
}

function versionOf(command: string, args: string[], pattern: RegExp): string {
  const run = spawnSync(command, args, { encoding: "utf8", timeout: 5000 });
  return pattern.exec(`${run.stdout}\n${run.stderr}`)?.[1] ?? "unknown";
}

export interface Facts {
  date: string;
  cores: number;
  cpu: string;
  kernel: string;
  memoryGiB: number;
  loadAverage: number[];
  versions: Record<string, string>;
  commit: string;
}

export function machineFacts(tools: Tools): Facts {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  // The commit of the GoBalancer code measured: the last one touching what runs. Unlike
  // the checkout's own commit, it survives rebasing the benchmark's own changes.
  let commit = "unknown";
  try {
    const measured = ["src", "package.json", "package-lock.json"];
    const git = (...args: string[]) => execFileSync("git", ["-C", REPO, ...args], { encoding: "utf8" }).trim();
    commit = git("log", "-1", "--format=%h", "--", ...measured);
    if (git("status", "--porcelain", "--", ...measured) !== "") commit += " with uncommitted changes";
  } catch {
    // Not a git checkout.
  }
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    cores: os.availableParallelism(),
    cpu: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    kernel: `${os.type()} ${os.release()}`,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadAverage: os.loadavg(),
    versions: {
      gobalancer: versionOf(process.execPath, [path.join(REPO, "dist", "cli.js"), "--version"], /gobalancer (\S+)/),
      node: process.version,
      haproxy: versionOf(tools.haproxy, ["-v"], /version (\S+)/),
      nginx: versionOf(tools.nginx, ["-v"], /nginx\/(\S+)/),
      iperf3: versionOf(tools.iperf3, ["--version"], /iperf (\S+)/),
      wrk: versionOf(tools.wrk, ["-v"], /wrk (\S+)/),
    },
    commit,
  };
}
