// Weight packing and activation quantisation for the native kernels (pack.cc).
#pragma once
#include <cstddef>
#include <cstdint>

namespace lspack {
bool is_float(int type);
bool is_quantized(int type);
// Elements per block (float types: 16 columns per packed block), bytes of a ggml
// block (float types: of one element) and of a packed block (16 rows); 0s for a type we do not pack.
struct Geometry { int block; size_t ggml_bytes, packed_bytes; };
Geometry geometry(int type);
size_t ggml_row_bytes(int type, int cols);
size_t packed_size(int type, int rows, int cols);
void pack(int type, int rows, int cols, const uint8_t* src, uint8_t* dst);
void quantize_q16(const float* x, size_t n, int16_t* xq, float* xd, int32_t* xs, int32_t* xs16);
}  // namespace lspack
