/**
 * JSON of unknown shape from a discovery backend (an API server's objects, a client
 * library's error bodies), read field by field: a JSON object as a record of its fields.
 */
export type Json = Record<string, unknown>;

/** Whether `v` is a JSON object (not null, not an array), so its fields can be read. */
export function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
