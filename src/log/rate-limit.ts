import type { Logger } from "pino";

/**
 * Logs at most one line per key and interval, so a failure burst (a dead backend,
 * EMFILE, no healthy backends) leaves a readable trail instead of a flood. The next line
 * after a quiet spell carries how many were suppressed.
 */
export class RateLimitedLog {
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(log: Logger, intervalMs = 5000) {
    this.log = log;
    this.intervalMs = intervalMs;
  }

  warn(key: string, fields: Record<string, unknown>, msg: string): void {
    const now = performance.now();
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return;
    }
    const suppressed = entry?.suppressed ?? 0;
    this.last.set(key, { at: now, suppressed: 0 });
    if (this.last.size > 10_000) this.last.clear(); // bounded whatever the keys
    this.log.warn(suppressed > 0 ? { ...fields, suppressed } : fields, msg);
  }
}
