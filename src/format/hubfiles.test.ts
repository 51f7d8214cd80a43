// Files shaped like the Q4_K_M downloads of Qwen2.5-0.5B-Instruct and
// Llama-3.2-1B-Instruct: their widths, head counts and feed-forward sizes, the
// tensor names, and the weight type llama.cpp's Q4_K_M preset gives each
// tensor (src/format/presets.ts, including the fallbacks for Qwen's 896-wide
// rows: Q5_0 and Q8_0). Two layers stand for the real 24 and 16 (the types of
// a layer that gets more bits and of one that does not) and the vocabulary is
// 512 synthetic tokens, so the test stays small; random weights, generated
// here, never committed. Ours must load them and give llama.cpp's greedy tokens.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getLlama, Llama } from "node-llama-cpp";
import { TensorToWrite, writeGGUF } from "./gguf.js";
import { GGMLType, quantizeRow, rowBytes, typeName } from "./quant.js";
import { PresetContext, describeTypes, presetType } from "./presets.js";
import { SynthSpec, synthMetadata, synthTensors } from "./synth.js";
import { Model, generate } from "../model/model.js";
import { tmpDir } from "../testing/shared.js";
import { softmax, theirGreedy, theirNext } from "../testing/llamacpp.js";

const dir = tmpDir();
let llama: Llama;
beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
});
afterAll(async () => {
  await llama?.dispose();
});

interface Hub {
  label: string;
  spec: SynthSpec;
  realLayers: number[]; // the real layer each file layer takes its types from
  ctx: PresetContext;
  want: string[]; // weight types the file must hold
}

const base = { context: 256, seed: 11, vocab: 512, peaked: true, logitScale: 24, residualScale: 0.3 };
const HUB: Hub[] = [
  {
    label: "Qwen2.5-0.5B-Instruct Q4_K_M",
    spec: { ...base, arch: "qwen2", dim: 896, heads: 14, kvHeads: 2, ffn: 4864, layers: 2, type: "F32", tied: false, tokenizer: "gpt2", ropeBase: 1000000 },
    realLayers: [0, 3], ctx: { nLayers: 24, tied: true },
    want: ["Q5_0", "Q8_0", "Q6_K", "Q4_K"],
  },
  {
    label: "Llama-3.2-1B-Instruct Q4_K_M",
    spec: { ...base, arch: "llama", dim: 2048, heads: 32, kvHeads: 8, ffn: 8192, layers: 2, type: "F32", tied: false, tokenizer: "gpt2", ropeBase: 500000, llama3RopeFreqs: true },
    realLayers: [0, 2], ctx: { nLayers: 16, tied: true },
    want: ["Q4_K", "Q6_K"],
  },
];

// The F32 tensors re-quantised to the preset's type for each.
function presetFile(h: Hub, path: string): GGMLType[] {
  const types: GGMLType[] = [];
  const tensors: TensorToWrite[] = synthTensors(h.spec).map((t) => {
    const real = t.name.replace(/^blk\.(\d+)\./, (_, l) => `blk.${h.realLayers[Number(l)]}.`);
    // untied here (a peaked output matrix makes greedy tokens a fair test), typed as the tied file's would be
    const type = t.name === "output.weight" ? presetType("Q4_K_M", "token_embd.weight", t.dims, h.ctx) : t.name === "token_embd.weight"
      ? presetType("Q4_K_M", "attn_q.weight", t.dims, h.ctx) : presetType("Q4_K_M", real, t.dims, h.ctx);
    if (type === undefined) return t;
    types.push(type);
    return {
      name: t.name, dims: t.dims, type,
      data: () => {
        const f = new Float32Array(t.data().slice().buffer), n = t.dims[0], rows = f.length / n, rb = rowBytes(type, n);
        const out = new Uint8Array(rows * rb);
        for (let r = 0; r < rows; r++) quantizeRow(type, f, r * n, n, out, r * rb);
        return out;
      },
    };
  });
  writeGGUF(path, synthMetadata(h.spec), tensors);
  return types;
}

describe("files shaped like hub downloads (llama.cpp's Q4_K_M preset, per-tensor types and fallbacks)", () => {
  it.each(HUB.map((h) => [h.label, h] as const))("%s loads and generates llama.cpp's greedy tokens", async (_l, h) => {
    const path = `${dir}/${h.label.replace(/\W+/g, "-")}.gguf`;
    const types = presetFile(h, path);
    console.log(`${h.label}: ${describeTypes(types)}`);
    expect([...new Set(types.map(typeName))].sort()).toEqual([...h.want].sort());
    const prompt = [3, 17, 99, 250, 41, 7];
    const { model, stack } = Model.local(path, {});
    const ours: number[] = [];
    for await (const t of generate(model, stack, prompt, { maxTokens: 16, stopAtEog: false })) ours.push(t.id);
    expect(ours).toEqual(await theirGreedy(llama, path, prompt, 16));
  });

  // greedy tokens of a peaked model say little about the layers: the next-token
  // distribution of a diffuse one (where every weight matters) against llama.cpp's
  it.each(HUB.map((h) => [h.label, h] as const))("%s, diffuse: the next-token distribution within 2e-2 of llama.cpp's", async (_l, h) => {
    const d: Hub = { ...h, spec: { ...h.spec, peaked: false, logitScale: 3, residualScale: 0.5, seed: 12 } };
    const path = `${dir}/${h.label.replace(/\W+/g, "-")}-diffuse.gguf`;
    presetFile(d, path);
    const prompt = [3, 17, 99, 250, 41, 7, 300, 301, 57, 99, 123, 77];
    const { model, stack } = Model.local(path, {});
    const [hid] = await stack.forward([{ session: "s", pos: 0, T: prompt.length, hidden: model.embedder.embed(prompt) }]);
    const ours = softmax(model.head.logits(hid.subarray((prompt.length - 1) * model.cfg.dim), 1));
    const theirs = await theirNext(llama, path, prompt);
    let worst = 0;
    for (let t = 0; t < ours.length; t++) worst = Math.max(worst, Math.abs((theirs.get(t) ?? 0) - ours[t]));
    console.log(`${h.label} diffuse: max |p - p_llama.cpp| ${worst.toExponential(1)}, top ${Math.max(...ours).toFixed(2)}`);
    expect(Math.max(...ours), "a diffuse distribution").toBeLessThan(0.95);
    expect(worst).toBeLessThan(2e-2);
  });
});
