/**
 * Connection churn through a balancer: `concurrency` clients at a time, each doing one of
 * the things real clients do at random (finish normally, reset, half-close and wait,
 * read slowly, vanish mid-stream), against echo backends that themselves reset some
 * connections. Bounded: no connection starts after `durationMs`, and every connection
 * is cut by its client after CONNECTION_LIFE_MS at the latest. Only 127.0.0.1.
 */
import net from "node:net";

/** What a client does with its connection. */
export const BEHAVIOURS = ["normal", "reset", "half_close", "slow_reader", "vanish"] as const;
export type Behaviour = (typeof BEHAVIOURS)[number];

/** No client keeps a connection longer than this. */
const CONNECTION_LIFE_MS = 5000;

export interface ChurnOptions {
  port: number;
  durationMs: number;
  concurrency: number;
  random: () => number;
}

export interface ChurnResult {
  started: number;
  byBehaviour: Record<Behaviour, number>;
  /** Normal connections whose echo came back wrong or short: must stay 0. */
  corrupted: number;
  /** Connections cut by CONNECTION_LIFE_MS rather than ending by themselves. */
  cut: number;
}

export async function churn(opts: ChurnOptions): Promise<ChurnResult> {
  const result: ChurnResult = {
    started: 0,
    byBehaviour: Object.fromEntries(BEHAVIOURS.map((b) => [b, 0])) as Record<Behaviour, number>,
    corrupted: 0,
    cut: 0,
  };
  const deadline = performance.now() + opts.durationMs;
  const lane = async () => {
    while (performance.now() < deadline) {
      const behaviour = BEHAVIOURS[Math.floor(opts.random() * BEHAVIOURS.length)]!;
      result.started++;
      result.byBehaviour[behaviour]++;
      await oneConnection(opts.port, behaviour, opts.random, result);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, lane));
  return result;
}

function oneConnection(port: number, behaviour: Behaviour, random: () => number, result: ChurnResult): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const payload = Buffer.alloc(behaviour === "slow_reader" ? 1 << 20 : 1 + Math.floor(random() * 8192), 0x61 + Math.floor(random() * 26));
    let received = 0;
    let ended = false;
    const life = setTimeout(() => {
      result.cut++;
      socket.destroy();
    }, CONNECTION_LIFE_MS);
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => (received += chunk.length));
    socket.on("end", () => {
      ended = true;
      socket.end();
    });
    socket.on("close", () => {
      clearTimeout(life);
      // A backend that reset the connection is part of the churn, not corruption.
      if (behaviour === "normal" && ended && received !== payload.length && received !== 0) result.corrupted++;
      resolve();
    });
    socket.on("connect", () => {
      const later = (fn: () => void) => setTimeout(fn, Math.floor(random() * 200));
      switch (behaviour) {
        case "normal":
          socket.end(payload);
          break;
        case "reset":
          socket.write(payload);
          later(() => socket.resetAndDestroy());
          break;
        case "half_close":
          later(() => socket.end(payload));
          break;
        case "slow_reader":
          // 1 MiB echoed back to a client that reads nothing for a while: back-pressure.
          socket.pause();
          socket.end(payload);
          setTimeout(() => socket.resume(), 500 + Math.floor(random() * 1000));
          break;
        case "vanish":
          socket.write(payload);
          later(() => socket.destroy());
          break;
      }
    });
  });
}

/**
 * An echo backend on 127.0.0.1 that resets one connection in `resetShare` after a
 * short while, as real backends sometimes do.
 */
export async function churnBackend(random: () => number, resetShare = 0.05): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => {});
    socket.pipe(socket);
    if (random() < resetShare) setTimeout(() => socket.resetAndDestroy(), Math.floor(random() * 300));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}
