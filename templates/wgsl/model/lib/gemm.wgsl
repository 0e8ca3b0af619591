// linear: y[M, N] = x[M, K] w[N, K]^T (+ bias[N]) in f32 (HF nn.Linear layout: both operands are read along K).
// A 16 x 16 workgroup computes a GEMM_BM x GEMM_BN (= 16 GEMM_T square) tile of y, stepping K by GEMM_BK through
// workgroup memory. Each thread owns a GEMM_T x GEMM_T micro-tile strided by 16 rows/columns: shared reads are broadcasts (x) or consecutive (w), and
// the stores of a row of threads are consecutive (coalesced). Loads are bounds-checked (zeros past the edges), so
// any M, N, K works; nothing is read out of bounds even with Dawn's robustness disabled.
struct GemmArgs { M: u32, N: u32, K: u32, has_bias: u32 }
@group(0) @binding(0) var<uniform> args: GemmArgs;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> xs: array<f32, GEMM_BK * GEMM_BM>; // [k][m]
var<workgroup> ws: array<f32, GEMM_BK * GEMM_BN>; // [k][n]

@compute @workgroup_size(16, 16)
fn linear(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let row0 = wid.y * GEMM_BM;
  let col0 = wid.x * GEMM_BN;
  let tid = lid.y * 16u + lid.x;
  var acc: array<array<f32, GEMM_T>, GEMM_T>;
  for (var k0 = 0u; k0 < args.K; k0 += GEMM_BK) {
    // Consecutive threads read consecutive k of one row of x (and of w): coalesced global loads.
    for (var i = tid; i < GEMM_BM * GEMM_BK; i += 256u) {
      let m = i / GEMM_BK;
      let kk = i % GEMM_BK;
      var v = 0.0;
      if (row0 + m < args.M && k0 + kk < args.K) { v = x[(row0 + m) * args.K + k0 + kk]; }
      xs[kk * GEMM_BM + m] = v;
    }
    for (var i = tid; i < GEMM_BN * GEMM_BK; i += 256u) {
      let n = i / GEMM_BK;
      let kk = i % GEMM_BK;
      var v = 0.0;
      if (col0 + n < args.N && k0 + kk < args.K) { v = w[(col0 + n) * args.K + k0 + kk]; }
      ws[kk * GEMM_BN + n] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < GEMM_BK; kk++) {
      var a: array<f32, GEMM_T>;
      var b: array<f32, GEMM_T>;
      for (var i = 0u; i < GEMM_T; i++) {
        a[i] = xs[kk * GEMM_BM + lid.y + 16u * i];
        b[i] = ws[kk * GEMM_BN + lid.x + 16u * i];
      }
      for (var i = 0u; i < GEMM_T; i++) {
        for (var j = 0u; j < GEMM_T; j++) { acc[i][j] = fma(a[i], b[j], acc[i][j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < GEMM_T; i++) {
    let m = row0 + lid.y + 16u * i;
    for (var j = 0u; j < GEMM_T; j++) {
      let n = col0 + lid.x + 16u * j;
      if (m < args.M && n < args.N) {
        var v = acc[i][j];
        if (args.has_bias != 0u) { v += bias[n]; }
        y[m * args.N + n] = v;
      }
    }
  }
}
