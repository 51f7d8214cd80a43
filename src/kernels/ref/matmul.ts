// Reference (scalar) matrix product: the specification every fast kernel must
// reproduce bit for bit.
//
//   out[t][r] = sum_j  w[r][j] * x[t][j]     j ascending, every operation in f32
//
// where w[r][j] is the weight dequantised to f32 exactly as format/quant.ts
// specifies (for example Q8_0: fround(d * q), Q4_K: fround(fround(d*sc)*q) - fround(dmin*m)).
// Activations stay f32 (never quantised), and each product is rounded before it
// is added (no fused multiply-add), so the result is that of llama2.c's run.c on
// the dequantised matrix. The order depends on nothing but j: not the batch,
// the chunk or the thread count.

import { dequantizeRow, rowBytes } from "../../format/quant.js";

const fr = Math.fround;

// W (rows, cols) in ggml layout @ x (T, cols) -> out (T, rows)
export function matmulRef(type: number, w: Uint8Array, rows: number, cols: number, x: Float32Array, T: number, out: Float32Array): void {
  const rb = rowBytes(type, cols);
  const row = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    dequantizeRow(type, w, r * rb, cols, row);
    for (let t = 0; t < T; t++) {
      const xo = t * cols;
      let acc = 0;
      for (let j = 0; j < cols; j++) acc = fr(acc + fr(row[j] * x[xo + j]));
      out[t * rows + r] = acc;
    }
  }
}
