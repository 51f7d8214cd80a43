// HTTP details of the API, each with one job: which browser origins may call
// it (CORS), reading a body under a limit, refusing an oversized one without
// resetting the connection, serving the dashboard's files under a strict
// Content-Security-Policy, and the one server-sent event writer every stream uses.

import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import type { Context } from "hono";
import { SSEStreamingApi, streamSSE } from "hono/streaming";
import { HttpError } from "./errors.js";

// --- CORS --------------------------------------------------------------------

const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

// Browser origins allowed to call the API: the gateway's own (the page it
// serves), any localhost one, and those named in `extra` ("*": every origin).
export function originAllowed(origin: string, host: string | undefined, extra: readonly string[] = []): boolean {
  if (extra.includes("*") || extra.some((o) => o.replace(/\/+$/, "") === origin)) return true;
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false; // "null" (a sandboxed frame or a file) and anything unparsable
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return false;
  return LOCAL_HOSTS.has(u.hostname) || (host !== undefined && u.host === host.toLowerCase());
}

// The headers that let an allowed origin read the answer (and, for a
// preflight, send what it asked to send: the official client adds x-stainless-*).
export function corsHeaders(origin: string, preflight: boolean, askedHeaders: string | undefined): Record<string, string> {
  const h: Record<string, string> = { "access-control-allow-origin": origin, vary: "Origin", "access-control-expose-headers": "x-request-id" };
  if (preflight) {
    h["access-control-allow-methods"] = "GET, POST, OPTIONS";
    h["access-control-allow-headers"] = askedHeaders !== undefined && /^[\w\s,-]*$/.test(askedHeaders) && askedHeaders.trim() ? askedHeaders : "authorization, content-type";
    h["access-control-max-age"] = "600";
    h.vary = "Origin, Access-Control-Request-Headers";
  }
  return h;
}

// --- bodies --------------------------------------------------------------------

export class BodyTooLarge extends HttpError {
  constructor(max: number) {
    super(413, `the request body exceeds ${max} bytes`, "invalid_request_error", null, "request_too_large");
  }
}

// The body as text; BodyTooLarge as soon as it is known to pass `max` bytes,
// leaving the rest unread (see answerAndDrain).
export function readBody(req: http.IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers["content-length"]) > max) return reject(new BodyTooLarge(max));
    const chunks: Buffer[] = [];
    let n = 0;
    const onData = (c: Buffer) => {
      n += c.length;
      if (n > max) {
        req.off("data", onData).off("end", onEnd);
        req.pause();
        reject(new BodyTooLarge(max));
        return;
      }
      chunks.push(c);
    };
    const onEnd = () => resolve(Buffer.concat(chunks).toString("utf8"));
    req.on("data", onData).on("end", onEnd).on("error", reject);
  });
}

const DRAIN_MAX_BYTES = 64 * 2 ** 20;
const DRAIN_MAX_MS = 10_000;

// Answers at once, but closes only when the client has finished sending: a
// socket closed with unread data resets the connection, and the client would
// lose the answer. A client that keeps sending past DRAIN_MAX_BYTES or
// DRAIN_MAX_MS is cut off.
export function answerAndDrain(req: http.IncomingMessage, status: number, obj: unknown): Response {
  const b = Buffer.from(JSON.stringify(obj));
  const body = new ReadableStream<Uint8Array>({
    start(out) {
      out.enqueue(b);
      let n = 0, ended = false;
      const done = () => {
        if (ended) return;
        ended = true;
        clearTimeout(timer);
        req.off("data", onData);
        out.close();
      };
      const cut = () => {
        done();
        req.socket.destroy();
      };
      const onData = (c: Buffer) => {
        n += c.length;
        if (n > DRAIN_MAX_BYTES) cut();
      };
      const timer = setTimeout(cut, DRAIN_MAX_MS).unref();
      if (req.complete) return done();
      req.on("data", onData).once("end", done).once("close", done);
      req.resume();
    },
  });
  return new Response(body, { status, headers: { "content-type": "application/json", "content-length": String(b.length), connection: "close" } });
}

// --- the dashboard's files ---------------------------------------------------

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon" };

// No inline script or style, nothing from elsewhere, no framing.
export const DASHBOARD_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

// The file under `dir` that a GET of `pathname` names, if there is one.
export function staticFile(dir: string, pathname: string): string | undefined {
  let rel: string;
  try {
    rel = pathname === "/" ? "index.html" : decodeURIComponent(pathname).replace(/^\/+/, "");
  } catch {
    return undefined; // a malformed %-escape
  }
  const file = path.resolve(dir, rel);
  if (!file.startsWith(path.resolve(dir) + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) return undefined;
  return file;
}

export function serveFile(file: string): Response {
  const b = fs.readFileSync(file);
  return new Response(b, {
    status: 200,
    headers: {
      "content-type": TYPES[path.extname(file)] ?? "application/octet-stream", "cache-control": "no-cache",
      "content-security-policy": DASHBOARD_CSP, "referrer-policy": "no-referrer",
    },
  });
}

export function json(status: number, obj: unknown): Response {
  return new Response(JSON.stringify(obj), { status, headers: { "content-type": "application/json" } });
}

// --- server-sent events --------------------------------------------------------

// The one writer behind every event stream (completions, chat, the swarm's
// events). Each `send` resolves once the connection has taken the event, so a
// producer that awaits it goes no faster than its client reads; `signal`
// aborts when the client goes away; `backlogBytes` is what is written but not
// yet taken, for producers that must not wait on a slow client (a broadcast).
export class EventStream {
  private ac = new AbortController();
  backlogBytes = 0;
  constructor(private s: SSEStreamingApi) {
    s.onAbort(() => this.ac.abort());
  }
  get signal(): AbortSignal {
    return this.ac.signal;
  }
  // `data: <JSON>` (after `event: <name>` when named)
  send(data: unknown, event?: string): Promise<void> {
    return this.write(JSON.stringify(data), event);
  }
  // OpenAI's end of stream: `data: [DONE]`
  done(): Promise<void> {
    return this.write("[DONE]");
  }
  // Ends the stream now (a client too far behind).
  cut(): void {
    this.s.abort();
  }
  private async write(data: string, event?: string): Promise<void> {
    if (this.ac.signal.aborted) return;
    this.backlogBytes += data.length;
    try {
      await this.s.writeSSE({ data, event });
    } finally {
      this.backlogBytes -= data.length;
    }
  }
}

// A text/event-stream response fed by `run`; the stream ends when `run` settles
// (it should catch its own errors: one thrown is logged and ends the stream).
export function eventStream(c: Context, run: (out: EventStream) => Promise<void>): Response {
  return streamSSE(c, async (s) => {
    const out = new EventStream(s);
    const onAbort = () => s.abort();
    const reqSignal = c.req.raw.signal;
    if (reqSignal.aborted) return;
    reqSignal.addEventListener("abort", onAbort, { once: true });
    try {
      await run(out);
    } finally {
      reqSignal.removeEventListener("abort", onAbort);
    }
  }, async (e) => {
    process.stderr.write(JSON.stringify({ level: "error", scope: "api", event: "stream failed", error: e.message }) + "\n");
  });
}
