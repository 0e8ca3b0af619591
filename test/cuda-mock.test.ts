// The cuda executor's host path on the mock driver (native/mock): real kernels compiled by nvcc, real argument
// blocks and launch geometry; the mock records launches instead of running them. One driver per process, so this
// file sets ZIPVL_LIBCUDA before anything loads the addon.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { nvccVersion } from "../src/backends/cuda/compile.ts";

const MOCK = resolve("native/mock/libcuda_mock.so");
const ADDON = resolve("native/build/Release/zipvl_native.node");
const ready = existsSync(MOCK) && existsSync(ADDON) && nvccVersion() !== null;
if (!ready) console.warn("NOTICE: mock libcuda, native addon or nvcc missing; the cuda host-path test is skipped");
process.env.ZIPVL_LIBCUDA = MOCK;

describe.skipIf(!ready)("cuda executor on the mock driver", () => {
  it("a prefill layer is one memset pair and three launches with the documented geometry", async () => {
    const { compileFile } = await import("../src/driver.ts");
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { CudaPrefill, CudaDecode } = await import("../src/backends/cuda/pipeline.ts");
    const { ARG_LAYOUTS } = await import("../src/backends/cuda/args.ts");
    const { prefillInputs } = await import("./support/programs.ts");
    const ctx = openCuda();
    expect(ctx.dev.info.name).toContain("mock");
    const p = compileFile("dsl/zipvl.ts").final;
    const inputs = prefillInputs({ Hq: 8, Hkv: 2, n: 300, d: 64, seed: 1 }, "bf16");
    const run = new CudaPrefill(ctx.dev, p, inputs, ctx.kernels(p, "bf16", 64), {});
    const before = ctx.dev.mockLastLaunch()?.launches ?? 0;
    run.enqueue();
    const last = ctx.dev.mockLastLaunch()!;
    expect(last.launches - before).toBe(3); // probe, select, sparse attention: no host round trip in between
    // sm_90a wgmma attention at d = 64: BM 128, 8 warps, (128 + 2 * 64) * 64 * 2 + 16 * 64 bytes of shared memory.
    expect(last.grid).toEqual([Math.ceil(300 / 128), 8, 1]);
    expect(last.block).toEqual([256, 1, 1]);
    expect(last.sharedBytes).toBe((128 + 2 * 64) * 64 * 2 + 16 * 64);
    expect(last.argsBytes).toBe(8 * ARG_LAYOUTS.ZvSparseArgs.length);
    run.free();
    const { randomTensor } = await import("../src/io/random.ts");
    const step = new Map([["q", randomTensor("bf16", [8, 1, 64], 3)], ["k_cache", inputs.get("k")!], ["v_cache", inputs.get("v")!]]);
    // 132 SMs, Hkv 2, 300 rows: min(floor(2 * 132 / 2), ceil(300 / 64)) = 5 splits, merged by their last CTA (g 4).
    const d = new CudaDecode(ctx.dev, p, step, ctx.kernels(p, "bf16", 64), {});
    const beforeDecode = ctx.dev.mockLastLaunch()!.launches;
    d.enqueue();
    const dl = ctx.dev.mockLastLaunch()!;
    expect(dl.launches - beforeDecode).toBe(1); // one launch: no combine kernel
    expect(dl.grid).toEqual([2, 5, 1]);
    expect(dl.block).toEqual([128, 1, 1]);
    expect(dl.argsBytes).toBe(8 * ARG_LAYOUTS.ZvDecodeArgs.length);
    d.free();
    // fuse: 0 keeps the split + combine pair (the combine last: one CTA per query head).
    const d2 = new CudaDecode(ctx.dev, p, step, ctx.kernels(p, "bf16", 64, { decode: { warps: 4, fuse: 0 } }), {});
    const before2 = ctx.dev.mockLastLaunch()!.launches;
    d2.enqueue();
    const dl2 = ctx.dev.mockLastLaunch()!;
    expect(dl2.launches - before2).toBe(2);
    expect(dl2.grid).toEqual([8, 1, 1]);
    d2.free();
    ctx.dispose();
  });
});
