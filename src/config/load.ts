import { readFile } from "node:fs/promises";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { configSchema, type Config } from "./schema.ts";

/** A config that cannot be used; `problems` are "yaml.path: what is wrong" lines. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(file: string, problems: readonly string[]) {
    super(`invalid config ${file}: ${problems.join("; ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** Reads, parses and validates a YAML config file. Throws ConfigError for user mistakes. */
export async function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "file not found" : code === "EACCES" ? "permission denied" : (err as Error).message;
    throw new ConfigError(file, [`cannot read config: ${why}`]);
  }
  return parseConfig(text, file, env);
}

/** Parses and validates YAML text; `file` only labels errors. */
export function parseConfig(text: string, file = "config", env: NodeJS.ProcessEnv = process.env): Config {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => {
        const pos = e.linePos?.[0];
        return `${pos ? `line ${pos.line} column ${pos.col}: ` : ""}YAML syntax error: ${e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")}`;
      }),
    );
  }
  const raw: unknown = doc.toJS() ?? {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(file, ["the config must be a YAML mapping of keys such as listen, algorithm, discovery"]);
  }
  const result = configSchema.safeParse(raw, { reportInput: true });
  if (!result.success) throw new ConfigError(file, result.error.issues.flatMap(describeIssue));
  const config = result.data;
  if (config.api.token === "" && env.GOBALANCER_API_TOKEN) config.api.token = env.GOBALANCER_API_TOKEN;
  return config;
}

/** Renders a path the way users see it in YAML: `discovery.backends[1].address`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out || "(top level)";
}

function describeIssue(issue: z.core.$ZodIssue): string[] {
  const at = formatPath(issue.path);
  // Messages we wrote ourselves are already phrased for users; zod's defaults are not.
  if (!/^(Too |Invalid )/.test(issue.message) && issue.code !== "unrecognized_keys") return [`${at}: ${issue.message}`];
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((key) => {
        const hint = suggestKey(key);
        return `${formatPath([...issue.path, key])}: unknown key${hint ? ` (did you mean "${hint}"?)` : ""}`;
      });
    case "invalid_type":
      return [`${at}: must be ${article(issue.expected)}, got ${describeValue(issue.input)}`];
    case "too_small":
      return [`${at}: must be ${issue.inclusive === false ? ">" : ">="} ${String(issue.minimum)}${issue.origin === "string" ? " characters" : ""}`];
    case "too_big":
      return [`${at}: must be ${issue.inclusive === false ? "<" : "<="} ${String(issue.maximum)}`];
    case "invalid_value":
      return [`${at}: must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`];
    default:
      return [`${at}: ${issue.message}`];
  }
}

function article(type: string): string {
  if (type === "int") return "an integer";
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${JSON.stringify(value)}`;
}

const KNOWN_KEYS = [
  "listen", "algorithm", "retries", "max_connections", "workers", "data_path", "timeouts", "connect", "idle", "shutdown",
  "health_check", "type", "interval", "timeout", "rise", "fall", "http", "path", "expect_status", "host",
  "api", "token", "allow_unauthenticated", "state_file", "access_log", "enabled", "log", "level", "format", "discovery", "backends",
  "address", "weight", "docker", "label", "network", "kubernetes", "namespace", "service", "port",
];

function suggestKey(key: string): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const known of KNOWN_KEYS) {
    const d = editDistance(key.toLowerCase(), known);
    if (d < bestDistance) [best, bestDistance] = [known, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}
