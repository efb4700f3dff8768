// YAML mistakes through the real binary: one clear report and exit 1, never an internal
// error, a stack trace or a Node process warning.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { runCli, tempDir } from "../harness.ts";
import { assertRefused } from "./cli-assert.ts";

/** Inputs the YAML library used to throw or warn about instead of reporting. */
const YAML_MISTAKES: ReadonlyArray<[string, string, RegExp]> = [
  ["an alias whose anchor is missing", "listen: *a\n", /line 1 column 9: YAML error: alias \*a has no anchor &a before it/],
  ["a merge key from nothing", "<<: *nothing\nlisten: ':1'\n", /line 1 column 5: YAML error: alias \*nothing has no anchor/],
  ["an alias bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n", /YAML error: Excessive alias count/],
  ["a list as a key", "? [a, b]\n: 1\n", /line 1 column 3: YAML error: keys must be plain values/],
];

describe("YAML mistakes through the command line", () => {
  const dir = tempDir();
  YAML_MISTAKES.forEach(([name, yaml, expected], i) => {
    const file = path.join(dir, `mistake-${i}.yaml`);
    writeFileSync(file, yaml);
    it(`validate: ${name}`, async () => assertRefused(await runCli(["validate", "--config", file]), "validate", expected));
    it(`run: ${name}`, async () => assertRefused(await runCli(["--config", file]), "run", expected));
  });
});
