// Model hyper-parameters, read straight from GGUF metadata ("{arch}.*" keys).

import { LayerswarmError } from "../errors.js";
import { GGUFFile, GGUFValueType, metaInteger, metaNumber, metaString, quoted } from "../format/gguf.js";

export const ARCHITECTURES = ["llama", "qwen2", "qwen3"] as const;
export type Architecture = (typeof ARCHITECTURES)[number];

export interface ModelConfig {
  arch: Architecture;
  name: string;
  dim: number; // C: embedding width
  nLayers: number;
  nHeads: number;
  nKVHeads: number;
  headDim: number;
  ffnDim: number;
  vocabSize: number;
  contextLength: number;
  eps: number;
  ropeBase: number;
  ropeDim: number; // how many dims of each head RoPE rotates
  ropeHalves: boolean; // neox-style (i, i + d/2) pairs instead of adjacent (2i, 2i+1)
  ropeScaleLinear: number; // positions divided by this (rope.scaling.type = linear)
  qkvBias: boolean; // qwen2
  qkNorm: boolean; // qwen3
  tiedOutput: boolean; // no output.weight: the head reuses token_embd
  hasRopeFreqs: boolean; // llama 3.1+ frequency factors in rope_freqs.weight
}

// Bounds far beyond any real model, small enough that nothing derived from them
// overflows or loops for long.
const MAX_CONTEXT = 1 << 24;
const MAX_WIDTH = 1 << 20; // embedding, feed-forward and head widths
const MAX_LAYERS = 1 << 16;
// A usable vocabulary holds at least the unknown, BOS and EOS tokens and one token of text.
const MIN_VOCAB = 4;
const TOKEN_TYPES = 6; // llama.cpp's token types: 0 (undefined) to 6 (byte)

// The config of a GGUF file, once every hyper-parameter is in range, every tensor
// the config implies is there with its shape, no layer lies beyond block_count,
// and the tokenizer's arrays and ids fit the vocabulary. Every path that reads a
// model (generate, inspect, node, gateway) comes through here.
export function configFromGGUF(f: GGUFFile): ModelConfig {
  const arch = metaString(f, "general.architecture");
  if (!arch) throw new LayerswarmError("BAD_FILE", `${f.path}: no general.architecture in metadata`);
  if (!(ARCHITECTURES as readonly string[]).includes(arch))
    throw new LayerswarmError("UNSUPPORTED", `${f.path}: architecture ${quoted(arch)} is not supported (supported: ${ARCHITECTURES.join(", ")})`);
  const bad = (m: string): never => {
    throw new LayerswarmError("BAD_FILE", `${f.path}: ${m}`);
  };
  // An integer in [min, max] (`maxIs` says where max comes from); `dflt` when
  // absent (required when there is none).
  const int = (k: string, min: number, max: number, dflt?: number, maxIs = ""): number => {
    const v = metaInteger(f, `${arch}.${k}`) ?? dflt;
    if (v === undefined) return bad(`missing metadata ${arch}.${k}`);
    if (v < min || v > max) bad(`${arch}.${k} is ${v}, expected an integer from ${min} to ${max}${maxIs && ` (${maxIs})`}`);
    return v;
  };
  // A finite number in the open interval (lo, hi); `dflt` when absent.
  const real = (k: string, dflt: number, lo: number, hi: number): number => {
    const v = metaNumber(f, `${arch}.${k}`);
    if (v === undefined) {
      if (f.metadata.has(`${arch}.${k}`)) bad(`${arch}.${k} is not a number`);
      return dflt;
    }
    if (!Number.isFinite(v) || !(v > lo && v < hi)) bad(`${arch}.${k} is ${v}, expected a finite number above ${lo}${hi < Infinity ? ` and below ${hi}` : ""}`);
    return v;
  };
  const dim = int("embedding_length", 1, MAX_WIDTH);
  const nHeads = int("attention.head_count", 1, MAX_WIDTH);
  const nKVHeads = int("attention.head_count_kv", 1, nHeads, nHeads, `${arch}.attention.head_count`);
  if (nHeads % nKVHeads !== 0) bad(`${arch}.attention.head_count ${nHeads} is not a multiple of ${arch}.attention.head_count_kv ${nKVHeads}`);
  const hasKeyLength = f.metadata.has(`${arch}.attention.key_length`);
  if (!hasKeyLength && dim % nHeads !== 0)
    bad(`${arch}.embedding_length ${dim} is not a multiple of ${arch}.attention.head_count ${nHeads} (and there is no ${arch}.attention.key_length)`);
  const headDim = hasKeyLength ? int("attention.key_length", 2, MAX_WIDTH) : dim / nHeads;
  const headIs = `the head size ${headDim}: ${hasKeyLength ? `${arch}.attention.key_length` : `${arch}.embedding_length ${dim} / ${arch}.attention.head_count ${nHeads}`}`;
  if (headDim % 2 !== 0) bad(`${headIs}, must be even (RoPE rotates pairs)`);
  const valueLength = int("attention.value_length", 1, MAX_WIDTH, headDim);
  if (valueLength !== headDim)
    throw new LayerswarmError("UNSUPPORTED", `${f.path}: ${arch}.attention.value_length ${valueLength} differs from the key length ${headDim}, which is not supported`);
  const ropeDim = int("rope.dimension_count", 2, headDim, headDim, headIs);
  if (ropeDim % 2 !== 0) bad(`${arch}.rope.dimension_count ${ropeDim} must be even`);
  const emb = f.tensors.get("token_embd.weight");
  if (!emb) return bad(`missing tensor "token_embd.weight"`);
  if (emb.dims.length !== 2 || emb.dims[0] !== dim)
    bad(`tensor "token_embd.weight" has shape [${emb.dims}], expected [${dim}, vocabulary] (${arch}.embedding_length is ${dim})`);
  const vocabSize = emb.dims[1];
  const declaredVocab = metaInteger(f, `${arch}.vocab_size`);
  if (declaredVocab !== undefined && declaredVocab !== vocabSize)
    bad(`${arch}.vocab_size is ${declaredVocab}, but token_embd.weight has ${vocabSize} rows`);
  if (vocabSize < MIN_VOCAB) bad(`the vocabulary has ${vocabSize} tokens (token_embd.weight rows), fewer than ${MIN_VOCAB}`);
  const scalingType = metaString(f, `${arch}.rope.scaling.type`);
  const cfg: ModelConfig = {
    arch: arch as Architecture,
    name: metaString(f, "general.name") ?? arch,
    dim,
    nLayers: int("block_count", 1, MAX_LAYERS),
    nHeads,
    nKVHeads,
    headDim,
    ffnDim: int("feed_forward_length", 1, MAX_WIDTH),
    vocabSize,
    contextLength: int("context_length", 1, MAX_CONTEXT),
    eps: real("attention.layer_norm_rms_epsilon", 1e-5, 0, 1),
    ropeBase: real("rope.freq_base", 10000, 0, Infinity),
    ropeDim,
    ropeHalves: arch !== "llama",
    ropeScaleLinear: scalingType === "linear" ? real("rope.scaling.factor", 1, 0, Infinity) : 1,
    qkvBias: f.tensors.has("blk.0.attn_q.bias"),
    qkNorm: f.tensors.has("blk.0.attn_q_norm.weight"),
    tiedOutput: !f.tensors.has("output.weight"),
    hasRopeFreqs: f.tensors.has("rope_freqs.weight"),
  };
  checkLayers(f, cfg, bad);
  checkTensors(f, cfg, bad, `${arch}.embedding_length ${dim}, ${arch}.feed_forward_length ${cfg.ffnDim}, ` +
    `${arch}.attention.head_count ${nHeads}, ${arch}.attention.head_count_kv ${nKVHeads}, ${headIs}, ${arch}.rope.dimension_count ${ropeDim}, vocabulary ${vocabSize}`);
  checkVocabulary(f, vocabSize, bad);
  return cfg;
}

// block_count is the number of layers the tensors hold: blk.N.* for every N in
// [0, block_count), and none beyond.
function checkLayers(f: GGUFFile, cfg: ModelConfig, bad: (m: string) => never): void {
  const present = new Set<number>();
  for (const name of f.tensors.keys()) {
    const m = /^blk\.(\d+)\./.exec(name);
    if (!m) continue;
    const i = Number(m[1]);
    if (i >= cfg.nLayers) bad(`tensor ${quoted(name)} belongs to layer ${m[1]}, but ${cfg.arch}.block_count is ${cfg.nLayers}`);
    present.add(i);
  }
  if (present.size === cfg.nLayers) return;
  let missing = 0;
  while (present.has(missing)) missing++;
  bad(`${cfg.arch}.block_count is ${cfg.nLayers}, but the file has no tensors for layer ${missing} (it holds ${present.size} layers)`);
}

// The tensors a model of this config reads, with their shapes (ggml order: the
// row length first). model/weights.ts loads exactly these.
export function expectedTensors(cfg: ModelConfig): [name: string, dims: number[]][] {
  const C = cfg.dim, V = cfg.vocabSize, F = cfg.ffnDim, D = cfg.headDim;
  const qDim = cfg.nHeads * D, kvDim = cfg.nKVHeads * D;
  const out: [string, number[]][] = [["token_embd.weight", [C, V]], ["output_norm.weight", [C]]];
  if (!cfg.tiedOutput) out.push(["output.weight", [C, V]]);
  if (cfg.hasRopeFreqs) out.push(["rope_freqs.weight", [cfg.ropeDim / 2]]);
  for (let i = 0; i < cfg.nLayers; i++) {
    const p = `blk.${i}.`;
    out.push(
      [p + "attn_norm.weight", [C]], [p + "attn_q.weight", [C, qDim]], [p + "attn_k.weight", [C, kvDim]],
      [p + "attn_v.weight", [C, kvDim]], [p + "attn_output.weight", [qDim, C]], [p + "ffn_norm.weight", [C]],
      [p + "ffn_gate.weight", [C, F]], [p + "ffn_up.weight", [C, F]], [p + "ffn_down.weight", [F, C]],
    );
    if (cfg.qkvBias) out.push([p + "attn_q.bias", [qDim]], [p + "attn_k.bias", [kvDim]], [p + "attn_v.bias", [kvDim]]);
    if (cfg.qkNorm) out.push([p + "attn_q_norm.weight", [D]], [p + "attn_k_norm.weight", [D]]);
  }
  return out;
}

function checkTensors(f: GGUFFile, cfg: ModelConfig, bad: (m: string) => never, from: string): void {
  for (const [name, dims] of expectedTensors(cfg)) {
    const t = f.tensors.get(name);
    if (!t) bad(`missing tensor ${quoted(name)}`);
    else if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i]))
      bad(`tensor ${quoted(name)} has shape [${t.dims}], expected [${dims}] from ${from}`);
  }
}

// The tokenizer's metadata, where present, against the vocabulary of the embedding.
function checkVocabulary(f: GGUFFile, V: number, bad: (m: string) => never): void {
  const array = (k: string, ok: (x: unknown) => boolean, what: string): void => {
    const v = f.metadata.get(k);
    if (v === undefined) return;
    if (!Array.isArray(v)) return bad(`${k} is not an array`);
    if (v.length !== V) bad(`${k} has ${v.length} entries, but the vocabulary (token_embd.weight rows) has ${V}`);
    const i = v.findIndex((x) => !ok(x));
    if (i >= 0) bad(`${k}[${i}] is ${String(v[i])}, expected ${what}`);
  };
  array("tokenizer.ggml.tokens", (x) => typeof x === "string", "a string");
  array("tokenizer.ggml.scores", (x) => typeof x === "number" && Number.isFinite(x), "a finite number");
  array("tokenizer.ggml.token_type", (x) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= TOKEN_TYPES, `a token type from 0 to ${TOKEN_TYPES}`);
  const merges = f.metadata.get("tokenizer.ggml.merges");
  if (merges !== undefined && (!Array.isArray(merges) || f.metaTypes.get("tokenizer.ggml.merges") !== GGUFValueType.STRING))
    bad(`tokenizer.ggml.merges is not an array of strings`);
  for (const k of f.metadata.keys()) {
    if (!/^tokenizer\.ggml\.\w+_token_id$/.test(k)) continue;
    const id = metaInteger(f, k)!;
    if (id < 0 || id >= V) bad(`${k} is ${id}, outside the vocabulary [0, ${V})`);
  }
  // a tokenizer that starts every text with BOS needs one (the default as in tokenizer/index.ts)
  const addBos = f.metadata.get("tokenizer.ggml.add_bos_token") ?? metaString(f, "tokenizer.ggml.model") === "llama";
  if (addBos === true && !f.metadata.has("tokenizer.ggml.bos_token_id"))
    bad(`tokenizer.ggml.add_bos_token is ${f.metadata.has("tokenizer.ggml.add_bos_token") ? "true" : "true by default for the llama tokenizer"}, but there is no tokenizer.ggml.bos_token_id`);
}

export interface LayerRange {
  start: number; // first layer
  end: number; // one past the last layer
}

export function checkRange(cfg: ModelConfig, r: LayerRange): void {
  if (!Number.isInteger(r.start) || !Number.isInteger(r.end) || r.start < 0 || r.end > cfg.nLayers || r.start >= r.end)
    throw new LayerswarmError("BAD_RANGE", `layer range [${r.start}, ${r.end}) is not within the model's ${cfg.nLayers} layers [0, ${cfg.nLayers})`);
}

export function parseRange(s: string): LayerRange {
  const m = /^(\d+):(\d+)$/.exec(s.trim());
  if (!m) throw new LayerswarmError("BAD_ARGUMENT", `layer range "${s}" must look like START:END (half-open, e.g. 0:8)`);
  return { start: Number(m[1]), end: Number(m[2]) };
}
