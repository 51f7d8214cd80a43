// OpenAI-compatible HTTP API on Hono: GET /v1/models, POST /v1/completions,
// POST /v1/chat/completions (streamed as server-sent events or not),
// POST /v1/embeddings, GET /health, the dashboard's files and the extra routes
// given (the swarm's views). It sees the model only through an Engine, so it
// can be tested with any LayerStack.
//
// With an API key, everything but /health and the dashboard's files needs it.
// Browsers may call it from the gateway's own page, from localhost pages, and
// from the origins named in corsOrigins; other origins get 403. A prompt is
// tokenized in slices, yielding to other requests in between, and refused as
// soon as it cannot fit the context (before tokenizing at all when its length
// alone proves it). A client that goes away aborts its generation.
//
// Structured output and tools: response_format compiles to a grammar, and a
// forced tool call (tool_choice "required" or a named function) to the
// grammar of one call in the model's tool format; compiled grammars are kept
// in a small LRU per server (so their mask caches serve later requests), over
// one VocabIndex built when first needed. With tools, the prompt goes through
// toolPrompt (the template's own tool rendering, or a Hermes system prompt)
// and the output through the tool-call parser (whole, or streamed).

import * as http from "node:http";
import { randomBytes, randomInt, timingSafeEqual } from "node:crypto";
import { AddressInfo } from "node:net";
import { Hono, type Context } from "hono";
import { createAdaptorServer, type HttpBindings } from "@hono/node-server";
import { Model, LayerStack } from "../model/model.js";
import { ChatTemplate } from "../tokenizer/chat.js";
import { EncodeOptions } from "../tokenizer/index.js";
import { HttpError, toHttpError } from "./errors.js";
import { BodyTooLarge, answerAndDrain, corsHeaders, eventStream, json, originAllowed, readBody, serveFile, staticFile } from "./http.js";
import { Params, Prompt, parseEmbeddingParams, parseParams } from "./params.js";
import { ChoiceJob, ChoiceOptions, CompletionObjects, Finish, Piece, Usage, runChoices } from "./completions.js";
import { Grammar, SchemaError, VocabIndex, responseFormatGrammar } from "./grammar/index.js";
import { ToolCall, ToolCallStream, ToolFormat, forcedToolCall, parseToolCalls, toolFormat, toolMarkerTokens, toolPrompt } from "./tools.js";
import { base64, embedding } from "./embeddings.js";
import { LayerswarmError, throwIfAborted } from "../errors.js";

export { json } from "./http.js";
export { StopMatcher } from "./completions.js";

export type Route = (c: Context) => Response | Promise<Response>;

export interface ApiOptions {
  modelId: string;
  apiKey?: string;
  corsOrigins?: string[]; // browser origins allowed besides the gateway's own and localhost ones ("*": any)
  maxBodyBytes?: number; // default 1 MiB
  defaultMaxTokens?: number; // /v1/completions default 16 (as OpenAI); chat: until the end
  routes?: Record<string, Route>; // extra GET routes (need the API key)
  staticDir?: string; // files served at / (the dashboard)
  onRequest?: (kind: string) => void;
  onTokens?: (n: number) => void;
  onFirstToken?: (ms: number) => void;
  onError?: (status: number) => void;
  onActive?: (n: number) => void;
  speculate?: "off" | "ngram"; // speculative decoding for requests that do not say (default: ngram where the stack can roll back)
}

type Env = { Bindings: HttpBindings; Variables: { requestId: string } };

const SLICE_MS = 10; // tokenizing yields to other requests this often
const GRAMMARS = 16; // compiled grammars kept per server (each with its own mask cache)

// How a request's output is shaped beyond sampling: its grammar, and, when
// tools are in play, how calls are read from the text (`prefix`: a call's
// control-token marker already put in the prompt, Mistral's [TOOL_CALLS]).
interface OutputPlan {
  grammar: Grammar | null;
  tools?: { format: ToolFormat; prefix: string };
  markers?: ReadonlyMap<number, string>;
}

export class ApiServer {
  readonly app: Hono<Env>;
  private server: http.Server;
  private template: ChatTemplate;
  private vocabIndex?: VocabIndex; // built on the first constrained request
  private grammars = new Map<string, { grammar: Grammar | null; prefix: string }>(); // LRU: most recently used last
  readonly created = Math.floor(Date.now() / 1000);
  active = 0;

  constructor(private model: Model, private stack: LayerStack, private o: ApiOptions) {
    this.template = ChatTemplate.fromGGUF(model.file, model.tokenizer);
    this.app = this.routes();
    // our own body reading and draining (readBody, answerAndDrain); the process's Request and Response left as they are
    this.server = createAdaptorServer({ fetch: this.app.fetch, autoCleanupIncoming: false, overrideGlobalObjects: false }) as http.Server;
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

  private routes(): Hono<Env> {
    const app = new Hono<Env>();
    // every answer: a request id, nosniff, and Vary: Origin (the CORS headers depend on it)
    app.use(async (c, next) => {
      const id = `req_${randomBytes(12).toString("hex")}`;
      c.set("requestId", id);
      await next();
      c.res.headers.set("x-request-id", id);
      c.res.headers.set("x-content-type-options", "nosniff");
      if (!c.res.headers.has("vary")) c.res.headers.set("vary", "Origin");
    });
    app.use((c, next) => this.cors(c, next));
    app.get("/health", () => json(200, { status: "ok" }));
    app.get("*", async (c, next) => {
      const p = c.req.path;
      const file = !this.o.routes?.[p] && this.o.staticDir && !p.startsWith("/v1/") ? staticFile(this.o.staticDir, p) : undefined;
      return file ? serveFile(file) : next();
    });
    app.use(async (c, next) => {
      if (!this.authorized(c)) throw new HttpError(401, "invalid or missing API key (send Authorization: Bearer <key>)", "invalid_request_error", null, "invalid_api_key");
      await next();
    });
    for (const [p, route] of Object.entries(this.o.routes ?? {})) app.get(p, route);
    app.get("/v1/models", () => json(200, { object: "list", data: [this.modelObject()] }));
    app.get("/v1/models/:id", (c) => {
      if (c.req.param("id") !== this.o.modelId) throw new HttpError(404, `the model '${c.req.param("id")}' does not exist: this server serves '${this.o.modelId}'`, "invalid_request_error", "model", "model_not_found");
      return json(200, this.modelObject());
    });
    app.post("/v1/completions", (c) => this.complete(c, false));
    app.post("/v1/chat/completions", (c) => this.complete(c, true));
    app.post("/v1/embeddings", (c) => this.embeddings(c));
    for (const p of ["/v1/completions", "/v1/chat/completions", "/v1/embeddings"])
      app.all(p, () => { throw new HttpError(405, `${p} takes POST`); });
    app.notFound((c) => this.fail(new HttpError(404, `no route ${c.req.method} ${c.req.path}`, "invalid_request_error", null, "not_found"), c));
    app.onError((e, c) => this.fail(e, c));
    return app;
  }

  // The one place errors become answers.
  private fail(e: unknown, c: Context<Env>): Response {
    const he = toHttpError(e);
    this.o.onError?.(he.status);
    return he instanceof BodyTooLarge ? answerAndDrain(c.env.incoming, he.status, he.body()) : he.response();
  }

  // CORS: the decision is the server's, whatever headers a route wrote.
  private async cors(c: Context<Env>, next: () => Promise<void>): Promise<Response | void> {
    const origin = c.req.header("origin");
    if (origin !== undefined && !originAllowed(origin, c.req.header("host"), this.o.corsOrigins))
      throw new HttpError(403, `the origin ${origin} may not call this API: allow it with --cors-origin ${origin}`, "invalid_request_error", null, "origin_not_allowed");
    const preflight = c.req.method === "OPTIONS";
    if (preflight) c.res = new Response(null, { status: 204, headers: origin === undefined ? { allow: "GET, POST, OPTIONS" } : {} });
    else await next();
    c.res.headers.delete("access-control-allow-origin");
    if (origin !== undefined) for (const [k, v] of Object.entries(corsHeaders(origin, preflight, c.req.header("access-control-request-headers")))) c.res.headers.set(k, v);
  }

  // Authorization: Bearer KEY (any case), or ?api_key=KEY on GET (a browser's EventSource cannot send headers)
  private authorized(c: Context<Env>): boolean {
    if (!this.o.apiKey) return true;
    const m = /^bearer\s+(\S+)\s*$/i.exec(c.req.header("authorization") ?? "");
    const given = m?.[1] ?? (c.req.method === "GET" ? c.req.query("api_key") : undefined);
    if (!given) return false;
    const a = Buffer.from(given), b = Buffer.from(this.o.apiKey);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private modelObject() {
    return { id: this.o.modelId, object: "model", created: this.created, owned_by: "layerswarm", context_length: this.model.cfg.contextLength };
  }

  // The body as a JSON object.
  private async body(c: Context<Env>): Promise<Record<string, unknown>> {
    const raw = await readBody(c.env.incoming, this.o.maxBodyBytes ?? 2 ** 20);
    this.o.onRequest?.(c.req.path);
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      throw new HttpError(400, "the request body is not valid JSON");
    }
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new HttpError(400, "the request body must be a JSON object");
    return body as Record<string, unknown>;
  }

  // The prompt's token ids. Text is tokenized in slices, letting other requests
  // run in between, and refused as soon as it cannot fit the context.
  private async promptTokens(p: Prompt, param: string, signal: AbortSignal): Promise<number[]> {
    const ctx = this.model.cfg.contextLength, tok = this.model.tokenizer;
    const tooLong = (what: string) =>
      new HttpError(400, `the ${param === "input" ? "input" : "prompt"} has ${what} tokens; the model's context holds ${ctx}`, "invalid_request_error", param, "context_length_exceeded");
    if ("ids" in p) {
      if (p.ids.length >= ctx) throw tooLong(String(p.ids.length));
      if (!p.ids.every((x) => x >= 0 && x < this.model.cfg.vocabSize))
        throw new HttpError(400, `'${param}' token ids must be in [0, ${this.model.cfg.vocabSize})`, "invalid_request_error", param);
      return p.ids;
    }
    const { text, opts }: { text: string; opts: EncodeOptions } = "messages" in p ? this.template.prompt(p.messages) : { text: p.text, opts: p.opts ?? {} };
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

  // Each prompt's token ids; a client gone meanwhile ends it quietly (undefined).
  private async allPromptTokens(prompts: Prompt[], param: string, signal: AbortSignal): Promise<number[][] | undefined> {
    const out: number[][] = [];
    try {
      for (const p of prompts) out.push(await this.promptTokens(p, param, signal));
    } catch (e) {
      if (signal.aborted) return undefined;
      throw e;
    }
    return out;
  }

  // A compiled grammar (with its call prefix), from the LRU or made and kept.
  // A SchemaError becomes a 400 naming `param`.
  private compiled(key: string, param: string, make: () => { grammar: Grammar | null; prefix: string }): { grammar: Grammar | null; prefix: string } {
    let hit = this.grammars.get(key);
    if (hit) this.grammars.delete(key);
    else {
      try {
        hit = make();
      } catch (e) {
        if (e instanceof SchemaError) throw new HttpError(400, e.message, "invalid_request_error", param);
        throw e;
      }
    }
    this.grammars.set(key, hit);
    for (const k of this.grammars.keys()) {
      if (this.grammars.size <= GRAMMARS) break;
      this.grammars.delete(k);
    }
    return hit;
  }

  private get vocab(): VocabIndex {
    return (this.vocabIndex ??= VocabIndex.fromTokenizer(this.model.tokenizer));
  }

  // The prompts as they will be tokenized (chat: through toolPrompt, with a
  // forced call's prefix) and how the output is shaped.
  private plan(p: Params, chat: boolean): { prompts: Prompt[]; out: OutputPlan } {
    const rf = p.responseFormat === undefined ? null : this.compiled(`response_format ${JSON.stringify(p.responseFormat)}`, "response_format", () => ({ grammar: responseFormatGrammar(p.responseFormat), prefix: "" })).grammar;
    if (!chat) return { prompts: p.prompts, out: { grammar: rf } };
    const tok = this.model.tokenizer, choice = p.toolChoice;
    const format = toolFormat(this.template);
    const forced = choice === "required" || typeof choice === "object"
      ? this.compiled(`tool_call ${JSON.stringify([format, p.tools, choice])}`, "tools", () => forcedToolCall(format, p.tools, choice, tok))
      : undefined;
    const prompts = p.prompts.map((x): Prompt => {
      if (!("messages" in x)) return x;
      const { text, opts } = toolPrompt(this.template, x.messages, choice === "none" ? [] : p.tools);
      return { text: text + (forced?.prefix ?? ""), opts };
    });
    // calls are read from the text when one is forced, or may come (not when the text is held to response_format's JSON)
    const parse = forced !== undefined || (choice !== "none" && p.tools.length > 0 && rf === null);
    if (!parse) return { prompts, out: { grammar: rf } };
    return { prompts, out: { grammar: forced?.grammar ?? rf, tools: { format, prefix: forced?.prefix ?? "" }, markers: toolMarkerTokens(tok, format) } };
  }

  // POST /v1/completions and /v1/chat/completions
  private async complete(c: Context<Env>, chat: boolean): Promise<Response> {
    const p = parseParams(await this.body(c), chat);
    p.speculate ??= this.o.speculate;
    for (const t of p.logitBias.keys())
      if (t >= this.model.cfg.vocabSize) throw new HttpError(400, `'logit_bias' names token ${t}; the vocabulary is [0, ${this.model.cfg.vocabSize})`, "invalid_request_error", "logit_bias");
    const { prompts: rendered, out } = this.plan(p, chat);
    const signal = c.req.raw.signal;
    const prompts = await this.allPromptTokens(rendered, chat ? "messages" : "prompt", signal);
    if (!prompts) return gone();
    const ctx = this.model.cfg.contextLength;
    const seed = p.seed ?? randomInt(2 ** 47); // choice i draws with seed + i
    const jobs: ChoiceJob[] = prompts.flatMap((prompt, i) => Array.from({ length: p.n }, (_, j) => ({
      index: i * p.n + j, prompt, seed: seed + i * p.n + j,
      maxTokens: Math.min(p.maxTokens ?? (chat ? ctx : (this.o.defaultMaxTokens ?? 16)), ctx - prompt.length),
    })));
    const objects = new CompletionObjects(chat, this.o.modelId, p.logprobs !== undefined, randomBytes(12).toString("hex"));
    const promptTokens = prompts.reduce((a, x) => a + x.length, 0);
    const usage = (completion: number) => ({ prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion });
    const opts: ChoiceOptions = { grammar: out.grammar, vocab: out.grammar ? this.vocab : undefined, markers: out.markers };
    return p.stream ? this.stream(c, chat, p, jobs, objects, usage, opts, out) : await this.whole(p, jobs, objects, usage, signal, opts, out);
  }

  // Counts the request as active while `f` runs, and reports its first token's delay.
  private async running<T>(f: (onToken: () => void) => Promise<T>): Promise<T> {
    const t0 = Date.now();
    let first = true;
    this.o.onActive?.(++this.active);
    try {
      return await f(() => {
        if (first) this.o.onFirstToken?.(Date.now() - t0);
        first = false;
        this.o.onTokens?.(1);
      });
    } finally {
      this.o.onActive?.(--this.active);
    }
  }

  private async whole(p: Params, jobs: ChoiceJob[], objects: CompletionObjects, usage: (n: number) => Usage, signal: AbortSignal, opts: ChoiceOptions, out: OutputPlan): Promise<Response> {
    const acc = jobs.map((): Piece => ({ text: "", entries: [] }));
    try {
      const results = await this.running((onToken) => runChoices(this.model, this.stack, p, jobs, signal, {
        onToken,
        emit: async (i, piece) => {
          acc[i].text += piece.text;
          for (const e of piece.entries) acc[i].entries.push(e);
        },
      }, opts));
      const choices = results.map((r, i): { text: string | null; entries: Piece["entries"]; toolCalls?: ToolCall[]; finish: Finish } => {
        if (!out.tools) return { ...acc[i], finish: r.finish };
        const { content, toolCalls } = parseToolCalls(out.tools.prefix + acc[i].text, out.tools.format);
        return toolCalls.length ? { text: content, entries: acc[i].entries, toolCalls, finish: "tool_calls" } : { ...acc[i], finish: r.finish };
      });
      return json(200, objects.response(choices, usage(results.reduce((a, r) => a + r.tokens, 0))));
    } catch (e) {
      if (signal.aborted) return gone();
      throw e;
    }
  }

  private stream(c: Context<Env>, chat: boolean, p: Params, jobs: ChoiceJob[], objects: CompletionObjects, usage: (n: number) => Usage, opts: ChoiceOptions, plan: OutputPlan): Response {
    return eventStream(c, (out) => this.running(async (onToken) => {
      try {
        if (chat) for (const j of jobs) await out.send(objects.chunk(j.index, "start"));
        // With tools: content passes as it comes, a call is held and sent whole
        // at the end. Whitespace that opens a choice waits for other content,
        // so an answer that is only calls has none (as when not streamed).
        // (jobs[i].index is i.)
        const tools = plan.tools;
        const calls = tools ? jobs.map(() => new ToolCallStream(tools.format)) : undefined;
        const lead = jobs.map(() => ""), begun = jobs.map(() => false);
        const content = (i: number, text: string, entries: Piece["entries"]) => {
          if (!begun[i]) {
            text = lead[i] + text;
            lead[i] = text.trim() ? "" : text;
            begun[i] = lead[i] === "" && text !== "";
            if (!begun[i]) text = "";
          }
          return text || entries.length ? out.send(objects.chunk(i, { text, entries })) : Promise.resolve();
        };
        for (const [i, s] of (calls ?? []).entries()) await content(i, s.push(tools!.prefix), []);
        const emit = (i: number, piece: Piece) => (calls ? content(i, calls[i].push(piece.text), piece.entries) : out.send(objects.chunk(i, piece)));
        const results = await runChoices(this.model, this.stack, p, jobs, out.signal, { onToken, emit }, opts);
        for (const [i, r] of results.entries()) {
          let finish = r.finish;
          if (calls) {
            const end = calls[i].end();
            if (end.toolCalls.length) {
              await content(i, end.content ?? "", []);
              await out.send(objects.toolCallsChunk(i, end.toolCalls));
              finish = "tool_calls";
            } else {
              const rest = lead[i] + (end.content ?? "");
              if (rest) await out.send(objects.chunk(i, { text: rest, entries: [] }));
            }
          }
          await out.send(objects.chunk(jobs[i].index, finish));
        }
        if (p.includeUsage) await out.send(objects.usageChunk(usage(results.reduce((a, r) => a + r.tokens, 0))));
      } catch (e) {
        if (out.signal.aborted) return; // the client went away
        const he = toHttpError(e);
        this.o.onError?.(he.status);
        await out.send(he.body());
      }
      await out.done();
    }));
  }

  // POST /v1/embeddings
  private async embeddings(c: Context<Env>): Promise<Response> {
    const p = parseEmbeddingParams(await this.body(c));
    const C = this.model.cfg.dim;
    if (p.dimensions !== undefined && p.dimensions !== C)
      throw new HttpError(400, `'dimensions' must be ${C} for this model (its hidden size); omit it`, "invalid_request_error", "dimensions");
    const signal = c.req.raw.signal;
    const inputs = await this.allPromptTokens(p.inputs, "input", signal);
    if (!inputs) return gone();
    try {
      const data = await this.running(async () => {
        const out = [];
        for (const [index, ids] of inputs.entries()) {
          const e = await embedding(this.model, this.stack, ids, signal);
          out.push({ object: "embedding", index, embedding: p.base64 ? base64(e) : Array.from(e) });
        }
        return out;
      });
      const n = inputs.reduce((a, x) => a + x.length, 0);
      return json(200, { object: "list", data, model: this.o.modelId, usage: { prompt_tokens: n, total_tokens: n } });
    } catch (e) {
      if (signal.aborted) return gone();
      throw e;
    }
  }
}

// The answer to a client that has gone away: nobody reads it.
const gone = () => new Response(null, { status: 499 });
