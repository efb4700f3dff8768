import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { parseHostPort } from "../pool/address.ts";
import { StateFile, StateFileError } from "./file.ts";

const root = mkdtempSync(path.join(tmpdir(), "gobalancer-state-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = () => path.join(root, `case-${++n}`, "state.json");

describe("StateFile", () => {
  it("reads a missing file as an empty state", async () => {
    assert.deepEqual(await new StateFile(fresh()).read(), { backends: [], weights: [], states: [] });
  });

  it("writes atomically, creating the directory, and reads back what it wrote", async () => {
    const file = fresh();
    const store = new StateFile(file);
    await store.write({
      backends: [{ address: parseHostPort("[0:0::1]:80"), weight: 3 }],
      weights: [{ address: parseHostPort("10.0.0.4:3000"), weight: 7 }],
    });
    const json = JSON.parse(readFileSync(file, "utf8"));
    assert.deepEqual(json, { version: 1, backends: [{ address: "[::1]:80", weight: 3 }], weights: [{ address: "10.0.0.4:3000", weight: 7 }] });
    // Only the file itself: the temporary file was renamed over it.
    assert.deepEqual(readdirSync(path.dirname(file)), ["state.json"]);
    const back = await store.read();
    assert.equal(back.backends[0]!.address.key, "[::1]:80");
    assert.equal(back.weights[0]!.weight, 7);
  });

  it("refuses a file that is not JSON, naming the file", async () => {
    const file = fresh();
    mkdirSync(path.dirname(file));
    writeFileSync(file, '{"version": 1, "backends": [');
    await assert.rejects(new StateFile(file).read(), (err: Error) => {
      assert.ok(err instanceof StateFileError);
      assert.match(err.message, new RegExp(`state file ${file} is corrupt: not valid JSON`));
      return true;
    });
  });

  it("refuses invalid entries, naming the field", async () => {
    const file = fresh();
    mkdirSync(path.dirname(file));
    for (const [content, problem] of [
      [{ version: 1, backends: [{ address: "10.0.0.1:0", weight: 1 }] }, /backends\[0\]\.address: port must be 1-65535/],
      [{ version: 1, weights: [{ address: "10.0.0.1:80", weight: 0 }] }, /weights\[0\]\.weight: must be an integer 1-1000/],
      [{ version: 4 }, /version: must be 1, 2 or 3/],
      [{ version: 3, backends: [{ address: "10.0.0.1:80", weight: 1, max_connections: -2 }] }, /backends\[0\]\.max_connections: must be a whole number/],
      [{ version: 3, backends: [{ address: "10.0.0.1:80", weight: 1, proxy_protocol: "v9" }] }, /backends\[0\]\.proxy_protocol: must be one of off, v1, v2/],
      [{ version: 2, states: [{ address: "10.0.0.1:80", state: "off" }] }, /states\[0\]\.state: must be one of ready, drain, maint/],
      [{ version: 1, extra: true }, /extra|unrecognized/i],
      [{ version: 1, backends: [{ address: "a:1", weight: 1 }], weights: [{ address: "A:1", weight: 2 }] }, /a:1 appears twice/],
      [[], /expected object/i],
    ] as const) {
      writeFileSync(file, JSON.stringify(content));
      await assert.rejects(new StateFile(file).read(), (err: Error) => {
        assert.ok(err instanceof StateFileError, String(err));
        assert.match(err.message, problem);
        assert.match(err.message, /fix or remove it/);
        return true;
      });
    }
  });

  it("keeps an API backend's options, as version 3 only when one is set", async () => {
    const file = fresh();
    const store = new StateFile(file);
    const plain = { address: parseHostPort("10.0.0.1:80"), weight: 2 };
    await store.write({ backends: [plain], weights: [] });
    assert.equal(JSON.parse(readFileSync(file, "utf8")).version, 1);
    const shaped = { address: parseHostPort("10.0.0.2:80"), weight: 1, maxConnections: 50, backup: true, proxyProtocol: "v2" as const };
    await store.write({ backends: [plain, shaped], weights: [] });
    const onDisk = JSON.parse(readFileSync(file, "utf8"));
    assert.equal(onDisk.version, 3);
    assert.deepEqual(onDisk.backends[1], { address: "10.0.0.2:80", weight: 1, max_connections: 50, backup: true, proxy_protocol: "v2" });
    const back = await store.read();
    assert.deepEqual(back.backends.map((b) => ({ ...b, address: b.address.key })), [
      { address: "10.0.0.1:80", weight: 2 },
      { address: "10.0.0.2:80", weight: 1, maxConnections: 50, backup: true, proxyProtocol: "v2" },
    ]);
  });

  it("refuses an unreadable path", async () => {
    const dir = path.dirname(fresh());
    mkdirSync(path.join(dir, "state.json"), { recursive: true });
    await assert.rejects(new StateFile(path.join(dir, "state.json")).read(), /cannot read state file .*state\.json: it is a directory/);
  });

  it("reports a failed write naming the file", async () => {
    const dir = path.dirname(fresh());
    mkdirSync(dir);
    writeFileSync(path.join(dir, "blocker"), "");
    const file = path.join(dir, "blocker", "state.json");
    await assert.rejects(new StateFile(file).write({ backends: [], weights: [] }), (err: Error) => {
      assert.ok(err instanceof StateFileError);
      assert.match(err.message, /cannot write state file .*blocker\/state\.json/);
      return true;
    });
  });
});
