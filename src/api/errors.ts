// Errors as OpenAI error objects, mapped from our typed errors in one place
// (the API server's one error handler calls toHttpError on whatever was thrown).

import { LayerswarmError } from "../errors.js";

export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly type = "invalid_request_error", readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
  }
  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
  response(): Response {
    return new Response(JSON.stringify(this.body()), { status: this.status, headers: { "content-type": "application/json" } });
  }
}

export function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof LayerswarmError) {
    switch (e.code) {
      case "CONTEXT_OVERFLOW": return new HttpError(400, e.message, "invalid_request_error", null, "context_length_exceeded");
      case "BAD_ARGUMENT": return new HttpError(400, e.message, "invalid_request_error", null, e.code.toLowerCase());
      case "NO_ROUTE": return new HttpError(503, e.message, "server_error", null, "no_route");
      case "OUT_OF_MEMORY": return new HttpError(503, e.message, "server_error", null, "out_of_memory");
      case "BUSY": return new HttpError(503, e.message, "server_error", null, "busy");
      case "UNREACHABLE": return new HttpError(503, e.message, "server_error", null, "unreachable");
      case "ABORTED": return new HttpError(499, e.message, "server_error", null, "aborted");
      default: return new HttpError(500, e.message, "server_error", null, e.code.toLowerCase());
    }
  }
  return new HttpError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, "server_error");
}
