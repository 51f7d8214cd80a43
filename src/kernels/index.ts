// Kernel dispatch. A backend provides the matrix product (the hot spot) over its
// own packed weight layout; the other kernels are shared until a backend overrides
// them. Every backend must give the same bits as the reference (see
// kernels/compliance.test.ts).

import { matmulRef } from "./ref/matmul.js";
import * as ops from "./ref/ops.js";
import { nativeKernels, nativeUnavailableReason } from "./native/index.js";
import { LayerswarmError } from "../errors.js";

export interface Matrix {
  type: number; // GGMLType
  rows: number; // output features
  cols: number; // input features (row length)
  data: Uint8Array; // ggml layout, rows of `cols` elements
  packed?: unknown; // backend-specific layout, made once at load
}

export interface Kernels {
  readonly name: string;
  readonly threads: number;
  prepare(m: Matrix): Matrix;
  // W (rows, cols) @ x (T, cols) -> out (T, rows)
  matmul(w: Matrix, x: Float32Array, T: number, out: Float32Array): void;
  rmsnorm: typeof ops.rmsnorm;
  attentionRow: typeof ops.attentionRow;
  siluMul: typeof ops.siluMul;
  close(): void;
}

export function refKernels(): Kernels {
  return {
    name: "ref",
    threads: 1,
    prepare: (m) => m,
    matmul: (w, x, T, out) => matmulRef(w.type, w.data, w.rows, w.cols, x, T, out),
    rmsnorm: ops.rmsnorm,
    attentionRow: ops.attentionRow,
    siluMul: ops.siluMul,
    close: () => {},
  };
}

export interface KernelOptions {
  backend?: "auto" | "ref" | "native";
  threads?: number;
}

export function createKernels(opts: KernelOptions = {}): Kernels {
  const backend = opts.backend ?? (process.env.LAYERSWARM_KERNELS as KernelOptions["backend"]) ?? "auto";
  if (backend === "ref") return refKernels();
  const k = nativeKernels(opts.threads ?? 1);
  if (k) return k;
  if (backend === "native") throw new LayerswarmError("UNSUPPORTED", `native kernels are not available: ${nativeUnavailableReason()}`);
  return refKernels();
}
