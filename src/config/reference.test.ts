import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { parseConfig } from "./load.ts";
import { configReference, referenceSpan } from "./reference.ts";
import { configKeys } from "./schema.ts";

const README = path.resolve(import.meta.dirname, "../../README.md");

describe("configuration reference", () => {
  it("the README's is the one generated from the schema (make reference writes it)", () => {
    const readme = readFileSync(README, "utf8");
    const { start, end } = referenceSpan(readme);
    assert.equal(readme.slice(start, end), configReference());
  });

  it("names every key the schema knows", () => {
    const named = new Set([...configReference().matchAll(/^\s*(?:- )?([a-z_]+):/gm)].map((m) => m[1]!));
    assert.deepEqual([...configKeys()].filter((k) => !named.has(k)), []);
  });

  it("is a valid config whose values are the defaults", () => {
    const reference = parseConfig(configReference());
    const defaults = parseConfig("");
    assert.deepEqual({ ...reference, discovery: { ...reference.discovery, backends: [] } }, defaults);
    assert.equal(reference.discovery.backends.length, 1);
  });
});
