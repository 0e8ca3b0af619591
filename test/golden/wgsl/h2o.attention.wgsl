// zv_h2o_attention_d128: generated from templates/wgsl (thin template); device logic lives in templates/wgsl/lib/*.wgsl.
alias elem = f32; // storage type of q/k/v/o/caches; arithmetic is always f32
const HEAD_DIM: u32 = 128u;
// GPU: plain constants, so loops unroll and per-thread accumulator arrays stay in registers.
fn rolled(x: u32) -> u32 { return x; }
const ATT_BQ: u32 = 8u;
const ATT_BK: u32 = 8u;
const ATT_TPR: u32 = 8u;
// Variant hooks, rendered from IR expressions (FlashInfer style). s arrives already multiplied by scale.
const ACTIVATION: u32 = 0u; // probe scoring: 0 softmax, 1 sigmoid, 2 none
const PROBE_CAUSAL: bool = true; // probe_mask implies k_pos <= q_pos: later keys are skipped
const ATTN_CAUSAL: bool = true; // attn_mask implies k_pos <= q_pos: later key tiles are skipped
@group(0) @binding(1) var<storage, read> P: array<f32>; // user parameter slots P[i]
fn score_mod(s: f32, q_pos: i32, k_pos: i32, n: i32) -> f32 { return s; }
fn probe_mask(q_pos: i32, k_pos: i32, n: i32) -> bool { return true; }
fn attn_mask(q_pos: i32, k_pos: i32, n: i32) -> bool { return f32(q_pos) >= f32(k_pos); }
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

// Stage 3, token-sparse attention over the selected set T = order[set, 0..count) (positions ascending), one pass:
//   * gather: Q/K/V rows are read through order[] (no gathered copies in memory);
//   * compaction: the first query head of each KV group copies k[kv, T[i]] -> k_cache[kv, i] (same for v) for the
//     rows i of its query tile, so every cache row has exactly one writer;
//   * zero rows: rows order[count..n) of o are written as 0 (tokens without an attention update in this layer).
// Grid (ceil(n / ATT_BQ), Hq); the grid covers n because count lives on the device (no readback between stages).
// Thread (row, lane) = (t / ATT_TPR, t % ATT_TPR): a row's ATT_TPR lanes split the tile's key columns for QK^T and
// own interleaved vec4 output chunks dd * ATT_TPR + lane for PV (consecutive lanes touch consecutive 16 bytes). Every
// lane of a row keeps the same running (max, sum), recomputed from the shared score row: no cross-lane reduction.
// Tiles live in workgroup memory as vec4: one 128-bit load (and, under Dawn's robustness, one index clamp) per 4
// FMAs instead of per FMA. Compacted index order equals position order, so a causal mask on positions is j <= i on
// indices: key tiles past the query tile are skipped when ATTN_CAUSAL says the mask implies it.
struct SparseArgs {
  n: u32, hq: u32, hkv: u32, per_kv_head: u32,
  scale: f32, zero: u32, _pad1: u32, _pad2: u32,
}
@group(0) @binding(0) var<uniform> args: SparseArgs;
@group(0) @binding(2) var<storage, read> q: array<elem>;              // [Hq, n, d]
@group(0) @binding(3) var<storage, read> k: array<elem>;              // [Hkv, n, d]
@group(0) @binding(4) var<storage, read> v: array<elem>;              // [Hkv, n, d]
@group(0) @binding(5) var<storage, read_write> o: array<elem>;        // [Hq, n, d]
@group(0) @binding(6) var<storage, read_write> k_cache: array<elem>;  // [Hkv, n, d], rows < count meaningful
@group(0) @binding(7) var<storage, read_write> v_cache: array<elem>;  // [Hkv, n, d]
@group(0) @binding(8) var<storage, read> count: array<i32>;           // [S]
@group(0) @binding(9) var<storage, read> order: array<i32>;           // [S, n]

const D4: u32 = HEAD_DIM / 4u;          // the host requires HEAD_DIM % 4 == 0
const ATT_WG: u32 = ATT_BQ * ATT_TPR;
const ATT_DPT4: u32 = D4 / ATT_TPR;     // vec4 output chunks per lane
const ATT_CPT: u32 = ATT_BK / ATT_TPR;  // key columns per lane: c = lane + kk * ATT_TPR
// Padded row strides: the lanes of a row read ATT_TPR different key rows at the same x (and a warp spans several
// query rows); with a stride of HEAD_DIM floats (a multiple of 32 banks) they would all hit the same banks.
const QK_STRIDE4: u32 = D4 + 1u;
const SS_STRIDE: u32 = ATT_BK + 1u;

// Nested (row-major) arrays rather than flat ones: Dawn's robustness clamps every index, and with a row index that
// is loop-invariant and a column index that is constant after unrolling, the clamps fold or hoist away. Flat
// indices row * stride + x had to be clamped per load (~3.6x slower on an H200).
var<workgroup> qs: array<array<vec4<f32>, QK_STRIDE4>, ATT_BQ>;
var<workgroup> ks: array<array<vec4<f32>, QK_STRIDE4>, ATT_BK>;
var<workgroup> vs: array<array<vec4<f32>, D4>, ATT_BK>;
var<workgroup> ss: array<array<f32, SS_STRIDE>, ATT_BQ>;
var<workgroup> qpos: array<i32, ATT_BQ>;
var<workgroup> kpos: array<i32, ATT_BK>;

// WGSL cannot pass storage pointers to functions (without unrestricted_pointer_parameters): one loader per buffer.
fn q4(b: u32) -> vec4<f32> { return vec4<f32>(f32(q[b]), f32(q[b + 1u]), f32(q[b + 2u]), f32(q[b + 3u])); }
fn k4(b: u32) -> vec4<f32> { return vec4<f32>(f32(k[b]), f32(k[b + 1u]), f32(k[b + 2u]), f32(k[b + 3u])); }
fn v4(b: u32) -> vec4<f32> { return vec4<f32>(f32(v[b]), f32(v[b + 1u]), f32(v[b + 2u]), f32(v[b + 3u])); }

fn store_row(dst: u32, lane: u32, dd: u32, x: vec4<f32>) {
  let b = dst + 4u * (dd * ATT_TPR + lane);
  o[b] = elem(x.x);
  o[b + 1u] = elem(x.y);
  o[b + 2u] = elem(x.z);
  o[b + 3u] = elem(x.w);
}

fn zero_row(h: u32, obase: u32, i: u32, lane: u32) {
  if (i >= args.n) { return; }
  let dst = (h * args.n + u32(order[obase + i])) * HEAD_DIM;
  for (var dd = 0u; dd < rolled(ATT_DPT4); dd++) { store_row(dst, lane, dd, vec4<f32>()); }
}

@compute @workgroup_size(ATT_WG)
fn sparse_attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let n = args.n;
  let h = wg.y;
  let g = args.hq / args.hkv;
  let kv = h / g;
  let sid = select(0u, kv, args.per_kv_head == 1u);
  let obase = sid * n;
  let cnt = min(u32(max(count[sid], 0)), n);
  let i0 = wg.x * ATT_BQ;
  let row = t / ATT_TPR;
  let lane = t % ATT_TPR;
  let i = i0 + row;
  if (i0 >= cnt) { // whole tile unselected
    zero_row(h, obase, i, lane);
    return;
  }
  let writes_cache = h % g == 0u;
  for (var e = t; e < rolled(ATT_BQ * D4); e += ATT_WG) {
    let ii = i0 + e / D4;
    let c = 4u * (e % D4);
    var val = vec4<f32>();
    if (ii < cnt) {
      let pos = u32(order[obase + ii]);
      val = q4((h * n + pos) * HEAD_DIM + c);
      if (writes_cache) {
        let src = (kv * n + pos) * HEAD_DIM + c;
        let dst = (kv * n + ii) * HEAD_DIM + c;
        for (var x = 0u; x < 4u; x++) {
          k_cache[dst + x] = k[src + x];
          v_cache[dst + x] = v[src + x];
        }
      }
    }
    qs[e / D4][e % D4] = val;
  }
  if (t < ATT_BQ) {
    var p = 0;
    if (i0 + t < cnt) { p = order[obase + i0 + t]; }
    qpos[t] = p;
  }

  var m_i = NEG_BIG;
  var l_i = 0.0;
  var acc = array<vec4<f32>, ATT_DPT4>(); // explicit zero init (lavapipe skipped implicit re-init in loops)
  let kend = select(cnt, min(cnt, i0 + ATT_BQ), ATTN_CAUSAL);
  for (var j0 = 0u; j0 < kend; j0 += ATT_BK) {
    workgroupBarrier(); // previous tile's ks/vs/ss fully consumed (first iteration: qs/qpos written)
    for (var e = t; e < rolled(ATT_BK * D4); e += ATT_WG) {
      let jj = j0 + e / D4;
      var kval = vec4<f32>();
      var vval = vec4<f32>();
      if (jj < cnt) {
        let src = (kv * n + u32(order[obase + jj])) * HEAD_DIM + 4u * (e % D4);
        kval = k4(src);
        vval = v4(src);
      }
      ks[e / D4][e % D4] = kval;
      vs[e / D4][e % D4] = vval;
    }
    if (t < ATT_BK) {
      var p = 0;
      if (j0 + t < cnt) { p = order[obase + j0 + t]; }
      kpos[t] = p;
    }
    workgroupBarrier();
    // All ATT_CPT dot products of this lane in one sweep: each q chunk is loaded once for ATT_CPT key rows.
    var dots = array<f32, ATT_CPT>();
    for (var x = 0u; x < rolled(D4); x++) {
      let qv = qs[row][x];
      for (var kk = 0u; kk < rolled(ATT_CPT); kk++) { dots[kk] += dot(qv, ks[lane + kk * ATT_TPR][x]); }
    }
    for (var kk = 0u; kk < rolled(ATT_CPT); kk++) {
      let c = lane + kk * ATT_TPR;
      var s = NEG_BIG;
      if (i < cnt && j0 + c < cnt && attn_mask(qpos[row], kpos[c], i32(n))) {
        s = max(score_mod(dots[kk] * args.scale, qpos[row], kpos[c], i32(n)), NEG_BIG);
      }
      ss[row][c] = s;
    }
    workgroupBarrier();
    var mt = NEG_BIG;
    for (var c = 0u; c < rolled(ATT_BK); c++) { mt = max(mt, ss[row][c]); }
    let m_new = max(m_i, mt);
    let alpha = exp(m_i - m_new);
    l_i *= alpha;
    for (var dd = 0u; dd < rolled(ATT_DPT4); dd++) { acc[dd] *= alpha; }
    for (var c = 0u; c < rolled(ATT_BK); c++) {
      let s = ss[row][c];
      if (s > NEG_BIG) {
        let p = exp(s - m_new);
        l_i += p;
        for (var dd = 0u; dd < rolled(ATT_DPT4); dd++) { acc[dd] += p * vs[c][dd * ATT_TPR + lane]; }
      }
    }
    m_i = m_new;
  }
  if (i < cnt) {
    // A row whose mask hides every key (l = 0) outputs 0, not NaN.
    let inv = select(0.0, 1.0 / l_i, l_i > 0.0);
    let dst = (h * n + u32(order[obase + i])) * HEAD_DIM;
    for (var dd = 0u; dd < rolled(ATT_DPT4); dd++) { store_row(dst, lane, dd, acc[dd] * inv); }
  } else {
    zero_row(h, obase, i, lane);
  }
}

