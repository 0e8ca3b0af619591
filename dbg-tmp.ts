import { createWebGpu } from "./src/runtime/webgpu.ts";
import { select } from "./src/backends/wgsl/stages.ts";
const dev = await createWebGpu();
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => ((s = (s + 0x6d2b79f5) >>> 0), (((s ^ (s >>> 15)) * (s | 1)) >>> 0) / 2 ** 32);
}
const r = rng(3), n = 5;
const colmass = Float32Array.from({ length: n }, () => (r() < 0.1 ? 0 : r() * 3));
const visible = Float32Array.from({ length: n }, () => (r() < 0.1 ? 0 : 1 + Math.floor(r() * 20)));
console.log(colmass, visible);
const got = await select(dev, { colmass, visible, n, S: 1, mode: "tau", amount: 0.3512678963236795, normalizer: "visible", pool: { kind: "none", size: 1 }, keepFirst: 0, keepLast: 0 });
console.log(got);
dev.destroy();
