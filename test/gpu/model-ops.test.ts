// The CUDA ModelOps against the cpu ops on a real GPU (ZIPVL_REAL_GPU=1), and the small LLaVA-Next dense and
// ZipVL end to end; skipped with a notice elsewhere. bench/model-gpu-check.ts is the same check as a bundled runner.
import { describe, expect, it } from "vitest";
import { knobs } from "../../src/knobs.ts";

if (!knobs.realGpu) console.warn("NOTICE: no GPU here (set ZIPVL_REAL_GPU=1 on a GPU host); cuda model-ops tests are skipped");

describe.skipIf(!knobs.realGpu)("cuda ModelOps vs cpu ops", () => {
  it("every method, f32 and bf16, fresh seed; the small model dense and ZipVL", async () => {
    const { checkModel, checkOps } = await import("../../bench/model-gpu-check.ts");
    const { createCudaOps } = await import("../../src/model/cuda-ops.ts");
    const { loadPolicy } = await import("../../src/model/session.ts");
    const seed = Date.now() % 1_000_000_007;
    console.log(`seed ${seed}`);
    const zipvl = loadPolicy("dsl/zipvl.ts", { tau: 0.9 });
    for (const dtype of ["f32", "bf16"] as const) {
      const ops = await createCudaOps({ dtype });
      const bad = checkOps(ops, seed, { quick: true, policy: zipvl }).filter((r) => !r.ok);
      expect(bad).toEqual([]);
      for (const m of checkModel(ops, seed, { dense: undefined, zipvl })) {
        expect(m.logitsErr, `${m.mode} ${dtype}`).toBeLessThanOrEqual(dtype === "f32" ? 1e-3 : 1e-1);
        if (dtype === "f32" && m.mode === "dense") expect(m.tokensCuda).toEqual(m.tokensCpu);
      }
      ops.dispose();
    }
  });
});
