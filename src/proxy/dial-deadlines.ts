import type { Connection } from "./connection.ts";

/**
 * Connect deadlines of the dials in progress, with one timer for them all. Every dial
 * has the same connect timeout, so they expire in the order they started: a list,
 * oldest first, and a timer armed for its head. No timer is made or cancelled per dial.
 */
export class DialDeadlines {
  private head: Connection | null = null;
  private tail: Connection | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly timeoutMs: number;
  private readonly expire = (): void => this.expireDue();

  constructor(timeoutMs: number) {
    this.timeoutMs = timeoutMs;
  }

  add(conn: Connection): void {
    conn.dialDeadline = performance.now() + this.timeoutMs;
    conn.dialListed = true;
    conn.dialPrev = this.tail;
    conn.dialNext = null;
    if (this.tail !== null) this.tail.dialNext = conn;
    else this.head = conn;
    this.tail = conn;
    if (this.timer === null) this.arm();
  }

  /** The dial connected, failed or was abandoned; calling it again does nothing. */
  remove(conn: Connection): void {
    if (!conn.dialListed) return;
    conn.dialListed = false;
    if (conn.dialPrev !== null) conn.dialPrev.dialNext = conn.dialNext;
    else this.head = conn.dialNext;
    if (conn.dialNext !== null) conn.dialNext.dialPrev = conn.dialPrev;
    else this.tail = conn.dialPrev;
    conn.dialPrev = conn.dialNext = null;
    // The timer is left armed: when it fires it re-arms for the then oldest dial, or
    // stops when there is none.
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
    this.timer = setTimeout(this.expire, Math.max(1, Math.ceil(head.dialDeadline - performance.now())));
    this.timer.unref();
  }

  private expireDue(): void {
    const now = performance.now();
    for (let c = this.head; c !== null && c.dialDeadline <= now; c = this.head) {
      this.remove(c);
      c.dialTimedOut(); // may start the next attempt, which joins the tail
    }
    this.arm();
  }
}
