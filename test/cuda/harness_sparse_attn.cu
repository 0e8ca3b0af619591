// Standalone correctness + timing harness for templates/cuda/include/zv_sparse_attn.cuh (no framework needed).
//
// Build (from the repo root):
//   nvcc -std=c++17 -O3 -arch=sm_90a -I templates/cuda/include test/cuda/harness_sparse_attn.cu -o /tmp/harness_attn
// Run:   /tmp/harness_attn [--quick] [--no-timing] [--timing-only]
//
// Correctness: random q/k/v (values rounded to the dtype, so the float64 CPU reference sees exactly the kernel's
// inputs), random selections (count 1, n and ~30%; per-layer and per-KV-head sets), outputs poisoned with 0xFF
// bytes (NaN in every dtype) before each launch. Checked: every selected O row of small cases (a sample of rows
// for n >= 2880) against the reference with |out - ref| <= atol + rtol * |ref|; every unselected O row is exactly
// +0; every k_cache/v_cache row i < count equals k/v[order[i]] bit for bit. Variants: causal (kAttnMaskTrivial),
// causal evaluated through the generic attn_mask path, sliding window + softcap (params), non-causal.
// Timing: Hq = Hkv = 40, d = 128, bf16, causal, n = 2880 / 8192 / 32768, kept 30% (random) and 100% (dense,
// order = 0..n-1). Median of 20 after warm-up, cudaEvent. FLOPs counted = 4 * Hq * d * c * (c + 1) / 2 for c kept
// rows (QK^T and PV over the causal pairs i >= j; the usual "causal = half of 4*n^2*d" convention uses c^2/2).
// Last line: HARNESS PASS or HARNESS FAIL (k failures).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "zv_sparse_attn.cuh"

#define CK(x)                                                                                       \
  do {                                                                                              \
    cudaError_t e_ = (x);                                                                           \
    if (e_ != cudaSuccess) {                                                                        \
      printf("CUDA error %s at %s:%d: %s\nHARNESS FAIL (cuda error)\n", cudaGetErrorString(e_), __FILE__, \
             __LINE__, #x);                                                                         \
      exit(1);                                                                                      \
    }                                                                                               \
  } while (0)

// ------------------------------------------------------------------------------------------------ variants
struct VCausal {  // the paper's mask, flagged trivial: the kernel never evaluates attn_mask
  static constexpr int kActivation = 0;
  static constexpr bool kProbeCausal = true, kAttnCausal = true, kAttnMaskTrivial = true;
  __host__ __device__ static float score_mod(float s, long long, long long, long long, const double*) { return s; }
  __host__ __device__ static bool probe_mask(long long q, long long k, long long, const double*) { return k <= q; }
  __host__ __device__ static bool attn_mask(long long q, long long k, long long, const double*) { return k <= q; }
};
struct VCausalGeneric {  // same function, but attn_mask is evaluated per score (position loads from smem)
  static constexpr int kActivation = 0;
  static constexpr bool kProbeCausal = true, kAttnCausal = true;
  __host__ __device__ static float score_mod(float s, long long, long long, long long, const double*) { return s; }
  __host__ __device__ static bool probe_mask(long long q, long long k, long long, const double*) { return k <= q; }
  __host__ __device__ static bool attn_mask(long long q, long long k, long long, const double*) { return k <= q; }
};
struct VWindowSoftcap {  // P[0] = window (original positions), P[1] = softcap
  static constexpr int kActivation = 0;
  static constexpr bool kProbeCausal = true, kAttnCausal = true;
  __host__ __device__ static float score_mod(float s, long long, long long, long long, const double* P) {
    const float c = (float)P[1];
    return c * tanhf(s / c);
  }
  __host__ __device__ static bool probe_mask(long long q, long long k, long long, const double*) { return k <= q; }
  __host__ __device__ static bool attn_mask(long long q, long long k, long long, const double* P) {
    return k <= q && (double)(q - k) < P[0];
  }
};
struct VFull {  // bidirectional: exercises the count-boundary masking
  static constexpr int kActivation = 0;
  static constexpr bool kProbeCausal = false, kAttnCausal = false, kAttnMaskTrivial = true;
  __host__ __device__ static float score_mod(float s, long long, long long, long long, const double*) { return s; }
  __host__ __device__ static bool probe_mask(long long, long long, long long, const double*) { return true; }
  __host__ __device__ static bool attn_mask(long long, long long, long long, const double*) { return true; }
};

// Timing-kernel config overrides for tuning builds (-DZV_TIME_BM=... etc.); 0 = header defaults.
// Build with -DZV_HARNESS_WGMMA=0 for targets without sm_90a (e.g. -arch=sm_80): tests the mma.sync path only.
#ifndef ZV_HARNESS_WGMMA
#define ZV_HARNESS_WGMMA 1
#endif
#ifndef ZV_TIME_BM
#define ZV_TIME_BM 0
#endif
#ifndef ZV_TIME_BN
#define ZV_TIME_BN 0
#endif
#ifndef ZV_TIME_WARPS
#define ZV_TIME_WARPS 0
#endif
#ifndef ZV_TIME_MINB
#define ZV_TIME_MINB 0
#endif

template <class V, class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::MINB) attn_kernel(const ZvSparseArgs args) {
  extern __shared__ __align__(1024) unsigned char smem[];
  zv_sparse_attn<V, Cfg>(args, smem);
}

template <class V, class Cfg>
static void launch(const ZvSparseArgs& a) {
  static bool attr = false;
  if (!attr) {
    CK(cudaFuncSetAttribute(attn_kernel<V, Cfg>, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
    attr = true;
  }
  dim3 grid((unsigned)((a.n + Cfg::BM - 1) / Cfg::BM), (unsigned)a.Hq);
  attn_kernel<V, Cfg><<<grid, Cfg::kThreads, Cfg::kSmemBytes>>>(a);
  CK(cudaGetLastError());
}

enum DType { F16 = 0, BF16 = 1, F32 = 2 };
static const char* kDtName[] = {"f16", "bf16", "f32"};
static int dt_size(DType t) { return t == F32 ? 4 : 2; }

// ARCH 80: mma.sync path; ARCH 90: wgmma path where it applies (16-bit, d % 64 == 0), else mma.sync / SIMT.
// ARCH 91: arch 90 with explicit configs {BM: d <= 128 ? 128 : 64, BN: 64, warps: 4} (an explicit mma.sync-shaped
// geometry: keeps mma.sync, except d=256 whose BM = 16 * warps runs wgmma with one warpgroup).
template <class T, int D, int ARCH>
using HarnessCfg = std::conditional_t<ARCH == 91, ZvAttnConfig<T, D, D <= 128 ? 128 : 64, 64, 4, D <= 64 ? 2 : 1, 90>,
                                      ZvAttnConfig<T, D, 0, 0, 0, 0, ARCH>>;
template <class V, class T, int ARCH>
static bool launch_dim(const ZvSparseArgs& a, int d) {
  switch (d) {
    case 64: launch<V, HarnessCfg<T, 64, ARCH>>(a); return true;
    case 80: launch<V, HarnessCfg<T, 80, ARCH>>(a); return true;
    case 96: launch<V, HarnessCfg<T, 96, ARCH>>(a); return true;
    case 128: launch<V, HarnessCfg<T, 128, ARCH>>(a); return true;
    case 256: launch<V, HarnessCfg<T, 256, ARCH>>(a); return true;
  }
  return false;
}
template <class V>
static bool launch_any(const ZvSparseArgs& a, DType dt, int d, int arch) {
#if ZV_HARNESS_WGMMA
  if (arch == 90) {
    if (dt == F16) return launch_dim<V, __half, 90>(a, d);
    if (dt == BF16) return launch_dim<V, __nv_bfloat16, 90>(a, d);
  }
  if (arch == 91 && std::is_same_v<V, VCausal>) {
    if (dt == F16) return launch_dim<V, __half, 91>(a, d);
    if (dt == BF16) return launch_dim<V, __nv_bfloat16, 91>(a, d);
  }
#endif
  if (dt == F16) return launch_dim<V, __half, 80>(a, d);
  if (dt == BF16) return launch_dim<V, __nv_bfloat16, 80>(a, d);
  return launch_dim<V, float, 80>(a, d);
}

// ------------------------------------------------------------------------------------------------ host data
// Round a float to the dtype; returns the rounded value and writes its bit pattern into dst.
static double round_store(float x, DType dt, unsigned char* dst) {
  if (dt == F32) { memcpy(dst, &x, 4); return x; }
  if (dt == F16) {
    __half h = __float2half_rn(x);
    memcpy(dst, &h, 2);
    return __half2float(h);
  }
  __nv_bfloat16 b = __float2bfloat16_rn(x);
  memcpy(dst, &b, 2);
  return __bfloat162float(b);
}
static double load_val(const unsigned char* p, DType dt) {
  if (dt == F32) { float f; memcpy(&f, p, 4); return f; }
  if (dt == F16) { __half h; memcpy(&h, p, 2); return __half2float(h); }
  __nv_bfloat16 b; memcpy(&b, p, 2); return __bfloat162float(b);
}

struct Tensor {  // host copy (rounded doubles + bytes) and device buffer
  std::vector<double> val;
  std::vector<unsigned char> bytes;
  void* dev = nullptr;
};
static void make_tensor(Tensor& t, size_t elems, DType dt, std::mt19937& rng, float amp) {
  std::uniform_real_distribution<float> u(-amp, amp);
  t.val.resize(elems);
  t.bytes.resize(elems * dt_size(dt));
  for (size_t i = 0; i < elems; ++i) t.val[i] = round_store(u(rng), dt, &t.bytes[i * dt_size(dt)]);
  CK(cudaMalloc(&t.dev, t.bytes.size()));
  CK(cudaMemcpy(t.dev, t.bytes.data(), t.bytes.size(), cudaMemcpyHostToDevice));
}

// Selection of c positions out of n: order = selected ascending, then unselected ascending.
static std::vector<int> make_order(int n, int c, std::mt19937& rng, bool dense) {
  std::vector<int> perm(n);
  for (int i = 0; i < n; ++i) perm[i] = i;
  if (!dense) std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<char> sel(n, 0);
  for (int i = 0; i < c; ++i) sel[perm[i]] = 1;
  std::vector<int> order;
  for (int i = 0; i < n; ++i) if (sel[i]) order.push_back(i);
  for (int i = 0; i < n; ++i) if (!sel[i]) order.push_back(i);
  return order;
}

struct Case {
  int variant;  // 0 causal, 1 causal generic, 2 window+softcap, 3 full
  int n, hq, hkv, d;
  DType dt;
  int count_mode;  // 0: 1, 1: n, 2: ~30%
  int per_kv_head;
  int sample_rows;  // 0: check every selected row, else this many per head
  int arch;         // 80: mma.sync path, 90: wgmma path (where it applies), 91: explicit 4-warp configs on sm_90
};
static const char* kVarName[] = {"causal", "causal-generic", "window+softcap", "full"};

// float64 reference of one selected row (compacted index i) of head h.
template <class V>
static void ref_row(const Case& cs, const Tensor& q, const Tensor& k, const Tensor& v, const int* order, int count,
                    int h, int i, const double* P, double scale, std::vector<double>& out) {
  const int d = cs.d, n = cs.n, kv = h / (cs.hq / cs.hkv);
  const double* qr = &q.val[((size_t)h * n + order[i]) * d];
  const int jend = V::kAttnCausal ? i + 1 : count;
  std::vector<double> s(jend);
  double mx = -INFINITY;
  for (int j = 0; j < jend; ++j) {
    s[j] = -INFINITY;
    if (!V::attn_mask(order[i], order[j], n, P)) continue;
    const double* kr = &k.val[((size_t)kv * n + order[j]) * d];
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += qr[c] * kr[c];
    s[j] = V::score_mod((float)(dot * scale), order[i], order[j], n, P);
    mx = std::max(mx, s[j]);
  }
  out.assign(d, 0.0);
  if (mx == -INFINITY) return;
  double l = 0;
  for (int j = 0; j < jend; ++j) {
    if (s[j] == -INFINITY) continue;
    const double p = std::exp(s[j] - mx);
    l += p;
    const double* vr = &v.val[((size_t)kv * n + order[j]) * d];
    for (int c = 0; c < d; ++c) out[c] += p * vr[c];
  }
  for (int c = 0; c < d; ++c) out[c] /= l;
}

static int g_detail_budget = 24;  // mismatch lines printed over the whole run

static int run_case(const Case& cs, unsigned seed, bool verbose) {
  std::mt19937 rng(seed);
  const int n = cs.n, d = cs.d, S = cs.per_kv_head ? cs.hkv : 1, es = dt_size(cs.dt);
  const double scale = 1.0 / std::sqrt((double)d);
  Tensor q, k, v;
  make_tensor(q, (size_t)cs.hq * n * d, cs.dt, rng, 1.5f);
  make_tensor(k, (size_t)cs.hkv * n * d, cs.dt, rng, 1.5f);
  make_tensor(v, (size_t)cs.hkv * n * d, cs.dt, rng, 1.0f);
  std::vector<int> counts(S), order((size_t)S * n);
  for (int s = 0; s < S; ++s) {
    int c = cs.count_mode == 0 ? 1 : cs.count_mode == 1 ? n : std::max(1, (int)std::ceil((0.25 + 0.1 * (rng() % 1000) / 1000.0) * n));
    counts[s] = c;
    std::vector<int> o = make_order(n, c, rng, false);
    std::copy(o.begin(), o.end(), order.begin() + (size_t)s * n);
  }
  const double params[2] = {std::max(2.0, n / 7.0), 5.0};  // window, softcap

  const size_t obytes = (size_t)cs.hq * n * d * es, cbytes = (size_t)cs.hkv * n * d * es;
  void *o_dev, *kc_dev, *vc_dev;
  int *count_dev, *order_dev;
  double* params_dev;
  CK(cudaMalloc(&o_dev, obytes));
  CK(cudaMalloc(&kc_dev, cbytes));
  CK(cudaMalloc(&vc_dev, cbytes));
  CK(cudaMalloc(&count_dev, S * sizeof(int)));
  CK(cudaMalloc(&order_dev, order.size() * sizeof(int)));
  CK(cudaMalloc(&params_dev, sizeof(params)));
  CK(cudaMemcpy(count_dev, counts.data(), S * sizeof(int), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(order_dev, order.data(), order.size() * sizeof(int), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(params_dev, params, sizeof(params), cudaMemcpyHostToDevice));
  CK(cudaMemset(o_dev, 0xFF, obytes));
  CK(cudaMemset(kc_dev, 0xFF, cbytes));
  CK(cudaMemset(vc_dev, 0xFF, cbytes));

  ZvSparseArgs a;
  a.q = q.dev; a.k = k.dev; a.v = v.dev; a.o = o_dev; a.k_cache = kc_dev; a.v_cache = vc_dev;
  a.count = count_dev; a.order = order_dev; a.params = params_dev;
  a.n = n; a.Hq = cs.hq; a.Hkv = cs.hkv; a.d = d; a.per_kv_head = cs.per_kv_head; a.scale = scale;
  bool ok = cs.variant == 0 ? launch_any<VCausal>(a, cs.dt, d, cs.arch)
          : cs.variant == 1 ? launch_any<VCausalGeneric>(a, cs.dt, d, cs.arch)
          : cs.variant == 2 ? launch_any<VWindowSoftcap>(a, cs.dt, d, cs.arch)
                            : launch_any<VFull>(a, cs.dt, d, cs.arch);
  if (!ok) { printf("unsupported head dim %d\n", d); return 1; }
  CK(cudaDeviceSynchronize());

  std::vector<unsigned char> o_h(obytes), kc_h(cbytes), vc_h(cbytes);
  CK(cudaMemcpy(o_h.data(), o_dev, obytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(kc_h.data(), kc_dev, cbytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(vc_h.data(), vc_dev, cbytes, cudaMemcpyDeviceToHost));

  const double atol = cs.dt == F32 ? 1e-4 : cs.dt == F16 ? 2e-3 : 1e-2;
  const double rtol = cs.dt == F32 ? 1e-4 : cs.dt == F16 ? 4e-3 : 1e-2;
  double max_err = 0, err2 = 0, ref2 = 0;
  long long bad_o = 0, bad_zero = 0, bad_cache = 0, checked = 0;
  std::vector<double> ref;
  const int g = cs.hq / cs.hkv;
  for (int h = 0; h < cs.hq; ++h) {
    const int s = cs.per_kv_head ? h / g : 0, c = counts[s];
    const int* ord = &order[(size_t)s * n];
    std::vector<int> rows;
    if (!cs.sample_rows || cs.sample_rows >= c) {
      for (int i = 0; i < c; ++i) rows.push_back(i);
    } else {  // block edges, the ends, and random rows
      for (int i : {0, 1, 63, 64, 65, 127, 128, c / 2, c - 2, c - 1}) if (i >= 0 && i < c) rows.push_back(i);
      while ((int)rows.size() < cs.sample_rows) rows.push_back(rng() % c);
    }
    for (int i : rows) {
      auto ref_fn = cs.variant == 0 ? ref_row<VCausal> : cs.variant == 1 ? ref_row<VCausalGeneric>
                  : cs.variant == 2 ? ref_row<VWindowSoftcap> : ref_row<VFull>;
      ref_fn(cs, q, k, v, ord, c, h, i, params, scale, ref);
      const unsigned char* orow = &o_h[((size_t)h * n + ord[i]) * d * es];
      for (int x = 0; x < d; ++x) {
        const double got = load_val(orow + (size_t)x * es, cs.dt), e = std::fabs(got - ref[x]);
        if (!(e <= atol + rtol * std::fabs(ref[x]))) {
          if (g_detail_budget > 0 && bad_o < 3 && g_detail_budget--) printf("    O h=%d i=%d pos=%d col=%d got %.6f ref %.6f\n", h, i, ord[i], x, got, ref[x]);
          ++bad_o;
        }
        if (!(e <= max_err)) max_err = e;  // NaN propagates
        err2 += (got - ref[x]) * (got - ref[x]);
        ref2 += ref[x] * ref[x];
        ++checked;
      }
    }
    for (int i = c; i < n; ++i) {  // unselected rows: exactly +0
      const unsigned char* orow = &o_h[((size_t)h * n + ord[i]) * d * es];
      for (size_t b = 0; b < (size_t)d * es; ++b)
        if (orow[b]) { ++bad_zero; break; }
    }
  }
  for (int kv = 0; kv < cs.hkv; ++kv) {
    const int s = cs.per_kv_head ? kv : 0;
    for (int i = 0; i < counts[s]; ++i) {
      const size_t src = ((size_t)kv * n + order[(size_t)s * n + i]) * d * es, dst = ((size_t)kv * n + i) * d * es;
      if (memcmp(&kc_h[dst], &k.bytes[src], d * es) || memcmp(&vc_h[dst], &v.bytes[src], d * es)) ++bad_cache;
    }
  }
  const int fail = (bad_o || bad_zero || bad_cache) ? 1 : 0;
  if (verbose || fail)
    printf("%s %-14s sm%d %-4s n=%-5d Hq=%-2d Hkv=%d d=%-3d count=%-5d perkv=%d rows=%lld max_err=%.3g rel_l2=%.3g "
           "bad(o/zero/cache)=%lld/%lld/%lld seed=%u\n",
           fail ? "FAIL" : "ok  ", kVarName[cs.variant], cs.arch, kDtName[cs.dt], n, cs.hq, cs.hkv, d, counts[0],
           cs.per_kv_head, checked / d, max_err, std::sqrt(err2 / std::max(ref2, 1e-300)), bad_o, bad_zero,
           bad_cache, seed);
  for (void* p : {q.dev, k.dev, v.dev, o_dev, kc_dev, vc_dev, (void*)count_dev, (void*)order_dev, (void*)params_dev})
    CK(cudaFree(p));
  return fail;
}

// ------------------------------------------------------------------------------------------------ timing
template <class Cfg>
static int run_timing(const char* label) {
  const int H = 40, d = 128;
  printf("\nTiming [%s]: bf16 d=128 Hq=Hkv=40 causal, BM=%d BN=%d warps=%d minBlocks=%d smem=%d B\n", label,
         Cfg::BM, Cfg::BN, Cfg::WARPS, Cfg::MINB, Cfg::kSmemBytes);
  printf("  FLOPs = 4 * Hq * d * c * (c + 1) / 2, c = kept rows (also reported: dense-equivalent = same formula "
         "with c = n)\n");
  printf("  %-6s %-6s %-7s %10s %10s %14s\n", "n", "kept", "c", "ms", "TFLOP/s", "dense-eq TF/s");
  int fails = 0;
  for (int n : {2880, 8192, 32768}) {
    std::mt19937 rng(1234 + n);
    const size_t elems = (size_t)H * n * d;
    std::vector<__nv_bfloat16> hbuf(elems);
    void *q, *k, *v, *o, *kc, *vc;
    for (void** p : {&q, &k, &v}) {
      std::uniform_real_distribution<float> u(-1.5f, 1.5f);
      for (auto& x : hbuf) x = __float2bfloat16_rn(u(rng));
      CK(cudaMalloc(p, elems * 2));
      CK(cudaMemcpy(*p, hbuf.data(), elems * 2, cudaMemcpyHostToDevice));
    }
    for (void** p : {&o, &kc, &vc}) CK(cudaMalloc(p, elems * 2));
    int *count_dev, *order_dev;
    CK(cudaMalloc(&count_dev, sizeof(int)));
    CK(cudaMalloc(&order_dev, n * sizeof(int)));
    for (int dense = 0; dense < 2; ++dense) {
      const int c = dense ? n : (int)std::ceil(0.3 * n);
      std::vector<int> order = make_order(n, c, rng, dense);
      CK(cudaMemcpy(order_dev, order.data(), n * sizeof(int), cudaMemcpyHostToDevice));
      CK(cudaMemcpy(count_dev, &c, sizeof(int), cudaMemcpyHostToDevice));
      ZvSparseArgs a;
      a.q = q; a.k = k; a.v = v; a.o = o; a.k_cache = kc; a.v_cache = vc;
      a.count = count_dev; a.order = order_dev; a.params = nullptr;
      a.n = n; a.Hq = H; a.Hkv = H; a.d = d; a.per_kv_head = 0; a.scale = 1.0 / std::sqrt((double)d);
      cudaEvent_t e0, e1;
      CK(cudaEventCreate(&e0));
      CK(cudaEventCreate(&e1));
      for (int w = 0; w < 3; ++w) launch<VCausal, Cfg>(a);
      CK(cudaDeviceSynchronize());
      std::vector<float> ms(20);
      for (auto& m : ms) {
        CK(cudaEventRecord(e0));
        launch<VCausal, Cfg>(a);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&m, e0, e1));
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      const double flops = 4.0 * H * d * (double)c * (c + 1) / 2, dense_flops = 4.0 * H * d * (double)n * (n + 1) / 2;
      printf("  %-6d %-6s %-7d %10.3f %10.1f %14.1f\n", n, dense ? "100%" : "30%", c, med, flops / med * 1e-9,
             dense_flops / med * 1e-9);
      CK(cudaEventDestroy(e0));
      CK(cudaEventDestroy(e1));
    }
    for (void* p : {q, k, v, o, kc, vc, (void*)count_dev, (void*)order_dev}) CK(cudaFree(p));
  }
  return fails;
}

int main(int argc, char** argv) {
  bool quick = false, timing = true, correctness = true;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--quick")) quick = true;
    if (!strcmp(argv[i], "--no-timing")) timing = false;
    if (!strcmp(argv[i], "--timing-only")) correctness = false;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);

  std::vector<Case> cases;
  auto add = [&](Case c) {  // every case on the mma.sync path, and again on the wgmma path where it applies
    c.arch = 80;
    cases.push_back(c);
    if (ZV_HARNESS_WGMMA && c.dt != F32 && c.d % 64 == 0) {
      c.arch = 90;
      cases.push_back(c);
    }
    if (ZV_HARNESS_WGMMA && c.dt != F32 && c.variant == 0 && (c.n == 127 || c.n == 2880)) {
      c.arch = 91;  // the explicit 4-warp configs a scheduler may pass on sm_90
      cases.push_back(c);
    }
  };
  const int dims[] = {64, 80, 96, 128, 256};
  const int ratios[] = {1, 4, 8};
  int idx = 0;
  if (correctness) {
    for (int n : {1, 5, 64, 65, 127})
      for (int dt = 0; dt < 3; ++dt)
        for (int d : dims)
          for (int r : ratios)
            for (int cm = 0; cm < 3; ++cm, ++idx) {
              if (quick && idx % 5) continue;
              add({0, n, 2 * r, 2, d, (DType)dt, cm, idx & 1, 0, 80});
            }
    for (int n : {2880, 8193})
      for (int dt = 0; dt < 3; ++dt)
        for (int d : dims)
          for (int cm = 0; cm < 3; ++cm, ++idx) {
            if (quick && idx % 3) continue;
            const int r = ratios[idx % 3];
            add({0, n, 2 * r, 2, d, (DType)dt, cm, idx & 1, n > 4000 ? 12 : 24, 80});
          }
    for (int var = 1; var < 4; ++var)  // other variants: generic mask path, params, non-causal
      for (int n : {65, 127, 2880})
        for (int dt : {BF16, F32, F16})
          for (int d : {64, 128})
            for (int cm : {1, 2}) {
              ++idx;
              if (quick && idx % 3) continue;
              add({var, n, 8, 2, d, (DType)dt, cm, idx & 1, n > 1000 ? 24 : 0, 80});
            }
  }
  int fails = 0;
  for (size_t i = 0; i < cases.size(); ++i) fails += run_case(cases[i], 1000u + (unsigned)i, false);
  if (correctness) printf("correctness: %zu cases, %d failed\n", cases.size(), fails);
  if (timing) {
    using B16 = __nv_bfloat16;
    fails += run_timing<ZvAttnConfig<B16, 128, ZV_TIME_BM, ZV_TIME_BN, ZV_TIME_WARPS, ZV_TIME_MINB, 80>>("mma.sync");
#if ZV_HARNESS_WGMMA
    fails += run_timing<ZvAttnConfig<B16, 128, ZV_TIME_BM, ZV_TIME_BN, ZV_TIME_WARPS, ZV_TIME_MINB, 90>>("wgmma");
#endif
#ifdef ZV_TUNE  // extra configurations for tuning runs
    fails += run_timing<ZvAttnConfig<B16, 128, 128, 128, 8, 1, 90>>("wgmma 128x128 minB1");
    fails += run_timing<ZvAttnConfig<B16, 128, 64, 128, 4, 2, 90>>("wgmma 64x128 minB2");
    fails += run_timing<ZvAttnConfig<B16, 128, 64, 64, 4, 3, 90>>("wgmma 64x64 minB3");
    fails += run_timing<ZvAttnConfig<B16, 128, 128, 32, 4, 2, 80>>("mma.sync 128x32 minB2");
#endif
  }
  if (fails) printf("HARNESS FAIL (%d failures)\n", fails);
  else printf("HARNESS PASS\n");
  return fails ? 1 : 0;
}
