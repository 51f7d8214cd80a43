// Loading the tensors of one slice of a model: the layers [start, end) and, when
// asked, the embedding (gateway) and the head (gateway). GGUF tensor names appear
// only here and in format/.

import { LayerswarmError } from "../errors.js";
import { GGUFFile, readTensorBytes } from "../format/gguf.js";
import { dequantizeRow, supportedTypeNames, typeInfo, typeName } from "../format/quant.js";
import { Kernels, Matrix } from "../kernels/index.js";
import { LayerRange, ModelConfig, checkRange } from "./config.js";

export interface LayerWeights {
  attn_norm: Float32Array; // (C,)
  attn_q: Matrix; // (nHeads*headDim, C)
  attn_k: Matrix; // (nKV*headDim, C)
  attn_v: Matrix; // (nKV*headDim, C)
  attn_output: Matrix; // (C, nHeads*headDim)
  attn_q_bias?: Float32Array;
  attn_k_bias?: Float32Array;
  attn_v_bias?: Float32Array;
  attn_q_norm?: Float32Array; // (headDim,) qwen3
  attn_k_norm?: Float32Array;
  ffn_norm: Float32Array; // (C,)
  ffn_gate: Matrix; // (F, C)
  ffn_up: Matrix; // (F, C)
  ffn_down: Matrix; // (C, F)
}

function tensorShape(f: GGUFFile, name: string, dims: number[]) {
  const t = f.tensors.get(name);
  if (!t) throw new LayerswarmError("BAD_FILE", `${f.path}: missing tensor "${name}"`);
  if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i]))
    throw new LayerswarmError("BAD_FILE", `${f.path}: tensor "${name}" has shape [${t.dims}], expected [${dims}]`);
  const info = typeInfo(t.type);
  if (!info?.supported)
    throw new LayerswarmError("UNSUPPORTED", `${f.path}: tensor "${name}" has weight type ${typeName(t.type)}, which is not supported (supported: ${supportedTypeNames().join(", ")})`);
  return t;
}

export function loadVector(f: GGUFFile, name: string, n: number): Float32Array {
  const t = tensorShape(f, name, [n]);
  const out = new Float32Array(n);
  dequantizeRow(t.type, readTensorBytes(f, name), 0, n, out);
  return out;
}

export function loadMatrix(f: GGUFFile, name: string, rows: number, cols: number, k: Kernels): Matrix {
  const t = tensorShape(f, name, [cols, rows]);
  return k.prepare({ type: t.type, rows, cols, data: readTensorBytes(f, name) });
}

export function loadLayer(f: GGUFFile, cfg: ModelConfig, i: number, k: Kernels): LayerWeights {
  const C = cfg.dim, qDim = cfg.nHeads * cfg.headDim, kvDim = cfg.nKVHeads * cfg.headDim, F = cfg.ffnDim;
  const p = `blk.${i}.`;
  const w: LayerWeights = {
    attn_norm: loadVector(f, p + "attn_norm.weight", C),
    attn_q: loadMatrix(f, p + "attn_q.weight", qDim, C, k),
    attn_k: loadMatrix(f, p + "attn_k.weight", kvDim, C, k),
    attn_v: loadMatrix(f, p + "attn_v.weight", kvDim, C, k),
    attn_output: loadMatrix(f, p + "attn_output.weight", C, qDim, k),
    ffn_norm: loadVector(f, p + "ffn_norm.weight", C),
    ffn_gate: loadMatrix(f, p + "ffn_gate.weight", F, C, k),
    ffn_up: loadMatrix(f, p + "ffn_up.weight", F, C, k),
    ffn_down: loadMatrix(f, p + "ffn_down.weight", C, F, k),
  };
  if (cfg.qkvBias) {
    w.attn_q_bias = loadVector(f, p + "attn_q.bias", qDim);
    w.attn_k_bias = loadVector(f, p + "attn_k.bias", kvDim);
    w.attn_v_bias = loadVector(f, p + "attn_v.bias", kvDim);
  }
  if (cfg.qkNorm) {
    w.attn_q_norm = loadVector(f, p + "attn_q_norm.weight", cfg.headDim);
    w.attn_k_norm = loadVector(f, p + "attn_k_norm.weight", cfg.headDim);
  }
  return w;
}

// Bytes of the tensors that layer i needs (for placement and memory accounting).
export function layerBytes(f: GGUFFile, i: number): number {
  let n = 0;
  for (const t of f.tensors.values()) if (t.name.startsWith(`blk.${i}.`)) n += t.bytes;
  return n;
}

export function loadLayers(f: GGUFFile, cfg: ModelConfig, r: LayerRange, k: Kernels, onLayer?: (layer: number, bytes: number) => void): LayerWeights[] {
  checkRange(cfg, r);
  const out: LayerWeights[] = [];
  for (let i = r.start; i < r.end; i++) {
    out.push(loadLayer(f, cfg, i, k));
    onLayer?.(i, layerBytes(f, i));
  }
  return out;
}

export interface EmbeddingWeights {
  token_embd: Matrix; // (V, C), rows looked up, never multiplied
}

export interface HeadWeights {
  output_norm: Float32Array; // (C,)
  output: Matrix; // (V, C); token_embd when tied
}

export function loadEmbedding(f: GGUFFile, cfg: ModelConfig): EmbeddingWeights {
  const t = tensorShape(f, "token_embd.weight", [cfg.dim, cfg.vocabSize]);
  return { token_embd: { type: t.type, rows: cfg.vocabSize, cols: cfg.dim, data: readTensorBytes(f, t.name) } };
}

export function loadHead(f: GGUFFile, cfg: ModelConfig, k: Kernels): HeadWeights {
  return {
    output_norm: loadVector(f, "output_norm.weight", cfg.dim),
    output: loadMatrix(f, cfg.tiedOutput ? "token_embd.weight" : "output.weight", cfg.vocabSize, cfg.dim, k),
  };
}

export function loadRopeFreqs(f: GGUFFile, cfg: ModelConfig): Float32Array | undefined {
  return cfg.hasRopeFreqs ? loadVector(f, "rope_freqs.weight", cfg.ropeDim / 2) : undefined;
}
