import { GLOBAL_ROOM_FREED } from "../pool/counters.ts";
import type { BackendView } from "../pool/pool.ts";
import type { Connection } from "./connection.ts";
import { Deadlines } from "./deadlines.ts";

/**
 * Clients waiting for room: every routable backend was at its `max_connections` when
 * they arrived. They wait first come, first served, up to `timeouts.queue`, and are
 * dialled as soon as a place frees on a backend (on this thread or another one).
 *
 * A place freed on this thread is seen at once. One freed on another thread is seen
 * through a shared counter that every such close bumps and notifies (counters.ts
 * roomFreed): while clients wait here, this thread waits on it with Atomics.waitAsync,
 * one wait at a time however many clients are queued. Each thread keeps its own queue:
 * first come, first served holds among the clients of one thread, and the kernel spreads
 * clients over threads evenly.
 */
export class BackendQueue {
  private readonly waiting: Deadlines;
  private readonly global: Int32Array;
  private readonly findRoom: (conn: Connection) => BackendView | undefined;
  private timeoutMs: number;
  private waitingOnOthers = false;
  private serveScheduled = false;
  private readonly serveSoon = (): void => {
    this.serveScheduled = false;
    this.serve();
  };
  private readonly woken = (): void => {
    this.waitingOnOthers = false;
    this.serve();
  };

  /**
   * `findRoom` picks a backend with a free place for a queued client and takes it (or
   * finds none); `expired` closes a client that waited `timeoutMs` in vain.
   */
  constructor(opts: {
    timeoutMs: number;
    global: Int32Array;
    findRoom: (conn: Connection) => BackendView | undefined;
    expired: (conn: Connection) => void;
  }) {
    this.timeoutMs = opts.timeoutMs;
    this.global = opts.global;
    this.findRoom = opts.findRoom;
    this.waiting = new Deadlines(opts.timeoutMs, opts.expired);
  }

  /** 0: no queue, a client that finds every backend full is refused at once. */
  get timeout(): number {
    return this.timeoutMs;
  }

  setTimeout(ms: number): void {
    this.timeoutMs = ms;
    this.waiting.setTimeout(ms);
  }

  get size(): number {
    return this.waiting.size;
  }

  /** `conn` found every backend full: it waits for room. */
  add(conn: Connection): void {
    this.waiting.add(conn);
    this.watchOthers(Atomics.load(this.global, GLOBAL_ROOM_FREED));
  }

  /** A place may have freed (a connection ended here, or the backends changed). */
  roomFreed(): void {
    if (this.waiting.size === 0 || this.serveScheduled) return;
    // Not from inside the close that freed it: the queued dial starts after it returns.
    this.serveScheduled = true;
    queueMicrotask(this.serveSoon);
  }

  /** Dials queued clients in order while there is room for the first of them. */
  private serve(): void {
    // Read before looking for room, so a place freed after the look wakes the wait below.
    const seen = Atomics.load(this.global, GLOBAL_ROOM_FREED);
    for (let conn = this.waiting.first; conn !== null; conn = this.waiting.first) {
      const view = this.findRoom(conn);
      if (view === undefined) break;
      this.waiting.remove(conn);
      conn.dequeued(view);
    }
    this.watchOthers(seen);
  }

  /**
   * Waits (without blocking) for another thread to free a place, unless already waiting
   * or nobody is queued. The wait is bounded by the queue timeout, so no wait outlives
   * the clients it is for.
   */
  private watchOthers(seen: number): void {
    if (this.waitingOnOthers || this.waiting.size === 0) return;
    const wait = Atomics.waitAsync(this.global, GLOBAL_ROOM_FREED, seen, this.timeoutMs);
    if (!wait.async) {
      // Changed since `seen`: room freed meanwhile.
      this.roomFreed();
      return;
    }
    this.waitingOnOthers = true;
    void wait.value.then(this.woken);
  }

  /** No timer left armed (shutdown: the queued clients have been closed). */
  stop(): void {
    this.waiting.stop();
  }
}
