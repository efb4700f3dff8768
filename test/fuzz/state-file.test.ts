// Property: whatever the state file holds, reading it gives a valid state or a
// StateFileError naming the file ("fix or remove it"); gobalancer refuses to start on it
// with one log line and exit 1. Inputs are valid state files, then truncated, mutated
// byte by byte, or with fields replaced by any JSON value.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { StateFile, StateFileError } from "../../src/store/file.ts";
import { runCli, tempDir } from "../harness.ts";
import { checkProperty, FUZZ_SEED } from "./settings.ts";

const address = fc.oneof(
  fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 65535 })).map(([a, p]) => `10.0.0.${a}:${p}`),
  fc.constantFrom("[::1]:80", "[fe80::1]:443", "backend.internal:3000", "a:1", "A:1", "10.0.0.4:0", "10.0.0.4", "::1:80", "", "x".repeat(300) + ":1"),
);
const entry = fc.record({ address, weight: fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.constantFrom(0, 1001, 1.5, -1, "2", null)) });
const validState = fc.record({
  version: fc.constantFrom(1, 1, 1, 2, "1", 0),
  backends: fc.array(entry, { maxLength: 6 }),
  weights: fc.array(entry, { maxLength: 6 }),
});

const at = fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true });
type Mutation = (bytes: Buffer) => Buffer;
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  at.map((f): Mutation => (b) => b.subarray(0, Math.floor(f * b.length))),
  fc.tuple(at, fc.uint8Array({ minLength: 1, maxLength: 4 })).map(([f, bytes]): Mutation => (b) => {
    const i = Math.floor(f * b.length);
    return Buffer.concat([b.subarray(0, i), Buffer.from(bytes), b.subarray(i)]);
  }),
  fc.tuple(at, fc.constantFrom(..."{}[]\",:0-e.\\ntu\u0000\ufeff".split(""))).map(([f, c]): Mutation => (b) => {
    const i = Math.floor(f * b.length);
    return Buffer.concat([b.subarray(0, i), Buffer.from(c), b.subarray(i + 1)]);
  }),
  fc.tuple(at, fc.integer({ min: 1, max: 20 })).map(([f, n]): Mutation => (b) => {
    const i = Math.floor(f * b.length);
    return Buffer.concat([b.subarray(0, i), b.subarray(i + n)]);
  }),
);

/** A state file's bytes: a state, maybe with a field swapped for any JSON, then mutated. */
const stateBytes = fc
  .tuple(
    validState,
    fc.option(fc.tuple(fc.constantFrom("version", "backends", "weights", "extra", "__proto__", "constructor"), fc.jsonValue({ maxDepth: 4 })), { freq: 3 }),
    fc.option(fc.integer({ min: 1000, max: 20000 }), { freq: 10 }),
    fc.option(fc.integer({ min: 1000, max: 100000 }), { freq: 10 }),
    fc.array(mutation, { maxLength: 3 }),
  )
  .map(([state, swap, huge, deep, mutations]) => {
    let text = JSON.stringify(state, null, 2);
    if (swap) text = text.replace(/^\{/, `{${JSON.stringify(swap[0])}: ${JSON.stringify(swap[1])},`);
    if (huge) text = JSON.stringify({ ...state, backends: Array.from({ length: huge }, (_, i) => ({ address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:80`, weight: 1 })) });
    if (deep) text = `{"version": 1, "backends": ${"[".repeat(deep)}${"]".repeat(deep)}}`;
    return mutations.reduce<Buffer>((b, m) => m(b), Buffer.from(text));
  });

async function readOutcome(file: string): Promise<"accepted" | string> {
  const started = performance.now();
  try {
    const state = await new StateFile(file).read();
    for (const e of [...state.backends, ...state.weights]) {
      assert.equal(typeof e.address.key, "string");
      assert.ok(Number.isInteger(e.weight) && e.weight >= 1 && e.weight <= 1000, `weight ${e.weight}`);
    }
    return "accepted";
  } catch (err) {
    assert.ok(err instanceof StateFileError, `expected a StateFileError, got ${(err as Error)?.stack ?? String(err)}`);
    assert.ok(err.message.includes(file), `names the file: ${err.message}`);
    assert.match(err.message, /^state file .* is (corrupt|invalid): .*fix or remove it$/s);
    assert.doesNotMatch(err.message, /\bat .+:\d+:\d+\)/, "no stack frame");
    return err.message;
  } finally {
    assert.ok(performance.now() - started < 2000, `reading took ${Math.round(performance.now() - started)} ms`);
  }
}

describe("fuzz: the state file", () => {
  const dir = tempDir("gobalancer-fuzz-state-");

  it("a mutated state file is read or refused with its name", async (t) => {
    const file = path.join(dir, "state.json");
    await checkProperty(
      t,
      "state file",
      fc.asyncProperty(stateBytes, async (bytes) => {
        writeFileSync(file, bytes);
        await readOutcome(file);
      }),
      300,
    );
  });

  it("gobalancer refuses to start on a refused state file: one log line naming it, exit 1", async () => {
    const refused: Buffer[] = [];
    for (const bytes of fc.sample(stateBytes, { seed: FUZZ_SEED, numRuns: 200 })) {
      const file = path.join(dir, "probe.json");
      writeFileSync(file, bytes);
      if ((await readOutcome(file)) !== "accepted") refused.push(bytes);
      if (refused.length === 3) break;
    }
    assert.equal(refused.length, 3);
    await Promise.all(
      refused.map(async (bytes, i) => {
        const stateFile = path.join(dir, `cli-${i}.json`);
        writeFileSync(stateFile, bytes);
        const config = path.join(dir, `cli-${i}.yaml`);
        writeFileSync(config, `listen: "127.0.0.1:0"\napi:\n  listen: "127.0.0.1:0"\nstate_file: ${JSON.stringify(stateFile)}\n`);
        const r = await runCli(["--config", config], { env: { GOBALANCER_API_TOKEN: "" } });
        assert.equal(r.code, 1, r.stdout + r.stderr);
        assert.doesNotMatch(r.stdout + r.stderr, /internal error|\n\s+at /);
        const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { level: number; msg: string });
        const errors = lines.filter((l) => l.level >= 50);
        assert.equal(errors.length, 1, r.stdout);
        assert.ok(errors[0]!.msg.startsWith(`start failed: state file ${stateFile} is `), errors[0]!.msg);
      }),
    );
  });
});
