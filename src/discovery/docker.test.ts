import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { dockerEndpoint } from "./docker.ts";

describe("discovery.docker.host", () => {
  it("defaults to DOCKER_HOST, else /var/run/docker.sock", () => {
    assert.deepEqual(dockerEndpoint("", {}), { options: { socketPath: "/var/run/docker.sock" }, describe: "unix:///var/run/docker.sock" });
    // DOCKER_HOST is left to dockerode, which also honours DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
    assert.deepEqual(dockerEndpoint("", { DOCKER_HOST: "tcp://10.0.0.9:2376" }), { options: undefined, describe: "tcp://10.0.0.9:2376" });
  });

  it("takes a unix socket URL or path, or tcp://host:port", () => {
    assert.deepEqual(dockerEndpoint("unix:///run/user/1000/docker.sock", { DOCKER_HOST: "tcp://ignored:1" }).options, { socketPath: "/run/user/1000/docker.sock" });
    assert.deepEqual(dockerEndpoint("/var/run/docker.sock", {}), { options: { socketPath: "/var/run/docker.sock" }, describe: "unix:///var/run/docker.sock" });
    assert.deepEqual(dockerEndpoint("tcp://docker.internal:2375", {}).options, { host: "docker.internal", port: 2375, protocol: "http" });
    assert.deepEqual(dockerEndpoint("tcp://[fd00::1]:2375", {}).options, { host: "fd00::1", port: 2375, protocol: "http" });
  });

  it("rejects anything else with a message naming the field", () => {
    for (const bad of ["unix://", "docker.sock", "tcp://host", "tcp://host:0", "http://host:2375", "ssh://me@host"]) {
      assert.throws(() => dockerEndpoint(bad, {}), /^Error: discovery\.docker\.host must be unix:\/\/\/path\/to\/docker\.sock, a socket path or tcp:\/\/host:port \(got /, bad);
    }
  });
});
