import { mkdir, open, readFile, rename } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { backendAddress, backendMaxConnections, proxyProtocol, weight } from "../config/schema.ts";
import { formatPath } from "../config/load.ts";
import { ADMIN_STATES } from "../pool/pool.ts";
import { EMPTY_STATE, type ApiBackend, type PersistedState, type StateStore } from "./store.ts";

/** The state file cannot be read, parsed or written; the message names the file. */
export class StateFileError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StateFileError";
  }
}

const entry = z.strictObject({ address: backendAddress, weight });
const apiBackend = z
  .strictObject({
    address: backendAddress,
    weight,
    max_connections: backendMaxConnections.optional(),
    backup: z.boolean().optional(),
    proxy_protocol: proxyProtocol.optional(),
  })
  .transform((b): ApiBackend => ({
    address: b.address,
    weight: b.weight,
    ...(b.max_connections ? { maxConnections: b.max_connections } : {}),
    ...(b.backup ? { backup: true } : {}),
    ...(b.proxy_protocol ? { proxyProtocol: b.proxy_protocol } : {}),
  }));
const stateEntry = z.strictObject({ address: backendAddress, state: z.enum(ADMIN_STATES, { error: `must be one of ${ADMIN_STATES.join(", ")}` }) });
// Version 2 adds admin states, version 3 backend options (max_connections, backup,
// proxy_protocol); a file without them is written as the oldest version that holds it,
// so an older gobalancer can read it.
const fileSchema = z
  .strictObject({
    version: z.union([z.literal(1), z.literal(2), z.literal(3)], { error: "must be 1, 2 or 3 (written by a newer gobalancer?)" }),
    backends: z.array(apiBackend).default([]),
    weights: z.array(entry).default([]),
    states: z.array(stateEntry).default([]),
  })
  .superRefine((state, ctx) => {
    const stated = new Set<string>();
    state.states.forEach((e, i) => {
      if (stated.has(e.address.key)) ctx.issues.push({ code: "custom", input: e.address.key, path: ["states", i, "address"], message: `${e.address.key} appears twice` });
      stated.add(e.address.key);
    });
    const seen = new Set<string>();
    for (const [list, entries] of [["backends", state.backends], ["weights", state.weights]] as const) {
      entries.forEach((e, i) => {
        if (seen.has(e.address.key)) {
          ctx.issues.push({ code: "custom", input: e.address.key, path: [list, i, "address"], message: `${e.address.key} appears twice` });
        }
        seen.add(e.address.key);
      });
    }
  });

/**
 * The state file on disk. Writes are atomic and durable: a temporary file in the same
 * directory is written and fsynced, renamed over the real one, and the directory is
 * fsynced so the rename itself survives a crash. A reader (or a restart after
 * `kill -9` or power loss) sees the old file or the new one, never a mix.
 */
export class StateFile implements StateStore {
  readonly path: string;
  private readonly tempPath: string;

  constructor(file: string) {
    this.path = path.resolve(file);
    // One fixed temporary name: there is one writer, and a leftover from a crash is
    // simply overwritten by the next write.
    this.tempPath = `${this.path}.tmp`;
  }

  /** A missing file is an empty state; anything unreadable or invalid throws StateFileError. */
  async read(): Promise<PersistedState> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === "ENOENT") return EMPTY_STATE;
      throw new StateFileError(`cannot read state file ${this.path}: ${describeFsError(e)}`, { cause: err });
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new StateFileError(`state file ${this.path} is corrupt: not valid JSON (${(err as Error).message}); fix or remove it`, { cause: err });
    }
    const parsed = fileSchema.safeParse(raw);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`).join("; ");
      throw new StateFileError(`state file ${this.path} is invalid: ${problems}; fix or remove it`);
    }
    return { backends: parsed.data.backends, weights: parsed.data.weights, states: parsed.data.states };
  }

  async write(state: PersistedState): Promise<void> {
    const options = state.backends.some((b) => b.maxConnections || b.backup || b.proxyProtocol);
    const text = `${JSON.stringify(
      {
        version: options ? 3 : (state.states ?? []).length > 0 ? 2 : 1,
        backends: state.backends.map((b) => ({
          address: b.address.key,
          weight: b.weight,
          ...(b.maxConnections ? { max_connections: b.maxConnections } : {}),
          ...(b.backup ? { backup: true } : {}),
          ...(b.proxyProtocol ? { proxy_protocol: b.proxyProtocol } : {}),
        })),
        weights: state.weights.map((w) => ({ address: w.address.key, weight: w.weight })),
        ...((state.states ?? []).length > 0 ? { states: state.states!.map((s) => ({ address: s.address.key, state: s.state })) } : {}),
      },
      null,
      2,
    )}\n`;
    const dir = path.dirname(this.path);
    try {
      await mkdir(dir, { recursive: true });
      const file = await open(this.tempPath, "w", 0o644);
      try {
        await file.writeFile(text, "utf8");
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(this.tempPath, this.path);
      const dirHandle = await open(dir, "r");
      try {
        await dirHandle.sync();
      } finally {
        await dirHandle.close();
      }
    } catch (err) {
      throw new StateFileError(`cannot write state file ${this.path}: ${describeFsError(err as NodeJS.ErrnoException)}`, { cause: err });
    }
  }
}

function describeFsError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "it is a directory";
    case "ENOTDIR":
      return "a parent path is not a directory";
    case "ENOSPC":
      return "no space left on device";
    case "EROFS":
      return "read-only file system";
    default:
      return err.message;
  }
}
