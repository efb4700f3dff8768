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

/**
 * A list-then-watch loop run in the background until stopped (Kubernetes discovery, the
 * etcd store's watch): start() resolves once the loop's first attempt (a list) has
 * answered or failed, so start-up applies what is there without waiting on a watch that
 * does not end; stop() aborts `signal` (ending sleeps and requests) and waits for the
 * loop to return.
 */
export class WatchLoop {
  private readonly lifetime = new AbortController();
  private loop: Promise<void> | undefined;

  get signal(): AbortSignal {
    return this.lifetime.signal;
  }

  get stopped(): boolean {
    return this.lifetime.signal.aborted;
  }

  /** Runs `run`, which calls `firstAttempt` once its first list has answered or failed. */
  async start(run: (firstAttempt: () => void) => Promise<void>): Promise<void> {
    let firstAttempt!: () => void;
    const attempted = new Promise<void>((resolve) => (firstAttempt = resolve));
    // finally: stop() during the first list must not leave start() waiting.
    this.loop = run(firstAttempt).finally(firstAttempt);
    await attempted;
  }

  async stop(): Promise<void> {
    this.lifetime.abort(new Error("stopped"));
    await this.loop;
  }
}
