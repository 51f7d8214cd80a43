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
#include "pack.h"

namespace avx512 {
void matmul_groups(int, const uint8_t*, int, int, const float*, const int16_t*, const float*, const int32_t*, const int32_t*, int, float*, int, int);
void attention_heads(float*, const float*, const float*, const float*, int, int, int, int, float*, int, int);
void rmsnorm(float*, const float*, const float*, int, int, float);
void silu_mul(float*, const float*, size_t, size_t);
}
namespace generic {
void matmul_groups(int, const uint8_t*, int, int, const float*, const int16_t*, const float*, const int32_t*, const int32_t*, int, float*, int, int);
void attention_heads(float*, const float*, const float*, const float*, int, int, int, int, float*, int, int);
void rmsnorm(float*, const float*, const float*, int, int, float);
void silu_mul(float*, const float*, size_t, size_t);
}

namespace {

using lspack::geometry;
using lspack::ggml_row_bytes;
using lspack::is_quantized;
using lspack::pack;
using lspack::packed_size;

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
    lspack::quantize_q16(x, n, xq.data(), xd.data(), xs.data(), xs16.data());
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
  (use_avx512() ? avx512::rmsnorm : generic::rmsnorm)(out, x, w, T, n, eps);
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
  auto body = [&](size_t a0, size_t a1) { (use_avx512() ? avx512::silu_mul : generic::silu_mul)(g, u, a0, a1); };
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
