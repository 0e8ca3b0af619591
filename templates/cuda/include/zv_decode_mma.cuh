// zipvl device library: GQA decode split pass on tensor cores (mma.sync m16n8k16, bf16/f16), config `mma: 1`.
//
// Same grid, slice, partial outputs and combines as zv_decode.cuh's SIMT pass; only the per-slice math differs.
// The g query heads of the KV head (up to 16 a pass) are the M rows of S = Q K^T (rows >= g are zero and never
// written). Keys stream through a cp.async ring of 16-row sub-tiles (chunk index XOR-swizzled by row & 7 where a
// row has a multiple of 8 chunks, so the 32-bit K loads and the ldmatrix.trans V loads are conflict-free). EVERY
// warp computes the same 16 x 16 score tile for each 16 keys (the QK mma is cheap; the SIMT path was bound by
// these dot products and their shuffle reductions) and therefore holds the same online-softmax state; warp w
// accumulates only the output n8 column tiles w, w + W, ... of O += P V, so no cross-warp merge is needed.
// Scores are base 2: S is scaled by scale * log2(e) in f32 after the mma (Q stays exactly the input values).
#pragma once

#include "zv_args.cuh"
#include "zv_common.cuh"

namespace zv {

template <typename T, int D, class C>
struct DecodeMmaGeom {
  static constexpr int kRV = D / 8;                                    // 16-byte chunks a row (16-bit types)
  static constexpr int kRows = 16 * ((C::kTile + 15) / 16);            // rows a stage (>= 16)
  static constexpr int kStageBytes = 2 * kRows * D * (int)sizeof(T);
  // As many stages as fit the SIMT ring's bytes (the same static buffer; 2..5).
  static constexpr int kFit = (int)(C::kStages * 2 * C::kTile * C::kRowVecs * 16) / kStageBytes;
  static constexpr int kStages = kFit > 5 ? 5 : kFit;
  static_assert(kStages >= 2, "mma decode ring needs two stages");
  static constexpr bool kSwz = kRV % 8 == 0;
  static constexpr int kNT = D / 8;                                    // output n8 tiles
  static constexpr int kNTW = (kNT + C::kWarps - 1) / C::kWarps;       // per warp (the last may be partial)
  __device__ __forceinline__ static int chunk(int r, int c) { return kSwz ? (c ^ (r & 7)) : c; }
};

// One pass over rows [lo, hi) of KV head kv for query heads [h0, h0 + gp), gp <= 16. `ring` is the split
// kernel's shared buffer (at least kStages * kStageBytes bytes).
template <typename T, int D, class C>
__device__ void decode_pass_mma(const ZvDecodeArgs& a, uint4* ring, long long kv, long long h0, int gp, long long lo,
                                long long hi) {
  using G = DecodeMmaGeom<T, D, C>;
  constexpr int kRV = G::kRV, kR = G::kRows, kS = G::kStages, kKS = D / 16;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gid = lane >> 2, t4 = lane & 3;
  const float qscale = (float)a.scale * kLog2e;
  auto slot = [&](int s, int which, int row, int c) -> uint4* {
    return ring + ((s * 2 + which) * kR + row) * kRV + G::chunk(row, c);
  };

  // Q as the A operand (rows gid and gid + 8), straight from global memory; rows >= gp are zero.
  uint32_t qa[kKS][4];
  {
    const uint32_t* q0 = reinterpret_cast<const uint32_t*>(static_cast<const T*>(a.q) + (h0 + gid) * D);
    const uint32_t* q1 = reinterpret_cast<const uint32_t*>(static_cast<const T*>(a.q) + (h0 + gid + 8) * D);
    const bool r0 = gid < gp, r1 = gid + 8 < gp;
#pragma unroll
    for (int kk = 0; kk < kKS; ++kk) {
      qa[kk][0] = r0 ? q0[kk * 8 + t4] : 0u;
      qa[kk][1] = r1 ? q1[kk * 8 + t4] : 0u;
      qa[kk][2] = r0 ? q0[kk * 8 + 4 + t4] : 0u;
      qa[kk][3] = r1 ? q1[kk * 8 + 4 + t4] : 0u;
    }
  }
  float o[G::kNTW][4];
#pragma unroll
  for (int i = 0; i < G::kNTW; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {neg_inf(), neg_inf()}, l[2] = {0.f, 0.f};  // rows gid, gid + 8 (l: this lane's columns only)

  const size_t row0 = (size_t)kv * a.capacity;
  const T* kc = static_cast<const T*>(a.k_cache) + row0 * D;
  const T* vc = static_cast<const T*>(a.v_cache) + row0 * D;
  const long long ntiles = hi > lo ? ceil_div(hi - lo, (long long)kR) : 0;
  auto issue = [&](long long t) {
    if (t < ntiles) stage_kv_rows<D, kR, kRV, C::kThreads>(kc, vc, lo + t * kR, lo, hi, [&](int which, int row, int c) { return slot((int)(t % kS), which, row, c); });
    cp_async_commit();
  };
  auto consume = [&](int s, long long base) {
#pragma unroll 1
    for (int r0 = 0; r0 < kR; r0 += 16) {
      if (base + r0 >= hi) break;  // block-uniform
      float sc[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
        const int krow = r0 + nt * 8 + gid;
#pragma unroll
        for (int kk = 0; kk < kKS; ++kk) {
          uint32_t b[2];
          b[0] = reinterpret_cast<const uint32_t*>(slot(s, 0, krow, 2 * kk))[t4];
          b[1] = reinterpret_cast<const uint32_t*>(slot(s, 0, krow, 2 * kk + 1))[t4];
          mma_16816<T>(sc[nt], qa[kk], b);
        }
      }
      // Online softmax of rows gid (e = 0, 1) and gid + 8 (e = 2, 3); keys past hi are -inf.
      float mx[2] = {m[0], m[1]};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const long long key = base + r0 + nt * 8 + 2 * t4 + (e & 1);
          sc[nt][e] = key < hi ? sc[nt][e] * qscale : neg_inf();
          mx[e >> 1] = fmaxf(mx[e >> 1], sc[nt][e]);
        }
      float corr[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float ms = mx[r] == neg_inf() ? 0.f : mx[r];
        corr[r] = fast_exp2(m[r] - ms);  // 0 while m is -inf (o and l are 0 then)
        m[r] = mx[r];
        l[r] *= corr[r];
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 2 * r; e < 2 * r + 2; ++e) {
            sc[nt][e] = fast_exp2(sc[nt][e] - ms);
            l[r] += sc[nt][e];
          }
      }
      uint32_t pa[4];
      pa[0] = pack2<T>(sc[0][0], sc[0][1]);
      pa[1] = pack2<T>(sc[0][2], sc[0][3]);
      pa[2] = pack2<T>(sc[1][0], sc[1][1]);
      pa[3] = pack2<T>(sc[1][2], sc[1][3]);
#pragma unroll
      for (int i = 0; i < G::kNTW; ++i) {
        const int j = warp + i * C::kWarps;  // n8 tile: columns 8j .. 8j + 7 (chunk j)
        o[i][0] *= corr[0]; o[i][1] *= corr[0]; o[i][2] *= corr[1]; o[i][3] *= corr[1];
        if (j < G::kNT) {
          uint32_t b[2];
          ldmatrix_x2_trans(b, slot(s, 1, r0 + (lane & 15), j));
          mma_16816<T>(o[i], pa, b);
        }
      }
    }
  };
#pragma unroll
  for (int t = 0; t < kS - 1; ++t) issue(t);
  for (long long t = 0; t < ntiles; ++t) {
    cp_async_wait<kS - 2>();
    __syncthreads();
    issue(t + kS - 1);
    consume((int)(t % kS), lo + t * kR);
  }
  cp_async_wait<0>();
  __syncthreads();  // the ring is free for the next pass / the combine

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const long long split = blockIdx.y, splits = a.splits;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = gid + 8 * r;
    if (row >= gp) continue;
    const long long head = h0 + row;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
    for (int i = 0; i < G::kNTW; ++i) {
      const int j = warp + i * C::kWarps;
      if (j >= G::kNT) continue;
      const int col = 8 * j + 2 * t4;
      if (splits == 1) {
        T* out = static_cast<T*>(a.o) + head * D + col;
        out[0] = from_float<T>(o[i][2 * r] * inv);
        out[1] = from_float<T>(o[i][2 * r + 1] * inv);
      } else {
        float* po = a.part_o + (head * splits + split) * D + col;
        po[0] = o[i][2 * r];
        po[1] = o[i][2 * r + 1];
      }
    }
    if (splits > 1 && warp == 0 && t4 == 0) {
      const long long rr = head * splits + split;
      a.part_ml[2 * rr] = m[r];
      a.part_ml[2 * rr + 1] = l[r];
    }
  }
}

}  // namespace zv
