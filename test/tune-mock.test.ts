// zipvl tune end to end on the mock libcuda (native/mock): real nvcc builds (one deliberately broken candidate),
// the CUDA-event timing path (meaningless times), records written, then read back by the executor's config
// selection and visible in the launch geometry. One driver per process: the environment is set before imports.
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const MOCK = resolve("native/mock/libcuda_mock.so");
const ADDON = resolve("native/build/Release/zipvl_native.node");
process.env.ZIPVL_LIBCUDA = MOCK;
const dir = mkdtempSync(join(tmpdir(), "zipvl-tune-mock-"));
process.env.ZIPVL_TUNING_DIR = dir; // before anything imports src/knobs.ts
const { nvccVersion } = await import("../src/backends/cuda/compile.ts");
const ready = existsSync(MOCK) && existsSync(ADDON) && nvccVersion() !== null;
if (!ready) console.warn("NOTICE: mock libcuda, native addon or nvcc missing; the tuner's mock run is skipped");

describe.skipIf(!ready)("zipvl tune on the mock driver", () => {
  it("searches, scores a config that does not compile Infinity, writes the record, and the executor uses it", async () => {
    const { compileFile } = await import("../src/driver.ts");
    const { openCuda, tunedFor } = await import("../src/backends/cuda/executor.ts");
    const { CudaPrefill, CudaDecode } = await import("../src/backends/cuda/pipeline.ts");
    const { cudaTasks, cudaLimits, cudaHarness } = await import("../src/tune/cuda.ts");
    const { search } = await import("../src/tune/search.ts");
    const { parseShapes } = await import("../src/tune/shapes.ts");
    const { writeRecord, setNoticeSink } = await import("../src/tune/records.ts");
    const { cudaKey, cudaToolchain } = await import("../src/tune/keys.ts");
    const { nvrtcVersion } = await import("../src/runtime/native.ts");
    const { prefillInputs } = await import("./support/programs.ts");
    const { limitCandidates } = await import("../src/cli/tune.ts");
    const notices: string[] = [];
    setNoticeSink((l) => void notices.push(l));
    const ctx = openCuda();
    const p = compileFile("dsl/variants/topk-ratio.ts").final;
    const tasks = limitCandidates(cudaTasks(p, parseShapes("n=300:kept=0.3:d=64:gqa=4:H=8"), cudaLimits(ctx)), 1);
    expect(tasks.map((t) => t.stage)).toEqual(["probe", "select", "sparse_attn", "decode"]);
    // sparse attention: a valid wgmma alternative (BM 64 = 16 x 4 warps) and one that breaks a static_assert.
    const sa = tasks[2]!;
    const good = { BM: 64, BN: 64, warps: 4, minBlocks: 2, wgmma: 1 };
    const broken = { BM: 96, BN: 64, warps: 4, minBlocks: 1, wgmma: -1 }; // BM % (16 * warps) != 0
    tasks[2] = { ...sa, space: { ...sa.space, configs: [...sa.space.configs, broken, good] } };
    const dec = tasks[3]!;
    tasks[3] = { ...dec, space: { ...dec.space, configs: [...dec.space.configs, { warps: 8, splitScale: 2 }] } };
    const results = await search(tasks, cudaHarness(ctx, p, { warmup: 1, iters: 3, jobs: 2 }), { budgetS: 600, write: () => {} });
    const saTrials = results[2]!.trials;
    expect(saTrials.map((t) => t.verdict)).toEqual(["ok", "compile failed", "ok"]);
    expect(saTrials[1]!.ms).toBe(Infinity);
    expect(saTrials[1]!.why).toMatch(/nvcc/);
    expect(results.every((r) => r.entry !== null)).toBe(true);
    // The mock's events all read 1.5 ms: ties keep the fallback, so pin the alternatives as the record's choice.
    const entries = results.map((r) => r.entry!);
    entries[2] = { ...entries[2]!, config: good };
    entries[3] = { ...entries[3]!, config: { warps: 8, splitScale: 2 } };
    const key = cudaKey(ctx.dev.info, cudaToolchain(nvrtcVersion));
    const path = writeRecord(key, p.name, entries);
    expect(path.startsWith(dir)).toBe(true);
    const rec = JSON.parse(readFileSync(path, "utf8"));
    expect(rec.key).toMatchObject({ backend: "cuda", device: "zipvl mock device", cc: "9.0", driver: "13000" });
    expect(rec.entries).toHaveLength(4);

    // Config selection at run time: the prefill of a shape in the same bucket launches the tuned geometry.
    const inputs = prefillInputs({ Hq: 8, Hkv: 2, n: 300, d: 64, seed: 1 }, "bf16");
    const opts = { params: { ratio: 0.3 } };
    const cfg = tunedFor(ctx, p, "prefill", inputs, opts);
    expect(cfg.sparse_attn).toEqual(good);
    const run = new CudaPrefill(ctx.dev, p, inputs, ctx.kernels(p, "bf16", 64, cfg), opts);
    run.enqueue();
    const last = ctx.dev.mockLastLaunch()!;
    expect(last.grid).toEqual([Math.ceil(300 / 64), 8, 1]);
    expect(last.block).toEqual([128, 1, 1]);
    run.free();
    // Decode over a 90-token cache (bucket cache-n<=4k): 8 warps, twice the splits.
    const { randomTensor } = await import("../src/io/random.ts");
    const kc = randomTensor("bf16", [2, 90, 64], 4);
    const step = new Map([["q", randomTensor("bf16", [8, 1, 64], 3)], ["k_cache", kc], ["v_cache", kc]]);
    const dcfg = tunedFor(ctx, p, "decode", step, {});
    expect(dcfg.decode).toEqual({ warps: 8, splitScale: 2 });
    const d = new CudaDecode(ctx.dev, p, step, ctx.kernels(p, "bf16", 64, dcfg), {});
    const before = ctx.dev.mockLastLaunch()?.launches ?? 0;
    d.enqueue();
    // min(132 * 2 / 2, ceil(90 / 64)) = 2 splits, merged by their last CTA: one launch of 8-warp CTAs.
    expect(ctx.dev.mockLastLaunch()!.launches - before).toBe(1);
    expect(ctx.dev.mockLastLaunch()!.grid).toEqual([2, 2, 1]);
    expect(ctx.dev.mockLastLaunch()!.block).toEqual([256, 1, 1]);
    d.free();
    // Another toolchain makes the record stale: ignored, one notice.
    const staleKey = { ...key, toolchain: "nvcc 0.0" };
    const { tunedCudaConfigs } = await import("../src/tune/lookup.ts");
    expect(tunedCudaConfigs(staleKey, "prefill", { Hq: 8, Hkv: 2, n: 300, d: 64, dtype: "bf16", kept: 0.3 })).toEqual({});
    expect(notices.filter((l) => /stale: toolchain/.test(l))).toHaveLength(1);
    ctx.dispose();
  });
});
