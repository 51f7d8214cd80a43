// llama.cpp's presets, checked against llama.cpp's own quantiser: llama_model_quantize
// from the libllama that node-llama-cpp ships, called by a small C program compiled
// here against the headers of its source bundle. It quantises our F32 synthetic
// models with each preset; every tensor must get the type presets.ts gives it, and
// `synth --type PRESET` must write the same types. Both files, ours and llama.cpp's
// (bytes from ggml's own encoders, not ours), must load and generate llama.cpp's
// greedy tokens, and on llama.cpp's file our next-token distribution must match
// llama.cpp's on the same weights stored as F32.

import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getLlama, Llama } from "node-llama-cpp";
import { readGGUF, readTensorBytes, TensorToWrite, writeGGUF } from "./gguf.js";
import { GGMLType, dequantizeRow, rowBytes, typeName } from "./quant.js";
import { FILE_TYPE, PRESETS, Preset, describeTypes, presetType } from "./presets.js";
import { SynthSpec, synthMetadata, synthesize } from "./synth.js";
import { REPO, tmpDir } from "../testing/shared.js";
import { ourGreedy, ourNext, theirGreedy, theirNext } from "../testing/llamacpp.js";

const dir = tmpDir();
const BUNDLE = path.join(REPO, "node_modules/node-llama-cpp/llama/gitRelease.bundle");
const BINS = path.join(REPO, "node_modules/@node-llama-cpp/linux-x64/bins");
const quantizeTool = path.join(dir, "quantize");
let llama: Llama;

const TOOL = `
#include <stdlib.h>
#include "llama.h"
// quantize IN OUT FTYPE: llama-quantize's defaults (no imatrix, not pure), one thread
int main(int argc, char** argv) {
  llama_backend_init();
  struct llama_model_quantize_params p = llama_model_quantize_default_params();
  p.ftype = (enum llama_ftype)atoi(argv[3]);
  p.nthread = 1;
  int rc = (int)llama_model_quantize(argv[1], argv[2], &p);
  llama_backend_free();
  return rc;
}
`;

beforeAll(async () => {
  const src = path.join(dir, "llama.cpp");
  execFileSync("git", ["clone", "-q", "--no-checkout", "--depth", "1", BUNDLE, src], { stdio: "pipe" });
  execFileSync("git", ["-C", src, "checkout", "-q", "HEAD", "--", "include", "ggml/include"], { stdio: "pipe" });
  const bins = path.join(BINS, fs.readdirSync(BINS).find((d) => fs.existsSync(path.join(BINS, d, "llama-addon.node")))!);
  const lib = (re: RegExp) => `-l:${fs.readdirSync(bins).find((f) => re.test(f))}`;
  fs.writeFileSync(path.join(dir, "quantize.c"), TOOL);
  execFileSync("gcc", ["-O1", `-I${src}/include`, `-I${src}/ggml/include`, path.join(dir, "quantize.c"), "-o", quantizeTool, `-L${bins}`,
    lib(/^libllama\.v.*\.so$/), lib(/^libggml\.v.*\.so$/), "-l:libggml-base.so", `-Wl,-rpath,${bins}`], { stdio: "pipe" });
  llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
}, 60_000);
afterAll(async () => {
  await llama?.dispose();
});

const peaked = { peaked: true, logitScale: 24, residualScale: 0.3 };
const llama16: SynthSpec = { arch: "llama", dim: 256, heads: 8, kvHeads: 2, ffn: 512, layers: 16, vocab: 512, context: 256, type: "F32", tied: false, seed: 22, tokenizer: "llama", ...peaked };
const qwen: SynthSpec = { arch: "qwen2", dim: 896, heads: 14, kvHeads: 2, ffn: 1024, layers: 4, vocab: 512, context: 256, type: "F32", tied: false, seed: 21, tokenizer: "llama", ...peaked };
const SHAPES: [string, SynthSpec][] = [
  // Qwen2.5-0.5B's widths (896: the fallbacks) and GQA 7; 4 layers for its 24
  ["qwen2 896 wide", qwen],
  // and its tied head: token_embd typed as the output (greedy tokens of a random tied head repeat one token)
  ["qwen2 896 wide, tied", { ...qwen, tied: true, peaked: false, seed: 24 }],
  // 16 layers, so that every per-layer rule has layers on both sides; GQA 4
  ["llama 16 layers", llama16],
];

function llamaQuantize(input: string, preset: Preset, out: string): string {
  execFileSync(quantizeTool, [input, out, String(FILE_TYPE[preset])], { stdio: "pipe" });
  return out;
}

const ctxOf = (s: SynthSpec) => ({ nLayers: s.layers, tied: s.tied, gqa: s.heads / s.kvHeads });
const typesOf = (file: string) => new Map([...readGGUF(file).tensors.values()].map((t) => [t.name, t.type] as const));

// a GGUF file's tensors dequantised to F32 (the same weights, without their types)
function asF32(file: string, s: SynthSpec, out: string): string {
  const f = readGGUF(file);
  const tensors: TensorToWrite[] = [...f.tensors.values()].map((t) => ({
    name: t.name, dims: t.dims, type: GGMLType.F32,
    data: () => {
      const n = t.dims[0], rows = t.dims.slice(1).reduce((a, b) => a * b, 1), src = readTensorBytes(f, t.name), y = new Float32Array(n * rows);
      for (let r = 0; r < rows; r++) dequantizeRow(t.type, src, r * rowBytes(t.type, n), n, y, r * n);
      return new Uint8Array(y.buffer);
    },
  }));
  writeGGUF(out, synthMetadata(s), tensors);
  return out;
}

async function nextProbs(file: string, prompt: number[], ours: boolean): Promise<number[]> {
  if (ours) return ourNext(file, prompt);
  const probs = await theirNext(llama, file, prompt);
  return Array.from({ length: 512 }, (_, i) => probs.get(i) ?? 0);
}

const PROMPT = [1, 300, 301, 57, 99, 123, 77, 45];
const cases = SHAPES.flatMap(([label, s]) => PRESETS.map((p) => [label, p, s] as const));

describe("llama.cpp's presets, against llama.cpp's quantiser", () => {
  const f32 = new Map<string, string>();
  const input = (label: string, s: SynthSpec) => f32.get(label) ?? f32.set(label, synthesize(s, `${dir}/${label.replace(/\W+/g, "-")}-F32.gguf`)).get(label)!;

  it.each(cases)("%s %s: every tensor's type as llama.cpp's; both files load and give llama.cpp's greedy tokens", async (label, preset, s) => {
    const name = `${label.replace(/\W+/g, "-")}-${preset}`;
    const theirs = llamaQuantize(input(label, s), preset, `${dir}/${name}-by-llama.cpp.gguf`);
    const ours = synthesize({ ...s, type: preset }, `${dir}/${name}.gguf`);
    const want = typesOf(theirs), ctx = ctxOf(s), dims = readGGUF(theirs).tensors;
    const mismatches = [...want].filter(([t, type]) => (presetType(preset, t, dims.get(t)!.dims, ctx) ?? GGMLType.F32) !== type);
    expect(mismatches.map(([t, type]) => `${t}: llama.cpp ${typeName(type)}`)).toEqual([]);
    expect(typesOf(ours)).toEqual(want);
    console.log(`${label} ${preset}: ${describeTypes([...want.values()].filter((t) => t !== GGMLType.F32))}`);
    for (const file of [ours, theirs]) {
      const tokens = await ourGreedy(file, PROMPT, 12);
      if (s.peaked) expect(new Set(tokens).size, "a varied continuation").toBeGreaterThan(3);
      expect(tokens).toEqual(await theirGreedy(llama, file, PROMPT, 12));
    }
  });

  // ggml's encoders (imatrix-free, as llama-quantize without --imatrix) made these bytes: our
  // reading of them against llama.cpp's on the same weights as F32, on a diffuse model
  const diffuse = { ...llama16, peaked: false, logitScale: 3, residualScale: 0.5, layers: 4, seed: 23 };
  it.each(PRESETS)("%s, encoded by llama.cpp: our next-token distribution as llama.cpp's on the same weights as F32", async (preset) => {
    const theirs = llamaQuantize(input("diffuse", diffuse), preset, `${dir}/diffuse-${preset}-by-llama.cpp.gguf`);
    const ours = await nextProbs(theirs, PROMPT, true);
    const ref = await nextProbs(asF32(theirs, diffuse, `${dir}/diffuse-${preset}-as-f32.gguf`), PROMPT, false);
    const worst = Math.max(...ours.map((p, i) => Math.abs(p - ref[i])));
    console.log(`${preset} by llama.cpp: max |p - p_llama.cpp(F32)| ${worst.toExponential(1)}, top ${Math.max(...ours).toFixed(2)}`);
    expect(Math.max(...ours), "a diffuse distribution").toBeLessThan(0.95);
    expect(worst).toBeLessThan(1e-3);
  });
});
