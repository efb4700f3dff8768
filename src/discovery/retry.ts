import { setTimeout as delay } from "node:timers/promises";

/** Delays between attempts at reaching a discovery backend (an engine, an API server). */
export interface Backoff {
  /** Delay after the first failure. */
  readonly initialMs: number;
  /** Largest delay before jitter. */
  readonly maxMs: number;
}

/**
 * The delay before retry number `attempt` (1 for the first retry): initialMs doubled per
 * attempt up to maxMs, then spread by ±20% so that many balancers that lost the same
 * engine or API server at once do not all come back in the same instant.
 */
export function backoffDelay(backoff: Backoff, attempt: number, random: () => number = Math.random): number {
  // The exponent is capped so that a retry count in the thousands cannot reach Infinity.
  const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(base * (0.8 + random() * 0.4));
}

/** Resolves after `ms`, or as soon as `signal` aborts (never rejects for that). */
export async function sleep(ms: number, signal: AbortSignal): Promise<void> {
  try {
    await delay(ms, undefined, { signal });
  } catch (err) {
    if (!signal.aborted) throw err;
  }
}
