import { randomUUID } from "node:crypto";

/**
 * The Kubernetes objects the fake API server (apiserver.ts) keeps and sends, written as
 * the real API server encodes them, and the label selectors it understands.
 */

export type Json = Record<string, unknown>;

export type Selector = (labels: Record<string, string>) => boolean;

export interface EndpointInput {
  /** The endpoint's (first) address. */
  address: string;
  /** undefined leaves the condition out (nil in the API); null is not sent either. */
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  /** Pod name for targetRef; default derived from the address. */
  pod?: string;
}

export interface SliceInput {
  name: string;
  service: string;
  namespace?: string;
  addressType?: "IPv4" | "IPv6" | "FQDN";
  endpoints: EndpointInput[];
  /** Port entries as in the API; name "" for a Service's single unnamed port. */
  ports: Array<{ name?: string; port?: number; protocol?: string }>;
}

/** An EndpointSlice as the API server emits it (watch events include kind/apiVersion). */
export function endpointSlice(
  input: SliceInput,
  meta: { resourceVersion: string; uid: string; generation: number; creationTimestamp: string },
): Json {
  const namespace = input.namespace ?? "default";
  return {
    kind: "EndpointSlice",
    apiVersion: "discovery.k8s.io/v1",
    metadata: {
      name: input.name,
      generateName: `${input.service}-`,
      namespace,
      uid: meta.uid,
      resourceVersion: meta.resourceVersion,
      generation: meta.generation,
      creationTimestamp: meta.creationTimestamp,
      labels: {
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        "kubernetes.io/service-name": input.service,
      },
      annotations: { "endpoints.kubernetes.io/last-change-trigger-time": meta.creationTimestamp },
      ownerReferences: [
        { apiVersion: "v1", kind: "Service", name: input.service, uid: "5b1d1c9e-8f0a-4c47-9a43-2b0c6f1e7d11", controller: true, blockOwnerDeletion: true },
      ],
      managedFields: [
        {
          manager: "kube-controller-manager",
          operation: "Update",
          apiVersion: "discovery.k8s.io/v1",
          time: meta.creationTimestamp,
          fieldsType: "FieldsV1",
          fieldsV1: { "f:addressType": {}, "f:endpoints": {}, "f:metadata": { "f:labels": { ".": {}, "f:kubernetes.io/service-name": {} } }, "f:ports": {} },
        },
      ],
    },
    addressType: input.addressType ?? "IPv4",
    // The API encodes an empty endpoints list as null (the field has no omitempty).
    endpoints:
      input.endpoints.length === 0
        ? null
        : input.endpoints.map((e, i) => {
            const conditions: Json = {};
            if (e.ready !== undefined) conditions.ready = e.ready;
            if (e.serving !== undefined) conditions.serving = e.serving;
            if (e.terminating !== undefined) conditions.terminating = e.terminating;
            return {
              addresses: [e.address],
              conditions,
              targetRef: { kind: "Pod", namespace, name: e.pod ?? `${input.service}-7d4b9c6f5-${i}x${e.address.replace(/[^0-9a-f]/g, "")}`, uid: randomUUID() },
              nodeName: "node-1",
              zone: "zone-a",
            };
          }),
    ports: input.ports.map((p) => ({ name: p.name ?? "", protocol: p.protocol ?? "TCP", ...(p.port !== undefined ? { port: p.port } : {}) })),
  };
}

export function bookmarkObject(rv: number): Json {
  // What the API server sends: an empty object of the watched kind with only a resourceVersion.
  return { kind: "EndpointSlice", apiVersion: "discovery.k8s.io/v1", metadata: { resourceVersion: String(rv), creationTimestamp: null }, addressType: "", endpoints: null };
}

export function status(code: number, reason: string, message: string): Json {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

export function labelsOf(object: Json): Record<string, string> {
  return ((object.metadata as Json).labels as Record<string, string> | undefined) ?? {};
}

/** Equality-based selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-joined. */
export function parseSelector(text: string): Selector {
  const terms: Selector[] = [];
  for (const raw of text.split(",").map((t) => t.trim()).filter(Boolean)) {
    const m = /^(!?)([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*))?$/.exec(raw);
    if (!m) throw new Error(`"${raw}"`);
    const [, not, key, op, value] = m;
    if (op === undefined) terms.push(not ? (l) => !(key! in l) : (l) => key! in l);
    else if (op === "!=") terms.push((l) => l[key!] !== value);
    else terms.push((l) => l[key!] === value);
  }
  return (labels) => terms.every((t) => t(labels));
}
