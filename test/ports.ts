/**
 * Ports for servers a test starts by number (etcd members, a listener moved by reload).
 * They come from below the kernel's ephemeral range: a port in that range that was free a
 * moment ago can be taken by any outgoing connection, or port-0 listener, of the suites
 * running alongside before the server binds it.
 */
import { readFileSync } from "node:fs";
import net from "node:net";

const given = new Set<number>();

function lowestEphemeral(): number {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

const RANGE_LOW = 20_000;
const RANGE_HIGH = Math.max(RANGE_LOW + 1000, lowestEphemeral());

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A port on 127.0.0.1 that nobody holds now and that this process has not handed out before. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = RANGE_LOW + Math.floor(Math.random() * (RANGE_HIGH - RANGE_LOW));
    if (given.has(port) || !(await bindable(port))) continue;
    given.add(port);
    return port;
  }
  throw new Error(`no free port on 127.0.0.1 between ${RANGE_LOW} and ${RANGE_HIGH}`);
}

/** `n` different free ports. */
export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  return ports;
}
