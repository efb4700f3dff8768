// Property: whatever bytes a config file holds, loading it either gives a Config or a
// ConfigError whose every problem is one line without a stack trace. Never another
// exception, a Node process warning, or a hang. Inputs are mutations of every shipped
// example: config/, deployments/ and the README's YAML blocks.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { parseDocument } from "yaml";
import { ConfigError, loadConfigFile } from "../../src/config/load.ts";
import { REPO, runCli, tempDir } from "../harness.ts";
import { assertRefused } from "./cli-assert.ts";
import { checkProperty, FUZZ_SEED } from "./settings.ts";

/** The shipped examples, by name: files, the ConfigMap's embedded config, README blocks. */
export function shippedExamples(): Array<[string, string]> {
  const read = (file: string) => readFileSync(path.join(REPO, file), "utf8");
  const examples: Array<[string, string]> = [
    ["config/config.yaml", read("config/config.yaml")],
    ["deployments/docker/config.yaml", read("deployments/docker/config.yaml")],
  ];
  const configMap = parseDocument(read("deployments/kubernetes/configmap.yaml")).toJS() as { data: Record<string, string> };
  examples.push(["deployments/kubernetes/configmap.yaml (config.yaml)", configMap.data["config.yaml"]!]);
  const readme = read("README.md");
  const configuration = readme.slice(readme.indexOf("\n## Configuration"));
  const blocks = [...readme.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)];
  assert.ok(blocks.some((b) => configuration.startsWith(readme.slice(readme.indexOf("\n## Configuration"), b.index))), "a YAML example in the README's Configuration section");
  blocks.forEach((b, i) => examples.push([`README.md yaml block ${i + 1}`, b[1]!]));
  return examples;
}

// ---- mutations -------------------------------------------------------------------------

type Mutation = (text: string) => string;

/** Characters that mean something to YAML, plus line breaks, tabs and odd code points. */
const yamlChar = fc.oneof(
  fc.constantFrom(..."&*!|>'\"%@`#:-?,[]{}<\\ \t\n\r".split("")),
  fc.constantFrom("\u0000", "\u0085", "\u2028", "\ufeff", "\ud800", "\uffff", "é", "😀"),
  fc.string({ minLength: 1, maxLength: 3 }),
);

/** Snippets that exercise YAML features: anchors, aliases, merges, tags, flow, directives. */
const yamlFeature = fc.oneof(
  fc.constantFrom(
    "&a ", "*a", "*nothing", "<<: *a", "<<: *nothing", "<<: [*a, *b]", "<<: {listen: ':1'}", "<<: 1",
    "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [a: 1, a: 2]", "!!js/function 'x'", "!!str", "!!int x", "!!float", "!!null",
    "!!timestamp 2001-12-14", "!foo bar", "!<tag:x> y", "? [a, b]\n: 1", "? {a: 1}\n: 2", "{a: [1, {b: 2}]}", "[x, *a, &b y]",
    "%YAML 1.1\n---\n", "%YAML 2.0\n---\n", "%TAG ! tag:x,2000:\n---\n", "---\n", "...\n", "--- |\n  x\n", ">-\n  folded\n",
    "\t", "  ", ": ", "- ", "#", "~", "null", "yes", "0x10", "1e999", "-.inf", ".nan", "'", "\"\\u", "\"\\x00\"",
    "listen: ':1'\nlisten: ':2'\n",
  ),
  fc.integer({ min: 1, max: 3000 }).map((depth) => `x: ${"[".repeat(depth)}${"]".repeat(depth)}`),
  fc.integer({ min: 1, max: 300 }).map((depth) => Array.from({ length: depth }, (_, i) => `${" ".repeat(i)}k${i}:`).join("\n")),
  fc.integer({ min: 2, max: 12 }).map((width) => {
    // The billion-laughs shape: each level aliases the one above `width` times.
    const lines = [`l0: &l0 [${Array(width).fill("lol").join(", ")}]`];
    for (let i = 1; i < 6; i++) lines.push(`l${i}: &l${i} [${Array(width).fill(`*l${i - 1}`).join(", ")}]`);
    return lines.join("\n");
  }),
);

const atFraction = fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true });
const pos = (text: string, f: number) => Math.floor(f * (text.length + 1));
const lineAt = (lines: string[], f: number) => Math.floor(f * lines.length);

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  // character level
  fc.tuple(atFraction, yamlChar).map(([f, c]): Mutation => (t) => t.slice(0, pos(t, f)) + c + t.slice(pos(t, f))),
  fc.tuple(atFraction, fc.integer({ min: 1, max: 40 })).map(([f, n]): Mutation => (t) => t.slice(0, pos(t, f)) + t.slice(pos(t, f) + n)),
  fc.tuple(atFraction, yamlChar).map(([f, c]): Mutation => (t) => t.slice(0, pos(t, f)) + c + t.slice(pos(t, f) + 1)),
  atFraction.map((f): Mutation => (t) => t.slice(0, pos(t, f))), // truncation
  // line level
  fc.tuple(atFraction, atFraction).map(([a, b]): Mutation => (t) => {
    const lines = t.split("\n");
    const [i, j] = [lineAt(lines, a), lineAt(lines, b)];
    [lines[i], lines[j]] = [lines[j]!, lines[i]!];
    return lines.join("\n");
  }),
  atFraction.map((f): Mutation => (t) => {
    const lines = t.split("\n");
    lines.splice(lineAt(lines, f), 1);
    return lines.join("\n");
  }),
  fc.tuple(atFraction, fc.integer({ min: -4, max: 4 })).map(([f, d]): Mutation => (t) => {
    const lines = t.split("\n");
    const i = lineAt(lines, f);
    lines[i] = d >= 0 ? " ".repeat(d) + lines[i] : lines[i]!.slice(-d);
    return lines.join("\n");
  }),
  atFraction.map((f): Mutation => (t) => {
    const lines = t.split("\n");
    const i = lineAt(lines, f);
    lines.splice(i, 0, lines[i]!);
    return lines.join("\n");
  }),
  // YAML features, inline or on a line of their own
  fc.tuple(atFraction, yamlFeature, fc.boolean()).map(([f, s, own]): Mutation => (t) => {
    if (!own) return t.slice(0, pos(t, f)) + s + t.slice(pos(t, f));
    const lines = t.split("\n");
    lines.splice(lineAt(lines, f), 0, s);
    return lines.join("\n");
  }),
  // a value replaced by an anchor/alias pair, so aliases meet the schema too
  fc.constantFrom<Mutation>(
    (t) => t.replace(/^(\s*\w+:)( .*)$/m, "$1 &a$2").replace(/^(\s*(?!.*&a)\w+:) .*$/m, "$1 *a"),
    (t) => `base: &base\n  listen: ":9"\n${t.replace(/^listen:.*$/m, "<<: *base")}`,
  ),
);

/** A mutated example, as the bytes a file would hold (some with invalid UTF-8). */
const mutatedConfig = (examples: Array<[string, string]>) =>
  fc
    .tuple(fc.integer({ min: 0, max: examples.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.option(fc.tuple(atFraction, fc.uint8Array({ minLength: 1, maxLength: 4 })), { freq: 5 }))
    .map(([i, mutations, bytes]) => {
      const text = mutations.reduce((t, m) => m(t), examples[i]![1]);
      let buffer = Buffer.from(text, "utf8");
      if (bytes) {
        const at = Math.floor(bytes[0] * buffer.length);
        buffer = Buffer.concat([buffer.subarray(0, at), Buffer.from(bytes[1].map((b) => b | 0x80)), buffer.subarray(at)]);
      }
      return { example: examples[i]![0], buffer };
    });

// ---- the property ------------------------------------------------------------------------

const STACK_FRAME = /\bat .+:\d+:\d+\)?|\bat <anonymous>|\n/;

/** Loads `file`; returns "accepted" or the problems, failing on anything else. */
async function loadOutcome(file: string): Promise<"accepted" | readonly string[]> {
  const started = performance.now();
  try {
    const config = await loadConfigFile(file, {});
    assert.equal(typeof config.listen, "object", "a Config");
    return "accepted";
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${(err as Error)?.stack ?? String(err)}`);
    assert.ok(err.problems.length >= 1 && err.problems.length <= 200, `${err.problems.length} problems`);
    for (const p of err.problems) {
      assert.equal(typeof p, "string");
      assert.doesNotMatch(p, STACK_FRAME, `one line, no stack frame: ${JSON.stringify(p)}`);
    }
    assert.doesNotMatch(err.message, STACK_FRAME);
    return err.problems;
  } finally {
    assert.ok(performance.now() - started < 2000, `loading took ${Math.round(performance.now() - started)} ms`);
  }
}

describe("fuzz: config files", () => {
  const dir = tempDir("gobalancer-fuzz-config-");
  const examples = shippedExamples();
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.message);
  before(() => process.on("warning", onWarning));
  after(() => process.off("warning", onWarning));

  it("every shipped example loads", async () => {
    for (const [name, text] of examples) {
      const file = path.join(dir, "example.yaml");
      writeFileSync(file, text);
      // README blocks may be fragments; they must still be judged cleanly.
      const outcome = await loadOutcome(file);
      if (!name.startsWith("README")) assert.equal(outcome, "accepted", `${name}: ${String(outcome)}`);
    }
  });

  it("a mutated example is accepted or refused with one-line problems", async (t) => {
    const file = path.join(dir, "mutated.yaml");
    let refused = 0;
    await checkProperty(
      t,
      "config files",
      fc.asyncProperty(mutatedConfig(examples), async ({ buffer }) => {
        writeFileSync(file, buffer);
        if ((await loadOutcome(file)) !== "accepted") refused++;
      }),
      300,
    );
    await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
    assert.deepEqual(warnings, [], "no Node process warnings");
    t.diagnostic(`refused ${refused}`);
  });

  it("refused mutations through the command line: exit 1, one clear report, no stack trace", async () => {
    const samples = fc.sample(mutatedConfig(examples), { seed: FUZZ_SEED, numRuns: 200 });
    const refused: Buffer[] = [];
    for (const { buffer } of samples) {
      const file = path.join(dir, "probe.yaml");
      writeFileSync(file, buffer);
      if ((await loadOutcome(file)) !== "accepted") refused.push(buffer);
      if (refused.length === 4) break;
    }
    assert.equal(refused.length, 4);
    await Promise.all(
      refused.map(async (buffer, i) => {
        const file = path.join(dir, `cli-${i}.yaml`);
        writeFileSync(file, buffer);
        assertRefused(await runCli(["validate", "--config", file]), "validate");
        assertRefused(await runCli(["--config", file], { env: { GOBALANCER_API_TOKEN: "" } }), "run");
      }),
    );
  });
});
