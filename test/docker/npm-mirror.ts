/**
 * A read-only npm registry mirror on this machine that answers from its npm cache, which
 * `make` filled when it installed the project's dependencies. The image build's `npm ci`
 * uses it (--build-arg NPM_CONFIG_REGISTRY) instead of the public registry, so the test
 * sends no traffic off the machine. npm rewrites the registry host of the tarball URLs
 * in package documents to the configured registry, so both are served from here.
 */
import { execFileSync } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { createRequire } from "node:module";
import path from "node:path";
import { pipeline } from "node:stream/promises";

const UPSTREAM = "https://registry.npmjs.org";

interface Cacache {
  get: {
    info(cache: string, key: string): Promise<{ metadata?: { resHeaders?: Record<string, string> } } | null>;
    stream(cache: string, key: string): NodeJS.ReadableStream;
  };
}

export interface NpmMirror {
  readonly url: string;
  /** Paths asked for that the cache did not have. */
  readonly misses: string[];
  close(): Promise<void>;
}

/** The npm that `make` uses (the machine's), and its cache directory. */
export function hostNpm(): { dir: string; cache: string } {
  const cli = execFileSync("sh", ["-c", "readlink -f \"$(command -v npm)\""], { encoding: "utf8" }).trim();
  const dir = path.resolve(path.dirname(cli), "..");
  const cache = execFileSync("npm", ["config", "get", "cache"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  return { dir, cache: path.join(cache, "_cacache") };
}

/** Listens on `host`, an address of this machine that the image build can reach. */
export async function startNpmMirror(host: string): Promise<NpmMirror> {
  const npm = hostNpm();
  // npm's own copy of cacache reads the cache exactly as npm wrote it.
  const cacache = createRequire(path.join(npm.dir, "package.json"))("cacache") as Cacache;
  const misses: string[] = [];
  const server = http.createServer((req, res) => {
    const key = `make-fetch-happen:request-cache:${UPSTREAM}${req.url ?? "/"}`;
    void cacache.get.info(npm.cache, key).then(async (info) => {
      if (!info || req.method !== "GET") {
        misses.push(req.url ?? "");
        res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not in the local npm cache"}');
        return;
      }
      res.writeHead(200, { "content-type": info.metadata?.resHeaders?.["content-type"] ?? "application/octet-stream" });
      await pipeline(cacache.get.stream(npm.cache, key), res);
    }).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host}:${port}/`,
    misses,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
