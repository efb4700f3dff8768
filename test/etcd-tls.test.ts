// End-to-end: replicas on an etcd that serves clients over TLS and requires their
// certificates (state_store.etcd.tls), with certificates made by openssl for the test.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ensureDebianPackages } from "./apt.ts";
import { EtcdCluster, type EtcdTls } from "./etcd.ts";
import { cleanup, startBalancer, startEchoBackend, tempDir, waitFor } from "./harness.ts";
import { call, registry, startReplica } from "./replicas.ts";

/** A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`. */
function makeCertificates(dir: string): EtcdTls & { clientCert: string; clientKey: string } {
  ensureDebianPackages(["openssl"], "the etcd TLS test");
  const file = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...newKey, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=gobalancer-test-etcd-ca");
  const sign = (name: string, subject: string, extensions: string) => {
    writeFileSync(file(`${name}.ext`), extensions);
    openssl("req", ...newKey, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject);
    openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`);
  };
  sign("server", "/CN=etcd", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
  sign("client", "/CN=gobalancer", "extendedKeyUsage=clientAuth\n");
  return { ca: file("ca.crt"), cert: file("server.crt"), key: file("server.key"), clientCert: file("client.crt"), clientKey: file("client.key") };
}

describe("state store on an etcd with TLS and client certificates", () => {
  let etcd: EtcdCluster;
  let certs: ReturnType<typeof makeCertificates>;
  before(async () => {
    certs = makeCertificates(tempDir("gobalancer-etcd-tls-"));
    etcd = await EtcdCluster.start(1, certs);
  }, { timeout: 300_000 });
  after(async () => {
    await cleanup();
    await etcd?.stop();
  });

  const tls = () => ({ ca_file: certs.ca, cert_file: certs.clientCert, key_file: certs.clientKey });
  const withTls = (files: Record<string, string>) => ({ state_store: { type: "etcd", etcd: { endpoints: etcd.endpoints, prefix: "/gobalancer-tls-test/", tls: files } } });

  it("shares a change between two replicas over TLS", async () => {
    const [a, b] = await Promise.all([startReplica(etcd.endpoints, withTls(tls())), startReplica(etcd.endpoints, withTls(tls()))]);
    const echo = await startEchoBackend();
    const created = await call(a, "POST", "/backends", { address: echo.address, weight: 3 });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await waitFor(async () => (await registry(b)).includes(`${echo.address} w=3 ready api`), 1000, "the backend on the other replica");
  });

  it("without a client certificate etcd is unreachable: serving goes on, writes get 503 naming the store", async () => {
    const echo = await startEchoBackend();
    const lb = await startReplica(etcd.endpoints, withTls({ ca_file: certs.ca }));
    const refused = await call(lb, "POST", "/backends", { address: echo.address });
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    assert.match(String(refused.body.error), /etcd/);
  });

  it("stops start-up naming the setting when a TLS file cannot be read or does not fit", async () => {
    const missing = await startBalancer(withTls({ ...tls(), ca_file: "/nonexistent/ca.crt" }), { noWait: true });
    assert.equal((await missing.exited).code, 1);
    assert.ok(missing.logs.some((l) => /state_store\.etcd\.tls\.ca_file: cannot read \/nonexistent\/ca\.crt: ENOENT/.test(l.msg)), JSON.stringify(missing.logs));
    // The CA's key with the client's certificate: not a pair.
    const mismatched = await startBalancer(withTls({ ...tls(), key_file: path.join(path.dirname(certs.ca), "ca.key") }), { noWait: true });
    assert.equal((await mismatched.exited).code, 1);
    assert.ok(mismatched.logs.some((l) => /state_store\.etcd\.tls: /.test(l.msg)), JSON.stringify(mismatched.logs));
  });
});
