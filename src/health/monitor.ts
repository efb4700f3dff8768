import type { Logger } from "pino";
import type { Config } from "../config/schema.ts";
import { HttpProber, TcpProber, type Prober, type ProbeHeader, type ProbeTarget, type RunningProbe } from "./probe.ts";
import { RiseFall } from "./rise-fall.ts";

export type HealthSettings = Config["healthCheck"];

/** What the monitor writes: BackendPool satisfies it. */
export interface HealthSink {
  /** The verdict changed; the sink logs the change and republishes routing. */
  setHealthy(key: string, healthy: boolean, reason: string): void;
  /** One probe's outcome, for the API (error null when it passed). */
  recordCheck(key: string, at: Date, error: string | null): void;
}

/** Timers, injectable so tests can check the schedule without waiting on it. */
export interface Scheduler {
  after(ms: number, fn: () => void): unknown;
  cancel(handle: unknown): void;
}

const realTimers: Scheduler = {
  after: (ms, fn) => setTimeout(fn, ms),
  cancel: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface HealthMonitorOptions {
  settings: HealthSettings;
  sink: HealthSink;
  logger: Logger;
  /** Defaults to the probe `settings.type` names; tests may pass their own. */
  prober?: Prober;
  /** The PROXY protocol header a probe opens with (see ProbeHeader); default none. */
  header?: ProbeHeader;
  /** Wall clock for last_checked_at. */
  now?: () => number;
  /** Uniform in [0, 1), for jitter. */
  random?: () => number;
  timers?: Scheduler;
  /** Monotonic milliseconds for scheduling; defaults to performance.now. */
  clock?: () => number;
}

/**
 * First probes of backends that join together are spread over this much time per
 * backend (at most one interval): one backend is probed at once, a thousand over a
 * second, not in one burst that would stall the event loop and the data path with it.
 */
const FIRST_PROBE_SPREAD_MS = 1;
/** Each interval is stretched or shrunk by up to this fraction, so probes never align. */
const JITTER = 0.1;
/**
 * Probe starts are gathered on ticks this long (at most a twentieth of the interval), so a
 * thousand backends wake the event loop about fifty times a second instead of a thousand:
 * fewer timer wake-ups, each starting a batch (what that saves: docs/benchmarks.md,
 * "Figures that were in code comments").
 */
const TICK_MS = 20;

/** A watched backend: its hysteresis, its one timer, and its probe in flight. */
class Watched {
  readonly target: ProbeTarget;
  readonly state: RiseFall;
  timer: unknown = null;
  running: RunningProbe | null = null;
  /** When the last probe started (monitor clock); null until the first has. */
  startedAt: number | null = null;
  /** When the pending timer fires (monitor clock), while one is pending. */
  dueAt = 0;

  constructor(target: ProbeTarget, state: RiseFall) {
    this.target = target;
    this.state = state;
  }
}

/**
 * Active and passive health checking. Each watched backend has its own probe loop on
 * `interval` (with jitter), one probe at a time, each bounded by `timeout`. Probe
 * failures and failed client dials feed the same rise/fall counter; the monitor only
 * tells the sink when the verdict flips.
 */
export class HealthMonitor {
  private settings: HealthSettings;
  private readonly sink: HealthSink;
  private readonly log: Logger;
  private prober: Prober;
  /** Whether the prober was built here from the settings (a reload then rebuilds it). */
  private readonly ownProber: boolean;
  private readonly header: ProbeHeader | undefined;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly timers: Scheduler;
  private readonly clock: () => number;
  private readonly watched = new Map<string, Watched>();
  private stopped = false;

  constructor(opts: HealthMonitorOptions) {
    this.settings = opts.settings;
    this.sink = opts.sink;
    this.log = opts.logger;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.timers = opts.timers ?? realTimers;
    this.clock = opts.clock ?? (() => performance.now());
    this.header = opts.header;
    this.prober = opts.prober ?? proberFor(opts.settings, this.header);
    this.ownProber = opts.prober === undefined;
  }

  /**
   * A reload's settings. Verdicts stand: a backend that is down stays down until `rise`
   * (the new one) checks pass. Probes in flight finish as they started; the next ones
   * use the new type, timeout and interval.
   */
  configure(settings: HealthSettings): void {
    const retime = settings.intervalMs !== this.settings.intervalMs;
    this.settings = settings;
    if (this.ownProber) this.prober = proberFor(settings, this.header);
    for (const w of this.watched.values()) {
      w.state.setThresholds(settings.rise, settings.fall);
      // A timer set on the old interval could keep a shortened one waiting the whole old
      // interval (an hour, say): idle backends are put on the new interval at once.
      if (retime) this.retime(w);
    }
  }

  /** How many backends are being probed. */
  get size(): number {
    return this.watched.size;
  }

  /** Starts probing backends that joined; the first probes begin at once, spread out. */
  watch(targets: readonly ProbeTarget[]): void {
    if (this.stopped) return;
    const spread = Math.min(this.settings.intervalMs, (targets.length - 1) * FIRST_PROBE_SPREAD_MS);
    for (const target of targets) {
      this.unwatch([target]); // a re-added backend starts afresh
      const w = new Watched(target, new RiseFall(this.settings.rise, this.settings.fall));
      this.watched.set(target.key, w);
      this.schedule(w, spread * this.random());
    }
  }

  /** Stops probing backends that left, at once: timers cleared, probes in flight closed. */
  unwatch(targets: readonly ProbeTarget[]): void {
    for (const target of targets) {
      const w = this.watched.get(target.key);
      if (w === undefined) continue;
      this.watched.delete(target.key);
      this.quiet(w);
    }
  }

  /**
   * A client's dial to `key` failed. It counts toward `fall` like a failed probe, so a
   * dead backend leaves rotation after at most `fall` client attempts instead of waiting
   * for the next probe. A plain call so dial failures can arrive from other threads.
   */
  reportPassiveFailure(key: string, reason: string): void {
    const w = this.watched.get(key);
    if (w === undefined) return;
    this.failed(w, `${reason} (client traffic)`);
  }

  /** Stops every probe and timer. Nothing is probed afterwards. */
  stop(): void {
    this.stopped = true;
    for (const w of this.watched.values()) this.quiet(w);
    this.watched.clear();
  }

  /**
   * Moves an idle backend's pending probe to the new interval, counted from its last
   * probe's start (as probed() would have), or keeps a first probe's earlier time. A
   * backend being probed schedules its next probe on the new interval when it finishes.
   */
  private retime(w: Watched): void {
    if (w.timer === null) return;
    const now = this.clock();
    const due = w.startedAt === null ? Math.min(w.dueAt, now + this.settings.intervalMs) : w.startedAt + this.jittered();
    this.timers.cancel(w.timer);
    this.schedule(w, Math.max(0, due - now));
  }

  /** The interval, stretched or shrunk by the jitter. */
  private jittered(): number {
    return this.settings.intervalMs * (1 - JITTER + 2 * JITTER * this.random());
  }

  private schedule(w: Watched, delayMs: number): void {
    let ms = delayMs;
    const tick = Math.min(TICK_MS, this.settings.intervalMs / 20);
    if (ms > 0 && tick >= 1) {
      const now = this.clock();
      ms = Math.ceil((now + ms) / tick) * tick - now;
    }
    // Whole milliseconds: Node keeps one timer list per distinct duration, so integer
    // delays let a thousand timers share a few hundred lists instead of one each.
    w.dueAt = this.clock() + Math.round(ms);
    w.timer = this.timers.after(Math.round(ms), () => this.probe(w));
  }

  private probe(w: Watched): void {
    w.timer = null;
    w.startedAt = this.clock();
    w.running = this.prober.start(w.target, (failure, inconclusive) => this.probed(w, failure, inconclusive));
  }

  private probed(w: Watched, failure: string | null, inconclusive: boolean): void {
    w.running = null;
    if (this.watched.get(w.target.key) !== w) return; // unwatched meanwhile
    if (inconclusive) {
      this.log.warn({ backend: w.target.key, reason: failure }, "health check skipped");
    } else {
      this.sink.recordCheck(w.target.key, new Date(this.now()), failure);
      if (failure === null) this.passed(w);
      else this.failed(w, failure);
    }
    // The interval runs from one probe's start to the next, so a slow probe does not
    // stretch it; a probe that took longer than the interval is followed at once.
    this.schedule(w, Math.max(0, this.jittered() - (this.clock() - w.startedAt!)));
  }

  private passed(w: Watched): void {
    if (w.state.success()) this.sink.setHealthy(w.target.key, true, `${this.settings.rise} consecutive checks passed`);
  }

  private failed(w: Watched, reason: string): void {
    if (this.log.isLevelEnabled("debug")) this.log.debug({ backend: w.target.key, reason }, "health check failed");
    if (w.state.failure()) this.sink.setHealthy(w.target.key, false, reason);
  }

  private quiet(w: Watched): void {
    if (w.timer !== null) this.timers.cancel(w.timer);
    w.timer = null;
    w.running?.cancel();
    w.running = null;
  }
}

function proberFor(settings: HealthSettings, header: ProbeHeader | undefined): Prober {
  if (settings.type === "http") {
    return new HttpProber({ timeoutMs: settings.timeoutMs, ...settings.http, header });
  }
  return new TcpProber({ timeoutMs: settings.timeoutMs, header });
}
