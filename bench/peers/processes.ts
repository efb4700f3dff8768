/**
 * Every process the peer benchmark starts goes through a Supervisor: each runs in its own
 * process group (so nginx's and HAProxy's workers are stopped with their master, and a
 * Ctrl-C on the terminal reaches only the benchmark, which then stops them in order), with
 * its output in a log file, and optionally a raised descriptor limit through prlimit.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Started {
  name: string;
  pid: number;
  child: ChildProcess;
  logPath: string;
  exited: Promise<Exit>;
  /** Set once the process group leader has exited. */
  exit?: Exit;
}

export interface StartOptions {
  /** RLIMIT_NOFILE (soft and hard) for the process, set through prlimit. */
  nofile?: number;
  /** Pipe stdin/stdout to the benchmark instead of the log file (stderr still goes there). */
  pipe?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  timedOut: boolean;
}

export class Supervisor {
  readonly dir: string;
  readonly #started = new Set<Started>();
  #closed = false;
  #reaper?: ChildProcess;

  constructor(dir: string) {
    this.dir = dir;
  }

  get #groupsFile(): string {
    return path.join(this.dir, "process-groups");
  }

  /**
   * Signal handlers cannot run if the benchmark itself is SIGKILLed, and its children sit
   * in their own process groups, so a detached watcher kills the groups still listed (and
   * removes the temp dir) once the benchmark's pid is gone.
   */
  startReaper(): void {
    const script = 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; while read -r g; do kill -KILL -- "-$g" 2>/dev/null; done < "$2"; rm -rf "$3"';
    writeFileSync(this.#groupsFile, "");
    this.#reaper = spawn("bash", ["-c", script, "reaper", String(process.pid), this.#groupsFile, this.dir], { detached: true, stdio: "ignore" });
    this.#reaper.unref();
  }

  /** After everything is stopped: the watcher has nothing left to do. */
  stopReaper(): void {
    if (this.#reaper?.pid) signalGroup(this.#reaper.pid, "SIGKILL");
    this.#reaper = undefined;
  }

  #writeGroups(): void {
    if (this.#reaper) writeFileSync(this.#groupsFile, [...this.#started].map((s) => `${s.pid}\n`).join(""));
  }

  start(name: string, command: string, args: readonly string[], opts: StartOptions = {}): Started {
    // After an interrupt, work still in flight must not start anything new.
    if (this.#closed) throw new Error("stopping");
    const logPath = path.join(this.dir, `${name}.log`);
    const log = openSync(logPath, "a");
    const [cmd, argv] = opts.nofile ? ["prlimit", [`--nofile=${opts.nofile}:${opts.nofile}`, "--", command, ...args]] : [command, [...args]];
    let child: ChildProcess;
    try {
      child = spawn(cmd, argv, {
        detached: true,
        stdio: opts.pipe ? ["pipe", "pipe", log] : ["ignore", log, log],
        env: opts.env ?? process.env,
      });
    } finally {
      closeSync(log);
    }
    if (child.pid === undefined) throw new Error(`could not start ${name} (${command})`);
    const started: Started = {
      name,
      pid: child.pid,
      child,
      logPath,
      exited: new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal }))),
    };
    child.once("error", () => {});
    void started.exited.then((exit) => {
      started.exit = exit;
    });
    this.#started.add(started);
    this.#writeGroups();
    return started;
  }

  /** SIGTERM to the whole group, SIGKILL after `graceMs`, then forget it. */
  async stop(started: Started, graceMs = 3000): Promise<Exit> {
    signalGroup(started.pid, "SIGTERM");
    const timer = setTimeout(() => signalGroup(started.pid, "SIGKILL"), graceMs);
    const exit = await started.exited;
    clearTimeout(timer);
    // Workers that outlive their master (they should not) go too.
    signalGroup(started.pid, "SIGKILL");
    this.#started.delete(started);
    this.#writeGroups();
    return exit;
  }

  async stopAll(graceMs = 3000): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#started].map((s) => this.stop(s, graceMs)));
  }

  /** For process 'exit': no waiting possible there, so SIGKILL whatever is left. */
  killAllSync(): void {
    this.#closed = true;
    for (const s of this.#started) signalGroup(s.pid, "SIGKILL");
    this.#started.clear();
    this.#writeGroups();
  }

  /** Runs a load generator to completion, killing its group if it overruns `timeoutMs`. */
  async run(name: string, command: string, args: readonly string[], timeoutMs: number): Promise<Finished> {
    const started = this.start(name, command, args, { pipe: true });
    started.child.stdin!.end();
    let stdout = "";
    started.child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      signalGroup(started.pid, "SIGKILL");
    }, timeoutMs);
    const exit = await started.exited;
    clearTimeout(timer);
    this.#started.delete(started);
    this.#writeGroups();
    // The last stdout chunk can arrive after the exit event.
    const out = started.child.stdout!;
    if (!out.closed) await Promise.race([new Promise((resolve) => out.once("close", resolve)), sleep(2000)]);
    return { ...exit, stdout, timedOut };
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** A process and all its descendants (nginx and HAProxy in master/worker mode hold connections in several). */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // The command name may hold spaces and parentheses: fields start after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // Exited while listing.
    }
  }
  const tree: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.pop()!;
    tree.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/** Resident memory of a process tree in KiB: VmRSS per process (it covers all its threads), summed. */
export function treeRssKiB(root: number): number {
  let total = 0;
  for (const pid of processTree(root)) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      if (m) total += Number(m[1]);
    } catch {
      // Exited.
    }
  }
  return total;
}

/** Clock ticks per second of /proc/<pid>/stat's CPU times (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** CPU time (user + system, all threads) a process tree has used so far, in ms. */
export function treeCpuMs(root: number): number {
  const { userMs, systemMs } = treeCpu(root);
  return userMs + systemMs;
}

/** User and system CPU time of a process tree so far, in milliseconds. */
export function treeCpu(root: number): { userMs: number; systemMs: number } {
  let user = 0;
  let system = 0;
  for (const pid of processTree(root)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // utime and stime are fields 14 and 15 of stat(5); these fields start at field 3.
      user += Number(fields[11]);
      system += Number(fields[12]);
    } catch {
      // Exited.
    }
  }
  return { userMs: (user * 1000) / USER_HZ, systemMs: (system * 1000) / USER_HZ };
}

/**
 * The hard RLIMIT_NOFILE this process may hand to its children. Without CAP_SYS_RESOURCE
 * (containers) prlimit cannot go above it, so the benchmark sizes everything from it.
 */
export function hardNofile(): number {
  let limits = "";
  try {
    limits = readFileSync("/proc/self/limits", "utf8");
  } catch {
    // Not Linux: nothing to cap by.
  }
  const m = /^Max open files\s+\S+\s+(\d+|unlimited)/m.exec(limits);
  return !m || m[1] === "unlimited" ? Infinity : Number(m[1]);
}

/** Whether something listens on 127.0.0.1:port (read from /proc, so no traffic is sent). */
export function isListening(port: number): boolean {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const table = readFileSync("/proc/net/tcp", "utf8");
  // local_address 0100007F:PORT (127.0.0.1) or 00000000:PORT (any), state 0A = LISTEN.
  return new RegExp(`^\\s*\\d+: (0100007F|00000000):${hexPort} [0-9A-F]{8}:[0-9A-F]{4} 0A `, "m").test(table);
}

export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
