// Reference (scalar) matrix products: the specification every fast kernel must
// reproduce bit for bit. Each output element is one dot product accumulated in a
// fixed order that does not depend on the batch, the chunk or the thread count.
//
//   F32/F16/BF16 weights:  acc = acc + w[j]*x[j], j ascending, in f32 (as llama2.c's run.c)
//   Q8_0/Q4_0 weights:     x is quantised to 32-blocks of int8 (d = amax/127, round half even);
//                          per block b ascending: acc = acc + (dw*dx) * isum_b   (isum exact int)
//   Q4_K weights:          x is quantised to 256-blocks of int8; per super-block:
//                          acc = acc + ((d*dx)*isum - (dmin*dx)*msum)
//                          isum = sum_j sc_j * sum(q4*xq), msum = sum_j m_j * sum(xq) over sub-blocks j
//   Q6_K weights:          acc = acc + (d*dx) * sum_j sc_j * sum(q6*xq) over 16-element sub-blocks j
// Every f32 operation is rounded with Math.fround, exactly as IEEE f32 hardware would.

import { GGMLType, rne, scaleMinK4, q6At } from "../../format/quant.js";
import { F16_TO_F32, bf16ToF32 } from "../../tensor/f16.js";
import { LayerswarmError } from "../../errors.js";

const fr = Math.fround;

export interface QuantizedX {
  q: Int8Array; // (T, n)
  d: Float32Array; // (T, n / block)
  block: number;
}

// x (T, n) -> int8 blocks of `block` elements with one f32 scale each.
export function quantizeActivations(x: Float32Array, T: number, n: number, block: number): QuantizedX {
  const q = new Int8Array(T * n);
  const d = new Float32Array((T * n) / block);
  for (let b = 0; b < (T * n) / block; b++) {
    let amax = 0;
    for (let i = 0; i < block; i++) amax = Math.max(amax, Math.abs(x[b * block + i]));
    const db = fr(amax / 127);
    const id = db !== 0 ? fr(1 / db) : 0;
    d[b] = db;
    for (let i = 0; i < block; i++) q[b * block + i] = Math.max(-127, Math.min(127, rne(fr(x[b * block + i] * id))));
  }
  return { q, d, block };
}

export function activationBlock(type: number): number {
  switch (type) {
    case GGMLType.Q8_0:
    case GGMLType.Q4_0:
      return 32;
    case GGMLType.Q4_K:
    case GGMLType.Q6_K:
      return 256;
    default:
      return 0; // float activations
  }
}

// W (rows, cols) in ggml layout @ x (T, cols) -> out (T, rows)
export function matmulRef(type: number, w: Uint8Array, rows: number, cols: number, x: Float32Array, T: number, out: Float32Array): void {
  const dv = new DataView(w.buffer, w.byteOffset, w.byteLength);
  switch (type) {
    case GGMLType.F32:
    case GGMLType.F16:
    case GGMLType.BF16: {
      const row = new Float32Array(cols);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < cols; j++)
          row[j] =
            type === GGMLType.F32 ? dv.getFloat32((r * cols + j) * 4, true)
            : type === GGMLType.F16 ? F16_TO_F32[dv.getUint16((r * cols + j) * 2, true)]
            : bf16ToF32(dv.getUint16((r * cols + j) * 2, true));
        for (let t = 0; t < T; t++) {
          let acc = 0;
          for (let j = 0; j < cols; j++) acc = fr(acc + fr(row[j] * x[t * cols + j]));
          out[t * rows + r] = acc;
        }
      }
      return;
    }
    case GGMLType.Q8_0:
    case GGMLType.Q4_0: {
      const xq = quantizeActivations(x, T, cols, 32);
      const nb = cols / 32, bs = type === GGMLType.Q8_0 ? 34 : 18;
      const wq = new Int8Array(32);
      for (let r = 0; r < rows; r++)
        for (let t = 0; t < T; t++) {
          let acc = 0;
          for (let b = 0; b < nb; b++) {
            const o = (r * nb + b) * bs;
            const dw = F16_TO_F32[dv.getUint16(o, true)];
            if (type === GGMLType.Q8_0) for (let i = 0; i < 32; i++) wq[i] = dv.getInt8(o + 2 + i);
            else for (let i = 0; i < 16; i++) (wq[i] = (w[o + 2 + i] & 0xf) - 8), (wq[i + 16] = (w[o + 2 + i] >> 4) - 8);
            let isum = 0;
            const xo = t * cols + b * 32;
            for (let i = 0; i < 32; i++) isum += wq[i] * xq.q[xo + i];
            acc = fr(acc + fr(fr(dw * xq.d[t * nb + b]) * isum));
          }
          out[t * rows + r] = acc;
        }
      return;
    }
    case GGMLType.Q4_K: {
      const xq = quantizeActivations(x, T, cols, 256);
      const nb = cols / 256;
      for (let r = 0; r < rows; r++)
        for (let t = 0; t < T; t++) {
          let acc = 0;
          for (let b = 0; b < nb; b++) {
            const o = (r * nb + b) * 144;
            const d = F16_TO_F32[dv.getUint16(o, true)], dmin = F16_TO_F32[dv.getUint16(o + 2, true)];
            const xo = t * cols + b * 256;
            let isum = 0, msum = 0;
            for (let j = 0; j < 8; j++) {
              const [sc, m] = scaleMinK4(j, w, o + 4);
              let s = 0, bsum = 0;
              for (let l = 0; l < 32; l++) {
                const byte = w[o + 16 + 32 * (j >> 1) + l];
                const q = j & 1 ? byte >> 4 : byte & 0xf;
                const xv = xq.q[xo + 32 * j + l];
                s += q * xv;
                bsum += xv;
              }
              isum += sc * s;
              msum += m * bsum;
            }
            const dx = xq.d[t * nb + b];
            acc = fr(acc + fr(fr(fr(d * dx) * fr(isum)) - fr(fr(dmin * dx) * fr(msum))));
          }
          out[t * rows + r] = acc;
        }
      return;
    }
    case GGMLType.Q6_K: {
      const xq = quantizeActivations(x, T, cols, 256);
      const nb = cols / 256;
      const q6 = new Int8Array(256);
      for (let r = 0; r < rows; r++) {
        for (let t = 0; t < T; t++) {
          let acc = 0;
          for (let b = 0; b < nb; b++) {
            const o = (r * nb + b) * 210;
            for (let e = 0; e < 256; e++) q6[e] = q6At(w, o, e);
            const d = F16_TO_F32[dv.getUint16(o + 208, true)];
            const xo = t * cols + b * 256;
            let isum = 0;
            for (let j = 0; j < 16; j++) {
              let s = 0;
              for (let l = 0; l < 16; l++) s += q6[16 * j + l] * xq.q[xo + 16 * j + l];
              isum += dv.getInt8(o + 192 + j) * s;
            }
            acc = fr(acc + fr(fr(d * xq.d[t * nb + b]) * fr(isum)));
          }
          out[t * rows + r] = acc;
        }
      }
      return;
    }
    default:
      throw new LayerswarmError("UNSUPPORTED", `no matmul kernel for ggml type ${type}`);
  }
}
