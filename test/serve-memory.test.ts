// The serving memory planner against the measured prefill peak: the device meter (model-pool.ts DeviceMeter: bytes
// held from the driver, high-water mark, cap, give-back-and-retry), the fit of the calibration points (linear, and
// superlinear when the slope grows), the plan using the fit (10% margin, more past the measured lengths, ZV7011 before any work for a prompt past
// it), and on the mock driver (native/mock): the engine's calibration over the real prefill code path, and a
// prefill that runs out of device memory failing alone (ZV7040) while the server and the other requests go on.
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { nvccVersion } from "../src/backends/cuda/compile.ts";
import { fitPeak } from "../src/serve/engine.ts";
import { checkRequest, describePlan, planMemory, prefillBytes, prefillMargin, type ModelShape, type PrefillFit } from "../src/serve/planner.ts";

const SHAPE_13B: ModelShape = { layers: 40, hidden: 5120, intermediate: 13824, heads: 40, kvHeads: 40, headDim: 128, vocab: 32064, maxPositions: 131072 + 1024 };

describe("prefill peak fit and plan", () => {
  it("fits a + b n on or above every point; a growing slope adds c n^2", () => {
    const lin = fitPeak([[512, 1000 + 512 * 300], [1024, 1000 + 1024 * 300], [2048, 1000 + 2048 * 300]]);
    expect(lin.c).toBe(0);
    expect(lin.b).toBeCloseTo(300 * 17 / 16, 6);
    for (const [n, y] of [[512, 1000 + 512 * 300], [2048, 1000 + 2048 * 300]] as const) expect(lin.a + lin.b * n).toBeGreaterThanOrEqual(y);
    const q = (n: number): number => 5000 + 100 * n + 0.5 * n * n;
    const sup = fitPeak([[512, q(512)], [1024, q(1024)], [2048, q(2048)]]);
    expect(sup.c).toBeCloseTo(0.5 * 17 / 16, 6);
    expect(sup.a + sup.b * 131072 + sup.c * 131072 ** 2).toBeGreaterThanOrEqual(q(131072));
  });

  it("reserves the fitted peak with a 10% margin (+5% per doubling past the measured lengths) and rejects longer prompts before any work", () => {
    // The shape of the H200 failure: a measured peak well above the hand formula.
    const line = (n: number) => 2 ** 28 + 240 * 1024 * n;
    const fit: PrefillFit = { a: 2 ** 28, b: 240 * 1024, c: 0, points: [[1024, line(1024)], [16384, line(16384)]], source: "measured on cuda (test)" };
    expect(prefillMargin(16384, fit)).toBeCloseTo(1.1, 12);
    expect(prefillMargin(4 * 16384, fit)).toBeCloseTo(1.2, 12);
    expect(prefillMargin(8 * 16384, fit)).toBeCloseTo(1.25, 12); // 128k: covers the 17% the H100 measured
    expect(prefillMargin(2 ** 30, fit)).toBe(1.3);
    const opts = { freeBytes: 100 * 2 ** 30, elemBytes: 2, pageTokens: 16, layout: "per-layer" as const, keptRatio: 0.367, sparse: true, maxBatch: 64 };
    const plan = planMemory(SHAPE_13B, { ...opts, prefill: fit, maxPromptTokens: 65536 });
    expect(prefillBytes(SHAPE_13B, 65536, 2, fit)).toBe(Math.ceil(prefillMargin(65536, fit) * line(65536)));
    expect(prefillBytes(SHAPE_13B, 4096, 2, fit)).toBe(Math.ceil(1.1 * line(4096)));
    expect(plan.activationBytes).toBeGreaterThanOrEqual(prefillBytes(SHAPE_13B, 65536, 2, fit));
    checkRequest(plan, 65536 - 16, 16);
    expect(() => checkRequest(plan, 131072 - 16, 16)).toThrow(/ZV7011.*measured/);
    expect(describePlan(plan)).toMatch(/prefill peak measured on cuda \(test\).*\+20% margin at 65536 tokens/);
    // Without a fit: the hand formula, said so in the report lines.
    expect(describePlan(planMemory(SHAPE_13B, { ...opts, maxPromptTokens: 65536 }))).toMatch(/hand formula.*cpu/);
    // Default longest prompt: the largest whose measured reserve fits a quarter of the memory.
    const auto = planMemory(SHAPE_13B, { ...opts, prefill: fit });
    expect(prefillBytes(SHAPE_13B, auto.maxPromptTokens, 2, fit)).toBeLessThanOrEqual(100 * 2 ** 30 * 0.95 / 4);
    expect(prefillBytes(SHAPE_13B, auto.maxPromptTokens + 1, 2, fit)).toBeGreaterThan(100 * 2 ** 30 * 0.95 / 4);
  });
});

const MOCK = resolve("native/mock/libcuda_mock.so");
const MOCK_LT = resolve("native/mock/libcublaslt_mock.so");
const ready = existsSync(MOCK) && existsSync(MOCK_LT) && existsSync(resolve("native/build/Release/zipvl_native.node")) && nvccVersion() !== null;
if (!ready) console.warn("NOTICE: mock libcuda/cuBLASLt, native addon or nvcc missing; the device memory tests are skipped");
process.env.ZIPVL_LIBCUDA = MOCK;
process.env.ZIPVL_LIBCUBLASLT = MOCK_LT;

describe.skipIf(!ready)("device memory on the mock driver", () => {
  it("the meter counts held bytes and the high-water mark; a cap is ZV3004 unless cached memory is given back", async () => {
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { BufferPool, DeviceMeter } = await import("../src/backends/cuda/model-pool.ts");
    const meter = new DeviceMeter();
    const dev = meter.device(openCuda().dev);
    const a = dev.alloc(1000);
    const b = dev.upload(new Float32Array(500));
    expect([meter.heldBytes, meter.peakBytes]).toEqual([3000, 3000]);
    a.free();
    a.free();
    expect([meter.heldBytes, meter.peakBytes]).toEqual([2000, 3000]);
    meter.resetPeak();
    expect(meter.peakBytes).toBe(2000);
    const pool = new BufferPool(dev);
    pool.give(pool.take(4096));
    meter.capBytes = 2000 + 4096 + 1024;
    expect(() => dev.alloc(4096)).toThrow(/ZV3004/);
    meter.onPressure = () => {
      const had = pool.cachedBytes;
      pool.release();
      return had > 0;
    };
    const c = dev.alloc(4096); // the cached 4 KiB went back to the driver first
    expect([pool.cachedBytes, meter.heldBytes]).toEqual([0, 2000 + 4096]);
    for (const x of [b, c]) x.free();
    expect(meter.heldBytes).toBe(0);
  });

  it("calibrates the prefill peak on the real code path; an out-of-memory prefill fails alone", async () => {
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { parseProgram } = await import("../src/ir/parse.ts");
    const { verifyProgram } = await import("../src/ir/verify.ts");
    const { createCudaOpsWith } = await import("../src/model/cuda-ops.ts");
    const { writeRandomLlavaNext } = await import("../src/model/hf/index.ts");
    const { calibratePrefill, loadCheckpoint } = await import("../src/serve/engine.ts");
    const { startServer } = await import("../src/serve/server.ts");
    const dir = mkdtempSync(join(tmpdir(), "zipvl-serve-memory-"));
    writeRandomLlavaNext(dir, { seed: 9, textHidden: 256, textHeads: 4, textKvHeads: 2, textIntermediate: 512 });
    const ops = createCudaOpsWith(openCuda(), "bf16", verifyProgram(parseProgram(readFileSync("test/golden/dense.final.ir", "utf8"))));
    const ckpt = loadCheckpoint(ops, dir);
    const t = ckpt.cfg.text;
    const fit = calibratePrefill(ops, ckpt, undefined, { lengths: [64, 128, 256] })!;
    console.log(`mock calibration (dense): a ${fit.a} B, b ${fit.b.toFixed(1)} B/token, c ${fit.c}; ${fit.source}`);
    // Dense layers on these ops are linear in n; every measured point lies under the fit, which grows with n.
    expect(fit.c).toBe(0);
    expect(fit.b).toBeGreaterThan(2 * t.hiddenSize * 2);
    for (const [n, y] of fit.points) expect(fit.a + fit.b * n).toBeGreaterThanOrEqual(y);
    expect(ops.memory.stats().cachedBytes).toBe(0);
    ckpt.w.free();

    const srv = await startServer({ model: dir, ops, maxBatch: 4, maxQueue: 8, timeoutMs: 60_000, memoryBytes: 2 ** 28, calibrationLengths: [64, 128, 256] }, { port: 0 });
    expect(srv.plan.options.prefill?.source).toMatch(/measured on cuda \(dense/);
    const ask = (text: string) => fetch(`http://127.0.0.1:${srv.port}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ messages: [{ role: "user", content: text }], max_tokens: 4 }) });
    // A cap between the peaks of a short and a long prompt: the driver refuses the long prefill mid-way.
    const fitted = (n: number) => fit.a + fit.b * n;
    const meter = ops.memory.meter;
    ops.memory.releaseCached();
    meter.capBytes = meter.heldBytes + fitted(600);
    const short = await ask("hello");
    expect(short.status).toBe(200);
    const held = meter.heldBytes - ops.memory.stats().cachedBytes;
    const [long, other] = await Promise.all([ask("word ".repeat(700)), ask("a short one")]);
    const body = (await long.json()) as { error: { code: string; message: string } };
    expect(long.status).toBe(500);
    expect(body.error.code).toBe("ZV7040");
    expect(body.error.message).toMatch(/prefill of \d+ tokens ran out of device memory.*ZV3004/);
    expect(other.status).toBe(200);
    // What the failed prefill allocated went back (to the pool's cache), no tensor leaked.
    expect(meter.heldBytes - ops.memory.stats().cachedBytes).toBe(held);
    meter.capBytes = Infinity;
    expect((await ask("after the failure")).status).toBe(200);
    expect(srv.engine.pool.usedPages).toBe(0);
    await srv.close();
    ops.dispose();
  });
});
