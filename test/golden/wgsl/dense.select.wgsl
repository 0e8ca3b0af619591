// zv_dense_select_d128: generated from templates/wgsl (thin template); device logic lives in templates/wgsl/lib/*.wgsl.
alias elem = f32; // storage type of q/k/v/o/caches; arithmetic is always f32
// GPU: plain constants, so loops unroll and per-thread accumulator arrays stay in registers.
fn rolled(x: u32) -> u32 { return x; }
const SELECT_WG: u32 = 128u;
const SELECT_ITEMS: u32 = 4u;
// Variant hooks, rendered from IR expressions (FlashInfer style). s arrives already multiplied by scale.
const ACTIVATION: u32 = 0u; // probe scoring: 0 softmax, 1 sigmoid, 2 none
const PROBE_CAUSAL: bool = true; // probe_mask implies k_pos <= q_pos: later keys are skipped
const ATTN_CAUSAL: bool = true; // attn_mask implies k_pos <= q_pos: later key tiles are skipped
@group(0) @binding(1) var<storage, read> P: array<f32>; // user parameter slots P[i]
fn score_mod(s: f32, q_pos: i32, k_pos: i32, n: i32) -> f32 { return s; }
fn probe_mask(q_pos: i32, k_pos: i32, n: i32) -> bool { return true; }
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

// Stage 2, selection: one workgroup per selection set (1 per layer, Hkv per KV head). No sort anywhere:
//   1. norm_scores[s, j] = pooled(a_j / normalizer_j)                          (one strided pass)
//   2. count p: tau -> mass-weighted radix search over the bits of a (8 passes x 4-bit digits; each bucket carries a
//      float sum, reduced by a tree because WGSL has no float atomics); ratio/budget/all -> p computed on the host
//      in f64 (args.fixed_count) so that ceil(r * n) matches the reference exactly.
//   3. T = forced tokens + top K = max(0, p - |F|) non-forced by norm score: count radix select on f32_key bits
//      (4 passes x 8-bit digits, workgroup atomics) finds the K-th largest key x, #keys > x and need_eq = how many
//      keys == x to take (the smallest positions: ties go to the smaller position).
//   4. One ordered scan over positions of (forced-or-greater, equal) flags writes order: selected ascending, then
//      unselected ascending. count[s] = |T|.
struct SelectArgs {
  n: u32, sets: u32, mode: u32, normalizer: u32,
  pool_kind: u32, pool_size: u32, keep_first: u32, keep_last: u32,
  amount: f32, fixed_count: u32, zero: u32, _pad1: u32,
}
@group(0) @binding(0) var<uniform> args: SelectArgs;
@group(0) @binding(2) var<storage, read> colmass: array<f32>;           // [S, n] raw column mass
@group(0) @binding(3) var<storage, read> visible: array<f32>;           // [n]
@group(0) @binding(4) var<storage, read_write> norm_scores: array<f32>; // [S, n]
@group(0) @binding(5) var<storage, read_write> count: array<i32>;       // [S]
@group(0) @binding(6) var<storage, read_write> order: array<i32>;       // [S, n]

const MODE_TAU: u32 = 0u;
var<workgroup> bucket_sum: array<f32, 16u * SELECT_WG>; // [digit][thread] partial sums, tree-reduced in place
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> scan: array<vec2<u32>, SELECT_WG>;
var<workgroup> bc_u: u32; // thread 0 -> everyone (read with workgroupUniformLoad: uniform and synchronized)

fn bcast(t: u32, value: u32) -> u32 {
  if (t == 0u) { bc_u = value; }
  let v = workgroupUniformLoad(&bc_u);
  workgroupBarrier(); // nobody may overwrite bc_u before every thread has read it
  return v;
}

fn normalized(base: u32, j: u32) -> f32 {
  let a = colmass[base + j];
  var den = 1.0;
  if (args.normalizer == 0u) { den = visible[j]; }
  if (args.normalizer == 1u) { den = f32(args.n - j); }
  return select(a / den, 0.0, den == 0.0);
}

// SnapKV pooling over [j - w/2, j + w/2] clipped to [0, n); mean divides by the clipped width.
fn pooled(base: u32, j: u32) -> f32 {
  if (args.pool_kind == 0u || args.pool_size <= 1u) { return normalized(base, j); }
  let half = args.pool_size / 2u;
  let lo = select(0u, j - half, j >= half);
  let hi = min(args.n - 1u, j + half);
  var acc = normalized(base, lo);
  for (var x = lo + 1u; x <= hi; x++) {
    let v = normalized(base, x);
    acc = select(acc + v, max(acc, v), args.pool_kind == 1u);
  }
  return select(acc / f32(hi - lo + 1u), acc, args.pool_kind == 1u);
}

fn forced(j: u32) -> bool {
  return j < args.keep_first || j + args.keep_last >= args.n || keep_if(i32(j), i32(args.n));
}

// Count for tau: smallest p with (sum of the p largest a) >= tau * sum(a). Finds x = the p-th largest value as the
// largest key whose "mass at or above" reaches the goal, then adds just enough copies of x. Assumes a >= 0
// (softmax/sigmoid mass); returns a value only meaningful in thread 0.
fn tau_count(t: u32, base: u32) -> u32 {
  let n = args.n;
  if (args.amount >= 1.0) {
    // tau = 1: the sorted cumulative sum first reaches the total at the last positive mass, so p = #(a > 0).
    // Counted exactly here because float sums in another order may miss the total by an ulp.
    if (t == 0u) { atomicStore(&hist[0], 0u); }
    workgroupBarrier();
    var c = 0u;
    for (var j = t; j < n; j += SELECT_WG) { c += select(0u, 1u, colmass[base + j] > 0.0); }
    atomicAdd(&hist[0], c);
    workgroupBarrier();
    return max(atomicLoad(&hist[0]), 1u);
  }
  var prefix = 0u;
  var above_sum = 0.0;
  var above_cnt = 0u;
  var goal = 0.0;
  var eq_cnt = 0u;
  for (var step = 0u; step < rolled(8u); step++) {
    let shift = 28u - 4u * step;
    let hi_mask = select(0u, 0xffffffffu << (shift + 4u), step > 0u);
    if (t < 16u) { atomicStore(&hist[t], 0u); }
    var ls = array<f32, 16>(); // explicit: re-zeroed every step
    var lc = array<u32, 16>();
    for (var j = t; j < n; j += SELECT_WG) {
      let a = colmass[base + j];
      let key = f32_key(a);
      if ((key & hi_mask) == prefix) {
        let d = (key >> shift) & 15u;
        ls[d] += a;
        lc[d] += 1u;
      }
    }
    workgroupBarrier(); // hist zeroed
    for (var d = 0u; d < rolled(16u); d++) {
      bucket_sum[d * SELECT_WG + t] = ls[d];
      if (lc[d] > 0u) { atomicAdd(&hist[d], lc[d]); }
    }
    workgroupBarrier();
    for (var off = SELECT_WG / 2u; off > 0u; off >>= 1u) {
      if (t < off) {
        for (var d = 0u; d < rolled(16u); d++) { bucket_sum[d * SELECT_WG + t] += bucket_sum[d * SELECT_WG + t + off]; }
      }
      workgroupBarrier();
    }
    var digit = 0u;
    if (t == 0u) {
      if (step == 0u) {
        var total = 0.0; // from the same bucket sums the walk uses, so tau = 1 is reachable despite rounding
        for (var d = 0u; d < rolled(16u); d++) { total += bucket_sum[d * SELECT_WG]; }
        goal = args.amount * total;
      }
      var found = false;
      var lowest = 0u;
      for (var d = 15i; d >= 0i; d--) {
        let c = atomicLoad(&hist[u32(d)]);
        if (c == 0u) { continue; }
        let sm = bucket_sum[u32(d) * SELECT_WG];
        lowest = u32(d);
        eq_cnt = c;
        if (above_sum + sm >= goal) { digit = u32(d); found = true; break; }
        above_sum += sm;
        above_cnt += c;
      }
      if (!found) { // rounding left the goal unreached: take every remaining candidate
        digit = lowest;
        above_sum -= bucket_sum[lowest * SELECT_WG];
        above_cnt -= eq_cnt;
      }
    }
    prefix = bcast(t, prefix | (digit << shift));
  }
  let x = key_f32(prefix);
  var r = 1u;
  if (x > 0.0) { r = u32(clamp(ceil((goal - above_sum) / x), 1.0, f32(max(eq_cnt, 1u)))); }
  return above_cnt + r;
}

// The K-th largest key among non-forced positions and how many keys exceed it (valid in thread 0 only).
fn kth_key(t: u32, base: u32, kk: u32) -> vec2<u32> {
  var prefix = 0u;
  var above = 0u;
  for (var step = 0u; step < rolled(4u); step++) {
    let shift = 24u - 8u * step;
    let hi_mask = select(0u, 0xffffffffu << (shift + 8u), step > 0u);
    for (var b = t; b < rolled(256u); b += SELECT_WG) { atomicStore(&hist[b], 0u); }
    workgroupBarrier();
    for (var j = t; j < args.n; j += SELECT_WG) {
      let key = f32_key(norm_scores[base + j]);
      if (!forced(j) && (key & hi_mask) == prefix) { atomicAdd(&hist[(key >> shift) & 255u], 1u); }
    }
    workgroupBarrier();
    var digit = 0u;
    if (t == 0u) {
      for (var b = 255i; b >= 0i; b--) {
        let c = atomicLoad(&hist[u32(b)]);
        if (above + c >= kk) { digit = u32(b); break; }
        above += c;
      }
    }
    prefix = bcast(t, prefix | (digit << shift));
  }
  return vec2<u32>(prefix, above);
}

// (1, 0): selected for sure (forced or key > x); (0, 1): key == x (selected while fewer than need_eq came before).
fn sel_flags(base: u32, j: u32, x: u32) -> vec2<u32> {
  if (forced(j)) { return vec2<u32>(1u, 0u); }
  let key = f32_key(norm_scores[base + j]);
  return vec2<u32>(select(0u, 1u, key > x), select(0u, 1u, key == x));
}

@compute @workgroup_size(SELECT_WG)
fn select_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let n = args.n;
  let base = wg.x * n;
  var nf = 0u;
  for (var j = t; j < n; j += SELECT_WG) {
    norm_scores[base + j] = pooled(base, j);
    if (forced(j)) { nf++; }
  }
  if (t == 0u) { atomicStore(&hist[0], 0u); }
  workgroupBarrier();
  atomicAdd(&hist[0], nf);
  storageBarrier(); // norm_scores written above are read by other threads below
  let n_forced = bcast(t, atomicLoad(&hist[0]));

  var p = args.fixed_count;
  if (args.mode == MODE_TAU) { p = bcast(t, tau_count(t, base)); }
  p = clamp(p, 1u, n);
  let kk = p - min(p, n_forced);          // non-forced tokens still to pick
  let total = n_forced + kk;              // |T|
  var x = 0xffffffffu;                    // kk == 0: nothing beats x, nothing equals it
  var need_eq = 0u;
  if (kk == n - n_forced) {
    x = 0u;                               // everything: every key is > 0 or == 0 (need_eq covers them all)
    need_eq = n;
  } else if (kk > 0u) {
    let r = kth_key(t, base, kk);
    x = bcast(t, r.x);
    need_eq = kk - bcast(t, r.y);
  }

  // Ordered scan, SELECT_ITEMS consecutive positions per thread per tile.
  var carry = vec2<u32>(0u, 0u);
  for (var t0 = 0u; t0 < n; t0 += SELECT_WG * SELECT_ITEMS) {
    let my0 = t0 + t * SELECT_ITEMS;
    var loc = vec2<u32>(0u, 0u);
    for (var e = 0u; e < rolled(SELECT_ITEMS); e++) {
      if (my0 + e < n) { loc += sel_flags(base, my0 + e, x); }
    }
    scan[t] = loc;
    workgroupBarrier();
    for (var off = 1u; off < SELECT_WG; off <<= 1u) {
      var add = vec2<u32>(0u, 0u);
      if (t >= off) { add = scan[t - off]; }
      workgroupBarrier();
      scan[t] += add;
      workgroupBarrier();
    }
    var run = carry + scan[t] - loc; // exclusive prefix: (sure-selected, equal) before my0
    carry += scan[SELECT_WG - 1u];
    workgroupBarrier(); // scan[] is rewritten by the next tile
    for (var e = 0u; e < rolled(SELECT_ITEMS); e++) {
      let j = my0 + e;
      if (j < n) {
        let f = sel_flags(base, j, x);
        let before = run.x + min(run.y, need_eq); // selected positions before j
        if (f.x == 1u || (f.y == 1u && run.y < need_eq)) {
          order[base + before] = i32(j);
        } else {
          order[base + total + (j - before)] = i32(j);
        }
        run += f;
      }
    }
  }
  if (t == 0u) { count[wg.x] = i32(total); }
}

