import type { AddressInfo } from "node:net";
import type { AccessLogOptions } from "../log/access-log.ts";
import type { LogOptions } from "../log/logger.ts";
import type { CounterBuffers } from "../pool/counters.ts";
import type { BackendView, Snapshot } from "../pool/pool.ts";
import type { HostPort } from "../pool/address.ts";
import type { DataPlaneOptions, PlaneSettings } from "./data-plane.ts";

/** The plain-data part of DataPlaneOptions, as it crosses to a thread. */
export type WorkerPlaneOptions = Omit<DataPlaneOptions, "counters" | "logger" | "accessLog" | "threaded" | "onDialFailure">;

/** workerData of a data-plane thread. */
export interface WorkerInit {
  thread: number;
  options: WorkerPlaneOptions;
  counters: CounterBuffers;
  log: LogOptions;
  /** Each thread writes its own access-log lines. */
  accessLog: AccessLogOptions;
}

export type ToWorker =
  | { type: "snapshot"; snapshot: Snapshot }
  | { type: "listen" }
  | { type: "stopAccepting" }
  | { type: "drain"; timeoutMs: number }
  /** A reload: new settings, the access log opened again (or anew), the log level. */
  | { type: "configure"; settings: PlaneSettings; accessLog: AccessLogOptions; logLevel: LogOptions["level"] }
  /** A reload moved `listen`: bind it beside the current listener, then close or drop one. */
  | { type: "addListener"; listen: HostPort }
  | { type: "closeOldListener" }
  | { type: "dropNewListener" };

export type ToMain =
  | { type: "listening"; address: AddressInfo }
  | { type: "listenFailed"; message: string }
  | { type: "dialFailed"; backend: BackendView; reason: string }
  | { type: "stoppedAccepting" }
  | { type: "snapshotApplied"; version: number }
  | { type: "drained"; forced: number }
  | { type: "configured" }
  | { type: "listenerAdded"; address: AddressInfo }
  | { type: "addListenerFailed"; message: string }
  | { type: "listenerClosed" };
