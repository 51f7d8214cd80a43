// What a node can recover from the hidden states it is sent (issue 7).
// A node serving layers [start, end) receives the hidden state entering layer
// `start` and returns the one leaving layer end-1. Two cheap attacks need only
// the model's public weights:
//   nearest neighbour: input row -> the embedding-table row closest to it.
//     Exact at layer 0: the first stage receives embedding rows verbatim.
//   logit lens: output row -> argmax(output(rmsnorm(row))), what the model would
//     predict if the remaining layers were skipped. Exact for the last layer's
//     output: that is the model's own prediction, i.e. every greedy token.
// These are a floor on what a node learns, not a ceiling: inversion models
// trained on activations recover most of a prompt from the middle of large
// models (arXiv 2503.09022: 88% of tokens on Llama-65B).
//
// Names: V vocabulary, C width, T rows, L layers. states[j] is the hidden state
// after layers [0, j): states[0] = embeddings, states[L] = the last layer's output.

import { LayerswarmError } from "../errors.js";
import { ModelConfig } from "./config.js";
import { Embedder, SliceRuntime } from "./runtime.js";
import { argmax } from "./sampler.js";

export type Metric = "cosine" | "l2";

// Hits out of total; summed over sequences before dividing.
export interface Score {
  hits: number;
  total: number;
}
export const fraction = (s: Score): number => (s.total === 0 ? 0 : s.hits / s.total);
const add = (a: Score, b: Score): Score => ({ hits: a.hits + b.hits, total: a.total + b.total });
const zero = (): Score => ({ hits: 0, total: 0 });

// positions t where guess[t] === truth[t + offset] (offset 1: the text's next token)
function agreement(guess: ArrayLike<number>, truth: readonly number[], offset: number): Score {
  let hits = 0, total = 0;
  for (let t = 0; t + offset < truth.length && t < guess.length; t++, total++) if (guess[t] === truth[t + offset]) hits++;
  return { hits, total };
}

// The whole embedding table, as the first stage would compare against it: (V, C).
export function embeddingTable(embedder: Embedder): Float32Array {
  return embedder.embed(Array.from({ length: embedder.cfg.vocabSize }, (_, i) => i));
}

// m (N, C) -> ||m[i]|| (N,), in float64
function rowNorms(m: Float32Array, C: number): Float64Array {
  const out = new Float64Array(m.length / C);
  for (let i = 0; i < out.length; i++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += m[i * C + c] * m[i * C + c];
    out[i] = Math.sqrt(s);
  }
  return out;
}

// table (V, C), rows (T, C) -> index of the nearest table row for each row (T,).
// cosine: argmax x.e / (|x||e|); l2: argmin |x - e|^2 = |e|^2 - 2 x.e (+ |x|^2, constant per row)
export function nearestRows(table: Float32Array, rows: Float32Array, C: number, metric: Metric): Int32Array {
  const V = table.length / C, T = rows.length / C;
  const en = rowNorms(table, C), xn = rowNorms(rows, C);
  const out = new Int32Array(T);
  for (let t = 0; t < T; t++) {
    let best = 0, bv = -Infinity;
    for (let v = 0; v < V; v++) {
      let dot = 0;
      for (let c = 0; c < C; c++) dot += rows[t * C + c] * table[v * C + c];
      const score = metric === "cosine" ? dot / (en[v] * xn[t] || 1) : 2 * dot - en[v] * en[v];
      if (score > bv) (bv = score), (best = v);
    }
    out[t] = best;
  }
  return out;
}

export interface NeighbourScore {
  cosine: Score;
  l2: Score;
}
// The better of the two metrics, named.
export function bestMetric(s: NeighbourScore): { metric: Metric; fraction: number } {
  const c = fraction(s.cosine), l = fraction(s.l2);
  return c >= l ? { metric: "cosine", fraction: c } : { metric: "l2", fraction: l };
}

// (a) rows (T, C) entering some layer, tokens (T,) behind them -> how many rows
// name their own token as the nearest embedding row, under each metric.
export function nearestNeighbourAttack(table: Float32Array, rows: Float32Array, tokens: readonly number[], C: number): NeighbourScore {
  return {
    cosine: agreement(nearestRows(table, rows, C, "cosine"), tokens, 0),
    l2: agreement(nearestRows(table, rows, C, "l2"), tokens, 0),
  };
}

// Anything that maps hidden rows to logits with the public final norm and head (Head does).
export interface LogitHead {
  logits(hidden: Float32Array, T: number): Float32Array; // (T, C) -> (T, V)
}

// rows (T, C) -> argmax token of head(rows) (T,)
export function logitLensTokens(head: LogitHead, rows: Float32Array, T: number, V: number): Int32Array {
  const lg = head.logits(rows, T);
  const out = new Int32Array(T);
  for (let t = 0; t < T; t++) out[t] = argmax(lg, t * V, V);
  return out;
}

export interface LensScore {
  next: Score; // guess[t] === tokens[t + 1] (the text's next token; T - 1 positions)
  input: Score; // guess[t] === tokens[t] (the row's own token)
}

// (b) rows (T, C) leaving some layer, tokens (T,) of the text -> how many rows'
// logit-lens argmax is the text's next token, and how many are the row's own token.
export function logitLensAttack(head: LogitHead, rows: Float32Array, tokens: readonly number[], V: number): LensScore {
  const guess = logitLensTokens(head, rows, tokens.length, V);
  return { next: agreement(guess, tokens, 1), input: agreement(guess, tokens, 0) };
}

// tokens (T,) -> states[j] (T, C) for j = 0..L, running `layers` (which must hold
// all L layers) one layer at a time on a private session that is dropped after.
let sessionCounter = 0;
export function hiddenStates(embedder: Embedder, layers: SliceRuntime, tokens: readonly number[]): Float32Array[] {
  const L = layers.cfg.nLayers;
  if (layers.range.start !== 0 || layers.range.end !== L)
    throw new LayerswarmError("BAD_RANGE", `measuring privacy needs a slice of all layers [0, ${L}), got [${layers.range.start}, ${layers.range.end})`);
  const session = `privacy-${process.pid}-${++sessionCounter}`;
  const states = [embedder.embed([...tokens])];
  try {
    for (let l = 0; l < L; l++) {
      const [out] = layers.forward([{ session, pos: 0, T: tokens.length, hidden: states[l] }], undefined, { start: l, end: l + 1 });
      states.push(out);
    }
  } finally {
    layers.dropSession(session);
  }
  return states;
}

// Both attacks on the hidden state after j layers, summed over sequences.
export interface StateRecovery {
  j: number; // layers run: states[j] enters layer j and leaves layer j-1
  neighbour: NeighbourScore; // (a) against the row's own token
  lens: LensScore; // (b)
}

// What the remote stages see when the gateway keeps K layers at the front
// (--local-layers K) and K at the back (--local-tail K).
export interface KRecovery {
  K: number; // clamped to L
  firstInput: StateRecovery; // states[K]: what the first remote stage receives
  lastOutput: StateRecovery; // states[L - K]: what the last remote stage returns
}

export interface Recovery {
  L: number;
  tokens: number; // rows measured
  perState: StateRecovery[]; // j = 0..L
  byK: KRecovery[];
}

export interface PrivacyModel {
  cfg: ModelConfig;
  embedder: Embedder;
  head: LogitHead;
}

// (c) run each sequence layer by layer and attack every hidden state.
export function measureRecovery(model: PrivacyModel, layers: SliceRuntime, sequences: readonly (readonly number[])[], ks: readonly number[] = [0, 1, 2, 4]): Recovery {
  const { cfg } = model, C = cfg.dim, V = cfg.vocabSize, L = cfg.nLayers;
  const table = embeddingTable(model.embedder);
  const perState: StateRecovery[] = Array.from({ length: L + 1 }, (_, j) => ({
    j,
    neighbour: { cosine: zero(), l2: zero() },
    lens: { next: zero(), input: zero() },
  }));
  let tokens = 0;
  for (const seq of sequences) {
    tokens += seq.length;
    hiddenStates(model.embedder, layers, seq).forEach((h, j) => {
      const s = perState[j], nn = nearestNeighbourAttack(table, h, seq, C), lens = logitLensAttack(model.head, h, seq, V);
      s.neighbour = { cosine: add(s.neighbour.cosine, nn.cosine), l2: add(s.neighbour.l2, nn.l2) };
      s.lens = { next: add(s.lens.next, lens.next), input: add(s.lens.input, lens.input) };
    });
  }
  const Ks = [...new Set(ks.map((k) => Math.max(0, Math.min(L, Math.floor(k)))))];
  const byK = Ks.map((K) => ({ K, firstInput: perState[K], lastOutput: perState[L - K] }));
  return { L, tokens, perState, byK };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

// The table by K, as markdown.
export function formatRecoveryByK(r: Recovery): string {
  const lines = [
    `| K | first remote stage's input (after layers [0, K)): nearest neighbour | last remote stage's output (after layers [0, L-K)): logit lens = next token | same, = its own input token |`,
    `|---|---|---|---|`,
  ];
  for (const { K, firstInput, lastOutput } of r.byK) {
    const nn = bestMetric(firstInput.neighbour);
    lines.push(`| ${K} | ${pct(nn.fraction)} (${nn.metric}) | ${pct(fraction(lastOutput.lens.next))} | ${pct(fraction(lastOutput.lens.input))} |`);
  }
  return lines.join("\n");
}

// Every hidden state, both attacks, both metrics, as markdown.
export function formatRecoveryPerState(r: Recovery): string {
  const lines = [
    `| layers run j | NN cosine | NN L2 | lens = next token | lens = own token |`,
    `|---|---|---|---|---|`,
  ];
  for (const s of r.perState)
    lines.push(`| ${s.j} | ${pct(fraction(s.neighbour.cosine))} | ${pct(fraction(s.neighbour.l2))} | ${pct(fraction(s.lens.next))} | ${pct(fraction(s.lens.input))} |`);
  return lines.join("\n");
}
