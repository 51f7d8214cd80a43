#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,popcnt")
#define KNS avx512
#define KNS_AVX512 1
#define KNS_VNNI 1
#include "kernels_impl.h"
#endif
