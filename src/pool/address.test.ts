import assert from "node:assert/strict";
import { it } from "node:test";
import { parseHostPort } from "./address.ts";

it("gives one canonical key per backend, whatever the spelling", () => {
  assert.equal(parseHostPort("10.0.0.4:3000").key, "10.0.0.4:3000");
  assert.equal(parseHostPort("[::1]:80").key, "[::1]:80");
  assert.equal(parseHostPort("[0:0:0:0:0:0:0:1]:80").key, "[::1]:80");
  assert.equal(parseHostPort("[2001:DB8::A]:443").key, "[2001:db8::a]:443");
  assert.equal(parseHostPort("Backend.Example.COM.:8080").key, "backend.example.com:8080");
  assert.deepEqual(parseHostPort("[::1]:80"), { host: "::1", port: 80, key: "[::1]:80" });
});

it("rejects what is not host:port, saying why", () => {
  assert.throws(() => parseHostPort("10.0.0.4"), /must be host:port/);
  assert.throws(() => parseHostPort("10.0.0.4:0"), /port must be 1-65535/);
  assert.throws(() => parseHostPort("10.0.0.4:65536"), /port must be 1-65535/);
  assert.throws(() => parseHostPort("10.0.0.4:http"), /port must be 1-65535/);
  assert.throws(() => parseHostPort(":80"), /host is missing/);
  assert.throws(() => parseHostPort("[::g]:80"), /not a valid IPv6/);
  assert.throws(() => parseHostPort("under_score.example:80"), /not a valid host name/);
});

it("accepts an empty host and port 0 only for listeners", () => {
  assert.deepEqual(parseHostPort(":8080", { allowEmptyHost: true }), { host: "", port: 8080, key: ":8080" });
  assert.equal(parseHostPort("127.0.0.1:0", { allowPortZero: true }).port, 0);
});
