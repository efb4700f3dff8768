/**
 * Reloading a running gobalancer as the reload suites do: its config file rewritten with
 * the test defaults (harness.ts testConfig), then SIGHUP or POST /reload.
 */
import net from "node:net";
import path from "node:path";
import { writeFileSync } from "node:fs";
import { stringify } from "yaml";
import { testConfig, waitFor, type BalancerProcess } from "./harness.ts";

/** Writes `config` over the running balancer's file, with startBalancer's defaults (the API's address as first written unless given). */
export function rewrite(lb: BalancerProcess, config: Record<string, unknown>): void {
  writeFileSync(path.join(lb.dir, "config.yaml"), stringify(testConfig(lb.dir, config)));
}

/** Sends SIGHUP and waits for the reload's outcome in the log (the n-th since start). */
export async function sighup(lb: BalancerProcess): Promise<void> {
  const before = lb.logs.filter(isReloadOutcome).length;
  lb.signal("SIGHUP");
  await waitFor(() => lb.logs.filter(isReloadOutcome).length > before, 5000, "the reload to finish");
}

function isReloadOutcome(l: { msg: string }): boolean {
  return l.msg === "config reloaded" || l.msg.startsWith("reload refused");
}

/** POST /reload (with `token` when given); the status and the parsed body. */
export async function postReload(lb: BalancerProcess, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${lb.api}/reload`, { method: "POST", headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Whether a TCP connection to 127.0.0.1:`port` is accepted. */
export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}
