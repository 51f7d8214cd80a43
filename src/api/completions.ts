// The choices of one completion request: every (prompt, n) pair runs as its
// own session through the stack, in parallel, and its tokens become text
// (stop strings held back and cut), logprobs, and OpenAI's response objects,
// streamed or whole.
//
// Logprobs are log_softmax of the logits each token was drawn from: after
// logit_bias and the presence/frequency penalties, before temperature and
// top_p (so temperature does not change them, and a biased-away token shows
// as unlikely, as in OpenAI's API). Text offsets count UTF-16 units from the
// start of the choice's own text. A token that is not whole UTF-8 shows as
// `\xNN` escapes (chat; `bytes` holds the bytes) or `bytes:\xNN` (completions).
//
// A choice with a grammar (response_format, or a forced tool call) runs with
// its own JsonConstraint: the logits are masked before sampling (so logprobs
// describe what could be drawn), each token is accepted, and the choice ends
// as soon as the text is finished. Stop strings apply to plain text only.
// When tools are in play, the control tokens that mark calls are written out
// as text, for the tool-call parser (tools.ts).

import { Model, LayerStack, GeneratedToken, generate } from "../model/model.js";
import { TextDecoderStream, TokenType, Tokenizer } from "../tokenizer/index.js";
import { LayerswarmError, throwIfAborted } from "../errors.js";
import { Grammar, JsonConstraint, VocabIndex } from "./grammar/index.js";
import { Params } from "./params.js";
import { ToolCall } from "./tools.js";

const PARALLEL = 64; // choices of one request running at once

// --- text: stop strings ------------------------------------------------------

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

// --- text and logprobs of one choice ----------------------------------------------

interface Alternative {
  bytes: Uint8Array;
  logprob: number;
}
export interface TokenEntry extends Alternative {
  top: Alternative[];
  offset: number; // where the token's text starts in the choice's text
}

// Text that is final, with the logprobs of the tokens that wrote it.
export interface Piece {
  text: string;
  entries: TokenEntry[];
}

// One choice's tokens -> text pieces. A token's entry goes out with the text
// it starts in; tokens cut off by a stop string have none.
export class ChoiceText {
  private dec: TextDecoderStream;
  private stops: StopMatcher;
  private decoded = 0; // UTF-16 units decoded so far
  private emitted = 0; // ... and released (the rest may be a stop string's start)
  private pending: TokenEntry[] = [];
  // `markers`: control tokens written as this text (tool-call markers) instead of nothing
  constructor(private tok: Tokenizer, private prev: number | undefined, stop: string[], private markers?: ReadonlyMap<number, string>) {
    this.dec = new TextDecoderStream(tok, prev);
    this.stops = new StopMatcher(stop);
  }

  push(t: GeneratedToken): Piece & { stopped: boolean } {
    const offset = this.decoded;
    const marker = this.markers?.get(t.id);
    const text = this.dec.push(t.id) + (marker ?? ""); // (a control token adds no bytes: the decoder only moves on)
    this.decoded += text.length;
    if (t.logprob !== undefined)
      this.pending.push({ bytes: this.bytes(t.id), logprob: t.logprob, top: (t.top ?? []).map((a) => ({ bytes: this.bytes(a.id), logprob: a.logprob })), offset });
    this.prev = t.id;
    const { emit, stopped } = this.stops.push(text);
    this.emitted += emit.length;
    return { text: emit, entries: this.take(), stopped };
  }

  // The end (not after a stop string): what was held back.
  flush(): Piece {
    const rest = this.stops.flush(this.dec.flush());
    this.emitted += rest.length;
    const entries = this.pending;
    this.pending = [];
    return { text: rest, entries };
  }

  private take(): TokenEntry[] {
    let k = 0;
    while (k < this.pending.length && this.pending[k].offset < this.emitted) k++;
    return this.pending.splice(0, k);
  }

  // what a token writes here; a control token (no text) by its name
  private bytes(id: number): Uint8Array {
    const b = this.tok.tokenBytes(id, this.prev);
    return b.length === 0 && this.tok.tokenType(id) === TokenType.CONTROL ? Buffer.from(this.tok.tokenText(id)) : b;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

// bytes -> text, or `\xNN` escapes for what is not whole UTF-8
function tokenString(b: Uint8Array, prefix: string): string {
  try {
    return utf8.decode(b);
  } catch {
    return prefix + [...b].map((x) => (x < 0x80 ? String.fromCharCode(x) : `\\x${x.toString(16).padStart(2, "0")}`)).join("");
  }
}

// chat: choices[].logprobs.content
function chatLogprobs(entries: TokenEntry[]) {
  const one = (a: Alternative) => ({ token: tokenString(a.bytes, ""), logprob: a.logprob, bytes: [...a.bytes] });
  return entries.map((e) => ({ ...one(e), top_logprobs: e.top.map(one) }));
}

// completions: choices[].logprobs; top_logprobs always holds the sampled token, as OpenAI's
function completionLogprobs(entries: TokenEntry[]) {
  return {
    tokens: entries.map((e) => tokenString(e.bytes, "bytes:")),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries([...e.top, e].map((a) => [tokenString(a.bytes, "bytes:"), a.logprob]))),
    text_offset: entries.map((e) => e.offset),
  };
}

// --- running the choices ---------------------------------------------------------

export interface ChoiceJob {
  index: number; // prompt-major: prompt i, choice j -> i * n + j
  prompt: number[];
  maxTokens: number;
  seed: number;
}

export type Finish = "stop" | "length" | "tool_calls";

export interface ChoiceResult {
  finish: Finish;
  tokens: number; // generated, an end-of-generation token included
}

// How the choices' tokens are drawn and written beyond the sampling parameters.
export interface ChoiceOptions {
  grammar?: Grammar | null; // constrained output: each choice gets its own JsonConstraint
  vocab?: VocabIndex; // the model's, needed with a grammar
  markers?: ReadonlyMap<number, string>; // control tokens to write out as text (tool-call markers)
}

export interface RunHooks {
  emit: (index: number, piece: Piece) => Promise<void>; // text (and logprobs) now final
  onToken: () => void;
}

// One choice, from its prompt to its end.
async function runChoice(model: Model, stack: LayerStack, p: Params, job: ChoiceJob, signal: AbortSignal, h: RunHooks, o: ChoiceOptions): Promise<ChoiceResult> {
  const c = o.grammar ? new JsonConstraint(o.grammar, o.vocab!, { prev: job.prompt.at(-1) }) : undefined;
  const text = new ChoiceText(model.tokenizer, job.prompt.at(-1), c ? [] : p.stop, o.markers);
  let tokens = 0, finish: Finish = "length";
  const opts = {
    maxTokens: job.maxTokens, temperature: p.temperature, topP: p.topP, seed: job.seed, signal,
    presencePenalty: p.presencePenalty, frequencyPenalty: p.frequencyPenalty, logitBias: p.logitBias, logprobs: p.logprobs,
    logitsHook: c?.hook(job.maxTokens), verify: p.verify, speculate: p.speculate,
  };
  for await (const t of generate(model, stack, job.prompt, opts)) {
    tokens++;
    h.onToken();
    if (model.tokenizer.eog.has(t.id)) {
      finish = "stop";
      break;
    }
    c?.accept(t.id);
    const piece = text.push(t);
    if (piece.text || piece.entries.length) await h.emit(job.index, piece);
    if (piece.stopped) return { finish: "stop", tokens };
    if (c?.finished) {
      finish = "stop"; // nothing may follow: no further step
      break;
    }
    throwIfAborted(signal);
  }
  if (finish === "length" && c?.complete) finish = "stop"; // the budget ran out exactly where the text may end
  const rest = text.flush();
  if (rest.text || rest.entries.length) await h.emit(job.index, rest);
  return { finish, tokens };
}

// Every choice, PARALLEL at a time. The first failure stops the others and is
// thrown once all have stopped (so nothing is emitted after it).
export async function runChoices(model: Model, stack: LayerStack, p: Params, jobs: ChoiceJob[], signal: AbortSignal, h: RunHooks, o: ChoiceOptions = {}): Promise<ChoiceResult[]> {
  if (o.grammar && !o.vocab) throw new LayerswarmError("INTERNAL", "a grammar needs the model's VocabIndex");
  const ac = new AbortController();
  const onAbort = () => ac.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  const results: ChoiceResult[] = new Array(jobs.length);
  let next = 0, failure: unknown;
  const worker = async () => {
    while (next < jobs.length && !ac.signal.aborted) {
      const i = next++;
      try {
        results[i] = await runChoice(model, stack, p, jobs[i], ac.signal, h, o);
      } catch (e) {
        failure ??= e;
        ac.abort(e);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(PARALLEL, jobs.length) }, worker));
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  if (failure !== undefined) throw failure;
  if (signal.aborted) throw new LayerswarmError("ABORTED", "the request was aborted");
  return results;
}

// --- OpenAI's objects ------------------------------------------------------------------

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

// The response (or its stream's chunks) of one chat or completions request.
export class CompletionObjects {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);
  constructor(private chat: boolean, private model: string, private logprobs: boolean, id: string) {
    this.id = `${chat ? "chatcmpl" : "cmpl"}-${id}`;
  }

  private logprobsOf(entries: TokenEntry[]) {
    if (!this.logprobs) return null;
    return this.chat ? { content: chatLogprobs(entries), refusal: null } : completionLogprobs(entries);
  }

  private head(object: string) {
    return { id: this.id, object, created: this.created, model: this.model };
  }

  // a stream's chunk: the first of a chat choice (its role), text, or the end of a choice
  chunk(index: number, piece: Piece | "start" | Finish) {
    if (this.chat) {
      const delta = piece === "start" ? { role: "assistant", content: "" } : typeof piece === "string" ? {} : { content: piece.text };
      const logprobs = typeof piece === "object" ? this.logprobsOf(piece.entries) : null;
      return { ...this.head("chat.completion.chunk"), choices: [{ index, delta, logprobs, finish_reason: typeof piece === "string" && piece !== "start" ? piece : null }] };
    }
    const text = typeof piece === "object" ? piece.text : "";
    const logprobs = typeof piece === "object" ? this.logprobsOf(piece.entries) : null;
    return { ...this.head("text_completion"), choices: [{ index, text, logprobs, finish_reason: typeof piece === "string" && piece !== "start" ? piece : null }] };
  }

  // a chat stream's chunk with a choice's tool calls, each whole
  toolCallsChunk(index: number, calls: ToolCall[]) {
    const tool_calls = calls.map((c, i) => ({ index: i, id: c.id, type: c.type, function: c.function }));
    return { ...this.head("chat.completion.chunk"), choices: [{ index, delta: { tool_calls }, logprobs: null, finish_reason: null }] };
  }

  usageChunk(usage: Usage) {
    return { ...this.head(this.chat ? "chat.completion.chunk" : "text_completion"), choices: [], usage };
  }

  // the whole response: choices[i] is the text (chat: null when there are only
  // tool calls), tool calls, logprobs and end of choice i
  response(choices: { text: string | null; entries: TokenEntry[]; toolCalls?: ToolCall[]; finish: Finish }[], usage: Usage) {
    return {
      ...this.head(this.chat ? "chat.completion" : "text_completion"),
      choices: choices.map((c, index) =>
        this.chat
          ? { index, message: { role: "assistant", content: c.text, refusal: null, ...(c.toolCalls?.length ? { tool_calls: c.toolCalls } : {}) }, logprobs: this.logprobsOf(c.entries), finish_reason: c.finish }
          : { index, text: c.text ?? "", logprobs: this.logprobsOf(c.entries), finish_reason: c.finish }),
      usage,
    };
  }
}
