// Typed errors with a stable code and an actionable message. Mapped to exit codes
// (CLI) and HTTP/OpenAI errors (API) in one place each. Codes that arrive from
// the network are validated with `errorCode()`, never cast.

export const ERROR_CODES = [
  "BAD_FILE", // a model file that is truncated, corrupt or not GGUF
  "UNSUPPORTED", // a weight type or architecture we do not implement
  "BAD_RANGE", // a layer range outside the model, or not held here
  "CONTEXT_OVERFLOW", // a session would exceed its context length
  "OUT_OF_MEMORY", // KV memory budget exhausted
  "BAD_ARGUMENT", // a caller passed something invalid
  "UNKNOWN_SESSION", // no such session here (or not yours: the answer is the same)
  "NO_ROUTE", // the swarm cannot cover every layer right now
  "FORBIDDEN", // the peer is not allowed to do this (policy, ownership, route)
  "BAD_MESSAGE", // a peer sent something that breaks the protocol
  "BUSY", // a limit was reached (sessions, rows, streams); try later or elsewhere
  "UNREACHABLE", // a peer could not be reached or stopped answering
  "BAD_RECEIPT", // a stage's receipt does not match the rows it sent (or is not its own): the step is refused
  "VERIFY_FAILED", // strict verification: the routes disagreed and no audit could tell which is right (nothing was released)
  "INTERNAL",
  "ABORTED",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const KNOWN = new Set<string>(ERROR_CODES);

// A code received from a peer: one of ours, or INTERNAL.
export function errorCode(x: unknown): ErrorCode {
  return typeof x === "string" && KNOWN.has(x) ? (x as ErrorCode) : "INTERNAL";
}

export class LayerswarmError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LayerswarmError";
    this.code = code;
  }
}

export function codeOf(e: unknown): ErrorCode {
  return e instanceof LayerswarmError ? e.code : "INTERNAL";
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new LayerswarmError("ABORTED", "operation aborted", { cause: signal.reason });
}
