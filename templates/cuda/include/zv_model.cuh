// Device library of the model (non-attention-policy) kernels: norms, elementwise ops, embedding gather, RoPE,
// head layout changes, dense attention for the vision tower and random init. Templates over the storage type T
// (float, __half, __nv_bfloat16); every reduction and every activation runs in f32 and rounds once to T.
// templates/cuda/model.cu.hbs instantiates them per dtype as extern "C" kernels taking one argument struct.
#pragma once
#include "zv_common.cuh"
#include "zv_model_args.cuh"

namespace zvm {
using zv::from_float;
using zv::to_float;

constexpr int kNormThreads = 256;
constexpr int kEltThreads = 256;
constexpr int kAttnWarps = 4;
constexpr int kAttnMaxPerLane = 8;  // head dim <= 256

template <typename T> __device__ __forceinline__ float ld(const void* p, long long i) { return to_float(static_cast<const T*>(p)[i]); }
template <typename T> __device__ __forceinline__ void st(void* p, long long i, float v) { static_cast<T*>(p)[i] = from_float<T>(v); }

// Sum over the CTA (kNormThreads threads); every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = zv::warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read from a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < kNormThreads / 32 ? red[lane] : 0.f;
  return zv::warp_sum(t);
}

// grid (rows), block (kNormThreads)
template <typename T> __device__ void norm_kernel(const ZvNormArgs& a) {
  __shared__ float red[kNormThreads / 32];
  const long long row = blockIdx.x, C = a.cols;
  const long long base = row * C;
  const float eps = static_cast<float>(a.eps);
  if (a.kind == 0) {
    float ss = 0.f;
    for (long long c = threadIdx.x; c < C; c += kNormThreads) { float x = ld<T>(a.x, base + c); ss += x * x; }
    const float r = rsqrtf(block_sum(ss, red) / static_cast<float>(C) + eps);
    for (long long c = threadIdx.x; c < C; c += kNormThreads) {
      const float h = to_float(from_float<T>(ld<T>(a.x, base + c) * r));  // HF: hidden.to(input_dtype), then * weight
      st<T>(a.y, base + c, ld<T>(a.w, c) * h);
    }
  } else {
    float s = 0.f;
    for (long long c = threadIdx.x; c < C; c += kNormThreads) s += ld<T>(a.x, base + c);
    const float mean = block_sum(s, red) / static_cast<float>(C);
    float vs = 0.f;
    for (long long c = threadIdx.x; c < C; c += kNormThreads) { float x = ld<T>(a.x, base + c) - mean; vs += x * x; }
    const float r = rsqrtf(block_sum(vs, red) / static_cast<float>(C) + eps);
    for (long long c = threadIdx.x; c < C; c += kNormThreads)
      st<T>(a.y, base + c, (ld<T>(a.x, base + c) - mean) * r * ld<T>(a.w, c) + ld<T>(a.b, c));
  }
}

__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_tanh(float x) { return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); }
__device__ __forceinline__ float quick_gelu(float x) { return x / (1.f + expf(-1.702f * x)); }

// grid-stride; grid (min(ceil(count / kEltThreads), cap)), block (kEltThreads)
template <typename T> __device__ void elt_kernel(const ZvEltArgs& a) {
  const long long stride = static_cast<long long>(gridDim.x) * kEltThreads;
  for (long long i = blockIdx.x * static_cast<long long>(kEltThreads) + threadIdx.x; i < a.count; i += stride) {
    const float x = ld<T>(a.a, i);
    float y;
    switch (a.kind) {
      case 0: y = x + ld<T>(a.b, i); break;
      case 1: y = silu(x) * ld<T>(a.b, i); break;
      case 2: y = gelu_erf(x); break;
      case 3: y = quick_gelu(x); break;
      case 4: y = gelu_tanh(x); break;
      case 5: y = silu(x); break;
      case 6: y = x; break;
      case 8: {  // copy_strided: a [count / cols, cols] into rows of y that lie brows elements apart (KV append)
        const long long r = i / a.cols, c = i - r * a.cols;
        st<T>(a.y, r * a.brows + c, x);
        continue;
      }
      default: {  // 7: add_rows
        const long long r = i / a.cols, c = i - r * a.cols;
        y = x + ld<T>(a.b, (r % a.brows) * a.cols + c);
      }
    }
    st<T>(a.y, i, y);
  }
}

// Greedy sampling on the device, grid (rows), block (kEltThreads): the index of the largest logit of each row, ties
// to the smaller index and NaN never chosen, except that a NaN at index 0 wins (as src/model/sampling.ts's argmax,
// a left-to-right scan with >, which never leaves a NaN first element).
template <typename T> __device__ void argmax_kernel(const ZvArgmaxArgs& a) {
  const long long r = blockIdx.x;
  const T* x = static_cast<const T*>(a.x) + r * a.V;
  float best = -INFINITY;
  long long at = a.V;  // none yet (every value NaN so far)
  auto see = [&](float v, long long i) {  // in increasing i per thread: -inf counts, the first index wins ties
    if (v > best || (at == a.V && v == best)) best = v, at = i;
  };
  constexpr int E = 16 / static_cast<int>(sizeof(T));
  if ((a.V * static_cast<long long>(sizeof(T))) % 16 == 0) {
    // 16-byte loads, four in flight a thread (a row of logits is one CTA's: latency, not bandwidth, bounds it).
    const long long nv = a.V / E;
    for (long long v0 = threadIdx.x; v0 < nv; v0 += 4 * kEltThreads) {
      uint4 u[4];
#pragma unroll
      for (int j = 0; j < 4; j++) u[j] = v0 + j * kEltThreads < nv ? reinterpret_cast<const uint4*>(x)[v0 + j * kEltThreads] : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int j = 0; j < 4; j++) {
        if (v0 + j * kEltThreads >= nv) break;
        T t[E];
        memcpy(t, &u[j], 16);
#pragma unroll
        for (int e = 0; e < E; e++) see(to_float(t[e]), (v0 + j * kEltThreads) * E + e);
      }
    }
  } else {
    for (long long i = threadIdx.x; i < a.V; i += kEltThreads) see(to_float(x[i]), i);
  }
  __shared__ float sv[kEltThreads];
  __shared__ long long si[kEltThreads];
  sv[threadIdx.x] = best;
  si[threadIdx.x] = at;
  __syncthreads();
  for (int s = kEltThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float v = sv[threadIdx.x + s];
      const long long i = si[threadIdx.x + s];
      if (v > sv[threadIdx.x] || (v == sv[threadIdx.x] && i < si[threadIdx.x])) sv[threadIdx.x] = v, si[threadIdx.x] = i;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const int id = static_cast<int>(si[0] == a.V || isnan(to_float(x[0])) ? 0 : si[0]);
    a.ids[r] = id;
    if (a.copy) a.copy[(a.slot ? static_cast<long long>(*a.slot) : 0LL) * a.stride + r] = id;
  }
}

// grid (nids), block (kEltThreads)
template <typename T> __device__ void embed_kernel(const ZvEmbedArgs& a) {
  const long long i = blockIdx.x;
  const int id = a.ids[i];
  const bool ok = id >= 0 && id < a.V;
  const T* src = static_cast<const T*>(a.table) + static_cast<long long>(ok ? id : 0) * a.H;
  T* dst = static_cast<T*>(a.y) + i * a.H;
  if ((a.H * static_cast<long long>(sizeof(T))) % 16 == 0) {  // 16-byte copies (rows then start 16-byte aligned)
    const long long nv = a.H * static_cast<long long>(sizeof(T)) / 16;
    for (long long c = threadIdx.x; c < nv; c += kEltThreads)
      reinterpret_cast<uint4*>(dst)[c] = ok ? reinterpret_cast<const uint4*>(src)[c] : make_uint4(0, 0, 0, 0);
    return;
  }
  for (long long c = threadIdx.x; c < a.H; c += kEltThreads) dst[c] = ok ? src[c] : from_float<T>(0.f);
}

// One thread per (head, token, pair i < d/2); grid-stride. The angle is the f32 product HF forms; cos/sin are taken
// in double (fast-math __cosf is inaccurate for the large angles of long contexts).
template <typename T> __device__ void rope_kernel(const ZvRopeArgs& a) {
  const long long half = a.d / 2, total = a.H * a.n * half;
  const long long stride = static_cast<long long>(gridDim.x) * kEltThreads;
  for (long long e = blockIdx.x * static_cast<long long>(kEltThreads) + threadIdx.x; e < total; e += stride) {
    const long long i = e % half, row = e / half;  // row = h * n + t
    const long long t = row % a.n;
    const float ang = static_cast<float>(a.positions[t]) * a.inv_freq[i];
    double s, c;
    sincos(static_cast<double>(ang), &s, &c);
    const float cs = static_cast<float>(c * a.scale), sn = static_cast<float>(s * a.scale);
    const long long base = row * a.d;
    const float x1 = ld<T>(a.x, base + i), x2 = ld<T>(a.x, base + i + half);
    st<T>(a.y, base + i, x1 * cs - x2 * sn);
    st<T>(a.y, base + i + half, x2 * cs + x1 * sn);
  }
}

// One thread per output element; grid-stride.
template <typename T> __device__ void heads_kernel(const ZvHeadsArgs& a) {
  const long long total = a.n * a.H * a.d;
  const long long stride = static_cast<long long>(gridDim.x) * kEltThreads;
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  for (long long e = blockIdx.x * static_cast<long long>(kEltThreads) + threadIdx.x; e < total; e += stride) {
    const long long i = e % a.d, r = e / a.d;
    if (a.dir == 0) {  // e indexes [H, n, d]: r = h * n + t
      const long long h = r / a.n, t = r % a.n;
      y[e] = x[(t * a.H + h) * a.d + i];
    } else {  // e indexes [n, H*d]: r = t * H + h
      const long long t = r / a.H, h = r % a.H;
      y[e] = x[(h * a.n + t) * a.d + i];
    }
  }
}

// grid (ceil(nq / kAttnWarps), Hq), block (32 * kAttnWarps)
template <typename T> __device__ void attn_kernel(const ZvAttnArgs& a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long i = static_cast<long long>(blockIdx.x) * kAttnWarps + warp;
  if (i >= a.nq) return;
  const long long h = blockIdx.y, kvh = h / (a.Hq / a.Hkv), d = a.d;
  const float qs = static_cast<float>(a.scale) * zv::kLog2e;
  float q[kAttnMaxPerLane], acc[kAttnMaxPerLane];
  const long long qb = (h * a.nq + i) * d;
#pragma unroll
  for (int r = 0; r < kAttnMaxPerLane; r++) {
    const long long c = lane + 32 * r;
    q[r] = c < d ? ld<T>(a.q, qb + c) * qs : 0.f;
    acc[r] = 0.f;
  }
  const long long last = a.causal ? min(a.nk - 1, i + (a.nk - a.nq)) : a.nk - 1;
  float m = zv::neg_inf(), l = 0.f;
  const long long kb = kvh * a.nk * d;
  for (long long j = 0; j <= last; j++) {
    float s = 0.f;
#pragma unroll
    for (int r = 0; r < kAttnMaxPerLane; r++) {
      const long long c = lane + 32 * r;
      if (c < d) s += q[r] * ld<T>(a.k, kb + j * d + c);
    }
    s = zv::warp_sum(s);
    const float mn = fmaxf(m, s), corr = exp2f(m - mn), p = exp2f(s - mn);
    l = l * corr + p;
#pragma unroll
    for (int r = 0; r < kAttnMaxPerLane; r++) {
      const long long c = lane + 32 * r;
      if (c < d) acc[r] = acc[r] * corr + p * ld<T>(a.v, kb + j * d + c);
    }
    m = mn;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int r = 0; r < kAttnMaxPerLane; r++) {
    const long long c = lane + 32 * r;
    if (c < d) st<T>(a.o, qb + c, acc[r] * inv);
  }
}

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// grid-stride; Box-Muller on two 32-bit uniforms of one 64-bit hash.
template <typename T> __device__ void init_kernel(const ZvInitArgs& a) {
  const long long stride = static_cast<long long>(gridDim.x) * kEltThreads;
  for (long long i = blockIdx.x * static_cast<long long>(kEltThreads) + threadIdx.x; i < a.count; i += stride) {
    const unsigned long long r = splitmix64(static_cast<unsigned long long>(a.seed) * 0x100000001b3ull ^ static_cast<unsigned long long>(i));
    const float u1 = (static_cast<float>(r >> 40) + 1.f) * (1.f / 16777217.f);  // (0, 1]
    const float u2 = static_cast<float>((r >> 8) & 0xffffffu) * (1.f / 16777216.f);
    const float z = sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
    st<T>(a.y, i, static_cast<float>(a.std) * z);
  }
}

}  // namespace zvm
