// End-to-end: the access log under load from several threads, to stdout and to a file.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { TERMINATIONS } from "../src/proxy/termination.ts";
import { cleanup, request, startBalancer, startEchoBackend, waitFor } from "./harness.ts";
import { accessLines } from "./observe.ts";

afterEach(cleanup);

const CONNECTIONS = 600;
const CONCURRENCY = 40;

/** CONNECTIONS requests, CONCURRENCY at a time, each with its own text; resolves with the replies. */
async function traffic(port: number): Promise<string[]> {
  const replies: string[] = [];
  let next = 0;
  const client = async () => {
    while (next < CONNECTIONS) {
      const i = next++;
      replies[i] = await request(port, `request ${i}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, client));
  return replies;
}

/** A balancer in front of one echo backend, writing its access log to `path`, after CONNECTIONS connections through it and its exit. */
async function afterTraffic(workers: number, path: string) {
  const echo = await startEchoBackend();
  const lb = await startBalancer({ workers, access_log: { enabled: true, path }, discovery: { type: "static", backends: [{ address: echo.address }] } });
  const replies = await traffic(lb.port);
  lb.signal("SIGTERM");
  assert.equal((await lb.exited).code, 0);
  return { lb, echo, replies };
}

describe("access log", () => {
  it("to stdout with workers: 2, every line arrives whole, one per connection", async () => {
    const { lb, replies } = await afterTraffic(2, "stdout");
    assert.deepEqual(replies, replies.map((_, i) => `request ${i}`));
    // Lines cut by another thread's write would not parse and land in otherOutput.
    assert.deepEqual(lb.otherOutput, []);
    const lines = lb.logs.filter((l) => "termination" in l);
    assert.equal(lines.length, CONNECTIONS);
    const bytes = lines.reduce((n, l) => n + Number(l.bytes_in), 0);
    assert.equal(bytes, replies.reduce((n, r) => n + r.length, 0), "bytes_in adds up to what was sent");
  });

  it("to a file with workers: 2, one valid line per connection, causes and fields as the contract names them", async () => {
    const { lb, echo } = await afterTraffic(2, "access.log");
    const lines = accessLines(lb);
    assert.equal(lines.length, CONNECTIONS);
    const fields = ["time", "client", "backend", "bytes_in", "bytes_out", "duration_ms", "connect_ms", "attempts", "termination"];
    for (const line of lines) {
      assert.deepEqual(Object.keys(line), fields);
      assert.ok((TERMINATIONS as readonly string[]).includes(line.termination), line.termination);
      assert.equal(line.backend, echo.address);
    }
    assert.equal(new Set(lines.map((l) => l.client)).size, CONNECTIONS, "a line per client connection");
  });

  it("writes a quiet balancer's line within about a second (not at the next batch or at exit)", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({
      access_log: { enabled: true, path: "access.log" },
      discovery: { type: "static", backends: [{ address: echo.address }] },
    });
    assert.equal(await request(lb.port, "one"), "one");
    const done = performance.now();
    await waitFor(() => accessLines(lb).length === 1, 3000, "the line");
    // Lines are handed over every second: the bound leaves room for a loaded machine.
    assert.ok(performance.now() - done < 2500, `line out after ${Math.round(performance.now() - done)} ms`);
  });
});
