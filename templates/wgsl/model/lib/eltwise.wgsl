// One thread per output element (2-D grids: gid() folds workgroup_id.y in, so totals past 65535 workgroups work).
// Bindings: args, a, b, c (inputs; unused ones get a dummy buffer), out. Index kernels take their dims in p0..p2.
struct EwArgs { total: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<uniform> args: EwArgs;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn gid(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 { return (wid.y * nwg.x + wid.x) * EW_WG + lid.x; }

// erf to |error| < 1.2e-7 (Numerical Recipes' erfc fit; the same formula as the cpu ops' erf): WGSL has no erf.
fn erf_f32(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r - 1.0, 1.0 - r, x >= 0.0);
}
// x / (1 + exp(-k x)): exp overflows to +inf for very negative x and the quotient is the right -0.
fn sigmoid_mul(x: f32, k: f32) -> f32 { return x / (1.0 + exp(-k * x)); }
// tanh through a clamped argument: |u| > 15 is +-1 in f32, and some drivers' tanh returns NaN for huge |u|.
fn tanh_safe(u: f32) -> f32 { return tanh(clamp(u, -15.0, 15.0)); }

@compute @workgroup_size(EW_WG)
fn add(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i < args.total) { out[i] = a[i] + b[i]; }
}

// a [R, C] + b, where b holds p0 values: C (one row, broadcast) or R * C.
@compute @workgroup_size(EW_WG)
fn add_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i < args.total) { out[i] = a[i] + b[i % args.p0]; }
}

@compute @workgroup_size(EW_WG)
fn silu_mul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i < args.total) { out[i] = sigmoid_mul(a[i], 1.0) * b[i]; }
}

@compute @workgroup_size(EW_WG)
fn act_gelu(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i < args.total) { let v = a[i]; out[i] = 0.5 * v * (1.0 + erf_f32(v * 0.7071067811865476)); }
}

@compute @workgroup_size(EW_WG)
fn act_gelu_tanh(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i < args.total) { let v = a[i]; out[i] = 0.5 * v * (1.0 + tanh_safe(0.7978845608028654 * (v + 0.044715 * v * v * v))); }
}

@compute @workgroup_size(EW_WG)
fn act_quick_gelu(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i < args.total) { out[i] = sigmoid_mul(a[i], 1.702); }
}

@compute @workgroup_size(EW_WG)
fn act_silu(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i < args.total) { out[i] = sigmoid_mul(a[i], 1.0); }
}

// [n, H*d] -> [H, n, d]; p0 = H, p1 = n, p2 = d. Indexed by the output (consecutive writes).
@compute @workgroup_size(EW_WG)
fn to_heads(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i >= args.total) { return; }
  let d = args.p2;
  let h = i / (args.p1 * d);
  let t = (i / d) % args.p1;
  out[i] = a[t * args.p0 * d + h * d + i % d];
}

// [H, n, d] -> [n, H*d]; p0 = H, p1 = n, p2 = d.
@compute @workgroup_size(EW_WG)
fn from_heads(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i >= args.total) { return; }
  let d = args.p2;
  let hd = args.p0 * d;
  let t = i / hd;
  let h = (i % hd) / d;
  out[i] = a[(h * args.p1 + t) * d + i % d];
}

// Rotary embedding (HF rotate_half) of a [H, n, d]; b / c hold cos / sin [n, d/2] (already times the scaling; the
// host computes them from the f32 angle, as HF does, because WGSL's cos is only accurate on [-pi, pi]).
// p1 = n, p2 = d.
@compute @workgroup_size(EW_WG)
fn rope(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid(wid, nwg, lid);
  if (i >= args.total) { return; }
  let d = args.p2;
  let half = d / 2u;
  let j = i % d;
  let row = i / d; // h * n + t
  let t = row % args.p1;
  let f = j % half;
  let cs = b[t * half + f];
  let sn = c[t * half + f];
  let x1 = a[row * d + f];
  let x2 = a[row * d + f + half];
  out[i] = select(x2 * cs + x1 * sn, x1 * cs - x2 * sn, j < half);
}
