import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Chunks, CHUNK_MASK, CHUNK_SIZE } from "./chunks.ts";

describe("chunks", () => {
  it("stores entries across chunks; growing keeps what is there", () => {
    let made = 0;
    const chunks = new Chunks(() => (made++, new Uint32Array(CHUNK_SIZE)));
    chunks.ensure(1);
    chunks.of(5)[5 & CHUNK_MASK] = 55;
    chunks.ensure(3 * CHUNK_SIZE + 1);
    assert.equal(made, 4);
    const far = 3 * CHUNK_SIZE;
    chunks.of(far)[far & CHUNK_MASK] = 77;
    assert.equal(chunks.of(5)[5 & CHUNK_MASK], 55);
    assert.equal(chunks.of(far)[far & CHUNK_MASK], 77);
    assert.notEqual(chunks.of(5), chunks.of(far));
    chunks.ensure(10);
    assert.equal(made, 4, "never shrinks or remakes");
  });

  it("reserve adds one chunk per call until there is room", () => {
    let made = 0;
    const chunks = new Chunks(() => (made++, [] as number[]));
    assert.equal(chunks.reserve(2 * CHUNK_SIZE), false);
    assert.equal(made, 1);
    assert.equal(chunks.reserve(2 * CHUNK_SIZE), false);
    assert.equal(chunks.reserve(2 * CHUNK_SIZE), true);
    assert.equal(made, 2);
  });
});
