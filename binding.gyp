{
  "targets": [
    {
      "target_name": "layerswarm_kernels",
      "sources": ["native/addon.cc", "native/pack.cc", "native/kernels_avx512.cc", "native/kernels_generic.cc"],
      # -Wno-maybe-uninitialized: GCC's false positive inside its own avx512fintrin.h (__Y), dozens per build;
      # -Wno-psabi: a note that 64-byte vectors pass differently without AVX-512 (only in static inline helpers)
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-O3", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno", "-Wno-maybe-uninitialized", "-Wno-psabi"],
      "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-O3", "-std=c++17", "-ffp-contract=off", "-fno-fast-math"] }
    }
  ]
}
