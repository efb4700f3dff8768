// deployments/kubernetes/: every object validates against the Kubernetes OpenAPI schemas
// (kubernetes-models), has no field the API server would reject as unknown (client-node's
// generated type maps), and the pieces fit together: least-privilege RBAC, probes on the
// API port, a config that `gobalancer validate` accepts, and a grace period longer than the
// drain.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { REPO, runCli, tempDir } from "../harness.ts";

const DIR = path.join(REPO, "deployments", "kubernetes");

type Json = Record<string, any>; // manifests are free-form YAML; the schema checks below type them

interface Manifest {
  file: string;
  object: Json;
}

function loadManifests(dir = DIR): Manifest[] {
  const out: Manifest[] = [];
  for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of parseAllDocuments(readFileSync(path.join(dir, file), "utf8"))) {
      assert.deepEqual(doc.errors, [], `${file}: YAML errors`);
      const object = doc.toJS() as Json | null;
      if (object) out.push({ file, object });
    }
  }
  return out;
}

/** kubernetes-models' class for an apiVersion/kind, e.g. apps/v1 Deployment. */
async function modelFor(apiVersion: string, kind: string): Promise<{ validate(): void } & (new (data: Json) => { validate(): void })> {
  const mod = (await import(`kubernetes-models/${apiVersion}/${kind}`)) as Record<string, new (data: Json) => { validate(): void }>;
  return mod[kind] as never;
}

/**
 * Fields the type does not have, as the API server's strict field validation (kubectl's
 * default) would report them. Walks client-node's generated attribute maps.
 */
function unknownFields(value: unknown, type: string, where: string, k8s: Record<string, unknown>, out: string[]): void {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, array[1]!, `${where}[${i}]`, k8s, out));
    return;
  }
  const model = k8s[type] as { getAttributeTypeMap?: () => Array<{ baseName: string; type: string }> } | undefined;
  if (!model?.getAttributeTypeMap || typeof value !== "object") return; // scalars, maps, IntOrString
  const attributes = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [key, v] of Object.entries(value as Json)) {
    const t = attributes.get(key);
    if (t === undefined) out.push(`${where}.${key}`);
    else unknownFields(v, t, `${where}.${key}`, k8s, out);
  }
}

const TYPE_NAMES: Record<string, string> = {
  "v1/ServiceAccount": "V1ServiceAccount",
  "v1/ConfigMap": "V1ConfigMap",
  "v1/Service": "V1Service",
  "apps/v1/Deployment": "V1Deployment",
  "apps/v1/StatefulSet": "V1StatefulSet",
  "policy/v1/PodDisruptionBudget": "V1PodDisruptionBudget",
  "rbac.authorization.k8s.io/v1/Role": "V1Role",
  "rbac.authorization.k8s.io/v1/RoleBinding": "V1RoleBinding",
};

describe("deployments/kubernetes", () => {
  let manifests: Manifest[] = [];
  const one = (kind: string): Json => {
    const found = manifests.filter((m) => m.object.kind === kind);
    assert.equal(found.length, 1, `exactly one ${kind}`);
    return found[0]!.object;
  };
  before(() => {
    manifests = loadManifests();
  });

  it("has every object an operator needs, each valid against the OpenAPI schemas", async () => {
    assert.deepEqual(
      manifests.map((m) => m.object.kind).sort(),
      ["ConfigMap", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"],
    );
    await checkSchemas(manifests);
  });

  it("the schema check is real: it rejects a wrong type and a missing required field", async () => {
    const Deployment = await modelFor("apps/v1", "Deployment");
    const good = structuredClone(one("Deployment"));
    good.spec.replicas = "2";
    assert.throws(() => new Deployment(good).validate(), /replicas/);
    const noContainers = structuredClone(one("Deployment"));
    delete noContainers.spec.template.spec.containers;
    assert.throws(() => new Deployment(noContainers).validate(), /containers/);
    const k8s = (await import("@kubernetes/client-node")) as unknown as Record<string, unknown>;
    const typo = structuredClone(one("Deployment"));
    typo.spec.template.spec.containers[0].readinesProbe = {};
    const unknown: string[] = [];
    unknownFields(typo, "V1Deployment", "Deployment", k8s, unknown);
    assert.deepEqual(unknown, ["Deployment.spec.template.spec.containers[0].readinesProbe"]);
  });

  it("grants only get, list and watch on EndpointSlices, to GoBalancer's ServiceAccount", () => {
    const role = one("Role");
    assert.deepEqual(role.rules, [{ apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["get", "list", "watch"] }]);
    const binding = one("RoleBinding");
    assert.deepEqual(binding.roleRef, { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: role.metadata.name });
    const sa = one("ServiceAccount");
    assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: sa.metadata.name, namespace: sa.metadata.namespace }]);
    assert.equal(one("Deployment").spec.template.spec.serviceAccountName, sa.metadata.name);
  });

  it("ships a config that gobalancer validate accepts, discovering in the Role's namespace", async () => {
    const cm = one("ConfigMap");
    const file = path.join(tempDir(), "config.yaml");
    writeFileSync(file, cm.data["config.yaml"]);
    const result = await runCli(["validate", "--config", file]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const config = parseYaml(cm.data["config.yaml"]) as Json;
    assert.equal(config.discovery.type, "kubernetes");
    assert.equal(config.discovery.kubernetes.namespace, one("Role").metadata.namespace);
  });

  it("runs two hardened replicas, probed on /health at the API port, draining within the grace period", () => {
    const deploy = one("Deployment");
    const config = parseYaml(one("ConfigMap").data["config.yaml"]) as Json;
    const pod = deploy.spec.template.spec;
    assert.equal(deploy.spec.replicas, 2);
    assert.deepEqual(deploy.spec.selector.matchLabels, { app: "gobalancer" });
    assert.equal(pod.containers.length, 1);
    const c = pod.containers[0];
    assert.equal(c.image, "gobalancer:latest");

    // Probes reach the API port the config listens on.
    const apiPort = Number(String(config.api.listen).split(":").at(-1));
    const portNamed = (name: string) => c.ports.find((p: Json) => p.name === name)?.containerPort;
    for (const probe of [c.readinessProbe, c.livenessProbe]) {
      assert.equal(probe.httpGet.path, "/health");
      assert.equal(typeof probe.httpGet.port === "string" ? portNamed(probe.httpGet.port) : probe.httpGet.port, apiPort);
    }
    assert.equal(portNamed("tcp"), Number(String(config.listen).split(":").at(-1)));

    for (const kind of ["requests", "limits"]) {
      assert.ok(c.resources[kind].cpu && c.resources[kind].memory, `resources.${kind}`);
    }
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);

    // Writable state directory and the config file where the args say.
    const mountOf = (dir: string) => c.volumeMounts.find((m: Json) => m.mountPath === dir);
    const stateMount = mountOf(path.posix.dirname(config.state_file));
    assert.ok(stateMount, "state_file's directory is mounted");
    assert.ok(pod.volumes.find((v: Json) => v.name === stateMount.name).emptyDir, "…from an emptyDir");
    const configMount = mountOf("/etc/gobalancer");
    assert.equal(pod.volumes.find((v: Json) => v.name === configMount.name).configMap.name, one("ConfigMap").metadata.name);
    assert.deepEqual(c.args, ["--config", "/etc/gobalancer/config.yaml"]);

    // The kubelet's SIGKILL comes after preStop plus the whole drain.
    const shutdownSeconds = parseSeconds(config.timeouts.shutdown);
    const preStop = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
    assert.ok(pod.terminationGracePeriodSeconds > preStop + shutdownSeconds, `${pod.terminationGracePeriodSeconds}s > ${preStop}s + ${shutdownSeconds}s`);
  });

  it("exposes port 8080 and keeps a replica through voluntary disruptions", () => {
    const labels = one("Deployment").spec.template.metadata.labels;
    const svc = one("Service");
    assert.deepEqual(svc.spec.ports.map((p: Json) => p.port), [8080]);
    assert.equal(svc.spec.ports[0].targetPort, "tcp");
    const pdb = one("PodDisruptionBudget");
    for (const selector of [svc.spec.selector, pdb.spec.selector.matchLabels]) {
      for (const [k, v] of Object.entries(selector)) assert.equal(labels[k], v, `selector ${k}=${String(v)} matches the pods`);
    }
    assert.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < one("Deployment").spec.replicas);
  });
});

/** Every object valid against the OpenAPI schemas, with no unknown field, in namespace default. */
async function checkSchemas(manifests: Manifest[]): Promise<void> {
  const k8s = (await import("@kubernetes/client-node")) as unknown as Record<string, unknown>;
  for (const { file, object } of manifests) {
    const where = `${file}: ${object.kind} ${object.metadata?.name}`;
    const Model = await modelFor(object.apiVersion, object.kind);
    assert.doesNotThrow(() => new Model(object).validate(), where);
    const typeName = TYPE_NAMES[`${object.apiVersion}/${object.kind}`];
    assert.ok(typeName && k8s[typeName], `${where}: no type map`);
    const unknown: string[] = [];
    unknownFields(object, typeName, object.kind, k8s, unknown);
    assert.deepEqual(unknown, [], `${where}: unknown fields`);
    assert.equal(object.metadata.namespace, "default", `${where}: namespace`);
  }
}

describe("deployments/kubernetes/shared-registry (replicas sharing API changes through etcd)", () => {
  const variant = loadManifests(path.join(DIR, "shared-registry"));
  const base = loadManifests();
  const of = (list: Manifest[], kind: string): Json => {
    const found = list.filter((m) => m.object.kind === kind);
    assert.equal(found.length, 1, `exactly one ${kind}`);
    return found[0]!.object;
  };

  it("holds an etcd and a ConfigMap that replaces the base one, each valid against the OpenAPI schemas", async () => {
    assert.deepEqual(variant.map((m) => m.object.kind).sort(), ["ConfigMap", "PodDisruptionBudget", "Service", "StatefulSet"]);
    await checkSchemas(variant);
    assert.equal(of(variant, "ConfigMap").metadata.name, of(base, "ConfigMap").metadata.name);
  });

  it("points every replica at every etcd member, with the base config otherwise unchanged", async () => {
    const file = path.join(tempDir(), "config.yaml");
    writeFileSync(file, of(variant, "ConfigMap").data["config.yaml"]);
    const result = await runCli(["validate", "--config", file]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const config = parseYaml(of(variant, "ConfigMap").data["config.yaml"]) as Json;
    const baseConfig = parseYaml(of(base, "ConfigMap").data["config.yaml"]) as Json;
    assert.equal(config.state_store.type, "etcd");
    const sts = of(variant, "StatefulSet");
    const svc = of(variant, "Service");
    const clientPort = svc.spec.ports.find((p: Json) => p.name === "client").port;
    const members = Array.from({ length: sts.spec.replicas }, (_, i) => `${sts.metadata.name}-${i}.${sts.spec.serviceName}.${sts.metadata.namespace}.svc`);
    assert.deepEqual(config.state_store.etcd.endpoints, members.map((m) => `http://${m}:${clientPort}`));
    const { state_store: _, ...rest } = config;
    assert.deepEqual(rest, baseConfig);
  });

  it("runs an odd number of etcd members that find each other through the headless Service, keeping a majority through disruptions", () => {
    const sts = of(variant, "StatefulSet");
    const svc = of(variant, "Service");
    const pdb = of(variant, "PodDisruptionBudget");
    assert.equal(sts.spec.replicas % 2, 1);
    assert.equal(svc.spec.clusterIP, "None");
    assert.equal(sts.spec.serviceName, svc.metadata.name);
    const labels = sts.spec.template.metadata.labels;
    for (const selector of [svc.spec.selector, pdb.spec.selector.matchLabels]) {
      for (const [k, v] of Object.entries(selector)) assert.equal(labels[k], v);
    }
    const args: string[] = sts.spec.template.spec.containers[0].command;
    const peerPort = svc.spec.ports.find((p: Json) => p.name === "peer").port;
    const cluster = args.find((a) => a.startsWith("--initial-cluster="))!.slice("--initial-cluster=".length).split(",");
    assert.deepEqual(
      cluster,
      Array.from({ length: sts.spec.replicas }, (_, i) => `${sts.metadata.name}-${i}=http://${sts.metadata.name}-${i}.${svc.metadata.name}.default.svc:${peerPort}`),
    );
    assert.ok(pdb.spec.maxUnavailable <= (sts.spec.replicas - 1) / 2, "a majority stays up");
  });

  it("the base deployment says that its replicas do not share API changes, and where to look", () => {
    const config = parseYaml(of(base, "ConfigMap").data["config.yaml"]) as Json;
    assert.ok(of(base, "Deployment").spec.replicas > 1 && (config.state_store?.type ?? "file") === "file");
    for (const file of ["configmap.yaml", "deployment.yaml"]) assert.match(readFileSync(path.join(DIR, file), "utf8"), /shared-registry\//, file);
  });
});

function parseSeconds(text: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(text);
  assert.ok(m, `duration ${text}`);
  return Number(m[1]) * ({ ms: 0.001, s: 1, m: 60 } as Record<string, number>)[m[2]!]!;
}
