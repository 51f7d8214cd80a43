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
//   Q8_0  per group, per 32-block:  d[16] f32 | q[32][16] i8
//   Q4_0  per group, per 32-block:  d[16] f32 | qs[16][16] u8 (byte i: element i low nibble, i+16 high)
//   Q4_K  per group, per 256-block: d[16] f32 | dmin[16] f32 | sc[8][16] u8 | m[8][16] u8 | qs[128][16] u8
//                                   (byte 32c+l: element 64c+l low nibble, 64c+32+l high)
//   Q6_K  per group, per 256-block: d[16] f32 | sc[16][16] i8 | q[256][16] i8 (-32..31)

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
    case 8: bsize = 32; bbytes = 64 + 32 * 16; return;
    case 2: bsize = 32; bbytes = 64 + 16 * 16; return;
    case 12: bsize = 256; bbytes = 128 + 256 + 128 * 16; return;
    case 14: bsize = 256; bbytes = 64 + 256 + 256 * 16; return;
    default: bsize = 0; bbytes = 0;
  }
}

// One tile: G row groups (16 rows each) x TT activation rows, all column blocks.
template <int TYPE, int G, int TT>
static void tile(const uint8_t* packed, size_t groupBytes, int g0, int cols, const float* x, int t0, int T, float* out, int rows) {
  int bsize, bbytes;
  block_geometry(TYPE, bsize, bbytes);
  const int nb = (cols + bsize - 1) / bsize;  // float types: the last block may be partial
  f32x16 acc[G][TT];
  for (int g = 0; g < G; g++) for (int t = 0; t < TT; t++) acc[g][t] = f32x16{};
  const float* xt = x + (size_t)t0 * cols;
  for (int b = 0; b < nb; b++) {
    const uint8_t* p[G];
    for (int g = 0; g < G; g++) p[g] = packed + (g0 + g) * groupBytes + (size_t)b * bbytes;
    const float* xb = xt + (size_t)b * bsize;
    if (TYPE == 0 || TYPE == 1 || TYPE == 30) {
      const int n = cols - b * bsize < bsize ? cols - b * bsize : bsize;
      if (TYPE == 0) dot<G, TT>([&](int g, int j) { return ld((const float*)p[g] + 16 * j); }, n, xb, cols, acc);
      if (TYPE == 1) dot<G, TT>([&](int g, int j) { return f16tof((const uint16_t*)p[g] + 16 * j); }, n, xb, cols, acc);
      if (TYPE == 30) dot<G, TT>([&](int g, int j) { return bf16tof((const uint16_t*)p[g] + 16 * j); }, n, xb, cols, acc);
    } else if (TYPE == 8) {  // Q8_0: w = d * q
      f32x16 d[G];
      for (int g = 0; g < G; g++) d[g] = ld((const float*)p[g]);
      dot<G, TT>([&](int g, int j) { return d[g] * i8tof((const int8_t*)(p[g] + 64) + 16 * j); }, 32, xb, cols, acc);
    } else if (TYPE == 2) {  // Q4_0: w = d * (nibble - 8); elements 0..15 low nibbles, 16..31 high
      f32x16 d[G];
      for (int g = 0; g < G; g++) d[g] = ld((const float*)p[g]);
      dot<G, TT>([&](int g, int j) { return d[g] * itof((u8toi(p[g] + 64 + 16 * j) & 15) - 8); }, 16, xb, cols, acc);
      dot<G, TT>([&](int g, int j) { return d[g] * itof((u8toi(p[g] + 64 + 16 * j) >> 4) - 8); }, 16, xb + 16, cols, acc);
    } else if (TYPE == 12) {  // Q4_K: w = (d*sc) * nibble - dmin*m, per 32-element sub-block
      for (int c = 0; c < 4; c++) {
        f32x16 d1[G], m1[G], d2[G], m2[G];
        for (int g = 0; g < G; g++) {
          f32x16 d = ld((const float*)p[g]), dmin = ld((const float*)(p[g] + 64));
          d1[g] = d * itof(u8toi(p[g] + 128 + 16 * (2 * c)));
          m1[g] = dmin * itof(u8toi(p[g] + 256 + 16 * (2 * c)));
          d2[g] = d * itof(u8toi(p[g] + 128 + 16 * (2 * c + 1)));
          m2[g] = dmin * itof(u8toi(p[g] + 256 + 16 * (2 * c + 1)));
        }
        dot<G, TT>([&](int g, int l) { return d1[g] * itof(u8toi(p[g] + 384 + 16 * (32 * c + l)) & 15) - m1[g]; }, 32, xb + 64 * c, cols, acc);
        dot<G, TT>([&](int g, int l) { return d2[g] * itof(u8toi(p[g] + 384 + 16 * (32 * c + l)) >> 4) - m2[g]; }, 32, xb + 64 * c + 32, cols, acc);
      }
    } else if (TYPE == 14) {  // Q6_K: w = (d*sc) * q, per 16-element sub-block
      for (int s = 0; s < 16; s++) {
        f32x16 ds[G];
        for (int g = 0; g < G; g++) ds[g] = ld((const float*)p[g]) * i8tof((const int8_t*)(p[g] + 64) + 16 * s);
        dot<G, TT>([&](int g, int l) { return ds[g] * i8tof((const int8_t*)(p[g] + 320) + 16 * (16 * s + l)); }, 16, xb + 16 * s, cols, acc);
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
static void groups_typed(const uint8_t* packed, int rows, int cols, const float* x, int T, float* out, int ga, int gb) {
  int bsize, bbytes;
  block_geometry(TYPE, bsize, bbytes);
  const size_t gB = (size_t)((cols + bsize - 1) / bsize) * bbytes;
  int g = ga;
  if (T == 1) {
    for (; g + 4 <= gb; g += 4) tile<TYPE, 4, 1>(packed, gB, g, cols, x, 0, 1, out, rows);
    for (; g < gb; g++) tile<TYPE, 1, 1>(packed, gB, g, cols, x, 0, 1, out, rows);
    return;
  }
  for (; g + 4 <= gb; g += 4) {
    int t = 0;
    for (; t + 4 <= T; t += 4) tile<TYPE, 4, 4>(packed, gB, g, cols, x, t, T, out, rows);
    for (; t < T; t++) tile<TYPE, 4, 1>(packed, gB, g, cols, x, t, T, out, rows);
  }
  for (; g < gb; g++) {
    int t = 0;
    for (; t + 4 <= T; t += 4) tile<TYPE, 1, 4>(packed, gB, g, cols, x, t, T, out, rows);
    for (; t < T; t++) tile<TYPE, 1, 1>(packed, gB, g, cols, x, t, T, out, rows);
  }
}

// out (T, rows) = W @ x (T, cols) for the row groups [ga, gb).
void matmul_groups(int type, const uint8_t* packed, int rows, int cols, const float* x, int T, float* out, int ga, int gb) {
  switch (type) {
    case 0: return groups_typed<0>(packed, rows, cols, x, T, out, ga, gb);
    case 1: return groups_typed<1>(packed, rows, cols, x, T, out, ga, gb);
    case 30: return groups_typed<30>(packed, rows, cols, x, T, out, ga, gb);
    case 8: return groups_typed<8>(packed, rows, cols, x, T, out, ga, gb);
    case 2: return groups_typed<2>(packed, rows, cols, x, T, out, ga, gb);
    case 12: return groups_typed<12>(packed, rows, cols, x, T, out, ga, gb);
    case 14: return groups_typed<14>(packed, rows, cols, x, T, out, ga, gb);
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
