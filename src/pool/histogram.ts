/**
 * Fixed-bucket histograms in shared memory: one row per thing observed (a backend slot,
 * or the whole data plane), one stripe per thread inside it, so every data-plane thread
 * records with plain stores (one writer per stripe) and the metrics sum the stripes at
 * scrape time. Recording is a short scan of the bounds and two additions: no allocation.
 *
 * Stripe layout: a count per bucket (bounds.length of them, then one for +Inf), then the
 * sum of the observed values.
 */
export class HistogramLayout {
  /** Upper bounds of the buckets, ascending (Prometheus `le`). */
  readonly bounds: readonly number[];
  readonly threads: number;
  /** Float64 fields per stripe and per row. */
  readonly stripeFields: number;
  readonly rowFields: number;

  constructor(bounds: readonly number[], threads: number) {
    this.bounds = bounds;
    this.threads = threads;
    this.stripeFields = bounds.length + 2;
    this.rowFields = this.stripeFields * threads;
  }

  observe(view: Float64Array, row: number, thread: number, value: number): void {
    const bounds = this.bounds;
    let bucket = 0;
    while (bucket < bounds.length && value > bounds[bucket]!) bucket++;
    const base = row * this.rowFields + thread * this.stripeFields;
    view[base + bucket]! += 1;
    view[base + bounds.length + 1]! += value;
  }

  /** Cumulative bucket counts (the last is +Inf, i.e. the count) and the sum, over threads. */
  read(view: Float64Array, row: number): { cumulative: number[]; sum: number } {
    const n = this.bounds.length + 1;
    const counts = new Array<number>(n).fill(0);
    let sum = 0;
    for (let t = 0; t < this.threads; t++) {
      const base = row * this.rowFields + t * this.stripeFields;
      for (let b = 0; b < n; b++) counts[b]! += view[base + b]!;
      sum += view[base + n]!;
    }
    for (let b = 1; b < n; b++) counts[b]! += counts[b - 1]!;
    return { cumulative: counts, sum };
  }

  clear(view: Float64Array, row: number): void {
    view.fill(0, row * this.rowFields, (row + 1) * this.rowFields);
  }
}

/** Seconds from the start of a dial to the backend's accept. */
export const CONNECT_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Seconds from accept to the end of a client connection. */
export const CONNECTION_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600];
