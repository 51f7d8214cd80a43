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

export interface GenerateOptions extends SamplingParams {
  maxTokens?: number; // generated tokens (default: until end of generation or context)
  chunkSize?: number; // prefill chunk (default 64)
  stopAtEog?: boolean; // default true
  session?: string;
  signal?: AbortSignal;
  onLogits?: (pos: number, logits: Float32Array) => void; // every computed position's logits (tests)
  logprobs?: number; // when given: each token's logprob and this many most likely alternatives (see Sampler.step)
  // Called with each step's logits (V,) just before sampling, and with the
  // tokens so far (prompt and generated); it may change them in place (a
  // constrained output masks tokens with -Infinity). Logit bias and penalties
  // come after it, and logprobs describe what it leaves.
  logitsHook?: (logits: Float32Array, history: readonly number[]) => void;
  verify?: "strict"; // a swarm stack: every step on two disjoint routes (Step.verify)
}

export interface GeneratedToken {
  id: number;
  pos: number;
  logprob?: number; // with opts.logprobs: log-probability of `id` in the distribution it was drawn from
  top?: TokenLogprob[]; // with opts.logprobs: the opts.logprobs most likely tokens there
}

let sessionCounter = 0;

// Prompt tokens -> generated tokens, through any LayerStack.
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
        for (let t = 0; t < rows; t++) opts.onLogits!(p + t, lg.subarray(t * cfg.vocabSize, (t + 1) * cfg.vocabSize));
        if (i === chunks.length - 1) logits = lg.subarray((rows - 1) * cfg.vocabSize);
      }
    });
    if (!wantAll) logits = await model.head.logitsBatched(outs[chunks.length - 1][0]);
    for (let n = 0; n < maxTokens; n++) {
      const pos = history.length;
      opts.logitsHook?.(logits!, history);
      const { id, logits: drawnFrom } = sampler.step(logits!, history);
      yield opts.logprobs === undefined ? { id, pos } : { id, pos, ...logprobs(drawnFrom, id, opts.logprobs) };
      history.push(id);
      if ((opts.stopAtEog ?? true) && model.tokenizer.eog.has(id)) return;
      if (n + 1 >= maxTokens || pos + 1 >= cfg.contextLength) return;
      throwIfAborted(opts.signal);
      const [h] = await stack.forward([{ session, pos, T: 1, tokens: [id], hidden: model.embedder.embed([id]), verify: opts.verify }], opts.signal);
      logits = await model.head.logitsBatched(h);
      opts.onLogits?.(pos, logits);
    }
  } finally {
    await stack.dropSession(session);
  }
}
