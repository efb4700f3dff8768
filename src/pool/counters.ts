/**
 * Per-backend counters shared by every data-plane thread, lock-free.
 *
 * `active` is one Int32 per backend slot, changed with Atomics by whichever thread opens
 * or closes a connection, so least_connections sees every thread's connections.
 * Totals and byte counts are striped per thread (one writer each, plain stores, summed on
 * read), because Atomics cannot add to 64-bit floats and 32-bit totals would wrap.
 * Both live in growable SharedArrayBuffers: a worker holding a length-tracking view sees
 * slots the main thread adds later without any message.
 * Figures of the data plane as a whole (connections accepted, how each ended) are striped
 * per thread the same way, in a fixed-size buffer.
 */
import { TERMINATIONS, type Termination, type TerminationName } from "../proxy/termination.ts";
import { CONNECT_SECONDS, CONNECTION_SECONDS, HistogramLayout } from "./histogram.ts";

export const STAT_TOTAL = 0;
export const STAT_FAILED = 1;
export const STAT_BYTES_IN = 2;
export const STAT_BYTES_OUT = 3;
const STATS_PER_SLOT = 4;

/** Process-wide figures in `global`, indexed by these. */
export const GLOBAL_ACTIVE = 0;
/** Round-robin tickets handed out so far, by every thread (see round-robin.ts). */
export const GLOBAL_RR_TICKET = 1;
/**
 * Bumped (and notified) whenever a connection to a backend with a connection limit ends,
 * or a thread's longest-waiting queued client changes, so threads with clients queued
 * for room wake up and look again (see proxy/backend-queue.ts).
 */
export const GLOBAL_ROOM_FREED = 2;
/** Tickets handed to clients joining the per-backend queue, by every thread (first come, first served). */
export const GLOBAL_QUEUE_TICKET = 3;
/** Clients waiting in the per-backend queue, over every thread. */
export const GLOBAL_QUEUED = 4;
/**
 * From here, one field per thread: the ticket of that thread's longest-waiting queued
 * client, 0 while it has none. A thread serves its first client only when no other
 * thread's holds an earlier ticket, so the queue is first come, first served across threads.
 */
export const GLOBAL_QUEUE_HEADS = 5;

/** Per-thread plane figures: accepted connections, then one count per termination cause. */
const PLANE_ACCEPTED = 0;
const PLANE_ENDED = 1;
const PLANE_FIELDS = PLANE_ENDED + TERMINATIONS.length;

const MAX_SLOTS = 1 << 24;
const INITIAL_SLOTS = 1024;

/** What a data-plane thread needs to count: transferable to worker threads as is. */
export interface CounterBuffers {
  readonly threads: number;
  readonly active: SharedArrayBuffer;
  readonly stats: SharedArrayBuffer;
  readonly global: SharedArrayBuffer;
  readonly plane: SharedArrayBuffer;
  /** Connect durations, a histogram row per slot (histogram.ts); grows with the slots. */
  readonly connectTimes: SharedArrayBuffer;
  /** Connection durations, one histogram row for the whole data plane. */
  readonly connectionTimes: SharedArrayBuffer;
}

/** The data plane's figures summed over threads. */
export interface PlaneStats {
  accepted: number;
  /** Connections ended, by cause; every accepted connection ends under exactly one. */
  ended: Record<TerminationName, number>;
}

export interface BackendStats {
  active: number;
  total: number;
  failed: number;
  bytesIn: number;
  bytesOut: number;
}

/** One thread's handle on the shared counters. Hot-path methods allocate nothing. */
export class CounterView {
  /** Live active-connection count per slot (length-tracking view). */
  readonly active: Int32Array;
  readonly global: Int32Array;
  private readonly stats: Float64Array;
  private readonly stripe: number;
  /** How many threads share the counters, and which of them this view counts for. */
  readonly threads: number;
  private readonly plane: Float64Array;
  readonly thread: number;
  private readonly connectLayout: HistogramLayout;
  private readonly connectionLayout: HistogramLayout;
  private readonly connectTimes: Float64Array;
  private readonly connectionTimes: Float64Array;

  constructor(buffers: CounterBuffers, thread: number) {
    if (thread < 0 || thread >= buffers.threads) throw new Error(`counter thread ${thread} out of range`);
    this.active = new Int32Array(buffers.active);
    this.stats = new Float64Array(buffers.stats);
    this.global = new Int32Array(buffers.global);
    this.threads = buffers.threads;
    this.stripe = thread * STATS_PER_SLOT;
    this.plane = new Float64Array(buffers.plane, thread * PLANE_FIELDS * 8, PLANE_FIELDS);
    this.thread = thread;
    this.connectLayout = new HistogramLayout(CONNECT_SECONDS, buffers.threads);
    this.connectionLayout = new HistogramLayout(CONNECTION_SECONDS, buffers.threads);
    this.connectTimes = new Float64Array(buffers.connectTimes);
    this.connectionTimes = new Float64Array(buffers.connectionTimes);
  }

  /** A dial to `slot` connected after `seconds`. */
  connectTime(slot: number, seconds: number): void {
    this.connectLayout.observe(this.connectTimes, slot, this.thread, seconds);
  }

  /** A client connection ended `seconds` after it was accepted. */
  connectionTime(seconds: number): void {
    this.connectionLayout.observe(this.connectionTimes, 0, this.thread, seconds);
  }

  accepted(): void {
    this.plane[PLANE_ACCEPTED]! += 1;
  }

  ended(cause: Termination): void {
    this.plane[PLANE_ENDED + cause]! += 1;
  }

  opened(slot: number): void {
    Atomics.add(this.active, slot, 1);
    this.stats[slot * this.threads * STATS_PER_SLOT + this.stripe + STAT_TOTAL]! += 1;
  }

  /**
   * opened(), only while fewer than `max` connections to `slot` are open, counted over
   * every thread: the add and the check are one atomic step, so threads racing for the
   * last place cannot both take it. False (nothing counted) when it is full.
   */
  openedWithin(slot: number, max: number): boolean {
    if (Atomics.add(this.active, slot, 1) >= max) {
      Atomics.sub(this.active, slot, 1);
      return false;
    }
    this.stats[slot * this.threads * STATS_PER_SLOT + this.stripe + STAT_TOTAL]! += 1;
    return true;
  }

  /** A limited backend's place freed, or the queue's order moved on: threads waiting for room are woken. */
  roomFreed(): void {
    Atomics.add(this.global, GLOBAL_ROOM_FREED, 1);
    Atomics.notify(this.global, GLOBAL_ROOM_FREED);
  }

  /** A connection ended; `bytesIn`/`bytesOut` are what it moved since its last moved(). */
  closed(slot: number, bytesIn: number, bytesOut: number): void {
    Atomics.sub(this.active, slot, 1);
    this.moved(slot, bytesIn, bytesOut);
  }

  /** Bytes an open connection moved, counted before it ends (metrics see them live). */
  moved(slot: number, bytesIn: number, bytesOut: number): void {
    const base = slot * this.threads * STATS_PER_SLOT + this.stripe;
    this.stats[base + STAT_BYTES_IN]! += bytesIn;
    this.stats[base + STAT_BYTES_OUT]! += bytesOut;
  }

  failed(slot: number): void {
    this.stats[slot * this.threads * STATS_PER_SLOT + this.stripe + STAT_FAILED]! += 1;
  }
}

/**
 * Owns slot allocation (main thread only). A removed backend's slot is retired, not
 * freed, until its last connection closes: otherwise a connection opened before the
 * removal would decrement some other backend's count when it ends.
 */
export class CounterTable {
  readonly buffers: CounterBuffers;
  private readonly activeView: Int32Array;
  private readonly statsView: Float64Array;
  private readonly planeView: Float64Array;
  private readonly connectLayout: HistogramLayout;
  private readonly connectionLayout: HistogramLayout;
  private readonly connectView: Float64Array;
  private readonly connectionView: Float64Array;
  private capacity: number;
  private next = 0;
  private readonly free: number[] = [];
  /** Retired slots by the backend key that owned them. */
  private readonly retired = new Map<string, number>();

  constructor(threads: number) {
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`counter threads must be >= 1, got ${threads}`);
    this.capacity = INITIAL_SLOTS;
    const active = new SharedArrayBuffer(INITIAL_SLOTS * 4, { maxByteLength: MAX_SLOTS * 4 });
    const stats = new SharedArrayBuffer(INITIAL_SLOTS * threads * STATS_PER_SLOT * 8, {
      maxByteLength: MAX_SLOTS * threads * STATS_PER_SLOT * 8,
    });
    const global = new SharedArrayBuffer((GLOBAL_QUEUE_HEADS + threads) * 4);
    const plane = new SharedArrayBuffer(threads * PLANE_FIELDS * 8);
    this.connectLayout = new HistogramLayout(CONNECT_SECONDS, threads);
    this.connectionLayout = new HistogramLayout(CONNECTION_SECONDS, threads);
    const connectTimes = new SharedArrayBuffer(INITIAL_SLOTS * this.connectLayout.rowFields * 8, {
      maxByteLength: MAX_SLOTS * this.connectLayout.rowFields * 8,
    });
    const connectionTimes = new SharedArrayBuffer(this.connectionLayout.rowFields * 8);
    this.buffers = { threads, active, stats, global, plane, connectTimes, connectionTimes };
    this.activeView = new Int32Array(active);
    this.statsView = new Float64Array(stats);
    this.planeView = new Float64Array(plane);
    this.connectView = new Float64Array(connectTimes);
    this.connectionView = new Float64Array(connectionTimes);
  }

  /** Connect durations to `slot`'s backend, summed over threads. */
  connectTimes(slot: number): { bounds: readonly number[]; cumulative: number[]; sum: number } {
    return { bounds: this.connectLayout.bounds, ...this.connectLayout.read(this.connectView, slot) };
  }

  /** Connection durations, summed over threads. */
  connectionTimes(): { bounds: readonly number[]; cumulative: number[]; sum: number } {
    return { bounds: this.connectionLayout.bounds, ...this.connectionLayout.read(this.connectionView, 0) };
  }

  /** Accepted connections and terminations, summed over every thread. */
  planeStats(): PlaneStats {
    const ended = Object.fromEntries(TERMINATIONS.map((name) => [name, 0])) as Record<TerminationName, number>;
    let accepted = 0;
    for (let t = 0; t < this.buffers.threads; t++) {
      const base = t * PLANE_FIELDS;
      accepted += this.planeView[base + PLANE_ACCEPTED]!;
      for (let c = 0; c < TERMINATIONS.length; c++) ended[TERMINATIONS[c]!] += this.planeView[base + PLANE_ENDED + c]!;
    }
    return { accepted, ended };
  }

  /** A slot for a new backend, its counters at zero. */
  allocate(): number {
    let slot = this.free.pop();
    if (slot === undefined) {
      // Look at a few retired slots only, so a mass removal with many open
      // connections cannot make every later add scan them all.
      let looked = 0;
      for (const [key, candidate] of this.retired) {
        if (Atomics.load(this.activeView, candidate) === 0) {
          this.retired.delete(key);
          slot = candidate;
          break;
        }
        if (++looked === 16) break;
      }
    }
    if (slot === undefined) {
      if (this.next === this.capacity) this.grow();
      slot = this.next++;
    }
    const base = slot * this.buffers.threads * STATS_PER_SLOT;
    this.statsView.fill(0, base, base + this.buffers.threads * STATS_PER_SLOT);
    this.connectLayout.clear(this.connectView, slot);
    return slot;
  }

  /** The backend left the pool; its slot is reused once no connection counts on it. */
  retire(key: string, slot: number): void {
    this.retired.set(key, slot);
  }

  /**
   * The slot a re-added backend had, if it was not reused meanwhile: connections opened
   * before the removal then still close against the right count, which never goes negative.
   */
  revive(key: string): number | undefined {
    const slot = this.retired.get(key);
    if (slot !== undefined) this.retired.delete(key);
    return slot;
  }

  read(slot: number): BackendStats {
    const threads = this.buffers.threads;
    const out: BackendStats = { active: Atomics.load(this.activeView, slot), total: 0, failed: 0, bytesIn: 0, bytesOut: 0 };
    for (let t = 0; t < threads; t++) {
      const base = (slot * threads + t) * STATS_PER_SLOT;
      out.total += this.statsView[base + STAT_TOTAL]!;
      out.failed += this.statsView[base + STAT_FAILED]!;
      out.bytesIn += this.statsView[base + STAT_BYTES_IN]!;
      out.bytesOut += this.statsView[base + STAT_BYTES_OUT]!;
    }
    return out;
  }

  private grow(): void {
    const capacity = Math.min(this.capacity * 2, MAX_SLOTS);
    if (capacity === this.capacity) throw new Error(`backend limit reached (${MAX_SLOTS} backends)`);
    this.buffers.active.grow(capacity * 4);
    this.buffers.stats.grow(capacity * this.buffers.threads * STATS_PER_SLOT * 8);
    this.buffers.connectTimes.grow(capacity * this.connectLayout.rowFields * 8);
    this.capacity = capacity;
  }
}
