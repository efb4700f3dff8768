// The command line as users see it: help, version, validate, exit codes.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { REPO, runCli, tempDir } from "./harness.ts";

describe("gobalancer command line", () => {
  it("--version prints the package version", async () => {
    const { version } = JSON.parse(readFileSync(path.join(REPO, "package.json"), "utf8")) as { version: string };
    const r = await runCli(["--version"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, new RegExp(`^gobalancer ${version.replace(/\./g, "\\.")} `));
  });

  it("--help shows usage", async () => {
    const r = await runCli(["--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /gobalancer validate/);
  });

  it("validate accepts the shipped config", async () => {
    const r = await runCli(["validate", "--config", "config/config.yaml"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /config is valid/);
  });

  it("validate lists every problem with its path and exits 1", async () => {
    const file = path.join(tempDir(), "bad.yaml");
    writeFileSync(file, "algoritm: x\ndiscovery:\n  backends:\n    - address: '10.0.0.4:3000'\n    - address: '10.0.0.4:70000'\n      weight: 0\n");
    const r = await runCli(["validate", "--config", file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /discovery\.backends\[1\]\.address: port must be 1-65535/);
    assert.match(r.stderr, /discovery\.backends\[1\]\.weight: must be an integer 1-1000/);
    assert.match(r.stderr, /algoritm: unknown key/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, "no stack trace");
  });

  it("validate names a missing file", async () => {
    const r = await runCli(["validate", "--config", "/nonexistent/gobalancer.yaml"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot read config: file not found/);
  });

  it("an unknown command or flag is a usage error", async () => {
    assert.equal((await runCli(["frobnicate"])).code, 2);
    assert.equal((await runCli(["--frobnicate"])).code, 2);
  });
});
