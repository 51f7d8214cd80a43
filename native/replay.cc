// Replays a kernel trace (src/kernels/trace.ts: every kernel call of the reference
// with its inputs and outputs) on the native kernels of this build and compares
// every output bit. Built from the same sources as the Node addon (kernels_*.cc,
// pack.cc, numerics.h) with another compiler or for another CPU
// (src/kernels/crossbuild.test.ts: clang, and aarch64 under qemu-user), so no
// Node headers are involved.
//
//   replay TRACE      prints one line per instruction set, exits 1 on any difference
//   replay --consts   prints numerics.h's constants and coefficients as bits

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>
#include "numerics.h"
#include "pack.h"

#define DECLARE(ns)                                                                                                              \
  namespace ns {                                                                                                                 \
  void matmul_groups(int, const uint8_t*, int, int, const float*, const int16_t*, const float*, const int32_t*, const int32_t*, \
                     int, float*, int, int);                                                                                     \
  void attention_heads(float*, const float*, const float*, const float*, int, int, int, int, float*, int, int);                 \
  void rmsnorm(float*, const float*, const float*, int, int, float);                                                             \
  void silu_mul(float*, const float*, size_t, size_t);                                                                           \
  }
DECLARE(generic)
#if defined(__x86_64__)
DECLARE(avx512)
#endif

struct Isa {
  const char* name;
  decltype(&generic::matmul_groups) matmul;
  decltype(&generic::attention_heads) attention;
  decltype(&generic::rmsnorm) rmsnorm;
  decltype(&generic::silu_mul) silu;
};

static std::vector<uint8_t> buf;
static size_t off;
template <typename T> static T rd() {
  if (off + sizeof(T) > buf.size()) { fprintf(stderr, "trace ends inside a record\n"); exit(2); }
  T v;
  memcpy(&v, buf.data() + off, sizeof(T));
  off += sizeof(T);
  return v;
}
template <typename T> static std::vector<T> arr(size_t n) {
  if (off + n * sizeof(T) > buf.size()) { fprintf(stderr, "trace ends inside a record\n"); exit(2); }
  std::vector<T> v(n);
  memcpy(v.data(), buf.data() + off, n * sizeof(T));
  off += n * sizeof(T);
  return v;
}

struct Matrix { int type, rows, cols; std::vector<uint8_t> packed; };

struct Summary {
  std::map<std::string, long> compared;
  long mismatches = 0;
};

// bit for bit, NaN equal to NaN (payloads are not specified)
template <typename T> static bool same(const T* a, const T* b, size_t n, size_t& at) {
  for (size_t i = 0; i < n; i++) {
    if (memcmp(&a[i], &b[i], sizeof(T)) == 0 || (a[i] != a[i] && b[i] != b[i])) continue;
    at = i;
    return false;
  }
  return true;
}
template <typename T> static void check(Summary& s, const char* isa, const char* what, int tag, const T* got, const T* want, size_t n) {
  const std::string key = std::string(what) + "/" + std::to_string(tag);
  const long call = ++s.compared[key];
  size_t at;
  if (same(got, want, n, at)) return;
  if (s.mismatches++ < 10)
    printf("MISMATCH %s %s call %ld (tag %d): element %zu is %.9g, the reference %.9g\n", isa, what, call, tag, at, (double)got[at], (double)want[at]);
}

static void replay(const Isa& isa, Summary& s) {
  off = 8;
  std::map<uint32_t, Matrix> mats;
  std::vector<int16_t> xq;
  std::vector<float> xd;
  std::vector<int32_t> xs, xs16;
  while (off < buf.size()) {
    const uint8_t op = rd<uint8_t>(), tag = rd<uint8_t>();
    if (op == 1) {  // MATRIX
      const uint32_t id = rd<uint32_t>();
      Matrix m;
      m.type = rd<int32_t>(), m.rows = rd<int32_t>(), m.cols = rd<int32_t>();
      const uint64_t n = rd<uint64_t>();
      std::vector<uint8_t> src = arr<uint8_t>(n);
      const size_t size = lspack::packed_size(m.type, m.rows, m.cols);
      if (size == 0 || n < lspack::ggml_row_bytes(m.type, m.cols) * m.rows) { fprintf(stderr, "matrix %u: type %d is not packed natively\n", id, m.type); exit(2); }
      m.packed.resize(size);
      lspack::pack(m.type, m.rows, m.cols, src.data(), m.packed.data());
      mats[id] = std::move(m);
    } else if (op == 2) {  // MATMUL
      const Matrix& m = mats.at(rd<uint32_t>());
      const int T = rd<int32_t>();
      const std::vector<float> x = arr<float>((size_t)T * m.cols), want = arr<float>((size_t)T * m.rows);
      std::vector<float> got((size_t)T * m.rows);
      const bool quant = lspack::is_quantized(m.type);
      if (quant) {
        const size_t n = (size_t)T * m.cols, nb = n / 32;
        xq.resize(n), xd.resize(nb), xs.resize(nb), xs16.resize(2 * nb);
        lspack::quantize_q16(x.data(), n, xq.data(), xd.data(), xs.data(), xs16.data());
      }
      isa.matmul(m.type, m.packed.data(), m.rows, m.cols, x.data(), quant ? xq.data() : nullptr, quant ? xd.data() : nullptr,
                 quant ? xs.data() : nullptr, quant ? xs16.data() : nullptr, T, got.data(), 0, (m.rows + 15) / 16);
      check(s, isa.name, "matmul", tag, got.data(), want.data(), got.size());
    } else if (op == 3) {  // RMSNORM
      const int T = rd<int32_t>(), n = rd<int32_t>();
      const double eps = rd<double>();
      const std::vector<float> x = arr<float>((size_t)T * n), w = arr<float>(n), want = arr<float>((size_t)T * n);
      std::vector<float> got((size_t)T * n);
      isa.rmsnorm(got.data(), x.data(), w.data(), T, n, (float)eps);  // as the addon passes it
      check(s, isa.name, "rmsnorm", tag, got.data(), want.data(), got.size());
    } else if (op == 4) {  // SILU
      const uint32_t n = rd<uint32_t>();
      std::vector<float> g = arr<float>(n);
      const std::vector<float> u = arr<float>(n), want = arr<float>(n);
      isa.silu(g.data(), u.data(), 0, n);
      check(s, isa.name, "silu", tag, g.data(), want.data(), n);
    } else if (op == 5) {  // ATTENTION
      const int pos = rd<int32_t>(), H = rd<int32_t>(), KV = rd<int32_t>(), D = rd<int32_t>();
      const size_t kvDim = (size_t)KV * D;
      const std::vector<float> q = arr<float>((size_t)H * D), kc = arr<float>(((size_t)pos / 16 + 1) * 16 * kvDim),
                               vc = arr<float>((size_t)(pos + 1) * kvDim), want = arr<float>((size_t)H * D);
      std::vector<float> got((size_t)H * D), att(pos + 16);
      isa.attention(got.data(), q.data(), kc.data(), vc.data(), pos, H, KV, D, att.data(), 0, H);
      check(s, isa.name, "attention", tag, got.data(), want.data(), got.size());
    } else if (op == 6) {  // ROPE (numerics.h, scalar: the same in every instruction set)
      const double pos = rd<double>();
      const int ropeDim = rd<int32_t>();
      const double base = rd<double>();
      const bool hasFactors = rd<uint8_t>() != 0;
      const std::vector<float> factors = hasFactors ? arr<float>(ropeDim / 2) : std::vector<float>();
      const std::vector<float> wantCos = arr<float>(ropeDim / 2), wantSin = arr<float>(ropeDim / 2);
      std::vector<float> freqs(ropeDim / 2), cos(ropeDim / 2), sin(ropeDim / 2);
      lsnum::rope_freqs(ropeDim, base, hasFactors ? factors.data() : nullptr, freqs.data());
      if (!lsnum::rope_table(pos, ropeDim, freqs.data(), cos.data(), sin.data())) { printf("MISMATCH %s rope: angle out of range\n", isa.name); s.mismatches++; }
      check(s, isa.name, "rope-cos", tag, cos.data(), wantCos.data(), cos.size());
      check(s, isa.name, "rope-sin", tag, sin.data(), wantSin.data(), sin.size());
    } else if (op == 7) {  // EXPF
      const uint32_t n = rd<uint32_t>();
      const std::vector<float> x = arr<float>(n), want = arr<float>(n);
      std::vector<float> got(n);
      for (uint32_t i = 0; i < n; i++) got[i] = lsnum::expf(x[i]);
      check(s, isa.name, "expf", tag, got.data(), want.data(), n);
    } else if (op == 8) {  // F64
      const uint8_t fn = rd<uint8_t>();
      const uint32_t n = rd<uint32_t>();
      const std::vector<double> x = arr<double>(n), want = arr<double>(n);
      std::vector<double> got(n);
      for (uint32_t i = 0; i < n; i++) {
        double sn, cs;
        if (fn == 0) got[i] = lsnum::expd(x[i]);
        else if (fn == 1) got[i] = lsnum::logd(x[i]);
        else lsnum::sincosd(x[i], sn, cs), got[i] = fn == 2 ? sn : cs;
      }
      static const char* names[] = {"expd", "logd", "sin", "cos"};
      check(s, isa.name, fn < 4 ? names[fn] : "f64?", tag, got.data(), want.data(), n);
    } else {
      fprintf(stderr, "unknown record %u at byte %zu\n", op, off - 2);
      exit(2);
    }
  }
}

int main(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "--consts") == 0) {
    using namespace lsnum;
    const double k[] = {LOG2E, LN2_HI, LN2_LO, INV_PIO2, PIO2_1, PIO2_2, PIO2_2T, SQRT2, ROUND};
    for (double d : k) printf("%016" PRIx64 " ", to_bits(d));
    for (double d : C.exp) printf("%016" PRIx64 " ", to_bits(d));
    for (double d : C.log) printf("%016" PRIx64 " ", to_bits(d));
    for (double d : C.sin) printf("%016" PRIx64 " ", to_bits(d));
    for (double d : C.cos) printf("%016" PRIx64 " ", to_bits(d));
    printf("\n");
    return 0;
  }
  if (argc != 2) { fprintf(stderr, "usage: replay TRACE | replay --consts\n"); return 2; }
  FILE* f = fopen(argv[1], "rb");
  if (!f) { perror(argv[1]); return 2; }
  uint8_t tmp[1 << 16];
  size_t n;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf.insert(buf.end(), tmp, tmp + n);
  fclose(f);
  if (buf.size() < 8 || memcmp(buf.data(), "LSTRACE1", 8) != 0) { fprintf(stderr, "%s: not a kernel trace\n", argv[1]); return 2; }
  std::vector<Isa> isas = {{"generic", generic::matmul_groups, generic::attention_heads, generic::rmsnorm, generic::silu_mul}};
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni"))
    isas.push_back({"avx512", avx512::matmul_groups, avx512::attention_heads, avx512::rmsnorm, avx512::silu_mul});
#endif
  long bad = 0;
  for (const Isa& isa : isas) {
    Summary s;
    replay(isa, s);
    printf("isa=%s", isa.name);
    for (auto& [k, v] : s.compared) printf(" %s=%ld", k.c_str(), v);
    printf(" mismatches=%ld\n", s.mismatches);
    bad += s.mismatches;
  }
  return bad ? 1 : 0;
}
