/**
 * Loaded into a balancer process under test (`node --import`): every PROBE_INTERVAL_MS
 * it appends one JSON line to $GOBALANCER_PROBE_FILE with the main thread's event-loop
 * delay since the last line and its live timers and handles, the figures a soak or churn
 * run watches that /proc cannot show. It keeps nothing alive and changes nothing.
 */
import { appendFileSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";

const file = process.env.GOBALANCER_PROBE_FILE;
const interval = Number(process.env.PROBE_INTERVAL_MS ?? 1000);

if (file) {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const timer = setInterval(() => {
    const resources = process.getActiveResourcesInfo();
    // This probe's own interval is one of the timers: left out.
    const timers = resources.filter((r) => r === "Timeout").length - 1;
    const line = {
      t: Date.now(),
      eld_p99_ms: delay.percentile(99) / 1e6,
      eld_max_ms: delay.max / 1e6,
      timers,
      handles: resources.length - resources.filter((r) => r === "Timeout").length,
      rss: process.memoryUsage.rss(),
    };
    delay.reset();
    appendFileSync(file, `${JSON.stringify(line)}\n`);
  }, interval);
  timer.unref();
}
