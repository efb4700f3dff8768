import { spawnSync } from "node:child_process";

/**
 * Installs Debian packages that are missing (tests that need a real chromium or etcd).
 * Needs root; on a fresh machine without package lists, updates them once and tries again.
 */
export function ensureDebianPackages(packages: readonly string[], why: string): void {
  const missing = packages.filter((p) => {
    const r = spawnSync("dpkg-query", ["-W", "-f=${Status}", p], { encoding: "utf8" });
    return !(r.status === 0 && r.stdout.startsWith("install ok installed"));
  });
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) throw new Error(`${why} needs root to install ${missing.join(", ")}; run as root or install it first`);
  const apt = (args: string[]) =>
    spawnSync("apt-get", ["-o", "DPkg::Lock::Timeout=300", ...args], { encoding: "utf8", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  const install = ["install", "-y", "--no-install-recommends", ...missing];
  let res = apt(install);
  if (res.status !== 0) {
    apt(["update"]);
    res = apt(install);
  }
  if (res.error || res.status !== 0) {
    throw new Error(`apt-get install ${missing.join(" ")} failed: ${res.error?.message ?? res.stderr.trim().split("\n").slice(-3).join(" | ")}`);
  }
}
