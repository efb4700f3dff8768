const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;

/**
 * Parses Go-style durations ("250ms", "5s", "1m30s", "1.5h") into milliseconds.
 * Returns undefined when the text is not a duration, so the caller can name the field.
 */
export function parseDuration(text: string): number | undefined {
  if (text === "0") return 0;
  let total = 0;
  PART.lastIndex = 0;
  let matched = 0;
  while (PART.lastIndex < text.length) {
    const m = PART.exec(text);
    if (!m) return undefined;
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    matched++;
  }
  return matched > 0 ? Math.round(total) : undefined;
}

/** Formats milliseconds back into the shortest Go-style duration, for logs and errors. */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  if (ms > 1000) return `${ms / 1000}s`;
  return `${ms}ms`;
}
