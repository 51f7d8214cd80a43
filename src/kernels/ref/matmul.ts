// Reference (scalar) matrix products: the specification every fast kernel must
// reproduce bit for bit. Each output element is one dot product accumulated in
// an order that depends on nothing but the column index: not the batch, the
// chunk, or the thread count.
//
// Float weights (F32, F16, BF16): the exact arithmetic of llama2.c's run.c,
//   out[t][r] = sum_j w[r][j] * x[t][j]     j ascending, each product rounded to f32, no FMA.
//
// Quantised weights (Q8_0, Q4_0, Q4_K, Q6_K): the activation row is quantised to
// 16-bit integers per block of 32 (dx = amax/32767, q = round-half-even(x/dx)),
// so integer products are summed exactly (as VNNI's vpdpwssd does), and the
// f32 accumulator adds one term per block (per sub-block for the K-quants):
//   Q8_0, Q4_0:  acc += (dw*dx) * isum                        isum = sum q_w*q_x (q4_0: nibble-8)
//   Q4_K:        acc += ((d*sc)*dx)*isum - ((dmin*m)*dx)*xsum  per 32-element sub-block, xsum = sum q_x
//   Q6_K:        acc += ((d*sc)*dx)*isum                       per 16-element sub-block
// 16-bit activations keep the error of this step near 1e-5, a hundred times
// below what 8-bit activations (llama.cpp's choice) cost.

import { GGMLType, q6At, rne, rowBytes, scaleMinK4 } from "../../format/quant.js";
import { F16_TO_F32, bf16ToF32 } from "../../tensor/f16.js";
import { LayerswarmError } from "../../errors.js";

const fr = Math.fround;

export interface Q16 {
  q: Int16Array; // (T, n)
  d: Float32Array; // (T, n/32) scale per block
  sum: Int32Array; // (T, n/32) sum of q per block
}

// x (T, n) -> 16-bit blocks of 32 with an f32 scale each; n a multiple of 32.
export function quantizeQ16(x: Float32Array, T: number, n: number): Q16 {
  const nb = (T * n) / 32;
  const q = new Int16Array(T * n), d = new Float32Array(nb), sum = new Int32Array(nb);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b * 32 + i]));
    const db = fr(amax / 32767);
    const id = db !== 0 ? fr(1 / db) : 0;
    d[b] = db;
    let s = 0;
    for (let i = 0; i < 32; i++) {
      const v = Math.max(-32767, Math.min(32767, rne(fr(x[b * 32 + i] * id))));
      q[b * 32 + i] = v;
      s += v;
    }
    sum[b] = s;
  }
  return { q, d, sum };
}

export function isQuantized(type: number): boolean {
  return type === GGMLType.Q8_0 || type === GGMLType.Q4_0 || type === GGMLType.Q4_K || type === GGMLType.Q6_K;
}

// W (rows, cols) in ggml layout @ x (T, cols) -> out (T, rows)
export function matmulRef(type: number, w: Uint8Array, rows: number, cols: number, x: Float32Array, T: number, out: Float32Array): void {
  const dv = new DataView(w.buffer, w.byteOffset, w.byteLength);
  const rb = rowBytes(type, cols);
  if (!isQuantized(type)) {
    const row = new Float32Array(cols);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < cols; j++)
        row[j] = type === GGMLType.F32 ? dv.getFloat32(r * rb + 4 * j, true)
          : type === GGMLType.F16 ? F16_TO_F32[dv.getUint16(r * rb + 2 * j, true)]
          : type === GGMLType.BF16 ? bf16ToF32(dv.getUint16(r * rb + 2 * j, true))
          : NaN;
      if (type !== GGMLType.F32 && type !== GGMLType.F16 && type !== GGMLType.BF16)
        throw new LayerswarmError("UNSUPPORTED", `no matmul kernel for ggml type ${type}`);
      for (let t = 0; t < T; t++) {
        let acc = 0;
        for (let j = 0; j < cols; j++) acc = fr(acc + fr(row[j] * x[t * cols + j]));
        out[t * rows + r] = acc;
      }
    }
    return;
  }
  const xq = quantizeQ16(x, T, cols);
  const nb32 = cols / 32;
  const wq = new Int32Array(cols); // integer weight values of one row
  for (let r = 0; r < rows; r++) {
    const o = r * rb;
    // per 32-element block (per sub-block for K-quants): integer values and f32 scales
    const dW = new Float32Array(cols / 16), mW = new Float32Array(cols / 16);
    switch (type) {
      case GGMLType.Q8_0:
        for (let b = 0; b < nb32; b++) {
          dW[b] = F16_TO_F32[dv.getUint16(o + 34 * b, true)];
          for (let i = 0; i < 32; i++) wq[32 * b + i] = dv.getInt8(o + 34 * b + 2 + i);
        }
        break;
      case GGMLType.Q4_0:
        for (let b = 0; b < nb32; b++) {
          dW[b] = F16_TO_F32[dv.getUint16(o + 18 * b, true)];
          for (let i = 0; i < 16; i++) {
            const byte = w[o + 18 * b + 2 + i];
            wq[32 * b + i] = (byte & 0xf) - 8;
            wq[32 * b + i + 16] = (byte >> 4) - 8;
          }
        }
        break;
      case GGMLType.Q4_K:
        for (let s = 0; s < cols / 256; s++) {
          const so = o + 144 * s;
          const d = F16_TO_F32[dv.getUint16(so, true)], dmin = F16_TO_F32[dv.getUint16(so + 2, true)];
          for (let j = 0; j < 8; j++) {
            const [sc, m] = scaleMinK4(j, w, so + 4);
            dW[8 * s + j] = fr(d * sc);
            mW[8 * s + j] = fr(dmin * m);
            for (let l = 0; l < 32; l++) {
              const byte = w[so + 16 + 32 * (j >> 1) + l];
              wq[256 * s + 32 * j + l] = j & 1 ? byte >> 4 : byte & 0xf;
            }
          }
        }
        break;
      case GGMLType.Q6_K:
        for (let s = 0; s < cols / 256; s++) {
          const so = o + 210 * s;
          const d = F16_TO_F32[dv.getUint16(so + 208, true)];
          for (let j = 0; j < 16; j++) dW[16 * s + j] = fr(d * dv.getInt8(so + 192 + j));
          for (let e = 0; e < 256; e++) wq[256 * s + e] = q6At(w, so, e);
        }
        break;
    }
    for (let t = 0; t < T; t++) {
      let acc = 0;
      const xo = t * cols;
      if (type === GGMLType.Q6_K) {
        for (let j = 0; j < cols / 16; j++) {
          let isum = 0;
          for (let l = 0; l < 16; l++) isum += wq[16 * j + l] * xq.q[xo + 16 * j + l];
          const dx = xq.d[t * nb32 + (j >> 1)];
          acc = fr(acc + fr(fr(dW[j] * dx) * fr(isum)));
        }
      } else {
        for (let b = 0; b < nb32; b++) {
          let isum = 0;
          for (let i = 0; i < 32; i++) isum += wq[32 * b + i] * xq.q[xo + 32 * b + i];
          const dx = xq.d[t * nb32 + b];
          if (type === GGMLType.Q4_K) {
            const xsum = xq.sum[t * nb32 + b];
            acc = fr(acc + fr(fr(fr(dW[b] * dx) * fr(isum)) - fr(fr(mW[b] * dx) * fr(xsum))));
          } else acc = fr(acc + fr(fr(dW[b] * dx) * fr(isum)));
        }
      }
      out[t * rows + r] = acc;
    }
  }
}
