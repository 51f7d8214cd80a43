// Deterministic random-weight GGUF models of any shape, architecture and weight
// type, for tests (tiny shapes) and benchmarks (real shapes). The same spec gives
// the same file, byte for byte; files are cached outside git.

import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { LayerswarmError } from "../errors.js";
import { GGUFValueType, TensorToWrite, TypedMeta, meta, writeGGUF } from "./gguf.js";
import { GGMLType, dequantizeRow, quantizeRow, rowBytes, typeFromName, typeInfo, typeName } from "./quant.js";
import { trainSpmVocab, trainBpeVocab } from "./synthvocab.js";
import { FILE_TYPE, Preset, isPreset, presetType } from "./presets.js";

export interface SynthSpec {
  arch: "llama" | "qwen2" | "qwen3";
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  vocab: number;
  context: number;
  type: string; // weight type of the matrices (any type format/quant.ts can quantise to), or a llama.cpp preset (presets.ts: Q4_K_M, ...)
  tied: boolean; // output shares token_embd
  seed: number;
  headDim?: number; // qwen3 may differ from dim / heads
  ropeBase?: number;
  tokenizer?: "llama" | "gpt2";
  logitScale?: number; // output weights scale: larger = more peaked next-token distributions (default 4)
  peaked?: boolean; // output row k is a multiple of the embedding of token (5k+1) mod V: each token has one clear successor
  residualScale?: number; // scale of attn_output/ffn_down: small = calmer, less chaotic models (default 0.5)
  llama3RopeFreqs?: boolean; // add a rope_freqs.weight tensor (llama 3.1 style)
  dequantized?: boolean; // store every tensor as F32, holding exactly the values its type gives (the same weights, without the type)
}

export const SHAPES: Record<string, Omit<SynthSpec, "type" | "seed">> = {
  // Llama-3.2-1B shape with a 32000 vocabulary, as in the project brief
  "llama-1b": { arch: "llama", dim: 2048, layers: 16, heads: 32, kvHeads: 8, ffn: 8192, vocab: 32000, context: 2048, tied: false },
  tiny: { arch: "llama", dim: 256, layers: 4, heads: 8, kvHeads: 4, ffn: 512, vocab: 512, context: 512, tied: false },
};

// mulberry32: a tiny deterministic PRNG, uniform in [0, 1)
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seedFor(seed: number, name: string): number {
  return crypto.createHash("sha256").update(`${seed}:${name}`).digest().readUInt32LE(0);
}

// Uniform values in [-a, a] (std a/sqrt(3)) or a constant-ish norm weight, quantised row by row.
function randomTensor(name: string, dims: number[], type: number, seed: number, amp: number, center = 0): TensorToWrite {
  return {
    name, dims, type,
    data: () => {
      const rows = dims.slice(1).reduce((a, b) => a * b, 1), n = dims[0];
      const rb = rowBytes(type, n);
      const out = new Uint8Array(rb * rows);
      const r = rng(seedFor(seed, name));
      const row = new Float32Array(n);
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < n; j++) row[j] = center + (2 * r() - 1) * amp;
        quantizeRow(type, row, 0, n, out, i * rb);
      }
      return out;
    },
  };
}

// output.weight row k = embedding row sigma(k) (+ a little noise), so after token
// c the logit of sigma^-1(c) stands out by many standard deviations: greedy
// decoding is robust to the rounding differences between implementations.
function peakedOutput(s: SynthSpec, type: number): TensorToWrite {
  const C = s.dim, V = s.vocab;
  const emb = randomTensor("token_embd.weight", [C, V], GGMLType.F32, s.seed, 1);
  const noise = randomTensor("output.weight", [C, V], GGMLType.F32, s.seed, 1);
  return {
    name: "output.weight", dims: [C, V], type,
    data: () => {
      const e = new Float32Array(emb.data().buffer), n = new Float32Array(noise.data().buffer);
      const rb = rowBytes(type, C), out = new Uint8Array(rb * V), row = new Float32Array(C);
      const scale = (s.logitScale ?? 4) / C;
      for (let k = 0; k < V; k++) {
        const src = ((k * 5 + 1) % V) * C;
        for (let j = 0; j < C; j++) row[j] = scale * (e[src + j] + 0.5 * n[k * C + j]);
        quantizeRow(type, row, 0, C, out, k * rb);
      }
      return out;
    },
  };
}

// The same tensor stored as F32: its values exactly as its type gives them.
function asF32(t: TensorToWrite): TensorToWrite {
  if (t.type === GGMLType.F32) return t;
  return {
    name: t.name, dims: t.dims, type: GGMLType.F32,
    data: () => {
      const src = t.data(), n = t.dims[0], rows = t.dims.slice(1).reduce((a, b) => a * b, 1), rb = rowBytes(t.type, n);
      const out = new Float32Array(n * rows);
      for (let r = 0; r < rows; r++) dequantizeRow(t.type, src, r * rb, n, out, r * n);
      return new Uint8Array(out.buffer);
    },
  };
}

// The weight type of each matrix: a llama.cpp preset's per-tensor choice
// (format/presets.ts), or one type for all (the embedding in F32 where its rows
// do not fit the type's blocks).
function matrixTypes(s: SynthSpec): (name: string, dims: number[]) => GGMLType {
  const up = s.type.toUpperCase();
  if (isPreset(up)) {
    const ctx = { nLayers: s.layers, tied: s.tied, gqa: s.heads / s.kvHeads };
    return (name, dims) => presetType(up, name, dims, ctx)!;
  }
  const t = typeFromName(s.type);
  return (name, dims) => (name === "token_embd.weight" && dims[0] % typeInfo(t)!.blockSize !== 0 ? GGMLType.F32 : t);
}

export function synthTensors(s: SynthSpec): TensorToWrite[] {
  const t = typedTensors(s);
  return s.dequantized ? t.map(asF32) : t;
}

function typedTensors(s: SynthSpec): TensorToWrite[] {
  const C = s.dim, hd = s.headDim ?? C / s.heads, qDim = s.heads * hd, kvDim = s.kvHeads * hd, F = s.ffn, V = s.vocab;
  const type = matrixTypes(s);
  const gain = (cols: number) => Math.sqrt(3 / cols); // unit-variance outputs for unit-variance inputs
  const t: TensorToWrite[] = [];
  t.push(randomTensor("token_embd.weight", [C, V], type("token_embd.weight", [C, V]), s.seed, 1));
  t.push(randomTensor("output_norm.weight", [C], GGMLType.F32, s.seed, 0.1, 1));
  const out = type("output.weight", [C, V]);
  if (!s.tied) t.push(s.peaked ? peakedOutput(s, out) : randomTensor("output.weight", [C, V], out, s.seed, gain(C) * (s.logitScale ?? 4)));
  if (s.llama3RopeFreqs) t.push(randomTensor("rope_freqs.weight", [hd / 2], GGMLType.F32, s.seed, 0.5, 1.5));
  for (let l = 0; l < s.layers; l++) {
    const p = `blk.${l}.`;
    t.push(randomTensor(p + "attn_norm.weight", [C], GGMLType.F32, s.seed, 0.1, 1));
    t.push(randomTensor(p + "attn_q.weight", [C, qDim], type(p + "attn_q.weight", [C, qDim]), s.seed, gain(C)));
    t.push(randomTensor(p + "attn_k.weight", [C, kvDim], type(p + "attn_k.weight", [C, kvDim]), s.seed, gain(C)));
    t.push(randomTensor(p + "attn_v.weight", [C, kvDim], type(p + "attn_v.weight", [C, kvDim]), s.seed, gain(C)));
    if (s.arch === "qwen2") {
      t.push(randomTensor(p + "attn_q.bias", [qDim], GGMLType.F32, s.seed, 0.1));
      t.push(randomTensor(p + "attn_k.bias", [kvDim], GGMLType.F32, s.seed, 0.1));
      t.push(randomTensor(p + "attn_v.bias", [kvDim], GGMLType.F32, s.seed, 0.1));
    }
    if (s.arch === "qwen3") {
      t.push(randomTensor(p + "attn_q_norm.weight", [hd], GGMLType.F32, s.seed, 0.1, 1));
      t.push(randomTensor(p + "attn_k_norm.weight", [hd], GGMLType.F32, s.seed, 0.1, 1));
    }
    t.push(randomTensor(p + "attn_output.weight", [qDim, C], type(p + "attn_output.weight", [qDim, C]), s.seed, gain(qDim) * (s.residualScale ?? 0.5)));
    t.push(randomTensor(p + "ffn_norm.weight", [C], GGMLType.F32, s.seed, 0.1, 1));
    t.push(randomTensor(p + "ffn_gate.weight", [C, F], type(p + "ffn_gate.weight", [C, F]), s.seed, gain(C)));
    t.push(randomTensor(p + "ffn_up.weight", [C, F], type(p + "ffn_up.weight", [C, F]), s.seed, gain(C)));
    t.push(randomTensor(p + "ffn_down.weight", [F, C], type(p + "ffn_down.weight", [F, C]), s.seed, gain(F) * (s.residualScale ?? 0.5)));
  }
  return t;
}

export function synthMetadata(s: SynthSpec): Record<string, TypedMeta> {
  const a = s.arch, hd = s.headDim ?? s.dim / s.heads;
  const m: Record<string, TypedMeta> = {
    "general.architecture": meta.str(a),
    "general.name": meta.str(`synthetic-${a}-${s.dim}x${s.layers}-${s.type}`),
    "general.file_type": meta.u32(isPreset(s.type.toUpperCase()) ? FILE_TYPE[s.type.toUpperCase() as Preset] : 1),
    [`${a}.context_length`]: meta.u32(s.context),
    [`${a}.embedding_length`]: meta.u32(s.dim),
    [`${a}.block_count`]: meta.u32(s.layers),
    [`${a}.feed_forward_length`]: meta.u32(s.ffn),
    [`${a}.attention.head_count`]: meta.u32(s.heads),
    [`${a}.attention.head_count_kv`]: meta.u32(s.kvHeads),
    [`${a}.attention.layer_norm_rms_epsilon`]: meta.f32(1e-6),
    [`${a}.rope.freq_base`]: meta.f32(s.ropeBase ?? (a === "llama" ? 10000 : 1000000)),
    [`${a}.rope.dimension_count`]: meta.u32(hd),
  };
  if (s.headDim) {
    m[`${a}.attention.key_length`] = meta.u32(hd);
    m[`${a}.attention.value_length`] = meta.u32(hd);
  }
  const kind = s.tokenizer ?? (a === "llama" ? "llama" : "gpt2");
  if (kind === "llama") {
    const v = trainSpmVocab(s.vocab);
    m["tokenizer.ggml.model"] = meta.str("llama");
    m["tokenizer.ggml.tokens"] = meta.arr(GGUFValueType.STRING, v.tokens);
    m["tokenizer.ggml.scores"] = meta.arr(GGUFValueType.FLOAT32, v.scores);
    m["tokenizer.ggml.token_type"] = meta.arr(GGUFValueType.INT32, v.types);
    m["tokenizer.ggml.bos_token_id"] = meta.u32(1);
    m["tokenizer.ggml.eos_token_id"] = meta.u32(2);
    m["tokenizer.ggml.unknown_token_id"] = meta.u32(0);
    m["tokenizer.ggml.add_bos_token"] = meta.bool(true);
  } else {
    const v = trainBpeVocab(s.vocab);
    m["tokenizer.ggml.model"] = meta.str("gpt2");
    m["tokenizer.ggml.pre"] = meta.str(a === "llama" ? "llama-bpe" : "qwen2");
    m["tokenizer.ggml.tokens"] = meta.arr(GGUFValueType.STRING, v.tokens);
    m["tokenizer.ggml.token_type"] = meta.arr(GGUFValueType.INT32, v.types);
    m["tokenizer.ggml.merges"] = meta.arr(GGUFValueType.STRING, v.merges);
    m["tokenizer.ggml.bos_token_id"] = meta.u32(v.bos);
    m["tokenizer.ggml.eos_token_id"] = meta.u32(v.eos);
    m["tokenizer.ggml.add_bos_token"] = meta.bool(a === "llama");
    m["tokenizer.chat_template"] = meta.str(CHATML);
  }
  return m;
}

export const CHATML =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export function cacheDir(): string {
  return process.env.LAYERSWARM_CACHE ?? path.join(os.homedir(), ".cache", "layerswarm");
}

export function synthPath(s: SynthSpec): string {
  // v2: presets follow llama.cpp's per-tensor rules (a v1 "Q4_K_M" gave every attn_v and ffn_down Q6_K)
  const key = crypto.createHash("sha256").update(JSON.stringify({ v: isPreset(s.type.toUpperCase()) ? 2 : 1, ...s })).digest("hex").slice(0, 12);
  return path.join(cacheDir(), "synth", `${s.arch}-${s.dim}x${s.layers}-${s.type}-${key}.gguf`);
}

// Write the model if it is not cached yet; return its path.
export function synthesize(s: SynthSpec, out?: string): string {
  const C = s.dim, hd = s.headDim ?? C / s.heads;
  if (!Number.isInteger(hd) || s.heads % s.kvHeads !== 0)
    throw new LayerswarmError("BAD_ARGUMENT", `synthetic model: heads ${s.heads} must divide dim ${C} and be a multiple of kv heads ${s.kvHeads}`);
  const p = out ?? synthPath(s);
  if (!out && fs.existsSync(p)) return p;
  fs.mkdirSync(path.dirname(p), { recursive: true });
  writeGGUF(p, synthMetadata(s), synthTensors(s));
  return p;
}

export function describeSpec(s: SynthSpec): string {
  const type = isPreset(s.type.toUpperCase()) ? `${s.type.toUpperCase()} (llama.cpp's preset)` : typeName(typeFromName(s.type));
  return `${s.arch} dim ${s.dim}, ${s.layers} layers, ${s.heads}/${s.kvHeads} heads, ffn ${s.ffn}, vocab ${s.vocab}, ${type}`;
}
