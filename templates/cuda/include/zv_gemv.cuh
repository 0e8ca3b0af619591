// Device library of the small-batch linear layers of decode (M <= 8 token rows): y = x W^T streamed at the memory
// rate, with the decoder's neighbouring elementwise work folded into the prologue and epilogue so a decoder layer is
// a handful of launches instead of twenty:
//   prologue  RMSNorm of x (HF LlamaRMSNorm rounding: w * T(x * r)), x read row-major [M, K] or head-major
//             [K / x_head_dim, M, x_head_dim] (the attention output, so no fromHeads copy);
//   body      up to three weight matrices sharing x (q, k, v), each [N_s, K] row-major;
//   epilogue  bias, rotary embedding (HF rotate_half on rows i and i + d/2 of a head), head-major output
//             [N_s / d, M, d], residual add (segment 0), or the gated MLP silu(x Wg^T) * (x Wu^T).
// Work split: a "unit" = two weight rows (a rope pair, two adjacent rows, or gate row p with up row p); one warp owns
// P consecutive units (P = 1, 2, 4: fewer, longer warps for narrow matrices, so the launch fits in one wave), streams
// their rows once with 16-byte non-allocating loads, double-buffered in registers, and reduces with shuffles. Launched
// with PDL, a CTA issues its first weight loads before waiting for the previous kernel. x for all M rows sits in shared memory in chunks of kc elements (normalized once per CTA). Every value
// is rounded to T where the unfused ops round (after the linear, after bias, after rope, after the add), so the
// fused result equals the composition of cuda-ops' plain ops up to f32 summation order.
// Launch: grid ceil(units / (P * kGemvWarps)), block 32 * kGemvWarps, dynamic shared memory M * kc * sizeof(T).
#pragma once
#include "zv_common.cuh"
#include "zv_model_args.cuh"

namespace zvg {
using zv::from_float;
using zv::to_float;

constexpr int kGemvWarps = 4;
constexpr int kGemvUnroll = 4;  // 16-byte vectors per row per lane in flight per stage (2 above 1 row: registers)

template <typename T> struct Pack {
  static constexpr int N = 16 / static_cast<int>(sizeof(T));
};

__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

// 16 bytes of T to f32.
__device__ __forceinline__ void unpack(const uint4& v, float (&f)[8], __nv_bfloat16*) {
  const unsigned u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack(const uint4& v, float (&f)[8], __half*) {
  const unsigned u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    __half2 h;
    memcpy(&h, &u[i], 4);
    const float2 t = __half22float2(h);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ void unpack(const uint4& v, float (&f)[4], float*) {
  f[0] = __uint_as_float(v.x);
  f[1] = __uint_as_float(v.y);
  f[2] = __uint_as_float(v.z);
  f[3] = __uint_as_float(v.w);
}
template <typename T> __device__ __forceinline__ uint4 pack(const float (&f)[Pack<T>::N]) {
  T t[Pack<T>::N];
#pragma unroll
  for (int i = 0; i < Pack<T>::N; i++) t[i] = from_float<T>(f[i]);
  uint4 v;
  memcpy(&v, t, 16);
  return v;
}
template <typename T> __device__ __forceinline__ float ldT(const void* p, long long i) { return to_float(static_cast<const T*>(p)[i]); }
template <typename T> __device__ __forceinline__ float roundT(float v) { return to_float(from_float<T>(v)); }

// Address of the 16-byte x vector at (m, k): row-major or head-major.
template <int M> __device__ __forceinline__ long long x_index(const ZvGemvArgs& a, int m, long long k) {
  if (a.x_head_dim == 0) return static_cast<long long>(m) * a.K + k;
  const long long h = k / a.x_head_dim, j = k - h * a.x_head_dim;
  return (h * M + m) * a.x_head_dim + j;
}

// Which rows a unit owns: segment s, rows ra and rb (rb < 0: none, an odd last row), p the unit's index in s.
struct Unit {
  int seg;
  long long p, ra, rb;
};
__device__ __forceinline__ Unit unit_of(const ZvGemvArgs& a, long long u) {
  Unit r{0, u, 0, -1};
  if (a.mode == 1) {  // gated: gate row p (segment 0) with up row p (segment 1)
    r.ra = r.rb = u;
    return r;
  }
  for (int s = 0; s < a.nseg; s++) {
    const long long units = ((s == 0 ? a.n0 : s == 1 ? a.n1 : a.n2) + 1) / 2;
    if (r.p < units) {
      r.seg = s;
      break;
    }
    r.p -= units;
  }
  const long long N = r.seg == 0 ? a.n0 : r.seg == 1 ? a.n1 : a.n2;
  if ((a.rope_mask >> r.seg) & 1) {
    const long long half = a.d / 2, h = r.p / half, i = r.p - h * half;
    r.ra = h * a.d + i;
    r.rb = r.ra + half;
  } else {
    r.ra = 2 * r.p;
    r.rb = 2 * r.p + 1 < N ? 2 * r.p + 1 : -1;
  }
  return r;
}

// Output of one unit for token row m: bias, then gated / rope / residual, rounding where the plain ops round.
template <typename T, int M> __device__ __forceinline__ void epilogue(const ZvGemvArgs& a, const Unit& un, int m, float va, float vb) {
  if (a.mode == 1) {
    float g = va + (a.b0 ? ldT<T>(a.b0, un.ra) : 0.f), up = vb + (a.b1 ? ldT<T>(a.b1, un.ra) : 0.f);
    g = roundT<T>(g);
    up = roundT<T>(up);
    static_cast<T*>(a.y0)[m * a.n0 + un.ra] = from_float<T>(g / (1.f + expf(-g)) * up);
    return;
  }
  const int s = un.seg;
  const long long N = s == 0 ? a.n0 : s == 1 ? a.n1 : a.n2;
  const void* bias = s == 0 ? a.b0 : s == 1 ? a.b1 : a.b2;
  va = roundT<T>(va + (bias ? ldT<T>(bias, un.ra) : 0.f));
  if (un.rb >= 0) vb = roundT<T>(vb + (bias ? ldT<T>(bias, un.rb) : 0.f));
  if ((a.rope_mask >> s) & 1) {
    const long long i = un.ra % a.d;
    const float ang = static_cast<float>(a.positions[m]) * a.inv_freq[i];
    double sn, cs;
    sincos(static_cast<double>(ang), &sn, &cs);
    const float c = static_cast<float>(cs * a.rope_scale), si = static_cast<float>(sn * a.rope_scale);
    const float x1 = va, x2 = vb;
    va = x1 * c - x2 * si;
    vb = x2 * c + x1 * si;
  }
  if (s == 0 && a.res) {
    va = roundT<T>(va) + ldT<T>(a.res, m * N + un.ra);
    if (un.rb >= 0) vb = roundT<T>(vb) + ldT<T>(a.res, m * N + un.rb);
  }
  const bool heads = (a.heads_mask >> s) & 1;
  auto at = [&](long long row) -> long long {
    if (heads) {
      const long long h = row / a.d;
      return (h * M + m) * a.d + (row - h * a.d);
    }
    return m * N + row;
  };
  T* y = static_cast<T*>(s == 0 ? a.y0 : s == 1 ? a.y1 : a.y2);
  y[at(un.ra)] = from_float<T>(va);
  if (un.rb >= 0) y[at(un.rb)] = from_float<T>(vb);
}

// Programmatic dependent launch (sm_90): the CTA may start while the previous kernel on the stream finishes; weights
// are constants, so only the reads of x / res / positions wait. No-ops where the launch was a plain one.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// M token rows; P units (row pairs) per warp, consecutive in the launch's unit order.
template <typename T, int M, int P> __device__ void gemv_kernel(const ZvGemvArgs& a) {
  constexpr int V = Pack<T>::N;
  // 16-byte vectors per row per stage: 4 for one row and one unit, 2 for more rows, 1 for two units (registers).
  constexpr int U = P > 1 ? 1 : M > 1 ? kGemvUnroll / 2 : kGemvUnroll;
  constexpr long long BATCH = 32LL * V * U;
  extern __shared__ __align__(16) unsigned char zv_gemv_smem[];
  T* xs = reinterpret_cast<T*>(zv_gemv_smem);
  __shared__ float rnorm[M];
  __shared__ float red[kGemvWarps][M];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long units = a.mode == 1 ? a.n0 : (a.n0 + 1) / 2 + (a.nseg > 1 ? (a.n1 + 1) / 2 : 0) + (a.nseg > 2 ? (a.n2 + 1) / 2 : 0);
  const long long u0 = (static_cast<long long>(blockIdx.x) * kGemvWarps + warp) * P;
  // Only the row pointers stay live through the loop (the units are recomputed for the epilogue: registers).
  const T* wa[P];
  const T* wb[P];
#pragma unroll
  for (int j = 0; j < P; j++) {
    const bool in = u0 + j < units;
    const Unit un = unit_of(a, in ? u0 + j : 0);
    const void* w = un.seg == 0 ? a.w0 : un.seg == 1 ? a.w1 : a.w2;
    wa[j] = in ? static_cast<const T*>(w) + un.ra * a.K : nullptr;
    wb[j] = !in ? nullptr : a.mode == 1 ? static_cast<const T*>(a.w1) + un.rb * a.K : (un.rb >= 0 ? static_cast<const T*>(w) + un.rb * a.K : nullptr);
  }
  const long long K = a.K, nb = (K + BATCH - 1) / BATCH;

  uint4 ca[P][U], cb[P][U], na[P][U], nbv[P][U];
  auto load = [&](long long b, uint4 (&ra)[P][U], uint4 (&rb)[P][U]) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const long long k = b * BATCH + static_cast<long long>(u) * 32 * V + lane * V;
#pragma unroll
      for (int j = 0; j < P; j++) {
        const bool in = wa[j] && k < K;
        ra[j][u] = in ? ld_stream(wa[j] + k) : make_uint4(0, 0, 0, 0);
        rb[j][u] = in && wb[j] ? ld_stream(wb[j] + k) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // The first stage is in flight while the previous kernel finishes and the CTA normalizes x.
  load(0, ca, cb);
  pdl_wait();

  if (a.norm_w) {
    float ss[M];
#pragma unroll
    for (int m = 0; m < M; m++) ss[m] = 0.f;
    // Four independent 16-byte loads per row in flight per thread (a dependent chain of L2 round trips otherwise).
    constexpr long long STEP = 32LL * kGemvWarps * V;
    for (long long k0 = static_cast<long long>(threadIdx.x) * V; k0 < K; k0 += 4 * STEP) {
#pragma unroll
      for (int m = 0; m < M; m++) {
        uint4 v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) v[j] = k0 + j * STEP < K ? *reinterpret_cast<const uint4*>(static_cast<const T*>(a.x) + x_index<M>(a, m, k0 + j * STEP)) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int j = 0; j < 4; j++) {
          float f[V];
          unpack(v[j], f, static_cast<T*>(nullptr));
#pragma unroll
          for (int i = 0; i < V; i++) ss[m] += f[i] * f[i];
        }
      }
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float t = zv::warp_sum(ss[m]);
      if (lane == 0) red[warp][m] = t;
    }
    __syncthreads();
    if (threadIdx.x < M) {
      float t = 0.f;
      for (int w = 0; w < kGemvWarps; w++) t += red[w][threadIdx.x];
      rnorm[threadIdx.x] = rsqrtf(t / static_cast<float>(K) + static_cast<float>(a.eps));
    }
  }

  float acc[M][P][2];
#pragma unroll
  for (int m = 0; m < M; m++)
#pragma unroll
    for (int j = 0; j < P; j++) acc[m][j][0] = acc[m][j][1] = 0.f;
  const long long kc = a.kc;
  long long chunk0 = -1;
  for (long long b = 0; b < nb; b++) {
    const long long kb = b * BATCH;
    if (kb / kc != chunk0) {  // stage the chunk of x holding this batch (kc is a multiple of BATCH)
      chunk0 = kb / kc;
      const long long c0 = chunk0 * kc, clen = min(kc, K - c0), per = clen / V;
      __syncthreads();
      constexpr int S = 3;  // vectors per thread in flight while staging
      for (long long e0 = threadIdx.x; e0 < M * per; e0 += S * 32 * kGemvWarps) {
        uint4 v[S], g[S];
#pragma unroll
        for (int j = 0; j < S; j++) {
          const long long e = e0 + j * 32 * kGemvWarps;
          const int m = static_cast<int>(e / per);
          const long long kk = c0 + (e - m * per) * V;
          const bool in = e < M * per;
          v[j] = in ? *reinterpret_cast<const uint4*>(static_cast<const T*>(a.x) + x_index<M>(a, m, kk)) : make_uint4(0, 0, 0, 0);
          g[j] = in && a.norm_w ? *reinterpret_cast<const uint4*>(static_cast<const T*>(a.norm_w) + kk) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int j = 0; j < S; j++) {
          const long long e = e0 + j * 32 * kGemvWarps;
          if (e >= M * per) break;
          const int m = static_cast<int>(e / per);
          const long long kk = c0 + (e - m * per) * V;
          if (a.norm_w) {
            float f[V], gf[V];
            unpack(v[j], f, static_cast<T*>(nullptr));
            unpack(g[j], gf, static_cast<T*>(nullptr));
            const float r = rnorm[m];
#pragma unroll
            for (int i = 0; i < V; i++) f[i] = gf[i] * roundT<T>(f[i] * r);
            v[j] = pack<T>(f);
          }
          *reinterpret_cast<uint4*>(xs + m * kc + (kk - c0)) = v[j];
        }
      }
      __syncthreads();
    }
    if (b + 1 < nb) load(b + 1, na, nbv);
    const long long cbase = chunk0 * kc;
#pragma unroll
    for (int u = 0; u < U; u++) {
      const long long k = kb + static_cast<long long>(u) * 32 * V + lane * V;
      if (k < K) {
        // One unit at a time (x re-read from shared memory per unit): fewer live registers.
#pragma unroll
        for (int j = 0; j < P; j++) {
          float fa[V], fb[V];
          unpack(ca[j][u], fa, static_cast<T*>(nullptr));
          unpack(cb[j][u], fb, static_cast<T*>(nullptr));
#pragma unroll
          for (int m = 0; m < M; m++) {
            float fx[V];
            unpack(*reinterpret_cast<const uint4*>(xs + m * kc + (k - cbase)), fx, static_cast<T*>(nullptr));
#pragma unroll
            for (int i = 0; i < V; i++) {
              acc[m][j][0] = fmaf(fa[i], fx[i], acc[m][j][0]);
              acc[m][j][1] = fmaf(fb[i], fx[i], acc[m][j][1]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int j = 0; j < P; j++) {
        ca[j][u] = na[j][u];
        cb[j][u] = nbv[j][u];
      }
  }
  // Every weight byte of this CTA is read: the next kernel's CTAs may take the SM's free slots.
  pdl_launch_dependents();

#pragma unroll
  for (int j = 0; j < P; j++) {
    float va = 0.f, vb = 0.f;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float s0 = zv::warp_sum(acc[m][j][0]), s1 = zv::warp_sum(acc[m][j][1]);
      if (lane == m) {
        va = s0;
        vb = s1;
      }
    }
    if (u0 + j < units && lane < M) epilogue<T, M>(a, unit_of(a, u0 + j), lane, va, vb);
  }
}

}  // namespace zvg
