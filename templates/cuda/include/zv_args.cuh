// zipvl kernel argument blocks. Every field is 8 bytes (pointer, long long or double) so the host packs a block as
// a plain array of 64-bit words in field order (src/backends/cuda/args.ts mirrors these layouts; keep them in sync).
#pragma once

// Probe scoring: probe rows of q against all keys of k; softmax/sigmoid/none; column mass accumulated
// (atomicAdd, f32) into colmass, which the launcher zeroes first. colmass is [n] (per layer) or [Hkv, n] (per KV head).
struct ZvProbeArgs {
  const void* q;        // [Hq, n, d] T
  const void* k;        // [Hkv, n, d] T
  const int* probes;    // [m] ascending positions
  float* colmass;       // [n] or [Hkv, n]
  float* visible;       // [n] f32: number of probe rows that see key j (written by block 0 of each column tile, plain store)
  const double* params; // user parameter slots referenced by generated expressions (P[i])
  long long n, m, Hq, Hkv, d;
  long long per_kv_head; // 0: colmass[n], 1: colmass[Hkv, n]
  double scale;
};

// Selection: one thread block per selection set (per layer: 1 set; per KV head: Hkv sets).
struct ZvSelectArgs {
  const float* colmass;  // [S, n] raw column mass
  const float* visible;  // [n] probe-visible counts (normalizer "visible")
  float* norm_scores;    // [S, n] out: normalized (and pooled) scores
  int* count;            // [S] out: kept count per set
  int* order;            // [S, n] out: first count[s] entries = selected positions ascending, then the unselected ascending
  const double* params;
  long long n, S;
  long long mode;        // 0 tau, 1 ratio, 2 budget, 3 all
  double amount;         // tau, ratio or budget
  long long normalizer;  // 0 visible, 1 n_minus_j, 2 none
  long long pool_kind;   // 0 none, 1 max, 2 avg
  long long pool_size;   // odd window width
  long long keep_first;  // first k sink tokens always kept
  long long keep_last;   // last L tokens always kept
};

// Token-sparse attention over order[0..count) with gathered Q/K/V loads, zero rows for order[count..n),
// and the compacted cache written in the same pass: k_cache[kv, i] = k[kv, order[i]] for i < count.
struct ZvSparseArgs {
  const void* q; const void* k; const void* v;   // [Hq,n,d], [Hkv,n,d], [Hkv,n,d] T
  void* o;                                        // [Hq, n, d] T
  void* k_cache; void* v_cache;                   // [Hkv, n, d] T (only the first count rows are meaningful)
  const int* count;                               // [S] device-resident kept count
  const int* order;                               // [S, n]
  const double* params;
  long long n, Hq, Hkv, d;
  long long per_kv_head;                          // 0: set 0 for all heads; 1: set h/g
  double scale;
};

// Decode over a pruned cache: split-KV partials then a combine kernel.
struct ZvDecodeArgs {
  const void* q;        // [Hq, 1, d] T
  const void* k_cache;  // [Hkv, c, d] T
  const void* v_cache;  // [Hkv, c, d] T
  void* o;              // [Hq, 1, d] T
  float* part_o;        // [Hq, splits, d] f32 workspace
  float* part_ml;       // [Hq, splits, 2] f32 workspace (running max, sum)
  const int* length;    // [1] device-resident cache length c (<= capacity)
  const double* params;
  long long capacity, Hq, Hkv, d, splits;
  double scale;
  unsigned* counters;   // [Hkv] arrival counters, zero between launches (the last CTA resets them); null: no fused
                        // combine (the host launches the combine kernel)
};
