// Native kernels: a C++ addon (native/, built by node-gyp at npm install) with
// SIMD matrix products over a packed weight layout, attention and element-wise
// kernels, and a thread pool. It reproduces the reference kernels bit for bit
// (kernels/compliance.test.ts). When the addon is missing (no compiler at
// install), the dispatcher falls back to the reference kernels.

import { createRequire } from "node:module";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as fs from "node:fs";
import type { Kernels, Matrix } from "../index.js";
import { matmulRef } from "../ref/matmul.js";

interface Addon {
  packedSize(type: number, rows: number, cols: number): number;
  pack(type: number, rows: number, cols: number, src: Uint8Array, dst: Uint8Array): void;
  matmul(type: number, packed: Uint8Array, rows: number, cols: number, x: Float32Array, T: number, out: Float32Array): void;
  attention(out: Float32Array, q: Float32Array, kc: Float32Array, vc: Float32Array, pos: number, nHeads: number, nKV: number, headDim: number): void;
  rmsnorm(out: Float32Array, x: Float32Array, w: Float32Array, T: number, n: number, eps: number): void;
  siluMul(g: Float32Array, u: Float32Array, n: number): void;
  setThreads(n: number): void;
  isa(): string;
}

let addon: Addon | null | undefined;
let loadError: string | undefined;

export function loadAddon(): Addon | null {
  if (addon !== undefined) return addon;
  const here = path.dirname(fileURLToPath(import.meta.url));
  // src/kernels/native or dist/src/kernels/native -> repository root
  const candidates = [path.resolve(here, "../../../build/Release/layerswarm_kernels.node"), path.resolve(here, "../../../../build/Release/layerswarm_kernels.node")];
  const file = candidates.find((p) => fs.existsSync(p));
  if (!file) {
    loadError = `addon not built (looked for ${candidates[0]}; run npm run build:native)`;
    return (addon = null);
  }
  try {
    addon = createRequire(import.meta.url)(file) as Addon;
  } catch (e) {
    loadError = (e as Error).message;
    addon = null;
  }
  return addon;
}

export function nativeUnavailableReason(): string | undefined {
  loadAddon();
  return loadError;
}

// One process-wide pool: the thread count of the most recent createKernels wins.
export function nativeKernels(threads: number): Kernels | undefined {
  const a = loadAddon();
  if (!a) return undefined;
  a.setThreads(Math.max(1, threads));
  return {
    name: `native-${a.isa()}`,
    threads,
    prepare(m: Matrix): Matrix {
      const size = a.packedSize(m.type, m.rows, m.cols);
      if (size === 0) return m; // a type the addon does not know: the reference computes it
      const packed = new Uint8Array(size);
      a.pack(m.type, m.rows, m.cols, m.data, packed);
      // the ggml bytes are dropped: only the packed copy stays in memory
      return { type: m.type, rows: m.rows, cols: m.cols, data: new Uint8Array(0), packed };
    },
    matmul(w, x, T, out) {
      if (!w.packed) return matmulRef(w.type, w.data, w.rows, w.cols, x, T, out);
      a.matmul(w.type, w.packed as Uint8Array, w.rows, w.cols, x, T, out);
    },
    rmsnorm: (out, x, w, T, n, eps) => a.rmsnorm(out, x, w, T, n, eps),
    attentionRow(out, oo, q, qo, kc, vc, pos, nHeads, nKV, headDim) {
      a.attention(out.subarray(oo, oo + nHeads * headDim), q.subarray(qo, qo + nHeads * headDim), kc, vc, pos, nHeads, nKV, headDim);
    },
    siluMul: (g, u, n) => a.siluMul(g, u, n),
    close() {},
  };
}
