import { closeSync, openSync } from "node:fs";
import pino from "pino";

export interface AccessLogOptions {
  enabled: boolean;
  /** "stdout" or a file, appended to. */
  path: string;
}

/** One finished connection, with the contract's field names. */
export interface AccessEntry {
  /** ip:port of the client ([ip]:port for IPv6). */
  client: string;
  /** The backend's canonical address; "" when none was dialled. */
  backend: string;
  bytes_in: number;
  bytes_out: number;
  duration_ms: number;
  /** Time from accept to the backend connection; null when none was made. */
  connect_ms: number | null;
  attempts: number;
  termination: string;
}

/**
 * Pipes take writes of up to PIPE_BUF bytes whole: with several data-plane threads
 * writing lines to one stdout, larger writes could interleave mid-line. sonic-boom
 * batches whole lines up to this size, so every line arrives intact.
 */
const PIPE_BUF = 4096;

/**
 * The access log: one JSON line per finished connection, written through pino's
 * asynchronous destination so the data path never waits on a disk or a pipe. Each
 * data-plane thread has its own, appending to the same file (or stdout).
 */
export class AccessLog {
  private readonly dest: pino.DestinationStream & { flushSync(): void };

  /** Opens `file` ("stdout" or a path) at once, so a bad path fails at start, by name. */
  constructor(file: string, onError: (err: Error) => void) {
    const stdout = file === "stdout";
    const fd = stdout ? 1 : openForAppend(file);
    const dest = pino.destination({ dest: fd, sync: false, maxWrite: stdout ? PIPE_BUF : undefined });
    // A full disk or a closed pipe later on must not take the data path down with it.
    dest.on("error", onError);
    this.dest = dest;
  }

  /** The line is the entry's own fields after the time: no level, pid or message. */
  write(entry: AccessEntry): void {
    this.dest.write(`{"time":"${new Date().toISOString()}",${JSON.stringify(entry).slice(1)}\n`);
  }

  /** Writes out what is buffered; before a thread or the process ends. */
  flush(): void {
    try {
      this.dest.flushSync();
    } catch {
      // Not open yet (nothing written) or already closed: nothing to flush.
    }
  }
}

/** The access log the options ask for, or null when it is off. */
export function openAccessLog(opts: AccessLogOptions, onError: (err: Error) => void): AccessLog | null {
  return opts.enabled ? new AccessLog(opts.path, onError) : null;
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
