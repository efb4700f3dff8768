import type { AddressInfo } from "node:net";
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import type { AccessLogOptions } from "../log/access-log.ts";
import type { LogOptions } from "../log/logger.ts";
import type { HostPort } from "../pool/address.ts";
import type { PlaneSettings } from "./data-plane.ts";
import { GLOBAL_ACTIVE, type CounterBuffers } from "../pool/counters.ts";
import type { BackendView, Snapshot } from "../pool/pool.ts";
import type { ToMain, ToWorker, WorkerInit, WorkerPlaneOptions } from "./thread-messages.ts";

// Built output runs worker.js; tests that import the sources run worker.ts.
const WORKER_URL = new URL(import.meta.url.endsWith(".ts") ? "./worker.ts" : "./worker.js", import.meta.url);

export interface ThreadedDataPlaneOptions {
  threads: number;
  options: WorkerPlaneOptions;
  counters: CounterBuffers;
  log: LogOptions;
  accessLog: AccessLogOptions;
  logger: Logger;
  onDialFailure?: (backend: BackendView, reason: string) => void;
  /** A thread died unexpectedly: the process cannot account its connections any more. */
  onThreadCrash: (err: Error) => void;
}

/**
 * N data-plane threads, each with its own reusePort listener on the same address, so the
 * kernel spreads new connections across them and no thread serialises accepts for the
 * others. The main thread keeps config, health checking, discovery and the API, and
 * posts every pool snapshot to each thread; counters are shared memory (counters.ts).
 */
export class ThreadedDataPlane {
  private readonly opts: ThreadedDataPlaneOptions;
  private readonly workers: Worker[] = [];
  private readonly global: Int32Array;
  private snapshot: Snapshot | undefined;
  /** The snapshot version each thread has confirmed, by thread index. */
  private readonly appliedVersions: number[] = [];
  private appliedWaiters: Array<{ version: number; resolve: () => void }> = [];
  private stopping = false;

  constructor(opts: ThreadedDataPlaneOptions) {
    this.opts = opts;
    this.global = new Int32Array(opts.counters.global);
  }

  setSnapshot(snapshot: Snapshot): void {
    this.snapshot = snapshot;
    for (const w of this.workers) this.post(w, { type: "snapshot", snapshot });
  }

  /** Resolves once every thread routes by the latest snapshot (or a newer one). */
  snapshotApplied(): Promise<void> {
    const version = this.snapshot?.version ?? 0;
    if (this.minApplied() >= version) return Promise.resolve();
    return new Promise((resolve) => this.appliedWaiters.push({ version, resolve }));
  }

  private minApplied(): number {
    if (this.workers.length === 0 || this.stopping) return Infinity; // nothing routes: nothing to wait for
    let min = Infinity;
    for (let i = 0; i < this.workers.length; i++) min = Math.min(min, this.appliedVersions[i] ?? 0);
    return min;
  }

  private onApplied(thread: number, version: number): void {
    this.appliedVersions[thread] = Math.max(this.appliedVersions[thread] ?? 0, version);
    const min = this.minApplied();
    if (this.appliedWaiters.length === 0) return;
    const still: typeof this.appliedWaiters = [];
    for (const w of this.appliedWaiters) (w.version <= min ? w.resolve() : still.push(w));
    this.appliedWaiters = still;
  }

  /**
   * Starts the threads. The first binds the configured address (port 0 included), the
   * others then bind the port it got, so all share one port.
   */
  async listen(): Promise<AddressInfo> {
    const first = await this.startThread(0, this.opts.options);
    const bound = { ...this.opts.options, listen: { ...this.opts.options.listen, port: first.port } };
    await Promise.all(Array.from({ length: this.opts.threads - 1 }, (_, i) => this.startThread(i + 1, bound)));
    return first;
  }

  get activeConnections(): number {
    return Atomics.load(this.global, GLOBAL_ACTIVE);
  }

  /** Resolves once every thread has closed its listener. */
  async stopAccepting(): Promise<void> {
    await Promise.all(this.workers.map((w) => this.request(w, { type: "stopAccepting" }, ["stoppedAccepting"])));
  }

  /** Every thread takes a reload's settings; resolves once all have. */
  async configure(settings: PlaneSettings, accessLog: AccessLogOptions, logLevel: LogOptions["level"]): Promise<void> {
    await Promise.all(this.workers.map((w) => this.request(w, { type: "configure", settings, accessLog, logLevel }, ["configured"])));
  }

  /**
   * Every thread listens on `listen` too (the first binds it, the others the port it got);
   * the old listeners keep accepting until closeOldListener(). If a thread cannot bind,
   * those that did drop the new listener again and this rejects.
   */
  async addListener(listen: HostPort): Promise<AddressInfo> {
    const [first, ...rest] = this.workers;
    const added: Worker[] = [];
    try {
      const address = await this.addOne(first!, listen);
      added.push(first!);
      const bound = { ...listen, port: address.port };
      await Promise.all(rest.map(async (w) => (await this.addOne(w, bound), added.push(w))));
      return address;
    } catch (err) {
      await Promise.all(added.map((w) => this.request(w, { type: "dropNewListener" }, ["listenerClosed"])));
      throw err;
    }
  }

  async closeOldListener(): Promise<void> {
    await Promise.all(this.workers.map((w) => this.request(w, { type: "closeOldListener" }, ["listenerClosed"])));
  }

  private async addOne(w: Worker, listen: HostPort): Promise<AddressInfo> {
    const reply = await this.request(w, { type: "addListener", listen }, ["listenerAdded", "addListenerFailed"]);
    if (reply?.type === "listenerAdded") return reply.address;
    throw new Error(reply?.type === "addListenerFailed" ? reply.message : "data-plane thread exited");
  }

  /** Posts `msg` and resolves with the first reply of one of `replies` (undefined if the thread exits first). */
  private request(w: Worker, msg: ToWorker, replies: ReadonlyArray<ToMain["type"]>): Promise<ToMain | undefined> {
    return new Promise((resolve) => {
      const done = (reply: ToMain | undefined) => {
        w.off("message", onMessage);
        w.off("exit", onExit);
        resolve(reply);
      };
      const onMessage = (reply: ToMain) => {
        if (replies.includes(reply.type)) done(reply);
      };
      const onExit = () => done(undefined);
      w.on("message", onMessage);
      w.on("exit", onExit);
      this.post(w, msg);
    });
  }

  /** Drains every thread in parallel; resolves with how many connections were cut. */
  async drain(timeoutMs: number): Promise<number> {
    this.stopping = true;
    this.onApplied(0, 0); // release anyone waiting on threads that will route no more
    const results = await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<number>((resolve) => {
            const onMessage = (msg: ToMain) => {
              if (msg.type === "drained") resolve(msg.forced);
            };
            w.on("message", onMessage);
            w.once("exit", () => resolve(0));
            this.post(w, { type: "drain", timeoutMs });
          }),
      ),
    );
    await Promise.all(this.workers.map((w) => w.terminate()));
    return results.reduce((a, b) => a + b, 0);
  }

  private startThread(thread: number, options: WorkerPlaneOptions): Promise<AddressInfo> {
    const init: WorkerInit = { thread, options, counters: this.opts.counters, log: this.opts.log, accessLog: this.opts.accessLog };
    const worker = new Worker(WORKER_URL, { workerData: init, name: `data-plane-${thread}` });
    this.workers.push(worker);
    if (this.snapshot) this.post(worker, { type: "snapshot", snapshot: this.snapshot });
    return new Promise((resolve, reject) => {
      worker.on("message", (msg: ToMain) => {
        switch (msg.type) {
          case "listening":
            resolve(msg.address);
            break;
          case "listenFailed":
            reject(new Error(msg.message));
            break;
          case "dialFailed":
            this.opts.onDialFailure?.(msg.backend, msg.reason);
            break;
          case "snapshotApplied":
            this.onApplied(thread, msg.version);
            break;
        }
      });
      worker.on("error", (err) => {
        reject(err);
        if (!this.stopping) this.opts.onThreadCrash(err);
      });
      worker.on("exit", (code) => {
        if (!this.stopping && code !== 0) this.opts.onThreadCrash(new Error(`data-plane thread ${thread} exited with code ${code}`));
      });
      this.post(worker, { type: "listen" });
    });
  }

  private post(worker: Worker, msg: ToWorker): void {
    worker.postMessage(msg);
  }
}
