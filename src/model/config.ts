// Model hyper-parameters, read straight from GGUF metadata ("{arch}.*" keys).

import { LayerswarmError } from "../errors.js";
import { GGUFFile, metaNumber, metaString } from "../format/gguf.js";

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

export function configFromGGUF(f: GGUFFile): ModelConfig {
  const arch = metaString(f, "general.architecture");
  if (!arch) throw new LayerswarmError("BAD_FILE", `${f.path}: no general.architecture in metadata`);
  if (!(ARCHITECTURES as readonly string[]).includes(arch))
    throw new LayerswarmError("UNSUPPORTED", `${f.path}: architecture "${arch}" is not supported (supported: ${ARCHITECTURES.join(", ")})`);
  const need = (k: string): number => {
    const v = metaNumber(f, `${arch}.${k}`);
    if (v === undefined) throw new LayerswarmError("BAD_FILE", `${f.path}: missing metadata ${arch}.${k}`);
    return v;
  };
  const dim = need("embedding_length");
  const nHeads = need("attention.head_count");
  const nKVHeads = metaNumber(f, `${arch}.attention.head_count_kv`) ?? nHeads;
  const headDim = metaNumber(f, `${arch}.attention.key_length`) ?? dim / nHeads;
  const emb = f.tensors.get("token_embd.weight");
  if (!emb) throw new LayerswarmError("BAD_FILE", `${f.path}: missing tensor token_embd.weight`);
  const vocabSize = metaNumber(f, `${arch}.vocab_size`) ?? emb.dims[1];
  const scalingType = metaString(f, `${arch}.rope.scaling.type`);
  const cfg: ModelConfig = {
    arch: arch as Architecture,
    name: metaString(f, "general.name") ?? arch,
    dim,
    nLayers: need("block_count"),
    nHeads,
    nKVHeads,
    headDim,
    ffnDim: need("feed_forward_length"),
    vocabSize,
    contextLength: need("context_length"),
    eps: metaNumber(f, `${arch}.attention.layer_norm_rms_epsilon`) ?? 1e-5,
    ropeBase: metaNumber(f, `${arch}.rope.freq_base`) ?? 10000,
    ropeDim: metaNumber(f, `${arch}.rope.dimension_count`) ?? headDim,
    ropeHalves: arch !== "llama",
    ropeScaleLinear: scalingType === "linear" ? (metaNumber(f, `${arch}.rope.scaling.factor`) ?? 1) : 1,
    qkvBias: f.tensors.has("blk.0.attn_q.bias"),
    qkNorm: f.tensors.has("blk.0.attn_q_norm.weight"),
    tiedOutput: !f.tensors.has("output.weight"),
    hasRopeFreqs: f.tensors.has("rope_freqs.weight"),
  };
  const bad = (m: string) => { throw new LayerswarmError("BAD_FILE", `${f.path}: ${m}`); };
  if (!(cfg.nLayers > 0)) bad(`block_count ${cfg.nLayers} must be positive`);
  if (!(nHeads > 0) || !(nKVHeads > 0) || nHeads % nKVHeads !== 0) bad(`head_count ${nHeads} must be a positive multiple of head_count_kv ${nKVHeads}`);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) bad(`head size ${headDim} must be an even integer`);
  if (cfg.ropeDim > headDim || cfg.ropeDim % 2 !== 0) bad(`rope.dimension_count ${cfg.ropeDim} must be even and at most the head size ${headDim}`);
  if (emb.dims[0] !== dim) bad(`token_embd.weight has rows of ${emb.dims[0]}, embedding_length is ${dim}`);
  return cfg;
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
