import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { etcdErrorText, neverReachedEtcd } from "./etcd-errors.ts";

describe("etcd client failures", () => {
  it("reads as one line without the status prefix or resolution notes", () => {
    assert.equal(etcdErrorText(new Error("14 UNAVAILABLE: No connection established. Resolution note: dns lookup of x")), "No connection established");
  });

  // Messages as grpc-js 1.14 and etcd word them.
  for (const [message, never] of [
    ["14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:2379", true],
    ["14 UNAVAILABLE: etcdserver: no leader", true],
    ["4 DEADLINE_EXCEEDED: Deadline exceeded after 3.001s,name resolution: 0.001s,metadata filters: 0.001s,Waiting for LB pick", true],
    ["4 DEADLINE_EXCEEDED: Deadline exceeded after 3.002s,waiting for name resolution", true],
    // Sent on a connection that then went silent: etcd may have committed it.
    ["4 DEADLINE_EXCEEDED: Deadline exceeded after 3.001s,name resolution: 0.001s,metadata filters: 0.001s,LB pick: 0.002s,remote_addr=127.0.0.1:2379", false],
    ["14 UNAVAILABLE: Connection dropped", false],
    ["13 INTERNAL: Received RST_STREAM with code 2", false],
  ] as const) {
    it(`${never ? "never reached etcd" : "may have reached etcd"}: ${message}`, () => {
      assert.equal(neverReachedEtcd(message), never);
    });
  }
});
