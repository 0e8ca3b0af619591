// Stage 3, token-sparse attention over the selected set T = order[set, 0..count) (positions ascending), one pass:
//   * gather: Q/K/V rows are read through order[] (no gathered copies in memory);
//   * compaction: the first query head of each KV group copies k[kv, T[i]] -> k_cache[kv, i] (same for v) for the
//     rows i of its query tile, so every cache row has exactly one writer;
//   * zero rows: rows order[count..n) of o are written as 0 (tokens without an attention update in this layer).
// Grid (ceil(n / ATT_BQ), Hq); the grid covers n because count lives on the device (no readback between stages).
// Thread (row, lane) = (t / ATT_TPR, t % ATT_TPR): a row's ATT_TPR lanes split the tile's key columns for QK^T and
// own interleaved output dims dd * ATT_TPR + lane for PV (consecutive lanes touch consecutive words). Every lane of a
// row keeps the same running (max, sum), recomputed from the shared score row, so no cross-lane reduction is needed.
// Compacted index order equals position order, so a causal mask on positions is j <= i on indices: key tiles past
// the query tile are skipped when ATTN_CAUSAL says the mask implies it.
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

const ATT_WG: u32 = ATT_BQ * ATT_TPR;
const ATT_DPT: u32 = HEAD_DIM / ATT_TPR;

var<workgroup> qs: array<f32, ATT_BQ * HEAD_DIM>;
var<workgroup> ks: array<f32, ATT_BK * HEAD_DIM>;
var<workgroup> vs: array<f32, ATT_BK * HEAD_DIM>;
var<workgroup> ss: array<f32, ATT_BQ * ATT_BK>;
var<workgroup> qpos: array<i32, ATT_BQ>;
var<workgroup> kpos: array<i32, ATT_BK>;

fn zero_row(h: u32, obase: u32, i: u32, lane: u32) {
  if (i >= args.n) { return; }
  let dst = (h * args.n + u32(order[obase + i])) * HEAD_DIM;
  for (var dd = 0u; dd < rolled(ATT_DPT); dd++) { o[dst + dd * ATT_TPR + lane] = elem(0.0); }
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
  for (var e = t; e < rolled(ATT_BQ * HEAD_DIM); e += ATT_WG) {
    let ii = i0 + e / HEAD_DIM;
    var val = 0.0;
    if (ii < cnt) {
      let pos = u32(order[obase + ii]);
      val = f32(q[(h * n + pos) * HEAD_DIM + e % HEAD_DIM]);
      if (writes_cache) {
        let src = (kv * n + pos) * HEAD_DIM + e % HEAD_DIM;
        let dst = (kv * n + ii) * HEAD_DIM + e % HEAD_DIM;
        k_cache[dst] = k[src];
        v_cache[dst] = v[src];
      }
    }
    qs[e] = val;
  }
  if (t < ATT_BQ) {
    var p = 0;
    if (i0 + t < cnt) { p = order[obase + i0 + t]; }
    qpos[t] = p;
  }

  var m_i = NEG_BIG;
  var l_i = 0.0;
  var acc = array<f32, ATT_DPT>(); // explicit zero init (lavapipe skipped implicit re-init in loops)
  let kend = select(cnt, min(cnt, i0 + ATT_BQ), ATTN_CAUSAL);
  for (var j0 = 0u; j0 < kend; j0 += ATT_BK) {
    workgroupBarrier(); // previous tile's ks/vs/ss fully consumed (first iteration: qs/qpos written)
    for (var e = t; e < rolled(ATT_BK * HEAD_DIM); e += ATT_WG) {
      let jj = j0 + e / HEAD_DIM;
      var kval = 0.0;
      var vval = 0.0;
      if (jj < cnt) {
        let src = (kv * n + u32(order[obase + jj])) * HEAD_DIM + e % HEAD_DIM;
        kval = f32(k[src]);
        vval = f32(v[src]);
      }
      ks[e] = kval;
      vs[e] = vval;
    }
    if (t < ATT_BK) {
      var p = 0;
      if (j0 + t < cnt) { p = order[obase + j0 + t]; }
      kpos[t] = p;
    }
    workgroupBarrier();
    for (var c = lane; c < rolled(ATT_BK); c += ATT_TPR) {
      var s = NEG_BIG;
      if (i < cnt && j0 + c < cnt && attn_mask(qpos[row], kpos[c], i32(n))) {
        var d = 0.0;
        for (var x = 0u; x < rolled(HEAD_DIM); x++) { d += qs[row * HEAD_DIM + x] * ks[c * HEAD_DIM + x]; }
        s = max(score_mod(d * args.scale, qpos[row], kpos[c], i32(n)), NEG_BIG);
      }
      ss[row * ATT_BK + c] = s;
    }
    workgroupBarrier();
    var mt = NEG_BIG;
    for (var c = 0u; c < rolled(ATT_BK); c++) { mt = max(mt, ss[row * ATT_BK + c]); }
    let m_new = max(m_i, mt);
    let alpha = exp(m_i - m_new);
    l_i *= alpha;
    for (var dd = 0u; dd < rolled(ATT_DPT); dd++) { acc[dd] *= alpha; }
    for (var c = 0u; c < rolled(ATT_BK); c++) {
      let s = ss[row * ATT_BK + c];
      if (s > NEG_BIG) {
        let p = exp(s - m_new);
        l_i += p;
        for (var dd = 0u; dd < rolled(ATT_DPT); dd++) { acc[dd] += p * vs[c * HEAD_DIM + dd * ATT_TPR + lane]; }
      }
    }
    m_i = m_new;
  }
  if (i < cnt) {
    // A row whose mask hides every key (l = 0) outputs 0, not NaN.
    let inv = select(0.0, 1.0 / l_i, l_i > 0.0);
    let dst = (h * n + u32(order[obase + i])) * HEAD_DIM;
    for (var dd = 0u; dd < rolled(ATT_DPT); dd++) { o[dst + dd * ATT_TPR + lane] = elem(acc[dd] * inv); }
  } else {
    zero_row(h, obase, i, lane);
  }
}
