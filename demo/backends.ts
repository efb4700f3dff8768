// Three tiny demo backends for `make run`, each answering with its own name: over HTTP
// (curl localhost:8080) or, to a client that sends nothing (nc localhost 8080), as a line.
import net from "node:net";

const HTTP_REQUEST = /^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) /;
const ports = (process.env.DEMO_PORTS ?? "9001,9002,9003").split(",").map(Number);

ports.forEach((port, i) => {
  const name = `backend-${i + 1}`;
  const greeting = `Hello from ${name} (127.0.0.1:${port})\n`;
  net
    .createServer((socket) => {
      const quiet = setTimeout(() => socket.end(greeting), 300);
      socket.once("data", (chunk) => {
        clearTimeout(quiet);
        if (HTTP_REQUEST.test(chunk.toString("latin1", 0, 8))) {
          socket.end(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${greeting.length}\r\nConnection: close\r\n\r\n${greeting}`);
        } else {
          socket.end(`${name} got ${chunk.length} bytes\n`);
        }
      });
      socket.on("error", () => socket.destroy());
    })
    .listen(port, "127.0.0.1", () => console.log(`demo ${name} listening on 127.0.0.1:${port}`));
});
