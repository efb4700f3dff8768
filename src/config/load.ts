import { readFile } from "node:fs/promises";
import { isAlias, isCollection, isMap, isPair, isScalar, type Scalar, LineCounter, parseDocument, visit, type Document, type YAMLError } from "yaml";
import type { z } from "zod";
import { configKeys, configSchema, type Config } from "./schema.ts";

/** A config that cannot be used; `problems` are "yaml.path: what is wrong" lines. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(file: string, problems: readonly string[]) {
    // A problem is one line of a report or a log field, whatever bytes the file held.
    const lines = problems.map(oneLine);
    super(`invalid config ${file}: ${lines.join("; ")}`);
    this.name = "ConfigError";
    this.problems = lines;
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

/** The most aliases one document may expand (the yaml library's own default, made explicit). */
const MAX_ALIAS_COUNT = 100;
/** No config needs more than a handful of levels; past this the input is a mistake or an attack. */
const MAX_DEPTH = 100;
/** Enough to fix a file in one go; garbage input could otherwise produce thousands. */
const MAX_YAML_PROBLEMS = 20;

/** Parses and validates YAML text; `file` only labels errors. */
export function parseConfig(text: string, file = "config", env: NodeJS.ProcessEnv = process.env): Config {
  const raw = readYaml(text, file);
  if (typeof raw !== "object" || Array.isArray(raw) || raw instanceof Uint8Array || raw instanceof Set || raw instanceof Map || raw instanceof Date) {
    throw new ConfigError(file, ["the config must be a YAML mapping of keys such as listen, algorithm, discovery"]);
  }
  const result = configSchema.safeParse(raw, { reportInput: true });
  if (!result.success) throw new ConfigError(file, result.error.issues.flatMap(describeIssue));
  const config = result.data;
  if (config.api.token === "" && env.GOBALANCER_API_TOKEN) config.api.token = env.GOBALANCER_API_TOKEN;
  return config;
}

/**
 * YAML text to plain JavaScript values. Everything the yaml library reports or throws about
 * the text becomes a ConfigError with its line and column: errors and warnings from the
 * parser, and what only shows when values are built (aliases, merges, alias bombs).
 * logLevel "error" keeps the library from calling process.emitWarning; the one warning it
 * raises while building values (collection keys) is checked for here first.
 */
function readYaml(text: string, file: string): object | null | string | number | boolean | bigint {
  const lineCounter = new LineCounter();
  let doc: Document.Parsed;
  try {
    doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true, logLevel: "error", lineCounter });
  } catch (err) {
    throw new ConfigError(file, [`YAML error: ${describeYamlMessage(err)}`]);
  }
  const at = (offset: number | undefined) => {
    if (offset === undefined) return "";
    const { line, col } = lineCounter.linePos(offset);
    return `line ${line} column ${col}: `;
  };
  const problems = [
    ...doc.errors.map((e) => yamlProblem(e, "YAML syntax error")),
    ...doc.warnings.map((e) => yamlProblem(e, "YAML error")),
  ];
  if (problems.length === 0) {
    try {
      problems.push(...checkStructure(doc).map(([offset, why]) => `${at(offset)}YAML error: ${why}`));
    } catch (err) {
      problems.push(`YAML error: ${describeYamlMessage(err)}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(file, capProblems(problems));
  try {
    return doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) ?? {};
  } catch (err) {
    throw new ConfigError(file, [`${at(locateFailure(doc))}YAML error: ${describeYamlMessage(err)}`]);
  }
}

function yamlProblem(e: YAMLError, kind: string): string {
  const pos = e.linePos?.[0];
  return `${pos ? `line ${pos.line} column ${pos.col}: ` : ""}${kind}: ${describeYamlMessage(e)}`;
}

function describeYamlMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof RangeError || /Maximum call stack size exceeded/.test(message)) return `nested deeper than ${MAX_DEPTH} levels`;
  return message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "");
}

/** Drops repeats and keeps the first MAX_YAML_PROBLEMS. */
function capProblems(problems: string[]): string[] {
  const seenMessages = new Set<string>();
  const unique = problems.filter((p) => {
    const message = p.replace(/^line \d+ column \d+: /, "");
    // A runaway nesting is reported at every level; once is enough.
    if (message.endsWith(`nested deeper than ${MAX_DEPTH} levels`) && seenMessages.has(message)) return false;
    seenMessages.add(message);
    return true;
  });
  const distinct = [...new Set(unique)];
  if (distinct.length <= MAX_YAML_PROBLEMS) return distinct;
  return [...distinct.slice(0, MAX_YAML_PROBLEMS), `and ${distinct.length - MAX_YAML_PROBLEMS} more YAML errors`];
}

/**
 * What would otherwise throw or warn while values are built, found with its offset:
 * nesting too deep, an alias with no anchor before it, a list or mapping used as a key.
 */
function checkStructure(doc: Document.Parsed): Array<[number | undefined, string]> {
  const problems: Array<[number | undefined, string]> = [];
  const anchors = new Map<string, unknown>();
  visit(doc, {
    Node(_key, node, path) {
      const depth = path.filter((p) => isCollection(p)).length;
      if (depth > MAX_DEPTH) {
        problems.push([node.range?.[0], `nested deeper than ${MAX_DEPTH} levels`]);
        return visit.BREAK;
      }
      if (isAlias(node)) {
        // The yaml library resolves an alias to the last anchor of that name before it.
        if (!anchors.has(node.source)) problems.push([node.range?.[0], `alias *${node.source} has no anchor &${node.source} before it`]);
      } else if (node.anchor) {
        anchors.set(node.anchor, node);
      }
      const parent = path[path.length - 1];
      if (isPair(parent) && parent.key === node) {
        const keyNode = isAlias(node) ? anchors.get(node.source) : node;
        if (isCollection(keyNode)) problems.push([node.range?.[0], "keys must be plain values, not lists or mappings"]);
      }
      return undefined;
    },
  });
  return problems;
}

/** The offset of the innermost collection whose values cannot be built, if any. */
function locateFailure(doc: Document.Parsed): number | undefined {
  let offset: number | undefined;
  let budget = 500; // each try builds a subtree; bounded so a huge document stays quick
  visit(doc, {
    Collection(_key, node) {
      if (budget-- <= 0) return visit.BREAK;
      try {
        node.toJS(doc, { maxAliasCount: MAX_ALIAS_COUNT });
      } catch {
        // Visited parents first, so the last failure is innermost. A bad merge fails its
        // mapping: point at the merge key itself.
        const merge = isMap(node) ? node.items.find((pair) => isScalar(pair.key) && pair.key.source === "<<") : undefined;
        offset = (merge?.key as Scalar | undefined)?.range?.[0] ?? node.range?.[0];
      }
      return undefined;
    },
  });
  return offset;
}

/** Control characters and line breaks escaped, so a problem is always one line. */
function oneLine(problem: string): string {
  return problem.replace(/[\u0000-\u001f\u007f\u0085\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** Renders a path the way users see it in YAML: `discovery.backends[1].address`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else {
      // Keys users may write are plain words; anything else is quoted so it reads as one key.
      const key = /^[\w.:/@-]+$/.test(String(part)) ? String(part) : JSON.stringify(String(part));
      out += out === "" ? key : `.${key}`;
    }
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
  if (Array.isArray(value) || value instanceof Set) return "a list";
  if (value instanceof Uint8Array) return "binary data";
  if (value instanceof Date) return "a timestamp";
  if (typeof value === "object") return "a mapping";
  return `${typeof value} ${JSON.stringify(value)}`;
}

/** Derived from the schema, so a new key is suggested as soon as it exists. */
const KNOWN_KEYS = configKeys();

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
