import type { Connection } from "./connection.ts";

/**
 * Deadlines of connections waiting for one thing (a dial to connect, a place in the
 * per-backend queue, a PROXY header), with one timer for them all. Everyone on one list
 * waits the same time, so they expire in the order they joined: a list, oldest first,
 * and a timer armed for its head. No timer is made or cancelled per connection. The list
 * order doubles as the first-come order of the backend queue.
 *
 * A connection is on at most one list at a time (it waits for one thing at a time); its
 * `deadlines` field says which, so whatever ends the wait can take it off.
 */
export class Deadlines {
  private head: Connection | null = null;
  private tail: Connection | null = null;
  private timer: NodeJS.Timeout | null = null;
  private timeoutMs: number;
  private count = 0;
  private readonly expired: (conn: Connection) => void;
  private readonly expire = (): void => this.expireDue();

  /** `expired` is called for each connection whose deadline passed (already off the list). */
  constructor(timeoutMs: number, expired: (conn: Connection) => void) {
    this.timeoutMs = timeoutMs;
    this.expired = expired;
  }

  /** Applies to connections that join from now on (a reload); those waiting keep theirs. */
  setTimeout(ms: number): void {
    this.timeoutMs = ms;
  }

  get size(): number {
    return this.count;
  }

  /** The connection waiting longest, or null. */
  get first(): Connection | null {
    return this.head;
  }

  add(conn: Connection): void {
    conn.deadlines?.remove(conn);
    conn.deadline = performance.now() + this.timeoutMs;
    conn.deadlines = this;
    conn.waitPrev = this.tail;
    conn.waitNext = null;
    if (this.tail !== null) this.tail.waitNext = conn;
    else this.head = conn;
    this.tail = conn;
    this.count++;
    if (this.timer === null) this.arm();
  }

  /** The wait is over (or abandoned); calling it for a connection not on this list does nothing. */
  remove(conn: Connection): void {
    if (conn.deadlines !== this) return;
    conn.deadlines = null;
    if (conn.waitPrev !== null) conn.waitPrev.waitNext = conn.waitNext;
    else this.head = conn.waitNext;
    if (conn.waitNext !== null) conn.waitNext.waitPrev = conn.waitPrev;
    else this.tail = conn.waitPrev;
    conn.waitPrev = conn.waitNext = null;
    this.count--;
    // The timer is left armed: when it fires it re-arms for the then oldest, or stops
    // when there is none.
  }

  /** No timer left armed (the data plane is shutting down). */
  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(): void {
    const head = this.head;
    if (head === null) {
      this.timer = null;
      return;
    }
    this.timer = setTimeout(this.expire, Math.max(1, Math.ceil(head.deadline - performance.now())));
    this.timer.unref();
  }

  private expireDue(): void {
    const now = performance.now();
    for (let c = this.head; c !== null && c.deadline <= now; c = this.head) {
      this.remove(c);
      this.expired(c); // may add it to a list again (a dial's next attempt joins the tail)
    }
    this.arm();
  }
}
