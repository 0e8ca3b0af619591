// zipvl device library: probe scoring (SEMANTICS.md steps 2-3 and the `visible` counts of step 4).
//
// One launch (the launcher zeroes colmass first). A CTA owns BM flattened probe rows of one KV head and streams
// ALL keys of that head twice: pass 1 builds exact row softmax stats (max, sum), pass 2 turns scores into
// probabilities and adds column sums into colmass with one f32 atomicAdd per (CTA, key). Sigmoid/none skip pass 1.
// Parallelism comes from rows: flattened row r = i*g + hg (probe i, head kv*g + hg) so the g heads of a KV head
// share each K load (GQA-aware), and BM is small (16-32) so Hkv*ceil(g*m/BM) CTAs fill the GPU (Hq=40, m=128:
// 160-320 CTAs). CTAs of one KV head are adjacent in launch order, so they stream K through L2 together.
// Key split (sm_90, config `cluster` = C > 1): the column mass of key j needs the FINAL stats of every row, which
// a plain grid cannot share in one launch; a thread-block cluster can. The C CTAs of a cluster own the same rows
// (blockIdx.x = row block * C + cluster rank) and interleave the key tiles (warp w of rank c takes tiles
// c*warps + w, + C*warps, ...). Pass 1 stats of each CTA go to its shared memory, one cluster barrier, every CTA
// merges the C partial stats in rank order (distributed shared memory reads; all CTAs get identical row stats),
// then pass 2 adds its own tiles' column sums. Work per CTA drops C-fold while the grid grows C-fold, for the short
// sequences (n of a few thousand) where 160-320 CTAs streaming every key leave the GPU latency bound.
//
// f16/bf16: mma.sync m16n8k16 with fragments loaded straight from global memory (no shared-memory staging). The
// k index inside each 32-wide chunk is permuted identically for Q and K (a dot product does not care) so that
// every lane issues one 16-byte load per 32 elements: lane (gid, tig) loads elements [32c + 8tig, +8) of its row
// as words w0..w3 and uses {w0,w1} for k-step 2c and {w2,w3} for k-step 2c+1 (A: a0/a2 of row gid, a1/a3 of
// row gid+8; B: b0/b1 of key gid). A trailing 16-wide chunk (d = 80) uses 8-byte loads.
// float: SIMT path, Q rows in shared memory, one key per thread.
#pragma once

#include "zv_args.cuh"
#include "zv_common.cuh"

namespace zv {

// Lets templates accept either a number or a name for the activation ("softmax"/"sigmoid"/"none" or 0/1/2).
__host__ __device__ constexpr bool cstr_eq(const char* a, const char* b) {
  return *a == *b && (*a == '\0' || cstr_eq(a + 1, b + 1));
}
__host__ __device__ constexpr int activation_code(const char* s) {
  return cstr_eq(s, "sigmoid") || cstr_eq(s, "1") ? 1 : (cstr_eq(s, "none") || cstr_eq(s, "2") ? 2 : 0);
}

// Config knobs (0 = default). See probe.cu.hbs for their meaning.
template <typename T, int D, int kWarpsCfg, int kMTCfg, int kNTCfg, int kRowsF32Cfg, int kMinBlocksCfg = 0,
          int kClusterCfg = 0>
struct ProbeConfig {
  static_assert(D % 16 == 0 && D >= 16 && D <= 256, "head dim must be a multiple of 16, <= 256");
  static constexpr bool kTC = DType<T>::kTensorCore;
  // Defaults measured on H100/H200 (bf16, d=128, Hq=40, m=128; alternatives were 10-50% slower): 16 probe rows
  // and 8 warps per CTA, 16-key tiles per warp (double-buffered), two CTAs per SM (128 registers). Small CTAs give
  // more of them (balance over 132 SMs and across causal row blocks); more warps per row hide load latency.
  // d = 256 keeps 4 warps and 8-key tiles to stay spill-free.
  static constexpr int kWarps = kWarpsCfg > 0 ? kWarpsCfg : (kTC && D <= 128 ? 8 : 4);
  static constexpr int kMT = kMTCfg > 0 ? kMTCfg : 1;                 // m16 tiles: Q fragments live in registers
  static constexpr int kNT = kNTCfg > 0 ? kNTCfg : (D > 128 ? 1 : 2);  // n8 key tiles per warp iteration
  static constexpr int kRowsF32 = kRowsF32Cfg > 0 ? kRowsF32Cfg : 16;
  static constexpr int kBM = kTC ? 16 * kMT : kRowsF32;  // flattened probe rows per CTA
  static constexpr int kThreads = 32 * kWarps;
  // Occupancy hint for __launch_bounds__ (without one, ptxas capped some sm_80 builds at 128 registers and spilled).
  static constexpr int kMinBlocks = kMinBlocksCfg > 0 ? kMinBlocksCfg : (kWarps >= 16 ? 1 : 2);
  // CTAs per thread-block cluster splitting the keys of the same rows (1 = no cluster; > 1 needs sm_90 and the
  // kernel's __cluster_dims__(kCluster, 1, 1)). 8 is the portable maximum cluster size.
  static constexpr int kCluster = kClusterCfg > 0 ? kClusterCfg : 1;
  static_assert(kCluster == 1 || kCluster == 2 || kCluster == 4 || kCluster == 8, "cluster must be 1, 2, 4 or 8");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  static_assert(kCluster == 1, "a probe cluster (config cluster > 1) needs sm_90");
#endif
};

// Host-mirrorable geometry: grid = (ceil(g*m / BM) * cluster, Hkv, 1), block = (32*warps, 1, 1), no dynamic
// shared memory.

// Thread-block cluster primitives (sm_90 PTX; with kC == 1 they compile to nothing, so sm_80 builds never see them).
// With __cluster_dims__(kC, 1, 1) a cluster is kC CTAs adjacent in x, so the rank is blockIdx.x % kC (%cluster_ctarank
// equals it); computing it from blockIdx lets the compiler rematerialize it instead of holding a register.
template <int kC>
__device__ __forceinline__ int cluster_rank() { return kC == 1 ? 0 : (int)(blockIdx.x % kC); }
// The two halves of a cluster-wide barrier (every thread of every CTA of the cluster arrives). release/acquire
// order this CTA's shared-memory writes before the other CTAs' reads of them.
template <int kC>
__device__ __forceinline__ void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (kC > 1) asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
#endif
}
template <int kC>
__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (kC > 1) asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
// The float at `p` (this CTA's shared memory) in the shared memory of cluster rank `rank`.
__device__ __forceinline__ float ld_cluster_shared(const float* p, int rank) {
  float v = 0.f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned local = (unsigned)__cvta_generic_to_shared(p);
  unsigned remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
#else
  (void)p; (void)rank;
#endif
  return v;
}
// Row stats of the whole cluster: merge the C partial (max, sum) states CTA ranks published at cl_m/cl_l[row], in
// rank order so every CTA of the cluster gets bit-identical stats.
template <int kC>
__device__ __forceinline__ void cluster_merge_read(const float* cl_m, const float* cl_l, int row, float& m, float& l) {
  m = neg_inf(); l = 0.f;
#pragma unroll
  for (int c = 0; c < kC; ++c) softmax_merge(m, l, ld_cluster_shared(cl_m + row, c), ld_cluster_shared(cl_l + row, c));
}

// visible[j] = #{i : probe_mask(P[i], j)}. Independent of heads, so the columns are spread over all CTAs (one plain
// store per column). Causal masks only let probes at or after j see j: start at the first such probe.
template <class V>
__device__ void probe_write_visible(const ZvProbeArgs& a) {
  const long long nblk = (long long)gridDim.x * gridDim.y, b = (long long)blockIdx.y * gridDim.x + blockIdx.x;
  const long long per = ceil_div(a.n, nblk), lo = b * per, hi = min(a.n, lo + per);
  const int m = (int)a.m;
  for (long long j = lo + threadIdx.x; j < hi; j += blockDim.x) {
    int i = 0;
    if (V::kProbeCausal) {  // lower_bound(probes, j)
      int hi_i = m;
      while (i < hi_i) {
        int mid = (i + hi_i) >> 1;
        if (a.probes[mid] < j) i = mid + 1; else hi_i = mid;
      }
    }
    int cnt = 0;
    for (; i < m; ++i) cnt += V::probe_mask(a.probes[i], j, a.n, a.params) ? 1 : 0;
    a.visible[j] = (float)cnt;
  }
}

// Exclusive end of the keys any row of this CTA can see (rows ascend in probe position).
template <class V>
__device__ __forceinline__ long long probe_key_end(const ZvProbeArgs& a, long long r0, int bm, long long g) {
  if (!V::kProbeCausal) return a.n;
  const long long last_row = min(r0 + bm, g * a.m) - 1;
  return min(a.n, (long long)a.probes[last_row / g] + 1);
}

// Probability of a visible score once row stats are known (m2 = row max, inv_l = 1/row sum; softmax only).
template <class V>
__device__ __forceinline__ float probe_activate(float s, float m2, float inv_l) {
  if (V::kActivation == 0) return fast_exp(s - m2) * inv_l;
  if (V::kActivation == 1) return 1.f / (1.f + __expf(-s));
  return s;
}

// ------------------------------------------------------------------------------------------------------------
// Tensor-core path (f16/bf16)
// ------------------------------------------------------------------------------------------------------------
template <class V, typename T, int D, class C>
__device__ void probe_tc(const ZvProbeArgs& a) {
  constexpr int kMT = C::kMT, kNT = C::kNT, kW = C::kWarps, kBM = C::kBM;
  constexpr int kSteps = D / 16, kFull = D / 32, kTile = 8 * kNT;
  constexpr bool kHalf = (D % 32) != 0;
  constexpr int kCl = C::kCluster;
  __shared__ float sm_m[kW][kBM], sm_l[kW][kBM];
  __shared__ float cl_m[kCl > 1 ? kBM : 1], cl_l[kCl > 1 ? kBM : 1];  // this CTA's row stats, read by the cluster

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, tig = lane & 3;
  const long long n = a.n, g = a.Hq / a.Hkv, rows = g * a.m, kv = blockIdx.y;
  const long long r0 = (long long)(blockIdx.x / kCl) * kBM;
  if (r0 >= rows) return;  // uniform over a cluster (its CTAs share r0)
  const int vwarp = cluster_rank<kCl>() * kW + warp;  // this warp's index among the cluster's kCl * kW warps
  const double* P = a.params;
  const float scale = (float)a.scale;

  // Q fragments of this lane's rows gid and gid+8 of every m16 tile (k permuted, see header).
  uint32_t qa[kMT][kSteps][4];
  int qpos[kMT][2];  // positions fit 32 bits (n < 2^31); the hooks get them as long long
  bool rval[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const long long r = r0 + mt * 16 + hf * 8 + gid;
      rval[mt][hf] = r < rows;
      const long long i = rval[mt][hf] ? r / g : 0, h = kv * g + (rval[mt][hf] ? r % g : 0);
      qpos[mt][hf] = a.probes[i];
      const T* src = static_cast<const T*>(a.q) + ((size_t)h * n + qpos[mt][hf]) * D;
#pragma unroll
      for (int c = 0; c < kFull; ++c) {
        const uint4 u = rval[mt][hf] ? ld16(src + 32 * c + 8 * tig) : make_uint4(0, 0, 0, 0);
        qa[mt][2 * c][hf] = u.x; qa[mt][2 * c][2 + hf] = u.y;
        qa[mt][2 * c + 1][hf] = u.z; qa[mt][2 * c + 1][2 + hf] = u.w;
      }
      if (kHalf) {
        const uint2 u = rval[mt][hf] ? *reinterpret_cast<const uint2*>(src + 32 * kFull + 4 * tig) : make_uint2(0, 0);
        qa[mt][kSteps - 1][hf] = u.x; qa[mt][kSteps - 1][2 + hf] = u.y;
      }
    }

  const int kend = (int)probe_key_end<V>(a, r0, kBM, g);
  const T* kbase = static_cast<const T*>(a.k) + (size_t)kv * n * D;

  // K fragments of keys [base, base + kTile) (zero past kend), and S = Q K^T for them: acc[mt][nt] holds rows
  // (gid, gid+8) x cols (2tig, 2tig+1).
  struct KFrag { uint4 full[kNT][kFull > 0 ? kFull : 1]; uint2 half[kNT]; };
  auto load_tile = [&](int base, KFrag& f) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int key = base + nt * 8 + gid;
      const bool ok = key < kend;
      const T* src = kbase + (ok ? key : 0) * D + 8 * tig;  // 32-bit offset (n * D < 2^31) saves registers
#pragma unroll
      for (int c = 0; c < kFull; ++c) f.full[nt][c] = ok ? ld16(src + 32 * c) : make_uint4(0, 0, 0, 0);
      if (kHalf) f.half[nt] = ok ? *reinterpret_cast<const uint2*>(src - 4 * tig + 32 * kFull) : make_uint2(0, 0);
    }
  };
  // Even and odd k-steps accumulate separately: twice the independent HMMA chains (the chains' latency, not the
  // tensor pipe, limited the loop).
  auto tile_mma = [&](const KFrag& f, float (&acc)[kMT][kNT][4]) {
    float acc2[kMT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) { acc[mt][nt][e] = 0.f; acc2[mt][nt][e] = 0.f; }
#pragma unroll
    for (int c = 0; c < kFull; ++c)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const uint32_t b0[2] = {f.full[nt][c].x, f.full[nt][c].y}, b1[2] = {f.full[nt][c].z, f.full[nt][c].w};
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<T>(acc[mt][nt], qa[mt][2 * c], b0);
          mma_16816<T>(acc2[mt][nt], qa[mt][2 * c + 1], b1);
        }
      }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][nt][e] += acc2[mt][nt][e];
    if (kHalf) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const uint32_t b[2] = {f.half[nt].x, f.half[nt].y};
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) mma_16816<T>(acc[mt][nt], qa[mt][kSteps - 1], b);
      }
    }
  };
  // One pass over this warp's tiles (vwarp, vwarp + kCl*kW, ...). Register double buffer: the next tile's loads
  // are in flight while the current one is multiplied and consumed (each warp would otherwise stall on every tile).
  auto for_each_tile = [&](auto&& consume) {
    const int stride = kCl * kW * kTile;
    int base = vwarp * kTile;
    if (base >= kend) return;
    KFrag fa, fb;
    load_tile(base, fa);
    for (;; base += 2 * stride) {
      load_tile(base + stride, fb);
      {
        float acc[kMT][kNT][4];
        tile_mma(fa, acc);
        consume(base, acc);
      }
      if (base + stride >= kend) break;
      load_tile(base + 2 * stride, fa);
      {
        float acc[kMT][kNT][4];
        tile_mma(fb, acc);
        consume(base + stride, acc);
      }
      if (base + 2 * stride >= kend) break;
    }
  };
  // Scaled, modified score of element (mt, hf, nt, c), or -inf where invisible.
  auto score = [&](const float (&acc)[kMT][kNT][4], int base, int mt, int hf, int nt, int c) {
    const int col = base + nt * 8 + 2 * tig + c;
    const float s = V::score_mod(acc[mt][nt][2 * hf + c] * scale, qpos[mt][hf], col, n, P);
    const bool vis = rval[mt][hf] && col < kend && V::probe_mask(qpos[mt][hf], col, n, P);
    return vis ? s : neg_inf();
  };

  float row_m[kMT][2], row_il[kMT][2];  // final row max and 1/sum (softmax only)
  if (V::kActivation == 0) {
    float rm[kMT][2], rl[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) { rm[mt][hf] = neg_inf(); rl[mt][hf] = 0.f; }
    for_each_tile([&](int base, const float (&acc)[kMT][kNT][4]) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          float s[kNT][2], tm = neg_inf();
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int c = 0; c < 2; ++c) { s[nt][c] = score(acc, base, mt, hf, nt, c); tm = fmaxf(tm, s[nt][c]); }
          if (tm == neg_inf()) continue;  // nothing visible in this tile for this row
          const float mn = fmaxf(rm[mt][hf], tm);
          float l = rl[mt][hf] * fast_exp(rm[mt][hf] - mn);
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int c = 0; c < 2; ++c) l += fast_exp(s[nt][c] - mn);
          rm[mt][hf] = mn; rl[mt][hf] = l;
        }
    });
    // Merge the 4 lanes of a row (tig), then the warps (shared memory).
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
#pragma unroll
        for (int o = 1; o < 4; o <<= 1) {
          const float m2 = __shfl_xor_sync(0xffffffffu, rm[mt][hf], o);
          const float l2 = __shfl_xor_sync(0xffffffffu, rl[mt][hf], o);
          softmax_merge(rm[mt][hf], rl[mt][hf], m2, l2);
        }
        if (tig == 0) { sm_m[warp][mt * 16 + hf * 8 + gid] = rm[mt][hf]; sm_l[warp][mt * 16 + hf * 8 + gid] = rl[mt][hf]; }
      }
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float m2 = neg_inf(), l2 = 0.f;
#pragma unroll
        for (int w = 0; w < kW; ++w) softmax_merge(m2, l2, sm_m[w][mt * 16 + hf * 8 + gid], sm_l[w][mt * 16 + hf * 8 + gid]);
        row_m[mt][hf] = m2;
        row_il[mt][hf] = l2;
        if (kCl > 1 && warp == 0 && tig == 0) { cl_m[mt * 16 + hf * 8 + gid] = m2; cl_l[mt * 16 + hf * 8 + gid] = l2; }
      }
    if constexpr (kCl > 1) {  // the cluster's stats; the barrier's second half is at the end of the kernel
      cluster_arrive<kCl>();
      cluster_wait<kCl>();
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) cluster_merge_read<kCl>(cl_m, cl_l, mt * 16 + hf * 8 + gid, row_m[mt][hf], row_il[mt][hf]);
      cluster_arrive<kCl>();
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) row_il[mt][hf] = row_il[mt][hf] > 0.f ? 1.f / row_il[mt][hf] : 0.f;
  } else {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) { row_m[mt][hf] = 0.f; row_il[mt][hf] = 0.f; }
  }

  // Pass 2: probabilities, summed over this CTA's rows, one atomic per column.
  float* cm = a.colmass + (a.per_kv_head ? kv * n : 0);
  for_each_tile([&](int base, const float (&acc)[kMT][kNT][4]) {
    float cs[kNT][2];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) { cs[nt][0] = 0.f; cs[nt][1] = 0.f; }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const float s = score(acc, base, mt, hf, nt, c);
            if (s != neg_inf()) cs[nt][c] += probe_activate<V>(s, row_m[mt][hf], row_il[mt][hf]);
          }
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        float v = cs[nt][c];
        v += __shfl_xor_sync(0xffffffffu, v, 4);
        v += __shfl_xor_sync(0xffffffffu, v, 8);
        v += __shfl_xor_sync(0xffffffffu, v, 16);
        const int col = base + nt * 8 + 2 * tig + c;
        // Spread the kNT*2 atomics of a tile over the 8 row-lanes.
        if (gid == ((nt * 2 + c) & 7) && col < kend && v != 0.f) atomicAdd(cm + col, v);
      }
  });
  if (V::kActivation == 0) cluster_wait<kCl>();  // no CTA leaves while the cluster may still read its cl_m/cl_l
}

// ------------------------------------------------------------------------------------------------------------
// SIMT path (float inputs): Q rows in shared memory (broadcast reads), one key per thread per iteration.
// ------------------------------------------------------------------------------------------------------------
template <class V, int D, class C>
__device__ void probe_simt(const ZvProbeArgs& a) {
  constexpr int R = C::kRowsF32, kT = C::kThreads, kW = C::kWarps, kCl = C::kCluster;
  __shared__ __align__(16) float sq[R][D];
  __shared__ long long sqpos[R];  // -1: row past the end
  __shared__ float sm_m[kW][R], sm_l[kW][R], s_m[R], s_il[R];
  __shared__ float cl_m[kCl > 1 ? R : 1], cl_l[kCl > 1 ? R : 1];  // this CTA's row stats, read by the cluster

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long long n = a.n, g = a.Hq / a.Hkv, rows = g * a.m, kv = blockIdx.y;
  const long long r0 = (long long)(blockIdx.x / kCl) * R;
  if (r0 >= rows) return;  // uniform over a cluster (its CTAs share r0)
  // Keys j0, j0 + kStride, ...: the cluster's kCl * kT threads interleave the keys.
  const long long j0 = (long long)cluster_rank<kCl>() * kT + threadIdx.x, kStride = (long long)kCl * kT;
  const double* P = a.params;
  const float scale = (float)a.scale;

  for (int idx = threadIdx.x; idx < R * (D / 4); idx += kT) {
    const int rr = idx / (D / 4), c4 = idx % (D / 4);
    const long long r = r0 + rr;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r < rows) {
      const long long pos = a.probes[r / g], h = kv * g + r % g;
      v = *reinterpret_cast<const float4*>(static_cast<const float*>(a.q) + ((size_t)h * n + pos) * D + 4 * c4);
      if (c4 == 0) sqpos[rr] = pos;
    } else if (c4 == 0) {
      sqpos[rr] = -1;
    }
    *reinterpret_cast<float4*>(&sq[rr][4 * c4]) = v;
  }
  __syncthreads();

  const long long kend = probe_key_end<V>(a, r0, R, g);
  const float* kbase = static_cast<const float*>(a.k) + (size_t)kv * n * D;
  // Scaled, modified, masked scores of key j against the R rows.
  auto scores = [&](long long j, float (&s)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] = 0.f;
    const float* kp = kbase + (size_t)j * D;
#pragma unroll 4
    for (int c = 0; c < D; c += 4) {
      const float4 k4 = *reinterpret_cast<const float4*>(kp + c);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4 q4 = *reinterpret_cast<const float4*>(&sq[r][c]);
        s[r] = fmaf(q4.x, k4.x, fmaf(q4.y, k4.y, fmaf(q4.z, k4.z, fmaf(q4.w, k4.w, s[r]))));
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const long long qp = sqpos[r];
      const float v = V::score_mod(s[r] * scale, qp, j, n, P);
      s[r] = (qp >= 0 && V::probe_mask(qp, j, n, P)) ? v : neg_inf();
    }
  };

  if (V::kActivation == 0) {
    float rm[R], rl[R];
#pragma unroll
    for (int r = 0; r < R; ++r) { rm[r] = neg_inf(); rl[r] = 0.f; }
    for (long long j = j0; j < kend; j += kStride) {
      float s[R];
      scores(j, s);
#pragma unroll
      for (int r = 0; r < R; ++r) softmax_merge(rm[r], rl[r], s[r], s[r] == neg_inf() ? 0.f : 1.f);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, rm[r], o), l2 = __shfl_xor_sync(0xffffffffu, rl[r], o);
        softmax_merge(rm[r], rl[r], m2, l2);
      }
      if (lane == 0) { sm_m[warp][r] = rm[r]; sm_l[warp][r] = rl[r]; }
    }
    __syncthreads();
    float m2 = neg_inf(), l2 = 0.f;
    if (threadIdx.x < R) {
      for (int w = 0; w < kW; ++w) softmax_merge(m2, l2, sm_m[w][threadIdx.x], sm_l[w][threadIdx.x]);
      if (kCl > 1) { cl_m[threadIdx.x] = m2; cl_l[threadIdx.x] = l2; }
    }
    if constexpr (kCl > 1) {  // the cluster's stats; the barrier's second half is at the end of the kernel
      cluster_arrive<kCl>();
      cluster_wait<kCl>();
      if (threadIdx.x < R) cluster_merge_read<kCl>(cl_m, cl_l, threadIdx.x, m2, l2);
      cluster_arrive<kCl>();
    }
    if (threadIdx.x < R) {
      s_m[threadIdx.x] = m2;
      s_il[threadIdx.x] = l2 > 0.f ? 1.f / l2 : 0.f;
    }
    __syncthreads();
  }

  float* cm = a.colmass + (a.per_kv_head ? kv * n : 0);
  for (long long j = j0; j < kend; j += kStride) {
    float s[R];
    scores(j, s);
    float v = 0.f;
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (s[r] != neg_inf())
        v += V::kActivation == 0 ? probe_activate<V>(s[r], s_m[r], s_il[r]) : probe_activate<V>(s[r], 0.f, 0.f);
    if (v != 0.f) atomicAdd(cm + j, v);
  }
  if (V::kActivation == 0) cluster_wait<kCl>();  // no CTA leaves while the cluster may still read its cl_m/cl_l
}

// Entry point body: call from the template's __global__ function (block = C::kThreads threads).
template <class V, typename T, int D, class C>
__device__ __forceinline__ void probe_kernel(const ZvProbeArgs& a) {
  probe_write_visible<V>(a);
  if constexpr (C::kTC) probe_tc<V, T, D, C>(a);
  else probe_simt<V, D, C>(a);
}

}  // namespace zv
