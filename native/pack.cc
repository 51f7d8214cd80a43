// Weight packing (ggml rows -> the packed groups kernels_impl.h reads, native/ggml.h)
// and the quantisation of activations to int16 blocks (ref/matmul.ts quantizeQ16).
// No N-API here: the addon (addon.cc) and the cross-build replay harness
// (replay.cc) both use it.

#include "pack.h"
#include <cmath>
#include <cstring>
#include "ggml.h"

namespace lspack {

bool is_float(int type) { return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16; }

Geometry geometry(int type) {
  switch (type) {
    case GGML_TYPE_F32: return {16, 4, 16 * 16 * 4};
    case GGML_TYPE_F16: case GGML_TYPE_BF16: return {16, 2, 16 * 16 * 2};
    case GGML_TYPE_Q8_0: return {32, sizeof(block_q8_0), sizeof(packed_q8_0)};
    case GGML_TYPE_Q4_0: return {32, sizeof(block_q4_0), sizeof(packed_q4_0)};
    case GGML_TYPE_Q4_1: return {32, sizeof(block_q4_1), sizeof(packed_q4_1)};
    case GGML_TYPE_Q5_0: return {32, sizeof(block_q5_0), sizeof(packed_q5_0)};
    case GGML_TYPE_Q5_1: return {32, sizeof(block_q5_1), sizeof(packed_q5_1)};
    case GGML_TYPE_IQ4_NL: return {32, sizeof(block_iq4_nl), sizeof(packed_iq4_nl)};
    case GGML_TYPE_IQ4_XS: return {256, sizeof(block_iq4_xs), sizeof(packed_iq4_xs)};
    case GGML_TYPE_Q2_K: return {256, sizeof(block_q2_K), sizeof(packed_q2_K)};
    case GGML_TYPE_Q3_K: return {256, sizeof(block_q3_K), sizeof(packed_q3_K)};
    case GGML_TYPE_Q4_K: return {256, sizeof(block_q4_K), sizeof(packed_q4_K)};
    case GGML_TYPE_Q5_K: return {256, sizeof(block_q5_K), sizeof(packed_q5_K)};
    case GGML_TYPE_Q6_K: return {256, sizeof(block_q6_K), sizeof(packed_q6_K)};
  }
  return {0, 0, 0};
}
bool is_quantized(int type) { return geometry(type).block != 0 && !is_float(type); }
size_t ggml_row_bytes(int type, int cols) {
  const Geometry g = geometry(type);
  return is_float(type) ? (size_t)cols * g.ggml_bytes : (size_t)cols / g.block * g.ggml_bytes;
}
size_t packed_size(int type, int rows, int cols) {
  const Geometry g = geometry(type);
  if (g.block == 0) return 0;
  return (size_t)((rows + 15) / 16) * ((cols + g.block - 1) / g.block) * g.packed_bytes;
}

void scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) { sc = q[j] & 63; m = q[j + 4] & 63; }
  else { sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4); m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4); }
}

// Row r's values v[0..n) into words [n / per word][16] (see native/ggml.h).
void put_nibbles(uint32_t* words, int r, const uint8_t* v, int n) {
  for (int e = 0; e < n; e++) words[(e >> 3) * 16 + r] |= (uint32_t)(v[e] & 15) << ((e & 1) * 16 + 4 * ((e >> 1) & 3));
}
void put_crumbs(uint32_t* words, int r, const uint8_t* v, int n) {
  for (int e = 0; e < n; e++) words[(e >> 4) * 16 + r] |= (uint32_t)(v[e] & 3) << ((e & 1) * 16 + 2 * ((e >> 1) & 7));
}
// Row r's bit `bit` of values v[0..n) into pair masks [n / 2].
void put_masks(uint32_t* masks, int r, const uint8_t* v, int n, int bit) {
  for (int e = 0; e < n; e++) masks[e >> 1] |= (uint32_t)((v[e] >> bit) & 1) << (2 * r + (e & 1));
}

// One ggml block of one row into lane r of a packed block.
void pack_block(const block_q8_0& s, packed_q8_0& o, int r) {
  o.d[r] = s.d;
  for (int e = 0; e < 32; e++) o.q[e >> 1][r][e & 1] = s.qs[e];
}
void pack_block(const block_q4_0& s, packed_q4_0& o, int r) {
  o.d[r] = s.d;
  auto nib = [&](int e) { return e < 16 ? s.qs[e] & 0xF : s.qs[e - 16] >> 4; };
  for (int p = 0; p < 16; p++) o.q[p][r] = (uint8_t)(nib(2 * p) | (nib(2 * p + 1) << 4));
}
void pack_block(const block_q4_1& s, packed_q4_1& o, int r) {
  o.d[r] = s.d;
  o.m[r] = s.m;
  uint8_t v[32];
  for (int i = 0; i < 16; i++) v[i] = s.qs[i] & 0xF, v[i + 16] = s.qs[i] >> 4;
  put_nibbles(&o.q[0][0], r, v, 32);
}
void pack_block(const block_q5_0& s, packed_q5_0& o, int r) {
  o.d[r] = s.d;
  uint32_t qh;
  memcpy(&qh, s.qh, 4);
  uint8_t v[32];  // 0..31, the value + 16
  for (int i = 0; i < 16; i++) {
    v[i] = (uint8_t)((s.qs[i] & 0xF) | (((qh >> i) & 1) << 4));
    v[i + 16] = (uint8_t)((s.qs[i] >> 4) | (((qh >> (i + 16)) & 1) << 4));
  }
  put_nibbles(&o.q[0][0], r, v, 32);
  put_masks(o.qh, r, v, 32, 4);
}
void pack_block(const block_q5_1& s, packed_q5_1& o, int r) {
  o.d[r] = s.d;
  o.m[r] = s.m;
  uint32_t qh;
  memcpy(&qh, s.qh, 4);
  uint8_t v[32];
  for (int i = 0; i < 16; i++) {
    v[i] = (uint8_t)((s.qs[i] & 0xF) | (((qh >> i) & 1) << 4));
    v[i + 16] = (uint8_t)((s.qs[i] >> 4) | (((qh >> (i + 16)) & 1) << 4));
  }
  put_nibbles(&o.q[0][0], r, v, 32);
  put_masks(o.qh, r, v, 32, 4);
}
void pack_block(const block_iq4_nl& s, packed_iq4_nl& o, int r) {
  o.d[r] = s.d;
  uint8_t v[32];  // level indexes
  for (int i = 0; i < 16; i++) v[i] = s.qs[i] & 0xF, v[i + 16] = s.qs[i] >> 4;
  put_nibbles(&o.q[0][0], r, v, 32);
}
void pack_block(const block_iq4_xs& s, packed_iq4_xs& o, int r) {
  o.d[r] = s.d;
  uint8_t v[256];
  for (int j = 0; j < 8; j++) {
    const int ls = ((s.scales_l[j >> 1] >> (4 * (j & 1))) & 0xF) | (((s.scales_h >> (2 * j)) & 3) << 4);
    o.sc[j][r] = (int8_t)(ls - 32);
    for (int i = 0; i < 16; i++) v[32 * j + i] = s.qs[16 * j + i] & 0xF, v[32 * j + i + 16] = s.qs[16 * j + i] >> 4;
  }
  put_nibbles(&o.q[0][0], r, v, 256);
}
void pack_block(const block_q2_K& s, packed_q2_K& o, int r) {
  o.d[r] = s.d;
  o.dmin[r] = s.dmin;
  for (int j = 0; j < 16; j++) o.sc[j][r] = s.scales[j];
  uint8_t v[256];
  for (int e = 0; e < 256; e++) v[e] = (s.qs[32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
  put_crumbs(&o.q[0][0], r, v, 256);
}
void pack_block(const block_q3_K& s, packed_q3_K& o, int r) {
  o.d[r] = s.d;
  for (int j = 0; j < 16; j++) {
    const int low = j < 8 ? s.scales[j] & 0xF : s.scales[j - 8] >> 4;
    o.sc[j][r] = (int8_t)((low | (((s.scales[8 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4)) - 32);
  }
  uint8_t v[256];  // value + 4: 0..7
  for (int e = 0; e < 256; e++) {
    const int n = e >> 7, k = (e >> 5) & 3, l = e & 31;
    v[e] = (uint8_t)(((s.qs[32 * n + l] >> (2 * k)) & 3) | (((s.hmask[l] >> (4 * n + k)) & 1) << 2));
  }
  put_crumbs(&o.q[0][0], r, v, 256);
  put_masks(o.qh, r, v, 256, 2);
}
void pack_block(const block_q4_K& s, packed_q4_K& o, int r) {
  o.d[r] = s.d;
  o.dmin[r] = s.dmin;
  for (int j = 0; j < 8; j++) scale_min_k4(j, s.scales, o.sc[j][r], o.m[j][r]);
  auto nib = [&](int e) { uint8_t v = s.qs[32 * (e >> 6) + (e & 31)]; return (e & 32) ? v >> 4 : v & 0xF; };
  for (int p = 0; p < 128; p++) o.q[p][r] = (uint8_t)(nib(2 * p) | (nib(2 * p + 1) << 4));
}
void pack_block(const block_q5_K& s, packed_q5_K& o, int r) {
  o.d[r] = s.d;
  o.dmin[r] = s.dmin;
  for (int j = 0; j < 8; j++) scale_min_k4(j, s.scales, o.sc[j][r], o.m[j][r]);
  uint8_t v[256];
  for (int e = 0; e < 256; e++) {
    const int j = e >> 5, l = e & 31;
    const uint8_t byte = s.qs[32 * (j >> 1) + l];
    v[e] = (uint8_t)(((j & 1) ? byte >> 4 : byte & 0xF) | (((s.qh[l] >> j) & 1) << 4));
  }
  put_nibbles(&o.q[0][0], r, v, 256);
  put_masks(o.qh, r, v, 256, 4);
}
void pack_block(const block_q6_K& s, packed_q6_K& o, int r) {
  o.d[r] = s.d;
  for (int j = 0; j < 16; j++) o.sc[j][r] = s.scales[j];
  for (int e = 0; e < 256; e++) {
    int n = e >> 7, rr = e & 127, gg = rr >> 5, l = rr & 31;
    uint8_t ql = s.ql[64 * n + l + (gg & 1) * 32];
    int lo = gg < 2 ? ql & 0xF : ql >> 4;
    int hi = (s.qh[32 * n + l] >> (2 * gg)) & 3;
    o.q[e >> 1][r][e & 1] = (int8_t)((lo | (hi << 4)) - 32);
  }
}

template <typename S, typename P>
void pack_quantized(int rows, int cols, const uint8_t* src, uint8_t* dst, int block) {
  const int groups = (rows + 15) / 16, blocks = cols / block;
  for (int g = 0; g < groups; g++)
    for (int b = 0; b < blocks; b++) {
      P* o = (P*)dst + (size_t)g * blocks + b;
      for (int r = 0; r < 16 && g * 16 + r < rows; r++) {
        S s;  // copied: ggml rows need not be aligned
        memcpy(&s, src + ((size_t)(g * 16 + r) * blocks + b) * sizeof(S), sizeof(S));
        pack_block(s, *o, r);
      }
    }
}

// float types: per group and block of 16 columns, [column][row]
void pack_float(size_t esize, int rows, int cols, const uint8_t* src, uint8_t* dst) {
  const int groups = (rows + 15) / 16, blocks = (cols + 15) / 16;
  for (int g = 0; g < groups; g++)
    for (int b = 0; b < blocks; b++) {
      uint8_t* o = dst + ((size_t)g * blocks + b) * 16 * 16 * esize;
      for (int r = 0; r < 16 && g * 16 + r < rows; r++)
        for (int j = 0; j < 16 && b * 16 + j < cols; j++)
          memcpy(o + (16 * j + r) * esize, src + ((size_t)(g * 16 + r) * cols + b * 16 + j) * esize, esize);
    }
}

void pack(int type, int rows, int cols, const uint8_t* src, uint8_t* dst) {
  memset(dst, 0, packed_size(type, rows, cols));
  switch (type) {
    case GGML_TYPE_F32: return pack_float(4, rows, cols, src, dst);
    case GGML_TYPE_F16: case GGML_TYPE_BF16: return pack_float(2, rows, cols, src, dst);
    case GGML_TYPE_Q8_0: return pack_quantized<block_q8_0, packed_q8_0>(rows, cols, src, dst, 32);
    case GGML_TYPE_Q4_0: return pack_quantized<block_q4_0, packed_q4_0>(rows, cols, src, dst, 32);
    case GGML_TYPE_Q4_1: return pack_quantized<block_q4_1, packed_q4_1>(rows, cols, src, dst, 32);
    case GGML_TYPE_Q5_0: return pack_quantized<block_q5_0, packed_q5_0>(rows, cols, src, dst, 32);
    case GGML_TYPE_Q5_1: return pack_quantized<block_q5_1, packed_q5_1>(rows, cols, src, dst, 32);
    case GGML_TYPE_IQ4_NL: return pack_quantized<block_iq4_nl, packed_iq4_nl>(rows, cols, src, dst, 32);
    case GGML_TYPE_IQ4_XS: return pack_quantized<block_iq4_xs, packed_iq4_xs>(rows, cols, src, dst, 256);
    case GGML_TYPE_Q2_K: return pack_quantized<block_q2_K, packed_q2_K>(rows, cols, src, dst, 256);
    case GGML_TYPE_Q3_K: return pack_quantized<block_q3_K, packed_q3_K>(rows, cols, src, dst, 256);
    case GGML_TYPE_Q4_K: return pack_quantized<block_q4_K, packed_q4_K>(rows, cols, src, dst, 256);
    case GGML_TYPE_Q5_K: return pack_quantized<block_q5_K, packed_q5_K>(rows, cols, src, dst, 256);
    case GGML_TYPE_Q6_K: return pack_quantized<block_q6_K, packed_q6_K>(rows, cols, src, dst, 256);
  }
}

// x (n floats, n a multiple of 32) -> int16 blocks of 32: xq (n), scale xd (n/32),
// sums xs (n/32) and per half block xs16 (n/16).
void quantize_q16(const float* x, size_t n, int16_t* xq, float* xd, int32_t* xs, int32_t* xs16) {
  const size_t nb = n / 32;
  for (size_t b = 0; b < nb; b++) {
    const float* xb = x + 32 * b;
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(xb[i]));
    const float d = amax / 32767.0f, id = d != 0 ? 1.0f / d : 0.0f;
    int32_t sum[2] = {0, 0};
    for (int i = 0; i < 32; i++) {
      float v = nearbyintf(xb[i] * id);
      int32_t q = v > 32767.0f ? 32767 : v < -32767.0f ? -32767 : (int32_t)v;
      xq[32 * b + i] = (int16_t)q;
      sum[i >> 4] += q;
    }
    xd[b] = d;
    xs[b] = sum[0] + sum[1];
    xs16[2 * b] = sum[0];
    xs16[2 * b + 1] = sum[1];
  }
}

}  // namespace lspack
