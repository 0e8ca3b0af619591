// zipvl token-sparse flash attention (ZvSparseArgs): one fused pass that
//   * computes O[h, order[i]] for the selected rows i < count (queries, keys and values GATHERED through order[],
//     no compacted copies), causal on the compacted index when Variant::kAttnCausal (order is ascending, so j <= i
//     is exactly order[j] <= order[i]), plus Variant::attn_mask / score_mod on the original positions;
//   * writes ZERO to O[h, order[i]] for the unselected rows i in [count, n);
//   * writes the compacted cache k_cache[kv, i] = k[kv, order[i]], v_cache likewise, for i < count.
// count is device-resident (*count, per set): the host launches for the worst case count = n and row blocks that
// start at or beyond count only zero-fill.
//
// Paths behind one entry (zv_sparse_attn<Variant, Cfg>):
//   * f16/bf16: FlashAttention-2 structure. Q tile, one K tile and one V tile in shared memory, loaded with
//     cp.async (one 16-byte copy per gathered row chunk; gathered key positions are prefetched into a small shared
//     ring); the V load of tile j overlaps QK^T of tile j, the K load of tile j-1 overlaps softmax + PV of tile j.
//     Online softmax in registers (exp2 on the SFU), f32 accumulation. The GEMMs are either
//       - mma.sync m16n8k16 (sm_80+): WARPS warps, each owning MT = BM/(16*WARPS) m16 row tiles, ldmatrix from
//         padded rows; or
//       - wgmma m64nNk16 (sm_90a, Cfg::kWgmma): one warpgroup per 64 query rows, operands read by descriptors
//         from 128-byte-swizzled panels (zv_mma.cuh), P fed from registers. The per-warp accumulator layout is
//         the mma.sync one, so masking, softmax and epilogue are shared.
//   * f32: a plain SIMT path (one warp per query row), correct rather than fast.
//
// Variant: the hook struct of templates/cuda/CONTRACT.md. One optional extra member is honoured:
//   static constexpr bool kAttnMaskTrivial  // attn_mask is implied by the kAttnCausal index mask (or always true):
//                                           // the kernel then never evaluates attn_mask (no position loads).
// Without it (default false) attn_mask is evaluated on every score, which is correct for any mask but costs one
// order[] load per score column. score_mod is always applied; its position loads vanish when it ignores positions.
#pragma once

#include "zv_args.cuh"
#include "zv_common.cuh"
#include "zv_mma.cuh"

// ---------------------------------------------------------------------------------------------------------------
// Configuration. 0 for BM/BN/WARPS/MINB means "default for this dtype and head dim".
// ---------------------------------------------------------------------------------------------------------------
template <class V, class = void> struct ZvAttnMaskTrivial { static constexpr bool value = false; };
template <class V> struct ZvAttnMaskTrivial<V, decltype((void)V::kAttnMaskTrivial)> {
  static constexpr bool value = V::kAttnMaskTrivial;
};

template <class T_, int D_, int BM_ = 0, int BN_ = 0, int WARPS_ = 0, int MINB_ = 0, int ARCH_ = 80, int WGMMA_ = 0>
struct ZvAttnConfig {
  using T = T_;
  static constexpr int D = D_;
  static constexpr bool kMma = zv::DType<T>::kTensorCore;
  // wgmma (sm_90a) for 16-bit types and head dims that tile into 64-column swizzle panels, unless an explicit
  // geometry does not fit it (it needs BM = 16 * warps and BN in {64, 128, 256}): such a config keeps mma.sync.
  // WGMMA_ = -1 forces mma.sync, 1 forces wgmma.
  static constexpr bool kWgmmaFits = (WARPS_ == 0 || (BM_ ? BM_ : 128) == 16 * WARPS_) &&
                                     (BN_ == 0 || BN_ == 64 || BN_ == 128 || BN_ == 256);
  static constexpr bool kWgmma = kMma && D % 64 == 0 && (WGMMA_ == 1 || (WGMMA_ == 0 && ARCH_ >= 90 && kWgmmaFits));
  // mma.sync: two m16 tiles per warp (BM=128 with 4 warps) halves the shared-memory traffic per MMA compared with
  // one; d=256 keeps one (the O accumulator alone is 128 registers per thread).
  // wgmma: two warpgroups of 64 rows share each K/V tile; BN=64 keeps d<=128 within 128 registers, so two CTAs
  // (16 warps) share an SM and one CTA's softmax overlaps the other's MMAs (measured on H100, d=128: 472 TFLOP/s
  // vs 443 for 128x128 with one CTA per SM).
  static constexpr int BM = BM_ ? BM_ : (kMma ? (D <= 128 || kWgmma ? 128 : 64) : 64);
  static constexpr int BN = BN_ ? BN_ : (kMma ? 64 : 32);
  static constexpr int WARPS = WARPS_ ? WARPS_ : (kWgmma ? BM / 16 : 4);
  static constexpr int MINB = MINB_ ? MINB_ : (kMma && D <= (kWgmma ? 128 : 64) ? 2 : 1);
  static constexpr int kThreads = WARPS * 32;
  static constexpr int MT = BM / (16 * WARPS);
  static constexpr int kStride = D + 8;  // mma.sync smem row pitch (elements): +16 B makes 8 consecutive rows hit
                                         // 8 distinct 16-byte bank groups, so ldmatrix is conflict-free.
  static constexpr int kRowBytes = kWgmma ? D * 2 : kStride * 2;  // wgmma: 128-byte-swizzled panels, no padding
  // Dynamic shared memory (Q, K, V tiles). The gathered-position ring (16 * BN bytes) is static shared memory.
  static constexpr int kSmemBytes = kMma ? (BM + 2 * BN) * kRowBytes : 0;

  static_assert(D % 16 == 0 && D >= 16 && D <= 256, "head dim must be a multiple of 16 in [16, 256]");
  static_assert(!kMma || (BM % (16 * WARPS) == 0 && MT >= 1), "BM must be a multiple of 16 * WARPS");
  static_assert(!kMma || (BN % 16 == 0 && (BN * 8) % kThreads == 0), "BN must be a multiple of 16 and of threads/8");
  static_assert(!kMma || (BM * 8) % kThreads == 0, "BM * 8 must be a multiple of the thread count");
  static_assert(!kWgmma || (MT == 1 && WARPS % 4 == 0 && (BN == 64 || BN == 128 || BN == 256)),
                "wgmma: one warpgroup per 64 rows (BM = 16 * warps, warps % 4 == 0), BN in {64, 128, 256}");
};

// Byte offset of 16-byte chunk c of row r in a ROWS-row shared tile: padded rows (mma.sync) or swizzled panels.
template <class Cfg, int ROWS>
__device__ __forceinline__ int zv_attn_tile_off(int r, int c) {
  if constexpr (Cfg::kWgmma) return ZvSw128<ROWS>::off(r, c);
  else return r * Cfg::kRowBytes + c * 16;
}

// Hide a value from loop-invariant code motion (cheap recomputation beats a register pinned across the loop).
__device__ __forceinline__ int zv_attn_opaque(int x) {
  asm volatile("" : "+r"(x));
  return x;
}

// ---------------------------------------------------------------------------------------------------------------
// Per-CTA task: which head, which selection set, which row block. Grid = (ceil(n / BM), Hq). Block ids are
// remapped so that row blocks run heaviest first (causal work grows with the row index) across a chunk of heads
// whose K/V fit in about half of L2 (all heads at small n: a short, light tail; one head at a time at large n:
// its K/V stay hot in L2 while all its row blocks run). Zero-fill blocks (rows at or past count) have the highest
// row indices, so they are scheduled first; they are cheap and just write zeros.
// ---------------------------------------------------------------------------------------------------------------
template <class T>
struct ZvAttnTask {
  int n, h, kv, g, count, row0;
  const int* order;  // this set's order[n]
  const T *q, *k, *v;  // head bases: q[h], k[kv], v[kv]
  T *o, *kc, *vc;      // o[h], k_cache[kv], v_cache[kv]
};

// Remapped (head, row block) of this CTA. `salt` (0) is passed through an opaque move so that a second call is
// recomputed rather than CSE'd with the first, which would pin its results in registers across the key loop.
template <class T>
__device__ __forceinline__ int2 zv_attn_block(const ZvSparseArgs& a, int salt) {
  constexpr unsigned kL2Budget = 24u << 20;  // bytes of K+V per chunk of heads
  const int nb = gridDim.x, H = gridDim.y;
  const unsigned head_bytes = (unsigned)min(a.n * a.d * (long long)sizeof(T) * 2, (long long)kL2Budget);
  const int hc = min(H, (int)(kL2Budget / max(head_bytes, 1u)));
  const int bid = blockIdx.y * nb + blockIdx.x + zv_attn_opaque(salt), chunk = bid / (nb * hc), h0 = chunk * hc;
  const int hcount = min(hc, H - h0), rem = bid - chunk * nb * hc;
  return make_int2(h0 + rem % hcount, nb - 1 - rem / hcount);
}

template <class T, int BM>
__device__ __forceinline__ ZvAttnTask<T> zv_attn_task(const ZvSparseArgs& a) {
  ZvAttnTask<T> t;
  const int2 blk = zv_attn_block<T>(a, 0);
  t.n = (int)a.n;
  t.h = blk.x;
  t.row0 = blk.y * BM;
  t.g = (int)(a.Hq / a.Hkv);
  t.kv = t.h / t.g;
  const int s = a.per_kv_head ? t.kv : 0;
  t.order = a.order + (long long)s * t.n;
  t.count = min(max(__ldg(a.count + s), 0), t.n);
  const long long hd = (long long)t.n * a.d;
  t.q = static_cast<const T*>(a.q) + t.h * hd;
  t.k = static_cast<const T*>(a.k) + t.kv * hd;
  t.v = static_cast<const T*>(a.v) + t.kv * hd;
  t.o = static_cast<T*>(a.o) + t.h * hd;
  t.kc = static_cast<T*>(a.k_cache) + t.kv * hd;
  t.vc = static_cast<T*>(a.v_cache) + t.kv * hd;
  return t;
}

// O rows order[i] := 0 for i in [i0, i1), 16-byte stores, all threads of the CTA.
template <class T, int D, int THREADS>
__device__ __forceinline__ void zv_attn_zero_rows(const ZvAttnTask<T>& t, int i0, int i1) {
  constexpr int CH = D * (int)sizeof(T) / 16;  // 16-byte chunks per row
  for (int idx = threadIdx.x; idx < (i1 - i0) * CH; idx += THREADS) {
    const int i = i0 + idx / CH, c = idx % CH;
    zv::st16(reinterpret_cast<uint4*>(t.o + (long long)__ldg(t.order + i) * D) + c, make_uint4(0, 0, 0, 0));
  }
}

// Compacted cache rows i in [i0, i1) (at most ROWS): k_cache[kv, i] = k[kv, order[i]] (and v). Done by the CTA of
// the first query head of each KV group, so each cache row is written exactly once per launch. Loads are issued in
// batches of kBatch chunks before their stores, so a thread waits for one round trip per batch, not per chunk.
template <class T, int D, int THREADS, int ROWS>
__device__ __forceinline__ void zv_attn_copy_cache(const ZvAttnTask<T>& t, int i0, int i1) {
  if (t.h % t.g != 0) return;
  constexpr int CH = D * (int)sizeof(T) / 16;
  constexpr int kPer = (ROWS * CH + THREADS - 1) / THREADS, kBatch = 4;
  const int total = (i1 - i0) * CH;
#pragma unroll
  for (int b0 = 0; b0 < kPer; b0 += kBatch) {
    uint4 kx[kBatch], vx[kBatch];
    long long dst[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int idx = threadIdx.x + (b0 + u) * THREADS;
      dst[u] = -1;
      if (b0 + u < kPer && idx < total) {
        const int i = i0 + idx / CH, c = idx % CH;
        const long long src = (long long)__ldg(t.order + i) * CH + c;  // in 16-byte units
        dst[u] = (long long)i * CH + c;
        kx[u] = zv::ld16(reinterpret_cast<const uint4*>(t.k) + src);
        vx[u] = zv::ld16(reinterpret_cast<const uint4*>(t.v) + src);
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      if (dst[u] < 0) continue;
      zv::st16(reinterpret_cast<uint4*>(t.kc) + dst[u], kx[u]);
      zv::st16(reinterpret_cast<uint4*>(t.vc) + dst[u], vx[u]);
    }
  }
}

// Original position of compacted index i, for score_mod / attn_mask only (plain load: removable when unused).
__device__ __forceinline__ long long zv_attn_pos(const int* order, int i) { return order[i]; }

// 4-byte cp.async (L1-allocating .ca; .cg only takes 16 bytes); pred=false zero-fills.
__device__ __forceinline__ void zv_attn_cp_async_4(void* smem, const void* gmem, bool pred) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(zv::smem_u32(smem)), "l"(gmem), "r"(pred ? 4 : 0));
}

template <bool B> struct ZvAttnTag { static constexpr bool value = B; };

// ---------------------------------------------------------------------------------------------------------------
// Tensor-core path (f16 / bf16). Per warp: MT m16 tiles of query rows (rows wrow..wrow+16*MT). The GEMMs are
// mma.sync (ldmatrix from padded rows) or, with Cfg::kWgmma, wgmma per warpgroup of 64 rows (descriptors over
// swizzled panels); the loaders, the online softmax and the epilogue are shared (same accumulator layout).
// ---------------------------------------------------------------------------------------------------------------
template <class Variant, class Cfg>
__device__ __forceinline__ void zv_sparse_attn_mma(const ZvSparseArgs& args, unsigned char* smem_raw) {
  using T = typename Cfg::T;
  constexpr int D = Cfg::D, BM = Cfg::BM, BN = Cfg::BN, MT = Cfg::MT, THREADS = Cfg::kThreads;
  constexpr int NT = BN / 8;    // n8 tiles of S per m16 tile
  constexpr int KT = D / 16;    // k16 steps of QK^T
  constexpr int DT = D / 8;     // n8 tiles of O
  constexpr int CH = D / 8;     // 16-byte chunks per row
  // Tile loader geometry: 8 consecutive threads copy one row's chunks (128 contiguous bytes per request).
  constexpr int RP = THREADS / 8;          // rows per pass
  constexpr int CPR = (CH + 7) / 8;        // chunks per row per thread
  constexpr bool kMaskTrivial = ZvAttnMaskTrivial<Variant>::value;
  constexpr bool kWgmma = Cfg::kWgmma;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  static_assert(!kWgmma, "the wgmma path needs sm_90a (-gencode=arch=compute_90a,code=sm_90a); use ARCH 80");
#elif defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  // A plain compute_90 pass (nvcc -arch=sm_90a also emits compute_90 PTX): wgmma is unavailable there; the sm_90a
  // SASS of the same build is what runs on Hopper, so this body is never executed.
  if constexpr (kWgmma) __trap();
#endif

  const ZvAttnTask<T> t = zv_attn_task<T, BM>(args);
  if (t.row0 >= t.count) {  // every row of this block is unselected: zero-fill and leave
    zv_attn_zero_rows<T, D, THREADS>(t, t.row0, min(t.n, t.row0 + BM));
    return;
  }
  const int n = t.n, count = t.count, row0 = t.row0;
  const long long n_ll = n;
  const double* prm = args.params;
  const float scale = (float)args.scale;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  unsigned char* sQ = smem_raw;  // 1024-byte aligned for wgmma (see zv_sparse_attn)
  unsigned char* sK = sQ + BM * Cfg::kRowBytes;
  unsigned char* sV = sK + BN * Cfg::kRowBytes;
  // Gathered key positions, a ring of 4 tiles: positions of tile jt-2 are fetched (cp.async) together with K tile
  // jt-1, so the K/V loaders read them from shared memory instead of waiting on a dependent global load, and
  // score_mod / attn_mask read key positions from here too. Slots past count hold 0 (zero-filled).
  __shared__ __align__(16) int sIdx[4 * BN];
  auto idx_slot = [&](int jt) { return sIdx + (jt & 3) * BN; };

  auto load_idx = [&](int jt) {
    const int j = jt * BN + tid;
    if (tid < BN) zv_attn_cp_async_4(idx_slot(jt) + tid, t.order + (j < count ? j : 0), j < count);
  };
  // Issue one K or V tile: rows jt*BN + r, r = tid/8 + rr*RP, chunks tid%8 + cc*8. Keys at or beyond count are
  // zero-filled, so stale shared memory can never feed NaN into P*V.
  auto load_kv = [&](unsigned char* dst, const T* src, int jt) {
    const int* pos = idx_slot(jt);
#pragma unroll
    for (int rr = 0; rr < BN / RP; ++rr) {
      const int r = tid / 8 + rr * RP;
      const bool ok = jt * BN + r < count;
      const T* row = src + (long long)pos[r] * D;
#pragma unroll
      for (int cc = 0; cc < CPR; ++cc) {
        const int c = tid % 8 + cc * 8;
        if (CH % 8 == 0 || c < CH) zv::cp_async_16(dst + zv_attn_tile_off<Cfg, BN>(r, c), row + c * 8, ok);
      }
    }
  };
  // cp.async data -> visible to every warp (and, for wgmma, to the async proxy that reads operands).
  auto wait_tiles = [&]() {
    zv::cp_async_wait<0>();
    if constexpr (kWgmma) zv_fence_proxy_async();
    __syncthreads();
  };

  // Key tiles: causal needs keys < min(count, row0 + BM); otherwise all keys < count.
  const int key_end = Variant::kAttnCausal ? min(count, row0 + BM) : count;
  const int jmax = (key_end - 1) / BN;

  // Prologue: positions of tile jmax first (the K loader needs them), then Q; K tile jmax and the positions of
  // tile jmax-1 follow as soon as the first positions land; the cache copy (plain loads/stores) overlaps it all.
  load_idx(jmax);
  zv::cp_async_commit();
#pragma unroll
  for (int rr = 0; rr < BM / RP; ++rr) {
    const int r = tid / 8 + rr * RP, i = row0 + r;
    const T* row = t.q + (long long)(i < count ? __ldg(t.order + i) : 0) * D;
#pragma unroll
    for (int cc = 0; cc < CPR; ++cc) {
      const int c = tid % 8 + cc * 8;
      if (CH % 8 == 0 || c < CH) zv::cp_async_16(sQ + zv_attn_tile_off<Cfg, BM>(r, c), row + c * 8, i < count);
    }
  }
  zv::cp_async_commit();
  zv::cp_async_wait<1>();
  __syncthreads();
  load_kv(sK, t.k, jmax);
  if (jmax > 0) load_idx(jmax - 1);
  zv::cp_async_commit();
  zv_attn_copy_cache<T, D, THREADS, BM>(t, row0, min(count, row0 + BM));

  const int wrow = warp * MT * 16;
  // mma.sync ldmatrix lane addresses (padded layout). A/Q and V^T share the lane->row map; K differs.
  const int a_off = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_col = ((lane >> 3) & 1) * 8;
  const unsigned char* q_frag = sQ + ((wrow + a_off) * Cfg::kStride + a_col) * 2;
  const unsigned char* k_frag = sK + (b_row * Cfg::kStride + b_col) * 2;
  const unsigned char* v_frag = sV + (a_off * Cfg::kStride + a_col) * 2;
  // wgmma: tile descriptors; this warp's warpgroup owns Q rows wrow & ~63 .. +64.
  const uint64_t q_desc = zv_wgmma_tile_desc_kmajor(zv::smem_u32(sQ) + (wrow & ~63) * 128);
  const uint64_t k_desc = zv_wgmma_tile_desc_kmajor(zv::smem_u32(sK));
  const uint64_t v_desc = zv_wgmma_tile_desc_mnmajor<BN>(zv::smem_u32(sV));
  (void)q_frag; (void)k_frag; (void)v_frag; (void)q_desc; (void)k_desc; (void)v_desc;  // one set per path

  // Query positions of this lane's 2*MT rows (only read by score_mod / attn_mask; dead code otherwise, which is
  // why zv_attn_pos is a plain load: __ldg is asm volatile and would survive dead-code elimination).
  long long qpos[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) qpos[mt][hh] = zv_attn_pos(t.order, min(row0 + wrow + mt * 16 + hh * 8 + g, count - 1));

  float acc[MT][DT][4];
  float m_run[MT][2], l_run[MT][2];  // running max (log2 domain) and this lane's partial row sum
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) acc[mt][dt][0] = acc[mt][dt][1] = acc[mt][dt][2] = acc[mt][dt][3] = 0.f;
    m_run[mt][0] = m_run[mt][1] = zv::neg_inf();
    l_run[mt][0] = l_run[mt][1] = 0.f;
  }

  // One key tile. kIndexMask: the tile crosses the causal diagonal (or the count boundary when not causal).
  auto step = [&](int jt, auto index_mask_tag) {
    constexpr bool kIndexMask = decltype(index_mask_tag)::value;
    wait_tiles();  // K tile jt, positions jt-1 (and Q) landed; every warp is done with V tile jt+1
    load_kv(sV, t.v, jt);
    zv::cp_async_commit();

    // S = Q K^T
    float s[MT][NT][4];
    if constexpr (kWgmma) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
      const uint64_t qd = zv_wgmma_opaque(q_desc), kd = zv_wgmma_opaque(k_desc);
      zv_wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < KT; ++kk)
        ZvWgmma<BN>::template ss<T, 0>(s[0], zv_wgmma_desc_kmajor<BM>(qd, 0, kk), zv_wgmma_desc_kmajor<BN>(kd, 0, kk), kk);
      zv_wgmma_commit();
      zv_wgmma_wait<0>();
      zv_wgmma_fence_regs(s[0]);
#endif
    } else {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) {
        uint32_t qa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) zv::ldmatrix_x4(qa[mt], q_frag + (mt * 16 * Cfg::kStride + kk * 16) * 2);
#pragma unroll
        for (int nb = 0; nb < NT / 2; ++nb) {
          uint32_t kb[4];
          zv::ldmatrix_x4(kb, k_frag + (nb * 16 * Cfg::kStride + kk * 16) * 2);
          const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            zv::mma_16816<T>(s[mt][2 * nb], qa[mt], b0);
            zv::mma_16816<T>(s[mt][2 * nb + 1], qa[mt], b1);
          }
        }
      }
    }

    wait_tiles();  // V tile landed; every warp is done reading this K tile
    if (jt > 0) {
      load_kv(sK, t.k, jt - 1);
      if (jt > 1) load_idx(jt - 2);  // slot (jt-2)&3 was last read while processing tile jt+2
      zv::cp_async_commit();
    }
    const int* kpos_tile = idx_slot(jt);

    // Scores -> log2 domain with score_mod and masks; online softmax per row half (g, g+8).
    float alphas[MT][2];  // rescale factors of O, applied once S is dead (lower register peak)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        // Index mask: key column jt*BN + c is visible iff c <= lim (causal: key <= query; else key < count).
        const int lim = (Variant::kAttnCausal ? row0 + wrow + mt * 16 + hh * 8 + g : count - 1) - jt * BN - 2 * tq;
        float mx = m_run[mt][hh];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const long long kpos = kpos_tile[nt * 8 + 2 * tq + e];
            bool vis = !kIndexMask || nt * 8 + e <= lim;
            if (!kMaskTrivial) vis = vis && Variant::attn_mask(qpos[mt][hh], kpos, n_ll, prm);
            float& x = s[mt][nt][hh * 2 + e];
            x = vis ? Variant::score_mod(x * scale, qpos[mt][hh], kpos, n_ll, prm) * zv::kLog2e : zv::neg_inf();
            mx = fmaxf(mx, x);
          }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));  // the 4 lanes of a quad share a row
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_use = mx == zv::neg_inf() ? 0.f : mx;  // fully masked so far: keep exp2 finite (-> 0)
        const float alpha = zv::fast_exp2(m_run[mt][hh] - m_use);
        m_run[mt][hh] = mx;
        float rs = 0.f;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[mt][nt][hh * 2 + e];
            x = zv::fast_exp2(x - m_use);
            rs += x;
          }
        }
        l_run[mt][hh] = l_run[mt][hh] * alpha + rs;
        alphas[mt][hh] = alpha;
      }
    }

    // O += P V: the S accumulator of two n8 tiles is exactly the A fragment of one k16 step.
    auto p_frag = [&](uint32_t (&a)[4], int kk, int mt) {
      a[0] = zv::pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
      a[1] = zv::pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
      a[2] = zv::pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
      a[3] = zv::pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
    };
    auto rescale_o = [&]() {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[mt][dt][e] *= alphas[mt][e >> 1];
    };
    if constexpr (kWgmma) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
      uint32_t pa[BN / 16][4];  // all k16 steps are in flight at once: their A registers must stay live
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) p_frag(pa[kk], kk, 0);
      rescale_o();
      const uint64_t vd = zv_wgmma_opaque(v_desc);
      zv_wgmma_fence();  // acc was rescaled by ordinary instructions
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) ZvWgmma<D>::template rs<T, 1>(acc[0], pa[kk], zv_wgmma_desc_mnmajor<BN>(vd, kk));
      zv_wgmma_commit();
      zv_wgmma_wait<0>();
      zv_wgmma_fence_regs(acc[0]);
#endif
    } else {
      rescale_o();
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) p_frag(pa[mt], kk, mt);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t vb[4];
          zv::ldmatrix_x4_trans(vb, v_frag + (kk * 16 * Cfg::kStride + dp * 16) * 2);
          const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            zv::mma_16816<T>(acc[mt][2 * dp], pa[mt], b0);
            zv::mma_16816<T>(acc[mt][2 * dp + 1], pa[mt], b1);
          }
        }
      }
    }
  };

  // Tiles that cross the diagonal / count boundary are the highest ones: run them first, then the bulk unmasked.
  const int first_unmasked = Variant::kAttnCausal ? (row0 + 1) / BN - 1 : count / BN - 1;
  int jt = jmax;
  for (; jt >= 0 && jt > first_unmasked; --jt) step(jt, ZvAttnTag<true>());
  for (; jt >= 0; --jt) step(jt, ZvAttnTag<false>());

  // Epilogue: normalise, stage this warp's rows in its own (now unused) Q rows, then 16-byte gathered stores.
  // Rows at or beyond count (the block straddling the boundary) are the unselected ones: written as zero.
  __syncwarp();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float l = l_run[mt][hh];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;  // a row with no visible key outputs 0
      const int r = wrow + mt * 16 + hh * 8 + g;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt)
        *reinterpret_cast<uint32_t*>(sQ + zv_attn_tile_off<Cfg, BM>(r, dt) + 4 * tq) =
            zv::pack2<T>(acc[mt][dt][hh * 2] * inv, acc[mt][dt][hh * 2 + 1] * inv);
    }
  }
  __syncwarp();
  // Output head pointer re-derived here (cheap) rather than kept live across the key loop.
  T* const o_head = static_cast<T*>(args.o) + zv_attn_block<T>(args, 0).x * (long long)n * D;
#pragma unroll
  for (int idx = lane; idx < MT * 16 * CH; idx += 32) {
    const int r = idx / CH, c = idx % CH, i = row0 + wrow + r;
    if (i >= n) continue;
    const uint4 val = i < count ? *reinterpret_cast<const uint4*>(sQ + zv_attn_tile_off<Cfg, BM>(wrow + r, c))
                                : make_uint4(0, 0, 0, 0);
    zv::st16(reinterpret_cast<uint4*>(o_head + (long long)__ldg(t.order + i) * D) + c, val);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// SIMT path (f32 inputs): one warp per query row; each lane scores one key of a 32-key chunk, then the chunk's
// probabilities are broadcast lane by lane while every lane accumulates its own D/32 output columns.
// ---------------------------------------------------------------------------------------------------------------
template <class Variant, class Cfg>
__device__ __forceinline__ void zv_sparse_attn_simt(const ZvSparseArgs& args) {
  using T = typename Cfg::T;
  constexpr int D = Cfg::D, BM = Cfg::BM, WARPS = Cfg::WARPS, THREADS = Cfg::kThreads;
  constexpr int DL = (D + 31) / 32;  // output columns per lane
  __shared__ __align__(16) float sq[WARPS][D];

  const ZvAttnTask<T> t = zv_attn_task<T, BM>(args);
  const int n = t.n, count = t.count, row0 = t.row0;
  const int row_end = min(n, row0 + BM), sel_end = min(count, row_end);
  if (row0 < count) zv_attn_copy_cache<T, D, THREADS, BM>(t, row0, sel_end);
  zv_attn_zero_rows<T, D, THREADS>(t, max(row0, count), row_end);
  const float scale = (float)args.scale;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  for (int i = row0 + warp; i < sel_end; i += WARPS) {
    const long long qpos = __ldg(t.order + i);
    for (int c = lane; c < D; c += 32) sq[warp][c] = zv::to_float(t.q[qpos * D + c]);
    __syncwarp();
    const int key_end = Variant::kAttnCausal ? i + 1 : count;
    float m = zv::neg_inf(), l = 0.f, o[DL];
#pragma unroll
    for (int c = 0; c < DL; ++c) o[c] = 0.f;
    for (int j0 = 0; j0 < key_end; j0 += 32) {
      const int j = j0 + lane;
      float x = zv::neg_inf();
      long long kpos = 0;
      if (j < key_end) {
        kpos = __ldg(t.order + j);
        if (ZvAttnMaskTrivial<Variant>::value || Variant::attn_mask(qpos, kpos, n, args.params)) {
          const float4* kr = reinterpret_cast<const float4*>(t.k + kpos * D);
          float dot = 0.f;
#pragma unroll 4
          for (int c = 0; c < D / 4; ++c) {
            const float4 kv4 = kr[c];
            const float4 q4 = *reinterpret_cast<const float4*>(&sq[warp][4 * c]);
            dot += q4.x * kv4.x + q4.y * kv4.y + q4.z * kv4.z + q4.w * kv4.w;
          }
          x = Variant::score_mod(dot * scale, qpos, kpos, n, args.params);
        }
      }
      const float mx = fmaxf(m, zv::warp_max(x));
      const float m_use = mx == zv::neg_inf() ? 0.f : mx;
      const float alpha = expf(m - m_use), p = expf(x - m_use);
      m = mx;
      l = l * alpha + p;  // per-lane partial sum; reduced once at the end
#pragma unroll
      for (int c = 0; c < DL; ++c) o[c] *= alpha;
      const int kn = min(32, key_end - j0);
      for (int kk = 0; kk < kn; ++kk) {
        const float pk = __shfl_sync(0xffffffffu, p, kk);
        const long long vpos = __shfl_sync(0xffffffffu, kpos, kk);
        if (pk == 0.f) continue;  // warp-uniform: masked key
#pragma unroll
        for (int c = 0; c < DL; ++c)
          if (lane + 32 * c < D) o[c] += pk * t.v[vpos * D + lane + 32 * c];
      }
    }
    const float lt = zv::warp_sum(l);
    const float inv = lt > 0.f ? 1.f / lt : 0.f;
#pragma unroll
    for (int c = 0; c < DL; ++c)
      if (lane + 32 * c < D) t.o[qpos * D + lane + 32 * c] = o[c] * inv;
    __syncwarp();  // sq[warp] is rewritten by the next row
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Entry. Launch: grid (ceil(n / Cfg::BM), Hq), block Cfg::kThreads, dynamic smem Cfg::kSmemBytes (needs the
// max-dynamic-smem attribute when > 48 KB), `smem` = extern __shared__ __align__(1024) array. args.d must equal
// Cfg::D (otherwise the kernel does nothing).
// ---------------------------------------------------------------------------------------------------------------
template <class Variant, class Cfg>
__device__ __forceinline__ void zv_sparse_attn(const ZvSparseArgs& args, unsigned char* smem) {
  if (args.d != Cfg::D || args.Hkv <= 0 || args.Hq % args.Hkv != 0) return;
  // The wgmma descriptors assume 1024-byte-aligned swizzle panels: declare the extern smem __align__(1024).
  if (Cfg::kWgmma && zv::smem_u32(smem) % 1024 != 0) __trap();
  if constexpr (Cfg::kMma) zv_sparse_attn_mma<Variant, Cfg>(args, smem);
  else zv_sparse_attn_simt<Variant, Cfg>(args);
}
