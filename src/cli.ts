#!/usr/bin/env node
import { parseArgs } from "node:util";
import { Balancer } from "./balancer.ts";
import { ConfigError, loadConfigFile } from "./config/load.ts";
import { createLogger, type Logger } from "./log/logger.ts";
import { packageVersion } from "./version.ts";

const DEFAULT_CONFIG = "config/config.yaml";

const HELP = `gobalancer - a TCP (layer 4) load balancer

Usage:
  gobalancer [--config FILE]            run the balancer (default config: ${DEFAULT_CONFIG})
  gobalancer validate [--config FILE]   check a config file and list every problem
  gobalancer --version                  print the version
  gobalancer --help                     print this help

Signals: SIGTERM or SIGINT drains connections (up to timeouts.shutdown) and exits 0;
a second signal exits at once.
Exit codes: 0 clean shutdown or valid config, 1 bad config or start-up failure, 2 bad usage.
`;


async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: "string", short: "c" },
        version: { type: "boolean", short: "v" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    process.stderr.write(`gobalancer: ${(err as Error).message}\nRun "gobalancer --help" for usage.\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`gobalancer ${packageVersion()} (node ${process.version})\n`);
    return 0;
  }
  const command = positionals[0] ?? "run";
  if (positionals.length > 1 || (command !== "run" && command !== "validate")) {
    process.stderr.write(`gobalancer: unknown command "${positionals.join(" ")}"\nRun "gobalancer --help" for usage.\n`);
    return 2;
  }
  const file = values.config ?? DEFAULT_CONFIG;
  return command === "validate" ? validate(file) : run(file);
}

async function validate(file: string): Promise<number> {
  try {
    await loadConfigFile(file);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${file}: invalid config\n${err.problems.map((p) => `  ${p}\n`).join("")}`);
    return 1;
  }
  process.stdout.write(`${file}: config is valid\n`);
  return 0;
}

async function run(file: string): Promise<number> {
  let config;
  try {
    config = await loadConfigFile(file);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // No config, so no configured logger yet: one JSON line in the same shape.
    createLogger({ level: "info", format: "json" }).error({ config: file, problems: err.problems }, err.message);
    return 1;
  }
  const log = createLogger(config.log);
  let stopped: Promise<number>;
  try {
    const balancer = new Balancer(
      config,
      log,
      (err) => {
        log.error({ err: err.message }, "fatal: exiting");
        process.exit(1);
      },
      file,
    );
    // Handlers go in before start-up: a supervisor may signal as soon as it reads the
    // "gobalancer started" line, before the code after start() has run.
    stopped = waitForSignals(balancer, log);
    await balancer.start();
  } catch (err) {
    log.error({ config: file }, `start failed: ${(err as Error).message}`);
    return 1;
  }
  return stopped;
}

/**
 * First SIGTERM/SIGINT drains and resolves 0; a second one exits at once. SIGHUP (what
 * systemd's ExecReload and logrotate send) reloads the config file; by default it would
 * end the process.
 */
function waitForSignals(balancer: Balancer, log: Logger): Promise<number> {
  process.on("SIGHUP", () => {
    log.info({ signal: "SIGHUP" }, "signal received: reloading the config");
    balancer.reload().catch((err: unknown) => log.error({ err: (err as Error).message }, "reload failed"));
  });
  return new Promise((resolve) => {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        log.warn({ signal }, "second signal: exiting without waiting for connections");
        process.exit(1);
      }
      signalled = true;
      log.info({ signal }, "signal received");
      balancer.shutdown().then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ err: (err as Error).message }, "shutdown failed");
          resolve(1);
        },
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // A bug, not a user error: keep the stack.
    process.stderr.write(`gobalancer: internal error: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(70);
  },
);
