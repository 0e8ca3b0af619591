// The paged decode kernel (templates/cuda/include/zv_paged.cuh) against the host reference on a real GPU
// (ZIPVL_REAL_GPU=1); skipped with a notice elsewhere. The GPU host without Node runs the same checks through the
// bundled bench/serve-gpu.ts.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { knobs } from "../../src/knobs.ts";
import type { PageLayout } from "../../src/serve/pool.ts";

if (!knobs.realGpu) console.warn("NOTICE: no GPU here (set ZIPVL_REAL_GPU=1 on a GPU host); paged decode GPU tests are skipped");

describe.skipIf(!knobs.realGpu)("paged decode kernel vs host reference", () => {
  it("random ragged batches, layouts, page sizes, GQA groups, dtypes", async () => {
    const { CudaDevice } = await import("../../src/runtime/native.ts");
    const { checkPagedCase } = await import("../../src/backends/cuda/paged-check.ts");
    const dev = CudaDevice.open();
    const arch = dev.info.computeCapability[0]! >= 9 ? 90 : 80;
    fc.assert(
      fc.property(
        fc.constantFrom("bf16", "f16", "f32" as const), fc.constantFrom(64, 128), fc.integer({ min: 1, max: 8 }), fc.constantFrom(1, 2, 4, 5, 8),
        fc.constantFrom(1, 16, 64), fc.constantFrom<PageLayout>("per-layer", "per-head"), fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: 9 }), fc.nat(), fc.constantFrom("bhd", "hbd" as const), fc.boolean(),
        (dtype, d, Hkv, g, pageTokens, layout, lengths, seed, qLayout, early) => {
          // early: tables first, new rows NaN until a PDL append writes them, the split right behind it (fresh 1).
          const r = checkPagedCase(dev, arch, { dtype: dtype as "bf16", d, Hkv, g, pageTokens, layout, lengths, seed, qLayout: qLayout as "bhd", ...(early ? { early: { fresh: 1 } } : {}) });
          expect(r.bad).toEqual([]);
        },
      ),
      { numRuns: knobs.fcRuns ?? 40 },
    );
  });

  it("the serving engine's cuda attention (step upload, append kernel, head-major q/o) over several layers", async () => {
    const { CudaDevice } = await import("../../src/runtime/native.ts");
    const { checkServeAttention } = await import("../../src/backends/cuda/paged-check.ts");
    const dev = CudaDevice.open();
    const arch = dev.info.computeCapability[0]! >= 9 ? 90 : 80;
    fc.assert(
      fc.property(
        fc.constantFrom("bf16", "f32" as const), fc.constantFrom(64, 128), fc.constantFrom(1, 2, 8), fc.constantFrom(1, 4, 5), fc.constantFrom(1, 16),
        fc.constantFrom<PageLayout>("per-layer", "per-head"), fc.integer({ min: 1, max: 3 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 7 }), fc.nat(),
        (dtype, d, Hkv, g, pageTokens, layout, layers, lengths, seed) => {
          const r = checkServeAttention(dev, arch, { dtype: dtype as "bf16", d, Hkv, g, pageTokens, layout, layers, lengths, seed });
          expect(r.bad).toEqual([]);
        },
      ),
      { numRuns: knobs.fcRuns ?? 20 },
    );
  });
});
