/**
 * What the peer benchmark runs: the backends (two nginx HTTP servers and an iperf3 server)
 * and the paths to them (direct, GoBalancer with `workers: auto` and `workers: 1`, HAProxy
 * and nginx stream). Each balancer runs twice: one instance in front of the two HTTP
 * backends, one in front of the iperf3 server, because iperf3's control and data
 * connections must reach the same server and GoBalancer has one listener per process.
 * Every address is 127.0.0.1.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { freePorts } from "../../test/ports.ts";
import type { PathInfo } from "./report.ts";
import { hardNofile, isListening, waitUntil, type Started, type Supervisor } from "./processes.ts";

export const REPO = path.resolve(import.meta.dirname, "..", "..");
export const NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so";
/**
 * Descriptor limit for balancers, backends and the idle client: 10,000 proxied idle
 * connections take 20,000+ in one balancer process. Capped by the hard limit we have.
 */
export const NOFILE = Math.min(65536, hardNofile());
/** Connection ceiling for the peers, as high as NOFILE allows (two descriptors each). */
const MAX_CONNECTIONS = Math.min(30000, Math.floor((NOFILE - 256) / 2));
/** Idle connections one balancer can hold under NOFILE, with room for everything else. */
export const MAX_IDLE = Math.floor((NOFILE - 400) / 2);

export const PATHS: readonly PathInfo[] = [
  { id: "direct", label: "direct to backend", role: "ceiling" },
  { id: "gobalancer-auto", label: "GoBalancer workers: auto", role: "gobalancer" },
  { id: "gobalancer-1", label: "GoBalancer workers: 1", role: "gobalancer" },
  // The net.Socket data path (data_path: sockets), for comparison with the default.
  { id: "gobalancer-sockets", label: "GoBalancer workers: 1, data_path: sockets", role: "gobalancer" },
  // workers 1 writing the access log to a file: its cost, measured when named in PATHS.
  { id: "gobalancer-access-log", label: "GoBalancer workers: 1, access log on", role: "gobalancer", optional: true },
  // Another build of GoBalancer (BASELINE=a checkout with dist/ built), workers 1, in the
  // same rounds: before/after figures of a change measured side by side.
  { id: "gobalancer-baseline", label: "GoBalancer workers: 1, baseline build", role: "gobalancer", optional: true },
  // The baseline build with the access log on: before/after figures of a change to the log.
  { id: "gobalancer-baseline-access-log", label: "GoBalancer workers: 1, baseline build, access log on", role: "gobalancer", optional: true },
  { id: "haproxy", label: "HAProxy", role: "peer" },
  { id: "nginx", label: "nginx stream", role: "peer" },
];

export interface Backends {
  http: number[];
  iperf: number;
}

/** A path ready for load: where HTTP and bulk traffic go, and whose memory to measure. */
export interface RunningPath {
  info: PathInfo;
  httpPort: number;
  bulkPort: number;
  /** The HTTP instance's process, checked for survival (none for direct). */
  httpProcess?: Started;
  /**
   * Starts a new instance in front of the HTTP backends, for measuring memory: a process
   * that has held connections before keeps the freed memory in its allocator (HAProxy's
   * pools, V8's heap), so only a fresh one shows what holding connections costs.
   */
  startFresh?: (name: string) => Promise<{ port: number; process: Started }>;
}

export function goBalancerConfig(o: {
  listenPort: number;
  backends: readonly number[];
  workers: "auto" | number;
  dataPath?: "sockets";
  /** Write the access log to this file. */
  accessLog?: string;
  stateFile: string;
}): string {
  // Defaults for everything else: the point is to measure what users get.
  return [
    `listen: "127.0.0.1:${o.listenPort}"`,
    `workers: ${o.workers}`,
    ...(o.dataPath ? [`data_path: ${o.dataPath}`] : []),
    ...(o.accessLog ? ["access_log:", "  enabled: true", `  path: ${JSON.stringify(o.accessLog)}`] : []),
    "api:",
    '  listen: "127.0.0.1:0"',
    `state_file: ${JSON.stringify(o.stateFile)}`,
    "discovery:",
    "  type: static",
    "  backends:",
    ...o.backends.map((p) => `    - address: "127.0.0.1:${p}"`),
    "",
  ].join("\n");
}

export function haproxyConfig(o: { listenPort: number; backends: readonly number[]; threads: number }): string {
  // Timeouts match GoBalancer's defaults (connect 3s, idle 10m).
  return [
    "global",
    `  nbthread ${o.threads}`,
    `  maxconn ${MAX_CONNECTIONS}`,
    // HAProxy reserves two descriptors per splice pipe (maxconn / 4 of them by default)
    // on top of maxconn; a fixed 100 covers this benchmark's 50 concurrent connections
    // and leaves the rest of the descriptor limit for connections.
    "  maxpipes 100",
    "defaults",
    "  mode tcp",
    `  maxconn ${MAX_CONNECTIONS}`,
    "  timeout connect 3s",
    "  timeout client 10m",
    "  timeout server 10m",
    "  option splice-auto",
    "frontend fe",
    `  bind 127.0.0.1:${o.listenPort}`,
    "  default_backend be",
    "backend be",
    "  balance roundrobin",
    ...o.backends.map((p, i) => `  server s${i + 1} 127.0.0.1:${p}`),
    "",
  ].join("\n");
}

/** The main-context lines both nginx configurations share: workers, limits, files under `dir`. */
function nginxMain(workers: number, dir: string): string[] {
  return [
    `worker_processes ${workers};`,
    `worker_rlimit_nofile ${NOFILE};`,
    "daemon off;",
    `pid ${path.join(dir, "nginx.pid")};`,
    `error_log ${path.join(dir, "error.log")} warn;`,
    `events { worker_connections ${MAX_CONNECTIONS * 2}; }`,
  ];
}

export function nginxStreamConfig(o: { listenPort: number; backends: readonly number[]; workers: number; dir: string }): string {
  return [
    `load_module ${NGINX_STREAM_MODULE};`,
    ...nginxMain(o.workers, o.dir),
    "stream {",
    `  upstream be { ${o.backends.map((p) => `server 127.0.0.1:${p};`).join(" ")} }`,
    `  server { listen 127.0.0.1:${o.listenPort}; proxy_pass be; proxy_connect_timeout 3s; proxy_timeout 10m; }`,
    "}",
    "",
  ].join("\n");
}

/** An HTTP backend answering "ok" to everything, with /nginx-status for counting connections. */
export function nginxBackendConfig(o: { port: number; dir: string }): string {
  const tmp = (name: string) => path.join(o.dir, "tmp", name);
  return [
    ...nginxMain(1, o.dir),
    "http {",
    "  access_log off;",
    "  default_type text/plain;",
    `  client_body_temp_path ${tmp("body")}; proxy_temp_path ${tmp("proxy")}; fastcgi_temp_path ${tmp("fastcgi")};`,
    `  uwsgi_temp_path ${tmp("uwsgi")}; scgi_temp_path ${tmp("scgi")};`,
    // Keep-alive runs measure keep-alive: no backend-forced reconnects every 1,000 requests.
    "  keepalive_requests 1000000;",
    // Idle connections are held without a request for longer than the default 60 s allows.
    "  client_header_timeout 5m;",
    "  server {",
    `    listen 127.0.0.1:${o.port};`,
    "    location = /nginx-status { stub_status; }",
    '    location / { return 200 "ok\\n"; }',
    "  }",
    "}",
    "",
  ].join("\n");
}

async function ready(started: Started, port: number): Promise<Started> {
  await waitUntil(
    () => {
      if (started.exit) {
        const tail = readFileSync(started.logPath, "utf8").trim().split("\n").slice(-5).join("\n");
        throw new Error(`${started.name} exited (${started.exit.code ?? started.exit.signal}) before listening on ${port}:\n${tail}`);
      }
      return isListening(port);
    },
    15_000,
    `${started.name} to listen on 127.0.0.1:${port}`,
  );
  return started;
}

function instanceDir(sup: Supervisor, name: string): string {
  const dir = path.join(sup.dir, name);
  mkdirSync(path.join(dir, "tmp"), { recursive: true });
  return dir;
}

export async function startBackends(sup: Supervisor, tools: { nginx: string; iperf3: string }): Promise<Backends> {
  const [http1, http2, iperf] = (await freePorts(3)) as [number, number, number];
  const starts = [http1, http2].map((port, i) => {
    const name = `backend-${i + 1}`;
    const dir = instanceDir(sup, name);
    writeFileSync(path.join(dir, "nginx.conf"), nginxBackendConfig({ port, dir }));
    const started = sup.start(name, tools.nginx, ["-p", `${dir}/`, "-e", path.join(dir, "error.log"), "-c", path.join(dir, "nginx.conf")], {
      nofile: NOFILE,
    });
    return ready(started, port);
  });
  // --idle-timeout: an iperf3 server left waiting by a half-open test restarts itself.
  const iperfServer = sup.start("iperf3-server", tools.iperf3, ["-s", "-B", "127.0.0.1", "-p", String(iperf), "--idle-timeout", "20"]);
  await Promise.all([...starts, ready(iperfServer, iperf)]);
  return { http: [http1, http2], iperf };
}

/** The checkout the gobalancer-baseline path runs (BASELINE), with its dist/ built. */
function baselineTree(): string {
  const tree = process.env.BASELINE;
  if (!tree || !existsSync(path.join(tree, "dist", "cli.js"))) {
    throw new Error("gobalancer-baseline needs BASELINE=<a checkout whose dist/cli.js is built> (e.g. git worktree add /tmp/base HEAD~5; make -C /tmp/base build)");
  }
  return path.resolve(tree);
}

type Instance = (sup: Supervisor, name: string, listenPort: number, backends: readonly number[]) => Started;

function instanceStarter(info: PathInfo, tools: { node: string; haproxy: string; nginx: string }, cores: number): Instance {
  switch (info.id) {
    case "gobalancer-auto":
    case "gobalancer-1":
    case "gobalancer-sockets":
    case "gobalancer-access-log":
    case "gobalancer-baseline":
    case "gobalancer-baseline-access-log":
      return (sup, name, listenPort, backends) => {
        const dir = instanceDir(sup, name);
        const config = path.join(dir, "config.yaml");
        const workers = info.id === "gobalancer-auto" ? "auto" : 1;
        const dataPath = info.id === "gobalancer-sockets" ? "sockets" : undefined;
        const accessLog = info.id.endsWith("access-log") ? path.join(dir, "access.log") : undefined;
        writeFileSync(config, goBalancerConfig({ listenPort, backends, workers, dataPath, accessLog, stateFile: path.join(dir, "state.json") }));
        const tree = info.id.startsWith("gobalancer-baseline") ? baselineTree() : REPO;
        return sup.start(name, tools.node, [path.join(tree, "dist", "cli.js"), "--config", config], { nofile: NOFILE });
      };
    case "haproxy":
      return (sup, name, listenPort, backends) => {
        const config = path.join(instanceDir(sup, name), "haproxy.cfg");
        writeFileSync(config, haproxyConfig({ listenPort, backends, threads: cores }));
        return sup.start(name, tools.haproxy, ["-db", "-f", config], { nofile: NOFILE });
      };
    case "nginx":
      return (sup, name, listenPort, backends) => {
        const dir = instanceDir(sup, name);
        writeFileSync(path.join(dir, "nginx.conf"), nginxStreamConfig({ listenPort, backends, workers: cores, dir }));
        return sup.start(name, tools.nginx, ["-p", `${dir}/`, "-e", path.join(dir, "error.log"), "-c", path.join(dir, "nginx.conf")], {
          nofile: NOFILE,
        });
      };
    default:
      throw new Error(`unknown path ${info.id}`);
  }
}

/** Starts the HTTP and the bulk instance of a path and waits until both listen. */
export async function startPath(
  sup: Supervisor,
  info: PathInfo,
  backends: Backends,
  tools: { node: string; haproxy: string; nginx: string },
  cores: number,
): Promise<RunningPath> {
  if (info.role === "ceiling") return { info, httpPort: backends.http[0]!, bulkPort: backends.iperf };
  const start = instanceStarter(info, tools, cores);
  const [httpPort, bulkPort] = (await freePorts(2)) as [number, number];
  const httpProcess = start(sup, `${info.id}-http`, httpPort, backends.http);
  const bulkProcess = start(sup, `${info.id}-bulk`, bulkPort, [backends.iperf]);
  await Promise.all([ready(httpProcess, httpPort), ready(bulkProcess, bulkPort)]);
  const startFresh = async (name: string) => {
    const [port] = (await freePorts(1)) as [number];
    return { port, process: await ready(start(sup, name, port, backends.http), port) };
  };
  return { info, httpPort, bulkPort, httpProcess, startFresh };
}
