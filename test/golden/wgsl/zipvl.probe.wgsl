// zv_zipvl_probe_d128: generated from templates/wgsl (thin template); device logic lives in templates/wgsl/lib/*.wgsl.
alias elem = f32; // storage type of q/k/v/o/caches; arithmetic is always f32
const HEAD_DIM: u32 = 128u;
// GPU: plain constants, so loops unroll and per-thread accumulator arrays stay in registers.
fn rolled(x: u32) -> u32 { return x; }
const PROBE_WG: u32 = 64u;
const PROBE_QCHUNK: u32 = 16u;
// Variant hooks, rendered from IR expressions (FlashInfer style). s arrives already multiplied by scale.
const ACTIVATION: u32 = 0u; // probe scoring: 0 softmax, 1 sigmoid, 2 none
const PROBE_CAUSAL: bool = true; // probe_mask implies k_pos <= q_pos: later keys are skipped
const ATTN_CAUSAL: bool = true; // attn_mask implies k_pos <= q_pos: later key tiles are skipped
@group(0) @binding(1) var<storage, read> P: array<f32>; // user parameter slots P[i]
fn score_mod(s: f32, q_pos: i32, k_pos: i32, n: i32) -> f32 { return s; }
fn probe_mask(q_pos: i32, k_pos: i32, n: i32) -> bool { return f32(q_pos) >= f32(k_pos); }
fn attn_mask(q_pos: i32, k_pos: i32, n: i32) -> bool { return true; }
fn keep_if(pos: i32, n: i32) -> bool { return false; }
// zipvl WGSL device library: shared helpers. Included verbatim by every template after its constants and hooks.

// Score of a masked entry. Not -inf: WGSL const-expressions cannot hold infinities, and exp(NEG_BIG - m) == 0 for any
// finite m, so masked entries vanish from the online softmax without extra branches. Kernels also clamp hook outputs
// to >= NEG_BIG so that a score_mod returning -inf reads as masked instead of producing NaN in exp(-inf - -inf).
const NEG_BIG: f32 = -3.0e38;

// Order-preserving map f32 -> u32 (a < b  <=>  f32_key(a) < f32_key(b)), so that selection can radix-search bits.
// -0 folds into +0: equal floats must get equal keys because ties are broken by position, not by sign bit.
fn f32_key(x: f32) -> u32 {
  let b = select(bitcast<u32>(x), 0u, x == 0.0);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Inverse of f32_key.
fn key_f32(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key ^ 0x80000000u, (key & 0x80000000u) != 0u));
}

fn ceil_div(a: u32, b: u32) -> u32 {
  return (a + b - 1u) / b;
}

// Online-softmax merge of two (max, sum-of-exp) pairs; NEG_BIG maxima carry zero sums, so exp(0) * 0 stays 0.
fn merge_ml(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// Stage 1, probe scoring: A = activation(score_mod(scale * Q[P] K^T)) on probe rows only (never an n x n matrix),
// reduced into column mass a[set, j] and the per-key count of probe rows that see j.
//   probe_rowstats (softmax only) grid (m, Hq): one workgroup per probe row -> rowstat[h, i] = (max, sum of exp).
//   probe_colmass grid (ceil(n / PROBE_WG), S): one thread per key j owns colmass[set, j]: plain stores, so no float
//     atomics (WGSL has none) and no zeroing pass; the set's heads and probe rows stream through workgroup memory in
//     chunks of PROBE_QCHUNK rows. Scores are recomputed in both passes (2x FLOPs, no m x n intermediate).
struct ProbeArgs {
  n: u32, m: u32, hq: u32, hkv: u32,
  per_kv_head: u32, scale: f32, zero: u32, _pad1: u32,
}
@group(0) @binding(0) var<uniform> args: ProbeArgs;
@group(0) @binding(2) var<storage, read> q: array<elem>;            // [Hq, n, d]
@group(0) @binding(3) var<storage, read> k: array<elem>;            // [Hkv, n, d]
@group(0) @binding(4) var<storage, read> probes: array<i32>;        // [m] ascending positions
@group(0) @binding(5) var<storage, read_write> colmass: array<f32>; // [S, n]
@group(0) @binding(6) var<storage, read_write> visible: array<f32>; // [n]
@group(0) @binding(7) var<storage, read_write> rowstat: array<f32>; // [Hq, m, 2] workspace (softmax max, sum)

// Nested, not flat: under Dawn's robustness every index is clamped, and pq[r][c] keeps the clamps loop-invariant.
var<workgroup> pq: array<array<f32, HEAD_DIM>, PROBE_QCHUNK>;
var<workgroup> red: array<vec2<f32>, PROBE_WG>;

fn probe_score(kbase: u32, q_pos: i32, k_pos: i32) -> f32 {
  var acc = 0.0;
  for (var c = 0u; c < rolled(HEAD_DIM); c++) {
    acc += pq[0][c] * f32(k[kbase + c]);
  }
  return max(score_mod(acc * args.scale, q_pos, k_pos, i32(args.n)), NEG_BIG);
}

fn activate(s: f32, h: u32, i: u32) -> f32 {
  if (ACTIVATION == 0u) {
    let st = (h * args.m + i) * 2u;
    return exp(s - rowstat[st]) / rowstat[st + 1u];
  }
  if (ACTIVATION == 1u) {
    return 1.0 / (1.0 + exp(-s));
  }
  return s;
}

// First probe index whose position is >= x (probes ascend).
fn probes_lower_bound(x: i32) -> u32 {
  var lo = 0u;
  var hi = args.m;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (probes[mid] < x) { lo = mid + 1u; } else { hi = mid; }
  }
  return lo;
}

@compute @workgroup_size(PROBE_WG)
fn probe_rowstats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let n = args.n;
  let i = wg.x;
  let h = wg.y;
  let kv = h / (args.hq / args.hkv);
  let q_pos = probes[i];
  for (var c = t; c < rolled(HEAD_DIM); c += PROBE_WG) {
    pq[0][c] = f32(q[(h * n + u32(q_pos)) * HEAD_DIM + c]);
  }
  workgroupBarrier();
  // A causal probe mask hides every key after q_pos: do not even score them.
  let jend = select(n, min(n, u32(q_pos) + 1u), PROBE_CAUSAL);
  var ml = vec2<f32>(NEG_BIG, 0.0);
  for (var j = t; j < jend; j += PROBE_WG) {
    if (probe_mask(q_pos, i32(j), i32(n))) {
      ml = merge_ml(ml, vec2<f32>(probe_score((kv * n + j) * HEAD_DIM, q_pos, i32(j)), 1.0));
    }
  }
  red[t] = ml;
  workgroupBarrier();
  for (var off = PROBE_WG / 2u; off > 0u; off >>= 1u) {
    if (t < off) { red[t] = merge_ml(red[t], red[t + off]); }
    workgroupBarrier();
  }
  if (t == 0u) {
    rowstat[(h * args.m + i) * 2u] = red[0].x;
    rowstat[(h * args.m + i) * 2u + 1u] = red[0].y;
  }
}

@compute @workgroup_size(PROBE_WG)
fn probe_colmass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let n = args.n;
  let m = args.m;
  let sid = wg.y;
  let g = args.hq / args.hkv;
  let j0 = wg.x * PROBE_WG;
  let j = j0 + t;
  let live = j < n;
  // Per layer: every head feeds set 0. Per KV head: the g query heads of KV head `sid`.
  let h_begin = select(0u, sid * g, args.per_kv_head == 1u);
  let h_end = select(args.hq, h_begin + g, args.per_kv_head == 1u);
  // Causal probes: rows positioned before this tile's first key see none of its keys; start past them.
  var i_begin = 0u;
  if (PROBE_CAUSAL) { i_begin = probes_lower_bound(i32(j0)); }
  var mass = 0.0;
  var nvis = 0u;
  var kr: array<f32, HEAD_DIM>; // this thread's key row, reused by every probe row of the head
  for (var h = h_begin; h < h_end; h++) {
    let kbase = ((h / g) * n + min(j, n - 1u)) * HEAD_DIM;
    for (var c = 0u; c < rolled(HEAD_DIM); c++) { kr[c] = f32(k[kbase + c]); }
    for (var i0 = i_begin; i0 < m; i0 += PROBE_QCHUNK) {
      let rows = min(PROBE_QCHUNK, m - i0);
      workgroupBarrier(); // the previous chunk is fully consumed
      for (var e = t; e < rows * HEAD_DIM; e += PROBE_WG) {
        pq[e / HEAD_DIM][e % HEAD_DIM] = f32(q[(h * n + u32(probes[i0 + e / HEAD_DIM])) * HEAD_DIM + e % HEAD_DIM]);
      }
      workgroupBarrier();
      if (live) {
        for (var r = 0u; r < rows; r++) {
          let q_pos = probes[i0 + r];
          if (probe_mask(q_pos, i32(j), i32(n))) {
            var acc = 0.0;
            for (var c = 0u; c < rolled(HEAD_DIM); c++) { acc += pq[r][c] * kr[c]; }
            let s = max(score_mod(acc * args.scale, q_pos, i32(j), i32(n)), NEG_BIG);
            mass += activate(s, h, i0 + r);
            if (h == h_begin) { nvis++; }
          }
        }
      }
    }
  }
  if (live) {
    colmass[sid * n + j] = mass;
    if (sid == 0u) { visible[j] = f32(nvis); }
  }
}

