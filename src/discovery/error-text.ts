import { isObject, type Json } from "./json.ts";

/**
 * One line for a failed call to a discovery backend, for the `err` field of a log line:
 * "HTTP <status>: <the server's message>" when the server answered with an error, else
 * the network error with its cause ("connect ECONNREFUSED …", "The operation was aborted:
 * no answer in 10000ms").
 *
 * Understands the errors of both clients: client-node's ApiException (`code`, `body`) and
 * docker-modem's (`statusCode`, `json`), and Node's system errors.
 */
export function errorText(err: unknown): string {
  if (!isObject(err) && !(err instanceof Error)) return String(err);
  const e = err as Json & { message?: unknown; cause?: unknown };
  const status = typeof e.code === "number" ? e.code : typeof e.statusCode === "number" ? e.statusCode : undefined;
  if (status !== undefined) {
    const detail = serverMessage(e.body) ?? serverMessage(e.json) ?? messageDetail(e.message);
    return `HTTP ${status}${detail ? `: ${detail}` : ""}`;
  }
  const cause = isObject(e.cause) || e.cause instanceof Error ? (e.cause as Json) : undefined;
  const causeText = cause ? String(cause.message ?? cause.code ?? "") : "";
  const message = typeof e.message === "string" && e.message !== "" ? e.message : typeof e.code === "string" ? e.code : String(err);
  return causeText && !message.includes(causeText) ? `${message}: ${causeText}` : message;
}

/** The `message` of an error response's body (a parsed object or JSON text); undefined if none. */
function serverMessage(body: unknown): string | undefined {
  if (isObject(body)) return typeof body.message === "string" ? body.message : undefined;
  if (typeof body !== "string" || body === "") return undefined;
  try {
    const parsed: unknown = JSON.parse(body);
    return isObject(parsed) && typeof parsed.message === "string" ? parsed.message : "";
  } catch {
    return body.slice(0, 200);
  }
}

/** What an HTTP error's own message adds beyond its status. */
function messageDetail(message: unknown): string {
  if (typeof message !== "string") return "";
  // client-node's ApiException message is "HTTP-Code: 401\nMessage: Unauthorized\nBody: …".
  return /^Message: (.*)$/m.exec(message)?.[1] ?? (message.startsWith("HTTP-Code") ? "" : message);
}
