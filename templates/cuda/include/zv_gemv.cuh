// Device library of the small-batch linear layers of decode (M <= 8 token rows): y = x W^T streamed at the memory
// rate, with the decoder's neighbouring elementwise work folded into the prologue and epilogue so a decoder layer is
// a handful of launches instead of twenty:
//   prologue  RMSNorm of x (HF LlamaRMSNorm rounding: w * T(x * r)), x read row-major [M, K] or head-major
//             [K / x_head_dim, M, x_head_dim] (the attention output, so no fromHeads copy);
//   body      up to three weight matrices sharing x (q, k, v), each [N_s, K] row-major;
//   epilogue  bias, rotary embedding (HF rotate_half on rows i and i + d/2 of a head), head-major output
//             [N_s / d, M, d], residual add (segment 0), or the gated MLP silu(x Wg^T) * (x Wu^T); with a sink,
//             segments 1 and 2 (k, v) also land in their paged-cache rows (decode's append, folded in).
// Work split: a "unit" = two weight rows (a rope pair, two adjacent rows, or gate row p with up row p); one warp owns
// one unit, streams its rows once through a cp.async ring in shared memory (R - 1 stages of 1 KiB in flight a warp,
// no registers held), and reduces with shuffles. Launched with PDL, a CTA issues its first stages before waiting for the
// previous kernel. x for all M rows rides in the ring next to the weights ("direct", kc = 0; with a norm, the norm
// weight rides too and x is normalized at use with the CTA's RMS scale), or sits in shared memory in chunks of kc
// elements, normalized once per CTA (knobs.gemvDirect). Every value is rounded to T where the unfused ops
// round (after the linear, after bias, after rope, after the add), so the fused result equals the composition of
// cuda-ops' plain ops up to f32 summation order.
// Launch: grid ceil(units * KS / kGemvWarps), block 32 * kGemvWarps, dynamic shared memory M * kc * sizeof(T) (staged x)
// + kGemvWarps * R * 1 KiB (the rings); kc = 0 ("direct"): no staged x, rings of kGemvWarps * R * (2 + M [+ 1 with a
// norm]) * 512 bytes.
#pragma once
#include "zv_common.cuh"
#include "zv_model_args.cuh"

namespace zvg {
using zv::from_float;
using zv::to_float;

constexpr int kGemvWarps = 4;
// Stages of a warp's weight ring in shared memory (2 rows x 512 bytes each): a template parameter R of the kernel.

template <typename T> struct Pack {
  static constexpr int N = 16 / static_cast<int>(sizeof(T));
};

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
  if (heads && s > 0 && a.sink_rows) {  // the new token's K / V row straight into its page row
    T* pages = static_cast<T*>(s == 1 ? a.sink_k : a.sink_v);
    auto put = [&](long long row, float v) {
      const long long h = row / a.d, dst = a.sink_rows[h * M + m];
      if (dst >= 0) pages[dst * a.d + (row - h * a.d)] = from_float<T>(v);
    };
    put(un.ra, va);
    if (un.rb >= 0) put(un.rb, vb);
  }
}

// M token rows, R ring stages. One unit (two weight rows) per warp; its rows stream through a per-warp ring of R
// stages in shared memory (cp.async, 16 bytes a lane a row a stage): each lane reads back only the bytes it copied,
// so the ring needs no barrier, keeps R - 1 stages (R - 1 KiB a warp) in flight without registers, and its first
// stages are issued before the PDL wait, while the previous kernel drains.
// KS > 1 (one row, x in one chunk or in the ring): KS warps share a unit, each streaming 1/KS of K, and add up through shared
// memory at the end: twice the CTAs for a narrow matrix, so its launch ramps and drains in shorter steps.
template <typename T, int M, int R, int KS> __device__ void gemv_kernel(const ZvGemvArgs& a) {
  constexpr int V = Pack<T>::N;
  constexpr long long STAGE = 32LL * V;  // elements of K per stage
  extern __shared__ __align__(16) unsigned char zv_gemv_smem[];
  const long long kc = a.kc;
  T* xs = reinterpret_cast<T*>(zv_gemv_smem);
  __shared__ float rnorm[M];
  __shared__ float red[kGemvWarps][M];
  __shared__ float parts[kGemvWarps][M][2];

  // kc == 0: x is not staged; each stage's x vectors (and, with a norm, the norm weight's) ride in the ring slot after
  // the two weight rows, so the weight stream never waits on a CTA-wide staging pass (a one-wave launch otherwise
  // idles the memory while every CTA stages x at once). Else x is staged in chunks of kc elements.
  const bool direct = kc == 0, gnorm = direct && a.norm_w;  // gnorm: the norm weight rides in the ring too
  const int SW = direct ? 2 + M + (gnorm ? 1 : 0) : 2;  // 16-byte vectors a lane a stage in the ring (w, w[, x[M][, g]])
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint4* ring = reinterpret_cast<uint4*>(zv_gemv_smem + M * kc * sizeof(T)) + warp * R * SW * 32 + lane;
  const long long units = a.mode == 1 ? a.n0 : (a.n0 + 1) / 2 + (a.nseg > 1 ? (a.n1 + 1) / 2 : 0) + (a.nseg > 2 ? (a.n2 + 1) / 2 : 0);
  const long long u = static_cast<long long>(blockIdx.x) * (kGemvWarps / KS) + warp / KS;
  const int part = warp % KS;
  const bool active = u < units;
  const Unit un = unit_of(a, active ? u : 0);
  const void* w = un.seg == 0 ? a.w0 : un.seg == 1 ? a.w1 : a.w2;
  const T* wa = static_cast<const T*>(w) + un.ra * a.K;
  const T* wb = a.mode == 1 ? static_cast<const T*>(a.w1) + un.rb * a.K : (un.rb >= 0 ? static_cast<const T*>(w) + un.rb * a.K : nullptr);
  const long long K = a.K, nall = (K + STAGE - 1) / STAGE;
  // This warp's stages [b0, b0 + nb) of K.
  const long long b0 = part * nall / KS, nb = (part + 1) * nall / KS - b0;
  // Stage order rotated per warp (a.rotate, x in one chunk or direct), so the warps a wave starts together do not
  // all read the same column offset of rows a fixed stride apart.
  const int nbi = static_cast<int>(nb), rot = a.rotate ? static_cast<int>((blockIdx.x * kGemvWarps + warp) % nbi) : 0;
  auto kstage = [&](long long b) { const int r = static_cast<int>(b) + rot; return (b0 + (r >= nbi ? r - nbi : r)) * STAGE; };

  // Stage b's weights (and, direct, its x) into slot b % R; the caller commits the group (an empty group past the last
  // stage keeps the wait counts uniform).
  auto issue_w = [&](long long b) {
    if (b < nb) {
      const long long k = kstage(b) + lane * V;
      const bool in = active && k < K;
      uint4* slot = ring + (b % R) * SW * 32;
      zv::cp_async_16(slot, in ? wa + k : wa, in);
      zv::cp_async_16(slot + 32, in && wb ? wb + k : wa, in && wb != nullptr);
    }
  };
  auto issue_x = [&](long long b) {
    if (direct && b < nb) {
      const long long k = kstage(b) + lane * V;
      uint4* slot = ring + (b % R) * SW * 32;
#pragma unroll
      for (int m = 0; m < M; m++) zv::cp_async_16_ca(slot + (2 + m) * 32, static_cast<const T*>(a.x) + (k < K ? x_index<M>(a, m, k) : 0), k < K);
      if (gnorm) zv::cp_async_16_ca(slot + (2 + M) * 32, static_cast<const T*>(a.norm_w) + (k < K ? k : 0), k < K);
    }
  };
#pragma unroll
  for (int b = 0; b < R - 1; b++) {
    issue_w(b);
    zv::cp_async_commit();
  }
  zv::pdl_wait();
  if (direct) {  // x of the first stages (the previous kernel's output: only after the wait), one more group
#pragma unroll
    for (int b = 0; b < R - 1; b++) issue_x(b);
    zv::cp_async_commit();
  }

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
      for (int ww = 0; ww < kGemvWarps; ww++) t += red[ww][threadIdx.x];
      rnorm[threadIdx.x] = rsqrtf(t / static_cast<float>(K) + static_cast<float>(a.eps));
    }
    if (gnorm) __syncthreads();  // (staged x: the staging pass starts with one)
  }

  float acc[M][2];
#pragma unroll
  for (int m = 0; m < M; m++) acc[m][0] = acc[m][1] = 0.f;
  long long chunk0 = -1;
  for (long long b = 0; b < nb; b++) {
    const long long kb = kstage(b);
    if (!direct && kb / kc != chunk0) {  // stage the chunk of x holding this stage (kc is a multiple of STAGE)
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
    // Stage b has landed (this lane's copies); direct, the first stages' x came in a later group: wait for all once.
    if (direct && b == 0) zv::cp_async_wait<0>();
    else zv::cp_async_wait<R - 2>();
    const uint4* slot = ring + (b % R) * SW * 32;
    const uint4 wva = slot[0], wvb = slot[32];
    uint4 xv[M];
#pragma unroll
    for (int m = 0; m < M; m++) xv[m] = direct ? slot[(2 + m) * 32] : make_uint4(0, 0, 0, 0);
    const uint4 gv = gnorm ? slot[(2 + M) * 32] : make_uint4(0, 0, 0, 0);
    issue_w(b + R - 1);  // into the slot read at b - 1
    issue_x(b + R - 1);
    zv::cp_async_commit();
    const long long k = kb + lane * V;
    if (k < K) {
      float fa[V], fb[V];
      unpack(wva, fa, static_cast<T*>(nullptr));
      unpack(wvb, fb, static_cast<T*>(nullptr));
      float fg[V];
      if (gnorm) unpack(gv, fg, static_cast<T*>(nullptr));
#pragma unroll
      for (int m = 0; m < M; m++) {
        float fx[V];
        unpack(direct ? xv[m] : *reinterpret_cast<const uint4*>(xs + m * kc + (k - chunk0 * kc)), fx, static_cast<T*>(nullptr));
        if (gnorm) {  // x normalized at use, rounded as the staged path rounds: T(w * T(x * r))
          const float r = rnorm[m];
#pragma unroll
          for (int i = 0; i < V; i++) fx[i] = roundT<T>(fg[i] * roundT<T>(fx[i] * r));
        }
#pragma unroll
        for (int i = 0; i < V; i++) {
          acc[m][0] = fmaf(fa[i], fx[i], acc[m][0]);
          acc[m][1] = fmaf(fb[i], fx[i], acc[m][1]);
        }
      }
    }
  }
  zv::cp_async_wait<0>();
  // Every weight byte of this CTA is read: the next kernel's CTAs may take the SM's free slots.
  zv::pdl_launch_dependents();

  float va = 0.f, vb = 0.f;
#pragma unroll
  for (int m = 0; m < M; m++) {
    const float s0 = zv::warp_sum(acc[m][0]), s1 = zv::warp_sum(acc[m][1]);
    if (lane == m) {
      va = s0;
      vb = s1;
    }
  }
  if constexpr (KS > 1) {
    if (lane < M) {
      parts[warp][lane][0] = va;
      parts[warp][lane][1] = vb;
    }
    __syncthreads();
    if (part != 0) return;
    if (lane < M)
      for (int j = 1; j < KS; j++) {
        va += parts[warp + j][lane][0];
        vb += parts[warp + j][lane][1];
      }
  }
  if (active && lane < M) epilogue<T, M>(a, un, lane, va, vb);
}

}  // namespace zvg
