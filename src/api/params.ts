// A completion request's body -> validated parameters, before any tokenizing.
// As the OpenAI API: null means "not given" for every optional field, values
// out of range are refused, and every parameter we do not implement is refused
// with a 400 naming it, unless it carries the value that asks for nothing.

import { ChatMessage } from "../tokenizer/chat.js";
import { HttpError } from "./errors.js";

export interface Params {
  prompt: { text: string } | { ids: number[] } | { messages: ChatMessage[] };
  maxTokens?: number; // max_completion_tokens / max_tokens, when given
  temperature: number;
  topP: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
}

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

export const UNSUPPORTED: Unsupported[] = [
  {
    name: "logprobs", neutralText: "false",
    valid: (v, _b, chat) => (chat ? (typeof v === "boolean" ? undefined : "must be a boolean") : v === false ? undefined : numberIn(0, 5, true)(v)),
    neutral: (v) => v === false,
  },
  { name: "top_logprobs", neutralText: "0", valid: numberIn(0, 20, true), neutral: (v) => v === 0 },
  { name: "presence_penalty", neutralText: "0", valid: numberIn(-2, 2), neutral: (v) => v === 0 },
  { name: "frequency_penalty", neutralText: "0", valid: numberIn(-2, 2), neutral: (v) => v === 0 },
  {
    name: "logit_bias", neutralText: "{}",
    valid: (v) => (isObject(v) && Object.values(v).every((b) => numberIn(-100, 100)(b) === undefined) ? undefined : "must be an object of token ids to numbers in [-100, 100]"),
    neutral: (v) => Object.values(v as object).every((b) => b === 0),
  },
  {
    name: "response_format", neutralText: '{"type": "text"}',
    valid: (v) => (isObject(v) && typeof v.type === "string" ? undefined : "must be an object with a 'type'"),
    neutral: (v) => (v as { type: string }).type === "text",
  },
  { name: "tools", neutralText: "[]", valid: (v) => (Array.isArray(v) ? undefined : "must be an array"), neutral: (v) => (v as unknown[]).length === 0 },
  {
    name: "tool_choice", neutralText: '"none"',
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
  { name: "best_of", neutralText: "1", valid: numberIn(1, 20, true), neutral: (v) => v === 1 },
  { name: "n", neutralText: "1", valid: numberIn(1, 128, true), neutral: (v) => v === 1 },
];

function refuseUnsupported(body: Record<string, unknown>, chat: boolean): void {
  for (const u of UNSUPPORTED) {
    const v = body[u.name];
    if (!given(v)) continue;
    const wrong = u.valid(v, body, chat);
    if (wrong) throw bad(u.name, `'${u.name}' ${wrong}`);
    if (!u.neutral(v, body))
      throw bad(u.name, u.name === "n" ? "only n = 1 is supported" : `'${u.name}' is not supported by this server: omit it, or send ${u.neutralText}`);
  }
}

function messages(body: Record<string, unknown>): ChatMessage[] {
  const msgs = body.messages;
  if (!Array.isArray(msgs) || msgs.length === 0) throw bad("messages", "'messages' must be a non-empty array");
  return msgs.map((m, i) => {
    const mm = m as { role?: unknown; content?: unknown };
    if (!mm || typeof mm.role !== "string") throw bad(`messages[${i}].role`, `'messages[${i}].role' must be a string`);
    let content: string;
    if (typeof mm.content === "string") content = mm.content;
    else if (Array.isArray(mm.content))
      content = mm.content.map((p: { type?: string; text?: unknown }, j: number) => {
        if (p?.type !== "text" || typeof p.text !== "string") throw bad(`messages[${i}].content`, `'messages[${i}].content[${j}]' must be a text part`);
        return p.text;
      }).join("");
    else if (!given(mm.content)) content = "";
    else throw bad(`messages[${i}].content`, `'messages[${i}].content' must be a string or an array of text parts`);
    return { role: mm.role, content };
  });
}

// The prompt as given: a string, a one-string array, or token ids (checked against the vocabulary and context later).
function prompt(body: Record<string, unknown>): { text: string } | { ids: number[] } {
  const p = body.prompt;
  if (typeof p === "string") return { text: p };
  if (Array.isArray(p) && p.length === 1 && typeof p[0] === "string") return { text: p[0] };
  if (Array.isArray(p) && p.length > 0 && p.every((x) => isInt(x))) return { ids: p as number[] };
  throw bad("prompt", "'prompt' must be a string, a one-string array, or an array of token ids");
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
  return {
    prompt: chat ? { messages: messages(body) } : prompt(body),
    maxTokens,
    temperature: num(body, "temperature", 0, 2) ?? 1,
    topP: num(body, "top_p", 0, 1) ?? 1,
    seed: num(body, "seed", -(2 ** 53), 2 ** 53, true),
    stop: stop.filter((s) => s.length > 0),
    stream,
    includeUsage,
  };
}
