import { readFileSync } from "node:fs";

/** GoBalancer's version, from package.json (dist/ and src/ both sit right below it). */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}
