// Import of llama2.c checkpoints ("version 0": a 7-int32 header, then f32
// weights) and their tokenizer.bin into GGUF, laid out as llama.cpp's
// convert-llama2c-to-ggml does: llama2.c already rotates adjacent pairs, so no
// q/k permutation is needed.

import * as fs from "node:fs";
import { LayerswarmError } from "../errors.js";
import { GGUFValueType, TensorToWrite, TypedMeta, meta, writeGGUF } from "./gguf.js";
import { GGMLType } from "./quant.js";

export interface Llama2cConfig {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKVHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
}

export function readLlama2cTokenizer(path: string, vocabSize: number): { tokens: string[]; scores: number[]; maxLen: number } {
  const b = fs.readFileSync(path);
  let o = 0;
  const need = (n: number, what: string) => {
    if (o + n > b.length) throw new LayerswarmError("BAD_FILE", `${path}: truncated tokenizer: ${what} at offset ${o}`);
  };
  need(4, "max_token_length");
  const maxLen = b.readInt32LE(0);
  o = 4;
  const tokens: string[] = [], scores: number[] = [];
  for (let i = 0; i < vocabSize; i++) {
    need(8, `token ${i}`);
    scores.push(b.readFloatLE(o));
    const len = b.readInt32LE(o + 4);
    o += 8;
    if (len < 0 || len > 1 << 16) throw new LayerswarmError("BAD_FILE", `${path}: token ${i} has length ${len}`);
    need(len, `token ${i} bytes`);
    tokens.push(b.toString("utf8", o, o + len));
    o += len;
  }
  return { tokens, scores, maxLen };
}

export function convertLlama2c(modelPath: string, tokenizerPath: string, outPath: string, name?: string): Llama2cConfig {
  const buf = fs.readFileSync(modelPath);
  if (buf.length < 28) throw new LayerswarmError("BAD_FILE", `${modelPath}: too short for a llama2.c header`);
  const h = Array.from({ length: 7 }, (_, i) => buf.readInt32LE(4 * i));
  const cfg: Llama2cConfig = {
    dim: h[0], hiddenDim: h[1], nLayers: h[2], nHeads: h[3], nKVHeads: h[4],
    vocabSize: Math.abs(h[5]), seqLen: h[6], sharedClassifier: h[5] > 0,
  };
  if (h.slice(0, 5).some((v) => v <= 0) || cfg.vocabSize === 0 || cfg.seqLen <= 0 || cfg.dim % cfg.nHeads !== 0)
    throw new LayerswarmError("BAD_FILE", `${modelPath}: implausible llama2.c header [${h.join(", ")}]`);
  const { dim: C, hiddenDim: F, nLayers: L, vocabSize: V } = cfg;
  const headSize = C / cfg.nHeads, kvDim = cfg.nKVHeads * headSize;
  // offsets in floats, in file order
  let off = 7;
  const take = (n: number) => {
    const start = off;
    off += n;
    return start;
  };
  const emb = take(V * C), rmsAtt = take(L * C), wq = take(L * C * C), wk = take(L * kvDim * C), wv = take(L * kvDim * C);
  const wo = take(L * C * C), rmsFfn = take(L * C), w1 = take(L * F * C), w2 = take(L * C * F), w3 = take(L * F * C);
  const rmsFinal = take(C);
  take(cfg.seqLen * headSize); // legacy freq_cis_real + freq_cis_imag
  const wcls = cfg.sharedClassifier ? emb : take(V * C);
  if (off * 4 > buf.length)
    throw new LayerswarmError("BAD_FILE", `${modelPath}: truncated: the header [${h.join(", ")}] needs ${off * 4} bytes, the file has ${buf.length}`);
  const f32 = (start: number, n: number) => () => new Uint8Array(buf.buffer, buf.byteOffset + start * 4, n * 4);
  const t = (name: string, dims: number[], start: number): TensorToWrite => ({ name, dims, type: GGMLType.F32, data: f32(start, dims.reduce((a, b) => a * b, 1)) });
  const tensors: TensorToWrite[] = [t("token_embd.weight", [C, V], emb), t("output_norm.weight", [C], rmsFinal), t("output.weight", [C, V], wcls)];
  for (let l = 0; l < L; l++) {
    const p = `blk.${l}.`;
    tensors.push(
      t(p + "attn_q.weight", [C, C], wq + l * C * C),
      t(p + "attn_k.weight", [C, kvDim], wk + l * kvDim * C),
      t(p + "attn_v.weight", [C, kvDim], wv + l * kvDim * C),
      t(p + "attn_output.weight", [C, C], wo + l * C * C),
      t(p + "attn_norm.weight", [C], rmsAtt + l * C),
      t(p + "ffn_gate.weight", [C, F], w1 + l * F * C),
      t(p + "ffn_down.weight", [F, C], w2 + l * C * F),
      t(p + "ffn_up.weight", [C, F], w3 + l * F * C),
      t(p + "ffn_norm.weight", [C], rmsFfn + l * C),
    );
  }
  const tok = readLlama2cTokenizer(tokenizerPath, V);
  const types = tok.tokens.map((s, i) => (i === 0 ? 2 : i < 3 ? 3 : /^<0x[0-9A-F]{2}>$/.test(s) ? 6 : 1));
  const tokens = tok.tokens.map((s, i) => (i === 0 ? "<unk>" : i === 1 ? "<s>" : i === 2 ? "</s>" : s.replace(/ /g, "\u2581")));
  const md: Record<string, TypedMeta> = {
    "general.architecture": meta.str("llama"),
    "general.name": meta.str(name ?? modelPath.split("/").pop()!.replace(/\.bin$/, "")),
    "llama.context_length": meta.u32(cfg.seqLen),
    "llama.embedding_length": meta.u32(C),
    "llama.block_count": meta.u32(L),
    "llama.feed_forward_length": meta.u32(F),
    "llama.attention.head_count": meta.u32(cfg.nHeads),
    "llama.attention.head_count_kv": meta.u32(cfg.nKVHeads),
    "llama.rope.dimension_count": meta.u32(headSize),
    "llama.attention.layer_norm_rms_epsilon": meta.f32(1e-5),
    "tokenizer.ggml.model": meta.str("llama"),
    "tokenizer.ggml.tokens": meta.arr(GGUFValueType.STRING, tokens),
    "tokenizer.ggml.scores": meta.arr(GGUFValueType.FLOAT32, tok.scores),
    "tokenizer.ggml.token_type": meta.arr(GGUFValueType.INT32, types),
    "tokenizer.ggml.unknown_token_id": meta.u32(0),
    "tokenizer.ggml.bos_token_id": meta.u32(1),
    "tokenizer.ggml.eos_token_id": meta.u32(2),
  };
  writeGGUF(outPath, md, tensors);
  return cfg;
}
