// CUDA graphs of the serving decode step on the mock driver (native/mock): the captured step queues the same
// launches (kernels, grids, argument sizes) as the eager one and nothing else (no allocation, no host write or read,
// no sync inside the capture); a replay after a batch change uses that batch's bucket; a capture that fails leaves
// one notice and eager decoding with the same launches. The mock runs no kernels, so values are not checked here.
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { nvccVersion } from "../src/backends/cuda/compile.ts";

const MOCK = resolve("native/mock/libcuda_mock.so");
const MOCK_LT = resolve("native/mock/libcublaslt_mock.so");
const ready = existsSync(MOCK) && existsSync(MOCK_LT) && existsSync(resolve("native/build/Release/zipvl_native.node")) && nvccVersion() !== null;
if (!ready) console.warn("NOTICE: mock libcuda/cuBLASLt, native addon or nvcc missing; the serving CUDA graph test is skipped");
process.env.ZIPVL_LIBCUDA = MOCK;
process.env.ZIPVL_LIBCUBLASLT = MOCK_LT;

describe.skipIf(!ready)("serving decode step as CUDA graphs (mock driver)", () => {
  it("captured = eager launches, buckets per batch size, fallback notice", async () => {
    const { bucketOf } = await import("../src/backends/cuda/paged-graph.ts");
    expect([1, 2, 3, 4, 5, 8, 9, 12].map((b) => bucketOf(b, 12))).toEqual([1, 2, 4, 4, 8, 8, 12, 12]);
    const { openCuda } = await import("../src/backends/cuda/executor.ts");
    const { createCudaAttention } = await import("../src/backends/cuda/paged-serve.ts");
    const { parseProgram } = await import("../src/ir/parse.ts");
    const { verifyProgram } = await import("../src/ir/verify.ts");
    const { createCudaOpsWith } = await import("../src/model/cuda-ops.ts");
    const { writeRandomLlavaNext } = await import("../src/model/hf/index.ts");
    const { LlavaEngine, loadCheckpoint } = await import("../src/serve/engine.ts");
    const { DeviceBuffer } = await import("../src/runtime/native.ts");
    const ctx = openCuda();
    const dev = ctx.dev;
    const dir = mkdtempSync(join(tmpdir(), "zipvl-serve-graph-"));
    writeRandomLlavaNext(dir, { seed: 7, textHidden: 256, textHeads: 4, textKvHeads: 2, textIntermediate: 512 });
    const ops = createCudaOpsWith(ctx, "bf16", verifyProgram(parseProgram(readFileSync("test/golden/dense.final.ir", "utf8"))));
    const ckpt = loadCheckpoint(ops, dir);
    const t = ckpt.cfg.text;
    const make = (graphs: boolean, notice?: (l: string) => void) => {
      const attn = createCudaAttention(ops, { layers: t.numLayers, heads: t.numHeads, kvHeads: t.numKvHeads, headDim: t.headDim, pageTokens: 16, layout: "per-layer", numPages: 64, maxBatch: 4 });
      const plan = { numPages: 64, shape: { layers: t.numLayers, hidden: t.hiddenSize, intermediate: t.intermediateSize, heads: t.numHeads, kvHeads: t.numKvHeads, headDim: t.headDim, vocab: t.vocabSize, maxPositions: t.maxPositionEmbeddings }, options: { elemBytes: 2 } } as never;
      return new LlavaEngine(ops, ckpt, attn, plan, { modelId: "m", graphs, ...(notice ? { notice } : {}) });
    };
    // Records every launch (function, grid, block, argument bytes) and every host write/read/alloc/sync.
    const launches: string[] = [];
    const io = { writes: 0, reads: 0, allocs: 0, syncs: 0 };
    const spies: { mockRestore(): void }[] = [
      vi.spyOn(dev, "launch").mockImplementation(function (this: typeof dev, fn, cfg, args) {
        launches.push(`${(fn as { name?: string }).name ?? "fn"} ${cfg.grid.join("x")} ${cfg.block.join("x")} ${args ? (args as ArrayBuffer).byteLength : 0} s${cfg.sharedBytes ?? 0}`);
        const orig = Object.getPrototypeOf(dev).launch as typeof dev.launch;
        return orig.call(this, fn, cfg, args);
      }),
    ];
    const count = <T extends object>(o: T, m: keyof T & string, k: keyof typeof io) => {
      const orig = (o as Record<string, (...a: unknown[]) => unknown>)[m]!;
      spies.push((vi.spyOn(o as never, m as never) as { mockImplementation(f: unknown): { mockRestore(): void } }).mockImplementation(function (this: unknown, ...a: unknown[]) {
        io[k]++;
        return orig.apply(this, a);
      } as never));
    };
    count(DeviceBuffer.prototype, "write", "writes");
    count(DeviceBuffer.prototype, "read", "reads");
    count(dev, "alloc", "allocs");
    count(ops.stream, "synchronize", "syncs");

    const prompt = (e: InstanceType<typeof LlavaEngine>, seq: string, n: number) => {
      e.pool.addSequence(seq);
      return e.prefill(seq, { ids: Int32Array.from({ length: n }, (_, i) => 10 + i) }).first;
    };
    const steps = (e: InstanceType<typeof LlavaEngine>, seqs: string[], from: number) => {
      const got: string[][] = [];
      for (let s = 0; s < 3; s++) {
        launches.length = 0;
        e.decode(seqs.map((seq, b) => ({ seq, token: 20 + b, position: from + s })));
        got.push([...launches]);
      }
      return got;
    };

    // Eager engine: the launches of one step of 3 sequences (bucket 4 in the graph engine, so compare the kinds).
    const eager = make(false);
    for (const [i, s] of ["a", "b", "c"].entries()) prompt(eager, s, 5 + i);
    const eagerSteps = steps(eager, ["a", "b", "c"], 8);
    const done = (e: InstanceType<typeof LlavaEngine>) => {
      e.steps.dispose();
      e.attn.dispose();
    };
    done(eager);

    const graph = make(true);
    const runner = graph.steps as unknown as { stats: { warmups: number; captures: number; replays: number; eager: number }; shapes: readonly string[]; mode: string };
    for (const [i, s] of ["a", "b", "c"].entries()) prompt(graph, s, 5 + i);
    // Capture: watch the host traffic of the captured body only.
    const cap = dev.captureGraph.bind(dev);
    const inCapture = { ...io };
    const captured: string[] = [];
    spies.push(vi.spyOn(dev, "captureGraph").mockImplementation((stream, body) => {
      const before = { ...io };
      const n0 = launches.length;
      const g = cap(stream, body);
      for (const k of Object.keys(io) as (keyof typeof io)[]) inCapture[k] = io[k] - before[k];
      captured.push(...launches.slice(n0));
      return g;
    }));
    const first = dev.mockLastLaunch()!.launches;
    const gSteps = steps(graph, ["a", "b", "c"], 8);
    expect(runner.mode).toBe("graph");
    expect(runner.stats).toEqual({ warmups: 1, captures: 1, replays: 2, eager: 0 });
    expect(runner.shapes).toEqual(["4/1"]);
    expect(inCapture).toEqual({ writes: 0, reads: 0, allocs: 0, syncs: 0 });
    // The warm-up queues the eager launches at bucket 4; the capture the same ones again; replays launch nothing
    // from JS and the driver runs exactly the captured nodes.
    const warm = gSteps[0]!.slice(0, captured.length);
    expect(captured).toEqual(warm);
    expect(gSteps[1]).toEqual([]);
    // (Kernels instantiated per row count, zv_gemv_*_m<M>_r<R>, run at 3 rows eagerly and at the bucket's 4 captured.)
    const strip = (l: string) => l.split(" ")[0]!.replace(/_m\d+_r\d+_k\d+$/, "_m*") + " " + l.split(" ")[3];
    // The graph's step ends with greedy sampling on the device (the eager runner samples on the host).
    expect(captured.map(strip)).toEqual([...eagerSteps[0]!.map(strip), "zv_model_argmax_bf16 56"]);
    // The driver ran the warm-up's launches, then each replay ran the captured nodes (the capture itself ran none).
    expect(captured.length).toBe(eagerSteps[0]!.length + 1);
    expect(dev.mockLastLaunch()!.launches - first).toBe(3 * captured.length);

    // A batch change: 1 sequence -> bucket 1 (a new graph), back to 3 -> the bucket-4 graph replays.
    launches.length = 0;
    const pdl0 = dev.mockLastLaunch()!.pdlLaunches;
    graph.decode([{ seq: "a", token: 3, position: 11 }]);
    // The fused linear and the paged attention kernels go through cuLaunchKernelEx with programmatic dependent
    // launch (each waits for its predecessor first), the others (embed, argmax) plainly.
    expect(dev.mockLastLaunch()!.pdlLaunches - pdl0).toBe(launches.filter((l) => /^zv_(gemv|paged)_/.test(l)).length);
    // One row: each layer is the fused q/k/v launch (RMSNorm at use, rope and head-major epilogues, and the new K/V
    // rows written straight into their pages: no append launch), the paged split (its last CTAs merge the splits),
    // o_proj + residual, RMSNorm + gate/up + silu, down + residual. Units of two
    // weight rows per warp, 4 warps per CTA.
    const one = launches.slice(0, launches.length / 2).map((l) => l.split(" ").filter((_, i) => i !== 3).join(" ").replace(/_d\d+/, ""));
    const H = t.hiddenSize, d = t.headDim;
    const { gemvSplitK, gemvSharedBytes } = await import("../src/backends/cuda/gemv.ts");
    // One row: a unit (two weight rows) per warp (per two warps where split K is on: off by default, ZIPVL_GEMV_SPLITK).
    // Every launch takes x through the weight ring ("direct": 2 weight + 1 x vectors a lane a stage, plus the norm
    // weight where there is a norm; 4 stages, 4 warps = 24 or 32 KiB).
    const gv = (units: number, K: number, norm: boolean) => {
      const ks = gemvSplitK("bf16", 1, K, 4);
      return `zv_gemv_bf16_m1_r4_k${ks} ${Math.ceil((units * ks) / 4)}x1x1 128x1x1 s${gemvSharedBytes("bf16", 1, K, 4, true, norm)}`;
    };
    expect(gemvSharedBytes("bf16", 1, H, 4, true)).toBe(4 * 4 * 3 * 512);
    expect(gemvSharedBytes("bf16", 1, H, 4, true, true)).toBe(4 * 4 * 4 * 512);
    // The paged split entry for the group size (Hq / Hkv = 1 or 2: a pass of its own, fewer registers).
    const g = t.numHeads / t.numKvHeads;
    const split = new RegExp(`^zv_paged_bf16_split${g === 1 ? "_g1" : g === 2 ? "_g2" : ""} `);
    const layer = [gv((t.numHeads * d + 2 * t.numKvHeads * d) / 2, H, true), expect.stringMatching(split), gv(H / 2, t.numHeads * d, false), gv(t.intermediateSize, H, true), gv(H / 2, t.intermediateSize, false)];
    // Then the final RMSNorm folded into lm_head (norm at use) and greedy sampling on the device.
    expect(one).toEqual(["zv_model_embed_bf16 1x1x1 256x1x1 s0", ...Array.from({ length: t.numLayers }, () => layer).flat(), gv(Math.ceil(t.vocabSize / 2), H, true), "zv_model_argmax_bf16 1x1x1 256x1x1 s0"]);
    graph.decode([{ seq: "a", token: 3, position: 12 }]);
    expect(runner.shapes).toEqual(["4/1", "1/1"]);
    expect(runner.stats.replays).toBe(3);
    launches.length = 0;
    graph.decode(["a", "b", "c"].map((seq, b) => ({ seq, token: 4 + b, position: 13 })));
    expect(launches).toEqual([]);
    expect(runner.stats.replays).toBe(4);
    // Greedy steps from the device's ids only follow a step of the same rows (bucket and sequences, in order).
    const greedy = graph.steps.greedy!;
    const abc = ["a", "b", "c"];
    greedy.collect(greedy.launch(abc.map((seq, b) => ({ seq, token: 4 + b, position: 14 })), false));
    expect(() => greedy.launch(["a", "c", "b"].map((seq) => ({ seq, token: -1, position: 15 })), true)).toThrow(/ZV7040.*other rows/);
    greedy.collect(greedy.launch(abc.map((seq, b) => ({ seq, token: 4 + b, position: 15 })), false));
    const t2 = greedy.launch(abc.map((seq) => ({ seq, token: -1, position: 16 })), true);
    expect(greedy.collect(t2)).toHaveLength(3);
    done(graph);

    // A capture that fails: one notice, then eager steps with the eager launches.
    spies.push(vi.spyOn(dev, "captureGraph").mockImplementation(() => {
      throw new Error("CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED in cuStreamBeginCapture");
    }));
    const notices: string[] = [];
    const fb = make(true, (l) => notices.push(l));
    for (const [i, s] of ["a", "b", "c"].entries()) prompt(fb, s, 5 + i);
    const fbSteps = steps(fb, ["a", "b", "c"], 8);
    expect(notices).toEqual(["zipvl serve: CUDA graph capture of the decode step failed (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED in cuStreamBeginCapture); decoding eagerly from now on"]);
    expect((fb.steps as unknown as { mode: string }).mode).toBe("eager");
    expect(fbSteps[1]).toEqual(eagerSteps[1]);
    expect(fbSteps[2]).toEqual(eagerSteps[2]);
    fb.dispose();
    for (const s of spies) s.mockRestore();
    ops.dispose();
  });
});
