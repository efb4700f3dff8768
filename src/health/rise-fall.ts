/**
 * Rise/fall hysteresis for one backend: `fall` consecutive failures take it down, `rise`
 * consecutive successes bring it back. Anything that alternates faster than that leaves
 * the state where it was, so a flapping backend does not flap the pool.
 */
export class RiseFall {
  private rise: number;
  private fall: number;
  /** A new backend is routable until proven down. */
  healthy = true;
  private successes = 0;
  private failures = 0;

  constructor(rise: number, fall: number) {
    this.rise = rise;
    this.fall = fall;
  }

  /** New thresholds (a reload); the counts so far carry on toward them. */
  setThresholds(rise: number, fall: number): void {
    this.rise = rise;
    this.fall = fall;
  }

  /** Records a success; true when it brings the backend up. */
  success(): boolean {
    this.failures = 0;
    if (this.healthy) return false;
    if (++this.successes < this.rise) return false;
    this.successes = 0;
    this.healthy = true;
    return true;
  }

  /** Records a failure; true when it takes the backend down. */
  failure(): boolean {
    this.successes = 0;
    if (!this.healthy) return false;
    if (++this.failures < this.fall) return false;
    this.failures = 0;
    this.healthy = false;
    return true;
  }
}
