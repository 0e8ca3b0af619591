// zipvl device library: decode attention over the pruned KV cache (SEMANTICS.md step 7), split-KV.
//
// zv_decode_split: grid (Hkv, splits). A CTA takes one KV head and one contiguous slice of the cache
// [s*ceil(c/splits), ...) of the device-resident length c, and serves ALL g = Hq/Hkv query heads of that KV head
// with ONE pass over the slice for g <= 4 * warps (decode is bandwidth-bound: each K/V byte is read from DRAM once
// per group). The slice streams through a kStages-deep ring of shared-memory tiles filled by cp.async (16-byte
// copies, ~32 KB in flight per CTA whatever the register budget); the warps are split into teams of kMaxG query
// heads (q and o of 4 heads stay in registers), and every team reads each staged K/V row from shared memory.
// Inside a team, a key row is covered by kL lanes (kL = row vectors rounded up to a power of two, so d = 80/96
// idle a few lanes instead of breaking the shuffle tree); the 32/kL lane groups of a warp and the team's warps each
// run an independent online softmax over interleaved keys and are merged at the end.
// Output: splits == 1 writes o directly (one launch). Otherwise each CTA writes an unnormalized partial and its
// (max, sum) per query head; with args.counters set, the LAST CTA of a KV head to finish (atomic arrival counter,
// reset by that CTA) merges the splits of its g heads in the same launch; with counters == null the separate
// zv_decode_combine kernel does (grid Hq).
// Scores are kept in base 2 (q is pre-scaled by scale*log2(e)); part_ml therefore holds base-2 maxima, which only
// the combines read. No mask and no score modifier: decode attends to every cached token.
#pragma once

#include "zv_args.cuh"
#include "zv_common.cuh"
#include "zv_decode_mma.cuh"

namespace zv {

__host__ __device__ constexpr int pow2_ceil(int x) { return x <= 1 ? 1 : 2 * pow2_ceil((x + 1) / 2); }

template <typename T, int D, int kWarpsCfg, int kMmaCfg = 0>
struct DecodeConfig {
  static_assert(D % DType<T>::kVec == 0, "head dim must be a multiple of 16 bytes");
  static constexpr int kWarps = kWarpsCfg > 0 ? kWarpsCfg : 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kVec = DType<T>::kVec;
  static constexpr int kRowVecs = D / kVec;                              // 16-byte vectors per row
  static constexpr int kL = pow2_ceil(kRowVecs) < 32 ? pow2_ceil(kRowVecs) : 32;  // lanes per key
  static constexpr int kVPL = ceil_div(kRowVecs, kL);                    // vectors per lane
  static constexpr int kGroups = 32 / kL;                                // keys side by side in a warp
  // Query heads per warp team: q and o of 4 heads in registers (2 * 4 * 8 floats a lane at d = 128 bf16) keep the
  // kernel at 3+ CTAs/SM. Larger groups get more teams (all reading the same staged rows), not more registers.
  static constexpr int kMaxG = 4;
  // Shared-memory ring: each stage holds kTile K rows and kTile V rows (~8 KB); kStages - 1 stages are in flight.
  static constexpr int kTile = 4096 / (D * (int)sizeof(T)) >= 1 ? 4096 / (D * (int)sizeof(T)) : 1;
  static constexpr int kStages = 5;
  static constexpr int kChunks = 2 * kTile * kRowVecs;                   // 16-byte copies per stage
  static constexpr int kWCap = kStages * kChunks * 4;                    // floats of the ring (combine scratch)
  static constexpr int kMinBlocks = kWarps >= 12 ? 1 : 12 / kWarps;  // zv_paged.cuh's split kernel
  // zv_decode_split: bytes in flight come from the cp.async ring, not registers, so two 4-warp CTAs per SM suffice
  // (schedule.ts decodeBlocksPerSM mirrors this: the host sizes one wave of splits by it).
  static constexpr int kSplitMinBlocks = kWarps >= 8 ? 1 : 8 / kWarps;
  static constexpr int kCombineThreads = 128;
  // config `mma: 1`: g >= 4 takes zv_decode_mma.cuh's tensor-core pass (16-bit types only; f32 stays SIMT).
  static constexpr bool kMma = kMmaCfg > 0 && sizeof(T) == 2;
};

// Shared memory of zv_paged.cuh's split kernel (register-streamed, heads in chunks of kMaxG).
template <class C, int D>
struct DecodeShared {
  float o[C::kWarps][C::kMaxG][D];
  float m[C::kWarps][C::kMaxG], l[C::kWarps][C::kMaxG];
};

// Shared memory of the split kernel: the K/V ring while streaming, then the warps' partial softmax states, then
// (last CTA only) the combine's split weights. One buffer for all head-count instantiations.
template <class C, int D>
union DecodeSmem {
  uint4 stage[C::kStages][2][C::kTile][C::kRowVecs];
  struct {
    float o[C::kWarps][C::kMaxG][D];
    float m[C::kWarps][C::kMaxG], l[C::kWarps][C::kMaxG];
  } merge;
  float w[C::kWCap];
};

// One pass over cache rows [lo, hi) of KV head kv for query heads [h0, h0 + gp): `tp` teams of kWarps / tp warps,
// team t taking heads [h0 + t * kG, h0 + t * kG + kG) (fewer, or none, at the end).
template <typename T, int D, class C, int kG>
__device__ void decode_pass(const ZvDecodeArgs& a, DecodeSmem<C, D>& sh, long long kv, long long h0, int gp, int tp,
                            long long lo, long long hi) {
  constexpr int kL = C::kL, kVPL = C::kVPL, kVec = C::kVec, kT = C::kTile, kS = C::kStages, kRV = C::kRowVecs;
  constexpr int kU = 2;  // keys per lane group per softmax update (a 16-row tile is 2 steps of 8 streams)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane % kL, grp = lane / kL;
  const int tw = C::kWarps / tp, team = warp / tw, wt = warp % tw;
  const int gc = max(0, min(kG, gp - team * kG));  // warp-uniform: shuffles below run under it
  const long long hs = h0 + (long long)team * kG;
  const int nstr = tw * C::kGroups, stream = wt * C::kGroups + grp;
  const float qscale = (float)a.scale * kLog2e;

  float q[kG][kVPL][kVec], o[kG][kVPL][kVec], m[kG], l[kG];
#pragma unroll
  for (int h = 0; h < kG; ++h) {
    m[h] = neg_inf(); l[h] = 0.f;
#pragma unroll
    for (int v = 0; v < kVPL; ++v) {
      const int vec = sub + v * kL;
      float f[kVec];
      if (h < gc && vec < kRV) load16_f32(static_cast<const T*>(a.q) + (hs + h) * D + vec * kVec, f);
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
  const long long ntiles = hi > lo ? ceil_div(hi - lo, (long long)kT) : 0;
  // Stage tile t (rows lo + t*kT ...) into ring slot t % kS; rows past hi are zero-filled (never read as keys).
  auto issue = [&](long long t) {
    if (t < ntiles) {
      uint4(*slot)[kT][kRV] = sh.stage[t % kS];
      stage_kv_rows<D, kT, kRV, C::kThreads>(kc, vc, lo + t * kT, lo, hi, [&](int which, int row, int vec) { return &slot[which][row][vec]; });
    }
    cp_async_commit();  // empty groups keep the wait counts uniform
  };
  auto consume = [&](const uint4 (*kt)[kRV], const uint4 (*vt)[kRV], long long base) {
    for (int r0 = 0; r0 < kT; r0 += kU * nstr) {  // warp-uniform trip count (the scores are shuffled)
      int row[kU];
      bool ok[kU];
      float s[kU][kG];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        row[u] = r0 + u * nstr + stream;
        ok[u] = row[u] < kT && base + row[u] < hi;
#pragma unroll
        for (int h = 0; h < kG; ++h) s[u][h] = 0.f;
#pragma unroll
        for (int v = 0; v < kVPL; ++v) {
          const int vec = sub + v * kL;
          float kf[kVec];
          cvt16(ok[u] && vec < kRV ? kt[row[u]][vec] : make_uint4(0, 0, 0, 0), kf, T());
#pragma unroll
          for (int h = 0; h < kG; ++h)
            if (h < gc)
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
      // Online softmax update, once per kU keys. The rescale of o (kVPL * kVec multiplies a head, as many as the PV
      // update itself) runs only when the running max grows, which after the first keys is rare.
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        if (h >= gc) break;
        float mx = m[h];
#pragma unroll
        for (int u = 0; u < kU; ++u) mx = fmaxf(mx, s[u][h]);
        if (mx == neg_inf()) continue;
        if (mx > m[h]) {
          const float corr = fast_exp2(m[h] - mx);  // 0 when m was -inf (l and o are 0 then)
          l[h] *= corr;
#pragma unroll
          for (int v = 0; v < kVPL; ++v)
#pragma unroll
            for (int e = 0; e < kVec; ++e) o[h][v][e] *= corr;
          m[h] = mx;
        }
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          s[u][h] = fast_exp2(s[u][h] - mx);
          l[h] += s[u][h];
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (!ok[u]) continue;  // p = 0, and the row may not be staged
#pragma unroll
        for (int v = 0; v < kVPL; ++v) {
          const int vec = sub + v * kL;
          if (vec >= kRV) continue;
          float vf[kVec];
          cvt16(vt[row[u]][vec], vf, T());
#pragma unroll
          for (int h = 0; h < kG; ++h)
            if (h < gc)
#pragma unroll
              for (int e = 0; e < kVec; ++e) o[h][v][e] = fmaf(s[u][h], vf[e], o[h][v][e]);
        }
      }
    }
  };
#pragma unroll
  for (int t = 0; t < kS - 1; ++t) issue(t);
  for (long long t = 0; t < ntiles; ++t) {
    cp_async_wait<kS - 2>();  // tile t has landed (for this thread's copies) ...
    __syncthreads();          // ... and for everyone's; slot (t - 1) % kS is free again
    issue(t + kS - 1);
    consume(sh.stage[t % kS][0], sh.stage[t % kS][1], lo + t * kT);
  }
  cp_async_wait<0>();
  __syncthreads();  // the ring is dead: its bytes become the merge buffer

  // Merge the lane groups of the warp (lanes with equal `sub`), then the team's warps through shared memory.
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
        if (vec < kRV)
#pragma unroll
          for (int e = 0; e < kVec; ++e) sh.merge.o[warp][h][vec * kVec + e] = o[h][v][e];
      }
      if (sub == 0) { sh.merge.m[warp][h] = m[h]; sh.merge.l[warp][h] = l[h]; }
    }
  }
  __syncthreads();
  const long long split = blockIdx.y, splits = a.splits;
  for (int idx = threadIdx.x; idx < gp * D; idx += C::kThreads) {
    const int ph = idx / D, e = idx % D, h = ph % kG, w0 = (ph / kG) * tw;
    float mx = neg_inf();
    for (int w = w0; w < w0 + tw; ++w) mx = fmaxf(mx, sh.merge.m[w][h]);
    float acc = 0.f, sum = 0.f;
    if (mx != neg_inf())
      for (int w = w0; w < w0 + tw; ++w) {
        const float c = fast_exp2(sh.merge.m[w][h] - mx);
        acc += sh.merge.o[w][h][e] * c; sum += sh.merge.l[w][h] * c;
      }
    const long long head = h0 + ph;
    if (splits == 1) {
      static_cast<T*>(a.o)[head * D + e] = from_float<T>(sum > 0.f ? acc * (1.f / sum) : 0.f);
    } else {
      const long long r = head * splits + split;
      a.part_o[r * D + e] = acc;
      if (e == 0) { a.part_ml[2 * r] = mx; a.part_ml[2 * r + 1] = sum; }
    }
  }
  __syncthreads();  // the shared buffer is reused by the next pass
}

__device__ __forceinline__ float warp_max_f(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float warp_sum_f(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// The last CTA of a KV head: o[h] = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s for its g heads (zero if empty).
// Split weights go to shared memory (a warp per head); then threads take (head, 4 columns) pairs, and when there
// are fewer pairs than threads, also interleaved slices of the splits, summed through shared memory. Partials
// written by other CTAs of this launch are read with ld.global.cg (L2), never through L1.
template <typename T, int D, class C>
__device__ void decode_last_combine(const ZvDecodeArgs& a, DecodeSmem<C, D>& sh, long long h0, long long g) {
  constexpr int kP4 = D / 4, kRed = 4 * C::kThreads;
  const long long S = a.splits;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* w = sh.w;
  float4* red = reinterpret_cast<float4*>(sh.w + (C::kWCap - kRed));
  const long long hb = max(1ll, min(g, (C::kWCap - kRed) / (S + 1)));  // heads per block of the scratch
  for (long long b0 = 0; b0 < g; b0 += hb) {
    const int nh = (int)min(hb, g - b0);
    float* inv = w + nh * S;
    for (int h = warp; h < nh; h += C::kWarps) {
      const float* ml = a.part_ml + (h0 + b0 + h) * S * 2;
      float mx = neg_inf();
      for (long long s = lane; s < S; s += 32) mx = fmaxf(mx, __ldcg(ml + 2 * s));
      mx = warp_max_f(mx);
      float sum = 0.f;
      for (long long s = lane; s < S; s += 32) {
        const float ws = mx == neg_inf() ? 0.f : fast_exp2(__ldcg(ml + 2 * s) - mx);  // 0 for empty splits
        w[h * S + s] = ws;
        sum += __ldcg(ml + 2 * s + 1) * ws;
      }
      sum = warp_sum_f(sum);
      if (lane == 0) inv[h] = sum > 0.f ? 1.f / sum : 0.f;
    }
    __syncthreads();
    const int P = nh * kP4;
    const int nsl = P >= C::kThreads ? 1 : (int)min(S, (long long)(C::kThreads / P));
    auto store = [&](int p, float4 acc) {
      const int h = p / kP4, c = p % kP4;
      T* out = static_cast<T*>(a.o) + (h0 + b0 + h) * D + 4 * c;
      const float iv = inv[h];
      out[0] = from_float<T>(acc.x * iv); out[1] = from_float<T>(acc.y * iv);
      out[2] = from_float<T>(acc.z * iv); out[3] = from_float<T>(acc.w * iv);
    };
    // Two pair-slices a thread per sweep (i0 and i1 = i0 + kThreads), so 16 loads are in flight with unroll 8. A
    // second one exists only when nsl == 1 (P * nsl <= kThreads otherwise), so both share the split loop.
    const int total = P * nsl;
    for (int i0 = threadIdx.x; i0 < total; i0 += 2 * C::kThreads) {
      const int i1 = i0 + C::kThreads;
      const bool has1 = i1 < total;
      const int p0 = i0 % P, sl = i0 / P, p1 = has1 ? i1 % P : p0;
      const float4* po0 = reinterpret_cast<const float4*>(a.part_o + (h0 + b0 + p0 / kP4) * S * D) + p0 % kP4;
      const float4* po1 = reinterpret_cast<const float4*>(a.part_o + (h0 + b0 + p1 / kP4) * S * D) + p1 % kP4;
      const float* w0 = w + (p0 / kP4) * S;
      const float* w1 = w + (p1 / kP4) * S;
      float4 a0 = make_float4(0.f, 0.f, 0.f, 0.f), a1 = a0;
#pragma unroll 8
      for (long long s = sl; s < S; s += nsl) {
        const float4 x0 = __ldcg(po0 + s * kP4);
        const float4 x1 = has1 ? __ldcg(po1 + s * kP4) : make_float4(0.f, 0.f, 0.f, 0.f);
        const float u0 = w0[s], u1 = w1[s];
        a0.x = fmaf(x0.x, u0, a0.x); a0.y = fmaf(x0.y, u0, a0.y); a0.z = fmaf(x0.z, u0, a0.z); a0.w = fmaf(x0.w, u0, a0.w);
        a1.x = fmaf(x1.x, u1, a1.x); a1.y = fmaf(x1.y, u1, a1.y); a1.z = fmaf(x1.z, u1, a1.z); a1.w = fmaf(x1.w, u1, a1.w);
      }
      if (nsl == 1) {
        store(p0, a0);
        if (has1) store(p1, a1);
      } else {
        red[i0] = a0;  // one pair-slice per thread
      }
    }
    if (nsl > 1) {
      __syncthreads();
      for (int p = threadIdx.x; p < P; p += C::kThreads) {
        float4 acc = red[p];
        for (int sl = 1; sl < nsl; ++sl) {
          const float4 v = red[sl * P + p];
          acc.x += v.x; acc.y += v.y; acc.z += v.z; acc.w += v.w;
        }
        store(p, acc);
      }
    }
    __syncthreads();  // the scratch is reused by the next block of heads
  }
}

template <typename T, int D, class C>
__device__ void decode_split_kernel(const ZvDecodeArgs& a) {
  static_assert((C::kWarps & (C::kWarps - 1)) == 0, "warps must be a power of two (head teams split them evenly)");
  __shared__ __align__(16) DecodeSmem<C, D> sh;
  const long long kv = blockIdx.x, g = a.Hq / a.Hkv;
  const long long len = min(a.capacity, max(0ll, (long long)*a.length));
  const long long chunk = ceil_div(len, a.splits);
  const long long lo = min(len, (long long)blockIdx.y * chunk), hi = min(len, lo + chunk);
  // Register arrays need a compile-time head count: 1 and 2 exactly, else teams of kMaxG heads, as many teams per
  // pass as fit the warps (a power of two); only g > 4 * warps takes more than one pass over the slice.
  bool done = false;
  if constexpr (C::kMma) {
    if (g >= 4) {
      for (long long h = 0; h < g; h += 16)
        decode_pass_mma<T, D, C>(a, reinterpret_cast<uint4*>(&sh), kv, kv * g + h, (int)min(16ll, g - h), lo, hi);
      done = true;
    }
  }
  if (done) {
  } else if (g == 1) decode_pass<T, D, C, 1>(a, sh, kv, kv, 1, 1, lo, hi);
  else if (g == 2) decode_pass<T, D, C, 2>(a, sh, kv, kv * 2, 2, 1, lo, hi);
  else
    for (long long h = 0; h < g;) {
      const long long chunks = ceil_div(g - h, (long long)C::kMaxG);
      int tp = 1;
      while (2 * tp <= chunks && 2 * tp <= C::kWarps) tp *= 2;
      const int gp = (int)min((long long)tp * C::kMaxG, g - h);
      decode_pass<T, D, C, C::kMaxG>(a, sh, kv, kv * g + h, gp, tp, lo, hi);
      h += gp;
    }
  if (a.splits > 1 && a.counters != nullptr && last_to_arrive(a.counters + kv, a.splits)) {
    decode_last_combine<T, D, C>(a, sh, kv * g, g);
    if (threadIdx.x == 0) a.counters[kv] = 0u;  // ready for the next launch (stream order)
  }
}

// One output row merged from its splits' partials: o = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s (zero when every
// split is empty). ml: [splits, 2] (base-2 max, sum), po: [splits, D]. The whole CTA takes the row: the split weights
// are computed once into shared memory, then each thread streams its d-columns over the splits with several loads in
// flight (a serial loop over splits was latency-bound). CG: the partials were written by other CTAs of the same launch,
// so they are read through L2 (ld.global.cg), never a stale L1 line. Ends with a barrier (its shared memory is reused
// by the caller's next row).
// Up to kFewSplits splits: each thread loads its column of every partial while threads < splits load the (max, sum)
// pairs, one round trip to L2 instead of three dependent ones (the row's merge sits on each decode layer's critical
// path).
constexpr int kFewSplits = 16;

template <typename T, int D, bool CG>
__device__ void combine_row(const float* ml, const float* po, long long splits, T* out) {
  constexpr int kMaxW = 1024;  // splits beyond this recompute their weight on the fly
  __shared__ float w[kMaxW];
  __shared__ float red[32];
  auto ld = [](const float* p) { return CG ? __ldcg(p) : *p; };
  auto ld2 = [](const float* p) { return CG ? __ldcg(reinterpret_cast<const float2*>(p)) : *reinterpret_cast<const float2*>(p); };
  if (splits <= kFewSplits && blockDim.x >= kFewSplits) {  // (every launch has 128+ threads: threads < S hold the pairs)
    const int S = static_cast<int>(splits);
    // This thread's column of every partial and (threads < S) one split's (max, sum), all in flight at once.
    auto column = [&](int e, float (&p)[kFewSplits]) {
#pragma unroll
      for (int s = 0; s < kFewSplits; ++s) p[s] = s < S && e < D ? ld(po + s * D + e) : 0.f;
    };
    float p[kFewSplits];
    column(threadIdx.x, p);
    if (threadIdx.x < S) {
      const float2 v = ld2(ml + 2 * threadIdx.x);
      w[threadIdx.x] = v.x;
      w[kFewSplits + threadIdx.x] = v.y;
    }
    __syncthreads();
    float mx = neg_inf();
    for (int s = 0; s < S; ++s) mx = fmaxf(mx, w[s]);
    auto merge = [&](int e, const float (&p)[kFewSplits]) {
      float acc = 0.f, sum = 0.f;
      if (mx != neg_inf())
#pragma unroll
        for (int s = 0; s < kFewSplits; ++s)
          if (s < S) {
            const float ws = fast_exp2(w[s] - mx);  // 0 for empty splits (m = -inf)
            acc += p[s] * ws;
            sum += w[kFewSplits + s] * ws;
          }
      if (e < D) out[e] = from_float<T>(sum > 0.f ? acc * (1.f / sum) : 0.f);
    };
    merge(threadIdx.x, p);
    for (int e = threadIdx.x + blockDim.x; e < D; e += blockDim.x) {
      column(e, p);
      merge(e, p);
    }
    __syncthreads();  // w is reused by the caller's next row
    return;
  }
  float mx = neg_inf();
  for (long long s = threadIdx.x; s < splits; s += blockDim.x) mx = fmaxf(mx, ld(ml + 2 * s));
  mx = block_max(mx, red);
  float sum = 0.f;
  if (mx != neg_inf())
    for (long long s = threadIdx.x; s < splits; s += blockDim.x) {
      const float ws = fast_exp2(ld(ml + 2 * s) - mx);  // 0 for empty splits (m = -inf)
      if (s < kMaxW) w[s] = ws;
      sum += ld(ml + 2 * s + 1) * ws;
    }
  sum = block_sum(sum, red);  // also orders the w[] writes before the reads below
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  for (int e = threadIdx.x; e < D; e += blockDim.x) {
    float acc = 0.f;
    if (mx != neg_inf()) {
#pragma unroll 8
      for (long long s = 0; s < splits; ++s) acc += ld(po + s * D + e) * (s < kMaxW ? w[s] : fast_exp2(ld(ml + 2 * s) - mx));
    }
    out[e] = from_float<T>(acc * inv);
  }
  __syncthreads();
}

// grid Hq: the separate combine launch (counters == null), one query head a CTA.
template <typename T, int D, class C>
__device__ void decode_combine_kernel(const ZvDecodeArgs& a) {
  const long long h = blockIdx.x, splits = a.splits;
  combine_row<T, D, false>(a.part_ml + h * splits * 2, a.part_o + h * splits * D, splits, static_cast<T*>(a.o) + h * D);
}

}  // namespace zv
