import type { Logger } from "pino";
import type { Metrics } from "../../metrics/metrics.ts";
import type { BackendPool } from "../../pool/pool.ts";

/** The counters the dashboard's charts are drawn from, summed over backends and threads. */
export interface Totals {
  connections: number;
  bytesIn: number;
  bytesOut: number;
}

/**
 * Served at /dashboard/history.json: oldest sample first, times in ms since the epoch by
 * this server's clock; `now` is that clock when served, so a page whose own clock differs
 * can stamp its live samples on the same time line.
 */
export interface HistoryJson {
  interval_ms: number;
  window_ms: number;
  now: number;
  samples: Array<{ t: number; connections: number; bytes_in: number; bytes_out: number }>;
}

export interface HistoryOptions {
  read: () => Promise<Totals>;
  logger: Logger;
  /** Time between samples; default 5 s. */
  intervalMs?: number;
  /** How far back the buffer reaches; default 15 minutes. */
  windowMs?: number;
  clock?: () => number;
  timers?: { setInterval: typeof setInterval; clearInterval: typeof clearInterval };
}

/**
 * A fixed-size ring of counter samples, so the dashboard shows the last 15 minutes the
 * moment it opens. It keeps raw counters, not rates: the page derives rates the same way
 * from these and from its own reads of /metrics. Memory is fixed at start (four
 * Float64Arrays of window/interval + 1 entries); nothing runs per connection.
 */
export class CounterHistory {
  readonly intervalMs: number;
  readonly windowMs: number;
  private readonly opts: HistoryOptions;
  private readonly clock: () => number;
  private readonly timers: NonNullable<HistoryOptions["timers"]>;
  private readonly t: Float64Array;
  private readonly connections: Float64Array;
  private readonly bytesIn: Float64Array;
  private readonly bytesOut: Float64Array;
  /** Next slot to write; `size` slots before it (wrapping) hold samples. */
  private head = 0;
  private size = 0;
  private timer: ReturnType<typeof setInterval> | undefined;
  /** A read in progress: a slow one is not overlapped by the next tick. */
  private reading = false;

  constructor(opts: HistoryOptions) {
    this.opts = opts;
    this.intervalMs = opts.intervalMs ?? 5_000;
    this.windowMs = opts.windowMs ?? 15 * 60_000;
    this.clock = opts.clock ?? Date.now;
    this.timers = opts.timers ?? { setInterval, clearInterval };
    const capacity = Math.ceil(this.windowMs / this.intervalMs) + 1;
    this.t = new Float64Array(capacity);
    this.connections = new Float64Array(capacity);
    this.bytesIn = new Float64Array(capacity);
    this.bytesOut = new Float64Array(capacity);
  }

  /** Takes a sample now and then every interval until stop(). Idempotent. */
  start(): void {
    if (this.timer !== undefined) return;
    void this.sample();
    this.timer = this.timers.setInterval(() => void this.sample(), this.intervalMs);
    // Never the reason the process stays up; stop() clears it on close all the same.
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer === undefined) return;
    this.timers.clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Reads the counters once and stores them (exposed for tests with a fake clock). */
  async sample(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const totals = await this.opts.read();
      this.push(this.clock(), totals);
    } catch (err) {
      this.opts.logger.warn({ component: "dashboard", err: (err as Error).message }, "dashboard sample failed");
    } finally {
      this.reading = false;
    }
  }

  toJSON(): HistoryJson {
    const capacity = this.t.length;
    const samples: HistoryJson["samples"] = [];
    for (let i = 0; i < this.size; i++) {
      const at = (this.head - this.size + i + capacity) % capacity;
      samples.push({ t: this.t[at]!, connections: this.connections[at]!, bytes_in: this.bytesIn[at]!, bytes_out: this.bytesOut[at]! });
    }
    return { interval_ms: this.intervalMs, window_ms: this.windowMs, now: this.clock(), samples };
  }

  private push(t: number, totals: Totals): void {
    this.t[this.head] = t;
    this.connections[this.head] = totals.connections;
    this.bytesIn[this.head] = totals.bytesIn;
    this.bytesOut[this.head] = totals.bytesOut;
    this.head = (this.head + 1) % this.t.length;
    this.size = Math.min(this.size + 1, this.t.length);
  }
}

/**
 * Reads the totals from the same counters /metrics serves (accepted connections, backend
 * bytes summed); without metrics, from the pool (connections dialled).
 */
export function totalsReader(metrics: Metrics | undefined, pool: BackendPool): () => Promise<Totals> {
  if (metrics) return async () => metrics.totals();
  return async () => {
    const totals = { connections: 0, bytesIn: 0, bytesOut: 0 };
    for (const b of pool.list()) {
      totals.connections += b.total;
      totals.bytesIn += b.bytesIn;
      totals.bytesOut += b.bytesOut;
    }
    return totals;
  };
}
