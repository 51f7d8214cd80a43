// llama.cpp's quantisation presets: which weight type each tensor of a file
// gets (llama_tensor_get_type in llama.cpp's src/llama-quant.cpp), so tests
// can build files holding exactly what a hub download holds. Only the rules
// for dense llama-family models without an importance matrix are written here
// (no experts, not Falcon, not 70B); presets.test.ts checks them tensor by
// tensor against llama.cpp's own quantiser.

import { GGMLType, typeInfo, typeName } from "./quant.js";

export const PRESETS = ["Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_XS"] as const;
export type Preset = (typeof PRESETS)[number];

export function isPreset(name: string): name is Preset {
  return (PRESETS as readonly string[]).includes(name);
}

export interface PresetContext {
  nLayers: number; // the model's block count
  tied: boolean; // no output.weight: token_embd is quantised as the output
  gqa?: number; // attention heads per KV head (default 1)
}

// i < n/8 or i >= 7n/8, or every third layer in between: the layers llama.cpp gives more bits.
export function useMoreBits(i: number, n: number): boolean {
  return i < Math.floor(n / 8) || i >= Math.floor((7 * n) / 8) || (i - Math.floor(n / 8)) % 3 === 2;
}

// each preset's type for the tensors no rule singles out, and its llama_ftype (general.file_type)
const BASE: Record<Preset, GGMLType> = {
  Q2_K: GGMLType.Q2_K, Q3_K_M: GGMLType.Q3_K, Q4_K_S: GGMLType.Q4_K, Q4_K_M: GGMLType.Q4_K,
  Q5_K_M: GGMLType.Q5_K, Q6_K: GGMLType.Q6_K, Q8_0: GGMLType.Q8_0, IQ4_XS: GGMLType.IQ4_XS,
};
export const FILE_TYPE: Record<Preset, number> = { Q2_K: 10, Q3_K_M: 12, Q4_K_S: 14, Q4_K_M: 15, Q5_K_M: 17, Q6_K: 18, Q8_0: 7, IQ4_XS: 30 };

const blockOf = (t: GGMLType) => typeInfo(t)!.blockSize;

// A type whose block does not divide the rows falls back to a 32-element one (F16 if even that does not fit).
const FALLBACK: Partial<Record<GGMLType, GGMLType>> = {
  [GGMLType.Q2_K]: GGMLType.Q4_0, [GGMLType.Q3_K]: GGMLType.Q4_0, [GGMLType.Q4_K]: GGMLType.Q5_0,
  [GGMLType.Q5_K]: GGMLType.Q5_1, [GGMLType.Q6_K]: GGMLType.Q8_0, [GGMLType.IQ4_XS]: GGMLType.IQ4_NL,
};
export function fallback(type: GGMLType, cols: number): GGMLType {
  if (cols % blockOf(type) === 0) return type;
  const next = FALLBACK[type] ?? type;
  return cols % blockOf(next) === 0 ? next : GGMLType.F16;
}

// The type llama.cpp's preset gives tensor `name` (dims innermost first), or
// undefined when the tensor is not quantised (norms, biases, rope factors).
export function presetType(preset: Preset, name: string, dims: number[], ctx: PresetContext): GGMLType | undefined {
  if (dims.length < 2 || !name.endsWith(".weight")) return undefined;
  return fallback(chosenType(preset, name, dims[0], ctx), dims[0]);
}

function chosenType(preset: Preset, name: string, cols: number, ctx: PresetContext): GGMLType {
  const base = BASE[preset], n = ctx.nLayers, gqa = ctx.gqa ?? 1;
  const layer = Number(/^blk\.(\d+)\./.exec(name)?.[1] ?? -1);
  if (name === "output.weight" || (ctx.tied && name === "token_embd.weight")) {
    // the output matrix: Q6_K, or Q8_0 where rows do not fit the preset's blocks
    return cols % blockOf(base) !== 0 || base === GGMLType.Q8_0 ? GGMLType.Q8_0 : GGMLType.Q6_K;
  }
  if (name.endsWith("attn_v.weight")) {
    if (preset === "Q2_K") return gqa >= 4 ? GGMLType.Q4_K : GGMLType.Q3_K;
    if (preset === "Q3_K_M") return layer < 2 ? GGMLType.Q5_K : GGMLType.Q4_K;
    if (preset === "IQ4_XS" && gqa >= 4) return GGMLType.Q5_K;
    if ((preset === "Q4_K_M" || preset === "Q5_K_M") && useMoreBits(layer, n)) return GGMLType.Q6_K;
    if (preset === "Q4_K_S" && layer < 4) return GGMLType.Q5_K;
    return base;
  }
  if (name.endsWith("ffn_down.weight")) {
    if (preset === "Q2_K") return GGMLType.Q3_K;
    if (preset === "Q3_K_M") return layer < Math.floor(n / 16) ? GGMLType.Q5_K : GGMLType.Q4_K;
    if (preset === "Q4_K_M") return useMoreBits(layer, n) ? GGMLType.Q6_K : base;
    if (preset === "IQ4_XS" && layer < Math.floor(n / 8)) return GGMLType.Q5_K;
    if (preset === "Q5_K_M" && useMoreBits(layer, n)) return GGMLType.Q6_K;
    if (preset === "Q4_K_S" && layer < Math.floor(n / 8)) return GGMLType.Q5_K;
    return base;
  }
  if (name.endsWith("attn_output.weight")) {
    if (preset === "Q2_K") return GGMLType.Q3_K;
    if (preset === "Q3_K_M") return GGMLType.Q4_K;
  }
  return base; // token_embd (untied), attn_q, attn_k, ffn_gate, ffn_up
}

export function describeTypes(types: GGMLType[]): string {
  const n = new Map<string, number>();
  for (const t of types) n.set(typeName(t), (n.get(typeName(t)) ?? 0) + 1);
  return [...n].map(([k, v]) => `${k} x${v}`).join(", ");
}
