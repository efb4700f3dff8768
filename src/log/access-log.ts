import { closeSync, openSync } from "node:fs";
import pino, { type Logger } from "pino";

export interface AccessLogOptions {
  enabled: boolean;
  /** "stdout" or a file, appended to. */
  path: string;
}

/**
 * Pipes take writes of up to PIPE_BUF bytes whole: with several data-plane threads
 * writing lines to one stdout, larger writes could interleave mid-line.
 */
const PIPE_BUF = 4096;

/**
 * Lines are gathered here into batches of up to this many bytes (a write per line cost a
 * system call and a thread-pool hand-off per connection), and handed over at the latest
 * every FLUSH_MS, so a quiet balancer's lines still appear promptly. The batching is ours,
 * not sonic-boom's: its own measures the byte length of its whole pending batch on every
 * write, which grows with the batch.
 */
const BATCH_BYTES = { file: 32 * 1024, stdout: PIPE_BUF - 512 };
/** sonic-boom joins handed-over batches while a write is in flight, never past this. */
const MAX_WRITE = { file: 64 * 1024, stdout: PIPE_BUF };
const FLUSH_MS = 1000;
/** How long finish() waits for the last lines to be written. */
const FINISH_MS = 2000;

/**
 * The access log: one JSON line per finished connection, written through pino's
 * asynchronous destination so the data path never waits on a disk or a pipe. Each
 * data-plane thread has its own, appending to the same file (or stdout).
 */
export class AccessLog {
  private readonly dest: pino.DestinationStream & { end(): void; once(event: string, listener: () => void): void };
  private readonly batchBytes: number;
  /** Lines not yet handed to `dest` (every character is ASCII, see write(): its length is its size). */
  private pending = "";
  private readonly flusher: NodeJS.Timeout;
  /** The time field of the last line, reused by lines within the same millisecond. */
  private lastMs = 0;
  private lastTime = "";

  /** Opens `file` ("stdout" or a path) at once, so a bad path fails at start, by name. */
  constructor(file: string, onError: (err: Error) => void) {
    const stdout = file === "stdout";
    const fd = stdout ? 1 : openForAppend(file);
    const kind = stdout ? "stdout" : "file";
    this.batchBytes = BATCH_BYTES[kind];
    const dest = pino.destination({ dest: fd, sync: false, maxWrite: MAX_WRITE[kind] });
    // A full disk or a closed pipe later on must not take the data path down with it.
    dest.on("error", onError);
    this.dest = dest;
    this.flusher = setInterval(() => this.handOver(), FLUSH_MS);
    this.flusher.unref();
  }

  /**
   * One finished connection, with the contract's field names. `client` and `backend`
   * are addresses (IP literals and validated host names) and `termination` one of
   * TERMINATIONS: nothing in them needs escaping, so the line is written directly, and
   * every character is ASCII, so its length is its size in bytes.
   * `backend` is "" when none was dialled; `connectMs` is null when none connected.
   */
  write(
    client: string,
    backend: string,
    bytesIn: number,
    bytesOut: number,
    durationMs: number,
    connectMs: number | null,
    attempts: number,
    termination: string,
  ): void {
    const now = Date.now();
    if (now !== this.lastMs) {
      this.lastMs = now;
      this.lastTime = new Date(now).toISOString();
    }
    const line = `{"time":"${this.lastTime}","client":"${client}","backend":"${backend}","bytes_in":${bytesIn},"bytes_out":${bytesOut},"duration_ms":${durationMs},"connect_ms":${connectMs},"attempts":${attempts},"termination":"${termination}"}\n`;
    if (this.pending.length + line.length > this.batchBytes) this.handOver();
    this.pending += line;
  }

  /** Hands the gathered lines to the destination, which writes them asynchronously. */
  private handOver(): void {
    if (this.pending.length === 0) return;
    this.dest.write(this.pending);
    this.pending = "";
  }

  /**
   * Writes out every line, in order, then lets the file go (stdout stays open): before a
   * thread or the process ends, and when a reload replaces the log (the same path opened
   * again is how a rotated file is let go). Resolves once written, or after FINISH_MS at
   * the latest, so a stuck disk cannot hold up a shutdown.
   */
  finish(): Promise<void> {
    clearInterval(this.flusher);
    this.handOver();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, FINISH_MS);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.dest.once("close", done);
      this.dest.once("error", done);
      try {
        this.dest.end();
      } catch {
        done(); // already ended
      }
    });
  }
}

/** The access log the options ask for, or null when it is off. */
export function openAccessLog(opts: AccessLogOptions, log: Logger): AccessLog | null {
  return opts.enabled ? new AccessLog(opts.path, (err) => log.error({ err: err.message }, "access log write failed")) : null;
}

/**
 * Throws, naming the path, when the access log cannot be opened: for the main thread to
 * check before data-plane threads each open their own.
 */
export function checkAccessLog(opts: AccessLogOptions): void {
  if (opts.enabled && opts.path !== "stdout") closeSync(openForAppend(opts.path));
}

function openForAppend(file: string): number {
  try {
    return openSync(file, "a");
  } catch (err) {
    throw new Error(`access_log.path: cannot open ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}
