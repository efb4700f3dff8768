/**
 * What a running gobalancer reports, as the end-to-end suites read it: its access log (a
 * file `access.log` in its directory) and its Prometheus metrics, parsed by a real
 * text-format parser.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import parsePrometheusTextFormat, { type MetricFamily } from "parse-prometheus-text-format";
import type { BalancerProcess } from "./harness.ts";

/** One access-log line (the contract's fields). */
export interface AccessLine {
  client: string;
  backend: string;
  termination: string;
  attempts: number;
  bytes_in: number;
  bytes_out: number;
  duration_ms: number;
  connect_ms: number | null;
}

/** The lines written so far to `access.log` in the balancer's directory ([] before the first). */
export function accessLines(lb: BalancerProcess): AccessLine[] {
  let text = "";
  try {
    text = readFileSync(path.join(lb.dir, "access.log"), "utf8");
  } catch {
    return [];
  }
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as AccessLine);
}

export type Scrape = MetricFamily[] & { text: string };

/** GET /metrics (with `token` when given), checked to be Prometheus text, parsed. */
export async function scrape(lb: BalancerProcess, token?: string): Promise<Scrape> {
  const res = await fetch(`${lb.api}/metrics`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return Object.assign(parsePrometheusTextFormat(text), { text });
}

/** The value of `name` for the sample whose labels include `labels`; undefined when absent. */
export function valueOf(families: MetricFamily[], name: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.find((f) => f.name === name);
  const sample = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return sample?.value === undefined ? undefined : Number(sample.value);
}
