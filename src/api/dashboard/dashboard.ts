import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { Logger } from "pino";
import type { Metrics } from "../../metrics/metrics.ts";
import type { BackendPool } from "../../pool/pool.ts";
import { CLIENT_JS } from "./client.ts";
import { VIEW_JS } from "./view.ts";
import { CounterHistory, totalsReader, type HistoryJson } from "./history.ts";
import { PAGE_CSS, PAGE_HTML } from "./page.ts";

export interface DashboardOptions {
  pool: BackendPool;
  metrics?: Metrics;
  logger: Logger;
  /** Time between history samples; default 5 s. */
  sampleIntervalMs?: number;
}

export interface Asset {
  contentType: string;
  body: string;
}

/** Nothing but this process: scripts, styles and calls all go to the API's own origin. */
export const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const require = createRequire(import.meta.url);

/**
 * The dashboard served by the API: the page, its assets (ours, and uPlot from
 * node_modules, read once when the API starts), and the counter history the charts open
 * with. The page and assets need no token, so the page can show its token prompt; the
 * history needs one like every other endpoint.
 */
export class Dashboard {
  readonly history: CounterHistory;
  private readonly assets: ReadonlyMap<string, Asset>;

  constructor(opts: DashboardOptions) {
    this.history = new CounterHistory({
      read: totalsReader(opts.metrics, opts.pool),
      logger: opts.logger,
      ...(opts.sampleIntervalMs ? { intervalMs: opts.sampleIntervalMs } : {}),
    });
    const js = "text/javascript; charset=utf-8";
    const css = "text/css; charset=utf-8";
    this.assets = new Map([
      ["view.js", { contentType: js, body: VIEW_JS }],
      ["app.js", { contentType: js, body: CLIENT_JS }],
      ["app.css", { contentType: css, body: PAGE_CSS }],
      ["uplot.js", { contentType: js, body: readFileSync(require.resolve("uplot/dist/uPlot.iife.min.js"), "utf8") }],
      ["uplot.css", { contentType: css, body: readFileSync(require.resolve("uplot/dist/uPlot.min.css"), "utf8") }],
    ]);
  }

  page(): Asset {
    return { contentType: "text/html; charset=utf-8", body: PAGE_HTML };
  }

  asset(name: string): Asset | undefined {
    return this.assets.get(name);
  }

  historyJson(): HistoryJson {
    return this.history.toJSON();
  }

  /** Starts sampling; with the API's listen. */
  start(): void {
    this.history.start();
  }

  /** Stops sampling; with the API's close. */
  stop(): void {
    this.history.stop();
  }
}
