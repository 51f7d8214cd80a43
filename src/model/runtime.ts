// The three parts of the forward pass, each usable on its own machine:
//   Embedder.embed(tokens) -> hidden (T, C)                          gateway
//   SliceRuntime.forward(steps)  layers [start, end), KV per session  node
//   Head.logits(hidden) -> (T, V)                                    gateway
// One SliceRuntime.forward call advances several sessions at once: their rows
// are stacked into one matrix so every weight is read once per call
// (continuous batching). Each row's arithmetic is the same whatever it is
// batched with, so results are bit-identical to running it alone.

import { LayerswarmError, throwIfAborted } from "../errors.js";
import { dequantizeRow } from "../format/quant.js";
import { Kernels } from "../kernels/index.js";
import { addBias, addInPlace, kIndex, ropeRow, ropeTable } from "../kernels/ref/ops.js";
import { LayerRange, ModelConfig } from "./config.js";
import { KVBudget, KVCache } from "./kvcache.js";
import { EmbeddingWeights, HeadWeights, LayerWeights } from "./weights.js";

export interface Step {
  session: string;
  tokens?: number[]; // the token ids behind `hidden`, when known (lets a swarm replay a session)
  pos: number; // position of the first row; rows are pos, pos+1, ...
  T: number; // rows
  hidden: Float32Array; // (T, C)
  lastRowOnly?: boolean; // the caller needs only the final row's output (a stack may return just that)
  verify?: "strict"; // a swarm stack runs this step on two disjoint routes and returns rows only when both agree
}

export interface SliceOptions {
  kvBudgetBytes?: number; // default: 2 GiB
  maxSessions?: number; // default: 256
  maxContext?: number; // default: the model's context length
}

export class SliceRuntime {
  readonly sessions = new Map<string, KVCache>();
  readonly budget: KVBudget;
  readonly maxSessions: number;
  readonly maxContext: number;

  constructor(
    readonly cfg: ModelConfig,
    readonly range: LayerRange,
    private layers: LayerWeights[],
    private k: Kernels,
    private ropeFreqs: Float32Array | undefined,
    opts: SliceOptions = {},
  ) {
    this.budget = new KVBudget(opts.kvBudgetBytes ?? 2 * 2 ** 30);
    this.maxSessions = opts.maxSessions ?? 256;
    this.maxContext = Math.min(opts.maxContext ?? cfg.contextLength, cfg.contextLength);
  }

  get kvDim(): number {
    return this.cfg.nKVHeads * this.cfg.headDim;
  }

  session(id: string): KVCache {
    let s = this.sessions.get(id);
    if (!s) {
      if (this.sessions.size >= this.maxSessions)
        throw new LayerswarmError("OUT_OF_MEMORY", `too many sessions: ${this.maxSessions} are open on layers [${this.range.start}, ${this.range.end})`);
      s = new KVCache(id, this.layers.length, this.kvDim, this.maxContext, this.budget);
      this.sessions.set(id, s);
    }
    return s;
  }

  dropSession(id: string): void {
    this.sessions.get(id)?.free();
    this.sessions.delete(id);
  }

  // Truncates a session's cache to positions [0, pos) in one call: the cache
  // and the KV memory charged for it are as if the later rows had never been
  // sent (speculation's rejected rows). Returns the positions it held before
  // (0 for a session it does not hold; nothing changes when pos >= that).
  rollback(id: string, pos: number): number {
    const c = this.sessions.get(id);
    if (!c) return 0;
    const had = c.length;
    c.truncate(pos);
    return had;
  }

  // Advance every step through this slice's layers. Returns each step's output
  // hidden state (T, C). A step may start before the session's end (pos <
  // length) to rewrite history, e.g. a replay; it may not leave a gap.
  // `layers` (default: all of this slice's) runs a sub-range, e.g. when a route
  // uses only part of what a node holds.
  forward(steps: Step[], signal?: AbortSignal, layers: LayerRange = this.range): Float32Array[] {
    const { cfg, k } = this;
    if (layers.start < this.range.start || layers.end > this.range.end || layers.start >= layers.end)
      throw new LayerswarmError("BAD_RANGE", `layers [${layers.start}, ${layers.end}) are not within this slice [${this.range.start}, ${this.range.end})`);
    const C = cfg.dim, H = cfg.nHeads, D = cfg.headDim, qDim = H * D, kvDim = this.kvDim, F = cfg.ffnDim;
    // validate everything before touching any state
    const seen = new Set<string>();
    for (const s of steps) {
      if (seen.has(s.session)) throw new LayerswarmError("BAD_ARGUMENT", `session ${s.session} appears twice in one batch`);
      seen.add(s.session);
      if (!(s.T > 0) || s.hidden.length !== s.T * C)
        throw new LayerswarmError("BAD_ARGUMENT", `session ${s.session}: hidden has ${s.hidden.length} values, expected T=${s.T} rows of ${C}`);
      const have = this.sessions.get(s.session)?.length ?? 0;
      if (!Number.isInteger(s.pos) || s.pos < 0 || s.pos > have)
        throw new LayerswarmError("BAD_ARGUMENT", `session ${s.session}: step at position ${s.pos} but the cache holds ${have} positions`);
      if (s.pos + s.T > this.maxContext)
        throw new LayerswarmError("CONTEXT_OVERFLOW", `session ${s.session}: positions up to ${s.pos + s.T} exceed the context length ${this.maxContext}`);
    }
    const caches = steps.map((s) => this.session(s.session));
    steps.forEach((s, i) => caches[i].reserve(s.pos + s.T));
    const N = steps.reduce((a, s) => a + s.T, 0);
    // row bookkeeping: row r belongs to step rowStep[r] at position rowPos[r]
    const rowStep = new Int32Array(N), rowPos = new Int32Array(N);
    const x = new Float32Array(N * C);
    let r = 0;
    steps.forEach((s, i) => {
      x.set(s.hidden, r * C);
      for (let t = 0; t < s.T; t++, r++) (rowStep[r] = i), (rowPos[r] = s.pos + t);
    });
    const xb = new Float32Array(N * Math.max(C, qDim)), q = new Float32Array(N * qDim);
    const kk = new Float32Array(N * kvDim), vv = new Float32Array(N * kvDim);
    const att = new Float32Array(this.maxContext), ao = new Float32Array(N * qDim), o = new Float32Array(N * C);
    const hb = new Float32Array(N * F), hb2 = new Float32Array(N * F);
    const cos = new Float32Array(cfg.ropeDim / 2), sin = new Float32Array(cfg.ropeDim / 2);
    const posScale = cfg.ropeScaleLinear;

    for (let l = layers.start - this.range.start; l < layers.end - this.range.start; l++) {
      throwIfAborted(signal);
      const w = this.layers[l];
      // attention: x + wo(attn(rope(wq xn), rope(wk xn), wv xn)), xn = rmsnorm(x)
      k.rmsnorm(xb, x, w.attn_norm, N, C, cfg.eps);
      k.matmul(w.attn_q, xb, N, q);
      k.matmul(w.attn_k, xb, N, kk);
      k.matmul(w.attn_v, xb, N, vv);
      if (w.attn_q_bias) addBias(q, w.attn_q_bias, N, qDim);
      if (w.attn_k_bias) addBias(kk, w.attn_k_bias, N, kvDim);
      if (w.attn_v_bias) addBias(vv, w.attn_v_bias, N, kvDim);
      if (w.attn_q_norm && w.attn_k_norm) {
        k.rmsnorm(q, q, w.attn_q_norm, N * H, D, cfg.eps);
        k.rmsnorm(kk, kk, w.attn_k_norm, N * cfg.nKVHeads, D, cfg.eps);
      }
      for (let i = 0; i < N; i++) {
        ropeTable(rowPos[i] / posScale, cfg.ropeDim, cfg.ropeBase, this.ropeFreqs, cos, sin);
        ropeRow(q, i * qDim, H, D, cfg.ropeDim, cos, sin, cfg.ropeHalves);
        ropeRow(kk, i * kvDim, cfg.nKVHeads, D, cfg.ropeDim, cos, sin, cfg.ropeHalves);
        const c = caches[rowStep[i]];
        const kc = c.k[l], p = rowPos[i];
        for (let e = 0; e < kvDim; e++) kc[kIndex(p, e, kvDim)] = kk[i * kvDim + e];
        c.v[l].set(vv.subarray(i * kvDim, (i + 1) * kvDim), rowPos[i] * kvDim);
      }
      for (let i = 0; i < N; i++) {
        const c = caches[rowStep[i]];
        k.attentionRow(ao, i * qDim, q, i * qDim, c.k[l], c.v[l], rowPos[i], H, cfg.nKVHeads, D, att);
      }
      k.matmul(w.attn_output, ao, N, o);
      addInPlace(x, o, N * C);
      // FFN: x + w2(silu(w1 xn) * w3 xn), xn = rmsnorm(x)
      k.rmsnorm(xb, x, w.ffn_norm, N, C, cfg.eps);
      k.matmul(w.ffn_gate, xb, N, hb);
      k.matmul(w.ffn_up, xb, N, hb2);
      k.siluMul(hb, hb2, N * F);
      k.matmul(w.ffn_down, hb, N, o);
      addInPlace(x, o, N * C);
    }
    steps.forEach((s, i) => (caches[i].length = s.pos + s.T));
    const out: Float32Array[] = [];
    r = 0;
    for (const s of steps) {
      out.push(x.slice(r * C, (r + s.T) * C));
      r += s.T;
    }
    return out;
  }
}

export class Embedder {
  constructor(readonly cfg: ModelConfig, private w: EmbeddingWeights) {}
  // tokens (T,) -> hidden (T, C)
  embed(tokens: number[]): Float32Array {
    const C = this.cfg.dim, e = this.w.token_embd;
    const out = new Float32Array(tokens.length * C);
    const rowBytes = e.data.length / e.rows;
    tokens.forEach((tok, t) => {
      if (!Number.isInteger(tok) || tok < 0 || tok >= this.cfg.vocabSize)
        throw new LayerswarmError("BAD_ARGUMENT", `token id ${tok} is outside the vocabulary [0, ${this.cfg.vocabSize})`);
      dequantizeRow(e.type, e.data, tok * rowBytes, C, out, t * C);
    });
    return out;
  }
}

export class Head {
  private xn: Float32Array = new Float32Array(0);
  private queue: { h: Float32Array; resolve: (l: Float32Array) => void; reject: (e: unknown) => void }[] = [];
  constructor(readonly cfg: ModelConfig, private w: HeadWeights, private k: Kernels) {}

  // One row's logits, computed together with every other row asked for in the
  // same turn of the event loop (one pass over the output matrix for all
  // concurrent sessions; the bits are the same as alone).
  logitsBatched(h: Float32Array): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      if (this.queue.push({ h, resolve, reject }) > 1) return;
      setImmediate(() => {
        const q = this.queue;
        this.queue = [];
        try {
          const C = this.cfg.dim, V = this.cfg.vocabSize;
          const x = new Float32Array(q.length * C);
          q.forEach((e, i) => x.set(e.h.subarray(e.h.length - C), i * C));
          const out = this.logits(x, q.length);
          q.forEach((e, i) => e.resolve(out.subarray(i * V, (i + 1) * V)));
        } catch (e) {
          for (const r of q) r.reject(e);
        }
      });
    });
  }
  // hidden (T, C) -> the final norm's output (T, C): the model's last hidden state (embeddings)
  norm(hidden: Float32Array, T: number): Float32Array {
    const out = new Float32Array(T * this.cfg.dim);
    this.k.rmsnorm(out, hidden, this.w.output_norm, T, this.cfg.dim, this.cfg.eps);
    return out;
  }
  // hidden (T, C) -> logits (T, V)
  logits(hidden: Float32Array, T: number): Float32Array {
    const C = this.cfg.dim;
    if (this.xn.length < T * C) this.xn = new Float32Array(T * C);
    this.k.rmsnorm(this.xn, hidden, this.w.output_norm, T, C, this.cfg.eps);
    const out = new Float32Array(T * this.cfg.vocabSize);
    this.k.matmul(this.w.output, this.xn, T, out);
    return out;
  }
}
