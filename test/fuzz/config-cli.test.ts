// YAML mistakes through the real binary: one clear report and exit 1, never an internal
// error, a stack trace or a Node process warning.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { runCli, tempDir } from "../harness.ts";

/** Inputs the YAML library used to throw or warn about instead of reporting. */
export const YAML_MISTAKES: ReadonlyArray<[string, string, RegExp]> = [
  ["an alias whose anchor is missing", "listen: *a\n", /line 1 column 9: YAML error: alias \*a has no anchor &a before it/],
  ["a merge key from nothing", "<<: *nothing\nlisten: ':1'\n", /line 1 column 5: YAML error: alias \*nothing has no anchor/],
  ["an alias bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n", /YAML error: Excessive alias count/],
  ["a list as a key", "? [a, b]\n: 1\n", /line 1 column 3: YAML error: keys must be plain values/],
];

/** Asserts `r` is a config refusal as the contract describes it for `command`. */
export function assertRefused(r: { code: number | null; stdout: string; stderr: string }, command: "validate" | "run", expected?: RegExp): void {
  const out = r.stdout + r.stderr;
  assert.equal(r.code, 1, out);
  assert.doesNotMatch(out, /internal error|\n\s+at |Warning:|\(node:\d+\)/, "no stack trace or process warning");
  if (command === "validate") {
    assert.match(r.stderr, /: invalid config\n/);
    if (expected) assert.match(r.stderr, expected);
  } else {
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.length, 1, `one log line: ${r.stdout}`);
    const line = JSON.parse(lines[0]!) as { msg: string; problems: string[] };
    assert.match(line.msg, /^invalid config /);
    if (expected) assert.ok(line.problems.some((p) => expected.test(p)), line.msg);
    assert.equal(r.stderr, "");
  }
}

describe("YAML mistakes through the command line", () => {
  const dir = tempDir();
  YAML_MISTAKES.forEach(([name, yaml, expected], i) => {
    const file = path.join(dir, `mistake-${i}.yaml`);
    writeFileSync(file, yaml);
    it(`validate: ${name}`, async () => assertRefused(await runCli(["validate", "--config", file]), "validate", expected));
    it(`run: ${name}`, async () => assertRefused(await runCli(["--config", file]), "run", expected));
  });
});
