// Self-checking harness for the probe / select / decode device library (templates/cuda/include).
// Build and run: see test/cuda/README.md. Prints per-case results, a timing table, then HARNESS PASS / FAIL.
// References are plain float64 CPU code; inputs are quantized to the dtype first so both sides see equal values.
// Selection is checked against the GPU's own colmass (so probe rounding cannot cascade) with a tolerance band,
// and exactly against its own norm_scores (top-K with ties to the smaller position).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "zv_decode.cuh"
#include "zv_probe.cuh"
#include "zv_select.cuh"

#define CK(x)                                                                                           \
  do {                                                                                                  \
    cudaError_t e_ = (x);                                                                               \
    if (e_ != cudaSuccess) {                                                                            \
      printf("CUDA error %s at line %d: %s\nHARNESS FAIL (cuda error)\n", #x, __LINE__, cudaGetErrorString(e_)); \
      exit(1);                                                                                          \
    }                                                                                                   \
  } while (0)

// ---- variants (the CPU mirrors are ref_mod / ref_mask) ----
struct Causal {  // the paper's setting: softmax, causal probes
  static constexpr int kActivation = 0;
  static constexpr bool kProbeCausal = true, kAttnCausal = true;
  __device__ static float score_mod(float s, long long, long long, long long, const double*) { return s; }
  __device__ static bool probe_mask(long long q, long long k, long long, const double*) { return k <= q; }
  __device__ static bool attn_mask(long long q, long long k, long long, const double*) { return k <= q; }
};
struct SigWin {  // non-causal path: sigmoid, softcap modifier, 16-token look-ahead
  static constexpr int kActivation = 1;
  static constexpr bool kProbeCausal = false, kAttnCausal = false;
  __device__ static float score_mod(float s, long long, long long, long long, const double* P) {
    const float cap = (float)P[0];
    return cap * tanhf(s / cap);
  }
  __device__ static bool probe_mask(long long q, long long k, long long, const double*) { return k <= q + 16; }
  __device__ static bool attn_mask(long long, long long, long long, const double*) { return true; }
};
static double ref_mod(int var, double s) { return var == 0 ? s : 30.0 * tanh(s / 30.0); }
static bool ref_mask(int var, long long q, long long k) { return var == 0 ? k <= q : k <= q + 16; }

// ---- kernels and launch helpers (geometry as documented in the templates) ----
template <typename T, int D> using ProbeCfg = zv::ProbeConfig<T, D, 0, 0, 0, 0>;  // template defaults
template <class V, typename T, int D>
__global__ void __launch_bounds__(ProbeCfg<T, D>::kThreads, ProbeCfg<T, D>::kMinBlocks) k_probe(const ZvProbeArgs a) {
  zv::probe_kernel<V, T, D, ProbeCfg<T, D>>(a);
}
__global__ void __launch_bounds__(1024, 1) k_select(const ZvSelectArgs a) { zv::select_kernel<1024>(a); }
template <typename T, int D, int M = 0>
__global__ void __launch_bounds__(zv::DecodeConfig<T, D, 0, M>::kThreads, zv::DecodeConfig<T, D, 0, M>::kSplitMinBlocks)
    k_dsplit(const ZvDecodeArgs a) {
  zv::decode_split_kernel<T, D, zv::DecodeConfig<T, D, 0, M>>(a);
}
static int g_dmma = 0;  // 1: decode steps use the tensor-core split kernel (decode.cu.hbs config mma: 1)
template <typename T, int D>
__global__ void __launch_bounds__(128) k_dcombine(const ZvDecodeArgs a) {
  zv::decode_combine_kernel<T, D, zv::DecodeConfig<T, D, 0>>(a);
}

enum DT { F32 = 0, F16 = 1, BF16 = 2 };
static const char* dt_name[] = {"f32", "f16", "bf16"};
static size_t dt_size(DT t) { return t == F32 ? 4 : 2; }

template <class V, typename T, int D>
void probe_launch(const ZvProbeArgs& a) {
  using C = ProbeCfg<T, D>;
  dim3 grid((unsigned)((a.Hq / a.Hkv * a.m + C::kBM - 1) / C::kBM), (unsigned)a.Hkv);
  k_probe<V, T, D><<<grid, C::kThreads>>>(a);
}
// Probe with a thread-block cluster of CL CTAs splitting the keys (sm_90 only; probe.cu.hbs config `cluster`).
// The kernel carries __cluster_dims__ as the generated one does: a plain launch, grid.x = row blocks * CL.
#if !defined(__CUDA_ARCH_LIST__) || __CUDA_ARCH_LIST__ >= 900
#define ZV_HARNESS_CLUSTER 1
#else
#define ZV_HARNESS_CLUSTER 0
#endif
#if ZV_HARNESS_CLUSTER
template <class V, typename T, int D, class C>
__global__ void __launch_bounds__(C::kThreads, C::kMinBlocks) __cluster_dims__(C::kCluster, 1, 1) k_probe_cfg(const ZvProbeArgs a) {
  zv::probe_kernel<V, T, D, C>(a);
}
template <class V, typename T, int D, class C>
void probe_launch_cfg(const ZvProbeArgs& a) {
  dim3 grid((unsigned)((a.Hq / a.Hkv * a.m + C::kBM - 1) / C::kBM * C::kCluster), (unsigned)a.Hkv);
  k_probe_cfg<V, T, D, C><<<grid, C::kThreads>>>(a);
}
template <class V, typename T, int D, int CL>
void probe_launch_cl(const ZvProbeArgs& a) {  // template defaults plus the cluster
  probe_launch_cfg<V, T, D, zv::ProbeConfig<T, D, 0, 0, 0, 0, 0, CL>>(a);
}
#endif
// One decode step as src/backends/cuda/pipeline.ts enqueues it: the split kernel, then the combine kernel only when
// there are several splits and no arrival counters (with counters, the last CTA of each KV head merges them).
template <typename T, int D>
void decode_launch(const ZvDecodeArgs& a, cudaStream_t st = 0) {
  if (g_dmma) k_dsplit<T, D, 1><<<dim3((unsigned)a.Hkv, (unsigned)a.splits), zv::DecodeConfig<T, D, 0, 1>::kThreads, 0, st>>>(a);
  else k_dsplit<T, D><<<dim3((unsigned)a.Hkv, (unsigned)a.splits), zv::DecodeConfig<T, D, 0>::kThreads, 0, st>>>(a);
  if (a.splits > 1 && a.counters == nullptr)
    k_dcombine<T, D><<<(unsigned)a.Hq, zv::DecodeConfig<T, D, 0>::kCombineThreads, 0, st>>>(a);
}
#define ZV_DISPATCH(FN, dt, d, a)                                                                     \
  do {                                                                                                \
    switch ((dt) * 1000 + (d)) {                                                                      \
      case 64: FN<float, 64>(a); break;          case 80: FN<float, 80>(a); break;                    \
      case 96: FN<float, 96>(a); break;          case 128: FN<float, 128>(a); break;                  \
      case 256: FN<float, 256>(a); break;        case 1064: FN<__half, 64>(a); break;                 \
      case 1080: FN<__half, 80>(a); break;       case 1096: FN<__half, 96>(a); break;                 \
      case 1128: FN<__half, 128>(a); break;      case 1256: FN<__half, 256>(a); break;                \
      case 2064: FN<__nv_bfloat16, 64>(a); break; case 2080: FN<__nv_bfloat16, 80>(a); break;         \
      case 2096: FN<__nv_bfloat16, 96>(a); break; case 2128: FN<__nv_bfloat16, 128>(a); break;        \
      case 2256: FN<__nv_bfloat16, 256>(a); break;                                                    \
      default: printf("no instantiation for dtype %d d %d\n", (int)(dt), (int)(d)); exit(1);          \
    }                                                                                                 \
  } while (0)
template <typename T, int D> void probe_causal(const ZvProbeArgs& a) { probe_launch<Causal, T, D>(a); }
template <typename T, int D> void probe_sigwin(const ZvProbeArgs& a) { probe_launch<SigWin, T, D>(a); }
// Cluster cases: a few (dtype, d) instances (f32 SIMT, bf16 d128, f16 d80 with its trailing 16-wide chunk, d256)
// times clusters 2/4/8 and both variants; returns false for a combination that has no instance.
static bool probe_cluster_dispatch(int var, int dt, int d, int cl, const ZvProbeArgs& a) {
#if ZV_HARNESS_CLUSTER
#define ZV_CL(T, D)                                                                                 \
  if (cl == 2) { if (var == 0) probe_launch_cl<Causal, T, D, 2>(a); else probe_launch_cl<SigWin, T, D, 2>(a); return true; } \
  if (cl == 4) { if (var == 0) probe_launch_cl<Causal, T, D, 4>(a); else probe_launch_cl<SigWin, T, D, 4>(a); return true; } \
  if (cl == 8) { if (var == 0) probe_launch_cl<Causal, T, D, 8>(a); else probe_launch_cl<SigWin, T, D, 8>(a); return true; } \
  return false;
  switch (dt * 1000 + d) {
    case 64: { ZV_CL(float, 64) }
    case 1080: { ZV_CL(__half, 80) }
    case 2128: { ZV_CL(__nv_bfloat16, 128) }
    case 2256: { ZV_CL(__nv_bfloat16, 256) }
  }
#undef ZV_CL
#endif
  (void)var; (void)dt; (void)d; (void)cl; (void)a;
  return false;
}

static int g_sel_smem_max = 0;  // opt-in dynamic shared memory for k_select
static void select_launch(const ZvSelectArgs& a, bool allow_smem) {
  const int smem = allow_smem && 4 * a.n <= g_sel_smem_max ? (int)(4 * a.n) : 0;
  k_select<<<(unsigned)a.S, 1024, smem>>>(a);
}

// ---- host data ----
static unsigned long long g_rng = 0x9E3779B97F4A7C15ull;
static double urand() {
  g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
  return ((g_rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}
static float nrand() { return (float)(sqrt(-2.0 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand())); }
// Quantize to dtype: returns device bytes and fills `deq` with the exact values the GPU will see.
static std::vector<unsigned char> quantize(DT t, const std::vector<float>& x, std::vector<float>& deq) {
  std::vector<unsigned char> b(x.size() * dt_size(t));
  deq.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (t == F32) { memcpy(&b[4 * i], &x[i], 4); deq[i] = x[i]; }
    else if (t == F16) { __half h = __float2half(x[i]); memcpy(&b[2 * i], &h, 2); deq[i] = __half2float(h); }
    else { __nv_bfloat16 h = __float2bfloat16(x[i]); memcpy(&b[2 * i], &h, 2); deq[i] = __bfloat162float(h); }
  }
  return b;
}
static float to_f(DT t, const unsigned char* p) {
  if (t == F32) { float f; memcpy(&f, p, 4); return f; }
  if (t == F16) { __half h; memcpy(&h, p, 2); return __half2float(h); }
  __nv_bfloat16 h; memcpy(&h, p, 2); return __bfloat162float(h);
}
template <typename X> static X* dev(const void* host, size_t bytes) {
  void* p; CK(cudaMalloc(&p, bytes ? bytes : 4));
  if (host) CK(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice)); else CK(cudaMemset(p, 0xFF, bytes ? bytes : 4));
  return (X*)p;
}
template <typename X> static std::vector<X> get(const X* d, size_t n) {
  std::vector<X> h(n); CK(cudaMemcpy(h.data(), d, n * sizeof(X), cudaMemcpyDeviceToHost)); return h;
}
// 64 most recent style: last `recent` rows plus `random` distinct earlier rows, ascending.
static std::vector<int> make_probes(int n, int recent, int random) {
  std::vector<int> p;
  const int r = std::min(n, recent);
  for (int i = n - r; i < n; ++i) p.push_back(i);
  std::vector<int> pool(n - r);
  for (int i = 0; i < n - r; ++i) pool[i] = i;
  for (int i = 0; i < std::min(random, n - r); ++i) {
    std::swap(pool[i], pool[i + (int)(urand() * (n - r - i))]);
    p.push_back(pool[i]);
  }
  std::sort(p.begin(), p.end());
  return p;
}

// ---- float64 references ----
static void ref_probe(int var, int n, int d, int Hq, int Hkv, bool per_kv, const std::vector<int>& P,
                      const std::vector<float>& q, const std::vector<float>& k, std::vector<double>& cm,
                      std::vector<double>& vis) {
  const int g = Hq / Hkv;
  const double scale = 1.0 / sqrt((double)d);
  cm.assign((per_kv ? Hkv : 1) * (size_t)n, 0.0);
  vis.assign(n, 0.0);
  for (int j = 0; j < n; ++j) for (int p : P) vis[j] += ref_mask(var, p, j);
  std::vector<double> s(n);
  for (int h = 0; h < Hq; ++h)
    for (int p : P) {
      const float* qr = &q[((size_t)h * n + p) * d];
      double mx = -INFINITY, sum = 0.0;
      for (int j = 0; j < n; ++j) {
        if (!ref_mask(var, p, j)) { s[j] = NAN; continue; }
        const float* kr = &k[((size_t)(h / g) * n + j) * d];
        double dot = 0.0;
        for (int e = 0; e < d; ++e) dot += (double)qr[e] * kr[e];
        s[j] = ref_mod(var, dot * scale);
        mx = std::max(mx, s[j]);
      }
      if (var == 0) for (int j = 0; j < n; ++j) if (s[j] == s[j]) sum += exp(s[j] - mx);
      double* out = &cm[per_kv ? (size_t)(h / g) * n : 0];
      for (int j = 0; j < n; ++j)
        if (s[j] == s[j]) out[j] += var == 0 ? exp(s[j] - mx) / sum : 1.0 / (1.0 + exp(-s[j]));
    }
}

struct SelCfg { int mode; double amount; int normalizer, pool_kind, pool_size, keep_first, keep_last; };

// Checks one selection set against the float64 reference computed from the GPU's own colmass/visible.
// Returns the number of failures; *mism = membership differences vs the exact reference (informational).
static int check_select(const SelCfg& c, int n, const float* cm, const float* vis, const float* gns, int gcount,
                        const int* gord, int* mism, char* msg) {
  std::vector<double> s(n), sp(n);
  for (int j = 0; j < n; ++j) {
    const double div = c.normalizer == 0 ? vis[j] : c.normalizer == 1 ? n - j : 1.0;
    s[j] = div != 0 ? cm[j] / div : 0.0;
  }
  const int half = c.pool_kind && c.pool_size > 1 ? c.pool_size / 2 : 0;
  double smax = 0;
  for (int j = 0; j < n; ++j) {
    const int lo = std::max(0, j - half), hi = std::min(n - 1, j + half);
    double v = c.pool_kind == 1 ? -INFINITY : 0.0;
    for (int i = lo; i <= hi; ++i) v = c.pool_kind == 1 ? std::max(v, s[i]) : v + s[i];
    sp[j] = half == 0 ? s[j] : c.pool_kind == 1 ? v : v / (hi - lo + 1);
    smax = std::max(smax, fabs(sp[j]));
  }
  for (int j = 0; j < n; ++j)
    if (!(fabs(gns[j] - sp[j]) <= 2e-5 * fabs(sp[j]) + 1e-7 * smax)) {
      sprintf(msg, "norm_scores[%d] %g vs ref %g", j, gns[j], sp[j]); return 1;
    }
  // Count band: any p whose cumulative mass is within eps of the threshold is acceptable (see zv_select.cuh).
  long long plo, phi;
  if (c.mode == 0) {
    std::vector<double> a(cm, cm + n);
    double total = 0, absum = 0;
    for (double x : a) total += x, absum += fabs(x);
    std::sort(a.begin(), a.end(), std::greater<double>());
    const double target = c.amount * total, eps = 1e-9 * absum;
    double cum = 0, cmax = -INFINITY;
    std::vector<double> cs(n);
    for (int i = 0; i < n; ++i) cs[i] = cum += a[i], cmax = std::max(cmax, cum);
    plo = phi = n;
    for (int i = n - 1; i >= 0; --i) {
      if (cs[i] >= target - eps) plo = i + 1;
      if (cs[i] >= std::min(target + eps, cmax)) phi = i + 1;
    }
    phi = std::max(phi, plo);
  } else {
    plo = phi = c.mode == 1 ? std::min<long long>(n, std::max(1.0, ceil(c.amount * n - 1e-9)))  // src/interp
              : c.mode == 2 ? std::min<long long>(n, std::max(1ll, (long long)c.amount)) : n;
  }
  const int kf = std::min(n, c.keep_first), kl = std::min(n, c.keep_last), nf = std::min(n, kf + kl);
  auto cnt_of = [&](long long p) { return nf + (int)std::min<long long>(n - nf, std::max(0ll, p - nf)); };
  if (gcount < cnt_of(plo) || gcount > cnt_of(phi)) {
    sprintf(msg, "count %d outside [%d, %d]", gcount, cnt_of(plo), cnt_of(phi)); return 1;
  }
  std::vector<char> sel(n, 0), seen(n, 0);
  for (int i = 0; i < n; ++i) {
    const int j = gord[i];
    if (j < 0 || j >= n || seen[j]) { sprintf(msg, "order[%d] = %d is not a permutation", i, j); return 1; }
    seen[j] = 1; sel[j] = i < gcount;
    if (i > 0 && i != gcount && gord[i - 1] >= j) { sprintf(msg, "order not ascending at %d", i); return 1; }
  }
  for (int j = 0; j < n; ++j)
    if ((j < kf || j >= n - kl) && !sel[j]) { sprintf(msg, "forced %d not selected", j); return 1; }
  // Exact: selection is the top-K of the GPU's own scores, ties to the smaller position.
  float minsel = INFINITY, maxun = -INFINITY;
  for (int j = kf; j < n - kl; ++j) (sel[j] ? minsel : maxun) = sel[j] ? std::min(minsel, gns[j]) : std::max(maxun, gns[j]);
  int last_sel_tie = -1, first_un_tie = n;
  for (int j = kf; j < n - kl; ++j) {
    if (sel[j] && gns[j] == maxun) last_sel_tie = std::max(last_sel_tie, j);
    if (!sel[j] && gns[j] == minsel) first_un_tie = std::min(first_un_tie, j);
  }
  if (minsel < maxun || last_sel_tie > first_un_tie) {
    sprintf(msg, "not top-K of own scores (min sel %g, max unsel %g)", minsel, maxun); return 1;
  }
  // Tolerance vs float64 scores.
  const int K = gcount - nf;
  std::vector<int> idx;
  for (int j = kf; j < n - kl; ++j) idx.push_back(j);
  std::stable_sort(idx.begin(), idx.end(), [&](int x, int y) { return sp[x] > sp[y]; });
  *mism = 0;
  if (K > 0 && K < (int)idx.size()) {
    const double thr = sp[idx[K - 1]], tol = 2e-5 * fabs(thr) + 1e-7 * smax;
    for (int r = 0; r < (int)idx.size(); ++r) {
      const int j = idx[r];
      *mism += (r < K) != (bool)sel[j];
      if (sel[j] ? sp[j] < thr - tol : sp[j] > thr + tol) { sprintf(msg, "pos %d score %g vs thr %g", j, sp[j], thr); return 1; }
    }
  }
  return 0;
}

// ---- test cases ----
struct PCase { int var; DT dt; int d, n, recent, random, Hq, Hkv, per_kv; SelCfg sel; int cluster = 1; };
static int g_fail = 0;

static void run_probe_select(const PCase& c) {
  const int n = c.n, d = c.d, S = c.per_kv ? c.Hkv : 1;
  std::vector<float> qf((size_t)c.Hq * n * d), kf((size_t)c.Hkv * n * d), q, k;
  for (auto& x : qf) x = nrand();
  for (auto& x : kf) x = nrand();
  const auto qb = quantize(c.dt, qf, q), kb = quantize(c.dt, kf, k);
  const std::vector<int> P = make_probes(n, c.recent, c.random);
  const double params[1] = {30.0};
  ZvProbeArgs pa{};
  pa.q = dev<void>(qb.data(), qb.size()); pa.k = dev<void>(kb.data(), kb.size());
  pa.probes = dev<int>(P.data(), P.size() * 4);
  pa.colmass = dev<float>(nullptr, (size_t)S * n * 4); pa.visible = dev<float>(nullptr, (size_t)n * 4);
  pa.params = dev<double>(params, 8);
  pa.n = n; pa.m = (long long)P.size(); pa.Hq = c.Hq; pa.Hkv = c.Hkv; pa.d = d; pa.per_kv_head = c.per_kv;
  pa.scale = 1.0 / sqrt((double)d);
  CK(cudaMemset(pa.colmass, 0, (size_t)S * n * 4));
  if (c.cluster > 1) {
    if (!probe_cluster_dispatch(c.var, c.dt, d, c.cluster, pa)) {
      printf("no cluster instance for dtype %d d %d cluster %d\n", (int)c.dt, d, c.cluster);
      exit(1);
    }
  } else if (c.var == 0) {
    ZV_DISPATCH(probe_causal, c.dt, d, pa);
  } else {
    ZV_DISPATCH(probe_sigwin, c.dt, d, pa);
  }
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  const auto gcm = get(pa.colmass, (size_t)S * n), gvis = get(pa.visible, n);
  std::vector<double> rcm, rvis;
  ref_probe(c.var, n, d, c.Hq, c.Hkv, c.per_kv, P, q, k, rcm, rvis);
  double rmax = 0, err = 0;
  for (double x : rcm) rmax = std::max(rmax, fabs(x));
  int bad = 0;
  for (size_t i = 0; i < rcm.size(); ++i) {
    const double e = fabs(gcm[i] - rcm[i]);
    err = std::max(err, e == e ? e : INFINITY);
    bad += !(e <= 2e-3 * fabs(rcm[i]) + 2e-5 * rmax);
  }
  for (int j = 0; j < n; ++j) bad += gvis[j] != rvis[j];
  // Selection: shared-memory path and (when they differ) the global fallback must agree bit for bit.
  ZvSelectArgs sa{};
  sa.colmass = pa.colmass; sa.visible = pa.visible;
  sa.norm_scores = dev<float>(nullptr, (size_t)S * n * 4); sa.count = dev<int>(nullptr, S * 4);
  sa.order = dev<int>(nullptr, (size_t)S * n * 4); sa.params = pa.params;
  sa.n = n; sa.S = S; sa.mode = c.sel.mode; sa.amount = c.sel.amount; sa.normalizer = c.sel.normalizer;
  sa.pool_kind = c.sel.pool_kind; sa.pool_size = c.sel.pool_size;
  sa.keep_first = c.sel.keep_first; sa.keep_last = c.sel.keep_last;
  select_launch(sa, true);
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  const auto gns = get(sa.norm_scores, (size_t)S * n);
  const auto gord = get(sa.order, (size_t)S * n), gcnt = get(sa.count, S);
  select_launch(sa, false);
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  int fb_diff = get(sa.order, (size_t)S * n) != gord || get(sa.count, S) != gcnt;
  char msg[256] = "";
  int sel_fail = 0, mism = 0, mm;
  for (int s = 0; s < S; ++s) {
    sel_fail += check_select(c.sel, n, &gcm[(size_t)s * n], gvis.data(), &gns[(size_t)s * n], gcnt[s],
                             &gord[(size_t)s * n], &mm, msg);
    mism += mm;
  }
  const bool ok = bad == 0 && sel_fail == 0 && !fb_diff;
  g_fail += !ok;
  if (c.cluster > 1) printf("cluster=%d ", c.cluster);
  printf("%-4s %s %-4s d=%-3d n=%-5d m=%-3d Hq=%-2d Hkv=%-2d S=%d mode=%d amt=%-5g norm=%d pool=%d/%lld keep=%d/%d | "
         "colmass maxerr %.2e bad %d | count %d mism %d%s %s\n",
         ok ? "ok" : "FAIL", c.var ? "sigwin" : "causal", dt_name[c.dt], d, n, (int)P.size(), c.Hq, c.Hkv, S,
         c.sel.mode, c.sel.amount, c.sel.normalizer, c.sel.pool_kind, (long long)c.sel.pool_size, c.sel.keep_first,
         c.sel.keep_last, err, bad, gcnt[0], mism, fb_diff ? " FALLBACK-DIFFERS" : "", msg);
  for (const void* p : {pa.q, pa.k, (const void*)pa.probes, (const void*)pa.colmass, (const void*)pa.visible,
                        (const void*)pa.params, (const void*)sa.norm_scores, (const void*)sa.count, (const void*)sa.order})
    CK(cudaFree((void*)p));
}

// fuse: 1 = arrival counters (one launch; the last CTA per KV head combines), 0 = separate combine kernel.
struct DCase { DT dt; int d, Hq, Hkv, len, cap, splits, fuse; };
static void run_decode(const DCase& c) {
  const int d = c.d;
  std::vector<float> qf((size_t)c.Hq * d), kf((size_t)c.Hkv * c.cap * d), vf(kf.size()), q, k, v;
  for (auto& x : qf) x = nrand();
  for (auto& x : kf) x = nrand();
  for (auto& x : vf) x = nrand();
  auto qb = quantize(c.dt, qf, q), kb = quantize(c.dt, kf, k), vb = quantize(c.dt, vf, v);
  for (int h = 0; h < c.Hkv; ++h)  // rows past the length are NaN: reading them would poison the output
    for (size_t i = ((size_t)h * c.cap + c.len) * d * dt_size(c.dt); i < (size_t)(h + 1) * c.cap * d * dt_size(c.dt); ++i)
      kb[i] = vb[i] = 0xFF;
  ZvDecodeArgs a{};
  a.q = dev<void>(qb.data(), qb.size()); a.k_cache = dev<void>(kb.data(), kb.size());
  a.v_cache = dev<void>(vb.data(), vb.size()); a.o = dev<void>(nullptr, (size_t)c.Hq * d * dt_size(c.dt));
  a.part_o = dev<float>(nullptr, (size_t)c.Hq * c.splits * d * 4);
  a.part_ml = dev<float>(nullptr, (size_t)c.Hq * c.splits * 8);
  a.length = dev<int>(&c.len, 4);
  a.capacity = c.cap; a.Hq = c.Hq; a.Hkv = c.Hkv; a.d = d; a.splits = c.splits; a.scale = 1.0 / sqrt((double)d);
  if (c.fuse) { a.counters = dev<unsigned>(nullptr, (size_t)c.Hkv * 4); CK(cudaMemset(a.counters, 0, (size_t)c.Hkv * 4)); }
  // Twice: the second launch sees the counters the first left behind (they must be back at zero).
  for (int rep = 0; rep < 2; ++rep) {
    CK(cudaMemset(a.o, 0xFF, (size_t)c.Hq * d * dt_size(c.dt)));
    ZV_DISPATCH(decode_launch, c.dt, d, a);
    CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  }
  int dirty = 0;
  if (c.fuse) for (unsigned x : get(a.counters, c.Hkv)) dirty += x != 0;
  const auto go = get((const unsigned char*)a.o, (size_t)c.Hq * d * dt_size(c.dt));
  const int g = c.Hq / c.Hkv;
  double err = 0;
  int bad = 0;
  const double tol = c.dt == F32 ? 1e-5 : c.dt == F16 ? 2e-3 : 1.6e-2;
  for (int h = 0; h < c.Hq; ++h) {
    std::vector<double> s(c.len), o(d, 0.0);
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < c.len; ++j) {
      double dot = 0;
      for (int e = 0; e < d; ++e) dot += (double)q[(size_t)h * d + e] * k[((size_t)(h / g) * c.cap + j) * d + e];
      s[j] = dot * a.scale; mx = std::max(mx, s[j]);
    }
    for (int j = 0; j < c.len; ++j) {
      const double p = exp(s[j] - mx);
      sum += p;
      for (int e = 0; e < d; ++e) o[e] += p * v[((size_t)(h / g) * c.cap + j) * d + e];
    }
    for (int e = 0; e < d; ++e) {
      const double r = c.len ? o[e] / sum : 0.0, x = to_f(c.dt, &go[((size_t)h * d + e) * dt_size(c.dt)]);
      const double ae = fabs(x - r);
      err = std::max(err, ae == ae ? ae : INFINITY);
      bad += !(ae <= tol * std::max(1.0, fabs(r)));
    }
  }
  g_fail += bad != 0 || dirty != 0;
  printf("%-4s decode%s %-4s d=%-3d Hq=%-2d Hkv=%-2d len=%-5d cap=%-5d splits=%-4d %s | maxerr %.2e bad %d%s\n",
         bad || dirty ? "FAIL" : "ok", g_dmma ? "-mma" : "", dt_name[c.dt], d, c.Hq, c.Hkv, c.len, c.cap, c.splits,
         c.splits == 1 ? "single" : c.fuse ? "fused " : "2-kern", err, bad, dirty ? " COUNTERS-NOT-RESET" : "");
  for (const void* p : {a.q, a.k_cache, a.v_cache, (const void*)a.o, (const void*)a.part_o, (const void*)a.part_ml,
                        (const void*)a.length, (const void*)a.counters})
    if (p) CK(cudaFree((void*)p));
}

// ---- timing: cudaEvent, 3 warm-ups, median of 20 ----
template <class F> static float median_us(F f) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) f();
  std::vector<float> t;
  for (int i = 0; i < 20; ++i) {
    CK(cudaEventRecord(e0)); f(); CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
    float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); t.push_back(ms * 1000.f);
  }
  CK(cudaGetLastError());
  std::sort(t.begin(), t.end());
  CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1));
  return t[10];
}
// Mirrors of src/backends/cuda/schedule.ts decodeSplits / decodeFused at the default decode config (4 warps,
// splitScale 1, fuse on): the CTAs resident at once (8 / warps per SM), at most ceil(len / 64) and 1024 splits.
static int decode_splits_host(int sms, int Hkv, long long len) {
  const long long blocks = std::max(1, 8 / zv::DecodeConfig<__nv_bfloat16, 128, 0>::kWarps);
  return (int)std::max(1ll, std::min({blocks * sms / Hkv, (len + 63) / 64, 1024ll}));
}
static bool decode_fused_host(int Hq, int Hkv, int d, int splits) {
  return splits > 1 && (Hq / Hkv) * d / 4 <= 2 * 32 * zv::DecodeConfig<__nv_bfloat16, 128, 0>::kWarps;
}

static void bench(int Hkv, int n, int sms) {
  const int Hq = 40, d = 128, len = (int)(0.3 * n);
  std::vector<unsigned char> qb((size_t)Hq * n * d * 2), kb((size_t)Hkv * n * d * 2);
  for (size_t i = 0; i < qb.size(); i += 2) { __nv_bfloat16 h = __float2bfloat16(nrand()); memcpy(&qb[i], &h, 2); }
  for (size_t i = 0; i < kb.size(); i += 2) { __nv_bfloat16 h = __float2bfloat16(nrand()); memcpy(&kb[i], &h, 2); }
  const std::vector<int> P = make_probes(n, 64, 64);
  ZvProbeArgs pa{};
  pa.q = dev<void>(qb.data(), qb.size()); pa.k = dev<void>(kb.data(), kb.size());
  pa.probes = dev<int>(P.data(), P.size() * 4); pa.colmass = dev<float>(nullptr, n * 4);
  pa.visible = dev<float>(nullptr, n * 4); pa.params = dev<double>(nullptr, 8);
  pa.n = n; pa.m = (long long)P.size(); pa.Hq = Hq; pa.Hkv = Hkv; pa.d = d; pa.scale = 1.0 / sqrt((double)d);
  ZvSelectArgs sa{};
  sa.colmass = pa.colmass; sa.visible = pa.visible; sa.norm_scores = dev<float>(nullptr, n * 4);
  sa.count = dev<int>(nullptr, 4); sa.order = dev<int>(nullptr, n * 4); sa.params = pa.params;
  sa.n = n; sa.S = 1; sa.mode = 0; sa.amount = 0.975; sa.pool_size = 1;
  auto probe = [&] { CK(cudaMemsetAsync(pa.colmass, 0, n * 4)); probe_launch<Causal, __nv_bfloat16, 128>(pa); };
  auto select = [&] { select_launch(sa, true); };
  const float tp = median_us(probe), ts = median_us(select);
  const float tps = median_us([&] { probe(); select(); });
  const int p = get(sa.count, 1)[0];
  ZvDecodeArgs da{};
  da.q = pa.q; da.k_cache = pa.k; da.v_cache = dev<void>(kb.data(), kb.size()); da.o = dev<void>(nullptr, Hq * d * 2);
  // splits as schedule.ts decodeSplits chooses, and twice that (printed as the second decode column); both with the
  // fused combine where decodeFused allows it
  const int sp1 = decode_splits_host(sms, Hkv, len);
  const int sp2 = std::max(1, std::min(2 * sp1, (len + 63) / 64));
  unsigned* counters = dev<unsigned>(nullptr, (size_t)Hkv * 4);
  CK(cudaMemset(counters, 0, (size_t)Hkv * 4));
  da.part_o = dev<float>(nullptr, (size_t)Hq * sp2 * d * 4);
  da.part_ml = dev<float>(nullptr, (size_t)Hq * sp2 * 8);
  da.length = dev<int>(&len, 4);
  da.capacity = n; da.Hq = Hq; da.Hkv = Hkv; da.d = d; da.scale = pa.scale;
  da.splits = sp2;
  da.counters = decode_fused_host(Hq, Hkv, d, sp2) ? counters : nullptr;
  const float td2 = median_us([&] { decode_launch<__nv_bfloat16, 128>(da); });
  da.splits = sp1;
  da.counters = decode_fused_host(Hq, Hkv, d, sp1) ? counters : nullptr;
  const float td = median_us([&] { decode_launch<__nv_bfloat16, 128>(da); });
  CK(cudaFree(counters));
  const double gbs = 2.0 * Hkv * len * d * 2 / (td * 1e-6) / 1e9;
  printf("| %5d | %3d | %8.1f | %8.1f | %8.1f | %5d (%4.1f%%) | %5d | %3d | %8.1f | %6.0f | %3d | %8.1f |\n", n, Hkv, tp,
         ts, tps, p, 100.0 * p / n, len, sp1, td, gbs, sp2, td2);
  for (const void* x : {pa.q, pa.k, (const void*)pa.probes, (const void*)pa.colmass, (const void*)pa.visible,
                        (const void*)pa.params, (const void*)sa.norm_scores, (const void*)sa.count,
                        (const void*)sa.order, da.v_cache, (const void*)da.o, (const void*)da.part_o, (const void*)da.part_ml,
                        (const void*)da.length})
    CK(cudaFree((void*)x));
}

// Probe alone (with its colmass memset) at cluster sizes 1/2/4/8: bf16, d=128, Hq=40, m=128, causal, us.
// Uniform [-sqrt(3), sqrt(3)) bf16 (unit variance) from a hash of the index: the timing inputs are made on the GPU
// (drawing the 671M normals of n = 65536 on the host takes longer than the whole table).
__global__ void k_probe_fill(__nv_bfloat16* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    unsigned x = (unsigned)i * 2654435761u ^ seed * 0x9E3779B9u;
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    p[i] = __float2bfloat16(((float)(x >> 8) * (1.f / 16777216.f) * 2.f - 1.f) * 1.7320508f);
  }
}
static void bench_probe_cluster(int Hkv, int n) {
#if ZV_HARNESS_CLUSTER
  const int Hq = 40, d = 128;
  const std::vector<int> P = make_probes(n, 64, 64);
  ZvProbeArgs pa{};
  pa.q = dev<void>(nullptr, (size_t)Hq * n * d * 2); pa.k = dev<void>(nullptr, (size_t)Hkv * n * d * 2);
  k_probe_fill<<<1024, 256>>>((__nv_bfloat16*)pa.q, (size_t)Hq * n * d, 1u);
  k_probe_fill<<<1024, 256>>>((__nv_bfloat16*)pa.k, (size_t)Hkv * n * d, 2u);
  CK(cudaGetLastError());
  pa.probes = dev<int>(P.data(), P.size() * 4); pa.colmass = dev<float>(nullptr, n * 4);
  pa.visible = dev<float>(nullptr, n * 4); pa.params = dev<double>(nullptr, 8);
  pa.n = n; pa.m = (long long)P.size(); pa.Hq = Hq; pa.Hkv = Hkv; pa.d = d; pa.scale = 1.0 / sqrt((double)d);
  using B = __nv_bfloat16;
  auto ms = [&](auto launch) { return median_us([&] { CK(cudaMemsetAsync(pa.colmass, 0, n * 4)); launch(); }); };
  const float t1 = ms([&] { probe_launch<Causal, B, 128>(pa); }), t2 = ms([&] { probe_launch_cl<Causal, B, 128, 2>(pa); });
  const float t4 = ms([&] { probe_launch_cl<Causal, B, 128, 4>(pa); }), t8 = ms([&] { probe_launch_cl<Causal, B, 128, 8>(pa); });
  // Bigger row blocks (fewer K re-reads from L2) once the cluster restores the CTA count: 32 rows (mTiles 2) and
  // 64 rows (mTiles 4, nTiles 1), 8 warps, one CTA per SM (198 / 248 registers, no spills).
  using M2C4 = zv::ProbeConfig<B, 128, 8, 2, 0, 0, 1, 4>;
  using M2C8 = zv::ProbeConfig<B, 128, 8, 2, 0, 0, 1, 8>;
  using M4C8 = zv::ProbeConfig<B, 128, 8, 4, 1, 0, 1, 8>;
  const float m24 = ms([&] { probe_launch_cfg<Causal, B, 128, M2C4>(pa); }), m28 = ms([&] { probe_launch_cfg<Causal, B, 128, M2C8>(pa); });
  const float m48 = ms([&] { probe_launch_cfg<Causal, B, 128, M4C8>(pa); });
  const double floor_us = (double)Hkv * n * d * 2 / 4.19e12 * 1e6;  // K read once at the H200's 4.19 TB/s
  printf("| %5d | %3d | %8.1f | %8.1f | %8.1f | %8.1f | %8.1f | %8.1f | %8.1f | %6.1f |\n", n, Hkv, t1, t2, t4, t8, m24, m28,
         m48, floor_us);
  for (const void* x : {pa.q, pa.k, (const void*)pa.probes, (const void*)pa.colmass, (const void*)pa.visible, (const void*)pa.params})
    CK(cudaFree((void*)x));
#else
  (void)Hkv; (void)n;
#endif
}

// ---- decode step timing (the bench report's shapes: bf16, Hq = 40, one query token) ----
__global__ void k_fill_bf16(__nv_bfloat16* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    unsigned x = (unsigned)i * 2654435761u ^ seed;
    x ^= x >> 15; x *= 2246822519u; x ^= x >> 13; x *= 3266489917u; x ^= x >> 16;
    p[i] = __float2bfloat16((float)(x & 0xffff) / 32768.f - 1.f);
  }
}
// One row: the default step (schedule.ts splits, fused where allowed), the same splits as split + combine kernels,
// and one split (one launch, no workspace). floor = K and V read once at 4.2 TB/s plus 4 us of launch latency;
// sdpa = PyTorch SDPA (best of cuDNN / flash) from bench/results/h200-2026-11-26-s2-bench/report.md (H200), for
// reference only.
static void bench_decode(int Hkv, int d, int len, int sms, double sdpa_us) {
  const int Hq = 40;
  const size_t kvn = (size_t)Hkv * len * d;
  ZvDecodeArgs a{};
  __nv_bfloat16 *q, *k, *v;
  CK(cudaMalloc(&q, (size_t)Hq * d * 2)); CK(cudaMalloc(&k, kvn * 2)); CK(cudaMalloc(&v, kvn * 2));
  k_fill_bf16<<<1024, 256>>>(q, (size_t)Hq * d, 1u);
  k_fill_bf16<<<1024, 256>>>(k, kvn, 2u);
  k_fill_bf16<<<1024, 256>>>(v, kvn, 3u);
  CK(cudaGetLastError());
  const int sp = decode_splits_host(sms, Hkv, len);
  a.q = q; a.k_cache = k; a.v_cache = v; a.o = dev<void>(nullptr, (size_t)Hq * d * 2);
  a.part_o = dev<float>(nullptr, (size_t)Hq * sp * d * 4); a.part_ml = dev<float>(nullptr, (size_t)Hq * sp * 8);
  a.length = dev<int>(&len, 4);
  unsigned* counters = dev<unsigned>(nullptr, (size_t)Hkv * 4);
  CK(cudaMemset(counters, 0, (size_t)Hkv * 4));
  a.capacity = len; a.Hq = Hq; a.Hkv = Hkv; a.d = d; a.scale = 1.0 / sqrt((double)d);
  cudaStream_t cs;
  CK(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
  auto launch_on = [&](cudaStream_t st) {
    if (d == 64) decode_launch<__nv_bfloat16, 64>(a, st); else decode_launch<__nv_bfloat16, 128>(a, st);
  };
  auto launch = [&] { launch_on(0); };
  const bool fused = decode_fused_host(Hq, Hkv, d, sp);
  a.splits = sp; a.counters = fused ? counters : nullptr;
  const float t = median_us(launch);
  // The same step captured in a CUDA graph and replayed (how the report timed SDPA): no host launch cost.
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeThreadLocal));
  launch_on(cs);
  CK(cudaStreamEndCapture(cs, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  const float tg = median_us([&] { CK(cudaGraphLaunch(exec, 0)); });
  CK(cudaGraphExecDestroy(exec)); CK(cudaGraphDestroy(graph)); CK(cudaStreamDestroy(cs));
  a.counters = nullptr;
  const float t2 = sp > 1 ? median_us(launch) : t;
  a.splits = 1;
  const float t1 = median_us(launch);
  // The tensor-core split kernel (config mma: 1) on the default step (its splits and combine choice).
  a.splits = sp; a.counters = fused ? counters : nullptr;
  g_dmma = 1;
  const float tm = median_us(launch);
  g_dmma = 0;
  const double bytes = 2.0 * kvn * 2, floor_us = bytes / 4.2e12 * 1e6 + 4.0;
  printf("| %3d | %3d | %5d | %4d | %d | %8.1f | %8.1f | %5.2f | %8.1f | %8.1f | %8.1f | %8.1f | %6.1f |\n", Hkv, d, len, sp,
         sp > 1 && !fused ? 2 : 1, t, tg, bytes / (tg * 1e-6) / 1e12, t2, t1, tm, floor_us, sdpa_us);
  for (const void* x : {(const void*)q, (const void*)k, (const void*)v, (const void*)a.o, (const void*)a.part_o,
                        (const void*)a.part_ml, (const void*)a.length, (const void*)counters})
    CK(cudaFree((void*)x));
}

int main(int argc, char** argv) {
  const bool no_bench = argc > 1 && !strcmp(argv[1], "--no-bench");
  const bool decode_only = argc > 1 && !strcmp(argv[1], "--decode-bench");  // decode checks + decode table only
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  cudaFuncAttributes fa;
  CK(cudaFuncGetAttributes(&fa, k_select));
  g_sel_smem_max = (int)(prop.sharedMemPerBlockOptin - fa.sharedSizeBytes);  // the rest of the opt-in maximum
  CK(cudaFuncSetAttribute(k_select, cudaFuncAttributeMaxDynamicSharedMemorySize, g_sel_smem_max));
  // sel: {mode 0 tau/1 ratio/2 budget/3 all, amount, normalizer 0 visible/1 n-j/2 none, pool kind, size, keep first, last}
  const PCase pcs[] = {
      {0, F32, 64, 1, 1, 0, 1, 1, 0, {0, 0.975, 0, 0, 1, 0, 0}},
      {0, F16, 80, 7, 2, 1, 4, 1, 0, {0, 0.5, 0, 0, 1, 0, 1}},
      {0, BF16, 96, 7, 7, 0, 8, 8, 0, {0, 1.0, 0, 0, 1, 0, 0}},
      {0, BF16, 96, 129, 8, 8, 8, 1, 0, {0, 1.0, 0, 1, 5, 0, 0}},
      {0, F32, 128, 129, 129, 0, 4, 4, 0, {1, 0.3, 1, 0, 1, 4, 0}},
      {0, F16, 128, 129, 16, 16, 4, 2, 0, {3, 0, 0, 0, 1, 0, 0}},          // keep all
      {0, BF16, 128, 2880, 64, 64, 8, 2, 0, {0, 0.975, 0, 2, 7, 0, 0}},
      {0, F16, 64, 2880, 32, 32, 4, 4, 1, {2, 100, 2, 0, 1, 0, 0}},        // per KV head
      {0, BF16, 80, 2880, 16, 16, 4, 1, 0, {2, 1, 0, 0, 1, 0, 0}},         // keep one
      {0, F16, 64, 10, 4, 2, 2, 1, 0, {1, 0.3, 0, 0, 1, 0, 0}},            // ratio rounding: p = 3, not 4
      {0, F16, 64, 10, 4, 2, 2, 1, 0, {2, 0, 0, 0, 1, 0, 0}},              // budget 0 -> p = 1
      {0, F32, 96, 2880, 16, 16, 2, 1, 0, {0, 0.5, 1, 1, 3, 2, 2}},
      {0, BF16, 256, 600, 16, 16, 2, 1, 0, {0, 0.975, 0, 0, 1, 0, 0}},
      {0, BF16, 64, 33000, 16, 16, 4, 1, 0, {0, 0.975, 0, 0, 1, 0, 0}},
      {0, F32, 80, 33000, 8, 8, 2, 2, 0, {0, 0.5, 0, 1, 3, 1, 1}},
      {0, F16, 128, 33000, 8, 8, 8, 1, 0, {0, 1.0, 1, 2, 5, 0, 0}},
      {1, BF16, 64, 129, 8, 8, 2, 1, 0, {0, 0.975, 0, 0, 1, 0, 0}},
      {1, F16, 96, 2880, 16, 16, 4, 2, 0, {1, 0.25, 0, 0, 1, 0, 0}},
      {1, F32, 128, 700, 8, 8, 2, 1, 0, {0, 0.5, 2, 0, 1, 0, 0}},
  };
  if (!decode_only) for (const auto& c : pcs) run_probe_select(c);
  // Key split over a thread-block cluster (sm_90): n = 1, n below one cluster's tile span (8 warps * 16 keys * C),
  // n not a multiple of it, long n; softmax (the cross-CTA stats exchange) and sigmoid (no exchange); per KV head.
  if (decode_only) {
  } else if (prop.major >= 9 && ZV_HARNESS_CLUSTER) {
    const SelCfg tau{0, 0.975, 0, 0, 1, 0, 0};
    const PCase ccs[] = {
        {0, BF16, 128, 1, 1, 0, 1, 1, 0, tau, 2},     {0, BF16, 128, 1, 1, 0, 4, 4, 0, tau, 8},
        {0, BF16, 128, 7, 4, 3, 8, 8, 0, tau, 4},     {0, BF16, 128, 129, 16, 16, 8, 2, 0, tau, 2},
        {0, BF16, 128, 129, 16, 16, 8, 2, 0, tau, 8}, {0, BF16, 128, 1000, 32, 32, 8, 8, 0, tau, 4},
        {0, BF16, 128, 2880, 64, 64, 8, 8, 0, tau, 2}, {0, BF16, 128, 2880, 64, 64, 8, 8, 0, tau, 4},
        {0, BF16, 128, 2880, 64, 64, 8, 8, 0, tau, 8}, {0, BF16, 128, 2881, 16, 16, 8, 2, 1, {2, 100, 2, 0, 1, 0, 0}, 4},
        {0, BF16, 128, 33000, 8, 8, 4, 1, 0, tau, 8},  {0, F16, 80, 2879, 16, 16, 4, 2, 0, tau, 4},
        {0, F16, 80, 200, 8, 8, 2, 1, 1, tau, 8},      {0, BF16, 256, 600, 16, 16, 2, 1, 0, tau, 2},
        {0, BF16, 256, 1025, 16, 16, 2, 2, 0, tau, 8}, {0, F32, 64, 1, 1, 0, 1, 1, 0, tau, 4},
        {0, F32, 64, 257, 8, 8, 4, 2, 0, tau, 2},      {0, F32, 64, 3001, 16, 16, 2, 1, 1, tau, 8},
        {1, BF16, 128, 129, 8, 8, 2, 1, 0, tau, 4},    {1, F16, 80, 2880, 16, 16, 4, 2, 0, {1, 0.25, 0, 0, 1, 0, 0}, 8},
        {1, F32, 64, 700, 8, 8, 2, 1, 0, {0, 0.5, 2, 0, 1, 0, 0}, 2},
    };
    for (const auto& c : ccs) run_probe_select(c);
  } else {
    printf("cluster probe cases skipped (need sm_90 and an sm_90 build)\n");
  }
  // {dtype, d, Hq, Hkv, len, cap, splits, fuse}: g = 1..16 (one team; 2 teams of 4 heads; 4 teams; g = 12 takes two
  // passes), splits 1 (direct output), fused (last CTA) and two-kernel combines, empty splits, len 0, and a fused
  // combine whose heads do not fit the scratch at once (g 16, 700 splits).
  const DCase dcs[] = {
      {F32, 64, 1, 1, 1, 4, 4, 0},           {F16, 80, 4, 1, 129, 140, 3, 1},       {BF16, 96, 8, 1, 2880, 2900, 16, 1},
      {BF16, 128, 40, 8, 9830, 9900, 33, 0}, {F32, 128, 4, 4, 9900, 9901, 8, 1},    {BF16, 64, 6, 2, 777, 800, 7, 0},
      {BF16, 256, 2, 1, 500, 512, 4, 1},     {F16, 128, 16, 1, 1000, 1000, 5, 0},   {F32, 256, 4, 2, 300, 300, 1, 0},
      {BF16, 128, 40, 5, 9830, 9900, 52, 1}, {BF16, 128, 40, 5, 9830, 9900, 52, 0}, {BF16, 128, 40, 5, 2458, 2458, 1, 0},
      {BF16, 128, 40, 40, 864, 864, 6, 1},   {BF16, 64, 40, 40, 2458, 2458, 6, 1},  {F16, 128, 48, 3, 3000, 3100, 20, 1},
      {BF16, 96, 24, 2, 1500, 1500, 9, 1},   {F32, 80, 18, 3, 700, 700, 11, 1},     {BF16, 128, 9, 3, 257, 300, 5, 1},
      {BF16, 64, 32, 2, 3000, 3000, 700, 1}, {BF16, 128, 8, 1, 0, 16, 3, 1},        {BF16, 128, 8, 8, 5, 64, 1, 0},
      {F16, 256, 16, 2, 4100, 4100, 40, 1},  {F32, 256, 4, 1, 333, 333, 3, 1},      {BF16, 128, 4, 1, 10, 10, 8, 1},
  };
  for (const auto& c : dcs) run_decode(c);
  // The tensor-core split kernel (mma: 1; g >= 4 at 16 bits, the rest keeps the SIMT pass): the cases above, then
  // g = 2..16 over d 64/80/96/128/256, odd lengths, single / fused / two-kernel.
  g_dmma = 1;
  for (const auto& c : dcs) run_decode(c);
  const DCase mcs[] = {
      {BF16, 128, 2, 1, 333, 333, 3, 1},     {F16, 64, 4, 1, 17, 17, 1, 0},          {BF16, 80, 5, 1, 1001, 1001, 1, 0},
      {F16, 96, 6, 1, 999, 1024, 7, 1},      {BF16, 128, 7, 1, 31, 40, 2, 0},        {F16, 256, 8, 1, 513, 600, 5, 1},
      {BF16, 64, 10, 1, 2049, 2049, 9, 0},   {F16, 80, 11, 1, 15, 15, 1, 0},         {BF16, 96, 12, 1, 777, 777, 13, 1},
      {F16, 128, 13, 1, 4097, 4100, 31, 1},  {BF16, 256, 14, 1, 301, 301, 1, 0},     {BF16, 128, 15, 1, 1023, 1023, 6, 0},
      {F16, 128, 16, 2, 3001, 3001, 11, 1},  {BF16, 256, 16, 1, 2500, 2500, 20, 0},  {BF16, 80, 16, 1, 97, 97, 2, 1},
      {BF16, 128, 40, 5, 32767, 32768, 26, 1}, {BF16, 128, 32, 1, 700, 700, 4, 1},   {F16, 64, 24, 2, 1, 8, 4, 1},
  };
  for (const auto& c : mcs) run_decode(c);
  g_dmma = 0;
  if (!no_bench) {
    printf("\ndecode step (bf16, Hq=40, one query token; us; GQA = 40 / Hkv; sdpa: H200 bench report, reference only):\n");
    printf("| Hkv |   d |   len |   sp | L |  default |    graph |  TB/s | 2-kernel | 1 split  |      mma | floor+4  |  sdpa  |\n");
    const struct { int Hkv, d, len; double sdpa_us; } drows[] = {
        {40, 128, 864, 11.6},  {40, 128, 2458, 18.8},  {40, 128, 2880, 21.3}, {40, 128, 8192, 45.9},
        {40, 128, 9830, 54.4}, {40, 128, 32768, 162},  {40, 128, 65536, 317}, {5, 128, 2458, 9.6},
        {5, 128, 8192, 12.8}, {5, 128, 9830, 14.8},    {5, 128, 32768, 27.8}, {40, 64, 2458, 12.5},
        {8, 128, 8192, 0},     {8, 128, 32768, 0},
    };
    for (const auto& r : drows) bench_decode(r.Hkv, r.d, r.len, prop.multiProcessorCount, r.sdpa_us);
  }
  if (!no_bench && !decode_only) {
    printf("\ntiming (bf16, d=128, Hq=40, m=128 = 64 recent + 64 random, tau 0.975; decode len = 0.3n), us:\n");
    printf("|     n | Hkv |    probe |   select | prb+sel  | count         |   len |  sp |   decode |   GB/s | sp2 |  decode2 |\n");
    for (int hkv : {40, 8})
      for (int n : {2880, 8192, 32768}) bench(hkv, n, prop.multiProcessorCount);
    if (prop.major >= 9 && ZV_HARNESS_CLUSTER) {
      printf("\nprobe by cluster size (bf16, d=128, Hq=40, m=128, causal; colmass memset included), us; floor = K once at 4.19 TB/s:\n");
      printf("(m2/m4: 32/64 rows per CTA, 8 warps, 1 CTA per SM)\n");
      printf("|     n | Hkv |     cl=1 |     cl=2 |     cl=4 |     cl=8 | m2 cl=4  | m2 cl=8  | m4 cl=8  |  floor |\n");
      for (int hkv : {40, 8})
        for (int n : {2880, 8192, 32768, 65536}) bench_probe_cluster(hkv, n);
    }
  }
  if (g_fail) printf("HARNESS FAIL (%d failures)\n", g_fail);
  else printf("HARNESS PASS\n");
  return g_fail ? 1 : 0;
}
