import type { Logger } from "pino";
import type { Config } from "../config/schema.ts";
import { EtcdStore } from "./etcd.ts";
import { StateFile } from "./file.ts";
import type { SharedStore, StateStore } from "./store.ts";

/** The store `state_store` names: this replica's state file (the default), or etcd shared by replicas. */
export function openStateStore(config: Pick<Config, "stateFile" | "stateStore">, logger: Logger): StateStore | SharedStore {
  if (config.stateStore.type === "etcd") return new EtcdStore({ ...config.stateStore.etcd, logger });
  return new StateFile(config.stateFile);
}
