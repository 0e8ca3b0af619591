// GPU-host runner for the serving kernels (bundled: the GPU host has no node_modules). Checks the paged decode
// kernel against the host reference on random ragged batches, then times one batched decode step (one layer) for
// a 13B-shaped layer (40 heads, d 128, MHA) at dense and ZipVL-kept cache lengths.
//   bundle here:  npx esbuild bench/serve-gpu.ts --bundle --platform=node --format=esm --target=node20 \
//                   --outfile=.gpu/serve-gpu.mjs "--banner:js=import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
//   GPU host:     (after bench/gpu-run.sh's node unpack) node .gpu/serve-gpu.mjs [--quick]
import { benchPaged, checkPagedCase } from "../src/backends/cuda/paged-check.ts";
import { CudaDevice } from "../src/runtime/native.ts";
import type { PageLayout } from "../src/serve/pool.ts";

const quick = process.argv.includes("--quick");
const dev = CudaDevice.open();
const arch = dev.info.computeCapability[0]! >= 9 ? 90 : 80;
console.log(`device: ${dev.info.name} sm_${dev.info.computeCapability.join("")} (${dev.info.smCount} SMs)`);
let seed = Number(process.env.SEED ?? Date.now() % 1e6);
const pick = <T>(xs: readonly T[]): T => xs[(seed = (seed * 1103515245 + 12345) % 2 ** 31) % xs.length]!;
let failures = 0;
const runs = quick ? 20 : 80;
for (let i = 0; i < runs; i++) {
  const c = {
    dtype: pick(["bf16", "f16", "f32"] as const), d: pick([64, 80, 128]), Hkv: pick([1, 2, 4, 8]), g: pick([1, 2, 4, 5, 8]),
    pageTokens: pick([1, 16, 64]), layout: pick<PageLayout>(["per-layer", "per-head"]),
    lengths: Array.from({ length: pick([1, 2, 5, 9]) }, () => pick([0, 1, 7, 63, 64, 65, 500, 2900, 5000])), seed: pick([1, 2, 3, 4, 5, 6, 7]), qLayout: pick(["bhd", "hbd"] as const),
  };
  const r = checkPagedCase(dev, arch, c);
  if (r.bad.length) {
    failures++;
    console.log(`FAIL ${JSON.stringify(c)} maxErr ${r.maxErr.toExponential(2)} > ${r.tol}: ${r.bad.join("; ")}`);
  }
}
console.log(`paged decode vs reference: ${runs - failures}/${runs} cases pass`);
console.log("one batched decode step, one layer, bf16, 40 heads (MHA) d 128, page 16 tokens:");
for (const len of [2900, 16000, 32000]) {
  for (const kept of [1, 0.367]) {
    for (const batch of quick ? [1, 16] : [1, 8, 32]) {
      const n = Math.max(1, Math.round(len * kept));
      const b = benchPaged(dev, arch, { dtype: "bf16", d: 128, Hkv: 40, g: 1, pageTokens: 16, batch, len: n });
      console.log(`  prompt ${String(len).padStart(6)} ${kept === 1 ? "dense " : "zipvl "} cache ${String(n).padStart(6)} batch ${String(batch).padStart(2)}: ${b.us.toFixed(1).padStart(8)} us  ${b.gbps.toFixed(0).padStart(5)} GB/s`);
    }
  }
}
process.exit(failures ? 1 : 0);
