// Fast kernels, written once with GCC vector extensions and compiled twice:
// for AVX-512 (kernels_avx512.cc) and for any x86-64/ARM CPU (kernels_generic.cc).
// They reproduce src/kernels/ref/*.ts bit for bit: every f32 operation is the
// same IEEE operation in the same order (compiled with -ffp-contract=off, no
// fast-math), only many independent dot products run side by side in SIMD lanes.
//
// Weight layout ("packed", made once at load): rows are taken in groups of 16
// (padded with zero rows); within a group, element j of all 16 rows is stored
// together, so one vector load gives 16 rows' weights for column j and each lane
// accumulates its own row's dot product sequentially over j, exactly as the
// scalar reference does.
//
//   F32   per group: [cols][16] f32
//   F16   per group: [cols][16] u16 (binary16 bits)
//   BF16  per group: [cols][16] u16
//   Quantised types keep elements in pairs (2p, 2p+1), the unit of VNNI's
//   vpdpwssd, which multiplies a lane's two int16 weights by two int16 activations:
//   Q8_0  per group, per 32-block:  d[16] f16 | q[16 pairs][16 rows][2] i8                  544 bytes
//   Q4_0  per group, per 32-block:  d[16] f16 | q[16 pairs][16 rows] u8 (lo | hi << 4)      288 bytes
//   Q4_K  per group, per 256-block: d[16] f16 | dmin[16] f16 | sc[8][16] u8 | m[8][16] u8 |
//                                   q[128 pairs][16 rows] u8 (lo | hi << 4)                 2368 bytes
//   Q6_K  per group, per 256-block: d[16] f16 | sc[16][16] i8 | q[128 pairs][16 rows][2] i8  4384 bytes
//   Activations are quantised per 32-block to int16 (see ref/matmul.ts quantizeQ16).

#include <cstdint>
#include <cstring>
#include <cmath>
#ifdef KNS_AVX512
#include <immintrin.h>
#endif

namespace KNS {

typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef int8_t i8x16 __attribute__((vector_size(16)));
typedef uint8_t u8x16 __attribute__((vector_size(16)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));

static inline f32x16 ld(const float* p) { f32x16 v; memcpy(&v, p, 64); return v; }
static inline void st(float* p, f32x16 v) { memcpy(p, &v, 64); }
static inline f32x16 bcast(float x) { return f32x16{} + x; }
#ifdef KNS_AVX512
// GCC turns the generic byte widening below into scalar code: use the instructions.
static inline f32x16 i8tof(const int8_t* p) { return (f32x16)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p))); }
static inline i32x16 u8toi(const uint8_t* p) { return (i32x16)_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p)); }
#else
static inline f32x16 i8tof(const int8_t* p) { i8x16 v; memcpy(&v, p, 16); return __builtin_convertvector(__builtin_convertvector(v, i32x16), f32x16); }
static inline i32x16 u8toi(const uint8_t* p) { u8x16 v; memcpy(&v, p, 16); return __builtin_convertvector(__builtin_convertvector(v, u32x16), i32x16); }
#endif
static inline f32x16 itof(i32x16 v) { return __builtin_convertvector(v, f32x16); }
static inline f32x16 bits(u32x16 v) { f32x16 f; memcpy(&f, &v, 64); return f; }

// binary16 -> f32, exact for finite values: move exponent and mantissa into
// place, rescale by 2^112 (exact), restore the sign.
static inline f32x16 f16tof(const uint16_t* p) {
#ifdef KNS_AVX512
  u32x16 w = (u32x16)_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
#else
  u16x16 h; memcpy(&h, p, 32);
  u32x16 w = __builtin_convertvector(h, u32x16);
#endif
  f32x16 mag = bits((w & 0x7fffu) << 13) * bcast(0x1p112f);
  u32x16 m; memcpy(&m, &mag, 64);
  return bits(m | ((w & 0x8000u) << 16));
}
static inline f32x16 bf16tof(const uint16_t* p) {
#ifdef KNS_AVX512
  return bits((u32x16)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
#else
  u16x16 h; memcpy(&h, p, 32);
  return bits(__builtin_convertvector(h, u32x16) << 16);
#endif
}

// acc[g][t] += w(g, j) * x[t][j] for j in [0, n), sequentially in j. The weights
// are dequantised in registers by `w` (exactly as format/quant.ts specifies) and
// each is used for all TT activation rows of the tile.
template <int G, int TT, typename W>
static inline __attribute__((always_inline)) void dot(W w, int n, const float* x, int xstride, f32x16 (&acc)[G][TT]) {
  for (int j = 0; j < n; j++) {
    f32x16 wv[G];
    for (int g = 0; g < G; g++) wv[g] = w(g, j);
    for (int t = 0; t < TT; t++) {
      f32x16 xb = bcast(x[t * xstride + j]);
      for (int g = 0; g < G; g++) acc[g][t] = acc[g][t] + wv[g] * xb;
    }
  }
}

// Bytes of one 16-row group's packed block, and the block size in columns.
static inline void block_geometry(int type, int& bsize, int& bbytes) {
  switch (type) {
    case 0: bsize = 16; bbytes = 16 * 16 * 4; return;   // F32: treat 16 columns as a "block"
    case 1: case 30: bsize = 16; bbytes = 16 * 16 * 2; return; // F16 / BF16
    case 8: bsize = 32; bbytes = 32 + 32 * 16; return;
    case 2: bsize = 32; bbytes = 32 + 16 * 16; return;
    case 12: bsize = 256; bbytes = 64 + 256 + 128 * 16; return;
    case 14: bsize = 256; bbytes = 32 + 256 + 256 * 16; return;
    default: bsize = 0; bbytes = 0;
  }
}

// Activations quantised to int16 per block of 32 (ref/matmul.ts quantizeQ16).
struct Q16 {
  const int16_t* q;  // (T, cols)
  const float* d;    // (T, cols/32)
  const int32_t* sum;  // (T, cols/32)
};

// acc (16 lanes of int32) += lane's int16 pair (w_lo, w_hi) . (x_lo, x_hi)
#ifdef KNS_AVX512
static inline i32x16 dp(i32x16 acc, i32x16 w, int32_t xpair) {
#ifdef KNS_VNNI
  return (i32x16)_mm512_dpwssd_epi32((__m512i)acc, (__m512i)w, _mm512_set1_epi32(xpair));
#else
  return (i32x16)_mm512_add_epi32((__m512i)acc, _mm512_madd_epi16((__m512i)w, _mm512_set1_epi32(xpair)));
#endif
}
// 32 int8 (16 rows x a pair) -> 16 lanes of int16 pairs
static inline i32x16 pairs_i8(const uint8_t* p) { return (i32x16)_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)p)); }
// 16 bytes (lo | hi << 4) -> 16 lanes of int16 pairs (lo, hi)
static inline i32x16 pairs_u4(const uint8_t* p) {
  __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p));
  return (i32x16)_mm512_and_si512(_mm512_or_si512(v, _mm512_slli_epi32(v, 12)), _mm512_set1_epi32(0x000F000F));
}
static inline f32x16 f16x16(const uint8_t* p) { return (f32x16)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
#else
static inline i32x16 dp(i32x16 acc, i32x16 w, int32_t xpair) {
  i32x16 lo = (w << 16) >> 16, hi = w >> 16;
  int32_t x0 = (int16_t)(xpair & 0xffff), x1 = xpair >> 16;
  return acc + lo * x0 + hi * x1;
}
static inline i32x16 pairs_i8(const uint8_t* p) {
  i32x16 r;
  for (int l = 0; l < 16; l++) r[l] = (int32_t)(uint16_t)(int16_t)(int8_t)p[2 * l] | ((int32_t)(int8_t)p[2 * l + 1] << 16);
  return r;
}
static inline i32x16 pairs_u4(const uint8_t* p) {
  i32x16 r;
  for (int l = 0; l < 16; l++) r[l] = (p[l] & 15) | ((p[l] >> 4) << 16);
  return r;
}
static inline f32x16 f16x16(const uint8_t* p) { return f16tof((const uint16_t*)p); }
#endif

static inline int32_t xpair(const int16_t* q, int j) { int32_t v; memcpy(&v, q + j, 4); return v; }

// isum[g][t] = sum over pairs p in [p0, p0+np) of w_g(p) . x_t(pair p)
template <int G, int TT, typename W>
static inline __attribute__((always_inline)) void idot(W w, int np, const int16_t* xq, int cols, i32x16 (&isum)[G][TT]) {
  for (int g = 0; g < G; g++) for (int t = 0; t < TT; t++) isum[g][t] = i32x16{};
  for (int p = 0; p < np; p++) {
    i32x16 wv[G];
    for (int g = 0; g < G; g++) wv[g] = w(g, p);
    for (int t = 0; t < TT; t++) {
      int32_t xp = xpair(xq + (size_t)t * cols, 2 * p);
      for (int g = 0; g < G; g++) isum[g][t] = dp(isum[g][t], wv[g], xp);
    }
  }
}

// One tile: G row groups (16 rows each) x TT activation rows, all column blocks.
template <int TYPE, int G, int TT>
static void tile(const uint8_t* packed, size_t groupBytes, int g0, int cols, const float* x, const Q16& xq, int t0, int T, float* out, int rows) {
  int bsize, bbytes;
  block_geometry(TYPE, bsize, bbytes);
  const int nb = (cols + bsize - 1) / bsize;  // float types: the last block may be partial
  const int nb32 = cols / 32;
  f32x16 acc[G][TT];
  for (int g = 0; g < G; g++) for (int t = 0; t < TT; t++) acc[g][t] = f32x16{};
  i32x16 isum[G][TT];
  for (int b = 0; b < nb; b++) {
    const uint8_t* p[G];
    for (int g = 0; g < G; g++) p[g] = packed + (g0 + g) * groupBytes + (size_t)b * bbytes;
    if (TYPE == 0 || TYPE == 1 || TYPE == 30) {
      const float* xb = x + (size_t)t0 * cols + (size_t)b * bsize;
      const int n = cols - b * bsize < bsize ? cols - b * bsize : bsize;
      if (TYPE == 0) dot<G, TT>([&](int g, int j) { return ld((const float*)p[g] + 16 * j); }, n, xb, cols, acc);
      if (TYPE == 1) dot<G, TT>([&](int g, int j) { return f16tof((const uint16_t*)p[g] + 16 * j); }, n, xb, cols, acc);
      if (TYPE == 30) dot<G, TT>([&](int g, int j) { return bf16tof((const uint16_t*)p[g] + 16 * j); }, n, xb, cols, acc);
      continue;
    }
    const int16_t* xb = xq.q + (size_t)t0 * cols + (size_t)b * bsize;
    if (TYPE == 8 || TYPE == 2) {  // Q8_0, Q4_0: acc += (dw*dx) * isum
      if (TYPE == 8) idot<G, TT>([&](int g, int pp) { return pairs_i8(p[g] + 32 + 32 * pp); }, 16, xb, cols, isum);
      else idot<G, TT>([&](int g, int pp) { return pairs_u4(p[g] + 32 + 16 * pp); }, 16, xb, cols, isum);
      for (int g = 0; g < G; g++) {
        f32x16 dw = f16x16(p[g]);
        for (int t = 0; t < TT; t++) {
          const size_t xi = (size_t)(t0 + t) * nb32 + b;
          i32x16 is = isum[g][t];
          if (TYPE == 2) is = is - 8 * xq.sum[xi];  // nibble - 8
          acc[g][t] = acc[g][t] + (dw * bcast(xq.d[xi])) * itof(is);
        }
      }
    } else if (TYPE == 12) {  // Q4_K: per 32-element sub-block
      for (int j = 0; j < 8; j++) {
        idot<G, TT>([&](int g, int pp) { return pairs_u4(p[g] + 320 + 16 * (16 * j + pp)); }, 16, xb + 32 * j, cols, isum);
        for (int g = 0; g < G; g++) {
          f32x16 dj = f16x16(p[g]) * itof(u8toi(p[g] + 64 + 16 * j));
          f32x16 mj = f16x16(p[g] + 32) * itof(u8toi(p[g] + 192 + 16 * j));
          for (int t = 0; t < TT; t++) {
            const size_t xi = (size_t)(t0 + t) * nb32 + b * 8 + j;
            f32x16 dx = bcast(xq.d[xi]);
            acc[g][t] = acc[g][t] + ((dj * dx) * itof(isum[g][t]) - (mj * dx) * bcast((float)xq.sum[xi]));
          }
        }
      }
    } else if (TYPE == 14) {  // Q6_K: per 16-element sub-block
      for (int s = 0; s < 16; s++) {
        idot<G, TT>([&](int g, int pp) { return pairs_i8(p[g] + 288 + 32 * (8 * s + pp)); }, 8, xb + 16 * s, cols, isum);
        for (int g = 0; g < G; g++) {
          f32x16 ds = f16x16(p[g]) * i8tof((const int8_t*)(p[g] + 32) + 16 * s);
          for (int t = 0; t < TT; t++) {
            const size_t xi = (size_t)(t0 + t) * nb32 + b * 8 + s / 2;
            acc[g][t] = acc[g][t] + (ds * bcast(xq.d[xi])) * itof(isum[g][t]);
          }
        }
      }
    }
  }
  for (int g = 0; g < G; g++)
    for (int t = 0; t < TT && t0 + t < T; t++) {
      alignas(64) float tmp[16];
      st(tmp, acc[g][t]);
      int r0 = (g0 + g) * 16;
      for (int r = 0; r < 16 && r0 + r < rows; r++) out[(size_t)(t0 + t) * rows + r0 + r] = tmp[r];
    }
}

template <int TYPE>
static void groups_typed(const uint8_t* packed, int rows, int cols, const float* x, const Q16& xq, int T, float* out, int ga, int gb) {
  int bsize, bbytes;
  block_geometry(TYPE, bsize, bbytes);
  const size_t gB = (size_t)((cols + bsize - 1) / bsize) * bbytes;
  int g = ga;
  if (T == 1) {
    for (; g + 4 <= gb; g += 4) tile<TYPE, 4, 1>(packed, gB, g, cols, x, xq, 0, 1, out, rows);
    for (; g < gb; g++) tile<TYPE, 1, 1>(packed, gB, g, cols, x, xq, 0, 1, out, rows);
    return;
  }
  // Registers: G x TT f32 accumulators (+ as many int32 sums for quantised types)
  // + G weight vectors. Float types: 4 x 4; quantised: 2 x 4 (fewer widenings per product than 4 x 2).
  constexpr bool F = TYPE == 0 || TYPE == 1 || TYPE == 30;
  constexpr int GG = F ? 4 : 2;
  for (; g + GG <= gb && T >= 4; g += GG) {
    int t = 0;
    for (; t + 4 <= T; t += 4) tile<TYPE, GG, 4>(packed, gB, g, cols, x, xq, t, T, out, rows);
    for (; t < T; t++) tile<TYPE, GG, 1>(packed, gB, g, cols, x, xq, t, T, out, rows);
  }
  for (; g + 4 <= gb; g += 4) {
    int t = 0;
    for (; t + 2 <= T; t += 2) tile<TYPE, 4, 2>(packed, gB, g, cols, x, xq, t, T, out, rows);
    for (; t < T; t++) tile<TYPE, 4, 1>(packed, gB, g, cols, x, xq, t, T, out, rows);
  }
  for (; g < gb; g++) {
    int t = 0;
    for (; t + 4 <= T; t += 4) tile<TYPE, 1, 4>(packed, gB, g, cols, x, xq, t, T, out, rows);
    for (; t < T; t++) tile<TYPE, 1, 1>(packed, gB, g, cols, x, xq, t, T, out, rows);
  }
}

// out (T, rows) = W @ x (T, cols) for the row groups [ga, gb).
void matmul_groups(int type, const uint8_t* packed, int rows, int cols, const float* x, const int16_t* xq, const float* xd, const int32_t* xs, int T, float* out, int ga, int gb) {
  const Q16 q{xq, xd, xs};
  switch (type) {
    case 0: return groups_typed<0>(packed, rows, cols, x, q, T, out, ga, gb);
    case 1: return groups_typed<1>(packed, rows, cols, x, q, T, out, ga, gb);
    case 30: return groups_typed<30>(packed, rows, cols, x, q, T, out, ga, gb);
    case 8: return groups_typed<8>(packed, rows, cols, x, q, T, out, ga, gb);
    case 2: return groups_typed<2>(packed, rows, cols, x, q, T, out, ga, gb);
    case 12: return groups_typed<12>(packed, rows, cols, x, q, T, out, ga, gb);
    case 14: return groups_typed<14>(packed, rows, cols, x, q, T, out, ga, gb);
  }
}

// Attention for one row and the heads [ha, hb); see ref/ops.ts attentionRow.
// K cache blocked: k[((t >> 4) * kvDim + e) * 16 + (t & 15)]; V cache: v[t * kvDim + e].
void attention_heads(float* out, const float* q, const float* kc, const float* vc, int pos, int nHeads, int nKV, int D, float* att, int ha, int hb) {
  const int kvDim = nKV * D, group = nHeads / nKV;
  const float scale = sqrtf((float)D);
  for (int h = ha; h < hb; h++) {
    const float* qh = q + h * D;
    const int kvo = (h / group) * D;
    float mx = -INFINITY;
    for (int blk = 0; blk * 16 <= pos; blk++) {
      f32x16 acc = f32x16{};
      const float* kb = kc + ((size_t)blk * kvDim + kvo) * 16;
      for (int i = 0; i < D; i++) acc = acc + bcast(qh[i]) * ld(kb + 16 * i);
      acc = acc / bcast(scale);
      alignas(64) float tmp[16];
      st(tmp, acc);
      for (int l = 0; l < 16 && blk * 16 + l <= pos; l++) {
        att[blk * 16 + l] = tmp[l];
        if (tmp[l] > mx) mx = tmp[l];
      }
    }
    float sum = 0;
    for (int t = 0; t <= pos; t++) {
      att[t] = (float)exp((double)(att[t] - mx));
      sum = sum + att[t];
    }
    for (int t = 0; t <= pos; t++) att[t] = att[t] / sum;
    float* oh = out + h * D;
    for (int i0 = 0; i0 < D; i0 += 16) {
      if (i0 + 16 <= D) {
        f32x16 acc = f32x16{};
        for (int t = 0; t <= pos; t++) acc = acc + bcast(att[t]) * ld(vc + (size_t)t * kvDim + kvo + i0);
        st(oh + i0, acc);
      } else {
        for (int i = i0; i < D; i++) {
          float a = 0;
          for (int t = 0; t <= pos; t++) a = a + att[t] * vc[(size_t)t * kvDim + kvo + i];
          oh[i] = a;
        }
      }
    }
  }
}

}  // namespace KNS
