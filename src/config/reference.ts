import { z } from "zod";
import { stringify } from "yaml";
import { configSchemaShape } from "./schema.ts";

/** Where the comments start, so they line up. */
const COMMENT_COLUMN = 29;

interface FieldDoc {
  description?: string;
  /** The default as a user writes it, where the parsed value reads differently. */
  written?: string;
}

/**
 * The configuration reference in the README: every key with its default and what it is
 * for, generated from the schema's own field documentation (schema.ts `doc`), so the
 * two cannot drift: reference.test.ts fails when they differ, and `make reference`
 * writes it into the README. Lists show one example entry.
 */
export function configReference(): string {
  const lines: string[] = [];
  writeObject(configSchemaShape(), 0, lines);
  return `${lines.join("\n")}\n`;
}

const SECTION = "\n## Configuration\n";
const BLOCK_START = "```yaml\n";
const BLOCK_END = "```\n";

/** Where the reference sits in the README's text: the first YAML block under "## Configuration". */
export function referenceSpan(readme: string): { start: number; end: number } {
  const section = readme.indexOf(SECTION);
  if (section === -1) throw new Error(`README has no "${SECTION.trim()}" section`);
  const start = readme.indexOf(BLOCK_START, section) + BLOCK_START.length;
  if (start < BLOCK_START.length) throw new Error("README's Configuration section has no yaml block");
  return { start, end: readme.indexOf(BLOCK_END, start) };
}

/** `readme` with its configuration reference replaced by the one generated now. */
export function withCurrentReference(readme: string): string {
  const { start, end } = referenceSpan(readme);
  return readme.slice(0, start) + configReference() + readme.slice(end);
}

function writeObject(shape: Record<string, z.core.$ZodType>, indent: number, lines: string[], firstPrefix = ""): void {
  let first = true;
  for (const [key, field] of Object.entries(shape)) {
    const pad = " ".repeat(indent);
    const prefix = first ? firstPrefix : " ".repeat(firstPrefix.length);
    first = false;
    const meta = (z.globalRegistry.get(field) ?? {}) as FieldDoc;
    const object = objectShape(field);
    const element = arrayElementShape(field);
    if (object !== undefined || element !== undefined) {
      push(lines, `${pad}${prefix}${key}:`, meta.description);
      if (object !== undefined) writeObject(object, indent + prefix.length + 2, lines);
      else writeObject(element!, indent + prefix.length + 2, lines, "- ");
      continue;
    }
    push(lines, `${pad}${prefix}${key}: ${meta.written ?? written(defaultOf(field))}`, meta.description);
  }
}

/** `text`, then the description as a comment at COMMENT_COLUMN (continued on more lines). */
function push(lines: string[], text: string, description: string | undefined): void {
  if (description === undefined) {
    lines.push(text);
    return;
  }
  const [first, ...more] = description.split("\n");
  lines.push(`${text.padEnd(COMMENT_COLUMN - 1)} # ${first}`);
  for (const line of more) lines.push(`${" ".repeat(COMMENT_COLUMN)}# ${line}`);
}

function written(value: unknown): string {
  return stringify(value, { flow: true }).trim();
}

type Def = { type: string; innerType?: z.core.$ZodType; in?: z.core.$ZodType; element?: z.core.$ZodType; shape?: Record<string, z.core.$ZodType>; defaultValue?: unknown };

function def(schema: z.core.$ZodType): Def {
  return schema._zod.def as unknown as Def;
}

/** Through defaults, optionals and pipes to the schema that holds the structure. */
function unwrap(schema: z.core.$ZodType): z.core.$ZodType {
  let s = schema;
  for (;;) {
    const d = def(s);
    if (d.innerType !== undefined) s = d.innerType;
    else if (d.type === "pipe" && d.in !== undefined) s = d.in;
    else return s;
  }
}

function objectShape(schema: z.core.$ZodType): Record<string, z.core.$ZodType> | undefined {
  const d = def(unwrap(schema));
  return d.type === "object" ? d.shape : undefined;
}

function arrayElementShape(schema: z.core.$ZodType): Record<string, z.core.$ZodType> | undefined {
  const d = def(unwrap(schema));
  return d.type === "array" && d.element !== undefined ? objectShape(d.element) : undefined;
}

function defaultOf(schema: z.core.$ZodType): unknown {
  for (let s: z.core.$ZodType | undefined = schema; s !== undefined; s = def(s).innerType) {
    const d = def(s);
    if (d.type === "default" || d.type === "prefault") return d.defaultValue;
  }
  return undefined;
}
