// End-to-end: the data path runs on libuv handles or on net.Socket as `data_path` says,
// and falls back to net.Socket, saying so once, when this Node's handles are not as expected.
import assert from "node:assert/strict";
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
