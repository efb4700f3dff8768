// What a refused config looks like from the outside, for the command-line tests.
import assert from "node:assert/strict";

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
