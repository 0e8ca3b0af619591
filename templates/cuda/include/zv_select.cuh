// zipvl device library: token selection (SEMANTICS.md steps 4-5), one thread block per selection set.
//
// No sort: the count p (tau mode) and the identity threshold are both found by MSB-first radix select over
// order-preserving float keys (3 passes of 11/11/10 bits each), followed by a block-scan pass that writes order[].
// * Data lives in dynamic shared memory when the launcher gave >= 4*n bytes (%dynamic_smem_size is read at run
//   time, so any size is safe); otherwise every pass re-reads global memory (colmass / norm_scores, L2-resident).
// * Tau: "smallest p whose cumulative mass of the largest values >= tau * total" needs per-bucket MASS, not
//   counts. Masses are summed as 64-bit fixed point (scale 2^(61 - ceil(log2 sum|a|)), exact and
//   order-independent), so the bucket walk is deterministic and sub-bucket sums add up exactly to their parent.
//   Tolerance vs the float64 interpreter: each a_j is rounded to a multiple of ~2^-61 * sum|a| (n*2^-62 relative
//   in total) and compared in double; p can differ only where a cumulative sum lies within ~1e-15 * sum|a| of
//   tau * total (and, upstream, by the f32 accumulation of colmass itself).
// * Performance notes (measured on H100/H200): 64-bit shared atomics compile to CAS spin loops and
//   __match_any_sync is slow, so the 64-bit sums use two native 32-bit atomics with an explicit carry, and the
//   first digit is 11 bits wide (sign, exponent, 2 mantissa bits) to spread the clustered leading digits of real
//   score distributions over more buckets. Global loads are batched because one block is latency-bound.
#pragma once

#include "zv_args.cuh"
#include "zv_common.cuh"

namespace zv {

constexpr int kSelBuckets = 2048;                     // 11-bit digits
__host__ __device__ constexpr int sel_shift(int pass) { return pass == 0 ? 21 : (pass == 1 ? 10 : 0); }
__host__ __device__ constexpr int sel_bits(int pass) { return pass == 2 ? 10 : 11; }

// Larger float -> larger key; -0 and +0 share a key so they tie. NaNs are not expected.
__device__ __forceinline__ uint32_t float_key(float x) {
  const uint32_t b = x == 0.f ? 0u : __float_as_uint(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ uint32_t dynamic_smem_bytes() {
  uint32_t r;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
  return r;
}
__device__ __forceinline__ long long to_fixed(float v, double fscale) { return __double2ll_rn((double)v * fscale); }

struct SelectShared {
  unsigned int cnt[kSelBuckets];
  unsigned int sum_lo[kSelBuckets], sum_hi[kSelBuckets];  // two's-complement fixed-point masses, split for atomics
  long long wc[32], ws[32];                              // per-warp totals in the bucket walk
  int scan[33];
  float fred[32];
  double dred[32];
  long long lred[32];
  // Walk result: first digit (descending order index) reaching the target, and the measures above it.
  int first, digit;
  long long above_cnt, above_sum, digit_cnt;
};

__device__ __forceinline__ long long bucket_sum(const SelectShared& sh, int d) {
  return (long long)(((unsigned long long)sh.sum_hi[d] << 32) | sh.sum_lo[d]);
}
// 64-bit add from two native 32-bit shared atomics: a wrap of the low word carries into the high word.
__device__ __forceinline__ void atomic_add64_split(unsigned int* lo, unsigned int* hi, long long v) {
  const unsigned int vlo = (unsigned int)v, vhi = (unsigned int)((unsigned long long)v >> 32);
  const unsigned int old = atomicAdd(lo, vlo);
  const unsigned int add_hi = vhi + (old + vlo < old ? 1u : 0u);
  if (add_hi) atomicAdd(hi, add_hi);
}

// Candidate source for one radix pass: keys from shared memory, or recomputed from global floats.
// The selection variant hook when a program has no keepIf rule.
struct NoKeepIf {
  static constexpr bool kKeepIf = false;
  __device__ static __forceinline__ bool keep_if(long long, long long, const double*) { return false; }
};

// Candidate keys. Tokens forced by the variant's keepIf rule read as key 0, below every real score's key
// (float_key maps every non-NaN float above 0), so they never change a threshold that leaves real candidates out.
template <class V = NoKeepIf>
struct KeySrcT {
  const uint32_t* keys;  // shared cache (nullptr: use vals)
  const float* vals;
  int lo, hi;            // candidates are j in [lo, hi) (keep rules exclude the forced ends)
  long long n = 0;       // for the keepIf hook
  const double* P = nullptr;
  __device__ __forceinline__ uint32_t key(int j) const {
    if constexpr (V::kKeepIf) {
      if (V::keep_if(j, n, P)) return 0u;
    }
    return keys ? keys[j] : float_key(vals[j]);
  }
};
using KeySrc = KeySrcT<>;

// One block is latency-bound on global memory, so streaming loops use 16-byte accesses (4 floats) with several in
// flight per thread; unaligned bases (per-KV-head sets with n % 4 != 0) fall back to scalar accesses.
__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
__device__ __forceinline__ float4 load4(const float* p, int j, int n, bool vec) {
  if (vec && j + 4 <= n) return *reinterpret_cast<const float4*>(p + j);
  return make_float4(j < n ? p[j] : 0.f, j + 1 < n ? p[j + 1] : 0.f, j + 2 < n ? p[j + 2] : 0.f,
                     j + 3 < n ? p[j + 3] : 0.f);
}
template <typename W>
__device__ __forceinline__ void store4(W* p, int j, int n, bool vec, W x, W y, W z, W w) {
  if (vec && j + 4 <= n) { *reinterpret_cast<uint4*>(p + j) = make_uint4(*(uint32_t*)&x, *(uint32_t*)&y, *(uint32_t*)&z, *(uint32_t*)&w); return; }
  if (j < n) p[j] = x;
  if (j + 1 < n) p[j + 1] = y;
  if (j + 2 < n) p[j + 2] = z;
  if (j + 3 < n) p[j + 3] = w;
}
// keys[j] = float_key(src[j]) for j in [0, n); keys is 16-byte aligned shared memory.
template <int kT>
__device__ void fill_keys(uint32_t* keys, const float* src, int n) {
  const bool vec = aligned16(src);
  constexpr int kB = 4;
  for (int g0 = threadIdx.x * 4; g0 < n; g0 += kB * kT * 4) {
    float4 v[kB];
#pragma unroll
    for (int b = 0; b < kB; ++b) v[b] = load4(src, g0 + b * kT * 4, n, vec);
#pragma unroll
    for (int b = 0; b < kB; ++b)
      store4<uint32_t>(keys, g0 + b * kT * 4, n, true, float_key(v[b].x), float_key(v[b].y), float_key(v[b].z),
                       float_key(v[b].w));
  }
  __syncthreads();
}

// Histogram of digit (key >> shift) over candidates with (key & mask) == prefix. kSums adds fixed-point mass.
template <bool kSums, int kT, class Src>
__device__ void radix_hist(const Src& src, uint32_t prefix, uint32_t mask, int pass, double fscale,
                           SelectShared& sh) {
  for (int i = threadIdx.x; i < kSelBuckets; i += kT) {
    sh.cnt[i] = 0;
    if (kSums) { sh.sum_lo[i] = 0; sh.sum_hi[i] = 0; }
  }
  __syncthreads();
  const int shift = sel_shift(pass);
  const uint32_t dmask = (1u << sel_bits(pass)) - 1u;
  constexpr int kB = 4;  // loads in flight per thread
  for (int base = src.lo + (int)threadIdx.x; base < src.hi; base += kB * kT) {
    uint32_t key[kB];
#pragma unroll
    for (int b = 0; b < kB; ++b) key[b] = base + b * kT < src.hi ? src.key(base + b * kT) : 0u;
#pragma unroll
    for (int b = 0; b < kB; ++b) {
      if (base + b * kT >= src.hi || (key[b] & mask) != prefix) continue;
      const uint32_t d = (key[b] >> shift) & dmask;
      atomicAdd(&sh.cnt[d], 1u);
      if (kSums) atomic_add64_split(&sh.sum_lo[d], &sh.sum_hi[d], to_fixed(key_float(key[b]), fscale));
    }
  }
  __syncthreads();
}

__device__ __forceinline__ long long warp_inclusive_scan64(long long v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const long long t = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

// Block-wide walk over the digits in descending order: finds the first digit where the running measure (counts,
// or fixed-point mass when kSums), starting from base_cnt/base_sum (everything above the current prefix),
// reaches `target`. Thread t owns descending positions [t*kPer, (t+1)*kPer). Returns false if none does.
template <bool kSums, int kT>
__device__ bool radix_walk(SelectShared& sh, double target, long long base_cnt, long long base_sum) {
  constexpr int kPer = kSelBuckets / kT;
  static_assert(kSelBuckets % kT == 0, "threads must divide the bucket count");
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  long long c[kPer], s[kPer], tc = 0, ts = 0;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int d = kSelBuckets - 1 - (tid * kPer + i);
    c[i] = sh.cnt[d];
    s[i] = kSums ? bucket_sum(sh, d) : c[i];
    tc += c[i]; ts += s[i];
  }
  const long long ic = warp_inclusive_scan64(tc), is = warp_inclusive_scan64(ts);
  if (lane == 31) { sh.wc[warp] = ic; sh.ws[warp] = is; }
  if (tid == 0) sh.first = 0x7fffffff;
  __syncthreads();
  long long ac = base_cnt + ic - tc, as = (kSums ? base_sum : base_cnt) + is - ts;
  {  // + totals of the earlier warps
    long long pc = lane < warp ? sh.wc[lane] : 0, ps = lane < warp ? sh.ws[lane] : 0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      pc += __shfl_xor_sync(0xffffffffu, pc, o);
      ps += __shfl_xor_sync(0xffffffffu, ps, o);
    }
    ac += pc; as += ps;
  }
  int first = 0x7fffffff;
  long long fc = 0, fac = 0, fas = 0;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    if (first == 0x7fffffff && (double)(as + s[i]) >= target) { first = tid * kPer + i; fc = c[i]; fac = ac; fas = as; }
    ac += c[i]; as += s[i];
  }
  if (first != 0x7fffffff) atomicMin(&sh.first, first);
  __syncthreads();
  if (first != 0x7fffffff && first == sh.first) {
    sh.digit = kSelBuckets - 1 - first; sh.digit_cnt = fc; sh.above_cnt = fac; sh.above_sum = fas;
  }
  __syncthreads();
  return sh.first != 0x7fffffff;
}

// Tau count over raw masses a[0..n): smallest p with (sum of the p largest) >= tau * sum(a), p >= 1; n if never.
// a_max and abs_total come from phase 0. `keys` (if non-null) is n words of shared memory to cache keys in.
template <int kT>
__device__ long long tau_count(const float* a, int n, double tau, float a_max, double abs_total, uint32_t* keys,
                               SelectShared& sh) {
  if (abs_total == 0.0) return 1;  // all zero: the first value already reaches tau * 0
  int e;
  frexp(abs_total, &e);
  const double fscale = ldexp(1.0, 61 - e);  // sum |fixed| <= 2^61 + n/2: no overflow
  if (keys) fill_keys<kT>(keys, a, n);
  const KeySrc src{keys, a, 0, n};
  uint32_t prefix = 0, mask = 0;
  long long base_cnt = 0, base_sum = 0, dc = 0;
  double target = 0.0;
  for (int pass = 0; pass < 3; ++pass) {
    radix_hist<true, kT>(src, prefix, mask, pass, fscale, sh);
    if (pass == 0) {
      long long t = 0;
      for (int d = threadIdx.x; d < kSelBuckets; d += kT) t += bucket_sum(sh, d);
      t = block_reduce(t, sh.lred, OpSum(), 0ll);
      target = tau * (double)t;
      if ((double)to_fixed(a_max, fscale) >= target) return 1;
    }
    if (!radix_walk<true, kT>(sh, target, base_cnt, base_sum)) return n;  // never reached (tau > 1)
    base_cnt = sh.above_cnt; base_sum = sh.above_sum; dc = sh.digit_cnt;
    prefix |= (uint32_t)sh.digit << sel_shift(pass);
    mask |= ((1u << sel_bits(pass)) - 1u) << sel_shift(pass);
    if (dc == 1) return base_cnt + 1;
  }
  // prefix is now one exact value v > 0 shared by dc elements: take the fewest of them that reach the target.
  const long long f = to_fixed(key_float(prefix), fscale);
  long long t = (long long)ceil((target - (double)base_sum) / (double)f);
  t = max(1ll, min(dc, t));
  while (t > 1 && (double)(base_sum + (t - 1) * f) >= target) --t;  // fix double rounding of the division
  while (t < dc && (double)(base_sum + t * f) < target) ++t;
  return base_cnt + t;
}

// Key of the K-th largest candidate (0 < K < #candidates); `need` = how many candidates equal to it to take.
template <int kT, class Src>
__device__ uint32_t topk_threshold(const Src& src, long long K, long long& need, SelectShared& sh) {
  uint32_t prefix = 0, mask = 0;
  long long base = 0;
  for (int pass = 0; pass < 3; ++pass) {
    radix_hist<false, kT>(src, prefix, mask, pass, 0.0, sh);
    radix_walk<false, kT>(sh, (double)K, base, 0);
    base = sh.above_cnt;
    const long long dc = sh.digit_cnt;
    prefix |= (uint32_t)sh.digit << sel_shift(pass);
    mask |= ((1u << sel_bits(pass)) - 1u) << sel_shift(pass);
    if (base + dc == K) break;  // the whole bucket is taken: its lower bits do not matter
  }
  need = K - base;
  return prefix;
}

template <int kThreads, class V = NoKeepIf>
__device__ void select_kernel(const ZvSelectArgs& a) {
  __shared__ SelectShared sh;
  extern __shared__ __align__(16) uint32_t zv_select_dyn[];
  const int n = (int)a.n, tid = threadIdx.x;
  const long long set = blockIdx.x;
  if (set >= a.S || n <= 0) return;
  const float* cm = a.colmass + set * a.n;
  float* out = a.norm_scores + set * a.n;
  int* ord = a.order + set * a.n;
  uint32_t* keys = (long long)dynamic_smem_bytes() >= 4ll * n ? zv_select_dyn : nullptr;
  constexpr int kB = 4;  // global loads in flight per thread in the streaming loops

  // Phase 0: s_j = a_j / divisor (0 where the divisor is 0), optional pooling; norm_scores = pooled scores.
  // Tau also needs max(a) and sum|a|. Unpooled scores go straight to norm_scores, or to the key cache for pooling.
  const int half = (a.pool_kind != 0 && a.pool_size > 1) ? (int)(a.pool_size / 2) : 0;
  auto norm = [&](int j) {  // scalar recomputation (pooling without the cache)
    const float div = a.normalizer == 0 ? a.visible[j] : (a.normalizer == 1 ? (float)(n - j) : 1.f);
    return div != 0.f ? cm[j] / div : 0.f;
  };
  float a_max = neg_inf();
  double a_abs = 0.0;
  {
    const bool vcm = aligned16(cm), vvis = aligned16(a.visible), vout = aligned16(out);
    for (int g0 = tid * 4; g0 < n; g0 += kB * kThreads * 4) {
      float4 c[kB], d[kB];
#pragma unroll
      for (int b = 0; b < kB; ++b) {
        const int j = g0 + b * kThreads * 4;
        c[b] = load4(cm, j, n, vcm);
        d[b] = a.normalizer == 0 ? load4(a.visible, j, n, vvis)
             : a.normalizer == 1 ? make_float4((float)(n - j), (float)(n - j - 1), (float)(n - j - 2), (float)(n - j - 3))
                                 : make_float4(1.f, 1.f, 1.f, 1.f);
      }
#pragma unroll
      for (int b = 0; b < kB; ++b) {
        const int j = g0 + b * kThreads * 4;
        const float cc[4] = {c[b].x, c[b].y, c[b].z, c[b].w}, dd[4] = {d[b].x, d[b].y, d[b].z, d[b].w};
        float v[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          v[e] = dd[e] != 0.f ? cc[e] / dd[e] : 0.f;
          if (a.mode == 0 && j + e < n) { a_max = fmaxf(a_max, cc[e]); a_abs += fabs((double)cc[e]); }
        }
        if (half == 0) store4<float>(out, j, n, vout, v[0], v[1], v[2], v[3]);
        else if (keys) store4<uint32_t>(keys, j, n, true, __float_as_uint(v[0]), __float_as_uint(v[1]),
                                        __float_as_uint(v[2]), __float_as_uint(v[3]));
      }
    }
  }
  if (half > 0) {
    __syncthreads();
    for (int j = tid; j < n; j += kThreads) {
      const int lo = max(0, j - half), hi = min(n - 1, j + half);
      float acc = a.pool_kind == 1 ? neg_inf() : 0.f;
      for (int i = lo; i <= hi; ++i) {
        const float x = keys ? __uint_as_float(keys[i]) : norm(i);
        acc = a.pool_kind == 1 ? fmaxf(acc, x) : acc + x;
      }
      out[j] = a.pool_kind == 1 ? acc : acc / (float)(hi - lo + 1);
    }
  }
  __syncthreads();  // out[] complete and the key cache free again

  // Count p.
  long long p;
  if (a.mode == 0) {
    a_max = block_max(a_max, sh.fred);
    a_abs = block_sum(a_abs, sh.dred);
    p = tau_count<kThreads>(cm, n, a.amount, a_max, a_abs, keys, sh);
  } else if (a.mode == 1) {  // as the interpreter: the 1e-9 keeps 0.3 * 10 = 3.0000000000000004 at 3
    p = min((long long)n, max(1ll, (long long)ceil(a.amount * (double)n - 1e-9)));
  } else if (a.mode == 2) {  // every mode's p is clamped to [1, n]
    p = min((long long)n, max(1ll, (long long)a.amount));
  } else {
    p = n;
  }

  // Keep rules: F = [0, kf) U [n - kl, n); the rest compete for max(0, p - |F|) slots by normalized score.
  const int kf = (int)min((long long)n, max(0ll, a.keep_first));
  const int kl = (int)min((long long)n, max(0ll, a.keep_last));
  const auto forced_at = [&](int j) { return j < kf || j >= n - kl || V::keep_if(j, a.n, a.params); };
  int nf = min(n, kf + kl);
  if constexpr (V::kKeepIf) {  // keepIf adds tokens inside [kf, n - kl)
    long long c = 0;
    for (int j = kf + tid; j < n - kl; j += kThreads) c += V::keep_if(j, a.n, a.params) ? 1 : 0;
    nf += (int)block_reduce(c, sh.lred, OpSum(), 0ll);
  }
  const long long K = min((long long)(n - nf), max(0ll, p - nf));
  const int count = nf + (int)K;
  const bool take_all = K == n - nf, take_none = K == 0;
  uint32_t vkey = 0;
  long long need = 0;
  __syncthreads();
  if (!take_all && !take_none) {
    if (keys) fill_keys<kThreads>(keys, out, n);
    const KeySrcT<V> src{keys, out, kf, n - kl, a.n, a.params};
    vkey = topk_threshold<kThreads>(src, K, need, sh);
  }

  // order[]: selected ascending, then unselected ascending. Each warp takes a contiguous segment of 32*kE
  // positions of a chunk, lane-interleaved (j = segment + 32e + lane) so that loads and the order[] stores are
  // coalesced. Ranks inside the segment come from ballots; one block scan per chunk adds the counts of earlier
  // warps: forced-or-above-threshold candidates (low 16 bits) and ties at the threshold (high 16 bits). Ties are
  // taken lowest position first.
  constexpr int kE = 8;
  static_assert(kE * kThreads < (1 << 16), "chunk counts must fit 16 bits");
  const bool need_keys = !take_all && !take_none;
  const int lane = tid & 31, warp = tid >> 5;
  const unsigned lt = (1u << lane) - 1u;
  int carry_gf = 0, carry_eq = 0;
  for (int cbase = 0; cbase < n; cbase += kE * kThreads) {
    const int wbase = cbase + warp * 32 * kE;
    unsigned gfb[kE], eqb[kE];
    int wgf = 0, weq = 0;
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      const int j = wbase + 32 * e + lane;
      bool g = false, q = false;
      if (j < n) {
        const bool forced = forced_at(j);
        const uint32_t k = need_keys && !forced ? (keys ? keys[j] : float_key(out[j])) : 0u;
        g = forced || take_all || (need_keys && k > vkey);
        q = !forced && need_keys && k == vkey;
      }
      gfb[e] = __ballot_sync(0xffffffffu, g);
      eqb[e] = __ballot_sync(0xffffffffu, q);
      wgf += __popc(gfb[e]); weq += __popc(eqb[e]);
    }
    int total;
    const int ex = __shfl_sync(0xffffffffu, block_exclusive_scan(lane == 0 ? wgf | (weq << 16) : 0, sh.scan, total), 0);
    int gf_before = carry_gf + (ex & 0xffff), eq_before = carry_eq + (ex >> 16);
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      const int j = wbase + 32 * e + lane;
      const int g_lt = gf_before + __popc(gfb[e] & lt), q_lt = eq_before + __popc(eqb[e] & lt);
      const bool g = (gfb[e] >> lane) & 1u, q = (eqb[e] >> lane) & 1u;
      const bool sel = g || (q && q_lt < need);
      const int sel_before = g_lt + (int)min((long long)q_lt, need);
      if (j < n) ord[sel ? sel_before : count + (j - sel_before)] = j;
      gf_before += __popc(gfb[e]); eq_before += __popc(eqb[e]);
    }
    carry_gf += total & 0xffff; carry_eq += total >> 16;
  }
  if (tid == 0) a.count[set] = count;
}

}  // namespace zv
