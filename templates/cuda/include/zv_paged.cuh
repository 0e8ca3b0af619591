// zipvl device library: paged KV cache kernels for serving (src/serve/pool.ts describes the layout).
//
// Page memory is two arrays of rows (K and V), a row = D elements of T. Token j of a (sequence, group) cache lives
// in row (page_ids[page_indptr[e] + j / P] * heads_per_page + slot) * P + j % P, with e = b * groups + group,
// group = kv when every KV head has its own pages (groups = Hkv, slot 0) and 0 when a page holds all heads
// (groups = 1, slot = kv). Lengths are ragged per sequence (and per head in the per-head layout).
//
// zv_paged_decode_split: grid (Hkv, splits, batch); with counters the last CTA of each (sequence, KV head) also
// merges the splits (one launch a layer), else zv_paged_decode_combine does. One CTA takes one sequence, one KV head and one contiguous
// slice of that cache [s * ceil(len / splits), ...), and serves all g = Hq / Hkv query heads of the KV head, so each
// K/V byte is read once per group. Same inner loop as zv_decode.cuh (lane groups with 16-byte loads, independent
// online softmax per lane group and warp, register double buffer), with the row address taken from the page
// table: a CTA first stages its slice's first 256 page ids in shared memory (one round trip instead of one per batch
// of keys; a longer slice reads the rest from the table).
// With PDL the split reads the tables, its page ids and its first batch of keys before it waits for the previous
// kernel; only the last `fresh` keys of a cache (the step's new rows, written by that kernel) wait. It lets the next
// kernel launch once its keys are read. zv_paged_decode_combine (grid (Hq, batch)) merges the splits. Scores in base 2.
// zv_paged_append: grid (ceil(t / 4), Hkv), 4 warps: copies source rows [Hkv, t, D] to their page rows (-1: skip),
// so prefill's compacted cache and each decode step's new K/V reach the pool without a host round trip.
#pragma once

#include "zv_common.cuh"
#include "zv_decode.cuh"

struct ZvPagedDecodeArgs {
  const void* q;           // query row (b, h) at (b * q_stride_b + h * q_stride_h) * D: [batch, Hq, D] or [Hq, batch, D]
  const void* k_pages;     // [rows, D] T
  const void* v_pages;     // [rows, D] T
  void* o;                 // output row (b, h) at (b * o_stride_b + h * o_stride_h) * D
  float* part_o;           // [batch, Hq, splits, D] f32 workspace
  float* part_ml;          // [batch, Hq, splits, 2] f32 workspace (base-2 max, sum)
  const int* page_indptr;  // [batch * groups + 1]
  const int* page_ids;     // [page_indptr[batch * groups]]
  const int* lengths;      // [batch * groups] tokens per cache
  long long batch, Hq, Hkv, d, page_tokens, heads_per_page, groups, splits;
  long long q_stride_b, q_stride_h, o_stride_b, o_stride_h;  // in rows
  double scale;
  unsigned* counters;      // [batch * Hkv] arrival counts (zero between launches), or null: a separate combine launch
  long long fresh;         // the last `fresh` tokens of each cache may be written by the previous kernel (the step's
                           // new K/V rows): read only after the PDL wait; every earlier token may be read before it
};

struct ZvPagedAppendArgs {
  const void* k;           // [Hkv, t, D] T (rows of head kv start at kv * src_stride)
  const void* v;
  void* k_pages;           // [rows, D] T
  void* v_pages;
  const int* rows;         // [Hkv, t] destination row, -1 = skip
  long long Hkv, t, d, src_stride;
};

namespace zv {

// The first page ids of a CTA's slice, staged in shared memory (pages past kPagedPageBuf are read from the table).
template <int kPageBuf> struct PagedSlice {
  int ids[kPageBuf];  // page ids p0 .. p0 + n - 1 of the CTA's slice
  int p0, n;
};
constexpr int kPagedPageBuf = 256;

// Heads [h0, h0 + gc) of one (sequence, KV head) over cache tokens [lo, hi).
// Keys [lo, cut) may be read before the PDL wait (rows no earlier kernel of this step writes; the first call of a CTA
// issues its first batch of them, then waits); keys [cut, hi) only after it, with coherent loads. Page ids come from
// the CTA's staged table (PagedSlice) where it holds them.
template <typename T, int D, class C, int kG>
__device__ void paged_heads(const ZvPagedDecodeArgs& a, DecodeShared<C, D>& sh, long long b, long long kv,
                            long long h0, int gc, long long lo, long long cut, long long hi, const int* pages,
                            const PagedSlice<kPagedPageBuf>& ps, long long slot, bool first) {
  constexpr int kL = C::kL, kVPL = C::kVPL, kVec = C::kVec, kW = C::kWarps;
  constexpr int kU = kVPL * kG >= 8 ? 1 : (kVPL * kG >= 4 ? 2 : 4);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, sub = lane % kL, grp = lane / kL;
  const long long stream = warp * C::kGroups + grp, nstreams = kW * C::kGroups;
  const float qscale = (float)a.scale * kLog2e;
  const long long P = a.page_tokens, hpp = a.heads_per_page;
  const T* qb = static_cast<const T*>(a.q) + b * a.q_stride_b * D;

  const T* kp = static_cast<const T*>(a.k_pages);
  const T* vp = static_cast<const T*>(a.v_pages);
  struct Batch { uint4 kr[kU][kVPL], vr[kU][kVPL]; bool ok[kU]; };
  const long long step = (long long)kU * nstreams;
  // Row of key j, in 32 bits: checkGeometry (src/serve/pool.ts) keeps a pool's rows below 2^31.
  const int Pi = static_cast<int>(P), hppi = static_cast<int>(hpp), sloti = static_cast<int>(slot);
  auto row_of = [&](long long j) -> long long {
    const int jj = static_cast<int>(j), pj = jj / Pi, i = pj - ps.p0;
    const int page = i < ps.n ? ps.ids[i] : __ldg(pages + pj);
    return static_cast<long long>((page * hppi + sloti) * Pi + (jj - pj * Pi));
  };
  // coherent: the row was written by the previous kernel, which this one overlapped (plain loads, not the
  // read-only path).
  auto load_row = [&](Batch& f, int u, long long j, bool coherent = false) {
    const long long row = row_of(j);
#pragma unroll
    for (int v = 0; v < kVPL; ++v) {
      const int vec = sub + v * kL;
      const bool ld = vec < C::kRowVecs;
      const T* kq = kp + row * D + vec * kVec;
      const T* vq = vp + row * D + vec * kVec;
      f.kr[u][v] = !ld ? make_uint4(0, 0, 0, 0) : coherent ? ld16(kq) : ld16_stream(kq);
      f.vr[u][v] = !ld ? make_uint4(0, 0, 0, 0) : coherent ? ld16(vq) : ld16_stream(vq);
    }
  };
  // Keys b0 + u * nstreams + stream (u < kU) below `until` (the rest of the batch's keys below hi stay zero: patch).
  auto load_batch = [&](long long b0, Batch& f, long long until) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const long long j = b0 + u * nstreams + stream;
      f.ok[u] = j < hi;
      if (j < until) load_row(f, u, j);
      else
#pragma unroll
        for (int v = 0; v < kVPL; ++v) f.kr[u][v] = f.vr[u][v] = make_uint4(0, 0, 0, 0);
    }
  };
  Batch fa, fb;
  // The first batch's keys that no kernel of this step writes go out before the wait (the previous kernel drains).
  if (first) {
    if (lo < hi) load_batch(lo, fa, cut);
    pdl_wait();
    if (lo < hi)
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const long long j = lo + u * nstreams + stream;
        if (j >= cut && j < hi) load_row(fa, u, j, true);
      }
  } else if (lo < hi) load_batch(lo, fa, hi);

  float q[kG][kVPL][kVec], o[kG][kVPL][kVec], m[kG], l[kG];
#pragma unroll
  for (int h = 0; h < kG; ++h) {
    m[h] = neg_inf(); l[h] = 0.f;
#pragma unroll
    for (int v = 0; v < kVPL; ++v) {
      const int vec = sub + v * kL;
      float f[kVec];
      if (h < gc && vec < C::kRowVecs) load16_f32(qb + (h0 + h) * a.q_stride_h * D + vec * kVec, f);
      else
#pragma unroll
        for (int e = 0; e < kVec; ++e) f[e] = 0.f;
#pragma unroll
      for (int e = 0; e < kVec; ++e) { q[h][v][e] = f[e] * qscale; o[h][v][e] = 0.f; }
    }
  }

  auto consume = [&](const Batch& f) {
    float s[kU][kG];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
#pragma unroll
      for (int h = 0; h < kG; ++h) s[u][h] = 0.f;
#pragma unroll
      for (int v = 0; v < kVPL; ++v) {
        float kf[kVec];
        cvt16(f.kr[u][v], kf, T());
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
        if (!f.ok[u]) s[u][h] = neg_inf();
      }
    }
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
        cvt16(f.vr[u][v], vf, T());
#pragma unroll
        for (int h = 0; h < kG; ++h)
          if (h < gc && m[h] != neg_inf())
#pragma unroll
            for (int e = 0; e < kVec; ++e) o[h][v][e] = fmaf(s[u][h], vf[e], o[h][v][e]);
      }
  };
  if (lo < hi) {  // CTA-uniform trip counts (consume shuffles)
    for (long long b0 = lo;; b0 += 2 * step) {
      load_batch(b0 + step, fb, hi);
      consume(fa);
      if (b0 + step >= hi) break;
      load_batch(b0 + 2 * step, fa, hi);
      consume(fb);
      if (b0 + 2 * step >= hi) break;
    }
  }

  // Merge the lane groups of the warp, then the warps through shared memory.
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
    const long long row = (b * a.Hq + h0 + h) * splits + split;
    a.part_o[row * D + e] = acc;
    if (e == 0) { a.part_ml[2 * row] = mx; a.part_ml[2 * row + 1] = sum; }
  }
  __syncthreads();
}

// Query head h of sequence b merged from its splits (zv_decode.cuh's combine_row over this launch's partials).
template <typename T, int D, bool CG>
__device__ void paged_combine_one(const ZvPagedDecodeArgs& a, long long b, long long h) {
  const long long r0 = b * a.Hq + h, splits = a.splits;
  combine_row<T, D, CG>(a.part_ml + r0 * splits * 2, a.part_o + r0 * splits * D, splits, static_cast<T*>(a.o) + (b * a.o_stride_b + h * a.o_stride_h) * D);
}

// kG1: 1 or 2 when the launch's query heads per KV head are known to be that (the entry then holds only that pass and
// needs far fewer registers: more CTAs an SM); 0: any group size.
template <typename T, int D, class C, int kG1 = 0>
__device__ void paged_decode_split_kernel(const ZvPagedDecodeArgs& a) {
  __shared__ __align__(16) DecodeShared<C, D> sh;
  const long long kv = blockIdx.x, b = blockIdx.z, g = a.Hq / a.Hkv;
  const long long group = a.groups == 1 ? 0 : kv, slot = a.heads_per_page == 1 ? 0 : kv;
  const long long e = b * a.groups + group;
  // Before the PDL wait: the tables (uploaded before the step's first kernel) and the slice's page ids, staged once.
  const long long len = max(0ll, (long long)a.lengths[e]);
  const long long chunk = ceil_div(len, a.splits);
  const long long lo = min(len, (long long)blockIdx.y * chunk), hi = min(len, lo + chunk);
  const long long cut = max(lo, min(hi, len - a.fresh));
  const int* pages = a.page_ids + a.page_indptr[e];
  __shared__ PagedSlice<kPagedPageBuf> ps;
  const long long P = a.page_tokens, p0 = lo / P, np = lo < hi ? min((long long)kPagedPageBuf, (hi - 1) / P - p0 + 1) : 0;
  for (long long i = threadIdx.x; i < np; i += C::kThreads) ps.ids[i] = __ldg(pages + p0 + i);
  if (threadIdx.x == 0) { ps.p0 = static_cast<int>(p0); ps.n = static_cast<int>(np); }
  __syncthreads();
  if constexpr (kG1 == 1) paged_heads<T, D, C, 1>(a, sh, b, kv, kv, 1, lo, cut, hi, pages, ps, slot, true);
  else if constexpr (kG1 == 2) paged_heads<T, D, C, 2>(a, sh, b, kv, kv * 2, 2, lo, cut, hi, pages, ps, slot, true);
  else if (g == 1) paged_heads<T, D, C, 1>(a, sh, b, kv, kv, 1, lo, cut, hi, pages, ps, slot, true);
  else if (g == 2) paged_heads<T, D, C, 2>(a, sh, b, kv, kv * 2, 2, lo, cut, hi, pages, ps, slot, true);
  else
    for (long long h = 0; h < g; h += C::kMaxG)
      paged_heads<T, D, C, C::kMaxG>(a, sh, b, kv, kv * g + h, (int)min((long long)C::kMaxG, g - h), lo, cut, hi, pages, ps, slot, h == 0);
  // Every K/V byte of this CTA is read: the next kernel (o_proj) may take the SM's free slots while the merge runs.
  pdl_launch_dependents();
  // One launch per layer: the last CTA of (b, kv) to finish merges its g heads' splits (atomic arrival count, reset
  // by that CTA for the next launch in stream order).
  unsigned* cnt = a.counters ? a.counters + b * a.Hkv + kv : nullptr;
  if (cnt != nullptr && last_to_arrive(cnt, a.splits)) {
    for (long long h = kv * g; h < kv * g + g; ++h) paged_combine_one<T, D, true>(a, b, h);
    if (threadIdx.x == 0) *cnt = 0u;
  }
}

// grid (Hq, batch): the separate combine launch (counters == null).
template <typename T, int D, class C>
__device__ void paged_decode_combine_kernel(const ZvPagedDecodeArgs& a) {
  paged_combine_one<T, D, false>(a, blockIdx.y, blockIdx.x);
}

// grid (ceil(t / 4), Hkv), block 128: warp w copies source row blockIdx.x * 4 + w of head blockIdx.y.
template <typename T, int D>
__device__ void paged_append_kernel(const ZvPagedAppendArgs& a) {
  constexpr int kVec = DType<T>::kVec, kRowVecs = D / kVec;
  const long long kv = blockIdx.y, i = (long long)blockIdx.x * 4 + (threadIdx.x >> 5);
  if (i >= a.t) return;
  const int dst = a.rows[kv * a.t + i];
  if (dst < 0) return;
  const long long src = kv * a.src_stride + i;
  for (int vec = threadIdx.x & 31; vec < kRowVecs; vec += 32) {
    st16(static_cast<T*>(a.k_pages) + (long long)dst * D + vec * kVec, ld16(static_cast<const T*>(a.k) + src * D + vec * kVec));
    st16(static_cast<T*>(a.v_pages) + (long long)dst * D + vec * kVec, ld16(static_cast<const T*>(a.v) + src * D + vec * kVec));
  }
}

}  // namespace zv
