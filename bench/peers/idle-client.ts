/**
 * Opens COUNT TCP connections to 127.0.0.1:PORT, at most BATCH connecting at once, and
 * holds them without sending anything. Prints one JSON line when done opening
 * ({"held", "failed", "ms"}), then holds until stdin closes or HOLD_MS passes, closes
 * everything, prints a last JSON line ({"dropped"}) and exits. Run by the peer benchmark
 * with a raised descriptor limit; it never talks to anything but the port it is given.
 *
 *   node bench/peers/idle-client.ts PORT COUNT [BATCH=200] [OPEN_MS=60000] [HOLD_MS=120000]
 */
import net from "node:net";

const [port, count, batch = 200, openMs = 60_000, holdMs = 120_000] = process.argv.slice(2).map(Number);
if (!port || !count || !(port > 0 && port < 65536)) {
  process.stderr.write("usage: idle-client.ts PORT COUNT [BATCH] [OPEN_MS] [HOLD_MS]\n");
  process.exit(2);
}

const sockets = new Set<net.Socket>();
const started = Date.now();
let launched = 0;
let pending = 0;
let held = 0;
let failed = 0;
let dropped = 0;
let opening = true;

function launch(): void {
  while (opening && pending < batch && launched < count && Date.now() - started < openMs) {
    launched++;
    pending++;
    const socket = net.connect({ host: "127.0.0.1", port });
    sockets.add(socket);
    let connected = false;
    socket.once("connect", () => {
      connected = true;
      held++;
      pending--;
      launch();
    });
    socket.on("error", () => {});
    socket.once("close", () => {
      sockets.delete(socket);
      if (connected) held--;
      if (!connected) {
        pending--;
        failed++;
        launch();
      } else {
        dropped++;
      }
      finishOpening();
    });
  }
  finishOpening();
}

function finishOpening(): void {
  if (!opening) return;
  const outOfTime = Date.now() - started >= openMs;
  if (!outOfTime && (pending > 0 || launched < count)) return;
  opening = false;
  dropped = 0;
  process.stdout.write(`${JSON.stringify({ held, failed, ms: Date.now() - started })}\n`);
  const holdTimer = setTimeout(release, holdMs);
  process.stdin.once("end", release);
  process.stdin.once("close", release);
  process.stdin.resume();
  function release(): void {
    clearTimeout(holdTimer);
    process.stdout.write(`${JSON.stringify({ dropped })}\n`);
    for (const s of sockets) s.destroy();
    process.exit(0);
  }
}

// Connects that never complete must not stall opening past its deadline.
setTimeout(() => {
  for (const s of sockets) if (s.connecting) s.destroy();
  finishOpening();
}, openMs).unref();
launch();
