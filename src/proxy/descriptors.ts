import { readdirSync, readFileSync } from "node:fs";

/** Descriptors kept back for everything but proxied connections: API, probes, discovery, logs. */
const RESERVED = 64;

/**
 * How many proxied connections this process can hold before it runs out of file
 * descriptors (each takes two: client and backend), like HAProxy deriving maxconn from
 * ulimit -n. Refusing past this is visible and counted; running into EMFILE is not,
 * because libuv quietly closes connections it cannot accept. Infinity where the limit
 * cannot be read (not Linux).
 */
export function descriptorConnectionCap(): number {
  try {
    const limits = readFileSync("/proc/self/limits", "utf8");
    const soft = /^Max open files\s+(\d+|unlimited)/m.exec(limits)?.[1];
    if (soft === undefined || soft === "unlimited") return Infinity;
    const inUse = readdirSync("/proc/self/fd").length;
    return Math.max(1, Math.floor((Number(soft) - inUse - RESERVED) / 2));
  } catch {
    return Infinity;
  }
}
