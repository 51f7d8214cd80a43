// ggml weight types: block layouts, dequantisation (the specification of what the
// bytes mean) and quantisation (used by the GGUF writer and the synthetic models).
// Layouts follow ggml-common.h; every block is little-endian.

import { LayerswarmError } from "../errors.js";
import { F16_TO_F32, f32ToF16, bf16ToF32, f32ToBf16 } from "../tensor/f16.js";

export enum GGMLType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  IQ1_M = 29,
  BF16 = 30,
}

export interface TypeInfo {
  name: string;
  blockSize: number; // elements per block
  typeSize: number; // bytes per block
  supported: boolean; // can we compute with it
}

const INFO: Record<number, TypeInfo> = {
  [GGMLType.F32]: { name: "F32", blockSize: 1, typeSize: 4, supported: true },
  [GGMLType.F16]: { name: "F16", blockSize: 1, typeSize: 2, supported: true },
  [GGMLType.BF16]: { name: "BF16", blockSize: 1, typeSize: 2, supported: true },
  [GGMLType.Q8_0]: { name: "Q8_0", blockSize: 32, typeSize: 34, supported: true },
  [GGMLType.Q4_0]: { name: "Q4_0", blockSize: 32, typeSize: 18, supported: true },
  [GGMLType.Q4_1]: { name: "Q4_1", blockSize: 32, typeSize: 20, supported: true },
  [GGMLType.Q5_0]: { name: "Q5_0", blockSize: 32, typeSize: 22, supported: true },
  [GGMLType.Q5_1]: { name: "Q5_1", blockSize: 32, typeSize: 24, supported: true },
  [GGMLType.Q2_K]: { name: "Q2_K", blockSize: 256, typeSize: 84, supported: true },
  [GGMLType.Q3_K]: { name: "Q3_K", blockSize: 256, typeSize: 110, supported: true },
  [GGMLType.Q4_K]: { name: "Q4_K", blockSize: 256, typeSize: 144, supported: true },
  [GGMLType.Q5_K]: { name: "Q5_K", blockSize: 256, typeSize: 176, supported: true },
  [GGMLType.Q6_K]: { name: "Q6_K", blockSize: 256, typeSize: 210, supported: true },
  [GGMLType.IQ4_NL]: { name: "IQ4_NL", blockSize: 32, typeSize: 18, supported: true },
  [GGMLType.IQ4_XS]: { name: "IQ4_XS", blockSize: 256, typeSize: 136, supported: true },
  // Known, so that files holding them can be inspected, but not computed with.
  [GGMLType.Q8_1]: { name: "Q8_1", blockSize: 32, typeSize: 36, supported: false },
  [GGMLType.Q8_K]: { name: "Q8_K", blockSize: 256, typeSize: 292, supported: false },
  [GGMLType.IQ2_XXS]: { name: "IQ2_XXS", blockSize: 256, typeSize: 66, supported: false },
  [GGMLType.IQ2_XS]: { name: "IQ2_XS", blockSize: 256, typeSize: 74, supported: false },
  [GGMLType.IQ2_S]: { name: "IQ2_S", blockSize: 256, typeSize: 82, supported: false },
  [GGMLType.IQ3_XXS]: { name: "IQ3_XXS", blockSize: 256, typeSize: 98, supported: false },
  [GGMLType.IQ3_S]: { name: "IQ3_S", blockSize: 256, typeSize: 110, supported: false },
  [GGMLType.IQ1_S]: { name: "IQ1_S", blockSize: 256, typeSize: 50, supported: false },
  [GGMLType.IQ1_M]: { name: "IQ1_M", blockSize: 256, typeSize: 56, supported: false },
};

export function typeInfo(type: number): TypeInfo | undefined {
  return INFO[type];
}

// The types we compute with, in ggml's numbering order.
export function supportedTypeNames(): string[] {
  return Object.keys(INFO).map(Number).sort((a, b) => a - b).filter((t) => INFO[t].supported).map((t) => INFO[t].name);
}

export function typeName(type: number): string {
  return INFO[type]?.name ?? `type#${type}`;
}

export function typeFromName(name: string): GGMLType {
  const up = name.toUpperCase();
  for (const [k, v] of Object.entries(INFO)) if (v.name === up) return Number(k) as GGMLType;
  throw new LayerswarmError("BAD_ARGUMENT", `unknown weight type "${name}" (known: ${Object.values(INFO).map((i) => i.name).join(", ")})`);
}

// Bytes of one row of n elements. n must be a multiple of the block size.
export function rowBytes(type: number, n: number): number {
  const info = INFO[type];
  if (!info) throw new LayerswarmError("UNSUPPORTED", `unknown ggml type ${type}`);
  if (n % info.blockSize !== 0)
    throw new LayerswarmError("BAD_FILE", `row of ${n} elements is not a multiple of ${info.name}'s block size ${info.blockSize}`);
  return (n / info.blockSize) * info.typeSize;
}

// Q4_K and Q5_K pack eight 6-bit (scale, min) pairs into 12 bytes.
export function scaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j] & 63, q[o + j + 4] & 63];
  return [(q[o + j + 4] & 0xf) | ((q[o + j - 4] >> 6) << 4), (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4)];
}

const fr = Math.fround;

// Every quantised type, read as integers and scales: element e of a row is
//   w[e] = dW[j] * q[e] - mW[j]        j = e / sub (its sub-block), mW = 0 without a min
// with each scale an f32 (an f16 from the file, or the f32 product of the block's
// f16 scale and a sub-block's integer scale, as ggml's dequantize_row_* computes it).
// This is what the bytes mean: dequantizeRow evaluates it, and the reference
// matmul (kernels/ref/matmul.ts) sums q against integer activations per sub-block.
export interface QuantLayout {
  sub: 16 | 32; // elements per scale
  min: boolean; // has a per-sub-block min term
  // decode the block at byte o: q[qo..qo+blockSize), dW and mW at so..so+blockSize/sub
  decode(b: Uint8Array, dv: DataView, o: number, q: Int32Array, qo: number, dW: Float32Array, mW: Float32Array, so: number): void;
}

const f16 = (dv: DataView, o: number) => F16_TO_F32[dv.getUint16(o, true)];

// The 16 non-linear levels of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl).
export const IQ4_LEVELS = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

const LAYOUTS: Record<number, QuantLayout> = {
  // d f16 | q[32] i8
  [GGMLType.Q8_0]: { sub: 32, min: false, decode(_b, dv, o, q, qo, dW, _mW, so) {
    dW[so] = f16(dv, o);
    for (let i = 0; i < 32; i++) q[qo + i] = dv.getInt8(o + 2 + i);
  } },
  // d f16 | qs[16]: element i = (qs[i] & 15) - 8, element i + 16 = (qs[i] >> 4) - 8
  [GGMLType.Q4_0]: { sub: 32, min: false, decode(b, dv, o, q, qo, dW, _mW, so) {
    dW[so] = f16(dv, o);
    for (let i = 0; i < 16; i++) {
      q[qo + i] = (b[o + 2 + i] & 0xf) - 8;
      q[qo + i + 16] = (b[o + 2 + i] >> 4) - 8;
    }
  } },
  // d f16 | m f16 | qs[16]: element i = d * (qs[i] & 15) + m, element i + 16 from the high nibble
  [GGMLType.Q4_1]: { sub: 32, min: true, decode(b, dv, o, q, qo, dW, mW, so) {
    dW[so] = f16(dv, o);
    mW[so] = -f16(dv, o + 2);
    for (let i = 0; i < 16; i++) {
      q[qo + i] = b[o + 4 + i] & 0xf;
      q[qo + i + 16] = b[o + 4 + i] >> 4;
    }
  } },
  // d f16 | qh u32 (bit i: 5th bit of element i) | qs[16]: element i = ((qs[i] & 15) | bit i << 4) - 16, i + 16 from the high nibble
  [GGMLType.Q5_0]: { sub: 32, min: false, decode(b, dv, o, q, qo, dW, _mW, so) {
    dW[so] = f16(dv, o);
    const qh = dv.getUint32(o + 2, true);
    for (let i = 0; i < 16; i++) {
      q[qo + i] = ((b[o + 6 + i] & 0xf) | (((qh >>> i) & 1) << 4)) - 16;
      q[qo + i + 16] = ((b[o + 6 + i] >> 4) | (((qh >>> (i + 16)) & 1) << 4)) - 16;
    }
  } },
  // d f16 | m f16 | qh u32 | qs[16]: element i = d * ((qs[i] & 15) | bit i << 4) + m, i + 16 from the high nibble
  [GGMLType.Q5_1]: { sub: 32, min: true, decode(b, dv, o, q, qo, dW, mW, so) {
    dW[so] = f16(dv, o);
    mW[so] = -f16(dv, o + 2);
    const qh = dv.getUint32(o + 4, true);
    for (let i = 0; i < 16; i++) {
      q[qo + i] = (b[o + 8 + i] & 0xf) | (((qh >>> i) & 1) << 4);
      q[qo + i + 16] = (b[o + 8 + i] >> 4) | (((qh >>> (i + 16)) & 1) << 4);
    }
  } },
  // scales[16] (scale | min << 4, per 16 elements) | qs[64] | d f16 | dmin f16:
  // element e = 128n + 32k + l (l < 32): (qs[32n + l] >> 2k) & 3
  [GGMLType.Q2_K]: { sub: 16, min: true, decode(b, dv, o, q, qo, dW, mW, so) {
    const d = f16(dv, o + 80), dmin = f16(dv, o + 82);
    for (let j = 0; j < 16; j++) {
      dW[so + j] = fr(d * (b[o + j] & 0xf));
      mW[so + j] = fr(dmin * (b[o + j] >> 4));
    }
    for (let e = 0; e < 256; e++) q[qo + e] = (b[o + 16 + 32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
  } },
  // hmask[32] | qs[64] | scales[12] | d f16: sixteen 6-bit scales (minus 32), one per 16 elements;
  // element e = 128n + 32k + l (l < 32): (qs[32n + l] >> 2k) & 3, minus 4 unless bit 4n+k of hmask[l]
  [GGMLType.Q3_K]: { sub: 16, min: false, decode(b, dv, o, q, qo, dW, _mW, so) {
    const d = f16(dv, o + 108);
    for (let j = 0; j < 16; j++) dW[so + j] = fr(d * (q3Scale(b, o + 96, j) - 32));
    for (let e = 0; e < 256; e++) {
      const n = e >> 7, k = (e >> 5) & 3, l = e & 31;
      q[qo + e] = ((b[o + 32 + 32 * n + l] >> (2 * k)) & 3) - ((b[o + l] >> (4 * n + k)) & 1 ? 0 : 4);
    }
  } },
  // d f16 | qs[16]: element i = IQ4_LEVELS[qs[i] & 15], element i + 16 from the high nibble
  [GGMLType.IQ4_NL]: { sub: 32, min: false, decode(b, dv, o, q, qo, dW, _mW, so) {
    dW[so] = f16(dv, o);
    for (let i = 0; i < 16; i++) {
      q[qo + i] = IQ4_LEVELS[b[o + 2 + i] & 0xf];
      q[qo + i + 16] = IQ4_LEVELS[b[o + 2 + i] >> 4];
    }
  } },
  // d f16 | scales_h u16 | scales_l[4] | qs[128]: eight 6-bit scales (minus 32), sub-block j's
  // low 4 bits in nibble j & 1 of scales_l[j >> 1], its top 2 at bit 2j of scales_h; values as IQ4_NL's
  [GGMLType.IQ4_XS]: { sub: 32, min: false, decode(b, dv, o, q, qo, dW, _mW, so) {
    const d = f16(dv, o), sh = dv.getUint16(o + 2, true);
    for (let j = 0; j < 8; j++) {
      const ls = ((b[o + 4 + (j >> 1)] >> (4 * (j & 1))) & 0xf) | (((sh >> (2 * j)) & 3) << 4);
      dW[so + j] = fr(d * (ls - 32));
      for (let i = 0; i < 16; i++) {
        q[qo + 32 * j + i] = IQ4_LEVELS[b[o + 8 + 16 * j + i] & 0xf];
        q[qo + 32 * j + i + 16] = IQ4_LEVELS[b[o + 8 + 16 * j + i] >> 4];
      }
    }
  } },
  // d f16 | dmin f16 | scales[12] (eight 6-bit scale, min pairs) | qs[128]: sub-block j of 32
  // elements is the low (j even) or high (j odd) nibbles of qs[32 (j >> 1) ..]
  [GGMLType.Q4_K]: { sub: 32, min: true, decode(b, dv, o, q, qo, dW, mW, so) {
    const d = f16(dv, o), dmin = f16(dv, o + 2);
    for (let j = 0; j < 8; j++) {
      const [sc, m] = scaleMinK4(j, b, o + 4);
      dW[so + j] = fr(d * sc);
      mW[so + j] = fr(dmin * m);
      for (let l = 0; l < 32; l++) {
        const byte = b[o + 16 + 32 * (j >> 1) + l];
        q[qo + 32 * j + l] = j & 1 ? byte >> 4 : byte & 0xf;
      }
    }
  } },
  // d f16 | dmin f16 | scales[12] | qh[32] | qs[128]: Q4_K's values with a 5th bit, bit j of qh[l]
  // for element l of sub-block j
  [GGMLType.Q5_K]: { sub: 32, min: true, decode(b, dv, o, q, qo, dW, mW, so) {
    const d = f16(dv, o), dmin = f16(dv, o + 2);
    for (let j = 0; j < 8; j++) {
      const [sc, m] = scaleMinK4(j, b, o + 4);
      dW[so + j] = fr(d * sc);
      mW[so + j] = fr(dmin * m);
      for (let l = 0; l < 32; l++) {
        const byte = b[o + 48 + 32 * (j >> 1) + l];
        q[qo + 32 * j + l] = (j & 1 ? byte >> 4 : byte & 0xf) | (((b[o + 16 + l] >> j) & 1) << 4);
      }
    }
  } },
  // ql[128] | qh[64] | scales[16] i8 | d f16: 6-bit values - 32, one scale per 16 elements
  [GGMLType.Q6_K]: { sub: 16, min: false, decode(b, dv, o, q, qo, dW, _mW, so) {
    const d = f16(dv, o + 208);
    for (let j = 0; j < 16; j++) dW[so + j] = fr(d * dv.getInt8(o + 192 + j));
    for (let e = 0; e < 256; e++) q[qo + e] = q6At(b, o, e);
  } },
};

// Q3_K packs sixteen 6-bit scales into 12 bytes: low nibbles in bytes 0-7 (scales 0-7, then
// the high nibbles for 8-15), the top two bits of scale j in byte 8 + j % 4 at bit 2 (j >> 2).
function q3Scale(b: Uint8Array, o: number, j: number): number {
  const low = j < 8 ? b[o + j] & 0xf : b[o + j - 8] >> 4;
  return low | (((b[o + 8 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4);
}

export function quantLayout(type: number): QuantLayout | undefined {
  return LAYOUTS[type];
}

// Dequantise n elements of a row starting at byte offset `off` of `src` into dst[dOff..].
export function dequantizeRow(type: number, src: Uint8Array, off: number, n: number, dst: Float32Array, dOff = 0): void {
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  switch (type) {
    case GGMLType.F32:
      for (let i = 0; i < n; i++) dst[dOff + i] = dv.getFloat32(off + 4 * i, true);
      return;
    case GGMLType.F16:
      for (let i = 0; i < n; i++) dst[dOff + i] = F16_TO_F32[dv.getUint16(off + 2 * i, true)];
      return;
    case GGMLType.BF16:
      for (let i = 0; i < n; i++) dst[dOff + i] = bf16ToF32(dv.getUint16(off + 2 * i, true));
      return;
  }
  const L = LAYOUTS[type];
  if (!L) throw new LayerswarmError("UNSUPPORTED", `cannot dequantise ggml type ${typeName(type)}`);
  const { blockSize, typeSize } = INFO[type];
  const q = new Int32Array(blockSize), dW = new Float32Array(blockSize / L.sub), mW = new Float32Array(blockSize / L.sub);
  for (let b = 0; b < n / blockSize; b++) {
    L.decode(src, dv, off + b * typeSize, q, 0, dW, mW, 0);
    for (let e = 0; e < blockSize; e++) {
      const j = (e / L.sub) | 0;
      dst[dOff + b * blockSize + e] = L.min ? fr(fr(dW[j] * q[e]) - mW[j]) : fr(dW[j] * q[e]);
    }
  }
}

// The signed 6-bit value (-32..31) of element e (0..255) of the Q6_K block at byte o.
export function q6At(src: Uint8Array, o: number, e: number): number {
  const n = e >> 7, r = e & 127, g = r >> 5, l = r & 31;
  const ql = src[o + 64 * n + l + (g & 1) * 32];
  const lo = g < 2 ? ql & 0xf : ql >> 4;
  const hi = (src[o + 128 + 32 * n + l] >> (2 * g)) & 3;
  return (lo | (hi << 4)) - 32;
}

// Round half to even, as the SIMD kernels' cvtps/roundps do.
export function rne(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

// Quantise a row (n elements from src[sOff..]) into dst at byte offset off.
export function quantizeRow(type: number, src: Float32Array, sOff: number, n: number, dst: Uint8Array, off: number): void {
  const dv = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  switch (type) {
    case GGMLType.F32:
      for (let i = 0; i < n; i++) dv.setFloat32(off + 4 * i, src[sOff + i], true);
      return;
    case GGMLType.F16:
      for (let i = 0; i < n; i++) dv.setUint16(off + 2 * i, f32ToF16(src[sOff + i]), true);
      return;
    case GGMLType.BF16:
      for (let i = 0; i < n; i++) dv.setUint16(off + 2 * i, f32ToBf16(src[sOff + i]), true);
      return;
    case GGMLType.Q8_0:
      for (let b = 0; b < n / 32; b++) {
        const o = off + b * 34;
        let amax = 0;
        for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(src[sOff + b * 32 + i]));
        const d = fr(amax / 127);
        const id = d ? fr(1 / d) : 0;
        dv.setUint16(o, f32ToF16(d), true);
        for (let i = 0; i < 32; i++) dv.setInt8(o + 2 + i, rne(fr(src[sOff + b * 32 + i] * id)));
      }
      return;
    case GGMLType.Q4_0:
      for (let b = 0; b < n / 32; b++) {
        const o = off + b * 18;
        let amax = 0, max = 0;
        for (let i = 0; i < 32; i++) {
          const v = src[sOff + b * 32 + i];
          if (Math.abs(v) > amax) (amax = Math.abs(v)), (max = v);
        }
        const d = fr(max / -8);
        const id = d ? fr(1 / d) : 0;
        dv.setUint16(o, f32ToF16(d), true);
        for (let i = 0; i < 16; i++) {
          const a = Math.min(15, Math.trunc(fr(src[sOff + b * 32 + i] * id) + 8.5));
          const c = Math.min(15, Math.trunc(fr(src[sOff + b * 32 + i + 16] * id) + 8.5));
          dst[o + 2 + i] = a | (c << 4);
        }
      }
      return;
    case GGMLType.Q4_1:
      for (let b = 0; b < n / 32; b++) quantizeAffine32(src, sOff + b * 32, dst, off + b * 20, dv, 4);
      return;
    case GGMLType.Q5_0:
      for (let b = 0; b < n / 32; b++) quantizeQ5_0(src, sOff + b * 32, dst, off + b * 22, dv);
      return;
    case GGMLType.Q5_1:
      for (let b = 0; b < n / 32; b++) quantizeAffine32(src, sOff + b * 32, dst, off + b * 24, dv, 5);
      return;
    case GGMLType.Q2_K:
      for (let b = 0; b < n / 256; b++) quantizeQ2K(src, sOff + b * 256, dst, off + b * 84, dv);
      return;
    case GGMLType.Q3_K:
      for (let b = 0; b < n / 256; b++) quantizeQ3K(src, sOff + b * 256, dst, off + b * 110, dv);
      return;
    case GGMLType.IQ4_NL:
      for (let b = 0; b < n / 32; b++) {
        const d = fr(signedMax(src, sOff + b * 32, 32) / IQ4_LEVELS[0]);
        dv.setUint16(off + b * 18, f32ToF16(d), true);
        quantizeIQ4(src, sOff + b * 32, F16_TO_F32[f32ToF16(d)], dst, off + b * 18 + 2);
      }
      return;
    case GGMLType.IQ4_XS:
      for (let b = 0; b < n / 256; b++) quantizeIQ4XS(src, sOff + b * 256, dst, off + b * 136, dv);
      return;
    case GGMLType.Q4_K:
      for (let b = 0; b < n / 256; b++) quantizeK(src, sOff + b * 256, dst, off + b * 144, dv, 4);
      return;
    case GGMLType.Q5_K:
      for (let b = 0; b < n / 256; b++) quantizeK(src, sOff + b * 256, dst, off + b * 176, dv, 5);
      return;
    case GGMLType.Q6_K:
      for (let b = 0; b < n / 256; b++) quantizeQ6K(src, sOff + b * 256, dst, off + b * 210, dv);
      return;
    default:
      throw new LayerswarmError("UNSUPPORTED", `cannot quantise to ggml type ${typeName(type)}`);
  }
}

// The value of largest magnitude among n elements, with its sign.
function signedMax(x: Float32Array, s: number, n: number): number {
  let amax = 0, max = 0;
  for (let i = 0; i < n; i++) if (Math.abs(x[s + i]) > amax) (amax = Math.abs(x[s + i])), (max = x[s + i]);
  return max;
}

// ggml's quantize_row_q5_0_ref: d = max / -16, q = min(31, trunc(x / d + 16.5)).
function quantizeQ5_0(x: Float32Array, s: number, dst: Uint8Array, o: number, dv: DataView): void {
  const d = fr(signedMax(x, s, 32) / -16);
  const id = d ? fr(1 / d) : 0;
  dv.setUint16(o, f32ToF16(d), true);
  let qh = 0;
  for (let i = 0; i < 16; i++) {
    const a = Math.min(31, Math.trunc(fr(x[s + i] * id) + 16.5));
    const c = Math.min(31, Math.trunc(fr(x[s + i + 16] * id) + 16.5));
    dst[o + 6 + i] = (a & 0xf) | ((c & 0xf) << 4);
    qh |= ((a >> 4) << i) | ((c >> 4) << (i + 16));
  }
  dv.setUint32(o + 2, qh >>> 0, true);
}

// ggml's quantize_row_q4_1_ref and _q5_1_ref: d = (max - min) / (2^bits - 1), m = min,
// q = trunc((x - min) / d + 0.5); the 5th bits (Q5_1) in a u32 before the nibbles.
function quantizeAffine32(x: Float32Array, s: number, dst: Uint8Array, o: number, dv: DataView, bits: 4 | 5): void {
  let min = Infinity, max = -Infinity;
  for (let i = 0; i < 32; i++) (min = Math.min(min, x[s + i])), (max = Math.max(max, x[s + i]));
  const top = (1 << bits) - 1, d = fr((max - min) / top), id = d ? fr(1 / d) : 0;
  dv.setUint16(o, f32ToF16(d), true);
  dv.setUint16(o + 2, f32ToF16(min), true);
  const qs = o + (bits === 5 ? 8 : 4);
  let qh = 0;
  for (let i = 0; i < 16; i++) {
    const a = Math.min(top, Math.trunc(fr(fr(x[s + i] - min) * id) + 0.5));
    const c = Math.min(top, Math.trunc(fr(fr(x[s + i + 16] - min) * id) + 0.5));
    dst[qs + i] = (a & 0xf) | ((c & 0xf) << 4);
    qh |= ((a >> 4) << i) | ((c >> 4) << (i + 16));
  }
  if (bits === 5) dv.setUint32(o + 4, qh >>> 0, true);
}

// A simple, valid Q4_K / Q5_K encoder: per 32-element sub-block an affine (scale, min)
// grid of 2^bits levels, the sub-block scales and mins quantised to 6 bits against
// the block's d, dmin. Q4_K: d | dmin | scales[12] | qs[128]; Q5_K puts qh[32] (the
// 5th bits: bit j of qh[l] for element l of sub-block j) before qs.
function quantizeK(x: Float32Array, s: number, dst: Uint8Array, o: number, dv: DataView, bits: 4 | 5): void {
  const top = (1 << bits) - 1;
  const scales = new Float32Array(8), mins = new Float32Array(8);
  for (let j = 0; j < 8; j++) {
    let lo = 0, hi = 0;
    for (let l = 0; l < 32; l++) {
      const v = x[s + 32 * j + l];
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    scales[j] = (hi - lo) / top;
    mins[j] = -lo;
  }
  const maxS = Math.max(...scales), maxM = Math.max(...mins);
  const d = F16_TO_F32[f32ToF16(maxS / 63)], dmin = F16_TO_F32[f32ToF16(maxM / 63)];
  const sc = new Uint8Array(8), mn = new Uint8Array(8);
  for (let j = 0; j < 8; j++) {
    sc[j] = d > 0 ? Math.min(63, Math.max(0, Math.ceil(scales[j] / d))) : 0;
    mn[j] = dmin > 0 ? Math.min(63, Math.max(0, Math.round(mins[j] / dmin))) : 0;
  }
  dv.setUint16(o, f32ToF16(d), true);
  dv.setUint16(o + 2, f32ToF16(dmin), true);
  for (let j = 0; j < 4; j++) {
    dst[o + 4 + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
    dst[o + 4 + j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6);
    dst[o + 4 + j + 8] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4);
  }
  const q = new Uint8Array(256);
  for (let j = 0; j < 8; j++) {
    const step = d * sc[j], m = dmin * mn[j];
    for (let l = 0; l < 32; l++) {
      const v = x[s + 32 * j + l];
      q[32 * j + l] = step > 0 ? Math.min(top, Math.max(0, Math.round((v + m) / step))) : 0;
    }
  }
  const qs = o + (bits === 5 ? 48 : 16);
  if (bits === 5) dst.fill(0, o + 16, o + 48);
  for (let c = 0; c < 4; c++)
    for (let l = 0; l < 32; l++) {
      const a = q[64 * c + l], b = q[64 * c + 32 + l];
      dst[qs + 32 * c + l] = (a & 0xf) | ((b & 0xf) << 4);
      if (bits === 5) dst[o + 16 + l] |= ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1));
    }
}

// A simple, valid Q2_K encoder: per 16 elements an affine grid of 4 levels from the
// minimum (at most 0), its scale and min quantised to 4 bits against d and dmin.
function quantizeQ2K(x: Float32Array, s: number, dst: Uint8Array, o: number, dv: DataView): void {
  const scales = new Float32Array(16), mins = new Float32Array(16);
  for (let j = 0; j < 16; j++) {
    let lo = 0, hi = 0;
    for (let l = 0; l < 16; l++) (lo = Math.min(lo, x[s + 16 * j + l])), (hi = Math.max(hi, x[s + 16 * j + l]));
    scales[j] = (hi - lo) / 3;
    mins[j] = -lo;
  }
  const d = F16_TO_F32[f32ToF16(Math.max(...scales) / 15)], dmin = F16_TO_F32[f32ToF16(Math.max(...mins) / 15)];
  dst.fill(0, o, o + 84);
  dv.setUint16(o + 80, f32ToF16(d), true);
  dv.setUint16(o + 82, f32ToF16(dmin), true);
  for (let j = 0; j < 16; j++) {
    const sc = d > 0 ? Math.min(15, Math.ceil(scales[j] / d)) : 0;
    const mn = dmin > 0 ? Math.min(15, Math.round(mins[j] / dmin)) : 0;
    dst[o + j] = sc | (mn << 4);
    const step = d * sc, m = dmin * mn;
    for (let l = 0; l < 16; l++) {
      const e = 16 * j + l, v = step > 0 ? Math.min(3, Math.max(0, Math.round((x[s + e] + m) / step))) : 0;
      dst[o + 16 + 32 * (e >> 7) + (e & 31)] |= v << (2 * ((e >> 5) & 3));
    }
  }
}

// A simple, valid Q3_K encoder: per 16 elements a symmetric scale (the largest
// magnitude maps to -4, as ggml's), the scales quantised to 6 bits (-32..31) against d.
function quantizeQ3K(x: Float32Array, s: number, dst: Uint8Array, o: number, dv: DataView): void {
  const sub = new Float32Array(16);
  let maxScale = 0;
  for (let j = 0; j < 16; j++) {
    sub[j] = signedMax(x, s + 16 * j, 16) / -4;
    if (Math.abs(sub[j]) > Math.abs(maxScale)) maxScale = sub[j];
  }
  const iscale = maxScale ? -32 / maxScale : 0;
  const d = F16_TO_F32[f32ToF16(iscale ? 1 / iscale : 0)];
  dst.fill(0, o, o + 110);
  dv.setUint16(o + 108, f32ToF16(d), true);
  for (let j = 0; j < 16; j++) {
    const L = Math.max(-32, Math.min(31, Math.round(iscale * sub[j])));
    const u = L + 32;
    dst[o + 96 + (j & 7)] |= (u & 0xf) << (j < 8 ? 0 : 4);
    dst[o + 96 + 8 + (j & 3)] |= (u >> 4) << (2 * (j >> 2));
    const step = d * L;
    for (let l = 0; l < 16; l++) {
      const e = 16 * j + l, v = (step !== 0 ? Math.max(-4, Math.min(3, Math.round(x[s + e] / step))) : 0) + 4;
      const n = e >> 7, k = (e >> 5) & 3, i = e & 31;
      dst[o + 32 + 32 * n + i] |= (v & 3) << (2 * k);
      dst[o + i] |= (v >> 2) << (4 * n + k);
    }
  }
}

// 32 values to the nearest of IQ4_LEVELS times d, as nibbles (i | i + 16 << 4) at dst[o..o+16).
function quantizeIQ4(x: Float32Array, s: number, d: number, dst: Uint8Array, o: number): void {
  if (d === 0) return void dst.fill(0x88, o, o + 16);
  // the levels in increasing order of value (d may be negative) and the midpoints between them
  const order = d > 0 ? IQ4_ORDER : IQ4_ORDER_REVERSED, mid = new Float64Array(15);
  for (let k = 0; k < 15; k++) mid[k] = (d * IQ4_LEVELS[order[k]] + d * IQ4_LEVELS[order[k + 1]]) / 2;
  const nearest = (v: number) => {
    let k = 0;
    while (k < 15 && v > mid[k]) k++;
    return order[k];
  };
  for (let i = 0; i < 16; i++) dst[o + i] = nearest(x[s + i]) | (nearest(x[s + i + 16]) << 4);
}
const IQ4_ORDER = Array.from({ length: 16 }, (_, k) => k), IQ4_ORDER_REVERSED = IQ4_ORDER.slice().reverse();

// IQ4_XS: per 32 elements the scale that maps the largest magnitude to -127, the
// scales quantised to 6 bits (-32..31) against d = -(largest scale) / 32, as ggml's.
function quantizeIQ4XS(x: Float32Array, s: number, dst: Uint8Array, o: number, dv: DataView): void {
  const sub = new Float32Array(8);
  let maxScale = 0;
  for (let j = 0; j < 8; j++) {
    sub[j] = signedMax(x, s + 32 * j, 32) / IQ4_LEVELS[0];
    if (Math.abs(sub[j]) > Math.abs(maxScale)) maxScale = sub[j];
  }
  const d = F16_TO_F32[f32ToF16(-maxScale / 32)];
  dv.setUint16(o, f32ToF16(d), true);
  let sh = 0;
  dst.fill(0, o + 4, o + 8);
  for (let j = 0; j < 8; j++) {
    const L = d !== 0 ? Math.max(-32, Math.min(31, Math.round(sub[j] / d))) : 0;
    dst[o + 4 + (j >> 1)] |= ((L + 32) & 0xf) << (4 * (j & 1));
    sh |= ((L + 32) >> 4) << (2 * j);
    quantizeIQ4(x, s + 32 * j, fr(d * L), dst, o + 8 + 16 * j);
  }
  dv.setUint16(o + 2, sh, true);
}

// A simple, valid Q6_K encoder: symmetric 6-bit values, int8 sub-block scales.
function quantizeQ6K(x: Float32Array, s: number, dst: Uint8Array, o: number, dv: DataView): void {
  const sub = new Float32Array(16);
  for (let j = 0; j < 16; j++) {
    let amax = 0;
    for (let l = 0; l < 16; l++) amax = Math.max(amax, Math.abs(x[s + 16 * j + l]));
    sub[j] = amax / 31;
  }
  const d = F16_TO_F32[f32ToF16(Math.max(...sub) / 127)];
  const sc = new Int8Array(16);
  for (let j = 0; j < 16; j++) sc[j] = d > 0 ? Math.min(127, Math.max(-128, Math.ceil(sub[j] / d))) : 0;
  dv.setUint16(o + 208, f32ToF16(d), true);
  for (let j = 0; j < 16; j++) dv.setInt8(o + 192 + j, sc[j]);
  const q = new Uint8Array(256);
  for (let e = 0; e < 256; e++) {
    const step = d * sc[e >> 4];
    q[e] = (step !== 0 ? Math.min(31, Math.max(-32, Math.round(x[s + e] / step))) : 0) + 32;
  }
  dst.fill(0, o, o + 192);
  for (let n = 0; n < 2; n++)
    for (let l = 0; l < 32; l++) {
      const q1 = q[128 * n + l], q2 = q[128 * n + l + 32], q3 = q[128 * n + l + 64], q4 = q[128 * n + l + 96];
      dst[o + 64 * n + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
      dst[o + 64 * n + l + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
      dst[o + 128 + 32 * n + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
    }
}
