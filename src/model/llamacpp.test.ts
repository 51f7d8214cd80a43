// llama.cpp (through node-llama-cpp) as an independent oracle: it must read our
// synthetic GGUF files the way we do and compute the same next-token
// distributions. The synthetic models are "peaked" (each token has one clear
// successor), so greedy decoding is robust to the two implementations'
// different rounding and the comparison is meaningful for 32 tokens.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getLlama, Llama } from "node-llama-cpp";
import { synthesize, SynthSpec } from "../format/synth.js";
import { Model, generate } from "./model.js";
import { tmpDir } from "../testing/shared.js";

// Tolerances, max |p_ours - p_llama.cpp| over the vocabulary:
const PROB_TOLERANCE = 0.005; // peaked models, every greedy step
// diffuse models (top probability 0.6-0.9), next token after a 14-token prompt:
// F32 weights agree to ~1e-4; llama.cpp rounds activations to F16/BF16 for
// 16-bit weights and to 8 bits for quantised weights (ours stay f32 and 16-bit),
// which moves its probabilities by up to ~1e-3 and ~1e-2.
const DIFFUSE_TOLERANCE: Record<string, number> = { F32: 1e-3, F16: 5e-3, BF16: 5e-3 };
const DIFFUSE_TOLERANCE_QUANT = 2e-2;
// quantised weights against llama.cpp on the same weights stored as F32 (where it
// keeps activations in f32 too): only our 16-bit activations differ, ~1e-5, and
// both implementations' f32 rounding; a misread weight moves probabilities by far more.
const EXACT_WEIGHTS_TOLERANCE = 1e-3;
const TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K", "Q4_K_M", "Q5_0"];
const dir = tmpDir();
let llama: Llama;

beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
});
afterAll(async () => {
  await llama?.dispose();
});

function spec(arch: SynthSpec["arch"], type: string, diffuse = false): SynthSpec {
  const ropeFreqs = type.endsWith("+rope_freqs");
  type = type.replace("+rope_freqs", "");
  return { llama3RopeFreqs: ropeFreqs, ropeBase: ropeFreqs ? 500000 : undefined, arch, dim: 256, layers: 3, heads: 8, kvHeads: 4, ffn: 512, vocab: 512, context: 256, type, tied: false, seed: 7,
    tokenizer: "llama", peaked: !diffuse, logitScale: diffuse ? 3 : 24, residualScale: diffuse ? 0.5 : 0.3, headDim: arch === "qwen3" ? 64 : undefined };
}

const cases = (["llama", "qwen2", "qwen3"] as const).flatMap((arch) =>
  (arch === "llama" ? [...TYPES, "F32+rope_freqs"] : TYPES).map((type) => [arch, type] as const));

describe("cross-check with llama.cpp", () => {
  it.each(cases)("%s %s: 32 greedy tokens identical, probabilities within tolerance", async (arch, type) => {
    const path = synthesize(spec(arch, type), `${dir}/${arch}-${type.replace("+", "-")}.gguf`);
    const text = "The little robot walked to the river";
    const lm = await llama.loadModel({ modelPath: path });
    const ctx = await lm.createContext({ threads: 1, contextSize: 256 });
    const theirs: number[] = [];
    const probs: Map<number, number>[] = [];
    const prompt = [1, ...lm.tokenize(text, false)];
    for await (const o of ctx.getSequence().evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0 })) {
      theirs.push(o.token as number);
      probs.push(o.probabilities as Map<number, number>);
      if (theirs.length >= 32) break;
    }
    await ctx.dispose();
    await lm.dispose();

    const { model, stack } = Model.local(path, {});
    expect(model.tokenizer.encode(text)).toEqual(prompt);
    const ours: number[] = [], logits: Float32Array[] = [];
    for await (const t of generate(model, stack, prompt, { maxTokens: 32, stopAtEog: false, onLogits: (p, l) => p >= prompt.length - 1 && logits.push(Float32Array.from(l)) }))
      ours.push(t.id);
    expect(ours).toEqual(theirs);
    let worst = 0;
    probs.forEach((pm, i) => {
      const l = logits[i], m = Math.max(...l);
      const e = Array.from(l, (x) => Math.exp(x - m)), s = e.reduce((a, b) => a + b, 0);
      for (let tok = 0; tok < l.length; tok++) worst = Math.max(worst, Math.abs((pm.get(tok) ?? 0) - e[tok] / s));
    });
    console.log(`${arch} ${type} peaked: max |p - p_llama.cpp| ${worst.toExponential(1)}`);
    expect(worst).toBeLessThan(PROB_TOLERANCE);
  });
});

describe("cross-check with llama.cpp on diffuse distributions (attention and RoPE matter)", () => {
  it.each(cases)("%s %s: next-token probabilities agree", async (arch, type) => {
    const path = synthesize(spec(arch, type, true), `${dir}/diffuse-${arch}-${type.replace("+", "-")}.gguf`);
    const lm = await llama.loadModel({ modelPath: path });
    const ctx = await lm.createContext({ threads: 1, contextSize: 256 });
    const prompt = [1, ...lm.tokenize("The little robot walked to the river and it saw the sea", false)];
    let probs: Map<number, number> | undefined;
    for await (const o of ctx.getSequence().evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0 })) {
      probs = o.probabilities as Map<number, number>;
      break;
    }
    await ctx.dispose();
    await lm.dispose();
    const { model, stack } = Model.local(path, {});
    const [h] = await stack.forward([{ session: "s", pos: 0, T: prompt.length, hidden: model.embedder.embed(prompt) }]);
    const l = model.head.logits(h.subarray((prompt.length - 1) * model.cfg.dim), 1);
    const m = Math.max(...l), e = Array.from(l, (x) => Math.exp(x - m)), sum = e.reduce((a, b) => a + b, 0);
    let worst = 0;
    for (let i = 0; i < l.length; i++) worst = Math.max(worst, Math.abs((probs!.get(i) ?? 0) - e[i] / sum));
    console.log(`${arch} ${type} diffuse: max |p - p_llama.cpp| ${worst.toExponential(1)}`);
    expect(worst).toBeLessThan(DIFFUSE_TOLERANCE[type.replace("+rope_freqs", "")] ?? DIFFUSE_TOLERANCE_QUANT);
  });
});

describe("quantised weights read as llama.cpp reads them: ours against llama.cpp on the same weights as F32", () => {
  const quantCases = cases.filter(([, type]) => !["F32", "F16", "BF16", "F32+rope_freqs"].includes(type));
  it.each(quantCases)("%s %s: next-token probabilities agree", async (arch, type) => {
    const q = synthesize(spec(arch, type, true), `${dir}/exact-${arch}-${type}.gguf`);
    const f32 = synthesize({ ...spec(arch, type, true), dequantized: true }, `${dir}/exact-${arch}-${type}-as-f32.gguf`);
    const prompt = [1, 300, 301, 57, 99, 123, 77, 45, 200, 201, 202, 17, 18, 19];
    const lm = await llama.loadModel({ modelPath: f32 });
    const ctx = await lm.createContext({ threads: 1, contextSize: 256 });
    let probs: Map<number, number> | undefined;
    for await (const o of ctx.getSequence().evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0 })) {
      probs = o.probabilities as Map<number, number>;
      break;
    }
    await ctx.dispose();
    await lm.dispose();
    const { model, stack } = Model.local(q, {});
    const [h] = await stack.forward([{ session: "s", pos: 0, T: prompt.length, hidden: model.embedder.embed(prompt) }]);
    const l = model.head.logits(h.subarray((prompt.length - 1) * model.cfg.dim), 1);
    const m = Math.max(...l), e = Array.from(l, (x) => Math.exp(x - m)), sum = e.reduce((a, b) => a + b, 0);
    let worst = 0;
    for (let i = 0; i < l.length; i++) worst = Math.max(worst, Math.abs((probs!.get(i) ?? 0) - e[i] / sum));
    console.log(`${arch} ${type} against llama.cpp on the same weights as F32: max |p - p_llama.cpp| ${worst.toExponential(1)}`);
    expect(worst).toBeLessThan(EXACT_WEIGHTS_TOLERANCE);
  });
});
