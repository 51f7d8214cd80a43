// N-API glue for the native kernels: weight packing, a small thread pool, and
// dispatch between the AVX-512 and generic builds of kernels_impl.h.

#include <node_api.h>
#include <atomic>
#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include "ggml.h"

namespace avx512 {
void matmul_groups(int, const uint8_t*, int, int, const float*, const int16_t*, const float*, const int32_t*, const int32_t*, int, float*, int, int);
void attention_heads(float*, const float*, const float*, const float*, int, int, int, int, float*, int, int);
}
namespace generic {
void matmul_groups(int, const uint8_t*, int, int, const float*, const int16_t*, const float*, const int32_t*, const int32_t*, int, float*, int, int);
void attention_heads(float*, const float*, const float*, const float*, int, int, int, int, float*, int, int);
}

namespace {

bool use_avx512() {
#if defined(__x86_64__)
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vnni") && getenv("LAYERSWARM_NO_AVX512") == nullptr;
  return ok;
#else
  return false;
#endif
}

// ---------------------------------------------------------------- thread pool
// Workers spin briefly for the next job (kernels arrive every few microseconds
// during a forward pass), then sleep on a condition variable so an idle node
// costs no CPU.
class Pool {
 public:
  void resize(int n) {
    stop();
    nthreads_ = n < 1 ? 1 : n;
    quit_ = false;
    // a worker must see only generations published after it was created
    const uint64_t start = gen_.load();
    for (int i = 1; i < nthreads_; i++) workers_.emplace_back([this, i, start] { loop(i, start); });
  }
  int size() const { return nthreads_; }
  // Run fn(k) for k in [0, nthreads) and wait for all.
  void run(const std::function<void(int)>& fn) {
    if (nthreads_ == 1) { fn(0); return; }
    job_ = &fn;
    pending_.store(nthreads_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(m_);
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(0);
    while (pending_.load(std::memory_order_acquire) != 0) { /* spin: jobs are short */ }
    job_ = nullptr;
  }
  ~Pool() { stop(); }

 private:
  void stop() {
    {
      std::lock_guard<std::mutex> lk(m_);
      quit_ = true;
      gen_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }
  void loop(int k, uint64_t seen) {
    for (;;) {
      int spins = 0;
      while (gen_.load(std::memory_order_acquire) == seen && spins < 20000) spins++;
      if (gen_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return gen_.load() != seen; });
      }
      seen = gen_.load(std::memory_order_acquire);
      if (quit_.load()) return;
      (*job_)(k);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
  int nthreads_ = 1;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)>* job_ = nullptr;
  std::mutex m_;
  std::condition_variable cv_;
  std::atomic<bool> quit_{false};
};

Pool pool;

// ---------------------------------------------------------------- packing
// ggml rows -> packed groups (native/ggml.h; kernels_impl.h reads them).

bool is_float(int type) { return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16; }

// Elements per block (float types: 16 columns per packed block), bytes of a ggml
// block (float types: of one element) and of a packed block (16 rows).
struct Geometry { int block; size_t ggml_bytes, packed_bytes; };
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

// ---------------------------------------------------------------- N-API helpers

#define CHECK(call) if ((call) != napi_ok) { napi_throw_error(env, nullptr, "layerswarm native: N-API call failed: " #call); return nullptr; }

template <typename T>
bool typed(napi_env env, napi_value v, T*& data, size_t& len) {
  napi_typedarray_type type;
  size_t length;
  void* ptr;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, &length, &ptr, &ab, &off) != napi_ok) return false;
  data = (T*)ptr;
  len = length;
  return true;
}
int32_t i32(napi_env env, napi_value v) { int32_t x = 0; napi_get_value_int32(env, v, &x); return x; }
double f64(napi_env env, napi_value v) { double x = 0; napi_get_value_double(env, v, &x); return x; }

napi_value throw_err(napi_env env, const char* msg) { napi_throw_error(env, "BAD_ARGUMENT", msg); return nullptr; }

// packedSize(type, rows, cols) -> bytes (0 if the type is unsupported)
napi_value js_packed_size(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, nullptr, nullptr));
  napi_value r;
  CHECK(napi_create_double(env, (double)packed_size(i32(env, a[0]), i32(env, a[1]), i32(env, a[2])), &r));
  return r;
}

// pack(type, rows, cols, src: Uint8Array, dst: Uint8Array)
napi_value js_pack(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value a[5];
  CHECK(napi_get_cb_info(env, info, &argc, a, nullptr, nullptr));
  int type = i32(env, a[0]), rows = i32(env, a[1]), cols = i32(env, a[2]);
  uint8_t *src, *dst; size_t ns, nd;
  if (!typed(env, a[3], src, ns) || !typed(env, a[4], dst, nd)) return throw_err(env, "pack: expected Uint8Arrays");
  if (geometry(type).block == 0) return throw_err(env, "pack: unsupported weight type");
  if (ns < ggml_row_bytes(type, cols) * rows || nd < packed_size(type, rows, cols)) return throw_err(env, "pack: buffer too small");
  pack(type, rows, cols, src, dst);
  return nullptr;
}

// matmul(type, packed, rows, cols, x: Float32Array (T, cols), T, out: Float32Array (T, rows))
napi_value js_matmul(napi_env env, napi_callback_info info) {
  size_t argc = 7; napi_value a[7];
  CHECK(napi_get_cb_info(env, info, &argc, a, nullptr, nullptr));
  int type = i32(env, a[0]), rows = i32(env, a[2]), cols = i32(env, a[3]), T = i32(env, a[5]);
  uint8_t* w; float *x, *out; size_t nw, nx, no;
  if (!typed(env, a[1], w, nw) || !typed(env, a[4], x, nx) || !typed(env, a[6], out, no)) return throw_err(env, "matmul: bad arrays");
  if (packed_size(type, rows, cols) == 0) return throw_err(env, "matmul: unsupported weight type");
  if (nw < packed_size(type, rows, cols) || nx < (size_t)T * cols || no < (size_t)T * rows || T < 1) return throw_err(env, "matmul: array sizes do not match the shapes");
  const int groups = (rows + 15) / 16;
  auto fn = use_avx512() ? avx512::matmul_groups : generic::matmul_groups;
  // quantised weights: activations to int16 per block of 32 (ref/matmul.ts quantizeQ16)
  static thread_local std::vector<int16_t> xq;
  static thread_local std::vector<float> xd;
  static thread_local std::vector<int32_t> xs, xs16;
  const bool quant = is_quantized(type);
  if (quant) {
    const size_t n = (size_t)T * cols, nb = n / 32;
    if (xq.size() < n) xq.resize(n);
    if (xd.size() < nb) { xd.resize(nb); xs.resize(nb); xs16.resize(2 * nb); }
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
  const int16_t* pq = quant ? xq.data() : nullptr;
  const float* pd = quant ? xd.data() : nullptr;
  const int32_t* ps = quant ? xs.data() : nullptr;
  const int32_t* ps16 = quant ? xs16.data() : nullptr;
  const double work = (double)rows * cols * T;
  const int nt = work < (1 << 17) ? 1 : pool.size();
  if (nt == 1) { fn(type, w, rows, cols, x, pq, pd, ps, ps16, T, out, 0, groups); return nullptr; }
  // split row groups evenly; a row's result never depends on the split
  std::function<void(int)> job = [&](int k) {
    int ga = (int)((long)groups * k / nt), gb = (int)((long)groups * (k + 1) / nt);
    if (ga < gb) fn(type, w, rows, cols, x, pq, pd, ps, ps16, T, out, ga, gb);
  };
  pool.run(job);
  return nullptr;
}

// attention(out, q, kc, vc, pos, nHeads, nKV, D) for one row (offsets applied by the caller via subarray)
napi_value js_attention(napi_env env, napi_callback_info info) {
  size_t argc = 8; napi_value a[8];
  CHECK(napi_get_cb_info(env, info, &argc, a, nullptr, nullptr));
  float *out, *q, *kc, *vc; size_t no, nq, nk, nv;
  if (!typed(env, a[0], out, no) || !typed(env, a[1], q, nq) || !typed(env, a[2], kc, nk) || !typed(env, a[3], vc, nv)) return throw_err(env, "attention: bad arrays");
  int pos = i32(env, a[4]), H = i32(env, a[5]), KV = i32(env, a[6]), D = i32(env, a[7]);
  size_t kvDim = (size_t)KV * D;
  if (H % KV || no < (size_t)H * D || nq < (size_t)H * D || nk < ((size_t)pos / 16 + 1) * 16 * kvDim || nv < (size_t)(pos + 1) * kvDim)
    return throw_err(env, "attention: array sizes do not match the shapes");
  auto fn = use_avx512() ? avx512::attention_heads : generic::attention_heads;
  const int nt = (double)(pos + 1) * H * D < (1 << 15) ? 1 : pool.size();
  static thread_local std::vector<float> att0;
  if (nt == 1) {
    if (att0.size() < (size_t)pos + 16) att0.resize(pos + 16);
    fn(out, q, kc, vc, pos, H, KV, D, att0.data(), 0, H);
    return nullptr;
  }
  std::vector<std::vector<float>> atts(nt, std::vector<float>(pos + 16));
  std::function<void(int)> job = [&](int k) {
    int ha = H * k / nt, hb = H * (k + 1) / nt;
    if (ha < hb) fn(out, q, kc, vc, pos, H, KV, D, atts[k].data(), ha, hb);
  };
  pool.run(job);
  return nullptr;
}

// rmsnorm(out, x, w, T, n, eps)
napi_value js_rmsnorm(napi_env env, napi_callback_info info) {
  size_t argc = 6; napi_value a[6];
  CHECK(napi_get_cb_info(env, info, &argc, a, nullptr, nullptr));
  float *out, *x, *w; size_t no, nx, nw;
  if (!typed(env, a[0], out, no) || !typed(env, a[1], x, nx) || !typed(env, a[2], w, nw)) return throw_err(env, "rmsnorm: bad arrays");
  int T = i32(env, a[3]), n = i32(env, a[4]);
  float eps = (float)f64(env, a[5]);
  if (no < (size_t)T * n || nx < (size_t)T * n || nw < (size_t)n) return throw_err(env, "rmsnorm: array sizes do not match the shapes");
  for (int t = 0; t < T; t++) {
    const float* xr = x + (size_t)t * n;
    float* o = out + (size_t)t * n;
    float ss = 0;
    for (int j = 0; j < n; j++) ss = ss + xr[j] * xr[j];
    ss = ss / (float)n;
    ss = ss + eps;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < n; j++) o[j] = w[j] * (ss * xr[j]);
  }
  return nullptr;
}

// siluMul(g, u, n): g = silu(g) * u
napi_value js_silu_mul(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, nullptr, nullptr));
  float *g, *u; size_t ng, nu;
  if (!typed(env, a[0], g, ng) || !typed(env, a[1], u, nu)) return throw_err(env, "siluMul: bad arrays");
  size_t n = (size_t)f64(env, a[2]);
  if (ng < n || nu < n) return throw_err(env, "siluMul: array sizes do not match");
  auto body = [&](size_t a0, size_t a1) {
    for (size_t i = a0; i < a1; i++) {
      float v = g[i];
      v = v * (1.0f / (1.0f + (float)exp(-(double)v)));
      g[i] = v * u[i];
    }
  };
  const int nt = n < (1 << 14) ? 1 : pool.size();
  if (nt == 1) body(0, n);
  else {
    std::function<void(int)> job = [&](int k) { body(n * k / nt, n * (k + 1) / nt); };
    pool.run(job);
  }
  return nullptr;
}

napi_value js_set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value a[1];
  CHECK(napi_get_cb_info(env, info, &argc, a, nullptr, nullptr));
  int n = i32(env, a[0]);
  if (n < 1 || n > 256) return throw_err(env, "setThreads: 1..256");
  if (n != pool.size()) pool.resize(n);
  return nullptr;
}

napi_value js_info(napi_env env, napi_callback_info info) {
  napi_value r;
  const char* s = use_avx512() ? "avx512" : "generic";
  CHECK(napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r));
  return r;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"packedSize", nullptr, js_packed_size, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"pack", nullptr, js_pack, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"matmul", nullptr, js_matmul, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"attention", nullptr, js_attention, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"rmsnorm", nullptr, js_rmsnorm, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"siluMul", nullptr, js_silu_mul, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"setThreads", nullptr, js_set_threads, nullptr, nullptr, nullptr, napi_default, nullptr},
    {"isa", nullptr, js_info, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
