// Every kernel backend must reproduce the reference kernels bit for bit, for
// every weight type, odd shapes, any batch size and any thread count.

import { describe, expect, it } from "vitest";
import { GGMLType } from "../format/quant.js";
import { matrix, rand } from "../testing/kernels.js";
import { Kernels, refKernels } from "./index.js";
import { nativeKernels, nativeUnavailableReason } from "./native/index.js";
import { firstDiff } from "../testing/shared.js";
import { kIndex } from "./ref/ops.js";


const backends: [string, (threads: number) => Kernels | undefined][] = [["native", nativeKernels]];

describe.each(backends)("%s kernels equal the reference bit for bit", (_name, make) => {
  const k1 = make(1);
  it.skipIf(!k1 && !process.env.CI)(`is available (${nativeUnavailableReason() ?? "ok"})`, () => expect(k1).toBeDefined());
  if (!k1) return;
  const ref = refKernels();

  const shapes: [string, number, number, number][] = [
    ["F32", GGMLType.F32, 37, 172], ["F16", GGMLType.F16, 50, 64], ["BF16", GGMLType.BF16, 16, 40],
    ["Q8_0", GGMLType.Q8_0, 70, 96], ["Q4_0", GGMLType.Q4_0, 33, 128], ["Q4_K", GGMLType.Q4_K, 40, 512], ["Q6_K", GGMLType.Q6_K, 24, 256],
    ["Q5_0", GGMLType.Q5_0, 70, 896], ["Q8_0 896", GGMLType.Q8_0, 70, 896],
    ["Q4_1", GGMLType.Q4_1, 70, 896], ["Q5_1", GGMLType.Q5_1, 70, 896],
    ["Q5_K", GGMLType.Q5_K, 70, 768], ["Q3_K", GGMLType.Q3_K, 70, 768], ["Q2_K", GGMLType.Q2_K, 70, 768],
    ["IQ4_NL", GGMLType.IQ4_NL, 70, 896], ["IQ4_XS", GGMLType.IQ4_XS, 70, 768],
  ];
  it.each(shapes)("matmul %s, T = 1, 3, 9, threads 1 and 2", (_n, type, rows, cols) => {
    const m = matrix(type, rows, cols, rows * 31 + cols);
    for (const T of [1, 3, 9]) {
      const x = new Float32Array(T * cols).map(rand(T + cols));
      const want = new Float32Array(T * rows), got = new Float32Array(T * rows);
      ref.matmul(m, x, T, want);
      for (const threads of [1, 2]) {
        const k = make(threads)!, packed = k.prepare(m);
        expect(packed.packed, "packed by the backend, not left to the reference").toBeDefined();
        k.matmul(packed, x, T, got);
        expect(firstDiff(got, want), `T=${T} threads=${threads}`).toBeUndefined();
      }
    }
  });

  it("matmul on a large matrix split over threads", () => {
    const m = matrix(GGMLType.Q8_0, 300, 1024, 5);
    const x = new Float32Array(5 * 1024).map(rand(9));
    const want = new Float32Array(5 * 300), got = new Float32Array(5 * 300);
    ref.matmul(m, x, 5, want);
    const k = make(2)!;
    k.matmul(k.prepare(m), x, 5, got);
    expect(firstDiff(got, want)).toBeUndefined();
  });

  it("rmsnorm, silu*mul", () => {
    const n = 300, T = 3, r = rand(3);
    const x = new Float32Array(T * n).map(r), w = new Float32Array(n).map(r);
    const a = new Float32Array(T * n), b = new Float32Array(T * n);
    ref.rmsnorm(a, x, w, T, n, 1e-5);
    k1.rmsnorm(b, x, w, T, n, 1e-5);
    expect(firstDiff(b, a)).toBeUndefined();
    const g1 = new Float32Array(40000).map(r), g2 = Float32Array.from(g1), u = new Float32Array(40000).map(r);
    ref.siluMul(g1, u, 40000);
    make(2)!.siluMul(g2, u, 40000);
    expect(firstDiff(g2, g1)).toBeUndefined();
  });

  it.each([[8, 4, 16, 0], [8, 2, 64, 37], [32, 8, 64, 300], [4, 4, 24, 17]])("attention H=%i KV=%i D=%i pos=%i", (H, KV, D, pos) => {
    const r = rand(H * 7 + pos), kvDim = KV * D;
    const cap = (Math.floor(pos / 16) + 1) * 16;
    const kc = new Float32Array(cap * kvDim), vc = new Float32Array(cap * kvDim).map(r);
    for (let t = 0; t <= pos; t++) for (let e = 0; e < kvDim; e++) kc[kIndex(t, e, kvDim)] = r() * 3;
    const q = new Float32Array(3 * H * D).map(r);
    const a = new Float32Array(3 * H * D), b = new Float32Array(3 * H * D), att = new Float32Array(cap);
    ref.attentionRow(a, H * D, q, H * D, kc, vc, pos, H, KV, D, att);
    for (const threads of [1, 2]) {
      make(threads)!.attentionRow(b, H * D, q, H * D, kc, vc, pos, H, KV, D, att);
      expect(firstDiff(b, a), `threads=${threads}`).toBeUndefined();
    }
  });
});
