import type http from "node:http";
import { bookmarkObject, labelsOf, status, type Json, type Selector } from "./objects.ts";

/**
 * The watch side of the fake API server (apiserver.ts): the history of changes since the
 * last compaction and the open watch streams, each a chunked 200 with one
 * `{"type":…,"object":…}` per line, as the real server writes them.
 */

export interface HistoryEvent {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  namespace: string;
  object: Json;
}

interface Watcher {
  namespace: string;
  selector: Selector;
  bookmarks: boolean;
  res: http.ServerResponse;
  timer: NodeJS.Timeout | undefined;
}

/** A watch request, its namespace and selector already read from the path and query. */
export interface WatchRequest {
  namespace: string;
  selector: Selector;
  query: Record<string, string>;
  res: http.ServerResponse;
  /** Answers with a status and a JSON body instead of a stream. */
  reply: (code: number, body: Json) => void;
  /** The stream's 200 is about to be sent. */
  streaming: () => void;
}

export interface WatchOptions {
  /** How a watch from a compacted resourceVersion is refused (see FakeApiServer.tooOld). */
  tooOld: "event" | "http";
  /** The server's own cap on a watch's length. */
  maxSeconds: number;
}

export class Watches {
  private readonly history: HistoryEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private compactedRv = 0;

  get open(): number {
    return this.watchers.size;
  }

  /** A change: kept for watches that start from before it, and sent to the open ones. */
  record(e: HistoryEvent): void {
    this.history.push(e);
    for (const w of this.watchers) this.deliver(w, e);
  }

  /** Forgets the history up to `rv`, as etcd compaction does: older watches get 410. */
  compact(rv: number): void {
    this.compactedRv = rv;
    this.history.length = 0;
  }

  /** Sends a BOOKMARK at `rv` to every watch that allows them. */
  bookmark(rv: number): void {
    for (const w of this.watchers) if (w.bookmarks) this.send(w, "BOOKMARK", bookmarkObject(rv));
  }

  /** Ends every watch cleanly, as the server's watch timeout does. */
  closeAll(): void {
    for (const w of [...this.watchers]) this.end(w);
  }

  /** Forgets every watch without answering (the server is going away and cuts connections). */
  drop(): void {
    for (const w of this.watchers) clearTimeout(w.timer);
    this.watchers.clear();
  }

  /**
   * Serves a watch from query.resourceVersion: "" or "0" starts with synthetic ADDED events
   * for `current` (the matching objects now), a later one replays the history after it.
   */
  serve(req: WatchRequest, current: Iterable<Json>, opts: WatchOptions): void {
    const { query, res } = req;
    const from = query.resourceVersion ?? "";
    if (from !== "" && from !== "0" && !/^\d+$/.test(from)) {
      return req.reply(400, status(400, "BadRequest", `resourceVersion: Invalid value: "${from}": strconv.ParseUint: parsing "${from}": invalid syntax`));
    }
    const fromRv = Number(from);
    const tooOld = from !== "" && from !== "0" && fromRv < this.compactedRv;
    const expired = status(410, "Expired", `too old resource version: ${fromRv} (${this.compactedRv})`);
    if (tooOld && opts.tooOld === "http") return req.reply(410, { ...expired, reason: "Gone", message: `too old resource version: ${fromRv} (${this.compactedRv})` });

    req.streaming();
    res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-cache, private", "Transfer-Encoding": "chunked" });
    res.flushHeaders();
    const watcher: Watcher = { namespace: req.namespace, selector: req.selector, bookmarks: query.allowWatchBookmarks === "true", res, timer: undefined };
    if (tooOld) {
      res.end(JSON.stringify({ type: "ERROR", object: expired }) + "\n");
      return;
    }
    const seconds = Math.min(query.timeoutSeconds ? Number(query.timeoutSeconds) : opts.maxSeconds, opts.maxSeconds);
    watcher.timer = setTimeout(() => this.end(watcher), seconds * 1000);
    this.watchers.add(watcher);
    res.on("close", () => {
      clearTimeout(watcher.timer);
      this.watchers.delete(watcher);
    });
    if (from === "" || from === "0") {
      // "Start at most recent / any": synthetic ADDED for the current state first.
      for (const object of current) this.send(watcher, "ADDED", object);
    } else {
      for (const e of this.history) if (e.rv > fromRv) this.deliver(watcher, e);
    }
  }

  private deliver(w: Watcher, e: HistoryEvent): void {
    if (w.namespace === e.namespace && w.selector(labelsOf(e.object))) this.send(w, e.type, e.object);
  }

  private send(w: Watcher, type: string, object: Json): void {
    w.res.write(JSON.stringify({ type, object }) + "\n");
  }

  private end(w: Watcher): void {
    clearTimeout(w.timer);
    this.watchers.delete(w);
    w.res.end();
  }
}
