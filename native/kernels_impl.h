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
//   Quantised types: one packed block (native/ggml.h) per 16-row group and ggml
//   block, values in pairs (2p, 2p+1), the unit of VNNI's vpdpwssd, which
//   multiplies a lane's two int16 weights by two int16 activations. Each type's
//   reader (struct Q<type> below) turns a packed block into 16 lanes of pairs and
//   per-sub-block scales; tile() sums them exactly as ref/matmul.ts does.
//   Activations are quantised per 32-block to int16 (see ref/matmul.ts quantizeQ16).

#include <cstdint>
#include <cstring>
#include <cmath>
#include "ggml.h"
#include "numerics.h"
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

// lsnum::expf (numerics.h, ref/numerics.ts expf) in 16 lanes: the same binary64
// operations lane by lane, so every lane equals the scalar function's result.
typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x8 __attribute__((vector_size(64)));
typedef int64_t i64x8 __attribute__((vector_size(64)));
static inline f32x16 sel(i32x16 m, f32x16 a, f32x16 b) {  // m ? a : b, lane by lane (m: 0 or -1)
  i32x16 ai, bi;
  memcpy(&ai, &a, 64);
  memcpy(&bi, &b, 64);
  const i32x16 r = (m & ai) | (~m & bi);
  f32x16 f;
  memcpy(&f, &r, 64);
  return f;
}
static inline f64x8 bcastd(double x) { return f64x8{} + x; }
static inline f32x8 expd8(f32x8 x) {
  const f64x8 d = __builtin_convertvector(x, f64x8);
  const f64x8 t = d * bcastd(lsnum::LOG2E) + bcastd(lsnum::ROUND);
  const f64x8 k = t - bcastd(lsnum::ROUND);
  const f64x8 r = (d - k * bcastd(lsnum::LN2_HI)) - k * bcastd(lsnum::LN2_LO);
  f64x8 p = bcastd(lsnum::C.exp[13]);
  for (int n = 12; n >= 0; n--) p = p * r + bcastd(lsnum::C.exp[n]);
  // 2^k from t's bits (1.5 * 2^52 + k holds k in its low bits): the same value as
  // lsnum::pow2(k), without a double -> int64 conversion (scalar before AVX-512)
  i64x8 tb;
  memcpy(&tb, &t, 64);
  const i64x8 e = (tb - (int64_t)0x4338000000000000ll + 1023) << 52;
  f64x8 p2;
  memcpy(&p2, &e, 64);
  return __builtin_convertvector(p * p2, f32x8);
}
static inline f32x16 exp16(f32x16 x) {
  f32x16 c = sel(x < bcast(-104.0f), bcast(-104.0f), x);
  c = sel(c > bcast(89.0f), bcast(89.0f), c);
  const i32x16 isnan = c != c;
  c = sel(isnan, bcast(0.0f), c);
  f32x8 h[2];
  memcpy(h, &c, 64);
  h[0] = expd8(h[0]);
  h[1] = expd8(h[1]);
  memcpy(&c, h, 64);
  return sel(isnan, x, c);
}

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

// Activations quantised to int16 per block of 32 (ref/matmul.ts quantizeQ16).
struct Q16 {
  const int16_t* q;  // (T, cols)
  const float* d;    // (T, cols/32)
  const int32_t* sum;  // (T, cols/32)
  const int32_t* sum16;  // (T, cols/16), for types with 16-element sub-blocks and a min or bias
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
static inline f32x16 f16x16(const uint16_t* p) { return (f32x16)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
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
static inline f32x16 f16x16(const uint16_t* p) { return f16tof(p); }
#endif

static inline int32_t xpair(const int16_t* q, int j) { int32_t v; memcpy(&v, q + j, 4); return v; }

// Words (native/ggml.h): one 32-bit word per lane.
static inline u32x16 ldw(const uint32_t* p) { u32x16 v; memcpy(&v, p, 64); return v; }
// pair i (0..3) of a nibble word: (even, odd) in 0..15
#ifdef KNS_AVX512
// Bit shifts of 512-bit vectors share port 0 with vpdpwssd; byte shifts (within
// 128-bit lanes, port 5) move pairs 2 and 3 down by 8 bits instead.
static inline i32x16 nibbles(const uint32_t* w, int i) {
  __m512i v = _mm512_loadu_si512(w);
  if (i >= 2) v = _mm512_bsrli_epi128(v, 1);
  if (i & 1) v = _mm512_srli_epi32(v, 4);
  return (i32x16)_mm512_and_si512(v, _mm512_set1_epi32(0x000F000F));
}
#else
static inline i32x16 nibbles(const uint32_t* w, int i) { return (i32x16)((ldw(w) >> (4 * i)) & 0x000F000Fu); }
#endif
// pair i of a nibble word of IQ4 level indexes: the levels (-127..113)
#ifdef KNS_AVX512
static inline i32x16 iq4_levels(const uint32_t* w, int i) {
  const __m512i table = _mm512_cvtepi8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)kvalues_iq4nl)));
  return (i32x16)_mm512_permutexvar_epi16((__m512i)nibbles(w, i), table);
}
#else
static inline i32x16 iq4_levels(const uint32_t* w, int i) {
  const i32x16 n = nibbles(w, i);
  i32x16 r;
  for (int l = 0; l < 16; l++) r[l] = (int32_t)(uint16_t)(int16_t)kvalues_iq4nl[n[l] & 15] | ((int32_t)kvalues_iq4nl[n[l] >> 16] << 16);
  return r;
}
#endif
// pair i (0..7) of a crumb word: (even, odd) in 0..3
#ifdef KNS_AVX512
static inline i32x16 crumbs(const uint32_t* w, int i) {
  __m512i v = _mm512_loadu_si512(w);
  if (i >= 4) v = _mm512_bsrli_epi128(v, 1);
  if (i & 3) v = _mm512_srli_epi32(v, 2 * (i & 3));
  return (i32x16)_mm512_and_si512(v, _mm512_set1_epi32(0x00030003));
}
#else
static inline i32x16 crumbs(const uint32_t* w, int i) { return (i32x16)((ldw(w) >> (2 * i)) & 0x00030003u); }
#endif
// v + c in the int16s that the pair mask m selects (bit 2r+e: element e of lane r)
#ifdef KNS_AVX512
static inline i32x16 add_where(i32x16 v, const uint32_t* m, int16_t c) {
  return (i32x16)_mm512_mask_add_epi16((__m512i)v, _load_mask32((__mmask32*)m), (__m512i)v, _mm512_set1_epi16(c));
}
#else
static inline i32x16 add_where(i32x16 v, const uint32_t* m, int16_t c) {
  const u32x16 lane = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const u32x16 bits = (u32x16{} + *m) >> lane;
  return v + (i32x16)(((bits & 1) * (uint16_t)c) + (((bits >> 1) & 1) * ((uint32_t)(uint16_t)c << 16)));
}
#endif

// isum[g][t] = sum over pairs p in [0, np) of w_g(p) . x_t(pair p). Integer sums are
// exact in any order: with few tiles, even and odd pairs go to separate sums so
// that enough independent vpdpwssd chains hide its latency.
template <int G, int TT, typename W>
static inline __attribute__((always_inline)) void idot(W w, int np, const int16_t* xq, int cols, i32x16 (&isum)[G][TT]) {
  constexpr int S = G * TT >= 8 ? 1 : 2;
  i32x16 part[S][G][TT];
  for (int s = 0; s < S; s++) for (int g = 0; g < G; g++) for (int t = 0; t < TT; t++) part[s][g][t] = i32x16{};
#pragma GCC unroll 16
  for (int p = 0; p < np; p++) {
    i32x16 wv[G];
    for (int g = 0; g < G; g++) wv[g] = w(g, p);
    for (int t = 0; t < TT; t++) {
      int32_t xp = xpair(xq + (size_t)t * cols, 2 * p);
      for (int g = 0; g < G; g++) part[p % S][g][t] = dp(part[p % S][g][t], wv[g], xp);
    }
  }
  for (int g = 0; g < G; g++)
    for (int t = 0; t < TT; t++) isum[g][t] = S == 1 ? part[0][g][t] : part[0][g][t] + part[S - 1][g][t];
}

// Decoding reads each weight once, streaming from memory: the hardware prefetchers
// alone leave a core short of bandwidth (single-thread decode 10-50% slower), so
// each step asks for the bytes it will read PREFETCH_BYTES later, in every row group.
constexpr size_t PREFETCH_BYTES = 1024;
template <int G, typename P>
static inline void prefetch_ahead(P* const (&p)[G], size_t offset, size_t bytes) {
  for (int g = 0; g < G; g++)
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch((const char*)p[g] + PREFETCH_BYTES + offset + o);
}

template <int G, int TT>
static inline void store(const f32x16 (&acc)[G][TT], int g0, int t0, int T, float* out, int rows) {
  for (int g = 0; g < G; g++)
    for (int t = 0; t < TT && t0 + t < T; t++) {
      alignas(64) float tmp[16];
      st(tmp, acc[g][t]);
      int r0 = (g0 + g) * 16;
      for (int r = 0; r < 16 && r0 + r < rows; r++) out[(size_t)(t0 + t) * rows + r0 + r] = tmp[r];
    }
}

// Quantised types: how to read a packed block. SUB elements per scale, NSUB
// sub-blocks per block; pair(b, j, p) gives pair p of sub-block j in 16 lanes of
// int16 pairs, scale(b, j) the f32 scales dW (and min(b, j) the mW of types with a
// min, MIN), as format/quant.ts quantLayout defines them. Values stored with an
// offset BIAS (a 4-bit q - 8 stored as q) are corrected exactly in the integer
// sum: isum -= BIAS * xsum.
template <int TYPE> struct Q;

template <> struct Q<GGML_TYPE_Q8_0> {
  typedef packed_q8_0 B;
  enum { SUB = 32, NSUB = 1, MIN = 0, BIAS = 0 };
  static i32x16 pair(const B* b, int, int p) { return pairs_i8((const uint8_t*)b->q[p][0]); }
  static f32x16 scale(const B* b, int) { return f16x16(b->d); }
};
template <> struct Q<GGML_TYPE_Q4_0> {
  typedef packed_q4_0 B;
  enum { SUB = 32, NSUB = 1, MIN = 0, BIAS = 8 };
  static i32x16 pair(const B* b, int, int p) { return pairs_u4(b->q[p]); }
  static f32x16 scale(const B* b, int) { return f16x16(b->d); }
};
template <> struct Q<GGML_TYPE_Q4_1> {  // w = d*q + m: the min term is -m
  typedef packed_q4_1 B;
  enum { SUB = 32, NSUB = 1, MIN = 1, BIAS = 0 };
  static i32x16 pair(const B* b, int, int p) { return nibbles(b->q[p >> 2], p & 3); }
  static f32x16 scale(const B* b, int) { return f16x16(b->d); }
  static f32x16 min(const B* b, int) { return -f16x16(b->m); }
};
template <> struct Q<GGML_TYPE_Q5_0> {
  typedef packed_q5_0 B;
  enum { SUB = 32, NSUB = 1, MIN = 0, BIAS = 16 };
  static i32x16 pair(const B* b, int, int p) { return add_where(nibbles(b->q[p >> 2], p & 3), &b->qh[p], 16); }
  static f32x16 scale(const B* b, int) { return f16x16(b->d); }
};
template <> struct Q<GGML_TYPE_Q5_1> {  // w = d*q + m: the min term is -m
  typedef packed_q5_1 B;
  enum { SUB = 32, NSUB = 1, MIN = 1, BIAS = 0 };
  static i32x16 pair(const B* b, int, int p) { return add_where(nibbles(b->q[p >> 2], p & 3), &b->qh[p], 16); }
  static f32x16 scale(const B* b, int) { return f16x16(b->d); }
  static f32x16 min(const B* b, int) { return -f16x16(b->m); }
};
template <> struct Q<GGML_TYPE_IQ4_NL> {
  typedef packed_iq4_nl B;
  enum { SUB = 32, NSUB = 1, MIN = 0, BIAS = 0 };
  static i32x16 pair(const B* b, int, int p) { return iq4_levels(b->q[p >> 2], p & 3); }
  static f32x16 scale(const B* b, int) { return f16x16(b->d); }
};
template <> struct Q<GGML_TYPE_IQ4_XS> {
  typedef packed_iq4_xs B;
  enum { SUB = 32, NSUB = 8, MIN = 0, BIAS = 0 };
  static i32x16 pair(const B* b, int j, int p) { return iq4_levels(b->q[4 * j + (p >> 2)], p & 3); }
  static f32x16 scale(const B* b, int j) { return f16x16(b->d) * i8tof(b->sc[j]); }
};
template <> struct Q<GGML_TYPE_Q2_K> {
  typedef packed_q2_K B;
  enum { SUB = 16, NSUB = 16, MIN = 1, BIAS = 0 };
  static i32x16 pair(const B* b, int j, int p) { return crumbs(b->q[j], p); }
  static f32x16 scale(const B* b, int j) { return f16x16(b->d) * itof(u8toi(b->sc[j]) & 15); }
  static f32x16 min(const B* b, int j) { return f16x16(b->dmin) * itof(u8toi(b->sc[j]) >> 4); }
};
template <> struct Q<GGML_TYPE_Q3_K> {  // values stored + 4 (0..7)
  typedef packed_q3_K B;
  enum { SUB = 16, NSUB = 16, MIN = 0, BIAS = 4 };
  static i32x16 pair(const B* b, int j, int p) { return add_where(crumbs(b->q[j], p), &b->qh[8 * j + p], 4); }
  static f32x16 scale(const B* b, int j) { return f16x16(b->d) * i8tof(b->sc[j]); }
};
template <> struct Q<GGML_TYPE_Q4_K> {
  typedef packed_q4_K B;
  enum { SUB = 32, NSUB = 8, MIN = 1, BIAS = 0 };
  static i32x16 pair(const B* b, int j, int p) { return pairs_u4(b->q[16 * j + p]); }
  static f32x16 scale(const B* b, int j) { return f16x16(b->d) * itof(u8toi(b->sc[j])); }
  static f32x16 min(const B* b, int j) { return f16x16(b->dmin) * itof(u8toi(b->m[j])); }
};
template <> struct Q<GGML_TYPE_Q5_K> {
  typedef packed_q5_K B;
  enum { SUB = 32, NSUB = 8, MIN = 1, BIAS = 0 };
  static i32x16 pair(const B* b, int j, int p) { return add_where(nibbles(b->q[4 * j + (p >> 2)], p & 3), &b->qh[16 * j + p], 16); }
  static f32x16 scale(const B* b, int j) { return f16x16(b->d) * itof(u8toi(b->sc[j])); }
  static f32x16 min(const B* b, int j) { return f16x16(b->dmin) * itof(u8toi(b->m[j])); }
};
template <> struct Q<GGML_TYPE_Q6_K> {
  typedef packed_q6_K B;
  enum { SUB = 16, NSUB = 16, MIN = 0, BIAS = 0 };
  static i32x16 pair(const B* b, int j, int p) { return pairs_i8((const uint8_t*)b->q[8 * j + p][0]); }
  static f32x16 scale(const B* b, int j) { return f16x16(b->d) * i8tof(b->sc[j]); }
};

// One tile of a quantised matrix: G row groups (16 rows each) x TT activation rows,
// all blocks. Per sub-block: acc += (dW*dx)*isum [- (mW*dx)*xsum].
template <int TYPE, int G, int TT>
static void tile_q(const uint8_t* packed, size_t groupBytes, int g0, int cols, const Q16& xq, int t0, int T, float* out, int rows) {
  typedef Q<TYPE> R;
  typedef typename R::B B;
  constexpr int BS = R::SUB * R::NSUB;
  constexpr size_t SHARE = (sizeof(B) + R::NSUB - 1) / R::NSUB;  // bytes of a block per sub-block
  const int nb = cols / BS, nb32 = cols / 32, nb16 = cols / 16;
  f32x16 acc[G][TT];
  for (int g = 0; g < G; g++) for (int t = 0; t < TT; t++) acc[g][t] = f32x16{};
  i32x16 isum[G][TT];
  for (int b = 0; b < nb; b++) {
    const B* blk[G];
    for (int g = 0; g < G; g++) blk[g] = (const B*)(packed + (g0 + g) * groupBytes) + b;
    for (int j = 0; j < R::NSUB; j++) {
      const int e0 = b * BS + j * R::SUB;  // first column of the sub-block
      prefetch_ahead<G>(blk, j * SHARE, SHARE);
      idot<G, TT>([&](int g, int pp) { return R::pair(blk[g], j, pp); }, R::SUB / 2, xq.q + (size_t)t0 * cols + e0, cols, isum);
      for (int g = 0; g < G; g++) {
        const f32x16 dw = R::scale(blk[g], j);
        f32x16 mw = f32x16{};
        if constexpr (R::MIN != 0) mw = R::min(blk[g], j);
        for (int t = 0; t < TT; t++) {
          const size_t row = t0 + t;
          const f32x16 dx = bcast(xq.d[row * nb32 + e0 / 32]);
          int32_t xs = 0;
          if constexpr (R::MIN != 0 || R::BIAS != 0) xs = R::SUB == 32 ? xq.sum[row * nb32 + e0 / 32] : xq.sum16[row * nb16 + e0 / 16];
          i32x16 is = isum[g][t];
          if constexpr (R::BIAS != 0) is = is - R::BIAS * xs;
          if constexpr (R::MIN != 0) acc[g][t] = acc[g][t] + ((dw * dx) * itof(is) - (mw * dx) * bcast((float)xs));
          else acc[g][t] = acc[g][t] + (dw * dx) * itof(is);
        }
      }
    }
  }
  store(acc, g0, t0, T, out, rows);
}

// One tile of a float matrix: G row groups x TT activation rows, all columns.
template <int TYPE, int G, int TT>
static void tile_f(const uint8_t* packed, size_t groupBytes, int g0, int cols, const float* x, int t0, int T, float* out, int rows) {
  const int nb = (cols + 15) / 16;  // blocks of 16 columns; the last may be partial
  const size_t bbytes = TYPE == GGML_TYPE_F32 ? 16 * 16 * 4 : 16 * 16 * 2;
  f32x16 acc[G][TT];
  for (int g = 0; g < G; g++) for (int t = 0; t < TT; t++) acc[g][t] = f32x16{};
  for (int b = 0; b < nb; b++) {
    const uint8_t* p[G];
    for (int g = 0; g < G; g++) p[g] = packed + (g0 + g) * groupBytes + (size_t)b * bbytes;
    prefetch_ahead<G>(p, 0, bbytes);
    const float* xb = x + (size_t)t0 * cols + (size_t)b * 16;
    const int n = cols - b * 16 < 16 ? cols - b * 16 : 16;
    if (TYPE == GGML_TYPE_F32) dot<G, TT>([&](int g, int j) { return ld((const float*)p[g] + 16 * j); }, n, xb, cols, acc);
    if (TYPE == GGML_TYPE_F16) dot<G, TT>([&](int g, int j) { return f16tof((const uint16_t*)p[g] + 16 * j); }, n, xb, cols, acc);
    if (TYPE == GGML_TYPE_BF16) dot<G, TT>([&](int g, int j) { return bf16tof((const uint16_t*)p[g] + 16 * j); }, n, xb, cols, acc);
  }
  store(acc, g0, t0, T, out, rows);
}

constexpr bool is_float(int type) { return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16; }

template <int TYPE, int G, int TT>
static inline void tile(const uint8_t* packed, size_t groupBytes, int g0, int cols, const float* x, const Q16& xq, int t0, int T, float* out, int rows) {
  if constexpr (is_float(TYPE)) tile_f<TYPE, G, TT>(packed, groupBytes, g0, cols, x, t0, T, out, rows);
  else tile_q<TYPE, G, TT>(packed, groupBytes, g0, cols, xq, t0, T, out, rows);
}

// Bytes of one 16-row group's packed row.
template <int TYPE>
static size_t group_bytes(int cols) {
  if constexpr (is_float(TYPE)) return (size_t)((cols + 15) / 16) * 16 * 16 * (TYPE == GGML_TYPE_F32 ? 4 : 2);
  else return (size_t)(cols / (Q<TYPE>::SUB * Q<TYPE>::NSUB)) * sizeof(typename Q<TYPE>::B);
}

template <int TYPE>
static void groups_typed(const uint8_t* packed, int rows, int cols, const float* x, const Q16& xq, int T, float* out, int ga, int gb) {
  const size_t gB = group_bytes<TYPE>(cols);
  int g = ga;
  if (T == 1) {
    for (; g + 4 <= gb; g += 4) tile<TYPE, 4, 1>(packed, gB, g, cols, x, xq, 0, 1, out, rows);
    for (; g < gb; g++) tile<TYPE, 1, 1>(packed, gB, g, cols, x, xq, 0, 1, out, rows);
    return;
  }
  // Registers: G x TT f32 accumulators (+ as many int32 sums for quantised types)
  // + G weight vectors. Float types: 4 x 4; quantised: 2 x 4 (fewer widenings per product than 4 x 2).
  constexpr int GG = is_float(TYPE) ? 4 : 2;
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
void matmul_groups(int type, const uint8_t* packed, int rows, int cols, const float* x, const int16_t* xq, const float* xd, const int32_t* xs, const int32_t* xs16, int T, float* out, int ga, int gb) {
  const Q16 q{xq, xd, xs, xs16};
  switch (type) {
#define CASE(t) case t: return groups_typed<t>(packed, rows, cols, x, q, T, out, ga, gb);
    CASE(GGML_TYPE_F32) CASE(GGML_TYPE_F16) CASE(GGML_TYPE_BF16)
    CASE(GGML_TYPE_Q8_0) CASE(GGML_TYPE_Q4_0) CASE(GGML_TYPE_Q4_1) CASE(GGML_TYPE_Q5_0) CASE(GGML_TYPE_Q5_1)
    CASE(GGML_TYPE_Q2_K) CASE(GGML_TYPE_Q3_K) CASE(GGML_TYPE_Q4_K) CASE(GGML_TYPE_Q5_K) CASE(GGML_TYPE_Q6_K)
    CASE(GGML_TYPE_IQ4_NL) CASE(GGML_TYPE_IQ4_XS)
#undef CASE
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
    // att has room for whole blocks of 16 (the lanes past pos are never read)
    for (int t = 0; t <= pos; t += 16) st(att + t, exp16(ld(att + t) - bcast(mx)));
    float sum = 0;
    for (int t = 0; t <= pos; t++) sum = sum + att[t];
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

// RMSNorm per row (ref/ops.ts rmsnorm): out = w * (x / sqrt(mean(x^2) + eps)).
void rmsnorm(float* out, const float* x, const float* w, int T, int n, float eps) {
  for (int t = 0; t < T; t++) {
    const float* xr = x + (size_t)t * n;
    float* o = out + (size_t)t * n;
    float ss = 0;
    for (int j = 0; j < n; j++) ss = ss + xr[j] * xr[j];
    ss = ss / (float)n;
    ss = ss + eps;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < n; j++) o[j] = w[j] * (ss * xr[j]);
  }
}

// SwiGLU on [a, b) in place (ref/ops.ts siluMul): g = silu(g) * u.
void silu_mul(float* g, const float* u, size_t a, size_t b) {
  size_t i = a;
  for (; i + 16 <= b; i += 16) {
    const f32x16 v = ld(g + i);
    st(g + i, (v * (bcast(1.0f) / (bcast(1.0f) + exp16(-v)))) * ld(u + i));
  }
  for (; i < b; i++) {
    float v = g[i];
    v = v * (1.0f / (1.0f + lsnum::expf(-v)));
    g[i] = v * u[i];
  }
}

}  // namespace KNS
