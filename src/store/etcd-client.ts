import type { Etcd3 } from "etcd3";

export interface EtcdClientOptions {
  readonly endpoints: readonly string[];
  /** etcd's own authentication; "" for none. */
  readonly username: string;
  readonly password: string;
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
}

/**
 * Makes an etcd3 client (Microsoft's, the maintained etcd v3 client for Node: gRPC
 * connections to every endpoint, authentication, the watch stream). Loaded here, on
 * first use, because loading it and gRPC takes a fifth of a second that replicas on a
 * state file should not pay at every start.
 *
 * Its own retry policy is off: the store knows which of its calls are safe to repeat.
 * Its per-endpoint circuit breaker is kept, shortened so that a member that comes back
 * is used again within a second.
 */
export async function createEtcdClient(opts: EtcdClientOptions): Promise<EtcdClient> {
  const [{ Etcd3, isRecoverableError }, { circuitBreaker, ConsecutiveBreaker, handleWhen, isBrokenCircuitError, noop }] = await Promise.all([
    import("etcd3"),
    import("cockatiel"),
  ]);
  const client = new Etcd3({
    hosts: [...opts.endpoints],
    ...(opts.username !== "" ? { auth: { username: opts.username, password: opts.password } } : {}),
    dialTimeout: opts.callTimeoutMs,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + opts.callTimeoutMs }),
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
  });
  return {
    client,
    isTransient: (err) => err instanceof Error && (isBrokenCircuitError(err) || isRecoverableError(err)),
    neverSent: (err) => {
      if (!(err instanceof Error)) return false;
      return isBrokenCircuitError(err) || /No connection established|ECONNREFUSED|etcdserver: no leader/.test(err.message);
    },
  };
}
