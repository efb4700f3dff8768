import type { CounterView } from "../pool/counters.ts";
import { DIALLING, type Connection } from "./connection.ts";
import { IDLE_TIMEOUT, type Termination } from "./termination.ts";

/**
 * Idle connections are found by a sweep every idle_timeout / IDLE_SWEEPS rather than a
 * timer per connection, which Node would re-arm on every read and write (it showed in the
 * CPU profile of every connection and every keep-alive request). A connection closes
 * after IDLE_SWEEPS sweeps in a row without a byte either way: between 1 and
 * 1 + 1/IDLE_SWEEPS times idle_timeout after its last byte.
 */
export const IDLE_SWEEPS = 8;

/**
 * A data plane's open connections: an intrusive list through the connections' own
 * prev/next fields, so adding and removing cost O(1) and allocate nothing. The periodic
 * work over all of them (idle sweep, live byte counts, the shutdown's last close) walks it.
 */
export class OpenConnections {
  private head: Connection | null = null;
  count = 0;

  add(conn: Connection): void {
    conn.next = this.head;
    if (this.head) this.head.prev = conn;
    this.head = conn;
    this.count++;
  }

  remove(conn: Connection): void {
    if (conn.prev) conn.prev.next = conn.next;
    else this.head = conn.next;
    if (conn.next) conn.next.prev = conn.prev;
    conn.prev = conn.next = null;
    this.count--;
  }

  closeAll(cause: Termination): void {
    for (let c = this.head, next: Connection | null; c !== null; c = next) {
      next = c.next; // close() takes c off the list
      c.close(cause);
    }
  }

  /** Adds the bytes open connections moved since the last flush to their backends' counters. */
  flushBytes(counters: CounterView): void {
    for (let c = this.head; c !== null; c = c.next) {
      if (c.phase === DIALLING) continue;
      const bytesIn = c.bytesIn - c.reportedIn;
      const bytesOut = c.bytesOut - c.reportedOut;
      if (bytesIn === 0 && bytesOut === 0) continue;
      counters.moved(c.view!.slot, bytesIn, bytesOut);
      c.reportedIn += bytesIn;
      c.reportedOut += bytesOut;
    }
  }

  /** Closes connections with no traffic either way for idle_timeout (see IDLE_SWEEPS). */
  sweepIdle(): void {
    for (let c = this.head, next: Connection | null; c !== null; c = next) {
      next = c.next;
      if (c.phase === DIALLING) continue; // a dial, a queue or a PROXY header has its own deadline
      if (c.upstream.active || c.downstream.active) {
        c.upstream.active = false;
        c.downstream.active = false;
        c.idleSweeps = 0;
      } else if (++c.idleSweeps >= IDLE_SWEEPS) {
        c.close(IDLE_TIMEOUT);
      }
    }
  }
}
