import { GLOBAL_QUEUE_HEADS, GLOBAL_QUEUE_TICKET, GLOBAL_QUEUED, GLOBAL_ROOM_FREED, type CounterView } from "../pool/counters.ts";
import type { BackendView } from "../pool/pool.ts";
import type { Connection } from "./connection.ts";
import { Deadlines } from "./deadlines.ts";

/**
 * A thread's published first ticket while it takes its first client's ticket: never a
 * ticket itself (nor is 0, "nobody queued here"). Others wait for the real one.
 */
const JOINING = -0x80000000;

/**
 * The waiting list, which also hears of every client that leaves it (served, expired, or
 * gone: a connection closing takes itself off whatever list it is on, deadlines.ts).
 */
class WaitingList extends Deadlines {
  private readonly left: (conn: Connection, wasFirst: boolean) => void;

  constructor(timeoutMs: number, expired: (conn: Connection) => void, left: (conn: Connection, wasFirst: boolean) => void) {
    super(timeoutMs, expired);
    this.left = left;
  }

  override remove(conn: Connection): void {
    if (conn.deadlines !== this) return;
    const wasFirst = this.first === conn;
    super.remove(conn);
    this.left(conn, wasFirst);
  }
}

/**
 * Clients waiting for room: every routable backend was at its `max_connections` when
 * they arrived. They wait first come, first served, up to `timeouts.queue`, and are
 * dialled as soon as a place frees on a backend (on this thread or another one).
 *
 * Each thread keeps its own list, and the order holds across threads: a client joining
 * takes a ticket from a counter every thread shares, each thread publishes the ticket of
 * its longest-waiting client (counters.ts GLOBAL_QUEUE_HEADS), and a thread dials its
 * first client only while no other thread's first holds an earlier ticket. Whatever could
 * change who goes next (a place freed on a limited backend, a thread's first client
 * served, expired or gone) bumps a shared counter and notifies it; while clients wait
 * here, this thread waits on it with Atomics.waitAsync, one wait at a time however many
 * are queued, and looks again when woken. None of this runs while nobody is queued.
 */
export class BackendQueue {
  private readonly waiting: WaitingList;
  private readonly global: Int32Array;
  private readonly counters: CounterView;
  private readonly headField: number;
  /** Each waiting client's ticket (the list holds them in ticket order). */
  private readonly tickets = new Map<Connection, number>();
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
    counters: CounterView;
    findRoom: (conn: Connection) => BackendView | undefined;
    expired: (conn: Connection) => void;
  }) {
    this.timeoutMs = opts.timeoutMs;
    this.counters = opts.counters;
    this.global = opts.counters.global;
    this.headField = GLOBAL_QUEUE_HEADS + opts.counters.thread;
    this.findRoom = opts.findRoom;
    this.waiting = new WaitingList(opts.timeoutMs, opts.expired, (conn, wasFirst) => this.left(conn, wasFirst));
  }

  /** 0: no queue, a client that finds every backend full is refused at once. */
  get timeout(): number {
    return this.timeoutMs;
  }

  setTimeout(ms: number): void {
    this.timeoutMs = ms;
    this.waiting.setTimeout(ms);
  }

  /** Clients waiting on this thread. */
  get size(): number {
    return this.waiting.size;
  }

  /** Whether any client waits, on any thread: a newcomer then queues behind them. */
  get anyWaiting(): boolean {
    return this.waiting.size > 0 || Atomics.load(this.global, GLOBAL_QUEUED) > 0;
  }

  /**
   * `conn` waits for room: every backend was full, or others were waiting. It is looked
   * at once, since a place may be free already for whoever holds the earliest ticket.
   */
  add(conn: Connection): void {
    // A ticket taken but not yet shown would let another thread's later one go first:
    // a thread with nobody queued shows it is joining before it takes one.
    if (this.waiting.size === 0) Atomics.store(this.global, this.headField, JOINING);
    let ticket = 0;
    while (ticket === 0 || ticket === JOINING) ticket = (Atomics.add(this.global, GLOBAL_QUEUE_TICKET, 1) + 1) | 0;
    this.tickets.set(conn, ticket);
    this.waiting.add(conn);
    Atomics.add(this.global, GLOBAL_QUEUED, 1);
    if (this.waiting.first === conn) this.publishFirst();
    this.roomFreed();
  }

  /** A place may have freed (a connection ended here, or the backends changed). */
  roomFreed(): void {
    if (this.waiting.size === 0 || this.serveScheduled) return;
    // Not from inside the close that freed it: the queued dial starts after it returns.
    this.serveScheduled = true;
    queueMicrotask(this.serveSoon);
  }

  /** Dials queued clients in order while the first of them goes first everywhere and has room. */
  private serve(): void {
    // Read before looking, so a change made after the look wakes the wait below.
    const seen = Atomics.load(this.global, GLOBAL_ROOM_FREED);
    for (let conn = this.waiting.first; conn !== null; conn = this.waiting.first) {
      if (!this.goesFirst(this.tickets.get(conn)!)) break;
      const view = this.findRoom(conn);
      if (view === undefined) break;
      this.waiting.remove(conn);
      conn.dequeued(view);
    }
    this.watchOthers(seen);
  }

  /** Whether no other thread's first client holds an earlier ticket (tickets wrap: compared by difference). */
  private goesFirst(ticket: number): boolean {
    for (let t = 0; t < this.counters.threads; t++) {
      const field = GLOBAL_QUEUE_HEADS + t;
      if (field === this.headField) continue;
      const other = Atomics.load(this.global, field);
      if (other === JOINING || (other !== 0 && ((other - ticket) | 0) < 0)) return false;
    }
    return true;
  }

  /** A client left the list (dialled, expired, closed): counted off, and the next one published. */
  private left(conn: Connection, wasFirst: boolean): void {
    this.tickets.delete(conn);
    Atomics.sub(this.global, GLOBAL_QUEUED, 1);
    if (wasFirst) this.publishFirst();
  }

  /** Shows the other threads this thread's first ticket, and wakes those waiting on it. */
  private publishFirst(): void {
    const first = this.waiting.first;
    Atomics.store(this.global, this.headField, first === null ? 0 : this.tickets.get(first)!);
    this.counters.roomFreed();
  }

  /**
   * Waits (without blocking) for another thread to free a place or move the queue on,
   * unless already waiting or nobody is queued. The wait ends at the first client's
   * deadline at the latest, so no wait outlives the clients it is for; it is taken from
   * the client, not from the queue timeout, which a reload may have set to 0 meanwhile
   * (a wait of 0 would return at once, and looking again at once would never yield).
   */
  private watchOthers(seen: number): void {
    const first = this.waiting.first;
    if (this.waitingOnOthers || first === null) return;
    const wait = Atomics.waitAsync(this.global, GLOBAL_ROOM_FREED, seen, Math.max(1, Math.ceil(first.deadline - performance.now())));
    if (!wait.async) {
      // Changed since `seen` (room freed, or the order moved on): look again.
      if (wait.value === "not-equal") this.roomFreed();
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
