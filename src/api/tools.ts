// Tool calls (OpenAI `tools`, `tool_choice`): OpenAI messages and tools ->
// the chat template (the model's own tool format when its template takes
// `tools`, else a system prompt in the Hermes format); the model's text ->
// OpenAI `tool_calls`, in the formats of the families we run; and, for a forced
// call (`tool_choice: "required"` or a named function), a grammar that holds
// the output to the family's call syntax, the arguments to the function's
// parameter schema (grammar/).
//
// Formats:
//   hermes   (Qwen 2/2.5/3, Hermes, and our fallback)  <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>, one block per call
//   llama3   (Llama 3.1/3.2 JSON tool calling)           {"name": "f", "parameters": {...}}, optionally after <|python_tag|>, several separated by ';'
//   mistral  (Mistral v3 tokenizers; v11 as well)        [TOOL_CALLS] [{"name": "f", "arguments": {...}}, ...]   or   [TOOL_CALLS]f[ARGS]{...}

import { randomBytes } from "node:crypto";
import { LayerswarmError } from "../errors.js";
import { ChatMessage, ChatTemplate, TemplateToolCall, ToolSpec } from "../tokenizer/chat.js";
import { EncodeOptions, TokenType, Tokenizer } from "../tokenizer/types.js";
import { DEFAULT_MAX_INDENT, Grammar, Node, compileSchema, seq, switchOf, text } from "./grammar/schema.js";

export type { ToolSpec } from "../tokenizer/chat.js";
export type ToolFormat = "hermes" | "llama3" | "mistral";
export type ToolChoice = "none" | "auto" | "required" | { type: "function"; function: { name: string } };

// A call as OpenAI returns it: `arguments` is a JSON text.
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

// A request's tools that do not fit: `param` names the field, as OpenAI's 400s do.
export class ToolParamError extends LayerswarmError {
  constructor(readonly param: string, message: string) {
    super("BAD_ARGUMENT", message);
    this.name = "ToolParamError";
  }
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

// ---- the request: tools, tool_choice, messages ----

// `tools` and `tool_choice` as OpenAI checks them. tool_choice defaults to
// "auto" with tools and "none" without.
export function checkTools(tools: unknown, toolChoice: unknown): { tools: ToolSpec[]; choice: ToolChoice } {
  const list: ToolSpec[] = [];
  if (tools !== undefined && tools !== null) {
    if (!Array.isArray(tools)) throw new ToolParamError("tools", "'tools' must be an array of tools");
    tools.forEach((t, i) => {
      const p = `tools[${i}]`;
      if (!isObj(t) || t.type !== "function" || !isObj(t.function)) throw new ToolParamError(p, `'${p}' must be {"type": "function", "function": {...}}`);
      const f = t.function;
      if (typeof f.name !== "string" || !FUNCTION_NAME.test(f.name))
        throw new ToolParamError(`${p}.function.name`, `'${p}.function.name' must be 1 to 64 letters, digits, underscores or dashes`);
      if (list.some((x) => x.function.name === f.name)) throw new ToolParamError(`${p}.function.name`, `'${p}.function.name': "${f.name}" is given twice`);
      if (f.description !== undefined && typeof f.description !== "string") throw new ToolParamError(`${p}.function.description`, `'${p}.function.description' must be a string`);
      if (f.parameters !== undefined && !isObj(f.parameters)) throw new ToolParamError(`${p}.function.parameters`, `'${p}.function.parameters' must be a JSON Schema object`);
      const fn: ToolSpec["function"] = { name: f.name };
      if (f.description !== undefined) fn.description = f.description;
      if (f.parameters !== undefined) fn.parameters = f.parameters;
      if (f.strict !== undefined && f.strict !== null) fn.strict = f.strict === true;
      list.push({ type: "function", function: fn }); // (no undefined fields: templates would print them)
    });
  }
  let choice: ToolChoice = list.length ? "auto" : "none";
  if (toolChoice !== undefined && toolChoice !== null) {
    if (toolChoice === "none" || toolChoice === "auto" || toolChoice === "required") choice = toolChoice;
    else if (isObj(toolChoice) && toolChoice.type === "function" && isObj(toolChoice.function) && typeof toolChoice.function.name === "string") {
      const name = toolChoice.function.name;
      if (!list.some((t) => t.function.name === name)) throw new ToolParamError("tool_choice", `'tool_choice' names the function "${name}", which is not in 'tools'`);
      choice = { type: "function", function: { name } };
    } else throw new ToolParamError("tool_choice", `'tool_choice' must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}`);
    if (choice !== "none" && list.length === 0) throw new ToolParamError("tool_choice", `'tool_choice' ${JSON.stringify(toolChoice)} needs 'tools'`);
  }
  return { tools: list, choice };
}

// OpenAI chat messages -> template messages: text parts joined, a null content
// "", tool calls' `arguments` (JSON texts) parsed into the objects templates
// expect, tool results with their call id and (when known) function name.
export function toChatMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) throw new ToolParamError("messages", "'messages' must be a non-empty array");
  const names = new Map<string, string>(); // call id -> function name, for tool results
  return messages.map((m, i): ChatMessage => {
    const p = `messages[${i}]`;
    if (!isObj(m) || typeof m.role !== "string") throw new ToolParamError(`${p}.role`, `'${p}.role' must be a string`);
    const out: ChatMessage = { role: m.role, content: content(m.content, `${p}.content`) };
    if (m.tool_calls !== undefined && m.tool_calls !== null) {
      if (!Array.isArray(m.tool_calls)) throw new ToolParamError(`${p}.tool_calls`, `'${p}.tool_calls' must be an array`);
      out.tool_calls = m.tool_calls.map((c, j): TemplateToolCall => {
        const q = `${p}.tool_calls[${j}]`;
        if (!isObj(c) || !isObj(c.function) || typeof c.function.name !== "string" || typeof c.id !== "string")
          throw new ToolParamError(q, `'${q}' must be {"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}`);
        const args = c.function.arguments;
        let parsed: unknown = args ?? {};
        if (typeof args === "string") {
          try {
            parsed = JSON.parse(args);
          } catch {
            parsed = args; // not JSON: the template gets the text
          }
        }
        names.set(c.id, c.function.name);
        return { id: c.id, type: "function", function: { name: c.function.name, arguments: parsed } };
      });
    }
    if (m.role === "tool") {
      if (typeof m.tool_call_id !== "string") throw new ToolParamError(`${p}.tool_call_id`, `'${p}.tool_call_id' must be a string`);
      out.tool_call_id = m.tool_call_id;
      const name = typeof m.name === "string" ? m.name : names.get(m.tool_call_id);
      if (name !== undefined) out.name = name;
    }
    return out;
  });
}

function content(c: unknown, p: string): string {
  if (c === undefined || c === null) return "";
  if (typeof c === "string") return c;
  if (Array.isArray(c))
    return c.map((part, j) => {
      if (!isObj(part) || part.type !== "text" || typeof part.text !== "string") throw new ToolParamError(p, `'${p}[${j}]' must be a text part`);
      return part.text;
    }).join("");
  throw new ToolParamError(p, `'${p}' must be a string or an array of text parts`);
}

// ---- rendering ----

// The format the model writes calls in, from its template: the family's own
// markers, else Hermes (which our fallback prompt asks for).
export function toolFormat(template: ChatTemplate): ToolFormat {
  const src = template.source;
  if (src.includes("[TOOL_CALLS]") || src.includes("[AVAILABLE_TOOLS]")) return "mistral";
  if (src.includes("<tool_call>")) return "hermes";
  if (src.includes("<|python_tag|>") || (src.includes("<|start_header_id|>") && template.takesTools)) return "llama3";
  return "hermes";
}

// The prompt for messages with tools: through the template when it takes
// `tools`, else with the tools described in a system message and past calls
// and results written out in the Hermes format. With tool_choice "none" the
// tools are still shown (as OpenAI does); pass [] to hide them.
export function toolPrompt(template: ChatTemplate, messages: ChatMessage[], tools: ToolSpec[]): { text: string; opts: EncodeOptions } {
  const usesTools = tools.length > 0 || messages.some((m) => m.tool_calls?.length || m.role === "tool");
  if (!usesTools || template.takesTools) return template.prompt(messages, { tools });
  return template.prompt(fallbackMessages(messages, tools));
}

export function fallbackSystemPrompt(tools: ToolSpec[]): string {
  return [
    "You can call these functions; their arguments follow the JSON Schema in \"parameters\":",
    "<tools>",
    ...tools.map((t) => JSON.stringify(t.function)),
    "</tools>",
    "To call a function, answer with its name and arguments as JSON within <tool_call></tool_call> tags:",
    "<tool_call>",
    '{"name": <function name>, "arguments": <arguments as a JSON object>}',
    "</tool_call>",
  ].join("\n");
}

const hermesCall = (name: string, args: unknown) => `<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`;

function fallbackMessages(messages: ChatMessage[], tools: ToolSpec[]): ChatMessage[] {
  const out: ChatMessage[] = messages.map((m) => {
    if (m.role === "tool") return { role: "user", content: `<tool_response>\n${m.content}\n</tool_response>` };
    if (m.tool_calls?.length) {
      const calls = m.tool_calls.map((c) => hermesCall(c.function.name, c.function.arguments)).join("\n");
      return { role: m.role, content: m.content ? `${m.content}\n${calls}` : calls };
    }
    return { role: m.role, content: m.content };
  });
  if (tools.length) {
    const sys = fallbackSystemPrompt(tools);
    if (out[0]?.role === "system") out[0] = { role: "system", content: `${out[0].content}\n\n${sys}` };
    else out.unshift({ role: "system", content: sys });
  }
  return out;
}

// ---- parsing the model's output ----

const MARKERS: Record<ToolFormat, string[]> = {
  hermes: ["<tool_call>", "</tool_call>"],
  llama3: ["<|python_tag|>"],
  mistral: ["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"],
};

// Control tokens the parser needs to see, and their text: a decoder drops
// control tokens (tokenBytes is empty), so the API writes these out itself.
export function toolMarkerTokens(tok: Tokenizer, format: ToolFormat): Map<number, string> {
  const m = new Map<number, string>();
  for (const text of MARKERS[format]) {
    const id = tok.idOf(text);
    if (id !== undefined && tok.tokenType(id) === TokenType.CONTROL) m.set(id, text);
  }
  return m;
}

export function newToolCallId(format: ToolFormat): string {
  const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const pick = (n: number) => [...randomBytes(n)].map((b) => alnum[b % alnum.length]).join("");
  return format === "mistral" ? pick(9) : `call_${pick(24)}`; // Mistral's templates want 9 letters or digits
}

export interface ParsedOutput {
  content: string | null; // the text that is not a call (null when there is none)
  toolCalls: ToolCall[];
}

// The model's text -> content and calls. What does not parse as a call stays content.
export function parseToolCalls(output: string, format: ToolFormat, newId: () => string = () => newToolCallId(format)): ParsedOutput {
  switch (format) {
    case "hermes": return parseHermes(output, newId);
    case "llama3": return parseLlama3(output, newId);
    case "mistral": return parseMistral(output, newId);
  }
}

const finish = (content: string, toolCalls: ToolCall[]): ParsedOutput => ({ content: content.trim() ? content.trim() : null, toolCalls });

// {"name": ..., "arguments" | "parameters": {...} or a JSON text} -> a call, or undefined
function callOf(v: unknown, newId: () => string): ToolCall | undefined {
  if (!isObj(v) || typeof v.name !== "string" || !v.name) return undefined;
  let args = v.arguments ?? v.parameters ?? {};
  if (typeof args === "string") {
    try {
      args = JSON.parse(args);
    } catch {
      return undefined;
    }
  }
  if (!isObj(args)) return undefined;
  return { id: newId(), type: "function", function: { name: v.name, arguments: JSON.stringify(args) } };
}

// One JSON object or array starting at text[i] (after whitespace): its value and end, or undefined.
function readJson(text: string, i: number): { value: unknown; end: number } | undefined {
  while (i < text.length && /\s/.test(text[i])) i++;
  const open = text[i];
  if (open !== "{" && open !== "[") return undefined;
  let depth = 0, inString = false;
  for (let j = i; j < text.length; j++) {
    const c = text[j];
    if (inString) {
      if (c === "\\") j++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      if (--depth === 0) {
        try {
          return { value: JSON.parse(text.slice(i, j + 1)), end: j + 1 };
        } catch {
          return undefined;
        }
      }
    }
  }
  return undefined;
}

function parseHermes(output: string, newId: () => string): ParsedOutput {
  const calls: ToolCall[] = [];
  let content = "", at = 0;
  for (;;) {
    const open = output.indexOf("<tool_call>", at);
    if (open < 0) break;
    const body = open + "<tool_call>".length;
    const close = output.indexOf("</tool_call>", body);
    const end = close < 0 ? output.length : close;
    const json = readJson(output, body);
    const call = json && output.slice(json.end, end).trim() === "" ? callOf(json.value, newId) : undefined;
    const blockEnd = close < 0 ? output.length : close + "</tool_call>".length;
    content += output.slice(at, open);
    if (call) calls.push(call);
    else content += output.slice(open, blockEnd); // malformed: left as it was written
    at = blockEnd;
  }
  return finish(content + output.slice(at), calls);
}

function parseLlama3(output: string, newId: () => string): ParsedOutput {
  const t = output.replace("<|python_tag|>", "").trim();
  const calls: ToolCall[] = [];
  let i = 0;
  while (i < t.length) {
    const json = readJson(t, i);
    if (!json) return finish(output, []);
    for (const v of Array.isArray(json.value) ? json.value : [json.value]) {
      const call = callOf(v, newId);
      if (!call) return finish(output, []);
      calls.push(call);
    }
    i = json.end;
    while (i < t.length && /[\s;]/.test(t[i])) i++;
  }
  return calls.length ? { content: null, toolCalls: calls } : finish(output, []);
}

function parseMistral(output: string, newId: () => string): ParsedOutput {
  const start = output.indexOf("[TOOL_CALLS]");
  if (start < 0) return finish(output, []);
  const before = output.slice(0, start);
  const calls: ToolCall[] = [];
  const rest = output.slice(start);
  // v11 and later: [TOOL_CALLS]name[ARGS]{...} (optionally [CALL_ID]id before [ARGS]), repeated
  const v11 = /\[TOOL_CALLS\]\s*([a-zA-Z0-9_-]+)(?:\[CALL_ID\][a-zA-Z0-9]*)?\[ARGS\]/y;
  let i = 0;
  for (;;) {
    v11.lastIndex = i;
    const m = v11.exec(rest);
    if (!m) break;
    const json = readJson(rest, v11.lastIndex);
    const call = json && callOf({ name: m[1], arguments: json.value }, newId);
    if (!call) return finish(output, []);
    calls.push(call);
    i = json.end;
    while (i < rest.length && /\s/.test(rest[i])) i++;
  }
  if (calls.length) return i >= rest.length ? finish(before, calls) : finish(output, []);
  // v3: [TOOL_CALLS] [{"name": ..., "arguments": ...}, ...]
  const json = readJson(rest, "[TOOL_CALLS]".length);
  if (!json || rest.slice(json.end).trim() !== "") return finish(output, []);
  for (const v of Array.isArray(json.value) ? json.value : [json.value]) {
    const call = callOf(v, newId);
    if (!call) return finish(output, []);
    calls.push(call);
  }
  return finish(before, calls);
}

// Streaming: passes on content as it comes, holding back what may be the
// start of a call (a marker, or for Llama 3 an answer that opens with JSON);
// at the end, the calls and whatever content was held back.
export class ToolCallStream {
  private held = "";
  private holding = false; // a call may have begun: hold everything
  private decided = false; // llama3: the answer's first character settled it
  constructor(private format: ToolFormat, private newId: () => string = () => newToolCallId(format)) {}

  // text -> the part that can go to the client as content now
  push(delta: string): string {
    this.held += delta;
    if (this.holding) return "";
    if (this.format === "llama3") {
      if (this.decided) return this.release(this.held.length);
      const t = this.held.trimStart();
      if (!t) return "";
      const tag = "<|python_tag|>";
      if (t[0] === "{" || t[0] === "[" || t.startsWith(tag)) return (this.holding = true), "";
      if (tag.startsWith(t)) return "";
      this.decided = true;
      return this.release(this.held.length);
    }
    const marker = this.format === "hermes" ? "<tool_call>" : "[TOOL_CALLS]";
    const at = this.held.indexOf(marker);
    if (at >= 0) {
      this.holding = true;
      return this.release(at);
    }
    // keep the longest end that is the start of the marker
    let keep = Math.min(marker.length - 1, this.held.length);
    while (keep > 0 && !this.held.endsWith(marker.slice(0, keep))) keep--;
    return this.release(this.held.length - keep);
  }

  // the end of the output: calls, and the content not passed on yet
  end(): ParsedOutput {
    const rest = this.held;
    this.held = "";
    if (!this.holding) return finish(rest, []);
    return parseToolCalls(rest, this.format, this.newId);
  }

  private release(n: number): string {
    const out = this.held.slice(0, n);
    this.held = this.held.slice(n);
    return out;
  }
}

// ---- forced calls ----

export interface ForcedCall {
  grammar: Grammar; // the output: one call, in the family's syntax
  // A control token that begins a call in this family (Mistral's [TOOL_CALLS]):
  // a grammar over text cannot emit it, so append it to the prompt text (its
  // special tokens are parsed) and parse `prefix + output`.
  prefix: string;
}

// tool_choice "required" (any of the tools) or a named function: the grammar
// of one call with its arguments held to the function's parameter schema.
// Schema keywords outside the supported subset are refused (a SchemaError
// naming tools[i].function.parameters and the keyword).
export function forcedToolCall(format: ToolFormat, tools: ToolSpec[], choice: ToolChoice, tok?: Tokenizer): ForcedCall {
  const picked = typeof choice === "object" ? tools.filter((t) => t.function.name === choice.function.name) : tools;
  if (choice === "none" || choice === "auto" || picked.length === 0)
    throw new LayerswarmError("BAD_ARGUMENT", `a forced call needs tool_choice "required" or a named function among the tools (got ${JSON.stringify(choice)})`);
  const argsOf = (t: ToolSpec): Node => {
    const i = tools.indexOf(t);
    // OpenAI: a function without parameters takes an empty parameter list
    const schema = t.function.parameters ?? { type: "object", properties: {}, additionalProperties: false };
    return compileSchema(schema, { where: `tools[${i}].function.parameters` }).root;
  };
  const call = (argsKey: string) =>
    switchOf(picked.map((t) => ({ tag: `${JSON.stringify(t.function.name)}, "${argsKey}": `, then: argsOf(t) })));
  const marker = (m: string) => {
    const id = tok?.idOf(m);
    return id !== undefined && tok!.tokenType(id) === TokenType.CONTROL;
  };
  let root: Node, prefix = "";
  switch (format) {
    case "hermes":
      if (marker("<tool_call>")) prefix = "<tool_call>";
      root = seq([text(`${prefix ? "" : "<tool_call>"}\n{"name": `), call("arguments"), text("}\n</tool_call>")]);
      break;
    case "llama3":
      root = seq([text('{"name": '), call("parameters"), text("}")]);
      break;
    case "mistral":
      if (marker("[TOOL_CALLS]")) prefix = "[TOOL_CALLS]";
      root = seq([text(`${prefix ? "" : "[TOOL_CALLS]"}[{"name": `), call("arguments"), text("}]")]);
      break;
  }
  return { grammar: { root, maxIndent: DEFAULT_MAX_INDENT }, prefix };
}
