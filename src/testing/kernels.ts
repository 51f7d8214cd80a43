// Deterministic inputs for kernel tests: the same seed gives the same bits on any machine.

import { quantizeRow, rowBytes } from "../format/quant.js";
import type { Matrix } from "../kernels/index.js";

// mulberry32, mapped to [-1, 1)
export function rand(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

// A (rows, cols) matrix of `type`, quantised from seeded values whose scale varies along the row.
export function matrix(type: number, rows: number, cols: number, seed: number): Matrix {
  const r = rand(seed), rb = rowBytes(type, cols);
  const data = new Uint8Array(rb * rows), row = new Float32Array(cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) row[j] = r() * (1 + (j % 5));
    quantizeRow(type, row, 0, cols, data, i * rb);
  }
  return { type, rows, cols, data };
}
