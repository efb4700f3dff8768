// End-to-end: however a proxied connection ends, both of its sockets are closed and its
// counts given back.
import { afterEach, describe, it } from "node:test";
import { cleanup, connect, startBalancer, startEchoBackend, waitFor } from "./harness.ts";

afterEach(cleanup);

describe("connection endings", () => {
  it("a client reset closes the backend connection", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer({ discovery: { type: "static", backends: [{ address: echo.address }] } });
    const clients = await Promise.all(Array.from({ length: 40 }, () => connect(lb.port)));
    await waitFor(() => echo.open() === 40, 5000, "40 backend connections");
    for (const c of clients) c.resetAndDestroy();
    await waitFor(() => echo.open() === 0, 3000, "the backend connections to close");
  });
});
