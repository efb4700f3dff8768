import type net from "node:net";
import type { Side } from "./side.ts";

/**
 * Moving bytes from one socket to another without an allocation per read.
 *
 * Node's default read path allocates a 64 KiB buffer for every read, shrinks it to the
 * bytes read, wraps it in a Buffer and pushes it through the Readable stream machinery to
 * a 'data' event. A proxy only passes each chunk on, so both sides of a connection read
 * through the `onread` option instead: the kernel copies into one buffer per thread and
 * a Relay gets the byte count directly, then writes the bytes on.
 *
 * The bytes must leave the shared buffer before they are written: a write the kernel
 * takes only in part keeps a reference to its chunk until it completes, and the next
 * read on this thread, on any socket, overwrites the shared buffer. Large reads are
 * copied into 64 KiB chunks that are recycled once their write is done, so bulk transfer
 * allocates nothing per read (allocating per read made glibc return and re-fault pages
 * and V8 collect garbage all the time, which held bulk throughput to a fraction).
 * Small reads are copied into Buffer's pool, which costs next to nothing.
 */
const CHUNK_BYTES = 64 * 1024;
/** Reads up to this size are copied into Buffer's pool rather than a recycled chunk. */
const SMALL_READ_BYTES = 4096;
/** Free chunks kept per thread; more than that are left to the garbage collector. */
const MAX_FREE_CHUNKS = 64;

// Module state is per thread: every data-plane worker has its own buffer and chunks.
const readBuffer = Buffer.allocUnsafeSlow(CHUNK_BYTES);
const freeChunks: Buffer[] = [];

/** The buffer every read on this thread lands in (libuv handles read into it directly). */
export function sharedReadBuffer(): Buffer {
  return readBuffer;
}

/** A 64 KiB chunk from the free list, or a new one. */
export function takeChunk(): Buffer {
  return freeChunks.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BYTES);
}

/** A read that fills the thread's buffer: a bulk transfer is under way. */
export const FULL_READ = CHUNK_BYTES;

/** A chunk no write refers to any more goes back to the free list (while it has room). */
export function release(chunk: Buffer): void {
  if (freeChunks.length < MAX_FREE_CHUNKS) freeChunks.push(chunk);
}

function releaseAll(chunks: Buffer[]): void {
  for (let i = 0; i < chunks.length; i++) release(chunks[i]!);
  chunks.length = 0;
}

/** Called with the number of bytes just read into the thread's buffer; false pauses reading. */
export type ReadCallback = (nread: number) => boolean;

/**
 * Bytes a client sends while its backend is still being dialled are held, up to this
 * much, and written to whichever attempt connects (a failed attempt loses none of them).
 * Past it the client is paused until the backend is there.
 */
const HOLD_BYTES = 64 * 1024;

/** Told of every read held while it is set (see Relay.awaiting). */
export interface HeldReader {
  /** Bytes were held; false pauses the source. */
  held(relay: Relay): boolean;
}

/**
 * One direction of a proxied connection: what its source socket reads goes to `dst`.
 * The source's reads arrive in forward(); `drained` is called on dst's 'drain'.
 * Until `attach` gives it a destination, what it reads is held (see HOLD_BYTES).
 */
export class Relay {
  private dst: Side | null = null;
  /** Chunks written to dst whose writes have not completed yet. */
  private held: Buffer[] | null = null;
  /** Bytes read before dst was attached, in order. */
  private pending: Buffer[] | null = null;
  private pendingBytes = 0;
  /** Set on every read; the data plane's idle sweep clears it. */
  active = false;
  /**
   * While set (a PROXY header is awaited, connection.ts), it is told of every read held,
   * and decides whether reading goes on.
   */
  awaiting: HeldReader | null = null;

  /**
   * The `onread` option for a net.Socket source (the socket path). A libuv handle
   * source calls forward() itself and needs neither this object nor its closure.
   */
  readOptions(): net.OnReadOpts {
    const callback: ReadCallback = (n) => this.forward(n);
    return { buffer: readBuffer, callback };
  }

  /**
   * From now on bytes go to `dst`, those held so far first. False when dst's buffer is
   * full: the source stays paused until dst drains.
   */
  attach(dst: Side): boolean {
    this.dst = dst;
    const pending = this.pending;
    if (pending === null) return true;
    this.pending = null;
    this.pendingBytes = 0;
    let more = true;
    for (let i = 0; i < pending.length; i++) more = dst.write(pending[i]!);
    return more;
  }

  /** Writes the n bytes just read to dst (or holds them); false when the source must pause. */
  forward(n: number): boolean {
    this.active = true;
    const dst = this.dst;
    if (dst === null) return this.hold(Buffer.from(readBuffer.subarray(0, n)));
    let chunk: Buffer | null = null;
    let data: Buffer;
    if (n <= SMALL_READ_BYTES) {
      data = Buffer.allocUnsafe(n);
      readBuffer.copy(data, 0, 0, n);
    } else {
      chunk = takeChunk();
      readBuffer.copy(chunk, 0, 0, n);
      data = n === CHUNK_BYTES ? chunk : chunk.subarray(0, n);
    }
    const more = dst.write(data);
    if (!this.settle(dst, chunk) && chunk !== null) release(chunk);
    return more;
  }

  /**
   * Writes the first n bytes of `chunk`, which the source read into directly (no copy).
   * Afterwards `chunkInFlight` says whether a pending write still refers to the chunk
   * (it is then recycled once written) or the source may read into it again.
   * Only once attached. False when dst's buffer is full.
   */
  forwardChunkRead(chunk: Buffer, n: number): boolean {
    const dst = this.dst!;
    this.active = true;
    const more = dst.write(n === CHUNK_BYTES ? chunk : chunk.subarray(0, n));
    this.chunkInFlight = this.settle(dst, chunk);
    return more;
  }

  /**
   * After a write of `chunk` (null: bytes from Buffer's pool) to dst: true when dst
   * still queues it, and the chunk is held until dst drains. With nothing queued, every
   * write so far is complete and the chunks they held go back to the free list.
   */
  private settle(dst: Side, chunk: Buffer | null): boolean {
    if (dst.writableLength === 0) {
      if (this.held !== null) releaseAll(this.held);
      return false;
    }
    if (chunk !== null) (this.held ??= []).push(chunk);
    return true;
  }

  /** Set by forwardChunkRead. */
  chunkInFlight = false;

  /** Whether bytes go straight to a destination (else they are held). */
  get attached(): boolean {
    return this.dst !== null;
  }

  /** A chunk from a 'data' event (the stream path): written to dst, or held. */
  forwardChunk(chunk: Buffer): boolean {
    this.active = true;
    return this.dst === null ? this.hold(chunk) : this.dst.write(chunk);
  }

  /** dst emitted 'drain': everything written to it is done. */
  drained(): void {
    if (this.held !== null) releaseAll(this.held);
  }

  private hold(bytes: Buffer): boolean {
    (this.pending ??= []).push(bytes);
    this.pendingBytes += bytes.length;
    if (this.awaiting !== null) return this.awaiting.held(this);
    return this.pendingBytes < HOLD_BYTES;
  }

  /** Everything held so far, in one buffer (joined only when held in several reads). */
  heldBytes(): Buffer {
    const pending = this.pending;
    if (pending === null) return Buffer.alloc(0);
    if (pending.length > 1) this.pending = [Buffer.concat(pending, this.pendingBytes)];
    return this.pending![0]!;
  }

  /** Drops the first n held bytes (a PROXY header read off the front). */
  dropHeld(n: number): void {
    const rest = this.heldBytes().subarray(n);
    this.pendingBytes = rest.length;
    this.pending = rest.length === 0 ? null : [rest];
  }

  /** Whether held bytes are below the hold limit (reading may go on). */
  get roomToHold(): boolean {
    return this.pendingBytes < HOLD_BYTES;
  }
}
