// A completion request's body -> validated parameters, before any tokenizing.
// As the OpenAI API: null means "not given" for every optional field, values
// out of range are refused, and every parameter we do not implement is refused
// with a 400 naming it, unless it carries the value that asks for nothing.
// `response_format` is checked (and compiled) by the server, which keeps
// compiled grammars per model; `tools` and `tool_choice` here (tools.ts).

import { ChatMessage } from "../tokenizer/chat.js";
import { EncodeOptions } from "../tokenizer/index.js";
import { HttpError } from "./errors.js";
import { ToolChoice, ToolParamError, ToolSpec, checkTools, toChatMessages } from "./tools.js";

// `opts`: how to tokenize the text (a rendered chat prompt parses special tokens)
export type Prompt = { text: string; opts?: EncodeOptions } | { ids: number[] } | { messages: ChatMessage[] };

export interface Params {
  prompts: Prompt[]; // chat: one (the messages); completions: one or more
  n: number; // choices per prompt
  maxTokens?: number; // max_completion_tokens / max_tokens, when given
  temperature: number;
  topP: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  presencePenalty: number;
  frequencyPenalty: number;
  logitBias: Map<number, number>; // token id -> bias (ids checked against the vocabulary later)
  logprobs?: number; // alternatives per token when logprobs are asked for (chat: top_logprobs; completions: logprobs)
  responseFormat?: unknown; // response_format as given (not null): see grammar/response.ts
  tools: ToolSpec[]; // chat only; [] when not given
  toolChoice: ToolChoice; // "none" without tools
  verify?: "strict"; // layerswarm: run every step on two disjoint routes of nodes, release only tokens both agree on
  speculate?: "off" | "ngram"; // layerswarm: speculative decoding for this request (default: the server's); the tokens are the same either way
}

export interface EmbeddingParams {
  inputs: ({ text: string } | { ids: number[] })[];
  base64: boolean; // encoding_format "base64": little-endian float32 bytes
  dimensions?: number;
}

export const MAX_PROMPTS = 2048; // prompts in one completions request (and inputs in one embeddings request)
export const MAX_CHOICES = 2048; // n x prompts

const bad = (param: string, message: string) => new HttpError(400, message, "invalid_request_error", param);
const given = (v: unknown) => v !== undefined && v !== null;
const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function num(body: Record<string, unknown>, k: string, lo: number, hi: number, integer = false): number | undefined {
  const v = body[k];
  if (!given(v)) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < lo || v > hi)
    throw bad(k, `'${k}' must be ${integer ? "an integer" : "a number"} in [${lo}, ${hi}]`);
  return v;
}

function bool(body: Record<string, unknown>, k: string): boolean | undefined {
  const v = body[k];
  if (!given(v)) return undefined;
  if (typeof v !== "boolean") throw bad(k, `'${k}' must be a boolean`);
  return v;
}

// A parameter we do not implement: `valid` checks its type and range as
// OpenAI does (a message when it is wrong), `neutral` says whether the value asks for nothing.
interface Unsupported {
  name: string;
  valid: (v: unknown, body: Record<string, unknown>, chat: boolean) => string | undefined;
  neutral: (v: unknown, body: Record<string, unknown>) => boolean;
  neutralText: string;
}

const numberIn = (lo: number, hi: number, integer = false) => (v: unknown) =>
  typeof v === "number" && Number.isFinite(v) && (!integer || Number.isInteger(v)) && v >= lo && v <= hi ? undefined : `must be ${integer ? "an integer" : "a number"} in [${lo}, ${hi}]`;
const noTools = (body: Record<string, unknown>) => !given(body.tools) || (Array.isArray(body.tools) && body.tools.length === 0);

// `chat`: the parameter is implemented for chat, refused on /v1/completions only
export const UNSUPPORTED: (Unsupported & { chat?: boolean })[] = [
  { name: "tools", chat: true, neutralText: "[]", valid: (v) => (Array.isArray(v) ? undefined : "must be an array"), neutral: (v) => (v as unknown[]).length === 0 },
  {
    name: "tool_choice", chat: true, neutralText: '"none"',
    valid: (v) => (typeof v === "string" || isObject(v) ? undefined : "must be a string or an object"),
    neutral: (v, body) => v === "none" || (v === "auto" && noTools(body)),
  },
  { name: "functions", neutralText: "[]", valid: (v) => (Array.isArray(v) ? undefined : "must be an array"), neutral: (v) => (v as unknown[]).length === 0 },
  {
    name: "function_call", neutralText: '"none"',
    valid: (v) => (typeof v === "string" || isObject(v) ? undefined : "must be a string or an object"),
    neutral: (v, body) => v === "none" || (v === "auto" && (!given(body.functions) || (body.functions as unknown[]).length === 0)),
  },
  { name: "echo", neutralText: "false", valid: (v) => (typeof v === "boolean" ? undefined : "must be a boolean"), neutral: (v) => v === false },
  { name: "suffix", neutralText: '""', valid: (v) => (typeof v === "string" ? undefined : "must be a string"), neutral: (v) => v === "" },
  { name: "best_of", neutralText: "1 (or n)", valid: numberIn(1, 20, true), neutral: (v, body) => v === 1 || v === (body.n ?? 1) },
];

function refuseUnsupported(body: Record<string, unknown>, chat: boolean): void {
  for (const u of UNSUPPORTED) {
    const v = body[u.name];
    if (!given(v) || (chat && u.chat)) continue;
    const wrong = u.valid(v, body, chat);
    if (wrong) throw bad(u.name, `'${u.name}' ${wrong}`);
    if (!u.neutral(v, body))
      throw bad(u.name, u.chat ? `'${u.name}' is a chat parameter: use /v1/chat/completions, or send ${u.neutralText}` : `'${u.name}' is not supported by this server: omit it, or send ${u.neutralText}`);
  }
}

// tools.ts's errors name their field: 400s with that `param`
function toolParam<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof ToolParamError) throw bad(e.param, e.message);
    throw e;
  }
}

const isIds = (x: unknown): x is number[] => Array.isArray(x) && x.length > 0 && x.every(isInt);

// The prompts as given: a string, token ids, or an array of either (token ids
// are checked against the vocabulary and the context later). `what` names the field.
function texts(v: unknown, what: string): ({ text: string } | { ids: number[] })[] {
  const shape = `'${what}' must be a string, an array of token ids, or an array of strings or of token id arrays`;
  if (typeof v === "string") return [{ text: v }];
  if (!Array.isArray(v) || v.length === 0) throw bad(what, shape);
  if (v.length > MAX_PROMPTS) throw bad(what, `'${what}' holds ${v.length} items; at most ${MAX_PROMPTS} are allowed`);
  if (v.every(isInt)) return [{ ids: v as number[] }];
  if (v.every((x) => typeof x === "string")) return (v as string[]).map((text) => ({ text }));
  if (v.every(isIds)) return (v as number[][]).map((ids) => ({ ids }));
  throw bad(what, shape);
}

// logprobs: chat asks with `logprobs: true` and `top_logprobs: N` (0..20);
// completions with `logprobs: N` (0..5). Undefined: not asked for.
function logprobsParam(body: Record<string, unknown>, chat: boolean): number | undefined {
  if (chat) {
    const want = bool(body, "logprobs") ?? false;
    const top = num(body, "top_logprobs", 0, 20, true);
    if (top !== undefined && top > 0 && !want) throw bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    return want ? (top ?? 0) : undefined;
  }
  if (given(body.top_logprobs) && body.top_logprobs !== 0)
    throw bad("top_logprobs", "'top_logprobs' is a chat parameter: completions take 'logprobs': N (0 to 5)");
  if (body.logprobs === false) return undefined;
  return num(body, "logprobs", 0, 5, true);
}

// logit_bias: {"token id": bias in [-100, 100]}
function logitBias(body: Record<string, unknown>): Map<number, number> {
  const v = body.logit_bias;
  const out = new Map<number, number>();
  if (!given(v)) return out;
  if (!isObject(v)) throw bad("logit_bias", "'logit_bias' must be an object of token ids to numbers in [-100, 100]");
  for (const [k, b] of Object.entries(v)) {
    if (!/^\d{1,9}$/.test(k)) throw bad("logit_bias", `'logit_bias' keys must be token ids (integers as strings), not ${JSON.stringify(k)}`);
    if (typeof b !== "number" || !Number.isFinite(b) || b < -100 || b > 100) throw bad("logit_bias", `'logit_bias' values must be numbers in [-100, 100] (token ${k})`);
    if (b !== 0) out.set(Number(k), b);
  }
  return out;
}

export function parseParams(body: Record<string, unknown>, chat: boolean): Params {
  if (given(body.model) && typeof body.model !== "string") throw bad("model", "'model' must be a string");
  refuseUnsupported(body, chat);
  const maxTokens = num(body, "max_completion_tokens", 1, 2 ** 31, true) ?? num(body, "max_tokens", 1, 2 ** 31, true);
  const stopRaw = body.stop;
  let stop: string[] = [];
  if (typeof stopRaw === "string") stop = [stopRaw];
  else if (Array.isArray(stopRaw) && stopRaw.every((s) => typeof s === "string") && stopRaw.length <= 4) stop = stopRaw as string[];
  else if (given(stopRaw)) throw bad("stop", "'stop' must be a string or up to 4 strings");
  const stream = bool(body, "stream") ?? false;
  let includeUsage = false;
  if (given(body.stream_options)) {
    const so = body.stream_options;
    if (!isObject(so)) throw bad("stream_options", "'stream_options' must be an object");
    if (!stream) throw bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    includeUsage = bool(so, "include_usage") ?? false;
  }
  const prompts = chat ? [{ messages: toolParam(() => toChatMessages(body.messages)) }] : texts(body.prompt, "prompt");
  const { tools, choice } = chat ? toolParam(() => checkTools(body.tools, body.tool_choice)) : { tools: [], choice: "none" as const };
  const n = num(body, "n", 1, 128, true) ?? 1;
  if (n * prompts.length > MAX_CHOICES) throw bad("n", `n x prompts is ${n * prompts.length}; at most ${MAX_CHOICES} choices are allowed in one request`);
  return {
    prompts,
    n,
    maxTokens,
    temperature: num(body, "temperature", 0, 2) ?? 1,
    topP: num(body, "top_p", 0, 1) ?? 1,
    seed: num(body, "seed", -(2 ** 53), 2 ** 53, true),
    stop: stop.filter((s) => s.length > 0),
    stream,
    includeUsage,
    presencePenalty: num(body, "presence_penalty", -2, 2) ?? 0,
    frequencyPenalty: num(body, "frequency_penalty", -2, 2) ?? 0,
    logitBias: logitBias(body),
    logprobs: logprobsParam(body, chat),
    responseFormat: given(body.response_format) ? body.response_format : undefined,
    tools,
    toolChoice: choice,
    verify: verifyParam(body),
    speculate: speculateParam(body),
  };
}

// layerswarm's own field: "off" or "ngram" (prompt lookup); it changes the speed, never the tokens
function speculateParam(body: Record<string, unknown>): "off" | "ngram" | undefined {
  const v = body.speculate;
  if (!given(v)) return undefined;
  if (v !== "off" && v !== "ngram") throw bad("speculate", "'speculate' must be \"ngram\" (draft by prompt lookup, verify in one trip: the same tokens, faster) or \"off\"");
  return v;
}

// layerswarm's own field: "strict" (or "audit", "off": the gateway's setting, which a request cannot lower)
function verifyParam(body: Record<string, unknown>): "strict" | undefined {
  const v = body.verify;
  if (!given(v)) return undefined;
  if (v !== "strict" && v !== "audit" && v !== "off") throw bad("verify", "'verify' must be \"strict\" (every step on two disjoint routes of nodes, tokens released only when both agree), \"audit\" or \"off\"");
  return v === "strict" ? "strict" : undefined;
}

// POST /v1/embeddings
export function parseEmbeddingParams(body: Record<string, unknown>): EmbeddingParams {
  if (given(body.model) && typeof body.model !== "string") throw bad("model", "'model' must be a string");
  const format = body.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") throw bad("encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
  const inputs = texts(body.input, "input");
  if (inputs.some((x) => "text" in x && x.text === "")) throw bad("input", "'input' must not hold empty strings");
  return { inputs, base64: format === "base64", dimensions: num(body, "dimensions", 1, 2 ** 31, true) };
}
