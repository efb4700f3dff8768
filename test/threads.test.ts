// The data plane on several threads (workers > 1): every thread takes connections, and
// the contract's behaviour holds across them.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { afterEach, describe, it } from "node:test";
import { cleanup, connect, refusedPort, request, roundTrip, startBalancer, startEchoBackend, startNamedBackend, startServer, waitFor } from "./harness.ts";

afterEach(cleanup);

describe("workers: 2", () => {
  it("starts one listener per thread on the same port, and both take connections", async () => {
    const backend = await startNamedBackend("a");
    const lb = await startBalancer({ workers: 2, log: { level: "debug" }, discovery: { backends: [{ address: backend.address }] } });
    const listening = await waitFor(() => {
      const lines = lb.logs.filter((l) => l.msg === "data-plane thread listening");
      return lines.length === 2 && lines;
    }, 5000, "two listening threads");
    assert.deepEqual(listening.map((l) => l.thread).sort(), [0, 1]);
    assert.equal(new Set(listening.map((l) => l.listen)).size, 1, "one shared port");
    assert.equal(lb.logs.find((l) => l.msg === "gobalancer started")!.workers, 2);
    // The kernel spreads connections over the threads' sockets by source port hash, so
    // enough connections must reach both (the chance that 60 all hash to one is 2^-59).
    const replies = await Promise.all(Array.from({ length: 60 }, () => request(lb.port)));
    assert.ok(replies.every((r) => r === "a\n"));
    const closed = await waitFor(() => {
      const lines = lb.logs.filter((l) => l.msg === "connection closed");
      return lines.length === 60 && lines;
    }, 5000, "60 closed connections");
    assert.deepEqual([...new Set(closed.map((l) => l.thread))].sort(), [0, 1]);
  });

  it("keeps round robin exact across threads", async () => {
    const backends = await Promise.all(["a", "b", "c"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer({ workers: 2, discovery: { backends: backends.map((b) => ({ address: b.address })) } });
    const counts: Record<string, number> = {};
    for (let i = 0; i < 60; i++) {
      const name = (await request(lb.port)).trim();
      counts[name] = (counts[name] ?? 0) + 1;
    }
    assert.deepEqual(counts, { a: 20, b: 20, c: 20 });
  });

  it("moves data intact and honours half-close on every thread", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ workers: 2, discovery: { backends: [{ address: echo.address }] } });
    const payload = randomBytes(4 << 20);
    const want = createHash("sha256").update(payload).digest("hex");
    const raw = await Promise.all(Array.from({ length: 8 }, () => requestRaw(lb.port, payload)));
    for (const r of raw) assert.equal(createHash("sha256").update(r).digest("hex"), want);
  });

  it("retries a refused backend from any thread without the client noticing", async () => {
    const good = await startNamedBackend("good");
    const lb = await startBalancer({
      workers: 2,
      discovery: { backends: [{ address: `127.0.0.1:${await refusedPort()}` }, { address: good.address }] },
    });
    const replies = await Promise.all(Array.from({ length: 20 }, () => request(lb.port)));
    assert.ok(replies.every((r) => r === "good\n"), JSON.stringify(replies));
  });

  it("applies max_connections across threads", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ workers: 2, max_connections: 4, discovery: { backends: [{ address: echo.address }] } });
    const held = [];
    for (let i = 0; i < 4; i++) {
      const s = await connect(lb.port);
      await roundTrip(s);
      held.push(s);
    }
    for (let i = 0; i < 6; i++) {
      const outcome = await request(lb.port, "over the limit").catch((e: NodeJS.ErrnoException) => e.code);
      assert.ok(outcome === "" || outcome === "ECONNRESET", `client ${i} over the limit got ${outcome}`);
    }
    held[0]!.destroy();
    await waitFor(async () => (await request(lb.port, "ok")) === "ok", 3000, "a free slot");
  });

  it("routes the very next connection by an API change, whichever thread accepts it", async () => {
    const backends = await Promise.all(["a", "b", "c", "d", "e"].map((n) => startNamedBackend(n)));
    const lb = await startBalancer({ workers: 2, discovery: { backends: [] } });
    let previous: string | undefined;
    for (const [i, backend] of backends.entries()) {
      const post = await fetch(`${lb.api}/backends`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ address: backend.address }),
      });
      assert.equal(post.status, 201);
      if (previous) assert.equal((await fetch(`${lb.api}/backends/${previous}`, { method: "DELETE" })).status, 204);
      // Only the backend just added is in the pool now: the next connections must reach it.
      for (let j = 0; j < 4; j++) assert.equal(await request(lb.port), `${"abcde"[i]}\n`);
      previous = backend.address;
    }
  });

  it("drains every thread on SIGTERM and exits 0", async () => {
    const slow = await startServer((socket) => setTimeout(() => socket.end("done\n"), 600));
    const lb = await startBalancer({ workers: 2, discovery: { backends: [{ address: slow.address }] } });
    // The first health probe, at start-up, is a backend connection too.
    await waitFor(() => slow.accepted() === 1, 2000, "first health probe");
    const inflight = Promise.all(Array.from({ length: 6 }, () => request(lb.port)));
    await waitFor(() => slow.accepted() === 7, 3000, "six backend connections");
    lb.signal("SIGTERM");
    await lb.waitForLog((l) => l.msg === "shutting down: draining connections");
    assert.deepEqual(await inflight, Array(6).fill("done\n"));
    assert.deepEqual(await lb.exited, { code: 0, signal: null });
  });
});

/** Like request(), but returns the raw bytes. */
function requestRaw(port: number, send: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    void connect(port, "127.0.0.1", true).then((socket) => {
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => chunks.push(c));
      socket.on("end", () => socket.end());
      socket.on("close", () => resolve(Buffer.concat(chunks)));
      socket.on("error", reject);
      socket.end(send);
    }, reject);
  });
}
