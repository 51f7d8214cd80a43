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
  const at = (pos: number) => Array<number>(pos).fill(0); // a history of `pos` tokens: the next token is at position pos
  it("greedy picks the argmax; a seed reproduces a sampled sequence", () => {
    expect(new Sampler({ temperature: 0 }).sample(logits)).toBe(logits.indexOf(Math.max(...logits)));
    const run = (seed: number) => { const s = new Sampler({ temperature: 1, seed }); return Array.from({ length: 20 }, (_, p) => s.sample(logits, [], p)); };
    expect(run(42)).toEqual(run(42));
    expect(run(42)).not.toEqual(run(43));
    expect(new Set(run(42)).size).toBeGreaterThan(1); // positions draw different random numbers
  });
  it("top-k, top-p and min-p restrict the candidates; the repetition penalty demotes seen tokens", () => {
    const sorted = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
    const s = new Sampler({ temperature: 5, topK: 3, seed: 1 });
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(s.sample(logits, [], i));
    expect([...seen].sort()).toEqual(sorted.slice(0, 3).sort());
    const p = new Sampler({ temperature: 1, topP: 0.0001, seed: 1 });
    for (let i = 0; i < 50; i++) expect(p.sample(logits, [], i)).toBe(sorted[0]);
    const m = new Sampler({ temperature: 1, minP: 0.999, seed: 1 });
    for (let i = 0; i < 50; i++) expect(m.sample(logits, [], i)).toBe(sorted[0]);
    const r = new Sampler({ temperature: 0, repetitionPenalty: 100 });
    expect(r.sample(logits, [sorted[0]])).toBe(sorted[1]);
  });
  it("the token at a position depends only on the logits, the seed and the position", () => {
    const all = new Sampler({ temperature: 1.3, topK: 20, seed: 7 });
    const inOrder = Array.from({ length: 64 }, (_, p) => all.sample(logits, at(p)));
    for (const p of [0, 1, 17, 40, 63]) expect(new Sampler({ temperature: 1.3, topK: 20, seed: 7 }).sample(logits, at(p))).toBe(inOrder[p]);
    // the same position sampled again, after others, gives the same token
    expect(all.sample(logits, at(17))).toBe(inOrder[17]);
  });
  // Pearson's chi-square, V - 1 = 7 degrees of freedom, significance 0.001:
  // the critical value is 24.32. The seeds are fixed, so the test is
  // deterministic; a sampler off by a few percent on one token fails it.
  it("the sampled distribution at a position is the softmax (chi-square, significance 0.001)", () => {
    const small = Float32Array.of(1.5, 0.2, -0.7, 2.1, 0.9, -2.0, 0.0, 1.1), V = small.length, N = 40_000, CRIT = 24.32;
    const max = Math.max(...small), w = Array.from(small, (x) => Math.exp(x - max)), Z = w.reduce((a, b) => a + b, 0);
    const chi2 = (draw: (i: number) => number) => {
      const n = new Array<number>(V).fill(0);
      for (let i = 0; i < N; i++) n[draw(i)]++;
      return n.reduce((a, o, j) => a + (o - (N * w[j]) / Z) ** 2 / ((N * w[j]) / Z), 0);
    };
    // across seeds at one position, and across positions with one seed
    expect(chi2((i) => new Sampler({ temperature: 1, seed: i }).sample(small, at(5)))).toBeLessThan(CRIT);
    const one = new Sampler({ temperature: 1, seed: 3 });
    expect(chi2((i) => one.sample(small, [], i))).toBeLessThan(CRIT);
    // and the test has power: the same counts against a temperature of 1.1 fail it
    expect(chi2((i) => new Sampler({ temperature: 1.1, seed: i }).sample(small, at(5)))).toBeGreaterThan(CRIT);
  });
});
