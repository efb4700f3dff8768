import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric, type MetricValueWithName } from "prom-client";
import type { CounterTable, PlaneStats } from "../pool/counters.ts";
import type { BackendInfo, BackendPool } from "../pool/pool.ts";
import { TERMINATIONS, type TerminationName } from "../proxy/termination.ts";

export interface MetricsOptions {
  pool: BackendPool;
  counters: CounterTable;
  /** Connections open now, over every data-plane thread. */
  activeConnections: () => number;
  version: string;
}

/** How the contract's refusal reasons map onto termination causes. */
const REFUSALS: Record<string, readonly TerminationName[]> = {
  limit: ["limit"],
  no_backend: ["no_backend"],
  descriptors: ["descriptors"],
  dials_exhausted: ["connect_refused", "connect_timeout", "connect_error"],
  queue_timeout: ["queue_timeout"],
  proxy_header: ["proxy_header"],
};

/**
 * Prometheus metrics on a registry of their own. Nothing is counted here: every value is
 * read at scrape time from what the data plane already keeps (the shared counters,
 * summed over threads) and from the pool, so metrics cost the data path nothing.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly opts: MetricsOptions;
  /** The pool and plane figures of the scrape in progress, read once for all metrics. */
  private scraping: { backends: BackendInfo[]; plane: PlaneStats } | null = null;

  /**
   * The totals the dashboard charts: connections accepted and backend bytes each way,
   * the same figures /metrics serves, read straight from the counters.
   */
  totals(): { connections: number; bytesIn: number; bytesOut: number } {
    const totals = { connections: this.opts.counters.planeStats().accepted, bytesIn: 0, bytesOut: 0 };
    for (const b of this.opts.pool.list()) {
      totals.bytesIn += b.bytesIn;
      totals.bytesOut += b.bytesOut;
    }
    return totals;
  }

  constructor(opts: MetricsOptions) {
    this.opts = opts;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    const backends = () => this.scraping?.backends ?? this.opts.pool.list();

    new Gauge({
      name: "gobalancer_build_info",
      help: "GoBalancer's version and the Node.js it runs on; always 1",
      labelNames: ["version", "node"],
      registers,
      collect() {
        this.set({ version: opts.version, node: process.version }, 1);
      },
    });
    backendGauge("gobalancer_backend_up", "1 when the backend takes new connections, else 0", registers, backends, (b) => (b.status === "up" ? 1 : 0), true);
    backendGauge("gobalancer_backend_weight", "The backend's effective weight", registers, backends, (b) => b.weight);
    backendGauge("gobalancer_backend_active_connections", "Connections open to the backend now", registers, backends, (b) => b.active);
    backendCounter("gobalancer_backend_connections_total", "Connections dialled to the backend", registers, backends, (b) => b.total);
    backendCounter("gobalancer_backend_connection_failures_total", "Dials to the backend that failed", registers, backends, (b) => b.failed);
    backendCounter("gobalancer_backend_bytes_in_total", "Bytes from clients to the backend (open connections every 2 s)", registers, backends, (b) => b.bytesIn);
    backendCounter("gobalancer_backend_bytes_out_total", "Bytes from the backend to clients (open connections every 2 s)", registers, backends, (b) => b.bytesOut);
    new Counter({
      name: "gobalancer_backend_health_checks_total",
      help: "Active health checks of the backend, by result",
      labelNames: ["backend", "result"],
      registers,
      collect() {
        this.reset();
        for (const b of backends()) {
          this.inc({ backend: b.address, result: "pass" }, b.checksPassed);
          this.inc({ backend: b.address, result: "fail" }, b.checksFailed);
        }
      },
    });
    const plane = () => this.scraping?.plane ?? this.opts.counters.planeStats();
    new Counter({
      name: "gobalancer_connections_accepted_total",
      help: "Client connections accepted",
      registers,
      collect() {
        this.reset();
        this.inc(plane().accepted);
      },
    });
    new Gauge({
      name: "gobalancer_active_connections",
      help: "Client connections open now",
      registers,
      collect() {
        this.set(opts.activeConnections());
      },
    });
    new Counter({
      name: "gobalancer_connections_refused_total",
      help: "Client connections closed without being proxied, by reason",
      labelNames: ["reason"],
      registers,
      collect() {
        this.reset();
        const ended = plane().ended;
        for (const [reason, causes] of Object.entries(REFUSALS)) this.inc({ reason }, causes.reduce((sum, c) => sum + ended[c], 0));
      },
    });
    const table = this.opts.counters;
    this.registry.registerMetric(
      sharedHistogram("gobalancer_backend_connect_duration_seconds", "Time from the start of a dial to the backend's accept, for dials that connected", () =>
        backends().map((b) => ({ labels: { backend: b.address }, ...table.connectTimes(b.slot) })),
      ),
    );
    this.registry.registerMetric(
      sharedHistogram("gobalancer_connection_duration_seconds", "Time from accept to the end of a client connection", () => [
        { labels: {}, ...table.connectionTimes() },
      ]),
    );
    new Counter({
      name: "gobalancer_connections_closed_total",
      help: "Client connections ended, by termination cause (as in the access log)",
      labelNames: ["termination"],
      registers,
      collect() {
        this.reset();
        const ended = plane().ended;
        for (const name of TERMINATIONS) this.inc({ termination: name }, ended[name]);
      },
    });
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    // Every per-backend metric reads the same list: it is made once per scrape.
    this.scraping = { backends: this.opts.pool.list(), plane: this.opts.counters.planeStats() };
    try {
      return { contentType: this.registry.contentType, body: await this.registry.metrics() };
    } finally {
      this.scraping = null;
    }
  }
}

function backendGauge(
  name: string,
  help: string,
  registers: Registry[],
  backends: () => BackendInfo[],
  value: (b: BackendInfo) => number,
  withSource = false,
): void {
  new Gauge({
    name,
    help,
    labelNames: withSource ? ["backend", "source"] : ["backend"],
    registers,
    collect() {
      this.reset(); // removed backends disappear
      for (const b of backends()) this.set(withSource ? { backend: b.address, source: b.source } : { backend: b.address }, value(b));
    },
  });
}

function backendCounter(name: string, help: string, registers: Registry[], backends: () => BackendInfo[], value: (b: BackendInfo) => number): void {
  new Counter({
    name,
    help,
    labelNames: ["backend"],
    registers,
    collect() {
      this.reset();
      for (const b of backends()) this.inc({ backend: b.address }, value(b));
    },
  });
}

type HistogramRows = () => Array<{ labels: Record<string, string>; bounds: readonly number[]; cumulative: number[]; sum: number }>;

/**
 * A histogram whose buckets are kept in shared memory by the data-plane threads
 * (pool/histogram.ts), exposed as prom-client exposes its own. prom-client's Histogram
 * can only observe, not take counts kept elsewhere; the registry accepts any metric
 * object with get().
 */
function sharedHistogram(name: string, help: string, rows: HistogramRows): Metric {
  const metric = {
    name,
    help,
    type: "histogram",
    aggregator: "sum",
    get() {
      const values: Array<MetricValueWithName<string>> = [];
      for (const row of rows()) {
        row.bounds.forEach((le, i) => values.push({ metricName: `${name}_bucket`, labels: { ...row.labels, le }, value: row.cumulative[i]! }));
        const count = row.cumulative[row.bounds.length]!;
        values.push({ metricName: `${name}_bucket`, labels: { ...row.labels, le: "+Inf" }, value: count });
        values.push({ metricName: `${name}_sum`, labels: row.labels, value: row.sum });
        values.push({ metricName: `${name}_count`, labels: row.labels, value: count });
      }
      return { name, help, type: "histogram", aggregator: "sum", values };
    },
  };
  return metric as unknown as Metric;
}
