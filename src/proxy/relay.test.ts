import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import { once } from "node:events";
import { describe, it } from "node:test";
import { interceptAccepts, socketForHandle, type AcceptedHandle } from "./node-internals.ts";
import { Relay } from "./relay.ts";
import type { Side } from "./side.ts";

/** A server on 127.0.0.1 whose first accepted socket is returned (paused, as in the data plane). */
async function acceptOne(): Promise<{ port: number; accepted: Promise<net.Socket>; server: net.Server }> {
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
  const accepted = once(server, "connection").then(([socket]) => socket as net.Socket);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, accepted, server };
}

/** A server on 127.0.0.1 with accepts intercepted; its first connection's handle is returned. */
async function interceptOne(): Promise<{ port: number; handle: Promise<AcceptedHandle>; server: net.Server }> {
  const server = net.createServer();
  server.on("connection", () => assert.fail("the server built a socket: accepts were not intercepted"));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const handle = new Promise<AcceptedHandle>((resolve) => {
    assert.ok(interceptAccepts(server, resolve), "accepts could not be intercepted: the data path would fall back to 'data' events");
  });
  return { port: (server.address() as net.AddressInfo).port, handle, server };
}

function sha256(buf: Buffer): string {
  return createHash("sha256").update(buf).digest("hex");
}

/** A destination that takes every write at once and keeps what it got. */
function collectingSide() {
  const got: Buffer[] = [];
  const side = {
    writableLength: 0,
    write(data: Buffer) {
      got.push(Buffer.from(data));
      return true;
    },
  };
  return { side: side as unknown as Side, got };
}

describe("relay", () => {
  it("holds what arrives before its destination, pauses past 64 KiB, then delivers it all in order", () => {
    const relay = new Relay();
    const chunks = Array.from({ length: 20 }, (_, i) => Buffer.alloc(4096, i));
    const verdicts = chunks.map((c) => relay.forwardChunk(c));
    // 16 chunks of 4 KiB make 64 KiB: from there on the source is asked to pause.
    assert.deepEqual(verdicts, [...Array<boolean>(15).fill(true), ...Array<boolean>(5).fill(false)]);
    const { side, got } = collectingSide();
    assert.equal(relay.attach(side), true);
    assert.equal(sha256(Buffer.concat(got)), sha256(Buffer.concat(chunks)));
    // Attached: what comes next goes straight through.
    assert.equal(relay.forwardChunk(Buffer.from("after")), true);
    assert.equal(got.at(-1)!.toString(), "after");
  });

  it("intercepts accepts on this Node, so clients read through onread", async () => {
    const { port, handle, server } = await interceptOne();
    const client = net.connect(port, "127.0.0.1");
    const reads: number[] = [];
    const accepted = socketForHandle(await handle, { buffer: Buffer.alloc(16), callback: (n) => (reads.push(n), true) });
    assert.equal(accepted.remoteAddress, "127.0.0.1");
    assert.equal(accepted.remotePort, client.localPort);
    accepted.resume();
    client.end("hello, relay");
    await once(accepted, "end");
    assert.deepEqual(reads.reduce((a, b) => a + b, 0), 12);
    accepted.end();
    await once(client, "close");
    server.close();
  });

  it("keeps bytes intact while writes are pending and other connections reuse chunks", async () => {
    // Two paths source → [accepted socket → Relay] → sink on this thread. A's sink reads
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

/** source → accepted socket → Relay → sink, with the sink paused; `done` checks the bytes. */
async function relayPath(payload: Buffer) {
  const front = await interceptOne();
  const back = await acceptOne();
  const source = net.connect(front.port, "127.0.0.1");
  const toSink = net.connect({ port: back.port, host: "127.0.0.1" });
  await once(toSink, "connect");
  const relay = new Relay();
  relay.attach(toSink);
  const accepted = socketForHandle(await front.handle, relay.readOptions());
  toSink.on("drain", () => {
    relay.drained();
    accepted.resume();
  });
  accepted.on("end", () => toSink.end());
  const sink = await back.accepted;
  const received: Buffer[] = [];
  sink.on("data", (chunk: Buffer) => received.push(chunk));
  accepted.resume();
  source.end(payload);
  const done = once(sink, "end").then(() => {
    const got = Buffer.concat(received);
    assert.equal(got.length, payload.length);
    assert.equal(sha256(got), sha256(payload));
    for (const s of [source, toSink, accepted, sink]) s.destroy();
    front.server.close();
    back.server.close();
  });
  // Wait until the paused sink has made writes to it pend.
  while (toSink.writableLength === 0) await new Promise((resolve) => setTimeout(resolve, 10));
  return { sink, toSink, done };
}
