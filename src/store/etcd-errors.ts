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

/**
 * Whether a failed call's text shows it never reached an etcd member: no connection
 * could be made, the member refused it for want of a leader (before proposing anything),
 * or its deadline passed while gRPC was still waiting for a connection to send it on (a
 * member's host that is down or cut off answers nothing, so connecting goes on until the
 * deadline; grpc-js then says what the call was waiting for).
 */
export function neverReachedEtcd(message: string): boolean {
  if (/No connection established|ECONNREFUSED/.test(message) || refusedForNoLeader(message)) return true;
  return /Deadline exceeded/.test(message) && /Waiting for LB pick|waiting for name resolution|waiting for metadata filters/.test(message);
}

/** Whether a member refused the call for want of a leader (etcd does so before proposing anything). */
export function refusedForNoLeader(message: string): boolean {
  return message.includes("etcdserver: no leader");
}
