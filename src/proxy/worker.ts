/**
 * Entry point of a data-plane thread. It owns one reusePort listener and proxies the
 * connections the kernel hands it; the main thread sends it pool snapshots and control
 * messages, and it reports dial failures back for passive health checking.
 */
import { parentPort, workerData } from "node:worker_threads";
import { openAccessLog } from "../log/access-log.ts";
import { createLogger } from "../log/logger.ts";
import { CounterView } from "../pool/counters.ts";
import { DataPlane } from "./data-plane.ts";
import type { ToMain, ToWorker, WorkerInit } from "./thread-messages.ts";

const init = workerData as WorkerInit;
const port = parentPort!;
const logger = createLogger(init.log).child({ thread: init.thread });
const send = (msg: ToMain) => port.postMessage(msg);

const plane = new DataPlane({
  ...init.options,
  counters: new CounterView(init.counters, init.thread),
  logger,
  accessLog: openAccessLog(init.accessLog, logger),
  threaded: true,
  onDialFailure: (backend, reason) => send({ type: "dialFailed", backend, reason }),
});

port.on("message", (msg: ToWorker) => {
  switch (msg.type) {
    case "snapshot":
      plane.setSnapshot(msg.snapshot);
      send({ type: "snapshotApplied", version: msg.snapshot.version });
      break;
    case "listen":
      plane.listen().then(
        (address) => {
          logger.debug({ listen: `${address.address}:${address.port}` }, "data-plane thread listening");
          send({ type: "listening", address });
        },
        (err: Error) => send({ type: "listenFailed", message: err.message }),
      );
      break;
    case "stopAccepting":
      plane.stopAccepting();
      send({ type: "stoppedAccepting" });
      break;
    case "configure":
      logger.level = msg.logLevel;
      plane.configure(msg.settings, openAccessLog(msg.accessLog, logger));
      send({ type: "configured" });
      break;
    case "addListener":
      plane.addListener(msg.listen).then(
        (address) => send({ type: "listenerAdded", address }),
        (err: Error) => send({ type: "addListenerFailed", message: err.message }),
      );
      break;
    case "closeOldListener":
      plane.closeOldListener();
      send({ type: "listenerClosed" });
      break;
    case "dropNewListener":
      plane.dropNewListener();
      send({ type: "listenerClosed" });
      break;
    case "drain":
      void plane.drain(msg.timeoutMs).then((forced) => {
        send({ type: "drained", forced });
        port.close(); // nothing left to do: let the thread end
      });
      break;
  }
});
