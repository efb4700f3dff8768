import { closeSync, openSync } from "node:fs";
import pino, { type Logger } from "pino";

export interface AccessLogOptions {
  enabled: boolean;
  /** "stdout" or a file, appended to. */
  path: string;
}

/**
 * Pipes take writes of up to PIPE_BUF bytes whole: with several data-plane threads
 * writing lines to one stdout, larger writes could interleave mid-line. sonic-boom
 * batches whole lines up to this size, so every line arrives intact.
 */
const PIPE_BUF = 4096;

/**
 * Lines are written in batches of at least this many bytes (a write per line cost a
 * system call and a thread-pool hand-off per connection), and at the latest every
 * FLUSH_MS, so a quiet balancer's lines still appear promptly.
 */
const BATCH_BYTES = { file: 32 * 1024, stdout: 3 * 1024 };
const MAX_WRITE = { file: 64 * 1024, stdout: PIPE_BUF };
const FLUSH_MS = 1000;

/**
 * The access log: one JSON line per finished connection, written through pino's
 * asynchronous destination so the data path never waits on a disk or a pipe. Each
 * data-plane thread has its own, appending to the same file (or stdout).
 */
export class AccessLog {
  private readonly dest: pino.DestinationStream & { flushSync(): void; end(): void };
  private readonly stdout: boolean;
  /** The time field of the last line, reused by lines within the same millisecond. */
  private lastMs = 0;
  private lastTime = "";

  /** Opens `file` ("stdout" or a path) at once, so a bad path fails at start, by name. */
  constructor(file: string, onError: (err: Error) => void) {
    const stdout = file === "stdout";
    const fd = stdout ? 1 : openForAppend(file);
    const kind = stdout ? "stdout" : "file";
    this.stdout = stdout;
    const dest = pino.destination({ dest: fd, sync: false, minLength: BATCH_BYTES[kind], maxWrite: MAX_WRITE[kind], periodicFlush: FLUSH_MS });
    // A full disk or a closed pipe later on must not take the data path down with it.
    dest.on("error", onError);
    this.dest = dest;
  }

  /**
   * One finished connection, with the contract's field names. `client` and `backend`
   * are addresses (IP literals and validated host names) and `termination` one of
   * TERMINATIONS: nothing in them needs escaping, so the line is written directly.
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
    this.dest.write(
      `{"time":"${this.lastTime}","client":"${client}","backend":"${backend}","bytes_in":${bytesIn},"bytes_out":${bytesOut},"duration_ms":${durationMs},"connect_ms":${connectMs},"attempts":${attempts},"termination":"${termination}"}\n`,
    );
  }

  /** Writes out what is buffered; before a thread or the process ends. */
  flush(): void {
    try {
      this.dest.flushSync();
    } catch {
      // Not open yet (nothing written) or already closed: nothing to flush.
    }
  }

  /**
   * Writes out what is buffered and closes the file (a reload replaces the log: the same
   * path opened again is how a rotated file is let go). Stdout stays open.
   */
  close(): void {
    this.flush();
    if (!this.stdout) this.dest.end();
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
