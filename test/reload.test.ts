// End-to-end: reloading the config (SIGHUP, POST /reload) as systemd's ExecReload and
// logrotate do it, with connections open throughout.
import assert from "node:assert/strict";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterEach, describe, it } from "node:test";
import {
  cleanup,
  connect,
  echoTransfer,
  request,
  roundTrip,
  startBalancer,
  startEchoBackend,
  startNamedBackend,
  TEST_DATA_PATH,
  waitFor,
  type TestServer,
} from "./harness.ts";
import { freePort } from "./ports.ts";
import { accepts, postReload, rewrite, sighup } from "./reloading.ts";

afterEach(cleanup);

function staticOf(...servers: Array<TestServer | { address: string; weight?: number }>): Record<string, unknown> {
  return { discovery: { type: "static", backends: servers.map((s) => ({ address: s.address, ...("weight" in s ? { weight: s.weight } : {}) })) } };
}

describe("reload", () => {
  for (const workers of [1, 2]) {
    it(`SIGHUP applies a changed file (workers: ${workers}): the new backend serves the next connection, the removed one finishes its open connection, the algorithm changes`, async () => {
      const [old, b, c] = await Promise.all([startEchoBackend(), startNamedBackend("b"), startNamedBackend("c")]);
      const lb = await startBalancer({ workers, ...staticOf(old) });
      const open = await connect(lb.port);
      await roundTrip(open);

      rewrite(lb, { workers, algorithm: "weighted", ...staticOf({ address: b.address, weight: 3 }, { address: c.address, weight: 1 }) });
      await sighup(lb);
      const reloaded = lb.logs.find((l) => l.msg === "config reloaded")!;
      assert.deepEqual(reloaded.applied, ["algorithm", "discovery"]);

      const seen: string[] = [];
      for (let i = 0; i < 8; i++) seen.push((await request(lb.port)).trim());
      // Smooth weighted round robin over 3:1, from the first connection after the reload
      // (each thread runs its own sequence: with two, only the proportions are certain).
      if (workers === 1) assert.deepEqual(seen, ["b", "b", "c", "b", "b", "b", "c", "b"]);
      else assert.ok(seen.every((x) => x === "b" || x === "c") && seen.filter((x) => x === "c").length >= 1 && seen.filter((x) => x === "b").length >= 5, seen.join(""));
      // Its open connection goes on.
      assert.equal(await roundTrip(open, "still here"), "still here");
      open.destroy();
      const listed = (await (await fetch(`${lb.api}/backends`)).json()) as Array<{ address: string }>;
      assert.deepEqual(listed.map((x) => x.address).sort(), [b.address, c.address].sort());
      assert.ok(!lb.logs.some((l) => l.level >= 50), JSON.stringify(lb.logs.filter((l) => l.level >= 50)));
    });
  }

  it("an open 100 MB transfer completes intact across three reloads", async () => {
    const [echo, other] = await Promise.all([startEchoBackend(), startEchoBackend()]);
    const lb = await startBalancer(staticOf(echo));
    const variants = [
      { algorithm: "least_connections", ...staticOf(echo, other) },
      { algorithm: "round_robin", retries: 1, timeouts: { idle: "5m" }, ...staticOf(other) },
      { algorithm: "ip_hash", ...staticOf(echo, other) },
    ];
    let written = 0; // mebibytes handed to the socket so far
    let reloaded = 0;
    let finished = false;
    const holds = [25, 50, 75];
    const transfer = echoTransfer(lb.port, 100, async (i) => {
      written = i;
      // The writer holds at 25, 50 and 75 MiB until the next reload is acknowledged, so
      // each lands with bytes in flight; a reload that waited for open connections would not.
      const hold = holds.indexOf(i);
      if (hold >= 0) await waitFor(() => reloaded > hold, 30_000, `reload ${hold + 1}`);
    }).finally(() => (finished = true));
    for (const variant of variants) {
      await waitFor(() => written > 0, 10_000, "the transfer under way");
      rewrite(lb, variant);
      await sighup(lb);
      reloaded++;
      assert.ok(!finished, `reload ${reloaded} acknowledged while the transfer ran (${written + 1} MiB of 100 written)`);
    }
    const { receivedBytes, intact } = await transfer;
    assert.equal(receivedBytes, 100 << 20);
    assert.ok(intact, "the bytes that came back are the bytes sent");
    assert.equal(lb.logs.filter((l) => l.msg === "config reloaded").length, 3);
  });

  it("an invalid file changes nothing: the errors are logged with their YAML paths, and POST /reload returns them", async () => {
    const a = await startNamedBackend("a");
    const lb = await startBalancer(staticOf(a));
    writeFileSync(path.join(lb.dir, "config.yaml"), `listen: "127.0.0.1:0"\nretries: -1\ndiscovery:\n  backends:\n    - address: "10.0.0.1:99999"\n`);
    await sighup(lb);
    const refused = lb.logs.find((l) => l.msg.startsWith("reload refused"))!;
    assert.ok(Array.isArray(refused.problems));
    const problems = refused.problems as string[];
    assert.ok(problems.some((p) => p.startsWith("retries:")), problems.join("\n"));
    assert.ok(problems.some((p) => p.startsWith("discovery.backends[0].address: port must be 1-65535")), problems.join("\n"));
    assert.equal((await request(lb.port)).trim(), "a", "still serving on the previous config");

    const res = await postReload(lb);
    assert.equal(res.status, 400);
    assert.match(String(res.body.error), /invalid config; nothing changed/);
    assert.deepEqual(res.body.problems, problems);
    assert.equal(lb.proc.exitCode, null, "still running");

    rewrite(lb, staticOf(a));
    const ok = await postReload(lb);
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { status: "reloaded", applied: [], need_restart: [] });
  });

  for (const workers of [1, 2]) {
    it(`listen moved by a reload (workers: ${workers}): the new port accepts before the old one closes`, async () => {
      const a = await startNamedBackend("a");
      const lb = await startBalancer({ workers, ...staticOf(a) });
      const oldPort = lb.port;
      const newPort = await freePort();
      rewrite(lb, { workers, listen: `127.0.0.1:${newPort}`, ...staticOf(a) });
      lb.signal("SIGHUP");
      // Until the old port refuses, it serves; the moment it refuses, the new one must
      // already accept: there is no moment without a listener.
      const deadline = Date.now() + 5000;
      let oldClosed = false;
      while (Date.now() < deadline) {
        if (await accepts(oldPort)) continue;
        oldClosed = true;
        assert.ok(await accepts(newPort), "the new port accepts when the old one stops");
        break;
      }
      assert.ok(oldClosed, "the old port closed");
      assert.equal((await request(newPort)).trim(), "a");
      const reloaded = await lb.waitForLog((l) => l.msg === "config reloaded");
      assert.equal(reloaded.listen, `127.0.0.1:${newPort}`);
    });
  }

  it("a listen address that cannot be bound changes nothing (one taken by another process, or overlapping the current one)", async () => {
    const a = await startNamedBackend("a");
    const b = await startNamedBackend("b");
    const lb = await startBalancer(staticOf(a));
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", () => r()));
    const takenPort = (taken.address() as net.AddressInfo).port;
    try {
      rewrite(lb, { listen: `127.0.0.1:${takenPort}`, ...staticOf(b) });
      const res = await postReload(lb);
      assert.equal(res.status, 400);
      assert.match(String(res.body.error), new RegExp(`reload refused, nothing changed: .*${takenPort}`));
      assert.equal((await request(lb.port)).trim(), "a", "same port, same backends");
    } finally {
      taken.close();
    }
    // The same port on every interface, which includes the address in use: one listener
    // (workers: 1) cannot bind it beside the old one, so that move is refused too.
    rewrite(lb, { listen: `:${lb.port}`, ...staticOf(b) });
    const overlap = await postReload(lb);
    assert.equal(overlap.status, 400);
    assert.match(String(overlap.body.error), new RegExp(`reload refused, nothing changed: listen :${lb.port}: address already in use`));
    assert.equal((await request(lb.port)).trim(), "a", "still listening where it was");
  });

  it("settings that need a restart are named in a warning and left as they were; timeouts apply to new connections", async () => {
    const echo = await startEchoBackend();
    const lb = await startBalancer(staticOf(echo));
    rewrite(lb, {
      workers: 2,
      data_path: TEST_DATA_PATH === "sockets" ? "handles" : "sockets",
      state_file: path.join(lb.dir, "elsewhere.json"),
      log: { format: "pretty" },
      timeouts: { idle: "300ms" },
      ...staticOf(echo),
    });
    const res = await postReload(lb);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.need_restart, ["workers", "data_path", "state_file", "log.format"]);
    assert.deepEqual(res.body.applied, ["timeouts"]);
    const warning = await lb.waitForLog((l) => l.msg.startsWith("reload: these settings need a restart"));
    assert.deepEqual(warning.keys, ["workers", "data_path", "state_file", "log.format"]);
    // The new idle timeout closes a quiet connection opened after the reload.
    const quiet = await connect(lb.port);
    const closedAfter = await new Promise<number>((resolve) => {
      const t0 = Date.now();
      quiet.on("close", () => resolve(Date.now() - t0));
      quiet.on("error", () => {});
    });
    assert.ok(closedAfter >= 250 && closedAfter < 3000, `closed after ${closedAfter} ms`);
  });

  for (const workers of [1, 2]) {
    it(`the access log is opened again on SIGHUP, so a rotated file is let go (workers: ${workers})`, async () => {
      const a = await startNamedBackend("a");
      const lb = await startBalancer({ workers, ...staticOf(a), access_log: { enabled: true, path: "access.log" } });
      const file = path.join(lb.dir, "access.log");
      await request(lb.port);
      await waitFor(() => existsSync(file) && readFileSync(file, "utf8").split("\n").filter(Boolean).length === 1, 5000, "the first line");
      renameSync(file, `${file}.1`); // what logrotate does, then it sends SIGHUP
      rewrite(lb, { workers, ...staticOf(a), access_log: { enabled: true, path: "access.log" } });
      await sighup(lb);
      await request(lb.port);
      await request(lb.port);
      await waitFor(() => existsSync(file) && readFileSync(file, "utf8").split("\n").filter(Boolean).length === 2, 5000, "lines in the new file");
      assert.equal(readFileSync(`${file}.1`, "utf8").split("\n").filter(Boolean).length, 1, "the rotated file got nothing more");
    });
  }
});
