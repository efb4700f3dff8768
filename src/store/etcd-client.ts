import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { Etcd3 } from "etcd3";
import type { Interceptor } from "@grpc/grpc-js";
import { neverReachedEtcd, refusedForNoLeader } from "./etcd-errors.ts";

/** PEM files for https:// endpoints (state_store.etcd.tls); "" for each one not set. */
export interface EtcdTlsFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

export interface EtcdClientOptions {
  readonly endpoints: readonly string[];
  /** etcd's own authentication; "" for none. */
  readonly username: string;
  readonly password: string;
  readonly tls: EtcdTlsFiles;
  /** One call (not the watch) is abandoned after this. */
  readonly callTimeoutMs: number;
}

/** A connected etcd3 client, and how to read its failures. */
export interface EtcdClient {
  readonly client: Etcd3;
  /** Worth another attempt: the connection or the cluster had trouble; not a refusal such as "permission denied". */
  isTransient(err: unknown): boolean;
  /**
   * The request certainly never reached an etcd member that could commit it: no
   * connection could be made, the client's circuit breaker held it back, or the member
   * had no leader (etcd refuses those before proposing anything). Any other failure may
   * have come after etcd committed the change.
   */
  neverSent(err: unknown): boolean;
  /** A member refused the call for want of a leader (one is being elected, or it is cut off): never sent. */
  noLeader(err: unknown): boolean;
}

/**
 * Makes an etcd3 client (Microsoft's, the maintained etcd v3 client for Node: gRPC
 * connections to every endpoint, authentication, the watch stream). Loaded here, on
 * first use, because loading it and gRPC is a noticeable part of start-up that replicas
 * on a state file should not pay.
 *
 * Its own retry policy is off: the store knows which of its calls are safe to repeat.
 * Its per-endpoint circuit breaker is kept, shortened so that a member that comes back
 * is used again within a second.
 *
 * Every call carries etcd's require-leader metadata. A member cut off from the rest of
 * its cluster stays up but can commit nothing and hears of no change: with the metadata
 * it refuses calls at once ("no leader", before proposing anything, so a write it refuses
 * is certainly not saved) and ends watch streams after a few election timeouts, so the
 * follower lists again through a member that can answer instead of waiting, stale, on a
 * watch that receives nothing.
 */
export async function createEtcdClient(opts: EtcdClientOptions): Promise<EtcdClient> {
  const [{ Etcd3, isRecoverableError }, { circuitBreaker, ConsecutiveBreaker, handleWhen, isBrokenCircuitError, noop }] = await Promise.all([
    import("etcd3"),
    import("cockatiel"),
  ]);
  const interceptors = [requireLeader()];
  const credentials = tlsCredentials(opts.tls);
  const client = newClient(credentials, () => new Etcd3({
    hosts: [...opts.endpoints],
    ...(credentials ? { credentials } : {}),
    ...(opts.username !== "" ? { auth: { username: opts.username, password: opts.password } } : {}),
    dialTimeout: opts.callTimeoutMs,
    defaultCallOptions: (context) => (context.isStream ? { interceptors } : { deadline: Date.now() + opts.callTimeoutMs, interceptors }),
    grpcOptions: {
      // Notices a connection that went silent (a member on a lost host) without waiting
      // for TCP; etcd accepts pings down to every 5 s.
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      // A list of many thousand backends is one message.
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
    },
    faultHandling: {
      global: noop,
      host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) }),
    },
  }));
  return {
    client,
    isTransient: (err) => err instanceof Error && (isBrokenCircuitError(err) || isRecoverableError(err)),
    neverSent: (err) => {
      if (!(err instanceof Error)) return false;
      return isBrokenCircuitError(err) || neverReachedEtcd(err.message);
    },
    noLeader: (err) => err instanceof Error && refusedForNoLeader(err.message),
  };
}

/** gRPC checks the TLS files' contents (PEM, a key that fits its certificate) as the client is made: such a failure names the setting. */
function newClient<T>(credentials: object | undefined, make: () => T): T {
  try {
    return make();
  } catch (err) {
    if (credentials === undefined) throw err;
    throw new Error(`state_store.etcd.tls: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The TLS files read once, at start (a missing or unreadable one stops start-up, by its
 * key). Undefined when none is set: https:// endpoints then use Node's CA list, as etcd3
 * does by default. The CA given as null to gRPC means that same default list.
 */
function tlsCredentials(tls: EtcdTlsFiles): { rootCertificate: Buffer; privateKey?: Buffer; certChain?: Buffer } | undefined {
  if (tls.caFile === "" && tls.certFile === "") return undefined;
  const read = (key: string, file: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`state_store.etcd.tls.${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  };
  return {
    rootCertificate: (tls.caFile === "" ? null : read("ca_file", tls.caFile)) as Buffer,
    ...(tls.certFile === "" ? {} : { certChain: read("cert_file", tls.certFile), privateKey: read("key_file", tls.keyFile) }),
  };
}

/**
 * A gRPC interceptor adding etcd's require-leader metadata ("hasleader: true") to a call.
 * gRPC is taken from where etcd3 loads it, so the interceptor is of the very grpc-js that
 * runs the calls (etcd3 has no option for extra metadata; call options take interceptors).
 */
function requireLeader(): Interceptor {
  const grpc = createRequire(import.meta.resolve("etcd3"))("@grpc/grpc-js") as typeof import("@grpc/grpc-js");
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("hasleader", "true");
        next(metadata, listener);
      },
    });
}
