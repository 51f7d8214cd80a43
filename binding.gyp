{
  "targets": [
    {
      "target_name": "layerswarm_kernels",
      "sources": ["native/addon.cc", "native/kernels_avx512.cc", "native/kernels_generic.cc"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-O3", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno"],
      "xcode_settings": { "OTHER_CPLUSPLUSFLAGS": ["-O3", "-std=c++17", "-ffp-contract=off"] }
    }
  ]
}
