// Our own transcendental functions: the specification of exp, log, pow, sin and
// cos for every kernel (attention's softmax, SiLU, RoPE tables).
//
// Why: exact audits compare hidden states bit for bit, so honest nodes must agree
// to the bit on any machine. Math.exp/sin/cos/pow (V8) and the C library's exp
// (glibc, macOS, musl, MSVC) each round the last bit in their own way. These
// functions use only IEEE-754 binary64 +, -, *, /, floor-free rounding by a
// magic constant, comparisons and exact scalings by powers of two, in a fixed
// order, with no fused multiply-add (JavaScript has none; the C++ build uses
// -ffp-contract=off). native/numerics.h and native/kernels_impl.h repeat them
// operation for operation; src/kernels/crossbuild.test.ts proves the builds equal.
//
// Accuracy (src/kernels/ref/numerics.test.ts): the f32 results are the correctly
// rounded value of the exact function except where the exact value lies within
// about 1e-16 (relative) of a point halfway between two f32 numbers.

const fr = Math.fround;

// Doubles given by their bits, so that no decimal parsing is involved anywhere.
const scratch = new DataView(new ArrayBuffer(8));
export function fromBits(hi: number, lo: number): number {
  scratch.setUint32(0, hi >>> 0);
  scratch.setUint32(4, lo >>> 0);
  return scratch.getFloat64(0);
}
export function toBits(x: number): string {
  scratch.setFloat64(0, x);
  return scratch.getUint32(0).toString(16).padStart(8, "0") + scratch.getUint32(4).toString(16).padStart(8, "0");
}

export const LOG2E = fromBits(0x3ff71547, 0x652b82fe); // log2(e)
export const LN2_HI = fromBits(0x3fe62e42, 0xfee00000); // ln 2, first 32 bits: k * LN2_HI is exact for |k| < 2^21
export const LN2_LO = fromBits(0x3dea39ef, 0x35793c76); // ln 2 - LN2_HI
export const INV_PIO2 = fromBits(0x3fe45f30, 0x6dc9c883); // 2/pi
export const PIO2_1 = fromBits(0x3ff921fb, 0x54400000); // pi/2, first 33 bits
export const PIO2_2 = fromBits(0x3dd0b461, 0x1a600000); // next 33 bits
export const PIO2_2T = fromBits(0x3ba3198a, 0x2e037073); // pi/2 - PIO2_1 - PIO2_2
export const SQRT2 = fromBits(0x3ff6a09e, 0x667f3bcd);
// 1.5 * 2^52: (y + ROUND) - ROUND rounds y to the nearest integer (ties to even) for |y| < 2^51
export const ROUND = fromBits(0x43380000, 0);

// Polynomial coefficients, computed by IEEE divisions in this order (C++: the same loops, constexpr).
export const EXP_C: readonly number[] = (() => { // 1/n!, n = 0..13
  const c = [1];
  for (let n = 1; n <= 13; n++) c.push(c[n - 1] / n);
  return c;
})();
export const LOG_C: readonly number[] = Array.from({ length: 12 }, (_, n) => 1 / (2 * n + 1)); // 1/(2n+1)
export const SIN_C: readonly number[] = (() => { // (-1)^n / (2n+1)!, n = 0..7
  const c = [1];
  for (let n = 1; n <= 7; n++) c.push(-c[n - 1] / (2 * n * (2 * n + 1)));
  return c;
})();
export const COS_C: readonly number[] = (() => { // (-1)^n / (2n)!, n = 0..8
  const c = [1];
  for (let n = 1; n <= 8; n++) c.push(-c[n - 1] / ((2 * n - 1) * (2 * n)));
  return c;
})();

// 2^k for integer k in [-1022, 1023], exact (doublings and halvings of 1).
const POW2_OFF = 1022;
const POW2 = (() => {
  const t = new Float64Array(1022 + 1024);
  t[POW2_OFF] = 1;
  for (let k = 1; k <= 1023; k++) t[POW2_OFF + k] = t[POW2_OFF + k - 1] * 2;
  for (let k = -1; k >= -1022; k--) t[POW2_OFF + k] = t[POW2_OFF + k + 1] * 0.5;
  return t;
})();
export function pow2(k: number): number {
  return POW2[POW2_OFF + k];
}

// e^x in binary64 for |x| <= 700: x = k ln2 + r, |r| <= ln2/2, e^r by its Taylor
// polynomial of degree 13 (Horner), scaled by 2^k.
export function expd(x: number): number {
  const k = (x * LOG2E + ROUND) - ROUND;
  const r = (x - k * LN2_HI) - k * LN2_LO;
  let p = EXP_C[13];
  for (let n = 12; n >= 0; n--) p = p * r + EXP_C[n];
  return p * pow2(k);
}

// e^x for an f32 x, rounded to f32. Inputs are clamped to [-104, 89] first (e^-104
// rounds to 0 and e^89 to Infinity in f32); NaN stays NaN.
export function expf(x: number): number {
  const c = x < -104 ? -104 : x > 89 ? 89 : x;
  if (c !== c) return NaN;
  return fr(expd(c));
}

// ln x in binary64 for a normal, finite x > 0: x = 2^e m with m in [sqrt(1/2), sqrt(2)),
// ln m = 2 atanh(s), s = (m-1)/(m+1), by its series to s^23. NaN otherwise.
export function logd(x: number): number {
  if (!(x >= 2.2250738585072014e-308 && x <= 1.7976931348623157e308)) return NaN;
  scratch.setFloat64(0, x);
  let e = ((scratch.getUint32(0) >>> 20) & 0x7ff) - 1023;
  let m = x * pow2(-e);
  if (m > SQRT2) {
    m = m * 0.5;
    e = e + 1;
  }
  const s = (m - 1) / (m + 1), s2 = s * s;
  let p = LOG_C[11];
  for (let n = 10; n >= 0; n--) p = p * s2 + LOG_C[n];
  return e * LN2_HI + (e * LN2_LO + 2 * s * p);
}

// b^e for b > 0 (normal, finite) and |e ln b| <= 700, rounded to f32; NaN when b is not.
export function powf(b: number, e: number): number {
  return fr(expd(e * logd(b)));
}

// x = k pi/2 + r, |r| <= pi/4 (plus rounding), for |x| <= 2^20: k * PIO2_1 and
// k * PIO2_2 are exact and x - k * PIO2_1 is exact (Sterbenz), so r carries the
// relative error of two roundings even when x is close to a multiple of pi/2.
export const TRIG_MAX = 1048576; // 2^20
function sinPoly(r: number, r2: number): number {
  let p = SIN_C[7];
  for (let n = 6; n >= 0; n--) p = p * r2 + SIN_C[n];
  return r * p;
}
function cosPoly(r2: number): number {
  let p = COS_C[8];
  for (let n = 7; n >= 0; n--) p = p * r2 + COS_C[n];
  return p;
}
// sin and cos of x (binary64, |x| <= TRIG_MAX) into out[0], out[1]; NaN beyond.
export function sincosd(x: number, out: Float64Array): void {
  if (!(x >= -TRIG_MAX && x <= TRIG_MAX)) {
    out[0] = NaN;
    out[1] = NaN;
    return;
  }
  const k = (x * INV_PIO2 + ROUND) - ROUND;
  const r = ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_2T;
  const r2 = r * r;
  const s = sinPoly(r, r2), c = cosPoly(r2);
  const q = k & 3; // k is an integer with |k| < 2^20; & 3 of a negative one is its value mod 4
  out[0] = q === 0 ? s : q === 1 ? c : q === 2 ? -s : -c;
  out[1] = q === 0 ? c : q === 1 ? -s : q === 2 ? -c : s;
}
const sc = new Float64Array(2);
export function sinf(x: number): number {
  sincosd(x, sc);
  return fr(sc[0]);
}
export function cosf(x: number): number {
  sincosd(x, sc);
  return fr(sc[1]);
}
