// The ggml weight types we compute with: their numbers, the blocks of a GGUF file
// (ggml-common.h, little-endian), and the packed blocks the kernels read
// (kernels_impl.h explains the packing). Shared by addon.cc (packing) and both
// builds of kernels_impl.h (reading).

#pragma once
#include <cstdint>

enum ggml_type : int {
  GGML_TYPE_F32 = 0,
  GGML_TYPE_F16 = 1,
  GGML_TYPE_Q4_0 = 2,
  GGML_TYPE_Q4_1 = 3,
  GGML_TYPE_Q5_0 = 6,
  GGML_TYPE_Q5_1 = 7,
  GGML_TYPE_Q8_0 = 8,
  GGML_TYPE_Q2_K = 10,
  GGML_TYPE_Q3_K = 11,
  GGML_TYPE_Q4_K = 12,
  GGML_TYPE_Q5_K = 13,
  GGML_TYPE_Q6_K = 14,
  GGML_TYPE_IQ4_NL = 20,
  GGML_TYPE_IQ4_XS = 23,
  GGML_TYPE_BF16 = 30,
};

// ---------------------------------------------------------------- GGUF blocks (one row's)

struct block_q8_0 { uint16_t d; int8_t qs[32]; };
struct block_q4_0 { uint16_t d; uint8_t qs[16]; };
struct block_q4_1 { uint16_t d, m; uint8_t qs[16]; };
struct block_q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct block_q5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct block_q2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct block_q3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct block_q4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct block_q5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct block_q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct block_iq4_nl { uint16_t d; uint8_t qs[16]; };
struct block_iq4_xs { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };
static_assert(sizeof(block_q8_0) == 34, "block_q8_0");
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl");
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs");
static_assert(sizeof(block_q4_0) == 18, "block_q4_0");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1");
static_assert(sizeof(block_q5_0) == 22, "block_q5_0");
static_assert(sizeof(block_q5_1) == 24, "block_q5_1");
static_assert(sizeof(block_q2_K) == 84, "block_q2_K");
static_assert(sizeof(block_q3_K) == 110, "block_q3_K");
static_assert(sizeof(block_q4_K) == 144, "block_q4_K");
static_assert(sizeof(block_q5_K) == 176, "block_q5_K");
static_assert(sizeof(block_q6_K) == 210, "block_q6_K");

// ---------------------------------------------------------------- packed blocks
// One ggml block of 16 consecutive rows (a "group"): scales as [..][16] (one lane
// per row) and quantised values in pairs of consecutive elements (the unit of
// VNNI's vpdpwssd). Index names: p pair, r row, j sub-block, k word.
//
// Nibble words pack a row's pairs into 32 bits, even elements in the low half and
// odd elements in the high half, so one shift and one mask give a pair in every lane:
//   nibble word k: pair 4k+i at bits 4i (even element) and 16+4i (odd)         (v >> 4i) & 0x000F000F
//   crumb word k:  pair 8k+i at bits 2i (even element) and 16+2i (odd)         (v >> 2i) & 0x00030003
// Pair masks hold one more bit of a pair's values for all 16 rows (the 5th bit of
// Q5 values): bit 2r+e is element e of the pair in row r, one bit per int16 of a
// vector, as AVX-512's masked word operations take it (the 3rd bit of Q3_K values).

struct packed_q8_0 { uint16_t d[16]; int8_t q[16][16][2]; };      // q[p][r][element]
struct packed_q4_0 { uint16_t d[16]; uint8_t q[16][16]; };        // q[p][r] = even | odd << 4
struct packed_q4_1 { uint16_t d[16]; uint16_t m[16]; uint32_t q[4][16]; };    // nibble words
struct packed_q5_0 { uint16_t d[16]; uint32_t q[4][16]; uint32_t qh[16]; };  // nibble words, pair masks
struct packed_q5_1 { uint16_t d[16]; uint16_t m[16]; uint32_t q[4][16]; uint32_t qh[16]; };
struct packed_q2_K { uint16_t d[16]; uint16_t dmin[16]; uint8_t sc[16][16]; uint32_t q[16][16]; };  // sc: scale | min << 4; crumb words
struct packed_q3_K { uint16_t d[16]; int8_t sc[16][16]; uint32_t q[16][16]; uint32_t qh[128]; };  // sc: scale - 32; crumb words; values + 4
struct packed_q4_K { uint16_t d[16]; uint16_t dmin[16]; uint8_t sc[8][16]; uint8_t m[8][16]; uint8_t q[128][16]; };
struct packed_q5_K { uint16_t d[16]; uint16_t dmin[16]; uint8_t sc[8][16]; uint8_t m[8][16]; uint32_t q[32][16]; uint32_t qh[128]; };
struct packed_q6_K { uint16_t d[16]; int8_t sc[16][16]; int8_t q[128][16][2]; };
struct packed_iq4_nl { uint16_t d[16]; uint32_t q[4][16]; };                         // nibble words of level indexes
struct packed_iq4_xs { uint16_t d[16]; int8_t sc[8][16]; uint32_t q[32][16]; };      // sc: scale - 32
static_assert(sizeof(packed_q8_0) == 544, "packed_q8_0");
static_assert(sizeof(packed_iq4_nl) == 16 * 18, "packed_iq4_nl: as compact as ggml's");
static_assert(sizeof(packed_iq4_xs) == 2208, "packed_iq4_xs: ggml's 2176 + the scales unpacked");

// the 16 levels of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl)
static const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
static_assert(sizeof(packed_q4_0) == 288, "packed_q4_0");
static_assert(sizeof(packed_q4_1) == 16 * 20, "packed_q4_1: as compact as ggml's");
static_assert(sizeof(packed_q5_0) == 16 * 22, "packed_q5_0: as compact as ggml's");
static_assert(sizeof(packed_q5_1) == 16 * 24, "packed_q5_1: as compact as ggml's");
static_assert(sizeof(packed_q2_K) == 16 * 84, "packed_q2_K: as compact as ggml's");
static_assert(sizeof(packed_q3_K) == 1824, "packed_q3_K: ggml's 1760 + the scales unpacked");
static_assert(sizeof(packed_q4_K) == 2368, "packed_q4_K");
static_assert(sizeof(packed_q5_K) == 2880, "packed_q5_K: ggml's 2816 + the scales unpacked");
static_assert(sizeof(packed_q6_K) == 4384, "packed_q6_K");
