import net from "node:net";
import { formatDuration } from "../config/duration.ts";
import { socketErrorReason } from "../proxy/socket-errors.ts";

/** Where a probe goes. BackendView satisfies it. */
export interface ProbeTarget {
  readonly key: string;
  readonly host: string;
  readonly port: number;
}

/**
 * How a probe ended. `failure` is null when the backend passed, else why it did not, in
 * words ("connect refused", "HTTP 503", "timeout after 2s"). `inconclusive` marks a
 * failure that is this process's own (out of file descriptors): it says nothing about the
 * backend and must not count against it.
 */
export type ProbeDone = (failure: string | null, inconclusive: boolean) => void;

/** A probe in flight. `cancel` ends it at once without calling `done`. */
export interface RunningProbe {
  cancel(): void;
}

/** Starts one probe of a target. Every probe ends by its timeout at the latest. */
export interface Prober {
  start(target: ProbeTarget, done: ProbeDone): RunningProbe;
}

/**
 * The PROXY protocol header a probe of `target` opens with, or null: a backend that is
 * sent one with client traffic expects one on every connection (HAProxy, by default, sends
 * it on checks too). A LOCAL header says the connection is the balancer's own.
 */
export type ProbeHeader = (target: ProbeTarget) => Buffer | null;

/** `tcp`: the backend is up when a TCP connection to it succeeds; closed again at once. */
export class TcpProber implements Prober {
  private readonly timeoutMs: number;
  private readonly header: ProbeHeader | undefined;

  constructor(opts: { timeoutMs: number; header?: ProbeHeader | undefined }) {
    this.timeoutMs = opts.timeoutMs;
    this.header = opts.header;
  }

  start(target: ProbeTarget, done: ProbeDone): RunningProbe {
    return new ProbeRun(target, this.timeoutMs, null, this.header?.(target) ?? null, done);
  }
}

export interface HttpProbeOptions {
  timeoutMs: number;
  path: string;
  /** Host header; "" means the backend's address. */
  host: string;
  /** Inclusive [lo, hi] ranges of statuses that mean healthy. */
  expectStatus: ReadonlyArray<readonly [number, number]>;
  header?: ProbeHeader | undefined;
}

/**
 * `http`: GET `path` over a fresh connection; up when the status is within
 * `expectStatus`. Written on a bare socket rather than node:http: only the status line
 * matters, and node:http's request/response objects, parser and agent bookkeeping
 * nearly doubled the user CPU of a probe (docs/benchmarks.md, "Health-check cost"). The
 * connection is closed as soon as the status is known.
 */
export class HttpProber implements Prober {
  readonly opts: HttpProbeOptions;

  constructor(opts: HttpProbeOptions) {
    this.opts = opts;
  }

  start(target: ProbeTarget, done: ProbeDone): RunningProbe {
    return new ProbeRun(target, this.opts.timeoutMs, this, this.opts.header?.(target) ?? null, done);
  }

  request(target: ProbeTarget): string {
    const host = this.opts.host || target.key;
    return `GET ${this.opts.path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: gobalancer-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n`;
  }

  /** null when `status` is expected, else the failure. */
  verdict(status: number): string | null {
    for (const [lo, hi] of this.opts.expectStatus) if (status >= lo && status <= hi) return null;
    return `HTTP ${status}`;
  }
}

/** Past this many bytes without a complete status line the reply is not HTTP. */
const MAX_HEAD = 8192;
const STATUS_LINE = /^HTTP\/\d(?:\.\d)? (\d{3})(?: |\r?$)/;

/** One probe: a socket, a deadline timer, and (for http) the bytes of the reply so far. */
class ProbeRun implements RunningProbe {
  private readonly socket: net.Socket;
  private readonly timer: NodeJS.Timeout;
  private readonly http: HttpProber | null;
  private done: ProbeDone | null;
  private head: Buffer | null = null;

  constructor(target: ProbeTarget, timeoutMs: number, http: HttpProber | null, header: Buffer | null, done: ProbeDone) {
    this.http = http;
    this.done = done;
    // One deadline for the whole probe (DNS, connect, request, reply): a backend that
    // accepts and never answers, or trickles bytes, still fails at the timeout.
    this.timer = setTimeout(() => this.finish(`timeout after ${formatDuration(timeoutMs)}`), timeoutMs);
    this.socket = net.connect({ host: target.host, port: target.port, noDelay: true });
    this.socket.once("connect", () => {
      if (header !== null) this.socket.write(header);
      if (this.http === null) this.finish(null);
      else this.socket.write(this.http.request(target));
    });
    this.socket.on("error", (err: NodeJS.ErrnoException) => this.onError(err));
    this.socket.on("end", () => this.finish(this.http ? "connection closed before a response" : null));
    if (http !== null) this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
  }

  cancel(): void {
    this.done = null;
    clearTimeout(this.timer);
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let head = this.head === null ? chunk : Buffer.concat([this.head, chunk]);
    for (;;) {
      const eol = head.indexOf(10);
      if (eol < 0) break;
      const m = STATUS_LINE.exec(head.toString("latin1", 0, eol));
      if (!m) return this.finish("invalid HTTP response");
      const status = Number(m[1]);
      if (status >= 200) return this.finish(this.http!.verdict(status));
      // An interim 1xx response: skip its head and read the final one.
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) break;
      head = head.subarray(end + 4);
    }
    if (head.length > MAX_HEAD) return this.finish("invalid HTTP response");
    this.head = head;
  }

  private onError(err: NodeJS.ErrnoException): void {
    if (err.code === "EMFILE" || err.code === "ENFILE") this.finish(`local shortage: ${err.code}`, true);
    else this.finish(socketErrorReason(err));
  }

  private finish(failure: string | null, inconclusive = false): void {
    const done = this.done;
    if (done === null) return;
    this.done = null;
    clearTimeout(this.timer);
    this.socket.destroy();
    done(failure, inconclusive);
  }
}

