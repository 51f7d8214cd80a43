import { describe, expect, it } from "vitest";
import { readGGUF, tensorBytesRead } from "../format/gguf.js";
import { synthesize } from "../format/synth.js";
import { createKernels } from "../kernels/index.js";
import { configFromGGUF } from "./config.js";
import { loadSlice } from "./model.js";
import { layerBytes } from "./weights.js";
import { Sampler } from "./sampler.js";
import { tmpDir } from "../testing/shared.js";

describe("a slice holds only its layers", () => {
  it("reads exactly the bytes of layers [2, 4) and nothing else", () => {
    const p = synthesize({ arch: "llama", dim: 128, layers: 6, heads: 4, kvHeads: 2, ffn: 256, vocab: 300, context: 64, type: "Q8_0", tied: false, seed: 2 }, `${tmpDir()}/m.gguf`);
    const f = readGGUF(p);
    const before = tensorBytesRead.get(p) ?? 0;
    const s = loadSlice(f, configFromGGUF(f), { start: 2, end: 4 }, createKernels());
    expect((tensorBytesRead.get(p) ?? 0) - before).toBe(layerBytes(f, 2) + layerBytes(f, 3));
    expect(s.range).toEqual({ start: 2, end: 4 });
  });
});

describe("sampler", () => {
  const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i) * 3);
  it("greedy picks the argmax; a seed reproduces a sampled sequence", () => {
    expect(new Sampler({ temperature: 0 }).sample(logits)).toBe(logits.indexOf(Math.max(...logits)));
    const run = (seed: number) => { const s = new Sampler({ temperature: 1, seed }); return Array.from({ length: 20 }, () => s.sample(logits)); };
    expect(run(42)).toEqual(run(42));
    expect(run(42)).not.toEqual(run(43));
  });
  it("top-k, top-p and min-p restrict the candidates; the repetition penalty demotes seen tokens", () => {
    const sorted = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
    const s = new Sampler({ temperature: 5, topK: 3, seed: 1 });
    for (let i = 0; i < 200; i++) expect(sorted.slice(0, 3)).toContain(s.sample(logits));
    const p = new Sampler({ temperature: 1, topP: 0.0001, seed: 1 });
    for (let i = 0; i < 50; i++) expect(p.sample(logits)).toBe(sorted[0]);
    const m = new Sampler({ temperature: 1, minP: 0.999, seed: 1 });
    for (let i = 0; i < 50; i++) expect(m.sample(logits)).toBe(sorted[0]);
    const r = new Sampler({ temperature: 0, repetitionPenalty: 100 });
    expect(r.sample(logits, [sorted[0]])).toBe(sorted[1]);
  });
});
