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
  [GGMLType.Q4_K]: { name: "Q4_K", blockSize: 256, typeSize: 144, supported: true },
  [GGMLType.Q6_K]: { name: "Q6_K", blockSize: 256, typeSize: 210, supported: true },
  // Known, so that files holding them can be inspected, but not computed with.
  [GGMLType.Q4_1]: { name: "Q4_1", blockSize: 32, typeSize: 20, supported: false },
  [GGMLType.Q5_0]: { name: "Q5_0", blockSize: 32, typeSize: 22, supported: false },
  [GGMLType.Q5_1]: { name: "Q5_1", blockSize: 32, typeSize: 24, supported: false },
  [GGMLType.Q8_1]: { name: "Q8_1", blockSize: 32, typeSize: 36, supported: false },
  [GGMLType.Q2_K]: { name: "Q2_K", blockSize: 256, typeSize: 84, supported: false },
  [GGMLType.Q3_K]: { name: "Q3_K", blockSize: 256, typeSize: 110, supported: false },
  [GGMLType.Q5_K]: { name: "Q5_K", blockSize: 256, typeSize: 176, supported: false },
  [GGMLType.Q8_K]: { name: "Q8_K", blockSize: 256, typeSize: 292, supported: false },
};

export function typeInfo(type: number): TypeInfo | undefined {
  return INFO[type];
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

// Q4_K packs eight 6-bit (scale, min) pairs into 12 bytes.
export function scaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j] & 63, q[o + j + 4] & 63];
  return [(q[o + j + 4] & 0xf) | ((q[o + j - 4] >> 6) << 4), (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4)];
}

const fr = Math.fround;

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
    case GGMLType.Q8_0:
      for (let b = 0; b < n / 32; b++) {
        const o = off + b * 34;
        const d = F16_TO_F32[dv.getUint16(o, true)];
        for (let i = 0; i < 32; i++) dst[dOff + b * 32 + i] = fr(d * dv.getInt8(o + 2 + i));
      }
      return;
    case GGMLType.Q4_0:
      for (let b = 0; b < n / 32; b++) {
        const o = off + b * 18;
        const d = F16_TO_F32[dv.getUint16(o, true)];
        for (let i = 0; i < 16; i++) {
          const q = src[o + 2 + i];
          dst[dOff + b * 32 + i] = fr(d * ((q & 0xf) - 8));
          dst[dOff + b * 32 + i + 16] = fr(d * ((q >> 4) - 8));
        }
      }
      return;
    case GGMLType.Q4_K:
      for (let b = 0; b < n / 256; b++) {
        const o = off + b * 144;
        const d = F16_TO_F32[dv.getUint16(o, true)];
        const dmin = F16_TO_F32[dv.getUint16(o + 2, true)];
        const y = dOff + b * 256;
        for (let c = 0; c < 4; c++) {
          const [s1, m1] = scaleMinK4(2 * c, src, o + 4);
          const [s2, m2] = scaleMinK4(2 * c + 1, src, o + 4);
          const d1 = fr(d * s1), mm1 = fr(dmin * m1), d2 = fr(d * s2), mm2 = fr(dmin * m2);
          for (let l = 0; l < 32; l++) {
            const q = src[o + 16 + 32 * c + l];
            dst[y + 64 * c + l] = fr(fr(d1 * (q & 0xf)) - mm1);
            dst[y + 64 * c + 32 + l] = fr(fr(d2 * (q >> 4)) - mm2);
          }
        }
      }
      return;
    case GGMLType.Q6_K:
      for (let b = 0; b < n / 256; b++) {
        const o = off + b * 210;
        const d = F16_TO_F32[dv.getUint16(o + 208, true)];
        const y = dOff + b * 256;
        for (let e = 0; e < 256; e++) {
          const q = q6At(src, o, e);
          dst[y + e] = fr(fr(d * dv.getInt8(o + 192 + (e >> 4))) * q);
        }
      }
      return;
    default:
      throw new LayerswarmError("UNSUPPORTED", `cannot dequantise ggml type ${typeName(type)}`);
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
    case GGMLType.Q4_K:
      for (let b = 0; b < n / 256; b++) quantizeQ4K(src, sOff + b * 256, dst, off + b * 144, dv);
      return;
    case GGMLType.Q6_K:
      for (let b = 0; b < n / 256; b++) quantizeQ6K(src, sOff + b * 256, dst, off + b * 210, dv);
      return;
    default:
      throw new LayerswarmError("UNSUPPORTED", `cannot quantise to ggml type ${typeName(type)}`);
  }
}

// A simple, valid Q4_K encoder: per 32-element sub-block an affine (scale, min)
// grid, the sub-block scales and mins quantised to 6 bits against the block's d, dmin.
function quantizeQ4K(x: Float32Array, s: number, dst: Uint8Array, o: number, dv: DataView): void {
  const scales = new Float32Array(8), mins = new Float32Array(8);
  for (let j = 0; j < 8; j++) {
    let lo = 0, hi = 0;
    for (let l = 0; l < 32; l++) {
      const v = x[s + 32 * j + l];
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    scales[j] = (hi - lo) / 15;
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
      q[32 * j + l] = step > 0 ? Math.min(15, Math.max(0, Math.round((v + m) / step))) : 0;
    }
  }
  for (let c = 0; c < 4; c++)
    for (let l = 0; l < 32; l++) dst[o + 16 + 32 * c + l] = q[64 * c + l] | (q[64 * c + 32 + l] << 4);
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
