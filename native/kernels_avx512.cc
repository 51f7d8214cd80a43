#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,f16c,popcnt")
#define KNS avx512
#define KNS_AVX512 1
#include "kernels_impl.h"
#endif
