import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import { once } from "node:events";
import { describe, it } from "node:test";
import { adoptAccepted, Relay } from "./relay.ts";

/** A server on 127.0.0.1 whose first accepted socket is returned (paused, as in the data plane). */
async function acceptOne(): Promise<{ port: number; accepted: Promise<net.Socket>; server: net.Server }> {
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
  const accepted = once(server, "connection").then(([socket]) => socket as net.Socket);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, accepted, server };
}

function sha256(buf: Buffer): string {
  return createHash("sha256").update(buf).digest("hex");
}

describe("relay", () => {
  it("adopts an accepted socket on this Node, so clients read through onread", async () => {
    const { port, accepted, server } = await acceptOne();
    const client = net.connect(port, "127.0.0.1");
    const original = await accepted;
    const reads: number[] = [];
    const adopted = adoptAccepted(original, { buffer: Buffer.alloc(16), callback: (n) => (reads.push(n), true) });
    assert.ok(adopted, "the handle could not be moved: the data path would fall back to 'data' events");
    assert.ok(original.destroyed);
    // The server no longer counts the original socket.
    const count = await new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
    assert.equal(count, 0);
    assert.equal(adopted.remoteAddress, "127.0.0.1");
    adopted.resume();
    client.end("hello");
    await once(adopted, "end");
    assert.equal(reads.reduce((a, b) => a + b, 0), 5);
    adopted.end();
    await once(client, "close");
    server.close();
  });

  it("keeps bytes intact while writes are pending and other connections reuse chunks", async () => {
    // Two paths source → [adopted socket → Relay] → sink on this thread. A's sink reads
    // nothing at first, so A's writes stay pending and hold their chunks; B flows meanwhile
    // and takes chunks from the same pool. Recycling a held chunk would corrupt A.
    const a = await relayPath(randomBytes(24 << 20));
    const b = await relayPath(randomBytes(24 << 20));
    b.sink.resume();
    await b.done;
    assert.ok(a.toSink.writableLength > 0, "A's sink was meant to push back");
    a.sink.resume();
    await a.done;
  });
});

/** source → adopted socket → Relay → sink, with the sink paused; `done` checks the bytes. */
async function relayPath(payload: Buffer) {
  const front = await acceptOne();
  const back = await acceptOne();
  const source = net.connect(front.port, "127.0.0.1");
  const toSink = net.connect({ port: back.port, host: "127.0.0.1" });
  await once(toSink, "connect");
  const relay = new Relay();
  relay.dst = toSink;
  const adopted = adoptAccepted(await front.accepted, relay.readOptions());
  assert.ok(adopted);
  toSink.on("drain", () => {
    relay.drained();
    adopted.resume();
  });
  adopted.on("end", () => toSink.end());
  const sink = await back.accepted;
  const received: Buffer[] = [];
  sink.on("data", (chunk: Buffer) => received.push(chunk));
  adopted.resume();
  source.end(payload);
  const done = once(sink, "end").then(() => {
    const got = Buffer.concat(received);
    assert.equal(got.length, payload.length);
    assert.equal(sha256(got), sha256(payload));
    for (const s of [source, toSink, adopted, sink]) s.destroy();
    front.server.close();
    back.server.close();
  });
  // Wait until the paused sink has made writes to it pend.
  while (toSink.writableLength === 0) await new Promise((resolve) => setTimeout(resolve, 10));
  return { sink, toSink, done };
}
