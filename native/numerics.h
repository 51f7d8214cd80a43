// Our transcendental functions, operation for operation as specified in
// src/kernels/ref/numerics.ts (read that file for the why and the error bounds):
// binary64 +, -, *, / in the same order, rounding to an integer by adding and
// subtracting 1.5 * 2^52, exact scalings by 2^k, no fused multiply-add (every
// file including this one is compiled with -ffp-contract=off and without
// -ffast-math: see binding.gyp). No libm function is called, so every compiler,
// C library and CPU gives the same bits (src/kernels/crossbuild.test.ts).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__FAST_MATH__)
#error "layerswarm's numerics need IEEE arithmetic: do not compile with -ffast-math"
#endif
#if defined(__FLT_EVAL_METHOD__) && __FLT_EVAL_METHOD__ != 0
#error "layerswarm's numerics need float and double evaluated in their own precision (no x87 excess precision)"
#endif

namespace lsnum {

static inline double from_bits(uint64_t b) { double d; memcpy(&d, &b, 8); return d; }
static inline uint64_t to_bits(double d) { uint64_t b; memcpy(&b, &d, 8); return b; }

// the bits of numerics.ts's constants, as hexadecimal literals (exact)
constexpr double LOG2E = 0x1.71547652b82fep+0;     // 3ff71547 652b82fe
constexpr double LN2_HI = 0x1.62e42fee00000p-1;    // 3fe62e42 fee00000
constexpr double LN2_LO = 0x1.a39ef35793c76p-33;   // 3dea39ef 35793c76
constexpr double INV_PIO2 = 0x1.45f306dc9c883p-1;  // 3fe45f30 6dc9c883
constexpr double PIO2_1 = 0x1.921fb54400000p+0;    // 3ff921fb 54400000
constexpr double PIO2_2 = 0x1.0b4611a600000p-34;   // 3dd0b461 1a600000
constexpr double PIO2_2T = 0x1.3198a2e037073p-69;  // 3ba3198a 2e037073
constexpr double SQRT2 = 0x1.6a09e667f3bcdp+0;     // 3ff6a09e 667f3bcd
constexpr double ROUND = 0x1.8p+52;                // 43380000 00000000: 1.5 * 2^52
constexpr double TRIG_MAX = 1048576.0;             // 2^20

// Coefficients: the same IEEE divisions in the same order as numerics.ts (evaluated
// at compile time, which rounds like the run-time operations).
struct Coefficients {
  double exp[14], log[12], sin[8], cos[9];
  constexpr Coefficients() : exp(), log(), sin(), cos() {
    exp[0] = 1;
    for (int n = 1; n <= 13; n++) exp[n] = exp[n - 1] / n;
    for (int n = 0; n < 12; n++) log[n] = 1.0 / (2 * n + 1);
    sin[0] = 1;
    for (int n = 1; n <= 7; n++) sin[n] = -sin[n - 1] / (2 * n * (2 * n + 1));
    cos[0] = 1;
    for (int n = 1; n <= 8; n++) cos[n] = -cos[n - 1] / ((2 * n - 1) * (2 * n));
  }
};
static constexpr Coefficients C{};

// 2^k, k an integer in [-1022, 1023] (exact)
static inline double pow2(double k) { return from_bits((uint64_t)((int64_t)k + 1023) << 52); }

static inline double expd(double x) {
  const double k = (x * LOG2E + ROUND) - ROUND;
  const double r = (x - k * LN2_HI) - k * LN2_LO;
  double p = C.exp[13];
  for (int n = 12; n >= 0; n--) p = p * r + C.exp[n];
  return p * pow2(k);
}

// e^x for f32 x rounded to f32 (clamped to [-104, 89]; NaN stays NaN)
static inline float expf(float x) {
  const float c = x < -104.0f ? -104.0f : x > 89.0f ? 89.0f : x;
  if (c != c) return c;
  return (float)expd((double)c);
}

static inline double logd(double x) {
  if (!(x >= 2.2250738585072014e-308 && x <= 1.7976931348623157e308)) return from_bits(0x7ff8000000000000ull);
  double e = (double)(int)(((to_bits(x) >> 52) & 0x7ff) - 1023);
  double m = x * pow2(-e);
  if (m > SQRT2) {
    m = m * 0.5;
    e = e + 1;
  }
  const double s = (m - 1) / (m + 1), s2 = s * s;
  double p = C.log[11];
  for (int n = 10; n >= 0; n--) p = p * s2 + C.log[n];
  return e * LN2_HI + (e * LN2_LO + 2 * s * p);
}

static inline float powf(double b, double e) { return (float)expd(e * logd(b)); }

static inline void sincosd(double x, double& sn, double& cs) {
  if (!(x >= -TRIG_MAX && x <= TRIG_MAX)) {
    sn = cs = from_bits(0x7ff8000000000000ull);
    return;
  }
  const double k = (x * INV_PIO2 + ROUND) - ROUND;
  const double r = ((x - k * PIO2_1) - k * PIO2_2) - k * PIO2_2T;
  const double r2 = r * r;
  double p = C.sin[7];
  for (int n = 6; n >= 0; n--) p = p * r2 + C.sin[n];
  const double s = r * p;
  double q = C.cos[8];
  for (int n = 7; n >= 0; n--) q = q * r2 + C.cos[n];
  const double c = q;
  switch ((int64_t)k & 3) {
    case 0: sn = s; cs = c; break;
    case 1: sn = c; cs = -s; break;
    case 2: sn = -s; cs = -c; break;
    default: sn = -c; cs = s; break;
  }
}

// RoPE frequencies and one position's cos/sin table, as ref/ops.ts ropeFreqs and ropeTable.
static inline void rope_freqs(int ropeDim, double base, const float* factors, float* freqs) {
  for (int i = 0; i < ropeDim / 2; i++) {
    float freq = 1.0f / powf(base, (double)((float)(2 * i) / (float)ropeDim));
    if (factors) freq = freq / factors[i];
    freqs[i] = freq;
  }
}
// false when an angle is beyond TRIG_MAX (the reference throws)
static inline bool rope_table(double pos, int ropeDim, const float* freqs, float* cos, float* sin) {
  for (int i = 0; i < ropeDim / 2; i++) {
    const float val = (float)(pos * (double)freqs[i]);
    if (!(val >= -TRIG_MAX && val <= TRIG_MAX)) return false;
    double s, c;
    sincosd(val, s, c);
    cos[i] = (float)c;
    sin[i] = (float)s;
  }
  return true;
}

}  // namespace lsnum
