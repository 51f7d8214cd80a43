// Reference (scalar) element-wise and attention kernels, f32 throughout, in the
// operation order of llama2.c's run.c. Fast versions must match them bit for bit.
// exp, pow, sin and cos are ours (numerics.ts), never Math.* or the C library's.

import { LayerswarmError } from "../../errors.js";
import { TRIG_MAX, expf, powf, sincosd } from "./numerics.js";

const fr = Math.fround;

// RMSNorm, per row: out = w * (x / sqrt(mean(x^2) + eps))      x, out (T, n); w (n,)
export function rmsnorm(out: Float32Array, x: Float32Array, w: Float32Array, T: number, n: number, eps: number): void {
  for (let t = 0; t < T; t++) {
    const o = t * n;
    let ss = 0;
    for (let j = 0; j < n; j++) ss = fr(ss + fr(x[o + j] * x[o + j]));
    ss = fr(ss / n);
    ss = fr(ss + eps);
    ss = fr(1 / fr(Math.sqrt(ss)));
    for (let j = 0; j < n; j++) out[o + j] = fr(w[j] * fr(ss * x[o + j]));
  }
}

export { expf } from "./numerics.js";

// RoPE cos/sin for one position: (ropeDim/2) pairs. freq_i = 1/base^(2i/ropeDim) / factor_i,
// angle = f32(pos * freq_i); pos may be fractional (linear scaling divides it).
// The frequencies depend only on (ropeDim, base, factors): the last ones are kept.
let freqKey: { ropeDim: number; base: number; factors: Float32Array | undefined } | undefined;
let freqs = new Float32Array(0);
export function ropeFreqs(ropeDim: number, base: number, freqFactors: Float32Array | undefined): Float32Array {
  if (freqKey && freqKey.ropeDim === ropeDim && freqKey.base === base && freqKey.factors === freqFactors) return freqs;
  const f = new Float32Array(ropeDim / 2);
  for (let i = 0; i < ropeDim / 2; i++) {
    let freq = fr(1 / powf(base, fr(fr(2 * i) / ropeDim)));
    if (freqFactors) freq = fr(freq / freqFactors[i]);
    f[i] = freq;
  }
  freqKey = { ropeDim, base, factors: freqFactors };
  return (freqs = f);
}

const sc = new Float64Array(2);
export function ropeTable(pos: number, ropeDim: number, base: number, freqFactors: Float32Array | undefined, cos: Float32Array, sin: Float32Array): void {
  const f = ropeFreqs(ropeDim, base, freqFactors);
  for (let i = 0; i < ropeDim / 2; i++) {
    const val = fr(pos * f[i]);
    if (!(Math.abs(val) <= TRIG_MAX))
      throw new LayerswarmError("BAD_ARGUMENT", `RoPE angle ${val} at position ${pos} is beyond the ${TRIG_MAX} our sin/cos are specified for`);
    sincosd(val, sc);
    cos[i] = fr(sc[1]);
    sin[i] = fr(sc[0]);
  }
}

// Rotate the first ropeDim elements of each head of one row in place.
// "pairs" (llama): (2i, 2i+1); "halves" (neox, qwen): (i, i + ropeDim/2).
export function ropeRow(x: Float32Array, o: number, nHeads: number, headDim: number, ropeDim: number, cos: Float32Array, sin: Float32Array, halves: boolean): void {
  const half = ropeDim / 2;
  for (let h = 0; h < nHeads; h++) {
    const b = o + h * headDim;
    for (let i = 0; i < half; i++) {
      const i0 = halves ? b + i : b + 2 * i;
      const i1 = halves ? b + i + half : b + 2 * i + 1;
      const v0 = x[i0], v1 = x[i1], c = cos[i], s = sin[i];
      x[i0] = fr(fr(v0 * c) - fr(v1 * s));
      x[i1] = fr(fr(v0 * s) + fr(v1 * c));
    }
  }
}

// KV cache layout. V: v[t * kvDim + e]. K is blocked by 16 positions so a SIMD
// kernel scores 16 positions at once, each lane summing over e sequentially:
// k[((t >> 4) * kvDim + e) * 16 + (t & 15)]. Growing the cache appends blocks.
export function kIndex(t: number, e: number, kvDim: number): number {
  return ((t >> 4) * kvDim + e) * 16 + (t & 15);
}

// Causal attention for one row at position `pos` with grouped-query heads.
// q (nHeads*headDim) at qo; kc (blocked), vc (>= pos+1 positions); out (nHeads*headDim) at oo; att scratch (>= pos+1)
export function attentionRow(out: Float32Array, oo: number, q: Float32Array, qo: number, kc: Float32Array, vc: Float32Array, pos: number,
  nHeads: number, nKV: number, headDim: number, att: Float32Array): void {
  const kvDim = nKV * headDim, group = nHeads / nKV;
  const scale = fr(Math.sqrt(headDim));
  for (let h = 0; h < nHeads; h++) {
    const qh = qo + h * headDim, kvo = Math.floor(h / group) * headDim;
    let max = -Infinity;
    for (let t = 0; t <= pos; t++) {
      let s = 0;
      for (let i = 0; i < headDim; i++) s = fr(s + fr(q[qh + i] * kc[kIndex(t, kvo + i, kvDim)]));
      s = fr(s / scale);
      att[t] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let t = 0; t <= pos; t++) {
      att[t] = expf(fr(att[t] - max));
      sum = fr(sum + att[t]);
    }
    for (let t = 0; t <= pos; t++) att[t] = fr(att[t] / sum);
    const ob = oo + h * headDim;
    for (let i = 0; i < headDim; i++) out[ob + i] = 0;
    for (let t = 0; t <= pos; t++) {
      const vo = t * kvDim + kvo, a = att[t];
      for (let i = 0; i < headDim; i++) out[ob + i] = fr(out[ob + i] + fr(a * vc[vo + i]));
    }
  }
}

// SwiGLU in place: g = silu(g) * u      g, u (n,)
export function siluMul(g: Float32Array, u: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    let v = g[i];
    v = fr(v * fr(1 / fr(1 + expf(-v))));
    g[i] = fr(v * u[i]);
  }
}

// x += y      (n,)
export function addInPlace(x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[i] = fr(x[i] + y[i]);
}

// x (T, n) += bias (n,) on every row
export function addBias(x: Float32Array, bias: Float32Array, T: number, n: number): void {
  for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) x[t * n + i] = fr(x[t * n + i] + bias[i]);
}
