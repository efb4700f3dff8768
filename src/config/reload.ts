import { configSchemaShape, type Config } from "./schema.ts";

/** What a reload did (SIGHUP, POST /reload). */
export type ReloadResult =
  | { status: "reloaded"; applied: string[]; needRestart: string[] }
  /** The file is not a valid config: nothing changed. */
  | { status: "invalid"; file: string; problems: readonly string[] }
  /** Valid, but could not be applied (a listen address taken, an access log path not writable), or shutting down: nothing changed. */
  | { status: "refused"; reason: string };

/**
 * Settings a running process cannot change: the thread count and data path are fixed
 * once threads run, and where API changes are kept belongs to the process that serves the
 * API. A reload leaves them as they were and names them in a warning.
 */
const RESTART_ONLY: ReadonlyArray<keyof Config> = ["workers", "dataPath", "stateFile", "stateStore"];

/**
 * The API's settings, each named on its own. Its listener is bound once, at start, so
 * `api.listen` needs a restart; the token (and whether none is allowed) a reload applies.
 */
const API_KEYS: Record<keyof Config["api"], { key: string; reload: boolean }> = {
  listen: { key: "api.listen", reload: false },
  token: { key: "api.token", reload: true },
  allowUnauthenticated: { key: "api.allow_unauthenticated", reload: true },
};

export interface ConfigDifferences {
  /** Keys (as written in YAML) whose value changed and that a reload applies. */
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
  for (const [key, field] of fieldsByKey(current)) {
    if (same(current[field], next[field])) continue;
    if (field === "api") {
      for (const [apiField, { key: apiKey, reload }] of Object.entries(API_KEYS) as Array<[keyof Config["api"], { key: string; reload: boolean }]>) {
        if (!same(current.api[apiField], next.api[apiField])) (reload ? applied : needRestart).push(apiKey);
      }
      config.api = { ...next.api, listen: current.api.listen };
    } else if (RESTART_ONLY.includes(field)) {
      needRestart.push(key);
      (config as unknown as Record<string, unknown>)[field] = current[field];
    } else {
      applied.push(key);
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

/**
 * The config file's top-level keys (from the schema, so a new key is compared as soon as
 * it exists), each with the Config field that holds it: the key in camelCase, with `Ms`
 * for a duration (`slow_start` is `slowStartMs`). A key or field that does not pair up is
 * a mistake in the schema's transform, not in the user's file: it throws.
 */
function fieldsByKey(config: Config): Array<[string, keyof Config]> {
  const pairs: Array<[string, keyof Config]> = [];
  const fields = new Set(Object.keys(config));
  for (const key of Object.keys(configSchemaShape())) {
    const camel = key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    const field = [camel, `${camel}Ms`].find((f) => fields.has(f));
    if (field === undefined) throw new Error(`config key ${key} has no Config field (looked for ${camel} and ${camel}Ms)`);
    fields.delete(field);
    pairs.push([key, field as keyof Config]);
  }
  if (fields.size > 0) throw new Error(`Config fields with no config key: ${[...fields].join(", ")}`);
  return pairs;
}

/** Config values are plain data (parsed addresses included): equal when their JSON is. */
function same(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}
