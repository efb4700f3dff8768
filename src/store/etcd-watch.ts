import type { Logger } from "pino";
import type { Etcd3, IKeyValue, IWatchResponse } from "etcd3";
import { backoffDelay, sleep, WatchLoop, type Backoff } from "../discovery/retry.ts";
import type { EtcdMirror, MirroredKeyValue } from "./etcd-mirror.ts";
import { etcdErrorText } from "./etcd-errors.ts";

export interface EtcdFollowerOptions {
  readonly client: Etcd3;
  readonly prefix: string;
  readonly mirror: EtcdMirror;
  readonly logger: Logger;
  /** Called after every change to the mirror (a list, a batch of watch events). */
  readonly changed: () => void;
  /** Delays between attempts while etcd cannot be reached (jittered, see retry.ts). */
  readonly backoff: Backoff;
  /** Called after every list that succeeded: etcd answers. */
  readonly reachable?: () => void;
}

/** How one watch ended. */
interface WatchEnd {
  /** etcd no longer has the history the watch asked for: only a list can catch up. */
  readonly compacted: boolean;
  readonly error: string | undefined;
  readonly events: number;
  readonly durationMs: number;
}

/**
 * Keeps the mirror equal to what etcd holds under the prefix: list (the whole prefix, at
 * one revision), then watch from the revision after it, and list again whenever the
 * watch ends for any reason (a lost connection, a member going away, history compacted
 * past where the watch stood). A list replaces the mirror outright, so whatever changed
 * in etcd while this replica could not see it (including changes made there by hand) is
 * in the state afterwards, and nothing that went away is left behind.
 *
 * While etcd cannot be reached the replica keeps what it knows; the outage is logged
 * once when it starts and once when it ends (with the state found on return).
 *
 * Why a loop of our own over etcd3's Watcher reconnects: the Watcher resumes from its last
 * revision after a reconnect, but gives up for good when that revision has been
 * compacted, and its create() waits forever while etcd is down. Listing after every end
 * covers both with one path.
 */
export class EtcdFollower {
  private readonly opts: EtcdFollowerOptions;
  private readonly log: Logger;
  private readonly watch = new WatchLoop();

  constructor(opts: EtcdFollowerOptions) {
    this.opts = opts;
    this.log = opts.logger;
  }

  /** Resolves after the first list has answered or failed. */
  async start(): Promise<void> {
    await this.watch.start((firstAttempt) => this.run(firstAttempt));
  }

  async stop(): Promise<void> {
    await this.watch.stop();
  }

  private async run(firstAttempt: () => void): Promise<void> {
    let failures = 0;
    /** Watches cancelled as compacted in a row at once: past one, a list is evidently not what is missing. */
    let compactions = 0;
    let outageSince: number | undefined;
    while (!this.watch.stopped) {
      let revision: number;
      try {
        revision = await this.list();
      } catch (err) {
        if (this.watch.stopped) break;
        const delay = backoffDelay(this.opts.backoff, ++failures);
        const fields = { store: "etcd", err: etcdErrorText(err), attempt: failures, retry_in_ms: delay };
        if (outageSince === undefined) {
          outageSince = Date.now();
          this.log.warn({ ...fields, ...this.opts.mirror.counts }, "state store etcd unreachable: serving what is known, retrying");
        } else {
          this.log.debug(fields, "state store etcd still unreachable");
        }
        firstAttempt();
        await sleep(delay, this.watch.signal);
        continue;
      }
      firstAttempt();
      this.opts.reachable?.();
      if (outageSince !== undefined) {
        this.log.info({ store: "etcd", outage_ms: Date.now() - outageSince, revision, ...this.opts.mirror.counts }, "state store etcd reachable again: resynced");
        outageSince = undefined;
      }
      const end = await this.watchFrom(revision + 1);
      if (this.watch.stopped) break;
      // A watch that worked for a while proves the connection good: list again at once.
      const healthy = end.events > 0 || end.durationMs >= 1000;
      if (healthy) failures = 0;
      if (end.compacted) {
        // etcd answered; only its history is gone. A list catches up, and at once: waiting
        // would only leave this replica behind for longer. Again right after a fresh list,
        // though, the cancel means something else: back off as for any failed watch.
        compactions = healthy ? 1 : compactions + 1;
        if (compactions === 1) {
          this.log.info({ store: "etcd", revision }, "etcd watch history compacted; re-listing");
          continue;
        }
      } else {
        compactions = 0;
      }
      this.log.info({ store: "etcd", err: end.error, revision, ...(end.compacted ? { compacted_in_a_row: compactions } : {}) }, "etcd watch ended; re-listing");
      if (!healthy) await sleep(backoffDelay(this.opts.backoff, ++failures), this.watch.signal);
    }
  }

  /** Lists the prefix into the mirror; returns the revision the list was taken at. */
  private async list(): Promise<number> {
    const res = await this.opts.client.getAll().prefix(this.opts.prefix).exec();
    if (this.watch.stopped) return 0;
    const revision = Number(res.header.revision);
    this.opts.mirror.reset(res.kvs.map((kv) => this.mirrored(kv)), revision);
    this.opts.changed();
    return revision;
  }

  /** One watch from `revision` until it ends or the follower stops. */
  private watchFrom(revision: number): Promise<WatchEnd> {
    const started = Date.now();
    let events = 0;
    const watcher = this.opts.client.watch().prefix(this.opts.prefix).startRevision(String(revision)).watcher();
    return new Promise<WatchEnd>((resolve) => {
      let ended = false;
      const end = (compacted: boolean, err: unknown) => {
        if (ended) return;
        ended = true;
        this.watch.signal.removeEventListener("abort", onStop);
        watcher.removeAllListeners();
        // Errors from here on have no one to tell; the library must not see them unhandled.
        watcher.on("error", () => {});
        watcher.cancel().catch(() => undefined);
        resolve({ compacted, error: err === undefined ? undefined : etcdErrorText(err), events, durationMs: Date.now() - started });
      };
      const onStop = () => end(false, undefined);
      if (this.watch.signal.aborted) return onStop();
      this.watch.signal.addEventListener("abort", onStop, { once: true });
      watcher.on("data", (res: IWatchResponse) => {
        if (ended) return;
        let changed = false;
        for (const event of res.events) {
          events++;
          const kv = this.mirrored(event.kv);
          // Enums arrive as their names ("Put", "Delete"); see etcd3's proto loading.
          changed = (String(event.type) === "Delete" ? this.opts.mirror.delete(kv.key, kv.modRevision) : this.opts.mirror.put(kv)) || changed;
        }
        if (changed) this.opts.changed();
      });
      watcher.on("disconnected", (err: Error) => end(false, err));
      watcher.on("error", (err: Error) => end(compactedAway(err), err));
    });
  }

  private mirrored(kv: IKeyValue): MirroredKeyValue {
    return {
      key: kv.key.toString("utf8").slice(this.opts.prefix.length),
      value: kv.value.toString("utf8"),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
    };
  }
}

/**
 * Whether a watch's error is etcd cancelling it because its start revision was compacted
 * away. etcd says so with compact_revision and no cancel_reason (it gives a reason only
 * for watches it refused to create, such as "permission denied"); etcd3 passes on neither
 * field, only "Watcher canceled: " followed by the reason, so an empty reason is the sign.
 */
export function compactedAway(err: Error): boolean {
  const canceled = /^Watcher canceled: ?(.*)$/s.exec(err.message);
  return canceled !== null && (canceled[1]!.trim() === "" || /compact/i.test(canceled[1]!));
}
