import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseHostPort } from "../pool/address.ts";
import { BearerAuth, exposureProblem, isLoopback } from "./auth.ts";

const listen = (text: string) => parseHostPort(text, { allowEmptyHost: true, allowPortZero: true });

describe("BearerAuth", () => {
  it("lets everything through without a token", () => {
    const auth = new BearerAuth("");
    assert.equal(auth.enabled, false);
    assert.equal(auth.refusal(undefined), undefined);
  });

  it("accepts only the exact token, saying why it refuses", () => {
    const auth = new BearerAuth("s3cret");
    assert.equal(auth.refusal("Bearer s3cret"), undefined);
    assert.equal(auth.refusal("bearer   s3cret"), undefined);
    assert.match(auth.refusal(undefined)!, /missing bearer token/);
    assert.match(auth.refusal("")!, /missing bearer token/);
    assert.match(auth.refusal("Basic czNjcmV0")!, /malformed Authorization header/);
    assert.match(auth.refusal("Bearer")!, /malformed/);
    for (const wrong of ["Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET", `Bearer ${"x".repeat(10_000)}`]) {
      assert.equal(auth.refusal(wrong), "invalid bearer token", wrong.slice(0, 20));
    }
  });
});

describe("exposure", () => {
  it("knows loopback addresses", () => {
    for (const a of ["127.0.0.1:8081", "127.8.9.10:1", "[::1]:8081", "localhost:8081", "[::ffff:127.0.0.1]:1"]) assert.ok(isLoopback(listen(a)), a);
    for (const a of [":8081", "0.0.0.0:8081", "[::]:8081", "10.0.0.1:8081", "api.example.com:8081"]) assert.ok(!isLoopback(listen(a)), a);
  });

  it("refuses a non-loopback API without a token unless explicitly allowed", () => {
    const open = { listen: listen(":8081"), token: "", allowUnauthenticated: false };
    assert.match(exposureProblem(open)!, /api\.listen serves every interface \(:8081\).*set api\.token \(or GOBALANCER_API_TOKEN\), or set api\.allow_unauthenticated: true/);
    assert.equal(exposureProblem({ ...open, token: "t" }), undefined);
    assert.equal(exposureProblem({ ...open, allowUnauthenticated: true }), undefined);
    assert.equal(exposureProblem({ ...open, listen: listen("127.0.0.1:8081") }), undefined);
  });
});
