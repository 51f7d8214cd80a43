// A model loaded in one process: the gateway parts (tokenizer, embedding, head)
// and one or more layer slices. Used by `layerswarm generate`, by tests as the
// single-node reference, and by the swarm's gateway for its own parts.

import { LayerswarmError, throwIfAborted } from "../errors.js";
import { GGUFFile, readGGUF } from "../format/gguf.js";
import { Kernels, KernelOptions, createKernels } from "../kernels/index.js";
import { Tokenizer, tokenizerFromGGUF } from "../tokenizer/index.js";
import { LayerRange, ModelConfig, checkRange, configFromGGUF } from "./config.js";
import { Embedder, Head, SliceOptions, SliceRuntime, Step } from "./runtime.js";
import { Sampler, SamplingParams, TokenLogprob, logprobs } from "./sampler.js";
import { loadEmbedding, loadHead, loadLayers, loadRopeFreqs } from "./weights.js";

// Anything that runs all layers for a batch of steps: a local chain of slices,
// or a route through swarm nodes.
export interface LayerStack {
  forward(steps: Step[], signal?: AbortSignal): Promise<Float32Array[]>;
  dropSession(id: string): void | Promise<void>;
  // Forget a session's positions >= pos on every layer (speculation's rejected
  // rows): afterwards the stack is as if they had never been sent. A stack
  // without it is never asked to speculate.
  rollback?(session: string, pos: number, signal?: AbortSignal): Promise<void>;
}

export function loadSlice(f: GGUFFile, cfg: ModelConfig, range: LayerRange, k: Kernels, opts?: SliceOptions, onLayer?: (layer: number, bytes: number) => void): SliceRuntime {
  checkRange(cfg, range);
  return new SliceRuntime(cfg, range, loadLayers(f, cfg, range, k, onLayer), k, loadRopeFreqs(f, cfg), opts);
}

export class LocalStack implements LayerStack {
  constructor(readonly slices: SliceRuntime[]) {}
  async forward(steps: Step[], signal?: AbortSignal): Promise<Float32Array[]> {
    let cur = steps;
    for (const s of this.slices) {
      const out = s.forward(cur, signal);
      cur = cur.map((st, i) => ({ ...st, hidden: out[i] }));
    }
    return cur.map((s) => s.hidden);
  }
  dropSession(id: string): void {
    for (const s of this.slices) s.dropSession(id);
  }
  async rollback(session: string, pos: number): Promise<void> {
    for (const s of this.slices) s.rollback(session, pos);
  }
}

export interface LoadOptions extends KernelOptions, SliceOptions {
  slices?: LayerRange[]; // default: one slice of all layers
  kernels?: Kernels;
}

export class Model {
  private constructor(
    readonly file: GGUFFile,
    readonly cfg: ModelConfig,
    readonly tokenizer: Tokenizer,
    readonly embedder: Embedder,
    readonly head: Head,
    readonly kernels: Kernels,
  ) {}

  static gateway(path: string, opts: LoadOptions = {}): Model {
    const f = readGGUF(path);
    const cfg = configFromGGUF(f);
    const k = opts.kernels ?? createKernels(opts);
    return new Model(f, cfg, tokenizerFromGGUF(f), new Embedder(cfg, loadEmbedding(f, cfg)), new Head(cfg, loadHead(f, cfg, k), k), k);
  }

  // gateway parts plus local slices covering all layers
  static local(path: string, opts: LoadOptions = {}): { model: Model; stack: LocalStack } {
    const model = Model.gateway(path, opts);
    const ranges = opts.slices ?? [{ start: 0, end: model.cfg.nLayers }];
    let next = 0;
    for (const r of ranges) {
      checkRange(model.cfg, r);
      if (r.start !== next) throw new LayerswarmError("BAD_RANGE", `slices must be contiguous: [${r.start}, ${r.end}) follows layer ${next}`);
      next = r.end;
    }
    if (next !== model.cfg.nLayers) throw new LayerswarmError("BAD_RANGE", `slices end at layer ${next}, the model has ${model.cfg.nLayers}`);
    const stack = new LocalStack(ranges.map((r) => loadSlice(model.file, model.cfg, r, model.kernels, opts)));
    return { model, stack };
  }
}

// Speculation: something that guesses the next tokens of a sequence. Drafts
// are only ever verified (model.ts generate), never trusted, so a drafter
// changes the speed and never the tokens.
export interface Drafter {
  // up to k tokens guessed to follow `history` (fewer, or none, when it has no guess)
  draft(history: readonly number[], k: number): number[];
}

// Prompt lookup: the tokens that followed the latest earlier occurrence of the
// history's last n tokens (n from maxN down to minN). No model: it pays off on
// text that repeats what came before (summaries, edits, code, retrieval).
export class NgramDrafter implements Drafter {
  constructor(readonly maxN = 3, readonly minN = 2) {}
  draft(history: readonly number[], k: number): number[] {
    const L = history.length;
    for (let n = Math.min(this.maxN, L - 1); n >= this.minN && n >= 1; n--) {
      // latest i < L - n with history[i, i+n) equal to the last n tokens
      for (let i = L - n - 1; i >= 0; i--) {
        let j = 0;
        while (j < n && history[i + j] === history[L - n + j]) j++;
        if (j === n) return history.slice(i + n, Math.min(i + n + k, L));
      }
    }
    return [];
  }
}

// Tokens drafted and accepted by every generate() of this process (exported
// as layerswarm_spec_drafted_tokens_total and layerswarm_spec_accepted_tokens_total).
export const speculationStats = { drafted: 0, accepted: 0, steps: 0 };

export interface GenerateOptions extends SamplingParams {
  maxTokens?: number; // generated tokens (default: until end of generation or context)
  chunkSize?: number; // prefill chunk (default 64)
  stopAtEog?: boolean; // default true
  session?: string;
  signal?: AbortSignal;
  onLogits?: (pos: number, logits: Float32Array) => void; // every computed position's logits (tests; rows of rejected drafts are not reported)
  logprobs?: number; // when given: each token's logprob and this many most likely alternatives (see Sampler.step)
  // Called with each step's logits (V,) just before sampling, and with the
  // tokens so far (prompt and generated); it may change them in place (a
  // constrained output masks tokens with -Infinity). Logit bias and penalties
  // come after it, and logprobs describe what it leaves. It is called exactly
  // as without speculation: once per generated token, in order.
  logitsHook?: (logits: Float32Array, history: readonly number[]) => void;
  verify?: "strict"; // a swarm stack: every step on two disjoint routes (Step.verify)
  // Speculative decoding (default "ngram" when the stack can roll back, else
  // off). The tokens are exactly those of plain decoding, greedy or sampled.
  speculate?: "off" | "ngram";
  draftTokens?: number; // k, tokens drafted per step (default 4)
  drafter?: Drafter; // overrides the one `speculate` names (a draft model, tests)
}

export interface GeneratedToken {
  id: number;
  pos: number;
  logprob?: number; // with opts.logprobs: log-probability of `id` in the distribution it was drawn from
  top?: TokenLogprob[]; // with opts.logprobs: the opts.logprobs most likely tokens there
}

let sessionCounter = 0;

// Prompt tokens -> generated tokens, through any LayerStack.
//
// Decoding with speculation: each step feeds the last sampled token followed
// by k drafted ones, as one chunk of k+1 rows at positions p .. p+k. Row j's
// logits give the token at p+j+1, sampled exactly as plain decoding would
// sample it (the sampler's randomness is a function of the seed and the
// position: sampler.ts); the draft d_j is accepted while it equals that token.
// At the first d_j that differs, the token sampled there is kept, rows
// p+j+1 .. p+k (computed from a wrong input) are rolled back, and the next
// step starts from it. Kernels are batch-invariant, so the logits of an
// accepted row are bit-identical to plain decoding's: the output is the same
// token for token, whatever k and whatever the drafter.
export async function* generate(model: Model, stack: LayerStack, prompt: number[], opts: GenerateOptions = {}): AsyncGenerator<GeneratedToken> {
  const cfg = model.cfg;
  if (prompt.length === 0) throw new LayerswarmError("BAD_ARGUMENT", "the prompt must hold at least one token");
  if (prompt.length >= cfg.contextLength)
    throw new LayerswarmError("CONTEXT_OVERFLOW", `the prompt has ${prompt.length} tokens, the context holds ${cfg.contextLength}`);
  const session = opts.session ?? `local-${process.pid}-${++sessionCounter}`;
  const chunk = Math.max(1, opts.chunkSize ?? 64);
  const sampler = new Sampler(opts);
  const history = [...prompt];
  const maxTokens = opts.maxTokens ?? cfg.contextLength;
  const rollback = stack.rollback?.bind(stack);
  const drafter = !rollback || opts.speculate === "off" ? undefined : (opts.drafter ?? new NgramDrafter());
  const K = Math.max(0, Math.floor(opts.draftTokens ?? 4));
  const V = cfg.vocabSize;
  try {
    // Prefill: all chunks are submitted at once, so a pipelined stack works on
    // chunk k+1 in its first stage while chunk k is in the next one.
    const wantAll = !!opts.onLogits;
    const chunks: number[] = [];
    for (let p = 0; p < prompt.length; p += chunk) chunks.push(p);
    const outs = await Promise.all(chunks.map((p) => {
      const toks = prompt.slice(p, p + chunk);
      return stack.forward([{ session, pos: p, T: toks.length, tokens: toks, hidden: model.embedder.embed(toks), lastRowOnly: !wantAll, verify: opts.verify }], opts.signal);
    }));
    throwIfAborted(opts.signal);
    let logits: Float32Array | undefined;
    chunks.forEach((p, i) => {
      const h = outs[i][0];
      const rows = h.length / cfg.dim;
      if (wantAll) {
        const lg = model.head.logits(h, rows);
        for (let t = 0; t < rows; t++) opts.onLogits!(p + t, lg.subarray(t * V, (t + 1) * V));
        if (i === chunks.length - 1) logits = lg.subarray((rows - 1) * V);
      }
    });
    if (!wantAll) logits = await model.head.logitsBatched(outs[chunks.length - 1][0]);
    // rows[j]: the logits of the token at position history.length + j, valid
    // while drafts[0 .. j-1] are accepted (drafts[j] was fed at that position)
    let rows: Float32Array[] = [logits!], drafts: number[] = [];
    let n = 0;
    for (;;) {
      let id = -1;
      for (let j = 0; j < rows.length; j++) {
        const pos = history.length;
        if (j > 0) opts.onLogits?.(pos - 1, rows[j]);
        opts.logitsHook?.(rows[j], history);
        const step = sampler.step(rows[j], history);
        id = step.id;
        yield opts.logprobs === undefined ? { id, pos } : { id, pos, ...logprobs(step.logits, id, opts.logprobs) };
        history.push(id);
        n++;
        if ((opts.stopAtEog ?? true) && model.tokenizer.eog.has(id)) return;
        if (n >= maxTokens || pos + 1 >= cfg.contextLength) return;
        if (j === drafts.length) break;
        if (id !== drafts[j]) {
          // rows j+1 .. k, at positions pos .. p+k, were computed from the rejected draft: forget them
          await rollback!(session, pos, opts.signal);
          break;
        }
        speculationStats.accepted++;
      }
      throwIfAborted(opts.signal);
      const pos = history.length - 1; // of `id`, the next step's first row
      // drafts: no more than the tokens still wanted after this step's first, nor past the context
      const k = drafter ? Math.min(K, maxTokens - n - 1, cfg.contextLength - 1 - pos - 1) : 0;
      drafts = k > 0 ? drafter!.draft(history, k).slice(0, k) : [];
      const toks = [id, ...drafts], T = toks.length;
      speculationStats.drafted += drafts.length;
      if (T > 1) speculationStats.steps++;
      const [h] = await stack.forward([{ session, pos, T, tokens: toks, hidden: model.embedder.embed(toks), lastRowOnly: T === 1 ? undefined : false, verify: opts.verify }], opts.signal);
      if (T === 1) rows = [await model.head.logitsBatched(h)];
      else {
        const lg = model.head.logits(h, T);
        rows = Array.from({ length: T }, (_, t) => lg.subarray(t * V, (t + 1) * V));
      }
      opts.onLogits?.(pos, rows[0]);
    }
  } finally {
    await stack.dropSession(session);
  }
}
