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
import { maxProbDiff, ourNext, softmax, theirNext, theirRun } from "../testing/llamacpp.js";

// Tolerances, max |p_ours - p_llama.cpp| over the vocabulary:
const PROB_TOLERANCE = 0.005; // peaked models, every greedy step
// diffuse models (top probability 0.6-0.9), next token after a 14-token prompt:
// F32 weights agree to ~1e-4; llama.cpp rounds activations to F16/BF16 for
// 16-bit weights and to 8 bits for quantised weights (ours stay f32 and 16-bit),
// which moves its probabilities by up to ~1e-3 and ~1e-2.
// IQ4_XS: llama.cpp quantises activations to 8 bits per 256 for it, and its qwen2
// result moves 2.9e-2 from its own result on the same weights as F32 (ours: 9e-5).
const DIFFUSE_TOLERANCE: Record<string, number> = { F32: 1e-3, F16: 5e-3, BF16: 5e-3, IQ4_XS: 4e-2 };
const DIFFUSE_TOLERANCE_QUANT = 2e-2;
// quantised weights against llama.cpp on the same weights stored as F32 (where it
// keeps activations in f32 too): only our 16-bit activations differ, ~1e-5, and
// both implementations' f32 rounding; a misread weight moves probabilities by far more.
const EXACT_WEIGHTS_TOLERANCE = 1e-3;
const TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K", "Q4_K_M", "Q5_0", "Q4_1", "Q5_1", "Q5_K", "Q3_K", "Q2_K", "IQ4_NL", "IQ4_XS"];
const FLOAT = ["F32", "F16", "BF16", "F32+rope_freqs"];
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

// Qwen2.5-0.5B's widths (896 = 3.5 x 256, 14 heads, 2 KV heads): rows that K-quants cannot hold
function qwenNarrow(type: string, diffuse = false): SynthSpec {
  return { ...spec("qwen2", type, diffuse), dim: 896, heads: 14, kvHeads: 2, ffn: 1024, layers: 2 };
}

const cases = (["llama", "qwen2", "qwen3"] as const).flatMap((arch) =>
  (arch === "llama" ? [...TYPES, "F32+rope_freqs"] : TYPES).map((type) => [arch, type] as const));

const PROMPT_TEXT = "The little robot walked to the river";

// 32 greedy tokens identical, every step's distribution within PROB_TOLERANCE
async function expectSameGreedy(path: string, label: string) {
  const theirs = await theirRun(llama, path, PROMPT_TEXT, 32, true);
  const { model, stack } = Model.local(path, {});
  expect(model.tokenizer.encode(PROMPT_TEXT)).toEqual(theirs.prompt);
  const ours: number[] = [], logits: Float32Array[] = [];
  const n = theirs.prompt.length;
  for await (const t of generate(model, stack, theirs.prompt, { maxTokens: 32, stopAtEog: false, onLogits: (p, l) => p >= n - 1 && logits.push(Float32Array.from(l)) }))
    ours.push(t.id);
  expect(ours).toEqual(theirs.tokens);
  const worst = Math.max(...theirs.probs.map((pm, i) => maxProbDiff(pm, softmax(logits[i]))));
  console.log(`${label} peaked: max |p - p_llama.cpp| ${worst.toExponential(1)}`);
  expect(worst).toBeLessThan(PROB_TOLERANCE);
}

const EXACT_PROMPT = [1, 300, 301, 57, 99, 123, 77, 45, 200, 201, 202, 17, 18, 19];

// ours on the quantised file against llama.cpp on the same weights stored as F32
async function expectSameAsF32(s: SynthSpec, name: string, label: string) {
  const q = synthesize(s, `${dir}/${name}.gguf`);
  const f32 = synthesize({ ...s, dequantized: true }, `${dir}/${name}-as-f32.gguf`);
  const ours = await ourNext(q, EXACT_PROMPT), top = Math.max(...ours);
  const worst = maxProbDiff(await theirNext(llama, f32, EXACT_PROMPT), ours);
  console.log(`${label} against llama.cpp on the same weights as F32: max |p - p_llama.cpp| ${worst.toExponential(1)} (top probability ${top.toFixed(2)})`);
  expect(top, "a diffuse distribution, where differences show").toBeLessThan(0.95);
  expect(worst).toBeLessThan(EXACT_WEIGHTS_TOLERANCE);
}

describe("cross-check with llama.cpp", () => {
  it.each(cases)("%s %s: 32 greedy tokens identical, probabilities within tolerance", async (arch, type) => {
    await expectSameGreedy(synthesize(spec(arch, type), `${dir}/${arch}-${type.replace("+", "-")}.gguf`), `${arch} ${type}`);
  });
});

describe("cross-check with llama.cpp on diffuse distributions (attention and RoPE matter)", () => {
  it.each(cases)("%s %s: next-token probabilities agree", async (arch, type) => {
    const path = synthesize(spec(arch, type, true), `${dir}/diffuse-${arch}-${type.replace("+", "-")}.gguf`);
    const lm = await llama.loadModel({ modelPath: path });
    const prompt = [1, ...lm.tokenize("The little robot walked to the river and it saw the sea", false)];
    await lm.dispose();
    const worst = maxProbDiff(await theirNext(llama, path, prompt), await ourNext(path, prompt));
    console.log(`${arch} ${type} diffuse: max |p - p_llama.cpp| ${worst.toExponential(1)}`);
    expect(worst).toBeLessThan(DIFFUSE_TOLERANCE[type.replace("+rope_freqs", "")] ?? DIFFUSE_TOLERANCE_QUANT);
  });
});

describe("quantised weights read as llama.cpp reads them: ours against llama.cpp on the same weights as F32", () => {
  it.each(cases.filter(([, type]) => !FLOAT.includes(type)))("%s %s: next-token probabilities agree", async (arch, type) => {
    await expectSameAsF32(spec(arch, type, true), `exact-${arch}-${type}`, `${arch} ${type}`);
  });
});

describe("rows not a multiple of 256 (Qwen2.5-0.5B's width 896), where llama.cpp's presets fall back to 32-element blocks", () => {
  const narrow = ["Q8_0", "Q5_0", "Q4_1", "Q5_1", "IQ4_NL"];
  it.each(narrow)("%s: 32 greedy tokens identical", async (type) => {
    await expectSameGreedy(synthesize(qwenNarrow(type), `${dir}/narrow-${type}.gguf`), `qwen2 dim 896 ${type}`);
  });
  it.each(narrow)("%s: probabilities as llama.cpp's on the same weights as F32", async (type) => {
    await expectSameAsF32(qwenNarrow(type, true), `narrow-diffuse-${type}`, `qwen2 dim 896 ${type}`);
  });
});
