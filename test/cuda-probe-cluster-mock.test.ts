// The probe's cluster config on the mock driver (native/mock): the kernel is built by nvcc with __cluster_dims__,
// and the prefill launches it plainly with grid.x = row blocks x cluster size. One driver per process, so this
// file sets ZIPVL_LIBCUDA before anything loads the addon.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { nvccVersion } from "../src/backends/cuda/compile.ts";

const MOCK = resolve("native/mock/libcuda_mock.so");
const ADDON = resolve("native/build/Release/zipvl_native.node");
const ready = existsSync(MOCK) && existsSync(ADDON) && nvccVersion() !== null;
if (!ready) console.warn("NOTICE: mock libcuda, native addon or nvcc missing; the probe cluster host-path test is skipped");
process.env.ZIPVL_LIBCUDA = MOCK;

describe.skipIf(!ready)("probe cluster on the mock driver", () => {
  it("the probe launch covers row blocks x cluster CTAs; the layer stays three launches", async () => {
    const { compileFile } = await import("../src/driver.ts");
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { CudaPrefill } = await import("../src/backends/cuda/pipeline.ts");
    const { defaultConfig } = await import("../src/backends/cuda/schedule.ts");
    const { prefillInputs } = await import("./support/programs.ts");
    const ctx = openCuda();
    expect(ctx.arch).toBe(90);
    const p = compileFile("dsl/zipvl.ts").final;
    const inputs = prefillInputs({ Hq: 8, Hkv: 2, n: 300, d: 64, seed: 1 }, "bf16");
    const kernels = ctx.kernels(p, "bf16", 64, { probe: { ...defaultConfig("probe", "bf16", 64, 90), cluster: 4 } });
    const run = new CudaPrefill(ctx.dev, p, inputs, kernels, {});
    const m = run.plan.probes.length;
    const before = ctx.dev.mockLastLaunch()?.launches ?? 0;
    run.enqueueStage(0);
    const probe = ctx.dev.mockLastLaunch()!;
    expect(probe.launches - before).toBe(1);
    expect(probe.grid).toEqual([Math.ceil((4 * m) / 16) * 4, 2, 1]); // g = 4 heads per KV head, 16 rows per CTA
    expect(probe.block).toEqual([256, 1, 1]);
    run.enqueueStage(1);
    run.enqueueStage(2);
    expect(ctx.dev.mockLastLaunch()!.launches - before).toBe(3);
    run.free();
    ctx.dispose();
  });
});
