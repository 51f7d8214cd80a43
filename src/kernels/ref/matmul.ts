// Reference (scalar) matrix products: the specification every fast kernel must
// reproduce bit for bit. Each output element is one dot product accumulated in
// an order that depends on nothing but the column index: not the batch, the
// chunk, or the thread count.
//
// Float weights (F32, F16, BF16): the exact arithmetic of llama2.c's run.c,
//   out[t][r] = sum_j w[r][j] * x[t][j]     j ascending, each product rounded to f32, no FMA.
//
// Quantised weights: the activation row is quantised to 16-bit integers per block
// of 32 (dx = amax/32767, q = round-half-even(x/dx)), so integer products are
// summed exactly (as VNNI's vpdpwssd does), and the f32 accumulator adds one term
// per sub-block of the weight type (format/quant.ts quantLayout: w = dW*q - mW):
//   acc += (dW*dx) * isum                          isum = sum q_w*q_x over the sub-block
//   acc += (dW*dx) * isum - (mW*dx) * xsum         types with a min; xsum = sum q_x over the sub-block
// in sub-block order, every product and sum rounded to f32. Sub-blocks are 32
// elements (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, IQ4_NL, IQ4_XS) or 16 (Q2_K,
// Q3_K, Q6_K); a 16-element sub-block uses the dx of the 32-block it lies in.
// 16-bit activations keep the error of this step near 1e-5, a hundred times
// below what 8-bit activations (llama.cpp's choice) cost.

import { GGMLType, quantLayout, rne, rowBytes, typeInfo } from "../../format/quant.js";
import { F16_TO_F32, bf16ToF32 } from "../../tensor/f16.js";
import { LayerswarmError } from "../../errors.js";

const fr = Math.fround;

export interface Q16 {
  q: Int16Array; // (T, n)
  d: Float32Array; // (T, n/32) scale per block
  sum: Int32Array; // (T, n/32) sum of q per block
  sum16: Int32Array; // (T, n/16) sum of q per half block
}

// x (T, n) -> 16-bit blocks of 32 with an f32 scale each; n a multiple of 32.
export function quantizeQ16(x: Float32Array, T: number, n: number): Q16 {
  const nb = (T * n) / 32;
  const q = new Int16Array(T * n), d = new Float32Array(nb), sum = new Int32Array(nb), sum16 = new Int32Array(2 * nb);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b * 32 + i]));
    const db = fr(amax / 32767);
    const id = db !== 0 ? fr(1 / db) : 0;
    d[b] = db;
    for (let i = 0; i < 32; i++) {
      const v = Math.max(-32767, Math.min(32767, rne(fr(x[b * 32 + i] * id))));
      q[b * 32 + i] = v;
      sum16[2 * b + (i >> 4)] += v;
    }
    sum[b] = sum16[2 * b] + sum16[2 * b + 1];
  }
  return { q, d, sum, sum16 };
}

export function isQuantized(type: number): boolean {
  return quantLayout(type) !== undefined;
}

// W (rows, cols) in ggml layout @ x (T, cols) -> out (T, rows)
export function matmulRef(type: number, w: Uint8Array, rows: number, cols: number, x: Float32Array, T: number, out: Float32Array): void {
  if (!typeInfo(type)?.supported) throw new LayerswarmError("UNSUPPORTED", `no matmul kernel for ggml type ${type}`);
  if (isQuantized(type)) matmulQuant(type, w, rows, cols, x, T, out);
  else matmulFloat(type, w, rows, cols, x, T, out);
}

function matmulFloat(type: number, w: Uint8Array, rows: number, cols: number, x: Float32Array, T: number, out: Float32Array): void {
  const dv = new DataView(w.buffer, w.byteOffset, w.byteLength);
  const rb = rowBytes(type, cols);
  const row = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++)
      row[j] = type === GGMLType.F32 ? dv.getFloat32(r * rb + 4 * j, true)
        : type === GGMLType.F16 ? F16_TO_F32[dv.getUint16(r * rb + 2 * j, true)]
        : bf16ToF32(dv.getUint16(r * rb + 2 * j, true));
    for (let t = 0; t < T; t++) {
      let acc = 0;
      for (let j = 0; j < cols; j++) acc = fr(acc + fr(row[j] * x[t * cols + j]));
      out[t * rows + r] = acc;
    }
  }
}

function matmulQuant(type: number, w: Uint8Array, rows: number, cols: number, x: Float32Array, T: number, out: Float32Array): void {
  const dv = new DataView(w.buffer, w.byteOffset, w.byteLength);
  const L = quantLayout(type)!, { blockSize, typeSize } = typeInfo(type)!;
  const rb = rowBytes(type, cols), sub = L.sub, ns = cols / sub, nb32 = cols / 32;
  const xq = quantizeQ16(x, T, cols);
  const xsum = sub === 32 ? xq.sum : xq.sum16;
  const wq = new Int32Array(cols), dW = new Float32Array(ns), mW = new Float32Array(ns); // one row
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < cols / blockSize; b++) L.decode(w, dv, r * rb + b * typeSize, wq, b * blockSize, dW, mW, (b * blockSize) / sub);
    for (let t = 0; t < T; t++) {
      let acc = 0;
      const xo = t * cols;
      for (let j = 0; j < ns; j++) {
        let isum = 0;
        for (let l = 0; l < sub; l++) isum += wq[sub * j + l] * xq.q[xo + sub * j + l];
        const dx = xq.d[t * nb32 + ((j * sub) >> 5)];
        const term = fr(fr(dW[j] * dx) * fr(isum));
        acc = L.min ? fr(acc + fr(term - fr(fr(mW[j] * dx) * fr(xsum[t * ns + j])))) : fr(acc + term);
      }
      out[t * rows + r] = acc;
    }
  }
}
