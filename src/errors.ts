// Typed errors with a stable code and an actionable message. Mapped to exit codes
// (CLI) and HTTP/OpenAI errors (API) in one place each.

export type ErrorCode =
  | "BAD_FILE" // a model file that is truncated, corrupt or not GGUF
  | "UNSUPPORTED" // a weight type or architecture we do not implement
  | "BAD_RANGE" // a layer range outside the model
  | "CONTEXT_OVERFLOW" // a session would exceed its context length
  | "OUT_OF_MEMORY" // KV memory budget exhausted
  | "BAD_ARGUMENT" // a caller passed something invalid
  | "UNKNOWN_SESSION"
  | "NO_ROUTE" // the swarm cannot cover every layer right now
  | "INTERNAL"
  | "ABORTED";

export class LayerswarmError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LayerswarmError";
    this.code = code;
  }
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new LayerswarmError("ABORTED", "operation aborted", { cause: signal.reason });
}
