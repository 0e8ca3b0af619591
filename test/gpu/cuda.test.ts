// The cuda backend against the interpreter on a real GPU (ZIPVL_REAL_GPU=1); skipped with a notice elsewhere.
// The GPU host runs the same checks through the bundled runner bench/gpu-check.ts (fresh random inputs each run).
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { compileFile } from "../../src/driver.ts";
import { knobs } from "../../src/knobs.ts";
import { checkPrefill, inputsFor, type Case } from "../support/cuda-check.ts";

if (!knobs.realGpu) console.warn("NOTICE: no GPU here (set ZIPVL_REAL_GPU=1 on a GPU host); cuda differential tests are skipped");

describe.skipIf(!knobs.realGpu)("cuda backend vs interpreter", () => {
  it("ZipVL prefill over random shapes", async () => {
    const { openCuda } = await import("../../src/backends/cuda/executor.ts");
    const { CudaPrefill } = await import("../../src/backends/cuda/pipeline.ts");
    const ctx = openCuda();
    const p = compileFile("dsl/zipvl.ts").final;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3000 }), fc.constantFrom(64, 80, 96, 128), fc.constantFrom(1, 4, 8), fc.double({ min: 0.01, max: 1, noNaN: true }), fc.nat(), (n, d, g, tau, seed) => {
        const c: Case = { Hq: 2 * g, Hkv: 2, n, d, dtype: "bf16", seed, params: { tau } };
        const inputs = inputsFor(c);
        const run = new CudaPrefill(ctx.dev, p, inputs, ctx.kernels(p, c.dtype, d), { params: c.params });
        run.poison();
        run.enqueue();
        const bad = checkPrefill(p, c, inputs, run.download());
        run.free();
        expect(bad).toEqual([]);
      }),
      { numRuns: 30 },
    );
    ctx.dispose();
  });
});
