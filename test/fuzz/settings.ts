// How much each property-based test tries, the same way for every surface: a fixed seed
// (FUZZ_SEED overrides it, so any failure can be replayed) and a small number of inputs
// for `make test`; `make fuzz` sets FUZZ_RUNS high. FUZZ_TIME_LIMIT_S caps each property
// so a long run always ends by itself.
import type { TestContext } from "node:test";
import fc from "fast-check";

export const FUZZ_SEED = envInt("FUZZ_SEED", 19_2026);
const FUZZ_RUNS = process.env.FUZZ_RUNS ? envInt("FUZZ_RUNS", 0) : undefined;
const TIME_LIMIT_MS = envInt("FUZZ_TIME_LIMIT_S", 300) * 1000;

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** Runs for a property: FUZZ_RUNS when set, else the property's own small default. */
export function runsFor(defaultRuns: number): number {
  return FUZZ_RUNS ?? defaultRuns;
}

/**
 * Checks `property` with the shared seed and run count, fails the test with fast-check's
 * report (seed and counterexample path included), and records what was tried as a test
 * diagnostic: "<name>: N inputs in T ms (seed S)".
 */
export async function checkProperty<T>(
  t: TestContext,
  name: string,
  property: fc.IAsyncPropertyWithHooks<T> | fc.IPropertyWithHooks<T>,
  defaultRuns: number,
): Promise<void> {
  const started = performance.now();
  const details = await fc.check(property as fc.IAsyncPropertyWithHooks<T>, {
    seed: FUZZ_SEED,
    numRuns: runsFor(defaultRuns),
    interruptAfterTimeLimit: TIME_LIMIT_MS,
    endOnFailure: false,
    includeErrorInReport: true,
  });
  const ms = Math.round(performance.now() - started);
  const line = `fuzz ${name}: ${details.numRuns} inputs in ${ms} ms (seed ${FUZZ_SEED}${details.interrupted ? ", stopped at the time limit" : ""})`;
  t.diagnostic(line);
  if (process.env.FUZZ_REPORT) process.stderr.write(`${line}\n`);
  if (details.failed) throw new Error(await fc.asyncDefaultReportMessage(details));
}
