// OpenAI-compatible HTTP API: GET /v1/models, POST /v1/completions and
// POST /v1/chat/completions, streaming (server-sent events) or not, GET /health,
// the dashboard's files and the extra routes given (the swarm's views). It sees
// the model only through an Engine, so it can be tested with any LayerStack.
//
// With an API key, everything but /health and the dashboard's files needs it.
// Browsers may call it from the gateway's own page, from localhost pages, and
// from the origins named in corsOrigins; other origins get 403. A prompt is
// tokenized in slices, yielding to other requests in between, and refused as
// soon as it cannot fit the context (before tokenizing at all when its length
// alone proves it).

import * as http from "node:http";
import { randomBytes, timingSafeEqual } from "node:crypto";
import { AddressInfo } from "node:net";
import { Model, LayerStack, generate } from "../model/model.js";
import { ChatTemplate } from "../tokenizer/chat.js";
import { EncodeOptions, TextDecoderStream } from "../tokenizer/index.js";
import { HttpError, toHttpError } from "./errors.js";
import { BodyTooLarge, answerAndDrain, corsHeaders, json, keepCorsDecision, originAllowed, readBody, serveFile, staticFile } from "./http.js";
import { Params, parseParams } from "./params.js";
import { LayerswarmError, throwIfAborted } from "../errors.js";

export { json } from "./http.js";

export interface ApiOptions {
  modelId: string;
  apiKey?: string;
  corsOrigins?: string[]; // browser origins allowed besides the gateway's own and localhost ones ("*": any)
  maxBodyBytes?: number; // default 1 MiB
  defaultMaxTokens?: number; // /v1/completions default 16 (as OpenAI); chat: until the end
  routes?: Record<string, (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>>; // extra GET routes (need the API key)
  staticDir?: string; // files served at / (the dashboard)
  onRequest?: (kind: string) => void;
  onTokens?: (n: number) => void;
  onFirstToken?: (ms: number) => void;
  onError?: (status: number) => void;
  onActive?: (n: number) => void;
}

const SLICE_MS = 10; // tokenizing yields to other requests this often

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

  // Authorization: Bearer KEY (any case), or ?api_key=KEY on GET (a browser's EventSource cannot send headers)
  private authorized(req: http.IncomingMessage, url: URL): boolean {
    if (!this.o.apiKey) return true;
    const h = req.headers.authorization ?? "";
    const m = /^bearer\s+(\S+)\s*$/i.exec(h);
    const given = m?.[1] ?? (req.method === "GET" ? url.searchParams.get("api_key") : null);
    if (!given) return false;
    const a = Buffer.from(given), b = Buffer.from(this.o.apiKey);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    res.setHeader("x-request-id", `req_${randomBytes(12).toString("hex")}`);
    res.setHeader("x-content-type-options", "nosniff");
    res.setHeader("vary", "Origin"); // the CORS headers depend on it
    try {
      const origin = req.headers.origin;
      if (origin !== undefined) {
        if (!originAllowed(origin, req.headers.host, this.o.corsOrigins))
          throw new HttpError(403, `the origin ${origin} may not call this API: allow it with --cors-origin ${origin}`, "invalid_request_error", null, "origin_not_allowed");
        for (const [k, v] of Object.entries(corsHeaders(origin, req))) res.setHeader(k, v);
        keepCorsDecision(res);
      }
      if (req.method === "OPTIONS") {
        if (origin === undefined) res.setHeader("allow", "GET, POST, OPTIONS");
        res.writeHead(204);
        res.end();
        return;
      }
      if (url.pathname === "/health" && req.method === "GET") return json(res, 200, { status: "ok" });
      const extra = this.o.routes?.[url.pathname];
      const file = !extra && this.o.staticDir && req.method === "GET" && !url.pathname.startsWith("/v1/") ? staticFile(this.o.staticDir, url.pathname) : undefined;
      if (file) return serveFile(file, res);
      if (!this.authorized(req, url))
        throw new HttpError(401, "invalid or missing API key (send Authorization: Bearer <key>)", "invalid_request_error", null, "invalid_api_key");
      if (extra && req.method === "GET") return await extra(req, res);
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
      if (res.headersSent) res.end();
      else if (he instanceof BodyTooLarge) answerAndDrain(req, res, he.status, he.body());
      else json(res, he.status, he.body());
    }
  }

  private modelObject() {
    return { id: this.o.modelId, object: "model", created: this.created, owned_by: "layerswarm", context_length: this.model.cfg.contextLength };
  }

  // The prompt's token ids. Text is tokenized in slices, letting other requests
  // run in between, and refused as soon as it cannot fit the context.
  private async promptTokens(p: Params["prompt"], signal: AbortSignal): Promise<number[]> {
    const ctx = this.model.cfg.contextLength, tok = this.model.tokenizer;
    const param = "messages" in p ? "messages" : "prompt";
    const tooLong = (what: string) =>
      new HttpError(400, `the prompt has ${what} tokens; the model's context holds ${ctx}`, "invalid_request_error", param, "context_length_exceeded");
    if ("ids" in p) {
      if (p.ids.length >= ctx) throw tooLong(String(p.ids.length));
      if (!p.ids.every((x) => x >= 0 && x < this.model.cfg.vocabSize))
        throw new HttpError(400, `'prompt' token ids must be in [0, ${this.model.cfg.vocabSize})`, "invalid_request_error", "prompt");
      return p.ids;
    }
    const { text, opts }: { text: string; opts: EncodeOptions } = "messages" in p ? this.template.prompt(p.messages) : { text: p.text, opts: {} };
    const atLeast = Math.ceil(Buffer.byteLength(text) / tok.maxTokenBytes);
    if (atLeast >= ctx) throw tooLong(`at least ${atLeast}`);
    const ids: number[] = [];
    let sliceStart = performance.now();
    for (const chunk of tok.encodeChunks(text, opts)) {
      for (const id of chunk) ids.push(id);
      if (ids.length >= ctx) throw tooLong(`at least ${ids.length}`);
      if (performance.now() - sliceStart > SLICE_MS) {
        await new Promise((r) => setImmediate(r));
        throwIfAborted(signal);
        sliceStart = performance.now();
      }
    }
    if (ids.length === 0 && tok.bos !== undefined) ids.push(tok.bos);
    if (ids.length === 0) throw new HttpError(400, `'${param}' encodes to no tokens`, "invalid_request_error", param);
    return ids;
  }

  private async complete(res: http.ServerResponse, raw: string, chat: boolean): Promise<void> {
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(raw);
    } catch {
      throw new HttpError(400, "the request body is not valid JSON");
    }
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new HttpError(400, "the request body must be a JSON object");
    const p = parseParams(body, chat);
    const ac = new AbortController();
    const onClose = () => { if (!res.writableFinished) ac.abort(); };
    res.on("close", onClose);
    try {
      let prompt: number[];
      try {
        prompt = await this.promptTokens(p.prompt, ac.signal);
      } catch (e) {
        if (ac.signal.aborted) return; // the client went away
        throw e;
      }
      await this.generate(res, p, prompt, chat, ac);
    } finally {
      res.off("close", onClose);
    }
  }

  private async generate(res: http.ServerResponse, p: Params, prompt: number[], chat: boolean, ac: AbortController): Promise<void> {
    const ctx = this.model.cfg.contextLength;
    const maxTokens = Math.min(p.maxTokens ?? (chat ? ctx : (this.o.defaultMaxTokens ?? 16)), ctx - prompt.length);
    const id = `${chat ? "chatcmpl" : "cmpl"}-${randomBytes(12).toString("hex")}`;
    const created = Math.floor(Date.now() / 1000);
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
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
        if (chat) send(chunk(null, null, true));
      }
      const dec = new TextDecoderStream(this.model.tokenizer, prompt.at(-1));
      const stops = new StopMatcher(p.stop);
      for await (const t of generate(this.model, this.stack, prompt, { maxTokens, temperature: p.temperature, topP: p.topP, seed: p.seed, signal: ac.signal })) {
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
      const usage = { prompt_tokens: prompt.length, completion_tokens: completion, total_tokens: prompt.length + completion };
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
