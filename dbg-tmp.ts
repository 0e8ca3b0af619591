import { createWebGpu } from "./src/runtime/webgpu.ts";
import { sparseAttention, decode } from "./src/backends/wgsl/stages.ts";
const dev = await createWebGpu();
const n = 20, Hq = 2, Hkv = 1;
const which = process.argv[2] ?? "attn";
for (const d of (process.argv[3] ?? "64,80,96,128").split(",").map(Number)) {
const q = Float32Array.from({ length: Hq * n * d }, () => Math.random()), k = Float32Array.from({ length: Hkv * n * d }, () => Math.random());
const order = Int32Array.from({ length: n }, (_, i) => i);
  let t0 = performance.now();
  if (which === "attn") await sparseAttention(dev, { q, k, v: k, order, count: new Int32Array([n]), Hq, Hkv, n, d, scale: 0.1, perKvHead: false });
  else await decode(dev, { q: q.subarray(0, Hq*d), kCache: k, vCache: k, length: n, Hq, Hkv, d, scale: 0.1 });
  console.log(d, which, performance.now() - t0);
}
dev.destroy();
