// Argument blocks of the model kernels (zv_model.cuh). Same ABI as zv_args.cuh: every field is 8 bytes (pointer,
// long long or double), so the host packs a block as 64-bit words in field order (src/backends/cuda/model-args.ts
// mirrors these layouts; test/cuda-model.test.ts checks every offset with g++).
#pragma once

// Row normalization, one CTA per row: kind 0 RMSNorm (HF LlamaRMSNorm: w * T(x * rsqrt(mean(x^2) + eps))),
// kind 1 LayerNorm ((x - mean) * rsqrt(var + eps) * w + b). Statistics in f32.
struct ZvNormArgs {
  const void* x;  // [rows, cols] T
  const void* w;  // [cols] T
  const void* b;  // [cols] T (LayerNorm only)
  void* y;        // [rows, cols] T
  long long rows, cols, kind;
  double eps;
};

// Elementwise ops over `count` elements (f32 math, one rounding to T):
// 0 add a+b, 1 silu(a)*b, 2 gelu(a) (erf), 3 quick_gelu(a), 4 gelu_tanh(a), 5 silu(a), 6 copy a,
// 7 add_rows a[r, c] + b[r % brows, c] (cols columns), 8 copy_strided: row r of a [count / cols, cols] to
// y + r * brows (rows of a capacity KV cache).
struct ZvEltArgs {
  const void* a;
  const void* b;
  void* y;
  long long count, kind, cols, brows;
};

// Greedy sampling: ids[r] = argmax of logits row r (zv_model.cuh argmax_kernel).
struct ZvArgmaxArgs {
  const void* x;    // [rows, V] T (logits)
  int* ids;         // [rows] the greedy token of each row (the next step's embed input)
  int* copy;        // the same ids again at copy + slot * stride (what the host reads back), or null
  const int* slot;  // [1] which copy slot (set by the host before each step), or null: slot 0
  long long rows, V, stride;
};

// Embedding gather: y[i, :] = table[ids[i], :]; ids outside [0, V) give zero rows (the host validates first).
struct ZvEmbedArgs {
  const void* table;  // [V, H] T
  const int* ids;     // [nids]
  void* y;            // [nids, H] T
  long long nids, H, V;
};

// Rotary embedding, HF rotate_half convention, on [H, n, d]: angle = positions[t] * inv_freq[i], cos/sin * scale.
struct ZvRopeArgs {
  const void* x;
  void* y;
  const int* positions;   // [n]
  const float* inv_freq;  // [d / 2]
  long long H, n, d;
  double scale;
};

// Layout change: dir 0 [n, H*d] -> [H, n, d]; dir 1 [H, n, d] -> [n, H*d].
struct ZvHeadsArgs {
  const void* x;
  void* y;
  long long n, H, d, dir;
};

// Dense softmax attention, one warp per query row: q [Hq, nq, d], k/v [Hkv, nk, d] (GQA: head h reads h / (Hq/Hkv)),
// o [Hq, nq, d]. causal: query i sees keys j <= i + (nk - nq). f32 accumulation, online softmax; d <= 256.
struct ZvAttnArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  long long Hq, Hkv, nq, nk, d, causal;
  double scale;
};

// Random init on the device (benchmarks): y[i] = T(std * N(0,1)) from a counter-based hash of (seed, i).
struct ZvInitArgs {
  void* y;
  long long count, seed;
  double std;
};

// Small-batch linear layers of decode (zv_gemv.cuh): y_s = epilogue(norm(x) W_s^T + b_s) for up to three segments.
// mode 0: segments independent (rope_mask / heads_mask bit s: rope on head pairs / head-major output of segment
// s; res: residual added to segment 0); mode 1: y0 = silu(x W0^T + b0) * (x W1^T + b1) (n1 = n0). x_head_dim > 0:
// x is head-major [K / x_head_dim, M, x_head_dim]. kc: elements of x staged in shared memory at a time.
struct ZvGemvArgs {
  const void* x;
  const void* norm_w;     // [K] RMSNorm weight, or null (no norm)
  const void* res;        // [M, n0] residual, or null
  const int* positions;   // [M] rope positions
  const float* inv_freq;  // [d / 2]
  const void* w0;
  const void* w1;
  const void* w2;
  const void* b0;
  const void* b1;
  const void* b2;
  void* y0;
  void* y1;
  void* y2;
  long long K, x_head_dim, n0, n1, n2, nseg, mode, d, rope_mask, heads_mask, kc;
  long long rotate;        // 1: each warp starts at its own stage of K (x in one chunk or direct)
  // Paged KV sink (or null): segments 1 and 2 (k, v; head-major) also go to page rows sink_rows[h * M + m] (-1: none)
  // of sink_k / sink_v ([rows, d]), the decode step's append folded into the projection.
  const int* sink_rows;
  void* sink_k;
  void* sink_v;
  double eps, rope_scale;
};
