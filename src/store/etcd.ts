import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { ICompare, IRequestOp, ITxnRequest, ITxnResponse } from "etcd3";
import { backoffDelay, sleep, type Backoff } from "../discovery/retry.ts";
import { RateLimitedLog } from "../log/rate-limit.ts";
import { createEtcdClient, type EtcdClient, type EtcdTlsFiles } from "./etcd-client.ts";
import { encodeBackend, encodeState, encodeWeight, keyOf, KINDS, type Kind } from "./etcd-layout.ts";
import { EtcdMirror, type MirroredKeyValue } from "./etcd-mirror.ts";
import { EtcdFollower } from "./etcd-watch.ts";
import { etcdErrorText } from "./etcd-errors.ts";
import { StoreOutcomeUnknownError, StoreUnavailableError, type PersistedState, type SharedStore, type SharedWrite } from "./store.ts";

export interface EtcdStoreOptions {
  readonly endpoints: readonly string[];
  /** Every key lives under it (see etcd-layout.ts). */
  readonly prefix: string;
  /** etcd's own authentication; "" for none. */
  readonly username: string;
  readonly password: string;
  /** PEM files for https:// endpoints; "" for each one not set. */
  readonly tls?: EtcdTlsFiles;
  readonly logger: Logger;
  /** One call to etcd (not the watch) is abandoned after this. */
  readonly callTimeoutMs?: number;
  /**
   * How long a write whose outcome is unknown (the connection broke after it was sent) is
   * retried until etcd says whether it committed. Longer than an etcd leader election.
   */
  readonly resolveMs?: number;
  /** Delays between attempts to reach etcd for the watch (jittered, see retry.ts). */
  readonly backoff?: Backoff;
}

/** Quick attempts at a write that never reached etcd before answering that it is unreachable. */
const UNSENT_ATTEMPTS = 3;
/**
 * How long a write that members refuse for want of a leader (see etcd-client.ts) is tried
 * again: about an etcd leader election at etcd's default timings.
 */
const LEADERLESS_MS = 2000;
const WRITE_BACKOFF: Backoff = { initialMs: 50, maxMs: 1000 };

/**
 * The API's state in etcd, shared by every replica that names the same endpoints and
 * prefix. Writes are etcd transactions, each conditional on what the change was decided
 * on (SharedWrite.basis), so two replicas adding the same address get one success and one
 * "stale". Every replica follows the prefix (etcd-watch.ts) into its mirror
 * (etcd-mirror.ts) and hands the mirror's state to onChange after each change.
 *
 * A write is retried only while it is safe to: every transaction here can be sent twice
 * with the effect of once (a create carries the id of its request and recognises itself
 * if an earlier attempt did commit), so a write whose outcome is unknown is retried until
 * etcd says how it ended; a write that never reached etcd is refused after a few quick
 * attempts (for a leader election's time when members answer that they have none). A
 * refusal (StoreUnavailableError) is only ever given for a write that is certainly not
 * committed; a write that was sent and never answered within resolveMs ends as
 * StoreOutcomeUnknownError, which says so: etcd may still commit it.
 */
export class EtcdStore implements SharedStore {
  readonly name = "etcd";
  private readonly opts: EtcdStoreOptions;
  private readonly prefix: string;
  private readonly log: Logger;
  private readonly refusals: RateLimitedLog;
  /** A write was refused because etcd could not be reached, and none has committed since. */
  private refusing = false;
  private readonly mirror: EtcdMirror;
  private readonly resolveMs: number;
  private readonly lifetime = new AbortController();
  private etcd: EtcdClient | undefined;
  private follower: EtcdFollower | undefined;
  private onChange: (state: PersistedState) => void = () => {};

  constructor(opts: EtcdStoreOptions) {
    this.opts = opts;
    this.prefix = opts.prefix;
    this.log = opts.logger.child({ component: "state-store" });
    this.refusals = new RateLimitedLog(this.log);
    this.resolveMs = opts.resolveMs ?? 10_000;
    this.mirror = new EtcdMirror(this.log, this.prefix);
  }

  async start(onChange: (state: PersistedState) => void): Promise<void> {
    const { endpoints, username, password, prefix } = this.opts;
    this.onChange = onChange;
    const tls = this.opts.tls ?? { caFile: "", certFile: "", keyFile: "" };
    this.etcd = await createEtcdClient({ endpoints, username, password, tls, callTimeoutMs: this.opts.callTimeoutMs ?? 3000 });
    this.log.info({ store: "etcd", endpoints, prefix, auth: username !== "", client_certificate: tls.certFile !== "" }, "state store etcd: following");
    this.follower = new EtcdFollower({
      client: this.etcd.client,
      prefix,
      mirror: this.mirror,
      logger: this.log,
      changed: () => this.onChange(this.mirror.state()),
      backoff: this.opts.backoff ?? { initialMs: 250, maxMs: 5000 },
      reachable: () => (this.refusing = false),
    });
    await this.follower.start();
  }

  async stop(): Promise<void> {
    if (this.lifetime.signal.aborted) return;
    this.lifetime.abort(new Error("stopped"));
    await this.follower?.stop();
    this.etcd?.client.close();
  }

  async write(write: SharedWrite): Promise<"done" | "stale"> {
    const etcd = this.etcd;
    if (!etcd || this.lifetime.signal.aborted) throw new StoreUnavailableError("state store etcd unreachable: not started, or stopped");
    const { request, id } = this.transaction(write);
    const started = Date.now();
    // Some attempt reached etcd and got no answer: it may have committed.
    let unsure = false;
    for (let attempt = 1; ; attempt++) {
      let res: ITxnResponse;
      try {
        res = await etcd.client.kv.txn(request);
      } catch (err) {
        const transient = etcd.isTransient(err);
        if (transient) unsure ||= !etcd.neverSent(err);
        const delay = backoffDelay(WRITE_BACKOFF, attempt);
        const elapsed = Date.now() + delay - started;
        const outOfTime = unsure ? elapsed > this.resolveMs : etcd.noLeader(err) ? elapsed > LEADERLESS_MS : attempt >= UNSENT_ATTEMPTS;
        if (!transient || outOfTime || this.lifetime.signal.aborted) {
          // A refusal of a later attempt says nothing of an earlier one that went unanswered.
          if (unsure) throw this.unknown(write, err);
          throw transient ? this.unreachable(write, err) : this.refused(write, err);
        }
        this.log.debug({ backend: write.address.key, attempt, err: etcdErrorText(err), unsure }, "etcd write failed; retrying");
        await sleep(delay, this.lifetime.signal);
        continue;
      }
      this.refusing = false;
      return this.settle(write, id, res);
    }
  }

  /** The transaction for a write, and the id a created backend carries. */
  private transaction(write: SharedWrite): { request: ITxnRequest; id: string | undefined } {
    const key = (kind: Kind) => Buffer.from(this.prefix + keyOf(kind, write.address));
    const backendKey = key("backends");
    const known = this.mirror.backend(write.address);
    const id = write.basis === "absent" ? (write.backend ? randomUUID() : undefined) : known?.id;
    const success: IRequestOp[] = [];
    const set = (k: Buffer, value: string | null | undefined) => {
      if (value === undefined) return;
      success.push(value === null ? { request_delete_range: { key: k } } : { request_put: { key: k, value: Buffer.from(value) } });
    };
    const values = encoded(write, id);
    for (const kind of KINDS) set(key(kind), values[kind]);
    const compare: ICompare[] = [];
    if (write.basis === "absent") compare.push({ key: backendKey, target: "Create", result: "Equal", create_revision: 0 });
    if (write.basis === "present") {
      if (!known) throw new Error(`no api backend ${write.address.key} known to base the change on`);
      compare.push({ key: backendKey, target: "Create", result: "Equal", create_revision: known.createRevision });
    }
    // When the basis fails, the backend's key as it is now tells how.
    return { request: { compare, success, failure: [{ request_range: { key: backendKey } }] }, id };
  }

  /** Brings the mirror up to date with a transaction's answer and says how it ended. */
  private settle(write: SharedWrite, id: string | undefined, res: ITxnResponse): "done" | "stale" {
    const revision = Number(res.header.revision);
    if (res.succeeded) {
      this.applyOwn(write, id, revision, this.mirror.backend(write.address)?.createRevision ?? revision);
      this.onChange(this.mirror.state());
      return "done";
    }
    const current = res.responses[0]?.response_range?.kvs[0];
    const backendKey = keyOf("backends", write.address);
    if (current) {
      const kv: MirroredKeyValue = {
        key: backendKey,
        value: current.value.toString("utf8"),
        createRevision: Number(current.create_revision),
        modRevision: Number(current.mod_revision),
      };
      this.mirror.put(kv);
      // An earlier attempt of this very create committed (its answer was lost): done, at
      // the revision it committed at.
      if (write.basis === "absent" && id !== undefined && this.mirror.backend(write.address)?.id === id) {
        this.applyOwn({ ...write, backend: undefined }, id, kv.createRevision, kv.createRevision);
        this.onChange(this.mirror.state());
        return "done";
      }
    } else {
      this.mirror.delete(backendKey, revision);
    }
    this.onChange(this.mirror.state());
    return "stale";
  }

  /** A committed write's keys into the mirror, at the revision it committed at. */
  private applyOwn(write: SharedWrite, id: string | undefined, revision: number, createRevision: number): void {
    const apply = (kind: Kind, value: string | null | undefined) => {
      if (value === undefined) return;
      const key = keyOf(kind, write.address);
      if (value === null) this.mirror.delete(key, revision);
      else this.mirror.put({ key, value, createRevision: kind === "backends" && write.basis === "absent" ? revision : createRevision, modRevision: revision });
    };
    const values = encoded(write, id);
    for (const kind of KINDS) apply(kind, values[kind]);
  }

  /** etcd refused the change itself (permission denied, say): nothing was changed. */
  private refused(write: SharedWrite, err: unknown): StoreUnavailableError {
    this.refusals.warn("write", { store: "etcd", backend: write.address.key, err: etcdErrorText(err) }, "state store etcd: api change refused");
    return new StoreUnavailableError(`state store etcd refused the change: ${etcdErrorText(err)}`, { cause: err });
  }

  /** etcd never received the change: nothing was changed. Logged once per outage (the follower logs the outage itself). */
  private unreachable(write: SharedWrite, err: unknown): StoreUnavailableError {
    if (!this.refusing) {
      this.refusing = true;
      this.log.warn({ store: "etcd", backend: write.address.key, err: etcdErrorText(err) }, "state store etcd: api change refused");
    }
    return new StoreUnavailableError(`state store etcd unreachable: ${etcdErrorText(err)}`, { cause: err });
  }

  /** The change was sent and etcd never said how it ended. Each is logged: which changes are in doubt matters. */
  private unknown(write: SharedWrite, err: unknown): StoreOutcomeUnknownError {
    this.log.warn({ store: "etcd", backend: write.address.key, err: etcdErrorText(err) }, "state store etcd: api change outcome unknown");
    return new StoreOutcomeUnknownError(
      `state store etcd did not answer whether it saved the change (${etcdErrorText(err)}): it was sent and may still apply; ` +
        `once etcd answers again, GET /backends/${write.address.key} on any replica shows what etcd holds`,
      { cause: err },
    );
  }
}

/** The value a write gives each key: text to put, null to delete, undefined to leave alone. */
function encoded(write: SharedWrite, id: string | undefined): Record<Kind, string | null | undefined> {
  const { backend, weight, state } = write;
  return {
    backends: backend === undefined || backend === null ? backend : encodeBackend(backend, id),
    weights: weight === undefined || weight === null ? weight : encodeWeight(weight),
    states: state === undefined || state === null ? state : encodeState(state),
  };
}
