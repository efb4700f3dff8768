/**
 * One line for an etcd client failure, for logs and API errors: the gRPC status text
 * without its numeric prefix ("14 UNAVAILABLE: ") and without grpc-js's resolution notes.
 */
export function etcdErrorText(err: unknown): string {
  const e = err instanceof Error ? err : new Error(String(err));
  const text = e.message
    .replace(/^\d+ [A-Z_]+: /, "")
    .replace(/\.?\s*Resolution note:.*$/s, "")
    .trim();
  return text || e.name;
}
