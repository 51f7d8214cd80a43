// Half-precision conversions. f16 (IEEE binary16) and bf16 (top 16 bits of f32).
// Both directions are exact where the value is representable; f32 -> f16/bf16
// rounds to nearest even, as ggml does.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

// f16 bits -> f32 value; a 65536-entry table, built once.
export const F16_TO_F32: Float32Array = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    let bits: number;
    if (exp === 0) {
      if (mant === 0) bits = sign;
      else {
        // subnormal: normalise
        let e = -1;
        let m = mant;
        do {
          e++;
          m <<= 1;
        } while ((m & 0x400) === 0);
        bits = sign | ((127 - 15 - e) << 23) | ((m & 0x3ff) << 13);
      }
    } else if (exp === 31) bits = sign | 0x7f800000 | (mant << 13);
    else bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    u32[0] = bits >>> 0;
    t[h] = f32[0];
  }
  return t;
})();

export function f16ToF32(h: number): number {
  return F16_TO_F32[h & 0xffff];
}

// f32 -> f16 bits, round to nearest even.
export function f32ToF16(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

export function bf16ToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0];
}

export function f32ToBf16(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff; // quiet NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}
