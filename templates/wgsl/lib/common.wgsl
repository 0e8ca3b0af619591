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
