#if defined(__x86_64__)
#if defined(__clang__)
// clang has no `#pragma GCC target`: the same features as a function attribute on
// everything below (the standard headers first, so that they keep their own).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,popcnt"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,popcnt")
#endif
#define KNS avx512
#define KNS_AVX512 1
#define KNS_VNNI 1
#include "kernels_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
