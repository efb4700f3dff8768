/** A backend's share once slow start is over (or off): tenths of its weight. */
export const SHARE_FULL = 10;

/**
 * Slow start (`slow_start`): a backend that joins or comes back up gets a tenth of its
 * weight at first and all of it once the ramp time has passed, growing linearly in
 * between. The ramp is stepped, SHARE_FULL - 1 steps in all, so that pickers are rebuilt a
 * bounded number of times per ramp (each step is one snapshot) and keep their O(1) or
 * O(log N) picks; between steps nothing runs.
 *
 * The pool owns the clock and the one timer: it asks for a backend's share when it
 * publishes, and `schedule` arms the timer for the earliest next step of any ramp.
 */
export class SlowStart {
  private durationMs = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private readonly step: () => void;

  /** `step` is called (once per timer) when some ramp reaches its next step. */
  constructor(step: () => void) {
    this.step = step;
  }

  get enabled(): boolean {
    return this.durationMs > 0;
  }

  /** 0 turns slow start off; ramps under way then end at the next publish. */
  setDuration(ms: number): void {
    this.durationMs = ms;
    if (ms === 0) this.cancel();
  }

  /** Tenths of its weight a backend ramping since `from` gets at `now` (SHARE_FULL: done). */
  share(from: number, now: number): number {
    if (from < 0 || this.durationMs <= 0) return SHARE_FULL;
    const elapsed = now - from;
    if (elapsed >= this.durationMs) return SHARE_FULL;
    return 1 + Math.floor(((SHARE_FULL - 1) * elapsed) / this.durationMs);
  }

  /** When the share of a backend ramping since `from` next grows (pool clock). */
  nextStepAt(from: number, now: number): number {
    const stepMs = this.durationMs / (SHARE_FULL - 1);
    return from + (Math.floor((now - from) / stepMs) + 1) * stepMs;
  }

  /** Arms the timer for `at` (pool clock) unless one is armed for earlier; Infinity: none needed. */
  schedule(at: number, now: number): void {
    if (at === Infinity) {
      this.cancel();
      return;
    }
    if (this.timer !== null && this.timerAt <= at) return;
    this.cancel();
    this.timerAt = at;
    // A millisecond past the step, so the share computed then has surely moved on.
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.step();
    }, Math.max(0, Math.ceil(at - now)) + 1);
    this.timer.unref();
  }

  cancel(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
  }
}
