// zipvl device library: shared helpers (dtype conversion, 16-byte vector loads, warp/block reductions, scans,
// tensor-core and cp.async wrappers). Used by every zipvl kernel (probe, select, sparse attention, decode).
//
// API stability: other kernels depend on the names below. Add, do not rename. Everything lives in namespace zv.
// Requirements: sm_80 or newer (mma.sync m16n8k16 bf16, cp.async, ldmatrix), C++17.
#pragma once

#include <cuda_fp16.h>
#include <cuda_bf16.h>
// NVRTC has no C library headers (seen on the GPU host: "cannot open source file stdint.h"); the fixed-width types
// it needs are spelled out instead. Redeclaring an identical typedef is legal C++ if cuda_fp16.h made them already.
#ifdef __CUDACC_RTC__
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef long long intptr_t;
typedef unsigned long long uintptr_t;
#else
#include <stdint.h>
#endif

namespace zv {

// ---------------------------------------------------------------------------------------------------------------
// Constants and small integer helpers
// ---------------------------------------------------------------------------------------------------------------
// -inf as a bit pattern: INFINITY is not constexpr-friendly in device code on every toolchain.
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
constexpr float kLog2e = 1.4426950408889634f;

template <typename I>
__host__ __device__ constexpr I ceil_div(I a, I b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------------------------------------
// Dtype traits. kVec = elements in one 16-byte vector (the unit of every global load in the library).
// ---------------------------------------------------------------------------------------------------------------
template <typename T> struct DType;
template <> struct DType<float> {
  static constexpr bool kTensorCore = false;  // f32 inputs use the SIMT paths
  static constexpr int kVec = 4;
};
template <> struct DType<__half> {
  static constexpr bool kTensorCore = true;
  static constexpr int kVec = 8;
};
template <> struct DType<__nv_bfloat16> {
  static constexpr bool kTensorCore = true;
  static constexpr int kVec = 8;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Pack two floats into one 32-bit register of two 16-bit values (low half = a), as mma A/B fragments expect.
template <typename T> __device__ __forceinline__ uint32_t pack2(float a, float b);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Unpack a 32-bit pair of 16-bit values into two floats (low half first).
__device__ __forceinline__ void unpack2(uint32_t w, float& a, float& b, __half) {
  __half2 h = *reinterpret_cast<__half2*>(&w);
  float2 f = __half22float2(h);
  a = f.x; b = f.y;
}
__device__ __forceinline__ void unpack2(uint32_t w, float& a, float& b, __nv_bfloat16) {
  // bf16 -> f32 is a 16-bit shift; cheaper than the intrinsic round trip.
  a = __uint_as_float(w << 16);
  b = __uint_as_float(w & 0xffff0000u);
}

// ---------------------------------------------------------------------------------------------------------------
// 16-byte vector loads/stores with conversion to/from f32. p must be 16-byte aligned. Every supported head dim
// (64/80/96/128/256) times every dtype size is a multiple of 16 bytes, so row starts are aligned when bases are.
// ---------------------------------------------------------------------------------------------------------------
__device__ __forceinline__ uint4 ld16(const void* p) { return *reinterpret_cast<const uint4*>(p); }
// Read-only, streaming (no L1 allocation): for K/V that are read exactly once by a CTA.
__device__ __forceinline__ uint4 ld16_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}
__device__ __forceinline__ void st16(void* p, uint4 v) { *reinterpret_cast<uint4*>(p) = v; }

// Convert one 16-byte vector of T to DType<T>::kVec floats.
__device__ __forceinline__ void cvt16(uint4 v, float* out, float) {
  out[0] = __uint_as_float(v.x); out[1] = __uint_as_float(v.y);
  out[2] = __uint_as_float(v.z); out[3] = __uint_as_float(v.w);
}
template <typename H>
__device__ __forceinline__ void cvt16(uint4 v, float* out, H tag) {
  unpack2(v.x, out[0], out[1], tag); unpack2(v.y, out[2], out[3], tag);
  unpack2(v.z, out[4], out[5], tag); unpack2(v.w, out[6], out[7], tag);
}

template <typename T>
__device__ __forceinline__ void load16_f32(const T* p, float* out) { cvt16(ld16(p), out, T()); }
template <typename T>
__device__ __forceinline__ void load16_f32_stream(const T* p, float* out) { cvt16(ld16_stream(p), out, T()); }

// Store DType<T>::kVec floats as one 16-byte vector of T.
__device__ __forceinline__ void store16_f32(float* p, const float* in) {
  st16(p, make_uint4(__float_as_uint(in[0]), __float_as_uint(in[1]), __float_as_uint(in[2]), __float_as_uint(in[3])));
}
template <typename H>
__device__ __forceinline__ void store16_f32(H* p, const float* in) {
  st16(p, make_uint4(pack2<H>(in[0], in[1]), pack2<H>(in[2], in[3]), pack2<H>(in[4], in[5]), pack2<H>(in[6], in[7])));
}

// ---------------------------------------------------------------------------------------------------------------
// Math
// ---------------------------------------------------------------------------------------------------------------
// 2^x with the SFU (ex2.approx.ftz; ~2 ulp). exp2(-inf) = 0, which the online softmax relies on.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// e^x via the SFU: used where the scores are arbitrary (after a score modifier), so the log2e scaling cannot be
// folded into `scale`.
__device__ __forceinline__ float fast_exp(float x) { return fast_exp2(x * kLog2e); }

// Merge two (max, sum-of-exp(x - max)) softmax states. Either side may be empty (m = -inf, s = 0).
__device__ __forceinline__ void softmax_merge(float& m, float& s, float m2, float s2) {
  float mn = fmaxf(m, m2);
  if (mn == neg_inf()) return;  // both empty
  s = s * fast_exp(m - mn) + s2 * fast_exp(m2 - mn);
  m = mn;
}

// ---------------------------------------------------------------------------------------------------------------
// Warp and block reductions. Block helpers: blockDim.x is a multiple of 32 and <= 1024; `scratch` is shared
// memory of >= 32 elements; every thread of the block must call (they contain __syncthreads) and every thread
// receives the result. The scratch may be reused right after the call returns.
// ---------------------------------------------------------------------------------------------------------------
template <int W = 32> __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <int W = 32> __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <int W = 32> __device__ __forceinline__ int warp_sum(int v) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <int W = 32> __device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename V, typename Op>
__device__ __forceinline__ V block_reduce(V v, V* scratch, Op op, V identity) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : identity;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
struct OpSum { template <typename V> __device__ V operator()(V a, V b) const { return a + b; } };
struct OpMax { __device__ float operator()(float a, float b) const { return fmaxf(a, b); } };

__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce(v, scratch, OpSum(), 0.f); }
__device__ __forceinline__ double block_sum(double v, double* scratch) {
  return block_reduce(v, scratch, OpSum(), 0.0);
}
__device__ __forceinline__ int block_sum(int v, int* scratch) { return block_reduce(v, scratch, OpSum(), 0); }
__device__ __forceinline__ float block_max(float v, float* scratch) {
  return block_reduce(v, scratch, OpMax(), neg_inf());
}

// Inclusive warp scan (sum) of ints.
__device__ __forceinline__ int warp_inclusive_scan(int v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    int t = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

// Block-wide exclusive scan (sum) of one int per thread, in threadIdx.x order. Returns the exclusive prefix and
// writes the block total to `total`. scratch: >= 33 ints of shared memory.
__device__ __forceinline__ int block_exclusive_scan(int v, int* scratch, int& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  int inc = warp_inclusive_scan(v);
  __syncthreads();
  if (lane == 31) scratch[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    int w = lane < nwarps ? scratch[lane] : 0;
    int winc = warp_inclusive_scan(w);
    if (lane < nwarps) scratch[lane] = winc - w;  // exclusive warp offsets
    if (lane == 31) scratch[32] = winc;
  }
  __syncthreads();
  total = scratch[32];
  return scratch[warp] + inc - v;
}

// ---------------------------------------------------------------------------------------------------------------
// Tensor cores (sm_80+): mma.sync m16n8k16, row.col, f32 accumulate. A: 4 regs (16x16), B: 2 regs (16x8), C: 4 f32.
// Fragment layout (PTX ISA "mma.m16n8k16"): lane = 4*groupID + tid_in_group;
//   A: a0=(g, 2t..2t+1) a1=(g+8, 2t..) a2=(g, 2t+8..) a3=(g+8, 2t+8..)   [row, k]
//   B: b0=(k=2t..2t+1, n=g) b1=(k=2t+8.., n=g)
//   C: c0,c1=(g, 2t..2t+1) c2,c3=(g+8, 2t..2t+1)                          [row, col]
// ---------------------------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                         const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ldmatrix: each lane supplies one 16-byte row address (lanes 0-7 matrix 0, 8-15 matrix 1, ...).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
               : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
               : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(smem_row)));
}

// ---------------------------------------------------------------------------------------------------------------
// cp.async (sm_80+): 16-byte global->shared copies; pred=false zero-fills the destination (out-of-range rows).
// ---------------------------------------------------------------------------------------------------------------
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
               :: "r"(smem_u32(smem)), "l"(gmem), "r"(pred ? 16 : 0));
}
// The same through L1 (.ca): for data every warp of a CTA reads (a decode step's activation row).
__device__ __forceinline__ void cp_async_16_ca(void* smem, const void* gmem, bool pred) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;"
               :: "r"(smem_u32(smem)), "l"(gmem), "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" :: "n"(N));
}

// Copies cache rows [r0, r0 + kRows) of K and V (row j of kc / vc at j * D elements) into shared memory with 16-byte
// cp.async copies, the CTA's kThreads threads striding over the 2 * kRows * kRV copies; rows at or past hi are
// zero-filled (their source clamped to row lo), so they are never read as keys. dst(which, row, vec): the slot of
// K (which 0) or V (1). The caller commits the group. Shared by the SIMT and the tensor-core split passes.
template <int D, int kRows, int kRV, int kThreads, typename T, class Dst>
__device__ __forceinline__ void stage_kv_rows(const T* kc, const T* vc, long long r0, long long lo, long long hi, Dst dst) {
  constexpr int kVec = 16 / (int)sizeof(T);
  for (int i = threadIdx.x; i < 2 * kRows * kRV; i += kThreads) {
    const int which = i / (kRows * kRV), rem = i % (kRows * kRV), row = rem / kRV, vec = rem % kRV;
    const long long j = r0 + row;
    cp_async_16(dst(which, row, vec), (which ? vc : kc) + (j < hi ? j : lo) * D + vec * kVec, j < hi);
  }
}

// One launch merges its own splits: each CTA of a group of `splits` arrives on *cnt once its partials are written;
// true (for the whole CTA) in the last to arrive, which then reads everyone's partials (through L2) and must reset
// *cnt to 0 for the next launch in stream order. Shared by zv_decode_split and zv_paged's split kernel.
__device__ __forceinline__ bool last_to_arrive(unsigned* cnt, long long splits) {
  __shared__ int last;
  __threadfence();  // this CTA's partials are visible device-wide before it arrives
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(cnt, 1u) == (unsigned)(splits - 1);
  __syncthreads();
  if (last) __threadfence();
  return last;
}

// ---------------------------------------------------------------------------------------------------------------
// Programmatic dependent launch (sm_90): a kernel launched with it may start while the previous one on the stream
// finishes. pdl_wait() blocks until that kernel has completed and its writes are visible: call it before reading its
// outputs or writing anything. pdl_launch_dependents() lets the next PDL kernel's CTAs start early. Both are no-ops
// on older archs and for plain launches.
// ---------------------------------------------------------------------------------------------------------------
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

}  // namespace zv
