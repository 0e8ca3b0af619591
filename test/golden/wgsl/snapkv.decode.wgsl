// zv_snapkv_decode_d128: generated from templates/wgsl (thin template); device logic lives in templates/wgsl/lib/*.wgsl.
alias elem = f32; // storage type of q/k/v/o/caches; arithmetic is always f32
const HEAD_DIM: u32 = 128u;
// GPU: plain constants, so loops unroll and per-thread accumulator arrays stay in registers.
fn rolled(x: u32) -> u32 { return x; }
const DEC_WG: u32 = 128u;
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

// Stage 4, decode over a pruned cache: o[h] = softmax(scale * q[h] . k_cache[kv, :c]) v_cache[kv, :c], no mask, with
// c = min(length[0], capacity) read on the device (the cache length is the selection count, never read back).
//   decode_partial grid (splits, Hq): split s owns keys [s * ceil(c / splits), ...) and writes its unnormalized
//     accumulator to part_o and (running max, sum) to part_ml; enough workgroups to fill the GPU at small Hq.
//   decode_combine grid (Hq): rescales the splits to the global max and normalizes.
// In decode_partial, thread t scores key j0 + t of each tile, then owns output dims t, t + DEC_WG, ... (coalesced V).
struct DecodeArgs {
  capacity: u32, hq: u32, hkv: u32, splits: u32,
  scale: f32, zero: u32, _pad1: u32, _pad2: u32,
}
@group(0) @binding(0) var<uniform> args: DecodeArgs;
@group(0) @binding(2) var<storage, read> q: array<elem>;               // [Hq, 1, d]
@group(0) @binding(3) var<storage, read> k_cache: array<elem>;         // [Hkv, capacity, d]
@group(0) @binding(4) var<storage, read> v_cache: array<elem>;         // [Hkv, capacity, d]
@group(0) @binding(5) var<storage, read_write> o: array<elem>;         // [Hq, 1, d]
@group(0) @binding(6) var<storage, read_write> part_o: array<f32>;     // [Hq, splits, d]
@group(0) @binding(7) var<storage, read_write> part_ml: array<f32>;    // [Hq, splits, 2]
@group(0) @binding(8) var<storage, read> length: array<i32>;           // [1]

const DEC_DPT: u32 = (HEAD_DIM + DEC_WG - 1u) / DEC_WG;
var<workgroup> dq: array<f32, HEAD_DIM>;
var<workgroup> ds: array<f32, DEC_WG>;

@compute @workgroup_size(DEC_WG)
fn decode_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let split = wg.x;
  let h = wg.y;
  let kv = h / (args.hq / args.hkv);
  let c = min(u32(max(length[0], 0)), args.capacity);
  let chunk = ceil_div(c, args.splits);
  let j_begin = min(c, split * chunk);
  let j_end = min(c, j_begin + chunk);
  for (var x = t; x < rolled(HEAD_DIM); x += DEC_WG) { dq[x] = f32(q[h * HEAD_DIM + x]); }
  workgroupBarrier();
  var m = NEG_BIG;
  var l = 0.0;
  var acc = array<f32, DEC_DPT>();
  for (var j0 = j_begin; j0 < j_end; j0 += DEC_WG) {
    let j = j0 + t;
    var s = NEG_BIG;
    if (j < j_end) {
      let kb = (kv * args.capacity + j) * HEAD_DIM;
      var d = 0.0;
      for (var x = 0u; x < rolled(HEAD_DIM); x++) { d += dq[x] * f32(k_cache[kb + x]); }
      s = max(d * args.scale, NEG_BIG);
    }
    ds[t] = s;
    workgroupBarrier();
    let live = min(DEC_WG, j_end - j0);
    var mt = NEG_BIG;
    for (var cc = 0u; cc < live; cc++) { mt = max(mt, ds[cc]); }
    let m_new = max(m, mt);
    let alpha = exp(m - m_new);
    l *= alpha;
    for (var e = 0u; e < rolled(DEC_DPT); e++) { acc[e] *= alpha; }
    for (var cc = 0u; cc < live; cc++) {
      let p = exp(ds[cc] - m_new);
      l += p;
      let vb = (kv * args.capacity + j0 + cc) * HEAD_DIM;
      for (var e = 0u; e < rolled(DEC_DPT); e++) {
        let dim = t + e * DEC_WG;
        if (dim < HEAD_DIM) { acc[e] += p * f32(v_cache[vb + dim]); }
      }
    }
    m = m_new;
    workgroupBarrier(); // ds is rewritten by the next tile
  }
  let slot = h * args.splits + split;
  for (var e = 0u; e < rolled(DEC_DPT); e++) {
    let dim = t + e * DEC_WG;
    if (dim < HEAD_DIM) { part_o[slot * HEAD_DIM + dim] = acc[e]; }
  }
  if (t == 0u) {
    part_ml[slot * 2u] = m;
    part_ml[slot * 2u + 1u] = l;
  }
}

@compute @workgroup_size(DEC_WG)
fn decode_combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let h = wg.x;
  var big = NEG_BIG;
  for (var s = 0u; s < args.splits; s++) { big = max(big, part_ml[(h * args.splits + s) * 2u]); }
  var total = 0.0;
  for (var s = 0u; s < args.splits; s++) {
    let slot = h * args.splits + s;
    total += part_ml[slot * 2u + 1u] * exp(part_ml[slot * 2u] - big);
  }
  let inv = select(0.0, 1.0 / total, total > 0.0); // empty cache -> zeros
  for (var dim = t; dim < rolled(HEAD_DIM); dim += DEC_WG) {
    var sum = 0.0;
    for (var s = 0u; s < args.splits; s++) {
      let slot = h * args.splits + s;
      sum += part_o[slot * HEAD_DIM + dim] * exp(part_ml[slot * 2u] - big);
    }
    o[h * HEAD_DIM + dim] = elem(sum * inv);
  }
}

