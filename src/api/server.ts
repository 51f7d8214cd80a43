// OpenAI-compatible HTTP API: GET /v1/models, POST /v1/completions and
// POST /v1/chat/completions, streaming (server-sent events) or not. It sees the
// model only through an Engine, so it can be tested with any LayerStack.

import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { randomBytes, timingSafeEqual } from "node:crypto";
import { AddressInfo } from "node:net";
import { Model, LayerStack, generate } from "../model/model.js";
import { ChatMessage, ChatTemplate } from "../tokenizer/chat.js";
import { TextDecoderStream } from "../tokenizer/index.js";
import { HttpError, toHttpError } from "./errors.js";
import { LayerswarmError } from "../errors.js";

export interface ApiOptions {
  modelId: string;
  apiKey?: string;
  maxBodyBytes?: number; // default 1 MiB
  defaultMaxTokens?: number; // /v1/completions default 16 (as OpenAI); chat: until the end
  routes?: Record<string, (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>>; // extra GET routes
  staticDir?: string; // files served at / (the dashboard)
  onRequest?: (kind: string) => void;
  onTokens?: (n: number) => void;
  onFirstToken?: (ms: number) => void;
  onError?: (status: number) => void;
  onActive?: (n: number) => void;
}

interface Params {
  prompt: number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
}

export class ApiServer {
  private server: http.Server;
  private template: ChatTemplate;
  readonly created = Math.floor(Date.now() / 1000);
  active = 0;

  constructor(private model: Model, private stack: LayerStack, private o: ApiOptions) {
    this.template = ChatTemplate.fromGGUF(model.file, model.tokenizer);
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5000;
  }

  listen(port: number, host = "127.0.0.1"): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", (e: NodeJS.ErrnoException) =>
        reject(e.code === "EADDRINUSE" ? new LayerswarmError("BAD_ARGUMENT", `${host}:${port} is already in use: choose another --port`) : e));
      this.server.listen(port, host, () => resolve((this.server.address() as AddressInfo).port));
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  // Authorization: Bearer KEY, or ?api_key=KEY on GET (a browser's EventSource cannot send headers)
  private authorized(req: http.IncomingMessage, url: URL): boolean {
    if (!this.o.apiKey) return true;
    const h = req.headers.authorization ?? "";
    const m = /^Bearer (.+)$/.exec(h);
    const given = m?.[1] ?? (req.method === "GET" ? url.searchParams.get("api_key") : null);
    if (!given) return false;
    const a = Buffer.from(given), b = Buffer.from(this.o.apiKey);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    try {
      if (req.method === "OPTIONS") {
        res.writeHead(204, cors());
        res.end();
        return;
      }
      const extra = this.o.routes?.[url.pathname];
      if (extra && req.method === "GET" && !url.pathname.startsWith("/v1/")) return await extra(req, res);
      if (url.pathname.startsWith("/v1/") && !this.authorized(req, url))
        throw new HttpError(401, "invalid or missing API key (send Authorization: Bearer <key>)", "invalid_request_error", null, "invalid_api_key");
      if (extra && req.method === "GET") return await extra(req, res);
      if (this.o.staticDir && req.method === "GET" && !url.pathname.startsWith("/v1/")) return serveStatic(this.o.staticDir, url.pathname, res);
      if (url.pathname === "/v1/models" && req.method === "GET") return json(res, 200, { object: "list", data: [this.modelObject()] });
      if (url.pathname === `/v1/models/${this.o.modelId}` && req.method === "GET") return json(res, 200, this.modelObject());
      if (url.pathname === "/v1/completions" || url.pathname === "/v1/chat/completions") {
        if (req.method !== "POST") throw new HttpError(405, `${url.pathname} takes POST`);
        const body = await readBody(req, this.o.maxBodyBytes ?? 2 ** 20);
        this.o.onRequest?.(url.pathname);
        return await this.complete(res, body, url.pathname === "/v1/chat/completions");
      }
      throw new HttpError(404, `no route ${req.method} ${url.pathname}`, "invalid_request_error", null, "not_found");
    } catch (e) {
      const he = toHttpError(e);
      this.o.onError?.(he.status);
      if (!res.headersSent) json(res, he.status, he.body());
      else res.end();
    }
  }

  private modelObject() {
    return { id: this.o.modelId, object: "model", created: this.created, owned_by: "layerswarm", context_length: this.model.cfg.contextLength };
  }

  private params(body: Record<string, unknown>, chat: boolean): Params {
    const num = (k: string, lo: number, hi: number): number | undefined => {
      const v = body[k];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi) throw new HttpError(400, `'${k}' must be a number in [${lo}, ${hi}]`, "invalid_request_error", k);
      return v;
    };
    if (body.model !== undefined && typeof body.model !== "string") throw new HttpError(400, "'model' must be a string", "invalid_request_error", "model");
    if (body.n !== undefined && body.n !== 1) throw new HttpError(400, "only n = 1 is supported", "invalid_request_error", "n");
    let prompt: number[];
    if (chat) {
      const msgs = body.messages;
      if (!Array.isArray(msgs) || msgs.length === 0) throw new HttpError(400, "'messages' must be a non-empty array", "invalid_request_error", "messages");
      const norm: ChatMessage[] = msgs.map((m, i) => {
        const mm = m as { role?: unknown; content?: unknown };
        if (!mm || typeof mm.role !== "string") throw new HttpError(400, `'messages[${i}].role' must be a string`, "invalid_request_error", `messages[${i}].role`);
        let content: string;
        if (typeof mm.content === "string") content = mm.content;
        else if (Array.isArray(mm.content))
          content = mm.content.map((p: { type?: string; text?: unknown }, j: number) => {
            if (p?.type !== "text" || typeof p.text !== "string") throw new HttpError(400, `'messages[${i}].content[${j}]' must be a text part`, "invalid_request_error", `messages[${i}].content`);
            return p.text;
          }).join("");
        else if (mm.content === null || mm.content === undefined) content = "";
        else throw new HttpError(400, `'messages[${i}].content' must be a string or an array of text parts`, "invalid_request_error", `messages[${i}].content`);
        return { role: mm.role, content };
      });
      prompt = this.template.encode(norm);
    } else {
      const p = body.prompt;
      if (typeof p === "string") prompt = this.model.tokenizer.encode(p);
      else if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") prompt = this.model.tokenizer.encode(p[0]);
      else if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x) && x >= 0 && x < this.model.cfg.vocabSize)) prompt = p as number[];
      else throw new HttpError(400, "'prompt' must be a string, a one-string array, or an array of token ids", "invalid_request_error", "prompt");
      if (prompt.length === 0) prompt = this.model.tokenizer.bos !== undefined ? [this.model.tokenizer.bos] : [];
      if (prompt.length === 0) throw new HttpError(400, "'prompt' encodes to no tokens", "invalid_request_error", "prompt");
    }
    const ctx = this.model.cfg.contextLength;
    if (prompt.length >= ctx)
      throw new HttpError(400, `the prompt has ${prompt.length} tokens; the model's context holds ${ctx}`, "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded");
    const mt = num("max_completion_tokens", 1, 1e9) ?? num("max_tokens", 1, 1e9) ?? (chat ? ctx : (this.o.defaultMaxTokens ?? 16));
    const stopRaw = body.stop;
    let stop: string[] = [];
    if (typeof stopRaw === "string") stop = [stopRaw];
    else if (Array.isArray(stopRaw) && stopRaw.every((s) => typeof s === "string") && stopRaw.length <= 4) stop = stopRaw as string[];
    else if (stopRaw !== undefined && stopRaw !== null) throw new HttpError(400, "'stop' must be a string or up to 4 strings", "invalid_request_error", "stop");
    if (body.stream !== undefined && typeof body.stream !== "boolean") throw new HttpError(400, "'stream' must be a boolean", "invalid_request_error", "stream");
    const so = body.stream_options as { include_usage?: unknown } | undefined;
    const seed = num("seed", -(2 ** 53), 2 ** 53);
    return {
      prompt,
      maxTokens: Math.min(mt, ctx - prompt.length),
      temperature: num("temperature", 0, 2) ?? 1,
      topP: num("top_p", 0, 1) ?? 1,
      seed: seed === undefined ? undefined : Math.trunc(seed),
      stop: stop.filter((s) => s.length > 0),
      stream: body.stream === true,
      includeUsage: !!so?.include_usage,
    };
  }

  private async complete(res: http.ServerResponse, raw: string, chat: boolean): Promise<void> {
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(raw);
    } catch {
      throw new HttpError(400, "the request body is not valid JSON");
    }
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new HttpError(400, "the request body must be a JSON object");
    const p = this.params(body, chat);
    const id = `${chat ? "chatcmpl" : "cmpl"}-${randomBytes(12).toString("hex")}`;
    const created = Math.floor(Date.now() / 1000);
    const ac = new AbortController();
    const onClose = () => { if (!res.writableFinished) ac.abort(); };
    res.on("close", onClose);
    const object = chat ? "chat.completion.chunk" : "text_completion";
    const chunk = (text: string | null, finish: string | null, first = false) =>
      chat
        ? { id, object, created, model: this.o.modelId, choices: [{ index: 0, delta: first ? { role: "assistant", content: "" } : text === null ? {} : { content: text }, logprobs: null, finish_reason: finish }] }
        : { id, object, created, model: this.o.modelId, choices: [{ index: 0, text: text ?? "", logprobs: null, finish_reason: finish }] };
    const send = (obj: unknown) => res.write(`data: ${JSON.stringify(obj)}\n\n`);
    let completion = 0, finish = "length", text = "", stoppedBySeq = false;
    const t0 = Date.now();
    this.active++;
    this.o.onActive?.(this.active);
    try {
      if (p.stream) {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", ...cors() });
        if (chat) send(chunk(null, null, true));
      }
      const dec = new TextDecoderStream(this.model.tokenizer, p.prompt.at(-1));
      const stops = new StopMatcher(p.stop);
      for await (const t of generate(this.model, this.stack, p.prompt, { maxTokens: p.maxTokens, temperature: p.temperature, topP: p.topP, seed: p.seed, signal: ac.signal })) {
        if (completion++ === 0) this.o.onFirstToken?.(Date.now() - t0);
        this.o.onTokens?.(1);
        if (this.model.tokenizer.eog.has(t.id)) {
          finish = "stop";
          break;
        }
        const { emit, stopped } = stops.push(dec.push(t.id));
        if (emit) (p.stream ? send(chunk(emit, null)) : (text += emit));
        if (stopped) {
          finish = "stop";
          stoppedBySeq = true;
          break;
        }
      }
      if (!stoppedBySeq) {
        const rest = stops.flush(dec.flush());
        if (rest) (p.stream ? send(chunk(rest, null)) : (text += rest));
      }
      const usage = { prompt_tokens: p.prompt.length, completion_tokens: completion, total_tokens: p.prompt.length + completion };
      if (p.stream) {
        send(chunk(null, finish));
        if (p.includeUsage) send({ id, object, created, model: this.o.modelId, choices: [], usage });
        res.end("data: [DONE]\n\n");
      } else {
        json(res, 200, chat
          ? { id, object: "chat.completion", created, model: this.o.modelId, choices: [{ index: 0, message: { role: "assistant", content: text }, logprobs: null, finish_reason: finish }], usage }
          : { id, object: "text_completion", created, model: this.o.modelId, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }], usage });
      }
    } catch (e) {
      if (ac.signal.aborted) return; // the client went away
      const he = toHttpError(e);
      this.o.onError?.(he.status);
      if (p.stream && res.headersSent) {
        send(he.body());
        res.end("data: [DONE]\n\n");
      } else throw he;
    } finally {
      this.active--;
      this.o.onActive?.(this.active);
      res.off("close", onClose);
    }
  }
}

// Holds back text that could be the start of a stop sequence.
export class StopMatcher {
  private buf = "";
  constructor(private stops: string[]) {}
  push(s: string): { emit: string; stopped: boolean } {
    this.buf += s;
    if (this.stops.length === 0) {
      const out = this.buf;
      this.buf = "";
      return { emit: out, stopped: false };
    }
    let cut = -1;
    for (const st of this.stops) {
      const i = this.buf.indexOf(st);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      const out = this.buf.slice(0, cut);
      this.buf = "";
      return { emit: out, stopped: true };
    }
    // keep the longest suffix that is a prefix of some stop sequence
    let keep = 0;
    for (const st of this.stops)
      for (let k = Math.min(st.length - 1, this.buf.length); k > keep; k--)
        if (this.buf.endsWith(st.slice(0, k))) { keep = k; break; }
    const out = this.buf.slice(0, this.buf.length - keep);
    this.buf = this.buf.slice(this.buf.length - keep);
    return { emit: out, stopped: false };
  }
  flush(s: string): string {
    const { emit, stopped } = this.push(s);
    if (stopped) return emit;
    const out = emit + this.buf;
    this.buf = "";
    return out;
  }
}

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon" };

function serveStatic(dir: string, pathname: string, res: http.ServerResponse): void {
  const rel = pathname === "/" ? "index.html" : decodeURIComponent(pathname).replace(/^\/+/, "");
  const file = path.resolve(dir, rel);
  if (!file.startsWith(path.resolve(dir) + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile())
    throw new HttpError(404, `no route GET ${pathname}`, "invalid_request_error", null, "not_found");
  const b = fs.readFileSync(file);
  res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream", "content-length": b.length, "cache-control": "no-cache" });
  res.end(b);
}

function cors(): Record<string, string> {
  return { "access-control-allow-origin": "*", "access-control-allow-headers": "authorization, content-type", "access-control-allow-methods": "GET, POST, OPTIONS" };
}

export function json(res: http.ServerResponse, status: number, obj: unknown): void {
  const b = JSON.stringify(obj);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(b), ...cors() });
  res.end(b);
}

function readBody(req: http.IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on("data", (c: Buffer) => {
      n += c.length;
      if (n > max) {
        reject(new HttpError(413, `the request body exceeds ${max} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}
