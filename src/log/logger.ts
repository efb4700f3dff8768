import pino, { type Logger } from "pino";

export type { Logger };

export interface LogOptions {
  level: "debug" | "info" | "warn" | "error";
  format: "json" | "pretty";
}

/**
 * The process logger. JSON lines go to stdout synchronously: the data path logs nothing
 * per connection above debug, so the volume is small, and nothing is lost at exit.
 */
export function createLogger(opts: LogOptions): Logger {
  const base = { level: opts.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (opts.format === "pretty") {
    return pino({ ...base, transport: { target: "pino-pretty", options: { colorize: process.stdout.isTTY, sync: true } } });
  }
  return pino(base, pino.destination({ dest: 1, sync: true }));
}
