import type { Config } from "./schema.ts";

/** What a reload did (SIGHUP, POST /reload). */
export type ReloadResult =
  | { status: "reloaded"; applied: string[]; needRestart: string[] }
  /** The file is not a valid config: nothing changed. */
  | { status: "invalid"; file: string; problems: readonly string[] }
  /** Valid, but could not be applied (a listen address taken, an access log path not writable), or shutting down: nothing changed. */
  | { status: "refused"; reason: string };

/** The config file's top-level keys, by the Config field that holds each. */
const YAML_KEYS: Record<keyof Config, string> = {
  listen: "listen",
  algorithm: "algorithm",
  retries: "retries",
  maxConnections: "max_connections",
  workers: "workers",
  dataPath: "data_path",
  timeouts: "timeouts",
  slowStartMs: "slow_start",
  proxyProtocol: "proxy_protocol",
  listenProxyProtocol: "listen_proxy_protocol",
  healthCheck: "health_check",
  api: "api",
  stateFile: "state_file",
  stateStore: "state_store",
  accessLog: "access_log",
  log: "log",
  discovery: "discovery",
};

/**
 * Settings a running process cannot change: the thread count and data path are fixed
 * once threads run, and the API listener, its credentials and where API changes are kept
 * belong to the process that serves the API. A reload leaves them as they were and names
 * them in a warning.
 */
const RESTART_ONLY: ReadonlyArray<keyof Config> = ["workers", "dataPath", "api", "stateFile", "stateStore"];

export interface ConfigDifferences {
  /** Top-level keys (as written in YAML) whose value changed and that a reload applies. */
  readonly applied: string[];
  /** Changed keys a reload leaves as they were: they need a restart. */
  readonly needRestart: string[];
  /** `next`, with the restart-only settings kept from `current`. */
  readonly config: Config;
}

/** What a reload from `current` to `next` changes. */
export function configDifferences(current: Config, next: Config): ConfigDifferences {
  const applied: string[] = [];
  const needRestart: string[] = [];
  const config: Config = { ...next };
  for (const field of Object.keys(YAML_KEYS) as Array<keyof Config>) {
    if (same(current[field], next[field])) continue;
    if (RESTART_ONLY.includes(field)) {
      needRestart.push(YAML_KEYS[field]);
      (config as unknown as Record<string, unknown>)[field] = current[field];
    } else {
      applied.push(YAML_KEYS[field]);
    }
  }
  // The log format is fixed when the logger is made; its level a reload does change.
  if (current.log.format !== next.log.format) {
    needRestart.push("log.format");
    config.log = { ...next.log, format: current.log.format };
    if (current.log.level === next.log.level) applied.splice(applied.indexOf("log"), 1);
  }
  return { applied, needRestart, config };
}

/** Config values are plain data (parsed addresses included): equal when their JSON is. */
function same(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}
