// End-to-end: the data path runs on libuv handles or on net.Socket as `data_path` says,
// and falls back to net.Socket, saying so once, when this Node's handles are not as expected.
import assert from "node:assert/strict";
import net from "node:net";
import { networkInterfaces } from "node:os";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import { cleanup, REPO, request, startBalancer, startEchoBackend } from "./harness.ts";

afterEach(cleanup);

const WITHOUT_BINDINGS = path.join(REPO, "test", "fixtures", "without-handle-bindings.ts");

describe("data_path", () => {
  for (const [wanted, expected] of [["auto", "handles"], ["handles", "handles"], ["sockets", "sockets"]] as const) {
    it(`${wanted} runs on ${expected}`, async () => {
      const echo = await startEchoBackend();
      const lb = await startBalancer({ data_path: wanted, discovery: { backends: [{ address: echo.address }] } });
      const started = lb.logs.find((l) => l.msg === "gobalancer started")!;
      assert.equal(started.data_path, expected);
      assert.equal(await request(lb.port, "ping"), "ping");
      assert.equal(lb.logs.filter((l) => l.level >= 40).length, 0, "nothing to warn about");
    });
  }

  for (const wanted of ["auto", "handles"]) {
    for (const workers of [1, 2]) {
      it(`${wanted} falls back to net.Socket when the handle bindings are missing, said once (workers: ${workers})`, async () => {
        const echo = await startEchoBackend();
        const lb = await startBalancer(
          { data_path: wanted, workers, discovery: { backends: [{ address: echo.address }] } },
          { nodeArgs: ["--import", WITHOUT_BINDINGS] },
        );
        const warnings = lb.logs.filter((l) => l.level === 40);
        assert.equal(warnings.length, 1, JSON.stringify(warnings));
        assert.match(warnings[0]!.msg, /libuv handles unavailable on this Node: the data path runs on net\.Socket/);
        assert.match(String(warnings[0]!.reason), /tcp_wrap/);
        assert.equal(lb.logs.find((l) => l.msg === "gobalancer started")!.data_path, "sockets");
        for (let i = 0; i < 4; i++) assert.equal(await request(lb.port, `ping ${i}`), `ping ${i}`);
      });
    }
  }
});

/** Whether this machine has IPv6 on loopback (containers may not). */
const hasIpv6Loopback = Object.values(networkInterfaces()).some((list) => list?.some((a) => a.address === "::1"));

describe("listening", () => {
  for (const dataPath of ["handles", "sockets"] as const) {
    it(`":PORT" listens on every interface, IPv4 and IPv6 (${dataPath})`, async () => {
      const echo = await startEchoBackend();
      const lb = await startBalancer({ data_path: dataPath, listen: ":0", discovery: { backends: [{ address: echo.address }] } });
      assert.equal(await request(lb.port, "v4", "127.0.0.1"), "v4");
      if (hasIpv6Loopback) assert.equal(await request(lb.port, "v6", "::1"), "v6");
    });

    it(`a host name is looked up, and a taken port is named (${dataPath})`, async () => {
      const echo = await startEchoBackend();
      const lb = await startBalancer({ data_path: dataPath, listen: "localhost:0", discovery: { backends: [{ address: echo.address }] } });
      const host = (lb.logs.find((l) => l.msg === "gobalancer started")!.listen as string).replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
      assert.ok(net.isIP(host), `bound to an address, not a name: ${host}`);
      assert.equal(await request(lb.port, "named", host), "named");
      const taken = await startBalancer(
        { data_path: dataPath, listen: `${host.includes(":") ? `[${host}]` : host}:${lb.port}`, discovery: { backends: [] } },
        { noWait: true },
      );
      assert.equal((await taken.exited).code, 1);
      assert.match(taken.logs.find((l) => l.level >= 50)!.msg, /address already in use/);
    });
  }
});
