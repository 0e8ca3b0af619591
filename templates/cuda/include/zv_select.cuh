// zipvl device library: token selection (SEMANTICS.md steps 4-5), one thread block per selection set.
//
// No sort: the count p (tau mode) and the identity threshold are both found by 8-bit MSB-first radix select over
// order-preserving float keys (4 passes each), followed by one block-scan pass that writes order[].
// * Data lives in dynamic shared memory when the launcher gave >= 4*n bytes (%dynamic_smem_size is read at run
//   time, so any size is safe); otherwise every pass re-reads global memory (colmass / norm_scores, L2-resident).
// * Tau: "smallest p whose cumulative mass of the largest values >= tau * total" needs per-bucket MASS, not
//   counts. Masses are summed as 64-bit fixed point (scale 2^(61 - ceil(log2 sum|a|)), exact and
//   order-independent), so the bucket walk is deterministic and sub-bucket sums add up exactly to their parent.
//   Tolerance vs the float64 interpreter: each a_j is rounded to a multiple of ~2^-61 * sum|a| (n*2^-62 relative
//   in total) and compared in double; p can differ only where a cumulative sum lies within ~1e-15 * sum|a| of
//   tau * total (and, upstream, by the f32 accumulation of colmass itself).
// * Histograms use warp-aggregated shared atomics (__match_any_sync): leading digits of real score
//   distributions are heavily clustered, and unaggregated atomics would serialize on a handful of buckets.
#pragma once

#include "zv_args.cuh"
#include "zv_common.cuh"

namespace zv {

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
  unsigned int cnt[256];
  unsigned long long sum[256];  // two's-complement fixed-point masses
  int scan[33];
  float fred[32];
  double dred[32];
  // Walk result (written by warp 0): digit, count/mass of everything above it, its own count.
  int found, digit;
  long long above_cnt, above_sum, digit_cnt, total;
};

// Candidate source for one radix pass: keys from shared memory, or recomputed from global floats.
struct KeySrc {
  const uint32_t* keys;  // shared cache (nullptr: use vals)
  const float* vals;
  int lo, hi;            // candidates are j in [lo, hi) (keep rules exclude the forced ends)
  __device__ __forceinline__ uint32_t key(int j) const { return keys ? keys[j] : float_key(vals[j]); }
};

// Histogram of digit (key >> shift) & 255 over candidates with (key & mask) == prefix. kSums adds fixed-point mass.
template <bool kSums>
__device__ void radix_hist(const KeySrc& src, int n, uint32_t prefix, uint32_t mask, int shift, double fscale,
                           SelectShared& sh) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) { sh.cnt[i] = 0; if (kSums) sh.sum[i] = 0; }
  __syncthreads();
  const int lane = threadIdx.x & 31;
  for (int base = 0; base < n; base += blockDim.x) {  // warp-uniform trip count: the warp intrinsics need all lanes
    const int j = base + threadIdx.x;
    uint32_t dig = 256, key = 0;
    if (j >= src.lo && j < src.hi) {
      key = src.key(j);
      if ((key & mask) == prefix) dig = (key >> shift) & 255u;
    }
    const unsigned peers = __match_any_sync(0xffffffffu, dig);
    const bool leader = dig < 256 && lane == __ffs(peers) - 1;
    if (leader) atomicAdd(&sh.cnt[dig], (unsigned)__popc(peers));
    if (kSums) {
      const long long v = dig < 256 ? to_fixed(key_float(key), fscale) : 0;
      unsigned leaders = __ballot_sync(0xffffffffu, leader);
      if (__popc(leaders) <= 4) {  // few distinct digits: one warp sum per digit
        while (leaders) {
          const int l = __ffs(leaders) - 1;
          leaders &= leaders - 1;
          const uint32_t d = __shfl_sync(0xffffffffu, dig, l);
          long long t = dig == d ? v : 0;
#pragma unroll
          for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
          if (lane == l) atomicAdd(&sh.sum[d], (unsigned long long)t);
        }
      } else if (dig < 256) {  // spread digits: little contention left
        atomicAdd(&sh.sum[dig], (unsigned long long)v);
      }
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

// Warp 0: walk digits 255..0 (largest values first); find the first digit where the running measure (counts, or
// fixed-point mass when kSums) reaches `target`, starting from base_cnt/base_sum (everything above the current
// prefix). Lane l owns digits 255-8l .. 248-8l; buckets of one lane share a sign, so mass is monotone inside.
template <bool kSums>
__device__ void radix_walk(SelectShared& sh, double target, long long base_cnt, long long base_sum) {
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  long long c[8], s[8], tc = 0, ts = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int d = 255 - 8 * lane - i;
    c[i] = sh.cnt[d];
    s[i] = kSums ? (long long)sh.sum[d] : c[i];
    tc += c[i]; ts += s[i];
  }
  const long long ic = warp_inclusive_scan64(tc), is = warp_inclusive_scan64(ts);
  long long ac = base_cnt + ic - tc, as = (kSums ? base_sum : base_cnt) + is - ts;
  const unsigned hits = __ballot_sync(0xffffffffu, (double)(as + ts) >= target);
  if (hits == 0) { if (lane == 0) sh.found = 0; return; }
  if (lane != __ffs(hits) - 1) return;
  sh.found = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    if ((double)(as + s[i]) >= target) {
      sh.found = 1; sh.digit = 255 - 8 * lane - i;
      sh.above_cnt = ac; sh.above_sum = as; sh.digit_cnt = c[i];
      return;
    }
    ac += c[i]; as += s[i];
  }
}

// Tau count over raw masses a[0..n): smallest p with (sum of the p largest) >= tau * sum(a), p >= 1; n if never.
// a_max and abs_total come from phase 0. `keys` (if non-null) is n words of shared memory to cache keys in.
__device__ long long tau_count(const float* a, int n, double tau, float a_max, double abs_total, uint32_t* keys,
                               SelectShared& sh) {
  if (abs_total == 0.0) return 1;  // all zero: the first value already reaches tau * 0
  int e;
  frexp(abs_total, &e);
  const double fscale = ldexp(1.0, 61 - e);  // sum |fixed| <= 2^61 + n/2: no overflow
  if (keys) {
    for (int j = threadIdx.x; j < n; j += blockDim.x) keys[j] = float_key(a[j]);
    __syncthreads();
  }
  const KeySrc src{keys, a, 0, n};
  uint32_t prefix = 0, mask = 0;
  long long base_cnt = 0, base_sum = 0, dc = 0;
  double target = 0.0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    radix_hist<true>(src, n, prefix, mask, shift, fscale, sh);
    if (pass == 0) {
      if (threadIdx.x < 32) {
        long long t = 0;
        for (int d = threadIdx.x; d < 256; d += 32) t += (long long)sh.sum[d];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        if (threadIdx.x == 0) sh.total = t;
      }
      __syncthreads();
      target = tau * (double)sh.total;
      if ((double)to_fixed(a_max, fscale) >= target) return 1;
    }
    radix_walk<true>(sh, target, base_cnt, base_sum);
    __syncthreads();
    if (!sh.found) return n;  // cumulative mass never reaches the target (tau > 1, or rounding at tau = 1)
    base_cnt = sh.above_cnt; base_sum = sh.above_sum;
    prefix |= (uint32_t)sh.digit << shift; mask |= 0xffu << shift;
    dc = sh.digit_cnt;
    __syncthreads();  // sh is rewritten by the next pass
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
__device__ uint32_t topk_threshold(const KeySrc& src, int n, long long K, long long& need, SelectShared& sh) {
  uint32_t prefix = 0, mask = 0;
  long long base = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    radix_hist<false>(src, n, prefix, mask, shift, 0.0, sh);
    radix_walk<false>(sh, (double)K, base, 0);
    __syncthreads();
    base = sh.above_cnt;
    prefix |= (uint32_t)sh.digit << shift; mask |= 0xffu << shift;
    const long long dc = sh.digit_cnt;
    __syncthreads();
    if (base + dc == K) break;  // the whole bucket is taken: its lower bits do not matter
  }
  need = K - base;
  return prefix;
}

template <int kThreads>
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

  // Phase 0: s_j = a_j / divisor (0 where the divisor is 0), optional pooling; norm_scores = pooled scores.
  auto norm = [&](int j) {
    const float div = a.normalizer == 0 ? a.visible[j] : (a.normalizer == 1 ? (float)(n - j) : 1.f);
    return div != 0.f ? cm[j] / div : 0.f;
  };
  const int half = (a.pool_kind != 0 && a.pool_size > 1) ? (int)(a.pool_size / 2) : 0;
  if (half > 0 && keys) {
    for (int j = tid; j < n; j += kThreads) keys[j] = __float_as_uint(norm(j));
    __syncthreads();
  }
  float a_max = neg_inf();
  double a_abs = 0.0;
  for (int j = tid; j < n; j += kThreads) {
    float v;
    if (half == 0) {
      v = norm(j);
    } else {
      const int lo = max(0, j - half), hi = min(n - 1, j + half);
      v = a.pool_kind == 1 ? neg_inf() : 0.f;
      for (int i = lo; i <= hi; ++i) {
        const float x = keys ? __uint_as_float(keys[i]) : norm(i);
        v = a.pool_kind == 1 ? fmaxf(v, x) : v + x;
      }
      if (a.pool_kind != 1) v /= (float)(hi - lo + 1);
    }
    out[j] = v;
    if (a.mode == 0) { a_max = fmaxf(a_max, cm[j]); a_abs += fabs((double)cm[j]); }
  }
  __syncthreads();  // out[] complete and the key cache free again

  // Count p.
  long long p;
  if (a.mode == 0) {
    a_max = block_max(a_max, sh.fred);
    a_abs = block_sum(a_abs, sh.dred);
    p = tau_count(cm, n, a.amount, a_max, a_abs, keys, sh);
  } else if (a.mode == 1) {
    p = min((long long)n, max(1ll, (long long)ceil(a.amount * (double)n)));
  } else if (a.mode == 2) {
    p = min((long long)n, max(0ll, (long long)a.amount));
  } else {
    p = n;
  }

  // Keep rules: F = [0, kf) U [n - kl, n); the rest compete for max(0, p - |F|) slots by normalized score.
  const int kf = (int)min((long long)n, max(0ll, a.keep_first));
  const int kl = (int)min((long long)n, max(0ll, a.keep_last));
  const int nf = min(n, kf + kl);
  const long long K = min((long long)(n - nf), max(0ll, p - nf));
  const int count = nf + (int)K;
  const bool take_all = K == n - nf, take_none = K == 0;
  uint32_t vkey = 0;
  long long need = 0;
  __syncthreads();
  if (!take_all && !take_none) {
    if (keys) {
      for (int j = tid; j < n; j += kThreads) keys[j] = float_key(out[j]);
      __syncthreads();
    }
    const KeySrc src{keys, out, kf, n - kl};
    vkey = topk_threshold(src, n, K, need, sh);
  }

  // order[]: selected ascending, then unselected ascending. One packed scan per chunk counts, before each j,
  // the forced-or-above-threshold candidates (low 16 bits) and the ties at the threshold (high 16 bits);
  // ties are taken lowest position first.
  int carry_gf = 0, carry_eq = 0;
  for (int base = 0; base < n; base += kThreads) {
    const int j = base + tid;
    const bool valid = j < n, forced = valid && (j < kf || j >= n - kl);
    bool gt = false, eq = false;
    if (valid && !forced && !take_none) {
      if (take_all) {
        gt = true;
      } else {
        const uint32_t k = keys ? keys[j] : float_key(out[j]);
        gt = k > vkey; eq = k == vkey;
      }
    }
    int total;
    const int ex = block_exclusive_scan((forced || gt ? 1 : 0) | (eq ? 1 << 16 : 0), sh.scan, total);
    const int gf_before = carry_gf + (ex & 0xffff), eq_before = carry_eq + (ex >> 16);
    const bool sel = forced || gt || (eq && eq_before < need);
    const int sel_before = gf_before + (int)min((long long)eq_before, need);
    if (valid) ord[sel ? sel_before : count + (j - sel_before)] = j;
    carry_gf += total & 0xffff; carry_eq += total >> 16;
  }
  if (tid == 0) a.count[set] = count;
}

}  // namespace zv
