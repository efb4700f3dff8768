import type { Logger } from "pino";
import type { HostPort } from "../pool/address.ts";
import type { AdminState } from "../pool/pool.ts";
import { decodeEntry } from "./etcd-layout.ts";
import type { ApiBackend, PersistedState } from "./store.ts";

/** One key as etcd reports it, the prefix already taken off. */
export interface MirroredKeyValue {
  readonly key: string;
  readonly value: string;
  readonly createRevision: number;
  readonly modRevision: number;
}

/**
 * This replica's copy of the keys under the prefix, decoded. Changes reach it by three
 * paths that can arrive in any order: full lists, watch events, and the answers to this
 * replica's own transactions (whose effects the watch then reports again). Each key
 * remembers the revision it was last changed at, and anything not newer is ignored, so
 * every path is idempotent and an old answer never overwrites a newer event.
 *
 * A key or value gobalancer cannot use (an unknown kind, a corrupt value written by hand)
 * is logged once, with its key, and left out: the entry is absent, whatever was there
 * before, so every replica ends with the same state whatever it saw on the way.
 */
export class EtcdMirror {
  private readonly backends = new Map<string, { backend: ApiBackend; id: string | undefined; createRevision: number }>();
  private readonly weights = new Map<string, { address: HostPort; weight: number }>();
  private readonly states = new Map<string, { address: HostPort; state: AdminState }>();
  /** Relative key → revision of its latest put or delete seen since the last list. */
  private readonly revisions = new Map<string, number>();
  /** Revision of the last full list: it holds everything up to here. */
  private floor = 0;
  /** Key → revision last warned about, so a bad value is logged once, not per list. */
  private readonly warned = new Map<string, number>();
  private readonly log: Logger;
  private readonly prefix: string;

  constructor(log: Logger, prefix: string) {
    this.log = log;
    this.prefix = prefix;
  }

  /** Replaces everything with a list taken at `revision`. */
  reset(kvs: readonly MirroredKeyValue[], revision: number): void {
    this.backends.clear();
    this.weights.clear();
    this.states.clear();
    this.revisions.clear();
    this.floor = revision;
    const listed = new Set<string>();
    for (const kv of kvs) {
      listed.add(kv.key);
      this.decode(kv);
    }
    for (const key of this.warned.keys()) if (!listed.has(key)) this.warned.delete(key);
  }

  /** A put at kv.modRevision; returns whether it changed anything. */
  put(kv: MirroredKeyValue): boolean {
    if (!this.newer(kv.key, kv.modRevision)) return false;
    this.forget(kv.key);
    this.decode(kv);
    return true;
  }

  /** A delete at `revision`; returns whether it changed anything. */
  delete(key: string, revision: number): boolean {
    if (!this.newer(key, revision)) return false;
    this.warned.delete(key);
    return this.forget(key);
  }

  /** The API backend at an address: its create revision and the id of the POST that made it. */
  backend(address: HostPort): { createRevision: number; id: string | undefined } | undefined {
    return this.backends.get(address.key);
  }

  state(): PersistedState {
    return {
      backends: Array.from(this.backends.values(), (b) => b.backend),
      weights: [...this.weights.values()],
      // "ready" is the absence of a state.
      states: [...this.states.values()].filter((s) => s.state !== "ready"),
    };
  }

  get counts(): { backends: number; weights: number; states: number } {
    return { backends: this.backends.size, weights: this.weights.size, states: this.states.size };
  }

  private newer(key: string, revision: number): boolean {
    if (revision <= (this.revisions.get(key) ?? this.floor)) return false;
    this.revisions.set(key, revision);
    return true;
  }

  private forget(key: string): boolean {
    const slash = key.indexOf("/");
    const address = key.slice(slash + 1);
    switch (key.slice(0, slash)) {
      case "backends":
        return this.backends.delete(address);
      case "weights":
        return this.weights.delete(address);
      case "states":
        return this.states.delete(address);
      default:
        return false;
    }
  }

  private decode(kv: MirroredKeyValue): void {
    const entry = decodeEntry(kv.key, kv.value);
    if ("problem" in entry) {
      if (this.warned.get(kv.key) !== kv.modRevision) {
        this.warned.set(kv.key, kv.modRevision);
        this.log.warn({ key: `${this.prefix}${kv.key}`, revision: kv.modRevision, problem: entry.problem }, "state store entry ignored");
      }
      return;
    }
    this.warned.delete(kv.key);
    if (entry.kind === "backends") {
      this.backends.set(entry.backend.address.key, { backend: entry.backend, id: entry.id, createRevision: kv.createRevision });
    } else if (entry.kind === "weights") {
      this.weights.set(entry.address.key, { address: entry.address, weight: entry.weight });
    } else {
      this.states.set(entry.address.key, { address: entry.address, state: entry.state });
    }
  }
}
