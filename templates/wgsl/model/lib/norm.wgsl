// Row normalizations over x [R, C] (one workgroup per row, tree reductions in workgroup memory), f32.
//   rms_norm:   y = g * (x * rsqrt(mean(x^2) + eps))            (HF LlamaRMSNorm)
//   layer_norm: y = (x - mean) * rsqrt(var + eps) * g + b       (biased variance, like torch.nn.LayerNorm)
struct NormArgs { R: u32, C: u32, eps: f32, pad: u32 }
@group(0) @binding(0) var<uniform> args: NormArgs;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, NORM_WG>;

fn block_sum(v: f32, t: u32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = NORM_WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { red[t] += red[t + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier(); // red is reused by the next reduction
  return r;
}

@compute @workgroup_size(NORM_WG)
fn rms_norm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= args.R) { return; }
  let base = row * args.C;
  var ss = 0.0;
  for (var c = lid.x; c < args.C; c += NORM_WG) { let v = x[base + c]; ss = fma(v, v, ss); }
  let inv = inverseSqrt(block_sum(ss, lid.x) / f32(args.C) + args.eps);
  for (var c = lid.x; c < args.C; c += NORM_WG) { y[base + c] = g[c] * (x[base + c] * inv); }
}

@compute @workgroup_size(NORM_WG)
fn layer_norm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= args.R) { return; }
  let base = row * args.C;
  var s = 0.0;
  for (var c = lid.x; c < args.C; c += NORM_WG) { s += x[base + c]; }
  let mean = block_sum(s, lid.x) / f32(args.C);
  var vs = 0.0;
  for (var c = lid.x; c < args.C; c += NORM_WG) { let d = x[base + c] - mean; vs = fma(d, d, vs); }
  let inv = inverseSqrt(block_sum(vs, lid.x) / f32(args.C) + args.eps);
  for (var c = lid.x; c < args.C; c += NORM_WG) { y[base + c] = (x[base + c] - mean) * inv * g[c] + b[c]; }
}
