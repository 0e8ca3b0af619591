// zipvl device library: decode attention over the pruned KV cache (SEMANTICS.md step 7), split-KV.
//
// zv_decode_split: grid (Hkv, splits). A CTA takes one KV head and one contiguous slice of the cache
// [s*ceil(c/splits), ...) of the device-resident length c, and serves ALL g = Hq/Hkv query heads of that KV head,
// so each K/V byte is read once per group (decode is bandwidth-bound). It writes an unnormalized partial output
// and its (max, sum) per query head; zv_decode_combine merges the splits.
// Inside the CTA, a key row is covered by kL lanes with 16-byte loads (kL = row vectors rounded up to a power of
// two, so d = 80/96 idle a few lanes instead of breaking the shuffle tree); the 32/kL lane groups of a warp and the
// warps each run an independent online softmax over interleaved keys and are merged at the end.
// Scores are kept in base 2 (q is pre-scaled by scale*log2(e)); part_ml therefore holds base-2 maxima, which only
// zv_decode_combine reads. No mask and no score modifier: decode attends to every cached token.
#pragma once

#include "zv_args.cuh"
#include "zv_common.cuh"

namespace zv {

__host__ __device__ constexpr int pow2_ceil(int x) { return x <= 1 ? 1 : 2 * pow2_ceil((x + 1) / 2); }

template <typename T, int D, int kWarpsCfg>
struct DecodeConfig {
  static_assert(D % DType<T>::kVec == 0, "head dim must be a multiple of 16 bytes");
  static constexpr int kWarps = kWarpsCfg > 0 ? kWarpsCfg : 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kVec = DType<T>::kVec;
  static constexpr int kRowVecs = D / kVec;                              // 16-byte vectors per row
  static constexpr int kL = pow2_ceil(kRowVecs) < 32 ? pow2_ceil(kRowVecs) : 32;  // lanes per key
  static constexpr int kVPL = ceil_div(kRowVecs, kL);                    // vectors per lane
  static constexpr int kGroups = 32 / kL;                                // keys side by side in a warp
  // Heads per pass over the slice. 8 would need ~210 registers (q and o for 8 heads per lane); with 4 the kernel
  // fits 3 CTAs/SM, and groups of 5-8 heads re-read their slice once more, mostly from L2.
  static constexpr int kMaxG = 4;
  static constexpr int kMinBlocks = kWarps >= 12 ? 1 : 12 / kWarps;
  static constexpr int kCombineThreads = 128;
};

// Shared memory of the split kernel, sized for the largest head chunk (one buffer for all instantiations).
template <class C, int D>
struct DecodeShared {
  float o[C::kWarps][C::kMaxG][D];
  float m[C::kWarps][C::kMaxG], l[C::kWarps][C::kMaxG];
};

// Heads [h0, h0 + gc) (gc <= kG) of KV head kv over cache rows [lo, hi).
template <typename T, int D, class C, int kG>
__device__ void decode_heads(const ZvDecodeArgs& a, DecodeShared<C, D>& sh, long long kv, long long h0, int gc,
                             long long lo, long long hi) {
  constexpr int kL = C::kL, kVPL = C::kVPL, kVec = C::kVec, kW = C::kWarps;
  constexpr int kU = kVPL * kG >= 8 ? 1 : (kVPL * kG >= 4 ? 2 : 4);  // keys per lane group per batch (2 in flight)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane % kL, grp = lane / kL;
  const long long stream = warp * C::kGroups + grp, nstreams = kW * C::kGroups;
  const float qscale = (float)a.scale * kLog2e;

  float q[kG][kVPL][kVec], o[kG][kVPL][kVec], m[kG], l[kG];
#pragma unroll
  for (int h = 0; h < kG; ++h) {
    m[h] = neg_inf(); l[h] = 0.f;
#pragma unroll
    for (int v = 0; v < kVPL; ++v) {
      const int vec = sub + v * kL;
      float f[kVec];
      if (h < gc && vec < C::kRowVecs) load16_f32(static_cast<const T*>(a.q) + (h0 + h) * D + vec * kVec, f);
      else
#pragma unroll
        for (int e = 0; e < kVec; ++e) f[e] = 0.f;
#pragma unroll
      for (int e = 0; e < kVec; ++e) { q[h][v][e] = f[e] * qscale; o[h][v][e] = 0.f; }
    }
  }

  const size_t row0 = (size_t)kv * a.capacity;
  const T* kc = static_cast<const T*>(a.k_cache) + row0 * D;
  const T* vc = static_cast<const T*>(a.v_cache) + row0 * D;
  // One batch = kU keys per lane group. Register double buffer: the next batch's K/V loads are in flight while
  // the current batch is consumed (one CTA slice is only a few batches long, so each stall would be exposed).
  struct Batch { uint4 kr[kU][kVPL], vr[kU][kVPL]; bool ok[kU]; };
  const long long step = (long long)kU * nstreams;
  auto load_batch = [&](long long b0, Batch& f) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const long long j = b0 + u * nstreams + stream;
      f.ok[u] = j < hi;
#pragma unroll
      for (int v = 0; v < kVPL; ++v) {
        const int vec = sub + v * kL;
        const bool ld = f.ok[u] && vec < C::kRowVecs;
        f.kr[u][v] = ld ? ld16_stream(kc + j * D + vec * kVec) : make_uint4(0, 0, 0, 0);
        f.vr[u][v] = ld ? ld16_stream(vc + j * D + vec * kVec) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  auto consume = [&](const Batch& f) {
    const auto& kr = f.kr;
    const auto& vr = f.vr;
    const auto& ok = f.ok;
    float s[kU][kG];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
#pragma unroll
      for (int h = 0; h < kG; ++h) s[u][h] = 0.f;
#pragma unroll
      for (int v = 0; v < kVPL; ++v) {
        float kf[kVec];
        cvt16(kr[u][v], kf, T());
#pragma unroll
        for (int h = 0; h < kG; ++h)
          if (h < gc)  // block-uniform: padding heads of a partial chunk cost nothing
#pragma unroll
            for (int e = 0; e < kVec; ++e) s[u][h] = fmaf(q[h][v][e], kf[e], s[u][h]);
      }
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        if (h >= gc) break;
#pragma unroll
        for (int off = 1; off < kL; off <<= 1) s[u][h] += __shfl_xor_sync(0xffffffffu, s[u][h], off);
        if (!ok[u]) s[u][h] = neg_inf();
      }
    }
    // Online softmax update, once per batch of kU keys.
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      if (h >= gc) break;
      float mx = m[h];
#pragma unroll
      for (int u = 0; u < kU; ++u) mx = fmaxf(mx, s[u][h]);
      if (mx == neg_inf()) continue;
      const float corr = fast_exp2(m[h] - mx);
      l[h] *= corr;
#pragma unroll
      for (int v = 0; v < kVPL; ++v)
#pragma unroll
        for (int e = 0; e < kVec; ++e) o[h][v][e] *= corr;
      m[h] = mx;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        s[u][h] = fast_exp2(s[u][h] - mx);
        l[h] += s[u][h];
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u)
#pragma unroll
      for (int v = 0; v < kVPL; ++v) {
        float vf[kVec];
        cvt16(vr[u][v], vf, T());
#pragma unroll
        for (int h = 0; h < kG; ++h)
          if (h < gc && m[h] != neg_inf())
#pragma unroll
            for (int e = 0; e < kVec; ++e) o[h][v][e] = fmaf(s[u][h], vf[e], o[h][v][e]);
      }
  };
  if (lo < hi) {  // warp-uniform trip counts (consume shuffles)
    Batch fa, fb;
    load_batch(lo, fa);
    for (long long b0 = lo;; b0 += 2 * step) {
      load_batch(b0 + step, fb);
      consume(fa);
      if (b0 + step >= hi) break;
      load_batch(b0 + 2 * step, fa);
      consume(fb);
      if (b0 + 2 * step >= hi) break;
    }
  }

  // Merge the lane groups of the warp (lanes with equal `sub`), then the warps through shared memory.
#pragma unroll
  for (int off = kL; off < 32; off <<= 1)
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m[h], off), l2 = __shfl_xor_sync(0xffffffffu, l[h], off);
      const float mx = fmaxf(m[h], m2);
      const float c1 = mx == neg_inf() ? 0.f : fast_exp2(m[h] - mx), c2 = mx == neg_inf() ? 0.f : fast_exp2(m2 - mx);
      l[h] = l[h] * c1 + l2 * c2;
      m[h] = mx;
#pragma unroll
      for (int v = 0; v < kVPL; ++v)
#pragma unroll
        for (int e = 0; e < kVec; ++e) o[h][v][e] = o[h][v][e] * c1 + __shfl_xor_sync(0xffffffffu, o[h][v][e], off) * c2;
    }
  if (grp == 0) {
#pragma unroll
    for (int h = 0; h < kG; ++h) {
#pragma unroll
      for (int v = 0; v < kVPL; ++v) {
        const int vec = sub + v * kL;
        if (vec < C::kRowVecs)
#pragma unroll
          for (int e = 0; e < kVec; ++e) sh.o[warp][h][vec * kVec + e] = o[h][v][e];
      }
      if (sub == 0) { sh.m[warp][h] = m[h]; sh.l[warp][h] = l[h]; }
    }
  }
  __syncthreads();
  const long long split = blockIdx.y, splits = a.splits;
  for (int idx = threadIdx.x; idx < gc * D; idx += C::kThreads) {
    const int h = idx / D, e = idx % D;
    float mx = neg_inf();
#pragma unroll
    for (int w = 0; w < kW; ++w) mx = fmaxf(mx, sh.m[w][h]);
    float acc = 0.f, sum = 0.f;
    if (mx != neg_inf())
#pragma unroll
      for (int w = 0; w < kW; ++w) {
        const float c = fast_exp2(sh.m[w][h] - mx);
        acc += sh.o[w][h][e] * c; sum += sh.l[w][h] * c;
      }
    const long long row = (h0 + h) * splits + split;
    a.part_o[row * D + e] = acc;
    if (e == 0) { a.part_ml[2 * row] = mx; a.part_ml[2 * row + 1] = sum; }
  }
  __syncthreads();  // shared buffer is reused by the next head chunk
}

template <typename T, int D, class C>
__device__ void decode_split_kernel(const ZvDecodeArgs& a) {
  __shared__ __align__(16) DecodeShared<C, D> sh;
  const long long kv = blockIdx.x, g = a.Hq / a.Hkv;
  const long long len = min(a.capacity, max(0ll, (long long)*a.length));
  const long long chunk = ceil_div(len, a.splits);
  const long long lo = min(len, (long long)blockIdx.y * chunk), hi = min(len, lo + chunk);
  // Register arrays need a compile-time head count: dispatch on g, chunk heads by kMaxG beyond that.
  if (g == 1) decode_heads<T, D, C, 1>(a, sh, kv, kv, 1, lo, hi);
  else if (g == 2) decode_heads<T, D, C, 2>(a, sh, kv, kv * 2, 2, lo, hi);
  else
    for (long long h = 0; h < g; h += C::kMaxG)
      decode_heads<T, D, C, C::kMaxG>(a, sh, kv, kv * g + h, (int)min((long long)C::kMaxG, g - h), lo, hi);
}

// grid (Hq), block kCombineThreads: o[h] = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s (base 2); zero if empty.
// The split weights are computed once into shared memory, then each thread streams its d-columns over the splits
// with several loads in flight (a serial loop over splits was latency-bound).
template <typename T, int D, class C>
__device__ void decode_combine_kernel(const ZvDecodeArgs& a) {
  constexpr int kMaxW = 1024;  // splits beyond this recompute their weight on the fly
  __shared__ float w[kMaxW];
  __shared__ float red[32];
  const long long h = blockIdx.x, splits = a.splits;
  const float* ml = a.part_ml + h * splits * 2;
  float mx = neg_inf();
  for (long long s = threadIdx.x; s < splits; s += blockDim.x) mx = fmaxf(mx, ml[2 * s]);
  mx = block_max(mx, red);
  float sum = 0.f;
  if (mx != neg_inf())
    for (long long s = threadIdx.x; s < splits; s += blockDim.x) {
      const float ws = fast_exp2(ml[2 * s] - mx);  // 0 for empty splits (m = -inf)
      if (s < kMaxW) w[s] = ws;
      sum += ml[2 * s + 1] * ws;
    }
  sum = block_sum(sum, red);  // also orders the w[] writes before the reads below
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  const float* po = a.part_o + h * splits * D;
  for (int e = threadIdx.x; e < D; e += blockDim.x) {
    float acc = 0.f;
    if (mx != neg_inf()) {
#pragma unroll 8
      for (long long s = 0; s < splits; ++s)
        acc += po[s * D + e] * (s < kMaxW ? w[s] : fast_exp2(ml[2 * s] - mx));
    }
    static_cast<T*>(a.o)[h * D + e] = from_float<T>(acc * inv);
  }
}

}  // namespace zv
