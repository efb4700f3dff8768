import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { describe, it } from "node:test";
import { errorText } from "./error-text.ts";

describe("discovery error text", () => {
  it("an API server's error answer: its status and the message of its Status body", async () => {
    const { ApiException } = await import("@kubernetes/client-node");
    const forbidden = { kind: "Status", status: "Failure", message: 'endpointslices.discovery.k8s.io is forbidden: User "x" cannot list resource "endpointslices"', code: 403 };
    assert.equal(errorText(new ApiException(403, "Forbidden", forbidden, {})), `HTTP 403: ${forbidden.message}`);
    assert.equal(errorText(new ApiException(403, "Forbidden", JSON.stringify(forbidden), {})), `HTTP 403: ${forbidden.message}`);
    assert.equal(errorText(new ApiException(502, "Bad Gateway", "<html>bad gateway</html>", {})), "HTTP 502: <html>bad gateway</html>");
    // No body: the message line of client-node's exception.
    assert.equal(errorText(new ApiException(401, "Unauthorized", undefined, {})), "HTTP 401: Unauthorized");
  });

  it("the Docker engine's error answer (as docker-modem reports it): its status and message", () => {
    const err = Object.assign(new Error("(HTTP code 404) no such container - No such container: 5c8bfd88 "), {
      reason: "no such container",
      statusCode: 404,
      json: { message: "No such container: 5c8bfd88" },
    });
    assert.equal(errorText(err), "HTTP 404: No such container: 5c8bfd88");
  });

  it("a network error, with its cause when the message does not say it", async () => {
    // A port that was just closed: nothing listens there.
    const server = net.createServer().listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as net.AddressInfo;
    await new Promise((resolve) => server.close(resolve));
    const err = await fetch(`http://127.0.0.1:${port}/`).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal(errorText(err), `fetch failed: connect ECONNREFUSED 127.0.0.1:${port}`);
    const refused = Object.assign(new Error("connect ECONNREFUSED /var/run/docker.sock"), { code: "ECONNREFUSED" });
    assert.equal(errorText(refused), "connect ECONNREFUSED /var/run/docker.sock");
    assert.equal(errorText(new Error("The operation was aborted", { cause: new Error("no answer in 300ms") })), "The operation was aborted: no answer in 300ms");
  });

  it("the code when there is no message; anything else as a string", () => {
    assert.equal(errorText(Object.assign(new Error(""), { code: "EPIPE" })), "EPIPE");
    assert.equal(errorText("watch failed"), "watch failed");
    assert.equal(errorText(undefined), "undefined");
  });
});
