// llama.cpp's quantisation presets: which weight type each tensor of a file
// gets (llama_tensor_get_type in llama.cpp's src/llama-quant.cpp), so tests
// can build files holding exactly what a hub download holds. Only the rules
// for dense llama-family models are written here.

import { GGMLType, typeName } from "./quant.js";

export type Preset = "Q4_K_M" | "Q5_K_M" | "Q6_K" | "Q8_0";

export interface PresetContext {
  nLayers: number; // the model's block count
  tied: boolean; // no output.weight: token_embd is quantised as the output
}

// i < n/8 or i >= 7n/8, or every third layer in between: the layers llama.cpp gives more bits.
export function useMoreBits(i: number, n: number): boolean {
  return i < Math.floor(n / 8) || i >= Math.floor((7 * n) / 8) || (i - Math.floor(n / 8)) % 3 === 2;
}

const BASE: Record<Preset, GGMLType> = { Q4_K_M: GGMLType.Q4_K, Q5_K_M: GGMLType.Q5_K, Q6_K: GGMLType.Q6_K, Q8_0: GGMLType.Q8_0 };

// A 256-block type on rows that are not a multiple of 256 falls back to a 32-block one.
export function fallback(type: GGMLType, cols: number): GGMLType {
  if (cols % 256 === 0) return type;
  switch (type) {
    case GGMLType.Q4_K: return GGMLType.Q5_0;
    case GGMLType.Q5_K: return GGMLType.Q5_1;
    case GGMLType.Q6_K: return GGMLType.Q8_0;
    default: return type;
  }
}

// The type llama.cpp's preset gives tensor `name` (dims innermost first), or
// undefined when the tensor is not quantised (norms, biases, rope factors).
export function presetType(preset: Preset, name: string, dims: number[], ctx: PresetContext): GGMLType | undefined {
  if (dims.length < 2 || !name.endsWith(".weight")) return undefined;
  const cols = dims[0], base = BASE[preset];
  const layer = Number(/^blk\.(\d+)\./.exec(name)?.[1] ?? -1);
  let t = base;
  if (name === "output.weight" || (ctx.tied && name === "token_embd.weight")) {
    // the output matrix: Q6_K, or Q8_0 where rows do not fit 256-blocks
    return cols % 256 !== 0 ? GGMLType.Q8_0 : base === GGMLType.Q8_0 ? GGMLType.Q8_0 : GGMLType.Q6_K;
  }
  if (name.endsWith("attn_v.weight") && (preset === "Q4_K_M" || preset === "Q5_K_M") && useMoreBits(layer, ctx.nLayers)) t = GGMLType.Q6_K;
  if (name.endsWith("ffn_down.weight") && (preset === "Q4_K_M" || preset === "Q5_K_M") && useMoreBits(layer, ctx.nLayers)) t = GGMLType.Q6_K;
  return fallback(t, cols);
}

export function describeTypes(types: GGMLType[]): string {
  const n = new Map<string, number>();
  for (const t of types) n.set(typeName(t), (n.get(typeName(t)) ?? 0) + 1);
  return [...n].map(([k, v]) => `${k} x${v}`).join(", ");
}
